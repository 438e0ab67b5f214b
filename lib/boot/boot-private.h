/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internals shared by the files of lib/boot/. */
#pragma once

#include <glib.h>

#include "boot.h"
#include "bootparam.h"
#include "error-private.h"

G_BEGIN_DECLS

/* What a kernel loader found and placed; linux.c turns it into boot_params or start_info. */
typedef struct {
    MvmKernelFormat format;
    guint64 entry64;    /* 64-bit entry (rip) */
    guint64 pvh_entry;  /* XEN_ELFNOTE_PHYS32_ENTRY, 0 when absent */
    guint64 load_start; /* range the image was copied to */
    guint64 load_end;
    guint64 reserved_end;    /* end of the memory the kernel needs before it reads e820 */
    guint64 initrd_addr_max; /* highest address the initrd may occupy */
    guint64 cmdline_max;     /* longest command line, without the NUL */
    guint16 protocol;        /* bzImage only */
    guint8 setup_header[0x290 - MVM_SETUP_HEADER_OFFSET]; /* bzImage: raw header to copy */
    gsize setup_header_len;
} MvmKernelImage;

/* fstat() size of a regular file. */
gboolean mvm_boot_file_size(int fd, const char *what, guint64 *size, GError **error);
/* pread() of exactly @len bytes at @offset; a short file is INVALID_ARGUMENT. */
gboolean mvm_boot_pread(int fd, void *buf, gsize len, guint64 offset, const char *what,
                        GError **error);
/* Reads @len bytes of @fd at @offset into guest RAM at @gpa (checked). */
gboolean mvm_boot_pread_to_guest(MvmMemory *mem, int fd, guint64 gpa, guint64 len, guint64 offset,
                                 const char *what, GError **error);

/* Image loaders (elf.c, linux.c); @file_size is the fstat size. */
gboolean mvm_boot_load_elf(MvmMemory *mem, int fd, guint64 file_size, MvmKernelImage *image,
                           GError **error);
gboolean mvm_boot_load_bzimage(MvmMemory *mem, int fd, guint64 file_size, MvmKernelImage *image,
                               GError **error);

/*
 * The guest's memory map: RAM below the EBDA, reserved EBDA..1 MiB (MP table,
 * RSDP, ACPI tables), RAM 1 MiB..low end, RAM 4 GiB..end. Returns the count.
 */
#define MVM_BOOT_E820_MAX 4
guint mvm_boot_build_e820(const MvmMemory *mem, MvmBootE820Entry out[MVM_BOOT_E820_MAX]);

/* The byte that makes the 8-bit sum of @data (with that byte) zero. */
guint8 mvm_boot_checksum(const guint8 *data, gsize len);

/*
 * The IOAPIC's ID in the MADT and the MP table: after the CPUs' APIC IDs (MP spec 1.4 §4.3.3
 * wants unique APIC IDs); 0 when the CPUs use every 8-bit ID (ACPI allows sharing).
 */
static inline guint8 mvm_boot_ioapic_id(guint n_vcpus)
{
    return n_vcpus <= MVM_BOOT_MPTABLE_MAX_VCPUS ? (guint8)n_vcpus : 0;
}

/* IOAPIC pins, as KVM's in-kernel IOAPIC has (KVM_IOAPIC_NUM_PINS). */
#define MVM_BOOT_IOAPIC_PINS 24

G_END_DECLS
