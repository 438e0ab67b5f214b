/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rate limiter of a device's requests (MvmRateLimit, microvm.h): two token buckets, one
 * counting bytes and one counting requests. A request goes when neither bucket is in debt and
 * takes what it needs, even more than the bucket holds: the bucket goes into debt and the next
 * request waits until the refill has paid it. So a request larger than a bucket still passes,
 * nothing is dropped or reordered, and over time the rate is exactly size / refill time.
 *
 * Not thread-safe: the device's lock guards it.
 */
#pragma once

#include <glib.h>

#include "microvm.h"

G_BEGIN_DECLS

typedef struct {
    guint64 size; /* 0: no limit */
    guint64 period_us;
    guint64 burst; /* one-time tokens left */
    /* In 1 / period_us tokens, so that a refill of any length is exact: no rounding drift. */
    __int128 scaled_tokens;
    gint64 last_us;
} MvmTokenBucket;

typedef struct {
    MvmTokenBucket bytes;
    MvmTokenBucket ops;
} MvmRateLimiter;

/* Checks @limit's ranges (MVM_ERROR_INVALID_ARGUMENT naming @what, e.g. "disk 1"). */
gboolean mvm_rate_limit_validate(const MvmRateLimit *limit, const char *what, GError **error);

/* Full buckets (one-time bursts included) as of @now_us (monotonic). */
void mvm_rate_limiter_init(MvmRateLimiter *limiter, const MvmRateLimit *limit, gint64 now_us);
/* 0: a request may go now; else the microseconds until one may. */
gint64 mvm_rate_limiter_wait_us(MvmRateLimiter *limiter, gint64 now_us);
/* A request of @bytes went. */
void mvm_rate_limiter_consume(MvmRateLimiter *limiter, guint64 bytes, gint64 now_us);

/*
 * A queue's rate limiter and the timer its next request waits for, on the device's I/O
 * thread (@context). Guarded by the device's lock, as the limiter.
 */
typedef struct {
    MvmRateLimiter limiter;
    GSource *timer; /* NULL: nothing waits */
    guint64 waits;  /* timers armed, over every limit this queue had */
} MvmThrottle;

void mvm_throttle_init(MvmThrottle *throttle, const MvmRateLimit *limit);
/*
 * Whether the queue's next request must wait; if so, @done runs on @context once it may go (a
 * timer already armed is kept). @done must call mvm_throttle_timer_done() under the lock first.
 */
gboolean mvm_throttle_must_wait(MvmThrottle *throttle, GMainContext *context, GSourceFunc done,
                                gpointer data);
void mvm_throttle_timer_done(MvmThrottle *throttle);
/* A request of @bytes went. */
void mvm_throttle_consume(MvmThrottle *throttle, guint64 bytes);
/* A new limit, its buckets full; TRUE when a request was waiting (the caller serves it). */
gboolean mvm_throttle_set_limit(MvmThrottle *throttle, const MvmRateLimit *limit);
/* Disarms the timer (the device goes away). */
void mvm_throttle_clear(MvmThrottle *throttle);

G_END_DECLS
