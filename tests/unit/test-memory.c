/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest memory: the single bounds check every guest-physical access goes through, the split
 * around the MMIO gap, copy-on-write mapping of a memory file, the seals of RAM's own memfd and
 * the shared mapping a handoff restores. No KVM needed.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layout.h"
#include "memory.h"
#include "microvm.h"

static void test_sizes(void)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(mvm_memory_new(0, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_null(mvm_memory_new(3 * MVM_MIB, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_null(mvm_memory_new(G_MAXUINT64 - MVM_MIB + 1, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    g_autoptr(MvmMemory) mem = mvm_memory_new(2 * MVM_MIB, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(mvm_memory_get_size(mem), ==, 2 * MVM_MIB);
    g_assert_cmpuint(mvm_memory_get_end(mem), ==, 2 * MVM_MIB);
    g_assert_cmpuint(mvm_memory_get_n_regions(mem), ==, 1);
    g_assert_cmpint(mvm_memory_get_fd(mem), >=, 0);
}

static void test_bounds(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) mem = mvm_memory_new(4 * MVM_MIB, &error);
    const guint64 size = 4 * MVM_MIB;

    g_assert_no_error(error);
    g_assert_nonnull(mvm_memory_get_ptr(mem, 0, size));
    g_assert_nonnull(mvm_memory_get_ptr(mem, size - 1, 1));
    /* Even an empty range must start inside RAM: the address itself is guest input. */
    g_assert_nonnull(mvm_memory_get_ptr(mem, size - 1, 0));
    g_assert_null(mvm_memory_get_ptr(mem, size, 0));
    g_assert_null(mvm_memory_get_ptr(mem, size, 1));
    g_assert_null(mvm_memory_get_ptr(mem, size - 1, 2));
    g_assert_null(mvm_memory_get_ptr(mem, 0, size + 1));
    /* Wrap-around: gpa + len overflows 64 bits and must not look small. */
    g_assert_null(mvm_memory_get_ptr(mem, 1, G_MAXUINT64));
    g_assert_null(mvm_memory_get_ptr(mem, G_MAXUINT64, 2));
    g_assert_null(mvm_memory_get_ptr(mem, G_MAXUINT64 - 15, 32));

    guint8 byte = 0x5a;
    g_assert_true(mvm_memory_write(mem, size - 1, &byte, 1, &error));
    g_assert_no_error(error);
    g_assert_false(mvm_memory_write(mem, size - 1, &byte, 2, &error));
    g_assert_nonnull(error);
    g_clear_error(&error);
    g_assert_false(mvm_memory_read(mem, G_MAXUINT64, &byte, 1, &error));
    g_assert_nonnull(error);
}

/* Above 3 GiB the RAM continues at 4 GiB; an access may not straddle the gap. */
static void test_gap_split(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) mem = mvm_memory_new(MVM_MMIO_GAP_START + 64 * MVM_MIB, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(mvm_memory_get_n_regions(mem), ==, 2);
    const MvmMemoryRegion *low = mvm_memory_get_region(mem, 0);
    const MvmMemoryRegion *high = mvm_memory_get_region(mem, 1);
    g_assert_cmpuint(low->gpa, ==, 0);
    g_assert_cmpuint(low->size, ==, MVM_MMIO_GAP_START);
    g_assert_cmpuint(high->gpa, ==, MVM_MMIO_GAP_END);
    g_assert_cmpuint(high->size, ==, 64 * MVM_MIB);
    g_assert_cmpuint(high->fd_offset, ==, MVM_MMIO_GAP_START);
    g_assert_cmpuint(mvm_memory_get_end(mem), ==, MVM_MMIO_GAP_END + 64 * MVM_MIB);

    g_assert_nonnull(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_START - 8, 8));
    g_assert_null(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_START - 8, 16));
    g_assert_null(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_START, 1));
    g_assert_null(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_END - 1, 1));
    g_assert_nonnull(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_END, 64 * MVM_MIB));
    g_assert_null(mvm_memory_get_ptr(mem, MVM_MMIO_GAP_END, 64 * MVM_MIB + 1));

    /* Both regions are windows on one memfd, in order: high RAM follows low RAM in the file. */
    const char text[] = "above the gap";
    g_assert_true(mvm_memory_write(mem, MVM_MMIO_GAP_END, text, sizeof(text), &error));
    g_assert_no_error(error);
    char back[sizeof(text)];
    g_assert_cmpint(pread(mvm_memory_get_fd(mem), back, sizeof(back), MVM_MMIO_GAP_START), ==,
                    sizeof(back));
    g_assert_cmpstr(back, ==, text);
}

/* A 2 MiB memfd with "snapshot" at 4096 and a hole elsewhere. */
static int memory_file(void)
{
    int fd = memfd_create("test-memory", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 2 * MVM_MIB), ==, 0);
    g_assert_cmpint(pwrite(fd, "snapshot", 8, 4096), ==, 8);
    return fd;
}

/* A sealed memfd mapped MAP_PRIVATE: guest writes never reach the file. */
static void test_private_file_mapping(void)
{
    g_autoptr(GError) error = NULL;
    const guint64 size = 2 * MVM_MIB;
    int fd = memory_file();
    char buf[8];

    g_assert_false(mvm_memory_fd_is_sealed(fd, size));
    g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE), ==, 0);
    g_assert_true(mvm_memory_fd_is_sealed(fd, size));
    g_assert_false(mvm_memory_fd_is_sealed(fd, size + 2 * MVM_MIB)); /* shorter than the RAM */

    g_autoptr(MvmMemory) mem = mvm_memory_new_mapped(fd, size, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_memory_get_fd(mem), ==, -1);
    g_assert_true(mvm_memory_read(mem, 4096, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "snapshot", 8);
    g_assert_true(mvm_memory_write(mem, 4096, "modified", 8, &error));
    g_assert_no_error(error);
    g_assert_cmpint(pread(fd, buf, sizeof(buf), 4096), ==, 8);
    g_assert_cmpmem(buf, sizeof(buf), "snapshot", 8);
    close(fd);
}

/* What can still shrink is never mapped: an unsealed memfd, a memfd sealed but for shrinking. */
static void test_unsealed_not_mapped(void)
{
    g_autoptr(GError) error = NULL;
    int fd = memory_file();

    g_assert_null(mvm_memory_new_mapped(fd, 2 * MVM_MIB, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW), ==, 0);
    g_assert_null(mvm_memory_new_mapped(fd, 2 * MVM_MIB, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    close(fd);
}

/* Sealed but on hugetlbfs: a copy-on-write there can fault when the huge page pool is empty. */
static void test_hugetlb_not_mapped(void)
{
    int fd = memfd_create("test-memory", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);

    if (fd < 0 || ftruncate(fd, 2 * MVM_MIB) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE) < 0) {
        g_test_skip("no sealable 2 MiB hugetlbfs memfd here");
        if (fd >= 0)
            close(fd);
        return;
    }
    g_assert_false(mvm_memory_fd_is_sealed(fd, 2 * MVM_MIB));
    close(fd);
}

/*
 * A copy is independent of the file: the file truncated afterwards changes nothing, and the
 * copy has a memfd of its own (it can be snapshotted again).
 */
static void test_copy(void)
{
    g_autoptr(GError) error = NULL;
    int fd = memory_file();
    char buf[8];

    g_autoptr(MvmMemory) copy = mvm_memory_new_copy(fd, 2 * MVM_MIB, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_memory_get_fd(copy), >=, 0);
    g_assert_cmpint(ftruncate(fd, 0), ==, 0);
    g_assert_true(mvm_memory_read(copy, 4096, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "snapshot", 8);
    g_assert_true(mvm_memory_read(copy, 2 * MVM_MIB - 8, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "\0\0\0\0\0\0\0\0", 8);

    /* A file shorter than the RAM (it shrank during a restore): the rest reads as zeros. */
    g_autoptr(MvmMemory) short_copy = mvm_memory_new_copy(fd, 2 * MVM_MIB, &error);
    g_assert_no_error(error);
    g_assert_true(mvm_memory_read(short_copy, 4096, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "\0\0\0\0\0\0\0\0", 8);
    close(fd);
}

/*
 * A file that grew past the RAM size after its size was checked, with data only past the end:
 * nothing of it is RAM, and nothing is written past the copy's memory (ASan would see it).
 */
static void test_copy_grown(void)
{
    g_autoptr(GError) error = NULL;
    int fd = memfd_create("grown", MFD_CLOEXEC);
    char buf[8];

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, "ATTACKER", 8, 3 * MVM_MIB), ==, 8);
    g_autoptr(MvmMemory) copy = mvm_memory_new_copy(fd, 2 * MVM_MIB, &error);
    g_assert_no_error(error);
    g_assert_true(mvm_memory_read(copy, 2 * MVM_MIB - 8, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "\0\0\0\0\0\0\0\0", 8);
    close(fd);
}

/*
 * RAM's memfd is sealed at its size for good: nobody holding it can shrink it under a shared
 * mapping, grow it, or seal it against writing (which would make the next owner's mapping fail).
 */
static void test_ram_sealed(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) mem = mvm_memory_new(4 * MVM_MIB, &error);
    int fd = mvm_memory_get_fd(mem);

    g_assert_no_error(error);
    g_assert_cmpint(fcntl(fd, F_GET_SEALS), ==, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    g_assert_cmpint(ftruncate(fd, 2 * MVM_MIB), ==, -1);
    g_assert_cmpint(ftruncate(fd, 8 * MVM_MIB), ==, -1);
    g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), ==, -1);
    g_assert_false(mvm_memory_fd_is_sealed(fd, 4 * MVM_MIB)); /* writable: never mapped COW */
}

/* Shared RAM is the memfd itself: what the one writes, the other reads, and the fd is kept. */
static void test_shared(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) first = mvm_memory_new(4 * MVM_MIB, &error);
    char buf[8];

    g_assert_no_error(error);
    g_autoptr(MvmMemory) second =
        mvm_memory_new_shared(mvm_memory_get_fd(first), 4 * MVM_MIB, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_memory_get_fd(second), !=, mvm_memory_get_fd(first));
    g_assert_true(mvm_memory_write(first, 3 * MVM_MIB, "handoff!", 8, &error));
    g_assert_true(mvm_memory_read(second, 3 * MVM_MIB, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "handoff!", 8);
    g_clear_pointer(&first, mvm_memory_free);
    g_assert_true(mvm_memory_read(second, 3 * MVM_MIB, buf, sizeof(buf), &error));
    g_assert_cmpmem(buf, sizeof(buf), "handoff!", 8);
}

static void assert_not_shared(int fd, guint64 size, const char *needle)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(mvm_memory_new_shared(fd, size, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, needle));
}

static void test_shared_refused(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmMemory) mem = mvm_memory_new(4 * MVM_MIB, &error);
    int plain = memfd_create("test-memory", MFD_CLOEXEC);
    int write_sealed = memory_file(); /* sealable, 2 MiB */
    int shrink_sealed = memory_file();
    char path[] = "/tmp/test-memory-XXXXXX";
    int file = mkstemp(path);
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", mvm_memory_get_fd(mem));
    int read_only = open(proc, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(ftruncate(plain, 4 * MVM_MIB), ==, 0);
    g_assert_cmpint(ftruncate(file, 4 * MVM_MIB), ==, 0);
    unlink(path);
    g_assert_cmpint(fcntl(shrink_sealed, F_ADD_SEALS, F_SEAL_SHRINK), ==, 0);
    g_assert_cmpint(
        fcntl(write_sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
        ==, 0);
    assert_not_shared(plain, 4 * MVM_MIB, "sealed against shrinking");
    /* Open to more seals: a holder could still seal it against writing. */
    assert_not_shared(shrink_sealed, 2 * MVM_MIB, "further seals");
    assert_not_shared(file, 4 * MVM_MIB, "sealed against shrinking");
    assert_not_shared(write_sealed, 2 * MVM_MIB, "sealed against writing");
    assert_not_shared(mvm_memory_get_fd(mem), 2 * MVM_MIB, "exactly");
    assert_not_shared(read_only, 4 * MVM_MIB, "reading and writing");
    close(plain);
    close(file);
    close(write_sealed);
    close(shrink_sealed);
    close(read_only);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/memory/sizes", test_sizes);
    g_test_add_func("/memory/bounds", test_bounds);
    g_test_add_func("/memory/gap-split", test_gap_split);
    g_test_add_func("/memory/private-file-mapping", test_private_file_mapping);
    g_test_add_func("/memory/unsealed-not-mapped", test_unsealed_not_mapped);
    g_test_add_func("/memory/hugetlb-not-mapped", test_hugetlb_not_mapped);
    g_test_add_func("/memory/copy", test_copy);
    g_test_add_func("/memory/copy-grown", test_copy_grown);
    g_test_add_func("/memory/ram-sealed", test_ram_sealed);
    g_test_add_func("/memory/shared", test_shared);
    g_test_add_func("/memory/shared-refused", test_shared_refused);
    return g_test_run();
}
