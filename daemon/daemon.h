/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gio/gio.h>

#include "quota.h"

G_BEGIN_DECLS

typedef enum {
    MVMD_BUS_SYSTEM,
    MVMD_BUS_SESSION,
    MVMD_BUS_ADDRESS,
} MvmdBusKind;

typedef struct {
    MvmdBusKind bus;
    char *address;
    char *state_dir;
    char *runtime_dir;
    gboolean replace;
    guint shutdown_timeout_sec; /* graceful part of stopping every VM at exit */
    MvmdQuota *quota;           /* taken: the limits read from config_path */
    const char *config_path;
    gboolean config_required;
    const char *cpu_template_dir;    /* where custom CPU templates are (never NULL) */
    gboolean cpu_template_dir_fixed; /* from --cpu-template-dir: microvmd.conf does not change it */
    gboolean fd_store;               /* --fd-store: systemd keeps a store for us (handoff.h) */
} MvmdDaemonOptions;

/* The exit status after SIGUSR1 handed the VMs over (EX_TEMPFAIL: Restart=on-failure starts
 * the next daemon). */
#define MVMD_EXIT_HANDED_OVER 75

/* Runs the daemon until it is told to stop; returns the exit status. */
int mvmd_daemon_run(const MvmdDaemonOptions *options);

G_END_DECLS
