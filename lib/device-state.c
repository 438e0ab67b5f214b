/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VM's device-state registry (device-state.h): filled as the VM builds its devices. */
#include "device-state.h"
#include "vm-private.h"

static void device_state_clear(gpointer data)
{
    MvmDeviceState *d = data;
    g_free(d->name);
}

void mvm_vm_add_device_state(MvmVm *vm, const char *name, const MvmDeviceStateOps *ops,
                             gpointer device)
{
    MvmDeviceState d = {g_strdup(name), ops, device};

    if (vm->device_states == NULL) {
        vm->device_states = g_array_new(FALSE, FALSE, sizeof(MvmDeviceState));
        g_array_set_clear_func(vm->device_states, device_state_clear);
    }
    g_array_append_val(vm->device_states, d);
}

void mvm_vm_free_device_states(MvmVm *vm)
{
    g_clear_pointer(&vm->device_states, g_array_unref);
}

guint mvm_vm_get_n_device_states(MvmVm *vm)
{
    return vm->device_states != NULL ? vm->device_states->len : 0;
}

const MvmDeviceState *mvm_vm_get_device_state(MvmVm *vm, guint i)
{
    return &g_array_index(vm->device_states, MvmDeviceState, i);
}
