/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=ctrlaltdel: a guest that answers the host's graceful shutdown request. It polls the
 * i8042 for the Ctrl-Alt-Del make codes (scan code set 1, as translated by the controller:
 * 0x1d Ctrl, 0x38 Alt, 0xe0 0x53 Delete; set 2 when untranslated: 0x14, 0x11, 0xe0 0x71),
 * prints "CTRL-ALT-DEL", and then does `action`: `reset` (the default; pulse the reset line,
 * as Linux booted with reboot=k does) or `exit` (debug exit 0). Polls every `poll_us` (1000).
 */
#include "guest.h"

#define I8042_STATUS_OBF 0x01

static bool is_delete(u8 prefix, u8 code)
{
    return prefix == 0xe0 && (code == 0x53 || code == 0x71);
}

bool mode_ctrlaltdel(void)
{
    const char *action = arg_str("action", "reset");
    u64 poll_us = arg_u64("poll_us", 1000);
    bool ctrl = false, alt = false;
    u8 prev = 0;

    gprintf("WAITING for ctrl-alt-del\n");
    for (;;) {
        u8 code;

        if (!(inb(MVM_I8042_COMMAND_PORT) & I8042_STATUS_OBF)) {
            tsc_delay_us(poll_us);
            continue;
        }
        code = inb(MVM_I8042_DATA_PORT);
        ctrl = ctrl || code == 0x1d || code == 0x14;
        alt = alt || code == 0x38 || code == 0x11;
        if (ctrl && alt && is_delete(prev, code))
            break;
        prev = code;
    }
    gprintf("CTRL-ALT-DEL\n");
    if (!strcmp(action, "exit"))
        return true;
    outb(MVM_I8042_COMMAND_PORT, 0xfe);
    tsc_delay_us(1000000);
    fail("ctrlaltdel: expected a reset got still running 1 s later");
    return false;
}
