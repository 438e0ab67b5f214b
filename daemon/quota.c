/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "quota.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "config-file.h"
#include "errors.h"

#define DEFAULT_VMS   64
#define DEFAULT_VCPUS 256

#define QUOTA_GROUP        "Quota"
#define QUOTA_GROUP_PREFIX "Quota:"

typedef enum {
    RESOURCE_VMS,
    RESOURCE_MEMORY_MIB,
    RESOURCE_VCPUS,
    N_RESOURCES,
} Resource;

/* The config keys, which the messages name too. */
static const char *const resource_keys[N_RESOURCES] = {"VMs", "MemoryMiB", "VCPUs"};

/* One user's limits (or the defaults) and the group they came from, for the messages. */
typedef struct {
    guint64 max[N_RESOURCES];
    char *group; /* NULL: the built-in default */
} Limits;

typedef struct {
    guint64 held[N_RESOURCES];
} Usage;

struct _MvmdQuota {
    gint ref_count; /* the daemon's, and one per charge: a worker may outlive the daemon's */
    GMutex lock;
    char *path;           /* the file the limits came from; NULL: none read */
    Limits defaults;      /* [Quota] */
    GHashTable *per_user; /* uid → Limits: [Quota:NAME] */
    GHashTable *usage;    /* uid → Usage, while the uid holds anything */
};

static void limits_free(Limits *limits)
{
    g_free(limits->group);
    g_free(limits);
}

static guint64 host_memory_mib(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);

    if (pages <= 0 || page_size <= 0)
        return MVMD_QUOTA_UNLIMITED;
    return (guint64)pages * (guint64)page_size / (1024 * 1024);
}

static void set_builtin_defaults(Limits *defaults)
{
    defaults->max[RESOURCE_VMS] = DEFAULT_VMS;
    defaults->max[RESOURCE_MEMORY_MIB] = host_memory_mib();
    defaults->max[RESOURCE_VCPUS] = DEFAULT_VCPUS;
    g_clear_pointer(&defaults->group, g_free);
}

MvmdQuota *mvmd_quota_new(void)
{
    MvmdQuota *quota = g_new0(MvmdQuota, 1);

    quota->ref_count = 1;
    g_mutex_init(&quota->lock);
    set_builtin_defaults(&quota->defaults);
    quota->per_user =
        g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify)limits_free);
    quota->usage = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
    return quota;
}

static MvmdQuota *quota_ref(MvmdQuota *quota)
{
    g_atomic_int_inc(&quota->ref_count);
    return quota;
}

void mvmd_quota_unref(MvmdQuota *quota)
{
    if (!quota || !g_atomic_int_dec_and_test(&quota->ref_count))
        return;
    g_hash_table_unref(quota->per_user);
    g_hash_table_unref(quota->usage);
    g_free(quota->defaults.group);
    g_free(quota->path);
    g_mutex_clear(&quota->lock);
    g_free(quota);
}

/* ---- reading the file ------------------------------------------------------------------ */

static gboolean config_error(GError **error, const char *path, const char *group, const char *key,
                             const char *what)
{
    g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE, "%s: [%s]%s%s: %s", path,
                group, key ? " " : "", key ? key : "", what);
    return FALSE;
}

static gboolean parse_limit(const char *text, guint64 *value)
{
    guint64 parsed;

    if (g_str_equal(text, "infinity")) {
        *value = MVMD_QUOTA_UNLIMITED;
        return TRUE;
    }
    if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64 - 1, &parsed, NULL))
        return FALSE;
    *value = parsed;
    return TRUE;
}

/* The keys of one Quota group over @limits; anything unknown or malformed is an error. */
static gboolean read_group(GKeyFile *file, const char *path, const char *group, Limits *limits,
                           GError **error)
{
    g_auto(GStrv) keys = g_key_file_get_keys(file, group, NULL, error);

    if (!keys)
        return FALSE;
    for (char **key = keys; *key; key++) {
        g_autofree char *text = g_key_file_get_value(file, group, *key, NULL);
        Resource r;

        for (r = 0; r < N_RESOURCES && !g_str_equal(*key, resource_keys[r]); r++)
            ;
        if (r == N_RESOURCES)
            return config_error(error, path, group, *key,
                                "unknown key (the keys are VMs, MemoryMiB and VCPUs)");
        if (!text || !parse_limit(g_strstrip(text), &limits->max[r]))
            return config_error(error, path, group, *key,
                                "not a count (a whole number, or infinity)");
    }
    g_free(limits->group);
    limits->group = g_strdup(group);
    return TRUE;
}

/* [Quota:NAME]: a user name, or a uid in decimal (which need not have a name). */
static gboolean resolve_user(const char *path, const char *group, uid_t *uid, GError **error)
{
    const char *who = group + strlen(QUOTA_GROUP_PREFIX);
    guint64 number;
    struct passwd *pw;

    if (g_ascii_string_to_unsigned(who, 10, 0, G_MAXUINT32 - 1, &number, NULL)) {
        *uid = (uid_t)number;
        return TRUE;
    }
    errno = 0;
    pw = *who ? getpwnam(who) : NULL;
    if (!pw)
        return config_error(error, path, group, NULL,
                            errno ? g_strerror(errno) : "no such user (give a user name or a uid)");
    *uid = pw->pw_uid;
    return TRUE;
}

/* Reads every Quota group of @file into @defaults and @per_user. */
static gboolean read_quota_groups(GKeyFile *file, const char *path, Limits *defaults,
                                  GHashTable *per_user, GError **error)
{
    g_auto(GStrv) groups = g_key_file_get_groups(file, NULL);

    if (g_key_file_has_group(file, QUOTA_GROUP) &&
        !read_group(file, path, QUOTA_GROUP, defaults, error))
        return FALSE;
    for (char **group = groups; *group; group++) {
        Limits *limits;
        uid_t uid;

        if (g_str_equal(*group, QUOTA_GROUP) ||
            g_str_equal(*group, MVMD_CONFIG_GROUP_CPU_TEMPLATES))
            continue;
        /* [quota] or [Quotas] would silently leave the defaults in force. */
        if (!g_str_has_prefix(*group, QUOTA_GROUP_PREFIX) &&
            g_ascii_strncasecmp(*group, QUOTA_GROUP, strlen(QUOTA_GROUP)) == 0)
            return config_error(error, path, *group, NULL,
                                "unknown group (the groups are [Quota] and [Quota:USER])");
        if (!g_str_has_prefix(*group, QUOTA_GROUP_PREFIX)) {
            g_warning("%s: [%s]: unknown group, ignored", path, *group);
            continue;
        }
        if (!resolve_user(path, *group, &uid, error))
            return FALSE;
        /* The keys a user's group leaves out are the defaults' (all of [Quota] is read first). */
        limits = g_new0(Limits, 1);
        memcpy(limits->max, defaults->max, sizeof(limits->max));
        g_hash_table_replace(per_user, GUINT_TO_POINTER(uid), limits);
        if (!read_group(file, path, *group, limits, error))
            return FALSE;
    }
    return TRUE;
}

gboolean mvmd_quota_load(MvmdQuota *quota, const char *path, gboolean must_exist, GError **error)
{
    g_autoptr(GKeyFile) file = mvmd_config_file_load(path, must_exist, error);
    g_autoptr(GHashTable) per_user =
        g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify)limits_free);
    Limits defaults = {0};

    if (!file)
        return FALSE;
    set_builtin_defaults(&defaults);
    if (!read_quota_groups(file, path, &defaults, per_user, error)) {
        g_free(defaults.group);
        return FALSE;
    }

    g_mutex_lock(&quota->lock);
    g_free(quota->defaults.group);
    quota->defaults = defaults;
    g_hash_table_unref(quota->per_user);
    quota->per_user = g_steal_pointer(&per_user);
    g_free(quota->path);
    quota->path = g_strdup(path);
    g_mutex_unlock(&quota->lock);
    return TRUE;
}

/* ---- the ledger ------------------------------------------------------------------------ */

/* Lock held. NULL: no limit at all (root without a group of its own). */
static const Limits *limits_of(MvmdQuota *quota, uid_t uid)
{
    const Limits *limits = g_hash_table_lookup(quota->per_user, GUINT_TO_POINTER(uid));

    if (limits)
        return limits;
    return uid == 0 ? NULL : &quota->defaults;
}

static guint64 saturating_add(guint64 a, guint64 b)
{
    return a > G_MAXUINT64 - b ? G_MAXUINT64 : a + b;
}

/*
 * Lock held. FALSE with QuotaExceeded when adding @more to what @uid holds passes a limit
 * (only growth is checked: a user over a lowered limit may still shrink).
 */
static gboolean check_room(MvmdQuota *quota, uid_t uid, const guint64 more[N_RESOURCES],
                           GError **error)
{
    const Limits *limits = limits_of(quota, uid);
    const Usage *usage = g_hash_table_lookup(quota->usage, GUINT_TO_POINTER(uid));
    const Usage nothing = {{0}};

    usage = usage ? usage : &nothing;
    for (Resource r = 0; limits && r < N_RESOURCES; r++) {
        guint64 wanted = saturating_add(usage->held[r], more[r]);

        if (more[r] == 0 || wanted <= limits->max[r])
            continue;
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_QUOTA_EXCEEDED,
                    "quota exceeded: uid %u would hold %" G_GUINT64_FORMAT
                    " %s of %" G_GUINT64_FORMAT " allowed (%s= in [%s] of %s)",
                    (guint)uid, wanted, resource_keys[r], limits->max[r], resource_keys[r],
                    limits->group ? limits->group : QUOTA_GROUP,
                    limits->group ? quota->path : "the built-in defaults");
        return FALSE;
    }
    return TRUE;
}

/* Lock held: what @uid holds gains @add and loses @sub; a uid holding nothing is forgotten. */
static void adjust(MvmdQuota *quota, uid_t uid, const guint64 add[N_RESOURCES],
                   const guint64 sub[N_RESOURCES])
{
    Usage *usage = g_hash_table_lookup(quota->usage, GUINT_TO_POINTER(uid));
    gboolean empty = TRUE;

    if (!usage) {
        usage = g_new0(Usage, 1);
        g_hash_table_insert(quota->usage, GUINT_TO_POINTER(uid), usage);
    }
    for (Resource r = 0; r < N_RESOURCES; r++) {
        guint64 held = saturating_add(usage->held[r], add[r]);

        g_warn_if_fail(held >= sub[r]);
        usage->held[r] = held - MIN(held, sub[r]);
        empty = empty && usage->held[r] == 0;
    }
    if (empty)
        g_hash_table_remove(quota->usage, GUINT_TO_POINTER(uid));
}

static gboolean charge_amounts(MvmdQuota *quota, uid_t uid, guint64 vms, guint64 memory_mib,
                               guint64 vcpus, gboolean force, MvmdQuotaCharge *charge,
                               GError **error)
{
    const guint64 amounts[N_RESOURCES] = {vms, memory_mib, vcpus};
    const guint64 none[N_RESOURCES] = {0};
    gboolean ok;

    g_return_val_if_fail(charge->quota == NULL, FALSE);
    g_mutex_lock(&quota->lock);
    ok = force || check_room(quota, uid, amounts, error);
    if (ok) {
        adjust(quota, uid, amounts, none);
        *charge = (MvmdQuotaCharge){quota_ref(quota), uid, vms, memory_mib, vcpus};
    }
    g_mutex_unlock(&quota->lock);
    return ok;
}

gboolean mvmd_quota_charge(MvmdQuota *quota, uid_t uid, guint64 memory_mib, guint64 vcpus,
                           gboolean force, MvmdQuotaCharge *charge, GError **error)
{
    return charge_amounts(quota, uid, 1, memory_mib, vcpus, force, charge, error);
}

gboolean mvmd_quota_charge_memory(MvmdQuota *quota, uid_t uid, guint64 memory_mib,
                                  MvmdQuotaCharge *charge, GError **error)
{
    return charge_amounts(quota, uid, 0, memory_mib, 0, FALSE, charge, error);
}

static gboolean fail_released(GError **error)
{
    g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_FAILED,
                        "the VM was deleted while it was being restored");
    return FALSE;
}

gboolean mvmd_quota_resize(MvmdQuotaCharge *charge, guint64 memory_mib, guint64 vcpus,
                           GError **error)
{
    MvmdQuota *quota = g_atomic_pointer_get(&charge->quota);
    gboolean ok = FALSE;

    /* Released: the VM was deleted meanwhile. Nothing may grow uncharged. */
    if (!quota)
        return fail_released(error);
    g_mutex_lock(&quota->lock);
    if (!charge->quota) {
        fail_released(error);
    } else {
        const guint64 old[N_RESOURCES] = {charge->vms, charge->memory_mib, charge->vcpus};
        const guint64 new[N_RESOURCES] = {charge->vms, memory_mib, vcpus};
        guint64 more[N_RESOURCES];

        for (Resource r = 0; r < N_RESOURCES; r++)
            more[r] = new[r] > old[r] ? new[r] - old[r] : 0;
        ok = check_room(quota, charge->uid, more, error);
        if (ok) {
            adjust(quota, charge->uid, new, old);
            charge->memory_mib = memory_mib;
            charge->vcpus = vcpus;
        }
    }
    g_mutex_unlock(&quota->lock);
    return ok;
}

void mvmd_quota_release(MvmdQuotaCharge *charge)
{
    MvmdQuota *quota = g_atomic_pointer_get(&charge->quota);
    gboolean released = FALSE;

    if (!quota)
        return;
    g_mutex_lock(&quota->lock);
    if (charge->quota) {
        const guint64 held[N_RESOURCES] = {charge->vms, charge->memory_mib, charge->vcpus};
        const guint64 none[N_RESOURCES] = {0};

        adjust(quota, charge->uid, none, held);
        g_atomic_pointer_set(&charge->quota, NULL);
        released = TRUE;
    }
    g_mutex_unlock(&quota->lock);
    if (released)
        mvmd_quota_unref(quota);
}
