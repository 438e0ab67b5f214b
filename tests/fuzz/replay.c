/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a fuzz target over every file of the corpus directories given on the
 * command line (TAP, one test per file), so the corpus is checked in the
 * normal suite by any compiler. Also runs each input cut in half, since
 * truncation is the commonest damage, and checks that files named valid-*
 * are accepted (so a corpus that no longer matches the format is noticed).
 */
#include <glib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);
/* Optional in a target: TRUE when it accepts the input; corpus files named valid-* must be. */
gboolean fuzz_target_accepts(const guint8 *data, size_t size) __attribute__((weak));

static void run_file(gconstpointer data)
{
    const char *path = data;
    g_autofree char *contents = NULL;
    gsize len;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &contents, &len, &error));
    LLVMFuzzerTestOneInput((const guint8 *)contents, len);
    LLVMFuzzerTestOneInput((const guint8 *)contents, len / 2);
    if (fuzz_target_accepts != NULL && g_str_has_prefix(strrchr(path, '/') + 1, "valid-"))
        g_assert_true(fuzz_target_accepts((const guint8 *)contents, len));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    for (int i = 1; i < argc; i++) {
        g_autoptr(GDir) dir = g_dir_open(argv[i], 0, NULL);
        const char *name;
        if (dir == NULL) {
            g_printerr("cannot open corpus %s\n", argv[i]);
            return 1;
        }
        while ((name = g_dir_read_name(dir)) != NULL) {
            char *path = g_build_filename(argv[i], name, NULL);
            g_autofree char *test = g_strdup_printf("/fuzz-replay/%s", name);
            g_test_add_data_func_full(test, path, run_file, g_free);
        }
    }
    return g_test_run();
}
