/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU smoke tests only: turns the PVH start_info into the boot_params microvmd would write
 * (cmd_line_ptr, e820 with the 0x9fc00-0x100000 hole that microvmd's layout has).
 */
#include "guest.h"

#define ZERO_PAGE ((u8 *)MVM_ZERO_PAGE_ADDR)

struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;
    u32 memmap_entries;
    u32 reserved;
};

struct hvm_memmap_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
};

void pvh_make_boot_params(const struct hvm_start_info *si);

static unsigned add_e820(unsigned n, u64 addr, u64 end, u32 type)
{
    if (end <= addr || n >= 128)
        return n;
    u8 *e = ZERO_PAGE + 0x2d0 + 20 * n;
    u64 size = end - addr;
    memcpy(e, &addr, 8);
    memcpy(e + 8, &size, 8);
    memcpy(e + 16, &type, 4);
    return n + 1;
}

void pvh_make_boot_params(const struct hvm_start_info *si)
{
    unsigned n = 0;
    u32 cmdline = (u32)si->cmdline_paddr;

    memset(ZERO_PAGE, 0, 4096);
    memcpy(ZERO_PAGE + 0x228, &cmdline, 4);
    const struct hvm_memmap_entry *m = (const void *)si->memmap_paddr;
    for (u32 i = 0; si->version >= 1 && i < si->memmap_entries; i++) {
        u64 a = m[i].addr, end = m[i].addr + m[i].size;
        if (m[i].type == 1 && a < MVM_HIMEM_START && end > MVM_EBDA_START) {
            n = add_e820(n, a, MVM_EBDA_START, 1);
            n = add_e820(n, MVM_EBDA_START, MVM_HIMEM_START, 2);
            n = add_e820(n, MVM_HIMEM_START, end, 1);
        } else {
            n = add_e820(n, a, end, m[i].type);
        }
    }
    ZERO_PAGE[0x1e8] = (u8)n;
}
