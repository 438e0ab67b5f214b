/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Debian's kernel booted through microvmd on a private bus, its early boot read through
 * OpenConsole: "Linux version", the exact command line we passed, and "Booting paravirtualized
 * kernel on KVM" (docs/kvm-hosts.md: ~8-14 s of guest clock under nested KVM, so minutes are
 * allowed). The guest comes from MVM_LINUX_GUEST_DIR (vmlinux, initramfs.cpio.gz, built by
 * tests/linux-guest/); without it, or without /dev/kvm, the test is skipped (77).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "harness.h"

#define BOOT_TIMEOUT_S 240
/* A random token makes the expected command line unique to this run. */
#define CMDLINE_BASE                                                                               \
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 pci=off i8042.noaux "         \
    "i8042.nomux i8042.nopnp i8042.dumbkbd"

/* Exit status 77: meson counts the test as skipped. */
static int skip(const char *why)
{
    g_printerr("SKIP: %s\n", why);
    return 77;
}

static int open_console(MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) handle = NULL;
    g_autoptr(GUnixFDList) fds = NULL;
    int fd;

    mvmd_vm_call_open_console_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &handle, &fds, NULL,
                                   &error);
    g_assert_no_error(error);
    fd = g_unix_fd_list_get(fds, g_variant_get_handle(handle), &error);
    g_assert_no_error(error);
    return fd;
}

/* Reads the console until every one of @needles was seen, or the time is up. */
static gboolean read_until(int fd, GString *seen, const char *const *needles, gint64 deadline)
{
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        char buf[4096];
        gboolean all = TRUE;
        ssize_t n;

        for (const char *const *s = needles; *s; s++)
            all = all && strstr(seen->str, *s) != NULL;
        if (all)
            return TRUE;
        if (g_get_monotonic_time() > deadline)
            return FALSE;
        if (poll(&p, 1, 200) <= 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return FALSE;
        g_string_append_len(seen, buf, n);
    }
}

static void test_early_boot(gconstpointer data)
{
    const char *dir = data;
    g_autoptr(MvmdTestBus) bus = mvmd_test_bus_new();
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GString) seen = g_string_new(NULL);
    g_autofree char *token = g_uuid_string_random();
    g_autofree char *cmdline = g_strdup_printf("%s microvm.test=%.8s", CMDLINE_BASE, token);
    g_autofree char *kernel = g_build_filename(dir, "vmlinux", NULL);
    g_autofree char *initrd = g_build_filename(dir, "initramfs.cpio.gz", NULL);
    g_autofree char *command_line = g_strdup_printf("Command line: %s", cmdline);
    g_autofree char *path = NULL;
    const char *needles[] = {"Linux version", command_line, "Booting paravirtualized kernel on KVM",
                             NULL};
    gint64 start;
    gboolean found;
    int fd;

    mvmd_test_bus_start_daemon(bus, NULL);
    manager = mvmd_test_bus_manager(bus, NULL);
    mvmd_manager_call_create_vm_sync(
        manager, "debian",
        g_variant_new_parsed("{'kernel': <%s>, 'initrd': <%s>, 'cmdline': <%s>, "
                             "'memory-mib': <uint64 256>, 'vcpus': <uint32 1>}",
                             kernel, initrd, cmdline),
        G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    vm = mvmd_test_bus_vm(bus, NULL, path);
    fd = open_console(vm);
    start = g_get_monotonic_time();
    mvmd_vm_call_start_sync(vm, G_DBUS_CALL_FLAGS_NONE, 60000, NULL, &error);
    g_assert_no_error(error);

    found = read_until(fd, seen, needles, start + BOOT_TIMEOUT_S * G_USEC_PER_SEC);
    g_test_message("%.1f s to the last early-boot line; %" G_GSIZE_FORMAT " bytes of console",
                   (g_get_monotonic_time() - start) / 1e6, seen->len);
    if (!found)
        g_test_message("console so far:\n%s", seen->str);
    for (const char *const *s = needles; *s; s++) {
        if (!strstr(seen->str, *s))
            g_test_message("not seen: %s", *s);
    }
    g_assert_true(found);
    /* The banner names the kernel: the one the guest dir says it holds. */
    g_assert_nonnull(strstr(seen->str, "Linux version 6."));
    close(fd);

    mvmd_vm_call_stop_sync(vm, G_DBUS_CALL_FLAGS_NONE, 60000, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

int main(int argc, char **argv)
{
    const char *dir = g_getenv("MVM_LINUX_GUEST_DIR");
    g_autofree char *vmlinux = NULL;
    g_autofree char *kvm_unusable = NULL;

    g_test_init(&argc, &argv, NULL);
    if (!g_getenv("MICROVMD"))
        return skip("MICROVMD is not set (run through meson test)");
    if (!dir || !*dir)
        return skip("MVM_LINUX_GUEST_DIR is not set: build the guest (tests/linux-guest/)");
    vmlinux = g_build_filename(dir, "vmlinux", NULL);
    if (!g_file_test(vmlinux, G_FILE_TEST_EXISTS))
        return skip("no vmlinux in MVM_LINUX_GUEST_DIR: build the guest (tests/linux-guest/)");
    kvm_unusable = kvm_device_unusable();
    if (kvm_unusable)
        return skip(kvm_unusable);
    g_test_add_data_func("/daemon-linux/early-boot", dir, test_early_boot);
    return g_test_run();
}
