/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "auth.h"

#include <errno.h>
#include <grp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "errors.h"
#include "names.h"

#define POLKIT_NAME      "org.freedesktop.PolicyKit1"
#define POLKIT_PATH      "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
/* CheckAuthorizationFlags: AllowUserInteraction. */
#define POLKIT_ALLOW_USER_INTERACTION 1u
/* Bound on SO_PEERGROUPS (NGROUPS_MAX is 65536; real users have a handful). */
#define PEER_GROUPS_MAX 1024

static gid_t socket_group = (gid_t)-1;

/*
 * Root, and the daemon's own user: a caller that could run microvmd itself gains nothing
 * through it (a session daemon, tests), so neither polkit nor the fd rule applies to them.
 */
static gboolean uid_is_trusted(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

static GQuark caller_uid_quark(void)
{
    return g_quark_from_static_string("mvmd-caller-uid");
}

/* The invocation outlives the check, and path arguments are checked against it later. */
static void remember_uid(GDBusMethodInvocation *invocation, uid_t uid)
{
    g_object_set_qdata(G_OBJECT(invocation), caller_uid_quark(), GUINT_TO_POINTER(uid + 1));
}

gboolean mvmd_auth_get_caller_uid(GDBusMethodInvocation *invocation, uid_t *uid)
{
    gpointer data = g_object_get_qdata(G_OBJECT(invocation), caller_uid_quark());

    if (!data)
        return FALSE;
    *uid = GPOINTER_TO_UINT(data) - 1;
    return TRUE;
}

gboolean mvmd_auth_caller_is_trusted(GDBusMethodInvocation *invocation)
{
    uid_t uid;

    return mvmd_auth_get_caller_uid(invocation, &uid) && uid_is_trusted(uid);
}

gboolean mvmd_auth_file_owner(GDBusMethodInvocation *invocation, uid_t *owner, GError **error)
{
    uid_t uid;

    /* Unknown is not "anyone": whose files may be written could not be said. */
    if (!mvmd_auth_get_caller_uid(invocation, &uid)) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                            "microvmd could not tell which user is calling, so not whose files "
                            "it may write; call again");
        return FALSE;
    }
    *owner = uid_is_trusted(uid) ? (uid_t)-1 : uid;
    return TRUE;
}

static gboolean path_allowed(gboolean trusted, const char *key, GError **error)
{
    if (trusted)
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                "'%s': only root may have microvmd open a path or a host interface by name; "
                "pass an open file descriptor instead",
                key);
    return FALSE;
}

gboolean mvmd_auth_check_path_argument(GDBusMethodInvocation *invocation, const char *key,
                                       GError **error)
{
    return path_allowed(mvmd_auth_caller_is_trusted(invocation), key, error);
}

static gboolean config_paths_allowed(gboolean trusted, const MvmdVmDefinition *config,
                                     GError **error)
{
    if (config->kernel && !path_allowed(trusted, "kernel", error))
        return FALSE;
    if (config->initrd && !path_allowed(trusted, "initrd", error))
        return FALSE;
    for (guint i = 0; i < config->devices.disks->len; i++) {
        const MvmdDisk *disk = config->devices.disks->pdata[i];
        g_autofree char *key = g_strdup_printf("disks[%u].path", i);

        if (disk->path && !path_allowed(trusted, key, error))
            return FALSE;
    }
    /* A tap named by a caller is a host interface the daemon would attach to: same rule. */
    for (guint i = 0; i < config->devices.nics->len; i++) {
        const MvmdNic *nic = config->devices.nics->pdata[i];
        g_autofree char *key = g_strdup_printf("network[%u].tap", i);

        if (nic->tap && !path_allowed(trusted, key, error))
            return FALSE;
    }
    if (config->devices.vsock_uds_path && !path_allowed(trusted, "vsock.uds-path", error))
        return FALSE;
    return TRUE;
}

gboolean mvmd_auth_check_config_paths(GDBusMethodInvocation *invocation,
                                      const MvmdVmDefinition *config, GError **error)
{
    return config_paths_allowed(mvmd_auth_caller_is_trusted(invocation), config, error);
}

gboolean mvmd_auth_check_owner_may_have(const MvmdVmDefinition *config, GError **error)
{
    gboolean trusted = uid_is_trusted((uid_t)config->owner);

    if (!config_paths_allowed(trusted, config, error))
        return FALSE;
    if (trusted)
        return TRUE;
    /* RestoreVM's rules (manager.c): a directory is root's; a caller's RAM file is copied. */
    if (config->snapshot_dir || config->snapshot_fd >= 0)
        return path_allowed(FALSE, "snapshot_dir", error);
    if (config->snapshot_state_fd >= 0 && !config->lazy && !config->copy_memory) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                            "'copy-memory': a snapshot's memory file of a user other than root "
                            "is copied, never mapped");
        return FALSE;
    }
    return TRUE;
}

/* ---- the peer-to-peer socket ----------------------------------------------------------- */

gboolean mvmd_auth_set_socket_group(const char *group, GError **error)
{
    struct group *gr;
    guint64 number;

    if (!group) {
        socket_group = (gid_t)-1;
        return TRUE;
    }
    if (g_ascii_string_to_unsigned(group, 10, 0, G_MAXUINT32 - 1, &number, NULL)) {
        socket_group = (gid_t)number;
        return TRUE;
    }
    errno = 0;
    gr = getgrnam(group);
    if (!gr) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "no such group '%s'%s%s", group,
                    errno ? ": " : "", errno ? g_strerror(errno) : "");
        return FALSE;
    }
    socket_group = gr->gr_gid;
    return TRUE;
}

static gboolean peer_in_group(int fd, gid_t primary, gid_t group)
{
    g_autofree gid_t *groups = g_new(gid_t, PEER_GROUPS_MAX);
    socklen_t len = PEER_GROUPS_MAX * sizeof(gid_t);

    if (primary == group)
        return TRUE;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
        g_debug("SO_PEERGROUPS: %s", g_strerror(errno));
        return FALSE;
    }
    for (socklen_t i = 0; i < len / sizeof(gid_t); i++) {
        if (groups[i] == group)
            return TRUE;
    }
    return FALSE;
}

gboolean mvmd_auth_check_peer(GSocket *socket, GError **error)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd = g_socket_get_fd(socket);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                    "cannot read the peer's credentials: %s", g_strerror(errno));
        return FALSE;
    }
    if (uid_is_trusted(cred.uid))
        return TRUE;
    if (socket_group != (gid_t)-1 && peer_in_group(fd, cred.gid, socket_group))
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                "uid %u may not use this socket: only root%s", (guint)cred.uid,
                socket_group != (gid_t)-1 ? " and members of the socket group" : "");
    return FALSE;
}

/* ---- one check ------------------------------------------------------------------------- */

typedef struct {
    GDBusMethodInvocation *invocation;
    char *action_id; /* what polkit is asked; for a VM, chosen once the caller is known */
    /* A call on a VM: its owner, and the actions for the owner (NULL: no need to ask) and for
     * everyone else. */
    gboolean on_vm;
    uid_t owner;
    char *own_action;
    char *others_action;
    gboolean is_owner; /* the caller is the VM's owner (known once the uid is) */
    char *verb;        /* the D-Bus method: "CreateVM", "Start", … */
    GHashTable *details;
    char *cancellation_id; /* interactive checks: polkit may wait for a password… */
    guint caller_watch;    /* …so they are cancelled when the caller goes away */
} Check;

static void check_free(Check *check)
{
    g_object_unref(check->invocation);
    g_free(check->action_id);
    g_free(check->own_action);
    g_free(check->others_action);
    g_free(check->verb);
    g_hash_table_unref(check->details);
    if (check->caller_watch)
        g_bus_unwatch_name(check->caller_watch);
    g_free(check->cancellation_id);
    g_free(check);
}

/* "org.microvmd.vm.manage-others; the VM belongs to uid 1000": what was asked, and why that. */
static char *describe_action(const Check *check)
{
    if (!check->on_vm)
        return g_strdup(check->action_id);
    if (!check->action_id) /* refused before the caller was known */
        return g_strdup_printf("%s or %s", check->own_action ? check->own_action : "none",
                               check->others_action);
    if (check->is_owner)
        return g_strdup(check->action_id);
    return g_strdup_printf("%s; the VM belongs to uid %u", check->action_id, (guint)check->owner);
}

static void deny(GTask *task, const char *why)
{
    Check *check = g_task_get_task_data(task);
    const char *vm = g_hash_table_lookup(check->details, MVMD_DETAIL_VM);
    g_autofree char *action = describe_action(check);

    g_task_return_new_error(task, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                            "not authorized to call %s%s%s%s (polkit action %s): %s", check->verb,
                            vm ? " VM '" : "", vm ? vm : "", vm ? "'" : "", action, why);
}

/*
 * A call on a VM: the owner's own action or the -others one. FALSE when the caller needs no
 * action at all (the owner reading their own VM).
 */
static gboolean choose_action(Check *check, uid_t uid)
{
    if (!check->on_vm)
        return TRUE;
    check->is_owner = uid == check->owner;
    g_free(check->action_id);
    check->action_id = g_strdup(check->is_owner ? check->own_action : check->others_action);
    return check->action_id != NULL;
}

static gboolean is_interactive(GDBusMethodInvocation *invocation)
{
    GDBusMessage *message = g_dbus_method_invocation_get_message(invocation);

    return (g_dbus_message_get_flags(message) &
            G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION) != 0;
}

static gboolean polkit_is_absent(const GError *error)
{
    return g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
           g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER) ||
           g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SPAWN_SERVICE_NOT_FOUND);
}

static void on_polkit_reply(GObject *source, GAsyncResult *result, gpointer user_data)
{
    g_autoptr(GTask) task = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    gboolean authorized = FALSE, challenge = FALSE;

    if (!reply) {
        g_autofree char *why = NULL;

        g_dbus_error_strip_remote_error(error);
        why = polkit_is_absent(error)
                  ? g_strdup("no polkit authority is running, so only root may do this")
                  : g_strdup_printf("cannot ask polkit: %s", error->message);
        deny(task, why);
        return;
    }
    g_variant_get(reply, "((bb@a{ss}))", &authorized, &challenge, NULL);
    if (authorized)
        g_task_return_boolean(task, TRUE);
    else if (challenge)
        deny(task, "authentication is required; call with interactive authorization allowed "
                   "(e.g. busctl --allow-interactive-authorization=yes)");
    else
        deny(task, "polkit said no");
}

static GVariant *polkit_details(Check *check)
{
    GVariantBuilder b;
    GHashTableIter iter;
    gpointer key, value;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a{ss}"));
    g_hash_table_iter_init(&iter, check->details);
    while (g_hash_table_iter_next(&iter, &key, &value))
        g_variant_builder_add(&b, "{ss}", (const char *)key, (const char *)value);
    return g_variant_builder_end(&b);
}

static void on_caller_vanished(GDBusConnection *connection, const char *name, gpointer user_data)
{
    Check *check = user_data;

    g_debug("%s left during an interactive authorization: cancelling it", name);
    g_dbus_connection_call(connection, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                           "CancelCheckAuthorization", g_variant_new("(s)", check->cancellation_id),
                           NULL, G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, NULL, NULL, NULL);
}

/* An authentication dialog may stay up for minutes: let polkit drop it if the caller leaves. */
static void watch_caller(Check *check)
{
    static guint counter;
    GDBusMethodInvocation *invocation = check->invocation;

    check->cancellation_id = g_strdup_printf("microvmd-%d-%u", (int)getpid(), ++counter);
    check->caller_watch = g_bus_watch_name_on_connection(
        g_dbus_method_invocation_get_connection(invocation),
        g_dbus_method_invocation_get_sender(invocation), G_BUS_NAME_WATCHER_FLAGS_NONE, NULL,
        on_caller_vanished, check, NULL);
}

static void ask_polkit(GTask *task)
{
    Check *check = g_task_get_task_data(task);
    GDBusMethodInvocation *invocation = check->invocation;
    gboolean interactive = is_interactive(invocation);
    GVariantBuilder subject;

    if (interactive)
        watch_caller(check);

    g_variant_builder_init(&subject, G_VARIANT_TYPE("a{sv}"));
    g_variant_builder_add(&subject, "{sv}", "name",
                          g_variant_new_string(g_dbus_method_invocation_get_sender(invocation)));
    g_dbus_connection_call(g_dbus_method_invocation_get_connection(invocation), POLKIT_NAME,
                           POLKIT_PATH, POLKIT_INTERFACE, "CheckAuthorization",
                           g_variant_new("((sa{sv})s@a{ss}us)", "system-bus-name", &subject,
                                         check->action_id, polkit_details(check),
                                         interactive ? POLKIT_ALLOW_USER_INTERACTION : 0u,
                                         check->cancellation_id ? check->cancellation_id : ""),
                           G_VARIANT_TYPE("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE,
                           /* A person may be typing a password: no timeout then. */
                           interactive ? G_MAXINT : -1, g_task_get_cancellable(task),
                           on_polkit_reply, g_object_ref(task));
}

/*
 * Known uids of bus clients, by unique name. A unique name is never reused by the bus, so an
 * entry cannot go stale; it is dropped when its name leaves the bus (NameOwnerChanged), which
 * bounds the table. Saves a GetConnectionUnixUser round trip on every call but the first.
 */
typedef struct {
    GDBusConnection *connection; /* weak: the bus connection the entries belong to */
    guint subscription;
    GHashTable *uids; /* unique name → uid + 1 */
} UidCache;

static UidCache uid_cache;

static void on_name_owner_changed(GDBusConnection *connection, const char *sender_name,
                                  const char *object_path, const char *interface_name,
                                  const char *signal_name, GVariant *parameters, gpointer user_data)
{
    const char *name, *old_owner, *new_owner;

    g_variant_get(parameters, "(&s&s&s)", &name, &old_owner, &new_owner);
    if (name[0] == ':' && new_owner[0] == '\0')
        g_hash_table_remove(uid_cache.uids, name);
}

static GHashTable *uid_cache_for(GDBusConnection *connection)
{
    if (uid_cache.connection == connection)
        return uid_cache.uids;
    if (uid_cache.connection) /* the daemon uses one bus; a new one starts afresh */
        g_dbus_connection_signal_unsubscribe(uid_cache.connection, uid_cache.subscription);
    g_clear_pointer(&uid_cache.uids, g_hash_table_unref);
    g_clear_weak_pointer(&uid_cache.connection);
    g_set_weak_pointer(&uid_cache.connection, connection);
    uid_cache.uids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    uid_cache.subscription = g_dbus_connection_signal_subscribe(
        connection, "org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged",
        "/org/freedesktop/DBus", NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_name_owner_changed, NULL, NULL);
    return uid_cache.uids;
}

/* Decides once the caller's uid is known. */
static void authorize_uid(GTask *task, uid_t uid)
{
    Check *check = g_task_get_task_data(task);

    remember_uid(check->invocation, uid);
    if (uid_is_trusted(uid) || !choose_action(check, uid)) {
        g_task_return_boolean(task, TRUE);
        return;
    }
    ask_polkit(task);
}

/*
 * Senders whose uid the bus is being asked for: unique name → the checks waiting for it, in the
 * order their calls came. One question per sender; each check of it that comes meanwhile waits
 * for the same answer, and all are decided in order when it comes. So a client that sends
 * without waiting has its first calls acted on in order, and a later call, decided at once from
 * the cache (mvmd_authorize_vm_known()), cannot overtake them: until the answer, the sender is
 * not in the cache.
 */
static GHashTable *uid_lookups;

static void on_caller_uid(GObject *source, GAsyncResult *result, gpointer user_data)
{
    g_autofree char *sender = user_data;
    g_autoptr(GPtrArray) waiting = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    g_autofree char *why = NULL;
    gpointer key = NULL;
    guint32 uid = 0;

    g_hash_table_steal_extended(uid_lookups, sender, &key, (gpointer *)&waiting);
    g_free(key);
    if (reply) {
        g_variant_get(reply, "(u)", &uid);
        g_hash_table_insert(uid_cache_for(G_DBUS_CONNECTION(source)), g_strdup(sender),
                            GUINT_TO_POINTER(uid + 1));
    } else {
        g_dbus_error_strip_remote_error(error);
        why = g_strdup_printf("cannot identify the caller: %s", error->message);
    }
    for (guint i = 0; waiting && i < waiting->len; i++) {
        if (reply)
            authorize_uid(waiting->pdata[i], uid);
        else
            deny(waiting->pdata[i], why);
    }
}

static void look_up_uid(GDBusConnection *connection, const char *sender, GTask *task)
{
    GPtrArray *waiting;

    if (!uid_lookups)
        uid_lookups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)g_ptr_array_unref);
    waiting = g_hash_table_lookup(uid_lookups, sender);
    if (waiting) {
        g_ptr_array_add(waiting, g_object_ref(task));
        return;
    }
    waiting = g_ptr_array_new_with_free_func(g_object_unref);
    g_ptr_array_add(waiting, g_object_ref(task));
    g_hash_table_insert(uid_lookups, g_strdup(sender), waiting);
    g_dbus_connection_call(connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "GetConnectionUnixUser",
                           g_variant_new("(s)", sender), G_VARIANT_TYPE("(u)"),
                           G_DBUS_CALL_FLAGS_NONE, -1, NULL, on_caller_uid, g_strdup(sender));
}

/* No polkit on the socket: the socket group acts on its members' own VMs, root on everyone's. */
static gboolean peer_may_act(Check *check, uid_t uid)
{
    if (!check->on_vm || uid_is_trusted(uid))
        return TRUE;
    if (uid == (uid_t)-1)
        return FALSE;
    choose_action(check, uid);
    return check->is_owner;
}

/*
 * The uid of the peer on our socket ((uid_t)-1: unknown), remembered for the call, once the
 * socket's rules let it call at all: checked again per call (cheap), since a group membership
 * known at connect time is what counts.
 */
static gboolean peer_uid(GDBusMethodInvocation *invocation, uid_t *uid, GError **error)
{
    GDBusConnection *connection = g_dbus_method_invocation_get_connection(invocation);
    GIOStream *stream = g_dbus_connection_get_stream(connection);
    GCredentials *credentials = g_dbus_connection_get_peer_credentials(connection);

    if (!G_IS_SOCKET_CONNECTION(stream) || !credentials) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_NOT_AUTHORIZED,
                            "the peer's credentials are unknown");
        return FALSE;
    }
    *uid = g_credentials_get_unix_user(credentials, NULL);
    if (*uid != (uid_t)-1)
        remember_uid(invocation, *uid);
    return mvmd_auth_check_peer(g_socket_connection_get_socket(G_SOCKET_CONNECTION(stream)), error);
}

static void authorize_peer(GTask *task)
{
    Check *check = g_task_get_task_data(task);
    g_autoptr(GError) error = NULL;
    uid_t uid;

    if (!peer_uid(check->invocation, &uid, &error)) {
        deny(task, error->message);
        return;
    }
    if (!peer_may_act(check, uid)) {
        deny(task, "on this socket only root may act on another user's VM");
        return;
    }
    g_task_return_boolean(task, TRUE);
}

static Check *check_new(GDBusMethodInvocation *invocation, GHashTable *details)
{
    Check *check = g_new0(Check, 1);
    GHashTableIter iter;
    gpointer key, value;

    check->invocation = g_object_ref(invocation);
    check->details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (details) {
        g_hash_table_iter_init(&iter, details);
        while (g_hash_table_iter_next(&iter, &key, &value))
            g_hash_table_insert(check->details, g_strdup(key), g_strdup(value));
    }
    /* polkit rules can match on the method (action.lookup("verb") == "Start"). */
    if (!g_hash_table_contains(check->details, MVMD_DETAIL_VERB))
        g_hash_table_insert(check->details, g_strdup(MVMD_DETAIL_VERB),
                            g_strdup(g_dbus_method_invocation_get_method_name(invocation)));
    check->verb = g_strdup(g_hash_table_lookup(check->details, MVMD_DETAIL_VERB));
    return check;
}

/* Takes @check: learns who the caller is, then decides. */
static void start_check(Check *check, GAsyncReadyCallback callback, gpointer user_data)
{
    g_autoptr(GTask) task = g_task_new(NULL, NULL, callback, user_data);
    GDBusMethodInvocation *invocation = check->invocation;
    GDBusConnection *connection = g_dbus_method_invocation_get_connection(invocation);

    g_task_set_source_tag(task, mvmd_authorize_async);
    g_task_set_task_data(task, check, (GDestroyNotify)check_free);

    /* No unique name: not a message bus but a peer on our socket. */
    if (!g_dbus_connection_get_unique_name(connection)) {
        authorize_peer(task);
        return;
    }
    const char *sender = g_dbus_method_invocation_get_sender(invocation);
    gpointer known = g_hash_table_lookup(uid_cache_for(connection), sender);
    if (known) {
        authorize_uid(task, GPOINTER_TO_UINT(known) - 1);
        return;
    }
    look_up_uid(connection, sender, task);
}

void mvmd_authorize_async(GDBusMethodInvocation *invocation, const char *action_id,
                          GHashTable *details, GAsyncReadyCallback callback, gpointer user_data)
{
    Check *check = check_new(invocation, details);

    check->action_id = g_strdup(action_id);
    start_check(check, callback, user_data);
}

void mvmd_authorize_vm_async(GDBusMethodInvocation *invocation, uid_t owner, const char *own_action,
                             const char *others_action, GHashTable *details,
                             GAsyncReadyCallback callback, gpointer user_data)
{
    Check *check = check_new(invocation, details);

    check->on_vm = TRUE;
    check->owner = owner;
    check->own_action = g_strdup(own_action);
    check->others_action = g_strdup(others_action);
    g_hash_table_insert(check->details, g_strdup(MVMD_DETAIL_OWNER),
                        g_strdup_printf("%u", (guint)owner));
    start_check(check, callback, user_data);
}

/*
 * On a message bus, once the caller's uid is cached: root and the daemon's own user, and an
 * owner where no action is needed, are allowed without asking anyone; on our socket, root and
 * an owner the socket lets in. Then there is no need to wait for the next main-loop iteration
 * either (GTask answers a check it made in the same iteration from an idle callback: ~50 µs of
 * every Pause and Resume). Everything else takes the asynchronous path, which also says why
 * it refuses.
 */
gboolean mvmd_authorize_vm_known(GDBusMethodInvocation *invocation, uid_t owner,
                                 const char *own_action, const char *others_action)
{
    GDBusConnection *connection = g_dbus_method_invocation_get_connection(invocation);
    const char *sender;
    gpointer known;
    uid_t uid;

    /* A peer on our socket (no polkit there): root, or the owner in the socket's group. */
    if (!g_dbus_connection_get_unique_name(connection))
        return peer_uid(invocation, &uid, NULL) &&
               (uid_is_trusted(uid) || (uid != (uid_t)-1 && uid == owner));
    sender = g_dbus_method_invocation_get_sender(invocation);
    known = g_hash_table_lookup(uid_cache_for(connection), sender);
    if (!known) /* not yet, or its lookup is under way: the checks waiting for it go first */
        return FALSE;
    uid = GPOINTER_TO_UINT(known) - 1;
    if (!uid_is_trusted(uid) && (uid == owner ? own_action : others_action) != NULL)
        return FALSE;
    remember_uid(invocation, uid);
    return TRUE;
}

gboolean mvmd_authorize_finish(GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, NULL), FALSE);
    g_return_val_if_fail(g_task_get_source_tag(G_TASK(result)) == mvmd_authorize_async, FALSE);
    return g_task_propagate_boolean(G_TASK(result), error);
}
