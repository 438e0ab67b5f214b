/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/sandbox.c on threads of this test, without KVM: what a sandboxed thread may and may not
 * do, that a refused call is noted and named, and that the rest of the process is untouched.
 * Each test runs in a subprocess of its own: the mode is the process's, and the process-wide
 * filter cannot be taken back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "microvm.h"
#include "sandbox.h"

typedef void (*ProbeFunc)(void);

typedef struct {
    MvmSandboxFlags flags;
    ProbeFunc probe;
    gboolean violated;
    char *violation;
} Run;

static gpointer sandboxed_thread(gpointer data)
{
    Run *run = data;
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_sandbox_enter(run->flags, "test", &error));
    g_assert_no_error(error);
    run->probe();
    run->violated = mvm_sandbox_violated();
    run->violation = mvm_sandbox_dup_violation();
    return NULL;
}

/* Runs @probe on a new thread in the sandbox for @flags; returns the violation, or NULL. */
static char *run_sandboxed(MvmSandboxFlags flags, ProbeFunc probe)
{
    g_autoptr(GError) error = NULL;
    Run run = {.flags = flags, .probe = probe};

    g_assert_true(mvm_sandbox_prepare(flags, &error));
    g_assert_no_error(error);
    g_thread_join(g_thread_new("sandboxed", sandboxed_thread, &run));
    g_assert_cmpint(run.violated, ==, run.violation != NULL);
    return run.violation;
}

/* Runs @probe in the sandbox for @flags: its first refused call must match @expected. */
static void assert_refused(MvmSandboxFlags flags, ProbeFunc probe, const char *expected)
{
    g_autofree char *reason = run_sandboxed(flags, probe);

    g_assert_nonnull(reason);
    if (strstr(reason, expected) == NULL)
        g_error("expected a reason with \"%s\", got \"%s\"", expected, reason);
}

static void assert_socket_refused(int domain)
{
    errno = 0;
    g_assert_cmpint(socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
}

static void assert_socket_allowed(int domain)
{
    int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    close(fd);
}

/* Valgrind runs its own code on the test's threads: it cannot run filtered. */
static gboolean skip_when_off(void)
{
    if (g_strcmp0(g_getenv("MVM_SANDBOX"), "off") != 0)
        return FALSE;
    g_test_skip("MVM_SANDBOX=off here");
    return TRUE;
}

/* Runs the test's body in a subprocess with the sandbox in @mode; TRUE in the parent. */
static gboolean in_subprocess(MvmSandboxMode mode)
{
    if (g_test_subprocess()) {
        mvm_sandbox_set_mode(mode);
        return FALSE;
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
    return TRUE;
}

static void test_mode_names(void)
{
    MvmSandboxMode mode;

    for (MvmSandboxMode m = MVM_SANDBOX_MODE_ENFORCE; m <= MVM_SANDBOX_MODE_OFF; m++) {
        g_assert_true(mvm_sandbox_mode_from_string(mvm_sandbox_mode_to_string(m), &mode));
        g_assert_cmpint(mode, ==, m);
    }
    g_assert_false(mvm_sandbox_mode_from_string("Enforce", &mode));
    g_assert_false(mvm_sandbox_mode_from_string("", &mode));
    g_assert_false(mvm_sandbox_mode_from_string(NULL, &mode));
}

static void probe_inet_socket(void)
{
    assert_socket_refused(AF_INET);
    /* Only the first refusal is the reason. */
    g_assert_cmpint(open("/etc/hostname", O_RDONLY | O_CLOEXEC), ==, -1);
}

static void test_refused_call(void)
{
    if (skip_when_off() || in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    assert_refused(MVM_SANDBOX_IO, probe_inet_socket,
                   "the test thread made system call socket (41; arguments 0x2");
    /* This thread, outside the sandbox, neither noticed nor is bound by it. */
    g_assert_false(mvm_sandbox_violated());
    g_assert_null(mvm_sandbox_dup_violation());
    assert_socket_allowed(AF_INET);
}

static void probe_executable_memory(void)
{
    gsize size = 4096;
    void *data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    g_assert_true(data != MAP_FAILED);                                    /* memory is fine… */
    g_assert_cmpint(mprotect(data, size, PROT_READ | PROT_EXEC), ==, -1); /* …code is not */
    g_assert_cmpint(errno, ==, EPERM);
    munmap(data, size);
    g_assert_true(mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
                  MAP_FAILED);
}

static void test_no_executable_memory(void)
{
    if (skip_when_off() || in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    assert_refused(MVM_SANDBOX_VCPU, probe_executable_memory, "system call mprotect");
}

/* A taken-over thread must not reach other processes or widen what it already holds. */
static void probe_reach(void)
{
    int fds[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds), ==, -1);
    g_assert_cmpint(fcntl(0, F_GETFD), >=, 0);
    g_assert_cmpint(fcntl(0, F_SETOWN, getpid()), ==, -1); /* F_SETOWN + F_SETSIG signal anyone */
    g_assert_cmpint(errno, ==, EPERM);
}

static pid_t parent_pid; /* getppid() is no call of a sandboxed thread's */

static void probe_signal_other_process(void)
{
    g_assert_cmpint(syscall(SYS_tgkill, parent_pid, parent_pid, 0), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
}

static void probe_core_dump_memory(void)
{
    void *data = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    g_assert_cmpint(madvise(data, 4096, MADV_DONTNEED), ==, 0);
    g_assert_cmpint(madvise(data, 4096, MADV_DODUMP), ==, -1);
    munmap(data, 4096);
}

/*
 * A new thread or process fails plainly: glibc blocks every signal around clone, and a trap
 * there would kill the whole process.
 */
static void probe_new_process(void)
{
    g_assert_cmpint(fork(), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
    g_assert_false(mvm_sandbox_violated());
}

static void test_no_reach_beyond(void)
{
    if (skip_when_off() || in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    assert_refused(MVM_SANDBOX_IO, probe_reach, "system call socketpair");
    parent_pid = getppid();
    assert_refused(MVM_SANDBOX_VCPU, probe_signal_other_process, "system call tgkill");
    assert_refused(MVM_SANDBOX_IO, probe_core_dump_memory, "system call madvise");
    g_assert_null(run_sandboxed(MVM_SANDBOX_VCPU, probe_new_process));
}

static void probe_unix_then_inet(void)
{
    assert_socket_allowed(AF_UNIX);
    assert_socket_refused(AF_INET);
}

static void probe_unix(void)
{
    assert_socket_refused(AF_UNIX);
}

static void test_unix_sockets_only_for_vsock(void)
{
    if (skip_when_off() || in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    assert_refused(MVM_SANDBOX_IO | MVM_SANDBOX_VSOCK, probe_unix_then_inet,
                   "socket (41; arguments 0x2,");
    /* The vCPU threads of that very VM never connect anything. */
    assert_refused(MVM_SANDBOX_VCPU | MVM_SANDBOX_VSOCK, probe_unix, "socket (41; arguments 0x1,");
    assert_refused(MVM_SANDBOX_IO, probe_unix, "socket (41; arguments 0x1,");
}

static void probe_time_zone(void)
{
    g_assert_cmpint(open("/etc/localtime", O_RDONLY | O_CLOEXEC), ==, -1);
    g_assert_cmpint(errno, ==, EACCES);
    g_assert_false(mvm_sandbox_violated());
    g_assert_cmpint(open("/etc/localtime/../hostname", O_RDONLY | O_CLOEXEC), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
}

/* glibc's localtime() for a log line's time stamp: refused, but not a violation. */
static void test_time_zone_lookup_is_quiet(void)
{
    if (skip_when_off() || in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    assert_refused(MVM_SANDBOX_VCPU, probe_time_zone, "system call openat");
}

static void probe_files(void)
{
    /* seccomp only logs here: Landlock is what refuses. */
    g_assert_cmpint(open("/etc/hostname", O_RDONLY | O_CLOEXEC), ==, -1);
    g_assert_cmpint(errno, ==, EACCES);
    g_assert_cmpint(open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ==, -1);
    g_assert_cmpint(errno, ==, EACCES);
}

static void test_landlock_no_files(void)
{
    if (skip_when_off())
        return;
    if (mvm_sandbox_landlock_abi() == 0) {
        g_test_skip("this kernel has no Landlock");
        return;
    }
    if (in_subprocess(MVM_SANDBOX_MODE_LOG))
        return;
    g_autofree char *reason = run_sandboxed(MVM_SANDBOX_IO, probe_files);
    g_assert_null(reason); /* log mode traps nothing */
    g_assert_cmpint(access("/etc/hostname", R_OK), ==, 0);
}

static void probe_nothing(void)
{
}

/*
 * A thread enters its sandbox with no descriptor to spare: a VM whose start succeeded must not
 * crash because another VM's start took the last one before its vCPU thread ran (the Landlock
 * ruleset is made once, at prepare, on the caller's thread).
 */
static void test_enter_without_descriptors(void)
{
    struct rlimit few = {64, 64};
    g_autoptr(GError) error = NULL;

    if (skip_when_off())
        return;
    if (in_subprocess(MVM_SANDBOX_MODE_ENFORCE))
        return;
    g_assert_true(mvm_sandbox_prepare(MVM_SANDBOX_VCPU, &error));
    g_assert_no_error(error);
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &few), ==, 0);
    g_autoptr(GArray) filler = g_array_new(FALSE, FALSE, sizeof(int));
    for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
        g_array_append_val(filler, fd);
    g_assert_cmpint(errno, ==, EMFILE);
    g_autofree char *reason = run_sandboxed(MVM_SANDBOX_VCPU, probe_nothing);
    g_assert_null(reason);
    /* Room again for what runs at exit (LeakSanitizer reads /proc). */
    for (guint i = 0; i < filler->len; i++)
        close(g_array_index(filler, int, i));
}

static void probe_anything(void)
{
    assert_socket_allowed(AF_INET);
    int fd = open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    close(fd);
}

static void test_off(void)
{
    if (in_subprocess(MVM_SANDBOX_MODE_OFF))
        return;
    g_assert_null(run_sandboxed(MVM_SANDBOX_IO, probe_anything));
}

/* The daemon's deny list: a call no part of it makes ends the process, on any thread. */
static void test_lock_process(void)
{
    g_autoptr(GError) error = NULL;

    if (skip_when_off())
        return;
    if (!g_test_subprocess()) {
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_failed();
        g_test_trap_assert_stdout("*locked*");
        g_test_trap_assert_stdout_unmatched("*survived*");
        return;
    }
    mvm_sandbox_set_mode(MVM_SANDBOX_MODE_ENFORCE);
    g_assert_true(mvm_sandbox_lock_process(&error));
    g_assert_no_error(error);
    /* Asking for the SIGSYS handler is no attempt to replace it. */
    struct sigaction old_action;
    g_assert_cmpint(sigaction(SIGSYS, NULL, &old_action), ==, 0);
    g_print("locked\n");
    fflush(stdout);
    char *const argv[] = {"/bin/true", NULL};
    execv(argv[0], argv);
    g_print("survived execv: %s\n", g_strerror(errno));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sandbox/mode-names", test_mode_names);
    g_test_add_func("/sandbox/refused-call", test_refused_call);
    g_test_add_func("/sandbox/no-executable-memory", test_no_executable_memory);
    g_test_add_func("/sandbox/unix-sockets-only-for-vsock", test_unix_sockets_only_for_vsock);
    g_test_add_func("/sandbox/no-reach-beyond", test_no_reach_beyond);
    g_test_add_func("/sandbox/time-zone-lookup-is-quiet", test_time_zone_lookup_is_quiet);
    g_test_add_func("/sandbox/landlock-no-files", test_landlock_no_files);
    g_test_add_func("/sandbox/enter-without-descriptors", test_enter_without_descriptors);
    g_test_add_func("/sandbox/off", test_off);
    g_test_add_func("/sandbox/lock-process", test_lock_process);
    return g_test_run();
}
