/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest RAM: one memfd, mapped once, split into at most two guest-physical
 * regions around the 3–4 GiB MMIO gap. Every guest-physical access in the
 * VMM goes through mvm_memory_get_ptr(), the single bounds check.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MVM_MEMORY_MAX_REGIONS 2

typedef struct {
    guint64 gpa;       /* guest-physical start */
    guint64 size;      /* bytes */
    guint64 fd_offset; /* offset of this region in the memfd */
    guint8 *host;      /* host virtual address of gpa */
} MvmMemoryRegion;

typedef struct _MvmMemory MvmMemory;

/* Allocates @size bytes (a multiple of 2 MiB, at least 2 MiB) of guest RAM. */
MvmMemory *mvm_memory_new(guint64 size, GError **error);
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
void mvm_memory_free(MvmMemory *mem);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmMemory, mvm_memory_free)

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

gboolean mvm_memory_write(MvmMemory *mem, guint64 gpa, const void *src, gsize len, GError **error);
gboolean mvm_memory_read(const MvmMemory *mem, guint64 gpa, void *dst, gsize len, GError **error);

G_END_DECLS
