/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restores against real KVM, with the test guest's `dirty` mode, which reads exactly the
 * words the test names: a lazily restored guest reads its RAM from the snapshot on first touch
 * (its sum of a range is the original's), the pages it touched are its working set, a restore
 * that prefetches that set has them before the guest runs, a snapshot of a lazy VM holds the
 * very RAM it was restored from, and every misuse is refused with the reason. Skipped where
 * userfaultfd is not allowed.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "layout.h"
#include "snapshot-test-util.h"
#include "vm-private.h"

#define MEMORY_MIB  64
#define RANGE_START 0x1000000ULL /* 16 MiB: far from the guest's own image */
#define RANGE_END   0x1400000ULL /* 1,024 pages */
#define STRIDE      0x1000ULL    /* one word per page */

static gboolean lazy_usable(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return FALSE;
    if (!mvm_lazy_restore_supported(&error)) {
        g_test_skip(error->message);
        return FALSE;
    }
    return TRUE;
}

/*
 * A snapshot of a dirty guest whose range holds words of its own (one per page), and the
 * guest's sum of them before the snapshot; the VM is gone afterwards.
 */
static char *make_snapshot(guint64 *sum)
{
    DirtyGuest d = {0};
    GString *addrs = g_string_new(NULL);
    g_autofree char *dir = make_tmpdir();
    g_autoptr(GError) error = NULL;

    dirty_start(&d, MEMORY_MIB);
    for (guint64 gpa = RANGE_START; gpa < RANGE_START + 32 * STRIDE; gpa += STRIDE)
        g_string_append_printf(addrs, "0x%" G_GINT64_MODIFIER "x ", gpa);
    dirty_write(&d, addrs->str, 32);
    g_string_free(addrs, TRUE);
    *sum = dirty_sum(&d, RANGE_START, RANGE_END, STRIDE);
    g_assert_cmphex(*sum, !=, 0);
    g_assert_true(mvm_vm_snapshot(d.vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    dirty_clear(&d);
    return g_steal_pointer(&dir);
}

static MvmVm *restore(const char *dir, MvmRestoreFlags flags, const MvmWorkingSet *prefetch,
                      GError **error)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const MvmRestoreOptions options = {.flags = flags, .prefetch = prefetch};

    g_assert_cmpint(dirfd, >=, 0);
    MvmVm *vm = mvm_vm_restore_full(dirfd, -1, -1, &options, error);
    close(dirfd);
    return vm;
}

static guint64 pages_read(MvmVm *vm)
{
    guint64 read = 0, total = 0;

    g_assert_true(mvm_vm_get_lazy_progress(vm, &read, &total));
    g_assert_cmpuint(total, ==, MEMORY_MIB * MVM_MIB / MVM_PAGE_SIZE);
    g_assert_cmpuint(read, <=, total);
    return read;
}

/* @vm's working set, saved to a file and read back (the file is gone again). */
static MvmWorkingSet *working_set(MvmVm *vm, const char *dir)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(dir, "working-set", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    g_assert_cmpint(fd, >=, 0);
    g_assert_true(mvm_vm_save_working_set(vm, fd, &error));
    g_assert_no_error(error);
    MvmWorkingSet *set = mvm_working_set_read_fd(fd, &error);
    g_assert_no_error(error);
    close(fd);
    return set;
}

/* Restores lazily, resumes and has the guest add up the range: the original's sum. */
static MvmVm *restore_and_sum(const char *dir, const MvmWorkingSet *prefetch, guint64 want_sum,
                              guint64 *read_at_restore)
{
    g_autoptr(GError) error = NULL;
    DirtyGuest d = {0};
    MvmVm *vm = restore(dir, MVM_RESTORE_LAZY, prefetch, &error);

    g_assert_no_error(error);
    *read_at_restore = pages_read(vm);
    dirty_attach(&d, vm, 2);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_cmphex(dirty_sum(&d, RANGE_START, RANGE_END, STRIDE), ==, want_sum);
    g_assert_true(mvm_vm_pause(vm, &error));
    dirty_detach(&d);
    return vm;
}

/*
 * Lazily restored, the guest reads the range from the snapshot: only the pages it and the
 * restore touched come in, the range's among them, and they are its working set. Restored with
 * that set prefetched, the range is in before the guest runs, and the guest's sum is the same.
 */
static void test_lazy_working_set(void)
{
    if (!lazy_usable())
        return;
    guint64 sum, at_restore;
    const guint64 range_pages = (RANGE_END - RANGE_START) / MVM_PAGE_SIZE;
    g_autofree char *dir = make_snapshot(&sum);

    g_autoptr(MvmVm) vm = restore_and_sum(dir, NULL, sum, &at_restore);
    g_test_message("lazy: %" G_GUINT64_FORMAT " pages at restore, %" G_GUINT64_FORMAT
                   " after the sum",
                   at_restore, pages_read(vm));
    g_assert_cmpuint(at_restore, <, range_pages);
    g_assert_cmpuint(pages_read(vm), >=, at_restore + range_pages);
    g_assert_cmpuint(pages_read(vm), <, MEMORY_MIB * MVM_MIB / MVM_PAGE_SIZE / 4);
    g_autoptr(MvmWorkingSet) set = working_set(vm, dir);
    g_assert_cmpuint(mvm_working_set_get_n_pages(set), >=, range_pages);
    g_assert_cmpuint(mvm_working_set_get_n_pages(set), <=, pages_read(vm));
    g_clear_pointer(&vm, mvm_vm_free);

    g_autoptr(MvmVm) again = restore_and_sum(dir, set, sum, &at_restore);
    g_test_message("prefetched: %" G_GUINT64_FORMAT " pages at restore, %" G_GUINT64_FORMAT
                   " after the sum",
                   at_restore, pages_read(again));
    g_assert_cmpuint(at_restore, >=, mvm_working_set_get_n_pages(set));
    /* What it read on demand is only what the first run had not touched: not the range. */
    g_autoptr(MvmWorkingSet) second = working_set(again, dir);
    g_assert_cmpuint(mvm_working_set_get_n_pages(second), <, range_pages);
    rm_rf(dir);
}

/* A full snapshot of a lazy VM reads the rest first: its memory is the original's, page by page. */
static void test_lazy_snapshot_is_whole(void)
{
    if (!lazy_usable())
        return;
    g_autoptr(GError) error = NULL;
    guint64 sum;
    g_autofree char *dir = make_snapshot(&sum), *again = make_tmpdir();
    g_autofree char *a = g_build_filename(dir, "memory", NULL);
    g_autofree char *b = g_build_filename(again, "memory", NULL);
    g_autofree guint8 *page_a = g_malloc(MVM_PAGE_SIZE), *page_b = g_malloc(MVM_PAGE_SIZE);
    guint64 read, total;

    g_autoptr(MvmVm) vm = restore(dir, MVM_RESTORE_LAZY, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(mvm_vm_snapshot(vm, again, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_assert_false(mvm_vm_get_lazy_progress(vm, &read, &total)); /* every page is in */
    int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
    for (guint64 off = 0; off < MEMORY_MIB * MVM_MIB; off += MVM_PAGE_SIZE) {
        g_assert_cmpint(pread(fa, page_a, MVM_PAGE_SIZE, (off_t)off), ==, MVM_PAGE_SIZE);
        g_assert_cmpint(pread(fb, page_b, MVM_PAGE_SIZE, (off_t)off), ==, MVM_PAGE_SIZE);
        if (off != MVM_VMGENID_ADDR && memcmp(page_a, page_b, MVM_PAGE_SIZE) != 0)
            g_error("page 0x%" G_GINT64_MODIFIER "x differs after a lazy restore", off);
    }
    close(fa);
    close(fb);
    /* The working set survives the finish. */
    g_autoptr(MvmWorkingSet) set = working_set(vm, dir);
    g_assert_cmpuint(mvm_working_set_get_n_pages(set), >, 0);
    rm_rf(dir);
    rm_rf(again);
}

static void expect_refused(const char *dir, MvmRestoreFlags flags, const MvmWorkingSet *prefetch,
                           const char *why)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVm) vm = restore(dir, flags, prefetch, &error);

    g_assert_null(vm);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (strstr(error->message, why) == NULL)
        g_error("expected \"%s\" in: %s", why, error->message);
}

/* Lazy with a copy, a prefetch without lazy, another snapshot's set; no set without lazy. */
static void test_lazy_refusals(void)
{
    if (!lazy_usable())
        return;
    g_autoptr(GError) error = NULL;
    guint64 sum, other_sum, at_restore;
    g_autofree char *dir = make_snapshot(&sum), *other = make_snapshot(&other_sum);

    g_autoptr(MvmVm) vm = restore_and_sum(dir, NULL, sum, &at_restore);
    g_autoptr(MvmWorkingSet) set = working_set(vm, dir);
    expect_refused(dir, MVM_RESTORE_LAZY | MVM_RESTORE_COPY_MEMORY, NULL, "not with a copy");
    expect_refused(dir, MVM_RESTORE_NONE, set, "only by a lazy restore");
    expect_refused(other, MVM_RESTORE_LAZY, set, "recorded from another snapshot");

    g_autoptr(MvmVm) eager = restore(dir, MVM_RESTORE_NONE, NULL, &error);
    g_assert_no_error(error);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_false(mvm_vm_save_working_set(eager, fd, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED);
    close(fd);
    guint64 read, total;
    g_assert_false(mvm_vm_get_lazy_progress(eager, &read, &total));
    g_assert_true(mvm_vm_finish_lazy_restore(eager, NULL));
    rm_rf(dir);
    rm_rf(other);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/snapshot/lazy/working-set", test_lazy_working_set);
    g_test_add_func("/snapshot/lazy/snapshot-is-whole", test_lazy_snapshot_is_whole);
    g_test_add_func("/snapshot/lazy/refusals", test_lazy_refusals);
    return g_test_run();
}
