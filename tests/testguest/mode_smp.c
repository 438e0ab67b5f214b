/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=smp: the BSP starts the APs with INIT-SIPI-SIPI (SDM vol. 3, 9.4.4 "MP Initialization
 * Example"; MP spec 1.4 B.4) through the xAPIC, each AP reports "AP <apic id> up", and the BSP
 * waits for them. Args: expect_cpus (default: the MADT's count), timeout_ms (default 10000).
 */
#include "guest.h"

#define LAPIC_ID             0x20
#define LAPIC_SVR            0xf0
#define LAPIC_ICR_LO         0x300
#define LAPIC_ICR_HI         0x310
#define ICR_DELIVERY_PENDING (1u << 12)
#define ICR_LEVEL_ASSERT     (1u << 14)
#define ICR_ALL_BUT_SELF     (3u << 18)
#define ICR_INIT             (5u << 8)
#define ICR_STARTUP          (6u << 8)
#define MSR_EFER             0xc0000080
#define EFER_SCE             (1ULL << 0)
#define EFER_LME             (1ULL << 8)
#define EFER_NXE             (1ULL << 11)

extern const u8 trampoline_start[], trampoline_end[], trampoline_cr3[], trampoline_efer[];

volatile u32 ap_next_index; /* claimed by the trampoline */
static volatile u32 aps_up;

static u32 lapic_read(u32 reg)
{
    return mmio_read32(MVM_LAPIC_ADDR + reg);
}

static void lapic_write(u32 reg, u32 v)
{
    mmio_write32(MVM_LAPIC_ADDR + reg, v);
}

static bool send_ipi(u32 icr_lo)
{
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, icr_lo);
    u64 deadline = tsc_deadline_ms(100);
    while (lapic_read(LAPIC_ICR_LO) & ICR_DELIVERY_PENDING)
        if (tsc_passed(deadline))
            return false;
    return true;
}

noreturn void ap_main(u32 index);

noreturn void ap_main(u32 index)
{
    cpu_load_ap();
    u32 id = lapic_read(LAPIC_ID) >> 24;
    gprintf("AP %u up\n", id);
    (void)index;
    atomic_inc_u32(&aps_up);
    /* Park. HLT with interrupts off is fine for an AP: the BSP ends the VM. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void copy_trampoline(void)
{
    u8 *dst = (u8 *)TRAMPOLINE_ADDR;
    u32 cr3 = (u32)read_cr3();
    u32 efer = (u32)((rdmsr(MSR_EFER) & (EFER_SCE | EFER_NXE)) | EFER_LME);

    memcpy(dst, trampoline_start, (size_t)(trampoline_end - trampoline_start));
    memcpy(dst + (trampoline_cr3 - trampoline_start), &cr3, 4);
    memcpy(dst + (trampoline_efer - trampoline_start), &efer, 4);
}

bool mode_smp(void)
{
    u64 expect = arg_u64("expect_cpus", 0);
    u64 timeout_ms = arg_u64("timeout_ms", 10000);

    if (!expect) {
        struct acpi_info a;
        if (acpi_scan(&a) && a.madt_ok)
            expect = a.n_lapics;
        if (!expect) {
            fail("smp: expected expect_cpus=N or an MADT got neither");
            return false;
        }
    }
    if (read_cr3() >= 0x100000000ULL) {
        fail("smp: expected page tables below 4 GiB got cr3=0x%lx", read_cr3());
        return false;
    }

    lapic_write(LAPIC_SVR, 0x1ff); /* software-enable the LAPIC, spurious vector 0xff */
    u32 bsp = lapic_read(LAPIC_ID) >> 24;
    gprintf("SMP bsp %u expecting %lu cpus\n", bsp, expect);

    if (expect > 1) {
        copy_trampoline();
        u32 vector = TRAMPOLINE_ADDR >> 12;
        bool ok = send_ipi(ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_INIT);
        tsc_delay_us(10000);
        ok &= send_ipi(ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | vector);
        tsc_delay_us(200);
        ok &= send_ipi(ICR_ALL_BUT_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | vector);
        if (!ok)
            gprintf("SMP warning: an IPI stayed pending\n");

        u64 deadline = tsc_deadline_ms(timeout_ms);
        while (atomic_load_u32(&aps_up) < expect - 1 && !tsc_passed(deadline))
            tsc_delay_us(100);
        /* Catch stragglers beyond the expected count for a moment. */
        tsc_delay_us(10000);
    }

    u64 cpus = 1 + atomic_load_u32(&aps_up);
    if (cpus != expect) {
        fail("smp: expected %lu cpus got %lu", expect, cpus);
        return false;
    }
    gprintf("PASS smp cpus=%lu\n", cpus);
    return true;
}
