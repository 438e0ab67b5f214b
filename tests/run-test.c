/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * run-test: the wrapper every test of the suite runs under (the test setups' exe_wrapper in
 * tests/meson.build), so that a test that hangs ends within its timeout, named, wherever it runs.
 *
 *   run-test COMMAND [ARGS...]
 *
 * meson starts each test in a session of its own and, at the test's timeout, kills that
 * session's process group. Tests that run a VMM, a daemon or a bus in a session of their own
 * (to stop it cleanly) escape that kill: the leftover keeps meson's output pipes open or
 * outlives the test. run-test makes itself the child subreaper, so every process the test
 * starts stays in its tree whatever session it moves to, and:
 *  - when COMMAND exits, kills what it left behind (saying what it was) and exits as COMMAND did;
 *  - on SIGTERM, SIGINT or SIGHUP (meson's timeout, Ctrl-C), prints every process of the test
 *    still running with its state and kernel wait channel — the name and place of the hang —
 *    then kills them all;
 *  - with MVM_TEST_JOURNAL set, appends "start" and "end" lines to that file, so that a host
 *    watching from outside (tests/vmhost/run-with-kvm) names the test that was running when
 *    the whole machine stopped answering.
 * Plain libc on purpose: it must start fast inside the nested-KVM host, where everything is
 * about ten times slower, and it must not depend on what it is testing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS         32768
#define LEFTOVER_GRACE_MS 2000
#define REAP_LIMIT_MS     5000

static struct timespec started;
static char command_line[512];

static double elapsed_s(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - started.tv_sec) + (now.tv_nsec - started.tv_nsec) / 1e9;
}

static void say(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)!write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void journal(const char *what, long status)
{
    const char *path = getenv("MVM_TEST_JOURNAL");
    char line[768];

    if (path == NULL || *path == '\0')
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    int n = snprintf(line, sizeof(line), "%s %ld %d %ld %s\n", what, (long)time(NULL), getpid(),
                     status, command_line);
    (void)!write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    close(fd);
}

/* A whole small /proc file, NUL bytes turned into spaces, the trailing newline dropped. */
static void read_proc(int pid, const char *name, char *out, size_t size)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/%d/%s", pid, name);
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, size - 1);
    close(fd);
    if (n <= 0)
        return;
    out[n] = '\0';
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* The parent pid and state letter from /proc/PID/stat ("pid (comm) S ppid ..."). */
static bool proc_parent(int pid, int *ppid, char *state)
{
    char stat[512];

    read_proc(pid, "stat", stat, sizeof(stat));
    const char *end_of_comm = strrchr(stat, ')');
    return end_of_comm != NULL && sscanf(end_of_comm + 1, " %c %d", state, ppid) == 2;
}

/* Every process below us: with the subreaper bit, orphans of the test are re-parented to us. */
static int list_descendants(int *pids, int max)
{
    static int all[MAX_PROCS], parent[MAX_PROCS];
    int n_all = 0, n = 0;
    DIR *dir = opendir("/proc");
    struct dirent *entry;
    char state;

    if (dir == NULL)
        return 0;
    while ((entry = readdir(dir)) != NULL && n_all < MAX_PROCS) {
        int pid = atoi(entry->d_name);
        if (pid > 0 && proc_parent(pid, &parent[n_all], &state))
            all[n_all++] = pid;
    }
    closedir(dir);
    /* Breadth first from us; pids[] doubles as the queue. */
    for (int i = -1; i < n; i++) {
        int of = i < 0 ? getpid() : pids[i];
        for (int j = 0; j < n_all && n < max; j++)
            if (parent[j] == of)
                pids[n++] = all[j];
    }
    return n;
}

static void describe(int pid)
{
    char cmdline[300], wchan[64], stat[512];
    char state = '?';
    int ppid = 0;

    read_proc(pid, "cmdline", cmdline, sizeof(cmdline));
    read_proc(pid, "wchan", wchan, sizeof(wchan));
    read_proc(pid, "stat", stat, sizeof(stat));
    proc_parent(pid, &ppid, &state);
    if (state == 'Z')
        return; /* exited, only not reaped yet */
    say("run-test:   pid %d (parent %d) state %c wchan %s: %s\n", pid, ppid, state,
        wchan[0] && strcmp(wchan, "0") != 0 ? wchan : "-", cmdline[0] ? cmdline : stat);
}

static int signal_all(int sig, bool show)
{
    static int pids[MAX_PROCS];
    int n = list_descendants(pids, MAX_PROCS);

    for (int i = 0; i < n; i++) {
        if (show)
            describe(pids[i]);
        kill(pids[i], sig);
    }
    return n;
}

/* Reap every child that has exited; returns whether any child is left. */
static bool reap(pid_t main_pid, int *main_status, bool *main_done)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == main_pid) {
            *main_status = status;
            *main_done = true;
        }
    }
    return !(pid < 0 && errno == ECHILD);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Kill whatever is left below us and wait (boundedly) until it is gone. */
static void clear_leftovers(pid_t main_pid, int *main_status, bool *main_done, int first_sig)
{
    int waited = 0;

    if (signal_all(first_sig, false) == 0)
        return;
    while (reap(main_pid, main_status, main_done) && waited < REAP_LIMIT_MS) {
        if (waited == LEFTOVER_GRACE_MS)
            signal_all(SIGKILL, false);
        sleep_ms(50);
        waited += 50;
        if (list_descendants((int[1]){0}, 1) == 0)
            break;
    }
    if (list_descendants((int[1]){0}, 1) > 0) {
        say("run-test: these processes of the test did not die (uninterruptible?):\n");
        signal_all(SIGKILL, true);
    }
}

/* End as the test did: with its exit code, or killed by the same signal. */
_Noreturn static void exit_like(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        prctl(PR_SET_DUMPABLE, 0); /* the test dumped core already if it was going to */
        raise(sig);
        _exit(128 + sig);
    }
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : 125);
}

static void remember_command(char **argv)
{
    size_t used = 0;

    for (char **a = argv; *a != NULL && used + 2 < sizeof(command_line); a++) {
        int n = snprintf(command_line + used, sizeof(command_line) - used, "%s%s",
                         a == argv ? "" : " ", *a);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    command_line[sizeof(command_line) - 1] = '\0';
}

static void on_stop_signal(int sig, pid_t main_pid)
{
    int status = 0;
    bool done = false;

    say("run-test: %s after %.1f s: %s\nrun-test: the test's processes still running:\n",
        sig == SIGTERM ? "stopped by the test runner (timeout?)" : strsignal(sig), elapsed_s(),
        command_line);
    signal_all(SIGKILL, true);
    clear_leftovers(main_pid, &status, &done, SIGKILL);
    journal("end", 128 + sig);
    exit_like(sig); /* a wait status of "killed by sig" is the signal number itself */
}

int main(int argc, char **argv)
{
    sigset_t blocked, previous;

    if (argc < 2) {
        say("usage: run-test COMMAND [ARGS...]\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &started);
    remember_command(argv + 1);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        say("run-test: PR_SET_CHILD_SUBREAPER: %s (leftovers may escape)\n", strerror(errno));

    sigemptyset(&blocked);
    sigaddset(&blocked, SIGCHLD);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGHUP);
    sigprocmask(SIG_BLOCK, &blocked, &previous);

    pid_t main_pid = fork();
    if (main_pid < 0) {
        say("run-test: fork: %s\n", strerror(errno));
        return 125;
    }
    if (main_pid == 0) {
        sigprocmask(SIG_SETMASK, &previous, NULL);
        execvp(argv[1], argv + 1);
        say("run-test: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    journal("start", 0);

    int status = 0;
    bool main_done = false;
    while (!main_done) {
        int sig = sigwaitinfo(&blocked, NULL);
        if (sig == SIGCHLD)
            reap(main_pid, &status, &main_done);
        else if (sig > 0)
            on_stop_signal(sig, main_pid);
    }
    static int leftovers[MAX_PROCS];
    int left = list_descendants(leftovers, MAX_PROCS);
    if (left > 0) {
        say("run-test: %s exited and left %d process(es) running; ending them:\n", argv[1], left);
        signal_all(SIGTERM, true);
        clear_leftovers(main_pid, &status, &main_done, SIGTERM);
    }
    journal("end", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    exit_like(status);
}
