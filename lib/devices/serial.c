/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 16550A UART (COM1), as described by the National Semiconductor / TI
 * PC16550D datasheet ("PC16550D Universal Asynchronous Receiver/Transmitter
 * with FIFOs"): Table II (summary of registers), Table IV (interrupt control
 * functions) and the register descriptions that follow them.
 *
 * Model:
 * - Transmission is instantaneous: THR and the transmitter shift register
 *   are always empty (LSR.THRE|TEMT), and each THR write hands one byte to
 *   the output callback.
 * - The receive side is a bounded host-side queue (SERIAL_INPUT_MAX bytes)
 *   in front of the guest-visible receiver: the 16-byte RCVR FIFO in FIFO
 *   mode, the one-byte RBR otherwise. The guest sees the first min(queued,
 *   16 or 1) bytes as "in the FIFO"; as it reads them the queue refills the
 *   FIFO at once. A FIFO reset (FCR bit 1, or changing FCR bit 0) discards
 *   only what is in that window, as on hardware; input the host queues
 *   before the guest has set up its port may therefore be partly dropped.
 * - The modem inputs report a connected modem (CTS, DSR, DCD) except in
 *   loopback mode, where they mirror MCR (datasheet, MCR bit 4).
 * - OUT2 does not gate the interrupt line (it does on PC boards); guests
 *   that never set OUT2 still get interrupts.
 *
 * Locking: one mutex guards the registers and the input queue, so input may
 * be queued from any thread while vCPUs access the registers. The interrupt
 * callback is called with that mutex held, only when the line changes level,
 * so level changes reach KVM in the order they happened; it must not call
 * back into this device. The output callback is called with no lock held.
 */
#include "devices.h"

#include <string.h>

#include "microvm.h"

/* Register offsets (Table II). With LCR.DLAB set, 0 and 1 are DLL and DLM. */
#define UART_RX      0 /* RBR, read */
#define UART_TX      0 /* THR, write */
#define UART_IER     1
#define UART_IIR     2 /* read */
#define UART_FCR     2 /* write */
#define UART_LCR     3
#define UART_MCR     4
#define UART_LSR     5
#define UART_MSR     6
#define UART_SCR     7
#define UART_NR_REGS 8

#define UART_IER_ERBFI 0x01 /* received data available */
#define UART_IER_ETBEI 0x02 /* transmitter holding register empty */
#define UART_IER_ELSI  0x04 /* receiver line status */
#define UART_IER_EDSSI 0x08 /* modem status */
#define UART_IER_MASK  0x0f /* bits 4-7 are always 0 on a 16550A */

#define UART_IIR_NO_INT 0x01
#define UART_IIR_MSI    0x00
#define UART_IIR_THRI   0x02
#define UART_IIR_RDI    0x04
#define UART_IIR_RLSI   0x06
#define UART_IIR_CTI    0x0c /* character timeout, FIFO mode only */
#define UART_IIR_FIFO   0xc0 /* both set when FCR bit 0 is set */

#define UART_FCR_ENABLE     0x01
#define UART_FCR_CLEAR_RCVR 0x02
#define UART_FCR_CLEAR_XMIT 0x04
#define UART_FCR_DMA        0x08
#define UART_FCR_TRIGGER    0xc0
#define UART_FCR_STORED     (UART_FCR_ENABLE | UART_FCR_DMA | UART_FCR_TRIGGER)

#define UART_LCR_DLAB 0x80

#define UART_MCR_DTR  0x01
#define UART_MCR_RTS  0x02
#define UART_MCR_OUT1 0x04
#define UART_MCR_OUT2 0x08
#define UART_MCR_LOOP 0x10
#define UART_MCR_MASK 0x1f /* bits 5-7 are always 0 */

#define UART_LSR_DR   0x01
#define UART_LSR_OE   0x02
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40

#define UART_MSR_DCTS  0x01
#define UART_MSR_DDSR  0x02
#define UART_MSR_TERI  0x04
#define UART_MSR_DDCD  0x08
#define UART_MSR_DELTA 0x0f
#define UART_MSR_CTS   0x10
#define UART_MSR_DSR   0x20
#define UART_MSR_RI    0x40
#define UART_MSR_DCD   0x80

#define SERIAL_FIFO_SIZE  16
#define SERIAL_INPUT_MAX  (64 * 1024)
#define SERIAL_DEFAULT_DL 0x0c /* 9600 baud from the 1.8432 MHz clock */

#define SERIAL_STATE_VERSION 1
/* version, DLL, DLM, IER, FCR, LCR, MCR, LSR errors, MSR deltas, SCR, THRE pending, input */
#define SERIAL_STATE_TYPE   "(uyyyyyyyyybay)"
#define SERIAL_STATE_FORMAT "(uyyyyyyyyyb@ay)" /* the same, for g_variant_new/get */

struct _MvmSerial {
    GMutex lock;
    guint32 gsi;
    MvmIrqFunc irq;
    gpointer irq_opaque;
    MvmSerialOutputFunc output;
    gpointer output_opaque;

    guint8 dll, dlm, ier, fcr, lcr, mcr, scr;
    guint8 lsr_errors;    /* OE; cleared by reading LSR */
    guint8 msr_delta;     /* MSR bits 0-3; cleared by reading MSR */
    gboolean thr_pending; /* THRE interrupt armed (Table IV: reset by IIR read or THR write) */
    gboolean irq_level;

    guint8 *rx; /* ring buffer of SERIAL_INPUT_MAX bytes */
    gsize rx_head;
    gsize rx_len;
};

/* ---- receive queue (lock held) ---- */

static gboolean rx_push(MvmSerial *s, guint8 byte)
{
    if (s->rx_len == SERIAL_INPUT_MAX)
        return FALSE;
    s->rx[(s->rx_head + s->rx_len) % SERIAL_INPUT_MAX] = byte;
    s->rx_len++;
    return TRUE;
}

static guint8 rx_pop(MvmSerial *s)
{
    guint8 byte = s->rx[s->rx_head];

    s->rx_head = (s->rx_head + 1) % SERIAL_INPUT_MAX;
    s->rx_len--;
    return byte;
}

/* Bytes the guest sees in its receiver: the RCVR FIFO, or the RBR in 16450 mode. */
static gsize rx_visible(const MvmSerial *s)
{
    return MIN(s->rx_len, (s->fcr & UART_FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1u);
}

static void rx_clear_fifo(MvmSerial *s)
{
    gsize n = rx_visible(s);

    s->rx_head = (s->rx_head + n) % SERIAL_INPUT_MAX;
    s->rx_len -= n;
}

/* FCR bits 6-7: RCVR FIFO trigger level (FCR description). */
static gsize rx_trigger_level(const MvmSerial *s)
{
    static const gsize levels[] = {1, 4, 8, 14};

    return levels[(s->fcr & UART_FCR_TRIGGER) >> 6];
}

/* ---- modem lines, interrupts (lock held) ---- */

/* MSR bits 4-7: in loopback mode CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2 (MCR bit 4). */
static guint8 modem_inputs(const MvmSerial *s)
{
    guint8 in = 0;

    if (!(s->mcr & UART_MCR_LOOP))
        return UART_MSR_CTS | UART_MSR_DSR | UART_MSR_DCD;
    if (s->mcr & UART_MCR_RTS)
        in |= UART_MSR_CTS;
    if (s->mcr & UART_MCR_DTR)
        in |= UART_MSR_DSR;
    if (s->mcr & UART_MCR_OUT1)
        in |= UART_MSR_RI;
    if (s->mcr & UART_MCR_OUT2)
        in |= UART_MSR_DCD;
    return in;
}

/* MSR bits 0-3 latch changes of the inputs; TERI only on RI's trailing edge. */
static void modem_latch_deltas(MvmSerial *s, guint8 before, guint8 after)
{
    guint8 changed = before ^ after;

    if (changed & UART_MSR_CTS)
        s->msr_delta |= UART_MSR_DCTS;
    if (changed & UART_MSR_DSR)
        s->msr_delta |= UART_MSR_DDSR;
    if ((before & UART_MSR_RI) && !(after & UART_MSR_RI))
        s->msr_delta |= UART_MSR_TERI;
    if (changed & UART_MSR_DCD)
        s->msr_delta |= UART_MSR_DDCD;
}

/* The highest-priority pending interrupt, in Table IV's order. */
static guint8 iir_source(const MvmSerial *s)
{
    if ((s->ier & UART_IER_ELSI) && (s->lsr_errors & UART_LSR_OE))
        return UART_IIR_RLSI;
    if ((s->ier & UART_IER_ERBFI) && s->rx_len > 0) {
        /* Below the trigger level the FIFO reports a character timeout instead. */
        if ((s->fcr & UART_FCR_ENABLE) && rx_visible(s) < rx_trigger_level(s))
            return UART_IIR_CTI;
        return UART_IIR_RDI;
    }
    if ((s->ier & UART_IER_ETBEI) && s->thr_pending)
        return UART_IIR_THRI;
    if ((s->ier & UART_IER_EDSSI) && s->msr_delta)
        return UART_IIR_MSI;
    return UART_IIR_NO_INT;
}

static void update_irq(MvmSerial *s, gboolean force)
{
    gboolean level = iir_source(s) != UART_IIR_NO_INT;

    if (level == s->irq_level && !force)
        return;
    s->irq_level = level;
    if (s->irq != NULL)
        s->irq(s->irq_opaque, s->gsi, level);
}

/* ---- register reads (lock held) ---- */

static guint8 read_iir(MvmSerial *s)
{
    guint8 source = iir_source(s);

    if (source == UART_IIR_THRI)
        s->thr_pending = FALSE;
    return source | ((s->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO : 0);
}

static guint8 read_lsr(MvmSerial *s)
{
    guint8 lsr = UART_LSR_THRE | UART_LSR_TEMT | s->lsr_errors;

    if (s->rx_len > 0)
        lsr |= UART_LSR_DR;
    s->lsr_errors = 0;
    return lsr;
}

static guint8 read_msr(MvmSerial *s)
{
    guint8 msr = modem_inputs(s) | s->msr_delta;

    s->msr_delta = 0;
    return msr;
}

static guint8 read_reg(MvmSerial *s, guint64 offset)
{
    gboolean dlab = s->lcr & UART_LCR_DLAB;

    switch (offset) {
    case UART_RX:
        if (dlab)
            return s->dll;
        return s->rx_len > 0 ? rx_pop(s) : 0;
    case UART_IER:
        return dlab ? s->dlm : s->ier;
    case UART_IIR:
        return read_iir(s);
    case UART_LCR:
        return s->lcr;
    case UART_MCR:
        return s->mcr;
    case UART_LSR:
        return read_lsr(s);
    case UART_MSR:
        return read_msr(s);
    case UART_SCR:
        return s->scr;
    default:
        return 0xff;
    }
}

/* ---- register writes (lock held) ---- */

/* Returns TRUE when @byte must go to the output callback. */
static gboolean write_thr(MvmSerial *s, guint8 byte)
{
    /* Writing THR resets the THRE interrupt; the byte leaves at once, so THR is empty again. */
    s->thr_pending = TRUE;
    if (!(s->mcr & UART_MCR_LOOP))
        return TRUE;
    /* Loopback: the transmitter output is looped back to the receiver input (MCR bit 4). */
    if (!rx_push(s, byte))
        s->lsr_errors |= UART_LSR_OE;
    return FALSE;
}

static void write_ier(MvmSerial *s, guint8 value)
{
    guint8 old = s->ier;

    s->ier = value & UART_IER_MASK;
    /* Enabling ETBEI while THR is empty raises the THRE interrupt. */
    if ((s->ier & UART_IER_ETBEI) && !(old & UART_IER_ETBEI))
        s->thr_pending = TRUE;
}

/* FCR: bits 1-5 only take effect with bit 0 set; changing bit 0 resets both FIFOs. */
static void write_fcr(MvmSerial *s, guint8 value)
{
    if ((value ^ s->fcr) & UART_FCR_ENABLE)
        rx_clear_fifo(s);
    else if ((value & UART_FCR_ENABLE) && (value & UART_FCR_CLEAR_RCVR))
        rx_clear_fifo(s);
    s->fcr = (value & UART_FCR_ENABLE) ? (value & UART_FCR_STORED) : 0;
}

static void write_mcr(MvmSerial *s, guint8 value)
{
    guint8 before = modem_inputs(s);

    s->mcr = value & UART_MCR_MASK;
    modem_latch_deltas(s, before, modem_inputs(s));
}

static gboolean write_reg(MvmSerial *s, guint64 offset, guint8 value)
{
    gboolean dlab = s->lcr & UART_LCR_DLAB;

    switch (offset) {
    case UART_TX:
        if (!dlab)
            return write_thr(s, value);
        s->dll = value;
        break;
    case UART_IER:
        if (dlab)
            s->dlm = value;
        else
            write_ier(s, value);
        break;
    case UART_FCR:
        write_fcr(s, value);
        break;
    case UART_LCR:
        s->lcr = value;
        break;
    case UART_MCR:
        write_mcr(s, value);
        break;
    case UART_SCR:
        s->scr = value;
        break;
    default: /* LSR and MSR are read-only */
        break;
    }
    return FALSE;
}

/* ---- bus callbacks (vCPU threads) ---- */

/* Wider accesses are split into byte accesses at consecutive ports, like an 8-bit ISA device. */
static void serial_io_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    MvmSerial *s = opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    for (guint i = 0; i < len; i++)
        data[i] = offset + i < UART_NR_REGS ? read_reg(s, offset + i) : 0xff;
    update_irq(s, FALSE);
}

static void serial_io_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmSerial *s = opaque;

    for (guint i = 0; i < len && offset + i < UART_NR_REGS; i++) {
        gboolean transmit;

        g_mutex_lock(&s->lock);
        transmit = write_reg(s, offset + i, data[i]);
        update_irq(s, FALSE);
        g_mutex_unlock(&s->lock);

        if (transmit && s->output != NULL)
            s->output(s->output_opaque, &data[i], 1);
    }
}

static const MvmIoOps serial_io_ops = {
    .read = serial_io_read,
    .write = serial_io_write,
};

/* ---- public API ---- */

/* Register values after a master reset (datasheet Table III). */
static void serial_reset(MvmSerial *s)
{
    s->ier = s->fcr = s->lcr = s->mcr = s->scr = 0;
    s->dll = SERIAL_DEFAULT_DL;
    s->dlm = 0;
    s->lsr_errors = s->msr_delta = 0;
    s->thr_pending = FALSE;
    s->irq_level = FALSE;
    s->rx_head = s->rx_len = 0;
}

MvmSerial *mvm_serial_new(guint32 gsi, MvmIrqFunc irq, gpointer irq_opaque,
                          MvmSerialOutputFunc output, gpointer output_opaque)
{
    MvmSerial *s = g_new0(MvmSerial, 1);

    g_mutex_init(&s->lock);
    s->gsi = gsi;
    s->irq = irq;
    s->irq_opaque = irq_opaque;
    s->output = output;
    s->output_opaque = output_opaque;
    s->rx = g_malloc(SERIAL_INPUT_MAX);
    serial_reset(s);
    return s;
}

void mvm_serial_free(MvmSerial *serial)
{
    if (serial == NULL)
        return;
    g_mutex_clear(&serial->lock);
    g_free(serial->rx);
    g_free(serial);
}

gboolean mvm_serial_attach(MvmSerial *serial, MvmIoBus *bus, guint16 port, GError **error)
{
    g_autofree char *name = NULL;

    g_return_val_if_fail(serial != NULL, FALSE);
    g_return_val_if_fail(bus != NULL, FALSE);

    name = g_strdup_printf("serial@0x%x", port);
    return mvm_io_bus_register(bus, MVM_IO_SPACE_PIO, port, UART_NR_REGS, &serial_io_ops, serial,
                               name, error);
}

gsize mvm_serial_queue_input(MvmSerial *serial, const guint8 *data, gsize len)
{
    g_autoptr(GMutexLocker) locker = NULL;
    gsize n = 0;

    g_return_val_if_fail(serial != NULL, 0);
    g_return_val_if_fail(data != NULL || len == 0, 0);

    locker = g_mutex_locker_new(&serial->lock);
    while (n < len && rx_push(serial, data[n]))
        n++;
    update_irq(serial, FALSE);
    return n;
}

static GVariant *input_to_variant(const MvmSerial *s)
{
    guint8 *copy = g_malloc(MAX(s->rx_len, 1u));

    for (gsize i = 0; i < s->rx_len; i++)
        copy[i] = s->rx[(s->rx_head + i) % SERIAL_INPUT_MAX];
    return g_variant_new_from_data(G_VARIANT_TYPE_BYTESTRING, copy, s->rx_len, TRUE, g_free, copy);
}

GVariant *mvm_serial_save(MvmSerial *serial)
{
    g_autoptr(GMutexLocker) locker = NULL;
    MvmSerial *s = serial;

    g_return_val_if_fail(serial != NULL, NULL);

    locker = g_mutex_locker_new(&s->lock);
    return g_variant_ref_sink(g_variant_new(
        SERIAL_STATE_FORMAT, (guint32)SERIAL_STATE_VERSION, s->dll, s->dlm, s->ier, s->fcr, s->lcr,
        s->mcr, s->lsr_errors, s->msr_delta, s->scr, s->thr_pending, input_to_variant(s)));
}

gboolean mvm_serial_restore(MvmSerial *serial, GVariant *state, GError **error)
{
    g_autoptr(GVariant) input = NULL;
    g_autoptr(GMutexLocker) locker = NULL;
    guint32 version;
    guint8 dll, dlm, ier, fcr, lcr, mcr, lsr_errors, msr_delta, scr;
    gboolean thr_pending;
    gconstpointer bytes;
    gsize n_bytes;

    g_return_val_if_fail(serial != NULL, FALSE);
    g_return_val_if_fail(state != NULL, FALSE);

    if (!g_variant_is_of_type(state, G_VARIANT_TYPE(SERIAL_STATE_TYPE))) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "serial state has type %s, expected " SERIAL_STATE_TYPE,
                    g_variant_get_type_string(state));
        return FALSE;
    }
    g_variant_get(state, SERIAL_STATE_FORMAT, &version, &dll, &dlm, &ier, &fcr, &lcr, &mcr,
                  &lsr_errors, &msr_delta, &scr, &thr_pending, &input);
    bytes = g_variant_get_fixed_array(input, &n_bytes, 1);
    if (version != SERIAL_STATE_VERSION || n_bytes > SERIAL_INPUT_MAX) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "serial state: unsupported version %u or %" G_GSIZE_FORMAT
                    " bytes of input (at most %u)",
                    version, n_bytes, SERIAL_INPUT_MAX);
        return FALSE;
    }

    locker = g_mutex_locker_new(&serial->lock);
    serial->dll = dll;
    serial->dlm = dlm;
    serial->ier = ier & UART_IER_MASK;
    serial->fcr = (fcr & UART_FCR_ENABLE) ? (fcr & UART_FCR_STORED) : 0;
    serial->lcr = lcr;
    serial->mcr = mcr & UART_MCR_MASK;
    serial->lsr_errors = lsr_errors & UART_LSR_OE;
    serial->msr_delta = msr_delta & UART_MSR_DELTA;
    serial->scr = scr;
    serial->thr_pending = thr_pending != FALSE;
    serial->rx_head = 0;
    serial->rx_len = n_bytes;
    if (n_bytes > 0)
        memcpy(serial->rx, bytes, n_bytes);
    /* Tell the interrupt controller the restored level, whatever it had before. */
    update_irq(serial, TRUE);
    return TRUE;
}
