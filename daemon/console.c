/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "bounds.h"
#include "errors.h"
#include "microvm.h"

typedef struct {
    MvmdConsole *console; /* not a ref: the console owns its clients */
    GSocket *socket;
    GSource *in_source;
    GSource *out_source;
    GByteArray *out;
} Client;

struct _MvmdConsole {
    gatomicrefcount ref;
    char *name;
    char *log_dir;
    GMainContext *context;
    MvmdConsoleInputFunc input;
    gpointer input_data;

    /* Shared with the vCPU threads. */
    GMutex lock;
    GByteArray *pending;
    gboolean scheduled;
    gboolean closed;
    guint64 dropped;

    /* Main loop only. */
    guint8 ring[MVMD_CONSOLE_RING_SIZE];
    gsize ring_head; /* next write position */
    gsize ring_fill;
    GPtrArray *clients; /* Client * */
    int log_fd;
    gsize log_size;
    gboolean log_failed;
};

static void client_free(Client *client)
{
    if (client->in_source) {
        g_source_destroy(client->in_source);
        g_source_unref(client->in_source);
    }
    if (client->out_source) {
        g_source_destroy(client->out_source);
        g_source_unref(client->out_source);
    }
    g_socket_close(client->socket, NULL);
    g_object_unref(client->socket);
    g_byte_array_unref(client->out);
    g_free(client);
}

MvmdConsole *mvmd_console_new(const char *name, const char *log_dir, GMainContext *context,
                              MvmdConsoleInputFunc input, gpointer user_data)
{
    MvmdConsole *console = g_new0(MvmdConsole, 1);

    g_atomic_ref_count_init(&console->ref);
    console->name = g_strdup(name);
    console->log_dir = g_strdup(log_dir);
    console->context = context ? g_main_context_ref(context) : g_main_context_ref_thread_default();
    console->input = input;
    console->input_data = user_data;
    g_mutex_init(&console->lock);
    console->pending = g_byte_array_new();
    console->clients = g_ptr_array_new_with_free_func((GDestroyNotify)client_free);
    console->log_fd = -1;
    return console;
}

MvmdConsole *mvmd_console_ref(MvmdConsole *console)
{
    g_atomic_ref_count_inc(&console->ref);
    return console;
}

void mvmd_console_unref(MvmdConsole *console)
{
    if (!console || !g_atomic_ref_count_dec(&console->ref))
        return;
    g_ptr_array_unref(console->clients);
    if (console->log_fd >= 0)
        close(console->log_fd);
    g_byte_array_unref(console->pending);
    g_mutex_clear(&console->lock);
    g_main_context_unref(console->context);
    g_free(console->log_dir);
    g_free(console->name);
    g_free(console);
}

guint mvmd_console_get_n_clients(MvmdConsole *console)
{
    return console->clients->len;
}

/* ---- console.log ----------------------------------------------------------------------- */

static void log_failed(MvmdConsole *console, const char *what, int err)
{
    if (!console->log_failed)
        g_warning("%s: console log %s: %s; not logging this console any more", console->name, what,
                  g_strerror(err));
    console->log_failed = TRUE;
    if (console->log_fd >= 0)
        close(console->log_fd);
    console->log_fd = -1;
}

static gboolean log_open(MvmdConsole *console)
{
    g_autofree char *path = g_build_filename(console->log_dir, "console.log", NULL);
    struct stat st;

    if (g_mkdir_with_parents(console->log_dir, 0700) < 0) {
        log_failed(console, "directory", errno);
        return FALSE;
    }
    console->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (console->log_fd < 0 && mvm_errno_is_no_resources(errno)) {
        /* The daemon is out of descriptors for now: this output is lost, later output not. */
        g_debug("%s: console log open: %s", console->name, g_strerror(errno));
        return FALSE;
    }
    if (console->log_fd < 0) {
        log_failed(console, "open", errno);
        return FALSE;
    }
    console->log_size = fstat(console->log_fd, &st) == 0 ? (gsize)st.st_size : 0;
    return TRUE;
}

static void log_rotate(MvmdConsole *console)
{
    g_autofree char *path = g_build_filename(console->log_dir, "console.log", NULL);
    g_autofree char *old = g_build_filename(console->log_dir, "console.log.1", NULL);

    close(console->log_fd);
    console->log_fd = -1;
    if (g_rename(path, old) < 0)
        log_failed(console, "rotate", errno);
    else
        log_open(console);
}

static void log_write(MvmdConsole *console, const guint8 *data, gsize len)
{
    if (!console->log_dir || console->log_failed)
        return;
    if (console->log_fd < 0 && !log_open(console))
        return;
    while (len > 0) {
        gsize room = MVMD_CONSOLE_LOG_MAX - MIN(console->log_size, MVMD_CONSOLE_LOG_MAX);
        gsize chunk = MIN(len, room);
        ssize_t n;

        if (chunk == 0) {
            log_rotate(console);
            if (console->log_fd < 0)
                return;
            continue;
        }
        n = write(console->log_fd, data, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log_failed(console, "write", n < 0 ? errno : EIO);
            return;
        }
        console->log_size += n;
        data += n;
        len -= n;
    }
}

/* ---- ring ------------------------------------------------------------------------------ */

static void ring_append(MvmdConsole *console, const guint8 *data, gsize len)
{
    if (len > MVMD_CONSOLE_RING_SIZE) {
        data += len - MVMD_CONSOLE_RING_SIZE;
        len = MVMD_CONSOLE_RING_SIZE;
    }
    while (len > 0) {
        gsize chunk = MIN(len, MVMD_CONSOLE_RING_SIZE - console->ring_head);

        memcpy(console->ring + console->ring_head, data, chunk);
        console->ring_head = (console->ring_head + chunk) % MVMD_CONSOLE_RING_SIZE;
        console->ring_fill = MIN(console->ring_fill + chunk, MVMD_CONSOLE_RING_SIZE);
        data += chunk;
        len -= chunk;
    }
}

static void ring_copy_to(MvmdConsole *console, GByteArray *out)
{
    gsize start =
        (console->ring_head + MVMD_CONSOLE_RING_SIZE - console->ring_fill) % MVMD_CONSOLE_RING_SIZE;
    gsize first = MIN(console->ring_fill, MVMD_CONSOLE_RING_SIZE - start);

    g_byte_array_append(out, console->ring + start, first);
    g_byte_array_append(out, console->ring, console->ring_fill - first);
}

/* ---- clients --------------------------------------------------------------------------- */

static void client_drop(Client *client, const char *why)
{
    MvmdConsole *console = client->console;

    g_debug("%s: console client detached (%s)", console->name, why);
    g_ptr_array_remove_fast(console->clients, client);
}

static gboolean client_writable(GSocket *socket, GIOCondition cond, gpointer user_data);

/* Sends what is queued; FALSE when the client was dropped. */
static gboolean client_send(Client *client)
{
    g_autoptr(GError) error = NULL;

    while (client->out->len > 0) {
        gssize n = g_socket_send(client->socket, (const char *)client->out->data, client->out->len,
                                 NULL, &error);
        if (n < 0) {
            if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                break;
            client_drop(client, error->message);
            return FALSE;
        }
        g_byte_array_remove_range(client->out, 0, n);
    }
    if (client->out->len > MVMD_CONSOLE_CLIENT_MAX) {
        client_drop(client, "not reading");
        return FALSE;
    }
    if (client->out->len > 0 && !client->out_source) {
        client->out_source = g_socket_create_source(client->socket, G_IO_OUT, NULL);
        g_source_set_callback(client->out_source, (GSourceFunc)(void (*)(void))client_writable,
                              client, NULL);
        g_source_attach(client->out_source, client->console->context);
    }
    return TRUE;
}

static gboolean client_writable(GSocket *socket, GIOCondition cond, gpointer user_data)
{
    Client *client = user_data;

    g_clear_pointer(&client->out_source, g_source_unref);
    client_send(client);
    return G_SOURCE_REMOVE;
}

static gboolean client_hangup(GSocket *socket, GIOCondition cond, gpointer user_data)
{
    Client *client = user_data;

    g_clear_pointer(&client->in_source, g_source_unref);
    client_drop(client, "hung up");
    return G_SOURCE_REMOVE;
}

static void client_watch(Client *client, GIOCondition cond, GSocketSourceFunc func);

static gboolean client_readable(GSocket *socket, GIOCondition cond, gpointer user_data)
{
    Client *client = user_data;
    MvmdConsole *console = client->console;
    g_autoptr(GError) error = NULL;
    guint8 buf[4096];
    gssize n = g_socket_receive(socket, (char *)buf, sizeof(buf), NULL, &error);

    if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return G_SOURCE_CONTINUE;
    if (n < 0) {
        g_clear_pointer(&client->in_source, g_source_unref);
        client_drop(client, error->message);
        return G_SOURCE_REMOVE;
    }
    if (n == 0) {
        /* The client shut down its sending side; it may still read until it hangs up. */
        g_clear_pointer(&client->in_source, g_source_unref);
        client_watch(client, G_IO_HUP | G_IO_ERR, client_hangup);
        return G_SOURCE_REMOVE;
    }
    if (console->input)
        console->input(buf, n, console->input_data);
    return G_SOURCE_CONTINUE;
}

static void client_watch(Client *client, GIOCondition cond, GSocketSourceFunc func)
{
    client->in_source = g_socket_create_source(client->socket, cond, NULL);
    g_source_set_callback(client->in_source, (GSourceFunc)(void (*)(void))func, client, NULL);
    g_source_attach(client->in_source, client->console->context);
}

int mvmd_console_attach(MvmdConsole *console, GError **error)
{
    int fds[2];
    Client *client;
    GSocket *socket;

    if (console->closed) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_STATE, "the console is closed");
        return -1;
    }
    if (console->clients->len >= MVMD_CONSOLE_CLIENTS_MAX) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_LIMIT_REACHED,
                    "%u clients are attached to this console already, the most there may be; "
                    "close one first",
                    console->clients->len);
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
        mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot make the console socket");
        return -1;
    }
    socket = g_socket_new_from_fd(fds[0], error);
    if (!socket) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    g_socket_set_blocking(socket, FALSE);
    client = g_new0(Client, 1);
    client->console = console;
    client->socket = socket;
    client->out = g_byte_array_new();
    g_ptr_array_add(console->clients, client);
    client_watch(client, G_IO_IN | G_IO_HUP | G_IO_ERR, client_readable);

    /* Whatever the vCPUs produced so far goes to the ring first, then the replay. */
    mvmd_console_flush(console);
    ring_copy_to(console, client->out);
    client_send(client);
    g_debug("%s: console client attached (%u now)", console->name, console->clients->len);
    return fds[1];
}

/* ---- output path ----------------------------------------------------------------------- */

static void deliver(MvmdConsole *console, const guint8 *data, gsize len)
{
    ring_append(console, data, len);
    log_write(console, data, len);
    /* Backwards: client_send() may drop the client (remove_fast moves the last one here). */
    for (guint i = console->clients->len; i-- > 0;) {
        Client *client = console->clients->pdata[i];

        g_byte_array_append(client->out, data, len);
        client_send(client);
    }
}

void mvmd_console_flush(MvmdConsole *console)
{
    g_autoptr(GByteArray) batch = NULL;
    guint64 dropped;

    g_mutex_lock(&console->lock);
    batch = console->pending;
    console->pending = g_byte_array_new();
    console->scheduled = FALSE;
    dropped = console->dropped;
    console->dropped = 0;
    g_mutex_unlock(&console->lock);

    if (dropped)
        g_warning("%s: console output too fast, %" G_GUINT64_FORMAT " bytes dropped", console->name,
                  dropped);
    if (batch->len > 0 && !console->closed)
        deliver(console, batch->data, batch->len);
}

static gboolean flush_idle(gpointer user_data)
{
    mvmd_console_flush(user_data);
    return G_SOURCE_REMOVE;
}

void mvmd_console_feed(MvmdConsole *console, const guint8 *data, gsize len)
{
    gboolean schedule = FALSE;

    g_mutex_lock(&console->lock);
    if (console->closed) {
        g_mutex_unlock(&console->lock);
        return;
    }
    if (console->pending->len + len > MVMD_CONSOLE_PENDING_MAX)
        console->dropped += len;
    else
        g_byte_array_append(console->pending, data, len);
    if (!console->scheduled) {
        console->scheduled = TRUE;
        schedule = TRUE;
    }
    g_mutex_unlock(&console->lock);

    if (schedule) {
        g_autoptr(GSource) source = g_idle_source_new();

        g_source_set_priority(source, G_PRIORITY_DEFAULT);
        g_source_set_callback(source, flush_idle, mvmd_console_ref(console),
                              (GDestroyNotify)mvmd_console_unref);
        g_source_set_static_name(source, "[microvmd] console flush");
        g_source_attach(source, console->context);
    }
}

void mvmd_console_close(MvmdConsole *console, gboolean remove_logs)
{
    mvmd_console_flush(console);
    g_mutex_lock(&console->lock);
    console->closed = TRUE;
    g_mutex_unlock(&console->lock);
    g_ptr_array_set_size(console->clients, 0);
    if (console->log_fd >= 0)
        close(console->log_fd);
    console->log_fd = -1;
    if (remove_logs && console->log_dir) {
        g_autofree char *log = g_build_filename(console->log_dir, "console.log", NULL);
        g_autofree char *old = g_build_filename(console->log_dir, "console.log.1", NULL);

        g_unlink(log);
        g_unlink(old);
        g_rmdir(console->log_dir);
    }
}
