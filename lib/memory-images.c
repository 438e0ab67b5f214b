/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Memory images (microvm.h): one sealed memfd per snapshot memory file in use, which every VM
 * restored from that file maps privately, so that clones share the pages none of them wrote.
 *
 * A file is known by what fstat() says of it: device, inode, size, and the modification and
 * status-change times. An image is listed only when nobody had the file open for writing once
 * it was read (no writable descriptor, no writable shared mapping: the lease probe below); any
 * write after that comes through a new open, and its write(), or the first write fault of its
 * new shared mapping, moves the times, which no caller can set back. So a changed file is a new
 * image, never the old one's pages. An image lives as long as one VM maps it; the last VM's
 * memory closes it. Its memory is the owner's to pay for (MvmImageChargeFunc): an image that
 * cannot be charged is not made, and the VM gets a copy of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory.h"
#include "microvm.h"

typedef struct {
    dev_t dev;
    ino_t ino;
    off_t file_size;
    struct timespec mtime, ctime;
    guint64 size;  /* guest RAM */
    guint64 owner; /* MvmRestoreOptions.memory_image_owner: images are never shared across */
} ImageKey;

typedef struct {
    ImageKey key;
    MvmMemoryImages *images;
    int fd;
    guint users;     /* VMs that map it; guarded by images->lock */
    gboolean listed; /* in images->table */
    MvmImageCharge charge;
} Image;

struct _MvmMemoryImages {
    gatomicrefcount ref;
    GMutex lock;
    GHashTable *table; /* ImageKey * → Image * */
};

static guint key_hash(gconstpointer p)
{
    const ImageKey *k = p;

    return (guint)(k->ino ^ (k->ino >> 32) ^ k->dev ^ (guint64)k->ctime.tv_nsec ^ k->owner);
}

static gboolean key_equal(gconstpointer a, gconstpointer b)
{
    const ImageKey *x = a, *y = b;

    return x->dev == y->dev && x->ino == y->ino && x->file_size == y->file_size &&
           x->mtime.tv_sec == y->mtime.tv_sec && x->mtime.tv_nsec == y->mtime.tv_nsec &&
           x->ctime.tv_sec == y->ctime.tv_sec && x->ctime.tv_nsec == y->ctime.tv_nsec &&
           x->size == y->size && x->owner == y->owner;
}

MvmMemoryImages *mvm_memory_images_new(void)
{
    MvmMemoryImages *images = g_new0(MvmMemoryImages, 1);

    g_atomic_ref_count_init(&images->ref);
    g_mutex_init(&images->lock);
    images->table = g_hash_table_new(key_hash, key_equal);
    return images;
}

MvmMemoryImages *mvm_memory_images_ref(MvmMemoryImages *images)
{
    g_atomic_ref_count_inc(&images->ref);
    return images;
}

/* Every image holds a reference, so the table is empty here. */
void mvm_memory_images_unref(MvmMemoryImages *images)
{
    if (images == NULL || !g_atomic_ref_count_dec(&images->ref))
        return;
    g_hash_table_unref(images->table);
    g_mutex_clear(&images->lock);
    g_free(images);
}

guint mvm_memory_images_get_count(MvmMemoryImages *images)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&images->lock);
    return g_hash_table_size(images->table);
}

static gboolean key_of(int fd, guint64 size, guint64 owner, ImageKey *key)
{
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return FALSE;
    *key = (ImageKey){
        .dev = st.st_dev,
        .ino = st.st_ino,
        .file_size = st.st_size,
        .mtime = st.st_mtim,
        .ctime = st.st_ctim,
        .size = size,
        .owner = owner,
    };
    return TRUE;
}

/* The last VM's memory is gone: so is the image. */
static void image_release(gpointer data)
{
    Image *image = data;
    MvmMemoryImages *images = image->images;

    g_mutex_lock(&images->lock);
    gboolean last = --image->users == 0;
    if (last && image->listed)
        g_hash_table_remove(images->table, &image->key);
    g_mutex_unlock(&images->lock);
    if (!last)
        return;
    close(image->fd);
    if (image->charge.release != NULL)
        image->charge.release(image->charge.token);
    g_free(image);
    mvm_memory_images_unref(images);
}

/*
 * Does anyone have the file open for writing, or mapped shared and writable? A read lease is
 * refused (EAGAIN) exactly then. Set on a read-only descriptor of our own, taken from the
 * caller's through /proc (the same file, whatever mode the caller opened it in), and dropped at
 * once. Anything that is not a clear "no" counts as a writer.
 */
static gboolean has_no_writer(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    struct stat a, b;
    int probe = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (probe < 0)
        return FALSE;
    gboolean none = fstat(fd, &a) == 0 && fstat(probe, &b) == 0 && a.st_dev == b.st_dev &&
                    a.st_ino == b.st_ino && fcntl(probe, F_SETLEASE, F_RDLCK) == 0;
    if (none)
        fcntl(probe, F_SETLEASE, F_UNLCK);
    close(probe);
    return none;
}

/* A listed image for @key, with one more user; NULL when there is none. Lock held. */
static Image *take_listed(MvmMemoryImages *images, const ImageKey *key)
{
    Image *image = g_hash_table_lookup(images->table, key);

    if (image != NULL)
        image->users++;
    return image;
}

static void image_free_unused(Image *image)
{
    close(image->fd);
    if (image->charge.release != NULL)
        image->charge.release(image->charge.token);
    mvm_memory_images_unref(image->images);
    g_free(image);
}

/*
 * Made without the lock: the copy takes as long as the file's data. Listed only when, after the
 * copy, the file is what it was before and nobody can write it; otherwise this VM gets it
 * alone. Two restores that copy the same file at once keep the first image listed and the other
 * drops its own. NULL with @error unset when the owner cannot pay for it.
 */
static Image *make_image(MvmMemoryImages *images, int fd, const ImageKey *key,
                         const MvmImageChargeFunc charge, gpointer charge_data, GError **error)
{
    ImageKey after;
    g_autoptr(GError) refused = NULL;
    Image *image = g_new0(Image, 1);

    if (charge != NULL && !charge(key->owner, key->size, charge_data, &image->charge, &refused)) {
        g_debug("no shared memory image: %s", refused->message);
        g_free(image);
        return NULL;
    }
    image->images = mvm_memory_images_ref(images);
    image->fd = mvm_memory_image_new(fd, key->size, error);
    if (image->fd < 0) {
        image_free_unused(image);
        return NULL;
    }
    image->key = *key;
    image->users = 1;
    gboolean unchanged =
        key_of(fd, key->size, key->owner, &after) && key_equal(key, &after) && has_no_writer(fd);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&images->lock);
    Image *listed = unchanged ? take_listed(images, key) : NULL;
    if (listed != NULL) {
        image_free_unused(image);
        return listed;
    }
    if (unchanged) {
        g_hash_table_insert(images->table, &image->key, image);
        image->listed = TRUE;
    }
    return image;
}

MvmMemory *mvm_memory_images_map(MvmMemoryImages *images, int fd, guint64 size, guint64 owner,
                                 MvmImageChargeFunc charge, gpointer charge_data, GError **error)
{
    ImageKey key;
    Image *image = NULL;

    if (!key_of(fd, size, owner, &key)) /* not a regular file: nothing to share */
        return mvm_memory_new_copy(fd, size, error);
    g_mutex_lock(&images->lock);
    image = take_listed(images, &key);
    g_mutex_unlock(&images->lock);
    if (image == NULL) {
        GError *local = NULL;
        image = make_image(images, fd, &key, charge, charge_data, &local);
        if (image == NULL && local == NULL) /* the owner cannot pay for an image */
            return mvm_memory_new_copy(fd, size, error);
        if (image == NULL) {
            g_propagate_error(error, local);
            return NULL;
        }
    }
    MvmMemory *mem = mvm_memory_new_mapped(image->fd, size, error);
    if (mem == NULL) {
        image_release(image);
        return NULL;
    }
    mvm_memory_set_release_func(mem, image_release, image);
    return mem;
}
