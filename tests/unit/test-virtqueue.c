/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The split virtqueue walker (lib/virtio/virtqueue.c) against rings written
 * by hand into guest memory: well-formed chains, and each rule a guest can
 * break (virtio 1.2 §2.7), which must be refused with a reason, never followed.
 */
#include <string.h>

#include "microvm.h"
#include "virtqueue.h"

#define RAM_SIZE  (2 * 1024 * 1024)
#define DESC_GPA  0x1000
#define AVAIL_GPA 0x2000
#define USED_GPA  0x3000
#define DATA_GPA  0x10000
#define QSIZE     8

typedef struct {
    MvmMemory *mem;
    MvmVirtqueue vq;
    guint16 avail_idx;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    f->mem = mvm_memory_new(RAM_SIZE, &error);
    g_assert_no_error(error);
    mvm_vq_reset(&f->vq);
    f->vq.size = QSIZE;
    f->vq.desc_gpa = DESC_GPA;
    f->vq.avail_gpa = AVAIL_GPA;
    f->vq.used_gpa = USED_GPA;
    g_assert_true(mvm_vq_enable(&f->vq, f->mem, &error));
    g_assert_no_error(error);
    f->avail_idx = 0;
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    mvm_memory_free(f->mem);
}

static void put_desc(Fixture *f, guint16 i, guint64 addr, guint32 len, guint16 flags, guint16 next)
{
    guint8 d[16];

    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
    g_assert_true(mvm_memory_write(f->mem, DESC_GPA + 16 * i, d, 16, NULL));
}

/* Makes @head available and moves the index by @step (1 for a well-behaved driver). */
static void make_available(Fixture *f, guint16 head, guint16 step)
{
    g_assert_true(
        mvm_memory_write(f->mem, AVAIL_GPA + 4 + 2 * (f->avail_idx % QSIZE), &head, 2, NULL));
    f->avail_idx += step;
    g_assert_true(mvm_memory_write(f->mem, AVAIL_GPA + 2, &f->avail_idx, 2, NULL));
}

static MvmVqPopResult pop(Fixture *f, MvmVqChain *chain, GError **error)
{
    return mvm_vq_pop(&f->vq, f->mem, chain, error);
}

static void assert_broken(Fixture *f, const char *reason)
{
    g_autoptr(GError) error = NULL;
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    g_assert_cmpint(pop(f, chain, &error), ==, MVM_VQ_POP_BROKEN);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (strstr(error->message, reason) == NULL)
        g_error("expected a reason with '%s', got '%s'", reason, error->message);
}

static void test_enable_checks(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) mem = mvm_memory_new(RAM_SIZE, &error);
    MvmVirtqueue vq;
    struct {
        guint16 size;
        guint64 desc, avail, used;
        const char *reason;
    } cases[] = {
        {0, DESC_GPA, AVAIL_GPA, USED_GPA, "power of two"},
        {6, DESC_GPA, AVAIL_GPA, USED_GPA, "power of two"},
        {512, DESC_GPA, AVAIL_GPA, USED_GPA, "power of two"},
        {8, DESC_GPA + 8, AVAIL_GPA, USED_GPA, "aligned"},
        {8, DESC_GPA, AVAIL_GPA + 1, USED_GPA, "aligned"},
        {8, DESC_GPA, AVAIL_GPA, USED_GPA + 2, "aligned"},
        {8, RAM_SIZE - 64, AVAIL_GPA, USED_GPA, "not guest RAM"},
        {8, DESC_GPA, G_MAXUINT64 - 1, USED_GPA, "not guest RAM"},  /* wraps around 2^64 */
        {8, DESC_GPA, G_MAXUINT64 - 15, USED_GPA, "not guest RAM"}, /* 16 bytes below 2^64 */
        {8, DESC_GPA, AVAIL_GPA, 0xd0000000, "not guest RAM"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        mvm_vq_reset(&vq);
        vq.size = cases[i].size;
        vq.desc_gpa = cases[i].desc;
        vq.avail_gpa = cases[i].avail;
        vq.used_gpa = cases[i].used;
        g_assert_false(mvm_vq_enable(&vq, mem, &error));
        if (strstr(error->message, cases[i].reason) == NULL)
            g_error("case %u: expected '%s' in '%s'", i, cases[i].reason, error->message);
        g_assert_false(vq.enabled);
        g_clear_error(&error);
    }
}

static void test_empty_and_disabled(Fixture *f, gconstpointer data)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_EMPTY);
    make_available(f, 0, 1);
    put_desc(f, 0, DATA_GPA, 16, 0, 0);
    f->vq.enabled = FALSE;
    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_EMPTY);
    g_assert_cmpuint(mvm_vq_pending(&f->vq), ==, 0);
}

/* A blk-like chain: 16 readable bytes, 1000 + 24 writable bytes over two buffers. */
static void test_chain_and_copies(Fixture *f, gconstpointer data)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    guint8 out[16], got[64];
    struct iovec iov[4];

    for (guint i = 0; i < 16; i++)
        out[i] = (guint8)(0xa0 + i);
    g_assert_true(mvm_memory_write(f->mem, DATA_GPA, out, 16, NULL));
    put_desc(f, 3, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 5);
    put_desc(f, 5, DATA_GPA + 0x1000, 1000, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, DATA_GPA + 0x2000, 24, VIRTQ_DESC_F_WRITE, 0);
    make_available(f, 3, 1);
    g_assert_cmpuint(mvm_vq_pending(&f->vq), ==, 1);

    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_OK);
    g_assert_cmpuint(chain->head, ==, 3);
    g_assert_cmpuint(chain->n_out, ==, 1);
    g_assert_cmpuint(chain->n_in, ==, 2);
    g_assert_cmpuint(chain->out_len, ==, 16);
    g_assert_cmpuint(chain->in_len, ==, 1024);
    g_assert_cmpuint(mvm_vq_chain_read(chain, 4, got, 64), ==, 12);
    g_assert_cmpmem(got, 12, out + 4, 12);

    /* A write across the two writable buffers lands in both. */
    memset(got, 0x5a, sizeof(got));
    g_assert_cmpuint(mvm_vq_chain_write(chain, 990, got, 64), ==, 34);
    guint8 back[24];
    g_assert_true(mvm_memory_read(f->mem, DATA_GPA + 0x2000, back, 24, NULL));
    g_assert_cmpuint(back[0], ==, 0x5a);
    g_assert_cmpuint(back[23], ==, 0x5a);
    g_assert_cmpuint(mvm_vq_chain_iov(chain, TRUE, 999, 10, iov, 4), ==, 2);
    g_assert_cmpuint(iov[0].iov_len, ==, 1);
    g_assert_cmpuint(iov[1].iov_len, ==, 9);
    g_assert_cmpuint(mvm_vq_chain_iov(chain, TRUE, 0, 1024, iov, 1), ==, 1); /* max respected */

    /* The used ring gets the element, then the index. */
    mvm_vq_push(&f->vq, chain->head, 1001);
    guint32 elem[2];
    guint16 used_idx;
    g_assert_true(mvm_memory_read(f->mem, USED_GPA + 4, elem, 8, NULL));
    g_assert_true(mvm_memory_read(f->mem, USED_GPA + 2, &used_idx, 2, NULL));
    g_assert_cmpuint(elem[0], ==, 3);
    g_assert_cmpuint(elem[1], ==, 1001);
    g_assert_cmpuint(used_idx, ==, 1);
    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_EMPTY);
}

static void test_index_wraps(Fixture *f, gconstpointer data)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    f->vq.last_avail = f->avail_idx = 65534;
    f->vq.used_idx = 65534;
    put_desc(f, 0, DATA_GPA, 8, 0, 0);
    for (guint i = 0; i < 4; i++) {
        make_available(f, 0, 1);
        g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_OK);
        mvm_vq_push(&f->vq, chain->head, 0);
    }
    g_assert_cmpuint(f->vq.last_avail, ==, 2);
    g_assert_cmpuint(f->vq.used_idx, ==, 2);
}

static void test_interrupt_suppression(Fixture *f, gconstpointer data)
{
    guint16 flags = VIRTQ_AVAIL_F_NO_INTERRUPT;

    g_assert_false(mvm_vq_interrupt_suppressed(&f->vq));
    g_assert_true(mvm_memory_write(f->mem, AVAIL_GPA, &flags, 2, NULL));
    g_assert_true(mvm_vq_interrupt_suppressed(&f->vq));
}

static void test_loop(Fixture *f, gconstpointer data)
{
    put_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
    make_available(f, 0, 1);
    assert_broken(f, "loop");
    /* A chain to itself, too. */
    put_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
    assert_broken(f, "loop");
}

static void test_longest_chain_is_fine(Fixture *f, gconstpointer data)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    for (guint16 i = 0; i < QSIZE; i++)
        put_desc(f, i, DATA_GPA + 64 * i, 64, i + 1 < QSIZE ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    make_available(f, 0, 1);
    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_OK);
    g_assert_cmpuint(chain->n_out, ==, QSIZE);
}

static void test_out_of_ram(Fixture *f, gconstpointer data)
{
    put_desc(f, 0, 0x7fff00000000ULL, 512, 0, 0);
    make_available(f, 0, 1);
    assert_broken(f, "not guest RAM");
}

static void test_huge_length(Fixture *f, gconstpointer data)
{
    put_desc(f, 0, DATA_GPA, G_MAXUINT32, VIRTQ_DESC_F_WRITE, 0);
    make_available(f, 0, 1);
    assert_broken(f, "not guest RAM");
    /* Ending exactly at the end of RAM is fine; one byte more is not. */
    put_desc(f, 0, RAM_SIZE - 4096, 4096, 0, 0);
    f->vq.last_avail = f->avail_idx - 1;
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    g_assert_cmpint(pop(f, chain, NULL), ==, MVM_VQ_POP_OK);
    put_desc(f, 0, RAM_SIZE - 4096, 4097, 0, 0);
    f->vq.last_avail = f->avail_idx - 1;
    assert_broken(f, "not guest RAM");
    /* And an address that wraps around 2^64. */
    put_desc(f, 0, G_MAXUINT64 - 8, 64, 0, 0);
    f->vq.last_avail = f->avail_idx - 1;
    assert_broken(f, "not guest RAM");
}

static void test_bad_indexes(Fixture *f, gconstpointer data)
{
    make_available(f, QSIZE, 1); /* head beyond the table */
    assert_broken(f, "beyond the queue size");
    f->vq.last_avail = f->avail_idx;
    put_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 999);
    make_available(f, 0, 1);
    assert_broken(f, "beyond the queue size");
    f->vq.last_avail = f->avail_idx;
    put_desc(f, 0, DATA_GPA, 16, 0, 0);
    make_available(f, 0, QSIZE + 1); /* the index jumps past the ring */
    assert_broken(f, "more than the queue size");
}

static void test_direction_and_indirect(Fixture *f, gconstpointer data)
{
    put_desc(f, 0, DATA_GPA, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, DATA_GPA, 16, 0, 0);
    make_available(f, 0, 1);
    assert_broken(f, "device-readable after a device-writable");
    put_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
    assert_broken(f, "indirect");
}

#define ADD(path, func)                                                                            \
    g_test_add("/virtqueue/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/virtqueue/enable-checks", test_enable_checks);
    ADD("empty-and-disabled", test_empty_and_disabled);
    ADD("chain-and-copies", test_chain_and_copies);
    ADD("index-wraps", test_index_wraps);
    ADD("interrupt-suppression", test_interrupt_suppression);
    ADD("loop", test_loop);
    ADD("longest-chain", test_longest_chain_is_fine);
    ADD("out-of-ram", test_out_of_ram);
    ADD("huge-length", test_huge_length);
    ADD("bad-indexes", test_bad_indexes);
    ADD("direction-and-indirect", test_direction_and_indirect);
    return g_test_run();
}
