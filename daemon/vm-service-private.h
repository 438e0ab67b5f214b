/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside a VM service, shared by vm-service.c (the state machine, the GObject) and vm-methods.c
 * (the D-Bus methods). Main loop only: the worker threads get an OpData (vm-ops.h), the vCPU
 * threads a MvmdVmRun (vm-run.h), never the service.
 */
#pragma once

#include "console.h"
#include "log.h"
#include "vm-ops.h"
#include "vm-run.h"
#include "vm-service.h"

G_BEGIN_DECLS

#define vm_log(self, level, fmt, ...)                                                              \
    mvmd_vm_log((self)->definition->name, level, fmt, ##__VA_ARGS__)

typedef enum {
    WAIT_SHUTDOWN,
    WAIT_STOP,
} WaitKind;

/*
 * How a caller is answered once its operation succeeded: mvmd_vm_complete_start() and the
 * like. Chosen when the operation begins; a Reboot's (a Stop, then a Start) is Reboot's own.
 */
typedef void (*OpReply)(MvmdVm *vm, GDBusMethodInvocation *invocation);

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

    MvmdVmRun *run;                       /* NULL while stopped / created */
    Op op;                                /* the one operation in progress */
    GDBusMethodInvocation *op_invocation; /* its caller, NULL for internal operations */
    OpReply op_reply;                     /* how to answer that caller on success */
    gboolean reboot_pending;              /* Reboot: Start again once the Stop is done */
    GList *waiters;                       /* Waiter * */
    gboolean deleted;
    MvmdQuotaCharge charge; /* what the VM holds of its owner's quota, until it is deleted */
    GVariant *properties;   /* a{sv} of every property, NULL once one changed */
    char *exit_reason;      /* GetExitReason: why the last run ended, "" before the first end */

    /* RestoreVM: told how the first start went, instead of a caller. */
    MvmdVmServiceReadyFunc ready_func;
    gpointer ready_data;

    MvmVmStats stats_cache;
    guint restarts;
    gint64 reset_window_start;
    guint reset_count;
};

/*
 * Starts @op in a worker thread; takes @invocation (NULL for an internal operation, with @reply
 * NULL too) and @args (may be NULL). @reply answers @invocation once the operation succeeded;
 * OP_CPU_CONFIG has none (its answer carries what it read).
 */
void mvmd_vm_service_begin_op(MvmdVmService *self, Op op, GDBusMethodInvocation *invocation,
                              OpReply reply, OpArgs *args);
/* Resumes the paused run (on the main loop, but for a restored machine's first resume) and
 * answers @invocation with @reply. */
void mvmd_vm_service_resume(MvmdVmService *self, GDBusMethodInvocation *invocation, OpReply reply);
/* The state the vCPU threads last reported (STOPPED without a run). */
MvmVmState mvmd_vm_service_run_state(MvmdVmService *self);
/* Ctrl-Alt-Del for the guest; does not wait. */
gboolean mvmd_vm_service_request_shutdown(MvmdVmService *self, GError **error);
void mvmd_vm_service_waiter_free(Waiter *w);
/* Closes the console, removes the logs, tells the manager (which unexports the object). */
void mvmd_vm_service_mark_deleted(MvmdVmService *self);

void mvmd_vm_service_iface_init(MvmdVmIface *iface);

G_END_DECLS
