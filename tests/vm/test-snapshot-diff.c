/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Diff snapshots against real KVM with the test guest's `dirty` mode, which writes exactly the
 * pages the test names: a diff holds those pages (and the guest's own, below 4 MiB) and no
 * others, names its parent by ID, and a chain of them restores to the very RAM a full snapshot
 * of the same moment holds; a chain that does not fit together is refused with the reason.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "layout.h"
#include "snapshot-test-util.h"
#include "vm-private.h"

#define MEMORY_MIB 64
#define IMAGE_END  (4 * MVM_MIB) /* the guest's image, stack and variables lie below */

static void snapshot(MvmVm *vm, const char *dir, MvmSnapshotFlags flags)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_vm_snapshot(vm, dir, flags, &error));
    g_assert_no_error(error);
}

/* The ID of @dir's snapshot, and its parent's (all zero for a full one). */
static void read_ids(const char *dir, guint8 id[MVM_SNAPSHOT_ID_SIZE],
                     guint8 parent[MVM_SNAPSHOT_ID_SIZE])
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(dir, "state", NULL);
    gboolean has_parent = FALSE;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    memset(parent, 0, MVM_SNAPSHOT_ID_SIZE);
    g_assert_true(mvm_snapshot_read_ids_fd(fd, id, parent, &has_parent, &error));
    g_assert_no_error(error);
    close(fd);
}

static GBytes *changed_pages(const char *dir)
{
    g_autoptr(GVariant) payload = snapshot_read_payload(dir);
    g_autoptr(GVariant) pages = g_variant_lookup_value(payload, "changed-pages", NULL);

    g_assert_nonnull(pages);
    return g_variant_get_data_as_bytes(pages);
}

static gboolean page_set(GBytes *bits, guint64 page)
{
    gsize len;
    const guint8 *b = g_bytes_get_data(bits, &len);

    g_assert_cmpuint(page / 8, <, len);
    return (b[page / 8] >> (page % 8)) & 1;
}

/* @bits marks every page of @want, and nothing else above the guest's image. */
static void assert_changed_exactly(GBytes *bits, const guint64 *want, guint n_want)
{
    guint64 n_pages = MEMORY_MIB * MVM_MIB / MVM_PAGE_SIZE;

    for (guint i = 0; i < n_want; i++)
        if (!page_set(bits, want[i]))
            g_error("page %" G_GUINT64_FORMAT " changed but is not in the diff", want[i]);
    for (guint64 page = IMAGE_END / MVM_PAGE_SIZE; page < n_pages; page++) {
        gboolean wanted = FALSE;
        for (guint i = 0; i < n_want; i++)
            wanted |= want[i] == page;
        if (page_set(bits, page) && !wanted)
            g_error("page %" G_GUINT64_FORMAT " is in the diff, but nothing wrote it", page);
    }
}

static guint64 word_in_file(const char *dir, guint64 gpa)
{
    g_autofree char *path = g_build_filename(dir, "memory", NULL);
    guint64 word = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, &word, sizeof(word), (off_t)gpa), ==, sizeof(word));
    close(fd);
    return word;
}

static void assert_id_equal(const guint8 *a, const guint8 *b)
{
    g_assert_cmpmem(a, MVM_SNAPSHOT_ID_SIZE, b, MVM_SNAPSHOT_ID_SIZE);
}

/*
 * The guest's writes (pages 0x1000, 0x1001 twice, 0x2000, 0x3fff) and the VMM's (a new
 * generation ID: page 0xff) are in the diff, and nothing else above the image; the diff holds
 * their new words and names the full snapshot as its parent.
 */
static void test_diff_exact_pages(void)
{
    if (!have_kvm())
        return;
    g_autoptr(GError) error = NULL;
    g_autofree char *full = make_tmpdir(), *diff = make_tmpdir();
    guint8 full_id[MVM_SNAPSHOT_ID_SIZE], diff_id[MVM_SNAPSHOT_ID_SIZE];
    guint8 parent[MVM_SNAPSHOT_ID_SIZE], now[MVM_SNAPSHOT_ID_SIZE], gen[MVM_GENERATION_ID_SIZE];
    DirtyGuest d = {0};

    dirty_start(&d, MEMORY_MIB);
    g_assert_false(mvm_vm_get_diff_parent(d.vm, now));
    snapshot(d.vm, full, MVM_SNAPSHOT_TRACK_CHANGES);
    read_ids(full, full_id, parent);
    g_assert_true(mvm_vm_get_diff_parent(d.vm, now));
    assert_id_equal(now, full_id);

    dirty_write(&d, "0x1000000 0x1001008 0x1001ff8 0x2000000 0x3fff000", 5);
    memset(gen, 0x5a, sizeof(gen));
    g_assert_true(mvm_vm_set_generation_id(d.vm, gen, &error));
    snapshot(d.vm, diff, MVM_SNAPSHOT_DIFF);
    read_ids(diff, diff_id, parent);
    assert_id_equal(parent, full_id);
    g_assert_true(mvm_vm_get_diff_parent(d.vm, now));
    assert_id_equal(now, diff_id);

    g_autoptr(GBytes) bits = changed_pages(diff);
    static const guint64 want[] = {0x1000, 0x1001, 0x2000, 0x3fff, MVM_VMGENID_ADDR / 4096};
    assert_changed_exactly(bits, want, G_N_ELEMENTS(want));
    g_assert_cmphex(word_in_file(diff, 0x1001ff8), ==, 0x1001ff8 ^ 1);
    g_assert_cmphex(word_in_file(diff, MVM_VMGENID_ADDR), ==, 0x5a5a5a5a5a5a5a5aULL);
    dirty_clear(&d);
    rm_rf(full);
    rm_rf(diff);
}

/* Every page of @vm's RAM equals @dir's `memory`, but the generation ID's (a restore's own). */
static void assert_ram_is(MvmVm *vm, const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "memory", NULL);
    g_autofree guint8 *page = g_malloc(MVM_PAGE_SIZE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    for (guint64 gpa = 0; gpa < MEMORY_MIB * MVM_MIB; gpa += MVM_PAGE_SIZE) {
        g_assert_cmpint(pread(fd, page, MVM_PAGE_SIZE, (off_t)gpa), ==, MVM_PAGE_SIZE);
        const guint8 *ram = mvm_memory_get_ptr(vm->memory, gpa, MVM_PAGE_SIZE);
        if (gpa != MVM_VMGENID_ADDR && memcmp(ram, page, MVM_PAGE_SIZE) != 0)
            g_error("page 0x%" G_GINT64_MODIFIER "x of the restored chain differs", gpa);
    }
    close(fd);
}

static MvmVm *restore_chain(const char *top, char **layer_dirs, guint n, MvmRestoreFlags flags,
                            GError **error)
{
    MvmSnapshotFiles layers[MVM_SNAPSHOT_MAX_LAYERS + 1];
    int dirfd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpuint(n, <=, G_N_ELEMENTS(layers));
    for (guint i = 0; i < n; i++) {
        g_autofree char *state = g_build_filename(layer_dirs[i], "state", NULL);
        g_autofree char *memory = g_build_filename(layer_dirs[i], "memory", NULL);
        layers[i].state_fd = open(state, O_RDONLY | O_CLOEXEC);
        layers[i].memory_fd = open(memory, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(layers[i].state_fd, >=, 0);
        g_assert_cmpint(layers[i].memory_fd, >=, 0);
    }
    const MvmRestoreOptions options = {.flags = flags, .layers = layers, .n_layers = n};
    MvmVm *vm = mvm_vm_restore_full(dirfd, -1, -1, &options, error);
    for (guint i = 0; i < n; i++) {
        close(layers[i].state_fd);
        close(layers[i].memory_fd);
    }
    close(dirfd);
    return vm;
}

typedef struct {
    char *dirs[4]; /* full, diff 1, diff 2, a full snapshot of diff 2's moment */
} Chain;

static void chain_make(Chain *ch, DirtyGuest *d)
{
    for (guint i = 0; i < G_N_ELEMENTS(ch->dirs); i++)
        ch->dirs[i] = make_tmpdir();
    dirty_start(d, MEMORY_MIB);
    snapshot(d->vm, ch->dirs[0], MVM_SNAPSHOT_TRACK_CHANGES);
    dirty_write(d, "0x1000000 0x2000000", 2);
    snapshot(d->vm, ch->dirs[1], MVM_SNAPSHOT_DIFF);
    dirty_write(d, "0x1000008 0x3000000", 2);
    snapshot(d->vm, ch->dirs[2], MVM_SNAPSHOT_DIFF | MVM_SNAPSHOT_LEAVE_PAUSED);
    snapshot(d->vm, ch->dirs[3], MVM_SNAPSHOT_LEAVE_PAUSED);
}

static void chain_clear(Chain *ch)
{
    for (guint i = 0; i < G_N_ELEMENTS(ch->dirs); i++) {
        rm_rf(ch->dirs[i]);
        g_clear_pointer(&ch->dirs[i], g_free);
    }
}

/*
 * Full, diff, diff: restored from the top with the two beneath, the RAM is the full snapshot's
 * of the same moment, page for page; the guest goes on where it was (its command count), and a
 * restore with MVM_RESTORE_TRACK_CHANGES takes the top as the parent of its diffs.
 */
static void test_diff_chain_restore(void)
{
    if (!have_kvm())
        return;
    g_autoptr(GError) error = NULL;
    DirtyGuest d = {0};
    Chain ch = {0};
    guint8 top_id[MVM_SNAPSHOT_ID_SIZE], parent[MVM_SNAPSHOT_ID_SIZE], now[MVM_SNAPSHOT_ID_SIZE];

    chain_make(&ch, &d);
    dirty_clear(&d);
    g_autoptr(MvmVm) vm = restore_chain(ch.dirs[2], ch.dirs, 2, MVM_RESTORE_TRACK_CHANGES, &error);
    g_assert_no_error(error);
    assert_ram_is(vm, ch.dirs[3]);
    read_ids(ch.dirs[2], top_id, parent);
    g_assert_true(mvm_vm_get_diff_parent(vm, now));
    assert_id_equal(now, top_id);

    DirtyGuest restored = {0};
    dirty_attach(&restored, vm, 2);
    g_assert_true(mvm_vm_resume(vm, &error));
    dirty_write(&restored, "0x1000010", 1);
    dirty_detach(&restored);
    chain_clear(&ch);
}

static void assert_refused(const char *top, char **layers, guint n, const char *why)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVm) vm = restore_chain(top, layers, n, MVM_RESTORE_NONE, &error);

    g_assert_null(vm);
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    if (strstr(error->message, why) == NULL)
        g_error("expected \"%s\" in: %s", why, error->message);
    g_test_message("refused: %s", error->message);
}

/* A diff without tracking, and every chain that does not fit together, are refused. */
static void test_diff_refusals(void)
{
    if (!have_kvm())
        return;
    g_autoptr(GError) error = NULL;
    DirtyGuest d = {0};
    Chain ch = {0};

    dirty_start(&d, MEMORY_MIB);
    g_autofree char *dir = make_tmpdir();
    g_assert_false(mvm_vm_snapshot(d.vm, dir, MVM_SNAPSHOT_DIFF, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    dirty_clear(&d);
    rm_rf(dir);

    chain_make(&ch, &d);
    dirty_clear(&d);
    char *wrong_order[] = {ch.dirs[1], ch.dirs[0]};
    char *skipping[] = {ch.dirs[0]};
    char *deep[MVM_SNAPSHOT_MAX_LAYERS];
    for (guint i = 0; i < G_N_ELEMENTS(deep); i++)
        deep[i] = ch.dirs[0];
    assert_refused(ch.dirs[2], NULL, 0, "pass the snapshots beneath it");
    assert_refused(ch.dirs[2], wrong_order, 2, "layer 0 is a diff");
    assert_refused(ch.dirs[2], skipping, 1, "layer 1 is not a diff of layer 0");
    assert_refused(ch.dirs[3], skipping, 1, "takes no layers");
    assert_refused(ch.dirs[2], deep, G_N_ELEMENTS(deep), "at most 63 layers");
    chain_clear(&ch);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/snapshot/diff/exact-pages", test_diff_exact_pages);
    g_test_add_func("/snapshot/diff/chain-restore", test_diff_chain_restore);
    g_test_add_func("/snapshot/diff/refusals", test_diff_refusals);
    return g_test_run();
}
