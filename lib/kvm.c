/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "error-private.h"

#define KVM_DEVICE "/dev/kvm"

typedef struct {
    int cap;
    const char *name;
} RequiredCap;

/* Everything the VMM uses unconditionally; a missing one is a clear start-up error. */
static const RequiredCap required_caps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_PIT_STATE2, "KVM_CAP_PIT_STATE2"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
    {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
    {KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK"},
};

int mvm_kvm_ioctl(int fd, unsigned long request, void *arg)
{
    int ret;

    do
        ret = ioctl(fd, request, arg);
    while (ret < 0 && errno == EINTR);
    return ret;
}

gboolean mvm_kvm_set_errno_error(GError **error, const char *what)
{
    return mvm_set_errno_error(error, MVM_ERROR_FAILED, "%s", what);
}

static int check_extension(int fd, int cap)
{
    int ret = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return ret < 0 ? 0 : ret;
}

static int open_kvm_device(GError **error)
{
    int fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        int saved = errno;
        const char *hint = saved == ENOENT ? " (is the kvm module loaded and is this host able "
                                             "to run virtual machines?)"
                           : saved == EACCES || saved == EPERM ? " (is the user in group kvm?)"
                                                               : "";
        /* Out of descriptors is no reason to say that this host has no KVM. */
        g_set_error(error, MVM_ERROR, mvm_error_code_for_errno(saved, MVM_ERROR_NO_KVM),
                    "cannot open %s: %s%s", KVM_DEVICE, g_strerror(saved), hint);
    }
    return fd;
}

static gboolean check_required_caps(int fd, GError **error)
{
    for (gsize i = 0; i < G_N_ELEMENTS(required_caps); i++) {
        if (check_extension(fd, required_caps[i].cap) <= 0) {
            g_set_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                        "KVM on this host lacks %s, which microvmd needs", required_caps[i].name);
            return FALSE;
        }
    }
    return TRUE;
}

/*
 * KVM_GET_SUPPORTED_CPUID fails with E2BIG until the buffer is large enough, after doing all
 * the work (~0.5-0.8 ms on kvm_pvm, where each host CPUID is an exit): start at KVM's own
 * limit (KVM_MAX_CPUID_ENTRIES, 256) so that one call does.
 */
static struct kvm_cpuid2 *get_supported_cpuid(int fd, GError **error)
{
    for (guint n = MVM_KVM_MAX_CPUID_ENTRIES; n <= MVM_KVM_MAX_CPUID_ENTRIES * 4; n *= 2) {
        g_autofree struct kvm_cpuid2 *cpuid =
            g_malloc0(sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
        cpuid->nent = n;
        if (mvm_kvm_ioctl(fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
            return g_steal_pointer(&cpuid);
        if (errno != E2BIG)
            break;
    }
    mvm_kvm_set_errno_error(error, "KVM_GET_SUPPORTED_CPUID");
    return NULL;
}

/* The first call learns the count (E2BIG), the second fetches the list. */
static struct kvm_msr_list *get_msr_index_list(int fd, GError **error)
{
    struct kvm_msr_list probe = {.nmsrs = 0};

    if (mvm_kvm_ioctl(fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) {
        mvm_kvm_set_errno_error(error, "KVM_GET_MSR_INDEX_LIST");
        return NULL;
    }
    g_autofree struct kvm_msr_list *list =
        g_malloc0(sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
    list->nmsrs = probe.nmsrs;
    if (mvm_kvm_ioctl(fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_MSR_INDEX_LIST");
        return NULL;
    }
    return g_steal_pointer(&list);
}

static gboolean probe_limits(MvmKvm *kvm, GError **error)
{
    kvm->api_version = ioctl(kvm->fd, KVM_GET_API_VERSION, 0);
    if (kvm->api_version != KVM_API_VERSION) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                    "KVM API version %d is not the version %d microvmd speaks", kvm->api_version,
                    KVM_API_VERSION);
        return FALSE;
    }
    int mmap_size = ioctl(kvm->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size < (int)sizeof(struct kvm_run))
        return mvm_kvm_set_errno_error(error, "KVM_GET_VCPU_MMAP_SIZE");
    kvm->vcpu_mmap_size = (gsize)mmap_size;

    /* KVM's api.rst: NR_VCPUS is the recommended maximum, MAX_VCPUS the hard one (default 4). */
    int nr = check_extension(kvm->fd, KVM_CAP_NR_VCPUS);
    int max = check_extension(kvm->fd, KVM_CAP_MAX_VCPUS);
    kvm->recommended_vcpus = nr > 0 ? (guint)nr : 4;
    kvm->max_vcpus = max > 0 ? (guint)max : kvm->recommended_vcpus;
    /* APIC IDs are 8 bits in the xAPIC MADT and MP table entries we write. */
    kvm->max_vcpus = MIN(kvm->max_vcpus, 255u);
    return TRUE;
}

static void probe_optional_caps(MvmKvm *kvm)
{
    kvm->has_xsave = check_extension(kvm->fd, KVM_CAP_XSAVE) > 0;
    kvm->has_xcrs = check_extension(kvm->fd, KVM_CAP_XCRS) > 0;
    kvm->has_kvmclock_ctrl = check_extension(kvm->fd, KVM_CAP_KVMCLOCK_CTRL) > 0;
    kvm->has_tsc_control = check_extension(kvm->fd, KVM_CAP_TSC_CONTROL) > 0;
    kvm->has_get_tsc_khz = check_extension(kvm->fd, KVM_CAP_GET_TSC_KHZ) > 0;
    /* XSAVE2 answers the buffer size KVM_GET_XSAVE2 needs (AMX makes it exceed 4 KiB). */
    int xsave2 = check_extension(kvm->fd, KVM_CAP_XSAVE2);
    kvm->xsave_size = xsave2 > (int)sizeof(struct kvm_xsave) ? (gsize)xsave2 : 0;
}

static MvmKvm *kvm_probe(GError **error)
{
    g_autofree MvmKvm *kvm = g_new0(MvmKvm, 1);

    kvm->fd = open_kvm_device(error);
    if (kvm->fd < 0)
        return NULL;
    if (!probe_limits(kvm, error) || !check_required_caps(kvm->fd, error))
        goto fail;
    probe_optional_caps(kvm);
    kvm->supported_cpuid = get_supported_cpuid(kvm->fd, error);
    if (kvm->supported_cpuid == NULL)
        goto fail;
    kvm->msr_index_list = get_msr_index_list(kvm->fd, error);
    if (kvm->msr_index_list == NULL)
        goto fail;
    return g_steal_pointer(&kvm);

fail:
    g_free(kvm->supported_cpuid);
    close(kvm->fd);
    return NULL;
}

static GMutex probe_lock;

const MvmKvm *mvm_kvm_get(GError **error)
{
    static MvmKvm *kvm;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&probe_lock);

    /* A failed probe is retried on the next call: /dev/kvm may appear (module load, udev). */
    if (kvm == NULL)
        kvm = kvm_probe(error);
    return kvm;
}

int mvm_kvm_api_version(GError **error)
{
    const MvmKvm *kvm = mvm_kvm_get(error);
    return kvm != NULL ? kvm->api_version : -1;
}

guint mvm_kvm_max_vcpus(void)
{
    const MvmKvm *kvm = mvm_kvm_get(NULL);
    return kvm != NULL ? kvm->max_vcpus : 0;
}

static gboolean cpuid_entry_is_empty(const struct kvm_cpuid_entry2 *e)
{
    return e->function == 0 && e->index == 0 && e->flags == 0 && e->eax == 0 && e->ebx == 0 &&
           e->ecx == 0 && e->edx == 0;
}

struct kvm_cpuid2 *mvm_kvm_get_cpuid2(int vcpu_fd, GError **error)
{
    guint nent = MVM_KVM_MAX_CPUID_ENTRIES;
    g_autofree struct kvm_cpuid2 *cpuid =
        g_malloc0(sizeof(*cpuid) + nent * sizeof(cpuid->entries[0]));

    cpuid->nent = nent;
    if (mvm_kvm_ioctl(vcpu_fd, KVM_GET_CPUID2, cpuid) < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_CPUID2");
        return NULL;
    }
    /*
     * The nested host's Linux 6.1 left nent as given on success (measured: 256 entries back
     * for a table of 30), so the buffer's unused entries come back still zero; a real entry
     * never is (leaf 0 says the highest leaf). kvm_pvm sets nent itself.
     */
    cpuid->nent = MIN(cpuid->nent, nent); /* never trust a count beyond the buffer */
    while (cpuid->nent > 0 && cpuid_entry_is_empty(&cpuid->entries[cpuid->nent - 1]))
        cpuid->nent--;
    return g_steal_pointer(&cpuid);
}

/*
 * What a guest is really shown: the supported table set on a scratch vCPU and read back. The
 * same table on most hosts; kvm_pvm shows its guests the host's own CPUID outside its small
 * supported set whatever the VMM sets (docs/kvm-hosts.md), so there the guest's features are
 * the host's and KVM_GET_SUPPORTED_CPUID understates them.
 */
static struct kvm_cpuid2 *probe_effective_cpuid(const MvmKvm *kvm, GError **error)
{
    struct kvm_cpuid2 *cpuid = NULL;
    int vm_fd = -1, vcpu_fd = -1;

    if ((vm_fd = ioctl(kvm->fd, KVM_CREATE_VM, 0)) < 0)
        mvm_kvm_set_errno_error(error, "KVM_CREATE_VM");
    else if ((vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0)) < 0)
        mvm_kvm_set_errno_error(error, "KVM_CREATE_VCPU");
    else if (mvm_kvm_ioctl(vcpu_fd, KVM_SET_CPUID2, kvm->supported_cpuid) < 0)
        mvm_kvm_set_errno_error(error, "KVM_SET_CPUID2");
    else
        cpuid = mvm_kvm_get_cpuid2(vcpu_fd, error);
    if (vcpu_fd >= 0)
        close(vcpu_fd);
    if (vm_fd >= 0)
        close(vm_fd);
    return cpuid;
}

const struct kvm_cpuid2 *mvm_kvm_effective_cpuid(GError **error)
{
    static struct kvm_cpuid2 *effective;
    static GMutex lock;
    const MvmKvm *kvm = mvm_kvm_get(error);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&lock);

    /* Not kept when it fails: that was the host running out (descriptors, memory). */
    if (effective == NULL && kvm != NULL)
        effective = probe_effective_cpuid(kvm, error);
    return effective;
}
