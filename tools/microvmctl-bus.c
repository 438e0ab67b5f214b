/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* microvmctl: the connection to microvmd, its proxies, calls with progress, and exit codes. */
#include <stdio.h>

#include "microvmctl.h"

/* A peer that accepts but never answers must not hang microvmctl. */
#define CONNECT_TIMEOUT_SEC 30

typedef struct {
    GMainLoop *loop;
    GAsyncResult *result;
    const char *progress;
    gint64 started;
    gboolean shown;
} CallWait;

static void on_call_done(GObject *source, GAsyncResult *result, gpointer data)
{
    CallWait *wait = data;

    wait->result = g_object_ref(result);
    g_main_loop_quit(wait->loop);
}

static gboolean on_connect_timeout(gpointer cancellable)
{
    g_cancellable_cancel(cancellable);
    return G_SOURCE_REMOVE;
}

/* On the default main context: the connection emits "closed" in the context it was made in. */
static GDBusConnection *connect_address(const char *address, GDBusConnectionFlags flags,
                                        GError **error)
{
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GSource) timeout = g_timeout_source_new_seconds(CONNECT_TIMEOUT_SEC);
    CallWait wait = {loop, NULL, NULL, 0, FALSE};
    GDBusConnection *connection;
    g_autoptr(GError) local = NULL;

    g_source_set_callback(timeout, on_connect_timeout, cancellable, NULL);
    g_source_attach(timeout, NULL);
    g_dbus_connection_new_for_address(address, flags, NULL, cancellable, on_call_done, &wait);
    g_main_loop_run(loop);
    g_source_destroy(timeout);
    connection = g_dbus_connection_new_for_address_finish(wait.result, &local);
    g_object_unref(wait.result);
    if (g_error_matches(local, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, _("No answer within %d seconds"),
                    CONNECT_TIMEOUT_SEC);
    else if (local)
        g_propagate_error(error, g_steal_pointer(&local));
    return connection;
}

GDBusConnection *mctl_connection(Mctl *ctl, GError **error)
{
    g_autoptr(GError) local = NULL;
    GDBusConnection *connection = NULL;

    if (ctl->connection)
        return ctl->connection;
    ctl->bus_name = MVMD_DBUS_NAME;
    if (ctl->socket_path) {
        /* Peer-to-peer: microvmd's socket-activated socket, no bus and so no bus name. */
        g_autofree char *escaped = g_dbus_address_escape_value(ctl->socket_path);
        g_autofree char *address = g_strconcat("unix:path=", escaped, NULL);

        ctl->bus_name = NULL;
        connection =
            connect_address(address, G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT, &local);
    } else if (ctl->address) {
        connection = connect_address(ctl->address,
                                     G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                         G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                     &local);
    } else {
        connection =
            g_bus_get_sync(ctl->session ? G_BUS_TYPE_SESSION : G_BUS_TYPE_SYSTEM, NULL, &local);
    }
    if (!connection) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_NO_DAEMON, _("Cannot connect to microvmd: %s"),
                    local->message);
        return NULL;
    }
    g_dbus_connection_set_exit_on_close(connection, FALSE);
    ctl->connection = connection;
    return connection;
}

MvmdManager *mctl_manager(Mctl *ctl, GError **error)
{
    GDBusConnection *connection = mctl_connection(ctl, error);

    if (!connection)
        return NULL;
    return mvmd_manager_proxy_new_sync(connection, G_DBUS_PROXY_FLAGS_NONE, ctl->bus_name,
                                       MVMD_DBUS_PATH, NULL, error);
}

MvmdVm *mctl_vm_by_path(Mctl *ctl, const char *path, GError **error)
{
    GDBusConnection *connection = mctl_connection(ctl, error);

    if (!connection)
        return NULL;
    return mvmd_vm_proxy_new_sync(connection, G_DBUS_PROXY_FLAGS_NONE, ctl->bus_name, path, NULL,
                                  error);
}

MvmdVm *mctl_vm_by_name(Mctl *ctl, const char *name, GError **error)
{
    g_autoptr(MvmdManager) manager = mctl_manager(ctl, error);
    g_autofree char *path = NULL;

    if (!manager || !mvmd_manager_call_get_vm_by_name_sync(manager, name, G_DBUS_CALL_FLAGS_NONE,
                                                           -1, &path, NULL, error))
        return NULL;
    return mctl_vm_by_path(ctl, path, error);
}

static GVariant *call_bus(Mctl *ctl, const char *method, GVariant *args, const char *reply_type,
                          GError **error)
{
    return g_dbus_connection_call_sync(
        ctl->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        method, args, G_VARIANT_TYPE(reply_type), G_DBUS_CALL_FLAGS_NONE, -1, NULL, error);
}

/* An ObjectManager client only watches the name: ask the bus to start microvmd (D-Bus
 * activation) when nobody owns it, as a method call on a proxy would. */
static gboolean start_service(Mctl *ctl, GError **error)
{
    g_autoptr(GVariant) owned = NULL;
    g_autoptr(GVariant) started = NULL;
    gboolean has_owner = FALSE;

    if (!ctl->bus_name)
        return TRUE;
    owned = call_bus(ctl, "NameHasOwner", g_variant_new("(s)", ctl->bus_name), "(b)", error);
    if (!owned)
        return FALSE;
    g_variant_get(owned, "(b)", &has_owner);
    if (has_owner)
        return TRUE;
    started =
        call_bus(ctl, "StartServiceByName", g_variant_new("(su)", ctl->bus_name, 0), "(u)", error);
    return started != NULL;
}

GDBusObjectManager *mctl_object_manager(Mctl *ctl, GError **error)
{
    GDBusConnection *connection = mctl_connection(ctl, error);
    g_autoptr(GDBusObjectManager) manager = NULL;

    if (!connection || !start_service(ctl, error))
        return NULL;
    manager =
        mvmd_object_manager_client_new_sync(connection, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE,
                                            ctl->bus_name, MVMD_DBUS_PATH, NULL, error);
    if (!manager)
        return NULL;
    /* The client does not fail when nobody owns the name: it just sees no objects. */
    if (ctl->bus_name) {
        g_autofree char *owner =
            g_dbus_object_manager_client_get_name_owner(G_DBUS_OBJECT_MANAGER_CLIENT(manager));

        if (!owner) {
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_NO_DAEMON,
                        _("microvmd is not running on this bus"));
            return NULL;
        }
    }
    return g_steal_pointer(&manager);
}

/* An argument of the method's signature with an empty value: options dictionaries, mostly. */
static GVariant *default_value(const GVariantType *type)
{
    if (g_variant_type_is_array(type))
        return g_variant_new_array(g_variant_type_element(type), NULL, 0);
    if (g_variant_type_equal(type, G_VARIANT_TYPE_UINT32))
        return g_variant_new_uint32(0);
    if (g_variant_type_equal(type, G_VARIANT_TYPE_STRING))
        return g_variant_new_string("");
    return NULL;
}

static GVariant *default_args(GDBusProxy *proxy, const char *method, GError **error)
{
    GDBusInterfaceInfo *info = g_dbus_proxy_get_interface_info(proxy);
    GDBusMethodInfo *m = info ? g_dbus_interface_info_lookup_method(info, method) : NULL;
    GVariantBuilder args;

    if (!m || !m->in_args)
        return NULL;
    g_variant_builder_init(&args, G_VARIANT_TYPE_TUPLE);
    for (GDBusArgInfo **a = m->in_args; *a; a++) {
        g_autoptr(GVariantType) type = g_variant_type_new((*a)->signature);
        GVariant *value = default_value(type);

        if (!value) {
            g_variant_builder_clear(&args);
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_FAILED, "%s: unexpected argument type %s",
                        method, (*a)->signature);
            return NULL;
        }
        g_variant_builder_add_value(&args, value);
    }
    return g_variant_builder_end(&args);
}

/* Redraws "progress… 3 s" in place; only on a terminal (ctl->show_progress). */
static gboolean on_progress_tick(gpointer data)
{
    CallWait *wait = data;
    int seconds = (g_get_monotonic_time() - wait->started) / G_USEC_PER_SEC;
    /* TRANSLATORS: seconds waited so far, after e.g. "Stopping web1…" */
    g_autofree char *elapsed =
        g_strdup_printf(ngettext("%d second", "%d seconds", seconds), seconds);

    fprintf(stderr, "\r\033[K%s… %s", wait->progress, elapsed);
    fflush(stderr);
    wait->shown = TRUE;
    return G_SOURCE_CONTINUE;
}

GVariant *mctl_call(Mctl *ctl, GDBusProxy *proxy, const char *method, GVariant *args,
                    GUnixFDList *fds, int timeout_ms, const char *progress, GError **error)
{
    g_autoptr(GMainContext) context = g_main_context_new();
    g_autoptr(GMainLoop) loop = g_main_loop_new(context, FALSE);
    CallWait wait = {loop, NULL, progress, g_get_monotonic_time(), FALSE};
    g_autoptr(GSource) tick = NULL;
    GVariant *reply;

    if (!args) {
        g_autoptr(GError) local = NULL;

        args = default_args(proxy, method, &local);
        if (local) {
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
    }
    g_main_context_push_thread_default(context);
    g_dbus_proxy_call_with_unix_fd_list(proxy, method, args, G_DBUS_CALL_FLAGS_NONE, timeout_ms,
                                        fds, NULL, on_call_done, &wait);
    if (ctl->show_progress && progress) {
        /* Quick calls finish before the first tick and print nothing. */
        tick = g_timeout_source_new(500);
        g_source_set_callback(tick, on_progress_tick, &wait, NULL);
        g_source_attach(tick, context);
    }
    g_main_loop_run(loop);
    if (tick)
        g_source_destroy(tick);
    if (wait.shown)
        fprintf(stderr, "\r\033[K");
    reply = g_dbus_proxy_call_with_unix_fd_list_finish(proxy, NULL, wait.result, error);
    g_object_unref(wait.result);
    g_main_context_pop_thread_default(context);
    return reply;
}

static const struct {
    const char *name;
    MctlExit code;
} remote_errors[] = {
    {MVMD_DBUS_ERROR_INVALID_ARGUMENT, MCTL_EXIT_INVALID_ARGUMENT},
    {MVMD_DBUS_ERROR_NO_SUCH_VM, MCTL_EXIT_NO_SUCH_VM},
    {MVMD_DBUS_ERROR_ALREADY_EXISTS, MCTL_EXIT_ALREADY_EXISTS},
    {MVMD_DBUS_ERROR_INVALID_STATE, MCTL_EXIT_INVALID_STATE},
    {MVMD_DBUS_ERROR_NOT_AUTHORIZED, MCTL_EXIT_NOT_AUTHORIZED},
    {MVMD_DBUS_ERROR_TIMEOUT, MCTL_EXIT_TIMEOUT},
    {MVMD_DBUS_ERROR_FAILED, MCTL_EXIT_FAILED},
    {MVMD_DBUS_ERROR_NO_RESOURCES, MCTL_EXIT_FAILED},
    {MVMD_DBUS_ERROR_LIMIT_REACHED, MCTL_EXIT_FAILED},
    {MVMD_DBUS_ERROR_QUOTA_EXCEEDED, MCTL_EXIT_FAILED},
    /* Like NoResources, a property of this host: the message lists the missing features. */
    {MVMD_DBUS_ERROR_INCOMPATIBLE_CPU, MCTL_EXIT_FAILED},
    {MVMD_DBUS_ERROR_NOT_SUPPORTED, MCTL_EXIT_FAILED},
    {"org.freedesktop.DBus.Error.ServiceUnknown", MCTL_EXIT_NO_DAEMON},
    {"org.freedesktop.DBus.Error.NameHasNoOwner", MCTL_EXIT_NO_DAEMON},
    {"org.freedesktop.DBus.Error.AccessDenied", MCTL_EXIT_NOT_AUTHORIZED},
    /* The bus's answer when the daemon went away in the middle of a call. */
    {"org.freedesktop.DBus.Error.NoReply", MCTL_EXIT_NO_DAEMON},
};

int mctl_exit_code(const GError *error)
{
    g_autofree char *remote = NULL;

    if (error->domain == MCTL_ERROR)
        return error->code;
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT))
        return MCTL_EXIT_TIMEOUT;
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED))
        return MCTL_EXIT_NO_DAEMON;
    remote = g_dbus_error_get_remote_error(error);
    for (gsize i = 0; remote && i < G_N_ELEMENTS(remote_errors); i++) {
        if (g_str_equal(remote, remote_errors[i].name))
            return remote_errors[i].code;
    }
    return MCTL_EXIT_FAILED;
}

int mctl_fail(const GError *error, const char *what)
{
    g_autoptr(GError) copy = g_error_copy(error);
    int code = mctl_exit_code(error);

    /* The user wants the daemon's words, not "GDBus.Error:org.microvmd...: ". */
    g_dbus_error_strip_remote_error(copy);
    if (code == MCTL_EXIT_NO_DAEMON && copy->domain != MCTL_ERROR)
        g_printerr("microvmctl: %s: %s\n", _("microvmd is not running"), copy->message);
    else if (what)
        g_printerr("microvmctl: %s: %s\n", what, copy->message);
    else
        g_printerr("microvmctl: %s\n", copy->message);
    return code;
}
