/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio devices against real KVM, driven by the test guest's virtio modes
 * (tests/guests/virtio.c): blk with host-side checks of the image, several
 * disks, read-only and failing disks, rng, vsock both ways, net through a tap
 * in a network namespace of the test's own, and hostile guests that must only
 * break their own device while another VM keeps running.
 * Skipped, with the reason, on hosts without /dev/kvm.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <unistd.h>

#include "layout.h"
#include "microvm.h"
#include "snapshot-test-util.h"
#include "virtio.h"
#include "vm-private.h"

#define GUEST_TIMEOUT_US TIMEOUT_US
#define SECTOR           512

/* ---- a VM, what it printed (snapshot-test-util's Capture) and its markers ---- */

typedef struct {
    MvmVm *vm;
    Capture *console;
    GMutex lock;
    GArray *markers; /* (marker, monotonic µs) pairs of gint64 */
} Guest;

static void on_marker(MvmVm *vm, guint32 marker, gint64 us, gpointer user_data)
{
    Guest *g = user_data;
    gint64 pair[2] = {marker, us};

    g_mutex_lock(&g->lock);
    g_array_append_vals(g->markers, pair, 2);
    g_mutex_unlock(&g->lock);
}

static MvmVmConfig *guest_config(const char *cmdline)
{
    MvmVmConfig *config = mvm_vm_config_new();

    config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
    g_assert_nonnull(config->kernel_path);
    config->cmdline = g_strdup(cmdline);
    config->memory_mib = 32;
    config->debug_exit = TRUE;
    return config;
}

/* Takes @vm; captures its console and markers. */
static Guest *guest_wrap(MvmVm *vm)
{
    Guest *g = g_new0(Guest, 1);

    g_mutex_init(&g->lock);
    g->console = capture_new();
    g->markers = g_array_new(FALSE, FALSE, sizeof(gint64));
    g->vm = vm;
    mvm_vm_set_console_callback(g->vm, on_console, g->console);
    mvm_vm_set_marker_callback(g->vm, on_marker, g);
    return g;
}

static Guest *guest_start(const MvmVmConfig *config)
{
    g_autoptr(GError) error = NULL;
    MvmVm *vm = mvm_vm_new(config, &error);

    g_assert_no_error(error);
    Guest *g = guest_wrap(vm);
    g_assert_true(mvm_vm_start(g->vm, &error));
    return g;
}

static char *guest_output(Guest *g)
{
    return capture_dup_from(g->console, 0);
}

static gboolean guest_wait_for(Guest *g, const char *needle, gint64 timeout_us)
{
    return capture_wait_from(g->console, 0, needle, timeout_us);
}

/* Waits for the guest to end and checks it ended with debug exit 0; returns its output. */
static char *guest_finish(Guest *g)
{
    gboolean ended = mvm_vm_wait(g->vm, GUEST_TIMEOUT_US);
    mvm_vm_stop(g->vm, NULL);
    char *out = guest_output(g);

    g_test_message("guest printed:\n%s", out);
    if (!ended)
        g_error("guest did not end; it printed:\n%s", out);
    g_assert_cmpint(mvm_vm_get_exit_kind(g->vm), ==, MVM_EXIT_DEBUG_EXIT);
    g_assert_null(strstr(out, "FAIL"));
    g_assert_cmpuint(mvm_vm_get_exit_code(g->vm), ==, 0);
    return out;
}

static gint64 guest_marker_time(Guest *g, guint32 marker)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&g->lock);
    for (guint i = 0; i + 1 < g->markers->len; i += 2)
        if (g_array_index(g->markers, gint64, i) == marker)
            return g_array_index(g->markers, gint64, i + 1);
    return -1;
}

static void guest_free(Guest *g)
{
    mvm_vm_free(g->vm);
    capture_free(g->console);
    g_array_unref(g->markers);
    g_mutex_clear(&g->lock);
    g_free(g);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Guest, guest_free)

/* One guest run from start to debug exit 0. */
static char *run_guest(const MvmVmConfig *config)
{
    g_autoptr(Guest) g = guest_start(config);
    return guest_finish(g);
}

/* ---- disks ---- */

static MvmDiskConfig *disk_new(const char *path, int fd, gboolean read_only)
{
    MvmDiskConfig *d = g_new0(MvmDiskConfig, 1);

    d->path = g_strdup(path);
    d->fd = fd;
    d->read_only = read_only;
    return d;
}

static void disk_free(gpointer data)
{
    MvmDiskConfig *d = data;

    g_free(d->path);
    g_free(d);
}

static void add_disk(MvmVmConfig *config, const char *path, int fd, gboolean read_only)
{
    if (config->disks == NULL)
        config->disks = g_ptr_array_new_with_free_func(disk_free);
    g_ptr_array_add(config->disks, disk_new(path, fd, read_only));
}

/* A temporary raw image of @sectors sectors of random bytes; returns its path. */
static char *make_image(guint sectors, GBytes **contents)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *data = g_malloc(sectors * SECTOR);
    char *path = NULL;

    for (gsize i = 0; i < sectors * SECTOR; i++)
        data[i] = (guint8)g_random_int();
    int fd = g_file_open_tmp("mvm-disk-XXXXXX.img", &path, &error);
    g_assert_no_error(error);
    g_assert_cmpint(write(fd, data, sectors * SECTOR), ==, (gssize)(sectors * SECTOR));
    close(fd);
    if (contents != NULL)
        *contents = g_bytes_new(data, sectors * SECTOR);
    return path;
}

static guint64 fnv1a(const guint8 *data, gsize len)
{
    guint64 h = 0xcbf29ce484222325ULL;
    for (gsize i = 0; i < len; i++) {
        h ^= data[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Mirrors tests/guests/mode_virtio_blk.c. */
static guint8 blk_pattern_byte(guint64 sector, guint32 i, guint64 seed)
{
    return (guint8)((sector * 131 + i * 7 + seed * 29) ^ (i >> 5));
}

static void assert_read_sum(const char *out, GBytes *image, guint sectors)
{
    g_autofree char *line =
        g_strdup_printf("BLK read-sum 0x%" G_GINT64_MODIFIER "x",
                        fnv1a(g_bytes_get_data(image, NULL), (gsize)sectors * SECTOR));
    g_assert_nonnull(strstr(out, line));
}

static void assert_pattern_on_disk(const char *path, guint64 at, guint sectors, guint64 seed)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *data = NULL;
    gsize len;

    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    g_assert_cmpuint(len, >=, (at + sectors) * SECTOR);
    for (guint64 s = at; s < at + sectors; s++)
        for (guint32 i = 0; i < SECTOR; i++)
            if ((guint8)data[s * SECTOR + i] != blk_pattern_byte(s, i, seed))
                g_error("disk byte %" G_GUINT64_FORMAT ":%u is 0x%02x, expected 0x%02x", s, i,
                        (guint8)data[s * SECTOR + i], blk_pattern_byte(s, i, seed));
}

static void test_blk_write_read(void)
{
    g_autoptr(GBytes) image = NULL;

    if (!have_kvm())
        return;
    g_autofree char *path = make_image(2048, &image);
    guint64 seed = g_random_int_range(1, 1000);
    g_autofree char *cmdline =
        g_strdup_printf("mode=blk sectors=8 writeat=16 seed=%" G_GUINT64_FORMAT, seed);
    g_autoptr(MvmVmConfig) config = guest_config(cmdline);
    add_disk(config, path, -1, FALSE);
    config->rng = TRUE;

    g_autoptr(Guest) g = guest_start(config);
    /* Both announcements: the command line for VIRTIO_MMIO_CMDLINE_DEVICES kernels. */
    g_assert_nonnull(strstr(g->vm->boot.cmdline, "virtio_mmio.device=4K@0xd0000000:5"));
    g_assert_nonnull(strstr(g->vm->boot.cmdline, "virtio_mmio.device=4K@0xd0001000:6"));
    /* And the DSDT, for distro kernels: one LNRO0005 device per virtio device. */
    const guint8 *acpi = mvm_memory_get_ptr(g->vm->memory, MVM_ACPI_TABLES_ADDR,
                                            MVM_ACPI_TABLES_END - MVM_ACPI_TABLES_ADDR);
    guint lnro = 0;
    for (const guint8 *p = acpi; p != NULL;) {
        gsize left = MVM_ACPI_TABLES_END - MVM_ACPI_TABLES_ADDR - (gsize)(p - acpi);
        p = memmem(p, left, "LNRO0005", 8);
        if (p != NULL) {
            lnro++;
            p += 8;
        }
    }
    g_assert_cmpuint(lnro, ==, 2);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "BLK capacity 2048 "));
    g_assert_nonnull(strstr(out, "PASS blk-write-read"));
    g_assert_nonnull(strstr(out, "PASS blk-out-of-range"));
    g_assert_nonnull(strstr(out, "BLK id mvm"));
    assert_read_sum(out, image, 8);
    assert_pattern_on_disk(path, 16, 8, seed);
    /* Nothing but sectors 16..23 changed. */
    g_autofree char *after = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &after, &len, NULL));
    g_assert_cmpmem(after, 16 * SECTOR, g_bytes_get_data(image, NULL), 16 * SECTOR);
    g_assert_cmpmem(after + 24 * SECTOR, len - 24 * SECTOR,
                    (const guint8 *)g_bytes_get_data(image, NULL) + 24 * SECTOR, len - 24 * SECTOR);
    g_unlink(path);
}

/* Two disks: the second, read-only one, is the guest's disk=1; it must stay untouched. */
static void test_blk_two_disks_read_only(void)
{
    g_autoptr(GBytes) image0 = NULL, image1 = NULL;

    if (!have_kvm())
        return;
    g_autofree char *path0 = make_image(64, &image0);
    g_autofree char *path1 = make_image(128, &image1);
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk disk=1 ro=1 sectors=4");
    add_disk(config, path0, -1, FALSE);
    add_disk(config, path1, -1, TRUE);
    g_autofree char *out = run_guest(config);
    g_assert_nonnull(strstr(out, "BLK capacity 128 "));
    g_assert_nonnull(strstr(out, "PASS blk-ro-write"));
    assert_read_sum(out, image1, 4);

    g_autofree char *after = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path1, &after, &len, NULL));
    g_assert_cmpmem(after, len, g_bytes_get_data(image1, NULL), g_bytes_get_size(image1));
    g_unlink(path0);
    g_unlink(path1);
}

/* A disk the host cannot write (an O_RDONLY fd, not flagged read-only): writes are IOERR. */
static void test_blk_host_io_error(void)
{
    if (!have_kvm())
        return;
    g_autofree char *path = make_image(64, NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk ioerr=1");
    add_disk(config, NULL, fd, FALSE);
    g_autofree char *out = run_guest(config);
    g_assert_nonnull(strstr(out, "PASS blk-ioerr"));
    close(fd);
    g_unlink(path);
}

/* Queue indices and negotiated features survive a snapshot: the restored guest goes on using
 * the queue it set up before, and its next request completes where it expects it. */
static void test_blk_snapshot_restore(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) image = NULL;

    if (!have_kvm())
        return;
    g_autofree char *path = make_image(256, &image);
    g_autofree char *dir = make_tmpdir();
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk pause=1 seed=7 writeat=32");
    add_disk(config, path, -1, FALSE);
    g_autoptr(Guest) g = guest_start(config);
    g_assert_true(guest_wait_for(g, "BLK paused", GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(g->vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_autofree char *before = guest_output(g);
    g_clear_pointer(&g, guest_free);

    MvmVm *vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    g_autoptr(Guest) restored = guest_wrap(vm);
    g_assert_true(mvm_vm_resume(vm, &error));
    mvm_vm_console_write(vm, (const guint8 *)"x", 1);
    g_autofree char *after = guest_finish(restored);
    g_assert_nonnull(strstr(before, "PASS blk-read"));
    g_assert_nonnull(strstr(after, "PASS blk-write-read"));
    assert_pattern_on_disk(path, 32, 8, 7);

    rm_rf(dir);
    g_unlink(path);
}

static void test_blk_bad_size(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    if (!have_kvm())
        return;
    int fd = g_file_open_tmp("mvm-odd-XXXXXX.img", &path, &error);
    g_assert_cmpint(write(fd, "odd", 3), ==, 3);
    close(fd);
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk");
    add_disk(config, path, -1, FALSE);
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "multiple of 512"));
    g_clear_error(&error);

    g_ptr_array_set_size(config->disks, 0);
    add_disk(config, "/nonexistent/disk.img", -1, FALSE);
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_unlink(path);
}

static void test_config_validation(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) config = guest_config("mode=boot");

    g_free(config->kernel_path);
    config->kernel_path = g_strdup("/boot/vmlinux");
    add_disk(config, NULL, -1, FALSE);
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_ptr_array_set_size(config->disks, 0);

    /* NICs: a tap name or fd, a name that fits IFNAMSIZ, a unicast MAC. */
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);
    nic->tap_fd = -1;
    config->nics = g_ptr_array_new();
    g_ptr_array_add(config->nics, nic);
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_nonnull(strstr(error->message, "neither a tap name nor an fd"));
    g_clear_error(&error);
    nic->tap_name = g_strdup("a-very-long-tap-name");
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_clear_error(&error);
    g_free(nic->tap_name);
    nic->tap_name = g_strdup("tap0");
    nic->mac[0] = 0x01;
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_nonnull(strstr(error->message, "multicast"));
    g_clear_error(&error);
    nic->mac[0] = 0x02;
    g_assert_true(mvm_vm_config_validate(config, &error));

    config->vsock_cid = 2;
    config->vsock_uds_path = g_strdup("/tmp/v.sock");
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_nonnull(strstr(error->message, "cid"));
    g_clear_error(&error);
    config->vsock_cid = 3;
    g_assert_true(mvm_vm_config_validate(config, &error));
    g_free(config->vsock_uds_path);
    config->vsock_uds_path = g_strnfill(100, 'x');
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_clear_error(&error);
    config->vsock_cid = 0;

    for (guint i = 0; i < MVM_VIRTIO_MAX_IRQ_DEVICES + 1; i++)
        add_disk(config, "/tmp/d.img", -1, FALSE);
    g_assert_false(mvm_vm_config_validate(config, &error));
    g_assert_nonnull(strstr(error->message, "virtio devices"));
    g_clear_error(&error);

    /* A copy is deep, and frees on its own. */
    g_autoptr(MvmVmConfig) copy = mvm_vm_config_copy(config);
    g_assert_true(copy->disks != config->disks);
    g_assert_cmpuint(copy->disks->len, ==, config->disks->len);
    g_assert_cmpstr(((MvmDiskConfig *)g_ptr_array_index(copy->disks, 0))->path, ==, "/tmp/d.img");
}

/* The transport's registers, from the guest's side (tests/guests/mode_virtio_transport.c). */
static void test_transport(void)
{
    if (!have_kvm())
        return;
    g_autofree char *path = make_image(96, NULL);
    g_autoptr(MvmVmConfig) config = guest_config("mode=vtransport sectors=96");
    add_disk(config, path, -1, FALSE);
    g_autofree char *out = run_guest(config);
    g_assert_nonnull(strstr(out, "PASS vt-legacy-refused"));
    g_assert_nonnull(strstr(out, "PASS vt-working-after-reset"));
    g_unlink(path);
}

/* ---- rng ---- */

static void test_rng(void)
{
    if (!have_kvm())
        return;
    g_autoptr(MvmVmConfig) config = guest_config("mode=rng bytes=256");
    config->rng = TRUE;
    g_autofree char *out = run_guest(config);
    g_assert_nonnull(strstr(out, "PASS rng"));
}

/* ---- vsock ---- */

static int unix_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    g_assert_cmpint(listen(fd, 4), ==, 0);
    return fd;
}

static int unix_connect(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

/* Reads until @len bytes, EOF or 60 s; returns what came, NUL-terminated. */
static char *read_some(int fd, gsize len)
{
    char *buf = g_malloc0(len + 1);
    gsize got = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    while (got < len && poll(&pfd, 1, 60000) == 1) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            break;
        got += (gsize)r;
    }
    return buf;
}

static char *read_line(int fd)
{
    GString *s = g_string_new(NULL);
    char c;

    while (s->len < 64) {
        g_autofree char *one = read_some(fd, 1);
        c = one[0];
        if (c == '\0' || c == '\n')
            break;
        g_string_append_c(s, c);
    }
    return g_string_free(s, FALSE);
}

static gboolean wait_eof(int fd)
{
    g_autofree char *rest = read_some(fd, 4096);
    return rest[0] == '\0';
}

/* The guest's connection to host port 1234 arrives on <uds>_1234. */
static void vsock_serve_guest(int listen_fd)
{
    struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};

    g_assert_cmpint(poll(&pfd, 1, 60000), ==, 1);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autofree char *ping = read_some(fd, strlen("ping from guest"));
    g_assert_cmpstr(ping, ==, "ping from guest");
    g_assert_cmpint(write(fd, "pong from host", 14), ==, 14);
    /* The guest shuts down: the device closes our end. */
    g_assert_true(wait_eof(fd));
    close(fd);
}

/* A host program connects to <uds> and asks for the guest's port 5000. */
static void vsock_connect_guest(Guest *g, const char *uds)
{
    /* A bad handshake is refused without reaching the guest. */
    int bad = unix_connect(uds);
    g_assert_cmpint(write(bad, "HELLO 5000\n", 11), ==, 11);
    g_assert_true(wait_eof(bad));
    close(bad);

    int fd = unix_connect(uds);
    g_assert_cmpint(write(fd, "CONNECT 5000\n", 13), ==, 13);
    g_autofree char *ok = read_line(fd);
    g_assert_true(g_str_has_prefix(ok, "OK "));
    g_assert_cmpint(write(fd, "hello from host", 15), ==, 15);
    /* A half close: the guest learns we send no more (SHUTDOWN), its answer still comes back. */
    g_assert_cmpint(shutdown(fd, SHUT_WR), ==, 0);
    g_autofree char *echo = read_some(fd, strlen("echo: hello from host"));
    if (strcmp(echo, "echo: hello from host") != 0)
        g_test_message("guest so far:\n%s", guest_output(g));
    g_assert_cmpstr(echo, ==, "echo: hello from host");
    /* The guest answers our SHUTDOWN with an RST: the device closes its end. */
    g_assert_true(wait_eof(fd));
    close(fd);
}

static void test_vsock(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = g_dir_make_tmp("mvm-vsock-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *uds = g_build_filename(dir, "v.sock", NULL);
    g_autofree char *guest_port = g_strdup_printf("%s_1234", uds);
    int listen_fd = unix_listen(guest_port);

    g_autoptr(MvmVmConfig) config = guest_config("mode=vsock hostport=1234 port=5000");
    config->vsock_cid = 42;
    config->vsock_uds_path = g_strdup(uds);
    g_autoptr(Guest) g = guest_start(config);
    /* A second VM cannot take over the socket of a running one. */
    config->vsock_cid = 43;
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "in use"));
    g_clear_error(&error);
    vsock_serve_guest(listen_fd);
    g_assert_true(guest_wait_for(g, "VSOCK listening 5000", GUEST_TIMEOUT_US));
    vsock_connect_guest(g, uds);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "VSOCK cid 42"));
    g_assert_nonnull(strstr(out, "PASS vsock-connect"));
    g_assert_nonnull(strstr(out, "PASS vsock-listen"));
    close(listen_fd);
    g_clear_pointer(&g, guest_free);
    /* The VM removed its socket. */
    g_assert_false(g_file_test(uds, G_FILE_TEST_EXISTS));
    g_unlink(guest_port);
    g_rmdir(dir);
}

/* Connections do not survive a snapshot: a restored vsock device says so (TRANSPORT_RESET). */
static void test_vsock_snapshot_restore(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *uds = g_build_filename(dir, "v.sock", NULL);
    g_autofree char *snap = g_build_filename(dir, "snapshot", NULL);
    g_assert_cmpint(g_mkdir(snap, 0700), ==, 0);
    g_autoptr(MvmVmConfig) config = guest_config("mode=vsock pause=1");
    config->vsock_cid = 7;
    config->vsock_uds_path = g_strdup(uds);
    g_autoptr(Guest) g = guest_start(config);
    g_assert_true(guest_wait_for(g, "VSOCK paused", GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(g->vm, snap, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_clear_pointer(&g, guest_free);

    MvmVm *vm = mvm_vm_restore(snap, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    g_autoptr(Guest) restored = guest_wrap(vm);
    g_assert_true(mvm_vm_resume(vm, &error));
    mvm_vm_console_write(vm, (const guint8 *)"x", 1);
    g_autofree char *out = guest_finish(restored);
    g_assert_nonnull(strstr(out, "PASS vsock-transport-reset"));
    g_clear_pointer(&restored, guest_free);
    rm_rf(dir);
}

/* ---- net: a tap in a network namespace of the test's own ---- */

#define TEST_TAP  "mvmtest0"
#define ETHERTYPE 0x88b5

/* Whether this process may make a network namespace (root, or CAP_SYS_ADMIN). */
static gboolean can_unshare_net(void)
{
    pid_t pid = fork();

    if (pid == 0)
        _exit(unshare(CLONE_NEWNET) == 0 && access("/dev/net/tun", R_OK | W_OK) == 0 ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/*
 * A tap named @name, up, with its index in *ifindex. Persistent (the VM opens it by name) when
 * @keep_fd is FALSE; else the open tap fd is returned for the VM to take.
 */
static int make_tap(const char *name, gboolean keep_fd, int *ifindex)
{
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(fd, TUNSETIFF, &ifr), ==, 0);
    if (!keep_fd) {
        g_assert_cmpint(ioctl(fd, TUNSETPERSIST, 1), ==, 0);
        close(fd);
        fd = -1;
    }
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&ifr, 0, sizeof(ifr));
    g_strlcpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(sock, SIOCGIFFLAGS, &ifr), ==, 0);
    ifr.ifr_flags |= IFF_UP;
    g_assert_cmpint(ioctl(sock, SIOCSIFFLAGS, &ifr), ==, 0);
    g_assert_cmpint(ioctl(sock, SIOCGIFINDEX, &ifr), ==, 0);
    close(sock);
    *ifindex = ifr.ifr_ifindex;
    return fd;
}

/* The host's end of the wire: a packet socket on the tap interface. */
static int packet_socket(int ifindex)
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETHERTYPE));
    struct sockaddr_ll addr = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE), .sll_ifindex = ifindex};

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

static const guint8 test_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/* Takes the guest's hello, checks it, answers to the MAC it came from (returned in @mac). */
static void net_exchange(int pkt, int ifindex, guint8 mac[6])
{
    guint8 frame[1600];
    struct pollfd pfd = {.fd = pkt, .events = POLLIN};

    g_assert_cmpint(poll(&pfd, 1, 60000), ==, 1);
    ssize_t n = recv(pkt, frame, sizeof(frame), 0);
    g_assert_cmpint(n, >=, 14 + 20);
    g_assert_cmpmem(frame + 14, 20, "hello from guest net", 20);
    memcpy(mac, frame + 6, 6);

    guint8 reply[60] = {0};
    memcpy(reply, mac, 6);
    memcpy(reply + 6, "\x02\x00\x00\x00\x00\x01", 6);
    reply[12] = ETHERTYPE >> 8;
    reply[13] = ETHERTYPE & 0xff;
    memcpy(reply + 14, "hello from host net", 19);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, mac, 6);
    g_assert_cmpint(sendto(pkt, reply, sizeof(reply), 0, (struct sockaddr *)&to, sizeof(to)), ==,
                    sizeof(reply));
}

static void send_burst(int pkt, int ifindex, const guint8 mac[6], guint n)
{
    guint8 frame[60] = {0};
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};

    memcpy(frame, mac, 6);
    memcpy(frame + 6, "\x02\x00\x00\x00\x00\x01", 6);
    frame[12] = ETHERTYPE >> 8;
    frame[13] = ETHERTYPE & 0xff;
    memcpy(frame + 14, "burst from host", 15);
    memcpy(to.sll_addr, mac, 6);
    for (guint i = 0; i < n; i++)
        g_assert_cmpint(sendto(pkt, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)),
                        ==, sizeof(frame));
}

static guint count_frames(int pkt, guint expected)
{
    guint8 frame[1600];
    guint n = 0;
    struct pollfd pfd = {.fd = pkt, .events = POLLIN};

    while (n < expected && poll(&pfd, 1, 5000) == 1 && recv(pkt, frame, sizeof(frame), 0) > 0)
        n++;
    return n;
}

static MvmVmConfig *net_config(const char *cmdline, const char *tap, int fd, const guint8 *mac)
{
    MvmVmConfig *config = guest_config(cmdline);
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);

    nic->tap_name = g_strdup(tap);
    nic->tap_fd = fd;
    if (mac != NULL)
        memcpy(nic->mac, mac, 6);
    config->nics = g_ptr_array_new();
    g_ptr_array_add(config->nics, nic);
    return config;
}

/* A tap by name with a MAC from the config: frames both ways, a burst, then the tap vanishes. */
static void net_by_name(void)
{
    int ifindex;
    guint8 mac[6];
    guint burst = 200;

    make_tap(TEST_TAP, FALSE, &ifindex);
    int pkt = packet_socket(ifindex);
    g_autofree char *cmdline = g_strdup_printf("mode=net burst=%u rxburst=%u gone=1", burst, burst);
    g_autoptr(MvmVmConfig) config = net_config(cmdline, TEST_TAP, -1, test_mac);
    g_autoptr(Guest) g = guest_start(config);
    net_exchange(pkt, ifindex, mac);
    g_assert_cmpmem(mac, 6, test_mac, 6);
    g_assert_true(guest_wait_for(g, "PASS net-rx", GUEST_TIMEOUT_US));
    guint got = count_frames(pkt, burst);
    /* Host to guest: a burst the tap queues while the guest takes one frame per buffer. */
    g_assert_true(guest_wait_for(g, "NET rx-ready", GUEST_TIMEOUT_US));
    send_burst(pkt, ifindex, mac, burst);
    g_assert_true(guest_wait_for(g, "NET rx-burst", GUEST_TIMEOUT_US));
    gint64 r0 = guest_marker_time(g, 0x112), r1 = guest_marker_time(g, 0x113);
    g_assert_cmpint(r1, >, r0);
    g_printerr("# BENCH virtio-net rx: %u frames, %.0f frames/s (first to last, as the guest "
               "took them)\n",
               burst, (burst - 1) / ((r1 - r0) / 1e6));

    g_assert_true(guest_wait_for(g, "NET waiting", GUEST_TIMEOUT_US));
    gint64 t0 = guest_marker_time(g, 0x110), t1 = guest_marker_time(g, 0x111);
    g_assert_cmpint(t1, >, t0);
    /* stderr: the parent shows it; the child's stdout is its own TAP stream. */
    g_printerr("# BENCH virtio-net tx: %u of %u frames reached the tap; %.0f frames/s (guest "
               "sends one at a time and waits for each)\n",
               got, burst, burst / ((t1 - t0) / 1e6));
    g_assert_cmpuint(got, ==, burst);

    /* The tap goes away under the running VM: its device must shrug that off. */
    g_assert_cmpint(system("ip link delete " TEST_TAP), ==, 0);
    mvm_vm_console_write(g->vm, (const guint8 *)"x", 1);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "NET mac 52:54:00:12:34:56"));
    g_assert_nonnull(strstr(out, "PASS net-tap-gone"));
    g_assert_nonnull(strstr(out, "PASS net-link-down"));
    close(pkt);
}

/* A tap handed over as an fd, and no MAC in the config: a generated, local unicast one. */
static void net_by_fd(void)
{
    int ifindex;
    guint8 mac[6];
    int fd = make_tap("mvmtest1", TRUE, &ifindex);
    int pkt = packet_socket(ifindex);
    g_autoptr(MvmVmConfig) config = net_config("mode=net", NULL, fd, NULL);
    g_autoptr(Guest) g = guest_start(config);

    close(fd); /* the VM has its own copy */
    net_exchange(pkt, ifindex, mac);
    g_autofree char *out = guest_finish(g);
    g_assert_cmpuint(mac[0] & 3, ==, 2); /* locally administered, unicast */
    g_autofree char *line = g_strdup_printf("NET mac %02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                                            mac[2], mac[3], mac[4], mac[5]);
    g_assert_nonnull(strstr(out, line));
    close(pkt);
}

/* Runs in a child (g_test_trap_subprocess) that owns a fresh network namespace. */
static void net_in_namespace(void)
{
    g_assert_cmpint(unshare(CLONE_NEWNET), ==, 0);
    net_by_name();
    net_by_fd();
}

static void test_net(void)
{
    if (!have_kvm())
        return;
    if (g_test_subprocess()) {
        net_in_namespace();
        return;
    }
    if (!can_unshare_net()) {
        g_test_skip("cannot create a network namespace with a tap here (needs root and "
                    "/dev/net/tun)");
        return;
    }
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
}

/* Interrupts reach the guest through irqfd, the IOAPIC and its LAPIC (not just InterruptStatus).
 * @data: disks before the rng, so that its GSI is on the 8259s too (5) or above them (16). */
static void test_interrupts(gconstpointer data)
{
    guint n_disks = GPOINTER_TO_UINT(data);

    if (!have_kvm())
        return;
    g_autofree char *path = make_image(8, NULL);
    g_autoptr(MvmVmConfig) config = guest_config("mode=virtioirq rounds=8");
    for (guint i = 0; i < n_disks; i++)
        add_disk(config, path, -1, TRUE);
    config->rng = TRUE;
    g_autofree char *out = run_guest(config);
    g_autofree char *line = g_strdup_printf("IRQ gsi %u ", MVM_VIRTIO_IRQ_BASE + n_disks);
    g_assert_nonnull(strstr(out, line));
    g_assert_nonnull(strstr(out, "PASS virtioirq-count"));
    g_unlink(path);
}

/* ---- hostile guests ---- */

static guint count_lines(Guest *g, const char *prefix)
{
    g_autofree char *out = guest_output(g);
    guint n = 0;
    for (const char *p = out; (p = strstr(p, prefix)) != NULL; p++)
        n++;
    return n;
}

static void test_hostile(gconstpointer data)
{
    const char *attack = data;

    if (!have_kvm())
        return;
    /* A bystander VM with a disk of its own keeps counting through the attack. */
    g_autofree char *path0 = make_image(64, NULL);
    g_autofree char *path1 = make_image(64, NULL);
    g_autoptr(MvmVmConfig) bystander_config = guest_config("mode=pattern pages=4 every=1");
    add_disk(bystander_config, path0, -1, FALSE);
    g_autoptr(Guest) bystander = guest_start(bystander_config);
    g_assert_true(guest_wait_for(bystander, "COUNTER 1", GUEST_TIMEOUT_US));

    g_autofree char *cmdline = g_strdup_printf("mode=hostile attack=%s", attack);
    g_autoptr(MvmVmConfig) config = guest_config(cmdline);
    add_disk(config, path1, -1, FALSE);
    g_autofree char *out = run_guest(config);
    g_assert_nonnull(strstr(out, "PASS hostile-needs-reset"));
    g_assert_nonnull(strstr(out, "PASS hostile-recovered"));

    guint before = count_lines(bystander, "COUNTER ");
    g_autofree char *next = g_strdup_printf("COUNTER %u", before + 2);
    g_assert_true(guest_wait_for(bystander, next, GUEST_TIMEOUT_US));
    g_assert_cmpint(mvm_vm_get_state(bystander->vm), ==, MVM_VM_STATE_RUNNING);
    g_unlink(path0);
    g_unlink(path1);
}

/* ---- benchmark (prints; asserts nothing about time) ---- */

/* What the guest measured with its TSC (mode=blkbench lines), in MB/s and µs per notify. */
typedef struct {
    double read_mbs, write_mbs, notify_us, trapped_us;
} BlkFigures;

static gboolean parse_blkbench(const char *out, guint32 tsc_khz, BlkFigures *f)
{
    guint64 rb, rt, wb, wt, n, nt, tt;
    const char *r = strstr(out, "BLKBENCH read bytes "), *w = strstr(out, "BLKBENCH write bytes ");
    const char *k = strstr(out, "BLKBENCH notifies ");
    double hz = tsc_khz * 1e3;

    if (r == NULL || w == NULL || k == NULL ||
        sscanf(r, "BLKBENCH read bytes %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT, &rb, &rt) !=
            2 ||
        sscanf(w, "BLKBENCH write bytes %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT, &wb, &wt) !=
            2 ||
        sscanf(k,
               "BLKBENCH notifies %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT
               " trapped-writes tsc %" G_GUINT64_FORMAT,
               &n, &nt, &tt) != 3 ||
        n == 0)
        return FALSE;
    f->read_mbs = rb / 1e6 / (rt / hz);
    f->write_mbs = wb / 1e6 / (wt / hz);
    f->notify_us = nt / hz * 1e6 / n;
    f->trapped_us = tt / hz * 1e6 / n;
    return TRUE;
}

/*
 * The same guest and workload under QEMU's microvm machine with KVM, for comparison (QEMU puts
 * its virtio-mmio slots at 0xfeb00000, 512 bytes apart, and needs the guest's PVH entry).
 * FALSE, with nothing said, where QEMU or its KVM accelerator is not there.
 */
static gboolean qemu_blkbench(const char *image, const char *cmdline, char **out)
{
    const char *pvh = g_getenv("MVM_TESTGUEST_PVH");
    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");
    g_autofree char *drive = g_strdup_printf("id=d,file=%s,format=raw,if=none", image);
    g_autofree char *append = g_strdup_printf("%s vbase=0xfeb00000 vstride=0x200", cmdline);
    gint status = 0;

    if (qemu == NULL || pvh == NULL || !g_file_test(pvh, G_FILE_TEST_EXISTS))
        return FALSE;
    const char *argv[] = {"timeout",
                          "60",
                          qemu,
                          "-M",
                          "microvm,x-option-roms=off,rtc=off",
                          "-accel",
                          "kvm",
                          "-cpu",
                          "host,-arch-capabilities",
                          "-m",
                          "64",
                          "-nodefaults",
                          "-no-user-config",
                          "-display",
                          "none",
                          "-no-reboot",
                          "-serial",
                          "stdio",
                          "-device",
                          "isa-debug-exit,iobase=0xf4,iosize=4",
                          "-global",
                          "virtio-mmio.force-legacy=false",
                          "-drive",
                          drive,
                          "-device",
                          "virtio-blk-device,drive=d",
                          "-kernel",
                          pvh,
                          "-append",
                          append,
                          NULL};
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, out, NULL, &status, NULL))
        return FALSE;
    return strstr(*out, "PASS blkbench") != NULL;
}

static void test_blk_bench(void)
{
    BlkFigures ours, theirs;

    if (!have_kvm())
        return;
    guint count = 32, kib = 64;
    g_autofree char *path = make_image(count * kib * 2, NULL);
    g_autofree char *cmdline = g_strdup_printf("mode=blkbench count=%u kib=%u", count, kib);
    g_autoptr(MvmVmConfig) config = guest_config(cmdline);
    add_disk(config, path, -1, FALSE);
    g_autoptr(Guest) g = guest_start(config);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "PASS blkbench"));
    for (guint i = 0; i < 2; i++) {
        gint64 t0 = guest_marker_time(g, 0x100 + 2 * i), t1 = guest_marker_time(g, 0x101 + 2 * i);
        g_assert_cmpint(t0, >, 0);
        g_assert_cmpint(t1, >=, t0);
        double mb = (double)count * kib * 1024 / 1e6;
        g_test_message("BENCH virtio-blk %s: %u x %u KiB in %.1f ms = %.1f MB/s (host clock), "
                       "%.1f us per request",
                       i == 0 ? "read" : "write", count, kib, (t1 - t0) / 1000.0,
                       mb / ((t1 - t0) / 1e6), (double)(t1 - t0) / count);
    }
    /* The guest's own view, by its TSC at the rate KVM gives it (QEMU's guest gets the same). */
    guint32 khz = mvm_vcpu_get_tsc_khz(g->vm->vcpus[0].vcpu, NULL);
    g_assert_cmpuint(khz, >, 0);
    g_assert_true(parse_blkbench(out, khz, &ours));
    g_test_message("BENCH microvmd guest-reported: blk read %.1f MB/s, write %.1f MB/s, queue "
                   "notify %.2f us (ioeventfd), register write that exits %.2f us",
                   ours.read_mbs, ours.write_mbs, ours.notify_us, ours.trapped_us);

    g_autofree char *qemu_out = NULL;
    if (!qemu_blkbench(path, cmdline, &qemu_out) || !parse_blkbench(qemu_out, khz, &theirs)) {
        g_test_message("BENCH QEMU microvm: not run (no qemu-system-x86_64 with KVM here)");
    } else {
        g_test_message("BENCH QEMU microvm guest-reported: blk read %.1f MB/s, write %.1f MB/s, "
                       "queue notify %.2f us, register write %.2f us",
                       theirs.read_mbs, theirs.write_mbs, theirs.notify_us, theirs.trapped_us);
        g_test_message("BENCH microvmd / QEMU: read %.2f, write %.2f, notify cost %.2f",
                       ours.read_mbs / theirs.read_mbs, ours.write_mbs / theirs.write_mbs,
                       ours.notify_us / theirs.notify_us);
    }
    g_unlink(path);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/virtio/config-validation", test_config_validation);
    g_test_add_func("/virtio/transport", test_transport);
    g_test_add_func("/virtio/blk/write-read", test_blk_write_read);
    g_test_add_func("/virtio/blk/two-disks-read-only", test_blk_two_disks_read_only);
    g_test_add_func("/virtio/blk/host-io-error", test_blk_host_io_error);
    g_test_add_func("/virtio/blk/bad-size", test_blk_bad_size);
    g_test_add_func("/virtio/blk/snapshot-restore", test_blk_snapshot_restore);
    g_test_add_func("/virtio/blk/bench", test_blk_bench);
    g_test_add_func("/virtio/rng", test_rng);
    g_test_add_data_func("/virtio/interrupts/gsi5", GUINT_TO_POINTER(0), test_interrupts);
    g_test_add_data_func("/virtio/interrupts/gsi16", GUINT_TO_POINTER(11), test_interrupts);
    g_test_add_func("/virtio/vsock", test_vsock);
    g_test_add_func("/virtio/vsock-snapshot-restore", test_vsock_snapshot_restore);
    g_test_add_func("/virtio/net", test_net);
    static const char *const attacks[] = {"loop",  "oob",   "huge", "badnext",
                                          "avail", "order", "ring"};
    for (guint i = 0; i < G_N_ELEMENTS(attacks); i++) {
        g_autofree char *name = g_strdup_printf("/virtio/hostile/%s", attacks[i]);
        g_test_add_data_func(name, attacks[i], test_hostile);
    }
    return g_test_run();
}
