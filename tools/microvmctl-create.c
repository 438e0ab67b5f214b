/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl create: the command line becomes CreateVM's a{sv} configuration. The kernel, the
 * initrd and the disks are opened here and passed as descriptors (kernel-fd, initrd-fd, a
 * disk's fd), so the daemon
 * never opens a path on a user's behalf and an unprivileged user needs only polkit's yes. A
 * persistent VM must be started again after a daemon restart, and a descriptor cannot be
 * stored: with --persist the paths are sent instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "microvmctl.h"

#define MAX_MEMORY_MIB (G_GUINT64_CONSTANT(1) << 20)

typedef struct {
    char *kernel;
    char *initrd;
    char *cmdline;
    int vcpus;
    char *memory;
    char **disks;
    char **taps;
    char *vsock;
    char *on_reboot;
    char *cpu_template;
    char **sets;
    gboolean persist;
    gboolean autostart;
    gboolean start;
    gboolean rng;
} CreateOptions;

static void create_options_clear(CreateOptions *o)
{
    g_free(o->kernel);
    g_free(o->initrd);
    g_free(o->cmdline);
    g_free(o->memory);
    g_strfreev(o->disks);
    g_strfreev(o->taps);
    g_free(o->vsock);
    g_free(o->on_reboot);
    g_free(o->cpu_template);
    g_strfreev(o->sets);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CreateOptions, create_options_clear)

static gboolean invalid(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static gboolean invalid(GError **error, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    if (error)
        *error = g_error_new_valist(G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, format, args);
    va_end(args);
    return FALSE;
}

/* "256", "256M", "256MiB", "2G", "2GiB" → MiB. */
static gboolean parse_memory(const char *text, guint64 *mib, GError **error)
{
    g_autofree char *lower = g_ascii_strdown(text, -1);
    char *end = NULL;
    guint64 value;
    guint64 unit = 1;

    errno = 0;
    value = g_ascii_strtoull(lower, &end, 10);
    if (end == lower || errno != 0)
        return invalid(error, _("--memory: “%s” is not a size"), text);
    if (g_str_equal(end, "g") || g_str_equal(end, "gib"))
        unit = 1024;
    else if (!g_str_equal(end, "") && !g_str_equal(end, "m") && !g_str_equal(end, "mib"))
        return invalid(error, _("--memory: “%s” is not a size in MiB or GiB"), text);
    if (value == 0 || value > MAX_MEMORY_MIB / unit)
        return invalid(error, _("--memory: “%s” is out of range"), text);
    *mib = value * unit;
    return TRUE;
}

/* Opens a file for the daemon (a regular file, or for a disk also a block device) and adds it
 * to @fds; returns its handle index. */
static gint open_for_daemon(const char *option, const char *path, int flags, gboolean block_ok,
                            GUnixFDList *fds, GError **error)
{
    int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    gint index;

    if (fd < 0) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("%s: cannot open “%s”: %s"), option,
                    path, g_strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || (block_ok && S_ISBLK(st.st_mode)))) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("%s: “%s” is not a regular file"),
                    option, path);
        close(fd);
        return -1;
    }
    index = g_unix_fd_list_append(fds, fd, error);
    close(fd);
    return index;
}

/* A file argument: a descriptor, or with --persist an absolute path. */
static gboolean add_file(GVariantDict *config, const char *key, const char *path, gboolean by_path,
                         GUnixFDList *fds, GError **error)
{
    g_autofree char *fd_key = g_strconcat(key, "-fd", NULL);
    g_autofree char *option = g_strconcat("--", key, NULL);
    gint index;

    if (by_path) {
        g_autofree char *absolute = g_canonicalize_filename(path, NULL);

        g_variant_dict_insert(config, key, "s", absolute);
        return TRUE;
    }
    index = open_for_daemon(option, path, O_RDONLY, FALSE, fds, error);
    if (index < 0)
        return FALSE;
    g_variant_dict_insert(config, fd_key, "h", index);
    return TRUE;
}

/*
 * The options after a --disk's PATH or a --tap's NAME (@option, with its @usage): rate limits
 * named by @limits (KEY=LIMIT), @value_keys (KEY=TEXT, a string), and ro or rw when @ro is
 * given.
 */
static gboolean add_device_options(GVariantDict *device, const char *option, const char *usage,
                                   const char *arg, char **options, const char *const *limits,
                                   const char *const *value_keys, gboolean *ro, GError **error)
{
    for (char **o = options; *o; o++) {
        g_auto(GStrv) key_value = g_strsplit(*o, "=", 2);

        if (ro != NULL && (g_str_equal(*o, "ro") || g_str_equal(*o, "rw"))) {
            *ro = g_str_equal(*o, "ro");
        } else if (key_value[0] != NULL && key_value[1] != NULL &&
                   g_strv_contains(limits, key_value[0])) {
            g_autofree char *what = g_strdup_printf("%s %s", option, key_value[0]);
            GVariant *bucket = mctl_parse_rate_limit(what, key_value[1], error);
            if (!bucket)
                return FALSE;
            g_variant_dict_insert_value(device, key_value[0], bucket);
        } else if (key_value[0] != NULL && key_value[1] != NULL && *key_value[1] &&
                   g_strv_contains(value_keys, key_value[0])) {
            g_variant_dict_insert(device, key_value[0], "s", key_value[1]);
        } else {
            return invalid(error, _("%s: “%s” is not %s"), option, arg, usage);
        }
    }
    return TRUE;
}

/*
 * --disk PATH[,ro][,bandwidth=LIMIT][,ops=LIMIT] → {'fd': <h>, 'read-only': <b>, …}, or with
 * --persist {'path': <'/abs'>, …}
 */
static gboolean add_disk(GVariantBuilder *list, const char *arg, gboolean by_path, GUnixFDList *fds,
                         GError **error)
{
    g_auto(GStrv) parts = g_strsplit(arg, ",", -1);
    g_auto(GVariantDict) disk = G_VARIANT_DICT_INIT(NULL);
    gboolean ro;
    gint index;

    static const char *const limits[] = {"bandwidth", "ops", NULL};
    static const char *const none[] = {NULL};
    const char *usage = "PATH[,ro][,bandwidth=LIMIT][,ops=LIMIT]";

    ro = FALSE;
    if (!parts[0] || !*parts[0])
        return invalid(error, _("%s: “%s” is not %s"), "--disk", arg, usage);
    if (!add_device_options(&disk, "--disk", usage, arg, parts + 1, limits, none, &ro, error))
        return FALSE;
    if (by_path) {
        g_autofree char *path = g_canonicalize_filename(parts[0], NULL);

        g_variant_dict_insert(&disk, "path", "s", path);
    } else {
        index = open_for_daemon("--disk", parts[0], ro ? O_RDONLY : O_RDWR, TRUE, fds, error);
        if (index < 0)
            return FALSE;
        g_variant_dict_insert(&disk, "fd", "h", index);
    }
    g_variant_dict_insert(&disk, "read-only", "b", ro);
    g_variant_builder_add_value(list, g_variant_dict_end(&disk));
    return TRUE;
}

static gboolean add_disks(GVariantDict *config, char **disks, gboolean by_path, GUnixFDList *fds,
                          GError **error)
{
    GVariantBuilder list;

    if (!disks)
        return TRUE;
    g_variant_builder_init(&list, G_VARIANT_TYPE("aa{sv}"));
    for (char **d = disks; *d; d++) {
        if (!add_disk(&list, *d, by_path, fds, error)) {
            g_variant_builder_clear(&list);
            return FALSE;
        }
    }
    g_variant_dict_insert_value(config, "disks", g_variant_builder_end(&list));
    return TRUE;
}

/* --tap NAME[,mac=MAC][,rx-bandwidth=LIMIT]… → {'tap': <'NAME'>, 'mac': <'MAC'>, …} */
static gboolean add_tap(GVariantBuilder *list, const char *arg, GError **error)
{
    static const char *const limits[] = {"rx-bandwidth", "rx-ops", "tx-bandwidth", "tx-ops", NULL};
    static const char *const values[] = {"mac", NULL};
    const char *usage = "NAME[,mac=MAC][,rx-bandwidth=LIMIT][,rx-ops=LIMIT][,tx-bandwidth=LIMIT]"
                        "[,tx-ops=LIMIT]";
    g_auto(GStrv) parts = g_strsplit(arg, ",", -1);
    g_auto(GVariantDict) nic = G_VARIANT_DICT_INIT(NULL);

    if (!parts[0] || !*parts[0])
        return invalid(error, _("%s: “%s” is not %s"), "--tap", arg, usage);
    g_variant_dict_insert(&nic, "tap", "s", parts[0]);
    if (!add_device_options(&nic, "--tap", usage, arg, parts + 1, limits, values, NULL, error))
        return FALSE;
    g_variant_builder_add_value(list, g_variant_dict_end(&nic));
    return TRUE;
}

static gboolean add_taps(GVariantDict *config, char **taps, GError **error)
{
    GVariantBuilder list;

    if (!taps)
        return TRUE;
    g_variant_builder_init(&list, G_VARIANT_TYPE("aa{sv}"));
    for (char **t = taps; *t; t++) {
        if (!add_tap(&list, *t, error)) {
            g_variant_builder_clear(&list);
            return FALSE;
        }
    }
    g_variant_dict_insert_value(config, "network", g_variant_builder_end(&list));
    return TRUE;
}

/* --vsock CID,PATH → {'cid': <uint32 CID>, 'uds-path': <'/abs'>} */
static gboolean add_vsock(GVariantDict *config, const char *vsock, GError **error)
{
    g_auto(GStrv) parts = NULL;
    g_autofree char *path = NULL;
    guint64 cid;
    GVariantDict dict;

    if (!vsock)
        return TRUE;
    parts = g_strsplit(vsock, ",", 2);
    /* CIDs 0-2 are the hypervisor, local and host addresses (vsock(7)). */
    if (!parts[1] || !*parts[1] ||
        !g_ascii_string_to_unsigned(parts[0], 10, 3, G_MAXUINT32 - 1, &cid, NULL))
        return invalid(error, _("--vsock: “%s” is not CID,PATH with a CID from 3"), vsock);
    path = g_canonicalize_filename(parts[1], NULL);
    g_variant_dict_init(&dict, NULL);
    g_variant_dict_insert(&dict, "cid", "u", (guint32)cid);
    g_variant_dict_insert(&dict, "uds-path", "s", path);
    g_variant_dict_insert_value(config, "vsock", g_variant_dict_end(&dict));
    return TRUE;
}

/* --set KEY=VALUE with VALUE in GVariant text format: any key, for keys newer than this tool. */
static gboolean add_sets(GVariantDict *config, char **sets, GError **error)
{
    for (char **s = sets; s && *s; s++) {
        const char *eq = strchr(*s, '=');
        g_autofree char *key = eq ? g_strndup(*s, eq - *s) : NULL;
        g_autoptr(GError) local = NULL;
        g_autoptr(GVariant) value = NULL;

        if (!eq || eq == *s)
            return invalid(error, _("--set: “%s” is not KEY=VALUE"), *s);
        value = g_variant_parse(NULL, eq + 1, NULL, NULL, &local);
        if (!value)
            return invalid(error, _("--set %s: %s"), key, local->message);
        g_variant_dict_insert_value(config, key, value);
    }
    return TRUE;
}

static gboolean check_options(CreateOptions *o, GError **error)
{
    if (!o->kernel)
        return invalid(error, "%s", _("--kernel is required"));
    if (o->vcpus < 0 || o->vcpus > 1024)
        return invalid(error, _("--vcpus: %d is out of range"), o->vcpus);
    if (o->on_reboot && !g_str_equal(o->on_reboot, "restart") && !g_str_equal(o->on_reboot, "stop"))
        return invalid(error, "%s", _("--on-reboot: give “restart” or “stop”"));
    return TRUE;
}

static GVariant *build_config(CreateOptions *o, GUnixFDList *fds, GError **error)
{
    g_auto(GVariantDict) config = G_VARIANT_DICT_INIT(NULL);
    guint64 mib = 0;

    if (!check_options(o, error))
        return NULL;
    if (o->memory) {
        if (!parse_memory(o->memory, &mib, error))
            return NULL;
        g_variant_dict_insert(&config, "memory-mib", "t", mib);
    }
    /* Open files only once the plain values are known to be good. */
    if (!add_file(&config, "kernel", o->kernel, o->persist, fds, error) ||
        (o->initrd && !add_file(&config, "initrd", o->initrd, o->persist, fds, error)) ||
        !add_disks(&config, o->disks, o->persist, fds, error) ||
        !add_taps(&config, o->taps, error) || !add_vsock(&config, o->vsock, error))
        return NULL;
    if (o->vcpus)
        g_variant_dict_insert(&config, "vcpus", "u", (guint32)o->vcpus);
    if (o->cmdline)
        g_variant_dict_insert(&config, "cmdline", "s", o->cmdline);
    if (o->on_reboot)
        g_variant_dict_insert(&config, "on-reboot", "s", o->on_reboot);
    /* The name as given: only the daemon knows its template directory. */
    if (o->cpu_template)
        g_variant_dict_insert(&config, "cpu-template", "s", o->cpu_template);
    if (o->persist)
        g_variant_dict_insert(&config, "persist", "b", TRUE);
    if (o->autostart)
        g_variant_dict_insert(&config, "autostart", "b", TRUE);
    if (o->rng)
        g_variant_dict_insert(&config, "rng", "b", TRUE);
    /* Last, so that --set has the final word. */
    if (!add_sets(&config, o->sets, error))
        return NULL;
    return g_variant_dict_end(&config);
}

static int create_vm(Mctl *ctl, const char *name, CreateOptions *o)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(MvmdVm) vm = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autofree char *progress = NULL;
    GVariant *config = build_config(o, fds, &error);
    const char *path;

    if (!config) {
        if (error->domain == G_OPTION_ERROR)
            return mctl_usage_error("%s", error->message);
        return mctl_fail(error, name);
    }
    manager = mctl_manager(ctl, &error);
    if (!manager) {
        g_variant_unref(g_variant_ref_sink(config));
        return mctl_fail(error, NULL);
    }
    reply = mctl_call(ctl, G_DBUS_PROXY(manager), "CreateVM",
                      g_variant_new("(s@a{sv})", name, config), fds, -1, NULL, &error);
    if (!reply)
        return mctl_fail(error, name);
    if (!o->start)
        return MCTL_EXIT_OK;
    g_variant_get(reply, "(&o)", &path);
    vm = mctl_vm_by_path(ctl, path, &error);
    progress = g_strdup_printf("%s %s", _("Starting"), name);
    g_clear_pointer(&reply, g_variant_unref);
    if (vm)
        reply =
            mctl_call(ctl, G_DBUS_PROXY(vm), "Start", NULL, NULL, 5 * 60 * 1000, progress, &error);
    if (!reply)
        return mctl_fail(error, name);
    return MCTL_EXIT_OK;
}

int mctl_cmd_create(Mctl *ctl, int argc, char **argv)
{
    g_auto(CreateOptions) o = {0};
    const GOptionEntry entries[] = {
        {"kernel", 'k', 0, G_OPTION_ARG_FILENAME, &o.kernel,
         N_("The kernel: a bzImage or an ELF vmlinux (required)"), N_("PATH")},
        {"initrd", 'i', 0, G_OPTION_ARG_FILENAME, &o.initrd, N_("The initial RAM disk"),
         N_("PATH")},
        {"cmdline", 'c', 0, G_OPTION_ARG_STRING, &o.cmdline, N_("The kernel command line"),
         N_("TEXT")},
        {"vcpus", 'p', 0, G_OPTION_ARG_INT, &o.vcpus, N_("Number of vCPUs (default 1)"), N_("N")},
        {"memory", 'm', 0, G_OPTION_ARG_STRING, &o.memory,
         N_("Guest RAM in MiB, or with a suffix M or G (default 128)"), N_("SIZE")},
        {"disk", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &o.disks,
         N_("Add a virtio disk backed by a raw image; “,ro” makes it read-only; bandwidth= "
            "and ops= limit it (LIMIT as in set)"),
         N_("PATH[,ro][,KEY=LIMIT]")},
        {"tap", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.taps,
         N_("Add a virtio network card on the tap device NAME; rx-bandwidth=, rx-ops=, "
            "tx-bandwidth= and tx-ops= limit it (LIMIT as in set)"),
         N_("NAME[,mac=MAC][,KEY=LIMIT]")},
        {"vsock", 0, 0, G_OPTION_ARG_STRING, &o.vsock,
         N_("Add a vsock device with the guest address CID, on unix sockets at PATH"),
         N_("CID,PATH")},
        {"rng", 0, 0, G_OPTION_ARG_NONE, &o.rng, N_("Add a virtio entropy device"), NULL},
        {"on-reboot", 0, 0, G_OPTION_ARG_STRING, &o.on_reboot,
         N_("What a guest reset does: “restart” (default) or “stop”"), N_("ACTION")},
        {"cpu-template", 0, 0, G_OPTION_ARG_STRING, &o.cpu_template,
         N_("The CPU the guest is shown: “host” (default), “x86-64-v2”, “x86-64-v3” or a "
            "custom template of the daemon's"),
         N_("NAME")},
        {"persist", 0, 0, G_OPTION_ARG_NONE, &o.persist,
         N_("Store the definition so it survives a restart of microvmd (passes paths, not "
            "files)"),
         NULL},
        {"autostart", 0, 0, G_OPTION_ARG_NONE, &o.autostart,
         N_("Start the VM when microvmd starts (needs --persist)"), NULL},
        {"start", 0, 0, G_OPTION_ARG_NONE, &o.start, N_("Start the VM once it is defined"), NULL},
        {"set", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.sets,
         N_("Set a configuration key to a GVariant value, e.g. debug-exit=true"), N_("KEY=VALUE")},
        {NULL},
    };

    if (!mctl_parse(ctl, entries, _("NAME"), _("Define a new VM called NAME."), &argc, &argv) ||
        !mctl_want_args(argc, 1, "create NAME --kernel PATH [OPTIONS…]"))
        return MCTL_EXIT_USAGE;
    return create_vm(ctl, argv[0], &o);
}
