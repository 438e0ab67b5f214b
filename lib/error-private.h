/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Turning failed system calls into GErrors, and threads that fail instead of aborting. */
#pragma once

#include <glib.h>

#include "microvm.h"

G_BEGIN_DECLS

/* MVM_ERROR_NO_RESOURCES when @err says the host ran out of something, else @otherwise. */
MvmError mvm_error_code_for_errno(int err, MvmError otherwise);

/*
 * Sets "WHAT: strerror(errno)" in MVM_ERROR, with the code mvm_error_code_for_errno() picks
 * from errno and @otherwise; returns FALSE. errno is preserved.
 */
gboolean mvm_set_errno_error(GError **error, MvmError otherwise, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* MVM_ERROR_INVALID_ARGUMENT with the message; FALSE, for `return mvm_set_invalid(...)`. */
gboolean mvm_set_invalid(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/*
 * g_thread_try_new(), with the failure (no memory, no more threads) said as
 * MVM_ERROR_NO_RESOURCES. Never g_thread_new(): that one aborts the whole process.
 */
GThread *mvm_thread_new(const char *name, GThreadFunc func, gpointer data, GError **error);

G_END_DECLS
