/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "machined.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <glib-unix.h>

#include "log.h"
#include "machine-leader.h"
#include "names.h"

#define MACHINED_NAME      "org.freedesktop.machine1"
#define MACHINED_PATH      "/org/freedesktop/machine1"
#define MACHINED_INTERFACE "org.freedesktop.machine1.Manager"

/*
 * A machine of the same name whose scope is still going away (a VM stopped and started again
 * at once) makes CreateMachine fail for a moment: try again, a few times.
 */
#define CREATE_ATTEMPTS    5
#define CREATE_RETRY_MS    1000
#define TERMINATE_RETRY_MS 500

struct _MvmdMachined {
    GDBusConnection *connection;
    GCancellable *cancellable;
    GHashTable *machines; /* VM name → Machine, for the VMs running or paused */
    guint name_watch;
    gboolean owned;       /* machined is on the bus */
    gboolean activatable; /* or the bus would start it */
    gboolean absent_logged;
    guint shutdown_timeout_sec; /* a terminated VM's guest gets that long to shut down */
    GList *orphans; /* Machines of VMs gone, each waiting for its CreateMachine answer */
};

/* One running VM and its registration. */
typedef struct {
    MvmdMachined *machined;
    MvmdVmService *vm;      /* NULL once its VM is gone (an orphan) */
    char *name;             /* the VM's */
    char *machine_name;     /* machined's (machine_name()) */
    MvmdLeaderSpawn *spawn; /* a leader asked for */
    int leader_fd;          /* the leader's pipe, -1 without one */
    pid_t leader_pid;
    guint leader_watch;
    GCancellable *call; /* CreateMachine in flight */
    gboolean registered;
    guint attempts;
    guint retry_source;
    guint terminate_source; /* the VM must stop: asked again until it does */
    gint64 force_at;        /* when terminating: the monotonic time of the forced stop */
} Machine;

static void maybe_register(Machine *m);

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

/* machined takes host names only (letters, digits, '-' and '.'; no empty label). */
static gboolean is_host_name(const char *name)
{
    gsize len = strlen(name);

    if (len == 0 || len > 64 || name[0] == '.' || name[len - 1] == '.' || strstr(name, ".."))
        return FALSE;
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.')
            return FALSE;
    }
    return TRUE;
}

/*
 * Machine names are one namespace for every container and VM on the host, and the first to
 * take one keeps it: root's VMs are registered by their name, another owner's as NAME.uUID, so
 * a user allowed to create VMs cannot take the name of a container still to start, or of
 * another user's VM. NULL: the name is no host name (it has a '_'), and the VM is not
 * registered.
 */
static char *machine_name(MvmdVmService *vm)
{
    guint owner = mvmd_vm_get_owner(MVMD_VM(vm));
    g_autofree char *name = owner == 0
                                ? g_strdup(mvmd_vm_service_get_vm_name(vm))
                                : g_strdup_printf("%s.u%u", mvmd_vm_service_get_vm_name(vm), owner);

    return is_host_name(name) ? g_steal_pointer(&name) : NULL;
}

/* A machine or scope of that name is still going away: worth another try. */
static gboolean is_name_in_use(const GError *error)
{
    g_autofree char *remote = g_dbus_error_get_remote_error(error);

    return g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_FILE_EXISTS) ||
           (remote && (g_str_has_suffix(remote, "Exists") || g_str_has_suffix(remote, ".EEXIST")));
}

static gboolean machined_present(MvmdMachined *machined)
{
    return machined->owned || machined->activatable;
}

/* ---- the leader ------------------------------------------------------------------------ */

/* Closing the pipe ends the leader, which empties the scope: machined forgets the machine. */
static void drop_leader(Machine *m)
{
    if (m->spawn)
        mvmd_leader_spawn_cancel(g_steal_pointer(&m->spawn));
    g_clear_handle_id(&m->leader_watch, g_source_remove);
    if (m->leader_fd >= 0)
        close(m->leader_fd);
    m->leader_fd = -1;
    m->leader_pid = 0;
}

static gboolean on_terminate_tick(gpointer user_data)
{
    Machine *m = user_data;

    if (g_get_monotonic_time() >= m->force_at)
        mvmd_vm_service_force_stop(m->vm); /* does nothing while an operation runs */
    return G_SOURCE_CONTINUE;
}

/*
 * The scope is being stopped (machinectl terminate, or the host going down): like microvmd's
 * own stop, the guest is asked to shut down and stopped when it has not within the timeout.
 * The leader's death (SIGKILL) stops it at once: its machine is gone already.
 */
static void terminate(Machine *m, gboolean at_once)
{
    gint64 force_at = g_get_monotonic_time() +
                      (at_once ? 0 : (gint64)m->machined->shutdown_timeout_sec * G_USEC_PER_SEC);

    if (m->terminate_source) {
        m->force_at = MIN(m->force_at, force_at);
        return;
    }
    mvmd_vm_log(m->name, G_LOG_LEVEL_MESSAGE, "terminated through systemd-machined%s",
                at_once ? ": its leader was killed" : "");
    m->force_at = force_at;
    if (!at_once)
        mvmd_vm_service_request_power_off(m->vm);
    m->terminate_source = g_timeout_add(TERMINATE_RETRY_MS, on_terminate_tick, m);
    on_terminate_tick(m);
}

static void act_on(Machine *m, char request)
{
    switch (request) {
    case MVMD_LEADER_POWER_OFF:
        mvmd_vm_log(m->name, G_LOG_LEVEL_MESSAGE, "power-off asked through systemd-machined");
        mvmd_vm_service_request_power_off(m->vm);
        break;
    case MVMD_LEADER_REBOOT:
        mvmd_vm_log(m->name, G_LOG_LEVEL_MESSAGE, "reboot asked through systemd-machined");
        mvmd_vm_service_hard_reset(m->vm);
        break;
    case MVMD_LEADER_TERMINATE:
        terminate(m, FALSE);
        break;
    default:
        break;
    }
}

/* One request per dispatch: whatever it does to the VM, @m is looked at no more after it. */
static gboolean on_leader_io(int fd, GIOCondition condition, gpointer user_data)
{
    Machine *m = user_data;
    char request;
    ssize_t n = read(fd, &request, 1);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return G_SOURCE_CONTINUE;
    if (n == 1) {
        act_on(m, request);
        return G_SOURCE_CONTINUE;
    }
    /* The leader is gone, killed: its scope and machine with it. */
    m->leader_watch = 0;
    drop_leader(m);
    m->registered = FALSE;
    terminate(m, TRUE);
    return G_SOURCE_REMOVE;
}

/* ---- CreateMachine ---------------------------------------------------------------------- */

static gboolean on_retry(gpointer user_data)
{
    Machine *m = user_data;

    m->retry_source = 0;
    maybe_register(m);
    return G_SOURCE_REMOVE;
}

static void machine_free(Machine *m);

static void on_created(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Machine *m = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    gboolean in_use;

    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return; /* @m is gone */
    g_clear_object(&m->call);
    if (!m->vm) {
        /* Its VM went meanwhile: the leader could leave only now (machine_release()). */
        m->machined->orphans = g_list_remove(m->machined->orphans, m);
        machine_free(m);
        return;
    }
    if (reply) {
        mvmd_vm_log(m->name, G_LOG_LEVEL_DEBUG, "registered with systemd-machined as %s",
                    m->machine_name);
        m->registered = TRUE;
        m->attempts = 0;
        return;
    }
    if (machined_is_absent(error)) {
        if (!m->machined->absent_logged)
            g_debug("systemd-machined is not on the bus: VMs are not registered");
        m->machined->absent_logged = TRUE;
        drop_leader(m);
        return;
    }
    in_use = is_name_in_use(error);
    g_dbus_error_strip_remote_error(error);
    if (!in_use || m->attempts >= CREATE_ATTEMPTS) {
        mvmd_vm_log(m->name, G_LOG_LEVEL_MESSAGE, "systemd-machined refused to register it: %s",
                    error->message);
        drop_leader(m);
        return;
    }
    mvmd_vm_log(m->name, G_LOG_LEVEL_DEBUG, "systemd-machined refused it (%s); trying again",
                error->message);
    m->retry_source = g_timeout_add(CREATE_RETRY_MS, on_retry, m);
}

static void create_machine(Machine *m)
{
    m->attempts++;
    m->call = g_cancellable_new();
    /* No scope properties: machined makes machine-NAME.scope with the leader in it. */
    g_dbus_connection_call(
        m->machined->connection, MACHINED_NAME, MACHINED_PATH, MACHINED_INTERFACE, "CreateMachine",
        g_variant_new("(s@ayssusa(sv))", m->machine_name,
                      uuid_bytes(mvmd_vm_get_uuid(MVMD_VM(m->vm))), "microvmd", "vm",
                      (guint32)m->leader_pid, "", NULL),
        G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, -1, m->call, on_created, m);
}

static void on_leader_spawned(int fd, pid_t pid, const GError *error, gpointer user_data)
{
    Machine *m = user_data;

    m->spawn = NULL;
    if (error) {
        mvmd_vm_log(m->name, G_LOG_LEVEL_MESSAGE, "not registered with systemd-machined: %s",
                    error->message);
        return;
    }
    m->leader_fd = fd;
    m->leader_pid = pid;
    g_unix_set_fd_nonblocking(fd, TRUE, NULL);
    m->leader_watch = g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_leader_io, m);
    create_machine(m);
}

/* A leader first, then CreateMachine; nothing while machined is neither there nor startable. */
static void maybe_register(Machine *m)
{
    if (!m->machine_name || m->registered || m->spawn || m->call || m->retry_source ||
        m->terminate_source)
        return;
    if (!machined_present(m->machined) || !mvmd_leader_factory_running())
        return;
    if (m->leader_fd >= 0) {
        create_machine(m);
        return;
    }
    m->spawn = mvmd_leader_spawn(on_leader_spawned, m);
}

/* Closing the leader's pipe is all it takes: the leader leaves, its scope empties. */
static void machine_free(Machine *m)
{
    drop_leader(m);
    g_free(m->name);
    g_free(m->machine_name);
    g_free(m);
}

/*
 * Its VM stopped or went. With a CreateMachine on its way, the leader stays until machined has
 * answered: had it left, the kernel could give its PID to another process before machined
 * moved "the leader" into the scope.
 */
static void machine_release(Machine *m)
{
    if (m->spawn)
        mvmd_leader_spawn_cancel(g_steal_pointer(&m->spawn));
    g_clear_handle_id(&m->leader_watch, g_source_remove);
    g_clear_handle_id(&m->retry_source, g_source_remove);
    g_clear_handle_id(&m->terminate_source, g_source_remove);
    g_clear_object(&m->vm);
    if (m->call) {
        m->machined->orphans = g_list_prepend(m->machined->orphans, m);
        return;
    }
    machine_free(m);
}

/* ---- following the VMs and machined ---------------------------------------------------- */

void mvmd_machined_vm_state_changed(MvmdVmService *vm, const char *state, gpointer user_data)
{
    MvmdMachined *machined = user_data;
    const char *name = mvmd_vm_service_get_vm_name(vm);
    gboolean active =
        g_strcmp0(state, MVMD_STATE_RUNNING) == 0 || g_strcmp0(state, MVMD_STATE_PAUSED) == 0;
    Machine *m = g_hash_table_lookup(machined->machines, name);

    /* News of a VM gone after another of its name came: not the one registered. */
    if (m && m->vm != vm && !state)
        return;
    if (!active || (m && m->vm != vm)) {
        g_hash_table_remove(machined->machines, name);
        m = NULL;
    }
    if (!active || m)
        return;
    m = g_new0(Machine, 1);
    m->machined = machined;
    m->vm = g_object_ref(vm);
    m->name = g_strdup(name);
    m->machine_name = machine_name(vm);
    m->leader_fd = -1;
    if (!m->machine_name)
        mvmd_vm_log(name, G_LOG_LEVEL_MESSAGE,
                    "not registered with systemd-machined: the name is no host name");
    g_hash_table_insert(machined->machines, m->name, m);
    maybe_register(m);
}

static void presence_changed(MvmdMachined *machined)
{
    GHashTableIter iter;
    gpointer m;

    if (!machined_present(machined))
        return;
    g_hash_table_iter_init(&iter, machined->machines);
    while (g_hash_table_iter_next(&iter, NULL, &m))
        maybe_register(m);
}

static void on_machined_appeared(GDBusConnection *connection, const char *name, const char *owner,
                                 gpointer user_data)
{
    MvmdMachined *machined = user_data;

    machined->owned = TRUE;
    presence_changed(machined);
}

static void on_machined_vanished(GDBusConnection *connection, const char *name, gpointer user_data)
{
    MvmdMachined *machined = user_data;

    machined->owned = FALSE;
}

static void on_activatable_names(GObject *source, GAsyncResult *result, gpointer user_data)
{
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, NULL);
    g_autofree const char **names = NULL;
    MvmdMachined *machined;

    if (!reply)
        return; /* cancelled (@user_data is gone), or no answer: only a running machined counts */
    machined = user_data;
    g_variant_get(reply, "(^a&s)", &names);
    machined->activatable = g_strv_contains(names, MACHINED_NAME);
    presence_changed(machined);
}

MvmdMachined *mvmd_machined_new(GDBusConnection *connection, guint shutdown_timeout_sec)
{
    MvmdMachined *machined = g_new0(MvmdMachined, 1);

    machined->shutdown_timeout_sec = shutdown_timeout_sec;
    machined->connection = g_object_ref(connection);
    machined->cancellable = g_cancellable_new();
    machined->machines =
        g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)machine_release);
    /* Leaders are only forked where machined runs, or the bus starts it on the first call. */
    machined->name_watch =
        g_bus_watch_name_on_connection(connection, MACHINED_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                       on_machined_appeared, on_machined_vanished, machined, NULL);
    g_dbus_connection_call(connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "ListActivatableNames", NULL,
                           G_VARIANT_TYPE("(as)"), G_DBUS_CALL_FLAGS_NONE, -1,
                           machined->cancellable, on_activatable_names, machined);
    return machined;
}

void mvmd_machined_free(MvmdMachined *machined)
{
    if (!machined)
        return;
    g_cancellable_cancel(machined->cancellable);
    g_bus_unwatch_name(machined->name_watch);
    g_hash_table_unref(machined->machines); /* each leader leaves, or becomes an orphan */
    for (GList *l = machined->orphans; l; l = l->next) {
        Machine *m = l->data;

        g_cancellable_cancel(m->call);
        g_object_unref(m->call);
        machine_free(m);
    }
    g_list_free(machined->orphans);
    g_object_unref(machined->cancellable);
    g_object_unref(machined->connection);
    g_free(machined);
}
