/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "machined.h"

#include <unistd.h>

#include "names.h"

#define MACHINED_NAME      "org.freedesktop.machine1"
#define MACHINED_PATH      "/org/freedesktop/machine1"
#define MACHINED_INTERFACE "org.freedesktop.machine1.Manager"

struct _MvmdMachined {
    GDBusConnection *connection;
    GCancellable *cancellable;
    GHashTable *wanted;     /* names of the VMs that are running or paused */
    GHashTable *registered; /* names machined accepted */
    GHashTable *pending;    /* names with a RegisterMachine call in flight */
    GHashTable *uuids;      /* name → UUID string */
    gboolean absent_logged;
};

typedef struct {
    MvmdMachined *machined;
    char *name;
} Call;

static void reconcile(MvmdMachined *machined, const char *name);

static void call_free(Call *call)
{
    g_free(call->name);
    g_free(call);
}

/* "0f1e…-…" → the 16 bytes machined wants as its "ay" id. */
static GVariant *uuid_bytes(const char *uuid)
{
    guint8 bytes[16] = {0};
    guint n = 0;

    if (uuid && g_uuid_string_is_valid(uuid)) {
        for (const char *p = uuid; *p && n < sizeof(bytes); p++) {
            if (*p == '-')
                continue;
            bytes[n++] = (guint8)(g_ascii_xdigit_value(p[0]) << 4 | g_ascii_xdigit_value(p[1]));
            p++;
        }
    }
    return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes, sizeof(bytes), 1);
}

static gboolean machined_is_absent(const GError *error)
{
    return g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
           g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER) ||
           g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SPAWN_SERVICE_NOT_FOUND);
}

static void on_registered(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Call *call = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    MvmdMachined *machined = call->machined;

    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        call_free(call); /* @machined is gone */
        return;
    }
    g_hash_table_remove(machined->pending, call->name);
    if (reply) {
        g_debug("%s: registered with systemd-machined", call->name);
        g_hash_table_add(machined->registered, g_strdup(call->name));
    } else if (machined_is_absent(error)) {
        if (!machined->absent_logged)
            g_debug("systemd-machined is not on the bus: VMs are not registered");
        machined->absent_logged = TRUE;
        g_hash_table_remove(machined->wanted, call->name); /* until its next start */
    } else {
        g_dbus_error_strip_remote_error(error);
        g_message("%s: systemd-machined refused to register it: %s", call->name, error->message);
        g_hash_table_remove(machined->wanted, call->name);
    }
    reconcile(machined, call->name);
    call_free(call);
}

static void register_machine(MvmdMachined *machined, const char *name)
{
    Call *call = g_new0(Call, 1);

    call->machined = machined;
    call->name = g_strdup(name);
    g_hash_table_add(machined->pending, g_strdup(name));
    g_dbus_connection_call(
        machined->connection, MACHINED_NAME, MACHINED_PATH, MACHINED_INTERFACE, "RegisterMachine",
        g_variant_new("(s@ayssus)", name, uuid_bytes(g_hash_table_lookup(machined->uuids, name)),
                      "microvmd", "vm", (guint32)getpid(), ""),
        G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, -1, machined->cancellable, on_registered,
        call);
}

static void unregister_machine(MvmdMachined *machined, const char *name)
{
    g_hash_table_remove(machined->registered, name);
    g_debug("%s: unregistering from systemd-machined", name);
    /* Nothing to do about a failure: machined forgets machines whose leader exits anyway. */
    g_dbus_connection_call(machined->connection, MACHINED_NAME, MACHINED_PATH, MACHINED_INTERFACE,
                           "UnregisterMachine", g_variant_new("(s)", name), NULL,
                           G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, NULL, NULL, NULL);
}

/* One call in flight per VM at most; the reply reconciles again. */
static void reconcile(MvmdMachined *machined, const char *name)
{
    gboolean wanted = g_hash_table_contains(machined->wanted, name);
    gboolean registered = g_hash_table_contains(machined->registered, name);

    if (g_hash_table_contains(machined->pending, name))
        return;
    if (wanted && !registered)
        register_machine(machined, name);
    else if (!wanted && registered)
        unregister_machine(machined, name);
}

void mvmd_machined_vm_state_changed(MvmdVmService *vm, const char *state, gpointer user_data)
{
    MvmdMachined *machined = user_data;
    const char *name = mvmd_vm_service_get_vm_name(vm);
    gboolean active =
        g_strcmp0(state, MVMD_STATE_RUNNING) == 0 || g_strcmp0(state, MVMD_STATE_PAUSED) == 0;

    if (active == g_hash_table_contains(machined->wanted, name))
        return;
    if (active) {
        g_hash_table_add(machined->wanted, g_strdup(name));
        g_hash_table_insert(machined->uuids, g_strdup(name),
                            g_strdup(mvmd_vm_get_uuid(MVMD_VM(vm))));
    } else {
        g_hash_table_remove(machined->wanted, name);
    }
    reconcile(machined, name);
}

MvmdMachined *mvmd_machined_new(GDBusConnection *connection)
{
    MvmdMachined *machined = g_new0(MvmdMachined, 1);

    machined->connection = g_object_ref(connection);
    machined->cancellable = g_cancellable_new();
    machined->wanted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    machined->registered = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    machined->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    machined->uuids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return machined;
}

void mvmd_machined_free(MvmdMachined *machined)
{
    GHashTableIter iter;
    gpointer name;

    if (!machined)
        return;
    g_cancellable_cancel(machined->cancellable);
    g_hash_table_iter_init(&iter, machined->registered);
    while (g_hash_table_iter_next(&iter, &name, NULL))
        g_dbus_connection_call(machined->connection, MACHINED_NAME, MACHINED_PATH,
                               MACHINED_INTERFACE, "UnregisterMachine",
                               g_variant_new("(s)", (const char *)name), NULL,
                               G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, NULL, NULL, NULL);
    g_object_unref(machined->cancellable);
    g_object_unref(machined->connection);
    g_hash_table_unref(machined->wanted);
    g_hash_table_unref(machined->registered);
    g_hash_table_unref(machined->pending);
    g_hash_table_unref(machined->uuids);
    g_free(machined);
}
