/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=kvmclock (for the pause tests): registers a pvclock page with
 * MSR_KVM_SYSTEM_TIME_NEW and reads the clock in a tight loop, to show from
 * inside the guest what a host pause did to it:
 * - PVCLOCK_GUEST_STOPPED (flags bit 1), which KVM sets after the host's
 *   KVM_KVMCLOCK_CTRL; the guest clears it, as Linux does, and counts it;
 * - the largest step of the clock between two consecutive reads (a tick
 *   line's printing included: at CPL0 under emulation that is where the
 *   guest spends its time), about the pause length unless the host froze
 *   the clock.
 * Every `tick_ms` (100) of kvmclock time it prints
 *   "KVMCLOCK tick N ms T maxgap_us G stopped S"   (G: largest step since the last tick)
 * Exits 0 after `ticks` ticks (0 = never).
 * Layout and formula: Linux Documentation/virt/kvm/x86/msr.rst (MSR_KVM_SYSTEM_TIME_NEW,
 * struct pvclock_vcpu_time_info).
 */
#include "guest.h"

#define MSR_KVM_SYSTEM_TIME_NEW  0x4b564d01
#define KVM_CPUID_SIGNATURE      0x40000000
#define KVM_CPUID_FEATURES       0x40000001
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)
#define PVCLOCK_TSC_STABLE_BIT   (1u << 0)
#define PVCLOCK_GUEST_STOPPED    (1u << 1)

struct pvclock_vcpu_time_info {
    u32 version;
    u32 pad0;
    u64 tsc_timestamp;
    u64 system_time;
    u32 tsc_to_system_mul;
    signed char tsc_shift;
    u8 flags;
    u8 pad[2];
} __attribute__((packed));

/* 32 bytes that must not cross a page: aligned to their size. */
static volatile struct pvclock_vcpu_time_info pvclock __attribute__((aligned(32)));

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* Nanoseconds: system_time + ((tsc - tsc_timestamp) << shift) * mul / 2^32, read consistently. */
static u64 kvmclock_ns(void)
{
    u32 version;
    u64 ns;

    do {
        version = pvclock.version;
        __asm__ volatile("" : : : "memory");
        u64 delta = rdtsc() - pvclock.tsc_timestamp;
        signed char shift = pvclock.tsc_shift;
        delta = shift < 0 ? delta >> -shift : delta << shift;
        ns = pvclock.system_time +
             (u64)(((unsigned __int128)delta * pvclock.tsc_to_system_mul) >> 32);
        __asm__ volatile("" : : : "memory");
    } while ((version & 1) || version != pvclock.version);
    return ns;
}

static void describe_kvm(void)
{
    u32 a, b, c, d;
    char sig[13];

    cpuid(KVM_CPUID_SIGNATURE, &a, &b, &c, &d);
    memcpy(sig, &b, 4);
    memcpy(sig + 4, &c, 4);
    memcpy(sig + 8, &d, 4);
    sig[12] = 0;
    cpuid(KVM_CPUID_FEATURES, &a, &b, &c, &d);
    gprintf("KVMCLOCK cpuid %s features 0x%x clocksource2 %s\n", sig, a,
            (a & KVM_FEATURE_CLOCKSOURCE2) ? "yes" : "no");
}

bool mode_kvmclock(void)
{
    u64 tick_ns = arg_u64("tick_ms", 100) * 1000000;
    u64 ticks = arg_u64("ticks", 0);

    if (!tick_ns) {
        fail("kvmclock: expected tick_ms above 0");
        return false;
    }
    describe_kvm();
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (u64)&pvclock | 1);
    if (!pvclock.version || !pvclock.tsc_to_system_mul) {
        fail("kvmclock: expected KVM to fill the pvclock page got version %u mul %u",
             pvclock.version, pvclock.tsc_to_system_mul);
        return false;
    }
    gprintf("KVMCLOCK enabled flags 0x%x\n", pvclock.flags);

    u64 last = kvmclock_ns(), next_tick = last + tick_ns, max_gap = 0, stopped = 0;
    for (u64 tick = 1; !ticks || tick <= ticks;) {
        if (pvclock.flags & PVCLOCK_GUEST_STOPPED) {
            stopped++;
            pvclock.flags &= ~PVCLOCK_GUEST_STOPPED;
        }
        u64 now = kvmclock_ns();
        /* A clock set back would show as a huge unsigned step: count it as 0 and report it. */
        u64 gap = now >= last ? now - last : 0;
        if (now < last)
            gprintf("KVMCLOCK backwards by %lu ns\n", last - now);
        max_gap = gap > max_gap ? gap : max_gap;
        last = now;
        if (now < next_tick)
            continue;
        gprintf("KVMCLOCK tick %lu ms %lu maxgap_us %lu stopped %lu\n", tick, now / 1000000,
                max_gap / 1000, stopped);
        max_gap = 0;
        next_tick = now + tick_ns;
        tick++;
        /* The time spent printing counts into the next step: a pause may well fall into it. */
    }
    pass("kvmclock");
    return true;
}
