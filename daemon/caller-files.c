/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "caller-files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "errors.h"

#define MOUNTINFO  "/proc/self/mountinfo"
#define STATE_KEY  "state-fd"
#define MEMORY_KEY "memory-fd"

static gboolean refuse(GError **error, const char *key, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean refuse(GError **error, const char *key, const char *fmt, ...)
{
    va_list ap;
    GError *local;

    va_start(ap, fmt);
    local = g_error_new_valist(MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, fmt, ap);
    va_end(ap);
    g_prefix_error(&local, "option '%s': ", key);
    g_propagate_error(error, local);
    return FALSE;
}

static int take_fd(GVariant *value, GUnixFDList *fd_list, const char *key, GError **error)
{
    gint32 index = g_variant_get_handle(value);
    int fd;

    if (!fd_list || index < 0 || index >= g_unix_fd_list_get_length(fd_list)) {
        refuse(error, key, "handle %d: no such file descriptor in the message", index);
        return -1;
    }
    fd = g_unix_fd_list_get(fd_list, index, NULL);
    if (fd < 0)
        refuse(error, key, "handle %d: cannot duplicate the descriptor", index);
    return fd;
}

/* The type of the file system mounted as @mnt_id ("ext4", "fuse.sshfs"), NULL when not seen. */
static char *mount_fstype(guint64 mnt_id)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    if (!g_file_get_contents(MOUNTINFO, &text, NULL, NULL))
        return NULL;
    lines = g_strsplit(text, "\n", -1);
    for (char **line = lines; *line; line++) {
        const char *sep = strstr(*line, " - ");
        g_auto(GStrv) after = NULL;

        if (!sep || g_ascii_strtoull(*line, NULL, 10) != mnt_id)
            continue;
        after = g_strsplit(sep + 3, " ", 2);
        return g_strdup(after[0]);
    }
    return NULL;
}

static gboolean not_usable(GError **error, const char *what)
{
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "%s", what);
    return FALSE;
}

/* A FUSE server answers every read and write: the caller's own one might never answer. */
static gboolean check_file_system(const struct statx *stx, gboolean strict, GError **error)
{
    g_autofree char *fstype = NULL;

    if (!(stx->stx_mask & STATX_MNT_ID))
        return !strict ||
               not_usable(error, "this kernel does not tell which file system the file is on");
    fstype = mount_fstype(stx->stx_mnt_id);
    if (!fstype)
        return !strict || not_usable(error, "the file is on a file system that microvmd does "
                                            "not see (another mount namespace?); use a file "
                                            "on a local file system");
    if (g_str_equal(fstype, "fuse") || g_str_has_prefix(fstype, "fuse.")) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "the file is on a FUSE file system (%s); use a local one", fstype);
        return FALSE;
    }
    return TRUE;
}

gboolean mvmd_caller_fd_statx(int fd, gboolean strict, struct statx *stx, GError **error)
{
    const unsigned int mask = STATX_TYPE | STATX_NLINK | STATX_UID | STATX_INO | STATX_MNT_ID;

    /* DONT_SYNC: the attributes the kernel has, without asking a FUSE or NFS server. */
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, mask, stx) < 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "cannot look at the descriptor: %s", g_strerror(errno));
        return FALSE;
    }
    return check_file_system(stx, strict, error);
}

static gboolean check_access_mode(int fd, const char *key, MvmdCallerFileUse use, GError **error)
{
    int flags = fcntl(fd, F_GETFL);
    int mode = flags & O_ACCMODE;

    if (flags < 0 || (flags & O_PATH))
        return refuse(error, key, "the descriptor is not open for reading or writing (O_PATH?)");
    if (use == MVMD_CALLER_FILE_READ && mode != O_RDONLY && mode != O_RDWR)
        return refuse(error, key, "the file is not open for reading");
    if (use == MVMD_CALLER_FILE_WRITE && mode != O_WRONLY && mode != O_RDWR)
        return refuse(error, key, "the file is not open for writing (open it O_WRONLY or O_RDWR)");
    if (use == MVMD_CALLER_FILE_WRITE && (flags & O_APPEND))
        return refuse(error, key,
                      "the file is open with O_APPEND; the snapshot is written at "
                      "fixed offsets");
    return TRUE;
}

/* A new file of the caller's: a second link would let the write land in another file too. */
static gboolean check_own_file(const struct statx *stx, const char *key, uid_t owner,
                               GError **error)
{
    if (stx->stx_nlink != 1)
        return refuse(error, key,
                      "the file has %u links; pass a file of its own (one link), as created "
                      "with O_CREAT|O_EXCL",
                      stx->stx_nlink);
    if (owner != (uid_t)-1 && stx->stx_uid != owner)
        return refuse(error, key, "the file belongs to uid %u, not to the caller (uid %u)",
                      stx->stx_uid, (guint)owner);
    return TRUE;
}

static gboolean check_one(int fd, const char *key, MvmdCallerFileUse use, uid_t owner,
                          struct statx *stx, GError **error)
{
    if (!mvmd_caller_fd_statx(fd, TRUE, stx, error)) {
        g_prefix_error(error, "option '%s': ", key);
        return FALSE;
    }
    if (!S_ISREG(stx->stx_mode))
        return refuse(error, key,
                      "the descriptor is not a regular file (a FIFO, socket, device or "
                      "directory is never %s)",
                      use == MVMD_CALLER_FILE_WRITE ? "written" : "read");
    if (!check_access_mode(fd, key, use, error))
        return FALSE;
    return use == MVMD_CALLER_FILE_READ || check_own_file(stx, key, owner, error);
}

static gboolean check_pair(int state_fd, int memory_fd, MvmdCallerFileUse use, uid_t owner,
                           GError **error)
{
    struct statx state, memory;

    if (!check_one(state_fd, STATE_KEY, use, owner, &state, error) ||
        !check_one(memory_fd, MEMORY_KEY, use, owner, &memory, error))
        return FALSE;
    if (state.stx_dev_major == memory.stx_dev_major &&
        state.stx_dev_minor == memory.stx_dev_minor && state.stx_ino == memory.stx_ino)
        return refuse(error, MEMORY_KEY, "the same file as '%s'; pass two different files",
                      STATE_KEY);
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
    if (memory < 0 || !check_pair(state, memory, use, owner, error)) {
        if (state >= 0)
            close(state);
        if (memory >= 0)
            close(memory);
        return FALSE;
    }
    *state_fd = state;
    *memory_fd = memory;
    return TRUE;
}
