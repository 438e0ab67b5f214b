/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Finding the firmware tables a kernel would use: the ACPI RSDP (ACPI 6.5 §5.2.5.1: on a 16-byte
 * boundary in 0xe0000-0xfffff), the XSDT (or RSDT), the MADT and the DSDT (through the FADT);
 * and the MP floating pointer (MP spec 1.4 §4: the first KiB of the EBDA / last KiB of base
 * memory, or 0xf0000-0xfffff).
 */
#include "guest.h"

static u8 sum_bytes(const u8 *p, u64 n)
{
    u8 s = 0;
    while (n--)
        s = (u8)(s + *p++);
    return s;
}

static u32 get32(const u8 *p)
{
    u32 v;
    memcpy(&v, p, 4);
    return v;
}

static u64 get64(const u8 *p)
{
    u64 v;
    memcpy(&v, p, 8);
    return v;
}

/* A system description table header (36 bytes) with a sane length and a valid checksum. */
static bool sdt_ok(const u8 *t)
{
    u32 len = get32(t + 4);
    return len >= 36 && len < 0x100000 && sum_bytes(t, len) == 0;
}

static void scan_madt(struct acpi_info *info, const u8 *madt)
{
    u32 len = get32(madt + 4);

    info->lapic_addr = get32(madt + 36);
    for (u32 off = 44; off + 2 <= len;) {
        u8 type = madt[off], elen = madt[off + 1];
        if (elen < 2 || off + elen > len)
            break;
        u32 flags = 0, id = 0;
        bool cpu = false;
        if (type == 0 && elen >= 8) { /* Processor Local APIC */
            id = madt[off + 3];
            flags = get32(madt + off + 4);
            cpu = true;
        } else if (type == 9 && elen >= 16) { /* Processor Local x2APIC */
            id = get32(madt + off + 4);
            flags = get32(madt + off + 8);
            cpu = true;
        }
        /* Enabled, or Online Capable (ACPI 6.3+): either way a CPU the OS may bring up. */
        if (cpu && (flags & 3)) {
            if (info->n_lapics < ARRAY_SIZE(info->lapic_ids))
                info->lapic_ids[info->n_lapics] = id;
            info->n_lapics++;
        }
        off += elen;
    }
}

/* ACPI 6.5 §5.2.9: X_DSDT (offset 140, 8 bytes) wins over DSDT (offset 40, 4 bytes) when set. */
static void scan_fadt(struct acpi_info *info, const u8 *fadt)
{
    u32 len = get32(fadt + 4);
    u64 dsdt = len >= 148 ? get64(fadt + 140) : 0;

    if (!dsdt && len >= 44)
        dsdt = get32(fadt + 40);
    if (!dsdt || dsdt >= MVM_MMIO_GAP_START || memcmp((const void *)dsdt, "DSDT", 4))
        return;
    info->dsdt = dsdt;
    info->dsdt_ok = sdt_ok((const u8 *)dsdt);
}

bool acpi_scan(struct acpi_info *info)
{
    memset(info, 0, sizeof(*info));

    const u8 *rsdp = NULL;
    for (u64 a = 0xe0000; a < 0x100000; a += 16) {
        if (!memcmp((const void *)a, "RSD PTR ", 8) && sum_bytes((const u8 *)a, 20) == 0) {
            rsdp = (const u8 *)a;
            break;
        }
    }
    if (!rsdp)
        return false;

    info->rsdp = (u64)rsdp;
    info->rsdp_revision = rsdp[15];
    info->rsdp_ok = true;
    u64 xsdt = 0;
    if (info->rsdp_revision >= 2) {
        u32 len = get32(rsdp + 20);
        info->rsdp_ok = len >= 36 && len < 0x1000 && sum_bytes(rsdp, len) == 0;
        xsdt = get64(rsdp + 24);
    }

    const u8 *root = xsdt ? (const u8 *)xsdt : (const u8 *)(u64)get32(rsdp + 16);
    unsigned entry_size = xsdt ? 8 : 4;
    info->used_xsdt = xsdt != 0;
    if (!root || (u64)root >= MVM_MMIO_GAP_START)
        return true;
    if (memcmp(root, xsdt ? "XSDT" : "RSDT", 4) || !sdt_ok(root))
        return true;
    info->root_ok = true;

    u32 len = get32(root + 4);
    for (u32 off = 36; off + entry_size <= len; off += entry_size) {
        u64 t = entry_size == 8 ? get64(root + off) : get32(root + off);
        if (!t || t >= MVM_MMIO_GAP_START)
            continue;
        if (!info->madt && !memcmp((const void *)t, "APIC", 4)) {
            info->madt = t;
            info->madt_ok = sdt_ok((const u8 *)t);
            if (info->madt_ok)
                scan_madt(info, (const u8 *)t);
        } else if (!info->fadt && !memcmp((const void *)t, "FACP", 4)) {
            info->fadt = t;
            if (sdt_ok((const u8 *)t))
                scan_fadt(info, (const u8 *)t);
        }
    }
    return true;
}

static u64 mp_scan(u64 start, u64 end)
{
    for (u64 a = start; a + 16 <= end; a += 16) {
        const u8 *p = (const u8 *)a;
        if (!memcmp(p, "_MP_", 4) && p[8] >= 1 && sum_bytes(p, 16u * p[8]) == 0)
            return a;
    }
    return 0;
}

u64 mptable_find(void)
{
    u64 a = mp_scan(MVM_EBDA_START, 0xa0000);
    return a ? a : mp_scan(0xf0000, 0x100000);
}
