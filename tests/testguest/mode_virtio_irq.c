/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=virtioirq: virtio interrupts end to end, through KVM's irqfd, the in-kernel IOAPIC and the
 * LAPIC, instead of polling. Uses the first virtio-rng device: its GSI is MVM_VIRTIO_IRQ_BASE +
 * its MMIO slot. The IOAPIC pin gets vector IRQ_VECTOR (edge, active high, to APIC ID 0), the
 * 8259s are masked, the LAPIC is software-enabled. Each of `rounds` (8) requests is made while
 * interrupts are off; the guest then waits in `sti; hlt` for the interrupt.
 *
 * KVM's instruction emulator (our CI's nested KVM runs guest CPL0 code in it) cannot return
 * with IRETQ, so the handler never returns: irq_wait() saves its stack and the handler
 * resumes there, like longjmp, with interrupts still off (an interrupt gate clears IF).
 */
#include "virtio.h"

#define IRQ_VECTOR    0x40
#define LAPIC_TPR     0x80
#define LAPIC_EOI     0xb0
#define LAPIC_SVR     0xf0
#define IOAPIC_REGSEL 0x00
#define IOAPIC_WIN    0x10
#define IOAPIC_REDTBL 0x10
#define PIC1_DATA     0x21
#define PIC2_DATA     0xa1

u64 irq_saved_rsp;
static struct vdev dev;
static volatile u32 irq_count, irq_isr;

void irq_wait(void);
void irq_entry(void);
void irq_record(void);

/* irq_wait: callee-saved registers and the stack go aside, then sti; hlt. irq_entry comes back
 * to them from the interrupt, dropping the interrupt frame. */
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
    u32 isr = vio_read(&dev, VIO_INT_STATUS);

    vio_write(&dev, VIO_INT_ACK, isr);
    irq_isr |= isr;
    irq_count++;
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_EOI, 0);
}

static void ioapic_write(u32 reg, u32 value)
{
    mmio_write32(MVM_IOAPIC_ADDR + IOAPIC_REGSEL, reg);
    mmio_write32(MVM_IOAPIC_ADDR + IOAPIC_WIN, value);
}

static void irq_setup(u32 gsi)
{
    outb(PIC1_DATA, 0xff); /* the 8259s see the low GSIs too: keep them quiet */
    outb(PIC2_DATA, 0xff);
    cpu_set_idt_gate(IRQ_VECTOR, irq_entry, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_TPR, 0);
    mmio_write32(MVM_LAPIC_ADDR + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious vector 0xff */
    ioapic_write(IOAPIC_REDTBL + 2 * gsi + 1, 0);           /* destination APIC ID 0 */
    ioapic_write(IOAPIC_REDTBL + 2 * gsi, IRQ_VECTOR);      /* fixed, edge, high, unmasked */
}

bool mode_virtioirq(void)
{
    u32 rounds = (u32)arg_u64("rounds", 8);

    if (!virtio_find(4, 0, &dev)) {
        fail("virtioirq: no virtio-rng device");
        return false;
    }
    if (!virtio_setup(&dev, 0, 1))
        return false;
    u32 gsi = (u32)((dev.base - MVM_VIRTIO_MMIO_BASE) / MVM_VIRTIO_MMIO_SIZE) + MVM_VIRTIO_IRQ_BASE;
    irq_setup(gsi);
    u8 *buf = vio_page();
    for (u32 i = 0; i < rounds; i++) {
        struct vbuf b = {(u64)buf, 16, true};
        vq_add(&dev.q[0], &b, 1);
        vq_kick(&dev, &dev.q[0]);
        irq_wait();
        if (!vq_has_used(&dev.q[0])) {
            fail("virtioirq: interrupt %u came before the used buffer", i);
            return false;
        }
        u32 id, len;
        vq_wait(&dev, &dev.q[0], &id, &len, 1000);
    }
    gprintf("IRQ gsi %u vector 0x%x count %u isr 0x%x\n", gsi, IRQ_VECTOR, irq_count, irq_isr);
    bool ok = check_u64("virtioirq-count", rounds, irq_count);
    return ok && check_u64("virtioirq-isr", 1, irq_isr & 1);
}
