/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket activation: the listening sockets systemd passes (sd_listen_fds_with_names, the
 * microvmd.socket unit names them "microvmd") are served as peer-to-peer D-Bus. Each client
 * gets its own GDBusConnection (EXTERNAL authentication only; the peer must be root or in the
 * socket group, see mvmd_auth_check_peer) with the same objects as the bus: the Manager and an
 * org.freedesktop.DBus.ObjectManager at /org/microvmd/MicroVM1, and every VM below it.
 * A client that has not authenticated within MVMD_PEER_AUTH_TIMEOUT_SEC is disconnected, and
 * each uid (SO_PEERCRED at accept) holds at most MVMD_PEERS_PER_UID_MAX connections (bounds.h).
 */
#pragma once

#include <gio/gio.h>

#include "listen-fds.h"
#include "manager.h"

G_BEGIN_DECLS

typedef struct _MvmdPeerServer MvmdPeerServer;

/* Is a listening socket meant for us among @passed? Takes nothing. */
gboolean mvmd_peer_sockets_passed(const MvmdListenFds *passed);

/*
 * Takes the sockets meant for us out of @passed and starts serving them on the thread-default
 * main context. Returns NULL with @error unset when there are none.
 */
MvmdPeerServer *mvmd_peer_server_new(GDBusObjectManagerServer *object_manager,
                                     MvmdManagerService *manager, MvmdListenFds *passed,
                                     GError **error);
/* Closes every client connection and the sockets. */
void mvmd_peer_server_free(MvmdPeerServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdPeerServer, mvmd_peer_server_free)

G_END_DECLS
