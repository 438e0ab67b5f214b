/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One VM on the bus: the org.microvmd.MicroVM1.VM interface skeleton, subclassed (the generated
 * interface already owns the name MvmdVm; like MvmdManagerService, this is the service behind
 * it, and libmicrovm's MvmVm is the machine it runs). It owns the
 * definition, the console, and while the VM is running or paused the libmicrovm VM. Three
 * threads' code: the state machine on the main loop (vm-service.c, with the D-Bus methods in
 * vm-methods.c), lifecycle operations on a worker thread each, one at a time (vm-ops.c), and
 * news from the vCPU threads, brought to the main loop through idle sources (vm-run.c).
 * docs/architecture.md has every thread, what it may touch, and the state machine.
 */
#pragma once

#include "definition.h"
#include "handoff.h"
#include "context.h"
#include "mvmd-dbus-generated.h"

G_BEGIN_DECLS

#define MVMD_TYPE_VM_SERVICE (mvmd_vm_service_get_type())
G_DECLARE_FINAL_TYPE(MvmdVmService, mvmd_vm_service, MVMD, VM_SERVICE, MvmdVmSkeleton)

typedef void (*MvmdVmServiceReadyFunc)(MvmdVmService *self, const GError *error,
                                       gpointer user_data);

/* Takes @definition. @state is the initial State (MVMD_STATE_CREATED or _STOPPED). */
MvmdVmService *mvmd_vm_service_new(MvmdContext *ctx, MvmdVmDefinition *definition,
                                   const char *state);

const char *mvmd_vm_service_get_vm_name(MvmdVmService *self);
const MvmdVmDefinition *mvmd_vm_service_get_definition(MvmdVmService *self);
/* /org/microvmd/MicroVM1/vm/<escaped name> */
char *mvmd_vm_service_build_path(const char *name);

/* Holds KVM resources, or an operation is in progress. */
gboolean mvmd_vm_service_is_active(MvmdVmService *self);

/*
 * RestoreVM: the first start of a VM defined from a snapshot (mvmd_vm_definition_new_restored()).
 * @func learns how it went (error NULL: paused, or running unless @paused). @working_set_fd
 * (taken; -1: none) is a checked working set file for this restore's prefetch alone (a lazy
 * one): later Starts restore without it.
 */
void mvmd_vm_service_restore(MvmdVmService *self, gboolean paused, int working_set_fd,
                             MvmdVmServiceReadyFunc func, gpointer user_data);

/*
 * Takes what the manager charged to the owner's quota for this VM (@charge then holds nothing);
 * it goes back when the VM is deleted, dropped or discarded. A restore resizes it to the
 * snapshot's memory and vCPUs.
 */
void mvmd_vm_service_take_charge(MvmdVmService *self, MvmdQuotaCharge *charge);

/* A VM that was never exported (its restore failed): its console and logs go. */
void mvmd_vm_service_discard(MvmdVmService *self);
/*
 * A VM dropped by a reload (its definition changed or went): a call on its way to it, waiting
 * for polkit, answers NoSuchVM instead of acting on a VM that is no longer there (or on the
 * definition that replaced it, which has the same name). Its logs stay, for that definition.
 */
void mvmd_vm_service_retire(MvmdVmService *self);

/* Start without a caller (autostart); failures are logged. */
void mvmd_vm_service_autostart(MvmdVmService *self);

/* Daemon shutdown: ask a running guest to shut down (a paused one is stopped at once). */
void mvmd_vm_service_begin_shutdown(MvmdVmService *self);
/*
 * Daemon stopping to hand its VMs over (handoff.h): pause and save a running or paused VM and
 * push it into systemd's store; one the handoff cannot carry, or whose save fails, is shut
 * down as by begin_shutdown. Once the operation in progress (if any) ends.
 */
void mvmd_vm_service_begin_handoff(MvmdVmService *self);
/*
 * Start of a VM the last daemon handed over (@vm taken): restored from its descriptors, with
 * its RAM shared, not copied; running again if it ran.
 */
void mvmd_vm_service_adopt(MvmdVmService *self, MvmdHandoffIn *vm);

/* Daemon shutdown: stop now (or as soon as the operation in progress ends). */
void mvmd_vm_service_force_stop(MvmdVmService *self);

/*
 * Without a caller (machinectl, through machined.c): ask a running guest to shut down, as
 * Shutdown does, and hard-reset one (a Stop, then a Start), as Reboot does. Each does nothing,
 * logged, while an operation is in progress or the VM is not running.
 */
void mvmd_vm_service_request_power_off(MvmdVmService *self);
void mvmd_vm_service_hard_reset(MvmdVmService *self);

G_END_DECLS
