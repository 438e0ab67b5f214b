/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the snapshot tests share (snapshot-test-util.h). */
#include <glib/gstdio.h>
#include <string.h>

#include "snapshot-test-util.h"

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
