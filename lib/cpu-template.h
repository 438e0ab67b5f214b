/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What lib does with a CPU template (cpu-template.c) beyond the public half in microvm.h. */
#pragma once

#include <linux/kvm.h>

#include "microvm.h"
#include "vcpu.h"

G_BEGIN_DECLS

/*
 * Changes @cpuid (a copy of KVM_GET_SUPPORTED_CPUID) as @tmpl says (NULL: not at all).
 * MVM_ERROR_INCOMPATIBLE_CPU when the result announces a feature no guest of this host can
 * be shown; MVM_ERROR_INVALID_ARGUMENT for a template known only by a snapshot's record.
 */
gboolean mvm_cpu_template_apply_cpuid(const MvmCpuTemplate *tmpl, struct kvm_cpuid2 *cpuid,
                                      GError **error);
/* Whether @tmpl (NULL: host) has CPUID modifiers at all. */
gboolean mvm_cpu_template_changes_cpuid(const MvmCpuTemplate *tmpl);
/*
 * After KVM_SET_CPUID2: MVM_ERROR_INCOMPATIBLE_CPU when KVM shows the guest (@shown,
 * KVM_GET_CPUID2) a feature @tmpl takes away, as kvm_pvm does. A template is a promise to the
 * guest's software and to its snapshots; one that cannot be kept refuses the VM.
 */
gboolean mvm_cpu_template_check_shown(const MvmCpuTemplate *tmpl, const struct kvm_cpuid2 *shown,
                                      GError **error);
/* Sets @tmpl's MSRs on @vcpu after the boot MSRs; MVM_ERROR_INCOMPATIBLE_CPU if KVM refuses. */
gboolean mvm_cpu_template_apply_msrs(const MvmCpuTemplate *tmpl, MvmVcpu *vcpu, GError **error);
/*
 * The template a snapshot names: a built-in one, else one that carries the name alone (it
 * describes the restored VM; mvm_cpu_template_apply_cpuid() refuses it). Untrusted @name.
 */
MvmCpuTemplate *mvm_cpu_template_new_recorded(const char *name, GError **error);

G_END_DECLS
