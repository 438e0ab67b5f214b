/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the virtio tests share: test guests with their console and markers, disk images. */
#pragma once

#include "microvm.h"
#include "snapshot-test-util.h"

#define GUEST_TIMEOUT_US TIMEOUT_US
#define SECTOR           512

/* A VM, what it printed (snapshot-test-util's Capture) and its markers. */
typedef struct {
    MvmVm *vm;
    Capture *console;
    GMutex lock;
    GArray *markers; /* (marker, monotonic µs) pairs of gint64 */
} Guest;

/* The test guest (MVM_TESTGUEST) with @cmdline, 32 MiB, the debug exit device. */
MvmVmConfig *guest_config(const char *cmdline);
/* Takes @vm; captures its console and markers. */
Guest *guest_wrap(MvmVm *vm);
Guest *guest_start(const MvmVmConfig *config);
char *guest_output(Guest *g);
gboolean guest_wait_for(Guest *g, const char *needle, gint64 timeout_us);
/* Waits for the guest to end with debug exit 0 and no FAIL line; returns its output. */
char *guest_finish(Guest *g);
/* Host time of the first @marker the guest wrote, -1 if none. */
gint64 guest_marker_time(Guest *g, guint32 marker);
/* Seconds between two markers of @g, which must both have come, in that order. */
double guest_marker_span_s(Guest *g, guint32 from, guint32 to);
void guest_free(Guest *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Guest, guest_free)
/* One guest run from start to debug exit 0. */
char *run_guest(const MvmVmConfig *config);

void disk_free(gpointer data);
void add_disk(MvmVmConfig *config, const char *path, int fd, gboolean read_only);
/* A temporary raw image of @sectors sectors of random bytes; returns its path. */
char *make_image(guint sectors, GBytes **contents);

/*
 * Runs @func in a subprocess of the test, in a network namespace of its own (its taps go with
 * it); skips where this process may not make one with a tap (root, /dev/net/tun, iproute2).
 */
void run_in_net_namespace(void (*func)(void));
