/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A restart that hands the running VMs to the next microvmd (daemon/handoff.h), with this test
 * standing in for systemd: it holds the notification socket ($NOTIFY_SOCKET) where the daemon
 * pushes its descriptors (FDSTORE=1, FDNAME=), keeps them as systemd's store would, and starts
 * the next daemon with them ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID), as systemd passes a
 * store. tests/systemd/ does the same under the real systemd. The guests are the pattern test
 * guest (tests/testguest/README.md), whose count lives in its memory: a guest handed over goes
 * on counting, and one that booted again would start over. /handoff/disk-and-net has the
 * blkloop guest write numbered sectors and echo frames through a tap while it is handed over;
 * /handoff/vsock-reset has the vsock guest hold a connection across it.
 * Needs a usable /dev/kvm (else 77).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
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

/* A VM of the test guest with @cmdline and the config keys @extra (or NULL). */
static MvmdVm *create_guest(Fixture *f, const char *name, const char *cmdline, const char *extra)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *text =
        g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'%s'>,"
                        " 'memory-mib': <uint64 32>%s%s}",
                        testguest, cmdline, extra ? ", " : "", extra ? extra : "");

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

static MvmdVm *create_counter(Fixture *f, const char *name, const char *extra)
{
    return create_guest(f, name, "mode=" PATTERN, extra);
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

static gboolean console_says(Fixture *f, const char *name, const char *text)
{
    g_autofree char *log = console_log(f, name);

    return strstr(log, text) != NULL;
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

/* ---- a vsock connection across the handoff -------------------------------------------------- */

static int unix_connect(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

/* What @fd gives within a minute, up to @len bytes or a newline. */
static char *read_reply(int fd, gsize len)
{
    g_autofree char *buf = g_malloc0(len + 1);
    struct pollfd p = {fd, POLLIN, 0};
    gsize got = 0;

    while (got < len && (got == 0 || buf[got - 1] != '\n') && poll(&p, 1, 60000) == 1) {
        ssize_t n = read(fd, buf + got, len - got);

        if (n <= 0)
            break;
        got += n;
    }
    return g_steal_pointer(&buf);
}

/* EOF or a reset on @fd within a minute: nothing more to read, ever. */
static gboolean peer_closed(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    char byte;

    return poll(&p, 1, 60000) == 1 && read(fd, &byte, 1) <= 0;
}

/* Through the device's socket to the guest's port 5000, which echoes one message. */
static int vsock_open(const char *uds)
{
    int fd = unix_connect(uds);
    g_autofree char *ok = NULL, *echo = NULL;

    g_assert_cmpint(write(fd, "CONNECT 5000\n", 13), ==, 13);
    ok = read_reply(fd, 64);
    g_assert_true(g_str_has_prefix(ok, "OK "));
    g_assert_cmpint(write(fd, "held", 4), ==, 4);
    echo = read_reply(fd, strlen("echo: held"));
    g_assert_cmpstr(echo, ==, "echo: held");
    return fd;
}

/*
 * A vsock connection's fate (microvmd(8)): it ends with the daemon that had it. The host's end
 * reads EOF once that daemon is gone, and the guest, which held its end, is told
 * TRANSPORT_RESET (virtio 1.2 §5.10.6.7) when the next daemon runs it again.
 */
static void test_vsock_reset(Fixture *f, gconstpointer data)
{
    g_autofree char *uds = g_build_filename(f->bus->tmpdir, "v.sock", NULL);
    g_autofree char *extra = g_strdup_printf("'vsock': <{'cid': <uint32 42>, 'uds-path': <'%s'>}>,"
                                             " 'debug-exit': <true>",
                                             uds);
    g_autoptr(MvmdVm) vm = create_guest(f, "held", "mode=vsock hold=1 port=5000", extra);
    g_autofree char *log = NULL;
    MvmdTestConsole *c;
    int fd;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    c = mvmd_test_console_open(vm);
    mvmd_test_console_expect(c, 0, "VSOCK listening 5000");
    fd = vsock_open(uds);
    mvmd_test_console_expect(c, 0, "VSOCK holding");
    mvmd_test_console_close(c);
    g_clear_object(&vm);

    hand_over(f);
    g_assert_true(peer_closed(fd));
    close(fd);
    start_next_daemon(f);
    vm = vm_by_name(f, "held");
    /* Not its State: a VM taken over reads "stopped" until its restore has run. */
    mvmd_test_wait_until(console_says(f, "held", "TESTGUEST-DONE"), MVMD_TEST_GUEST_TIMEOUT_MS);
    mvmd_test_vm_wait_state(vm, "stopped"); /* the guest's end: its debug exit */
    log = console_log(f, "held");
    g_assert_cmpuint(count_substrings(log, "TESTGUEST vsock start"), ==, 1);
    g_assert_nonnull(strstr(log, "PASS vsock-transport-reset"));
    g_assert_nonnull(strstr(log, "TESTGUEST-DONE vsock PASS"));
}

/* ---- a guest writing and echoing across the handoff ---------------------------------------- */

#define STREAM_TAP     "mvmho0"
#define STREAM_SECTORS 32768 /* 16 MiB: far more than the writes of the test's minute or so */
#define STREAM_CMDLINE "mode=blkloop echo=1 delay_ms=20"
#define ETHERTYPE      0x88b5 /* the test guest's (mode_virtio_net.c) */
#define FRAME_BYTES    64
#define FRAME_EVERY_US (20 * 1000)
/* A frame sent this long before SIGUSR1 may still wait in the guest's ring when it stops. */
#define LOST_SLACK_US G_USEC_PER_SEC

static const guint8 guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/*
 * The host's end of the wire: a thread sends a numbered frame to the guest every FRAME_EVERY_US
 * through a packet socket on the tap, and takes the echoes, noting when each frame was sent and
 * first came back. Its tables are the thread's own until it is joined.
 */
typedef struct {
    int pkt;
    int ifindex;
    guint8 mac[6]; /* the tap's, so that echoes are for this host */
    GThread *thread;
    gint sending, stop;
    GArray *sent_at;   /* gint64 per frame number: monotonic µs */
    GArray *echoed_at; /* gint64 per frame number: the first echo's arrival, 0 for none */
    guint send_errors, duplicates, corrupt;
} Stream;

static guint8 frame_byte(guint32 seq, guint i)
{
    return (guint8)(seq * 13 + i * 7);
}

static void stream_send(Stream *s)
{
    guint8 frame[FRAME_BYTES];
    guint32 seq = s->sent_at->len, be = htonl(seq);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = s->ifindex, .sll_halen = 6};
    gint64 now = g_get_monotonic_time(), none = 0;

    memcpy(frame, guest_mac, 6);
    memcpy(frame + 6, s->mac, 6);
    frame[12] = ETHERTYPE >> 8;
    frame[13] = ETHERTYPE & 0xff;
    memcpy(frame + 14, &be, sizeof(be));
    for (guint i = 18; i < FRAME_BYTES; i++)
        frame[i] = frame_byte(seq, i);
    memcpy(to.sll_addr, guest_mac, 6);
    /* A full tap queue (no reader for long) is a loss like any other: counted, not fatal. */
    if (sendto(s->pkt, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) !=
        sizeof(frame))
        s->send_errors++;
    g_array_append_val(s->sent_at, now);
    g_array_append_val(s->echoed_at, none);
}

/* Our frame @seq, unchanged but for the addresses: back from the guest, to us. */
static gboolean echo_intact(Stream *s, const guint8 *frame, gssize len, guint32 seq)
{
    if (len != FRAME_BYTES || memcmp(frame, s->mac, 6) != 0 || seq >= s->sent_at->len)
        return FALSE;
    for (guint i = 18; i < FRAME_BYTES; i++)
        if (frame[i] != frame_byte(seq, i))
            return FALSE;
    return TRUE;
}

static void stream_receive(Stream *s)
{
    guint8 frame[1600];
    ssize_t len;

    while ((len = recv(s->pkt, frame, sizeof(frame), MSG_DONTWAIT)) > 0) {
        guint32 be;

        if (len < 18 || memcmp(frame + 6, guest_mac, 6) != 0)
            continue; /* not from the guest */
        memcpy(&be, frame + 14, sizeof(be));
        if (!echo_intact(s, frame, len, ntohl(be)))
            s->corrupt++;
        else if (g_array_index(s->echoed_at, gint64, ntohl(be)) != 0)
            s->duplicates++;
        else
            g_array_index(s->echoed_at, gint64, ntohl(be)) = g_get_monotonic_time();
    }
}

static gpointer stream_thread(gpointer data)
{
    Stream *s = data;
    gint64 next = g_get_monotonic_time();

    while (!g_atomic_int_get(&s->stop)) {
        gint64 now = g_get_monotonic_time();
        struct pollfd p = {s->pkt, POLLIN, 0};

        if (g_atomic_int_get(&s->sending) && now >= next) {
            stream_send(s);
            /* A steady rate: a thread that was held up does not make up with a burst. */
            next = MAX(next + FRAME_EVERY_US, now);
        }
        if (poll(&p, 1, (int)CLAMP((next - now) / 1000, 1, 20)) > 0)
            stream_receive(s);
    }
    return NULL;
}

/* The tap, before the VM: the daemon opens it by name. */
static void stream_init(Stream *s)
{
    struct ifreq ifr = {0};
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    test_make_tap(STREAM_TAP, FALSE, &s->ifindex);
    s->pkt = test_packet_socket(s->ifindex, ETHERTYPE);
    g_strlcpy(ifr.ifr_name, STREAM_TAP, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(sock, SIOCGIFHWADDR, &ifr), ==, 0);
    close(sock);
    memcpy(s->mac, ifr.ifr_hwaddr.sa_data, 6);
    s->sent_at = g_array_new(FALSE, FALSE, sizeof(gint64));
    s->echoed_at = g_array_new(FALSE, FALSE, sizeof(gint64));
}

static void stream_start(Stream *s)
{
    g_atomic_int_set(&s->sending, 1);
    s->thread = g_thread_new("stream", stream_thread, s);
}

/* Stops sending, takes the echoes still on their way, and ends the thread. */
static void stream_finish(Stream *s)
{
    g_atomic_int_set(&s->sending, 0);
    g_usleep(2 * G_USEC_PER_SEC);
    g_atomic_int_set(&s->stop, 1);
    g_thread_join(s->thread);
    close(s->pkt);
}

static void stream_clear(Stream *s)
{
    g_array_unref(s->sent_at);
    g_array_unref(s->echoed_at);
}

/* The last echo that came before @t, and the first one after it (G_MAXINT64 if none). */
static void echoes_around(Stream *s, gint64 t, gint64 *before, gint64 *after)
{
    *before = 0;
    *after = G_MAXINT64;
    for (guint i = 0; i < s->echoed_at->len; i++) {
        gint64 at = g_array_index(s->echoed_at, gint64, i);

        if (at != 0 && at < t)
            *before = MAX(*before, at);
        else if (at != 0)
            *after = MIN(*after, at);
    }
}

/*
 * Every frame came back once and unchanged, but for those sent while no daemon could pass them
 * on (from a little before SIGUSR1 to the first echo after the old daemon exited); and frames
 * sent once the next daemon ran the guest came back.
 */
static void check_stream(Stream *s, gint64 signalled, gint64 exited, gint64 running)
{
    guint sent = s->sent_at->len, echoed = 0, lost = 0, unexplained = 0, later = 0;
    gint64 last_before, first_after;

    echoes_around(s, exited, &last_before, &first_after);
    for (guint i = 0; i < sent; i++) {
        gint64 sent_at = g_array_index(s->sent_at, gint64, i);

        if (g_array_index(s->echoed_at, gint64, i) != 0) {
            echoed++;
            later += sent_at > running;
            continue;
        }
        lost++;
        if (sent_at < signalled - LOST_SLACK_US || sent_at > first_after) {
            g_test_message("frame %u, sent %.3f s after SIGUSR1, did not come back", i,
                           (sent_at - signalled) / 1e6);
            unexplained++;
        }
    }
    g_test_message("frames: %u sent (every %d ms), %u echoed, %u lost, %u not sent (tap full), "
                   "%u duplicated, %u corrupted; %u sent after the next daemon ran the guest came "
                   "back; no echo from %.3f s to %.3f s after SIGUSR1 (blackout %.3f s); the old "
                   "daemon exited %.3f s, the guest ran again %.3f s after SIGUSR1",
                   sent, FRAME_EVERY_US / 1000, echoed, lost, s->send_errors, s->duplicates,
                   s->corrupt, later, (last_before - signalled) / 1e6,
                   (first_after - signalled) / 1e6, (first_after - last_before) / 1e6,
                   (exited - signalled) / 1e6, (running - signalled) / 1e6);
    g_assert_cmpuint(s->corrupt, ==, 0);
    g_assert_cmpuint(s->duplicates, ==, 0);
    g_assert_cmpuint(unexplained, ==, 0);
    g_assert_cmpuint(later, >, 0);
}

/* mode=blkloop's sector @k (tests/testguest/mode_virtio_blk.c: fill_numbered()). */
static guint8 blk_pattern_byte(guint64 k, guint32 i)
{
    return (guint8)((k * 131 + i * 7) ^ (i >> 5));
}

/* Sectors 0 to @last of @image hold what the guest wrote there. */
static void check_written(const char *image, gint64 last)
{
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    guint8 sector[512];

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(last, <, STREAM_SECTORS);
    for (gint64 k = 0; k <= last; k++) {
        guint64 number;

        g_assert_cmpint(pread(fd, sector, sizeof(sector), k * 512), ==, sizeof(sector));
        memcpy(&number, sector, sizeof(number));
        g_assert_cmpuint(number, ==, k);
        for (guint32 i = sizeof(number); i < sizeof(sector); i++)
            g_assert_cmphex(sector[i], ==, blk_pattern_byte(k, i));
    }
    close(fd);
}

/* The K of the last complete "BLKLOOP wrote K" line of @text, -1 if none. */
static gint64 last_written(const char *text)
{
    const char *line = NULL;

    for (const char *p = strstr(text, "BLKLOOP wrote "); p; p = strstr(p + 1, "BLKLOOP wrote "))
        if (strchr(p, '\n'))
            line = p;
    return line ? g_ascii_strtoll(line + strlen("BLKLOOP wrote "), NULL, 10) : -1;
}

/* Reads the guest's writes on @c until it reported @k. */
static gint64 written_up_to(MvmdTestConsole *c, gint64 k)
{
    gint64 got;

    while ((got = mvmd_test_console_next_number(c, "BLKLOOP wrote ")) < k)
        ;
    return got;
}

static MvmdVm *create_stream_guest(Fixture *f, const char *image)
{
    g_autofree char *extra = g_strdup_printf(
        "'disks': <[{'path': <'%s'>}]>, 'network': <[{'tap': <'" STREAM_TAP "'>,"
        " 'mac': <'%02x:%02x:%02x:%02x:%02x:%02x'>}]>",
        image, guest_mac[0], guest_mac[1], guest_mac[2], guest_mac[3], guest_mac[4], guest_mac[5]);

    g_assert_true(g_file_set_contents(image, "", 0, NULL));
    g_assert_cmpint(truncate(image, STREAM_SECTORS * 512), ==, 0);
    return create_guest(f, "stream", STREAM_CMDLINE, extra);
}

/*
 * The promise: a guest writing its disk and echoing frames through a tap all along
 * loses no write it saw completed and no frame but those sent while it was being handed over.
 * Every write it reported before SIGUSR1 is in the image before the next daemon starts; it
 * writes on from there (its count is in its memory) and echoes again. (Its vsock connections
 * would be reset: /handoff/vsock-reset.)
 */
static void test_disk_and_net(Fixture *f, gconstpointer data)
{
    g_autofree char *image = g_build_filename(f->bus->tmpdir, "stream.img", NULL);
    g_autofree char *log = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    MvmdTestConsole *c;
    Stream s = {0};
    gint64 before, first_after, last, signalled, exited, running;

    stream_init(&s);
    vm = create_stream_guest(f, image);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    c = mvmd_test_console_open(vm);
    mvmd_test_console_next_number(c, "BLKLOOP wrote "); /* its NIC is ready by then */
    stream_start(&s);
    written_up_to(c, 100); /* a steady stream of both for a while */
    mvmd_test_console_close(c);
    g_clear_object(&vm);

    signalled = g_get_monotonic_time();
    hand_over(f);
    exited = g_get_monotonic_time();
    log = console_log(f, "stream");
    before = last_written(log);
    g_assert_cmpint(before, >=, 100);
    check_written(image, before);
    start_next_daemon(f);
    vm = vm_by_name(f, "stream");
    mvmd_test_vm_wait_state(vm, "running");
    running = g_get_monotonic_time();
    c = mvmd_test_console_open(vm);
    first_after = mvmd_test_console_next_number(c, "BLKLOOP wrote ");
    last = written_up_to(c, first_after + 100);
    mvmd_test_console_close(c);
    stream_finish(&s);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);

    g_test_message("writes: %" G_GINT64_FORMAT " reported before SIGUSR1 (on disk before the next "
                   "daemon started), the first after %" G_GINT64_FORMAT
                   ", the last checked %" G_GINT64_FORMAT,
                   before + 1, first_after, last);
    g_assert_cmpint(first_after, >, before);
    check_written(image, last);
    g_clear_pointer(&log, g_free);
    log = console_log(f, "stream");
    g_assert_cmpuint(count_substrings(log, "TESTGUEST blkloop start"), ==, 1);
    g_assert_null(strstr(log, "FAIL"));
    check_stream(&s, signalled, exited, running);
    stream_clear(&s);
}

/* The tap's network namespace is this process's from here on (the last test): see main(). */
static void netns_setup(Fixture *f, gconstpointer data)
{
    g_assert_cmpint(unshare(CLONE_NEWNET), ==, 0);
    fixture_setup(f, data);
}

static void skip_no_tap(void)
{
    g_test_skip("cannot make a network namespace with a tap here (needs root, /dev/net/tun and "
                "iproute2's ip)");
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
    ADD("/handoff/vsock-reset", test_vsock_reset);
#undef ADD
    /*
     * Last: its setup moves the test's main thread, and so every daemon it starts, into a
     * network namespace of its own (the tap goes with it when the test ends).
     */
    if (test_can_unshare_net())
        g_test_add("/handoff/disk-and-net", Fixture, NULL, netns_setup, test_disk_and_net,
                   fixture_teardown);
    else
        g_test_add_func("/handoff/disk-and-net", skip_no_tap);
    return g_test_run();
}
