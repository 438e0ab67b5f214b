/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The test guest's virtio-mmio driver: see virtio.h. */
#include "virtio.h"

#define POOL_PAGES 48

static u8 pool[POOL_PAGES][4096] __attribute__((aligned(4096), section(".stacks")));
static unsigned pool_used;

void *vio_page(void)
{
    if (pool_used >= POOL_PAGES) {
        fail("virtio: page pool exhausted");
        guest_exit(1);
    }
    void *p = pool[pool_used++];
    memset(p, 0, 4096);
    return p;
}

unsigned vio_page_mark(void)
{
    return pool_used;
}

void vio_page_release(unsigned mark)
{
    if (mark < pool_used)
        pool_used = mark;
}

u32 vio_read(struct vdev *d, u32 off)
{
    return mmio_read32(d->base + off);
}

void vio_write(struct vdev *d, u32 off, u32 v)
{
    mmio_write32(d->base + off, v);
}

static void vio_write64(struct vdev *d, u32 off, u64 v)
{
    vio_write(d, off, (u32)v);
    vio_write(d, off + 4, (u32)(v >> 32));
}

/* vbase= and vstride= place the slots elsewhere: QEMU's microvm has them at 0xfeb00000, 512 bytes
 * apart (for the benchmark against QEMU). */
bool virtio_find(u32 device_id, unsigned nth, struct vdev *d)
{
    u64 first = arg_u64("vbase", MVM_VIRTIO_MMIO_BASE);
    u64 stride = arg_u64("vstride", MVM_VIRTIO_MMIO_SIZE);

    for (unsigned slot = 0; slot < MVM_VIRTIO_MMIO_MAX_DEVICES; slot++) {
        u64 base = first + slot * stride;
        if (mmio_read32(base + VIO_MAGIC) != 0x74726976)
            return false; /* slots are dense: the first empty one ends the list */
        if (mmio_read32(base + VIO_DEVICE_ID) != device_id)
            continue;
        if (nth-- > 0)
            continue;
        memset(d, 0, sizeof(*d));
        d->base = base;
        d->device_id = device_id;
        return true;
    }
    return false;
}

static bool setup_queue(struct vdev *d, unsigned i)
{
    struct vq *q = &d->q[i];
    u8 *page = vio_page();

    memset(q, 0, sizeof(*q));
    q->index = i;
    q->desc = (struct vdesc *)page;          /* 16 × 16 bytes */
    q->avail = (volatile u16 *)(page + 512); /* 6 + 2 × 16 */
    q->used = page + 1024;                   /* 6 + 8 × 16 */
    vio_write(d, VIO_QUEUE_SEL, i);
    u32 max = vio_read(d, VIO_QUEUE_MAX);
    if (max < VQ_SIZE) {
        fail("virtio: queue %u has QueueNumMax %u, expected >= %u", i, max, VQ_SIZE);
        return false;
    }
    vio_write(d, VIO_QUEUE_NUM, VQ_SIZE);
    vio_write64(d, VIO_QUEUE_DESC, (u64)q->desc);
    vio_write64(d, VIO_QUEUE_AVAIL, (u64)q->avail);
    vio_write64(d, VIO_QUEUE_USED, (u64)q->used);
    vio_write(d, VIO_QUEUE_READY, 1);
    return vio_read(d, VIO_QUEUE_READY) == 1;
}

/* virtio 1.2 §3.1.1, the driver initialization sequence. */
bool virtio_setup(struct vdev *d, u64 want, unsigned n_queues)
{
    vio_write(d, VIO_STATUS, 0);
    if (vio_read(d, VIO_STATUS) != 0) {
        fail("virtio: status not 0 after reset");
        return false;
    }
    vio_write(d, VIO_STATUS, VIO_S_ACK);
    vio_write(d, VIO_STATUS, VIO_S_ACK | VIO_S_DRIVER);
    vio_write(d, VIO_DEV_FEAT_SEL, 0);
    u64 offered = vio_read(d, VIO_DEV_FEATURES);
    vio_write(d, VIO_DEV_FEAT_SEL, 1);
    offered |= (u64)vio_read(d, VIO_DEV_FEATURES) << 32;
    d->features = offered & (want | VIO_F_VERSION_1);
    vio_write(d, VIO_DRV_FEAT_SEL, 0);
    vio_write(d, VIO_DRV_FEATURES, (u32)d->features);
    vio_write(d, VIO_DRV_FEAT_SEL, 1);
    vio_write(d, VIO_DRV_FEATURES, (u32)(d->features >> 32));
    vio_write(d, VIO_STATUS, VIO_S_ACK | VIO_S_DRIVER | VIO_S_FEATURES_OK);
    if (!(vio_read(d, VIO_STATUS) & VIO_S_FEATURES_OK)) {
        fail("virtio: device refused features 0x%lx", d->features);
        return false;
    }
    for (unsigned i = 0; i < n_queues; i++)
        if (!setup_queue(d, i))
            return false;
    vio_write(d, VIO_STATUS, VIO_S_ACK | VIO_S_DRIVER | VIO_S_FEATURES_OK | VIO_S_DRIVER_OK);
    return true;
}

static void publish(struct vq *q, u16 head)
{
    q->avail[2 + q->avail_idx % VQ_SIZE] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* ring entry before the index (§2.7.13) */
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

u16 vq_add(struct vq *q, const struct vbuf *bufs, unsigned n)
{
    u16 head = q->next_desc % VQ_SIZE;

    for (unsigned i = 0; i < n; i++) {
        u16 at = (q->next_desc + i) % VQ_SIZE;
        q->desc[at].addr = bufs[i].addr;
        q->desc[at].len = bufs[i].len;
        q->desc[at].flags = (bufs[i].write ? VDESC_F_WRITE : 0) | (i + 1 < n ? VDESC_F_NEXT : 0);
        q->desc[at].next = (at + 1) % VQ_SIZE;
    }
    q->next_desc = (q->next_desc + n) % VQ_SIZE;
    publish(q, head);
    return head;
}

void vq_post(struct vq *q, u16 i, u64 addr, u32 len, bool write)
{
    q->desc[i] = (struct vdesc){.addr = addr, .len = len, .flags = write ? VDESC_F_WRITE : 0};
    publish(q, i);
}

void vq_kick(struct vdev *d, struct vq *q)
{
    vio_write(d, VIO_QUEUE_NOTIFY, q->index);
}

static u16 used_idx(struct vq *q)
{
    return __atomic_load_n((volatile u16 *)(q->used + 2), __ATOMIC_ACQUIRE);
}

bool vq_has_used(struct vq *q)
{
    return used_idx(q) != q->last_used;
}

bool vq_wait(struct vdev *d, struct vq *q, u32 *id, u32 *len, u64 timeout_ms)
{
    u64 deadline = tsc_deadline_ms(timeout_ms);

    while (!vq_has_used(q)) {
        if (tsc_passed(deadline))
            return false;
        cpu_relax();
    }
    volatile u8 *elem = q->used + 4 + 8 * (q->last_used % VQ_SIZE);
    *id = *(volatile u32 *)elem;
    *len = *(volatile u32 *)(elem + 4);
    q->last_used++;
    /* Interrupts stay off: read and acknowledge what the device raised. */
    u32 isr = vio_read(d, VIO_INT_STATUS);
    if (isr) {
        d->irq_seen |= isr;
        vio_write(d, VIO_INT_ACK, isr);
    }
    return true;
}

bool vq_request(struct vdev *d, struct vq *q, const struct vbuf *bufs, unsigned n, u32 *len)
{
    u32 id;
    u16 head = vq_add(q, bufs, n);

    vq_kick(d, q);
    if (!vq_wait(d, q, &id, len, 10000)) {
        fail("virtio: queue %u: no used buffer after 10 s", q->index);
        return false;
    }
    if (id != head) {
        fail("virtio: queue %u: used id %u, expected %u", q->index, id, head);
        return false;
    }
    return true;
}

u64 fnv1a(const void *data, u64 len, u64 hash)
{
    const u8 *p = data;
    for (u64 i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}
