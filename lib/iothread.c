/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "iothread.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <glib-unix.h>

#include "error-private.h"

struct _MvmIoThread {
    GMainContext *context;
    GMainLoop *loop;
    GThread *thread;
    MvmSandboxFlags sandbox;

    GMutex lock;
    GCond cond;
    guint quiesce_depth; /* > 0: the thread must park */
    gboolean parked;
    gboolean stopping;
    gboolean sync_done;
    gboolean started;    /* the thread is in its sandbox, or failed to enter it */
    GError *start_error; /* why it failed */
    MvmIoThreadFunc on_violation;
    gpointer on_violation_data;
};

/* Tells mvm_io_thread_new() how entering the sandbox went; takes @error. */
static void report_start(MvmIoThread *t, GError *error)
{
    g_mutex_lock(&t->lock);
    t->start_error = error;
    t->started = TRUE;
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
}

/* After a dispatch in which the sandbox refused a call: once, the VM's handler ends the VM. */
static void report_violation(MvmIoThread *t)
{
    g_mutex_lock(&t->lock);
    MvmIoThreadFunc func = g_steal_pointer(&t->on_violation);
    gpointer data = t->on_violation_data;
    g_mutex_unlock(&t->lock);
    if (func != NULL)
        func(data);
}

static gpointer io_thread_main(gpointer data)
{
    MvmIoThread *t = data;
    GError *error = NULL;

    /* Nothing of a guest's has reached this thread yet: no source is attached. */
    if (!mvm_sandbox_enter(t->sandbox, "I/O", &error)) {
        report_start(t, error);
        return NULL;
    }
    report_start(t, NULL);
    g_main_context_push_thread_default(t->context);
    /* g_main_loop_run(), with a look at the sandbox after each round. */
    while (g_main_loop_is_running(t->loop)) {
        g_main_context_iteration(t->context, TRUE);
        if (G_UNLIKELY(mvm_sandbox_violated()))
            report_violation(t);
    }
    g_main_context_pop_thread_default(t->context);
    return NULL;
}

static gboolean wait_started(MvmIoThread *t, GError **error)
{
    g_mutex_lock(&t->lock);
    while (!t->started)
        g_cond_wait(&t->cond, &t->lock);
    g_mutex_unlock(&t->lock);
    if (t->start_error == NULL)
        return TRUE;
    g_propagate_prefixed_error(error, g_steal_pointer(&t->start_error),
                               "cannot sandbox the I/O thread: ");
    return FALSE;
}

/*
 * GLib aborts the whole process when a new main context gets no wakeup descriptor
 * (g_wakeup_new): see that one is left first. Another thread can still take it in the few
 * instructions between the close and GLib's own eventfd(), which this only makes unlikely.
 */
static gboolean check_descriptor_left(GError **error)
{
    int fd = eventfd(0, EFD_CLOEXEC);

    if (fd < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                   "cannot create the I/O thread's wakeup descriptor");
    close(fd);
    return TRUE;
}

MvmIoThread *mvm_io_thread_new(const char *name, MvmSandboxFlags sandbox, GError **error)
{
    if (!check_descriptor_left(error) || !mvm_sandbox_prepare(sandbox, error))
        return NULL;

    g_autoptr(MvmIoThread) t = g_new0(MvmIoThread, 1);

    g_mutex_init(&t->lock);
    g_cond_init(&t->cond);
    t->sandbox = sandbox;
    t->context = g_main_context_new();
    /* Running from the start, so that a stop before the thread's first round still ends it. */
    t->loop = g_main_loop_new(t->context, TRUE);
    t->thread = mvm_thread_new(name, io_thread_main, t, error);
    if (t->thread == NULL || !wait_started(t, error))
        return NULL;
    return g_steal_pointer(&t);
}

void mvm_io_thread_set_violation_func(MvmIoThread *t, MvmIoThreadFunc func, gpointer user_data)
{
    g_mutex_lock(&t->lock);
    t->on_violation = func;
    t->on_violation_data = user_data;
    g_mutex_unlock(&t->lock);
}

static gboolean quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

void mvm_io_thread_stop(MvmIoThread *t)
{
    if (t->thread == NULL)
        return;
    g_mutex_lock(&t->lock);
    t->stopping = TRUE;
    t->quiesce_depth = 0;
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
    g_main_context_invoke(t->context, quit_loop, t->loop);
    g_thread_join(t->thread);
    t->thread = NULL;
}

void mvm_io_thread_free(MvmIoThread *t)
{
    if (t == NULL)
        return;
    mvm_io_thread_stop(t);
    g_main_loop_unref(t->loop);
    g_main_context_unref(t->context);
    g_clear_error(&t->start_error);
    g_mutex_clear(&t->lock);
    g_cond_clear(&t->cond);
    g_free(t);
}

GMainContext *mvm_io_thread_get_context(MvmIoThread *t)
{
    return t->context;
}

gboolean mvm_io_thread_is_current(MvmIoThread *t)
{
    return t->thread == g_thread_self();
}

typedef struct {
    MvmIoFdFunc func;
    gpointer user_data;
} FdWatch;

static gboolean fd_dispatch(gint fd, GIOCondition condition, gpointer data)
{
    FdWatch *w = data;
    return w->func(fd, condition, w->user_data);
}

GSource *mvm_io_thread_add_fd(MvmIoThread *t, int fd, GIOCondition condition, MvmIoFdFunc func,
                              gpointer user_data)
{
    GSource *source = g_unix_fd_source_new(fd, condition);
    FdWatch *w = g_new(FdWatch, 1);

    w->func = func;
    w->user_data = user_data;
    g_source_set_callback(source, G_SOURCE_FUNC(fd_dispatch), w, g_free);
    g_source_attach(source, t->context);
    return source;
}

/*
 * Runs on the I/O thread: parks until nothing asks for quiet any more. Woken by a stop, it
 * ends the loop from here: park runs at high priority, so the loop's last round dispatches no
 * queue kick or socket event, and a VM stopped while paused serves nothing on its way out.
 */
static gboolean park(gpointer data)
{
    MvmIoThread *t = data;

    g_mutex_lock(&t->lock);
    t->parked = TRUE;
    g_cond_broadcast(&t->cond);
    while (t->quiesce_depth > 0)
        g_cond_wait(&t->cond, &t->lock);
    if (t->stopping)
        g_main_loop_quit(t->loop);
    t->parked = FALSE;
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
    return G_SOURCE_REMOVE;
}

void mvm_io_thread_quiesce(MvmIoThread *t)
{
    g_return_if_fail(!mvm_io_thread_is_current(t));

    g_mutex_lock(&t->lock);
    gboolean first = t->quiesce_depth++ == 0;
    g_mutex_unlock(&t->lock);
    if (first)
        g_main_context_invoke_full(t->context, G_PRIORITY_HIGH, park, t, NULL);
    g_mutex_lock(&t->lock);
    while (!t->parked && t->quiesce_depth > 0)
        g_cond_wait(&t->cond, &t->lock);
    g_mutex_unlock(&t->lock);
}

void mvm_io_thread_unquiesce(MvmIoThread *t)
{
    g_mutex_lock(&t->lock);
    if (t->quiesce_depth > 0 && --t->quiesce_depth == 0) {
        g_cond_broadcast(&t->cond);
        /* Wait until it left park(), so a quick quiesce after this one parks it again. */
        while (t->parked)
            g_cond_wait(&t->cond, &t->lock);
    }
    g_mutex_unlock(&t->lock);
}

gboolean mvm_io_thread_is_parked(MvmIoThread *t)
{
    g_mutex_lock(&t->lock);
    gboolean parked = t->parked;
    g_mutex_unlock(&t->lock);
    return parked;
}
