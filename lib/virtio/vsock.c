/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-vsock (virtio 1.2 §5.10), host side as Firecracker does it:
 *  - the guest connects to (CID 2, port P): we connect to the unix socket
 *    "<uds_path>_P" and relay the stream;
 *  - a host program connects to "<uds_path>" and writes "CONNECT P\n": we ask
 *    the guest for a connection to its port P, and once it accepts we answer
 *    "OK <our port>\n" and relay.
 * Everything runs on the I/O thread under the device lock; sockets are
 * non-blocking. Credit (§5.10.6.3): we never send the guest more than it said
 * it can buffer, and we tell it how much it may send us (VSOCK_BUF_ALLOC).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvm.h"
#include "virtio.h"

#define VSOCK_QUEUE_RX    0
#define VSOCK_QUEUE_TX    1
#define VSOCK_QUEUE_EVENT 2
#define VSOCK_QUEUE_MAX   256

#define VSOCK_HOST_CID          2
#define VSOCK_TYPE_STREAM       1
#define VSOCK_OP_REQUEST        1
#define VSOCK_OP_RESPONSE       2
#define VSOCK_OP_RST            3
#define VSOCK_OP_SHUTDOWN       4
#define VSOCK_OP_RW             5
#define VSOCK_OP_CREDIT_UPDATE  6
#define VSOCK_OP_CREDIT_REQUEST 7
#define VSOCK_SHUTDOWN_RCV      1
#define VSOCK_SHUTDOWN_SEND     2

#define VSOCK_HDR_SIZE              44
#define VSOCK_EVENT_TRANSPORT_RESET 0            /* §5.10.6.7 */
#define VSOCK_BUF_ALLOC             (256 * 1024) /* what we buffer per connection towards a socket */
#define VSOCK_CONNECT_LINE_MAX      32
#define VSOCK_HOST_PORT_FIRST       (1u << 30) /* ports we pick for host-initiated connections */
#define VSOCK_MAX_PENDING           4096       /* control packets waiting for guest rx buffers */
#define VSOCK_LISTEN_REST_MS        100        /* no descriptor for a connection: retry after */

typedef struct __attribute__((packed)) {
    guint64 src_cid, dst_cid;
    guint32 src_port, dst_port;
    guint32 len;
    guint16 type, op;
    guint32 flags;
    guint32 buf_alloc, fwd_cnt;
} VsockHdr;

G_STATIC_ASSERT(sizeof(VsockHdr) == VSOCK_HDR_SIZE);

typedef enum {
    CONN_HANDSHAKE,  /* host socket accepted, waiting for "CONNECT P\n" */
    CONN_CONNECTING, /* REQUEST sent to the guest, waiting for RESPONSE */
    CONN_ESTABLISHED,
} ConnState;

typedef struct _Vsock Vsock;

typedef struct {
    Vsock *vs;
    int fd;
    GSource *source;
    GIOCondition watching;
    ConnState state;
    guint32 epoch; /* the device epoch it belongs to */
    guint32 local_port, peer_port;
    guint32 peer_buf_alloc, peer_fwd_cnt; /* the guest's receive credit */
    guint32 tx_cnt;                       /* bytes sent to the guest */
    guint32 fwd_cnt, fwd_cnt_told;        /* bytes of the guest's we passed on to the socket */
    GByteArray *to_sock;                  /* guest data the socket did not take yet */
    GString *line;                        /* CONN_HANDSHAKE: the CONNECT line so far */
    gboolean host_eof;
    gboolean dead; /* the device was reset: freed soon on the I/O thread, ignore events */
} Conn;

struct _Vsock {
    MvmVirtio *dev;
    guint64 cid;
    char *uds_path;
    /*
     * uds_path's directory, opened once without following a symbolic link, and the socket's
     * name in it: every later use goes through this descriptor, so swapping a directory of the
     * path for a link afterwards (the path may come from an untrusted snapshot that root
     * restores) cannot point a bind, a connect or an unlink elsewhere.
     */
    int dir_fd;
    char *name;
    int listen_fd;
    struct stat listen_st; /* the socket file bound as name, removed only if still there */
    GSource *listen_source;
    GPtrArray *conns;     /* Conn * */
    GPtrArray *graveyard; /* Conn * of a reset device, freed on the I/O thread */
    GQueue pending;       /* VsockHdr * control packets for the guest */
    gboolean reset_event; /* a TRANSPORT_RESET event waits for an event buffer */
    guint32 next_port;
    gboolean bound_logged; /* connections were refused at the bound (said once per VM) */
};

static void conn_update_watch(Conn *c);

/* ---- packets to the guest ---- */

static VsockHdr make_hdr(Vsock *vs, const Conn *c, guint16 op, guint32 len, guint32 flags)
{
    return (VsockHdr){
        .src_cid = GUINT64_TO_LE(VSOCK_HOST_CID),
        .dst_cid = GUINT64_TO_LE(vs->cid),
        .src_port = GUINT32_TO_LE(c->local_port),
        .dst_port = GUINT32_TO_LE(c->peer_port),
        .len = GUINT32_TO_LE(len),
        .type = GUINT16_TO_LE(VSOCK_TYPE_STREAM),
        .op = GUINT16_TO_LE(op),
        .flags = GUINT32_TO_LE(flags),
        .buf_alloc = GUINT32_TO_LE(VSOCK_BUF_ALLOC),
        .fwd_cnt = GUINT32_TO_LE(c->fwd_cnt),
    };
}

/* Writes @hdr (+ nothing) into the next guest rx buffer; FALSE when there is none. */
static gboolean deliver(Vsock *vs, const VsockHdr *hdr)
{
    MvmVqChain *chain = g_new(MvmVqChain, 1);
    gboolean ok = FALSE;

    if (mvm_virtio_pop(vs->dev, VSOCK_QUEUE_RX, chain) == MVM_VQ_POP_OK) {
        if (chain->in_len < VSOCK_HDR_SIZE)
            mvm_virtio_set_needs_reset(vs->dev, "rx buffer smaller than a packet header");
        else {
            mvm_vq_chain_write(chain, 0, hdr, sizeof(*hdr));
            mvm_virtio_push(vs->dev, VSOCK_QUEUE_RX, chain->head, sizeof(*hdr));
            ok = TRUE;
        }
    }
    g_free(chain);
    return ok;
}

static void send_control(Vsock *vs, const VsockHdr *hdr)
{
    if (vs->pending.length == 0 && deliver(vs, hdr))
        return;
    if (vs->pending.length >= VSOCK_MAX_PENDING)
        return; /* a guest that never reads loses control packets, not our memory */
    g_queue_push_tail(&vs->pending, g_memdup2(hdr, sizeof(*hdr)));
}

static void send_op(Vsock *vs, Conn *c, guint16 op, guint32 flags)
{
    VsockHdr hdr = make_hdr(vs, c, op, 0, flags);

    if (op == VSOCK_OP_RESPONSE || op == VSOCK_OP_CREDIT_UPDATE || op == VSOCK_OP_RW)
        c->fwd_cnt_told = c->fwd_cnt;
    send_control(vs, &hdr);
}

/* An RST for a packet that matches no connection (§5.10.6.4). */
static void send_rst_reply(Vsock *vs, const VsockHdr *to)
{
    Conn tmp = {.local_port = GUINT32_FROM_LE(to->dst_port),
                .peer_port = GUINT32_FROM_LE(to->src_port)};
    VsockHdr hdr = make_hdr(vs, &tmp, VSOCK_OP_RST, 0, 0);
    send_control(vs, &hdr);
}

static void flush_pending(Vsock *vs)
{
    while (vs->pending.length > 0 && deliver(vs, g_queue_peek_head(&vs->pending)))
        g_free(g_queue_pop_head(&vs->pending));
}

/* ---- connections ---- */

static Conn *conn_new(Vsock *vs, int fd, ConnState state)
{
    Conn *c = g_new0(Conn, 1);

    c->vs = vs;
    c->fd = fd;
    c->state = state;
    c->epoch = mvm_virtio_get_epoch(vs->dev);
    c->to_sock = g_byte_array_new();
    g_ptr_array_add(vs->conns, c);
    return c;
}

static void conn_free(gpointer data)
{
    Conn *c = data;

    if (c->source != NULL) {
        g_source_destroy(c->source);
        g_source_unref(c->source);
    }
    close(c->fd);
    g_byte_array_unref(c->to_sock);
    if (c->line != NULL)
        g_string_free(c->line, TRUE);
    g_free(c);
}

static void conn_close(Conn *c)
{
    g_ptr_array_remove_fast(c->vs->conns, c); /* frees */
}

static Conn *find_conn(Vsock *vs, guint32 local_port, guint32 peer_port)
{
    for (guint i = 0; i < vs->conns->len; i++) {
        Conn *c = g_ptr_array_index(vs->conns, i);
        if (c->state != CONN_HANDSHAKE && c->local_port == local_port && c->peer_port == peer_port)
            return c;
    }
    return NULL;
}

static guint32 peer_credit(const Conn *c)
{
    guint32 in_flight = c->tx_cnt - c->peer_fwd_cnt;
    return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Socket → guest: one RW packet into one rx buffer. FALSE: stop for now. */
static gboolean conn_read_once(Conn *c)
{
    Vsock *vs = c->vs;
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    struct iovec iov[MVM_VQ_MAX_SIZE];

    /* Control packets that wait for a buffer go first: a RESPONSE must precede the data. */
    if (vs->pending.length > 0 || mvm_virtio_pop(vs->dev, VSOCK_QUEUE_RX, chain) != MVM_VQ_POP_OK)
        return FALSE;
    if (chain->in_len <= VSOCK_HDR_SIZE) {
        mvm_virtio_set_needs_reset(vs->dev, "rx buffer smaller than a packet header");
        return FALSE;
    }
    guint64 room = MIN(chain->in_len - VSOCK_HDR_SIZE, (guint64)peer_credit(c));
    guint n = mvm_vq_chain_iov(chain, TRUE, VSOCK_HDR_SIZE, room, iov, G_N_ELEMENTS(iov));
    ssize_t r = readv(c->fd, iov, (int)n);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        /* Nothing after all: the buffer goes back as an empty credit update. */
        VsockHdr hdr = make_hdr(vs, c, VSOCK_OP_CREDIT_UPDATE, 0, 0);
        mvm_vq_chain_write(chain, 0, &hdr, sizeof(hdr));
        mvm_virtio_push(vs->dev, VSOCK_QUEUE_RX, chain->head, VSOCK_HDR_SIZE);
        return FALSE;
    }
    if (r <= 0) {
        /*
         * The host end sends no more (§5.10.6.5, SHUTDOWN with SEND). It may still read, after
         * a half close; if it closed for good, the next write fails and the guest gets an RST.
         */
        VsockHdr hdr = make_hdr(vs, c, VSOCK_OP_SHUTDOWN, 0, VSOCK_SHUTDOWN_SEND);
        mvm_vq_chain_write(chain, 0, &hdr, sizeof(hdr));
        mvm_virtio_push(vs->dev, VSOCK_QUEUE_RX, chain->head, VSOCK_HDR_SIZE);
        c->host_eof = TRUE;
        return FALSE;
    }
    VsockHdr hdr = make_hdr(vs, c, VSOCK_OP_RW, (guint32)r, 0);
    c->fwd_cnt_told = c->fwd_cnt;
    mvm_vq_chain_write(chain, 0, &hdr, sizeof(hdr));
    mvm_virtio_push(vs->dev, VSOCK_QUEUE_RX, chain->head, VSOCK_HDR_SIZE + (guint32)r);
    c->tx_cnt += (guint32)r;
    return TRUE;
}

/* Guest data → socket, as much as it takes now. FALSE when the socket failed. */
static gboolean conn_flush_to_sock(Conn *c)
{
    while (c->to_sock->len > 0) {
        ssize_t w = send(c->fd, c->to_sock->data, c->to_sock->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            break;
        if (w <= 0)
            return FALSE;
        g_byte_array_remove_range(c->to_sock, 0, (guint)w);
        c->fwd_cnt += (guint32)w;
    }
    /* Tell the guest about freed buffer space before it runs dry (§5.10.6.3). */
    if (c->fwd_cnt - c->fwd_cnt_told >= VSOCK_BUF_ALLOC / 4)
        send_op(c->vs, c, VSOCK_OP_CREDIT_UPDATE, 0);
    return TRUE;
}

static void guest_side_reset(Conn *c)
{
    send_op(c->vs, c, VSOCK_OP_RST, 0);
    conn_close(c);
}

static gboolean conn_event(int fd, GIOCondition condition, gpointer data)
{
    Conn *c = data;
    Vsock *vs = c->vs;

    mvm_virtio_lock(vs->dev);
    if (c->dead) {
        mvm_virtio_unlock(vs->dev);
        return G_SOURCE_CONTINUE;
    }
    flush_pending(vs);
    if ((condition & G_IO_OUT) && !conn_flush_to_sock(c)) {
        guest_side_reset(c);
        mvm_virtio_unlock(vs->dev);
        return G_SOURCE_CONTINUE; /* already destroyed with the connection */
    }
    if (condition & (G_IO_IN | G_IO_HUP | G_IO_ERR))
        while (c->state == CONN_ESTABLISHED && peer_credit(c) > 0 && conn_read_once(c))
            ;
    conn_update_watch(c);
    mvm_virtio_unlock(vs->dev);
    return G_SOURCE_CONTINUE;
}

/* Watch the socket for exactly what we can act on now, so nothing spins. */
static void conn_update_watch(Conn *c)
{
    Vsock *vs = c->vs;
    GIOCondition want = 0;

    if (c->state == CONN_ESTABLISHED && !c->host_eof && peer_credit(c) > 0 &&
        mvm_virtio_pending(vs->dev, VSOCK_QUEUE_RX) > 0)
        want |= G_IO_IN;
    if (c->to_sock->len > 0)
        want |= G_IO_OUT;
    if (want == c->watching)
        return;
    if (c->source != NULL) {
        g_source_destroy(c->source);
        g_clear_pointer(&c->source, g_source_unref);
    }
    c->watching = want;
    if (want != 0)
        c->source =
            mvm_io_thread_add_fd(mvm_virtio_get_io_thread(vs->dev), c->fd, want, conn_event, c);
}

static void update_all_watches(Vsock *vs)
{
    for (guint i = 0; i < vs->conns->len; i++) {
        Conn *c = g_ptr_array_index(vs->conns, i);
        if (c->state != CONN_HANDSHAKE)
            conn_update_watch(c);
    }
}

/* ---- guest → host packets ---- */

static int connect_unix(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd;

    /* Cut short, it would name another socket (a guest's port makes it longer). */
    if (strlen(path) >= sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved; /* the caller tells a missing listener from a full backlog */
        return -1;
    }
    return fd;
}

/*
 * Each connection holds one of the process's fds and up to VSOCK_BUF_ALLOC of its memory,
 * whichever side opened it: neither the guest nor whoever may open uds_path gets more than
 * MVM_VSOCK_CONNECTIONS_MAX of them. Lock held.
 */
static gboolean conn_allowed(Vsock *vs, const char *who)
{
    if (vs->conns->len < MVM_VSOCK_CONNECTIONS_MAX)
        return TRUE;
    if (!vs->bound_logged)
        mvm_guest_log(mvm_virtio_get_guest_log(vs->dev), G_LOG_LEVEL_MESSAGE,
                      "virtio-vsock: refusing %s connections: %d are open, the most there may "
                      "be (said once)",
                      who, MVM_VSOCK_CONNECTIONS_MAX);
    vs->bound_logged = TRUE;
    return FALSE;
}

/*
 * @name in the directory @dir_fd as a path for bind() and connect(), which take no directory
 * descriptor: through /proc/self/fd, which resolves to that very directory.
 */
static char *path_at(int dir_fd, const char *name)
{
    return g_strdup_printf("/proc/self/fd/%d/%s", dir_fd, name);
}

/* The guest connects to host port @port: "<uds_path>_<port>". */
static void guest_request(Vsock *vs, const VsockHdr *h)
{
    guint32 port = GUINT32_FROM_LE(h->dst_port);
    g_autofree char *name = g_strdup_printf("%s_%u", vs->name, port);
    g_autofree char *path = path_at(vs->dir_fd, name);
    int fd = conn_allowed(vs, "the guest's") ? connect_unix(path) : -1;

    if (fd < 0) {
        send_rst_reply(vs, h);
        return;
    }
    Conn *c = conn_new(vs, fd, CONN_ESTABLISHED);
    c->local_port = port;
    c->peer_port = GUINT32_FROM_LE(h->src_port);
    c->peer_buf_alloc = GUINT32_FROM_LE(h->buf_alloc);
    c->peer_fwd_cnt = GUINT32_FROM_LE(h->fwd_cnt);
    send_op(vs, c, VSOCK_OP_RESPONSE, 0);
    conn_update_watch(c);
}

/* The guest accepted a connection the host asked for. */
static void guest_response(Conn *c)
{
    g_autofree char *ok = g_strdup_printf("OK %u\n", c->local_port);

    c->state = CONN_ESTABLISHED;
    /* The reply goes first in the socket's stream, before any guest data. */
    g_byte_array_prepend(c->to_sock, (const guint8 *)ok, (guint)strlen(ok));
    /* Not guest data: keep it out of the credit count. */
    c->fwd_cnt -= (guint32)strlen(ok);
}

static void guest_rw(Vsock *vs, Conn *c, const MvmVqChain *chain, guint32 len)
{
    /* The guest must respect the credit we gave it (§5.10.6.3.1). */
    if (c->to_sock->len + (guint64)len > VSOCK_BUF_ALLOC) {
        guest_side_reset(c);
        return;
    }
    guint old = c->to_sock->len;
    g_byte_array_set_size(c->to_sock, old + len);
    mvm_vq_chain_read(chain, VSOCK_HDR_SIZE, c->to_sock->data + old, len);
    if (!conn_flush_to_sock(c))
        guest_side_reset(c);
}

static void guest_packet_on_conn(Vsock *vs, Conn *c, const VsockHdr *h, const MvmVqChain *chain)
{
    guint16 op = GUINT16_FROM_LE(h->op);

    c->peer_buf_alloc = GUINT32_FROM_LE(h->buf_alloc);
    c->peer_fwd_cnt = GUINT32_FROM_LE(h->fwd_cnt);
    switch (op) {
    case VSOCK_OP_RESPONSE:
        if (c->state == CONN_CONNECTING)
            guest_response(c);
        break;
    case VSOCK_OP_RW:
        if (c->state == CONN_ESTABLISHED)
            guest_rw(vs, c, chain, GUINT32_FROM_LE(h->len));
        break;
    case VSOCK_OP_CREDIT_REQUEST:
        send_op(vs, c, VSOCK_OP_CREDIT_UPDATE, 0);
        break;
    case VSOCK_OP_SHUTDOWN:
        /* Pass on what the guest sent, then end the connection with an RST. */
        conn_flush_to_sock(c);
        guest_side_reset(c);
        return;
    case VSOCK_OP_RST:
        conn_close(c);
        return;
    default:
        break;
    }
    conn_update_watch(c);
}

static void guest_packet(Vsock *vs, const MvmVqChain *chain)
{
    VsockHdr h;

    mvm_vq_chain_read(chain, 0, &h, sizeof(h));
    guint32 len = GUINT32_FROM_LE(h.len);
    guint16 op = GUINT16_FROM_LE(h.op);
    /* Addresses and type are the guest's to get right; a wrong one is refused, not fatal. */
    if (GUINT64_FROM_LE(h.src_cid) != vs->cid || GUINT64_FROM_LE(h.dst_cid) != VSOCK_HOST_CID ||
        GUINT16_FROM_LE(h.type) != VSOCK_TYPE_STREAM || len > chain->out_len - VSOCK_HDR_SIZE ||
        (op != VSOCK_OP_RW && len != 0)) {
        if (op != VSOCK_OP_RST)
            send_rst_reply(vs, &h);
        return;
    }
    Conn *c = find_conn(vs, GUINT32_FROM_LE(h.dst_port), GUINT32_FROM_LE(h.src_port));
    if (op == VSOCK_OP_REQUEST) {
        if (c != NULL)
            guest_side_reset(c);
        guest_request(vs, &h);
    } else if (c != NULL) {
        guest_packet_on_conn(vs, c, &h, chain);
    } else if (op != VSOCK_OP_RST) {
        send_rst_reply(vs, &h);
    }
}

static void process_tx(Vsock *vs)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    while (mvm_virtio_pop(vs->dev, VSOCK_QUEUE_TX, chain) == MVM_VQ_POP_OK) {
        if (chain->out_len < VSOCK_HDR_SIZE) {
            mvm_virtio_set_needs_reset(vs->dev, "tx packet shorter than its header");
            return;
        }
        guest_packet(vs, chain);
        mvm_virtio_push(vs->dev, VSOCK_QUEUE_TX, chain->head, 0);
    }
}

/* §5.10.6.7: after a restore the guest must drop its connections; they did not survive. */
static void deliver_reset_event(Vsock *vs)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    guint32 id = GUINT32_TO_LE(VSOCK_EVENT_TRANSPORT_RESET);

    if (!vs->reset_event || mvm_virtio_pop(vs->dev, VSOCK_QUEUE_EVENT, chain) != MVM_VQ_POP_OK)
        return;
    vs->reset_event = FALSE;
    if (chain->in_len < sizeof(id)) {
        mvm_virtio_set_needs_reset(vs->dev, "event buffer smaller than an event");
        return;
    }
    mvm_vq_chain_write(chain, 0, &id, sizeof(id));
    mvm_virtio_push(vs->dev, VSOCK_QUEUE_EVENT, chain->head, sizeof(id));
}

/*
 * Only owe the event here: a restored VM is paused, and its guest memory must not change
 * before resume. mvm_virtio_restore() kicks every queue, and that kick is served (with the
 * event) once the I/O thread unparks at resume.
 */
static void vsock_restored(gpointer backend)
{
    Vsock *vs = backend;
    guint64 cid = GUINT64_TO_LE(vs->cid);

    vs->reset_event = TRUE;
    /* A clone's CID (MVM_RESTORE_CLONE): Linux reads guest_cid again at the reset event. */
    mvm_virtio_restore_config(vs->dev, 0, &cid, sizeof(cid));
}

static void vsock_notify(gpointer backend, guint index)
{
    Vsock *vs = backend;

    mvm_virtio_lock(vs->dev);
    if (mvm_virtio_is_active(vs->dev)) {
        deliver_reset_event(vs);
        flush_pending(vs);
        if (index == VSOCK_QUEUE_TX)
            process_tx(vs);
        flush_pending(vs);
        /* New rx buffers (or credit): connections may read their sockets again. */
        update_all_watches(vs);
    }
    mvm_virtio_unlock(vs->dev);
}

/* ---- host → guest connections: "CONNECT P\n" ---- */

static gboolean parse_connect(const char *line, guint32 *port)
{
    char *end = NULL;

    if (!g_str_has_prefix(line, "CONNECT "))
        return FALSE;
    guint64 v = g_ascii_strtoull(line + 8, &end, 10);
    if (end == line + 8 || *end != '\0' || v > G_MAXUINT32)
        return FALSE;
    *port = (guint32)v;
    return TRUE;
}

static void handshake_done(Conn *c, guint32 port)
{
    Vsock *vs = c->vs;

    c->state = CONN_CONNECTING;
    c->local_port = vs->next_port++;
    if (vs->next_port < VSOCK_HOST_PORT_FIRST)
        vs->next_port = VSOCK_HOST_PORT_FIRST;
    c->peer_port = port;
    send_op(vs, c, VSOCK_OP_REQUEST, 0);
}

static gboolean handshake_event(int fd, GIOCondition condition, gpointer data)
{
    Conn *c = data;
    Vsock *vs = c->vs;
    char ch;
    guint32 port;

    mvm_virtio_lock(vs->dev);
    if (c->dead) {
        mvm_virtio_unlock(vs->dev);
        return G_SOURCE_CONTINUE;
    }
    /* Byte by byte: nothing after the newline may be taken from the stream. */
    for (;;) {
        ssize_t r = recv(fd, &ch, 1, MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0 || c->line->len >= VSOCK_CONNECT_LINE_MAX || !mvm_virtio_is_active(vs->dev)) {
            conn_close(c);
            break;
        }
        if (ch != '\n') {
            g_string_append_c(c->line, ch);
            continue;
        }
        g_autoptr(GString) line = g_steal_pointer(&c->line);
        if (!parse_connect(line->str, &port)) {
            conn_close(c);
            break;
        }
        handshake_done(c, port);
        conn_update_watch(c);
        break;
    }
    mvm_virtio_unlock(vs->dev);
    return G_SOURCE_CONTINUE;
}

static gboolean listener_event(int fd, GIOCondition condition, gpointer data);

/* I/O thread: the listener's rest is over; a connection that waited is accepted now. */
static gboolean listener_resume(gpointer data)
{
    Vsock *vs = data;

    g_source_unref(vs->listen_source);
    vs->listen_source = mvm_io_thread_add_fd(mvm_virtio_get_io_thread(vs->dev), vs->listen_fd,
                                             G_IO_IN, listener_event, vs);
    return G_SOURCE_REMOVE;
}

/*
 * accept4() with no descriptor to spare leaves the connection queued and the socket readable:
 * watched on, the I/O thread would spin on it and take a host CPU from the other VMs. The
 * listener rests a while instead; the connection waits in the backlog.
 */
static gboolean listener_rest(Vsock *vs)
{
    GSource *timeout = g_timeout_source_new(VSOCK_LISTEN_REST_MS);

    g_source_set_callback(timeout, listener_resume, vs, NULL);
    g_source_attach(timeout, mvm_io_thread_get_context(mvm_virtio_get_io_thread(vs->dev)));
    g_source_unref(vs->listen_source);
    vs->listen_source = timeout;
    return G_SOURCE_REMOVE;
}

static gboolean listener_event(int fd, GIOCondition condition, gpointer data)
{
    Vsock *vs = data;
    int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    /* EAGAIN is no connection (another wakeup took it); these are no room for one. */
    if (conn_fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM))
        return listener_rest(vs);
    if (conn_fd < 0)
        return G_SOURCE_CONTINUE;
    mvm_virtio_lock(vs->dev);
    if (!conn_allowed(vs, "host")) {
        close(conn_fd);
    } else {
        Conn *c = conn_new(vs, conn_fd, CONN_HANDSHAKE);
        c->line = g_string_new(NULL);
        c->watching = G_IO_IN;
        c->source = mvm_io_thread_add_fd(mvm_virtio_get_io_thread(vs->dev), conn_fd, G_IO_IN,
                                         handshake_event, c);
    }
    mvm_virtio_unlock(vs->dev);
    return G_SOURCE_CONTINUE;
}

/* @dir component by component, each opened with O_NOFOLLOW: for kernels without openat2(). */
static int open_dir_by_components(const char *dir)
{
    g_auto(GStrv) parts = g_strsplit(dir, "/", -1);
    int fd = open(g_path_is_absolute(dir) ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);

    for (char **part = parts; fd >= 0 && *part; part++) {
        int next;

        if (**part == '\0')
            continue;
        next = openat(fd, *part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
    }
    return fd;
}

/* @dir, refusing a symbolic link anywhere in it (ELOOP or ENOTDIR). */
static int open_dir_nofollow(const char *dir)
{
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_NO_SYMLINKS,
    };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof(how));

    /* ENOSYS before Linux 5.6; EPERM from a seccomp filter that does not know it. */
    if (fd < 0 && (errno == ENOSYS || errno == EPERM))
        return open_dir_by_components(dir);
    return fd;
}

/* vs->dir_fd and vs->name from @path. */
static gboolean open_socket_dir(Vsock *vs, const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);

    vs->name = g_path_get_basename(path);
    if (g_str_has_suffix(path, "/") || g_str_equal(vs->name, ".") || g_str_equal(vs->name, "..")) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vsock socket %s: not a file name", path);
        return FALSE;
    }
    vs->dir_fd = open_dir_nofollow(dir);
    if (vs->dir_fd < 0) {
        int saved = errno;

        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vsock socket %s: cannot open its directory%s: %s", path,
                    saved == ELOOP || saved == ENOTDIR ? " (a symbolic link on the way?)" : "",
                    g_strerror(saved));
        return FALSE;
    }
    return TRUE;
}

/*
 * Only a socket file is in the way: the path comes from the configuration, or from a snapshot
 * (untrusted) that root restores with its own back ends, and anything else there is someone's
 * file, not ours to remove. Looked at and removed in the directory opened once, never by path.
 */
static gboolean remove_stale_socket(Vsock *vs, GError **error)
{
    struct stat st;

    if (fstatat(vs->dir_fd, vs->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return TRUE;
    if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vsock socket %s: something else than a socket is there", vs->uds_path);
        return FALSE;
    }
    unlinkat(vs->dir_fd, vs->name, 0);
    return TRUE;
}

/* A socket left by an earlier run goes; one that a live VM listens on is not ours to take. */
static gboolean check_no_listener(Vsock *vs, const char *path, GError **error)
{
    int probe = connect_unix(path);

    /* No socket for the probe (or a full backlog) says nothing about a listener: keep it. */
    if (probe < 0 && mvm_errno_is_no_resources(errno)) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot check vsock socket %s", vs->uds_path);
        return FALSE;
    }
    if (probe >= 0) {
        close(probe);
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vsock socket %s is in use by another listener", vs->uds_path);
        return FALSE;
    }
    return TRUE;
}

static int listen_unix(Vsock *vs, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_autofree char *path = path_at(vs->dir_fd, vs->name);
    int fd;

    /* Room for the longest "_<port>" of guest_request() too. */
    if (strlen(path) + strlen("_4294967295") >= sizeof(addr.sun_path)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vsock socket %s: the file name is too long (it is reached as %s)",
                    vs->uds_path, path);
        return -1;
    }
    if (!check_no_listener(vs, path, error) || !remove_stale_socket(vs, error))
        return -1;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        mvm_kvm_set_errno_error(error, "socket");
        return -1;
    }
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0 ||
        fstatat(vs->dir_fd, vs->name, &vs->listen_st, AT_SYMLINK_NOFOLLOW) < 0) {
        int saved = errno;
        close(fd);
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "cannot listen on vsock socket %s: %s",
                    vs->uds_path, g_strerror(saved));
        return -1;
    }
    return fd;
}

/* ---- device ---- */

static gboolean bury_conns(gpointer data)
{
    Vsock *vs = data;

    mvm_virtio_lock(vs->dev);
    g_ptr_array_set_size(vs->graveyard, 0);
    mvm_virtio_unlock(vs->dev);
    return G_SOURCE_REMOVE;
}

/*
 * §5.10.6.6: a device reset ends every connection. The guest's reset runs on a
 * vCPU thread with the lock held, while an event of a connection may be waiting
 * for that lock on the I/O thread: connections are marked dead here and freed
 * there, where no event of theirs can be running.
 */
static void vsock_reset(gpointer backend)
{
    Vsock *vs = backend;

    while (vs->conns->len > 0) {
        Conn *c = g_ptr_array_steal_index_fast(vs->conns, vs->conns->len - 1);
        c->dead = TRUE;
        g_ptr_array_add(vs->graveyard, c);
    }
    g_queue_clear_full(&vs->pending, g_free);
    vs->reset_event = FALSE;
    g_main_context_invoke(mvm_io_thread_get_context(mvm_virtio_get_io_thread(vs->dev)), bury_conns,
                          vs);
}

static void vsock_free(gpointer backend)
{
    Vsock *vs = backend;

    if (vs->listen_source != NULL) {
        g_source_destroy(vs->listen_source);
        g_source_unref(vs->listen_source);
    }
    if (vs->conns != NULL)
        g_ptr_array_unref(vs->conns);
    if (vs->graveyard != NULL)
        g_ptr_array_unref(vs->graveyard);
    g_queue_clear_full(&vs->pending, g_free);
    if (vs->listen_fd >= 0) {
        struct stat st;

        close(vs->listen_fd);
        /* Ours only while it is the socket file we bound: it may have been replaced since. */
        if (fstatat(vs->dir_fd, vs->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            st.st_dev == vs->listen_st.st_dev && st.st_ino == vs->listen_st.st_ino)
            unlinkat(vs->dir_fd, vs->name, 0);
    }
    if (vs->dir_fd >= 0)
        close(vs->dir_fd);
    g_free(vs->name);
    g_free(vs->uds_path);
    g_free(vs);
}

static const MvmVirtioOps vsock_ops = {
    .name = "vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .n_queues = 3,
    .queue_size_max = VSOCK_QUEUE_MAX,
    .notify = vsock_notify,
    .reset = vsock_reset,
    .restored = vsock_restored,
    .free = vsock_free,
};

MvmVirtio *mvm_virtio_vsock_new(guint32 cid, const char *uds_path, const MvmVirtioEnv *env,
                                GError **error)
{
    Vsock *vs = g_new0(Vsock, 1);
    guint64 config = GUINT64_TO_LE((guint64)cid); /* §5.10.4: le64 guest_cid */

    vs->cid = cid;
    vs->uds_path = g_strdup(uds_path);
    vs->next_port = VSOCK_HOST_PORT_FIRST;
    vs->conns = g_ptr_array_new_with_free_func(conn_free);
    vs->graveyard = g_ptr_array_new_with_free_func(conn_free);
    g_queue_init(&vs->pending);
    vs->dir_fd = vs->listen_fd = -1;
    if (!open_socket_dir(vs, uds_path, error) || (vs->listen_fd = listen_unix(vs, error)) < 0) {
        vsock_free(vs);
        return NULL;
    }
    vs->dev = mvm_virtio_new(&vsock_ops, vs, env, error);
    if (vs->dev == NULL)
        return NULL;
    mvm_virtio_set_config(vs->dev, &config, sizeof(config));
    vs->listen_source =
        mvm_io_thread_add_fd(env->io_thread, vs->listen_fd, G_IO_IN, listener_event, vs);
    return vs->dev;
}
