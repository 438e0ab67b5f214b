/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmd running real guests (tests/testguest/testguest.elf, see its README for the modes)
 * on a private bus. Needs a usable /dev/kvm: without one the whole test exits 77 (skipped).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include "harness.h"

#define ERR "org.microvmd.MicroVM1.Error."

static const char *testguest;

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    const char *const args[] = {"--shutdown-timeout=2", NULL};

    f->bus = mvmd_test_bus_new();
    /* @data: the daemon's output goes to that file in the test's directory, to be read. */
    if (data)
        f->bus->daemon_log = g_build_filename(f->bus->tmpdir, data, NULL);
    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_clear_object(&f->manager);
    /* Running VMs get 2 s to shut down, then are stopped: the daemon exits 0 either way. */
    if (f->bus->daemon_pid > 0)
        g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    mvmd_test_bus_free(f->bus);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static MvmdVm *create_from_text(Fixture *f, const char *name, const char *text)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

static MvmdVm *create_guest(Fixture *f, const char *name, const char *mode, const char *extra)
{
    g_autofree char *text =
        g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=%s'>, 'debug-exit': <true>,"
                        " 'memory-mib': <uint64 16>%s%s}",
                        testguest, mode, extra ? ", " : "", extra ? extra : "");

    return create_from_text(f, name, text);
}

static void call_fails(MvmdVm *vm, const char *method, GVariant *args, const char *error_name)
{
    g_autoptr(GError) error = NULL;

    mvmd_test_vm_call(vm, method, args, NULL, &error);
    mvmd_test_assert_dbus_error(error, error_name);
}

/*
 * @vm's State as GetManagedObjects reports it: the daemon caches each VM's properties for that
 * call, and the cache must follow every change PropertiesChanged announced.
 */
static char *managed_state(Fixture *f, MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        f->bus->connection, "org.microvmd.MicroVM1", "/org/microvmd/MicroVM1",
        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
        G_VARIANT_TYPE("(a{oa{sa{sv}}})"), G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL,
        &error);
    g_autoptr(GVariant) objects = NULL, interfaces = NULL, properties = NULL;
    const char *state = NULL;

    g_assert_no_error(error);
    objects = g_variant_get_child_value(reply, 0);
    g_assert_true(g_variant_lookup(objects, g_dbus_proxy_get_object_path(G_DBUS_PROXY(vm)),
                                   "@a{sa{sv}}", &interfaces));
    g_assert_true(g_variant_lookup(interfaces, "org.microvmd.MicroVM1.VM", "@a{sv}", &properties));
    g_assert_true(g_variant_lookup(properties, "State", "&s", &state));
    return g_strdup(state);
}

static void wait_state_everywhere(Fixture *f, MvmdVm *vm, const char *state)
{
    g_autofree char *managed = NULL;

    mvmd_test_vm_wait_state(vm, state);
    managed = managed_state(f, vm);
    g_assert_cmpstr(managed, ==, state);
}

static void console_send(MvmdTestConsole *c, const char *text)
{
    g_assert_cmpint(write(c->fd, text, strlen(text)), ==, (gssize)strlen(text));
}

static void record_state(GDBusProxy *proxy, GVariant *changed, GStrv invalidated, GPtrArray *states)
{
    const char *state;

    if (g_variant_lookup(changed, "State", "&s", &state))
        g_ptr_array_add(states, g_strdup(state));
}

static gboolean strv_has(GPtrArray *array, const char *s)
{
    for (guint i = 0; i < array->len; i++) {
        if (g_str_equal(array->pdata[i], s))
            return TRUE;
    }
    return FALSE;
}

/* GetConfig's `generation-id`: "" while @vm has no machine. */
static char *config_generation_id(MvmdVm *vm)
{
    const char *id = NULL;

    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "generation-id", "&s", &id));
    return g_strdup(id);
}

/* The generation ID of @vm's machine: a UUID's form, in lowercase. */
static char *live_generation_id(MvmdVm *vm)
{
    g_autofree char *id = config_generation_id(vm);
    g_autofree char *lower = g_ascii_strdown(id, -1);

    g_assert_true(g_uuid_string_is_valid(id));
    g_assert_cmpstr(id, ==, lower);
    return g_steal_pointer(&id);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_echo_console(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_guest(f, "echo", "echo", NULL);
    g_autoptr(GPtrArray) states = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GVariant) stats = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *log_path = NULL;
    g_autofree char *log = NULL;
    guint64 created_at = mvmd_vm_get_state_changed_at(vm);
    MvmdTestConsole *c1, *c2;
    gsize at;
    guint64 t;
    gint64 x;

    g_signal_connect(vm, "g-properties-changed", G_CALLBACK(record_state), states);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    g_assert_true(strv_has(states, "running"));
    g_assert_cmpuint(mvmd_vm_get_state_changed_at(vm), >, created_at);
    g_assert_cmpstr(mvmd_test_vm_exit_reason(vm), ==, "");
    call_fails(vm, "Start", NULL, ERR "InvalidState");
    call_fails(vm, "Resume", NULL, ERR "InvalidState");
    call_fails(vm, "Delete", NULL, ERR "InvalidState");

    c1 = mvmd_test_console_open(vm);
    at = mvmd_test_console_expect(c1, 0, "TESTGUEST echo start");
    at = mvmd_test_console_expect(c1, at, "READY");
    console_send(c1, "hello\r");
    at = mvmd_test_console_expect(c1, at, "hello");

    /* A late client gets the boot replayed, then the live output. */
    c2 = mvmd_test_console_open(vm);
    mvmd_test_console_expect(c2, mvmd_test_console_expect(c2, 0, "READY"), "hello");
    console_send(c2, "again\r");
    mvmd_test_console_expect(c1, at, "again");
    mvmd_test_console_expect(c2, 0, "again");

    mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(g_variant_lookup(stats, "memory-bytes", "t", &t));
    g_assert_cmpuint(t, ==, 16 * 1024 * 1024);
    g_assert_true(g_variant_lookup(stats, "uptime-us", "x", &x));
    g_assert_cmpint(x, >, 0);

    mvmd_test_vm_call_ok(vm, "Pause", g_variant_new_parsed("(@a{sv} {},)"));
    mvmd_test_vm_wait_state(vm, "paused");
    call_fails(vm, "Pause", g_variant_new_parsed("(@a{sv} {},)"), ERR "InvalidState");
    call_fails(vm, "Shutdown", g_variant_new("(u)", 1), ERR "InvalidState");
    mvmd_test_vm_call_ok(vm, "Resume", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    console_send(c1, "after-resume\r");
    mvmd_test_console_expect(c1, at, "after-resume");

    /* The clock-freezing pause: the same states, and the guest goes on afterwards. */
    mvmd_test_vm_call_ok(vm, "Pause", g_variant_new_parsed("({'freeze-clock': <true>},)"));
    mvmd_test_vm_wait_state(vm, "paused");
    mvmd_test_vm_call_ok(vm, "Resume", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    console_send(c1, "after-frozen\r");
    mvmd_test_console_expect(c1, at, "after-frozen");

    /* "quit" ends the echo loop: the guest reports and leaves through the debug exit. */
    console_send(c1, "quit\r");
    mvmd_test_console_expect(c1, at, "TESTGUEST-DONE echo PASS");
    mvmd_test_vm_wait_state(vm, "stopped");
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(vm), "debug-exit"));
    g_assert_true(strv_has(states, "paused"));
    g_assert_true(strv_has(states, "stopped"));

    log_path = g_build_filename(f->bus->runtime_dir, "vm", "echo", "console.log", NULL);
    g_file_get_contents(log_path, &log, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(strstr(log, "READY"));
    g_assert_nonnull(strstr(log, "TESTGUEST-DONE echo PASS"));
    mvmd_test_console_close(c1);
    mvmd_test_console_close(c2);
    g_signal_handlers_disconnect_by_data(vm, states);
}

typedef struct {
    guint answered;
    GString *errors;
} Pipelined;

static void on_pipelined_reply(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Pipelined *p = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);

    if (!reply)
        g_string_append_printf(p->errors, "call %u: %s\n", p->answered, error->message);
    p->answered++;
}

/*
 * A client that sends without waiting (busctl, cockpit.js, any async caller) gets its calls
 * acted on in the order it sent them. Each round is a fresh connection, whose first calls wait
 * for the bus to say who it is while a later one could be decided at once (daemon/auth.c,
 * uid_lookups). The VM is paused: GetExitReason, Resume, Pause succeed only in that order
 * (a Pause before the Resume would meet a paused VM: InvalidState).
 */
static void test_pipelined_calls_in_order(Fixture *f, gconstpointer data)
{
    static const char *const methods[] = {"GetExitReason", "Resume", "Pause"};
    g_autoptr(MvmdVm) vm = create_guest(f, "pipelined", "echo", NULL);
    const char *path = g_dbus_proxy_get_object_path(G_DBUS_PROXY(vm));
    Pipelined p = {.errors = g_string_new(NULL)};

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    mvmd_test_vm_call_ok(vm, "Pause", g_variant_new("(@a{sv})", mvmd_test_config("{}")));
    for (guint round = 0; round < 20; round++) {
        g_autoptr(GDBusConnection) fresh = mvmd_test_bus_connect(f->bus);

        p.answered = 0;
        for (guint i = 0; i < G_N_ELEMENTS(methods); i++) {
            GVariant *args = g_str_equal(methods[i], "Pause")
                                 ? g_variant_new("(@a{sv})", mvmd_test_config("{}"))
                                 : NULL;

            g_dbus_connection_call(fresh, "org.microvmd.MicroVM1", path, "org.microvmd.MicroVM1.VM",
                                   methods[i], args, NULL, G_DBUS_CALL_FLAGS_NONE, -1, NULL,
                                   on_pipelined_reply, &p);
        }
        mvmd_test_wait_until(p.answered == G_N_ELEMENTS(methods), MVMD_TEST_GUEST_TIMEOUT_MS);
        g_assert_cmpuint(p.answered, ==, G_N_ELEMENTS(methods));
        g_assert_cmpstr(p.errors->str, ==, "");
        mvmd_test_vm_wait_state(vm, "paused");
    }
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_vm_call_ok(vm, "Delete", NULL);
    g_string_free(p.errors, TRUE);
}

/*
 * A fresh machine at each Start and Reboot, with the console carrying on, and the same VM
 * generation ID each time: a reboot is no new generation.
 */
static void test_stop_start_reboot(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_guest(f, "cycle", "echo", NULL);
    g_autoptr(GError) error = NULL;
    g_autofree char *id = NULL;
    g_autofree char *again = NULL;
    g_autofree char *none = NULL;
    MvmdTestConsole *c;
    gsize at;

    none = config_generation_id(vm);
    g_assert_cmpstr(none, ==, "");
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    c = mvmd_test_console_open(vm);
    at = mvmd_test_console_expect(c, 0, "READY");
    wait_state_everywhere(f, vm, "running");
    id = live_generation_id(vm);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    wait_state_everywhere(f, vm, "stopped");
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(vm), "requested"));
    call_fails(vm, "Stop", NULL, ERR "InvalidState");
    g_free(none);
    none = config_generation_id(vm);
    g_assert_cmpstr(none, ==, "");

    /* A fresh machine each time; the console carries on. */
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    wait_state_everywhere(f, vm, "running");
    g_assert_cmpstr(mvmd_test_vm_exit_reason(vm), ==, "");
    again = live_generation_id(vm);
    g_assert_cmpstr(again, ==, id);
    at = mvmd_test_console_expect(c, at, "READY");
    mvmd_test_vm_call_ok(vm, "Reboot", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    g_free(again);
    again = live_generation_id(vm);
    g_assert_cmpstr(again, ==, id);
    at = mvmd_test_console_expect(c, at, "READY");
    console_send(c, "still-here\r");
    mvmd_test_console_expect(c, at, "still-here");
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_vm_call_ok(vm, "Delete", NULL);
    mvmd_test_console_close(c);
}

/* Starts @bad beside a running VM and returns why @bad crashed; the other VM must not notice. */
static char *crash_beside_running_vm(Fixture *f, MvmdVm *bad)
{
    g_autoptr(MvmdVm) good = create_guest(f, "good", "echo", NULL);
    MvmdTestConsole *c;
    gsize at;

    mvmd_test_vm_call_ok(good, "Start", NULL);
    c = mvmd_test_console_open(good);
    at = mvmd_test_console_expect(c, 0, "READY");
    mvmd_test_vm_call_ok(bad, "Start", NULL);
    mvmd_test_vm_wait_state(bad, "crashed");
    g_test_message("crashed: %s", mvmd_test_vm_exit_reason(bad));

    g_assert_cmpstr(mvmd_vm_get_state(good), ==, "running");
    console_send(c, "unharmed\r");
    mvmd_test_console_expect(c, at, "unharmed");
    mvmd_test_console_close(c);
    return g_strdup(mvmd_test_vm_exit_reason(bad));
}

static void test_triplefault_isolated(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) bad = create_guest(f, "bad", "triplefault", NULL);
    g_autofree char *reason = crash_beside_running_vm(f, bad);

    g_assert_true(g_str_has_prefix(reason, "triple-fault") ||
                  g_str_has_prefix(reason, "internal-error"));

    /* A crashed VM can be started again (and crashes again). */
    mvmd_test_vm_call_ok(bad, "Start", NULL);
    mvmd_test_vm_wait_state(bad, "crashed");
}

/*
 * An I/O thread that breaks its sandbox (the test build's probe): that VM crashes and the log
 * names it; the daemon, and a VM beside it, go on.
 */
static void test_sandbox_violation_isolated(Fixture *f, gconstpointer data)
{
#ifndef MVM_TEST_HOOKS
    g_test_skip("the probe is in test builds only (meson -Dtest_hooks=true)");
    return;
#endif
    if (g_getenv("MVM_SANDBOX") && !g_str_equal(g_getenv("MVM_SANDBOX"), "enforce")) {
        g_test_skip("the sandbox is not enforced here (MVM_SANDBOX)");
        return;
    }
    g_assert_true(g_strv_contains(mvmd_manager_get_capabilities(f->manager), "seccomp"));
    g_autoptr(MvmdVm) bad = create_guest(f, "breakout", "sandbox thread=io", "'rng': <true>");
    g_autofree char *reason = crash_beside_running_vm(f, bad);
    g_autofree char *log = NULL;

    g_assert_true(g_str_has_prefix(
        reason, "sandbox-violation: the I/O thread made system call socket (41; arguments 0x2,"));
    g_assert_true(g_file_get_contents(f->bus->daemon_log, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, "breakout: run ended: sandbox-violation: the I/O thread"));
}

static void test_shutdown_timeout(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_guest(f, "stubborn", "echo", NULL);
    gint64 start;
    MvmdTestConsole *c;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    c = mvmd_test_console_open(vm);
    mvmd_test_console_expect(c, 0, "READY");
    /* The echo guest ignores Ctrl-Alt-Del: Shutdown times out and leaves it running. */
    start = g_get_monotonic_time();
    call_fails(vm, "Shutdown", g_variant_new("(u)", 2), ERR "Timeout");
    g_assert_cmpint(g_get_monotonic_time() - start, >=, 2 * G_USEC_PER_SEC - 100000);
    g_main_context_iteration(NULL, FALSE);
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "running");
    mvmd_test_console_close(c);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
}

/* Bounds from daemon/bounds.h, as documented in docs/usage-dbus.md. */
#define CONSOLE_CLIENTS_MAX 16
#define VM_WAITERS_MAX      64

static void console_open_fails(MvmdVm *vm, const char *error_name)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(mvmd_test_console_try_open(vm, &error));
    mvmd_test_assert_dbus_error(error, error_name);
}

/* One VM's console clients are bounded; those attached and another VM's console go on. */
static void test_console_clients_bounded(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_guest(f, "crowded", "echo", NULL);
    g_autoptr(MvmdVm) other = create_guest(f, "quiet", "echo", NULL);
    g_autoptr(GPtrArray) consoles =
        g_ptr_array_new_with_free_func((GDestroyNotify)mvmd_test_console_close);
    MvmdTestConsole *c;
    gsize at;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_vm_call_ok(other, "Start", NULL);
    for (guint i = 0; i < CONSOLE_CLIENTS_MAX; i++)
        g_ptr_array_add(consoles, mvmd_test_console_open(vm));
    console_open_fails(vm, ERR "LimitReached");

    c = consoles->pdata[0];
    at = mvmd_test_console_expect(c, 0, "READY");
    console_send(c, "still here\r");
    mvmd_test_console_expect(c, at, "still here");
    c = mvmd_test_console_open(other);
    at = mvmd_test_console_expect(c, 0, "READY");
    console_send(c, "unaffected\r");
    mvmd_test_console_expect(c, at, "unaffected");
    mvmd_test_console_close(c);

    /* A client that leaves makes room (the daemon sees the hang-up on its main loop). */
    g_ptr_array_remove_index(consoles, 1);
    for (gint64 deadline = g_get_monotonic_time() + MVMD_TEST_GUEST_TIMEOUT_MS * 1000LL;;) {
        g_autoptr(GError) error = NULL;

        c = mvmd_test_console_try_open(vm, &error);
        if (c)
            break;
        mvmd_test_assert_dbus_error(error, ERR "LimitReached");
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10000);
    }
    mvmd_test_console_expect(c, 0, "READY");
    mvmd_test_console_close(c);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_call_ok(other, "Stop", NULL);
}

static void on_shutdown_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    GPtrArray *errors = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_proxy_call_finish(G_DBUS_PROXY(source), result, &error);

    g_ptr_array_add(errors, error ? g_dbus_error_get_remote_error(error) : g_strdup("ok"));
}

/* Shutdown callers waiting on one VM are bounded; a Stop answers every one of them. */
static void test_shutdown_waiters_bounded(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_guest(f, "stubborn", "echo", NULL);
    g_autoptr(GPtrArray) done = g_ptr_array_new_with_free_func(g_free);
    MvmdTestConsole *c;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    c = mvmd_test_console_open(vm);
    mvmd_test_console_expect(c, 0, "READY");
    /* The echo guest ignores Ctrl-Alt-Del: every Shutdown waits, up to an hour. */
    for (guint i = 0; i < VM_WAITERS_MAX + 1; i++)
        g_dbus_proxy_call(G_DBUS_PROXY(vm), "Shutdown", g_variant_new("(u)", 3600),
                          G_DBUS_CALL_FLAGS_NONE, G_MAXINT, NULL, on_shutdown_done, done);
    /* Only the call past the bound is answered while the guest runs. */
    mvmd_test_wait_until(done->len == 1, MVMD_TEST_GUEST_TIMEOUT_MS);
    g_assert_cmpstr(done->pdata[0], ==, ERR "LimitReached");
    call_fails(vm, "Shutdown", g_variant_new("(u)", 3600), ERR "LimitReached");
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "running");

    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_wait_until(done->len == VM_WAITERS_MAX + 1, MVMD_TEST_GUEST_TIMEOUT_MS);
    for (guint i = 1; i < done->len; i++)
        g_assert_cmpstr(done->pdata[i], ==, "ok");
    mvmd_test_console_close(c);
}

/*
 * Shutdown that the guest answers (mode=ctrlaltdel): by a reset (as Linux with reboot=k),
 * which ends the VM instead of restarting it, or by leaving through the debug exit. Then the
 * daemon's SIGTERM: the guest is asked the same way, and its console log shows it answered.
 */
static void test_graceful_shutdown(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) polite = create_guest(f, "polite", "ctrlaltdel", NULL);
    g_autoptr(MvmdVm) leaving = create_guest(f, "leaving", "ctrlaltdel action=exit", NULL);
    g_autoptr(MvmdVm) last = create_guest(f, "last", "ctrlaltdel", NULL);
    g_autofree char *log_path =
        g_build_filename(f->bus->runtime_dir, "vm", "last", "console.log", NULL);
    g_autofree char *log = NULL;
    MvmdTestConsole *c;

    for (MvmdVm **vm = (MvmdVm *[]){polite, leaving, last, NULL}; *vm; vm++) {
        mvmd_test_vm_call_ok(*vm, "Start", NULL);
        c = mvmd_test_console_open(*vm);
        mvmd_test_console_expect(c, 0, "WAITING");
        mvmd_test_console_close(c);
    }
    mvmd_test_vm_call_ok(polite, "Shutdown", g_variant_new("(u)", 30));
    g_main_context_iteration(NULL, FALSE);
    mvmd_test_vm_wait_state(polite, "stopped");
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(polite), "reset"));
    mvmd_test_vm_call_ok(leaving, "Shutdown", g_variant_new("(u)", 30));
    mvmd_test_vm_wait_state(leaving, "stopped");
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(leaving), "debug-exit"));
    /* A stopped VM has nothing to shut down. */
    call_fails(polite, "Shutdown", g_variant_new("(u)", 1), ERR "InvalidState");

    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, "CTRL-ALT-DEL"));
}

static void test_reset(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) once = create_guest(f, "reset-stop", "reset", "'on-reboot': <'stop'>");
    g_autoptr(MvmdVm) again = create_guest(f, "reset-restart", "reset", NULL);
    g_autoptr(GError) error = NULL;
    MvmdTestConsole *c;
    gsize at;

    mvmd_test_vm_call_ok(once, "Start", NULL);
    mvmd_test_vm_wait_state(once, "stopped");
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(once), "reset"));

    /* The default restarts the guest: it comes up again (and resets again...). */
    c = mvmd_test_console_open(again);
    mvmd_test_vm_call_ok(again, "Start", NULL);
    at = mvmd_test_console_expect(c, 0, "TESTGUEST reset start");
    mvmd_test_console_expect(c, at, "TESTGUEST reset start");
    /* Between restarts Stop may meet a machine being rebuilt: retry until it takes. */
    for (int i = 0; i < 100 && g_strcmp0(mvmd_vm_get_state(again), "stopped") != 0; i++) {
        g_autoptr(GVariant) r =
            g_dbus_proxy_call_sync(G_DBUS_PROXY(again), "Stop", NULL, G_DBUS_CALL_FLAGS_NONE,
                                   MVMD_TEST_GUEST_TIMEOUT_MS, NULL, NULL);
        if (!r)
            g_usleep(50000);
        g_main_context_iteration(NULL, FALSE);
    }
    mvmd_test_vm_wait_state(again, "stopped");
    mvmd_test_console_close(c);
}

/* A raw image of @sectors random sectors; its contents in @contents. */
static char *make_image(const char *dir, const char *name, gsize sectors, GBytes **contents)
{
    g_autofree guint8 *data = g_malloc(sectors * 512);
    g_autoptr(GError) error = NULL;
    char *path = g_build_filename(dir, name, NULL);

    for (gsize i = 0; i < sectors * 512; i++)
        data[i] = (guint8)g_random_int();
    g_file_set_contents(path, (const char *)data, sectors * 512, &error);
    g_assert_no_error(error);
    *contents = g_bytes_new(data, sectors * 512);
    return path;
}

/*
 * Writes per second of a `mode=blkloop delay_ms=0` guest on @c over about @ms: the numbers its
 * "BLKLOOP wrote K" lines went up by, over the time they took to come.
 */
static double blkloop_rate(MvmdTestConsole *c, guint ms)
{
    gint64 k0 = mvmd_test_console_next_number(c, "BLKLOOP wrote ");
    gint64 t0 = g_get_monotonic_time(), k = k0, t = t0;

    while (t - t0 < ms * 1000) {
        k = mvmd_test_console_next_number(c, "BLKLOOP wrote ");
        t = g_get_monotonic_time();
    }
    return (k - k0) / ((t - t0) / 1e6);
}

/* Sets disk 0's ops limit of @vm to @bucket (GVariant text; "@a{sv} {}": none). */
static void set_disk0_ops(MvmdVm *vm, const char *bucket)
{
    g_autofree char *text = g_strdup_printf("{'disks': <{uint32 0: {'ops': <%s>}}>}", bucket);

    mvmd_test_vm_call_ok(vm, "SetResources",
                         g_variant_new_tuple((GVariant *[]){mvmd_test_config(text)}, 1));
}

/*
 * A running guest's disk limit changes with SetResources: 5 writes a second at Start, as fast
 * as the guest goes once lifted, 5 again once set again; the guest never notices but in speed.
 */
static void test_disk_rate_limit_live(Fixture *f, gconstpointer data)
{
    g_autoptr(GBytes) contents = NULL;
    g_autofree char *image = make_image(f->bus->tmpdir, "limited.img", 64, &contents);
    g_autofree char *disk = g_strdup_printf(
        "'disks': <[{'path': <'%s'>, 'ops': <{'size': <uint64 1>, 'refill-time-ms': <uint64 "
        "200>}>}]>",
        image);
    g_autoptr(MvmdVm) vm = create_guest(f, "limited", "blkloop delay_ms=0", disk);

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    double limited = blkloop_rate(c, 2000);
    set_disk0_ops(vm, "@a{sv} {}");
    blkloop_rate(c, 200); /* what was printed before the change */
    double lifted = blkloop_rate(c, 1000);
    set_disk0_ops(vm, "{'size': <uint64 1>, 'refill-time-ms': <uint64 200>}");
    blkloop_rate(c, 200);
    double again = blkloop_rate(c, 2000);
    g_test_message("writes per second: %.1f limited to 5, %.1f lifted, %.1f limited again", limited,
                   lifted, again);
    g_assert_cmpfloat(limited, <=, 6);
    g_assert_cmpfloat(again, <=, 6);
    g_assert_cmpfloat(limited, >=, 3);
    g_assert_cmpfloat(lifted, >=, 4 * limited);
    /* GetStats counts the disk's writes and the times its queue waited for the limit. */
    g_autoptr(GVariant) stats = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(
        mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, &error));
    g_autoptr(GVariant) disks = g_variant_lookup_value(stats, "disks", G_VARIANT_TYPE("aa{sv}"));
    g_assert_nonnull(disks);
    g_assert_cmpuint(g_variant_n_children(disks), ==, 1);
    g_autoptr(GVariant) disk0 = g_variant_get_child_value(disks, 0);
    guint64 writes = 0, write_bytes = 0, throttled = 0;
    g_assert_true(g_variant_lookup(disk0, "write-requests", "t", &writes));
    g_assert_true(g_variant_lookup(disk0, "write-bytes", "t", &write_bytes));
    g_assert_true(g_variant_lookup(disk0, "throttled", "t", &throttled));
    g_test_message("GetStats disks[0]: %" G_GUINT64_FORMAT " writes, %" G_GUINT64_FORMAT
                   " bytes, waited %" G_GUINT64_FORMAT " times",
                   writes, write_bytes, throttled);
    g_assert_cmpuint(writes, >=, 10);
    g_assert_cmpuint(write_bytes, ==, writes * 512);
    g_assert_cmpuint(throttled, >=, 5);
    mvmd_test_console_close(c);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
}

/* Runs a guest that ends by itself (debug exit) and returns its console output. */
static char *run_to_end(Fixture *f, MvmdVm *vm)
{
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    char *out;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_console_expect(c, 0, "TESTGUEST-DONE");
    mvmd_test_vm_wait_state(vm, "stopped");
    out = g_strdup(c->seen->str);
    mvmd_test_console_close(c);
    return out;
}

/* Guest-caused messages a VM may log at once (lib/include/microvm.h: MVM_GUEST_LOG_BURST). */
#define GUEST_LOG_BURST 10
#define HOSTILE_ROUNDS  60

static guint count_substrings(const char *text, const char *what)
{
    guint n = 0;

    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Of @vm's lines in @log: those saying @what, and the sum the "suppressed" lines give. */
static guint count_vm_lines(const char *log, const char *vm, const char *what, guint64 *suppressed)
{
    g_auto(GStrv) lines = g_strsplit(log, "\n", -1);
    g_autofree char *prefix = g_strdup_printf(": %s: ", vm);
    guint n = 0;

    *suppressed = 0;
    for (char **l = lines; *l; l++) {
        const char *text = strstr(*l, prefix);

        if (!text)
            continue;
        text += strlen(prefix);
        if (strstr(text, what))
            n++;
        else if (strstr(text, "caused by the guest suppressed"))
            *suppressed += g_ascii_strtoull(text, NULL, 10);
    }
    return n;
}

/*
 * A guest that breaks its virtqueue over and over (and recovers each time) gets a few lines in
 * the daemon's log, then one a second; the rest is counted, and every attack is accounted for.
 * Another VM's message still gets through.
 */
static void test_guest_log_limited(Fixture *f, gconstpointer data)
{
    g_autoptr(GBytes) contents = NULL;
    g_autofree char *image = make_image(f->bus->tmpdir, "hostile.img", 64, &contents);
    g_autofree char *disk = g_strdup_printf("'disks': <[{'path': <'%s'>}]>", image);
    g_autofree char *mode = g_strdup_printf("hostile rounds=%d", HOSTILE_ROUNDS);
    g_autoptr(MvmdVm) noisy = create_guest(f, "noisy", mode, disk);
    g_autoptr(MvmdVm) other = create_guest(f, "other", "hostile", disk);
    g_autofree char *out = NULL;
    g_autofree char *log = NULL;
    guint64 suppressed, other_suppressed;
    gint64 start = g_get_monotonic_time();
    guint lines, elapsed_s;

    out = run_to_end(f, noisy);
    elapsed_s = (guint)((g_get_monotonic_time() - start + G_USEC_PER_SEC - 1) / G_USEC_PER_SEC);
    /* Its device worked again after every reset (the lines before TESTGUEST-DONE). */
    g_assert_null(strstr(out, "FAIL"));
    g_assert_cmpuint(count_substrings(out, "PASS hostile-recovered"), ==, HOSTILE_ROUNDS);
    g_clear_pointer(&out, g_free);
    out = run_to_end(f, other);
    g_assert_null(strstr(out, "FAIL"));
    g_assert_cmpuint(count_substrings(out, "PASS hostile-recovered"), ==, 1);

    g_assert_true(g_file_get_contents(f->bus->daemon_log, &log, NULL, NULL));
    lines = count_vm_lines(log, "noisy", "device needs reset", &suppressed);
    g_test_message("noisy: %u lines, %" G_GUINT64_FORMAT " suppressed, in %u s", lines, suppressed,
                   elapsed_s);
    /* The bucket holds GUEST_LOG_BURST and gains one a second while the guest ran. */
    g_assert_cmpuint(lines, >=, 1);
    g_assert_cmpuint(lines, <=, GUEST_LOG_BURST + elapsed_s + 1);
    g_assert_cmpuint(lines + suppressed, ==, HOSTILE_ROUNDS);
    g_assert_cmpuint(count_vm_lines(log, "other", "device needs reset", &other_suppressed), ==, 1);
    g_assert_cmpuint(other_suppressed, ==, 0);
}

/* vsock: the guest reads its CID from the device; the host side listens on uds-path. */
static void test_vsock_device(Fixture *f)
{
    g_autofree char *uds = g_build_filename(f->bus->tmpdir, "v.sock", NULL);
    g_autofree char *extra =
        g_strdup_printf("'vsock': <{'cid': <uint32 42>, 'uds-path': <'%s'>}>", uds);
    g_autoptr(MvmdVm) vm = create_guest(f, "vsock", "vsock pause=1", extra);
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    GStatBuf st;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_console_expect(c, mvmd_test_console_expect(c, 0, "VSOCK cid 42"), "VSOCK paused");
    g_assert_cmpint(g_stat(uds, &st), ==, 0);
    g_assert_true(S_ISSOCK(st.st_mode));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    /* The machine took its socket away with it. */
    g_assert_false(g_file_test(uds, G_FILE_TEST_EXISTS));
    mvmd_test_console_close(c);
}

/*
 * The device keys reach the machine: a disk by path and one by fd (the guest writes a
 * pattern to sectors 16..23 of the first), and the rng.
 */
static void test_devices(Fixture *f, gconstpointer data)
{
    g_autoptr(GBytes) image0 = NULL, image1 = NULL;
    g_autofree char *disk0 = make_image(f->bus->tmpdir, "d0.img", 2048, &image0);
    g_autofree char *disk1 = make_image(f->bus->tmpdir, "d1.img", 128, &image1);
    g_autofree char *extra = g_strdup_printf(
        "'disks': <[{'path': <'%s'>}, {'fd': <handle 0>, 'read-only': <true>}]>", disk0);
    g_autofree char *text =
        g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=blk sectors=8 writeat=16 seed=5'>, "
                        "'debug-exit': <true>, 'memory-mib': <uint64 16>, %s}",
                        testguest, extra);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *out = NULL;
    g_autofree char *after = NULL;
    g_autoptr(MvmdVm) blk = NULL;
    g_autoptr(MvmdVm) rng = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) disks = NULL;
    gsize len;
    int fd = open(disk1, O_RDONLY | O_CLOEXEC);

    g_unix_fd_list_append(fds, fd, &error);
    close(fd);
    g_assert_no_error(error);
    mvmd_manager_call_create_vm_sync(f->manager, "blk", mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, fds, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    blk = mvmd_test_bus_vm(f->bus, NULL, path);
    config = g_variant_ref(mvmd_test_vm_config(blk));
    disks = g_variant_lookup_value(config, "disks", G_VARIANT_TYPE("aa{sv}"));
    g_assert_nonnull(disks);
    g_assert_cmpuint(g_variant_n_children(disks), ==, 2);
    out = run_to_end(f, blk);
    g_assert_nonnull(strstr(out, "BLK capacity 2048 "));
    g_assert_nonnull(strstr(out, "PASS blk-write-read"));
    g_assert_null(strstr(out, "FAIL"));
    g_assert_true(g_str_has_prefix(mvmd_test_vm_exit_reason(blk), "debug-exit"));
    /* The guest wrote sectors 16..23 of the first disk and nothing else. */
    g_assert_true(g_file_get_contents(disk0, &after, &len, NULL));
    g_assert_cmpuint(len, ==, 2048 * 512);
    g_assert_cmpmem(after, 16 * 512, g_bytes_get_data(image0, NULL), 16 * 512);
    g_assert_true(memcmp(after + 16 * 512, (const char *)g_bytes_get_data(image0, NULL) + 16 * 512,
                         8 * 512) != 0);
    g_assert_cmpmem(after + 24 * 512, len - 24 * 512,
                    (const char *)g_bytes_get_data(image0, NULL) + 24 * 512, len - 24 * 512);

    rng = create_guest(f, "rng", "rng bytes=256", "'rng': <true>");
    g_clear_pointer(&out, g_free);
    out = run_to_end(f, rng);
    g_assert_nonnull(strstr(out, "PASS rng"));
    test_vsock_device(f);
}

/*
 * Persistence with real guests: an autostart VM is running again after a daemon restart, and
 * a stored definition with devices comes back with the same Config.
 */
static void test_autostart_restart(Fixture *f, gconstpointer data)
{
    const char *const args[] = {"--shutdown-timeout=1", NULL};
    g_autoptr(GBytes) image = NULL;
    g_autofree char *disk = make_image(f->bus->tmpdir, "keep.img", 64, &image);
    g_autofree char *extra = g_strdup_printf(
        "'persist': <true>, 'rng': <true>, 'disks': <[{'path': <'%s'>, 'read-only': <true>}]>",
        disk);
    g_autoptr(MvmdVm) autovm = create_guest(f, "auto", "idle",
                                            "'persist': <true>, "
                                            "'autostart': <true>");
    g_autoptr(MvmdVm) kept = create_guest(f, "kept", "idle", extra);
    g_autoptr(GVariant) config_before = g_variant_ref(mvmd_test_vm_config(kept));
    g_autoptr(GVariant) config_after = NULL;
    g_autofree char *uuid = g_strdup(mvmd_vm_get_uuid(autovm));
    MvmdTestConsole *c;

    /* Running when the daemon stops: asked, then forced after the 1 s grace. */
    mvmd_test_vm_call_ok(autovm, "Start", NULL);
    mvmd_test_vm_wait_state(autovm, "running");
    g_clear_object(&autovm);
    g_clear_object(&kept);
    g_clear_object(&f->manager);
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);

    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
    autovm = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/auto");
    kept = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/kept");
    mvmd_test_vm_wait_state(autovm, "running");
    g_assert_cmpstr(mvmd_vm_get_uuid(autovm), ==, uuid);
    c = mvmd_test_console_open(autovm);
    mvmd_test_console_expect(c, 0, "IDLE");
    mvmd_test_console_close(c);
    g_assert_cmpstr(mvmd_vm_get_state(kept), ==, "stopped");
    config_after = g_variant_ref(mvmd_test_vm_config(kept));
    g_assert_true(g_variant_equal(config_before, config_after));
    mvmd_test_vm_call_ok(autovm, "Stop", NULL);
    mvmd_test_vm_wait_state(autovm, "stopped");
}

/* The last "COUNTER n" in @text (the pattern guest's heartbeat), or -1. */
static gint64 last_counter(const char *text)
{
    const char *p = text, *hit = NULL;

    while ((p = strstr(p, "COUNTER ")))
        hit = p++;
    return hit ? g_ascii_strtoll(hit + 8, NULL, 10) : -1;
}

static char *restore_vm(Fixture *f, const char *name, const char *dir, const char *options,
                        GUnixFDList *fds)
{
    g_autoptr(GError) error = NULL;
    char *path = NULL;

    mvmd_manager_call_restore_vm_sync(f->manager, name, dir, mvmd_test_config(options),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
                                      &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return path;
}

/* A second VM of the same name is refused before the snapshot is even read. */
static void restore_fails_exists(Fixture *f, const char *dir)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_restore_vm_sync(f->manager, "copy", dir, mvmd_test_config("{}"),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL,
                                      &path, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "AlreadyExists");
}

/*
 * Snapshot a counting guest by path and by fd, restore it twice (paused, then running), and
 * check that the copies go on counting from where the original was, with their RAM intact
 * (the pattern guest verifies its pages and would print FAIL). Every restore, and each Start
 * of a copy (which restores again), gives a new VM generation ID.
 */
static void test_snapshot_restore(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) orig =
        create_guest(f, "orig", "pattern pages=16 base_mib=8 every=20 delay=2000", NULL);
    g_autofree char *dir1 = g_build_filename(f->bus->tmpdir, "snap1", NULL);
    g_autofree char *dir2 = g_build_filename(f->bus->tmpdir, "snap2", NULL);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *copy_path = NULL;
    g_autofree char *copy2_path = NULL;
    g_autoptr(MvmdVm) copy = NULL;
    g_autoptr(MvmdVm) copy2 = NULL;
    g_autoptr(GVariant) config = NULL;
    g_autofree char *orig_id = NULL;
    g_autofree char *copy_id = NULL;
    g_autofree char *restart_id = NULL;
    g_autofree char *copy2_id = NULL;
    gboolean clone = TRUE;
    gint64 before, after;
    MvmdTestConsole *c, *cc;
    int fd;

    g_assert_cmpint(g_mkdir(dir1, 0700), ==, 0);
    g_assert_cmpint(g_mkdir(dir2, 0700), ==, 0);
    mvmd_test_vm_call_ok(orig, "Start", NULL);
    orig_id = live_generation_id(orig);
    c = mvmd_test_console_open(orig);
    mvmd_test_console_expect(c, 0, "COUNTER ");
    call_fails(orig, "Snapshot", g_variant_new("(s@a{sv})", "relative", mvmd_test_config("{}")),
               ERR "InvalidArgument");
    {
        g_autofree char *file = g_build_filename(f->bus->tmpdir, "a-file", NULL);

        g_assert_true(g_file_set_contents(file, "x", 1, NULL));
        call_fails(orig, "Snapshot", g_variant_new("(s@a{sv})", file, mvmd_test_config("{}")),
                   ERR "InvalidArgument");
    }
    mvmd_test_vm_call_ok(orig, "Snapshot",
                         g_variant_new("(s@a{sv})", dir1, mvmd_test_config("{}")));
    before = last_counter(c->seen->str);
    g_main_context_iteration(NULL, FALSE);
    g_assert_cmpstr(mvmd_vm_get_state(orig), ==, "running");
    g_assert_true(g_file_test(dir1, G_FILE_TEST_IS_DIR));

    /* By fd, and left paused. */
    fd = open(dir2, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_unix_fd_list_append(fds, fd, &error);
    close(fd);
    g_assert_no_error(error);
    {
        g_autoptr(GVariant) reply = g_dbus_proxy_call_with_unix_fd_list_sync(
            G_DBUS_PROXY(orig), "Snapshot",
            g_variant_new_parsed("('', {'dir-fd': <handle 0>, 'leave-paused': <true>})"),
            G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds, NULL, NULL, &error);
        g_assert_no_error(error);
    }
    mvmd_test_vm_wait_state(orig, "paused");
    /* A paused VM stays paused through a snapshot. */
    {
        g_autofree char *dir3 = g_build_filename(f->bus->tmpdir, "snap3", NULL);

        mvmd_test_vm_call_ok(orig, "Snapshot",
                             g_variant_new("(s@a{sv})", dir3, mvmd_test_config("{}")));
        g_main_context_iteration(NULL, FALSE);
        g_assert_cmpstr(mvmd_vm_get_state(orig), ==, "paused");
        g_assert_true(g_file_test(dir3, G_FILE_TEST_IS_DIR));
    }
    mvmd_test_vm_call_ok(orig, "Stop", NULL);
    mvmd_test_vm_wait_state(orig, "stopped");
    mvmd_test_console_close(c);

    /* Restored paused: the snapshot's size, no kernel, and it counts on once resumed. */
    copy_path = restore_vm(f, "copy", dir1, "{}", NULL);
    copy = mvmd_test_bus_vm(f->bus, NULL, copy_path);
    g_assert_cmpstr(mvmd_vm_get_state(copy), ==, "paused");
    g_assert_cmpuint(mvmd_vm_get_memory_mib(copy), ==, 16);
    g_assert_cmpuint(mvmd_vm_get_vcpus(copy), ==, 1);
    config = g_variant_ref(mvmd_test_vm_config(copy));
    g_assert_true(g_variant_lookup(config, "snapshot", "&s", &(const char *){NULL}));
    g_assert_true(g_variant_lookup(config, "clone", "b", &clone));
    g_assert_false(clone);
    copy_id = live_generation_id(copy);
    g_assert_cmpstr(copy_id, !=, orig_id);
    restore_fails_exists(f, dir1);
    cc = mvmd_test_console_open(copy);
    mvmd_test_vm_call_ok(copy, "Resume", NULL);
    mvmd_test_vm_wait_state(copy, "running");
    mvmd_test_console_expect(cc, mvmd_test_console_expect(cc, 0, "COUNTER "), "\n");
    after = last_counter(cc->seen->str);
    g_test_message("counter %" G_GINT64_FORMAT " at the snapshot, %" G_GINT64_FORMAT
                   " after the restore",
                   before, after);
    g_assert_cmpint(after, >, before);
    g_assert_null(strstr(cc->seen->str, "FAIL"));

    /* Stop and Start: from the snapshot again (the count starts over from there). */
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
    mvmd_test_vm_call_ok(copy, "Start", NULL);
    mvmd_test_vm_wait_state(copy, "running");
    mvmd_test_console_close(cc);
    restart_id = live_generation_id(copy);
    g_assert_cmpstr(restart_id, !=, copy_id);
    g_assert_cmpstr(restart_id, !=, orig_id);

    /* By fd, running at once. */
    copy2_path = restore_vm(f, "copy2", "",
                            "{'dir-fd': <handle 0>, 'resume': <true>, 'copy-memory': <true>}", fds);
    copy2 = mvmd_test_bus_vm(f->bus, NULL, copy2_path);
    mvmd_test_vm_wait_state(copy2, "running");
    copy2_id = live_generation_id(copy2);
    g_assert_cmpstr(copy2_id, !=, orig_id);
    g_assert_cmpstr(copy2_id, !=, copy_id);
    g_assert_cmpstr(copy2_id, !=, restart_id);
    {
        g_autoptr(GVariant) config2 = g_variant_ref(mvmd_test_vm_config(copy2));
        gboolean copied = FALSE;

        g_assert_true(g_variant_lookup(config2, "copy-memory", "b", &copied));
        g_assert_true(copied);
    }
    cc = mvmd_test_console_open(copy2);
    mvmd_test_console_expect(cc, 0, "COUNTER ");
    g_assert_null(strstr(cc->seen->str, "FAIL"));
    mvmd_test_console_close(cc);
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_call_ok(copy2, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
    mvmd_test_vm_wait_state(copy2, "stopped");
    mvmd_test_vm_call_ok(copy, "Delete", NULL);
    mvmd_test_vm_call_ok(copy2, "Delete", NULL);
}

/*
 * The snapshot's memory file truncated to nothing under a VM restored from it, as any caller
 * who can write the file could: a Snapshot of it reads its RAM and the daemon lives on (the RAM
 * is a copy; with a mapping of the file, that read raised SIGBUS, which ended the daemon and
 * every VM in it), and the guest, resumed, goes on checking its pattern pages and counting. A later
 * Start, which restores from the snapshot again, fails alone with the reason.
 */
static void test_restore_truncated_memory(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) orig = create_guest(f, "orig", "pattern pages=16 base_mib=8 every=20", NULL);
    g_autofree char *dir = g_build_filename(f->bus->tmpdir, "snap", NULL);
    g_autofree char *dir2 = g_build_filename(f->bus->tmpdir, "snap2", NULL);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *path = NULL;
    g_autofree char *want = NULL;
    g_autoptr(MvmdVm) copy = NULL;
    MvmdTestConsole *c = mvmd_test_console_open(orig);
    gsize at;

    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    g_assert_cmpint(g_mkdir(dir2, 0700), ==, 0);
    mvmd_test_vm_call_ok(orig, "Start", NULL);
    mvmd_test_console_expect(c, 0, "COUNTER ");
    mvmd_test_vm_call_ok(orig, "Snapshot", g_variant_new("(s@a{sv})", dir, mvmd_test_config("{}")));
    mvmd_test_vm_call_ok(orig, "Stop", NULL);
    mvmd_test_vm_wait_state(orig, "stopped");
    mvmd_test_console_close(c);

    path = restore_vm(f, "copy", dir, "{}", NULL);
    copy = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_cmpint(truncate(memory, 0), ==, 0);
    mvmd_test_vm_call_ok(copy, "Snapshot",
                         g_variant_new("(s@a{sv})", dir2, mvmd_test_config("{}")));
    g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
    c = mvmd_test_console_open(copy);
    mvmd_test_vm_call_ok(copy, "Resume", NULL);
    /* Two counts on from the first complete line (the output may end within a line). */
    at = mvmd_test_console_expect(c, 0, "COUNTER ");
    mvmd_test_console_expect(c, at, "\n");
    want = g_strdup_printf("COUNTER %" G_GINT64_FORMAT "\n",
                           g_ascii_strtoll(c->seen->str + at, NULL, 10) + 40);
    mvmd_test_console_expect(c, 0, want);
    g_assert_null(strstr(c->seen->str, "FAIL"));
    mvmd_test_vm_wait_state(copy, "running");
    mvmd_test_console_close(c);

    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
    call_fails(copy, "Start", NULL, ERR "InvalidArgument");
    g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
}

/* ---- RestoreVM's back ends ---------------------------------------------------------------- */

/*
 * A blk guest with a disk (@disk, contents @image) that has read its disk and waits for a
 * console byte, snapshotted to @dir and stopped: its next step after a restore is to write
 * and read back its disk. @other is a copy of the image, for restores to use instead.
 */
typedef struct {
    GBytes *image;
    char *disk;
    char *other;
    char *dir;
} BlkSnapshot;

static void blk_snapshot_free(BlkSnapshot *snap)
{
    g_bytes_unref(snap->image);
    g_free(snap->disk);
    g_free(snap->other);
    g_free(snap->dir);
    g_free(snap);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlkSnapshot, blk_snapshot_free)

static BlkSnapshot *blk_snapshot_new(Fixture *f)
{
    BlkSnapshot *snap = g_new0(BlkSnapshot, 1);
    g_autofree char *extra = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    MvmdTestConsole *c;

    snap->disk = make_image(f->bus->tmpdir, "orig.img", 64, &snap->image);
    snap->other = g_build_filename(f->bus->tmpdir, "other.img", NULL);
    snap->dir = g_build_filename(f->bus->tmpdir, "snap", NULL);
    g_assert_true(g_file_set_contents(snap->other, g_bytes_get_data(snap->image, NULL),
                                      g_bytes_get_size(snap->image), NULL));
    extra = g_strdup_printf("'disks': <[{'path': <'%s'>}]>", snap->disk);
    vm = create_guest(f, "blk", "blk sectors=8 writeat=16 seed=5 pause=1", extra);
    c = mvmd_test_console_open(vm);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_console_expect(c, 0, "BLK paused");
    g_assert_cmpint(g_mkdir(snap->dir, 0755), ==, 0);
    mvmd_test_vm_call_ok(vm, "Snapshot",
                         g_variant_new("(s@a{sv})", snap->dir, mvmd_test_config("{}")));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_console_close(c);
    mvmd_test_vm_call_ok(vm, "Delete", NULL);
    return snap;
}

static void restore_fails(Fixture *f, const char *name, const char *dir, const char *options,
                          GUnixFDList *fds, const char *error_name, const char *text)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_restore_vm_sync(f->manager, name, dir, mvmd_test_config(options),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
                                      &path, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, error_name);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, text));
}

/* The first disk entry of a VM's configuration (GetConfig). */
static GVariant *config_disk0(MvmdVm *vm)
{
    g_autoptr(GVariant) config = g_variant_ref(mvmd_test_vm_config(vm));
    g_autoptr(GVariant) disks = g_variant_lookup_value(config, "disks", G_VARIANT_TYPE("aa{sv}"));

    g_assert_nonnull(disks);
    g_assert_cmpuint(g_variant_n_children(disks), ==, 1);
    return g_variant_get_child_value(disks, 0);
}

static GUnixFDList *fd_list_of(const char *path, int flags)
{
    GUnixFDList *fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    int fd = open(path, flags | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_unix_fd_list_append(fds, fd, &error);
    close(fd);
    g_assert_no_error(error);
    return fds;
}

/* The blk guest, told to go on: it writes and reads back its disk, then stops; @c is closed. */
static void blk_guest_runs_to_the_end(MvmdVm *vm, MvmdTestConsole *c)
{
    console_send(c, "x");
    mvmd_test_console_expect(c, 0, "PASS blk-write-read");
    mvmd_test_console_expect(c, 0, "TESTGUEST-DONE");
    g_assert_null(strstr(c->seen->str, "FAIL"));
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_console_close(c);
}

/*
 * Root restores a VM with a disk: counts that do not match are refused, the disk passed as an
 * fd in the options is the one the guest goes on using (the snapshot's file stays untouched),
 * and without options the snapshot's own disk is used; GetConfig shows which.
 */
static void test_restore_backends(Fixture *f, gconstpointer data)
{
    g_autoptr(BlkSnapshot) snap = blk_snapshot_new(f);
    const char *dir = snap->dir;
    g_autoptr(GUnixFDList) fds = NULL;
    g_autofree char *path = NULL;
    g_autofree char *after = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) disk0 = NULL;
    const char *s = NULL;
    gsize len;
    MvmdTestConsole *c;

    restore_fails(f, "none", dir, "{'disks': <@aa{sv} []>}", NULL, ERR "InvalidArgument",
                  "the snapshot has 1 disk; pass it as an fd in the 'disks' option");
    fds = fd_list_of(snap->other, O_RDWR);
    restore_fails(f, "two", dir,
                  "{'disks': <[{'fd': <handle 0>}, {'fd': <handle 0>}]>, 'network': <@aa{sv} []>}",
                  fds, ERR "InvalidArgument", "the 'disks' option gives 2");
    restore_fails(f, "ro", dir, "{'disks': <[{'fd': <handle 0>, 'read-only': <true>}]>}", fds,
                  ERR "InvalidArgument", "disk 0 is writable in the snapshot");
    restore_fails(f, "cid", dir,
                  "{'disks': <[{'fd': <handle 0>}]>, 'vsock': <{'cid': <uint32 7>, 'uds-path': "
                  "<'/nonexistent/v'>}>}",
                  fds, ERR "InvalidArgument", "the snapshot has no vsock device");

    /* Root without back ends or the option: a snapshot made elsewhere names them, so no. */
    restore_fails(f, "unasked", dir, "{}", NULL, ERR "InvalidArgument",
                  "the snapshot has 1 disk; pass it as an fd in the 'disks' option; or, as root, "
                  "pass 'use-snapshot-backends': <true>");
    restore_fails(f, "both", dir,
                  "{'disks': <[{'fd': <handle 0>}]>, 'use-snapshot-backends': <true>}", fds,
                  ERR "InvalidArgument", "not both");

    /* Root asking for them: the disk the snapshot names. */
    path = restore_vm(f, "own", dir, "{'use-snapshot-backends': <true>}", NULL);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    disk0 = config_disk0(vm);
    g_assert_true(g_variant_lookup(disk0, "path", "&s", &s));
    g_assert_cmpstr(s, ==, snap->disk);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_vm_call_ok(vm, "Delete", NULL);
    g_clear_object(&vm);
    g_clear_pointer(&path, g_free);
    g_clear_pointer(&disk0, g_variant_unref);

    /* The caller's fd, running at once: the guest writes and reads back through it. */
    path = restore_vm(f, "copy", dir, "{'disks': <[{'fd': <handle 0>}]>, 'resume': <true>}", fds);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    disk0 = config_disk0(vm);
    g_assert_false(g_variant_lookup(disk0, "path", "&s", &s));
    g_assert_true(g_variant_lookup_value(disk0, "fd-passed", G_VARIANT_TYPE_BOOLEAN) != NULL);
    c = mvmd_test_console_open(vm);
    blk_guest_runs_to_the_end(vm, c);
    /* Sectors 16..23 of the fd's file were written; the snapshot's disk is as it was. */
    g_assert_true(g_file_get_contents(snap->other, &after, &len, NULL));
    g_assert_cmpuint(len, ==, 64 * 512);
    g_assert_true(memcmp(after + 16 * 512,
                         (const char *)g_bytes_get_data(snap->image, NULL) + 16 * 512,
                         8 * 512) != 0);
    g_assert_cmpmem(after, 16 * 512, g_bytes_get_data(snap->image, NULL), 16 * 512);
    g_clear_pointer(&after, g_free);
    g_assert_true(g_file_get_contents(snap->disk, &after, &len, NULL));
    g_assert_cmpmem(after, len, g_bytes_get_data(snap->image, NULL), g_bytes_get_size(snap->image));
}

/* ---- clones ------------------------------------------------------------------------------- */

/* A RestoreVM in flight (mvmd_manager_call_restore_vm()), and how it ended. */
typedef struct {
    gboolean done;
    char *path;
    GError *error;
} AsyncRestore;

static void on_restore_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    AsyncRestore *r = user_data;

    mvmd_manager_call_restore_vm_finish(MVMD_MANAGER(source), &r->path, NULL, result, &r->error);
    r->done = TRUE;
}

#define CLONE_MAC "52:54:00:c1:0e:0b"
#define CLONE_CID 4242

/*
 * What tells one copy of a snapshot from another: the UUID, generation ID and vsock CID. (NIC
 * MACs are not here: a snapshot of a NIC passed as an fd cannot be restored, and a tap by
 * name would be the host's. tests/daemon/test-config.c has how the daemon keeps them.)
 */
typedef struct {
    char *uuid;
    char *id;
    guint32 cid;
    char *guest_line; /* what the vmgenid guest prints for @id */
} Identity;

static void identity_clear(Identity *who)
{
    g_free(who->uuid);
    g_free(who->id);
    g_free(who->guest_line);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Identity, identity_clear)

/* @vm's, running or paused, from its UUID property and GetConfig. */
static void identity_read(MvmdVm *vm, Identity *who)
{
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) vsock = NULL;
    g_auto(GStrv) parts = NULL;
    g_autofree char *hex = NULL;

    identity_clear(who);
    *who = (Identity){NULL};
    who->uuid = g_strdup(mvmd_vm_get_uuid(vm));
    who->id = live_generation_id(vm);
    config = g_variant_ref(mvmd_test_vm_config(vm));
    vsock = g_variant_lookup_value(config, "vsock", G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(vsock);
    g_assert_true(g_variant_lookup(vsock, "cid", "u", &who->cid));
    g_assert_cmpuint(who->cid, >=, 3);
    g_assert_cmpuint(who->cid, <=, 0xfffffffe);
    /* The guest shows the 16 bytes in the order they are in its memory. */
    parts = g_strsplit(who->id, "-", -1);
    hex = g_strjoinv("", parts);
    who->guest_line = g_strdup_printf("VMGENID id=%s ", hex);
}

/*
 * The original: a vmgenid guest (it prints its generation ID at the start and at each change)
 * with a vsock device (CID 42), snapshotted to @dir while running, then stopped.
 */
static void clone_original(Fixture *f, const char *dir, Identity *orig)
{
    g_autofree char *sock = g_build_filename(f->bus->tmpdir, "orig.sock", NULL);
    g_autofree char *extra =
        g_strdup_printf("'vsock': <{'cid': <uint32 42>, 'uds-path': <'%s'>}>", sock);
    g_autoptr(MvmdVm) vm = create_guest(f, "orig", "vmgenid", extra);
    MvmdTestConsole *c = mvmd_test_console_open(vm);

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    identity_read(vm, orig);
    mvmd_test_console_expect(c, 0, orig->guest_line);
    g_assert_cmpuint(orig->cid, ==, 42);
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    mvmd_test_vm_call_ok(vm, "Snapshot", g_variant_new("(s@a{sv})", dir, mvmd_test_config("{}")));
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    mvmd_test_console_close(c);
}

/* Resumed, the guest was told of its new generation ID: it prints it. */
static MvmdTestConsole *resume_and_see(MvmdVm *vm, const Identity *who)
{
    MvmdTestConsole *c = mvmd_test_console_open(vm);

    mvmd_test_vm_call_ok(vm, "Resume", NULL);
    mvmd_test_vm_wait_state(vm, "running");
    mvmd_test_console_expect(c, 0, who->guest_line);
    return c;
}

static void assert_is_clone(MvmdVm *vm)
{
    gboolean clone = FALSE;

    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "clone", "b", &clone));
    g_assert_true(clone);
}

/*
 * One snapshot restored twice at once as clones (two RestoreVM calls in flight together), both
 * then resumed: each has a UUID, a VM generation ID (the one its guest sees) and a vsock CID of
 * its own, not the original's nor the other's; one gets exactly the CID it names, the other a
 * random one. Without 'clone' a MAC is refused, and so is another CID: the guest knows the
 * snapshot's. Stopped and started again, a clone keeps its CID and gets a new generation ID.
 */
static void test_restore_clones(Fixture *f, gconstpointer data)
{
    g_autofree char *dir = g_build_filename(f->bus->tmpdir, "snap", NULL);
    g_autofree char *a_sock = g_build_filename(f->bus->tmpdir, "a.sock", NULL);
    g_autofree char *b_sock = g_build_filename(f->bus->tmpdir, "b.sock", NULL);
    g_autofree char *refused = NULL, *opts_a = NULL, *opts_b = NULL;
    g_autoptr(MvmdVm) va = NULL, vb = NULL;
    g_auto(Identity) orig = {NULL}, a = {NULL}, b = {NULL}, again = {NULL};
    AsyncRestore ra = {0}, rb = {0};
    MvmdTestConsole *ca, *cb;

    clone_original(f, dir, &orig);

    /* Not a clone: the guest knows the snapshot's MACs and CID. */
    restore_fails(f, "mac", dir, "{'network': <[{'tap': <'mvmnone0'>, 'mac': <'" CLONE_MAC "'>}]>}",
                  NULL, ERR "InvalidArgument",
                  "'network[0].mac': the restored guest knows the snapshot's MAC; pass "
                  "'clone': <true>");
    refused = g_strdup_printf("{'vsock': <{'cid': <uint32 43>, 'uds-path': <'%s'>}>}", a_sock);
    restore_fails(f, "cid", dir, refused, NULL, ERR "InvalidArgument",
                  "the snapshot's guest has cid 42");

    /* Two at once: a random CID for one, the one it names for the other. */
    opts_a = g_strdup_printf("{'clone': <true>, 'vsock': <{'uds-path': <'%s'>}>}", a_sock);
    opts_b =
        g_strdup_printf("{'clone': <true>, 'vsock': <{'cid': <uint32 %u>, 'uds-path': <'%s'>}>}",
                        CLONE_CID, b_sock);
    mvmd_manager_call_restore_vm(f->manager, "clone-a", dir, mvmd_test_config(opts_a),
                                 G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL, NULL,
                                 on_restore_done, &ra);
    mvmd_manager_call_restore_vm(f->manager, "clone-b", dir, mvmd_test_config(opts_b),
                                 G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL, NULL,
                                 on_restore_done, &rb);
    mvmd_test_wait_until(ra.done && rb.done, MVMD_TEST_GUEST_TIMEOUT_MS);
    g_assert_no_error(ra.error);
    g_assert_no_error(rb.error);
    va = mvmd_test_bus_vm(f->bus, NULL, ra.path);
    vb = mvmd_test_bus_vm(f->bus, NULL, rb.path);
    g_assert_cmpstr(mvmd_vm_get_state(va), ==, "paused");
    g_assert_cmpstr(mvmd_vm_get_state(vb), ==, "paused");
    assert_is_clone(va);
    assert_is_clone(vb);
    identity_read(va, &a);
    identity_read(vb, &b);
    ca = resume_and_see(va, &a);
    cb = resume_and_see(vb, &b);

    g_assert_cmpstr(a.uuid, !=, orig.uuid);
    g_assert_cmpstr(b.uuid, !=, orig.uuid);
    g_assert_cmpstr(a.uuid, !=, b.uuid);
    g_assert_cmpstr(a.id, !=, orig.id);
    g_assert_cmpstr(b.id, !=, orig.id);
    g_assert_cmpstr(a.id, !=, b.id);
    g_assert_cmpuint(a.cid, !=, orig.cid);
    g_assert_cmpuint(a.cid, !=, b.cid);
    g_assert_cmpuint(b.cid, ==, CLONE_CID);

    /* Started again: restored again, as the same clone, in a new generation. */
    mvmd_test_vm_call_ok(va, "Stop", NULL);
    mvmd_test_vm_wait_state(va, "stopped");
    mvmd_test_vm_call_ok(va, "Start", NULL);
    mvmd_test_vm_wait_state(va, "running");
    identity_read(va, &again);
    mvmd_test_console_expect(ca, 0, again.guest_line);
    g_assert_cmpstr(again.uuid, ==, a.uuid);
    g_assert_cmpuint(again.cid, ==, a.cid);
    g_assert_cmpstr(again.id, !=, a.id);
    g_assert_cmpstr(again.id, !=, orig.id);

    mvmd_test_vm_call_ok(va, "Stop", NULL);
    mvmd_test_vm_call_ok(vb, "Stop", NULL);
    mvmd_test_vm_wait_state(va, "stopped");
    mvmd_test_vm_wait_state(vb, "stopped");
    mvmd_test_console_close(ca);
    mvmd_test_console_close(cb);
    g_free(ra.path);
    g_free(rb.path);
}

/*
 * RestoreVM as another user: this test binary again (main() below), run as nobody with N_FDS
 * descriptors from fd 3 on (handles 0, 1, ...) to pass. argv: --restore-client ADDRESS
 * NAME OPTIONS N_FDS. Prints "ok PATH" or "error NAME MESSAGE".
 */
static int restore_client_main(char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GDBusConnection) conn =
        g_dbus_connection_new_for_address_sync(argv[2],
                                               G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                   G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                               NULL, NULL, &error);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) path = NULL;
    g_autofree char *remote = NULL;
    int n_fds = atoi(argv[5]);

    if (!conn) {
        g_print("error connect %s\n", error->message);
        return 1;
    }
    for (int fd = 3; fd < 3 + n_fds; fd++)
        g_unix_fd_list_append(fds, fd, NULL);
    reply = g_dbus_connection_call_with_unix_fd_list_sync(
        conn, "org.microvmd.MicroVM1", "/org/microvmd/MicroVM1", "org.microvmd.MicroVM1.Manager",
        "RestoreVM", g_variant_new("(ss@a{sv})", argv[3], "", g_variant_new_parsed(argv[4])),
        G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds, NULL, NULL,
        &error);
    if (!reply) {
        remote = g_dbus_error_get_remote_error(error);
        g_dbus_error_strip_remote_error(error);
        g_print("error %s %s\n", remote ? remote : "local", error->message);
        return 0;
    }
    g_print("ok %s\n", g_variant_get_string(path = g_variant_get_child_value(reply, 0), NULL));
    return 0;
}

/* Runs restore_client_main() as nobody; @dirfd and @diskfd (or -1) become its fds 3 and 4. */
static char *restore_as_nobody(Fixture *f, const char *name, const char *options, const int *pass,
                               guint n_pass)
{
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
    g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
    /* The build dir may be out of nobody's reach: it runs a copy, from the copy's dir. */
    char *self = mvmd_test_reachable_copy(exe);
    g_autofree char *cwd = g_path_get_dirname(self);
    g_autofree char *n_fds = g_strdup_printf("%u", n_pass);
    g_autoptr(GSubprocess) child = NULL;
    g_autoptr(GError) error = NULL;
    char *out = NULL;

    g_subprocess_launcher_set_child_setup(launcher, mvmd_test_drop_to_nobody, NULL, NULL);
    g_subprocess_launcher_set_cwd(launcher, cwd);
    for (guint i = 0; i < n_pass; i++)
        g_subprocess_launcher_take_fd(launcher, dup(pass[i]), 3 + (int)i);
    child = g_subprocess_launcher_spawn(launcher, &error, self, "--restore-client", f->bus->address,
                                        name, options, n_fds, NULL);
    if (child)
        g_subprocess_communicate_utf8(child, NULL, NULL, &out, NULL, &error);
    mvmd_test_remove_reachable_copy(self); /* before any assertion can end the test */
    g_assert_no_error(error);
    g_assert_true(g_subprocess_get_if_exited(child));
    g_assert_cmpint(g_subprocess_get_exit_status(child), ==, 0);
    g_test_message("as nobody: %s", out);
    return out;
}

/*
 * What a test with a client run as nobody needs: root, the bus open to all, and the polkit mock
 * allowing @action. NULL (and the test skipped) when that cannot be.
 */
static GSubprocess *start_nobody_and_polkit(Fixture *f, const char *action)
{
    GSubprocess *mock;

    if (getuid() != 0) {
        g_test_skip("needs root to run a client as nobody");
        return NULL;
    }
    mvmd_test_bus_open_to_all(f->bus);
    mock = mvmd_test_start_polkit_mock(f->bus, action);
    if (!mock)
        g_test_skip("python-dbusmock (/usr/bin/python3) is not installed");
    return mock;
}

/* Opens of @path since the watch began (inotify IN_OPEN, from any process). */
static guint count_opens(int inotify_fd)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    guint n = 0;
    ssize_t len;

    while ((len = read(inotify_fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;

            n += (ev->mask & IN_OPEN) != 0;
            p += sizeof(*ev) + ev->len;
        }
    }
    return n;
}

/*
 * A caller that is not root (nobody, allowed by polkit) restores by fd a snapshot whose disk
 * is a path: the daemon never opens that path for it. Without back ends the answer names the
 * option to fill; a path in the options is refused as CreateVM refuses it; the disk as an fd
 * works. Root restoring without options does open it, which shows the watch sees opens.
 */
#define FILES "{'state-fd': <handle 0>, 'memory-fd': <handle 1>}"

static void test_restore_unprivileged(Fixture *f, gconstpointer data)
{
    g_autoptr(BlkSnapshot) snap = NULL;
    g_autofree char *out = NULL;
    g_autofree char *with_path = NULL;
    g_autofree char *root_path = NULL;
    g_autoptr(GSubprocess) mock = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) disk0 = NULL;
    int dirfd, pass[3], watch;
    gboolean copied = FALSE;

    mock = start_nobody_and_polkit(f, "org.microvmd.vm.snapshot");
    if (!mock)
        return;
    snap = blk_snapshot_new(f);
    dirfd = open(snap->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    pass[0] = openat(dirfd, "state", O_RDONLY | O_CLOEXEC);
    pass[1] = openat(dirfd, "memory", O_RDONLY | O_CLOEXEC);
    pass[2] = open(snap->other, O_RDWR | O_CLOEXEC);
    watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    for (guint i = 0; i < G_N_ELEMENTS(pass); i++)
        g_assert_cmpint(pass[i], >=, 0);
    g_assert_cmpint(inotify_add_watch(watch, snap->disk, IN_OPEN), >=, 0);

    /* A directory is opened by root only: the daemon would read files nobody cannot. */
    out = restore_as_nobody(f, "d", "{'dir-fd': <handle 0>}", &dirfd, 1);
    g_assert_true(g_str_has_prefix(out, "error " ERR "NotAuthorized "));
    g_assert_nonnull(strstr(out, "'state-fd' and 'memory-fd'"));
    g_clear_pointer(&out, g_free);
    out = restore_as_nobody(f, "a", FILES, pass, 2);
    g_assert_true(g_str_has_prefix(out, "error " ERR "InvalidArgument "));
    g_assert_nonnull(strstr(out, "pass it as an fd in the 'disks' option"));
    g_clear_pointer(&out, g_free);
    with_path = g_strdup_printf("{'state-fd': <handle 0>, 'memory-fd': <handle 1>, "
                                "'disks': <[{'path': <'%s'>}]>}",
                                snap->disk);
    out = restore_as_nobody(f, "b", with_path, pass, 2);
    g_assert_true(g_str_has_prefix(out, "error " ERR "NotAuthorized "));
    g_assert_nonnull(strstr(out, "disks[0].path"));
    g_clear_pointer(&out, g_free);
    out = restore_as_nobody(
        f, "s",
        "{'state-fd': <handle 0>, 'memory-fd': <handle 1>, 'use-snapshot-backends': <true>}", pass,
        2);
    g_assert_true(g_str_has_prefix(out, "error " ERR "NotAuthorized "));
    g_assert_nonnull(strstr(out, "'use-snapshot-backends'"));
    g_clear_pointer(&out, g_free);
    out = restore_as_nobody(f, "c",
                            "{'state-fd': <handle 0>, 'memory-fd': <handle 1>, "
                            "'disks': <[{'fd': <handle 2>}]>}",
                            pass, 3);
    g_assert_true(g_str_has_prefix(out, "ok /org/microvmd/MicroVM1/vm/c"));
    g_assert_cmpuint(count_opens(watch), ==, 0);

    vm = mvmd_test_bus_vm(f->bus, NULL, "/org/microvmd/MicroVM1/vm/c");
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "paused");
    disk0 = config_disk0(vm);
    g_assert_nonnull(g_variant_lookup_value(disk0, "fd-passed", G_VARIANT_TYPE_BOOLEAN));
    /* Never mapped from a file its caller could truncate under the daemon. */
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "copy-memory", "b", &copied) && copied);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");

    /* The control: root asking for them has the snapshot's own disk opened. */
    root_path = restore_vm(f, "root", snap->dir, "{'use-snapshot-backends': <true>}", NULL);
    g_assert_cmpuint(count_opens(watch), >, 0);
    close(watch);
    for (guint i = 0; i < G_N_ELEMENTS(pass); i++)
        close(pass[i]);
    close(dirfd);
    g_subprocess_force_exit(mock);
    g_subprocess_wait(mock, NULL, NULL);
}

/* ---- name reservations ------------------------------------------------------------------- */

/*
 * A write lease on @path (ours: we are root): anyone's open of it blocks until we let go (or
 * the kernel's lease-break-time, 45 s by default, passes). SIGIO, the kernel's news of an
 * open that waits, is ignored: hold_is_hit() asks instead.
 */
static int hold_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    signal(SIGIO, SIG_IGN);
    g_assert_cmpint(fcntl(fd, F_SETLEASE, F_WRLCK), ==, 0);
    return fd;
}

/* Is someone's open of the file waiting for us? (We are asked to give up the lease.) */
static gboolean hold_is_hit(int fd)
{
    return fcntl(fd, F_GETLEASE) != F_WRLCK;
}

static void hold_release(int fd)
{
    g_assert_cmpint(fcntl(fd, F_SETLEASE, F_UNLCK), ==, 0);
    close(fd);
}

static void create_fails_exists(Fixture *f, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *text = g_strdup_printf("{'kernel': <'%s'>}", testguest);

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    mvmd_test_assert_dbus_error(error, ERR "AlreadyExists");
}

static void assert_no_vm(Fixture *f, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    mvmd_manager_call_get_vm_by_name_sync(f->manager, name, G_DBUS_CALL_FLAGS_NONE, -1, &path, NULL,
                                          &error);
    mvmd_test_assert_dbus_error(error, ERR "NoSuchVM");
}

/*
 * A name is released only by the call that reserved it. A RestoreVM of "x" is held in flight
 * (its worker waits on a lease we hold on the snapshot's disk, which root's restore opens by the
 * path the snapshot names, as asked with 'use-snapshot-backends': it has been authorized and
 * has reserved "x"); meanwhile a second
 * RestoreVM of "x" fails (the name is taken) and a third, from nobody, is denied: neither may
 * release the first one's reservation, so CreateVM "x" is still refused after each. The first
 * restore then finishes with a working VM (the guest writes and reads back its disk), the only "x".
 * A denied call on a free name leaves nothing behind: no object, and the name stays free.
 */
#define NOBODY_RESTORE_OPTIONS                                                                     \
    "{'state-fd': <handle 0>, 'memory-fd': <handle 1>, 'disks': <[{'fd': <handle 2>}]>}"

static void test_restore_reservation(Fixture *f, gconstpointer data)
{
    g_autoptr(BlkSnapshot) snap = NULL;
    g_autofree char *out = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(MvmdVm) y = NULL;
    AsyncRestore first = {0};
    int dirfd, lease, pass[3];
    MvmdTestConsole *c;

    if (getuid() != 0) {
        g_test_skip("needs root to run a client as nobody and to lease the snapshot's disk");
        return;
    }
    mvmd_test_bus_open_to_all(f->bus);
    snap = blk_snapshot_new(f);
    dirfd = open(snap->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(dirfd, >=, 0);
    /* What a user other than root passes, complete: so that only polkit can say no. */
    pass[0] = openat(dirfd, "state", O_RDONLY | O_CLOEXEC);
    pass[1] = openat(dirfd, "memory", O_RDONLY | O_CLOEXEC);
    pass[2] = open(snap->other, O_RDWR | O_CLOEXEC);
    for (guint i = 0; i < G_N_ELEMENTS(pass); i++)
        g_assert_cmpint(pass[i], >=, 0);

    lease = hold_file(snap->disk);
    mvmd_manager_call_restore_vm(
        f->manager, "x", snap->dir, mvmd_test_config("{'use-snapshot-backends': <true>}"),
        G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, NULL, NULL, on_restore_done, &first);
    mvmd_test_wait_until(hold_is_hit(lease), MVMD_TEST_GUEST_TIMEOUT_MS);
    g_assert_false(first.done);
    create_fails_exists(f, "x");
    restore_fails(f, "x", snap->dir, "{}", NULL, ERR "AlreadyExists", "exists already");
    create_fails_exists(f, "x");
    out = restore_as_nobody(f, "x", NOBODY_RESTORE_OPTIONS, pass, 3);
    g_assert_true(g_str_has_prefix(out, "error " ERR "NotAuthorized "));
    create_fails_exists(f, "x");
    assert_no_vm(f, "x"); /* reserved, not exported before it is there */
    g_assert_false(first.done);

    hold_release(lease);
    mvmd_test_wait_until(first.done, MVMD_TEST_GUEST_TIMEOUT_MS);
    g_assert_no_error(first.error);
    g_assert_cmpstr(first.path, ==, "/org/microvmd/MicroVM1/vm/x");
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 1);
    vm = mvmd_test_bus_vm(f->bus, NULL, first.path);
    g_assert_cmpstr(mvmd_vm_get_state(vm), ==, "paused");
    c = mvmd_test_console_open(vm);
    mvmd_test_vm_call_ok(vm, "Resume", NULL);
    blk_guest_runs_to_the_end(vm, c);

    /* Denied on a free name: nothing is left, and root may take the name at once. */
    g_clear_pointer(&out, g_free);
    out = restore_as_nobody(f, "y", NOBODY_RESTORE_OPTIONS, pass, 3);
    g_assert_true(g_str_has_prefix(out, "error " ERR "NotAuthorized "));
    assert_no_vm(f, "y");
    g_assert_cmpuint(mvmd_manager_get_vm_count(f->manager), ==, 1);
    y = create_guest(f, "y", "idle", NULL);
    close(dirfd);
    for (guint i = 0; i < G_N_ELEMENTS(pass); i++)
        close(pass[i]);
    g_free(first.path);
}

/* A call to the polkit mock's own interface (org.freedesktop.DBus.Mock). */
static GVariant *polkit_mock_call(Fixture *f, const char *method, GVariant *args)
{
    g_autoptr(GError) error = NULL;
    GVariant *reply = g_dbus_connection_call_sync(
        f->bus->connection, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
        "org.freedesktop.DBus.Mock", method, args, NULL, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);

    g_assert_no_error(error);
    return reply;
}

static gboolean polkit_mock_hangs(Fixture *f)
{
    g_autoptr(GVariant) reply = polkit_mock_call(f, "HaveHangingCalls", NULL);
    gboolean hanging = FALSE;

    g_variant_get(reply, "(b)", &hanging);
    return hanging;
}

/*
 * A call on its way to a VM (waiting for polkit) when a Reload drops that VM, because its
 * definition changed on disk: the call answers NoSuchVM once allowed. It acted before on the
 * dropped object, so a Delete removed the definition that had replaced it (same name).
 */
static void test_reload_drops_pending_call(Fixture *f, gconstpointer data)
{
    g_autofree char *text = g_strdup_printf("{'kernel': <'%s'>, 'persist': <true>}", testguest);
    g_autofree char *file = g_build_filename(f->bus->state_dir, "vms", "p.vm", NULL);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GSubprocess) mock = NULL;
    g_autoptr(GSubprocess) client = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL;
    g_autofree char *path = NULL;

    /* Root's VM, nobody's call: the action for other users' VMs. */
    mock = start_nobody_and_polkit(f, "org.microvmd.vm.manage-others");
    if (!mock)
        return;
    vm = create_from_text(f, "p", text);
    g_clear_pointer(&reply, g_variant_unref);
    reply = polkit_mock_call(f, "SimulateHangActions",
                             g_variant_new_parsed("([%s],)", "org.microvmd.vm.manage-others"));
    client = mvmd_test_vm_call_as_nobody(f->bus, "p", "Delete");
    mvmd_test_wait_until(polkit_mock_hangs(f), MVMD_TEST_GUEST_TIMEOUT_MS);

    /* The definition changes on disk; Reload (root: no polkit) replaces the VM. */
    g_assert_true(g_key_file_load_from_file(kf, file, G_KEY_FILE_KEEP_COMMENTS, NULL));
    g_key_file_set_uint64(kf, "Config", "memory-mib", 64);
    g_assert_true(g_key_file_save_to_file(kf, file, NULL));
    mvmd_manager_call_reload_sync(f->manager, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
    g_assert_no_error(error);

    g_clear_pointer(&reply, g_variant_unref);
    reply = polkit_mock_call(f, "ReleaseHangingCalls", NULL);
    g_subprocess_communicate_utf8(client, NULL, NULL, &out, NULL, &error);
    g_assert_no_error(error);
    g_test_message("Delete as nobody: %s", out);
    g_assert_nonnull(strstr(out, ERR "NoSuchVM"));
    g_assert_true(g_file_test(file, G_FILE_TEST_EXISTS));
    mvmd_manager_call_get_vm_by_name_sync(f->manager, "p", G_DBUS_CALL_FLAGS_NONE, -1, &path, NULL,
                                          &error);
    g_assert_no_error(error);
    g_clear_object(&vm);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    g_assert_cmpuint(mvmd_vm_get_memory_mib(vm), ==, 64);
    g_subprocess_force_exit(mock);
    g_subprocess_wait(mock, NULL, NULL);
}

#define N_MANY 100

typedef struct {
    guint done;
    guint failed;
} Pending;

static void on_call_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Pending *p = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply = g_dbus_proxy_call_finish(G_DBUS_PROXY(source), result, &error);

    if (!reply) {
        g_printerr("%s: %s\n", g_dbus_proxy_get_object_path(G_DBUS_PROXY(source)), error->message);
        p->failed++;
    }
    p->done++;
}

/* @method on every VM from index @from on, all at once. */
static void call_all(GPtrArray *vms, guint from, const char *method)
{
    Pending p = {0};

    for (guint i = from; i < vms->len; i++)
        g_dbus_proxy_call(vms->pdata[i], method, NULL, G_DBUS_CALL_FLAGS_NONE, 300 * 1000, NULL,
                          on_call_done, &p);
    mvmd_test_wait_until(p.done == vms->len - from, 600 * 1000);
    g_assert_cmpuint(p.failed, ==, 0);
}

/* kB of a "Key:   123 kB" line of /proc/<pid>/status. */
static guint64 proc_status_kb(GPid pid, const char *key)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *text = NULL;
    const char *line;

    if (!g_file_get_contents(path, &text, NULL, NULL) || !(line = strstr(text, key)))
        return 0;
    return g_ascii_strtoull(line + strlen(key) + 1, NULL, 10);
}

/* A parked guest in the smallest memory that boots it. */
static MvmdVm *create_idle(Fixture *f, const char *name)
{
    g_autofree char *text = g_strdup_printf(
        "{'kernel': <'%s'>, 'cmdline': <'mode=idle'>, 'memory-mib': <uint64 4>}", testguest);

    return create_from_text(f, name, text);
}

/*
 * 100 VMs alive at once in one daemon: parked guests (mode=idle: cli; hlt, no host CPU), so
 * this measures the daemon, not the guests. Prints the CreateVM+Start round trip and the
 * daemon's resident memory per VM.
 */
static void test_many(Fixture *f, gconstpointer data)
{
    g_autoptr(GPtrArray) vms = g_ptr_array_new_with_free_func(g_object_unref);
    guint64 rss0 = proc_status_kb(f->bus->daemon_pid, "VmRSS:");
    gint64 t0 = g_get_monotonic_time();
    guint64 rss1, anon1, shmem1;

    /* One at a time first: the round trip a client sees. */
    g_ptr_array_add(vms, create_idle(f, "many000"));
    mvmd_test_vm_call_ok(vms->pdata[0], "Start", NULL);
    g_test_message("CreateVM+Start round trip: %.1f ms", (g_get_monotonic_time() - t0) / 1e3);
    for (guint i = 1; i < N_MANY; i++) {
        g_autofree char *name = g_strdup_printf("many%03u", i);

        g_ptr_array_add(vms, create_idle(f, name));
    }
    call_all(vms, 1, "Start");
    g_test_message("%d VMs started in %.2f s", N_MANY, (g_get_monotonic_time() - t0) / 1e6);
    for (guint i = 0; i < vms->len; i++)
        mvmd_test_vm_wait_state(vms->pdata[i], "running");
    /* Each one is alive: spot-check consoles at both ends and in the middle. */
    for (guint i = 0; i < vms->len; i += N_MANY / 4) {
        MvmdTestConsole *c = mvmd_test_console_open(vms->pdata[i]);

        mvmd_test_console_expect(c, 0, "IDLE");
        mvmd_test_console_close(c);
    }
    rss1 = proc_status_kb(f->bus->daemon_pid, "VmRSS:");
    anon1 = proc_status_kb(f->bus->daemon_pid, "RssAnon:");
    shmem1 = proc_status_kb(f->bus->daemon_pid, "RssShmem:");
    g_test_message("daemon RSS: %" G_GUINT64_FORMAT " kB idle, %" G_GUINT64_FORMAT
                   " kB with %d running VMs (anon %" G_GUINT64_FORMAT
                   " kB, guest RAM touched %" G_GUINT64_FORMAT " kB): %.0f kB per VM",
                   rss0, rss1, N_MANY, anon1, shmem1, (double)(rss1 - rss0) / N_MANY);
    g_assert_true(mvmd_test_bus_daemon_alive(f->bus));
    call_all(vms, 0, "Stop");
    for (guint i = 0; i < vms->len; i++)
        mvmd_test_vm_wait_state(vms->pdata[i], "stopped");
    g_test_message("%d VMs started and stopped in %.2f s", N_MANY,
                   (g_get_monotonic_time() - t0) / 1e6);
}

static void test_sigterm_running(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) a = create_guest(f, "a", "echo", NULL);
    g_autoptr(MvmdVm) b = create_guest(f, "b", "echo", NULL);
    gint64 start;

    mvmd_test_vm_call_ok(a, "Start", NULL);
    mvmd_test_vm_call_ok(b, "Start", NULL);
    mvmd_test_vm_call_ok(b, "Pause", g_variant_new_parsed("(@a{sv} {},)"));
    /* Guests that ignore the shutdown request: 2 s grace (--shutdown-timeout), then forced. */
    start = g_get_monotonic_time();
    g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    g_test_message("daemon stopped in %.2f s", (g_get_monotonic_time() - start) / 1e6);
}

int main(int argc, char **argv)
{
    if (argc == 6 && g_str_equal(argv[1], "--restore-client"))
        return restore_client_main(argv);
    g_test_init(&argc, &argv, NULL);
    testguest = mvmd_test_guest_or_skip();
#define ADD(name, func) g_test_add(name, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/daemon-kvm/echo-console", test_echo_console);
    ADD("/daemon-kvm/stop-start-reboot", test_stop_start_reboot);
    ADD("/daemon-kvm/pipelined-calls-in-order", test_pipelined_calls_in_order);
    ADD("/daemon-kvm/triplefault-isolated", test_triplefault_isolated);
    g_test_add("/daemon-kvm/sandbox-violation-isolated", Fixture, "daemon.log", fixture_setup,
               test_sandbox_violation_isolated, fixture_teardown);
    ADD("/daemon-kvm/shutdown-timeout", test_shutdown_timeout);
    ADD("/daemon-kvm/console-clients-bounded", test_console_clients_bounded);
    ADD("/daemon-kvm/shutdown-waiters-bounded", test_shutdown_waiters_bounded);
    ADD("/daemon-kvm/graceful-shutdown", test_graceful_shutdown);
    ADD("/daemon-kvm/reset", test_reset);
    ADD("/daemon-kvm/devices", test_devices);
    ADD("/daemon-kvm/disk-rate-limit-live", test_disk_rate_limit_live);
    g_test_add("/daemon-kvm/guest-log-limited", Fixture, "daemon.log", fixture_setup,
               test_guest_log_limited, fixture_teardown);
    ADD("/daemon-kvm/autostart-restart", test_autostart_restart);
    ADD("/daemon-kvm/snapshot-restore", test_snapshot_restore);
    ADD("/daemon-kvm/restore-truncated-memory", test_restore_truncated_memory);
    ADD("/daemon-kvm/restore-backends", test_restore_backends);
    ADD("/daemon-kvm/restore-clones", test_restore_clones);
    ADD("/daemon-kvm/restore-unprivileged", test_restore_unprivileged);
    ADD("/daemon-kvm/restore-reservation", test_restore_reservation);
    ADD("/daemon-kvm/reload-drops-pending-call", test_reload_drops_pending_call);
    ADD("/daemon-kvm/many", test_many);
    ADD("/daemon-kvm/sigterm-running", test_sigterm_running);
    return g_test_run();
}
