/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `linux` suite's snapshot test: boots Debian's kernel (tests/guest/, from
 * MVM_LINUX_GUEST_DIR: vmlinux and initramfs.cpio.gz), snapshots it mid-boot,
 * frees the original, restores the snapshot and checks the restored kernel
 * goes on printing boot messages where the original stopped, without booting
 * again. Exits 77 (skipped) without the guest or without KVM.
 */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "microvm.h"

#define CMDLINE                                                                                    \
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 pci=off i8042.noaux "         \
    "i8042.nomux i8042.nopnp i8042.dumbkbd"
#define BOOT_TIMEOUT_US    (180 * G_USEC_PER_SEC)
#define RESTORE_TIMEOUT_US (180 * G_USEC_PER_SEC)
#define NEW_LINES          10

typedef struct {
    GMutex lock;
    GCond cond;
    GString *text;
} Console;

static const char *guest_dir;

static void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    Console *c = user_data;

    g_mutex_lock(&c->lock);
    g_string_append_len(c->text, (const char *)data, (gssize)len);
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

static guint count_lines(const char *text)
{
    guint n = 0;

    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        n++;
    return n;
}

/* Waits for @needle, or for @min_lines complete lines when @needle is NULL. */
static gboolean console_wait(Console *c, const char *needle, guint min_lines, gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);

    while (needle != NULL ? strstr(c->text->str, needle) == NULL
                          : count_lines(c->text->str) < min_lines)
        if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            return FALSE;
    return TRUE;
}

static char *console_dup(Console *c)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);
    return g_strdup(c->text->str);
}

/* The "[ seconds.micros]" stamp of the last complete kernel line, or -1. */
static double last_stamp(const char *text)
{
    double stamp = -1;

    for (const char *p = text; (p = strchr(p, '[')) != NULL; p++) {
        char *end;
        double value = g_ascii_strtod(p + 1, &end);
        if (end != p + 1 && *end == ']' && strchr(end, '\n') != NULL)
            stamp = value;
    }
    return stamp;
}

static double first_stamp(const char *text)
{
    for (const char *p = text; (p = strchr(p, '[')) != NULL; p++) {
        char *end;
        double value = g_ascii_strtod(p + 1, &end);
        if (end != p + 1 && *end == ']')
            return value;
    }
    return -1;
}

/* Boots the kernel to "Linux version" and a little beyond, then snapshots it into @dir. */
static char *boot_and_snapshot(const char *dir)
{
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();
    g_autoptr(GError) error = NULL;
    Console c = {.text = g_string_new(NULL)};

    config->kernel_path = g_build_filename(guest_dir, "vmlinux", NULL);
    config->initrd_path = g_build_filename(guest_dir, "initramfs.cpio.gz", NULL);
    config->cmdline = g_strdup(CMDLINE);
    config->n_vcpus = 2;
    config->memory_mib = 256;
    g_mutex_init(&c.lock);
    g_cond_init(&c.cond);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, &c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(console_wait(&c, "Linux version", 0, BOOT_TIMEOUT_US));
    /* Mid-boot: a few lines past the banner. */
    g_autofree char *banner = console_dup(&c);
    g_assert_true(console_wait(&c, NULL, count_lines(banner) + 5, BOOT_TIMEOUT_US));
    gint64 t0 = g_get_monotonic_time();
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_test_message("snapshot of the booting kernel written in %.1f ms",
                   (g_get_monotonic_time() - t0) / 1000.0);
    char *text = console_dup(&c);
    mvm_vm_free(vm); /* the restore must not need the original */
    g_string_free(c.text, TRUE);
    g_mutex_clear(&c.lock);
    g_cond_clear(&c.cond);
    return text;
}

static void test_snapshot_mid_boot(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mvm-linux-snapshot-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *before = boot_and_snapshot(dir);
    Console c = {.text = g_string_new(NULL)};

    g_mutex_init(&c.lock);
    g_cond_init(&c.cond);
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, &c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_test_message("restored and resumed in %.1f ms", (g_get_monotonic_time() - t0) / 1000.0);

    gboolean printed = console_wait(&c, NULL, NEW_LINES, RESTORE_TIMEOUT_US);
    g_autofree char *after = console_dup(&c);
    g_test_message("before the snapshot (last 400 bytes):\n%s",
                   before + strlen(before) - MIN(strlen(before), 400));
    g_test_message("the restored kernel printed:\n%s", after);
    g_assert_true(printed);
    /* It went on: no second boot, and its clock did not start over. */
    g_assert_null(strstr(after, "Linux version"));
    g_assert_cmpfloat(first_stamp(after), >=, last_stamp(before));
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_RUNNING);

    g_assert_true(mvm_vm_stop(vm, &error));
    g_clear_pointer(&vm, mvm_vm_free);
    g_string_free(c.text, TRUE);
    g_mutex_clear(&c.lock);
    g_cond_clear(&c.cond);
    const char *names[] = {"state", "memory"};
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *path = g_build_filename(dir, names[i], NULL);
        g_unlink(path);
    }
    g_rmdir(dir);
}

static int skip(const char *why)
{
    g_print("1..0 # SKIP %s\n", why);
    return 77;
}

int main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;

    g_test_init(&argc, &argv, NULL);
    guest_dir = g_getenv("MVM_LINUX_GUEST_DIR");
    if (guest_dir == NULL || *guest_dir == '\0')
        return skip("MVM_LINUX_GUEST_DIR is not set: build the Linux guest (tests/guest/)");
    g_autofree char *vmlinux = g_build_filename(guest_dir, "vmlinux", NULL);
    g_autofree char *initrd = g_build_filename(guest_dir, "initramfs.cpio.gz", NULL);
    if (!g_file_test(vmlinux, G_FILE_TEST_IS_REGULAR) ||
        !g_file_test(initrd, G_FILE_TEST_IS_REGULAR))
        return skip("no vmlinux or initramfs.cpio.gz in MVM_LINUX_GUEST_DIR: build the Linux "
                    "guest (tests/guest/)");
    if (mvm_kvm_api_version(&error) < 0)
        return skip(error->message);
    g_test_add_func("/snapshot-linux/mid-boot", test_snapshot_mid_boot);
    return g_test_run();
}
