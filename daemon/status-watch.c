/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The status watch, on the main loop: follows the manager it was given, and each VM's State,
 * and sends STATUS= through the notifier (sdnotify.c).
 */
#include "status-watch.h"

#include "sdnotify.h"

struct _MvmdStatusWatch {
    MvmdManagerService *manager;
    MvmdVmStateChangedFunc func;
    gpointer user_data;
    GHashTable *vms; /* MvmdVmService (ref) → itself: the VMs whose State we follow */
    char *last;      /* the STATUS= line sent last, so unchanged lines are not re-sent */
    guint idle;
};

static gboolean send_status(gpointer user_data)
{
    MvmdStatusWatch *watch = user_data;
    g_autofree char *status = mvmd_manager_service_describe(watch->manager);

    watch->idle = 0;
    if (g_strcmp0(status, watch->last) == 0)
        return G_SOURCE_REMOVE;
    mvmd_sd_notify_status(status);
    g_free(watch->last);
    watch->last = g_steal_pointer(&status);
    return G_SOURCE_REMOVE;
}

/* Several changes in one main-loop iteration (e.g. a reload) make one STATUS= message. */
static void schedule_status(MvmdStatusWatch *watch)
{
    if (!watch->idle)
        watch->idle = g_idle_add(send_status, watch);
}

static void on_vm_state(GObject *object, GParamSpec *pspec, gpointer user_data)
{
    MvmdStatusWatch *watch = user_data;

    if (watch->func)
        watch->func(MVMD_VM_SERVICE(object), mvmd_vm_get_state(MVMD_VM(object)), watch->user_data);
    schedule_status(watch);
}

static void forget_vm(gpointer data, gpointer user_data)
{
    g_signal_handlers_disconnect_by_data(data, user_data);
    g_object_unref(data);
}

/* VMs come and go with VMCount changes: follow the new ones, drop the gone ones. */
static void sync_vms(MvmdStatusWatch *watch)
{
    g_autoptr(GList) vms = mvmd_manager_service_get_vms(watch->manager);
    g_autoptr(GHashTable) present = g_hash_table_new(NULL, NULL);
    GHashTableIter iter;
    gpointer vm;

    for (GList *l = vms; l; l = l->next) {
        g_hash_table_add(present, l->data);
        if (g_hash_table_contains(watch->vms, l->data))
            continue;
        g_hash_table_add(watch->vms, g_object_ref(l->data));
        g_signal_connect(l->data, "notify::state", G_CALLBACK(on_vm_state), watch);
        if (watch->func)
            watch->func(l->data, mvmd_vm_get_state(MVMD_VM(l->data)), watch->user_data);
    }
    g_hash_table_iter_init(&iter, watch->vms);
    while (g_hash_table_iter_next(&iter, &vm, NULL)) {
        if (g_hash_table_contains(present, vm))
            continue;
        g_hash_table_iter_steal(&iter);
        if (watch->func)
            watch->func(vm, NULL, watch->user_data);
        forget_vm(vm, watch);
    }
    schedule_status(watch);
}

static void on_vm_count(GObject *object, GParamSpec *pspec, gpointer user_data)
{
    sync_vms(user_data);
}

MvmdStatusWatch *mvmd_status_watch_new(MvmdManagerService *manager, MvmdVmStateChangedFunc func,
                                       gpointer user_data)
{
    MvmdStatusWatch *watch = g_new0(MvmdStatusWatch, 1);

    watch->manager = g_object_ref(manager);
    watch->func = func;
    watch->user_data = user_data;
    watch->vms = g_hash_table_new(NULL, NULL);
    g_signal_connect(manager, "notify::vm-count", G_CALLBACK(on_vm_count), watch);
    sync_vms(watch);
    return watch;
}

void mvmd_status_watch_free(MvmdStatusWatch *watch)
{
    GHashTableIter iter;
    gpointer vm;

    if (!watch)
        return;
    g_hash_table_iter_init(&iter, watch->vms);
    while (g_hash_table_iter_next(&iter, &vm, NULL))
        forget_vm(vm, watch);
    g_hash_table_unref(watch->vms);
    g_signal_handlers_disconnect_by_data(watch->manager, watch);
    g_object_unref(watch->manager);
    if (watch->idle)
        g_source_remove(watch->idle);
    g_free(watch->last);
    g_free(watch);
}
