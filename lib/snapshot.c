/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot and restore of a whole VM (format in snapshot.h).
 *
 * Writing: with every vCPU parked, the machine state goes into one GVariant
 * and guest RAM into a sparse file; both are written under temporary names,
 * synced, and renamed into place. The old `state` is removed first and the
 * new one renamed last, so a directory never pairs a `state` with a `memory`
 * of another snapshot.
 *
 * Restoring: read and check all of `state` and the size of `memory` first
 * (snapshot-format.c); only then create the KVM VM around its memory (a
 * copy, see restore_memory()) and load the state into it, devices before the
 * interrupt controllers (a device restore re-asserts its interrupt line,
 * which the controllers' own state then overrides), controllers before vCPUs.
 * The VM comes out paused, its clock frozen at the snapshot's time and its
 * I/O thread parked until the first resume.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu-features.h"
#include "device-state.h"
#include "snapshot.h"
#include "vm-private.h"
#include "vm-virtio.h"

#define STATE_NAME      "state"
#define MEMORY_NAME     "memory"
#define STATE_TMP_NAME  ".state.tmp"
#define MEMORY_TMP_NAME ".memory.tmp"
#define PAGE_SIZE_4K    4096
#define IO_CHUNK        (8 * 1024 * 1024)

/* ---- capturing the machine ---- */

static GVariant *blob(const void *data, gsize size)
{
    return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data, size, 1);
}

static GVariant *save_vcpus(MvmVm *vm, GError **error)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a" MVM_SNAPSHOT_VCPU_TYPE));
    for (guint i = 0; i < vm->n_vcpus; i++) {
        g_autoptr(MvmVcpuState) state = mvm_vcpu_save_state(vm->vcpus[i].vcpu, error);
        if (state == NULL) {
            g_prefix_error(error, "vCPU %u: ", i);
            g_variant_builder_clear(&b);
            return NULL;
        }
        g_variant_builder_add_value(&b, mvm_vcpu_state_to_variant(state));
    }
    return g_variant_builder_end(&b);
}

static GVariant *save_irqchip(MvmVm *vm, guint32 chip_id, GError **error)
{
    struct kvm_irqchip chip = {.chip_id = chip_id};

    if (mvm_kvm_ioctl(vm->fd, KVM_GET_IRQCHIP, &chip) < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_IRQCHIP");
        return NULL;
    }
    if (chip_id == KVM_IRQCHIP_IOAPIC)
        return blob(&chip.chip.ioapic, sizeof(chip.chip.ioapic));
    return blob(&chip.chip.pic, sizeof(chip.chip.pic));
}

static GVariant *save_devices(MvmVm *vm, GError **error)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (guint i = 0; i < mvm_vm_get_n_device_states(vm); i++) {
        const MvmDeviceState *d = mvm_vm_get_device_state(vm, i);
        g_autoptr(GVariant) state = d->ops->save(d->device, error);
        if (state == NULL) {
            g_prefix_error(error, "device %s: ", d->name);
            g_variant_builder_clear(&b);
            return NULL;
        }
        g_variant_builder_add(&b, "{sv}", d->name, state);
    }
    return g_variant_builder_end(&b);
}

static GVariant *sink(GVariant *value)
{
    return value != NULL ? g_variant_ref_sink(value) : NULL;
}

static gboolean get_clock(MvmVm *vm, struct kvm_clock_data *clock, GError **error)
{
    /* Paused with a frozen clock: the guest's time is the one taken at the pause. */
    if (vm->clock_frozen) {
        *clock = vm->frozen_clock;
        return TRUE;
    }
    memset(clock, 0, sizeof(*clock));
    if (mvm_kvm_ioctl(vm->fd, KVM_GET_CLOCK, clock) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_GET_CLOCK");
    return TRUE;
}

/* All vCPUs must be parked. Returns the payload (non-floating). */
static GVariant *capture(MvmVm *vm, GError **error)
{
    struct kvm_clock_data clock;
    struct kvm_pit_state2 pit = {0};
    g_autoptr(GVariant) vcpus = NULL, master = NULL, slave = NULL, ioapic = NULL;
    g_autoptr(GVariant) devices = NULL, serial = NULL, i8042 = NULL;

    if (!get_clock(vm, &clock, error))
        return NULL;
    if (mvm_kvm_ioctl(vm->fd, KVM_GET_PIT2, &pit) < 0) {
        mvm_kvm_set_errno_error(error, "KVM_GET_PIT2");
        return NULL;
    }
    if ((vcpus = sink(save_vcpus(vm, error))) == NULL ||
        (master = sink(save_irqchip(vm, KVM_IRQCHIP_PIC_MASTER, error))) == NULL ||
        (slave = sink(save_irqchip(vm, KVM_IRQCHIP_PIC_SLAVE, error))) == NULL ||
        (ioapic = sink(save_irqchip(vm, KVM_IRQCHIP_IOAPIC, error))) == NULL ||
        (devices = sink(save_devices(vm, error))) == NULL)
        return NULL;
    serial = mvm_serial_save(vm->serial);
    i8042 = mvm_i8042_save(vm->i8042);

    /* The keys and their types are the format's (snapshot.h). */
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE(MVM_SNAPSHOT_PAYLOAD_TYPE));
    g_variant_builder_add(&b, "{sv}", "config", mvm_snapshot_config_to_variant(vm->config));
    g_variant_builder_add(&b, "{sv}", "vcpus", vcpus);
    g_variant_builder_add(&b, "{sv}", "clock",
                          g_variant_new("(tu)", (guint64)clock.clock, (guint32)0));
    g_variant_builder_add(&b, "{sv}", "pic-master", master);
    g_variant_builder_add(&b, "{sv}", "pic-slave", slave);
    g_variant_builder_add(&b, "{sv}", "ioapic", ioapic);
    g_variant_builder_add(&b, "{sv}", "pit", blob(&pit, sizeof(pit)));
    g_variant_builder_add(&b, "{sv}", "serial", serial);
    g_variant_builder_add(&b, "{sv}", "i8042", i8042);
    g_variant_builder_add(&b, "{sv}", "devices", devices);
    g_variant_builder_add(&b, "{sv}", "memory-size",
                          g_variant_new_uint64(mvm_memory_get_size(vm->memory)));
    g_variant_builder_add(
        &b, "{sv}", "cpu-template",
        g_variant_new_string(mvm_cpu_template_get_name(vm->config->cpu_template)));
    if (vm->vmgenid_addr != 0)
        g_variant_builder_add(&b, "{sv}", "vmgenid-addr", g_variant_new_uint64(vm->vmgenid_addr));
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

/* ---- writing files ---- */

static gboolean write_all_at(int fd, const guint8 *data, gsize len, guint64 offset, GError **error)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, data, MIN(len, (gsize)IO_CHUNK), (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot write the snapshot's %s",
                                       "files");
        data += n;
        len -= (gsize)n;
        offset += (guint64)n;
    }
    return TRUE;
}

static gboolean page_is_zero(const guint8 *page)
{
    const guint64 *w = (const guint64 *)page;
    guint64 acc = 0;

    if (w[0] != 0)
        return FALSE; /* most used pages end here */
    for (gsize i = 0; i < PAGE_SIZE_4K / 8; i++)
        acc |= w[i];
    return acc == 0;
}

/* Writes the non-zero pages of [start, end) (file offsets = offsets in RAM); zero pages stay holes.
 */
static gboolean write_nonzero(int fd, const guint8 *ram, guint64 start, guint64 end, GError **error)
{
    guint64 off = start;

    while (off < end) {
        while (off < end && page_is_zero(ram + off))
            off += PAGE_SIZE_4K;
        guint64 run = off;
        while (run < end && run - off < IO_CHUNK && !page_is_zero(ram + run))
            run += PAGE_SIZE_4K;
        if (run > off && !write_all_at(fd, ram + off, run - off, off, error))
            return FALSE;
        off = run;
    }
    return TRUE;
}

/*
 * The file holds RAM in memfd order, which is the order of memory.c's one
 * mapping: region 1 (above the MMIO gap) follows region 0 in both.
 * RAM in a memfd: only what SEEK_DATA finds was ever written, so holes are
 * skipped without reading (reading would allocate them). RAM mapped from a
 * sealed memfd (a restored VM) has no fd here: every page is looked at.
 */
static const guint8 *ram_in_file_order(MvmVm *vm, GError **error)
{
    const guint8 *ram = mvm_memory_get_region(vm->memory, 0)->host;

    for (guint i = 0; i < mvm_memory_get_n_regions(vm->memory); i++) {
        const MvmMemoryRegion *r = mvm_memory_get_region(vm->memory, i);
        if (r->host != ram + r->fd_offset) {
            g_set_error_literal(error, MVM_ERROR, MVM_ERROR_FAILED,
                                "guest RAM is not one mapping in file order");
            return NULL;
        }
    }
    return ram;
}

/* A diff: the runs of changed pages, their zero pages left as holes. */
static gboolean write_changed(const guint8 *ram, guint64 n_pages, const guint64 *changed, int out,
                              GError **error)
{
    G_STATIC_ASSERT(G_BYTE_ORDER == G_LITTLE_ENDIAN); /* the words' bytes are the payload's */
    guint64 start = 0, end = 0;

    while (mvm_snapshot_next_run((const guint8 *)changed, n_pages, &start, &end))
        if (!write_nonzero(out, ram, start * PAGE_SIZE_4K, end * PAGE_SIZE_4K, error))
            return FALSE;
    return TRUE;
}

static gboolean write_memory(MvmVm *vm, int out, const guint64 *changed, GError **error)
{
    guint64 size = mvm_memory_get_size(vm->memory);
    const guint8 *ram = ram_in_file_order(vm, error);
    int fd = mvm_memory_get_fd(vm->memory);

    if (ram == NULL)
        return FALSE;
    if (ftruncate(out, (off_t)size) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot size the snapshot's %s",
                                   MEMORY_NAME);
    if (changed != NULL)
        return write_changed(ram, mvm_memory_get_n_pages(vm->memory), changed, out, error);
    if (fd < 0)
        return write_nonzero(out, ram, 0, size, error);
    for (off_t off = 0; (guint64)off < size;) {
        off_t data = lseek(fd, off, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        off_t hole = data < 0 ? -1 : lseek(fd, data, SEEK_HOLE);
        if (hole < 0) /* no SEEK_DATA here: look at everything */
            return write_nonzero(out, ram, (guint64)off, size, error);
        hole = MIN((guint64)hole, size);
        if (!write_nonzero(out, ram, (guint64)data & ~(guint64)(PAGE_SIZE_4K - 1), (guint64)hole,
                           error))
            return FALSE;
        off = hole;
    }
    return TRUE;
}

static int create_temp(int dirfd, const char *name, GError **error)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot create %s in the snapshot directory",
                            name);
    return fd;
}

/* Into a file that may hold an older snapshot: emptied first, so no old page survives a hole. */
static gboolean write_memory_file(MvmVm *vm, int fd, const guint64 *changed, GError **error)
{
    if (ftruncate(fd, 0) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot empty the snapshot's %s",
                                   MEMORY_NAME);
    return write_memory(vm, fd, changed, error) &&
           (fdatasync(fd) == 0 ||
            mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot sync the snapshot's %s",
                                MEMORY_NAME));
}

static gboolean write_state_file(int fd, GBytes *state, GError **error)
{
    gsize len;
    const guint8 *data = g_bytes_get_data(state, &len);

    if (ftruncate(fd, 0) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot empty the snapshot's %s",
                                   STATE_NAME);
    return write_all_at(fd, data, len, 0, error) &&
           (fdatasync(fd) == 0 || mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                                      "cannot sync the snapshot's %s", STATE_NAME));
}

/* What a snapshot writes: the encoded `state`, and the pages of `memory` (NULL: all of RAM). */
typedef struct {
    GBytes *state;
    const guint64 *changed;
} SnapshotFiles;

static gboolean write_into_dir(MvmVm *vm, const SnapshotFiles *files, gpointer data, GError **error)
{
    int dirfd = *(int *)data;
    int fd = create_temp(dirfd, MEMORY_TMP_NAME, error);
    gboolean ok = fd >= 0 && write_memory_file(vm, fd, files->changed, error);

    if (fd >= 0)
        close(fd);
    if (!ok)
        return FALSE;
    fd = create_temp(dirfd, STATE_TMP_NAME, error);
    ok = fd >= 0 && write_state_file(fd, files->state, error);
    if (fd >= 0)
        close(fd);
    if (!ok)
        return FALSE;
    if ((unlinkat(dirfd, STATE_NAME, 0) < 0 && errno != ENOENT) ||
        renameat(dirfd, MEMORY_TMP_NAME, dirfd, MEMORY_NAME) < 0 ||
        renameat(dirfd, STATE_TMP_NAME, dirfd, STATE_NAME) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot put the %s in place",
                                   "snapshot files");
    fsync(dirfd);
    return TRUE;
}

static gboolean write_into_fds(MvmVm *vm, const SnapshotFiles *files, gpointer data, GError **error)
{
    const int *fds = data; /* state, memory */

    /* Never into the file a lazy VM was restored from: a diff, or a full snapshot before it is
     * all read, would take the pages it has not read yet from under it. */
    if (mvm_memory_lazy_is_source(vm->memory, fds[0]) ||
        mvm_memory_lazy_is_source(vm->memory, fds[1])) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                            "the VM was restored lazily from that file, which it may still read");
        return FALSE;
    }
    return write_memory_file(vm, fds[1], files->changed, error) &&
           write_state_file(fds[0], files->state, error);
}

typedef gboolean (*WriteFunc)(MvmVm *vm, const SnapshotFiles *files, gpointer data, GError **error);

typedef struct {
    WriteFunc write;
    gpointer data;
    MvmSnapshotFlags flags;
} SnapshotWrite;

/* A diff's payload: the machine's, and what it is a diff of. */
static GVariant *add_diff_keys(GVariant *payload, MvmVm *vm, const guint64 *changed)
{
    GVariantDict dict;
    gsize n_bytes = (gsize)((mvm_memory_get_n_pages(vm->memory) + 7) / 8);

    g_variant_dict_init(&dict, payload);
    g_variant_dict_insert_value(&dict, "parent", blob(vm->diff_parent, sizeof(vm->diff_parent)));
    /* Little-endian words: byte i / 8 of the array holds page i at bit i % 8. */
    g_variant_dict_insert_value(&dict, "changed-pages", blob(changed, n_bytes));
    return g_variant_ref_sink(g_variant_dict_end(&dict));
}

static gboolean check_can_diff(MvmVm *vm, GError **error)
{
    if (vm->tracking && vm->has_diff_parent)
        return TRUE;
    g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_STATE,
                        "the VM tracks no changes: take a snapshot with change tracking first");
    return FALSE;
}

GBytes *mvm_snapshot_encode_vm(MvmVm *vm, GError **error)
{
    g_autoptr(GVariant) machine = capture(vm, error);

    return machine != NULL ? mvm_snapshot_encode(machine, MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR)
                           : NULL;
}

gboolean mvm_snapshot_write_state_fd(int fd, GBytes *state, GError **error)
{
    return write_state_file(fd, state, error);
}

gboolean mvm_snapshot_write_memory_fd(MvmVm *vm, int fd, GError **error)
{
    return write_memory(vm, fd, NULL, error);
}

static gboolean write_snapshot(MvmVm *vm, const SnapshotWrite *w, const guint64 *changed,
                               GError **error)
{
    gboolean diff = (w->flags & MVM_SNAPSHOT_DIFF) != 0;
    g_autoptr(GVariant) machine = capture(vm, error);

    if (machine == NULL)
        return FALSE;
    g_autoptr(GVariant) payload =
        diff ? add_diff_keys(machine, vm, changed) : g_variant_ref(machine);
    g_autoptr(GBytes) state = mvm_snapshot_encode(payload, MVM_SNAPSHOT_MAJOR, MVM_SNAPSHOT_MINOR);
    SnapshotFiles files = {state, diff ? changed : NULL};
    if (!w->write(vm, &files, w->data, error))
        return FALSE;
    if (vm->tracking || (w->flags & MVM_SNAPSHOT_TRACK_CHANGES)) {
        gsize len;
        const guint8 *data = g_bytes_get_data(state, &len);
        if (!mvm_snapshot_start_tracking(vm, error))
            return FALSE;
        mvm_snapshot_set_diff_parent(vm, data + len - MVM_SNAPSHOT_ID_SIZE);
    }
    return TRUE;
}

/*
 * While changes are tracked, every snapshot takes them (and becomes the next one's parent); if
 * it cannot be written they go back, so the next diff still has them.
 */
static gboolean snapshot_parked(MvmVm *vm, gpointer data, GError **error)
{
    const SnapshotWrite *w = data;
    g_autofree guint64 *changed = NULL;

    if ((w->flags & MVM_SNAPSHOT_DIFF) && !check_can_diff(vm, error))
        return FALSE;
    if (vm->tracking && (changed = mvm_snapshot_harvest_changes(vm, error)) == NULL)
        return FALSE;
    /*
     * A full snapshot writes what the memfd holds (write_memory()): of a lazily restored VM,
     * every page must be in first. A diff reads only its changed pages, through the mapping.
     */
    if (!(w->flags & MVM_SNAPSHOT_DIFF) && !mvm_vm_finish_lazy_restore(vm, error)) {
        if (changed != NULL)
            mvm_memory_give_back_written(vm->memory, changed);
        g_prefix_error(error, "snapshot: ");
        return FALSE;
    }
    if (!write_snapshot(vm, w, changed, error)) {
        if (changed != NULL)
            mvm_memory_give_back_written(vm->memory, changed);
        g_prefix_error(error, "snapshot: ");
        return FALSE;
    }
    return TRUE;
}

static gboolean snapshot_with(MvmVm *vm, MvmSnapshotFlags flags, WriteFunc write, gpointer data,
                              GError **error)
{
    SnapshotWrite w = {write, data, flags};
    MvmParkedFlags parked = (flags & MVM_SNAPSHOT_LEAVE_PAUSED) ? MVM_PARKED_LEAVE_PAUSED : 0;

    return mvm_vm_with_vcpus_parked(vm, "snapshot", parked, snapshot_parked, &w, error);
}

gboolean mvm_vm_snapshot_at(MvmVm *vm, int dirfd, MvmSnapshotFlags flags, GError **error)
{
    g_return_val_if_fail(vm != NULL, FALSE);
    g_return_val_if_fail(dirfd >= 0, FALSE);

    if (snapshot_with(vm, flags, write_into_dir, &dirfd, error))
        return TRUE;
    unlinkat(dirfd, MEMORY_TMP_NAME, 0);
    unlinkat(dirfd, STATE_TMP_NAME, 0);
    return FALSE;
}

gboolean mvm_vm_snapshot_to_fds(MvmVm *vm, int state_fd, int memory_fd, MvmSnapshotFlags flags,
                                GError **error)
{
    int fds[2] = {state_fd, memory_fd};

    g_return_val_if_fail(vm != NULL, FALSE);
    g_return_val_if_fail(state_fd >= 0 && memory_fd >= 0, FALSE);

    return snapshot_with(vm, flags, write_into_fds, fds, error);
}

gboolean mvm_vm_snapshot(MvmVm *vm, const char *dir, MvmSnapshotFlags flags, GError **error)
{
    g_return_val_if_fail(dir != NULL, FALSE);

    if (g_mkdir_with_parents(dir, 0700) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot create %s", dir);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot open %s", dir);
    gboolean ok = mvm_vm_snapshot_at(vm, dirfd, flags, error);
    close(dirfd);
    return ok;
}

/* ---- restoring ---- */

/* A snapshot file given by a caller is read only when it is a regular file: a FIFO would block. */
static gboolean check_member(int fd, const char *name, struct stat *st, GError **error)
{
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode))
        return mvm_snapshot_invalid(error, "%s is not a regular file", name);
    return TRUE;
}

/*
 * Opens a file of the snapshot without following links. O_NONBLOCK so that opening a FIFO in
 * the caller's place returns at once instead of waiting for a writer (on a regular file it
 * changes nothing); check_member() refuses it where the file is read, as for a caller's fd.
 */
static int open_member(int dirfd, const char *name, GError **error)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "invalid snapshot: cannot open %s",
                            name);
    return fd;
}

/* From offset 0 whatever the fd's position: a caller's fd may be read more than once. */
static GBytes *read_state(int fd, GError **error)
{
    struct stat st;

    if (!check_member(fd, STATE_NAME, &st, error))
        return NULL;
    if (st.st_size > MVM_SNAPSHOT_MAX_STATE_SIZE) {
        mvm_snapshot_invalid(error, "%s is larger than 32 MiB", STATE_NAME);
        return NULL;
    }
    gsize size = (gsize)st.st_size, done = 0;
    g_autofree guint8 *data = g_malloc(MAX(size, 1u));
    while (done < size) {
        ssize_t n = pread(fd, data + done, size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* shorter than fstat said: the size check below reports it */
        done += (gsize)n;
    }
    return g_bytes_new_take(g_steal_pointer(&data), done);
}

static void limits_from_kvm(const MvmKvm *kvm, MvmSnapshotLimits *limits)
{
    mvm_snapshot_limits_default(limits);
    limits->max_vcpus = MIN(kvm->max_vcpus, 255u);
    limits->max_msrs = kvm->msr_index_list->nmsrs;
    limits->msr_indices = kvm->msr_index_list->indices;
    limits->n_msr_indices = kvm->msr_index_list->nmsrs;
    limits->max_xsave = kvm->has_xsave ? MAX(kvm->xsave_size, sizeof(struct kvm_xsave)) : 0;
}

/* The legacy devices check their state themselves; try it on scratch copies before KVM. */
static gboolean precheck_devices(const MvmSnapshotState *state, GError **error)
{
    g_autoptr(MvmSerial) serial = mvm_serial_new(0, NULL, NULL, NULL, NULL);
    g_autoptr(MvmI8042) i8042 = mvm_i8042_new(0, NULL, NULL, NULL, NULL);

    return mvm_serial_restore(serial, state->serial, error) &&
           mvm_i8042_restore(i8042, state->i8042, error);
}

/* Every check of `state` that needs neither KVM nor another file: the decoder, the devices'. */
static MvmSnapshotState *decode_state_file(int state_fd, const MvmSnapshotLimits *limits,
                                           GError **error)
{
    g_autoptr(GBytes) bytes = read_state(state_fd, error);
    if (bytes == NULL)
        return NULL;
    gsize len;
    const guint8 *data = g_bytes_get_data(bytes, &len);
    g_autoptr(MvmSnapshotState) state = mvm_snapshot_decode(data, len, limits, error);
    if (state == NULL || !precheck_devices(state, error))
        return NULL;
    return g_steal_pointer(&state);
}

/* No KVM here: the decoder's own limits (the fuzzer's); a restore checks KVM's on top. */
MvmVmConfig *mvm_snapshot_read_config_fd(int state_fd, GError **error)
{
    MvmSnapshotLimits limits;

    g_return_val_if_fail(state_fd >= 0, NULL);

    mvm_snapshot_limits_default(&limits);
    g_autoptr(MvmSnapshotState) state = decode_state_file(state_fd, &limits, error);
    return state != NULL ? g_steal_pointer(&state->config) : NULL;
}

gboolean mvm_snapshot_read_ids_fd(int state_fd, guint8 id[MVM_SNAPSHOT_ID_SIZE],
                                  guint8 parent[MVM_SNAPSHOT_ID_SIZE], gboolean *has_parent,
                                  GError **error)
{
    MvmSnapshotLimits limits;

    g_return_val_if_fail(state_fd >= 0 && id != NULL && parent != NULL && has_parent, FALSE);

    mvm_snapshot_limits_default(&limits);
    g_autoptr(MvmSnapshotState) state = decode_state_file(state_fd, &limits, error);
    if (state == NULL)
        return FALSE;
    memcpy(id, state->id, MVM_SNAPSHOT_ID_SIZE);
    memcpy(parent, state->parent, MVM_SNAPSHOT_ID_SIZE);
    *has_parent = state->has_parent;
    return TRUE;
}

MvmVmConfig *mvm_snapshot_read_config_at(int dirfd, GError **error)
{
    g_return_val_if_fail(dirfd >= 0, NULL);

    int fd = open_member(dirfd, STATE_NAME, error);
    if (fd < 0)
        return NULL;
    MvmVmConfig *config = mvm_snapshot_read_config_fd(fd, error);
    close(fd);
    return config;
}

MvmSnapshotState *mvm_snapshot_load_state(int state_fd, int memory_fd, GError **error)
{
    const MvmKvm *kvm = mvm_kvm_get(error);
    MvmSnapshotLimits limits;
    struct stat st;

    if (kvm == NULL)
        return NULL;
    limits_from_kvm(kvm, &limits);
    g_autoptr(MvmSnapshotState) state = decode_state_file(state_fd, &limits, error);
    if (state == NULL || !check_member(memory_fd, MEMORY_NAME, &st, error))
        return NULL;
    if ((guint64)st.st_size != state->memory_size) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "invalid snapshot: %s has %" G_GUINT64_FORMAT
                    " bytes, the VM has %" G_GUINT64_FORMAT,
                    MEMORY_NAME, (guint64)st.st_size, state->memory_size);
        return NULL;
    }
    return g_steal_pointer(&state);
}

/*
 * Guest RAM is the one thing of a snapshot read after the restore returns, by KVM and by the
 * device models, on every touch of a page: a mapped file that shrinks (truncated by whoever can
 * write it) then raises SIGBUS, which takes the whole process and every VM in it down. So RAM
 * is a copy, except from a memfd sealed so that it can never shrink (nor change), which is
 * mapped lazily unless MVM_RESTORE_COPY_MEMORY asks for the copy anyway. Memory images are
 * such memfds, made once per file (memory-images.c).
 */
static MvmMemory *restore_memory(int fd, guint64 size, const MvmRestoreOptions *options,
                                 GError **error)
{
    if (options->flags & MVM_RESTORE_COPY_MEMORY)
        return mvm_memory_new_copy(fd, size, error);
    if (mvm_memory_fd_is_sealed(fd, size))
        return mvm_memory_new_mapped(fd, size, error);
    if (options->memory_images != NULL)
        return mvm_memory_images_map(options->memory_images, fd, size, options->memory_image_owner,
                                     options->charge_image, options->charge_image_data, error);
    return mvm_memory_new_copy(fd, size, error);
}

static gboolean restore_devices(MvmVm *vm, const MvmSnapshotState *state, GError **error)
{
    GVariantIter iter;
    const char *name;

    if (!mvm_serial_restore(vm->serial, state->serial, error) ||
        !mvm_i8042_restore(vm->i8042, state->i8042, error))
        return FALSE;
    for (guint i = 0; i < mvm_vm_get_n_device_states(vm); i++) {
        const MvmDeviceState *d = mvm_vm_get_device_state(vm, i);
        g_autoptr(GVariant) value = g_variant_lookup_value(state->devices, d->name, NULL);
        if (value == NULL)
            return mvm_snapshot_invalid(error, "no state for device %s", d->name);
        if (!d->ops->restore(d->device, value, error)) {
            g_prefix_error(error, "device %s: ", d->name);
            return FALSE;
        }
    }
    g_variant_iter_init(&iter, state->devices);
    while (g_variant_iter_next(&iter, "{&sv}", &name, NULL)) {
        guint i = 0;
        while (i < mvm_vm_get_n_device_states(vm) &&
               strcmp(mvm_vm_get_device_state(vm, i)->name, name) != 0)
            i++;
        if (i == mvm_vm_get_n_device_states(vm))
            return mvm_snapshot_invalid(error,
                                        "state for device %s, which this VM "
                                        "does not have",
                                        name);
    }
    return TRUE;
}

static gboolean vm_ioctl(MvmVm *vm, unsigned long request, void *arg, const char *name,
                         GError **error)
{
    if (mvm_kvm_ioctl(vm->fd, request, arg) < 0)
        return mvm_kvm_set_errno_error(error, name);
    return TRUE;
}

/* Refuses, before any vCPU state goes in, a TSC rate this host can neither match nor scale to. */
static gboolean check_tsc(MvmVm *vm, const MvmVcpuState *state, GError **error)
{
    gboolean required = FALSE;
    MvmVcpu *vcpu = vm->vcpus[0].vcpu;

    if (state->tsc_khz == 0 ||
        !mvm_vcpu_is_tsc_scaling_required(vcpu, state->tsc_khz, &required, NULL))
        return TRUE; /* the snapshot's or this host's rate is unknown: nothing to compare */
    if (required && !vm->kvm->has_tsc_control) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                    "the snapshot's TSC runs at %u kHz and this host's at %u kHz; KVM here "
                    "cannot scale it (no KVM_CAP_TSC_CONTROL)",
                    state->tsc_khz, mvm_vcpu_get_tsc_khz(vcpu, NULL));
        return FALSE;
    }
    return TRUE;
}

static gboolean restore_machine(MvmVm *vm, MvmSnapshotState *state, GError **error)
{
    if (!restore_devices(vm, state, error))
        return FALSE;
    if (!vm_ioctl(vm, KVM_SET_IRQCHIP, &state->pic_master, "KVM_SET_IRQCHIP (PIC master)", error) ||
        !vm_ioctl(vm, KVM_SET_IRQCHIP, &state->pic_slave, "KVM_SET_IRQCHIP (PIC slave)", error) ||
        !vm_ioctl(vm, KVM_SET_IRQCHIP, &state->ioapic, "KVM_SET_IRQCHIP (IOAPIC)", error) ||
        !vm_ioctl(vm, KVM_SET_PIT2, &state->pit, "KVM_SET_PIT2", error))
        return FALSE;
    for (guint i = 0; i < vm->n_vcpus; i++) {
        const MvmVcpuState *vcpu = g_ptr_array_index(state->vcpus, i);
        if (!check_tsc(vm, vcpu, error))
            return FALSE;
        if (!mvm_vcpu_restore_state(vm->vcpus[i].vcpu, vcpu, error)) {
            g_prefix_error(error, "vCPU %u: ", i);
            return FALSE;
        }
    }
    /* The clock goes in at the first resume, so time stands still until then. */
    vm->frozen_clock = (struct kvm_clock_data){.clock = state->clock.clock};
    vm->clock_frozen = TRUE;
    return TRUE;
}

/* KVM refusing the state is the snapshot's fault: say so with the same code as the checks. */
static void as_invalid(GError **error)
{
    if (error != NULL && *error != NULL && (*error)->domain == MVM_ERROR &&
        (*error)->code == MVM_ERROR_FAILED) {
        (*error)->code = MVM_ERROR_INVALID_ARGUMENT;
        g_prefix_error(error, "invalid snapshot: KVM refused its state: ");
    }
}

static guint n_items(const GPtrArray *array)
{
    return array != NULL ? array->len : 0;
}

/*
 * The guest's devices come from the snapshot, their back ends from the caller:
 * as many disks and NICs, the same read-only flags (a guest told its disk is
 * writable must not get a read-only file, nor a caller's read-only file a
 * writer), a vsock socket exactly when the snapshot has a vsock device, and its
 * CID when the back ends name one. NICs keep the snapshot's MAC, which the
 * guest knows; a clone (@clone) takes the back ends' MACs and CID instead.
 */
static gboolean use_backends(MvmVmConfig *config, const MvmVmConfig *backends, gboolean clone,
                             GError **error)
{
    if (n_items(config->disks) != n_items(backends->disks) ||
        n_items(config->nics) != n_items(backends->nics) ||
        (config->vsock_cid != 0) != (backends->vsock_uds_path != NULL))
        return mvm_snapshot_invalid(
            error, "it has %u disks, %u NICs and %s vsock; the back ends given are %u, %u and %s",
            n_items(config->disks), n_items(config->nics), config->vsock_cid ? "a" : "no",
            n_items(backends->disks), n_items(backends->nics),
            backends->vsock_uds_path ? "a socket" : "none");
    /*
     * The guest knows its CID from this state. Checked here, on the state being restored,
     * though a caller may have compared an earlier read of the file: it may have changed since.
     */
    if (!clone && backends->vsock_cid != 0 && backends->vsock_cid != config->vsock_cid)
        return mvm_snapshot_invalid(error, "its guest has vsock cid %u; the back ends say %u",
                                    config->vsock_cid, backends->vsock_cid);
    for (guint i = 0; i < n_items(config->disks); i++) {
        const MvmDiskConfig *mine = g_ptr_array_index(config->disks, i);
        const MvmDiskConfig *theirs = g_ptr_array_index(backends->disks, i);
        if (mine->read_only != theirs->read_only)
            return mvm_snapshot_invalid(error, "disk %u is %s in the snapshot", i,
                                        mine->read_only ? "read-only" : "writable");
    }
    g_autoptr(MvmVmConfig) copy = mvm_vm_config_copy(backends);
    for (guint i = 0; !clone && i < n_items(config->nics); i++)
        memcpy(((MvmNetConfig *)g_ptr_array_index(copy->nics, i))->mac,
               ((MvmNetConfig *)g_ptr_array_index(config->nics, i))->mac, 6);
    /* Swapped: the snapshot's own back ends go with @copy. */
    GPtrArray *disks = config->disks, *nics = config->nics;
    char *uds = config->vsock_uds_path;
    config->disks = g_steal_pointer(&copy->disks);
    config->nics = g_steal_pointer(&copy->nics);
    config->vsock_uds_path = g_steal_pointer(&copy->vsock_uds_path);
    copy->disks = disks;
    copy->nics = nics;
    copy->vsock_uds_path = uds;
    return TRUE;
}

/* Without back ends the snapshot's own paths are opened: a disk or NIC given by fd has none. */
static gboolean check_own_backends(const MvmVmConfig *config, GError **error)
{
    for (guint i = 0; i < n_items(config->disks); i++)
        if (((const MvmDiskConfig *)g_ptr_array_index(config->disks, i))->path == NULL)
            return mvm_snapshot_invalid(
                error, "disk %u was given by fd: a snapshot cannot reopen it (give its back end)",
                i);
    for (guint i = 0; i < n_items(config->nics); i++)
        if (((const MvmNetConfig *)g_ptr_array_index(config->nics, i))->tap_name == NULL)
            return mvm_snapshot_invalid(
                error, "NIC %u was given by fd: a snapshot cannot reopen it (give its back end)",
                i);
    return TRUE;
}

static guint32 random_cid(guint32 not_this)
{
    guint32 cid;

    do
        cid = g_random_int();
    while (cid < MVM_VSOCK_CID_MIN || cid > MVM_VSOCK_CID_MAX || cid == not_this);
    return cid;
}

/*
 * MVM_RESTORE_CLONE: the MACs and CID of @backends where they name one (use_backends() took
 * their MACs already), new random ones elsewhere (an all-zero MAC gets one in mvm_vm_alloc()).
 */
static void clone_identity(MvmVmConfig *config, const MvmVmConfig *backends)
{
    for (guint i = 0; backends == NULL && i < n_items(config->nics); i++)
        memset(((MvmNetConfig *)g_ptr_array_index(config->nics, i))->mac, 0, 6);
    if (config->vsock_cid == 0)
        return;
    if (backends != NULL && backends->vsock_cid != 0)
        config->vsock_cid = backends->vsock_cid;
    else
        config->vsock_cid = random_cid(config->vsock_cid);
}

MvmVm *mvm_vm_restore_at(int dirfd, MvmRestoreFlags flags, GError **error)
{
    return mvm_vm_restore_with_backends(dirfd, NULL, flags, error);
}

MvmVm *mvm_vm_restore_with_backends(int dirfd, const MvmVmConfig *backends, MvmRestoreFlags flags,
                                    GError **error)
{
    return mvm_vm_restore_with_memory(dirfd, -1, backends, flags, error);
}

MvmVm *mvm_vm_restore_with_memory(int dirfd, int memory_fd, const MvmVmConfig *backends,
                                  MvmRestoreFlags flags, GError **error)
{
    const MvmRestoreOptions options = {.flags = flags, .backends = backends};

    g_return_val_if_fail(dirfd >= 0, NULL);
    return mvm_vm_restore_full(dirfd, -1, memory_fd, &options, error);
}

MvmVm *mvm_vm_restore_from_fds(int state_fd, int memory_fd, const MvmVmConfig *backends,
                               MvmRestoreFlags flags, GError **error)
{
    const MvmRestoreOptions options = {.flags = flags, .backends = backends};

    g_return_val_if_fail(state_fd >= 0 && memory_fd >= 0, NULL);
    return mvm_vm_restore_full(-1, state_fd, memory_fd, &options, error);
}

/*
 * A guest that saw a feature keeps using it; on a host whose KVM lacks it, it would die of #UD
 * (SIGILL in its programs) some time after the restore. So the restore refuses, naming them.
 */
static gboolean check_cpu_features(const MvmSnapshotState *state, GError **error)
{
    for (guint i = 0; i < state->vcpus->len; i++) {
        const MvmVcpuState *vcpu = g_ptr_array_index(state->vcpus, i);
        if (!mvm_cpuid_check_supported(vcpu->cpuid, "the snapshot's guest saw", error))
            return FALSE;
    }
    return TRUE;
}

/* Guest RAM for @state: its chain laid together, or its own `memory` (restore_memory()). */
static MvmMemory *restored_memory(const MvmSnapshotState *state, GPtrArray *layers, int memory_fd,
                                  const MvmRestoreOptions *options, GError **error)
{
    if (layers->len > 0)
        return mvm_snapshot_chain_memory(options->layers, layers, state, memory_fd, error);
    if (options->flags & MVM_RESTORE_SHARE_MEMORY)
        return mvm_memory_new_shared(memory_fd, state->memory_size, error);
    if (options->flags & MVM_RESTORE_LAZY)
        return mvm_snapshot_lazy_memory(state, memory_fd, options->prefetch, error);
    return restore_memory(memory_fd, state->memory_size, options, error);
}

/*
 * The built machine gets @state. Paused like any paused VM: the device back ends stay parked
 * until the first resume. Before the devices get their state, whose restore kicks the queues the
 * guest had filled: those requests are served once the guest runs, not while a paused VM is on
 * show or saved.
 */
static gboolean restore_into(MvmVm *vm, MvmSnapshotState *state, const MvmRestoreOptions *options,
                             GError **error)
{
    mvm_vm_quiesce_virtio(vm, TRUE);
    if (options->flags & MVM_RESTORE_CLONE)
        mvm_vm_virtio_set_clone(vm);
    if (!restore_machine(vm, state, error)) {
        as_invalid(error);
        return FALSE;
    }
    mvm_vm_virtio_sync_macs(vm);
    /* Before the generation ID is written: its page differs from the snapshot's. */
    if (options->flags & MVM_RESTORE_TRACK_CHANGES) {
        if (!mvm_snapshot_start_tracking(vm, error))
            return FALSE;
        mvm_snapshot_set_diff_parent(vm, state->id);
    }
    /* After the irqchip's state, which would otherwise drop the edge that tells the guest. */
    if (!mvm_vm_vmgenid_restore(vm, state->vmgenid_addr, options->generation_id, error))
        return FALSE;
    vm->state = MVM_VM_STATE_PAUSED;
    vm->pause_requested = TRUE;
    return TRUE;
}

/*
 * A lazy restore reads the snapshot's own `memory` as it is: not a copy, not a chain's layers
 * laid together. A prefetch only ever helps a lazy one.
 */
static gboolean check_lazy(const MvmRestoreOptions *options, GError **error)
{
    gboolean lazy = (options->flags & MVM_RESTORE_LAZY) != 0;

    if (lazy && ((options->flags & MVM_RESTORE_COPY_MEMORY) || options->n_layers > 0)) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                            "a lazy restore reads the snapshot's memory as it is: not with a "
                            "copy of it, nor with a diff snapshot's layers");
        return FALSE;
    }
    if (!lazy && options->prefetch != NULL) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                            "a working set can be prefetched only by a lazy restore");
        return FALSE;
    }
    return TRUE;
}

/*
 * Shared RAM is @memory_fd itself: nothing is read into it, so neither a copy nor a chain's
 * layers laid together, nor a lazy fill of pages it already has.
 */
static gboolean check_share(const MvmRestoreOptions *options, GError **error)
{
    if ((options->flags & MVM_RESTORE_SHARE_MEMORY) &&
        ((options->flags & (MVM_RESTORE_COPY_MEMORY | MVM_RESTORE_LAZY)) ||
         options->n_layers > 0)) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                            "shared memory is the memfd itself: not with a copy of it, a lazy "
                            "restore, nor a diff snapshot's layers");
        return FALSE;
    }
    return TRUE;
}

/* The machine @state describes, with RAM from @memory_fd, once @options approved it. */
static MvmVm *restore_fds(int state_fd, int memory_fd, const MvmRestoreOptions *options,
                          GError **error)
{
    if (!check_lazy(options, error) || !check_share(options, error))
        return NULL;
    g_autoptr(MvmSnapshotState) state = mvm_snapshot_load_state(state_fd, memory_fd, error);
    if (state == NULL)
        return NULL;
    gboolean clone = (options->flags & MVM_RESTORE_CLONE) != 0;
    if (options->backends != NULL ? !use_backends(state->config, options->backends, clone, error)
                                  : !check_own_backends(state->config, error))
        return NULL;
    if (clone)
        clone_identity(state->config, options->backends);
    if (!check_cpu_features(state, error))
        return NULL;
    /* Before any guest memory is allocated: the snapshot decides how much, not the caller. */
    if (options->approve != NULL && !options->approve(state->config, options->approve_data, error))
        return NULL;
    /* After the approval too: reading a chain of 63 states costs memory and time. */
    g_autoptr(GPtrArray) layers =
        mvm_snapshot_load_layers(state, options->layers, options->n_layers, error);
    if (layers == NULL)
        return NULL;
    /* A private mapping keeps the memfd alive once the caller closes @memory_fd. */
    MvmMemory *memory = restored_memory(state, layers, memory_fd, options, error);
    if (memory == NULL)
        return NULL;

    g_autoptr(MvmVm) vm = mvm_vm_alloc(state->config, error);
    if (vm == NULL) {
        mvm_memory_free(memory);
        return NULL;
    }
    if (!mvm_vm_build(vm, memory, error) || !restore_into(vm, state, options, error))
        return NULL;
    return g_steal_pointer(&vm);
}

MvmVm *mvm_vm_restore_full(int dirfd, int state_fd, int memory_fd, const MvmRestoreOptions *options,
                           GError **error)
{
    g_return_val_if_fail(options != NULL, NULL);
    g_return_val_if_fail(dirfd >= 0 || (state_fd >= 0 && memory_fd >= 0), NULL);
    g_return_val_if_fail((options->flags & ~(MVM_RESTORE_COPY_MEMORY | MVM_RESTORE_CLONE |
                                             MVM_RESTORE_TRACK_CHANGES | MVM_RESTORE_LAZY |
                                             MVM_RESTORE_SHARE_MEMORY)) == 0,
                         NULL);
    g_return_val_if_fail(options->n_layers == 0 || options->layers != NULL, NULL);

    int own_state_fd = state_fd >= 0 ? -1 : open_member(dirfd, STATE_NAME, error);
    int use_state_fd = state_fd >= 0 ? state_fd : own_state_fd;
    int own_memory_fd =
        use_state_fd < 0 || memory_fd >= 0 ? -1 : open_member(dirfd, MEMORY_NAME, error);
    int use_memory_fd = memory_fd >= 0 ? memory_fd : own_memory_fd;
    MvmVm *vm = use_state_fd < 0 || use_memory_fd < 0
                    ? NULL
                    : restore_fds(use_state_fd, use_memory_fd, options, error);

    if (own_state_fd >= 0)
        close(own_state_fd);
    if (own_memory_fd >= 0)
        close(own_memory_fd);
    return vm;
}

MvmVm *mvm_vm_restore(const char *dir, MvmRestoreFlags flags, GError **error)
{
    g_return_val_if_fail(dir != NULL, NULL);

    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        mvm_set_errno_error(error, MVM_ERROR_INVALID_ARGUMENT, "cannot open snapshot %s", dir);
        return NULL;
    }
    MvmVm *vm = mvm_vm_restore_at(dirfd, flags, error);
    close(dirfd);
    return vm;
}
