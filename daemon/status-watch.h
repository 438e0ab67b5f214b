/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * STATUS= that follows the VMs: a watch on the manager's VMs and their State, which sends the
 * summary line (mvmd_manager_service_describe()) through the notifier (sdnotify.h) and tells
 * others (machined) about each VM's State.
 */
#pragma once

#include "manager.h"

G_BEGIN_DECLS

/*
 * Called with every VM whose State changed, once for each VM when it appears, and with @state
 * NULL when it goes (deleted or dropped; another VM of its name may have appeared just before).
 */
typedef void (*MvmdVmStateChangedFunc)(MvmdVmService *vm, const char *state, gpointer user_data);

/*
 * Keeps STATUS= current ("3 running, 1 paused, 5 defined") by following the manager's VMs and
 * their State; @func (may be NULL) hears about each state change, e.g. for machined.
 */
typedef struct _MvmdStatusWatch MvmdStatusWatch;
MvmdStatusWatch *mvmd_status_watch_new(MvmdManagerService *manager, MvmdVmStateChangedFunc func,
                                       gpointer user_data);
void mvmd_status_watch_free(MvmdStatusWatch *watch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdStatusWatch, mvmd_status_watch_free)

G_END_DECLS
