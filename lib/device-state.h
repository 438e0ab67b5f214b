/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM's device-state registry: how a device with state of its own (virtio queues, …) hands
 * that state out and takes it back. Devices include this, never snapshot.h: the snapshot code
 * sits on top and walks the registry (the end of this file); nothing here calls back into it.
 */
#pragma once

#include <glib.h>

#include "microvm.h"

G_BEGIN_DECLS

/*
 * A device that has state of its own (virtio queues, …) registers itself on
 * the VM when the VM builds it, under a name unique in that VM ("virtio-blk0").
 * A snapshot stores what save returns under that name in the payload's device
 * dictionary. A restore builds the VM from the snapshot's configuration, so the
 * same devices register again; it then hands each its state, and refuses a
 * snapshot where a registered device has no entry or an entry has no device.
 * save runs with every vCPU parked; restore runs before any vCPU runs and must
 * treat its input as untrusted (check sizes, indices, addresses; never abort).
 */
typedef struct {
    /* A new, non-floating reference; NULL and @error when the state cannot be taken. */
    GVariant *(*save)(gpointer device, GError **error);
    /* On failure: MVM_ERROR_INVALID_ARGUMENT with the reason. */
    gboolean (*restore)(gpointer device, GVariant *state, GError **error);
} MvmDeviceStateOps;

/* @ops must outlive the VM (a static table); @name is copied. */
void mvm_vm_add_device_state(MvmVm *vm, const char *name, const MvmDeviceStateOps *ops,
                             gpointer device);

/* ---- the registry, for the code that saves and restores the whole VM (snapshot.c) ---- */

typedef struct {
    char *name;
    const MvmDeviceStateOps *ops;
    gpointer device;
} MvmDeviceState;

/* In the order the devices registered. */
guint mvm_vm_get_n_device_states(MvmVm *vm);
const MvmDeviceState *mvm_vm_get_device_state(MvmVm *vm, guint i);

G_END_DECLS
