/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl console: the VM's serial port over the socket OpenConsole returns. On a terminal
 * it switches the terminal to raw mode so every key reaches the guest, and Ctrl-] leaves;
 * otherwise it copies standard input to the guest and the guest's output to standard output.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <termios.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "microvmctl.h"

#define ESCAPE_CHAR 0x1d /* Ctrl-] as in telnet and virsh console */
/* status: how long the replay may take to arrive, and how much of it to keep. */
#define TAIL_FIRST_MS 500
#define TAIL_QUIET_MS 200
#define TAIL_MAX_MS   1500
#define TAIL_MAX      (256 * 1024)

static int open_console(MvmdVm *vm, GError **error)
{
    g_autoptr(GVariant) handle = NULL;
    g_autoptr(GUnixFDList) fds = NULL;

    if (!mvmd_vm_call_open_console_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, NULL, &handle, &fds, NULL,
                                        error))
        return -1;
    return g_unix_fd_list_get(fds, g_variant_get_handle(handle), error);
}

/* Waits up to @timeout_ms for @fd; reads what is there. 0 on timeout, -1 on EOF or error. */
static gssize read_some(int fd, char *buf, gsize size, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;

    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0)
        return r;
    r = read(fd, buf, size);
    return r > 0 ? r : -1;
}

GStrv mctl_console_tail(Mctl *ctl, MvmdVm *vm, guint n, GError **error)
{
    int fd = open_console(vm, error);
    g_autoptr(GString) seen = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + TAIL_MAX_MS * 1000;
    g_auto(GStrv) lines = NULL;
    GPtrArray *tail = g_ptr_array_new();
    guint count, first;

    if (fd < 0) {
        g_ptr_array_free(tail, TRUE);
        return NULL;
    }
    /* The daemon replays the recent output at once; a busy guest adds more, so stop at a
     * deadline too. */
    while (seen->len < TAIL_MAX && g_get_monotonic_time() < deadline) {
        char buf[4096];
        gssize r = read_some(fd, buf, sizeof(buf), seen->len ? TAIL_QUIET_MS : TAIL_FIRST_MS);

        if (r <= 0)
            break;
        g_string_append_len(seen, buf, r);
    }
    close(fd);
    /* A trailing newline ends the last line; it does not start an empty one. */
    if (seen->len && seen->str[seen->len - 1] == '\n')
        g_string_truncate(seen, seen->len - 1);
    lines = seen->len ? g_strsplit(seen->str, "\n", -1) : g_new0(char *, 1);
    count = g_strv_length(lines);
    first = count > n ? count - n : 0;
    for (guint i = first; i < count; i++)
        g_ptr_array_add(tail, mctl_sanitize(lines[i], -1));
    g_ptr_array_add(tail, NULL);
    return (GStrv)g_ptr_array_free(tail, FALSE);
}

static volatile sig_atomic_t leave_signal;

static void on_leave_signal(int signo)
{
    leave_signal = signo;
}

typedef struct {
    int console;
    gboolean interactive;
    gboolean stdin_open;
    int idle_ms;          /* after stdin's end: leave after this long without output */
    struct termios saved; /* the terminal as we found it */
} Console;

static gboolean write_all(int fd, const char *buf, gsize len)
{
    while (len > 0) {
        gssize w = write(fd, buf, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return FALSE;
        buf += w;
        len -= w;
    }
    return TRUE;
}

/* Raw input, so Ctrl-C and friends go to the guest; output processing stays on so a guest
 * that ends its lines with "\n" only does not draw a staircase. */
static gboolean enter_raw_mode(Console *c, GError **error)
{
    struct termios raw;

    if (tcgetattr(STDIN_FILENO, &c->saved) < 0) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot read the terminal mode: %s"),
                    g_strerror(errno));
        return FALSE;
    }
    raw = c->saved;
    cfmakeraw(&raw);
    raw.c_oflag = c->saved.c_oflag;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot set the terminal mode: %s"),
                    g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* Input from the user: to the guest, up to the escape character. FALSE: leave now. */
static gboolean forward_input(Console *c, GError **error)
{
    char buf[4096];
    gssize r = read(STDIN_FILENO, buf, sizeof(buf));
    const char *escape;

    if (r < 0 && errno == EINTR)
        return TRUE;
    if (r <= 0) {
        /* End of input: a pipe is done; a terminal that hung up is gone. */
        c->stdin_open = FALSE;
        return !c->interactive;
    }
    escape = c->interactive ? memchr(buf, ESCAPE_CHAR, r) : NULL;
    if (!write_all(c->console, buf, escape ? escape - buf : r)) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_FAILED, _("The console was closed: %s"),
                    g_strerror(errno));
        return FALSE;
    }
    return escape == NULL;
}

/* Output of the guest: to standard output as it is (it is the user's own terminal). */
static gboolean forward_output(Console *c, GError **error)
{
    char buf[4096];
    gssize r = read(c->console, buf, sizeof(buf));

    if (r < 0 && errno == EINTR)
        return TRUE;
    if (r <= 0) {
        g_set_error_literal(error, MCTL_ERROR, MCTL_EXIT_FAILED,
                            _("The console was closed by microvmd"));
        return FALSE;
    }
    if (!write_all(STDOUT_FILENO, buf, r)) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot write the output: %s"),
                    g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* Copies both ways until the user leaves, input ends and the guest is quiet, or an error. */
static gboolean console_loop(Console *c, GError **error)
{
    while (!leave_signal) {
        struct pollfd p[2] = {{c->console, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        int timeout = c->stdin_open ? -1 : c->idle_ms;
        int r = poll(p, c->stdin_open ? 2 : 1, timeout);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, "poll: %s", g_strerror(errno));
            return FALSE;
        }
        if (r == 0)
            return TRUE; /* input ended and the guest has been quiet */
        if (p[0].revents && !forward_output(c, error))
            return FALSE;
        if (c->stdin_open && p[1].revents && !forward_input(c, error))
            return *error == NULL; /* the escape character, or an error */
    }
    return TRUE;
}

static void catch_leave_signals(void)
{
    struct sigaction sa = {0};

    /* Without SA_RESTART, so poll() returns and the terminal is restored before leaving. */
    sa.sa_handler = on_leave_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int mctl_cmd_console(Mctl *ctl, int argc, char **argv)
{
    int idle_ms = 1000;
    const GOptionEntry entries[] = {
        {"wait-idle", 0, 0, G_OPTION_ARG_INT, &idle_ms,
         N_("Without a terminal: after the end of the input, leave once the console has been "
            "quiet for MS milliseconds (default 1000)"),
         N_("MS")},
        {NULL},
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    Console c = {-1, FALSE, TRUE, 0, {0}};
    gboolean ok;

    if (!mctl_parse(ctl, entries, _("NAME"),
                    _("Attach to the VM's serial console (Ctrl-] leaves). The recent output is "
                      "shown first."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 1, "console NAME"))
        return MCTL_EXIT_USAGE;
    if (idle_ms < 0)
        return mctl_usage_error(_("--wait-idle must not be negative"));
    vm = mctl_vm_by_name(ctl, argv[0], &error);
    if (vm)
        c.console = open_console(vm, &error);
    if (c.console < 0)
        return mctl_fail(error, argv[0]);
    c.idle_ms = idle_ms;
    c.interactive = isatty(STDIN_FILENO);
    catch_leave_signals();
    if (c.interactive) {
        if (!enter_raw_mode(&c, &error)) {
            close(c.console);
            return mctl_fail(error, argv[0]);
        }
        g_printerr(_("Connected to the console of %s. Press Ctrl-] to leave."), argv[0]);
        g_printerr("\r\n");
    }
    ok = console_loop(&c, &error);
    if (c.interactive) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &c.saved);
        g_printerr("\n%s\n", _("Disconnected."));
    }
    close(c.console);
    if (!ok)
        return mctl_fail(error, argv[0]);
    return MCTL_EXIT_OK;
}
