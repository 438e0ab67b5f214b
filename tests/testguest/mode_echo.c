/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=echo: prints "READY", then echoes every byte it reads from the serial port until a line
 * reading "quit" (ended by \n or \r) arrives.
 */
#include "guest.h"

bool mode_echo(void)
{
    char line[64];
    unsigned n = 0;
    bool overflow = false;

    gprintf("READY\n");
    for (;;) {
        int c = serial_getc();
        serial_lock();
        serial_putc((char)c);
        serial_unlock();
        if (c == '\n' || c == '\r') {
            if (!overflow && n == 4 && !memcmp(line, "quit", 4)) {
                if (c == '\r')
                    gprintf("\n");
                break;
            }
            n = 0;
            overflow = false;
        } else if (n < sizeof(line)) {
            line[n++] = (char)c;
        } else {
            overflow = true;
        }
    }
    pass("echo");
    return true;
}
