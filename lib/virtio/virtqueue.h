/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Split virtqueues (virtio 1.2 §2.7), device side. Everything the guest wrote is
 * untrusted: ring addresses, the available index, descriptor indexes, chains, buffer
 * addresses and lengths, and direction flags are checked before use, and every guest
 * address becomes a host pointer through mvm_memory_get_ptr() only.
 *
 * No locking here: the transport serializes access to a queue.
 */
#pragma once

#include <glib.h>
#include <sys/uio.h>

#include "error-private.h"
#include "memory.h"

G_BEGIN_DECLS

#define MVM_VQ_MAX_SIZE 256 /* queue sizes we offer: a power of two up to this */

/* §2.7.5 descriptor flags */
#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
/* §2.7.6 / §2.7.8 ring flags */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

typedef struct {
    guint16 size; /* 0: not configured */
    guint64 desc_gpa, avail_gpa, used_gpa;
    /* Set by mvm_vq_enable(), valid while enabled; point into guest RAM. */
    gboolean enabled;
    guint8 *desc, *avail, *used;
    const MvmMemory *memory; /* what the used ring and writable buffers are marked written in */
    guint16 last_avail;      /* next available entry the device will take */
    guint16 used_idx;        /* the used index the device last published */
} MvmVirtqueue;

/* One buffer of a chain: host view of guest RAM. */
typedef struct {
    guint8 *host;
    guint32 len;
} MvmVqBuf;

/*
 * A descriptor chain as taken from the available ring: device-readable buffers
 * first (out), then device-writable ones (in), as §2.7.4.2 requires of the driver.
 */
typedef struct {
    guint16 head;
    guint n_out, n_in;
    guint64 out_len, in_len;
    MvmVqBuf bufs[MVM_VQ_MAX_SIZE]; /* out buffers, then in buffers */
} MvmVqChain;

typedef enum {
    MVM_VQ_POP_EMPTY,  /* nothing new in the available ring */
    MVM_VQ_POP_OK,     /* @chain holds a chain */
    MVM_VQ_POP_BROKEN, /* the guest broke the rules; @error says how */
} MvmVqPopResult;

/* Resets indexes and forgets the rings (device reset, §2.4). Keeps nothing from the guest. */
void mvm_vq_reset(MvmVirtqueue *vq);
/* Validates size and ring placement (§2.7: alignment, all inside RAM) and maps the rings. */
gboolean mvm_vq_enable(MvmVirtqueue *vq, const MvmMemory *mem, GError **error);
MvmVqPopResult mvm_vq_pop(MvmVirtqueue *vq, const MvmMemory *mem, MvmVqChain *chain,
                          GError **error);
/* Publishes @head as used with @len bytes written (§2.7.8). */
void mvm_vq_push(MvmVirtqueue *vq, guint16 head, guint32 len);
/* Whether the driver asked not to be interrupted (a hint, §2.7.7). */
gboolean mvm_vq_interrupt_suppressed(const MvmVirtqueue *vq);
/* Entries the driver made available that the device has not taken yet. */
guint16 mvm_vq_pending(const MvmVirtqueue *vq);

/* Copies out of the readable part of @chain from @offset; returns bytes copied. */
gsize mvm_vq_chain_read(const MvmVqChain *chain, gsize offset, void *dst, gsize len);
/* Copies into the writable part of @chain from @offset; returns bytes copied. */
gsize mvm_vq_chain_write(const MvmVqChain *chain, gsize offset, const void *src, gsize len);
/*
 * Fills @iov (at most @max entries) with the readable (@writable FALSE) or
 * writable part of @chain, skipping @offset bytes and taking at most @len;
 * returns the number of entries.
 */
guint mvm_vq_chain_iov(const MvmVqChain *chain, gboolean writable, gsize offset, gsize len,
                       struct iovec *iov, guint max);

G_END_DECLS
