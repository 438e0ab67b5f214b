/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "guest-log.h"

void mvm_guest_log_init(MvmGuestLog *log, MvmVm *vm, const char *cause)
{
    *log = (MvmGuestLog){.cause = cause};
    g_mutex_init(&log->lock);
    log->tokens = MVM_GUEST_LOG_BURST;
    log->refilled_us = g_get_monotonic_time();
    log->vm = vm;
}

static void emit(MvmGuestLog *log, GLogLevelFlags level, const char *message)
{
    if (log != NULL && log->func != NULL)
        log->func(log->vm, level, message, log->func_data);
    else
        g_log(G_LOG_DOMAIN, level, "%s", message);
}

/* Lock held. */
static void say_suppressed(MvmGuestLog *log)
{
    g_autofree char *line = NULL;

    if (log->suppressed == 0)
        return;
    line = g_strdup_printf("%" G_GUINT64_FORMAT " more message%s caused by %s suppressed "
                           "(at most %d at once, then one every %d s)",
                           log->suppressed, log->suppressed == 1 ? "" : "s", log->cause,
                           MVM_GUEST_LOG_BURST, (int)(MVM_GUEST_LOG_INTERVAL_US / G_USEC_PER_SEC));
    log->suppressed = 0;
    emit(log, G_LOG_LEVEL_MESSAGE, line);
}

void mvm_guest_log_flush(MvmGuestLog *log)
{
    g_mutex_lock(&log->lock);
    say_suppressed(log);
    g_mutex_unlock(&log->lock);
}

void mvm_guest_log_clear(MvmGuestLog *log)
{
    mvm_guest_log_flush(log);
    g_mutex_clear(&log->lock);
}

void mvm_guest_log_set_func(MvmGuestLog *log, MvmVmLogFunc func, gpointer user_data)
{
    g_mutex_lock(&log->lock);
    log->func = func;
    log->func_data = user_data;
    g_mutex_unlock(&log->lock);
}

/* Lock held. One token per whole interval since the last count, up to the burst. */
static gboolean take_token(MvmGuestLog *log)
{
    gint64 now = g_get_monotonic_time();
    gint64 earned = (now - log->refilled_us) / MVM_GUEST_LOG_INTERVAL_US;

    if (earned > 0) {
        log->tokens = (guint)MIN((gint64)log->tokens + earned, MVM_GUEST_LOG_BURST);
        /* A full bucket keeps no credit; otherwise the part of an interval is kept. */
        log->refilled_us = log->tokens == MVM_GUEST_LOG_BURST
                               ? now
                               : log->refilled_us + earned * MVM_GUEST_LOG_INTERVAL_US;
    }
    if (log->tokens == 0)
        return FALSE;
    log->tokens--;
    return TRUE;
}

void mvm_guest_log(MvmGuestLog *log, GLogLevelFlags level, const char *format, ...)
{
    g_autofree char *message = NULL;
    va_list args;

    if (log != NULL) {
        g_mutex_lock(&log->lock);
        if (!take_token(log)) {
            log->suppressed++;
            g_mutex_unlock(&log->lock);
            return;
        }
    }
    va_start(args, format);
    message = g_strdup_vprintf(format, args);
    va_end(args);
    if (log != NULL)
        say_suppressed(log);
    emit(log, level, message);
    if (log != NULL)
        g_mutex_unlock(&log->lock);
}
