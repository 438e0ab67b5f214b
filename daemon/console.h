/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VM's serial console on the host side: output from the vCPU threads is batched into the
 * main loop, kept in a 64 KiB ring (replayed to each new client), appended to
 * <dir>/console.log (rotated to console.log.1 at 1 MiB), and fanned out to every attached
 * client socket; input from any client goes to the input function.
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define MVMD_CONSOLE_RING_SIZE   (64 * 1024)
#define MVMD_CONSOLE_LOG_MAX     (1024 * 1024)
#define MVMD_CONSOLE_CLIENT_MAX  (1024 * 1024) /* pending bytes before a client is dropped */
#define MVMD_CONSOLE_PENDING_MAX (4 * 1024 * 1024)

typedef struct _MvmdConsole MvmdConsole;

/* Called on the main loop with what a client wrote. */
typedef void (*MvmdConsoleInputFunc)(const guint8 *data, gsize len, gpointer user_data);

/*
 * @log_dir: where console.log goes (created when needed), NULL for none. @name is only for
 * log messages. Must be called on the thread that runs @context's main loop (the default
 * context when NULL).
 */
MvmdConsole *mvmd_console_new(const char *name, const char *log_dir, GMainContext *context,
                              MvmdConsoleInputFunc input, gpointer user_data);
MvmdConsole *mvmd_console_ref(MvmdConsole *console);
void mvmd_console_unref(MvmdConsole *console);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdConsole, mvmd_console_unref)

/* Guest output. Any thread; never blocks beyond a short mutex; batches into the main loop. */
void mvmd_console_feed(MvmdConsole *console, const guint8 *data, gsize len);

/* Main loop: a new client; returns the fd to hand out (the caller owns it), or -1. */
int mvmd_console_attach(MvmdConsole *console, GError **error);

/* Main loop: pending output is delivered now (used before a VM's state is published). */
void mvmd_console_flush(MvmdConsole *console);

guint mvmd_console_get_n_clients(MvmdConsole *console);

/* Main loop: disconnects every client, closes the log, ignores further output. When
 * @remove_logs, deletes console.log, console.log.1 and the directory (if empty). */
void mvmd_console_close(MvmdConsole *console, gboolean remove_logs);

G_END_DECLS
