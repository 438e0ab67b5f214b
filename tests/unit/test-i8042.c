/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the i8042 controller, driven through the I/O bus like a guest would. */
#include <glib.h>

#include "devices.h"
#include "iobus.h"
#include "layout.h"
#include "microvm.h"

#define KBD_GSI 1
#define DATA    MVM_I8042_DATA_PORT
#define CMD     MVM_I8042_COMMAND_PORT
#define STR_OBF 0x01
#define STR_IBF 0x02

typedef struct {
    MvmIoBus *bus;
    MvmI8042 *kbc;
    guint n_resets;
    GArray *irq_levels; /* gboolean */
    gboolean level;
} Fixture;

static void on_irq(gpointer opaque, guint32 gsi, gboolean level)
{
    Fixture *f = opaque;

    g_assert_cmpuint(gsi, ==, KBD_GSI);
    g_array_append_val(f->irq_levels, level);
    f->level = level;
}

static void on_reset(gpointer opaque)
{
    Fixture *f = opaque;

    f->n_resets++;
}

static void fixture_setup(Fixture *f, gconstpointer unused)
{
    g_autoptr(GError) error = NULL;

    (void)unused;
    f->bus = mvm_io_bus_new();
    f->kbc = mvm_i8042_new(KBD_GSI, on_irq, f, on_reset, f);
    f->irq_levels = g_array_new(FALSE, FALSE, sizeof(gboolean));
    g_assert_true(mvm_i8042_attach(f->kbc, f->bus, &error));
    g_assert_no_error(error);
}

static void fixture_teardown(Fixture *f, gconstpointer unused)
{
    (void)unused;
    mvm_i8042_free(f->kbc);
    mvm_io_bus_free(f->bus);
    g_array_unref(f->irq_levels);
}

static guint8 inb(Fixture *f, guint16 port)
{
    guint8 v;

    g_assert_true(mvm_io_bus_read(f->bus, MVM_IO_SPACE_PIO, port, &v, 1));
    return v;
}

static void outb(Fixture *f, guint16 port, guint8 v)
{
    /* What Linux's kb_wait()/i8042_wait_write() poll for before every write. */
    g_assert_cmpuint(inb(f, CMD) & STR_IBF, ==, 0);
    g_assert_true(mvm_io_bus_write(f->bus, MVM_IO_SPACE_PIO, port, &v, 1));
}

/* i8042_command(): write the command, then read each reply byte once OBF is set. */
static guint8 command_reply(Fixture *f, guint8 cmd)
{
    outb(f, CMD, cmd);
    g_assert_cmpuint(inb(f, CMD) & STR_OBF, ==, STR_OBF);
    return inb(f, DATA);
}

static void assert_empty(Fixture *f)
{
    g_assert_cmpuint(inb(f, CMD) & STR_OBF, ==, 0);
}

static void test_reset_pulse(Fixture *f, gconstpointer unused)
{
    (void)unused;
    outb(f, CMD, 0xfe);
    g_assert_cmpuint(f->n_resets, ==, 1);
    outb(f, CMD, 0xff); /* pulses nothing */
    outb(f, CMD, 0xfd); /* pulses bit 1 (A20) only */
    g_assert_cmpuint(f->n_resets, ==, 1);
    outb(f, CMD, 0xf0); /* pulses bits 0-3 */
    g_assert_cmpuint(f->n_resets, ==, 2);
}

static void test_reset_output_port(Fixture *f, gconstpointer unused)
{
    guint8 outp;

    (void)unused;
    outp = command_reply(f, 0xd0);
    g_assert_cmpuint(outp & 0x03, ==, 0x03); /* out of reset, A20 on */
    outb(f, CMD, 0xd1);
    outb(f, DATA, 0x03);
    g_assert_cmpuint(f->n_resets, ==, 0);
    g_assert_cmpuint(command_reply(f, 0xd0) & 0x03, ==, 0x03);
    outb(f, CMD, 0xd1);
    outb(f, DATA, 0x02); /* bit 0 clear: reset */
    g_assert_cmpuint(f->n_resets, ==, 1);
}

static void test_self_tests(Fixture *f, gconstpointer unused)
{
    (void)unused;
    g_assert_cmpuint(inb(f, CMD), !=, 0xff); /* i8042_flush(): a controller is there */
    assert_empty(f);
    g_assert_cmpuint(command_reply(f, 0xaa), ==, 0x55);
    g_assert_cmpuint(inb(f, CMD) & 0x04, ==, 0x04); /* system flag */
    g_assert_cmpuint(command_reply(f, 0xab), ==, 0x00);
    assert_empty(f);
    g_assert_cmpuint(f->n_resets, ==, 0);
}

static void test_command_byte(Fixture *f, gconstpointer unused)
{
    guint8 ctr;

    (void)unused;
    ctr = command_reply(f, 0x20);
    g_assert_cmpuint(ctr & 0x40, ==, 0x40); /* translation on, as firmware leaves it */
    outb(f, CMD, 0x60);
    outb(f, DATA, 0x44); /* interrupts off */
    g_array_set_size(f->irq_levels, 0);
    g_assert_cmpuint(command_reply(f, 0x20), ==, 0x44);
    outb(f, CMD, 0xad);
    g_assert_cmpuint(command_reply(f, 0x20), ==, 0x54);
    outb(f, CMD, 0xae);
    outb(f, CMD, 0xa7);
    g_assert_cmpuint(command_reply(f, 0x20), ==, 0x64);
    outb(f, CMD, 0xa8);
    g_assert_cmpuint(command_reply(f, 0x20), ==, 0x44);
    /* Interrupts were off: the replies raised nothing. */
    g_assert_cmpuint(f->irq_levels->len, ==, 0);
}

/* Linux's i8042_check_aux(): no AUX port, decided without timeouts. */
static void test_no_aux(Fixture *f, gconstpointer unused)
{
    guint8 status;

    (void)unused;
    outb(f, CMD, 0xd3);
    outb(f, DATA, 0x5a);
    status = inb(f, CMD);
    g_assert_cmpuint(status & STR_OBF, ==, STR_OBF);
    g_assert_cmpuint(status & 0x20, ==, 0); /* not AUX data: the loop test fails at once */
    g_assert_cmpuint(inb(f, DATA), ==, 0x5a);
    g_assert_cmpuint(command_reply(f, 0xa9), ==, 0x01);
    assert_empty(f);
}

static void test_keyboard_commands(Fixture *f, gconstpointer unused)
{
    (void)unused;
    /* atkbd_probe(): GETID, translated. */
    outb(f, DATA, 0xf2);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    g_assert_cmpuint(inb(f, DATA), ==, 0xab);
    g_assert_cmpuint(inb(f, DATA), ==, 0x41);
    assert_empty(f);
    /* SETLEDS with its parameter, SETREP, ENABLE, RESET. */
    outb(f, DATA, 0xed);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    outb(f, DATA, 0x00);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    outb(f, DATA, 0xf3);
    outb(f, DATA, 0x20);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    outb(f, DATA, 0xf4);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    outb(f, DATA, 0xff);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    g_assert_cmpuint(inb(f, DATA), ==, 0xaa);
    assert_empty(f);
    /* Reading an empty buffer repeats the last byte. */
    g_assert_cmpuint(inb(f, DATA), ==, 0xaa);
}

static const guint8 cad_set1[] = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};

static void test_ctrl_alt_del(Fixture *f, gconstpointer unused)
{
    guint n_edges = 0;

    (void)unused;
    mvm_i8042_send_ctrl_alt_del(f->kbc);
    g_assert_true(f->level);
    for (guint i = 0; i < G_N_ELEMENTS(cad_set1); i++) {
        g_assert_true(f->level);
        g_assert_cmpuint(inb(f, CMD) & STR_OBF, ==, STR_OBF);
        g_assert_cmpuint(inb(f, DATA), ==, cad_set1[i]);
    }
    g_assert_false(f->level);
    assert_empty(f);
    /* One rising edge per byte, for an edge-triggered IOAPIC pin. */
    for (guint i = 0; i < f->irq_levels->len; i++) {
        gboolean level = g_array_index(f->irq_levels, gboolean, i);

        g_assert_cmpint(level, ==, i % 2 == 0);
        n_edges += level;
    }
    g_assert_cmpuint(n_edges, ==, G_N_ELEMENTS(cad_set1));
    g_assert_cmpuint(f->n_resets, ==, 0);
}

static void test_ctrl_alt_del_untranslated(Fixture *f, gconstpointer unused)
{
    static const guint8 set2[] = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14};

    (void)unused;
    outb(f, CMD, 0x60);
    outb(f, DATA, 0x05); /* no translation, keyboard interrupt on */
    mvm_i8042_send_ctrl_alt_del(f->kbc);
    for (guint i = 0; i < G_N_ELEMENTS(set2); i++)
        g_assert_cmpuint(inb(f, DATA), ==, set2[i]);
    assert_empty(f);

    /* A keyboard the guest disabled sends nothing; a disabled interface passes nothing. */
    outb(f, DATA, 0xf5);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    mvm_i8042_send_ctrl_alt_del(f->kbc);
    assert_empty(f);
    outb(f, DATA, 0xf4);
    g_assert_cmpuint(inb(f, DATA), ==, 0xfa);
    outb(f, CMD, 0xad);
    mvm_i8042_send_ctrl_alt_del(f->kbc);
    assert_empty(f);
    g_assert_false(f->level);
}

static void test_save_restore(Fixture *f, gconstpointer unused)
{
    g_autoptr(GVariant) state = NULL;
    g_autoptr(GVariant) again = NULL;
    g_autoptr(GError) error = NULL;
    Fixture g = {0};

    (void)unused;
    outb(f, CMD, 0x60);
    outb(f, DATA, 0x65);
    mvm_i8042_send_ctrl_alt_del(f->kbc);
    g_assert_cmpuint(inb(f, DATA), ==, 0x1d);
    outb(f, CMD, 0xd1); /* a command waiting for its data byte */
    state = mvm_i8042_save(f->kbc);
    g_assert_false(g_variant_is_floating(state));
    g_assert_true(g_variant_is_normal_form(state));

    fixture_setup(&g, NULL);
    g_assert_true(mvm_i8042_restore(g.kbc, state, &error));
    g_assert_no_error(error);
    g_assert_true(g.level);
    again = mvm_i8042_save(g.kbc);
    g_assert_true(g_variant_equal(state, again));

    outb(&g, DATA, 0x00); /* completes the 0xd1 from before the snapshot */
    g_assert_cmpuint(g.n_resets, ==, 1);
    for (guint i = 1; i < G_N_ELEMENTS(cad_set1); i++)
        g_assert_cmpuint(inb(&g, DATA), ==, cad_set1[i]);
    assert_empty(&g);
    fixture_teardown(&g, NULL);
}

static void assert_restore_fails(Fixture *f, GVariant *floating)
{
    g_autoptr(GVariant) state = g_variant_ref_sink(floating);
    g_autoptr(GError) error = NULL;

    g_assert_false(mvm_i8042_restore(f->kbc, state, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

static GVariant *make_state(guint32 version, guint8 pending, gsize n_queued)
{
    guint8 queue[64] = {0};

    return g_variant_new("(uyyyyyby@ay)", version, 0x65, 0, 0x03, pending, 0, TRUE, 0,
                         g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, queue, n_queued, 1));
}

static void test_restore_invalid(Fixture *f, gconstpointer unused)
{
    static const guint8 junk[] = {0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0xd1, 0xed, 0x07, 0x33};
    g_autoptr(GVariant) ok = NULL;
    g_autoptr(GVariant) untrusted = NULL;

    (void)unused;
    assert_restore_fails(f, g_variant_new_int32(42));
    assert_restore_fails(f, make_state(7, 0, 0));
    assert_restore_fails(f, make_state(1, 0, 33));
    assert_restore_fails(f, make_state(1, 0x42, 0)); /* not a command that takes data */

    ok = g_variant_ref_sink(make_state(1, 0x60, 32));
    g_assert_true(mvm_i8042_restore(f->kbc, ok, NULL));
    g_assert_true(f->level);

    untrusted = g_variant_ref_sink(g_variant_new_from_data(G_VARIANT_TYPE("(uyyyyybyay)"), junk,
                                                           sizeof(junk), FALSE, NULL, NULL));
    (void)mvm_i8042_restore(f->kbc, untrusted, NULL);
    for (guint i = 0; i < 40; i++)
        (void)inb(f, DATA);
    outb(f, DATA, 0x00);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func)                                                                            \
    g_test_add("/i8042/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("reset-pulse", test_reset_pulse);
    ADD("reset-output-port", test_reset_output_port);
    ADD("self-tests", test_self_tests);
    ADD("command-byte", test_command_byte);
    ADD("no-aux", test_no_aux);
    ADD("keyboard-commands", test_keyboard_commands);
    ADD("ctrl-alt-del", test_ctrl_alt_del);
    ADD("ctrl-alt-del-untranslated", test_ctrl_alt_del_untranslated);
    ADD("save-restore", test_save_restore);
    ADD("restore-invalid", test_restore_invalid);
#undef ADD
    return g_test_run();
}
