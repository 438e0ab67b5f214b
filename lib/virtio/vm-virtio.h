/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Hooks of the VM (vm.c, vm-run.c) into its virtio devices and their I/O thread. */
#pragma once

#include "boot.h"
#include "microvm.h"

G_BEGIN_DECLS

/* Starts the I/O thread and builds every configured device (MMIO slots, GSIs, snapshot names). */
gboolean mvm_vm_attach_virtio(MvmVm *vm, GError **error);
/* What the boot loader announces (DSDT and command line); free with g_free. */
MvmBootMmioDevice *mvm_vm_virtio_boot_devices(MvmVm *vm, guint *n);
/* Stops the I/O thread, then frees the devices. */
void mvm_vm_detach_virtio(MvmVm *vm);
/* Pause (TRUE) parks the I/O thread so no device touches guest memory; resume (FALSE). */
void mvm_vm_quiesce_virtio(MvmVm *vm, gboolean quiet);
/* Before a restore gives the devices their state: the NICs are a clone's (MVM_RESTORE_CLONE). */
void mvm_vm_virtio_set_clone(MvmVm *vm);
/* After it: the VM's config gets the MACs the NICs have (the snapshot's, or a clone's own). */
void mvm_vm_virtio_sync_macs(MvmVm *vm);

G_END_DECLS
