/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * linux-full: Debian's kernel uses our virtio devices. The guest (tests/linux-guest/,
 * plus the overlay of tests/vm/virtio-linux-initramfs with the virtio modules
 * and its own /init) mounts an ext4 image from /dev/vda, pings the host over a
 * tap, and reads /dev/hwrng. Runs wherever Linux reaches /init (linux-full-host.h)
 * and the guest is built (MVM_LINUX_GUEST_DIR, with the virtio modules that
 * tests/linux-guest/build-linux-guest prepares); exits 77 (skip) otherwise, saying why.
 */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "linux-full-host.h"
#include "microvm.h"
#include "test-util.h"

#define SKIP       77
#define TAP_NAME   "mvmlinux0"
#define TIMEOUT_US (300 * G_USEC_PER_SEC)

static G_GNUC_NORETURN void skip(const char *why)
{
    g_print("1..0 # SKIP %s\n", why);
    exit(SKIP);
}

static gboolean run(char **argv, GError **error)
{
    g_autofree char *out = NULL, *err = NULL;
    gint status = 0;

    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                      error))
        return FALSE;
    if (!g_spawn_check_wait_status(status, error)) {
        g_prefix_error(error, "%s: %s", argv[0], err);
        return FALSE;
    }
    return TRUE;
}

/* An ext4 image whose `token` file holds @token (mkfs.ext4 -d, no mount needed). */
static char *make_ext4(const char *dir, const char *token)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *root = g_build_filename(dir, "root", NULL);
    g_autofree char *tokfile = g_build_filename(root, "token", NULL);
    char *image = g_build_filename(dir, "disk.ext4", NULL);

    g_assert_cmpint(g_mkdir(root, 0755), ==, 0);
    g_assert_true(g_file_set_contents(tokfile, token, -1, &error));
    char *argv[] = {"mkfs.ext4", "-q", "-F", "-d", root, image, "16M", NULL};
    if (!run(argv, &error))
        skip(error->message);
    return image;
}

/* In a network namespace of our own: a tap with the host end at 10.77.0.1/24. */
static void make_tap(void)
{
    g_autoptr(GError) error = NULL;
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int fd = -1;

    /* In this order: a tap lives in the namespace /dev/net/tun was opened in. */
    if (unshare(CLONE_NEWNET) != 0 || (fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)) < 0)
        skip("cannot make a network namespace with a tap (needs root and /dev/net/tun)");
    g_strlcpy(ifr.ifr_name, TAP_NAME, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(fd, TUNSETIFF, &ifr), ==, 0);
    g_assert_cmpint(ioctl(fd, TUNSETPERSIST, 1), ==, 0);
    close(fd);
    char *up[] = {"ip", "link", "set", TAP_NAME, "up", NULL};
    char *addr[] = {"ip", "addr", "add", "10.77.0.1/24", "dev", TAP_NAME, NULL};
    char *lo[] = {"ip", "link", "set", "lo", "up", NULL};
    for (char **const *argv = (char **const[]){up, addr, lo, NULL}; *argv != NULL; argv++) {
        run(*argv, &error);
        g_assert_no_error(error);
    }
}

/* The guest's initramfs, then our overlay: the kernel unpacks both, ours last. */
static char *make_initrd(const char *dir, const char *guest_dir)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *overlay = g_build_filename(dir, "overlay.cpio", NULL);
    g_autofree char *script = g_build_filename(TEST_SRCDIR, "virtio-linux-initramfs", NULL);
    char *argv[] = {script, "--guest-dir", (char *)guest_dir, overlay, NULL};
    g_autofree char *base_path = g_build_filename(guest_dir, "initramfs.cpio.gz", NULL);
    g_autofree char *base = NULL, *extra = NULL;
    gsize base_len, extra_len;

    if (!run(argv, &error) && g_error_matches(error, G_SPAWN_EXIT_ERROR, SKIP))
        skip(error->message);
    g_assert_no_error(error);
    g_assert_true(g_file_get_contents(base_path, &base, &base_len, &error));
    g_assert_true(g_file_get_contents(overlay, &extra, &extra_len, &error));
    g_autoptr(GByteArray) both = g_byte_array_new();
    g_byte_array_append(both, (guint8 *)base, (guint)base_len);
    /* Each archive starts on a 4-byte boundary in the initrd. */
    while (both->len % 4 != 0)
        g_byte_array_append(both, (const guint8 *)"", 1);
    g_byte_array_append(both, (guint8 *)extra, (guint)extra_len);
    char *initrd = g_build_filename(dir, "initrd", NULL);
    g_assert_true(g_file_set_contents(initrd, (char *)both->data, both->len, &error));
    return initrd;
}

static void test_linux_virtio(gconstpointer data)
{
    const char *guest_dir = data;
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("mvm-virtio-linux-XXXXXX", &error);
    g_autofree char *token = g_strdup_printf("token-%08x", g_random_int());
    g_autofree char *image = make_ext4(dir, token);
    g_autofree char *initrd = make_initrd(dir, guest_dir);
    g_autoptr(Capture) c = capture_new();

    make_tap();
    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();
    config->kernel_path = g_build_filename(guest_dir, "vmlinux", NULL);
    config->initrd_path = g_strdup(initrd);
    config->cmdline = g_strdup("console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux");
    config->memory_mib = 256;
    config->n_vcpus = 2;
    config->rng = TRUE;
    config->disks = g_ptr_array_new();
    MvmDiskConfig *disk = g_new0(MvmDiskConfig, 1);
    disk->path = g_strdup(image);
    disk->fd = -1;
    g_ptr_array_add(config->disks, disk);
    config->nics = g_ptr_array_new();
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);
    nic->tap_name = g_strdup(TAP_NAME);
    nic->tap_fd = -1;
    g_ptr_array_add(config->nics, nic);

    g_autoptr(MvmVm) vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_start(vm, &error));
    gboolean done = capture_wait_from(c, 0, "MVM-VIRTIO-DONE", TIMEOUT_US);
    mvm_vm_wait(vm, 30 * G_USEC_PER_SEC);
    mvm_vm_stop(vm, NULL);
    mvm_vm_set_console_callback(vm, NULL, NULL);
    g_autofree char *out = capture_dup_from(c, 0);
    g_test_message("guest console:\n%s", out);
    g_assert_true(done);

    g_autofree char *blk = g_strdup_printf("MVM-VIRTIO-BLK %s", token);
    g_assert_nonnull(strstr(out, blk));
    g_assert_nonnull(strstr(out, "MVM-VIRTIO-PING ok"));
    const char *rng = strstr(out, "MVM-VIRTIO-HWRNG virtio_rng");
    g_assert_nonnull(rng);
    g_assert_null(strstr(rng, "0000000000000000000000000000000000000000000000000000000000000000"));
    g_assert_null(strstr(out, "insmod"));

    /* What the guest wrote reached the image. */
    g_autofree char *cat = NULL;
    char *argv[] = {"debugfs", "-R", "cat /from-guest", image, NULL};
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                               NULL, NULL, &cat, NULL, NULL, &error));
    g_assert_nonnull(strstr(cat, "written by the guest"));
    rm_rf(dir);
}

int main(int argc, char **argv)
{
    const char *guest_dir = g_getenv("MVM_LINUX_GUEST_DIR");
    const char *unsupported = linux_full_unsupported();
    g_autofree char *vmlinux = NULL;

    if (unsupported != NULL)
        skip(unsupported);
    if (guest_dir == NULL)
        skip("MVM_LINUX_GUEST_DIR is not set");
    vmlinux = g_build_filename(guest_dir, "vmlinux", NULL);
    if (!g_file_test(vmlinux, G_FILE_TEST_EXISTS))
        skip("the Linux guest is not built (tests/linux-guest/build-linux-guest)");
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/virtio-linux/blk-net-rng", guest_dir, test_linux_virtio);
    return g_test_run();
}
