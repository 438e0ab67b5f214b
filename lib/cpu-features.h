/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPUID feature registers and their bits' names (cpu-features.c): what a guest was told it
 * has, read the same way by templates, GetCPUConfig and the restore's check. No KVM calls.
 */
#pragma once

#include <glib.h>
#include <linux/kvm.h>

#include "microvm.h"

G_BEGIN_DECLS

typedef enum {
    MVM_CPUID_EAX,
    MVM_CPUID_EBX,
    MVM_CPUID_ECX,
    MVM_CPUID_EDX,
} MvmCpuidRegisterId;

/* One register of one leaf whose bits each announce a feature. */
typedef struct {
    guint32 leaf;
    guint32 subleaf;
    MvmCpuidRegisterId reg;
    guint32 managed;          /* bits the VMM or the guest sets, not the host's CPU */
    const char *const *names; /* 32 entries, NULL where a bit has no name */
} MvmCpuidRegister;

const MvmCpuidRegister *mvm_cpuid_feature_registers(guint *n);
const char *mvm_cpuid_register_name(MvmCpuidRegisterId reg);
guint32 *mvm_cpuid_entry_register(struct kvm_cpuid_entry2 *entry, MvmCpuidRegisterId reg);
/*
 * The entry KVM answers CPUID(@leaf, @subleaf) with: the first of that leaf whose subleaf
 * matches or that does not depend on it (no KVM_CPUID_FLAG_SIGNIFCANT_INDEX). NULL if none.
 */
struct kvm_cpuid_entry2 *mvm_cpuid_find(const struct kvm_cpuid2 *cpuid, guint32 leaf,
                                        guint32 subleaf);
/* Appends the names of @bits of one register (named or not) to @names. */
void mvm_cpuid_add_bit_names(GPtrArray *names, guint32 leaf, guint32 subleaf,
                             MvmCpuidRegisterId reg, guint32 bits);
/* The named features @cpuid announces. */
GStrv mvm_cpuid2_feature_names(const struct kvm_cpuid2 *cpuid);
/*
 * The features @seen announces and neither @available nor @also_available (may be NULL) does,
 * managed bits aside, as a list for a message; NULL when there are none.
 */
char *mvm_cpuid_missing_features(const struct kvm_cpuid2 *seen, const struct kvm_cpuid2 *available,
                                 const struct kvm_cpuid2 *also_available);
/*
 * MVM_ERROR_INCOMPATIBLE_CPU naming every feature @seen announces that a guest of this host
 * cannot be shown (mvm_kvm_effective_cpuid()). @what starts the message ("the snapshot's guest
 * saw").
 */
gboolean mvm_cpuid_check_supported(const struct kvm_cpuid2 *seen, const char *what, GError **error);

G_END_DECLS
