/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * i8042 keyboard controller with a minimal PS/2 keyboard behind it, enough
 * for what a microVM needs: the guest resetting the machine (command 0xfe or
 * output port bit 0, the way Linux's reboot=k does it) and the host sending
 * Ctrl-Alt-Del (Linux's atkbd turns it into an orderly reboot).
 *
 * References: IBM PC AT Technical Reference (keyboard controller commands,
 * status register, command byte), IBM PS/2 Hardware Interface Technical
 * Reference (keyboard commands and responses, scan code sets 1 and 2).
 *
 * Model:
 * - The controller and keyboard answer instantly: the input buffer is never
 *   full (status bit 1 stays 0), so kb_wait()-style polls never spin.
 * - Bytes for the guest (controller replies, keyboard replies and scan codes)
 *   wait in one small FIFO; its head is the output buffer (status bit 0).
 * - There is no auxiliary (mouse) device. The AUX loopback command (0xd3)
 *   echoes its byte without the AUX data bit, and the AUX interface test
 *   (0xa9) reports "clock line stuck low": Linux's i8042 driver then decides
 *   at once that there is no AUX port instead of waiting for timeouts.
 * - The keyboard interrupt (kbd_gsi) is high while the output buffer is full
 *   and the command byte enables it. Reading the data port drops the line
 *   before raising it again for the next byte, so an edge-triggered IOAPIC
 *   pin sees one edge per byte.
 *
 * Locking: one mutex guards the state; the interrupt callback is called with
 * it held (it must not call back into this device), the reset callback with
 * no lock held, on the vCPU thread that asked for the reset.
 */
#include "devices.h"

#include "layout.h"
#include "microvm.h"

/* Status register (port 0x64, read). */
#define I8042_STR_OBF     0x01 /* output buffer full */
#define I8042_STR_IBF     0x02 /* input buffer full; always 0 here */
#define I8042_STR_SYS     0x04 /* system flag, mirrors command byte bit 2 */
#define I8042_STR_CMD     0x08 /* last write was to port 0x64 */
#define I8042_STR_KEYLOCK 0x10 /* 1: keyboard not inhibited */
#define I8042_STR_AUXDATA 0x20

/* Command byte (controller RAM byte 0). */
#define I8042_CTR_KBDINT 0x01
#define I8042_CTR_AUXINT 0x02
#define I8042_CTR_SYS    0x04
#define I8042_CTR_KBDDIS 0x10
#define I8042_CTR_AUXDIS 0x20
#define I8042_CTR_XLATE  0x40
/* What firmware leaves behind: translation on, keyboard interrupt on, no AUX. */
#define I8042_CTR_DEFAULT (I8042_CTR_XLATE | I8042_CTR_AUXDIS | I8042_CTR_SYS | I8042_CTR_KBDINT)

/* Controller commands (port 0x64, write). */
#define I8042_CMD_READ_CTR     0x20
#define I8042_CMD_WRITE_CTR    0x60
#define I8042_CMD_AUX_DISABLE  0xa7
#define I8042_CMD_AUX_ENABLE   0xa8
#define I8042_CMD_AUX_TEST     0xa9
#define I8042_CMD_SELF_TEST    0xaa
#define I8042_CMD_KBD_TEST     0xab
#define I8042_CMD_KBD_DISABLE  0xad
#define I8042_CMD_KBD_ENABLE   0xae
#define I8042_CMD_READ_OUTP    0xd0
#define I8042_CMD_WRITE_OUTP   0xd1
#define I8042_CMD_WRITE_KBD_OB 0xd2
#define I8042_CMD_WRITE_AUX_OB 0xd3
#define I8042_CMD_WRITE_AUX    0xd4
#define I8042_CMD_PULSE_FIRST  0xf0 /* 0xf0-0xff pulse output port bits 0-3 low where clear */

#define I8042_SELF_TEST_OK    0x55
#define I8042_KBD_TEST_OK     0x00
#define I8042_AUX_TEST_NO_CLK 0x01

/* Output port (0xd0/0xd1): bit 0 low holds the CPU in reset, bit 1 is the A20 gate. */
#define I8042_OUTP_RESET   0x01
#define I8042_OUTP_A20     0x02
#define I8042_OUTP_DEFAULT (I8042_OUTP_RESET | I8042_OUTP_A20)

/* Keyboard commands (port 0x60, write, no controller command pending) and replies. */
#define KBD_CMD_SET_LEDS 0xed
#define KBD_CMD_ECHO     0xee
#define KBD_CMD_SCANSET  0xf0
#define KBD_CMD_GETID    0xf2
#define KBD_CMD_SETREP   0xf3
#define KBD_CMD_ENABLE   0xf4
#define KBD_CMD_DISABLE  0xf5 /* and restore defaults */
#define KBD_CMD_DEFAULTS 0xf6
#define KBD_CMD_RESET    0xff
#define KBD_REPLY_ACK    0xfa
#define KBD_REPLY_BAT_OK 0xaa
#define KBD_REPLY_ECHO   0xee

#define I8042_QUEUE_SIZE 32

#define I8042_STATE_VERSION 1
/* version, command byte, status CMD bit, output port, pending controller command,
 * pending keyboard command, keyboard scanning, last byte read, queued bytes */
#define I8042_STATE_TYPE   "(uyyyyybyay)"
#define I8042_STATE_FORMAT "(uyyyyyby@ay)" /* the same, for g_variant_new/get */

struct _MvmI8042 {
    GMutex lock;
    guint32 gsi;
    MvmIrqFunc irq;
    gpointer irq_opaque;
    MvmResetFunc reset;
    gpointer reset_opaque;

    guint8 ctr;         /* command byte */
    guint8 status_cmd;  /* I8042_STR_CMD or 0 */
    guint8 outp;        /* output port */
    guint8 pending_cmd; /* controller command waiting for its data byte, or 0 */
    guint8 kbd_pending; /* keyboard command waiting for its parameter, or 0 */
    gboolean kbd_scanning;
    guint8 last_read; /* what the data port returns when the buffer is empty */
    gboolean irq_level;

    guint8 queue[I8042_QUEUE_SIZE];
    guint queue_head, queue_len;
};

/* ---- output queue and interrupt (lock held) ---- */

static void queue_push(MvmI8042 *k, guint8 byte)
{
    if (k->queue_len == I8042_QUEUE_SIZE)
        return; /* a keyboard drops keys when its buffer overflows */
    k->queue[(k->queue_head + k->queue_len) % I8042_QUEUE_SIZE] = byte;
    k->queue_len++;
}

static guint8 queue_pop(MvmI8042 *k)
{
    guint8 byte = k->queue[k->queue_head];

    k->queue_head = (k->queue_head + 1) % I8042_QUEUE_SIZE;
    k->queue_len--;
    return byte;
}

static void set_irq(MvmI8042 *k, gboolean level, gboolean force)
{
    if (level == k->irq_level && !force)
        return;
    k->irq_level = level;
    if (k->irq != NULL)
        k->irq(k->irq_opaque, k->gsi, level);
}

static void update_irq(MvmI8042 *k)
{
    set_irq(k, k->queue_len > 0 && (k->ctr & I8042_CTR_KBDINT), FALSE);
}

/* Bytes from the keyboard only reach the controller while its interface is enabled. */
static void kbd_send(MvmI8042 *k, guint8 byte)
{
    if (!(k->ctr & I8042_CTR_KBDDIS))
        queue_push(k, byte);
}

/* ---- the keyboard (lock held) ---- */

static void kbd_reset_defaults(MvmI8042 *k)
{
    k->kbd_pending = 0;
    k->kbd_scanning = TRUE;
}

static void kbd_param(MvmI8042 *k, guint8 cmd, guint8 value)
{
    kbd_send(k, KBD_REPLY_ACK);
    /* Scan code set 0 queries the current set: always 2 (the controller translates). */
    if (cmd == KBD_CMD_SCANSET && value == 0)
        kbd_send(k, (k->ctr & I8042_CTR_XLATE) ? 0x41 : 0x02);
}

static void kbd_command(MvmI8042 *k, guint8 cmd)
{
    switch (cmd) {
    case KBD_CMD_SET_LEDS:
    case KBD_CMD_SCANSET:
    case KBD_CMD_SETREP:
        k->kbd_pending = cmd;
        kbd_send(k, KBD_REPLY_ACK);
        break;
    case KBD_CMD_ECHO:
        kbd_send(k, KBD_REPLY_ECHO);
        break;
    case KBD_CMD_GETID:
        /* MF2 keyboard: 0xab 0x83; translated, 0x83 becomes 0x41. */
        kbd_send(k, KBD_REPLY_ACK);
        kbd_send(k, 0xab);
        kbd_send(k, (k->ctr & I8042_CTR_XLATE) ? 0x41 : 0x83);
        break;
    case KBD_CMD_ENABLE:
        k->kbd_scanning = TRUE;
        kbd_send(k, KBD_REPLY_ACK);
        break;
    case KBD_CMD_DISABLE:
        k->kbd_scanning = FALSE;
        kbd_send(k, KBD_REPLY_ACK);
        break;
    case KBD_CMD_RESET:
        kbd_reset_defaults(k);
        kbd_send(k, KBD_REPLY_ACK);
        kbd_send(k, KBD_REPLY_BAT_OK);
        break;
    default: /* KBD_CMD_DEFAULTS and anything else: acknowledge */
        kbd_send(k, KBD_REPLY_ACK);
        break;
    }
}

static void kbd_write(MvmI8042 *k, guint8 value)
{
    guint8 pending = k->kbd_pending;

    if (pending != 0) {
        k->kbd_pending = 0;
        kbd_param(k, pending, value);
        return;
    }
    kbd_command(k, value);
}

/* ---- the controller (lock held) ---- */

/* Returns TRUE when the CPU must be reset. */
static gboolean write_outp(MvmI8042 *k, guint8 value)
{
    k->outp = value;
    return !(value & I8042_OUTP_RESET);
}

static guint8 read_outp(const MvmI8042 *k)
{
    /* Bit 4: output buffer full (keyboard); bit 5: AUX output buffer full (never). */
    return (k->outp & ~0x30) | (k->queue_len > 0 ? 0x10 : 0);
}

/* The data byte that follows a controller command. Returns TRUE for a reset. */
static gboolean controller_data(MvmI8042 *k, guint8 cmd, guint8 value)
{
    switch (cmd) {
    case I8042_CMD_WRITE_CTR:
        k->ctr = value;
        break;
    case I8042_CMD_WRITE_OUTP:
        return write_outp(k, value);
    case I8042_CMD_WRITE_KBD_OB:
    case I8042_CMD_WRITE_AUX_OB: /* no AUX: comes back as keyboard data, see above */
        queue_push(k, value);
        break;
    default: /* I8042_CMD_WRITE_AUX: no device to receive it */
        break;
    }
    return FALSE;
}

static gboolean controller_command(MvmI8042 *k, guint8 cmd)
{
    switch (cmd) {
    case I8042_CMD_READ_CTR:
        queue_push(k, k->ctr);
        break;
    case I8042_CMD_WRITE_CTR:
    case I8042_CMD_WRITE_OUTP:
    case I8042_CMD_WRITE_KBD_OB:
    case I8042_CMD_WRITE_AUX_OB:
    case I8042_CMD_WRITE_AUX:
        k->pending_cmd = cmd;
        break;
    case I8042_CMD_AUX_DISABLE:
        k->ctr |= I8042_CTR_AUXDIS;
        break;
    case I8042_CMD_AUX_ENABLE:
        k->ctr &= ~I8042_CTR_AUXDIS;
        break;
    case I8042_CMD_AUX_TEST:
        queue_push(k, I8042_AUX_TEST_NO_CLK);
        break;
    case I8042_CMD_SELF_TEST:
        k->ctr |= I8042_CTR_SYS;
        queue_push(k, I8042_SELF_TEST_OK);
        break;
    case I8042_CMD_KBD_TEST:
        queue_push(k, I8042_KBD_TEST_OK);
        break;
    case I8042_CMD_KBD_DISABLE:
        k->ctr |= I8042_CTR_KBDDIS;
        break;
    case I8042_CMD_KBD_ENABLE:
        k->ctr &= ~I8042_CTR_KBDDIS;
        break;
    case I8042_CMD_READ_OUTP:
        queue_push(k, read_outp(k));
        break;
    default:
        /* 0xf0-0xff pulse the output port bits whose command bit is 0; bit 0 is reset. */
        if (cmd >= I8042_CMD_PULSE_FIRST)
            return !(cmd & I8042_OUTP_RESET);
        break; /* unknown commands are ignored */
    }
    return FALSE;
}

static guint8 read_status(const MvmI8042 *k)
{
    guint8 status = k->status_cmd | I8042_STR_KEYLOCK;

    if (k->queue_len > 0)
        status |= I8042_STR_OBF;
    if (k->ctr & I8042_CTR_SYS)
        status |= I8042_STR_SYS;
    return status;
}

static guint8 read_data(MvmI8042 *k)
{
    if (k->queue_len == 0)
        return k->last_read;
    k->last_read = queue_pop(k);
    /* Reading the output buffer drops IRQ 1; the next byte raises it anew. */
    set_irq(k, FALSE, FALSE);
    return k->last_read;
}

/* Returns TRUE when the CPU must be reset. */
static gboolean write_port(MvmI8042 *k, guint16 port, guint8 value)
{
    guint8 pending = k->pending_cmd;

    if (port == MVM_I8042_COMMAND_PORT) {
        k->status_cmd = I8042_STR_CMD;
        k->pending_cmd = 0;
        return controller_command(k, value);
    }
    k->status_cmd = 0;
    if (pending != 0) {
        k->pending_cmd = 0;
        return controller_data(k, pending, value);
    }
    kbd_write(k, value);
    return FALSE;
}

/* ---- bus callbacks (vCPU threads) ---- */

static void i8042_access(MvmI8042 *k, guint16 port, guint8 *data, const guint8 *wdata, guint len)
{
    gboolean reset = FALSE;

    /* Each port is a 1-byte range, so the bus only passes byte accesses. */
    if (len != 1)
        return;
    g_mutex_lock(&k->lock);
    if (data != NULL)
        data[0] = port == MVM_I8042_DATA_PORT ? read_data(k) : read_status(k);
    else
        reset = write_port(k, port, wdata[0]);
    update_irq(k);
    g_mutex_unlock(&k->lock);

    if (reset && k->reset != NULL)
        k->reset(k->reset_opaque);
}

static void i8042_data_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    (void)offset;
    i8042_access(opaque, MVM_I8042_DATA_PORT, data, NULL, len);
}

static void i8042_data_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    (void)offset;
    i8042_access(opaque, MVM_I8042_DATA_PORT, NULL, data, len);
}

static void i8042_cmd_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    (void)offset;
    i8042_access(opaque, MVM_I8042_COMMAND_PORT, data, NULL, len);
}

static void i8042_cmd_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    (void)offset;
    i8042_access(opaque, MVM_I8042_COMMAND_PORT, NULL, data, len);
}

static const MvmIoOps i8042_data_ops = {.read = i8042_data_read, .write = i8042_data_write};
static const MvmIoOps i8042_cmd_ops = {.read = i8042_cmd_read, .write = i8042_cmd_write};

/* ---- public API ---- */

MvmI8042 *mvm_i8042_new(guint32 kbd_gsi, MvmIrqFunc irq, gpointer irq_opaque, MvmResetFunc reset,
                        gpointer reset_opaque)
{
    MvmI8042 *k = g_new0(MvmI8042, 1);

    g_mutex_init(&k->lock);
    k->gsi = kbd_gsi;
    k->irq = irq;
    k->irq_opaque = irq_opaque;
    k->reset = reset;
    k->reset_opaque = reset_opaque;
    k->ctr = I8042_CTR_DEFAULT;
    k->outp = I8042_OUTP_DEFAULT;
    kbd_reset_defaults(k);
    return k;
}

void mvm_i8042_free(MvmI8042 *i8042)
{
    if (i8042 == NULL)
        return;
    g_mutex_clear(&i8042->lock);
    g_free(i8042);
}

gboolean mvm_i8042_attach(MvmI8042 *i8042, MvmIoBus *bus, GError **error)
{
    g_return_val_if_fail(i8042 != NULL, FALSE);
    g_return_val_if_fail(bus != NULL, FALSE);

    return mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, MVM_I8042_DATA_PORT, 1, &i8042_data_ops,
                               i8042, "i8042 data", error) &&
           mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, MVM_I8042_COMMAND_PORT, 1, &i8042_cmd_ops,
                               i8042, "i8042 command", error);
}

/* Ctrl, Alt, Delete pressed, then released in reverse order. */
static const guint8 ctrl_alt_del_set1[] = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
static const guint8 ctrl_alt_del_set2[] = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0,
                                           0x71, 0xf0, 0x11, 0xf0, 0x14};

void mvm_i8042_send_ctrl_alt_del(MvmI8042 *i8042)
{
    g_autoptr(GMutexLocker) locker = NULL;
    gboolean xlate;

    g_return_if_fail(i8042 != NULL);

    locker = g_mutex_locker_new(&i8042->lock);
    if (!i8042->kbd_scanning)
        return; /* the guest disabled the keyboard: it sends no keys */
    /* The guest sees set 1 when the controller translates (the usual case), else set 2. */
    xlate = i8042->ctr & I8042_CTR_XLATE;
    if (xlate) {
        for (guint i = 0; i < G_N_ELEMENTS(ctrl_alt_del_set1); i++)
            kbd_send(i8042, ctrl_alt_del_set1[i]);
    } else {
        for (guint i = 0; i < G_N_ELEMENTS(ctrl_alt_del_set2); i++)
            kbd_send(i8042, ctrl_alt_del_set2[i]);
    }
    update_irq(i8042);
}

static GVariant *queue_to_variant(const MvmI8042 *k)
{
    guint8 bytes[I8042_QUEUE_SIZE];

    for (guint i = 0; i < k->queue_len; i++)
        bytes[i] = k->queue[(k->queue_head + i) % I8042_QUEUE_SIZE];
    return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes, k->queue_len, 1);
}

GVariant *mvm_i8042_save(MvmI8042 *i8042)
{
    g_autoptr(GMutexLocker) locker = NULL;
    MvmI8042 *k = i8042;

    g_return_val_if_fail(i8042 != NULL, NULL);

    locker = g_mutex_locker_new(&k->lock);
    return g_variant_ref_sink(g_variant_new(
        I8042_STATE_FORMAT, (guint32)I8042_STATE_VERSION, k->ctr, k->status_cmd, k->outp,
        k->pending_cmd, k->kbd_pending, k->kbd_scanning, k->last_read, queue_to_variant(k)));
}

static gboolean pending_cmd_valid(guint8 cmd)
{
    return cmd == 0 || cmd == I8042_CMD_WRITE_CTR || cmd == I8042_CMD_WRITE_OUTP ||
           cmd == I8042_CMD_WRITE_KBD_OB || cmd == I8042_CMD_WRITE_AUX_OB ||
           cmd == I8042_CMD_WRITE_AUX;
}

static gboolean kbd_pending_valid(guint8 cmd)
{
    return cmd == 0 || cmd == KBD_CMD_SET_LEDS || cmd == KBD_CMD_SCANSET || cmd == KBD_CMD_SETREP;
}

gboolean mvm_i8042_restore(MvmI8042 *i8042, GVariant *state, GError **error)
{
    g_autoptr(GVariant) queue = NULL;
    g_autoptr(GMutexLocker) locker = NULL;
    guint32 version;
    guint8 ctr, status_cmd, outp, pending_cmd, kbd_pending, last_read;
    gboolean scanning;
    const guint8 *bytes;
    gsize n_bytes;

    g_return_val_if_fail(i8042 != NULL, FALSE);
    g_return_val_if_fail(state != NULL, FALSE);

    if (!g_variant_is_of_type(state, G_VARIANT_TYPE(I8042_STATE_TYPE))) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "i8042 state has type %s, expected " I8042_STATE_TYPE,
                    g_variant_get_type_string(state));
        return FALSE;
    }
    g_variant_get(state, I8042_STATE_FORMAT, &version, &ctr, &status_cmd, &outp, &pending_cmd,
                  &kbd_pending, &scanning, &last_read, &queue);
    bytes = g_variant_get_fixed_array(queue, &n_bytes, 1);
    if (version != I8042_STATE_VERSION || n_bytes > I8042_QUEUE_SIZE ||
        !pending_cmd_valid(pending_cmd) || !kbd_pending_valid(kbd_pending)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "i8042 state: unsupported version %u, %" G_GSIZE_FORMAT
                    " queued bytes (at most %u) or pending commands 0x%02x/0x%02x",
                    version, n_bytes, I8042_QUEUE_SIZE, pending_cmd, kbd_pending);
        return FALSE;
    }

    locker = g_mutex_locker_new(&i8042->lock);
    i8042->ctr = ctr;
    i8042->status_cmd = status_cmd & I8042_STR_CMD;
    i8042->outp = outp;
    i8042->pending_cmd = pending_cmd;
    i8042->kbd_pending = kbd_pending;
    i8042->kbd_scanning = scanning != FALSE;
    i8042->last_read = last_read;
    i8042->queue_head = 0;
    i8042->queue_len = (guint)n_bytes;
    for (gsize i = 0; i < n_bytes; i++)
        i8042->queue[i] = bytes[i];
    set_irq(i8042, i8042->queue_len > 0 && (i8042->ctr & I8042_CTR_KBDINT), TRUE);
    return TRUE;
}
