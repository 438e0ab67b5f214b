/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Save and restore of a vCPU's whole state through KVM, and the MSR plumbing under it. How that
 * state travels in a snapshot is snapshot-vcpu.c's.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vcpu-private.h"

/* KVM answers E2BIG when nmsrs >= MAX_IO_MSRS (256) in KVM_GET_MSRS/KVM_SET_MSRS. */
#define KVM_MAX_MSR_ENTRIES   255
#define MSR_IA32_TSC_DEADLINE 0x6e0

void mvm_vcpu_state_free(MvmVcpuState *state)
{
    if (state == NULL)
        return;
    g_free(state->cpuid);
    g_free(state->msrs);
    g_clear_pointer(&state->xsave, g_bytes_unref);
    g_free(state);
}

void mvm_vcpu_cpu_dump_free(MvmVcpuCpuDump *config)
{
    if (config == NULL)
        return;
    g_free(config->cpuid);
    g_free(config->msrs);
    g_free(config);
}

struct kvm_msrs *mvm_vcpu_msrs_new(gsize n)
{
    struct kvm_msrs *msrs = g_malloc0(sizeof(*msrs) + n * sizeof(msrs->entries[0]));
    msrs->nmsrs = (guint32)n;
    return msrs;
}

struct kvm_msrs *mvm_vcpu_get_msr_chunk(MvmVcpu *vcpu, const guint32 *indices, gsize n,
                                        GError **error)
{
    if (n > KVM_MAX_MSR_ENTRIES) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "%" G_GSIZE_FORMAT " MSRs in one chunk; KVM takes at most %d", n,
                    KVM_MAX_MSR_ENTRIES);
        return NULL;
    }
    g_autofree struct kvm_msrs *msrs = mvm_vcpu_msrs_new(n);
    for (gsize i = 0; i < n; i++)
        msrs->entries[i].index = indices[i];

    int ret = mvm_kvm_ioctl(vcpu->fd, KVM_GET_MSRS, msrs);
    if (ret < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_MSRS");
        return NULL;
    }
    /* KVM stops at the first MSR it cannot read and returns how many it read. */
    if ((gsize)ret < n) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED,
                    "KVM_GET_MSRS read %d of %" G_GSIZE_FORMAT " MSRs; it refused MSR 0x%x", ret, n,
                    indices[ret]);
        return NULL;
    }
    return g_steal_pointer(&msrs);
}

struct kvm_msrs *mvm_vcpu_get_msrs(MvmVcpu *vcpu, const guint32 *indices, gsize n, GError **error)
{
    g_autofree struct kvm_msrs *all = mvm_vcpu_msrs_new(n);

    for (gsize done = 0; done < n;) {
        gsize chunk = MIN(n - done, KVM_MAX_MSR_ENTRIES);
        g_autofree struct kvm_msrs *part =
            mvm_vcpu_get_msr_chunk(vcpu, indices + done, chunk, error);
        if (part == NULL)
            return NULL;
        memcpy(&all->entries[done], part->entries, chunk * sizeof(part->entries[0]));
        done += chunk;
    }
    return g_steal_pointer(&all);
}

/*
 * KVM_GET_MSR_INDEX_LIST names every MSR KVM can save on some CPU; this CPUID
 * may not expose all of them. Probe one by one, once, and keep the readable.
 * The TSC deadline goes last: restoring it before the TSC would arm the timer
 * against the wrong clock (Firecracker orders them the same way).
 */
const GArray *mvm_vcpu_get_saveable_msrs(MvmVcpu *vcpu, GError **error)
{
    if (vcpu->saveable_msrs != NULL)
        return vcpu->saveable_msrs;

    const struct kvm_msr_list *list = vcpu->kvm->msr_index_list;
    g_autoptr(GArray) saveable = g_array_sized_new(FALSE, FALSE, sizeof(guint32), list->nmsrs);
    gboolean has_deadline = FALSE;

    for (guint32 i = 0; i < list->nmsrs; i++) {
        guint32 index = list->indices[i];
        g_autofree struct kvm_msrs *one = mvm_vcpu_msrs_new(1);
        one->entries[0].index = index;
        if (mvm_kvm_ioctl(vcpu->fd, KVM_GET_MSRS, one) != 1)
            continue;
        if (index == MSR_IA32_TSC_DEADLINE)
            has_deadline = TRUE;
        else
            g_array_append_val(saveable, index);
    }
    if (has_deadline) {
        guint32 deadline = MSR_IA32_TSC_DEADLINE;
        g_array_append_val(saveable, deadline);
    }
    if (saveable->len == 0) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_FAILED, "KVM lets us read no MSR at all");
        return NULL;
    }
    vcpu->saveable_msrs = g_steal_pointer(&saveable);
    return vcpu->saveable_msrs;
}

struct kvm_cpuid2 *mvm_vcpu_get_cpuid(MvmVcpu *vcpu, GError **error)
{
    return mvm_kvm_get_cpuid2(vcpu->fd, error);
}

static GBytes *get_xsave(MvmVcpu *vcpu, GError **error)
{
    gsize size = MAX(vcpu->kvm->xsave_size, sizeof(struct kvm_xsave));
    g_autofree guint8 *area = g_malloc0(size);
    unsigned long request = vcpu->kvm->xsave_size > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;

    if (mvm_kvm_ioctl(vcpu->fd, request, area) < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_XSAVE");
        return NULL;
    }
    return g_bytes_new_take(g_steal_pointer(&area), size);
}

static gboolean get_msr_state(MvmVcpu *vcpu, MvmVcpuState *state, GError **error)
{
    const GArray *saveable = mvm_vcpu_get_saveable_msrs(vcpu, error);

    if (saveable == NULL)
        return FALSE;
    state->msrs = mvm_vcpu_get_msrs(vcpu, (const guint32 *)saveable->data, saveable->len, error);
    return state->msrs != NULL;
}

static gboolean ioctl_or_error(MvmVcpu *vcpu, unsigned long request, void *arg, const char *name,
                               GError **error)
{
    if (mvm_kvm_ioctl(vcpu->fd, request, arg) < 0)
        return mvm_kvm_set_errno_error(error, name);
    return TRUE;
}

/*
 * Order matters: KVM_GET_MP_STATE runs kvm_apic_accept_events(), which can
 * change registers and the LAPIC, so it comes first.
 */
MvmVcpuState *mvm_vcpu_save_state(MvmVcpu *vcpu, GError **error)
{
    g_autoptr(MvmVcpuState) state = g_new0(MvmVcpuState, 1);

    if (!ioctl_or_error(vcpu, KVM_GET_MP_STATE, &state->mp_state, "KVM_GET_MP_STATE", error) ||
        !ioctl_or_error(vcpu, KVM_GET_REGS, &state->regs, "KVM_GET_REGS", error) ||
        !ioctl_or_error(vcpu, KVM_GET_SREGS, &state->sregs, "KVM_GET_SREGS", error))
        return NULL;
    if (vcpu->kvm->has_xsave) {
        state->xsave = get_xsave(vcpu, error);
        if (state->xsave == NULL)
            return NULL;
    } else if (!ioctl_or_error(vcpu, KVM_GET_FPU, &state->fpu, "KVM_GET_FPU", error)) {
        return NULL;
    }
    state->has_xcrs = vcpu->kvm->has_xcrs;
    if (state->has_xcrs && !ioctl_or_error(vcpu, KVM_GET_XCRS, &state->xcrs, "KVM_GET_XCRS", error))
        return NULL;
    if (!ioctl_or_error(vcpu, KVM_GET_DEBUGREGS, &state->debugregs, "KVM_GET_DEBUGREGS", error) ||
        !ioctl_or_error(vcpu, KVM_GET_LAPIC, &state->lapic, "KVM_GET_LAPIC", error) ||
        !get_msr_state(vcpu, state, error) ||
        !ioctl_or_error(vcpu, KVM_GET_VCPU_EVENTS, &state->events, "KVM_GET_VCPU_EVENTS", error))
        return NULL;
    state->cpuid = mvm_vcpu_get_cpuid(vcpu, error);
    if (state->cpuid == NULL)
        return NULL;
    /* A host that cannot tell its TSC rate still saves; restore then cannot check it. */
    state->tsc_khz = mvm_vcpu_get_tsc_khz(vcpu, NULL);
    return g_steal_pointer(&state);
}

static gboolean restore_tsc(MvmVcpu *vcpu, guint32 tsc_khz, GError **error)
{
    gboolean required = FALSE;

    if (tsc_khz == 0 || !mvm_vcpu_is_tsc_scaling_required(vcpu, tsc_khz, &required, NULL) ||
        !required)
        return TRUE;
    return mvm_vcpu_set_tsc_khz(vcpu, tsc_khz, error);
}

static gboolean restore_fpu_state(MvmVcpu *vcpu, const MvmVcpuState *state, GError **error)
{
    if (state->xsave == NULL)
        return ioctl_or_error(vcpu, KVM_SET_FPU, (void *)&state->fpu, "KVM_SET_FPU", error);

    /* KVM_SET_XSAVE takes at least a struct kvm_xsave; larger areas need the XSAVE2 size. */
    gsize size = g_bytes_get_size(state->xsave);
    gsize want = MAX(vcpu->kvm->xsave_size, sizeof(struct kvm_xsave));
    g_autofree guint8 *area = g_malloc0(MAX(size, want));
    memcpy(area, g_bytes_get_data(state->xsave, NULL), size);
    return ioctl_or_error(vcpu, KVM_SET_XSAVE, area, "KVM_SET_XSAVE", error);
}

/*
 * Order (KVM api.rst and Firecracker's experience): CPUID before anything that
 * depends on it; TSC rate before MSRs; sregs before MSRs (EFER); LAPIC and MSRs
 * before vCPU events, which may inject into them; MP state last but events.
 */
gboolean mvm_vcpu_restore_state(MvmVcpu *vcpu, const MvmVcpuState *state, GError **error)
{
    g_return_val_if_fail(state->cpuid != NULL && state->msrs != NULL, FALSE);

    return ioctl_or_error(vcpu, KVM_SET_CPUID2, state->cpuid, "KVM_SET_CPUID2", error) &&
           restore_tsc(vcpu, state->tsc_khz, error) &&
           ioctl_or_error(vcpu, KVM_SET_MP_STATE, (void *)&state->mp_state, "KVM_SET_MP_STATE",
                          error) &&
           ioctl_or_error(vcpu, KVM_SET_REGS, (void *)&state->regs, "KVM_SET_REGS", error) &&
           ioctl_or_error(vcpu, KVM_SET_SREGS, (void *)&state->sregs, "KVM_SET_SREGS", error) &&
           restore_fpu_state(vcpu, state, error) &&
           (!state->has_xcrs ||
            ioctl_or_error(vcpu, KVM_SET_XCRS, (void *)&state->xcrs, "KVM_SET_XCRS", error)) &&
           ioctl_or_error(vcpu, KVM_SET_DEBUGREGS, (void *)&state->debugregs, "KVM_SET_DEBUGREGS",
                          error) &&
           ioctl_or_error(vcpu, KVM_SET_LAPIC, (void *)&state->lapic, "KVM_SET_LAPIC", error) &&
           mvm_vcpu_set_msrs(vcpu, state->msrs, error) &&
           ioctl_or_error(vcpu, KVM_SET_VCPU_EVENTS, (void *)&state->events, "KVM_SET_VCPU_EVENTS",
                          error);
}

MvmVcpuCpuDump *mvm_vcpu_dump_cpu_config(MvmVcpu *vcpu, GError **error)
{
    g_autoptr(MvmVcpuCpuDump) config = g_new0(MvmVcpuCpuDump, 1);
    const GArray *saveable;

    config->cpuid = mvm_vcpu_get_cpuid(vcpu, error);
    if (config->cpuid == NULL)
        return NULL;
    saveable = mvm_vcpu_get_saveable_msrs(vcpu, error);
    if (saveable == NULL)
        return NULL;
    config->msrs = mvm_vcpu_get_msrs(vcpu, (const guint32 *)saveable->data, saveable->len, error);
    if (config->msrs == NULL)
        return NULL;
    return g_steal_pointer(&config);
}
