/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the snapshot tests share (snapshot-test-util.h). */
#include <glib/gstdio.h>
#include <string.h>

#include "snapshot-test-util.h"
#include "snapshot.h"

/* ---- helpers ---- */

MvmVm *new_guest(const char *cmdline, guint vcpus, guint64 memory_mib, Capture *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) config = testguest_config(cmdline, vcpus, memory_mib);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    return vm;
}

/* The last complete "COUNTER n" line in @text, or 0. */
guint64 last_counter(const char *text)
{
    guint64 value = 0;

    for (const char *p = text; (p = strstr(p, "COUNTER ")) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        if (eol == NULL)
            break;
        value = g_ascii_strtoull(p + 8, NULL, 10);
    }
    return value;
}

/* The first complete "COUNTER n" line in @text, or 0. */
guint64 first_counter(const char *text)
{
    const char *p = strstr(text, "COUNTER ");
    return p != NULL && strchr(p, '\n') != NULL ? g_ascii_strtoull(p + 8, NULL, 10) : 0;
}

guint count_open_fds(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
    guint n = 0;

    g_assert_nonnull(dir);
    while (g_dir_read_name(dir) != NULL)
        n++;
    return n;
}

char *make_tmpdir(void)
{
    g_autoptr(GError) error = NULL;
    char *dir = g_dir_make_tmp("mvm-snapshot-XXXXXX", &error);

    g_assert_no_error(error);
    return dir;
}

GVariant *snapshot_read_payload(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "state", NULL);
    g_autofree char *data = NULL;
    g_autoptr(GError) error = NULL;
    gsize len;

    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    GVariant *payload = mvm_snapshot_unwrap((const guint8 *)data, len, &error);
    g_assert_no_error(error);
    return payload;
}

void snapshot_write_payload(const char *dir, GVariant *payload, guint16 major, guint16 minor)
{
    g_autoptr(GVariant) sunk = g_variant_take_ref(payload);
    g_autoptr(GBytes) bytes = mvm_snapshot_encode(sunk, major, minor);
    g_autofree char *path = g_build_filename(dir, "state", NULL);

    g_assert_true(g_file_set_contents(path, g_bytes_get_data(bytes, NULL),
                                      (gssize)g_bytes_get_size(bytes), NULL));
}

GVariant *variant_replace_child(GVariant *container, gsize index, GVariant *child)
{
    gsize n = g_variant_n_children(container);
    g_autofree GVariant **children = g_new0(GVariant *, n);

    g_variant_ref_sink(child);
    for (gsize i = 0; i < n; i++)
        children[i] = i == index ? g_variant_ref(child) : g_variant_get_child_value(container, i);
    GVariant *result = g_variant_is_of_type(container, G_VARIANT_TYPE_TUPLE)
                           ? g_variant_new_tuple(children, n)
                           : g_variant_new_array(NULL, children, n);
    for (gsize i = 0; i < n; i++)
        g_variant_unref(children[i]);
    g_variant_unref(child);
    return result;
}

GVariant *vardict_with(GVariant *dict, const char *key, GVariant *value)
{
    GVariantDict d;

    g_variant_dict_init(&d, dict);
    if (value != NULL)
        g_variant_dict_insert_value(&d, key, value);
    else
        g_assert_true(g_variant_dict_remove(&d, key));
    return g_variant_dict_end(&d);
}

/* ---- the dirty guest ---- */

void dirty_start(DirtyGuest *d, guint64 memory_mib)
{
    g_autoptr(GError) error = NULL;

    d->c = capture_new();
    d->vm = new_guest("mode=dirty", 1, memory_mib, d->c);
    d->round = 0;
    g_assert_true(mvm_vm_start(d->vm, &error));
    g_assert_true(capture_wait_from(d->c, 0, "DIRTY ready\n", TIMEOUT_US));
}

void dirty_attach(DirtyGuest *d, MvmVm *vm, guint64 round)
{
    d->vm = vm;
    d->c = capture_new();
    d->round = round;
    mvm_vm_set_console_callback(vm, on_console, d->c);
}

void dirty_detach(DirtyGuest *d)
{
    mvm_vm_set_console_callback(d->vm, NULL, NULL);
    d->vm = NULL;
    g_clear_pointer(&d->c, capture_free);
}

void dirty_clear(DirtyGuest *d)
{
    g_clear_pointer(&d->vm, mvm_vm_free);
    g_clear_pointer(&d->c, capture_free);
}

/* Sends @command and waits for @reply; returns what the guest printed since (free it). */
static char *dirty_command(DirtyGuest *d, const char *command, const char *reply)
{
    g_autofree char *line = g_strdup_printf("%s\n", command);
    gsize mark = capture_len(d->c);

    d->round++;
    g_assert_cmpuint(mvm_vm_console_write(d->vm, (const guint8 *)line, strlen(line)), ==,
                     strlen(line));
    g_assert_true(capture_wait_from(d->c, mark, reply, TIMEOUT_US));
    return capture_dup_from(d->c, mark);
}

void dirty_write(DirtyGuest *d, const char *addrs, guint count)
{
    g_autofree char *done =
        g_strdup_printf("DIRTY wrote %u round %" G_GUINT64_FORMAT "\n", count, d->round + 1);

    g_free(dirty_command(d, addrs, done));
}

guint64 dirty_sum(DirtyGuest *d, guint64 start, guint64 end, guint64 stride)
{
    g_autofree char *command = g_strdup_printf("r 0x%" G_GINT64_MODIFIER "x 0x%" G_GINT64_MODIFIER
                                               "x 0x%" G_GINT64_MODIFIER "x",
                                               start, end, stride);
    g_autofree char *done = g_strdup_printf(" round %" G_GUINT64_FORMAT "\n", d->round + 1);
    g_autofree char *out = dirty_command(d, command, done);
    const char *line = strstr(out, "DIRTY sum 0x");

    g_assert_nonnull(line);
    g_assert_true(strstr(line, done) != NULL);
    return g_ascii_strtoull(line + strlen("DIRTY sum 0x"), NULL, 16);
}
