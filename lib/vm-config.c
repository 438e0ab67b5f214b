/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MvmVmConfig (microvm.h): new, copy, free and validate, the virtio parts (disks, nics,
 * vsock, rng) with the rest. Checked here once, before anything is built from it.
 */
#include <string.h>
#include <unistd.h>
#include <sys/un.h>

#include "layout.h"
#include "token-bucket.h"
#include "virtqueue.h" /* mvm_set_invalid() */
#include "vm-config.h"

/* "_4294967295": the longest suffix a guest port adds to the vsock socket path. */
#define VSOCK_PORT_SUFFIX_MAX 11

/* The public bound (microvm.h) is what the MMIO slots and GSIs of layout.h leave. */
G_STATIC_ASSERT(MVM_MAX_VIRTIO_DEVICES ==
                MIN(MVM_VIRTIO_MMIO_MAX_DEVICES, MVM_VIRTIO_MAX_IRQ_DEVICES));

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

static void copy_virtio(MvmVmConfig *copy, const MvmVmConfig *config)
{
    copy->disks = config->disks != NULL ? copy_disks(config->disks) : NULL;
    copy->nics = config->nics != NULL ? copy_nics(config->nics) : NULL;
    copy->vsock_uds_path = g_strdup(config->vsock_uds_path);
}

static void free_virtio(MvmVmConfig *config)
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

guint mvm_vm_config_count_virtio(const MvmVmConfig *config)
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
    if (config->vsock_cid < MVM_VSOCK_CID_MIN || config->vsock_cid > MVM_VSOCK_CID_MAX)
        return mvm_set_invalid(error, "vsock cid must be between %u and %u, not %u",
                               MVM_VSOCK_CID_MIN, MVM_VSOCK_CID_MAX, config->vsock_cid);
    if (config->vsock_uds_path == NULL || *config->vsock_uds_path == '\0')
        return mvm_set_invalid(error, "vsock needs a uds-path");
    if (strlen(config->vsock_uds_path) + VSOCK_PORT_SUFFIX_MAX >=
        sizeof(((struct sockaddr_un *)NULL)->sun_path))
        return mvm_set_invalid(error,
                               "vsock uds-path %s is too long for a unix socket with a port suffix",
                               config->vsock_uds_path);
    return TRUE;
}

static gboolean validate_virtio(const MvmVmConfig *config, GError **error)
{
    for (guint i = 0; config->disks != NULL && i < config->disks->len; i++) {
        const MvmDiskConfig *d = g_ptr_array_index(config->disks, i);
        if (d == NULL || (d->fd < 0 && (d->path == NULL || *d->path == '\0')))
            return mvm_set_invalid(error, "disk %u has neither a path nor an fd", i);
        g_autofree char *what = g_strdup_printf("disk %u", i);
        if (!mvm_rate_limit_validate(&d->rate_limit, what, error))
            return FALSE;
    }
    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++) {
        const MvmNetConfig *n = g_ptr_array_index(config->nics, i);
        if (n == NULL || (n->tap_fd < 0 && (n->tap_name == NULL || *n->tap_name == '\0')))
            return mvm_set_invalid(error, "network interface %u has neither a tap name nor an fd",
                                   i);
        if (n->tap_fd < 0 && strlen(n->tap_name) >= 16) /* IFNAMSIZ */
            return mvm_set_invalid(error, "tap name %s is longer than 15 bytes", n->tap_name);
        if (n->mac[0] & 1)
            return mvm_set_invalid(error, "network interface %u has a multicast MAC address", i);
        g_autofree char *rx = g_strdup_printf("network interface %u receive", i);
        g_autofree char *tx = g_strdup_printf("network interface %u transmit", i);
        if (!mvm_rate_limit_validate(&n->rx_rate_limit, rx, error) ||
            !mvm_rate_limit_validate(&n->tx_rate_limit, tx, error))
            return FALSE;
    }
    if (!validate_vsock(config, error))
        return FALSE;
    if (mvm_vm_config_count_virtio(config) > MVM_MAX_VIRTIO_DEVICES)
        return mvm_set_invalid(error, "%u virtio devices requested; at most %u fit",
                               mvm_vm_config_count_virtio(config), (guint)MVM_MAX_VIRTIO_DEVICES);
    return TRUE;
}

MvmVmConfig *mvm_vm_config_new(void)
{
    MvmVmConfig *config = g_new0(MvmVmConfig, 1);

    config->n_vcpus = 1;
    config->memory_mib = 128;
    config->kernel_fd = -1;
    config->initrd_fd = -1;
    return config;
}

MvmVmConfig *mvm_vm_config_copy(const MvmVmConfig *config)
{
    MvmVmConfig *copy = g_memdup2(config, sizeof(*config));

    copy->kernel_path = g_strdup(config->kernel_path);
    copy->initrd_path = g_strdup(config->initrd_path);
    copy->cmdline = g_strdup(config->cmdline);
    if (config->cpu_template != NULL)
        copy->cpu_template = mvm_cpu_template_ref(config->cpu_template);
    copy_virtio(copy, config);
    return copy;
}

void mvm_vm_config_free(MvmVmConfig *config)
{
    if (config == NULL)
        return;
    g_free(config->kernel_path);
    g_free(config->initrd_path);
    g_free(config->cmdline);
    g_clear_pointer(&config->cpu_template, mvm_cpu_template_unref);
    free_virtio(config);
    g_free(config);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void mvm_vm_config_close_fds(MvmVmConfig *config)
{
    g_return_if_fail(config != NULL);

    close_fd(&config->kernel_fd);
    close_fd(&config->initrd_fd);
    for (guint i = 0; config->disks != NULL && i < config->disks->len; i++)
        close_fd(&((MvmDiskConfig *)g_ptr_array_index(config->disks, i))->fd);
    for (guint i = 0; config->nics != NULL && i < config->nics->len; i++)
        close_fd(&((MvmNetConfig *)g_ptr_array_index(config->nics, i))->tap_fd);
}

gboolean mvm_vm_config_validate(const MvmVmConfig *config, GError **error)
{
    guint max_vcpus = mvm_kvm_max_vcpus();

    if (config->n_vcpus == 0 || (max_vcpus > 0 && config->n_vcpus > max_vcpus) ||
        config->n_vcpus > MVM_MAX_VCPUS) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "vcpus must be between 1 and %u, not %u",
                    max_vcpus > 0 ? max_vcpus : MVM_MAX_VCPUS, config->n_vcpus);
        return FALSE;
    }
    if (config->memory_mib < MVM_MIN_MEMORY_MIB || config->memory_mib % 2 != 0 ||
        config->memory_mib > MVM_MAX_MEMORY_MIB) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "memory must be an even number of MiB between %d and %" G_GUINT64_FORMAT
                    ", not %" G_GUINT64_FORMAT,
                    MVM_MIN_MEMORY_MIB, MVM_MAX_MEMORY_MIB, config->memory_mib);
        return FALSE;
    }
    if (config->kernel_fd < 0 && (config->kernel_path == NULL || *config->kernel_path == '\0')) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, "no kernel given");
        return FALSE;
    }
    return validate_virtio(config, error);
}
