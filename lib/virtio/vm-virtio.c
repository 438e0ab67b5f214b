/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM's side of virtio: the disks/nics/vsock/rng parts of MvmVmConfig, and
 * building the devices in MMIO slot order (disks, NICs, vsock, rng), each with
 * its page at MVM_VIRTIO_MMIO_BASE + n * MVM_VIRTIO_MMIO_SIZE and GSI
 * MVM_VIRTIO_IRQ_BASE + n.
 */
#include <string.h>
#include <sys/un.h>

#include "layout.h"
#include "device-state.h"
#include "virtio.h"
#include "vm-private.h"
#include "vm-virtio.h"

/* "_4294967295": the longest suffix a guest port adds to the vsock socket path. */
#define VSOCK_PORT_SUFFIX_MAX 11

static void disk_config_free(gpointer data)
{
    MvmDiskConfig *d = data;

    g_free(d->path);
    g_free(d);
}

static void net_config_free(gpointer data)
{
    MvmNetConfig *n = data;

    g_free(n->tap_name);
    g_free(n);
}

static GPtrArray *copy_disks(const GPtrArray *disks)
{
    GPtrArray *copy = g_ptr_array_new_with_free_func(disk_config_free);

    for (guint i = 0; i < disks->len; i++) {
        MvmDiskConfig *d = g_memdup2(g_ptr_array_index(disks, i), sizeof(MvmDiskConfig));
        d->path = g_strdup(d->path);
        g_ptr_array_add(copy, d);
    }
    return copy;
}

static GPtrArray *copy_nics(const GPtrArray *nics)
{
    GPtrArray *copy = g_ptr_array_new_with_free_func(net_config_free);

    for (guint i = 0; i < nics->len; i++) {
        MvmNetConfig *n = g_memdup2(g_ptr_array_index(nics, i), sizeof(MvmNetConfig));
        n->tap_name = g_strdup(n->tap_name);
        g_ptr_array_add(copy, n);
    }
    return copy;
}

void mvm_vm_config_copy_virtio(MvmVmConfig *copy, const MvmVmConfig *config)
{
    copy->disks = config->disks != NULL ? copy_disks(config->disks) : NULL;
    copy->nics = config->nics != NULL ? copy_nics(config->nics) : NULL;
    copy->vsock_uds_path = g_strdup(config->vsock_uds_path);
}

void mvm_vm_config_free_virtio(MvmVmConfig *config)
{
    /* Arrays made by a caller may have no free function: free the elements ourselves. */
    for (guint i = 0; config->disks != NULL && i < config->disks->len; i++)
        disk_config_free(g_ptr_array_steal_index(config->disks, i--));
    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++)
        net_config_free(g_ptr_array_steal_index(config->nics, i--));
    g_clear_pointer(&config->disks, g_ptr_array_unref);
    g_clear_pointer(&config->nics, g_ptr_array_unref);
    g_clear_pointer(&config->vsock_uds_path, g_free);
}

static guint count_devices(const MvmVmConfig *config)
{
    return (config->disks != NULL ? config->disks->len : 0) +
           (config->nics != NULL ? config->nics->len : 0) + (config->vsock_cid != 0 ? 1 : 0) +
           (config->rng ? 1 : 0);
}

static gboolean validate_vsock(const MvmVmConfig *config, GError **error)
{
    if (config->vsock_cid == 0)
        return TRUE;
    /* 0-2 are the hypervisor, the local and the host CID; -1 is VMADDR_CID_ANY. */
    if (config->vsock_cid < 3 || config->vsock_cid == G_MAXUINT32)
        return mvm_virtio_invalid(error, "vsock cid must be between 3 and %u, not %u",
                                  G_MAXUINT32 - 1, config->vsock_cid);
    if (config->vsock_uds_path == NULL || *config->vsock_uds_path == '\0')
        return mvm_virtio_invalid(error, "vsock needs a uds-path");
    if (strlen(config->vsock_uds_path) + VSOCK_PORT_SUFFIX_MAX >=
        sizeof(((struct sockaddr_un *)NULL)->sun_path))
        return mvm_virtio_invalid(
            error, "vsock uds-path %s is too long for a unix socket with a port suffix",
            config->vsock_uds_path);
    return TRUE;
}

gboolean mvm_vm_config_validate_virtio(const MvmVmConfig *config, GError **error)
{
    for (guint i = 0; config->disks != NULL && i < config->disks->len; i++) {
        const MvmDiskConfig *d = g_ptr_array_index(config->disks, i);
        if (d == NULL || (d->fd < 0 && (d->path == NULL || *d->path == '\0')))
            return mvm_virtio_invalid(error, "disk %u has neither a path nor an fd", i);
    }
    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++) {
        const MvmNetConfig *n = g_ptr_array_index(config->nics, i);
        if (n == NULL || (n->tap_fd < 0 && (n->tap_name == NULL || *n->tap_name == '\0')))
            return mvm_virtio_invalid(error,
                                      "network interface %u has neither a tap name nor an fd", i);
        if (n->tap_fd < 0 && strlen(n->tap_name) >= 16) /* IFNAMSIZ */
            return mvm_virtio_invalid(error, "tap name %s is longer than 15 bytes", n->tap_name);
        if (n->mac[0] & 1)
            return mvm_virtio_invalid(error, "network interface %u has a multicast MAC address", i);
    }
    if (!validate_vsock(config, error))
        return FALSE;
    if (count_devices(config) > MIN(MVM_VIRTIO_MMIO_MAX_DEVICES, MVM_VIRTIO_MAX_IRQ_DEVICES))
        return mvm_virtio_invalid(
            error, "%u virtio devices requested; at most %u fit", count_devices(config),
            (guint)MIN(MVM_VIRTIO_MMIO_MAX_DEVICES, MVM_VIRTIO_MAX_IRQ_DEVICES));
    return TRUE;
}

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

gboolean mvm_vm_attach_virtio(MvmVm *vm, GError **error)
{
    guint n = count_devices(vm->config);

    vm->virtio = g_ptr_array_new_with_free_func((GDestroyNotify)mvm_virtio_free);
    if (n == 0)
        return TRUE;
    vm->io_thread = mvm_io_thread_new("vm-io", error);
    if (vm->io_thread == NULL)
        return FALSE;
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
