/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A vCPU's state in a snapshot (MVM_SNAPSHOT_VCPU_TYPE in snapshot.h): MvmVcpuState to a
 * GVariant and back, the way back checked as untrusted input. Taking the state from KVM and
 * putting it back is vcpu-state.c's; this file needs no KVM, so the fuzzer runs it.
 */
#include <string.h>

#include "snapshot.h"

static GVariant *bytes_variant(const void *data, gsize size)
{
    /* An empty array still needs a pointer. */
    return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data != NULL ? data : "", size, 1);
}

static GVariant *msrs_variant(const struct kvm_msrs *msrs)
{
    GVariantBuilder builder;

    g_variant_builder_init(&builder, G_VARIANT_TYPE("a(ut)"));
    for (guint32 i = 0; i < msrs->nmsrs; i++)
        g_variant_builder_add(&builder, "(ut)", msrs->entries[i].index,
                              (guint64)msrs->entries[i].data);
    return g_variant_builder_end(&builder);
}

GVariant *mvm_vcpu_state_to_variant(const MvmVcpuState *s)
{
    gsize xsave_size = 0;
    gconstpointer xsave = s->xsave != NULL ? g_bytes_get_data(s->xsave, &xsave_size) : NULL;

    return g_variant_new(
        "(@ayu@ay@ay@ay@ayb@ay@ay@ay@a(ut)@ayu)",
        bytes_variant(s->cpuid->entries, s->cpuid->nent * sizeof(s->cpuid->entries[0])),
        s->mp_state.mp_state, bytes_variant(&s->regs, sizeof(s->regs)),
        bytes_variant(&s->sregs, sizeof(s->sregs)), bytes_variant(xsave, xsave_size),
        bytes_variant(&s->fpu, sizeof(s->fpu)), s->has_xcrs,
        bytes_variant(&s->xcrs, sizeof(s->xcrs)),
        bytes_variant(&s->debugregs, sizeof(s->debugregs)),
        bytes_variant(&s->lapic, sizeof(s->lapic)), msrs_variant(s->msrs),
        bytes_variant(&s->events, sizeof(s->events)), s->tsc_khz);
}

/*
 * A table KVM could have given: no leaf answered twice (KVM answers with the first match, and
 * the restore's feature check must read the entry the guest gets), and no hypervisor leaves
 * past KVM's own at 0x40000000 (KVM looks for its signature at every 0x100 up to 0x40010000).
 */
static gboolean check_cpuid_entries(const struct kvm_cpuid2 *cpuid, GError **error)
{
    for (guint i = 0; i < cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        if (e->function >= 0x40000100 && e->function <= 0x4fffffff)
            return mvm_snapshot_invalid(error, "CPUID leaf 0x%x is not one KVM gives", e->function);
        for (guint j = 0; j < i; j++)
            if (cpuid->entries[j].function == e->function && cpuid->entries[j].index == e->index)
                return mvm_snapshot_invalid(error, "CPUID leaf 0x%x subleaf 0x%x appears twice",
                                            e->function, e->index);
    }
    return TRUE;
}

static gboolean cpuid_from_variant(GVariant *bytes, MvmVcpuState *state, GError **error)
{
    gsize n;
    gconstpointer data = g_variant_get_fixed_array(bytes, &n, 1);
    gsize entry = sizeof(state->cpuid->entries[0]);

    /* KVM_SET_CPUID2 takes at most KVM_MAX_CPUID_ENTRIES (256) entries. */
    if (n == 0 || n % entry != 0 || n / entry > 256)
        return mvm_snapshot_invalid(
            error, "CPUID table of %" G_GSIZE_FORMAT " bytes is not 1-256 entries", n);
    state->cpuid = g_malloc0(sizeof(*state->cpuid) + n);
    state->cpuid->nent = (guint32)(n / entry);
    memcpy(state->cpuid->entries, data, n);
    return check_cpuid_entries(state->cpuid, error);
}

static gboolean msr_is_known(const MvmSnapshotLimits *limits, guint32 index)
{
    if (limits->msr_indices == NULL)
        return TRUE;
    for (guint i = 0; i < limits->n_msr_indices; i++)
        if (limits->msr_indices[i] == index)
            return TRUE;
    return FALSE;
}

/* Only MSRs KVM lists as saveable: a snapshot has no business setting any other. */
static gboolean msrs_from_variant(GVariant *array, MvmVcpuState *state,
                                  const MvmSnapshotLimits *limits, GError **error)
{
    gsize n = g_variant_n_children(array);

    if (n == 0 || n > limits->max_msrs)
        return mvm_snapshot_invalid(error, "%" G_GSIZE_FORMAT " MSRs; expected 1 to %u", n,
                                    limits->max_msrs);
    state->msrs = mvm_vcpu_msrs_new(n);
    for (gsize i = 0; i < n; i++) {
        guint32 index;
        guint64 value;
        g_variant_get_child(array, i, "(ut)", &index, &value);
        if (!msr_is_known(limits, index))
            return mvm_snapshot_invalid(error, "MSR 0x%x is not one KVM saves", index);
        state->msrs->entries[i].index = index;
        state->msrs->entries[i].data = value;
    }
    return TRUE;
}

static gboolean xsave_from_variant(GVariant *bytes, MvmVcpuState *state, gsize max_xsave,
                                   GError **error)
{
    gsize n;
    gconstpointer data = g_variant_get_fixed_array(bytes, &n, 1);

    if (n == 0)
        return TRUE; /* the FPU travels in fpu instead */
    if (n < sizeof(struct kvm_xsave) || n > max_xsave)
        return mvm_snapshot_invalid(error,
                                    "XSAVE area of %" G_GSIZE_FORMAT
                                    " bytes; this host takes %" G_GSIZE_FORMAT
                                    " to %" G_GSIZE_FORMAT,
                                    n, sizeof(struct kvm_xsave), max_xsave);
    state->xsave = g_bytes_new(data, n);
    return TRUE;
}

MvmVcpuState *mvm_vcpu_state_from_variant(GVariant *variant, const MvmSnapshotLimits *limits,
                                          GError **error)
{
    g_autoptr(MvmVcpuState) state = g_new0(MvmVcpuState, 1);
    g_autoptr(GVariant) cpuid = NULL, regs = NULL, sregs = NULL, xsave = NULL, fpu = NULL;
    g_autoptr(GVariant) xcrs = NULL, debugregs = NULL, lapic = NULL, msrs = NULL, events = NULL;

    g_return_val_if_fail(g_variant_is_of_type(variant, G_VARIANT_TYPE(MVM_SNAPSHOT_VCPU_TYPE)),
                         NULL);
    g_variant_get(variant, "(@ayu@ay@ay@ay@ayb@ay@ay@ay@a(ut)@ayu)", &cpuid,
                  &state->mp_state.mp_state, &regs, &sregs, &xsave, &fpu, &state->has_xcrs, &xcrs,
                  &debugregs, &lapic, &msrs, &events, &state->tsc_khz);
    if (!cpuid_from_variant(cpuid, state, error) ||
        !mvm_snapshot_get_blob(regs, &state->regs, sizeof(state->regs), "regs", error) ||
        !mvm_snapshot_get_blob(sregs, &state->sregs, sizeof(state->sregs), "sregs", error) ||
        !xsave_from_variant(xsave, state, limits->max_xsave, error) ||
        !mvm_snapshot_get_blob(fpu, &state->fpu, sizeof(state->fpu), "fpu", error) ||
        !mvm_snapshot_get_blob(xcrs, &state->xcrs, sizeof(state->xcrs), "xcrs", error) ||
        !mvm_snapshot_get_blob(debugregs, &state->debugregs, sizeof(state->debugregs), "debugregs",
                               error) ||
        !mvm_snapshot_get_blob(lapic, &state->lapic, sizeof(state->lapic), "lapic", error) ||
        !msrs_from_variant(msrs, state, limits, error) ||
        !mvm_snapshot_get_blob(events, &state->events, sizeof(state->events), "events", error))
        return NULL;
    /* KVM_SET_XCRS reads nr_xcrs entries of a fixed array: keep the count inside it. */
    if (state->has_xcrs && state->xcrs.nr_xcrs > G_N_ELEMENTS(state->xcrs.xcrs)) {
        mvm_snapshot_invalid(error, "%u XCRs; at most %u", state->xcrs.nr_xcrs,
                             (guint)G_N_ELEMENTS(state->xcrs.xcrs));
        return NULL;
    }
    return g_steal_pointer(&state);
}
