/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "errors.h"

#include <errno.h>
#include <stdarg.h>

#include "microvm.h"
#include "names.h"

static const GDBusErrorEntry mvmd_error_entries[] = {
    {MVMD_ERROR_INVALID_ARGUMENT, MVMD_DBUS_ERROR_INVALID_ARGUMENT},
    {MVMD_ERROR_NO_SUCH_VM, MVMD_DBUS_ERROR_NO_SUCH_VM},
    {MVMD_ERROR_ALREADY_EXISTS, MVMD_DBUS_ERROR_ALREADY_EXISTS},
    {MVMD_ERROR_INVALID_STATE, MVMD_DBUS_ERROR_INVALID_STATE},
    {MVMD_ERROR_NOT_AUTHORIZED, MVMD_DBUS_ERROR_NOT_AUTHORIZED},
    {MVMD_ERROR_FAILED, MVMD_DBUS_ERROR_FAILED},
    {MVMD_ERROR_TIMEOUT, MVMD_DBUS_ERROR_TIMEOUT},
    {MVMD_ERROR_NO_RESOURCES, MVMD_DBUS_ERROR_NO_RESOURCES},
    {MVMD_ERROR_LIMIT_REACHED, MVMD_DBUS_ERROR_LIMIT_REACHED},
    {MVMD_ERROR_QUOTA_EXCEEDED, MVMD_DBUS_ERROR_QUOTA_EXCEEDED},
    {MVMD_ERROR_INCOMPATIBLE_CPU, MVMD_DBUS_ERROR_INCOMPATIBLE_CPU},
    {MVMD_ERROR_NOT_SUPPORTED, MVMD_DBUS_ERROR_NOT_SUPPORTED},
};

G_STATIC_ASSERT(G_N_ELEMENTS(mvmd_error_entries) == MVMD_ERROR_N_ERRORS);

GQuark mvmd_error_quark(void)
{
    static gsize quark;

    g_dbus_error_register_error_domain("mvmd-error-quark", &quark, mvmd_error_entries,
                                       G_N_ELEMENTS(mvmd_error_entries));
    return (GQuark)quark;
}

static MvmdError code_from_mvm(int code)
{
    switch (code) {
    case MVM_ERROR_INVALID_ARGUMENT:
        return MVMD_ERROR_INVALID_ARGUMENT;
    case MVM_ERROR_INVALID_STATE:
        return MVMD_ERROR_INVALID_STATE;
    case MVM_ERROR_NO_RESOURCES:
        return MVMD_ERROR_NO_RESOURCES;
    case MVM_ERROR_INCOMPATIBLE_CPU:
        return MVMD_ERROR_INCOMPATIBLE_CPU;
    case MVM_ERROR_NOT_SUPPORTED:
        return MVMD_ERROR_NOT_SUPPORTED;
    default:
        return MVMD_ERROR_FAILED;
    }
}

/* GLib's and GIO's own ways of saying that the host ran out of something. */
static gboolean is_glib_no_resources(const GError *error)
{
    return g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_MFILE) ||
           g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NFILE) ||
           g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOMEM) ||
           g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_AGAIN) ||
           g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES) ||
           g_error_matches(error, G_THREAD_ERROR, G_THREAD_ERROR_AGAIN);
}

static MvmdError code_from_error(const GError *error)
{
    if (error->domain == MVMD_ERROR)
        return error->code;
    if (error->domain == MVM_ERROR)
        return code_from_mvm(error->code);
    return is_glib_no_resources(error) ? MVMD_ERROR_NO_RESOURCES : MVMD_ERROR_FAILED;
}

GError *mvmd_error_from_error(const GError *error, const char *what)
{
    MvmdError code = code_from_error(error);
    const char *hint = "";

    if (error->domain == MVM_ERROR && error->code == MVM_ERROR_NO_KVM)
        hint = "KVM is not available on this host: ";
    if (what)
        return g_error_new(MVMD_ERROR, code, "%s: %s%s", what, hint, error->message);
    return g_error_new(MVMD_ERROR, code, "%s%s", hint, error->message);
}

gboolean mvmd_set_errno_error(GError **error, MvmdError otherwise, const char *fmt, ...)
{
    int saved = errno;
    MvmdError code = mvm_errno_is_no_resources(saved) ? MVMD_ERROR_NO_RESOURCES : otherwise;
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MVMD_ERROR, code, "%s: %s", what, g_strerror(saved));
    return FALSE;
}
