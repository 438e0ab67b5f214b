/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the I/O bus and the test device that sits on it. */
#include <glib.h>
#include <string.h>

#include "devices.h"
#include "iobus.h"
#include "layout.h"
#include "microvm.h"

typedef struct {
    guint n_reads, n_writes;
    guint64 offset;
    guint len;
    guint8 data[8];
} Recorder;

static void rec_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    Recorder *r = opaque;

    r->n_reads++;
    r->offset = offset;
    r->len = len;
    for (guint i = 0; i < len; i++)
        data[i] = (guint8)(0x10 + i);
}

static void rec_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    Recorder *r = opaque;

    r->n_writes++;
    r->offset = offset;
    r->len = len;
    memcpy(r->data, data, len);
}

static const MvmIoOps rec_ops = {.read = rec_read, .write = rec_write};

static gboolean reg(MvmIoBus *bus, MvmIoSpace space, guint64 base, guint64 len, gpointer opaque,
                    const char *name, GError **error)
{
    return mvm_io_bus_register(bus, space, base, len, &rec_ops, opaque, name, error);
}

static void test_dispatch(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    g_autoptr(GError) error = NULL;
    Recorder pio = {0}, mmio = {0};
    guint8 buf[8];
    const guint8 wdata[4] = {0xde, 0xad, 0xbe, 0xef};

    g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0x3f8, 8, &pio, "uart", &error));
    g_assert_no_error(error);
    /* The same numbers in the other space do not conflict. */
    g_assert_true(reg(bus, MVM_IO_SPACE_MMIO, 0x3f8, 8, &mmio, "mmio", &error));
    g_assert_no_error(error);

    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, 0x3fd, buf, 1));
    g_assert_cmpuint(pio.n_reads, ==, 1);
    g_assert_cmpuint(pio.offset, ==, 5);
    g_assert_cmpuint(pio.len, ==, 1);
    g_assert_cmpuint(buf[0], ==, 0x10);
    g_assert_cmpuint(mmio.n_reads, ==, 0);

    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_MMIO, 0x3fc, wdata, 4));
    g_assert_cmpuint(mmio.n_writes, ==, 1);
    g_assert_cmpuint(mmio.offset, ==, 4);
    g_assert_cmpuint(mmio.len, ==, 4);
    g_assert_cmpmem(mmio.data, 4, wdata, 4);
    g_assert_cmpuint(pio.n_writes, ==, 0);

    /* An 8-byte access that exactly covers the range. */
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, 0x3f8, buf, 8));
    g_assert_cmpuint(mmio.offset, ==, 0);
    g_assert_cmpuint(mmio.len, ==, 8);
    g_assert_cmpuint(buf[7], ==, 0x17);
}

static void assert_overlap(MvmIoBus *bus, MvmIoSpace space, guint64 base, guint64 len)
{
    g_autoptr(GError) error = NULL;
    Recorder r = {0};

    g_assert_false(reg(bus, space, base, len, &r, "newcomer", &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "newcomer"));
    g_assert_nonnull(strstr(error->message, "resident"));
}

static void test_overlap(gconstpointer data)
{
    MvmIoSpace space = GPOINTER_TO_INT(data);
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    g_autoptr(GError) error = NULL;
    Recorder r = {0};
    guint8 buf[1];

    g_assert_true(reg(bus, space, 0x100, 0x10, &r, "resident", &error));
    g_assert_no_error(error);

    assert_overlap(bus, space, 0x100, 0x10); /* identical */
    assert_overlap(bus, space, 0xf8, 0x9);   /* ends on the first byte */
    assert_overlap(bus, space, 0x10f, 0x1);  /* the last byte */
    assert_overlap(bus, space, 0x104, 0x4);  /* inside */
    assert_overlap(bus, space, 0x0, 0x1000); /* around */
    assert_overlap(bus, space, 0x108, 0x100);

    /* Adjacent ranges on both sides are fine. */
    g_assert_true(reg(bus, space, 0xf0, 0x10, &r, "below", &error));
    g_assert_no_error(error);
    g_assert_true(reg(bus, space, 0x110, 0x10, &r, "above", &error));
    g_assert_no_error(error);

    /* A refused registration left nothing behind. */
    g_assert_false(mvm_io_bus_read(bus, space, 0x200, buf, 1));
    g_assert_true(mvm_io_bus_read(bus, space, 0x10f, buf, 1));
}

static void assert_refused(MvmIoBus *bus, MvmIoSpace space, guint64 base, guint64 len)
{
    g_autoptr(GError) error = NULL;
    Recorder r = {0};

    g_assert_false(reg(bus, space, base, len, &r, "bad", &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

static void test_bad_ranges(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    g_autoptr(GError) error = NULL;
    Recorder r = {0};
    guint8 buf[8];

    assert_refused(bus, MVM_IO_SPACE_MMIO, 0x1000, 0);
    assert_refused(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64, 2);
    assert_refused(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64 - 0xfff, 0x1000); /* ends at 2^64 */
    assert_refused(bus, MVM_IO_SPACE_MMIO, 0x1000, G_MAXUINT64);
    assert_refused(bus, MVM_IO_SPACE_PIO, 0xfff8, 0x10);
    assert_refused(bus, MVM_IO_SPACE_PIO, 0x10000, 1);

    /* The highest representable range and the last port work. */
    g_assert_true(reg(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64 - 0x1000, 0x1000, &r, "top", &error));
    g_assert_no_error(error);
    g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0xfffc, 4, &r, "last", &error));
    g_assert_no_error(error);
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64 - 8, buf, 8));
    g_assert_cmpuint(r.offset, ==, 0xff8);
    /* Accesses that would wrap past 2^64 are unhandled, not misrouted. */
    g_assert_false(mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64 - 3, buf, 8));
    g_assert_false(mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, G_MAXUINT64, buf, 2));
}

static void assert_unhandled_read(MvmIoBus *bus, guint64 addr, guint len)
{
    guint8 buf[8];

    memset(buf, 0x5a, sizeof(buf));
    g_assert_false(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, addr, buf, len));
    for (guint i = 0; i < len; i++)
        g_assert_cmpuint(buf[i], ==, 0xff);
}

static void test_unhandled(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    Recorder r = {0};
    const guint8 wdata[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    guint8 buf[8];

    g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0x100, 4, &r, "dev", NULL));
    g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0x104, 4, &r, "dev2", NULL));

    assert_unhandled_read(bus, 0x50, 4);  /* nothing there */
    assert_unhandled_read(bus, 0xff, 2);  /* straddles the start */
    assert_unhandled_read(bus, 0x102, 4); /* straddles two devices */
    assert_unhandled_read(bus, 0x106, 4); /* straddles the end */
    assert_unhandled_read(bus, 0x100, 8); /* longer than the range */
    g_assert_false(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, 0x102, wdata, 4));
    g_assert_false(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, 0x108, wdata, 1));
    g_assert_cmpuint(r.n_reads + r.n_writes, ==, 0);

    /* Only lengths 1, 2, 4 and 8. */
    assert_unhandled_read(bus, 0x100, 3);
    g_assert_false(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, 0x100, wdata, 0));
    g_assert_false(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, 0x100, buf, 9));
    g_assert_false(mvm_io_bus_read(bus, (MvmIoSpace)7, 0x100, buf, 1));
    g_assert_cmpuint(r.n_reads + r.n_writes, ==, 0);

    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, 0x103, buf, 1));
    g_assert_cmpuint(r.offset, ==, 3);
}

static void test_no_read_op(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    const MvmIoOps write_only = {.write = rec_write};
    Recorder r = {0};
    guint8 buf[4] = {0};

    g_assert_true(mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, 0x80, 1, &write_only, &r, "wo", NULL));
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, 0x80, buf, 1));
    g_assert_cmpuint(buf[0], ==, 0xff);
}

/* Many ranges registered out of order: every lookup finds its own. */
static void test_many_ranges(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    Recorder recs[64] = {0};
    guint order[64];

    for (guint i = 0; i < 64; i++)
        order[i] = i;
    for (guint i = 63; i > 0; i--) {
        guint j = (guint)g_test_rand_int_range(0, (gint32)i + 1), t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (guint i = 0; i < 64; i++) {
        guint k = order[i];

        g_assert_true(
            reg(bus, MVM_IO_SPACE_MMIO, 0x10000 + k * 0x100ULL, 0x80, &recs[k], "r", NULL));
    }
    for (guint k = 0; k < 64; k++) {
        guint8 buf[4];

        g_assert_true(
            mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, 0x10000 + k * 0x100ULL + 0x7c, buf, 4));
        g_assert_cmpuint(recs[k].n_reads, ==, 1);
        g_assert_cmpuint(recs[k].offset, ==, 0x7c);
        g_assert_false(
            mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, 0x10000 + k * 0x100ULL + 0x80, buf, 1));
    }
}

/* Lookups on other threads stay correct while ranges are added. */
typedef struct {
    MvmIoBus *bus;
    gint stop;
    guint64 hits;
} Reader;

static gpointer reader_thread(gpointer data)
{
    Reader *rd = data;

    while (!g_atomic_int_get(&rd->stop)) {
        guint8 buf[1];

        g_assert_true(mvm_io_bus_read(rd->bus, MVM_IO_SPACE_PIO, 0x3f8, buf, 1));
        rd->hits++;
    }
    return NULL;
}

static void test_concurrent_register(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    Recorder fixed = {0}, others = {0};
    Reader rd = {.bus = bus};
    GThread *thread;

    g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0x3f8, 8, &fixed, "fixed", NULL));
    thread = g_thread_new("reader", reader_thread, &rd);
    for (guint i = 0; i < 200; i++)
        g_assert_true(reg(bus, MVM_IO_SPACE_PIO, 0x1000 + i * 4, 4, &others, "other", NULL));
    g_atomic_int_set(&rd.stop, 1);
    g_thread_join(thread);
    g_assert_cmpuint(others.n_reads, ==, 0);
}

/* ---- test device ---- */

typedef struct {
    guint n_exits, n_markers;
    guint32 exit_code, marker;
} TestDevLog;

static void on_debug_exit(gpointer opaque, guint32 code)
{
    TestDevLog *log = opaque;

    log->n_exits++;
    log->exit_code = code;
}

static void on_marker(gpointer opaque, guint32 marker)
{
    TestDevLog *log = opaque;

    log->n_markers++;
    log->marker = marker;
}

static void test_testdev_ports(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    TestDevLog log = {0};
    g_autoptr(MvmTestDev) dev = mvm_testdev_new(on_debug_exit, on_marker, &log);
    g_autoptr(GError) error = NULL;
    const guint8 v32[4] = {0x78, 0x56, 0x34, 0x12};
    const guint8 v16[2] = {0x34, 0x12};
    const guint8 v8[1] = {0x2a};
    guint8 buf[4];

    g_assert_true(mvm_testdev_attach(dev, bus, &error));
    g_assert_no_error(error);

    /* NOT scratch. */
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, buf, 4));
    g_assert_cmpuint(buf[0] & buf[1] & buf[2] & buf[3], ==, 0xff);
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, v32, 4));
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, buf, 4));
    g_assert_cmpuint(buf[0], ==, 0x87);
    g_assert_cmpuint(buf[1], ==, 0xa9);
    g_assert_cmpuint(buf[2], ==, 0xcb);
    g_assert_cmpuint(buf[3], ==, 0xed);
    /* Narrow accesses do not touch it. */
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, v8, 1));
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, buf, 2));
    g_assert_cmpuint(buf[0] & buf[1], ==, 0xff);
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, buf, 4));
    g_assert_cmpuint(buf[0], ==, 0x87);

    /* Markers and exit codes, 1, 2 and 4 bytes wide. */
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_MARKER_PORT, v16, 2));
    g_assert_cmpuint(log.n_markers, ==, 1);
    g_assert_cmpuint(log.marker, ==, 0x1234);
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_MARKER_PORT + 1, v8, 1));
    g_assert_cmpuint(log.n_markers, ==, 1);
    g_assert_cmpuint(log.n_exits, ==, 0);

    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_DEBUG_EXIT_PORT, v8, 1));
    g_assert_cmpuint(log.exit_code, ==, 0x2a);
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_DEBUG_EXIT_PORT, v16, 2));
    g_assert_cmpuint(log.exit_code, ==, 0x1234);
    g_assert_true(mvm_io_bus_write(bus, MVM_IO_SPACE_PIO, MVM_DEBUG_EXIT_PORT, v32, 4));
    g_assert_cmpuint(log.exit_code, ==, 0x12345678);
    g_assert_cmpuint(log.n_exits, ==, 3);
    g_assert_true(mvm_io_bus_read(bus, MVM_IO_SPACE_PIO, MVM_DEBUG_EXIT_PORT, buf, 1));
    g_assert_cmpuint(buf[0], ==, 0xff);
    g_assert_cmpuint(log.n_exits, ==, 3);
}

static guint64 mmio_read64(MvmIoBus *bus, guint64 offset, guint len)
{
    guint8 buf[8];
    guint64 v = 0;

    g_assert_true(
        mvm_io_bus_read(bus, MVM_IO_SPACE_MMIO, MVM_TESTDEV_MMIO_ADDR + offset, buf, len));
    for (guint i = 0; i < len; i++)
        v |= (guint64)buf[i] << (8 * i);
    return v;
}

static void mmio_write64(MvmIoBus *bus, guint64 offset, guint64 value, guint len)
{
    guint8 buf[8];

    for (guint i = 0; i < len; i++)
        buf[i] = (guint8)(value >> (8 * i));
    g_assert_true(
        mvm_io_bus_write(bus, MVM_IO_SPACE_MMIO, MVM_TESTDEV_MMIO_ADDR + offset, buf, len));
}

static void test_testdev_mmio(void)
{
    g_autoptr(MvmIoBus) bus = mvm_io_bus_new();
    g_autoptr(MvmTestDev) dev = mvm_testdev_new(NULL, NULL, NULL);

    g_assert_true(mvm_testdev_attach(dev, bus, NULL));

    g_assert_cmpuint(mmio_read64(bus, 8, 8), ==, 0); /* nothing before this access */
    mmio_write64(bus, 0, 0x0123456789abcdefULL, 8);
    g_assert_cmpuint(mmio_read64(bus, 0, 8), ==, ~0x0123456789abcdefULL);
    g_assert_cmpuint(mmio_read64(bus, 0, 4), ==, 0x76543210);
    mmio_write64(bus, 0, 0xcafef00d, 4);
    g_assert_cmpuint(mmio_read64(bus, 0, 4), ==, 0x35010ff2);
    g_assert_cmpuint(mmio_read64(bus, 0, 8), ==, ~0xcafef00dULL);
    /* Elsewhere on the page: ignored / all-ones, but counted. */
    mmio_write64(bus, 0x800, 1, 4);
    g_assert_cmpuint(mmio_read64(bus, 0x10, 4), ==, 0xffffffff);
    g_assert_cmpuint(mmio_read64(bus, 8, 8), ==, 9);
    g_assert_cmpuint(mmio_read64(bus, 8, 4), ==, 10);
    g_assert_cmpuint(mmio_read64(bus, 12, 4), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/iobus/dispatch", test_dispatch);
    g_test_add_data_func("/iobus/overlap/pio", GINT_TO_POINTER(MVM_IO_SPACE_PIO), test_overlap);
    g_test_add_data_func("/iobus/overlap/mmio", GINT_TO_POINTER(MVM_IO_SPACE_MMIO), test_overlap);
    g_test_add_func("/iobus/bad-ranges", test_bad_ranges);
    g_test_add_func("/iobus/unhandled", test_unhandled);
    g_test_add_func("/iobus/no-read-op", test_no_read_op);
    g_test_add_func("/iobus/many-ranges", test_many_ranges);
    g_test_add_func("/iobus/concurrent-register", test_concurrent_register);
    g_test_add_func("/testdev/ports", test_testdev_ports);
    g_test_add_func("/testdev/mmio", test_testdev_mmio);
    return g_test_run();
}
