/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's life: connect to the bus, export the ObjectManager, the Manager and the stored
 * VMs, own the name, autostart; on SIGTERM/SIGINT, on losing the name (--replace) or the bus:
 * ask every guest to shut down, wait a bounded time, force the rest, flush, exit.
 */
#include "daemon.h"

#include <glib-unix.h>
#include <signal.h>
#include <unistd.h>

#include "definition.h"
#include "context.h"
#include "errors.h"
#include "fd-closer.h"
#include "handoff.h"
#include "machined.h"
#include "manager.h"
#include "names.h"
#include "peer.h"
#include "sdnotify.h"
#include "status-watch.h"
#include "vm-ops.h"

/* How long exit waits for stopped machines to be freed (each takes 5-40 ms). */
#define TEARDOWN_WAIT_US (10 * G_USEC_PER_SEC)

#define STOP_POLL_MS        100
#define FORCE_STOP_GRACE_US (10 * G_USEC_PER_SEC) /* after the forced stops: give up */
#define HANDOFF_WAIT_US     (20 * G_USEC_PER_SEC) /* every VM saved and pushed, or stopped */

typedef struct {
    const MvmdDaemonOptions *options;
    MvmdContext ctx;
    GMainLoop *loop;
    GDBusConnection *connection;
    GDBusObjectManagerServer *object_manager;
    MvmdManagerService *manager;
    guint owner_id;
    gboolean name_acquired;
    int exit_status;
    gint64 stop_deadline;
    guint stop_source;
    guint signal_sources[4];
    MvmdPeerServer *peer_server;   /* socket activation (may be the only way in) */
    MvmdStatusWatch *status_watch; /* STATUS= */
    MvmdMachined *machined;
    guint watchdog_source;
    MvmdListenFds *passed;   /* what systemd passed at start, until shared out */
    gboolean asking_systemd; /* SIGTERM: is it a restart? (handoff.h) */
    gboolean took_over;      /* the last daemon handed VMs to this one */
} Daemon;

static void probe_kvm(Daemon *d)
{
    g_autoptr(GError) error = NULL;

    d->ctx.kvm_api_version = mvm_kvm_api_version(&error);
    if (d->ctx.kvm_api_version < 0) {
        d->ctx.kvm_api_version = -1;
        g_message("KVM is not available (%s): VMs can be defined but not started",
                  error ? error->message : "unknown error");
        mvmd_config_set_max_vcpus(MVM_MAX_VCPUS);
        return;
    }
    mvmd_config_set_max_vcpus(mvm_kvm_max_vcpus());
    g_message("KVM API version %d, up to %u vCPUs per VM", d->ctx.kvm_api_version,
              mvmd_config_get_max_vcpus());
}

/*
 * Lazy restore needs a userfaultfd from /dev/userfaultfd (Linux 6.1; the unit binds it in).
 * Probed once, after the process sandbox is in place, so that the answer is what a restore
 * will get; the Capabilities property is fixed for the daemon's life, and RestoreVM agrees.
 */
static void probe_lazy_restore(Daemon *d)
{
    g_autoptr(GError) error = NULL;

    if (mvm_lazy_restore_supported(&error))
        return;
    d->ctx.no_lazy_restore = g_strdup(error ? error->message : "unknown error");
    g_message("lazy restore is not available: %s", d->ctx.no_lazy_restore);
}

/* ---- stopping -------------------------------------------------------------------------- */

static void finish(Daemon *d)
{
    GError *error = NULL;

    if (d->stop_source)
        g_source_remove(d->stop_source);
    d->stop_source = 0;
    if (d->connection && !g_dbus_connection_is_closed(d->connection) &&
        !g_dbus_connection_flush_sync(d->connection, NULL, &error)) {
        g_debug("flushing the bus connection: %s", error->message);
        g_clear_error(&error);
    }
    g_main_loop_quit(d->loop);
}

static gboolean stop_tick(gpointer user_data)
{
    Daemon *d = user_data;
    guint active = mvmd_manager_service_count_active(d->manager);
    gint64 now = g_get_monotonic_time();

    if (active == 0) {
        g_message("every VM is stopped");
        d->stop_source = 0;
        finish(d);
        return G_SOURCE_REMOVE;
    }
    if (!d->ctx.force_stop && now >= d->stop_deadline) {
        g_autoptr(GList) vms = mvmd_manager_service_get_vms(d->manager);

        g_message("%u VMs still running after %u s: stopping them", active,
                  d->options->shutdown_timeout_sec);
        d->ctx.force_stop = TRUE;
        d->stop_deadline = now + FORCE_STOP_GRACE_US;
        for (GList *l = vms; l; l = l->next)
            mvmd_vm_service_force_stop(l->data);
    } else if (d->ctx.force_stop && now >= d->stop_deadline) {
        g_warning("%u VMs did not stop; exiting anyway", active);
        d->stop_source = 0;
        finish(d);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

/*
 * How long the guests get before the rest are stopped: the shutdown timeout, and with a
 * handoff at least HANDOFF_WAIT_US for the saves (a VM it cannot carry still gets its
 * shutdown's time).
 */
static gint64 stop_wait_us(Daemon *d)
{
    gint64 shutdown = (gint64)d->options->shutdown_timeout_sec * G_USEC_PER_SEC;

    return d->ctx.handing_off ? MAX(shutdown, HANDOFF_WAIT_US) : shutdown;
}

static void begin_stop(Daemon *d, const char *why)
{
    g_autoptr(GList) vms = NULL;

    if (d->ctx.stopping)
        return;
    g_message("stopping: %s", why);
    d->ctx.stopping = TRUE;
    /* The graceful part (or the handoff's), the forced part, and a little for flushing. */
    mvmd_sd_notify_stopping((guint64)stop_wait_us(d) + 5 * G_USEC_PER_SEC + FORCE_STOP_GRACE_US);
    if (!d->manager) {
        g_main_loop_quit(d->loop);
        return;
    }
    vms = mvmd_manager_service_get_vms(d->manager);
    for (GList *l = vms; l; l = l->next) {
        if (d->ctx.handing_off)
            mvmd_vm_service_begin_handoff(l->data);
        else
            mvmd_vm_service_begin_shutdown(l->data);
    }
    d->stop_deadline = g_get_monotonic_time() + stop_wait_us(d);
    if (d->options->shutdown_timeout_sec == 0 && !d->ctx.handing_off) {
        d->ctx.force_stop = TRUE;
        d->stop_deadline = g_get_monotonic_time() + FORCE_STOP_GRACE_US;
        for (GList *l = vms; l; l = l->next)
            mvmd_vm_service_force_stop(l->data);
    }
    d->stop_source = g_timeout_add(STOP_POLL_MS, stop_tick, d);
    stop_tick(d);
}

/*
 * Every VM that can be is handed to the next daemon through systemd's store (handoff.h); the
 * rest are shut down as by begin_stop().
 */
static void begin_handoff(Daemon *d, const char *why, int exit_status)
{
    if (d->ctx.stopping)
        return;
    d->ctx.handing_off = TRUE;
    d->exit_status = exit_status;
    if (d->manager)
        mvmd_handoff_expect(mvmd_manager_service_count_active(d->manager));
    begin_stop(d, why);
}

static void on_restart_answer(gboolean restarting, gpointer user_data)
{
    Daemon *d = user_data;

    d->asking_systemd = FALSE;
    if (restarting)
        begin_handoff(d, "SIGTERM of a restart: handing the VMs to the next microvmd", 0);
    else
        begin_stop(d, "signal received");
}

/*
 * systemd sends a restart's SIGTERM as a stop's: only a restart hands the VMs over, so it is
 * asked which this is; a stop shuts the guests down as ever.
 */
static gboolean on_signal(gpointer user_data)
{
    Daemon *d = user_data;
    const char *why;

    if (d->ctx.stopping || d->asking_systemd)
        return G_SOURCE_CONTINUE;
    if (d->connection && mvmd_handoff_available(d->options->fd_store, &why) &&
        mvmd_manager_service_count_active(d->manager) > 0) {
        d->asking_systemd = TRUE;
        mvmd_handoff_ask_if_restarting(d->connection, on_restart_answer, d);
        return G_SOURCE_CONTINUE;
    }
    begin_stop(d, "signal received");
    return G_SOURCE_CONTINUE;
}

/*
 * SIGUSR1 (`systemctl kill -s USR1 microvmd`): hand the VMs over and exit with 75
 * (EX_TEMPFAIL), which the unit's Restart=on-failure answers with a new start. Without a
 * store there is nobody to hand them to: the daemon says so and runs on.
 */
static gboolean on_sigusr1(gpointer user_data)
{
    Daemon *d = user_data;
    const char *why;

    if (d->ctx.stopping)
        return G_SOURCE_CONTINUE;
    if (!mvmd_handoff_available(d->options->fd_store, &why)) {
        g_warning("SIGUSR1: cannot hand the VMs over: %s; running on", why);
        return G_SOURCE_CONTINUE;
    }
    begin_handoff(d, "SIGUSR1: handing the VMs to the next microvmd", MVMD_EXIT_HANDED_OVER);
    return G_SOURCE_CONTINUE;
}

#ifdef MVM_TEST_HOOKS
/* Test builds only (meson -Dtest_hooks=true): SIGUSR2 makes the main loop stop answering, as a
 * deadlock would, so that tests/systemd/ can watch systemd's watchdog end and restart us. */
static gboolean on_test_hang(gpointer user_data)
{
    g_warning("test hook: SIGUSR2, the main loop stops answering now");
    for (;;)
        pause();
    return G_SOURCE_REMOVE;
}
#endif

static gboolean on_sighup(gpointer user_data)
{
    Daemon *d = user_data;

    g_autoptr(GError) error = NULL;

    if (d->manager && !d->ctx.stopping && !mvmd_manager_service_reload(d->manager, &error))
        g_warning("reload (SIGHUP): %s", error->message);
    return G_SOURCE_CONTINUE;
}

/* ---- the bus --------------------------------------------------------------------------- */

/* READY=1, carrying the VMs' status. */
static void notify_ready(Daemon *d)
{
    g_autofree char *status = mvmd_manager_service_describe(d->manager);

    mvmd_sd_notify_ready(status);
}

static void on_name_acquired(GDBusConnection *connection, const char *name, gpointer user_data)
{
    Daemon *d = user_data;

    g_message("%s acquired", name);
    d->name_acquired = TRUE;
    notify_ready(d); /* the name is ours and the definitions are loaded */
    mvmd_manager_service_autostart(d->manager);
}

static void on_name_lost(GDBusConnection *connection, const char *name, gpointer user_data)
{
    Daemon *d = user_data;
    const char *why;

    if (!d->name_acquired) {
        g_autoptr(GError) error =
            g_error_new(G_IO_ERROR, G_IO_ERROR_EXISTS, "cannot own %s on the bus", name);

        g_warning("cannot own %s on the bus (is another microvmd running? see --replace)", name);
        mvmd_sd_notify_failure(error);
        /* The guests taken over would die with this daemon: on to the next one, as they came. */
        if (d->took_over && mvmd_handoff_available(d->options->fd_store, &why)) {
            begin_handoff(d, "handing the VMs taken over to the next microvmd again", 1);
            return;
        }
        d->exit_status = 1;
        g_main_loop_quit(d->loop);
        return;
    }
    begin_stop(d, "the bus name was lost (replaced)");
}

static void on_connection_closed(GDBusConnection *connection, gboolean remote_peer_vanished,
                                 GError *error, gpointer user_data)
{
    Daemon *d = user_data;

    g_warning("the bus connection was closed%s%s", error ? ": " : "", error ? error->message : "");
    begin_stop(d, "bus connection closed");
}

static GDBusConnection *connect_bus(const MvmdDaemonOptions *options, GError **error)
{
    switch (options->bus) {
    case MVMD_BUS_ADDRESS:
        return g_dbus_connection_new_for_address_sync(
            options->address,
            G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
            NULL, NULL, error);
    case MVMD_BUS_SESSION:
        return g_bus_get_sync(G_BUS_TYPE_SESSION, NULL, error);
    case MVMD_BUS_SYSTEM:
    default:
        return g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, error);
    }
}

/* The VMs the last daemon handed over, restored before anything else may start one. */
static void take_over(Daemon *d)
{
    g_autoptr(GPtrArray) vms = mvmd_handoff_collect(d->passed);

    if (vms->len > 0 && d->ctx.kvm_api_version < 0) {
        g_warning("handoff: %u VMs were handed over, but KVM is not available here", vms->len);
        return;
    }
    d->took_over = vms->len > 0;
    mvmd_manager_service_adopt(d->manager, vms);
}

static gboolean export_objects(Daemon *d, GError **error)
{
    d->object_manager = g_dbus_object_manager_server_new(MVMD_DBUS_PATH);
    d->manager = mvmd_manager_service_new(&d->ctx, d->object_manager);
    mvmd_manager_service_load(d->manager);
    take_over(d);
    if (!d->connection)
        return TRUE; /* socket activation only: peer.c exports them per client */
    g_dbus_object_manager_server_set_connection(d->object_manager, d->connection);
    /* The ObjectManager only manages objects below its path: the Manager sits at the path. */
    return g_dbus_interface_skeleton_export(G_DBUS_INTERFACE_SKELETON(d->manager), d->connection,
                                            MVMD_DBUS_PATH, error);
}

/* Socket activation, STATUS=, the watchdog and machined (status-watch.h, peer.h, machined.h). */
static gboolean start_service(Daemon *d, GError **error)
{
    g_autoptr(GError) local = NULL;

    d->peer_server = mvmd_peer_server_new(d->object_manager, d->manager, d->passed, &local);
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    mvmd_listen_fds_close_rest(d->passed);
    if (d->connection)
        d->machined = mvmd_machined_new(d->connection, d->options->shutdown_timeout_sec);
    d->status_watch = mvmd_status_watch_new(
        d->manager, d->machined ? mvmd_machined_vm_state_changed : NULL, d->machined);
    d->watchdog_source = mvmd_sd_watchdog_add();
    return TRUE;
}

static gboolean start(Daemon *d, GError **error)
{
    /* Not queued: a second daemon fails at once unless it replaces the first. */
    GBusNameOwnerFlags flags =
        G_BUS_NAME_OWNER_FLAGS_ALLOW_REPLACEMENT | G_BUS_NAME_OWNER_FLAGS_DO_NOT_QUEUE;

    g_autoptr(GError) local = NULL;

    probe_kvm(d);
    probe_lazy_restore(d);
    if (!mvmd_fd_closer_start(error))
        return FALSE;
    d->passed = mvmd_listen_fds_take(&local);
    if (local)
        g_warning("%s", local->message);
    d->connection = connect_bus(d->options, error);
    if (!d->connection && !mvmd_peer_sockets_passed(d->passed))
        return FALSE;
    if (!d->connection) {
        /* Containers and orchestrators without a system bus use the socket alone. */
        g_message("no message bus (%s): serving the passed sockets only", (*error)->message);
        g_clear_error(error);
    } else {
        g_dbus_connection_set_exit_on_close(d->connection, FALSE);
        /* Before anything is exported: no call may reach a handler with GDBus' own list. */
        mvmd_fd_closer_watch(d->connection);
        g_signal_connect(d->connection, "closed", G_CALLBACK(on_connection_closed), d);
    }
    if (!export_objects(d, error))
        return FALSE;
    if (!start_service(d, error))
        return FALSE;
    if (!d->connection) {
        notify_ready(d);
        mvmd_manager_service_autostart(d->manager);
        return TRUE;
    }
    if (d->options->replace)
        flags |= G_BUS_NAME_OWNER_FLAGS_REPLACE;
    d->owner_id = g_bus_own_name_on_connection(d->connection, MVMD_DBUS_NAME, flags,
                                               on_name_acquired, on_name_lost, d, NULL);
    return TRUE;
}

static void cleanup(Daemon *d)
{
    /* Machines whose Stop was answered may still be being freed on their threads. */
    if (!mvmd_vm_op_wait_teardowns(TEARDOWN_WAIT_US))
        g_warning("some stopped VMs are still being freed; exiting anyway");
    for (gsize i = 0; i < G_N_ELEMENTS(d->signal_sources); i++) {
        if (d->signal_sources[i])
            g_source_remove(d->signal_sources[i]);
    }
    if (d->watchdog_source)
        g_source_remove(d->watchdog_source);
    mvmd_status_watch_free(d->status_watch);
    mvmd_machined_free(d->machined);
    mvmd_peer_server_free(d->peer_server);
    mvmd_listen_fds_free(d->passed);
    if (d->owner_id)
        g_bus_unown_name(d->owner_id);
    if (d->manager && d->connection) /* without a bus it was only exported to peers */
        g_dbus_interface_skeleton_unexport(G_DBUS_INTERFACE_SKELETON(d->manager));
    if (d->object_manager)
        g_dbus_object_manager_server_set_connection(d->object_manager, NULL);
    /* VMs still alive here (they would not stop) are freed by their objects' dispose. */
    g_clear_object(&d->manager);
    g_clear_object(&d->object_manager);
    g_clear_object(&d->connection);
    mvmd_store_free(d->ctx.store);
    /* A VM still in an operation (one that would not stop) keeps the ledger alive. */
    mvmd_quota_unref(d->ctx.quota);
    /* Likewise: a VM keeps the images it maps. */
    mvm_memory_images_unref(d->ctx.memory_images);
    g_free(d->ctx.cpu_template_dir);
    g_free(d->ctx.no_lazy_restore);
    g_main_loop_unref(d->loop);
}

int mvmd_daemon_run(const MvmdDaemonOptions *options)
{
    Daemon d = {0};
    g_autoptr(GError) error = NULL;

    d.options = options;
    d.ctx.state_dir = options->state_dir;
    d.ctx.runtime_dir = options->runtime_dir;
    d.ctx.store = mvmd_store_new(options->state_dir);
    d.ctx.quota = options->quota;
    d.ctx.config_path = options->config_path;
    d.ctx.config_required = options->config_required;
    d.ctx.cpu_template_dir = g_strdup(options->cpu_template_dir);
    d.ctx.cpu_template_dir_fixed = options->cpu_template_dir_fixed;
    d.ctx.memory_images = mvm_memory_images_new();
    d.loop = g_main_loop_new(NULL, FALSE);
    /* A client closing its console socket must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    d.signal_sources[0] = g_unix_signal_add(SIGTERM, on_signal, &d);
    d.signal_sources[1] = g_unix_signal_add(SIGINT, on_signal, &d);
    d.signal_sources[2] = g_unix_signal_add(SIGHUP, on_sighup, &d);
    d.signal_sources[3] = g_unix_signal_add(SIGUSR1, on_sigusr1, &d);
#ifdef MVM_TEST_HOOKS
    g_unix_signal_add(SIGUSR2, on_test_hang, NULL);
#endif
    g_message("microvmd %s starting (state %s, runtime %s, CPU templates %s)", MVMD_VERSION,
              options->state_dir, options->runtime_dir, options->cpu_template_dir);

    if (!start(&d, &error)) {
        g_warning("cannot start: %s", error->message);
        mvmd_sd_notify_failure(error);
        d.exit_status = 1;
    } else {
        g_main_loop_run(d.loop);
    }
    cleanup(&d);
    g_message("exiting with status %d", d.exit_status);
    return d.exit_status;
}
