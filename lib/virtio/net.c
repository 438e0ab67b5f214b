/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-net (virtio 1.2 §5.1) on a tap device opened IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR with a 12-byte vnet header, the same layout as the guest's
 * struct virtio_net_hdr under VIRTIO_F_VERSION_1: frames go between the
 * guest's buffers and the tap with no copy. No offloads are offered, so the
 * tap is told to hand us none (TUNSETOFFLOAD 0).
 *
 * A tap that goes away (deleted interface, namespace gone) makes reads and
 * writes fail: the device logs it once, drops what the guest sends and
 * stops reading; the guest and the VM carry on.
 *
 * Each direction may have a rate limit (token-bucket.h), counting frames and their bytes
 * without the vnet header. A throttled transmit queue stays unread, in order, until its
 * timer; a throttled receive side stops reading the tap, whose own queue holds what comes
 * meanwhile (and drops past its length, as a real link's would).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kvm.h"
#include "token-bucket.h"
#include "virtio.h"

#define VIRTIO_NET_F_MAC     5
#define VIRTIO_NET_F_STATUS  16
#define VIRTIO_NET_S_LINK_UP 1

#define NET_QUEUE_RX  0
#define NET_QUEUE_TX  1
#define NET_QUEUE_MAX 256
/*
 * Frames sent per turn under the device lock. A guest can refill its ring as fast as we empty
 * it; bounded, the lock is let go between turns, so that a thread that needs it (a vCPU, a
 * rate-limit change or GetStats on the daemon's main thread) waits for one turn at most.
 */
#define NET_TX_BATCH           64
#define NET_HDR_SIZE           12 /* struct virtio_net_hdr with num_buffers (§5.1.6) */
#define NET_NUM_BUFFERS_OFFSET 10
#define NET_STATUS_OFFSET      6 /* in the config space, after mac[6] */

typedef struct {
    MvmVirtio *dev;
    int tap_fd;
    char *name;
    guint8 mac[6];
    gboolean clone; /* mvm_virtio_net_set_clone() */
    GSource *source;
    gboolean watching;
    gboolean tap_gone;
    MvmVqChain *held; /* an rx chain popped for a frame that was not there after all */
    MvmThrottle rx_throttle, tx_throttle;
    MvmNicStats stats; /* but the throttle counts, which are in the throttles */
} Net;

static void net_update_watch(Net *net);
static gboolean throttle_done(gpointer data);

/* Lock held: whether @throttle holds its queue back now (then its timer is armed). */
static gboolean throttled(Net *net, MvmThrottle *throttle)
{
    return mvm_throttle_must_wait(throttle,
                                  mvm_io_thread_get_context(mvm_virtio_get_io_thread(net->dev)),
                                  throttle_done, net);
}

/* Once, the first time the tap fails for good. Lock held. */
static void tap_failed(Net *net, int err)
{
    if (net->tap_gone)
        return;
    net->tap_gone = TRUE;
    mvm_guest_log(mvm_virtio_get_guest_log(net->dev), G_LOG_LEVEL_MESSAGE,
                  "virtio-net: tap %s: %s; the interface is down from now on",
                  net->name != NULL ? net->name : "(fd)", g_strerror(err));
    /* §5.1.4: the guest sees the link go down (VIRTIO_NET_S_LINK_UP cleared). */
    guint16 status = 0;
    mvm_virtio_update_config(net->dev, NET_STATUS_OFFSET, &status, sizeof(status));
}

static gboolean tap_error_is_fatal(int err)
{
    return err != EAGAIN && err != EINTR && err != ENOBUFS && err != EINVAL && err != EMSGSIZE;
}

static void process_tx(Net *net)
{
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);
    struct iovec iov[MVM_VQ_MAX_SIZE];

    for (guint sent_this_turn = 0; !throttled(net, &net->tx_throttle); sent_this_turn++) {
        if (sent_this_turn == NET_TX_BATCH) {
            /* The rest on the next turn of the I/O thread, as if the guest kicked again. */
            mvm_virtio_kick_queue(net->dev, NET_QUEUE_TX);
            return;
        }
        if (mvm_virtio_pop(net->dev, NET_QUEUE_TX, chain) != MVM_VQ_POP_OK)
            return;
        if (chain->out_len < NET_HDR_SIZE) {
            mvm_virtio_set_needs_reset(net->dev, "tx buffer shorter than the net header");
            return;
        }
        guint n = mvm_vq_chain_iov(chain, FALSE, 0, chain->out_len, iov, G_N_ELEMENTS(iov));
        ssize_t sent = net->tap_gone ? -1 : writev(net->tap_fd, iov, (int)n);
        int err = errno;
        guint64 frame_bytes = sent > NET_HDR_SIZE ? (guint64)sent - NET_HDR_SIZE : 0;
        /* The bytes of a frame that went; a dropped one costs its operation only. */
        mvm_throttle_consume(&net->tx_throttle, frame_bytes);
        if (sent >= 0) {
            net->stats.tx_frames++;
            net->stats.tx_bytes += frame_bytes;
        } else {
            /* A full or missing tap drops the frame, like a cable would. */
            net->stats.tx_dropped++;
            if (!net->tap_gone && tap_error_is_fatal(err))
                tap_failed(net, err);
        }
        mvm_virtio_push(net->dev, NET_QUEUE_TX, chain->head, 0);
    }
}

/* One frame from the tap into one rx chain. FALSE: stop for now. */
static gboolean receive_one(Net *net)
{
    struct iovec iov[MVM_VQ_MAX_SIZE];

    if (net->held == NULL) {
        MvmVqChain *chain = g_new(MvmVqChain, 1);
        if (mvm_virtio_pop(net->dev, NET_QUEUE_RX, chain) != MVM_VQ_POP_OK) {
            g_free(chain);
            return FALSE;
        }
        if (chain->in_len < NET_HDR_SIZE) {
            g_free(chain);
            mvm_virtio_set_needs_reset(net->dev, "rx buffer shorter than the net header");
            return FALSE;
        }
        net->held = chain;
    }
    guint n = mvm_vq_chain_iov(net->held, TRUE, 0, net->held->in_len, iov, G_N_ELEMENTS(iov));
    ssize_t r = readv(net->tap_fd, iov, (int)n);
    if (r < 0) {
        if (tap_error_is_fatal(errno))
            tap_failed(net, errno);
        return FALSE;
    }
    /*
     * Marked again as written (diff snapshots): a chain held since an earlier EAGAIN may have
     * been taken before the last snapshot, which cleared the mark it got then.
     */
    for (guint i = 0; i < n; i++)
        mvm_memory_mark_written(mvm_virtio_get_memory(net->dev), iov[i].iov_base, iov[i].iov_len);
    if (r < NET_HDR_SIZE)
        return TRUE; /* nothing a guest could use; the chain stays held */
    /* Without VIRTIO_NET_F_MRG_RXBUF every frame fits one buffer (§5.1.6.3.2). */
    guint16 one = GUINT16_TO_LE(1);
    mvm_vq_chain_write(net->held, NET_NUM_BUFFERS_OFFSET, &one, sizeof(one));
    mvm_virtio_push(net->dev, NET_QUEUE_RX, net->held->head, (guint32)r);
    g_clear_pointer(&net->held, g_free);
    mvm_throttle_consume(&net->rx_throttle, (guint64)r - NET_HDR_SIZE);
    net->stats.rx_frames++;
    net->stats.rx_bytes += (guint64)r - NET_HDR_SIZE;
    return TRUE;
}

/* Lock held. Bounded, so a flood of frames cannot starve the other devices on this thread. */
static void receive_some(Net *net)
{
    for (guint i = 0; i < 64 && !net->tap_gone && mvm_virtio_is_active(net->dev); i++)
        if (throttled(net, &net->rx_throttle) || !receive_one(net))
            break;
    net_update_watch(net);
}

static gboolean tap_event(int fd, GIOCondition condition, gpointer data)
{
    Net *net = data;

    mvm_virtio_lock(net->dev);
    if (condition & (G_IO_ERR | G_IO_HUP | G_IO_NVAL))
        tap_failed(net, EIO);
    receive_some(net);
    mvm_virtio_unlock(net->dev);
    return G_SOURCE_CONTINUE;
}

/*
 * I/O thread: a throttled direction may go on (or its limit changed under it). One callback for
 * both: serving the other direction too costs nothing and is never wrong.
 */
static gboolean throttle_done(gpointer data)
{
    Net *net = data;

    mvm_virtio_lock(net->dev);
    mvm_throttle_timer_done(&net->rx_throttle);
    mvm_throttle_timer_done(&net->tx_throttle);
    process_tx(net);
    receive_some(net);
    mvm_virtio_unlock(net->dev);
    return G_SOURCE_REMOVE;
}

/*
 * Read the tap only while the guest has somewhere to put a frame and the receive side is not
 * throttled. Lock held.
 */
static void net_update_watch(Net *net)
{
    gboolean want = !net->tap_gone && mvm_virtio_is_active(net->dev) &&
                    net->rx_throttle.timer == NULL &&
                    (net->held != NULL || mvm_virtio_pending(net->dev, NET_QUEUE_RX) > 0);

    if (want == net->watching)
        return;
    net->watching = want;
    if (net->source != NULL) {
        g_source_destroy(net->source);
        g_clear_pointer(&net->source, g_source_unref);
    }
    if (want)
        net->source = mvm_io_thread_add_fd(mvm_virtio_get_io_thread(net->dev), net->tap_fd,
                                           G_IO_IN | G_IO_ERR | G_IO_HUP, tap_event, net);
}

static void net_notify(gpointer backend, guint index)
{
    Net *net = backend;

    mvm_virtio_lock(net->dev);
    if (index == NET_QUEUE_TX)
        process_tx(net);
    net_update_watch(net);
    mvm_virtio_unlock(net->dev);
}

/* Lock held, on a vCPU thread: the watch goes on the next notify or event. */
static void net_reset(gpointer backend)
{
    Net *net = backend;

    g_clear_pointer(&net->held, g_free);
}

static void net_free(gpointer backend)
{
    Net *net = backend;

    g_debug("virtio-net %s: %" G_GUINT64_FORMAT " frames received, %" G_GUINT64_FORMAT
            " sent, %" G_GUINT64_FORMAT " dropped",
            net->name != NULL ? net->name : "(fd)", net->stats.rx_frames, net->stats.tx_frames,
            net->stats.tx_dropped);
    mvm_throttle_clear(&net->rx_throttle);
    mvm_throttle_clear(&net->tx_throttle);
    if (net->source != NULL) {
        g_source_destroy(net->source);
        g_source_unref(net->source);
    }
    if (net->tap_fd >= 0)
        close(net->tap_fd);
    g_free(net->held);
    g_free(net->name);
    g_free(net);
}

/*
 * The guest read its MAC from the config space the snapshot restored, and keeps it; a clone's
 * is its own instead (MVM_RESTORE_CLONE), which the guest reads when its driver binds again.
 */
static void net_restored(gpointer backend)
{
    Net *net = backend;

    if (net->clone)
        mvm_virtio_restore_config(net->dev, 0, net->mac, sizeof(net->mac));
    else
        mvm_virtio_read_config(net->dev, 0, net->mac, sizeof(net->mac));
}

static const MvmVirtioOps net_ops = {
    .name = "net",
    .device_id = VIRTIO_ID_NET,
    .n_queues = 2,
    .queue_size_max = NET_QUEUE_MAX,
    .features = (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS),
    .notify = net_notify,
    .reset = net_reset,
    .restored = net_restored,
    .free = net_free,
};

static gboolean tap_error(GError **error, const char *name, const char *what)
{
    return mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "tap %s: %s",
                               name != NULL ? name : "(fd)", what);
}

static int open_tap(const MvmNetConfig *config, GError **error)
{
    if (config->tap_fd >= 0) {
        int fd = fcntl(config->tap_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            tap_error(error, NULL, "dup");
        return fd;
    }
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        tap_error(error, config->tap_name, "open /dev/net/tun");
        return -1;
    }
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    g_strlcpy(ifr.ifr_name, config->tap_name, sizeof(ifr.ifr_name));
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        tap_error(error, config->tap_name, "TUNSETIFF");
        close(fd);
        return -1;
    }
    return fd;
}

/* The fd is ours now; checks what a caller-made tap is and sets the header size. */
static gboolean setup_tap(Net *net, GError **error)
{
    struct ifreq ifr = {0};
    int hdr_size = NET_HDR_SIZE;

    if (ioctl(net->tap_fd, TUNGETIFF, &ifr) < 0)
        return tap_error(error, net->name, "TUNGETIFF (not a tap?)");
    if ((ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)) !=
        (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "tap %s must be opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR", ifr.ifr_name);
        return FALSE;
    }
    if (net->name == NULL)
        net->name = g_strndup(ifr.ifr_name, sizeof(ifr.ifr_name));
    if (ioctl(net->tap_fd, TUNSETVNETHDRSZ, &hdr_size) < 0)
        return tap_error(error, net->name, "TUNSETVNETHDRSZ");
    if (ioctl(net->tap_fd, TUNSETOFFLOAD, 0) < 0)
        return tap_error(error, net->name, "TUNSETOFFLOAD");
    /* Shared with the caller's fd when it gave one: we never block on it. */
    int flags = fcntl(net->tap_fd, F_GETFL);
    if (flags < 0 || fcntl(net->tap_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return tap_error(error, net->name, "O_NONBLOCK");
    return TRUE;
}

void mvm_virtio_net_set_clone(MvmVirtio *dev)
{
    Net *net = mvm_virtio_get_backend(dev);

    net->clone = TRUE;
}

void mvm_virtio_net_get_mac(MvmVirtio *dev, guint8 mac[6])
{
    Net *net = mvm_virtio_get_backend(dev);

    mvm_virtio_lock(dev);
    memcpy(mac, net->mac, sizeof(net->mac));
    mvm_virtio_unlock(dev);
}

/* Set once at creation (a tap that failed keeps it too) and closed when the device is freed. */
int mvm_virtio_net_get_tap_fd(MvmVirtio *dev)
{
    Net *net = mvm_virtio_get_backend(dev);

    return net->tap_fd;
}

void mvm_virtio_net_get_stats(MvmVirtio *dev, MvmNicStats *stats)
{
    Net *net = mvm_virtio_get_backend(dev);

    mvm_virtio_lock(dev);
    *stats = net->stats;
    stats->rx_throttled = net->rx_throttle.waits;
    stats->tx_throttled = net->tx_throttle.waits;
    mvm_virtio_unlock(dev);
}

void mvm_virtio_net_set_rate_limits(MvmVirtio *dev, const MvmRateLimit *rx, const MvmRateLimit *tx)
{
    Net *net = mvm_virtio_get_backend(dev);

    mvm_virtio_lock(dev);
    gboolean rx_waited = rx != NULL && mvm_throttle_set_limit(&net->rx_throttle, rx);
    gboolean tx_waited = tx != NULL && mvm_throttle_set_limit(&net->tx_throttle, tx);
    mvm_virtio_unlock(dev);
    /* What waited for the old limit is reconsidered under the new one at once, on the I/O
     * thread: a kick of the receive queue watches the tap again, one of transmit sends. */
    if (rx_waited)
        mvm_virtio_kick_queue(dev, NET_QUEUE_RX);
    if (tx_waited)
        mvm_virtio_kick_queue(dev, NET_QUEUE_TX);
}

MvmVirtio *mvm_virtio_net_new(const MvmNetConfig *config, const MvmVirtioEnv *env, GError **error)
{
    Net *net = g_new0(Net, 1);
    guint8 cfg[8] = {0}; /* §5.1.4: mac[6], le16 status */

    net->name = g_strdup(config->tap_name);
    mvm_throttle_init(&net->rx_throttle, &config->rx_rate_limit);
    mvm_throttle_init(&net->tx_throttle, &config->tx_rate_limit);
    net->tap_fd = open_tap(config, error);
    if (net->tap_fd < 0 || !setup_tap(net, error)) {
        net_free(net);
        return NULL;
    }
    memcpy(net->mac, config->mac, sizeof(net->mac)); /* never all zero: mvm_vm_alloc() chose one */
    net->dev = mvm_virtio_new(&net_ops, net, env, error);
    if (net->dev == NULL)
        return NULL;
    memcpy(cfg, net->mac, 6);
    cfg[6] = VIRTIO_NET_S_LINK_UP;
    mvm_virtio_set_config(net->dev, cfg, sizeof(cfg));
    return net->dev;
}
