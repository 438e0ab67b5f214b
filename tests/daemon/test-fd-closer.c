/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The closer thread (daemon/fd-closer.c) closes what it is handed, all of it, and never makes
 * the caller wait: each pipe's write end handed over reaches end of file at its read end.
 */
#include <fcntl.h>
#include <unistd.h>

#include <glib.h>

#include "fd-closer.h"

#define ROUNDS    40
#define PER_ROUND 100

static void test_closes_everything(void)
{
    g_autoptr(GError) error = NULL;
    char byte;

    g_assert_true(mvmd_fd_closer_start(&error));
    g_assert_no_error(error);
    mvmd_close_later(-1); /* nothing to close: ignored */
    for (int round = 0; round < ROUNDS; round++) {
        int readers[PER_ROUND];

        for (int i = 0; i < PER_ROUND; i++) {
            int fds[2];

            g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
            readers[i] = fds[0];
            mvmd_close_later(fds[1]);
        }
        /* A blocking read ends only when the last write end is closed. */
        for (int i = 0; i < PER_ROUND; i++) {
            g_assert_cmpint(read(readers[i], &byte, 1), ==, 0);
            close(readers[i]);
        }
    }
}

static void test_clear(void)
{
    int fds[2];
    char byte;

    g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
    mvmd_clear_fd_later(&fds[1]);
    g_assert_cmpint(fds[1], ==, -1);
    g_assert_cmpint(read(fds[0], &byte, 1), ==, 0);
    mvmd_clear_fd_later(&fds[1]); /* again: -1 stays -1, nothing closed */
    g_assert_cmpint(fds[1], ==, -1);
    close(fds[0]);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fd-closer/closes-everything", test_closes_everything);
    g_test_add_func("/fd-closer/clear", test_clear);
    return g_test_run();
}
