/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for working set files (lib/working-set.c): a caller's file, checked as
 * untrusted input before a lazy restore prefetches what it names. A set that parses counts no
 * more pages than its memory size allows. Built as a fuzzer with clang; always built as a
 * corpus replay test.
 */
#include "layout.h"
#include "microvm.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);
gboolean fuzz_target_accepts(const guint8 *data, size_t size);

static MvmWorkingSet *parse(const guint8 *data, size_t size, GError **error)
{
    g_autoptr(GBytes) bytes = g_bytes_new_static(data, size);
    return mvm_working_set_new_from_bytes(bytes, error);
}

gboolean fuzz_target_accepts(const guint8 *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmWorkingSet) set = parse(data, size, &error);

    if (set == NULL)
        g_printerr("refused: %s\n", error->message);
    return set != NULL;
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    g_autoptr(MvmWorkingSet) set = parse(data, size, NULL);

    /* 56 bytes of header, then one bit per page: never more pages than bits. */
    if (set != NULL)
        g_assert_cmpuint(mvm_working_set_get_n_pages(set), <=, (size - 56) * 8);
    return 0;
}
