/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=virtioirq: virtio interrupts end to end, through KVM's irqfd, the in-kernel IOAPIC and the
 * LAPIC, instead of polling. Uses the first virtio-rng device: its GSI is MVM_VIRTIO_IRQ_BASE +
 * its MMIO slot. The IOAPIC pin gets vector IRQ_VECTOR (edge, active high, to APIC ID 0), the
 * 8259s are masked, the LAPIC is software-enabled. Each of `rounds` (8) requests is made while
 * interrupts are off; the guest then waits in `sti; hlt` for the interrupt.
 * (irq.c: how the handler returns without IRETQ.)
 */
#include "virtio.h"

#define IRQ_VECTOR 0x40

static struct vdev dev;
static volatile u32 irq_count, irq_isr;

static void irq_record_virtio(void)
{
    u32 isr = vio_read(&dev, VIO_INT_STATUS);

    vio_write(&dev, VIO_INT_ACK, isr);
    irq_isr |= isr;
    irq_count++;
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
    if (!irq_setup("virtioirq", gsi, IRQ_VECTOR, irq_record_virtio))
        return false;
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
