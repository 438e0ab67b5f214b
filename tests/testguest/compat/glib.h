/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A stand-in for <glib.h> with just what lib/layout.h (the authoritative guest memory map) uses,
 * so that the freestanding test guest can include it.
 */
#pragma once

#define G_GUINT64_CONSTANT(val) (val##UL)
#define G_GINT64_CONSTANT(val)  (val##L)
#define G_BEGIN_DECLS
#define G_END_DECLS
#define G_STATIC_ASSERT(expr) _Static_assert(expr, #expr)
