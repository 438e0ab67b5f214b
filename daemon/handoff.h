/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Restart without stopping a guest: the running VMs handed to the next microvmd through
 * systemd's file-descriptor store (docs/architecture.md, "Handing VMs to the next daemon").
 *
 * The daemon that leaves pauses each VM, saves its vCPU and device state into a memfd and
 * pushes, one descriptor per FDSTORE=1 message, named "mvmd.N.KIND" (N numbers the VMs of
 * one handoff; names are short, since systemd passes them all in one environment string):
 *   state    the snapshot `state` (format version and digest as any snapshot's)
 *   memory   the guest RAM memfd itself (lib maps it again, shared: no copy)
 *   diskN    the open back end of each disk, in device order
 *   nicN     the open tap of each NIC
 *   fdN      each descriptor the definition's caller passed (kernel-fd, initrd-fd, a disk's
 *            or NIC's fd) that is not one of the back ends above: systemd's store keeps an
 *            open file once, and the library's back end is a dup of its caller's descriptor
 *   def      last: a key file with the definition ([VM], [Config], as the store writes
 *            them, the caller's descriptors as handles) and [Handoff] (Version, BootID,
 *            Time, Running, GenerationID, Disks, NICs, and CallerFDs: the kind each handle
 *            names); a set from another boot, or older than a restart takes, is refused
 * A VM whose `def` is missing was not handed over completely and is dropped. The next daemon
 * takes them from $LISTEN_FDS / $LISTEN_FDNAMES, removes every one of them from the store
 * before a guest runs again (FDSTOREREMOVE=1: a later start must never find old state), and
 * restores each VM from them.
 */
#pragma once

#include <gio/gio.h>

#include "definition.h"
#include "listen-fds.h"

G_BEGIN_DECLS

#define MVMD_HANDOFF_FD_PREFIX "mvmd."
#define MVMD_HANDOFF_VERSION   1

/* One VM as the leaving daemon hands it over (descriptors borrowed). */
typedef struct {
    const MvmdVmDefinition *definition;
    gboolean running; /* resumed by the next daemon; else left paused */
    gboolean has_generation_id;
    guint8 generation_id[MVM_GENERATION_ID_SIZE];
    int state_fd;
    int memory_fd;
    const MvmVmConfig *backends; /* disks[].fd, nics[].tap_fd: the open back ends */
} MvmdHandoffOut;

/*
 * Whether this daemon may hand its VMs over: systemd keeps a store for it ($FDSTORE, set by
 * systemd 254 and later, or @fd_store_option, which the unit passes as --fd-store on older
 * ones) and $NOTIFY_SOCKET reaches it. @why says why not.
 */
gboolean mvmd_handoff_available(gboolean fd_store_option, const char **why);

/*
 * How many VMs the handoff beginning hands over (at most): each is sure of its share of the
 * store and of the names (mvmd_handoff_push()).
 */
void mvmd_handoff_expect(guint n_vms);

/*
 * Pushes @vm into the store, if the store ($FDSTORE, else the unit's 16384) and the next
 * daemon's $LISTEN_FDNAMES (96 KiB of names) still take it: else MVMD_ERROR_LIMIT_REACHED and
 * nothing is pushed. On failure, what was pushed of it is removed again (best effort; without
 * its `def` the next daemon drops the rest anyway).
 */
gboolean mvmd_handoff_push(const MvmdHandoffOut *vm, GError **error);

/* FDSTOREREMOVE=1 of @name; FALSE (logged) when it could not be sent. */
gboolean mvmd_handoff_remove_from_store(const char *name);

/* One VM as the next daemon receives it: owns its descriptors. */
typedef struct {
    char *uuid;
    MvmdVmDefinition *definition;
    gboolean running;
    gboolean has_generation_id;
    guint8 generation_id[MVM_GENERATION_ID_SIZE];
    int state_fd;
    int memory_fd;
    MvmVmConfig *backends; /* n_vcpus etc. unset: only disks, nics, vsock (owned fds) */
} MvmdHandoffIn;

void mvmd_handoff_in_free(MvmdHandoffIn *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdHandoffIn, mvmd_handoff_in_free)

/*
 * Takes the handed-over descriptors out of @passed, removes them all from systemd's store,
 * and returns the VMs whose sets are complete and readable (MvmdHandoffIn *, owned); each
 * VM refused is logged with the reason and its descriptors are closed.
 */
GPtrArray *mvmd_handoff_collect(MvmdListenFds *passed);

/*
 * Whether systemd is stopping us to start us again (a restart job on our unit: `systemctl
 * restart`, a package upgrade's restart), asked on @connection without blocking; @func gets
 * the answer, FALSE when systemd cannot tell. A plain stop, or the host going down, is no
 * restart: the guests are shut down then, as without a store.
 */
typedef void (*MvmdHandoffRestartFunc)(gboolean restarting, gpointer user_data);
void mvmd_handoff_ask_if_restarting(GDBusConnection *connection, MvmdHandoffRestartFunc func,
                                    gpointer user_data);

G_END_DECLS
