/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The few libc functions the compiler may call, and TSC waits.
 */
#include "guest.h"

void *memset(void *dst, int c, size_t n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    if (d < s)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (u8)*a - (u8)*b;
}

bool str_has_prefix(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return false;
    return true;
}

u64 tsc_deadline_ms(u64 ms)
{
    return rdtsc() + ms * TSC_ASSUMED_KHZ;
}

bool tsc_passed(u64 deadline)
{
    return (int64_t)(rdtsc() - deadline) >= 0;
}

void tsc_delay_us(u64 us)
{
    u64 deadline = rdtsc() + us * (TSC_ASSUMED_KHZ / 1000);
    while (!tsc_passed(deadline))
        cpu_relax();
}

noreturn void guest_exit(u32 code)
{
    outl(MVM_DEBUG_EXIT_PORT, code);
    /* Still here: the VMM has no debug-exit device. HLT with interrupts off would never come
     * back to the VMM (docs/kvm-hosts.md), so spin. */
    for (;;)
        cpu_relax();
}

/* The range must be RAM in the e820 map, and identity-mapped (below 3 GiB). */
bool range_is_ram(u64 start, u64 end)
{
    u8 n = boot_params_ptr ? boot_params_ptr[0x1e8] : 0;
    const u8 *table = boot_params_ptr + 0x2d0;

    for (unsigned i = 0; i < n && i < 128; i++) {
        u64 addr, size;
        u32 type;
        memcpy(&addr, table + 20 * i, 8);
        memcpy(&size, table + 20 * i + 8, 8);
        memcpy(&type, table + 20 * i + 16, 4);
        if (type == 1 && addr <= start && end <= addr + size)
            return end <= MVM_MMIO_GAP_START;
    }
    return false;
}
