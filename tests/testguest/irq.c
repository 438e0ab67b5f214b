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
#define IOAPIC_REGSEL 0x00
#define IOAPIC_WIN    0x10
#define IOAPIC_VER    0x01
#define IOAPIC_REDTBL 0x10
#define PIC1_DATA     0x21
#define PIC2_DATA     0xa1

u64 irq_saved_rsp;
static void (*irq_handler)(void);

void irq_entry(void);
void irq_record(void);

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
        "    mov irq_saved_rsp(%rip), %rsp\n"
        "    sub $8, %rsp\n" /* 16-byte aligned at the call */
        "    call irq_record\n"
        "    add $8, %rsp\n"
        "    pop %r15\n    pop %r14\n    pop %r13\n    pop %r12\n    pop %rbp\n    pop %rbx\n"
        "    ret\n");

void irq_record(void)
{
    irq_handler();
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_EOI, 0);
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

bool irq_setup(const char *what, u32 gsi, u8 vector, void (*handler)(void))
{
    u32 pins = ((ioapic_read(IOAPIC_VER) >> 16) & 0xff) + 1;

    if (gsi >= pins) {
        fail("%s: expected a GSI below %u (the IOAPIC's pins) got %u", what, pins, gsi);
        return false;
    }
    irq_handler = handler;
    outb(PIC1_DATA, 0xff); /* the 8259s see the low GSIs too: keep them quiet */
    outb(PIC2_DATA, 0xff);
    cpu_set_idt_gate(vector, irq_entry, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_TPR, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious vector 0xff */
    u32 bsp = mmio_read32(MVM_LAPIC_ADDR + LAPIC_ID) >> 24;
    ioapic_write(IOAPIC_REDTBL + 2 * gsi + 1, bsp << 24); /* destination first, then unmask */
    ioapic_write(IOAPIC_REDTBL + 2 * gsi, vector);        /* fixed, edge, high, unmasked */
    return true;
}
