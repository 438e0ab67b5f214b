/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * systemd's side of a handoff (harness.h, MvmdTestFdStore): the notification socket and the
 * store it keeps. A thread of its own reads the socket all the time, as systemd does: its queue
 * holds only a few datagrams (net.unix.max_dgram_qlen, 10 here), and a daemon whose sd_notify()
 * finds it full waits.
 */
#include "harness.h"

#include <errno.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

struct _MvmdTestFdStore {
    int socket;
    char *path;
    GThread *thread;
    gint stop;
    GMutex lock;         /* the socket's reads and the tables below */
    GHashTable *store;   /* FDNAME → fd + 1 */
    GHashTable *removed; /* FDNAME → 1: names the daemon took out of the store */
    guint dropped;       /* descriptors of an open file stored already */
};

/* The value of @key= in a notification, or NULL. */
static char *field(const char *message, const char *key)
{
    g_auto(GStrv) lines = g_strsplit(message, "\n", -1);
    gsize len = strlen(key);

    for (char **l = lines; *l; l++)
        if (strncmp(*l, key, len) == 0 && (*l)[len] == '=')
            return g_strdup(*l + len + 1);
    return NULL;
}

/* Is @fd's open file stored already (systemd's same_fd(): kcmp)? Called with the lock. */
static gboolean already_stored(MvmdTestFdStore *s, int fd)
{
    GHashTableIter iter;
    gpointer value;
    pid_t pid = getpid();

    g_hash_table_iter_init(&iter, s->store);
    while (g_hash_table_iter_next(&iter, NULL, &value))
        if (syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd, GPOINTER_TO_INT(value) - 1) == 0)
            return TRUE;
    return FALSE;
}

/* Keeps or drops what one datagram says: FDSTORE=1 keeps its descriptor under FDNAME. */
static void apply(MvmdTestFdStore *s, const char *message, int fd)
{
    g_autofree char *store = field(message, "FDSTORE");
    g_autofree char *remove = field(message, "FDSTOREREMOVE");
    g_autofree char *name = field(message, "FDNAME");

    if (g_strcmp0(store, "1") == 0) {
        g_assert_nonnull(name);
        g_assert_cmpint(fd, >=, 0);
        g_assert_false(g_hash_table_contains(s->store, name));
        if (already_stored(s, fd)) {
            /* As systemd does: an open file is kept once, under its first name. */
            close(fd);
            s->dropped++;
        } else {
            g_hash_table_insert(s->store, g_steal_pointer(&name), GINT_TO_POINTER(fd + 1));
        }
    } else if (g_strcmp0(remove, "1") == 0) {
        gpointer old;

        g_assert_nonnull(name);
        g_assert_cmpint(fd, <, 0);
        if (g_hash_table_steal_extended(s->store, name, NULL, &old))
            close(GPOINTER_TO_INT(old) - 1);
        g_hash_table_add(s->removed, g_steal_pointer(&name));
    } else if (fd >= 0) {
        close(fd);
    }
}

/* One datagram, with the lock held; FALSE when none is queued. */
static gboolean receive_one(MvmdTestFdStore *s)
{
    char buf[4096];
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {buf, sizeof(buf) - 1};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = &control,
                         .msg_controllen = sizeof(control)};
    ssize_t n = recvmsg(s->socket, &msg, MSG_CMSG_CLOEXEC);
    int fd = -1;

    if (n < 0) {
        g_assert_cmpint(errno, ==, EAGAIN);
        return FALSE;
    }
    buf[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            /* One descriptor per message: that is how the daemon names each. */
            g_assert_cmpuint(c->cmsg_len, ==, CMSG_LEN(sizeof(int)));
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
        }
    apply(s, buf, fd);
    return TRUE;
}

void mvmd_test_fd_store_drain(MvmdTestFdStore *s)
{
    g_mutex_lock(&s->lock);
    while (receive_one(s))
        ;
    g_mutex_unlock(&s->lock);
}

static gpointer reader_thread(gpointer data)
{
    MvmdTestFdStore *s = data;

    while (!g_atomic_int_get(&s->stop)) {
        struct pollfd p = {s->socket, POLLIN, 0};

        if (poll(&p, 1, 50) > 0)
            mvmd_test_fd_store_drain(s);
    }
    return NULL;
}

MvmdTestFdStore *mvmd_test_fd_store_new(const char *dir)
{
    MvmdTestFdStore *s = g_new0(MvmdTestFdStore, 1);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    s->path = g_build_filename(dir, "notify", NULL);
    g_assert_cmpuint(strlen(s->path), <, sizeof(addr.sun_path));
    strcpy(addr.sun_path, s->path);
    s->socket = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    g_assert_cmpint(s->socket, >=, 0);
    g_assert_cmpint(bind(s->socket, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    s->store = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    s->removed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_mutex_init(&s->lock);
    s->thread = g_thread_new("fd-store", reader_thread, s);
    return s;
}

const char *mvmd_test_fd_store_path(MvmdTestFdStore *s)
{
    return s->path;
}

static void close_all(MvmdTestFdStore *s)
{
    GHashTableIter iter;
    gpointer value;

    g_hash_table_iter_init(&iter, s->store);
    while (g_hash_table_iter_next(&iter, NULL, &value))
        close(GPOINTER_TO_INT(value) - 1);
    g_hash_table_remove_all(s->store);
}

void mvmd_test_fd_store_free(MvmdTestFdStore *s)
{
    if (!s)
        return;
    g_atomic_int_set(&s->stop, 1);
    g_thread_join(s->thread);
    g_mutex_clear(&s->lock);
    close_all(s);
    g_hash_table_unref(s->store);
    g_hash_table_unref(s->removed);
    close(s->socket);
    g_free(s->path);
    g_free(s);
}

guint mvmd_test_fd_store_count(MvmdTestFdStore *s, const char *prefix)
{
    GHashTableIter iter;
    gpointer key;
    guint n = 0;

    g_mutex_lock(&s->lock);
    g_hash_table_iter_init(&iter, s->store);
    while (g_hash_table_iter_next(&iter, &key, NULL))
        n += g_str_has_prefix(key, prefix);
    g_mutex_unlock(&s->lock);
    return n;
}

guint mvmd_test_fd_store_removed(MvmdTestFdStore *s)
{
    guint n;

    g_mutex_lock(&s->lock);
    n = g_hash_table_size(s->removed);
    g_mutex_unlock(&s->lock);
    return n;
}

guint mvmd_test_fd_store_dropped(MvmdTestFdStore *s)
{
    guint n;

    g_mutex_lock(&s->lock);
    n = s->dropped;
    g_mutex_unlock(&s->lock);
    return n;
}

int mvmd_test_fd_store_take(MvmdTestFdStore *s, const char *name)
{
    gpointer value = NULL;

    g_mutex_lock(&s->lock);
    g_hash_table_steal_extended(s->store, name, NULL, &value);
    g_mutex_unlock(&s->lock);
    return GPOINTER_TO_INT(value) - 1;
}

void mvmd_test_fd_store_put(MvmdTestFdStore *s, const char *name, int fd)
{
    g_mutex_lock(&s->lock);
    g_assert_false(g_hash_table_contains(s->store, name));
    g_hash_table_insert(s->store, g_strdup(name), GINT_TO_POINTER(fd + 1));
    g_mutex_unlock(&s->lock);
}

int mvmd_test_fd_store_get(MvmdTestFdStore *s, const char *name)
{
    int fd;

    g_mutex_lock(&s->lock);
    fd = GPOINTER_TO_INT(g_hash_table_lookup(s->store, name)) - 1;
    g_mutex_unlock(&s->lock);
    return fd;
}

const char *mvmd_test_fd_store_vm_index(MvmdTestFdStore *s, const char *name)
{
    g_autofree char *needle = g_strdup_printf("\nName=%s\n", name);
    GHashTableIter iter;
    gpointer key, value;
    static char index[16];

    g_mutex_lock(&s->lock);
    g_hash_table_iter_init(&iter, s->store);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        char text[4096] = "";

        if (!g_str_has_suffix(key, ".def") ||
            pread(GPOINTER_TO_INT(value) - 1, text, sizeof(text) - 1, 0) <= 0 ||
            !strstr(text, needle))
            continue;
        g_snprintf(index, sizeof(index), "%.*s", (int)(strrchr(key, '.') - (char *)key - 5),
                   (char *)key + 5);
        g_mutex_unlock(&s->lock);
        return index;
    }
    g_mutex_unlock(&s->lock);
    g_error("no definition of %s in the store", name);
}

void mvmd_test_fd_store_pass(MvmdTestFdStore *s, MvmdTestBus *bus)
{
    GHashTableIter iter;
    gpointer key, value;

    g_clear_pointer(&bus->daemon_listen_fds, g_array_unref);
    g_clear_pointer(&bus->daemon_listen_names, g_ptr_array_unref);
    bus->daemon_listen_fds = g_array_new(FALSE, FALSE, sizeof(int));
    bus->daemon_listen_names = g_ptr_array_new_with_free_func(g_free);
    g_mutex_lock(&s->lock);
    g_hash_table_iter_init(&iter, s->store);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        int fd = GPOINTER_TO_INT(value) - 1;

        g_array_append_val(bus->daemon_listen_fds, fd);
        g_ptr_array_add(bus->daemon_listen_names, g_strdup(key));
    }
    g_hash_table_remove_all(s->removed);
    g_mutex_unlock(&s->lock);
}
