/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "manager.h"

#include <gio/gunixfdlist.h>

#include "auth.h"
#include "errors.h"
#include "names.h"

struct _MvmdManagerService {
    MvmdManagerSkeleton parent;

    MvmdContext *ctx;
    GDBusObjectManagerServer *object_manager;
    GHashTable *vms; /* name → MvmdVmObject (ref) */
};

static void mvmd_manager_service_iface_init(MvmdManagerIface *iface);

G_DEFINE_TYPE_WITH_CODE(MvmdManagerService, mvmd_manager_service, MVMD_TYPE_MANAGER_SKELETON,
                        G_IMPLEMENT_INTERFACE(MVMD_TYPE_MANAGER, mvmd_manager_service_iface_init))

static void update_count(MvmdManagerService *self)
{
    mvmd_manager_set_vm_count(MVMD_MANAGER(self), g_hash_table_size(self->vms));
}

static void on_vm_deleted(MvmdVmObject *vm, gpointer user_data)
{
    MvmdManagerService *self = user_data;
    g_autofree char *path = mvmd_vm_object_build_path(mvmd_vm_object_get_vm_name(vm));

    g_signal_handlers_disconnect_by_data(vm, self);
    g_dbus_object_manager_server_unexport(self->object_manager, path);
    g_hash_table_remove(self->vms, mvmd_vm_object_get_vm_name(vm));
    update_count(self);
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
}

/* Takes @config. */
static MvmdVmObject *add_vm(MvmdManagerService *self, MvmdVmConfig *config, const char *state)
{
    MvmdVmObject *vm = mvmd_vm_object_new(self->ctx, config, state);
    g_autofree char *path = mvmd_vm_object_build_path(config->name);
    g_autoptr(MvmdObjectSkeleton) object = mvmd_object_skeleton_new(path);

    mvmd_object_skeleton_set_vm(object, MVMD_VM(vm));
    g_hash_table_insert(self->vms, g_strdup(config->name), vm);
    g_signal_connect(vm, "deleted", G_CALLBACK(on_vm_deleted), self);
    g_dbus_object_manager_server_export(self->object_manager, G_DBUS_OBJECT_SKELETON(object));
    update_count(self);
    return vm;
}

void mvmd_manager_service_load(MvmdManagerService *self)
{
    g_autoptr(GPtrArray) configs = mvmd_store_load_all(self->ctx->store);

    for (guint i = 0; i < configs->len; i++) {
        MvmdVmConfig *config = configs->pdata[i];

        if (g_hash_table_contains(self->vms, config->name))
            continue;
        configs->pdata[i] = NULL;
        add_vm(self, config, MVMD_STATE_STOPPED);
    }
    g_message("%u VM definitions loaded from %s", g_hash_table_size(self->vms),
              mvmd_store_get_dir(self->ctx->store));
}

void mvmd_manager_service_autostart(MvmdManagerService *self)
{
    GHashTableIter iter;
    gpointer vm;

    g_hash_table_iter_init(&iter, self->vms);
    while (g_hash_table_iter_next(&iter, NULL, &vm)) {
        if (mvmd_vm_object_get_config(vm)->autostart)
            mvmd_vm_object_autostart(vm);
    }
}

GList *mvmd_manager_service_get_vms(MvmdManagerService *self)
{
    return g_hash_table_get_values(self->vms);
}

guint mvmd_manager_service_count_active(MvmdManagerService *self)
{
    GHashTableIter iter;
    gpointer vm;
    guint n = 0;

    g_hash_table_iter_init(&iter, self->vms);
    while (g_hash_table_iter_next(&iter, NULL, &vm))
        n += mvmd_vm_object_is_active(vm);
    return n;
}

/* ---- CreateVM: handle → authorize → validate → define → complete ----------------------- */

typedef struct {
    MvmdManagerService *self;
    GDBusMethodInvocation *invocation;
    GUnixFDList *fd_list;
    char *name;
    GVariant *config;
} CreateCall;

static void create_call_free(CreateCall *call)
{
    g_object_unref(call->self);
    g_clear_object(&call->fd_list);
    g_free(call->name);
    g_variant_unref(call->config);
    g_free(call);
}

static void create_vm(CreateCall *call)
{
    MvmdManagerService *self = call->self;
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmConfig) config = NULL;
    g_autofree char *path = NULL;

    if (!mvmd_vm_name_validate(call->name, &error)) {
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        return;
    }
    if (g_hash_table_contains(self->vms, call->name)) {
        g_dbus_method_invocation_return_error(call->invocation, MVMD_ERROR,
                                              MVMD_ERROR_ALREADY_EXISTS,
                                              "a VM named '%s' exists already", call->name);
        return;
    }
    config = mvmd_vm_config_new_from_variant(call->name, NULL, call->config, call->fd_list, &error);
    if (!config || (config->persist && !mvmd_store_save(self->ctx->store, config, &error))) {
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        return;
    }
    g_message("%s: defined (%u vCPUs, %" G_GUINT64_FORMAT " MiB%s)", call->name, config->vcpus,
              config->memory_mib, config->persist ? ", persistent" : "");
    path = mvmd_vm_object_build_path(call->name);
    add_vm(self, g_steal_pointer(&config), MVMD_STATE_CREATED);
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
    mvmd_manager_complete_create_vm(MVMD_MANAGER(self), call->invocation, NULL, path);
}

static void on_create_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    CreateCall *call = user_data;
    g_autoptr(GError) error = NULL;

    if (!mvmd_authorize_finish(result, &error))
        g_dbus_method_invocation_return_gerror(call->invocation, error);
    else if (call->self->ctx->stopping)
        g_dbus_method_invocation_return_error_literal(
            call->invocation, MVMD_ERROR, MVMD_ERROR_FAILED, "the daemon is shutting down");
    else
        create_vm(call);
    create_call_free(call);
}

static gboolean handle_create_vm(MvmdManager *manager, GDBusMethodInvocation *invocation,
                                 GUnixFDList *fd_list, const char *name, GVariant *config)
{
    MvmdManagerService *self = MVMD_MANAGER_SERVICE(manager);
    CreateCall *call = g_new0(CreateCall, 1);
    g_autoptr(GHashTable) details = g_hash_table_new(g_str_hash, g_str_equal);

    call->self = g_object_ref(self);
    call->invocation = invocation;
    call->fd_list = fd_list ? g_object_ref(fd_list) : NULL;
    call->name = g_strdup(name);
    call->config = g_variant_ref(config);
    g_hash_table_insert(details, "vm", call->name);
    mvmd_authorize_async(invocation, MVMD_ACTION_CREATE, details, on_create_authorized, call);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- reading: no authorization --------------------------------------------------------- */

static gboolean handle_get_vm_by_name(MvmdManager *manager, GDBusMethodInvocation *invocation,
                                      const char *name)
{
    MvmdManagerService *self = MVMD_MANAGER_SERVICE(manager);
    g_autofree char *path = NULL;

    if (!g_hash_table_contains(self->vms, name)) {
        g_dbus_method_invocation_return_error(invocation, MVMD_ERROR, MVMD_ERROR_NO_SUCH_VM,
                                              "no VM named '%s'", name);
        return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    path = mvmd_vm_object_build_path(name);
    mvmd_manager_complete_get_vm_by_name(manager, invocation, path);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

static gboolean handle_list_vms(MvmdManager *manager, GDBusMethodInvocation *invocation)
{
    MvmdManagerService *self = MVMD_MANAGER_SERVICE(manager);
    g_autofree gpointer *names = (gpointer *)g_hash_table_get_keys_as_array(self->vms, NULL);
    guint n = g_hash_table_size(self->vms);
    GVariantBuilder b;

    qsort(names, n, sizeof(*names), compare_names);
    g_variant_builder_init(&b, G_VARIANT_TYPE("a(soss)"));
    for (guint i = 0; i < n; i++) {
        MvmdVm *vm = g_hash_table_lookup(self->vms, names[i]);
        g_autofree char *path = mvmd_vm_object_build_path(names[i]);

        g_variant_builder_add(&b, "(soss)", (const char *)names[i], path, mvmd_vm_get_state(vm),
                              mvmd_vm_get_uuid(vm));
    }
    mvmd_manager_complete_list_vms(manager, invocation, g_variant_builder_end(&b));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void mvmd_manager_service_iface_init(MvmdManagerIface *iface)
{
    iface->handle_create_vm = handle_create_vm;
    iface->handle_get_vm_by_name = handle_get_vm_by_name;
    iface->handle_list_vms = handle_list_vms;
}

/* ---- GObject --------------------------------------------------------------------------- */

MvmdManagerService *mvmd_manager_service_new(MvmdContext *ctx,
                                             GDBusObjectManagerServer *object_manager)
{
    MvmdManagerService *self = g_object_new(MVMD_TYPE_MANAGER_SERVICE, NULL);
    g_autoptr(GPtrArray) caps = g_ptr_array_new();

    self->ctx = ctx;
    self->object_manager = g_object_ref(object_manager);
    for (const char *const *c = (const char *const[]){"pause", "console", "shutdown", "reboot",
                                                      "stats", "persist", "fd-passing", NULL};
         *c; c++)
        g_ptr_array_add(caps, (gpointer)*c);
    if (ctx->kvm_api_version >= 0)
        g_ptr_array_add(caps, "kvm");
    g_ptr_array_add(caps, NULL);

    mvmd_manager_set_version(MVMD_MANAGER(self), MVMD_VERSION);
    mvmd_manager_set_kvm_api_version(MVMD_MANAGER(self), ctx->kvm_api_version);
    mvmd_manager_set_capabilities(MVMD_MANAGER(self), (const char *const *)caps->pdata);
    update_count(self);
    return self;
}

static void mvmd_manager_service_init(MvmdManagerService *self)
{
    self->vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
}

static void mvmd_manager_service_dispose(GObject *object)
{
    MvmdManagerService *self = MVMD_MANAGER_SERVICE(object);
    GHashTableIter iter;
    gpointer vm;

    if (self->vms) {
        g_hash_table_iter_init(&iter, self->vms);
        while (g_hash_table_iter_next(&iter, NULL, &vm))
            g_signal_handlers_disconnect_by_data(vm, self);
        g_clear_pointer(&self->vms, g_hash_table_unref);
    }
    g_clear_object(&self->object_manager);
    G_OBJECT_CLASS(mvmd_manager_service_parent_class)->dispose(object);
}

static void mvmd_manager_service_class_init(MvmdManagerServiceClass *klass)
{
    G_OBJECT_CLASS(klass)->dispose = mvmd_manager_service_dispose;
}
