/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=hostile: breaks the virtqueue rules on the first virtio-blk device and expects the device
 * to answer with DEVICE_NEEDS_RESET plus a configuration-change interrupt (virtio 1.2 §2.1.2),
 * then to work again after a reset. attack= loop (a descriptor chain that cycles), oob (a buffer
 * outside guest RAM), huge (a 4 GiB - 1 length), badnext (next index beyond the queue), avail
 * (the available index jumps past the queue size), ring (the descriptor table outside RAM),
 * order (a device-readable descriptor after a device-writable one). rounds= (1) repeats it
 * after each recovery.
 */
#include "virtio.h"

static bool setup_blk(struct vdev *d)
{
    if (!virtio_find(2, 0, d)) {
        fail("hostile: no virtio-blk device");
        return false;
    }
    return virtio_setup(d, 0, 1);
}

/* Two descriptors, written by hand so that they can break the rules. */
static void post_chain(struct vdev *d, struct vdesc a, struct vdesc b, u16 avail_step)
{
    struct vq *q = &d->q[0];

    q->desc[0] = a;
    q->desc[1] = b;
    q->avail[2 + q->avail_idx % VQ_SIZE] = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    q->avail_idx += avail_step;
    q->avail[1] = q->avail_idx;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    vq_kick(d, q);
}

static bool attack(struct vdev *d, const char *kind, u8 *page)
{
    u64 req = (u64)page, status = (u64)page + 64;
    struct vdesc hdr = {req, 16, VDESC_F_NEXT, 1};
    struct vdesc st = {status, 1, VDESC_F_WRITE, 0};

    if (!strcmp(kind, "loop")) {
        post_chain(d, hdr, (struct vdesc){req, 16, VDESC_F_NEXT, 0}, 1);
    } else if (!strcmp(kind, "oob")) {
        post_chain(d, hdr, (struct vdesc){0x7fff00000000ULL, 512, VDESC_F_WRITE, 0}, 1);
    } else if (!strcmp(kind, "huge")) {
        post_chain(d, hdr, (struct vdesc){0x100000, 0xffffffffu, VDESC_F_WRITE, 0}, 1);
    } else if (!strcmp(kind, "badnext")) {
        post_chain(d, (struct vdesc){req, 16, VDESC_F_NEXT, 999}, st, 1);
    } else if (!strcmp(kind, "avail")) {
        post_chain(d, hdr, st, 1000);
    } else if (!strcmp(kind, "order")) {
        post_chain(d, (struct vdesc){status, 1, VDESC_F_WRITE | VDESC_F_NEXT, 1}, hdr, 1);
    } else if (!strcmp(kind, "ring")) {
        vio_write(d, VIO_STATUS, 0);
        vio_write(d, VIO_STATUS, VIO_S_ACK | VIO_S_DRIVER);
        vio_write(d, VIO_DRV_FEAT_SEL, 1);
        vio_write(d, VIO_DRV_FEATURES, 1); /* VERSION_1 */
        vio_write(d, VIO_STATUS, VIO_S_ACK | VIO_S_DRIVER | VIO_S_FEATURES_OK);
        vio_write(d, VIO_QUEUE_SEL, 0);
        vio_write(d, VIO_QUEUE_NUM, VQ_SIZE);
        vio_write(d, VIO_QUEUE_DESC, 0);
        vio_write(d, VIO_QUEUE_DESC + 4, 0x7fff); /* far above RAM */
        vio_write(d, VIO_QUEUE_READY, 1);
    } else {
        fail("hostile: unknown attack %s", kind);
        return false;
    }
    return true;
}

static bool wait_needs_reset(struct vdev *d)
{
    u64 deadline = tsc_deadline_ms(10000);
    u32 status;

    while (!((status = vio_read(d, VIO_STATUS)) & VIO_S_NEEDS_RESET)) {
        if (tsc_passed(deadline)) {
            fail("hostile: expected DEVICE_NEEDS_RESET got status 0x%x", status);
            return false;
        }
        tsc_delay_us(100);
    }
    gprintf("HOSTILE status 0x%x interrupt-status 0x%x\n", status, vio_read(d, VIO_INT_STATUS));
    pass("hostile-needs-reset");
    return check_u64("hostile-config-interrupt", 2, vio_read(d, VIO_INT_STATUS) & 2);
}

/* After a reset the device must serve a well-formed request again. */
static bool recovered(struct vdev *d)
{
    u8 *page = vio_page();
    u8 *status = page + 64;
    u32 *hdr = (u32 *)page;
    u32 len;

    if (!virtio_setup(d, 0, 1))
        return false;
    hdr[0] = 0; /* VIRTIO_BLK_T_IN, sector 0 */
    hdr[1] = hdr[2] = hdr[3] = 0;
    *status = 0xff;
    struct vbuf bufs[3] = {
        {(u64)page, 16, false}, {(u64)page + 512, 512, true}, {(u64)status, 1, true}};
    if (!vq_request(d, &d->q[0], bufs, 3, &len))
        return false;
    return check_u64("hostile-recovered", 0, *status);
}

/* rounds=N: the attack again after each recovery, for a host that must not log them all. */
bool mode_hostile(void)
{
    struct vdev d;
    const char *kind = arg_str("attack", "loop");
    u64 rounds = arg_u64("rounds", 1);

    gprintf("HOSTILE attack %s rounds %u\n", kind, (u32)rounds);
    if (!setup_blk(&d))
        return false;
    unsigned mark = vio_page_mark();
    for (u64 i = 0; i < rounds; i++) {
        /* Each round takes the same pages for the same use: the attack's page, then (after
         * the reset) the new queue and the request; the live queue is never the attack's. */
        vio_page_release(mark);
        if (!attack(&d, kind, vio_page()) || !wait_needs_reset(&d) || !recovered(&d))
            return false;
    }
    return true;
}
