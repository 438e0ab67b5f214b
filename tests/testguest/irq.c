/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Waiting for one interrupt from an IOAPIC pin (guest.h: irq_setup(), irq_wait()). The pin
 * gets a vector (edge, active high, fixed delivery to the BSP: 82093AA IOAPIC datasheet
 * §3.2.4), the 8259s are masked, the LAPIC is software-enabled.
 *
 * KVM's instruction emulator (our CI's nested KVM runs guest CPL0 code in it) cannot return
 * with IRETQ, so the handler never returns: irq_wait() saves its stack and the handler resumes
 * there, like longjmp, with interrupts still off (an interrupt gate clears IF). Callers check
 * their condition with interrupts off and only then wait, so no interrupt is missed between.
 */
#include "guest.h"

#define LAPIC_ID      0x20
#define LAPIC_TPR     0x80
#define LAPIC_EOI     0xb0
#define LAPIC_SVR     0xf0
#define LAPIC_LVT_TMR 0x320
#define LAPIC_TMR_ICR 0x380
#define LAPIC_TMR_DCR 0x3e0
/* KVM's (and QEMU's) LAPIC timer counts at 1 GHz with the divider at 1 (DCR 0xb). */
#define LAPIC_TICKS_PER_MS 1000000ULL
#define IOAPIC_REGSEL      0x00
#define IOAPIC_WIN         0x10
#define IOAPIC_VER         0x01
#define IOAPIC_REDTBL      0x10
#define PIC1_DATA          0x21
#define PIC2_DATA          0xa1

u64 irq_saved_rsp;
static void (*irq_handler)(void);

void irq_entry(void);
void irq_wake_entry(void);
void irq_record(void);
void irq_eoi(void);

/*
 * irq_entry calls the handler irq_setup() was given, then EOIs; irq_wake_entry only EOIs (a
 * wake-up whose cause the caller checks itself). Both resume irq_wait()'s caller.
 */
__asm__(".text\n"
        ".globl irq_wait\n"
        "irq_wait:\n"
        "    push %rbx\n    push %rbp\n    push %r12\n    push %r13\n    push %r14\n    push %r15\n"
        "    mov %rsp, irq_saved_rsp(%rip)\n"
        "    sti\n"
        "    hlt\n"
        "1:  hlt\n    jmp 1b\n"
        ".globl irq_entry\n"
        "irq_entry:\n"
        "    lea irq_record(%rip), %rax\n"
        "    jmp 2f\n"
        ".globl irq_wake_entry\n"
        "irq_wake_entry:\n"
        "    lea irq_eoi(%rip), %rax\n"
        "2:  mov irq_saved_rsp(%rip), %rsp\n"
        "    sub $8, %rsp\n" /* 16-byte aligned at the call */
        "    call *%rax\n"
        "    add $8, %rsp\n"
        "    pop %r15\n    pop %r14\n    pop %r13\n    pop %r12\n    pop %rbp\n    pop %rbx\n"
        "    ret\n");

void irq_eoi(void)
{
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_EOI, 0);
}

void irq_record(void)
{
    irq_handler();
    irq_eoi();
}

/* @vector to @entry, the 8259s masked (they see the low GSIs, and QEMU's PIT), LAPIC on. */
static void lapic_enable(u8 vector, void (*entry)(void))
{
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    cpu_set_idt_gate(vector, entry, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_TPR, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious vector 0xff */
}

static void ioapic_write(u32 reg, u32 value)
{
    mmio_write32(MVM_IOAPIC_ADDR + IOAPIC_REGSEL, reg);
    mmio_write32(MVM_IOAPIC_ADDR + IOAPIC_WIN, value);
}

static u32 ioapic_read(u32 reg)
{
    mmio_write32(MVM_IOAPIC_ADDR + IOAPIC_REGSEL, reg);
    return mmio_read32(MVM_IOAPIC_ADDR + IOAPIC_WIN);
}

static bool ioapic_route(const char *what, u32 gsi, u8 vector, void (*entry)(void))
{
    u32 pins = ((ioapic_read(IOAPIC_VER) >> 16) & 0xff) + 1;

    if (gsi >= pins) {
        fail("%s: expected a GSI below %u (the IOAPIC's pins) got %u", what, pins, gsi);
        return false;
    }
    lapic_enable(vector, entry);
    u32 bsp = mmio_read32(MVM_LAPIC_ADDR + LAPIC_ID) >> 24;
    ioapic_write(IOAPIC_REDTBL + 2 * gsi + 1, bsp << 24); /* destination first, then unmask */
    ioapic_write(IOAPIC_REDTBL + 2 * gsi, vector);        /* fixed, edge, high, unmasked */
    return true;
}

bool irq_setup(const char *what, u32 gsi, u8 vector, void (*handler)(void))
{
    irq_handler = handler;
    return ioapic_route(what, gsi, vector, irq_entry);
}

bool irq_setup_wake(const char *what, u32 gsi, u8 vector)
{
    return ioapic_route(what, gsi, vector, irq_wake_entry);
}

void lapic_timer_setup(u8 vector)
{
    lapic_enable(vector, irq_wake_entry);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_TMR_DCR, 0xb);    /* divide by 1 */
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_LVT_TMR, vector); /* one-shot, unmasked */
}

void lapic_sleep_ms(u64 ms)
{
    u64 ticks = ms * LAPIC_TICKS_PER_MS;

    mmio_write32(MVM_LAPIC_ADDR + LAPIC_TMR_ICR, ticks > 0xffffffffULL ? 0xffffffffU : (u32)ticks);
    irq_wait();
}
