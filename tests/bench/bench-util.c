/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bench-util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static gint64 status_field_kib(const char *status, const char *name)
{
    const char *p = strstr(status, name);

    if (p == NULL)
        return -1;
    return g_ascii_strtoll(p + strlen(name), NULL, 10);
}

gboolean bench_mem_read(int pid, BenchMem *mem, GError **error)
{
    g_autofree char *path =
        pid > 0 ? g_strdup_printf("/proc/%d/status", pid) : g_strdup("/proc/self/status");
    g_autofree char *status = NULL;

    if (!g_file_get_contents(path, &status, NULL, error))
        return FALSE;
    mem->rss_kib = status_field_kib(status, "\nVmRSS:");
    mem->anon_kib = status_field_kib(status, "\nRssAnon:");
    mem->file_kib = status_field_kib(status, "\nRssFile:");
    mem->shmem_kib = status_field_kib(status, "\nRssShmem:");
    if (mem->rss_kib < 0 || mem->anon_kib < 0 || mem->file_kib < 0 || mem->shmem_kib < 0) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: no Rss fields", path);
        return FALSE;
    }
    return TRUE;
}

gint64 bench_pss_kib(int pid, GError **error)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps_rollup", pid);
    g_autofree char *rollup = NULL;

    if (!g_file_get_contents(path, &rollup, NULL, error))
        return -1;
    gint64 pss = status_field_kib(rollup, "\nPss:");
    if (pss < 0)
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: no Pss", path);
    return pss;
}

gint64 bench_cpu_time_us(void)
{
    struct rusage usage;

    getrusage(RUSAGE_SELF, &usage);
    return (gint64)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * G_USEC_PER_SEC +
           usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
}

gint64 bench_proc_cpu_us(int pid, GError **error)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *stat = NULL;
    g_auto(GStrv) fields = NULL;
    const char *after_name;

    if (!g_file_get_contents(path, &stat, NULL, error))
        return -1;
    /* "PID (COMM) STATE ...": the name may hold spaces and parentheses; fields follow the last ')'.
     */
    after_name = strrchr(stat, ')');
    fields = g_strsplit(after_name ? after_name + 2 : "", " ", 0);
    if (g_strv_length(fields) < 13) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: too few fields", path);
        return -1;
    }
    /* utime and stime, the 14th and 15th fields of proc(5), in clock ticks. */
    return (g_ascii_strtoll(fields[11], NULL, 10) + g_ascii_strtoll(fields[12], NULL, 10)) *
           G_USEC_PER_SEC / sysconf(_SC_CLK_TCK);
}

static void json_key(GString *json, const char *key)
{
    g_string_append(json, json->len == 0 ? "{" : ", ");
    g_string_append_printf(json, "\"%s\": ", key);
}

void bench_json_samples(GString *json, const char *key, const GArray *samples_us)
{
    json_key(json, key);
    g_string_append_c(json, '[');
    for (guint i = 0; i < samples_us->len; i++)
        g_string_append_printf(json, "%s%" G_GINT64_FORMAT, i ? ", " : "",
                               g_array_index(samples_us, gint64, i));
    g_string_append_c(json, ']');
}

void bench_json_doubles(GString *json, const char *key, const GArray *samples)
{
    json_key(json, key);
    g_string_append_c(json, '[');
    for (guint i = 0; i < samples->len; i++)
        g_string_append_printf(json, "%s%.4f", i ? ", " : "", g_array_index(samples, double, i));
    g_string_append_c(json, ']');
}

void bench_json_int(GString *json, const char *key, gint64 value)
{
    json_key(json, key);
    g_string_append_printf(json, "%" G_GINT64_FORMAT, value);
}

void bench_json_str(GString *json, const char *key, const char *value)
{
    json_key(json, key);
    g_string_append_c(json, '"');
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\')
            g_string_append_c(json, '\\');
        if ((guchar)*p < 0x20)
            g_string_append_printf(json, "\\u%04x", (guchar)*p);
        else
            g_string_append_c(json, *p);
    }
    g_string_append_c(json, '"');
}

void bench_json_mem(GString *json, const char *key, const BenchMem *mem)
{
    json_key(json, key);
    g_string_append_printf(json,
                           "{\"rss_kib\": %" G_GINT64_FORMAT ", \"anon_kib\": %" G_GINT64_FORMAT
                           ", \"file_kib\": %" G_GINT64_FORMAT ", \"shmem_kib\": %" G_GINT64_FORMAT
                           "}",
                           mem->rss_kib, mem->anon_kib, mem->file_kib, mem->shmem_kib);
}

void bench_json_print(GString *json)
{
    if (json->len == 0)
        g_string_append_c(json, '{');
    g_string_append_c(json, '}');
    printf("%s\n", json->str);
    fflush(stdout);
    g_string_free(json, TRUE);
}

void bench_print_samples(const char *what, ...)
{
    GString *json = g_string_new(NULL);
    va_list ap;
    const char *key;

    if (what != NULL)
        bench_json_str(json, "what", what);
    va_start(ap, what);
    while ((key = va_arg(ap, const char *)) != NULL)
        bench_json_samples(json, key, va_arg(ap, const GArray *));
    va_end(ap);
    bench_json_print(json);
}

int bench_fail(const char *what, const GError *error)
{
    GString *json = g_string_new(NULL);
    g_autofree char *message =
        g_strdup_printf("%s: %s", what, error != NULL ? error->message : "failed");

    bench_json_str(json, "error", message);
    bench_json_print(json);
    return 1;
}

GArray *bench_samples_new(void)
{
    return g_array_new(FALSE, FALSE, sizeof(gint64));
}

void bench_samples_add(GArray *samples, gint64 value_us)
{
    g_array_append_val(samples, value_us);
}
