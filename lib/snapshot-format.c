/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot `state` file (format in snapshot.h): writing the envelope, and
 * reading it back from untrusted bytes. Nothing here touches KVM, so the
 * fuzzer runs exactly the code restore runs.
 *
 * Reading goes from the outside in and stops at the first problem: magic,
 * version (before anything whose meaning a version could change), length,
 * digest, GVariant normal form (the one check that makes accessing a
 * serialized GVariant safe), payload type, then the values: the config, one
 * vCPU entry per configured vCPU, exact struct sizes, and bounds on counts.
 */
#include <stdarg.h>
#include <string.h>

#include "cpu-template.h"
#include "layout.h"
#include "snapshot.h"

#define MAX_DEVICES       64
#define MAX_CONFIG_STRING 4096
#define MAX_DISKS_OR_NICS 32

gboolean mvm_snapshot_invalid(GError **error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT, "invalid snapshot: %s", message);
    return FALSE;
}

#define invalid mvm_snapshot_invalid

void mvm_snapshot_limits_default(MvmSnapshotLimits *limits)
{
    limits->max_vcpus = MVM_MAX_VCPUS;
    limits->max_msrs = 1024;
    limits->max_xsave = 64 * 1024;
    limits->msr_indices = NULL;
    limits->n_msr_indices = 0;
}

void mvm_snapshot_state_free(MvmSnapshotState *state)
{
    if (state == NULL)
        return;
    mvm_vm_config_free(state->config);
    g_clear_pointer(&state->vcpus, g_ptr_array_unref);
    g_clear_pointer(&state->serial, g_variant_unref);
    g_clear_pointer(&state->i8042, g_variant_unref);
    g_clear_pointer(&state->devices, g_variant_unref);
    g_clear_pointer(&state->changed_pages, g_bytes_unref);
    g_free(state);
}

/* ---- envelope ---- */

static void digest(const guint8 *data, gsize len, guint8 out[MVM_SNAPSHOT_DIGEST_SIZE])
{
    g_autoptr(GChecksum) checksum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize out_len = MVM_SNAPSHOT_DIGEST_SIZE;

    g_checksum_update(checksum, data, (gssize)len);
    g_checksum_get_digest(checksum, out, &out_len);
}

GBytes *mvm_snapshot_encode(GVariant *payload, guint16 major, guint16 minor)
{
    g_autoptr(GVariant) boxed = g_variant_ref_sink(g_variant_new_variant(payload));
    g_autoptr(GVariant) normal = g_variant_get_normal_form(boxed);
    gsize n = g_variant_get_size(normal);
    gsize total = MVM_SNAPSHOT_HEADER_SIZE + n + MVM_SNAPSHOT_DIGEST_SIZE;
    guint8 *out = g_malloc0(total);
    guint16 major_le = GUINT16_TO_LE(major), minor_le = GUINT16_TO_LE(minor);
    guint64 n_le = GUINT64_TO_LE((guint64)n);

    memcpy(out, MVM_SNAPSHOT_MAGIC, MVM_SNAPSHOT_MAGIC_LEN);
    memcpy(out + 8, &major_le, 2);
    memcpy(out + 10, &minor_le, 2);
    memcpy(out + 16, &n_le, 8);
    g_variant_store(normal, out + MVM_SNAPSHOT_HEADER_SIZE);
    digest(out, MVM_SNAPSHOT_HEADER_SIZE + n, out + MVM_SNAPSHOT_HEADER_SIZE + n);
    return g_bytes_new_take(out, total);
}

static gboolean check_header(const guint8 *data, gsize len, guint16 *major, gsize *payload_len,
                             GError **error)
{
    guint16 minor;
    guint32 flags;
    guint64 n;

    if (len < MVM_SNAPSHOT_HEADER_SIZE + MVM_SNAPSHOT_DIGEST_SIZE)
        return invalid(error, "state file of %" G_GSIZE_FORMAT " bytes is too short", len);
    if (memcmp(data, MVM_SNAPSHOT_MAGIC, MVM_SNAPSHOT_MAGIC_LEN) != 0)
        return invalid(error, "the state file is not a microvmd snapshot (bad magic)");
    memcpy(major, data + 8, 2);
    memcpy(&minor, data + 10, 2);
    memcpy(&flags, data + 12, 4);
    memcpy(&n, data + 16, 8);
    *major = GUINT16_FROM_LE(*major);
    minor = GUINT16_FROM_LE(minor);
    /* Any minor: a newer one only adds keys, which this build ignores (snapshot.h). */
    if (*major < MVM_SNAPSHOT_MAJOR_TUPLE || *major > MVM_SNAPSHOT_MAJOR)
        return invalid(error, "format version %u.%u; this build reads major %u to %u", *major,
                       minor, MVM_SNAPSHOT_MAJOR_TUPLE, MVM_SNAPSHOT_MAJOR);
    if (GUINT32_FROM_LE(flags) != 0)
        return invalid(error, "unknown header flags 0x%x", GUINT32_FROM_LE(flags));
    n = GUINT64_FROM_LE(n);
    /* Compared this way round, no sum can overflow. */
    if (n != len - MVM_SNAPSHOT_HEADER_SIZE - MVM_SNAPSHOT_DIGEST_SIZE)
        return invalid(error,
                       "the header announces %" G_GUINT64_FORMAT " bytes of state, the file "
                       "holds %" G_GSIZE_FORMAT " (truncated or padded)",
                       n, len - MVM_SNAPSHOT_HEADER_SIZE - MVM_SNAPSHOT_DIGEST_SIZE);
    *payload_len = (gsize)n;
    return TRUE;
}

/*
 * The payload's keys (snapshot.h) in the order of the format-1 tuple's members, and the type
 * each must have; NULL: any, the device's restore checks it. All are required today; a key a
 * later minor adds is optional to the readers of its day.
 */
static const struct {
    const char *key;
    const char *type;
} payload_keys[] = {
    {"config", "a{sv}"},  {"vcpus", "a" MVM_SNAPSHOT_VCPU_TYPE},
    {"clock", "(tu)"},    {"pic-master", "ay"},
    {"pic-slave", "ay"},  {"ioapic", "ay"},
    {"pit", "ay"},        {"serial", NULL},
    {"i8042", NULL},      {"devices", "a{sv}"},
    {"memory-size", "t"},
};

/* A format-1 tuple, type-checked already, as the dictionary of format 2: one parser reads both. */
static GVariant *payload_from_tuple(GVariant *tuple)
{
    GVariantBuilder b;

    G_STATIC_ASSERT(G_N_ELEMENTS(payload_keys) == 11);
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (gsize i = 0; i < G_N_ELEMENTS(payload_keys); i++) {
        g_autoptr(GVariant) child = g_variant_get_child_value(tuple, i);
        /* The tuple boxed the two legacy devices' states in a `v`; a dictionary value is one. */
        g_autoptr(GVariant) value = g_variant_is_of_type(child, G_VARIANT_TYPE_VARIANT)
                                        ? g_variant_get_variant(child)
                                        : g_variant_ref(child);
        g_variant_builder_add(&b, "{sv}", payload_keys[i].key, value);
    }
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

GVariant *mvm_snapshot_unwrap(const guint8 *data, gsize len, GError **error)
{
    guint8 expected[MVM_SNAPSHOT_DIGEST_SIZE];
    guint16 major = 0;
    gsize n = 0;

    if (!check_header(data, len, &major, &n, error))
        return NULL;
    digest(data, MVM_SNAPSHOT_HEADER_SIZE + n, expected);
    if (memcmp(expected, data + MVM_SNAPSHOT_HEADER_SIZE + n, sizeof(expected)) != 0) {
        invalid(error, "the SHA-256 digest does not match (the state file is damaged)");
        return NULL;
    }

    /* A copy: GVariant wants its data aligned, and then owns it. */
    g_autoptr(GBytes) bytes = g_bytes_new(data + MVM_SNAPSHOT_HEADER_SIZE, n);
    g_autoptr(GVariant) boxed =
        g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE_VARIANT, bytes, FALSE));
    if (!g_variant_is_normal_form(boxed)) {
        invalid(error, "the state is not a GVariant in normal form");
        return NULL;
    }
    g_autoptr(GVariant) payload = g_variant_get_variant(boxed);
    const char *type = major == MVM_SNAPSHOT_MAJOR_TUPLE ? MVM_SNAPSHOT_PAYLOAD_TUPLE_TYPE
                                                         : MVM_SNAPSHOT_PAYLOAD_TYPE;
    if (!g_variant_is_of_type(payload, G_VARIANT_TYPE(type))) {
        invalid(error, "the state of format %u has type %s, expected %s", major,
                g_variant_get_type_string(payload), type);
        return NULL;
    }
    if (major == MVM_SNAPSHOT_MAJOR_TUPLE)
        return payload_from_tuple(payload);
    return g_steal_pointer(&payload);
}

/* ---- config ---- */

static void add_string(GVariantBuilder *b, const char *key, const char *value)
{
    if (value != NULL)
        g_variant_builder_add(b, "{sv}", key, g_variant_new_string(value));
}

static GVariant *disks_to_variant(const GPtrArray *disks)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; disks != NULL && i < disks->len; i++) {
        const MvmDiskConfig *disk = g_ptr_array_index(disks, i);
        g_variant_builder_open(&b, G_VARIANT_TYPE("a{sv}"));
        add_string(&b, "path", disk->path);
        g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(disk->read_only));
        g_variant_builder_close(&b);
    }
    return g_variant_builder_end(&b);
}

static GVariant *nics_to_variant(const GPtrArray *nics)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; nics != NULL && i < nics->len; i++) {
        const MvmNetConfig *nic = g_ptr_array_index(nics, i);
        g_variant_builder_open(&b, G_VARIANT_TYPE("a{sv}"));
        add_string(&b, "tap", nic->tap_name);
        g_variant_builder_add(&b, "{sv}", "mac",
                              g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, nic->mac, 6, 1));
        g_variant_builder_close(&b);
    }
    return g_variant_builder_end(&b);
}

/*
 * Paths of files given by fd cannot be stored: such a disk or NIC comes back
 * without a path, and only a restore given its back ends takes it
 * (check_own_backends() in snapshot.c refuses the others with a clear message).
 */
GVariant *mvm_snapshot_config_to_variant(const MvmVmConfig *config)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "vcpus", g_variant_new_uint32(config->n_vcpus));
    g_variant_builder_add(&b, "{sv}", "memory-mib", g_variant_new_uint64(config->memory_mib));
    add_string(&b, "kernel", config->kernel_path);
    add_string(&b, "cmdline", config->cmdline);
    g_variant_builder_add(&b, "{sv}", "prefer-pvh", g_variant_new_boolean(config->prefer_pvh));
    g_variant_builder_add(&b, "{sv}", "debug-exit", g_variant_new_boolean(config->debug_exit));
    g_variant_builder_add(&b, "{sv}", "disks", disks_to_variant(config->disks));
    g_variant_builder_add(&b, "{sv}", "network", nics_to_variant(config->nics));
    g_variant_builder_add(&b, "{sv}", "vsock-cid", g_variant_new_uint32(config->vsock_cid));
    add_string(&b, "vsock-uds-path", config->vsock_uds_path);
    g_variant_builder_add(&b, "{sv}", "rng", g_variant_new_boolean(config->rng));
    return g_variant_builder_end(&b);
}

/* One key: its type must match; strings must be short, non-empty and without NULs. */
static gboolean lookup(GVariant *dict, const char *key, const char *type, gboolean required,
                       GVariant **out, GError **error)
{
    *out = g_variant_lookup_value(dict, key, NULL);
    if (*out == NULL)
        return required ? invalid(error, "config has no \"%s\"", key) : TRUE;
    if (!g_variant_is_of_type(*out, G_VARIANT_TYPE(type)))
        return invalid(error, "config \"%s\" has type %s, expected %s", key,
                       g_variant_get_type_string(*out), type);
    if (g_variant_is_of_type(*out, G_VARIANT_TYPE_STRING)) {
        gsize n;
        g_variant_get_string(*out, &n);
        if (n == 0 || n > MAX_CONFIG_STRING)
            return invalid(error, "config \"%s\" is empty or longer than %d bytes", key,
                           MAX_CONFIG_STRING);
    }
    return TRUE;
}

static char *dup_string_or_null(GVariant *v)
{
    return v != NULL ? g_variant_dup_string(v, NULL) : NULL;
}

static gboolean check_known_keys(GVariant *dict, const char *const *known, const char *what,
                                 GError **error)
{
    GVariantIter iter;
    const char *key;

    g_variant_iter_init(&iter, dict);
    while (g_variant_iter_next(&iter, "{&sv}", &key, NULL))
        if (!g_strv_contains(known, key))
            return invalid(error, "unknown %s key \"%.64s\"", what, key);
    return TRUE;
}

static gboolean disk_from_variant(GVariant *dict, MvmVmConfig *config, GError **error)
{
    static const char *const known[] = {"path", "read-only", NULL};
    g_autoptr(GVariant) path = NULL, read_only = NULL;

    if (!check_known_keys(dict, known, "disk", error) ||
        !lookup(dict, "path", "s", FALSE, &path, error) ||
        !lookup(dict, "read-only", "b", FALSE, &read_only, error))
        return FALSE;
    MvmDiskConfig *disk = g_new0(MvmDiskConfig, 1);
    disk->path = dup_string_or_null(path);
    disk->fd = -1;
    disk->read_only = read_only != NULL && g_variant_get_boolean(read_only);
    g_ptr_array_add(config->disks, disk);
    return TRUE;
}

static gboolean nic_from_variant(GVariant *dict, MvmVmConfig *config, GError **error)
{
    static const char *const known[] = {"tap", "mac", NULL};
    g_autoptr(GVariant) tap = NULL, mac = NULL;
    gsize n_mac = 0;

    if (!check_known_keys(dict, known, "network", error) ||
        !lookup(dict, "tap", "s", FALSE, &tap, error) ||
        !lookup(dict, "mac", "ay", FALSE, &mac, error))
        return FALSE;
    gconstpointer bytes = mac != NULL ? g_variant_get_fixed_array(mac, &n_mac, 1) : NULL;
    if (mac != NULL && n_mac != 6)
        return invalid(error, "MAC of %" G_GSIZE_FORMAT " bytes", n_mac);
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);
    nic->tap_name = dup_string_or_null(tap);
    nic->tap_fd = -1;
    if (bytes != NULL)
        memcpy(nic->mac, bytes, 6);
    g_ptr_array_add(config->nics, nic);
    return TRUE;
}

typedef gboolean (*ItemFunc)(GVariant *dict, MvmVmConfig *config, GError **error);

static gboolean list_from_variant(GVariant *list, const char *what, ItemFunc func,
                                  MvmVmConfig *config, GError **error)
{
    gsize n = list != NULL ? g_variant_n_children(list) : 0;

    if (n > MAX_DISKS_OR_NICS)
        return invalid(error, "%" G_GSIZE_FORMAT " %s; at most %d", n, what, MAX_DISKS_OR_NICS);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) item = g_variant_get_child_value(list, i);
        if (!func(item, config, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean check_sizes(const MvmVmConfig *config, const MvmSnapshotLimits *limits,
                            GError **error)
{
    if (config->n_vcpus == 0 || config->n_vcpus > MIN(limits->max_vcpus, (guint)MVM_MAX_VCPUS))
        return invalid(error, "%u vCPUs; this host runs 1 to %u", config->n_vcpus,
                       MIN(limits->max_vcpus, (guint)MVM_MAX_VCPUS));
    if (config->memory_mib < MVM_MIN_MEMORY_MIB || config->memory_mib % 2 != 0 ||
        config->memory_mib > MVM_MAX_MEMORY_MIB)
        return invalid(error, "%" G_GUINT64_FORMAT " MiB of memory", config->memory_mib);
    if (config->vsock_cid != 0 && config->vsock_cid < MVM_VSOCK_CID_MIN)
        return invalid(error, "vsock CID %u", config->vsock_cid);
    return TRUE;
}

MvmVmConfig *mvm_snapshot_config_from_variant(GVariant *dict, const MvmSnapshotLimits *limits,
                                              GError **error)
{
    static const char *const known[] = {
        "vcpus", "memory-mib", "kernel",    "cmdline",        "prefer-pvh", "debug-exit",
        "disks", "network",    "vsock-cid", "vsock-uds-path", "rng",        NULL,
    };
    g_autoptr(GVariant) vcpus = NULL, memory = NULL, kernel = NULL, cmdline = NULL;
    g_autoptr(GVariant) pvh = NULL, debug = NULL, disks = NULL, nics = NULL, cid = NULL;
    g_autoptr(GVariant) uds = NULL, rng = NULL;

    if (!check_known_keys(dict, known, "config", error) ||
        !lookup(dict, "vcpus", "u", TRUE, &vcpus, error) ||
        !lookup(dict, "memory-mib", "t", TRUE, &memory, error) ||
        !lookup(dict, "kernel", "s", FALSE, &kernel, error) ||
        !lookup(dict, "cmdline", "s", FALSE, &cmdline, error) ||
        !lookup(dict, "prefer-pvh", "b", FALSE, &pvh, error) ||
        !lookup(dict, "debug-exit", "b", FALSE, &debug, error) ||
        !lookup(dict, "disks", "aa{sv}", FALSE, &disks, error) ||
        !lookup(dict, "network", "aa{sv}", FALSE, &nics, error) ||
        !lookup(dict, "vsock-cid", "u", FALSE, &cid, error) ||
        !lookup(dict, "vsock-uds-path", "s", FALSE, &uds, error) ||
        !lookup(dict, "rng", "b", FALSE, &rng, error))
        return NULL;

    g_autoptr(MvmVmConfig) config = mvm_vm_config_new();
    config->n_vcpus = g_variant_get_uint32(vcpus);
    config->memory_mib = g_variant_get_uint64(memory);
    /* The kernel is in the memory already; the path is kept to describe the VM. */
    config->kernel_path =
        kernel != NULL ? g_variant_dup_string(kernel, NULL) : g_strdup("snapshot");
    config->cmdline = dup_string_or_null(cmdline);
    config->prefer_pvh = pvh != NULL && g_variant_get_boolean(pvh);
    config->debug_exit = debug != NULL && g_variant_get_boolean(debug);
    config->vsock_cid = cid != NULL ? g_variant_get_uint32(cid) : 0;
    config->vsock_uds_path = dup_string_or_null(uds);
    config->rng = rng != NULL && g_variant_get_boolean(rng);
    if (disks != NULL && g_variant_n_children(disks) > 0)
        config->disks = g_ptr_array_new(); /* mvm_vm_config_free() frees the items */
    if (nics != NULL && g_variant_n_children(nics) > 0)
        config->nics = g_ptr_array_new();
    if (!check_sizes(config, limits, error) ||
        !list_from_variant(disks, "disks", disk_from_variant, config, error) ||
        !list_from_variant(nics, "NICs", nic_from_variant, config, error))
        return NULL;
    return g_steal_pointer(&config);
}

/* ---- payload ---- */

gboolean mvm_snapshot_get_blob(GVariant *bytes, void *dst, gsize size, const char *what,
                               GError **error)
{
    gsize n;
    gconstpointer data = g_variant_get_fixed_array(bytes, &n, 1);

    if (n != size)
        return invalid(error, "%s state has %" G_GSIZE_FORMAT " bytes, expected %" G_GSIZE_FORMAT,
                       what, n, size);
    memcpy(dst, data, size);
    return TRUE;
}

static gboolean irqchip_from_variant(GVariant *bytes, guint32 chip_id, struct kvm_irqchip *chip,
                                     const char *what, GError **error)
{
    memset(chip, 0, sizeof(*chip));
    chip->chip_id = chip_id;
    /* The union's member, not the union: KVM reads only the member for chip_id. */
    gsize size = chip_id == KVM_IRQCHIP_IOAPIC ? sizeof(chip->chip.ioapic) : sizeof(chip->chip.pic);
    return mvm_snapshot_get_blob(bytes, &chip->chip, size, what, error);
}

static gboolean vcpus_from_variant(GVariant *list, MvmSnapshotState *state,
                                   const MvmSnapshotLimits *limits, GError **error)
{
    gsize n = g_variant_n_children(list);

    if (n != state->config->n_vcpus)
        return invalid(error, "%" G_GSIZE_FORMAT " vCPU states for a VM of %u vCPUs", n,
                       state->config->n_vcpus);
    state->vcpus = g_ptr_array_new_with_free_func((GDestroyNotify)mvm_vcpu_state_free);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) item = g_variant_get_child_value(list, i);
        MvmVcpuState *vcpu = mvm_vcpu_state_from_variant(item, limits, error);
        if (vcpu == NULL) {
            g_prefix_error(error, "vCPU %" G_GSIZE_FORMAT ": ", i);
            return FALSE;
        }
        g_ptr_array_add(state->vcpus, vcpu);
    }
    return TRUE;
}

static gboolean devices_check(GVariant *devices, GError **error)
{
    gsize n = g_variant_n_children(devices);
    GVariantIter iter;
    const char *name;

    if (n > MAX_DEVICES)
        return invalid(error, "%" G_GSIZE_FORMAT " device states; at most %d", n, MAX_DEVICES);
    g_variant_iter_init(&iter, devices);
    while (g_variant_iter_next(&iter, "{&sv}", &name, NULL))
        if (*name == '\0' || strlen(name) > 64)
            return invalid(error, "a device name is empty or longer than 64 bytes");
    return TRUE;
}

/* The payload's key @i: present (all are required today) and of its type. */
static gboolean payload_lookup(GVariant *payload, gsize i, GVariant **out, GError **error)
{
    const char *key = payload_keys[i].key, *type = payload_keys[i].type;

    *out = g_variant_lookup_value(payload, key, NULL);
    if (*out == NULL)
        return invalid(error, "the state has no \"%s\"", key);
    if (type != NULL && !g_variant_is_of_type(*out, G_VARIANT_TYPE(type)))
        return invalid(error, "the state's \"%s\" has type %s, expected %s", key,
                       g_variant_get_type_string(*out), type);
    return TRUE;
}

/* Minor 1's "cpu-template": optional, "host" (all the host gave) in a snapshot of minor 0. */
static gboolean cpu_template_from_payload(GVariant *payload, MvmVmConfig *config, GError **error)
{
    g_autoptr(GVariant) name = g_variant_lookup_value(payload, "cpu-template", NULL);

    if (name == NULL)
        return TRUE;
    if (!g_variant_is_of_type(name, G_VARIANT_TYPE_STRING))
        return invalid(error, "the state's \"cpu-template\" has type %s, expected s",
                       g_variant_get_type_string(name));
    config->cpu_template = mvm_cpu_template_new_recorded(g_variant_get_string(name, NULL), error);
    if (config->cpu_template == NULL) {
        g_prefix_error(error, "invalid snapshot: ");
        return FALSE;
    }
    return TRUE;
}

/* Minor 2's "vmgenid-addr": optional; this build puts the ID in one place and reads no other. */
static gboolean vmgenid_from_payload(GVariant *payload, MvmSnapshotState *state, GError **error)
{
    g_autoptr(GVariant) addr = g_variant_lookup_value(payload, "vmgenid-addr", NULL);

    if (addr == NULL)
        return TRUE;
    if (!g_variant_is_of_type(addr, G_VARIANT_TYPE_UINT64))
        return invalid(error, "the state's \"vmgenid-addr\" has type %s, expected t",
                       g_variant_get_type_string(addr));
    state->vmgenid_addr = g_variant_get_uint64(addr);
    if (state->vmgenid_addr != MVM_VMGENID_ADDR)
        return invalid(error,
                       "the generation ID is at 0x%" G_GINT64_MODIFIER "x; this build has it at "
                       "0x%" G_GINT64_MODIFIER "x",
                       state->vmgenid_addr, MVM_VMGENID_ADDR);
    return TRUE;
}

/* Minor 3's "parent" and "changed-pages": a diff has both, a full snapshot neither. */
static gboolean diff_from_payload(GVariant *payload, MvmSnapshotState *state, GError **error)
{
    g_autoptr(GVariant) parent = g_variant_lookup_value(payload, "parent", NULL);
    g_autoptr(GVariant) pages = g_variant_lookup_value(payload, "changed-pages", NULL);

    if (parent == NULL && pages == NULL)
        return TRUE;
    if (parent == NULL || pages == NULL)
        return invalid(error, "the state has \"%s\" without \"%s\"",
                       parent ? "parent" : "changed-pages", parent ? "changed-pages" : "parent");
    if (!mvm_snapshot_get_blob(parent, state->parent, sizeof(state->parent), "parent", error))
        return FALSE;
    if (!g_variant_is_of_type(pages, G_VARIANT_TYPE_BYTESTRING))
        return invalid(error, "the state's \"changed-pages\" has type %s, expected ay",
                       g_variant_get_type_string(pages));
    guint64 n_pages = state->memory_size / MVM_PAGE_SIZE;
    gsize len = g_variant_get_size(pages);
    const guint8 *bits = g_variant_get_data(pages);
    if (len != (n_pages + 7) / 8)
        return invalid(error,
                       "the state's \"changed-pages\" has %" G_GSIZE_FORMAT
                       " bytes for %" G_GUINT64_FORMAT " pages",
                       len, n_pages);
    if (n_pages % 8 != 0 && (bits[len - 1] >> (n_pages % 8)) != 0)
        return invalid(error, "the state's \"changed-pages\" marks pages past the end of RAM");
    state->has_parent = TRUE;
    state->changed_pages = g_variant_get_data_as_bytes(pages);
    return TRUE;
}

/* Keys this build does not know are a newer minor's: skipped, never looked at. */
static gboolean payload_parse(GVariant *payload, MvmSnapshotState *state,
                              const MvmSnapshotLimits *limits, GError **error)
{
    g_autoptr(GVariant) config = NULL, vcpus = NULL, clock = NULL, master = NULL, slave = NULL;
    g_autoptr(GVariant) ioapic = NULL, pit = NULL, memory_size = NULL;
    GVariant **values[] = {
        &config, &vcpus,         &clock,        &master,         &slave,       &ioapic,
        &pit,    &state->serial, &state->i8042, &state->devices, &memory_size,
    };
    guint64 clock_ns;
    guint32 clock_flags;

    G_STATIC_ASSERT(G_N_ELEMENTS(values) == G_N_ELEMENTS(payload_keys));
    for (gsize i = 0; i < G_N_ELEMENTS(values); i++)
        if (!payload_lookup(payload, i, values[i], error))
            return FALSE;
    g_variant_get(clock, "(tu)", &clock_ns, &clock_flags);
    state->clock.clock = clock_ns;
    state->clock.flags = clock_flags;
    state->memory_size = g_variant_get_uint64(memory_size);
    state->config = mvm_snapshot_config_from_variant(config, limits, error);
    if (state->config == NULL)
        return FALSE;
    if (state->memory_size != state->config->memory_mib * 1024 * 1024)
        return invalid(error,
                       "%" G_GUINT64_FORMAT " bytes of RAM for a VM of %" G_GUINT64_FORMAT " MiB",
                       state->memory_size, state->config->memory_mib);
    return cpu_template_from_payload(payload, state->config, error) &&
           vmgenid_from_payload(payload, state, error) &&
           diff_from_payload(payload, state, error) &&
           vcpus_from_variant(vcpus, state, limits, error) &&
           irqchip_from_variant(master, KVM_IRQCHIP_PIC_MASTER, &state->pic_master, "PIC master",
                                error) &&
           irqchip_from_variant(slave, KVM_IRQCHIP_PIC_SLAVE, &state->pic_slave, "PIC slave",
                                error) &&
           irqchip_from_variant(ioapic, KVM_IRQCHIP_IOAPIC, &state->ioapic, "IOAPIC", error) &&
           mvm_snapshot_get_blob(pit, &state->pit, sizeof(state->pit), "PIT", error) &&
           devices_check(state->devices, error);
}

MvmSnapshotState *mvm_snapshot_decode(const guint8 *data, gsize len,
                                      const MvmSnapshotLimits *limits, GError **error)
{
    g_autoptr(GVariant) payload = mvm_snapshot_unwrap(data, len, error);

    if (payload == NULL)
        return NULL;
    g_autoptr(MvmSnapshotState) state = g_new0(MvmSnapshotState, 1);
    if (!payload_parse(payload, state, limits, error))
        return NULL;
    /* unwrap() checked the length: the digest ends the data. */
    memcpy(state->id, data + len - MVM_SNAPSHOT_DIGEST_SIZE, MVM_SNAPSHOT_DIGEST_SIZE);
    return g_steal_pointer(&state);
}
