/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Definitions of persistent VMs: <state-dir>/vms/<name>.vm, GKeyFile, written atomically with
 * mode 0600. A file that cannot be parsed is logged and skipped at load, never deleted.
 */
#pragma once

#include "definition.h"

G_BEGIN_DECLS

typedef struct _MvmdStore MvmdStore;

MvmdStore *mvmd_store_new(const char *state_dir);
void mvmd_store_free(MvmdStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdStore, mvmd_store_free)

const char *mvmd_store_get_dir(MvmdStore *store);

/* Creates the directory when needed. */
gboolean mvmd_store_save(MvmdStore *store, const MvmdVmDefinition *config, GError **error);
/* Missing files are not an error. */
gboolean mvmd_store_remove(MvmdStore *store, const char *name, GError **error);
/*
 * Every valid definition (MvmdVmDefinition *, owned by the array), sorted by file name; an
 * invalid one is skipped with a warning. NULL with @error (NoResources, or Failed when the
 * directory cannot be read) when not every definition could be read: never a partial list.
 */
GPtrArray *mvmd_store_load_all(MvmdStore *store, GError **error);

G_END_DECLS
