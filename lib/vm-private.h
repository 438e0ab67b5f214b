/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VM's insides, shared by vm.c (construction) and vm-run.c (threads and states). */
#pragma once

#include <pthread.h>

#include "boot.h"
#include "devices.h"
#include "error-private.h"
#include "guest-log.h"
#include "iobus.h"
#include "iothread.h"
#include "kvm.h"
#include "memory.h"
#include "microvm.h"
#include "vcpu.h"

typedef struct {
    MvmVm *vm;
    MvmVcpu *vcpu;
    GThread *thread;
    pthread_t tid; /* valid once tid_valid is set */
    gint tid_valid;
    gint64 cpu_time_us; /* CPU time of the thread once it has ended */
    gboolean exited;
} MvmVcpuThread;

struct _MvmVm {
    MvmVmConfig *config;
    const MvmKvm *kvm;
    int fd;
    MvmMemory *memory;
    MvmIoBus *bus;
    MvmSerial *serial;
    MvmI8042 *i8042;
    MvmTestDev *testdev;
    MvmIoThread *io_thread;    /* device back ends; NULL when the VM has no virtio device */
    GPtrArray *virtio;         /* MvmVirtio *, in MMIO slot order */
    gboolean devices_released; /* mvm_vm_release_devices(): only the VM fd and memory left */
    MvmBootInfo boot;
    guint n_vcpus;
    MvmVcpuThread *vcpus;

    MvmVmStateFunc state_func;
    gpointer state_data;
    MvmVmConsoleFunc console_func;
    gpointer console_data;
    MvmVmMarkerFunc marker_func;
    gpointer marker_data;
    MvmGuestLog guest_log; /* every message about the VM, limited (guest-log.h) */

    /* Everything below is guarded by lock; vCPU threads wait on cond. */
    GMutex lock;
    GCond cond;
    MvmVmState state;
    gint stop_requested; /* also read without the lock (g_atomic) on the vCPU fast path */
    gint pause_requested;
    guint n_parked;
    guint n_exited;
    MvmExitKind exit_kind;
    char *exit_reason;
    guint32 exit_code;
    gint64 started_at_us;
    guint64 kvmclock_einval;

    /*
     * Pause, resume, start, snapshot and the join in stop hold op_lock for their
     * whole run, so two callers never interleave their steps (vm-run.c).
     */
    GMutex op_lock;
    gboolean threads_started;               /* a restored VM gets its threads at the first resume */
    gboolean clock_frozen;                  /* frozen_clock goes back into KVM at resume */
    struct kvm_clock_data frozen_clock;     /* guest kvmclock time when it was frozen */
    GArray *device_states;                  /* device-state.c: devices with state of their own */
    guint64 vmgenid_addr;                   /* vmgenid.c: where the generation ID is; 0: none */
    guint8 vmgenid[MVM_GENERATION_ID_SIZE]; /* the ID last written there (guarded by lock) */
    /* Diff snapshots (snapshot.c): changed only with op_lock held and the vCPUs parked. */
    gboolean tracking;        /* KVM's dirty log on every slot, the VMM's marks on */
    gboolean has_diff_parent; /* also read under lock (mvm_vm_get_diff_parent()) */
    guint8 diff_parent[MVM_SNAPSHOT_ID_SIZE];
};

/* vm.c: construction in two steps, so that a restore can build the machine and fill it. */
MvmVm *mvm_vm_alloc(const MvmVmConfig *config, GError **error);
/*
 * Creates the KVM VM, registers @memory (taking it; NULL: new zeroed RAM of the
 * configured size), irqchip, PIT, devices and unconfigured vCPUs.
 */
gboolean mvm_vm_build(MvmVm *vm, MvmMemory *memory, GError **error);
/* Turns on KVM's dirty page log of every memory slot (KVM_MEM_LOG_DIRTY_PAGES). */
gboolean mvm_vm_log_dirty_pages(MvmVm *vm, GError **error);

/* vm-run.c */
void mvm_vm_guest_exit(MvmVm *vm, MvmExitKind kind, char *reason, guint32 code);
void mvm_vm_notify_state(MvmVm *vm, MvmVmState state);
void mvm_vm_join_vcpus(MvmVm *vm);
gboolean mvm_exit_kind_is_crash(MvmExitKind kind);
/* With op_lock held; they do not call the state callback (the caller does, unlocked). */
gboolean mvm_vm_pause_locked(MvmVm *vm, MvmPauseFlags flags, GError **error);
gboolean mvm_vm_resume_locked(MvmVm *vm, GError **error);

typedef enum {
    MVM_PARKED_LEAVE_PAUSED = 1 << 0,  /* a running VM stays paused after (and that is told) */
    MVM_PARKED_ALLOW_CREATED = 1 << 1, /* a VM never started is fine too (no vCPU runs) */
} MvmParkedFlags;
typedef gboolean (*MvmParkedFunc)(MvmVm *vm, gpointer data, GError **error);
/*
 * Calls @func with op_lock held and no vCPU in KVM_RUN: a running VM is paused for it without
 * telling the state callback (to its watchers it never stopped running), and resumed after
 * unless MVM_PARKED_LEAVE_PAUSED. Other states fail with MVM_ERROR_INVALID_STATE, "cannot
 * @what a VM that is ...".
 */
gboolean mvm_vm_with_vcpus_parked(MvmVm *vm, const char *what, MvmParkedFlags flags,
                                  MvmParkedFunc func, gpointer data, GError **error);

/* vmgenid.c: a new VM's random ID; a restored one's, with the guest told (@addr 0: none). */
gboolean mvm_vm_vmgenid_boot(MvmVm *vm, GError **error);
gboolean mvm_vm_vmgenid_restore(MvmVm *vm, guint64 addr, const guint8 *id, GError **error);

/* device-state.c */
void mvm_vm_free_device_states(MvmVm *vm);
