/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPU templates against real KVM: the test guest's mode=cpuid prints what CPUID tells it, and
 * that must be what the template says and what mvm_vm_dump_cpu_config() reports, before and
 * after a snapshot. Runs on every kind of host (kvm_pvm, the nested QEMU `max` CPU), so which
 * features exist is always asked of this host's KVM, never assumed: a guest here can have what
 * KVM_GET_SUPPORTED_CPUID lists plus what KVM shows guests anyway (mvm_kvm_effective_cpuid():
 * kvm_pvm shows the host's own CPUID beyond its supported set, docs/kvm-hosts.md). A template
 * that would take such a feature away cannot be honoured, and the VM must be refused instead.
 */
#include <linux/kvm.h>
#include <string.h>

#include "kvm.h"
#include "snapshot-test-util.h"
#include "snapshot.h"

enum { EAX, EBX, ECX, EDX };

/* One CPUID feature bit and its /proc/cpuinfo name (the spelling of mvm_cpuid_feature_names()). */
typedef struct {
    guint32 leaf, subleaf;
    guint reg, bit;
    const char *name;
} Feature;

static const Feature SSE2 = {1, 0, EDX, 26, "sse2"};
static const Feature SSE4_2 = {1, 0, ECX, 20, "sse4_2"};
static const Feature POPCNT = {1, 0, ECX, 23, "popcnt"};
static const Feature FMA = {1, 0, ECX, 12, "fma"};
static const Feature MOVBE = {1, 0, ECX, 22, "movbe"};
static const Feature AVX = {1, 0, ECX, 28, "avx"};
static const Feature F16C = {1, 0, ECX, 29, "f16c"};
static const Feature BMI1 = {7, 0, EBX, 3, "bmi1"};
static const Feature AVX2 = {7, 0, EBX, 5, "avx2"};
static const Feature BMI2 = {7, 0, EBX, 8, "bmi2"};
static const Feature AVX512F = {7, 0, EBX, 16, "avx512f"};

/* What x86-64-v3 has and x86-64-v2 lacks (x86-64 psABI, "Micro-architecture levels"). */
static const Feature *const v3_only[] = {&AVX, &AVX2, &BMI1, &BMI2, &F16C, &FMA, &MOVBE, NULL};
static const Feature *const avx512[] = {&AVX512F, NULL};

/* Features of the x86-64 hosts we know, one of which a custom template clears. */
static const Feature clearable_features[] = {
    {1, 0, ECX, 20, "sse4_2"}, {1, 0, ECX, 23, "popcnt"}, {1, 0, ECX, 9, "ssse3"},
    {1, 0, ECX, 19, "sse4_1"}, {1, 0, ECX, 13, "cx16"},
};

/* Features a host may lack, most common first: templates that set one must be refused. */
static const Feature rare_features[] = {
    {7, 0, EBX, 16, "avx512f"},
    {7, 0, EDX, 24, "amx_tile"},
    {7, 0, EDX, 23, "avx512_fp16"},
    {7, 0, EDX, 8, "avx512_vp2intersect"},
};

/* The (leaf, subleaf) pairs mode=cpuid prints, where the CPU's maximum leaves allow. */
static const guint32 queries[][2] = {
    {0, 0},   {1, 0},          {6, 0},          {7, 0},          {7, 1},          {0xd, 0},
    {0xd, 1}, {0x80000000, 0}, {0x80000001, 0}, {0x80000007, 0}, {0x80000008, 0},
};

static const char *const reg_names[] = {"eax", "ebx", "ecx", "edx"};

/* ---- CPUID tables ---- */

static guint32 entry_reg(const MvmCpuidEntry *e, guint reg)
{
    const guint32 regs[] = {e->eax, e->ebx, e->ecx, e->edx};
    return regs[reg];
}

/*
 * The entry CPUID(@leaf, @subleaf) answers with, as KVM looks it up: the subleaf counts only for
 * leaves whose entries say it is significant. NULL: there is none, and KVM answers zeros.
 */
static const MvmCpuidEntry *find_entry(GArray *table, guint32 leaf, guint32 subleaf)
{
    for (guint i = 0; i < table->len; i++) {
        const MvmCpuidEntry *e = &g_array_index(table, MvmCpuidEntry, i);
        if (e->function == leaf &&
            (e->index == subleaf || !(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)))
            return e;
    }
    return NULL;
}

static gboolean table_has(GArray *table, const Feature *f)
{
    const MvmCpuidEntry *e = find_entry(table, f->leaf, f->subleaf);
    return e != NULL && (entry_reg(e, f->reg) >> f->bit & 1);
}

/* A struct kvm_cpuid2 as MvmCpuidEntry (struct kvm_cpuid_entry2 has padding). */
static GArray *table_of(const struct kvm_cpuid2 *cpuid)
{
    GArray *table = g_array_new(FALSE, FALSE, sizeof(MvmCpuidEntry));

    for (guint i = 0; i < cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *k = &cpuid->entries[i];
        MvmCpuidEntry e = {k->function, k->index, k->flags, k->eax, k->ebx, k->ecx, k->edx};
        g_array_append_val(table, e);
    }
    return table;
}

/* KVM_GET_SUPPORTED_CPUID: what KVM can be told to give. */
static GArray *kvm_supported(void)
{
    static GArray *table;
    g_autoptr(GError) error = NULL;
    const MvmKvm *kvm = mvm_kvm_get(&error);

    g_assert_no_error(error);
    if (table == NULL)
        table = table_of(kvm->supported_cpuid);
    return table;
}

/* What KVM shows a guest that was given the whole supported table. */
static GArray *kvm_effective(void)
{
    static GArray *table;
    g_autoptr(GError) error = NULL;
    const struct kvm_cpuid2 *effective = mvm_kvm_effective_cpuid(&error);

    g_assert_no_error(error);
    if (table == NULL)
        table = table_of(effective);
    return table;
}

/* Whether a guest of this host can have @f. */
static gboolean kvm_has(const Feature *f)
{
    return table_has(kvm_supported(), f) || table_has(kvm_effective(), f);
}

/* Whether KVM shows guests @f whatever the VMM says (kvm_pvm), so no template can hide it. */
static gboolean kvm_cannot_hide(const Feature *f)
{
    return table_has(kvm_effective(), f) && !table_has(kvm_supported(), f);
}

/* Whether KVM here shows guests any feature bit it was not given (beyond the leaves above). */
static gboolean kvm_shows_unsupported(void)
{
    GArray *effective = kvm_effective();

    for (guint i = 0; i < effective->len; i++) {
        const MvmCpuidEntry *e = &g_array_index(effective, MvmCpuidEntry, i);
        const MvmCpuidEntry *s = find_entry(kvm_supported(), e->function, e->index);
        for (guint r = EAX; r <= EDX; r++)
            if (entry_reg(e, r) & ~(s != NULL ? entry_reg(s, r) : 0))
                return TRUE;
    }
    return FALSE;
}

/* A rare feature no guest of this host can have, or NULL (and the test skips) when it has all. */
static const Feature *missing_feature(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(rare_features); i++)
        if (!kvm_has(&rare_features[i]))
            return &rare_features[i];
    g_test_skip("this host's KVM has every feature this test could claim it lacks");
    return NULL;
}

/* Whether @message lists feature @name (as in "(avx, avx2)" or ": avx512f"), not a longer one. */
static gboolean lists_feature(const char *message, const char *name)
{
    gsize len = strlen(name);

    for (const char *p = message; (p = strstr(p, name)) != NULL; p++)
        if ((p == message || p[-1] == ' ' || p[-1] == '(') &&
            (p[len] == ',' || p[len] == ')' || p[len] == '\0'))
            return TRUE;
    return FALSE;
}

/* ---- guests ---- */

/* Whether the guest saw @f (a leaf it did not print, being above its maximum, has none). */
static gboolean guest_has(const char *output, const Feature *f)
{
    guint32 regs[4];
    return testguest_parse_cpuid(output, f->leaf, f->subleaf, regs) && (regs[f->reg] >> f->bit & 1);
}

static MvmCpuTemplate *builtin(const char *name)
{
    g_autoptr(GError) error = NULL;
    MvmCpuTemplate *tmpl = mvm_cpu_template_new_builtin(name, &error);

    g_assert_no_error(error);
    return tmpl;
}

/* A template that clears (@set FALSE) or sets feature @f. */
static MvmCpuTemplate *custom_template(const char *name, const Feature *f, gboolean set)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *json = g_strdup_printf(
        "{\"description\": \"%s %s\", \"cpuid\": [{\"leaf\": \"0x%x\", \"subleaf\": \"0x%x\", "
        "\"register\": \"%s\", \"%s\": \"0x%08x\"}]}",
        set ? "with" : "without", f->name, f->leaf, f->subleaf, reg_names[f->reg],
        set ? "set" : "clear", 1u << f->bit);
    MvmCpuTemplate *tmpl = mvm_cpu_template_new_from_json(name, json, strlen(json), &error);

    g_assert_no_error(error);
    return tmpl;
}

/* A mode=cpuid guest with @tmpl (NULL: none, which is "host"), not started. */
static MvmVm *cpuid_guest_new(MvmCpuTemplate *tmpl, Capture *c, GError **error)
{
    g_autoptr(MvmVmConfig) config = testguest_config("mode=cpuid stay=1", 1, 16);

    config->cpu_template = tmpl != NULL ? mvm_cpu_template_ref(tmpl) : NULL;
    MvmVm *vm = mvm_vm_new(config, error);
    if (vm != NULL)
        mvm_vm_set_console_callback(vm, on_console, c);
    return vm;
}

/*
 * A cpuid guest with @tmpl, which takes away the features @removed (NULL-terminated; those the
 * test knows of). NULL where this host must refuse it: where KVM shows guests one of them
 * anyway, the refusal is MVM_ERROR_INCOMPATIBLE_CPU naming it.
 */
static MvmVm *templated_guest_new(MvmCpuTemplate *tmpl, const Feature *const *removed, Capture *c)
{
    g_autoptr(GError) error = NULL;
    MvmVm *vm = cpuid_guest_new(tmpl, c, &error);
    gboolean must_refuse = FALSE;

    for (const Feature *const *f = removed; *f != NULL; f++)
        must_refuse |= kvm_cannot_hide(*f);
    if (vm != NULL) {
        g_assert_false(must_refuse);
        return vm;
    }
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU);
    g_test_message("refused, as it must be on this host: %s", error->message);
    g_assert_true(kvm_shows_unsupported());
    for (const Feature *const *f = removed; *f != NULL; f++)
        if (kvm_cannot_hide(*f))
            g_assert_true(lists_feature(error->message, (*f)->name));
    return NULL;
}

/* Starts @vm and returns its CPUID lines once the guest printed them all (and stays). */
static char *run_cpuid_guest(MvmVm *vm, Capture *c)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_no_error(error);
    g_assert_true(capture_wait_from(c, 0, "CPUID staying\n", TIMEOUT_US));
    char *out = capture_dup_from(c, 0);
    g_assert_null(strstr(out, "FAIL"));
    return out;
}

static MvmCpuConfig *dump_cpu_config(MvmVm *vm)
{
    g_autoptr(GError) error = NULL;
    MvmCpuConfig *dump = mvm_vm_dump_cpu_config(vm, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(dump->vcpus->len, ==, 1);
    return dump;
}

static GArray *vcpu0_cpuid(const MvmCpuConfig *dump)
{
    const MvmVcpuCpuConfig *vcpu = g_ptr_array_index(dump->vcpus, 0);
    return vcpu->cpuid;
}

/* ---- what the guest saw ---- */

/*
 * Whether vCPU 0's table in @dump and the guest both have feature @f, or both lack it; the
 * table by its bit and by mvm_cpuid_feature_names().
 */
static void assert_feature(const char *out, const MvmCpuConfig *dump, const Feature *f,
                           gboolean expected)
{
    GArray *table = vcpu0_cpuid(dump);
    g_auto(GStrv) names = mvm_cpuid_feature_names((const MvmCpuidEntry *)table->data, table->len);

    g_test_message("%s: expected %s", f->name, expected ? "present" : "absent");
    g_assert_cmpint(table_has(table, f), ==, expected);
    g_assert_cmpint(g_strv_contains((const char *const *)names, f->name), ==, expected);
    g_assert_cmpint(guest_has(out, f), ==, expected);
}

/*
 * Each CPUID line the guest printed equals vCPU 0's entry in @dump (zeros where it has none),
 * and the guest printed exactly the leaves the table's maximum leaves allow.
 */
static void assert_guest_sees_dump(const char *out, const MvmCpuConfig *dump)
{
    GArray *table = vcpu0_cpuid(dump);
    const MvmCpuidEntry *basic = find_entry(table, 0, 0);
    const MvmCpuidEntry *ext = find_entry(table, 0x80000000, 0);

    g_assert_nonnull(basic);
    for (gsize i = 0; i < G_N_ELEMENTS(queries); i++) {
        guint32 leaf = queries[i][0], subleaf = queries[i][1], regs[4];
        const MvmCpuidEntry *e = find_entry(table, leaf, subleaf);
        gboolean in_range =
            leaf < 0x80000000 ? leaf <= basic->eax : ext != NULL && leaf <= ext->eax;

        g_assert_cmpint(testguest_parse_cpuid(out, leaf, subleaf, regs), ==, in_range);
        if (!in_range)
            continue;
        g_test_message("leaf 0x%x.%u: guest %08x %08x %08x %08x", leaf, subleaf, regs[0], regs[1],
                       regs[2], regs[3]);
        for (guint r = EAX; r <= EDX; r++)
            g_assert_cmphex(regs[r], ==, e != NULL ? entry_reg(e, r) : 0);
    }
}

static void assert_same_cpuid(const MvmCpuConfig *a, const MvmCpuConfig *b)
{
    GArray *x = vcpu0_cpuid(a), *y = vcpu0_cpuid(b);

    g_assert_cmpmem(x->data, x->len * sizeof(MvmCpuidEntry), y->data,
                    y->len * sizeof(MvmCpuidEntry));
}

/* ---- tests ---- */

/* No template: the table is the same running and paused, and it is what the guest sees. */
static void test_host(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();

    if (!have_kvm())
        return;
    g_autoptr(MvmVm) vm = cpuid_guest_new(NULL, c, &error);
    g_assert_no_error(error);
    g_autofree char *out = run_cpuid_guest(vm, c);
    g_autoptr(MvmCpuConfig) running = dump_cpu_config(vm);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_RUNNING);
    g_assert_true(mvm_vm_pause(vm, &error));
    g_autoptr(MvmCpuConfig) paused = dump_cpu_config(vm);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);

    g_assert_cmpstr(running->cpu_template, ==, MVM_CPU_TEMPLATE_HOST);
    assert_guest_sees_dump(out, running);
    assert_same_cpuid(running, paused);
    /* A stopped VM's vCPUs answer nothing. */
    g_assert_true(mvm_vm_stop(vm, &error));
    g_assert_null(mvm_vm_dump_cpu_config(vm, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
}

/* What a psABI level keeps, where the host has it, and what it must take away. */
static void assert_level(const char *name, gboolean v3)
{
    g_autoptr(MvmCpuTemplate) tmpl = builtin(name);
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = templated_guest_new(tmpl, v3 ? avx512 : v3_only, c);

    if (vm == NULL)
        return;
    g_autofree char *out = run_cpuid_guest(vm, c);
    g_autoptr(MvmCpuConfig) dump = dump_cpu_config(vm);

    g_assert_cmpstr(dump->cpu_template, ==, name);
    assert_guest_sees_dump(out, dump);
    assert_feature(out, dump, &SSE2, TRUE);
    assert_feature(out, dump, &SSE4_2, kvm_has(&SSE4_2));
    assert_feature(out, dump, &POPCNT, kvm_has(&POPCNT));
    for (const Feature *const *f = v3_only; *f != NULL; f++)
        assert_feature(out, dump, *f, v3 && kvm_has(*f));
    assert_feature(out, dump, &AVX512F, FALSE);
}

static void test_x86_64_v2(void)
{
    if (have_kvm())
        assert_level("x86-64-v2", FALSE);
}

static void test_x86_64_v3(void)
{
    if (have_kvm())
        assert_level("x86-64-v3", TRUE);
}

/* A feature this host has and can hide from a guest, for a custom template to clear. */
static const Feature *clearable_feature(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(clearable_features); i++)
        if (kvm_has(&clearable_features[i]) && !kvm_cannot_hide(&clearable_features[i]))
            return &clearable_features[i];
    return NULL;
}

/* A custom template clearing a feature the host has: the guest goes without it, and only it. */
static void test_custom_clear(void)
{
    if (!have_kvm())
        return;
    const Feature *f = clearable_feature();
    if (f == NULL) {
        g_test_skip("this host's KVM can hide none of the features this test would clear");
        return;
    }
    g_autoptr(MvmCpuTemplate) tmpl = custom_template("no-feature", f, FALSE);
    const Feature *const removed[] = {f, NULL};
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = templated_guest_new(tmpl, removed, c);
    g_assert_nonnull(vm);
    g_autofree char *out = run_cpuid_guest(vm, c);
    g_autoptr(MvmCpuConfig) dump = dump_cpu_config(vm);

    g_assert_cmpstr(dump->cpu_template, ==, "no-feature");
    assert_guest_sees_dump(out, dump);
    assert_feature(out, dump, f, FALSE);
    assert_feature(out, dump, &SSE2, TRUE);
}

/* A custom template clearing a feature KVM here shows guests anyway (kvm_pvm): refused. */
static void test_custom_unhideable(void)
{
    if (!have_kvm())
        return;
    const Feature *f = NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(clearable_features) && f == NULL; i++)
        if (kvm_cannot_hide(&clearable_features[i]))
            f = &clearable_features[i];
    if (f == NULL) {
        g_test_skip("this host's KVM hides every feature it is told to");
        return;
    }
    g_autoptr(MvmCpuTemplate) tmpl = custom_template("cannot-hide", f, FALSE);
    const Feature *const removed[] = {f, NULL};
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = templated_guest_new(tmpl, removed, c);
    g_assert_null(vm);
}

/* A custom template setting a feature the host's KVM lacks: no VM, and the error names it. */
static void test_custom_unsupported(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();

    if (!have_kvm())
        return;
    const Feature *f = missing_feature();
    if (f == NULL)
        return;
    g_autoptr(MvmCpuTemplate) tmpl = custom_template("more-than-host", f, TRUE);
    g_autoptr(MvmVm) vm = cpuid_guest_new(tmpl, c, &error);
    g_assert_null(vm);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU);
    g_test_message("refused: %s", error->message);
    g_assert_true(lists_feature(error->message, f->name));
}

/* A snapshot of the running guest @vm in a new directory; its CPU configuration in @dump. */
static char *snapshot_cpuid_guest(MvmVm *vm, Capture *c, MvmCpuConfig **dump)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *out = run_cpuid_guest(vm, c);
    char *dir = make_tmpdir();

    *dump = dump_cpu_config(vm);
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    return dir;
}

/*
 * A VM with a template that takes something away, for the snapshot test: x86-64-v2, or where
 * this host cannot honour that (kvm_pvm), a custom template it can.
 */
static MvmVm *templated_guest_for_snapshot(Capture *c, char **name)
{
    g_autoptr(MvmCpuTemplate) v2 = builtin("x86-64-v2");
    MvmVm *vm = templated_guest_new(v2, v3_only, c);
    const Feature *f = clearable_feature();

    *name = g_strdup(vm != NULL ? "x86-64-v2" : "no-feature");
    if (vm != NULL || f == NULL)
        return vm;
    g_autoptr(MvmCpuTemplate) custom = custom_template(*name, f, FALSE);
    const Feature *const removed[] = {f, NULL};
    return templated_guest_new(custom, removed, c);
}

/* A guest restored keeps its template: its name, and vCPU 0's CPUID table. */
static void test_snapshot(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();
    g_autofree char *name = NULL;

    if (!have_kvm())
        return;
    g_autoptr(MvmVm) vm = templated_guest_for_snapshot(c, &name);
    if (vm == NULL) {
        g_test_skip("this host's KVM can honour no template that takes features away");
        return;
    }
    g_autoptr(MvmCpuConfig) before = NULL;
    g_autofree char *dir = snapshot_cpuid_guest(vm, c, &before);
    g_autoptr(MvmVm) restored = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    rm_rf(dir);
    g_assert_no_error(error);

    const MvmVmConfig *config = mvm_vm_get_config(restored);
    g_assert_nonnull(config->cpu_template);
    g_assert_cmpstr(mvm_cpu_template_get_name(config->cpu_template), ==, name);
    g_autoptr(MvmCpuConfig) after = dump_cpu_config(restored);
    g_assert_cmpstr(after->cpu_template, ==, name);
    assert_same_cpuid(before, after);
    g_assert_true(mvm_vm_resume(restored, &error));
}

/* @payload with vCPU 0's CPUID table (the vCPU tuple's first member) announcing @f. */
static GVariant *payload_with_feature(GVariant *payload, const Feature *f)
{
    g_autoptr(GVariant) vcpus = g_variant_lookup_value(payload, "vcpus", NULL);
    g_autoptr(GVariant) vcpu0 = g_variant_get_child_value(vcpus, 0);
    g_autoptr(GVariant) cpuid = g_variant_get_child_value(vcpu0, 0);
    gsize size;
    const guint8 *bytes = g_variant_get_fixed_array(cpuid, &size, 1);
    g_autofree struct kvm_cpuid_entry2 *entries = g_memdup2(bytes, size);
    struct kvm_cpuid_entry2 *e = NULL;

    for (guint i = 0; i < size / sizeof(*entries) && e == NULL; i++)
        if (entries[i].function == f->leaf && entries[i].index == f->subleaf)
            e = &entries[i];
    g_assert_nonnull(e);
    guint32 *regs[] = {&e->eax, &e->ebx, &e->ecx, &e->edx};
    *regs[f->reg] |= 1u << f->bit;

    GVariant *new_cpuid = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, entries, size, 1);
    GVariant *new_vcpus =
        variant_replace_child(vcpus, 0, variant_replace_child(vcpu0, 0, new_cpuid));
    return vardict_with(payload, "vcpus", new_vcpus);
}

/* A snapshot whose guest saw a feature this host's KVM lacks: refused, naming the feature. */
static void test_snapshot_missing_feature(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();

    if (!have_kvm())
        return;
    const Feature *f = missing_feature();
    if (f == NULL)
        return;
    g_autoptr(MvmVm) vm = cpuid_guest_new(NULL, c, &error);
    g_assert_no_error(error);
    g_autoptr(MvmCpuConfig) dump = NULL;
    g_autofree char *dir = snapshot_cpuid_guest(vm, c, &dump);
    g_autoptr(GVariant) payload = snapshot_read_payload(dir);
    snapshot_write_payload(dir, payload_with_feature(payload, f), MVM_SNAPSHOT_MAJOR,
                           MVM_SNAPSHOT_MINOR);

    g_autoptr(MvmVm) restored = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    rm_rf(dir);
    g_assert_null(restored);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INCOMPATIBLE_CPU);
    g_test_message("refused: %s", error->message);
    g_assert_true(lists_feature(error->message, f->name));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    if (g_getenv("MVM_TESTGUEST") == NULL) {
        g_printerr("MVM_TESTGUEST is not set\n");
        return 77;
    }
    g_test_add_func("/vm/cpu-template/host", test_host);
    g_test_add_func("/vm/cpu-template/x86-64-v2", test_x86_64_v2);
    g_test_add_func("/vm/cpu-template/x86-64-v3", test_x86_64_v3);
    g_test_add_func("/vm/cpu-template/custom", test_custom_clear);
    g_test_add_func("/vm/cpu-template/custom-unhideable", test_custom_unhideable);
    g_test_add_func("/vm/cpu-template/custom-unsupported", test_custom_unsupported);
    g_test_add_func("/vm/cpu-template/snapshot", test_snapshot);
    g_test_add_func("/vm/cpu-template/snapshot-missing-feature", test_snapshot_missing_feature);
    return g_test_run();
}
