/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=iotest: round trips through the test device. Port MVM_TESTDEV_PORT (32-bit) and the MMIO
 * scratch register at MVM_TESTDEV_MMIO_ADDR + 0 (32- and 64-bit accesses) read back the bitwise
 * NOT of the last write; MVM_TESTDEV_MMIO_ADDR + 8 is a 64-bit access counter.
 * Args: iterations (default 1000) round trips of each kind.
 */
#include "guest.h"

#define MMIO_SCRATCH (MVM_TESTDEV_MMIO_ADDR + 0)
#define MMIO_COUNTER (MVM_TESTDEV_MMIO_ADDR + 8)

static u64 value(u64 i)
{
    u64 v = (i + 1) * 0x9e3779b97f4a7c15ULL;
    return v ^ (v >> 29);
}

static bool pio(u64 iterations)
{
    u64 t0 = rdtsc();
    for (u64 i = 0; i < iterations; i++) {
        u32 v = (u32)value(i);
        outl(MVM_TESTDEV_PORT, v);
        u32 got = inl(MVM_TESTDEV_PORT);
        if (got != (u32)~v) {
            fail("pio: round trip %lu: expected 0x%x got 0x%x", i, (u32)~v, got);
            return false;
        }
    }
    gprintf("IOTEST pio rounds %lu tsc %lu\n", iterations, rdtsc() - t0);
    pass("pio");
    return true;
}

static bool mmio(u64 iterations)
{
    u64 before = mmio_read64(MMIO_COUNTER);
    u64 t0 = rdtsc();

    for (u64 i = 0; i < iterations; i++) {
        u32 v = (u32)value(i);
        mmio_write32(MMIO_SCRATCH, v);
        u32 got = mmio_read32(MMIO_SCRATCH);
        if (got != (u32)~v) {
            fail("mmio: 32-bit round trip %lu: expected 0x%x got 0x%x", i, (u32)~v, got);
            return false;
        }
    }
    u64 t1 = rdtsc();
    for (u64 i = 0; i < iterations; i++) {
        u64 v = value(i + iterations);
        mmio_write64(MMIO_SCRATCH, v);
        u64 got = mmio_read64(MMIO_SCRATCH);
        if (got != ~v) {
            fail("mmio: 64-bit round trip %lu: expected 0x%lx got 0x%lx", i, ~v, got);
            return false;
        }
    }
    u64 t2 = rdtsc();
    u64 after = mmio_read64(MMIO_COUNTER);
    gprintf("IOTEST mmio32 rounds %lu tsc %lu\n", iterations, t1 - t0);
    gprintf("IOTEST mmio64 rounds %lu tsc %lu\n", iterations, t2 - t1);
    gprintf("IOTEST mmio counter %lu -> %lu\n", before, after);
    if (after <= before) {
        fail("mmio: expected the access counter to grow from %lu got %lu", before, after);
        return false;
    }
    pass("mmio");
    return true;
}

bool mode_iotest(void)
{
    u64 iterations = arg_u64("iterations", 1000);
    bool ok = pio(iterations);
    ok &= mmio(iterations);
    return ok;
}
