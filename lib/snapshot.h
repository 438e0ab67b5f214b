/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshots, inside libmicrovm: the `state` file format and its untrusted-input
 * decoder (also the fuzz target). Devices put their own state in a snapshot
 * through the VM's registry (device-state.h), not through this header.
 *
 * dir/state, all integers little-endian:
 *
 *     0   8  magic "MVMSNAP\0"
 *     8   2  format major   (a reader refuses a major it does not know)
 *     10  2  format minor   (any: a newer minor only adds payload keys)
 *     12  4  flags, 0
 *     16  8  N, payload length
 *     24  N  payload: one GVariant, serialized in normal form, of the major's type:
 *              2: MVM_SNAPSHOT_PAYLOAD_TYPE, a dictionary (below)
 *              1: MVM_SNAPSHOT_PAYLOAD_TUPLE_TYPE, read and never written any more
 *     24+N 32 SHA-256 of bytes [0, 24 + N)
 *
 * Format 2's payload keys (each required, of exactly its type; a reader ignores keys it does not
 * know, so a later minor can add one, optional to the readers before it; a change to a known
 * key's meaning or type takes a new major):
 *
 *     config       a{sv}  the VM's configuration (mvm_snapshot_config_to_variant(); its
 *                         unknown keys are refused, since they could name a device this
 *                         build cannot make)
 *     vcpus        a(MVM_SNAPSHOT_VCPU_TYPE), one per configured vCPU
 *     clock        (tu)   KVM clock: clock, flags
 *     pic-master   ay     struct kvm_pic_state (bytes of the linux/kvm.h layout, whose size
 *     pic-slave    ay     struct kvm_pic_state        is checked exactly)
 *     ioapic       ay     struct kvm_ioapic_state
 *     pit          ay     struct kvm_pit_state2
 *     serial       any    the device's own state, checked by its restore
 *     i8042        any    likewise
 *     devices      a{sv}  other devices' states by the names they registered with
 *     memory-size  t      guest RAM in bytes
 *
 * Added by minor 1, optional (absent in minor 0):
 *
 *     cpu-template s      the CPU template's name (MvmCpuTemplate); absent: "host". The CPUID
 *                         the guest saw is each vCPU's own, in vcpus.
 *
 * Added by minor 2, optional:
 *
 *     vmgenid-addr t      guest-physical address of the VM generation ID (microvm.h), which
 *                         the guest's DSDT names; this build reads only its own
 *                         MVM_VMGENID_ADDR. Absent: the guest has no such device, and a
 *                         restore gives it no ID.
 *
 * Added by minor 3, optional, both or neither (a diff snapshot, microvm.h):
 *
 *     parent        ay    the parent snapshot's ID: the SHA-256 its `state` ends with (32 bytes)
 *     changed-pages ay    one bit per 4 KiB page of guest RAM in `memory` order (bit i of byte
 *                         i / 8 for page i), set for the pages that changed since the parent;
 *                         exactly ceil(pages / 8) bytes, the bits past the last page clear.
 *                         `memory` then holds those pages (a hole reads as a zero page); the
 *                         others are the parent's.
 *
 * Format 1's payload is the tuple of those values in that order (serial and i8042 boxed in a
 * `v`); the reader turns it into the format-2 dictionary, so both go through the same checks.
 *
 * dir/memory: guest RAM as the VM sees it from guest-physical 0 upwards (the
 * part above the MMIO gap follows the part below it), one file of exactly
 * the configured size, zero pages left as holes.
 */
#pragma once

#include <glib.h>

#include "memory.h"
#include "microvm.h"
#include "vcpu.h"

G_BEGIN_DECLS

#define MVM_SNAPSHOT_MAGIC       "MVMSNAP"
#define MVM_SNAPSHOT_MAGIC_LEN   8 /* with its NUL */
#define MVM_SNAPSHOT_MAJOR       2
#define MVM_SNAPSHOT_MAJOR_TUPLE 1 /* the oldest major this build reads */
#define MVM_SNAPSHOT_MINOR       3
#define MVM_SNAPSHOT_HEADER_SIZE 24
#define MVM_SNAPSHOT_DIGEST_SIZE 32
/* Far above what 255 vCPUs need (~10 KiB each); bounds what restore reads into memory. */
#define MVM_SNAPSHOT_MAX_STATE_SIZE (32 * 1024 * 1024)

/*
 * One vCPU: cpuid entries, mp_state, regs, sregs, xsave (empty: none), fpu,
 * has_xcrs, xcrs, debugregs, lapic, MSRs (index, value), events, TSC kHz.
 * Each struct travels as the bytes of its linux/kvm.h layout, whose size
 * is checked exactly.
 */
#define MVM_SNAPSHOT_VCPU_TYPE "(ayuayayayaybayayaya(ut)ayu)"

/* Format 2, keys above. */
#define MVM_SNAPSHOT_PAYLOAD_TYPE "a{sv}"
/* Format 1: the same values as a fixed tuple, whose exact type left no room for a new field. */
#define MVM_SNAPSHOT_PAYLOAD_TUPLE_TYPE "(a{sv}a" MVM_SNAPSHOT_VCPU_TYPE "(tu)ayayayayvva{sv}t)"

/* Bounds for the decoder. The restore code fills them from KVM; the fuzzer uses fixed ones. */
typedef struct {
    guint max_vcpus; /* <= MVM_MAX_VCPUS */
    guint max_msrs;  /* MSRs per vCPU */
    gsize max_xsave; /* bytes of one XSAVE area; 0: XSAVE state is refused */
    /* The MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST); NULL: any index. */
    const guint32 *msr_indices;
    guint n_msr_indices;
} MvmSnapshotLimits;

/* Sets MVM_ERROR_INVALID_ARGUMENT "invalid snapshot: <message>" and returns FALSE. */
gboolean mvm_snapshot_invalid(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Copies an `ay` of exactly @size bytes into @dst; else that error, naming @what. */
gboolean mvm_snapshot_get_blob(GVariant *bytes, void *dst, gsize size, const char *what,
                               GError **error);

/* The limits of the fuzzer and of hosts we have not asked. */
void mvm_snapshot_limits_default(MvmSnapshotLimits *limits);

/* Wraps @payload (any GVariant, stored as a `v`; normalised here) in header and digest. */
GBytes *mvm_snapshot_encode(GVariant *payload, guint16 major, guint16 minor);

/*
 * Checks the envelope of a `state` file: magic, version, length, digest, normal
 * form and the payload type of its major. Returns the payload as a format-2
 * dictionary (a new, non-floating reference of MVM_SNAPSHOT_PAYLOAD_TYPE; a
 * format-1 tuple converted; its keys not checked yet) or NULL with
 * MVM_ERROR_INVALID_ARGUMENT.
 */
GVariant *mvm_snapshot_unwrap(const guint8 *data, gsize len, GError **error);

/* Everything a `state` file holds, checked and in the forms KVM takes. */
typedef struct {
    MvmVmConfig *config;
    GPtrArray *vcpus; /* of MvmVcpuState, config->n_vcpus of them */
    struct kvm_clock_data clock;
    struct kvm_irqchip pic_master, pic_slave, ioapic;
    struct kvm_pit_state2 pit;
    GVariant *serial;  /* checked by the device's restore */
    GVariant *i8042;   /* likewise */
    GVariant *devices; /* a{sv} */
    guint64 memory_size;
    guint64 vmgenid_addr;                /* 0: none (a snapshot older than the device) */
    guint8 id[MVM_SNAPSHOT_DIGEST_SIZE]; /* this state's digest, its snapshot's ID */
    gboolean has_parent;                 /* a diff: */
    guint8 parent[MVM_SNAPSHOT_DIGEST_SIZE];
    GBytes *changed_pages; /* checked against memory_size */
} MvmSnapshotState;

void mvm_snapshot_state_free(MvmSnapshotState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmSnapshotState, mvm_snapshot_state_free)

/*
 * mvm_snapshot_unwrap(), then every count and size against @limits and against
 * the configuration it holds. NULL with MVM_ERROR_INVALID_ARGUMENT on any
 * problem. Needs no KVM: this is what the fuzzer runs.
 */
MvmSnapshotState *mvm_snapshot_decode(const guint8 *data, gsize len,
                                      const MvmSnapshotLimits *limits, GError **error);

/* The `config` dictionary of a payload, and back (snapshot-format.c). */
GVariant *mvm_snapshot_config_to_variant(const MvmVmConfig *config);
MvmVmConfig *mvm_snapshot_config_from_variant(GVariant *dict, const MvmSnapshotLimits *limits,
                                              GError **error);

/* ---- writing (snapshot.c), with every vCPU parked: what snapshot-handoff.c shares ---- */

/* The full `state` of @vm, as any full snapshot writes it (payload, envelope, digest). */
GBytes *mvm_snapshot_encode_vm(MvmVm *vm, GError **error);
/* @state into @fd, emptied first, then synced. */
gboolean mvm_snapshot_write_state_fd(int fd, GBytes *state, GError **error);
/* All of guest RAM into @fd (sized to it, not emptied), as `memory`: zero pages stay holes. */
gboolean mvm_snapshot_write_memory_fd(MvmVm *vm, int fd, GError **error);

/* ---- restore (snapshot.c) ---- */

/* `state` and the size of `memory` of one snapshot, checked against this host's KVM. */
MvmSnapshotState *mvm_snapshot_load_state(int state_fd, int memory_fd, GError **error);

/* ---- diff snapshots (snapshot-diff.c); the VM's with op_lock held and every vCPU parked ---- */

gboolean mvm_snapshot_start_tracking(MvmVm *vm, GError **error);
/* The pages changed since tracking began or the last harvest (one bit each, memory order). */
guint64 *mvm_snapshot_harvest_changes(MvmVm *vm, GError **error);
void mvm_snapshot_set_diff_parent(MvmVm *vm, const guint8 id[MVM_SNAPSHOT_ID_SIZE]);
/*
 * The next run of set bits in a page bitmap (bit i of byte i / 8 for page i: the payload's
 * "changed-pages", and a harvest's words on a little-endian host), from *@end on: FALSE when
 * there is none; else [*@start, *@end). Start with *@end = 0.
 */
gboolean mvm_snapshot_next_run(const guint8 *bits, guint64 n_pages, guint64 *start, guint64 *end);
/*
 * The states of @layers (base first), each checked in full and as a link of the chain under
 * @top; an empty array for a full snapshot without layers. NULL with @error set otherwise.
 */
GPtrArray *mvm_snapshot_load_layers(const MvmSnapshotState *top, const MvmSnapshotFiles *layers,
                                    guint n_layers, GError **error);
/* Guest RAM of the chain: the base's data with every diff's changed pages over it, in order. */
MvmMemory *mvm_snapshot_chain_memory(const MvmSnapshotFiles *layers, GPtrArray *states,
                                     const MvmSnapshotState *top, int top_memory_fd,
                                     GError **error);

/* ---- vCPU state (snapshot-vcpu.c) ---- */
GVariant *mvm_vcpu_state_to_variant(const MvmVcpuState *state);
/* Validates sizes and counts; @state must be of MVM_SNAPSHOT_VCPU_TYPE and in normal form. */
MvmVcpuState *mvm_vcpu_state_from_variant(GVariant *variant, const MvmSnapshotLimits *limits,
                                          GError **error);

/*
 * working-set.c: RAM of @state for MVM_RESTORE_LAZY, read from @fd on first touch, with the
 * pages of @prefetch (NULL: none; refused unless recorded from @state) read before it returns.
 */
MvmMemory *mvm_snapshot_lazy_memory(const MvmSnapshotState *state, int fd,
                                    const MvmWorkingSet *prefetch, GError **error);

G_END_DECLS
