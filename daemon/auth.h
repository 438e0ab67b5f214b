/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/*
 * The one place where a method call is authorized. Every mutating handler goes
 * "handle → mvmd_authorize_async → act → complete", so polkit (issue #5) plugs in here alone:
 * @action_id is a polkit action (MVMD_ACTION_* in names.h) and @details become the polkit
 * details (e.g. "vm" → name). For now every caller is allowed.
 *
 * @callback runs on the caller's thread-default main context, never from within this call.
 */
void mvmd_authorize_async(GDBusMethodInvocation *invocation, const char *action_id,
                          GHashTable *details, GAsyncReadyCallback callback, gpointer user_data);

/* Returns FALSE with MVMD_ERROR_NOT_AUTHORIZED (or another error) when the call is denied. */
gboolean mvmd_authorize_finish(GAsyncResult *result, GError **error);

G_END_DECLS
