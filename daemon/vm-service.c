/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "errors.h"
#include "fd-closer.h"
#include "names.h"
#include "vm-service-private.h"

/* A guest that resets more often than this is stopped instead of restarted again. */
#define RESET_LOOP_MAX       10
#define RESET_LOOP_WINDOW_US (10 * G_USEC_PER_SEC)

G_DEFINE_TYPE_WITH_CODE(MvmdVmService, mvmd_vm_service, MVMD_TYPE_VM_SKELETON,
                        G_IMPLEMENT_INTERFACE(MVMD_TYPE_VM, mvmd_vm_service_iface_init))

enum {
    SIGNAL_DELETED,
    N_SIGNALS,
};
static guint signals[N_SIGNALS];

static void maybe_reap(MvmdVmService *self);

/* ---- runs and the news from the vCPU threads ------------------------------------------- */

static Run *run_new(MvmdVmService *self)
{
    Run *run = g_new0(Run, 1);

    g_atomic_ref_count_init(&run->ref);
    g_weak_ref_init(&run->self, self);
    run->name = g_strdup(self->definition->name);
    run->console = mvmd_console_ref(self->console);
    run->context = g_main_context_ref_thread_default();
    run->state = MVM_VM_STATE_CREATED;
    return run;
}

static Run *run_ref(Run *run)
{
    g_atomic_ref_count_inc(&run->ref);
    return run;
}

static void run_unref(Run *run)
{
    if (!run || !g_atomic_ref_count_dec(&run->ref))
        return;
    /* The lib VM is freed by a worker (or dispose) before the last reference goes. */
    g_warn_if_fail(run->vm == NULL);
    g_weak_ref_clear(&run->self);
    g_free(run->name);
    mvmd_console_unref(run->console);
    g_main_context_unref(run->context);
    g_free(run);
}

static void set_state(MvmdVmService *self, const char *state)
{
    MvmdVm *vm = MVMD_VM(self);

    if (g_strcmp0(mvmd_vm_get_state(vm), state) == 0)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "state %s → %s", mvmd_vm_get_state(vm), state);
    mvmd_vm_set_state(vm, state);
    mvmd_vm_set_state_changed_at(vm, g_get_real_time());
}

/* Not a property: only the owner (and whom polkit allows) may read it, through GetExitReason. */
static void set_exit_reason(MvmdVmService *self, const char *reason)
{
    g_free(self->exit_reason);
    self->exit_reason = g_strdup(reason);
}

/* Publishes what the vCPU threads reported; a run that ended is reaped. */
static void sync_state(MvmdVmService *self)
{
    switch (g_atomic_int_get(&self->run->state)) {
    case MVM_VM_STATE_RUNNING:
        set_state(self, MVMD_STATE_RUNNING);
        break;
    case MVM_VM_STATE_PAUSED:
        set_state(self, MVMD_STATE_PAUSED);
        break;
    case MVM_VM_STATE_STOPPED:
    case MVM_VM_STATE_CRASHED:
        maybe_reap(self);
        break;
    default:
        break;
    }
}

static gboolean run_poke(gpointer user_data)
{
    Run *run = user_data;
    g_autoptr(MvmdVmService) self = NULL;

    g_atomic_int_set(&run->poke_pending, 0);
    self = g_weak_ref_get(&run->self);
    if (self && self->run == run)
        sync_state(self);
    return G_SOURCE_REMOVE;
}

/* vCPU thread (or the worker, for changes the API made): never blocks. */
static void on_lib_state(MvmVm *vm, MvmVmState state, gpointer user_data)
{
    Run *run = user_data;
    g_autoptr(GSource) source = NULL;

    g_atomic_int_set(&run->state, state);
    if (!g_atomic_int_compare_and_exchange(&run->poke_pending, 0, 1))
        return;
    source = g_idle_source_new();
    g_source_set_callback(source, run_poke, run_ref(run), (GDestroyNotify)run_unref);
    g_source_set_static_name(source, "[microvmd] vm state");
    g_source_attach(source, run->context);
}

/* vCPU thread: the console batches. */
static void on_lib_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    Run *run = user_data;

    mvmd_console_feed(run->console, data, len);
}

/* vCPU or I/O thread: what the lib says about the VM (guest-caused messages are limited). */
static void on_lib_log(MvmVm *vm, GLogLevelFlags level, const char *message, gpointer user_data)
{
    Run *run = user_data;

    mvmd_vm_log(run->name, level, "%s", message);
}

/* ---- operations in a worker thread ----------------------------------------------------- */

typedef struct {
    Op op;
    Run *run;
    OpArgs args;
    MvmVmConfig *mvm_config; /* Start; fds borrowed from the definition */
    /* Start of a restored VM: the snapshot (fd borrowed from the definition). */
    char *restore_dir;
    int restore_fd;
    int restore_state_fd; /* or its two files (borrowed too) */
    int restore_memory_fd;
    MvmRestoreFlags restore_flags;
    /* Root asked for the back ends the snapshot names ('use-snapshot-backends'); else
     * mvm_config's devices are used. */
    gboolean restore_own_backends;
    /* How the run ended (Stop, Reap). */
    MvmVmState final_state;
    MvmExitKind kind;
    guint32 exit_code;
    char *reason;
} OpData;

void mvmd_op_args_clear(OpArgs *args)
{
    g_clear_pointer(&args->dir, g_free);
    /* The caller's descriptors: closing one may wait for the caller (fd-closer.h). */
    mvmd_clear_fd_later(&args->dir_fd);
    mvmd_clear_fd_later(&args->state_fd);
    mvmd_clear_fd_later(&args->memory_fd);
}

static void op_data_free(OpData *d)
{
    if (d->mvm_config) {
        /* Borrowed from the definition: not the library's to close. */
        d->mvm_config->kernel_fd = -1;
        d->mvm_config->initrd_fd = -1;
        mvm_vm_config_free(d->mvm_config);
    }
    mvmd_op_args_clear(&d->args);
    g_clear_pointer(&d->run, run_unref);
    g_free(d->restore_dir);
    g_free(d->reason);
    g_free(d);
}

/*
 * A path from the definition is opened here rather than by the library, so that a file that
 * is missing or unreadable at start is told apart (Failed: the host, not the call, is wrong)
 * from a file that is no loadable image (InvalidArgument, from the library).
 */
static int open_boot_file(const char *path, const char *what, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot open the %s %s", what, path);
    return fd;
}

/* Gives the library fds only: ours (closed after the build) or the caller's (rewound). */
static gboolean worker_open_files(MvmVmConfig *mvm, int *owned, GError **error)
{
    if (mvm->kernel_fd < 0 && mvm->kernel_path) {
        owned[0] = mvm->kernel_fd = open_boot_file(mvm->kernel_path, "kernel", error);
        if (owned[0] < 0)
            return FALSE;
    }
    if (mvm->initrd_fd < 0 && mvm->initrd_path) {
        owned[1] = mvm->initrd_fd = open_boot_file(mvm->initrd_path, "initrd", error);
        if (owned[1] < 0)
            return FALSE;
    }
    /* A passed fd is shared with earlier runs: read it from the start again. */
    if (mvm->kernel_fd >= 0)
        lseek(mvm->kernel_fd, 0, SEEK_SET);
    if (mvm->initrd_fd >= 0)
        lseek(mvm->initrd_fd, 0, SEEK_SET);
    return TRUE;
}

static MvmVm *worker_build(OpData *d, GError **error)
{
    int owned[2] = {-1, -1};
    gboolean opened = worker_open_files(d->mvm_config, owned, error);
    MvmVm *vm = opened ? mvm_vm_new(d->mvm_config, error) : NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(owned); i++) {
        if (owned[i] >= 0)
            close(owned[i]);
    }
    return vm;
}

static guint n_items(const GPtrArray *array)
{
    return array != NULL ? array->len : 0;
}

/* "the snapshot has 1 disk; pass it as an fd in the 'disks' option" */
static void hint_count(GString *msg, const char *what, const char *option, guint has, guint given)
{
    if (msg->len)
        g_string_append(msg, "; ");
    g_string_append_printf(msg, "the snapshot has %u %s%s", has, what, has == 1 ? "" : "s");
    if (given == 0)
        g_string_append_printf(msg, "; pass %s as %s in the '%s' option", has == 1 ? "it" : "them",
                               has == 1 ? "an fd" : "fds", option);
    else
        g_string_append_printf(msg, " and the '%s' option gives %u", option, given);
}

/*
 * The snapshot's devices against the back ends of RestoreVM's options, before any VM is built,
 * said in terms of the option the caller must fill. The library refuses a mismatch of counts
 * or CID too, on the state it decodes for the restore (the caller's file may have changed
 * since this read), but in the words of its own API.
 */
static gboolean check_backend_counts(const MvmVmConfig *snap, const MvmVmConfig *given,
                                     GError **error)
{
    g_autoptr(GString) msg = g_string_new(NULL);
    guint disks = n_items(snap->disks), given_disks = n_items(given->disks);
    guint nics = n_items(snap->nics), given_nics = n_items(given->nics);

    if (disks != given_disks)
        hint_count(msg, "disk", "disks", disks, given_disks);
    if (nics != given_nics)
        hint_count(msg, "network interface", "network", nics, given_nics);
    if (snap->vsock_cid != 0 && given->vsock_uds_path == NULL)
        g_string_append_printf(msg,
                               "%sthe snapshot has a vsock device; pass its host socket in "
                               "the 'vsock' option",
                               msg->len ? "; " : "");
    else if (snap->vsock_cid == 0 && given->vsock_uds_path != NULL)
        g_string_append_printf(msg,
                               "%sthe snapshot has no vsock device; leave out the 'vsock' "
                               "option",
                               msg->len ? "; " : "");
    if (!msg->len)
        return TRUE;
    if (given_disks == 0 && given_nics == 0 && given->vsock_uds_path == NULL)
        g_string_append(msg, "; or, as root, pass 'use-snapshot-backends': <true> to have microvmd "
                             "open the ones the snapshot names (its disk paths read-write, its "
                             "taps, its vsock socket path)");
    g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, msg->str);
    return FALSE;
}

/* The guest knows its CID from the snapshot: a caller's other CID would be a lie. */
static gboolean check_vsock_cid(const MvmVmConfig *snap, const MvmVmConfig *backends,
                                GError **error)
{
    if (backends->vsock_cid == snap->vsock_cid)
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                "option 'vsock': cid %u, but the snapshot's guest has cid %u", backends->vsock_cid,
                snap->vsock_cid);
    return FALSE;
}

/*
 * @snap: what the snapshot's `state` alone says (untrusted, checked by the library; nothing it
 * names is opened), or NULL with @error set when it could not be read.
 */
static gboolean check_backends(const MvmVmConfig *snap, const MvmVmConfig *backends, GError **error)
{
    return snap != NULL && check_backend_counts(snap, backends, error) &&
           check_vsock_cid(snap, backends, error);
}

/* The snapshot as the caller's two files: read, never mapped from a file the caller can change. */
static MvmVm *worker_restore_files(OpData *d, GError **error)
{
    g_autoptr(MvmVmConfig) snap = mvm_snapshot_read_config_fd(d->restore_state_fd, error);

    if (!check_backends(snap, d->mvm_config, error))
        return NULL;
    return mvm_vm_restore_from_fds(d->restore_state_fd, d->restore_memory_fd, d->mvm_config,
                                   d->restore_flags, error);
}

/*
 * With the back ends from the definition (RestoreVM's options: the caller's fds, or paths
 * root gave) the snapshot's own paths are never opened; only root who asked for them with
 * 'use-snapshot-backends' gets those (docs/security.md: the daemon never follows a path for a
 * non-root caller, nor one a snapshot names unless root says so).
 */
static MvmVm *worker_restore_backends(OpData *d, GError **error)
{
    g_autoptr(MvmVmConfig) snap = NULL;
    int dirfd = d->restore_fd;
    MvmVm *vm;

    if (d->restore_state_fd >= 0)
        return worker_restore_files(d, error);
    if (dirfd < 0) {
        dirfd = open(d->restore_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0) {
            mvmd_set_errno_error(error, MVMD_ERROR_INVALID_ARGUMENT, "cannot open snapshot %s",
                                 d->restore_dir);
            return NULL;
        }
    }
    snap = mvm_snapshot_read_config_at(dirfd, error);
    vm = check_backends(snap, d->mvm_config, error)
             ? mvm_vm_restore_with_backends(dirfd, d->mvm_config, d->restore_flags, error)
             : NULL;
    if (dirfd != d->restore_fd)
        close(dirfd);
    return vm;
}

/* A restored machine comes back paused (the lib's contract): it runs unless asked not to. */
static MvmVm *worker_restore(OpData *d, GError **error)
{
    if (!d->restore_own_backends)
        return worker_restore_backends(d, error);
    if (d->restore_state_fd >= 0)
        return mvm_vm_restore_from_fds(d->restore_state_fd, d->restore_memory_fd, NULL,
                                       d->restore_flags, error);
    if (d->restore_fd >= 0)
        return mvm_vm_restore_at(d->restore_fd, d->restore_flags, error);
    return mvm_vm_restore(d->restore_dir, d->restore_flags, error);
}

static gboolean worker_start(OpData *d, GError **error)
{
    gboolean restored = d->restore_dir || d->restore_fd >= 0 || d->restore_state_fd >= 0;
    MvmVm *vm = restored ? worker_restore(d, error) : worker_build(d, error);
    gboolean ok;

    if (!vm)
        return FALSE;
    mvm_vm_set_state_callback(vm, on_lib_state, d->run);
    mvm_vm_set_console_callback(vm, on_lib_console, d->run);
    mvm_vm_set_log_callback(vm, on_lib_log, d->run);
    if (restored) {
        g_atomic_int_set(&d->run->state, mvm_vm_get_state(vm));
        ok = d->args.paused || mvm_vm_resume(vm, error);
    } else {
        ok = mvm_vm_start(vm, error);
    }
    if (!ok) {
        mvm_vm_free(vm);
        return FALSE;
    }
    d->run->vm = vm;
    return TRUE;
}

/*
 * On this worker thread, not the main loop. mvm_vm_snapshot_to_fds() holds the VM's operation
 * lock, with the VM paused, while it writes the caller's files; the files were checked to be
 * regular files off FUSE (caller-files.c), so the writes end. The daemon holds no lock of its
 * own: only this VM's other operations wait ("operation in progress").
 */
static gboolean worker_snapshot(OpData *d, GError **error)
{
    if (d->args.state_fd >= 0)
        return mvm_vm_snapshot_to_fds(d->run->vm, d->args.state_fd, d->args.memory_fd,
                                      d->args.flags, error);
    if (d->args.dir_fd >= 0)
        return mvm_vm_snapshot_at(d->run->vm, d->args.dir_fd, d->args.flags, error);
    return mvm_vm_snapshot(d->run->vm, d->args.dir, d->args.flags, error);
}

/* Stop (if asked), note how the run ended, and free the machine (joins its threads). */
static void worker_finish(OpData *d, gboolean stop)
{
    MvmVm *vm = d->run->vm;
    g_autoptr(GError) error = NULL;

    if (stop && !mvm_vm_stop(vm, &error))
        g_debug("stop: %s", error->message); /* it had stopped by itself meanwhile */
    d->final_state = mvm_vm_get_state(vm);
    d->kind = mvm_vm_get_exit_kind(vm);
    d->exit_code = mvm_vm_get_exit_code(vm);
    d->reason = mvm_vm_dup_exit_reason(vm);
    mvm_vm_free(vm);
    d->run->vm = NULL;
}

/*
 * Every failure below sets its GError; should one ever not, the call still gets an answer
 * (g_task_return_error() with no error is a critical, and the task would never complete).
 */
static GError *error_or_bug(GError *error, Op op)
{
    if (error != NULL)
        return error;
    g_warning("BUG: operation %d failed without saying why", op);
    return g_error_new_literal(MVMD_ERROR, MVMD_ERROR_FAILED,
                               "the operation failed for an unknown reason (a bug in microvmd)");
}

static void op_worker(GTask *task, gpointer source, gpointer task_data, GCancellable *cancel)
{
    OpData *d = task_data;
    GError *error = NULL;
    gboolean ok = TRUE;

    switch (d->op) {
    case OP_START:
        ok = worker_start(d, &error);
        break;
    case OP_PAUSE:
        ok = mvm_vm_pause_full(d->run->vm, d->args.flags, &error);
        break;
    case OP_SNAPSHOT:
        ok = worker_snapshot(d, &error);
        break;
    case OP_RESUME:
        ok = mvm_vm_resume(d->run->vm, &error);
        break;
    case OP_STOP:
    case OP_REAP:
        worker_finish(d, d->op == OP_STOP);
        break;
    case OP_NONE:
        g_assert_not_reached();
    }
    if (ok)
        g_task_return_boolean(task, TRUE);
    else
        g_task_return_error(task, error_or_bug(error, d->op));
}

static gpointer op_thread(gpointer data)
{
    g_autoptr(GTask) task = data;

    op_worker(task, g_task_get_source_object(task), g_task_get_task_data(task), NULL);
    return NULL;
}

/*
 * Each operation gets a thread of its own, not one of GTask's pool: a pool that cannot start
 * a thread (no memory, no more tasks) queues the work silently, and the call would never be
 * answered. Here a call that cannot get its thread answers NoResources; the end of a run, which
 * nobody waits for and which must happen, is done on the spot instead.
 */
static void run_op(GTask *task)
{
    OpData *d = g_task_get_task_data(task);
    g_autoptr(GError) error = NULL;
    GThread *thread = g_thread_try_new("vm-op", op_thread, g_object_ref(task), &error);

    if (thread) {
        g_thread_unref(thread);
        return;
    }
    g_object_unref(task); /* the thread's */
    if (d->op == OP_STOP || d->op == OP_REAP) {
        g_debug("no thread to end the run (%s): ending it on the main loop", error->message);
        op_worker(task, g_task_get_source_object(task), d, NULL);
        return;
    }
    g_task_return_new_error(task, MVMD_ERROR, MVMD_ERROR_NO_RESOURCES,
                            "no thread for the operation (out of memory or threads): %s",
                            error->message);
}

/* ---- completing operations on the main loop -------------------------------------------- */

static const char *exit_kind_token(MvmExitKind kind)
{
    static const char *const tokens[] = {
        [MVM_EXIT_NONE] = "none",
        [MVM_EXIT_REQUESTED] = "requested",
        [MVM_EXIT_RESET] = "reset",
        [MVM_EXIT_POWEROFF] = "poweroff",
        [MVM_EXIT_DEBUG_EXIT] = "debug-exit",
        [MVM_EXIT_HALTED] = "halted",
        [MVM_EXIT_TRIPLE_FAULT] = "triple-fault",
        [MVM_EXIT_INTERNAL_ERROR] = "internal-error",
        [MVM_EXIT_FAIL_ENTRY] = "fail-entry",
        [MVM_EXIT_HOST_ERROR] = "host-error",
    };

    if ((guint)kind < G_N_ELEMENTS(tokens) && tokens[kind])
        return tokens[kind];
    return "unknown";
}

static char *format_exit_reason(const OpData *d)
{
    const char *token = exit_kind_token(d->kind);

    if (d->reason && *d->reason)
        return g_strdup_printf("%s: %s", token, d->reason);
    if (d->kind == MVM_EXIT_DEBUG_EXIT)
        return g_strdup_printf("%s: debug exit code %u", token, d->exit_code);
    return g_strdup_printf("%s: %s", token, mvm_exit_kind_to_string(d->kind));
}

static void flush_properties(MvmdVmService *self)
{
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
}

void mvmd_vm_service_waiter_free(Waiter *w)
{
    if (w->invocation)
        g_dbus_method_invocation_return_error_literal(g_steal_pointer(&w->invocation), MVMD_ERROR,
                                                      MVMD_ERROR_FAILED, "the VM went away");
    if (w->timeout) {
        g_source_destroy(w->timeout);
        g_source_unref(w->timeout);
    }
    g_free(w);
}

/* Every Shutdown/Stop caller waiting learns how the run ended. */
static void complete_waiters(MvmdVmService *self, gboolean crashed, const char *reason)
{
    GList *waiters = g_steal_pointer(&self->waiters);

    for (GList *l = waiters; l; l = l->next) {
        Waiter *w = l->data;

        if (crashed && w->kind == WAIT_SHUTDOWN)
            g_dbus_method_invocation_return_error(
                g_steal_pointer(&w->invocation), MVMD_ERROR, MVMD_ERROR_FAILED,
                "the VM crashed while shutting down (%s)", reason);
        else if (w->kind == WAIT_SHUTDOWN)
            mvmd_vm_complete_shutdown(MVMD_VM(self), g_steal_pointer(&w->invocation));
        else
            mvmd_vm_complete_stop(MVMD_VM(self), g_steal_pointer(&w->invocation));
    }
    g_list_free_full(waiters, (GDestroyNotify)mvmd_vm_service_waiter_free);
}

static gboolean reset_loop(MvmdVmService *self)
{
    gint64 now = g_get_monotonic_time();

    if (now - self->reset_window_start > RESET_LOOP_WINDOW_US) {
        self->reset_window_start = now;
        self->reset_count = 0;
    }
    return ++self->reset_count > RESET_LOOP_MAX;
}

/* A guest reset: like QEMU and libvirt, boot again unless told otherwise (or shutting down). */
static gboolean should_restart(MvmdVmService *self, const OpData *d)
{
    if (d->op != OP_REAP || d->kind != MVM_EXIT_RESET)
        return FALSE;
    if (self->definition->on_reboot != MVMD_ON_REBOOT_RESTART || self->waiters ||
        self->ctx->stopping)
        return FALSE;
    if (reset_loop(self)) {
        vm_log(self, G_LOG_LEVEL_WARNING, "more than %d resets in %d s: stopping it",
               RESET_LOOP_MAX, (int)(RESET_LOOP_WINDOW_US / G_USEC_PER_SEC));
        return FALSE;
    }
    return TRUE;
}

/* The run is over (Stop or the guest's own end): the machine is freed. */
static void end_run(MvmdVmService *self, OpData *d, GDBusMethodInvocation *invocation)
{
    g_autofree char *reason = format_exit_reason(d);
    gboolean crashed = d->final_state == MVM_VM_STATE_CRASHED;

    g_clear_pointer(&self->run, run_unref);
    memset(&self->stats_cache, 0, sizeof(self->stats_cache));
    mvmd_console_flush(self->console);
    set_exit_reason(self, reason);
    vm_log(self, crashed ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, "run ended: %s", reason);

    if (self->reboot_pending) {
        self->reboot_pending = FALSE;
        mvmd_vm_service_begin_op(self, OP_START, invocation, NULL);
        return;
    }
    if (should_restart(self, d)) {
        self->restarts++;
        vm_log(self, G_LOG_LEVEL_MESSAGE, "guest reset: restarting");
        mvmd_vm_service_begin_op(self, OP_START, NULL, NULL);
        return;
    }
    set_state(self, crashed ? MVMD_STATE_CRASHED : MVMD_STATE_STOPPED);
    flush_properties(self);
    complete_waiters(self, crashed, reason);
    if (invocation)
        mvmd_vm_complete_stop(MVMD_VM(self), invocation);
}

/* RestoreVM learns how the first start went; later starts are ordinary. */
static gboolean tell_ready(MvmdVmService *self, const GError *error)
{
    MvmdVmServiceReadyFunc func = g_steal_pointer(&self->ready_func);

    if (!func)
        return FALSE;
    func(self, error, self->ready_data);
    return TRUE;
}

/* A restored machine has the vCPUs, memory and devices of its snapshot, known only now. */
static void update_restored_definition(MvmdVmService *self)
{
    const MvmVmConfig *mvm = mvm_vm_get_config(self->run->vm);

    if (!mvmd_vm_definition_is_restored(self->definition))
        return;
    self->definition->vcpus = mvm->n_vcpus;
    self->definition->memory_mib = mvm->memory_mib;
    mvmd_devices_update_from_mvm(&self->definition->devices, mvm);
    mvmd_vm_set_vcpus(MVMD_VM(self), mvm->n_vcpus);
    mvmd_vm_set_memory_mib(MVMD_VM(self), mvm->memory_mib);
}

static void start_done(MvmdVmService *self, gboolean ok, GError *error,
                       GDBusMethodInvocation *invocation)
{
    if (!ok) {
        g_autoptr(GError) mapped = mvmd_error_from_error(
            error, mvmd_vm_definition_is_restored(self->definition) ? "cannot restore the snapshot"
                                                                    : "cannot start the VM");

        g_clear_pointer(&self->run, run_unref);
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", mapped->message);
        if (tell_ready(self, mapped))
            return;
        if (!invocation) {
            /* Autostart or a restart after a reset: nobody to tell but the properties. */
            g_autofree char *reason = g_strdup_printf("start-failed: %s", error->message);

            set_exit_reason(self, reason);
            if (g_str_equal(mvmd_vm_get_state(MVMD_VM(self)), MVMD_STATE_RUNNING) ||
                g_str_equal(mvmd_vm_get_state(MVMD_VM(self)), MVMD_STATE_PAUSED))
                set_state(self, MVMD_STATE_STOPPED); /* a restart after a reset failed */
            flush_properties(self);
            complete_waiters(self, FALSE, reason);
            return;
        }
        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    if (invocation)
        set_exit_reason(self, "");
    update_restored_definition(self);
    sync_state(self);
    flush_properties(self);
    if (tell_ready(self, NULL) || !invocation)
        return;
    /* A Reboot finishes here too. */
    if (g_str_equal(g_dbus_method_invocation_get_method_name(invocation), "Reboot"))
        mvmd_vm_complete_reboot(MVMD_VM(self), invocation);
    else
        mvmd_vm_complete_start(MVMD_VM(self), invocation);
}

static void pause_resume_done(MvmdVmService *self, Op op, gboolean ok, GError *error,
                              GDBusMethodInvocation *invocation)
{
    if (!ok) {
        g_autoptr(GError) mapped =
            mvmd_error_from_error(error, op == OP_PAUSE ? "cannot pause" : "cannot resume");

        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    set_state(self, op == OP_PAUSE ? MVMD_STATE_PAUSED : MVMD_STATE_RUNNING);
    flush_properties(self);
    if (op == OP_PAUSE)
        mvmd_vm_complete_pause(MVMD_VM(self), invocation);
    else
        mvmd_vm_complete_resume(MVMD_VM(self), invocation);
}

static void snapshot_done(MvmdVmService *self, gboolean ok, GError *error,
                          GDBusMethodInvocation *invocation)
{
    if (!ok) {
        g_autoptr(GError) mapped = mvmd_error_from_error(error, "cannot take the snapshot");

        vm_log(self, G_LOG_LEVEL_WARNING, "%s", mapped->message);
        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "snapshot taken");
    /* Paused for the snapshot, and running again unless asked to stay paused. */
    sync_state(self);
    flush_properties(self);
    mvmd_vm_complete_snapshot(MVMD_VM(self), invocation, NULL);
}

static void op_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    MvmdVmService *self = MVMD_VM_SERVICE(source);
    OpData *d = g_task_get_task_data(G_TASK(result));
    GDBusMethodInvocation *invocation = g_steal_pointer(&self->op_invocation);
    g_autoptr(GError) error = NULL;
    gboolean ok = g_task_propagate_boolean(G_TASK(result), &error);
    Op op = self->op;

    self->op = OP_NONE;
    switch (op) {
    case OP_START:
        start_done(self, ok, error, invocation);
        break;
    case OP_PAUSE:
    case OP_RESUME:
        pause_resume_done(self, op, ok, error, invocation);
        break;
    case OP_SNAPSHOT:
        snapshot_done(self, ok, error, invocation);
        break;
    case OP_STOP:
    case OP_REAP:
        end_run(self, d, invocation);
        break;
    case OP_NONE:
        g_assert_not_reached();
    }
    /* The daemon is going down, or the guest ended while we were busy. */
    if (self->ctx->force_stop && self->run && self->op == OP_NONE)
        mvmd_vm_service_begin_op(self, OP_STOP, NULL, NULL);
    else
        maybe_reap(self);
}

static void op_data_set_restore(OpData *d, const MvmdVmDefinition *definition)
{
    d->restore_dir = g_strdup(definition->snapshot_dir);
    d->restore_fd = definition->snapshot_fd;
    d->restore_state_fd = definition->snapshot_state_fd;
    d->restore_memory_fd = definition->snapshot_memory_fd;
    d->restore_flags = definition->copy_memory ? MVM_RESTORE_COPY_MEMORY : MVM_RESTORE_NONE;
    d->restore_own_backends = definition->devices.from_snapshot;
}

void mvmd_vm_service_begin_op(MvmdVmService *self, Op op, GDBusMethodInvocation *invocation,
                              OpArgs *args)
{
    g_autoptr(GTask) task = g_task_new(self, NULL, op_done, NULL);
    OpData *d = g_new0(OpData, 1);

    g_return_if_fail(self->op == OP_NONE);
    const OpArgs none = OP_ARGS_INIT;

    d->restore_fd = d->restore_state_fd = d->restore_memory_fd = -1;
    d->args = none;
    if (args)
        d->args = *args; /* taken */
    if (op == OP_START) {
        g_return_if_fail(self->run == NULL);
        self->run = run_new(self);
        d->mvm_config = mvmd_vm_definition_to_mvm(self->definition);
        op_data_set_restore(d, self->definition);
    }
    d->op = op;
    d->run = run_ref(self->run);
    self->op = op;
    self->op_invocation = invocation;
    g_task_set_source_tag(task, mvmd_vm_service_begin_op);
    g_task_set_task_data(task, d, (GDestroyNotify)op_data_free);
    run_op(task);
}

static void maybe_reap(MvmdVmService *self)
{
    MvmVmState state;

    if (self->op != OP_NONE || !self->run)
        return;
    state = g_atomic_int_get(&self->run->state);
    if (state == MVM_VM_STATE_STOPPED || state == MVM_VM_STATE_CRASHED)
        mvmd_vm_service_begin_op(self, OP_REAP, NULL, NULL);
}

/* ---- shared with the methods ----------------------------------------------------------- */

MvmVmState mvmd_vm_service_run_state(MvmdVmService *self)
{
    return self->run ? g_atomic_int_get(&self->run->state) : MVM_VM_STATE_STOPPED;
}

gboolean mvmd_vm_service_request_shutdown(MvmdVmService *self, GError **error)
{
    g_autoptr(GError) local = NULL;

    /* Does not wait: the i8042 raises the request and the guest acts on it. */
    if (mvm_vm_request_shutdown(self->run->vm, &local))
        return TRUE;
    g_propagate_error(error, mvmd_error_from_error(local, "cannot request a shutdown"));
    return FALSE;
}

void mvmd_vm_service_discard(MvmdVmService *self)
{
    self->deleted = TRUE;
    mvmd_console_close(self->console, TRUE);
}

void mvmd_vm_service_retire(MvmdVmService *self)
{
    self->deleted = TRUE;
    mvmd_console_close(self->console, FALSE);
}

void mvmd_vm_service_mark_deleted(MvmdVmService *self)
{
    mvmd_vm_service_discard(self);
    g_signal_emit(self, signals[SIGNAL_DELETED], 0);
}

/* What a console client typed. Dropped while the machine is being built or torn down. */
static void console_input(const guint8 *data, gsize len, gpointer user_data)
{
    MvmdVmService *self = user_data;
    gsize n;

    if (self->op != OP_NONE && self->op != OP_PAUSE && self->op != OP_RESUME)
        return;
    if (!self->run || !self->run->vm)
        return;
    n = mvm_vm_console_write(self->run->vm, data, len);
    if (n < len)
        g_debug("%s: console input: %" G_GSIZE_FORMAT " bytes dropped", self->definition->name,
                len - n);
}

/* ---- daemon-side control --------------------------------------------------------------- */

void mvmd_vm_service_restore(MvmdVmService *self, gboolean paused, MvmdVmServiceReadyFunc func,
                             gpointer user_data)
{
    OpArgs args = OP_ARGS_INIT;

    g_return_if_fail(self->op == OP_NONE && !self->run);
    args.paused = paused;
    self->ready_func = func;
    self->ready_data = user_data;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "restoring from a snapshot");
    mvmd_vm_service_begin_op(self, OP_START, NULL, &args);
}

void mvmd_vm_service_autostart(MvmdVmService *self)
{
    if (self->op != OP_NONE || self->run || self->ctx->stopping)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "autostart");
    mvmd_vm_service_begin_op(self, OP_START, NULL, NULL);
}

void mvmd_vm_service_begin_shutdown(MvmdVmService *self)
{
    g_autoptr(GError) error = NULL;

    if (self->op != OP_NONE || !self->run)
        return;
    if (mvmd_vm_service_run_state(self) != MVM_VM_STATE_RUNNING) {
        mvmd_vm_service_force_stop(self);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "daemon stopping: asking the guest to shut down");
    if (!mvmd_vm_service_request_shutdown(self, &error)) {
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", error->message);
        mvmd_vm_service_force_stop(self);
    }
}

void mvmd_vm_service_force_stop(MvmdVmService *self)
{
    /* With an operation in progress, op_done() stops it once the operation ends. */
    if (self->op != OP_NONE || !self->run)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "stopping (forced)");
    mvmd_vm_service_begin_op(self, OP_STOP, NULL, NULL);
}

gboolean mvmd_vm_service_is_active(MvmdVmService *self)
{
    return self->run != NULL || self->op != OP_NONE;
}

const char *mvmd_vm_service_get_vm_name(MvmdVmService *self)
{
    return self->definition->name;
}

const MvmdVmDefinition *mvmd_vm_service_get_definition(MvmdVmService *self)
{
    return self->definition;
}

char *mvmd_vm_service_build_path(const char *name)
{
    g_autofree char *escaped = g_dbus_escape_object_path(name);

    return g_strconcat(MVMD_DBUS_VM_PATH_PREFIX, escaped, NULL);
}

/* ---- GObject --------------------------------------------------------------------------- */

MvmdVmService *mvmd_vm_service_new(MvmdContext *ctx, MvmdVmDefinition *definition,
                                   const char *state)
{
    MvmdVmService *self = g_object_new(MVMD_TYPE_VM_SERVICE, NULL);
    MvmdVm *vm = MVMD_VM(self);
    g_autofree char *log_dir = g_build_filename(ctx->runtime_dir, "vm", definition->name, NULL);

    self->ctx = ctx;
    self->definition = definition;
    self->console = mvmd_console_new(definition->name, log_dir, NULL, console_input, self);
    mvmd_vm_set_name(vm, definition->name);
    mvmd_vm_set_uuid(vm, definition->uuid);
    mvmd_vm_set_state(vm, state);
    mvmd_vm_set_state_changed_at(vm, g_get_real_time());
    mvmd_vm_set_vcpus(vm, definition->vcpus);
    mvmd_vm_set_memory_mib(vm, definition->memory_mib);
    mvmd_vm_set_owner(vm, definition->owner);
    self->exit_reason = g_strdup("");
    return self;
}

static void mvmd_vm_service_init(MvmdVmService *self)
{
}

static void mvmd_vm_service_dispose(GObject *object)
{
    MvmdVmService *self = MVMD_VM_SERVICE(object);

    /* Only at exit when a machine would not stop in time: free it the hard way. */
    if (self->run && self->op == OP_NONE && self->run->vm) {
        mvm_vm_free(self->run->vm);
        self->run->vm = NULL;
    }
    g_clear_pointer(&self->run, run_unref);
    if (self->console) {
        mvmd_console_close(self->console, FALSE);
        g_clear_pointer(&self->console, mvmd_console_unref);
    }
    G_OBJECT_CLASS(mvmd_vm_service_parent_class)->dispose(object);
}

static void mvmd_vm_service_finalize(GObject *object)
{
    MvmdVmService *self = MVMD_VM_SERVICE(object);

    g_list_free_full(g_steal_pointer(&self->waiters), (GDestroyNotify)mvmd_vm_service_waiter_free);
    mvmd_vm_definition_free(self->definition);
    g_free(self->exit_reason);
    G_OBJECT_CLASS(mvmd_vm_service_parent_class)->finalize(object);
}

static void mvmd_vm_service_class_init(MvmdVmServiceClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);

    object_class->dispose = mvmd_vm_service_dispose;
    object_class->finalize = mvmd_vm_service_finalize;

    /* The VM was deleted over D-Bus: the manager unexports it and drops it. */
    signals[SIGNAL_DELETED] = g_signal_new("deleted", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                                           0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}
