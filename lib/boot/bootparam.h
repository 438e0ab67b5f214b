/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The x86 zero page (struct boot_params) and the real-mode setup header, laid
 * out from the offsets in Documentation/arch/x86/boot.rst ("The real-mode
 * kernel header") and Documentation/arch/x86/zero-page.rst. Only the fields a
 * boot loader writes have names; the rest is padding of the right size.
 */
#pragma once

#include <assert.h>
#include <stddef.h>

#include <glib.h>

/* boot.rst "Details of header fields". */
#define MVM_SETUP_HEADER_OFFSET            0x1f1
#define MVM_SETUP_BOOT_FLAG                0xaa55
#define MVM_SETUP_MAGIC                    0x53726448 /* "HdrS" */
#define MVM_SETUP_LOADED_HIGH              0x01       /* loadflags bit 0 */
#define MVM_SETUP_KEEP_SEGMENTS            0x40
#define MVM_SETUP_CAN_USE_HEAP             0x80
#define MVM_SETUP_XLF_KERNEL_64            0x0001 /* xloadflags bit 0: 64-bit entry at +0x200 */
#define MVM_SETUP_TYPE_OF_LOADER_UNDEFINED 0xff
#define MVM_SETUP_ENTRY64_OFFSET           0x200 /* boot.rst "64-bit Boot Protocol" */

typedef struct __attribute__((packed)) {
    guint8 setup_sects;
    guint16 root_flags;
    guint32 syssize;
    guint16 ram_size;
    guint16 vid_mode;
    guint16 root_dev;
    guint16 boot_flag;
    guint16 jump;
    guint32 header;
    guint16 version;
    guint32 realmode_swtch;
    guint16 start_sys_seg;
    guint16 kernel_version;
    guint8 type_of_loader;
    guint8 loadflags;
    guint16 setup_move_size;
    guint32 code32_start;
    guint32 ramdisk_image;
    guint32 ramdisk_size;
    guint32 bootsect_kludge;
    guint16 heap_end_ptr;
    guint8 ext_loader_ver;
    guint8 ext_loader_type;
    guint32 cmd_line_ptr;
    guint32 initrd_addr_max;
    guint32 kernel_alignment;
    guint8 relocatable_kernel;
    guint8 min_alignment;
    guint16 xloadflags;
    guint32 cmdline_size;
    guint32 hardware_subarch;
    guint64 hardware_subarch_data;
    guint32 payload_offset;
    guint32 payload_length;
    guint64 setup_data;
    guint64 pref_address;
    guint32 init_size;
    guint32 handover_offset;
    guint32 kernel_info_offset;
} MvmSetupHeader;

/* zero-page.rst: e820_table entries, E820_MAX_ENTRIES_ZEROPAGE = 128. */
typedef struct __attribute__((packed)) {
    guint64 addr;
    guint64 size;
    guint32 type;
} MvmBootE820Entry;

#define MVM_E820_MAX_ENTRIES_ZEROPAGE 128
#define MVM_E820_RAM                  1
#define MVM_E820_RESERVED             2

typedef struct __attribute__((packed)) {
    guint8 screen_info[0x40];       /* 0x000 */
    guint8 apm_bios_info[0x14];     /* 0x040 */
    guint8 _pad2[4];                /* 0x054 */
    guint64 tboot_addr;             /* 0x058 */
    guint8 ist_info[0x10];          /* 0x060 */
    guint64 acpi_rsdp_addr;         /* 0x070, protocol 2.14+ */
    guint8 _pad3[8];                /* 0x078 */
    guint8 hd0_info[16];            /* 0x080 */
    guint8 hd1_info[16];            /* 0x090 */
    guint8 sys_desc_table[16];      /* 0x0a0 */
    guint8 olpc_ofw_header[16];     /* 0x0b0 */
    guint32 ext_ramdisk_image;      /* 0x0c0 */
    guint32 ext_ramdisk_size;       /* 0x0c4 */
    guint32 ext_cmd_line_ptr;       /* 0x0c8 */
    guint8 _pad4[112];              /* 0x0cc */
    guint32 cc_blob_address;        /* 0x13c */
    guint8 edid_info[0x80];         /* 0x140 */
    guint8 efi_info[0x20];          /* 0x1c0 */
    guint32 alt_mem_k;              /* 0x1e0 */
    guint32 scratch;                /* 0x1e4 */
    guint8 e820_entries;            /* 0x1e8 */
    guint8 eddbuf_entries;          /* 0x1e9 */
    guint8 edd_mbr_sig_buf_entries; /* 0x1ea */
    guint8 kbd_status;              /* 0x1eb */
    guint8 secure_boot;             /* 0x1ec */
    guint8 _pad5[2];                /* 0x1ed */
    guint8 sentinel;                /* 0x1ef */
    guint8 _pad6[1];                /* 0x1f0 */
    MvmSetupHeader hdr;             /* 0x1f1 */
    guint8 _pad7[0x290 - 0x1f1 - sizeof(MvmSetupHeader)];
    guint32 edd_mbr_sig_buffer[16];                             /* 0x290 */
    MvmBootE820Entry e820_table[MVM_E820_MAX_ENTRIES_ZEROPAGE]; /* 0x2d0 */
    guint8 _pad8[48];                                           /* 0xcd0 */
    guint8 eddbuf[6 * 82];                                      /* 0xd00 */
    guint8 _pad9[276];                                          /* 0xeec */
} MvmBootParams;

/* The header's place in the zero page is its place in the image (boot.rst). */
#define MVM_BP_HDR_OFFSET(field) (offsetof(MvmBootParams, hdr) + offsetof(MvmSetupHeader, field))

static_assert(sizeof(MvmBootParams) == 4096, "boot_params is one page");
static_assert(offsetof(MvmBootParams, acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr");
static_assert(offsetof(MvmBootParams, ext_ramdisk_image) == 0x0c0, "ext_ramdisk_image");
static_assert(offsetof(MvmBootParams, ext_ramdisk_size) == 0x0c4, "ext_ramdisk_size");
static_assert(offsetof(MvmBootParams, ext_cmd_line_ptr) == 0x0c8, "ext_cmd_line_ptr");
static_assert(offsetof(MvmBootParams, cc_blob_address) == 0x13c, "cc_blob_address");
static_assert(offsetof(MvmBootParams, alt_mem_k) == 0x1e0, "alt_mem_k");
static_assert(offsetof(MvmBootParams, e820_entries) == 0x1e8, "e820_entries");
static_assert(offsetof(MvmBootParams, sentinel) == 0x1ef, "sentinel");
static_assert(offsetof(MvmBootParams, hdr) == MVM_SETUP_HEADER_OFFSET, "hdr");
static_assert(offsetof(MvmBootParams, edd_mbr_sig_buffer) == 0x290, "edd_mbr_sig_buffer");
static_assert(offsetof(MvmBootParams, e820_table) == 0x2d0, "e820_table");
static_assert(offsetof(MvmBootParams, eddbuf) == 0xd00, "eddbuf");
static_assert(MVM_BP_HDR_OFFSET(boot_flag) == 0x1fe, "boot_flag");
static_assert(MVM_BP_HDR_OFFSET(jump) == 0x200, "jump");
static_assert(MVM_BP_HDR_OFFSET(header) == 0x202, "header");
static_assert(MVM_BP_HDR_OFFSET(version) == 0x206, "version");
static_assert(MVM_BP_HDR_OFFSET(type_of_loader) == 0x210, "type_of_loader");
static_assert(MVM_BP_HDR_OFFSET(loadflags) == 0x211, "loadflags");
static_assert(MVM_BP_HDR_OFFSET(code32_start) == 0x214, "code32_start");
static_assert(MVM_BP_HDR_OFFSET(ramdisk_image) == 0x218, "ramdisk_image");
static_assert(MVM_BP_HDR_OFFSET(ramdisk_size) == 0x21c, "ramdisk_size");
static_assert(MVM_BP_HDR_OFFSET(heap_end_ptr) == 0x224, "heap_end_ptr");
static_assert(MVM_BP_HDR_OFFSET(cmd_line_ptr) == 0x228, "cmd_line_ptr");
static_assert(MVM_BP_HDR_OFFSET(initrd_addr_max) == 0x22c, "initrd_addr_max");
static_assert(MVM_BP_HDR_OFFSET(kernel_alignment) == 0x230, "kernel_alignment");
static_assert(MVM_BP_HDR_OFFSET(relocatable_kernel) == 0x234, "relocatable_kernel");
static_assert(MVM_BP_HDR_OFFSET(xloadflags) == 0x236, "xloadflags");
static_assert(MVM_BP_HDR_OFFSET(cmdline_size) == 0x238, "cmdline_size");
static_assert(MVM_BP_HDR_OFFSET(payload_offset) == 0x248, "payload_offset");
static_assert(MVM_BP_HDR_OFFSET(setup_data) == 0x250, "setup_data");
static_assert(MVM_BP_HDR_OFFSET(pref_address) == 0x258, "pref_address");
static_assert(MVM_BP_HDR_OFFSET(init_size) == 0x260, "init_size");
static_assert(MVM_BP_HDR_OFFSET(kernel_info_offset) == 0x268, "kernel_info_offset");

/*
 * PVH start of day (xen/include/public/arch-x86/hvm/start_info.h, version 1),
 * handed over in %ebx by the PVH entry.
 */
#define MVM_HVM_START_MAGIC_VALUE    0x336ec578
#define MVM_XEN_ELFNOTE_PHYS32_ENTRY 18

typedef struct __attribute__((packed)) {
    guint32 magic;
    guint32 version;
    guint32 flags;
    guint32 nr_modules;
    guint64 modlist_paddr;
    guint64 cmdline_paddr;
    guint64 rsdp_paddr;
    guint64 memmap_paddr;
    guint32 memmap_entries;
    guint32 reserved;
} MvmHvmStartInfo;

typedef struct __attribute__((packed)) {
    guint64 paddr;
    guint64 size;
    guint64 cmdline_paddr;
    guint64 reserved;
} MvmHvmModlistEntry;

/* Types are the e820 ones (XEN_HVM_MEMMAP_TYPE_RAM = 1, _RESERVED = 2). */
typedef struct __attribute__((packed)) {
    guint64 addr;
    guint64 size;
    guint32 type;
    guint32 reserved;
} MvmHvmMemmapEntry;

static_assert(sizeof(MvmHvmStartInfo) == 56, "hvm_start_info v1");
static_assert(offsetof(MvmHvmStartInfo, rsdp_paddr) == 32, "rsdp_paddr");
static_assert(offsetof(MvmHvmStartInfo, memmap_paddr) == 40, "memmap_paddr");
static_assert(sizeof(MvmHvmModlistEntry) == 32, "hvm_modlist_entry");
static_assert(sizeof(MvmHvmMemmapEntry) == 24, "hvm_memmap_table_entry");
