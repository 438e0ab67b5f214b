/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Config validation and the GKeyFile round trip, without a bus. */
#include <glib/gstdio.h>

#include "config.h"
#include "errors.h"
#include "store.h"

static MvmdVmConfig *parse(const char *name, const char *text, GError **error)
{
    g_autoptr(GVariant) v = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);

    g_assert_nonnull(v);
    return mvmd_vm_config_new_from_variant(name, NULL, v, NULL, error);
}

static void test_defaults(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmConfig) c = parse("vm", "{'kernel': <'/k'>}", &error);

    g_assert_no_error(error);
    g_assert_cmpuint(c->vcpus, ==, 1);
    g_assert_cmpuint(c->memory_mib, ==, MVMD_DEFAULT_MEMORY);
    g_assert_cmpstr(c->kernel, ==, "/k");
    g_assert_cmpint(c->kernel_fd, ==, -1);
    g_assert_null(c->initrd);
    g_assert_false(c->persist);
    g_assert_cmpint(c->on_reboot, ==, MVMD_ON_REBOOT_RESTART);
    g_assert_true(g_uuid_string_is_valid(c->uuid));
}

static void test_invalid(void)
{
    static const struct {
        const char *name;
        const char *text;
        const char *key; /* named in the message */
    } cases[] = {
        {"vm", "{}", "kernel"},
        {"vm", "{'kernel': <'k'>}", "kernel"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <uint32 0>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <uint32 256>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'vcpus': <2>}", "vcpus"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 0>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 7>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'memory-mib': <uint64 2097152>}", "memory-mib"},
        {"vm", "{'kernel': <'/k'>, 'x': <1>}", "x"},
        {"vm", "{'kernel': <'/k'>, 'vsock': <@a{sv} {}>}", "vsock"},
        {"vm", "{'kernel': <'/k'>, 'autostart': <true>}", "autostart"},
        {"vm", "{'kernel': <'/k'>, 'on-reboot': <'never'>}", "on-reboot"},
        {"vm", "{'kernel': <'/k'>, 'kernel': <'/j'>}", "kernel"},
        {"", "{'kernel': <'/k'>}", NULL},
        {"a/b", "{'kernel': <'/k'>}", NULL},
        {"-a", "{'kernel': <'/k'>}", NULL},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(MvmdVmConfig) c = parse(cases[i].name, cases[i].text, &error);

        g_assert_null(c);
        g_assert_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT);
        if (cases[i].key) {
            g_autofree char *quoted = g_strdup_printf("'%s'", cases[i].key);
            g_assert_nonnull(strstr(error->message, quoted));
        }
    }
}

static void test_keyfile_roundtrip(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmConfig) c =
        parse("round.trip",
              "{'kernel': <'/k'>, 'initrd': <'/i'>, 'cmdline': <'a=1 b=\"2\"\\n'>,"
              " 'vcpus': <uint32 4>, 'memory-mib': <uint64 256>, 'persist': <true>,"
              " 'autostart': <true>, 'on-reboot': <'stop'>, 'debug-exit': <true>}",
              &error);
    g_autoptr(GKeyFile) kf = NULL;
    g_autoptr(MvmdVmConfig) back = NULL;
    g_autoptr(GVariant) v1 = NULL;
    g_autoptr(GVariant) v2 = NULL;

    g_assert_no_error(error);
    kf = mvmd_vm_config_to_keyfile(c);
    back = mvmd_vm_config_new_from_keyfile(kf, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(back->name, ==, c->name);
    g_assert_cmpstr(back->uuid, ==, c->uuid);
    v1 = g_variant_ref_sink(mvmd_vm_config_to_variant(c));
    v2 = g_variant_ref_sink(mvmd_vm_config_to_variant(back));
    g_assert_true(g_variant_equal(v1, v2));
}

static void test_store(void)
{
    g_autofree char *dir = g_dir_make_tmp("mvmd-store-XXXXXX", NULL);
    g_autoptr(MvmdStore) store = mvmd_store_new(dir);
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVmConfig) c = parse("s1", "{'kernel': <'/k'>, 'persist': <true>}", &error);
    g_autoptr(GPtrArray) loaded = NULL;
    g_autofree char *junk = g_build_filename(mvmd_store_get_dir(store), "junk.vm", NULL);
    g_autofree char *file = g_build_filename(mvmd_store_get_dir(store), "s1.vm", NULL);

    g_assert_no_error(error);
    g_assert_true(mvmd_store_save(store, c, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_set_contents(junk, "garbage", -1, NULL));
    {
        /* The skip is logged as a warning, which GTest would make fatal. */
        GLogLevelFlags fatal = g_log_set_always_fatal(G_LOG_FATAL_MASK);
        loaded = mvmd_store_load_all(store);
        g_log_set_always_fatal(fatal);
    }
    g_assert_cmpuint(loaded->len, ==, 1);
    g_assert_cmpstr(((MvmdVmConfig *)loaded->pdata[0])->uuid, ==, c->uuid);
    g_assert_true(g_file_test(junk, G_FILE_TEST_EXISTS));
    g_assert_true(mvmd_store_remove(store, "s1", &error));
    g_assert_true(mvmd_store_remove(store, "s1", &error)); /* gone: fine */
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
    g_remove(junk);
    g_rmdir(mvmd_store_get_dir(store));
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    mvmd_config_set_max_vcpus(255);
    g_test_add_func("/config/defaults", test_defaults);
    g_test_add_func("/config/invalid", test_invalid);
    g_test_add_func("/config/keyfile-roundtrip", test_keyfile_roundtrip);
    g_test_add_func("/config/store", test_store);
    return g_test_run();
}
