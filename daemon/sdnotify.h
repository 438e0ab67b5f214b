/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What microvmd tells its service manager (sd_notify(3)): readiness, reloads, stopping, a
 * watchdog from the main loop, a STATUS= line that follows the VMs, and why start-up failed.
 * Without $NOTIFY_SOCKET every call is a cheap no-op, so the daemon calls them unconditionally.
 */
#pragma once

#include <gio/gio.h>

#include "manager.h"

G_BEGIN_DECLS

/* READY=1, with the current STATUS= when a status watch exists. */
void mvmd_sd_notify_ready(void);
/* RELOADING=1 with MONOTONIC_USEC= (systemd.service(5), Type=notify-reload needs it). */
void mvmd_sd_notify_reloading(void);
/* STOPPING=1, and EXTEND_TIMEOUT_USEC= so the manager waits while the guests shut down. */
void mvmd_sd_notify_stopping(guint64 extend_usec);
/* Fatal start-up error: STATUS= with the message, and ERRNO= or BUSERROR= from @error. */
void mvmd_sd_notify_failure(const GError *error);

/*
 * WATCHDOG=1 every half $WATCHDOG_USEC, from a main-loop timeout: a main loop that is stuck
 * stops pinging and the service manager restarts us. Returns the source id, 0 when no
 * watchdog is requested.
 */
guint mvmd_sd_watchdog_add(void);

/* Called with every VM whose State changed (and once for each VM when it appears). */
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

/* The status line as it is now ("3 running, 1 paused, 5 defined"). */
char *mvmd_status_watch_describe(MvmdStatusWatch *watch);

G_END_DECLS
