/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Diff snapshots through microvmd on a private bus: VM.Snapshot's `track-changes` and
 * `diff-base`, GetStats' `diff-parent`, and RestoreVM's `layers` and `track-changes`, with the
 * pattern test guest (tests/testguest/README.md), whose count lives in its memory: a chain
 * restored goes on counting from the top snapshot, and a page that came out wrong would print
 * FAIL. Needs a usable /dev/kvm and the test guest (else exit 77).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include "harness.h"

#define ERR "org.microvmd.MicroVM1.Error."
/* lib/include/microvm.h: a snapshot's ID is the SHA-256 its `state` ends with. */
#define ID_SIZE 32
/* MVM_SNAPSHOT_MAX_LAYERS: a base and at most this many diffs, the top one included. */
#define MAX_LAYERS 64
/* 64 pattern pages at 8 MiB: 256 KiB a full snapshot holds and a diff does not. */
#define PATTERN "pattern pages=64 base_mib=8 every=20 delay=2000"

static const char *testguest;

typedef struct {
    MvmdTestBus *bus;
    MvmdManager *manager;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    const char *const args[] = {"--shutdown-timeout=2", NULL};

    f->bus = mvmd_test_bus_new();
    mvmd_test_bus_start_daemon(f->bus, args);
    f->manager = mvmd_test_bus_manager(f->bus, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_clear_object(&f->manager);
    if (f->bus->daemon_pid > 0)
        g_assert_cmpint(mvmd_test_bus_stop_daemon(f->bus, 60), ==, 0);
    mvmd_test_bus_free(f->bus);
}

/* ---- calls -------------------------------------------------------------------------------- */

static MvmdVm *create_pattern(Fixture *f, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *text = g_strdup_printf("{'kernel': <'%s'>, 'cmdline': <'mode=" PATTERN "'>, "
                                            "'debug-exit': <true>, 'memory-mib': <uint64 16>}",
                                            testguest);

    mvmd_manager_call_create_vm_sync(f->manager, name, mvmd_test_config(text),
                                     G_DBUS_CALL_FLAGS_NONE, -1, NULL, &path, NULL, NULL, &error);
    g_assert_no_error(error);
    return mvmd_test_bus_vm(f->bus, NULL, path);
}

/* GetStats' `diff-parent`. */
static char *stats_diff_parent(MvmdVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) stats = NULL;
    const char *parent = NULL;

    mvmd_vm_call_get_stats_sync(vm, G_DBUS_CALL_FLAGS_NONE, -1, &stats, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(g_variant_lookup(stats, "diff-parent", "&s", &parent));
    return g_strdup(parent);
}

/* ---- the console ---------------------------------------------------------------------------- */

/* Reads COUNTER lines until one is above @count; returns it. */
static gint64 counter_above(MvmdTestConsole *c, gint64 count)
{
    gint64 n;

    while ((n = mvmd_test_console_next_counter(c)) <= count)
        ;
    return n;
}

/* ---- snapshot files ----------------------------------------------------------------------- */

/* DIR/state and DIR/memory of a snapshot under the test's directory. */
typedef struct {
    char *dir;
    char *state;
    char *memory;
} Snap;

static Snap *snap_new(Fixture *f, const char *name)
{
    Snap *s = g_new0(Snap, 1);

    s->dir = g_build_filename(f->bus->tmpdir, name, NULL);
    s->state = g_build_filename(s->dir, "state", NULL);
    s->memory = g_build_filename(s->dir, "memory", NULL);
    g_assert_cmpint(g_mkdir(s->dir, 0700), ==, 0);
    return s;
}

static void snap_free(Snap *s)
{
    g_free(s->dir);
    g_free(s->state);
    g_free(s->memory);
    g_free(s);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Snap, snap_free)

/* The snapshot's ID as D-Bus writes it: its state's last 32 bytes in lowercase hex. */
static char *snap_id(const Snap *s)
{
    g_autofree char *data = NULL;
    GString *hex = g_string_new(NULL);
    gsize len;

    g_assert_true(g_file_get_contents(s->state, &data, &len, NULL));
    g_assert_cmpuint(len, >, ID_SIZE);
    for (gsize i = len - ID_SIZE; i < len; i++)
        g_string_append_printf(hex, "%02x", (guint8)data[i]);
    return g_string_free(hex, FALSE);
}

/* Disk space the file takes (its allocated blocks), in bytes. */
static guint64 allocated(const char *path)
{
    struct stat st;

    g_assert_cmpint(stat(path, &st), ==, 0);
    return (guint64)st.st_blocks * 512;
}

/*
 * Snapshot into @s as a caller other than root does: files created here, passed open as
 * `state-fd` and `memory-fd`, with @extra (GVariant text of more entries, or NULL).
 */
static gboolean snapshot_files(MvmdVm *vm, const Snap *s, const char *extra, GError **error)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autofree char *options =
        g_strdup_printf("('', {'state-fd': <handle 0>, 'memory-fd': <handle 1>%s%s})",
                        extra ? ", " : "", extra ? extra : "");

    g_unlink(s->state);
    g_unlink(s->memory);
    mvmd_test_fd_list_append_file(fds, s->state, O_RDWR | O_CREAT | O_EXCL);
    mvmd_test_fd_list_append_file(fds, s->memory, O_RDWR | O_CREAT | O_EXCL);
    return mvmd_test_vm_call(vm, "Snapshot", g_variant_new_parsed(options), fds, error);
}

/* A Snapshot to @dir (root's way) with the options @options (GVariant text). */
static gboolean snapshot_dir(MvmdVm *vm, const char *dir, const char *options, GError **error)
{
    return mvmd_test_vm_call(
        vm, "Snapshot", g_variant_new("(s@a{sv})", dir, mvmd_test_config(options)), NULL, error);
}

static gboolean snapshot_diff(MvmdVm *vm, const Snap *s, const char *base, GError **error)
{
    g_autofree char *extra = g_strdup_printf("'diff-base': <'%s'>", base);

    return snapshot_files(vm, s, extra, error);
}

/*
 * RestoreVM of @top (its files as `state-fd` and `memory-fd`) with the @n snapshots of
 * @layers beneath it in `layers` (each pair once in the message, used @repeat times in a row),
 * resumed, with @extra entries (GVariant text, or NULL). Returns the path, or NULL and @error.
 */
static char *restore(Fixture *f, const char *name, const Snap *top, const Snap *const *layers,
                     guint n, guint repeat, const char *extra, GError **error)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GVariant) base = g_variant_ref_sink(mvmd_test_config(extra ? extra : "{}"));
    GVariantDict options;
    GVariantBuilder b;
    char *path = NULL;

    g_variant_dict_init(&options, base);
    mvmd_test_fd_list_append_file(fds, top->state, O_RDONLY | O_NONBLOCK);
    mvmd_test_fd_list_append_file(fds, top->memory, O_RDONLY | O_NONBLOCK);
    g_variant_dict_insert(&options, "state-fd", "h", 0);
    g_variant_dict_insert(&options, "memory-fd", "h", 1);
    g_variant_dict_insert(&options, "resume", "b", TRUE);
    g_variant_builder_init(&b, G_VARIANT_TYPE("a(hh)"));
    for (guint i = 0; i < n; i++) {
        mvmd_test_fd_list_append_file(fds, layers[i]->state, O_RDONLY | O_NONBLOCK);
        mvmd_test_fd_list_append_file(fds, layers[i]->memory, O_RDONLY | O_NONBLOCK);
        for (guint r = 0; r < repeat; r++)
            g_variant_builder_add(&b, "(hh)", 2 + 2 * i, 3 + 2 * i);
    }
    if (n > 0)
        g_variant_dict_insert_value(&options, "layers", g_variant_builder_end(&b));
    else
        g_variant_builder_clear(&b);
    mvmd_manager_call_restore_vm_sync(f->manager, name, "", g_variant_dict_end(&options),
                                      G_DBUS_CALL_FLAGS_NONE, MVMD_TEST_GUEST_TIMEOUT_MS, fds,
                                      &path, NULL, NULL, error);
    return path;
}

/* How many of the daemon's descriptors are open on @path. */
static guint daemon_fds_on(Fixture *f, const char *path)
{
    g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd", f->bus->daemon_pid);
    g_autoptr(GDir) dir = g_dir_open(fd_dir, 0, NULL);
    const char *entry;
    guint n = 0;

    g_assert_nonnull(dir);
    while ((entry = g_dir_read_name(dir))) {
        g_autofree char *link = g_build_filename(fd_dir, entry, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);

        n += target && g_str_equal(target, path);
    }
    return n;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* What the tests share: a full snapshot with tracking, a diff of it and a diff of that. */
typedef struct {
    Snap *full, *diff1, *diff2;
    char *full_id, *diff1_id, *diff2_id;
    gint64 at_diff2; /* the last count the guest printed before diff2 */
} Chain;

static void chain_clear(Chain *c)
{
    g_clear_pointer(&c->full, snap_free);
    g_clear_pointer(&c->diff1, snap_free);
    g_clear_pointer(&c->diff2, snap_free);
    g_free(c->full_id);
    g_free(c->diff1_id);
    g_free(c->diff2_id);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Chain, chain_clear)

/*
 * Before tracking: a diff is InvalidState, a malformed base InvalidArgument, whatever the base.
 * Then the chain, the guest counting on between the snapshots; a base other than the last
 * snapshot is refused naming the right one, and changes nothing.
 */
static void take_chain(Fixture *f, MvmdVm *vm, Chain *chain)
{
    g_autofree char *zeros = g_strnfill(2 * ID_SIZE, '0');
    g_autofree char *upper = NULL;
    g_autofree char *parent = NULL;
    g_autofree char *refused = NULL;
    g_autoptr(GError) error = NULL;
    MvmdTestConsole *c = mvmd_test_console_open(vm);
    gint64 at;

    chain->full = snap_new(f, "full");
    chain->diff1 = snap_new(f, "diff1");
    chain->diff2 = snap_new(f, "diff2");
    at = mvmd_test_console_next_counter(c);
    parent = stats_diff_parent(vm);
    g_assert_cmpstr(parent, ==, "");
    snapshot_diff(vm, chain->diff1, zeros, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidState",
                                     "take a snapshot with 'track-changes' first");
    g_clear_error(&error);
    for (const char *const *bad = (const char *const[]){"", "xyz", "00", NULL}; *bad; bad++) {
        snapshot_diff(vm, chain->diff1, *bad, &error);
        mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "option 'diff-base'");
        g_clear_error(&error);
    }

    /* The base, by path as root takes it: from now on the guest's writes are tracked. */
    snapshot_dir(vm, chain->full->dir, "{'track-changes': <true>}", &error);
    g_assert_no_error(error);
    chain->full_id = snap_id(chain->full);
    g_free(parent);
    parent = stats_diff_parent(vm);
    g_assert_cmpstr(parent, ==, chain->full_id);
    upper = g_ascii_strup(chain->full_id, -1);
    snapshot_diff(vm, chain->diff1, upper, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "option 'diff-base'");
    g_clear_error(&error);

    at = counter_above(c, at);
    snapshot_diff(vm, chain->diff1, chain->full_id, &error);
    g_assert_no_error(error);
    chain->diff1_id = snap_id(chain->diff1);
    g_assert_cmpstr(chain->diff1_id, !=, chain->full_id);

    /* The full one is no longer the last snapshot. */
    at = counter_above(c, at);
    snapshot_diff(vm, chain->diff2, chain->full_id, &error);
    refused = g_strdup_printf("a diff of this VM can only be against its last snapshot, ID %s",
                              chain->diff1_id);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", refused);
    g_assert_nonnull(strstr(error->message, chain->full_id));
    g_clear_error(&error);
    g_free(parent);
    parent = stats_diff_parent(vm);
    g_assert_cmpstr(parent, ==, chain->diff1_id);

    chain->at_diff2 = counter_above(c, at);
    snapshot_diff(vm, chain->diff2, chain->diff1_id, &error);
    g_assert_no_error(error);
    chain->diff2_id = snap_id(chain->diff2);
    g_free(parent);
    parent = stats_diff_parent(vm);
    g_assert_cmpstr(parent, ==, chain->diff2_id);
    g_test_message("count %" G_GINT64_FORMAT " before the second diff", chain->at_diff2);
    mvmd_test_console_close(c);
}

/* A diff holds the pages changed since its parent, the full snapshot every page in use. */
static void check_sizes(const Chain *chain)
{
    guint64 full = allocated(chain->full->memory);
    guint64 diff1 = allocated(chain->diff1->memory);
    guint64 diff2 = allocated(chain->diff2->memory);

    g_test_message("memory files: full %" G_GUINT64_FORMAT
                   " bytes allocated, diffs %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT,
                   full, diff1, diff2);
    g_assert_cmpuint(diff1, <, full);
    g_assert_cmpuint(diff2, <, full);
    /* At least the 256 KiB of pattern pages, which the guest never writes again. */
    g_assert_cmpuint(full - diff1, >=, 256 * 1024);
    g_assert_cmpuint(full - diff2, >=, 256 * 1024);
}

/* Restores that must fail, and leave none of their descriptors open in the daemon. */
static void restore_refusals(Fixture *f, const Chain *chain)
{
    const Snap *right[] = {chain->full, chain->diff1};
    const Snap *wrong[] = {chain->diff1, chain->full};
    g_autofree char *fifo_path = g_build_filename(f->bus->tmpdir, "fifo", NULL);
    Snap fifo = {NULL, fifo_path, chain->full->memory};
    const Snap *fifo_layers[] = {&fifo, chain->diff1};
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    path = restore(f, "no-layers", chain->diff2, NULL, 0, 1, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", NULL);
    g_clear_error(&error);
    path =
        restore(f, "no-layers-copied", chain->diff2, NULL, 0, 1, "{'copy-memory': <true>}", &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", NULL);
    g_clear_error(&error);
    path = restore(f, "wrong-order", chain->diff2, wrong, 2, 1, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", NULL);
    g_clear_error(&error);
    path = restore(f, "too-short", chain->diff2, right + 1, 1, 1, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", NULL);
    g_clear_error(&error);
    path = restore(f, "under-full", chain->full, right, 1, 1, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", NULL);
    g_clear_error(&error);
    /* 64 layers (one pair named 64 times): refused before a descriptor is looked at. */
    path = restore(f, "deep", chain->diff2, right, 1, MAX_LAYERS, NULL, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "option 'layers': 64 snapshots");
    g_clear_error(&error);
    path = restore(f, "typed", chain->diff2, NULL, 0, 1, "{'layers': <[(0, 1)]>}", &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidArgument", "option 'layers'");
    g_clear_error(&error);
    /* Each layer's files are checked as 'state-fd' and 'memory-fd' are: a FIFO is no file. */
    g_assert_cmpint(mkfifo(fifo.state, 0600), ==, 0);
    path = restore(f, "fifo", chain->diff2, fifo_layers, 2, 1, NULL, &error);
    mvmd_test_assert_dbus_error_says(
        error, ERR "InvalidArgument",
        "option 'layers[0].state': the descriptor is not a regular file");
    g_clear_error(&error);
    g_assert_null(path);
    mvmd_test_wait_until(daemon_fds_on(f, chain->full->memory) == 0 &&
                             daemon_fds_on(f, chain->diff1->state) == 0 &&
                             daemon_fds_on(f, chain->diff2->memory) == 0,
                         10000);
}

/*
 * A pattern guest snapshotted with tracking, then twice as a diff (by fds, as a caller other
 * than root does), each against the last; the top diff restored with its two layers goes on
 * counting from there with every page right, as a VM that tracks changes itself (a diff of it
 * against the top one works), and again after Stop and Start; the definition keeps the layers'
 * descriptors until the VM is deleted.
 */
static void test_chain(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_pattern(f, "orig");
    g_auto(Chain) chain = {NULL};
    const Snap *layers[2];
    g_autoptr(Snap) diff3 = NULL;
    g_autoptr(MvmdVm) copy = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *parent = NULL;
    GVariant *config;
    guint32 n_layers = 0;
    gboolean tracking = FALSE, copied = FALSE;
    MvmdTestConsole *c;
    gint64 after;

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    take_chain(f, vm, &chain);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");
    parent = stats_diff_parent(vm);
    g_assert_cmpstr(parent, ==, "");
    check_sizes(&chain);
    restore_refusals(f, &chain);

    layers[0] = chain.full;
    layers[1] = chain.diff1;
    path = restore(f, "copy", chain.diff2, layers, 2, 1, "{'track-changes': <true>}", &error);
    g_assert_no_error(error);
    copy = mvmd_test_bus_vm(f->bus, NULL, path);
    mvmd_test_vm_wait_state(copy, "running");
    c = mvmd_test_console_open(copy);
    after = mvmd_test_console_next_counter(c);
    g_test_message("count %" G_GINT64_FORMAT " after the restore", after);
    g_assert_cmpint(after, >, chain.at_diff2);
    mvmd_test_console_next_counter(c); /* and on, every page still right */
    config = mvmd_test_vm_config(copy);
    g_assert_true(g_variant_lookup(config, "layers", "u", &n_layers));
    g_assert_true(g_variant_lookup(config, "track-changes", "b", &tracking));
    g_assert_true(g_variant_lookup(config, "copy-memory", "b", &copied));
    g_assert_cmpuint(n_layers, ==, 2);
    g_assert_true(tracking);
    g_assert_true(copied);

    /* Restored with tracking: its next diff has the top snapshot as parent. */
    g_free(parent);
    parent = stats_diff_parent(copy);
    g_assert_cmpstr(parent, ==, chain.diff2_id);
    diff3 = snap_new(f, "diff3");
    snapshot_diff(copy, diff3, chain.diff2_id, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(allocated(diff3->memory), <, allocated(chain.full->memory));
    mvmd_test_console_next_counter(c);
    mvmd_test_console_close(c);

    /* Stop and Start restore the same chain again, from the same descriptors. */
    g_assert_cmpuint(daemon_fds_on(f, chain.full->memory), >, 0);
    g_assert_cmpuint(daemon_fds_on(f, chain.diff1->state), >, 0);
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
    mvmd_test_vm_call_ok(copy, "Start", NULL);
    mvmd_test_vm_wait_state(copy, "running");
    c = mvmd_test_console_open(copy);
    after = mvmd_test_console_next_counter(c);
    g_assert_cmpint(after, >, chain.at_diff2);
    mvmd_test_console_next_counter(c);
    mvmd_test_console_close(c);

    /* The layers' descriptors go with the definition. */
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
    mvmd_test_vm_call_ok(copy, "Delete", NULL);
    mvmd_test_wait_until(
        daemon_fds_on(f, chain.full->memory) == 0 && daemon_fds_on(f, chain.full->state) == 0 &&
            daemon_fds_on(f, chain.diff1->memory) == 0 && daemon_fds_on(f, chain.diff2->state) == 0,
        10000);
}

/*
 * A VM restored without `track-changes` tracks nothing: a diff of it is InvalidState, and
 * GetStats shows no parent; Snapshot with `track-changes` turns it on there.
 */
static void test_restore_without_tracking(Fixture *f, gconstpointer data)
{
    g_autoptr(MvmdVm) vm = create_pattern(f, "orig");
    g_autoptr(Snap) full = snap_new(f, "full");
    g_autoptr(Snap) diff = snap_new(f, "diff");
    g_autoptr(Snap) again = snap_new(f, "again");
    g_autoptr(MvmdVm) copy = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *full_id = NULL;
    g_autofree char *parent = NULL;
    g_autofree char *again_id = NULL;
    MvmdTestConsole *c = mvmd_test_console_open(vm);

    mvmd_test_vm_call_ok(vm, "Start", NULL);
    mvmd_test_console_next_counter(c);
    mvmd_test_console_close(c);
    g_assert_true(snapshot_files(vm, full, "'track-changes': <true>", &error));
    g_assert_no_error(error);
    full_id = snap_id(full);
    mvmd_test_vm_call_ok(vm, "Stop", NULL);
    mvmd_test_vm_wait_state(vm, "stopped");

    path = restore(f, "copy", full, NULL, 0, 1, NULL, &error);
    g_assert_no_error(error);
    copy = mvmd_test_bus_vm(f->bus, NULL, path);
    mvmd_test_vm_wait_state(copy, "running");
    parent = stats_diff_parent(copy);
    g_assert_cmpstr(parent, ==, "");
    snapshot_diff(copy, diff, full_id, &error);
    mvmd_test_assert_dbus_error_says(error, ERR "InvalidState",
                                     "take a snapshot with 'track-changes' first");
    g_clear_error(&error);
    g_assert_true(snapshot_files(copy, again, "'track-changes': <true>", &error));
    g_assert_no_error(error);
    again_id = snap_id(again);
    g_free(parent);
    parent = stats_diff_parent(copy);
    g_assert_cmpstr(parent, ==, again_id);
    g_assert_true(snapshot_diff(copy, diff, again_id, &error));
    g_assert_no_error(error);
    mvmd_test_vm_call_ok(copy, "Stop", NULL);
    mvmd_test_vm_wait_state(copy, "stopped");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    testguest = mvmd_test_guest_or_skip();
    g_test_add("/daemon-diff/chain", Fixture, NULL, fixture_setup, test_chain, fixture_teardown);
    g_test_add("/daemon-diff/restore-without-tracking", Fixture, NULL, fixture_setup,
               test_restore_without_tracking, fixture_teardown);
    return g_test_run();
}
