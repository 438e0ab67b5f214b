/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshots of Debian's kernel (tests/linux-guest/, from MVM_LINUX_GUEST_DIR:
 * vmlinux and initramfs.cpio.gz).
 * - `linux` suite: snapshot it mid-boot, free the original, restore, and the
 *   restored kernel goes on printing boot messages without booting again.
 * - `linux-full` suite (--full; wherever Linux reaches /init: linux-full-host.h):
 *   a shell (rdinit=/bin/sh) restored from a snapshot runs commands, and a
 *   pause longer than the soft-lockup threshold leaves no soft-lockup report; and
 *   Debian's standard kernel (MVM_LINUX_STANDARD_GUEST_DIR, which has the VM
 *   generation ID driver) reseeds its RNG when restored, and only then.
 * Exits 77 (skipped), saying why, without the guest or KVM, or with --full where
 * Linux cannot reach /init.
 */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "linux-full-host.h"
#include "microvm.h"
#include "test-util.h"

#define CMDLINE                                                                                    \
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 pci=off i8042.noaux "         \
    "i8042.nomux i8042.nopnp i8042.dumbkbd"
#define BOOT_TIMEOUT_US    (180 * G_USEC_PER_SEC)
#define RESTORE_TIMEOUT_US (180 * G_USEC_PER_SEC)
#define NEW_LINES          10

static const char *guest_dir;

static guint count_lines(const char *text)
{
    guint n = 0;

    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        n++;
    return n;
}

/* Waits for @needle, or for @min_lines complete lines when @needle is NULL. */
static gboolean console_wait(Capture *c, const char *needle, guint min_lines, gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);

    while (needle != NULL ? strstr(c->output->str, needle) == NULL
                          : count_lines(c->output->str) < min_lines)
        if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            return FALSE;
    return TRUE;
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

/* Boots the guest in @dir with CMDLINE + @extra; the caller frees the VM before @c. */
static MvmVm *boot_linux_from(const char *dir, const char *extra, Capture *c)
{
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();
    g_autoptr(GError) error = NULL;

    config->kernel_path = g_build_filename(dir, "vmlinux", NULL);
    config->initrd_path = g_build_filename(dir, "initramfs.cpio.gz", NULL);
    config->cmdline = g_strjoin(" ", CMDLINE, extra, NULL);
    config->n_vcpus = 2;
    config->memory_mib = 256;
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_start(vm, &error));
    return vm;
}

static MvmVm *boot_linux(const char *extra, Capture *c)
{
    return boot_linux_from(guest_dir, extra, c);
}

/* Boots the kernel to "Linux version" and a little beyond, snapshots it into @dir, frees it. */
static char *boot_and_snapshot(const char *dir)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = boot_linux("", c);

    g_assert_true(console_wait(c, "Linux version", 0, BOOT_TIMEOUT_US));
    /* Mid-boot: a few lines past the banner. */
    g_autofree char *banner = capture_dup_from(c, 0);
    g_assert_true(console_wait(c, NULL, count_lines(banner) + 5, BOOT_TIMEOUT_US));
    gint64 t0 = g_get_monotonic_time();
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_test_message("snapshot of the booting kernel written in %.1f ms",
                   (g_get_monotonic_time() - t0) / 1000.0);
    char *text = capture_dup_from(c, 0);
    g_clear_pointer(&vm, mvm_vm_free); /* the restore must not need the original */
    return text;
}

static void test_snapshot_mid_boot(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mvm-linux-snapshot-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *before = boot_and_snapshot(dir);
    g_autoptr(Capture) c = capture_new();

    gint64 t0 = g_get_monotonic_time();
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_test_message("restored and resumed in %.1f ms", (g_get_monotonic_time() - t0) / 1000.0);

    gboolean printed = console_wait(c, NULL, NEW_LINES, RESTORE_TIMEOUT_US);
    g_autofree char *after = capture_dup_from(c, 0);
    g_test_message("the restored kernel printed:\n%s", after);
    g_assert_true(printed);
    /* It went on: no second boot, and its clock did not start over. */
    g_assert_null(strstr(after, "Linux version"));
    g_assert_cmpfloat(first_stamp(after), >=, last_stamp(before));
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_RUNNING);
    g_clear_pointer(&vm, mvm_vm_free);
    rm_rf(dir);
}

/* ---- linux-full ---- */

/*
 * Types @command (which prints @expect only when the shell ran it: "echo X-$((6*7))" prints
 * X-42, while the terminal's echo of the line shows the expression) until @expect appears.
 */
static gboolean shell_run(MvmVm *vm, Capture *c, const char *command, const char *expect)
{
    g_autofree char *line = g_strdup_printf("%s\n", command);
    gint64 deadline = g_get_monotonic_time() + BOOT_TIMEOUT_US;

    while (g_get_monotonic_time() < deadline) {
        mvm_vm_console_write(vm, (const guint8 *)line, strlen(line));
        if (console_wait(c, expect, 0, 2 * G_USEC_PER_SEC))
            return TRUE;
    }
    return FALSE;
}

static void test_full_restore_shell(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mvm-linux-snapshot-XXXXXX", &error);
    g_assert_no_error(error);
    {
        g_autoptr(Capture) c = capture_new();
        g_autoptr(MvmVm) vm = boot_linux("rdinit=/bin/sh", c);
        g_assert_true(shell_run(vm, c, "echo BEFORE-$((6*7))", "BEFORE-42"));
        g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_NONE, &error));
        g_assert_no_error(error);
        g_clear_pointer(&vm, mvm_vm_free);
    }
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(shell_run(vm, c, "echo AFTER-$((6*8)) $(cat /proc/uptime)", "AFTER-48"));
    g_autofree char *out = capture_dup_from(c, 0);
    g_test_message("restored shell:\n%s", out);
    g_clear_pointer(&vm, mvm_vm_free);
    rm_rf(dir);
}

/* Soft-lockup reports come after 2 × watchdog_thresh seconds without the watchdog running. */
static void test_full_pause_no_soft_lockup(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = boot_linux("rdinit=/bin/sh watchdog_thresh=1", c);

    g_assert_true(shell_run(vm, c, "echo UP-$((5*5))", "UP-25"));
    g_assert_true(mvm_vm_pause(vm, &error));
    gsize mark = strlen(capture_dup_from(c, 0));
    g_usleep(6 * G_USEC_PER_SEC);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(shell_run(vm, c, "echo BACK-$((7*7))", "BACK-49"));
    g_usleep(3 * G_USEC_PER_SEC); /* the watchdog would have spoken by now */
    g_autofree char *out = capture_dup_from(c, 0);
    g_test_message("after the resume:\n%s", out + mark);
    g_assert_null(strstr(out + mark, "soft lockup"));
    g_clear_pointer(&vm, mvm_vm_free);
}

/*
 * The generation ID end to end: Linux's vmgenid driver binds to our VGEN device (by its _CID),
 * and at the Notify a restore raises through the GED it hands the new ID to the RNG, which says
 * "crng reseeded due to virtual machine fork". The original, which goes on running beside the
 * clone, must not say it.
 */
#define RESEEDED "crng reseeded due to virtual machine fork"

static void test_full_vmgenid_reseed(gconstpointer data)
{
    const char *standard_dir = data;
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mvm-linux-vmgenid-XXXXXX", &error);
    g_assert_no_error(error);
    g_autoptr(Capture) original_console = capture_new();
    g_autoptr(MvmVm) original = boot_linux_from(standard_dir, "rdinit=/bin/sh", original_console);

    /* The RNG says nothing at a fork before it is ready, so wait for that too. */
    g_assert_true(shell_run(original, original_console,
                            "mount -t sysfs sysfs /sys; echo BOUND-$(ls "
                            "/sys/bus/acpi/drivers/vmgenid | grep -c MVMD0001)-$((2*3))",
                            "BOUND-1-6"));
    g_assert_true(console_wait(original_console, "crng init done", 0, BOOT_TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(original, dir, MVM_SNAPSHOT_NONE, &error));
    g_assert_no_error(error);

    g_autoptr(Capture) clone_console = capture_new();
    g_autoptr(MvmVm) clone = mvm_vm_restore(dir, MVM_RESTORE_CLONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(clone, on_console, clone_console);
    g_assert_true(mvm_vm_resume(clone, &error));
    gboolean reseeded = console_wait(clone_console, RESEEDED, 0, RESTORE_TIMEOUT_US);
    g_assert_true(shell_run(clone, clone_console, "echo CLONE-$((6*9))", "CLONE-54"));
    g_assert_true(shell_run(original, original_console, "echo ORIGINAL-$((7*9))", "ORIGINAL-63"));
    g_autofree char *clone_out = capture_dup_from(clone_console, 0);
    g_autofree char *original_out = capture_dup_from(original_console, 0);
    g_test_message("the clone printed:\n%s", clone_out);
    g_assert_true(reseeded);
    g_assert_null(strstr(original_out, RESEEDED));
    g_clear_pointer(&clone, mvm_vm_free);
    g_clear_pointer(&original, mvm_vm_free);
    rm_rf(dir);
}

/* The standard kernel's directory, or NULL with the reason in @why. */
static const char *standard_guest_dir(const char **why)
{
    const char *dir = g_getenv("MVM_LINUX_STANDARD_GUEST_DIR");
    g_autofree char *vmlinux = NULL;

    if (dir == NULL || *dir == '\0') {
        *why = "MVM_LINUX_STANDARD_GUEST_DIR is not set";
        return NULL;
    }
    vmlinux = g_build_filename(dir, "vmlinux", NULL);
    if (!g_file_test(vmlinux, G_FILE_TEST_IS_REGULAR)) {
        *why = "Debian's standard kernel is not built (tests/linux-guest/build-linux-guest "
               "--standard BUILDDIR/tests/linux-guest/linux-standard; scripts/run-tests does)";
        return NULL;
    }
    return dir;
}

static void test_skip_vmgenid(gconstpointer why)
{
    g_test_skip(why);
}

static int skip(const char *why)
{
    g_print("1..0 # SKIP %s\n", why);
    return 77;
}

int main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    gboolean full = argc > 1 && g_strcmp0(argv[1], "--full") == 0;

    g_test_init(&argc, &argv, NULL);
    if (full && linux_full_unsupported() != NULL)
        return skip(linux_full_unsupported());
    guest_dir = g_getenv("MVM_LINUX_GUEST_DIR");
    if (guest_dir == NULL || *guest_dir == '\0')
        return skip("MVM_LINUX_GUEST_DIR is not set: build the Linux guest (tests/linux-guest/)");
    g_autofree char *vmlinux = g_build_filename(guest_dir, "vmlinux", NULL);
    g_autofree char *initrd = g_build_filename(guest_dir, "initramfs.cpio.gz", NULL);
    if (!g_file_test(vmlinux, G_FILE_TEST_IS_REGULAR) ||
        !g_file_test(initrd, G_FILE_TEST_IS_REGULAR))
        return skip("no vmlinux or initramfs.cpio.gz in MVM_LINUX_GUEST_DIR: build the Linux "
                    "guest (tests/linux-guest/)");
    if (mvm_kvm_api_version(&error) < 0)
        return skip(error->message);
    if (full) {
        g_test_add_func("/snapshot-linux-full/restore-shell", test_full_restore_shell);
        g_test_add_func("/snapshot-linux-full/pause-no-soft-lockup",
                        test_full_pause_no_soft_lockup);
        const char *why = NULL, *standard = standard_guest_dir(&why);
        if (standard != NULL)
            g_test_add_data_func("/snapshot-linux-full/vmgenid-reseed", standard,
                                 test_full_vmgenid_reseed);
        else
            g_test_add_data_func("/snapshot-linux-full/vmgenid-reseed", why, test_skip_vmgenid);
    } else {
        g_test_add_func("/snapshot-linux/mid-boot", test_snapshot_mid_boot);
    }
    return g_test_run();
}
