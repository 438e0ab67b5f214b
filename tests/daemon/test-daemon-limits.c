/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmd under a low descriptor limit: it raises its soft limit to the hard one at start,
 * and a start that runs out of descriptors fails that one call with NoResources while the
 * daemon and the guests already running go on. Real guests (tests/testguest/testguest.elf,
 * mode=idle); the KVM tests skip without a usable /dev/kvm.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "harness.h"

#define ERR "org.microvmd.MicroVM1.Error."
/* Nested KVM emulates guest kernel code: be generous. */
#define CALL_TIMEOUT_MS (60 * 1000)
/*
 * Both limits of the exhaustion test: a few dozen idle guests fit, not a hundred. A start
 * takes several descriptors (KVM VM and vCPU, guest memory, the kernel, the console log, the
 * definition): one test for each of as many limits in a row, so that the last descriptor runs
 * out at each step in turn.
 */
#define LOW_NOFILE    96
#define N_LOW_NOFILES 8
/* More than LOW_NOFILE descriptors could ever hold: reaching it means no limit was hit. */
#define MAX_VMS 200

static const char *testguest;

/* The "Max open files" soft and hard limits of /proc/PID/limits. */
static void read_nofile_limits(GPid pid, guint64 *soft, guint64 *hard)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/limits", pid);
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    const char *line;
    char *end;

    g_file_get_contents(path, &text, NULL, &error);
    g_assert_no_error(error);
    line = strstr(text, "Max open files");
    g_assert_nonnull(line);
    *soft = g_ascii_strtoull(line + strlen("Max open files"), &end, 10);
    *hard = g_ascii_strtoull(end, NULL, 10);
}

static void test_raises_soft_limit(void)
{
    g_autoptr(MvmdTestBus) bus = NULL;
    struct rlimit own;
    guint64 soft, hard;

    if (g_getenv("MVMD_TEST_DAEMON_WRAPPER")) {
        g_test_skip("the daemon runs under a wrapper that keeps descriptors of its own");
        return;
    }
    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &own), ==, 0);
    if (own.rlim_max <= 256) {
        g_test_skip("the hard descriptor limit here is too low to start below it");
        return;
    }
    bus = mvmd_test_bus_new();
    bus->daemon_nofile_soft = 256;
    bus->daemon_nofile_hard = MIN(own.rlim_max, 4096);
    mvmd_test_bus_start_daemon(bus, NULL);
    read_nofile_limits(bus->daemon_pid, &soft, &hard);
    g_assert_cmpuint(hard, ==, bus->daemon_nofile_hard);
    g_assert_cmpuint(soft, ==, hard);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

/* ---- out of descriptors ------------------------------------------------------------------ */

/* CreateVM of an idle guest with @kernel ("'kernel': <...>" or the like) and @fds. */
static MvmdVm *try_create_full(MvmdTestBus *bus, MvmdManager *manager, const char *name,
                               const char *kernel, GUnixFDList *fds, GError **error)
{
    g_autofree char *text =
        g_strdup_printf("{%s, 'cmdline': <'mode=idle'>, 'memory-mib': <uint64 16>}", kernel);
    g_autofree char *path = NULL;

    if (!mvmd_manager_call_create_vm_sync(manager, name, mvmd_test_config(text),
                                          G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS, fds, &path, NULL,
                                          NULL, error))
        return NULL;
    return mvmd_test_bus_vm(bus, NULL, path);
}

/* The same with the kernel as a path; NULL with @error set when the call fails. */
static MvmdVm *try_create(MvmdTestBus *bus, MvmdManager *manager, const char *name, GError **error)
{
    g_autofree char *kernel = g_strdup_printf("'kernel': <'%s'>", testguest);

    return try_create_full(bus, manager, name, kernel, NULL, error);
}

static gboolean try_call(MvmdVm *vm, const char *method, GError **error)
{
    g_autoptr(GVariant) reply = g_dbus_proxy_call_sync(
        G_DBUS_PROXY(vm), method, NULL, G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS, NULL, error);

    return reply != NULL;
}

static void call_ok(MvmdVm *vm, const char *method)
{
    g_autoptr(GError) error = NULL;

    try_call(vm, method, &error);
    g_assert_no_error(error);
}

/* Asked of the daemon now, not from a proxy's cache: it answers, and says this. */
static char *get_state(MvmdTestBus *bus, MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        bus->connection, "org.microvmd.MicroVM1", g_dbus_proxy_get_object_path(G_DBUS_PROXY(vm)),
        "org.freedesktop.DBus.Properties", "Get",
        g_variant_new("(ss)", "org.microvmd.MicroVM1.VM", "State"), G_VARIANT_TYPE("(v)"),
        G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS, NULL, &error);
    g_autoptr(GVariant) value = NULL;

    g_assert_no_error(error);
    g_variant_get(reply, "(v)", &value);
    return g_variant_dup_string(value, NULL);
}

static guint count_managed_objects(MvmdTestBus *bus)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        bus->connection, "org.microvmd.MicroVM1", "/org/microvmd/MicroVM1",
        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
        G_VARIANT_TYPE("(a{oa{sa{sv}}})"), G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS, NULL, &error);
    g_autoptr(GVariant) objects = NULL;

    g_assert_no_error(error);
    objects = g_variant_get_child_value(reply, 0);
    return (guint)g_variant_n_children(objects);
}

/*
 * Creates and starts guests one after another, as a user would, until a call fails; returns
 * that call's error. The guests that started are added to @running.
 */
static GError *start_until_failure(MvmdTestBus *bus, MvmdManager *manager, GPtrArray *running,
                                   MvmdVm **failed, guint limit)
{
    for (guint i = 0; i < MAX_VMS; i++) {
        g_autofree char *name = g_strdup_printf("vm%03u", i);
        GError *error = NULL;
        g_autoptr(MvmdVm) vm = try_create(bus, manager, name, &error);

        if (vm == NULL)
            return error;
        if (!try_call(vm, "Start", &error)) {
            *failed = g_steal_pointer(&vm);
            return error;
        }
        g_ptr_array_add(running, g_steal_pointer(&vm));
    }
    g_error("%d guests started under a limit of %u descriptors: no call failed", MAX_VMS, limit);
}

/* The daemon and every guest that was running go on as before. */
static void assert_unharmed(MvmdTestBus *bus, GPtrArray *running, guint n_defined)
{
    g_assert_true(mvmd_test_bus_daemon_alive(bus));
    /* The ObjectManager lists every VM (the Manager at its own path is not among them). */
    g_assert_cmpuint(count_managed_objects(bus), ==, n_defined);
    for (guint i = 0; i < running->len; i++) {
        g_autofree char *state = get_state(bus, running->pdata[i]);
        g_autofree char *reason = NULL;

        if (g_strcmp0(state, "running") != 0)
            mvmd_vm_call_get_exit_reason_sync(running->pdata[i], G_DBUS_CALL_FLAGS_NONE, -1,
                                              &reason, NULL, NULL);
        /* A guest that did not survive says why, in the assertion itself. */
        g_assert_cmpstr(reason != NULL ? reason : state, ==, "running");
    }
}

/* The daemon with @limit descriptors, soft and hard; its Manager. */
static MvmdManager *start_daemon_at(MvmdTestBus *bus, guint limit)
{
    bus->daemon_nofile_soft = bus->daemon_nofile_hard = limit;
    mvmd_test_bus_start_daemon(bus, (const char *const[]){"--shutdown-timeout=1", NULL});
    return mvmd_test_bus_manager(bus, NULL);
}

static void test_out_of_descriptors(gconstpointer data)
{
    guint limit = GPOINTER_TO_UINT(data);
    g_autoptr(MvmdTestBus) bus = mvmd_test_bus_new();
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(GPtrArray) running = g_ptr_array_new_with_free_func(g_object_unref);
    g_autoptr(MvmdVm) failed = NULL;
    g_autoptr(MvmdVm) again = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GError) again_error = NULL;
    g_autofree char *state = NULL;

    manager = start_daemon_at(bus, limit);

    error = start_until_failure(bus, manager, running, &failed, limit);
    g_test_message("%u guests running when a call failed: %s", running->len, error->message);
    g_assert_cmpuint(running->len, >=, 2);
    mvmd_test_assert_dbus_error(error, ERR "NoResources");
    /* The message names what ran out: the descriptors, in strerror's words. */
    g_assert_nonnull(strstr(error->message, g_strerror(EMFILE)));
    assert_unharmed(bus, running, running->len + (failed != NULL));

    /*
     * Room again once guests are gone. Two: at its peak a start holds the kernel file twice
     * (the daemon's fd and the library's copy) besides what a running guest keeps.
     */
    if (failed)
        call_ok(failed, "Delete");
    for (guint i = 0; i < 2; i++) {
        call_ok(running->pdata[0], "Stop");
        call_ok(running->pdata[0], "Delete");
        g_ptr_array_remove_index(running, 0);
    }
    again = try_create(bus, manager, "again", &again_error);
    g_assert_no_error(again_error);
    call_ok(again, "Start");
    state = get_state(bus, again);
    g_assert_cmpstr(state, ==, "running");
    assert_unharmed(bus, running, running->len + 1);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

/* ---- at the limit ------------------------------------------------------------------------ */

/* The @nth lowest descriptor number @pid has free (0: the next one it would get). */
static int free_fd(GPid pid, guint nth)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", pid);
    g_autoptr(GHashTable) open_fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;
    int fd = 0;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir)))
        g_hash_table_add(open_fds, g_strdup(name));
    for (;; fd++) {
        g_autofree char *number = g_strdup_printf("%d", fd);

        if (!g_hash_table_contains(open_fds, number) && nth-- == 0)
            return fd;
    }
}

#define ROOM_ANY -1

/*
 * Lets the daemon open @room more descriptors (the soft limit at the free one after them), or
 * any again.
 */
static void set_daemon_room(MvmdTestBus *bus, int room)
{
    struct rlimit limit = {.rlim_max = bus->daemon_nofile_hard};

    limit.rlim_cur = room == ROOM_ANY ? limit.rlim_max : (rlim_t)free_fd(bus->daemon_pid, room);
    g_assert_cmpint(prlimit(bus->daemon_pid, RLIMIT_NOFILE, &limit, NULL), ==, 0);
}

/* The kernel as handle 0 of a new list. */
static GUnixFDList *kernel_fd_list(void)
{
    GUnixFDList *fds = g_unix_fd_list_new();
    int fd = open(testguest, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
    close(fd);
    return fds;
}

static void assert_no_resources(GError *error, const char *resource)
{
    g_test_message("%s", error->message);
    mvmd_test_assert_dbus_error(error, ERR "NoResources");
    if (!strstr(error->message, resource))
        g_error("'%s' is not in the message: %s", resource, error->message);
}

/*
 * Every call that needs a new descriptor, made while the daemon has none left: each answers
 * NoResources and names the resource; the rest of the daemon goes on, and once there is room
 * again the same calls succeed.
 */
static void test_at_the_limit(void)
{
    g_autoptr(MvmdTestBus) bus = mvmd_test_bus_new();
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(GPtrArray) running = g_ptr_array_new_with_free_func(g_object_unref);
    g_autoptr(MvmdVm) created = NULL;
    g_autoptr(MvmdVm) by_fd = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) console = NULL;
    g_autoptr(GUnixFDList) fds = kernel_fd_list();
    g_autofree char *persistent = g_strdup_printf("'kernel': <'%s'>, 'persist': <true>", testguest);

    manager = start_daemon_at(bus, 256);
    g_ptr_array_add(running, try_create(bus, manager, "running", &error));
    g_assert_no_error(error);
    call_ok(running->pdata[0], "Start");
    created = try_create(bus, manager, "created", &error);
    g_assert_no_error(error);

    set_daemon_room(bus, 0);
    /* GDBus gets the message without its descriptor (the kernel had nowhere to put it). */
    g_assert_null(try_create_full(bus, manager, "by-fd", "'kernel-fd': <handle 0>", fds, &error));
    assert_no_resources(error, "file descriptors");
    g_clear_error(&error);
    /* A persistent definition is written to a new file. */
    g_assert_null(try_create_full(bus, manager, "persistent", persistent, NULL, &error));
    assert_no_resources(error, g_strerror(EMFILE));
    g_clear_error(&error);
    /* The kernel file is opened, KVM asked for a VM... */
    g_assert_false(try_call(created, "Start", &error));
    assert_no_resources(error, g_strerror(EMFILE));
    g_clear_error(&error);
    /* A console is a new socket pair. */
    g_assert_false(mvmd_vm_call_open_console_sync(running->pdata[0], G_DBUS_CALL_FLAGS_NONE,
                                                  CALL_TIMEOUT_MS, NULL, &console, NULL, NULL,
                                                  &error));
    assert_no_resources(error, g_strerror(EMFILE));
    g_clear_error(&error);
    assert_unharmed(bus, running, 2);

    set_daemon_room(bus, ROOM_ANY);
    by_fd = try_create_full(bus, manager, "by-fd", "'kernel-fd': <handle 0>", fds, &error);
    g_assert_no_error(error);
    call_ok(created, "Start");
    g_ptr_array_add(running, g_object_ref(created));
    assert_unharmed(bus, running, 3);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

/* ---- the file system of a caller's file ------------------------------------------------- */

static guint count_daemon_fds(MvmdTestBus *bus)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", bus->daemon_pid);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    guint n = 0;

    g_assert_nonnull(dir);
    while (g_dir_read_name(dir))
        n++;
    return n;
}

/* The descriptors of a refused call are closed after its answer (fd-closer.h): wait for that. */
static void wait_daemon_fds(MvmdTestBus *bus, guint n)
{
    mvmd_test_wait_until(count_daemon_fds(bus) == n, CALL_TIMEOUT_MS);
}

/* A new file in the test's directory, as handle 0 of a new list. */
static GUnixFDList *new_file_fd_list(MvmdTestBus *bus)
{
    g_autofree char *path = g_build_filename(bus->tmpdir, "image", NULL);
    g_autoptr(GError) error = NULL;
    GUnixFDList *fds = g_unix_fd_list_new();
    int fd;

    g_file_set_contents(path, "not read before Start", -1, &error);
    g_assert_no_error(error);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
    close(fd);
    return fds;
}

/*
 * A caller's file is checked against the daemon's mount table (never FUSE; a disk image on a
 * local file system), which takes a descriptor to read. With room for the message's descriptor
 * and the daemon's copy of it but not for that, the call answers NoResources: the file is not
 * taken unchecked (a kernel), nor said to be on a file system the daemon does not see (a disk).
 */
static void test_mount_table_unread(void)
{
    g_autoptr(MvmdTestBus) bus = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(GUnixFDList) fds = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GError) error = NULL;
    const char *disk = "'kernel': <'/nonexistent/kernel'>, 'disks': <[{'fd': <handle 0>}]>";
    guint idle_fds;

    if (g_getenv("MVMD_TEST_DAEMON_WRAPPER")) {
        g_test_skip("the daemon runs under a wrapper that opens descriptors of its own");
        return;
    }
    bus = mvmd_test_bus_new();
    manager = start_daemon_at(bus, 256);
    fds = new_file_fd_list(bus);
    idle_fds = count_daemon_fds(bus);

    set_daemon_room(bus, 2);
    g_assert_null(try_create_full(bus, manager, "kernel", "'kernel-fd': <handle 0>", fds, &error));
    assert_no_resources(error, g_strerror(EMFILE));
    g_clear_error(&error);
    set_daemon_room(bus, ROOM_ANY);
    wait_daemon_fds(bus, idle_fds);

    set_daemon_room(bus, 2);
    g_assert_null(try_create_full(bus, manager, "disk", disk, fds, &error));
    assert_no_resources(error, g_strerror(EMFILE));
    g_clear_error(&error);
    set_daemon_room(bus, ROOM_ANY);

    g_assert_true(mvmd_test_bus_daemon_alive(bus));
    vm = try_create_full(bus, manager, "kernel", "'kernel-fd': <handle 0>", fds, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

/* ---- Reload ------------------------------------------------------------------------------ */

/*
 * Reload drops a stored VM whose definition file is gone: out of descriptors it cannot tell.
 * With no room (for microvmd.conf) and with room for the state directory but not for a
 * definition in it, Reload answers NoResources and the VM stays; with room again it reloads.
 */
static void test_reload_out_of_descriptors(void)
{
    g_autoptr(MvmdTestBus) bus = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GError) error = NULL;

    if (g_getenv("MVMD_TEST_DAEMON_WRAPPER")) {
        g_test_skip("the daemon runs under a wrapper that opens descriptors of its own");
        return;
    }
    bus = mvmd_test_bus_new();
    manager = start_daemon_at(bus, 256);
    vm = try_create_full(bus, manager, "stored", "'kernel': <'/k'>, 'persist': <true>", NULL,
                         &error);
    g_assert_no_error(error);
    for (int room = 0; room <= 1; room++) {
        set_daemon_room(bus, room);
        g_assert_false(mvmd_manager_call_reload_sync(manager, G_DBUS_CALL_FLAGS_NONE,
                                                     CALL_TIMEOUT_MS, NULL, &error));
        set_daemon_room(bus, ROOM_ANY);
        assert_no_resources(error, g_strerror(EMFILE));
        g_clear_error(&error);
        g_assert_cmpuint(count_managed_objects(bus), ==, 1);
    }
    g_assert_true(mvmd_manager_call_reload_sync(manager, G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS,
                                                NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(count_managed_objects(bus), ==, 1);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

/* ---- the watchdog ---------------------------------------------------------------------- */

/* $NOTIFY_SOCKET as systemd makes it: a datagram socket bound at DIR/notify. */
static int bind_notify_socket(MvmdTestBus *bus)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    bus->daemon_notify_socket = g_build_filename(bus->tmpdir, "notify", NULL);
    g_assert_cmpuint(strlen(bus->daemon_notify_socket), <, sizeof(addr.sun_path));
    strcpy(addr.sun_path, bus->daemon_notify_socket);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

/* Reads the notifications queued now. */
static void drain_notifications(int fd)
{
    char buf[4096];

    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
        ;
}

/* Waits for the next WATCHDOG=1, reading what comes before it. */
static void wait_watchdog_ping(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[4096];
    ssize_t n;

    do {
        if (poll(&pfd, 1, CALL_TIMEOUT_MS) != 1)
            g_error("no WATCHDOG=1 within %d s", CALL_TIMEOUT_MS / 1000);
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        g_assert_cmpint(n, >=, 0);
        buf[n] = '\0';
    } while (!strstr(buf, "WATCHDOG=1"));
}

/*
 * A daemon out of descriptors still pings the service manager's watchdog: a daemon that
 * stops pinging for WatchdogSec= is killed with every guest in it. Two pings, to be sure the
 * second was sent with no room (a ping started before the limit may end after the drain).
 */
static void test_watchdog_at_the_limit(void)
{
    g_autoptr(MvmdTestBus) bus = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    int notify_fd;

    if (g_getenv("MVMD_TEST_DAEMON_WRAPPER")) {
        g_test_skip("the daemon runs under a wrapper that opens descriptors of its own");
        return;
    }
    bus = mvmd_test_bus_new();
    notify_fd = bind_notify_socket(bus);
    /* A ping every second (half of it); any watchdog of whoever runs the tests is not ours. */
    g_setenv("WATCHDOG_USEC", "2000000", TRUE);
    g_unsetenv("WATCHDOG_PID");
    manager = start_daemon_at(bus, 256);
    g_unsetenv("WATCHDOG_USEC");

    set_daemon_room(bus, 0);
    drain_notifications(notify_fd);
    wait_watchdog_ping(notify_fd);
    wait_watchdog_ping(notify_fd);
    g_assert_true(mvmd_test_bus_daemon_alive(bus));
    set_daemon_room(bus, ROOM_ANY);
    drain_notifications(notify_fd);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
    close(notify_fd);
}

/* ---- out of memory ----------------------------------------------------------------------- */

/* kB of the "VmSize:" line of /proc/PID/status: the address space the daemon maps. */
static guint64 vm_size_kb(GPid pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *text = NULL;
    const char *line;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    line = strstr(text, "VmSize:");
    g_assert_nonnull(line);
    return g_ascii_strtoull(line + strlen("VmSize:"), NULL, 10);
}

/* Leaves the daemon @room_kb of address space more than it maps now (0: no limit). */
static void set_daemon_address_space(MvmdTestBus *bus, guint64 room_kb)
{
    struct rlimit limit = {RLIM_INFINITY, RLIM_INFINITY};

    if (room_kb > 0)
        limit.rlim_cur = (vm_size_kb(bus->daemon_pid) + room_kb) * 1024;
    g_assert_cmpint(prlimit(bus->daemon_pid, RLIMIT_AS, &limit, NULL), ==, 0);
}

/*
 * A start without the address space it needs (RLIMIT_AS): with room for no new thread (8 MiB
 * of stack), then with room for the thread but not for the guest's 16 MiB. Each answers
 * NoResources naming what ran out; with room again the start succeeds. (The first start
 * must be the daemon's first operation: glibc keeps the stacks of ended threads for new ones.)
 */
static void test_out_of_memory(void)
{
    g_autoptr(MvmdTestBus) bus = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(GPtrArray) running = g_ptr_array_new_with_free_func(g_object_unref);
    g_autoptr(GError) error = NULL;

    if (g_getenv("ASAN_OPTIONS") || g_getenv("MVMD_TEST_DAEMON_WRAPPER")) {
        g_test_skip("the sanitizers and wrappers map terabytes of their own");
        return;
    }
    bus = mvmd_test_bus_new();
    manager = start_daemon_at(bus, 256);
    g_ptr_array_add(running, try_create(bus, manager, "vm", &error));
    g_assert_no_error(error);
    set_daemon_address_space(bus, 1024);
    g_assert_false(try_call(running->pdata[0], "Start", &error));
    assert_no_resources(error, "out of memory or threads");
    g_clear_error(&error);
    set_daemon_address_space(bus, 12 * 1024);
    g_assert_false(try_call(running->pdata[0], "Start", &error));
    assert_no_resources(error, g_strerror(ENOMEM));
    g_clear_error(&error);
    set_daemon_address_space(bus, 0);
    call_ok(running->pdata[0], "Start");
    assert_unharmed(bus, running, 1);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(bus, 60), ==, 0);
}

int main(int argc, char **argv)
{
    g_autofree char *kvm_unusable = NULL;

    g_test_init(&argc, &argv, NULL);
    if (!g_getenv("MICROVMD")) {
        g_printerr("SKIP: MICROVMD is not set (run through meson test)\n");
        return 77;
    }
    testguest = g_getenv("MVM_TESTGUEST");
    g_test_add_func("/daemon-limits/raises-soft-limit", test_raises_soft_limit);
    g_test_add_func("/daemon-limits/mount-table-unread", test_mount_table_unread);
    g_test_add_func("/daemon-limits/reload-out-of-descriptors", test_reload_out_of_descriptors);
    g_test_add_func("/daemon-limits/watchdog-at-the-limit", test_watchdog_at_the_limit);
    kvm_unusable = kvm_device_unusable();
    if (kvm_unusable || !testguest || !g_file_test(testguest, G_FILE_TEST_EXISTS)) {
        g_test_message("no usable /dev/kvm or no test guest: the KVM tests are left out");
        return g_test_run();
    }
    for (guint limit = LOW_NOFILE; limit < LOW_NOFILE + N_LOW_NOFILES; limit++) {
        g_autofree char *path = g_strdup_printf("/daemon-limits/out-of-descriptors/%u", limit);

        g_test_add_data_func(path, GUINT_TO_POINTER(limit), test_out_of_descriptors);
    }
    g_test_add_func("/daemon-limits/at-the-limit", test_at_the_limit);
    g_test_add_func("/daemon-limits/out-of-memory", test_out_of_memory);
    return g_test_run();
}
