/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Token buckets with the semantics of Firecracker's rate limiter: @size tokens refilled evenly
 * over @refill_time_ms, and @one_time_burst tokens more at the start that never come back.
 */
#include "error-private.h"
#include "token-bucket.h"

/*
 * The bounds (microvm.h) keep the scaled sums below far inside an __int128: size × period is
 * under 2^87, and a debt is one request's bytes × period.
 */
#define REFILL_TIME_MAX_MS MVM_TOKEN_BUCKET_REFILL_MAX_MS
#define TOKENS_MAX         MVM_TOKEN_BUCKET_MAX

static gboolean bucket_validate(const MvmTokenBucketConfig *b, const char *what, const char *kind,
                                GError **error)
{
    if (b->size == 0) {
        if (b->one_time_burst != 0 || b->refill_time_ms != 0)
            return mvm_set_invalid(error, "%s: a %s limit with a burst or refill time needs a size",
                                   what, kind);
        return TRUE;
    }
    if (b->size > TOKENS_MAX || b->one_time_burst > TOKENS_MAX)
        return mvm_set_invalid(error, "%s: the %s limit's size and burst are at most %llu", what,
                               kind, TOKENS_MAX);
    if (b->refill_time_ms == 0 || b->refill_time_ms > REFILL_TIME_MAX_MS)
        return mvm_set_invalid(error, "%s: the %s limit's refill time is 1 to %llu ms", what, kind,
                               REFILL_TIME_MAX_MS);
    return TRUE;
}

gboolean mvm_rate_limit_validate(const MvmRateLimit *limit, const char *what, GError **error)
{
    return bucket_validate(&limit->bandwidth, what, "bandwidth", error) &&
           bucket_validate(&limit->ops, what, "operations", error);
}

static void bucket_init(MvmTokenBucket *b, const MvmTokenBucketConfig *config, gint64 now_us)
{
    b->size = config->size;
    b->period_us = config->refill_time_ms * 1000;
    b->burst = config->one_time_burst;
    b->scaled_tokens = (__int128)b->size * b->period_us;
    b->last_us = now_us;
}

/* Adds what the time since the last refill gave, up to a full bucket; a debt is paid first. */
static void bucket_refill(MvmTokenBucket *b, gint64 now_us)
{
    __int128 full = (__int128)b->size * b->period_us;

    if (now_us <= b->last_us)
        return;
    /* Time beyond what fills the bucket adds nothing: cap it before multiplying. */
    __int128 to_full_us = (full - b->scaled_tokens) / b->size + 1;
    __int128 elapsed = MIN((__int128)(now_us - b->last_us), to_full_us);
    b->scaled_tokens = MIN(b->scaled_tokens + elapsed * b->size, full);
    b->last_us = now_us;
}

static gint64 bucket_wait_us(MvmTokenBucket *b, gint64 now_us)
{
    if (b->size == 0 || b->burst > 0)
        return 0;
    bucket_refill(b, now_us);
    if (b->scaled_tokens >= 0)
        return 0;
    /* -scaled_tokens / size microseconds, rounded up; a tiny bucket's debt can exceed gint64. */
    __int128 wait_us = (-b->scaled_tokens + b->size - 1) / b->size;
    return (gint64)MIN(wait_us, (__int128)G_MAXINT64);
}

static void bucket_consume(MvmTokenBucket *b, guint64 n, gint64 now_us)
{
    if (b->size == 0)
        return;
    guint64 from_burst = MIN(n, b->burst);
    b->burst -= from_burst;
    bucket_refill(b, now_us);
    b->scaled_tokens -= (__int128)(n - from_burst) * b->period_us;
}

void mvm_rate_limiter_init(MvmRateLimiter *limiter, const MvmRateLimit *limit, gint64 now_us)
{
    bucket_init(&limiter->bytes, &limit->bandwidth, now_us);
    bucket_init(&limiter->ops, &limit->ops, now_us);
}

gint64 mvm_rate_limiter_wait_us(MvmRateLimiter *limiter, gint64 now_us)
{
    return MAX(bucket_wait_us(&limiter->bytes, now_us), bucket_wait_us(&limiter->ops, now_us));
}

void mvm_rate_limiter_consume(MvmRateLimiter *limiter, guint64 bytes, gint64 now_us)
{
    bucket_consume(&limiter->bytes, bytes, now_us);
    bucket_consume(&limiter->ops, 1, now_us);
}

/* ---- the timer a throttled queue waits for ---- */

static void throttle_set_limiter(MvmThrottle *throttle, const MvmRateLimit *limit)
{
    mvm_rate_limiter_init(&throttle->limiter, limit, g_get_monotonic_time());
}

void mvm_throttle_init(MvmThrottle *throttle, const MvmRateLimit *limit)
{
    *throttle = (MvmThrottle){.timer = NULL};
    throttle_set_limiter(throttle, limit);
}

gboolean mvm_throttle_must_wait(MvmThrottle *throttle, GMainContext *context, GSourceFunc done,
                                gpointer data)
{
    if (throttle->timer != NULL)
        return TRUE;
    gint64 wait_us = mvm_rate_limiter_wait_us(&throttle->limiter, g_get_monotonic_time());
    if (wait_us == 0)
        return FALSE;
    /* Milliseconds, rounded up (a timer that fires early would only arm itself again), with
     * no overflow for the longest wait, G_MAXINT64. */
    gint64 wait_ms = wait_us / 1000 + (wait_us % 1000 != 0);
    throttle->waits++;
    throttle->timer = g_timeout_source_new((guint)MIN(wait_ms, (gint64)G_MAXUINT));
    g_source_set_callback(throttle->timer, done, data, NULL);
    g_source_attach(throttle->timer, context);
    return TRUE;
}

void mvm_throttle_timer_done(MvmThrottle *throttle)
{
    /* A timer set_limit() destroyed may still run once, racing it: it must not clear a new one. */
    if (throttle->timer == g_main_current_source())
        g_clear_pointer(&throttle->timer, g_source_unref);
}

void mvm_throttle_consume(MvmThrottle *throttle, guint64 bytes)
{
    mvm_rate_limiter_consume(&throttle->limiter, bytes, g_get_monotonic_time());
}

void mvm_throttle_clear(MvmThrottle *throttle)
{
    if (throttle->timer != NULL) {
        g_source_destroy(throttle->timer);
        g_clear_pointer(&throttle->timer, g_source_unref);
    }
}

gboolean mvm_throttle_set_limit(MvmThrottle *throttle, const MvmRateLimit *limit)
{
    gboolean waited = throttle->timer != NULL;

    mvm_throttle_clear(throttle);
    throttle_set_limiter(throttle, limit);
    return waited;
}
