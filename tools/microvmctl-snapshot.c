/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * microvmctl snapshot, restore and working-set. microvmd runs as root and never opens a path
 * for a caller: microvmctl creates or opens every file of a snapshot itself, as the user who
 * runs it, and passes them open (VM.Snapshot's and Manager.RestoreVM's `state-fd`, `memory-fd`,
 * `layers`, `working-set`, and VM.SaveWorkingSet's file).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "microvmctl.h"

#define SNAPSHOT_TIMEOUT_MS (30 * 60 * 1000)
/*
 * dbus-daemon closes the connection of a client that sends more descriptors in one message
 * than its max_message_unix_fds: 16 by default, and on the system bus (system.conf).
 */
#define BUS_MESSAGE_FDS_MAX 16

/*
 * lib/snapshot.h: a `state` file starts with the magic "MVMSNAP\0" in a header of 24 bytes and
 * ends with the snapshot's ID, the SHA-256 of all that comes before it (32 bytes).
 */
#define STATE_MAGIC       "MVMSNAP"
#define STATE_MAGIC_SIZE  8 /* with its NUL */
#define STATE_HEADER_SIZE 24
#define SNAPSHOT_ID_SIZE  32

/* A snapshot is a directory with these two files (lib/snapshot.h). */
static const char *const snapshot_members[2] = {"state", "memory"};
/* And, once recorded (working-set), the pages a lazy restore of it reads first. */
#define WORKING_SET_MEMBER "working-set"

static int open_dir(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot open the directory “%s”: %s"),
                    path, g_strerror(errno));
    return fd;
}

/* Hands @fd (closed here) to the daemon in @fds; returns its handle, or -1. */
static gint append_fd(int fd, GUnixFDList *fds, GError **error)
{
    gint index = g_unix_fd_list_append(fds, fd, error);

    close(fd);
    return index;
}

/* ---- snapshot IDs ---------------------------------------------------------------------- */

static void set_not_a_state(const char *path, GError **error)
{
    g_set_error(error, MCTL_ERROR, MCTL_EXIT_INVALID_ARGUMENT,
                _("“%s” is not the state file of a snapshot"), path);
}

/* All @len bytes at @offset of @fd (@path): a file that ends before is not a snapshot's state. */
static gboolean read_at(int fd, const char *path, void *buf, gsize len, off_t offset,
                        GError **error)
{
    gsize done = 0;

    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, offset + (off_t)done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot read “%s”: %s"), path,
                        g_strerror(errno));
            return FALSE;
        }
        if (n == 0) {
            set_not_a_state(path, error);
            return FALSE;
        }
        done += (gsize)n;
    }
    return TRUE;
}

/*
 * The ID of the snapshot whose `state` is open as @fd (@path for messages): its last 32 bytes,
 * as 64 lowercase hex digits, once the file looks like a snapshot's state (regular, its magic,
 * long enough). The daemon and the library check the rest.
 */
static char *read_snapshot_id(int fd, const char *path, GError **error)
{
    guint8 magic[STATE_MAGIC_SIZE], id[SNAPSHOT_ID_SIZE];
    GString *hex;
    struct stat st;

    if (fstat(fd, &st) < 0) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot read “%s”: %s"), path,
                    g_strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < STATE_HEADER_SIZE + SNAPSHOT_ID_SIZE) {
        set_not_a_state(path, error);
        return NULL;
    }
    if (!read_at(fd, path, magic, sizeof(magic), 0, error))
        return NULL;
    if (memcmp(magic, STATE_MAGIC, sizeof(magic)) != 0) {
        set_not_a_state(path, error);
        return NULL;
    }
    if (!read_at(fd, path, id, sizeof(id), st.st_size - SNAPSHOT_ID_SIZE, error))
        return NULL;
    hex = g_string_sized_new(2 * SNAPSHOT_ID_SIZE);
    for (gsize i = 0; i < sizeof(id); i++)
        g_string_append_printf(hex, "%02x", id[i]);
    return g_string_free(hex, FALSE);
}

/* A member of the snapshot directory @dir (@dirfd) opened for reading, or -1. */
static int open_member(int dirfd, const char *dir, const char *member, GError **error)
{
    /* O_NONBLOCK: a FIFO in its place must not hang us; the daemon refuses it. */
    int fd = openat(dirfd, member, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot open “%s” in “%s”: %s"),
                    member, dir, g_strerror(errno));
    return fd;
}

/* The ID of the snapshot in the directory @dir, read from its `state`. */
static char *dir_snapshot_id(const char *dir, GError **error)
{
    g_autofree char *path = g_build_filename(dir, snapshot_members[0], NULL);
    int dirfd = open_dir(dir, error);
    int fd = dirfd < 0 ? -1 : open_member(dirfd, dir, snapshot_members[0], error);
    char *id = fd < 0 ? NULL : read_snapshot_id(fd, path, error);

    if (fd >= 0)
        close(fd);
    if (dirfd >= 0)
        close(dirfd);
    return id;
}

/* ---- snapshot -------------------------------------------------------------------------- */

/*
 * The snapshot's files, created by microvmctl as the user who runs it, under temporary names in
 * the target directory, and passed to the daemon open for writing (options state-fd and
 * memory-fd). microvmd runs as root: it writes only into files its caller made, and never
 * creates, renames or removes a file itself. Renamed into place once the daemon is done.
 */
typedef struct {
    const char *dir;
    int dirfd;
    char *tmp[2]; /* as snapshot_members; NULL once renamed */
    int state_fd; /* `state`, kept to read the new snapshot's ID from */
} SnapshotFiles;

static void snapshot_files_clear(SnapshotFiles *files)
{
    for (gsize i = 0; i < G_N_ELEMENTS(files->tmp); i++) {
        if (files->tmp[i])
            unlinkat(files->dirfd, files->tmp[i], 0); /* a failed snapshot leaves nothing */
        g_clear_pointer(&files->tmp[i], g_free);
    }
    if (files->dirfd >= 0)
        close(files->dirfd);
    if (files->state_fd >= 0)
        close(files->state_fd);
    files->dirfd = files->state_fd = -1;
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(SnapshotFiles, snapshot_files_clear)

static gboolean snapshot_files_create(SnapshotFiles *files, GUnixFDList *fds, GVariantDict *options,
                                      GError **error)
{
    files->dirfd = open_dir(files->dir, error);
    if (files->dirfd < 0)
        return FALSE;
    for (gsize i = 0; i < G_N_ELEMENTS(snapshot_members); i++) {
        g_autofree char *name =
            g_strdup_printf(".%s.%08x.tmp", snapshot_members[i], g_random_int());
        g_autofree char *key = g_strconcat(snapshot_members[i], "-fd", NULL);
        /* O_EXCL: a new file of the user's own, never one that was there (a link, a FIFO).
         * `state` read-write: its ID is read back once it is written. */
        int fd =
            openat(files->dirfd, name,
                   (i == 0 ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        gint index;

        if (fd < 0) {
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot create “%s” in “%s”: %s"),
                        name, files->dir, g_strerror(errno));
            return FALSE;
        }
        files->tmp[i] = g_steal_pointer(&name);
        if (i == 0 && (files->state_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot create “%s” in “%s”: %s"),
                        files->tmp[i], files->dir, g_strerror(errno));
            close(fd);
            return FALSE;
        }
        index = append_fd(fd, fds, error);
        if (index < 0)
            return FALSE;
        g_variant_dict_insert(options, key, "h", index);
    }
    return TRUE;
}

/* The old state goes first and the new one comes last: never a state with another's memory. */
static gboolean snapshot_files_commit(SnapshotFiles *files, GError **error)
{
    /* A working set of the snapshot this one replaces would only be refused by a restore. */
    if ((unlinkat(files->dirfd, WORKING_SET_MEMBER, 0) < 0 && errno != ENOENT) ||
        (unlinkat(files->dirfd, "state", 0) < 0 && errno != ENOENT) ||
        renameat(files->dirfd, files->tmp[1], files->dirfd, "memory") < 0 ||
        renameat(files->dirfd, files->tmp[0], files->dirfd, "state") < 0) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO,
                    _("Cannot put the snapshot files in place in “%s”: %s"), files->dir,
                    g_strerror(errno));
        return FALSE;
    }
    g_clear_pointer(&files->tmp[0], g_free);
    g_clear_pointer(&files->tmp[1], g_free);
    fsync(files->dirfd);
    return TRUE;
}

/*
 * --diff BASE: the base's ID, which the daemon checks is the VM's last snapshot. Never into the
 * base's own directory: the diff would replace the layer it needs beneath it.
 */
static gboolean add_diff_base(const char *base, const char *dir, GVariantDict *options,
                              GError **error)
{
    struct stat a, b;

    if (stat(base, &a) == 0 && stat(dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        g_set_error(error, MCTL_ERROR, MCTL_EXIT_USAGE,
                    _("“%s” holds the base: a diff written there would replace it; give the "
                      "diff a directory of its own"),
                    dir);
        return FALSE;
    }
    g_autofree char *id = dir_snapshot_id(base, error);

    if (!id)
        return FALSE;
    g_variant_dict_insert(options, "diff-base", "s", id);
    return TRUE;
}

/* The new snapshot's ID, from the state the daemon wrote: what a later --diff names. */
static gboolean print_snapshot_id(SnapshotFiles *files, GError **error)
{
    g_autofree char *path = g_build_filename(files->dir, "state", NULL);
    g_autofree char *id = read_snapshot_id(files->state_fd, path, error);

    if (!id)
        return FALSE;
    g_print("%s\n", id);
    return TRUE;
}

int mctl_cmd_snapshot(Mctl *ctl, int argc, char **argv)
{
    gboolean leave_paused = FALSE, track_changes = FALSE;
    g_autofree char *diff = NULL;
    const GOptionEntry entries[] = {
        {"leave-paused", 0, 0, G_OPTION_ARG_NONE, &leave_paused,
         N_("Leave the VM paused after the snapshot"), NULL},
        {"track-changes", 0, 0, G_OPTION_ARG_NONE, &track_changes,
         N_("Track the pages the guest changes from this snapshot on, for diff snapshots"), NULL},
        {"diff", 0, 0, G_OPTION_ARG_FILENAME, &diff,
         N_("Save only what changed since the snapshot in BASE_DIRECTORY, the VM's last one"),
         N_("BASE_DIRECTORY")},
        {NULL},
    };
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_auto(GVariantDict) options = G_VARIANT_DICT_INIT(NULL);
    g_auto(SnapshotFiles) files = {.dirfd = -1, .state_fd = -1};
    int rc;

    if (!mctl_parse(ctl, entries, _("NAME DIRECTORY"),
                    _("Save the VM's state and memory into DIRECTORY, an existing empty "
                      "directory; a running VM is paused meanwhile. Prints the new snapshot's "
                      "ID."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 2, "snapshot NAME DIRECTORY"))
        return MCTL_EXIT_USAGE;
    files.dir = argv[1];
    if ((diff && !add_diff_base(diff, argv[1], &options, &error)) ||
        !snapshot_files_create(&files, fds, &options, &error))
        return mctl_fail(error, argv[0]);
    if (leave_paused)
        g_variant_dict_insert(&options, "leave-paused", "b", TRUE);
    if (track_changes)
        g_variant_dict_insert(&options, "track-changes", "b", TRUE);
    rc = mctl_vm_call(ctl, argv[0], "Snapshot",
                      g_variant_new("(s@a{sv})", "", g_variant_dict_end(&options)), fds,
                      SNAPSHOT_TIMEOUT_MS, _("Saving a snapshot of"));
    if (rc != MCTL_EXIT_OK)
        return rc;
    if (!snapshot_files_commit(&files, &error) || !print_snapshot_id(&files, &error))
        return mctl_fail(error, argv[0]);
    return MCTL_EXIT_OK;
}

/* ---- restore --------------------------------------------------------------------------- */

/* The snapshot in @dir opened for the daemon, which reads them: @handles (state, memory). */
static gboolean snapshot_files_open(const char *dir, GUnixFDList *fds, gint handles[2],
                                    GError **error)
{
    int dirfd = open_dir(dir, error);
    gboolean ok = dirfd >= 0;

    for (gsize i = 0; ok && i < G_N_ELEMENTS(snapshot_members); i++) {
        int fd = open_member(dirfd, dir, snapshot_members[i], error);

        handles[i] = fd < 0 ? -1 : append_fd(fd, fds, error);
        ok = handles[i] >= 0;
    }
    if (dirfd >= 0)
        close(dirfd);
    return ok;
}

/* The snapshot restored (options state-fd and memory-fd), and the ones beneath it (layers). */
static gboolean restore_files_open(const char *dir, char **layers, GUnixFDList *fds,
                                   GVariantDict *options, GError **error)
{
    GVariantBuilder b;
    gint handles[2];

    if (!snapshot_files_open(dir, fds, handles, error))
        return FALSE;
    g_variant_dict_insert(options, "state-fd", "h", handles[0]);
    g_variant_dict_insert(options, "memory-fd", "h", handles[1]);
    if (!layers)
        return TRUE;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a(hh)"));
    for (char **layer = layers; *layer; layer++) {
        if (!snapshot_files_open(*layer, fds, handles, error)) {
            g_variant_builder_clear(&b);
            return FALSE;
        }
        g_variant_builder_add(&b, "(hh)", handles[0], handles[1]);
    }
    g_variant_dict_insert_value(options, "layers", g_variant_builder_end(&b));
    return TRUE;
}

/*
 * --prefetch: the snapshot's working set, opened here like its other files; a snapshot without
 * one is an error (record it with `microvmctl working-set`), not a silent plain lazy restore.
 */
static gboolean working_set_open(const char *dir, GUnixFDList *fds, GVariantDict *options,
                                 GError **error)
{
    int dirfd = open_dir(dir, error);
    int fd = dirfd < 0 ? -1 : open_member(dirfd, dir, WORKING_SET_MEMBER, error);
    gint index = fd < 0 ? -1 : append_fd(fd, fds, error);

    if (dirfd >= 0)
        close(dirfd);
    if (index < 0)
        return FALSE;
    g_variant_dict_insert(options, "working-set", "h", index);
    return TRUE;
}

typedef struct {
    gboolean resume;
    gboolean copy_memory;
    gboolean snapshot_backends;
    gboolean clone;
    gboolean track_changes;
    gboolean lazy;
    gboolean prefetch;
} RestoreOptions;

static void restore_options_to_dict(const RestoreOptions *o, GVariantDict *options)
{
    if (o->resume)
        g_variant_dict_insert(options, "resume", "b", TRUE);
    if (o->copy_memory)
        g_variant_dict_insert(options, "copy-memory", "b", TRUE);
    if (o->snapshot_backends)
        g_variant_dict_insert(options, "use-snapshot-backends", "b", TRUE);
    if (o->clone)
        g_variant_dict_insert(options, "clone", "b", TRUE);
    if (o->track_changes)
        g_variant_dict_insert(options, "track-changes", "b", TRUE);
    if (o->lazy || o->prefetch)
        g_variant_dict_insert(options, "lazy", "b", TRUE);
}

/* A long chain on a message bus: the bus hangs up on us, which looks like a daemon gone. */
static int restore_failed(Mctl *ctl, GUnixFDList *fds, const GError *error, const char *name)
{
    int rc = mctl_fail(error, name);
    int n = g_unix_fd_list_get_length(fds);

    if (ctl->bus_name && n > BUS_MESSAGE_FDS_MAX)
        g_printerr(_("microvmctl: the call passed %d files, and a message bus takes at most %d "
                     "in one call unless configured otherwise; restore a chain this deep "
                     "through microvmd's socket (--socket)\n"),
                   n, BUS_MESSAGE_FDS_MAX);
    return rc;
}

int mctl_cmd_restore(Mctl *ctl, int argc, char **argv)
{
    RestoreOptions o = {0};
    g_auto(GStrv) layers = NULL;
    const GOptionEntry entries[] = {
        {"resume", 0, 0, G_OPTION_ARG_NONE, &o.resume,
         N_("Let the VM run at once (otherwise it is left paused)"), NULL},
        {"copy-memory", 0, 0, G_OPTION_ARG_NONE, &o.copy_memory,
         N_("Give the VM its own copy of guest RAM instead of sharing the snapshot's image"), NULL},
        {"snapshot-backends", 0, 0, G_OPTION_ARG_NONE, &o.snapshot_backends,
         N_("Root only: open the disks, taps and vsock socket the snapshot names"), NULL},
        {"clone", 0, 0, G_OPTION_ARG_NONE, &o.clone,
         N_("Make the VM a clone: new MACs for its network cards and a new vsock CID"), NULL},
        {"layer", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &layers,
         N_("A snapshot beneath the diff in DIRECTORY; once for each, the full one first"),
         N_("LAYER_DIRECTORY")},
        {"track-changes", 0, 0, G_OPTION_ARG_NONE, &o.track_changes,
         N_("Track the pages the guest changes, so that diffs of the VM can follow this "
            "snapshot"),
         NULL},
        {"lazy", 0, 0, G_OPTION_ARG_NONE, &o.lazy,
         N_("Read guest RAM from the snapshot only as the guest touches it"), NULL},
        {"prefetch", 0, 0, G_OPTION_ARG_NONE, &o.prefetch,
         N_("Restore lazily, reading the pages in DIRECTORY/working-set first"), NULL},
        {NULL},
    };
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmdManager) manager = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_auto(GVariantDict) options = G_VARIANT_DICT_INIT(NULL);
    g_autofree char *progress = NULL;

    if (!mctl_parse(ctl, entries, _("NAME DIRECTORY"),
                    _("Create the VM NAME from the snapshot in DIRECTORY."), &argc, &argv) ||
        !mctl_want_args(argc, 2, "restore NAME DIRECTORY"))
        return MCTL_EXIT_USAGE;
    if (restore_files_open(argv[1], layers, fds, &options, &error) &&
        (!o.prefetch || working_set_open(argv[1], fds, &options, &error)))
        manager = mctl_manager(ctl, &error);
    if (!manager)
        return mctl_fail(error, argv[0]);
    restore_options_to_dict(&o, &options);
    progress = g_strdup_printf("%s %s", _("Restoring"), argv[0]);
    reply = mctl_call(ctl, G_DBUS_PROXY(manager), "RestoreVM",
                      g_variant_new("(ss@a{sv})", argv[0], "", g_variant_dict_end(&options)), fds,
                      SNAPSHOT_TIMEOUT_MS, progress, &error);
    if (!reply)
        return restore_failed(ctl, fds, error, argv[0]);
    return MCTL_EXIT_OK;
}

/* ---- working-set ----------------------------------------------------------------------- */

/*
 * Was the working set in @fd (just written by the daemon) recorded from the snapshot in @dir?
 * Bytes 24-55 of the file are its snapshot's ID (lib/working-set.c). A VM restored from
 * another snapshot would otherwise leave a set that the next "restore --prefetch" refuses.
 */
static gboolean working_set_is_of(int fd, const char *dir, const char *name, GError **error)
{
    g_autofree char *want = dir_snapshot_id(dir, error);
    guint8 id[SNAPSHOT_ID_SIZE];
    g_autoptr(GString) got = g_string_sized_new(2 * SNAPSHOT_ID_SIZE);

    if (!want || !read_at(fd, WORKING_SET_MEMBER, id, sizeof(id), 24, error))
        return FALSE;
    for (gsize i = 0; i < sizeof(id); i++)
        g_string_append_printf(got, "%02x", id[i]);
    if (g_str_equal(got->str, want))
        return TRUE;
    g_set_error(error, MCTL_ERROR, MCTL_EXIT_INVALID_ARGUMENT,
                _("The VM “%s” was not restored from the snapshot in “%s”"), name, dir);
    return FALSE;
}

/*
 * DIRECTORY/working-set, written as the snapshot's files are: a new file of the user's own
 * under a temporary name in DIRECTORY, passed open for writing, renamed into place once the
 * daemon wrote it; on failure nothing is left and an older working set stays as it was.
 */
int mctl_cmd_working_set(Mctl *ctl, int argc, char **argv)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *tmp = NULL;
    int dirfd, fd, rc;
    gint index;

    if (!mctl_parse(ctl, NULL, _("NAME DIRECTORY"),
                    _("Save the working set of the VM NAME, restored lazily from the snapshot in "
                      "DIRECTORY, as DIRECTORY/working-set: the pages its guest read so far, "
                      "which “restore --prefetch” reads first."),
                    &argc, &argv) ||
        !mctl_want_args(argc, 2, "working-set NAME DIRECTORY"))
        return MCTL_EXIT_USAGE;
    dirfd = open_dir(argv[1], &error);
    if (dirfd < 0)
        return mctl_fail(error, argv[0]);
    tmp = g_strdup_printf("." WORKING_SET_MEMBER ".%08x.tmp", g_random_int());
    /* O_EXCL: a new file of the user's own, never one that was there (a link, a FIFO). */
    /* Read and written: its snapshot's ID is read back before it goes into place. */
    fd = openat(dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        g_set_error(&error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot create “%s” in “%s”: %s"),
                    tmp, argv[1], g_strerror(errno));
        close(dirfd);
        return mctl_fail(error, argv[0]);
    }
    int check_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3); /* append_fd() takes @fd */
    index = append_fd(fd, fds, &error);
    rc = index < 0
             ? mctl_fail(error, argv[0])
             : mctl_vm_call(ctl, argv[0], "SaveWorkingSet",
                            g_variant_new("(h@a{sv})", index,
                                          g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0)),
                            fds, SNAPSHOT_TIMEOUT_MS, _("Saving the working set of"));
    if (rc == MCTL_EXIT_OK && check_fd < 0)
        g_set_error(&error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO, _("Cannot read “%s” in “%s”: %s"), tmp,
                    argv[1], g_strerror(EMFILE));
    if (rc == MCTL_EXIT_OK &&
        (check_fd < 0 || !working_set_is_of(check_fd, argv[1], argv[0], &error)))
        rc = mctl_fail(error, argv[0]);
    if (check_fd >= 0)
        close(check_fd);
    if (rc == MCTL_EXIT_OK && renameat(dirfd, tmp, dirfd, WORKING_SET_MEMBER) < 0) {
        g_set_error(&error, MCTL_ERROR, MCTL_EXIT_LOCAL_IO,
                    _("Cannot put the working set in place in “%s”: %s"), argv[1],
                    g_strerror(errno));
        rc = mctl_fail(error, argv[0]);
    }
    if (rc != MCTL_EXIT_OK)
        unlinkat(dirfd, tmp, 0);
    else
        fsync(dirfd);
    close(dirfd);
    return rc;
}
