/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "sdnotify.h"

#include <errno.h>
#include <inttypes.h>

#include <systemd/sd-daemon.h>

#include "names.h"

struct _MvmdStatusWatch {
    MvmdManagerService *manager;
    MvmdVmStateChangedFunc func;
    gpointer user_data;
    GHashTable *vms; /* MvmdVmService (ref) → itself: the VMs whose State we follow */
    char *last;      /* the STATUS= line sent last, so unchanged lines are not re-sent */
    guint idle;
};

/* The one watch of the process, for READY=1 to carry the current status. */
static MvmdStatusWatch *current_watch;

static void notify(const char *message)
{
    int r = sd_notify(0, message);

    if (r < 0)
        g_debug("sd_notify(%s): %s", message, g_strerror(-r));
}

void mvmd_sd_notify_ready(void)
{
    g_autofree char *status = current_watch ? mvmd_status_watch_describe(current_watch) : NULL;
    g_autofree char *message = g_strdup_printf("READY=1\nSTATUS=%s", status ? status : "Ready");

    notify(message);
}

void mvmd_sd_notify_reloading(void)
{
    g_autofree char *message = g_strdup_printf(
        "RELOADING=1\nSTATUS=Reloading VM definitions\nMONOTONIC_USEC=%" G_GINT64_FORMAT,
        g_get_monotonic_time());

    notify(message);
}

void mvmd_sd_notify_stopping(guint64 extend_usec)
{
    g_autofree char *message = g_strdup_printf(
        "STOPPING=1\nSTATUS=Shutting down the VMs\nEXTEND_TIMEOUT_USEC=%" G_GUINT64_FORMAT,
        extend_usec);

    notify(message);
}

/* The GIO codes a start-up failure can carry, as errno values (ERRNO= wants one). */
static int io_error_to_errno(int code)
{
    switch (code) {
    case G_IO_ERROR_NOT_FOUND:
        return ENOENT;
    case G_IO_ERROR_PERMISSION_DENIED:
        return EACCES;
    case G_IO_ERROR_EXISTS:
        return EEXIST;
    case G_IO_ERROR_CONNECTION_REFUSED:
        return ECONNREFUSED;
    case G_IO_ERROR_TIMED_OUT:
        return ETIMEDOUT;
    case G_IO_ERROR_INVALID_ARGUMENT:
        return EINVAL;
    case G_IO_ERROR_ADDRESS_IN_USE:
        return EADDRINUSE;
    case G_IO_ERROR_NOT_SUPPORTED:
        return EOPNOTSUPP;
    default:
        return EIO;
    }
}

void mvmd_sd_notify_failure(const GError *error)
{
    g_autofree char *remote = g_dbus_error_get_remote_error(error);
    g_autofree char *status = g_strescape(error->message, NULL);
    g_autofree char *message = NULL;

    if (!remote && error->domain == G_DBUS_ERROR)
        remote = g_dbus_error_encode_gerror(error);
    if (remote)
        message = g_strdup_printf("STATUS=Failed to start: %s\nBUSERROR=%s", status, remote);
    else
        message =
            g_strdup_printf("STATUS=Failed to start: %s\nERRNO=%d", status,
                            error->domain == G_IO_ERROR ? io_error_to_errno(error->code) : EIO);
    notify(message);
}

/* ---- watchdog -------------------------------------------------------------------------- */

static gboolean watchdog_ping(gpointer user_data)
{
    notify("WATCHDOG=1");
    return G_SOURCE_CONTINUE;
}

guint mvmd_sd_watchdog_add(void)
{
    uint64_t usec = 0;
    int r = sd_watchdog_enabled(0, &usec);
    guint interval_ms;

    if (r < 0)
        g_warning("invalid watchdog settings from the service manager: %s", g_strerror(-r));
    if (r <= 0 || usec == 0)
        return 0;
    /* Half the period, as sd_watchdog_enabled(3) recommends; at least 1 ms. */
    interval_ms = (guint)MAX(usec / 2000, 1);
    g_message("watchdog: pinging every %u ms", interval_ms);
    notify("WATCHDOG=1");
    return g_timeout_add(interval_ms, watchdog_ping, NULL);
}

/* ---- STATUS= --------------------------------------------------------------------------- */

char *mvmd_status_watch_describe(MvmdStatusWatch *watch)
{
    g_autoptr(GList) vms = mvmd_manager_service_get_vms(watch->manager);
    guint running = 0, paused = 0, defined = 0;

    for (GList *l = vms; l; l = l->next) {
        const char *state = mvmd_vm_get_state(MVMD_VM(l->data));

        running += g_strcmp0(state, MVMD_STATE_RUNNING) == 0;
        paused += g_strcmp0(state, MVMD_STATE_PAUSED) == 0;
        defined++;
    }
    return g_strdup_printf("%u running, %u paused, %u defined", running, paused, defined);
}

static gboolean send_status(gpointer user_data)
{
    MvmdStatusWatch *watch = user_data;
    g_autofree char *status = mvmd_status_watch_describe(watch);
    g_autofree char *message = NULL;

    watch->idle = 0;
    if (g_strcmp0(status, watch->last) == 0)
        return G_SOURCE_REMOVE;
    message = g_strconcat("STATUS=", status, NULL);
    notify(message);
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
    current_watch = watch;
    return watch;
}

void mvmd_status_watch_free(MvmdStatusWatch *watch)
{
    GHashTableIter iter;
    gpointer vm;

    if (!watch)
        return;
    if (current_watch == watch)
        current_watch = NULL;
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
