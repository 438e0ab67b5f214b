/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* virtio-rng / entropy device (virtio 1.2 §5.4): fills the guest's buffers from getrandom(). */
#include <errno.h>
#include <sys/random.h>

#include "virtio.h"

#define RNG_QUEUE_MAX 256
/* Bytes handed out per request at most: a guest asking for megabytes gets them in pieces. */
#define RNG_CHUNK_MAX 65536

typedef struct {
    MvmVirtio *dev;
} Rng;

/* Fills the writable part of @chain; returns bytes filled. */
static guint32 fill_chain(const MvmVqChain *chain)
{
    struct iovec iov[MVM_VQ_MAX_SIZE];
    guint n = mvm_vq_chain_iov(chain, TRUE, 0, MIN(chain->in_len, (guint64)RNG_CHUNK_MAX), iov,
                               G_N_ELEMENTS(iov));
    guint32 done = 0;

    for (guint i = 0; i < n; i++) {
        gsize got = 0;
        while (got < iov[i].iov_len) {
            /* The urandom pool: never blocks once the host has booted. */
            ssize_t r = getrandom((guint8 *)iov[i].iov_base + got, iov[i].iov_len - got, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return done;
            got += (gsize)r;
        }
        done += (guint32)got;
    }
    return done;
}

static void rng_notify(gpointer backend, guint index)
{
    Rng *rng = backend;
    MvmVqChain *chain = g_new(MvmVqChain, 1);

    mvm_virtio_lock(rng->dev);
    while (mvm_virtio_pop(rng->dev, 0, chain) == MVM_VQ_POP_OK)
        mvm_virtio_push(rng->dev, 0, chain->head, fill_chain(chain));
    mvm_virtio_unlock(rng->dev);
    g_free(chain);
}

static const MvmVirtioOps rng_ops = {
    .name = "rng",
    .device_id = VIRTIO_ID_RNG,
    .n_queues = 1,
    .queue_size_max = RNG_QUEUE_MAX,
    .notify = rng_notify,
    .free = g_free,
};

MvmVirtio *mvm_virtio_rng_new(const MvmVirtioEnv *env, GError **error)
{
    Rng *rng = g_new0(Rng, 1);

    rng->dev = mvm_virtio_new(&rng_ops, rng, env, error);
    return rng->dev;
}
