/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config-file.h"

#include <sys/stat.h>

#include <glib/gstdio.h>

#define CONFIG_SIZE_MAX (1024 * 1024)

/*
 * A FIFO would hang the start (or the main loop, on Reload), and a huge file would be read
 * whole: only a regular file of a sane size, or a character device such as /dev/null.
 */
static gboolean check_config_file(const char *path, GError **error)
{
    GStatBuf st;

    if (g_stat(path, &st) < 0)
        return TRUE; /* as g_file_get_contents() will say */
    if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: not a regular file", path);
        return FALSE;
    }
    if (st.st_size > CONFIG_SIZE_MAX) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: larger than %d bytes", path,
                    CONFIG_SIZE_MAX);
        return FALSE;
    }
    return TRUE;
}

GKeyFile *mvmd_config_file_load(const char *path, gboolean must_exist, GError **error)
{
    g_autoptr(GKeyFile) file = g_key_file_new();
    g_autoptr(GError) local = NULL;
    g_autofree char *text = NULL;
    gsize length = 0;

    if (!check_config_file(path, error))
        return NULL;
    /* Read whole rather than by g_key_file_load_from_file(), which refuses /dev/null. */
    if (!g_file_get_contents(path, &text, &length, &local)) {
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
