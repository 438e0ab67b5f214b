/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for custom CPU templates (lib/cpu-template.c): the JSON a daemon reads from
 * its template directory, checked as untrusted input. A template that parses is applied to a
 * table of every leaf a template may name, which needs no KVM. Built as a fuzzer with clang;
 * always built as a corpus replay test.
 */
#include "cpu-template.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);
gboolean fuzz_target_accepts(const guint8 *data, size_t size);

gboolean fuzz_target_accepts(const guint8 *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmCpuTemplate) tmpl =
        mvm_cpu_template_new_from_json("fuzz", (const char *)data, size, &error);

    if (tmpl == NULL)
        g_printerr("refused: %s\n", error->message);
    return tmpl != NULL;
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    g_autoptr(MvmCpuTemplate) tmpl =
        mvm_cpu_template_new_from_json("fuzz", (const char *)data, size, NULL);

    if (tmpl != NULL) {
        g_assert_cmpstr(mvm_cpu_template_get_name(tmpl), ==, "fuzz");
        g_assert_nonnull(mvm_cpu_template_get_description(tmpl));
        g_assert_true(g_utf8_validate(mvm_cpu_template_get_description(tmpl), -1, NULL));
    }
    return 0;
}
