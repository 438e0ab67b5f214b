/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-blk (virtio 1.2 §5.2) on a raw image file or block device. Requests
 * run on the VM's I/O thread with the device lock dropped around the
 * preadv/pwritev, so a slow disk never holds up a vCPU touching the registers.
 * A host I/O error is the guest's VIRTIO_BLK_S_IOERR, never ours. A rate limit
 * (token-bucket.h) holds requests in the queue, in order, until a timer on the I/O
 * thread says they may go.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm.h"
#include "token-bucket.h"
#include "virtio.h"

#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO      5
#define VIRTIO_BLK_F_FLUSH   9

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define SECTOR_SIZE   512
#define REQ_HDR_SIZE  16
#define BLK_ID_BYTES  20
#define BLK_QUEUE_MAX 256
#define BLK_SEG_MAX   (BLK_QUEUE_MAX - 2) /* a header and a status descriptor besides the data */

typedef struct {
    MvmVirtio *dev;
    int fd;
    gboolean read_only;
    guint64 size; /* bytes, a multiple of SECTOR_SIZE */
    char id[BLK_ID_BYTES];
    MvmThrottle throttle; /* guarded by the device lock, as @stats */
    MvmDiskStats stats;
} Blk;

typedef struct {
    guint32 type;
    guint32 reserved;
    guint64 sector;
} BlkReqHdr;

static int open_disk(const MvmDiskConfig *config, GError **error)
{
    int fd;

    if (config->fd >= 0)
        fd = fcntl(config->fd, F_DUPFD_CLOEXEC, 3);
    else
        fd = open(config->path, (config->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot open disk %s",
                            config->path != NULL ? config->path : "(fd)");
    return fd;
}

static gboolean disk_size(int fd, const char *name, guint64 *size, GError **error)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return mvm_kvm_set_errno_error(error, "fstat disk");
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, size) < 0)
            return mvm_kvm_set_errno_error(error, "BLKGETSIZE64");
    } else if (S_ISREG(st.st_mode)) {
        *size = (guint64)st.st_size;
    } else {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "disk %s is neither a regular file nor a block device", name);
        return FALSE;
    }
    /* §5.2.4: capacity is in 512-byte sectors; a partial sector could never be reached. */
    if (*size % SECTOR_SIZE != 0) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "disk %s has %" G_GUINT64_FORMAT " bytes, not a multiple of %u", name, *size,
                    SECTOR_SIZE);
        return FALSE;
    }
    return TRUE;
}

static guint8 do_rw(Blk *blk, const MvmVqChain *chain, const BlkReqHdr *hdr, gboolean write,
                    guint32 *written)
{
    struct iovec iov[MVM_VQ_MAX_SIZE];
    /* Data: the readable part after the header (OUT), or the writable part before status (IN). */
    guint64 len = write ? chain->out_len - REQ_HDR_SIZE : chain->in_len - 1;
    guint n =
        mvm_vq_chain_iov(chain, !write, write ? REQ_HDR_SIZE : 0, len, iov, G_N_ELEMENTS(iov));

    if (write && blk->read_only)
        return VIRTIO_BLK_S_IOERR; /* §5.2.6.2 */
    if (len % SECTOR_SIZE != 0 || hdr->sector > blk->size / SECTOR_SIZE ||
        len > blk->size - hdr->sector * SECTOR_SIZE)
        return VIRTIO_BLK_S_IOERR;
    off_t offset = (off_t)(hdr->sector * SECTOR_SIZE);
    guint64 done = 0;
    while (done < len) {
        ssize_t r =
            write ? pwritev(blk->fd, iov, (int)n, offset) : preadv(blk->fd, iov, (int)n, offset);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return VIRTIO_BLK_S_IOERR;
        done += (guint64)r;
        offset += r;
        /* Short transfer: advance the iovec past what was done. */
        for (guint64 skip = (guint64)r; skip > 0 && n > 0;) {
            gsize take = MIN(skip, iov[0].iov_len);
            iov[0].iov_base = (guint8 *)iov[0].iov_base + take;
            iov[0].iov_len -= take;
            skip -= take;
            if (iov[0].iov_len == 0) {
                memmove(iov, iov + 1, (--n) * sizeof(*iov));
            }
        }
    }
    if (!write)
        *written = (guint32)len;
    return VIRTIO_BLK_S_OK;
}

static guint8 handle_request(Blk *blk, const MvmVqChain *chain, guint32 *type, guint32 *written)
{
    BlkReqHdr hdr;

    mvm_vq_chain_read(chain, 0, &hdr, sizeof(hdr));
    hdr.type = *type = GUINT32_FROM_LE(hdr.type);
    hdr.sector = GUINT64_FROM_LE(hdr.sector);
    switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        return do_rw(blk, chain, &hdr, hdr.type == VIRTIO_BLK_T_OUT, written);
    case VIRTIO_BLK_T_FLUSH:
        return fdatasync(blk->fd) == 0 || errno == EINVAL ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    case VIRTIO_BLK_T_GET_ID:
        /* §5.2.6: 20 bytes, not NUL-terminated when the id is that long. */
        *written = (guint32)mvm_vq_chain_write(chain, 0, blk->id,
                                               MIN((guint64)BLK_ID_BYTES, chain->in_len - 1));
        return VIRTIO_BLK_S_OK;
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* What a request was and how it ended, for the disk's figures. */
typedef struct {
    guint32 type;
    guint8 status;
} BlkDone;

/* One chain, lock NOT held. Returns bytes written into the chain, status included. */
static guint32 process_chain(Blk *blk, const MvmVqChain *chain, BlkDone *done)
{
    guint32 written = 0;

    done->status = handle_request(blk, chain, &done->type, &written);
    /* The status byte is the last writable byte (§5.2.6). */
    mvm_vq_chain_write(chain, chain->in_len - 1, &done->status, 1);
    return written + 1;
}

/* Lock held: a request of @chain is done. */
static void count_request(Blk *blk, const MvmVqChain *chain, const BlkDone *done)
{
    if (done->status != VIRTIO_BLK_S_OK)
        return;
    if (done->type == VIRTIO_BLK_T_IN) {
        blk->stats.read_requests++;
        blk->stats.read_bytes += chain->in_len - 1;
    } else if (done->type == VIRTIO_BLK_T_OUT) {
        blk->stats.write_requests++;
        blk->stats.write_bytes += chain->out_len - REQ_HDR_SIZE;
    }
}

static gboolean throttle_done(gpointer data);

/*
 * Lock held. Whether the next request must wait for the rate limit; if so, a timer on the I/O
 * thread serves the queue again once it may go. The guest sees the request as in flight.
 */
static gboolean throttled(Blk *blk)
{
    return mvm_throttle_must_wait(&blk->throttle,
                                  mvm_io_thread_get_context(mvm_virtio_get_io_thread(blk->dev)),
                                  throttle_done, blk);
}

/*
 * The bytes a request moves: its data, between the header and the status byte (§5.2.6). No
 * request moves more than the disk holds, so a guest's huge bogus chain, which fails anyway,
 * cannot put its own disk in debt for hours.
 */
static guint64 request_bytes(const Blk *blk, const MvmVqChain *chain)
{
    return MIN((guint64)chain->out_len + chain->in_len - REQ_HDR_SIZE - 1, blk->size);
}

static void blk_notify(gpointer backend, guint index)
{
    Blk *blk = backend;
    g_autofree MvmVqChain *chain = g_new(MvmVqChain, 1);

    mvm_virtio_lock(blk->dev);
    while (!throttled(blk) && mvm_virtio_pop(blk->dev, 0, chain) == MVM_VQ_POP_OK) {
        /* A request needs a header to read and a status byte to write (§5.2.6). */
        if (chain->out_len < REQ_HDR_SIZE || chain->in_len < 1) {
            mvm_virtio_set_needs_reset(blk->dev, "request without header or status byte");
            break;
        }
        mvm_throttle_consume(&blk->throttle, request_bytes(blk, chain));
        guint32 epoch = mvm_virtio_get_epoch(blk->dev);
        mvm_virtio_unlock(blk->dev);
        BlkDone done;
        guint32 len = process_chain(blk, chain, &done);
        mvm_virtio_lock(blk->dev);
        count_request(blk, chain, &done);
        if (epoch == mvm_virtio_get_epoch(blk->dev))
            mvm_virtio_push(blk->dev, 0, chain->head, len);
    }
    mvm_virtio_unlock(blk->dev);
}

/* I/O thread: the wait is over (or the limit changed under it). */
static gboolean throttle_done(gpointer data)
{
    Blk *blk = data;

    mvm_virtio_lock(blk->dev);
    mvm_throttle_timer_done(&blk->throttle);
    mvm_virtio_unlock(blk->dev);
    blk_notify(blk, 0);
    return G_SOURCE_REMOVE;
}

static void blk_free(gpointer backend)
{
    Blk *blk = backend;

    mvm_throttle_clear(&blk->throttle);
    if (blk->fd >= 0)
        close(blk->fd);
    g_free(blk);
}

static const MvmVirtioOps blk_ops_rw = {
    .name = "blk",
    .device_id = VIRTIO_ID_BLOCK,
    .n_queues = 1,
    .queue_size_max = BLK_QUEUE_MAX,
    .features = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_FLUSH),
    .notify = blk_notify,
    .free = blk_free,
};

static const MvmVirtioOps blk_ops_ro = {
    .name = "blk",
    .device_id = VIRTIO_ID_BLOCK,
    .n_queues = 1,
    .queue_size_max = BLK_QUEUE_MAX,
    .features =
        (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_RO),
    .notify = blk_notify,
    .free = blk_free,
};

/* §5.2.4 struct virtio_blk_config, up to blk_size; the rest reads as zero. */
static void set_config(Blk *blk)
{
    guint8 config[24] = {0};
    guint64 capacity = GUINT64_TO_LE(blk->size / SECTOR_SIZE);
    guint32 seg_max = GUINT32_TO_LE(BLK_SEG_MAX);

    memcpy(config, &capacity, 8);
    memcpy(config + 12, &seg_max, 4);
    mvm_virtio_set_config(blk->dev, config, sizeof(config));
}

/* Set once at creation and closed only when the device is freed: no lock needed. */
int mvm_virtio_blk_get_fd(MvmVirtio *dev)
{
    Blk *blk = mvm_virtio_get_backend(dev);

    return blk->fd;
}

void mvm_virtio_blk_get_stats(MvmVirtio *dev, MvmDiskStats *stats)
{
    Blk *blk = mvm_virtio_get_backend(dev);

    mvm_virtio_lock(dev);
    *stats = blk->stats;
    stats->throttled = blk->throttle.waits;
    mvm_virtio_unlock(dev);
}

void mvm_virtio_blk_set_rate_limit(MvmVirtio *dev, const MvmRateLimit *limit)
{
    Blk *blk = mvm_virtio_get_backend(dev);

    mvm_virtio_lock(dev);
    /* A request that waits for the old limit is reconsidered under the new one at once. */
    gboolean waited = mvm_throttle_set_limit(&blk->throttle, limit);
    mvm_virtio_unlock(dev);
    if (waited)
        mvm_virtio_kick_queue(dev, 0);
}

MvmVirtio *mvm_virtio_blk_new(const MvmDiskConfig *config, const MvmVirtioEnv *env, GError **error)
{
    const char *name = config->path != NULL ? config->path : "(fd)";
    Blk *blk = g_new0(Blk, 1);

    blk->read_only = config->read_only;
    mvm_throttle_init(&blk->throttle, &config->rate_limit);
    blk->fd = open_disk(config, error);
    if (blk->fd < 0 || !disk_size(blk->fd, name, &blk->size, error)) {
        blk_free(blk);
        return NULL;
    }
    /* The serial the guest sees (/sys/block/vdX/serial): stable for one image. */
    struct stat st;
    if (fstat(blk->fd, &st) == 0)
        g_snprintf(blk->id, sizeof(blk->id), "mvm%" G_GINT64_MODIFIER "x",
                   (guint64)st.st_ino ^ ((guint64)st.st_dev << 40));
    blk->dev = mvm_virtio_new(config->read_only ? &blk_ops_ro : &blk_ops_rw, blk, env, error);
    if (blk->dev == NULL)
        return NULL;
    set_config(blk);
    return blk->dev;
}
