/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test harness: a private dbus-daemon (tests/common/private-bus.conf) listening in a temporary
 * directory, the built microvmd on it (--address, its own --state-dir and --runtime-dir), and
 * helpers to drive it. No mocks. Whether KVM is usable: kvm_unusable() of tests/common.
 * Paths come from the environment meson sets: MICROVMD (the daemon), MVM_TESTGUEST (the
 * test guest ELF, for the KVM tests), MVMD_TEST_DAEMON_WRAPPER (a command line to run the
 * daemon under, e.g. valgrind), MVMD_TEST_VERBOSE (run it with --verbose).
 */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

#include "mvmd-dbus-generated.h"
#include "test-util.h"

G_BEGIN_DECLS

/* gdbus-codegen defines these for the classes only, not for the interfaces. */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdManager, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdVm, g_object_unref)

typedef struct {
    char *tmpdir;
    char *state_dir;
    char *runtime_dir;
    char *address;
    GPid bus_pid;
    GPid daemon_pid;
    GDBusConnection *connection; /* the harness's own client connection */
    char *daemon_log; /* set before starting the daemon: its output goes there (appended) */
    /* RLIMIT_NOFILE (soft, hard) the daemon is started with; 0, 0: the test's own. */
    guint64 daemon_nofile_soft;
    guint64 daemon_nofile_hard;
    /*
     * What systemd would give the daemon: $NOTIFY_SOCKET (NULL: none), and descriptors passed
     * as $LISTEN_FDS with $LISTEN_FDNAMES (borrowed; NULL: none), numbered from 3 in order.
     */
    char *daemon_notify_socket;
    GArray *daemon_listen_fds;      /* of int */
    GPtrArray *daemon_listen_names; /* of char *, as many */
} MvmdTestBus;

/*
 * For a test of guests, after g_test_init(): the test guest (MVM_TESTGUEST). Exits 77 (skipped),
 * saying why, without a usable /dev/kvm, without MICROVMD or MVM_TESTGUEST, or when the test
 * guest was not built.
 */
const char *mvmd_test_guest_or_skip(void);

/* Starts a private bus (not the daemon). */
MvmdTestBus *mvmd_test_bus_new(void);
/* Starts microvmd with @extra_args (NULL-terminated, may be NULL); waits for its name. */
void mvmd_test_bus_start_daemon(MvmdTestBus *bus, const char *const *extra_args);
/* SIGTERM, wait (up to @timeout_sec); returns the exit status (-1 if it had to be killed). */
int mvmd_test_bus_stop_daemon(MvmdTestBus *bus, guint timeout_sec);
/* Is the daemon process still alive? */
gboolean mvmd_test_bus_daemon_alive(MvmdTestBus *bus);
/* Kills whatever is left and removes the temporary directory. */
void mvmd_test_bus_free(MvmdTestBus *bus);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdTestBus, mvmd_test_bus_free)

/* A new client connection to the private bus. */
GDBusConnection *mvmd_test_bus_connect(MvmdTestBus *bus);
MvmdManager *mvmd_test_bus_manager(MvmdTestBus *bus, GDBusConnection *connection);
MvmdVm *mvmd_test_bus_vm(MvmdTestBus *bus, GDBusConnection *connection, const char *path);

/* Runs the thread-default main context until @cond is TRUE or @timeout_ms passes. */
#define mvmd_test_wait_until(cond, timeout_ms)                                                     \
    G_STMT_START                                                                                   \
    {                                                                                              \
        gint64 _deadline = g_get_monotonic_time() + (gint64)(timeout_ms)*1000;                     \
        while (!(cond) && g_get_monotonic_time() < _deadline)                                      \
            g_main_context_iteration(NULL, FALSE) || (g_usleep(1000), 0);                          \
        g_assert_true(cond);                                                                       \
    }                                                                                              \
    G_STMT_END

/* Builds a floating a{sv} from a GVariant text, e.g. "{'kernel': <'/x'>}". */
GVariant *mvmd_test_config(const char *text);

/*
 * GetConfig and GetExitReason on @vm (they are methods: only the owner and root read them),
 * asserting success. The result stays valid until the next such call on @vm.
 */
GVariant *mvmd_test_vm_config(MvmdVm *vm);
const char *mvmd_test_vm_exit_reason(MvmdVm *vm);

/* Asserts that @error is the D-Bus error @name (e.g. "org.microvmd.MicroVM1.Error.NoSuchVM"). */
void mvmd_test_assert_dbus_error(GError *error, const char *name);
/* The same and, unless @says is NULL, that the error's message has @says. */
void mvmd_test_assert_dbus_error_says(GError *error, const char *name, const char *says);

/*
 * How long a call or a wait that depends on a guest may take. Nested KVM emulates guest kernel
 * code (docs/kvm-hosts.md): be generous.
 */
#define MVMD_TEST_GUEST_TIMEOUT_MS (60 * 1000)

/*
 * Calls @vm's @method with @args (floating, or NULL) and @fds (or NULL), waiting up to
 * MVMD_TEST_GUEST_TIMEOUT_MS for the reply, which is dropped. FALSE and @error if it failed.
 */
gboolean mvmd_test_vm_call(MvmdVm *vm, const char *method, GVariant *args, GUnixFDList *fds,
                           GError **error);
/* mvmd_test_vm_call() without descriptors, asserting success. */
void mvmd_test_vm_call_ok(MvmdVm *vm, const char *method, GVariant *args);
/*
 * Runs the thread-default main context until @vm's State is @state; after
 * MVMD_TEST_GUEST_TIMEOUT_MS, g_error()s with the state it has and its exit reason.
 */
void mvmd_test_vm_wait_state(MvmdVm *vm, const char *state);

/*
 * Opens @path with @flags (O_CLOEXEC added; mode 0600 should it be created), appends the
 * descriptor to @fds and closes it; returns its index in @fds.
 */
int mvmd_test_fd_list_append_file(GUnixFDList *fds, const char *path, int flags);

/*
 * A copy of the file @path for a process run as another user: in a new temporary directory
 * that anyone may traverse (0755), the copy itself 0755. The build tree may be out of that
 * user's reach (CI clones into a 0700 directory); nothing outside the new directory is
 * chmod'ed. Free with mvmd_test_remove_reachable_copy().
 */
char *mvmd_test_reachable_copy(const char *path);
/* Removes the copy and its directory; frees @copy. */
void mvmd_test_remove_reachable_copy(char *copy);

/* The unprivileged caller of the tests: nobody (Debian's uid and gid 65534). */
#define MVMD_TEST_NOBODY 65534

/* A child setup (GSpawnChildSetupFunc) that makes the child nobody, or exits it with 126. */
void mvmd_test_drop_to_nobody(gpointer data);

/*
 * The private bus lets any user in (private-bus.conf), but its socket is in the harness's 0700
 * directory: open that to nobody. Needs root to be of any use.
 */
void mvmd_test_bus_open_to_all(MvmdTestBus *bus);

/*
 * `gdbus call` of VM @name's @method (no arguments), as nobody, started and not waited for;
 * its stdout and stderr go to one pipe (g_subprocess_communicate_utf8()).
 */
GSubprocess *mvmd_test_vm_call_as_nobody(MvmdTestBus *bus, const char *name, const char *method);
/* The same with one argument, in gdbus's GVariant text (NULL: none). */
GSubprocess *mvmd_test_vm_call_as_nobody_with(MvmdTestBus *bus, const char *name,
                                              const char *method, const char *args);

/*
 * python-dbusmock's polkitd on the private bus, allowing @action (as tests/system does on its
 * system-like bus), or NULL when python-dbusmock is not installed. It dies with the test.
 */
GSubprocess *mvmd_test_start_polkit_mock(MvmdTestBus *bus, const char *action);

/*
 * A VM's console (OpenConsole): what it printed so far in @seen, read as needed. @at is the
 * caller's to keep its place with.
 */
typedef struct {
    int fd;
    GString *seen;
    gsize at;
} MvmdTestConsole;
MvmdTestConsole *mvmd_test_console_try_open(MvmdVm *vm, GError **error);
MvmdTestConsole *mvmd_test_console_open(MvmdVm *vm);
void mvmd_test_console_close(MvmdTestConsole *c);
/* Reads until @text has been seen after @from bytes (at most a minute); returns where it ends. */
gsize mvmd_test_console_expect(MvmdTestConsole *c, gsize from, const char *text);
/*
 * The pattern test guest's next count (tests/testguest/README.md): reads the next
 * "COUNTER n" line after @c->at and moves @c->at past it; asserts that the console never
 * printed FAIL.
 */
gint64 mvmd_test_console_next_counter(MvmdTestConsole *c);
/* The same for any line "@prefix<n>..." (e.g. the blkloop guest's "BLKLOOP wrote "). */
gint64 mvmd_test_console_next_number(MvmdTestConsole *c, const char *prefix);

/*
 * systemd's file descriptor store, as a test stands in for it (fd-store.c): the notification
 * socket ($NOTIFY_SOCKET: mvmd_test_fd_store_path()) read by a thread of its own, as systemd
 * reads it (net.unix.max_dgram_qlen is small, and a full queue blocks the daemon's sd_notify()).
 * FDSTORE=1 keeps a message's descriptor under its FDNAME (unless its open file is stored
 * already: systemd's same_fd() keeps one once), FDSTOREREMOVE=1 drops it.
 */
typedef struct _MvmdTestFdStore MvmdTestFdStore;

/* Binds DIR/notify and starts its reader. */
MvmdTestFdStore *mvmd_test_fd_store_new(const char *dir);
/* Stops the reader, closes the socket and every stored descriptor. */
void mvmd_test_fd_store_free(MvmdTestFdStore *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdTestFdStore, mvmd_test_fd_store_free)
const char *mvmd_test_fd_store_path(MvmdTestFdStore *s);
/*
 * Reads every datagram queued now. Once the daemon has exited, all it sent is in: nothing is
 * in flight after that.
 */
void mvmd_test_fd_store_drain(MvmdTestFdStore *s);
/* How many stored names start with @prefix. */
guint mvmd_test_fd_store_count(MvmdTestFdStore *s, const char *prefix);
/* How many names the daemon took out (FDSTOREREMOVE=1) since the last _pass(). */
guint mvmd_test_fd_store_removed(MvmdTestFdStore *s);
/* How many descriptors were dropped since _new() because their open file was stored already. */
guint mvmd_test_fd_store_dropped(MvmdTestFdStore *s);
/* Takes @name's descriptor out of the store: the caller's now. -1: no such name. */
int mvmd_test_fd_store_take(MvmdTestFdStore *s, const char *name);
/* Stores @fd (taken) under @name, as another writer of the store might. */
void mvmd_test_fd_store_put(MvmdTestFdStore *s, const char *name, int fd);
/* @name's descriptor, still the store's; -1: no such name. */
int mvmd_test_fd_store_get(MvmdTestFdStore *s, const char *name);
/*
 * The N of the stored "mvmd.N.def" that defines VM @name (the names number the VMs; the
 * definition key file says which is which); the result lives until the next call.
 */
const char *mvmd_test_fd_store_vm_index(MvmdTestFdStore *s, const char *name);
/*
 * Gives the next daemon started on @bus the whole store, as systemd passes it ($LISTEN_FDS,
 * $LISTEN_FDNAMES; the descriptors stay the store's), and forgets what was removed.
 */
void mvmd_test_fd_store_pass(MvmdTestFdStore *s, MvmdTestBus *bus);

G_END_DECLS
