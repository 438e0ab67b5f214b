/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rate limiter of device requests (lib/token-bucket.c), on a clock the test moves: the
 * long-run rate, debt, the one-time burst, idle time, and the checks of a limit's ranges.
 */
#include "microvm.h"
#include "token-bucket.h"

/*
 * Sends requests of @bytes as soon as @limiter lets them, for @duration_us of the test's clock
 * from @start_us; returns how many went, and leaves the clock's end in @end_us.
 */
static guint64 drain(MvmRateLimiter *limiter, guint64 bytes, gint64 start_us, gint64 duration_us,
                     gint64 *end_us)
{
    gint64 now = start_us;
    guint64 sent = 0;

    for (;;) {
        gint64 wait = mvm_rate_limiter_wait_us(limiter, now);
        g_assert_cmpint(wait, >=, 0);
        if (now + wait >= start_us + duration_us)
            break;
        now += wait;
        g_assert_cmpint(mvm_rate_limiter_wait_us(limiter, now), ==, 0);
        mvm_rate_limiter_consume(limiter, bytes, now);
        sent++;
    }
    if (end_us)
        *end_us = start_us + duration_us;
    return sent;
}

static void test_bandwidth_rate(void)
{
    /* 10 MB/s as 100 kB per 10 ms; requests of 64 KiB, so each leaves the bucket in debt. */
    MvmRateLimit limit = {.bandwidth = {.size = 100000, .refill_time_ms = 10}};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 1000);
    guint64 sent = drain(&limiter, 65536, 1000, 3 * G_USEC_PER_SEC, NULL);
    double mbs = sent * 65536.0 / 3e6;
    /* 30 MB in 3 s, plus the full bucket at the start and one request's debt at most. */
    g_assert_cmpfloat(mbs, >=, 10.0);
    g_assert_cmpfloat(mbs, <=, 10.0 + (100000.0 + 65536) / 3e6);
}

static void test_ops_rate(void)
{
    /*
     * 200 requests a second: 5 ms apart, never rounded away. At 0 two go, the one the full
     * bucket holds and the one that takes it into debt; then one every 5 ms.
     */
    MvmRateLimit limit = {.ops = {.size = 1, .refill_time_ms = 5}};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 0);
    g_assert_cmpuint(drain(&limiter, 4096, 0, 2 * G_USEC_PER_SEC, NULL), ==, 401);
}

static void test_request_larger_than_bucket(void)
{
    MvmRateLimit limit = {.bandwidth = {.size = 1000, .refill_time_ms = 1}};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 0);
    /* It goes, and the next waits until its debt is paid: 9,000 bytes at 1,000 per ms. */
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 0);
    mvm_rate_limiter_consume(&limiter, 10000, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 9000);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 8999), ==, 1);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 9000), ==, 0);
}

static void test_one_time_burst(void)
{
    MvmRateLimit limit = {.bandwidth = {.size = 1000, .one_time_burst = 5000, .refill_time_ms = 1}};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 0);
    /* The burst and the full bucket go at once; then the refill's rate. */
    for (int i = 0; i < 6; i++) {
        g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 0);
        mvm_rate_limiter_consume(&limiter, 1000, 0);
    }
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 0); /* the bucket is at 0 */
    mvm_rate_limiter_consume(&limiter, 1000, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 1000);
}

static void test_idle_fills_only_the_bucket(void)
{
    MvmRateLimit limit = {.bandwidth = {.size = 1000, .refill_time_ms = 1000}};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 0);
    mvm_rate_limiter_consume(&limiter, 1000, 0);
    /* A day idle gives one bucket, not a day's worth: the second request waits. */
    gint64 day = (gint64)24 * 3600 * G_USEC_PER_SEC;
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, day), ==, 0);
    mvm_rate_limiter_consume(&limiter, 1000, day);
    mvm_rate_limiter_consume(&limiter, 1, day);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, day), ==, 1000);
    /* A clock that goes back adds nothing. */
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 1000);
}

static void test_no_limit(void)
{
    MvmRateLimit limit = {0};
    MvmRateLimiter limiter;

    mvm_rate_limiter_init(&limiter, &limit, 0);
    for (int i = 0; i < 1000; i++)
        mvm_rate_limiter_consume(&limiter, G_MAXUINT32, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, 0);
}

/* The largest values the checks allow neither overflow nor lose the rate. */
static void test_extremes(void)
{
    MvmRateLimit limit = {.bandwidth = {.size = 1ULL << 50,
                                        .one_time_burst = 1ULL << 50,
                                        .refill_time_ms = 24 * 3600 * 1000ULL},
                          .ops = {.size = 1, .refill_time_ms = 24 * 3600 * 1000ULL}};
    MvmRateLimiter limiter;

    g_assert_true(mvm_rate_limit_validate(&limit, "disk 0", NULL));
    mvm_rate_limiter_init(&limiter, &limit, 0);
    mvm_rate_limiter_consume(&limiter, G_MAXUINT64 / 2, 0);
    mvm_rate_limiter_consume(&limiter, G_MAXUINT64 / 2, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), >, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, G_MAXINT64), ==, 0);

    /* A debt whose wait does not fit in a gint64 waits as long as one can, never less. */
    MvmRateLimit tiny = {.bandwidth = {.size = 1, .refill_time_ms = 24 * 3600 * 1000ULL}};
    mvm_rate_limiter_init(&limiter, &tiny, 0);
    mvm_rate_limiter_consume(&limiter, 1ULL << 40, 0);
    g_assert_cmpint(mvm_rate_limiter_wait_us(&limiter, 0), ==, G_MAXINT64);
}

static void test_validate(void)
{
    static const struct {
        MvmTokenBucketConfig bucket;
        const char *message;
    } bad[] = {
        {{.size = 0, .refill_time_ms = 10}, "needs a size"},
        {{.size = 0, .one_time_burst = 1}, "needs a size"},
        {{.size = 10, .refill_time_ms = 0}, "refill time is 1 to"},
        {{.size = 10, .refill_time_ms = 24 * 3600 * 1000ULL + 1}, "refill time is 1 to"},
        {{.size = (1ULL << 50) + 1, .refill_time_ms = 1}, "at most"},
        {{.size = 1, .one_time_burst = (1ULL << 50) + 1, .refill_time_ms = 1}, "at most"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        for (guint ops = 0; ops < 2; ops++) {
            MvmRateLimit limit = {0};
            g_autoptr(GError) error = NULL;

            *(ops ? &limit.ops : &limit.bandwidth) = bad[i].bucket;
            g_assert_false(mvm_rate_limit_validate(&limit, "disk 3", &error));
            g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
            g_assert_true(g_str_has_prefix(error->message, "disk 3: "));
            g_assert_nonnull(strstr(error->message, bad[i].message));
            g_assert_nonnull(strstr(error->message, ops ? "operations" : "bandwidth"));
        }
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/token-bucket/bandwidth-rate", test_bandwidth_rate);
    g_test_add_func("/token-bucket/ops-rate", test_ops_rate);
    g_test_add_func("/token-bucket/request-larger-than-bucket", test_request_larger_than_bucket);
    g_test_add_func("/token-bucket/one-time-burst", test_one_time_burst);
    g_test_add_func("/token-bucket/idle-fills-only-the-bucket", test_idle_fills_only_the_bucket);
    g_test_add_func("/token-bucket/no-limit", test_no_limit);
    g_test_add_func("/token-bucket/extremes", test_extremes);
    g_test_add_func("/token-bucket/validate", test_validate);
    return g_test_run();
}
