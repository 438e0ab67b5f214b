/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What every C test that runs a VM shares (tests/common/, a static library): whether KVM is
 * usable here, the test guest's configuration, a guest console captured into a string that
 * tests wait on, and scratch directories removed whole (never following a link out of them).
 * The private D-Bus bus of the daemon tests is tests/daemon/harness.h, on private-bus.conf.
 */
#pragma once

#include "microvm.h"

G_BEGIN_DECLS

/*
 * Why /dev/kvm does not open read-write here (a sentence), or NULL. Independent of libmicrovm:
 * the daemon tests compare it with what microvmd reports.
 */
char *kvm_device_unusable(void);
/* TRUE if libmicrovm's KVM probe succeeds; otherwise the current test is skipped, saying why. */
gboolean have_kvm(void);

/* The test guest (MVM_TESTGUEST) with @cmdline, @vcpus, @memory_mib and the debug exit device. */
MvmVmConfig *testguest_config(const char *cmdline, guint vcpus, guint64 memory_mib);

/* A guest's console output, appended by on_console() from the vCPU thread. */
typedef struct {
    GMutex lock;
    GCond cond;
    GString *output;
} Capture;

Capture *capture_new(void);
void capture_free(Capture *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Capture, capture_free)
/* The MvmVmConsoleFunc that fills @user_data, a Capture. */
void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data);
gsize capture_len(Capture *c);
/* A copy of what was printed from offset @from on. */
char *capture_dup_from(Capture *c, gsize from);
/* Waits until @needle shows up at or after offset @from; FALSE after @timeout_us. */
gboolean capture_wait_from(Capture *c, gsize from, const char *needle, gint64 timeout_us);

/* What the test guest measured with its TSC (mode=blkbench lines), in MB/s and µs per notify. */
typedef struct {
    double read_mbs, write_mbs, notify_us, trapped_us;
} TestguestBlkbench;

/* Reads the BLKBENCH lines of @out; FALSE when one is missing or counted nothing. */
gboolean testguest_parse_blkbench(const char *out, guint32 tsc_khz, TestguestBlkbench *f);

/*
 * The registers (eax, ebx, ecx, edx) of the test guest's "CPUID 0x<leaf> 0x<subleaf> ..." line
 * (mode=cpuid) for @leaf and @subleaf; FALSE when the guest printed no such line.
 */
gboolean testguest_parse_cpuid(const char *output, guint32 leaf, guint32 subleaf, guint32 regs[4]);

/*
 * Taps, for tests in a network namespace of their own (unshare(CLONE_NEWNET)). Whether this
 * process may make one with a tap: root, /dev/net/tun, and iproute2's ip (tests delete taps
 * with it), tried in a child. A tap @name, up, its index in *ifindex: persistent (a VM opens it
 * by name) unless @keep_fd, which returns its open descriptor for a VM to take instead. The
 * host's end of the wire: a packet socket for @ethertype frames on interface @ifindex.
 */
gboolean test_can_unshare_net(void);
int test_make_tap(const char *name, gboolean keep_fd, int *ifindex);
int test_packet_socket(int ifindex, guint16 ethertype);

/* Removes @path and, if it is a directory (not a link to one), all it holds. */
void rm_rf(const char *path);

G_END_DECLS
