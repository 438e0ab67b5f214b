/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The org.microvmd.MicroVM1.VM methods. Each goes handle → authorize (polkit, with the VM's
 * name, owner and the method as details) → act: check the state, start an operation in a worker
 * (vm-ops.c) or answer at once. Which action is asked depends on whose VM it is: the owner's
 * own action, or the -others one for everyone else. Reading (GetConfig, GetExitReason,
 * GetStats) is free for the owner and needs read-others for anyone else; GetCPUConfig pauses the
 * guest and shows its registers, so it is managing. Main loop only, like the state machine
 * (vm-service.c) whose fields it reads and whose operations it begins.
 */
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "auth.h"
#include "bounds.h"
#include "caller-files.h"
#include "errors.h"
#include "fd-closer.h"
#include "names.h"
#include "vm-service-private.h"

#define SHUTDOWN_TIMEOUT_DEFAULT 60
#define SHUTDOWN_TIMEOUT_MAX     3600

/* ---- D-Bus methods: handle → authorize → act → complete -------------------------------- */

typedef void (*ActFunc)(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg);

typedef struct {
    MvmdVmService *self;
    GDBusMethodInvocation *invocation;
    ActFunc act;
    guint arg;
} Call;

static void act_on_vm(MvmdVmService *self, GDBusMethodInvocation *invocation, ActFunc act,
                      guint arg)
{
    if (self->deleted)
        g_dbus_method_invocation_return_error(invocation, MVMD_ERROR, MVMD_ERROR_NO_SUCH_VM,
                                              "the VM '%s' was deleted", self->definition->name);
    else
        act(self, invocation, arg);
}

static void on_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Call *call = user_data;
    g_autoptr(GError) error = NULL;

    if (!mvmd_authorize_finish(result, &error))
        g_dbus_method_invocation_return_gerror(call->invocation, error);
    else
        act_on_vm(call->self, call->invocation, call->act, call->arg);
    g_object_unref(call->self);
    g_free(call);
}

/* The polkit actions for a kind of call: on one's own VM (NULL: never asked), on another's. */
typedef struct {
    const char *own;
    const char *others;
} Access;

static const Access MANAGE = {MVMD_ACTION_MANAGE, MVMD_ACTION_MANAGE_OTHERS};
static const Access CONSOLE = {MVMD_ACTION_CONSOLE, MVMD_ACTION_CONSOLE_OTHERS};
static const Access SNAPSHOT = {MVMD_ACTION_SNAPSHOT, MVMD_ACTION_SNAPSHOT_OTHERS};
/* The owner reads at once: no polkit round trip on what the owner's own tools poll. */
static const Access READ = {NULL, MVMD_ACTION_READ_OTHERS};

static gboolean authorize(MvmdVmService *self, GDBusMethodInvocation *invocation,
                          const Access *access, ActFunc act, guint arg)
{
    g_autoptr(GHashTable) details = NULL;
    Call *call;

    if (mvmd_authorize_vm_known(invocation, self->definition->owner, access->own, access->others)) {
        act_on_vm(self, invocation, act, arg);
        return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    details = g_hash_table_new(g_str_hash, g_str_equal);
    call = g_new0(Call, 1);

    call->self = g_object_ref(self);
    call->invocation = invocation;
    call->act = act;
    call->arg = arg;
    g_hash_table_insert(details, MVMD_DETAIL_VM, self->definition->name);
    g_hash_table_insert(details, MVMD_DETAIL_VERB,
                        (gpointer)g_dbus_method_invocation_get_method_name(invocation));
    mvmd_authorize_vm_async(invocation, self->definition->owner, access->own, access->others,
                            details, on_authorized, call);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean return_state_error(GDBusMethodInvocation *invocation, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static gboolean return_state_error(GDBusMethodInvocation *invocation, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_dbus_method_invocation_return_error_literal(invocation, MVMD_ERROR, MVMD_ERROR_INVALID_STATE,
                                                  msg);
    return FALSE;
}

static const char *op_description(Op op)
{
    switch (op) {
    case OP_START:
        return "start";
    case OP_CPU_CONFIG:
        return "reading the CPU configuration";
    case OP_WORKING_SET:
        return "saving the working set";
    default:
        return "state change";
    }
}

/* Common checks; FALSE when an error was returned. */
static gboolean check_idle(MvmdVmService *self, GDBusMethodInvocation *invocation)
{
    if (self->op != OP_NONE)
        return return_state_error(invocation, "operation in progress (%s)",
                                  op_description(self->op));
    return TRUE;
}

/*
 * A VM on its way to the next microvmd (handoff.h) keeps its object until this daemon exits,
 * but what it is now belongs to the next one: a change made here would be lost or undone.
 */
static gboolean check_not_handed_over(MvmdVmService *self, GDBusMethodInvocation *invocation)
{
    if (self->handed_over || self->ctx->handing_off)
        return return_state_error(invocation,
                                  "the VM is being handed to the next microvmd; try again there");
    return TRUE;
}

static gboolean check_active(MvmdVmService *self, GDBusMethodInvocation *invocation)
{
    if (!self->run)
        return return_state_error(invocation, "the VM is not running (state %s)",
                                  mvmd_vm_get_state(MVMD_VM(self)));
    return TRUE;
}

static void act_start(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation))
        return;
    if (self->run) {
        return_state_error(invocation, "the VM is already %s", mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    if (self->ctx->stopping) {
        g_dbus_method_invocation_return_error_literal(invocation, MVMD_ERROR, MVMD_ERROR_FAILED,
                                                      "the daemon is shutting down");
        return;
    }
    self->restarts = 0;
    self->reset_count = 0;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "starting");
    mvmd_vm_service_begin_op(self, OP_START, invocation, mvmd_vm_complete_start, NULL);
}

/* Pause's options: a{sv}, "freeze-clock" b. */
static gboolean parse_pause_options(GVariant *options, MvmPauseFlags *flags, GError **error)
{
    static const MvmdKeySpec allowed[] = {{"freeze-clock", "b"}};
    gboolean freeze = FALSE;

    if (!mvmd_config_check_keys(options, allowed, G_N_ELEMENTS(allowed), NULL, error))
        return FALSE;
    g_variant_lookup(options, "freeze-clock", "b", &freeze);
    *flags = freeze ? MVM_PAUSE_FREEZE_CLOCK : MVM_PAUSE_NONE;
    return TRUE;
}

static void act_pause(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GVariant) options = NULL;
    g_autoptr(GError) error = NULL;
    OpArgs args = OP_ARGS_INIT;
    MvmPauseFlags flags;

    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(@a{sv})", &options);
    if (!parse_pause_options(options, &flags, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (mvmd_vm_service_run_state(self) != MVM_VM_STATE_RUNNING) {
        return_state_error(invocation, "the VM is not running (state %s)",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    args.flags = flags;
    mvmd_vm_service_begin_op(self, OP_PAUSE, invocation, mvmd_vm_complete_pause, &args);
}

/*
 * Only root may have the daemon create, replace and rename files in a directory, named by a
 * path or passed as "dir-fd": any other caller could name a directory it cannot write
 * (an O_PATH fd of /etc/cron.d is enough) and have root write its guest's memory there.
 */
static gboolean check_dir_allowed(GDBusMethodInvocation *invocation, const char *key,
                                  GError **error)
{
    if (mvmd_auth_caller_is_trusted(invocation))
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                "'%s': only root may have microvmd create files in a directory; create the "
                "files 'state' and 'memory' yourself and pass them open for writing in the "
                "options 'state-fd' and 'memory-fd'",
                key);
    return FALSE;
}

/* Where the snapshot goes: the caller's two files ("state-fd", "memory-fd") or a directory. */
static gboolean parse_snapshot_dest(GDBusMethodInvocation *invocation, const char *dir,
                                    GVariant *options, OpArgs *args, GError **error)
{
    GUnixFDList *fd_list = mvmd_invocation_fds(invocation);
    g_autoptr(GVariant) fdv = g_variant_lookup_value(options, "dir-fd", G_VARIANT_TYPE_HANDLE);
    uid_t owner;

    if (!mvmd_auth_file_owner(invocation, &owner, error) ||
        !mvmd_caller_files_parse(options, fd_list, MVMD_CALLER_FILE_WRITE, owner, &args->state_fd,
                                 &args->memory_fd, error))
        return FALSE;
    if (args->state_fd >= 0 && (*dir || fdv)) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            "dir: give either a directory (a path or 'dir-fd') or the options "
                            "'state-fd' and 'memory-fd', not both");
        return FALSE;
    }
    if (args->state_fd >= 0)
        return TRUE;
    if (!mvmd_parse_dir_argument("dir", dir, fdv, fd_list, &args->dir, &args->dir_fd, error))
        return FALSE;
    return check_dir_allowed(invocation, args->dir ? "dir" : "dir-fd", error);
}

/*
 * "track-changes" and "diff-base". The base is only parsed here: whether it is the VM's parent
 * is checked on the worker, right before the snapshot (vm-ops.c), where no other operation can
 * change the parent in between.
 */
static gboolean parse_diff_options(GVariant *options, OpArgs *args, GError **error)
{
    gboolean track = FALSE;
    const char *base;

    g_variant_lookup(options, "track-changes", "b", &track);
    if (track)
        args->flags |= MVM_SNAPSHOT_TRACK_CHANGES;
    if (!g_variant_lookup(options, "diff-base", "&s", &base))
        return TRUE;
    if (!mvmd_snapshot_id_parse(base, "diff-base", args->diff_base, error))
        return FALSE;
    args->has_diff_base = TRUE;
    args->flags |= MVM_SNAPSHOT_DIFF;
    return TRUE;
}

/* Snapshot's arguments: the destination, and the options "leave-paused", "track-changes" and
 * "diff-base". */
static gboolean parse_snapshot_args(GDBusMethodInvocation *invocation, OpArgs *args, GError **error)
{
    static const MvmdKeySpec allowed[] = {{"dir-fd", "h"},        {"state-fd", "h"},
                                          {"memory-fd", "h"},     {"leave-paused", "b"},
                                          {"track-changes", "b"}, {"diff-base", "s"}};
    g_autoptr(GVariant) options = NULL;
    gboolean leave_paused = FALSE;
    const char *dir;

    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(&s@a{sv})", &dir,
                  &options);
    if (!mvmd_check_fds_arrived(invocation, error) ||
        !mvmd_config_check_keys(options, allowed, G_N_ELEMENTS(allowed), NULL, error))
        return FALSE;
    g_variant_lookup(options, "leave-paused", "b", &leave_paused);
    args->flags = leave_paused ? MVM_SNAPSHOT_LEAVE_PAUSED : MVM_SNAPSHOT_NONE;
    if (!parse_diff_options(options, args, error))
        return FALSE;
    return parse_snapshot_dest(invocation, dir, options, args, error);
}

/* Snapshot works on a machine that is there and not busy: running or paused. */
static gboolean check_snapshot_state(MvmdVmService *self, GDBusMethodInvocation *invocation)
{
    MvmVmState state = mvmd_vm_service_run_state(self);

    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return FALSE;
    if (state != MVM_VM_STATE_RUNNING && state != MVM_VM_STATE_PAUSED)
        return return_state_error(invocation, "the VM is not running or paused (state %s)",
                                  mvmd_vm_get_state(MVMD_VM(self)));
    return TRUE;
}

/* Snapshot's reply carries no fds (the generated complete takes an fd list). */
static void complete_snapshot(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    mvmd_vm_complete_snapshot(vm, invocation, NULL);
}

static void complete_save_working_set(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    mvmd_vm_complete_save_working_set(vm, invocation, NULL);
}

static void act_snapshot(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GError) error = NULL;
    OpArgs args = OP_ARGS_INIT;

    if (!parse_snapshot_args(invocation, &args, &error)) {
        mvmd_op_args_clear(&args);
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    if (!check_snapshot_state(self, invocation)) {
        mvmd_op_args_clear(&args);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "taking a %ssnapshot to %s",
           args.has_diff_base ? "diff " : "",
           args.dir           ? args.dir
           : args.dir_fd >= 0 ? "a directory fd"
                              : "the caller's files");
    mvmd_vm_service_begin_op(self, OP_SNAPSHOT, invocation, complete_snapshot, &args);
}

/*
 * SaveWorkingSet's file: the caller's own, open for writing, checked as Snapshot's `state-fd`
 * (caller-files.c). No options yet: any key is refused, so that a later one is never ignored.
 */
static gboolean parse_working_set_args(GDBusMethodInvocation *invocation, OpArgs *args,
                                       GError **error)
{
    GUnixFDList *fd_list = mvmd_invocation_fds(invocation);
    g_autoptr(GVariant) fdv = NULL;
    g_autoptr(GVariant) options = NULL;
    uid_t owner;

    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(@h@a{sv})", &fdv,
                  &options);
    if (!mvmd_check_fds_arrived(invocation, error) ||
        !mvmd_config_check_keys(options, NULL, 0, NULL, error) ||
        !mvmd_auth_file_owner(invocation, &owner, error))
        return FALSE;
    args->working_set_fd = mvmd_fd_list_dup(fd_list, fdv, error);
    if (args->working_set_fd < 0) {
        g_prefix_error(error, "argument 'fd': ");
        return FALSE;
    }
    return mvmd_caller_fd_check(args->working_set_fd, "argument 'fd'", MVMD_CALLER_FILE_WRITE,
                                owner, 0, error);
}

/* Is @fd the same file as @other (a descriptor of the definition's, or -1)? */
static gboolean same_file(int fd, int other)
{
    struct stat a, b;

    return other >= 0 && fstat(fd, &a) == 0 && fstat(other, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/*
 * Never into the snapshot files the VM is restored from at each Start (lib refuses its memory
 * file too, but knows nothing of the state file): the next Start would find them emptied.
 */
static gboolean check_not_own_snapshot(MvmdVmService *self, int fd, GError **error)
{
    const MvmdVmDefinition *d = self->definition;

    if (!same_file(fd, d->snapshot_state_fd) && !same_file(fd, d->snapshot_memory_fd))
        return TRUE;
    g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                        "argument 'fd': that is a file of the snapshot the VM is restored from");
    return FALSE;
}

/*
 * On a worker like Snapshot (the file is the caller's; the write and its sync take their
 * time), but the guest runs on. Whether the VM was restored lazily the library answers
 * (MVM_ERROR_NOT_SUPPORTED, NotSupported here).
 */
static void act_save_working_set(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GError) error = NULL;
    OpArgs args = OP_ARGS_INIT;

    if (!parse_working_set_args(invocation, &args, &error) ||
        !check_not_own_snapshot(self, args.working_set_fd, &error)) {
        mvmd_op_args_clear(&args);
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    if (!check_snapshot_state(self, invocation)) {
        mvmd_op_args_clear(&args);
        return;
    }
    mvmd_vm_service_begin_op(self, OP_WORKING_SET, invocation, complete_save_working_set, &args);
}

static void act_resume(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (mvmd_vm_service_run_state(self) != MVM_VM_STATE_PAUSED) {
        return_state_error(invocation, "the VM is not paused (state %s)",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    mvmd_vm_service_resume(self, invocation, mvmd_vm_complete_resume);
}

static void add_waiter(MvmdVmService *self, GDBusMethodInvocation *invocation, WaitKind kind,
                       guint timeout_sec);

/* Each waiter holds a pending reply and a timer: a caller must not pile them up without end. */
static gboolean check_waiters_room(MvmdVmService *self, GDBusMethodInvocation *invocation)
{
    guint n = g_list_length(self->waiters);

    if (n < MVMD_VM_WAITERS_MAX)
        return TRUE;
    g_dbus_method_invocation_return_error(invocation, MVMD_ERROR, MVMD_ERROR_LIMIT_REACHED,
                                          "%u calls are waiting for this VM to stop already, "
                                          "the most there may be; wait for them or call Stop",
                                          n);
    return FALSE;
}

static void act_stop(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    /* Already on its way out: answer when it is out. */
    if (self->op == OP_REAP || (self->op == OP_STOP && !self->reboot_pending)) {
        if (check_waiters_room(self, invocation))
            add_waiter(self, invocation, WAIT_STOP, 0);
        return;
    }
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "stopping (forced)");
    mvmd_vm_service_begin_op(self, OP_STOP, invocation, mvmd_vm_complete_stop, NULL);
}

static void act_reboot(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (self->ctx->stopping) {
        g_dbus_method_invocation_return_error_literal(invocation, MVMD_ERROR, MVMD_ERROR_FAILED,
                                                      "the daemon is shutting down");
        return;
    }
    mvmd_vm_service_begin_reboot(self, invocation, mvmd_vm_complete_reboot);
}

static gboolean on_waiter_timeout(gpointer user_data)
{
    Waiter *w = user_data;
    MvmdVmService *self = w->self;

    vm_log(self, G_LOG_LEVEL_MESSAGE, "the guest did not shut down within %u s", w->timeout_sec);
    g_dbus_method_invocation_return_error(g_steal_pointer(&w->invocation), MVMD_ERROR,
                                          MVMD_ERROR_TIMEOUT,
                                          "the guest did not shut down within %u s; it is still "
                                          "running (use Stop to force it)",
                                          w->timeout_sec);
    g_clear_pointer(&w->timeout, g_source_unref);
    self->waiters = g_list_remove(self->waiters, w);
    mvmd_vm_service_waiter_free(w);
    return G_SOURCE_REMOVE;
}

static void add_waiter(MvmdVmService *self, GDBusMethodInvocation *invocation, WaitKind kind,
                       guint timeout_sec)
{
    Waiter *w = g_new0(Waiter, 1);

    w->self = self;
    w->invocation = invocation;
    w->kind = kind;
    w->timeout_sec = timeout_sec;
    if (timeout_sec > 0) {
        w->timeout = g_timeout_source_new(timeout_sec * 1000);
        g_source_set_callback(w->timeout, on_waiter_timeout, w, NULL);
        g_source_attach(w->timeout, NULL);
    }
    self->waiters = g_list_append(self->waiters, w);
}

static void act_shutdown(MvmdVmService *self, GDBusMethodInvocation *invocation, guint timeout)
{
    g_autoptr(GError) error = NULL;

    if (timeout > SHUTDOWN_TIMEOUT_MAX) {
        g_dbus_method_invocation_return_error(invocation, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                                              "timeout_sec: %u is more than %u", timeout,
                                              SHUTDOWN_TIMEOUT_MAX);
        return;
    }
    if (timeout == 0)
        timeout = SHUTDOWN_TIMEOUT_DEFAULT;
    if (!check_waiters_room(self, invocation))
        return;
    if (self->op == OP_REAP || (self->op == OP_STOP && !self->reboot_pending)) {
        add_waiter(self, invocation, WAIT_SHUTDOWN, timeout);
        return;
    }
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (mvmd_vm_service_run_state(self) != MVM_VM_STATE_RUNNING) {
        return_state_error(invocation, "the VM is %s: Resume or Stop it",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    if (!mvmd_vm_service_request_shutdown(self, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "shutdown requested (waiting up to %u s)", timeout);
    add_waiter(self, invocation, WAIT_SHUTDOWN, timeout);
}

static void act_delete(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GError) error = NULL;

    if (!check_idle(self, invocation) || !check_not_handed_over(self, invocation))
        return;
    if (self->run) {
        return_state_error(invocation, "the VM is %s: Stop it first",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    if (self->definition->persist &&
        !mvmd_store_remove(self->ctx->store, self->definition->name, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "deleted");
    mvmd_vm_service_mark_deleted(self);
    mvmd_vm_complete_delete(MVMD_VM(self), invocation);
}

static void act_open_console(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GUnixFDList) fd_list = NULL;
    int fd = mvmd_console_attach(self->console, &error);

    if (fd < 0) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    fd_list = g_unix_fd_list_new_from_array(&fd, 1);
    mvmd_vm_complete_open_console(MVMD_VM(self), invocation, fd_list, g_variant_new_handle(0));
}

/* A guint64 field of a device's figures, and its name in GetStats. */
typedef struct {
    const char *key;
    gsize offset;
} StatField;

static const StatField disk_fields[] = {
    {"read-requests", G_STRUCT_OFFSET(MvmDiskStats, read_requests)},
    {"read-bytes", G_STRUCT_OFFSET(MvmDiskStats, read_bytes)},
    {"write-requests", G_STRUCT_OFFSET(MvmDiskStats, write_requests)},
    {"write-bytes", G_STRUCT_OFFSET(MvmDiskStats, write_bytes)},
    {"throttled", G_STRUCT_OFFSET(MvmDiskStats, throttled)},
};

static const StatField nic_fields[] = {
    {"rx-frames", G_STRUCT_OFFSET(MvmNicStats, rx_frames)},
    {"rx-bytes", G_STRUCT_OFFSET(MvmNicStats, rx_bytes)},
    {"tx-frames", G_STRUCT_OFFSET(MvmNicStats, tx_frames)},
    {"tx-bytes", G_STRUCT_OFFSET(MvmNicStats, tx_bytes)},
    {"tx-dropped", G_STRUCT_OFFSET(MvmNicStats, tx_dropped)},
    {"rx-throttled", G_STRUCT_OFFSET(MvmNicStats, rx_throttled)},
    {"tx-throttled", G_STRUCT_OFFSET(MvmNicStats, tx_throttled)},
};

static GVariant *stat_fields_to_variant(gconstpointer stats, const StatField *fields, guint n)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (guint i = 0; i < n; i++)
        g_variant_builder_add(
            &b, "{sv}", fields[i].key,
            g_variant_new_uint64(G_STRUCT_MEMBER(guint64, stats, fields[i].offset)));
    return g_variant_builder_end(&b);
}

/* The machine's devices' figures: {'disks': <aa{sv}>, 'network': <aa{sv}>}. */
static GVariant *device_stats(MvmVm *vm)
{
    GVariantBuilder b, disks, nics;
    MvmDiskStats disk;
    MvmNicStats nic;

    g_variant_builder_init(&disks, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; mvm_vm_get_disk_stats(vm, i, &disk); i++)
        g_variant_builder_add_value(
            &disks, stat_fields_to_variant(&disk, disk_fields, G_N_ELEMENTS(disk_fields)));
    g_variant_builder_init(&nics, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; mvm_vm_get_nic_stats(vm, i, &nic); i++)
        g_variant_builder_add_value(
            &nics, stat_fields_to_variant(&nic, nic_fields, G_N_ELEMENTS(nic_fields)));
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "disks", g_variant_builder_end(&disks));
    g_variant_builder_add(&b, "{sv}", "network", g_variant_builder_end(&nics));
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

static GVariant *build_stats(MvmdVmService *self)
{
    MvmVmStats st = {0};
    GVariantBuilder b, exits;
    gint64 uptime = 0;
    gboolean lazy = FALSE;

    if (self->run && self->op == OP_NONE) {
        mvm_vm_get_stats(self->run->vm, &st);
        self->stats_cache = st;
        g_clear_pointer(&self->device_stats_cache, g_variant_unref);
        self->device_stats_cache = device_stats(self->run->vm);
        self->has_lazy = mvm_vm_get_lazy_progress(self->run->vm, &self->lazy_pages_read,
                                                  &self->lazy_pages_total);
    }
    if (self->run && self->op != OP_START) {
        st = self->stats_cache;
        lazy = self->has_lazy;
    }
    if (st.started_at_us > 0)
        uptime = g_get_monotonic_time() - st.started_at_us;

    g_variant_builder_init(&exits, G_VARIANT_TYPE("a{st}"));
    g_variant_builder_add(&exits, "{st}", "io", st.exits_io);
    g_variant_builder_add(&exits, "{st}", "mmio", st.exits_mmio);
    g_variant_builder_add(&exits, "{st}", "hlt", st.exits_hlt);
    g_variant_builder_add(&exits, "{st}", "other", st.exits_other);
    g_variant_builder_add(&exits, "{st}", "unhandled-io", st.exits_unhandled_io);

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "exits", g_variant_builder_end(&exits));
    g_variant_builder_add(&b, "{sv}", "vcpu-time-us", g_variant_new_int64(st.vcpu_time_us));
    g_variant_builder_add(&b, "{sv}", "uptime-us", g_variant_new_int64(uptime));
    g_variant_builder_add(&b, "{sv}", "memory-bytes", g_variant_new_uint64(st.memory_bytes));
    g_variant_builder_add(&b, "{sv}", "kvmclock-ctrl-einval",
                          g_variant_new_uint64(st.kvmclock_ctrl_einval));
    g_variant_builder_add(&b, "{sv}", "restarts", g_variant_new_uint32(self->restarts));
    g_variant_builder_add(&b, "{sv}", "diff-parent",
                          g_variant_new_take_string(mvmd_vm_service_format_diff_parent(self)));
    if (self->run && self->op != OP_START && self->device_stats_cache) {
        GVariantIter iter;
        GVariant *entry;

        g_variant_iter_init(&iter, self->device_stats_cache);
        while ((entry = g_variant_iter_next_value(&iter))) {
            g_variant_builder_add_value(&b, entry);
            g_variant_unref(entry);
        }
    }
    if (lazy) {
        g_variant_builder_add(&b, "{sv}", "lazy-pages-read",
                              g_variant_new_uint64(self->lazy_pages_read));
        g_variant_builder_add(&b, "{sv}", "lazy-pages-total",
                              g_variant_new_uint64(self->lazy_pages_total));
    }
    return g_variant_builder_end(&b);
}

static gboolean handle_start(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_start, 0);
}

static gboolean handle_pause(MvmdVm *vm, GDBusMethodInvocation *invocation, GVariant *options)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_pause, 0);
}

static gboolean handle_snapshot(MvmdVm *vm, GDBusMethodInvocation *invocation, GUnixFDList *fd_list,
                                const char *dir, GVariant *options)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &SNAPSHOT, act_snapshot, 0);
}

static gboolean handle_save_working_set(MvmdVm *vm, GDBusMethodInvocation *invocation,
                                        GUnixFDList *fd_list, GVariant *fd, GVariant *options)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &SNAPSHOT, act_save_working_set, 0);
}

static gboolean handle_resume(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_resume, 0);
}

static gboolean handle_shutdown(MvmdVm *vm, GDBusMethodInvocation *invocation, guint timeout)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_shutdown, timeout);
}

static gboolean handle_stop(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_stop, 0);
}

static gboolean handle_reboot(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_reboot, 0);
}

static gboolean handle_delete(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_delete, 0);
}

static gboolean handle_open_console(MvmdVm *vm, GDBusMethodInvocation *invocation,
                                    GUnixFDList *fd_list)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &CONSOLE, act_open_console, 0);
}

static void act_get_stats(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    mvmd_vm_complete_get_stats(MVMD_VM(self), invocation, build_stats(self));
}

/*
 * The definition, and what only the machine knows: its generation ID. Not a property: the
 * guest mixes the ID into its RNG, and properties go to every client on the bus.
 */
static GVariant *build_config(MvmdVmService *self)
{
    g_autoptr(GVariant) definition =
        g_variant_ref_sink(mvmd_vm_definition_to_variant(self->definition));
    GVariantBuilder b;
    GVariantIter iter;
    GVariant *entry;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_iter_init(&iter, definition);
    while ((entry = g_variant_iter_next_value(&iter))) {
        g_variant_builder_add_value(&b, entry);
        g_variant_unref(entry);
    }
    g_variant_builder_add(&b, "{sv}", "generation-id",
                          g_variant_new_take_string(mvmd_vm_service_format_generation_id(self)));
    return g_variant_builder_end(&b);
}

static void act_get_config(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    mvmd_vm_complete_get_config(MVMD_VM(self), invocation, build_config(self));
}

static void act_get_exit_reason(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    mvmd_vm_complete_get_exit_reason(MVMD_VM(self), invocation, self->exit_reason);
}

/*
 * The vCPUs are KVM's, so there must be a machine (running or paused), and only one operation
 * at a time touches it: a Stop cannot free it under the read (vm-ops.c).
 */
static void act_get_cpu_config(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    MvmVmState state = mvmd_vm_service_run_state(self);

    if (!check_idle(self, invocation))
        return;
    if (!self->run || (state != MVM_VM_STATE_RUNNING && state != MVM_VM_STATE_PAUSED)) {
        return_state_error(invocation,
                           "the VM is %s: its CPU configuration exists only while it is running "
                           "or paused (GetConfig shows its cpu-template)",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    mvmd_vm_service_begin_op(self, OP_CPU_CONFIG, invocation, NULL, NULL);
}

static gboolean handle_get_cpu_config(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_get_cpu_config, 0);
}

static void act_set_resources(MvmdVmService *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GVariant) resources = NULL;
    g_autoptr(GError) error = NULL;

    if (!check_idle(self, invocation) || !check_not_handed_over(self, invocation))
        return;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(@a{sv})", &resources);
    if (!mvmd_vm_service_set_resources(self, resources, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    mvmd_vm_complete_set_resources(MVMD_VM(self), invocation);
}

static gboolean handle_set_resources(MvmdVm *vm, GDBusMethodInvocation *invocation,
                                     GVariant *resources)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &MANAGE, act_set_resources, 0);
}

static gboolean handle_get_stats(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &READ, act_get_stats, 0);
}

static gboolean handle_get_config(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &READ, act_get_config, 0);
}

static gboolean handle_get_exit_reason(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_SERVICE(vm), invocation, &READ, act_get_exit_reason, 0);
}

void mvmd_vm_service_iface_init(MvmdVmIface *iface)
{
    iface->handle_snapshot = handle_snapshot;
    iface->handle_save_working_set = handle_save_working_set;
    iface->handle_start = handle_start;
    iface->handle_pause = handle_pause;
    iface->handle_resume = handle_resume;
    iface->handle_shutdown = handle_shutdown;
    iface->handle_stop = handle_stop;
    iface->handle_reboot = handle_reboot;
    iface->handle_delete = handle_delete;
    iface->handle_open_console = handle_open_console;
    iface->handle_get_stats = handle_get_stats;
    iface->handle_get_config = handle_get_config;
    iface->handle_get_exit_reason = handle_get_exit_reason;
    iface->handle_get_cpu_config = handle_get_cpu_config;
    iface->handle_set_resources = handle_set_resources;
}
