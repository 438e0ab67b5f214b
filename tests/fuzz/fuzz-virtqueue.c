/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the split virtqueue walker (lib/virtio/virtqueue.c): the
 * code that reads every ring and descriptor a guest writes. Needs no KVM.
 *
 * Input: byte 0: queue size 1 << (b % 9); if bit 7 is set, bytes 1-24 are the
 * three ring addresses (le64) for mvm_vq_enable to judge, else the rings sit at
 * RING_GPA (descriptors, then the available ring) and USED_GPA. Bytes 1-2: the
 * device's next available index. The rest is copied to guest RAM at RING_GPA:
 * the descriptor table, then the available ring (flags, idx, ring[]), then
 * anything the descriptors point at.
 */
#include <string.h>

#include "microvm.h"
#include "virtqueue.h"

#define RAM_SIZE   (2 * 1024 * 1024)
#define RING_GPA   0x1000
#define USED_GPA   0x100000
#define INPUT_MAX  (USED_GPA - RING_GPA)
#define HEADER_LEN 25

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);
gboolean fuzz_target_accepts(const guint8 *data, size_t size);

static MvmMemory *memory(void)
{
    static MvmMemory *mem;

    if (mem == NULL)
        mem = mvm_memory_new(RAM_SIZE, NULL);
    g_assert_nonnull(mem);
    return mem;
}

static guint64 le64_at(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_LE(v);
}

/* Every buffer of a chain is inside guest RAM, and the counts add up. */
static void check_chain(const MvmVqChain *chain, guint16 queue_size)
{
    const guint8 *ram = mvm_memory_get_ptr(memory(), 0, RAM_SIZE);
    guint64 out = 0, in = 0;

    g_assert_cmpuint(chain->n_out + chain->n_in, <=, queue_size);
    g_assert_cmpuint(chain->head, <, queue_size);
    for (guint i = 0; i < chain->n_out + chain->n_in; i++) {
        const MvmVqBuf *b = &chain->bufs[i];
        g_assert_true(b->host >= ram && b->host + b->len <= ram + RAM_SIZE);
        if (i < chain->n_out)
            out += b->len;
        else
            in += b->len;
    }
    g_assert_cmpuint(out, ==, chain->out_len);
    g_assert_cmpuint(in, ==, chain->in_len);
}

/* What a device does with a chain: read it all, fill the writable part, report it used. */
static void use_chain(MvmVirtqueue *vq, const MvmVqChain *chain)
{
    guint8 buf[512];
    struct iovec iov[8];

    check_chain(chain, vq->size);
    for (gsize off = 0; off < MIN(chain->out_len, (guint64)8192); off += sizeof(buf))
        mvm_vq_chain_read(chain, off, buf, sizeof(buf));
    memset(buf, 0xa5, sizeof(buf));
    gsize wrote = mvm_vq_chain_write(chain, chain->in_len / 2, buf, sizeof(buf));
    g_assert_cmpuint(wrote, <=, chain->in_len - chain->in_len / 2);
    guint n = mvm_vq_chain_iov(chain, TRUE, 1, chain->in_len, iov, G_N_ELEMENTS(iov));
    g_assert_cmpuint(n, <=, G_N_ELEMENTS(iov));
    mvm_vq_push(vq, chain->head, (guint32)MIN(chain->in_len, (guint64)G_MAXUINT32));
}

/* Returns the number of chains taken; *broken tells whether the walk ended on a broken rule. */
static guint run(const guint8 *data, size_t size, gboolean *broken)
{
    MvmMemory *mem = memory();
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    MvmVirtqueue vq;
    guint taken = 0;

    *broken = FALSE;
    if (size < HEADER_LEN)
        return 0;
    memset(mvm_memory_get_ptr(mem, 0, RAM_SIZE), 0, USED_GPA + 0x1000);
    mvm_vq_reset(&vq);
    vq.size = (guint16)(1u << (data[0] % 9));
    vq.desc_gpa = RING_GPA;
    vq.avail_gpa = RING_GPA + 16ULL * vq.size;
    vq.used_gpa = USED_GPA;
    if (data[0] & 0x80) {
        vq.desc_gpa = le64_at(data + 1);
        vq.avail_gpa = le64_at(data + 9);
        vq.used_gpa = le64_at(data + 17);
    }
    memcpy(mvm_memory_get_ptr(mem, RING_GPA, INPUT_MAX), data + HEADER_LEN,
           MIN(size - HEADER_LEN, (size_t)INPUT_MAX));
    g_autoptr(GError) error = NULL;
    if (!mvm_vq_enable(&vq, mem, &error)) {
        g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
        return 0;
    }
    vq.last_avail = (guint16)(data[1] | data[2] << 8);
    /* A queue holds at most size chains; a walk past that means the index check failed. */
    for (guint i = 0; i <= vq.size; i++) {
        g_clear_error(&error);
        MvmVqPopResult r = mvm_vq_pop(&vq, mem, chain, &error);
        if (r == MVM_VQ_POP_EMPTY)
            break;
        if (r == MVM_VQ_POP_BROKEN) {
            g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
            *broken = TRUE;
            break;
        }
        g_assert_cmpuint(i, <, vq.size);
        use_chain(&vq, chain);
        taken++;
    }
    return taken;
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    gboolean broken;

    run(data, size, &broken);
    return 0;
}

/* Corpus files named valid-* hold well-formed queues: some chain taken, none refused. */
gboolean fuzz_target_accepts(const guint8 *data, size_t size)
{
    gboolean broken;
    guint taken = run(data, size, &broken);

    return taken > 0 && !broken;
}
