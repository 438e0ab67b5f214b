/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "log.h"

#include <stdio.h>
#include <unistd.h>

static gboolean use_journal;

static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields,
                               gpointer user_data)
{
    const char *domain = NULL;

    for (gsize i = 0; i < n_fields; i++) {
        if (g_str_equal(fields[i].key, "GLIB_DOMAIN")) {
            domain = fields[i].value;
            break;
        }
    }
    if (g_log_writer_default_would_drop(level, domain))
        return G_LOG_WRITER_HANDLED;
    if (use_journal &&
        g_log_writer_journald(level, fields, n_fields, user_data) == G_LOG_WRITER_HANDLED)
        return G_LOG_WRITER_HANDLED;
    return g_log_writer_standard_streams(level, fields, n_fields, user_data);
}

void mvmd_log_init(gboolean verbose)
{
    use_journal = g_log_writer_is_journald(fileno(stderr));
    if (verbose)
        g_log_set_debug_enabled(TRUE);
    g_log_set_writer_func(writer, NULL, NULL);
}
