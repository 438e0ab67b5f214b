/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmd.conf (microvmd(8)): one key file, read at start and by every Reload. Each part of
 * the daemon reads its own groups from it: the quotas ([Quota], [Quota:USER], quota.c) and the
 * CPU template directory ([CPUTemplates] Directory, cpu-templates.c).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MVMD_CONFIG_FILE "/etc/microvmd/microvmd.conf"

/* The groups of microvmd.conf that are not the quotas' (which have their own prefix). */
#define MVMD_CONFIG_GROUP_CPU_TEMPLATES "CPUTemplates"

/*
 * Reads @path as a key file. A missing file is an error when @must_exist, else an empty key
 * file. Only a regular file of at most 1 MiB, or a character device such as /dev/null, is
 * read: a FIFO would hang the start (or the main loop, on Reload). Errors name @path.
 */
GKeyFile *mvmd_config_file_load(const char *path, gboolean must_exist, GError **error);

G_END_DECLS
