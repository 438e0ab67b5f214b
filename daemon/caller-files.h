/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <gio/gio.h>

#include "microvm.h"

G_BEGIN_DECLS

/*
 * Files a caller hands over open, for the daemon to write a snapshot into (Snapshot's
 * `state-fd` and `memory-fd`) or to read one from (RestoreVM's). microvmd runs as root: for a
 * caller who is not, it never creates, truncates, renames or unlinks a path, nor opens one; the
 * caller creates the files itself and passes them. Each is checked here before a byte moves.
 *
 * Every check is made without waiting on anyone: the file's attributes come from statx() with
 * AT_STATX_DONT_SYNC (no round trip to a FUSE server or an NFS host) and its file system from
 * /proc/self/mountinfo, so these run on the main loop. Only files on disk and memory file
 * systems are taken: one on proc, sysfs and the like would have root's privileges act on the
 * kernel, and the caller's own FUSE server could stall a write or read for ever while the VM
 * is paused.
 */

typedef enum {
    MVMD_CALLER_FILE_READ,  /* a regular file opened for reading */
    MVMD_CALLER_FILE_WRITE, /* a regular file of its own (one link), opened for writing, no O_APPEND
                             */
} MvmdCallerFileUse;

/*
 * The options `state-fd` and `memory-fd` (handles into @fd_list) of @options: both or neither.
 * With neither, TRUE and both fds -1. With both, the duplicated descriptors (the caller's to
 * close) once they pass the checks for @use: regular files on a local file system
 * (mvmd_fstype_is_local()), opened the right way,
 * two different files; for MVMD_CALLER_FILE_WRITE also one link each and, unless @owner is
 * (uid_t)-1, owned by @owner. FALSE with MVMD_ERROR_INVALID_ARGUMENT and the reason otherwise.
 */
gboolean mvmd_caller_files_parse(GVariant *options, GUnixFDList *fd_list, MvmdCallerFileUse use,
                                 uid_t owner, int *state_fd, int *memory_fd, GError **error);

/*
 * RestoreVM's `layers` (a(hh), type already checked) of @options: each pair's descriptors
 * duplicated and checked as mvmd_caller_files_parse() checks `state-fd` and `memory-fd` for
 * MVMD_CALLER_FILE_READ, the error naming the entry (`layers[2].memory`). More than @max
 * entries are refused before any is looked at. No `layers` or an empty array: TRUE, NULL and 0.
 * Free what is returned with mvmd_snapshot_layers_free().
 */
gboolean mvmd_caller_layers_parse(GVariant *options, GUnixFDList *fd_list, guint max,
                                  MvmSnapshotFiles **layers, guint *n_layers, GError **error);

/*
 * One descriptor a caller passed to be read (RestoreVM's `working-set`) or written
 * (SaveWorkingSet's @fd), checked as mvmd_caller_files_parse() checks each of `state-fd` and
 * `memory-fd` for @use (and @owner), and, to be read, of at most @max_size bytes (0: any size).
 * @label names it in the errors ("option 'working-set'", "argument 'fd'"). FALSE with
 * MVMD_ERROR_INVALID_ARGUMENT and the reason otherwise; @fd stays the caller's either way.
 */
gboolean mvmd_caller_fd_check(int fd, const char *label, MvmdCallerFileUse use, uid_t owner,
                              guint64 max_size, GError **error);

/*
 * The option @key (type h, already checked) of @options: the descriptor duplicated and checked
 * with mvmd_caller_fd_check(), in @fd (the caller's to close). Absent: TRUE and -1.
 */
gboolean mvmd_caller_file_parse(GVariant *options, GUnixFDList *fd_list, const char *key,
                                MvmdCallerFileUse use, uid_t owner, guint64 max_size, int *fd,
                                GError **error);

/* Closes the @n pairs of @layers later (fd-closer.h) and frees the array; NULL is ignored. */
void mvmd_snapshot_layers_free(MvmSnapshotFiles *layers, guint n);

/*
 * statx() of any descriptor a caller passed, without waiting on anyone, and
 * mvmd_caller_file_system_check() of its file system. FALSE with MVMD_ERROR_INVALID_ARGUMENT
 * and the reason (no key), or MVMD_ERROR_NO_RESOURCES when the daemon could not look.
 */
gboolean mvmd_caller_fd_statx(int fd, gboolean strict, struct statx *stx, GError **error);

/*
 * The file system of the file @stx describes (found by its device in /proc/self/mountinfo):
 * never FUSE (fuse, fuseblk, fuse.*); with @strict, also one of mvmd_fstype_is_local() and
 * one this daemon sees mounted. Snapshot and restore files, and disk images, are strict. A
 * daemon that cannot read its mount table (out of descriptors or memory) refuses any file,
 * strict or not, with MVMD_ERROR_NO_RESOURCES.
 */
gboolean mvmd_caller_file_system_check(const struct statx *stx, gboolean strict, GError **error);

/* Whether the daemon may read and write files on @fstype: ext2/3/4, xfs, btrfs, f2fs, tmpfs. */
gboolean mvmd_fstype_is_local(const char *fstype);

/*
 * The file system type ("ext4", "fuse.sshfs") of the first mount of device @major:@minor in
 * @mountinfo (the text of /proc/PID/mountinfo), NULL when none.
 */
char *mvmd_mountinfo_fstype(const char *mountinfo, guint major, guint minor);

G_END_DECLS
