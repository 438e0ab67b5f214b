/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VM's lifecycle operations (Start, Pause, Resume, Snapshot, Stop, and the reaping of a run
 * that ended by itself). The main loop (vm-service.c) makes an operation's record and starts
 * it; its work runs on a thread of its own, because it does file I/O, KVM ioctls and thread
 * joins; the result goes back to the main loop through the GTask.
 */
#pragma once

#include <gio/gio.h>

#include "definition.h"
#include "quota.h"
#include "vm-run.h"

G_BEGIN_DECLS

typedef enum {
    OP_NONE,
    OP_START, /* build (or restore) the machine and run it */
    OP_PAUSE,
    /* The first resume of a restored machine, which creates its vCPU threads; any other Resume
     * is done on the main loop (mvmd_vm_service_resume()) */
    OP_RESUME,
    OP_SNAPSHOT,
    OP_STOP, /* forced stop, then free */
    OP_REAP, /* the guest stopped by itself: collect the exit, free */
    /* GetCPUConfig: mvm_vm_dump_cpu_config() pauses a running machine for the read, so it is
     * an operation like the others: off the main loop, and never beside a Stop that frees it */
    OP_CPU_CONFIG,
    /* SaveWorkingSet: the pages a lazily restored guest read, written into the caller's file;
     * the guest runs on meanwhile */
    OP_WORKING_SET,
    /* The daemon hands the VM to the next one (handoff.h): pause it, save its state into a
     * memfd, take its RAM memfd and open back ends; the machine stays, paused, until the
     * descriptors are in systemd's store, and a Stop then frees it */
    OP_HANDOFF,
} Op;

/* What an operation needs besides the VM (owned by the operation). */
typedef struct {
    guint flags;     /* MvmPauseFlags, MvmSnapshotFlags */
    char *dir;       /* Snapshot (root only): the directory, or NULL */
    int dir_fd;      /* Snapshot (root only): -1 or the caller's directory */
    int state_fd;    /* Snapshot: -1 or the caller's own file for `state` (checked) */
    int memory_fd;   /* Snapshot: -1 or the caller's own file for `memory` (checked) */
    gboolean paused; /* Start of a restored VM: leave it paused */
    /*
     * Snapshot with `diff-base` (flags has MVM_SNAPSHOT_DIFF): the parent the caller means,
     * compared on the worker, right before the snapshot, with the one the VM has.
     */
    gboolean has_diff_base;
    guint8 diff_base[MVM_SNAPSHOT_ID_SIZE];
    /*
     * -1, or the caller's working set file (checked): RestoreVM's `working-set`, read on the
     * worker for the first restore's prefetch; SaveWorkingSet's @fd, written there.
     */
    int working_set_fd;
} OpArgs;

#define OP_ARGS_INIT                                                                               \
    {                                                                                              \
        .dir_fd = -1, .state_fd = -1, .memory_fd = -1, .working_set_fd = -1                        \
    }

void mvmd_op_args_clear(OpArgs *args);

/* @n bytes as 2 × @n lowercase hex digits, and back (FALSE for anything else). */
char *mvmd_hex_format(const guint8 *bytes, gsize n);
gboolean mvmd_hex_parse(const char *text, guint8 *bytes, gsize n);

/*
 * A snapshot's ID (MVM_SNAPSHOT_ID_SIZE bytes, the SHA-256 its `state` ends with) as D-Bus shows
 * it: 64 lowercase hex digits. Parse: anything else is MVMD_ERROR_INVALID_ARGUMENT naming @key.
 */
char *mvmd_snapshot_id_format(const guint8 id[MVM_SNAPSHOT_ID_SIZE]);
gboolean mvmd_snapshot_id_parse(const char *text, const char *key, guint8 id[MVM_SNAPSHOT_ID_SIZE],
                                GError **error);

/*
 * One operation's record: made on the main loop, then the worker's alone until the task
 * completes on the main loop again.
 */
typedef struct {
    Op op;
    MvmdVmRun *run;
    OpArgs args;
    MvmVmConfig *mvm_config; /* Start; fds borrowed from the definition */
    /* Start of a defined VM: the `cpu-template` (NULL: host), loaded again from @cpu_template_dir
     * on the worker (the administrator may have changed or removed the file since CreateVM). */
    char *cpu_template;
    char *cpu_template_dir;
    /* Start of a restored VM: the snapshot (fd borrowed from the definition). */
    char *restore_dir;
    int restore_fd;
    int restore_state_fd; /* or its two files (borrowed too) */
    int restore_memory_fd;
    /* The snapshots beneath a diff, base first (a copy of the definition's; fds borrowed). */
    MvmSnapshotFiles *restore_layers;
    guint n_restore_layers;
    MvmRestoreFlags restore_flags;
    /* The working set in args.working_set_fd, read on the worker (options.prefetch). */
    MvmWorkingSet *prefetch;
    /* Root asked for the back ends the snapshot names ('use-snapshot-backends'); else
     * mvm_config's devices are used. */
    gboolean restore_own_backends;
    /* Guest RAM from the daemon's memory images, shared only among this owner's VMs. */
    MvmMemoryImages *memory_images;
    guint32 owner;
    /*
     * Start: in, when @set_generation_id, the VM generation ID a built machine boots with (the
     * service's, the same at each start; a restore always gets a new one from the library);
     * out, the ID the machine has (@has_generation_id FALSE: none, a snapshot older than the
     * device).
     */
    guint8 generation_id[MVM_GENERATION_ID_SIZE];
    gboolean set_generation_id;
    gboolean has_generation_id;
    /*
     * Start and Snapshot, out: the ID a diff taken next would name as its parent
     * (mvm_vm_get_diff_parent(), read on the worker once the machine is built or the snapshot
     * is done, whether it succeeded or not); @has_diff_parent FALSE: it tracks no changes.
     */
    guint8 diff_parent[MVM_SNAPSHOT_ID_SIZE];
    gboolean has_diff_parent;
    /* The VM's share of its owner's quota: a restore resizes it to the snapshot's (any thread). */
    MvmdQuotaCharge *charge;
    /* How the run ended (Stop, Reap): written by the worker, read on the main loop once done. */
    MvmVmState final_state;
    MvmExitKind kind;
    guint32 exit_code;
    char *reason;
    GVariant *cpu_config; /* GetCPUConfig's reply (sunk), built on the worker: 255 vCPUs
                           * make ~1 MB, ~100 ms of building the main loop never pays */
    /*
     * Handoff, out: the state memfd, the RAM memfd, the open back ends (owned, closed with the
     * record), and whether the guest was running. Start of a handed-over VM, in: the back ends
     * it was handed (borrowed), with restore_state_fd and restore_memory_fd.
     */
    int handoff_state_fd;
    int handoff_memory_fd;
    MvmVmConfig *handoff_backends;
    gboolean handoff_running;
    const MvmVmConfig *adopt_backends;
} OpData;

/*
 * Main loop: the record for @op on @run; takes @args (may be NULL). A Start builds (or
 * restores) the machine @definition describes, whose fds it borrows, with its CPU template
 * from @cpu_template_dir and its memory from @memory_images (a reference is taken).
 */
OpData *mvmd_vm_op_data_new(Op op, MvmdVmRun *run, OpArgs *args, const MvmdVmDefinition *definition,
                            const char *cpu_template_dir, MvmMemoryImages *memory_images);
void mvmd_vm_op_data_free(OpData *d);

/*
 * Main loop: runs the operation of @task (its task data is an OpData) on a thread of its own;
 * the task's callback gets the result on the main loop.
 */
void mvmd_vm_op_run(GTask *task);

/*
 * A Stop (or the end of a run) is answered once the machine has stopped; it is freed after, on
 * the operation's thread. At exit: waits up to @timeout_us for those to finish; FALSE if some
 * did not.
 */
gboolean mvmd_vm_op_wait_teardowns(gint64 timeout_us);

G_END_DECLS
