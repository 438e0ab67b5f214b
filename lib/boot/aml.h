/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A tiny AML encoder (ACPI 6.4 §20 "ACPI Machine Language Specification") and
 * resource descriptor encoder (§6.4 "Resource Data Types"): just what the DSDT
 * needs. Every function appends to a GByteArray.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Name strings: "ABCD" (a NameSeg) or "\\ABCD" (from the root); segments are 4 chars. */
void mvm_aml_name_string(GByteArray *out, const char *name);
/* Integer constant: ZeroOp, OneOp or the smallest of Byte/Word/DWord/QWordConst. */
void mvm_aml_integer(GByteArray *out, guint64 value);
void mvm_aml_string(GByteArray *out, const char *s);
/* EISAID("PNP0501"): the compressed 32-bit ID as a DWordConst. */
void mvm_aml_eisa_id(GByteArray *out, const char *id);
/* Name(name, <object>), where @object holds one encoded data object. */
void mvm_aml_name(GByteArray *out, const char *name, const GByteArray *object);
/* Scope(name) { body } and Device(name) { body }. */
void mvm_aml_scope(GByteArray *out, const char *name, const GByteArray *body);
void mvm_aml_device(GByteArray *out, const char *name, const GByteArray *body);
/* Package(n) { elements }: @elements holds @n encoded data objects. */
void mvm_aml_package(GByteArray *out, guint8 n, const GByteArray *elements);
/* Method(name, n_args, NotSerialized) { body }. */
void mvm_aml_method(GByteArray *out, const char *name, guint8 n_args, const GByteArray *body);
/* Return(<object>) and Notify(name, value): statements for a method's body. */
void mvm_aml_return(GByteArray *out, const GByteArray *object);
void mvm_aml_notify(GByteArray *out, const char *name, guint64 value);
/* ResourceTemplate() { descriptors }: a Buffer with the End Tag appended. */
void mvm_aml_resource_template(GByteArray *out, const GByteArray *descriptors);

/* Resource descriptors, appended to a descriptor list. */
void mvm_aml_res_memory32_fixed(GByteArray *out, guint32 base, guint32 length, gboolean writable);
void mvm_aml_res_interrupt(GByteArray *out, guint32 gsi, gboolean edge, gboolean active_low,
                           gboolean shared);
void mvm_aml_res_io(GByteArray *out, guint16 base, guint8 length);
void mvm_aml_res_irq_noflags(GByteArray *out, guint irq);

G_END_DECLS
