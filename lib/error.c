/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "error-private.h"

#include <errno.h>
#include <stdarg.h>

/* The macro makes the name a string: clang-format must not space its dashes. */
/* clang-format off */
G_DEFINE_QUARK(mvm-error-quark, mvm_error)
/* clang-format on */

gboolean mvm_errno_is_no_resources(int err)
{
    switch (err) {
    case EMFILE: /* this process's descriptor limit (RLIMIT_NOFILE) */
    case ENFILE: /* the system's descriptor limit */
    case ENOMEM: /* memory, or mappings (vm.max_map_count) */
    case EAGAIN: /* threads (RLIMIT_NPROC, kernel.threads-max), locked memory */
        return TRUE;
    default:
        return FALSE;
    }
}

MvmError mvm_error_code_for_errno(int err, MvmError otherwise)
{
    return mvm_errno_is_no_resources(err) ? MVM_ERROR_NO_RESOURCES : otherwise;
}

gboolean mvm_set_invalid(GError **error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, message);
    return FALSE;
}

gboolean mvm_set_errno_error(GError **error, MvmError otherwise, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MVM_ERROR, mvm_error_code_for_errno(saved, otherwise), "%s: %s", what,
                g_strerror(saved));
    errno = saved;
    return FALSE;
}

GThread *mvm_thread_new(const char *name, GThreadFunc func, gpointer data, GError **error)
{
    g_autoptr(GError) local = NULL;
    GThread *thread = g_thread_try_new(name, func, data, &local);

    /* G_THREAD_ERROR_AGAIN is GLib's only code: pthread_create had no memory or no thread. */
    if (thread == NULL)
        g_set_error(error, MVM_ERROR, MVM_ERROR_NO_RESOURCES,
                    "cannot create thread %s (out of threads or memory): %s", name, local->message);
    return thread;
}
