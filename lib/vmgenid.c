/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM generation ID (microvm.h): 16 bytes at MVM_VMGENID_ADDR, which the DSDT's VGEN device
 * names (boot/acpi.c), and an edge on MVM_VMGENID_GSI, which the Generic Event Device turns into
 * Notify(VGEN, 0x80) in the guest. The bytes live in guest memory, so a snapshot carries them
 * and a restore only has to write new ones and raise the edge. What the VM's ID is comes from
 * our own copy, never from guest memory, which the guest may have written anything into.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "layout.h"
#include "vm-private.h"

static gboolean random_id(guint8 id[MVM_GENERATION_ID_SIZE], GError **error)
{
    gsize done = 0;

    /* The kernel's pool is ready long before a daemon runs: this never blocks after boot. */
    while (done < MVM_GENERATION_ID_SIZE) {
        ssize_t n = getrandom(id + done, MVM_GENERATION_ID_SIZE - done, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                       "cannot make a generation ID: getrandom");
        done += (gsize)n;
    }
    return TRUE;
}

/*
 * One edge: KVM's IOAPIC delivers an edge-triggered pin on the rising level, so the line is
 * raised and lowered at once. A guest that has not unmasked the pin (no driver) misses it, and
 * that is fine: a driver reads the ID when it binds.
 */
static gboolean notify_guest(MvmVm *vm, GError **error)
{
    struct kvm_irq_level irq = {.irq = MVM_VMGENID_GSI, .level = 1};

    if (mvm_kvm_ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_IRQ_LINE (generation ID)");
    irq.level = 0;
    if (mvm_kvm_ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_IRQ_LINE (generation ID)");
    return TRUE;
}

static gboolean write_id(MvmVm *vm, const guint8 *id, GError **error)
{
    guint8 fresh[MVM_GENERATION_ID_SIZE];

    if (id == NULL) {
        if (!random_id(fresh, error))
            return FALSE;
        id = fresh;
    }
    if (!mvm_memory_write(vm->memory, vm->vmgenid_addr, id, MVM_GENERATION_ID_SIZE, error))
        return FALSE;
    memcpy(vm->vmgenid, id, MVM_GENERATION_ID_SIZE);
    return TRUE;
}

gboolean mvm_vm_vmgenid_boot(MvmVm *vm, GError **error)
{
    vm->vmgenid_addr = MVM_VMGENID_ADDR;
    return write_id(vm, NULL, error);
}

gboolean mvm_vm_vmgenid_restore(MvmVm *vm, guint64 addr, const guint8 *id, GError **error)
{
    vm->vmgenid_addr = addr;
    if (addr == 0)
        return TRUE;
    return write_id(vm, id, error) && notify_guest(vm, error);
}

gboolean mvm_vm_get_generation_id(MvmVm *vm, guint8 id[MVM_GENERATION_ID_SIZE])
{
    g_return_val_if_fail(vm != NULL && id != NULL, FALSE);

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    if (vm->vmgenid_addr == 0)
        return FALSE;
    memcpy(id, vm->vmgenid, MVM_GENERATION_ID_SIZE);
    return TRUE;
}

/*
 * Under the VM's lock, so that a stop (which frees the devices, not the VM fd or memory) is
 * either before, and refuses, or after. A VM never started is not notified: its guest has not
 * run, and reads the ID when its driver binds.
 */
gboolean mvm_vm_set_generation_id(MvmVm *vm, const guint8 id[MVM_GENERATION_ID_SIZE],
                                  GError **error)
{
    g_return_val_if_fail(vm != NULL && id != NULL, FALSE);

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    if (vm->vmgenid_addr == 0) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                    "the VM has no generation ID device (restored from a snapshot older than "
                    "the device)");
        return FALSE;
    }
    if (vm->state == MVM_VM_STATE_STOPPED || vm->state == MVM_VM_STATE_CRASHED) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE,
                    "cannot set the generation ID of a VM that is %s",
                    mvm_vm_state_to_string(vm->state));
        return FALSE;
    }
    if (!write_id(vm, id, error))
        return FALSE;
    return vm->state == MVM_VM_STATE_CREATED || notify_guest(vm, error);
}
