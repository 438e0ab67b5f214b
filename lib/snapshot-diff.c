/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Diff snapshots (microvm.h): what changed since the parent, and the chains a restore lays
 * together.
 *
 * What changed is two logs. KVM's dirty log (KVM_MEM_LOG_DIRTY_PAGES) has every page the guest
 * wrote, and those KVM wrote for it (kvmclock, steal time). The VMM's own writes go around KVM:
 * mvm_memory_write() and the device model mark them in the memory's bitmap (memory.h). Both
 * are read with every vCPU parked and the I/O thread quiet, so nothing writes between the read
 * and the snapshot, and both are cleared by the read: each snapshot is the parent of the next.
 */
#include <string.h>
#include <sys/ioctl.h>

#include "layout.h"
#include "snapshot.h"
#include "vm-private.h"

static gsize bitmap_words(MvmVm *vm)
{
    return (gsize)((mvm_memory_get_n_pages(vm->memory) + 63) / 64);
}

gboolean mvm_snapshot_start_tracking(MvmVm *vm, GError **error)
{
    if (vm->tracking)
        return TRUE;
    if (!mvm_vm_log_dirty_pages(vm, error))
        return FALSE;
    mvm_memory_track_writes(vm->memory);
    vm->tracking = TRUE;
    return TRUE;
}

/*
 * KVM's log of one slot, ORed in where the slot lies in memory order. Slots are multiples of
 * 2 MiB (512 pages), so each starts on a word of the bitmap.
 */
static gboolean harvest_slot(MvmVm *vm, guint slot, guint64 *bitmap, GError **error)
{
    const MvmMemoryRegion *r = mvm_memory_get_region(vm->memory, slot);
    gsize words = (gsize)((r->size / MVM_PAGE_SIZE + 63) / 64);
    gsize first = (gsize)(r->fd_offset / MVM_PAGE_SIZE / 64);
    g_autofree guint64 *log = g_new0(guint64, words);
    struct kvm_dirty_log dirty = {.slot = slot, .dirty_bitmap = log};

    if (mvm_kvm_ioctl(vm->fd, KVM_GET_DIRTY_LOG, &dirty) < 0)
        return mvm_kvm_set_errno_error(error, "KVM_GET_DIRTY_LOG");
    for (gsize i = 0; i < words; i++)
        bitmap[first + i] |= log[i];
    return TRUE;
}

guint64 *mvm_snapshot_harvest_changes(MvmVm *vm, GError **error)
{
    g_autofree guint64 *bitmap = g_new0(guint64, bitmap_words(vm));

    for (guint i = 0; i < mvm_memory_get_n_regions(vm->memory); i++)
        if (!harvest_slot(vm, i, bitmap, error)) {
            /* The slots read so far were cleared by the read: keep their pages for the next. */
            mvm_memory_give_back_written(vm->memory, bitmap);
            return NULL;
        }
    mvm_memory_take_written(vm->memory, bitmap);
    return g_steal_pointer(&bitmap);
}

void mvm_snapshot_set_diff_parent(MvmVm *vm, const guint8 id[MVM_SNAPSHOT_ID_SIZE])
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);

    memcpy(vm->diff_parent, id, MVM_SNAPSHOT_ID_SIZE);
    vm->has_diff_parent = TRUE;
}

gboolean mvm_vm_get_diff_parent(MvmVm *vm, guint8 id[MVM_SNAPSHOT_ID_SIZE])
{
    g_return_val_if_fail(vm != NULL && id != NULL, FALSE);

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&vm->lock);
    if (!vm->has_diff_parent)
        return FALSE;
    memcpy(id, vm->diff_parent, MVM_SNAPSHOT_ID_SIZE);
    return TRUE;
}

/* ---- chains ---- */

static char *id_hex(const guint8 id[MVM_SNAPSHOT_ID_SIZE])
{
    GString *hex = g_string_sized_new(2 * MVM_SNAPSHOT_ID_SIZE);

    for (guint i = 0; i < MVM_SNAPSHOT_ID_SIZE; i++)
        g_string_append_printf(hex, "%02x", id[i]);
    return g_string_free(hex, FALSE);
}

/* @layer (index @i of the chain) fits where it is: above its parent, or the base. */
static gboolean check_link(const MvmSnapshotState *layer, const MvmSnapshotState *below, guint i,
                           guint64 memory_size, GError **error)
{
    if (layer->memory_size != memory_size)
        return mvm_snapshot_invalid(error,
                                    "layer %u has %" G_GUINT64_FORMAT " bytes of RAM, the "
                                    "snapshot %" G_GUINT64_FORMAT,
                                    i, layer->memory_size, memory_size);
    if (below == NULL && layer->has_parent)
        return mvm_snapshot_invalid(error, "layer 0 is a diff; a chain starts at a full snapshot");
    if (below != NULL &&
        (!layer->has_parent || memcmp(layer->parent, below->id, MVM_SNAPSHOT_ID_SIZE) != 0)) {
        g_autofree char *want = id_hex(below->id);
        return mvm_snapshot_invalid(error, "layer %u is not a diff of layer %u (ID %s)", i, i - 1,
                                    want);
    }
    return TRUE;
}

static gboolean check_chain_shape(const MvmSnapshotState *top, guint n_layers, GError **error)
{
    if (!top->has_parent && n_layers > 0)
        return mvm_snapshot_invalid(error, "it is a full snapshot, which takes no layers");
    if (top->has_parent && n_layers == 0) {
        g_autofree char *parent = id_hex(top->parent);
        return mvm_snapshot_invalid(error,
                                    "it is a diff of snapshot %s: pass the snapshots beneath it, "
                                    "base first",
                                    parent);
    }
    if (n_layers >= MVM_SNAPSHOT_MAX_LAYERS)
        return mvm_snapshot_invalid(error, "a chain has at most %u layers, not %u",
                                    MVM_SNAPSHOT_MAX_LAYERS - 1, n_layers);
    return TRUE;
}

/*
 * What a chain needs of a layer: its IDs, RAM size and changed pages, copied out, so that the
 * rest of its state (up to 32 MiB, with whatever unknown keys it carries) is freed at once and a
 * chain of 63 never holds more than one layer's state.
 */
static MvmSnapshotState *slim(MvmSnapshotState *full)
{
    MvmSnapshotState *layer = g_new0(MvmSnapshotState, 1);

    memcpy(layer->id, full->id, sizeof(layer->id));
    memcpy(layer->parent, full->parent, sizeof(layer->parent));
    layer->has_parent = full->has_parent;
    layer->memory_size = full->memory_size;
    if (full->changed_pages != NULL) {
        gsize len;
        const guint8 *bits = g_bytes_get_data(full->changed_pages, &len);
        layer->changed_pages = g_bytes_new(bits, len);
    }
    mvm_snapshot_state_free(full);
    return layer;
}

GPtrArray *mvm_snapshot_load_layers(const MvmSnapshotState *top, const MvmSnapshotFiles *layers,
                                    guint n_layers, GError **error)
{
    g_autoptr(GPtrArray) states =
        g_ptr_array_new_with_free_func((GDestroyNotify)mvm_snapshot_state_free);

    if (!check_chain_shape(top, n_layers, error))
        return NULL;
    for (guint i = 0; i < n_layers; i++) {
        MvmSnapshotState *layer =
            mvm_snapshot_load_state(layers[i].state_fd, layers[i].memory_fd, error);
        if (layer == NULL) {
            g_prefix_error(error, "layer %u: ", i);
            return NULL;
        }
        layer = slim(layer);
        g_ptr_array_add(states, layer);
        if (!check_link(layer, i > 0 ? states->pdata[i - 1] : NULL, i, top->memory_size, error))
            return NULL;
    }
    if (n_layers > 0 &&
        !check_link(top, states->pdata[n_layers - 1], n_layers, top->memory_size, error))
        return NULL;
    return g_steal_pointer(&states);
}

gboolean mvm_snapshot_next_run(const guint8 *bits, guint64 n_pages, guint64 *start, guint64 *end)
{
    guint64 page = *end;

    while (page < n_pages && !(bits[page / 8] & (1u << (page % 8))))
        page++;
    if (page == n_pages)
        return FALSE;
    *start = page;
    while (page < n_pages && (bits[page / 8] & (1u << (page % 8))))
        page++;
    *end = page;
    return TRUE;
}

/* The pages @changed marks, read from @fd into the same place of RAM, a run at a time. */
static gboolean lay_over(MvmMemory *mem, int fd, GBytes *changed, GError **error)
{
    const guint8 *bits = g_bytes_get_data(changed, NULL);
    guint64 start = 0, end = 0;

    while (mvm_snapshot_next_run(bits, mvm_memory_get_n_pages(mem), &start, &end))
        if (!mvm_memory_read_from(mem, fd, start * MVM_PAGE_SIZE, (end - start) * MVM_PAGE_SIZE,
                                  error))
            return FALSE;
    return TRUE;
}

MvmMemory *mvm_snapshot_chain_memory(const MvmSnapshotFiles *layers, GPtrArray *states,
                                     const MvmSnapshotState *top, int top_memory_fd, GError **error)
{
    g_autoptr(MvmMemory) mem = mvm_memory_new_copy(layers[0].memory_fd, top->memory_size, error);

    if (mem == NULL)
        return NULL;
    for (guint i = 1; i < states->len; i++) {
        const MvmSnapshotState *layer = states->pdata[i];
        if (!lay_over(mem, layers[i].memory_fd, layer->changed_pages, error)) {
            g_prefix_error(error, "layer %u: ", i);
            return NULL;
        }
    }
    if (!lay_over(mem, top_memory_fd, top->changed_pages, error))
        return NULL;
    return g_steal_pointer(&mem);
}
