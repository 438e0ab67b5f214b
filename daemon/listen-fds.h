/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The descriptors systemd passed at start ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID), taken
 * once and shared out by name: the activated socket to peer.c, the fd store's handed-over VMs
 * to handoff.c. Whatever nobody takes is closed, with a line in the log.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _MvmdListenFds MvmdListenFds;

/* Takes the passed descriptors (the environment variables are unset); never NULL. */
MvmdListenFds *mvmd_listen_fds_take(GError **error);
void mvmd_listen_fds_free(MvmdListenFds *fds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdListenFds, mvmd_listen_fds_free)

guint mvmd_listen_fds_count(const MvmdListenFds *fds);
/*
 * The @i-th descriptor still held and its name ("unknown" when systemd gave none); FALSE past
 * the end. mvmd_listen_fds_steal() hands one over: the caller owns it, and it is no longer
 * listed.
 */
gboolean mvmd_listen_fds_get(const MvmdListenFds *fds, guint i, int *fd, const char **name);
int mvmd_listen_fds_steal(MvmdListenFds *fds, guint i);

/* Closes what nobody took, saying so, and removes it from systemd's fd store. */
void mvmd_listen_fds_close_rest(MvmdListenFds *fds);

G_END_DECLS
