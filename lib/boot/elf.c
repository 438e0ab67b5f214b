/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ELF vmlinux: PT_LOAD segments go to p_paddr (System V ABI, "Program Loading"),
 * the 64-bit entry is e_entry (physical in Linux's vmlinux, converted when it is
 * a virtual address), and a PT_NOTE may carry the PVH entry
 * (XEN_ELFNOTE_PHYS32_ENTRY in a note named "Xen", xen/include/public/elfnote.h).
 */
#include <elf.h>
#include <sys/mman.h>
#include <string.h>

#include "boot-private.h"
#include "layout.h"

#define ELF_MAX_PHNUM     64          /* vmlinux has 5; anything near PN_XNUM is hostile */
#define ELF_MAX_NOTE_SIZE (64 * 1024) /* vmlinux's notes are a few hundred bytes */

static gboolean check_ehdr(const Elf64_Ehdr *eh, guint64 file_size, GError **error)
{
    if (eh->e_ident[EI_CLASS] != ELFCLASS64)
        return mvm_set_invalid(error, "the kernel is not a 64-bit ELF file");
    if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return mvm_set_invalid(error, "the kernel ELF file is not little-endian");
    if (eh->e_machine != EM_X86_64)
        return mvm_set_invalid(error, "the kernel ELF file is not for x86-64 (e_machine %u)",
                               eh->e_machine);
    if (eh->e_type != ET_EXEC && eh->e_type != ET_DYN)
        return mvm_set_invalid(error, "the kernel ELF file is not an executable");
    if (eh->e_phentsize != sizeof(Elf64_Phdr))
        return mvm_set_invalid(error, "the kernel ELF file has program headers of %u bytes",
                               eh->e_phentsize);
    if (eh->e_phnum == 0 || eh->e_phnum > ELF_MAX_PHNUM)
        return mvm_set_invalid(error, "the kernel ELF file has %u program headers (1..%u)",
                               eh->e_phnum, ELF_MAX_PHNUM);
    if (eh->e_phoff > file_size ||
        (guint64)eh->e_phnum * sizeof(Elf64_Phdr) > file_size - eh->e_phoff)
        return mvm_set_invalid(error, "the kernel ELF program headers lie beyond the file");
    return TRUE;
}

static gboolean check_load_segment(MvmMemory *mem, const Elf64_Phdr *ph, guint index,
                                   guint64 file_size, GError **error)
{
    if (ph->p_filesz > ph->p_memsz)
        return mvm_set_invalid(error,
                               "kernel segment %u: p_filesz 0x%" G_GINT64_MODIFIER
                               "x > p_memsz 0x%" G_GINT64_MODIFIER "x",
                               index, ph->p_filesz, ph->p_memsz);
    if (ph->p_offset > file_size || ph->p_filesz > file_size - ph->p_offset)
        return mvm_set_invalid(error, "kernel segment %u lies beyond the end of the file", index);
    /* The zero page, command line, page tables and firmware tables live below 1 MiB. */
    if (ph->p_paddr < MVM_HIMEM_START)
        return mvm_set_invalid(error,
                               "kernel segment %u at 0x%" G_GINT64_MODIFIER
                               "x overlaps the boot structures below 1 MiB",
                               index, ph->p_paddr);
    if (mvm_memory_get_ptr(mem, ph->p_paddr, ph->p_memsz) == NULL)
        return mvm_set_invalid(error,
                               "kernel segment %u at 0x%" G_GINT64_MODIFIER
                               "x+0x%" G_GINT64_MODIFIER "x does not fit in guest RAM",
                               index, ph->p_paddr, ph->p_memsz);
    return TRUE;
}

/*
 * Zeroes guest RAM without touching what is already zero: whole pages are dropped from the
 * memfd (MADV_REMOVE; they read back as zeros and take no memory), only the partial pages at
 * the ends are written. A kernel's .bss is hundreds of KiB to MiBs that a memset would fault
 * in and keep resident in every VM. Where the mapping is not shared memory (a private file
 * mapping), MADV_REMOVE fails and memset does it all.
 */
static void zero_guest_range(guint8 *dst, guint64 len)
{
    guintptr start = ((guintptr)dst + MVM_PAGE_SIZE - 1) & ~(guintptr)(MVM_PAGE_SIZE - 1);
    guintptr end = ((guintptr)dst + len) & ~(guintptr)(MVM_PAGE_SIZE - 1);

    if (end > start && madvise((void *)start, end - start, MADV_REMOVE) == 0) {
        memset(dst, 0, start - (guintptr)dst);
        memset((void *)end, 0, (guintptr)dst + len - end);
        return;
    }
    memset(dst, 0, len);
}

static gboolean load_segment(MvmMemory *mem, int fd, const Elf64_Phdr *ph, GError **error)
{
    guint8 *dst = mvm_memory_get_ptr(mem, ph->p_paddr, ph->p_memsz); /* checked before */

    if (!mvm_boot_pread(fd, dst, ph->p_filesz, ph->p_offset, "kernel", error))
        return FALSE;
    zero_guest_range(dst + ph->p_filesz, ph->p_memsz - ph->p_filesz); /* .bss */
    return TRUE;
}

/* Finds XEN_ELFNOTE_PHYS32_ENTRY in one PT_NOTE segment; 0 when it is not there. */
static gboolean find_pvh_note(int fd, const Elf64_Phdr *ph, guint64 file_size, guint64 *entry,
                              GError **error)
{
    if (ph->p_offset > file_size || ph->p_filesz > file_size - ph->p_offset ||
        ph->p_filesz > ELF_MAX_NOTE_SIZE)
        return mvm_set_invalid(error, "a kernel PT_NOTE segment lies beyond the file");

    gsize size = ph->p_filesz;
    g_autofree guint8 *notes = g_malloc(size + 1);
    if (!mvm_boot_pread(fd, notes, size, ph->p_offset, "kernel", error))
        return FALSE;
    /* Elf64_Nhdr records: namesz, descsz, type, then name and desc, each padded to 4 bytes. */
    for (gsize off = 0; size - off >= sizeof(Elf64_Nhdr);) {
        Elf64_Nhdr nh;
        memcpy(&nh, notes + off, sizeof(nh));
        guint64 name_off = off + sizeof(nh);
        guint64 desc_off = name_off + (((guint64)nh.n_namesz + 3) & ~3ULL);
        guint64 next = desc_off + (((guint64)nh.n_descsz + 3) & ~3ULL);
        if (desc_off > size || nh.n_descsz > size - desc_off)
            break; /* a malformed tail: no PVH note in it */
        if (nh.n_namesz == 4 && memcmp(notes + name_off, "Xen", 4) == 0 &&
            nh.n_type == MVM_XEN_ELFNOTE_PHYS32_ENTRY && nh.n_descsz >= 4) {
            /* A 32-bit address; x86-64 Linux emits it as an 8-byte _ASM_PTR. */
            guint64 value = 0;
            memcpy(&value, notes + desc_off, nh.n_descsz >= 8 ? 8 : 4);
            *entry = GUINT64_FROM_LE(value);
            return TRUE;
        }
        off = MIN(next, size);
    }
    return TRUE;
}

/* An address is "loaded" when it lies in a PT_LOAD segment's physical range. */
static gboolean in_segments(const Elf64_Phdr *phdrs, guint n, guint64 addr)
{
    for (guint i = 0; i < n; i++)
        if (phdrs[i].p_type == PT_LOAD && addr >= phdrs[i].p_paddr &&
            addr - phdrs[i].p_paddr < phdrs[i].p_memsz)
            return TRUE;
    return FALSE;
}

/* e_entry is physical in Linux's vmlinux (0x1000000); a virtual one is translated. */
static gboolean physical_entry(const Elf64_Phdr *phdrs, guint n, guint64 e_entry, guint64 *entry,
                               GError **error)
{
    if (in_segments(phdrs, n, e_entry)) {
        *entry = e_entry;
        return TRUE;
    }
    for (guint i = 0; i < n; i++) {
        const Elf64_Phdr *ph = &phdrs[i];
        if (ph->p_type == PT_LOAD && e_entry >= ph->p_vaddr &&
            e_entry - ph->p_vaddr < ph->p_memsz) {
            *entry = e_entry - ph->p_vaddr + ph->p_paddr;
            return TRUE;
        }
    }
    return mvm_set_invalid(
        error, "the kernel entry point 0x%" G_GINT64_MODIFIER "x is in no loaded segment", e_entry);
}

static gboolean check_segments(MvmMemory *mem, int fd, const Elf64_Phdr *phdrs, guint n,
                               guint64 file_size, MvmKernelImage *image, GError **error)
{
    image->load_start = G_MAXUINT64;
    image->load_end = 0;
    for (guint i = 0; i < n; i++) {
        const Elf64_Phdr *ph = &phdrs[i];
        if (ph->p_type == PT_NOTE && image->pvh_entry == 0 &&
            !find_pvh_note(fd, ph, file_size, &image->pvh_entry, error))
            return FALSE;
        if (ph->p_type != PT_LOAD || ph->p_memsz == 0)
            continue;
        if (!check_load_segment(mem, ph, i, file_size, error))
            return FALSE;
        image->load_start = MIN(image->load_start, ph->p_paddr);
        image->load_end = MAX(image->load_end, ph->p_paddr + ph->p_memsz);
    }
    if (image->load_end == 0)
        return mvm_set_invalid(error, "the kernel ELF file has no loadable segment");
    if (image->pvh_entry != 0 &&
        (image->pvh_entry > G_MAXUINT32 || !in_segments(phdrs, n, image->pvh_entry)))
        return mvm_set_invalid(
            error, "the kernel's PVH entry 0x%" G_GINT64_MODIFIER "x is in no loaded segment",
            image->pvh_entry);
    return TRUE;
}

gboolean mvm_boot_load_elf(MvmMemory *mem, int fd, guint64 file_size, MvmKernelImage *image,
                           GError **error)
{
    Elf64_Ehdr eh;

    if (file_size < sizeof(eh))
        return mvm_set_invalid(
            error, "the kernel ELF header is truncated (%" G_GUINT64_FORMAT " bytes)", file_size);
    if (!mvm_boot_pread(fd, &eh, sizeof(eh), 0, "kernel", error) ||
        !check_ehdr(&eh, file_size, error))
        return FALSE;

    g_autofree Elf64_Phdr *phdrs = g_new(Elf64_Phdr, eh.e_phnum);
    if (!mvm_boot_pread(fd, phdrs, eh.e_phnum * sizeof(Elf64_Phdr), eh.e_phoff, "kernel", error))
        return FALSE;
    /* Everything is checked before anything is written. */
    if (!check_segments(mem, fd, phdrs, eh.e_phnum, file_size, image, error) ||
        !physical_entry(phdrs, eh.e_phnum, eh.e_entry, &image->entry64, error))
        return FALSE;
    for (guint i = 0; i < eh.e_phnum; i++)
        if (phdrs[i].p_type == PT_LOAD && phdrs[i].p_memsz != 0 &&
            !load_segment(mem, fd, &phdrs[i], error))
            return FALSE;

    image->format = MVM_KERNEL_FORMAT_ELF;
    image->reserved_end = image->load_end;
    /* What x86-64 kernels put in initrd_addr_max (arch/x86/boot/header.S): 2 GiB - 1. */
    image->initrd_addr_max = 0x7fffffff;
    image->cmdline_max = MVM_CMDLINE_MAX - 1;
    return TRUE;
}
