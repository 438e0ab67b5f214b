/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "vcpu.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu-template.h"
#include "layout.h"
#include "vcpu-private.h"

/* Architectural MSRs set at boot (Intel SDM vol. 4; AMD APM vol. 2 for the syscall ones). */
#define MSR_IA32_TSC                     0x10
#define MSR_IA32_SYSENTER_CS             0x174
#define MSR_IA32_SYSENTER_ESP            0x175
#define MSR_IA32_SYSENTER_EIP            0x176
#define MSR_IA32_MISC_ENABLE             0x1a0
#define MSR_IA32_MISC_ENABLE_FAST_STRING (1ULL << 0)
#define MSR_MTRR_DEF_TYPE                0x2ff
#define MSR_MTRR_ENABLE                  (1ULL << 11)
#define MTRR_TYPE_WRBACK                 6
#define MSR_STAR                         0xc0000081
#define MSR_LSTAR                        0xc0000082
#define MSR_CSTAR                        0xc0000083
#define MSR_SYSCALL_MASK                 0xc0000084
#define MSR_KERNEL_GS_BASE               0xc0000102

/* Control register bits (Intel SDM vol. 3A §2.5). */
#define X86_CR0_PE  (1ULL << 0)
#define X86_CR0_MP  (1ULL << 1)
#define X86_CR0_ET  (1ULL << 4)
#define X86_CR0_NE  (1ULL << 5)
#define X86_CR0_PG  (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define EFER_LME    (1ULL << 8)
#define EFER_LMA    (1ULL << 10)

/* Local APIC registers and delivery modes (Intel SDM vol. 3A §10.5.1). */
#define APIC_LVT_LINT0   0x350
#define APIC_LVT_LINT1   0x360
#define APIC_MODE_MASK   0x700
#define APIC_MODE_NMI    0x400
#define APIC_MODE_EXTINT 0x700

/* CPUID bits we adjust. */
#define CPUID_1_ECX_HYPERVISOR (1U << 31)
#define CPUID_1_EDX_HTT        (1U << 28)
#define CPUID_LEVEL_TYPE_SMT   1
#define CPUID_LEVEL_TYPE_CORE  2

MvmVcpu *mvm_vcpu_new(const MvmKvm *kvm, int vm_fd, guint index, GError **error)
{
    g_autoptr(MvmVcpu) vcpu = g_new0(MvmVcpu, 1);

    vcpu->kvm = kvm;
    vcpu->index = index;
    vcpu->run = MAP_FAILED;
    vcpu->fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (vcpu->fd < 0) {
        mvm_kvm_set_errno_error(error, "KVM_CREATE_VCPU");
        return NULL;
    }
    vcpu->run = mmap(NULL, kvm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        mvm_kvm_set_errno_error(error, "cannot map struct kvm_run");
        return NULL;
    }
    return g_steal_pointer(&vcpu);
}

void mvm_vcpu_free(MvmVcpu *vcpu)
{
    if (vcpu == NULL)
        return;
    if (vcpu->run != MAP_FAILED)
        munmap(vcpu->run, vcpu->kvm->vcpu_mmap_size);
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    if (vcpu->saveable_msrs != NULL)
        g_array_unref(vcpu->saveable_msrs);
    g_free(vcpu);
}

void mvm_vcpu_set_io_bus(MvmVcpu *vcpu, MvmIoBus *bus)
{
    vcpu->bus = bus;
}

/* ---- CPUID ---- */

static guint bits_for(guint n)
{
    guint bits = 0;
    while ((1U << bits) < n)
        bits++;
    return bits;
}

/*
 * Each vCPU gets its own APIC ID (= index) and a topology of one socket
 * with n_vcpus cores, one thread each (Intel SDM vol. 2A CPUID leaves 1, 4
 * and 0xB; AMD APM vol. 3 leaves 0x80000008 and 0x8000001E).
 */
static void adjust_cpuid_entry(struct kvm_cpuid_entry2 *e, guint index, guint n_vcpus)
{
    switch (e->function) {
    case 0x1:
        e->ebx = (e->ebx & 0x0000ffff) | (index << 24) | ((n_vcpus & 0xff) << 16);
        e->ebx = (e->ebx & ~0xff00U) | (8 << 8); /* CLFLUSH line size: 8 quadwords */
        e->ecx |= CPUID_1_ECX_HYPERVISOR;
        if (n_vcpus > 1)
            e->edx |= CPUID_1_EDX_HTT;
        else
            e->edx &= ~CPUID_1_EDX_HTT;
        break;
    case 0x4:
        /* EAX[31:26]: addressable core IDs in the package, minus one. */
        e->eax = (e->eax & 0x03ffffffU) | (((n_vcpus - 1) & 0x3f) << 26);
        break;
    case 0xb:
        e->edx = index;
        if (e->index == 0) {
            e->eax = 0;
            e->ebx = 1;
            e->ecx = (CPUID_LEVEL_TYPE_SMT << 8) | 0;
        } else if (e->index == 1) {
            e->eax = bits_for(n_vcpus);
            e->ebx = n_vcpus;
            e->ecx = (CPUID_LEVEL_TYPE_CORE << 8) | 1;
        } else {
            e->eax = e->ebx = 0;
            e->ecx = e->index;
        }
        break;
    case 0x80000008:
        /* ECX[7:0]: cores per package minus one; ECX[15:12]: APIC ID bits for them. */
        e->ecx = (e->ecx & ~0xf0ffU) | ((n_vcpus - 1) & 0xff) | (bits_for(n_vcpus) << 12);
        break;
    case 0x8000001e:
        e->eax = index;
        e->ebx = (e->ebx & ~0xffU) | (index & 0xff);
        e->ecx = 0;
        break;
    default:
        break;
    }
}

/* KVM's supported table as @tmpl has it, then this vCPU's topology (which no template changes). */
struct kvm_cpuid2 *mvm_vcpu_build_cpuid(const MvmKvm *kvm, const MvmCpuTemplate *tmpl, guint index,
                                        guint n_vcpus, GError **error)
{
    const struct kvm_cpuid2 *supported = kvm->supported_cpuid;
    gsize size = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
    g_autofree struct kvm_cpuid2 *cpuid = g_memdup2(supported, size);

    if (!mvm_cpu_template_apply_cpuid(tmpl, cpuid, error))
        return NULL;
    for (guint i = 0; i < cpuid->nent; i++)
        adjust_cpuid_entry(&cpuid->entries[i], index, n_vcpus);
    return g_steal_pointer(&cpuid);
}

gboolean mvm_vcpu_set_cpuid(MvmVcpu *vcpu, const MvmCpuTemplate *tmpl, guint n_vcpus,
                            GError **error)
{
    g_autofree struct kvm_cpuid2 *cpuid =
        mvm_vcpu_build_cpuid(vcpu->kvm, tmpl, vcpu->index, n_vcpus, error);

    if (cpuid == NULL)
        return FALSE;
    if (mvm_kvm_ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_CPUID2");
    if (!mvm_cpu_template_changes_cpuid(tmpl))
        return TRUE; /* nothing taken away, nothing to see through */
    g_autofree struct kvm_cpuid2 *shown = mvm_vcpu_get_cpuid(vcpu, error);
    return shown != NULL && mvm_cpu_template_check_shown(tmpl, shown, error);
}

/* ---- boot registers ---- */

gboolean mvm_vcpu_set_msrs(MvmVcpu *vcpu, const struct kvm_msrs *msrs, GError **error)
{
    int ret = mvm_kvm_ioctl(vcpu->fd, KVM_SET_MSRS, (void *)msrs);

    if (ret < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_MSRS");
    /* KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set. */
    if ((guint)ret < msrs->nmsrs) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED,
                    "KVM_SET_MSRS refused MSR 0x%x (%d of %u set)", msrs->entries[ret].index, ret,
                    msrs->nmsrs);
        return FALSE;
    }
    return TRUE;
}

gboolean mvm_vcpu_setup_msrs(MvmVcpu *vcpu, GError **error)
{
    static const struct {
        guint32 index;
        guint64 value;
    } boot_msrs[] = {
        {MSR_IA32_SYSENTER_CS, 0},
        {MSR_IA32_SYSENTER_ESP, 0},
        {MSR_IA32_SYSENTER_EIP, 0},
        {MSR_STAR, 0},
        {MSR_CSTAR, 0},
        {MSR_KERNEL_GS_BASE, 0},
        {MSR_SYSCALL_MASK, 0},
        {MSR_LSTAR, 0},
        {MSR_IA32_TSC, 0},
        {MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING},
        /* Write-back by default: no firmware sets up MTRRs for the kernel. */
        {MSR_MTRR_DEF_TYPE, MSR_MTRR_ENABLE | MTRR_TYPE_WRBACK},
    };
    g_autofree struct kvm_msrs *msrs =
        g_malloc0(sizeof(*msrs) + G_N_ELEMENTS(boot_msrs) * sizeof(msrs->entries[0]));

    msrs->nmsrs = G_N_ELEMENTS(boot_msrs);
    for (gsize i = 0; i < G_N_ELEMENTS(boot_msrs); i++) {
        msrs->entries[i].index = boot_msrs[i].index;
        msrs->entries[i].data = boot_msrs[i].value;
    }
    return mvm_vcpu_set_msrs(vcpu, msrs, error);
}

gboolean mvm_vcpu_setup_regs(MvmVcpu *vcpu, const MvmBootInfo *boot, GError **error)
{
    struct kvm_regs regs = {
        .rflags = 0x2, /* bit 1 is reserved and always set */
        .rip = boot->entry,
        .rsp = MVM_BOOT_STACK_TOP,
        .rbp = MVM_BOOT_STACK_TOP,
    };

    /* Linux boot.rst "64-bit boot protocol": %rsi holds boot_params; PVH: %ebx start_info. */
    if (boot->entry_kind == MVM_BOOT_ENTRY_PVH)
        regs.rbx = boot->boot_params_gpa;
    else
        regs.rsi = boot->boot_params_gpa;
    if (mvm_kvm_ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_REGS");
    return TRUE;
}

static void setup_long_mode_sregs(struct kvm_sregs *sregs)
{
    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_CS >> 3), MVM_BOOT_CS, &sregs->cs);
    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_DS >> 3), MVM_BOOT_DS, &sregs->ds);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->cr3 = MVM_PML4_ADDR;
    sregs->cr4 |= X86_CR4_PAE;
    sregs->cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs->efer |= EFER_LME | EFER_LMA;
}

static void setup_pvh_sregs(struct kvm_sregs *sregs)
{
    /* Xen's PVH ABI (docs/misc/pvh.pandoc): flat 32-bit protected mode, paging off. */
    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_CS32 >> 3), MVM_BOOT_CS32, &sregs->cs);
    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_DS >> 3), MVM_BOOT_DS, &sregs->ds);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs->cr4 = 0;
    sregs->efer = 0;
}

gboolean mvm_vcpu_setup_sregs(MvmVcpu *vcpu, const MvmBootInfo *boot, GError **error)
{
    struct kvm_sregs sregs;

    if (mvm_kvm_ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_GET_SREGS");

    sregs.gdt.base = MVM_GDT_ADDR;
    sregs.gdt.limit = MVM_BOOT_GDT_ENTRIES * 8 - 1;
    sregs.idt.base = MVM_IDT_ADDR;
    sregs.idt.limit = 7;
    /* VM entry wants a usable busy TSS in TR (SDM vol. 3C §26.3.1.2); the guest loads its own. */
    sregs.tr = (struct kvm_segment){.base = 0, .limit = 0x67, .type = 11, .present = 1};
    sregs.ldt = (struct kvm_segment){.type = 2, .present = 1, .limit = 0xffff};
    if (boot->entry_kind == MVM_BOOT_ENTRY_PVH)
        setup_pvh_sregs(&sregs);
    else
        setup_long_mode_sregs(&sregs);

    if (mvm_kvm_ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_SREGS");
    return TRUE;
}

gboolean mvm_vcpu_setup_fpu(MvmVcpu *vcpu, GError **error)
{
    /* The values FNINIT and the reset state give (SDM vol. 1 §8.1.5, §10.2.3). */
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};

    if (mvm_kvm_ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_FPU");
    return TRUE;
}

static void set_lvt_mode(struct kvm_lapic_state *lapic, guint offset, guint32 mode)
{
    guint32 value;

    memcpy(&value, &lapic->regs[offset], sizeof(value));
    value = (value & ~APIC_MODE_MASK) | mode;
    memcpy(&lapic->regs[offset], &value, sizeof(value));
}

/* LINT0 carries the 8259's ExtINT, LINT1 the NMI, as the MP spec's virtual wire mode has it. */
gboolean mvm_vcpu_setup_lint(MvmVcpu *vcpu, GError **error)
{
    struct kvm_lapic_state lapic;

    if (mvm_kvm_ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_GET_LAPIC");
    set_lvt_mode(&lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_lvt_mode(&lapic, APIC_LVT_LINT1, APIC_MODE_NMI);
    if (mvm_kvm_ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_LAPIC");
    return TRUE;
}

gboolean mvm_vcpu_configure(MvmVcpu *vcpu, const MvmCpuTemplate *tmpl, guint n_vcpus,
                            const MvmBootInfo *boot, GError **error)
{
    return mvm_vcpu_set_cpuid(vcpu, tmpl, n_vcpus, error) && mvm_vcpu_setup_msrs(vcpu, error) &&
           mvm_cpu_template_apply_msrs(tmpl, vcpu, error) &&
           mvm_vcpu_setup_regs(vcpu, boot, error) && mvm_vcpu_setup_sregs(vcpu, boot, error) &&
           mvm_vcpu_setup_fpu(vcpu, error) && mvm_vcpu_setup_lint(vcpu, error);
}

/* ---- clock ---- */

gboolean mvm_vcpu_kvmclock_ctrl(MvmVcpu *vcpu, gboolean *not_enabled, GError **error)
{
    *not_enabled = FALSE;
    if (!vcpu->kvm->has_kvmclock_ctrl) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                            "KVM on this host lacks KVM_CAP_KVMCLOCK_CTRL");
        return FALSE;
    }
    if (mvm_kvm_ioctl(vcpu->fd, KVM_KVMCLOCK_CTRL, NULL) == 0)
        return TRUE;
    /* api.rst: EINVAL when the guest has not set up its pvclock page. */
    if (errno == EINVAL) {
        *not_enabled = TRUE;
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_STATE,
                            "the guest has not enabled kvmclock");
        return FALSE;
    }
    return mvm_kvm_set_errno_error(error, "KVM_KVMCLOCK_CTRL");
}

guint32 mvm_vcpu_get_tsc_khz(MvmVcpu *vcpu, GError **error)
{
    int khz = vcpu->kvm->has_get_tsc_khz ? ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0) : -1;

    if (khz <= 0) {
        if (!vcpu->kvm->has_get_tsc_khz)
            errno = ENOTSUP;
        mvm_kvm_set_errno_error(error, "KVM_GET_TSC_KHZ");
        return 0;
    }
    return (guint32)khz;
}

gboolean mvm_vcpu_set_tsc_khz(MvmVcpu *vcpu, guint32 khz, GError **error)
{
    if (!vcpu->kvm->has_tsc_control) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                    "cannot set the TSC to %u kHz: KVM on this host has no TSC scaling "
                    "(KVM_CAP_TSC_CONTROL)",
                    khz);
        return FALSE;
    }
    if (ioctl(vcpu->fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_SET_TSC_KHZ");
    return TRUE;
}

gboolean mvm_vcpu_is_tsc_scaling_required(MvmVcpu *vcpu, guint32 state_tsc_khz, gboolean *required,
                                          GError **error)
{
    guint32 host_khz = mvm_vcpu_get_tsc_khz(vcpu, error);

    if (host_khz == 0)
        return FALSE;
    /* Like NTP and Firecracker, treat 250 ppm as the same clock. */
    guint64 diff = host_khz > state_tsc_khz ? host_khz - state_tsc_khz : state_tsc_khz - host_khz;
    *required = diff * 1000000 > (guint64)state_tsc_khz * 250;
    return TRUE;
}

/* ---- running ---- */

void mvm_vcpu_set_immediate_exit(MvmVcpu *vcpu, gboolean on)
{
    __atomic_store_n(&vcpu->run->immediate_exit, on ? 1 : 0, __ATOMIC_SEQ_CST);
}

static void count(guint64 *counter)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

void mvm_vcpu_get_counters(MvmVcpu *vcpu, MvmVcpuCounters *c)
{
    c->io = __atomic_load_n(&vcpu->counters.io, __ATOMIC_RELAXED);
    c->mmio = __atomic_load_n(&vcpu->counters.mmio, __ATOMIC_RELAXED);
    c->hlt = __atomic_load_n(&vcpu->counters.hlt, __ATOMIC_RELAXED);
    c->other = __atomic_load_n(&vcpu->counters.other, __ATOMIC_RELAXED);
    c->unhandled_io = __atomic_load_n(&vcpu->counters.unhandled_io, __ATOMIC_RELAXED);
}

static MvmVcpuRunResult stop_with(MvmVcpuExit *exit, MvmExitKind kind, char *reason)
{
    exit->kind = kind;
    exit->reason = reason;
    return MVM_VCPU_RUN_STOP;
}

static MvmVcpuRunResult handle_pio(MvmVcpu *vcpu, MvmVcpuExit *exit)
{
    struct kvm_run *run = vcpu->run;
    guint size = run->io.size;
    guint64 bytes = (guint64)size * run->io.count;

    count(&vcpu->counters.io);
    /* The data area lies inside the kvm_run mapping; do not trust that blindly. */
    if (run->io.data_offset > vcpu->kvm->vcpu_mmap_size ||
        bytes > vcpu->kvm->vcpu_mmap_size - run->io.data_offset)
        return stop_with(
            exit, MVM_EXIT_HOST_ERROR,
            g_strdup_printf("PIO exit with data outside kvm_run (port 0x%x)", run->io.port));

    guint8 *data = (guint8 *)run + run->io.data_offset;
    for (guint32 i = 0; i < run->io.count; i++, data += size) {
        gboolean handled =
            run->io.direction == KVM_EXIT_IO_OUT
                ? mvm_io_bus_write(vcpu->bus, MVM_IO_SPACE_PIO, run->io.port, data, size)
                : mvm_io_bus_read(vcpu->bus, MVM_IO_SPACE_PIO, run->io.port, data, size);
        if (!handled)
            count(&vcpu->counters.unhandled_io);
    }
    return MVM_VCPU_RUN_CONTINUE;
}

static MvmVcpuRunResult handle_mmio(MvmVcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    guint len = MIN(run->mmio.len, sizeof(run->mmio.data));
    gboolean handled;

    count(&vcpu->counters.mmio);
    if (run->mmio.is_write)
        handled = mvm_io_bus_write(vcpu->bus, MVM_IO_SPACE_MMIO, run->mmio.phys_addr,
                                   run->mmio.data, len);
    else
        handled =
            mvm_io_bus_read(vcpu->bus, MVM_IO_SPACE_MMIO, run->mmio.phys_addr, run->mmio.data, len);
    if (!handled)
        count(&vcpu->counters.unhandled_io);
    return MVM_VCPU_RUN_CONTINUE;
}

static guint64 current_rip(MvmVcpu *vcpu)
{
    struct kvm_regs regs;
    return mvm_kvm_ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0 ? regs.rip : G_MAXUINT64;
}

static MvmVcpuRunResult handle_internal_error(MvmVcpu *vcpu, MvmVcpuExit *exit)
{
    struct kvm_run *run = vcpu->run;
    g_autoptr(GString) reason = g_string_new(NULL);
    guint32 ndata = MIN(run->internal.ndata, G_N_ELEMENTS(run->internal.data));

    /* A triple fault shows up here (suberror 1) on hosts whose KVM emulates guest code. */
    g_string_printf(reason,
                    "KVM internal error, suberror %u, vcpu %u at rip 0x%" G_GINT64_MODIFIER "x",
                    run->internal.suberror, vcpu->index, current_rip(vcpu));
    for (guint32 i = 0; i < ndata; i++)
        g_string_append_printf(reason, "%s0x%" G_GINT64_MODIFIER "x", i == 0 ? ", data " : " ",
                               (guint64)run->internal.data[i]);
    return stop_with(exit, MVM_EXIT_INTERNAL_ERROR, g_string_free(g_steal_pointer(&reason), FALSE));
}

static MvmVcpuRunResult handle_system_event(MvmVcpu *vcpu, MvmVcpuExit *exit)
{
    switch (vcpu->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        return stop_with(exit, MVM_EXIT_POWEROFF, g_strdup("guest powered off"));
    case KVM_SYSTEM_EVENT_RESET:
        return stop_with(exit, MVM_EXIT_RESET, g_strdup("guest reset"));
    case KVM_SYSTEM_EVENT_CRASH:
        return stop_with(exit, MVM_EXIT_GUEST_PANIC, g_strdup("guest reported a crash"));
    default:
        return stop_with(exit, MVM_EXIT_HOST_ERROR,
                         g_strdup_printf("unknown system event %u", vcpu->run->system_event.type));
    }
}

static MvmVcpuRunResult handle_exit(MvmVcpu *vcpu, MvmVcpuExit *exit)
{
    struct kvm_run *run = vcpu->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        return handle_pio(vcpu, exit);
    case KVM_EXIT_MMIO:
        return handle_mmio(vcpu);
    case KVM_EXIT_INTR:
        return MVM_VCPU_RUN_KICKED;
    case KVM_EXIT_HLT:
        count(&vcpu->counters.hlt);
        return stop_with(exit, MVM_EXIT_HALTED,
                         g_strdup_printf("vcpu %u halted with interrupts off", vcpu->index));
    case KVM_EXIT_SHUTDOWN:
        return stop_with(exit, MVM_EXIT_TRIPLE_FAULT,
                         g_strdup_printf("triple fault on vcpu %u at rip 0x%" G_GINT64_MODIFIER "x",
                                         vcpu->index, current_rip(vcpu)));
    case KVM_EXIT_SYSTEM_EVENT:
        return handle_system_event(vcpu, exit);
    case KVM_EXIT_INTERNAL_ERROR:
        return handle_internal_error(vcpu, exit);
    case KVM_EXIT_FAIL_ENTRY:
        return stop_with(
            exit, MVM_EXIT_FAIL_ENTRY,
            g_strdup_printf("VM entry failed on vcpu %u, hardware reason 0x%" G_GINT64_MODIFIER "x",
                            vcpu->index, (guint64)run->fail_entry.hardware_entry_failure_reason));
    default:
        count(&vcpu->counters.other);
        return stop_with(exit, MVM_EXIT_HOST_ERROR,
                         g_strdup_printf("unexpected KVM exit reason %u on vcpu %u",
                                         run->exit_reason, vcpu->index));
    }
}

MvmVcpuRunResult mvm_vcpu_run(MvmVcpu *vcpu, MvmVcpuExit *exit)
{
    exit->kind = MVM_EXIT_NONE;
    exit->reason = NULL;

    if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            /* Kicked (immediate_exit or a signal): clear it before looking at the requests. */
            mvm_vcpu_set_immediate_exit(vcpu, FALSE);
            return MVM_VCPU_RUN_KICKED;
        }
        int saved = errno;
        return stop_with(exit, MVM_EXIT_HOST_ERROR,
                         g_strdup_printf("KVM_RUN on vcpu %u: %s", vcpu->index, g_strerror(saved)));
    }
    return handle_exit(vcpu, exit);
}
