/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include <gio/gio.h>

#include "definition.h"

G_BEGIN_DECLS

/*
 * The one place where a method call is authorized. Every mutating handler goes
 * "handle → mvmd_authorize_async → act → complete":
 * - on a message bus: uid 0 and the daemon's own uid are always allowed; anyone else is asked
 *   about through polkit
 *   (org.freedesktop.PolicyKit1.Authority.CheckAuthorization, subject system-bus-name = the
 *   sender, @details plus "verb" = the method, e.g. "start"; interactive only when the message
 *   carries ALLOW_INTERACTIVE_AUTHORIZATION). Without a polkit authority only uid 0 may act.
 * - on a peer-to-peer socket (socket activation): the peer's credentials decide, see
 *   mvmd_auth_check_peer(), and for a VM its owner (mvmd_authorize_vm_async()).
 * @action_id is a polkit action (MVMD_ACTION_* in names.h).
 *
 * @callback runs on the caller's thread-default main context, never from within this call.
 * A call on a VM whose answer needs nobody may skip all this: mvmd_authorize_vm_known().
 */
void mvmd_authorize_async(GDBusMethodInvocation *invocation, const char *action_id,
                          GHashTable *details, GAsyncReadyCallback callback, gpointer user_data);

/*
 * mvmd_authorize_async() for a call on a VM owned by @owner: the caller's own VM needs
 * @own_action (NULL: the owner is never asked, as for reading), another user's VM needs
 * @others_action. The details get MVMD_DETAIL_OWNER too. On the peer-to-peer socket, where
 * there is no polkit, a member of the socket group may act on their own VMs only.
 */
void mvmd_authorize_vm_async(GDBusMethodInvocation *invocation, uid_t owner, const char *own_action,
                             const char *others_action, GHashTable *details,
                             GAsyncReadyCallback callback, gpointer user_data);

/*
 * TRUE when mvmd_authorize_vm_async() would allow the call without asking anyone (the caller's
 * uid is known already and it is trusted, or it is the owner and @own_action is NULL; on our
 * socket, root or an owner the socket lets in): the caller may act at once, within this call.
 * Until the bus has said who a sender is, its checks wait for that answer in the order they
 * came, and this says FALSE, so a later call cannot overtake them. FALSE says nothing: ask.
 */
gboolean mvmd_authorize_vm_known(GDBusMethodInvocation *invocation, uid_t owner,
                                 const char *own_action, const char *others_action);

/* Either check's result. Returns FALSE with MVMD_ERROR_NOT_AUTHORIZED (or another error) when the
 * call is denied. */
gboolean mvmd_authorize_finish(GAsyncResult *result, GError **error);

/*
 * The uid of the process that sent @invocation, as learned by mvmd_authorize_async() (from the
 * bus daemon, or the socket's peer credentials). FALSE when it is not known (yet).
 */
gboolean mvmd_auth_get_caller_uid(GDBusMethodInvocation *invocation, uid_t *uid);

/* Root or the daemon's own user: never asked, and may name paths. */
gboolean mvmd_auth_caller_is_trusted(GDBusMethodInvocation *invocation);

/*
 * Whom files a caller passes for the daemon to write must belong to, in *@owner: the caller's
 * uid, or (uid_t)-1 (anyone) for a trusted caller. FALSE with MVMD_ERROR_NOT_AUTHORIZED when
 * the caller's uid is not known.
 */
gboolean mvmd_auth_file_owner(GDBusMethodInvocation *invocation, uid_t *owner, GError **error);

/*
 * Path arguments: the daemon runs as root, so it opens a path named by a caller only when the
 * caller is root or the daemon's own user; everyone else must pass an fd instead. FALSE with
 * MVMD_ERROR_NOT_AUTHORIZED naming @key otherwise. Call it after authorization, for each
 * argument that names a file or directory (kernel, initrd, disks, snapshot directories).
 */
gboolean mvmd_auth_check_path_argument(GDBusMethodInvocation *invocation, const char *key,
                                       GError **error);
/* mvmd_auth_check_path_argument() for every path in @config. */
gboolean mvmd_auth_check_config_paths(GDBusMethodInvocation *invocation,
                                      const MvmdVmDefinition *config, GError **error);

/*
 * What @config's owner could have given it (a definition read back from a handoff, which
 * another microvmd wrote): paths, tap names and socket paths, a snapshot directory, and a
 * snapshot's memory file mapped uncopied, are root's alone. MVMD_ERROR_NOT_AUTHORIZED.
 */
gboolean mvmd_auth_check_owner_may_have(const MvmdVmDefinition *config, GError **error);

/*
 * Who may use the peer-to-peer socket: root (and the daemon's own user), and members of @group (a
 * name or a number; NULL: root only). Set once at start-up (--socket-group).
 */
gboolean mvmd_auth_set_socket_group(const char *group, GError **error);
/*
 * Is the peer on @socket (a connected AF_UNIX socket) root or a member of the socket group?
 * Uses SO_PEERCRED and SO_PEERGROUPS, i.e. what the kernel recorded at connect(2).
 */
gboolean mvmd_auth_check_peer(GSocket *socket, GError **error);

G_END_DECLS
