/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "store.h"

#include <errno.h>
#include <glib/gstdio.h>

#include "errors.h"

#define SUFFIX ".vm"

struct _MvmdStore {
    char *dir; /* <state-dir>/vms */
};

MvmdStore *mvmd_store_new(const char *state_dir)
{
    MvmdStore *store = g_new0(MvmdStore, 1);

    store->dir = g_build_filename(state_dir, "vms", NULL);
    return store;
}

void mvmd_store_free(MvmdStore *store)
{
    if (!store)
        return;
    g_free(store->dir);
    g_free(store);
}

const char *mvmd_store_get_dir(MvmdStore *store)
{
    return store->dir;
}

static char *path_for(MvmdStore *store, const char *name)
{
    g_autofree char *file = g_strconcat(name, SUFFIX, NULL);

    return g_build_filename(store->dir, file, NULL);
}

gboolean mvmd_store_save(MvmdStore *store, const MvmdVmDefinition *config, GError **error)
{
    g_autoptr(GKeyFile) kf = mvmd_vm_definition_to_keyfile(config);
    g_autofree char *path = path_for(store, config->name);
    g_autofree char *data = NULL;
    g_autoptr(GError) local = NULL;
    gsize len;

    if (g_mkdir_with_parents(store->dir, 0700) < 0)
        return mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot create %s", store->dir);
    data = g_key_file_to_data(kf, &len, NULL);
    if (!g_file_set_contents_full(path, data, len, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local)) {
        /* Out of descriptors (G_FILE_ERROR_MFILE) is NoResources; the rest Failed. */
        g_propagate_error(error, mvmd_error_from_error(local, "cannot store the definition"));
        return FALSE;
    }
    return TRUE;
}

gboolean mvmd_store_remove(MvmdStore *store, const char *name, GError **error)
{
    g_autofree char *path = path_for(store, name);

    if (g_unlink(path) < 0 && errno != ENOENT)
        return mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot remove %s", path);
    return TRUE;
}

static MvmdVmDefinition *load_one(MvmdStore *store, const char *file, GError **error)
{
    g_autofree char *path = g_build_filename(store->dir, file, NULL);
    g_autofree char *expected = g_strndup(file, strlen(file) - strlen(SUFFIX));
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(MvmdVmDefinition) config = NULL;

    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, error))
        return NULL;
    config = mvmd_vm_definition_new_from_keyfile(kf, error);
    if (!config)
        return NULL;
    if (!g_str_equal(config->name, expected)) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "the name '%s' does not match the file name", config->name);
        return NULL;
    }
    /* Everything in the store is persistent by definition. */
    config->persist = TRUE;
    return g_steal_pointer(&config);
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

/*
 * A definition that cannot be read for want of descriptors or memory is no definition that
 * went away: the whole load fails, or a reload would drop its VM.
 */
static gboolean skip_unreadable(MvmdStore *store, const char *file, const GError *local,
                                GError **error)
{
    g_autofree char *what =
        g_strdup_printf("cannot read the VM definition %s/%s", store->dir, file);
    g_autoptr(GError) mapped = mvmd_error_from_error(local, what);

    if (mapped->code == MVMD_ERROR_NO_RESOURCES) {
        g_propagate_error(error, g_steal_pointer(&mapped));
        return FALSE;
    }
    g_warning("skipping the VM definition %s/%s: %s", store->dir, file, local->message);
    return TRUE;
}

GPtrArray *mvmd_store_load_all(MvmdStore *store, GError **error)
{
    g_autoptr(GPtrArray) configs =
        g_ptr_array_new_with_free_func((GDestroyNotify)mvmd_vm_definition_free);
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) local = NULL;
    g_autoptr(GDir) dir = g_dir_open(store->dir, 0, &local);
    const char *file;

    if (!dir && g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return g_steal_pointer(&configs);
    if (!dir) {
        g_propagate_error(error, mvmd_error_from_error(local, "cannot read the VM definitions"));
        return NULL;
    }
    while ((file = g_dir_read_name(dir))) {
        if (g_str_has_suffix(file, SUFFIX) && file[0] != '.')
            g_ptr_array_add(files, g_strdup(file));
    }
    g_ptr_array_sort(files, compare_names);
    for (guint i = 0; i < files->len; i++) {
        MvmdVmDefinition *config = load_one(store, files->pdata[i], &local);

        if (config)
            g_ptr_array_add(configs, config);
        else if (!skip_unreadable(store, files->pdata[i], local, error))
            return NULL;
        g_clear_error(&local);
    }
    return g_steal_pointer(&configs);
}
