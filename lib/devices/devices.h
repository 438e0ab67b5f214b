/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Legacy devices: the 16550A UART (COM1), the i8042 keyboard controller
 * (reset and Ctrl-Alt-Del), and the debug/test device that only test guests
 * get. Each is transport-free: it registers its ranges on an MvmIoBus and
 * raises its interrupt through a callback (the VM wires that to KVM_IRQ_LINE).
 */
#pragma once

#include <glib.h>

#include "iobus.h"

G_BEGIN_DECLS

/*
 * Raise (level TRUE) or lower an interrupt line. Called from vCPU threads, and
 * from whichever thread queues serial input or sends Ctrl-Alt-Del, with the
 * device's lock held and only when the level changes (restore always calls
 * it once): it must not call back into the device.
 */
typedef void (*MvmIrqFunc)(gpointer opaque, guint32 gsi, gboolean level);

/* ---- 16550A UART ---- */
typedef struct _MvmSerial MvmSerial;

/* Bytes the guest transmitted. Called on the vCPU thread, with no device lock held. */
typedef void (*MvmSerialOutputFunc)(gpointer opaque, const guint8 *data, gsize len);

MvmSerial *mvm_serial_new(guint32 gsi, MvmIrqFunc irq, gpointer irq_opaque,
                          MvmSerialOutputFunc output, gpointer output_opaque);
void mvm_serial_free(MvmSerial *serial);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmSerial, mvm_serial_free)
gboolean mvm_serial_attach(MvmSerial *serial, MvmIoBus *bus, guint16 port, GError **error);
/* Queue input for the guest (bounded FIFO; returns bytes accepted). Any thread. */
gsize mvm_serial_queue_input(MvmSerial *serial, const guint8 *data, gsize len);
/*
 * Register state and queued input for snapshots. save returns a new, non-floating
 * reference; restore validates the variant (type, version, sizes) and masks
 * register values, so untrusted data cannot break the device.
 */
GVariant *mvm_serial_save(MvmSerial *serial);
gboolean mvm_serial_restore(MvmSerial *serial, GVariant *state, GError **error);

/* ---- i8042 ---- */
typedef struct _MvmI8042 MvmI8042;

/*
 * The guest asked for a CPU reset (command 0xfe on port 0x64, or output port
 * bit 0 cleared). Called on the vCPU thread, with no device lock held.
 */
typedef void (*MvmResetFunc)(gpointer opaque);

MvmI8042 *mvm_i8042_new(guint32 kbd_gsi, MvmIrqFunc irq, gpointer irq_opaque, MvmResetFunc reset,
                        gpointer reset_opaque);
void mvm_i8042_free(MvmI8042 *i8042);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmI8042, mvm_i8042_free)
gboolean mvm_i8042_attach(MvmI8042 *i8042, MvmIoBus *bus, GError **error);
/* Host-requested Ctrl-Alt-Del: queues the scancodes and raises IRQ 1. Any thread. */
void mvm_i8042_send_ctrl_alt_del(MvmI8042 *i8042);
/* As for the serial port: save returns a new, non-floating reference. */
GVariant *mvm_i8042_save(MvmI8042 *i8042);
gboolean mvm_i8042_restore(MvmI8042 *i8042, GVariant *state, GError **error);

/* ---- test device (test guests only) ---- */
typedef struct _MvmTestDev MvmTestDev;

/* Both called on the vCPU thread, with no lock held. The ABI is described in testdev.c. */
typedef void (*MvmDebugExitFunc)(gpointer opaque, guint32 code);
typedef void (*MvmMarkerFunc)(gpointer opaque, guint32 marker);

MvmTestDev *mvm_testdev_new(MvmDebugExitFunc exit_func, MvmMarkerFunc marker_func, gpointer opaque);
void mvm_testdev_free(MvmTestDev *dev);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmTestDev, mvm_testdev_free)
/* Registers MVM_DEBUG_EXIT_PORT, MVM_TESTDEV_PORT, MVM_TESTDEV_MARKER_PORT and the MMIO page. */
gboolean mvm_testdev_attach(MvmTestDev *dev, MvmIoBus *bus, GError **error);

G_END_DECLS
