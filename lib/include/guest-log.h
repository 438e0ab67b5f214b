/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Messages a guest causes (a broken virtqueue, a failed back end, ...) go through its VM's
 * limiter: a token bucket of MVM_GUEST_LOG_BURST messages, refilled by one every
 * MVM_GUEST_LOG_INTERVAL_US. Every VM shares the host's log, so a guest must not be able to
 * flood it, nor drown out the others' messages. What is dropped is counted and said in one
 * line before the next message that passes (and when the VM is freed).
 */
#pragma once

#include "microvm.h"

G_BEGIN_DECLS

typedef struct {
    GMutex lock;
    guint tokens;
    gint64 refilled_us; /* monotonic time the tokens were last counted up to */
    guint64 suppressed; /* dropped since the last message that passed */
    const char *cause;  /* static, for the summary: "the guest" */
    MvmVm *vm;          /* for the sink */
    MvmVmLogFunc func;  /* NULL: g_log() */
    gpointer func_data;
} MvmGuestLog;

/*
 * @vm: passed to the sink (may be NULL). @cause: who makes the messages, as the summary says
 * it ("N more messages caused by @cause suppressed"); static. The daemon limits what socket
 * clients cause the same way.
 */
void mvm_guest_log_init(MvmGuestLog *log, MvmVm *vm, const char *cause);
/* Says what was suppressed, if anything, now; the limiter goes on. Any thread. */
void mvm_guest_log_flush(MvmGuestLog *log);
/* Says what was suppressed, if anything. */
void mvm_guest_log_clear(MvmGuestLog *log);
void mvm_guest_log_set_func(MvmGuestLog *log, MvmVmLogFunc func, gpointer user_data);

/* Any thread. @log may be NULL (a device without a VM, in tests): logged, not limited. */
void mvm_guest_log(MvmGuestLog *log, GLogLevelFlags level, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

G_END_DECLS
