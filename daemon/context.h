/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Daemon-wide settings and state shared by the manager and the VM objects: main loop only, but
 * for the quota ledger, which locks itself.
 */
#pragma once

#include <glib.h>

#include "microvm.h"
#include "quota.h"
#include "store.h"

G_BEGIN_DECLS

typedef struct {
    char *state_dir;
    char *runtime_dir;
    MvmdStore *store;
    MvmdQuota *quota;         /* per-user limits; any thread (quota.h) */
    const char *config_path;  /* microvmd.conf, read again by Reload */
    gboolean config_required; /* given with --config: must exist */
    int kvm_api_version;      /* -1: no KVM */
    gboolean stopping;        /* SIGTERM etc.: no new starts, no restarts on reset */
    gboolean force_stop;      /* the graceful part of stopping is over */
    gboolean handing_off;     /* stopping to hand the VMs to the next daemon (handoff.h) */
    /* Why this host has no lazy restore (mvm_lazy_restore_supported(), probed once at start-up:
     * RestoreVM's `lazy` is NotSupported with it), NULL when it has. Owned. */
    char *no_lazy_restore;
    /* Custom CPU templates (cpu-templates.h): --cpu-template-dir, else microvmd.conf's
     * [CPUTemplates] Directory= (read again by Reload), else MVMD_CPU_TEMPLATE_DIR. Owned. */
    char *cpu_template_dir;
    gboolean cpu_template_dir_fixed; /* given with --cpu-template-dir: Reload keeps it */
    /* Snapshot memory shared by the VMs restored from one file, per owner (any thread). */
    MvmMemoryImages *memory_images;
} MvmdContext;

G_END_DECLS
