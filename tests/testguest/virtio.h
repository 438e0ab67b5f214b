/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A minimal virtio-mmio (version 2) driver for the test guest: polled, no interrupts
 * (it reads and acknowledges InterruptStatus instead), split queues of VQ_SIZE entries.
 */
#pragma once

#include "guest.h"

#define VQ_SIZE 16

/* Register offsets and status bits: virtio 1.2 §4.2.2, §2.1. */
#define VIO_MAGIC        0x000
#define VIO_VERSION      0x004
#define VIO_DEVICE_ID    0x008
#define VIO_DEV_FEATURES 0x010
#define VIO_DEV_FEAT_SEL 0x014
#define VIO_DRV_FEATURES 0x020
#define VIO_DRV_FEAT_SEL 0x024
#define VIO_QUEUE_SEL    0x030
#define VIO_QUEUE_MAX    0x034
#define VIO_QUEUE_NUM    0x038
#define VIO_QUEUE_READY  0x044
#define VIO_QUEUE_NOTIFY 0x050
#define VIO_INT_STATUS   0x060
#define VIO_INT_ACK      0x064
#define VIO_STATUS       0x070
#define VIO_QUEUE_DESC   0x080
#define VIO_QUEUE_AVAIL  0x090
#define VIO_QUEUE_USED   0x0a0
#define VIO_CONFIG_GEN   0x0fc
#define VIO_CONFIG       0x100

#define VIO_S_ACK         1
#define VIO_S_DRIVER      2
#define VIO_S_DRIVER_OK   4
#define VIO_S_FEATURES_OK 8
#define VIO_S_NEEDS_RESET 64

#define VIO_F_VERSION_1 (1ULL << 32)

#define VDESC_F_NEXT  1
#define VDESC_F_WRITE 2

struct vdesc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

struct vq {
    unsigned index;
    struct vdesc *desc;
    volatile u16 *avail; /* flags, idx, ring[VQ_SIZE] */
    volatile u8 *used;   /* flags, idx, ring[VQ_SIZE] of {u32 id, u32 len} */
    u16 avail_idx;
    u16 last_used;
    u16 next_desc;
};

struct vdev {
    u64 base;
    u32 device_id;
    u64 features; /* negotiated */
    u32 irq_seen; /* InterruptStatus bits seen while polling */
    struct vq q[3];
};

struct vbuf {
    u64 addr;
    u32 len;
    bool write; /* device-writable */
};

u32 vio_read(struct vdev *d, u32 off);
void vio_write(struct vdev *d, u32 off, u32 v);
/* The nth (0-based) device with @device_id among the VMM's MMIO slots. */
bool virtio_find(u32 device_id, unsigned nth, struct vdev *d);
/* Reset, feature negotiation (VERSION_1 plus what @want and the device share), queues, DRIVER_OK.
 */
bool virtio_setup(struct vdev *d, u64 want, unsigned n_queues);
/* Writes descriptors [next_desc, +n) as one chain and makes it available; returns the head. */
u16 vq_add(struct vq *q, const struct vbuf *bufs, unsigned n);
/* Makes descriptor @i (one buffer) available again, e.g. a receive buffer. */
void vq_post(struct vq *q, u16 i, u64 addr, u32 len, bool write);
void vq_kick(struct vdev *d, struct vq *q);
/* Polls for the next used element; false after @timeout_ms. */
bool vq_wait(struct vdev *d, struct vq *q, u32 *id, u32 *len, u64 timeout_ms);
bool vq_has_used(struct vq *q);
/* One synchronous request: add, kick, wait. Returns false on timeout. */
bool vq_request(struct vdev *d, struct vq *q, const struct vbuf *bufs, unsigned n, u32 *len);
/* A page of zeroed memory for buffers (from a fixed pool; never freed). */
void *vio_page(void);
/* The pool as a stack, for a mode that repeats itself: pages taken after @mark are given back
 * (the caller makes sure the device no longer uses them, or that they are taken back in the
 * same order for the same use). */
unsigned vio_page_mark(void);
void vio_page_release(unsigned mark);
u64 fnv1a(const void *data, u64 len, u64 hash);
#define FNV1A_INIT 0xcbf29ce484222325ULL

/* mode_virtio_net.c, for mode=blkloop: the NIC ready to receive, and its echo (see there). */
bool net_open(void);
int net_echo_pending(void);
