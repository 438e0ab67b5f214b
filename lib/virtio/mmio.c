/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtio-mmio transport, version 2 (virtio 1.2 §4.2). Modern only: a driver
 * that does not accept VIRTIO_F_VERSION_1 never gets FEATURES_OK (§4.2.3.1.1).
 *
 * QueueNotify writes reach the I/O thread without a VM exit through a KVM
 * ioeventfd per queue (datamatch on the queue index); interrupts go out
 * through a KVM irqfd, an edge on the device's GSI (see lib/boot/acpi.c).
 */
#include "virtio.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kvm.h"
#include "layout.h"

#define CONFIG_MAX (MVM_VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG)

typedef struct {
    MvmVirtio *dev;
    guint index;
    int notify_fd; /* eventfd: ioeventfd target, also written on a trapped notify */
    gboolean ioeventfd;
    GSource *source;
    MvmVirtqueue vq;
    guint32 ready;
} Queue;

struct _MvmVirtio {
    const MvmVirtioOps *ops;
    gpointer backend;
    MvmVirtioEnv env;
    int irq_fd;
    gboolean irqfd_assigned;

    GMutex lock;
    guint32 status;
    guint32 interrupt_status;
    gboolean irq_pending;
    guint32 device_features_sel, driver_features_sel, queue_sel;
    guint64 device_features, driver_features;
    guint32 epoch;
    guint32 config_generation;
    guint8 config[CONFIG_MAX];
    gsize config_len;
    Queue queues[MVM_VIRTIO_MAX_QUEUES];
};

/* ---- interrupts and state ---- */

static void signal_irq(MvmVirtio *dev)
{
    guint64 one = 1;

    if (write(dev->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        g_debug("virtio-%s: irqfd write: %s", dev->ops->name, g_strerror(errno));
}

void mvm_virtio_lock(MvmVirtio *dev)
{
    g_mutex_lock(&dev->lock);
}

void mvm_virtio_unlock(MvmVirtio *dev)
{
    gboolean irq = dev->irq_pending;

    dev->irq_pending = FALSE;
    g_mutex_unlock(&dev->lock);
    if (irq)
        signal_irq(dev);
}

static void raise_interrupt(MvmVirtio *dev, guint32 bits)
{
    dev->interrupt_status |= bits;
    dev->irq_pending = TRUE;
}

gboolean mvm_virtio_is_active(MvmVirtio *dev)
{
    return (dev->status & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET)) ==
           VIRTIO_STATUS_DRIVER_OK;
}

guint32 mvm_virtio_get_epoch(MvmVirtio *dev)
{
    return dev->epoch;
}

MvmGuestLog *mvm_virtio_get_guest_log(MvmVirtio *dev)
{
    return dev->env.guest_log;
}

/* §2.1.2: the device sets DEVICE_NEEDS_RESET and sends a configuration change notification. */
void mvm_virtio_set_needs_reset(MvmVirtio *dev, const char *reason)
{
    if (dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
        return;
    mvm_guest_log(dev->env.guest_log, G_LOG_LEVEL_MESSAGE,
                  "virtio-%s at 0x%" G_GINT64_MODIFIER "x: %s; device needs reset", dev->ops->name,
                  dev->env.base, reason);
    dev->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    raise_interrupt(dev, VIRTIO_MMIO_INT_CONFIG);
}

MvmVqPopResult mvm_virtio_pop(MvmVirtio *dev, guint queue, MvmVqChain *chain)
{
    g_autoptr(GError) error = NULL;

    if (queue >= dev->ops->n_queues || !mvm_virtio_is_active(dev))
        return MVM_VQ_POP_EMPTY;
    MvmVqPopResult r = mvm_vq_pop(&dev->queues[queue].vq, dev->env.memory, chain, &error);
    if (r == MVM_VQ_POP_BROKEN) {
        g_autofree char *why = g_strdup_printf("queue %u: %s", queue, error->message);
        mvm_virtio_set_needs_reset(dev, why);
    }
    return r;
}

guint16 mvm_virtio_pending(MvmVirtio *dev, guint queue)
{
    if (queue >= dev->ops->n_queues || !mvm_virtio_is_active(dev))
        return 0;
    return mvm_vq_pending(&dev->queues[queue].vq);
}

void mvm_virtio_push(MvmVirtio *dev, guint queue, guint16 head, guint32 len)
{
    if (queue >= dev->ops->n_queues || !mvm_virtio_is_active(dev))
        return;
    MvmVirtqueue *vq = &dev->queues[queue].vq;
    mvm_vq_push(vq, head, len);
    if (!mvm_vq_interrupt_suppressed(vq))
        raise_interrupt(dev, VIRTIO_MMIO_INT_VRING);
}

/* §2.4 device reset: forget everything the driver set. Lock held. */
static void device_reset(MvmVirtio *dev)
{
    if (dev->ops->reset != NULL)
        dev->ops->reset(dev->backend);
    dev->status = 0;
    dev->interrupt_status = 0;
    dev->driver_features = 0;
    dev->device_features_sel = dev->driver_features_sel = dev->queue_sel = 0;
    dev->epoch++;
    for (guint i = 0; i < dev->ops->n_queues; i++) {
        mvm_vq_reset(&dev->queues[i].vq);
        dev->queues[i].ready = 0;
    }
}

static void kick_queue(Queue *q)
{
    guint64 one = 1;

    if (write(q->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        g_debug("virtio-%s: notify eventfd: %s", q->dev->ops->name, g_strerror(errno));
}

/* §3.1.1 steps 5 and 8: FEATURES_OK only for a subset that includes VERSION_1. */
static void write_status(MvmVirtio *dev, guint32 value)
{
    if (value == 0) {
        device_reset(dev);
        return;
    }
    if ((value & VIRTIO_STATUS_FEATURES_OK) && !(dev->status & VIRTIO_STATUS_FEATURES_OK)) {
        gboolean ok = (dev->driver_features & ~dev->device_features) == 0 &&
                      (dev->driver_features & (1ULL << VIRTIO_F_VERSION_1));
        if (!ok)
            value &= ~(guint32)VIRTIO_STATUS_FEATURES_OK;
    }
    gboolean going_live = (value & VIRTIO_STATUS_DRIVER_OK) && !mvm_virtio_is_active(dev) &&
                          !(dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    if (going_live && !(value & VIRTIO_STATUS_FEATURES_OK))
        value &= ~(guint32)VIRTIO_STATUS_DRIVER_OK;
    /* NEEDS_RESET is the device's to set, and only a reset clears it (§2.1.1). */
    dev->status = (value & ~(guint32)VIRTIO_STATUS_DEVICE_NEEDS_RESET) |
                  (dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    if (going_live && (value & VIRTIO_STATUS_DRIVER_OK)) {
        if (dev->ops->activate != NULL)
            dev->ops->activate(dev->backend);
        /* Buffers made available before DRIVER_OK are processed now (§3.1.1 step 8). */
        for (guint i = 0; i < dev->ops->n_queues; i++)
            kick_queue(&dev->queues[i]);
    }
}

static void write_queue_ready(MvmVirtio *dev, Queue *q, guint32 value)
{
    g_autoptr(GError) error = NULL;

    if (!value) {
        q->ready = 0;
        q->vq.enabled = FALSE;
        return;
    }
    if (q->ready)
        return;
    if (!mvm_vq_enable(&q->vq, dev->env.memory, &error)) {
        g_autofree char *why = g_strdup_printf("queue %u: %s", q->index, error->message);
        mvm_virtio_set_needs_reset(dev, why);
        return;
    }
    q->ready = 1;
}

/* ---- registers ---- */

static Queue *selected_queue(MvmVirtio *dev)
{
    return dev->queue_sel < dev->ops->n_queues ? &dev->queues[dev->queue_sel] : NULL;
}

static guint32 read_queue_reg(MvmVirtio *dev, guint64 offset)
{
    Queue *q = selected_queue(dev);

    if (q == NULL)
        return 0; /* §4.2.2: QueueNumMax of a queue that does not exist is 0 */
    switch (offset) {
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return dev->ops->queue_size_max;
    case VIRTIO_MMIO_QUEUE_READY:
        return q->ready;
    case VIRTIO_MMIO_QUEUE_NUM:
        return q->vq.size;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        return (guint32)q->vq.desc_gpa;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        return (guint32)(q->vq.desc_gpa >> 32);
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        return (guint32)q->vq.avail_gpa;
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        return (guint32)(q->vq.avail_gpa >> 32);
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        return (guint32)q->vq.used_gpa;
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        return (guint32)(q->vq.used_gpa >> 32);
    default:
        return 0;
    }
}

static guint32 read_reg(MvmVirtio *dev, guint64 offset)
{
    switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return 2;
    case VIRTIO_MMIO_DEVICE_ID:
        return dev->ops->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return dev->device_features_sel < 2
                   ? (guint32)(dev->device_features >> (32 * dev->device_features_sel))
                   : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return dev->interrupt_status;
    case VIRTIO_MMIO_STATUS:
        return dev->status;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return dev->config_generation;
    default:
        return read_queue_reg(dev, offset);
    }
}

/* A 64-bit guest address written as two halves. */
static void set_half(guint64 *reg, gboolean high, guint32 value)
{
    if (high)
        *reg = (*reg & 0xffffffffULL) | ((guint64)value << 32);
    else
        *reg = (*reg & ~0xffffffffULL) | value;
}

static void write_queue_reg(MvmVirtio *dev, guint64 offset, guint32 value)
{
    Queue *q = selected_queue(dev);

    if (q == NULL)
        return;
    if (offset == VIRTIO_MMIO_QUEUE_READY) {
        write_queue_ready(dev, q, value);
        return;
    }
    /* §4.2.2.3: the driver must not change a queue that is ready; such writes are ignored. */
    if (q->ready)
        return;
    switch (offset) {
    case VIRTIO_MMIO_QUEUE_NUM:
        q->vq.size = (guint16)MIN(value, 0xffffu); /* checked at QueueReady */
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        set_half(&q->vq.desc_gpa, offset == VIRTIO_MMIO_QUEUE_DESC_HIGH, value);
        break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        set_half(&q->vq.avail_gpa, offset == VIRTIO_MMIO_QUEUE_DRIVER_HIGH, value);
        break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        set_half(&q->vq.used_gpa, offset == VIRTIO_MMIO_QUEUE_DEVICE_HIGH, value);
        break;
    default:
        break;
    }
}

static void write_reg(MvmVirtio *dev, guint64 offset, guint32 value)
{
    switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        dev->device_features_sel = value;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        dev->driver_features_sel = value;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        /* §3.1.1: features are fixed once FEATURES_OK is set. */
        if (dev->driver_features_sel < 2 && !(dev->status & VIRTIO_STATUS_FEATURES_OK))
            set_half(&dev->driver_features, dev->driver_features_sel == 1, value);
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        dev->queue_sel = value;
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        /* Reached only when the ioeventfd did not match (e.g. no ioeventfd support). */
        if (value < dev->ops->n_queues)
            kick_queue(&dev->queues[value]);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        dev->interrupt_status &= ~value;
        break;
    case VIRTIO_MMIO_STATUS:
        write_status(dev, value);
        break;
    default:
        write_queue_reg(dev, offset, value);
        break;
    }
}

static void mmio_read(gpointer opaque, guint64 offset, guint8 *data, guint len)
{
    MvmVirtio *dev = opaque;

    memset(data, 0, len);
    mvm_virtio_lock(dev);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        guint64 at = offset - VIRTIO_MMIO_CONFIG;
        if (at < dev->config_len && len <= dev->config_len - at)
            memcpy(data, dev->config + at, len);
    } else if (len == 4 && offset % 4 == 0) { /* §4.2.2.2: 32-bit aligned accesses only */
        guint32 v = GUINT32_TO_LE(read_reg(dev, offset));
        memcpy(data, &v, 4);
    }
    mvm_virtio_unlock(dev);
}

static void mmio_write(gpointer opaque, guint64 offset, const guint8 *data, guint len)
{
    MvmVirtio *dev = opaque;
    guint32 v;

    /* Config space writes are ignored: none of our devices has a writable field. */
    if (offset >= VIRTIO_MMIO_CONFIG || len != 4 || offset % 4 != 0)
        return;
    memcpy(&v, data, 4);
    mvm_virtio_lock(dev);
    write_reg(dev, offset, GUINT32_FROM_LE(v));
    mvm_virtio_unlock(dev);
}

void mvm_virtio_set_config(MvmVirtio *dev, const void *config, gsize len)
{
    g_return_if_fail(len <= CONFIG_MAX);
    mvm_virtio_lock(dev);
    memcpy(dev->config, config, len);
    dev->config_len = len;
    dev->config_generation++;
    mvm_virtio_unlock(dev);
}

/* §4.2.2: a change the driver may not expect gets a new generation and an interrupt. */
void mvm_virtio_update_config(MvmVirtio *dev, gsize offset, const void *data, gsize len)
{
    g_return_if_fail(offset <= dev->config_len && len <= dev->config_len - offset);
    memcpy(dev->config + offset, data, len);
    dev->config_generation++;
    if (dev->status & VIRTIO_STATUS_DRIVER_OK)
        raise_interrupt(dev, VIRTIO_MMIO_INT_CONFIG);
}

void mvm_virtio_restore_config(MvmVirtio *dev, gsize offset, const void *data, gsize len)
{
    g_return_if_fail(offset <= dev->config_len && len <= dev->config_len - offset);
    if (memcmp(dev->config + offset, data, len) == 0)
        return;
    memcpy(dev->config + offset, data, len);
    dev->config_generation++;
}

void mvm_virtio_kick_queue(MvmVirtio *dev, guint index)
{
    g_return_if_fail(index < dev->ops->n_queues);
    kick_queue(&dev->queues[index]);
}

gpointer mvm_virtio_get_backend(MvmVirtio *dev)
{
    return dev->backend;
}

const MvmMemory *mvm_virtio_get_memory(MvmVirtio *dev)
{
    return dev->env.memory;
}

void mvm_virtio_read_config(MvmVirtio *dev, gsize offset, void *data, gsize len)
{
    g_return_if_fail(offset <= dev->config_len && len <= dev->config_len - offset);
    memcpy(data, dev->config + offset, len);
}

/* ---- construction ---- */

static gboolean queue_kicked(int fd, GIOCondition condition, gpointer data)
{
    Queue *q = data;
    guint64 count;

    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return G_SOURCE_CONTINUE;
    q->dev->ops->notify(q->dev->backend, q->index);
    return G_SOURCE_CONTINUE;
}

static gboolean set_ioeventfd(MvmVirtio *dev, Queue *q, gboolean assign)
{
    struct kvm_ioeventfd ioev = {
        .datamatch = q->index,
        .addr = dev->env.base + VIRTIO_MMIO_QUEUE_NOTIFY,
        .len = 4,
        .fd = q->notify_fd,
        .flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };
    return mvm_kvm_ioctl(dev->env.vm_fd, KVM_IOEVENTFD, &ioev) == 0;
}

static gboolean setup_queue(MvmVirtio *dev, guint index, GError **error)
{
    Queue *q = &dev->queues[index];

    q->dev = dev;
    q->index = index;
    q->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->notify_fd < 0)
        return mvm_kvm_set_errno_error(error, "eventfd");
    /* Without an ioeventfd the notify write traps to mmio_write, which kicks the same eventfd. */
    q->ioeventfd = set_ioeventfd(dev, q, TRUE);
    if (!q->ioeventfd)
        g_debug("virtio-%s: KVM_IOEVENTFD: %s; notifications will exit to userspace",
                dev->ops->name, g_strerror(errno));
    q->source = mvm_io_thread_add_fd(dev->env.io_thread, q->notify_fd, G_IO_IN, queue_kicked, q);
    return TRUE;
}

static gboolean setup_irq(MvmVirtio *dev, GError **error)
{
    dev->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (dev->irq_fd < 0)
        return mvm_kvm_set_errno_error(error, "eventfd");
    struct kvm_irqfd irqfd = {.fd = (guint32)dev->irq_fd, .gsi = dev->env.gsi};
    if (mvm_kvm_ioctl(dev->env.vm_fd, KVM_IRQFD, &irqfd) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_IRQFD");
    dev->irqfd_assigned = TRUE;
    return TRUE;
}

MvmVirtio *mvm_virtio_new(const MvmVirtioOps *ops, gpointer backend, const MvmVirtioEnv *env,
                          GError **error)
{
    g_autoptr(MvmVirtio) dev = g_new0(MvmVirtio, 1);

    g_assert(ops->n_queues <= MVM_VIRTIO_MAX_QUEUES);
    g_mutex_init(&dev->lock);
    dev->ops = ops;
    dev->backend = backend;
    dev->env = *env;
    dev->irq_fd = -1;
    dev->device_features = ops->features | (1ULL << VIRTIO_F_VERSION_1);
    for (guint i = 0; i < MVM_VIRTIO_MAX_QUEUES; i++)
        dev->queues[i].notify_fd = -1;
    if (!setup_irq(dev, error))
        return NULL;
    for (guint i = 0; i < ops->n_queues; i++)
        if (!setup_queue(dev, i, error))
            return NULL;
    return g_steal_pointer(&dev);
}

gboolean mvm_virtio_attach(MvmVirtio *dev, MvmIoBus *bus, GError **error)
{
    static const MvmIoOps ops = {mmio_read, mmio_write};
    g_autofree char *name = g_strdup_printf("virtio-%s", dev->ops->name);

    return mvm_io_bus_register(bus, MVM_IO_SPACE_MMIO, dev->env.base, MVM_VIRTIO_MMIO_SIZE, &ops,
                               dev, name, error);
}

void mvm_virtio_free(MvmVirtio *dev)
{
    if (dev == NULL)
        return;
    for (guint i = 0; i < MVM_VIRTIO_MAX_QUEUES; i++) {
        Queue *q = &dev->queues[i];
        if (q->source != NULL) {
            g_source_destroy(q->source);
            g_source_unref(q->source);
        }
        if (q->ioeventfd)
            set_ioeventfd(dev, q, FALSE);
        if (q->notify_fd >= 0)
            close(q->notify_fd);
    }
    if (dev->irqfd_assigned) {
        struct kvm_irqfd irqfd = {
            .fd = (guint32)dev->irq_fd, .gsi = dev->env.gsi, .flags = KVM_IRQFD_FLAG_DEASSIGN};
        mvm_kvm_ioctl(dev->env.vm_fd, KVM_IRQFD, &irqfd);
    }
    if (dev->irq_fd >= 0)
        close(dev->irq_fd);
    if (dev->ops->free != NULL && dev->backend != NULL)
        dev->ops->free(dev->backend);
    g_mutex_clear(&dev->lock);
    g_free(dev);
}

guint64 mvm_virtio_get_base(const MvmVirtio *dev)
{
    return dev->env.base;
}

guint32 mvm_virtio_get_gsi(const MvmVirtio *dev)
{
    return dev->env.gsi;
}

const char *mvm_virtio_get_name(const MvmVirtio *dev)
{
    return dev->ops->name;
}

MvmIoThread *mvm_virtio_get_io_thread(const MvmVirtio *dev)
{
    return dev->env.io_thread;
}

/* ---- snapshots ---- */

#define STATE_VERSION 1
/* version, status, interrupt status, device and driver features, queue select, config bytes,
 * queues (size, descriptor/driver/device areas, ready, next available, used index). */
#define STATE_TYPE "(uuuttuaya(qtttbqq))"

GVariant *mvm_virtio_save(MvmVirtio *dev)
{
    GVariantBuilder queues;

    mvm_virtio_lock(dev);
    g_variant_builder_init(&queues, G_VARIANT_TYPE("a(qtttbqq)"));
    for (guint i = 0; i < dev->ops->n_queues; i++) {
        const MvmVirtqueue *vq = &dev->queues[i].vq;
        g_variant_builder_add(&queues, "(qtttbqq)", vq->size, vq->desc_gpa, vq->avail_gpa,
                              vq->used_gpa, dev->queues[i].ready != 0, vq->last_avail,
                              vq->used_idx);
    }
    GVariant *config =
        g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, dev->config, dev->config_len, 1);
    GVariant *state =
        g_variant_new("(uuuttu@aya(qtttbqq))", STATE_VERSION, dev->status, dev->interrupt_status,
                      dev->device_features, dev->driver_features, dev->queue_sel, config, &queues);
    mvm_virtio_unlock(dev);
    return g_variant_ref_sink(state);
}

static gboolean restore_error(GError **error, MvmVirtio *dev, const char *what)
{
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, "virtio-%s state: %s", dev->ops->name,
                what);
    return FALSE;
}

/* One queue of an untrusted state: the rings must lie in RAM, as at QueueReady. Lock held. */
static gboolean restore_queue(MvmVirtio *dev, Queue *q, GVariant *v, GError **error)
{
    gboolean ready;
    guint16 last_avail, used_idx;
    g_autoptr(GError) local = NULL;

    g_variant_get(v, "(qtttbqq)", &q->vq.size, &q->vq.desc_gpa, &q->vq.avail_gpa, &q->vq.used_gpa,
                  &ready, &last_avail, &used_idx);
    q->ready = 0;
    q->vq.enabled = FALSE;
    if (!ready)
        return TRUE;
    if (!mvm_vq_enable(&q->vq, dev->env.memory, &local))
        return restore_error(error, dev, local->message);
    q->vq.last_avail = last_avail;
    q->vq.used_idx = used_idx;
    q->ready = 1;
    return TRUE;
}

static gboolean restore_locked(MvmVirtio *dev, GVariant *state, GError **error)
{
    guint32 version, status, isr, queue_sel;
    guint64 device_features, driver_features;
    g_autoptr(GVariant) config = NULL;
    g_autoptr(GVariant) queues = NULL;

    g_variant_get(state, "(uuuttu@ay@a(qtttbqq))", &version, &status, &isr, &device_features,
                  &driver_features, &queue_sel, &config, &queues);
    if (version != STATE_VERSION)
        return restore_error(error, dev, "unknown version");
    if (device_features != dev->device_features || (driver_features & ~device_features) != 0)
        return restore_error(error, dev, "features do not match this device");
    if (status & ~(guint32)0xcf) /* the bits of §2.1 */
        return restore_error(error, dev, "unknown status bits");
    if (g_variant_n_children(queues) != dev->ops->n_queues)
        return restore_error(error, dev, "wrong number of queues");
    if (g_variant_get_size(config) != dev->config_len)
        return restore_error(error, dev, "configuration space of another size");
    device_reset(dev);
    for (guint i = 0; i < dev->ops->n_queues; i++) {
        g_autoptr(GVariant) q = g_variant_get_child_value(queues, i);
        if (!restore_queue(dev, &dev->queues[i], q, error))
            return FALSE;
    }
    if (dev->config_len > 0) /* rng has no configuration space */
        memcpy(dev->config, g_variant_get_data(config), dev->config_len);
    dev->config_generation++;
    dev->status = status;
    dev->interrupt_status = isr & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    dev->driver_features = driver_features;
    dev->queue_sel = queue_sel;
    return TRUE;
}

gboolean mvm_virtio_restore(MvmVirtio *dev, GVariant *state, GError **error)
{
    if (!g_variant_is_of_type(state, G_VARIANT_TYPE(STATE_TYPE)))
        return restore_error(error, dev, "wrong type");
    mvm_virtio_lock(dev);
    gboolean ok = restore_locked(dev, state, error);
    if (!ok)
        device_reset(dev);
    else if (mvm_virtio_is_active(dev) && dev->ops->activate != NULL)
        dev->ops->activate(dev->backend);
    if (ok && dev->ops->restored != NULL)
        dev->ops->restored(dev->backend);
    mvm_virtio_unlock(dev);
    /* Requests the guest made available before the snapshot are served once it runs. */
    for (guint i = 0; ok && i < dev->ops->n_queues; i++)
        kick_queue(&dev->queues[i]);
    return ok;
}
