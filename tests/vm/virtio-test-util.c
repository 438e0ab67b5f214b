/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the virtio tests share: test guests with their console and markers, disk images. */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "virtio-test-util.h"
#include "vm-private.h"

/* ---- a VM, what it printed (snapshot-test-util's Capture) and its markers ---- */

static void on_marker(MvmVm *vm, guint32 marker, gint64 us, gpointer user_data)
{
    Guest *g = user_data;
    gint64 pair[2] = {marker, us};

    g_mutex_lock(&g->lock);
    g_array_append_vals(g->markers, pair, 2);
    g_mutex_unlock(&g->lock);
}

MvmVmConfig *guest_config(const char *cmdline)
{
    return testguest_config(cmdline, 1, 32);
}

/* Takes @vm; captures its console and markers. */
Guest *guest_wrap(MvmVm *vm)
{
    Guest *g = g_new0(Guest, 1);

    g_mutex_init(&g->lock);
    g->console = capture_new();
    g->markers = g_array_new(FALSE, FALSE, sizeof(gint64));
    g->vm = vm;
    mvm_vm_set_console_callback(g->vm, on_console, g->console);
    mvm_vm_set_marker_callback(g->vm, on_marker, g);
    return g;
}

Guest *guest_start(const MvmVmConfig *config)
{
    g_autoptr(GError) error = NULL;
    MvmVm *vm = mvm_vm_new(config, &error);

    g_assert_no_error(error);
    Guest *g = guest_wrap(vm);
    g_assert_true(mvm_vm_start(g->vm, &error));
    return g;
}

char *guest_output(Guest *g)
{
    return capture_dup_from(g->console, 0);
}

gboolean guest_wait_for(Guest *g, const char *needle, gint64 timeout_us)
{
    return capture_wait_from(g->console, 0, needle, timeout_us);
}

/* Waits for the guest to end and checks it ended with debug exit 0; returns its output. */
char *guest_finish(Guest *g)
{
    gboolean ended = mvm_vm_wait(g->vm, GUEST_TIMEOUT_US);
    mvm_vm_stop(g->vm, NULL);
    char *out = guest_output(g);

    g_test_message("guest printed:\n%s", out);
    if (!ended)
        g_error("guest did not end; it printed:\n%s", out);
    g_assert_cmpint(mvm_vm_get_exit_kind(g->vm), ==, MVM_EXIT_DEBUG_EXIT);
    g_assert_null(strstr(out, "FAIL"));
    g_assert_cmpuint(mvm_vm_get_exit_code(g->vm), ==, 0);
    return out;
}

gint64 guest_marker_time(Guest *g, guint32 marker)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&g->lock);
    for (guint i = 0; i + 1 < g->markers->len; i += 2)
        if (g_array_index(g->markers, gint64, i) == marker)
            return g_array_index(g->markers, gint64, i + 1);
    return -1;
}

double guest_marker_span_s(Guest *g, guint32 from, guint32 to)
{
    gint64 t0 = guest_marker_time(g, from), t1 = guest_marker_time(g, to);

    g_assert_cmpint(t0, >, 0);
    g_assert_cmpint(t1, >=, t0);
    return (t1 - t0) / 1e6;
}

void guest_free(Guest *g)
{
    mvm_vm_free(g->vm);
    capture_free(g->console);
    g_array_unref(g->markers);
    g_mutex_clear(&g->lock);
    g_free(g);
}

/* One guest run from start to debug exit 0. */
char *run_guest(const MvmVmConfig *config)
{
    g_autoptr(Guest) g = guest_start(config);
    return guest_finish(g);
}

/* ---- disks ---- */

static MvmDiskConfig *disk_new(const char *path, int fd, gboolean read_only)
{
    MvmDiskConfig *d = g_new0(MvmDiskConfig, 1);

    d->path = g_strdup(path);
    d->fd = fd;
    d->read_only = read_only;
    return d;
}

void disk_free(gpointer data)
{
    MvmDiskConfig *d = data;

    g_free(d->path);
    g_free(d);
}

void add_disk(MvmVmConfig *config, const char *path, int fd, gboolean read_only)
{
    if (config->disks == NULL)
        config->disks = g_ptr_array_new_with_free_func(disk_free);
    g_ptr_array_add(config->disks, disk_new(path, fd, read_only));
}

/* A temporary raw image of @sectors sectors of random bytes; returns its path. */
char *make_image(guint sectors, GBytes **contents)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *data = g_malloc(sectors * SECTOR);
    char *path = NULL;

    for (gsize i = 0; i < sectors * SECTOR; i++)
        data[i] = (guint8)g_random_int();
    int fd = g_file_open_tmp("mvm-disk-XXXXXX.img", &path, &error);
    g_assert_no_error(error);
    g_assert_cmpint(write(fd, data, sectors * SECTOR), ==, (gssize)(sectors * SECTOR));
    close(fd);
    if (contents != NULL)
        *contents = g_bytes_new(data, sectors * SECTOR);
    return path;
}

/* ---- taps ---- */

void run_in_net_namespace(void (*func)(void))
{
    if (g_test_subprocess()) {
        g_assert_cmpint(unshare(CLONE_NEWNET), ==, 0);
        func();
        return;
    }
    if (!test_can_unshare_net()) {
        g_test_skip("cannot create a network namespace with a tap here (needs root, "
                    "/dev/net/tun and iproute2's ip)");
        return;
    }
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
}
