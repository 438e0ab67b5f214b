/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM.SetResources: what may change while a VM runs. The whole request is parsed and checked
 * against the definition first, then stored (a persistent VM's), then given to the machine, so
 * that either every change is made or none.
 */
#include "config-devices.h"
#include "store.h"
#include "vm-service-private.h"

/* `disks` (a{ua{sv}}) into @limits, one per disk of the VM, which hold the current ones. */
static gboolean parse_disks(GVariant *disks, MvmRateLimit *limits, guint n_disks, GError **error)
{
    static const MvmdKeySpec keys[] = {{"bandwidth", "a{sv}"}, {"ops", "a{sv}"}};
    GVariantIter iter;
    guint32 index;
    GVariant *entry;

    g_variant_iter_init(&iter, disks);
    while (g_variant_iter_next(&iter, "{u@a{sv}}", &index, &entry)) {
        g_autoptr(GVariant) owned = entry;
        g_autofree char *where = g_strdup_printf("disks[%u]", index);

        if (index >= n_disks && n_disks == 0)
            return mvmd_config_invalid(error, where, "the VM has no disks");
        if (index >= n_disks)
            return mvmd_config_invalid(error, where, "no such disk: the VM's are 0 to %u",
                                       n_disks - 1);
        if (!mvmd_config_check_keys(entry, keys, G_N_ELEMENTS(keys), where, error) ||
            !mvmd_parse_rate_limit_update(entry, where, &limits[index], error))
            return FALSE;
    }
    return TRUE;
}

static MvmRateLimit *disk_limit(MvmdVmService *self, guint i)
{
    return &((MvmdDisk *)g_ptr_array_index(self->definition->devices.disks, i))->rate_limit;
}

static char *describe_bucket(const MvmTokenBucketConfig *b, const char *unit)
{
    if (b->size == 0)
        return g_strdup("none");
    return g_strdup_printf("%" G_GUINT64_FORMAT " %s per %" G_GUINT64_FORMAT " ms", b->size, unit,
                           b->refill_time_ms);
}

static void log_disk_limit(MvmdVmService *self, guint i, const MvmRateLimit *limit)
{
    g_autofree char *bandwidth = describe_bucket(&limit->bandwidth, "bytes");
    g_autofree char *ops = describe_bucket(&limit->ops, "requests");

    vm_log(self, G_LOG_LEVEL_MESSAGE, "disk %u: rate limit now bandwidth %s, ops %s", i, bandwidth,
           ops);
}

/*
 * The machine (running, paused, or stopped but not yet reaped) gets the changed limits. Its
 * library checks the same bounds the parser did, so a refusal here is a bug.
 */
static void apply_to_machine(MvmdVmService *self, const MvmRateLimit *old)
{
    for (guint i = 0; i < self->definition->devices.disks->len; i++) {
        g_autoptr(GError) error = NULL;

        if (memcmp(&old[i], disk_limit(self, i), sizeof(MvmRateLimit)) == 0)
            continue;
        log_disk_limit(self, i, disk_limit(self, i));
        if (self->run && !mvm_vm_set_disk_rate_limit(self->run->vm, i, disk_limit(self, i), &error))
            vm_log(self, G_LOG_LEVEL_WARNING, "BUG: disk %u refused its checked limit: %s", i,
                   error->message);
    }
}

gboolean mvmd_vm_service_set_resources(MvmdVmService *self, GVariant *resources, GError **error)
{
    static const MvmdKeySpec keys[] = {{"disks", "a{ua{sv}}"}};
    guint n_disks = self->definition->devices.disks->len;
    g_autofree MvmRateLimit *limits = g_new0(MvmRateLimit, n_disks + 1);
    g_autofree MvmRateLimit *old = g_new0(MvmRateLimit, n_disks + 1);
    g_autoptr(GVariant) disks = NULL;

    g_return_val_if_fail(self->op == OP_NONE, FALSE);
    if (!mvmd_config_check_keys(resources, keys, G_N_ELEMENTS(keys), NULL, error))
        return FALSE;
    for (guint i = 0; i < n_disks; i++)
        limits[i] = old[i] = *disk_limit(self, i);
    disks = g_variant_lookup_value(resources, "disks", G_VARIANT_TYPE("a{ua{sv}}"));
    if (disks && !parse_disks(disks, limits, n_disks, error))
        return FALSE;

    for (guint i = 0; i < n_disks; i++)
        *disk_limit(self, i) = limits[i];
    if (self->definition->persist && !mvmd_store_save(self->ctx->store, self->definition, error)) {
        for (guint i = 0; i < n_disks; i++)
            *disk_limit(self, i) = old[i];
        return FALSE;
    }
    apply_to_machine(self, old);
    return TRUE;
}
