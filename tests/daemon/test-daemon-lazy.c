/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restores through microvmd on a private bus: RestoreVM's `lazy` and `working-set`,
 * VM.SaveWorkingSet, GetStats' `lazy-pages-read` and `lazy-pages-total`, with the pattern test
 * guest (tests/testguest/README.md), whose count lives in its memory: a guest restored lazily
 * goes on counting from the snapshot, and a page that came in wrong would print FAIL. Where
 * the daemon gets no userfaultfd (no `lazy-restore` capability) the restores themselves are
 * skipped and `lazy` must be NotSupported. Needs a usable /dev/kvm and the test guest (else
 * exit 77).
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include "harness.h"

#define ERR     "org.microvmd.MicroVM1.Error."
#define PATTERN "pattern pages=64 base_mib=8 every=20 delay=2000"
/* lib/working-set.c: a working set file starts with this magic, its NUL included. */
#define WSET_MAGIC     "MVMWSET"
#define WSET_MAGIC_LEN 8

static const char *testguest;

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
    char *state; /* the snapshot every test restores, taken of a counting guest */
    char *memory;
    gint64 at_snapshot; /* the last count the guest printed before it */
} Fixture;

/* ---- calls -------------------------------------------------------------------------------- */

static gboolean lazy_supported(Fixture *f)
{
    const char *const *caps = mvmd_manager_get_capabilities(f->manager);

    return caps && g_strv_contains(caps, "lazy-restore");
}

/* ---- files -------------------------------------------------------------------------------- */

/*
 * RestoreVM of the fixture's snapshot (its files as `state-fd` and `memory-fd`), resumed, with
 * @extra entries (GVariant text, or NULL) and, unless NULL, @working_set as `working-set`.
 * Returns the path, or NULL and @error.
 */
static char *restore(Fixture *f, const char *name, const char *extra, const char *working_set,
                     GError **error)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GVariant) base = g_variant_ref_sink(mvmd_test_config(extra ? extra : "{}"));
    GVariantDict options;
    char *path = NULL;

    g_variant_dict_init(&options, base);
    g_variant_dict_insert(&options, "state-fd", "h",
                          mvmd_test_fd_list_append_file(fds, f->state, O_RDONLY | O_NONBLOCK));
    g_variant_dict_insert(&options, "memory-fd", "h",
                          mvmd_test_fd_list_append_file(fds, f->memory, O_RDONLY | O_NONBLOCK));
    g_variant_dict_insert(&options, "resume", "b", TRUE);
    if (working_set)
        g_variant_dict_insert(
            &options, "working-set", "h",
            mvmd_test_fd_list_append_file(fds, working_set, O_RDONLY | O_NONBLOCK));
    mvmd_manager_call_restore_vm_sync(f->manager, name, "", g_variant_dict_end(&options),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
                                      &path, NULL, NULL, error);
    return path;
}

/* SaveWorkingSet into @path, opened with @flags, with @options (GVariant text, or NULL). */
static gboolean save_working_set(MvmdVm *vm, const char *path, int flags, const char *options,
                                 GError **error)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    int index = mvmd_test_fd_list_append_file(fds, path, flags);

    return mvmd_test_vm_call(
        vm, "SaveWorkingSet",
        g_variant_new("(h@a{sv})", index, mvmd_test_config(options ? options : "{}")), fds, error);
}

/* GetStats' lazy progress; FALSE when it has none. */
static gboolean lazy_progress(MvmdVm *vm, guint64 *read, guint64 *total)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) stats = NULL;
    gboolean has_read, has_total;

    mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, &error);
    g_assert_no_error(error);
    has_read = g_variant_lookup(stats, "lazy-pages-read", "t", read);
    has_total = g_variant_lookup(stats, "lazy-pages-total", "t", total);
    g_assert_cmpint(has_read, ==, has_total);
    return has_read;
}

static char *tmp_path(Fixture *f, const char *name)
{
    return g_build_filename(f->bus->tmpdir, name, NULL);
}

/* ---- the fixture: a daemon, and a snapshot of a counting pattern guest ---------------------- */

static void take_snapshot(Fixture *f)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autofree char *path = NULL;
    g_autofree char *text = g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=" PATTERN "'>, "
                                            "'debug-exit': <true>, 'memory-mib': <uint64 16>}",
                                            testguest);
    g_autoptr(MvmdVm) vm = NULL;
    MvmdTestConsole *c;

    mvmd_manager_call_create_vm_sync(f->manager, "orig", mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    c = mvmd_test_console_open(vm);
    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_console_next_counter(c);
    f->at_snapshot = mvmd_test_console_next_counter(c);
    mvmd_test_console_close(c);
    /* As a caller other than root does: files created here, passed open. */
    f->state = tmp_path(f, "state");
    f->memory = tmp_path(f, "memory");
    mvmd_test_fd_list_append_file(fds, f->state, O_RDWR | O_CREAT | O_EXCL);
    mvmd_test_fd_list_append_file(fds, f->memory, O_RDWR | O_CREAT | O_EXCL);
    mvmd_test_vm_call(
        vm, "Snapshot",
        g_variant_new_parsed("('', {'state-fd': <handle 0>, 'memory-fd': <handle 1>})"), fds,
        &error);
    g_assert_no_error(error);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    const char *const args[] = {"--shutdown-timeout=2", NULL};

    f->bus = mvmd_test_bus_new();
    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
    take_snapshot(f);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_clear_object(&f->manager);
    if (f->bus->daemon_pid > 0)
        g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    mvmd_test_bus_free(f->bus);
    g_free(f->state);
    g_free(f->memory);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Restores that must fail before any machine is built, and leave no VM behind. */
static void lazy_refusals(Fixture *f)
{
    g_autofree char *garbage = tmp_path(f, "garbage");
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    g_assert_true(g_file_set_contents(garbage, "not a working set, not at all", -1, NULL));
    path = restore(f, "copied", "{'lazy': <true>, 'copy-memory': <true>}", NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "not with 'copy-memory'");
    g_clear_error(&error);
    path = restore(f, "no-lazy", NULL, garbage, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument",
                                     "option 'working-set': only for a lazy restore");
    g_clear_error(&error);
    path = restore(f, "layered", "{'lazy': <true>, 'layers': <@a(hh) [(0, 1)]>}", NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "not with 'layers'");
    g_clear_error(&error);
    if (lazy_supported(f)) {
        /* The library's words, on the worker: read in full, refused as no working set. */
        path = restore(f, "garbage", "{'lazy': <true>}", garbage, &error);
        mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument",
                                         "option 'working-set': invalid working set");
    } else {
        path = restore(f, "unsupported", "{'lazy': <true>}", NULL, &error);
        mvmd_test_assert_dbus_error_says(error, ERR "NotSupported",
                                         "option 'lazy': not on this host");
        g_clear_error(&error);
        path = restore(f, "garbage", "{'lazy': <true>}", garbage, &error);
        mvmd_test_assert_dbus_error_says(error, ERR "NotSupported", NULL);
    }
    g_clear_error(&error);
    g_assert_null(path);
    /* Not even the one the worker refused is left. */
    mvmd_manager_call_get_vm_by_name_sync(f->manager, "garbage", G_DBUS_CALL_FLAGS_NONE, -1, NULL,
                                          NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "NoSuchVM", NULL);
}

/*
 * (a) What is refused: `lazy` with `copy-memory` or `layers`, `working-set` without `lazy`, a
 * working set that is none (or, without userfaultfd, `lazy` at all: NotSupported); and
 * SaveWorkingSet of a VM restored the ordinary way (NotSupported), into a file not open for
 * writing, or with an option (InvalidArgument).
 */
static void test_refusals(Fixture *f, gconstpointer data)
{
    g_autofree char *ws = tmp_path(f, "ws-plain");
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autoptr(MvmdVm) plain = NULL;
    gboolean lazy = TRUE;
    guint64 read, total;

    g_test_message("lazy restore %s", lazy_supported(f) ? "supported" : "not supported");
    lazy_refusals(f);

    path = restore(f, "plain", NULL, NULL, &error);
    g_assert_no_error(error);
    plain = mvmd_test_bus_vm(f->bus, NULL, path);
    mvmd_test_vm_wait_state(plain, "running");
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(plain), "lazy", "b", &lazy));
    g_assert_false(lazy);
    g_assert_false(lazy_progress(plain, &read, &total));
    save_working_set(plain, ws, O_RDWR | O_CREAT | O_EXCL, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "NotSupported", "not restored lazily");
    g_clear_error(&error);
    save_working_set(plain, ws, O_RDONLY, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument",
                                     "argument 'fd': the file is not open for writing");
    g_clear_error(&error);
    g_unlink(ws);
    save_working_set(plain, ws, O_RDWR | O_CREAT | O_EXCL, "{'bogus': <true>}", &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "option 'bogus': unknown");
    g_clear_error(&error);
    mvmd_test_vm_call_ok(plain, "Stop", NULL);
    mvmd_test_vm_wait_state(plain, "stopped");
}

/* The first 8 bytes of the file at @path are the working set magic. */
static void assert_working_set_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(len, >, WSET_MAGIC_LEN);
    g_assert_cmpmem(data, WSET_MAGIC_LEN, WSET_MAGIC, WSET_MAGIC_LEN);
}

/* A VM restored lazily from @working_set (or NULL) runs on from the snapshot, counting. */
static MvmdVm *restore_lazy(Fixture *f, const char *name, const char *working_set)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = restore(f, name, "{'lazy': <true>}", working_set, &error);
    MvmdVm *vm;
    MvmdTestConsole *c;
    gint64 after;
    gboolean lazy = FALSE;

    g_assert_no_error(error);
    vm = mvmd_test_bus_vm(f->bus, NULL, path);
    mvmd_test_vm_wait_state(vm, "running");
    c = mvmd_test_console_open(vm);
    after = mvmd_test_console_next_counter(c);
    g_test_message("%s: count %" G_GINT64_FORMAT " after the restore, %" G_GINT64_FORMAT
                   " before the snapshot",
                   name, after, f->at_snapshot);
    g_assert_cmpint(after, >, f->at_snapshot);
    mvmd_test_console_next_counter(c); /* and on, every page still right */
    mvmd_test_console_close(c);
    g_assert_true(g_variant_lookup(mvmd_test_vm_config(vm), "lazy", "b", &lazy));
    g_assert_true(lazy);
    return vm;
}

/*
 * (b) A lazy restore runs on from the snapshot with part of its RAM read; its working set, saved
 * into a file, prefetches the next lazy restore of the same snapshot, which runs on too, as it
 * does after a Stop and Start (lazily again, without the working set).
 */
static void test_lazy(Fixture *f, gconstpointer data)
{
    g_autofree char *ws = tmp_path(f, "working-set");
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdVm) first = NULL;
    g_autoptr(MvmdVm) second = NULL;
    guint64 read = 0, total = 0;
    MvmdTestConsole *c;

    if (!lazy_supported(f)) {
        g_test_skip("the daemon gets no userfaultfd here (no 'lazy-restore' capability)");
        return;
    }
    first = restore_lazy(f, "first", NULL);
    g_assert_true(lazy_progress(first, &read, &total));
    g_test_message("first: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " pages read", read, total);
    g_assert_cmpuint(read, >, 0);
    g_assert_cmpuint(read, <=, total);
    g_assert_cmpuint(total, <=, 16 * 256); /* 16 MiB of 4 KiB pages */
    save_working_set(first, ws, O_RDWR | O_CREAT | O_EXCL, NULL, &error);
    g_assert_no_error(error);
    assert_working_set_file(ws);
    /* Never into the files of the snapshot it is restored from: each Start reads them. */
    save_working_set(first, f->state, O_RDWR, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "restored from");
    g_clear_error(&error);
    save_working_set(first, f->memory, O_RDWR, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "restored from");
    g_clear_error(&error);
    mvmd_test_vm_call_ok(first, "Stop", NULL);
    mvmd_test_vm_wait_state(first, "stopped");
    mvmd_test_vm_call_ok(first, "Delete", NULL);

    second = restore_lazy(f, "second", ws);
    g_assert_true(lazy_progress(second, &read, &total));
    g_test_message("second (prefetched): %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " pages read",
                   read, total);
    g_assert_cmpuint(read, >, 0);
    g_assert_cmpuint(read, <=, total);

    /* Stop and Start restore lazily again, from the same snapshot. */
    mvmd_test_vm_call_ok(second, "Stop", NULL);
    mvmd_test_vm_wait_state(second, "stopped");
    mvmd_test_vm_call_ok(second, "Start", NULL);
    mvmd_test_vm_wait_state(second, "running");
    c = mvmd_test_console_open(second);
    mvmd_test_console_next_counter(c);
    g_assert_cmpint(mvmd_test_console_next_counter(c), >, f->at_snapshot);
    mvmd_test_console_close(c);
    g_assert_true(lazy_progress(second, &read, &total));
    mvmd_test_vm_call_ok(second, "Stop", NULL);
    mvmd_test_vm_wait_state(second, "stopped");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    testguest = mvmd_test_guest_or_skip();
    g_test_add("/daemon-lazy/refusals", Fixture, NULL, fixture_setup, test_refusals,
               fixture_teardown);
    g_test_add("/daemon-lazy/restore", Fixture, NULL, fixture_setup, test_lazy, fixture_teardown);
    return g_test_run();
}
