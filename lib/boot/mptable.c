/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Intel MultiProcessor Specification 1.4 table, for kernels booted with
 * acpi=off: the floating pointer in the last KiB of base memory (§4.1, where
 * Linux's smp_scan_config() looks at 639 KiB) followed by the configuration
 * table (§4.2-4.3). Interrupts as in the MADT (see acpi.c): ISA IRQ n and
 * every other IOAPIC pin n on pin n, conforming polarity/trigger.
 */
#include <string.h>

#include "boot-private.h"
#include "layout.h"
#include "microvm.h"

#define MP_SPEC_REV              4 /* 1.4 */
#define MP_FLOATING_SIZE         16
#define MP_HEADER_SIZE           44
#define MP_ENTRY_PROCESSOR       0
#define MP_ENTRY_BUS             1
#define MP_ENTRY_IOAPIC          2
#define MP_ENTRY_IO_INTERRUPT    3
#define MP_ENTRY_LOCAL_INTERRUPT 4
#define MP_INT                   0
#define MP_NMI                   1
#define MP_EXTINT                3
#define MP_CPU_ENABLED           0x01
#define MP_CPU_BSP               0x02
#define MP_APIC_VERSION          0x14 /* integrated local APIC */
#define MP_IOAPIC_VERSION        0x11 /* what KVM's IOAPIC reports */
#define MP_ISA_BUS_ID            0
#define MP_CPU_SIGNATURE         0x600                   /* family 6 */
#define MP_CPU_FEATURES          ((1u << 0) | (1u << 9)) /* FPU, APIC */

static void append_le(GByteArray *t, guint64 v, guint bytes)
{
    for (guint i = 0; i < bytes; i++) {
        guint8 b = (guint8)(v >> (8 * i));
        g_byte_array_append(t, &b, 1);
    }
}

/* §4.3.1 Processor Entries. */
static void mp_processor(GByteArray *t, guint id)
{
    append_le(t, MP_ENTRY_PROCESSOR, 1);
    append_le(t, id, 1);
    append_le(t, MP_APIC_VERSION, 1);
    append_le(t, MP_CPU_ENABLED | (id == 0 ? MP_CPU_BSP : 0), 1);
    append_le(t, MP_CPU_SIGNATURE, 4);
    append_le(t, MP_CPU_FEATURES, 4);
    append_le(t, 0, 8);
}

/* §4.3.4 I/O Interrupt Assignment and §4.3.5 Local Interrupt Assignment (same layout). */
static void mp_interrupt(GByteArray *t, guint8 entry, guint8 type, guint8 src_irq, guint8 dst_id,
                         guint8 dst_pin)
{
    append_le(t, entry, 1);
    append_le(t, type, 1);
    append_le(t, 0, 2); /* polarity and trigger conform to the bus: ISA is edge, active high */
    append_le(t, MP_ISA_BUS_ID, 1);
    append_le(t, src_irq, 1);
    append_le(t, dst_id, 1);
    append_le(t, dst_pin, 1);
}

static guint build_entries(GByteArray *t, guint n_vcpus)
{
    guint8 ioapic_id = mvm_boot_ioapic_id(n_vcpus);

    for (guint i = 0; i < n_vcpus; i++)
        mp_processor(t, i);
    /* §4.3.2 Bus Entry. */
    append_le(t, MP_ENTRY_BUS, 1);
    append_le(t, MP_ISA_BUS_ID, 1);
    g_byte_array_append(t, (const guint8 *)"ISA   ", 6);
    /* §4.3.3 I/O APIC Entry. */
    append_le(t, MP_ENTRY_IOAPIC, 1);
    append_le(t, ioapic_id, 1);
    append_le(t, MP_IOAPIC_VERSION, 1);
    append_le(t, 1, 1); /* enabled */
    append_le(t, MVM_IOAPIC_ADDR, 4);
    for (guint pin = 0; pin < MVM_BOOT_IOAPIC_PINS; pin++)
        mp_interrupt(t, MP_ENTRY_IO_INTERRUPT, MP_INT, pin, ioapic_id, pin);
    /* Virtual wire: the 8259 on LINT0, NMI on LINT1 of every local APIC (0xff). */
    mp_interrupt(t, MP_ENTRY_LOCAL_INTERRUPT, MP_EXTINT, 0, 0xff, 0);
    mp_interrupt(t, MP_ENTRY_LOCAL_INTERRUPT, MP_NMI, 0, 0xff, 1);
    return n_vcpus + 2 + MVM_BOOT_IOAPIC_PINS + 2;
}

static GByteArray *build_config_table(guint n_vcpus)
{
    GByteArray *t = g_byte_array_new();
    guint8 header[MP_HEADER_SIZE] = {0};

    /* §4.2 MP Configuration Table Header. */
    memcpy(header, "PCMP", 4);
    header[6] = MP_SPEC_REV;
    memcpy(header + 8, "MICROVMD", 8);
    memcpy(header + 16, "MICROVMD    ", 12);
    g_byte_array_append(t, header, sizeof(header));
    guint n_entries = build_entries(t, n_vcpus);
    t->data[4] = t->len & 0xff; /* base table length */
    t->data[5] = t->len >> 8;
    t->data[34] = n_entries & 0xff;
    t->data[35] = n_entries >> 8;
    for (guint i = 0; i < 4; i++)
        t->data[36 + i] = (guint8)(MVM_LAPIC_ADDR >> (8 * i));
    t->data[7] = mvm_boot_checksum(t->data, t->len);
    return t;
}

gboolean mvm_boot_write_mptable(MvmMemory *mem, guint n_vcpus, GError **error)
{
    guint64 config_gpa = MVM_MPTABLE_ADDR + MP_FLOATING_SIZE;
    guint8 fp[MP_FLOATING_SIZE] = {0};

    if (n_vcpus == 0 || n_vcpus > MVM_BOOT_MPTABLE_MAX_VCPUS)
        return mvm_set_invalid(error, "the MP table describes 1 to %u vCPUs, not %u",
                               MVM_BOOT_MPTABLE_MAX_VCPUS, n_vcpus);
    g_autoptr(GByteArray) table = build_config_table(n_vcpus);
    /* It may run past 640 KiB: e820 reserves everything up to 1 MiB, the RSDP comes later. */
    if (config_gpa + table->len > MVM_ACPI_RSDP_ADDR)
        return mvm_set_invalid(error, "the MP table does not fit below the RSDP");

    /* §4.1 MP Floating Pointer Structure; feature bytes 0: a table, virtual wire mode. */
    memcpy(fp, "_MP_", 4);
    for (guint i = 0; i < 4; i++)
        fp[4 + i] = (guint8)(config_gpa >> (8 * i));
    fp[8] = 1; /* length in 16-byte units */
    fp[9] = MP_SPEC_REV;
    fp[10] = mvm_boot_checksum(fp, sizeof(fp));
    return mvm_memory_write(mem, MVM_MPTABLE_ADDR, fp, sizeof(fp), error) &&
           mvm_memory_write(mem, config_gpa, table->data, table->len, error);
}
