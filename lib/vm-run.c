/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Running a VM: one thread per vCPU, and the state machine
 * created → running ⇄ paused → stopped | crashed.
 *
 * A vCPU is kicked out of KVM_RUN by setting kvm_run.immediate_exit and
 * sending its thread MVM_KICK_SIGNAL (a no-op handler; the signal only makes
 * the ioctl return EINTR). immediate_exit closes the race where the signal
 * lands just before the thread enters KVM_RUN (KVM api.rst, KVM_CAP_IMMEDIATE_EXIT).
 * Threads are never cancelled: they look at the VM's requests after each exit.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "sandbox.h"
#include "vm-private.h"
#include "vm-virtio.h"

#define MVM_KICK_SIGNAL (SIGRTMIN + 1)

static void kick_handler(int sig)
{
}

static void install_kick_handler_once(void)
{
    static gsize installed;

    if (g_once_init_enter(&installed)) {
        struct sigaction sa = {.sa_handler = kick_handler};
        sigemptyset(&sa.sa_mask);
        /* No SA_RESTART: the point is that KVM_RUN returns. */
        sigaction(MVM_KICK_SIGNAL, &sa, NULL);
        g_once_init_leave(&installed, 1);
    }
}

gboolean mvm_exit_kind_is_crash(MvmExitKind kind)
{
    switch (kind) {
    case MVM_EXIT_TRIPLE_FAULT:
    case MVM_EXIT_INTERNAL_ERROR:
    case MVM_EXIT_FAIL_ENTRY:
    case MVM_EXIT_HOST_ERROR:
    case MVM_EXIT_GUEST_PANIC:
    case MVM_EXIT_SANDBOX_VIOLATION:
        return TRUE;
    default:
        return FALSE;
    }
}

void mvm_vm_notify_state(MvmVm *vm, MvmVmState state)
{
    if (vm->state_func != NULL)
        vm->state_func(vm, state, vm->state_data);
}

static void kick_vcpu(MvmVcpuThread *t)
{
    /* A thread that has not stored its id yet will see immediate_exit on its first KVM_RUN. */
    mvm_vcpu_set_immediate_exit(t->vcpu, TRUE);
    if (g_atomic_int_get(&t->tid_valid) && !g_atomic_int_get(&t->exited))
        pthread_kill(t->tid, MVM_KICK_SIGNAL);
}

static void kick_all(MvmVm *vm)
{
    /* A VM whose construction failed half-way has fewer vCPUs than n_vcpus, or none. */
    for (guint i = 0; vm->vcpus != NULL && i < vm->n_vcpus; i++)
        if (vm->vcpus[i].vcpu != NULL)
            kick_vcpu(&vm->vcpus[i]);
}

/*
 * Ends the run on behalf of the guest or a device (reset, power off, debug
 * exit, crash). Called on a vCPU or the I/O thread; the first reason wins.
 * Takes @reason. A call the calling thread's sandbox refused is the reason,
 * whatever its caller took the failure for.
 */
void mvm_vm_guest_exit(MvmVm *vm, MvmExitKind kind, char *reason, guint32 code)
{
    gboolean changed = FALSE;

    if (mvm_sandbox_violated()) {
        kind = MVM_EXIT_SANDBOX_VIOLATION;
        g_free(reason);
        reason = mvm_sandbox_dup_violation();
        code = 0;
    }
    MvmVmState new_state =
        mvm_exit_kind_is_crash(kind) ? MVM_VM_STATE_CRASHED : MVM_VM_STATE_STOPPED;

    g_mutex_lock(&vm->lock);
    if (!vm->stop_requested) {
        g_atomic_int_set(&vm->stop_requested, TRUE);
        vm->exit_kind = kind;
        vm->exit_code = code;
        g_free(vm->exit_reason);
        vm->exit_reason = g_steal_pointer(&reason);
        vm->state = new_state;
        changed = TRUE;
        g_cond_broadcast(&vm->cond);
    }
    g_mutex_unlock(&vm->lock);
    g_free(reason);

    if (changed) {
        kick_all(vm);
        mvm_vm_notify_state(vm, new_state);
    }
}

/* Returns FALSE when the thread must end. Parks while a pause is requested. */
static gboolean wait_while_paused(MvmVm *vm)
{
    if (!g_atomic_int_get(&vm->pause_requested) && !g_atomic_int_get(&vm->stop_requested))
        return TRUE;

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    if (vm->pause_requested && !vm->stop_requested) {
        vm->n_parked++;
        g_cond_broadcast(&vm->cond);
        while (vm->pause_requested && !vm->stop_requested)
            g_cond_wait(&vm->cond, &vm->lock);
        vm->n_parked--;
    }
    return !vm->stop_requested;
}

static gint64 own_cpu_time_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000;
}

static gpointer vcpu_thread(gpointer data)
{
    MvmVcpuThread *t = data;
    MvmVm *vm = t->vm;

    /*
     * A PIO or MMIO exit is complete (RIP past the instruction, an IN's value in
     * its register) only once KVM_RUN is entered again (KVM api.rst, "kvm_run").
     * So a vCPU parks only after a KVM_RUN that returned EINTR: with
     * immediate_exit set by the kick, that call finishes the pending access and
     * returns at once, and the state a snapshot then saves is consistent.
     */
    gboolean settled = TRUE;
    for (;;) {
        if (settled ? !wait_while_paused(vm) : g_atomic_int_get(&vm->stop_requested))
            break;
        MvmVcpuExit exit;
        MvmVcpuRunResult result = mvm_vcpu_run(t->vcpu, &exit);
        if (result == MVM_VCPU_RUN_STOP) {
            mvm_vm_guest_exit(vm, exit.kind, exit.reason, 0);
            break;
        }
        if (mvm_sandbox_violated()) {
            mvm_vm_guest_exit(vm, MVM_EXIT_SANDBOX_VIOLATION, NULL, 0);
            break;
        }
        settled = result == MVM_VCPU_RUN_KICKED;
    }

    g_mutex_lock(&vm->lock);
    t->cpu_time_us = own_cpu_time_us();
    g_atomic_int_set(&t->exited, TRUE);
    vm->n_exited++;
    g_cond_broadcast(&vm->cond);
    g_mutex_unlock(&vm->lock);
    return NULL;
}

/* A vCPU thread runs nothing the guest controls outside its sandbox; failing that, it ends. */
static void enter_sandbox(MvmVcpuThread *t)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *who = g_strdup_printf("vCPU %u", (guint)(t - t->vm->vcpus));

    if (!mvm_sandbox_enter(MVM_SANDBOX_VCPU, who, &error))
        mvm_vm_guest_exit(t->vm, MVM_EXIT_HOST_ERROR,
                          g_strdup_printf("cannot sandbox the %s thread: %s", who, error->message),
                          0);
}

static gpointer vcpu_thread_start(gpointer data)
{
    MvmVcpuThread *t = data;
    sigset_t kick;

    /* The creator may block signals for its own reasons; the kick must get through here. */
    sigemptyset(&kick);
    sigaddset(&kick, MVM_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    t->tid = pthread_self();
    g_atomic_int_set(&t->tid_valid, TRUE);
    enter_sandbox(t);
    return vcpu_thread(t);
}

static gboolean spawn_vcpu_threads(MvmVm *vm, GError **error)
{
    if (!mvm_sandbox_prepare(MVM_SANDBOX_VCPU, error))
        return FALSE;
    for (guint i = 0; i < vm->n_vcpus; i++) {
        g_autofree char *name = g_strdup_printf("vcpu%u", i);
        MvmVcpuThread *t = &vm->vcpus[i];

        t->thread = mvm_thread_new(name, vcpu_thread_start, t, error);
        if (t->thread == NULL)
            return FALSE;
    }
    return TRUE;
}

static gboolean set_state_error(GError **error, MvmVm *vm, const char *what)
{
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE, "cannot %s a VM that is %s", what,
                mvm_vm_state_to_string(vm->state));
    return FALSE;
}

gboolean mvm_vm_start(MvmVm *vm, GError **error)
{
    install_kick_handler_once();

    g_autoptr(GMutexLocker) op = g_mutex_locker_new(&vm->op_lock);
    g_mutex_lock(&vm->lock);
    if (vm->state != MVM_VM_STATE_CREATED) {
        set_state_error(error, vm, "start");
        g_mutex_unlock(&vm->lock);
        return FALSE;
    }
    vm->state = MVM_VM_STATE_RUNNING;
    vm->started_at_us = g_get_monotonic_time();
    g_mutex_unlock(&vm->lock);

    vm->threads_started = TRUE;
    if (!spawn_vcpu_threads(vm, error)) {
        mvm_vm_guest_exit(vm, MVM_EXIT_HOST_ERROR, g_strdup("cannot start vCPU threads"), 0);
        mvm_vm_join_vcpus(vm);
        return FALSE;
    }
    g_clear_pointer(&op, g_mutex_locker_free);
    mvm_vm_notify_state(vm, MVM_VM_STATE_RUNNING);
    return TRUE;
}

static void kvmclock_ctrl_all(MvmVm *vm)
{
    guint64 einval = 0;

    for (guint i = 0; i < vm->n_vcpus; i++) {
        g_autoptr(GError) error = NULL;
        gboolean not_enabled = FALSE;
        if (mvm_vcpu_kvmclock_ctrl(vm->vcpus[i].vcpu, &not_enabled, &error))
            continue;
        if (not_enabled)
            einval++;
        else
            g_debug("vcpu %u: %s", i, error->message);
    }
    g_mutex_lock(&vm->lock);
    vm->kvmclock_einval += einval;
    g_mutex_unlock(&vm->lock);
}

/* Lets parked vCPUs go again; the state must already say running (lock held). */
static void release_vcpus_locked(MvmVm *vm)
{
    g_atomic_int_set(&vm->pause_requested, FALSE);
    g_cond_broadcast(&vm->cond);
}

/* Whether the VM stopped or crashed while @what was under way (then @error says so). */
static gboolean ended_meanwhile(MvmVm *vm, const char *what, GError **error)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);

    if (!vm->stop_requested)
        return FALSE;
    g_atomic_int_set(&vm->pause_requested, FALSE);
    return !set_state_error(error, vm, what);
}

/*
 * The state says paused only once every vCPU is parked, and it goes back to
 * running before any vCPU may leave its park: a reader never sees "paused"
 * with a vCPU in KVM_RUN. op_lock keeps the steps of two callers apart.
 */
gboolean mvm_vm_pause_locked(MvmVm *vm, MvmPauseFlags flags, GError **error)
{
    g_mutex_lock(&vm->lock);
    if (vm->state != MVM_VM_STATE_RUNNING) {
        set_state_error(error, vm, "pause");
        g_mutex_unlock(&vm->lock);
        return FALSE;
    }
    g_atomic_int_set(&vm->pause_requested, TRUE);
    g_mutex_unlock(&vm->lock);

    kick_all(vm);

    g_mutex_lock(&vm->lock);
    while (vm->n_parked + vm->n_exited < vm->n_vcpus && !vm->stop_requested)
        g_cond_wait(&vm->cond, &vm->lock);
    if (vm->stop_requested) {
        /* The guest stopped on its own while we waited: that is its state now. */
        g_atomic_int_set(&vm->pause_requested, FALSE);
        set_state_error(error, vm, "pause");
        g_mutex_unlock(&vm->lock);
        return FALSE;
    }
    g_mutex_unlock(&vm->lock);

    /* With every vCPU out of KVM_RUN the clock we read is the one the guest last saw. */
    if ((flags & MVM_PAUSE_FREEZE_CLOCK) && !vm->clock_frozen) {
        memset(&vm->frozen_clock, 0, sizeof(vm->frozen_clock));
        if (mvm_kvm_ioctl(vm->fd, KVM_GET_CLOCK, &vm->frozen_clock) < 0) {
            mvm_kvm_set_errno_error(error, "KVM_GET_CLOCK");
            g_mutex_lock(&vm->lock);
            release_vcpus_locked(vm);
            g_mutex_unlock(&vm->lock);
            return FALSE;
        }
        vm->clock_frozen = TRUE;
    }

    /*
     * The I/O thread runs until it is quiesced below and may end the VM meanwhile (its
     * sandbox): a stop, once requested, is the state, and this pause failed.
     */
    g_mutex_lock(&vm->lock);
    if (!vm->stop_requested)
        vm->state = MVM_VM_STATE_PAUSED;
    g_mutex_unlock(&vm->lock);
    /* Device back ends stop too: a paused VM's memory and device state stay as they are. */
    mvm_vm_quiesce_virtio(vm, TRUE);
    /* After every vCPU is out of KVM_RUN, so the guest sees PVCLOCK_GUEST_STOPPED on resume. */
    kvmclock_ctrl_all(vm);
    return !ended_meanwhile(vm, "pause", error);
}

/*
 * The default (mvm_vm_pause) does not freeze the clock: guest time follows
 * the host's across a pause, as it would across a long host preemption, and
 * KVMCLOCK_CTRL tells the guest's watchdogs why. Freezing suits short pauses
 * (snapshots, migration) where the guest should not notice at all.
 */
gboolean mvm_vm_pause_full(MvmVm *vm, MvmPauseFlags flags, GError **error)
{
    g_return_val_if_fail(vm != NULL, FALSE);
    g_return_val_if_fail((flags & ~MVM_PAUSE_FREEZE_CLOCK) == 0, FALSE);

    g_mutex_lock(&vm->op_lock);
    gboolean ok = mvm_vm_pause_locked(vm, flags, error);
    g_mutex_unlock(&vm->op_lock);
    if (ok)
        mvm_vm_notify_state(vm, MVM_VM_STATE_PAUSED);
    return ok;
}

gboolean mvm_vm_pause(MvmVm *vm, GError **error)
{
    return mvm_vm_pause_full(vm, MVM_PAUSE_NONE, error);
}

/* KVM_SET_CLOCK takes no "realtime" hint from us: the guest goes on from the frozen time. */
static gboolean thaw_clock(MvmVm *vm, GError **error)
{
    struct kvm_clock_data clock = {.clock = vm->frozen_clock.clock};

    if (!vm->clock_frozen)
        return TRUE;
    if (mvm_kvm_ioctl(vm->fd, KVM_SET_CLOCK, &clock) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_CLOCK");
    vm->clock_frozen = FALSE;
    return TRUE;
}

gboolean mvm_vm_resume_locked(MvmVm *vm, GError **error)
{
    g_mutex_lock(&vm->lock);
    gboolean paused = vm->state == MVM_VM_STATE_PAUSED;
    if (!paused)
        set_state_error(error, vm, "resume");
    g_mutex_unlock(&vm->lock);
    if (!paused || !thaw_clock(vm, error))
        return FALSE;

    mvm_vm_quiesce_virtio(vm, FALSE);
    g_mutex_lock(&vm->lock);
    /* As in pause: the I/O thread serves at once and may have ended the VM already. */
    if (!vm->stop_requested)
        vm->state = MVM_VM_STATE_RUNNING;
    if (vm->started_at_us == 0)
        vm->started_at_us = g_get_monotonic_time();
    release_vcpus_locked(vm);
    g_mutex_unlock(&vm->lock);
    if (ended_meanwhile(vm, "resume", error))
        return FALSE;

    /* A restored VM has never run: its vCPU threads start now. */
    if (!vm->threads_started) {
        install_kick_handler_once();
        vm->threads_started = TRUE;
        if (!spawn_vcpu_threads(vm, error)) {
            mvm_vm_guest_exit(vm, MVM_EXIT_HOST_ERROR, g_strdup("cannot start vCPU threads"), 0);
            mvm_vm_join_vcpus(vm);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean mvm_vm_vcpus_started(MvmVm *vm)
{
    g_autoptr(GMutexLocker) op = g_mutex_locker_new(&vm->op_lock);

    return vm->threads_started;
}

gboolean mvm_vm_resume(MvmVm *vm, GError **error)
{
    g_return_val_if_fail(vm != NULL, FALSE);

    g_mutex_lock(&vm->op_lock);
    gboolean ok = mvm_vm_resume_locked(vm, error);
    g_mutex_unlock(&vm->op_lock);
    if (ok)
        mvm_vm_notify_state(vm, MVM_VM_STATE_RUNNING);
    return ok;
}

void mvm_vm_join_vcpus(MvmVm *vm)
{
    for (guint i = 0; vm->vcpus != NULL && i < vm->n_vcpus; i++) {
        MvmVcpuThread *t = &vm->vcpus[i];
        if (t->thread == NULL)
            continue;
        g_thread_join(t->thread);
        t->thread = NULL;
    }
}

gboolean mvm_vm_stop(MvmVm *vm, GError **error)
{
    gboolean changed = FALSE;

    g_mutex_lock(&vm->lock);
    if (!vm->stop_requested) {
        g_atomic_int_set(&vm->stop_requested, TRUE);
        vm->exit_kind = MVM_EXIT_REQUESTED;
        g_free(vm->exit_reason);
        vm->exit_reason = g_strdup("stopped by request");
        vm->state = MVM_VM_STATE_STOPPED;
        changed = TRUE;
        g_cond_broadcast(&vm->cond);
    }
    g_mutex_unlock(&vm->lock);

    kick_all(vm);
    /* Not while a resume spawns threads: op_lock. A pause waiting for parks sees the stop. */
    g_mutex_lock(&vm->op_lock);
    mvm_vm_join_vcpus(vm);
    g_mutex_unlock(&vm->op_lock);
    if (changed)
        mvm_vm_notify_state(vm, MVM_VM_STATE_STOPPED);
    return TRUE;
}

gboolean mvm_vm_request_shutdown(MvmVm *vm, GError **error)
{
    MvmVmState state = mvm_vm_get_state(vm);

    if (state != MVM_VM_STATE_RUNNING) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE,
                    "cannot ask a VM that is %s to shut down", mvm_vm_state_to_string(state));
        return FALSE;
    }
    mvm_i8042_send_ctrl_alt_del(vm->i8042);
    return TRUE;
}

gboolean mvm_vm_wait(MvmVm *vm, gint64 timeout_us)
{
    gint64 deadline = timeout_us < 0 ? G_MAXINT64 : g_get_monotonic_time() + timeout_us;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);

    while (vm->state != MVM_VM_STATE_STOPPED && vm->state != MVM_VM_STATE_CRASHED) {
        if (timeout_us < 0)
            g_cond_wait(&vm->cond, &vm->lock);
        else if (!g_cond_wait_until(&vm->cond, &vm->lock, deadline))
            return FALSE;
    }
    return TRUE;
}

gboolean mvm_vm_with_vcpus_parked(MvmVm *vm, const char *what, MvmParkedFlags flags,
                                  MvmParkedFunc func, gpointer data, GError **error)
{
    g_autoptr(GMutexLocker) op = g_mutex_locker_new(&vm->op_lock);
    MvmVmState state = mvm_vm_get_state(vm);
    gboolean was_running = state == MVM_VM_STATE_RUNNING;
    gboolean created_ok = (flags & MVM_PARKED_ALLOW_CREATED) && state == MVM_VM_STATE_CREATED;

    if (state != MVM_VM_STATE_RUNNING && state != MVM_VM_STATE_PAUSED && !created_ok) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE, "cannot %s a VM that is %s", what,
                    mvm_vm_state_to_string(state));
        return FALSE;
    }
    if (was_running && !mvm_vm_pause_locked(vm, MVM_PAUSE_NONE, error))
        return FALSE;

    gboolean ok = func(vm, data, error);
    gboolean stay = was_running && (flags & MVM_PARKED_LEAVE_PAUSED);
    if (was_running && !stay && !mvm_vm_resume_locked(vm, ok ? error : NULL))
        ok = FALSE;
    g_clear_pointer(&op, g_mutex_locker_free);
    if (stay)
        mvm_vm_notify_state(vm, MVM_VM_STATE_PAUSED);
    return ok;
}
