/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=net: virtio-net frames with the host, Ethernet type 0x88b5 (IEEE 802 local experimental).
 * Sends "hello from guest net" to the broadcast address, then waits for a frame of that type
 * carrying "hello from host net" (other frames, e.g. the host's IPv6 chatter, are skipped).
 * Args: burst (0): then sends that many more frames for the host to count ("NET burst N tsc T",
 * between markers 0x110 and 0x111). burst2 (0): then prints "NET burst2-ready", waits for a byte
 * on the console (the host changes the limits meanwhile) and sends that many more (markers 0x114
 * and 0x115). rxburst (0): then prints "NET rx-ready" and takes that many frames the host sends
 * at once (markers 0x112 at the first, 0x113 at the last).
 * gone (0): 1 = after that, wait for a byte on the console (the host deleted the tap meanwhile)
 * and check that sending still completes.
 * net_open() and net_echo_pending() are mode=blkloop's echo (mode_virtio_blk.c): every frame of
 * our type sent to our MAC goes back to the MAC it came from, its payload unchanged.
 */
#include "virtio.h"

#define NET_F_MAC    (1ULL << 5)
#define NET_F_STATUS (1ULL << 16)
#define HDR_SIZE     12
#define ETH_HLEN     14
#define ETHERTYPE    0x88b5
#define RX_BUFS      8
#define FRAME_BYTES  64

static struct vdev dev;
static u8 mac[6];
static u8 *rx_pages[RX_BUFS];
static u8 *tx_page;

static bool send_frame(const char *text)
{
    u8 *f = tx_page + HDR_SIZE;
    struct vbuf b = {(u64)tx_page, HDR_SIZE + FRAME_BYTES, false};
    u32 used;

    memset(tx_page, 0, HDR_SIZE + FRAME_BYTES); /* no offloads: an all-zero vnet header */
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    f[12] = ETHERTYPE >> 8;
    f[13] = ETHERTYPE & 0xff;
    memcpy(f + ETH_HLEN, text, strlen(text));
    return vq_request(&dev, &dev.q[1], &b, 1, &used);
}

/* The next frame of our type sent to our MAC whose payload starts with @text (others are
 * skipped, e.g. the host's IPv6 chatter); the rx buffer goes straight back to the device. */
static bool receive(const char *text, u16 *num_buffers)
{
    for (unsigned frames = 0; frames < 64; frames++) {
        u32 id, len;
        if (!vq_wait(&dev, &dev.q[0], &id, &len, 30000)) {
            fail("net: no frame '%s' in 30 s (%u others)", text, frames);
            return false;
        }
        if (id >= RX_BUFS || len < HDR_SIZE + ETH_HLEN || len > 4096) {
            fail("net: bad rx element id %u len %u", id, len);
            return false;
        }
        u8 *f = rx_pages[id] + HDR_SIZE;
        u16 type = (u16)(f[12] << 8 | f[13]);
        *num_buffers = *(u16 *)(rx_pages[id] + 10);
        bool ours =
            type == ETHERTYPE && !memcmp(f, mac, 6) && !memcmp(f + ETH_HLEN, text, strlen(text));
        vq_post(&dev.q[0], (u16)id, (u64)rx_pages[id], 4096, true);
        vq_kick(&dev, &dev.q[0]);
        if (ours)
            return true;
    }
    fail("net: 64 frames and none was '%s'", text);
    return false;
}

static bool receive_hello(void)
{
    u16 nbuf;

    if (!receive("hello from host net", &nbuf))
        return false;
    gprintf("NET received hello num_buffers %u\n", nbuf);
    return check_u64("net-rx", 1, nbuf);
}

/* rxburst=N: the host sends N frames at once; markers 0x112 (first) and 0x113 (last). */
static bool receive_burst(u64 n)
{
    u16 nbuf;

    gprintf("NET rx-ready\n");
    for (u64 i = 0; i < n; i++) {
        if (!receive("burst from host", &nbuf))
            return false;
        if (i == 0)
            outl(MVM_TESTDEV_MARKER_PORT, 0x112);
    }
    outl(MVM_TESTDEV_MARKER_PORT, 0x113);
    gprintf("NET rx-burst %lu\n", n);
    return true;
}

/* The first virtio-net device, link up, our MAC read, RX_BUFS receive buffers posted. */
bool net_open(void)
{
    if (!virtio_find(1, 0, &dev)) {
        fail("net: no virtio-net device");
        return false;
    }
    if (!virtio_setup(&dev, NET_F_MAC | NET_F_STATUS, 2))
        return false;
    if (!check_u64("net-link-up", 1, *(volatile u16 *)(dev.base + VIO_CONFIG + 6)))
        return false;
    for (unsigned i = 0; i < 6; i++)
        mac[i] = *(volatile u8 *)(dev.base + VIO_CONFIG + i);
    gprintf("NET mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4],
            mac[5]);
    tx_page = vio_page();
    for (u16 i = 0; i < RX_BUFS; i++) {
        rx_pages[i] = vio_page();
        vq_post(&dev.q[0], i, (u64)rx_pages[i], 4096, true);
    }
    vq_kick(&dev, &dev.q[0]);
    return true;
}

/* @f (@len bytes from the Ethernet header on) back to its sender, from our MAC. */
static bool echo_frame(const u8 *f, u32 len)
{
    u8 *out = tx_page + HDR_SIZE;
    struct vbuf b = {(u64)tx_page, HDR_SIZE + len, false};
    u32 used;

    memset(tx_page, 0, HDR_SIZE);
    memcpy(out, f + 6, 6);
    memcpy(out + 6, mac, 6);
    memcpy(out + 12, f + 12, len - 12);
    return vq_request(&dev, &dev.q[1], &b, 1, &used);
}

/* Without waiting: echoes what arrived, gives each buffer back; how many echoed, -1 on an error. */
int net_echo_pending(void)
{
    int echoed = 0;
    u32 id, len;

    while (vq_has_used(&dev.q[0])) {
        vq_wait(&dev, &dev.q[0], &id, &len, 0);
        if (id >= RX_BUFS || len < HDR_SIZE + ETH_HLEN || len > 4096) {
            fail("net: bad rx element id %u len %u", id, len);
            return -1;
        }
        u8 *f = rx_pages[id] + HDR_SIZE;
        bool ours = (u16)(f[12] << 8 | f[13]) == ETHERTYPE && !memcmp(f, mac, 6);
        if (ours && !echo_frame(f, len - HDR_SIZE))
            return -1;
        echoed += ours;
        vq_post(&dev.q[0], (u16)id, (u64)rx_pages[id], 4096, true);
        vq_kick(&dev, &dev.q[0]);
    }
    return echoed;
}

bool mode_net(void)
{
    if (!net_open())
        return false;
    if (!send_frame("hello from guest net"))
        return false;
    gprintf("NET sent\n");
    if (!receive_hello())
        return false;

    u64 burst = arg_u64("burst", 0);
    u64 t0 = rdtsc();
    outl(MVM_TESTDEV_MARKER_PORT, 0x110);
    for (u64 i = 0; i < burst; i++)
        if (!send_frame("burst"))
            return false;
    outl(MVM_TESTDEV_MARKER_PORT, 0x111);
    if (burst)
        gprintf("NET burst %lu tsc %lu\n", burst, rdtsc() - t0);
    u64 burst2 = arg_u64("burst2", 0);
    if (burst2) {
        gprintf("NET burst2-ready\n");
        serial_getc();
        outl(MVM_TESTDEV_MARKER_PORT, 0x114);
        for (u64 i = 0; i < burst2; i++)
            if (!send_frame("burst"))
                return false;
        outl(MVM_TESTDEV_MARKER_PORT, 0x115);
        gprintf("NET burst2 %lu\n", burst2);
    }
    u64 rxburst = arg_u64("rxburst", 0);
    if (rxburst && !receive_burst(rxburst))
        return false;
    if (arg_u64("gone", 0)) {
        gprintf("NET waiting\n");
        serial_getc();
        if (!send_frame("after the tap is gone"))
            return false;
        pass("net-tap-gone");
        /* The device says the link is down (status LINK_UP cleared, a config interrupt). */
        u16 status = *(volatile u16 *)(dev.base + VIO_CONFIG + 6);
        u32 isr = vio_read(&dev, VIO_INT_STATUS) | dev.irq_seen;
        gprintf("NET status %u interrupt-status 0x%x\n", status, isr);
        if (!check_u64("net-link-down", 0, status) || !check_u64("net-config-irq", 2, isr & 2))
            return false;
    }
    pass("net");
    return true;
}
