/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The per-VM limiter of guest-caused messages (lib/guest-log.c): what passes and what is said. */
#include "guest-log.h"

static void collect(MvmVm *vm, GLogLevelFlags level, const char *message, gpointer user_data)
{
    g_ptr_array_add(user_data, g_strdup(message));
}

/* The sum of what the "suppressed" lines say; the other lines are counted in @passed. */
static guint64 suppressed_in(GPtrArray *lines, guint *passed)
{
    guint64 sum = 0;

    *passed = 0;
    for (guint i = 0; i < lines->len; i++) {
        const char *line = lines->pdata[i];

        if (g_str_has_prefix(line, "attack "))
            (*passed)++;
        else if (g_strstr_len(line, -1, "caused by the guest suppressed"))
            sum += g_ascii_strtoull(line, NULL, 10);
    }
    return sum;
}

/* A limiter whose lines go to @lines. */
static void limiter_init(MvmGuestLog *log, GPtrArray *lines)
{
    mvm_guest_log_init(log, NULL, "the guest");
    mvm_guest_log_set_func(log, collect, lines);
}

/* "attack FROM" to "attack TO - 1" through @log. */
static void attack(MvmGuestLog *log, guint from, guint to)
{
    for (guint i = from; i < to; i++)
        mvm_guest_log(log, G_LOG_LEVEL_MESSAGE, "attack %u", i);
}

/*
 * A flood: the burst passes, the rest is counted and said once the limiter is cleared, and
 * every message is accounted for. The bucket gains one token a second while this runs, so
 * what passes is bounded by the time taken, not asserted to be exactly the burst.
 */
static void test_flood(void)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    MvmGuestLog log;
    gint64 start = g_get_monotonic_time();
    guint passed, elapsed_s;
    guint64 suppressed;

    limiter_init(&log, lines);
    attack(&log, 0, 1000);
    elapsed_s = (guint)((g_get_monotonic_time() - start) / G_USEC_PER_SEC) + 1;
    mvm_guest_log_clear(&log);

    suppressed = suppressed_in(lines, &passed);
    g_assert_cmpstr(lines->pdata[0], ==, "attack 0");
    g_assert_cmpuint(passed, >=, MVM_GUEST_LOG_BURST);
    g_assert_cmpuint(passed, <=, MVM_GUEST_LOG_BURST + elapsed_s);
    g_assert_cmpuint(passed + suppressed, ==, 1000);
    g_assert_true(g_str_has_suffix(lines->pdata[lines->len - 1], "(at most 10 at once, then one "
                                                                 "every 1 s)"));
}

/* Nothing dropped, nothing said about it. */
static void test_quiet(void)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    MvmGuestLog log;

    limiter_init(&log, lines);
    attack(&log, 0, MVM_GUEST_LOG_BURST);
    mvm_guest_log_clear(&log);
    g_assert_cmpuint(lines->len, ==, MVM_GUEST_LOG_BURST);
}

/*
 * A flush says what was dropped so far at once (a daemon exiting without freeing the limiter
 * still accounts for it); the limiter goes on counting, and a clear says only what came after.
 */
static void test_flush(void)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    MvmGuestLog log;
    guint passed, n;
    guint64 suppressed;

    limiter_init(&log, lines);
    attack(&log, 0, 100);
    mvm_guest_log_flush(&log);
    suppressed = suppressed_in(lines, &passed);
    g_assert_cmpuint(suppressed, >, 0);
    g_assert_cmpuint(passed + suppressed, ==, 100);
    n = lines->len;
    mvm_guest_log_flush(&log); /* nothing new: nothing said */
    g_assert_cmpuint(lines->len, ==, n);
    attack(&log, 100, 200);
    mvm_guest_log_clear(&log);
    suppressed = suppressed_in(lines, &passed);
    g_assert_cmpuint(passed + suppressed, ==, 200);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/guest-log/flood", test_flood);
    g_test_add_func("/guest-log/quiet", test_quiet);
    g_test_add_func("/guest-log/flush", test_flush);
    return g_test_run();
}
