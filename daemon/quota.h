/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Per-user quotas: how many VMs, how much guest memory and how many vCPUs the VMs one uid owns
 * may add up to. The limits come from microvmd.conf (microvmd(8), QUOTAS):
 *
 *   [Quota]              defaults for every user: VMs=64, MemoryMiB=the host's RAM, VCPUs=256
 *   [Quota:alice]        one user (a name or a uid); keys it leaves out come from [Quota]
 *   [Quota:root]         root is unlimited unless a group names it
 *
 * Every VM object counts, whatever its state: a defined VM holds its memory and vCPUs as a
 * running one does, so what a user may start is never more than what the quota allows.
 *
 * The ledger is shared by the main loop (CreateVM, Delete, Reload) and the operations' worker
 * threads (a RestoreVM learns the snapshot's size only there, just before guest memory is
 * allocated): its state is behind a lock.
 */
#pragma once

#include <sys/types.h>

#include <glib.h>

#include "config-file.h"

G_BEGIN_DECLS

#define MVMD_QUOTA_UNLIMITED G_MAXUINT64

typedef struct _MvmdQuota MvmdQuota;

/*
 * The limits of the default config (no file): the [Quota] defaults, root unlimited. Each charge
 * holds a reference, so a worker still restoring when the daemon exits never finds it freed.
 */
MvmdQuota *mvmd_quota_new(void);
void mvmd_quota_unref(MvmdQuota *quota);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmdQuota, mvmd_quota_unref)

/*
 * Reads the limits from @path, replacing the ones in force only when the whole file is valid.
 * A missing file is an error when @must_exist, else the defaults. An unknown key in a Quota
 * group, a value that is no count or `infinity`, or a user name that does not resolve are
 * errors (G_KEY_FILE_ERROR), naming the file, group and key; what was charged stays.
 */
gboolean mvmd_quota_load(MvmdQuota *quota, const char *path, gboolean must_exist, GError **error);

/*
 * What one VM holds against its owner's quota. Embedded in the VM's object; between charge and
 * release the ledger's lock guards it (a worker may resize it while the main loop reads it).
 */
typedef struct {
    MvmdQuota *quota; /* NULL: nothing held */
    uid_t uid;
    guint64 vms; /* 1 for a VM, 0 for memory held beside the VMs (an image) */
    guint64 memory_mib;
    guint64 vcpus;
} MvmdQuotaCharge;

/*
 * Charges one VM of @memory_mib and @vcpus to @uid into @charge (which must hold nothing).
 * Over a limit: FALSE with MVMD_ERROR_QUOTA_EXCEEDED naming it, nothing charged; unless
 * @force (definitions loaded at start: a lowered quota never loses a stored VM).
 */
gboolean mvmd_quota_charge(MvmdQuota *quota, uid_t uid, guint64 memory_mib, guint64 vcpus,
                           gboolean force, MvmdQuotaCharge *charge, GError **error);

/*
 * Any thread: charges @memory_mib to @uid that no VM holds (a memory image clones of a snapshot
 * share, lib's MvmImageChargeFunc), as mvmd_quota_charge() does but for no VM and no vCPU.
 */
gboolean mvmd_quota_charge_memory(MvmdQuota *quota, uid_t uid, guint64 memory_mib,
                                  MvmdQuotaCharge *charge, GError **error);
/*
 * Any thread: makes @charge hold @memory_mib and @vcpus instead (a restore, once the snapshot
 * says). Growing past a limit fails as mvmd_quota_charge() does, and changes nothing. A charge
 * released meanwhile (the VM was deleted) stays released and fails (MVMD_ERROR_FAILED).
 */
gboolean mvmd_quota_resize(MvmdQuotaCharge *charge, guint64 memory_mib, guint64 vcpus,
                           GError **error);

/* Gives back what @charge holds; then it holds nothing. Releasing twice is harmless. */
void mvmd_quota_release(MvmdQuotaCharge *charge);

G_END_DECLS
