/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl cpu: what a running or paused VM's guest is told of its CPU (VM.GetCPUConfig):
 * the CPU template, the TSC rate, the feature names, and each vCPU's CPUID entries and MSRs,
 * in hex as cpuid(1) and rdmsr(8) show them, or as JSON.
 */
#include "microvmctl.h"

/* As for pause: the read is an operation on the VM, which pauses the guest for a moment. */
#define CPU_CONFIG_TIMEOUT_MS (5 * 60 * 1000)
/* The label column of the summary, and where the feature list wraps (a terminal's width). */
#define LABEL_WIDTH 20
#define LINE_WIDTH  80
/* A vCPU's members, as VM.xml gives them: CPUID entries, and MSRs as index and value. */
#define CPUID_TYPE G_VARIANT_TYPE("a(uuuuuuu)")
#define MSRS_TYPE  G_VARIANT_TYPE("a(ut)")

/* "label   value", the label padded by characters, not bytes: translations are not ASCII. */
static void print_field(const char *label, const char *value)
{
    g_autoptr(GString) line = g_string_new(label);

    for (glong n = g_utf8_strlen(label, -1); n < LABEL_WIDTH + 1; n++)
        g_string_append_c(line, ' ');
    g_print("%s%s\n", line->str, value);
}

/* The names in lines of at most LINE_WIDTH, after the label column: there are a hundred. */
static void print_features(const char *const *features)
{
    g_autoptr(GString) text = g_string_new(NULL);
    gsize line_start = 0;

    for (gsize i = 0; features && features[i]; i++) {
        gsize width = text->len - line_start;

        if (width > 0 && LABEL_WIDTH + 1 + width + 1 + strlen(features[i]) > LINE_WIDTH) {
            g_string_append_printf(text, "\n%*s", LABEL_WIDTH + 1, "");
            line_start = text->len;
        } else if (width > 0) {
            g_string_append_c(text, ' ');
        }
        g_string_append(text, features[i]);
    }
    print_field(_("Features:"), text->len ? text->str : _("(none)"));
}

/* Each entry as function, index, eax, ebx, ecx, edx; flags only matter to KVM (JSON has them). */
static void print_cpuid(GVariant *cpuid)
{
    const char *headers[] = {_("FUNCTION"), _("INDEX"), "EAX", "EBX", "ECX", "EDX"};
    g_autoptr(MctlTable) table = mctl_table_new(G_N_ELEMENTS(headers), headers);
    guint n = g_variant_n_children(cpuid);
    GVariantIter iter;
    guint32 function, index, flags, regs[4];

    g_print("  ");
    g_print(ngettext("CPUID (%u entry):", "CPUID (%u entries):", n), n);
    g_print("\n");
    g_variant_iter_init(&iter, cpuid);
    while (g_variant_iter_next(&iter, "(uuuuuuu)", &function, &index, &flags, &regs[0], &regs[1],
                               &regs[2], &regs[3])) {
        guint32 values[6] = {function, index, regs[0], regs[1], regs[2], regs[3]};
        char cells[6][11];
        const char *row[6];

        for (guint c = 0; c < G_N_ELEMENTS(values); c++) {
            g_snprintf(cells[c], sizeof(cells[c]), "0x%08x", values[c]);
            row[c] = cells[c];
        }
        mctl_table_add(table, row);
    }
    if (n > 0)
        mctl_table_print_indented(table, 4);
}

static void print_msrs(GVariant *msrs)
{
    guint n = g_variant_n_children(msrs);
    GVariantIter iter;
    guint32 index;
    guint64 value;

    g_print("  ");
    g_print(ngettext("MSR (%u):", "MSRs (%u):", n), n);
    g_print("\n");
    g_variant_iter_init(&iter, msrs);
    while (g_variant_iter_next(&iter, "(ut)", &index, &value))
        g_print("    0x%08x = 0x%016" G_GINT64_MODIFIER "x\n", index, value);
}

/* The vCPU's index; G_MAXUINT32 when the daemon left it out (never @only then). */
static guint32 vcpu_index(GVariant *vcpu)
{
    guint32 index = G_MAXUINT32;

    g_variant_lookup(vcpu, "index", "u", &index);
    return index;
}

/* The vCPUs to show: all (@only < 0) or the one with index @only. */
static GPtrArray *wanted_vcpus(GVariant *config, gint only)
{
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(config, "vcpus", G_VARIANT_TYPE("aa{sv}"));
    GPtrArray *wanted = g_ptr_array_new_with_free_func((GDestroyNotify)g_variant_unref);

    for (gsize i = 0; vcpus && i < g_variant_n_children(vcpus); i++) {
        GVariant *vcpu = g_variant_get_child_value(vcpus, i);

        if (only < 0 || vcpu_index(vcpu) == (guint32)only)
            g_ptr_array_add(wanted, vcpu);
        else
            g_variant_unref(vcpu);
    }
    return wanted;
}

static void print_vcpu(GVariant *vcpu)
{
    g_autoptr(GVariant) cpuid = g_variant_lookup_value(vcpu, "cpuid", CPUID_TYPE);
    g_autoptr(GVariant) msrs = g_variant_lookup_value(vcpu, "msrs", MSRS_TYPE);

    g_print(_("vCPU %u:"), vcpu_index(vcpu));
    g_print("\n");
    if (cpuid)
        print_cpuid(cpuid);
    if (msrs)
        print_msrs(msrs);
}

static void print_cpu_config(GVariant *config, gint only)
{
    const char *template = NULL;
    guint32 tsc_khz = 0;
    gboolean scaling = FALSE;
    g_autofree const char **features = NULL;
    g_autofree char *tsc = NULL;
    g_autoptr(GPtrArray) vcpus = wanted_vcpus(config, only);

    g_variant_lookup(config, "cpu-template", "&s", &template);
    g_variant_lookup(config, "tsc-khz", "u", &tsc_khz);
    g_variant_lookup(config, "tsc-scaling", "b", &scaling);
    g_variant_lookup(config, "features", "^a&s", &features);
    /* TRANSLATORS: the guest's TSC rate, e.g. "2994374 kHz" */
    tsc = tsc_khz ? g_strdup_printf(_("%u kHz"), tsc_khz) : g_strdup(_("unknown"));
    print_field(_("CPU template:"), template ? template : _("unknown"));
    print_field(_("TSC rate:"), tsc);
    /* Whether a snapshot from a host of another TSC rate can be restored here. */
    print_field(_("TSC scaling:"), scaling ? _("available") : _("not available"));
    print_features(features);
    for (guint i = 0; i < vcpus->len; i++)
        print_vcpu(vcpus->pdata[i]);
}

/* ---- JSON ------------------------------------------------------------------------------ */

static JsonNode *cpuid_json(GVariant *cpuid)
{
    static const char *const members[] = {"function", "index", "flags", "eax", "ebx", "ecx", "edx"};
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_array(b);
    for (gsize i = 0; i < g_variant_n_children(cpuid); i++) {
        g_autoptr(GVariant) entry = g_variant_get_child_value(cpuid, i);

        json_builder_begin_object(b);
        for (gsize m = 0; m < G_N_ELEMENTS(members); m++) {
            g_autoptr(GVariant) value = g_variant_get_child_value(entry, m);

            json_builder_set_member_name(b, members[m]);
            json_builder_add_int_value(b, g_variant_get_uint32(value));
        }
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return json_builder_get_root(b);
}

/* An MSR's value is a hex string: JSON numbers past 2^53 lose digits in most readers, and
 * MSRs such as LSTAR hold kernel addresses near 2^64. */
static JsonNode *msrs_json(GVariant *msrs)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    GVariantIter iter;
    guint32 index;
    guint64 value;

    json_builder_begin_array(b);
    g_variant_iter_init(&iter, msrs);
    while (g_variant_iter_next(&iter, "(ut)", &index, &value)) {
        g_autofree char *hex = g_strdup_printf("0x%016" G_GINT64_MODIFIER "x", value);

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "index");
        json_builder_add_int_value(b, index);
        json_builder_set_member_name(b, "value");
        json_builder_add_string_value(b, hex);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return json_builder_get_root(b);
}

/* The vCPU's keys as the daemon sends them, with cpuid and msrs as arrays of objects. */
static JsonNode *vcpu_json(GVariant *vcpu)
{
    g_autoptr(JsonNode) node = mctl_json_from_variant(vcpu);
    JsonObject *o = json_node_get_object(node);
    g_autoptr(GVariant) cpuid = g_variant_lookup_value(vcpu, "cpuid", CPUID_TYPE);
    g_autoptr(GVariant) msrs = g_variant_lookup_value(vcpu, "msrs", MSRS_TYPE);

    if (cpuid)
        json_object_set_member(o, "cpuid", cpuid_json(cpuid));
    if (msrs)
        json_object_set_member(o, "msrs", msrs_json(msrs));
    return g_steal_pointer(&node);
}

/* Every key of the daemon's (new ones pass through); vcpus limited to those asked for. */
static JsonNode *cpu_config_json(GVariant *config, gint only)
{
    g_autoptr(JsonNode) root = mctl_json_from_variant(config);
    g_autoptr(GPtrArray) vcpus = wanted_vcpus(config, only);
    JsonArray *array = json_array_sized_new(vcpus->len);

    for (guint i = 0; i < vcpus->len; i++)
        json_array_add_element(array, vcpu_json(vcpus->pdata[i]));
    json_object_set_array_member(json_node_get_object(root), "vcpus", array);
    return g_steal_pointer(&root);
}

/* ---- the command ----------------------------------------------------------------------- */

/* --vcpu names one of the VM's vCPUs (its Vcpus property: public, no call needed). */
static gboolean check_vcpu(MvmdVm *vm, gint only)
{
    guint n = mvmd_vm_get_vcpus(vm);

    if (only < 0 || (guint)only < n)
        return TRUE;
    mctl_usage_error(ngettext("--vcpu: %s has %u vCPU, numbered from 0",
                              "--vcpu: %s has %u vCPUs, numbered from 0", n),
                     mvmd_vm_get_name(vm), n);
    return FALSE;
}

int mctl_cmd_cpu(Mctl *ctl, int argc, char **argv)
{
    gint only = -1;
    const GOptionEntry entries[] = {
        JSON_ENTRY(ctl),
        {"vcpu", 0, 0, G_OPTION_ARG_INT, &only, N_("Show only vCPU N (from 0)"), N_("N")},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autofree char *progress = NULL;

    if (!mctl_parse(ctl, entries, _("NAME"),
                    _("Show the CPU a running or paused VM's guest is given: its CPU template, "
                      "TSC rate and CPU features, and each vCPU's CPUID entries and MSRs."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 1, "cpu NAME"))
        return MCTL_EXIT_USAGE;
    if (only < -1)
        return mctl_usage_error(_("--vcpu must be 0 or more"));
    vm = mctl_vm_by_name(ctl, argv[0], &error);
    if (!vm)
        return mctl_fail(error, argv[0]);
    if (!check_vcpu(vm, only))
        return MCTL_EXIT_USAGE;
    progress = g_strdup_printf("%s %s", _("Reading the CPU configuration of"), argv[0]);
    reply = mctl_call(ctl, G_DBUS_PROXY(vm), "GetCPUConfig", NULL, NULL, CPU_CONFIG_TIMEOUT_MS,
                      progress, &error);
    if (!reply)
        return mctl_fail(error, argv[0]);
    g_variant_get(reply, "(@a{sv})", &config);
    if (ctl->json) {
        g_autoptr(JsonNode) root = cpu_config_json(config, only);

        mctl_print_json(root, TRUE);
    } else {
        print_cpu_config(config, only);
    }
    return MCTL_EXIT_OK;
}
