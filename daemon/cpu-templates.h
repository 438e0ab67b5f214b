/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CPU templates as the daemon finds them (config key `cpu-template`): a built-in one by name
 * (mvm_cpu_template_builtin_names()), else the administrator's file NAME.json in the template
 * directory (default MVMD_CPU_TEMPLATE_DIR, `--cpu-template-dir`, or [CPUTemplates]
 * Directory= in microvmd.conf). The name is the caller's and is checked before it names a
 * file; the directory is the administrator's, and its files are parsed as untrusted all the
 * same (lib/cpu-template.c). Also the CPU a running VM has, as GetCPUConfig shows it.
 */
#pragma once

#include <gio/gio.h>

#include "microvm.h"

G_BEGIN_DECLS

/*
 * Whether @name may name a template: a built-in name, or a valid custom name (1 to
 * MVM_CPU_TEMPLATE_NAME_MAX of [A-Za-z0-9_.-], not starting with '.': never a path). Says
 * nothing of whether the file exists. FALSE with MVMD_ERROR_INVALID_ARGUMENT naming the key.
 */
gboolean mvmd_cpu_template_name_check(const char *name, GError **error);

/*
 * The template @name (checked as above): a built-in one, or @dir/NAME.json, opened without
 * following a link and without blocking, which must be a regular file. Any thread; blocks only
 * on the administrator's directory. Errors: MVMD_ERROR_INVALID_ARGUMENT naming the template
 * and the problem (lib's message for a file it refuses), MVMD_ERROR_NO_RESOURCES.
 */
MvmCpuTemplate *mvmd_cpu_template_load(const char *dir, const char *name, GError **error);

/*
 * The template directory [CPUTemplates] Directory= of @path (microvmd.conf, read as
 * mvmd_config_file_load() does), an absolute path; MVMD_CPU_TEMPLATE_DIR when the file or the
 * key is not there. NULL on a mistake, with an error (G_KEY_FILE_ERROR, G_FILE_ERROR) naming
 * the file.
 */
char *mvmd_cpu_template_dir_from_config(const char *path, gboolean must_exist, GError **error);

/* GetCPUConfig's a{sv} (floating): introspection/org.microvmd.MicroVM1.VM.xml. */
GVariant *mvmd_cpu_config_to_variant(const MvmCpuConfig *config);

G_END_DECLS
