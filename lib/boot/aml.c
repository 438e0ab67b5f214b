/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "aml.h"

#include <string.h>

/* ACPI 6.4 §20.3 opcodes. */
#define AML_ZERO_OP       0x00
#define AML_ONE_OP        0x01
#define AML_NAME_OP       0x08
#define AML_BYTE_PREFIX   0x0a
#define AML_WORD_PREFIX   0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX  0x0e
#define AML_SCOPE_OP      0x10
#define AML_BUFFER_OP     0x11
#define AML_PACKAGE_OP    0x12
#define AML_METHOD_OP     0x14
#define AML_NOTIFY_OP     0x86
#define AML_RETURN_OP     0xa4
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP     0x82 /* after AML_EXT_OP_PREFIX */
#define AML_ROOT_CHAR     '\\'

static void append_u8(GByteArray *out, guint8 v)
{
    g_byte_array_append(out, &v, 1);
}

static void append_le(GByteArray *out, guint64 v, guint bytes)
{
    for (guint i = 0; i < bytes; i++)
        append_u8(out, (guint8)(v >> (8 * i)));
}

/*
 * §20.2.4 PkgLength: the length of the package including the PkgLength bytes.
 * One byte holds up to 63; otherwise bits 7-6 count the 1-3 bytes that follow,
 * bits 3-0 are the low nibble and each following byte the next 8 bits.
 */
static void append_pkg_length(GByteArray *out, gsize body_len)
{
    if (body_len + 1 <= 0x3f) {
        append_u8(out, (guint8)(body_len + 1));
        return;
    }
    for (guint n = 2; n <= 4; n++) {
        gsize total = body_len + n;
        if (total < (1u << (4 + 8 * (n - 1)))) {
            append_u8(out, (guint8)(((n - 1) << 6) | (total & 0xf)));
            append_le(out, total >> 4, n - 1);
            return;
        }
    }
    g_assert_not_reached(); /* our tables are a few KiB; the limit is 256 MiB */
}

void mvm_aml_name_string(GByteArray *out, const char *name)
{
    if (name[0] == AML_ROOT_CHAR) {
        append_u8(out, AML_ROOT_CHAR);
        name++;
    }
    gsize len = strlen(name);
    g_assert(len == 4); /* one NameSeg: every name we use is built in */
    g_byte_array_append(out, (const guint8 *)name, 4);
}

void mvm_aml_integer(GByteArray *out, guint64 value)
{
    if (value == 0) {
        append_u8(out, AML_ZERO_OP);
    } else if (value == 1) {
        append_u8(out, AML_ONE_OP);
    } else if (value <= G_MAXUINT8) {
        append_u8(out, AML_BYTE_PREFIX);
        append_le(out, value, 1);
    } else if (value <= G_MAXUINT16) {
        append_u8(out, AML_WORD_PREFIX);
        append_le(out, value, 2);
    } else if (value <= G_MAXUINT32) {
        append_u8(out, AML_DWORD_PREFIX);
        append_le(out, value, 4);
    } else {
        append_u8(out, AML_QWORD_PREFIX);
        append_le(out, value, 8);
    }
}

void mvm_aml_string(GByteArray *out, const char *s)
{
    append_u8(out, AML_STRING_PREFIX);
    g_byte_array_append(out, (const guint8 *)s, strlen(s) + 1);
}

/* §6.1.5 _HID: three letters of 5 bits (A = 1), then four hex digits, big-endian in the DWord. */
void mvm_aml_eisa_id(GByteArray *out, const char *id)
{
    g_assert(strlen(id) == 7);
    guint32 vendor =
        ((guint32)(id[0] - 0x40) << 10) | ((guint32)(id[1] - 0x40) << 5) | (guint32)(id[2] - 0x40);
    guint32 product = (guint32)g_ascii_strtoull(id + 3, NULL, 16);
    guint8 bytes[4] = {vendor >> 8, vendor & 0xff, product >> 8, product & 0xff};

    append_u8(out, AML_DWORD_PREFIX);
    g_byte_array_append(out, bytes, sizeof(bytes));
}

void mvm_aml_name(GByteArray *out, const char *name, const GByteArray *object)
{
    append_u8(out, AML_NAME_OP);
    mvm_aml_name_string(out, name);
    g_byte_array_append(out, object->data, object->len);
}

/* Op PkgLength NameString TermList. */
static void append_named_package(GByteArray *out, const char *name, const GByteArray *body)
{
    g_autoptr(GByteArray) inner = g_byte_array_new();

    mvm_aml_name_string(inner, name);
    g_byte_array_append(inner, body->data, body->len);
    append_pkg_length(out, inner->len);
    g_byte_array_append(out, inner->data, inner->len);
}

void mvm_aml_scope(GByteArray *out, const char *name, const GByteArray *body)
{
    append_u8(out, AML_SCOPE_OP);
    append_named_package(out, name, body);
}

void mvm_aml_device(GByteArray *out, const char *name, const GByteArray *body)
{
    append_u8(out, AML_EXT_OP_PREFIX);
    append_u8(out, AML_DEVICE_OP);
    append_named_package(out, name, body);
}

void mvm_aml_package(GByteArray *out, guint8 n, const GByteArray *elements)
{
    append_u8(out, AML_PACKAGE_OP);
    append_pkg_length(out, 1 + elements->len);
    append_u8(out, n);
    g_byte_array_append(out, elements->data, elements->len);
}

/* §19.6.85 Method: MethodFlags bits 2-0 count the arguments; bit 3 (Serialized) stays 0. */
void mvm_aml_method(GByteArray *out, const char *name, guint8 n_args, const GByteArray *body)
{
    g_autoptr(GByteArray) inner = g_byte_array_new();

    g_assert(n_args <= 7);
    append_u8(inner, n_args);
    g_byte_array_append(inner, body->data, body->len);
    append_u8(out, AML_METHOD_OP);
    append_named_package(out, name, inner);
}

void mvm_aml_return(GByteArray *out, const GByteArray *object)
{
    append_u8(out, AML_RETURN_OP);
    g_byte_array_append(out, object->data, object->len);
}

void mvm_aml_notify(GByteArray *out, const char *name, guint64 value)
{
    append_u8(out, AML_NOTIFY_OP);
    mvm_aml_name_string(out, name);
    mvm_aml_integer(out, value);
}

/* §6.4.2.9 End Tag; a zero checksum means "treat as correct". */
#define RES_END_TAG 0x79

void mvm_aml_resource_template(GByteArray *out, const GByteArray *descriptors)
{
    g_autoptr(GByteArray) inner = g_byte_array_new();
    guint len = descriptors->len + 2;

    mvm_aml_integer(inner, len); /* BufferSize */
    g_byte_array_append(inner, descriptors->data, descriptors->len);
    append_u8(inner, RES_END_TAG);
    append_u8(inner, 0);
    append_u8(out, AML_BUFFER_OP);
    append_pkg_length(out, inner->len);
    g_byte_array_append(out, inner->data, inner->len);
}

/* §6.4.3.4 32-Bit Fixed Memory Range Descriptor. */
void mvm_aml_res_memory32_fixed(GByteArray *out, guint32 base, guint32 length, gboolean writable)
{
    append_u8(out, 0x86);
    append_le(out, 9, 2);
    append_u8(out, writable ? 1 : 0);
    append_le(out, base, 4);
    append_le(out, length, 4);
}

/* §6.4.3.6 Extended Interrupt Descriptor: one interrupt, no resource source. */
void mvm_aml_res_interrupt(GByteArray *out, guint32 gsi, gboolean edge, gboolean active_low,
                           gboolean shared)
{
    guint8 flags = 0x01; /* bit 0: consumer */

    flags |= edge ? 0x02 : 0;
    flags |= active_low ? 0x04 : 0;
    flags |= shared ? 0x08 : 0;
    append_u8(out, 0x89);
    append_le(out, 6, 2);
    append_u8(out, flags);
    append_u8(out, 1);
    append_le(out, gsi, 4);
}

/* §6.4.2.5 I/O Port Descriptor: a fixed range, 16-bit decode. */
void mvm_aml_res_io(GByteArray *out, guint16 base, guint8 length)
{
    append_u8(out, 0x47);
    append_u8(out, 0x01);
    append_le(out, base, 2);
    append_le(out, base, 2);
    append_u8(out, 1); /* alignment */
    append_u8(out, length);
}

/* §6.4.2.1 IRQ Descriptor without the flags byte: edge, active high. */
void mvm_aml_res_irq_noflags(GByteArray *out, guint irq)
{
    append_u8(out, 0x22);
    append_le(out, 1u << irq, 2);
}
