/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ACPI tables for a hardware-reduced platform (ACPI 6.4 §4.1): RSDP (rev 2) →
 * XSDT → FADT (→ DSDT) and MADT. The DSDT describes the virtio-mmio devices
 * (LNRO0005, as drivers/virtio/virtio_mmio.c matches), COM1, the i8042, the VM
 * generation ID with the Generic Event Device that announces its changes, and \_S5.
 *
 * Interrupts: KVM's default GSI routing sends GSI n to IOAPIC pin n (and to
 * the PICs for n < 16), and the in-kernel PIT raises GSI 0. So there is no
 * IRQ0 → GSI2 override as on real hardware: ISA IRQs map 1:1 (Linux fills the
 * identity mappings itself, mp_config_acpi_legacy_irqs()). virtio-mmio GSIs
 * are edge-triggered, active-high: the VMM pulses them through irqfd. A level
 * pin would need KVM's resample irqfd, or an interrupt arriving while the pin
 * waits for its EOI would be lost (the IOAPIC drops it while Remote IRR is set).
 */
#include <string.h>

#include "acpi.h"
#include "aml.h"
#include "boot-private.h"
#include "layout.h"
#include "microvm.h"

#define ACPI_OEM_ID          "MCRVMD"
#define ACPI_OEM_TABLE_ID    "MICROVMD"
#define ACPI_CREATOR_ID      "MVMD"
#define ACPI_HEADER_SIZE     36
#define ACPI_CHECKSUM_OFFSET 9

/* §5.2.6 System Description Table Header. */
static GByteArray *table_new(const char *signature, guint8 revision)
{
    GByteArray *t = g_byte_array_sized_new(256);
    guint8 header[ACPI_HEADER_SIZE] = {0};

    memcpy(header, signature, 4);
    header[8] = revision;
    memcpy(header + 10, ACPI_OEM_ID, 6);
    memcpy(header + 16, ACPI_OEM_TABLE_ID, 8);
    header[24] = 1; /* OEM revision */
    memcpy(header + 28, ACPI_CREATOR_ID, 4);
    header[32] = 1; /* creator revision */
    g_byte_array_append(t, header, sizeof(header));
    return t;
}

static void put_le(GByteArray *t, gsize offset, guint64 v, guint bytes)
{
    for (guint i = 0; i < bytes; i++)
        t->data[offset + i] = (guint8)(v >> (8 * i));
}

static void append_le(GByteArray *t, guint64 v, guint bytes)
{
    gsize offset = t->len;

    g_byte_array_set_size(t, t->len + bytes);
    put_le(t, offset, v, bytes);
}

/* Sets Length and Checksum (§5.2.6) and copies the table into guest RAM at @gpa. */
static gboolean table_finish(MvmMemory *mem, GByteArray *t, guint64 gpa, GError **error)
{
    put_le(t, 4, t->len, 4);
    t->data[ACPI_CHECKSUM_OFFSET] = 0;
    t->data[ACPI_CHECKSUM_OFFSET] = mvm_boot_checksum(t->data, t->len);
    if (gpa + t->len > MVM_ACPI_TABLES_END)
        return mvm_set_invalid(error, "the ACPI tables do not fit below 1 MiB");
    return mvm_memory_write(mem, gpa, t->data, t->len, error);
}

static gboolean check_devices(const MvmBootMmioDevice *devices, guint n, GError **error)
{
    for (guint i = 0; i < n; i++) {
        const MvmBootMmioDevice *d = &devices[i];
        if (d->size == 0 || d->base > G_MAXUINT32 || d->size > (1ULL << 32) - d->base)
            return mvm_set_invalid(error,
                                   "virtio-mmio device %u at 0x%" G_GINT64_MODIFIER
                                   "x+0x%" G_GINT64_MODIFIER "x is not below 4 GiB",
                                   i, d->base, d->size);
        if (d->gsi >= MVM_BOOT_IOAPIC_PINS)
            return mvm_set_invalid(error,
                                   "virtio-mmio device %u has GSI %u; the IOAPIC has %u "
                                   "pins",
                                   i, d->gsi, MVM_BOOT_IOAPIC_PINS);
    }
    return TRUE;
}

/* Name(_CRS, ResourceTemplate() { @res }) into a device's @body. */
static void name_crs(GByteArray *body, const GByteArray *res)
{
    g_autoptr(GByteArray) obj = g_byte_array_new();

    mvm_aml_resource_template(obj, res);
    mvm_aml_name(body, "_CRS", obj);
}

/* Device(Vnnn) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed, Interrupt edge high } } */
static void dsdt_virtio_device(GByteArray *scope, guint index, const MvmBootMmioDevice *d)
{
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GByteArray) obj = g_byte_array_new();
    g_autoptr(GByteArray) res = g_byte_array_new();
    char name[8];

    mvm_aml_string(obj, "LNRO0005");
    mvm_aml_name(body, "_HID", obj);
    g_byte_array_set_size(obj, 0);
    mvm_aml_integer(obj, index);
    mvm_aml_name(body, "_UID", obj);
    mvm_aml_res_memory32_fixed(res, (guint32)d->base, (guint32)d->size, TRUE);
    mvm_aml_res_interrupt(res, d->gsi, TRUE, FALSE, FALSE);
    name_crs(body, res);
    g_snprintf(name, sizeof(name), "V%03u", index % 1000);
    mvm_aml_device(scope, name, body);
}

/* Device(COM1) { _HID EISAID("PNP0501"), _UID 1, _CRS { IO(0x3f8, 8), IRQNoFlags(4) } } */
static void dsdt_com1(GByteArray *scope)
{
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GByteArray) obj = g_byte_array_new();
    g_autoptr(GByteArray) res = g_byte_array_new();

    mvm_aml_eisa_id(obj, "PNP0501");
    mvm_aml_name(body, "_HID", obj);
    g_byte_array_set_size(obj, 0);
    mvm_aml_integer(obj, 1);
    mvm_aml_name(body, "_UID", obj);
    mvm_aml_res_io(res, MVM_SERIAL_COM1_PORT, 8);
    mvm_aml_res_irq_noflags(res, MVM_SERIAL_COM1_IRQ);
    name_crs(body, res);
    mvm_aml_device(scope, "COM1", body);
}

/*
 * Device(KBD) { _HID EISAID("PNP0303"), _CRS { IO(0x60, 1), IO(0x64, 1), IRQNoFlags(1) } }.
 * A hardware-reduced ACPI guest has no legacy PIC (Linux: null_legacy_pic), so ISA IRQ 1
 * exists for the i8042 driver only when the DSDT names it; without this node Linux's
 * i8042 probe fails with -EINVAL and Ctrl-Alt-Del never reaches the guest.
 */
static void dsdt_i8042(GByteArray *scope)
{
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GByteArray) obj = g_byte_array_new();
    g_autoptr(GByteArray) res = g_byte_array_new();

    mvm_aml_eisa_id(obj, "PNP0303");
    mvm_aml_name(body, "_HID", obj);
    mvm_aml_res_io(res, MVM_I8042_DATA_PORT, 1);
    mvm_aml_res_io(res, MVM_I8042_COMMAND_PORT, 1);
    mvm_aml_res_irq_noflags(res, 1);
    name_crs(body, res);
    mvm_aml_device(scope, "KBD_", body);
}

/* Name(@name, "@value"), for a device's identification objects. */
static void name_string(GByteArray *body, const char *name, const char *value)
{
    g_autoptr(GByteArray) obj = g_byte_array_new();

    mvm_aml_string(obj, value);
    mvm_aml_name(body, name, obj);
}

/*
 * Device(VGEN) { _HID "MVMD0001" (an ACPI ID: vendor, then four hex digits), _CID and _DDN
 *                "VM_Gen_Counter",
 *                Method(ADDR) { Return(Package { low 32 bits, high 32 bits }) } }
 * as Microsoft's "Virtual Machine Generation ID" paper names them: the guest finds the device
 * by _CID (ACPICA upper-cases it; Linux's vmgenid driver matches "VM_GEN_COUNTER") and reads
 * the 16-byte ID at ADDR's address, which the e820 map reserves.
 */
static void dsdt_vmgenid(GByteArray *scope)
{
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GByteArray) elements = g_byte_array_new();
    g_autoptr(GByteArray) package = g_byte_array_new();
    g_autoptr(GByteArray) method = g_byte_array_new();

    name_string(body, "_HID", "MVMD0001");
    name_string(body, "_CID", "VM_Gen_Counter");
    name_string(body, "_DDN", "VM_Gen_Counter");
    mvm_aml_integer(elements, MVM_VMGENID_ADDR & 0xffffffff);
    mvm_aml_integer(elements, MVM_VMGENID_ADDR >> 32);
    mvm_aml_package(package, 2, elements);
    mvm_aml_return(method, package);
    mvm_aml_method(body, "ADDR", 0, method);
    mvm_aml_device(scope, "VGEN", body);
}

/*
 * Device(GED_) { _HID "ACPI0013", _CRS { Interrupt edge high { MVM_VMGENID_GSI } },
 *                Method(_EVT, 1) { Notify(VGEN, 0x80) } }
 * A hardware-reduced platform has no GPE blocks: its events come through the Generic Event
 * Device (ACPI 6.4 §5.6.9), whose driver runs _EVT with the GSI that fired. There is one, so
 * _EVT does not look at it. 0x80 is the notification the generation ID paper defines.
 */
static void dsdt_ged(GByteArray *scope)
{
    g_autoptr(GByteArray) body = g_byte_array_new();
    g_autoptr(GByteArray) res = g_byte_array_new();
    g_autoptr(GByteArray) method = g_byte_array_new();

    name_string(body, "_HID", "ACPI0013");
    mvm_aml_res_interrupt(res, MVM_VMGENID_GSI, TRUE, FALSE, FALSE);
    name_crs(body, res);
    mvm_aml_notify(method, "VGEN", 0x80);
    mvm_aml_method(body, "_EVT", 1, method);
    mvm_aml_device(scope, "GED_", body);
}

/* §7.4.2 \_S5: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }; SLP_TYPa goes to SLEEP_CONTROL.
 */
static void dsdt_s5(GByteArray *t)
{
    g_autoptr(GByteArray) elements = g_byte_array_new();
    g_autoptr(GByteArray) obj = g_byte_array_new();

    mvm_aml_integer(elements, MVM_ACPI_S5_SLP_TYP);
    for (guint i = 0; i < 3; i++)
        mvm_aml_integer(elements, 0);
    mvm_aml_package(obj, 4, elements);
    mvm_aml_name(t, "\\_S5_", obj);
}

static GByteArray *build_dsdt(const MvmBootMmioDevice *devices, guint n)
{
    GByteArray *t = table_new("DSDT", 2); /* revision 2: 64-bit integers */
    g_autoptr(GByteArray) sb = g_byte_array_new();

    dsdt_com1(sb);
    dsdt_i8042(sb);
    dsdt_vmgenid(sb);
    dsdt_ged(sb);
    for (guint i = 0; i < n; i++)
        dsdt_virtio_device(sb, i, &devices[i]);
    mvm_aml_scope(t, "\\_SB_", sb);
    dsdt_s5(t);
    return t;
}

/* §5.2.3.2 Generic Address Structure: a byte in system I/O space. */
static void put_gas_io8(GByteArray *t, gsize offset, guint16 port)
{
    t->data[offset] = 1;     /* address space: system I/O */
    t->data[offset + 1] = 8; /* register bit width */
    t->data[offset + 2] = 0; /* bit offset */
    t->data[offset + 3] = 1; /* access size: byte */
    put_le(t, offset + 4, port, 8);
}

/* §5.2.9 FADT, revision 6 (276 bytes); field offsets from Table 5.9. */
#define FADT_SIZE                           276
#define FADT_FLAG_PWR_BUTTON                (1u << 4) /* no fixed-feature power button */
#define FADT_FLAG_SLP_BUTTON                (1u << 5) /* no fixed-feature sleep button */
#define FADT_FLAG_RESET_REG_SUP             (1u << 10)
#define FADT_FLAG_HW_REDUCED_ACPI           (1u << 20)
#define IAPC_BOOT_ARCH_8042                 (1u << 1) /* §5.2.9.3: our i8042 resets and shuts down */
#define IAPC_BOOT_ARCH_VGA_NOT_PRESENT      (1u << 2)
#define IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT (1u << 5) /* there is no RTC at 0x70 */

static GByteArray *build_fadt(guint64 dsdt_gpa)
{
    GByteArray *t = table_new("FACP", 6);

    g_byte_array_set_size(t, FADT_SIZE);
    memset(t->data + ACPI_HEADER_SIZE, 0, FADT_SIZE - ACPI_HEADER_SIZE);
    put_le(t, 40, dsdt_gpa, 4); /* DSDT */
    put_le(t, 109,
           IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_VGA_NOT_PRESENT |
               IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT,
           2);
    put_le(t, 112,
           FADT_FLAG_HW_REDUCED_ACPI | FADT_FLAG_RESET_REG_SUP | FADT_FLAG_PWR_BUTTON |
               FADT_FLAG_SLP_BUTTON,
           4);
    put_gas_io8(t, 116, MVM_ACPI_RESET_PORT); /* RESET_REG */
    t->data[128] = MVM_ACPI_RESET_VALUE;
    t->data[131] = 4;                         /* FADT minor version: ACPI 6.4 */
    put_le(t, 140, dsdt_gpa, 8);              /* X_DSDT */
    put_gas_io8(t, 244, MVM_ACPI_SLEEP_PORT); /* SLEEP_CONTROL_REG */
    put_gas_io8(t, 256, MVM_ACPI_SLEEP_PORT); /* SLEEP_STATUS_REG */
    return t;
}

/* §5.2.12 MADT, revision 5. */
#define MADT_PCAT_COMPAT 1u /* KVM's in-kernel irqchip has the two 8259s */
#define MADT_LAPIC       0
#define MADT_IOAPIC      1
#define MADT_LAPIC_NMI   4
#define MADT_X2APIC      9
#define MADT_X2APIC_NMI  10
#define MADT_ENABLED     1u
#define MADT_LINT1       1

static void madt_cpu(GByteArray *t, guint id)
{
    if (id < 0xff) { /* §5.2.12.2 Processor Local APIC: 8-bit IDs, 0xff is broadcast */
        append_le(t, MADT_LAPIC, 1);
        append_le(t, 8, 1);
        append_le(t, id, 1); /* ACPI processor UID */
        append_le(t, id, 1); /* APIC ID = KVM vCPU id */
        append_le(t, MADT_ENABLED, 4);
    } else { /* §5.2.12.12 Processor Local x2APIC */
        append_le(t, MADT_X2APIC, 1);
        append_le(t, 16, 1);
        append_le(t, 0, 2);
        append_le(t, id, 4);
        append_le(t, MADT_ENABLED, 4);
        append_le(t, id, 4);
    }
}

static GByteArray *build_madt(guint n_vcpus)
{
    GByteArray *t = table_new("APIC", 5);

    append_le(t, MVM_LAPIC_ADDR, 4);
    append_le(t, MADT_PCAT_COMPAT, 4);
    for (guint i = 0; i < n_vcpus; i++)
        madt_cpu(t, i);
    /* §5.2.12.3 I/O APIC: all 24 pins from GSI 0. */
    append_le(t, MADT_IOAPIC, 1);
    append_le(t, 12, 1);
    append_le(t, mvm_boot_ioapic_id(n_vcpus), 1);
    append_le(t, 0, 1);
    append_le(t, MVM_IOAPIC_ADDR, 4);
    append_le(t, 0, 4);
    /* §5.2.12.7 Local APIC NMI: LINT1 of every processor (UID 0xff), flags "conforming". */
    append_le(t, MADT_LAPIC_NMI, 1);
    append_le(t, 6, 1);
    append_le(t, 0xff, 1);
    append_le(t, 0, 2);
    append_le(t, MADT_LINT1, 1);
    if (n_vcpus > 0xff) { /* §5.2.12.13 Local x2APIC NMI, for the x2APIC entries */
        append_le(t, MADT_X2APIC_NMI, 1);
        append_le(t, 12, 1);
        append_le(t, 0, 2);
        append_le(t, 0xffffffff, 4);
        append_le(t, MADT_LINT1, 1);
        append_le(t, 0, 3);
    }
    return t;
}

/* §5.2.5.3 RSDP, revision 2: no RSDT, the XSDT only. */
#define RSDP_SIZE    36
#define RSDP_V1_SIZE 20

static gboolean write_rsdp(MvmMemory *mem, guint64 xsdt_gpa, GError **error)
{
    guint8 rsdp[RSDP_SIZE] = {0};

    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, ACPI_OEM_ID, 6);
    rsdp[15] = 2; /* revision */
    rsdp[20] = RSDP_SIZE;
    for (guint i = 0; i < 8; i++)
        rsdp[24 + i] = (guint8)(xsdt_gpa >> (8 * i));
    rsdp[8] = mvm_boot_checksum(rsdp, RSDP_V1_SIZE);
    rsdp[32] = mvm_boot_checksum(rsdp, RSDP_SIZE);
    return mvm_memory_write(mem, MVM_ACPI_RSDP_ADDR, rsdp, sizeof(rsdp), error);
}

static guint64 align8(guint64 v)
{
    return (v + 7) & ~7ULL;
}

gboolean mvm_boot_write_acpi(MvmMemory *mem, guint n_vcpus, const MvmBootMmioDevice *devices,
                             guint n_devices, GError **error)
{
    g_return_val_if_fail(mem != NULL, FALSE);
    g_return_val_if_fail(n_devices == 0 || devices != NULL, FALSE);

    if (n_vcpus == 0)
        return mvm_set_invalid(error, "a VM needs at least one vCPU");
    if (!check_devices(devices, n_devices, error))
        return FALSE;

    g_autoptr(GByteArray) dsdt = build_dsdt(devices, n_devices);
    guint64 dsdt_gpa = MVM_ACPI_TABLES_ADDR;
    guint64 fadt_gpa = align8(dsdt_gpa + dsdt->len);
    g_autoptr(GByteArray) fadt = build_fadt(dsdt_gpa);
    guint64 madt_gpa = align8(fadt_gpa + fadt->len);
    g_autoptr(GByteArray) madt = build_madt(n_vcpus);
    guint64 xsdt_gpa = align8(madt_gpa + madt->len);
    g_autoptr(GByteArray) xsdt = table_new("XSDT", 1);

    append_le(xsdt, fadt_gpa, 8);
    append_le(xsdt, madt_gpa, 8);
    if (!table_finish(mem, dsdt, dsdt_gpa, error) || !table_finish(mem, fadt, fadt_gpa, error) ||
        !table_finish(mem, madt, madt_gpa, error) || !table_finish(mem, xsdt, xsdt_gpa, error))
        return FALSE;
    return write_rsdp(mem, xsdt_gpa, error);
}
