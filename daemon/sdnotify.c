/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sd_notify(3) writes. Main loop only; knows nothing of the VMs: whoever knows the status
 * (status-watch.c, the manager) passes its line.
 */
#include "sdnotify.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

/*
 * One socket to the service manager, made with the first message (at start-up) and kept:
 * sd_notify() makes a new one for every message, which a daemon out of descriptors cannot
 * have, and watchdog pings that fail for WatchdogSec= get the daemon killed with every guest
 * in it. A path or an abstract name ('@'); any other address (vsock:) goes through sd_notify().
 */
static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;

static gboolean notify_socket_open(void)
{
    const char *path = g_getenv("NOTIFY_SOCKET");
    gsize len = path ? strlen(path) : 0;

    if (notify_fd >= 0)
        return TRUE;
    if (len == 0 || (path[0] != '/' && path[0] != '@') || len >= sizeof(notify_addr.sun_path))
        return FALSE;
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, path, len);
    if (path[0] == '@')
        notify_addr.sun_path[0] = '\0';
    notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return notify_fd >= 0;
}

static void notify(const char *message)
{
    int r;

    if (notify_socket_open())
        r = sendto(notify_fd, message, strlen(message), MSG_NOSIGNAL,
                   (const struct sockaddr *)&notify_addr, notify_addr_len) < 0
                ? -errno
                : 0;
    else
        r = sd_notify(0, message);
    if (r < 0)
        g_debug("sd_notify(%s): %s", message, g_strerror(-r));
}

void mvmd_sd_notify_ready(const char *status)
{
    g_autofree char *message = g_strdup_printf("READY=1\nSTATUS=%s", status ? status : "Ready");

    notify(message);
}

void mvmd_sd_notify_status(const char *status)
{
    g_autofree char *message = g_strconcat("STATUS=", status, NULL);

    notify(message);
}

void mvmd_sd_notify_reloading(void)
{
    g_autofree char *message = g_strdup_printf(
        "RELOADING=1\nSTATUS=Reloading VM definitions\nMONOTONIC_USEC=%" G_GINT64_FORMAT,
        g_get_monotonic_time());

    notify(message);
}

void mvmd_sd_notify_stopping(guint64 extend_usec)
{
    g_autofree char *message = g_strdup_printf(
        "STOPPING=1\nSTATUS=Shutting down the VMs\nEXTEND_TIMEOUT_USEC=%" G_GUINT64_FORMAT,
        extend_usec);

    notify(message);
}

/* The GIO codes a start-up failure can carry, as errno values (ERRNO= wants one). */
static int io_error_to_errno(int code)
{
    switch (code) {
    case G_IO_ERROR_NOT_FOUND:
        return ENOENT;
    case G_IO_ERROR_PERMISSION_DENIED:
        return EACCES;
    case G_IO_ERROR_EXISTS:
        return EEXIST;
    case G_IO_ERROR_CONNECTION_REFUSED:
        return ECONNREFUSED;
    case G_IO_ERROR_TIMED_OUT:
        return ETIMEDOUT;
    case G_IO_ERROR_INVALID_ARGUMENT:
        return EINVAL;
    case G_IO_ERROR_ADDRESS_IN_USE:
        return EADDRINUSE;
    case G_IO_ERROR_NOT_SUPPORTED:
        return EOPNOTSUPP;
    default:
        return EIO;
    }
}

void mvmd_sd_notify_failure(const GError *error)
{
    g_autofree char *remote = g_dbus_error_get_remote_error(error);
    g_autofree char *status = g_strescape(error->message, NULL);
    g_autofree char *message = NULL;

    if (!remote && error->domain == G_DBUS_ERROR)
        remote = g_dbus_error_encode_gerror(error);
    if (remote)
        message = g_strdup_printf("STATUS=Failed to start: %s\nBUSERROR=%s", status, remote);
    else
        message =
            g_strdup_printf("STATUS=Failed to start: %s\nERRNO=%d", status,
                            error->domain == G_IO_ERROR ? io_error_to_errno(error->code) : EIO);
    notify(message);
}

/* ---- watchdog -------------------------------------------------------------------------- */

static gboolean watchdog_ping(gpointer user_data)
{
    notify("WATCHDOG=1");
    return G_SOURCE_CONTINUE;
}

guint mvmd_sd_watchdog_add(void)
{
    uint64_t usec = 0;
    int r = sd_watchdog_enabled(0, &usec);
    guint interval_ms;

    if (r < 0)
        g_warning("invalid watchdog settings from the service manager: %s", g_strerror(-r));
    if (r <= 0 || usec == 0)
        return 0;
    /* Half the period, as sd_watchdog_enabled(3) recommends; at least 1 ms. */
    interval_ms = (guint)MAX(usec / 2000, 1);
    g_message("watchdog: pinging every %u ms", interval_ms);
    notify("WATCHDOG=1");
    return g_timeout_add(interval_ms, watchdog_ping, NULL);
}
