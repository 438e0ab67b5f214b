/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside a VM object, shared by vm-service.c (runs, operations, the GObject) and vm-methods.c
 * (the D-Bus methods). Main loop only, except where a field says otherwise.
 */
#pragma once

#include "console.h"
#include "log.h"
#include "vm-service.h"

G_BEGIN_DECLS

#define vm_log(self, level, fmt, ...)                                                              \
    mvmd_vm_log((self)->definition->name, level, fmt, ##__VA_ARGS__)

typedef enum {
    OP_NONE,
    OP_START, /* build (or restore) the machine and run it */
    OP_PAUSE,
    OP_RESUME,
    OP_SNAPSHOT,
    OP_STOP, /* forced stop, then free */
    OP_REAP, /* the guest stopped by itself: collect the exit, free */
} Op;

/* What an operation needs besides the VM (owned by the operation). */
typedef struct {
    guint flags;     /* MvmPauseFlags, MvmSnapshotFlags */
    char *dir;       /* Snapshot (root only): the directory, or NULL */
    int dir_fd;      /* Snapshot (root only): -1 or the caller's directory */
    int state_fd;    /* Snapshot: -1 or the caller's own file for `state` (checked) */
    int memory_fd;   /* Snapshot: -1 or the caller's own file for `memory` (checked) */
    gboolean paused; /* Start of a restored VM: leave it paused */
} OpArgs;

#define OP_ARGS_INIT                                                                               \
    {                                                                                              \
        .dir_fd = -1, .state_fd = -1, .memory_fd = -1                                              \
    }

void mvmd_op_args_clear(OpArgs *args);

/*
 * One run of the machine: from Start to the lib VM's mvm_vm_free(). The lib's callbacks get
 * the Run (not the VM object) so that news from a finished run is recognised and dropped.
 */
typedef struct {
    gatomicrefcount ref;
    GWeakRef self;
    char *name; /* the VM's, for the lib's messages from its threads */
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
    MvmdVmService *self; /* not a ref: the object owns its waiters */
    GDBusMethodInvocation *invocation;
    WaitKind kind;
    GSource *timeout;
    guint timeout_sec;
} Waiter;

struct _MvmdVmService {
    MvmdVmSkeleton parent;

    MvmdContext *ctx;
    MvmdVmDefinition *definition;
    MvmdConsole *console;

    Run *run;                             /* NULL while stopped / created */
    Op op;                                /* the one operation in progress */
    GDBusMethodInvocation *op_invocation; /* its caller, NULL for internal operations */
    gboolean reboot_pending;              /* Reboot: Start again once the Stop is done */
    GList *waiters;                       /* Waiter * */
    gboolean deleted;
    char *exit_reason; /* GetExitReason: why the last run ended, "" before the first end */

    /* RestoreVM: told how the first start went, instead of a caller. */
    MvmdVmServiceReadyFunc ready_func;
    gpointer ready_data;

    MvmVmStats stats_cache;
    guint restarts;
    gint64 reset_window_start;
    guint reset_count;
};

/* Starts @op in a worker thread; takes @invocation (may be NULL) and @args (may be NULL). */
void mvmd_vm_service_begin_op(MvmdVmService *self, Op op, GDBusMethodInvocation *invocation,
                              OpArgs *args);
/* The state the vCPU threads last reported (STOPPED without a run). */
MvmVmState mvmd_vm_service_run_state(MvmdVmService *self);
/* Ctrl-Alt-Del for the guest; does not wait. */
gboolean mvmd_vm_service_request_shutdown(MvmdVmService *self, GError **error);
void mvmd_vm_service_waiter_free(Waiter *w);
/* Closes the console, removes the logs, tells the manager (which unexports the object). */
void mvmd_vm_service_mark_deleted(MvmdVmService *self);

void mvmd_vm_service_iface_init(MvmdVmIface *iface);

G_END_DECLS
