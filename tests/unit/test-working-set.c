/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazily restored memory and working set files, without KVM: pages come from the file on the
 * first touch (by any thread), the ones touched are the working set, a prefetch and a finish
 * read the rest in bulk, a file shorter than RAM reads as zeros; a working set file is checked
 * field by field. Skipped where this process may not use userfaultfd.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "memory.h"
#include "microvm.h"

#define RAM_SIZE (4 * MVM_MIB)
#define N_PAGES  (RAM_SIZE / MVM_PAGE_SIZE)
#define HEADER   56

/* What page @page of the test file starts with. */
static guint64 page_word(guint64 page)
{
    return page * 0x9e3779b97f4a7c15ULL + 1;
}

/* A memory file whose every page starts with its word; @len bytes long (shorter: cut off). */
static int make_memory_file(guint64 len)
{
    int fd = memfd_create("test-memory", MFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, (off_t)len), ==, 0);
    for (guint64 page = 0; page * MVM_PAGE_SIZE < len; page++) {
        guint64 word = page_word(page);
        g_assert_cmpint(pwrite(fd, &word, sizeof(word), (off_t)(page * MVM_PAGE_SIZE)), ==,
                        sizeof(word));
    }
    return fd;
}

static guint8 *ram(MvmMemory *mem)
{
    return mvm_memory_get_region(mem, 0)->host;
}

static guint64 read_word(MvmMemory *mem, guint64 page)
{
    return *(volatile guint64 *)(ram(mem) + page * MVM_PAGE_SIZE);
}

static gboolean bit(const guint8 *bits, guint64 page)
{
    return (bits[page / 8] >> (page % 8)) & 1;
}

static guint64 pages_in(MvmMemory *mem)
{
    guint64 in = 0, total = 0;

    g_assert_true(mvm_memory_lazy_get_progress(mem, &in, &total));
    g_assert_cmpuint(total, ==, N_PAGES);
    return in;
}

/*
 * The count once it reached @want: the fault thread counts a page after placing it, and the
 * toucher may run on before it has (up to 5 s, then whatever it is).
 */
static guint64 pages_in_reaching(MvmMemory *mem, guint64 want)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    guint64 in;

    while ((in = pages_in(mem)) < want && g_get_monotonic_time() < deadline)
        g_usleep(1000);
    return in;
}

/* Lazy memory of @fd, or NULL after g_test_skip() where there is no userfaultfd. */
static MvmMemory *lazy_or_skip(int fd)
{
    g_autoptr(GError) error = NULL;
    guint8 id[MVM_SNAPSHOT_ID_SIZE];

    memset(id, 0xab, sizeof(id));
    MvmMemory *mem = mvm_memory_new_lazy(fd, RAM_SIZE, id, &error);
    if (mem == NULL) {
        g_assert_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED);
        g_test_skip(error->message);
    }
    return mem;
}

static gpointer touch_page_7(gpointer data)
{
    return GSIZE_TO_POINTER(read_word(data, 7) == page_word(7));
}

/* Pages come in on first touch, from whichever thread; exactly those are the demand set. */
static void test_lazy_on_demand(void)
{
    int fd = make_memory_file(RAM_SIZE);
    g_autoptr(MvmMemory) mem = lazy_or_skip(fd);
    guint8 id[MVM_SNAPSHOT_ID_SIZE];

    if (mem == NULL) {
        close(fd);
        return;
    }
    close(fd); /* the memory keeps its own descriptor */
    g_assert_cmpuint(pages_in(mem), ==, 0);
    g_assert_cmpuint(read_word(mem, 3), ==, page_word(3));
    g_assert_cmpuint(read_word(mem, 3), ==, page_word(3));
    g_assert_cmpuint(read_word(mem, N_PAGES - 1), ==, page_word(N_PAGES - 1));
    GThread *thread = g_thread_new("toucher", touch_page_7, mem);
    g_assert_true(GPOINTER_TO_SIZE(g_thread_join(thread)));
    /* A write by the VMM faults the page in first: the rest of it keeps the file's bytes. */
    guint32 value = 0x55aa55aa;
    g_assert_true(mvm_memory_write(mem, 9 * MVM_PAGE_SIZE + 100, &value, sizeof(value), NULL));
    g_assert_cmpuint(read_word(mem, 9), ==, page_word(9));
    g_assert_cmpuint(pages_in_reaching(mem, 4), ==, 4);

    g_autofree guint8 *demand = mvm_memory_lazy_dup_demand(mem, id);
    for (guint64 page = 0; page < N_PAGES; page++)
        g_assert_cmpint(bit(demand, page), ==,
                        page == 3 || page == 7 || page == 9 || page == N_PAGES - 1);
    g_assert_cmpuint(id[0], ==, 0xab);
}

/* A prefetch reads its pages in bulk and leaves them out of the demand set; finish reads all. */
static void test_lazy_prefetch_and_finish(void)
{
    g_autoptr(GError) error = NULL;
    int fd = make_memory_file(RAM_SIZE);
    g_autoptr(MvmMemory) mem = lazy_or_skip(fd);
    guint8 want[N_PAGES / 8] = {0}, id[MVM_SNAPSHOT_ID_SIZE];

    close(fd);
    if (mem == NULL)
        return;
    for (guint64 page = 10; page < 600; page++)
        want[page / 8] |= (guint8)(1u << (page % 8));
    g_assert_cmpuint(read_word(mem, 20), ==, page_word(20)); /* in already: skipped */
    g_assert_cmpuint(pages_in_reaching(mem, 1), ==, 1);
    g_assert_true(mvm_memory_lazy_prefetch(mem, want, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(pages_in(mem), ==, 590);
    for (guint64 page = 10; page < 600; page++)
        g_assert_cmpuint(read_word(mem, page), ==, page_word(page));
    g_assert_cmpuint(pages_in(mem), ==, 590);

    g_assert_true(mvm_memory_lazy_finish(mem, &error));
    g_assert_no_error(error);
    guint64 in, total;
    g_assert_false(mvm_memory_lazy_get_progress(mem, &in, &total));
    for (guint64 page = 0; page < N_PAGES; page++)
        g_assert_cmpuint(read_word(mem, page), ==, page_word(page));
    g_autofree guint8 *demand = mvm_memory_lazy_dup_demand(mem, id);
    for (guint64 page = 0; page < N_PAGES; page++)
        g_assert_cmpint(bit(demand, page), ==, page == 20);
    g_assert_true(mvm_memory_lazy_finish(mem, &error)); /* twice is fine */
}

/* A file cut short (before the restore or after) reads as zeros, never a fault. */
static void test_lazy_short_file(void)
{
    g_autoptr(GError) error = NULL;
    int fd = make_memory_file(RAM_SIZE);
    g_autoptr(MvmMemory) mem = lazy_or_skip(fd);

    if (mem == NULL) {
        close(fd);
        return;
    }
    g_assert_cmpuint(read_word(mem, 1), ==, page_word(1));
    g_assert_cmpint(ftruncate(fd, 2 * MVM_PAGE_SIZE + 8), ==, 0);
    close(fd);
    g_assert_cmpuint(read_word(mem, 2), ==, page_word(2));
    g_assert_cmpuint(*(volatile guint64 *)(ram(mem) + 2 * MVM_PAGE_SIZE + 8), ==, 0);
    g_assert_cmpuint(read_word(mem, 100), ==, 0);
    g_assert_true(mvm_memory_lazy_finish(mem, &error));
    g_assert_cmpuint(read_word(mem, N_PAGES - 1), ==, 0);
}

/* Freed while pages are still missing: the thread ends, nothing leaks (ASan, valgrind). */
static void test_lazy_free_unfinished(void)
{
    int fd = make_memory_file(RAM_SIZE);
    MvmMemory *mem = lazy_or_skip(fd);

    close(fd);
    if (mem == NULL)
        return;
    g_assert_cmpuint(read_word(mem, 5), ==, page_word(5));
    mvm_memory_free(mem);
}

/* A sparse file: finish reads its data, and its holes stay zero pages without being placed. */
static void test_lazy_finish_sparse(void)
{
    g_autoptr(GError) error = NULL;
    int fd = make_memory_file(16 * MVM_PAGE_SIZE);
    g_assert_cmpint(ftruncate(fd, RAM_SIZE), ==, 0);
    guint64 word = page_word(700);
    g_assert_cmpint(pwrite(fd, &word, sizeof(word), 700 * MVM_PAGE_SIZE), ==, sizeof(word));
    g_autoptr(MvmMemory) mem = lazy_or_skip(fd);

    if (mem == NULL) {
        close(fd);
        return;
    }
    g_assert_true(mvm_memory_lazy_is_source(mem, fd));
    g_assert_true(mvm_memory_lazy_finish(mem, &error));
    g_assert_no_error(error);
    g_assert_true(mvm_memory_lazy_is_source(mem, fd)); /* still: it was restored from it */
    close(fd);
    for (guint64 page = 0; page < N_PAGES; page++)
        g_assert_cmpuint(read_word(mem, page), ==, page < 16 || page == 700 ? page_word(page) : 0);
}

/* Aborted (the VM is going): a touch of a missing page no longer waits for the thread. */
static void test_lazy_abort(void)
{
    int fd = make_memory_file(RAM_SIZE);
    g_autoptr(MvmMemory) mem = lazy_or_skip(fd);
    int other = memfd_create("other", MFD_CLOEXEC);

    if (mem == NULL) {
        close(fd);
        close(other);
        return;
    }
    g_assert_false(mvm_memory_lazy_is_source(mem, other));
    close(other);
    close(fd);
    g_assert_cmpuint(read_word(mem, 1), ==, page_word(1));
    mvm_memory_lazy_abort(mem);
    mvm_memory_lazy_abort(mem);
    g_assert_cmpuint(read_word(mem, 1), ==, page_word(1));
    g_assert_cmpuint(read_word(mem, 2), ==, 0);
}

/* ---- the file format ---- */

static GByteArray *valid_file(guint64 memory_size)
{
    GByteArray *file = g_byte_array_new();
    guint32 version = GUINT32_TO_LE(1), page_size = GUINT32_TO_LE(4096);
    guint64 size = GUINT64_TO_LE(memory_size);
    guint8 id[MVM_SNAPSHOT_ID_SIZE];

    memset(id, 0x42, sizeof(id));
    g_byte_array_append(file, (const guint8 *)"MVMWSET", 8);
    g_byte_array_append(file, (const guint8 *)&version, 4);
    g_byte_array_append(file, (const guint8 *)&page_size, 4);
    g_byte_array_append(file, (const guint8 *)&size, 8);
    g_byte_array_append(file, id, sizeof(id));
    g_byte_array_set_size(file, HEADER + memory_size / MVM_PAGE_SIZE / 8);
    memset(file->data + HEADER, 0, file->len - HEADER);
    file->data[HEADER] = 0x81; /* pages 0 and 7 */
    file->data[file->len - 1] = 0x80;
    return file;
}

static MvmWorkingSet *parse(GByteArray *file, GError **error)
{
    g_autoptr(GBytes) bytes = g_bytes_new(file->data, file->len);
    return mvm_working_set_new_from_bytes(bytes, error);
}

static void test_format_valid(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) file = valid_file(RAM_SIZE);
    g_autoptr(MvmWorkingSet) set = parse(file, &error);
    guint8 id[MVM_SNAPSHOT_ID_SIZE];

    g_assert_no_error(error);
    g_assert_cmpuint(mvm_working_set_get_n_pages(set), ==, 3);
    mvm_working_set_get_snapshot_id(set, id);
    g_assert_cmpuint(id[31], ==, 0x42);
}

static void expect_invalid(GByteArray *file, const char *reason)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmWorkingSet) set = parse(file, &error);

    g_assert_null(set);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (strstr(error->message, reason) == NULL)
        g_error("expected \"%s\" in: %s", reason, error->message);
}

static void set_le64(GByteArray *file, guint offset, guint64 value)
{
    value = GUINT64_TO_LE(value);
    memcpy(file->data + offset, &value, sizeof(value));
}

static void test_format_invalid(void)
{
    GByteArray *f;

    f = valid_file(RAM_SIZE);
    f->data[0] = 'X';
    expect_invalid(f, "not a working set file");
    g_byte_array_unref(f);
    f = valid_file(RAM_SIZE);
    f->data[8] = 2;
    expect_invalid(f, "unknown version");
    g_byte_array_unref(f);
    f = valid_file(RAM_SIZE);
    f->data[13] = 0x20; /* 8 KiB pages */
    expect_invalid(f, "4 KiB");
    g_byte_array_unref(f);
    for (guint i = 0; i < 4; i++) {
        static const guint64 sizes[] = {0, 3 * MVM_MIB, 2048ULL * 1024 * MVM_MIB, G_MAXUINT64};
        f = valid_file(RAM_SIZE);
        set_le64(f, 16, sizes[i]);
        expect_invalid(f, "impossible memory size");
        g_byte_array_unref(f);
    }
    f = valid_file(RAM_SIZE);
    set_le64(f, 16, 2 * RAM_SIZE); /* claims twice the pages its bitmap has */
    expect_invalid(f, "length");
    g_byte_array_unref(f);
    f = valid_file(RAM_SIZE);
    g_byte_array_set_size(f, f->len + 1);
    expect_invalid(f, "length");
    g_byte_array_set_size(f, 20);
    expect_invalid(f, "too short");
    g_byte_array_unref(f);
}

static int file_with(const guint8 *data, gsize len)
{
    int fd = memfd_create("working-set", MFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, data, len), ==, (ssize_t)len);
    return fd;
}

/* From a descriptor: from offset 0 whatever its position, regular files only. */
static void test_format_fd(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) file = valid_file(RAM_SIZE);
    int fd = file_with(file->data, file->len);
    int pipe_fds[2];

    g_autoptr(MvmWorkingSet) set = mvm_working_set_read_fd(fd, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(mvm_working_set_get_n_pages(set), ==, 3);
    g_assert_cmpint(ftruncate(fd, file->len - 1), ==, 0);
    g_assert_null(mvm_working_set_read_fd(fd, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    close(fd);

    g_assert_cmpint(pipe(pipe_fds), ==, 0);
    g_assert_null(mvm_working_set_read_fd(pipe_fds[0], &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lazy/on-demand", test_lazy_on_demand);
    g_test_add_func("/lazy/prefetch-and-finish", test_lazy_prefetch_and_finish);
    g_test_add_func("/lazy/short-file", test_lazy_short_file);
    g_test_add_func("/lazy/free-unfinished", test_lazy_free_unfinished);
    g_test_add_func("/lazy/finish-sparse", test_lazy_finish_sparse);
    g_test_add_func("/lazy/abort", test_lazy_abort);
    g_test_add_func("/working-set/valid", test_format_valid);
    g_test_add_func("/working-set/invalid", test_format_invalid);
    g_test_add_func("/working-set/fd", test_format_fd);
    return g_test_run();
}
