/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the snapshot tests share (snapshot-test-util.h). */
#include <glib/gstdio.h>
#include <string.h>

#include "snapshot-test-util.h"

/* ---- helpers ---- */

gboolean have_kvm(void)
{
    g_autoptr(GError) error = NULL;

    if (mvm_kvm_api_version(&error) >= 0)
        return TRUE;
    g_autofree char *why = g_strdup_printf("no usable KVM: %s", error->message);
    g_test_skip(why);
    return FALSE;
}

void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    Capture *c = user_data;

    g_mutex_lock(&c->lock);
    g_string_append_len(c->output, (const char *)data, (gssize)len);
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

Capture *capture_new(void)
{
    Capture *c = g_new0(Capture, 1);

    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->output = g_string_new(NULL);
    return c;
}

void capture_free(Capture *c)
{
    g_string_free(c->output, TRUE);
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_free(c);
}

gsize capture_len(Capture *c)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);
    return c->output->len;
}

char *capture_dup_from(Capture *c, gsize from)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);
    return g_strdup(c->output->str + MIN(from, c->output->len));
}

/* Waits until @needle shows up at or after offset @from. */
gboolean capture_wait_from(Capture *c, gsize from, const char *needle, gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);

    while (strstr(c->output->str + MIN(from, c->output->len), needle) == NULL)
        if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            return FALSE;
    return TRUE;
}

MvmVm *new_guest(const char *cmdline, guint vcpus, guint64 memory_mib, Capture *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();

    config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
    g_assert_nonnull(config->kernel_path);
    config->cmdline = g_strdup(cmdline);
    config->n_vcpus = vcpus;
    config->memory_mib = memory_mib;
    config->debug_exit = TRUE;
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

void rm_rf(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        g_unlink(path);
    }
    g_rmdir(dir);
}
