/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-lib: libmicrovm measured in-process, for tests/bench/compare. Each command prints one
 * JSON object on stdout (times in µs, memory in KiB):
 *
 *   bench-lib first KERNEL REPS         mvm_vm_new + mvm_vm_start → marker 1 (first guest
 *                                       instruction, host monotonic time), then stop + free;
 *                                       also the CPU time of mvm_vm_new
 *   bench-lib many KERNEL N MEM_MIB     create+start N idle VMs in this process; RSS before/after;
 *                                       then stop + free them on FREE_THREADS threads
 *   bench-lib pause KERNEL REPS [idle]  mvm_vm_pause / mvm_vm_resume of a guest computing at CPL3
 *                                       (idle: of a guest parked in HLT)
 *   bench-lib snapshot KERNEL DIR REPS  mvm_vm_snapshot of a 128 MiB guest, mvm_vm_restore +
 *                                       mvm_vm_resume, and the time until the guest prints again
 *   bench-lib lazy KERNEL DIR REPS      a 512 MiB guest's snapshot, all of its RAM data, restored
 *                                       three ways (a copy; lazily; lazily with the working set
 *                                       of the first lazy run prefetched) with the file's page
 *                                       cache dropped first (cold) and not (warm): the restore
 *                                       call, and restore → resume → the guest's read of 16 MiB
 *                                       done (its first useful work); pages read by then
 *   bench-lib exits KERNEL ROUNDS REPS  REPS guests in `mode=iotest iterations=ROUNDS`: one port
 *                                       I/O and one MMIO round trip to the test device, by the
 *                                       guest's TSC (µs, fractions kept)
 *   bench-lib filter REPS CALLS         one system call on a thread in the vCPU sandbox,
 *                                       ioctl(-1, KVM_RUN): the filters' verdict on KVM_RUN, then
 *                                       EBADF at once; and read(-1) in the I/O thread's sandbox
 *   bench-lib blk KERNEL DIR COUNT KIB REPS
 *                                       REPS guests in `mode=blkbench`: one virtio-blk request of
 *                                       KIB KiB, reads and writes, by the host's clock between
 *                                       the guest's markers (µs, fractions kept)
 *
 * exits, filter and blk first put the process under lib's process-wide deny list, the one meant
 * for the daemon's start (mvm_sandbox_lock_process(); nothing with MVM_SANDBOX=off), so that a
 * vCPU or I/O thread runs both filters, as it would in the daemon. They say the process's
 * sandbox mode (MVM_SANDBOX, read once per process) and how many filters each of its threads
 * ran while a warm-up guest was up.
 *
 * KERNEL is tests/testguest/testguest.elf: its first instruction writes marker 1 (README there).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "bench-util.h"
#include "microvm.h"
#include "layout.h"  /* MVM_MIB */
#include "sandbox.h" /* filter: the threads' sandboxes without a VM */
#include "test-util.h"
#include "vm-private.h" /* the vCPU's TSC rate, to read the guest's TSC figures */

/*
 * Snapshot/restore are declared in microvm.h but land in lib/ separately: weak references let
 * this benchmark build either way (with link_whole, they resolve whenever lib/ defines them),
 * and the snapshot command reports "not built" instead of failing to link.
 */
#pragma weak mvm_vm_snapshot
#pragma weak mvm_vm_restore

#define BENCH_MEMORY_MIB 128
#define WAIT_US          (30 * G_USEC_PER_SEC)
#define FREE_THREADS     16
#define BLK_MARKER_FIRST 0x100 /* mode=blkbench writes 0x100-0x106 (tests/testguest/README.md) */
#define BLK_MARKERS      7

/* What the VMs of one command report, from their vCPU threads. */
typedef struct {
    GMutex lock;
    GCond cond;
    guint markers; /* VMs that reached marker 1 */
    guint hits;    /* console lines containing `pattern`, all VMs */
    const char *pattern;
} Tracker;

typedef struct {
    Tracker *tracker;
    MvmVm *vm;
    gint64 marker_us;           /* host monotonic time of marker 1 */
    gint64 blk_us[BLK_MARKERS]; /* of markers 0x100-0x106 */
    GString *line;              /* console output since the last newline */
    GString *output;            /* all of it, when not NULL */
} Slot;

static void on_marker(MvmVm *vm, guint32 marker, gint64 monotonic_us, gpointer user_data)
{
    Slot *slot = user_data;

    if (marker - BLK_MARKER_FIRST < BLK_MARKERS) /* one vCPU: no other thread writes these */
        slot->blk_us[marker - BLK_MARKER_FIRST] = monotonic_us;
    if (marker != 1)
        return;
    g_mutex_lock(&slot->tracker->lock);
    if (slot->marker_us == 0) {
        slot->marker_us = monotonic_us;
        slot->tracker->markers++;
        g_cond_broadcast(&slot->tracker->cond);
    }
    g_mutex_unlock(&slot->tracker->lock);
}

static void track_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    Slot *slot = user_data;
    Tracker *tracker = slot->tracker;

    g_mutex_lock(&tracker->lock);
    if (slot->output != NULL)
        g_string_append_len(slot->output, (const char *)data, (gssize)len);
    for (gsize i = 0; i < len; i++) {
        if (data[i] != '\n') {
            if (slot->line->len < 256)
                g_string_append_c(slot->line, (char)data[i]);
            continue;
        }
        if (tracker->pattern != NULL && strstr(slot->line->str, tracker->pattern) != NULL) {
            tracker->hits++;
            g_cond_broadcast(&tracker->cond);
        }
        g_string_truncate(slot->line, 0);
    }
    g_mutex_unlock(&tracker->lock);
}

/* Waits until *counter >= target; FALSE on timeout. */
static gboolean tracker_wait(Tracker *tracker, const guint *counter, guint target)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;
    gboolean ok = TRUE;

    g_mutex_lock(&tracker->lock);
    while (*counter < target && ok)
        ok = g_cond_wait_until(&tracker->cond, &tracker->lock, deadline);
    ok = *counter >= target;
    g_mutex_unlock(&tracker->lock);
    return ok;
}

static MvmVmConfig *make_config(const char *kernel, const char *cmdline, guint64 memory_mib)
{
    MvmVmConfig *config = mvm_vm_config_new();

    config->kernel_path = g_strdup(kernel);
    config->cmdline = g_strdup(cmdline);
    config->memory_mib = memory_mib;
    config->n_vcpus = 1;
    config->debug_exit = TRUE; /* the test device: marker port */
    return config;
}

static void slot_attach(Slot *slot, Tracker *tracker, MvmVm *vm)
{
    slot->tracker = tracker;
    slot->vm = vm;
    slot->line = g_string_new(NULL);
    mvm_vm_set_marker_callback(vm, on_marker, slot);
    mvm_vm_set_console_callback(vm, track_console, slot);
}

static void slot_clear(Slot *slot)
{
    g_clear_pointer(&slot->vm, mvm_vm_free);
    if (slot->line != NULL)
        g_string_free(g_steal_pointer(&slot->line), TRUE);
    if (slot->output != NULL)
        g_string_free(g_steal_pointer(&slot->output), TRUE);
}

static void tracker_init(Tracker *tracker, const char *pattern)
{
    memset(tracker, 0, sizeof(*tracker));
    g_mutex_init(&tracker->lock);
    g_cond_init(&tracker->cond);
    tracker->pattern = pattern;
}

static void tracker_clear(Tracker *tracker)
{
    g_mutex_clear(&tracker->lock);
    g_cond_clear(&tracker->cond);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Tracker, tracker_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Slot, slot_clear)

/* Creates and starts one VM whose callbacks report to @slot. */
static gboolean slot_boot(Slot *slot, Tracker *tracker, const MvmVmConfig *config, GError **error)
{
    MvmVm *vm = mvm_vm_new(config, error);

    if (vm == NULL)
        return FALSE;
    slot_attach(slot, tracker, vm);
    return mvm_vm_start(vm, error);
}

/* ---- first: new + start → first guest instruction ---- */

/*
 * CPU time of this thread: mvm_vm_new's own cost. Its wall time also holds the kernel's
 * SRCU grace periods (KVM_CREATE_IRQCHIP, memslots), during which it sleeps.
 */
static gint64 thread_cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000;
}

static int cmd_first(const char *kernel, guint reps)
{
    g_autoptr(MvmVmConfig) config = make_config(kernel, "mode=idle", BENCH_MEMORY_MIB);
    g_autoptr(GArray) new_us = bench_samples_new(), start_us = bench_samples_new();
    g_autoptr(GArray) first_us = bench_samples_new(), stop_us = bench_samples_new();
    g_autoptr(GArray) new_cpu_us = bench_samples_new();
    g_autoptr(GError) error = NULL;

    for (guint i = 0; i < reps; i++) {
        Tracker tracker;
        Slot slot = {0};
        tracker_init(&tracker, NULL);
        gint64 cpu0 = thread_cpu_us(), t0 = g_get_monotonic_time();
        MvmVm *vm = mvm_vm_new(config, &error);
        if (vm == NULL)
            return bench_fail("mvm_vm_new", error);
        gint64 t1 = g_get_monotonic_time();
        bench_samples_add(new_cpu_us, thread_cpu_us() - cpu0);
        slot_attach(&slot, &tracker, vm);
        if (!mvm_vm_start(vm, &error))
            return bench_fail("mvm_vm_start", error);
        if (!tracker_wait(&tracker, &tracker.markers, 1))
            return bench_fail("waiting for marker 1", NULL);
        gint64 t2 = g_get_monotonic_time();
        slot_clear(&slot); /* stop + free */
        bench_samples_add(new_us, t1 - t0);
        bench_samples_add(start_us, slot.marker_us - t1);
        bench_samples_add(first_us, slot.marker_us - t0);
        bench_samples_add(stop_us, g_get_monotonic_time() - t2);
        tracker_clear(&tracker);
    }
    bench_print_samples(NULL, "new_us", new_us, "start_to_first_us", start_us, "new_to_first_us",
                        first_us, "stop_free_us", stop_us, "new_cpu_us", new_cpu_us, NULL);
    return 0;
}

/* ---- many: N idle VMs in one process ---- */

static void free_slot(gpointer data, gpointer user_data)
{
    slot_clear(data);
}

/*
 * Most of a VM's teardown is the kernel's: closing the VM fd waits for SRCU grace periods
 * (irqchip, PIT), ~15-25 ms here, with the CPU idle. Closing on several threads overlaps them;
 * how much that gains is what this figure shows beside the one-at-a-time one of `first`.
 */
static gboolean free_in_parallel(Slot *slots, guint n, GError **error)
{
    GThreadPool *pool = g_thread_pool_new(free_slot, NULL, FREE_THREADS, TRUE, error);

    if (pool == NULL)
        return FALSE;
    for (guint i = 0; i < n; i++)
        g_thread_pool_push(pool, &slots[i], NULL);
    g_thread_pool_free(pool, FALSE, TRUE);
    return TRUE;
}

static int cmd_many(const char *kernel, guint n, guint64 memory_mib)
{
    g_autoptr(MvmVmConfig) config = make_config(kernel, "mode=idle", memory_mib);
    g_autoptr(GError) error = NULL;
    g_autofree Slot *slots = g_new0(Slot, n);
    Tracker tracker;
    BenchMem before, after;

    tracker_init(&tracker, "IDLE");
    /* Warm up what every VM shares (the /dev/kvm probe, GLib's thread pool, malloc arenas). */
    {
        Slot warm = {0};
        if (!slot_boot(&warm, &tracker, config, &error))
            return bench_fail("warm-up VM", error);
        if (!tracker_wait(&tracker, &tracker.hits, 1))
            return bench_fail("warm-up VM: waiting for IDLE", NULL);
        slot_clear(&warm);
        tracker.markers = tracker.hits = 0;
    }
    if (!bench_mem_read(0, &before, &error))
        return bench_fail("/proc/self/status", error);

    gint64 cpu0 = bench_cpu_time_us(), t0 = g_get_monotonic_time();
    for (guint i = 0; i < n; i++)
        if (!slot_boot(&slots[i], &tracker, config, &error))
            return bench_fail("create+start", error);
    gint64 t_started = g_get_monotonic_time();
    if (!tracker_wait(&tracker, &tracker.markers, n))
        return bench_fail("waiting for marker 1 of every VM", NULL);
    gint64 t_last = 0;
    for (guint i = 0; i < n; i++)
        t_last = MAX(t_last, slots[i].marker_us);
    gint64 cpu1 = bench_cpu_time_us();

    /* Memory once every guest has parked (it printed IDLE), so nothing is still growing. */
    if (!tracker_wait(&tracker, &tracker.hits, n))
        return bench_fail("waiting for IDLE of every VM", NULL);
    gint64 cpu2 = bench_cpu_time_us();
    if (!bench_mem_read(0, &after, &error))
        return bench_fail("/proc/self/status", error);

    gint64 t_stop = g_get_monotonic_time();
    if (!free_in_parallel(slots, n, &error))
        return bench_fail("stop+free", error);
    gint64 t_stopped = g_get_monotonic_time();
    tracker_clear(&tracker);

    GString *json = g_string_new(NULL);
    bench_json_int(json, "n", n);
    bench_json_int(json, "memory_mib", (gint64)memory_mib);
    bench_json_int(json, "create_start_calls_us", t_started - t0);
    bench_json_int(json, "to_last_first_insn_us", t_last - t0);
    bench_json_int(json, "cpu_us", cpu1 - cpu0);
    bench_json_int(json, "cpu_idle_us", cpu2 - cpu0);
    bench_json_int(json, "stop_free_all_us", t_stopped - t_stop);
    bench_json_int(json, "free_threads", FREE_THREADS);
    bench_json_mem(json, "before", &before);
    bench_json_mem(json, "after", &after);
    bench_json_print(json);
    return 0;
}

/* ---- pause: pause/resume of a guest busy at CPL3 ---- */

/* @idle: the guest parks in HLT (a sleeping vCPU thread) instead of computing at CPL3. */
static int cmd_pause(const char *kernel, guint reps, gboolean idle)
{
    g_autoptr(MvmVmConfig) config =
        make_config(kernel, idle ? "mode=idle" : "mode=compute iterations=1e13", BENCH_MEMORY_MIB);
    g_autoptr(GArray) pause_us = bench_samples_new(), resume_us = bench_samples_new();
    g_autoptr(GError) error = NULL;
    g_auto(Tracker) tracker = {0};
    g_auto(Slot) slot = {0}; /* declared after the tracker: freed before it */

    tracker_init(&tracker, idle ? "IDLE" : "COMPUTE iterations");
    if (!slot_boot(&slot, &tracker, config, &error))
        return bench_fail("create+start", error);
    if (!tracker_wait(&tracker, &tracker.hits, 1))
        return bench_fail("waiting for the guest to compute", NULL);
    for (guint i = 0; i < reps; i++) {
        g_usleep(2000); /* let the vCPU get back into the guest */
        gint64 t0 = g_get_monotonic_time();
        if (!mvm_vm_pause(slot.vm, &error))
            return bench_fail("mvm_vm_pause", error);
        gint64 t1 = g_get_monotonic_time();
        if (!mvm_vm_resume(slot.vm, &error))
            return bench_fail("mvm_vm_resume", error);
        bench_samples_add(pause_us, t1 - t0);
        bench_samples_add(resume_us, g_get_monotonic_time() - t1);
    }
    bench_print_samples(NULL, "pause_us", pause_us, "resume_us", resume_us, NULL);
    return 0;
}

/* ---- snapshot: write, then restore to running ---- */

/* Allocated and apparent size of the files in @dir, in KiB. */
static void dir_sizes(const char *dir, gint64 *allocated_kib, gint64 *apparent_kib)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    *allocated_kib = *apparent_kib = 0;
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        GStatBuf st;
        if (g_stat(path, &st) == 0) {
            *allocated_kib += (gint64)st.st_blocks / 2;
            *apparent_kib += (gint64)st.st_size / 1024;
        }
    }
}

typedef struct {
    GArray *snapshot_us, *restore_us, *resume_us, *output_us;
    gint64 allocated_kib, apparent_kib;
} SnapshotRun;

/* Restores @dir into a new VM, runs it, and waits for its next COUNTER line. */
static gboolean restore_round(const char *dir, Tracker *tracker, SnapshotRun *run, GError **error)
{
    g_auto(Slot) restored = {0};
    guint hits = tracker->hits;
    gint64 t0 = g_get_monotonic_time();
    MvmVm *vm = mvm_vm_restore(dir, MVM_RESTORE_NONE, error);

    if (vm == NULL)
        return FALSE;
    gint64 t1 = g_get_monotonic_time();
    slot_attach(&restored, tracker, vm);
    if (!mvm_vm_resume(vm, error))
        return FALSE;
    gint64 t2 = g_get_monotonic_time();
    if (!tracker_wait(tracker, &tracker->hits, hits + 1)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "the restored guest printed nothing");
        return FALSE;
    }
    bench_samples_add(run->restore_us, t1 - t0);
    bench_samples_add(run->resume_us, t2 - t0);
    bench_samples_add(run->output_us, g_get_monotonic_time() - t0);
    return TRUE;
}

/* One round: boot the pattern guest, snapshot it, restore it into a new VM and see it go on. */
static gboolean snapshot_round(const char *kernel, const char *dir, SnapshotRun *run,
                               GError **error)
{
    g_autoptr(MvmVmConfig) config = make_config(
        kernel, "mode=pattern pages=64 every=20 delay=1000 verify=sample", BENCH_MEMORY_MIB);
    g_auto(Tracker) tracker = {0};
    g_auto(Slot) slot = {0}; /* declared after the tracker: freed before it */

    tracker_init(&tracker, "COUNTER");
    if (!slot_boot(&slot, &tracker, config, error))
        return FALSE;
    if (!tracker_wait(&tracker, &tracker.hits, 1)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "no COUNTER line from the guest");
        return FALSE;
    }
    gint64 t0 = g_get_monotonic_time();
    if (!mvm_vm_snapshot(slot.vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, error))
        return FALSE;
    bench_samples_add(run->snapshot_us, g_get_monotonic_time() - t0);
    slot_clear(&slot);
    dir_sizes(dir, &run->allocated_kib, &run->apparent_kib);
    return restore_round(dir, &tracker, run, error);
}

static int cmd_snapshot(const char *kernel, const char *parent, guint reps)
{
    g_autoptr(GError) error = NULL;
    SnapshotRun run = {
        bench_samples_new(), bench_samples_new(), bench_samples_new(), bench_samples_new(), 0, 0};
    GString *json = g_string_new(NULL);

    if (mvm_vm_snapshot == NULL || mvm_vm_restore == NULL) {
        bench_json_str(json, "unavailable", "mvm_vm_snapshot/mvm_vm_restore not built in lib/");
        bench_json_print(json);
        return 0;
    }
    for (guint i = 0; i < reps; i++) {
        g_autofree char *dir = g_strdup_printf("%s/snap%u", parent, i);
        gboolean ok = snapshot_round(kernel, dir, &run, &error);
        rm_rf(dir);
        if (!ok) {
            g_string_free(json, TRUE);
            return bench_fail("snapshot/restore", error);
        }
    }
    bench_json_int(json, "memory_mib", BENCH_MEMORY_MIB);
    bench_json_samples(json, "snapshot_us", run.snapshot_us);
    bench_json_samples(json, "restore_us", run.restore_us);
    bench_json_samples(json, "restore_resume_us", run.resume_us);
    bench_json_samples(json, "restore_to_output_us", run.output_us);
    bench_json_int(json, "allocated_kib", run.allocated_kib);
    bench_json_int(json, "apparent_kib", run.apparent_kib);
    bench_json_print(json);
    g_array_unref(run.snapshot_us);
    g_array_unref(run.restore_us);
    g_array_unref(run.resume_us);
    g_array_unref(run.output_us);
    return 0;
}

/* ---- lazy: restore to the guest's first work, RAM read on touch ---- */

#define LAZY_MEMORY_MIB 512
#define LAZY_WORK       "r 0x1000000 0x2000000 0x1000\n" /* mode=dirty: read 16 MiB */
#define LAZY_DATA_START (16 * MVM_MIB)                   /* below: the guest's own image */

static gboolean lazy_failed(GError **error, const char *what)
{
    g_set_error_literal(error, MVM_ERROR, MVM_ERROR_FAILED, what);
    return FALSE;
}

typedef enum { LAZY_COPY, LAZY_ON_TOUCH, LAZY_PREFETCH, N_LAZY_MODES } LazyMode;
static const char *const lazy_mode_names[] = {"copy", "lazy", "prefetch"};

/* A dirty guest's snapshot in @dir, every page of its RAM above its image full of data. */
static gboolean lazy_prepare(const char *kernel, const char *dir, GError **error)
{
    g_autoptr(MvmVmConfig) config = make_config(kernel, "mode=dirty", LAZY_MEMORY_MIB);
    g_auto(Tracker) tracker = {0};
    g_auto(Slot) slot = {0};

    tracker_init(&tracker, "DIRTY ready");
    if (!slot_boot(&slot, &tracker, config, error))
        return FALSE;
    if (!tracker_wait(&tracker, &tracker.hits, 1))
        return lazy_failed(error, "the dirty guest did not start");
    if (!mvm_vm_snapshot(slot.vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, error))
        return FALSE;
    g_autofree char *path = g_build_filename(dir, "memory", NULL);
    g_autofree guint8 *chunk = g_malloc(MVM_MIB);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    memset(chunk, 0x5a, MVM_MIB);
    for (guint64 off = LAZY_DATA_START; fd >= 0 && off < LAZY_MEMORY_MIB * MVM_MIB; off += MVM_MIB)
        if (pwrite(fd, chunk, MVM_MIB, (off_t)off) != MVM_MIB)
            break;
    if (fd < 0 || fsync(fd) < 0) {
        if (fd >= 0)
            close(fd);
        return lazy_failed(error, "cannot fill the snapshot's memory");
    }
    close(fd);
    return TRUE;
}

/* Drops the page cache of @dir's files: the next restore reads them from the disk. */
static void drop_cache(const char *dir)
{
    static const char *const names[] = {"state", "memory", "working-set"};

    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *path = g_build_filename(dir, names[i], NULL);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
}

typedef struct {
    GArray *restore_us[N_LAZY_MODES][2], *work_us[N_LAZY_MODES][2]; /* [mode][cold] */
    guint64 pages_read[N_LAZY_MODES];
    guint64 working_set_pages;
} LazyRun;

static gboolean lazy_save_working_set(MvmVm *vm, const char *dir, LazyRun *run, GError **error)
{
    g_autofree char *path = g_build_filename(dir, "working-set", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0)
        return lazy_failed(error, "cannot create the working set file");
    gboolean ok = mvm_vm_save_working_set(vm, fd, error);
    g_autoptr(MvmWorkingSet) set = ok ? mvm_working_set_read_fd(fd, error) : NULL;
    close(fd);
    if (set != NULL)
        run->working_set_pages = mvm_working_set_get_n_pages(set);
    return set != NULL;
}

static MvmWorkingSet *lazy_read_working_set(const char *dir, GError **error)
{
    g_autofree char *path = g_build_filename(dir, "working-set", NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        lazy_failed(error, "no working set file");
        return NULL;
    }
    MvmWorkingSet *set = mvm_working_set_read_fd(fd, error);
    close(fd);
    return set;
}

/* One restore of @dir in @mode: to the end of the guest's read. */
static gboolean lazy_round(const char *dir, LazyMode mode, gboolean cold, LazyRun *run,
                           GError **error)
{
    g_auto(Tracker) tracker = {0};
    g_auto(Slot) slot = {0};
    static const MvmRestoreFlags flags[] = {MVM_RESTORE_COPY_MEMORY, MVM_RESTORE_LAZY,
                                            MVM_RESTORE_LAZY};
    guint64 total = 0;

    tracker_init(&tracker, "DIRTY sum");
    if (cold)
        drop_cache(dir);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    gint64 t0 = g_get_monotonic_time();
    /* The prefetch's working set file is read inside the measured time: a restore does so. */
    g_autoptr(MvmWorkingSet) set = mode == LAZY_PREFETCH ? lazy_read_working_set(dir, error) : NULL;
    const MvmRestoreOptions options = {.flags = flags[mode], .prefetch = set};
    MvmVm *vm = mode != LAZY_PREFETCH || set != NULL
                    ? mvm_vm_restore_full(dirfd, -1, -1, &options, error)
                    : NULL;
    close(dirfd);
    if (vm == NULL)
        return FALSE;
    gint64 t1 = g_get_monotonic_time();
    slot_attach(&slot, &tracker, vm);
    if (!mvm_vm_resume(vm, error))
        return FALSE;
    mvm_vm_console_write(vm, (const guint8 *)LAZY_WORK, strlen(LAZY_WORK));
    if (!tracker_wait(&tracker, &tracker.hits, 1))
        return lazy_failed(error, "the restored guest did not read");
    bench_samples_add(run->restore_us[mode][cold], t1 - t0);
    bench_samples_add(run->work_us[mode][cold], g_get_monotonic_time() - t0);
    if (mode != LAZY_COPY)
        mvm_vm_get_lazy_progress(vm, &run->pages_read[mode], &total);
    if (mode == LAZY_ON_TOUCH && run->working_set_pages == 0)
        return lazy_save_working_set(vm, dir, run, error);
    return TRUE;
}

static void lazy_json(GString *json, LazyRun *run)
{
    for (guint mode = 0; mode < N_LAZY_MODES; mode++) {
        for (guint cold = 0; cold < 2; cold++) {
            const char *cache = cold ? "cold" : "warm";
            g_autofree char *restore =
                g_strdup_printf("%s_%s_restore_us", lazy_mode_names[mode], cache);
            g_autofree char *work = g_strdup_printf("%s_%s_work_us", lazy_mode_names[mode], cache);
            bench_json_samples(json, restore, run->restore_us[mode][cold]);
            bench_json_samples(json, work, run->work_us[mode][cold]);
            g_array_unref(run->restore_us[mode][cold]);
            g_array_unref(run->work_us[mode][cold]);
        }
        if (mode != LAZY_COPY) {
            g_autofree char *pages = g_strdup_printf("%s_pages_read", lazy_mode_names[mode]);
            bench_json_int(json, pages, (gint64)run->pages_read[mode]);
        }
    }
    bench_json_int(json, "working_set_pages", (gint64)run->working_set_pages);
}

static int cmd_lazy(const char *kernel, const char *parent, guint reps)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_build_filename(parent, "lazy", NULL);
    GString *json = g_string_new(NULL);
    LazyRun run = {0};

    if (!mvm_lazy_restore_supported(&error)) {
        bench_json_str(json, "unavailable", error->message);
        bench_json_print(json);
        return 0;
    }
    for (guint mode = 0; mode < N_LAZY_MODES; mode++)
        for (guint cold = 0; cold < 2; cold++) {
            run.restore_us[mode][cold] = bench_samples_new();
            run.work_us[mode][cold] = bench_samples_new();
        }
    gboolean ok = g_mkdir_with_parents(dir, 0700) == 0 && lazy_prepare(kernel, dir, &error);
    /* Interleaved, so that a slower moment of the host weighs on every mode alike. */
    for (guint i = 0; ok && i < reps; i++)
        for (guint mode = 0; ok && mode < N_LAZY_MODES; mode++)
            for (guint cold = 0; ok && cold < 2; cold++)
                ok = lazy_round(dir, mode, !cold, &run, &error);
    rm_rf(dir);
    bench_json_int(json, "memory_mib", LAZY_MEMORY_MIB);
    lazy_json(json, &run);
    if (!ok) {
        g_string_free(json, TRUE);
        return bench_fail("lazy restore", error);
    }
    bench_json_print(json);
    return 0;
}

/* ---- exits, filter, blk: one exit, one system call, one virtio-blk request, sandboxed ---- */

/* Appends `"key": [v, ...]` of a GArray of doubles (µs with fractions: a call is ~0.2 µs). */
static GArray *doubles_new(void)
{
    return g_array_new(FALSE, FALSE, sizeof(double));
}

/* The number after `field` in a /proc status file, else 0. */
static gint64 status_number(const char *status, const char *field)
{
    const char *p = strstr(status, field);

    return p != NULL ? g_ascii_strtoll(p + strlen(field), NULL, 10) : 0;
}

/*
 * "NAME:FILTERS ..." for each thread of this process: how many seccomp filters it runs (the
 * process's deny list, its own). KVM's worker thread of a VM (kvm-nx-lpage-recovery) has the
 * vCPU thread's: the vCPU thread makes it, already filtered (at its first KVM_RUN here).
 */
static char *thread_filters(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/task", 0, NULL);
    g_autoptr(GString) out = g_string_new(NULL);
    const char *tid;

    while (dir != NULL && (tid = g_dir_read_name(dir)) != NULL) {
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/status", tid);
        g_autofree char *status = NULL;
        if (!g_file_get_contents(path, &status, NULL, NULL) || !g_str_has_prefix(status, "Name:\t"))
            continue;
        const char *name = status + strlen("Name:\t");
        g_string_append_printf(out, "%s%.*s:%" G_GINT64_FORMAT, out->len ? " " : "",
                               (int)strcspn(name, "\n"), name,
                               status_number(status, "\nSeccomp_filters:\t"));
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}

/*
 * A guest like the measured ones, parked in `mode=idle`: it warms up what every VM of the
 * process shares (the /dev/kvm probe, the sandbox's filters) and, while it is up, shows the
 * filters its threads run (thread_filters()). NULL with @error set.
 */
static char *warm_up(const MvmVmConfig *measured, GError **error)
{
    g_autoptr(MvmVmConfig) config = mvm_vm_config_copy(measured);
    g_auto(Tracker) tracker = {0};
    g_auto(Slot) slot = {0}; /* declared after the tracker: freed before it */

    g_free(config->cmdline);
    config->cmdline = g_strdup("mode=idle");
    tracker_init(&tracker, "IDLE");
    if (!slot_boot(&slot, &tracker, config, error))
        return NULL;
    if (!tracker_wait(&tracker, &tracker.hits, 1)) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "the warm-up guest printed no IDLE");
        return NULL;
    }
    return thread_filters();
}

/* Boots @config, waits for its debug exit 0 and leaves the console output in @slot. */
static gboolean run_guest(Slot *slot, Tracker *tracker, const MvmVmConfig *config, GError **error)
{
    slot->output = g_string_new(NULL);
    if (!slot_boot(slot, tracker, config, error))
        return FALSE;
    mvm_vm_wait(slot->vm, WAIT_US);
    if (mvm_vm_get_exit_kind(slot->vm) != MVM_EXIT_DEBUG_EXIT ||
        mvm_vm_get_exit_code(slot->vm) != 0) {
        g_autofree char *reason = mvm_vm_dup_exit_reason(slot->vm);
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "the guest did not pass (%s): %.200s",
                    reason != NULL ? reason : "still running", slot->output->str);
        return FALSE;
    }
    return TRUE;
}

/* The guest's `WHAT rounds N tsc T` line (mode=iotest), as µs per round. */
static gboolean iotest_figure(const char *out, const char *what, guint32 tsc_khz, double *us)
{
    g_autofree char *head = g_strdup_printf("IOTEST %s rounds ", what);
    const char *line = strstr(out, head);
    guint64 rounds, tsc;

    if (line == NULL ||
        sscanf(line + strlen(head), "%" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT, &rounds,
               &tsc) != 2 ||
        rounds == 0)
        return FALSE;
    *us = (double)tsc * 1e3 / tsc_khz / (double)rounds;
    return TRUE;
}

static guint32 tsc_khz_of(MvmVm *vm)
{
    return mvm_vcpu_get_tsc_khz(vm->vcpus[0].vcpu, NULL);
}

static void json_sandbox(GString *json, const char *filters)
{
    bench_json_str(json, "sandbox", mvm_sandbox_mode_to_string(mvm_sandbox_get_mode()));
    bench_json_str(json, "thread_filters", filters);
}

/*
 * Each round trip is an `out` and an `in` (or an MMIO write and read): two exits to the VMM,
 * each one KVM_RUN on the vCPU thread, the call a seccomp filter sees.
 */
static int cmd_exits(const char *kernel, guint rounds, guint reps)
{
    g_autofree char *cmdline = g_strdup_printf("mode=iotest iterations=%u", rounds);
    g_autoptr(MvmVmConfig) config = make_config(kernel, cmdline, BENCH_MEMORY_MIB);
    g_autoptr(GArray) pio = doubles_new(), mmio32 = doubles_new(), mmio64 = doubles_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *filters = warm_up(config, &error);
    guint32 tsc_khz = 0;
    MvmVmStats stats;

    if (filters == NULL)
        return bench_fail("warm-up guest", error);
    for (guint i = 0; i < reps; i++) {
        g_auto(Tracker) tracker = {0};
        g_auto(Slot) slot = {0};
        double us[3];
        tracker_init(&tracker, NULL);
        if (!run_guest(&slot, &tracker, config, &error))
            return bench_fail("mode=iotest", error);
        tsc_khz = tsc_khz_of(slot.vm);
        if (tsc_khz == 0 || !iotest_figure(slot.output->str, "pio", tsc_khz, &us[0]) ||
            !iotest_figure(slot.output->str, "mmio32", tsc_khz, &us[1]) ||
            !iotest_figure(slot.output->str, "mmio64", tsc_khz, &us[2]))
            return bench_fail("no IOTEST figures (or no TSC rate)", NULL);
        g_array_append_val(pio, us[0]);
        g_array_append_val(mmio32, us[1]);
        g_array_append_val(mmio64, us[2]);
        mvm_vm_get_stats(slot.vm, &stats);
    }
    GString *json = g_string_new(NULL);
    json_sandbox(json, filters);
    bench_json_int(json, "rounds", rounds);
    bench_json_int(json, "tsc_khz", tsc_khz);
    /* Of the last guest: KVM_RUN returns, to check that a round trip is two. */
    bench_json_int(json, "exits_io", (gint64)stats.exits_io);
    bench_json_int(json, "exits_mmio", (gint64)stats.exits_mmio);
    bench_json_doubles(json, "pio_round_trip_us", pio);
    bench_json_doubles(json, "mmio32_round_trip_us", mmio32);
    bench_json_doubles(json, "mmio64_round_trip_us", mmio64);
    bench_json_print(json);
    return 0;
}

/*
 * On a thread of its own in the sandbox of @flags (as a vCPU or I/O thread enters it), @calls
 * system calls the filter lets through and the kernel refuses at once (fd -1), @reps times: the
 * price of the filter on that call, beside the same loop with MVM_SANDBOX=off.
 */
typedef struct {
    MvmSandboxFlags flags;
    guint reps, calls;
    GArray *us; /* per call */
    GError *error;
} FilterRun;

static gpointer filter_thread(gpointer data)
{
    FilterRun *run = data;
    char byte;

    if (!mvm_sandbox_enter(run->flags, "bench", &run->error))
        return NULL;
    for (guint r = 0; r < run->reps; r++) {
        gint64 t0 = g_get_monotonic_time();
        for (guint i = 0; i < run->calls; i++) {
            if (run->flags & MVM_SANDBOX_VCPU)
                (void)!ioctl(-1, KVM_RUN, 0);
            else
                (void)!read(-1, &byte, 1);
        }
        double us = (double)(g_get_monotonic_time() - t0) / run->calls;
        g_array_append_val(run->us, us);
    }
    return NULL;
}

static gboolean filter_run(FilterRun *run, GError **error)
{
    if (!mvm_sandbox_prepare(run->flags, error))
        return FALSE;
    GThread *thread = g_thread_try_new("bench-filter", filter_thread, run, error);
    if (thread == NULL)
        return FALSE;
    g_thread_join(thread);
    if (run->error != NULL) {
        g_propagate_error(error, g_steal_pointer(&run->error));
        return FALSE;
    }
    return TRUE;
}

static int cmd_filter(guint reps, guint calls)
{
    g_autoptr(GArray) vcpu_us = doubles_new(), io_us = doubles_new();
    FilterRun vcpu = {MVM_SANDBOX_VCPU, reps, calls, vcpu_us, NULL};
    FilterRun io = {MVM_SANDBOX_IO, reps, calls, io_us, NULL};
    g_autoptr(GError) error = NULL;

    if (!filter_run(&vcpu, &error) || !filter_run(&io, &error))
        return bench_fail("a sandboxed thread", error);
    GString *json = g_string_new(NULL);
    bench_json_str(json, "sandbox", mvm_sandbox_mode_to_string(mvm_sandbox_get_mode()));
    bench_json_int(json, "calls", calls);
    bench_json_doubles(json, "kvm_run_call_us", vcpu_us);
    bench_json_doubles(json, "io_read_call_us", io_us);
    bench_json_print(json);
    return 0;
}

/* A raw image of @size bytes, written out (not sparse), so reads and writes find blocks. */
static char *make_image(const char *dir, gsize size, GError **error)
{
    g_autofree char *path = g_build_filename(dir, "blkbench.img", NULL);
    g_autofree char *zeros = g_malloc0(size);

    if (!g_file_set_contents(path, zeros, (gssize)size, error))
        return NULL;
    return g_steal_pointer(&path);
}

/*
 * One request: the guest fills a descriptor chain and notifies (ioeventfd: no exit to the
 * VMM); the VM's I/O thread wakes, reads the disk with preadv/pwritev and signals the irqfd;
 * the guest, polling the used ring, reads and acknowledges InterruptStatus (two MMIO exits).
 * The host's clock between the markers around `count` requests.
 */
static int cmd_blk(const char *kernel, const char *dir, guint count, guint kib, guint reps)
{
    g_autofree char *cmdline = g_strdup_printf("mode=blkbench count=%u kib=%u", count, kib);
    g_autoptr(MvmVmConfig) config = make_config(kernel, cmdline, BENCH_MEMORY_MIB);
    g_autoptr(GArray) read_us = doubles_new(), write_us = doubles_new();
    g_autoptr(GArray) notify_us = doubles_new(), trapped_us = doubles_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *image = make_image(dir, (gsize)count * kib * 1024, &error);

    if (image == NULL)
        return bench_fail("disk image", error);
    MvmDiskConfig *disk = g_new0(MvmDiskConfig, 1);
    disk->path = g_strdup(image);
    disk->fd = -1;
    config->disks = g_ptr_array_new();
    g_ptr_array_add(config->disks, disk);
    g_autofree char *filters = warm_up(config, &error);
    if (filters == NULL) {
        g_unlink(image);
        return bench_fail("warm-up guest", error);
    }
    for (guint i = 0; i < reps; i++) {
        g_auto(Tracker) tracker = {0};
        g_auto(Slot) slot = {0};
        TestguestBlkbench guest;
        double r, w;
        tracker_init(&tracker, NULL);
        if (!run_guest(&slot, &tracker, config, &error)) {
            g_unlink(image);
            return bench_fail("mode=blkbench", error);
        }
        guint32 tsc_khz = tsc_khz_of(slot.vm);
        const gint64 *m = slot.blk_us;
        if (m[0] == 0 || m[1] < m[0] || m[2] < m[1] || m[3] < m[2] || tsc_khz == 0 ||
            !testguest_parse_blkbench(slot.output->str, tsc_khz, &guest)) {
            g_unlink(image);
            return bench_fail("no BLKBENCH markers or figures", NULL);
        }
        r = (double)(m[1] - m[0]) / count;
        w = (double)(m[3] - m[2]) / count;
        g_array_append_val(read_us, r);
        g_array_append_val(write_us, w);
        g_array_append_val(notify_us, guest.notify_us);
        g_array_append_val(trapped_us, guest.trapped_us);
    }
    g_unlink(image);
    GString *json = g_string_new(NULL);
    json_sandbox(json, filters);
    bench_json_int(json, "count", count);
    bench_json_int(json, "kib", kib);
    bench_json_doubles(json, "read_request_us", read_us);
    bench_json_doubles(json, "write_request_us", write_us);
    bench_json_doubles(json, "notify_us", notify_us);
    bench_json_doubles(json, "trapped_write_us", trapped_us);
    bench_json_print(json);
    return 0;
}

static guint parse_count(const char *s)
{
    guint64 v = g_ascii_strtoull(s, NULL, 10);
    return (guint)CLAMP(v, 1, 100000);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 2 ? argv[1] : "";

    if (g_str_equal(cmd, "first") && argc == 4)
        return cmd_first(argv[2], parse_count(argv[3]));
    if (g_str_equal(cmd, "many") && argc == 5)
        return cmd_many(argv[2], parse_count(argv[3]), parse_count(argv[4]));
    if (g_str_equal(cmd, "pause") && (argc == 4 || (argc == 5 && g_str_equal(argv[4], "idle"))))
        return cmd_pause(argv[2], parse_count(argv[3]), argc == 5);
    if (g_str_equal(cmd, "snapshot") && argc == 5)
        return cmd_snapshot(argv[2], argv[3], parse_count(argv[4]));
    if (g_str_equal(cmd, "lazy") && argc == 5)
        return cmd_lazy(argv[2], argv[3], parse_count(argv[4]));
    /* Before any other thread, as in the daemon: the deny list every thread inherits. */
    if (g_str_equal(cmd, "exits") || g_str_equal(cmd, "filter") || g_str_equal(cmd, "blk")) {
        g_autoptr(GError) error = NULL;
        if (!mvm_sandbox_lock_process(&error))
            return bench_fail("mvm_sandbox_lock_process", error);
    }
    if (g_str_equal(cmd, "exits") && argc == 5)
        return cmd_exits(argv[2], parse_count(argv[3]), parse_count(argv[4]));
    if (g_str_equal(cmd, "filter") && argc == 4)
        return cmd_filter(parse_count(argv[2]), parse_count(argv[3]));
    if (g_str_equal(cmd, "blk") && argc == 7)
        return cmd_blk(argv[2], argv[3], parse_count(argv[4]), parse_count(argv[5]),
                       parse_count(argv[6]));
    g_printerr(
        "usage: bench-lib first KERNEL REPS | many KERNEL N MEM_MIB | pause KERNEL REPS [idle] |"
        " snapshot KERNEL DIR REPS | lazy KERNEL DIR REPS | exits KERNEL ROUNDS REPS | filter REPS "
        "CALLS |"
        " blk KERNEL DIR COUNT KIB REPS\n");
    return 2;
}
