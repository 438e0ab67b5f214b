/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The golden snapshots of tests/vm/golden (README.md there), each written once by the format of
 * its day: this build must still read every one. The decode needs no KVM and runs everywhere;
 * the restore resumes the guest and reads it go on counting where it stopped, on a host that can
 * take a snapshot of the host that made it. Where this host cannot, the restore must be refused
 * for the one reason this test predicts from the host (TSC rate, MSR list, XSAVE size), and the
 * test says so as a skip: the resume was not proven here.
 */
#include <gio/gio.h>
#include <stdio.h>
#include <string.h>

#include "cpu-features.h"
#include "kvm.h"
#include "layout.h"
#include "snapshot-test-util.h"
#include "snapshot.h"
#include "vm-private.h"

#define GOLDEN_DIR TEST_SRCDIR "/golden"

typedef struct {
    char *dir;
    GKeyFile *expect;
} Golden;

/*
 * Whether the golden's guest had the VM generation ID device (microvm.h): formats from 2.2 on
 * record it ("vmgenid-addr"); the golden's directory is named after its format.
 */
static gboolean has_vmgenid(const Golden *g)
{
    g_autofree char *name = g_path_get_basename(g->dir);
    guint major = 0, minor = 0;

    g_assert_cmpint(sscanf(name, "snapshot-%u.%u", &major, &minor), ==, 2);
    return major > 2 || (major == 2 && minor >= 2);
}

static GBytes *read_state(const Golden *g)
{
    g_autofree char *path = g_build_filename(g->dir, "state", NULL);
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    return g_bytes_new_take(g_steal_pointer(&data), len);
}

static MvmSnapshotState *decode(const Golden *g, GError **error)
{
    MvmSnapshotLimits limits;
    g_autoptr(GBytes) bytes = read_state(g);
    gsize len;
    const guint8 *data = g_bytes_get_data(bytes, &len);

    mvm_snapshot_limits_default(&limits);
    return mvm_snapshot_decode(data, len, &limits, error);
}

/* What make-golden's guest was, as the decoder must read it back. */
static void test_decode(gconstpointer data)
{
    const Golden *g = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmSnapshotState) state = decode(g, &error);

    g_assert_no_error(error);
    g_autofree char *cmdline = g_key_file_get_string(g->expect, "golden", "cmdline", NULL);
    guint64 mib = g_key_file_get_uint64(g->expect, "golden", "memory-mib", NULL);
    const MvmVmConfig *config = state->config;
    g_assert_cmpuint(config->n_vcpus, ==, 1);
    g_assert_cmpuint(config->memory_mib, ==, mib);
    g_assert_cmpstr(config->cmdline, ==, cmdline);
    g_assert_true(g_str_has_suffix(config->kernel_path, "testguest.elf"));
    g_assert_true(config->debug_exit);
    g_assert_false(config->prefer_pvh || config->rng);
    g_assert_true(config->disks == NULL && config->nics == NULL && config->vsock_cid == 0);
    g_assert_cmpuint(state->memory_size, ==, mib * 1024 * 1024);
    g_assert_cmphex(state->vmgenid_addr, ==, has_vmgenid(g) ? MVM_VMGENID_ADDR : 0);

    /* Counting in long mode, in the image the guest loads at 1 MiB. */
    g_assert_cmpuint(state->vcpus->len, ==, 1);
    const MvmVcpuState *vcpu = g_ptr_array_index(state->vcpus, 0);
    g_assert_cmpuint(vcpu->mp_state.mp_state, ==, KVM_MP_STATE_RUNNABLE);
    g_assert_cmphex(vcpu->regs.rip, >=, 0x100000);
    g_assert_cmphex(vcpu->regs.rip, <, 0x200000);
    g_assert_cmphex(vcpu->sregs.cs.selector, ==, 0x10);
    g_assert_true(vcpu->sregs.cs.l);
    g_assert_cmphex(vcpu->sregs.efer & 0x500, ==, 0x500);          /* LME | LMA */
    g_assert_cmphex(vcpu->sregs.cr0 & 0x80000001, ==, 0x80000001); /* PG | PE */
    g_assert_cmpuint(vcpu->cpuid->nent, >, 0);
    g_assert_cmpuint(vcpu->msrs->nmsrs, >, 0);
    g_assert_cmpuint(vcpu->tsc_khz, >, 0);
    g_assert_cmpuint(state->clock.clock, >, 0);
    g_assert_nonnull(state->serial);
    g_assert_nonnull(state->i8042);
    g_assert_cmpuint(g_variant_n_children(state->devices), ==, 0);
    g_test_message("golden: rip 0x%llx, %u CPUID entries, %u MSRs, XSAVE %s, TSC %u kHz",
                   vcpu->regs.rip, vcpu->cpuid->nent, vcpu->msrs->nmsrs,
                   vcpu->xsave != NULL ? "yes" : "no", vcpu->tsc_khz);
}

static gboolean msr_listed(const MvmKvm *kvm, guint32 index)
{
    for (guint i = 0; i < kvm->msr_index_list->nmsrs; i++)
        if (kvm->msr_index_list->indices[i] == index)
            return TRUE;
    return FALSE;
}

/*
 * Why this host must refuse the golden snapshot, in the order the restore checks (the decoder's
 * XSAVE size and MSR list, then the CPU features, then the TSC rate): NULL when it must take
 * it. Sets @code.
 */
static char *predict_refusal(const MvmSnapshotState *state, int *code)
{
    g_autoptr(GError) error = NULL;
    const MvmKvm *kvm = mvm_kvm_get(&error);
    const MvmVcpuState *vcpu = g_ptr_array_index(state->vcpus, 0);

    g_assert_no_error(error);
    *code = MVM_ERROR_INVALID_ARGUMENT;
    gsize max_xsave = kvm->has_xsave ? MAX(kvm->xsave_size, sizeof(struct kvm_xsave)) : 0;
    if (vcpu->xsave != NULL && g_bytes_get_size(vcpu->xsave) > max_xsave)
        return g_strdup_printf("XSAVE area of %" G_GSIZE_FORMAT " bytes",
                               g_bytes_get_size(vcpu->xsave));
    /* A host whose KVM saves fewer MSRs than the snapshot has refuses the count first. */
    if (vcpu->msrs->nmsrs > kvm->msr_index_list->nmsrs)
        return g_strdup_printf("%u MSRs; expected 1 to %u", vcpu->msrs->nmsrs,
                               kvm->msr_index_list->nmsrs);
    for (guint i = 0; i < vcpu->msrs->nmsrs; i++)
        if (!msr_listed(kvm, vcpu->msrs->entries[i].index))
            return g_strdup_printf("MSR 0x%x is not one KVM saves", vcpu->msrs->entries[i].index);

    /* Then the CPU features its guest saw, which this host's guests must be shown too. */
    const struct kvm_cpuid2 *effective = mvm_kvm_effective_cpuid(&error);
    g_assert_no_error(error);
    g_autofree char *missing =
        mvm_cpuid_missing_features(vcpu->cpuid, effective, kvm->supported_cpuid);
    if (missing != NULL) {
        *code = MVM_ERROR_INCOMPATIBLE_CPU;
        return g_strdup_printf("CPU features this host's KVM cannot give: %s", missing);
    }

    /* A VM that never runs, for a vCPU to ask this host's TSC rate. */
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) scratch = new_guest("mode=idle", 1, 2, c);
    gboolean required = FALSE;
    MvmVcpu *v = scratch->vcpus[0].vcpu;
    g_test_message("this host: TSC %u kHz, TSC_CONTROL %s, %u MSRs listed",
                   mvm_vcpu_get_tsc_khz(v, NULL), kvm->has_tsc_control ? "yes" : "no",
                   kvm->msr_index_list->nmsrs);
    if (mvm_vcpu_is_tsc_scaling_required(v, vcpu->tsc_khz, &required, NULL) && required &&
        !kvm->has_tsc_control) {
        *code = MVM_ERROR_NOT_SUPPORTED;
        return g_strdup_printf("the snapshot's TSC runs at %u kHz", vcpu->tsc_khz);
    }
    return NULL;
}

/* memory.gz into @dir/memory, beside a copy of the state: a snapshot directory to restore. */
static void expand(const Golden *g, const char *dir)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *gz = g_build_filename(g->dir, "memory.gz", NULL);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *state = g_build_filename(dir, "state", NULL);
    g_autoptr(GFile) in_file = g_file_new_for_path(gz), out_file = g_file_new_for_path(memory);
    g_autoptr(GFileInputStream) in = g_file_read(in_file, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GZlibDecompressor) gunzip = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    g_autoptr(GInputStream) plain =
        g_converter_input_stream_new(G_INPUT_STREAM(in), G_CONVERTER(gunzip));
    g_autoptr(GFileOutputStream) out =
        g_file_replace(out_file, NULL, FALSE, G_FILE_CREATE_PRIVATE, NULL, &error);
    g_assert_no_error(error);
    g_output_stream_splice(
        G_OUTPUT_STREAM(out), plain,
        G_OUTPUT_STREAM_SPLICE_CLOSE_SOURCE | G_OUTPUT_STREAM_SPLICE_CLOSE_TARGET, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) bytes = read_state(g);
    g_assert_true(g_file_set_contents(state, g_bytes_get_data(bytes, NULL),
                                      (gssize)g_bytes_get_size(bytes), &error));
}

/* The guest finishes the line it was writing, then counts on from the last COUNTER it printed. */
static void assert_goes_on(MvmVm *vm, Capture *c, const Golden *g)
{
    g_autoptr(GError) error = NULL;
    guint64 last = g_key_file_get_uint64(g->expect, "golden", "last", NULL);
    guint64 every = g_key_file_get_uint64(g->expect, "golden", "every", NULL);
    g_autofree char *partial = g_key_file_get_string(g->expect, "golden", "partial", NULL);
    g_autofree char *want = g_strdup_printf("COUNTER %" G_GUINT64_FORMAT "\n", last + 2 * every);

    g_assert_cmpuint(last, >, 0);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_no_error(error);
    g_assert_true(capture_wait_from(c, 0, want, TIMEOUT_US));
    g_autofree char *out = capture_dup_from(c, 0);
    g_autofree char *joined = g_strconcat(partial != NULL ? partial : "", out, NULL);
    g_test_message("the restored guest printed: %.200s", out);
    g_assert_cmpuint(first_counter(joined), ==, last + every);
    /* The guest checks its pattern at each COUNTER line and says FAIL if memory came back wrong. */
    g_assert_null(strstr(joined, "FAIL"));
    g_assert_null(strstr(joined, "TESTGUEST pattern start"));
}

static void test_restore(gconstpointer data)
{
    const Golden *g = data;
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autoptr(MvmSnapshotState) state = decode(g, &error);
    g_assert_no_error(error);
    int code = 0;
    g_autofree char *refusal = predict_refusal(state, &code);
    g_autofree char *dir = make_tmpdir();
    expand(g, dir);

    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    rm_rf(dir);
    if (refusal != NULL) {
        g_assert_null(vm);
        g_assert_error(error, MVM_ERROR, code);
        g_assert_nonnull(strstr(error->message, refusal));
        g_autofree char *why = g_strdup_printf(
            "this host refuses the golden snapshot, as predicted: %s", error->message);
        g_test_skip(why);
        return;
    }
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);
    /* Older than the generation ID device: the VM has no ID and cannot be given one. */
    guint8 id[MVM_GENERATION_ID_SIZE] = {1};
    if (has_vmgenid(g)) {
        g_assert_true(mvm_vm_get_generation_id(vm, id));
    } else {
        g_assert_false(mvm_vm_get_generation_id(vm, id));
        g_assert_false(mvm_vm_set_generation_id(vm, id, &error));
        g_assert_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED);
        g_clear_error(&error);
    }
    mvm_vm_set_console_callback(vm, on_console, c);
    assert_goes_on(vm, c, g);
}

int main(int argc, char **argv)
{
    g_autoptr(GDir) dir = g_dir_open(GOLDEN_DIR, 0, NULL);
    g_autoptr(GPtrArray) goldens = g_ptr_array_new();
    const char *name;

    g_test_init(&argc, &argv, NULL);
    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir)) != NULL) {
        if (!g_str_has_prefix(name, "snapshot-"))
            continue;
        Golden *g = g_new0(Golden, 1);
        g->dir = g_build_filename(GOLDEN_DIR, name, NULL);
        g->expect = g_key_file_new();
        g_autofree char *expect = g_build_filename(g->dir, "expect", NULL);
        g_assert_true(g_key_file_load_from_file(g->expect, expect, G_KEY_FILE_NONE, NULL));
        g_ptr_array_add(goldens, g);
        g_autofree char *decode_path = g_strdup_printf("/snapshot/golden/%s/decode", name + 9);
        g_autofree char *restore_path = g_strdup_printf("/snapshot/golden/%s/restore", name + 9);
        g_test_add_data_func(decode_path, g, test_decode);
        g_test_add_data_func(restore_path, g, test_restore);
    }
    /* Every format keeps its golden: none at all means the directory went missing. */
    g_assert_cmpuint(goldens->len, >, 0);
    return g_test_run();
}
