/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "fd-closer.h"

#include "errors.h"

#include <unistd.h>

#include <gio/gunixfdlist.h>

#define FDS_KEY "mvmd-caller-fds"

static GAsyncQueue *queue; /* of GINT_TO_POINTER(fd + 1): 0 is the queue's "nothing" */

static gpointer closer_thread(gpointer data)
{
    for (;;)
        close(GPOINTER_TO_INT(g_async_queue_pop(queue)) - 1);
    return NULL;
}

gboolean mvmd_fd_closer_start(GError **error)
{
    static gsize started;
    static gboolean ok;
    static GError *failure;

    if (g_once_init_enter(&started)) {
        GThread *thread;

        queue = g_async_queue_new();
        thread = g_thread_try_new("fd-closer", closer_thread, NULL, &failure);
        ok = thread != NULL;
        if (thread)
            g_thread_unref(thread); /* runs until the process ends */
        g_once_init_leave(&started, 1);
    }
    if (!ok && error)
        *error = g_error_copy(failure);
    return ok;
}

void mvmd_close_later(int fd)
{
    g_autoptr(GError) error = NULL;

    if (fd < 0)
        return;
    if (!mvmd_fd_closer_start(&error)) {
        /* No thread to be had (the daemon starts it before it takes calls, so only a unit
         * test can get here): better a close that may wait than a descriptor leaked. */
        close(fd);
        return;
    }
    g_async_queue_push(queue, GINT_TO_POINTER(fd + 1));
}

void mvmd_clear_fd_later(int *fd)
{
    mvmd_close_later(*fd);
    *fd = -1;
}

static void release_fds(gpointer data)
{
    GUnixFDList *list = data;
    int n = 0;
    g_autofree int *fds = g_unix_fd_list_steal_fds(list, &n);

    for (int i = 0; i < n; i++)
        mvmd_close_later(fds[i]);
    g_object_unref(list);
}

static GDBusMessage *take_fds(GDBusConnection *connection, GDBusMessage *message, gboolean incoming,
                              gpointer user_data)
{
    GUnixFDList *list = incoming ? g_dbus_message_get_unix_fd_list(message) : NULL;
    g_autofree int *fds = NULL;
    int n = 0;

    if (!list || g_unix_fd_list_get_length(list) == 0)
        return message;
    /* The message's list is left empty, so GDBus has nothing to close. */
    fds = g_unix_fd_list_steal_fds(list, &n);
    g_object_set_data_full(G_OBJECT(message), FDS_KEY, g_unix_fd_list_new_from_array(fds, n),
                           release_fds);
    return message;
}

void mvmd_fd_closer_watch(GDBusConnection *connection)
{
    g_dbus_connection_add_filter(connection, take_fds, NULL, NULL);
}

GUnixFDList *mvmd_invocation_fds(GDBusMethodInvocation *invocation)
{
    GDBusMessage *message = g_dbus_method_invocation_get_message(invocation);
    GUnixFDList *taken = g_object_get_data(G_OBJECT(message), FDS_KEY);

    return taken ? taken : g_dbus_message_get_unix_fd_list(message);
}

int mvmd_fd_list_dup(GUnixFDList *fd_list, GVariant *value, GError **error)
{
    gint32 index = g_variant_get_handle(value);
    g_autoptr(GError) local = NULL;
    int fd;

    if (!fd_list || index < 0 || index >= g_unix_fd_list_get_length(fd_list)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "handle %d: no such file descriptor in the message", index);
        return -1;
    }
    fd = g_unix_fd_list_get(fd_list, index, &local);
    if (fd < 0) {
        g_autofree char *what =
            g_strdup_printf("handle %d: cannot duplicate the descriptor", index);

        g_propagate_error(error, mvmd_error_from_error(local, what));
    }
    return fd;
}
