/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=reset: asks the i8042 for a CPU reset (command 0xfe, pulse the reset line). Whatever the
 * VMM does next (reboot or stop), this run must not go on. The reboot runs the same command
 * line, so the host should stop the VM after the first reset (count boots by marker 1).
 */
#include "guest.h"

bool mode_reset(void)
{
    gprintf("RESET now\n");
    outb(MVM_I8042_COMMAND_PORT, 0xfe);
    tsc_delay_us(1000000);
    fail("reset: expected a reset got still running 1 s later");
    return false;
}
