/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small pieces the benchmark helpers share: process memory figures from /proc and JSON output.
 * The helpers print one JSON object per line on stdout; tests/bench/compare reads them.
 */
#pragma once

#include <glib.h>

/* Resident memory of a process, in KiB, from /proc/PID/status. */
typedef struct {
    gint64 rss_kib;
    gint64 anon_kib;
    gint64 file_kib;
    gint64 shmem_kib;
} BenchMem;

/* pid 0: this process. */
gboolean bench_mem_read(int pid, BenchMem *mem, GError **error);
/*
 * Proportional set size of process @pid in KiB (/proc/PID/smaps_rollup): a page mapped n times
 * counts 1/n each time, so pages the process maps many times (clones sharing a memory image)
 * count once in all. -1 with @error set.
 */
gint64 bench_pss_kib(int pid, GError **error);
/* Process CPU time (user + system) of this process, in µs. */
gint64 bench_cpu_time_us(void);
/* The same of process @pid, from /proc (clock-tick resolution); -1 with @error set. */
gint64 bench_proc_cpu_us(int pid, GError **error);

/* Appends `"key": [v, ...]` (µs as numbers) to a JSON object being built. */
void bench_json_samples(GString *json, const char *key, const GArray *samples_us);
/* The same for an array of doubles (µs with fractions), to 4 decimals. */
void bench_json_doubles(GString *json, const char *key, const GArray *samples);
void bench_json_int(GString *json, const char *key, gint64 value);
void bench_json_str(GString *json, const char *key, const char *value);
void bench_json_mem(GString *json, const char *key, const BenchMem *mem);
/* Closes the object, prints it on one line and frees it. */
void bench_json_print(GString *json);
/*
 * Prints {"what": @what, "key": [samples], ...} on one line: the arguments after @what are
 * (const char *key, GArray *samples) pairs, ended by NULL. @what NULL: no "what" key.
 */
void bench_print_samples(const char *what, ...) G_GNUC_NULL_TERMINATED;
/* Prints {"error": message} and returns the exit status for failures. */
int bench_fail(const char *what, const GError *error);

/* A GArray of gint64 samples. */
GArray *bench_samples_new(void);
void bench_samples_add(GArray *samples, gint64 value_us);
