/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-mmio transport (virtio 1.2 §4.2, version 2 registers) and the device
 * back ends that sit on it: blk, net, vsock, rng. A back end knows nothing of
 * MMIO: it gets queue notifications on the VM's I/O thread and uses
 * mvm_virtio_pop()/mvm_virtio_push() under the device lock.
 *
 * Threads: register accesses come from vCPU threads (through the io bus), queue
 * notifications arrive by ioeventfd on the I/O thread, interrupts leave by irqfd.
 * Both sides take the device lock; back ends drop it around blocking work.
 */
#pragma once

#include <glib.h>

#include "guest-log.h"
#include "iobus.h"
#include "iothread.h"
#include "memory.h"
#include "microvm.h"
#include "virtqueue.h"

G_BEGIN_DECLS

/* §5 device IDs */
#define VIRTIO_ID_NET   1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG   4
#define VIRTIO_ID_VSOCK 19

/* §2.1 device status */
#define VIRTIO_STATUS_ACKNOWLEDGE        1
#define VIRTIO_STATUS_DRIVER             2
#define VIRTIO_STATUS_DRIVER_OK          4
#define VIRTIO_STATUS_FEATURES_OK        8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED             128

#define VIRTIO_F_VERSION_1 32

/* §4.2.2 register offsets (version 2) */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000
#define VIRTIO_MMIO_VERSION             0x004
#define VIRTIO_MMIO_DEVICE_ID           0x008
#define VIRTIO_MMIO_VENDOR_ID           0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL           0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034
#define VIRTIO_MMIO_QUEUE_NUM           0x038
#define VIRTIO_MMIO_QUEUE_READY         0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064
#define VIRTIO_MMIO_STATUS              0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW    0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH   0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW    0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH   0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc
#define VIRTIO_MMIO_CONFIG              0x100
#define VIRTIO_MMIO_MAGIC               0x74726976 /* "virt" */
#define VIRTIO_MMIO_VENDOR              0x554d4551 /* "QEMU", what Linux guests expect to see */
#define VIRTIO_MMIO_INT_VRING           1
#define VIRTIO_MMIO_INT_CONFIG          2

#define MVM_VIRTIO_MAX_QUEUES 3

typedef struct _MvmVirtio MvmVirtio;

typedef struct {
    const char *name; /* "blk", "net", ... for logs and snapshots */
    guint32 device_id;
    guint n_queues;
    guint16 queue_size_max;
    guint64 features; /* device-specific; VIRTIO_F_VERSION_1 is added by the transport */
    /* Queue @index was kicked (or the driver just set DRIVER_OK). I/O thread, lock NOT held. */
    void (*notify)(gpointer backend, guint index);
    /* DRIVER_OK was set. vCPU thread, lock held: do not block. Optional. */
    void (*activate)(gpointer backend);
    /* The driver reset the device. vCPU thread, lock held: do not block. Optional. */
    void (*reset)(gpointer backend);
    /* The device state came back from a snapshot. Lock held. Optional. */
    void (*restored)(gpointer backend);
    void (*free)(gpointer backend);
} MvmVirtioOps;

/* What a device needs of its VM. */
typedef struct {
    int vm_fd;
    MvmMemory *memory;
    MvmIoThread *io_thread;
    guint64 base; /* MMIO window, MVM_VIRTIO_MMIO_SIZE bytes */
    guint32 gsi;
    MvmGuestLog *guest_log; /* what the guest makes the device say; NULL: not limited */
} MvmVirtioEnv;

/* Takes @backend (freed with ops->free, also on failure). Sets up eventfds, ioeventfds, irqfd. */
MvmVirtio *mvm_virtio_new(const MvmVirtioOps *ops, gpointer backend, const MvmVirtioEnv *env,
                          GError **error);
void mvm_virtio_free(MvmVirtio *dev);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVirtio, mvm_virtio_free)
gboolean mvm_virtio_attach(MvmVirtio *dev, MvmIoBus *bus, GError **error);

guint64 mvm_virtio_get_base(const MvmVirtio *dev);
guint32 mvm_virtio_get_gsi(const MvmVirtio *dev);
const char *mvm_virtio_get_name(const MvmVirtio *dev);
MvmIoThread *mvm_virtio_get_io_thread(const MvmVirtio *dev);

/* Device configuration space (§4.2.2 offset 0x100); bumps the generation. Any thread. */
void mvm_virtio_set_config(MvmVirtio *dev, const void *config, gsize len);
/* As if the guest kicked queue @index: the back end's notify runs on the I/O thread. Any thread. */
void mvm_virtio_kick_queue(MvmVirtio *dev, guint index);

void mvm_virtio_lock(MvmVirtio *dev);
void mvm_virtio_unlock(MvmVirtio *dev);
/* The rest: with the lock held. */
gboolean mvm_virtio_is_active(MvmVirtio *dev); /* DRIVER_OK and not NEEDS_RESET */
/* Changes at every reset: a back end that dropped the lock checks it before pushing. */
guint32 mvm_virtio_get_epoch(MvmVirtio *dev);
/* Where the device says what its guest made it do (MvmVirtioEnv.guest_log). */
MvmGuestLog *mvm_virtio_get_guest_log(MvmVirtio *dev);
/* A broken chain marks the device DEVICE_NEEDS_RESET (logged once) and returns BROKEN. */
MvmVqPopResult mvm_virtio_pop(MvmVirtio *dev, guint queue, MvmVqChain *chain);
guint16 mvm_virtio_pending(MvmVirtio *dev, guint queue);
/* Publishes a used buffer; the interrupt goes out at mvm_virtio_unlock(), one for all pushes. */
void mvm_virtio_push(MvmVirtio *dev, guint queue, guint16 head, guint32 len);
void mvm_virtio_set_needs_reset(MvmVirtio *dev, const char *reason);
/* Changes part of the config space and tells the driver (configuration change interrupt). */
void mvm_virtio_update_config(MvmVirtio *dev, gsize offset, const void *data, gsize len);
/*
 * From a restored hook (lock held): puts back part of the config space that the device, not the
 * snapshot, decides (a clone's MAC or vsock CID), without an interrupt: the VM is paused and its
 * irqchip not restored yet. The guest sees it at its next read (for vsock, at the transport
 * reset every restore sends).
 */
void mvm_virtio_restore_config(MvmVirtio *dev, gsize offset, const void *data, gsize len);
/* The @backend mvm_virtio_new() was given. */
gpointer mvm_virtio_get_backend(MvmVirtio *dev);
/* The guest memory the device works in (its env's). */
const MvmMemory *mvm_virtio_get_memory(MvmVirtio *dev);
/* Reads part of the config space (lock held, or no driver yet). */
void mvm_virtio_read_config(MvmVirtio *dev, gsize offset, void *data, gsize len);

/* Snapshot state: negotiated features, status, queue configuration and indices, config. */
GVariant *mvm_virtio_save(MvmVirtio *dev);
gboolean mvm_virtio_restore(MvmVirtio *dev, GVariant *state, GError **error);

/* ---- devices ---- */
MvmVirtio *mvm_virtio_blk_new(const MvmDiskConfig *config, const MvmVirtioEnv *env, GError **error);
MvmVirtio *mvm_virtio_net_new(const MvmNetConfig *config, const MvmVirtioEnv *env, GError **error);
/* The back end the device has open (the disk image, the tap): borrowed, the device's. */
int mvm_virtio_blk_get_fd(MvmVirtio *dev);
int mvm_virtio_net_get_tap_fd(MvmVirtio *dev);
/* The buckets start full; a request waiting for the old limit is reconsidered. Any thread. */
void mvm_virtio_blk_set_rate_limit(MvmVirtio *dev, const MvmRateLimit *limit);
/* The device's figures (microvm.h), under its lock. Any thread. */
void mvm_virtio_blk_get_stats(MvmVirtio *dev, MvmDiskStats *stats);
void mvm_virtio_net_get_stats(MvmVirtio *dev, MvmNicStats *stats);
/* The same for a NIC's receive (@rx, host to guest) and transmit (@tx) directions; NULL
 * leaves that direction as it is. */
void mvm_virtio_net_set_rate_limits(MvmVirtio *dev, const MvmRateLimit *rx, const MvmRateLimit *tx);
/*
 * A restored NIC keeps the MAC the snapshot's guest read from its config space (then
 * mvm_virtio_net_get_mac() reports it), unless set_clone() was called before the restore: then
 * the config space gets the NIC's own MAC instead (MVM_RESTORE_CLONE).
 */
void mvm_virtio_net_set_clone(MvmVirtio *dev);
void mvm_virtio_net_get_mac(MvmVirtio *dev, guint8 mac[6]);
MvmVirtio *mvm_virtio_vsock_new(guint32 cid, const char *uds_path, const MvmVirtioEnv *env,
                                GError **error);
MvmVirtio *mvm_virtio_rng_new(const MvmVirtioEnv *env, GError **error);

G_END_DECLS
