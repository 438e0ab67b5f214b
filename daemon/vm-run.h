/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One run of a machine, from Start to the lib VM's mvm_vm_free(), and the bridge that brings
 * the news of its vCPU and I/O threads to the main loop. The lib's callbacks get the run, not
 * the VM service, so that late news from a finished run is recognised and dropped.
 */
#pragma once

#include "console.h"
#include "microvm.h"

G_BEGIN_DECLS

typedef struct _MvmdVmRun MvmdVmRun;

/* Main loop: the run has news (its state changed); @owner is alive. */
typedef void (*MvmdVmRunNewsFunc)(gpointer owner, MvmdVmRun *run);

struct _MvmdVmRun {
    gatomicrefcount ref;
    GWeakRef owner;
    MvmdVmRunNewsFunc news;
    char *name; /* the VM's, for the lib's messages from its threads */
    MvmdConsole *console;
    GMainContext *context; /* where the news goes: the owner's main loop */
    MvmVm *vm;             /* set by the Start worker; main loop only once that op is done */
    gint state;            /* MvmVmState, latest from the state callback (atomic) */
    gint poke_pending;     /* an idle source is on its way to the main loop (atomic) */
};

/* Main loop: a run whose news reaches @news on this thread's main context while @owner lives. */
MvmdVmRun *mvmd_vm_run_new(GObject *owner, const char *name, MvmdConsole *console,
                           MvmdVmRunNewsFunc news);
MvmdVmRun *mvmd_vm_run_ref(MvmdVmRun *run);
void mvmd_vm_run_unref(MvmdVmRun *run);

/* The Start worker: @vm's state, console and log callbacks report to @run. */
void mvmd_vm_run_connect(MvmdVmRun *run, MvmVm *vm);

/* The state the vCPU threads last reported. */
MvmVmState mvmd_vm_run_get_state(MvmdVmRun *run);

G_END_DECLS
