/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * systemd-machined: each running or paused VM is a machine (CreateMachine: class "vm", the
 * VM's UUID, service "microvmd", and a leader process of its own, machine-leader.h, which
 * machined moves into machine-NAME.scope), so `machinectl list` shows every VM. machined's
 * requests come back through the leader: poweroff asks the guest to shut down, reboot resets
 * it, terminate (or the leader's death) stops it. A stopped VM is unregistered and its leader
 * leaves. Leaders are only made while machined is on the bus or the bus can start it.
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
