/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the 16550A UART, driven through the I/O bus like a guest would. */
#include <glib.h>
#include <string.h>

#include "devices.h"
#include "iobus.h"
#include "layout.h"
#include "microvm.h"

#define COM1      MVM_SERIAL_COM1_PORT
#define INPUT_MAX (64 * 1024)

enum {
    RBR = 0,
    THR = 0,
    DLL = 0,
    IER = 1,
    DLM = 1,
    IIR = 2,
    FCR = 2,
    LCR = 3,
    MCR = 4,
    LSR = 5,
    MSR = 6,
    SCR = 7
};

typedef struct {
    MvmIoBus *bus;
    MvmSerial *serial;
    GByteArray *output;
    GArray *irq_levels; /* gboolean, one per callback */
    gboolean level;
} Fixture;

static void on_irq(gpointer opaque, guint32 gsi, gboolean level)
{
    Fixture *f = opaque;

    g_assert_cmpuint(gsi, ==, MVM_SERIAL_COM1_IRQ);
    g_array_append_val(f->irq_levels, level);
    f->level = level;
}

static void on_output(gpointer opaque, const guint8 *data, gsize len)
{
    Fixture *f = opaque;

    g_byte_array_append(f->output, data, (guint)len);
}

static void fixture_setup(Fixture *f, gconstpointer unused)
{
    g_autoptr(GError) error = NULL;

    (void)unused;
    f->bus = mvm_io_bus_new();
    f->serial = mvm_serial_new(MVM_SERIAL_COM1_IRQ, on_irq, f, on_output, f);
    f->output = g_byte_array_new();
    f->irq_levels = g_array_new(FALSE, FALSE, sizeof(gboolean));
    g_assert_true(mvm_serial_attach(f->serial, f->bus, COM1, &error));
    g_assert_no_error(error);
}

static void fixture_teardown(Fixture *f, gconstpointer unused)
{
    (void)unused;
    mvm_serial_free(f->serial);
    mvm_io_bus_free(f->bus);
    g_byte_array_unref(f->output);
    g_array_unref(f->irq_levels);
}

static guint8 inb(Fixture *f, guint reg)
{
    guint8 v;

    g_assert_true(mvm_io_bus_read(f->bus, MVM_IO_SPACE_PIO, COM1 + reg, &v, 1));
    return v;
}

static void outb(Fixture *f, guint reg, guint8 v)
{
    g_assert_true(mvm_io_bus_write(f->bus, MVM_IO_SPACE_PIO, COM1 + reg, &v, 1));
}

static void queue_str(Fixture *f, const char *s)
{
    gsize len = strlen(s);

    g_assert_cmpuint(mvm_serial_queue_input(f->serial, (const guint8 *)s, len), ==, len);
}

/* What Linux's 8250 autoconfig() and serial8250_do_startup() do, in order. */
static void test_linux_probe(Fixture *f, gconstpointer unused)
{
    guint8 save_ier, save_mcr, save_lcr;

    (void)unused;
    /* IER scratch test: the low four bits stick, the rest read 0. */
    save_ier = inb(f, IER);
    outb(f, IER, 0);
    g_assert_cmpuint(inb(f, IER) & 0x0f, ==, 0);
    outb(f, IER, 0x0f);
    g_assert_cmpuint(inb(f, IER) & 0x0f, ==, 0x0f);
    outb(f, IER, save_ier);

    /* Loopback test: MCR LOOP|OUT2|RTS shows up as DCD|CTS. */
    save_mcr = inb(f, MCR);
    save_lcr = inb(f, LCR);
    outb(f, MCR, 0x10 | 0x0a);
    g_assert_cmpuint(inb(f, MSR) & 0xf0, ==, 0x90);
    outb(f, MCR, save_mcr);

    /* FIFO detection: IIR bits 6-7 both set means a working 16550A FIFO. */
    outb(f, LCR, 0xbf);
    outb(f, FCR, 0); /* EFR on 16650s; FCR here */
    outb(f, LCR, 0);
    outb(f, FCR, 0x01);
    g_assert_cmpuint(inb(f, IIR) >> 6, ==, 3);

    /* autoconfig_16550a(): no EFR, no 16750 64-byte FIFO, no XScale UUE bit. */
    outb(f, LCR, 0x80);
    g_assert_cmpuint(inb(f, IIR), !=, 0);
    outb(f, LCR, 0xbf);
    g_assert_cmpuint(inb(f, IIR), !=, 0);
    outb(f, LCR, 0);
    outb(f, FCR, 0x01 | 0x20);
    g_assert_cmpuint(inb(f, IIR) >> 5, ==, 6);
    outb(f, FCR, 0x01);
    outb(f, LCR, 0x80);
    outb(f, FCR, 0x01 | 0x20);
    g_assert_cmpuint(inb(f, IIR) >> 5, ==, 6);
    outb(f, FCR, 0x01);
    outb(f, LCR, 0);
    outb(f, IER, 0x40);
    g_assert_cmpuint(inb(f, IER) & 0x40, ==, 0);
    outb(f, IER, 0);
    outb(f, LCR, save_lcr);

    /* startup: clear FIFOs, read the interrupt registers, LSR must not float. */
    outb(f, FCR, 0x01);
    outb(f, FCR, 0x07);
    outb(f, FCR, 0);
    (void)inb(f, LSR);
    (void)inb(f, RBR);
    (void)inb(f, IIR);
    (void)inb(f, MSR);
    outb(f, LCR, 0x03);
    g_assert_cmpuint(inb(f, LSR), ==, 0x60);
    g_assert_cmpuint(inb(f, IIR), ==, 0x01);

    /* UART_BUG_THRE check: enabling THRI on an empty THR gives IIR 0x02 at once, twice. */
    outb(f, FCR, 0x01);
    outb(f, IER, 0x02);
    g_assert_cmpuint(inb(f, IIR), ==, 0xc2);
    outb(f, IER, 0);
    outb(f, IER, 0x02);
    g_assert_cmpuint(inb(f, IIR), ==, 0xc2);
    outb(f, IER, 0);
    g_assert_cmpuint(inb(f, IIR), ==, 0xc1);
    g_assert_false(f->level);
    g_assert_cmpuint(f->output->len, ==, 0);
}

static void assert_irq_history(Fixture *f, const gboolean *expected, guint n)
{
    g_assert_cmpuint(f->irq_levels->len, ==, n);
    for (guint i = 0; i < n; i++)
        g_assert_cmpint(g_array_index(f->irq_levels, gboolean, i), ==, expected[i]);
}

static void test_thri(Fixture *f, gconstpointer unused)
{
    static const gboolean history[] = {TRUE, FALSE, TRUE, FALSE};

    (void)unused;
    g_assert_cmpuint(inb(f, IIR), ==, 0x01); /* FIFOs off: no 0xc0 */
    outb(f, IER, 0x02);                      /* -> high */
    g_assert_true(f->level);
    g_assert_cmpuint(inb(f, IIR), ==, 0x02); /* reading IIR clears THRE: -> low */
    g_assert_false(f->level);
    g_assert_cmpuint(inb(f, IIR), ==, 0x01);
    outb(f, IER, 0x02); /* still enabled: no new interrupt */
    g_assert_false(f->level);
    outb(f, THR, 'x'); /* THR empties again at once: -> high */
    g_assert_true(f->level);
    outb(f, IER, 0); /* -> low */
    assert_irq_history(f, history, G_N_ELEMENTS(history));
    g_assert_cmpuint(f->output->len, ==, 1);
}

static void test_dlab(Fixture *f, gconstpointer unused)
{
    (void)unused;
    outb(f, IER, 0x05);
    outb(f, LCR, 0x83);
    g_assert_cmpuint(inb(f, DLL), ==, 0x0c); /* reset divisor: 9600 baud */
    outb(f, DLL, 0x01);
    outb(f, DLM, 0x02);
    g_assert_cmpuint(inb(f, DLL), ==, 0x01);
    g_assert_cmpuint(inb(f, DLM), ==, 0x02);
    g_assert_cmpuint(f->output->len, ==, 0);
    g_assert_cmpuint(inb(f, LCR), ==, 0x83);
    outb(f, LCR, 0x03);
    g_assert_cmpuint(inb(f, IER), ==, 0x05);
    outb(f, SCR, 0xa5);
    g_assert_cmpuint(inb(f, SCR), ==, 0xa5);
    outb(f, THR, 'z');
    g_assert_cmpuint(f->output->len, ==, 1);
}

static void test_output(Fixture *f, gconstpointer unused)
{
    const char *msg = "Hello, \x00world\xff\n";
    const gsize len = 15;

    (void)unused;
    for (gsize i = 0; i < len; i++) {
        outb(f, THR, (guint8)msg[i]);
        g_assert_cmpuint(inb(f, LSR) & 0x60, ==, 0x60);
    }
    g_assert_cmpmem(f->output->data, f->output->len, msg, len);
    g_assert_cmpuint(f->irq_levels->len, ==, 0);
}

static void test_loopback(Fixture *f, gconstpointer unused)
{
    (void)unused;
    outb(f, MCR, 0x10);
    outb(f, THR, 'a');
    outb(f, THR, 'b');
    g_assert_cmpuint(f->output->len, ==, 0);
    g_assert_cmpuint(inb(f, LSR), ==, 0x61);
    g_assert_cmpuint(inb(f, RBR), ==, 'a');
    g_assert_cmpuint(inb(f, RBR), ==, 'b');
    g_assert_cmpuint(inb(f, LSR), ==, 0x60);

    /* Modem status: MCR outputs appear on the inputs, changes latch the delta bits. */
    (void)inb(f, MSR);
    outb(f, IER, 0x08);
    outb(f, MCR, 0x10 | 0x01 | 0x04); /* DTR, OUT1 */
    g_assert_true(f->level);
    g_assert_cmpuint(inb(f, IIR), ==, 0x00);
    g_assert_cmpuint(inb(f, MSR), ==, 0x20 | 0x40 | 0x02);
    g_assert_false(f->level);
    outb(f, MCR, 0x10); /* RI falls: trailing edge */
    g_assert_cmpuint(inb(f, MSR), ==, 0x02 | 0x04);

    /* Leaving loopback: a connected modem again (CTS, DSR, DCD). */
    outb(f, MCR, 0x0b);
    g_assert_cmpuint(inb(f, MSR) & 0xf0, ==, 0xb0);
    outb(f, THR, 'c');
    g_assert_cmpmem(f->output->data, f->output->len, "c", 1);
}

static void test_input(Fixture *f, gconstpointer unused)
{
    static const gboolean history[] = {TRUE, FALSE};

    (void)unused;
    g_assert_cmpuint(inb(f, LSR), ==, 0x60);
    outb(f, IER, 0x01);
    g_assert_false(f->level);
    queue_str(f, "abc");
    g_assert_true(f->level);
    g_assert_cmpuint(inb(f, LSR), ==, 0x61);
    g_assert_cmpuint(inb(f, IIR), ==, 0x04);
    g_assert_cmpuint(inb(f, RBR), ==, 'a');
    g_assert_cmpuint(inb(f, RBR), ==, 'b');
    g_assert_true(f->level);
    g_assert_cmpuint(inb(f, RBR), ==, 'c');
    g_assert_false(f->level);
    g_assert_cmpuint(inb(f, LSR), ==, 0x60);
    g_assert_cmpuint(inb(f, IIR), ==, 0x01);
    assert_irq_history(f, history, G_N_ELEMENTS(history));
}

static void test_fifo(Fixture *f, gconstpointer unused)
{
    char buf[21];

    (void)unused;
    outb(f, FCR, 0xc1); /* FIFO on, trigger level 14 */
    outb(f, IER, 0x01);
    for (guint i = 0; i < 20; i++)
        buf[i] = (char)('A' + i);
    buf[20] = '\0';
    queue_str(f, buf);
    g_assert_cmpuint(inb(f, IIR), ==, 0xc4); /* 16 in the FIFO >= 14 */
    for (guint i = 0; i < 7; i++)
        g_assert_cmpuint(inb(f, RBR), ==, 'A' + i);
    g_assert_cmpuint(inb(f, IIR), ==, 0xcc); /* 13 left: character timeout */

    /* RCVR FIFO reset drops what is in the FIFO (16 bytes at most), not the backlog. */
    queue_str(f, "0123456789");
    g_assert_cmpuint(mvm_serial_queue_input(f->serial, NULL, 0), ==, 0);
    outb(f, FCR, 0xc3);
    g_assert_cmpuint(inb(f, RBR), ==, '3');
}

static void test_input_bound(Fixture *f, gconstpointer unused)
{
    g_autofree guint8 *big = g_malloc0(INPUT_MAX + 100);

    (void)unused;
    g_assert_cmpuint(mvm_serial_queue_input(f->serial, big, INPUT_MAX + 100), ==, INPUT_MAX);
    g_assert_cmpuint(mvm_serial_queue_input(f->serial, big, 1), ==, 0);

    /* Loopback with a full receiver: overrun, reported once through LSR and IIR. */
    outb(f, IER, 0x04);
    outb(f, MCR, 0x10);
    outb(f, THR, 'x');
    g_assert_true(f->level);
    g_assert_cmpuint(inb(f, IIR), ==, 0x06);
    g_assert_cmpuint(inb(f, LSR), ==, 0x63);
    g_assert_cmpuint(inb(f, LSR), ==, 0x61);
    g_assert_false(f->level);
}

static void test_wide_access(Fixture *f, gconstpointer unused)
{
    guint8 two[2];
    const guint8 w[2] = {'h', 0x02};

    (void)unused;
    /* A 16-bit access is two byte accesses at consecutive ports. */
    g_assert_true(mvm_io_bus_read(f->bus, MVM_IO_SPACE_PIO, COM1 + LSR, two, 2));
    g_assert_cmpuint(two[0], ==, 0x60);
    g_assert_cmpuint(two[1], ==, 0xb0);
    g_assert_true(mvm_io_bus_write(f->bus, MVM_IO_SPACE_PIO, COM1 + THR, w, 2));
    g_assert_cmpmem(f->output->data, f->output->len, "h", 1);
    g_assert_cmpuint(inb(f, IER), ==, 0x02);
    /* Past the last register: unhandled. */
    g_assert_false(mvm_io_bus_read(f->bus, MVM_IO_SPACE_PIO, COM1 + SCR, two, 2));
}

static void program_some_state(Fixture *f)
{
    outb(f, LCR, 0x80);
    outb(f, DLL, 0x01);
    outb(f, DLM, 0x00);
    outb(f, LCR, 0x1b);
    outb(f, FCR, 0x81);
    outb(f, MCR, 0x0b);
    outb(f, SCR, 0x42);
    outb(f, IER, 0x03);
    queue_str(f, "pending input");
}

static void test_save_restore(Fixture *f, gconstpointer unused)
{
    g_autoptr(GVariant) state = NULL;
    g_autoptr(GVariant) again = NULL;
    g_autoptr(GError) error = NULL;
    Fixture g = {0};

    (void)unused;
    program_some_state(f);
    state = mvm_serial_save(f->serial);
    g_assert_nonnull(state);
    g_assert_false(g_variant_is_floating(state));
    g_assert_true(g_variant_is_normal_form(state));

    fixture_setup(&g, NULL);
    g_assert_true(mvm_serial_restore(g.serial, state, &error));
    g_assert_no_error(error);
    /* The restored level is announced even though it did not change from its point of view. */
    g_assert_cmpuint(g.irq_levels->len, ==, 1);
    g_assert_true(g.level);
    again = mvm_serial_save(g.serial);
    g_assert_true(g_variant_equal(state, again));

    g_assert_cmpuint(inb(&g, LCR), ==, 0x1b);
    g_assert_cmpuint(inb(&g, IIR), ==, 0xc4);
    g_assert_cmpuint(inb(&g, RBR), ==, 'p');
    g_assert_cmpuint(inb(f, RBR), ==, 'p');
    fixture_teardown(&g, NULL);
}

static void assert_restore_fails(Fixture *f, GVariant *state)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) sunk = g_variant_ref_sink(state);

    g_assert_false(mvm_serial_restore(f->serial, sunk, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

static GVariant *make_state(guint32 version, guint8 ier, gsize n_input)
{
    g_autofree guint8 *input = g_malloc0(MAX(n_input, 1));

    return g_variant_new("(uyyyyyyyyyb@ay)", version, 0x0c, 0, ier, 0, 0, 0, 0, 0, 0, FALSE,
                         g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, input, n_input, 1));
}

static void test_restore_invalid(Fixture *f, gconstpointer unused)
{
    static const guint8 junk[] = {0xff, 0x13, 0x37, 0x00, 0x01, 0x02, 0x99, 0xff, 0xff, 0xff, 0xff};
    g_autoptr(GVariant) good = NULL;
    g_autoptr(GVariant) untrusted = NULL;

    (void)unused;
    assert_restore_fails(f, g_variant_new_string("not a serial port"));
    assert_restore_fails(f, g_variant_new("(uyy)", 1, 0, 0));
    assert_restore_fails(f, make_state(2, 0, 0));
    assert_restore_fails(f, make_state(1, 0, INPUT_MAX + 1));

    /* Out-of-range register values are masked, a full queue is accepted. */
    good = g_variant_ref_sink(make_state(1, 0xff, INPUT_MAX));
    g_assert_true(mvm_serial_restore(f->serial, good, NULL));
    g_assert_cmpuint(inb(f, IER), ==, 0x0f);
    g_assert_cmpuint(mvm_serial_queue_input(f->serial, junk, 1), ==, 0);

    /* Bytes of the right type but arbitrary content must not crash the loader. */
    untrusted = g_variant_ref_sink(g_variant_new_from_data(G_VARIANT_TYPE("(uyyyyyyyyybay)"), junk,
                                                           sizeof(junk), FALSE, NULL, NULL));
    (void)mvm_serial_restore(f->serial, untrusted, NULL);
    (void)inb(f, RBR);
    (void)inb(f, IIR);
}

/* Input from another thread while the "vCPU" drains it: every byte arrives, in order. */
typedef struct {
    MvmSerial *serial;
    guint total;
} Producer;

static gpointer producer_thread(gpointer data)
{
    Producer *p = data;

    for (guint sent = 0; sent < p->total;) {
        guint8 byte = (guint8)sent;

        if (mvm_serial_queue_input(p->serial, &byte, 1) == 1)
            sent++;
        else
            g_thread_yield();
    }
    return NULL;
}

static void test_threaded_input(Fixture *f, gconstpointer unused)
{
    Producer p = {.serial = f->serial, .total = 200000};
    GThread *thread;
    guint received = 0;

    (void)unused;
    thread = g_thread_new("producer", producer_thread, &p);
    while (received < p.total) {
        if (inb(f, LSR) & 0x01) {
            g_assert_cmpuint(inb(f, RBR), ==, (guint8)received);
            received++;
        }
    }
    g_thread_join(thread);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func)                                                                            \
    g_test_add("/serial/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("linux-probe", test_linux_probe);
    ADD("thri", test_thri);
    ADD("dlab", test_dlab);
    ADD("output", test_output);
    ADD("loopback", test_loopback);
    ADD("input", test_input);
    ADD("fifo", test_fifo);
    ADD("input-bound", test_input_bound);
    ADD("wide-access", test_wide_access);
    ADD("save-restore", test_save_restore);
    ADD("restore-invalid", test_restore_invalid);
    ADD("threaded-input", test_threaded_input);
#undef ADD
    return g_test_run();
}
