/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the snapshot tests share: test guests, scratch directories; the rest is test-util.h. */
#pragma once

#include "microvm.h"
#include "test-util.h"

#define TIMEOUT_US (120 * G_USEC_PER_SEC)

MvmVm *new_guest(const char *cmdline, guint vcpus, guint64 memory_mib, Capture *c);
guint64 last_counter(const char *text);
guint64 first_counter(const char *text);
guint count_open_fds(void);
char *make_tmpdir(void);

/* The payload of @dir's `state` (a full reference; the envelope and digest are checked). */
GVariant *snapshot_read_payload(const char *dir);
/* @payload (floating or a full reference, taken) as @dir's `state`, with a valid digest. */
void snapshot_write_payload(const char *dir, GVariant *payload, guint16 major, guint16 minor);
/* A copy of dictionary @dict (a{sv}) with @key set to @value (floating, taken), or removed (NULL).
 */
GVariant *vardict_with(GVariant *dict, const char *key, GVariant *value);
/* A copy of tuple or array @container with child @index replaced by @child (floating, taken). */
GVariant *variant_replace_child(GVariant *container, gsize index, GVariant *child);

/*
 * A test guest in mode=dirty (tests/testguest/mode_dirty.c): it writes one word at each address
 * a command names, or adds up the words of a range, and says so on its console.
 */
typedef struct {
    MvmVm *vm;
    Capture *c;
    guint64 round; /* commands sent so far */
} DirtyGuest;
/* Boots one with @memory_mib of RAM and waits for "DIRTY ready". */
void dirty_start(DirtyGuest *d, guint64 memory_mib);
/* Takes over the console of @vm (a restore of one that had done @round commands; not taken). */
void dirty_attach(DirtyGuest *d, MvmVm *vm, guint64 round);
void dirty_detach(DirtyGuest *d);
/* Frees the VM and the capture of dirty_start(). */
void dirty_clear(DirtyGuest *d);
/* Has the guest write one word at each of @addrs (a space-separated list of 0x addresses). */
void dirty_write(DirtyGuest *d, const char *addrs, guint count);
/* The sum the guest reads of the words at @start, @start + @stride, ... below @end. */
guint64 dirty_sum(DirtyGuest *d, guint64 start, guint64 end, guint64 stride);
