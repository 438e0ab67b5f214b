/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Handoff (microvm.h, mvm_vm_save_for_handoff()): a VM saved for the next process, which
 * restores it with MVM_RESTORE_SHARE_MEMORY. Its `state` is a full snapshot's; its RAM is not
 * written anywhere when it is a memfd already: the next process maps that very memfd. Only RAM
 * mapped privately from a sealed image has no memfd of its own, and is copied into a new one.
 *
 * Change tracking is left alone: no dirty log is harvested and the VM's diff parent stays what
 * it was, so a handoff state is never a diff parent (nobody keeps it as a snapshot).
 */
#include <fcntl.h>
#include <unistd.h>

#include "snapshot.h"
#include "vm-private.h"

typedef struct {
    int state_fd;
    int memory_fd; /* out */
} Handoff;

/* A copy, where the VM's RAM is a private mapping of an image: a memfd as lib makes for RAM. */
static int copy_memory(MvmVm *vm, GError **error)
{
    int fd = mvm_memory_new_ram_fd(mvm_memory_get_size(vm->memory), error);

    if (fd >= 0 && !mvm_snapshot_write_memory_fd(vm, fd, error)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A descriptor of the VM's RAM memfd itself, all of it in (a lazy restore finished first). */
static int share_memory(MvmVm *vm, GError **error)
{
    if (!mvm_vm_finish_lazy_restore(vm, error))
        return -1;
    int fd = fcntl(mvm_memory_get_fd(vm->memory), F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot duplicate the guest memory's memfd");
    return fd;
}

static gboolean handoff_parked(MvmVm *vm, gpointer data, GError **error)
{
    Handoff *h = data;
    int fd = mvm_memory_get_fd(vm->memory) >= 0 ? share_memory(vm, error) : copy_memory(vm, error);

    if (fd < 0)
        return FALSE;
    g_autoptr(GBytes) state = mvm_snapshot_encode_vm(vm, error);
    if (state == NULL || !mvm_snapshot_write_state_fd(h->state_fd, state, error)) {
        close(fd);
        return FALSE;
    }
    h->memory_fd = fd;
    return TRUE;
}

gboolean mvm_vm_save_for_handoff(MvmVm *vm, int state_fd, int *memory_fd, GError **error)
{
    Handoff h = {state_fd, -1};

    g_return_val_if_fail(vm != NULL, FALSE);
    g_return_val_if_fail(state_fd >= 0 && memory_fd != NULL, FALSE);

    if (!mvm_vm_with_vcpus_parked(vm, "hand off", MVM_PARKED_LEAVE_PAUSED, handoff_parked, &h,
                                  error)) {
        g_prefix_error(error, "handoff: ");
        return FALSE;
    }
    *memory_fd = h.memory_fd;
    return TRUE;
}
