/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the snapshot tests share: guest console capture, test guests, scratch directories. */
#pragma once

#include "microvm.h"

#define TIMEOUT_US (120 * G_USEC_PER_SEC)

typedef struct {
    GMutex lock;
    GCond cond;
    GString *output;
} Capture;

gboolean have_kvm(void);
void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data);
Capture *capture_new(void);
void capture_free(Capture *c);
gsize capture_len(Capture *c);
char *capture_dup_from(Capture *c, gsize from);
gboolean capture_wait_from(Capture *c, gsize from, const char *needle, gint64 timeout_us);
MvmVm *new_guest(const char *cmdline, guint vcpus, guint64 memory_mib, Capture *c);
guint64 last_counter(const char *text);
guint64 first_counter(const char *text);
guint count_open_fds(void);
char *make_tmpdir(void);
void rm_rf(const char *dir);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Capture, capture_free)
