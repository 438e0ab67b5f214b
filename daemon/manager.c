/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "manager.h"

#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "auth.h"
#include "caller-files.h"
#include "cpu-templates.h"
#include "errors.h"
#include "fd-closer.h"
#include "names.h"
#include "sdnotify.h"

struct _MvmdManagerService {
    MvmdManagerSkeleton parent;

    MvmdContext *ctx;
    GDBusObjectManagerServer *object_manager;
    GHashTable *vms;       /* name → MvmdVmService (ref) */
    GHashTable *restoring; /* name → the RestoreCall that reserved it (not exported yet) */
};

static void mvmd_manager_service_iface_init(MvmdManagerIface *iface);

G_DEFINE_TYPE_WITH_CODE(MvmdManagerService, mvmd_manager_service, MVMD_TYPE_MANAGER_SKELETON,
                        G_IMPLEMENT_INTERFACE(MVMD_TYPE_MANAGER, mvmd_manager_service_iface_init))

static void update_count(MvmdManagerService *self)
{
    mvmd_manager_set_vm_count(MVMD_MANAGER(self), g_hash_table_size(self->vms));
}

static void on_vm_deleted(MvmdVmService *vm, gpointer user_data)
{
    MvmdManagerService *self = user_data;
    g_autofree char *path = mvmd_vm_service_build_path(mvmd_vm_service_get_vm_name(vm));

    g_signal_handlers_disconnect_by_data(vm, self);
    /* By name, but only this object: a name is released by its holder alone. */
    if (g_hash_table_lookup(self->vms, mvmd_vm_service_get_vm_name(vm)) != vm)
        return;
    g_dbus_object_manager_server_unexport(self->object_manager, path);
    g_hash_table_remove(self->vms, mvmd_vm_service_get_vm_name(vm));
    update_count(self);
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
}

/* Takes @vm, whose name must be free or reserved by the caller (see check_name_free()). */
static void export_vm(MvmdManagerService *self, MvmdVmService *vm)
{
    const char *name = mvmd_vm_service_get_vm_name(vm);
    g_autofree char *path = mvmd_vm_service_build_path(name);
    g_autoptr(MvmdObjectSkeleton) object = mvmd_object_skeleton_new(path);

    g_return_if_fail(!g_hash_table_contains(self->vms, name));
    mvmd_object_skeleton_set_vm(object, MVMD_VM(vm));
    g_hash_table_insert(self->vms, g_strdup(name), vm);
    g_signal_connect(vm, "deleted", G_CALLBACK(on_vm_deleted), self);
    g_dbus_object_manager_server_export(self->object_manager, G_DBUS_OBJECT_SKELETON(object));
    update_count(self);
}

/* Takes @config and what @charge holds. */
static MvmdVmService *add_vm(MvmdManagerService *self, MvmdVmDefinition *config, const char *state,
                             MvmdQuotaCharge *charge)
{
    MvmdVmService *vm = mvmd_vm_service_new(self->ctx, config, state);

    mvmd_vm_service_take_charge(vm, charge);
    export_vm(self, vm);
    return vm;
}

/* What a definition holds of its owner's quota; FALSE (QuotaExceeded) past a limit. */
static gboolean charge_definition(MvmdManagerService *self, const MvmdVmDefinition *config,
                                  gboolean force, MvmdQuotaCharge *charge, GError **error)
{
    return mvmd_quota_charge(self->ctx->quota, config->owner, config->memory_mib, config->vcpus,
                             force, charge, error);
}

/* The stored definitions whose names are free, as VMs (taken from @configs). */
static void add_stored(MvmdManagerService *self, GPtrArray *configs)
{
    for (guint i = 0; i < configs->len; i++) {
        MvmdVmDefinition *config = configs->pdata[i];
        MvmdQuotaCharge charge = {NULL};

        /* A name a RestoreVM in flight reserved stays its own: that VM wins, as a running one. */
        if (g_hash_table_contains(self->vms, config->name) ||
            g_hash_table_contains(self->restoring, config->name))
            continue;
        /* Charged, never refused: a quota lowered since they were defined loses no VM. */
        charge_definition(self, config, TRUE, &charge, NULL);
        configs->pdata[i] = NULL;
        add_vm(self, config, MVMD_STATE_STOPPED, &charge);
    }
    g_message("%u VM definitions loaded from %s", g_hash_table_size(self->vms),
              mvmd_store_get_dir(self->ctx->store));
}

void mvmd_manager_service_load(MvmdManagerService *self)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) configs = mvmd_store_load_all(self->ctx->store, &error);

    if (!configs) {
        g_warning("%s", error->message);
        return;
    }
    add_stored(self, configs);
}

static gboolean same_definition(const MvmdVmDefinition *a, const MvmdVmDefinition *b);

/* The stored definition of @vm's name, if it is the same VM; else a new transient one. */
static MvmdVmService *service_to_adopt(MvmdManagerService *self, MvmdHandoffIn *vm, GError **error)
{
    MvmdVmService *service = g_hash_table_lookup(self->vms, vm->definition->name);
    MvmdQuotaCharge charge = {NULL};

    if (service) {
        if (!g_str_equal(mvmd_vm_service_get_definition(service)->uuid, vm->uuid) ||
            mvmd_vm_service_is_active(service)) {
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_ALREADY_EXISTS,
                        "another VM called %s is defined here", vm->definition->name);
            return NULL;
        }
        /* As Reload leaves a running VM alone: the stored one applies from its next start. */
        if (!same_definition(mvmd_vm_service_get_definition(service), vm->definition))
            g_warning("%s: its stored definition changed while it ran; the machine runs on as "
                      "it was made, the stored definition applies from its next start",
                      vm->definition->name);
        return service;
    }
    /* Charged, never refused: it was running, and a quota lowered since loses no VM. */
    charge_definition(self, vm->definition, TRUE, &charge, NULL);
    return add_vm(self, g_steal_pointer(&vm->definition), MVMD_STATE_STOPPED, &charge);
}

void mvmd_manager_service_adopt(MvmdManagerService *self, GPtrArray *vms)
{
    for (guint i = 0; i < vms->len; i++) {
        MvmdHandoffIn *vm = g_steal_pointer(&vms->pdata[i]);
        g_autoptr(GError) error = NULL;
        MvmdVmService *service = service_to_adopt(self, vm, &error);

        if (!service) {
            g_warning("handoff: VM %s is not taken over: %s", vm->uuid, error->message);
            mvmd_handoff_in_free(vm);
            continue;
        }
        mvmd_vm_service_adopt(service, vm);
    }
    if (vms->len > 0)
        g_message("taking over %u VMs from the last microvmd", vms->len);
}

void mvmd_manager_service_autostart(MvmdManagerService *self)
{
    GHashTableIter iter;
    gpointer vm;

    g_hash_table_iter_init(&iter, self->vms);
    while (g_hash_table_iter_next(&iter, NULL, &vm)) {
        if (mvmd_vm_service_get_definition(vm)->autostart)
            mvmd_vm_service_autostart(vm);
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
        n += mvmd_vm_service_is_active(vm);
    return n + g_hash_table_size(self->restoring);
}

char *mvmd_manager_service_describe(MvmdManagerService *self)
{
    g_autoptr(GList) vms = mvmd_manager_service_get_vms(self);
    guint running = 0, paused = 0, defined = 0;

    for (GList *l = vms; l; l = l->next) {
        const char *state = mvmd_vm_get_state(MVMD_VM(l->data));

        running += g_strcmp0(state, MVMD_STATE_RUNNING) == 0;
        paused += g_strcmp0(state, MVMD_STATE_PAUSED) == 0;
        defined++;
    }
    return g_strdup_printf("%u running, %u paused, %u defined", running, paused, defined);
}

/*
 * A name is taken by an exported VM, or reserved by the RestoreVM call that is building a VM
 * under it (self->restoring). FALSE, and @invocation answered, when @name is taken.
 */
static gboolean check_name_free(MvmdManagerService *self, GDBusMethodInvocation *invocation,
                                const char *name)
{
    if (!g_hash_table_contains(self->vms, name) && !g_hash_table_contains(self->restoring, name))
        return TRUE;
    g_dbus_method_invocation_return_error(invocation, MVMD_ERROR, MVMD_ERROR_ALREADY_EXISTS,
                                          "a VM named '%s' exists already", name);
    return FALSE;
}

/*
 * The new VM's owner, charged with it: the caller, as authorization learned it. Authorization
 * always learns the uid before it allows a call (a peer without one is let in only by its
 * credentials, which carry it); should it ever not, the call is refused rather than the VM
 * given to root, whom no quota limits.
 */
static gboolean caller_uid(GDBusMethodInvocation *invocation, guint32 *owner, GError **error)
{
    uid_t uid;

    if (!mvmd_auth_get_caller_uid(invocation, &uid)) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                            "the caller's uid is not known: it cannot own a VM");
        return FALSE;
    }
    *owner = uid;
    return TRUE;
}

/* ---- CreateVM: handle → authorize → validate → define → complete ----------------------- */

/*
 * The template must load now, so that a typo or a corrupt file is the caller's error at
 * CreateVM rather than a surprise at Start; each Start loads it again (vm-ops.c). On the main
 * loop: a built-in one costs nothing, a file is one bounded read of a regular file in the
 * administrator's directory, opened without blocking (cpu-templates.c).
 */
static gboolean check_cpu_template(MvmdManagerService *self, const MvmdVmDefinition *config,
                                   GError **error)
{
    g_autoptr(MvmCpuTemplate) tmpl = NULL;

    if (!config->cpu_template)
        return TRUE;
    tmpl = mvmd_cpu_template_load(self->ctx->cpu_template_dir, config->cpu_template, error);
    if (tmpl)
        return TRUE;
    g_prefix_error(error, "config key 'cpu-template': ");
    return FALSE;
}

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
    g_autoptr(MvmdVmDefinition) config = NULL;
    g_autofree char *path = NULL;
    MvmdQuotaCharge charge = {NULL};

    if (!mvmd_vm_name_validate(call->name, &error)) {
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        return;
    }
    if (!check_name_free(self, call->invocation, call->name))
        return;
    if (mvmd_check_fds_arrived(call->invocation, &error))
        config = mvmd_vm_definition_new_from_variant(call->name, NULL, call->config, call->fd_list,
                                                     &error);
    if (!config || !caller_uid(call->invocation, &config->owner, &error) ||
        !mvmd_auth_check_config_paths(call->invocation, config, &error) ||
        !check_cpu_template(self, config, &error) ||
        !charge_definition(self, config, FALSE, &charge, &error) ||
        (config->persist && !mvmd_store_save(self->ctx->store, config, &error))) {
        mvmd_quota_release(&charge);
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        return;
    }
    g_message("%s: defined (%u vCPUs, %" G_GUINT64_FORMAT " MiB%s)", call->name, config->vcpus,
              config->memory_mib, config->persist ? ", persistent" : "");
    path = mvmd_vm_service_build_path(call->name);
    add_vm(self, g_steal_pointer(&config), MVMD_STATE_CREATED, &charge);
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
    mvmd_manager_complete_create_vm(MVMD_MANAGER(self), call->invocation, NULL, path);
}

/* After the polkit check: FALSE (and the caller answered) when denied or shutting down. */
static gboolean may_go_on(MvmdManagerService *self, GDBusMethodInvocation *invocation,
                          GAsyncResult *result)
{
    g_autoptr(GError) error = NULL;

    if (!mvmd_authorize_finish(result, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return FALSE;
    }
    if (self->ctx->stopping) {
        g_dbus_method_invocation_return_error_literal(invocation, MVMD_ERROR, MVMD_ERROR_FAILED,
                                                      "the daemon is shutting down");
        return FALSE;
    }
    return TRUE;
}

static void on_create_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    CreateCall *call = user_data;

    if (may_go_on(call->self, call->invocation, result))
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
    /* The descriptors: GDBus' list was emptied as the message arrived (fd-closer.h). */
    call->fd_list = mvmd_invocation_fds(invocation);
    if (call->fd_list)
        g_object_ref(call->fd_list);
    call->name = g_strdup(name);
    call->config = g_variant_ref(config);
    g_hash_table_insert(details, MVMD_DETAIL_VM, call->name);
    g_hash_table_insert(details, MVMD_DETAIL_VERB, "CreateVM");
    mvmd_authorize_async(invocation, MVMD_ACTION_CREATE, details, on_create_authorized, call);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- RestoreVM: handle → authorize → validate → restore in a worker → export ----------- */

typedef struct {
    MvmdManagerService *self;
    GDBusMethodInvocation *invocation;
    char *name;
} RestoreCall;

/*
 * The reservation is the call itself (the value in self->restoring): a call releases the name
 * only if it holds it. A RestoreVM that was denied, or failed before reserving (the name
 * taken, a bad argument), ends without touching another call's reservation.
 */
static void reserve_name(RestoreCall *call)
{
    g_hash_table_insert(call->self->restoring, g_strdup(call->name), call);
}

static void restore_call_free(RestoreCall *call)
{
    if (g_hash_table_lookup(call->self->restoring, call->name) == call)
        g_hash_table_remove(call->self->restoring, call->name);
    g_object_unref(call->self);
    g_free(call->name);
    g_free(call);
}

/* The object is exported only once its machine is there: a failed restore leaves no trace. */
static void on_restored(MvmdVmService *vm, const GError *error, gpointer user_data)
{
    RestoreCall *call = user_data;
    g_autofree char *path = mvmd_vm_service_build_path(call->name);

    if (error) {
        mvmd_vm_service_discard(vm);
        g_object_unref(vm);
        g_dbus_method_invocation_return_gerror(call->invocation, error);
    } else {
        export_vm(call->self, vm);
        if (call->self->ctx->stopping)
            mvmd_vm_service_force_stop(vm); /* the daemon began to stop meanwhile */
        g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(call->self));
        mvmd_manager_complete_restore_vm(MVMD_MANAGER(call->self), call->invocation, NULL, path);
    }
    restore_call_free(call);
}

/*
 * The device back ends: from the options (paths only for root, as in CreateVM), or, when root
 * asks for them with 'use-snapshot-backends', the ones the snapshot names. Never by default:
 * a snapshot made elsewhere would have the daemon open its disk paths read-write, attach its
 * taps and unlink and bind its vsock socket path. Without either, the machine gets no back
 * ends, and a snapshot with devices is refused (in the worker, which reads the snapshot)
 * saying what to pass. A clone ('clone') may name the MACs and vsock CID it gets instead of the
 * snapshot's; any other restored guest knows the snapshot's, so it may not (config-devices.c).
 */
static gboolean restore_backends(RestoreCall *call, GVariant *options, GUnixFDList *fd_list,
                                 MvmdVmDefinition *config, GError **error)
{
    gboolean given = FALSE, use_snapshot = FALSE, clone = FALSE;

    g_variant_lookup(options, "use-snapshot-backends", "b", &use_snapshot);
    g_variant_lookup(options, "clone", "b", &clone);
    if (!mvmd_devices_parse_backends(&config->devices, options, fd_list, clone, &given, error) ||
        !mvmd_auth_check_config_paths(call->invocation, config, error))
        return FALSE;
    if (use_snapshot && given) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            "'use-snapshot-backends': give either the back ends in 'disks', "
                            "'network' and 'vsock' or this option, not both");
        return FALSE;
    }
    if (use_snapshot &&
        !mvmd_auth_check_path_argument(call->invocation, "use-snapshot-backends", error))
        return FALSE;
    config->devices.from_snapshot = use_snapshot;
    config->clone = clone;
    return TRUE;
}

/*
 * The snapshot as a directory: a path or "dir-fd", root only. The daemon opens `state` and
 * `memory` in it with its own rights, so anyone else could have it read (and show their guest)
 * files they cannot read themselves.
 */
static MvmdVmDefinition *restore_config_dir(RestoreCall *call, const char *dir_arg,
                                            GVariant *options, GUnixFDList *fd_list, gboolean copy,
                                            GError **error)
{
    g_autoptr(GVariant) fdv = g_variant_lookup_value(options, "dir-fd", G_VARIANT_TYPE_HANDLE);
    g_autofree char *dir = NULL;
    int fd = -1;

    if (!mvmd_parse_dir_argument("snapshot_dir", dir_arg, fdv, fd_list, &dir, &fd, error))
        return NULL;
    if (!mvmd_auth_caller_is_trusted(call->invocation)) {
        mvmd_close_later(fd);
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                    "'%s': only root may have microvmd open the files of a snapshot directory; "
                    "open 'state' and 'memory' yourself and pass them in the options "
                    "'state-fd' and 'memory-fd'",
                    dir ? "snapshot_dir" : "dir-fd");
        return NULL;
    }
    return mvmd_vm_definition_new_restored(call->name, dir, fd, copy, error);
}

/*
 * The snapshot as the caller's two open files. Guest RAM is copied out of an untrusted
 * caller's memory file, never mapped: the caller could truncate a mapped file, and the daemon
 * (every VM in it) would take SIGBUS on the next access to the guest's RAM. A lazy restore
 * maps it no more than a copy does: it reads each page with pread() when the guest first
 * touches it (a file shortened meanwhile reads as zeros), so it needs no copy.
 */
static MvmdVmDefinition *restore_config_files(RestoreCall *call, const char *dir_arg,
                                              GVariant *options, int state_fd, int memory_fd,
                                              gboolean copy, gboolean lazy, GError **error)
{
    if (*dir_arg || g_variant_lookup(options, "dir-fd", "h", NULL)) {
        mvmd_close_later(state_fd);
        mvmd_close_later(memory_fd);
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            "snapshot_dir: give either a directory (a path or 'dir-fd') or the "
                            "options 'state-fd' and 'memory-fd', not both");
        return NULL;
    }
    copy = copy || (!lazy && !mvmd_auth_caller_is_trusted(call->invocation));
    return mvmd_vm_definition_new_restored_files(call->name, state_fd, memory_fd, copy, error);
}

/*
 * A diff snapshot's chain ('layers'), from any caller, as fds only: each pair is checked as
 * 'state-fd' and 'memory-fd' are and kept with the definition, so that each Start restores the
 * same chain. The library checks that they make one chain under the snapshot restored (by
 * their IDs) and copies the chain into the VM's own memory: never a shared image.
 */
static gboolean restore_layers(GVariant *options, GUnixFDList *fd_list, MvmdVmDefinition *config,
                               GError **error)
{
    g_variant_lookup(options, "track-changes", "b", &config->track_changes);
    if (!mvmd_caller_layers_parse(options, fd_list, MVM_SNAPSHOT_MAX_LAYERS - 1,
                                  &config->snapshot_layers, &config->n_snapshot_layers, error))
        return FALSE;
    config->copy_memory = config->copy_memory || config->n_snapshot_layers > 0;
    return TRUE;
}

static gboolean refuse_lazy(GError **error, MvmdError code, const char *message)
{
    g_set_error_literal(error, MVMD_ERROR, code, message);
    return FALSE;
}

/*
 * `lazy` and `working-set`, checked before any descriptor is taken. A lazy restore reads the
 * snapshot's own `memory` page by page, so not with a copy nor with a chain (which the library
 * refuses too, in its own words); a working set only speeds a lazy one up. Whether this host
 * can do it at all was probed at start-up (daemon.c): NotSupported, with the reason.
 */
static gboolean restore_lazy_check(RestoreCall *call, GVariant *options, gboolean *lazy,
                                   GError **error)
{
    g_autoptr(GVariant) layers = g_variant_lookup_value(options, "layers", G_VARIANT_TYPE("a(hh)"));
    const char *unsupported = call->self->ctx->no_lazy_restore;
    gboolean copy = FALSE;

    *lazy = FALSE;
    g_variant_lookup(options, "lazy", "b", lazy);
    g_variant_lookup(options, "copy-memory", "b", &copy);
    if (!*lazy)
        return !g_variant_lookup(options, "working-set", "h", NULL) ||
               refuse_lazy(error, MVMD_ERROR_INVALID_ARGUMENT,
                           "option 'working-set': only for a lazy restore; pass 'lazy': <true> "
                           "as well");
    if (copy)
        return refuse_lazy(error, MVMD_ERROR_INVALID_ARGUMENT,
                           "option 'lazy': not with 'copy-memory': a lazy restore reads the "
                           "snapshot's memory page by page as the guest touches it, a copy reads "
                           "it all at once");
    if (layers && g_variant_n_children(layers) > 0)
        return refuse_lazy(error, MVMD_ERROR_INVALID_ARGUMENT,
                           "option 'lazy': not with 'layers': a diff snapshot's chain is laid "
                           "together into a copy of guest RAM, read all at once");
    if (unsupported) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_SUPPORTED,
                    "option 'lazy': not on this host: %s", unsupported);
        return FALSE;
    }
    return TRUE;
}

/*
 * @working_set_fd: RestoreVM's `working-set` (checked; -1: none), for the first restore only,
 * never kept with the definition: each later Start restores lazily without a prefetch.
 */
static MvmdVmDefinition *restore_config(RestoreCall *call, gboolean *paused, int *working_set_fd,
                                        GError **error)
{
    static const MvmdKeySpec allowed[] = {
        {"dir-fd", "h"},       {"state-fd", "h"},    {"memory-fd", "h"},
        {"resume", "b"},       {"copy-memory", "b"}, {"disks", "aa{sv}"},
        {"network", "aa{sv}"}, {"vsock", "a{sv}"},   {"use-snapshot-backends", "b"},
        {"clone", "b"},        {"layers", "a(hh)"},  {"track-changes", "b"},
        {"lazy", "b"},         {"working-set", "h"}};
    GUnixFDList *fd_list = mvmd_invocation_fds(call->invocation);
    g_autoptr(GVariant) options = NULL;
    g_autoptr(MvmdVmDefinition) config = NULL;
    gboolean resume = FALSE, copy = FALSE, lazy = FALSE;
    const char *dir_arg;
    int state_fd, memory_fd;

    *working_set_fd = -1;
    g_variant_get(g_dbus_method_invocation_get_parameters(call->invocation), "(&s&s@a{sv})", NULL,
                  &dir_arg, &options);
    if (!mvmd_vm_name_validate(call->name, error) ||
        !mvmd_check_fds_arrived(call->invocation, error) ||
        !mvmd_config_check_keys(options, allowed, G_N_ELEMENTS(allowed), NULL, error) ||
        !restore_lazy_check(call, options, &lazy, error) ||
        !mvmd_caller_files_parse(options, fd_list, MVMD_CALLER_FILE_READ, (uid_t)-1, &state_fd,
                                 &memory_fd, error))
        return NULL;
    g_variant_lookup(options, "resume", "b", &resume);
    g_variant_lookup(options, "copy-memory", "b", &copy);
    *paused = !resume;
    if (state_fd >= 0)
        config =
            restore_config_files(call, dir_arg, options, state_fd, memory_fd, copy, lazy, error);
    else
        config = restore_config_dir(call, dir_arg, options, fd_list, copy, error);
    if (!config || !restore_backends(call, options, fd_list, config, error) ||
        !restore_layers(options, fd_list, config, error) ||
        !mvmd_caller_file_parse(options, fd_list, "working-set", MVMD_CALLER_FILE_READ, (uid_t)-1,
                                MVMD_WORKING_SET_MAX_BYTES, working_set_fd, error))
        return NULL;
    config->lazy = lazy;
    return g_steal_pointer(&config);
}

static void restore_vm(RestoreCall *call)
{
    MvmdManagerService *self = call->self;
    g_autoptr(GError) error = NULL;
    MvmdVmDefinition *config;
    MvmdVmService *vm;
    MvmdQuotaCharge charge = {NULL};
    gboolean paused = TRUE;
    int working_set_fd = -1;

    if (!check_name_free(self, call->invocation, call->name)) {
        restore_call_free(call);
        return;
    }
    config = restore_config(call, &paused, &working_set_fd, &error);
    if (!config) {
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        restore_call_free(call);
        return;
    }
    /* One more VM now; its memory and vCPUs once the worker has read the snapshot (vm-ops.c). */
    if (!caller_uid(call->invocation, &config->owner, &error) ||
        !mvmd_quota_charge(self->ctx->quota, config->owner, 0, 0, FALSE, &charge, &error)) {
        mvmd_close_later(working_set_fd);
        mvmd_vm_definition_free(config);
        g_dbus_method_invocation_return_gerror(call->invocation, error);
        restore_call_free(call);
        return;
    }
    reserve_name(call);
    vm = mvmd_vm_service_new(self->ctx, config, MVMD_STATE_CREATED);
    mvmd_vm_service_take_charge(vm, &charge);
    mvmd_vm_service_restore(vm, paused, working_set_fd, on_restored, call);
}

static void on_restore_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    RestoreCall *call = user_data;

    if (may_go_on(call->self, call->invocation, result))
        restore_vm(call); /* frees @call when done */
    else
        restore_call_free(call);
}

static gboolean handle_restore_vm(MvmdManager *manager, GDBusMethodInvocation *invocation,
                                  GUnixFDList *fd_list, const char *name, const char *dir,
                                  GVariant *options)
{
    RestoreCall *call = g_new0(RestoreCall, 1);
    g_autoptr(GHashTable) details = g_hash_table_new(g_str_hash, g_str_equal);

    call->self = g_object_ref(MVMD_MANAGER_SERVICE(manager));
    call->invocation = invocation;
    call->name = g_strdup(name);
    g_hash_table_insert(details, MVMD_DETAIL_VM, call->name);
    g_hash_table_insert(details, MVMD_DETAIL_VERB, "RestoreVM");
    mvmd_authorize_async(invocation, MVMD_ACTION_SNAPSHOT, details, on_restore_authorized, call);
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
    path = mvmd_vm_service_build_path(name);
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
        g_autofree char *path = mvmd_vm_service_build_path(names[i]);

        g_variant_builder_add(&b, "(soss)", (const char *)names[i], path, mvmd_vm_get_state(vm),
                              mvmd_vm_get_uuid(vm));
    }
    mvmd_manager_complete_list_vms(manager, invocation, g_variant_builder_end(&b));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- Reload (and SIGHUP): new stored definitions appear, existing VMs stay untouched ---- */

static gboolean same_definition(const MvmdVmDefinition *a, const MvmdVmDefinition *b)
{
    g_autoptr(GKeyFile) ka = mvmd_vm_definition_to_keyfile(a);
    g_autoptr(GKeyFile) kb = mvmd_vm_definition_to_keyfile(b);
    g_autofree char *ta = g_key_file_to_data(ka, NULL, NULL);
    g_autofree char *tb = g_key_file_to_data(kb, NULL, NULL);

    return g_strcmp0(ta, tb) == 0;
}

/*
 * A stored VM that holds nothing (not running, paused or busy) and whose definition file
 * changed or vanished is dropped; the load below brings the changed ones back. Running and
 * paused VMs, and transient ones, are never touched.
 */
static void drop_outdated(MvmdManagerService *self, GPtrArray *configs)
{
    g_autoptr(GHashTable) stored = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(GList) vms = g_hash_table_get_values(self->vms);

    for (guint i = 0; i < configs->len; i++)
        g_hash_table_insert(stored, ((MvmdVmDefinition *)configs->pdata[i])->name,
                            configs->pdata[i]);
    for (GList *l = vms; l; l = l->next) {
        const MvmdVmDefinition *config = mvmd_vm_service_get_definition(l->data);
        const MvmdVmDefinition *on_disk = g_hash_table_lookup(stored, config->name);

        if (!config->persist || mvmd_vm_service_is_active(l->data))
            continue;
        if (on_disk && same_definition(config, on_disk))
            continue;
        g_message("%s: definition %s", config->name,
                  on_disk ? "changed on disk: reloading it" : "removed from disk: dropping it");
        mvmd_vm_service_retire(l->data);
        on_vm_deleted(l->data, self);
    }
}

/* [CPUTemplates] Directory= again, unless --cpu-template-dir fixed it (then NULL: keep it). */
static gboolean reload_cpu_template_dir(MvmdManagerService *self, char **dir, GError **error)
{
    *dir = NULL;
    if (self->ctx->cpu_template_dir_fixed)
        return TRUE;
    *dir = mvmd_cpu_template_dir_from_config(self->ctx->config_path, self->ctx->config_required,
                                             error);
    return *dir != NULL;
}

gboolean mvmd_manager_service_reload(MvmdManagerService *self, GError **error)
{
    g_autoptr(GPtrArray) configs = NULL;
    g_autofree char *status = NULL;
    g_autofree char *template_dir = NULL;

    /*
     * A file with a mistake changes nothing: the limits in force stay, and so do the VMs. Nor
     * does a store that cannot be read in full (out of descriptors): a definition missing
     * from it would drop its VM. It is read once, before anything changes.
     */
    if (!reload_cpu_template_dir(self, &template_dir, error) ||
        !(configs = mvmd_store_load_all(self->ctx->store, error)) ||
        !mvmd_quota_load(self->ctx->quota, self->ctx->config_path, self->ctx->config_required,
                         error)) {
        g_prefix_error(error, "nothing reloaded: ");
        return FALSE;
    }
    if (template_dir) {
        g_free(self->ctx->cpu_template_dir);
        self->ctx->cpu_template_dir = g_steal_pointer(&template_dir);
    }
    mvmd_sd_notify_reloading();
    drop_outdated(self, configs);
    add_stored(self, configs);
    status = mvmd_manager_service_describe(self);
    mvmd_sd_notify_ready(status);
    return TRUE;
}

typedef struct {
    MvmdManagerService *self;
    GDBusMethodInvocation *invocation;
} ReloadCall;

static void on_reload_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    ReloadCall *call = user_data;
    g_autoptr(GError) error = NULL;

    if (!mvmd_authorize_finish(result, &error)) {
        g_dbus_method_invocation_return_gerror(call->invocation, error);
    } else if (call->self->ctx->stopping) {
        g_dbus_method_invocation_return_error_literal(
            call->invocation, MVMD_ERROR, MVMD_ERROR_FAILED, "the daemon is shutting down");
    } else if (!mvmd_manager_service_reload(call->self, &error)) {
        /* A mistake in a file is Failed, out of descriptors NoResources (errors.c). */
        g_autoptr(GError) mapped = mvmd_error_from_error(error, NULL);
        /* The file's group and key names are the administrator's bytes, not always UTF-8. */
        g_autofree char *message = g_utf8_make_valid(mapped->message, -1);
        g_dbus_method_invocation_return_error_literal(call->invocation, MVMD_ERROR, mapped->code,
                                                      message);
    } else {
        mvmd_manager_complete_reload(MVMD_MANAGER(call->self), call->invocation);
    }
    g_object_unref(call->self);
    g_free(call);
}

static gboolean handle_reload(MvmdManager *manager, GDBusMethodInvocation *invocation)
{
    ReloadCall *call = g_new0(ReloadCall, 1);

    call->self = g_object_ref(MVMD_MANAGER_SERVICE(manager));
    call->invocation = invocation;
    /* Every user's stored VMs may be dropped or replaced: not the business of one owner. */
    mvmd_authorize_async(invocation, MVMD_ACTION_MANAGE_OTHERS, NULL, on_reload_authorized, call);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void mvmd_manager_service_iface_init(MvmdManagerIface *iface)
{
    iface->handle_reload = handle_reload;
    iface->handle_create_vm = handle_create_vm;
    iface->handle_restore_vm = handle_restore_vm;
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
    for (const char *const *c =
             (const char *const[]){"pause", "console", "shutdown", "reboot", "stats", "persist",
                                   "fd-passing", "snapshot", "freeze-clock", "devices",
                                   "cpu-template", "diff-snapshots", "rate-limits", NULL};
         *c; c++)
        g_ptr_array_add(caps, (gpointer)*c);
    if (!ctx->no_lazy_restore)
        g_ptr_array_add(caps, "lazy-restore");
    if (ctx->kvm_api_version >= 0)
        g_ptr_array_add(caps, "kvm");
    if (mvm_sandbox_get_mode() == MVM_SANDBOX_MODE_ENFORCE) {
        g_ptr_array_add(caps, "seccomp");
        if (mvm_sandbox_landlock_abi() > 0)
            g_ptr_array_add(caps, "landlock");
    }
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
    self->restoring = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
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
    g_clear_pointer(&self->restoring, g_hash_table_unref);
    g_clear_object(&self->object_manager);
    G_OBJECT_CLASS(mvmd_manager_service_parent_class)->dispose(object);
}

static void mvmd_manager_service_class_init(MvmdManagerServiceClass *klass)
{
    G_OBJECT_CLASS(klass)->dispose = mvmd_manager_service_dispose;
}
