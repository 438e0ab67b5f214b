/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=sandbox thread=vcpu|io: asks the host (a test build's sandbox probe port) to make its
 * vCPU thread, or the VM's I/O thread, try a system call the thread's sandbox forbids, as a
 * device taken over by a guest would. The host must crash the VM; if it is still running a
 * second later, the sandbox let the call through or the probe is missing.
 */
#include "guest.h"

bool mode_sandbox(void)
{
    const char *thread = arg_str("thread", "vcpu");
    u8 probe = strcmp(thread, "io") == 0 ? 2 : 1;

    gprintf("SANDBOX probing %s\n", probe == 2 ? "io" : "vcpu");
    outb(MVM_TESTDEV_SANDBOX_PORT, probe);
    tsc_delay_us(1000000);
    fail("sandbox: expected the VM to crash got still running 1 s later");
    return false;
}
