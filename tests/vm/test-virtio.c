/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio devices against real KVM, driven by the test guest's virtio modes
 * (tests/testguest/virtio.c): the transport's registers, blk with host-side checks
 * of the image, several disks, read-only and failing disks, snapshots, rng,
 * interrupts through the IOAPIC, and hostile guests that must only break their
 * own device while another VM keeps running; a benchmark beside QEMU microvm.
 * vsock and net are in test-virtio-net.c. Skipped without /dev/kvm.
 */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "layout.h"
#include "microvm.h"
#include "virtio-test-util.h"
#include "virtio.h"
#include "vm-private.h"
#include "vm-virtio.h"

static guint64 fnv1a(const guint8 *data, gsize len)
{
    guint64 h = 0xcbf29ce484222325ULL;
    for (gsize i = 0; i < len; i++) {
        h ^= data[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Mirrors tests/testguest/mode_virtio_blk.c. */
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

/* Queue 0 of a VM's first virtio device: its rings' indices in guest RAM and the device's own. */
typedef struct {
    guint16 avail_idx, used_idx;      /* as the guest's rings say */
    guint16 last_avail, dev_used_idx; /* as the device saw them */
} QueueIndices;

static QueueIndices queue0_indices(MvmVm *vm)
{
    g_autoptr(GVariant) state = mvm_virtio_save(g_ptr_array_index(vm->virtio, 0));
    g_autoptr(GVariant) queues = g_variant_get_child_value(state, 7);
    guint64 desc, avail, used;
    guint16 size;
    gboolean ready;
    QueueIndices q;

    g_variant_get_child(queues, 0, "(qtttbqq)", &size, &desc, &avail, &used, &ready, &q.last_avail,
                        &q.dev_used_idx);
    g_assert_true(ready);
    /* The guest writes these while we read: volatile, one 16-bit load each. */
    const volatile guint16 *avail_idx = mvm_memory_get_ptr(vm->memory, avail + 2, 2);
    const volatile guint16 *used_idx = mvm_memory_get_ptr(vm->memory, used + 2, 2);
    g_assert_nonnull(avail_idx);
    g_assert_nonnull(used_idx);
    q.avail_idx = GUINT16_FROM_LE(*avail_idx);
    q.used_idx = GUINT16_FROM_LE(*used_idx);
    return q;
}

static gboolean wait_for_queued_request(MvmVm *vm, gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;

    for (;;) {
        QueueIndices q = queue0_indices(vm);
        if (q.avail_idx != q.last_avail)
            return TRUE;
        if (g_get_monotonic_time() > deadline)
            return FALSE;
        g_usleep(1000);
    }
}

static void assert_file_is(const char *path, GBytes *contents)
{
    g_autofree char *data = NULL;
    gsize len;

    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpmem(data, len, g_bytes_get_data(contents, NULL), g_bytes_get_size(contents));
}

static MvmVm *restore_onto(const char *dir, const char *disk)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) backends = mvm_vm_config_new();
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpint(dirfd, >=, 0);
    add_disk(backends, disk, -1, FALSE);
    MvmVm *vm = mvm_vm_restore_with_backends(dirfd, backends, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    close(dirfd);
    return vm;
}

/*
 * A restored VM is paused like any other: a request the guest queued before the snapshot waits
 * for the resume. The original's back ends are parked while its vCPU runs on, so the guest's
 * next write sits in the ring, unserved, when the snapshot is taken. Neither the paused
 * original nor a restored VM freed unresumed serves it on its way out. Restored onto a copy of
 * the disk: before the resume the copy and the used ring are untouched and the I/O thread is
 * parked; after it, the write lands and the guest finishes its checks.
 */
static void test_blk_restore_parked(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) image = NULL;

    if (!have_kvm())
        return;
    g_autofree char *path = make_image(256, &image);
    g_autofree char *copy = make_image(256, NULL);
    g_autofree char *dir = make_tmpdir();
    g_assert_true(g_file_set_contents(copy, g_bytes_get_data(image, NULL),
                                      (gssize)g_bytes_get_size(image), NULL));
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk pause=1 seed=9 writeat=48");
    add_disk(config, path, -1, FALSE);
    g_autoptr(Guest) g = guest_start(config);
    g_assert_true(guest_wait_for(g, "BLK paused", GUEST_TIMEOUT_US));
    mvm_vm_quiesce_virtio(g->vm, TRUE);
    mvm_vm_console_write(g->vm, (const guint8 *)"x", 1);
    g_assert_true(wait_for_queued_request(g->vm, GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(g->vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    QueueIndices saved = queue0_indices(g->vm);
    g_assert_cmpuint(saved.avail_idx, !=, saved.last_avail); /* the write, not yet taken */
    g_assert_cmpuint(saved.used_idx, ==, saved.dev_used_idx);
    /* A paused VM that goes away serves nothing on its way out either. */
    g_clear_pointer(&g, guest_free);
    assert_file_is(path, image);

    /* Restored and freed without a resume: the disk stays as it was. */
    MvmVm *vm = restore_onto(dir, path);
    mvm_vm_free(vm);
    assert_file_is(path, image);

    vm = restore_onto(dir, copy);
    g_autoptr(Guest) restored = guest_wrap(vm);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);
    /* Parked returns only once the thread sits in its park: nothing can be in flight. */
    g_assert_true(mvm_io_thread_is_parked(vm->io_thread));
    QueueIndices now = queue0_indices(vm);
    g_assert_cmpuint(now.avail_idx, ==, saved.avail_idx);
    g_assert_cmpuint(now.used_idx, ==, saved.used_idx);
    g_assert_cmpuint(now.last_avail, ==, saved.last_avail);
    assert_file_is(copy, image);

    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_no_error(error);
    g_autofree char *out = guest_finish(restored);
    g_assert_nonnull(strstr(out, "PASS blk-write-read"));
    assert_pattern_on_disk(copy, 48, 8, 9);
    QueueIndices after = queue0_indices(vm);
    g_assert_cmpuint(after.used_idx, !=, saved.used_idx);

    rm_rf(dir);
    g_unlink(path);
    g_unlink(copy);
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

/* The transport's registers, from the guest's side (tests/testguest/mode_virtio_transport.c). */
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

/* mode=blkbench of @count requests of @kib KiB on a fresh disk image twice that size (@path). */
static MvmVmConfig *blkbench_config(guint count, guint kib, char **path, char **cmdline_out)
{
    g_autofree char *cmdline = g_strdup_printf("mode=blkbench count=%u kib=%u", count, kib);
    MvmVmConfig *config = guest_config(cmdline);

    *path = make_image(count * kib * 2, NULL);
    add_disk(config, *path, -1, FALSE);
    if (cmdline_out != NULL)
        *cmdline_out = g_steal_pointer(&cmdline);
    return config;
}

static void test_blk_bench(void)
{
    TestguestBlkbench ours, theirs;

    /* Figures, not checks: only in perf mode (tests/bench/ runs it), so the suite stays quick. */
    if (!g_test_perf()) {
        g_test_skip("a benchmark: run with -m perf");
        return;
    }
    if (!have_kvm())
        return;
    guint count = 32, kib = 64;
    g_autofree char *path = NULL;
    g_autofree char *cmdline = NULL;
    g_autoptr(MvmVmConfig) config = blkbench_config(count, kib, &path, &cmdline);
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
    g_assert_true(testguest_parse_blkbench(out, khz, &ours));
    g_test_message("BENCH microvmd guest-reported: blk read %.1f MB/s, write %.1f MB/s, queue "
                   "notify %.2f us (ioeventfd), register write that exits %.2f us",
                   ours.read_mbs, ours.write_mbs, ours.notify_us, ours.trapped_us);

    g_autofree char *qemu_out = NULL;
    if (!qemu_blkbench(path, cmdline, &qemu_out) ||
        !testguest_parse_blkbench(qemu_out, khz, &theirs)) {
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

/*
 * A disk limited to 10 MB/s (1 MB every 100 ms) moves 10 ± 0.5 MB/s, reading and writing, over
 * 3 s of 64 KiB requests (mode=blkbench times each pass between its markers). A bucket of 100
 * ms absorbs the I/O thread's timer waking late by as much, as under nested emulation with
 * other tests running; the reads start with it full, and that megabyte is not counted.
 */
static void test_blk_rate_limit_bandwidth(void)
{
    if (!have_kvm())
        return;
    guint count = 480, kib = 64;
    g_autofree char *path = NULL;
    g_autoptr(MvmVmConfig) config = blkbench_config(count, kib, &path, NULL);
    MvmDiskConfig *disk = g_ptr_array_index(config->disks, 0);
    const guint64 bucket = 1000000;
    disk->rate_limit.bandwidth = (MvmTokenBucketConfig){.size = bucket, .refill_time_ms = 100};

    g_autoptr(Guest) g = guest_start(config);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "PASS blkbench"));
    for (guint pass = 0; pass < 2; pass++) {
        double seconds = guest_marker_span_s(g, 0x100 + 2 * pass, 0x101 + 2 * pass);
        guint64 bytes = (guint64)count * kib * 1024 - (pass == 0 ? bucket : 0);
        double mbs = bytes / 1e6 / seconds;
        g_test_message("%s: %u x %u KiB in %.2f s = %.2f MB/s (without the first bucket)",
                       pass == 0 ? "read" : "write", count, kib, seconds, mbs);
        g_assert_cmpfloat(mbs, >=, 9.5);
        g_assert_cmpfloat(mbs, <=, 10.5);
    }
    /* The disk's figures: every request done, and the queue waited for the limit. */
    MvmDiskStats stats;
    g_assert_true(mvm_vm_get_disk_stats(g->vm, 0, &stats));
    g_assert_false(mvm_vm_get_disk_stats(g->vm, 1, &stats));
    g_test_message("disk: %" G_GUINT64_FORMAT " reads (%" G_GUINT64_FORMAT
                   " bytes), %" G_GUINT64_FORMAT " writes (%" G_GUINT64_FORMAT
                   " bytes), waited %" G_GUINT64_FORMAT " times",
                   stats.read_requests, stats.read_bytes, stats.write_requests, stats.write_bytes,
                   stats.throttled);
    g_assert_cmpuint(stats.read_requests, >=, count);
    g_assert_cmpuint(stats.read_bytes, >=, (guint64)count * kib * 1024);
    g_assert_cmpuint(stats.write_requests, >=, count);
    g_assert_cmpuint(stats.write_bytes, ==, (guint64)count * kib * 1024);
    g_assert_cmpuint(stats.throttled, >, 0);
    g_unlink(path);
}

/*
 * 200 requests a second (10 every 50 ms) gives 200 ± 5 % over 3 s of reads; the limit lifted
 * while the guest writes lets the writes go at once; a bad change is refused and changes
 * nothing.
 */
static void test_blk_rate_limit_ops_live(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    guint count = 600, kib = 4;
    g_autofree char *path = NULL;
    g_autoptr(MvmVmConfig) config = blkbench_config(count, kib, &path, NULL);
    MvmRateLimit limited = {.ops = {.size = 10, .refill_time_ms = 50}}, none = {0};
    ((MvmDiskConfig *)g_ptr_array_index(config->disks, 0))->rate_limit = limited;

    g_autoptr(Guest) g = guest_start(config);
    MvmRateLimit bad = {.ops = {.size = 10}};
    g_assert_false(mvm_vm_set_disk_rate_limit(g->vm, 0, &bad, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("%s", error->message);
    g_clear_error(&error);
    g_assert_false(mvm_vm_set_disk_rate_limit(g->vm, 1, &none, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    /* The write pass starts limited, one or two requests in. */
    g_assert_true(guest_wait_for(g, "BLKBENCH read bytes", GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_set_disk_rate_limit(g->vm, 0, &none, &error));
    g_assert_no_error(error);
    const MvmDiskConfig *disk = g_ptr_array_index(mvm_vm_get_config(g->vm)->disks, 0);
    g_assert_cmpuint(disk->rate_limit.ops.size, ==, 0);

    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "PASS blkbench"));
    double read_s = guest_marker_span_s(g, 0x100, 0x101),
           write_s = guest_marker_span_s(g, 0x102, 0x103);
    double ops = count / read_s;
    g_test_message("reads: %u in %.2f s = %.1f/s; writes, limit lifted: %u in %.2f s", count,
                   read_s, ops, count, write_s);
    g_assert_cmpfloat(ops, >=, 190);
    g_assert_cmpfloat(ops, <=, 210);
    /* Under the limit they would take as long as the reads. */
    g_assert_cmpfloat(write_s, <, read_s / 2);
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
    g_test_add_func("/virtio/blk/rate-limit/bandwidth", test_blk_rate_limit_bandwidth);
    g_test_add_func("/virtio/blk/rate-limit/ops-live", test_blk_rate_limit_ops_live);
    g_test_add_func("/virtio/blk/snapshot-restore", test_blk_snapshot_restore);
    g_test_add_func("/virtio/blk/restore-parked", test_blk_restore_parked);
    g_test_add_func("/virtio/blk/bench", test_blk_bench);
    g_test_add_func("/virtio/rng", test_rng);
    g_test_add_data_func("/virtio/interrupts/gsi5", GUINT_TO_POINTER(0), test_interrupts);
    g_test_add_data_func("/virtio/interrupts/gsi16", GUINT_TO_POINTER(11), test_interrupts);
    static const char *const attacks[] = {"loop",  "oob",   "huge", "badnext",
                                          "avail", "order", "ring"};
    for (guint i = 0; i < G_N_ELEMENTS(attacks); i++) {
        g_autofree char *name = g_strdup_printf("/virtio/hostile/%s", attacks[i]);
        g_test_add_data_func(name, attacks[i], test_hostile);
    }
    return g_test_run();
}
