/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-client: control-plane round trips for tests/bench/compare, timed from C on both sides
 * so that neither gets a slower client. One JSON object per measurement on stdout (µs, KiB):
 *
 *   bench-client qmp-pause SOCKET REPS       QMP stop / cont round trips
 *   bench-client qmp-migrate SOCKET FILE     migrate to "exec:cat > FILE" until completed
 *   bench-client qmp-incoming SOCKET FILE    migrate-incoming "exec:cat FILE" until running
 *                                            (QEMU started with -incoming defer)
 *   bench-client dbus ADDRESS PID KERNEL REPS N_DEFINED N_RUNNING N_CLONES
 *                                            microvmd (PID) on the bus at ADDRESS: CreateVM+Start
 *                                            (and Stop+Delete+CreateVM+Start back to back),
 *                                            property Get, Pause/Resume, GetManagedObjects with
 *                                            N_DEFINED VMs, daemon RSS with N_RUNNING idle VMs,
 *                                            Snapshot + RestoreVM of a 128 MiB guest, and
 *                                            N_CLONES clones of one snapshot (RestoreVM with
 *                                            clone and resume) beside as many copies
 *                                            (copy-memory): latency and memory per VM
 *   bench-client p2p SOCKET KERNEL REPS      the same Pause/Resume on microvmd's own socket
 *                                            (peer-to-peer D-Bus, no broker)
 *   bench-client libvirt ADDRESS REPS N_DEFINED
 *                                            libvirt-dbus (test driver) on the bus at ADDRESS:
 *                                            DomainDefineXML+Create, Get, Suspend/Resume,
 *                                            ListDomains with N_DEFINED domains
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "bench-util.h"

/* ---- QMP: one JSON object per line; replies start with {"return" or {"error" ---- */

typedef struct {
    int fd;
    GString *buf;
} Qmp;

static char *qmp_read_line(Qmp *qmp, GError **error)
{
    for (;;) {
        char *nl = memchr(qmp->buf->str, '\n', qmp->buf->len);
        if (nl != NULL) {
            gsize len = (gsize)(nl - qmp->buf->str);
            char *line = g_strndup(qmp->buf->str, len);
            g_string_erase(qmp->buf, 0, (gssize)len + 1);
            return line;
        }
        char chunk[4096];
        ssize_t n = read(qmp->fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "QMP connection closed");
            return NULL;
        }
        g_string_append_len(qmp->buf, chunk, n);
    }
}

/* Sends @command and returns the reply line, skipping asynchronous events. */
static char *qmp_execute(Qmp *qmp, const char *command, GError **error)
{
    gsize len = strlen(command);

    if (write(qmp->fd, command, len) != (ssize_t)len) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "QMP write: %s", g_strerror(errno));
        return NULL;
    }
    for (;;) {
        char *line = qmp_read_line(qmp, error);
        if (line == NULL)
            return NULL;
        if (g_str_has_prefix(line, "{\"return\""))
            return line;
        if (g_str_has_prefix(line, "{\"error\"")) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "QMP: %s", line);
            g_free(line);
            return NULL;
        }
        g_free(line); /* an event */
    }
}

static gboolean qmp_run(Qmp *qmp, const char *command, GError **error)
{
    g_autofree char *reply = qmp_execute(qmp, command, error);
    return reply != NULL;
}

static gboolean qmp_connect(Qmp *qmp, const char *path, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    int rc;

    qmp->buf = g_string_new(NULL);
    qmp->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    /* QEMU binds the socket a moment before it listens: refused until then. */
    while (qmp->fd >= 0 && (rc = connect(qmp->fd, (struct sockaddr *)&addr, sizeof(addr))) < 0 &&
           (errno == ECONNREFUSED || errno == ENOENT) && g_get_monotonic_time() < deadline)
        g_usleep(1000);
    if (qmp->fd < 0 || rc < 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "connect %s: %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    g_autofree char *greeting = qmp_read_line(qmp, error);
    return greeting != NULL && qmp_run(qmp, "{\"execute\": \"qmp_capabilities\"}\n", error);
}

static void qmp_close(Qmp *qmp)
{
    if (qmp->fd >= 0)
        close(qmp->fd);
    g_string_free(qmp->buf, TRUE);
}

static int cmd_qmp_pause(const char *socket_path, guint reps)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();
    Qmp qmp = {-1, NULL};

    if (!qmp_connect(&qmp, socket_path, &error))
        return bench_fail("QMP", error);
    for (guint i = 0; i < reps; i++) {
        g_usleep(2000);
        gint64 t0 = g_get_monotonic_time();
        if (!qmp_run(&qmp, "{\"execute\": \"stop\"}\n", &error))
            return bench_fail("stop", error);
        gint64 t1 = g_get_monotonic_time();
        if (!qmp_run(&qmp, "{\"execute\": \"cont\"}\n", &error))
            return bench_fail("cont", error);
        bench_samples_add(pause_us, t1 - t0);
        bench_samples_add(resume_us, g_get_monotonic_time() - t1);
    }
    qmp_close(&qmp);
    bench_print_samples(NULL, "pause_us", pause_us, "resume_us", resume_us, NULL);
    return 0;
}

/* Polls @query until its reply contains one of @done (success) or "failed". */
static gboolean qmp_poll(Qmp *qmp, const char *query, const char *done, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    while (g_get_monotonic_time() < deadline) {
        g_autofree char *reply = qmp_execute(qmp, query, error);
        if (reply == NULL)
            return FALSE;
        if (strstr(reply, done) != NULL)
            return TRUE;
        if (strstr(reply, "\"failed\"") != NULL) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", reply);
            return FALSE;
        }
        g_usleep(200);
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "no %s after 60 s", done);
    return FALSE;
}

/* @outgoing: migrate to FILE; else migrate-incoming from FILE and wait until running. */
static int cmd_qmp_migrate(const char *socket_path, const char *file, gboolean outgoing)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *quoted = g_shell_quote(file);
    g_autofree char *command =
        outgoing ? g_strdup_printf("{\"execute\": \"migrate\", \"arguments\": {\"uri\": "
                                   "\"exec:cat > %s\"}}\n",
                                   quoted)
                 : g_strdup_printf("{\"execute\": \"migrate-incoming\", \"arguments\": "
                                   "{\"uri\": \"exec:cat %s\"}}\n",
                                   quoted);
    Qmp qmp = {-1, NULL};

    if (strchr(file, '"') != NULL || strchr(file, '\\') != NULL)
        return bench_fail("migration file name", NULL);
    if (!qmp_connect(&qmp, socket_path, &error))
        return bench_fail("QMP", error);
    gint64 t0 = g_get_monotonic_time();
    if (!qmp_run(&qmp, command, &error))
        return bench_fail(outgoing ? "migrate" : "migrate-incoming", error);
    gboolean ok =
        outgoing ? qmp_poll(&qmp, "{\"execute\": \"query-migrate\"}\n", "\"completed\"", &error)
                 : qmp_poll(&qmp, "{\"execute\": \"query-status\"}\n", "\"running\"", &error);
    if (!ok)
        return bench_fail("waiting for the migration", error);
    gint64 t1 = g_get_monotonic_time();
    qmp_close(&qmp);
    GString *json = g_string_new(NULL);
    bench_json_int(json, outgoing ? "migrate_us" : "incoming_to_running_us", t1 - t0);
    bench_json_print(json);
    return 0;
}

/* ---- D-Bus: microvmd ---- */

#define MVMD_NAME    "org.microvmd.MicroVM1"
#define MVMD_ROOT    "/org/microvmd/MicroVM1"
#define MVMD_MANAGER "org.microvmd.MicroVM1.Manager"
#define MVMD_VM      "org.microvmd.MicroVM1.VM"

typedef struct {
    GDBusConnection *bus;
    const char *dest; /* the bus name called */
    const char *kernel;
    int daemon_pid;
    guint reps;
} Client;

static GVariant *call(Client *c, const char *path, const char *iface, const char *method,
                      GVariant *args, GError **error)
{
    return g_dbus_connection_call_sync(c->bus, c->dest, path, iface, method, args, NULL,
                                       G_DBUS_CALL_FLAGS_NO_AUTO_START, 120000, NULL, error);
}

static gboolean vm_call(Client *c, const char *path, const char *method, GError **error)
{
    /* Pause takes options (a{sv}); none here: the default pause. */
    GVariant *args = g_str_equal(method, "Pause") ? g_variant_new("(a{sv})", NULL) : NULL;
    g_autoptr(GVariant) reply = call(c, path, MVMD_VM, method, args, error);
    return reply != NULL;
}

static char *create_vm_mib(Client *c, const char *name, const char *cmdline, guint64 memory_mib,
                           GError **error)
{
    GVariantBuilder config;
    char *path = NULL;

    g_variant_builder_init(&config, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&config, "{sv}", "kernel", g_variant_new_string(c->kernel));
    g_variant_builder_add(&config, "{sv}", "cmdline", g_variant_new_string(cmdline));
    g_variant_builder_add(&config, "{sv}", "debug-exit", g_variant_new_boolean(TRUE));
    g_variant_builder_add(&config, "{sv}", "memory-mib", g_variant_new_uint64(memory_mib));
    g_autoptr(GVariant) reply = call(c, MVMD_ROOT, MVMD_MANAGER, "CreateVM",
                                     g_variant_new("(sa{sv})", name, &config), error);
    if (reply != NULL)
        g_variant_get(reply, "(o)", &path);
    return path;
}

static char *create_vm(Client *c, const char *name, const char *cmdline, GError **error)
{
    return create_vm_mib(c, name, cmdline, 128, error);
}

/* Stop (when running) and Delete every VM in @paths. */
static gboolean delete_vms(Client *c, GPtrArray *paths, gboolean stop, GError **error)
{
    for (guint i = 0; i < paths->len; i++)
        if ((stop && !vm_call(c, paths->pdata[i], "Stop", error)) ||
            !vm_call(c, paths->pdata[i], "Delete", error))
            return FALSE;
    g_ptr_array_set_size(paths, 0);
    return TRUE;
}

/*
 * A stopped VM's teardown in the kernel (SRCU waits, the unmapping of its RAM: 5-40 ms) runs on
 * after its Stop was answered (daemon/vm-ops.c), and slows what the daemon does meanwhile. A
 * figure of one call is taken once that is over, as a caller doing one thing at a time sees
 * it; bench_cycle() times the back-to-back case.
 */
#define SETTLE_US (60 * 1000)

/* Stop + Delete of one VM and CreateVM + Start of the next, back to back. */
static gboolean bench_cycle(Client *c, GError **error)
{
    g_autoptr(GArray) cycle_us = bench_samples_new();
    g_autofree char *path = create_vm(c, "bench-cycle-0", "mode=idle", error);

    if (path == NULL || !vm_call(c, path, "Start", error))
        return FALSE;
    for (guint i = 1; i <= c->reps; i++) {
        g_autofree char *name = g_strdup_printf("bench-cycle-%u", i);
        gint64 t0 = g_get_monotonic_time();
        if (!vm_call(c, path, "Stop", error) || !vm_call(c, path, "Delete", error))
            return FALSE;
        g_free(path);
        path = create_vm(c, name, "mode=idle", error);
        if (path == NULL || !vm_call(c, path, "Start", error))
            return FALSE;
        bench_samples_add(cycle_us, g_get_monotonic_time() - t0);
    }
    if (!vm_call(c, path, "Stop", error) || !vm_call(c, path, "Delete", error))
        return FALSE;
    bench_print_samples("cycle", "stop_delete_create_start_us", cycle_us, NULL);
    return TRUE;
}

static gboolean bench_create_start(Client *c, GError **error)
{
    g_autoptr(GArray) create_us = bench_samples_new(), total_us = bench_samples_new();
    g_autoptr(GArray) stop_delete_us = bench_samples_new(), stop_us = bench_samples_new();

    for (guint i = 0; i < c->reps; i++) {
        g_autofree char *name = g_strdup_printf("bench-cs-%u", i);
        g_usleep(SETTLE_US);
        gint64 t0 = g_get_monotonic_time();
        g_autofree char *path = create_vm(c, name, "mode=idle", error);
        if (path == NULL)
            return FALSE;
        gint64 t1 = g_get_monotonic_time();
        if (!vm_call(c, path, "Start", error))
            return FALSE;
        gint64 t2 = g_get_monotonic_time();
        if (!vm_call(c, path, "Stop", error))
            return FALSE;
        gint64 t3 = g_get_monotonic_time();
        if (!vm_call(c, path, "Delete", error))
            return FALSE;
        bench_samples_add(create_us, t1 - t0);
        bench_samples_add(total_us, t2 - t0);
        bench_samples_add(stop_us, t3 - t2);
        bench_samples_add(stop_delete_us, g_get_monotonic_time() - t2);
    }
    bench_print_samples("create_start", "create_us", create_us, "create_start_us", total_us,
                        "stop_us", stop_us, "stop_delete_us", stop_delete_us, NULL);
    return TRUE;
}

static gboolean pause_resume_rounds(Client *c, const char *path, GArray *pause_us,
                                    GArray *resume_us, GError **error)
{
    for (guint i = 0; i < c->reps; i++) {
        g_usleep(2000);
        gint64 t0 = g_get_monotonic_time();
        if (!vm_call(c, path, "Pause", error))
            return FALSE;
        gint64 t1 = g_get_monotonic_time();
        if (!vm_call(c, path, "Resume", error))
            return FALSE;
        bench_samples_add(pause_us, t1 - t0);
        bench_samples_add(resume_us, g_get_monotonic_time() - t1);
    }
    return TRUE;
}

/* Pause/Resume of one VM running @cmdline; Get of its State when @get_us is given. */
static gboolean pause_one(Client *c, const char *name, const char *cmdline, GArray *get_us,
                          GArray *pause_us, GArray *resume_us, GError **error)
{
    g_autofree char *path = create_vm(c, name, cmdline, error);

    if (path == NULL || !vm_call(c, path, "Start", error))
        return FALSE;
    for (guint i = 0; get_us != NULL && i < c->reps; i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GVariant) state = call(c, path, "org.freedesktop.DBus.Properties", "Get",
                                         g_variant_new("(ss)", MVMD_VM, "State"), error);
        if (state == NULL)
            return FALSE;
        bench_samples_add(get_us, g_get_monotonic_time() - t0);
    }
    g_usleep(500000); /* let the guest get going (its CPL3 loop, or its HLT) */
    return pause_resume_rounds(c, path, pause_us, resume_us, error) &&
           vm_call(c, path, "Stop", error) && vm_call(c, path, "Delete", error);
}

/*
 * A guest computing at CPL3 keeps one of the host's cores busy once resumed; on a small host
 * that delays the daemon's reply. The idle guest (HLT) shows the daemon's own cost.
 */
static gboolean bench_get_and_pause(Client *c, GError **error)
{
    g_autoptr(GArray) get_us = bench_samples_new();
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();
    g_autoptr(GArray) pause_idle_us = bench_samples_new();
    g_autoptr(GArray) resume_idle_us = bench_samples_new();

    if (!pause_one(c, "bench-pause", "mode=compute iterations=1e13", get_us, pause_us, resume_us,
                   error) ||
        !pause_one(c, "bench-pause-idle", "mode=idle", NULL, pause_idle_us, resume_idle_us, error))
        return FALSE;
    bench_print_samples("get_pause", "get_us", get_us, "pause_us", pause_us, "resume_us", resume_us,
                        "pause_idle_us", pause_idle_us, "resume_idle_us", resume_idle_us, NULL);
    return TRUE;
}

/* c->reps GetManagedObjects round trips into @gmo_us; the reply's size into @reply_size. */
static gboolean time_managed_objects(Client *c, GArray *gmo_us, gsize *reply_size, GError **error)
{
    for (guint i = 0; i < c->reps; i++) {
        gint64 s = g_get_monotonic_time();
        g_autoptr(GVariant) objects = call(c, MVMD_ROOT, "org.freedesktop.DBus.ObjectManager",
                                           "GetManagedObjects", NULL, error);
        if (objects == NULL)
            return FALSE;
        bench_samples_add(gmo_us, g_get_monotonic_time() - s);
        if (reply_size)
            *reply_size = g_variant_get_size(objects);
    }
    return TRUE;
}

static gboolean bench_managed_objects(Client *c, guint n, GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) gmo_us = bench_samples_new();
    gsize reply_size = 0;

    gint64 t0 = g_get_monotonic_time();
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("bench-def-%04u", i);
        char *path = create_vm(c, name, "mode=idle", error);
        if (path == NULL)
            return FALSE;
        g_ptr_array_add(paths, path);
    }
    gint64 t1 = g_get_monotonic_time();
    if (!time_managed_objects(c, gmo_us, &reply_size, error))
        return FALSE;
    gint64 t2 = g_get_monotonic_time();
    if (!delete_vms(c, paths, FALSE, error))
        return FALSE;
    GString *json = g_string_new(NULL);
    bench_json_str(json, "what", "managed_objects");
    bench_json_int(json, "n", n);
    bench_json_int(json, "create_all_us", t1 - t0);
    bench_json_samples(json, "get_managed_objects_us", gmo_us);
    bench_json_int(json, "reply_bytes", (gint64)reply_size);
    bench_json_int(json, "delete_all_us", g_get_monotonic_time() - t2);
    bench_json_print(json);
    return TRUE;
}

/* The daemon's CPU use while the fleet idles: µs of CPU over a window of @window_us. */
static gboolean fleet_idle_cpu(Client *c, gint64 window_us, gint64 *cpu_us, GError **error)
{
    gint64 cpu0 = bench_proc_cpu_us(c->daemon_pid, error);

    if (cpu0 < 0)
        return FALSE;
    g_usleep(window_us);
    *cpu_us = bench_proc_cpu_us(c->daemon_pid, error);
    if (*cpu_us < 0)
        return FALSE;
    *cpu_us -= cpu0;
    return TRUE;
}

/* Is the daemon still quick while the fleet runs? Pause/Resume of one VM, GetManagedObjects. */
static gboolean fleet_responsiveness(Client *c, const char *path, GArray *pause_us,
                                     GArray *resume_us, GArray *gmo_us, GError **error)
{
    return pause_resume_rounds(c, path, pause_us, resume_us, error) &&
           time_managed_objects(c, gmo_us, NULL, error);
}

#define FLEET_MEMORY_MIB 64
#define FLEET_IDLE_US    (5 * G_USEC_PER_SEC)

/*
 * N idle test guests of 64 MiB created and started one after another, as a user would; then,
 * while they all run: the daemon's memory, its CPU over 5 s, and Pause/Resume of one of them
 * and GetManagedObjects timed.
 */
static gboolean bench_running(Client *c, guint n, GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();
    g_autoptr(GArray) gmo_us = bench_samples_new();
    BenchMem before, after;
    gint64 idle_cpu_us = 0;

    if (!bench_mem_read(c->daemon_pid, &before, error))
        return FALSE;
    gint64 t0 = g_get_monotonic_time();
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("bench-run-%04u", i);
        char *path = create_vm_mib(c, name, "mode=idle", FLEET_MEMORY_MIB, error);
        if (path == NULL)
            return FALSE;
        g_ptr_array_add(paths, path);
        if (!vm_call(c, path, "Start", error))
            return FALSE;
    }
    gint64 t1 = g_get_monotonic_time();
    /* The idle guests park within milliseconds of their start; leave them a margin. */
    g_usleep(2 * G_USEC_PER_SEC);
    if (!bench_mem_read(c->daemon_pid, &after, error) ||
        !fleet_idle_cpu(c, FLEET_IDLE_US, &idle_cpu_us, error) ||
        !fleet_responsiveness(c, paths->pdata[n / 2], pause_us, resume_us, gmo_us, error))
        return FALSE;
    gint64 t2 = g_get_monotonic_time();
    if (!delete_vms(c, paths, TRUE, error))
        return FALSE;
    GString *json = g_string_new(NULL);
    bench_json_str(json, "what", "running");
    bench_json_int(json, "n", n);
    bench_json_int(json, "memory_mib", FLEET_MEMORY_MIB);
    bench_json_int(json, "create_start_all_us", t1 - t0);
    bench_json_int(json, "stop_delete_all_us", g_get_monotonic_time() - t2);
    bench_json_mem(json, "before", &before);
    bench_json_mem(json, "after", &after);
    bench_json_int(json, "idle_cpu_us", idle_cpu_us);
    bench_json_int(json, "idle_window_us", FLEET_IDLE_US);
    bench_json_samples(json, "pause_us", pause_us);
    bench_json_samples(json, "resume_us", resume_us);
    bench_json_samples(json, "get_managed_objects_us", gmo_us);
    bench_json_print(json);
    return TRUE;
}

static void remove_snapshot_dir(const char *dir)
{
    g_autofree char *state = g_build_filename(dir, "state", NULL);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);

    g_unlink(state);
    g_unlink(memory);
    g_rmdir(dir);
}

/* Snapshot (left paused) and RestoreVM (resume: true) of one guest, @n times. */
static gboolean snapshot_rounds(Client *c, const char *path, const char *tmp, guint n,
                                GArray *snapshot_us, GArray *restore_us, GError **error)
{
    for (guint i = 0; i < n; i++) {
        g_autofree char *dir = g_strdup_printf("%s/snap%u", tmp, i);
        g_autofree char *name = g_strdup_printf("bench-restored-%u", i);
        GVariantBuilder opts;
        char *restored = NULL;

        g_variant_builder_init(&opts, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&opts, "{sv}", "leave-paused", g_variant_new_boolean(TRUE));
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GVariant) snap =
            call(c, path, MVMD_VM, "Snapshot", g_variant_new("(sa{sv})", dir, &opts), error);
        if (snap == NULL)
            return FALSE;
        gint64 t1 = g_get_monotonic_time();
        g_variant_builder_init(&opts, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&opts, "{sv}", "resume", g_variant_new_boolean(TRUE));
        g_autoptr(GVariant) reply = call(c, MVMD_ROOT, MVMD_MANAGER, "RestoreVM",
                                         g_variant_new("(ssa{sv})", name, dir, &opts), error);
        if (reply == NULL)
            return FALSE;
        bench_samples_add(snapshot_us, t1 - t0);
        bench_samples_add(restore_us, g_get_monotonic_time() - t1);
        g_variant_get(reply, "(o)", &restored);
        gboolean ok = vm_call(c, restored, "Stop", error) && vm_call(c, restored, "Delete", error);
        g_free(restored);
        remove_snapshot_dir(dir);
        g_usleep(SETTLE_US);
        if (!ok)
            return FALSE;
    }
    return TRUE;
}

static gboolean bench_snapshot(Client *c, GError **error)
{
    g_autoptr(GArray) snapshot_us = bench_samples_new(), restore_us = bench_samples_new();
    g_autofree char *tmp = g_dir_make_tmp("microvmd-bench-XXXXXX", error);
    g_autofree char *path = NULL;

    if (tmp == NULL)
        return FALSE;
    path = create_vm(c, "bench-snap", "mode=pattern pages=64 every=20 delay=1000 verify=sample",
                     error);
    gboolean ok = path != NULL && vm_call(c, path, "Start", error);
    if (ok) {
        g_usleep(G_USEC_PER_SEC); /* the guest fills its pattern pages */
        ok = snapshot_rounds(c, path, tmp, MIN(c->reps, 5), snapshot_us, restore_us, error) &&
             vm_call(c, path, "Stop", error) && vm_call(c, path, "Delete", error);
    }
    g_rmdir(tmp);
    if (ok)
        bench_print_samples("snapshot", "snapshot_us", snapshot_us, "restore_us", restore_us, NULL);
    return ok;
}

/* ---- many clones of one snapshot: shared memory images against private copies ---- */

#define CLONE_PAGES 1024 /* the pattern guest's data: 4 MiB */

/* RestoreVM of @dir as @n VMs (clone, resume), one after another; appends their paths. */
static gboolean restore_many(Client *c, const char *dir, guint n, gboolean copy, GPtrArray *paths,
                             GArray *restore_us, GError **error)
{
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("bench-%s-%u", copy ? "copy" : "clone", i);
        GVariantBuilder opts;
        char *path = NULL;

        g_variant_builder_init(&opts, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&opts, "{sv}", "resume", g_variant_new_boolean(TRUE));
        g_variant_builder_add(&opts, "{sv}", "clone", g_variant_new_boolean(TRUE));
        g_variant_builder_add(&opts, "{sv}", "copy-memory", g_variant_new_boolean(copy));
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GVariant) reply = call(c, MVMD_ROOT, MVMD_MANAGER, "RestoreVM",
                                         g_variant_new("(ssa{sv})", name, dir, &opts), error);
        if (reply == NULL)
            return FALSE;
        bench_samples_add(restore_us, g_get_monotonic_time() - t0);
        g_variant_get(reply, "(o)", &path);
        g_ptr_array_add(paths, path);
    }
    return TRUE;
}

/*
 * The daemon's PSS growth per VM once @n restored VMs of @dir have run a moment, from a
 * baseline taken once the VMs stopped before were freed (after their Stop's reply).
 */
static gboolean fleet_of(Client *c, const char *dir, guint n, gboolean copy, GArray *restore_us,
                         gint64 *pss_per_vm_kib, GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);

    g_usleep(G_USEC_PER_SEC);
    gint64 before = bench_pss_kib(c->daemon_pid, error);

    if (before < 0 || !restore_many(c, dir, n, copy, paths, restore_us, error))
        return FALSE;
    g_usleep(G_USEC_PER_SEC / 2); /* every VM runs a moment (its guest halts) */
    gint64 after = bench_pss_kib(c->daemon_pid, error);
    if (after < 0)
        return FALSE;
    *pss_per_vm_kib = (after - before) / (gint64)n;
    return delete_vms(c, paths, TRUE, error);
}

/* A pattern guest's snapshot with CLONE_PAGES pages of data, checked on the file. */
static gboolean clone_source(Client *c, const char *dir, gint64 *data_kib, GError **error)
{
    g_autofree char *cmdline = g_strdup_printf(
        "mode=pattern pages=%u every=1000000 delay=1000 verify=sample", CLONE_PAGES);
    g_autofree char *path = create_vm(c, "bench-clone-source", cmdline, error);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    GVariantBuilder opts;
    struct stat st;

    if (path == NULL || !vm_call(c, path, "Start", error))
        return FALSE;
    /*
     * It fills and checks its pages, then halts: 5.5 s of vCPU time on our kvm_pvm hosts, which
     * emulate guest kernel code (docs/kvm-hosts.md); less where it runs natively.
     */
    g_usleep(10 * G_USEC_PER_SEC);
    g_variant_builder_init(&opts, G_VARIANT_TYPE_VARDICT);
    g_autoptr(GVariant) snap =
        call(c, path, MVMD_VM, "Snapshot", g_variant_new("(sa{sv})", dir, &opts), error);
    if (snap == NULL || !vm_call(c, path, "Stop", error) || !vm_call(c, path, "Delete", error))
        return FALSE;
    if (stat(memory, &st) < 0 || st.st_blocks / 2 < CLONE_PAGES * 4) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                    "the snapshot holds %" G_GINT64_FORMAT " KiB, less than the guest's %u KiB "
                    "of pattern",
                    (gint64)st.st_blocks / 2, CLONE_PAGES * 4);
        return FALSE;
    }
    *data_kib = (gint64)st.st_blocks / 2;
    return TRUE;
}

static gboolean bench_clones(Client *c, guint n, GError **error)
{
    g_autoptr(GArray) clone_us = bench_samples_new(), copy_us = bench_samples_new();
    g_autofree char *dir = g_dir_make_tmp("microvmd-bench-XXXXXX", error);
    gint64 data_kib = 0, clone_kib = 0, copy_kib = 0;

    if (dir == NULL)
        return FALSE;
    gboolean ok = clone_source(c, dir, &data_kib, error) &&
                  fleet_of(c, dir, n, FALSE, clone_us, &clone_kib, error) &&
                  fleet_of(c, dir, n, TRUE, copy_us, &copy_kib, error);
    remove_snapshot_dir(dir);
    if (!ok)
        return FALSE;
    GString *json = g_string_new("{\"what\": \"clones\"");
    bench_json_int(json, "n", n);
    bench_json_int(json, "snapshot_data_kib", data_kib);
    bench_json_samples(json, "clone_restore_us", clone_us);
    bench_json_samples(json, "copy_restore_us", copy_us);
    bench_json_int(json, "clone_pss_kib", clone_kib);
    bench_json_int(json, "copy_pss_kib", copy_kib);
    bench_json_print(json);
    return TRUE;
}

static GDBusConnection *connect_bus(const char *address, GError **error)
{
    return g_dbus_connection_new_for_address_sync(
        address,
        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
            G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
        NULL, NULL, error);
}

static int cmd_dbus(char **argv)
{
    g_autoptr(GError) error = NULL;
    Client c = {
        .dest = MVMD_NAME,
        .kernel = argv[2],
        .daemon_pid = (int)g_ascii_strtoll(argv[1], NULL, 10),
        .reps = (guint)CLAMP(g_ascii_strtoull(argv[3], NULL, 10), 1, 100000),
    };
    guint n_defined = (guint)CLAMP(g_ascii_strtoull(argv[4], NULL, 10), 1, 100000);
    guint n_running = (guint)CLAMP(g_ascii_strtoull(argv[5], NULL, 10), 1, 10000);
    guint n_clones = (guint)CLAMP(g_ascii_strtoull(argv[6], NULL, 10), 1, 10000);

    c.bus = connect_bus(argv[0], &error);
    if (c.bus == NULL)
        return bench_fail("connecting to the bus", error);
    if (!bench_create_start(&c, &error))
        return bench_fail("CreateVM+Start", error);
    if (!bench_cycle(&c, &error))
        return bench_fail("Stop+Delete+CreateVM+Start", error);
    if (!bench_get_and_pause(&c, &error))
        return bench_fail("Get/Pause/Resume", error);
    if (!bench_managed_objects(&c, n_defined, &error))
        return bench_fail("GetManagedObjects", error);
    if (!bench_running(&c, n_running, &error))
        return bench_fail("running VMs", error);
    if (!bench_snapshot(&c, &error))
        return bench_fail("Snapshot/RestoreVM", error);
    /* The rows above stand without it: a failure here is the clones rows' alone. */
    if (!bench_clones(&c, n_clones, &error)) {
        g_autofree char *why = g_strescape(error->message, NULL);
        g_print("{\"what\": \"clones\", \"error\": \"%s\"}\n", why);
        g_clear_error(&error);
    }
    g_object_unref(c.bus);
    return 0;
}

/*
 * The same Pause/Resume rounds on microvmd's own socket: peer-to-peer D-Bus, no broker between
 * (the socket-activated path of data/microvmd.socket; destination NULL, as there is no bus).
 */
static int cmd_p2p(char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *address = g_strdup_printf("unix:path=%s", argv[0]);
    Client c = {
        .kernel = argv[1],
        .reps = (guint)CLAMP(g_ascii_strtoull(argv[2], NULL, 10), 1, 100000),
    };
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();
    g_autoptr(GArray) pause_idle_us = bench_samples_new(), resume_idle_us = bench_samples_new();

    c.bus = g_dbus_connection_new_for_address_sync(
        address, G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT, NULL, NULL, &error);
    if (c.bus == NULL)
        return bench_fail("connecting to the socket", error);
    if (!pause_one(&c, "bench-p2p-pause", "mode=compute iterations=1e13", NULL, pause_us, resume_us,
                   &error) ||
        !pause_one(&c, "bench-p2p-idle", "mode=idle", NULL, pause_idle_us, resume_idle_us, &error))
        return bench_fail("Pause/Resume over the socket", error);
    bench_print_samples("p2p_pause", "pause_us", pause_us, "resume_us", resume_us, "pause_idle_us",
                        pause_idle_us, "resume_idle_us", resume_idle_us, NULL);
    g_object_unref(c.bus);
    return 0;
}

/* ---- D-Bus: libvirt-dbus with libvirt's test driver (nothing runs: control plane only) ---- */

#define LIBVIRT_NAME   "org.libvirt"
#define LIBVIRT_TEST   "/org/libvirt/Test"
#define LIBVIRT_CONN   "org.libvirt.Connect"
#define LIBVIRT_DOMAIN "org.libvirt.Domain"

static char *define_domain(Client *c, const char *name, GError **error)
{
    g_autofree char *xml = g_strdup_printf(
        "<domain type='test'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>",
        name);
    g_autoptr(GVariant) reply =
        call(c, LIBVIRT_TEST, LIBVIRT_CONN, "DomainDefineXML", g_variant_new("(s)", xml), error);
    char *path = NULL;

    if (reply != NULL)
        g_variant_get(reply, "(o)", &path);
    return path;
}

static gboolean domain_call(Client *c, const char *path, const char *method, gboolean flags,
                            GError **error)
{
    g_autoptr(GVariant) reply =
        call(c, path, LIBVIRT_DOMAIN, method, flags ? g_variant_new("(u)", 0) : NULL, error);
    return reply != NULL;
}

/* Get, Suspend and Resume on one running test domain. */
static gboolean libvirt_get_pause(Client *c, const char *path, GArray *get_us, GArray *pause_us,
                                  GArray *resume_us, GError **error)
{
    for (guint i = 0; i < c->reps; i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GVariant) v = call(c, path, "org.freedesktop.DBus.Properties", "Get",
                                     g_variant_new("(ss)", LIBVIRT_DOMAIN, "Active"), error);
        if (v == NULL)
            return FALSE;
        gint64 t1 = g_get_monotonic_time();
        if (!domain_call(c, path, "Suspend", FALSE, error))
            return FALSE;
        gint64 t2 = g_get_monotonic_time();
        if (!domain_call(c, path, "Resume", FALSE, error))
            return FALSE;
        bench_samples_add(get_us, t1 - t0);
        bench_samples_add(pause_us, t2 - t1);
        bench_samples_add(resume_us, g_get_monotonic_time() - t2);
    }
    return TRUE;
}

static gboolean libvirt_define_create(Client *c, GError **error)
{
    g_autoptr(GArray) total_us = bench_samples_new(), get_us = bench_samples_new();
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();

    for (guint i = 0; i < c->reps; i++) {
        g_autofree char *name = g_strdup_printf("bench-cs-%u", i);
        gint64 t0 = g_get_monotonic_time();
        g_autofree char *path = define_domain(c, name, error);
        if (path == NULL || !domain_call(c, path, "Create", TRUE, error))
            return FALSE;
        bench_samples_add(total_us, g_get_monotonic_time() - t0);
        if (i == 0 && !libvirt_get_pause(c, path, get_us, pause_us, resume_us, error))
            return FALSE;
        if (!domain_call(c, path, "Destroy", TRUE, error) ||
            !domain_call(c, path, "Undefine", TRUE, error))
            return FALSE;
    }
    bench_print_samples("libvirt_create_start", "create_start_us", total_us, "get_us", get_us,
                        "pause_us", pause_us, "resume_us", resume_us, NULL);
    return TRUE;
}

/* libvirt-dbus has no ObjectManager: ListDomains is what a client calls to see every VM. */
static gboolean libvirt_list(Client *c, guint n, GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) list_us = bench_samples_new();

    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("bench-def-%04u", i);
        char *path = define_domain(c, name, error);
        if (path == NULL)
            return FALSE;
        g_ptr_array_add(paths, path);
    }
    for (guint i = 0; i < c->reps; i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GVariant) list =
            call(c, LIBVIRT_TEST, LIBVIRT_CONN, "ListDomains", g_variant_new("(u)", 0), error);
        if (list == NULL)
            return FALSE;
        bench_samples_add(list_us, g_get_monotonic_time() - t0);
    }
    for (guint i = 0; i < paths->len; i++)
        if (!domain_call(c, paths->pdata[i], "Undefine", TRUE, error))
            return FALSE;
    GString *json = g_string_new(NULL);
    bench_json_str(json, "what", "libvirt_list");
    bench_json_int(json, "n", n);
    bench_json_samples(json, "list_domains_us", list_us);
    bench_json_print(json);
    return TRUE;
}

static int cmd_libvirt(char **argv)
{
    g_autoptr(GError) error = NULL;
    Client c = {
        .dest = LIBVIRT_NAME,
        .reps = (guint)CLAMP(g_ascii_strtoull(argv[1], NULL, 10), 1, 100000),
    };
    guint n_defined = (guint)CLAMP(g_ascii_strtoull(argv[2], NULL, 10), 1, 100000);

    c.bus = connect_bus(argv[0], &error);
    if (c.bus == NULL)
        return bench_fail("connecting to the bus", error);
    if (!libvirt_define_create(&c, &error))
        return bench_fail("libvirt-dbus DomainDefineXML+Create", error);
    if (!libvirt_list(&c, n_defined, &error))
        return bench_fail("libvirt-dbus ListDomains", error);
    g_object_unref(c.bus);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (g_str_equal(cmd, "qmp-pause") && argc == 4)
        return cmd_qmp_pause(argv[2], (guint)CLAMP(g_ascii_strtoull(argv[3], NULL, 10), 1, 100000));
    if (g_str_equal(cmd, "qmp-migrate") && argc == 4)
        return cmd_qmp_migrate(argv[2], argv[3], TRUE);
    if (g_str_equal(cmd, "qmp-incoming") && argc == 4)
        return cmd_qmp_migrate(argv[2], argv[3], FALSE);
    if (g_str_equal(cmd, "dbus") && argc == 9)
        return cmd_dbus(argv + 2);
    if (g_str_equal(cmd, "p2p") && argc == 5)
        return cmd_p2p(argv + 2);
    if (g_str_equal(cmd, "libvirt") && argc == 5)
        return cmd_libvirt(argv + 2);
    g_printerr(
        "usage: bench-client qmp-pause SOCKET REPS | qmp-migrate SOCKET FILE |"
        " qmp-incoming SOCKET FILE | dbus ADDRESS PID KERNEL REPS N_DEFINED N_RUNNING N_CLONES |"
        " p2p SOCKET KERNEL REPS |"
        " libvirt ADDRESS REPS N_DEFINED\n");
    return 2;
}
