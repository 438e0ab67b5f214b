/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=cpuid (for the CPU template tests): prints what CPUID tells this guest, one line per
 * (leaf, subleaf) that the CPU template tests look at, so the host can compare the guest's
 * view with the table it gave KVM:
 *   "CPUID 0x<leaf> 0x<subleaf> 0x<eax> 0x<ebx> 0x<ecx> 0x<edx>"
 * A leaf above the maximum its range announces (CPUID.0:EAX for the basic leaves,
 * CPUID.0x80000000:EAX for the extended ones) is not printed: the CPU would answer it with
 * another leaf's data (Intel SDM vol. 2A, CPUID, "If a value entered ... is higher than the
 * maximum input value").
 * With `stay=1` it does not end: after "CPUID staying" it parks in `cli; hlt`, so the host can
 * read the vCPU's CPU configuration while the VM is running or paused.
 */
#include "guest.h"

#define EXTENDED_BASE 0x80000000u

static const struct {
    u32 leaf, subleaf;
} cpuid_queries[] = {
    {0, 0},   {1, 0},          {6, 0},          {7, 0},          {7, 1},          {0xd, 0},
    {0xd, 1}, {0x80000000, 0}, {0x80000001, 0}, {0x80000007, 0}, {0x80000008, 0},
};

static void cpuid_count(u32 leaf, u32 subleaf, u32 regs[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(regs[0]), "=b"(regs[1]), "=c"(regs[2]), "=d"(regs[3])
                     : "a"(leaf), "c"(subleaf));
}

static u32 max_leaf(u32 range)
{
    u32 regs[4];

    cpuid_count(range, 0, regs);
    return regs[0];
}

bool mode_cpuid(void)
{
    u32 max_basic = max_leaf(0), max_extended = max_leaf(EXTENDED_BASE);

    for (unsigned i = 0; i < ARRAY_SIZE(cpuid_queries); i++) {
        u32 leaf = cpuid_queries[i].leaf, regs[4];

        if (leaf > (leaf >= EXTENDED_BASE ? max_extended : max_basic))
            continue;
        cpuid_count(leaf, cpuid_queries[i].subleaf, regs);
        gprintf("CPUID 0x%08x 0x%x 0x%08x 0x%08x 0x%08x 0x%08x\n", leaf, cpuid_queries[i].subleaf,
                regs[0], regs[1], regs[2], regs[3]);
    }
    if (arg_u64("stay", 0)) {
        gprintf("CPUID staying\n");
        /* Interrupts off: the vCPU sleeps in KVM_RUN until the VMM kicks it (as mode=idle). */
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    pass("cpuid");
    return true;
}
