/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cpu-templates.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config-devices.h"
#include "config-file.h"
#include "errors.h"

#define CONFIG_KEY      "cpu-template"
#define TEMPLATE_SUFFIX ".json"
#define DIRECTORY_KEY   "Directory"

static gboolean is_builtin(const char *name)
{
    return g_strv_contains((const char *const *)mvm_cpu_template_builtin_names(), name);
}

/* "host, x86-64-v2, x86-64-v3", for the messages. */
static char *builtin_list(void)
{
    return g_strjoinv(", ", (char **)mvm_cpu_template_builtin_names());
}

gboolean mvmd_cpu_template_name_check(const char *name, GError **error)
{
    g_autofree char *builtins = NULL;
    g_autofree char *shown = NULL;
    glong n_chars;

    /* Before anything is opened: lib's rule (1-64 of [A-Za-z0-9_.-], no leading '.') leaves no
     * '/' for the name to leave the directory with. */
    if (is_builtin(name) || mvm_cpu_template_name_is_valid(name))
        return TRUE;
    builtins = builtin_list();
    /* The caller's text goes back to the caller only, cut to a name's length (by characters:
     * D-Bus strings are UTF-8, and the reply must stay so). */
    n_chars = g_utf8_strlen(name, -1);
    shown = g_utf8_substring(name, 0, MIN(n_chars, MVM_CPU_TEMPLATE_NAME_MAX));
    return mvmd_config_invalid(error, CONFIG_KEY,
                               "'%s%s' is no template name: give a built-in one (%s) or the "
                               "name of a custom template: 1 to %d of A-Z, a-z, 0-9, '_', '.' "
                               "and '-', not starting with '.'",
                               shown, n_chars > MVM_CPU_TEMPLATE_NAME_MAX ? "…" : "", builtins,
                               MVM_CPU_TEMPLATE_NAME_MAX);
}

static gboolean template_error(GError **error, const char *name, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean template_error(GError **error, const char *name, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "CPU template '%s': %s", name, msg);
    return FALSE;
}

/* Why NAME.json could not be opened, in words an administrator can act on. */
static void open_error(GError **error, const char *dir, const char *name, int err)
{
    g_autofree char *builtins = NULL;

    errno = err;
    if (mvm_errno_is_no_resources(err)) {
        mvmd_set_errno_error(error, MVMD_ERROR_NO_RESOURCES, "CPU template '%s': %s/%s%s", name,
                             dir, name, TEMPLATE_SUFFIX);
        return;
    }
    builtins = builtin_list();
    if (err == ENOENT)
        template_error(error, name,
                       "no such template: neither a built-in one (%s) nor a file %s%s in the "
                       "template directory %s",
                       builtins, name, TEMPLATE_SUFFIX, dir);
    else if (err == ELOOP)
        template_error(error, name,
                       "%s/%s%s is a symbolic link: a template must be a regular file in the "
                       "template directory",
                       dir, name, TEMPLATE_SUFFIX);
    else if (err == EINVAL)
        template_error(error, name, "%s/%s%s is not a regular file", dir, name, TEMPLATE_SUFFIX);
    else
        template_error(error, name, "cannot open %s/%s%s: %s", dir, name, TEMPLATE_SUFFIX,
                       g_strerror(err));
}

/*
 * @dir/NAME.json: never through a link (the administrator's directory may hold links made by
 * someone else, or to a file that is not the administrator's), never a device or FIFO, whose
 * open alone can do something (looked at before it is opened, and O_NONBLOCK should it change
 * in between), and only a regular file is read (lib bounds its size). A link or a file that is
 * not regular sets *err to ELOOP or EINVAL.
 */
static int open_in_dir(const char *dir, const char *file, int *err)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    int fd = -1;

    if (dirfd < 0) {
        /* No directory: no custom template, as for a missing file. */
        *err = errno == ENOTDIR ? ENOENT : errno;
        return -1;
    }
    if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0)
        *err = errno;
    else if (S_ISLNK(st.st_mode))
        *err = ELOOP;
    else if (!S_ISREG(st.st_mode))
        *err = EINVAL;
    else if ((fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) <
             0)
        *err = errno;
    close(dirfd);
    return fd;
}

static int open_template_file(const char *dir, const char *name, GError **error)
{
    g_autofree char *file = g_strconcat(name, TEMPLATE_SUFFIX, NULL);
    struct stat st;
    int err = 0;
    int fd = open_in_dir(dir, file, &err);

    if (fd < 0) {
        open_error(error, dir, name, err);
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        template_error(error, name, "%s/%s is not a regular file", dir, file);
        return -1;
    }
    return fd;
}

static MvmCpuTemplate *load_file(const char *dir, const char *name, GError **error)
{
    g_autoptr(GError) local = NULL;
    MvmCpuTemplate *tmpl;
    int fd = open_template_file(dir, name, error);

    if (fd < 0)
        return NULL;
    tmpl = mvm_cpu_template_new_from_fd(name, fd, &local);
    close(fd);
    if (!tmpl) {
        /* lib's message names the template already; this says which file it came from. */
        g_autofree char *what = g_strdup_printf("%s/%s%s", dir, name, TEMPLATE_SUFFIX);

        g_propagate_error(error, mvmd_error_from_error(local, what));
    }
    return tmpl;
}

MvmCpuTemplate *mvmd_cpu_template_load(const char *dir, const char *name, GError **error)
{
    g_autoptr(GError) local = NULL;
    MvmCpuTemplate *tmpl;

    if (!mvmd_cpu_template_name_check(name, error))
        return NULL;
    if (!is_builtin(name))
        return load_file(dir, name, error);
    tmpl = mvm_cpu_template_new_builtin(name, &local);
    if (!tmpl)
        g_propagate_error(error, mvmd_error_from_error(local, "CPU template"));
    return tmpl;
}

/* Only the one key: a misspelt one would silently leave the default in force. */
static gboolean check_template_keys(GKeyFile *file, const char *path, GError **error)
{
    g_auto(GStrv) keys = g_key_file_get_keys(file, MVMD_CONFIG_GROUP_CPU_TEMPLATES, NULL, NULL);

    for (char **key = keys; key && *key; key++) {
        if (!g_str_equal(*key, DIRECTORY_KEY)) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND,
                        "%s: [%s] %s: unknown key (the key is %s)", path,
                        MVMD_CONFIG_GROUP_CPU_TEMPLATES, *key, DIRECTORY_KEY);
            return FALSE;
        }
    }
    return TRUE;
}

char *mvmd_cpu_template_dir_from_config(const char *path, gboolean must_exist, GError **error)
{
    g_autoptr(GKeyFile) file = mvmd_config_file_load(path, must_exist, error);
    g_autofree char *value = NULL;

    if (!file || !check_template_keys(file, path, error))
        return NULL;
    if (!g_key_file_has_key(file, MVMD_CONFIG_GROUP_CPU_TEMPLATES, DIRECTORY_KEY, NULL))
        return g_strdup(MVMD_CPU_TEMPLATE_DIR);
    /* Not UTF-8 is an error here, not a silent default: the path goes into D-Bus replies. */
    value = g_key_file_get_string(file, MVMD_CONFIG_GROUP_CPU_TEMPLATES, DIRECTORY_KEY, error);
    if (!value) {
        g_prefix_error(error, "%s: [%s] %s: ", path, MVMD_CONFIG_GROUP_CPU_TEMPLATES,
                       DIRECTORY_KEY);
        return NULL;
    }
    g_strstrip(value);
    if (!g_path_is_absolute(value)) {
        g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                    "%s: [%s] %s: '%s' is not an absolute path", path,
                    MVMD_CONFIG_GROUP_CPU_TEMPLATES, DIRECTORY_KEY, value);
        return NULL;
    }
    return g_steal_pointer(&value);
}

/* ---- GetCPUConfig ---------------------------------------------------------------------- */

static GVariant *cpuid_to_variant(const GArray *cpuid)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a(uuuuuuu)"));
    for (guint i = 0; cpuid && i < cpuid->len; i++) {
        const MvmCpuidEntry *e = &g_array_index(cpuid, MvmCpuidEntry, i);

        g_variant_builder_add(&b, "(uuuuuuu)", e->function, e->index, e->flags, e->eax, e->ebx,
                              e->ecx, e->edx);
    }
    return g_variant_builder_end(&b);
}

static GVariant *msrs_to_variant(const GArray *msrs)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE("a(ut)"));
    for (guint i = 0; msrs && i < msrs->len; i++) {
        const MvmMsrEntry *m = &g_array_index(msrs, MvmMsrEntry, i);

        g_variant_builder_add(&b, "(ut)", m->index, (guint64)m->value);
    }
    return g_variant_builder_end(&b);
}

static GVariant *vcpu_to_variant(const MvmVcpuCpuConfig *vcpu)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "index", g_variant_new_uint32(vcpu->index));
    g_variant_builder_add(&b, "{sv}", "cpuid", cpuid_to_variant(vcpu->cpuid));
    g_variant_builder_add(&b, "{sv}", "msrs", msrs_to_variant(vcpu->msrs));
    return g_variant_builder_end(&b);
}

/* The feature names of vCPU 0's CPUID: what the guest is told it has. */
static GVariant *features_to_variant(const MvmCpuConfig *config)
{
    const MvmVcpuCpuConfig *vcpu0 =
        config->vcpus && config->vcpus->len ? config->vcpus->pdata[0] : NULL;
    g_auto(GStrv) names = NULL;

    if (vcpu0 && vcpu0->cpuid)
        names =
            mvm_cpuid_feature_names((const MvmCpuidEntry *)vcpu0->cpuid->data, vcpu0->cpuid->len);
    return g_variant_new_strv((const char *const *)names, names ? -1 : 0);
}

GVariant *mvmd_cpu_config_to_variant(const MvmCpuConfig *config)
{
    GVariantBuilder b, vcpus;

    g_variant_builder_init(&vcpus, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; config->vcpus && i < config->vcpus->len; i++)
        g_variant_builder_add_value(&vcpus, vcpu_to_variant(config->vcpus->pdata[i]));
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(
        &b, "{sv}", "cpu-template",
        g_variant_new_string(config->cpu_template ? config->cpu_template : MVM_CPU_TEMPLATE_HOST));
    g_variant_builder_add(&b, "{sv}", "tsc-khz", g_variant_new_uint32(config->tsc_khz));
    g_variant_builder_add(&b, "{sv}", "tsc-scaling", g_variant_new_boolean(config->tsc_scaling));
    g_variant_builder_add(&b, "{sv}", "features", features_to_variant(config));
    g_variant_builder_add(&b, "{sv}", "vcpus", g_variant_builder_end(&vcpus));
    return g_variant_builder_end(&b);
}
