/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "auth.h"

#include "errors.h"

void mvmd_authorize_async(GDBusMethodInvocation *invocation, const char *action_id,
                          GHashTable *details, GAsyncReadyCallback callback, gpointer user_data)
{
    g_autoptr(GTask) task = g_task_new(NULL, NULL, callback, user_data);

    g_task_set_source_tag(task, mvmd_authorize_async);
    g_task_set_task_data(task, g_strdup(action_id), g_free);
    g_debug("authorizing %s for %s: allowed (no polkit yet)", action_id,
            g_dbus_method_invocation_get_sender(invocation));
    /* Issue #5: polkit_authority_check_authorization() for the sender's system-bus-name subject
     * with @details, ALLOW_USER_INTERACTION when the message allows it. GTask defers the
     * callback to a later main-loop iteration, so callers see the same shape as then. */
    g_task_return_boolean(task, TRUE);
}

gboolean mvmd_authorize_finish(GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, NULL), FALSE);
    return g_task_propagate_boolean(G_TASK(result), error);
}
