/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The I/O bus: port and MMIO ranges mapped to device callbacks.
 *
 * Concurrency: each address space has an immutable, sorted table of ranges,
 * published through an atomic pointer. vCPU threads look ranges up with a
 * binary search and take no lock. Registration (normally before the vCPUs
 * start, but safe at any time) takes the bus mutex, builds a new table and
 * publishes it; a reader still walking the old table keeps a valid view,
 * because retired tables are only freed by mvm_io_bus_free(), which must not
 * race with dispatch (the VM frees the bus after joining its vCPU threads).
 * Registrations are few (a handful of devices), so retired tables cost little.
 */
#include "iobus.h"

#include <string.h>

#include "microvm.h"

#define PIO_SPACE_SIZE 0x10000ULL /* x86 I/O ports are 16-bit */

typedef struct {
    guint64 base;
    guint64 len;
    MvmIoOps ops;
    gpointer opaque;
    char *name; /* owned by MvmIoBus.names */
} IoRange;

typedef struct {
    guint n_ranges;
    IoRange ranges[]; /* sorted by base, pairwise disjoint */
} IoTable;

struct _MvmIoBus {
    IoTable *tables[2]; /* indexed by MvmIoSpace; atomic pointers */
    GMutex lock;        /* serializes writers */
    GPtrArray *retired; /* IoTable *, freed with the bus */
    GPtrArray *names;   /* char * */
};

static const char *space_name(MvmIoSpace space)
{
    return space == MVM_IO_SPACE_PIO ? "I/O port" : "MMIO";
}

static gboolean space_valid(MvmIoSpace space)
{
    return space == MVM_IO_SPACE_PIO || space == MVM_IO_SPACE_MMIO;
}

MvmIoBus *mvm_io_bus_new(void)
{
    MvmIoBus *bus = g_new0(MvmIoBus, 1);

    g_mutex_init(&bus->lock);
    bus->retired = g_ptr_array_new_with_free_func(g_free);
    bus->names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < G_N_ELEMENTS(bus->tables); i++)
        bus->tables[i] = g_new0(IoTable, 1);
    return bus;
}

void mvm_io_bus_free(MvmIoBus *bus)
{
    if (bus == NULL)
        return;
    for (guint i = 0; i < G_N_ELEMENTS(bus->tables); i++)
        g_free(bus->tables[i]);
    g_ptr_array_unref(bus->retired);
    g_ptr_array_unref(bus->names);
    g_mutex_clear(&bus->lock);
    g_free(bus);
}

/* Index of the last range whose base is <= @addr, or -1. */
static gint find_floor(const IoTable *table, guint64 addr)
{
    gint lo = 0, hi = (gint)table->n_ranges - 1, found = -1;

    while (lo <= hi) {
        gint mid = lo + (hi - lo) / 2;

        if (table->ranges[mid].base <= addr) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

static void set_overlap_error(GError **error, MvmIoSpace space, guint64 base, guint64 len,
                              const char *name, const IoRange *other)
{
    g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                "%s range 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                "x of device '%s' overlaps 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                "x of device '%s'",
                space_name(space), base, base + len - 1, name, other->base,
                other->base + other->len - 1, other->name);
}

static gboolean check_range(MvmIoSpace space, guint64 base, guint64 len, const char *name,
                            GError **error)
{
    /* A range ending exactly at 2^64 is refused too: base + len must fit in 64 bits. */
    if (len == 0 || len > G_MAXUINT64 - base) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "%s range of device '%s' at 0x%" G_GINT64_MODIFIER
                    "x with length 0x%" G_GINT64_MODIFIER "x is empty or wraps around",
                    space_name(space), name, base, len);
        return FALSE;
    }
    if (space == MVM_IO_SPACE_PIO && base + len > PIO_SPACE_SIZE) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT,
                    "I/O port range of device '%s' at 0x%" G_GINT64_MODIFIER
                    "x with length 0x%" G_GINT64_MODIFIER "x is beyond port 0xffff",
                    name, base, len);
        return FALSE;
    }
    return TRUE;
}

/* Called with bus->lock held. */
static gboolean check_overlap(const IoTable *table, MvmIoSpace space, guint64 base, guint64 len,
                              const char *name, guint *insert_at, GError **error)
{
    gint floor = find_floor(table, base);
    guint next = (guint)(floor + 1);

    if (floor >= 0) {
        const IoRange *prev = &table->ranges[floor];

        if (base - prev->base < prev->len) {
            set_overlap_error(error, space, base, len, name, prev);
            return FALSE;
        }
    }
    if (next < table->n_ranges && table->ranges[next].base - base < len) {
        set_overlap_error(error, space, base, len, name, &table->ranges[next]);
        return FALSE;
    }
    *insert_at = next;
    return TRUE;
}

static IoTable *table_insert(const IoTable *old, guint at, const IoRange *range)
{
    IoTable *table = g_malloc(sizeof(IoTable) + (old->n_ranges + 1) * sizeof(IoRange));

    table->n_ranges = old->n_ranges + 1;
    memcpy(table->ranges, old->ranges, at * sizeof(IoRange));
    table->ranges[at] = *range;
    memcpy(&table->ranges[at + 1], &old->ranges[at], (old->n_ranges - at) * sizeof(IoRange));
    return table;
}

gboolean mvm_io_bus_register(MvmIoBus *bus, MvmIoSpace space, guint64 base, guint64 len,
                             const MvmIoOps *ops, gpointer opaque, const char *name, GError **error)
{
    g_autoptr(GMutexLocker) locker = NULL;
    IoRange range = {.base = base, .len = len, .opaque = opaque};
    IoTable *old;
    guint at = 0;

    g_return_val_if_fail(bus != NULL, FALSE);
    g_return_val_if_fail(space_valid(space), FALSE);
    g_return_val_if_fail(ops != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

    if (name == NULL)
        name = "(unnamed)";
    if (!check_range(space, base, len, name, error))
        return FALSE;

    locker = g_mutex_locker_new(&bus->lock);
    old = bus->tables[space];
    if (!check_overlap(old, space, base, len, name, &at, error))
        return FALSE;

    range.ops = *ops;
    range.name = g_strdup(name);
    g_ptr_array_add(bus->names, range.name);
    g_atomic_pointer_set(&bus->tables[space], table_insert(old, at, &range));
    g_ptr_array_add(bus->retired, old);
    return TRUE;
}

static gboolean len_valid(guint len)
{
    return len == 1 || len == 2 || len == 4 || len == 8;
}

/* The range that holds all of [addr, addr + len), or NULL. */
static const IoRange *lookup(MvmIoBus *bus, MvmIoSpace space, guint64 addr, guint len)
{
    const IoTable *table;
    gint i;

    if (!space_valid(space) || !len_valid(len) || addr > G_MAXUINT64 - len)
        return NULL;
    table = g_atomic_pointer_get(&bus->tables[space]);
    i = find_floor(table, addr);
    if (i < 0)
        return NULL;
    if (len > table->ranges[i].len || addr - table->ranges[i].base > table->ranges[i].len - len)
        return NULL;
    return &table->ranges[i];
}

gboolean mvm_io_bus_read(MvmIoBus *bus, MvmIoSpace space, guint64 addr, guint8 *data, guint len)
{
    const IoRange *range;

    g_return_val_if_fail(bus != NULL, FALSE);
    g_return_val_if_fail(data != NULL, FALSE);

    /* Unclaimed reads float high on a PC bus: all-ones. */
    memset(data, 0xff, MIN(len, 8u));
    range = lookup(bus, space, addr, len);
    if (range == NULL)
        return FALSE;
    if (range->ops.read != NULL)
        range->ops.read(range->opaque, addr - range->base, data, len);
    return TRUE;
}

gboolean mvm_io_bus_write(MvmIoBus *bus, MvmIoSpace space, guint64 addr, const guint8 *data,
                          guint len)
{
    const IoRange *range;

    g_return_val_if_fail(bus != NULL, FALSE);
    g_return_val_if_fail(data != NULL, FALSE);

    range = lookup(bus, space, addr, len);
    if (range == NULL)
        return FALSE;
    if (range->ops.write != NULL)
        range->ops.write(range->opaque, addr - range->base, data, len);
    return TRUE;
}
