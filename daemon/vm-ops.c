/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The operations' worker threads. Code here runs on the operation's own thread (or, for the
 * end of a run that got no thread, on the main loop in its stead) and touches only its OpData,
 * the run's lib VM and the run's atomic state: never the VM service, its properties or its
 * callers, which are the main loop's (vm-service.c).
 */
#include "vm-ops.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu-templates.h"
#include "errors.h"
#include "fd-closer.h"

/* ---- the record, made and freed on the main loop --------------------------------------- */

void mvmd_op_args_clear(OpArgs *args)
{
    g_clear_pointer(&args->dir, g_free);
    /* The caller's descriptors: closing one may wait for the caller (fd-closer.h). */
    mvmd_clear_fd_later(&args->dir_fd);
    mvmd_clear_fd_later(&args->state_fd);
    mvmd_clear_fd_later(&args->memory_fd);
    mvmd_clear_fd_later(&args->working_set_fd);
}

char *mvmd_hex_format(const guint8 *bytes, gsize n)
{
    GString *hex = g_string_sized_new(2 * n);

    for (gsize i = 0; i < n; i++)
        g_string_append_printf(hex, "%02x", bytes[i]);
    return g_string_free(hex, FALSE);
}

/* One lowercase hex digit's value, or -1 (g_ascii_xdigit_value() takes uppercase too). */
static int lower_hex_value(char c)
{
    return g_ascii_isdigit(c) || (c >= 'a' && c <= 'f') ? g_ascii_xdigit_value(c) : -1;
}

gboolean mvmd_hex_parse(const char *text, guint8 *bytes, gsize n)
{
    gboolean ok = strlen(text) == 2 * n;

    for (gsize i = 0; ok && i < n; i++) {
        int hi = lower_hex_value(text[2 * i]), lo = hi < 0 ? -1 : lower_hex_value(text[2 * i + 1]);

        ok = lo >= 0;
        bytes[i] = ok ? (guint8)(hi << 4 | lo) : 0;
    }
    return ok;
}

char *mvmd_snapshot_id_format(const guint8 id[MVM_SNAPSHOT_ID_SIZE])
{
    return mvmd_hex_format(id, MVM_SNAPSHOT_ID_SIZE);
}

gboolean mvmd_snapshot_id_parse(const char *text, const char *key, guint8 id[MVM_SNAPSHOT_ID_SIZE],
                                GError **error)
{
    gboolean ok = mvmd_hex_parse(text, id, MVM_SNAPSHOT_ID_SIZE);

    if (!ok)
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "option '%s': not a snapshot ID, which is %d lowercase hex digits (the last "
                    "%d bytes of the snapshot's 'state' file)",
                    key, 2 * MVM_SNAPSHOT_ID_SIZE, MVM_SNAPSHOT_ID_SIZE);
    return ok;
}

static void set_restore(OpData *d, const MvmdVmDefinition *definition)
{
    d->restore_dir = g_strdup(definition->snapshot_dir);
    d->restore_fd = definition->snapshot_fd;
    d->restore_state_fd = definition->snapshot_state_fd;
    d->restore_memory_fd = definition->snapshot_memory_fd;
    d->restore_layers = g_memdup2(definition->snapshot_layers,
                                  definition->n_snapshot_layers * sizeof(MvmSnapshotFiles));
    d->n_restore_layers = definition->n_snapshot_layers;
    d->restore_flags = definition->copy_memory ? MVM_RESTORE_COPY_MEMORY : MVM_RESTORE_NONE;
    if (definition->clone)
        d->restore_flags |= MVM_RESTORE_CLONE;
    if (definition->track_changes)
        d->restore_flags |= MVM_RESTORE_TRACK_CHANGES;
    if (definition->lazy)
        d->restore_flags |= MVM_RESTORE_LAZY;
    d->restore_own_backends = definition->devices.from_snapshot;
}

OpData *mvmd_vm_op_data_new(Op op, MvmdVmRun *run, OpArgs *args, const MvmdVmDefinition *definition,
                            const char *cpu_template_dir, MvmMemoryImages *memory_images)
{
    OpData *d = g_new0(OpData, 1);
    const OpArgs none = OP_ARGS_INIT;

    d->op = op;
    d->run = mvmd_vm_run_ref(run);
    d->args = args ? *args : none; /* taken */
    d->restore_fd = d->restore_state_fd = d->restore_memory_fd = -1;
    d->handoff_state_fd = d->handoff_memory_fd = -1;
    if (op == OP_START) {
        d->mvm_config = mvmd_vm_definition_to_mvm(definition);
        d->cpu_template = g_strdup(definition->cpu_template);
        d->cpu_template_dir = g_strdup(cpu_template_dir);
        d->memory_images = mvm_memory_images_ref(memory_images);
        d->owner = definition->owner;
        set_restore(d, definition);
    }
    return d;
}

void mvmd_vm_op_data_free(OpData *d)
{
    if (d->mvm_config) {
        /* Borrowed from the definition: not the library's to close. */
        d->mvm_config->kernel_fd = -1;
        d->mvm_config->initrd_fd = -1;
        mvm_vm_config_free(d->mvm_config);
    }
    mvmd_op_args_clear(&d->args);
    g_clear_pointer(&d->run, mvmd_vm_run_unref);
    g_free(d->restore_dir);
    g_free(d->restore_layers); /* the fds are the definition's */
    g_clear_pointer(&d->prefetch, mvm_working_set_free);
    g_free(d->reason);
    g_free(d->cpu_template);
    g_free(d->cpu_template_dir);
    g_clear_pointer(&d->memory_images, mvm_memory_images_unref);
    g_clear_pointer(&d->cpu_config, g_variant_unref);
    if (d->handoff_state_fd >= 0)
        close(d->handoff_state_fd);
    if (d->handoff_memory_fd >= 0)
        close(d->handoff_memory_fd);
    if (d->handoff_backends) {
        mvm_vm_config_close_fds(d->handoff_backends);
        mvm_vm_config_free(d->handoff_backends);
    }
    g_free(d);
}

/* ---- on the worker thread -------------------------------------------------------------- */

/*
 * A path from the definition is opened here rather than by the library, so that a file that
 * is missing or unreadable at start is told apart (Failed: the host, not the call, is wrong)
 * from a file that is no loadable image (InvalidArgument, from the library).
 */
static int open_boot_file(const char *path, const char *what, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot open the %s %s", what, path);
    return fd;
}

/* Gives the library fds only: ours (closed after the build) or the caller's (rewound). */
static gboolean worker_open_files(MvmVmConfig *mvm, int *owned, GError **error)
{
    if (mvm->kernel_fd < 0 && mvm->kernel_path) {
        owned[0] = mvm->kernel_fd = open_boot_file(mvm->kernel_path, "kernel", error);
        if (owned[0] < 0)
            return FALSE;
    }
    if (mvm->initrd_fd < 0 && mvm->initrd_path) {
        owned[1] = mvm->initrd_fd = open_boot_file(mvm->initrd_path, "initrd", error);
        if (owned[1] < 0)
            return FALSE;
    }
    /* A passed fd is shared with earlier runs: read it from the start again. */
    if (mvm->kernel_fd >= 0)
        lseek(mvm->kernel_fd, 0, SEEK_SET);
    if (mvm->initrd_fd >= 0)
        lseek(mvm->initrd_fd, 0, SEEK_SET);
    return TRUE;
}

/* The template as it is now, not as it was at CreateVM: its file is the administrator's. */
static gboolean worker_load_cpu_template(OpData *d, GError **error)
{
    if (!d->cpu_template)
        return TRUE;
    d->mvm_config->cpu_template =
        mvmd_cpu_template_load(d->cpu_template_dir, d->cpu_template, error);
    return d->mvm_config->cpu_template != NULL;
}

static MvmVm *worker_build(OpData *d, GError **error)
{
    int owned[2] = {-1, -1};
    gboolean opened =
        worker_load_cpu_template(d, error) && worker_open_files(d->mvm_config, owned, error);
    MvmVm *vm = opened ? mvm_vm_new(d->mvm_config, error) : NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(owned); i++) {
        if (owned[i] >= 0)
            close(owned[i]);
    }
    /* The VM's own ID, not the new one mvm_vm_new() chose: a reboot is no new generation. */
    if (vm && d->set_generation_id && !mvm_vm_set_generation_id(vm, d->generation_id, error))
        g_clear_pointer(&vm, mvm_vm_free);
    return vm;
}

static guint n_items(const GPtrArray *array)
{
    return array != NULL ? array->len : 0;
}

/* "the snapshot has 1 disk; pass it as an fd in the 'disks' option" */
static void hint_count(GString *msg, const char *what, const char *option, guint has, guint given)
{
    if (msg->len)
        g_string_append(msg, "; ");
    g_string_append_printf(msg, "the snapshot has %u %s%s", has, what, has == 1 ? "" : "s");
    if (given == 0)
        g_string_append_printf(msg, "; pass %s as %s in the '%s' option", has == 1 ? "it" : "them",
                               has == 1 ? "an fd" : "fds", option);
    else
        g_string_append_printf(msg, " and the '%s' option gives %u", option, given);
}

/*
 * The snapshot's devices against the back ends of RestoreVM's options, before any VM is built,
 * said in terms of the option the caller must fill. The library refuses a mismatch of counts
 * or CID too, on the state it decodes for the restore (the caller's file may have changed
 * since this read), but in the words of its own API.
 */
static gboolean check_backend_counts(const MvmVmConfig *snap, const MvmVmConfig *given,
                                     GError **error)
{
    g_autoptr(GString) msg = g_string_new(NULL);
    guint disks = n_items(snap->disks), given_disks = n_items(given->disks);
    guint nics = n_items(snap->nics), given_nics = n_items(given->nics);

    if (disks != given_disks)
        hint_count(msg, "disk", "disks", disks, given_disks);
    if (nics != given_nics)
        hint_count(msg, "network interface", "network", nics, given_nics);
    if (snap->vsock_cid != 0 && given->vsock_uds_path == NULL)
        g_string_append_printf(msg,
                               "%sthe snapshot has a vsock device; pass its host socket in "
                               "the 'vsock' option",
                               msg->len ? "; " : "");
    else if (snap->vsock_cid == 0 && given->vsock_uds_path != NULL)
        g_string_append_printf(msg,
                               "%sthe snapshot has no vsock device; leave out the 'vsock' "
                               "option",
                               msg->len ? "; " : "");
    if (!msg->len)
        return TRUE;
    if (given_disks == 0 && given_nics == 0 && given->vsock_uds_path == NULL)
        g_string_append(msg, "; or, as root, pass 'use-snapshot-backends': <true> to have microvmd "
                             "open the ones the snapshot names (its disk paths read-write, its "
                             "taps, its vsock socket path)");
    g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, msg->str);
    return FALSE;
}

/*
 * The guest knows its CID from the snapshot: a caller's other CID would be a lie. A clone's
 * device shows the guest the new one (0: the restore chooses it), which it reads again at the
 * vsock transport reset every restore sends.
 */
static gboolean check_vsock_cid(const MvmVmConfig *snap, const MvmVmConfig *backends,
                                gboolean clone, GError **error)
{
    if (clone || backends->vsock_cid == snap->vsock_cid)
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                "option 'vsock': cid %u, but the snapshot's guest has cid %u", backends->vsock_cid,
                snap->vsock_cid);
    return FALSE;
}

/*
 * @snap: what the snapshot's `state` alone says (untrusted, checked by the library; nothing it
 * names is opened), or NULL with @error set when it could not be read.
 */
static gboolean check_backends(const OpData *d, const MvmVmConfig *snap,
                               const MvmVmConfig *backends, GError **error)
{
    return snap != NULL && check_backend_counts(snap, backends, error) &&
           check_vsock_cid(snap, backends, (d->restore_flags & MVM_RESTORE_CLONE) != 0, error);
}

/*
 * Asked by the library once it has read the snapshot it restores, before guest memory is
 * allocated: the VM's share of its owner's quota becomes the snapshot's memory and vCPUs, or
 * the restore fails with QuotaExceeded. On the state being restored, not an earlier read.
 */
static gboolean approve_restore(const MvmVmConfig *config, gpointer user_data, GError **error)
{
    OpData *d = user_data;

    return mvmd_quota_resize(d->charge, config->memory_mib, config->n_vcpus, error);
}

static void release_image_charge(gpointer token)
{
    mvmd_quota_release(token);
    g_free(token);
}

/*
 * The lib asks before it makes a memory image the owner's clones will share: the image holds
 * memory beside theirs, charged to the owner's MemoryMiB as long as it lives. Refused, the VM
 * gets a copy of its own (charged with the VM).
 */
static gboolean charge_image(guint64 owner, guint64 bytes, gpointer user_data,
                             MvmImageCharge *charge, GError **error)
{
    OpData *d = user_data;
    MvmdQuota *quota = g_atomic_pointer_get(&d->charge->quota);
    g_autofree MvmdQuotaCharge *held = g_new0(MvmdQuotaCharge, 1);

    if (quota == NULL) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_FAILED, "the VM was deleted");
        return FALSE;
    }
    if (!mvmd_quota_charge_memory(quota, (uid_t)owner, bytes / (1024 * 1024), held, error))
        return FALSE;
    *charge = (MvmImageCharge){release_image_charge, g_steal_pointer(&held)};
    return TRUE;
}

static MvmVm *restore(OpData *d, int dirfd, int state_fd, int memory_fd,
                      const MvmVmConfig *backends, GError **error)
{
    const MvmRestoreOptions options = {
        .flags = d->restore_flags,
        .backends = backends,
        .approve = approve_restore,
        .approve_data = d,
        .memory_images = d->memory_images,
        .memory_image_owner = d->owner,
        .charge_image = charge_image,
        .charge_image_data = d,
        .layers = d->restore_layers,
        .n_layers = d->n_restore_layers,
        .prefetch = d->prefetch,
        /* Only a handed-over VM keeps its generation ID; any other restore gets a new one. */
        .generation_id = d->adopt_backends && d->set_generation_id ? d->generation_id : NULL,
    };

    return mvm_vm_restore_full(dirfd, state_fd, memory_fd, &options, error);
}

/* The snapshot directory: the caller's fd (borrowed), else root's path opened here. */
static int open_restore_dir(OpData *d, GError **error)
{
    int dirfd = d->restore_fd;

    if (dirfd >= 0)
        return dirfd;
    dirfd = open(d->restore_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        mvmd_set_errno_error(error, MVMD_ERROR_INVALID_ARGUMENT, "cannot open snapshot %s",
                             d->restore_dir);
    return dirfd;
}

/* The snapshot as the caller's two files: read, never mapped from a file the caller can change. */
static MvmVm *worker_restore_files(OpData *d, GError **error)
{
    g_autoptr(MvmVmConfig) snap = mvm_snapshot_read_config_fd(d->restore_state_fd, error);

    if (!check_backends(d, snap, d->mvm_config, error))
        return NULL;
    return restore(d, -1, d->restore_state_fd, d->restore_memory_fd, d->mvm_config, error);
}

/*
 * The snapshot directory restored, with @backends (checked against the snapshot's devices
 * first) or, when NULL, the back ends the snapshot names.
 */
static MvmVm *restore_dir(OpData *d, const MvmVmConfig *backends, GError **error)
{
    g_autoptr(MvmVmConfig) snap = NULL;
    int dirfd = open_restore_dir(d, error);
    MvmVm *vm = NULL;

    if (dirfd < 0)
        return NULL;
    if (backends)
        snap = mvm_snapshot_read_config_at(dirfd, error);
    if (!backends || check_backends(d, snap, backends, error))
        vm = restore(d, dirfd, -1, -1, backends, error);
    if (dirfd != d->restore_fd)
        close(dirfd);
    return vm;
}

/*
 * RestoreVM's `working-set`, read here and not on the main loop: the caller's file (checked to
 * be a regular file off FUSE, of a bounded size, by caller-files.c) is untrusted input, checked
 * in full by the library, which tells what is wrong with it (InvalidArgument). Whether it was
 * recorded from this snapshot the restore checks.
 */
static gboolean worker_read_working_set(OpData *d, GError **error)
{
    if (d->args.working_set_fd < 0)
        return TRUE;
    d->prefetch = mvm_working_set_read_fd(d->args.working_set_fd, error);
    if (!d->prefetch)
        g_prefix_error(error, "option 'working-set': ");
    return d->prefetch != NULL;
}

/*
 * A restored machine comes back paused (the lib's contract): it runs unless asked not to.
 * With the back ends from the definition (RestoreVM's options: the caller's fds, or paths
 * root gave) the snapshot's own paths are never opened; only root who asked for them with
 * 'use-snapshot-backends' gets those (docs/security.md: the daemon never follows a path for a
 * non-root caller, nor one a snapshot names unless root says so).
 */
static MvmVm *worker_restore(OpData *d, GError **error)
{
    const MvmVmConfig *backends = d->restore_own_backends ? NULL : d->mvm_config;

    /* Handed over: the open back ends the last daemon's machine had, nothing opened anew. */
    if (d->adopt_backends)
        return restore(d, -1, d->restore_state_fd, d->restore_memory_fd, d->adopt_backends, error);
    if (!worker_read_working_set(d, error))
        return NULL;
    if (d->restore_state_fd < 0)
        return restore_dir(d, backends, error);
    if (backends)
        return worker_restore_files(d, error);
    return restore(d, -1, d->restore_state_fd, d->restore_memory_fd, NULL, error);
}

static gboolean worker_start(OpData *d, GError **error)
{
    gboolean restored = d->restore_dir || d->restore_fd >= 0 || d->restore_state_fd >= 0;
    MvmVm *vm = restored ? worker_restore(d, error) : worker_build(d, error);
    gboolean ok;

    if (!vm)
        return FALSE;
    d->has_generation_id = mvm_vm_get_generation_id(vm, d->generation_id);
    d->has_diff_parent = mvm_vm_get_diff_parent(vm, d->diff_parent);
    mvmd_vm_run_connect(d->run, vm);
    if (restored) {
        g_atomic_int_set(&d->run->state, mvm_vm_get_state(vm));
        ok = d->args.paused || mvm_vm_resume(vm, error);
    } else {
        ok = mvm_vm_start(vm, error);
    }
    if (!ok) {
        mvm_vm_free(vm);
        return FALSE;
    }
    d->run->vm = vm;
    return TRUE;
}

/*
 * `diff-base` against the parent the VM has, here and not at the call: only this VM's
 * operations change its parent (a snapshot makes itself the next one), they run one at a time,
 * and this one is the snapshot, so the parent checked is the parent the diff names.
 */
static gboolean check_diff_base(OpData *d, GError **error)
{
    guint8 parent[MVM_SNAPSHOT_ID_SIZE];
    g_autofree char *want = NULL;
    g_autofree char *have = NULL;

    if (!d->args.has_diff_base)
        return TRUE;
    if (!mvm_vm_get_diff_parent(d->run->vm, parent)) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_STATE,
                            "option 'diff-base': the VM tracks no changes; take a snapshot with "
                            "'track-changes' first");
        return FALSE;
    }
    if (memcmp(parent, d->args.diff_base, sizeof(parent)) == 0)
        return TRUE;
    want = mvmd_snapshot_id_format(d->args.diff_base);
    have = mvmd_snapshot_id_format(parent);
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                "option 'diff-base': %s; a diff of this VM can only be against its last "
                "snapshot, ID %s",
                want, have);
    return FALSE;
}

static gboolean snapshot_write(OpData *d, GError **error)
{
    if (d->args.state_fd >= 0)
        return mvm_vm_snapshot_to_fds(d->run->vm, d->args.state_fd, d->args.memory_fd,
                                      d->args.flags, error);
    if (d->args.dir_fd >= 0)
        return mvm_vm_snapshot_at(d->run->vm, d->args.dir_fd, d->args.flags, error);
    return mvm_vm_snapshot(d->run->vm, d->args.dir, d->args.flags, error);
}

/*
 * On this worker thread, not the main loop. mvm_vm_snapshot_to_fds() holds the VM's operation
 * lock, with the VM paused, while it writes the caller's files; the files were checked to be
 * regular files off FUSE (caller-files.c), so the writes end. The daemon holds no lock of its
 * own: only this VM's other operations wait ("operation in progress"). The parent of the next
 * diff is read after, success or not, for GetStats.
 */
static gboolean worker_snapshot(OpData *d, GError **error)
{
    gboolean ok = check_diff_base(d, error) && snapshot_write(d, error);

    d->has_diff_parent = mvm_vm_get_diff_parent(d->run->vm, d->diff_parent);
    return ok;
}

/*
 * Paused and saved for the next daemon (handoff.h). The guest does not run again here: on
 * success the main loop pushes the descriptors into systemd's store and then stops the machine.
 */
static gboolean worker_handoff(OpData *d, GError **error)
{
    MvmVm *vm = d->run->vm;

    d->handoff_running = mvm_vm_get_state(vm) == MVM_VM_STATE_RUNNING;
    d->handoff_state_fd = memfd_create("microvmd-handoff-state", MFD_CLOEXEC);
    if (d->handoff_state_fd < 0)
        return mvmd_set_errno_error(error, MVMD_ERROR_NO_RESOURCES,
                                    "cannot make a memfd for the VM's state");
    if (!mvm_vm_save_for_handoff(vm, d->handoff_state_fd, &d->handoff_memory_fd, error))
        return FALSE;
    d->handoff_backends = mvm_vm_dup_backends(vm, error);
    if (!d->handoff_backends)
        return FALSE;
    d->has_generation_id = mvm_vm_get_generation_id(vm, d->generation_id);
    return TRUE;
}

/* Stop (if asked) and note how the run ended; returns the machine, now the caller's to free. */
static MvmVm *worker_finish(OpData *d, gboolean stop)
{
    MvmVm *vm = g_steal_pointer(&d->run->vm);
    g_autoptr(GError) error = NULL;

    if (stop && !mvm_vm_stop(vm, &error))
        g_debug("stop: %s", error->message); /* it had stopped by itself meanwhile */
    d->final_state = mvm_vm_get_state(vm);
    d->kind = mvm_vm_get_exit_kind(vm);
    d->exit_code = mvm_vm_get_exit_code(vm);
    d->reason = mvm_vm_dup_exit_reason(vm);
    return vm;
}

/* ---- machines being freed after their Stop was answered -------------------------------- */

static GMutex teardown_lock;
static GCond teardown_cond;
static guint teardowns_running;

static void teardown_begin(void)
{
    g_mutex_lock(&teardown_lock);
    teardowns_running++;
    g_mutex_unlock(&teardown_lock);
}

static void teardown_end(void)
{
    g_mutex_lock(&teardown_lock);
    teardowns_running--;
    g_cond_broadcast(&teardown_cond);
    g_mutex_unlock(&teardown_lock);
}

gboolean mvmd_vm_op_wait_teardowns(gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;
    gboolean done;

    g_mutex_lock(&teardown_lock);
    while (teardowns_running > 0 && g_cond_wait_until(&teardown_cond, &teardown_lock, deadline))
        ;
    done = teardowns_running == 0;
    g_mutex_unlock(&teardown_lock);
    return done;
}

/*
 * The end of a run: answered once the machine has stopped, said how, and let go of everything
 * the host sees of it (its threads, disks, taps and vsock socket: a caller may reuse them at
 * once), then freed here. What is left, closing the KVM VM, waits in the kernel for SRCU grace
 * periods (5-40 ms, the irqchip and PIT most of it: docs/benchmarks.md), which no caller needs
 * to wait for. The run stays referenced by @d, which this thread holds until it returns, so the
 * machine's last callbacks (a suppressed-log summary) still find it.
 */
static void finish_and_free(GTask *task, OpData *d)
{
    MvmVm *vm = worker_finish(d, d->op == OP_STOP);

    mvm_vm_release_devices(vm);
    teardown_begin();
    g_task_return_boolean(task, TRUE);
    mvm_vm_free(vm);
    teardown_end();
}

/* The dump, and the reply made of it: both off the main loop. */
static gboolean worker_cpu_config(OpData *d, GError **error)
{
    g_autoptr(MvmCpuConfig) config = mvm_vm_dump_cpu_config(d->run->vm, error);

    if (config == NULL)
        return FALSE;
    d->cpu_config = g_variant_ref_sink(mvmd_cpu_config_to_variant(config));
    return TRUE;
}

/*
 * Every failure below sets its GError; should one ever not, the call still gets an answer
 * (g_task_return_error() with no error is a critical, and the task would never complete).
 */
static GError *error_or_bug(GError *error, Op op)
{
    if (error != NULL)
        return error;
    g_warning("BUG: operation %d failed without saying why", op);
    return g_error_new_literal(MVMD_ERROR, MVMD_ERROR_FAILED,
                               "the operation failed for an unknown reason (a bug in microvmd)");
}

static void op_worker(GTask *task, gpointer source, gpointer task_data, GCancellable *cancel)
{
    OpData *d = task_data;
    GError *error = NULL;
    gboolean ok = TRUE;

    switch (d->op) {
    case OP_START:
        ok = worker_start(d, &error);
        break;
    case OP_PAUSE:
        ok = mvm_vm_pause_full(d->run->vm, d->args.flags, &error);
        break;
    case OP_SNAPSHOT:
        ok = worker_snapshot(d, &error);
        break;
    case OP_RESUME:
        ok = mvm_vm_resume(d->run->vm, &error);
        break;
    case OP_CPU_CONFIG:
        ok = worker_cpu_config(d, &error);
        break;
    case OP_WORKING_SET:
        ok = mvm_vm_save_working_set(d->run->vm, d->args.working_set_fd, &error);
        break;
    case OP_HANDOFF:
        ok = worker_handoff(d, &error);
        break;
    case OP_STOP:
    case OP_REAP:
        finish_and_free(task, d);
        return;
    case OP_NONE:
        g_assert_not_reached();
    }
    if (ok)
        g_task_return_boolean(task, TRUE);
    else
        g_task_return_error(task, error_or_bug(error, d->op));
}

static gpointer op_thread(gpointer data)
{
    g_autoptr(GTask) task = data;

    op_worker(task, g_task_get_source_object(task), g_task_get_task_data(task), NULL);
    return NULL;
}

/*
 * Each operation gets a thread of its own, not one of GTask's pool: a pool that cannot start
 * a thread (no memory, no more tasks) queues the work silently, and the call would never be
 * answered. Here a call that cannot get its thread answers NoResources; the end of a run, which
 * nobody waits for and which must happen, is done on the spot instead.
 */
void mvmd_vm_op_run(GTask *task)
{
    OpData *d = g_task_get_task_data(task);
    g_autoptr(GError) error = NULL;
    GThread *thread = g_thread_try_new("vm-op", op_thread, g_object_ref(task), &error);

    if (thread) {
        g_thread_unref(thread);
        return;
    }
    g_object_unref(task); /* the thread's */
    if (d->op == OP_STOP || d->op == OP_REAP) {
        g_debug("no thread to end the run (%s): ending it on the main loop", error->message);
        op_worker(task, g_task_get_source_object(task), d, NULL);
        return;
    }
    g_task_return_new_error(task, MVMD_ERROR, MVMD_ERROR_NO_RESOURCES,
                            "no thread for the operation (out of memory or threads): %s",
                            error->message);
}
