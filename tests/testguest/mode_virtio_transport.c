/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=vtransport: the virtio-mmio registers themselves (virtio 1.2 §4.2.2, §3.1.1, §2.1) on
 * the first virtio-blk device: identification, the status machine, feature negotiation
 * (VERSION_1 required, features frozen by FEATURES_OK), queue registers, config generation,
 * and reset.
 */
#include "virtio.h"

#define BLK_F_SEG_MAX (1ULL << 2)
#define BLK_F_FLUSH   (1ULL << 9)

static struct vdev d;

static bool reg(const char *what, u32 off, u32 expected)
{
    return check_u64(what, expected, vio_read(&d, off));
}

static void set_features(u64 features)
{
    vio_write(&d, VIO_DRV_FEAT_SEL, 0);
    vio_write(&d, VIO_DRV_FEATURES, (u32)features);
    vio_write(&d, VIO_DRV_FEAT_SEL, 1);
    vio_write(&d, VIO_DRV_FEATURES, (u32)(features >> 32));
}

static u64 device_features(void)
{
    vio_write(&d, VIO_DEV_FEAT_SEL, 0);
    u64 f = vio_read(&d, VIO_DEV_FEATURES);
    vio_write(&d, VIO_DEV_FEAT_SEL, 1);
    f |= (u64)vio_read(&d, VIO_DEV_FEATURES) << 32;
    vio_write(&d, VIO_DEV_FEAT_SEL, 2); /* beyond the 64 bits: reads 0 */
    return vio_read(&d, VIO_DEV_FEATURES) == 0 ? f : 0;
}

static bool identification(void)
{
    bool ok = reg("vt-magic", VIO_MAGIC, 0x74726976);
    ok &= reg("vt-version", VIO_VERSION, 2);
    ok &= reg("vt-device-id", VIO_DEVICE_ID, 2);
    u64 f = device_features();
    gprintf("VTRANSPORT device features 0x%lx\n", f);
    ok &= check_u64("vt-feature-version-1", VIO_F_VERSION_1, f & VIO_F_VERSION_1);
    ok &= check_u64("vt-feature-seg-max", BLK_F_SEG_MAX, f & BLK_F_SEG_MAX);
    return ok;
}

static bool negotiation(void)
{
    u32 base = VIO_S_ACK | VIO_S_DRIVER;

    vio_write(&d, VIO_STATUS, 0);
    vio_write(&d, VIO_STATUS, base);
    /* A legacy driver (no VERSION_1) is refused: FEATURES_OK does not stick (§4.2.3.1.1). */
    set_features(BLK_F_SEG_MAX);
    vio_write(&d, VIO_STATUS, base | VIO_S_FEATURES_OK);
    bool ok = reg("vt-legacy-refused", VIO_STATUS, base);
    /* Nor does a feature the device did not offer. */
    set_features(VIO_F_VERSION_1 | (1ULL << 40));
    vio_write(&d, VIO_STATUS, base | VIO_S_FEATURES_OK);
    ok &= reg("vt-unoffered-refused", VIO_STATUS, base);
    /* DRIVER_OK without FEATURES_OK is refused too. */
    vio_write(&d, VIO_STATUS, base | VIO_S_DRIVER_OK);
    ok &= reg("vt-driver-ok-refused", VIO_STATUS, base);
    set_features(VIO_F_VERSION_1 | BLK_F_FLUSH);
    vio_write(&d, VIO_STATUS, base | VIO_S_FEATURES_OK);
    ok &= reg("vt-features-ok", VIO_STATUS, base | VIO_S_FEATURES_OK);
    /* The driver cannot raise NEEDS_RESET itself. */
    vio_write(&d, VIO_STATUS, base | VIO_S_FEATURES_OK | VIO_S_NEEDS_RESET);
    ok &= reg("vt-needs-reset-is-the-device's", VIO_STATUS, base | VIO_S_FEATURES_OK);
    return ok;
}

static bool queues_and_config(void)
{
    vio_write(&d, VIO_QUEUE_SEL, 1); /* blk has one queue */
    bool ok = reg("vt-no-queue-1", VIO_QUEUE_MAX, 0);
    vio_write(&d, VIO_QUEUE_SEL, 0);
    ok &= reg("vt-queue-0-max", VIO_QUEUE_MAX, 256);
    vio_write(&d, VIO_QUEUE_NUM, 12); /* not a power of two: refused when made ready */
    vio_write(&d, VIO_QUEUE_READY, 1);
    ok &= reg("vt-bad-size-not-ready", VIO_QUEUE_READY, 0);
    ok &= check_u64("vt-bad-size-needs-reset", VIO_S_NEEDS_RESET,
                    vio_read(&d, VIO_STATUS) & VIO_S_NEEDS_RESET);
    u32 gen = vio_read(&d, VIO_CONFIG_GEN);
    u64 capacity = *(volatile u64 *)(d.base + VIO_CONFIG);
    ok &= reg("vt-config-generation-stable", VIO_CONFIG_GEN, gen);
    ok &= check_u64("vt-capacity", arg_u64("sectors", 0), capacity);
    return ok;
}

static bool reset(void)
{
    vio_write(&d, VIO_STATUS, 0);
    bool ok = reg("vt-reset-status", VIO_STATUS, 0);
    vio_write(&d, VIO_QUEUE_SEL, 0);
    ok &= reg("vt-reset-queue-num", VIO_QUEUE_NUM, 0);
    ok &= reg("vt-reset-queue-ready", VIO_QUEUE_READY, 0);
    /* And the device works after it. */
    ok &= virtio_setup(&d, BLK_F_FLUSH, 1);
    ok &= check_u64("vt-working-after-reset", VIO_S_DRIVER_OK,
                    vio_read(&d, VIO_STATUS) & (VIO_S_DRIVER_OK | VIO_S_NEEDS_RESET));
    return ok;
}

bool mode_vtransport(void)
{
    if (!virtio_find(2, 0, &d)) {
        fail("vtransport: no virtio-blk device");
        return false;
    }
    bool ok = identification();
    ok &= negotiation();
    ok &= queues_and_config();
    ok &= reset();
    return ok;
}
