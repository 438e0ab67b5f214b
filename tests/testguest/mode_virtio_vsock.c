/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=vsock: the guest end of virtio-vsock streams (virtio 1.2 §5.10), both ways.
 *  1. connects to host port `hostport` (1234), sends "ping from guest", expects the host to
 *     answer "pong from host", then shuts down and expects an RST;
 *  2. prints "VSOCK listening <port>" (`port`, 5000) and accepts a connection from the host,
 *     echoes what it receives with "echo: " in front, and waits for the host to close.
 * pause=1 instead: print "VSOCK paused", wait for a console byte (the host snapshots and restores
 * the VM meanwhile) and expect a TRANSPORT_RESET event (§5.10.6.7).
 * hold=1 instead: accept a connection on `port` and echo once as in 2., print "VSOCK holding", and
 * keep it, waiting with no time limit for the device's next event, which must be a
 * TRANSPORT_RESET (the host handed the VM to another VMM, or restored it, meanwhile).
 * Receive buffers: RX_BUFS pages, each one descriptor whose index is its buffer number.
 */
#include "virtio.h"

#define RX_BUFS      8
#define HOST_CID     2
#define OP_REQUEST   1
#define OP_RESPONSE  2
#define OP_RST       3
#define OP_SHUTDOWN  4
#define OP_RW        5
#define OP_CREDIT_UP 6
#define BUF_ALLOC    65536

struct vsock_hdr {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port;
    u32 len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static struct vdev dev;
static u64 cid;
static u8 *rx_pages[RX_BUFS];
static u8 *tx_page;
static u32 fwd_cnt; /* payload bytes received on this connection, our credit (§5.10.6.3) */

static bool send_pkt(u32 src_port, u32 dst_port, u16 op, const char *data, u32 len)
{
    struct vsock_hdr *h = (struct vsock_hdr *)tx_page;
    struct vbuf b = {(u64)tx_page, sizeof(*h) + len, false};
    u32 used;

    *h = (struct vsock_hdr){.src_cid = cid,
                            .dst_cid = HOST_CID,
                            .src_port = src_port,
                            .dst_port = dst_port,
                            .len = len,
                            .type = 1,
                            .op = op,
                            .buf_alloc = BUF_ALLOC,
                            .fwd_cnt = fwd_cnt};
    memcpy(tx_page + sizeof(*h), data, len);
    return vq_request(&dev, &dev.q[1], &b, 1, &used);
}

/* Next packet for us, credit updates skipped; @data gets the payload, NUL-terminated. */
static bool recv_pkt(struct vsock_hdr *out, char *data, u32 max)
{
    for (;;) {
        u32 id, len;
        if (!vq_wait(&dev, &dev.q[0], &id, &len, 10000)) {
            fail("vsock: nothing received in 10 s");
            return false;
        }
        if (id >= RX_BUFS || len < sizeof(*out)) {
            fail("vsock: bad rx element id %u len %u", id, len);
            return false;
        }
        memcpy(out, rx_pages[id], sizeof(*out));
        u32 n = out->len < max - 1 ? out->len : max - 1;
        memcpy(data, rx_pages[id] + sizeof(*out), n);
        data[n] = '\0';
        vq_post(&dev.q[0], (u16)id, (u64)rx_pages[id], 4096, true);
        vq_kick(&dev, &dev.q[0]);
        if (out->op == OP_RW)
            fwd_cnt += out->len;
        if (out->op != OP_CREDIT_UP)
            return true;
    }
}

static bool expect_op(const char *what, u16 op, struct vsock_hdr *h, char *data, u32 max)
{
    if (!recv_pkt(h, data, max))
        return false;
    if (h->op != op) {
        fail("vsock %s: expected op %u got %u (ports %u -> %u)", what, op, h->op, h->src_port,
             h->dst_port);
        return false;
    }
    return true;
}

static bool guest_connects(u32 hostport)
{
    struct vsock_hdr h;
    char data[256];
    const char *ping = "ping from guest";

    if (!send_pkt(5001, hostport, OP_REQUEST, "", 0) ||
        !expect_op("connect", OP_RESPONSE, &h, data, sizeof(data)))
        return false;
    if (!send_pkt(5001, hostport, OP_RW, ping, (u32)strlen(ping)) ||
        !expect_op("pong", OP_RW, &h, data, sizeof(data)))
        return false;
    gprintf("VSOCK got '%s'\n", data);
    if (strcmp(data, "pong from host")) {
        fail("vsock: expected 'pong from host' got '%s'", data);
        return false;
    }
    if (!send_pkt(5001, hostport, OP_SHUTDOWN, "", 0) ||
        !expect_op("shutdown", OP_RST, &h, data, sizeof(data)))
        return false;
    pass("vsock-connect");
    return true;
}

/* A connection from the host to @port: accepted, its first message echoed; its port in @peer. */
static bool accept_and_echo(u32 port, u32 *peer)
{
    struct vsock_hdr h;
    char data[256], echo[300] = "echo: ";

    fwd_cnt = 0; /* per connection */
    gprintf("VSOCK listening %u\n", port);
    if (!expect_op("accept", OP_REQUEST, &h, data, sizeof(data)))
        return false;
    if (h.dst_port != port) {
        fail("vsock: request for port %u, expected %u", h.dst_port, port);
        return false;
    }
    *peer = h.src_port;
    if (!send_pkt(port, *peer, OP_RESPONSE, "", 0) ||
        !expect_op("data", OP_RW, &h, data, sizeof(data)))
        return false;
    gprintf("VSOCK received '%s'\n", data);
    memcpy(echo + 6, data, strlen(data) + 1);
    return send_pkt(port, *peer, OP_RW, echo, (u32)strlen(echo));
}

static bool guest_listens(u32 port)
{
    struct vsock_hdr h;
    char data[256];
    u32 peer;

    if (!accept_and_echo(port, &peer))
        return false;
    /* The host closes: a SHUTDOWN, which we answer with an RST. */
    if (!expect_op("close", OP_SHUTDOWN, &h, data, sizeof(data)) ||
        !send_pkt(port, peer, OP_RST, "", 0))
        return false;
    pass("vsock-listen");
    return true;
}

/*
 * pause=1: the host snapshots and restores the VM, which must tell us TRANSPORT_RESET; then the
 * CID as the config space has it now (a clone's is new).
 */
/* The event the device wrote (@len bytes at @event) is a transport reset. */
static bool reset_seen(u32 *event, u32 len)
{
    gprintf("VSOCK event id %u len %u\n", *event, len);
    /* virtio 1.2 §5.10.6.7: the driver reads guest_cid again after a transport reset. */
    gprintf("VSOCK cid after reset %lu\n", *(volatile u64 *)(dev.base + VIO_CONFIG));
    return check_u64("vsock-transport-reset", 0, *event) && check_u64("vsock-event-len", 4, len);
}

static bool transport_reset(u32 *event)
{
    u32 id, len;

    gprintf("VSOCK paused\n");
    serial_getc();
    if (!vq_wait(&dev, &dev.q[2], &id, &len, 10000)) {
        fail("vsock: no event after the restore");
        return false;
    }
    return reset_seen(event, len);
}

/* hold=1: the connection stays open until the device says it is gone, however long that is. */
static bool hold_until_reset(u32 port, u32 *event)
{
    u32 peer, id, len;

    if (!accept_and_echo(port, &peer))
        return false;
    gprintf("VSOCK holding\n");
    while (!vq_has_used(&dev.q[2]))
        cpu_relax();
    vq_wait(&dev, &dev.q[2], &id, &len, 0);
    return reset_seen(event, len);
}

bool mode_vsock(void)
{
    if (!virtio_find(19, 0, &dev)) {
        fail("vsock: no virtio-vsock device");
        return false;
    }
    if (!virtio_setup(&dev, 0, 3))
        return false;
    cid = *(volatile u64 *)(dev.base + VIO_CONFIG);
    gprintf("VSOCK cid %lu\n", cid);
    tx_page = vio_page();
    for (u16 i = 0; i < RX_BUFS; i++) {
        rx_pages[i] = vio_page();
        vq_post(&dev.q[0], i, (u64)rx_pages[i], 4096, true);
    }
    vq_kick(&dev, &dev.q[0]);
    u8 *event = vio_page();
    vq_post(&dev.q[2], 0, (u64)event, 4, true);
    vq_kick(&dev, &dev.q[2]);
    if (arg_u64("pause", 0))
        return transport_reset((u32 *)event);
    if (arg_u64("hold", 0))
        return hold_until_reset((u32)arg_u64("port", 5000), (u32 *)event);
    bool ok = guest_connects((u32)arg_u64("hostport", 1234));
    ok = ok && guest_listens((u32)arg_u64("port", 5000));
    return ok;
}
