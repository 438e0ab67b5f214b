/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cage of the threads a guest drives (sandbox.c): each vCPU and I/O thread installs a
 * seccomp filter and a Landlock domain on itself before it touches anything the guest controls.
 * A refused system call fails with EPERM and marks the thread; the VM then crashes with
 * MVM_EXIT_SANDBOX_VIOLATION naming the call (vm-run.c, iothread.c).
 */
#pragma once

#include <glib.h>

#include "microvm.h"

G_BEGIN_DECLS

/* Who a thread is, and what its VM has: the filter is chosen by these flags. */
typedef enum {
    MVM_SANDBOX_VCPU = 1 << 0,  /* a vCPU thread: KVM_RUN and device register emulation */
    MVM_SANDBOX_IO = 1 << 1,    /* a VM's I/O thread: the virtio back ends */
    MVM_SANDBOX_VSOCK = 1 << 2, /* the VM has vsock: its I/O thread connects Unix sockets */
} MvmSandboxFlags;

/*
 * On the thread that creates sandboxed threads, before it does: builds the filter for @flags
 * (once per process) and installs the SIGSYS handler, so that failures are that caller's.
 */
gboolean mvm_sandbox_prepare(MvmSandboxFlags flags, GError **error);

/*
 * On the new thread itself, first thing: SIGSYS unblocked, NO_NEW_PRIVS, Landlock (when the
 * kernel has it), then the filter prepared for @flags. @who names the thread in a violation's
 * reason ("vCPU 0"). Nothing to do when the mode is MVM_SANDBOX_MODE_OFF.
 */
gboolean mvm_sandbox_enter(MvmSandboxFlags flags, const char *who, GError **error);

/* Whether this thread made a system call its filter refused. */
gboolean mvm_sandbox_violated(void);
/* The first refused call of this thread, as a reason for the VM's exit; NULL if none. */
char *mvm_sandbox_dup_violation(void);

G_END_DECLS
