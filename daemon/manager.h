/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The org.microvmd.MicroVM1.Manager interface (skeleton subclass; the generated interface
 * already owns the name MvmdManager): defines VMs, keeps them by name, exports each under the
 * ObjectManager.
 */
#pragma once

#include "context.h"
#include "mvmd-dbus-generated.h"
#include "vm-service.h"

G_BEGIN_DECLS

#define MVMD_TYPE_MANAGER_SERVICE (mvmd_manager_service_get_type())
G_DECLARE_FINAL_TYPE(MvmdManagerService, mvmd_manager_service, MVMD, MANAGER_SERVICE,
                     MvmdManagerSkeleton)

MvmdManagerService *mvmd_manager_service_new(MvmdContext *ctx,
                                             GDBusObjectManagerServer *object_manager);

/* Loads the stored definitions and exports them (state stopped). */
void mvmd_manager_service_load(MvmdManagerService *self);
/*
 * Reload()/SIGHUP: re-read microvmd.conf (the quotas), then RELOADING=1, re-read the stored
 * definitions (new ones appear, changed or removed ones of VMs that are not running or paused
 * are replaced or dropped), READY=1. An invalid configuration changes nothing: FALSE.
 */
gboolean mvmd_manager_service_reload(MvmdManagerService *self, GError **error);
/* Starts every VM with autostart. */
void mvmd_manager_service_autostart(MvmdManagerService *self);
/*
 * The VMs the last daemon handed over (MvmdHandoffIn *, each taken: the array is left
 * holding NULLs): each is restored into its stored definition's object, or into a new
 * transient one, before autostart.
 */
void mvmd_manager_service_adopt(MvmdManagerService *self, GPtrArray *vms);

/* Every VM object (borrowed), in no particular order. */
GList *mvmd_manager_service_get_vms(MvmdManagerService *self);
/* How many VMs hold KVM resources or have an operation in progress. */
guint mvmd_manager_service_count_active(MvmdManagerService *self);
/* The VMs in one line, for STATUS= ("3 running, 1 paused, 5 defined"). */
char *mvmd_manager_service_describe(MvmdManagerService *self);

G_END_DECLS
