/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Resources on the command line: `microvmctl set NAME KEY=VALUE…` (VM.SetResources) and the
 * rate limits of `create --disk`. A limit is `none`, a RATE per second (a bucket of one
 * second: `10M`, `200`) or SIZE/MILLISECONDS (Firecracker's size and refill time: `100k/10`);
 * numbers take the decimal suffixes k, M and G. The daemon checks the ranges and names the key.
 */
#include <errno.h>

#include "microvmctl.h"

#define SET_TIMEOUT_MS (60 * 1000)

/* "10M" → 10000000; FALSE for anything else than digits and one suffix. */
static gboolean parse_count(const char *text, guint64 *value)
{
    static const struct {
        char suffix;
        guint64 unit;
    } units[] = {{'k', 1000}, {'M', 1000 * 1000}, {'G', 1000 * 1000 * 1000}};
    char *end = NULL;
    guint64 unit = 1;

    if (!g_ascii_isdigit(*text))
        return FALSE;
    errno = 0;
    *value = g_ascii_strtoull(text, &end, 10);
    if (errno != 0)
        return FALSE;
    for (gsize i = 0; *end && i < G_N_ELEMENTS(units); i++)
        if (*end == units[i].suffix) {
            unit = units[i].unit;
            end++;
        }
    if (*end || *value > G_MAXUINT64 / unit)
        return FALSE;
    *value *= unit;
    return TRUE;
}

GVariant *mctl_parse_rate_limit(const char *what, const char *text, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(text, "/", 2);
    g_auto(GVariantDict) bucket = G_VARIANT_DICT_INIT(NULL);
    guint64 size, refill_ms = 1000;

    if (g_str_equal(text, "none"))
        return g_variant_dict_end(&bucket);
    if (!parse_count(parts[0], &size) ||
        (parts[1] && !g_ascii_string_to_unsigned(parts[1], 10, 1, G_MAXUINT64, &refill_ms, NULL))) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    _("%s: “%s” is not none, RATE or SIZE/MILLISECONDS"), what, text);
        return NULL;
    }
    g_variant_dict_insert(&bucket, "size", "t", size);
    g_variant_dict_insert(&bucket, "refill-time-ms", "t", refill_ms);
    return g_variant_dict_end(&bucket);
}

/* "disk.N.bandwidth=VALUE" or "disk.N.ops=VALUE" into @disks (N → a{sv}). */
static gboolean add_setting(GHashTable *disks, const char *setting, GError **error)
{
    g_auto(GStrv) key_value = g_strsplit(setting, "=", 2);
    g_auto(GStrv) key = g_strsplit(key_value[0], ".", -1);
    guint64 index;
    GVariant *bucket;

    if (!key_value[1] || g_strv_length(key) != 3 || !g_str_equal(key[0], "disk") ||
        !g_ascii_string_to_unsigned(key[1], 10, 0, G_MAXUINT32, &index, NULL) ||
        (!g_str_equal(key[2], "bandwidth") && !g_str_equal(key[2], "ops"))) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    _("“%s” is not disk.N.bandwidth=LIMIT or disk.N.ops=LIMIT"), setting);
        return FALSE;
    }
    bucket = mctl_parse_rate_limit(key_value[0], key_value[1], error);
    if (!bucket)
        return FALSE;
    GVariantDict *disk = g_hash_table_lookup(disks, GUINT_TO_POINTER(index));
    if (!disk) {
        disk = g_variant_dict_new(NULL);
        g_hash_table_insert(disks, GUINT_TO_POINTER(index), disk);
    }
    g_variant_dict_insert_value(disk, key[2], bucket);
    return TRUE;
}

static GVariant *disks_to_variant(GHashTable *disks)
{
    GVariantBuilder b;
    GHashTableIter iter;
    gpointer index, disk;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a{ua{sv}}"));
    g_hash_table_iter_init(&iter, disks);
    while (g_hash_table_iter_next(&iter, &index, &disk))
        g_variant_builder_add(&b, "{u@a{sv}}", GPOINTER_TO_UINT(index), g_variant_dict_end(disk));
    return g_variant_builder_end(&b);
}

int mctl_cmd_set(Mctl *ctl, int argc, char **argv)
{
    g_autoptr(GHashTable) disks =
        g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)g_variant_dict_unref);
    g_auto(GVariantDict) resources = G_VARIANT_DICT_INIT(NULL);
    g_autoptr(GError) error = NULL;

    if (!mctl_parse(ctl, NULL, _("NAME KEY=VALUE…"),
                    _("Change a VM's resources, live if it runs; its definition keeps them.\n"
                      "Keys: disk.N.bandwidth (bytes) and disk.N.ops (requests), N from 0.\n"
                      "Values: none, a RATE per second (10M, 200), or SIZE/MILLISECONDS\n"
                      "(100k/10: 100 kB every 10 ms); k, M and G are decimal."),
                    &argc, &argv))
        return MCTL_EXIT_USAGE;
    if (argc < 2)
        return mctl_usage_error(_("Missing arguments; usage: %s"), "set NAME KEY=VALUE…");
    for (int i = 1; i < argc; i++)
        if (!add_setting(disks, argv[i], &error))
            return mctl_usage_error("%s", error->message);
    g_variant_dict_insert_value(&resources, "disks", disks_to_variant(disks));
    return mctl_vm_call(ctl, argv[0], "SetResources",
                        g_variant_new("(@a{sv})", g_variant_dict_end(&resources)), NULL,
                        SET_TIMEOUT_MS, NULL);
}
