/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=pattern (for snapshot tests): fills `pages` pages from `base_mib` MiB up with a pattern
 * that depends on the page and the word, then counts forever: every `every` counts it checks the
 * pattern and prints "COUNTER <n>". Exits 0 once `max` (if given) is reached.
 * Args: pages (64), base_mib (16), every (100), delay (1000 PAUSE loops per count), max (0 =
 * never), verify=sample|full (sample: first, middle and last word of every page, plus every word
 * of one page, a different one each time), idle (0; 1: once the pages are filled and checked,
 * print "PATTERN idle" and halt with interrupts off, costing the host nothing: a guest with data
 * for benchmarks of many clones), sleep_ms (0; N: after each COUNTER line, halt N ms on the
 * LAPIC timer instead of spinning on: many counting guests on few host CPUs).
 */
#include "guest.h"

#define PAGE_WORDS           (MVM_PAGE_SIZE / 8)
#define PATTERN_TIMER_VECTOR 0x41

static u64 pattern_word(u64 addr, u64 page)
{
    return addr ^ (page * 0x9e3779b97f4a7c15ULL) ^ 0x5061747465726e00ULL; /* "Pattern" */
}

static bool check_word(const volatile u64 *p, u64 page)
{
    u64 expected = pattern_word((u64)p, page), got = *p;
    if (got == expected)
        return true;
    fail("pattern: at 0x%lx (page %lu): expected 0x%lx got 0x%lx", (u64)p, page, expected, got);
    return false;
}

static bool verify(u64 base, u64 pages, bool full, u64 round)
{
    for (u64 i = 0; i < pages; i++) {
        volatile u64 *w = (volatile u64 *)(base + i * MVM_PAGE_SIZE);
        if (full || i == round % pages) {
            for (u64 k = 0; k < PAGE_WORDS; k++)
                if (!check_word(w + k, i))
                    return false;
        } else if (!check_word(w, i) || !check_word(w + PAGE_WORDS / 2, i) ||
                   !check_word(w + PAGE_WORDS - 1, i)) {
            return false;
        }
    }
    return true;
}

bool mode_pattern(void)
{
    u64 pages = arg_u64("pages", 64);
    u64 base = arg_u64("base_mib", 16) * MVM_MIB;
    u64 every = arg_u64("every", 100);
    u64 delay = arg_u64("delay", 1000);
    u64 max = arg_u64("max", 0);
    bool full = !strcmp(arg_str("verify", "sample"), "full");
    u64 sleep_ms = arg_u64("sleep_ms", 0);

    if (!pages || !every) {
        fail("pattern: expected pages and every above 0");
        return false;
    }
    if (!range_is_ram(base, base + pages * MVM_PAGE_SIZE)) {
        fail("pattern: expected RAM at 0x%lx-0x%lx got a hole (e820)", base,
             base + pages * MVM_PAGE_SIZE);
        return false;
    }

    for (u64 i = 0; i < pages; i++) {
        u64 *w = (u64 *)(base + i * MVM_PAGE_SIZE);
        for (u64 k = 0; k < PAGE_WORDS; k++)
            w[k] = pattern_word((u64)(w + k), i);
    }
    gprintf("PATTERN filled %lu pages at 0x%lx\n", pages, base);
    if (!verify(base, pages, true, 0))
        return false;
    if (arg_u64("idle", 0)) {
        gprintf("PATTERN idle\n");
        for (;;)
            __asm__ volatile("cli; hlt");
    }

    if (sleep_ms)
        lapic_timer_setup(PATTERN_TIMER_VECTOR);
    /* volatile: the count lives in memory, where a snapshot sees it. */
    static volatile u64 counter;
    counter = 0;
    for (;;) {
        counter = counter + 1;
        for (u64 d = 0; d < delay; d++)
            cpu_relax();
        bool last = max && counter >= max;
        if (counter % every && !last)
            continue;
        if (!verify(base, pages, full, counter / every))
            return false;
        gprintf("COUNTER %lu\n", counter);
        if (last)
            break;
        if (sleep_ms)
            lapic_sleep_ms(sleep_ms);
    }
    pass("pattern");
    return true;
}
