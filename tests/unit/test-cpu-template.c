/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPU templates without KVM (lib/cpu-template.c): the built-in ones by name, a custom template
 * file being untrusted input (every document below is refused with MVM_ERROR_INVALID_ARGUMENT,
 * while a control one that differs only in the damage is accepted), and the feature names of
 * a made-up CPUID table. What a template does to a guest is tests/vm/test-cpu-template.c.
 */
#include <linux/kvm.h>
#include <string.h>
#include <unistd.h>

#include "microvm.h"

/* A valid modifier. */
#define MODIFIER "{\"leaf\": \"0x1\", \"register\": \"ecx\", \"clear\": \"0x00100000\"}"

/*
 * A valid document of @n modifiers (at most 257), each of another (leaf, subleaf, register), so
 * that only their count can be wrong: the XSAVE leaf 0xd's subleaves 0-63 (Intel SDM vol. 2A,
 * CPUID leaf 0DH), four registers each, then MODIFIER.
 */
static char *document_of(guint n)
{
    static const char *const regs[] = {"eax", "ebx", "ecx", "edx"};
    g_autoptr(GString) json = g_string_new("{\"cpuid\": [");

    g_assert_cmpuint(n, <=, 64 * 4 + 1);
    for (guint i = 0; i < n; i++) {
        g_string_append(json, i == 0 ? "" : ", ");
        if (i < 64 * 4)
            g_string_append_printf(json,
                                   "{\"leaf\": \"0xd\", \"subleaf\": %u, \"register\": \"%s\"}",
                                   i / 4, regs[i % 4]);
        else
            g_string_append(json, MODIFIER);
    }
    g_string_append(json, "]}");
    return g_string_free(g_steal_pointer(&json), FALSE);
}

/* A valid document longer than a template file may be (its description is the padding). */
static char *oversized_document(void)
{
    g_autofree char *padding = g_strnfill(MVM_CPU_TEMPLATE_JSON_MAX, 'x');
    return g_strdup_printf("{\"description\": \"%s\", \"cpuid\": [" MODIFIER "]}", padding);
}

typedef struct {
    const char *what;
    const char *json;
} BadJson;

static const BadJson bad_documents[] = {
    {"not-json", "cpuid: leaf 1"},
    {"trailing-garbage", "{\"cpuid\": [" MODIFIER "]} x"},
    {"two-documents", "{} {}"},
    {"truncated", "{\"cpuid\": [" MODIFIER},
    {"empty", ""},
    {"array", "[" MODIFIER "]"},
    {"string", "\"x86-64-v2\""},
    {"number", "42"},
    {"null", "null"},
    {"unknown-key", "{\"cpus\": [" MODIFIER "]}"},
    {"unknown-modifier-key",
     "{\"cpuid\": [{\"leaf\": \"0x1\", \"register\": \"ecx\", \"mask\": \"0x1\"}]}"},
    {"unknown-msr-key", "{\"msrs\": [{\"index\": \"0x10a\", \"value\": \"0x1\"}]}"},
    {"cpuid-not-array", "{\"cpuid\": " MODIFIER "}"},
    {"modifier-not-object", "{\"cpuid\": [\"0x1\"]}"},
    {"description-not-string", "{\"description\": 7, \"cpuid\": []}"},
    {"no-leaf", "{\"cpuid\": [{\"register\": \"ecx\", \"clear\": \"0x1\"}]}"},
    {"no-register", "{\"cpuid\": [{\"leaf\": \"0x1\", \"clear\": \"0x1\"}]}"},
    {"leaf-out-of-range", "{\"cpuid\": [{\"leaf\": \"0x12345678\", \"register\": \"eax\"}]}"},
    {"register-exx", "{\"cpuid\": [{\"leaf\": \"0x1\", \"register\": \"exx\"}]}"},
    {"clear-33-bits",
     "{\"cpuid\": [{\"leaf\": \"0x1\", \"register\": \"ecx\", \"clear\": \"0x100000000\"}]}"},
    {"set-33-bits-integer",
     "{\"cpuid\": [{\"leaf\": \"0x1\", \"register\": \"ecx\", \"set\": 4294967296}]}"},
    {"leaf-33-bits", "{\"cpuid\": [{\"leaf\": 4294967297, \"register\": \"ecx\"}]}"},
    {"clear-negative", "{\"cpuid\": [{\"leaf\": \"0x1\", \"register\": \"ecx\", \"clear\": -1}]}"},
    {"leaf-negative-string", "{\"cpuid\": [{\"leaf\": \"-1\", \"register\": \"ecx\"}]}"},
    {"leaf-fraction", "{\"cpuid\": [{\"leaf\": 1.5, \"register\": \"ecx\"}]}"},
    {"leaf-boolean", "{\"cpuid\": [{\"leaf\": true, \"register\": \"ecx\"}]}"},
    {"subleaf-word",
     "{\"cpuid\": [{\"leaf\": \"0x7\", \"subleaf\": \"zero\", \"register\": \"ebx\"}]}"},
    {"subleaf-bare-0x",
     "{\"cpuid\": [{\"leaf\": \"0x7\", \"subleaf\": \"0x\", \"register\": \"ebx\"}]}"},
    {"subleaf-trailing-junk",
     "{\"cpuid\": [{\"leaf\": \"0x7\", \"subleaf\": \"12abc\", \"register\": \"ebx\"}]}"},
    {"subleaf-empty",
     "{\"cpuid\": [{\"leaf\": \"0x7\", \"subleaf\": \"\", \"register\": \"ebx\"}]}"},
    {"msr-value-65-bits", "{\"msrs\": [{\"index\": \"0x10a\", \"set\": \"0x10000000000000000\"}]}"},
    {"msr-index-negative", "{\"msrs\": [{\"index\": -266, \"clear\": \"0x1\"}]}"},
};

static void assert_invalid(const char *name, const char *json, gsize len)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmCpuTemplate) tmpl = mvm_cpu_template_new_from_json(name, json, len, &error);

    g_assert_null(tmpl);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("refused: %s", error->message);
    g_assert_cmpstr(error->message, !=, "");
}

static void assert_valid(const char *name, const char *json)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmCpuTemplate) tmpl =
        mvm_cpu_template_new_from_json(name, json, strlen(json), &error);

    g_assert_no_error(error);
    g_assert_cmpstr(mvm_cpu_template_get_name(tmpl), ==, name);
}

static void test_bad_document(gconstpointer data)
{
    const BadJson *bad = data;
    assert_invalid("custom", bad->json, strlen(bad->json));
}

/* What the refusals differ from: these are accepted, so each case above is refused for its own
 * damage. */
static void test_control(void)
{
    g_autofree char *most = document_of(MVM_CPU_TEMPLATE_MODIFIERS_MAX);
    g_autofree char *name = g_strnfill(MVM_CPU_TEMPLATE_NAME_MAX, 'n');

    assert_valid("custom", "{}");
    assert_valid("custom", "{\"description\": \"no sse4.2\", \"cpuid\": [" MODIFIER "]}");
    assert_valid("custom", "{\"cpuid\": [{\"leaf\": 7, \"subleaf\": \"0x0\", \"register\": "
                           "\"ebx\", \"clear\": 4294967295, \"set\": \"0x8\"}]}");
    assert_valid("custom", "{\"msrs\": [{\"index\": \"0x10a\", \"clear\": "
                           "\"0xffffffffffffffff\", \"set\": \"0x0\"}]}");
    assert_valid("custom", most);
    assert_valid(name, "{}");
    assert_valid("my_template-1.0", "{}");
}

static void test_too_many_modifiers(void)
{
    g_autofree char *json = document_of(MVM_CPU_TEMPLATE_MODIFIERS_MAX + 1);
    assert_invalid("custom", json, strlen(json));
}

static void test_oversized(void)
{
    g_autofree char *json = oversized_document();

    g_assert_cmpuint(strlen(json), >, MVM_CPU_TEMPLATE_JSON_MAX);
    assert_invalid("custom", json, strlen(json));
}

/* A file holding @json, for mvm_cpu_template_new_from_fd(). */
static int file_of(const char *json)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    int fd = g_file_open_tmp("cpu-template-XXXXXX.json", &path, &error);

    g_assert_no_error(error);
    g_assert_cmpint(unlink(path), ==, 0);
    g_assert_cmpint(write(fd, json, strlen(json)), ==, (gssize)strlen(json));
    g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
    return fd;
}

/* The file is read up to its bound, not whole into memory: one longer is refused. */
static void test_file(void)
{
    g_autofree char *big = oversized_document();
    g_autoptr(GError) error = NULL;
    int good = file_of("{\"cpuid\": [" MODIFIER "]}"), bad = file_of(big);
    g_autoptr(MvmCpuTemplate) tmpl = mvm_cpu_template_new_from_fd("from-file", good, &error);

    g_assert_no_error(error);
    g_assert_cmpstr(mvm_cpu_template_get_name(tmpl), ==, "from-file");
    g_assert_null(mvm_cpu_template_new_from_fd("from-file", bad, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("refused: %s", error->message);
    close(good);
    close(bad);
}

static void test_bad_names(void)
{
    g_autofree char *long_name = g_strnfill(MVM_CPU_TEMPLATE_NAME_MAX + 1, 'n');
    const char *const names[] = {"../x",      "",           ".hidden", long_name,
                                 "a/b",       "with space", "naïve",   MVM_CPU_TEMPLATE_HOST,
                                 "x86-64-v2", "x86-64-v3"};

    for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
        g_test_message("name \"%s\"", names[i]);
        assert_invalid(names[i], "{}", 2);
    }
    g_assert_false(mvm_cpu_template_name_is_valid("../x"));
    g_assert_false(mvm_cpu_template_name_is_valid(long_name));
    g_assert_true(mvm_cpu_template_name_is_valid("x86-64-v9_custom.1"));
}

static void test_builtins(void)
{
    const char *const *names = mvm_cpu_template_builtin_names();
    g_autoptr(GError) error = NULL;

    g_assert_cmpstr(names[0], ==, MVM_CPU_TEMPLATE_HOST);
    g_assert_true(g_strv_contains(names, "x86-64-v2"));
    g_assert_true(g_strv_contains(names, "x86-64-v3"));
    for (gsize i = 0; names[i] != NULL; i++) {
        g_autoptr(MvmCpuTemplate) tmpl = mvm_cpu_template_new_builtin(names[i], &error);
        g_assert_no_error(error);
        g_assert_cmpstr(mvm_cpu_template_get_name(tmpl), ==, names[i]);
        g_assert_nonnull(mvm_cpu_template_get_description(tmpl));
    }
    g_assert_null(mvm_cpu_template_new_builtin("x86-64-v4", &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

/* Leaf 1 ECX SSE4.2 (bit 20), leaf 7.0 EBX AVX2 (5) and AVX512F (16); subleaf 1 must not count. */
static void test_feature_names(void)
{
    const MvmCpuidEntry entries[] = {
        {.function = 1, .ecx = 1u << 20, .edx = 1u << 26},
        {.function = 7,
         .index = 0,
         .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
         .ebx = 1u << 5 | 1u << 16},
        {.function = 7, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 1u << 3},
    };
    g_auto(GStrv) names = mvm_cpuid_feature_names(entries, G_N_ELEMENTS(entries));
    g_autofree char *all = g_strjoinv(" ", names);

    g_test_message("features: %s", all);
    for (const char *const *want = (const char *const[]){"sse4_2", "avx2", "avx512f", NULL};
         *want != NULL; want++)
        g_assert_true(g_strv_contains((const char *const *)names, *want));
    g_assert_false(g_strv_contains((const char *const *)names, "avx"));
    g_assert_false(g_strv_contains((const char *const *)names, "bmi1"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/cpu-template/builtins", test_builtins);
    g_test_add_func("/cpu-template/corrupt-json/control", test_control);
    for (gsize i = 0; i < G_N_ELEMENTS(bad_documents); i++) {
        g_autofree char *path =
            g_strdup_printf("/cpu-template/corrupt-json/%s", bad_documents[i].what);
        g_test_add_data_func(path, &bad_documents[i], test_bad_document);
    }
    g_test_add_func("/cpu-template/corrupt-json/too-many-modifiers", test_too_many_modifiers);
    g_test_add_func("/cpu-template/corrupt-json/oversized", test_oversized);
    g_test_add_func("/cpu-template/corrupt-json/bad-names", test_bad_names);
    g_test_add_func("/cpu-template/file", test_file);
    g_test_add_func("/cpu-template/feature-names", test_feature_names);
    return g_test_run();
}
