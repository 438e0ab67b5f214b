/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "definition.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "caller-files.h"
#include "cpu-templates.h"
#include "errors.h"
#include "fd-closer.h"

#define GROUP_VM       "VM"
#define GROUP_CONFIG   "Config"
#define GROUP_RESTORED "Restored" /* a handoff's alone: RestoreVM's options */

static guint max_vcpus = MVM_MAX_VCPUS;

void mvmd_config_set_max_vcpus(guint value)
{
    max_vcpus = value > 0 ? value : MVM_MAX_VCPUS;
}

guint mvmd_config_get_max_vcpus(void)
{
    return max_vcpus;
}

void mvmd_vm_definition_free(MvmdVmDefinition *config)
{
    if (!config)
        return;
    g_free(config->name);
    g_free(config->uuid);
    g_free(config->kernel);
    g_free(config->initrd);
    g_free(config->cmdline);
    /* The caller's descriptors: closing one may wait for the caller (fd-closer.h). */
    mvmd_close_later(config->kernel_fd);
    mvmd_close_later(config->initrd_fd);
    mvmd_devices_clear(&config->devices);
    g_free(config->snapshot_dir);
    mvmd_close_later(config->snapshot_fd);
    mvmd_close_later(config->snapshot_state_fd);
    mvmd_close_later(config->snapshot_memory_fd);
    mvmd_snapshot_layers_free(config->snapshot_layers, config->n_snapshot_layers);
    g_free(config->cpu_template);
    g_free(config);
}

static MvmdVmDefinition *config_new_defaults(void)
{
    MvmdVmDefinition *config = g_new0(MvmdVmDefinition, 1);

    config->vcpus = 1;
    config->memory_mib = MVMD_DEFAULT_MEMORY;
    config->kernel_fd = -1;
    config->initrd_fd = -1;
    config->snapshot_fd = -1;
    config->snapshot_state_fd = -1;
    config->snapshot_memory_fd = -1;
    config->on_reboot = MVMD_ON_REBOOT_RESTART;
    mvmd_devices_init(&config->devices);
    return config;
}

gboolean mvmd_vm_name_validate(const char *name, GError **error)
{
    gsize len = strlen(name);

    if (len == 0 || len > MVMD_VM_NAME_MAX) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "invalid VM name: must be 1 to %d characters long", MVMD_VM_NAME_MAX);
        return FALSE;
    }
    if (name[0] == '.' || name[0] == '-') {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "invalid VM name: must not start with '.' or '-'");
        return FALSE;
    }
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-') {
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                        "invalid VM name: only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
            return FALSE;
        }
    }
    return TRUE;
}

/* ---- one parser per key ---------------------------------------------------------------- */

typedef gboolean (*KeyParseFunc)(MvmdVmDefinition *config, const char *key, GVariant *value,
                                 GUnixFDList *fd_list, GError **error);

typedef struct {
    const char *key;
    const char *type;
    KeyParseFunc parse; /* NULL: reserved, "not supported yet" */
    gboolean storable;  /* may appear in a stored definition */
} KeyInfo;

#define invalid mvmd_config_invalid

static gboolean parse_vcpus(MvmdVmDefinition *config, const char *key, GVariant *value,
                            GUnixFDList *fd_list, GError **error)
{
    guint32 n = g_variant_get_uint32(value);

    if (n < 1 || n > max_vcpus)
        return invalid(error, key, "%u out of range 1..%u", n, max_vcpus);
    config->vcpus = n;
    return TRUE;
}

static gboolean parse_memory(MvmdVmDefinition *config, const char *key, GVariant *value,
                             GUnixFDList *fd_list, GError **error)
{
    guint64 mib = g_variant_get_uint64(value);

    if (mib < MVM_MIN_MEMORY_MIB || mib > MVMD_MEMORY_MIB_MAX)
        return invalid(error, key, "%" G_GUINT64_FORMAT " out of range %d..%d", mib,
                       MVM_MIN_MEMORY_MIB, MVMD_MEMORY_MIB_MAX);
    if (mib % 2 != 0)
        return invalid(error, key, "%" G_GUINT64_FORMAT " is not a multiple of 2", mib);
    config->memory_mib = mib;
    return TRUE;
}

static gboolean parse_path(char **out, const char *key, GVariant *value, GError **error)
{
    const char *path = g_variant_get_string(value, NULL);

    if (!g_path_is_absolute(path))
        return invalid(error, key, "'%s' is not an absolute path", path);
    if (strlen(path) >= PATH_MAX)
        return invalid(error, key, "path too long");
    g_free(*out);
    *out = g_strdup(path);
    return TRUE;
}

static gboolean parse_fd(int *out, const char *key, GVariant *value, GUnixFDList *fd_list,
                         GError **error)
{
    int fd = mvmd_config_take_fd(value, fd_list, key, "r", error);

    if (fd < 0)
        return FALSE;
    mvmd_close_later(*out);
    *out = fd;
    return TRUE;
}

static gboolean parse_kernel(MvmdVmDefinition *config, const char *key, GVariant *value,
                             GUnixFDList *fd_list, GError **error)
{
    return parse_path(&config->kernel, key, value, error);
}

static gboolean parse_kernel_fd(MvmdVmDefinition *config, const char *key, GVariant *value,
                                GUnixFDList *fd_list, GError **error)
{
    return parse_fd(&config->kernel_fd, key, value, fd_list, error);
}

static gboolean parse_initrd(MvmdVmDefinition *config, const char *key, GVariant *value,
                             GUnixFDList *fd_list, GError **error)
{
    return parse_path(&config->initrd, key, value, error);
}

static gboolean parse_initrd_fd(MvmdVmDefinition *config, const char *key, GVariant *value,
                                GUnixFDList *fd_list, GError **error)
{
    return parse_fd(&config->initrd_fd, key, value, fd_list, error);
}

static gboolean parse_cmdline(MvmdVmDefinition *config, const char *key, GVariant *value,
                              GUnixFDList *fd_list, GError **error)
{
    gsize len;
    const char *cmdline = g_variant_get_string(value, &len);

    if (len > MVMD_CMDLINE_MAX)
        return invalid(error, key, "longer than %d bytes", MVMD_CMDLINE_MAX);
    g_free(config->cmdline);
    config->cmdline = g_strdup(cmdline);
    return TRUE;
}

static gboolean parse_persist(MvmdVmDefinition *config, const char *key, GVariant *value,
                              GUnixFDList *fd_list, GError **error)
{
    config->persist = g_variant_get_boolean(value);
    return TRUE;
}

static gboolean parse_autostart(MvmdVmDefinition *config, const char *key, GVariant *value,
                                GUnixFDList *fd_list, GError **error)
{
    config->autostart = g_variant_get_boolean(value);
    return TRUE;
}

static gboolean parse_debug_exit(MvmdVmDefinition *config, const char *key, GVariant *value,
                                 GUnixFDList *fd_list, GError **error)
{
    config->debug_exit = g_variant_get_boolean(value);
    return TRUE;
}

static gboolean parse_on_reboot(MvmdVmDefinition *config, const char *key, GVariant *value,
                                GUnixFDList *fd_list, GError **error)
{
    const char *what = g_variant_get_string(value, NULL);

    if (g_str_equal(what, "restart"))
        config->on_reboot = MVMD_ON_REBOOT_RESTART;
    else if (g_str_equal(what, "stop"))
        config->on_reboot = MVMD_ON_REBOOT_STOP;
    else
        return invalid(error, key, "'%s' is neither 'restart' nor 'stop'", what);
    return TRUE;
}

static gboolean parse_disks(MvmdVmDefinition *config, const char *key, GVariant *value,
                            GUnixFDList *fd_list, GError **error)
{
    return mvmd_devices_parse_disks(&config->devices, value, fd_list, error);
}

static gboolean parse_network(MvmdVmDefinition *config, const char *key, GVariant *value,
                              GUnixFDList *fd_list, GError **error)
{
    return mvmd_devices_parse_network(&config->devices, value, fd_list, error);
}

static gboolean parse_vsock(MvmdVmDefinition *config, const char *key, GVariant *value,
                            GUnixFDList *fd_list, GError **error)
{
    return mvmd_devices_parse_vsock(&config->devices, value, FALSE, error);
}

static gboolean parse_rng(MvmdVmDefinition *config, const char *key, GVariant *value,
                          GUnixFDList *fd_list, GError **error)
{
    config->devices.rng = g_variant_get_boolean(value);
    return TRUE;
}

/* The name only (no '/', bounded): whether the template loads is CreateVM's to check. */
static gboolean parse_cpu_template(MvmdVmDefinition *config, const char *key, GVariant *value,
                                   GUnixFDList *fd_list, GError **error)
{
    const char *name = g_variant_get_string(value, NULL);

    if (!mvmd_cpu_template_name_check(name, error))
        return FALSE;
    g_free(config->cpu_template);
    config->cpu_template = g_strdup(name);
    return TRUE;
}

static const KeyInfo keys[] = {
    {"vcpus", "u", parse_vcpus, TRUE},
    {"memory-mib", "t", parse_memory, TRUE},
    {"kernel", "s", parse_kernel, TRUE},
    {"kernel-fd", "h", parse_kernel_fd, FALSE},
    {"initrd", "s", parse_initrd, TRUE},
    {"initrd-fd", "h", parse_initrd_fd, FALSE},
    {"cmdline", "s", parse_cmdline, TRUE},
    {"persist", "b", parse_persist, TRUE},
    {"autostart", "b", parse_autostart, TRUE},
    {"debug-exit", "b", parse_debug_exit, TRUE},
    {"on-reboot", "s", parse_on_reboot, TRUE},
    {"disks", "aa{sv}", parse_disks, TRUE},
    {"network", "aa{sv}", parse_network, TRUE},
    {"vsock", "a{sv}", parse_vsock, TRUE},
    {"rng", "b", parse_rng, TRUE},
    {"cpu-template", "s", parse_cpu_template, TRUE},
};

static const KeyInfo *key_lookup(const char *key)
{
    for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
        if (g_str_equal(keys[i].key, key))
            return &keys[i];
    }
    return NULL;
}

static gboolean parse_one(MvmdVmDefinition *config, const char *key, GVariant *value,
                          GUnixFDList *fd_list, GError **error)
{
    const KeyInfo *info = key_lookup(key);

    if (!info)
        return invalid(error, key, "unknown key");
    if (!g_variant_is_of_type(value, G_VARIANT_TYPE(info->type)))
        return invalid(error, key, "must be of type %s, not %s", info->type,
                       g_variant_get_type_string(value));
    if (!info->parse)
        return invalid(error, key, "not supported yet");
    return info->parse(config, key, value, fd_list, error);
}

/* Rules between keys, checked once every key is parsed. */
static gboolean check_consistency(MvmdVmDefinition *config, GError **error)
{
    if (!config->kernel && config->kernel_fd < 0)
        return invalid(error, "kernel", "required (or 'kernel-fd')");
    if (config->kernel && config->kernel_fd >= 0)
        return invalid(error, "kernel-fd", "give either 'kernel' or 'kernel-fd', not both");
    if (config->initrd && config->initrd_fd >= 0)
        return invalid(error, "initrd-fd", "give either 'initrd' or 'initrd-fd', not both");
    if (config->persist && config->kernel_fd >= 0)
        return invalid(error, "persist",
                       "a VM whose kernel is passed as 'kernel-fd' cannot be persistent: a "
                       "stored definition cannot hold a file descriptor, pass 'kernel' instead");
    if (config->persist && config->initrd_fd >= 0)
        return invalid(error, "persist",
                       "a VM whose initrd is passed as 'initrd-fd' cannot be persistent: a "
                       "stored definition cannot hold a file descriptor, pass 'initrd' instead");
    if (config->persist && mvmd_devices_have_fds(&config->devices))
        return invalid(error, "persist",
                       "a VM with a disk or network interface passed as 'fd' cannot be "
                       "persistent: a stored definition cannot hold a file descriptor");
    if (config->autostart && !config->persist)
        return invalid(error, "autostart", "needs 'persist'");
    return mvmd_devices_check(&config->devices, error);
}

/* Lets the library check what it knows better (e.g. its own vCPU limit). */
static gboolean check_with_library(const MvmdVmDefinition *config, GError **error)
{
    g_autoptr(MvmVmConfig) mvm = mvmd_vm_definition_to_mvm(config);
    g_autoptr(GError) local = NULL;

    if (mvm_vm_config_validate(mvm, &local))
        return TRUE;
    g_propagate_error(error, mvmd_error_from_error(local, "invalid configuration"));
    return FALSE;
}

/* @uuid may be NULL (a new one is made). */
static gboolean check_name_and_uuid(const char *name, const char *uuid, GError **error)
{
    if (!mvmd_vm_name_validate(name, error))
        return FALSE;
    if (uuid && !g_uuid_string_is_valid(uuid)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "invalid UUID '%s'", uuid);
        return FALSE;
    }
    return TRUE;
}

MvmdVmDefinition *mvmd_vm_definition_new_from_variant(const char *name, const char *uuid,
                                                      GVariant *variant, GUnixFDList *fd_list,
                                                      GError **error)
{
    g_autoptr(MvmdVmDefinition) config = config_new_defaults();
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    GVariantIter iter;
    const char *key;
    GVariant *value;

    if (!check_name_and_uuid(name, uuid, error))
        return NULL;
    config->name = g_strdup(name);
    config->uuid = uuid ? g_ascii_strdown(uuid, -1) : g_uuid_string_random();

    g_variant_iter_init(&iter, variant);
    while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
        if (!g_hash_table_add(seen, (gpointer)key)) {
            invalid(error, key, "given more than once");
            g_variant_unref(value);
            return NULL;
        }
        if (!parse_one(config, key, value, fd_list, error)) {
            g_variant_unref(value);
            return NULL;
        }
    }
    if (!check_consistency(config, error) || !check_with_library(config, error))
        return NULL;
    return g_steal_pointer(&config);
}

/* What every restored definition has; vCPUs and memory come once the snapshot is loaded. */
static gboolean restored_defaults(MvmdVmDefinition *config, const char *name, gboolean copy_memory,
                                  GError **error)
{
    if (!mvmd_vm_name_validate(name, error))
        return FALSE;
    config->name = g_strdup(name);
    config->uuid = g_uuid_string_random();
    config->copy_memory = copy_memory;
    /* A guest reset cannot boot a kernel it does not have. */
    config->on_reboot = MVMD_ON_REBOOT_STOP;
    return TRUE;
}

MvmdVmDefinition *mvmd_vm_definition_new_restored(const char *name, const char *dir, int dir_fd,
                                                  gboolean copy_memory, GError **error)
{
    g_autoptr(MvmdVmDefinition) config = config_new_defaults();

    config->snapshot_fd = dir_fd; /* taken, whatever happens */
    if (!restored_defaults(config, name, copy_memory, error))
        return NULL;
    if (dir_fd < 0 && !g_path_is_absolute(dir)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "snapshot_dir: '%s' is not an absolute path", dir);
        return NULL;
    }
    config->snapshot_dir = dir_fd < 0 ? g_strdup(dir) : NULL;
    return g_steal_pointer(&config);
}

MvmdVmDefinition *mvmd_vm_definition_new_restored_files(const char *name, int state_fd,
                                                        int memory_fd, gboolean copy_memory,
                                                        GError **error)
{
    g_autoptr(MvmdVmDefinition) config = config_new_defaults();

    config->snapshot_state_fd = state_fd; /* taken, whatever happens */
    config->snapshot_memory_fd = memory_fd;
    if (!restored_defaults(config, name, copy_memory, error))
        return NULL;
    return g_steal_pointer(&config);
}

gboolean mvmd_vm_definition_is_restored(const MvmdVmDefinition *config)
{
    return config->snapshot_dir || config->snapshot_fd >= 0 || config->snapshot_state_fd >= 0;
}

static void restored_to_variant(const MvmdVmDefinition *config, GVariantBuilder *b)
{
    g_variant_builder_add(b, "{sv}", "snapshot",
                          g_variant_new_string(config->snapshot_dir ? config->snapshot_dir : ""));
    g_variant_builder_add(b, "{sv}", "copy-memory", g_variant_new_boolean(config->copy_memory));
    g_variant_builder_add(b, "{sv}", "clone", g_variant_new_boolean(config->clone));
    g_variant_builder_add(b, "{sv}", "layers", g_variant_new_uint32(config->n_snapshot_layers));
    g_variant_builder_add(b, "{sv}", "track-changes", g_variant_new_boolean(config->track_changes));
    g_variant_builder_add(b, "{sv}", "lazy", g_variant_new_boolean(config->lazy));
}

/*
 * @stored: for the stored definition (devices_to_keyfile()), else for GetConfig. @fds: a
 * handoff's, where the devices' descriptors go (mvmd_devices_to_variant()).
 */
static GVariant *definition_to_variant(const MvmdVmDefinition *config, gboolean stored, GArray *fds)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "vcpus", g_variant_new_uint32(config->vcpus));
    g_variant_builder_add(&b, "{sv}", "memory-mib", g_variant_new_uint64(config->memory_mib));
    if (config->kernel)
        g_variant_builder_add(&b, "{sv}", "kernel", g_variant_new_string(config->kernel));
    else if (config->kernel_fd >= 0)
        g_variant_builder_add(&b, "{sv}", "kernel-fd-passed", g_variant_new_boolean(TRUE));
    else
        restored_to_variant(config, &b);
    if (config->initrd)
        g_variant_builder_add(&b, "{sv}", "initrd", g_variant_new_string(config->initrd));
    else if (config->initrd_fd >= 0)
        g_variant_builder_add(&b, "{sv}", "initrd-fd-passed", g_variant_new_boolean(TRUE));
    g_variant_builder_add(&b, "{sv}", "cmdline",
                          g_variant_new_string(config->cmdline ? config->cmdline : ""));
    g_variant_builder_add(&b, "{sv}", "persist", g_variant_new_boolean(config->persist));
    g_variant_builder_add(&b, "{sv}", "autostart", g_variant_new_boolean(config->autostart));
    g_variant_builder_add(&b, "{sv}", "debug-exit", g_variant_new_boolean(config->debug_exit));
    g_variant_builder_add(
        &b, "{sv}", "on-reboot",
        g_variant_new_string(config->on_reboot == MVMD_ON_REBOOT_STOP ? "stop" : "restart"));
    mvmd_devices_to_variant(&config->devices, stored, fds, &b);
    g_variant_builder_add(&b, "{sv}", "cpu-template",
                          g_variant_new_string(mvmd_vm_definition_cpu_template(config)));
    return g_variant_builder_end(&b);
}

GVariant *mvmd_vm_definition_to_variant(const MvmdVmDefinition *config)
{
    return definition_to_variant(config, FALSE, NULL);
}

const char *mvmd_vm_definition_cpu_template(const MvmdVmDefinition *config)
{
    return config->cpu_template ? config->cpu_template : MVM_CPU_TEMPLATE_HOST;
}

MvmVmConfig *mvmd_vm_definition_to_mvm(const MvmdVmDefinition *config)
{
    MvmVmConfig *mvm = mvm_vm_config_new();

    mvm->n_vcpus = config->vcpus;
    mvm->memory_mib = config->memory_mib;
    mvm->kernel_path = g_strdup(config->kernel);
    mvm->kernel_fd = config->kernel_fd;
    mvm->initrd_path = g_strdup(config->initrd);
    mvm->initrd_fd = config->initrd_fd;
    mvm->cmdline = g_strdup(config->cmdline);
    mvm->prefer_pvh = TRUE;
    mvm->debug_exit = config->debug_exit;
    mvmd_devices_to_mvm(&config->devices, mvm);
    return mvm;
}

/* ---- GKeyFile -------------------------------------------------------------------------- */

/* The container keys are stored as GVariant text, read back with g_variant_parse(). */
static void devices_to_keyfile(GKeyFile *kf, const MvmdVmDefinition *config, GArray *fds)
{
    g_autoptr(GVariant) all = g_variant_ref_sink(definition_to_variant(config, TRUE, fds));
    static const char *const device_keys[] = {"disks", "network", "vsock"};

    for (gsize i = 0; i < G_N_ELEMENTS(device_keys); i++) {
        g_autoptr(GVariant) value = g_variant_lookup_value(all, device_keys[i], NULL);
        g_autofree char *text = value ? g_variant_print(value, FALSE) : NULL;

        if (text)
            g_key_file_set_string(kf, GROUP_CONFIG, device_keys[i], text);
    }
    g_key_file_set_boolean(kf, GROUP_CONFIG, "rng", config->devices.rng);
}

/* `kernel-fd`, `initrd-fd`: as GVariant text ("handle 0"), which keyfile_value() parses. */
static void fd_to_keyfile(GKeyFile *kf, const char *key, GArray *fds, int fd)
{
    g_autoptr(GVariant) handle = g_variant_ref_sink(mvmd_config_fd_handle(fds, fd));
    g_autofree char *text = g_variant_print(handle, FALSE);

    g_key_file_set_string(kf, GROUP_CONFIG, key, text);
}

/*
 * A RestoreVM definition for a handoff: the options RestoreVM would take to make it again (its
 * snapshot by path or handles, its chain, its flags, its back ends with the MACs a clone was
 * given), as GVariant text in [Restored] Options, read back through RestoreVM's own checks.
 */
static void restored_to_keyfile(GKeyFile *kf, const MvmdVmDefinition *config, GArray *fds)
{
    g_autoptr(GVariant) options = NULL;
    g_autofree char *text = NULL;
    GVariantBuilder b, layers;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    if (config->snapshot_dir)
        g_variant_builder_add(&b, "{sv}", "snapshot", g_variant_new_string(config->snapshot_dir));
    if (config->snapshot_fd >= 0)
        g_variant_builder_add(&b, "{sv}", "dir-fd",
                              mvmd_config_fd_handle(fds, config->snapshot_fd));
    if (config->snapshot_state_fd >= 0) {
        g_variant_builder_add(&b, "{sv}", "state-fd",
                              mvmd_config_fd_handle(fds, config->snapshot_state_fd));
        g_variant_builder_add(&b, "{sv}", "memory-fd",
                              mvmd_config_fd_handle(fds, config->snapshot_memory_fd));
    }
    g_variant_builder_init(&layers, G_VARIANT_TYPE("a(hh)"));
    for (guint i = 0; i < config->n_snapshot_layers; i++)
        g_variant_builder_add(&layers, "(@h@h)",
                              mvmd_config_fd_handle(fds, config->snapshot_layers[i].state_fd),
                              mvmd_config_fd_handle(fds, config->snapshot_layers[i].memory_fd));
    g_variant_builder_add(&b, "{sv}", "layers", g_variant_builder_end(&layers));
    g_variant_builder_add(&b, "{sv}", "copy-memory", g_variant_new_boolean(config->copy_memory));
    g_variant_builder_add(&b, "{sv}", "clone", g_variant_new_boolean(config->clone));
    g_variant_builder_add(&b, "{sv}", "track-changes",
                          g_variant_new_boolean(config->track_changes));
    g_variant_builder_add(&b, "{sv}", "lazy", g_variant_new_boolean(config->lazy));
    /* Only a clone was given MACs; any other restored guest has the snapshot's. */
    mvmd_devices_to_variant(&config->devices, !config->clone, fds, &b);
    options = g_variant_ref_sink(g_variant_builder_end(&b));
    text = g_variant_print(options, TRUE);
    g_key_file_set_string(kf, GROUP_RESTORED, "Options", text);
}

static GKeyFile *definition_to_keyfile(const MvmdVmDefinition *config, GArray *fds)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();

    g_key_file_set_string(kf, GROUP_VM, "Name", config->name);
    g_key_file_set_string(kf, GROUP_VM, "UUID", config->uuid);
    g_key_file_set_uint64(kf, GROUP_VM, "Owner", config->owner);
    g_key_file_set_uint64(kf, GROUP_CONFIG, "vcpus", config->vcpus);
    g_key_file_set_uint64(kf, GROUP_CONFIG, "memory-mib", config->memory_mib);
    if (config->kernel)
        g_key_file_set_string(kf, GROUP_CONFIG, "kernel", config->kernel);
    else if (fds && config->kernel_fd >= 0)
        fd_to_keyfile(kf, "kernel-fd", fds, config->kernel_fd);
    if (config->initrd)
        g_key_file_set_string(kf, GROUP_CONFIG, "initrd", config->initrd);
    else if (fds && config->initrd_fd >= 0)
        fd_to_keyfile(kf, "initrd-fd", fds, config->initrd_fd);
    if (config->cmdline)
        g_key_file_set_string(kf, GROUP_CONFIG, "cmdline", config->cmdline);
    g_key_file_set_boolean(kf, GROUP_CONFIG, "persist", config->persist);
    g_key_file_set_boolean(kf, GROUP_CONFIG, "autostart", config->autostart);
    g_key_file_set_boolean(kf, GROUP_CONFIG, "debug-exit", config->debug_exit);
    g_key_file_set_string(kf, GROUP_CONFIG, "on-reboot",
                          config->on_reboot == MVMD_ON_REBOOT_STOP ? "stop" : "restart");
    if (fds && mvmd_vm_definition_is_restored(config))
        restored_to_keyfile(kf, config, fds); /* and its devices, as RestoreVM takes them */
    else
        devices_to_keyfile(kf, config, fds);
    /* Left out when not given: a definition without it is "host" to any version. */
    if (config->cpu_template)
        g_key_file_set_string(kf, GROUP_CONFIG, "cpu-template", config->cpu_template);
    return g_steal_pointer(&kf);
}

GKeyFile *mvmd_vm_definition_to_keyfile(const MvmdVmDefinition *config)
{
    return definition_to_keyfile(config, NULL);
}

GKeyFile *mvmd_vm_definition_to_keyfile_with_fds(const MvmdVmDefinition *config, GArray *fds)
{
    return definition_to_keyfile(config, fds);
}

/*
 * One [Config] entry as the variant CreateVM would have received. The descriptor keys are
 * read only with descriptors to read them against (@with_fds: a handoff's definition).
 */
static GVariant *keyfile_value(GKeyFile *kf, const char *key, gboolean with_fds, GError **error)
{
    const KeyInfo *info = key_lookup(key);
    g_autoptr(GError) local = NULL;
    GVariant *value = NULL;

    if (!info || !(info->storable || (with_fds && g_str_equal(info->type, "h")))) {
        invalid(error, key, "unknown key in a stored definition");
        return NULL;
    }
    if (g_str_equal(info->type, "u")) {
        guint64 v = g_key_file_get_uint64(kf, GROUP_CONFIG, key, &local);
        if (!local && v > G_MAXUINT32)
            return invalid(error, key, "out of range"), NULL;
        value = g_variant_new_uint32((guint32)v);
    } else if (g_str_equal(info->type, "t")) {
        value = g_variant_new_uint64(g_key_file_get_uint64(kf, GROUP_CONFIG, key, &local));
    } else if (g_str_equal(info->type, "b")) {
        value = g_variant_new_boolean(g_key_file_get_boolean(kf, GROUP_CONFIG, key, &local));
    } else if (!g_str_equal(info->type, "s")) {
        g_autofree char *s = g_key_file_get_string(kf, GROUP_CONFIG, key, &local);
        if (!s || !(value = g_variant_parse(G_VARIANT_TYPE(info->type), s, NULL, NULL, &local)))
            return invalid(error, key, "%s", local->message), NULL;
    } else {
        g_autofree char *s = g_key_file_get_string(kf, GROUP_CONFIG, key, &local);
        if (s && !g_utf8_validate(s, -1, NULL))
            return invalid(error, key, "not valid UTF-8"), NULL;
        value = g_variant_new_string(s ? s : "");
    }
    /* g_variant_parse() returns a full reference, the constructors a floating one: own both. */
    value = g_variant_take_ref(value);
    if (local) {
        g_variant_unref(value);
        invalid(error, key, "%s", local->message);
        return NULL;
    }
    return value;
}

/*
 * [VM] Owner: definitions written before VMs had owners have none. Only root could define
 * persistent VMs by path then, and only root edits the store, so they are root's (0).
 */
static gboolean keyfile_owner(GKeyFile *kf, guint32 *owner, GError **error)
{
    g_autoptr(GError) local = NULL;
    guint64 value;

    *owner = 0;
    if (!g_key_file_has_key(kf, GROUP_VM, "Owner", NULL))
        return TRUE;
    value = g_key_file_get_uint64(kf, GROUP_VM, "Owner", &local);
    if (local || value >= G_MAXUINT32) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "[VM] Owner: not a uid%s%s",
                    local ? ": " : "", local ? local->message : "");
        return FALSE;
    }
    *owner = (guint32)value;
    return TRUE;
}

/* RestoreVM's snapshot: its two files, else its directory (a path or a handle). */
static MvmdVmDefinition *restored_snapshot(const char *name, GVariant *options,
                                           GUnixFDList *fd_list, GError **error)
{
    g_autoptr(GVariant) dir_fd = g_variant_lookup_value(options, "dir-fd", G_VARIANT_TYPE_HANDLE);
    g_autofree char *dir = NULL;
    const char *path = "";
    gboolean copy = FALSE;
    int state_fd, memory_fd, fd = -1;

    g_variant_lookup(options, "copy-memory", "b", &copy);
    if (!mvmd_caller_files_parse(options, fd_list, MVMD_CALLER_FILE_READ, (uid_t)-1, &state_fd,
                                 &memory_fd, error))
        return NULL;
    if (state_fd >= 0)
        return mvmd_vm_definition_new_restored_files(name, state_fd, memory_fd, copy, error);
    g_variant_lookup(options, "snapshot", "&s", &path);
    if (!mvmd_parse_dir_argument("snapshot", path, dir_fd, fd_list, &dir, &fd, error))
        return NULL;
    return mvmd_vm_definition_new_restored(name, dir, fd, copy, error);
}

/* [Config] @key of a restored definition, with the checks CreateVM's value gets. */
static gboolean restored_key(MvmdVmDefinition *config, GKeyFile *kf, const char *key,
                             GError **error)
{
    g_autoptr(GVariant) value = NULL;

    if (!g_key_file_has_key(kf, GROUP_CONFIG, key, NULL))
        return TRUE;
    value = keyfile_value(kf, key, FALSE, error);
    return value && parse_one(config, key, value, NULL, error);
}

/* A handoff's RestoreVM definition (restored_to_keyfile()); @name and @uuid checked. */
static MvmdVmDefinition *restored_from_keyfile(GKeyFile *kf, const char *name, const char *uuid,
                                               GUnixFDList *fd_list, GError **error)
{
    static const MvmdKeySpec restored_keys[] = {
        {"snapshot", "s"},   {"dir-fd", "h"},      {"state-fd", "h"},     {"memory-fd", "h"},
        {"layers", "a(hh)"}, {"copy-memory", "b"}, {"clone", "b"},        {"track-changes", "b"},
        {"lazy", "b"},       {"disks", "aa{sv}"},  {"network", "aa{sv}"}, {"vsock", "a{sv}"},
        {"rng", "b"}};
    g_autofree char *text = g_key_file_get_string(kf, GROUP_RESTORED, "Options", error);
    g_autoptr(GVariant) options = NULL;
    g_autoptr(MvmdVmDefinition) config = NULL;
    gboolean given;

    if (!text)
        return NULL;
    options = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, error);
    if (!options ||
        !mvmd_config_check_keys(options, restored_keys, G_N_ELEMENTS(restored_keys), NULL, error) ||
        !(config = restored_snapshot(name, options, fd_list, error)))
        return NULL;
    g_free(config->uuid);
    config->uuid = g_ascii_strdown(uuid, -1);
    g_variant_lookup(options, "clone", "b", &config->clone);
    g_variant_lookup(options, "track-changes", "b", &config->track_changes);
    g_variant_lookup(options, "lazy", "b", &config->lazy);
    g_variant_lookup(options, "rng", "b", &config->devices.rng);
    if (!mvmd_devices_parse_backends(&config->devices, options, fd_list, config->clone, &given,
                                     error) ||
        !mvmd_caller_layers_parse(options, fd_list, MVM_SNAPSHOT_MAX_LAYERS - 1,
                                  &config->snapshot_layers, &config->n_snapshot_layers, error) ||
        !restored_key(config, kf, "vcpus", error) ||
        !restored_key(config, kf, "memory-mib", error) ||
        !restored_key(config, kf, "cpu-template", error) ||
        !keyfile_owner(kf, &config->owner, error))
        return NULL;
    return g_steal_pointer(&config);
}

MvmdVmDefinition *mvmd_vm_definition_new_from_keyfile_with_fds(GKeyFile *kf, GUnixFDList *fd_list,
                                                               GError **error)
{
    g_autoptr(MvmdVmDefinition) config = NULL;
    g_autofree char *name = NULL;
    g_autofree char *uuid = NULL;
    g_auto(GStrv) cfg_keys = NULL;
    g_autoptr(GVariant) variant = NULL;
    GVariantBuilder b;

    name = g_key_file_get_string(kf, GROUP_VM, "Name", error);
    if (!name)
        return NULL;
    uuid = g_key_file_get_string(kf, GROUP_VM, "UUID", error);
    if (!uuid)
        return NULL;
    if (fd_list && g_key_file_has_group(kf, GROUP_RESTORED))
        return check_name_and_uuid(name, uuid, error)
                   ? restored_from_keyfile(kf, name, uuid, fd_list, error)
                   : NULL;
    cfg_keys = g_key_file_get_keys(kf, GROUP_CONFIG, NULL, error);
    if (!cfg_keys)
        return NULL;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (char **k = cfg_keys; *k; k++) {
        g_autoptr(GVariant) value = keyfile_value(kf, *k, fd_list != NULL, error);
        if (!value) {
            g_variant_builder_clear(&b);
            return NULL;
        }
        g_variant_builder_add(&b, "{sv}", *k, value);
    }
    variant = g_variant_ref_sink(g_variant_builder_end(&b));
    config = mvmd_vm_definition_new_from_variant(name, uuid, variant, fd_list, error);
    if (config && !keyfile_owner(kf, &config->owner, error))
        return NULL;
    return g_steal_pointer(&config);
}

MvmdVmDefinition *mvmd_vm_definition_new_from_keyfile(GKeyFile *kf, GError **error)
{
    return mvmd_vm_definition_new_from_keyfile_with_fds(kf, NULL, error);
}
