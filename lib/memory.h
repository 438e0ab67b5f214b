/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest RAM: one memfd, mapped once, split into at most two guest-physical
 * regions around the 3–4 GiB MMIO gap. Every guest-physical access in the
 * VMM goes through mvm_memory_get_ptr(), the single bounds check.
 */
#pragma once

#include <glib.h>

#include "microvm.h"

G_BEGIN_DECLS

#define MVM_MEMORY_MAX_REGIONS 2

typedef struct {
    guint64 gpa;       /* guest-physical start */
    guint64 size;      /* bytes */
    guint64 fd_offset; /* offset of this region in the memfd */
    guint8 *host;      /* host virtual address of gpa */
} MvmMemoryRegion;

typedef struct _MvmMemory MvmMemory;

/*
 * Allocates @size bytes (a multiple of 2 MiB, at least 2 MiB) of guest RAM: a memfd sealed at
 * that size for good (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL; memory.c says why).
 */
MvmMemory *mvm_memory_new(guint64 size, GError **error);
/* Such a memfd alone, unmapped (a handoff's copy of RAM). Returns it, or -1 with @error set. */
int mvm_memory_new_ram_fd(guint64 size, GError **error);
/*
 * Guest RAM that is @fd itself (MVM_RESTORE_SHARE_MEMORY): mapped shared and writable, never
 * copied; the memory keeps a duplicate of @fd (not consumed) as its own memfd. Only a writable
 * memfd of plain shared memory of exactly @size bytes, sealed against shrinking and not against
 * writing; anything else is MVM_ERROR_INVALID_ARGUMENT.
 */
MvmMemory *mvm_memory_new_shared(int fd, guint64 size, GError **error);
/*
 * Guest RAM from a file (a snapshot's memory), two ways. A copy: fresh RAM into which the
 * file's data is read (its holes cost nothing), for any file; the file may change or vanish
 * afterwards. A mapping, copy-on-write and lazy: only of a memfd that
 * mvm_memory_fd_is_sealed() accepts (else MVM_ERROR_INVALID_ARGUMENT), because a mapped file
 * that shrinks faults whoever touches the lost pages. Neither consumes @fd.
 */
MvmMemory *mvm_memory_new_copy(int fd, guint64 size, GError **error);
MvmMemory *mvm_memory_new_mapped(int fd, guint64 size, GError **error);
/*
 * Is @fd a memfd of plain shared memory (not MFD_HUGETLB) of at least @size bytes, sealed against
 * shrinking and writing for good?
 */
gboolean mvm_memory_fd_is_sealed(int fd, guint64 size);
/*
 * A memory image: a new memfd of @size bytes with @fd's data read into it (holes stay holes),
 * then sealed against any change for good, which mvm_memory_new_mapped() accepts. Returns the
 * memfd (the caller's), or -1 with @error set.
 */
int mvm_memory_image_new(int fd, guint64 size, GError **error);
void mvm_memory_free(MvmMemory *mem);
/* @func(@data) runs once @mem is unmapped (memory-images.c). */
void mvm_memory_set_release_func(MvmMemory *mem, GDestroyNotify func, gpointer data);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmMemory, mvm_memory_free)

/*
 * memory-images.c: guest RAM mapped privately from the image of @fd (a snapshot's memory) that
 * @images holds for that unchanged file and @owner, made now if there is none.
 */
MvmMemory *mvm_memory_images_map(MvmMemoryImages *images, int fd, guint64 size, guint64 owner,
                                 MvmImageChargeFunc charge, gpointer charge_data, GError **error);

guint64 mvm_memory_get_size(const MvmMemory *mem);
/* Highest guest-physical address + 1 that is RAM. */
guint64 mvm_memory_get_end(const MvmMemory *mem);
guint mvm_memory_get_n_regions(const MvmMemory *mem);
const MvmMemoryRegion *mvm_memory_get_region(const MvmMemory *mem, guint index);
/* The memfd, or -1 for a private mapping (mvm_memory_new_mapped()). */
int mvm_memory_get_fd(const MvmMemory *mem);

/*
 * Returns a host pointer to [gpa, gpa + len) when that whole range is RAM
 * inside one region, NULL otherwise (also on overflow). len may be 0, but gpa must
 * still be RAM.
 */
void *mvm_memory_get_ptr(const MvmMemory *mem, guint64 gpa, guint64 len);

/* Also marks what it wrote (mvm_memory_mark_written()). */
gboolean mvm_memory_write(MvmMemory *mem, guint64 gpa, const void *src, gsize len, GError **error);
gboolean mvm_memory_read(const MvmMemory *mem, guint64 gpa, void *dst, gsize len, GError **error);

/*
 * Which pages the VMM itself wrote (guest writes are KVM's dirty log): once
 * mvm_memory_track_writes() was called, mvm_memory_write() and the device model
 * (mark_written, on the host addresses mvm_memory_get_ptr() gave for device-writable buffers
 * and used rings) set a bit per 4 KiB page, in fd order; take_written() ORs the bits into
 * @bitmap (mvm_memory_get_n_pages() bits, rounded up to 64) and clears them. Any thread.
 */
guint64 mvm_memory_get_n_pages(const MvmMemory *mem);
void mvm_memory_track_writes(MvmMemory *mem);
void mvm_memory_mark_written(const MvmMemory *mem, const void *host, gsize len);
void mvm_memory_take_written(MvmMemory *mem, guint64 *bitmap);
/* Puts @bitmap's pages back among the written ones (a diff that could not be saved). */
void mvm_memory_give_back_written(MvmMemory *mem, const guint64 *bitmap);
/*
 * Reads [@offset, @offset + @len) of @fd (a snapshot's memory: RAM in fd order) into the same
 * place of RAM. A file shorter than that fails (MVM_ERROR_INVALID_ARGUMENT).
 */
gboolean mvm_memory_read_from(MvmMemory *mem, int fd, guint64 offset, guint64 len, GError **error);

/*
 * memory-lazy.c: guest RAM filled from @fd (a snapshot's `memory`, not consumed: the memory
 * keeps a duplicate) page by page on first touch (MVM_RESTORE_LAZY), by a thread this call
 * starts; @source_id names the snapshot, for the working set. MVM_ERROR_NOT_SUPPORTED without
 * a userfaultfd. The rest are no-ops (FALSE, NULL, TRUE) on other memory.
 */
typedef struct _MvmLazyMemory MvmLazyMemory;
MvmMemory *mvm_memory_new_lazy(int fd, guint64 size, const guint8 source_id[MVM_SNAPSHOT_ID_SIZE],
                               GError **error);
/* A userfaultfd ready for use (UFFDIO_API done), or -1 with MVM_ERROR_NOT_SUPPORTED. */
int mvm_lazy_open_userfaultfd(GError **error);
/* Reads the pages @pages marks (one bit per page, in fd order) that are not in yet. */
gboolean mvm_memory_lazy_prefetch(MvmMemory *mem, const guint8 *pages, GError **error);
/* Reads every page with data not in yet, then ends the lazy part: ordinary memfd RAM. */
gboolean mvm_memory_lazy_finish(MvmMemory *mem, GError **error);
/* The VM is going: unregisters, so no touch of a missing page waits any more (zeros). */
void mvm_memory_lazy_abort(MvmMemory *mem);
/* Is @fd the file the lazy memory reads (or, once finished, read) its pages from? */
gboolean mvm_memory_lazy_is_source(MvmMemory *mem, int fd);
gboolean mvm_memory_lazy_get_progress(MvmMemory *mem, guint64 *pages_in, guint64 *pages_total);
/* The pages read because something touched them (bits as above), and the snapshot's ID. */
guint8 *mvm_memory_lazy_dup_demand(MvmMemory *mem, guint8 source_id[MVM_SNAPSHOT_ID_SIZE]);
/* memory.c keeps it, and frees it (mvm_lazy_memory_free()) before the RAM goes. */
void mvm_memory_set_lazy(MvmMemory *mem, MvmLazyMemory *lazy);
MvmLazyMemory *mvm_memory_get_lazy(const MvmMemory *mem);
void mvm_lazy_memory_free(MvmLazyMemory *lazy);

G_END_DECLS
