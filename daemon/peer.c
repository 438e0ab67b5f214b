/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "peer.h"

#include <errno.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "auth.h"
#include "bounds.h"
#include "errors.h"
#include "fd-closer.h"
#include "guest-log.h"
#include "names.h"

#define SOCKET_FD_NAME "microvmd"
/* A failed accept (no descriptor for the connection, most likely) is retried after this. */
#define ACCEPT_REST_MS 100

/*
 * GDBusObjectManagerServer exports on one connection only, and unexporting a skeleton from
 * it unexports it from every connection. So each client gets its own small ObjectManager,
 * kept in step with the daemon's one, and the skeletons themselves are exported per
 * connection (a skeleton may be exported on several).
 */
static const char object_manager_xml[] =
    "<node>"
    " <interface name='org.freedesktop.DBus.ObjectManager'>"
    "  <method name='GetManagedObjects'>"
    "   <arg type='a{oa{sa{sv}}}' name='object_paths_interfaces_and_properties' direction='out'/>"
    "  </method>"
    "  <signal name='InterfacesAdded'>"
    "   <arg type='o' name='object_path'/>"
    "   <arg type='a{sa{sv}}' name='interfaces_and_properties'/>"
    "  </signal>"
    "  <signal name='InterfacesRemoved'>"
    "   <arg type='o' name='object_path'/>"
    "   <arg type='as' name='interfaces'/>"
    "  </signal>"
    " </interface>"
    "</node>";

typedef struct {
    MvmdPeerServer *server;
    GDBusConnection *connection;
    GHashTable *exported; /* object path → GDBusObject (ref) exported on this connection */
    guint om_registration;
    uid_t uid; /* SO_PEERCRED at accept: counted in server->per_uid until freed */
} Peer;

/* A connection still authenticating; holds a reference on the server. */
typedef struct {
    MvmdPeerServer *server;
    GSocketConnection *stream;
    uid_t uid;
    GSource *timeout;
    gboolean timed_out;
} Pending;

/* One local user's connections, authenticated or not. */
typedef struct {
    guint n;
    gboolean refusal_logged; /* said once until all its connections are gone (and limited) */
} UidCount;

struct _MvmdPeerServer {
    GSocketListener *listener;
    GCancellable *cancellable; /* the pending accept */
    guint rest_source;         /* after a failed accept */
    GDBusObjectManagerServer *object_manager;
    MvmdManagerService *manager;
    GDBusNodeInfo *om_info;
    GDBusAuthObserver *observer;
    char *guid;
    GHashTable *peers;   /* Peer * (owned) */
    GHashTable *per_uid; /* uid → UidCount * (owned); freed with the last reference */
    guint n_pending;     /* connections still authenticating; each holds a reference */
    /* What clients make us say at each connection, limited: anyone who may connect could
     * otherwise flood the log by connecting and failing over and over. Any thread. */
    MvmGuestLog client_log;
    gboolean closing; /* mvmd_peer_server_free() was called */
};

static void server_clear(MvmdPeerServer *server);

/* "unknown": systemd-socket-activate and sockets without FileDescriptorName=. */
static gboolean is_ours(const char *name)
{
    return g_str_equal(name, SOCKET_FD_NAME) || g_str_equal(name, "unknown");
}

gboolean mvmd_peer_sockets_passed(const MvmdListenFds *passed)
{
    int fd;
    const char *name;

    for (guint i = 0; mvmd_listen_fds_get(passed, i, &fd, &name); i++)
        if (fd >= 0 && is_ours(name))
            return TRUE;
    return FALSE;
}

/* ---- the object tree on one connection ------------------------------------------------- */

static GVariant *interfaces_and_properties(GDBusObject *object)
{
    g_autolist(GDBusInterface) interfaces = g_dbus_object_get_interfaces(object);
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sa{sv}}"));
    for (GList *l = interfaces; l; l = l->next) {
        GDBusInterfaceSkeleton *skeleton = l->data;
        /* A full reference (not floating): the builder takes one of its own. */
        g_autoptr(GVariant) properties = g_dbus_interface_skeleton_get_properties(skeleton);

        g_variant_builder_add(&b, "{s@a{sv}}", g_dbus_interface_skeleton_get_info(skeleton)->name,
                              properties);
    }
    return g_variant_builder_end(&b);
}

static void emit(Peer *peer, const char *signal, GVariant *parameters)
{
    g_autoptr(GError) error = NULL;

    if (!g_dbus_connection_emit_signal(peer->connection, NULL, MVMD_DBUS_PATH,
                                       "org.freedesktop.DBus.ObjectManager", signal, parameters,
                                       &error))
        g_debug("peer: %s: %s", signal, error->message);
}

static void export_object(Peer *peer, GDBusObject *object, gboolean announce)
{
    const char *path = g_dbus_object_get_object_path(object);
    g_autolist(GDBusInterface) interfaces = g_dbus_object_get_interfaces(object);

    for (GList *l = interfaces; l; l = l->next) {
        g_autoptr(GError) error = NULL;

        if (!g_dbus_interface_skeleton_export(l->data, peer->connection, path, &error))
            g_warning("peer: cannot export %s: %s", path, error->message);
    }
    g_hash_table_insert(peer->exported, g_strdup(path), g_object_ref(object));
    if (announce)
        emit(peer, "InterfacesAdded",
             g_variant_new("(o@a{sa{sv}})", path, interfaces_and_properties(object)));
}

static void unexport_object(Peer *peer, const char *path, GDBusObject *object, gboolean announce)
{
    g_autolist(GDBusInterface) interfaces = g_dbus_object_get_interfaces(object);
    GVariantBuilder names;

    g_variant_builder_init(&names, G_VARIANT_TYPE("as"));
    for (GList *l = interfaces; l; l = l->next) {
        GDBusInterfaceSkeleton *skeleton = l->data;

        /* The daemon's ObjectManager may have unexported it from every connection already. */
        if (g_dbus_interface_skeleton_has_connection(skeleton, peer->connection))
            g_dbus_interface_skeleton_unexport_from_connection(skeleton, peer->connection);
        g_variant_builder_add(&names, "s", g_dbus_interface_skeleton_get_info(skeleton)->name);
    }
    if (announce)
        emit(peer, "InterfacesRemoved", g_variant_new("(oas)", path, &names));
    else
        g_variant_builder_clear(&names);
}

/* Brings one connection in step with the daemon's ObjectManager. */
static void peer_sync(Peer *peer, gboolean announce)
{
    g_autolist(GDBusObject) objects =
        g_dbus_object_manager_get_objects(G_DBUS_OBJECT_MANAGER(peer->server->object_manager));
    g_autoptr(GHashTable) present = g_hash_table_new(g_str_hash, g_str_equal);
    GHashTableIter iter;
    gpointer path, object;

    for (GList *l = objects; l; l = l->next) {
        const char *p = g_dbus_object_get_object_path(l->data);
        GDBusObject *old = g_hash_table_lookup(peer->exported, p);

        g_hash_table_add(present, (gpointer)p);
        if (old == l->data)
            continue;
        if (old) /* another object took the path (e.g. a reloaded definition) */
            unexport_object(peer, p, old, announce);
        export_object(peer, l->data, announce);
    }
    g_hash_table_iter_init(&iter, peer->exported);
    while (g_hash_table_iter_next(&iter, &path, &object)) {
        if (g_hash_table_contains(present, path))
            continue;
        unexport_object(peer, path, object, announce);
        g_hash_table_iter_remove(&iter);
    }
}

static void om_method_call(GDBusConnection *connection, const char *sender, const char *path,
                           const char *interface, const char *method, GVariant *parameters,
                           GDBusMethodInvocation *invocation, gpointer user_data)
{
    Peer *peer = user_data;
    GVariantBuilder b;
    GHashTableIter iter;
    gpointer object_path, object;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a{oa{sa{sv}}}"));
    g_hash_table_iter_init(&iter, peer->exported);
    while (g_hash_table_iter_next(&iter, &object_path, &object))
        g_variant_builder_add(&b, "{o@a{sa{sv}}}", (const char *)object_path,
                              interfaces_and_properties(object));
    g_dbus_method_invocation_return_value(invocation, g_variant_new("(a{oa{sa{sv}}})", &b));
}

static const GDBusInterfaceVTable om_vtable = {.method_call = om_method_call};

/* ---- clients --------------------------------------------------------------------------- */

static UidCount *uid_count(MvmdPeerServer *server, uid_t uid)
{
    UidCount *count = g_hash_table_lookup(server->per_uid, GUINT_TO_POINTER(uid));

    if (!count) {
        count = g_new0(UidCount, 1);
        g_hash_table_insert(server->per_uid, GUINT_TO_POINTER(uid), count);
    }
    return count;
}

/* Takes one of @uid's places; FALSE (logged once while at the bound) when it has none left. */
static gboolean uid_acquire(MvmdPeerServer *server, uid_t uid)
{
    UidCount *count = uid_count(server, uid);

    if (count->n < MVMD_PEERS_PER_UID_MAX) {
        count->n++;
        return TRUE;
    }
    if (!count->refusal_logged)
        mvm_guest_log(&server->client_log, G_LOG_LEVEL_MESSAGE,
                      "peer: refusing connections of uid %u: it has %d already, the most one "
                      "user may have",
                      (guint)uid, MVMD_PEERS_PER_UID_MAX);
    count->refusal_logged = TRUE;
    return FALSE;
}

static void uid_release(MvmdPeerServer *server, uid_t uid)
{
    UidCount *count = uid_count(server, uid);

    if (count->n > 0)
        count->n--;
    if (count->n == 0)
        g_hash_table_remove(server->per_uid, GUINT_TO_POINTER(uid));
}

static void peer_free(Peer *peer)
{
    GHashTableIter iter;
    gpointer path, object;
    GDBusInterfaceSkeleton *manager = G_DBUS_INTERFACE_SKELETON(peer->server->manager);

    g_signal_handlers_disconnect_by_data(peer->connection, peer);
    g_hash_table_iter_init(&iter, peer->exported);
    while (g_hash_table_iter_next(&iter, &path, &object))
        unexport_object(peer, path, object, FALSE);
    g_hash_table_unref(peer->exported);
    if (g_dbus_interface_skeleton_has_connection(manager, peer->connection))
        g_dbus_interface_skeleton_unexport_from_connection(manager, peer->connection);
    if (peer->om_registration)
        g_dbus_connection_unregister_object(peer->connection, peer->om_registration);
    if (!g_dbus_connection_is_closed(peer->connection))
        g_dbus_connection_close(peer->connection, NULL, NULL, NULL);
    g_object_unref(peer->connection);
    uid_release(peer->server, peer->uid);
    g_free(peer);
}

static void on_peer_closed(GDBusConnection *connection, gboolean remote_peer_vanished,
                           GError *error, gpointer user_data)
{
    Peer *peer = user_data;

    g_debug("peer: a client disconnected");
    g_hash_table_remove(peer->server->peers, peer);
}

static gboolean peer_export(Peer *peer, GError **error)
{
    MvmdPeerServer *server = peer->server;

    peer->om_registration = g_dbus_connection_register_object(peer->connection, MVMD_DBUS_PATH,
                                                              server->om_info->interfaces[0],
                                                              &om_vtable, peer, NULL, error);
    if (!peer->om_registration)
        return FALSE;
    if (!g_dbus_interface_skeleton_export(G_DBUS_INTERFACE_SKELETON(server->manager),
                                          peer->connection, MVMD_DBUS_PATH, error))
        return FALSE;
    peer_sync(peer, FALSE);
    return TRUE;
}

static void pending_free(Pending *pending)
{
    if (pending->timeout) {
        g_source_destroy(pending->timeout);
        g_source_unref(pending->timeout);
    }
    g_object_unref(pending->stream);
    g_rc_box_release_full(pending->server, (GDestroyNotify)server_clear);
    g_free(pending);
}

/*
 * Authentication runs in a GDBus worker thread, blocked reading the client: a client that
 * says nothing would hold its fd and its uid's place for ever. Shutting the socket down (not
 * closing it, which would not wake the reader) ends the handshake with an error.
 */
static gboolean on_auth_timeout(gpointer user_data)
{
    Pending *pending = user_data;

    /* Debug only: a user could have a line logged every few seconds for ever. */
    g_debug("peer: a client of uid %u did not authenticate within %d s; disconnecting it",
            (guint)pending->uid, MVMD_PEER_AUTH_TIMEOUT_SEC);
    pending->timed_out = TRUE;
    g_socket_shutdown(g_socket_connection_get_socket(pending->stream), TRUE, TRUE, NULL);
    g_clear_pointer(&pending->timeout, g_source_unref);
    return G_SOURCE_REMOVE;
}

static void peer_add(MvmdPeerServer *server, GDBusConnection *connection, uid_t uid)
{
    g_autoptr(GError) error = NULL;
    Peer *peer = g_new0(Peer, 1);

    peer->server = server;
    peer->connection = connection;
    peer->uid = uid;
    peer->exported = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
    g_dbus_connection_set_exit_on_close(peer->connection, FALSE);
    mvmd_fd_closer_watch(peer->connection);
    g_hash_table_add(server->peers, peer);
    if (!peer_export(peer, &error)) {
        g_warning("peer: cannot export the objects: %s", error->message);
        g_hash_table_remove(server->peers, peer);
        return;
    }
    g_signal_connect(peer->connection, "closed", G_CALLBACK(on_peer_closed), peer);
    /* Messages were held back until the objects were in place. */
    g_dbus_connection_start_message_processing(peer->connection);
    g_debug("peer: a client of uid %u connected (%u now)", (guint)uid,
            g_hash_table_size(server->peers));
}

static void on_connection_ready(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Pending *pending = user_data;
    MvmdPeerServer *server = pending->server;
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusConnection) connection = g_dbus_connection_new_finish(result, &error);

    server->n_pending--;
    if (server->closing) {
        if (connection)
            g_dbus_connection_close(connection, NULL, NULL, NULL);
        uid_release(server, pending->uid);
    } else if (!connection) {
        if (!pending->timed_out)
            mvm_guest_log(&server->client_log, G_LOG_LEVEL_MESSAGE,
                          "peer: a client failed to authenticate: %s", error->message);
        uid_release(server, pending->uid);
    } else {
        /* Its place in server->per_uid goes to the peer. */
        peer_add(server, g_steal_pointer(&connection), pending->uid);
    }
    pending_free(pending);
}

/* The kernel's word on who connected (SO_PEERCRED, taken at connect()). */
static gboolean peer_uid(MvmdPeerServer *server, GSocketConnection *connection, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd = g_socket_get_fd(g_socket_connection_get_socket(connection));

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        mvm_guest_log(&server->client_log, G_LOG_LEVEL_MESSAGE,
                      "peer: refusing a client: cannot read its credentials: %s",
                      g_strerror(errno));
        return FALSE;
    }
    *uid = cred.uid;
    return TRUE;
}

static void pending_start(MvmdPeerServer *server, GSocketConnection *connection, uid_t uid)
{
    Pending *pending = g_new0(Pending, 1);

    pending->server = g_rc_box_acquire(server);
    pending->stream = g_object_ref(connection);
    pending->uid = uid;
    pending->timeout = g_timeout_source_new_seconds(MVMD_PEER_AUTH_TIMEOUT_SEC);
    g_source_set_callback(pending->timeout, on_auth_timeout, pending, NULL);
    g_source_set_static_name(pending->timeout, "[microvmd] peer authentication timeout");
    g_source_attach(pending->timeout, NULL);
    server->n_pending++;
    g_dbus_connection_new(G_IO_STREAM(connection), server->guid,
                          G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_SERVER |
                              G_DBUS_CONNECTION_FLAGS_DELAY_MESSAGE_PROCESSING,
                          server->observer, NULL, on_connection_ready, pending);
}

/* Each client holds an fd and some memory: no local user may exhaust them for the others. */
static void on_incoming(MvmdPeerServer *server, GSocketConnection *connection)
{
    uid_t uid;

    if (g_hash_table_size(server->peers) + server->n_pending >= MVMD_PEERS_MAX) {
        mvm_guest_log(&server->client_log, G_LOG_LEVEL_WARNING,
                      "peer: refusing a client: %d connections already", MVMD_PEERS_MAX);
        return; /* dropping our reference closes it */
    }
    if (!peer_uid(server, connection, &uid) || !uid_acquire(server, uid))
        return;
    pending_start(server, connection, uid);
}

static void accept_next(MvmdPeerServer *server);

static gboolean accept_after_rest(gpointer user_data)
{
    MvmdPeerServer *server = user_data;

    server->rest_source = 0;
    accept_next(server);
    return G_SOURCE_REMOVE;
}

/*
 * Not GSocketService: it retries a failed accept at once, and a connection that found no
 * descriptor stays queued, so out of descriptors the main loop would spin (with a warning each
 * turn). A failed accept rests a while; the client waits in the backlog meanwhile.
 */
static void on_accepted(GObject *source, GAsyncResult *result, gpointer user_data)
{
    MvmdPeerServer *server = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketConnection) connection =
        g_socket_listener_accept_finish(G_SOCKET_LISTENER(source), result, NULL, &error);

    if (server->closing || g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        g_rc_box_release_full(server, (GDestroyNotify)server_clear);
        return;
    }
    if (connection) {
        on_incoming(server, connection);
        accept_next(server);
    } else {
        /* Out of descriptors is expected to pass (and would say so ten times a second). */
        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES))
            g_debug("peer: accept: %s; trying again in %d ms", error->message, ACCEPT_REST_MS);
        else
            g_warning("peer: accept: %s; trying again in %d ms", error->message, ACCEPT_REST_MS);
        server->rest_source = g_timeout_add(ACCEPT_REST_MS, accept_after_rest, server);
    }
    g_rc_box_release_full(server, (GDestroyNotify)server_clear);
}

static void accept_next(MvmdPeerServer *server)
{
    g_socket_listener_accept_async(server->listener, server->cancellable, on_accepted,
                                   g_rc_box_acquire(server));
}

static gboolean on_allow_mechanism(GDBusAuthObserver *observer, const char *mechanism,
                                   gpointer user_data)
{
    /* The kernel vouches for EXTERNAL (SO_PEERCRED); nothing else identifies a local user. */
    return g_strcmp0(mechanism, "EXTERNAL") == 0;
}

/* In a GDBus worker thread. */
static gboolean on_authorize_peer(GDBusAuthObserver *observer, GIOStream *stream,
                                  GCredentials *credentials, gpointer user_data)
{
    MvmdPeerServer *server = user_data;
    g_autoptr(GError) error = NULL;

    if (!G_IS_SOCKET_CONNECTION(stream) || !credentials)
        return FALSE;
    if (!mvmd_auth_check_peer(g_socket_connection_get_socket(G_SOCKET_CONNECTION(stream)),
                              &error)) {
        mvm_guest_log(&server->client_log, G_LOG_LEVEL_MESSAGE, "peer: refused: %s",
                      error->message);
        return FALSE;
    }
    return TRUE;
}

static void on_vm_count(GObject *object, GParamSpec *pspec, gpointer user_data)
{
    MvmdPeerServer *server = user_data;
    GHashTableIter iter;
    gpointer peer;

    g_hash_table_iter_init(&iter, server->peers);
    while (g_hash_table_iter_next(&iter, &peer, NULL))
        peer_sync(peer, TRUE);
}

/* ---- the listening sockets ------------------------------------------------------------- */

/* Adds the passed sockets meant for us to @listener (taking them); returns how many. */
static guint add_sockets(GSocketListener *listener, MvmdListenFds *passed)
{
    guint added = 0;
    int fd;
    const char *name;

    for (guint i = 0; mvmd_listen_fds_get(passed, i, &fd, &name); i++) {
        g_autoptr(GSocket) socket = NULL;
        g_autoptr(GError) local = NULL;

        if (fd < 0 || !is_ours(name))
            continue;
        if (sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1) <= 0) {
            g_warning("ignoring passed fd %d (%s): not a listening AF_UNIX stream socket", fd,
                      name);
            continue; /* closed with the rest nobody takes */
        }
        fd = mvmd_listen_fds_steal(passed, i);
        socket = g_socket_new_from_fd(fd, &local);
        if (!socket || !g_socket_listener_add_socket(listener, socket, NULL, &local)) {
            g_warning("ignoring passed fd %d: %s", fd, local->message);
            if (!socket)
                close(fd);
            continue;
        }
        added++;
    }
    return added;
}

static void log_client_message(MvmVm *vm, GLogLevelFlags level, const char *message,
                               gpointer user_data)
{
    g_log(G_LOG_DOMAIN, level, "%s", message);
}

MvmdPeerServer *mvmd_peer_server_new(GDBusObjectManagerServer *object_manager,
                                     MvmdManagerService *manager, MvmdListenFds *passed,
                                     GError **error)
{
    g_autoptr(MvmdPeerServer) server = g_rc_box_new0(MvmdPeerServer);
    guint n;

    server->object_manager = g_object_ref(object_manager);
    server->manager = g_object_ref(manager);
    server->peers = g_hash_table_new_full(NULL, NULL, (GDestroyNotify)peer_free, NULL);
    server->per_uid = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    mvm_guest_log_init(&server->client_log, NULL, "socket clients");
    mvm_guest_log_set_func(&server->client_log, log_client_message, NULL);
    server->listener = g_socket_listener_new();
    server->cancellable = g_cancellable_new();
    server->guid = g_dbus_generate_guid();
    server->om_info = g_dbus_node_info_new_for_xml(object_manager_xml, error);
    if (!server->om_info)
        return NULL;
    server->observer = g_dbus_auth_observer_new();
    g_signal_connect(server->observer, "allow-mechanism", G_CALLBACK(on_allow_mechanism), NULL);
    g_signal_connect(server->observer, "authorize-authenticated-peer",
                     G_CALLBACK(on_authorize_peer), server);
    n = add_sockets(server->listener, passed);
    if (n == 0)
        return NULL;
    g_signal_connect(manager, "notify::vm-count", G_CALLBACK(on_vm_count), server);
    accept_next(server);
    g_message("serving peer-to-peer D-Bus on %u passed socket%s", n, n == 1 ? "" : "s");
    return g_steal_pointer(&server);
}

/* The last reference is gone (clients still authenticating at exit hold one). */
static void server_clear(MvmdPeerServer *server)
{
    mvm_guest_log_clear(&server->client_log);
    g_clear_pointer(&server->per_uid, g_hash_table_unref);
    g_clear_object(&server->cancellable);
    g_clear_object(&server->observer);
    g_clear_pointer(&server->om_info, g_dbus_node_info_unref);
    g_free(server->guid);
}

void mvmd_peer_server_free(MvmdPeerServer *server)
{
    if (!server)
        return;
    server->closing = TRUE;
    if (server->manager)
        g_signal_handlers_disconnect_by_data(server->manager, server);
    /* A pending accept ends (cancelled) later and drops the reference it holds. */
    g_cancellable_cancel(server->cancellable);
    /* That takes another turn of the main loop, which at exit never comes: server_clear()
     * would not run, and what the clients' limiter held back would never be said. */
    mvm_guest_log_flush(&server->client_log);
    g_clear_handle_id(&server->rest_source, g_source_remove);
    if (server->listener) {
        g_socket_listener_close(server->listener);
        g_clear_object(&server->listener);
    }
    g_clear_pointer(&server->peers, g_hash_table_unref);
    g_clear_object(&server->manager);
    g_clear_object(&server->object_manager);
    g_rc_box_release_full(server, (GDestroyNotify)server_clear);
}
