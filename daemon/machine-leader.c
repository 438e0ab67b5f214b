/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "machine-leader.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>

/*
 * Requests in flight to the factory at most: the rest wait here, so a thousand VMs starting
 * at once never fill the socket's buffer.
 */
#define MAX_ASKED 32

/* The factory's answer to one request, in order, with the pipe's read end when @pid > 0. */
typedef struct {
    gint32 pid;
    gint32 error; /* errno of what failed, when @pid is 0 */
} SpawnReply;

struct _MvmdLeaderSpawn {
    MvmdLeaderSpawnedFunc func; /* NULL once cancelled */
    gpointer user_data;
};

static int factory_socket = -1; /* microvmd's end of the SOCK_SEQPACKET pair */
static pid_t factory_pid;
static guint factory_watch;
static guint ask_retry;
static GQueue waiting = G_QUEUE_INIT; /* MvmdLeaderSpawn *, not yet asked */
static GQueue asked = G_QUEUE_INIT;   /* asked, answered in this order */
static GQueue failed = G_QUEUE_INIT;  /* to be told @failure */
static guint failed_idle;
static GError *failure; /* why the factory is not there */

/* ---- the leader (a child of the factory): system calls only --------------------------- */

static char request_for(guint32 signo)
{
    if (signo == (guint32)SIGRTMIN + 4)
        return MVMD_LEADER_POWER_OFF;
    if (signo == SIGINT)
        return MVMD_LEADER_REBOOT;
    return MVMD_LEADER_TERMINATE;
}

/* Every signal is blocked already (the factory's mask): none is lost before the signalfd. */
static G_GNUC_NORETURN void leader_main(int pipe_fd)
{
    struct signalfd_siginfo info;
    struct pollfd fds[2];
    sigset_t requests;
    int sfd;

    prctl(PR_SET_NAME, "vm-leader");
    sigemptyset(&requests);
    sigaddset(&requests, SIGRTMIN + 4);
    sigaddset(&requests, SIGINT);
    sigaddset(&requests, SIGTERM);
    sfd = signalfd(-1, &requests, SFD_CLOEXEC);
    /* Non-blocking: should microvmd stop reading, a request is dropped, the leader goes on. */
    if (sfd < 0 || fcntl(pipe_fd, F_SETFL, O_NONBLOCK) < 0)
        _exit(1);
    fds[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = pipe_fd, .events = 0}; /* POLLERR: the read end closed */
    for (;;) {
        char request;

        if (poll(fds, G_N_ELEMENTS(fds), -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (fds[1].revents != 0)
            _exit(0);
        if (!(fds[0].revents & POLLIN) || read(sfd, &info, sizeof(info)) != sizeof(info))
            continue;
        /*
         * Even SIGTERM (the scope is being stopped) leaves the leader in place: microvmd shuts
         * the guest down, and closes the pipe once the VM is stopped, which empties the scope.
         */
        request = request_for(info.ssi_signo);
        if (write(pipe_fd, &request, 1) < 0 && errno == EPIPE)
            _exit(0);
    }
}

/* ---- the factory (a child of microvmd): system calls only ----------------------------- */

static void send_reply(int sock, const SpawnReply *reply, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = (void *)reply, .iov_len = sizeof(*reply)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        struct cmsghdr *cmsg;

        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    for (int tries = 0; sendmsg(sock, &msg, MSG_NOSIGNAL) < 0; tries++) {
        const struct timespec pause = {.tv_nsec = 10 * 1000 * 1000};

        /* Short of memory for a moment: microvmd waits for this answer, in order. */
        if (errno != EINTR && errno != ENOBUFS && errno != ENOMEM && errno != EAGAIN)
            _exit(0); /* microvmd is gone */
        if (tries >= 1000)
            _exit(1);
        nanosleep(&pause, NULL);
    }
}

static void answer_request(int sock)
{
    SpawnReply reply = {0};
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        reply.error = errno;
        send_reply(sock, &reply, -1);
        return;
    }
    pid = fork();
    if (pid == 0) {
        close(sock);
        close(fds[0]);
        leader_main(fds[1]);
    }
    if (pid < 0)
        reply.error = errno;
    else
        reply.pid = pid;
    send_reply(sock, &reply, pid > 0 ? fds[0] : -1);
    close(fds[0]);
    close(fds[1]);
}

static G_GNUC_NORETURN void factory_main(int sock, pid_t parent)
{
    struct sigaction reap = {.sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT};
    sigset_t all;

    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    prctl(PR_SET_NAME, "vm-leaders");
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    sigaction(SIGCHLD, &reap, NULL); /* leaders are reaped by the kernel */
    /* Nothing of microvmd's but the socket and the standard streams (the journal). */
    if (dup2(sock, 3) < 0)
        _exit(1);
    if (close_range(4, ~0U, 0) < 0) {
        for (long fd = 4, max = sysconf(_SC_OPEN_MAX); fd < max; fd++)
            close((int)fd);
    }
    for (;;) {
        char request;
        ssize_t n = recv(3, &request, 1, 0);

        if (n == 0)
            _exit(0); /* microvmd closed its end, or ended */
        if (n < 0 && errno != EINTR)
            _exit(1);
        if (n > 0)
            answer_request(3);
    }
}

gboolean mvmd_leader_factory_start(GError **error)
{
    pid_t parent = getpid();
    int sv[2];
    pid_t pid;

    g_return_val_if_fail(factory_socket < 0, FALSE);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        int saved = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved),
                    "cannot make the leader factory's socket: %s", g_strerror(saved));
        return FALSE;
    }
    pid = fork();
    if (pid == 0) {
        close(sv[0]);
        factory_main(sv[1], parent);
    }
    close(sv[1]);
    if (pid < 0) {
        int saved = errno;

        close(sv[0]);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved),
                    "cannot fork the leader factory: %s", g_strerror(saved));
        return FALSE;
    }
    factory_socket = sv[0];
    factory_pid = pid;
    return g_unix_set_fd_nonblocking(factory_socket, TRUE, error);
}

gboolean mvmd_leader_factory_running(void)
{
    return factory_socket >= 0;
}

/* ---- microvmd's side: main loop ------------------------------------------------------- */

static void complete(MvmdLeaderSpawn *spawn, int fd, pid_t pid, const GError *error)
{
    if (spawn->func)
        spawn->func(fd, pid, error, spawn->user_data);
    else if (fd >= 0)
        close(fd); /* cancelled: the leader sees its pipe's end and leaves */
    g_free(spawn);
}

/*
 * Failures are told from an idle source, never from inside mvmd_leader_spawn(): its caller has
 * not stored the spawn yet.
 */
static gboolean report_failures(gpointer user_data)
{
    MvmdLeaderSpawn *spawn;

    failed_idle = 0;
    while ((spawn = g_queue_pop_head(&failed)))
        complete(spawn, -1, 0, failure);
    return G_SOURCE_REMOVE;
}

static void fail_later(GQueue *queue)
{
    MvmdLeaderSpawn *spawn;

    while ((spawn = g_queue_pop_head(queue)))
        g_queue_push_tail(&failed, spawn);
    if (!failed_idle && failed.length > 0)
        failed_idle = g_idle_add(report_failures, NULL);
}

static void on_factory_reaped(GPid pid, int status, gpointer user_data)
{
    g_debug("the leader factory's wait status: %d", status);
}

static void factory_lost(const char *why)
{
    g_clear_error(&failure);
    failure = g_error_new(G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE, "the leader factory %s", why);
    g_warning("%s: VMs are no longer registered with systemd-machined", failure->message);
    g_clear_handle_id(&factory_watch, g_source_remove);
    g_clear_handle_id(&ask_retry, g_source_remove);
    close(factory_socket);
    factory_socket = -1;
    /* It leaves at its socket's end (or is still leaving): reaped whenever that is. */
    g_child_watch_add(factory_pid, on_factory_reaped, NULL);
    fail_later(&asked);
    fail_later(&waiting);
}

typedef enum {
    REPLY_NONE,   /* nothing to read now */
    REPLY_LEADER, /* a leader: *fd and reply->pid */
    REPLY_FAILED, /* the factory could not make one, or its descriptor did not fit here */
    REPLY_BROKEN, /* the factory ended or broke the protocol: *why */
} ReplyKind;

static ReplyKind receive_reply(SpawnReply *reply, int *fd, const char **why)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = reply, .iov_len = sizeof(*reply)};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    ssize_t n;

    *fd = -1;
    do
        n = recvmsg(factory_socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOMEM || errno == ENOBUFS)
            return REPLY_NONE; /* a short lack of memory passes: the source fires again */
        *why = "cannot be read";
        return REPLY_BROKEN;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)) && *fd < 0)
            memcpy(fd, CMSG_DATA(c), sizeof(int));
    }
    if (n == (ssize_t)sizeof(*reply) && !(msg.msg_flags & MSG_TRUNC)) {
        if (reply->pid > 0 && *fd >= 0)
            return REPLY_LEADER;
        if (reply->pid > 0 && (msg.msg_flags & MSG_CTRUNC)) {
            /* Out of descriptors here: the kernel dropped the pipe, and the leader leaves. */
            reply->error = EMFILE;
            return REPLY_FAILED;
        }
        if (reply->pid == 0 && *fd < 0 && reply->error > 0)
            return REPLY_FAILED;
    }
    if (*fd >= 0)
        close(*fd);
    *why = n == 0 ? "ended" : "sent a malformed answer";
    return REPLY_BROKEN;
}

static void ask_more(void);

static gboolean on_ask_retry(gpointer user_data)
{
    ask_retry = 0;
    ask_more();
    return G_SOURCE_REMOVE;
}

static void ask_more(void)
{
    while (factory_socket >= 0 && asked.length < MAX_ASKED && waiting.length > 0) {
        const char request = 'L';

        if (send(factory_socket, &request, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
            g_queue_push_tail(&asked, g_queue_pop_head(&waiting));
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS && errno != ENOMEM) {
            factory_lost("cannot be asked");
            return;
        }
        /* Full, or short of memory: an answer, or this timer, asks again. */
        if (!ask_retry)
            ask_retry = g_timeout_add(100, on_ask_retry, NULL);
        return;
    }
}

static void answer(MvmdLeaderSpawn *spawn, ReplyKind kind, const SpawnReply *reply, int fd)
{
    g_autoptr(GError) error = NULL;

    if (kind == REPLY_LEADER) {
        complete(spawn, fd, reply->pid, NULL);
        return;
    }
    error = g_error_new(G_IO_ERROR, g_io_error_from_errno(reply->error), "cannot make a leader: %s",
                        g_strerror(reply->error));
    complete(spawn, -1, 0, error);
}

static gboolean on_factory_readable(int fd, GIOCondition condition, gpointer user_data)
{
    SpawnReply reply;
    int leader_fd;
    const char *why = NULL;
    ReplyKind kind;

    while ((kind = receive_reply(&reply, &leader_fd, &why)) != REPLY_NONE) {
        MvmdLeaderSpawn *spawn;

        if (kind == REPLY_BROKEN)
            break;
        spawn = g_queue_pop_head(&asked);
        if (!spawn) {
            if (leader_fd >= 0)
                close(leader_fd);
            kind = REPLY_BROKEN;
            why = "answered what it was not asked";
            break;
        }
        answer(spawn, kind, &reply, leader_fd);
    }
    if (kind == REPLY_BROKEN) {
        factory_watch = 0; /* removed by returning G_SOURCE_REMOVE */
        factory_lost(why);
        return G_SOURCE_REMOVE;
    }
    ask_more();
    return G_SOURCE_CONTINUE;
}

MvmdLeaderSpawn *mvmd_leader_spawn(MvmdLeaderSpawnedFunc func, gpointer user_data)
{
    MvmdLeaderSpawn *spawn = g_new0(MvmdLeaderSpawn, 1);

    spawn->func = func;
    spawn->user_data = user_data;
    g_queue_push_tail(&waiting, spawn);
    if (factory_socket < 0) {
        if (!failure)
            failure = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                                          "the leader factory is not running");
        fail_later(&waiting);
        return spawn;
    }
    if (!factory_watch)
        factory_watch =
            g_unix_fd_add(factory_socket, G_IO_IN | G_IO_HUP | G_IO_ERR, on_factory_readable, NULL);
    ask_more();
    return spawn;
}

void mvmd_leader_spawn_cancel(MvmdLeaderSpawn *spawn)
{
    /* Not asked yet: never asked. Asked: its leader is let go when it comes. */
    if (g_queue_remove(&waiting, spawn)) {
        g_free(spawn);
        return;
    }
    spawn->func = NULL;
}
