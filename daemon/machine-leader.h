/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Leader processes for systemd-machined (machined.h). machined keeps one machine per leader
 * process, moves the leader into a scope of its own (machine-NAME.scope) and signals it for
 * `machinectl poweroff`, `reboot` and `terminate`. Every VM runs inside microvmd, so each
 * running VM gets a stand-in: a small process that does nothing but pass those signals on.
 *
 * Leaders are not forked from microvmd itself: a child of a process that maps every guest's
 * memory and holds every guest's descriptors would keep them all (its copy of the mappings
 * and the descriptor table) for as long as its own VM runs. A factory, forked at start
 * while microvmd is still one thread with nothing mapped or open of any guest, forks them
 * instead. It and its leaders never exec (the process's deny list forbids it) and use
 * nothing but system calls.
 *
 * A leader's only link is a pipe: microvmd holds the read end, the leader writes one byte per
 * request (MvmdLeaderRequest) and exits when the read end closes (the VM stopped, or microvmd
 * is gone). It blocks every signal and reads them from a signalfd, so nothing kills it but
 * SIGKILL (which microvmd sees as the pipe's end).
 */
#pragma once

#include <sys/types.h>

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
    MVMD_LEADER_POWER_OFF = 'p', /* SIGRTMIN+4: machinectl poweroff */
    MVMD_LEADER_REBOOT = 'r',    /* SIGINT: machinectl reboot */
    MVMD_LEADER_TERMINATE = 't', /* SIGTERM: the scope is stopped (machinectl terminate) */
} MvmdLeaderRequest;

/*
 * Forks the factory. Call it while the process has one thread and holds no guest (main.c,
 * right after the sandbox's deny list). Without it (it failed, or was never called)
 * mvmd_leader_spawn() fails.
 */
gboolean mvmd_leader_factory_start(GError **error);
gboolean mvmd_leader_factory_running(void);

/*
 * @pipe_fd (owned by the callee, -1 on error) is the leader's read end; @pid its process.
 * Called on the main loop, once, unless the spawn was cancelled first.
 */
typedef void (*MvmdLeaderSpawnedFunc)(int pipe_fd, pid_t pid, const GError *error,
                                      gpointer user_data);

typedef struct _MvmdLeaderSpawn MvmdLeaderSpawn;

/* Asks the factory for a leader; the answer comes back on the main loop. */
MvmdLeaderSpawn *mvmd_leader_spawn(MvmdLeaderSpawnedFunc func, gpointer user_data);
/* @func is not called; a leader that arrives later is let go at once. */
void mvmd_leader_spawn_cancel(MvmdLeaderSpawn *spawn);

G_END_DECLS
