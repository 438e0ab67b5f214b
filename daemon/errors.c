/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "errors.h"

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
    {MVMD_ERROR_LIMIT_REACHED, MVMD_DBUS_ERROR_LIMIT_REACHED},
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
    default:
        return MVMD_ERROR_FAILED;
    }
}

GError *mvmd_error_from_error(const GError *error, const char *what)
{
    MvmdError code = MVMD_ERROR_FAILED;
    const char *hint = "";

    if (error->domain == MVMD_ERROR)
        code = error->code;
    else if (error->domain == MVM_ERROR)
        code = code_from_mvm(error->code);
    if (error->domain == MVM_ERROR && error->code == MVM_ERROR_NO_KVM)
        hint = "KVM is not available on this host: ";
    if (what)
        return g_error_new(MVMD_ERROR, code, "%s: %s%s", what, hint, error->message);
    return g_error_new(MVMD_ERROR, code, "%s%s", hint, error->message);
}
