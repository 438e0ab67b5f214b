/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=blk: drives a virtio-blk disk. Args: disk (0: which virtio-blk), sectors (8), writeat (8),
 * seed (1), ro (0: expect a writable disk; 1: expect VIRTIO_BLK_F_RO and writes refused),
 * ioerr (0; 1: the host gave a disk it cannot write, expect VIRTIO_BLK_S_IOERR on writes),
 * pause (0; 1: after the first read print "BLK paused" and wait for a console byte),
 * writefirst (0; 1: write and check the pattern before that pause, and read it back after it).
 * Prints BLK capacity/id/read-sum lines; the host checks the image for the written pattern
 * (blk_pattern_byte, mirrored in tests/vm/test-virtio.c).
 *
 * mode=blkbench: `count` (64) requests of `kib` (64) KiB, reads then writes, from sector 0;
 * markers 0x100/0x101 (reads) and 0x102/0x103 (writes) let the host time them; then 16 × count
 * queue notifies (0x104-0x105) and as many trapped register writes (0x105-0x106).
 *
 * mode=blkloop: writes sector K (K = 0, 1, ...; modulo the capacity) with K in its first 8 bytes
 * and blk_pattern_byte(K, i, 0) in the rest, printing "BLKLOOP wrote K echoed E" once the device
 * completed it (status OK), then waits `delay_ms` (20) before the next; `max` (0 = never) ends it.
 * With echo=1 it echoes the virtio-net frames of mode=net's type (net_echo_pending()) meanwhile,
 * E counting them. K and E live in memory: a guest handed to another VMM counts on.
 */
#include "virtio.h"

#define BLK_F_SEG_MAX (1ULL << 2)
#define BLK_F_RO      (1ULL << 5)
#define BLK_F_FLUSH   (1ULL << 9)
#define BLK_T_IN      0
#define BLK_T_OUT     1
#define BLK_T_FLUSH   4
#define BLK_T_GET_ID  8
#define BLK_S_OK      0
#define BLK_S_IOERR   1

struct blk_req {
    u32 type;
    u32 reserved;
    u64 sector;
};

static struct blk_req *req;
static u8 *status;

static u8 blk_pattern_byte(u64 sector, u32 i, u64 seed)
{
    return (u8)((sector * 131 + i * 7 + seed * 29) ^ (i >> 5));
}

/* One request: header, data (split over two descriptors when large), status. */
static int blk_rw(struct vdev *d, u32 type, u64 sector, void *data, u32 len)
{
    struct vbuf bufs[4];
    unsigned n = 0;
    u32 used;

    req->type = type;
    req->reserved = 0;
    req->sector = sector;
    *status = 0xff;
    bufs[n++] = (struct vbuf){(u64)req, sizeof(*req), false};
    bool write = type == BLK_T_IN || type == BLK_T_GET_ID;
    if (len > 512) {
        bufs[n++] = (struct vbuf){(u64)data, 512, write};
        bufs[n++] = (struct vbuf){(u64)data + 512, len - 512, write};
    } else if (len > 0) {
        bufs[n++] = (struct vbuf){(u64)data, len, write};
    }
    bufs[n++] = (struct vbuf){(u64)status, 1, true};
    if (!vq_request(d, &d->q[0], bufs, n, &used))
        return -1;
    return *status;
}

static bool blk_open(struct vdev *d)
{
    unsigned nth = (unsigned)arg_u64("disk", 0);

    if (!virtio_find(2, nth, d)) {
        fail("blk: no virtio-blk device %u", nth);
        return false;
    }
    if (!virtio_setup(d, BLK_F_SEG_MAX | BLK_F_RO | BLK_F_FLUSH, 1))
        return false;
    req = vio_page();
    status = vio_page();
    return true;
}

static bool check_status(const char *what, int expected, int got)
{
    if (got == expected) {
        pass(what);
        return true;
    }
    fail("%s: expected status %d got %d", what, expected, got);
    return false;
}

static bool write_and_verify(struct vdev *d, u64 at, u64 sectors, u64 seed, u8 *out, u8 *in)
{
    for (u64 s = 0; s < sectors; s++)
        for (u32 i = 0; i < 512; i++)
            out[s * 512 + i] = blk_pattern_byte(at + s, i, seed);
    bool ok = check_status("blk-write", BLK_S_OK, blk_rw(d, BLK_T_OUT, at, out, sectors * 512));
    ok &= check_status("blk-read-back", BLK_S_OK, blk_rw(d, BLK_T_IN, at, in, sectors * 512));
    if (memcmp(in, out, sectors * 512) != 0) {
        fail("blk: read back differs from what was written");
        return false;
    }
    ok &= check_status("blk-flush", BLK_S_OK, blk_rw(d, BLK_T_FLUSH, 0, NULL, 0));
    if (ok)
        pass("blk-write-read");
    return ok;
}

static bool read_again(struct vdev *d, u64 at, u64 sectors, const u8 *written, u8 *in)
{
    memset(in, 0, sectors * 512);
    if (!check_status("blk-read-again", BLK_S_OK, blk_rw(d, BLK_T_IN, at, in, sectors * 512)))
        return false;
    if (memcmp(in, written, sectors * 512) != 0) {
        fail("blk: the disk no longer holds what was written before the pause");
        return false;
    }
    pass("blk-read-after-pause");
    return true;
}

bool mode_blk(void)
{
    struct vdev d;
    u64 sectors = arg_u64("sectors", 8), at = arg_u64("writeat", 8), seed = arg_u64("seed", 1);

    if (sectors == 0 || sectors > 8) /* one 4 KiB page of data each way */
        sectors = 8;
    if (!blk_open(&d))
        return false;
    u64 capacity = *(volatile u64 *)(d.base + VIO_CONFIG);
    u32 seg_max = *(volatile u32 *)(d.base + VIO_CONFIG + 12);
    gprintf("BLK capacity %lu features 0x%lx seg_max %u\n", capacity, d.features, seg_max);

    char *id = vio_page();
    bool ok = check_status("blk-get-id", BLK_S_OK, blk_rw(&d, BLK_T_GET_ID, 0, id, 20));
    gprintf("BLK id %s\n", id);

    u8 *in = vio_page(), *out = vio_page();
    ok &= check_status("blk-read", BLK_S_OK, blk_rw(&d, BLK_T_IN, 0, in, sectors * 512));
    gprintf("BLK read-sum 0x%lx\n", fnv1a(in, sectors * 512, FNV1A_INIT));
    /* What the disk holds before the host saves the VM must be what it reads after. */
    bool early = arg_u64("writefirst", 0) && !arg_u64("ro", 0) && !arg_u64("ioerr", 0);
    if (early)
        ok &= write_and_verify(&d, at, sectors, seed, out, in);
    if (arg_u64("pause", 0)) { /* the host snapshots and restores the VM here */
        gprintf("BLK paused\n");
        serial_getc();
    }

    if (early) {
        ok &= read_again(&d, at, sectors, out, in);
    } else if (arg_u64("ro", 0)) {
        ok &= check_u64("blk-ro-feature", BLK_F_RO, d.features & BLK_F_RO);
        ok &= check_status("blk-ro-write", BLK_S_IOERR, blk_rw(&d, BLK_T_OUT, at, out, 512));
    } else if (arg_u64("ioerr", 0)) {
        ok &= check_status("blk-ioerr", BLK_S_IOERR, blk_rw(&d, BLK_T_OUT, at, out, 512));
    } else {
        ok &= write_and_verify(&d, at, sectors, seed, out, in);
    }
    /* Past the end: an I/O error, not a crash or a short read. */
    ok &= check_status("blk-out-of-range", BLK_S_IOERR, blk_rw(&d, BLK_T_IN, capacity, in, 512));
    gprintf("BLK irq-status-seen 0x%x\n", d.irq_seen);
    ok &= check_u64("blk-irq", 1, d.irq_seen & 1);
    return ok;
}

/* Pages for one large request: the pool is contiguous, so consecutive pages are one buffer. */
bool mode_blkbench(void)
{
    struct vdev d;
    u64 count = arg_u64("count", 64), kib = arg_u64("kib", 64);

    if (kib == 0 || kib > 128)
        kib = 64;
    if (!blk_open(&d))
        return false;
    u8 *buf = vio_page();
    for (u64 i = 1; i < kib / 4; i++)
        vio_page();
    u32 len = (u32)(kib * 1024);
    for (int pass_no = 0; pass_no < 2; pass_no++) {
        u32 type = pass_no == 0 ? BLK_T_IN : BLK_T_OUT;
        u64 start = rdtsc();
        outl(MVM_TESTDEV_MARKER_PORT, 0x100 + 2 * pass_no);
        for (u64 i = 0; i < count; i++)
            if (blk_rw(&d, type, i * (len / 512), buf, len) != BLK_S_OK) {
                fail("blkbench: request %lu failed", i);
                return false;
            }
        outl(MVM_TESTDEV_MARKER_PORT, 0x101 + 2 * pass_no);
        gprintf("BLKBENCH %s bytes %lu tsc %lu\n", pass_no ? "write" : "read", count * len,
                rdtsc() - start);
    }
    /* The cost of a queue notify (in-kernel ioeventfd) beside a register write that exits to
     * the VMM (QueueSel): nothing is made available, so the device finds no work. */
    u64 n = count * 16;
    u64 t0 = rdtsc();
    outl(MVM_TESTDEV_MARKER_PORT, 0x104);
    for (u64 i = 0; i < n; i++)
        vq_kick(&d, &d.q[0]);
    u64 t1 = rdtsc();
    outl(MVM_TESTDEV_MARKER_PORT, 0x105);
    for (u64 i = 0; i < n; i++)
        vio_write(&d, VIO_QUEUE_SEL, 0);
    u64 t2 = rdtsc();
    outl(MVM_TESTDEV_MARKER_PORT, 0x106);
    gprintf("BLKBENCH notifies %lu tsc %lu trapped-writes tsc %lu\n", n, t1 - t0, t2 - t1);
    pass("blkbench");
    return true;
}

/* Sector @k's content in mode=blkloop (mirrored in tests/daemon/test-daemon-handoff.c). */
static void fill_numbered(u8 *sector, u64 k)
{
    memcpy(sector, &k, sizeof(k));
    for (u32 i = sizeof(k); i < 512; i++)
        sector[i] = blk_pattern_byte(k, i, 0);
}

/* @ms of echoing (or only waiting): the next write is not due before. */
static bool echo_for(u64 ms, bool echo, u64 *echoed)
{
    u64 deadline = tsc_deadline_ms(ms);

    do {
        int n = echo ? net_echo_pending() : 0;
        if (n < 0)
            return false;
        *echoed += (u64)n;
        cpu_relax();
    } while (!tsc_passed(deadline));
    return true;
}

bool mode_blkloop(void)
{
    struct vdev d;
    u64 delay = arg_u64("delay_ms", 20), max = arg_u64("max", 0), echoed = 0;
    bool echo = arg_u64("echo", 0);

    if (!blk_open(&d) || (echo && !net_open()))
        return false;
    u64 capacity = *(volatile u64 *)(d.base + VIO_CONFIG);
    u8 *sector = vio_page();
    gprintf("BLKLOOP capacity %lu echo %u\n", capacity, echo);
    for (u64 k = 0; max == 0 || k < max; k++) {
        fill_numbered(sector, k);
        int status = blk_rw(&d, BLK_T_OUT, k % capacity, sector, 512);
        if (status != BLK_S_OK) {
            fail("blkloop: write %lu: status %d", k, status);
            return false;
        }
        gprintf("BLKLOOP wrote %lu echoed %lu\n", k, echoed);
        if (!echo_for(delay, echo, &echoed))
            return false;
    }
    pass("blkloop");
    return true;
}
