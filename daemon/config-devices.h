/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device keys of a VM definition (documented at CreateVM in
 * introspection/org.microvmd.MicroVM1.Manager.xml): `disks` aa{sv}, `network` aa{sv}, `vsock`
 * a{sv}, `rng` b. Parsed and validated here, shown by GetConfig,
 * stored (as GVariant text) when they hold no file descriptor, and handed to libmicrovm as
 * MvmDiskConfig / MvmNetConfig / vsock_cid / rng.
 */
#pragma once

#include <gio/gio.h>

#include "microvm.h"

G_BEGIN_DECLS

/* The daemon's own bounds; all devices together: MVM_MAX_VIRTIO_DEVICES (microvm.h). */
#define MVMD_DISKS_MAX 16
#define MVMD_NICS_MAX  8

typedef struct {
    char *path; /* absolute; NULL when fd >= 0 */
    int fd;
    gboolean read_only;
    MvmRateLimit rate_limit; /* `bandwidth` and `ops`; all zero: none */
} MvmdDisk;

typedef struct {
    char *tap; /* interface name; NULL when fd >= 0 */
    int fd;
    gboolean has_mac; /* @mac holds one: the caller's `mac`, or the one the machine got */
    /*
     * No `mac` was given: @mac is the one the machine got at its first start (the library
     * chose it), given again at each later start while the daemon runs, shown by GetConfig,
     * never stored (a stored definition keeps asking for a generated one).
     */
    gboolean mac_chosen;
    guint8 mac[6];
    MvmRateLimit rx_rate_limit; /* `rx-bandwidth`, `rx-ops`: what the guest receives */
    MvmRateLimit tx_rate_limit; /* `tx-bandwidth`, `tx-ops`: what it sends */
} MvmdNic;

typedef struct {
    GPtrArray *disks; /* MvmdDisk *, never NULL */
    GPtrArray *nics;  /* MvmdNic *, never NULL */
    /* 0: no vsock device, or (RestoreVM with 'clone') one whose CID the restore chooses */
    guint32 vsock_cid;
    char *vsock_uds_path; /* NULL: no vsock device */
    gboolean rng;
    /*
     * RestoreVM by root with 'use-snapshot-backends': the machine gets the back ends its
     * snapshot names, and the records above are filled from it once it is restored.
     */
    gboolean from_snapshot;
} MvmdDevices;

void mvmd_devices_init(MvmdDevices *devices);
void mvmd_devices_clear(MvmdDevices *devices);

/* Each sets MVMD_ERROR_INVALID_ARGUMENT naming the key (and entry), e.g. "disks[1].path". */
gboolean mvmd_devices_parse_disks(MvmdDevices *devices, GVariant *value, GUnixFDList *fd_list,
                                  GError **error);
gboolean mvmd_devices_parse_network(MvmdDevices *devices, GVariant *value, GUnixFDList *fd_list,
                                    GError **error);
/* @cid_optional: RestoreVM of a clone, where a missing `cid` has the restore choose one. */
gboolean mvmd_devices_parse_vsock(MvmdDevices *devices, GVariant *value, gboolean cid_optional,
                                  GError **error);

/*
 * RestoreVM's back-end options: `disks`, `network` and `vsock` of @options (a{sv}, types
 * already checked), parsed as the config keys of the same names. @given: was any there?
 * Only a @clone may name NIC MACs and leave out (or change) the vsock `cid`: any other guest
 * knows the snapshot's.
 */
gboolean mvmd_devices_parse_backends(MvmdDevices *devices, GVariant *options, GUnixFDList *fd_list,
                                     gboolean clone, gboolean *given, GError **error);

/*
 * After a start or restore: the devices as the machine @mvm has them, so that GetConfig shows
 * what the guest got. The MACs (a NIC without `mac` gets the one the library chose, kept for
 * later starts, see MvmdNic.mac_chosen), the vsock CID (a restore's: the snapshot's, or a
 * clone's new one) and the rng; with from_snapshot the snapshot's back ends too (and
 * from_snapshot ends).
 */
void mvmd_devices_update_from_mvm(MvmdDevices *devices, const MvmVmConfig *mvm);

/* Rules across the keys (device count). */
gboolean mvmd_devices_check(const MvmdDevices *devices, GError **error);
/* Does any device come as a descriptor (then the definition cannot be stored)? */
gboolean mvmd_devices_have_fds(const MvmdDevices *devices);

/*
 * Adds the present device keys to @b (a{sv}); an fd shows as `fd-passed` true, or, with @fds
 * (a handoff's), as `fd`: a handle into @fds, where the descriptor is appended (borrowed).
 * @stored: for the stored definition, which leaves out the MACs the library chose.
 */
void mvmd_devices_to_variant(const MvmdDevices *devices, gboolean stored, GArray *fds,
                             GVariantBuilder *b);

/* @fd appended to @fds (of int, borrowed), and the handle that names it there. */
GVariant *mvmd_config_fd_handle(GArray *fds, int fd);

/* Fills the lib config; fds are borrowed (the VM dups what it keeps). */
void mvmd_devices_to_mvm(const MvmdDevices *devices, MvmVmConfig *mvm);

/*
 * An fd argument (type h) from @fd_list, dup'ed. @kinds lists what it may be: 'r' a regular
 * file, 'w' a regular file the guest may write (on a local file system only), 'b' a block
 * device, 'c' a character device, 'd' a directory.
 */
int mvmd_config_take_fd(GVariant *value, GUnixFDList *fd_list, const char *key, const char *kinds,
                        GError **error);

/*
 * Whether every descriptor the method call @invocation was sent with arrived; else
 * MVMD_ERROR_NO_RESOURCES. A daemon out of descriptors receives the message without them.
 */
gboolean mvmd_check_fds_arrived(GDBusMethodInvocation *invocation, GError **error);

/*
 * A directory argument of a method (Snapshot, RestoreVM): an absolute path in @dir, or, when
 * @dir is empty, the descriptor @fdv (h, the option "dir-fd") from @fd_list, dup'ed into
 * @fd_out. Exactly one of the two. MVMD_ERROR_INVALID_ARGUMENT naming @key.
 */
gboolean mvmd_parse_dir_argument(const char *key, const char *dir, GVariant *fdv,
                                 GUnixFDList *fd_list, char **dir_out, int *fd_out, GError **error);

/*
 * A disk's `bandwidth` and `ops` (a{sv} each, in @dict; with @prefix before the names, "" for
 * a disk): each one present replaces its token bucket in @limit (an empty a{sv}: no limit), an
 * absent one leaves it. On a bad value MVMD_ERROR_INVALID_ARGUMENT names the key under @where
 * ("disks[0].ops.size") and @limit is unchanged.
 */
gboolean mvmd_parse_rate_limit_update(GVariant *dict, const char *where, const char *prefix,
                                      MvmRateLimit *limit, GError **error);
/* A NIC's `rx-bandwidth`, `rx-ops`, `tx-bandwidth` and `tx-ops`, the same way (both or none). */
gboolean mvmd_parse_nic_rate_limits(GVariant *dict, const char *where, MvmRateLimit *rx,
                                    MvmRateLimit *tx, GError **error);
/* The set parts of @limit as `bandwidth` and `ops` entries after @prefix, into an open a{sv}. */
void mvmd_rate_limit_add_to(GVariantBuilder *b, const char *prefix, const MvmRateLimit *limit);

/* A dictionary key that may appear, and its type. */
typedef struct {
    const char *key;
    const char *type;
} MvmdKeySpec;

/*
 * Rejects unknown keys and wrong types in @dict (a{sv}) with MVMD_ERROR_INVALID_ARGUMENT:
 * "config key '@where.KEY'", or "option 'KEY'" when @where is NULL (method options).
 */
gboolean mvmd_config_check_keys(GVariant *dict, const MvmdKeySpec *allowed, gsize n,
                                const char *where, GError **error);

/* MVMD_ERROR_INVALID_ARGUMENT "config key '@key': <message>". Returns FALSE. */
gboolean mvmd_config_invalid(GError **error, const char *key, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

G_END_DECLS
