/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mvm_vm_dump_cpu_config(): each vCPU's CPUID table and MSRs, read with every vCPU parked. */
#include "microvm.h"
#include "vcpu.h"
#include "vm-private.h"

static void vcpu_cpu_config_free(gpointer data)
{
    MvmVcpuCpuConfig *config = data;

    g_array_unref(config->cpuid);
    g_array_unref(config->msrs);
    g_free(config);
}

void mvm_cpu_config_free(MvmCpuConfig *config)
{
    if (config == NULL)
        return;
    g_free(config->cpu_template);
    g_clear_pointer(&config->vcpus, g_ptr_array_unref);
    g_free(config);
}

static MvmVcpuCpuConfig *from_dump(guint index, const MvmVcpuCpuDump *dump)
{
    MvmVcpuCpuConfig *config = g_new0(MvmVcpuCpuConfig, 1);

    config->index = index;
    config->cpuid = g_array_sized_new(FALSE, FALSE, sizeof(MvmCpuidEntry), dump->cpuid->nent);
    for (guint i = 0; i < dump->cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &dump->cpuid->entries[i];
        MvmCpuidEntry entry = {e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx};
        g_array_append_val(config->cpuid, entry);
    }
    config->msrs = g_array_sized_new(FALSE, FALSE, sizeof(MvmMsrEntry), dump->msrs->nmsrs);
    for (guint i = 0; i < dump->msrs->nmsrs; i++) {
        MvmMsrEntry entry = {dump->msrs->entries[i].index, dump->msrs->entries[i].data};
        g_array_append_val(config->msrs, entry);
    }
    return config;
}

static gboolean dump_parked(MvmVm *vm, gpointer data, GError **error)
{
    MvmCpuConfig *config = data;
    MvmVcpu *first = vm->vcpus[0].vcpu;

    for (guint i = 0; i < vm->n_vcpus; i++) {
        g_autoptr(MvmVcpuCpuDump) dump = mvm_vcpu_dump_cpu_config(vm->vcpus[i].vcpu, error);
        if (dump == NULL) {
            g_prefix_error(error, "vCPU %u: ", i);
            return FALSE;
        }
        g_ptr_array_add(config->vcpus, from_dump(i, dump));
    }
    config->tsc_khz = mvm_vcpu_get_tsc_khz(first, NULL);
    config->tsc_scaling = vm->kvm->has_tsc_control;
    return TRUE;
}

MvmCpuConfig *mvm_vm_dump_cpu_config(MvmVm *vm, GError **error)
{
    g_autoptr(MvmCpuConfig) config = g_new0(MvmCpuConfig, 1);

    g_return_val_if_fail(vm != NULL, NULL);
    config->cpu_template = g_strdup(mvm_cpu_template_get_name(vm->config->cpu_template));
    config->vcpus = g_ptr_array_new_with_free_func(vcpu_cpu_config_free);
    if (!mvm_vm_with_vcpus_parked(vm, "read the CPU of", MVM_PARKED_ALLOW_CREATED, dump_parked,
                                  config, error))
        return NULL;
    return g_steal_pointer(&config);
}
