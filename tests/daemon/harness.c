/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <grp.h>
#include <poll.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#define BUS_NAME "org.microvmd.MicroVM1"

/* The bus and the daemon die with the test, even when an assertion aborts it. */
static void child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* The daemon's child setup: as above, and the descriptor limit the test asked for. */
static void daemon_child_setup(gpointer data)
{
    MvmdTestBus *bus = data;
    struct rlimit limit = {bus->daemon_nofile_soft, bus->daemon_nofile_hard};

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Only async-signal-safe calls here; a failure shows as the limit the test then reads. */
    if (bus->daemon_nofile_hard > 0)
        setrlimit(RLIMIT_NOFILE, &limit);
}

static char *read_line_from_fd(int fd)
{
    GString *line = g_string_new(NULL);
    char c;

    while (read(fd, &c, 1) == 1 && c != '\n')
        g_string_append_c(line, c);
    return g_string_free(line, FALSE);
}

const char *mvmd_test_guest_or_skip(void)
{
    g_autofree char *kvm_unusable = kvm_device_unusable();
    const char *testguest = g_getenv("MVM_TESTGUEST");

    if (kvm_unusable) {
        g_printerr("SKIP: %s\n", kvm_unusable);
        exit(77);
    }
    if (!g_getenv("MICROVMD") || !testguest || !g_file_test(testguest, G_FILE_TEST_EXISTS)) {
        g_printerr("SKIP: MICROVMD or MVM_TESTGUEST not set, or the test guest was not built\n");
        exit(77);
    }
    return testguest;
}

MvmdTestBus *mvmd_test_bus_new(void)
{
    MvmdTestBus *bus = g_new0(MvmdTestBus, 1);
    g_autoptr(GError) error = NULL;
    g_autofree char *listen_arg = NULL;
    int out_fd = -1;

    bus->tmpdir = g_dir_make_tmp("microvmd-test-XXXXXX", &error);
    g_assert_no_error(error);
    bus->state_dir = g_build_filename(bus->tmpdir, "state", NULL);
    bus->runtime_dir = g_build_filename(bus->tmpdir, "run", NULL);
    listen_arg = g_strconcat("--address=unix:dir=", bus->tmpdir, NULL);

    {
        const char *argv[] = {
            "dbus-daemon", "--config-file=" MVM_PRIVATE_BUS_CONF,
            listen_arg,    "--print-address=1",
            "--nofork",    NULL,
        };
        g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                 G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                                     G_SPAWN_STDERR_TO_DEV_NULL,
                                 child_setup, NULL, &bus->bus_pid, NULL, &out_fd, NULL, &error);
        g_assert_no_error(error);
    }
    bus->address = read_line_from_fd(out_fd);
    close(out_fd);
    g_assert_cmpstr(bus->address, !=, "");
    bus->connection = mvmd_test_bus_connect(bus);
    return bus;
}

GDBusConnection *mvmd_test_bus_connect(MvmdTestBus *bus)
{
    g_autoptr(GError) error = NULL;
    GDBusConnection *connection =
        g_dbus_connection_new_for_address_sync(bus->address,
                                               G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                   G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                               NULL, NULL, &error);

    g_assert_no_error(error);
    g_dbus_connection_set_exit_on_close(connection, FALSE);
    return connection;
}

static gboolean bus_name_has_owner(MvmdTestBus *bus, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        bus->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "NameHasOwner", g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE,
        -1, NULL, &error);
    gboolean owned = FALSE;

    g_assert_no_error(error);
    g_variant_get(reply, "(b)", &owned);
    return owned;
}

static gboolean name_has_owner(MvmdTestBus *bus)
{
    return bus_name_has_owner(bus, BUS_NAME);
}

gboolean mvmd_test_bus_daemon_alive(MvmdTestBus *bus)
{
    int status;

    if (bus->daemon_pid <= 0)
        return FALSE;
    return waitpid(bus->daemon_pid, &status, WNOHANG) == 0;
}

/*
 * Ours, with what systemd would add ($NOTIFY_SOCKET, $LISTEN_FDS, $LISTEN_FDNAMES) when the
 * test asks, and never a store or descriptors of whoever runs the tests (a systemd unit).
 */
static GStrv daemon_environment(MvmdTestBus *bus)
{
    GStrv env = g_get_environ();

    for (const char *const *v =
             (const char *const[]){"FDSTORE", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", NULL};
         *v; v++)
        env = g_environ_unsetenv(env, *v);
    if (bus->daemon_notify_socket)
        env = g_environ_setenv(env, "NOTIFY_SOCKET", bus->daemon_notify_socket, TRUE);
    if (bus->daemon_listen_fds) {
        g_autofree char *n = g_strdup_printf("%u", bus->daemon_listen_fds->len);
        g_autoptr(GString) names = g_string_new(NULL);

        for (guint i = 0; i < bus->daemon_listen_names->len; i++)
            g_string_append_printf(names, "%s%s", i ? ":" : "",
                                   (const char *)bus->daemon_listen_names->pdata[i]);
        env = g_environ_setenv(env, "LISTEN_FDS", n, TRUE);
        env = g_environ_setenv(env, "LISTEN_FDNAMES", names->str, TRUE);
    }
    return env;
}

/*
 * Passed descriptors go to 3, 4… and $LISTEN_PID must be the daemon's own pid: a shell sets
 * it to its own, which exec keeps.
 */
static void spawn_daemon(MvmdTestBus *bus, GPtrArray *argv, int out, GError **error)
{
    g_auto(GStrv) env = daemon_environment(bus);
    guint n = bus->daemon_listen_fds ? bus->daemon_listen_fds->len : 0;
    g_autofree int *targets = g_new0(int, n + 1);

    if (n > 0) {
        const char *shell[] = {"/bin/sh", "-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\""};

        for (guint i = 0; i < G_N_ELEMENTS(shell); i++)
            g_ptr_array_insert(argv, (gint)i, g_strdup(shell[i]));
    }
    for (guint i = 0; i < n; i++)
        targets[i] = 3 + (int)i;
    g_spawn_async_with_pipes_and_fds(
        NULL, (const char *const *)argv->pdata, (const char *const *)env,
        G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, daemon_child_setup, bus, -1, out, out,
        n > 0 ? (const int *)bus->daemon_listen_fds->data : NULL, n > 0 ? targets : NULL, n,
        &bus->daemon_pid, NULL, NULL, NULL, error);
}

void mvmd_test_bus_start_daemon(MvmdTestBus *bus, const char *const *extra_args)
{
    const char *microvmd = g_getenv("MICROVMD");
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) error = NULL;
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    const char *wrapper = g_getenv("MVMD_TEST_DAEMON_WRAPPER");
    int out;

    g_assert_nonnull(microvmd);
    g_assert_cmpint(bus->daemon_pid, ==, 0);
    /* e.g. MVMD_TEST_DAEMON_WRAPPER="valgrind --error-exitcode=1 --leak-check=full" */
    if (wrapper && *wrapper) {
        g_auto(GStrv) words = NULL;

        g_shell_parse_argv(wrapper, NULL, &words, &error);
        g_assert_no_error(error);
        for (char **w = words; *w; w++)
            g_ptr_array_add(argv, g_strdup(*w));
    }
    g_ptr_array_add(argv, g_strdup(microvmd));
    g_ptr_array_add(argv, g_strconcat("--address=", bus->address, NULL));
    g_ptr_array_add(argv, g_strconcat("--state-dir=", bus->state_dir, NULL));
    g_ptr_array_add(argv, g_strconcat("--runtime-dir=", bus->runtime_dir, NULL));
    if (g_getenv("MVMD_TEST_VERBOSE"))
        g_ptr_array_add(argv, g_strdup("--verbose"));
    for (const char *const *a = extra_args; a && *a; a++)
        g_ptr_array_add(argv, g_strdup(*a));
    g_ptr_array_add(argv, NULL);
    /* Its stdout/stderr go to the test log (a TAP stream takes stdout: send both to stderr),
     * or to the file the test reads. */
    out = bus->daemon_log ? open(bus->daemon_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
                          : STDERR_FILENO;
    g_assert_cmpint(out, >=, 0);
    spawn_daemon(bus, argv, out, &error);
    if (out != STDERR_FILENO)
        close(out);
    g_assert_no_error(error);
    while (!name_has_owner(bus)) {
        g_assert_true(mvmd_test_bus_daemon_alive(bus));
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
}

int mvmd_test_bus_stop_daemon(MvmdTestBus *bus, guint timeout_sec)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_sec * G_USEC_PER_SEC;
    int status;

    g_assert_cmpint(bus->daemon_pid, >, 0);
    kill(bus->daemon_pid, SIGTERM);
    for (;;) {
        pid_t r = waitpid(bus->daemon_pid, &status, WNOHANG);

        if (r == bus->daemon_pid)
            break;
        if (g_get_monotonic_time() > deadline) {
            kill(bus->daemon_pid, SIGKILL);
            waitpid(bus->daemon_pid, &status, 0);
            bus->daemon_pid = 0;
            return -1;
        }
        g_usleep(10 * 1000);
    }
    bus->daemon_pid = 0;
    /* Wait until the bus has noticed, so a restarted daemon can own the name. */
    for (int i = 0; i < 500 && name_has_owner(bus); i++)
        g_usleep(10 * 1000);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

void mvmd_test_bus_free(MvmdTestBus *bus)
{
    if (!bus)
        return;
    if (bus->daemon_pid > 0) {
        kill(bus->daemon_pid, SIGKILL);
        waitpid(bus->daemon_pid, NULL, 0);
    }
    if (bus->connection) {
        g_dbus_connection_close_sync(bus->connection, NULL, NULL);
        g_object_unref(bus->connection);
    }
    if (bus->bus_pid > 0) {
        kill(bus->bus_pid, SIGTERM);
        waitpid(bus->bus_pid, NULL, 0);
    }
    rm_rf(bus->tmpdir);
    g_free(bus->tmpdir);
    g_free(bus->state_dir);
    g_free(bus->runtime_dir);
    g_free(bus->address);
    g_free(bus->daemon_log);
    g_free(bus->daemon_notify_socket);
    g_free(bus);
}

MvmdManager *mvmd_test_bus_manager(MvmdTestBus *bus, GDBusConnection *connection)
{
    g_autoptr(GError) error = NULL;
    MvmdManager *manager = mvmd_manager_proxy_new_sync(connection ? connection : bus->connection,
                                                       G_DBUS_PROXY_FLAGS_NONE, BUS_NAME,
                                                       "/org/microvmd/MicroVM1", NULL, &error);

    g_assert_no_error(error);
    return manager;
}

MvmdVm *mvmd_test_bus_vm(MvmdTestBus *bus, GDBusConnection *connection, const char *path)
{
    g_autoptr(GError) error = NULL;
    MvmdVm *vm = mvmd_vm_proxy_new_sync(connection ? connection : bus->connection,
                                        G_DBUS_PROXY_FLAGS_NONE, BUS_NAME, path, NULL, &error);

    g_assert_no_error(error);
    return vm;
}

GVariant *mvmd_test_config(const char *text)
{
    g_autofree char *typed = g_strconcat("@a{sv} ", text, NULL);

    /* Parsed as a format, so no '%' conversions in the tests' texts. Floating, like
     * g_variant_new(): the call that takes it owns it. */
    g_assert_null(strchr(text, '%'));
    return g_variant_new_parsed(typed);
}

void mvmd_test_assert_dbus_error(GError *error, const char *name)
{
    g_autofree char *remote = NULL;

    g_assert_nonnull(error);
    remote = g_dbus_error_get_remote_error(error);
    if (g_strcmp0(remote, name) != 0)
        g_error("expected %s, got %s (%s)", name, remote ? remote : "(local)", error->message);
}

void mvmd_test_assert_dbus_error_says(GError *error, const char *name, const char *says)
{
    g_autofree char *message = g_strdup(error ? error->message : "");

    mvmd_test_assert_dbus_error(error, name);
    if (says && !strstr(message, says))
        g_error("'%s' not in the error: %s", says, message);
}

/* ---- VM calls ---- */

gboolean mvmd_test_vm_call(MvmdVm *vm, const char *method, GVariant *args, GUnixFDList *fds,
                           GError **error)
{
    g_autoptr(GVariant) reply = g_dbus_proxy_call_with_unix_fd_list_sync(
        G_DBUS_PROXY(vm), method, args, G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
        NULL, NULL, error);

    return reply != NULL;
}

void mvmd_test_vm_call_ok(MvmdVm *vm, const char *method, GVariant *args)
{
    g_autoptr(GError) error = NULL;

    mvmd_test_vm_call(vm, method, args, NULL, &error);
    g_assert_no_error(error);
}

void mvmd_test_vm_wait_state(MvmdVm *vm, const char *state)
{
    gint64 deadline = g_get_monotonic_time() + MVMD_TEST_GUEST_TIMEOUT_MS * 1000LL;

    while (g_strcmp0(mvmd_vm_get_state(vm), state) != 0) {
        if (g_get_monotonic_time() > deadline)
            g_error("%s: state %s, expected %s (exit reason: %s)", mvmd_vm_get_name(vm),
                    mvmd_vm_get_state(vm), state, mvmd_test_vm_exit_reason(vm));
        if (!g_main_context_iteration(NULL, FALSE))
            g_usleep(1000);
    }
}

int mvmd_test_fd_list_append_file(GUnixFDList *fds, const char *path, int flags)
{
    g_autoptr(GError) error = NULL;
    int fd = open(path, flags | O_CLOEXEC, 0600);
    int index;

    g_assert_cmpint(fd, >=, 0);
    index = g_unix_fd_list_append(fds, fd, &error);
    g_assert_no_error(error);
    close(fd);
    return index;
}

char *mvmd_test_reachable_copy(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("microvmd-reachable-XXXXXX", &error);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *contents = NULL;
    char *copy = NULL;
    gsize len = 0;

    g_assert_no_error(error);
    copy = g_build_filename(dir, base, NULL);
    g_file_get_contents(path, &contents, &len, &error);
    g_assert_no_error(error);
    g_file_set_contents_full(copy, contents, len, G_FILE_SET_CONTENTS_NONE, 0755, &error);
    g_assert_no_error(error);
    /* Both explicitly: g_dir_make_tmp() makes 0700 and the umask may have trimmed the copy. */
    g_assert_cmpint(g_chmod(copy, 0755), ==, 0);
    g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
    return copy;
}

void mvmd_test_remove_reachable_copy(char *copy)
{
    g_autofree char *dir = g_path_get_dirname(copy);

    rm_rf(dir);
    g_free(copy);
}

void mvmd_test_drop_to_nobody(gpointer data)
{
    if (setgroups(0, NULL) < 0 ||
        setresgid(MVMD_TEST_NOBODY, MVMD_TEST_NOBODY, MVMD_TEST_NOBODY) < 0 ||
        setresuid(MVMD_TEST_NOBODY, MVMD_TEST_NOBODY, MVMD_TEST_NOBODY) < 0)
        _exit(126);
}

void mvmd_test_bus_open_to_all(MvmdTestBus *bus)
{
    g_assert_cmpint(g_chmod(bus->tmpdir, 0755), ==, 0);
}

GSubprocess *mvmd_test_vm_call_as_nobody(MvmdTestBus *bus, const char *name, const char *method)
{
    return mvmd_test_vm_call_as_nobody_with(bus, name, method, NULL);
}

GSubprocess *mvmd_test_vm_call_as_nobody_with(MvmdTestBus *bus, const char *name,
                                              const char *method, const char *args)
{
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
    g_autofree char *path = g_strconcat("/org/microvmd/MicroVM1/vm/", name, NULL);
    g_autofree char *member = g_strconcat("org.microvmd.MicroVM1.VM.", method, NULL);
    g_autoptr(GError) error = NULL;
    GSubprocess *child;

    g_subprocess_launcher_set_child_setup(launcher, mvmd_test_drop_to_nobody, NULL, NULL);
    g_subprocess_launcher_set_cwd(launcher, "/");
    child = g_subprocess_launcher_spawn(launcher, &error, "gdbus", "call", "--address",
                                        bus->address, "--dest", "org.microvmd.MicroVM1",
                                        "--object-path", path, "--method", member, args, NULL);
    g_assert_no_error(error);
    return child;
}

GSubprocess *mvmd_test_start_polkit_mock(MvmdTestBus *bus, const char *action)
{
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE);
    g_autoptr(GSubprocess) mock = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = NULL;
    gint status = -1;

    if (!g_spawn_command_line_sync("/usr/bin/python3 -c 'import dbusmock'", NULL, NULL, &status,
                                   NULL) ||
        !g_spawn_check_wait_status(status, NULL))
        return NULL;
    g_subprocess_launcher_setenv(launcher, "DBUS_SESSION_BUS_ADDRESS", bus->address, TRUE);
    g_subprocess_launcher_set_child_setup(launcher, child_setup, NULL, NULL);
    mock = g_subprocess_launcher_spawn(launcher, &error, "/usr/bin/python3", "-m", "dbusmock",
                                       "--session", "--template", "polkitd", NULL);
    g_assert_no_error(error);
    mvmd_test_wait_until(bus_name_has_owner(bus, "org.freedesktop.PolicyKit1"), 30000);
    reply = g_dbus_connection_call_sync(
        bus->connection, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
        "org.freedesktop.DBus.Mock", "SetAllowed", g_variant_new_parsed("([%s],)", action), NULL,
        G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);
    return g_steal_pointer(&mock);
}

GVariant *mvmd_test_vm_config(MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    GVariant *config = NULL;

    mvmd_vm_call_get_config_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &config, NULL, &error);
    g_assert_no_error(error);
    g_object_set_data_full(G_OBJECT(vm), "mvmd-test-config", config,
                           (GDestroyNotify)g_variant_unref);
    return config;
}

const char *mvmd_test_vm_exit_reason(MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    char *reason = NULL;

    mvmd_vm_call_get_exit_reason_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &reason, NULL, &error);
    g_assert_no_error(error);
    g_object_set_data_full(G_OBJECT(vm), "mvmd-test-exit-reason", reason, g_free);
    return reason;
}

/* ---- consoles ---- */

MvmdTestConsole *mvmd_test_console_try_open(MvmdVm *vm, GError **error)
{
    g_autoptr(GVariant) handle = NULL;
    g_autoptr(GUnixFDList) fds = NULL;
    MvmdTestConsole *c;

    if (!mvmd_vm_call_open_console_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &handle, &fds, NULL,
                                        error))
        return NULL;
    c = g_new0(MvmdTestConsole, 1);
    c->fd = g_unix_fd_list_get(fds, g_variant_get_handle(handle), error);
    g_assert_cmpint(c->fd, >=, 0);
    c->seen = g_string_new(NULL);
    return c;
}

MvmdTestConsole *mvmd_test_console_open(MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    MvmdTestConsole *c = mvmd_test_console_try_open(vm, &error);

    g_assert_no_error(error);
    return c;
}

void mvmd_test_console_close(MvmdTestConsole *c)
{
    close(c->fd);
    g_string_free(c->seen, TRUE);
    g_free(c);
}

gsize mvmd_test_console_expect(MvmdTestConsole *c, gsize from, const char *text)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    for (;;) {
        const char *hit = from <= c->seen->len ? strstr(c->seen->str + from, text) : NULL;
        struct pollfd p = {c->fd, POLLIN, 0};
        char buf[4096];
        ssize_t n;

        if (hit)
            return hit - c->seen->str + strlen(text);
        if (g_get_monotonic_time() > deadline)
            g_error("console: '%s' not seen; got:\n%s", text, c->seen->str);
        if (poll(&p, 1, 100) <= 0)
            continue;
        n = read(c->fd, buf, sizeof(buf));
        if (n <= 0)
            g_error("console closed (%s); got:\n%s", n < 0 ? g_strerror(errno) : "EOF",
                    c->seen->str);
        g_string_append_len(c->seen, buf, n);
    }
}

gint64 mvmd_test_console_next_counter(MvmdTestConsole *c)
{
    return mvmd_test_console_next_number(c, "COUNTER ");
}

gint64 mvmd_test_console_next_number(MvmdTestConsole *c, const char *prefix)
{
    gsize start = mvmd_test_console_expect(c, c->at, prefix);

    c->at = mvmd_test_console_expect(c, start, "\n");
    g_assert_null(strstr(c->seen->str, "FAIL"));
    return g_ascii_strtoll(c->seen->str + start, NULL, 10);
}
