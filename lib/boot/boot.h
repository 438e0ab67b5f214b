/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Linux x86-64 boot: kernel loading (ELF vmlinux or bzImage), initrd,
 * command line, boot_params with the e820 map, GDT and identity page tables,
 * and the firmware tables (ACPI, MP table) a kernel uses to find its CPUs and
 * devices. Everything read from an image is untrusted and bounds-checked.
 */
#pragma once

#include <glib.h>
#include <linux/kvm.h>

#include "memory.h"

G_BEGIN_DECLS

typedef enum {
    MVM_BOOT_ENTRY_LINUX64, /* 64-bit long mode at entry, %rsi = boot_params */
    MVM_BOOT_ENTRY_PVH,     /* 32-bit flat protected mode, %ebx = hvm_start_info */
} MvmBootEntryKind;

typedef enum {
    MVM_KERNEL_FORMAT_ELF,
    MVM_KERNEL_FORMAT_BZIMAGE,
} MvmKernelFormat;

/* A virtio-mmio device to announce in the DSDT (LNRO0005) and on the command line. */
typedef struct {
    guint64 base;
    guint64 size;
    guint32 gsi;
} MvmBootMmioDevice;

typedef struct {
    int kernel_fd;       /* required; read with pread, position untouched */
    int initrd_fd;       /* -1 for none */
    const char *cmdline; /* NULL for empty; the loader may append device entries */
    guint n_vcpus;
    gboolean prefer_pvh;               /* enter through the PVH note when the ELF has one */
    gboolean announce_mmio_on_cmdline; /* add virtio_mmio.device=... for each device */
    const MvmBootMmioDevice *mmio_devices;
    guint n_mmio_devices;
} MvmBootConfig;

typedef struct {
    MvmKernelFormat format;
    MvmBootEntryKind entry_kind;
    guint64 entry;           /* guest-physical entry point (rip) */
    guint64 boot_params_gpa; /* %rsi for LINUX64, %rbx (start_info) for PVH */
    guint64 kernel_start;    /* guest-physical range the kernel was loaded to */
    guint64 kernel_end;
    guint64 initrd_start; /* 0 when there is no initrd */
    guint64 initrd_size;
    guint16 protocol_version; /* bzImage boot protocol version, 0 for ELF */
    char *cmdline;            /* the command line as written into the guest */
} MvmBootInfo;

void mvm_boot_info_clear(MvmBootInfo *info);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MvmBootInfo, mvm_boot_info_clear)

/*
 * Loads the kernel and initrd into @mem and writes every boot structure:
 * cmdline, boot_params (zero page) with e820, GDT, page tables, ACPI, MP table.
 * Errors are in MVM_ERROR (microvm.h): MVM_ERROR_INVALID_ARGUMENT for a bad
 * image or one that does not fit in RAM (the message says what is wrong).
 */
gboolean mvm_boot_load_linux(MvmMemory *mem, const MvmBootConfig *config, MvmBootInfo *info,
                             GError **error);

/* Pieces, also used by unit tests. */
gboolean mvm_boot_write_gdt_and_page_tables(MvmMemory *mem, GError **error);
gboolean mvm_boot_write_acpi(MvmMemory *mem, guint n_vcpus, const MvmBootMmioDevice *devices,
                             guint n_devices, GError **error);
/* Fails for more than MVM_BOOT_MPTABLE_MAX_VCPUS (8-bit APIC IDs, 0xff is broadcast). */
gboolean mvm_boot_write_mptable(MvmMemory *mem, guint n_vcpus, GError **error);
#define MVM_BOOT_MPTABLE_MAX_VCPUS 254

/*
 * The GDT written at MVM_GDT_ADDR (4 entries, up to MVM_IDT_ADDR):
 *   0 null
 *   1 selector 0x08: flat 32-bit code, for the PVH entry (xen pvh.pandoc: "cs: 32-bit
 *     read/execute code segment, base 0, limit 0xFFFFFFFF; the selector value is unspecified")
 *   2 selector 0x10 (MVM_BOOT_CS): flat 64-bit code, __BOOT_CS of boot.rst's 64-bit protocol
 *   3 selector 0x18 (MVM_BOOT_DS): flat read/write data (D/B=1, usable in both modes)
 * Out-of-range indexes return 0 (a null descriptor).
 */
#define MVM_BOOT_GDT_ENTRIES 4
#define MVM_BOOT_CS32        0x08
guint64 mvm_boot_gdt_entry(guint index);

/*
 * Fills @seg (every field) from the 8-byte descriptor @entry: base, limit scaled by the
 * granularity bit, type, s, dpl, present, avl, l, db, g, and unusable = !present.
 */
void mvm_boot_segment_from_gdt(guint64 entry, guint16 selector, struct kvm_segment *seg);

G_END_DECLS
