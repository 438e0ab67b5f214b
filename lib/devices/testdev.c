/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The test device: only VMs configured with debug-exit (test guests) get it.
 *
 * ABI (test guests rely on exactly this; all values little-endian):
 *
 *   Port 0xf0-0xf3  MVM_TESTDEV_PORT, 32-bit scratch register.
 *                   A 4-byte write at 0xf0 stores V; a 4-byte read at 0xf0
 *                   returns ~V (the bitwise NOT of the last 4-byte write;
 *                   0xffffffff before any write). A round trip proves the
 *                   host has processed the write. Any other width or port:
 *                   writes are ignored, reads return all-ones.
 *
 *   Port 0xf4-0xf7  MVM_DEBUG_EXIT_PORT. A 1-, 2- or 4-byte write at 0xf4
 *                   of V (zero-extended to 32 bits) ends the VM with exit
 *                   code V. Writes to 0xf5-0xf7 are ignored; reads return
 *                   all-ones.
 *
 *   Port 0xf8-0xfb  MVM_TESTDEV_MARKER_PORT. A 1-, 2- or 4-byte write at
 *                   0xf8 of V (zero-extended) records marker V with the
 *                   host's monotonic time. Writes to 0xf9-0xfb are ignored;
 *                   reads return all-ones.
 *
 *   MMIO page MVM_TESTDEV_MMIO_ADDR (0xfeb00000), 4 KiB:
 *     +0  64-bit scratch register. An 8-byte write stores V; a 4-byte write
 *         stores V zero-extended to 64 bits. An 8-byte read returns ~S, a
 *         4-byte read the low 32 bits of ~S (S = stored value, initially 0).
 *     +8  read-only 64-bit counter: the number of accesses to this page
 *         (reads and writes, any offset and width) made before this one.
 *         An 8-byte read at +8 returns it; 4-byte reads at +8 and +12
 *         return its low and high halves.
 *     Anything else on the page: writes are ignored, reads return all-ones;
 *     such accesses are still counted.
 *
 * Callbacks run on the vCPU thread that made the access, with no lock held.
 */
#include "devices.h"

#include "layout.h"

#define TESTDEV_PORT_LEN     4
#define TESTDEV_MMIO_SCRATCH 0
#define TESTDEV_MMIO_COUNTER 8

struct _MvmTestDev {
    MvmDebugExitFunc exit_func;
    MvmMarkerFunc marker_func;
    gpointer opaque;

    GMutex lock; /* guards the scratch registers and the counter against concurrent vCPUs */
    guint32 pio_scratch;
    guint64 mmio_scratch;
    guint64 mmio_accesses;
};

/* Little-endian load/store of 1..8 bytes. */
static guint64 load_le(const guint8 *data, guint len)
{
    guint64 value = 0;

    for (guint i = 0; i < len && i < 8; i++)
        value |= (guint64)data[i] << (8 * i);
    return value;
}

static void store_le(guint8 *data, guint len, guint64 value)
{
    for (guint i = 0; i < len && i < 8; i++)
        data[i] = (guint8)(value >> (8 * i));
}

static gboolean small_write(guint64 offset, guint len)
{
    return offset == 0 && (len == 1 || len == 2 || len == 4);
}

/* ---- port 0xf0: 32-bit NOT scratch ---- */

static void scratch_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;

    if (offset != 0 || len != 4)
        return; /* the bus pre-filled all-ones */
    g_mutex_lock(&dev->lock);
    store_le(data, len, ~dev->pio_scratch);
    g_mutex_unlock(&dev->lock);
}

static void scratch_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;

    if (offset != 0 || len != 4)
        return;
    g_mutex_lock(&dev->lock);
    dev->pio_scratch = (guint32)load_le(data, len);
    g_mutex_unlock(&dev->lock);
}

/* ---- ports 0xf4 (exit) and 0xf8 (marker) ---- */

static void exit_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;

    if (small_write(offset, len) && dev->exit_func != NULL)
        dev->exit_func(dev->opaque, (guint32)load_le(data, len));
}

static void marker_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;

    if (small_write(offset, len) && dev->marker_func != NULL)
        dev->marker_func(dev->opaque, (guint32)load_le(data, len));
}

/* ---- MMIO page ---- */

static void mmio_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&dev->lock);
    guint64 count = dev->mmio_accesses++;

    if (offset == TESTDEV_MMIO_SCRATCH && (len == 4 || len == 8))
        store_le(data, len, ~dev->mmio_scratch);
    else if (offset == TESTDEV_MMIO_COUNTER && (len == 4 || len == 8))
        store_le(data, len, count);
    else if (offset == TESTDEV_MMIO_COUNTER + 4 && len == 4)
        store_le(data, len, count >> 32);
}

static void mmio_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmTestDev *dev = opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&dev->lock);

    dev->mmio_accesses++;
    if (offset == TESTDEV_MMIO_SCRATCH && (len == 4 || len == 8))
        dev->mmio_scratch = load_le(data, len);
}

static const MvmIoOps scratch_ops = {.read = scratch_read, .write = scratch_write};
static const MvmIoOps exit_ops = {.write = exit_write};
static const MvmIoOps marker_ops = {.write = marker_write};
static const MvmIoOps mmio_ops = {.read = mmio_read, .write = mmio_write};

/* ---- public API ---- */

MvmTestDev *mvm_testdev_new(MvmDebugExitFunc exit_func, MvmMarkerFunc marker_func, gpointer opaque)
{
    MvmTestDev *dev = g_new0(MvmTestDev, 1);

    dev->exit_func = exit_func;
    dev->marker_func = marker_func;
    dev->opaque = opaque;
    g_mutex_init(&dev->lock);
    return dev;
}

void mvm_testdev_free(MvmTestDev *dev)
{
    if (dev == NULL)
        return;
    g_mutex_clear(&dev->lock);
    g_free(dev);
}

gboolean mvm_testdev_attach(MvmTestDev *dev, MvmIoBus *bus, GError **error)
{
    g_return_val_if_fail(dev != NULL, FALSE);
    g_return_val_if_fail(bus != NULL, FALSE);

    return mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_PORT, TESTDEV_PORT_LEN,
                               &scratch_ops, dev, "testdev scratch", error) &&
           mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, MVM_DEBUG_EXIT_PORT, TESTDEV_PORT_LEN,
                               &exit_ops, dev, "debug exit", error) &&
           mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, MVM_TESTDEV_MARKER_PORT, TESTDEV_PORT_LEN,
                               &marker_ops, dev, "testdev marker", error) &&
           mvm_io_bus_register(bus, MVM_IO_SPACE_MMIO, MVM_TESTDEV_MMIO_ADDR, MVM_TESTDEV_MMIO_SIZE,
                               &mmio_ops, dev, "testdev mmio", error);
}
