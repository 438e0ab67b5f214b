/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/*
 * Closing a descriptor a caller passed can wait for anyone: close() of a FUSE file sends
 * FUSE_FLUSH and waits, uninterruptibly, for the caller's own server to answer, which it may
 * never do. So every descriptor that came from a caller is closed by one thread of its own,
 * never by the main loop or GDBus' worker. That thread may hang for ever on one close; the
 * descriptors queued behind it then stay open, nothing else waits.
 *
 * Not covered: descriptors the library dup()s to keep for a running VM (a disk image, a
 * tap) are closed by lib/ when the VM is freed; a message with descriptors that reaches the
 * bus connection before mvmd_fd_closer_watch() (at start, before anything is exported) is
 * closed by GDBus. Caller files for a VM are on local file systems only (caller-files.h),
 * which makes a close that waits on someone unlikely there.
 */

/* Starts the closer thread (once; mvmd_close_later() starts it too). FALSE if it cannot. */
gboolean mvmd_fd_closer_start(GError **error);

/* Closes @fd (a caller's, or a dup of one) on the closer thread; never waits. -1 is ignored. */
void mvmd_close_later(int fd);

/* Sets *@fd to -1 after mvmd_close_later(*@fd). */
void mvmd_clear_fd_later(int *fd);

/*
 * Takes the descriptors of every message that arrives on @connection, as it arrives (a
 * GDBusConnection filter, in GDBus' worker thread): GDBus would close the ones left in a
 * message's GUnixFDList when it frees the message, on whichever thread drops it last. They are
 * handed to the closer when the message is freed; mvmd_invocation_fds() has them until then.
 */
void mvmd_fd_closer_watch(GDBusConnection *connection);

/*
 * The descriptors sent with @invocation's message (taken by mvmd_fd_closer_watch()), or the
 * message's own list on a connection not watched (the unit tests' direct calls). NULL when
 * none. Owned by the message: dup what is kept (g_unix_fd_list_get()).
 */
GUnixFDList *mvmd_invocation_fds(GDBusMethodInvocation *invocation);

/*
 * A dup of the descriptor that the handle @value ('h') names in @fd_list, or -1: an index the
 * message does not hold is InvalidArgument; a dup that fails (the daemon is out of descriptors)
 * is NoResources, not the caller's fault. Callers prefix the error with the key it came in.
 */
int mvmd_fd_list_dup(GUnixFDList *fd_list, GVariant *value, GError **error);

G_END_DECLS
