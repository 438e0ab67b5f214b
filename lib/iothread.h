/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VM's I/O thread: a GMainContext of its own running on one thread, where
 * the device back ends do their work (queue kicks from ioeventfds, tap and
 * unix sockets, disk I/O), so that a vCPU never waits for a disk or a network.
 *
 * A pause parks the thread (mvm_io_thread_quiesce) so that nothing writes
 * guest memory or device state while the VM is paused or being saved; a
 * restored VM's thread is parked from the start, until the first resume.
 */
#pragma once

#include <glib.h>

#include "sandbox.h"

G_BEGIN_DECLS

typedef struct _MvmIoThread MvmIoThread;

typedef gboolean (*MvmIoFdFunc)(int fd, GIOCondition condition, gpointer user_data);
typedef void (*MvmIoThreadFunc)(gpointer user_data);

/*
 * Starts the thread and returns once it is in its sandbox (sandbox.h: @sandbox is
 * MVM_SANDBOX_IO, with MVM_SANDBOX_VSOCK for a VM with vsock).
 */
MvmIoThread *mvm_io_thread_new(const char *name, MvmSandboxFlags sandbox, GError **error);
/*
 * @func runs on the I/O thread, once, after a dispatch in which its sandbox refused a system
 * call; it is expected to end the VM (mvm_vm_guest_exit names the call).
 */
void mvm_io_thread_set_violation_func(MvmIoThread *t, MvmIoThreadFunc func, gpointer user_data);
/* Stops the loop and joins the thread (idempotent); sources stay attached but never run again. */
void mvm_io_thread_stop(MvmIoThread *t);
/* Stops the thread if needed; sources still attached are destroyed with the context. */
void mvm_io_thread_free(MvmIoThread *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmIoThread, mvm_io_thread_free)

GMainContext *mvm_io_thread_get_context(MvmIoThread *t);
/*
 * Watches @fd on the I/O thread; @func runs there until it returns FALSE or the
 * source is destroyed. Returns the source (a new reference): destroy it to stop.
 */
GSource *mvm_io_thread_add_fd(MvmIoThread *t, int fd, GIOCondition condition, MvmIoFdFunc func,
                              gpointer user_data);

/* Parks the thread between two dispatches and returns once it is parked; nests. */
void mvm_io_thread_quiesce(MvmIoThread *t);
void mvm_io_thread_unquiesce(MvmIoThread *t);
/* TRUE while the thread sits parked (no source dispatches); any thread. */
gboolean mvm_io_thread_is_parked(MvmIoThread *t);
gboolean mvm_io_thread_is_current(MvmIoThread *t);

G_END_DECLS
