/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The CPU structures of the 64-bit entry (boot.rst "64-bit Boot Protocol": flat
 * __BOOT_CS/__BOOT_DS, paging on with an identity map of the kernel, zero page
 * and command line), the e820 map and small helpers.
 */
#include <string.h>

#include "boot-private.h"
#include "layout.h"
#include "microvm.h"

/* Descriptor access/flags words: bits 8-15 of the word are P, DPL, S, type; bits 4-7 G, D/B, L,
 * AVL. */
#define GDT_FLAGS_CODE32 0xc09b /* G, D, P, S, type 0xb: execute/read, accessed */
#define GDT_FLAGS_CODE64 0xa09b /* G, L, P, S, type 0xb */
#define GDT_FLAGS_DATA   0xc093 /* G, B, P, S, type 0x3: read/write, accessed */

/* Intel SDM vol. 3 §3.4.5 "Segment Descriptors". */
static guint64 gdt_descriptor(guint16 flags, guint32 base, guint32 limit)
{
    return ((guint64)(base & 0xff000000u) << 32) | ((guint64)(flags & 0xf0ffu) << 40) |
           ((guint64)(limit & 0xf0000u) << 32) | ((guint64)(base & 0x00ffffffu) << 16) |
           (limit & 0xffffu);
}

guint64 mvm_boot_gdt_entry(guint index)
{
    switch (index) {
    case 1:
        return gdt_descriptor(GDT_FLAGS_CODE32, 0, 0xfffff);
    case 2:
        return gdt_descriptor(GDT_FLAGS_CODE64, 0, 0xfffff);
    case 3:
        return gdt_descriptor(GDT_FLAGS_DATA, 0, 0xfffff);
    default:
        return 0;
    }
}

void mvm_boot_segment_from_gdt(guint64 entry, guint16 selector, struct kvm_segment *seg)
{
    guint32 limit = (guint32)((entry & 0xffff) | ((entry >> 32) & 0xf0000));

    memset(seg, 0, sizeof(*seg));
    seg->base = ((entry >> 16) & 0xffffff) | ((entry >> 32) & 0xff000000);
    seg->g = (entry >> 55) & 1;
    /* With G set the limit counts 4 KiB pages: the low 12 bits of the byte limit are ones. */
    seg->limit = seg->g ? (limit << 12) | 0xfff : limit;
    seg->selector = selector;
    seg->type = (entry >> 40) & 0xf;
    seg->s = (entry >> 44) & 1;
    seg->dpl = (entry >> 45) & 3;
    seg->present = (entry >> 47) & 1;
    seg->avl = (entry >> 52) & 1;
    seg->l = (entry >> 53) & 1;
    seg->db = (entry >> 54) & 1;
    seg->unusable = !seg->present;
}

/* x86 paging entry bits (SDM vol. 3 §4.5). */
#define PTE_PRESENT 0x01ULL
#define PTE_WRITE   0x02ULL
#define PTE_PWT     0x08ULL
#define PTE_PCD     0x10ULL
#define PTE_PS      0x80ULL /* 2 MiB page in a page-directory entry */

static guint64 *table_page(MvmMemory *mem, guint64 gpa, GError **error)
{
    guint64 *page = mvm_memory_get_ptr(mem, gpa, MVM_PAGE_SIZE);

    if (page == NULL) {
        mvm_set_invalid(error, "no guest RAM for the page table at 0x%" G_GINT64_MODIFIER "x", gpa);
        return NULL;
    }
    memset(page, 0, MVM_PAGE_SIZE);
    return page;
}

/* PML4[0] → PDPT[0..3] → four PDs of 512 × 2 MiB: 0–4 GiB identity mapped. */
static gboolean write_page_tables(MvmMemory *mem, GError **error)
{
    guint64 *pml4 = table_page(mem, MVM_PML4_ADDR, error);
    guint64 *pdpt = pml4 ? table_page(mem, MVM_PDPT_ADDR, error) : NULL;

    if (pdpt == NULL)
        return FALSE;
    pml4[0] = MVM_PDPT_ADDR | PTE_PRESENT | PTE_WRITE;
    for (guint i = 0; i < 4; i++) {
        guint64 pd_gpa = MVM_PD_ADDR + i * MVM_PAGE_SIZE;
        guint64 *pd = table_page(mem, pd_gpa, error);
        if (pd == NULL)
            return FALSE;
        pdpt[i] = pd_gpa | PTE_PRESENT | PTE_WRITE;
        for (guint j = 0; j < 512; j++) {
            guint64 addr = i * MVM_GIB + j * 2 * MVM_MIB;
            /* The MMIO gap (LAPIC, IOAPIC, virtio) is mapped uncached. */
            guint64 cache = addr >= MVM_MMIO_GAP_START ? PTE_PCD | PTE_PWT : 0;
            pd[j] = addr | PTE_PRESENT | PTE_WRITE | PTE_PS | cache;
        }
    }
    return TRUE;
}

gboolean mvm_boot_write_gdt_and_page_tables(MvmMemory *mem, GError **error)
{
    guint64 gdt[MVM_BOOT_GDT_ENTRIES];
    guint64 idt = 0;

    static_assert(MVM_GDT_ADDR + sizeof(gdt) <= MVM_IDT_ADDR, "GDT runs into the IDT");
    for (guint i = 0; i < MVM_BOOT_GDT_ENTRIES; i++)
        gdt[i] = GUINT64_TO_LE(mvm_boot_gdt_entry(i));
    /* An empty IDT: a fault before the kernel loads its own one is a triple fault. */
    if (!mvm_memory_write(mem, MVM_GDT_ADDR, gdt, sizeof(gdt), error) ||
        !mvm_memory_write(mem, MVM_IDT_ADDR, &idt, sizeof(idt), error))
        return FALSE;
    return write_page_tables(mem, error);
}

guint mvm_boot_build_e820(const MvmMemory *mem, MvmBootE820Entry out[MVM_BOOT_E820_MAX])
{
    const MvmMemoryRegion *low = mvm_memory_get_region(mem, 0);
    guint n = 0;

    /* mvm_memory_new() guarantees at least 2 MiB, so low->size > MVM_HIMEM_START. */
    out[n++] = (MvmBootE820Entry){0, MVM_EBDA_START, MVM_E820_RAM};
    out[n++] =
        (MvmBootE820Entry){MVM_EBDA_START, MVM_HIMEM_START - MVM_EBDA_START, MVM_E820_RESERVED};
    out[n++] = (MvmBootE820Entry){MVM_HIMEM_START, low->size - MVM_HIMEM_START, MVM_E820_RAM};
    if (mvm_memory_get_n_regions(mem) > 1) {
        const MvmMemoryRegion *high = mvm_memory_get_region(mem, 1);
        out[n++] = (MvmBootE820Entry){high->gpa, high->size, MVM_E820_RAM};
    }
    return n;
}

guint8 mvm_boot_checksum(const guint8 *data, gsize len)
{
    guint8 sum = 0;

    for (gsize i = 0; i < len; i++)
        sum += data[i];
    return (guint8)(0x100 - sum);
}
