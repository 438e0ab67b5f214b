/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=triplefault: an IDT with limit 0, then UD2: #UD cannot be delivered (#GP), nor can the
 * #GP (#DF), nor the #DF: shutdown (KVM_EXIT_SHUTDOWN). Where KVM emulates guest CPL0 code, the
 * emulator decodes neither UD2 nor a long-mode INT3 and exits with KVM_EXIT_INTERNAL_ERROR
 * instead (docs/kvm-hosts.md); the VMM must mark the VM crashed either way.
 */
#include "guest.h"

bool mode_triplefault(void)
{
    static const struct {
        u16 limit;
        u64 base;
    } __attribute__((packed)) empty_idt = {0, 0};

    gprintf("TRIPLEFAULT now\n");
    __asm__ volatile("lidt %0\n\tud2" : : "m"(empty_idt) : "memory");
    fail("triplefault: expected a shutdown got still running");
    return false;
}
