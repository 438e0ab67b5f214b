/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One VM on the bus: the org.microvmd.MicroVM1.VM interface skeleton, subclassed. It owns the
 * definition, the console, and while the VM is running or paused the libmicrovm VM. Lifecycle
 * operations run in a GTask worker thread (they do file I/O, KVM ioctls and thread joins), one
 * at a time; news from the vCPU threads reaches the main loop through idle sources.
 */
#pragma once

#include "definition.h"
#include "context.h"
#include "mvmd-dbus-generated.h"

G_BEGIN_DECLS

#define MVMD_TYPE_VM_OBJECT (mvmd_vm_object_get_type())
G_DECLARE_FINAL_TYPE(MvmdVmObject, mvmd_vm_object, MVMD, VM_OBJECT, MvmdVmSkeleton)

typedef void (*MvmdVmObjectReadyFunc)(MvmdVmObject *self, const GError *error, gpointer user_data);

/* Takes @definition. @state is the initial State (MVMD_STATE_CREATED or _STOPPED). */
MvmdVmObject *mvmd_vm_object_new(MvmdContext *ctx, MvmdVmDefinition *definition, const char *state);

const char *mvmd_vm_object_get_vm_name(MvmdVmObject *self);
const MvmdVmDefinition *mvmd_vm_object_get_definition(MvmdVmObject *self);
/* /org/microvmd/MicroVM1/vm/<escaped name> */
char *mvmd_vm_object_build_path(const char *name);

/* Holds KVM resources, or an operation is in progress. */
gboolean mvmd_vm_object_is_active(MvmdVmObject *self);

/*
 * RestoreVM: the first start of a VM defined from a snapshot (mvmd_vm_definition_new_restored()).
 * @func learns how it went (error NULL: paused, or running unless @paused).
 */
void mvmd_vm_object_restore(MvmdVmObject *self, gboolean paused, MvmdVmObjectReadyFunc func,
                            gpointer user_data);

/* A VM that was never exported (its restore failed): its console and logs go. */
void mvmd_vm_object_discard(MvmdVmObject *self);
/*
 * A VM dropped by a reload (its definition changed or went): a call on its way to it, waiting
 * for polkit, answers NoSuchVM instead of acting on a VM that is no longer there (or on the
 * definition that replaced it, which has the same name). Its logs stay, for that definition.
 */
void mvmd_vm_object_retire(MvmdVmObject *self);

/* Start without a caller (autostart); failures are logged. */
void mvmd_vm_object_autostart(MvmdVmObject *self);

/* Daemon shutdown: ask a running guest to shut down (a paused one is stopped at once). */
void mvmd_vm_object_begin_shutdown(MvmdVmObject *self);
/* Daemon shutdown: stop now (or as soon as the operation in progress ends). */
void mvmd_vm_object_force_stop(MvmdVmObject *self);

G_END_DECLS
