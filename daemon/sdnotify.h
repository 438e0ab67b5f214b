/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What microvmd tells its service manager (sd_notify(3)): readiness, reloads, stopping, a
 * watchdog from the main loop, a STATUS= line (status-watch.h keeps it following the VMs), and
 * why start-up failed. Without $NOTIFY_SOCKET every call is a cheap no-op, so the daemon calls
 * them unconditionally. The socket is made once, with the first message: later ones need no
 * descriptor, and are sent when the daemon has none left.
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* READY=1 with STATUS=@status ("Ready" when NULL). */
void mvmd_sd_notify_ready(const char *status);
/* STATUS=@status. */
void mvmd_sd_notify_status(const char *status);
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

G_END_DECLS
