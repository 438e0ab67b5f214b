/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The CPUID registers that announce features, the names of their bits, and the check that a
 * host can give a guest every feature it saw. Names are Linux's (/proc/cpuinfo, cpufeatures.h)
 * where Linux has one; the leaves are from the Intel SDM vol. 2A (CPUID), the AMD APM vol. 3
 * (appendix E) and KVM's api.rst (the 0x40000001 paravirtual features).
 */
#include <string.h>

#include "cpu-features.h"
#include "error-private.h"
#include "kvm.h"

/* Leaf 1 EDX. */
static const char *const leaf1_edx[32] = {
    "fpu",  "vme",  "de",   "pse", "tsc",  "msr", "pae",   "mce", "cx8",     "apic", NULL,
    "sep",  "mtrr", "pge",  "mca", "cmov", "pat", "pse36", "pn",  "clflush", NULL,   "dts",
    "acpi", "mmx",  "fxsr", "sse", "sse2", "ss",  "ht",    "tm",  "ia64",    "pbe",
};

/* Leaf 1 ECX. */
static const char *const leaf1_ecx[32] = {
    "pni",    "pclmulqdq",  "dtes64",  "monitor", "ds_cpl",
    "vmx",    "smx",        "est",     "tm2",     "ssse3",
    "cid",    "sdbg",       "fma",     "cx16",    "xtpr",
    "pdcm",   NULL,         "pcid",    "dca",     "sse4_1",
    "sse4_2", "x2apic",     "movbe",   "popcnt",  "tsc_deadline_timer",
    "aes",    "xsave",      "osxsave", "avx",     "f16c",
    "rdrand", "hypervisor",
};

/* Leaf 6 EAX. */
static const char *const leaf6_eax[32] = {
    [2] = "arat",
};

/* Leaf 7 subleaf 0 EBX. */
static const char *const leaf7_ebx[32] = {
    "fsgsbase",   "tsc_adjust", "sgx",        "bmi1",     "hle",      "avx2",     "fdp_excptn_only",
    "smep",       "bmi2",       "erms",       "invpcid",  "rtm",      "cqm",      "zero_fcs_fds",
    "mpx",        "rdt_a",      "avx512f",    "avx512dq", "rdseed",   "adx",      "smap",
    "avx512ifma", NULL,         "clflushopt", "clwb",     "intel_pt", "avx512pf", "avx512er",
    "avx512cd",   "sha_ni",     "avx512bw",   "avx512vl",
};

/* Leaf 7 subleaf 0 ECX. */
static const char *const leaf7_ecx[32] = {
    [1] = "avx512vbmi",
    [2] = "umip",
    [3] = "pku",
    [4] = "ospke",
    [5] = "waitpkg",
    [6] = "avx512_vbmi2",
    [7] = "shstk",
    [8] = "gfni",
    [9] = "vaes",
    [10] = "vpclmulqdq",
    [11] = "avx512_vnni",
    [12] = "avx512_bitalg",
    [13] = "tme",
    [14] = "avx512_vpopcntdq",
    [16] = "la57",
    [22] = "rdpid",
    [24] = "bus_lock_detect",
    [25] = "cldemote",
    [27] = "movdiri",
    [28] = "movdir64b",
    [29] = "enqcmd",
    [30] = "sgx_lc",
};

/* Leaf 7 subleaf 0 EDX. */
static const char *const leaf7_edx[32] = {
    [2] = "avx512_4vnniw",
    [3] = "avx512_4fmaps",
    [4] = "fsrm",
    [8] = "avx512_vp2intersect",
    [10] = "md_clear",
    [14] = "serialize",
    [16] = "tsxldtrk",
    [18] = "pconfig",
    [19] = "arch_lbr",
    [20] = "ibt",
    [22] = "amx_bf16",
    [23] = "avx512_fp16",
    [24] = "amx_tile",
    [25] = "amx_int8",
    [26] = "spec_ctrl",
    [27] = "intel_stibp",
    [28] = "flush_l1d",
    [29] = "arch_capabilities",
    [30] = "core_capabilities",
    [31] = "spec_ctrl_ssbd",
};

/* Leaf 7 subleaf 1 EAX. */
static const char *const leaf7_1_eax[32] = {
    [4] = "avx_vnni", [5] = "avx512_bf16", [7] = "cmpccxadd", [10] = "fzrm",
    [11] = "fsrs",    [12] = "fsrc",       [22] = "amx_fp16", [23] = "avx_ifma",
};

/* Leaf 0xd subleaf 0 EAX: the state components XSAVE manages (XCR0 bits). */
static const char *const leafd_eax[32] = {
    [0] = "xstate_x87",       [1] = "xstate_sse",        [2] = "xstate_avx",
    [3] = "xstate_bndregs",   [4] = "xstate_bndcsr",     [5] = "xstate_opmask",
    [6] = "xstate_zmm_hi256", [7] = "xstate_hi16_zmm",   [9] = "xstate_pkru",
    [17] = "xstate_xtilecfg", [18] = "xstate_xtiledata",
};

/* Leaf 0xd subleaf 1 EAX. */
static const char *const leafd_1_eax[32] = {
    [0] = "xsaveopt", [1] = "xsavec", [2] = "xgetbv1", [3] = "xsaves", [4] = "xfd",
};

/* Leaf 0x40000001 EAX: KVM's paravirtual features. */
static const char *const kvm_eax[32] = {
    [0] = "kvmclock",
    [1] = "nopiodelay",
    [2] = "mmu_op",
    [3] = "kvmclock2",
    [4] = "async_pf",
    [5] = "steal_time",
    [6] = "pv_eoi",
    [7] = "pv_unhalt",
    [9] = "pv_tlb_flush",
    [10] = "async_pf_vmexit",
    [11] = "pv_send_ipi",
    [12] = "poll_control",
    [13] = "pv_sched_yield",
    [14] = "async_pf_int",
    [15] = "msi_ext_dest_id",
    [16] = "hc_map_gpa_range",
    [17] = "migration_control",
    [24] = "clocksource_stable",
};

/* Leaf 0x80000001 ECX. */
static const char *const ext1_ecx[32] = {
    "lahf_lm",    "cmp_legacy",  "svm",
    "extapic",    "cr8_legacy",  "abm",
    "sse4a",      "misalignsse", "3dnowprefetch",
    "osvw",       "ibs",         "xop",
    "skinit",     "wdt",         NULL,
    "lwp",        "fma4",        "tce",
    NULL,         "nodeid_msr",  NULL,
    "tbm",        "topoext",     "perfctr_core",
    "perfctr_nb", NULL,          "bpext",
    "ptsc",       "perfctr_llc", "mwaitx",
};

/*
 * Leaf 0x80000001 EDX. AMD repeats most of leaf 1 EDX here; those bits keep a name of their
 * own so that a missing one is not mistaken for the leaf 1 bit.
 */
static const char *const ext1_edx[32] = {
    [0] = "ext_fpu",  [1] = "ext_vme",    [2] = "ext_de",    [3] = "ext_pse",  [4] = "ext_tsc",
    [5] = "ext_msr",  [6] = "ext_pae",    [7] = "ext_mce",   [8] = "ext_cx8",  [9] = "ext_apic",
    [11] = "syscall", [12] = "ext_mtrr",  [13] = "ext_pge",  [14] = "ext_mca", [15] = "ext_cmov",
    [16] = "ext_pat", [17] = "ext_pse36", [19] = "mp",       [20] = "nx",      [22] = "mmxext",
    [23] = "ext_mmx", [24] = "ext_fxsr",  [25] = "fxsr_opt", [26] = "pdpe1gb", [27] = "rdtscp",
    [29] = "lm",      [30] = "3dnowext",  [31] = "3dnow",
};

/* Leaf 0x80000007 EDX. */
static const char *const ext7_edx[32] = {
    [8] = "invtsc",
};

/* Leaf 0x80000008 EBX. */
static const char *const ext8_ebx[32] = {
    [0] = "clzero",    [1] = "irperf",     [2] = "xsaveerptr",  [4] = "rdpru",
    [9] = "wbnoinvd",  [12] = "amd_ibpb",  [14] = "amd_ibrs",   [15] = "amd_stibp",
    [24] = "amd_ssbd", [25] = "virt_ssbd", [26] = "amd_ssb_no",
};

/*
 * Bits the VMM or the guest itself sets, not the host: KVM's copy of the table follows the
 * guest's CR4 (OSXSAVE, OSPKE) and MISC_ENABLE (MONITOR), lib sets HYPERVISOR and HTT
 * (vcpu.c), and the local APIC, x2APIC and TSC-deadline timer are KVM's own emulation, there
 * on every host. A snapshot may hold them whatever the host can do.
 */
static const MvmCpuidRegister feature_registers[] = {
    {0x1, 0, MVM_CPUID_EDX, (1U << 9) | (1U << 28), leaf1_edx},
    {0x1, 0, MVM_CPUID_ECX, (1U << 3) | (1U << 21) | (1U << 24) | (1U << 27) | (1U << 31),
     leaf1_ecx},
    {0x6, 0, MVM_CPUID_EAX, 0, leaf6_eax},
    {0x7, 0, MVM_CPUID_EBX, 0, leaf7_ebx},
    {0x7, 0, MVM_CPUID_ECX, 1U << 4, leaf7_ecx},
    {0x7, 0, MVM_CPUID_EDX, 0, leaf7_edx},
    {0x7, 1, MVM_CPUID_EAX, 0, leaf7_1_eax},
    {0xd, 0, MVM_CPUID_EAX, 0, leafd_eax},
    {0xd, 1, MVM_CPUID_EAX, 0, leafd_1_eax},
    {0x40000001, 0, MVM_CPUID_EAX, 0, kvm_eax},
    {0x80000001, 0, MVM_CPUID_ECX, 0, ext1_ecx},
    {0x80000001, 0, MVM_CPUID_EDX, 0, ext1_edx},
    {0x80000007, 0, MVM_CPUID_EDX, 0, ext7_edx},
    {0x80000008, 0, MVM_CPUID_EBX, 0, ext8_ebx},
};

const MvmCpuidRegister *mvm_cpuid_feature_registers(guint *n)
{
    *n = G_N_ELEMENTS(feature_registers);
    return feature_registers;
}

const char *mvm_cpuid_register_name(MvmCpuidRegisterId reg)
{
    static const char *const names[] = {"eax", "ebx", "ecx", "edx"};

    return reg < G_N_ELEMENTS(names) ? names[reg] : "?";
}

guint32 *mvm_cpuid_entry_register(struct kvm_cpuid_entry2 *entry, MvmCpuidRegisterId reg)
{
    switch (reg) {
    case MVM_CPUID_EAX:
        return &entry->eax;
    case MVM_CPUID_EBX:
        return &entry->ebx;
    case MVM_CPUID_ECX:
        return &entry->ecx;
    case MVM_CPUID_EDX:
    default:
        return &entry->edx;
    }
}

struct kvm_cpuid_entry2 *mvm_cpuid_find(const struct kvm_cpuid2 *cpuid, guint32 leaf,
                                        guint32 subleaf)
{
    for (guint i = 0; i < cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        /* As KVM looks it up: an entry without the flag answers for every subleaf. */
        if (e->function == leaf &&
            (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == subleaf))
            return (struct kvm_cpuid_entry2 *)e;
    }
    return NULL;
}

static guint32 register_value(const struct kvm_cpuid2 *cpuid, const MvmCpuidRegister *r)
{
    struct kvm_cpuid_entry2 *e = mvm_cpuid_find(cpuid, r->leaf, r->subleaf);

    return e != NULL ? *mvm_cpuid_entry_register(e, r->reg) : 0;
}

/* The name of one bit: Linux's, else where it is ("cpuid_7_0_ebx_22"). */
static char *bit_name(const MvmCpuidRegister *r, guint bit)
{
    if (r->names[bit] != NULL)
        return g_strdup(r->names[bit]);
    return g_strdup_printf("cpuid_%x_%x_%s_%u", r->leaf, r->subleaf,
                           mvm_cpuid_register_name(r->reg), bit);
}

static void add_bit_names(GPtrArray *names, const MvmCpuidRegister *r, guint32 bits,
                          gboolean named_only)
{
    for (guint bit = 0; bit < 32; bit++)
        if ((bits & (1U << bit)) && (!named_only || r->names[bit] != NULL))
            g_ptr_array_add(names, bit_name(r, bit));
}

void mvm_cpuid_add_bit_names(GPtrArray *names, guint32 leaf, guint32 subleaf,
                             MvmCpuidRegisterId reg, guint32 bits)
{
    for (gsize i = 0; i < G_N_ELEMENTS(feature_registers); i++) {
        const MvmCpuidRegister *r = &feature_registers[i];
        if (r->leaf == leaf && r->subleaf == subleaf && r->reg == reg) {
            add_bit_names(names, r, bits, FALSE);
            return;
        }
    }
    for (guint bit = 0; bit < 32; bit++)
        if (bits & (1U << bit))
            g_ptr_array_add(names, g_strdup_printf("cpuid_%x_%x_%s_%u", leaf, subleaf,
                                                   mvm_cpuid_register_name(reg), bit));
}

GStrv mvm_cpuid2_feature_names(const struct kvm_cpuid2 *cpuid)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

    for (gsize i = 0; i < G_N_ELEMENTS(feature_registers); i++) {
        const MvmCpuidRegister *r = &feature_registers[i];
        add_bit_names(names, r, register_value(cpuid, r), TRUE);
    }
    g_ptr_array_add(names, NULL);
    return (GStrv)g_ptr_array_free(g_steal_pointer(&names), FALSE);
}

GStrv mvm_cpuid_feature_names(const MvmCpuidEntry *entries, guint n_entries)
{
    g_autofree struct kvm_cpuid2 *cpuid =
        g_malloc0(sizeof(*cpuid) + n_entries * sizeof(cpuid->entries[0]));

    g_return_val_if_fail(entries != NULL || n_entries == 0, NULL);
    cpuid->nent = n_entries;
    for (guint i = 0; i < n_entries; i++) {
        struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        e->function = entries[i].function;
        e->index = entries[i].index;
        e->flags = entries[i].flags;
        e->eax = entries[i].eax;
        e->ebx = entries[i].ebx;
        e->ecx = entries[i].ecx;
        e->edx = entries[i].edx;
    }
    return mvm_cpuid2_feature_names(cpuid);
}

char *mvm_cpuid_missing_features(const struct kvm_cpuid2 *seen, const struct kvm_cpuid2 *available,
                                 const struct kvm_cpuid2 *also_available)
{
    g_autoptr(GPtrArray) missing = g_ptr_array_new_with_free_func(g_free);

    for (gsize i = 0; i < G_N_ELEMENTS(feature_registers); i++) {
        const MvmCpuidRegister *r = &feature_registers[i];
        guint32 have = register_value(available, r) |
                       (also_available != NULL ? register_value(also_available, r) : 0);
        guint32 lacking = register_value(seen, r) & ~have & ~r->managed;
        add_bit_names(missing, r, lacking, FALSE);
    }
    if (missing->len == 0)
        return NULL;
    g_ptr_array_add(missing, NULL);
    return g_strjoinv(", ", (char **)missing->pdata);
}

gboolean mvm_cpuid_check_supported(const struct kvm_cpuid2 *seen, const char *what, GError **error)
{
    const MvmKvm *kvm = mvm_kvm_get(error);
    const struct kvm_cpuid2 *effective = kvm != NULL ? mvm_kvm_effective_cpuid(error) : NULL;

    if (effective == NULL)
        return FALSE;
    /*
     * Either table: kvm_pvm shows the host's CPUID beyond its supported set, but not the
     * features KVM emulates that the host's CPU lacks (ARCH_CAPABILITIES on AMD), which a guest
     * still has.
     */
    g_autofree char *missing = mvm_cpuid_missing_features(seen, effective, kvm->supported_cpuid);
    if (missing == NULL)
        return TRUE;
    g_set_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU,
                "%s CPU features this host's KVM cannot give: %s", what, missing);
    return FALSE;
}
