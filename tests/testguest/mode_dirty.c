/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=dirty (for diff snapshot tests): writes exactly the pages the host names, so a diff's
 * page set can be checked page by page. Prints "DIRTY ready", then reads commands from the
 * console, one per line: hex guest-physical addresses separated by spaces (none: an empty
 * line). For each it writes one 8-byte word (the address XOR the command's number) at that
 * address, then prints "DIRTY wrote <count> round <n>". An address that is not RAM, or a word
 * that is not 8-byte aligned, prints a FAIL line and is skipped. Besides those words the guest
 * writes only its own image (stack, variables) below 4 MiB.
 *
 * A line "r START END STRIDE" (hex, 0x...) reads instead (for lazy restore tests): it adds up
 * the 8-byte words at START, START + STRIDE, ... below END and prints
 * "DIRTY sum 0x<sum> round <n>"; a range that is not RAM or not aligned prints a FAIL line.
 */
#include "guest.h"

static bool hex_digit(char c, u64 *d)
{
    if (c >= '0' && c <= '9')
        *d = (u64)(c - '0');
    else if (c >= 'a' && c <= 'f')
        *d = (u64)(c - 'a' + 10);
    else
        return false;
    return true;
}

/* The next "0x..." of @line from *@pos; false at the end. */
static bool next_address(const char *line, u32 *pos, u64 *addr)
{
    while (line[*pos] == ' ')
        (*pos)++;
    if (line[*pos] != '0' || line[*pos + 1] != 'x')
        return false;
    *pos += 2;
    u64 v = 0, d;
    while (hex_digit(line[*pos], &d)) {
        v = v * 16 + d;
        (*pos)++;
    }
    *addr = v;
    return true;
}

static u32 run_command(const char *line, u64 round)
{
    u32 pos = 0, count = 0;
    u64 addr;

    while (next_address(line, &pos, &addr)) {
        if (addr % 8 != 0 || !range_is_ram(addr, addr + 8)) {
            fail("dirty: expected an aligned RAM address got 0x%lx", addr);
            continue;
        }
        *(volatile u64 *)addr = addr ^ round;
        count++;
    }
    return count;
}

static void run_read(const char *line, u64 round)
{
    u32 pos = 1;
    u64 start, end, stride, sum = 0;

    if (!next_address(line, &pos, &start) || !next_address(line, &pos, &end) ||
        !next_address(line, &pos, &stride) || stride == 0 || stride % 8 != 0 || start % 8 != 0 ||
        end < start || !range_is_ram(start, end)) {
        fail("dirty: expected r START END STRIDE over aligned RAM");
        return;
    }
    for (u64 addr = start; addr + 8 <= end; addr += stride)
        sum += *(volatile u64 *)addr;
    gprintf("DIRTY sum 0x%lx round %lu\n", sum, round);
}

bool mode_dirty(void)
{
    char line[512];
    u32 n = 0;
    u64 round = 0;

    gprintf("DIRTY ready\n");
    for (;;) {
        int c = serial_getc();
        if (c != '\n' && c != '\r') {
            if (n < sizeof(line) - 1)
                line[n++] = (char)c;
            continue;
        }
        line[n] = 0;
        n = 0;
        round++;
        if (line[0] == 'r') {
            run_read(line, round);
            continue;
        }
        u32 count = run_command(line, round);
        gprintf("DIRTY wrote %u round %lu\n", count, round);
    }
}
