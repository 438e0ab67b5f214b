/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * /dev/kvm, probed once per process: API version, the capabilities we rely
 * on, and the host facts every VM needs (supported CPUID, saveable MSRs,
 * vCPU limits). The result is shared, immutable, and lives for the process.
 */
#pragma once

#include <glib.h>
#include <linux/kvm.h>

#include "error-private.h"

G_BEGIN_DECLS

/* KVM's own limit on a CPUID table (KVM_MAX_CPUID_ENTRIES, not in the uapi headers). */
#define MVM_KVM_MAX_CPUID_ENTRIES 256

typedef struct {
    int fd;                  /* /dev/kvm, O_CLOEXEC */
    int api_version;         /* KVM_API_VERSION, always 12 here */
    guint max_vcpus;         /* KVM_CAP_MAX_VCPUS */
    guint recommended_vcpus; /* KVM_CAP_NR_VCPUS */
    gsize vcpu_mmap_size;    /* size of struct kvm_run mapping */
    gsize xsave_size;        /* KVM_CAP_XSAVE2 size, 0 when only struct kvm_xsave works */
    gboolean has_xsave;
    gboolean has_xcrs;
    gboolean has_kvmclock_ctrl;
    gboolean has_tsc_control;
    gboolean has_get_tsc_khz;
    struct kvm_cpuid2 *supported_cpuid;  /* KVM_GET_SUPPORTED_CPUID */
    struct kvm_msr_list *msr_index_list; /* KVM_GET_MSR_INDEX_LIST: MSRs KVM saves/restores */
} MvmKvm;

/* The process-wide KVM handle; probed on first use. Errors: MVM_ERROR_NO_KVM, _NOT_SUPPORTED. */
const MvmKvm *mvm_kvm_get(GError **error);

/*
 * The CPUID table a guest of this host is really shown when given every supported feature
 * (probed once, on a scratch vCPU): templates and restores compare against it.
 */
const struct kvm_cpuid2 *mvm_kvm_effective_cpuid(GError **error);

/* KVM_GET_CPUID2 of a vCPU, with exactly the entries it has. */
struct kvm_cpuid2 *mvm_kvm_get_cpuid2(int vcpu_fd, GError **error);

/* An ioctl that retries on EINTR; returns the ioctl's result, errno preserved on -1. */
int mvm_kvm_ioctl(int fd, unsigned long request, void *arg);

/*
 * Sets a GError "WHAT: strerror(errno)" and returns FALSE: MVM_ERROR_NO_RESOURCES when the host
 * ran out of something (EMFILE, ENOMEM, ...), else MVM_ERROR_FAILED.
 */
gboolean mvm_kvm_set_errno_error(GError **error, const char *what);

G_END_DECLS
