/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Working sets: the pages a lazily restored guest touched (memory-lazy.c), saved so that the
 * next restore of the same snapshot reads them in bulk (MvmRestoreOptions.prefetch).
 *
 * A working set file, untrusted input like a snapshot, all integers little-endian:
 *
 *     0   8  magic "MVMWSET\0"
 *     8   4  version, 1
 *     12  4  page size, 4096
 *     16  8  S, guest RAM in bytes: a multiple of 2 MiB, at least 2 MiB, at most 1 TiB
 *     24  32 the ID of the snapshot it was recorded from (the SHA-256 its `state` ends with)
 *     56  B  one bit per page of RAM in `memory` order (bit i of byte i / 8 for page i), set
 *            for the pages of the set; B = ceil(S / 4096 / 8) exactly, the bits past the last
 *            page clear (the layout of a diff snapshot's changed-pages)
 *
 * Nothing else: the file is exactly 56 + B bytes.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error-private.h"
#include "layout.h"
#include "snapshot.h"
#include "vm-private.h"

#define WSET_MAGIC       "MVMWSET"
#define WSET_MAGIC_LEN   8
#define WSET_VERSION     1
#define WSET_HEADER_SIZE 56
#define WSET_MAX_MEMORY  (1024ULL * 1024 * MVM_MIB) /* 1 TiB: a bitmap of at most 32 MiB */

struct _MvmWorkingSet {
    guint64 memory_size;
    guint8 snapshot_id[MVM_SNAPSHOT_ID_SIZE];
    GBytes *file;        /* the whole file, held: the bitmap is read in place */
    const guint8 *pages; /* ceil(n_pages / 8) bytes, inside @file */
    guint64 n_set;
};

static gboolean invalid(GError **error, const char *reason)
{
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, "invalid working set: %s", reason);
    return FALSE;
}

static gsize bitmap_size(guint64 memory_size)
{
    return (gsize)((memory_size / MVM_PAGE_SIZE + 7) / 8);
}

static guint64 get_le64(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, sizeof(v));
    return GUINT64_FROM_LE(v);
}

static guint32 get_le32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, sizeof(v));
    return GUINT32_FROM_LE(v);
}

/* The fields of the header; @data holds WSET_HEADER_SIZE bytes. */
static gboolean check_header(const guint8 *data, GError **error)
{
    if (memcmp(data, WSET_MAGIC, WSET_MAGIC_LEN) != 0)
        return invalid(error, "not a working set file");
    if (get_le32(data + 8) != WSET_VERSION)
        return invalid(error, "unknown version");
    if (get_le32(data + 12) != MVM_PAGE_SIZE)
        return invalid(error, "pages are not 4 KiB");
    guint64 size = get_le64(data + 16);
    if (size < 2 * MVM_MIB || size % (2 * MVM_MIB) != 0 || size > WSET_MAX_MEMORY)
        return invalid(error, "impossible memory size");
    return TRUE;
}

static gboolean check_length(const guint8 *data, guint64 len, GError **error)
{
    if (len != WSET_HEADER_SIZE + bitmap_size(get_le64(data + 16)))
        return invalid(error, "its length does not match its memory size");
    return TRUE;
}

static guint64 count_pages(const guint8 *bits, gsize n_bytes)
{
    guint64 n = 0;

    for (gsize i = 0; i < n_bytes; i++)
        n += (guint64)__builtin_popcount(bits[i]);
    return n;
}

MvmWorkingSet *mvm_working_set_new_from_bytes(GBytes *bytes, GError **error)
{
    gsize len;

    g_return_val_if_fail(bytes != NULL, NULL);
    const guint8 *data = g_bytes_get_data(bytes, &len);
    if (len < WSET_HEADER_SIZE) {
        invalid(error, "too short");
        return NULL;
    }
    if (!check_header(data, error) || !check_length(data, len, error))
        return NULL;
    guint64 size = get_le64(data + 16);
    gsize n_bytes = bitmap_size(size);
    const guint8 *bits = data + WSET_HEADER_SIZE;
    /* RAM is a multiple of 2 MiB: its pages fill whole bytes, and no bit lies past the end. */
    G_STATIC_ASSERT((2 * MVM_MIB / MVM_PAGE_SIZE) % 8 == 0);
    MvmWorkingSet *set = g_new0(MvmWorkingSet, 1);
    set->memory_size = size;
    memcpy(set->snapshot_id, data + 24, MVM_SNAPSHOT_ID_SIZE);
    set->file = g_bytes_ref(bytes);
    set->pages = bits;
    set->n_set = count_pages(bits, n_bytes);
    return set;
}

MvmWorkingSet *mvm_working_set_read_fd(int fd, GError **error)
{
    struct stat st;
    guint8 header[WSET_HEADER_SIZE];

    g_return_val_if_fail(fd >= 0, NULL);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        invalid(error, "not a regular file");
        return NULL;
    }
    /* The header says how long the file must be: never allocate what the file claims first. */
    if (pread(fd, header, sizeof(header), 0) != (ssize_t)sizeof(header)) {
        invalid(error, "too short");
        return NULL;
    }
    if (!check_header(header, error) || !check_length(header, (guint64)st.st_size, error))
        return NULL;
    gsize len = (gsize)st.st_size;
    g_autofree guint8 *data = g_malloc(len);
    gsize done = 0;
    while (done < len) {
        ssize_t n = pread(fd, data + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            invalid(error, "the file changed while being read");
            return NULL;
        }
        done += (gsize)n;
    }
    g_autoptr(GBytes) bytes = g_bytes_new_take(g_steal_pointer(&data), len);
    return mvm_working_set_new_from_bytes(bytes, error);
}

void mvm_working_set_free(MvmWorkingSet *set)
{
    if (set == NULL)
        return;
    g_bytes_unref(set->file);
    g_free(set);
}

guint64 mvm_working_set_get_n_pages(const MvmWorkingSet *set)
{
    return set->n_set;
}

void mvm_working_set_get_snapshot_id(const MvmWorkingSet *set, guint8 id[MVM_SNAPSHOT_ID_SIZE])
{
    memcpy(id, set->snapshot_id, MVM_SNAPSHOT_ID_SIZE);
}

/* ---- lazily restored VMs ---- */

gboolean mvm_lazy_restore_supported(GError **error)
{
    int fd = mvm_lazy_open_userfaultfd(error);

    if (fd < 0)
        return FALSE;
    close(fd);
    return TRUE;
}

MvmMemory *mvm_snapshot_lazy_memory(const MvmSnapshotState *state, int fd,
                                    const MvmWorkingSet *prefetch, GError **error)
{
    if (prefetch != NULL && (prefetch->memory_size != state->memory_size ||
                             memcmp(prefetch->snapshot_id, state->id, MVM_SNAPSHOT_ID_SIZE) != 0)) {
        invalid(error, "it was recorded from another snapshot");
        return NULL;
    }
    g_autoptr(MvmMemory) mem = mvm_memory_new_lazy(fd, state->memory_size, state->id, error);
    if (mem == NULL || (prefetch != NULL && !mvm_memory_lazy_prefetch(mem, prefetch->pages, error)))
        return NULL;
    return g_steal_pointer(&mem);
}

static GBytes *encode(const guint8 *pages, guint64 memory_size, const guint8 *id)
{
    gsize n_bytes = bitmap_size(memory_size);
    guint8 *data = g_malloc0(WSET_HEADER_SIZE + n_bytes);
    guint32 version = GUINT32_TO_LE(WSET_VERSION), page_size = GUINT32_TO_LE(MVM_PAGE_SIZE);
    guint64 size = GUINT64_TO_LE(memory_size);

    memcpy(data, WSET_MAGIC, WSET_MAGIC_LEN);
    memcpy(data + 8, &version, 4);
    memcpy(data + 12, &page_size, 4);
    memcpy(data + 16, &size, 8);
    memcpy(data + 24, id, MVM_SNAPSHOT_ID_SIZE);
    memcpy(data + WSET_HEADER_SIZE, pages, n_bytes);
    return g_bytes_new_take(data, WSET_HEADER_SIZE + n_bytes);
}

static gboolean write_file(int fd, GBytes *bytes, GError **error)
{
    gsize len, done = 0;
    const guint8 *data = g_bytes_get_data(bytes, &len);

    if (ftruncate(fd, 0) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot empty the working set file");
    while (done < len) {
        ssize_t n = pwrite(fd, data + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                       "cannot write the working set file");
        done += (gsize)n;
    }
    if (fdatasync(fd) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot sync the working set file");
    return TRUE;
}

gboolean mvm_vm_save_working_set(MvmVm *vm, int fd, GError **error)
{
    guint8 id[MVM_SNAPSHOT_ID_SIZE];

    g_return_val_if_fail(vm != NULL && fd >= 0, FALSE);
    g_autofree guint8 *pages =
        vm->memory != NULL ? mvm_memory_lazy_dup_demand(vm->memory, id) : NULL;
    if (pages == NULL) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                            "the VM was not restored lazily: it has no working set");
        return FALSE;
    }
    if (mvm_memory_lazy_is_source(vm->memory, fd)) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                            "the VM was restored lazily from that file, which it may still read");
        return FALSE;
    }
    g_autoptr(GBytes) bytes = encode(pages, mvm_memory_get_size(vm->memory), id);
    return write_file(fd, bytes, error);
}

gboolean mvm_vm_get_lazy_progress(MvmVm *vm, guint64 *pages_read, guint64 *pages_total)
{
    g_return_val_if_fail(vm != NULL && pages_read != NULL && pages_total != NULL, FALSE);
    return vm->memory != NULL && mvm_memory_lazy_get_progress(vm->memory, pages_read, pages_total);
}

gboolean mvm_vm_finish_lazy_restore(MvmVm *vm, GError **error)
{
    g_return_val_if_fail(vm != NULL, FALSE);
    return vm->memory == NULL || mvm_memory_lazy_finish(vm->memory, error);
}
