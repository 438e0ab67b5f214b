/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The I/O bus: port and MMIO ranges mapped to device callbacks. vCPU threads
 * dispatch their PIO and MMIO exits here. Registration happens before the
 * vCPUs start; lookups after that take no lock.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
    MVM_IO_SPACE_PIO,
    MVM_IO_SPACE_MMIO,
} MvmIoSpace;

/*
 * @offset is relative to the start of the registered range; @data holds @len
 * bytes (1, 2, 4 or 8) in guest (little-endian) order. A read callback fills
 * @data; an unhandled read should leave all-ones, which the bus pre-fills.
 */
typedef void (*MvmIoReadFunc)(gpointer opaque, guint64 offset, guint8 *data, guint len);
typedef void (*MvmIoWriteFunc)(gpointer opaque, guint64 offset, const guint8 *data, guint len);

typedef struct {
    MvmIoReadFunc read;
    MvmIoWriteFunc write;
} MvmIoOps;

typedef struct _MvmIoBus MvmIoBus;

MvmIoBus *mvm_io_bus_new(void);
void mvm_io_bus_free(MvmIoBus *bus);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmIoBus, mvm_io_bus_free)

/* Fails with MVM_ERROR_INVALID_ARGUMENT when [base, base + len) overlaps a registered range. */
gboolean mvm_io_bus_register(MvmIoBus *bus, MvmIoSpace space, guint64 base, guint64 len,
                             const MvmIoOps *ops, gpointer opaque, const char *name,
                             GError **error);

/*
 * Dispatch an access. Returns FALSE when no device covers the whole access
 * (reads then return all-ones, writes are dropped); the caller counts it.
 */
gboolean mvm_io_bus_read(MvmIoBus *bus, MvmIoSpace space, guint64 addr, guint8 *data, guint len);
gboolean mvm_io_bus_write(MvmIoBus *bus, MvmIoSpace space, guint64 addr, const guint8 *data,
                          guint len);

G_END_DECLS
