/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPU templates (microvm.h): the built-in ones, custom ones read from JSON (untrusted), and
 * applying one to a vCPU's CPUID table and MSRs. docs/cpu-templates.md has the reasons for
 * every bit the built-in ones keep.
 */
#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu-features.h"
#include "cpu-template.h"
#include "error-private.h"
#include "vcpu-private.h"

typedef struct {
    guint32 leaf, subleaf;
    MvmCpuidRegisterId reg;
    guint32 clear, set;
} CpuidModifier;

typedef struct {
    guint32 index;
    guint64 clear; /* bits taken away; a template never sets an MSR bit */
} MsrModifier;

struct _MvmCpuTemplate {
    gint ref;
    char *name;
    char *description;
    GArray *cpuid; /* of CpuidModifier */
    GArray *msrs;  /* of MsrModifier */
    /* Known by name only, as a snapshot records it: describes a VM, cannot build one. */
    gboolean recorded;
};

#define invalid mvm_set_invalid

static MvmCpuTemplate *template_new(const char *name, const char *description)
{
    MvmCpuTemplate *tmpl = g_new0(MvmCpuTemplate, 1);

    tmpl->ref = 1;
    tmpl->name = g_strdup(name);
    tmpl->description = g_strdup(description);
    tmpl->cpuid = g_array_new(FALSE, FALSE, sizeof(CpuidModifier));
    tmpl->msrs = g_array_new(FALSE, FALSE, sizeof(MsrModifier));
    return tmpl;
}

MvmCpuTemplate *mvm_cpu_template_ref(MvmCpuTemplate *tmpl)
{
    g_return_val_if_fail(tmpl != NULL, NULL);
    g_atomic_int_inc(&tmpl->ref);
    return tmpl;
}

void mvm_cpu_template_unref(MvmCpuTemplate *tmpl)
{
    if (tmpl == NULL || !g_atomic_int_dec_and_test(&tmpl->ref))
        return;
    g_free(tmpl->name);
    g_free(tmpl->description);
    g_array_unref(tmpl->cpuid);
    g_array_unref(tmpl->msrs);
    g_free(tmpl);
}

const char *mvm_cpu_template_get_name(const MvmCpuTemplate *tmpl)
{
    return tmpl != NULL ? tmpl->name : MVM_CPU_TEMPLATE_HOST;
}

const char *mvm_cpu_template_get_description(const MvmCpuTemplate *tmpl)
{
    if (tmpl == NULL)
        return "every CPU feature this host's KVM supports";
    return tmpl->description != NULL ? tmpl->description : "";
}

gboolean mvm_cpu_template_name_is_valid(const char *name)
{
    gsize len = name != NULL ? strlen(name) : 0;

    if (len == 0 || len > MVM_CPU_TEMPLATE_NAME_MAX || name[0] == '.')
        return FALSE;
    for (const char *p = name; *p != '\0'; p++)
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
            return FALSE;
    return TRUE;
}

/* ---- the built-in templates ---- */

#define B(bit) (1U << (bit))

/* What one level keeps of one register; every other bit of it is cleared. */
typedef struct {
    guint32 leaf, subleaf;
    MvmCpuidRegisterId reg;
    guint32 keep_v2, keep_v3;
} Keep;

/*
 * The x86-64 psABI levels (x86-64 psABI, "Micro-architecture levels") with what a guest kernel
 * needs of the system around them: docs/cpu-templates.md gives each bit's reason.
 */
#define LEAF1_EDX_BASE                                                                             \
    (B(0) | B(1) | B(2) | B(3) | B(4) | B(5) | B(6) | B(7) | B(8) | B(9) | B(11) | B(12) | B(13) | \
     B(14) | B(15) | B(16) | B(17) | B(19) | B(23) | B(24) | B(25) | B(26) | B(28))
/* AMD repeats leaf 1's EDX in 0x80000001 (bits 0-9, 12-17, 23, 24). */
#define EXT1_EDX_MIRROR                                                                            \
    (B(0) | B(1) | B(2) | B(3) | B(4) | B(5) | B(6) | B(7) | B(8) | B(9) | B(12) | B(13) | B(14) | \
     B(15) | B(16) | B(17) | B(23) | B(24))
#define EXT1_EDX_BASE (EXT1_EDX_MIRROR | B(11) | B(20) | B(26) | B(27) | B(29))
/* pni (SSE3), ssse3, cx16, sse4_1, sse4_2, popcnt; x2apic, tsc_deadline_timer, hypervisor. */
#define LEAF1_ECX_V2 (B(0) | B(9) | B(13) | B(19) | B(20) | B(23) | B(21) | B(24) | B(31))
/* fma, movbe, xsave, osxsave, avx, f16c. */
#define LEAF1_ECX_V3 (LEAF1_ECX_V2 | B(12) | B(22) | B(26) | B(27) | B(28) | B(29))

static const Keep psabi_levels[] = {
    {0x1, 0, MVM_CPUID_EDX, LEAF1_EDX_BASE, LEAF1_EDX_BASE},
    {0x1, 0, MVM_CPUID_ECX, LEAF1_ECX_V2, LEAF1_ECX_V3},
    {0x6, 0, MVM_CPUID_EAX, B(2), B(2)}, /* arat */
    {0x7, 0, MVM_CPUID_EBX, B(7) | B(20),
     B(7) | B(20) | B(3) | B(5) | B(8)}, /* smep smap; bmi1 avx2 bmi2 */
    {0x7, 0, MVM_CPUID_ECX, 0, 0},
    {0x7, 0, MVM_CPUID_EDX, 0, 0},
    {0x7, 1, MVM_CPUID_EAX, 0, 0},
    {0xd, 0, MVM_CPUID_EAX, B(0) | B(1), B(0) | B(1) | B(2)}, /* x87, SSE; AVX state */
    {0xd, 0, MVM_CPUID_EDX, 0, 0},
    {0xd, 1, MVM_CPUID_EAX, 0, 0},
    {0xd, 1, MVM_CPUID_ECX, 0, 0},
    {0x80000001, 0, MVM_CPUID_ECX, B(0), B(0) | B(5)}, /* lahf_lm; abm (LZCNT) */
    {0x80000001, 0, MVM_CPUID_EDX, EXT1_EDX_BASE, EXT1_EDX_BASE},
    {0x80000007, 0, MVM_CPUID_EDX, 0, 0},
    {0x80000008, 0, MVM_CPUID_EBX, 0, 0},
};

static const struct {
    const char *name;
    const char *description;
    gboolean v3;
} builtins[] = {
    {"x86-64-v2", "x86-64-v2: SSE4.2, SSSE3, POPCNT, CMPXCHG16B; no AVX", FALSE},
    {"x86-64-v3",
     "x86-64-v3: x86-64-v2 with AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE; no "
     "AVX-512",
     TRUE},
};

const char *const *mvm_cpu_template_builtin_names(void)
{
    static const char *const names[] = {MVM_CPU_TEMPLATE_HOST, "x86-64-v2", "x86-64-v3", NULL};

    return names;
}

static MvmCpuTemplate *psabi_template(const char *name, const char *description, gboolean v3)
{
    MvmCpuTemplate *tmpl = template_new(name, description);

    for (gsize i = 0; i < G_N_ELEMENTS(psabi_levels); i++) {
        const Keep *k = &psabi_levels[i];
        CpuidModifier m = {k->leaf, k->subleaf, k->reg, ~(v3 ? k->keep_v3 : k->keep_v2), 0};
        g_array_append_val(tmpl->cpuid, m);
    }
    return tmpl;
}

MvmCpuTemplate *mvm_cpu_template_new_builtin(const char *name, GError **error)
{
    if (g_strcmp0(name, MVM_CPU_TEMPLATE_HOST) == 0)
        return template_new(name, mvm_cpu_template_get_description(NULL));
    for (gsize i = 0; i < G_N_ELEMENTS(builtins); i++)
        if (g_strcmp0(name, builtins[i].name) == 0)
            return psabi_template(name, builtins[i].description, builtins[i].v3);
    invalid(error,
            "no built-in CPU template is called \"%s\" (there are host, x86-64-v2 and "
            "x86-64-v3)",
            name != NULL ? name : "");
    return NULL;
}

static gboolean is_builtin(const char *name)
{
    return g_strv_contains(mvm_cpu_template_builtin_names(), name);
}

MvmCpuTemplate *mvm_cpu_template_new_recorded(const char *name, GError **error)
{
    if (is_builtin(name))
        return mvm_cpu_template_new_builtin(name, error);
    if (!mvm_cpu_template_name_is_valid(name)) {
        invalid(error, "the CPU template name is not a valid one");
        return NULL;
    }
    MvmCpuTemplate *tmpl = template_new(name, "recorded in a snapshot");
    tmpl->recorded = TRUE;
    return tmpl;
}

/* ---- custom templates (JSON, untrusted) ---- */

/*
 * json-glib's parser recurses once per nesting level; a 64 KiB document of '[' would go 65,536
 * levels deep on the caller's stack. A template nests three levels, so anything deeper is
 * refused before the parser sees it. json-glib also stops after the first value and ignores
 * the rest ("{} {...}"), so the document must be one object and nothing after it but space.
 */
#define JSON_DEPTH_MAX 8
/*
 * What standard JSON may have outside strings besides brackets and quotes: space, separators,
 * numbers, true, false and null. json-glib reads more ('single quotes', comments, 0x10 and $10
 * numbers), which would hide brackets from the count above; such a document is refused.
 */
#define JSON_BARE_CHARS " \t\r\n:,0123456789+-.eEtrufalsn"
/* A line for a listing, not a manual. */
#define DESCRIPTION_MAX 256

/* One object, nested at most JSON_DEPTH_MAX deep, in standard JSON only. */
static gboolean check_json_shape(const char *json, gsize len, GError **error)
{
    gboolean in_string = FALSE, escaped = FALSE, ended = FALSE;
    guint depth = 0;

    for (gsize i = 0; i < len; i++) {
        char c = json[i];
        if (ended && !g_ascii_isspace(c))
            return invalid(error, "more than one JSON value");
        if (in_string) {
            if (escaped)
                escaped = FALSE;
            else if (c == '\\')
                escaped = TRUE;
            else if (c == '"')
                in_string = FALSE;
        } else if (c == '"') {
            in_string = TRUE;
        } else if (c == '[' || c == '{') {
            if (++depth > JSON_DEPTH_MAX)
                return invalid(error, "nested deeper than %d levels", JSON_DEPTH_MAX);
        } else if ((c == ']' || c == '}') && depth > 0) {
            ended = --depth == 0;
        } else if (!strchr(JSON_BARE_CHARS, c) || c == '\0') {
            return invalid(error, "byte 0x%02x at offset %" G_GSIZE_FORMAT " is not standard JSON",
                           (guint8)c, i);
        }
    }
    return TRUE;
}

/* Untrusted text for a message: at most @max bytes, valid UTF-8 (cut characters repaired). */
static char *shown_text(const char *text, gsize max)
{
    return g_utf8_make_valid(text, (gssize)MIN(strlen(text), max));
}

/* A JSON integer or a string of one ("0x1f", "31"), not above @max. */
static gboolean parse_number(JsonObject *object, const char *member, guint64 max, guint64 fallback,
                             guint64 *out, GError **error)
{
    JsonNode *node = json_object_get_member(object, member);

    *out = fallback;
    if (node == NULL)
        return TRUE;
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64) {
        gint64 v = json_node_get_int(node);
        if (v < 0 || (guint64)v > max)
            return invalid(error,
                           "\"%s\" is %" G_GINT64_FORMAT ", outside 0 to 0x%" G_GINT64_MODIFIER "x",
                           member, v, max);
        *out = (guint64)v;
        return TRUE;
    }
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING)
        return invalid(error, "\"%s\" must be a number or a string of one", member);
    const char *text = json_node_get_string(node);
    gboolean hex = g_str_has_prefix(text, "0x") || g_str_has_prefix(text, "0X");
    if (!g_ascii_string_to_unsigned(hex ? text + 2 : text, hex ? 16 : 10, 0, max, out, NULL)) {
        g_autofree char *shown = shown_text(text, 40);
        return invalid(error, "\"%s\" is \"%s\", not a number from 0 to 0x%" G_GINT64_MODIFIER "x",
                       member, shown, max);
    }
    return TRUE;
}

static gboolean check_members(JsonObject *object, const char *const *known, GError **error)
{
    g_autoptr(GList) members = json_object_get_members(object);

    for (GList *l = members; l != NULL; l = l->next)
        if (!g_strv_contains(known, l->data)) {
            g_autofree char *shown = shown_text(l->data, 64);
            return invalid(error, "unknown member \"%s\"", shown);
        }
    return TRUE;
}

/* Leaves a CPU can have: basic, hypervisor (0x40000000), extended and Centaur (0xc0000000). */
static gboolean leaf_is_plausible(guint64 leaf)
{
    return leaf <= 0xff || (leaf >= 0x40000000 && leaf <= 0x400000ff) ||
           (leaf >= 0x80000000 && leaf <= 0x800000ff) || (leaf >= 0xc0000000 && leaf <= 0xc00000ff);
}

static gboolean parse_register(JsonObject *object, MvmCpuidRegisterId *reg, GError **error)
{
    JsonNode *node = json_object_get_member(object, "register");
    const char *name = node != NULL && JSON_NODE_HOLDS_VALUE(node) &&
                               json_node_get_value_type(node) == G_TYPE_STRING
                           ? json_node_get_string(node)
                           : NULL;

    for (MvmCpuidRegisterId r = MVM_CPUID_EAX; name != NULL && r <= MVM_CPUID_EDX; r++)
        if (strcmp(name, mvm_cpuid_register_name(r)) == 0) {
            *reg = r;
            return TRUE;
        }
    return invalid(error, "\"register\" must be one of \"eax\", \"ebx\", \"ecx\", \"edx\"");
}

static gboolean parse_cpuid_modifier(JsonObject *object, MvmCpuTemplate *tmpl, GError **error)
{
    static const char *const known[] = {"leaf", "subleaf", "register", "clear", "set", NULL};
    guint64 leaf, subleaf, clear, set;
    CpuidModifier m;

    if (!check_members(object, known, error))
        return FALSE;
    if (!json_object_has_member(object, "leaf"))
        return invalid(error, "no \"leaf\"");
    if (!parse_number(object, "leaf", G_MAXUINT32, 0, &leaf, error) ||
        !parse_number(object, "subleaf", 0xffff, 0, &subleaf, error) ||
        !parse_register(object, &m.reg, error) ||
        !parse_number(object, "clear", G_MAXUINT32, 0, &clear, error) ||
        !parse_number(object, "set", G_MAXUINT32, 0, &set, error))
        return FALSE;
    if (!leaf_is_plausible(leaf))
        return invalid(error, "leaf 0x%" G_GINT64_MODIFIER "x is in no range a CPU has", leaf);
    m.leaf = (guint32)leaf;
    m.subleaf = (guint32)subleaf;
    m.clear = (guint32)clear;
    m.set = (guint32)set;
    for (guint i = 0; i < tmpl->cpuid->len; i++) {
        const CpuidModifier *o = &g_array_index(tmpl->cpuid, CpuidModifier, i);
        if (o->leaf == m.leaf && o->subleaf == m.subleaf && o->reg == m.reg)
            return invalid(error, "a second modifier of leaf 0x%x subleaf 0x%x %s", m.leaf,
                           m.subleaf, mvm_cpuid_register_name(m.reg));
    }
    g_array_append_val(tmpl->cpuid, m);
    return TRUE;
}

/*
 * The MSRs a template may change: those whose bits announce what the CPU can do, and only to
 * take bits away. KVM lets a VMM write far more (kvmclock and steal-time addresses, EFER,
 * APICBASE, machine-check banks), none of it a template's business.
 */
static gboolean msr_is_capability(guint64 index)
{
    return index == 0xcf     /* IA32_CORE_CAPABILITIES */
           || index == 0x10a /* IA32_ARCH_CAPABILITIES */
           || index == 0x345 /* IA32_PERF_CAPABILITIES */;
}

static gboolean parse_msr_modifier(JsonObject *object, MvmCpuTemplate *tmpl, GError **error)
{
    static const char *const known[] = {"index", "clear", NULL};
    guint64 index;
    MsrModifier m = {0};

    if (!check_members(object, known, error))
        return FALSE;
    if (!json_object_has_member(object, "index"))
        return invalid(error, "no \"index\"");
    if (!parse_number(object, "index", G_MAXUINT32, 0, &index, error) ||
        !parse_number(object, "clear", G_MAXUINT64, 0, &m.clear, error))
        return FALSE;
    if (!msr_is_capability(index))
        return invalid(error,
                       "MSR 0x%" G_GINT64_MODIFIER "x is not one a template may change (0xcf, "
                       "0x10a, 0x345: the capability MSRs)",
                       index);
    m.index = (guint32)index;
    for (guint i = 0; i < tmpl->msrs->len; i++)
        if (g_array_index(tmpl->msrs, MsrModifier, i).index == m.index)
            return invalid(error, "a second modifier of MSR 0x%x", m.index);
    g_array_append_val(tmpl->msrs, m);
    return TRUE;
}

typedef gboolean (*ModifierParser)(JsonObject *object, MvmCpuTemplate *tmpl, GError **error);

static gboolean parse_modifiers(JsonObject *root, const char *member, ModifierParser parse,
                                MvmCpuTemplate *tmpl, GError **error)
{
    JsonNode *node = json_object_get_member(root, member);

    if (node == NULL)
        return TRUE;
    if (!JSON_NODE_HOLDS_ARRAY(node))
        return invalid(error, "\"%s\" must be an array", member);
    JsonArray *array = json_node_get_array(node);
    guint n = json_array_get_length(array);
    if (n > MVM_CPU_TEMPLATE_MODIFIERS_MAX)
        return invalid(error, "\"%s\" has %u entries; at most %d", member, n,
                       MVM_CPU_TEMPLATE_MODIFIERS_MAX);
    for (guint i = 0; i < n; i++) {
        JsonNode *item = json_array_get_element(array, i);
        if (!JSON_NODE_HOLDS_OBJECT(item))
            return invalid(error, "\"%s\" entry %u is not an object", member, i);
        if (!parse(json_node_get_object(item), tmpl, error)) {
            g_prefix_error(error, "\"%s\" entry %u: ", member, i);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean parse_template(JsonNode *root_node, MvmCpuTemplate *tmpl, GError **error)
{
    static const char *const known[] = {"description", "cpuid", "msrs", NULL};

    if (root_node == NULL || !JSON_NODE_HOLDS_OBJECT(root_node))
        return invalid(error, "the document is not a JSON object");
    JsonObject *root = json_node_get_object(root_node);
    if (!check_members(root, known, error))
        return FALSE;
    JsonNode *description = json_object_get_member(root, "description");
    if (description != NULL) {
        if (!JSON_NODE_HOLDS_VALUE(description) ||
            json_node_get_value_type(description) != G_TYPE_STRING)
            return invalid(error, "\"description\" must be a string");
        const char *text = json_node_get_string(description);
        if (strlen(text) > DESCRIPTION_MAX)
            return invalid(error, "\"description\" is longer than %d bytes", DESCRIPTION_MAX);
        /* json-glib turns a lone surrogate ("\ud800") into bytes that are not UTF-8. */
        if (!g_utf8_validate(text, -1, NULL))
            return invalid(error, "\"description\" is not valid UTF-8");
        tmpl->description = g_strdup(text);
    }
    return parse_modifiers(root, "cpuid", parse_cpuid_modifier, tmpl, error) &&
           parse_modifiers(root, "msrs", parse_msr_modifier, tmpl, error);
}

MvmCpuTemplate *mvm_cpu_template_new_from_json(const char *name, const char *json, gsize len,
                                               GError **error)
{
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GError) local = NULL;

    if (!mvm_cpu_template_name_is_valid(name) || is_builtin(name)) {
        g_autofree char *shown = shown_text(name != NULL ? name : "", 80);
        invalid(error,
                "\"%s\" cannot name a custom CPU template (letters, digits, '-', '_' "
                "and '.', at most %d, not starting with '.', not a built-in name)",
                shown, MVM_CPU_TEMPLATE_NAME_MAX);
        return NULL;
    }
    g_autoptr(MvmCpuTemplate) tmpl = template_new(name, NULL);
    if (len > MVM_CPU_TEMPLATE_JSON_MAX)
        invalid(&local, "%" G_GSIZE_FORMAT " bytes; at most %d", len, MVM_CPU_TEMPLATE_JSON_MAX);
    else if (check_json_shape(json, len, &local)) {
        parser = json_parser_new_immutable();
        if (json_parser_load_from_data(parser, json, (gssize)len, &local))
            parse_template(json_parser_get_root(parser), tmpl, &local);
    }
    if (local != NULL) {
        invalid(error, "CPU template %s: %s", name, local->message);
        return NULL;
    }
    return g_steal_pointer(&tmpl);
}

MvmCpuTemplate *mvm_cpu_template_new_from_fd(const char *name, int fd, GError **error)
{
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MVM_CPU_TEMPLATE_JSON_MAX) {
        invalid(error, "CPU template %s: not a regular file of at most %d bytes",
                name != NULL ? name : "", MVM_CPU_TEMPLATE_JSON_MAX);
        return NULL;
    }
    /* One byte more than allowed: a file that grew since fstat is seen as too large. */
    g_autofree char *data = g_malloc(MVM_CPU_TEMPLATE_JSON_MAX + 1);
    gsize len = 0;
    for (;;) {
        ssize_t n = pread(fd, data + len, MVM_CPU_TEMPLATE_JSON_MAX + 1 - len, (off_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot read CPU template %s",
                                name != NULL ? name : "");
            return NULL;
        }
        len += (gsize)n;
        if (n == 0 || len > MVM_CPU_TEMPLATE_JSON_MAX)
            break;
    }
    return mvm_cpu_template_new_from_json(name, data, len, error);
}

/* ---- applying a template ---- */

static gboolean apply_cpuid_modifier(const CpuidModifier *m, struct kvm_cpuid2 *cpuid,
                                     const char *name, GError **error)
{
    struct kvm_cpuid_entry2 *e = mvm_cpuid_find(cpuid, m->leaf, m->subleaf);

    if (e == NULL) {
        if (m->set == 0)
            return TRUE; /* clearing what the host does not have */
        g_set_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU,
                    "CPU template %s sets bits of CPUID leaf 0x%x subleaf 0x%x, which this "
                    "host's KVM does not have",
                    name, m->leaf, m->subleaf);
        return FALSE;
    }
    guint32 *value = mvm_cpuid_entry_register(e, m->reg);
    *value = (*value & ~m->clear) | m->set;
    return TRUE;
}

gboolean mvm_cpu_template_apply_cpuid(const MvmCpuTemplate *tmpl, struct kvm_cpuid2 *cpuid,
                                      GError **error)
{
    if (tmpl == NULL)
        return TRUE;
    if (tmpl->recorded)
        return invalid(error,
                       "CPU template %s is known here only by the name a snapshot "
                       "recorded; load it to start a VM with it",
                       tmpl->name);
    if (tmpl->cpuid->len == 0)
        return TRUE; /* "host", or a template of MSRs only */
    for (guint i = 0; i < tmpl->cpuid->len; i++)
        if (!apply_cpuid_modifier(&g_array_index(tmpl->cpuid, CpuidModifier, i), cpuid, tmpl->name,
                                  error))
            return FALSE;
    g_autofree char *what = g_strdup_printf("CPU template %s sets", tmpl->name);
    return mvm_cpuid_check_supported(cpuid, what, error);
}

gboolean mvm_cpu_template_changes_cpuid(const MvmCpuTemplate *tmpl)
{
    return tmpl != NULL && tmpl->cpuid->len > 0;
}

gboolean mvm_cpu_template_check_shown(const MvmCpuTemplate *tmpl, const struct kvm_cpuid2 *shown,
                                      GError **error)
{
    g_autoptr(GPtrArray) unhidden = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; tmpl != NULL && i < tmpl->cpuid->len; i++) {
        const CpuidModifier *m = &g_array_index(tmpl->cpuid, CpuidModifier, i);
        struct kvm_cpuid_entry2 *e = mvm_cpuid_find(shown, m->leaf, m->subleaf);
        guint32 bits = e != NULL ? *mvm_cpuid_entry_register(e, m->reg) & m->clear & ~m->set : 0;
        mvm_cpuid_add_bit_names(unhidden, m->leaf, m->subleaf, m->reg, bits);
    }
    if (unhidden->len == 0)
        return TRUE;
    g_ptr_array_add(unhidden, NULL);
    g_autofree char *list = g_strjoinv(", ", (char **)unhidden->pdata);
    g_set_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU,
                "CPU template %s cannot be honoured here: KVM on this host shows guests CPU "
                "features the template takes away (%s); it cannot hide the host's own CPUID",
                tmpl->name, list);
    return FALSE;
}

gboolean mvm_cpu_template_apply_msrs(const MvmCpuTemplate *tmpl, MvmVcpu *vcpu, GError **error)
{
    g_autoptr(GError) local = NULL;

    if (tmpl == NULL || tmpl->msrs->len == 0)
        return TRUE;
    g_autofree guint32 *indices = g_new(guint32, tmpl->msrs->len);
    for (guint i = 0; i < tmpl->msrs->len; i++)
        indices[i] = g_array_index(tmpl->msrs, MsrModifier, i).index;
    g_autofree struct kvm_msrs *msrs = mvm_vcpu_get_msrs(vcpu, indices, tmpl->msrs->len, &local);
    for (guint i = 0; msrs != NULL && i < tmpl->msrs->len; i++) {
        const MsrModifier *m = &g_array_index(tmpl->msrs, MsrModifier, i);
        msrs->entries[i].data &= ~m->clear;
    }
    if (msrs == NULL || !mvm_vcpu_set_msrs(vcpu, msrs, &local)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU,
                    "CPU template %s: KVM on this host refuses its MSRs: %s", tmpl->name,
                    local->message);
        return FALSE;
    }
    return TRUE;
}
