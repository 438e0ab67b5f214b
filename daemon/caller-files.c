/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "caller-files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "errors.h"
#include "fd-closer.h"

#define MOUNTINFO  "/proc/self/mountinfo"
#define STATE_KEY  "state-fd"
#define MEMORY_KEY "memory-fd"

static gboolean refuse_as(GError **error, const char *label, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* @label: what the caller passed, as the error names it ("option 'state-fd'", "argument 'fd'"). */
static gboolean refuse_valist(GError **error, const char *label, const char *fmt, va_list ap)
    G_GNUC_PRINTF(3, 0);

static gboolean refuse_valist(GError **error, const char *label, const char *fmt, va_list ap)
{
    GError *local = g_error_new_valist(MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, fmt, ap);

    g_prefix_error(&local, "%s: ", label);
    g_propagate_error(error, local);
    return FALSE;
}

static gboolean refuse_as(GError **error, const char *label, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    refuse_valist(error, label, fmt, ap);
    va_end(ap);
    return FALSE;
}

static gboolean refuse(GError **error, const char *key, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* An option's descriptor: "option 'KEY': ..." */
static gboolean refuse(GError **error, const char *key, const char *fmt, ...)
{
    g_autofree char *label = g_strdup_printf("option '%s'", key);
    va_list ap;

    va_start(ap, fmt);
    refuse_valist(error, label, fmt, ap);
    va_end(ap);
    return FALSE;
}

static int take_fd(GVariant *value, GUnixFDList *fd_list, const char *key, GError **error)
{
    int fd = mvmd_fd_list_dup(fd_list, value, error);

    if (fd < 0)
        g_prefix_error(error, "option '%s': ", key);
    return fd;
}

/*
 * Where caller files may live: file systems that only keep the bytes written to them. A write
 * to a file of proc, sysfs, cgroupfs, debugfs, configfs and the like is a request to the
 * kernel, judged by the capabilities of the writer, which would be root's; a FUSE, NFS or CIFS
 * file answers through a server that may never answer. (Block devices given as disks are
 * device nodes, not files on a file system: config-devices.c lets those through.)
 */
static const char *const local_fstypes[] = {
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs",
};

#define LOCAL_FSTYPES_TEXT "ext2, ext3, ext4, xfs, btrfs, f2fs or tmpfs"

gboolean mvmd_fstype_is_local(const char *fstype)
{
    for (guint i = 0; i < G_N_ELEMENTS(local_fstypes); i++)
        if (g_str_equal(fstype, local_fstypes[i]))
            return TRUE;
    return FALSE;
}

/* fuse (and fuseblk, fuse.sshfs…): the caller's own server answers every read and write. */
static gboolean fstype_is_fuse(const char *fstype)
{
    return g_str_has_prefix(fstype, "fuse");
}

/* The file system type of one mountinfo line if it mounts device @major:@minor, else NULL. */
static char *mountinfo_line_fstype(const char *line, guint major, guint minor)
{
    g_auto(GStrv) fields = g_strsplit(line, " ", 4);
    const char *sep = strstr(line, " - ");
    guint64 maj, min;
    char *end;

    if (g_strv_length(fields) < 4 || !sep)
        return NULL;
    maj = g_ascii_strtoull(fields[2], &end, 10);
    if (*end != ':')
        return NULL;
    min = g_ascii_strtoull(end + 1, &end, 10);
    if (*end != '\0' || maj != major || min != minor)
        return NULL;
    return g_strndup(sep + 3, strcspn(sep + 3, " "));
}

char *mvmd_mountinfo_fstype(const char *mountinfo, guint major, guint minor)
{
    g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);

    for (char **line = lines; *line; line++) {
        char *fstype = mountinfo_line_fstype(*line, major, minor);

        if (fstype)
            return fstype;
    }
    return NULL;
}

/*
 * The type of the file system holding the file of @stx in @fstype, NULL when no mount of this
 * namespace has its device. By device number, not by mount ID: the daemon usually runs in a
 * mount namespace of its own (the unit's PrivateMounts=, PrivateTmp=) where every mount, the
 * same file systems as the caller's, has another ID; the device number is the file system's
 * own. Reading /proc/self/mountinfo never waits on a file system's server, but takes a
 * descriptor: a daemon out of them cannot tell (FALSE, NoResources), and that is no "not
 * mounted", which would let a file on FUSE through an unstrict check.
 */
static gboolean file_fstype(const struct statx *stx, char **fstype, GError **error)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;

    *fstype = NULL;
    if (!g_file_get_contents(MOUNTINFO, &text, NULL, &local)) {
        g_propagate_error(error,
                          mvmd_error_from_error(local, "cannot tell the file's file system"));
        return FALSE;
    }
    *fstype = mvmd_mountinfo_fstype(text, stx->stx_dev_major, stx->stx_dev_minor);
    return TRUE;
}

static gboolean not_usable(GError **error, const char *what)
{
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "%s", what);
    return FALSE;
}

/*
 * A device no mount of ours shows (a btrfs subvolume not mounted on its own, a memfd, a mount
 * the caller's namespace has and ours has not) is refused when strict: what it is cannot be
 * told without asking it.
 */
gboolean mvmd_caller_file_system_check(const struct statx *stx, gboolean strict, GError **error)
{
    g_autofree char *fstype = NULL;

    if (!file_fstype(stx, &fstype, error))
        return FALSE;
    if (!fstype)
        return !strict ||
               not_usable(error, "the file is on a file system that microvmd does not see "
                                 "mounted (not mounted in its mount namespace, or not mounted "
                                 "at all, as a memfd); use a file on " LOCAL_FSTYPES_TEXT);
    if (fstype_is_fuse(fstype)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "the file is on a FUSE file system (%s); use a local one", fstype);
        return FALSE;
    }
    if (strict && !mvmd_fstype_is_local(fstype)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "the file is on a %s file system; microvmd reads and writes only files "
                    "on " LOCAL_FSTYPES_TEXT,
                    fstype);
        return FALSE;
    }
    return TRUE;
}

gboolean mvmd_caller_fd_statx(int fd, gboolean strict, struct statx *stx, GError **error)
{
    const unsigned int mask = STATX_TYPE | STATX_NLINK | STATX_UID | STATX_INO | STATX_SIZE;

    /* DONT_SYNC: the attributes the kernel has, without asking a FUSE or NFS server. */
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, mask, stx) < 0)
        return mvmd_set_errno_error(error, MVMD_ERROR_INVALID_ARGUMENT,
                                    "cannot look at the descriptor");
    return mvmd_caller_file_system_check(stx, strict, error);
}

static gboolean check_access_mode(int fd, const char *label, MvmdCallerFileUse use, GError **error)
{
    int flags = fcntl(fd, F_GETFL);
    int mode = flags & O_ACCMODE;

    if (flags < 0 || (flags & O_PATH))
        return refuse_as(error, label,
                         "the descriptor is not open for reading or writing (O_PATH?)");
    if (use == MVMD_CALLER_FILE_READ && mode != O_RDONLY && mode != O_RDWR)
        return refuse_as(error, label, "the file is not open for reading");
    if (use == MVMD_CALLER_FILE_WRITE && mode != O_WRONLY && mode != O_RDWR)
        return refuse_as(error, label,
                         "the file is not open for writing (open it O_WRONLY or O_RDWR)");
    if (use == MVMD_CALLER_FILE_WRITE && (flags & O_APPEND))
        return refuse_as(error, label,
                         "the file is open with O_APPEND; it is written at fixed offsets");
    return TRUE;
}

/* A new file of the caller's: a second link would let the write land in another file too. */
static gboolean check_own_file(const struct statx *stx, const char *label, uid_t owner,
                               GError **error)
{
    if (stx->stx_nlink != 1)
        return refuse_as(error, label,
                         "the file has %u links; pass a file of its own (one link), as created "
                         "with O_CREAT|O_EXCL",
                         stx->stx_nlink);
    if (owner != (uid_t)-1 && stx->stx_uid != owner)
        return refuse_as(error, label, "the file belongs to uid %u, not to the caller (uid %u)",
                         stx->stx_uid, (guint)owner);
    return TRUE;
}

static gboolean check_one(int fd, const char *label, MvmdCallerFileUse use, uid_t owner,
                          struct statx *stx, GError **error)
{
    if (!mvmd_caller_fd_statx(fd, TRUE, stx, error)) {
        g_prefix_error(error, "%s: ", label);
        return FALSE;
    }
    if (!S_ISREG(stx->stx_mode))
        return refuse_as(error, label,
                         "the descriptor is not a regular file (a FIFO, socket, device or "
                         "directory is never %s)",
                         use == MVMD_CALLER_FILE_WRITE ? "written" : "read");
    if (!check_access_mode(fd, label, use, error))
        return FALSE;
    return use == MVMD_CALLER_FILE_READ || check_own_file(stx, label, owner, error);
}

/* @state_key and @memory_key: what the errors call the two (the options, or a layer's). */
static gboolean check_pair(int state_fd, int memory_fd, MvmdCallerFileUse use, uid_t owner,
                           const char *state_key, const char *memory_key, GError **error)
{
    g_autofree char *state_label = g_strdup_printf("option '%s'", state_key);
    g_autofree char *memory_label = g_strdup_printf("option '%s'", memory_key);
    struct statx state, memory;

    if (!check_one(state_fd, state_label, use, owner, &state, error) ||
        !check_one(memory_fd, memory_label, use, owner, &memory, error))
        return FALSE;
    if (state.stx_dev_major == memory.stx_dev_major &&
        state.stx_dev_minor == memory.stx_dev_minor && state.stx_ino == memory.stx_ino)
        return refuse(error, memory_key, "the same file as '%s'; pass two different files",
                      state_key);
    return TRUE;
}

gboolean mvmd_caller_files_parse(GVariant *options, GUnixFDList *fd_list, MvmdCallerFileUse use,
                                 uid_t owner, int *state_fd, int *memory_fd, GError **error)
{
    g_autoptr(GVariant) statev = g_variant_lookup_value(options, STATE_KEY, G_VARIANT_TYPE_HANDLE);
    g_autoptr(GVariant) memoryv =
        g_variant_lookup_value(options, MEMORY_KEY, G_VARIANT_TYPE_HANDLE);
    int state = -1, memory = -1;

    *state_fd = *memory_fd = -1;
    if (!statev && !memoryv)
        return TRUE;
    if (!statev || !memoryv)
        return refuse(error, statev ? MEMORY_KEY : STATE_KEY, "missing; give both '%s' and '%s'",
                      STATE_KEY, MEMORY_KEY);
    state = take_fd(statev, fd_list, STATE_KEY, error);
    memory = state < 0 ? -1 : take_fd(memoryv, fd_list, MEMORY_KEY, error);
    if (memory < 0 || !check_pair(state, memory, use, owner, STATE_KEY, MEMORY_KEY, error)) {
        mvmd_close_later(state);
        mvmd_close_later(memory);
        return FALSE;
    }
    *state_fd = state;
    *memory_fd = memory;
    return TRUE;
}

void mvmd_snapshot_layers_free(MvmSnapshotFiles *layers, guint n)
{
    for (guint i = 0; layers && i < n; i++) {
        mvmd_close_later(layers[i].state_fd);
        mvmd_close_later(layers[i].memory_fd);
    }
    g_free(layers);
}

/* Entry @i of `layers`: a readable pair, as `state-fd` and `memory-fd` are. */
static gboolean take_layer(GVariant *entry, guint i, GUnixFDList *fd_list, MvmSnapshotFiles *layer,
                           GError **error)
{
    g_autofree char *state_key = g_strdup_printf("layers[%u].state", i);
    g_autofree char *memory_key = g_strdup_printf("layers[%u].memory", i);
    g_autoptr(GVariant) statev = g_variant_get_child_value(entry, 0);
    g_autoptr(GVariant) memoryv = g_variant_get_child_value(entry, 1);

    layer->state_fd = take_fd(statev, fd_list, state_key, error);
    if (layer->state_fd < 0)
        return FALSE;
    layer->memory_fd = take_fd(memoryv, fd_list, memory_key, error);
    if (layer->memory_fd < 0)
        return FALSE;
    return check_pair(layer->state_fd, layer->memory_fd, MVMD_CALLER_FILE_READ, (uid_t)-1,
                      state_key, memory_key, error);
}

gboolean mvmd_caller_layers_parse(GVariant *options, GUnixFDList *fd_list, guint max,
                                  MvmSnapshotFiles **layers, guint *n_layers, GError **error)
{
    g_autoptr(GVariant) value = g_variant_lookup_value(options, "layers", G_VARIANT_TYPE("a(hh)"));
    gsize n = value ? g_variant_n_children(value) : 0;
    MvmSnapshotFiles *taken;

    *layers = NULL;
    *n_layers = 0;
    if (n == 0)
        return TRUE;
    if (n > max)
        return refuse(error, "layers",
                      "%" G_GSIZE_FORMAT " snapshots; a chain has at most %u beneath the one "
                      "restored",
                      n, max);
    taken = g_new(MvmSnapshotFiles, n);
    for (gsize i = 0; i < n; i++)
        taken[i].state_fd = taken[i].memory_fd = -1;
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) entry = g_variant_get_child_value(value, i);

        if (!take_layer(entry, (guint)i, fd_list, &taken[i], error)) {
            mvmd_snapshot_layers_free(taken, (guint)n);
            return FALSE;
        }
    }
    *layers = taken;
    *n_layers = (guint)n;
    return TRUE;
}

gboolean mvmd_caller_fd_check(int fd, const char *label, MvmdCallerFileUse use, uid_t owner,
                              guint64 max_size, GError **error)
{
    struct statx stx;

    if (!check_one(fd, label, use, owner, &stx, error))
        return FALSE;
    /* A bound on what the daemon reads into memory: the reader checks the exact length. */
    if (use == MVMD_CALLER_FILE_READ && max_size > 0 && stx.stx_size > max_size)
        return refuse_as(error, label,
                         "the file has %" G_GUINT64_FORMAT
                         " bytes, more than the %" G_GUINT64_FORMAT " such a file can have",
                         (guint64)stx.stx_size, max_size);
    return TRUE;
}

gboolean mvmd_caller_file_parse(GVariant *options, GUnixFDList *fd_list, const char *key,
                                MvmdCallerFileUse use, uid_t owner, guint64 max_size, int *fd,
                                GError **error)
{
    g_autoptr(GVariant) value = g_variant_lookup_value(options, key, G_VARIANT_TYPE_HANDLE);
    g_autofree char *label = g_strdup_printf("option '%s'", key);
    int taken;

    *fd = -1;
    if (!value)
        return TRUE;
    taken = take_fd(value, fd_list, key, error);
    if (taken < 0)
        return FALSE;
    if (!mvmd_caller_fd_check(taken, label, use, owner, max_size, error)) {
        mvmd_close_later(taken);
        return FALSE;
    }
    *fd = taken;
    return TRUE;
}
