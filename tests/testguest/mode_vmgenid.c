/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=vmgenid: the VM generation ID as a guest finds it (Microsoft's "Virtual Machine
 * Generation ID" paper; Linux drivers/virt/vmgenid.c and drivers/acpi/evged.c). The DSDT's
 * device VGEN (_CID "VM_Gen_Counter") returns the ID's address from its method ADDR, as
 * Package { low 32 bits, high 32 bits }; the Generic Event Device GED_ (_HID "ACPI0013") names
 * the GSI that announces a change in its _CRS, and its _EVT does Notify(VGEN, 0x80).
 *
 * The guest takes the address and the GSI from the DSDT, prints them, then programs that IOAPIC
 * pin (edge, active high, to the BSP) and prints the ID and the interrupt count at the start
 * and whenever either changes. Between changes it waits in `sti; hlt`, so an idle guest costs
 * the host nothing. Args: changes (0 = run forever): end with PASS after that many new IDs.
 *
 * The handler never returns with IRETQ (irq.c says why): irq_wait() takes one interrupt and
 * comes back with interrupts off. So everything outside its `sti; hlt` runs with them off, and an
 * interrupt that comes while the guest reads the ID or prints waits in the LAPIC until that `sti;
 * hlt`, which then takes it at once.
 */
#include "guest.h"

#define IRQ_VECTOR   0x41 /* mode_virtio_irq.c has 0x40 */
#define VMGENID_SIZE 16

/* ACPI 6.5 §20.3 opcodes and §6.4.3.6 the Extended Interrupt Descriptor. */
#define AML_ZERO_OP       0x00
#define AML_ONE_OP        0x01
#define AML_BYTE_PREFIX   0x0a
#define AML_WORD_PREFIX   0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX  0x0e
#define AML_PACKAGE_OP    0x12
#define AML_METHOD_OP     0x14
#define AML_DUAL_NAME     0x2e
#define AML_MULTI_NAME    0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP     0x82 /* after AML_EXT_OP_PREFIX */
#define AML_NOTIFY_OP     0x86
#define AML_RETURN_OP     0xa4
#define RES_EXT_INTERRUPT 0x89
#define RES_INT_CONSUMER  0x01
#define RES_INT_EDGE      0x02
#define RES_INT_LOW       0x04

static volatile u32 vmgenid_irqs;

static void vmgenid_irq_record(void)
{
    vmgenid_irqs++;
}

/* ---- the DSDT ---- */

/* A window of AML: [p, end). Every read checks it, so a malformed table only fails a check. */
struct aml {
    const u8 *p, *end;
};

/* §20.2.4 PkgLength: the length from its own first byte on. */
static bool aml_pkg_length(struct aml *a, const u8 **pkg_end)
{
    const u8 *start = a->p;

    if (a->p >= a->end)
        return false;
    u8 lead = *a->p++;
    u32 n = lead >> 6, len = n ? lead & 0x0f : lead & 0x3f;
    if ((u64)(a->end - a->p) < n)
        return false;
    for (u32 i = 0; i < n; i++)
        len |= (u32)*a->p++ << (4 + 8 * i);
    if (len < 1 + n || (u64)(a->end - start) < len)
        return false;
    *pkg_end = start + len;
    return true;
}

/* §20.2.2 NameString: its last NameSeg into @seg ("" for NullName). */
static bool aml_name_string(struct aml *a, char seg[5])
{
    while (a->p < a->end && (*a->p == '\\' || *a->p == '^'))
        a->p++;
    if (a->p >= a->end)
        return false;
    u32 segs = 1;
    if (*a->p == 0) {
        a->p++;
        seg[0] = 0;
        return true;
    }
    if (*a->p == AML_DUAL_NAME) {
        a->p++;
        segs = 2;
    } else if (*a->p == AML_MULTI_NAME) {
        if (a->end - a->p < 2)
            return false;
        segs = a->p[1];
        a->p += 2;
    }
    if (segs == 0 || (u64)(a->end - a->p) < 4ULL * segs)
        return false;
    a->p += 4 * (segs - 1);
    memcpy(seg, a->p, 4);
    seg[4] = 0;
    a->p += 4;
    return true;
}

/* §20.2.3 ComputationalData, the integer forms. */
static bool aml_integer(struct aml *a, u64 *value)
{
    static const u8 sizes[] = {[AML_BYTE_PREFIX] = 1,
                               [AML_WORD_PREFIX] = 2,
                               [AML_DWORD_PREFIX] = 4,
                               [AML_QWORD_PREFIX] = 8};

    if (a->p >= a->end)
        return false;
    u8 op = *a->p++;
    if (op == AML_ZERO_OP || op == AML_ONE_OP) {
        *value = op;
        return true;
    }
    u32 n = op < ARRAY_SIZE(sizes) ? sizes[op] : 0;
    if (!n || (u64)(a->end - a->p) < n)
        return false;
    *value = 0;
    for (u32 i = 0; i < n; i++)
        *value |= (u64)*a->p++ << (8 * i);
    return true;
}

/*
 * The body of the first `op PkgLength NameString ...` in @in whose name ends in @name: after
 * the name, up to the package's end. @op2 is the second opcode byte of an extended op, or -1.
 * A plain byte scan: AML has no index, and our tables are a few KiB.
 */
static bool aml_find_named(const struct aml *in, u8 op, int op2, const char *name, struct aml *body)
{
    u32 oplen = op2 < 0 ? 1 : 2;

    for (const u8 *q = in->p; q + oplen < in->end; q++) {
        if (q[0] != op || (op2 >= 0 && q[1] != op2))
            continue;
        struct aml a = {q + oplen, in->end};
        const u8 *pkg_end;
        char seg[5];
        if (!aml_pkg_length(&a, &pkg_end))
            continue;
        a.end = pkg_end;
        if (aml_name_string(&a, seg) && !strcmp(seg, name)) {
            *body = a;
            return true;
        }
    }
    return false;
}

/* Where @in first holds @bytes (at any offset), or NULL. */
static const u8 *aml_find_bytes(const struct aml *in, const void *bytes, u64 n)
{
    for (const u8 *q = in->p; (u64)(in->end - q) >= n; q++)
        if (!memcmp(q, bytes, n))
            return q;
    return NULL;
}

static u8 upper(u8 c)
{
    return c >= 'a' && c <= 'z' ? (u8)(c - 'a' + 'A') : c;
}

/* Whether @in holds the String @s (StringPrefix, the ASCII, NUL), its letters in any case:
 * ACPICA upper-cases _HID and _CID strings before the drivers see them. */
static bool aml_has_string(const struct aml *in, const char *s)
{
    u64 n = strlen(s);

    for (const u8 *q = in->p; (u64)(in->end - q) >= n + 2; q++) {
        if (q[0] != AML_STRING_PREFIX || q[n + 1] != 0)
            continue;
        u64 i = 0;
        while (i < n && upper(q[1 + i]) == upper((u8)s[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

struct vmgenid_tables {
    u64 addr;
    u32 gsi;
};

/* VGEN's ADDR: Method(ADDR, 0) { Return(Package(2) { low, high }) }. */
static bool parse_vgen(const struct aml *dsdt, u64 *addr)
{
    struct aml dev, m;
    const u8 *pkg_end;
    u64 lo, hi;

    if (!aml_find_named(dsdt, AML_EXT_OP_PREFIX, AML_DEVICE_OP, "VGEN", &dev)) {
        fail("vmgenid-tables: expected Device(VGEN) in the DSDT got none");
        return false;
    }
    if (!aml_has_string(&dev, "VM_Gen_Counter")) {
        fail("vmgenid-tables: expected _CID \"VM_Gen_Counter\" in VGEN got none");
        return false;
    }
    if (!aml_find_named(&dev, AML_METHOD_OP, -1, "ADDR", &m)) {
        fail("vmgenid-tables: expected Method(ADDR) in VGEN got none");
        return false;
    }
    if (m.end - m.p < 3 || (m.p[0] & 7) != 0 || m.p[1] != AML_RETURN_OP ||
        m.p[2] != AML_PACKAGE_OP) {
        fail("vmgenid-tables: expected ADDR = 0 args, Return(Package) got %02x %02x %02x",
             m.end - m.p > 0 ? m.p[0] : 0, m.end - m.p > 1 ? m.p[1] : 0,
             m.end - m.p > 2 ? m.p[2] : 0);
        return false;
    }
    m.p += 3;
    if (!aml_pkg_length(&m, &pkg_end) || m.p >= pkg_end || *m.p++ != 2) {
        fail("vmgenid-tables: expected ADDR's Package of 2 elements got a malformed one");
        return false;
    }
    m.end = pkg_end;
    if (!aml_integer(&m, &lo) || !aml_integer(&m, &hi) || lo > 0xffffffff || hi > 0xffffffff) {
        fail("vmgenid-tables: expected ADDR's elements to be two 32-bit integers");
        return false;
    }
    *addr = lo | hi << 32;
    return true;
}

/* GED_: _HID "ACPI0013", its _CRS's one Interrupt, _EVT doing Notify(VGEN, 0x80). */
static bool parse_ged(const struct aml *dsdt, u32 *gsi)
{
    static const u8 notify_arg[] = {AML_BYTE_PREFIX, 0x80};
    struct aml dev, evt;
    char seg[5];

    if (!aml_find_named(dsdt, AML_EXT_OP_PREFIX, AML_DEVICE_OP, "GED_", &dev)) {
        fail("vmgenid-tables: expected Device(GED_) in the DSDT got none");
        return false;
    }
    if (!aml_has_string(&dev, "ACPI0013")) {
        fail("vmgenid-tables: expected GED_'s _HID \"ACPI0013\" got none");
        return false;
    }
    static const u8 desc[] = {RES_EXT_INTERRUPT, 6, 0};
    const u8 *d = aml_find_bytes(&dev, desc, sizeof(desc));
    if (!d || dev.end - d < 9 || d[4] != 1) {
        fail("vmgenid-tables: expected one Interrupt in GED_'s _CRS got %s",
             d ? "a malformed one" : "none");
        return false;
    }
    if ((d[3] & (RES_INT_CONSUMER | RES_INT_EDGE | RES_INT_LOW)) !=
        (RES_INT_CONSUMER | RES_INT_EDGE)) {
        fail("vmgenid-tables: expected GED_'s Interrupt consumer, edge, active high got flags "
             "0x%x",
             d[3]);
        return false;
    }
    memcpy(gsi, d + 5, 4);
    if (!aml_find_named(&dev, AML_METHOD_OP, -1, "_EVT", &evt) || evt.p >= evt.end ||
        (*evt.p & 7) != 1) {
        fail("vmgenid-tables: expected Method(_EVT, 1) in GED_ got none");
        return false;
    }
    evt.p++;
    while (evt.p < evt.end) {
        if (*evt.p++ != AML_NOTIFY_OP)
            continue;
        struct aml a = evt;
        if (aml_name_string(&a, seg) && !strcmp(seg, "VGEN") && a.end - a.p >= 2 &&
            !memcmp(a.p, notify_arg, 2))
            return true;
    }
    fail("vmgenid-tables: expected Notify(VGEN, 0x80) in GED_._EVT got none");
    return false;
}

static bool find_tables(struct vmgenid_tables *t)
{
    struct acpi_info info;

    if (!acpi_scan(&info) || !info.root_ok) {
        fail("vmgenid-tables: expected an RSDP and a valid XSDT got none");
        return false;
    }
    if (!info.dsdt || !info.dsdt_ok) {
        fail("vmgenid-tables: expected a DSDT through the FADT got %s", !info.fadt ? "no FADT"
                                                                        : !info.dsdt
                                                                            ? "no DSDT"
                                                                            : "a bad checksum");
        return false;
    }
    u32 len;
    memcpy(&len, (const u8 *)info.dsdt + 4, 4);
    struct aml dsdt = {(const u8 *)info.dsdt + 36, (const u8 *)info.dsdt + len};
    if (!parse_vgen(&dsdt, &t->addr) || !parse_ged(&dsdt, &t->gsi))
        return false;
    gprintf("VMGENID addr=0x%lx gsi=%u\n", t->addr, t->gsi);
    /* 16 bytes we can read: the guest maps 0-4 GiB only. */
    if (!t->addr || t->addr + VMGENID_SIZE > MVM_MMIO_GAP_END) {
        fail("vmgenid-tables: expected an address below 4 GiB got 0x%lx", t->addr);
        return false;
    }
    if (t->addr != MVM_VMGENID_ADDR || t->gsi != MVM_VMGENID_GSI) {
        fail("vmgenid-tables: expected addr=0x%lx gsi=%u (lib/layout.h) got addr=0x%lx gsi=%u",
             (u64)MVM_VMGENID_ADDR, (u32)MVM_VMGENID_GSI, t->addr, t->gsi);
        return false;
    }
    pass("vmgenid-tables");
    return true;
}

/* ---- the ID ---- */

static void read_id(u64 addr, u8 id[VMGENID_SIZE])
{
    const volatile u8 *p = (const volatile u8 *)addr;

    for (u32 i = 0; i < VMGENID_SIZE; i++)
        id[i] = p[i];
}

static void print_id(const u8 id[VMGENID_SIZE], u32 irqs)
{
    static const char digits[] = "0123456789abcdef";
    char hex[2 * VMGENID_SIZE + 1];

    for (u32 i = 0; i < VMGENID_SIZE; i++) {
        hex[2 * i] = digits[id[i] >> 4];
        hex[2 * i + 1] = digits[id[i] & 0xf];
    }
    hex[2 * VMGENID_SIZE] = 0;
    gprintf("VMGENID id=%s irqs=%u\n", hex, irqs);
}

bool mode_vmgenid(void)
{
    u64 want = arg_u64("changes", 0);
    struct vmgenid_tables t;
    u8 seen[VMGENID_SIZE], now[VMGENID_SIZE];
    u64 changes = 0;

    if (!find_tables(&t) || !irq_setup("vmgenid-irq", t.gsi, IRQ_VECTOR, vmgenid_irq_record))
        return false;
    /* Interrupts are off from here on except inside vmgenid_wait(). */
    read_id(t.addr, seen);
    u32 seen_irqs = vmgenid_irqs;
    print_id(seen, seen_irqs);
    while (!want || changes < want) {
        irq_wait();
        read_id(t.addr, now);
        u32 irqs = vmgenid_irqs;
        bool changed = memcmp(now, seen, VMGENID_SIZE) != 0;
        if (!changed && irqs == seen_irqs)
            continue;
        changes += changed;
        print_id(now, irqs);
        /* Worth a line, not a failure: the host may set the same ID, or write it twice before
         * the guest looks. */
        if (!changed)
            gprintf("VMGENID interrupt without a new id: changes=%lu irqs=%u\n", changes, irqs);
        else if (irqs == seen_irqs)
            gprintf("VMGENID new id without an interrupt: changes=%lu irqs=%u\n", changes, irqs);
        memcpy(seen, now, VMGENID_SIZE);
        seen_irqs = irqs;
    }
    gprintf("VMGENID changes=%lu irqs=%u\n", changes, seen_irqs);
    return true;
}
