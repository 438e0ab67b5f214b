/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Split virtqueue walker (virtio 1.2 §2.7). A rule the guest breaks makes
 * mvm_vq_pop() return MVM_VQ_POP_BROKEN with the reason; the transport then
 * puts the device in DEVICE_NEEDS_RESET. Nothing here trusts guest memory to
 * stay the same between two reads: each field is read once into a local.
 */
#include "virtqueue.h"

#include <string.h>

#include "microvm.h"

#define DESC_SIZE 16

typedef struct {
    guint64 addr;
    guint32 len;
    guint16 flags;
    guint16 next;
} Desc;

static guint16 load16(const guint8 *p)
{
    guint16 v = __atomic_load_n((const guint16 *)p, __ATOMIC_RELAXED);
    return GUINT16_FROM_LE(v);
}

static void store16(guint8 *p, guint16 v)
{
    __atomic_store_n((guint16 *)p, GUINT16_TO_LE(v), __ATOMIC_RELAXED);
}

static void store32(guint8 *p, guint32 v)
{
    guint32 le = GUINT32_TO_LE(v);
    memcpy(p, &le, sizeof(le));
}

static Desc load_desc(const MvmVirtqueue *vq, guint16 index)
{
    const guint8 *p = vq->desc + (gsize)index * DESC_SIZE;
    Desc d;

    memcpy(&d.addr, p, 8);
    memcpy(&d.len, p + 8, 4);
    memcpy(&d.flags, p + 12, 2);
    memcpy(&d.next, p + 14, 2);
    d.addr = GUINT64_FROM_LE(d.addr);
    d.len = GUINT32_FROM_LE(d.len);
    d.flags = GUINT16_FROM_LE(d.flags);
    d.next = GUINT16_FROM_LE(d.next);
    return d;
}

void mvm_vq_reset(MvmVirtqueue *vq)
{
    memset(vq, 0, sizeof(*vq));
}

static guint8 *map_ring(const MvmMemory *mem, guint64 gpa, guint64 len, guint64 align,
                        const char *what, GError **error)
{
    guint8 *p;

    if (gpa % align != 0) {
        mvm_set_invalid(
            error, "%s ring at 0x%" G_GINT64_MODIFIER "x is not %" G_GUINT64_FORMAT "-byte aligned",
            what, gpa, align);
        return NULL;
    }
    p = mvm_memory_get_ptr(mem, gpa, len);
    if (p == NULL)
        mvm_set_invalid(error,
                        "%s ring at 0x%" G_GINT64_MODIFIER "x+0x%" G_GINT64_MODIFIER
                        "x is not guest RAM",
                        what, gpa, len);
    return p;
}

gboolean mvm_vq_enable(MvmVirtqueue *vq, const MvmMemory *mem, GError **error)
{
    guint64 n = vq->size;

    /* §2.7: split queue sizes are powers of two; we offer at most MVM_VQ_MAX_SIZE. */
    if (n == 0 || n > MVM_VQ_MAX_SIZE || (n & (n - 1)) != 0)
        return mvm_set_invalid(error,
                               "queue size %" G_GUINT64_FORMAT " is not a power of two up to %u", n,
                               MVM_VQ_MAX_SIZE);
    /* §2.7 table "Virtqueue Part Alignment": 16, 2 and 4 bytes. */
    vq->desc = map_ring(mem, vq->desc_gpa, DESC_SIZE * n, 16, "descriptor", error);
    if (vq->desc == NULL)
        return FALSE;
    vq->avail = map_ring(mem, vq->avail_gpa, 6 + 2 * n, 2, "available", error);
    if (vq->avail == NULL)
        return FALSE;
    vq->used = map_ring(mem, vq->used_gpa, 6 + 8 * n, 4, "used", error);
    if (vq->used == NULL)
        return FALSE;
    vq->memory = mem;
    vq->last_avail = 0;
    vq->used_idx = 0;
    vq->enabled = TRUE;
    return TRUE;
}

guint16 mvm_vq_pending(const MvmVirtqueue *vq)
{
    if (!vq->enabled)
        return 0;
    return (guint16)(load16(vq->avail + 2) - vq->last_avail);
}

/* Adds one descriptor to @chain, checking direction order and that it is RAM. */
static gboolean chain_add(MvmVqChain *chain, const MvmMemory *mem, const Desc *d, guint16 index,
                          GError **error)
{
    gboolean writable = (d->flags & VIRTQ_DESC_F_WRITE) != 0;
    guint8 *host;

    if (d->flags & VIRTQ_DESC_F_INDIRECT)
        return mvm_set_invalid(error, "descriptor %u is indirect, which was not negotiated", index);
    if (!writable && chain->n_in > 0)
        return mvm_set_invalid(
            error, "descriptor %u is device-readable after a device-writable one", index);
    host = mvm_memory_get_ptr(mem, d->addr, d->len);
    if (host == NULL)
        return mvm_set_invalid(
            error, "descriptor %u points at 0x%" G_GINT64_MODIFIER "x+0x%x, not guest RAM", index,
            d->addr, d->len);
    chain->bufs[chain->n_out + chain->n_in] = (MvmVqBuf){.host = host, .len = d->len};
    /*
     * Marked when taken, before the device writes it: every request ends before a diff
     * snapshot parks the devices, so the write falls before the next snapshot, which takes the
     * mark (mvm_memory_take_written()).
     */
    if (writable)
        mvm_memory_mark_written(mem, host, d->len);
    if (writable) {
        chain->n_in++;
        chain->in_len += d->len;
    } else {
        chain->n_out++;
        chain->out_len += d->len;
    }
    return TRUE;
}

static gboolean walk_chain(const MvmVirtqueue *vq, const MvmMemory *mem, guint16 head,
                           MvmVqChain *chain, GError **error)
{
    guint16 index = head;

    chain->head = head;
    chain->n_out = chain->n_in = 0;
    chain->out_len = chain->in_len = 0;
    /* A chain visits each descriptor at most once, so a longer one loops (§2.7.5.1). */
    for (guint count = 0;; count++) {
        if (count >= vq->size)
            return mvm_set_invalid(
                error, "descriptor chain from %u is longer than the queue (a loop?)", head);
        if (index >= vq->size)
            return mvm_set_invalid(error, "descriptor index %u is beyond the queue size %u", index,
                                   vq->size);
        Desc d = load_desc(vq, index);
        if (!chain_add(chain, mem, &d, index, error))
            return FALSE;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return TRUE;
        index = d.next;
    }
}

MvmVqPopResult mvm_vq_pop(MvmVirtqueue *vq, const MvmMemory *mem, MvmVqChain *chain, GError **error)
{
    if (!vq->enabled)
        return MVM_VQ_POP_EMPTY;

    guint16 avail_idx = load16(vq->avail + 2);
    guint16 pending = (guint16)(avail_idx - vq->last_avail);
    if (pending == 0)
        return MVM_VQ_POP_EMPTY;
    if (pending > vq->size) {
        mvm_set_invalid(error, "available index moved by %u, more than the queue size %u", pending,
                        vq->size);
        return MVM_VQ_POP_BROKEN;
    }
    /* Read the ring entry only after the index that published it (§2.7.13.3 barrier). */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    guint16 head = load16(vq->avail + 4 + 2 * (vq->last_avail % vq->size));
    if (!walk_chain(vq, mem, head, chain, error))
        return MVM_VQ_POP_BROKEN;
    vq->last_avail++;
    return MVM_VQ_POP_OK;
}

void mvm_vq_push(MvmVirtqueue *vq, guint16 head, guint32 len)
{
    if (!vq->enabled)
        return;
    guint8 *elem = vq->used + 4 + 8 * (gsize)(vq->used_idx % vq->size);
    store32(elem, head);
    store32(elem + 4, len);
    vq->used_idx++;
    /* The element must be visible before the index that publishes it (§2.7.8.2). */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    store16(vq->used + 2, vq->used_idx);
    mvm_memory_mark_written(vq->memory, vq->used, 4 + 8 * (gsize)vq->size);
    /* And the index before we read the driver's interrupt suppression flag. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

gboolean mvm_vq_interrupt_suppressed(const MvmVirtqueue *vq)
{
    return vq->enabled && (load16(vq->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

/* The buffers of one direction: [first, first + n). */
static void chain_part(const MvmVqChain *chain, gboolean writable, guint *first, guint *n)
{
    *first = writable ? chain->n_out : 0;
    *n = writable ? chain->n_in : chain->n_out;
}

guint mvm_vq_chain_iov(const MvmVqChain *chain, gboolean writable, gsize offset, gsize len,
                       struct iovec *iov, guint max)
{
    guint first, n, out = 0;

    chain_part(chain, writable, &first, &n);
    for (guint i = first; i < first + n && len > 0 && out < max; i++) {
        const MvmVqBuf *b = &chain->bufs[i];
        if (offset >= b->len) {
            offset -= b->len;
            continue;
        }
        gsize take = MIN(b->len - offset, len);
        iov[out++] = (struct iovec){.iov_base = b->host + offset, .iov_len = take};
        len -= take;
        offset = 0;
    }
    return out;
}

gsize mvm_vq_chain_read(const MvmVqChain *chain, gsize offset, void *dst, gsize len)
{
    struct iovec iov[MVM_VQ_MAX_SIZE];
    guint n = mvm_vq_chain_iov(chain, FALSE, offset, len, iov, G_N_ELEMENTS(iov));
    gsize done = 0;

    for (guint i = 0; i < n; i++) {
        memcpy((guint8 *)dst + done, iov[i].iov_base, iov[i].iov_len);
        done += iov[i].iov_len;
    }
    return done;
}

gsize mvm_vq_chain_write(const MvmVqChain *chain, gsize offset, const void *src, gsize len)
{
    struct iovec iov[MVM_VQ_MAX_SIZE];
    guint n = mvm_vq_chain_iov(chain, TRUE, offset, len, iov, G_N_ELEMENTS(iov));
    gsize done = 0;

    for (guint i = 0; i < n; i++) {
        memcpy(iov[i].iov_base, (const guint8 *)src + done, iov[i].iov_len);
        done += iov[i].iov_len;
    }
    return done;
}
