/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest-physical memory map every microvmd guest sees.
 *
 * Low memory holds the boot structures a Linux 64-bit entry expects (Linux
 * boot protocol, Documentation/arch/x86/boot.rst, "64-bit boot protocol").
 * RAM above 3 GiB continues at 4 GiB so that the 3–4 GiB window stays free
 * for the LAPIC, IOAPIC and the devices' MMIO ranges.
 */
#pragma once

#include <glib.h>

#define MVM_PAGE_SIZE G_GUINT64_CONSTANT(0x1000)
#define MVM_MIB       (G_GUINT64_CONSTANT(1) << 20)
#define MVM_GIB       (G_GUINT64_CONSTANT(1) << 30)

/* Boot structures in the first MiB. */
#define MVM_GDT_ADDR G_GUINT64_CONSTANT(0x500)
#define MVM_IDT_ADDR G_GUINT64_CONSTANT(0x520)
/* rsp at entry; grows down below boot_params */
#define MVM_BOOT_STACK_TOP G_GUINT64_CONSTANT(0x8ff0)
/* struct boot_params, handed over in %rsi */
#define MVM_ZERO_PAGE_ADDR G_GUINT64_CONSTANT(0x7000)
#define MVM_PML4_ADDR      G_GUINT64_CONSTANT(0x9000)
#define MVM_PDPT_ADDR      G_GUINT64_CONSTANT(0xa000)
/* four page directories: identity map of 0–4 GiB, 2 MiB pages */
#define MVM_PD_ADDR             G_GUINT64_CONSTANT(0xb000)
#define MVM_PVH_START_INFO_ADDR G_GUINT64_CONSTANT(0x6000)
#define MVM_CMDLINE_ADDR        G_GUINT64_CONSTANT(0x20000)
#define MVM_CMDLINE_MAX                                                                            \
    G_GUINT64_CONSTANT(0x10000) /* 64 KiB, more than COMMAND_LINE_SIZE of any x86 kernel */
#define MVM_MPTABLE_ADDR                                                                           \
    G_GUINT64_CONSTANT(0x9fc00) /* last KiB of base memory: the MP spec's EBDA-less search area */
#define MVM_EBDA_START                                                                             \
    G_GUINT64_CONSTANT(0x9fc00) /* e820: RAM below, reserved from here to 1 MiB */
#define MVM_ACPI_RSDP_ADDR                                                                         \
    G_GUINT64_CONSTANT(0xe0000) /* in the BIOS area the ACPI spec tells the OS to scan */
#define MVM_ACPI_TABLES_ADDR G_GUINT64_CONSTANT(0xe1000)
#define MVM_ACPI_TABLES_END  G_GUINT64_CONSTANT(0xff000)
/*
 * The VM generation ID (microvm.h): 16 bytes at the start of the last page below 1 MiB, which
 * the e820 map reserves (from MVM_EBDA_START), so the guest never takes it for RAM.
 */
#define MVM_VMGENID_ADDR G_GUINT64_CONSTANT(0xff000)
#define MVM_HIMEM_START  G_GUINT64_CONSTANT(0x100000) /* where protected-mode kernels are loaded */

/* The 32-bit hole: RAM stops here and resumes at 4 GiB. */
#define MVM_MMIO_GAP_START (G_GUINT64_CONSTANT(3) * MVM_GIB)
#define MVM_MMIO_GAP_END   (G_GUINT64_CONSTANT(4) * MVM_GIB)

/* Device windows inside the gap. */
#define MVM_VIRTIO_MMIO_BASE        G_GUINT64_CONSTANT(0xd0000000)
#define MVM_VIRTIO_MMIO_SIZE        G_GUINT64_CONSTANT(0x1000) /* one page per device */
#define MVM_VIRTIO_MMIO_MAX_DEVICES 32
#define MVM_VIRTIO_IRQ_BASE         5 /* GSIs 5..23 on the IOAPIC */
#define MVM_VIRTIO_IRQ_LAST         23
/* Each device has its own edge-triggered GSI, so the GSIs bound the count below 32 slots. */
#define MVM_VIRTIO_MAX_IRQ_DEVICES (MVM_VIRTIO_IRQ_LAST - MVM_VIRTIO_IRQ_BASE + 1)
#define MVM_TESTDEV_MMIO_ADDR      G_GUINT64_CONSTANT(0xfeb00000)
#define MVM_TESTDEV_MMIO_SIZE      G_GUINT64_CONSTANT(0x1000)
#define MVM_IOAPIC_ADDR            G_GUINT64_CONSTANT(0xfec00000)
#define MVM_LAPIC_ADDR             G_GUINT64_CONSTANT(0xfee00000)

/* KVM_SET_TSS_ADDR needs three pages, KVM_SET_IDENTITY_MAP_ADDR one, just below 4 GiB. */
#define MVM_KVM_IDENTITY_MAP_ADDR G_GUINT64_CONSTANT(0xfeffc000)
#define MVM_KVM_TSS_ADDR          G_GUINT64_CONSTANT(0xfeffd000)

/*
 * The Generic Event Device's interrupt, which announces a new generation ID. GSI 3 is free: 0 is
 * the PIT, 1 the i8042, 4 COM1, 5-23 virtio-mmio; 2 is left alone (the PICs' cascade).
 */
#define MVM_VMGENID_GSI 3

/* Legacy I/O ports. */
#define MVM_SERIAL_COM1_PORT   0x3f8
#define MVM_SERIAL_COM1_IRQ    4
#define MVM_I8042_DATA_PORT    0x60
#define MVM_I8042_COMMAND_PORT 0x64
/* Test guests only (config "debug-exit"): a write of value V ends the VM with exit code V. */
#define MVM_DEBUG_EXIT_PORT 0xf4
/* Test guests only: a 32-bit scratch register; reads return the bitwise NOT of the last write. */
#define MVM_TESTDEV_PORT 0xf0
/* Test guests only: a write records a timestamped marker (first instruction, etc.). */
#define MVM_TESTDEV_MARKER_PORT 0xf8
/*
 * Test guests in test builds only (meson -Dtest_hooks=true): a 1-byte write of 1 makes the
 * vCPU thread, of 2 the VM's I/O thread, make a system call its sandbox forbids.
 */
#define MVM_TESTDEV_SANDBOX_PORT 0xfc

/* GDT selectors of the Linux 64-bit boot protocol (__BOOT_CS, __BOOT_DS). */
#define MVM_BOOT_CS 0x10
#define MVM_BOOT_DS 0x18
