/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The console's host side without a VM: console.log bounded at 1 MiB and rotated to
 * console.log.1, the 64 KiB backlog replayed to each new client, output fanned out to several
 * clients, input from any client, a client that stops reading dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "console.h"

#define MIB (1024 * 1024)

typedef struct {
    char *dir;
    char *log_dir;
    MvmdConsole *console;
    GByteArray *stream; /* everything fed, for comparison */
    GByteArray *input;  /* what the clients typed */
} Fixture;

static void on_input(const guint8 *data, gsize len, gpointer user_data)
{
    Fixture *f = user_data;

    g_byte_array_append(f->input, data, len);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->dir = g_dir_make_tmp("mvmd-console-XXXXXX", NULL);
    f->log_dir = g_build_filename(f->dir, "vm", "con", NULL);
    f->console = mvmd_console_new("con", f->log_dir, NULL, on_input, f);
    f->stream = g_byte_array_new();
    f->input = g_byte_array_new();
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_autofree char *vm_dir = g_path_get_dirname(f->log_dir);

    mvmd_console_close(f->console, TRUE);
    mvmd_console_unref(f->console);
    /* Pending idle flushes hold references: let them run. */
    while (g_main_context_iteration(NULL, FALSE))
        ;
    g_assert_false(g_file_test(f->log_dir, G_FILE_TEST_EXISTS));
    g_rmdir(vm_dir); /* the parent of log_dir */
    g_rmdir(f->dir);
    g_byte_array_unref(f->stream);
    g_byte_array_unref(f->input);
    g_free(f->log_dir);
    g_free(f->dir);
}

/* Feeds @len bytes of a recognisable, position-dependent pattern. */
static void feed(Fixture *f, gsize len)
{
    g_autofree guint8 *chunk = g_malloc(len);

    for (gsize i = 0; i < len; i++)
        chunk[i] = (guint8)("0123456789abcdef\n"[(f->stream->len + i) % 17]);
    g_byte_array_append(f->stream, chunk, len);
    /* As the vCPU threads do: batched, delivered from the main loop. */
    mvmd_console_feed(f->console, chunk, len);
    while (g_main_context_iteration(NULL, FALSE))
        ;
}

/* Reads what @fd has until @want bytes arrived (running the main loop meanwhile). */
static GByteArray *read_n(int fd, gsize want)
{
    GByteArray *got = g_byte_array_new();
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (got->len < want && g_get_monotonic_time() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        guint8 buf[16384];
        ssize_t n;

        g_main_context_iteration(NULL, FALSE);
        if (poll(&p, 1, 10) <= 0)
            continue;
        n = read(fd, buf, MIN(sizeof(buf), want - got->len));
        g_assert_cmpint(n, >, 0);
        g_byte_array_append(got, buf, n);
    }
    g_assert_cmpuint(got->len, ==, want);
    return got;
}

static gsize file_size(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    GStatBuf st;

    return g_stat(path, &st) == 0 ? (gsize)st.st_size : 0;
}

static void test_log_rotation(Fixture *f, gconstpointer data)
{
    g_autofree char *log1 = g_build_filename(f->log_dir, "console.log.1", NULL);
    g_autofree char *contents = NULL;
    gsize len;

    for (int i = 0; i < 10; i++)
        feed(f, MIB / 4); /* 2.5 MiB: rotated twice */
    g_assert_cmpuint(file_size(f->log_dir, "console.log"), ==, MIB / 2);
    g_assert_cmpuint(file_size(f->log_dir, "console.log.1"), ==, MIB);
    /* console.log.1 holds the second MiB, console.log what came after. */
    g_assert_true(g_file_get_contents(log1, &contents, &len, NULL));
    g_assert_cmpmem(contents, len, f->stream->data + MIB, MIB);
}

static void test_backlog_and_clients(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) replay1 = NULL, replay2 = NULL, live1 = NULL, live2 = NULL;
    int c1, c2;

    feed(f, 100 * 1024);
    c1 = mvmd_console_attach(f->console, NULL);
    c2 = mvmd_console_attach(f->console, NULL);
    g_assert_cmpint(c1, >=, 0);
    g_assert_cmpint(c2, >=, 0);
    g_assert_cmpuint(mvmd_console_get_n_clients(f->console), ==, 2);
    /* Each late client first gets exactly the last 64 KiB. */
    replay1 = read_n(c1, MVMD_CONSOLE_RING_SIZE);
    replay2 = read_n(c2, MVMD_CONSOLE_RING_SIZE);
    g_assert_cmpmem(replay1->data, replay1->len,
                    f->stream->data + f->stream->len - MVMD_CONSOLE_RING_SIZE,
                    MVMD_CONSOLE_RING_SIZE);
    g_assert_cmpmem(replay2->data, replay2->len, replay1->data, replay1->len);
    /* Then both get the live output. */
    feed(f, 5000);
    live1 = read_n(c1, 5000);
    live2 = read_n(c2, 5000);
    g_assert_cmpmem(live1->data, live1->len, f->stream->data + f->stream->len - 5000, 5000);
    g_assert_cmpmem(live2->data, live2->len, live1->data, live1->len);
    /* Input from either client. */
    g_assert_cmpint(write(c1, "ab", 2), ==, 2);
    g_assert_cmpint(write(c2, "cd", 2), ==, 2);
    for (int i = 0; i < 1000 && f->input->len < 4; i++) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    g_assert_cmpuint(f->input->len, ==, 4);
    /* A client that hangs up is forgotten. */
    close(c2);
    for (int i = 0; i < 1000 && mvmd_console_get_n_clients(f->console) > 1; i++) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    g_assert_cmpuint(mvmd_console_get_n_clients(f->console), ==, 1);
    close(c1);
}

/* A client that never reads is dropped once more than 1 MiB waits for it; others go on. */
static void test_slow_client_dropped(Fixture *f, gconstpointer data)
{
    int slow = mvmd_console_attach(f->console, NULL);
    int fast = mvmd_console_attach(f->console, NULL);
    gsize total = 0;

    for (int i = 0; i < 12 && mvmd_console_get_n_clients(f->console) == 2; i++) {
        g_autoptr(GByteArray) got = NULL;

        feed(f, 256 * 1024);
        total += 256 * 1024;
        got = read_n(fast, 256 * 1024);
    }
    g_assert_cmpuint(mvmd_console_get_n_clients(f->console), ==, 1);
    g_assert_cmpuint(total, >, MVMD_CONSOLE_CLIENT_MAX);
    close(slow);
    close(fast);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add("/console/log-rotation", Fixture, NULL, fixture_setup, test_log_rotation,
               fixture_teardown);
    g_test_add("/console/backlog-and-clients", Fixture, NULL, fixture_setup,
               test_backlog_and_clients, fixture_teardown);
    g_test_add("/console/slow-client-dropped", Fixture, NULL, fixture_setup,
               test_slow_client_dropped, fixture_teardown);
    return g_test_run();
}
