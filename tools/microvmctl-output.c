/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* microvmctl: output for people (tables, sizes, durations) and for programs (JSON). */
#include <stdio.h>

#include "microvmctl.h"

void mctl_print_json(JsonNode *node, gboolean pretty)
{
    g_autoptr(JsonGenerator) generator = json_generator_new();
    g_autofree char *text = NULL;

    json_generator_set_pretty(generator, pretty);
    json_generator_set_indent(generator, 2);
    json_generator_set_root(generator, node);
    text = json_generator_to_data(generator, NULL);
    g_print("%s\n", text);
    fflush(stdout);
}

/* D-Bus values map onto JSON naturally (a{sv} → object, variants unwrapped); json-glib does
 * it, and is given only values that came over the bus, which are valid UTF-8. */
JsonNode *mctl_json_from_variant(GVariant *value)
{
    if (!value)
        return json_node_new(JSON_NODE_NULL);
    return json_gvariant_serialize(value);
}

static gboolean is_control(gunichar c)
{
    return (c < 0x20 && c != '\t') || (c >= 0x7f && c < 0xa0);
}

char *mctl_sanitize(const char *text, gssize len)
{
    g_autofree char *valid = g_utf8_make_valid(text, len);
    GString *out = g_string_sized_new(strlen(valid));

    for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);

        if (c == '\r')
            continue;
        /* An escape sequence from the guest must not drive the user's terminal. */
        g_string_append_unichar(out, is_control(c) ? 0xfffd : c);
    }
    return g_string_free(out, FALSE);
}

char *mctl_format_duration_us(gint64 us)
{
    gint64 s = us / G_USEC_PER_SEC;

    if (us < 0)
        return g_strdup("-");
    if (s < 60)
        return g_strdup_printf("%" G_GINT64_FORMAT "s", s);
    if (s < 3600)
        return g_strdup_printf("%" G_GINT64_FORMAT "min %02" G_GINT64_FORMAT "s", s / 60, s % 60);
    if (s < 86400)
        return g_strdup_printf("%" G_GINT64_FORMAT "h %02" G_GINT64_FORMAT "min", s / 3600,
                               s / 60 % 60);
    return g_strdup_printf("%" G_GINT64_FORMAT "d %" G_GINT64_FORMAT "h", s / 86400, s / 3600 % 24);
}

char *mctl_format_mib(guint64 mib)
{
    if (mib < 1024 || mib % 1024 != 0)
        return g_strdup_printf("%" G_GUINT64_FORMAT " MiB", mib);
    return g_strdup_printf("%" G_GUINT64_FORMAT " GiB", mib / 1024);
}

char *mctl_format_time_us(guint64 realtime_us)
{
    g_autoptr(GDateTime) utc = g_date_time_new_from_unix_utc(realtime_us / G_USEC_PER_SEC);
    g_autoptr(GDateTime) local = utc ? g_date_time_to_local(utc) : NULL;

    return local ? g_date_time_format(local, "%Y-%m-%d %H:%M:%S %Z") : g_strdup("-");
}

struct MctlTable {
    guint n_columns;
    GPtrArray *rows; /* of GStrv */
};

MctlTable *mctl_table_new(guint n_columns, const char *const *headers)
{
    MctlTable *table = g_new0(MctlTable, 1);

    table->n_columns = n_columns;
    table->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    mctl_table_add(table, headers);
    return table;
}

void mctl_table_add(MctlTable *table, const char *const *cells)
{
    char **row = g_new0(char *, table->n_columns + 1);

    for (guint i = 0; i < table->n_columns; i++)
        row[i] = g_strdup(cells[i] ? cells[i] : "");
    g_ptr_array_add(table->rows, row);
}

void mctl_table_print(MctlTable *table)
{
    mctl_table_print_indented(table, 0);
}

void mctl_table_print_indented(MctlTable *table, guint indent)
{
    g_autofree gsize *width = g_new0(gsize, table->n_columns);

    /* Widths in characters, not bytes: translated headers are not ASCII. */
    for (guint r = 0; r < table->rows->len; r++) {
        char **row = table->rows->pdata[r];

        for (guint c = 0; c < table->n_columns; c++)
            width[c] = MAX(width[c], (gsize)g_utf8_strlen(row[c], -1));
    }
    for (guint r = 0; r < table->rows->len; r++) {
        char **row = table->rows->pdata[r];
        g_autoptr(GString) line = g_string_new(NULL);

        for (guint i = 0; i < indent; i++)
            g_string_append_c(line, ' ');

        for (guint c = 0; c < table->n_columns; c++) {
            g_string_append(line, row[c]);
            if (c + 1 < table->n_columns) {
                for (gsize pad = g_utf8_strlen(row[c], -1); pad < width[c] + 2; pad++)
                    g_string_append_c(line, ' ');
            }
        }
        g_print("%s\n", line->str);
    }
}

void mctl_table_free(MctlTable *table)
{
    if (!table)
        return;
    g_ptr_array_unref(table->rows);
    g_free(table);
}
