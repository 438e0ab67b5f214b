/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM's side of virtio: building the devices in MMIO slot order (disks,
 * NICs, vsock, rng), each with its page at MVM_VIRTIO_MMIO_BASE + n *
 * MVM_VIRTIO_MMIO_SIZE and GSI MVM_VIRTIO_IRQ_BASE + n. Their configuration
 * is checked in vm-config.c.
 */
#include <fcntl.h>
#include <string.h>

#include "device-state.h"
#include "layout.h"
#include "token-bucket.h"
#include "virtio.h"
#include "vm-config.h"
#include "vm-private.h"
#include "vm-virtio.h"

/* ---- snapshots ---- */

static GVariant *snapshot_save(gpointer device, GError **error)
{
    return mvm_virtio_save(device);
}

static gboolean snapshot_restore(gpointer device, GVariant *state, GError **error)
{
    return mvm_virtio_restore(device, state, error);
}

static const MvmDeviceStateOps snapshot_ops = {snapshot_save, snapshot_restore};

/* "virtio-blk0", "virtio-blk1", "virtio-net0": unique names for the snapshot's device table. */
static char *device_name(MvmVm *vm, MvmVirtio *dev)
{
    guint same = 0;

    for (guint i = 0; i < vm->virtio->len; i++)
        if (strcmp(mvm_virtio_get_name(g_ptr_array_index(vm->virtio, i)),
                   mvm_virtio_get_name(dev)) == 0)
            same++;
    return g_strdup_printf("virtio-%s%u", mvm_virtio_get_name(dev), same);
}

/* ---- building ---- */

static MvmVirtio *create_device(MvmVm *vm, guint slot, const MvmVirtioEnv *env, GError **error)
{
    const MvmVmConfig *c = vm->config;
    guint n_disks = c->disks != NULL ? c->disks->len : 0;
    guint n_nics = c->nics != NULL ? c->nics->len : 0;

    if (slot < n_disks)
        return mvm_virtio_blk_new(g_ptr_array_index(c->disks, slot), env, error);
    slot -= n_disks;
    if (slot < n_nics)
        return mvm_virtio_net_new(g_ptr_array_index(c->nics, slot), env, error);
    slot -= n_nics;
    if (slot == 0 && c->vsock_cid != 0)
        return mvm_virtio_vsock_new(c->vsock_cid, c->vsock_uds_path, env, error);
    return mvm_virtio_rng_new(env, error);
}

/* Borrowed fds were dup'ed by the devices: the VM's copy of the config forgets them. */
static void forget_fds(MvmVmConfig *config)
{
    for (guint i = 0; config->disks != NULL && i < config->disks->len; i++)
        ((MvmDiskConfig *)g_ptr_array_index(config->disks, i))->fd = -1;
    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++)
        ((MvmNetConfig *)g_ptr_array_index(config->nics, i))->tap_fd = -1;
}

/* On the I/O thread: its sandbox refused a call (mvm_vm_guest_exit names it). */
static void end_on_violation(gpointer data)
{
    mvm_vm_guest_exit(data, MVM_EXIT_SANDBOX_VIOLATION, NULL, 0);
}

gboolean mvm_vm_attach_virtio(MvmVm *vm, GError **error)
{
    guint n = mvm_vm_config_count_virtio(vm->config);

    vm->virtio = g_ptr_array_new_with_free_func((GDestroyNotify)mvm_virtio_free);
    if (n == 0)
        return TRUE;
    MvmSandboxFlags sandbox = MVM_SANDBOX_IO | (vm->config->vsock_cid ? MVM_SANDBOX_VSOCK : 0);
    vm->io_thread = mvm_io_thread_new("vm-io", sandbox, error);
    if (vm->io_thread == NULL)
        return FALSE;
    mvm_io_thread_set_violation_func(vm->io_thread, end_on_violation, vm);
    for (guint slot = 0; slot < n; slot++) {
        MvmVirtioEnv env = {
            .vm_fd = vm->fd,
            .memory = vm->memory,
            .io_thread = vm->io_thread,
            .base = MVM_VIRTIO_MMIO_BASE + slot * MVM_VIRTIO_MMIO_SIZE,
            .gsi = MVM_VIRTIO_IRQ_BASE + slot,
            .guest_log = &vm->guest_log,
        };
        g_autoptr(MvmVirtio) dev = create_device(vm, slot, &env, error);
        if (dev == NULL || !mvm_virtio_attach(dev, vm->bus, error))
            return FALSE;
        g_autofree char *name = device_name(vm, dev);
        mvm_vm_add_device_state(vm, name, &snapshot_ops, dev);
        g_ptr_array_add(vm->virtio, g_steal_pointer(&dev));
    }
    forget_fds(vm->config);
    return TRUE;
}

MvmBootMmioDevice *mvm_vm_virtio_boot_devices(MvmVm *vm, guint *n)
{
    *n = vm->virtio != NULL ? vm->virtio->len : 0;
    MvmBootMmioDevice *devices = g_new0(MvmBootMmioDevice, MAX(*n, 1));

    for (guint i = 0; i < *n; i++) {
        MvmVirtio *dev = g_ptr_array_index(vm->virtio, i);
        devices[i] = (MvmBootMmioDevice){
            .base = mvm_virtio_get_base(dev),
            .size = MVM_VIRTIO_MMIO_SIZE,
            .gsi = mvm_virtio_get_gsi(dev),
        };
    }
    return devices;
}

void mvm_vm_detach_virtio(MvmVm *vm)
{
    /* The I/O thread stops first, so no back end runs while its device goes away. */
    if (vm->io_thread != NULL)
        mvm_io_thread_stop(vm->io_thread);
    g_clear_pointer(&vm->virtio, g_ptr_array_unref);
    g_clear_pointer(&vm->io_thread, mvm_io_thread_free);
}

void mvm_vm_quiesce_virtio(MvmVm *vm, gboolean quiet)
{
    if (vm->io_thread == NULL)
        return;
    if (quiet)
        mvm_io_thread_quiesce(vm->io_thread);
    else
        mvm_io_thread_unquiesce(vm->io_thread);
}

/* ---- restores ---- */

static MvmVirtio *nic_device(MvmVm *vm, guint i)
{
    guint n_disks = vm->config->disks != NULL ? vm->config->disks->len : 0;

    return g_ptr_array_index(vm->virtio, n_disks + i);
}

static guint n_nics(MvmVm *vm)
{
    return vm->config->nics != NULL && vm->virtio != NULL ? vm->config->nics->len : 0;
}

void mvm_vm_virtio_set_clone(MvmVm *vm)
{
    for (guint i = 0; i < n_nics(vm); i++)
        mvm_virtio_net_set_clone(nic_device(vm, i));
}

void mvm_vm_virtio_sync_macs(MvmVm *vm)
{
    for (guint i = 0; i < n_nics(vm); i++)
        mvm_virtio_net_get_mac(nic_device(vm, i),
                               ((MvmNetConfig *)g_ptr_array_index(vm->config->nics, i))->mac);
}

/* ---- live changes ---- */

gboolean mvm_vm_set_disk_rate_limit(MvmVm *vm, guint index, const MvmRateLimit *limit,
                                    GError **error)
{
    guint n_disks = vm->config->disks != NULL ? vm->config->disks->len : 0;
    g_autofree char *what = g_strdup_printf("disk %u", index);

    g_return_val_if_fail(limit != NULL, FALSE);
    if (index >= n_disks)
        return mvm_set_invalid(error, "the VM has no disk %u (it has %u)", index, n_disks);
    if (!mvm_rate_limit_validate(limit, what, error))
        return FALSE;
    ((MvmDiskConfig *)g_ptr_array_index(vm->config->disks, index))->rate_limit = *limit;
    if (vm->virtio != NULL)
        mvm_virtio_blk_set_rate_limit(g_ptr_array_index(vm->virtio, index), limit);
    return TRUE;
}

gboolean mvm_vm_set_nic_rate_limits(MvmVm *vm, guint index, const MvmRateLimit *rx,
                                    const MvmRateLimit *tx, GError **error)
{
    guint n_configured = vm->config->nics != NULL ? vm->config->nics->len : 0;
    g_autofree char *rx_what = g_strdup_printf("network interface %u receive", index);
    g_autofree char *tx_what = g_strdup_printf("network interface %u transmit", index);

    if (index >= n_configured)
        return mvm_set_invalid(error, "the VM has no network interface %u (it has %u)", index,
                               n_configured);
    if ((rx != NULL && !mvm_rate_limit_validate(rx, rx_what, error)) ||
        (tx != NULL && !mvm_rate_limit_validate(tx, tx_what, error)))
        return FALSE;
    MvmNetConfig *nic = g_ptr_array_index(vm->config->nics, index);
    if (rx != NULL)
        nic->rx_rate_limit = *rx;
    if (tx != NULL)
        nic->tx_rate_limit = *tx;
    if (vm->virtio != NULL)
        mvm_virtio_net_set_rate_limits(nic_device(vm, index), rx, tx);
    return TRUE;
}

/* ---- figures ---- */

static guint n_disk_devices(MvmVm *vm)
{
    return vm->config->disks != NULL && vm->virtio != NULL ? vm->config->disks->len : 0;
}

gboolean mvm_vm_get_disk_stats(MvmVm *vm, guint index, MvmDiskStats *stats)
{
    if (index >= n_disk_devices(vm))
        return FALSE;
    mvm_virtio_blk_get_stats(g_ptr_array_index(vm->virtio, index), stats);
    return TRUE;
}

gboolean mvm_vm_get_nic_stats(MvmVm *vm, guint index, MvmNicStats *stats)
{
    if (index >= n_nics(vm))
        return FALSE;
    mvm_virtio_net_get_stats(nic_device(vm, index), stats);
    return TRUE;
}

/* ---- handoff ---- */

static int dup_backend(int fd, const char *what, guint i, GError **error)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);

    if (copy < 0)
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot duplicate the %s of device %u", what,
                            i);
    return copy;
}

/*
 * The descriptors the devices have open, never a path opened again: a tap opened by name that
 * is not persistent is gone with its last descriptor, and a path may name another file by now.
 * The MACs are the ones the guest read (a restore's, or a clone's own).
 */
static gboolean dup_fds(MvmVm *vm, MvmVmConfig *copy, GError **error)
{
    guint n_disks = copy->disks != NULL ? copy->disks->len : 0;

    for (guint i = 0; i < n_disks; i++) {
        MvmDiskConfig *d = g_ptr_array_index(copy->disks, i);
        d->fd =
            dup_backend(mvm_virtio_blk_get_fd(g_ptr_array_index(vm->virtio, i)), "disk", i, error);
        if (d->fd < 0)
            return FALSE;
    }
    for (guint i = 0; i < n_nics(vm); i++) {
        MvmNetConfig *n = g_ptr_array_index(copy->nics, i);
        MvmVirtio *dev = nic_device(vm, i);
        mvm_virtio_net_get_mac(dev, n->mac);
        n->tap_fd = dup_backend(mvm_virtio_net_get_tap_fd(dev), "tap", n_disks + i, error);
        if (n->tap_fd < 0)
            return FALSE;
    }
    return TRUE;
}

MvmVmConfig *mvm_vm_dup_backends(MvmVm *vm, GError **error)
{
    g_return_val_if_fail(vm != NULL, NULL);

    if (vm->devices_released) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_STATE,
                            "the VM's devices are released: it has no back ends left");
        return NULL;
    }
    g_autoptr(MvmVmConfig) copy = mvm_vm_config_copy(vm->config);
    /*
     * None of the copy's descriptors is ours (the kernel's and initrd's are the caller's; the
     * devices' were forgotten at attach): -1 before any is filled, so that closing the copy's
     * fds on a failure closes only what was duplicated here.
     */
    copy->kernel_fd = copy->initrd_fd = -1;
    for (guint i = 0; copy->disks != NULL && i < copy->disks->len; i++)
        ((MvmDiskConfig *)g_ptr_array_index(copy->disks, i))->fd = -1;
    for (guint i = 0; copy->nics != NULL && i < copy->nics->len; i++)
        ((MvmNetConfig *)g_ptr_array_index(copy->nics, i))->tap_fd = -1;
    if (!dup_fds(vm, copy, error)) {
        mvm_vm_config_close_fds(copy);
        return NULL;
    }
    return g_steal_pointer(&copy);
}
