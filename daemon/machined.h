/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * systemd-machined: each running or paused VM is a machine (CreateMachine: class "vm", the
 * VM's UUID, service "microvmd", and a leader process of its own, machine-leader.h, which
 * machined moves into machine-NAME.scope), so `machinectl list` shows every VM. machined's
 * requests come back through the leader: poweroff asks the guest to shut down, reboot resets
 * it, terminate shuts it down (stopped after the timeout; at once if the leader is killed). When
 * a VM stops its leader leaves, and its scope and machine go with it. Leaders are only made while
 * machined is on the bus or the bus can start it.
 */
#pragma once

#include <gio/gio.h>

#include "vm-service.h"

G_BEGIN_DECLS

typedef struct _MvmdMachined MvmdMachined;

/*
 * @connection: the system bus (where machined lives). A VM terminated through machined gets
 * @shutdown_timeout_sec to shut down before it is stopped, as at microvmd's own stop.
 */
MvmdMachined *mvmd_machined_new(GDBusConnection *connection, guint shutdown_timeout_sec);
/* Lets every leader go: machined forgets their machines as their scopes empty. */
void mvmd_machined_free(MvmdMachined *machined);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdMachined, mvmd_machined_free)

/* Feed it every State change (an MvmdVmStateChangedFunc, see status-watch.h). */
void mvmd_machined_vm_state_changed(MvmdVmService *vm, const char *state, gpointer machined);

G_END_DECLS
