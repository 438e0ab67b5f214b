/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=boot: what the Linux 64-bit boot protocol promised at entry, and the firmware tables.
 * Args: expect_mem_mib (checks the e820 RAM total), expect_cpus (checks the MADT),
 *       expect_mptable=1 (fail when there is no MP table).
 */
#include "guest.h"

/* struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h) */
#define BP_E820_ENTRIES  0x1e8
#define BP_CMD_LINE_PTR  0x228
#define BP_E820_TABLE    0x2d0
#define E820_MAX_ENTRIES 128
#define E820_RAM         1

struct e820_entry {
    u64 addr;
    u64 size;
    u32 type;
} __attribute__((packed));

static bool check_entry_state(void)
{
    bool ok = true;

    gprintf("ENTRY cs=0x%x ds=0x%x es=0x%x ss=0x%x rflags=0x%lx boot_params=0x%lx\n", entry_cs,
            entry_ds, entry_es, entry_ss, entry_rflags, (u64)boot_params_ptr);
    ok &= check_u64("entry-cs", MVM_BOOT_CS, entry_cs);
    ok &= check_u64("entry-ds", MVM_BOOT_DS, entry_ds);
    ok &= check_u64("entry-ss", MVM_BOOT_DS, entry_ss);
    ok &= check_u64("entry-interrupts-off", 0, entry_rflags & 0x200);
    return ok;
}

static bool check_cmdline(void)
{
    u32 ptr;
    memcpy(&ptr, boot_params_ptr + BP_CMD_LINE_PTR, 4);
    gprintf("CMDLINE %s\n", cmdline_raw());
    if (!ptr) {
        fail("cmdline: expected a cmd_line_ptr got 0");
        return false;
    }
    /* We got here through "mode=boot", or no mode at all. */
    if (arg_present("mode") && strcmp(arg_str("mode", ""), "boot")) {
        fail("cmdline: expected mode=boot got mode=%s", arg_str("mode", ""));
        return false;
    }
    u64 len = 0;
    while (len < MVM_CMDLINE_MAX && ((const char *)(u64)ptr)[len])
        len++;
    gprintf("CMDLINE-ADDR 0x%x length %lu\n", ptr, len);
    pass("cmdline");
    return true;
}

static u64 overlap(u64 a, u64 a_end, u64 b, u64 b_end)
{
    u64 lo = a > b ? a : b, hi = a_end < b_end ? a_end : b_end;
    return hi > lo ? hi - lo : 0;
}

static bool check_e820(void)
{
    u8 n = boot_params_ptr[BP_E820_ENTRIES];
    const struct e820_entry *e = (const struct e820_entry *)(boot_params_ptr + BP_E820_TABLE);
    u64 ram = 0, prev_end = 0;
    bool ok = true;

    gprintf("E820-COUNT %u\n", n);
    if (n == 0 || n > E820_MAX_ENTRIES) {
        fail("e820: expected 1..128 entries got %u", n);
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        gprintf("E820 0x%lx 0x%lx %u\n", e[i].addr, e[i].size, e[i].type);
        if (e[i].size == 0 || e[i].addr + e[i].size < e[i].addr) {
            fail("e820: entry %u has a bad size", i);
            ok = false;
        }
        if (i && e[i].addr < prev_end) {
            fail("e820: entry %u overlaps or is out of order", i);
            ok = false;
        }
        prev_end = e[i].addr + e[i].size;
        if (e[i].type != E820_RAM)
            continue;
        ram += e[i].size;
        if (overlap(e[i].addr, prev_end, MVM_EBDA_START, MVM_HIMEM_START)) {
            fail("e820: RAM entry %u overlaps the 0x9fc00-0x100000 hole", i);
            ok = false;
        }
        if (overlap(e[i].addr, prev_end, MVM_MMIO_GAP_START, MVM_MMIO_GAP_END)) {
            fail("e820: RAM entry %u overlaps the 3-4 GiB MMIO gap", i);
            ok = false;
        }
    }
    if (!arg_present("expect_mem_mib")) {
        gprintf("E820-RAM 0x%lx\n", ram);
    } else {
        u64 mem = arg_u64("expect_mem_mib", 0) * MVM_MIB;
        u64 low = mem < MVM_MMIO_GAP_START ? mem : MVM_MMIO_GAP_START;
        u64 expected = MVM_EBDA_START + (low > MVM_HIMEM_START ? low - MVM_HIMEM_START : 0) +
                       (mem > MVM_MMIO_GAP_START ? mem - MVM_MMIO_GAP_START : 0);
        u64 diff = ram > expected ? ram - expected : expected - ram;
        if (diff > MVM_MIB) {
            fail("e820-ram: expected 0x%lx got 0x%lx", expected, ram);
            ok = false;
        } else {
            gprintf("E820-RAM 0x%lx expected 0x%lx\n", ram, expected);
        }
    }
    if (ok)
        pass("e820");
    return ok;
}

static bool check_acpi(void)
{
    struct acpi_info a;

    if (!acpi_scan(&a)) {
        fail("acpi: expected an RSDP in 0xe0000-0xfffff got none");
        return false;
    }
    gprintf("ACPI rsdp 0x%lx revision %u %s%s\n", a.rsdp, a.rsdp_revision,
            a.used_xsdt ? "xsdt" : "rsdt", a.root_ok ? "" : " (bad)");
    if (!a.rsdp_ok) {
        fail("acpi: RSDP extended checksum is wrong");
        return false;
    }
    if (!a.root_ok) {
        fail("acpi: %s missing or its checksum is wrong", a.used_xsdt ? "XSDT" : "RSDT");
        return false;
    }
    if (!a.madt || !a.madt_ok) {
        fail("acpi: expected a valid MADT got %s", a.madt ? "a bad checksum" : "none");
        return false;
    }
    serial_lock();
    gprintf_nolock("MADT 0x%lx lapic 0x%x cpus %u ids", a.madt, a.lapic_addr, a.n_lapics);
    for (u32 i = 0; i < a.n_lapics && i < ARRAY_SIZE(a.lapic_ids); i++)
        gprintf_nolock(" %u", a.lapic_ids[i]);
    gprintf_nolock("\n");
    serial_unlock();
    if (arg_present("expect_cpus") &&
        !check_u64("madt-cpus", arg_u64("expect_cpus", 0), a.n_lapics))
        return false;
    pass("acpi");
    return true;
}

static bool check_mptable(void)
{
    u64 mp = mptable_find();

    if (mp)
        gprintf("MPTABLE found 0x%lx\n", mp);
    else
        gprintf("MPTABLE not found\n");
    if (arg_u64("expect_mptable", 0) && !mp) {
        fail("mptable: expected one got none");
        return false;
    }
    return true;
}

bool mode_boot(void)
{
    bool ok = check_entry_state();

    if (!boot_params_ptr) {
        fail("boot-params: expected an address in rsi got 0");
        return false;
    }
    ok &= check_cmdline();
    ok &= check_e820();
    ok &= check_acpi();
    ok &= check_mptable();
    return ok;
}
