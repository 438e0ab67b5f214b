/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Handoff (microvm.h: mvm_vm_save_for_handoff(), MVM_RESTORE_SHARE_MEMORY,
 * mvm_vm_dup_backends()), against real KVM with the test guest: a VM saved, freed and restored
 * on the very same RAM memfd goes on counting where it was, twice in a row; its disk holds what
 * the guest wrote before and is read through the descriptor carried over (the path is gone by
 * then); a tap that only the VM held open outlives the old VM; a VM whose RAM is a private
 * mapping of a sealed memfd is handed off through a copy; and every memfd that would let a
 * shrink fault the process, or is not writable RAM, is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "memory.h"
#include "snapshot-test-util.h"
#include "virtio-test-util.h"
#include "vm-private.h"

/* 16 MiB of pattern: RAM a copy must read, beside the guest's few pages of its own. */
#define COUNT_CMDLINE "mode=pattern pages=4096 base_mib=16 every=20 delay=300"
#define SMALL_CMDLINE "mode=pattern pages=16 base_mib=16 every=20 delay=300"
#define EVERY         20
#define RAM_MIB       256
#define TEST_TAP      "mvmhand0"

/* What a handoff leaves: `state`, the RAM memfd and the back ends (all the test's). */
typedef struct {
    int state_fd;
    int memory_fd;
    MvmVmConfig *backends;
} Handed;

static void handed_clear(Handed *h)
{
    if (h->state_fd >= 0)
        close(h->state_fd);
    if (h->memory_fd >= 0)
        close(h->memory_fd);
    if (h->backends != NULL) {
        mvm_vm_config_close_fds(h->backends);
        mvm_vm_config_free(h->backends);
    }
    *h = (Handed){-1, -1, NULL};
}

static ino_t inode_of(int fd)
{
    struct stat st;

    g_assert_cmpint(fstat(fd, &st), ==, 0);
    return st.st_ino;
}

/* Saves @vm for handoff and frees it, as a daemon about to exit does. */
static Handed hand_off(MvmVm *vm)
{
    g_autoptr(GError) error = NULL;
    Handed h = {memfd_create("mvm-test-state", MFD_CLOEXEC), -1, NULL};

    g_assert_cmpint(h.state_fd, >=, 0);
    g_assert_true(mvm_vm_save_for_handoff(vm, h.state_fd, &h.memory_fd, &error));
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);
    g_assert_cmpint(fcntl(h.memory_fd, F_GETFD), ==, FD_CLOEXEC);
    int seals = fcntl(h.memory_fd, F_GET_SEALS);
    g_assert_cmpint(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), ==,
                    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    g_assert_cmpint(seals & F_SEAL_WRITE, ==, 0);
    h.backends = mvm_vm_dup_backends(vm, &error);
    g_assert_no_error(error);
    mvm_vm_free(vm);
    return h;
}

static MvmVm *restore_handed(const Handed *h, MvmRestoreFlags flags, gint64 *took_us,
                             GError **error)
{
    gint64 start = g_get_monotonic_time();
    MvmVm *vm = mvm_vm_restore_from_fds(h->state_fd, h->memory_fd, h->backends, flags, error);

    if (took_us != NULL)
        *took_us = g_get_monotonic_time() - start;
    return vm;
}

/*
 * The restored VM's RAM is the handed memfd itself, mapped shared: the same file, and a byte
 * written through the VM's mapping is in the file at once (a copy, or a private mapping of the
 * file, would keep it to itself). Put back before the guest runs.
 */
static void assert_shares_ram(MvmVm *vm, int memory_fd)
{
    guint64 gpa = mvm_memory_get_size(vm->memory) - MVM_PAGE_SIZE;
    volatile guint8 *p = mvm_memory_get_ptr(vm->memory, gpa, 1);
    guint8 old = *p, seen = 0;

    g_assert_cmpint(mvm_memory_get_fd(vm->memory), >=, 0);
    g_assert_cmpuint(inode_of(mvm_memory_get_fd(vm->memory)), ==, inode_of(memory_fd));
    *p = (guint8)~old;
    g_assert_cmpint(pread(memory_fd, &seen, 1, (off_t)gpa), ==, 1);
    g_assert_cmpuint(seen, ==, (guint8)~old);
    *p = old;
}

/*
 * Resumes @vm, its console into @c (empty), and waits for its counter past @last: it goes on
 * from there, not from 0. Returns the last count seen; @c goes on capturing.
 */
static guint64 assert_counts_on(MvmVm *vm, guint64 last, Capture *c)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *want = g_strdup_printf("COUNTER %" G_GUINT64_FORMAT "\n", last + 3 * EVERY);

    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_no_error(error);
    g_assert_true(capture_wait_from(c, 0, want, TIMEOUT_US));
    g_autofree char *out = capture_dup_from(c, 0);
    g_assert_null(strstr(out, "FAIL"));
    /* The first whole line: the one due next, or the one after if the pause cut a line. */
    g_assert_cmpuint(first_counter(out), >, last);
    g_assert_cmpuint(first_counter(out), <=, last + 2 * EVERY);
    return last_counter(out);
}

/* The last count @c holds once its VM was saved (its vCPUs parked: nothing more comes). */
static guint64 counted(Capture *c)
{
    g_autofree char *out = capture_dup_from(c, 0);

    return last_counter(out);
}

/* ---- a counting guest and its disk, handed off twice ---- */

static void test_counter_twice(void)
{
    g_autoptr(GError) error = NULL;
    Capture *c = capture_new();

    if (!have_kvm())
        return;
    g_autofree char *image = make_image(64, NULL);
    g_autoptr(MvmVmConfig) config = testguest_config(COUNT_CMDLINE, 1, RAM_MIB);
    add_disk(config, image, -1, FALSE);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 40\n", TIMEOUT_US));
    ino_t ram = inode_of(mvm_memory_get_fd(vm->memory));

    for (guint round = 1; round <= 2; round++) {
        Handed h = hand_off(vm);
        guint64 last = counted(c);
        g_assert_cmpuint(inode_of(h.memory_fd), ==, ram); /* no copy, however many handoffs */
        const MvmDiskConfig *disk = g_ptr_array_index(h.backends->disks, 0);
        g_assert_cmpint(disk->fd, >=, 0);

        gint64 copy_us, share_us;
        MvmVm *copy = restore_handed(&h, MVM_RESTORE_COPY_MEMORY, &copy_us, &error);
        g_assert_no_error(error);
        mvm_vm_free(copy);
        vm = restore_handed(&h, MVM_RESTORE_SHARE_MEMORY, &share_us, &error);
        g_assert_no_error(error);
        g_test_message("handoff %u: restore %" G_GINT64_FORMAT
                       " us with the RAM shared, %" G_GINT64_FORMAT " us copied (%u MiB VM)",
                       round, share_us, copy_us, RAM_MIB);
        assert_shares_ram(vm, h.memory_fd);
        handed_clear(&h);
        capture_free(c);
        c = capture_new();
        assert_counts_on(vm, last, c);
    }
    mvm_vm_free(vm);
    capture_free(c);
    g_unlink(image);
}

/*
 * The guest writes its disk before the handoff and reads it back after, through the descriptor
 * the old VM had open: the image's name is gone by then, so nothing could open it again.
 */
static void test_disk(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *image = make_image(64, NULL);
    g_autoptr(MvmVmConfig) config = guest_config("mode=blk pause=1 writefirst=1 seed=7");
    add_disk(config, image, -1, FALSE);
    Guest *g = guest_start(config);
    g_assert_true(guest_wait_for(g, "BLK paused", GUEST_TIMEOUT_US));
    g_autofree char *before = guest_output(g);
    g_assert_nonnull(strstr(before, "blk-write-read"));
    struct stat on_disk;
    g_assert_cmpint(stat(image, &on_disk), ==, 0);

    Handed h = hand_off(g->vm);
    g->vm = NULL;
    guest_free(g);
    const MvmDiskConfig *disk = g_ptr_array_index(h.backends->disks, 0);
    g_assert_cmpuint(inode_of(disk->fd), ==, on_disk.st_ino);
    g_assert_cmpint(g_unlink(image), ==, 0);

    MvmVm *vm = restore_handed(&h, MVM_RESTORE_SHARE_MEMORY, NULL, &error);
    g_assert_no_error(error);
    handed_clear(&h);
    g = guest_wrap(vm);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_cmpuint(mvm_vm_console_write(vm, (const guint8 *)"g", 1), ==, 1);
    g_autofree char *after = guest_finish(g);
    g_assert_nonnull(strstr(after, "blk-read-after-pause"));
    guest_free(g);
}

/* ---- what a shared restore refuses ---- */

/* A memfd with @len bytes of @src (from offset 0), sealed with @seals (0: not sealable). */
static int memfd_with(int src, guint64 len, int seals)
{
    int fd = memfd_create("mvm-test-ram", MFD_CLOEXEC | (seals ? MFD_ALLOW_SEALING : 0));
    g_autofree guint8 *buf = g_malloc(MVM_MIB);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, (off_t)len), ==, 0);
    for (guint64 off = 0; off < len; off += MVM_MIB) {
        gssize n = pread(src, buf, MVM_MIB, (off_t)off);
        g_assert_cmpint(n, >=, 0);
        if (n > 0)
            g_assert_cmpint(pwrite(fd, buf, (gsize)n, (off_t)off), ==, n);
    }
    if (seals)
        g_assert_cmpint(fcntl(fd, F_ADD_SEALS, seals), ==, 0);
    return fd;
}

static void assert_refused(const Handed *h, int memory_fd, MvmRestoreFlags flags,
                           const char *needle)
{
    g_autoptr(GError) error = NULL;
    Handed other = *h;

    other.memory_fd = memory_fd;
    g_assert_null(restore_handed(&other, MVM_RESTORE_SHARE_MEMORY | flags, NULL, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (strstr(error->message, needle) == NULL)
        g_error("expected \"%s\" in \"%s\"", needle, error->message);
}

static void test_refusals(void)
{
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    MvmVm *vm = new_guest(SMALL_CMDLINE, 1, 32, c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 20\n", TIMEOUT_US));
    Handed h = hand_off(vm);
    guint64 last = counted(c);
    guint64 size = 32 * MVM_MIB;

    int unsealed = memfd_with(h.memory_fd, size, 0);
    const int ram_seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    int shrink_only = memfd_with(h.memory_fd, size, F_SEAL_SHRINK);
    int larger = memfd_with(h.memory_fd, size + 2 * MVM_MIB, ram_seals);
    int read_only = memfd_with(h.memory_fd, size, ram_seals | F_SEAL_WRITE);
    g_autofree char *path = NULL;
    int file = g_file_open_tmp("mvm-handoff-XXXXXX", &path, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ftruncate(file, (off_t)size), ==, 0);
    assert_refused(&h, unsealed, 0, "sealed against shrinking");
    /* Open to more seals: a holder could still seal it against writing. */
    assert_refused(&h, shrink_only, 0, "further seals");
    assert_refused(&h, larger, 0, "bytes");
    assert_refused(&h, read_only, 0, "sealed against writing");
    assert_refused(&h, file, 0, "sealed against shrinking");
    assert_refused(&h, h.memory_fd, MVM_RESTORE_COPY_MEMORY, "not with a copy");
    assert_refused(&h, h.memory_fd, MVM_RESTORE_LAZY, "lazy");
    close(unsealed);
    close(larger);
    close(shrink_only);
    close(read_only);
    close(file);
    g_unlink(path);

    /* Nothing of that harmed the handed memfd: the real restore counts on. */
    vm = restore_handed(&h, MVM_RESTORE_SHARE_MEMORY, NULL, &error);
    g_assert_no_error(error);
    handed_clear(&h);
    g_autoptr(Capture) after = capture_new();
    assert_counts_on(vm, last, after);
    mvm_vm_free(vm);
}

/* ---- RAM mapped privately from a sealed memfd: handed off as a copy ---- */

static void test_from_image(void)
{
    g_autoptr(Capture) c = capture_new(), c2 = capture_new(), c3 = capture_new();
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    MvmVm *vm = new_guest(SMALL_CMDLINE, 1, 64, c);
    int state_fd = memfd_create("mvm-test-state", MFD_CLOEXEC);
    int image = memfd_create("mvm-test-image", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 20\n", TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot_to_fds(vm, state_fd, image, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    mvm_vm_free(vm);
    g_assert_cmpint(fcntl(image, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE), ==, 0);
    vm = mvm_vm_restore_from_fds(state_fd, image, NULL, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_memory_get_fd(vm->memory), ==, -1); /* a private mapping */
    close(state_fd);
    assert_counts_on(vm, counted(c), c2);

    Handed h = hand_off(vm);
    g_assert_cmpuint(inode_of(h.memory_fd), !=, inode_of(image));
    close(image);
    vm = restore_handed(&h, MVM_RESTORE_SHARE_MEMORY, NULL, &error);
    g_assert_no_error(error);
    assert_shares_ram(vm, h.memory_fd);
    handed_clear(&h);
    assert_counts_on(vm, counted(c2), c3);
    mvm_vm_free(vm);
}

/* ---- a tap only the VM holds ---- */

/* A tap that is not persistent: it lives as long as a descriptor of it. */
static int make_tap(const char *name)
{
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(fd, TUNSETIFF, &ifr), ==, 0);
    return fd;
}

static void tap_in_namespace(void)
{
    static const guint8 mac[6] = {0x52, 0x54, 0x00, 0x65, 0x43, 0x21};
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;

    g_autoptr(MvmVmConfig) config = testguest_config(SMALL_CMDLINE, 1, 32);
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);
    /* Name and fd, as the daemon gives them: a snapshot's config keeps the name (a NIC given
     * by fd alone cannot be restored from any state), the VM uses the fd. */
    nic->tap_name = g_strdup(TEST_TAP);
    nic->tap_fd = make_tap(TEST_TAP);
    memcpy(nic->mac, mac, sizeof(mac));
    config->nics = g_ptr_array_new();
    g_ptr_array_add(config->nics, nic);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    close(nic->tap_fd); /* the VM's is the only one left */
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 20\n", TIMEOUT_US));

    Handed h = hand_off(vm);
    const MvmNetConfig *carried = g_ptr_array_index(h.backends->nics, 0);
    g_assert_cmpmem(carried->mac, 6, mac, 6);
    g_assert_cmpuint(if_nametoindex(TEST_TAP), !=, 0); /* the old VM is gone, the tap is not */
    vm = restore_handed(&h, MVM_RESTORE_SHARE_MEMORY, NULL, &error);
    g_assert_no_error(error);
    handed_clear(&h);
    g_assert_cmpuint(if_nametoindex(TEST_TAP), !=, 0);
    g_autoptr(Capture) after = capture_new();
    assert_counts_on(vm, counted(c), after);
    mvm_vm_free(vm);
    g_assert_cmpuint(if_nametoindex(TEST_TAP), ==, 0); /* with the last descriptor */
}

static void test_tap(void)
{
    if (have_kvm())
        run_in_net_namespace(tap_in_namespace);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/handoff/counter-twice", test_counter_twice);
    g_test_add_func("/handoff/disk", test_disk);
    g_test_add_func("/handoff/refusals", test_refusals);
    g_test_add_func("/handoff/from-image", test_from_image);
    g_test_add_func("/handoff/tap", test_tap);
    return g_test_run();
}
