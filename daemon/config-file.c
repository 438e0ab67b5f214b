/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config-file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_SIZE_MAX (1024 * 1024)

/*
 * A FIFO would hang the start (or the main loop, on Reload), and a huge or endless file (a
 * character device such as /dev/zero) would be read whole: only a regular file or a character
 * device (/dev/null, for "no configuration"), and at most CONFIG_SIZE_MAX bytes of either.
 * FALSE with G_FILE_ERROR_NOENT when there is no such file.
 */
static gboolean read_config_file(const char *path, char **text, gsize *length, GError **error)
{
    g_autofree char *data = g_malloc(CONFIG_SIZE_MAX + 1);
    struct stat st;
    gsize len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

    if (fd < 0) {
        int err = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err), "%s: %s", path,
                    g_strerror(err));
        return FALSE;
    }
    if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode))) {
        close(fd);
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: not a regular file", path);
        return FALSE;
    }
    for (ssize_t n = 1; n != 0 && len <= CONFIG_SIZE_MAX;) {
        n = read(fd, data + len, CONFIG_SIZE_MAX + 1 - len);
        if (n < 0 && errno != EINTR) {
            int err = errno;
            close(fd);
            g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err), "%s: %s", path,
                        g_strerror(err));
            return FALSE;
        }
        len += n > 0 ? (gsize)n : 0;
    }
    close(fd);
    if (len > CONFIG_SIZE_MAX) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: larger than %d bytes", path,
                    CONFIG_SIZE_MAX);
        return FALSE;
    }
    *text = g_steal_pointer(&data);
    *length = len;
    return TRUE;
}

GKeyFile *mvmd_config_file_load(const char *path, gboolean must_exist, GError **error)
{
    g_autoptr(GKeyFile) file = g_key_file_new();
    g_autoptr(GError) local = NULL;
    g_autofree char *text = NULL;
    gsize length = 0;

    /* Read here rather than by g_key_file_load_from_file(), which refuses /dev/null. */
    if (!read_config_file(path, &text, &length, &local)) {
        if (must_exist || !g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
        return g_steal_pointer(&file);
    }
    if (!g_key_file_load_from_data(file, text, length, G_KEY_FILE_NONE, &local)) {
        g_set_error(error, local->domain, local->code, "%s: %s", path, local->message);
        return NULL;
    }
    return g_steal_pointer(&file);
}
