/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM service's state machine. Everything here runs on the main loop: the one operation in
 * progress is started here (its work runs on a thread of its own, vm-ops.c) and completed here,
 * news from the vCPU threads arrives here (through vm-run.c), and only this code and the methods
 * (vm-methods.c) touch the properties, the callers and the waiters.
 */
#include <errno.h>
#include <sys/random.h>

#include "cpu-templates.h"
#include "errors.h"
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

/* ---- what the vCPU threads report ------------------------------------------------------ */

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
    switch (mvmd_vm_run_get_state(self->run)) {
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

/* News from a run's threads; a finished run's late news is dropped. */
static void on_run_news(gpointer owner, MvmdVmRun *run)
{
    MvmdVmService *self = owner;

    if (self->run == run)
        sync_state(self);
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
        [MVM_EXIT_GUEST_PANIC] = "guest-panic",
        [MVM_EXIT_SANDBOX_VIOLATION] = "sandbox-violation",
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

        if (self->handed_over)
            /* It runs on in the next daemon: neither stopped nor shut down. */
            g_dbus_method_invocation_return_error_literal(
                g_steal_pointer(&w->invocation), MVMD_ERROR, MVMD_ERROR_INVALID_STATE,
                "the VM was handed to the next microvmd (a restart), where it runs on");
        else if (crashed && w->kind == WAIT_SHUTDOWN)
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
static void end_run(MvmdVmService *self, OpData *d, GDBusMethodInvocation *invocation,
                    OpReply reply)
{
    g_autofree char *reason = format_exit_reason(d);
    gboolean crashed = d->final_state == MVM_VM_STATE_CRASHED;

    g_clear_pointer(&self->run, mvmd_vm_run_unref);
    memset(&self->stats_cache, 0, sizeof(self->stats_cache));
    g_clear_pointer(&self->device_stats_cache, g_variant_unref);
    self->has_diff_parent = FALSE;
    mvmd_console_flush(self->console);
    if (self->handed_over) {
        /* Its State stays: the next daemon shows the same VM again, running on. */
        vm_log(self, G_LOG_LEVEL_MESSAGE, "handed over to the next microvmd");
        complete_waiters(self, FALSE, NULL);
        return;
    }
    set_exit_reason(self, reason);
    vm_log(self, crashed ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, "run ended: %s", reason);

    if (self->reboot_pending) {
        self->reboot_pending = FALSE;
        mvmd_vm_service_begin_op(self, OP_START, invocation, reply, NULL);
        return;
    }
    if (should_restart(self, d)) {
        self->restarts++;
        vm_log(self, G_LOG_LEVEL_MESSAGE, "guest reset: restarting");
        mvmd_vm_service_begin_op(self, OP_START, NULL, NULL, NULL);
        return;
    }
    set_state(self, crashed ? MVMD_STATE_CRASHED : MVMD_STATE_STOPPED);
    flush_properties(self);
    complete_waiters(self, crashed, reason);
    if (invocation)
        reply(MVMD_VM(self), invocation);
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

/*
 * What the machine got, for GetConfig: the MACs the library chose, and a restored machine's
 * vCPUs, memory and devices, known from its snapshot only now (a clone's new MACs and CID).
 */
static void update_definition(MvmdVmService *self, const OpData *d)
{
    const MvmVmConfig *mvm = mvm_vm_get_config(self->run->vm);

    memcpy(self->generation_id, d->generation_id, sizeof(self->generation_id));
    self->has_generation_id = d->has_generation_id;
    memcpy(self->diff_parent, d->diff_parent, sizeof(self->diff_parent));
    self->has_diff_parent = d->has_diff_parent;
    mvmd_devices_update_from_mvm(&self->definition->devices, mvm);
    if (!mvmd_vm_definition_is_restored(self->definition))
        return;
    self->definition->vcpus = mvm->n_vcpus;
    self->definition->memory_mib = mvm->memory_mib;
    /* The snapshot's template, by name: GetConfig shows what the guest was made with. */
    g_free(self->definition->cpu_template);
    self->definition->cpu_template =
        mvm->cpu_template ? g_strdup(mvm_cpu_template_get_name(mvm->cpu_template)) : NULL;
    mvmd_vm_set_vcpus(MVMD_VM(self), mvm->n_vcpus);
    mvmd_vm_set_memory_mib(MVMD_VM(self), mvm->memory_mib);
}

static void start_done(MvmdVmService *self, const OpData *d, gboolean ok, GError *error,
                       GDBusMethodInvocation *invocation, OpReply reply)
{
    gboolean adopted = self->adopting != NULL;

    if (self->adopting) {
        g_clear_pointer(&self->adopting, mvmd_handoff_in_free);
        vm_log(self, ok ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_WARNING, "taken over%s%s",
               ok ? "" : ": failed: ", ok ? "" : error->message);
    }
    if (!ok) {
        g_autoptr(GError) mapped = mvmd_error_from_error(
            error, mvmd_vm_definition_is_restored(self->definition) ? "cannot restore the snapshot"
                                                                    : "cannot start the VM");

        g_clear_pointer(&self->run, mvmd_vm_run_unref);
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", mapped->message);
        if (tell_ready(self, mapped))
            return;
        /* The Start after a reset or a Reboot's Stop failed: the VM that ran is stopped now. */
        if (g_str_equal(mvmd_vm_get_state(MVMD_VM(self)), MVMD_STATE_RUNNING) ||
            g_str_equal(mvmd_vm_get_state(MVMD_VM(self)), MVMD_STATE_PAUSED))
            set_state(self, MVMD_STATE_STOPPED);
        if (!invocation) {
            /* Autostart or a restart after a reset: nobody to tell but the properties. */
            g_autofree char *reason = g_strdup_printf("start-failed: %s", error->message);

            set_exit_reason(self, reason);
            flush_properties(self);
            complete_waiters(self, FALSE, reason);
            /* Not taken over (its state was refused): it comes back as its definition says. */
            if (adopted && self->definition->autostart)
                mvmd_vm_service_autostart(self);
            return;
        }
        flush_properties(self);
        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    if (invocation)
        set_exit_reason(self, "");
    update_definition(self, d);
    sync_state(self);
    flush_properties(self);
    if (tell_ready(self, NULL) || !invocation)
        return;
    reply(MVMD_VM(self), invocation); /* Start's, or a Reboot's, which finishes here too */
}

static void pause_resume_done(MvmdVmService *self, gboolean ok, GError *error,
                              GDBusMethodInvocation *invocation, OpReply reply, gboolean resumed)
{
    if (!ok) {
        g_autoptr(GError) mapped =
            mvmd_error_from_error(error, resumed ? "cannot resume" : "cannot pause");

        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    set_state(self, resumed ? MVMD_STATE_RUNNING : MVMD_STATE_PAUSED);
    flush_properties(self);
    reply(MVMD_VM(self), invocation);
}

static void snapshot_done(MvmdVmService *self, const OpData *d, gboolean ok, GError *error,
                          GDBusMethodInvocation *invocation, OpReply reply)
{
    /* A snapshot that failed may have changed the parent too (the library says which). */
    memcpy(self->diff_parent, d->diff_parent, sizeof(self->diff_parent));
    self->has_diff_parent = d->has_diff_parent;
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
    reply(MVMD_VM(self), invocation);
}

/* GetCPUConfig answers with what the worker read; the machine ran on meanwhile. */
static void cpu_config_done(MvmdVmService *self, OpData *d, gboolean ok, GError *error,
                            GDBusMethodInvocation *invocation)
{
    if (!ok) {
        g_autoptr(GError) mapped =
            mvmd_error_from_error(error, "cannot read the CPU configuration");

        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    mvmd_vm_complete_get_cpu_config(MVMD_VM(self), invocation, d->cpu_config);
}

/* SaveWorkingSet: the guest ran on; nothing of the service changed. */
static void working_set_done(MvmdVmService *self, gboolean ok, GError *error,
                             GDBusMethodInvocation *invocation, OpReply reply)
{
    if (!ok) {
        g_autoptr(GError) mapped = mvmd_error_from_error(error, "cannot save the working set");

        g_dbus_method_invocation_return_gerror(invocation, mapped);
        return;
    }
    vm_log(self, G_LOG_LEVEL_MESSAGE, "working set saved");
    reply(MVMD_VM(self), invocation);
}

/*
 * Saved: into systemd's store with it, then the machine is freed (a Stop). A VM that cannot be
 * handed over runs on (if it ran) and is shut down as without a handoff.
 */
static void handoff_done(MvmdVmService *self, const OpData *d, gboolean ok, GError *error)
{
    g_autoptr(GError) local = NULL;
    MvmdHandoffOut out = {
        .definition = self->definition,
        .running = d->handoff_running,
        .has_generation_id = d->has_generation_id,
        .state_fd = d->handoff_state_fd,
        .memory_fd = d->handoff_memory_fd,
        .backends = d->handoff_backends,
    };

    memcpy(out.generation_id, d->generation_id, sizeof(out.generation_id));
    if (ok && mvmd_handoff_push(&out, &local)) {
        self->handed_over = TRUE;
        mvmd_vm_service_begin_op(self, OP_STOP, NULL, NULL, NULL);
        return;
    }
    vm_log(self, G_LOG_LEVEL_WARNING, "cannot be handed over (%s): shutting it down",
           ok ? local->message : error->message);
    if (d->handoff_running && self->run && self->run->vm &&
        mvm_vm_get_state(self->run->vm) == MVM_VM_STATE_PAUSED &&
        !mvm_vm_resume(self->run->vm, &local))
        vm_log(self, G_LOG_LEVEL_WARNING, "cannot resume it: %s", local->message);
    mvmd_vm_service_begin_shutdown(self);
}

/* The daemon is going down, or the guest ended while we were busy. */
static void after_op(MvmdVmService *self)
{
    MvmVmState state = mvmd_vm_service_run_state(self);

    if (self->op != OP_NONE)
        return; /* handoff_done() went on with another */
    if (self->ctx->handing_off && !self->handoff_tried && !self->ctx->force_stop &&
        (state == MVM_VM_STATE_RUNNING || state == MVM_VM_STATE_PAUSED))
        mvmd_vm_service_begin_handoff(self);
    else if (self->ctx->force_stop && self->run)
        mvmd_vm_service_begin_op(self, OP_STOP, NULL, NULL, NULL);
    else
        maybe_reap(self);
}

static void op_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    MvmdVmService *self = MVMD_VM_SERVICE(source);
    OpData *d = g_task_get_task_data(G_TASK(result));
    GDBusMethodInvocation *invocation = g_steal_pointer(&self->op_invocation);
    OpReply reply = self->op_reply;
    g_autoptr(GError) error = NULL;
    gboolean ok = g_task_propagate_boolean(G_TASK(result), &error);
    Op op = self->op;

    self->op = OP_NONE;
    self->op_reply = NULL;
    switch (op) {
    case OP_START:
        start_done(self, d, ok, error, invocation, reply);
        break;
    case OP_PAUSE:
    case OP_RESUME:
        pause_resume_done(self, ok, error, invocation, reply, op == OP_RESUME);
        break;
    case OP_SNAPSHOT:
        snapshot_done(self, d, ok, error, invocation, reply);
        break;
    case OP_CPU_CONFIG:
        cpu_config_done(self, d, ok, error, invocation);
        break;
    case OP_WORKING_SET:
        working_set_done(self, ok, error, invocation, reply);
        break;
    case OP_HANDOFF:
        handoff_done(self, d, ok, error);
        break;
    case OP_STOP:
    case OP_REAP:
        end_run(self, d, invocation, reply);
        break;
    case OP_NONE:
        g_assert_not_reached();
    }
    after_op(self);
}

/*
 * Resume releases the parked vCPUs and waits for no guest (only for its own I/O thread to leave
 * its park), so it is done here on the main loop: an operation's thread and its way back would
 * be ~120 µs of a call of under a millisecond. The first resume of a restored machine creates
 * its vCPU threads (and joins them if one cannot start): that one is an operation, as is Pause,
 * which waits for every vCPU to stop while a vCPU may be inside a device.
 */
void mvmd_vm_service_resume(MvmdVmService *self, GDBusMethodInvocation *invocation, OpReply reply)
{
    g_autoptr(GError) error = NULL;
    gboolean ok;

    if (self->op != OP_NONE || !self->run || !self->run->vm) {
        g_dbus_method_invocation_return_error_literal(
            invocation, MVMD_ERROR, MVMD_ERROR_INVALID_STATE, "the VM is not paused");
        return;
    }
    if (!mvm_vm_vcpus_started(self->run->vm)) {
        mvmd_vm_service_begin_op(self, OP_RESUME, invocation, reply, NULL);
        return;
    }
    ok = mvm_vm_resume(self->run->vm, &error);
    pause_resume_done(self, ok, error, invocation, reply, TRUE);
    after_op(self);
}

void mvmd_vm_service_begin_op(MvmdVmService *self, Op op, GDBusMethodInvocation *invocation,
                              OpReply reply, OpArgs *args)
{
    g_autoptr(GTask) task = NULL;
    OpData *data;

    g_return_if_fail(self->op == OP_NONE);
    /* GetCPUConfig answers with its result itself (cpu_config_done()): no reply of its own. */
    g_return_if_fail(invocation != NULL || reply == NULL);
    g_return_if_fail(invocation != NULL || op != OP_CPU_CONFIG);
    if (op == OP_START) {
        g_return_if_fail(self->run == NULL);
        self->run =
            mvmd_vm_run_new(G_OBJECT(self), self->definition->name, self->console, on_run_news);
    }
    self->op = op;
    self->op_invocation = invocation;
    self->op_reply = reply;
    task = g_task_new(self, NULL, op_done, NULL);
    g_task_set_source_tag(task, mvmd_vm_service_begin_op);
    data = mvmd_vm_op_data_new(op, self->run, args, self->definition, self->ctx->cpu_template_dir,
                               self->ctx->memory_images);
    data->charge = &self->charge; /* the task holds @self */
    /* A handed-over machine keeps its generation ID, a restored one's too. */
    if (op == OP_START && (self->adopting || !mvmd_vm_definition_is_restored(self->definition))) {
        memcpy(data->generation_id, self->generation_id, sizeof(data->generation_id));
        data->set_generation_id = self->has_generation_id;
    }
    if (op == OP_START && self->adopting) {
        /* Borrowed: the service holds them until start_done(). */
        data->restore_state_fd = self->adopting->state_fd;
        data->restore_memory_fd = self->adopting->memory_fd;
        data->restore_flags = MVM_RESTORE_SHARE_MEMORY;
        data->adopt_backends = self->adopting->backends;
        /* The handed state is the machine itself, not its definition's snapshot chain. */
        g_clear_pointer(&data->restore_layers, g_free);
        data->n_restore_layers = 0;
    }
    g_task_set_task_data(task, data, (GDestroyNotify)mvmd_vm_op_data_free);
    mvmd_vm_op_run(task);
}

static void maybe_reap(MvmdVmService *self)
{
    MvmVmState state;

    if (self->op != OP_NONE || !self->run)
        return;
    state = mvmd_vm_run_get_state(self->run);
    if (state == MVM_VM_STATE_STOPPED || state == MVM_VM_STATE_CRASHED)
        mvmd_vm_service_begin_op(self, OP_REAP, NULL, NULL, NULL);
}

/* ---- shared with the methods ----------------------------------------------------------- */

MvmVmState mvmd_vm_service_run_state(MvmdVmService *self)
{
    return self->run ? mvmd_vm_run_get_state(self->run) : MVM_VM_STATE_STOPPED;
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

void mvmd_vm_service_take_charge(MvmdVmService *self, MvmdQuotaCharge *charge)
{
    g_return_if_fail(self->charge.quota == NULL);
    self->charge = *charge;
    *charge = (MvmdQuotaCharge){NULL};
}

void mvmd_vm_service_discard(MvmdVmService *self)
{
    self->deleted = TRUE;
    mvmd_quota_release(&self->charge);
    mvmd_console_close(self->console, TRUE);
}

void mvmd_vm_service_retire(MvmdVmService *self)
{
    self->deleted = TRUE;
    mvmd_quota_release(&self->charge);
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

    if (self->op != OP_NONE && self->op != OP_PAUSE && self->op != OP_RESUME &&
        self->op != OP_CPU_CONFIG && self->op != OP_WORKING_SET)
        return;
    if (!self->run || !self->run->vm)
        return;
    n = mvm_vm_console_write(self->run->vm, data, len);
    if (n < len)
        g_debug("%s: console input: %" G_GSIZE_FORMAT " bytes dropped", self->definition->name,
                len - n);
}

/* ---- daemon-side control --------------------------------------------------------------- */

void mvmd_vm_service_restore(MvmdVmService *self, gboolean paused, int working_set_fd,
                             MvmdVmServiceReadyFunc func, gpointer user_data)
{
    OpArgs args = OP_ARGS_INIT;

    g_return_if_fail(self->op == OP_NONE && !self->run);
    args.paused = paused;
    args.working_set_fd = working_set_fd; /* taken: closed with the operation */
    self->ready_func = func;
    self->ready_data = user_data;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "restoring from a snapshot");
    mvmd_vm_service_begin_op(self, OP_START, NULL, NULL, &args);
}

void mvmd_vm_service_autostart(MvmdVmService *self)
{
    if (self->op != OP_NONE || self->run || self->ctx->stopping)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "autostart");
    mvmd_vm_service_begin_op(self, OP_START, NULL, NULL, NULL);
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

void mvmd_vm_service_begin_handoff(MvmdVmService *self)
{
    if (self->op != OP_NONE || !self->run || self->handoff_tried)
        return; /* after_op() comes back once the operation ends */
    self->handoff_tried = TRUE;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "handing over to the next microvmd");
    mvmd_vm_service_begin_op(self, OP_HANDOFF, NULL, NULL, NULL);
}

void mvmd_vm_service_adopt(MvmdVmService *self, MvmdHandoffIn *vm)
{
    OpArgs args = OP_ARGS_INIT;

    g_return_if_fail(self->op == OP_NONE && !self->run && !self->adopting);
    self->adopting = vm;
    memcpy(self->generation_id, vm->generation_id, sizeof(self->generation_id));
    self->has_generation_id = vm->has_generation_id;
    args.paused = !vm->running;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "taking over from the last microvmd (%s)",
           vm->running ? "running" : "paused");
    mvmd_vm_service_begin_op(self, OP_START, NULL, NULL, &args);
}

void mvmd_vm_service_force_stop(MvmdVmService *self)
{
    /* With an operation in progress, op_done() stops it once the operation ends. */
    if (self->op != OP_NONE || !self->run)
        return;
    vm_log(self, G_LOG_LEVEL_MESSAGE, "stopping (forced)");
    mvmd_vm_service_begin_op(self, OP_STOP, NULL, NULL, NULL);
}

/* Why @self cannot take a request without a caller now, or NULL. */
static const char *busy_reason(MvmdVmService *self)
{
    if (self->op != OP_NONE)
        return "an operation is in progress";
    if (mvmd_vm_service_run_state(self) != MVM_VM_STATE_RUNNING)
        return "the VM is not running";
    if (self->ctx->stopping)
        return "the daemon is shutting down";
    return NULL;
}

void mvmd_vm_service_request_power_off(MvmdVmService *self)
{
    g_autoptr(GError) error = NULL;
    const char *busy = busy_reason(self);

    if (busy) {
        vm_log(self, G_LOG_LEVEL_MESSAGE, "power-off not asked: %s", busy);
        return;
    }
    if (mvmd_vm_service_request_shutdown(self, &error))
        vm_log(self, G_LOG_LEVEL_MESSAGE, "shutdown requested");
    else
        vm_log(self, G_LOG_LEVEL_WARNING, "%s", error->message);
}

void mvmd_vm_service_hard_reset(MvmdVmService *self)
{
    const char *busy = busy_reason(self);

    if (busy) {
        vm_log(self, G_LOG_LEVEL_MESSAGE, "not rebooted: %s", busy);
        return;
    }
    mvmd_vm_service_begin_reboot(self, NULL, NULL);
}

void mvmd_vm_service_begin_reboot(MvmdVmService *self, GDBusMethodInvocation *invocation,
                                  OpReply reply)
{
    vm_log(self, G_LOG_LEVEL_MESSAGE, "rebooting (hard reset)");
    self->reboot_pending = TRUE;
    self->restarts = 0;
    /* The Start that follows the Stop answers @invocation, with @reply (end_run()). */
    mvmd_vm_service_begin_op(self, OP_STOP, invocation, reply, NULL);
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

char *mvmd_vm_service_format_generation_id(MvmdVmService *self)
{
    const guint8 *id = self->generation_id;

    /* A start in progress has no machine yet, or not the one the ID was read from. */
    if (!self->run || self->op == OP_START || !self->has_generation_id)
        return g_strdup("");
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                           id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9],
                           id[10], id[11], id[12], id[13], id[14], id[15]);
}

char *mvmd_vm_service_format_diff_parent(MvmdVmService *self)
{
    /* As the generation ID: a start in progress has no machine, or not the one it was read of. */
    if (!self->run || self->op == OP_START || !self->has_diff_parent)
        return g_strdup("");
    return mvmd_snapshot_id_format(self->diff_parent);
}

/* ---- GObject --------------------------------------------------------------------------- */

/*
 * A defined VM's generation ID, for all its runs. Random like the library's own (a guest mixes
 * it into its RNG); without one (getrandom failing, which it does not after boot) each run
 * gets the library's.
 */
static void make_generation_id(MvmdVmService *self)
{
    gsize done = 0;

    if (mvmd_vm_definition_is_restored(self->definition))
        return;
    while (done < sizeof(self->generation_id)) {
        ssize_t n = getrandom(self->generation_id + done, sizeof(self->generation_id) - done, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            vm_log(self, G_LOG_LEVEL_WARNING, "no generation ID of its own: getrandom: %s",
                   g_strerror(errno));
            return;
        }
        done += (gsize)n;
    }
    self->has_generation_id = TRUE;
}

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
    make_generation_id(self);
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
    g_clear_pointer(&self->run, mvmd_vm_run_unref);
    mvmd_quota_release(&self->charge); /* at exit: the VMs go with the manager */
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
    g_clear_pointer(&self->properties, g_variant_unref);
    g_clear_pointer(&self->device_stats_cache, g_variant_unref);
    g_free(self->exit_reason);
    mvmd_handoff_in_free(self->adopting);
    G_OBJECT_CLASS(mvmd_vm_service_parent_class)->finalize(object);
}

/*
 * The properties as one a{sv}, built once per change. GetManagedObjects asks every VM for it:
 * the generated skeleton would build it afresh each time, property by property through
 * GValues (most of the time of a GetManagedObjects with 1,000 VMs).
 */
static GVariant *mvmd_vm_service_get_properties(GDBusInterfaceSkeleton *skeleton)
{
    MvmdVmService *self = MVMD_VM_SERVICE(skeleton);

    if (!self->properties)
        self->properties =
            g_variant_ref_sink(G_DBUS_INTERFACE_SKELETON_CLASS(mvmd_vm_service_parent_class)
                                   ->get_properties(skeleton));
    return g_variant_ref(self->properties);
}

/* Every property change passes here (the skeleton's PropertiesChanged is built from it too). */
static void mvmd_vm_service_notify(GObject *object, GParamSpec *pspec)
{
    MvmdVmService *self = MVMD_VM_SERVICE(object);

    g_clear_pointer(&self->properties, g_variant_unref);
    if (G_OBJECT_CLASS(mvmd_vm_service_parent_class)->notify)
        G_OBJECT_CLASS(mvmd_vm_service_parent_class)->notify(object, pspec);
}

static void mvmd_vm_service_class_init(MvmdVmServiceClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);

    object_class->dispose = mvmd_vm_service_dispose;
    object_class->finalize = mvmd_vm_service_finalize;
    object_class->notify = mvmd_vm_service_notify;
    G_DBUS_INTERFACE_SKELETON_CLASS(klass)->get_properties = mvmd_vm_service_get_properties;

    /* The VM was deleted over D-Bus: the manager unexports it and drops it. */
    signals[SIGNAL_DELETED] = g_signal_new("deleted", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                                           0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}
