/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* The daemon's one error domain; each code has a D-Bus name (names.h). */
typedef enum {
    MVMD_ERROR_INVALID_ARGUMENT, /* org.microvmd.MicroVM1.Error.InvalidArgument */
    MVMD_ERROR_NO_SUCH_VM,       /* org.microvmd.MicroVM1.Error.NoSuchVM */
    MVMD_ERROR_ALREADY_EXISTS,   /* org.microvmd.MicroVM1.Error.AlreadyExists */
    MVMD_ERROR_INVALID_STATE,    /* org.microvmd.MicroVM1.Error.InvalidState */
    MVMD_ERROR_NOT_AUTHORIZED,   /* org.microvmd.MicroVM1.Error.NotAuthorized */
    MVMD_ERROR_FAILED,           /* org.microvmd.MicroVM1.Error.Failed */
    MVMD_ERROR_TIMEOUT,          /* org.microvmd.MicroVM1.Error.Timeout */
    MVMD_ERROR_NO_RESOURCES,     /* org.microvmd.MicroVM1.Error.NoResources */
    MVMD_ERROR_LIMIT_REACHED,    /* org.microvmd.MicroVM1.Error.LimitReached (bounds.h) */
    MVMD_ERROR_QUOTA_EXCEEDED,   /* org.microvmd.MicroVM1.Error.QuotaExceeded (quota.h) */
    /* org.microvmd.MicroVM1.Error.IncompatibleCPU: this host's CPU lacks what a snapshot's
     * guest saw, or what a CPU template sets (MVM_ERROR_INCOMPATIBLE_CPU) */
    MVMD_ERROR_INCOMPATIBLE_CPU,
    /* org.microvmd.MicroVM1.Error.NotSupported: this host or this VM lacks what the call needs
     * (MVM_ERROR_NOT_SUPPORTED: a lazy restore without userfaultfd, the working set of a VM
     * not restored lazily) */
    MVMD_ERROR_NOT_SUPPORTED,
} MvmdError;

#define MVMD_ERROR_N_ERRORS (MVMD_ERROR_NOT_SUPPORTED + 1)

#define MVMD_ERROR (mvmd_error_quark())
GQuark mvmd_error_quark(void);

/*
 * Converts an error from libmicrovm (or anything else) into the daemon's domain, keeping the
 * message and prefixing it with @what when given. Errors already in MVMD_ERROR pass unchanged.
 */
GError *mvmd_error_from_error(const GError *error, const char *what);

/*
 * Sets "WHAT: strerror(errno)" in MVMD_ERROR: NoResources when the host ran out of something
 * (descriptors, memory, threads), else @otherwise. Returns FALSE.
 */
gboolean mvmd_set_errno_error(GError **error, MvmdError otherwise, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

G_END_DECLS
