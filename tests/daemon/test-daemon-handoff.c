/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A restart that hands the running VMs to the next microvmd (daemon/handoff.h), with this test
 * standing in for systemd: it holds the notification socket ($NOTIFY_SOCKET) where the daemon
 * pushes its descriptors (FDSTORE=1, FDNAME=), keeps them as systemd's store would, and starts
 * the next daemon with them ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID), as systemd passes a
 * store. tests/systemd/ does the same under the real systemd. The guests are the pattern test
 * guest (tests/testguest/README.md), whose count lives in its memory: a guest handed over goes
 * on counting, and one that booted again would start over. Needs a usable /dev/kvm (else 77).
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include "harness.h"

#define ERR     "org.microvmd.MicroVM1.Error."
#define PATTERN "pattern pages=64 base_mib=8 every=20 delay=2000"
/* daemon/daemon.h: the exit status after SIGUSR1 handed the VMs over. */
#define EXIT_HANDED_OVER 75

static const char *testguest;
static const char *daemon_log; /* the fixture's, for a failure's diagnosis */

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
    MvmdTestFdStore *systemd; /* systemd's side: harness.h */
} Fixture;

/* Waits until the daemon's last message was read: a round of the thread after it was sent. */
static void receive_all(MvmdTestFdStore *s)
{
    g_usleep(200 * 1000);
    mvmd_test_fd_store_drain(s);
}

/* ---- the daemon ---------------------------------------------------------------------------- */

static void start_daemon(Fixture *f, const char *extra)
{
    const char *const args[] = {"--shutdown-timeout=2", extra, NULL};

    mvmd_test_bus_start_daemon(f->bus, args);
    g_clear_object(&f->manager);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->bus = mvmd_test_bus_new();
    f->bus->daemon_log = g_build_filename(f->bus->tmpdir, "daemon.log", NULL);
    daemon_log = f->bus->daemon_log;
    f->systemd = mvmd_test_fd_store_new(f->bus->tmpdir);
    f->bus->daemon_notify_socket = g_strdup(mvmd_test_fd_store_path(f->systemd));
    start_daemon(f, "--fd-store");
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_clear_object(&f->manager);
    if (f->bus->daemon_pid > 0)
        g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    g_clear_pointer(&f->bus->daemon_listen_fds, g_array_unref);
    g_clear_pointer(&f->bus->daemon_listen_names, g_ptr_array_unref);
    mvmd_test_bus_free(f->bus);
    mvmd_test_fd_store_free(f->systemd);
}

/* SIGUSR1: hand over, exit 75. The stand-in then holds what was pushed. */
static void hand_over(Fixture *f)
{
    int status;

    g_clear_object(&f->manager);
    g_assert_cmpint(kill(f->bus->daemon_pid, SIGUSR1), ==, 0);
    g_assert_cmpint(waitpid(f->bus->daemon_pid, &status, 0), ==, f->bus->daemon_pid);
    f->bus->daemon_pid = 0;
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, EXIT_HANDED_OVER);
    receive_all(f->systemd);
}

/* The store, as systemd gives it to the next daemon it starts. */
static void pass_store(Fixture *f)
{
    mvmd_test_fd_store_pass(f->systemd, f->bus);
    /* What the kernel takes as one environment string (systemd passes the names so). */
    for (guint i = 0, len = 0; i < f->bus->daemon_listen_names->len; i++) {
        len += strlen(f->bus->daemon_listen_names->pdata[i]) + 1;
        g_assert_cmpuint(len, <, 128 * 1024);
    }
}

/* The next daemon, given the store as systemd gives it. */
static void start_next_daemon(Fixture *f)
{
    pass_store(f);
    start_daemon(f, "--fd-store");
}

/* ---- helpers -------------------------------------------------------------------------------- */

static MvmdVm *create_counter(Fixture *f, const char *name, const char *extra)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *text = g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=" PATTERN "'>,"
                                            " 'memory-mib': <uint64 32>%s%s}",
                                            testguest, extra ? ", " : "", extra ? extra : "");

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

static MvmdVm *vm_by_name(Fixture *f, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_get_vm_by_name_sync(f->manager, name, G_DBUS_CALL_FLAGS_NONE, -1, &path, NULL,
                                          &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

static char *read_file(const char *path)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;

    g_file_get_contents(path, &text, NULL, &error);
    g_assert_no_error(error);
    return g_steal_pointer(&text);
}

static guint count_substrings(const char *text, const char *needle)
{
    guint n = 0;

    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static char *console_log(Fixture *f, const char *name)
{
    g_autofree char *path = g_build_filename(f->bus->runtime_dir, "vm", name, "console.log", NULL);

    return read_file(path);
}

/*
 * The guest counts on from where it was, past @before (a new daemon's console has no replay of
 * the last one's: its first count is a new one).
 */
static gint64 check_counts_on(MvmdVm *vm, gint64 before)
{
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    gint64 count = mvmd_test_console_next_counter(c);

    g_test_message("count %" G_GINT64_FORMAT " after the handoff, %" G_GINT64_FORMAT " before",
                   count, before);
    if (count <= before) {
        g_autofree char *log = NULL;

        /* Seen once in many nested runs: what the daemons said, for the next time. */
        g_file_get_contents(daemon_log, &log, NULL, NULL);
        g_printerr("the daemons' log:\n%s\nthe console:\n%s\n", log ? log : "(none)", c->seen->str);
    }
    g_assert_cmpint(count, >, before);
    mvmd_test_console_close(c);
    return count;
}

/* A count the guest printed (two read: it has been counting for a while). */
static gint64 some_count(MvmdVm *vm)
{
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    gint64 count;

    mvmd_test_console_next_counter(c);
    count = mvmd_test_console_next_counter(c);
    mvmd_test_console_close(c);
    return count;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/*
 * Two transient VMs by descriptors: the kernel as `kernel-fd`, one descriptor for both (as an
 * orchestrator that opens the kernel once may pass it), and a disk as `fd` each.
 */
static void create_by_fds(Fixture *f, const char *name, int kernel_fd)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autofree char *disk = g_build_filename(f->bus->tmpdir, name, NULL);
    g_autofree char *text = NULL, *path = NULL;
    g_autoptr(GError) error = NULL;
    int kernel, disk_fd;

    g_assert_true(g_file_set_contents(disk, "", 0, NULL));
    g_assert_cmpint(truncate(disk, 1024 * 1024), ==, 0);
    kernel = g_unix_fd_list_append(fds, kernel_fd, &error);
    g_assert_no_error(error);
    disk_fd = mvmd_test_fd_list_append_file(fds, disk, O_RDWR);
    text = g_strdup_printf("{'kernel-fd': <@h %d>, 'cmdline': <'mode=idle'>,"
                           " 'disks': <[{'fd': <@h %d>}]>}",
                           kernel, disk_fd);
    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, fds, &path, NULL, NULL, &error);
    g_assert_no_error(error);
}

/*
 * Of the two VMs by descriptors, the one handed over (whichever went first: the other shares its
 * kernel's open file, which systemd's store keeps once): its definition still holds its
 * descriptors, and it starts again from them.
 */
static void check_by_fds_carried(Fixture *f)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) disks = NULL;
    gboolean passed = FALSE;

    mvmd_manager_call_get_vm_by_name_sync(f->manager, "by-fd", G_DBUS_CALL_FLAGS_NONE, -1, &path,
                                          NULL, &error);
    if (error) {
        g_clear_error(&error);
        mvmd_manager_call_get_vm_by_name_sync(f->manager, "by-fd-too", G_DBUS_CALL_FLAGS_NONE, -1,
                                              &path, NULL, &error);
    }
    g_assert_no_error(error);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    mvmd_test_vm_wait_state(vm, "running");
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "kernel-fd-passed", "b", &passed));
    g_assert_true(passed);
    disks = g_variant_lookup_value(mvmd_test_vm_config(vm), "disks", G_VARIANT_TYPE("aa{sv}"));
    g_assert_nonnull(disks);
    g_assert_cmpuint(g_variant_n_children(disks), ==, 1);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_vm_wait_state(vm, "running");
}

/*
 * A running transient VM and a paused persistent one are handed over and come back as they
 * were: same objects, the running one counting on with its memory intact, the paused one still
 * paused until resumed; every stored descriptor is taken out of the store at once. Of two VMs
 * whose definitions hold their callers' descriptors, one is handed over with them; the other,
 * whose kernel is the same open file, is shut down, as without a store.
 */
static void test_running_and_paused(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) runner = create_counter(f, "runner", NULL);
    g_autoptr(MvmdVm) sleeper = create_counter(f, "sleeper", "'persist': <true>");
    g_autofree char *runner_uuid = g_strdup(mvmd_vm_get_uuid(runner));
    g_autofree char *prefix = NULL, *log = NULL;
    gint64 before, sleeper_before;
    int kernel = open(testguest, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(kernel, >=, 0);
    create_by_fds(f, "by-fd", kernel);
    create_by_fds(f, "by-fd-too", kernel);
    close(kernel);
    mvmd_test_vm_call_ok(runner, "Start", NULL);
    mvmd_test_vm_call_ok(sleeper, "Start", NULL);
    {
        g_autoptr(MvmdVm) by_fd = vm_by_name(f, "by-fd");
        g_autoptr(MvmdVm) by_fd_too = vm_by_name(f, "by-fd-too");

        mvmd_test_vm_call_ok(by_fd, "Start", NULL);
        mvmd_test_vm_call_ok(by_fd_too, "Start", NULL);
    }
    before = some_count(runner);
    sleeper_before = some_count(sleeper);
    mvmd_test_vm_call_ok(sleeper, "Pause", g_variant_new_parsed("(@a{sv} {},)"));
    g_clear_object(&runner);
    g_clear_object(&sleeper);

    hand_over(f);
    /* state, memory, def for each of the two; and disk0 and fd0 (the kernel) for one by fd. */
    prefix = g_strdup_printf("mvmd.%s.", mvmd_test_fd_store_vm_index(f->systemd, "runner"));
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, prefix), ==, 3);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 11);
    g_assert_cmpuint(mvmd_test_fd_store_dropped(f->systemd), ==, 0);
    log = read_file(f->bus->daemon_log);
    g_assert_cmpuint(count_substrings(log, "which systemd's store keeps once"), ==, 1);

    start_next_daemon(f);
    runner = vm_by_name(f, "runner");
    sleeper = vm_by_name(f, "sleeper");
    mvmd_test_vm_wait_state(runner, "running");
    mvmd_test_vm_wait_state(sleeper, "paused");
    g_assert_cmpstr(mvmd_vm_get_uuid(runner), ==, runner_uuid);
    /* Out of the store before the guests ran again, every one of them. */
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_removed(f->systemd), ==, 11);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
    /* The transient VM not handed over is gone with the daemon that had it. */
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 3);

    check_counts_on(runner, before);
    g_clear_pointer(&log, g_free);
    log = console_log(f, "runner");
    g_assert_cmpuint(count_substrings(log, "TESTGUEST pattern start"), ==, 1);
    g_assert_null(strstr(log, "FAIL"));
    mvmd_test_vm_call_ok(sleeper, "Resume", NULL);
    check_counts_on(sleeper, sleeper_before);
    mvmd_test_vm_call_ok(sleeper, "Stop", NULL);
    check_by_fds_carried(f);
}

/*
 * Handed over twice in a row, with a disk: the second daemon's VM is as handable as any. Then a
 * plain SIGTERM (no restart) shuts it down as ever and pushes nothing.
 */
static void test_twice_then_stop(Fixture *f, gconstpointer data)
{
    g_autofree char *disk = g_build_filename(f->bus->tmpdir, "disk.img", NULL);
    g_autofree char *extra = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    gint64 count;

    g_assert_true(g_file_set_contents(disk, "", 0, NULL));
    g_assert_cmpint(truncate(disk, 1024 * 1024), ==, 0);
    extra = g_strdup_printf("'disks': <[{'path': <'%s'>}]>", disk);
    vm = create_counter(f, "twice", extra);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    count = some_count(vm);
    g_clear_object(&vm);
    for (int round = 0; round < 2; round++) {
        hand_over(f);
        g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 4); /* and disk0 */
        start_next_daemon(f);
        vm = vm_by_name(f, "twice");
        mvmd_test_vm_wait_state(vm, "running");
        count = check_counts_on(vm, count);
        g_clear_object(&vm);
        receive_all(f->systemd);
        g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
    }
    /* Not a restart (no systemd to say so): the guest is stopped, nothing is pushed. */
    g_clear_object(&f->manager);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
}

/*
 * @name's handed definition rewritten as another writer of the store might: its owner a user
 * who could not have given the kernel's path it names.
 */
static void forge_owner(Fixture *f, const char *name)
{
    g_autofree char *def =
        g_strdup_printf("mvmd.%s.def", mvmd_test_fd_store_vm_index(f->systemd, name));
    int old = mvmd_test_fd_store_take(f->systemd, def);
    g_autofree char *text = g_malloc0(65536);
    g_autofree char *forged = NULL;
    int fd = memfd_create("forged-def", MFD_CLOEXEC);
    g_auto(GStrv) parts = NULL;

    g_assert_cmpint(pread(old, text, 65535, 0), >, 0);
    close(old);
    parts = g_strsplit(text, "\nOwner=0\n", 2);
    g_assert_cmpuint(g_strv_length(parts), ==, 2);
    forged = g_strjoin("\nOwner=4242\n", parts[0], parts[1], NULL);
    g_assert_cmpint(write(fd, forged, strlen(forged)), ==, (ssize_t)strlen(forged));
    mvmd_test_fd_store_put(f->systemd, def, fd);
}

/*
 * What the next daemon cannot trust is refused per VM, its descriptors dropped from the store:
 * a state whose digest fails, a set without its `def` (a daemon that died mid-way), and a
 * definition naming a path its owner could not have given. The daemon lives on and the VM is
 * stopped, never resumed on wrong state.
 */
static void test_refused(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) good = create_counter(f, "good", "'persist': <true>");
    g_autoptr(MvmdVm) bad = create_counter(f, "bad", "'persist': <true>");
    g_autoptr(MvmdVm) forged = create_counter(f, "forged", NULL);
    g_autofree char *good_def = NULL, *bad_state = NULL, *log = NULL;
    guint8 byte;

    mvmd_test_vm_call_ok(good, "Start", NULL);
    mvmd_test_vm_call_ok(bad, "Start", NULL);
    mvmd_test_vm_call_ok(forged, "Start", NULL);
    some_count(good);
    some_count(bad);
    g_clear_object(&good);
    g_clear_object(&bad);
    g_clear_object(&forged);
    hand_over(f);
    forge_owner(f, "forged");
    good_def = g_strdup_printf("mvmd.%s.def", mvmd_test_fd_store_vm_index(f->systemd, "good"));
    bad_state = g_strdup_printf("mvmd.%s.state", mvmd_test_fd_store_vm_index(f->systemd, "bad"));
    /* A bit of the state flipped, and the good VM's def lost. */
    g_assert_cmpint(pread(mvmd_test_fd_store_get(f->systemd, bad_state), &byte, 1, 100), ==, 1);
    byte ^= 0x40;
    g_assert_cmpint(pwrite(mvmd_test_fd_store_get(f->systemd, bad_state), &byte, 1, 100), ==, 1);
    close(mvmd_test_fd_store_take(f->systemd, good_def));

    start_next_daemon(f);
    good = vm_by_name(f, "good");
    bad = vm_by_name(f, "bad");
    /* Both stopped (their stored definitions), and the daemon answers. */
    mvmd_test_wait_until(g_strcmp0(mvmd_test_vm_exit_reason(bad), "") != 0,
                         MVMD_TEST_GUEST_TIMEOUT_MS);
    mvmd_test_vm_wait_state(bad, "stopped");
    mvmd_test_vm_wait_state(good, "stopped");
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_removed(f->systemd), ==, 8);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(bad), "start-failed:"));
    log = read_file(f->bus->daemon_log);
    g_assert_nonnull(strstr(log, "was not handed over completely"));
    g_assert_nonnull(strstr(log, "'kernel': only root may have microvmd open a path"));
    /* The transient VM refused is gone with the daemon that had it. */
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 2);
    /* Started afresh, as the definition says: a boot, not a resume. */
    mvmd_test_vm_call_ok(bad, "Start", NULL);
    mvmd_test_vm_call_ok(bad, "Stop", NULL);
}

static MvmdVm *restore_vm(Fixture *f, const char *name, const char *dir, const char *options,
                          GUnixFDList *fds)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_restore_vm_sync(f->manager, name, dir, mvmd_test_config(options),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
                                      &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

/*
 * VMs RestoreVM made, from a snapshot's two files and from its directory, are handed over
 * with their snapshots: they count on, and a later Start restores the snapshot again.
 */
static void test_restored(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) source = create_counter(f, "source", NULL);
    g_autofree char *dir = g_build_filename(f->bus->tmpdir, "snap", NULL);
    g_autofree char *state = g_build_filename(dir, "state", NULL);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(MvmdVm) by_files = NULL, by_dir = NULL;
    gint64 files_before, dir_before;

    mvmd_test_vm_call_ok(source, "Start", NULL);
    some_count(source);
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    mvmd_test_vm_call_ok(source, "Snapshot",
                         g_variant_new("(s@a{sv})", dir, mvmd_test_config("{}")));
    mvmd_test_vm_call_ok(source, "Stop", NULL);
    mvmd_test_fd_list_append_file(fds, state, O_RDONLY);
    mvmd_test_fd_list_append_file(fds, memory, O_RDONLY);
    by_files = restore_vm(f, "by-files", "",
                          "{'state-fd': <@h 0>, 'memory-fd': <@h 1>, 'resume': <true>}", fds);
    by_dir = restore_vm(f, "by-dir", dir, "{'resume': <true>}", NULL);
    files_before = some_count(by_files);
    dir_before = some_count(by_dir);
    g_clear_object(&by_files);
    g_clear_object(&by_dir);

    hand_over(f);
    g_assert_cmpuint(mvmd_test_fd_store_dropped(f->systemd), ==, 0);
    start_next_daemon(f);
    by_files = vm_by_name(f, "by-files");
    by_dir = vm_by_name(f, "by-dir");
    mvmd_test_vm_wait_state(by_files, "running");
    mvmd_test_vm_wait_state(by_dir, "running");
    check_counts_on(by_files, files_before);
    check_counts_on(by_dir, dir_before);
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
    /* Its snapshot's files came along: a new Start restores from them. */
    mvmd_test_vm_call_ok(by_files, "Stop", NULL);
    mvmd_test_vm_call_ok(by_files, "Start", NULL);
    mvmd_test_vm_wait_state(by_files, "running");
    some_count(by_files);
}

/* Takes the daemon's bus name, as another process might hold it. */
static GDBusConnection *take_bus_name(Fixture *f)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusConnection) c =
        g_dbus_connection_new_for_address_sync(f->bus->address,
                                               G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                   G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                               NULL, NULL, &error);
    g_autoptr(GVariant) reply = NULL;
    guint32 result = 0;

    g_assert_no_error(error);
    reply = g_dbus_connection_call_sync(
        c, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        g_variant_new("(su)", "org.microvmd.MicroVM1", 4), G_VARIANT_TYPE("(u)"),
        G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);
    g_variant_get(reply, "(u)", &result);
    g_assert_cmpuint(result, ==, 1); /* DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER */
    return g_steal_pointer(&c);
}

/* Lets the name go (answered once the bus has), so that the next daemon finds it free. */
static void release_bus_name(GDBusConnection *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        c, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReleaseName",
        g_variant_new("(s)", "org.microvmd.MicroVM1"), G_VARIANT_TYPE("(u)"),
        G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);

    g_assert_no_error(error);
    g_dbus_connection_close_sync(c, NULL, NULL);
}

/*
 * A daemon that took VMs over and then cannot own its bus name hands them on again rather than
 * take them down with it (exit 1, which Restart=on-failure answers); the one after it has them.
 */
static void test_name_taken(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_counter(f, "again", NULL);
    g_autoptr(GDBusConnection) squatter = NULL;
    g_autofree char *log = NULL;
    gint64 count;
    int status;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    count = some_count(vm);
    g_clear_object(&vm);
    hand_over(f);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 3);

    squatter = take_bus_name(f);
    pass_store(f);
    mvmd_test_bus_start_daemon(f->bus, (const char *const[]){"--fd-store", NULL});
    g_assert_cmpint(waitpid(f->bus->daemon_pid, &status, 0), ==, f->bus->daemon_pid);
    f->bus->daemon_pid = 0;
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 1);
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 3);
    log = read_file(f->bus->daemon_log);
    g_assert_nonnull(strstr(log, "handing the VMs taken over to the next microvmd again"));

    release_bus_name(squatter);
    start_next_daemon(f);
    vm = vm_by_name(f, "again");
    mvmd_test_vm_wait_state(vm, "running");
    check_counts_on(vm, count);
    g_clear_pointer(&log, g_free);
    log = console_log(f, "again");
    g_assert_cmpuint(count_substrings(log, "TESTGUEST pattern start"), ==, 1);
}

/* Without a store SIGUSR1 hands nothing over: the daemon says so and runs on. */
static void test_no_store(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = NULL;
    g_autofree char *log = NULL;

    g_clear_object(&f->manager);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    start_daemon(f, "--shutdown-timeout=2"); /* no --fd-store */
    vm = create_counter(f, "stays", NULL);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    g_assert_cmpint(kill(f->bus->daemon_pid, SIGUSR1), ==, 0);
    some_count(vm);
    g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
    mvmd_test_vm_wait_state(vm, "running");
    log = read_file(f->bus->daemon_log);
    g_assert_nonnull(strstr(log, "cannot hand the VMs over"));
    receive_all(f->systemd);
    g_assert_cmpuint(mvmd_test_fd_store_count(f->systemd, "mvmd."), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    testguest = mvmd_test_guest_or_skip();
#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/handoff/running-and-paused", test_running_and_paused);
    ADD("/handoff/twice-then-stop", test_twice_then_stop);
    ADD("/handoff/refused", test_refused);
    ADD("/handoff/name-taken", test_name_taken);
    ADD("/handoff/restored", test_restored);
    ADD("/handoff/no-store", test_no_store);
#undef ADD
    return g_test_run();
}
