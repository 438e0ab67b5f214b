/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmd on a private bus, driven through the generated proxies: everything that works
 * without /dev/kvm (defining, validating, persisting, the ObjectManager, many clients, fuzz).
 */
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include "harness.h"

#define ERR "org.microvmd.MicroVM1.Error."

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->bus = mvmd_test_bus_new();
    mvmd_test_bus_start_daemon(f->bus, NULL);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_clear_object(&f->manager);
    if (f->bus->daemon_pid > 0)
        g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 30), ==, 0);
    mvmd_test_bus_free(f->bus);
}

static char *create_vm(MvmdManager *manager, const char *name, const char *config, GError **error)
{
    g_autoptr(GVariant) cfg = g_variant_ref_sink(mvmd_test_config(config));
    char *path = NULL;

    if (!mvmd_manager_call_create_vm_sync(manager, name, cfg, G_DBUS_CALL_FLAGS_NONE, -1, NULL,
                                          &path, NULL, NULL, error))
        return NULL;
    return path;
}

static char *create_ok(MvmdManager *manager, const char *name, const char *config)
{
    g_autoptr(GError) error = NULL;
    char *path = create_vm(manager, name, config, &error);

    g_assert_no_error(error);
    return path;
}

static void create_fails(MvmdManager *manager, const char *name, const char *config,
                         const char *error_name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = create_vm(manager, name, config, &error);

    g_assert_null(path);
    mvmd_test_assert_dbus_error(error, error_name);
    g_test_message("%s %s → %s", name, config, error->message);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_manager_properties(Fixture *f, gconstpointer data)
{
    const char *const *caps = mvmd_manager_get_capabilities(f->manager);

    g_assert_cmpstr(mvmd_manager_get_version(f->manager), ==, MVMD_VERSION);
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 0);
    g_assert_nonnull(caps);
    for (const char *const *c =
             (const char *const[]){"pause", "console", "shutdown", "reboot", "stats", "persist",
                                   "fd-passing", "snapshot", "freeze-clock", "devices",
                                   "cpu-template", "diff-snapshots", "rate-limits", NULL};
         *c; c++)
        g_assert_true(g_strv_contains(caps, *c));
    /* Every property also through org.freedesktop.DBus.Properties.GetAll. */
    {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) all = g_dbus_connection_call_sync(
            f->bus->connection, "org.microvmd.MicroVM1", "/org/microvmd/MicroVM1",
            "org.freedesktop.DBus.Properties", "GetAll",
            g_variant_new("(s)", "org.microvmd.MicroVM1.Manager"), G_VARIANT_TYPE("(a{sv})"),
            G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
        g_autoptr(GVariant) props = NULL;

        g_assert_no_error(error);
        props = g_variant_get_child_value(all, 0);
        for (const char *const *p =
                 (const char *const[]){"Version", "KvmApiVersion", "VMCount", "Capabilities", NULL};
             *p; p++) {
            g_autoptr(GVariant) value = g_variant_lookup_value(props, *p, NULL);

            g_assert_nonnull(value);
        }
    }
    g_autofree char *kvm_unusable = kvm_device_unusable();

    if (!kvm_unusable) {
        g_assert_cmpint(mvmd_manager_get_kvm_api_version(f->manager), ==, 12);
        g_assert_true(g_strv_contains(caps, "kvm"));
    } else {
        g_assert_cmpint(mvmd_manager_get_kvm_api_version(f->manager), ==, -1);
        g_assert_false(g_strv_contains(caps, "kvm"));
    }
}

static void test_create(Fixture *f, gconstpointer data)
{
    g_autofree char *path =
        create_ok(f->manager, "vm-1",
                  "{'kernel': <'/boot/vmlinuz'>, 'vcpus': <uint32 2>, 'memory-mib': <uint64 64>,"
                  " 'cmdline': <'console=ttyS0'>, 'initrd': <'/boot/initrd.img'>}");
    g_autofree char *found = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) list = NULL;
    g_autoptr(GError) error = NULL;
    GVariant *config;
    gint64 now = g_get_real_time();
    const char *s;
    guint32 u;
    guint64 t;

    g_assert_cmpstr(path, ==, "/org/microvmd/MicroVM1/vm/vm_2d1");
    mvmd_manager_call_get_vm_by_name_sync(f->manager, "vm-1", G_DBUS_CALL_FLAGS_NONE, -1, &found,
                                          NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(found, ==, path);

    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_cmpstr(mvmd_vm_get_name(vm), ==, "vm-1");
    g_assert_true(g_uuid_string_is_valid(mvmd_vm_get_uuid(vm)));
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "created");
    g_assert_cmpuint(mvmd_vm_get_vcpus(vm), ==, 2);
    g_assert_cmpuint(mvmd_vm_get_memory_mib(vm), ==, 64);
    g_assert_cmpstr(mvmd_test_vm_exit_reason(vm), ==, "");
    g_assert_cmpint(mvmd_vm_get_state_changed_at(vm), <=, now);
    g_assert_cmpint(mvmd_vm_get_state_changed_at(vm), >, now - 60 * G_USEC_PER_SEC);

    config = mvmd_test_vm_config(vm);
    g_assert_true(g_variant_lookup(config, "kernel", "&s", &s));
    g_assert_cmpstr(s, ==, "/boot/vmlinuz");
    g_assert_true(g_variant_lookup(config, "initrd", "&s", &s));
    g_assert_cmpstr(s, ==, "/boot/initrd.img");
    g_assert_true(g_variant_lookup(config, "cmdline", "&s", &s));
    g_assert_cmpstr(s, ==, "console=ttyS0");
    g_assert_true(g_variant_lookup(config, "vcpus", "u", &u));
    g_assert_cmpuint(u, ==, 2);
    g_assert_true(g_variant_lookup(config, "memory-mib", "t", &t));
    g_assert_cmpuint(t, ==, 64);
    g_assert_true(g_variant_lookup(config, "on-reboot", "&s", &s));
    g_assert_cmpstr(s, ==, "restart");

    /* Defaults. */
    g_free(create_ok(f->manager, "defaults", "{'kernel': <'/k'>}"));
    mvmd_manager_call_list_vms_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, &list, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(g_variant_n_children(list), ==, 2);
    {
        const char *name, *p, *state, *uuid;

        g_variant_get_child(list, 0, "(&s&o&s&s)", &name, &p, &state, &uuid);
        g_assert_cmpstr(name, ==, "defaults");
        g_variant_get_child(list, 1, "(&s&o&s&s)", &name, &p, &state, &uuid);
        g_assert_cmpstr(name, ==, "vm-1");
        g_assert_cmpstr(p, ==, path);
        g_assert_cmpstr(state, ==, "created");
        g_assert_cmpstr(uuid, ==, mvmd_vm_get_uuid(vm));
    }
    mvmd_test_wait_until(mvmd_manager_get_vm_count(f->manager) == 2, 5000);
}

static void test_names(Fixture *f, gconstpointer data)
{
    const char *bad[] = {"",          "a/b",  "/abs",  "ünïcode", "名前", ".hidden",
                         "-dash",     "a b",  "a\nb",  "a\tb",    "a:b",  "a$",
                         "../../etc", "a\\b", "tab\t", "x\x7f"};
    const char *good[] = {"a", "A.b_c-d", "0", "vm.1", "x-", "_under"};
    g_autofree char *longest = g_strnfill(64, 'x');
    g_autofree char *too_long = g_strnfill(65, 'x');
    g_autofree char *path = NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
        create_fails(f->manager, bad[i], "{'kernel': <'/k'>}", ERR "InvalidArgument");
    create_fails(f->manager, too_long, "{'kernel': <'/k'>}", ERR "InvalidArgument");
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++)
        g_free(create_ok(f->manager, good[i], "{'kernel': <'/k'>}"));
    path = create_ok(f->manager, longest, "{'kernel': <'/k'>}");
    g_assert_true(g_variant_is_object_path(path));
    create_fails(f->manager, "vm.1", "{'kernel': <'/k'>}", ERR "AlreadyExists");
    mvmd_test_wait_until(mvmd_manager_get_vm_count(f->manager) == G_N_ELEMENTS(good) + 1, 5000);
}

static void test_config_errors(Fixture *f, gconstpointer data)
{
    static const char *const cases[] = {
        "{}",                                                              /* no kernel */
        "{'kernel': <'relative/path'>}",                                   /* relative */
        "{'kernel': <'/k'>, 'initrd': <'initrd'>}",                        /* relative */
        "{'kernel': <'/k'>, 'bogus': <1>}",                                /* unknown key */
        "{'kernel': <'/k'>, 'vcpus': <2>}",                                /* i, not u */
        "{'kernel': <'/k'>, 'vcpus': <uint32 0>}",                         /* range */
        "{'kernel': <'/k'>, 'vcpus': <uint32 100000>}",                    /* range */
        "{'kernel': <'/k'>, 'memory-mib': <uint64 1>}",                    /* range */
        "{'kernel': <'/k'>, 'memory-mib': <uint64 3>}",                    /* odd */
        "{'kernel': <'/k'>, 'memory-mib': <uint64 18446744073709551614>}", /* huge */
        "{'kernel': <'/k'>, 'memory-mib': <uint32 64>}",                   /* u, not t */
        "{'kernel': <uint32 1>}",                                          /* type */
        "{'kernel': <'/k'>, 'persist': <'yes'>}",                          /* type */
        "{'kernel': <'/k'>, 'on-reboot': <'explode'>}",                    /* value */
        "{'kernel': <'/k'>, 'autostart': <true>}",                         /* needs persist */
        "{'kernel': <'/k'>, 'kernel-fd': <handle 0>}",                     /* both; no fd */
        "{'kernel-fd': <handle 0>}",                                       /* no fd list */
        "{'kernel': <'/k'>, 'disks': <[{'path': <'d'>}]>}",                /* relative */
        "{'kernel': <'/k'>, 'disks': <[{'fd': <handle 0>}]>}",             /* no fd list */
        "{'kernel': <'/k'>, 'network': <[{'tap': <'x/y'>}]>}",             /* bad ifname */
        "{'kernel': <'/k'>, 'vsock': <@a{sv} {}>}",                        /* no cid */
        "{'kernel': <'/k'>, 'disks': <'sda'>}",                            /* wrong type */
    };
    g_autofree char *cs = g_strnfill(5000, 'c');
    g_autofree char *long_cmdline = g_strdup_printf("{'kernel': <'/k'>, 'cmdline': <'%s'>}", cs);

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *name = g_strdup_printf("bad%" G_GSIZE_FORMAT, i);
        create_fails(f->manager, name, cases[i], ERR "InvalidArgument");
    }
    create_fails(f->manager, "long", long_cmdline, ERR "InvalidArgument");
    /* The message names the key. */
    {
        g_autoptr(GError) error = NULL;
        g_autofree char *path =
            create_vm(f->manager, "x", "{'kernel': <'/k'>, 'vcpus': <'two'>}", &error);
        g_assert_nonnull(strstr(error->message, "'vcpus'"));
    }
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 0);
}

static void call_vm_fails(MvmdVm *vm, const char *method, GVariant *args, const char *error_name)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_proxy_call_sync(G_DBUS_PROXY(vm), method, args,
                                                       G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);

    g_assert_null(reply);
    mvmd_test_assert_dbus_error(error, error_name);
    g_test_message("%s → %s", method, error->message);
}

static void test_state_errors(Fixture *f, gconstpointer data)
{
    g_autofree char *path = create_ok(f->manager, "idle", "{'kernel': <'/nonexistent'>}");
    g_autoptr(MvmdVm) vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_autoptr(GError) error = NULL;
    g_autofree char *found = NULL;

    mvmd_manager_call_get_vm_by_name_sync(f->manager, "nope", G_DBUS_CALL_FLAGS_NONE, -1, &found,
                                          NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "NoSuchVM");

    call_vm_fails(vm, "Pause", g_variant_new_parsed("(@a{sv} {},)"), ERR "InvalidState");
    call_vm_fails(vm, "Pause", g_variant_new_parsed("({'freeze-clock': <true>},)"),
                  ERR "InvalidState");
    call_vm_fails(vm, "Pause", g_variant_new_parsed("({'freeze-clock': <1>},)"),
                  ERR "InvalidArgument");
    call_vm_fails(vm, "Pause", g_variant_new_parsed("({'bogus': <true>},)"), ERR "InvalidArgument");
    call_vm_fails(vm, "Snapshot", g_variant_new_parsed("('/tmp', @a{sv} {})"), ERR "InvalidState");
    call_vm_fails(vm, "Snapshot", g_variant_new_parsed("('rel', @a{sv} {})"),
                  ERR "InvalidArgument");
    call_vm_fails(vm, "Snapshot", g_variant_new_parsed("('', @a{sv} {})"), ERR "InvalidArgument");
    call_vm_fails(vm, "Snapshot", g_variant_new_parsed("('/tmp', {'dir-fd': <handle 0>})"),
                  ERR "InvalidArgument");
    call_vm_fails(vm, "Snapshot", g_variant_new_parsed("('/tmp', {'leave-paused': <'yes'>})"),
                  ERR "InvalidArgument");
    call_vm_fails(vm, "Resume", NULL, ERR "InvalidState");
    call_vm_fails(vm, "Stop", NULL, ERR "InvalidState");
    call_vm_fails(vm, "Reboot", NULL, ERR "InvalidState");
    call_vm_fails(vm, "Shutdown", g_variant_new("(u)", 1), ERR "InvalidState");
    call_vm_fails(vm, "Shutdown", g_variant_new("(u)", 100000), ERR "InvalidArgument");
    /* No KVM, or no such kernel file: either way a named failure, and the VM stays defined. */
    call_vm_fails(vm, "Start", NULL, ERR "Failed");
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "created");

    /* A method call on a VM path that does not exist. */
    {
        g_autoptr(MvmdVm) ghost = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/ghost");
        g_clear_error(&error);
        mvmd_vm_call_start_sync(ghost, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
        g_assert_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD);
    }
}

static void restore_fails(Fixture *f, const char *name, const char *dir, GVariant *options,
                          GUnixFDList *fds, const char *error_name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_restore_vm_sync(f->manager, name, dir, options, G_DBUS_CALL_FLAGS_NONE, -1,
                                      fds, &path, NULL, NULL, &error);
    g_assert_null(path);
    mvmd_test_assert_dbus_error(error, error_name);
    g_test_message("RestoreVM %s %s → %s", name, dir, error->message);
}

/* RestoreVM's checks come before any snapshot is read; an empty directory is no snapshot. */
static void test_restore_errors(Fixture *f, gconstpointer data)
{
    g_autofree char *empty = g_build_filename(f->bus->tmpdir, "empty", NULL);
    g_autofree char *taken = create_ok(f->manager, "taken", "{'kernel': <'/k'>}");
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    int fd;

    g_assert_cmpint(g_mkdir(empty, 0700), ==, 0);
    restore_fails(f, "a/b", empty, mvmd_test_config("{}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "", empty, mvmd_test_config("{}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "taken", empty, mvmd_test_config("{}"), NULL, ERR "AlreadyExists");
    restore_fails(f, "r", "relative", mvmd_test_config("{}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "r", "", mvmd_test_config("{}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "r", empty, mvmd_test_config("{'bogus': <1>}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "r", empty, mvmd_test_config("{'resume': <1>}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "r", empty, mvmd_test_config("{'dir-fd': <handle 0>}"), NULL,
                  ERR "InvalidArgument");
    /* dir-fd must be a directory; and a path and dir-fd together are refused. */
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    g_unix_fd_list_append(fds, fd, &error);
    close(fd);
    fd = open(empty, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_unix_fd_list_append(fds, fd, &error);
    close(fd);
    g_assert_no_error(error);
    restore_fails(f, "r", "", mvmd_test_config("{'dir-fd': <handle 0>}"), fds,
                  ERR "InvalidArgument");
    restore_fails(f, "r", empty, mvmd_test_config("{'dir-fd': <handle 1>}"), fds,
                  ERR "InvalidArgument");
    /* Not a snapshot: refused (before KVM is touched) with a name; nothing is left behind. */
    restore_fails(f, "r", empty, mvmd_test_config("{}"), NULL, ERR "InvalidArgument");
    restore_fails(f, "r", "", mvmd_test_config("{'dir-fd': <handle 1>}"), fds,
                  ERR "InvalidArgument");
    mvmd_test_wait_until(mvmd_manager_get_vm_count(f->manager) == 1, 5000);
    {
        g_autoptr(GVariant) list = NULL;

        mvmd_manager_call_list_vms_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, &list, NULL,
                                        &error);
        g_assert_no_error(error);
        g_assert_cmpuint(g_variant_n_children(list), ==, 1);
    }
}

static void test_stats_and_console_idle(Fixture *f, gconstpointer data)
{
    g_autofree char *path = create_ok(f->manager, "quiet", "{'kernel': <'/k'>}");
    g_autoptr(MvmdVm) vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_autoptr(GVariant) stats = NULL;
    g_autoptr(GVariant) handle = NULL;
    g_autoptr(GUnixFDList) fds = NULL;
    g_autoptr(GError) error = NULL;
    guint64 t;
    gint64 x;
    char buf[16];

    mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(g_variant_lookup(stats, "memory-bytes", "t", &t));
    g_assert_cmpuint(t, ==, 0);
    g_assert_true(g_variant_lookup(stats, "uptime-us", "x", &x));
    g_assert_cmpint(x, ==, 0);
    g_assert_true(g_variant_lookup(stats, "vcpu-time-us", "x", &x));
    g_assert_nonnull(g_variant_lookup_value(stats, "exits", G_VARIANT_TYPE("a{st}")));

    /* A console can be opened in any state; input is dropped while nothing runs. */
    for (int i = 0; i < 3; i++) {
        int fd;

        g_clear_object(&fds);
        g_clear_pointer(&handle, g_variant_unref);
        mvmd_vm_call_open_console_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &handle, &fds, NULL,
                                       &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_unix_fd_list_get_length(fds), ==, 1);
        fd = g_unix_fd_list_get(fds, g_variant_get_handle(handle), &error);
        g_assert_no_error(error);
        g_assert_cmpint(write(fd, "hello\r", 6), ==, 6);
        g_assert_cmpint(fcntl(fd, F_SETFL, O_NONBLOCK), ==, 0);
        g_assert_cmpint(read(fd, buf, sizeof(buf)), ==, -1);
        close(fd);
    }
}

static void test_fd_passing(Fixture *f, gconstpointer data)
{
    g_autofree char *file = g_build_filename(f->bus->tmpdir, "kernel", NULL);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    gboolean passed = FALSE;
    int pipe_fds[2];
    int fd;

    g_file_set_contents(file, "not a kernel", -1, &error);
    g_assert_no_error(error);
    fd = open(file, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(g_unix_fd_list_append(fds, fd, &error), ==, 0);
    close(fd);
    g_assert_no_error(error);
    g_assert_cmpint(pipe(pipe_fds), ==, 0);
    g_assert_cmpint(g_unix_fd_list_append(fds, pipe_fds[0], &error), ==, 1);
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    mvmd_manager_call_create_vm_sync(f->manager, "byfd",
                                     mvmd_test_config("{'kernel-fd': <handle 0>}"),
                                     G_DBUS_CALL_FLAGS_NONE, -1, fds, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "kernel-fd-passed", "b", &passed));
    g_assert_true(passed);
    g_assert_null(g_variant_lookup_value(mvmd_test_vm_config(vm), "kernel", NULL));

    /* Out of range, not a regular file, persistent. */
    mvmd_manager_call_create_vm_sync(f->manager, "byfd2",
                                     mvmd_test_config("{'kernel-fd': <handle 5>}"),
                                     G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "InvalidArgument");
    g_clear_error(&error);
    mvmd_manager_call_create_vm_sync(f->manager, "byfd3",
                                     mvmd_test_config("{'kernel-fd': <handle 1>}"),
                                     G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "InvalidArgument");
    g_clear_error(&error);
    mvmd_manager_call_create_vm_sync(
        f->manager, "byfd4", mvmd_test_config("{'kernel-fd': <handle 0>, 'persist': <true>}"),
        G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "InvalidArgument");
    g_assert_nonnull(strstr(error->message, "persist"));
    g_clear_error(&error);

    /* A disk the guest would write, as a file of proc: refused, naming the file system. */
    fd = open("/proc/self/comm", O_RDWR | O_CLOEXEC);
    g_assert_cmpint(g_unix_fd_list_append(fds, fd, &error), ==, 2);
    close(fd);
    mvmd_manager_call_create_vm_sync(
        f->manager, "byfd5",
        mvmd_test_config("{'kernel-fd': <handle 0>, 'disks': <[{'fd': <handle 2>}]>}"),
        G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "InvalidArgument");
    g_assert_nonnull(strstr(error->message, "disks[0].fd"));
    g_assert_nonnull(strstr(error->message, "on a proc file system"));
}

/* ---- ObjectManager and PropertiesChanged -------------------------------------------------- */

typedef struct {
    GPtrArray *added;
    GPtrArray *removed;
    guint count_changes;
} Events;

static void on_object_added(GDBusObjectManager *om, GDBusObject *object, Events *ev)
{
    g_ptr_array_add(ev->added, g_strdup(g_dbus_object_get_object_path(object)));
}

static void on_object_removed(GDBusObjectManager *om, GDBusObject *object, Events *ev)
{
    g_ptr_array_add(ev->removed, g_strdup(g_dbus_object_get_object_path(object)));
}

static void on_manager_changed(GDBusProxy *proxy, GVariant *changed, GStrv invalidated, Events *ev)
{
    if (g_variant_lookup_value(changed, "VMCount", G_VARIANT_TYPE_UINT32))
        ev->count_changes++;
}

static void test_object_manager(Fixture *f, gconstpointer data)
{
    Events ev = {g_ptr_array_new_with_free_func(g_free), g_ptr_array_new_with_free_func(g_free), 0};
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusObjectManager) om = mvmd_object_manager_client_new_sync(
        f->bus->connection, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE, "org.microvmd.MicroVM1",
        "/org/microvmd/MicroVM1", NULL, &error);
    g_autoptr(MvmdManager) manager = mvmd_test_bus_manager(f->bus, NULL);
    g_autofree char *path = NULL;
    g_autoptr(GDBusObject) object = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    GList *objects;

    g_assert_no_error(error);
    objects = g_dbus_object_manager_get_objects(om);
    g_assert_null(objects);
    g_signal_connect(om, "object-added", G_CALLBACK(on_object_added), &ev);
    g_signal_connect(om, "object-removed", G_CALLBACK(on_object_removed), &ev);
    g_signal_connect(manager, "g-properties-changed", G_CALLBACK(on_manager_changed), &ev);

    path = create_ok(manager, "om1", "{'kernel': <'/k'>, 'vcpus': <uint32 3>}");
    mvmd_test_wait_until(ev.added->len == 1 && ev.count_changes >= 1, 5000);
    g_assert_cmpstr(ev.added->pdata[0], ==, path);
    g_assert_cmpuint(mvmd_manager_get_vm_count(manager), ==, 1);

    object = g_dbus_object_manager_get_object(om, path);
    g_assert_nonnull(object);
    vm = mvmd_object_get_vm(MVMD_OBJECT(object));
    g_assert_nonnull(vm);
    g_assert_cmpstr(mvmd_vm_get_name(vm), ==, "om1");
    g_assert_cmpuint(mvmd_vm_get_vcpus(vm), ==, 3);
    objects = g_dbus_object_manager_get_objects(om);
    g_assert_cmpuint(g_list_length(objects), ==, 1);
    g_list_free_full(objects, g_object_unref);

    mvmd_vm_call_delete_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);
    mvmd_test_wait_until(ev.removed->len == 1 && ev.count_changes >= 2, 5000);
    g_assert_cmpstr(ev.removed->pdata[0], ==, path);
    g_assert_cmpuint(mvmd_manager_get_vm_count(manager), ==, 0);

    /* Gone: the name is free again, calls on the old path fail. */
    mvmd_vm_call_delete_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD);
    g_free(create_ok(manager, "om1", "{'kernel': <'/k'>}"));
    g_signal_handlers_disconnect_by_data(om, &ev);
    g_signal_handlers_disconnect_by_data(manager, &ev);
    g_ptr_array_unref(ev.added);
    g_ptr_array_unref(ev.removed);
}

/* ---- persistence -------------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *contents)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) error = NULL;

    g_file_set_contents(path, contents, -1, &error);
    g_assert_no_error(error);
}

static void test_persistence(Fixture *f, gconstpointer data)
{
    g_autofree char *vms_dir = g_build_filename(f->bus->state_dir, "vms", NULL);
    g_autofree char *stored = g_build_filename(vms_dir, "keep.vm", NULL);
    g_autofree char *corrupt = g_build_filename(vms_dir, "corrupt.vm", NULL);
    g_autofree char *path = NULL;
    g_autofree char *uuid = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *found = NULL;
    gboolean autostart = FALSE;
    GStatBuf st;

    path = create_ok(f->manager, "keep",
                     "{'kernel': <'/nonexistent/vmlinuz'>, 'persist': <true>,"
                     " 'autostart': <true>, 'vcpus': <uint32 2>, 'cmdline': <'a=\"b c\" ü'>,"
                     " 'cpu-template': <'x86-64-v3'>}");
    g_free(create_ok(f->manager, "transient", "{'kernel': <'/k'>}"));
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    uuid = g_strdup(mvmd_vm_get_uuid(vm));
    g_clear_object(&vm);
    g_assert_cmpint(g_stat(stored, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);

    /* Files the next start must skip (and keep). */
    write_file(vms_dir, "corrupt.vm", "\x01\x02 this is [not a key file\n");
    write_file(vms_dir, "mismatch.vm",
               "[VM]\nName=other\nUUID=2f5d7e0a-8c1e-4a57-9b83-6f2a0c1d9e44\n[Config]\n"
               "kernel=/k\n");
    write_file(vms_dir, "badvalue.vm",
               "[VM]\nName=badvalue\nUUID=2f5d7e0a-8c1e-4a57-9b83-6f2a0c1d9e44\n[Config]\n"
               "kernel=/k\nvcpus=0\n");
    write_file(vms_dir, "badkey.vm",
               "[VM]\nName=badkey\nUUID=2f5d7e0a-8c1e-4a57-9b83-6f2a0c1d9e44\n[Config]\n"
               "kernel=/k\nkernel-fd=3\n");

    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 30), ==, 0);
    g_clear_object(&f->manager);
    mvmd_test_bus_start_daemon(f->bus, NULL);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);

    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 1);
    mvmd_manager_call_get_vm_by_name_sync(f->manager, "transient", G_DBUS_CALL_FLAGS_NONE, -1,
                                          &found, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "NoSuchVM");
    g_clear_error(&error);
    g_clear_pointer(&found, g_free);
    mvmd_manager_call_get_vm_by_name_sync(f->manager, "keep", G_DBUS_CALL_FLAGS_NONE, -1, &found,
                                          NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(found, ==, path);

    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_cmpstr(mvmd_vm_get_uuid(vm), ==, uuid);
    g_assert_cmpuint(mvmd_vm_get_vcpus(vm), ==, 2);
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "autostart", "b", &autostart));
    g_assert_true(autostart);
    {
        const char *cmdline = NULL;
        g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "cmdline", "&s", &cmdline));
        g_assert_cmpstr(cmdline, ==, "a=\"b c\" ü");
    }
    {
        const char *template = NULL;
        g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "cpu-template", "&s", &template));
        g_assert_cmpstr(template, ==, "x86-64-v3");
    }
    /* Autostart was tried; the kernel does not exist (or there is no KVM): stopped, and why. */
    mvmd_test_wait_until(g_str_has_prefix(mvmd_test_vm_exit_reason(vm), "start-failed"), 10000);
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "stopped");

    /* The bad files are still there, untouched. */
    g_assert_true(g_file_test(corrupt, G_FILE_TEST_EXISTS));
    for (const char *const *n =
             (const char *const[]){"mismatch.vm", "badvalue.vm", "badkey.vm", NULL};
         *n; n++) {
        g_autofree char *p = g_build_filename(vms_dir, *n, NULL);
        g_assert_true(g_file_test(p, G_FILE_TEST_EXISTS));
    }

    mvmd_vm_call_delete_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);
    g_assert_false(g_file_test(stored, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(corrupt, G_FILE_TEST_EXISTS));
}

/* ---- many clients ------------------------------------------------------------------------- */

#define N_CLIENTS 10
#define N_CALLS   100

typedef struct {
    MvmdTestBus *bus;
    guint index;
    guint failures;
} Client;

static gpointer client_thread(gpointer data)
{
    Client *c = data;
    g_autoptr(GMainContext) context = g_main_context_new();
    g_autoptr(GDBusConnection) connection = NULL;
    g_autoptr(MvmdManager) manager = NULL;

    g_main_context_push_thread_default(context);
    connection = mvmd_test_bus_connect(c->bus);
    manager =
        mvmd_manager_proxy_new_sync(connection, G_DBUS_PROXY_FLAGS_DO_NOT_LOAD_PROPERTIES,
                                    "org.microvmd.MicroVM1", "/org/microvmd/MicroVM1", NULL, NULL);
    for (guint i = 0; i < N_CALLS; i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *name = g_strdup_printf("c%u-%u", c->index, i / 4);
        g_autofree char *path = NULL;
        g_autoptr(GVariant) list = NULL;

        switch (i % 4) {
        case 0:
            mvmd_manager_call_create_vm_sync(manager, name, mvmd_test_config("{'kernel': <'/k'>}"),
                                             G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL,
                                             &error);
            break;
        case 1:
            mvmd_manager_call_get_vm_by_name_sync(manager, name, G_DBUS_CALL_FLAGS_NONE, -1, &path,
                                                  NULL, &error);
            break;
        case 2:
            mvmd_manager_call_list_vms_sync(manager, G_DBUS_CALL_FLAGS_NONE, -1, &list, NULL,
                                            &error);
            break;
        case 3: {
            g_autoptr(GVariant) reply = NULL;
            g_autofree char *p =
                g_strdup_printf("/org/microvmd/MicroVM1/vm/c%u_2d%u", c->index, i / 4);
            /* Every other VM is deleted again. */
            if ((i / 4) % 2)
                reply = g_dbus_connection_call_sync(
                    connection, "org.microvmd.MicroVM1", p, "org.microvmd.MicroVM1.VM", "Delete",
                    NULL, NULL, G_DBUS_CALL_FLAGS_NONE, 30000, NULL, &error);
            else
                reply = g_dbus_connection_call_sync(
                    connection, "org.microvmd.MicroVM1", p, "org.freedesktop.DBus.Properties",
                    "Get", g_variant_new("(ss)", "org.microvmd.MicroVM1.VM", "State"), NULL,
                    G_DBUS_CALL_FLAGS_NONE, 30000, NULL, &error);
            break;
        }
        }
        if (error) {
            g_printerr("client %u call %u: %s\n", c->index, i, error->message);
            c->failures++;
        }
    }
    /* The proxy's signal subscriptions are released from this context: let that happen. */
    g_clear_object(&manager);
    g_dbus_connection_close_sync(connection, NULL, NULL);
    g_clear_object(&connection);
    while (g_main_context_iteration(context, FALSE))
        ;
    g_main_context_pop_thread_default(context);
    return NULL;
}

/* VM.SetResources with @text; NULL on success, else the error (its name asserted). */
static void set_resources(MvmdVm *vm, const char *text, const char *error_name, const char *says)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) resources = g_variant_ref_sink(mvmd_test_config(text));

    mvmd_vm_call_set_resources_sync(vm, resources, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    if (!error_name) {
        g_assert_no_error(error);
        return;
    }
    g_test_message("SetResources %s → %s", text, error->message);
    mvmd_test_assert_dbus_error_says(error, error_name, says);
}

/* The printed `disks` and `network` of @vm's GetConfig. */
static char *devices_text(MvmdVm *vm)
{
    GVariant *config = mvmd_test_vm_config(vm); /* @vm's */
    g_autoptr(GVariant) disks = g_variant_lookup_value(config, "disks", G_VARIANT_TYPE("aa{sv}"));
    g_autoptr(GVariant) nics = g_variant_lookup_value(config, "network", G_VARIANT_TYPE("aa{sv}"));
    g_autofree char *disks_text = NULL;
    g_autofree char *nics_text = NULL;

    g_assert_nonnull(disks);
    g_assert_nonnull(nics);
    disks_text = g_variant_print(disks, FALSE);
    nics_text = g_variant_print(nics, FALSE);
    return g_strdup_printf("disks %s network %s", disks_text, nics_text);
}

#define BUCKET(size, ms) "{'size': <uint64 " #size ">, 'refill-time-ms': <uint64 " #ms ">}"

/*
 * SetResources changes a stopped VM's disk and NIC limits: GetConfig shows them, a persistent
 * definition keeps them over a restart, a bad request changes nothing, and another user needs
 * manage-others (read-others is not enough).
 */
static void test_set_resources(Fixture *f, gconstpointer data)
{
    g_autofree char *path = create_ok(
        f->manager, "limits",
        "{'kernel': <'/k'>, 'persist': <true>, 'disks': <[{'path': <'/d0'>}, {'path': <'/d1'>, "
        "'ops': <" BUCKET(200, 1000) ">}]>, 'network': <[{'tap': <'tap0'>, 'tx-ops': <" BUCKET(
            100, 100) ">}]>}");
    g_autoptr(MvmdVm) vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_autofree char *before = devices_text(vm);

    set_resources(vm, "{'disks': <{uint32 0: {'bandwidth': <" BUCKET(100000, 10) ">}}>}", NULL,
                  NULL);
    g_autofree char *after = devices_text(vm);
    g_assert_nonnull(strstr(after, "'bandwidth': <{'size': <uint64 100000>, 'refill-time-ms': "
                                   "<uint64 10>}>"));
    g_assert_nonnull(strstr(after, "'ops': <{'size': <uint64 200>")); /* disk 1: untouched */
    set_resources(vm,
                  "{'network': <{uint32 0: {'rx-bandwidth': <" BUCKET(
                      50000, 10) ">, 'tx-ops': <@a{sv} {}>}}>}",
                  NULL, NULL);
    g_free(after);
    after = devices_text(vm);
    g_assert_nonnull(strstr(after, "'rx-bandwidth': <{'size': <uint64 50000>"));
    g_assert_null(strstr(after, "'tx-ops'"));

    /* All or nothing: a good change beside a bad one is not made either. */
    set_resources(vm,
                  "{'disks': <{uint32 1: {'ops': <@a{sv} {}>}, uint32 0: {'ops': <{'size': "
                  "<uint64 0>, 'refill-time-ms': <uint64 1>}>}}>}",
                  ERR "InvalidArgument", "disks[0].ops.size");
    set_resources(vm, "{'disks': <{uint32 2: {'ops': <@a{sv} {}>}}>}", ERR "InvalidArgument",
                  "disks[2]");
    set_resources(vm, "{'disks': <{uint32 0: {'read-only': <true>}}>}", ERR "InvalidArgument",
                  "disks[0].read-only");
    set_resources(vm, "{'memory-mib': <uint64 64>}", ERR "InvalidArgument", "memory-mib");
    set_resources(vm, "{'disks': <[{'ops': <@a{sv} {}>}]>}", ERR "InvalidArgument", "disks");
    set_resources(vm, "{'network': <{uint32 1: {'rx-ops': <@a{sv} {}>}}>}", ERR "InvalidArgument",
                  "network[1]");
    set_resources(vm, "{'network': <{uint32 0: {'ops': <@a{sv} {}>}}>}", ERR "InvalidArgument",
                  "network[0].ops");
    set_resources(vm,
                  "{'network': <{uint32 0: {'rx-ops': <" BUCKET(
                      5, 5) ">, 'tx-ops': <{'size': <uint64 5>}>}}>}",
                  ERR "InvalidArgument", "network[0].tx-ops.refill-time-ms");
    g_autofree char *unchanged = devices_text(vm);
    g_assert_cmpstr(unchanged, ==, after);

    /* An empty bucket removes that limit; the definition on disk follows. */
    set_resources(vm, "{'disks': <{uint32 1: {'ops': <@a{sv} {}>}}>}", NULL, NULL);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 30), ==, 0);
    g_clear_object(&vm);
    g_clear_object(&f->manager);
    mvmd_test_bus_start_daemon(f->bus, NULL);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_autofree char *stored = devices_text(vm);
    g_test_message("disks before: %s; after a restart: %s", before, stored);
    g_assert_nonnull(strstr(stored, "'bandwidth': <{'size': <uint64 100000>"));
    g_assert_null(strstr(stored, "'ops'"));
    g_assert_nonnull(strstr(stored, "'rx-bandwidth': <{'size': <uint64 50000>"));
    g_assert_null(strstr(stored, "'tx-ops'"));

    if (getuid() != 0) {
        g_test_skip("needs root to run a client as nobody");
        return;
    }
    static const char *const lift = "{'disks': <{uint32 0: {'bandwidth': <@a{sv} {}>}}>}";
    static const struct {
        const char *action; /* polkit's yes (python-dbusmock), NULL: no polkit */
        const char *answer;
    } callers[] = {{NULL, ERR "NotAuthorized"},
                   {"org.microvmd.vm.read-others", ERR "NotAuthorized"},
                   {"org.microvmd.vm.manage-others", "()"}};
    mvmd_test_bus_open_to_all(f->bus);
    for (guint i = 0; i < G_N_ELEMENTS(callers); i++) {
        g_autoptr(GSubprocess) mock = NULL;
        g_autoptr(GSubprocess) client = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL;

        if (callers[i].action && !(mock = mvmd_test_start_polkit_mock(f->bus, callers[i].action))) {
            g_test_message("python-dbusmock is not installed: polkit's yes not tried");
            break;
        }
        client = mvmd_test_vm_call_as_nobody_with(f->bus, "limits", "SetResources", lift);
        g_subprocess_communicate_utf8(client, NULL, NULL, &out, NULL, &error);
        g_assert_no_error(error);
        g_test_message("SetResources as nobody with %s: %s", callers[i].action, out);
        g_assert_nonnull(strstr(out, callers[i].answer));
        g_autofree char *now = devices_text(vm);
        g_assert_true((strstr(now, "'bandwidth'") == NULL) ==
                      (strcmp(callers[i].answer, "()") == 0));
        if (mock) {
            g_subprocess_force_exit(mock);
            g_subprocess_wait(mock, NULL, NULL);
        }
    }
}

static void test_concurrent_clients(Fixture *f, gconstpointer data)
{
    Client clients[N_CLIENTS];
    GThread *threads[N_CLIENTS];
    g_autoptr(GVariant) list = NULL;
    g_autoptr(GError) error = NULL;
    gint64 start = g_get_monotonic_time();

    for (guint i = 0; i < N_CLIENTS; i++) {
        clients[i] = (Client){f->bus, i, 0};
        threads[i] = g_thread_new("client", client_thread, &clients[i]);
    }
    for (guint i = 0; i < N_CLIENTS; i++) {
        g_thread_join(threads[i]);
        g_assert_cmpuint(clients[i].failures, ==, 0);
    }
    g_test_message("%d calls in %.3f s", N_CLIENTS * N_CALLS,
                   (g_get_monotonic_time() - start) / 1e6);
    mvmd_manager_call_list_vms_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, &list, NULL, &error);
    g_assert_no_error(error);
    /* 25 VMs per client, every odd one deleted again. */
    g_assert_cmpuint(g_variant_n_children(list), ==, N_CLIENTS * (N_CALLS / 4 - (N_CALLS / 4) / 2));
}

/* ---- fuzz ----------------------------------------------------------------------------------- */

static char *random_name(void)
{
    static const char *const pieces[] = {"a",  "Z",  "9",  ".",  "-", "_",  "/", " ", "ü",
                                         "名", "\t", "..", "vm", "x", "\\", ":", "%", "*"};
    GString *s = g_string_new(NULL);
    guint n = g_test_rand_int_range(0, 12);

    if (g_test_rand_int_range(0, 20) == 0)
        n = g_test_rand_int_range(60, 80);
    for (guint i = 0; i < n; i++)
        g_string_append(s, pieces[g_test_rand_int_range(0, G_N_ELEMENTS(pieces))]);
    return g_string_free(s, FALSE);
}

static GVariant *random_value(int depth)
{
    switch (g_test_rand_int_range(0, depth > 1 ? 9 : 11)) {
    case 0:
        return g_variant_new_uint32(g_test_rand_int());
    case 1:
        return g_variant_new_uint64(((guint64)g_test_rand_int() << 32) | g_test_rand_int());
    case 2:
        return g_variant_new_int32(g_test_rand_int());
    case 3:
        return g_variant_new_boolean(g_test_rand_bit());
    case 4:
        return g_variant_new_string(g_test_rand_bit() ? "/abs/path" : "rel");
    case 5:
        return g_variant_new_handle(g_test_rand_int_range(-2, 3));
    case 6:
        return g_variant_new_double(g_test_rand_double());
    case 7:
        return g_variant_new_uint32(g_test_rand_int_range(0, 4));
    case 8:
        return g_variant_new_uint64(g_test_rand_int_range(0, 300));
    case 9:
        return g_variant_new_variant(random_value(depth + 1));
    default: {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
        g_variant_builder_open(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&b, "{sv}", "path", random_value(depth + 1));
        g_variant_builder_close(&b);
        return g_variant_builder_end(&b);
    }
    }
}

static GVariant *random_config(void)
{
    static const char *const keys[] = {
        "vcpus",   "memory-mib", "kernel",       "kernel-fd",  "initrd",    "initrd-fd",
        "cmdline", "persist",    "autostart",    "debug-exit", "on-reboot", "disks",
        "network", "vsock",      "cpu-template", "bogus",      ""};
    GVariantBuilder b;
    guint n = g_test_rand_int_range(0, 6);

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    if (g_test_rand_bit())
        g_variant_builder_add(&b, "{sv}", "kernel", g_variant_new_string("/k"));
    for (guint i = 0; i < n; i++)
        g_variant_builder_add(&b, "{sv}", keys[g_test_rand_int_range(0, G_N_ELEMENTS(keys))],
                              random_value(0));
    return g_variant_builder_end(&b);
}

static GVariant *random_options(void)
{
    static const char *const keys[] = {"freeze-clock", "leave-paused", "dir-fd",
                                       "resume",       "copy-memory",  "bogus"};
    GVariantBuilder b;
    guint n = g_test_rand_int_range(0, 3);

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (guint i = 0; i < n; i++)
        g_variant_builder_add(&b, "{sv}", keys[g_test_rand_int_range(0, G_N_ELEMENTS(keys))],
                              random_value(0));
    return g_variant_builder_end(&b);
}

static const char *random_dir(void)
{
    static const char *const dirs[] = {"", "/", "/nonexistent", "rel", "/tmp", "/proc/self"};

    return dirs[g_test_rand_int_range(0, G_N_ELEMENTS(dirs))];
}

/* Arguments of the right signature for a VM method, with random content. */
static GVariant *random_vm_args(const char *method)
{
    if (g_str_equal(method, "Shutdown"))
        return g_variant_new("(u)", g_test_rand_int_range(0, 5));
    if (g_str_equal(method, "Pause"))
        return g_variant_new("(@a{sv})", random_options());
    if (g_str_equal(method, "Snapshot"))
        return g_variant_new("(s@a{sv})", random_dir(), random_options());
    return NULL;
}

/* A call with the wrong signature entirely: GDBus answers InvalidArgs. */
static GVariant *random_bad_args(void)
{
    switch (g_test_rand_int_range(0, 4)) {
    case 0:
        return g_variant_new("(i)", g_test_rand_int());
    case 1:
        return g_variant_new("(ss)", "a", "b");
    case 2:
        return g_variant_new("(sa{ss})", "a", NULL);
    default:
        return NULL;
    }
}

static void fuzz_one(Fixture *f, GPtrArray *paths)
{
    static const char *const vm_methods[] = {"Start",    "Pause",  "Resume",   "Shutdown",
                                             "Stop",     "Reboot", "Snapshot", "OpenConsole",
                                             "GetStats", "Delete"};
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GUnixFDList) out_fds = NULL;
    g_autofree char *name = random_name();
    const char *path = "/org/microvmd/MicroVM1";
    const char *iface = "org.microvmd.MicroVM1.Manager";
    const char *method;
    GVariant *args;

    switch (g_test_rand_int_range(0, 6)) {
    case 0:
    case 1:
        method = "CreateVM";
        args = g_variant_new("(s@a{sv})", name, random_config());
        break;
    case 2:
        method = g_test_rand_bit() ? "GetVMByName" : "ListVMs";
        args = g_str_equal(method, "ListVMs") ? NULL : g_variant_new("(s)", name);
        break;
    case 3:
        method = g_test_rand_bit() ? "CreateVM" : "GetVMByName";
        args = random_bad_args();
        if (g_test_rand_bit()) {
            method = "RestoreVM";
            args = g_variant_new("(ss@a{sv})", name, random_dir(), random_options());
        }
        break;
    default:
        iface = "org.microvmd.MicroVM1.VM";
        path = paths->len ? paths->pdata[g_test_rand_int_range(0, paths->len)]
                          : "/org/microvmd/MicroVM1/vm/none";
        method = vm_methods[g_test_rand_int_range(0, G_N_ELEMENTS(vm_methods))];
        args = random_vm_args(method);
        if (g_test_rand_int_range(0, 8) == 0)
            args = random_bad_args();
        break;
    }
    reply = g_dbus_connection_call_with_unix_fd_list_sync(
        f->bus->connection, "org.microvmd.MicroVM1", path, iface, method, args, NULL,
        G_DBUS_CALL_FLAGS_NONE, 20000, NULL, &out_fds, NULL, &error);
    /* Answered: a reply or an error from the daemon, never a timeout or a dead peer. */
    if (error) {
        g_autofree char *remote = g_dbus_error_get_remote_error(error);
        if (!remote || g_str_equal(remote, "org.freedesktop.DBus.Error.NoReply") ||
            g_str_equal(remote, "org.freedesktop.DBus.Error.ServiceUnknown"))
            g_error("%s.%s: not answered: %s", iface, method, error->message);
    }
    if (reply && g_str_equal(method, "CreateVM")) {
        const char *p;
        g_variant_get(reply, "(&o)", &p);
        g_ptr_array_add(paths, g_strdup(p));
    }
}

static void test_fuzz(Fixture *f, gconstpointer data)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GVariant) list = NULL;
    g_autoptr(GError) error = NULL;

    for (int i = 0; i < 1000; i++)
        fuzz_one(f, paths);
    g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
    mvmd_manager_call_list_vms_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, &list, NULL, &error);
    g_assert_no_error(error);
    g_test_message("%" G_GSIZE_FORMAT " VMs left after the fuzz", g_variant_n_children(list));
}

static gboolean has_owner(MvmdManager *manager)
{
    g_autofree char *owner = g_dbus_proxy_get_name_owner(G_DBUS_PROXY(manager));

    return owner != NULL;
}

static void test_replace(Fixture *f, gconstpointer data)
{
    const char *microvmd = g_getenv("MICROVMD");
    g_autofree char *addr = g_strconcat("--address=", f->bus->address, NULL);
    g_autofree char *state = g_strconcat("--state-dir=", f->bus->state_dir, NULL);
    g_autofree char *run = g_strconcat("--runtime-dir=", f->bus->runtime_dir, NULL);
    const char *argv[] = {microvmd, addr, state, run, "--replace", NULL};
    g_autoptr(GError) error = NULL;
    GPid old = f->bus->daemon_pid;
    GPid new_pid;
    int status;

    /* A second daemon without --replace gives up (exit 1), the first keeps the name. */
    {
        const char *argv2[] = {microvmd, addr, state, run, NULL};
        g_spawn_sync(NULL, (char **)argv2, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, NULL,
                     &status, &error);
        g_assert_no_error(error);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 1);
        g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
    }
    g_spawn_async(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &new_pid,
                  &error);
    g_assert_no_error(error);
    /* The old one exits cleanly once replaced. */
    g_assert_cmpint(waitpid(old, &status, 0), ==, old);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    f->bus->daemon_pid = new_pid;
    g_clear_object(&f->manager);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
    mvmd_test_wait_until(has_owner(f->manager), 5000);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!g_getenv("MICROVMD")) {
        g_printerr("MICROVMD is not set (run through meson test)\n");
        return 77;
    }
#define ADD(name, func) g_test_add(name, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/daemon/manager-properties", test_manager_properties);
    ADD("/daemon/create", test_create);
    ADD("/daemon/names", test_names);
    ADD("/daemon/config-errors", test_config_errors);
    ADD("/daemon/state-errors", test_state_errors);
    ADD("/daemon/restore-errors", test_restore_errors);
    ADD("/daemon/stats-console-idle", test_stats_and_console_idle);
    ADD("/daemon/fd-passing", test_fd_passing);
    ADD("/daemon/object-manager", test_object_manager);
    ADD("/daemon/persistence", test_persistence);
    ADD("/daemon/set-resources", test_set_resources);
    ADD("/daemon/concurrent-clients", test_concurrent_clients);
    ADD("/daemon/fuzz", test_fuzz);
    ADD("/daemon/replace", test_replace);
    return g_test_run();
}
