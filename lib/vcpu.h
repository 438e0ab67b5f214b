/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One KVM vCPU: creation, boot-time configuration, the KVM_RUN step with
 * PIO/MMIO dispatch onto the io bus, and the full architectural state for
 * save/restore. The surface mirrors Firecracker's KvmVcpu. The thread that
 * runs a vCPU belongs to the VM (vm.c), which owns pausing and kicking.
 */
#pragma once

#include <glib.h>
#include <linux/kvm.h>

#include "boot.h"
#include "iobus.h"
#include "kvm.h"
#include "microvm.h"

G_BEGIN_DECLS

typedef struct _MvmVcpu MvmVcpu;

/* Everything KVM keeps about one vCPU, in the order it must be restored. */
typedef struct {
    struct kvm_cpuid2 *cpuid;
    struct kvm_mp_state mp_state;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    GBytes *xsave;      /* KVM_GET_XSAVE(2) area; NULL when the host has no XSAVE */
    struct kvm_fpu fpu; /* used only when xsave is NULL */
    struct kvm_xcrs xcrs;
    gboolean has_xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_msrs *msrs; /* nmsrs entries */
    struct kvm_vcpu_events events;
    guint32 tsc_khz; /* 0 when the host cannot tell */
} MvmVcpuState;

void mvm_vcpu_state_free(MvmVcpuState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVcpuState, mvm_vcpu_state_free)

/* What Firecracker calls a CPU configuration: the CPUID table and every dumpable MSR. */
typedef struct {
    struct kvm_cpuid2 *cpuid;
    struct kvm_msrs *msrs;
} MvmVcpuCpuDump;

void mvm_vcpu_cpu_dump_free(MvmVcpuCpuDump *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVcpuCpuDump, mvm_vcpu_cpu_dump_free)

typedef enum {
    MVM_VCPU_RUN_CONTINUE, /* an exit was handled; run again */
    MVM_VCPU_RUN_KICKED,   /* KVM_RUN returned EINTR: look at the VM's requests */
    MVM_VCPU_RUN_STOP,     /* the VM must stop: see the exit kind and reason */
} MvmVcpuRunResult;

typedef struct {
    MvmExitKind kind;
    char *reason; /* owned; NULL when kind is MVM_EXIT_NONE */
} MvmVcpuExit;

typedef struct {
    guint64 io;
    guint64 mmio;
    guint64 hlt;
    guint64 other;
    guint64 unhandled_io;
} MvmVcpuCounters;

MvmVcpu *mvm_vcpu_new(const MvmKvm *kvm, int vm_fd, guint index, GError **error);
void mvm_vcpu_free(MvmVcpu *vcpu);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVcpu, mvm_vcpu_free)

/*
 * CPUID (as @tmpl says; NULL: all the host's KVM supports), boot MSRs and the template's,
 * registers, segments, FPU and LAPIC LINTs for the given entry.
 */
gboolean mvm_vcpu_configure(MvmVcpu *vcpu, const MvmCpuTemplate *tmpl, guint n_vcpus,
                            const MvmBootInfo *boot, GError **error);
/* The pieces of configure, for callers that need one of them (restore, tests). */
gboolean mvm_vcpu_set_cpuid(MvmVcpu *vcpu, const MvmCpuTemplate *tmpl, guint n_vcpus,
                            GError **error);
gboolean mvm_vcpu_setup_msrs(MvmVcpu *vcpu, GError **error);
gboolean mvm_vcpu_setup_regs(MvmVcpu *vcpu, const MvmBootInfo *boot, GError **error);
gboolean mvm_vcpu_setup_sregs(MvmVcpu *vcpu, const MvmBootInfo *boot, GError **error);
gboolean mvm_vcpu_setup_fpu(MvmVcpu *vcpu, GError **error);
gboolean mvm_vcpu_setup_lint(MvmVcpu *vcpu, GError **error);

/* The bus PIO and MMIO exits go to; set before the first run. */
void mvm_vcpu_set_io_bus(MvmVcpu *vcpu, MvmIoBus *bus);

/*
 * Tells the guest's kvmclock it was stopped by the host (PVCLOCK_GUEST_STOPPED).
 * Returns FALSE with *not_enabled TRUE when the guest never enabled kvmclock
 * (EINVAL): expected, not an error for callers that pause.
 */
gboolean mvm_vcpu_kvmclock_ctrl(MvmVcpu *vcpu, gboolean *not_enabled, GError **error);
/* KVM_GET_TSC_KHZ; 0 and an error when the host cannot tell. */
guint32 mvm_vcpu_get_tsc_khz(MvmVcpu *vcpu, GError **error);
gboolean mvm_vcpu_set_tsc_khz(MvmVcpu *vcpu, guint32 khz, GError **error);
/* TRUE when @state_tsc_khz differs from this host's by more than 250 ppm. */
gboolean mvm_vcpu_is_tsc_scaling_required(MvmVcpu *vcpu, guint32 state_tsc_khz, gboolean *required,
                                          GError **error);

/* A zeroed struct kvm_msrs with room for @n entries, nmsrs set; free with g_free(). */
struct kvm_msrs *mvm_vcpu_msrs_new(gsize n);
/* One KVM_GET_MSRS of at most KVM_MAX_MSR_ENTRIES; an error names the first MSR KVM refused. */
struct kvm_msrs *mvm_vcpu_get_msr_chunk(MvmVcpu *vcpu, const guint32 *indices, gsize n,
                                        GError **error);
/* Any number of MSRs, fetched in chunks. */
struct kvm_msrs *mvm_vcpu_get_msrs(MvmVcpu *vcpu, const guint32 *indices, gsize n, GError **error);
/* The MSRs of KVM_GET_MSR_INDEX_LIST that this vCPU can read (probed once). */
const GArray *mvm_vcpu_get_saveable_msrs(MvmVcpu *vcpu, GError **error);

MvmVcpuState *mvm_vcpu_save_state(MvmVcpu *vcpu, GError **error);
gboolean mvm_vcpu_restore_state(MvmVcpu *vcpu, const MvmVcpuState *state, GError **error);
MvmVcpuCpuDump *mvm_vcpu_dump_cpu_config(MvmVcpu *vcpu, GError **error);

/* ---- running (called on the vCPU's own thread) ---- */

/* Enters KVM_RUN once and handles the exit. */
MvmVcpuRunResult mvm_vcpu_run(MvmVcpu *vcpu, MvmVcpuExit *exit);
/* Makes the next or current KVM_RUN return EINTR; async-signal-safe, any thread. */
void mvm_vcpu_set_immediate_exit(MvmVcpu *vcpu, gboolean on);
void mvm_vcpu_get_counters(MvmVcpu *vcpu, MvmVcpuCounters *counters);

G_END_DECLS
