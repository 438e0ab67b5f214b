/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vCPU-news bridge. The lib's callbacks run on the VM's vCPU and I/O threads (and on the
 * operation worker, for changes the API made): they may touch only the run's atomics, its
 * console (which batches) and the log, and never block. A state change becomes one idle
 * source on the owner's main context, where the owner (vm-service.c) reads the state.
 */
#include "vm-run.h"

#include "log.h"

MvmdVmRun *mvmd_vm_run_new(GObject *owner, const char *name, MvmdConsole *console,
                           MvmdVmRunNewsFunc news)
{
    MvmdVmRun *run = g_new0(MvmdVmRun, 1);

    g_atomic_ref_count_init(&run->ref);
    g_weak_ref_init(&run->owner, owner);
    run->news = news;
    run->name = g_strdup(name);
    run->console = mvmd_console_ref(console);
    run->context = g_main_context_ref_thread_default();
    run->state = MVM_VM_STATE_CREATED;
    return run;
}

MvmdVmRun *mvmd_vm_run_ref(MvmdVmRun *run)
{
    g_atomic_ref_count_inc(&run->ref);
    return run;
}

void mvmd_vm_run_unref(MvmdVmRun *run)
{
    if (!run || !g_atomic_ref_count_dec(&run->ref))
        return;
    /* The lib VM is freed by a worker (or dispose) before the last reference goes. */
    g_warn_if_fail(run->vm == NULL);
    g_weak_ref_clear(&run->owner);
    g_free(run->name);
    mvmd_console_unref(run->console);
    g_main_context_unref(run->context);
    g_free(run);
}

MvmVmState mvmd_vm_run_get_state(MvmdVmRun *run)
{
    return g_atomic_int_get(&run->state);
}

/* Main loop. */
static gboolean deliver_news(gpointer user_data)
{
    MvmdVmRun *run = user_data;
    g_autoptr(GObject) owner = NULL;

    g_atomic_int_set(&run->poke_pending, 0);
    owner = g_weak_ref_get(&run->owner);
    if (owner)
        run->news(owner, run);
    return G_SOURCE_REMOVE;
}

static gboolean is_final(MvmVmState state)
{
    return state == MVM_VM_STATE_STOPPED || state == MVM_VM_STATE_CRASHED;
}

/*
 * A run's end is final. lib tells of a change it made for the API (RUNNING after a resume) after
 * releasing the vCPUs, so a guest that powers off at once may have told of its end first: that
 * late RUNNING must not hide it, or the run would never be reaped.
 */
static gboolean record_state(MvmdVmRun *run, MvmVmState state)
{
    for (;;) {
        gint old = g_atomic_int_get(&run->state);

        if (is_final((MvmVmState)old) && !is_final(state))
            return FALSE;
        if (g_atomic_int_compare_and_exchange(&run->state, old, (gint)state))
            return TRUE;
    }
}

/* vCPU thread (or the worker, for changes the API made): never blocks. */
static void on_lib_state(MvmVm *vm, MvmVmState state, gpointer user_data)
{
    MvmdVmRun *run = user_data;
    g_autoptr(GSource) source = NULL;

    if (!record_state(run, state))
        return;
    if (!g_atomic_int_compare_and_exchange(&run->poke_pending, 0, 1))
        return;
    source = g_idle_source_new();
    g_source_set_callback(source, deliver_news, mvmd_vm_run_ref(run),
                          (GDestroyNotify)mvmd_vm_run_unref);
    g_source_set_static_name(source, "[microvmd] vm state");
    g_source_attach(source, run->context);
}

/* vCPU thread: the console batches. */
static void on_lib_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    MvmdVmRun *run = user_data;

    mvmd_console_feed(run->console, data, len);
}

/* vCPU or I/O thread: what the lib says about the VM (guest-caused messages are limited). */
static void on_lib_log(MvmVm *vm, GLogLevelFlags level, const char *message, gpointer user_data)
{
    MvmdVmRun *run = user_data;

    mvmd_vm_log(run->name, level, "%s", message);
}

void mvmd_vm_run_connect(MvmdVmRun *run, MvmVm *vm)
{
    mvm_vm_set_state_callback(vm, on_lib_state, run);
    mvm_vm_set_console_callback(vm, on_lib_console, run);
    mvm_vm_set_log_callback(vm, on_lib_log, run);
}
