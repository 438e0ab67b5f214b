/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "vm-object.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "auth.h"
#include "console.h"
#include "errors.h"
#include "log.h"
#include "names.h"

#define SHUTDOWN_TIMEOUT_DEFAULT 60
#define SHUTDOWN_TIMEOUT_MAX     3600
/* A guest that resets more often than this is stopped instead of restarted again. */
#define RESET_LOOP_MAX       10
#define RESET_LOOP_WINDOW_US (10 * G_USEC_PER_SEC)

#define vm_log(self, level, fmt, ...) mvmd_vm_log((self)->config->name, level, fmt, ##__VA_ARGS__)

typedef enum {
    OP_NONE,
    OP_START,
    OP_PAUSE,
    OP_RESUME,
    OP_STOP, /* forced stop, then free */
    OP_REAP, /* the guest stopped by itself: collect the exit, free */
} Op;

/*
 * One run of the machine: from Start to the lib VM's mvm_vm_free(). The lib's callbacks get
 * the Run (not the VM object) so that news from a finished run is recognised and dropped.
 */
typedef struct {
    gatomicrefcount ref;
    GWeakRef self;
    MvmdConsole *console;
    GMainContext *context;
    MvmVm *vm;         /* set by the Start worker; main loop only once that op is done */
    gint state;        /* MvmVmState, latest from the state callback (atomic) */
    gint poke_pending; /* an idle source is on its way to the main loop (atomic) */
} Run;

typedef enum {
    WAIT_SHUTDOWN,
    WAIT_STOP,
} WaitKind;

/* A Shutdown (or a Stop that arrived while the guest was already on its way out). */
typedef struct {
    MvmdVmObject *self; /* not a ref: the object owns its waiters */
    GDBusMethodInvocation *invocation;
    WaitKind kind;
    GSource *timeout;
    guint timeout_sec;
} Waiter;

struct _MvmdVmObject {
    MvmdVmSkeleton parent;

    MvmdContext *ctx;
    MvmdVmConfig *config;
    MvmdConsole *console;

    Run *run;                             /* NULL while stopped / created */
    Op op;                                /* the one operation in progress */
    GDBusMethodInvocation *op_invocation; /* its caller, NULL for internal operations */
    gboolean reboot_pending;              /* Reboot: Start again once the Stop is done */
    GList *waiters;                       /* Waiter * */
    gboolean deleted;

    MvmVmStats stats_cache;
    guint restarts;
    gint64 reset_window_start;
    guint reset_count;
};

static void mvmd_vm_object_iface_init(MvmdVmIface *iface);

G_DEFINE_TYPE_WITH_CODE(MvmdVmObject, mvmd_vm_object, MVMD_TYPE_VM_SKELETON,
                        G_IMPLEMENT_INTERFACE(MVMD_TYPE_VM, mvmd_vm_object_iface_init))

enum {
    SIGNAL_DELETED,
    N_SIGNALS,
};
static guint signals[N_SIGNALS];

static void begin_op(MvmdVmObject *self, Op op, GDBusMethodInvocation *invocation);
static void maybe_reap(MvmdVmObject *self);

/* ---- runs and the news from the vCPU threads ------------------------------------------- */

static Run *run_new(MvmdVmObject *self)
{
    Run *run = g_new0(Run, 1);

    g_atomic_ref_count_init(&run->ref);
    g_weak_ref_init(&run->self, self);
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
    mvmd_console_unref(run->console);
    g_main_context_unref(run->context);
    g_free(run);
}

static void set_state(MvmdVmObject *self, const char *state)
{
    MvmdVm *vm = MVMD_VM(self);

    if (g_strcmp0(mvmd_vm_get_state(vm), state) == 0)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "state %s → %s", mvmd_vm_get_state(vm), state);
    mvmd_vm_set_state(vm, state);
    mvmd_vm_set_state_changed_at(vm, g_get_real_time());
}

/* Publishes what the vCPU threads reported; a run that ended is reaped. */
static void sync_state(MvmdVmObject *self)
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
    g_autoptr(MvmdVmObject) self = NULL;

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

/* ---- operations in a worker thread ----------------------------------------------------- */

typedef struct {
    Op op;
    Run *run;
    MvmVmConfig *mvm_config; /* Start; fds borrowed from the definition */
    /* How the run ended (Stop, Reap). */
    MvmVmState final_state;
    MvmExitKind kind;
    guint32 exit_code;
    char *reason;
} OpData;

static void op_data_free(OpData *d)
{
    if (d->mvm_config) {
        /* Borrowed from the definition: not the library's to close. */
        d->mvm_config->kernel_fd = -1;
        d->mvm_config->initrd_fd = -1;
        mvm_vm_config_free(d->mvm_config);
    }
    g_clear_pointer(&d->run, run_unref);
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

    if (fd < 0) {
        int err = errno;
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_FAILED, "cannot open the %s %s: %s", what, path,
                    g_strerror(err));
    }
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

static gboolean worker_start(OpData *d, GError **error)
{
    int owned[2] = {-1, -1};
    gboolean opened = worker_open_files(d->mvm_config, owned, error);
    MvmVm *vm = opened ? mvm_vm_new(d->mvm_config, error) : NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(owned); i++) {
        if (owned[i] >= 0)
            close(owned[i]);
    }
    if (!vm)
        return FALSE;
    mvm_vm_set_state_callback(vm, on_lib_state, d->run);
    mvm_vm_set_console_callback(vm, on_lib_console, d->run);
    if (!mvm_vm_start(vm, error)) {
        mvm_vm_free(vm);
        return FALSE;
    }
    d->run->vm = vm;
    return TRUE;
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
        ok = mvm_vm_pause(d->run->vm, &error);
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
        g_task_return_error(task, error);
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

static void flush_properties(MvmdVmObject *self)
{
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self));
}

static void waiter_free(Waiter *w)
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
static void complete_waiters(MvmdVmObject *self, gboolean crashed, const char *reason)
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
    g_list_free_full(waiters, (GDestroyNotify)waiter_free);
}

static gboolean reset_loop(MvmdVmObject *self)
{
    gint64 now = g_get_monotonic_time();

    if (now - self->reset_window_start > RESET_LOOP_WINDOW_US) {
        self->reset_window_start = now;
        self->reset_count = 0;
    }
    return ++self->reset_count > RESET_LOOP_MAX;
}

/* A guest reset: like QEMU and libvirt, boot again unless told otherwise (or shutting down). */
static gboolean should_restart(MvmdVmObject *self, const OpData *d)
{
    if (d->op != OP_REAP || d->kind != MVM_EXIT_RESET)
        return FALSE;
    if (self->config->on_reboot != MVMD_ON_REBOOT_RESTART || self->waiters || self->ctx->stopping)
        return FALSE;
    if (reset_loop(self)) {
        vm_log(self, G_LOG_LEVEL_WARNING, "more than %d resets in %d s: stopping it",
               RESET_LOOP_MAX, (int)(RESET_LOOP_WINDOW_US / G_USEC_PER_SEC));
        return FALSE;
    }
    return TRUE;
}

/* The run is over (Stop or the guest's own end): the machine is freed. */
static void end_run(MvmdVmObject *self, OpData *d, GDBusMethodInvocation *invocation)
{
    g_autofree char *reason = format_exit_reason(d);
    gboolean crashed = d->final_state == MVM_VM_STATE_CRASHED;

    g_clear_pointer(&self->run, run_unref);
    memset(&self->stats_cache, 0, sizeof(self->stats_cache));
    mvmd_console_flush(self->console);
    mvmd_vm_set_exit_reason(MVMD_VM(self), reason);
    vm_log(self, crashed ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, "run ended: %s", reason);

    if (self->reboot_pending) {
        self->reboot_pending = FALSE;
        begin_op(self, OP_START, invocation);
        return;
    }
    if (should_restart(self, d)) {
        self->restarts++;
        vm_log(self, G_LOG_LEVEL_MESSAGE, "guest reset: restarting");
        begin_op(self, OP_START, NULL);
        return;
    }
    set_state(self, crashed ? MVMD_STATE_CRASHED : MVMD_STATE_STOPPED);
    flush_properties(self);
    complete_waiters(self, crashed, reason);
    if (invocation)
        mvmd_vm_complete_stop(MVMD_VM(self), invocation);
}

static void start_done(MvmdVmObject *self, gboolean ok, GError *error,
                       GDBusMethodInvocation *invocation)
{
    if (!ok) {
        g_autoptr(GError) mapped = mvmd_error_from_error(error, "cannot start the VM");

        g_clear_pointer(&self->run, run_unref);
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", mapped->message);
        if (!invocation) {
            /* Autostart or a restart after a reset: nobody to tell but the properties. */
            g_autofree char *reason = g_strdup_printf("start-failed: %s", error->message);

            mvmd_vm_set_exit_reason(MVMD_VM(self), reason);
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
        mvmd_vm_set_exit_reason(MVMD_VM(self), "");
    sync_state(self);
    flush_properties(self);
    if (!invocation)
        return;
    /* A Reboot finishes here too. */
    if (g_str_equal(g_dbus_method_invocation_get_method_name(invocation), "Reboot"))
        mvmd_vm_complete_reboot(MVMD_VM(self), invocation);
    else
        mvmd_vm_complete_start(MVMD_VM(self), invocation);
}

static void pause_resume_done(MvmdVmObject *self, Op op, gboolean ok, GError *error,
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

static void op_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    MvmdVmObject *self = MVMD_VM_OBJECT(source);
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
    case OP_STOP:
    case OP_REAP:
        end_run(self, d, invocation);
        break;
    case OP_NONE:
        g_assert_not_reached();
    }
    /* The daemon is going down, or the guest ended while we were busy. */
    if (self->ctx->force_stop && self->run && self->op == OP_NONE)
        begin_op(self, OP_STOP, NULL);
    else
        maybe_reap(self);
}

/* Takes @invocation. */
static void begin_op(MvmdVmObject *self, Op op, GDBusMethodInvocation *invocation)
{
    g_autoptr(GTask) task = g_task_new(self, NULL, op_done, NULL);
    OpData *d = g_new0(OpData, 1);

    g_return_if_fail(self->op == OP_NONE);
    if (op == OP_START) {
        g_return_if_fail(self->run == NULL);
        self->run = run_new(self);
        d->mvm_config = mvmd_vm_config_to_mvm(self->config);
    }
    d->op = op;
    d->run = run_ref(self->run);
    self->op = op;
    self->op_invocation = invocation;
    g_task_set_source_tag(task, begin_op);
    g_task_set_task_data(task, d, (GDestroyNotify)op_data_free);
    g_task_run_in_thread(task, op_worker);
}

static void maybe_reap(MvmdVmObject *self)
{
    MvmVmState state;

    if (self->op != OP_NONE || !self->run)
        return;
    state = g_atomic_int_get(&self->run->state);
    if (state == MVM_VM_STATE_STOPPED || state == MVM_VM_STATE_CRASHED)
        begin_op(self, OP_REAP, NULL);
}

/* ---- D-Bus methods: handle → authorize → act → complete -------------------------------- */

typedef void (*ActFunc)(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg);

typedef struct {
    MvmdVmObject *self;
    GDBusMethodInvocation *invocation;
    ActFunc act;
    guint arg;
} Call;

static void on_authorized(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Call *call = user_data;
    g_autoptr(GError) error = NULL;

    if (!mvmd_authorize_finish(result, &error))
        g_dbus_method_invocation_return_gerror(call->invocation, error);
    else if (call->self->deleted)
        g_dbus_method_invocation_return_error(call->invocation, MVMD_ERROR, MVMD_ERROR_NO_SUCH_VM,
                                              "the VM '%s' was deleted", call->self->config->name);
    else
        call->act(call->self, call->invocation, call->arg);
    g_object_unref(call->self);
    g_free(call);
}

static gboolean authorize(MvmdVmObject *self, GDBusMethodInvocation *invocation, const char *action,
                          ActFunc act, guint arg)
{
    g_autoptr(GHashTable) details = g_hash_table_new(g_str_hash, g_str_equal);
    Call *call = g_new0(Call, 1);

    call->self = g_object_ref(self);
    call->invocation = invocation;
    call->act = act;
    call->arg = arg;
    g_hash_table_insert(details, "vm", self->config->name);
    mvmd_authorize_async(invocation, action, details, on_authorized, call);
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

/* Common checks; FALSE when an error was returned. */
static gboolean check_idle(MvmdVmObject *self, GDBusMethodInvocation *invocation)
{
    if (self->op != OP_NONE)
        return return_state_error(invocation, "operation in progress (%s)",
                                  self->op == OP_START ? "start" : "state change");
    return TRUE;
}

static gboolean check_active(MvmdVmObject *self, GDBusMethodInvocation *invocation)
{
    if (!self->run)
        return return_state_error(invocation, "the VM is not running (state %s)",
                                  mvmd_vm_get_state(MVMD_VM(self)));
    return TRUE;
}

static MvmVmState run_state(MvmdVmObject *self)
{
    return self->run ? g_atomic_int_get(&self->run->state) : MVM_VM_STATE_STOPPED;
}

static void act_start(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
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
    begin_op(self, OP_START, invocation);
}

static void act_pause(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (run_state(self) != MVM_VM_STATE_RUNNING) {
        return_state_error(invocation, "the VM is not running (state %s)",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    begin_op(self, OP_PAUSE, invocation);
}

static void act_resume(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (run_state(self) != MVM_VM_STATE_PAUSED) {
        return_state_error(invocation, "the VM is not paused (state %s)",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    begin_op(self, OP_RESUME, invocation);
}

static void add_waiter(MvmdVmObject *self, GDBusMethodInvocation *invocation, WaitKind kind,
                       guint timeout_sec);

static void act_stop(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
{
    /* Already on its way out: answer when it is out. */
    if (self->op == OP_REAP || (self->op == OP_STOP && !self->reboot_pending)) {
        add_waiter(self, invocation, WAIT_STOP, 0);
        return;
    }
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "stopping (forced)");
    begin_op(self, OP_STOP, invocation);
}

static void act_reboot(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
{
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (self->ctx->stopping) {
        g_dbus_method_invocation_return_error_literal(invocation, MVMD_ERROR, MVMD_ERROR_FAILED,
                                                      "the daemon is shutting down");
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "rebooting (hard reset)");
    self->reboot_pending = TRUE;
    self->restarts = 0;
    begin_op(self, OP_STOP, invocation);
}

static gboolean on_waiter_timeout(gpointer user_data)
{
    Waiter *w = user_data;
    MvmdVmObject *self = w->self;

    vm_log(self, G_LOG_LEVEL_MESSAGE, "the guest did not shut down within %u s", w->timeout_sec);
    g_dbus_method_invocation_return_error(g_steal_pointer(&w->invocation), MVMD_ERROR,
                                          MVMD_ERROR_TIMEOUT,
                                          "the guest did not shut down within %u s; it is still "
                                          "running (use Stop to force it)",
                                          w->timeout_sec);
    g_clear_pointer(&w->timeout, g_source_unref);
    self->waiters = g_list_remove(self->waiters, w);
    waiter_free(w);
    return G_SOURCE_REMOVE;
}

static void add_waiter(MvmdVmObject *self, GDBusMethodInvocation *invocation, WaitKind kind,
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

static gboolean request_shutdown(MvmdVmObject *self, GError **error)
{
    g_autoptr(GError) local = NULL;

    /* Does not wait: the i8042 raises the request and the guest acts on it. */
    if (mvm_vm_request_shutdown(self->run->vm, &local))
        return TRUE;
    g_propagate_error(error, mvmd_error_from_error(local, "cannot request a shutdown"));
    return FALSE;
}

static void act_shutdown(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint timeout)
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
    if (self->op == OP_REAP || (self->op == OP_STOP && !self->reboot_pending)) {
        add_waiter(self, invocation, WAIT_SHUTDOWN, timeout);
        return;
    }
    if (!check_idle(self, invocation) || !check_active(self, invocation))
        return;
    if (run_state(self) != MVM_VM_STATE_RUNNING) {
        return_state_error(invocation, "the VM is %s: Resume or Stop it",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    if (!request_shutdown(self, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "shutdown requested (waiting up to %u s)", timeout);
    add_waiter(self, invocation, WAIT_SHUTDOWN, timeout);
}

static void act_delete(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
{
    g_autoptr(GError) error = NULL;

    if (!check_idle(self, invocation))
        return;
    if (self->run) {
        return_state_error(invocation, "the VM is %s: Stop it first",
                           mvmd_vm_get_state(MVMD_VM(self)));
        return;
    }
    if (self->config->persist && !mvmd_store_remove(self->ctx->store, self->config->name, &error)) {
        g_dbus_method_invocation_return_gerror(invocation, error);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "deleted");
    self->deleted = TRUE;
    mvmd_console_close(self->console, TRUE);
    g_signal_emit(self, signals[SIGNAL_DELETED], 0);
    mvmd_vm_complete_delete(MVMD_VM(self), invocation);
}

static void act_open_console(MvmdVmObject *self, GDBusMethodInvocation *invocation, guint arg)
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

/* What a console client typed. Dropped while the machine is being built or torn down. */
static void console_input(const guint8 *data, gsize len, gpointer user_data)
{
    MvmdVmObject *self = user_data;
    gsize n;

    if (self->op != OP_NONE && self->op != OP_PAUSE && self->op != OP_RESUME)
        return;
    if (!self->run || !self->run->vm)
        return;
    n = mvm_vm_console_write(self->run->vm, data, len);
    if (n < len)
        g_debug("%s: console input: %" G_GSIZE_FORMAT " bytes dropped", self->config->name,
                len - n);
}

static GVariant *build_stats(MvmdVmObject *self)
{
    MvmVmStats st = {0};
    GVariantBuilder b, exits;
    gint64 uptime = 0;

    if (self->run && self->op == OP_NONE) {
        mvm_vm_get_stats(self->run->vm, &st);
        self->stats_cache = st;
    } else if (self->run && self->op != OP_START) {
        st = self->stats_cache;
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
    return g_variant_builder_end(&b);
}

static gboolean handle_start(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_start, 0);
}

static gboolean handle_pause(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_pause, 0);
}

static gboolean handle_resume(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_resume, 0);
}

static gboolean handle_shutdown(MvmdVm *vm, GDBusMethodInvocation *invocation, guint timeout)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_shutdown, timeout);
}

static gboolean handle_stop(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_stop, 0);
}

static gboolean handle_reboot(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_reboot, 0);
}

static gboolean handle_delete(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_MANAGE, act_delete, 0);
}

static gboolean handle_open_console(MvmdVm *vm, GDBusMethodInvocation *invocation,
                                    GUnixFDList *fd_list)
{
    return authorize(MVMD_VM_OBJECT(vm), invocation, MVMD_ACTION_CONSOLE, act_open_console, 0);
}

/* Reading is free: no authorization. */
static gboolean handle_get_stats(MvmdVm *vm, GDBusMethodInvocation *invocation)
{
    mvmd_vm_complete_get_stats(vm, invocation, build_stats(MVMD_VM_OBJECT(vm)));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void mvmd_vm_object_iface_init(MvmdVmIface *iface)
{
    iface->handle_start = handle_start;
    iface->handle_pause = handle_pause;
    iface->handle_resume = handle_resume;
    iface->handle_shutdown = handle_shutdown;
    iface->handle_stop = handle_stop;
    iface->handle_reboot = handle_reboot;
    iface->handle_delete = handle_delete;
    iface->handle_open_console = handle_open_console;
    iface->handle_get_stats = handle_get_stats;
}

/* ---- daemon-side control --------------------------------------------------------------- */

void mvmd_vm_object_autostart(MvmdVmObject *self)
{
    if (self->op != OP_NONE || self->run || self->ctx->stopping)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "autostart");
    begin_op(self, OP_START, NULL);
}

void mvmd_vm_object_begin_shutdown(MvmdVmObject *self)
{
    g_autoptr(GError) error = NULL;

    if (self->op != OP_NONE || !self->run)
        return;
    if (run_state(self) != MVM_VM_STATE_RUNNING) {
        mvmd_vm_object_force_stop(self);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "daemon stopping: asking the guest to shut down");
    if (!request_shutdown(self, &error)) {
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", error->message);
        mvmd_vm_object_force_stop(self);
    }
}

void mvmd_vm_object_force_stop(MvmdVmObject *self)
{
    /* With an operation in progress, op_done() stops it once the operation ends. */
    if (self->op != OP_NONE || !self->run)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "stopping (forced)");
    begin_op(self, OP_STOP, NULL);
}

gboolean mvmd_vm_object_is_active(MvmdVmObject *self)
{
    return self->run != NULL || self->op != OP_NONE;
}

const char *mvmd_vm_object_get_vm_name(MvmdVmObject *self)
{
    return self->config->name;
}

const MvmdVmConfig *mvmd_vm_object_get_config(MvmdVmObject *self)
{
    return self->config;
}

char *mvmd_vm_object_build_path(const char *name)
{
    g_autofree char *escaped = g_dbus_escape_object_path(name);

    return g_strconcat(MVMD_DBUS_VM_PATH_PREFIX, escaped, NULL);
}

/* ---- GObject --------------------------------------------------------------------------- */

MvmdVmObject *mvmd_vm_object_new(MvmdContext *ctx, MvmdVmConfig *config, const char *state)
{
    MvmdVmObject *self = g_object_new(MVMD_TYPE_VM_OBJECT, NULL);
    MvmdVm *vm = MVMD_VM(self);
    g_autofree char *log_dir = g_build_filename(ctx->runtime_dir, "vm", config->name, NULL);

    self->ctx = ctx;
    self->config = config;
    self->console = mvmd_console_new(config->name, log_dir, NULL, console_input, self);
    mvmd_vm_set_name(vm, config->name);
    mvmd_vm_set_uuid(vm, config->uuid);
    mvmd_vm_set_state(vm, state);
    mvmd_vm_set_state_changed_at(vm, g_get_real_time());
    mvmd_vm_set_vcpus(vm, config->vcpus);
    mvmd_vm_set_memory_mib(vm, config->memory_mib);
    mvmd_vm_set_config(vm, mvmd_vm_config_to_variant(config));
    mvmd_vm_set_exit_reason(vm, "");
    return self;
}

static void mvmd_vm_object_init(MvmdVmObject *self)
{
}

static void mvmd_vm_object_dispose(GObject *object)
{
    MvmdVmObject *self = MVMD_VM_OBJECT(object);

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
    G_OBJECT_CLASS(mvmd_vm_object_parent_class)->dispose(object);
}

static void mvmd_vm_object_finalize(GObject *object)
{
    MvmdVmObject *self = MVMD_VM_OBJECT(object);

    g_list_free_full(g_steal_pointer(&self->waiters), (GDestroyNotify)waiter_free);
    mvmd_vm_config_free(self->config);
    G_OBJECT_CLASS(mvmd_vm_object_parent_class)->finalize(object);
}

static void mvmd_vm_object_class_init(MvmdVmObjectClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);

    object_class->dispose = mvmd_vm_object_dispose;
    object_class->finalize = mvmd_vm_object_finalize;

    /* The VM was deleted over D-Bus: the manager unexports it and drops it. */
    signals[SIGNAL_DELETED] = g_signal_new("deleted", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                                           0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}
