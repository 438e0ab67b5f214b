/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "layout.h"
#include "error-private.h"

#define COPY_CHUNK (8 * MVM_MIB)

struct _MvmMemory {
    guint64 size;
    int fd;       /* our memfd; -1 for a private mapping of a sealed memfd */
    guint8 *base; /* one mapping of the whole RAM, in fd order */
    guint n_regions;
    MvmMemoryRegion regions[MVM_MEMORY_MAX_REGIONS];
    GDestroyNotify release; /* mvm_memory_set_release_func() */
    gpointer release_data;
    /*
     * The VMM's own writes since tracking began (mvm_memory_track_writes()): one bit per 4 KiB
     * page in fd order, set atomically by any thread; NULL when not tracking.
     */
    guint64 *written;
    MvmLazyMemory *lazy; /* memory-lazy.c, for a lazy restore; NULL otherwise */
};

/* Low RAM ends where the MMIO gap starts; the rest continues at 4 GiB. */
static void split_into_regions(MvmMemory *mem)
{
    guint64 low = MIN(mem->size, MVM_MMIO_GAP_START);

    mem->regions[0] = (MvmMemoryRegion){.gpa = 0, .size = low, .fd_offset = 0, .host = mem->base};
    mem->n_regions = 1;
    if (mem->size > low) {
        mem->regions[1] = (MvmMemoryRegion){
            .gpa = MVM_MMIO_GAP_END,
            .size = mem->size - low,
            .fd_offset = low,
            .host = mem->base + low,
        };
        mem->n_regions = 2;
    }
}

static gboolean check_size(guint64 size, GError **error)
{
    if (size < 2 * MVM_MIB || size % (2 * MVM_MIB) != 0) {
        g_set_error(
            error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
            "guest memory must be a multiple of 2 MiB and at least 2 MiB, not %" G_GUINT64_FORMAT
            " bytes",
            size);
        return FALSE;
    }
    /* Keep all RAM below the 46-bit physical limit we advertise and sizes sane for mmap. */
    if (size > (1ULL << 46) - MVM_MMIO_GAP_END) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "guest memory of %" G_GUINT64_FORMAT " MiB is too large",
                    (guint64)(size / MVM_MIB));
        return FALSE;
    }
    return TRUE;
}

static MvmMemory *memory_map(int fd, guint64 size, int mmap_flags, GError **error)
{
    /* MAP_NORESERVE: guest RAM is touched lazily; do not charge it all up front. */
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, mmap_flags | MAP_NORESERVE, fd, 0);

    if (base == MAP_FAILED) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED,
                            "cannot map %" G_GUINT64_FORMAT " MiB of guest memory",
                            (guint64)(size / MVM_MIB));
        return NULL;
    }
    /* Guest RAM never goes into a core dump of the daemon; transparent huge pages help TLBs. */
    madvise(base, size, MADV_DONTDUMP);
    madvise(base, size, MADV_HUGEPAGE);

    MvmMemory *mem = g_new0(MvmMemory, 1);
    mem->size = size;
    mem->base = base;
    mem->fd = -1;
    split_into_regions(mem);
    return mem;
}

/*
 * Guest RAM's memfd is sealed at its size for good. Its descriptor may outlive this process
 * (mvm_vm_save_for_handoff() hands it to the next one, which maps it shared): a mapping of a
 * file that shrinks faults SIGBUS on the lost pages, which would kill that process and every VM
 * in it, so no holder of the descriptor may ever shrink it (nor grow it: RAM has one size).
 * F_SEAL_SEAL, so that no holder can add F_SEAL_WRITE either once no writable mapping is left
 * (between two owners): the next owner's writable shared mapping would then be refused.
 */
#define RAM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static int ram_fd_new(guint64 size, int seals, GError **error)
{
    int fd = memfd_create("microvm-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot create guest memory (memfd_create)");
        return -1;
    }
    if (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, seals) < 0) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot size and seal guest memory");
        close(fd);
        return -1;
    }
    return fd;
}

/* RAM that is @fd (taken, closed on failure), mapped shared. */
static MvmMemory *memory_map_own(int fd, guint64 size, GError **error)
{
    MvmMemory *mem = memory_map(fd, size, MAP_SHARED, error);

    if (mem == NULL) {
        close(fd);
        return NULL;
    }
    mem->fd = fd;
    return mem;
}

static MvmMemory *memory_new(guint64 size, int seals, GError **error)
{
    if (!check_size(size, error))
        return NULL;

    int fd = ram_fd_new(size, seals, error);
    return fd >= 0 ? memory_map_own(fd, size, error) : NULL;
}

MvmMemory *mvm_memory_new(guint64 size, GError **error)
{
    return memory_new(size, RAM_SEALS, error);
}

int mvm_memory_new_ram_fd(guint64 size, GError **error)
{
    return check_size(size, error) ? ram_fd_new(size, RAM_SEALS, error) : -1;
}

/*
 * A memfd of hugetlbfs (MFD_HUGETLB) is sealable too, but a private mapping of it faults SIGBUS
 * on a copy-on-write that finds the huge page pool empty, which anyone else may have emptied:
 * only plain shared memory (tmpfs) will do.
 */
static gboolean is_shmem(int fd)
{
    struct statfs sfs;

    return fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

/*
 * A file the daemon maps may only be one that no one can make shorter than the mapping: a
 * page past the end of the file raises SIGBUS on the touch (the process's, or KVM's on its
 * behalf), which kills every VM of the process. Only a memfd sealed against shrinking gives
 * that guarantee (seals are never removed); sealed against writing too, its contents cannot
 * change under the guest either. The seals are read before the size, so a file shrunk and
 * then sealed is seen at its sealed size.
 */
gboolean mvm_memory_fd_is_sealed(int fd, guint64 size)
{
    const int needed = F_SEAL_SHRINK | F_SEAL_WRITE;
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);

    return seals >= 0 && (seals & needed) == needed && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
           (guint64)st.st_size >= size && is_shmem(fd);
}

MvmMemory *mvm_memory_new_mapped(int fd, guint64 size, GError **error)
{
    if (!check_size(size, error))
        return NULL;
    if (!mvm_memory_fd_is_sealed(fd, size)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "guest memory can be mapped only from a memfd of at least %" G_GUINT64_FORMAT
                    " bytes sealed against shrinking and writing",
                    size);
        return NULL;
    }
    return memory_map(fd, size, MAP_PRIVATE, error);
}

/*
 * Shared RAM is written by the guest and read by whoever else holds the memfd: only a memfd of
 * plain shared memory (as for is_shmem()), writable through this descriptor, never sealed
 * against writing, and sealed against shrinking (see RAM_SEALS), of exactly @size bytes. The
 * seals are read before the size, as in mvm_memory_fd_is_sealed().
 */
static gboolean check_shareable(int fd, guint64 size, GError **error)
{
    int seals = fcntl(fd, F_GET_SEALS);
    int mode = fcntl(fd, F_GETFL);
    struct stat st;

    /* All of RAM's own seals: without F_SEAL_SEAL any holder could still seal it against
     * writing, and the next owner's mapping would fail. */
    const int needed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

    if (seals < 0 || (seals & needed) != needed || !is_shmem(fd))
        return mvm_set_invalid(error, "guest memory can be shared only from a memfd sealed "
                                      "against shrinking, growing and further seals");
    if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
        return mvm_set_invalid(error, "shared guest memory must be writable, but the memfd "
                                      "is sealed against writing");
    if (mode < 0 || (mode & O_ACCMODE) != O_RDWR)
        return mvm_set_invalid(error, "shared guest memory needs a descriptor open for reading "
                                      "and writing");
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (guint64)st.st_size != size)
        return mvm_set_invalid(
            error, "shared guest memory must be a memfd of exactly %" G_GUINT64_FORMAT " bytes",
            size);
    return TRUE;
}

MvmMemory *mvm_memory_new_shared(int fd, guint64 size, GError **error)
{
    if (!check_size(size, error) || !check_shareable(fd, size, error))
        return NULL;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot keep the guest memory's memfd");
        return NULL;
    }
    return memory_map_own(own, size, error);
}

static gboolean read_all_at(int fd, guint8 *dst, gsize len, guint64 offset, GError **error)
{
    while (len > 0) {
        ssize_t n = pread(fd, dst, MIN(len, (gsize)COPY_CHUNK), (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = errno;
            g_set_error(error, MVM_ERROR, n < 0 ? MVM_ERROR_FAILED : MVM_ERROR_INVALID_ARGUMENT,
                        "cannot read guest memory: %s",
                        n < 0 ? g_strerror(saved) : "the file became shorter while being read");
            return FALSE;
        }
        dst += n;
        len -= (gsize)n;
        offset += (guint64)n;
    }
    return TRUE;
}

/*
 * Only the file's data extents are read; its holes are zero pages of the fresh memfd already,
 * and stay unallocated. Reading (never mapping) the file is what makes a file that shrinks
 * meanwhile read as zeros past its new end, or fail this call: never a fault.
 */
static gboolean copy_data(MvmMemory *mem, int fd, guint64 size, GError **error)
{
    for (off_t off = 0; (guint64)off < size;) {
        off_t data = lseek(fd, off, SEEK_DATA);
        if ((data < 0 && errno == ENXIO) || (data >= 0 && (guint64)data >= size))
            break; /* the rest is a hole; data past @size (the file grew meanwhile) is not RAM */
        off_t hole = data < 0 ? -1 : lseek(fd, data, SEEK_HOLE);
        if (hole < 0) { /* no SEEK_DATA on this file system: read it all */
            data = off;
            hole = (off_t)size;
        }
        hole = (off_t)MIN((guint64)hole, size);
        if (hole <= data) { /* the file changed under us: never a length that wraps */
            g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                        "cannot read guest memory: the file changed while being read");
            return FALSE;
        }
        if (!read_all_at(fd, mem->base + data, (gsize)(hole - data), (guint64)data, error))
            return FALSE;
        off = hole;
    }
    return TRUE;
}

MvmMemory *mvm_memory_new_copy(int fd, guint64 size, GError **error)
{
    g_autoptr(MvmMemory) mem = mvm_memory_new(size, error);

    if (mem == NULL || !copy_data(mem, fd, size, error))
        return NULL;
    return g_steal_pointer(&mem);
}

#define IMAGE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/*
 * The copy is written through a shared mapping, which must be gone before F_SEAL_WRITE (the
 * kernel refuses the seal while a writable shared mapping exists). Sealed for good: nobody,
 * this process included, can change, shrink or unseal it, so private mappings of it share its
 * pages safely.
 */
int mvm_memory_image_new(int fd, guint64 size, GError **error)
{
    /* Not F_SEAL_SEAL yet: F_SEAL_WRITE comes once the copy is in. */
    g_autoptr(MvmMemory) mem = memory_new(size, F_SEAL_SHRINK | F_SEAL_GROW, error);

    if (mem == NULL || !copy_data(mem, fd, size, error))
        return -1;
    munmap(mem->base, mem->size);
    mem->base = NULL;
    int image = g_steal_fd(&mem->fd);
    if (fcntl(image, F_ADD_SEALS, IMAGE_SEALS) < 0) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot seal a memory image");
        close(image);
        return -1;
    }
    return image;
}

void mvm_memory_free(MvmMemory *mem)
{
    if (mem == NULL)
        return;
    g_free(mem->written);
    /* Before the unmapping: its thread fills the mapping until it is stopped. */
    mvm_lazy_memory_free(mem->lazy);
    if (mem->base != NULL)
        munmap(mem->base, mem->size);
    if (mem->fd >= 0)
        close(mem->fd);
    if (mem->release != NULL)
        mem->release(mem->release_data);
    g_free(mem);
}

void mvm_memory_set_lazy(MvmMemory *mem, MvmLazyMemory *lazy)
{
    mem->lazy = lazy;
}

MvmLazyMemory *mvm_memory_get_lazy(const MvmMemory *mem)
{
    return mem->lazy;
}

void mvm_memory_set_release_func(MvmMemory *mem, GDestroyNotify func, gpointer data)
{
    mem->release = func;
    mem->release_data = data;
}

guint64 mvm_memory_get_size(const MvmMemory *mem)
{
    return mem->size;
}

guint64 mvm_memory_get_end(const MvmMemory *mem)
{
    const MvmMemoryRegion *last = &mem->regions[mem->n_regions - 1];
    return last->gpa + last->size;
}

guint mvm_memory_get_n_regions(const MvmMemory *mem)
{
    return mem->n_regions;
}

const MvmMemoryRegion *mvm_memory_get_region(const MvmMemory *mem, guint index)
{
    g_return_val_if_fail(index < mem->n_regions, NULL);
    return &mem->regions[index];
}

int mvm_memory_get_fd(const MvmMemory *mem)
{
    return mem->fd;
}

void *mvm_memory_get_ptr(const MvmMemory *mem, guint64 gpa, guint64 len)
{
    for (guint i = 0; i < mem->n_regions; i++) {
        const MvmMemoryRegion *r = &mem->regions[i];
        /* Written so that no sum can overflow: gpa - r->gpa is only taken when gpa >= r->gpa. */
        if (gpa < r->gpa || gpa - r->gpa >= r->size)
            continue;
        guint64 offset = gpa - r->gpa;
        if (len > r->size - offset)
            return NULL;
        return r->host + offset;
    }
    return NULL;
}

static gboolean range_error(guint64 gpa, gsize len, GError **error)
{
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                "guest range 0x%" G_GINT64_MODIFIER "x+0x%" G_GSIZE_MODIFIER "x is not RAM", gpa,
                len);
    return FALSE;
}

gboolean mvm_memory_write(MvmMemory *mem, guint64 gpa, const void *src, gsize len, GError **error)
{
    void *dst = mvm_memory_get_ptr(mem, gpa, len);
    if (dst == NULL)
        return range_error(gpa, len, error);
    memcpy(dst, src, len);
    mvm_memory_mark_written(mem, dst, len);
    return TRUE;
}

/* ---- what the VMM wrote ---- */

guint64 mvm_memory_get_n_pages(const MvmMemory *mem)
{
    return mem->size / MVM_PAGE_SIZE;
}

static gsize bitmap_words(const MvmMemory *mem)
{
    return (gsize)((mvm_memory_get_n_pages(mem) + 63) / 64);
}

void mvm_memory_track_writes(MvmMemory *mem)
{
    if (mem->written == NULL)
        __atomic_store_n(&mem->written, g_new0(guint64, bitmap_words(mem)), __ATOMIC_RELEASE);
}

/* @host is inside the one mapping (it came from mvm_memory_get_ptr()), so the range is RAM. */
void mvm_memory_mark_written(const MvmMemory *mem, const void *host, gsize len)
{
    guint64 *written = __atomic_load_n(&mem->written, __ATOMIC_ACQUIRE);

    if (written == NULL || len == 0)
        return;
    guint64 first = (guint64)((const guint8 *)host - mem->base) / MVM_PAGE_SIZE;
    guint64 last = ((guint64)((const guint8 *)host - mem->base) + len - 1) / MVM_PAGE_SIZE;
    for (guint64 page = first; page <= last; page++)
        __atomic_fetch_or(&written[page / 64], 1ULL << (page % 64), __ATOMIC_RELAXED);
}

void mvm_memory_give_back_written(MvmMemory *mem, const guint64 *bitmap)
{
    guint64 *written = __atomic_load_n(&mem->written, __ATOMIC_ACQUIRE);

    for (gsize i = 0; written != NULL && i < bitmap_words(mem); i++)
        __atomic_fetch_or(&written[i], bitmap[i], __ATOMIC_RELAXED);
}

gboolean mvm_memory_read_from(MvmMemory *mem, int fd, guint64 offset, guint64 len, GError **error)
{
    g_return_val_if_fail(offset <= mem->size && len <= mem->size - offset, FALSE);
    return read_all_at(fd, mem->base + offset, (gsize)len, offset, error);
}

void mvm_memory_take_written(MvmMemory *mem, guint64 *bitmap)
{
    guint64 *written = __atomic_load_n(&mem->written, __ATOMIC_ACQUIRE);

    for (gsize i = 0; written != NULL && i < bitmap_words(mem); i++)
        bitmap[i] |= __atomic_exchange_n(&written[i], 0, __ATOMIC_RELAXED);
}

gboolean mvm_memory_read(const MvmMemory *mem, guint64 gpa, void *dst, gsize len, GError **error)
{
    const void *src = mvm_memory_get_ptr(mem, gpa, len);
    if (src == NULL)
        return range_error(gpa, len, error);
    memcpy(dst, src, len);
    return TRUE;
}
