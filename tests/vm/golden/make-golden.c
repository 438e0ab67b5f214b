/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writes a golden snapshot into the directory given (README.md here): the test guest counting
 * in mode=pattern on 1 vCPU and the smallest RAM that holds its image and its pattern, paused
 * once it has printed COUNTER 10. Beside `state` and `memory` it writes `expect`, what the
 * restore test checks the guest goes on from. Run by ./make-golden, inside a host with KVM.
 */
#include <string.h>

#include "../snapshot-test-util.h"

/* The image sits at 1 MiB and ends below 2 MiB; the pattern takes the next MiB. */
#define GOLDEN_CMDLINE    "mode=pattern pages=4 base_mib=2 every=5 delay=100"
#define GOLDEN_MEMORY_MIB 4
#define GOLDEN_EVERY      5

int main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;

    if (argc != 2) {
        g_printerr("usage: %s OUTDIR (MVM_TESTGUEST names testguest.elf)\n", argv[0]);
        return 2;
    }
    g_autoptr(Capture) c = capture_new();
    g_autoptr(MvmVm) vm = new_guest(GOLDEN_CMDLINE, 1, GOLDEN_MEMORY_MIB, c);
    if (!mvm_vm_start(vm, &error) || !capture_wait_from(c, 0, "COUNTER 10\n", TIMEOUT_US) ||
        !mvm_vm_snapshot(vm, argv[1], MVM_SNAPSHOT_LEAVE_PAUSED, &error)) {
        g_printerr("make-golden: %s\n", error != NULL ? error->message : "no COUNTER 10");
        return 1;
    }
    /* Paused: the console holds everything the guest wrote before the snapshot. */
    g_autofree char *out = capture_dup_from(c, 0);
    g_autoptr(GKeyFile) keys = g_key_file_new();
    g_autofree char *expect = g_build_filename(argv[1], "expect", NULL);
    g_key_file_set_string(keys, "golden", "cmdline", GOLDEN_CMDLINE);
    g_key_file_set_uint64(keys, "golden", "memory-mib", GOLDEN_MEMORY_MIB);
    g_key_file_set_uint64(keys, "golden", "every", GOLDEN_EVERY);
    g_key_file_set_uint64(keys, "golden", "last", last_counter(out));
    /* The part of a line the guest was writing when it stopped; the restored guest ends it. */
    g_key_file_set_string(keys, "golden", "partial", strrchr(out, '\n') + 1);
    if (!g_key_file_save_to_file(keys, expect, &error)) {
        g_printerr("make-golden: %s\n", error->message);
        return 1;
    }
    g_print("%s", out);
    return 0;
}
