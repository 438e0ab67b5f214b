/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside a VM service, shared by vm-service.c (the state machine, the GObject) and vm-methods.c
 * (the D-Bus methods). Main loop only: the worker threads get an OpData (vm-ops.h), the vCPU
 * threads a MvmdVmRun (vm-run.h), never the service.
 */
#pragma once

#include "console.h"
#include "log.h"
#include "handoff.h"
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

    /*
     * The VM generation ID (GetConfig's `generation-id`). A defined VM's is made with the
     * service and boots each of its runs, so a reboot is no new generation (Microsoft's
     * "Virtual Machine Generation ID"); a restored VM's is the one its last restore gave, new at
     * each. Not stored: a daemon restart gives a defined VM another.
     */
    guint8 generation_id[MVM_GENERATION_ID_SIZE];
    gboolean has_generation_id;
    /*
     * The ID a diff snapshot of the machine would name as its parent now (GetStats'
     * `diff-parent`), as the last Start or Snapshot read it on its worker; only those change it.
     * @has_diff_parent FALSE: no machine, or it tracks no changes.
     */
    guint8 diff_parent[MVM_SNAPSHOT_ID_SIZE];
    gboolean has_diff_parent;

    MvmVmStats stats_cache;
    GVariant *device_stats_cache; /* GetStats' `disks` and `network` (a{sv}); NULL: none */
    /* GetStats' `lazy-pages-read` and `lazy-pages-total`, read and cached with the stats;
     * @has_lazy FALSE: no machine restored lazily, or every page of it is in. */
    guint64 lazy_pages_read;
    guint64 lazy_pages_total;
    gboolean has_lazy;
    guint restarts;
    gint64 reset_window_start;
    guint reset_count;

    /* Handing over to the next daemon (handoff.h): tried once; done once it is in the store,
     * after which the run ends without a state change (the next daemon shows it again). */
    gboolean handoff_tried;
    gboolean handed_over;
    /* Taken over from the last daemon: its descriptors, until the restore is done. */
    MvmdHandoffIn *adopting;
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
/*
 * VM.SetResources (vm-resources.c): checks @resources, then changes the definition, stores it
 * and gives the machine the new values; all or nothing. No operation may be in progress.
 */
gboolean mvmd_vm_service_set_resources(MvmdVmService *self, GVariant *resources, GError **error);
/* A hard reset: a Stop, then a Start; @invocation (may be NULL) is answered after the Start. */
void mvmd_vm_service_begin_reboot(MvmdVmService *self, GDBusMethodInvocation *invocation,
                                  OpReply reply);
/* Ctrl-Alt-Del for the guest; does not wait. */
gboolean mvmd_vm_service_request_shutdown(MvmdVmService *self, GError **error);
void mvmd_vm_service_waiter_free(Waiter *w);
/* Closes the console, removes the logs, tells the manager (which unexports the object). */
void mvmd_vm_service_mark_deleted(MvmdVmService *self);
/* The generation ID of the machine as "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (its 16 bytes in
 * guest memory order), or "" when there is no machine (or it has none). */
char *mvmd_vm_service_format_generation_id(MvmdVmService *self);

/* The diff parent as 64 hex digits, or "" when the machine tracks no changes (or there is
 * none, or it is being built). */
char *mvmd_vm_service_format_diff_parent(MvmdVmService *self);

void mvmd_vm_service_iface_init(MvmdVmIface *iface);

G_END_DECLS
