/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Can this host boot Debian's kernel to /init? The linux-full tests ask, and decide by what
 * the host's KVM is, never by a variable a CI job must remember to set.
 *
 * Under kvm_pvm (this project's build machines: KVM nested without hardware virtualization)
 * guest kernel code is run by KVM's instruction emulator at about 1M instructions/s, and the
 * emulator lacks instructions the kernel needs later in boot, so /init is never reached.
 * Everywhere else — hardware virtualization, or the QEMU-nested host of tests/vmhost on
 * machines without /dev/kvm — it is, in seconds. tests/linux-guest/linux-early-boot-check asks
 * the same question for the Python tests. MVM_LINUX_FULL=1 forces the tests to run anyway.
 */
#pragma once

#include <glib.h>
#include <unistd.h>

/* Why Linux cannot reach /init here (a sentence for the skip message), or NULL. */
static inline const char *linux_full_unsupported(void)
{
    if (g_strcmp0(g_getenv("MVM_LINUX_FULL"), "1") == 0)
        return NULL;
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return "no usable /dev/kvm";
    if (g_file_test("/sys/module/kvm_pvm", G_FILE_TEST_IS_DIR))
        return "this host's KVM is kvm_pvm: guest kernel code is emulated and never reaches "
               "/init (linux-full needs hardware virtualization, or tests/vmhost/run-with-kvm)";
    return NULL;
}
