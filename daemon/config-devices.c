/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config-devices.h"

#include <limits.h>
#include <net/if.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "caller-files.h"
#include "errors.h"
#include "fd-closer.h"

gboolean mvmd_config_invalid(GError **error, const char *key, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "config key '%s': %s", key, msg);
    return FALSE;
}

static gboolean mode_allowed(mode_t mode, const char *kinds)
{
    return (S_ISREG(mode) && strpbrk(kinds, "rw")) || (S_ISBLK(mode) && strchr(kinds, 'b')) ||
           (S_ISCHR(mode) && strchr(kinds, 'c')) || (S_ISDIR(mode) && strchr(kinds, 'd'));
}

int mvmd_config_take_fd(GVariant *value, GUnixFDList *fd_list, const char *key, const char *kinds,
                        GError **error)
{
    struct statx stx;
    int fd = mvmd_fd_list_dup(fd_list, value, error);

    if (fd < 0) {
        g_prefix_error(error, "config key '%s': ", key);
        return -1;
    }
    /* On the main loop: a plain fstat() of a file on FUSE waits for the caller's server. */
    if (!mvmd_caller_fd_statx(fd, FALSE, &stx, error)) {
        mvmd_close_later(fd);
        g_prefix_error(error, "config key '%s': ", key);
        return -1;
    }
    /* A disk image the guest writes: its writes must land in plain storage (caller-files.h). */
    if (S_ISREG(stx.stx_mode) && strchr(kinds, 'w') &&
        !mvmd_caller_file_system_check(&stx, TRUE, error)) {
        mvmd_close_later(fd);
        g_prefix_error(error, "config key '%s': ", key);
        return -1;
    }
    if (!mode_allowed(stx.stx_mode, kinds)) {
        mvmd_close_later(fd);
        mvmd_config_invalid(error, key, "the descriptor is not a %s",
                            g_str_equal(kinds, "d")   ? "directory"
                            : g_str_equal(kinds, "c") ? "character device"
                                                      : "regular file or block device");
        return -1;
    }
    return fd;
}

/*
 * When the daemon has no room for a message's descriptors the kernel drops them (recvmsg's
 * MSG_CTRUNC) and GDBus hands the message on with fewer than its header announced: say why,
 * rather than "no such file descriptor" as if the caller had sent none.
 */
gboolean mvmd_check_fds_arrived(GDBusMethodInvocation *invocation, GError **error)
{
    GDBusMessage *message = g_dbus_method_invocation_get_message(invocation);
    GUnixFDList *fd_list = mvmd_invocation_fds(invocation);
    guint32 sent = g_dbus_message_get_num_unix_fds(message);
    guint32 got = fd_list ? (guint32)g_unix_fd_list_get_length(fd_list) : 0;

    if (got >= sent)
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_NO_RESOURCES,
                "%u of the %u file descriptors sent with the call did not arrive: microvmd has "
                "no room for more file descriptors",
                sent - got, sent);
    return FALSE;
}

gboolean mvmd_parse_dir_argument(const char *key, const char *dir, GVariant *fdv,
                                 GUnixFDList *fd_list, char **dir_out, int *fd_out, GError **error)
{
    if (*dir && fdv) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "%s: give either a path or the option 'dir-fd', not both", key);
        return FALSE;
    }
    if (fdv) {
        *fd_out = mvmd_config_take_fd(fdv, fd_list, "dir-fd", "d", error);
        return *fd_out >= 0;
    }
    if (!g_path_is_absolute(dir) || strlen(dir) >= PATH_MAX) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "%s: '%s' is not an absolute path (or give the options 'state-fd' and "
                    "'memory-fd', or 'dir-fd')",
                    key, dir);
        return FALSE;
    }
    *dir_out = g_strdup(dir);
    return TRUE;
}

/* ---- owned device records -------------------------------------------------------------- */

static void disk_free(MvmdDisk *disk)
{
    mvmd_close_later(disk->fd);
    g_free(disk->path);
    g_free(disk);
}

static void nic_free(MvmdNic *nic)
{
    mvmd_close_later(nic->fd);
    g_free(nic->tap);
    g_free(nic);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdDisk, disk_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdNic, nic_free)

void mvmd_devices_init(MvmdDevices *devices)
{
    memset(devices, 0, sizeof(*devices));
    devices->disks = g_ptr_array_new_with_free_func((GDestroyNotify)disk_free);
    devices->nics = g_ptr_array_new_with_free_func((GDestroyNotify)nic_free);
}

void mvmd_devices_clear(MvmdDevices *devices)
{
    g_clear_pointer(&devices->disks, g_ptr_array_unref);
    g_clear_pointer(&devices->nics, g_ptr_array_unref);
    g_clear_pointer(&devices->vsock_uds_path, g_free);
}

/* ---- parsing --------------------------------------------------------------------------- */

gboolean mvmd_config_check_keys(GVariant *dict, const MvmdKeySpec *allowed, gsize n,
                                const char *where, GError **error)
{
    GVariantIter iter;
    const char *key;
    GVariant *value;

    g_variant_iter_init(&iter, dict);
    while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
        g_autoptr(GVariant) owned = value;
        g_autofree char *name = where ? g_strdup_printf("%s.%s", where, key) : NULL;
        gsize i;

        for (i = 0; i < n && !g_str_equal(allowed[i].key, key); i++)
            ;
        if (i < n && g_variant_is_of_type(value, G_VARIANT_TYPE(allowed[i].type)))
            continue;
        if (!where && i == n)
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "option '%s': unknown",
                        key);
        else if (!where)
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                        "option '%s': must be of type %s, not %s", key, allowed[i].type,
                        g_variant_get_type_string(value));
        else if (i == n)
            mvmd_config_invalid(error, name, "unknown key");
        else
            mvmd_config_invalid(error, name, "must be of type %s, not %s", allowed[i].type,
                                g_variant_get_type_string(value));
        return FALSE;
    }
    return TRUE;
}

static gboolean check_path(const char *key, const char *path, gsize max, GError **error)
{
    if (!g_path_is_absolute(path))
        return mvmd_config_invalid(error, key, "'%s' is not an absolute path", path);
    if (strlen(path) >= max)
        return mvmd_config_invalid(error, key, "path longer than %" G_GSIZE_FORMAT " bytes",
                                   max - 1);
    return TRUE;
}

/* Exactly one of "path"-like @name_key (s) and "fd" (h) in @dict. */
static gboolean path_or_fd(GVariant *dict, const char *where, const char *name_key,
                           const char *kinds, GUnixFDList *fd_list, char **name, int *fd,
                           GError **error)
{
    g_autoptr(GVariant) fdv = g_variant_lookup_value(dict, "fd", G_VARIANT_TYPE_HANDLE);
    g_autofree char *fd_key = g_strdup_printf("%s.fd", where);
    g_autofree char *name_full = g_strdup_printf("%s.%s", where, name_key);
    const char *s = NULL;

    g_variant_lookup(dict, name_key, "&s", &s);
    if (!s && !fdv)
        return mvmd_config_invalid(error, name_full, "required (or '%s')", fd_key);
    if (s && fdv)
        return mvmd_config_invalid(error, fd_key, "give either '%s' or 'fd', not both", name_key);
    if (fdv) {
        *fd = mvmd_config_take_fd(fdv, fd_list, fd_key, kinds, error);
        return *fd >= 0;
    }
    *name = g_strdup(s);
    return TRUE;
}

/* A required key of @dict in 1 .. @max. */
static gboolean lookup_bounded(GVariant *dict, const char *where, const char *key, guint64 max,
                               guint64 *value, GError **error)
{
    g_autofree char *name = g_strdup_printf("%s.%s", where, key);

    if (!g_variant_lookup(dict, key, "t", value))
        return mvmd_config_invalid(error, name, "required");
    if (*value == 0 || *value > max)
        return mvmd_config_invalid(
            error, name, "%" G_GUINT64_FORMAT " is not in 1 to %" G_GUINT64_FORMAT, *value, max);
    return TRUE;
}

/*
 * A token bucket (a{sv}: a disk's `bandwidth` or `ops`, a NIC's `rx-…` or `tx-…`): `size` and
 * `refill-time-ms` (t, required), and `one-time-burst` (t), as MvmTokenBucketConfig.
 */
static gboolean parse_token_bucket(GVariant *dict, const char *where, MvmTokenBucketConfig *bucket,
                                   GError **error)
{
    static const MvmdKeySpec keys[] = {
        {"size", "t"}, {"refill-time-ms", "t"}, {"one-time-burst", "t"}};

    *bucket = (MvmTokenBucketConfig){0};
    if (!mvmd_config_check_keys(dict, keys, G_N_ELEMENTS(keys), where, error) ||
        !lookup_bounded(dict, where, "size", MVM_TOKEN_BUCKET_MAX, &bucket->size, error) ||
        !lookup_bounded(dict, where, "refill-time-ms", MVM_TOKEN_BUCKET_REFILL_MAX_MS,
                        &bucket->refill_time_ms, error))
        return FALSE;
    if (g_variant_lookup(dict, "one-time-burst", "t", &bucket->one_time_burst) &&
        bucket->one_time_burst > MVM_TOKEN_BUCKET_MAX) {
        g_autofree char *name = g_strdup_printf("%s.one-time-burst", where);
        return mvmd_config_invalid(error, name, "%" G_GUINT64_FORMAT " is more than %llu",
                                   bucket->one_time_burst, MVM_TOKEN_BUCKET_MAX);
    }
    return TRUE;
}

gboolean mvmd_parse_rate_limit_update(GVariant *dict, const char *where, const char *prefix,
                                      MvmRateLimit *limit, GError **error)
{
    MvmRateLimit updated = *limit;
    MvmTokenBucketConfig *buckets[] = {&updated.bandwidth, &updated.ops};
    const char *names[] = {"bandwidth", "ops"};

    for (guint i = 0; i < G_N_ELEMENTS(buckets); i++) {
        g_autofree char *key = g_strconcat(prefix, names[i], NULL);
        g_autoptr(GVariant) value = g_variant_lookup_value(dict, key, G_VARIANT_TYPE_VARDICT);
        g_autofree char *name = g_strdup_printf("%s.%s", where, key);

        if (!value)
            continue;
        *buckets[i] = (MvmTokenBucketConfig){0};
        if (g_variant_n_children(value) > 0 && !parse_token_bucket(value, name, buckets[i], error))
            return FALSE;
    }
    *limit = updated;
    return TRUE;
}

static GVariant *token_bucket_to_variant(const MvmTokenBucketConfig *bucket)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "size", g_variant_new_uint64(bucket->size));
    g_variant_builder_add(&b, "{sv}", "refill-time-ms",
                          g_variant_new_uint64(bucket->refill_time_ms));
    if (bucket->one_time_burst)
        g_variant_builder_add(&b, "{sv}", "one-time-burst",
                              g_variant_new_uint64(bucket->one_time_burst));
    return g_variant_builder_end(&b);
}

void mvmd_rate_limit_add_to(GVariantBuilder *b, const char *prefix, const MvmRateLimit *limit)
{
    g_autofree char *bandwidth = g_strconcat(prefix, "bandwidth", NULL);
    g_autofree char *ops = g_strconcat(prefix, "ops", NULL);

    if (limit->bandwidth.size)
        g_variant_builder_add(b, "{sv}", bandwidth, token_bucket_to_variant(&limit->bandwidth));
    if (limit->ops.size)
        g_variant_builder_add(b, "{sv}", ops, token_bucket_to_variant(&limit->ops));
}

static gboolean parse_disk(MvmdDevices *devices, GVariant *dict, const char *where,
                           GUnixFDList *fd_list, GError **error)
{
    static const MvmdKeySpec keys[] = {
        {"path", "s"}, {"fd", "h"}, {"read-only", "b"}, {"bandwidth", "a{sv}"}, {"ops", "a{sv}"}};
    g_autoptr(MvmdDisk) disk = g_new0(MvmdDisk, 1);
    g_autofree char *path_key = g_strdup_printf("%s.path", where);

    disk->fd = -1;
    if (!mvmd_config_check_keys(dict, keys, G_N_ELEMENTS(keys), where, error) ||
        !path_or_fd(dict, where, "path", "wb", fd_list, &disk->path, &disk->fd, error))
        return FALSE;
    if (disk->path && !check_path(path_key, disk->path, PATH_MAX, error))
        return FALSE;
    g_variant_lookup(dict, "read-only", "b", &disk->read_only);
    if (!mvmd_parse_rate_limit_update(dict, where, "", &disk->rate_limit, error))
        return FALSE;
    g_ptr_array_add(devices->disks, g_steal_pointer(&disk));
    return TRUE;
}

gboolean mvmd_devices_parse_disks(MvmdDevices *devices, GVariant *value, GUnixFDList *fd_list,
                                  GError **error)
{
    gsize n = g_variant_n_children(value);

    if (n > MVMD_DISKS_MAX)
        return mvmd_config_invalid(error, "disks", "%" G_GSIZE_FORMAT " disks, at most %d", n,
                                   MVMD_DISKS_MAX);
    g_ptr_array_set_size(devices->disks, 0);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) dict = g_variant_get_child_value(value, i);
        g_autofree char *where = g_strdup_printf("disks[%" G_GSIZE_FORMAT "]", i);

        if (!parse_disk(devices, dict, where, fd_list, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean valid_ifname(const char *name)
{
    if (!*name || strlen(name) >= IFNAMSIZ)
        return FALSE;
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
            return FALSE;
    }
    return TRUE;
}

/* "52:54:00:12:34:56": six hex pairs; a unicast address (multicast bit clear). */
static gboolean parse_mac(const char *key, const char *text, guint8 mac[6], GError **error)
{
    for (int i = 0; i < 6; i++) {
        const char *p = text + i * 3;
        int hi, lo;

        if (strlen(text) != 17 || (i < 5 && p[2] != ':'))
            return mvmd_config_invalid(error, key, "'%s' is not of the form xx:xx:xx:xx:xx:xx",
                                       text);
        hi = g_ascii_xdigit_value(p[0]);
        lo = g_ascii_xdigit_value(p[1]);
        if (hi < 0 || lo < 0)
            return mvmd_config_invalid(error, key, "'%s' is not of the form xx:xx:xx:xx:xx:xx",
                                       text);
        mac[i] = (guint8)(hi << 4 | lo);
    }
    if (mac[0] & 1)
        return mvmd_config_invalid(error, key, "'%s' is a multicast address", text);
    return TRUE;
}

gboolean mvmd_parse_nic_rate_limits(GVariant *dict, const char *where, MvmRateLimit *rx,
                                    MvmRateLimit *tx, GError **error)
{
    MvmRateLimit new_rx = *rx;

    if (!mvmd_parse_rate_limit_update(dict, where, "rx-", &new_rx, error) ||
        !mvmd_parse_rate_limit_update(dict, where, "tx-", tx, error))
        return FALSE;
    *rx = new_rx;
    return TRUE;
}

static gboolean parse_nic(MvmdDevices *devices, GVariant *dict, const char *where,
                          GUnixFDList *fd_list, GError **error)
{
    static const MvmdKeySpec keys[] = {{"tap", "s"},        {"fd", "h"},
                                       {"mac", "s"},        {"rx-bandwidth", "a{sv}"},
                                       {"rx-ops", "a{sv}"}, {"tx-bandwidth", "a{sv}"},
                                       {"tx-ops", "a{sv}"}};
    g_autoptr(MvmdNic) nic = g_new0(MvmdNic, 1);
    g_autofree char *tap_key = g_strdup_printf("%s.tap", where);
    g_autofree char *mac_key = g_strdup_printf("%s.mac", where);
    const char *mac;

    nic->fd = -1;
    if (!mvmd_config_check_keys(dict, keys, G_N_ELEMENTS(keys), where, error) ||
        !path_or_fd(dict, where, "tap", "c", fd_list, &nic->tap, &nic->fd, error))
        return FALSE;
    if (nic->tap && !valid_ifname(nic->tap))
        return mvmd_config_invalid(error, tap_key,
                                   "'%s' is not an interface name (1-%d of A-Z a-z 0-9 . _ -)",
                                   nic->tap, IFNAMSIZ - 1);
    if (g_variant_lookup(dict, "mac", "&s", &mac)) {
        if (!parse_mac(mac_key, mac, nic->mac, error))
            return FALSE;
        nic->has_mac = TRUE;
    }
    if (!mvmd_parse_nic_rate_limits(dict, where, &nic->rx_rate_limit, &nic->tx_rate_limit, error))
        return FALSE;
    g_ptr_array_add(devices->nics, g_steal_pointer(&nic));
    return TRUE;
}

gboolean mvmd_devices_parse_network(MvmdDevices *devices, GVariant *value, GUnixFDList *fd_list,
                                    GError **error)
{
    gsize n = g_variant_n_children(value);

    if (n > MVMD_NICS_MAX)
        return mvmd_config_invalid(error, "network", "%" G_GSIZE_FORMAT " interfaces, at most %d",
                                   n, MVMD_NICS_MAX);
    g_ptr_array_set_size(devices->nics, 0);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) dict = g_variant_get_child_value(value, i);
        g_autofree char *where = g_strdup_printf("network[%" G_GSIZE_FORMAT "]", i);

        if (!parse_nic(devices, dict, where, fd_list, error))
            return FALSE;
    }
    return TRUE;
}

gboolean mvmd_devices_parse_vsock(MvmdDevices *devices, GVariant *value, gboolean cid_optional,
                                  GError **error)
{
    static const MvmdKeySpec keys[] = {{"cid", "u"}, {"uds-path", "s"}};
    struct sockaddr_un sun;
    const char *path;
    guint32 cid = 0;
    gboolean has_cid;

    if (!mvmd_config_check_keys(value, keys, G_N_ELEMENTS(keys), "vsock", error))
        return FALSE;
    has_cid = g_variant_lookup(value, "cid", "u", &cid);
    if (!has_cid && !cid_optional)
        return mvmd_config_invalid(error, "vsock.cid", "required");
    if (has_cid && (cid < MVM_VSOCK_CID_MIN || cid > MVM_VSOCK_CID_MAX))
        return mvmd_config_invalid(error, "vsock.cid", "%u out of range %u..%u", cid,
                                   MVM_VSOCK_CID_MIN, MVM_VSOCK_CID_MAX);
    if (!g_variant_lookup(value, "uds-path", "&s", &path))
        return mvmd_config_invalid(error, "vsock.uds-path", "required");
    /* The host side listens on it, and connects to <path>_<port>: leave room for that. */
    if (!check_path("vsock.uds-path", path, sizeof(sun.sun_path) - 11, error))
        return FALSE;
    devices->vsock_cid = cid;
    g_free(devices->vsock_uds_path);
    devices->vsock_uds_path = g_strdup(path);
    return TRUE;
}

/* A restored guest read its MACs from the snapshot's devices: only a clone gets others. */
static gboolean check_no_macs(const MvmdDevices *devices, GError **error)
{
    for (guint i = 0; i < devices->nics->len; i++) {
        g_autofree char *key = NULL;

        if (!((const MvmdNic *)devices->nics->pdata[i])->has_mac)
            continue;
        key = g_strdup_printf("network[%u].mac", i);
        return mvmd_config_invalid(error, key,
                                   "the restored guest knows the snapshot's MAC; pass 'clone': "
                                   "<true> to give it a new one");
    }
    return TRUE;
}

gboolean mvmd_devices_parse_backends(MvmdDevices *devices, GVariant *options, GUnixFDList *fd_list,
                                     gboolean clone, gboolean *given, GError **error)
{
    g_autoptr(GVariant) disks = g_variant_lookup_value(options, "disks", G_VARIANT_TYPE("aa{sv}"));
    g_autoptr(GVariant) network =
        g_variant_lookup_value(options, "network", G_VARIANT_TYPE("aa{sv}"));
    g_autoptr(GVariant) vsock = g_variant_lookup_value(options, "vsock", G_VARIANT_TYPE_VARDICT);

    *given = disks || network || vsock;
    if ((disks && !mvmd_devices_parse_disks(devices, disks, fd_list, error)) ||
        (network && !mvmd_devices_parse_network(devices, network, fd_list, error)) ||
        (vsock && !mvmd_devices_parse_vsock(devices, vsock, clone, error)))
        return FALSE;
    if (!clone && !check_no_macs(devices, error))
        return FALSE;
    return mvmd_devices_check(devices, error);
}

gboolean mvmd_devices_check(const MvmdDevices *devices, GError **error)
{
    gboolean vsock = devices->vsock_cid != 0 || devices->vsock_uds_path != NULL;
    guint n = devices->disks->len + devices->nics->len + vsock + devices->rng;

    if (n > MVM_MAX_VIRTIO_DEVICES)
        return mvmd_config_invalid(error, "disks",
                                   "%u virtio devices in all (disks, network, vsock, rng), at "
                                   "most %d",
                                   n, MVM_MAX_VIRTIO_DEVICES);
    return TRUE;
}

gboolean mvmd_devices_have_fds(const MvmdDevices *devices)
{
    for (guint i = 0; i < devices->disks->len; i++) {
        if (((MvmdDisk *)devices->disks->pdata[i])->fd >= 0)
            return TRUE;
    }
    for (guint i = 0; i < devices->nics->len; i++) {
        if (((MvmdNic *)devices->nics->pdata[i])->fd >= 0)
            return TRUE;
    }
    return FALSE;
}

/* ---- out ------------------------------------------------------------------------------- */

static char *format_mac(const guint8 mac[6])
{
    return g_strdup_printf("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                           mac[5]);
}

GVariant *mvmd_config_fd_handle(GArray *fds, int fd)
{
    g_array_append_val(fds, fd);
    return g_variant_new_handle((gint32)fds->len - 1);
}

/* A device's caller descriptor: a handle into @fds when they are carried, else `fd-passed`. */
static void add_fd(GVariantBuilder *b, GArray *fds, int fd)
{
    if (fds)
        g_variant_builder_add(b, "{sv}", "fd", mvmd_config_fd_handle(fds, fd));
    else
        g_variant_builder_add(b, "{sv}", "fd-passed", g_variant_new_boolean(TRUE));
}

static GVariant *disks_to_variant(const MvmdDevices *devices, GArray *fds)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; i < devices->disks->len; i++) {
        const MvmdDisk *disk = devices->disks->pdata[i];

        g_variant_builder_open(&b, G_VARIANT_TYPE_VARDICT);
        if (disk->path)
            g_variant_builder_add(&b, "{sv}", "path", g_variant_new_string(disk->path));
        else
            add_fd(&b, fds, disk->fd);
        g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(disk->read_only));
        mvmd_rate_limit_add_to(&b, "", &disk->rate_limit);
        g_variant_builder_close(&b);
    }
    return g_variant_builder_end(&b);
}

static GVariant *nics_to_variant(const MvmdDevices *devices, gboolean stored, GArray *fds)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; i < devices->nics->len; i++) {
        const MvmdNic *nic = devices->nics->pdata[i];

        g_variant_builder_open(&b, G_VARIANT_TYPE_VARDICT);
        if (nic->tap)
            g_variant_builder_add(&b, "{sv}", "tap", g_variant_new_string(nic->tap));
        else
            add_fd(&b, fds, nic->fd);
        if (nic->has_mac && !(stored && nic->mac_chosen))
            g_variant_builder_add(&b, "{sv}", "mac",
                                  g_variant_new_take_string(format_mac(nic->mac)));
        mvmd_rate_limit_add_to(&b, "rx-", &nic->rx_rate_limit);
        mvmd_rate_limit_add_to(&b, "tx-", &nic->tx_rate_limit);
        g_variant_builder_close(&b);
    }
    return g_variant_builder_end(&b);
}

void mvmd_devices_to_variant(const MvmdDevices *devices, gboolean stored, GArray *fds,
                             GVariantBuilder *b)
{
    if (devices->disks->len > 0)
        g_variant_builder_add(b, "{sv}", "disks", disks_to_variant(devices, fds));
    if (devices->nics->len > 0)
        g_variant_builder_add(b, "{sv}", "network", nics_to_variant(devices, stored, fds));
    /* A clone's CID is 0 until its restore picks one: the socket says there is a device. */
    if (devices->vsock_uds_path != NULL) {
        GVariantBuilder v;

        g_variant_builder_init(&v, G_VARIANT_TYPE_VARDICT);
        if (devices->vsock_cid != 0)
            g_variant_builder_add(&v, "{sv}", "cid", g_variant_new_uint32(devices->vsock_cid));
        g_variant_builder_add(&v, "{sv}", "uds-path",
                              g_variant_new_string(devices->vsock_uds_path));
        g_variant_builder_add(b, "{sv}", "vsock", g_variant_builder_end(&v));
    }
    g_variant_builder_add(b, "{sv}", "rng", g_variant_new_boolean(devices->rng));
}

/* The lib's config owns the arrays; their free functions free the records, not the fds. */
static void mvm_disk_free(MvmDiskConfig *disk)
{
    g_free(disk->path);
    g_free(disk);
}

static void mvm_nic_free(MvmNetConfig *nic)
{
    g_free(nic->tap_name);
    g_free(nic);
}

void mvmd_devices_to_mvm(const MvmdDevices *devices, MvmVmConfig *mvm)
{
    for (guint i = 0; i < devices->disks->len; i++) {
        const MvmdDisk *disk = devices->disks->pdata[i];
        MvmDiskConfig *d = g_new0(MvmDiskConfig, 1);

        if (!mvm->disks)
            mvm->disks = g_ptr_array_new_with_free_func((GDestroyNotify)mvm_disk_free);
        d->path = g_strdup(disk->path);
        d->fd = disk->fd;
        d->read_only = disk->read_only;
        d->rate_limit = disk->rate_limit;
        g_ptr_array_add(mvm->disks, d);
    }
    for (guint i = 0; i < devices->nics->len; i++) {
        const MvmdNic *nic = devices->nics->pdata[i];
        MvmNetConfig *n = g_new0(MvmNetConfig, 1);

        if (!mvm->nics)
            mvm->nics = g_ptr_array_new_with_free_func((GDestroyNotify)mvm_nic_free);
        n->tap_name = g_strdup(nic->tap);
        n->tap_fd = nic->fd;
        memcpy(n->mac, nic->mac, sizeof(n->mac));
        n->rx_rate_limit = nic->rx_rate_limit;
        n->tx_rate_limit = nic->tx_rate_limit;
        g_ptr_array_add(mvm->nics, n);
    }
    mvm->vsock_cid = devices->vsock_cid;
    mvm->vsock_uds_path = g_strdup(devices->vsock_uds_path);
    mvm->rng = devices->rng;
}

/* The snapshot's own back ends (RestoreVM by root): paths and tap names, never fds. */
static void backends_from_mvm(MvmdDevices *devices, const MvmVmConfig *mvm)
{
    g_ptr_array_set_size(devices->disks, 0);
    g_ptr_array_set_size(devices->nics, 0);
    for (guint i = 0; mvm->disks && i < mvm->disks->len; i++) {
        const MvmDiskConfig *d = mvm->disks->pdata[i];
        MvmdDisk *disk = g_new0(MvmdDisk, 1);

        disk->path = g_strdup(d->path);
        disk->fd = -1;
        disk->read_only = d->read_only;
        g_ptr_array_add(devices->disks, disk);
    }
    for (guint i = 0; mvm->nics && i < mvm->nics->len; i++) {
        const MvmNetConfig *n = mvm->nics->pdata[i];
        MvmdNic *nic = g_new0(MvmdNic, 1);

        nic->tap = g_strdup(n->tap_name);
        nic->fd = -1;
        g_ptr_array_add(devices->nics, nic);
    }
    g_free(devices->vsock_uds_path);
    devices->vsock_uds_path = g_strdup(mvm->vsock_uds_path);
    devices->from_snapshot = FALSE;
}

void mvmd_devices_update_from_mvm(MvmdDevices *devices, const MvmVmConfig *mvm)
{
    if (devices->from_snapshot)
        backends_from_mvm(devices, mvm);
    /* Built from these records, or a restore that refused a different count: one to one. */
    for (guint i = 0; mvm->nics && i < MIN(mvm->nics->len, devices->nics->len); i++) {
        MvmdNic *nic = devices->nics->pdata[i];

        nic->mac_chosen = nic->mac_chosen || !nic->has_mac;
        memcpy(nic->mac, ((const MvmNetConfig *)mvm->nics->pdata[i])->mac, sizeof(nic->mac));
        nic->has_mac = TRUE;
    }
    devices->vsock_cid = mvm->vsock_cid;
    devices->rng = mvm->rng;
}
