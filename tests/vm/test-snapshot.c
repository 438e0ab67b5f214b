/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pause with kvmclock, snapshot and restore, against real KVM with the test
 * guest (tests/testguest/): what the guest itself reports after a pause, that
 * concurrent pauses and resumes never show "paused" with a vCPU running, and
 * a guest that goes on counting with its memory intact after a restore
 * (beside the original, and in a fresh process). The VM generation ID as the
 * guest's mode=vmgenid reads it: at boot, in clones running beside their
 * original, when set on a running VM, and absent after a restore of a snapshot
 * from before the device. Damaged snapshots are in test-snapshot-corrupt.c.
 * With -m perf it prints pause, snapshot and restore figures.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "snapshot-test-util.h"
#include "vm-private.h"

#define PATTERN_CMDLINE "mode=pattern pages=256 base_mib=16 every=20 delay=300"
#define PAUSE_MS        600

/* ---- pause: concurrency ---- */

typedef struct {
    MvmVm *vm;
    gint stop;
    gint violations;
    gint ok_ops;
    gint refused_ops;
    gint snapshots;
} Stress;

/* Whenever the VM says paused, every vCPU must be parked. */
static gpointer check_invariant(gpointer data)
{
    Stress *s = data;

    while (!g_atomic_int_get(&s->stop)) {
        g_mutex_lock(&s->vm->lock);
        if (s->vm->state == MVM_VM_STATE_PAUSED &&
            s->vm->n_parked + s->vm->n_exited != s->vm->n_vcpus)
            g_atomic_int_inc(&s->violations);
        g_mutex_unlock(&s->vm->lock);
        g_thread_yield();
    }
    return NULL;
}

static gpointer hammer(gpointer data)
{
    Stress *s = data;

    for (int i = 0; i < 60; i++) {
        g_autoptr(GError) error = NULL;
        gboolean ok = (g_random_int() & 1) ? mvm_vm_pause_full(s->vm, g_random_int() & 1, &error)
                                           : mvm_vm_resume(s->vm, &error);
        if (ok) {
            g_atomic_int_inc(&s->ok_ops);
        } else {
            g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
            g_atomic_int_inc(&s->refused_ops);
        }
    }
    return NULL;
}

/* Snapshots among the pauses and resumes: each one sees a paused machine and restores. */
static gpointer snapshotter(gpointer data)
{
    Stress *s = data;
    g_autofree char *dir = make_tmpdir();

    for (int i = 0; i < 4; i++) {
        g_autoptr(GError) error = NULL;
        MvmSnapshotFlags flags = (i & 1) ? MVM_SNAPSHOT_LEAVE_PAUSED : MVM_SNAPSHOT_NONE;
        g_assert_true(mvm_vm_snapshot(s->vm, dir, flags, &error));
        g_assert_no_error(error);
        g_autoptr(MvmVm) copy = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
        g_assert_no_error(error);
        g_assert_cmpint(mvm_vm_get_state(copy), ==, MVM_VM_STATE_PAUSED);
        g_atomic_int_inc(&s->snapshots);
    }
    rm_rf(dir);
    return NULL;
}

static void test_pause_concurrent(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=4 every=5 delay=100", 2, 32, c);
    g_autoptr(GError) error = NULL;
    Stress s = {.vm = vm};

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 10\n", TIMEOUT_US));

    GThread *checker = g_thread_new("checker", check_invariant, &s);
    GThread *threads[5];
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++)
        threads[i] = g_thread_new("hammer", i == 0 ? snapshotter : hammer, &s);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++)
        g_thread_join(threads[i]);
    g_atomic_int_set(&s.stop, TRUE);
    g_thread_join(checker);

    g_test_message("%d pause/resume calls succeeded, %d refused; %d snapshots", s.ok_ops,
                   s.refused_ops, s.snapshots);
    g_assert_cmpint(s.snapshots, ==, 4);
    g_assert_cmpint(s.violations, ==, 0);
    g_assert_cmpint(s.ok_ops, >, 0);
    g_assert_cmpint(s.refused_ops, >, 0);

    /* Whatever state it ended in, it still works both ways. */
    if (mvm_vm_get_state(vm) == MVM_VM_STATE_RUNNING)
        g_assert_true(mvm_vm_pause(vm, &error));
    gsize mark = capture_len(c);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(capture_wait_from(c, mark, "COUNTER", TIMEOUT_US));
    g_autofree char *out = capture_dup_from(c, 0);
    g_assert_null(strstr(out, "FAIL"));
}

static void test_pause_wrong_state(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=4 every=5", 1, 32, c);
    g_autoptr(GError) error = NULL;

    g_assert_false(mvm_vm_pause_full(vm, MVM_PAUSE_FREEZE_CLOCK, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);
    g_autofree char *dir = make_tmpdir();
    g_assert_false(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_false(mvm_vm_resume(vm, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);

    /* This guest never enables kvmclock: KVMCLOCK_CTRL says EINVAL, which is only counted. */
    MvmVmStats before, after;
    mvm_vm_get_stats(vm, &before);
    g_assert_true(mvm_vm_pause_full(vm, MVM_PAUSE_FREEZE_CLOCK, &error));
    g_assert_false(mvm_vm_pause(vm, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    g_clear_error(&error);
    mvm_vm_get_stats(vm, &after);
    g_assert_cmpuint(after.kvmclock_ctrl_einval, ==, before.kvmclock_ctrl_einval + 1);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(mvm_vm_stop(vm, &error));
    g_assert_false(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
    /* Refused before anything was written. */
    g_autofree char *state = g_build_filename(dir, "state", NULL);
    g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
    rm_rf(dir);
}

/* ---- pause: kvmclock seen from the guest ---- */

typedef struct {
    guint64 max_gap_us;
    guint64 stopped;
    guint n_ticks;
} TickSummary;

static void parse_ticks(const char *text, TickSummary *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (const char *p = text; (p = strstr(p, "KVMCLOCK tick ")) != NULL; p++) {
        if (strchr(p, '\n') == NULL)
            break;
        const char *gap = strstr(p, "maxgap_us "), *stopped = strstr(p, "stopped ");
        g_assert_nonnull(gap);
        g_assert_nonnull(stopped);
        sum->max_gap_us = MAX(sum->max_gap_us, g_ascii_strtoull(gap + 10, NULL, 10));
        sum->stopped = g_ascii_strtoull(stopped + 8, NULL, 10);
        sum->n_ticks++;
    }
}

/* Pauses a kvmclock guest for PAUSE_MS and returns what the guest saw across it. */
static void pause_kvmclock_guest(MvmPauseFlags flags, TickSummary *sum)
{
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=kvmclock tick_ms=100", 1, 32, c);
    g_autoptr(GError) error = NULL;
    MvmVmStats before, after;

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "KVMCLOCK tick 3 ", TIMEOUT_US));
    mvm_vm_get_stats(vm, &before);
    g_assert_true(mvm_vm_pause_full(vm, flags, &error));
    gsize mark = capture_len(c);
    g_usleep(PAUSE_MS * 1000);
    mvm_vm_get_stats(vm, &after);
    g_assert_true(mvm_vm_resume(vm, &error));
    /* The first tick after the resume covers the step over the pause; wait for two. */
    g_assert_true(capture_wait_from(c, mark, "KVMCLOCK tick", TIMEOUT_US));
    gsize second = mark + 1;
    {
        g_autofree char *tail = capture_dup_from(c, mark);
        second = mark + (gsize)(strstr(tail, "KVMCLOCK tick") - tail) + 1;
    }
    g_assert_true(capture_wait_from(c, second, "KVMCLOCK tick", TIMEOUT_US));
    g_autofree char *all = capture_dup_from(c, 0);
    g_autofree char *tail = capture_dup_from(c, mark);
    g_test_message("guest output after the resume:\n%s", tail);
    g_assert_null(strstr(all, "FAIL"));
    g_assert_null(strstr(all, "backwards"));
    /* KVMCLOCK_CTRL worked: the guest has kvmclock, so no EINVAL was counted. */
    g_assert_cmpuint(after.kvmclock_ctrl_einval, ==, before.kvmclock_ctrl_einval);
    parse_ticks(tail, sum);
}

static void test_kvmclock_guest_stopped(void)
{
    TickSummary sum;

    if (!have_kvm())
        return;
    pause_kvmclock_guest(MVM_PAUSE_NONE, &sum);
    g_test_message("default pause of %d ms: largest kvmclock step %" G_GUINT64_FORMAT " us",
                   PAUSE_MS, sum.max_gap_us);
    g_assert_cmpuint(sum.stopped, >=, 1);
    /* Without freezing, guest time follows the host's over the pause. */
    g_assert_cmpuint(sum.max_gap_us, >=, PAUSE_MS * 1000 * 9 / 10);
}

static void test_kvmclock_freeze(void)
{
    TickSummary sum;

    if (!have_kvm())
        return;
    pause_kvmclock_guest(MVM_PAUSE_FREEZE_CLOCK, &sum);
    g_test_message("freeze-clock pause of %d ms: largest kvmclock step %" G_GUINT64_FORMAT " us",
                   PAUSE_MS, sum.max_gap_us);
    g_assert_cmpuint(sum.stopped, >=, 1);
    g_assert_cmpuint(sum.max_gap_us, <, PAUSE_MS * 1000);
}

/* ---- snapshot and restore ---- */

/* Guest RAM of a VM (paused) equals @path's bytes. */
static void assert_memory_equals_file(MvmVm *vm, const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) error = NULL;
    const MvmMemoryRegion *r = mvm_memory_get_region(vm->memory, 0);

    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    g_assert_cmpuint(len, ==, mvm_memory_get_size(vm->memory));
    g_assert_true(memcmp(r->host, data, len) == 0);
}

/*
 * Guest RAM of a VM restored from @path (paused) equals the snapshot's, but for the generation
 * ID: the restore gave the copy a new one (mvm_vm_get_generation_id()).
 */
static void assert_memory_restored_from(MvmVm *vm, const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) error = NULL;
    const guint8 *ram = mvm_memory_get_region(vm->memory, 0)->host;
    const gsize id_end = MVM_VMGENID_ADDR + MVM_GENERATION_ID_SIZE;
    guint8 id[MVM_GENERATION_ID_SIZE];

    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    g_assert_cmpuint(len, ==, mvm_memory_get_size(vm->memory));
    g_assert_true(mvm_vm_get_generation_id(vm, id));
    g_assert_true(memcmp(ram + MVM_VMGENID_ADDR, id, sizeof(id)) == 0);
    g_assert_false(memcmp(data + MVM_VMGENID_ADDR, id, sizeof(id)) == 0);
    g_assert_true(memcmp(ram, data, MVM_VMGENID_ADDR) == 0);
    g_assert_true(memcmp(ram + id_end, data + id_end, len - id_end) == 0);
}

static void assert_sparse(const char *path, guint64 max_allocated)
{
    struct stat st;

    g_assert_cmpint(g_stat(path, &st), ==, 0);
    g_test_message("%s: %" G_GUINT64_FORMAT " bytes, %" G_GUINT64_FORMAT " allocated", path,
                   (guint64)st.st_size, (guint64)st.st_blocks * 512);
    g_assert_cmpuint((guint64)st.st_blocks * 512, <=, max_allocated);
}

/* Resumes @vm and checks it counts on from @last (the last complete count before). */
static void assert_counts_on(MvmVm *vm, Capture *c, const char *partial, guint64 last)
{
    g_autoptr(GError) error = NULL;
    gsize mark = capture_len(c);

    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_no_error(error);
    g_autofree char *want = g_strdup_printf("COUNTER %" G_GUINT64_FORMAT "\n", last + 60);
    g_assert_true(capture_wait_from(c, mark, want, TIMEOUT_US));
    /* A line the original was printing when it stopped is finished by the copy. */
    g_autofree char *tail = capture_dup_from(c, mark);
    g_autofree char *joined = g_strconcat(partial, tail, NULL);
    g_assert_cmpuint(first_counter(joined), ==, last + 20);
    g_assert_null(strstr(joined, "FAIL"));
    g_assert_null(strstr(joined, "TESTGUEST pattern start"));
}

static void test_restore_beside_original(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new(), c2 = capture_new();
    g_autoptr(MvmVm) vm = new_guest(PATTERN_CMDLINE, 1, 128, c);
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 60\n", TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_PAUSED);
    assert_memory_equals_file(vm, memory);
    /* 1 MiB of pattern, the guest's image and stacks: far below 128 MiB. */
    assert_sparse(memory, 8 * 1024 * 1024);

    g_autofree char *out = capture_dup_from(c, 0);
    guint64 last = last_counter(out);
    const char *partial = strrchr(out, '\n') + 1;

    g_autoptr(MvmVm) copy = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(copy), ==, MVM_VM_STATE_PAUSED);
    g_assert_cmpuint(mvm_vm_get_config(copy)->memory_mib, ==, 128);
    mvm_vm_set_console_callback(copy, on_console, c2);
    assert_memory_restored_from(copy, memory);
    /* Nothing of the snapshot is needed once restored: the mapping keeps the data. */
    rm_rf(dir);

    assert_counts_on(copy, c2, partial, last);
    assert_counts_on(vm, c, partial, last);
    /* Both run side by side, each with its own memory. */
    g_assert_cmpint(mvm_vm_get_state(copy), ==, MVM_VM_STATE_RUNNING);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_RUNNING);

    /* A restored VM can be snapshotted and restored again (RAM from its private mapping). */
    g_autofree char *dir2 = make_tmpdir();
    g_assert_true(mvm_vm_snapshot(copy, dir2, MVM_SNAPSHOT_NONE, &error));
    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(copy), ==, MVM_VM_STATE_RUNNING);
    /* c3 before third: cleanup runs in reverse, and the VM must stop before its capture goes. */
    g_autoptr(Capture) c3 = capture_new();
    g_autoptr(MvmVm) third = mvm_vm_restore(dir2, MVM_RESTORE_COPY_MEMORY, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(third, on_console, c3);
    g_assert_true(mvm_vm_resume(third, &error));
    g_assert_true(capture_wait_from(c3, 0, "COUNTER", TIMEOUT_US));
    g_autofree char *out3 = capture_dup_from(c3, 0);
    g_assert_null(strstr(out3, "FAIL"));
    rm_rf(dir2);
}

static void fill_junk(int fd, guint mib)
{
    g_autofree char *junk = g_malloc(1024 * 1024);

    memset(junk, 0xa5, 1024 * 1024);
    for (guint i = 0; i < mib; i++)
        g_assert_cmpint(write(fd, junk, 1024 * 1024), ==, 1024 * 1024);
}

static int open_in(const char *dir, const char *name, int flags)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    int fd = open(path, flags | O_CLOEXEC, 0600);

    g_assert_cmpint(fd, >=, 0);
    return fd;
}

/*
 * Into two files the caller opened (a daemon's untrusted caller): the files are emptied first,
 * so what they held does not survive in the memory file's holes or past the state's end; the
 * snapshot restores from the same files as fds. A FIFO in a snapshot's place is refused, not
 * waited on: by fd, and named `state` in a directory.
 */
static void test_snapshot_to_fds(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new(), c2 = capture_new();
    g_autoptr(MvmVm) vm = new_guest(PATTERN_CMDLINE, 1, 128, c);
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir(), *fifo_dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *fifo = g_build_filename(fifo_dir, "state", NULL);
    int state_fd = open_in(dir, "state", O_RDWR | O_CREAT);
    int memory_fd = open_in(dir, "memory", O_RDWR | O_CREAT);

    /* Old contents, longer than the new ones and all over the new file's holes. */
    fill_junk(state_fd, 40);
    fill_junk(memory_fd, 256);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 20\n", TIMEOUT_US));
    g_assert_true(
        mvm_vm_snapshot_to_fds(vm, state_fd, memory_fd, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    assert_memory_equals_file(vm, memory);
    assert_sparse(memory, 8 * 1024 * 1024);

    g_autoptr(MvmVm) copy =
        mvm_vm_restore_from_fds(state_fd, memory_fd, NULL, MVM_RESTORE_COPY_MEMORY, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(copy, on_console, c2);
    g_assert_true(mvm_vm_resume(copy, &error));
    g_assert_true(capture_wait_from(c2, 0, "COUNTER", TIMEOUT_US));

    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    int fifo_fd = open(fifo, O_RDWR | O_CLOEXEC);
    g_assert_null(mvm_vm_restore_from_fds(fifo_fd, memory_fd, NULL, MVM_RESTORE_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_null(mvm_vm_restore(fifo_dir, MVM_RESTORE_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    close(fifo_fd);
    close(state_fd);
    close(memory_fd);
    rm_rf(fifo_dir);
    rm_rf(dir);
}

/* RAM above the MMIO gap (a second region) goes into the file after low RAM, and comes back. */
static void test_restore_above_4g(void)
{
    static const char marker[] = "above the 3-4 GiB gap";
    const guint64 high = 4ULL * 1024 * 1024 * 1024 + 100 * 1024 * 1024;
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=16 every=5 delay=100", 1, 3200, c);
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    char back[sizeof(marker)];

    g_assert_cmpuint(mvm_memory_get_n_regions(vm->memory), ==, 2);
    g_assert_true(mvm_memory_write(vm->memory, high, marker, sizeof(marker), &error));
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 10\n", TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_clear_pointer(&vm, mvm_vm_free);
    for (int copy = 0; copy < 2; copy++) {
        g_autoptr(MvmVm) r = mvm_vm_restore(dir, copy ? MVM_RESTORE_COPY_MEMORY : 0, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(mvm_memory_get_n_regions(r->memory), ==, 2);
        g_assert_true(mvm_memory_read(r->memory, high, back, sizeof(back), &error));
        g_assert_cmpstr(back, ==, marker);
        g_autoptr(Capture) c2 = capture_new();
        mvm_vm_set_console_callback(r, on_console, c2);
        g_assert_true(mvm_vm_resume(r, &error));
        g_assert_true(capture_wait_from(c2, 0, "COUNTER", TIMEOUT_US));
        g_clear_pointer(&r, mvm_vm_free);
    }
    rm_rf(dir);
}

/* ---- guest RAM from a file the caller can still change ---- */

/* Snapshots a counting pattern guest of @memory_mib into @dir; returns its output so far. */
static char *snapshot_pattern_guest(const char *dir, guint64 memory_mib)
{
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest(PATTERN_CMDLINE, 1, memory_mib, c);
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 60\n", TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    return capture_dup_from(c, 0);
}

/*
 * A restored pattern guest (paused) is snapshotted, which reads every page of its RAM that holds
 * data, then runs on from @out (its original's output).
 */
static void assert_snapshots_and_runs(MvmVm *copy, Capture *c, const char *out)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);

    g_assert_true(mvm_vm_snapshot(copy, dir, MVM_SNAPSHOT_NONE, &error));
    g_assert_no_error(error);
    assert_memory_equals_file(copy, memory);
    rm_rf(dir);
    assert_counts_on(copy, c, strrchr(out, '\n') + 1, last_counter(out));
    g_assert_cmpint(mvm_vm_get_state(copy), ==, MVM_VM_STATE_RUNNING);
}

/*
 * The snapshot's memory file truncated to nothing under a restored VM: a snapshot of it reads
 * all its RAM, and the guest goes on verifying its pattern pages and counting. With the RAM
 * mapped from the file, the first touch of a lost page raised SIGBUS and ended the process, and
 * with it every VM in it.
 */
static void test_restore_truncated_file(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *out = snapshot_pattern_guest(dir, 128);

    g_autoptr(MvmVm) copy = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(copy, on_console, c);
    g_assert_cmpint(truncate(memory, 0), ==, 0);
    assert_snapshots_and_runs(copy, c, out);
    rm_rf(dir);
}

/* A chunk of zeros stays a hole. */
static gboolean is_zero(const guint8 *p, gsize len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* A memfd with the contents of @path (its holes kept), sealed against shrinking and writing if
 * @seal. */
static int memfd_copy_of(const char *path, const char *name, gboolean seal)
{
    const gsize chunk = 1024 * 1024;
    g_autofree guint8 *buf = g_malloc(chunk);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    struct stat st;
    ssize_t n;

    g_assert_cmpint(in, >=, 0);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fstat(in, &st), ==, 0);
    g_assert_cmpint(ftruncate(fd, st.st_size), ==, 0);
    for (off_t off = 0; (n = pread(in, buf, chunk, off)) > 0; off += n) {
        if (!is_zero(buf, (gsize)n))
            g_assert_cmpint(pwrite(fd, buf, (gsize)n, off), ==, n);
    }
    g_assert_cmpint(n, ==, 0);
    close(in);
    if (seal)
        g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_SEAL), ==, 0);
    return fd;
}

/* Does this process map a memfd named @name? */
static gboolean maps_memfd(const char *name)
{
    g_autofree char *maps = NULL;
    g_autofree char *needle = g_strdup_printf("/memfd:%s ", name);

    g_assert_true(g_file_get_contents("/proc/self/maps", &maps, NULL, NULL));
    return strstr(maps, needle) != NULL;
}

/*
 * Guest RAM from the caller's memfd: sealed, it is mapped as it is (it can never shrink, so
 * the restore copies nothing); unsealed, it is copied like a file, and truncating it after
 * the restore changes nothing for the guest.
 */
static void test_restore_memfd(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new(), c2 = capture_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *out = snapshot_pattern_guest(dir, 64);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int sealed = memfd_copy_of(memory, "mvm-test-sealed", TRUE);
    int unsealed = memfd_copy_of(memory, "mvm-test-unsealed", FALSE);

    g_assert_cmpint(dirfd, >=, 0);
    g_autoptr(MvmVm) mapped = mvm_vm_restore_with_memory(dirfd, sealed, NULL, 0, &error);
    g_assert_no_error(error);
    g_autoptr(MvmVm) copied = mvm_vm_restore_with_memory(dirfd, unsealed, NULL, 0, &error);
    g_assert_no_error(error);
    close(dirfd);
    rm_rf(dir);
    g_assert_true(maps_memfd("mvm-test-sealed"));
    g_assert_false(maps_memfd("mvm-test-unsealed"));
    g_assert_cmpint(ftruncate(sealed, 0), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
    g_assert_cmpint(ftruncate(unsealed, 0), ==, 0);
    close(sealed);
    close(unsealed);

    mvm_vm_set_console_callback(mapped, on_console, c);
    mvm_vm_set_console_callback(copied, on_console, c2);
    assert_snapshots_and_runs(mapped, c, out);
    assert_snapshots_and_runs(copied, c2, out);
}

/* ---- memory images: clones of one snapshot share its pages ---- */

/* The physical frame behind @addr (/proc/self/pagemap), or 0 when this process may not see it. */
static guint64 frame_of(const void *addr)
{
    guint64 entry = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    off_t off = (off_t)((guintptr)addr / sysconf(_SC_PAGESIZE) * sizeof(entry));
    g_assert_cmpint(pread(fd, &entry, sizeof(entry), off), ==, sizeof(entry));
    close(fd);
    g_assert_true(entry & (1ULL << 63)); /* present */
    return entry & ((1ULL << 55) - 1);
}

/* The host address of a page of @vm's RAM, read once so that it is mapped here. */
static const guint8 *guest_page(MvmVm *vm, guint64 gpa)
{
    const volatile guint8 *p = mvm_memory_get_ptr(vm->memory, gpa, MVM_PAGE_SIZE);

    g_assert_nonnull(p);
    (void)p[0];
    return (const guint8 *)p;
}

static MvmVm *restore_image(int dirfd, MvmMemoryImages *images, guint64 owner,
                            MvmRestoreFlags flags)
{
    g_autoptr(GError) error = NULL;
    const MvmRestoreOptions options = {
        .flags = flags,
        .memory_images = images,
        .memory_image_owner = owner,
    };
    MvmVm *vm = mvm_vm_restore_full(dirfd, -1, -1, &options, &error);

    g_assert_no_error(error);
    return vm;
}

#define N_CLONES     8
#define PATTERN_BASE (16 * MVM_MIB) /* PATTERN_CMDLINE's base_mib */

/*
 * Clones of one snapshot map one image: a page none of them wrote is the same physical page in
 * all of them (pagemap, as root), a page the restore wrote (the generation ID's) is each one's
 * own; they run on; the image goes with the last of them.
 */
static void test_images_shared(void)
{
    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *out = snapshot_pattern_guest(dir, 64);
    g_autoptr(MvmMemoryImages) images = mvm_memory_images_new();
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    MvmVm *clones[N_CLONES];

    g_assert_cmpint(dirfd, >=, 0);
    for (guint i = 0; i < N_CLONES; i++)
        clones[i] = restore_image(dirfd, images, 1000, MVM_RESTORE_CLONE);
    close(dirfd);
    rm_rf(dir); /* the image is the daemon's own: the file may go */
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 1);
    guint64 shared = frame_of(guest_page(clones[0], PATTERN_BASE));
    if (shared == 0)
        g_test_message("pagemap shows no frames to this process: sharing not checked");
    for (guint i = 0; shared != 0 && i < N_CLONES; i++) {
        g_assert_cmphex(frame_of(guest_page(clones[i], PATTERN_BASE)), ==, shared);
        guint64 own = frame_of(guest_page(clones[i], MVM_VMGENID_ADDR));
        for (guint j = 0; j < i; j++)
            g_assert_cmphex(own, !=, frame_of(guest_page(clones[j], MVM_VMGENID_ADDR)));
    }
    for (guint i = 0; i < 2; i++) {
        g_autoptr(Capture) c = capture_new();
        mvm_vm_set_console_callback(clones[i], on_console, c);
        assert_snapshots_and_runs(clones[i], c, out);
        mvm_vm_set_console_callback(clones[i], NULL, NULL);
    }
    for (guint i = 0; i < N_CLONES; i++) {
        g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 1);
        mvm_vm_free(clones[i]);
    }
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 0);
}

/*
 * One image per unchanged file and owner: another owner, a file written since (its ctime moved,
 * whatever it holds) and MVM_RESTORE_COPY_MEMORY each get RAM of their own.
 */
static void test_images_keys(void)
{
    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *out = snapshot_pattern_guest(dir, 64);
    g_autoptr(MvmMemoryImages) images = mvm_memory_images_new();
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpint(dirfd, >=, 0);
    g_autoptr(MvmVm) a = restore_image(dirfd, images, 1000, MVM_RESTORE_NONE);
    g_autoptr(MvmVm) b = restore_image(dirfd, images, 1000, MVM_RESTORE_NONE);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 1);
    g_autoptr(MvmVm) other_owner = restore_image(dirfd, images, 1001, MVM_RESTORE_NONE);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 2);
    g_autoptr(MvmVm) copied = restore_image(dirfd, images, 1000, MVM_RESTORE_COPY_MEMORY);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 2);

    /* The same bytes written again: a new ctime, so a new image. */
    g_autoptr(GError) error = NULL;
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(memory, &data, &len, &error));
    g_usleep(20000); /* coarse ctime clocks tick every few ms */
    int fd = open(memory, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(pwrite(fd, data, 4096, 0), ==, 4096);
    close(fd);
    g_autoptr(MvmVm) rewritten = restore_image(dirfd, images, 1000, MVM_RESTORE_NONE);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 3);
    close(dirfd);
    rm_rf(dir);

    g_autoptr(Capture) c = capture_new();
    mvm_vm_set_console_callback(rewritten, on_console, c);
    assert_snapshots_and_runs(rewritten, c, out);
    mvm_vm_set_console_callback(rewritten, NULL, NULL);
    g_clear_pointer(&a, mvm_vm_free);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 3);
    g_clear_pointer(&b, mvm_vm_free);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 2);
}

typedef struct {
    guint charges;
    guint releases;
    gboolean allow;
} ImageLedger;

static void image_released(gpointer token)
{
    ((ImageLedger *)token)->releases++;
}

static gboolean charge_image(guint64 owner, guint64 bytes, gpointer user_data,
                             MvmImageCharge *charge, GError **error)
{
    ImageLedger *ledger = user_data;

    g_assert_cmpuint(owner, ==, 1000);
    g_assert_cmpuint(bytes, ==, 64 * MVM_MIB);
    if (!ledger->allow) {
        g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC, "over the test's quota");
        return FALSE;
    }
    ledger->charges++;
    *charge = (MvmImageCharge){image_released, ledger};
    return TRUE;
}

static MvmVm *restore_charged(int dirfd, MvmMemoryImages *images, ImageLedger *ledger)
{
    g_autoptr(GError) error = NULL;
    const MvmRestoreOptions options = {
        .memory_images = images,
        .memory_image_owner = 1000,
        .charge_image = charge_image,
        .charge_image_data = ledger,
    };
    MvmVm *vm = mvm_vm_restore_full(dirfd, -1, -1, &options, &error);

    g_assert_no_error(error);
    return vm;
}

/*
 * No image is listed for a file someone may write (an open writable descriptor, or a writable
 * shared mapping, through which a write would not move its times), and none is made that its
 * owner cannot pay for: those VMs get copies. An image's charge goes with the image.
 */
static void test_images_writers_and_charges(void)
{
    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *out = snapshot_pattern_guest(dir, 64);
    g_autoptr(MvmMemoryImages) images = mvm_memory_images_new();
    ImageLedger ledger = {.allow = FALSE};
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpint(dirfd, >=, 0);
    g_autoptr(MvmVm) unpaid = restore_charged(dirfd, images, &ledger);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 0);
    g_assert_cmpuint(ledger.charges, ==, 0);

    ledger.allow = TRUE;
    int writer = open(memory, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(writer, >=, 0);
    void *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, writer, 0);
    g_assert_true(shared != MAP_FAILED);
    close(writer); /* the writable mapping alone still counts */
    g_autoptr(MvmVm) beside_writer = restore_charged(dirfd, images, &ledger);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 0);
    g_assert_cmpuint(ledger.charges, ==, 1);
    g_assert_cmpint(munmap(shared, 4096), ==, 0);

    g_autoptr(MvmVm) a = restore_charged(dirfd, images, &ledger);
    g_autoptr(MvmVm) b = restore_charged(dirfd, images, &ledger);
    close(dirfd);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 1);
    g_assert_cmpuint(ledger.charges, ==, 2);
    g_assert_cmpuint(ledger.releases, ==, 0);
    g_clear_pointer(&beside_writer, mvm_vm_free); /* it had the unlisted image alone */
    g_assert_cmpuint(ledger.releases, ==, 1);
    g_clear_pointer(&a, mvm_vm_free);
    g_clear_pointer(&b, mvm_vm_free);
    g_assert_cmpuint(ledger.releases, ==, 2);
    g_assert_cmpuint(mvm_memory_images_get_count(images), ==, 0);

    g_autoptr(Capture) c = capture_new();
    mvm_vm_set_console_callback(unpaid, on_console, c);
    assert_snapshots_and_runs(unpaid, c, out);
    mvm_vm_set_console_callback(unpaid, NULL, NULL);
    rm_rf(dir);
}

/* ---- a restore approved on the state it restores ---- */

typedef struct {
    guint calls;
    guint n_vcpus;
    guint64 memory_mib;
    gboolean allow;
} Approval;

static gboolean approve(const MvmVmConfig *config, gpointer user_data, GError **error)
{
    Approval *a = user_data;

    a->calls++;
    a->n_vcpus = config->n_vcpus;
    a->memory_mib = config->memory_mib;
    if (!a->allow)
        g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC, "over the test's quota");
    return a->allow;
}

/*
 * The hook sees the snapshot's own vCPUs and memory, once, before any RAM is read; its refusal is
 * the restore's error, unchanged (a daemon's QuotaExceeded reaches its caller as it is). From the
 * directory and from the two files alike.
 */
static void test_restore_approve(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *out = snapshot_pattern_guest(dir, 48);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    Approval no = {.allow = FALSE}, yes = {.allow = TRUE};
    MvmRestoreOptions options = {.approve = approve, .approve_data = &no};

    g_assert_cmpint(dirfd, >=, 0);
    g_assert_null(mvm_vm_restore_full(dirfd, -1, -1, &options, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC);
    g_assert_cmpuint(no.calls, ==, 1);
    g_assert_cmpuint(no.n_vcpus, ==, 1);
    g_assert_cmpuint(no.memory_mib, ==, 48);
    g_clear_error(&error);

    int state_fd = openat(dirfd, "state", O_RDONLY | O_CLOEXEC);
    int memory_fd = openat(dirfd, "memory", O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(state_fd, >=, 0);
    g_assert_cmpint(memory_fd, >=, 0);
    g_assert_null(mvm_vm_restore_full(-1, state_fd, memory_fd, &options, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC);
    g_assert_cmpuint(no.calls, ==, 2);
    g_clear_error(&error);

    options.approve_data = &yes;
    g_autoptr(MvmVm) copy = mvm_vm_restore_full(-1, state_fd, memory_fd, &options, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(yes.calls, ==, 1);
    close(state_fd);
    close(memory_fd);
    close(dirfd);
    rm_rf(dir);
    mvm_vm_set_console_callback(copy, on_console, c);
    assert_snapshots_and_runs(copy, c, out);
}

static MvmVmConfig *config_with_disk(const char *path, int fd, gboolean read_only)
{
    MvmVmConfig *config = mvm_vm_config_new();
    MvmDiskConfig *disk = g_new0(MvmDiskConfig, 1);

    disk->path = g_strdup(path);
    disk->fd = fd;
    disk->read_only = read_only;
    config->disks = g_ptr_array_new();
    g_ptr_array_add(config->disks, disk);
    return config;
}

/* Runs a guest of @config until it prints @until, and snapshots it into @snap. */
static void snapshot_guest(const MvmVmConfig *config, const char *until, const char *snap)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = mvm_vm_new(config, &error);

    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, until, TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(vm, snap, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
}

static MvmVm *restore_backends(const char *dir, const MvmVmConfig *backends, GError **error)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(dirfd, >=, 0);
    MvmVm *vm = mvm_vm_restore_with_backends(dirfd, backends, MVM_RESTORE_NONE, error);
    close(dirfd);
    return vm;
}

/* Back ends from the caller instead of the paths a snapshot names; mismatches refused. */
static void test_restore_backends(void)
{
    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir(), *snap = make_tmpdir();
    g_autofree char *a = g_build_filename(dir, "a.img", NULL);
    g_autofree char *b = g_build_filename(dir, "b.img", NULL);
    g_autoptr(GError) error = NULL;
    g_autofree char *zeros = g_malloc0(1024 * 1024);

    g_assert_true(g_file_set_contents(a, zeros, 1024 * 1024, NULL));
    g_assert_true(g_file_set_contents(b, zeros, 1024 * 1024, NULL));
    {
        g_autoptr(MvmVmConfig) config = config_with_disk(a, -1, FALSE);
        config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
        config->cmdline = g_strdup("mode=pattern pages=16 base_mib=8 every=5 delay=100");
        config->memory_mib = 32;
        config->debug_exit = TRUE;
        snapshot_guest(config, "COUNTER 10\n", snap);
    }
    /* By path, the snapshot's own disk; with back ends, the caller's. */
    g_autoptr(MvmVm) own = mvm_vm_restore(snap, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    MvmDiskConfig *disk = g_ptr_array_index(mvm_vm_get_config(own)->disks, 0);
    g_assert_cmpstr(disk->path, ==, a);
    g_clear_pointer(&own, mvm_vm_free);
    g_autoptr(MvmVmConfig) by_path = config_with_disk(b, -1, FALSE);
    g_autoptr(MvmVm) other = restore_backends(snap, by_path, &error);
    g_assert_no_error(error);
    disk = g_ptr_array_index(mvm_vm_get_config(other)->disks, 0);
    g_assert_cmpstr(disk->path, ==, b);
    g_clear_pointer(&other, mvm_vm_free);

    /* By fd, and it runs on. */
    int fd = open(b, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(MvmVmConfig) by_fd = config_with_disk(NULL, fd, FALSE);
    g_autoptr(MvmVm) vm = restore_backends(snap, by_fd, &error);
    g_assert_no_error(error);
    close(fd); /* the VM has its own */
    g_autoptr(Capture) c2 = capture_new();
    mvm_vm_set_console_callback(vm, on_console, c2);
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_true(capture_wait_from(c2, 0, "COUNTER", TIMEOUT_US));
    g_clear_pointer(&vm, mvm_vm_free);

    /* A read-only file for a disk the guest was told is writable; no disk at all. */
    g_autoptr(MvmVmConfig) read_only = config_with_disk(b, -1, TRUE);
    g_assert_null(restore_backends(snap, read_only, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "disk 0 is writable in the snapshot"));
    g_clear_error(&error);
    g_autoptr(MvmVmConfig) none = mvm_vm_config_new();
    g_assert_null(restore_backends(snap, none, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "it has 1 disks"));
    g_clear_error(&error);

    /* A guest whose disk came by fd: its snapshot names no file, so only back ends restore it. */
    g_autofree char *snap_by_fd = make_tmpdir();
    {
        int afd = open(a, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(afd, >=, 0);
        g_autoptr(MvmVmConfig) config = config_with_disk(NULL, afd, FALSE);
        config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
        config->cmdline = g_strdup("mode=pattern pages=16 base_mib=8 every=5 delay=100");
        config->memory_mib = 32;
        config->debug_exit = TRUE;
        snapshot_guest(config, "COUNTER 10\n", snap_by_fd);
        close(afd);
    }
    g_assert_null(mvm_vm_restore(snap_by_fd, MVM_RESTORE_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "disk 0 was given by fd"));
    g_clear_error(&error);
    fd = open(b, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(MvmVmConfig) by_fd_again = config_with_disk(NULL, fd, FALSE);
    g_autoptr(MvmVm) again = restore_backends(snap_by_fd, by_fd_again, &error);
    g_assert_no_error(error);
    close(fd);
    g_autoptr(Capture) c3 = capture_new();
    mvm_vm_set_console_callback(again, on_console, c3);
    g_assert_true(mvm_vm_resume(again, &error));
    g_assert_true(capture_wait_from(c3, 0, "COUNTER", TIMEOUT_US));
    rm_rf(snap_by_fd);
    rm_rf(snap);
    rm_rf(dir);
}

static void add_disk_to(MvmVmConfig *config, const char *path, gboolean read_only)
{
    g_autoptr(MvmVmConfig) one = config_with_disk(path, -1, read_only);

    if (config->disks == NULL)
        config->disks = g_ptr_array_new();
    g_ptr_array_add(config->disks, g_ptr_array_steal_index(one->disks, 0));
}

static MvmVmConfig *read_config(const char *dir, GError **error)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(dirfd, >=, 0);
    MvmVmConfig *config = mvm_snapshot_read_config_at(dirfd, error);
    /* Not consumed. */
    g_assert_cmpint(fcntl(dirfd, F_GETFD), >=, 0);
    close(dirfd);
    return config;
}

static void assert_read_config_refuses(const char *dir, const char *reason)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(read_config(dir, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, reason));
}

static void write_file(const char *path, const void *data, gsize len)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_set_contents(path, data, (gssize)len, &error));
    g_assert_no_error(error);
}

/*
 * What a snapshot describes, from its `state` alone: counts, flags and the CID of the VM that
 * wrote it, with `memory` gone; a damaged, truncated, missing or symlinked `state` refused.
 */
static void test_read_config(void)
{
    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir(), *snap = make_tmpdir();
    g_autofree char *a = g_build_filename(dir, "a.img", NULL);
    g_autofree char *b = g_build_filename(dir, "b.img", NULL);
    g_autofree char *uds = g_build_filename(dir, "v.sock", NULL);
    g_autoptr(GError) error = NULL;
    g_autofree char *zeros = g_malloc0(64 * 1024);
    guint32 cid = g_random_int_range(3, 100000);

    write_file(a, zeros, 64 * 1024);
    write_file(b, zeros, 32 * 1024);
    {
        g_autoptr(MvmVmConfig) config = config_with_disk(a, -1, FALSE);
        add_disk_to(config, b, TRUE);
        config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
        config->cmdline = g_strdup("mode=pattern pages=4 base_mib=8 every=5 delay=100");
        config->n_vcpus = 2;
        config->memory_mib = 34;
        config->debug_exit = TRUE;
        config->vsock_cid = cid;
        config->vsock_uds_path = g_strdup(uds);
        config->rng = TRUE;
        snapshot_guest(config, "COUNTER 5\n", snap);
    }
    /* Only `state` is read: without `memory` the description is there, a restore is not. */
    g_autofree char *memory = g_build_filename(snap, "memory", NULL);
    g_autofree char *moved = g_build_filename(dir, "memory", NULL);
    g_assert_cmpint(g_rename(memory, moved), ==, 0);
    g_autoptr(MvmVmConfig) got = read_config(snap, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(got->n_vcpus, ==, 2);
    g_assert_cmpuint(got->memory_mib, ==, 34);
    g_assert_cmpstr(got->cmdline, ==, "mode=pattern pages=4 base_mib=8 every=5 delay=100");
    g_assert_nonnull(got->disks);
    g_assert_cmpuint(got->disks->len, ==, 2);
    const MvmDiskConfig *d0 = g_ptr_array_index(got->disks, 0);
    const MvmDiskConfig *d1 = g_ptr_array_index(got->disks, 1);
    g_assert_false(d0->read_only);
    g_assert_true(d1->read_only);
    g_assert_cmpstr(d0->path, ==, a);
    g_assert_cmpstr(d1->path, ==, b);
    g_assert_cmpint(d0->fd, ==, -1);
    g_assert_true(got->nics == NULL || got->nics->len == 0);
    g_assert_cmpuint(got->vsock_cid, ==, cid);
    g_assert_true(got->rng);
    g_assert_null(mvm_vm_restore(snap, MVM_RESTORE_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    /* Damaged: one byte of the payload, then half the file, then none, then a link to it. */
    g_autofree char *state = g_build_filename(snap, "state", NULL);
    g_autofree char *good = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(state, &good, &len, NULL));
    g_autofree char *bad = g_memdup2(good, len);
    bad[len / 2] ^= 0x40;
    write_file(state, bad, len);
    assert_read_config_refuses(snap, "invalid snapshot");
    write_file(state, good, len / 2);
    assert_read_config_refuses(snap, "invalid snapshot");
    g_assert_cmpint(g_unlink(state), ==, 0);
    assert_read_config_refuses(snap, "cannot open state");
    g_autofree char *elsewhere = g_build_filename(dir, "state", NULL);
    write_file(elsewhere, good, len);
    g_assert_cmpint(symlink(elsewhere, state), ==, 0);
    assert_read_config_refuses(snap, "cannot open state");
    /* The control: the same bytes in place are accepted again. */
    g_assert_cmpint(g_unlink(state), ==, 0);
    write_file(state, good, len);
    g_autoptr(MvmVmConfig) again = read_config(snap, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(again->vsock_cid, ==, cid);

    /*
     * Back ends that name another CID than the state restored are refused by the restore
     * itself, on the state it decodes: what a caller checked on an earlier read of the file
     * (which may have changed since) does not count.
     */
    g_assert_cmpint(g_rename(moved, memory), ==, 0);
    g_autoptr(MvmVmConfig) backends = config_with_disk(a, -1, FALSE);
    add_disk_to(backends, b, TRUE);
    backends->vsock_cid = cid + 1;
    backends->vsock_uds_path = g_strdup(uds);
    int dirfd = open(snap, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_null(mvm_vm_restore_with_backends(dirfd, backends, MVM_RESTORE_NONE, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "vsock cid"));
    g_clear_error(&error);
    close(dirfd);
    rm_rf(snap);
    rm_rf(dir);
}

/* ---- the VM generation ID, seen by the test guest's mode=vmgenid ---- */

#define VMGENID_HEX_LEN (2 * MVM_GENERATION_ID_SIZE)

/* @id as the guest prints it: lowercase hex, the bytes in memory order. */
static char *id_hex(const guint8 id[MVM_GENERATION_ID_SIZE])
{
    GString *s = g_string_sized_new(VMGENID_HEX_LEN);

    for (guint i = 0; i < MVM_GENERATION_ID_SIZE; i++)
        g_string_append_printf(s, "%02x", id[i]);
    return g_string_free(s, FALSE);
}

/* The VM's generation ID, in hex; the VM must have one. */
static char *vm_id_hex(MvmVm *vm)
{
    guint8 id[MVM_GENERATION_ID_SIZE];

    g_assert_true(mvm_vm_get_generation_id(vm, id));
    return id_hex(id);
}

static void random_id(guint8 id[MVM_GENERATION_ID_SIZE])
{
    for (guint i = 0; i < MVM_GENERATION_ID_SIZE; i++)
        id[i] = (guint8)g_random_int();
}

/* One "VMGENID id=<hex> irqs=<n>" line; @end is the offset after it in its capture. */
typedef struct {
    char id[VMGENID_HEX_LEN + 1];
    guint irqs;
    gsize end;
} VmgenidLine;

/*
 * capture_wait_from() that gives up at once when the guest says FAIL (its tables are wrong),
 * and shows what the guest printed when it gives up.
 */
static void wait_guest(Capture *c, gsize from, const char *needle)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_US;

    while (!capture_wait_from(c, from, needle, 50 * 1000)) {
        g_autofree char *out = capture_dup_from(c, 0);
        gboolean failed = strstr(out, "FAIL") != NULL;
        if (failed || g_get_monotonic_time() >= deadline) {
            g_test_message("waiting for \"%s\"; the guest printed:\n%s", needle, out);
            g_assert_false(failed);
            g_assert_not_reached();
        }
    }
}

/* Waits for the guest's next complete ID line at or after @from and reads it. */
static void next_vmgenid_line(Capture *c, gsize from, VmgenidLine *line)
{
    static const char prefix[] = "VMGENID id=";

    wait_guest(c, from, prefix);
    g_autofree char *tail = capture_dup_from(c, from);
    gsize start = from + (gsize)(strstr(tail, prefix) - tail);
    wait_guest(c, start, "\n");
    g_autofree char *text = capture_dup_from(c, start);
    char *eol = strchr(text, '\n');
    *eol = '\0';
    g_test_message("guest: %s", text);
    g_assert_cmpint(sscanf(text, "VMGENID id=%32[0-9a-f] irqs=%u", line->id, &line->irqs), ==, 2);
    g_autofree char *again = g_strdup_printf("VMGENID id=%s irqs=%u", line->id, line->irqs);
    g_assert_cmpstr(text, ==, again); /* all of it, and nothing else */
    g_assert_cmpuint(strlen(line->id), ==, VMGENID_HEX_LEN);
    line->end = start + (gsize)(eol - text) + 1;
}

static void assert_no_fail(Capture *c)
{
    g_autofree char *out = capture_dup_from(c, 0);

    g_assert_null(strstr(out, "FAIL"));
}

/* A vmgenid guest started; returns its first ID line (irqs=0), which must show the VM's ID. */
static MvmVm *start_vmgenid_guest(const char *cmdline, Capture *c, VmgenidLine *line)
{
    g_autoptr(GError) error = NULL;
    MvmVm *vm = new_guest(cmdline, 1, 32, c);
    g_autofree char *id = vm_id_hex(vm);

    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_no_error(error);
    next_vmgenid_line(c, 0, line);
    wait_guest(c, 0, "PASS vmgenid-tables\n");
    g_assert_cmpstr(line->id, ==, id);
    g_assert_cmpuint(line->irqs, ==, 0);
    return vm;
}

/*
 * A new VM has an ID of its own, which the guest finds through its DSDT; the start does not
 * announce it. An ID set before the start is the one the guest boots with.
 */
static void test_vmgenid_boot(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new(), c2 = capture_new();
    g_autoptr(GError) error = NULL;
    VmgenidLine line;
    guint8 chosen[MVM_GENERATION_ID_SIZE];

    g_autoptr(MvmVm) vm = start_vmgenid_guest("mode=vmgenid", c, &line);
    g_autofree char *after = vm_id_hex(vm);
    g_assert_cmpstr(after, ==, line.id);

    g_autoptr(MvmVm) vm2 = new_guest("mode=vmgenid", 1, 32, c2);
    g_autofree char *other = vm_id_hex(vm2);
    g_assert_cmpstr(other, !=, line.id);
    random_id(chosen);
    g_assert_true(mvm_vm_set_generation_id(vm2, chosen, &error));
    g_assert_no_error(error);
    g_autofree char *want = id_hex(chosen);
    g_autofree char *got = vm_id_hex(vm2);
    g_assert_cmpstr(got, ==, want);
    g_assert_true(mvm_vm_start(vm2, &error));
    g_assert_no_error(error);
    next_vmgenid_line(c2, 0, &line);
    g_assert_cmpstr(line.id, ==, want);
    g_assert_cmpuint(line.irqs, ==, 0);
    assert_no_fail(c);
    assert_no_fail(c2);
}

/* Restored from @dir, paused, with its console in @c: its ID is new (not @old), returned in hex. */
static MvmVm *restore_clone(const char *dir, Capture *c, const char *old, char **id)
{
    g_autoptr(GError) error = NULL;
    MvmVm *clone = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);

    g_assert_no_error(error);
    g_assert_cmpint(mvm_vm_get_state(clone), ==, MVM_VM_STATE_PAUSED);
    mvm_vm_set_console_callback(clone, on_console, c);
    *id = vm_id_hex(clone);
    g_assert_cmpstr(*id, !=, old);
    return clone;
}

/*
 * Two clones of one snapshot run beside their original: each has a new ID of its own, which
 * its guest reads after the one interrupt the restore raised. The original keeps its ID and
 * gets no interrupt: its next line is the one a set makes, with irqs=1. A restore given an ID
 * (MvmRestoreOptions.generation_id) has exactly that one.
 */
static void test_vmgenid_restore_clones(void)
{
    if (!have_kvm())
        return;
    /* The captures before the VMs: cleanup runs in reverse, and a VM must stop first. */
    g_autoptr(Capture) c = capture_new(), ca = capture_new(), cb = capture_new();
    g_autoptr(Capture) cc = capture_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *ida = NULL, *idb = NULL;
    VmgenidLine first, line;
    guint8 chosen[MVM_GENERATION_ID_SIZE];

    g_autoptr(MvmVm) vm = start_vmgenid_guest("mode=vmgenid", c, &first);
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    gsize mark = capture_len(c);
    g_assert_cmpuint(mark, ==, first.end);

    g_autoptr(MvmVm) a = restore_clone(dir, ca, first.id, &ida);
    g_autoptr(MvmVm) b = restore_clone(dir, cb, first.id, &idb);
    g_assert_cmpstr(ida, !=, idb);
    g_autofree char *kept = vm_id_hex(vm);
    g_assert_cmpstr(kept, ==, first.id);

    /* All three run at once. */
    g_assert_true(mvm_vm_resume(a, &error));
    g_assert_true(mvm_vm_resume(b, &error));
    g_assert_true(mvm_vm_resume(vm, &error));
    g_assert_no_error(error);
    next_vmgenid_line(ca, 0, &line);
    g_assert_cmpstr(line.id, ==, ida);
    g_assert_cmpuint(line.irqs, ==, 1);
    next_vmgenid_line(cb, 0, &line);
    g_assert_cmpstr(line.id, ==, idb);
    g_assert_cmpuint(line.irqs, ==, 1);
    g_assert_cmpint(mvm_vm_get_state(a), ==, MVM_VM_STATE_RUNNING);
    g_assert_cmpint(mvm_vm_get_state(b), ==, MVM_VM_STATE_RUNNING);
    g_assert_cmpint(mvm_vm_get_state(vm), ==, MVM_VM_STATE_RUNNING);
    g_autofree char *ida2 = vm_id_hex(a), *idb2 = vm_id_hex(b), *kept2 = vm_id_hex(vm);
    g_assert_cmpstr(ida2, ==, ida);
    g_assert_cmpstr(idb2, ==, idb);
    g_assert_cmpstr(kept2, ==, first.id);

    random_id(chosen);
    g_autofree char *want = id_hex(chosen);
    g_assert_true(mvm_vm_set_generation_id(vm, chosen, &error));
    g_assert_no_error(error);
    next_vmgenid_line(c, mark, &line);
    g_assert_cmpstr(line.id, ==, want);
    g_assert_cmpuint(line.irqs, ==, 1);

    /* The ID the caller chose for a third clone. */
    random_id(chosen);
    g_autofree char *want_c = id_hex(chosen);
    MvmRestoreOptions options = {.generation_id = chosen};
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(dirfd, >=, 0);
    g_autoptr(MvmVm) third = mvm_vm_restore_full(dirfd, -1, -1, &options, &error);
    g_assert_no_error(error);
    close(dirfd);
    rm_rf(dir);
    mvm_vm_set_console_callback(third, on_console, cc);
    g_autofree char *idc = vm_id_hex(third);
    g_assert_cmpstr(idc, ==, want_c);
    g_assert_true(mvm_vm_resume(third, &error));
    g_assert_no_error(error);
    next_vmgenid_line(cc, 0, &line);
    g_assert_cmpstr(line.id, ==, want_c);
    g_assert_cmpuint(line.irqs, ==, 1);

    assert_no_fail(c);
    assert_no_fail(ca);
    assert_no_fail(cb);
    assert_no_fail(cc);
}

/*
 * A set on a running VM: the guest reads the new ID after one more interrupt, each time. With
 * changes=2 it then ends with PASS. A stopped VM's ID cannot be set.
 */
static void test_vmgenid_set_running(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;
    VmgenidLine line;
    guint8 chosen[MVM_GENERATION_ID_SIZE];

    g_autoptr(MvmVm) vm = start_vmgenid_guest("mode=vmgenid changes=2", c, &line);
    for (guint i = 1; i <= 2; i++) {
        random_id(chosen);
        g_autofree char *want = id_hex(chosen);
        g_assert_true(mvm_vm_set_generation_id(vm, chosen, &error));
        g_assert_no_error(error);
        g_autofree char *got = vm_id_hex(vm);
        g_assert_cmpstr(got, ==, want);
        next_vmgenid_line(c, line.end, &line);
        g_assert_cmpstr(line.id, ==, want);
        g_assert_cmpuint(line.irqs, ==, i);
    }
    wait_guest(c, line.end, "TESTGUEST-DONE vmgenid PASS\n");
    g_assert_true(mvm_vm_wait(vm, TIMEOUT_US));
    g_assert_cmpint(mvm_vm_get_exit_kind(vm), ==, MVM_EXIT_DEBUG_EXIT);
    g_assert_cmpuint(mvm_vm_get_exit_code(vm), ==, 0);
    assert_no_fail(c);

    g_assert_false(mvm_vm_set_generation_id(vm, chosen, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_STATE);
}

/*
 * A snapshot from before the device (format 2.1: no "vmgenid-addr") restores to a VM without
 * an ID, which cannot be given one, and its guest goes on as it was.
 */
static void test_vmgenid_old_snapshot(void)
{
    if (!have_kvm())
        return;
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *out = snapshot_pattern_guest(dir, 32);
    g_autoptr(GVariant) payload = snapshot_read_payload(dir);
    guint8 id[MVM_GENERATION_ID_SIZE];

    snapshot_write_payload(dir, vardict_with(payload, "vmgenid-addr", NULL), 2, 1);
    g_autoptr(MvmVm) vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    rm_rf(dir);
    mvm_vm_set_console_callback(vm, on_console, c);
    g_assert_false(mvm_vm_get_generation_id(vm, id));
    random_id(id);
    g_assert_false(mvm_vm_set_generation_id(vm, id, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED);
    assert_counts_on(vm, c, strrchr(out, '\n') + 1, last_counter(out));
}

/*
 * The fresh-process test: the parent writes the snapshot and what the child
 * must see into MVM_SNAPSHOT_CHILD_DIR (set in main, before any thread, so no
 * setenv() races), frees its VM, and runs the child half in a new process.
 */
static void restore_in_child(void)
{
    const char *base = g_getenv("MVM_SNAPSHOT_CHILD_DIR");
    g_autofree char *dir = g_build_filename(base, "snapshot", NULL);
    g_autofree char *expect = g_build_filename(base, "expect", NULL);
    g_autoptr(GKeyFile) keys = g_key_file_new();
    g_autoptr(Capture) c = capture_new();
    g_autoptr(GError) error = NULL;

    g_assert_true(g_key_file_load_from_file(keys, expect, G_KEY_FILE_NONE, &error));
    gboolean copy = g_key_file_get_boolean(keys, "expect", "copy", NULL);
    guint64 last = g_key_file_get_uint64(keys, "expect", "last", NULL);
    g_autofree char *partial = g_key_file_get_string(keys, "expect", "partial", NULL);
    g_autoptr(MvmVm) vm =
        mvm_vm_restore(dir, copy ? MVM_RESTORE_COPY_MEMORY : MVM_RESTORE_NONE, &error);
    g_assert_no_error(error);
    mvm_vm_set_console_callback(vm, on_console, c);
    assert_counts_on(vm, c, partial != NULL ? partial : "", last);
}

static void test_restore_fresh_process(gconstpointer copy_memory)
{
    if (!have_kvm())
        return;
    if (g_test_subprocess()) {
        restore_in_child();
        return;
    }
    const char *base = g_getenv("MVM_SNAPSHOT_CHILD_DIR");
    g_autofree char *dir = g_build_filename(base, "snapshot", NULL);
    g_autofree char *expect = g_build_filename(base, "expect", NULL);
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL;
    {
        g_autoptr(Capture) c = capture_new();
        g_autoptr(MvmVm) vm = new_guest(PATTERN_CMDLINE, 1, 64, c);
        g_assert_true(mvm_vm_start(vm, &error));
        g_assert_true(capture_wait_from(c, 0, "COUNTER 40\n", TIMEOUT_US));
        g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
        g_assert_no_error(error);
        out = capture_dup_from(c, 0);
    } /* the original is gone before the child starts */

    g_autoptr(GKeyFile) keys = g_key_file_new();
    g_key_file_set_boolean(keys, "expect", "copy", GPOINTER_TO_INT(copy_memory));
    g_key_file_set_uint64(keys, "expect", "last", last_counter(out));
    g_key_file_set_string(keys, "expect", "partial", strrchr(out, '\n') + 1);
    g_assert_true(g_key_file_save_to_file(keys, expect, &error));
    g_test_trap_subprocess(NULL, 100 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
    rm_rf(dir);
    g_unlink(expect);
}
/* ---- figures (-m perf) ---- */

static double ms_since(gint64 start)
{
    return (double)(g_get_monotonic_time() - start) / 1000.0;
}

/* Makes @mib MiB of guest RAM above 64 MiB non-zero, as a guest that used its memory would. */
static void dirty_memory(MvmVm *vm, guint64 mib)
{
    guint8 *ram = mvm_memory_get_region(vm->memory, 0)->host;
    for (guint64 off = 64 * 1024 * 1024; off < (64 + mib) * 1024 * 1024; off += 8)
        *(guint64 *)(ram + off) = off * 0x9e3779b97f4a7c15ULL;
}

static int compare_double(gconstpointer a, gconstpointer b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "median (min-max)" of @n samples in ms; sorts them. */
static char *summary(double *ms, gsize n)
{
    qsort(ms, n, sizeof(double), (int (*)(const void *, const void *))compare_double);
    return g_strdup_printf("%.3f (%.3f-%.3f)", ms[n / 2], ms[0], ms[n - 1]);
}

static void bench_pause(MvmVm *vm, char **pause, char **resume)
{
    g_autoptr(GError) error = NULL;
    double p[21], r[21];

    for (gsize i = 0; i < G_N_ELEMENTS(p); i++) {
        gint64 t0 = g_get_monotonic_time();
        g_assert_true(mvm_vm_pause(vm, &error));
        p[i] = ms_since(t0);
        t0 = g_get_monotonic_time();
        g_assert_true(mvm_vm_resume(vm, &error));
        r[i] = ms_since(t0);
        g_usleep(5000);
    }
    *pause = summary(p, G_N_ELEMENTS(p));
    *resume = summary(r, G_N_ELEMENTS(r));
}

/*
 * Restore + resume until the call returns (the vCPU threads run), @n times; RAM from
 * @memory_fd (-1: the directory's file).
 */
static char *bench_restore(const char *dir, int memory_fd, MvmRestoreFlags flags, int n)
{
    g_autoptr(GError) error = NULL;
    double ms[5];
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpint(dirfd, >=, 0);
    g_assert_cmpint(n, <=, G_N_ELEMENTS(ms));
    for (int i = 0; i < n; i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(MvmVm) vm = mvm_vm_restore_with_memory(dirfd, memory_fd, NULL, flags, &error);
        g_assert_no_error(error);
        g_assert_true(mvm_vm_resume(vm, &error));
        ms[i] = ms_since(t0);
    }
    close(dirfd);
    return summary(ms, n);
}

static void bench_one(guint64 memory_mib, guint64 dirty_mib)
{
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest("mode=pattern pages=64 every=20 delay=300", 1, memory_mib, c);
    g_autoptr(GError) error = NULL;
    /* MVM_BENCH_DIR=/dev/shm separates the cost of the disk from ours. */
    const char *base = g_getenv("MVM_BENCH_DIR");
    g_autofree char *dir =
        base != NULL ? g_build_filename(base, "mvm-snapshot-bench", NULL) : make_tmpdir();
    g_autofree char *pause = NULL, *resume = NULL;
    struct stat mem_st, state_st;

    if (dirty_mib > 0)
        dirty_memory(vm, dirty_mib);
    g_assert_true(mvm_vm_start(vm, &error));
    g_assert_true(capture_wait_from(c, 0, "COUNTER 20\n", TIMEOUT_US));
    bench_pause(vm, &pause, &resume);

    gint64 t0 = g_get_monotonic_time();
    g_assert_true(mvm_vm_snapshot(vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    double snap_ms = ms_since(t0);
    g_autofree char *memory = g_build_filename(dir, "memory", NULL);
    g_autofree char *state = g_build_filename(dir, "state", NULL);
    g_assert_cmpint(g_stat(memory, &mem_st), ==, 0);
    g_assert_cmpint(g_stat(state, &state_st), ==, 0);
    int sealed = memfd_copy_of(memory, "mvm-bench-memory", TRUE);
    g_autofree char *lazy = bench_restore(dir, sealed, MVM_RESTORE_NONE, 5);
    g_autofree char *copy = bench_restore(dir, -1, MVM_RESTORE_NONE, 5);
    close(sealed);
    g_autofree char *out = capture_dup_from(c, 0);
    g_assert_null(strstr(out, "FAIL"));

    g_test_message("bench %" G_GUINT64_FORMAT " MiB guest, %" G_GUINT64_FORMAT
                   " MiB made non-zero by the host: ms median (min-max): pause %s, resume %s; "
                   "snapshot %.1f ms, memory file %" G_GUINT64_FORMAT
                   " KiB allocated, state %" G_GUINT64_FORMAT
                   " bytes; restore+resume from a sealed memfd (lazy) %s, "
                   "from the file (copied) %s",
                   memory_mib, dirty_mib, pause, resume, snap_ms,
                   (guint64)mem_st.st_blocks * 512 / 1024, (guint64)state_st.st_size, lazy, copy);
    rm_rf(dir);
}

static void test_bench(void)
{
    if (!have_kvm())
        return;
    bench_one(128, 0);
    bench_one(128, 60);
    bench_one(1024, 0);
    bench_one(1024, 900);
}
int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *child_dir = NULL;
    if (g_getenv("MVM_SNAPSHOT_CHILD_DIR") == NULL) {
        child_dir = make_tmpdir();
        g_setenv("MVM_SNAPSHOT_CHILD_DIR", child_dir, TRUE);
    }

    if (g_getenv("MVM_TESTGUEST") == NULL) {
        g_printerr("MVM_TESTGUEST is not set\n");
        return 77;
    }
    g_test_add_func("/snapshot/pause/wrong-state", test_pause_wrong_state);
    g_test_add_func("/snapshot/pause/concurrent", test_pause_concurrent);
    g_test_add_func("/snapshot/pause/kvmclock-guest-stopped", test_kvmclock_guest_stopped);
    g_test_add_func("/snapshot/pause/kvmclock-freeze", test_kvmclock_freeze);
    g_test_add_func("/snapshot/restore/beside-original", test_restore_beside_original);
    g_test_add_func("/snapshot/to-fds", test_snapshot_to_fds);
    g_test_add_func("/snapshot/restore/above-4g", test_restore_above_4g);
    g_test_add_func("/snapshot/restore/truncated-file", test_restore_truncated_file);
    g_test_add_func("/snapshot/restore/memfd", test_restore_memfd);
    g_test_add_func("/snapshot/images/shared", test_images_shared);
    g_test_add_func("/snapshot/images/keys", test_images_keys);
    g_test_add_func("/snapshot/images/writers-and-charges", test_images_writers_and_charges);
    g_test_add_func("/snapshot/restore/backends", test_restore_backends);
    g_test_add_func("/snapshot/restore/approve", test_restore_approve);
    g_test_add_func("/snapshot/read-config", test_read_config);
    g_test_add_func("/snapshot/vmgenid/boot", test_vmgenid_boot);
    g_test_add_func("/snapshot/vmgenid/restore-clones", test_vmgenid_restore_clones);
    g_test_add_func("/snapshot/vmgenid/set-running", test_vmgenid_set_running);
    g_test_add_func("/snapshot/vmgenid/old-snapshot", test_vmgenid_old_snapshot);
    g_test_add_data_func("/snapshot/restore/fresh-process", GINT_TO_POINTER(0),
                         test_restore_fresh_process);
    g_test_add_data_func("/snapshot/restore/fresh-process-copy-flag", GINT_TO_POINTER(1),
                         test_restore_fresh_process);
    if (g_test_perf())
        g_test_add_func("/snapshot/bench", test_bench);
    int ret = g_test_run();
    if (child_dir != NULL)
        g_rmdir(child_dir);
    return ret;
}
