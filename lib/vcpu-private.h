/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What vcpu.c and vcpu-state.c share; not for the rest of lib. */
#pragma once

#include "vcpu.h"

struct _MvmVcpu {
    const MvmKvm *kvm;
    guint index;
    int fd;
    struct kvm_run *run;   /* MAP_FAILED until mapped */
    MvmIoBus *bus;         /* not owned */
    GArray *saveable_msrs; /* guint32 indices, probed on first save */
    MvmVcpuCounters counters;
};

struct kvm_cpuid2 *mvm_vcpu_build_cpuid(const MvmKvm *kvm, const MvmCpuTemplate *tmpl, guint index,
                                        guint n_vcpus, GError **error);
gboolean mvm_vcpu_set_msrs(MvmVcpu *vcpu, const struct kvm_msrs *msrs, GError **error);
/* KVM_GET_CPUID2: the table the guest is shown. */
struct kvm_cpuid2 *mvm_vcpu_get_cpuid(MvmVcpu *vcpu, GError **error);
