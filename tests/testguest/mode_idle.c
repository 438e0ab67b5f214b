/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=idle: says so and parks in `cli; hlt`. With the in-kernel irqchip a HLT with interrupts
 * off never comes back to userspace, so the vCPU thread sleeps in KVM_RUN: benchmarks can keep
 * hundreds of VMs alive without spending host CPU. Only the VMM's stop (a signal) ends it.
 */
#include "guest.h"

bool mode_idle(void)
{
    gprintf("IDLE\n");
    for (;;)
        __asm__ volatile("cli; hlt");
    return false;
}
