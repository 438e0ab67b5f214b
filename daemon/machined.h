/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * systemd-machined: each running VM is registered (RegisterMachine, class "vm", the VM's UUID,
 * service "microvmd", leader = this process) so `machinectl list` shows it, and unregistered
 * when it stops. Without machined on the bus nothing happens (logged once at debug level).
 *
 * machined keeps one machine per leader process and per unit: as every VM runs inside the one
 * microvmd process, only the first running VM can be registered at a time; the others are
 * refused by machined and logged. Never call TerminateMachine on them: it would stop microvmd.
 */
#pragma once

#include <gio/gio.h>

#include "vm-service.h"

G_BEGIN_DECLS

typedef struct _MvmdMachined MvmdMachined;

/* @connection: the system bus (where machined lives). */
MvmdMachined *mvmd_machined_new(GDBusConnection *connection);
/* Unregisters what is still registered (without waiting for replies). */
void mvmd_machined_free(MvmdMachined *machined);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdMachined, mvmd_machined_free)

/* Feed it every State change (an MvmdVmStateChangedFunc, see status-watch.h). */
void mvmd_machined_vm_state_changed(MvmdVmService *vm, const char *state, gpointer machined);

G_END_DECLS
