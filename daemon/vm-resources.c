/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM.SetResources: what may change while a VM runs. The whole request is parsed and checked
 * against the definition first, then stored (a persistent VM's), then given to the machine, so
 * that either every change is made or none.
 */
#include "config-devices.h"
#include "store.h"
#include "vm-service-private.h"

/* What SetResources may change: the rate limits of each disk, and of each NIC both ways. */
typedef struct {
    MvmRateLimit *disks;
    MvmRateLimit *rx, *tx;
} Limits;

static void limits_clear(Limits *limits)
{
    g_free(limits->disks);
    g_free(limits->rx);
    g_free(limits->tx);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Limits, limits_clear)

static MvmdDisk *disk_at(MvmdVmService *self, guint i)
{
    return g_ptr_array_index(self->definition->devices.disks, i);
}

static MvmdNic *nic_at(MvmdVmService *self, guint i)
{
    return g_ptr_array_index(self->definition->devices.nics, i);
}

static guint n_disks(MvmdVmService *self)
{
    return self->definition->devices.disks->len;
}

static guint n_nics(MvmdVmService *self)
{
    return self->definition->devices.nics->len;
}

static void limits_from_definition(MvmdVmService *self, Limits *limits)
{
    /* One more than needed, so that a VM without disks or NICs has arrays too. */
    limits->disks = g_new0(MvmRateLimit, n_disks(self) + 1);
    limits->rx = g_new0(MvmRateLimit, n_nics(self) + 1);
    limits->tx = g_new0(MvmRateLimit, n_nics(self) + 1);
    for (guint i = 0; i < n_disks(self); i++)
        limits->disks[i] = disk_at(self, i)->rate_limit;
    for (guint i = 0; i < n_nics(self); i++) {
        limits->rx[i] = nic_at(self, i)->rx_rate_limit;
        limits->tx[i] = nic_at(self, i)->tx_rate_limit;
    }
}

static void limits_to_definition(MvmdVmService *self, const Limits *limits)
{
    for (guint i = 0; i < n_disks(self); i++)
        disk_at(self, i)->rate_limit = limits->disks[i];
    for (guint i = 0; i < n_nics(self); i++) {
        nic_at(self, i)->rx_rate_limit = limits->rx[i];
        nic_at(self, i)->tx_rate_limit = limits->tx[i];
    }
}

/* Entry @index of `disks` or `network` names one of the VM's @count devices. */
static gboolean check_index(const char *where, guint32 index, guint count, const char *what,
                            GError **error)
{
    if (index < count)
        return TRUE;
    if (count == 0)
        return mvmd_config_invalid(error, where, "the VM has no %s", what);
    return mvmd_config_invalid(error, where, "no such device: the VM's %s are 0 to %u", what,
                               count - 1);
}

static gboolean parse_disk(GVariant *entry, const char *where, guint index, Limits *limits,
                           GError **error)
{
    return mvmd_parse_rate_limit_update(entry, where, "", &limits->disks[index], error);
}

static gboolean parse_nic(GVariant *entry, const char *where, guint index, Limits *limits,
                          GError **error)
{
    return mvmd_parse_nic_rate_limits(entry, where, &limits->rx[index], &limits->tx[index], error);
}

/* A kind of device SetResources changes: its key, its entries' keys and their parser. */
typedef struct {
    const char *key;
    const char *what;
    MvmdKeySpec keys[4];
    guint n_keys;
    gboolean (*parse)(GVariant *entry, const char *where, guint index, Limits *limits,
                      GError **error);
} DeviceKind;

static const DeviceKind disk_kind = {
    .key = "disks",
    .what = "disks",
    .keys = {{"bandwidth", "a{sv}"}, {"ops", "a{sv}"}},
    .n_keys = 2,
    .parse = parse_disk,
};

static const DeviceKind nic_kind = {
    .key = "network",
    .what = "network interfaces",
    .keys = {{"rx-bandwidth", "a{sv}"},
             {"rx-ops", "a{sv}"},
             {"tx-bandwidth", "a{sv}"},
             {"tx-ops", "a{sv}"}},
    .n_keys = 4,
    .parse = parse_nic,
};

/* @kind's entry of @resources (a{ua{sv}}: by device index), if any, into @limits. */
static gboolean parse_devices(GVariant *resources, const DeviceKind *kind, guint count,
                              Limits *limits, GError **error)
{
    g_autoptr(GVariant) devices =
        g_variant_lookup_value(resources, kind->key, G_VARIANT_TYPE("a{ua{sv}}"));
    GVariantIter iter;
    guint32 index;
    GVariant *entry;

    if (!devices)
        return TRUE;
    g_variant_iter_init(&iter, devices);
    while (g_variant_iter_next(&iter, "{u@a{sv}}", &index, &entry)) {
        g_autoptr(GVariant) owned = entry;
        g_autofree char *where = g_strdup_printf("%s[%u]", kind->key, index);

        if (!check_index(where, index, count, kind->what, error) ||
            !mvmd_config_check_keys(entry, kind->keys, kind->n_keys, where, error) ||
            !kind->parse(entry, where, index, limits, error))
            return FALSE;
    }
    return TRUE;
}

static char *describe_bucket(const MvmTokenBucketConfig *b, const char *unit)
{
    if (b->size == 0)
        return g_strdup("none");
    return g_strdup_printf("%" G_GUINT64_FORMAT " %s per %" G_GUINT64_FORMAT " ms", b->size, unit,
                           b->refill_time_ms);
}

static void log_limit(MvmdVmService *self, const char *device, const MvmRateLimit *limit)
{
    g_autofree char *bandwidth = describe_bucket(&limit->bandwidth, "bytes");
    g_autofree char *ops = describe_bucket(&limit->ops, "requests");

    vm_log(self, G_LOG_LEVEL_MESSAGE, "%s: rate limit now bandwidth %s, ops %s", device, bandwidth,
           ops);
}

static gboolean limit_changed(const MvmRateLimit *a, const MvmRateLimit *b)
{
    return memcmp(a, b, sizeof(MvmRateLimit)) != 0;
}

static void apply_disks(MvmdVmService *self, const Limits *old)
{
    for (guint i = 0; i < n_disks(self); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *device = g_strdup_printf("disk %u", i);

        if (!limit_changed(&old->disks[i], &disk_at(self, i)->rate_limit))
            continue;
        log_limit(self, device, &disk_at(self, i)->rate_limit);
        if (self->run &&
            !mvm_vm_set_disk_rate_limit(self->run->vm, i, &disk_at(self, i)->rate_limit, &error))
            vm_log(self, G_LOG_LEVEL_WARNING, "BUG: %s refused its checked limit: %s", device,
                   error->message);
    }
}

static void apply_nics(MvmdVmService *self, const Limits *old)
{
    for (guint i = 0; i < n_nics(self); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *device = g_strdup_printf("network interface %u", i);
        g_autofree char *rx_name = g_strdup_printf("%s receive", device);
        g_autofree char *tx_name = g_strdup_printf("%s transmit", device);
        const MvmdNic *nic = nic_at(self, i);
        /* Only a direction that changed starts again with full buckets. */
        const MvmRateLimit *rx =
            limit_changed(&old->rx[i], &nic->rx_rate_limit) ? &nic->rx_rate_limit : NULL;
        const MvmRateLimit *tx =
            limit_changed(&old->tx[i], &nic->tx_rate_limit) ? &nic->tx_rate_limit : NULL;

        if (rx)
            log_limit(self, rx_name, rx);
        if (tx)
            log_limit(self, tx_name, tx);
        if ((rx || tx) && self->run &&
            !mvm_vm_set_nic_rate_limits(self->run->vm, i, rx, tx, &error))
            vm_log(self, G_LOG_LEVEL_WARNING, "BUG: %s refused its checked limits: %s", device,
                   error->message);
    }
}

/*
 * The machine (running, paused, or stopped but not yet reaped) gets the changed limits. Its
 * library checks the same bounds the parser did, so a refusal here is a bug. The definition
 * and the machine agree (both change only here, and a start builds the one from the other), so
 * comparing with the old definition finds what the machine must be told.
 */
static void apply_to_machine(MvmdVmService *self, const Limits *old)
{
    apply_disks(self, old);
    apply_nics(self, old);
}

gboolean mvmd_vm_service_set_resources(MvmdVmService *self, GVariant *resources, GError **error)
{
    static const MvmdKeySpec keys[] = {{"disks", "a{ua{sv}}"}, {"network", "a{ua{sv}}"}};
    g_auto(Limits) old = {0};
    g_auto(Limits) limits = {0};

    g_return_val_if_fail(self->op == OP_NONE, FALSE);
    if (!mvmd_config_check_keys(resources, keys, G_N_ELEMENTS(keys), NULL, error))
        return FALSE;
    limits_from_definition(self, &old);
    limits_from_definition(self, &limits);
    if (!parse_devices(resources, &disk_kind, n_disks(self), &limits, error) ||
        !parse_devices(resources, &nic_kind, n_nics(self), &limits, error))
        return FALSE;

    limits_to_definition(self, &limits);
    if (self->definition->persist && !mvmd_store_save(self->ctx->store, self->definition, error)) {
        limits_to_definition(self, &old);
        return FALSE;
    }
    apply_to_machine(self, &old);
    return TRUE;
}
