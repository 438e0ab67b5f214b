/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Resources on the command line: `microvmctl set NAME KEY=VALUE…` (VM.SetResources) and the
 * rate limits of `create --disk` and `--tap`. A limit is `none`, a RATE per second (a bucket of one
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

    if (text == NULL || !g_ascii_isdigit(*text))
        return FALSE;
    errno = 0;
    *value = g_ascii_strtoull(text, &end, 10);
    if (errno != 0)
        return FALSE;
    for (gsize i = 0; *end && i < G_N_ELEMENTS(units); i++)
        if (*end == units[i].suffix) {
            unit = units[i].unit;
            end++;
            break;
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

/* The limits `set` knows: a device's kind, as the key starts, and its entry's names. */
static const struct {
    const char *kind;    /* disk.N.… or nic.N.… */
    const char *dbus;    /* SetResources' key */
    const char *keys[5]; /* NULL-terminated */
} kinds[] = {{"disk", "disks", {"bandwidth", "ops", NULL}},
             {"nic", "network", {"rx-bandwidth", "rx-ops", "tx-bandwidth", "tx-ops", NULL}}};

/* "disk.N.ops" → the index in kinds[] and N; -1 for anything else. */
static int parse_key(const char *text, guint64 *index, const char **name)
{
    g_auto(GStrv) key = g_strsplit(text, ".", -1);

    if (g_strv_length(key) != 3 ||
        !g_ascii_string_to_unsigned(key[1], 10, 0, G_MAXUINT32, index, NULL))
        return -1;
    for (guint k = 0; k < G_N_ELEMENTS(kinds); k++)
        for (guint i = 0; g_str_equal(key[0], kinds[k].kind) && kinds[k].keys[i]; i++)
            if (g_str_equal(key[2], kinds[k].keys[i])) {
                *name = kinds[k].keys[i];
                return (int)k;
            }
    return -1;
}

/* "disk.N.bandwidth=VALUE", "nic.N.tx-ops=VALUE"… into @devices[kind] (N → a{sv}). */
static gboolean add_setting(GHashTable **devices, const char *setting, GError **error)
{
    g_auto(GStrv) key_value = g_strsplit(setting, "=", 2);
    guint64 index;
    const char *name = NULL;
    int kind = key_value[0] != NULL ? parse_key(key_value[0], &index, &name) : -1;
    GVariant *bucket;

    if (kind < 0 || key_value[1] == NULL) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    _("“%s” is not KEY=LIMIT with a KEY of disk.N.bandwidth, disk.N.ops, "
                      "nic.N.rx-bandwidth, nic.N.rx-ops, nic.N.tx-bandwidth or nic.N.tx-ops"),
                    setting);
        return FALSE;
    }
    bucket = mctl_parse_rate_limit(key_value[0], key_value[1], error);
    if (!bucket)
        return FALSE;
    GVariantDict *device = g_hash_table_lookup(devices[kind], GUINT_TO_POINTER(index));
    if (!device) {
        device = g_variant_dict_new(NULL);
        g_hash_table_insert(devices[kind], GUINT_TO_POINTER(index), device);
    }
    g_variant_dict_insert_value(device, name, bucket);
    return TRUE;
}

static GVariant *devices_to_variant(GHashTable *devices)
{
    GVariantBuilder b;
    GHashTableIter iter;
    gpointer index, device;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a{ua{sv}}"));
    g_hash_table_iter_init(&iter, devices);
    while (g_hash_table_iter_next(&iter, &index, &device))
        g_variant_builder_add(&b, "{u@a{sv}}", GPOINTER_TO_UINT(index), g_variant_dict_end(device));
    return g_variant_builder_end(&b);
}

static GHashTable *devices_new(void)
{
    return g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)g_variant_dict_unref);
}

int mctl_cmd_set(Mctl *ctl, int argc, char **argv)
{
    g_autoptr(GHashTable) disks = devices_new();
    g_autoptr(GHashTable) nics = devices_new();
    GHashTable *devices[G_N_ELEMENTS(kinds)] = {disks, nics};
    g_auto(GVariantDict) resources = G_VARIANT_DICT_INIT(NULL);
    g_autoptr(GError) error = NULL;

    if (!mctl_parse(
            ctl, NULL, _("NAME KEY=VALUE…"),
            _("Change a VM's resources, live if it runs; its definition keeps them.\n"
              "Keys: disk.N.bandwidth (bytes) and disk.N.ops (requests); nic.N.rx-bandwidth,\n"
              "nic.N.rx-ops (what the guest receives), nic.N.tx-bandwidth and nic.N.tx-ops\n"
              "(what it sends; frames and their bytes); N from 0.\n"
              "Values: none, a RATE per second (10M, 200), or SIZE/MILLISECONDS\n"
              "(100k/10: 100 kB every 10 ms); k, M and G are decimal."),
            &argc, &argv))
        return MCTL_EXIT_USAGE;
    if (argc < 2)
        return mctl_usage_error(_("Missing arguments; usage: %s"), "set NAME KEY=VALUE…");
    for (int i = 1; i < argc; i++)
        if (!add_setting(devices, argv[i], &error))
            return mctl_usage_error("%s", error->message);
    for (guint k = 0; k < G_N_ELEMENTS(kinds); k++)
        if (g_hash_table_size(devices[k]) > 0)
            g_variant_dict_insert_value(&resources, kinds[k].dbus, devices_to_variant(devices[k]));
    return mctl_vm_call(ctl, argv[0], "SetResources",
                        g_variant_new("(@a{sv})", g_variant_dict_end(&resources)), NULL,
                        SET_TIMEOUT_MS, NULL);
}
