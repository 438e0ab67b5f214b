/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmicrovm: run KVM microVMs from a C program.
 *
 * This is the whole public API: the daemon, microvm-run and the tests use
 * nothing else. A VM goes through one state machine:
 *
 *     created → running ⇄ paused → stopped
 *                  └──────────────→ crashed
 *
 * Threading: any thread may drive a VM, several at once (the daemon starts,
 * pauses, resumes, snapshots and stops from worker threads while its main loop
 * reads the state and writes console input). Start, pause, resume, snapshot
 * and stop are serialized on the VM's operation lock; a call in the wrong
 * state fails with MVM_ERROR_INVALID_STATE. Set the callbacks before the VM
 * first runs, and call mvm_vm_free() once, with no other call in flight.
 * Its vCPUs run on threads of their own; the state and console callbacks are
 * called on those threads, so a caller that owns a main loop must hand the
 * news over (g_main_context_invoke) and never block in them.
 *
 * docs/architecture.md has the layers, every thread and lock, and where to change what.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MVM_ERROR (mvm_error_quark())
GQuark mvm_error_quark(void);

typedef enum {
    MVM_ERROR_FAILED,           /* a host-side operation failed (the message says which) */
    MVM_ERROR_INVALID_ARGUMENT, /* bad configuration or input image */
    MVM_ERROR_INVALID_STATE,    /* the operation is not allowed in the VM's current state */
    MVM_ERROR_NOT_SUPPORTED,    /* KVM or this host lacks something we need */
    MVM_ERROR_NO_KVM,           /* /dev/kvm is absent or not accessible */
    MVM_ERROR_NO_RESOURCES,     /* the host ran out: descriptors, memory, threads, mappings */
    MVM_ERROR_INCOMPATIBLE_CPU, /* this host's CPU cannot give what a snapshot's guest saw, or
                                 * what a CPU template sets (the message names the features) */
} MvmError;

/* Whether @err (an errno value) says the host ran out of something (MVM_ERROR_NO_RESOURCES). */
gboolean mvm_errno_is_no_resources(int err);

typedef enum {
    MVM_VM_STATE_CREATED,
    MVM_VM_STATE_RUNNING,
    MVM_VM_STATE_PAUSED,
    MVM_VM_STATE_STOPPED,
    MVM_VM_STATE_CRASHED,
} MvmVmState;

const char *mvm_vm_state_to_string(MvmVmState state);

/* How the last run ended; meaningful once the VM is stopped or crashed. */
typedef enum {
    MVM_EXIT_NONE,              /* still created/running/paused */
    MVM_EXIT_REQUESTED,         /* mvm_vm_stop() */
    MVM_EXIT_RESET,             /* the guest asked for a reset (i8042 command 0xfe) */
    MVM_EXIT_POWEROFF,          /* ACPI/system event shutdown */
    MVM_EXIT_DEBUG_EXIT,        /* test guest wrote the debug exit port; see exit_code */
    MVM_EXIT_HALTED,            /* HLT reached userspace */
    MVM_EXIT_TRIPLE_FAULT,      /* crashed: KVM_EXIT_SHUTDOWN, or INTERNAL_ERROR suberror 1 */
    MVM_EXIT_INTERNAL_ERROR,    /* crashed: KVM could not emulate an instruction, etc. */
    MVM_EXIT_FAIL_ENTRY,        /* crashed: VM entry failed */
    MVM_EXIT_HOST_ERROR,        /* crashed: a KVM ioctl failed on the host side */
    MVM_EXIT_GUEST_PANIC,       /* crashed: the guest reported a crash (KVM_SYSTEM_EVENT_CRASH) */
    MVM_EXIT_SANDBOX_VIOLATION, /* crashed: a vCPU or I/O thread made a system call its
                                 * sandbox forbids (the reason names it) */
} MvmExitKind;

const char *mvm_exit_kind_to_string(MvmExitKind kind);

/*
 * The sandbox of the threads a guest drives. Each vCPU thread and I/O thread puts itself in a
 * seccomp filter of the system calls its work needs (no open, no exec, no executable memory)
 * and, where the kernel has Landlock, a domain with no file system access at all. A refused
 * call fails with EPERM and crashes that VM alone (MVM_EXIT_SANDBOX_VIOLATION); the other VMs
 * run on. docs/security.md has the table and the reasons.
 */
typedef enum {
    MVM_SANDBOX_MODE_ENFORCE, /* the default */
    MVM_SANDBOX_MODE_LOG,     /* refused calls are allowed but logged by the kernel (audit) */
    MVM_SANDBOX_MODE_OFF,     /* no filter and no Landlock (valgrind cannot run filtered code) */
} MvmSandboxMode;

/* "enforce", "log" or "off". */
gboolean mvm_sandbox_mode_from_string(const char *text, MvmSandboxMode *mode);
const char *mvm_sandbox_mode_to_string(MvmSandboxMode mode);
/* Before the first VM starts; until then the environment's MVM_SANDBOX, else enforce. */
void mvm_sandbox_set_mode(MvmSandboxMode mode);
MvmSandboxMode mvm_sandbox_get_mode(void);
/* The kernel's Landlock ABI version; 0 when it has none (logged once). */
int mvm_sandbox_landlock_abi(void);
/*
 * For a whole program that runs VMs (the daemon): a filter on every thread of the process,
 * present and future, that kills the process on calls no part of it ever makes (execve,
 * ptrace, mount, kexec, module loading, bpf, keyctl…). Such a call means its code was hijacked.
 */
gboolean mvm_sandbox_lock_process(GError **error);

/*
 * What one VM may have on any host; mvm_vm_config_validate() and a restore refuse more, and
 * the daemon takes its bounds from here. A host may allow fewer vCPUs (mvm_kvm_max_vcpus()).
 */
#define MVM_MAX_VCPUS          255 /* APIC IDs are 8 bits (MP table, MADT) */
#define MVM_MIN_MEMORY_MIB     2   /* and a multiple of it */
#define MVM_MAX_MEMORY_MIB     (G_GUINT64_CONSTANT(64) * 1024 * 1024) /* 64 TiB */
#define MVM_MAX_VIRTIO_DEVICES 19 /* disks, NICs, vsock and rng: one IOAPIC GSI each, 5..23 */
#define MVM_VSOCK_CID_MIN      3u /* 0-2 are the hypervisor, local and host */
#define MVM_VSOCK_CID_MAX      0xfffffffeu /* 0xffffffff is VMADDR_CID_ANY */

/*
 * CPU templates: what a guest is told of its CPU, so that a VM (and its snapshots) can move
 * between hosts whose CPUs differ. A template changes the CPUID table KVM would give (each
 * modifier clears and sets bits of one register of one leaf) and the values of some MSRs at
 * boot. It only takes away or states: a bit it sets must be one this host's KVM supports, or
 * the VM does not start. Built in: "host" (nothing changed, every feature KVM supports) and
 * the x86-64 psABI levels "x86-64-v2" and "x86-64-v3" (docs/cpu-templates.md lists each
 * feature they keep, and why). Immutable once made; any thread.
 */
typedef struct _MvmCpuTemplate MvmCpuTemplate;

#define MVM_CPU_TEMPLATE_HOST          "host"
#define MVM_CPU_TEMPLATE_NAME_MAX      64    /* bytes: [A-Za-z0-9_.-], not starting with '.' */
#define MVM_CPU_TEMPLATE_JSON_MAX      65536 /* bytes of a template file */
#define MVM_CPU_TEMPLATE_MODIFIERS_MAX 255   /* each kind (KVM_SET_MSRS takes < 256) */

/* NULL-terminated, in the order a user should read them: "host", then the baselines. */
const char *const *mvm_cpu_template_builtin_names(void);
/* A built-in template; NULL and MVM_ERROR_INVALID_ARGUMENT for any other name. */
MvmCpuTemplate *mvm_cpu_template_new_builtin(const char *name, GError **error);
/*
 * A custom template from a JSON document (untrusted: standard JSON only, sizes, counts, leaves,
 * registers and numbers are all checked; any problem is MVM_ERROR_INVALID_ARGUMENT naming where
 * it is):
 *
 *     { "description": "optional text",
 *       "cpuid": [ { "leaf": "0x7", "subleaf": "0x0", "register": "ebx",
 *                    "clear": "0xffffffff", "set": "0x00000008" } ],
 *       "msrs":  [ { "index": "0x10a", "clear": "0xffffffffffffffff" } ] }
 *
 * Numbers are JSON integers or strings "0x..." (hexadecimal) / decimal; "subleaf" defaults to
 * 0, "clear" and "set" to 0. Each register becomes (value & ~clear) | set. MSR modifiers only
 * clear bits, and only of the capability MSRs (0xcf, 0x10a, 0x345). @name must be a valid
 * template name that is not a built-in one.
 */
MvmCpuTemplate *mvm_cpu_template_new_from_json(const char *name, const char *json, gsize len,
                                               GError **error);
/* mvm_cpu_template_new_from_json() on a file of at most MVM_CPU_TEMPLATE_JSON_MAX bytes. */
MvmCpuTemplate *mvm_cpu_template_new_from_fd(const char *name, int fd, GError **error);
gboolean mvm_cpu_template_name_is_valid(const char *name);
MvmCpuTemplate *mvm_cpu_template_ref(MvmCpuTemplate *tmpl);
void mvm_cpu_template_unref(MvmCpuTemplate *tmpl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmCpuTemplate, mvm_cpu_template_unref)
const char *mvm_cpu_template_get_name(const MvmCpuTemplate *tmpl);
/* The "description" of a custom template, a built-in one's summary; never NULL. */
const char *mvm_cpu_template_get_description(const MvmCpuTemplate *tmpl);

/* One CPUID entry (struct kvm_cpuid_entry2 without its padding) and one MSR, as a guest has. */
typedef struct {
    guint32 function, index, flags;
    guint32 eax, ebx, ecx, edx;
} MvmCpuidEntry;

typedef struct {
    guint32 index;
    guint64 value;
} MvmMsrEntry;

/* What Firecracker's dump_cpu_config gives for one vCPU. */
typedef struct {
    guint index;
    GArray *cpuid; /* of MvmCpuidEntry, as KVM_GET_CPUID2 returns them */
    GArray *msrs;  /* of MvmMsrEntry: every MSR KVM lets us save, in KVM's order */
} MvmVcpuCpuConfig;

typedef struct {
    char *cpu_template;   /* the template's name ("host" when none) */
    guint32 tsc_khz;      /* vCPU 0's TSC rate; 0 when KVM cannot tell */
    gboolean tsc_scaling; /* KVM here can run a guest at another TSC rate */
    GPtrArray *vcpus;     /* of MvmVcpuCpuConfig, one per vCPU */
} MvmCpuConfig;

void mvm_cpu_config_free(MvmCpuConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmCpuConfig, mvm_cpu_config_free)

/*
 * The names of the CPU features a CPUID table announces ("sse4_2", "avx2", "avx512f", in the
 * spelling of Linux's /proc/cpuinfo), in table order; bits without a name are not listed.
 */
GStrv mvm_cpuid_feature_names(const MvmCpuidEntry *entries, guint n_entries);

typedef struct {
    guint n_vcpus;      /* 1 .. mvm_kvm_max_vcpus(), MVM_MAX_VCPUS */
    guint64 memory_mib; /* MVM_MIN_MEMORY_MIB .. MVM_MAX_MEMORY_MIB, multiple of 2 */
    char *kernel_path;  /* used when kernel_fd < 0 */
    int kernel_fd;      /* -1: open kernel_path; the VM dups what it needs */
    char *initrd_path;  /* optional */
    int initrd_fd;
    char *cmdline;       /* optional */
    gboolean prefer_pvh; /* use the ELF PVH entry when present */
    gboolean debug_exit; /* test guests: debug exit port + test device */
    GPtrArray *disks;    /* of MvmDiskConfig (owned; may be NULL) */
    GPtrArray *nics;     /* of MvmNetConfig (owned; may be NULL) */
    guint32 vsock_cid;   /* 0: no vsock device; else MVM_VSOCK_CID_MIN .. _MAX */
    char *vsock_uds_path;
    gboolean rng;                 /* virtio-rng fed from getrandom() */
    MvmCpuTemplate *cpu_template; /* owned (a reference); NULL: "host", all KVM supports */
} MvmVmConfig;

/*
 * A token bucket, as Firecracker's rate limiter has them: @size tokens, refilled evenly over
 * @refill_time_ms (1 ms to a day), and @one_time_burst tokens more at the start that are never
 * refilled. @size 0 (and the rest 0): no limit.
 */
typedef struct {
    guint64 size;
    guint64 one_time_burst;
    guint64 refill_time_ms;
} MvmTokenBucketConfig;

#define MVM_TOKEN_BUCKET_MAX           (1ULL << 50)          /* size and one_time_burst */
#define MVM_TOKEN_BUCKET_REFILL_MAX_MS (24 * 3600 * 1000ULL) /* a day */

/*
 * The rate limit of a device's requests: bytes and requests, each a token bucket. A request
 * waits until both buckets are out of debt, then takes what it needs (it may leave a bucket in
 * debt, so a request larger than the bucket still goes); nothing is dropped or reordered.
 */
typedef struct {
    MvmTokenBucketConfig bandwidth; /* bytes */
    MvmTokenBucketConfig ops;       /* requests */
} MvmRateLimit;

/* One virtio-blk disk: a raw image, by path or fd (the VM dups the fd). */
typedef struct {
    char *path;
    int fd; /* -1: open path */
    gboolean read_only;
    MvmRateLimit rate_limit; /* all zero: none; a request's bytes are its data's */
} MvmDiskConfig;

/*
 * One virtio-net device on a tap: by interface name or an open tap fd. Its rate limits count
 * frames and their bytes (the vnet header not included): @rx_rate_limit what the guest
 * receives, @tx_rate_limit what it sends. A throttled guest's frames wait in its queue; frames
 * for a throttled guest wait in the tap's, which drops what does not fit, as a link would.
 */
typedef struct {
    char *tap_name;
    int tap_fd;                 /* -1: open tap_name */
    guint8 mac[6];              /* all zero: generated */
    MvmRateLimit rx_rate_limit; /* all zero: none */
    MvmRateLimit tx_rate_limit;
} MvmNetConfig;

MvmVmConfig *mvm_vm_config_new(void);
MvmVmConfig *mvm_vm_config_copy(const MvmVmConfig *config);
/* Frees the config, never its descriptors: a config only borrows them (the VM dups its own). */
void mvm_vm_config_free(MvmVmConfig *config);
/*
 * Closes every descriptor @config names (kernel_fd, initrd_fd, each disk's fd and NIC's
 * tap_fd that is >= 0) and sets it to -1: for a config whose descriptors are its holder's, as
 * mvm_vm_dup_backends() returns.
 */
void mvm_vm_config_close_fds(MvmVmConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVmConfig, mvm_vm_config_free)
/* Checks ranges and that the files are given; does not open them. */
gboolean mvm_vm_config_validate(const MvmVmConfig *config, GError **error);

typedef struct _MvmVm MvmVm;

/* Called on a vCPU thread (or the caller's thread for API-driven changes). */
typedef void (*MvmVmStateFunc)(MvmVm *vm, MvmVmState state, gpointer user_data);
/* Serial output; called on a vCPU thread. */
typedef void (*MvmVmConsoleFunc)(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data);
/* Test device markers (MVM_TESTDEV_MARKER_PORT), with the host's monotonic time. */
typedef void (*MvmVmMarkerFunc)(MvmVm *vm, guint32 marker, gint64 monotonic_us, gpointer user_data);
/*
 * A message about this VM, most of them caused by what its guest did (a broken virtqueue, a
 * back end that failed). Called on a vCPU thread or the VM's I/O thread, one at a time.
 */
typedef void (*MvmVmLogFunc)(MvmVm *vm, GLogLevelFlags level, const char *message,
                             gpointer user_data);

/*
 * Messages a guest causes are limited per VM (a token bucket): at most MVM_GUEST_LOG_BURST at
 * once, then one every MVM_GUEST_LOG_INTERVAL_US; what is dropped is counted and said in one
 * line with the next message that passes. So no guest floods the host's log.
 */
#define MVM_GUEST_LOG_BURST       10
#define MVM_GUEST_LOG_INTERVAL_US G_USEC_PER_SEC

/*
 * Connections one VM's vsock device holds at once, each with a host socket, whether the guest
 * opened it or a host program (anyone the socket's permissions let in). Past it a host
 * connection is closed at accept and a guest's is refused (RST); said once per VM.
 */
#define MVM_VSOCK_CONNECTIONS_MAX 256

/*
 * Creates the KVM VM, its memory, vCPUs and devices, and loads the kernel.
 * The VM is left in state created. Costs a few milliseconds.
 */
MvmVm *mvm_vm_new(const MvmVmConfig *config, GError **error);
/* Stops the VM if needed, joins every thread, closes every fd. */
void mvm_vm_free(MvmVm *vm);
/*
 * The first part of mvm_vm_free(), for a caller who answers before the rest: stops the VM if
 * needed, joins its threads and releases everything the host sees of it (its devices and their
 * back ends: disks, taps, the vsock socket, which is removed). Left are its KVM VM and guest
 * memory, whose release in the kernel is the slow part (SRCU grace periods, 5-40 ms); the VM
 * may then only be freed.
 */
void mvm_vm_release_devices(MvmVm *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmVm, mvm_vm_free)

void mvm_vm_set_state_callback(MvmVm *vm, MvmVmStateFunc func, gpointer user_data);
void mvm_vm_set_console_callback(MvmVm *vm, MvmVmConsoleFunc func, gpointer user_data);
void mvm_vm_set_marker_callback(MvmVm *vm, MvmVmMarkerFunc func, gpointer user_data);
/* Without one, the VM's messages go to g_log() (domain "microvm"). */
void mvm_vm_set_log_callback(MvmVm *vm, MvmVmLogFunc func, gpointer user_data);

/* created → running. */
gboolean mvm_vm_start(MvmVm *vm, GError **error);
/* running → paused: returns once every vCPU has left KVM_RUN and parked. */
gboolean mvm_vm_pause(MvmVm *vm, GError **error);
gboolean mvm_vm_resume(MvmVm *vm, GError **error);
/*
 * Whether the vCPU threads exist. A restored VM gets them at its first resume, which then
 * creates them (and joins them again if one cannot start): the only resume that does more than
 * release parked vCPUs.
 */
gboolean mvm_vm_vcpus_started(MvmVm *vm);
/* Any state but stopped/crashed → stopped (forced). Joins the vCPU threads. */
gboolean mvm_vm_stop(MvmVm *vm, GError **error);
/* Ask the guest to shut down (Ctrl-Alt-Del on the i8042). Does not wait. */
gboolean mvm_vm_request_shutdown(MvmVm *vm, GError **error);
/* Blocks until the VM is stopped or crashed, or @timeout_us (< 0: forever) passes. */
gboolean mvm_vm_wait(MvmVm *vm, gint64 timeout_us);

MvmVmState mvm_vm_get_state(MvmVm *vm);
MvmExitKind mvm_vm_get_exit_kind(MvmVm *vm);
/* Human-readable reason for the last exit ("guest reset", "triple fault at rip 0x…"). */
char *mvm_vm_dup_exit_reason(MvmVm *vm);
/* The debug exit code (MVM_EXIT_DEBUG_EXIT), else 0. */
guint32 mvm_vm_get_exit_code(MvmVm *vm);
const MvmVmConfig *mvm_vm_get_config(MvmVm *vm);
/*
 * Gives disk @index (0-based, in the config's order) another rate limit, at once and in any
 * state: its buckets start full, and a request waiting for the old limit is reconsidered. The
 * VM's config says the new limit from then on (and mvm_vm_dup_backends() copies it); a
 * snapshot does not record limits: a restore's disks get the ones its config gives.
 * Call it from the thread that owns @vm, as the calls that change it.
 */
gboolean mvm_vm_set_disk_rate_limit(MvmVm *vm, guint index, const MvmRateLimit *limit,
                                    GError **error);
/* The same for NIC @index: @rx and @tx, each NULL to leave it as it is. */
gboolean mvm_vm_set_nic_rate_limits(MvmVm *vm, guint index, const MvmRateLimit *rx,
                                    const MvmRateLimit *tx, GError **error);

/* What a disk has done since its VM was built (a restore starts from 0). */
typedef struct {
    guint64 read_requests, read_bytes; /* done; a failed request counts nowhere */
    guint64 write_requests, write_bytes;
    guint64 throttled; /* times its queue waited for the rate limit */
} MvmDiskStats;

/* What a network interface has done since its VM was built; bytes without the vnet header. */
typedef struct {
    guint64 rx_frames, rx_bytes; /* to the guest */
    guint64 tx_frames, tx_bytes; /* from the guest, taken by the tap */
    guint64 tx_dropped;          /* from the guest, not taken (tap full or gone) */
    guint64 rx_throttled, tx_throttled;
} MvmNicStats;

/* Disk or NIC @index's figures (0-based, in the config's order); FALSE if there is none. Any
 * thread. */
gboolean mvm_vm_get_disk_stats(MvmVm *vm, guint index, MvmDiskStats *stats);
gboolean mvm_vm_get_nic_stats(MvmVm *vm, guint index, MvmNicStats *stats);

/* Input for the serial port (bounded; returns bytes accepted). Any thread. */
gsize mvm_vm_console_write(MvmVm *vm, const guint8 *data, gsize len);

typedef struct {
    guint64 exits_io;
    guint64 exits_mmio;
    guint64 exits_hlt;
    guint64 exits_other;
    guint64 exits_unhandled_io;   /* accesses no device claimed */
    guint64 kvmclock_ctrl_einval; /* pauses where the guest had no kvmclock */
    gint64 vcpu_time_us;          /* total thread CPU time of the vCPU threads */
    gint64 started_at_us;         /* monotonic time of the last start, 0 if never */
    guint64 memory_bytes;         /* guest RAM size */
} MvmVmStats;

void mvm_vm_get_stats(MvmVm *vm, MvmVmStats *stats);

/*
 * Pause with options. MVM_PAUSE_FREEZE_CLOCK saves the KVM clock at pause and sets it back at
 * resume, so guest time does not jump over the pause. mvm_vm_pause() = no flags, the default:
 * guest time follows the host's over a pause (KVM_KVMCLOCK_CTRL tells the guest's watchdogs
 * why it jumped). Either way "paused" means every vCPU is parked; pause, resume and snapshot
 * calls from several threads are serialized, and a call in the wrong state fails with
 * MVM_ERROR_INVALID_STATE.
 */
typedef enum {
    MVM_PAUSE_NONE = 0,
    MVM_PAUSE_FREEZE_CLOCK = 1 << 0,
} MvmPauseFlags;
gboolean mvm_vm_pause_full(MvmVm *vm, MvmPauseFlags flags, GError **error);

/*
 * Snapshot / restore (docs/architecture.md, "Snapshots"; the format is in lib/snapshot.h). A
 * snapshot is a directory with `state` and `memory`. Snapshot works on a running or paused VM: a
 * running one is paused for the duration and resumed after unless MVM_SNAPSHOT_LEAVE_PAUSED (that
 * transient pause is not reported to the state callback). The _at variants take a directory fd
 * (not consumed) so a daemon never opens a path on behalf of a caller. Files are written under
 * temporary names and renamed into place.
 *
 * Diff snapshots. MVM_SNAPSHOT_TRACK_CHANGES turns change tracking on from this snapshot on
 * (for the VM's life): KVM's dirty log of guest writes, and a mark of every page the device
 * model writes. Every later snapshot then becomes the parent of the next, and one with
 * MVM_SNAPSHOT_DIFF holds only the pages changed since its parent (zero pages as holes), a
 * bitmap of them, and its parent's ID; the rest of its state (vCPUs, devices) is whole. A
 * snapshot's ID is the SHA-256 digest its `state` file ends with (MVM_SNAPSHOT_ID_SIZE bytes).
 * MVM_SNAPSHOT_DIFF without tracking fails with MVM_ERROR_INVALID_STATE. Tracking costs the
 * guest a write fault on the first write to each page after every snapshot.
 */
typedef enum {
    MVM_SNAPSHOT_NONE = 0,
    MVM_SNAPSHOT_LEAVE_PAUSED = 1 << 0,
    MVM_SNAPSHOT_TRACK_CHANGES = 1 << 1,
    MVM_SNAPSHOT_DIFF = 1 << 2,
} MvmSnapshotFlags;
#define MVM_SNAPSHOT_ID_SIZE 32
/* Deepest chain a restore takes: a base and this many diffs above it, the top one included. */
#define MVM_SNAPSHOT_MAX_LAYERS 64
/*
 * The ID of the snapshot a diff taken now would name as its parent (the VM's last snapshot, or
 * the one it was restored from with MVM_RESTORE_TRACK_CHANGES); FALSE when it tracks no changes.
 */
gboolean mvm_vm_get_diff_parent(MvmVm *vm, guint8 id[MVM_SNAPSHOT_ID_SIZE]);
/*
 * A snapshot's ID, and its parent's when it is a diff (@has_parent), from its `state` as an open
 * fd (not consumed, read from offset 0), checked as a restore checks it. MVM_ERROR_INVALID_ARGUMENT
 * otherwise.
 */
gboolean mvm_snapshot_read_ids_fd(int state_fd, guint8 id[MVM_SNAPSHOT_ID_SIZE],
                                  guint8 parent[MVM_SNAPSHOT_ID_SIZE], gboolean *has_parent,
                                  GError **error);
gboolean mvm_vm_snapshot(MvmVm *vm, const char *dir, MvmSnapshotFlags flags, GError **error);
gboolean mvm_vm_snapshot_at(MvmVm *vm, int dirfd, MvmSnapshotFlags flags, GError **error);
/*
 * The snapshot into two open files (not consumed) instead of a directory: `state` into
 * @state_fd and `memory` into @memory_fd, each emptied (ftruncate to 0) and written from offset
 * 0, then synced. Nothing is created, renamed or unlinked, so a daemon can write into files its
 * untrusted caller created. The VM stays paused, its operation lock held, while both files are
 * written (guest RAM must not change under the copy).
 */
gboolean mvm_vm_snapshot_to_fds(MvmVm *vm, int state_fd, int memory_fd, MvmSnapshotFlags flags,
                                GError **error);

/*
 * Builds a new VM from a snapshot, in state paused; mvm_vm_resume() runs it. The input is
 * untrusted: everything is validated before KVM is touched, and any failure is
 * MVM_ERROR_INVALID_ARGUMENT with the reason (MVM_ERROR_INCOMPATIBLE_CPU when the snapshot's
 * guest saw CPU features this host's KVM cannot give, the message listing them;
 * MVM_ERROR_NOT_SUPPORTED when the snapshot's TSC rate differs and KVM here cannot scale it).
 * Guest RAM is read from the snapshot's `memory` into the VM's own memory (only the file's
 * data: holes cost nothing), so the file may change or go once the call returns. A file mapped
 * instead would bring the whole process down (SIGBUS) the moment it shrank under a page in
 * use; that is done only for a memfd sealed against shrinking and writing (see
 * mvm_vm_restore_with_memory()), and MVM_RESTORE_COPY_MEMORY copies even that. The guest's clock
 * stays at the snapshot's time until the first resume. Every restore gives the guest a new
 * generation ID (mvm_vm_get_generation_id()).
 *
 * MVM_RESTORE_CLONE makes the VM a clone that must not be taken for the snapshot's VM on a
 * network: each NIC gets the MAC its back end names (MvmNetConfig.mac in @backends, not all
 * zero) or a new random one, and a vsock device the CID its back end names (@backends'
 * vsock_cid, not 0) or a new random one. The device shows the guest the new value; a Linux
 * guest's vsock driver reads the CID again at the transport reset every restore sends, while
 * its virtio-net driver keeps the MAC it read when it bound (the interface's address) until it
 * binds again. mvm_vm_get_config() has what the clone got. Without the flag the guest keeps the
 * snapshot's MACs and CID.
 */
typedef enum {
    MVM_RESTORE_NONE = 0,
    MVM_RESTORE_COPY_MEMORY = 1 << 0,
    MVM_RESTORE_CLONE = 1 << 1,
    MVM_RESTORE_TRACK_CHANGES = 1 << 2, /* diffs of the VM can have this snapshot as parent */
    MVM_RESTORE_LAZY = 1 << 3,          /* guest RAM read page by page on first touch: below */
    MVM_RESTORE_SHARE_MEMORY = 1 << 4,  /* guest RAM is @memory_fd itself: see the handoff */
} MvmRestoreFlags;
MvmVm *mvm_vm_restore(const char *dir, MvmRestoreFlags flags, GError **error);
MvmVm *mvm_vm_restore_at(int dirfd, MvmRestoreFlags flags, GError **error);
/*
 * mvm_vm_restore_at() with the device back ends taken from @backends instead of the paths
 * the snapshot names: its disks, nics and vsock_uds_path (paths or fds, as for mvm_vm_new;
 * vsock_cid, when not 0; the rest of @backends is ignored) must match the snapshot's devices
 * in number, read-only flags and CID. A daemon restoring a snapshot it did not write passes
 * its caller's fds here, so an untrusted snapshot never makes it open a file. A snapshot of a
 * VM whose disks were given by fd can only be restored this way.
 */
MvmVm *mvm_vm_restore_with_backends(int dirfd, const MvmVmConfig *backends, MvmRestoreFlags flags,
                                    GError **error);
/*
 * mvm_vm_restore_with_backends() (@backends may be NULL: the snapshot's own) with guest RAM
 * from @memory_fd (not consumed; -1: the directory's `memory`), a regular file of the
 * snapshot's memory size. A memfd (not MFD_HUGETLB) sealed with F_SEAL_SHRINK and F_SEAL_WRITE is
 * mapped copy-on-write, lazily, which makes a restore cost next to nothing whatever the RAM size;
 * anything else is copied.
 */
MvmVm *mvm_vm_restore_with_memory(int dirfd, int memory_fd, const MvmVmConfig *backends,
                                  MvmRestoreFlags flags, GError **error);
/*
 * The same from the snapshot's two files as open fds (not consumed, read from offset 0 whatever
 * their position). Both must be regular files: anything else is refused before it is read.
 * Guest RAM is taken from @memory_fd as mvm_vm_restore_with_memory() says: copied, unless it is
 * a sealed memfd.
 */
MvmVm *mvm_vm_restore_from_fds(int state_fd, int memory_fd, const MvmVmConfig *backends,
                               MvmRestoreFlags flags, GError **error);
/*
 * Asked by mvm_vm_restore_full() once the snapshot's `state` is read and checked and its back
 * ends chosen, before any guest memory is allocated or KVM is touched: @config is the machine
 * about to be built (n_vcpus, memory_mib, devices). FALSE, with @error set, refuses it; the
 * restore then fails with that error unchanged. A daemon charges a quota here, on the state it
 * restores, not on an earlier read of a file its caller may change in between.
 */
typedef gboolean (*MvmRestoreApproveFunc)(const MvmVmConfig *config, gpointer user_data,
                                          GError **error);
/* A snapshot's two files as open fds (not consumed, read from offset 0). */
typedef struct {
    int state_fd;
    int memory_fd;
} MvmSnapshotFiles;
/*
 * Memory images: guest RAM shared by the VMs restored from one snapshot. The first restore of a
 * memory file reads its data (as a copy would) into a memfd of the images', sealed for good;
 * every VM restored from the same unchanged file and for the same owner (below) maps that
 * memfd privately, so they share each page until one of them writes it, and a restore that
 * finds the image costs no read at all. A file is the same while fstat() shows the same
 * device, inode, size, modification and status-change times, and nobody could write it when the
 * image was made: a write after that makes a new image. An image is dropped with the last VM
 * that maps it. It is memory beside the VMs' own (a page each clone writes is in the image and
 * in the clone), which charge_image lets its owner pay for. Thread-safe; VMs keep it alive.
 */
typedef struct _MvmMemoryImages MvmMemoryImages;
/*
 * What an image's memory costs its owner: asked before an image of @bytes is made for @owner.
 * FALSE (with @error set, for the log) means the owner cannot pay, and the VM gets a copy of its
 * own instead. TRUE fills @charge, whose @release(@token) runs once the image is gone. Any
 * thread.
 */
typedef struct {
    void (*release)(gpointer token);
    gpointer token;
} MvmImageCharge;
typedef gboolean (*MvmImageChargeFunc)(guint64 owner, guint64 bytes, gpointer user_data,
                                       MvmImageCharge *charge, GError **error);
MvmMemoryImages *mvm_memory_images_new(void);
MvmMemoryImages *mvm_memory_images_ref(MvmMemoryImages *images);
void mvm_memory_images_unref(MvmMemoryImages *images);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmMemoryImages, mvm_memory_images_unref)
/* Images held now (one per file and owner with a VM restored from it). */
guint mvm_memory_images_get_count(MvmMemoryImages *images);
/*
 * Lazy restore (MVM_RESTORE_LAZY), for a guest that touches a small part of its RAM soon after
 * a restore: the restore reads no RAM at all, and each page is read from the snapshot's
 * `memory` the first time the guest or the device model touches it (userfaultfd: a thread per
 * VM serves the faults, reading the file with pread, never mapping it, so a file that shrinks
 * reads as zeros instead of faulting the process, and so does a read that keeps failing).
 * The VM keeps its own descriptor of the file until every page is in: a full snapshot of the
 * VM, or mvm_vm_finish_lazy_restore(), reads the rest (a diff reads only its changed pages;
 * no snapshot of the VM is written into that very file). The file should not change meanwhile; if
 * it does, the guest sees the new bytes of the pages it had not touched yet (its own memory, as
 * untrusted as ever). Not with
 * MVM_RESTORE_COPY_MEMORY nor with a diff's layers (MVM_ERROR_INVALID_ARGUMENT); where the
 * process cannot open /dev/userfaultfd (Linux 6.1 and later; the unit allows the device),
 * MVM_ERROR_NOT_SUPPORTED, which mvm_lazy_restore_supported() tells in advance.
 *
 * The pages a lazily restored VM had read on demand so far are its working set: written beside
 * the snapshot (mvm_vm_save_working_set()) once the guest has done its first useful work, and
 * given to a later restore of the same snapshot (MvmRestoreOptions.prefetch), they are read in
 * a few large reads instead of one fault each.
 */
typedef struct _MvmWorkingSet MvmWorkingSet;
gboolean mvm_lazy_restore_supported(GError **error);
/*
 * A working set file, read from @fd (not consumed, from offset 0) and checked: untrusted input;
 * anything wrong is MVM_ERROR_INVALID_ARGUMENT with the reason. A restore checks that it was
 * recorded from the snapshot it restores (its ID and memory size).
 */
MvmWorkingSet *mvm_working_set_read_fd(int fd, GError **error);
/* Keeps a reference to @bytes (not a copy). */
MvmWorkingSet *mvm_working_set_new_from_bytes(GBytes *bytes, GError **error);
void mvm_working_set_free(MvmWorkingSet *set);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmWorkingSet, mvm_working_set_free)
guint64 mvm_working_set_get_n_pages(const MvmWorkingSet *set); /* pages in the set */
/* The ID (mvm_snapshot_read_ids_fd()) of the snapshot it was recorded from. */
void mvm_working_set_get_snapshot_id(const MvmWorkingSet *set, guint8 id[MVM_SNAPSHOT_ID_SIZE]);
/*
 * Writes the working set of a VM restored with MVM_RESTORE_LAZY into @fd (not consumed; emptied
 * and written from offset 0, then synced): every page read on demand since the restore (pages
 * a prefetch read are not in it: record from a restore without one). MVM_ERROR_NOT_SUPPORTED
 * for a VM not restored lazily (a full snapshot's reading the rest does not end it);
 * MVM_ERROR_INVALID_ARGUMENT if @fd is the file the VM was restored from (so are snapshots of
 * the VM into it). Any thread, but not while the VM is being freed.
 */
gboolean mvm_vm_save_working_set(MvmVm *vm, int fd, GError **error);
/*
 * Of a lazily restored VM: pages read so far (on demand or prefetched) and pages in all; FALSE
 * for any other VM, or once every page is in (the descriptor of the file is closed then).
 */
gboolean mvm_vm_get_lazy_progress(MvmVm *vm, guint64 *pages_read, guint64 *pages_total);
/* Reads every page not read yet, and lets go of the snapshot's file. TRUE at once for any other
 * VM. */
gboolean mvm_vm_finish_lazy_restore(MvmVm *vm, GError **error);

typedef struct {
    MvmRestoreFlags flags;
    const MvmVmConfig *backends;   /* NULL: the snapshot's own (see mvm_vm_restore_with_backends) */
    MvmRestoreApproveFunc approve; /* NULL: any valid snapshot */
    gpointer approve_data;
    /* MVM_GENERATION_ID_SIZE bytes; NULL: a new random one (mvm_vm_get_generation_id()) */
    const guint8 *generation_id;
    /*
     * Guest RAM from (and into) these images unless MVM_RESTORE_COPY_MEMORY; NULL: a copy of
     * its own. Only VMs of one owner (any number the caller chooses, e.g. a uid) share an
     * image, so one owner's restores never show another's in their timing.
     */
    MvmMemoryImages *memory_images;
    guint64 memory_image_owner;
    MvmImageChargeFunc charge_image; /* NULL: images cost nobody anything */
    gpointer charge_image_data;
    /*
     * A diff snapshot's chain: the snapshots beneath it, base (a full snapshot) first, each
     * the parent of the next and the last the parent of the one restored, as their IDs say.
     * Every layer is untrusted input, checked in full; guest RAM is the base's with each diff's
     * pages laid over it in order, always a copy (no memory image). At most
     * MVM_SNAPSHOT_MAX_LAYERS - 1. A diff without its chain, or a chain under a full snapshot,
     * is MVM_ERROR_INVALID_ARGUMENT.
     */
    const MvmSnapshotFiles *layers;
    guint n_layers;
    /*
     * MVM_RESTORE_LAZY only: a working set recorded from a lazy restore of the same snapshot
     * (mvm_vm_save_working_set()). Its pages are read in bulk, in file order, before the
     * restore returns; the rest still come on first touch. NULL: none.
     */
    const MvmWorkingSet *prefetch;
} MvmRestoreOptions;
/*
 * The restore the others are made of: `state` and `memory` from @dirfd (not consumed), or from
 * @state_fd and @memory_fd (not consumed; -1: the directory's file; @dirfd may be -1 when both
 * are given), as mvm_vm_restore_from_fds() reads them.
 */
MvmVm *mvm_vm_restore_full(int dirfd, int state_fd, int memory_fd, const MvmRestoreOptions *options,
                           GError **error);
/*
 * Handoff: a VM carried from one process to the next without stopping its guest (a daemon that
 * restarts). The old process saves each VM for handoff and takes its back ends; it hands the
 * state, the RAM memfd and the back ends' descriptors to the next one (systemd's fd store),
 * frees the VM and exits; the next restores the VM from them with MVM_RESTORE_SHARE_MEMORY and
 * resumes it. Guest RAM is never copied: both processes map the same memfd. What the guest
 * notices is a pause, and the transport reset of its vsock device (every restore sends one:
 * its host connections are closed, as the old process's sockets are).
 *
 * mvm_vm_save_for_handoff(): a running or paused VM is left paused (as with
 * MVM_SNAPSHOT_LEAVE_PAUSED, and told so). Its `state`, exactly a full snapshot's, goes into
 * @state_fd (not consumed; emptied and written from offset 0); *@memory_fd gets a new
 * descriptor (close-on-exec, the caller's) of a memfd that holds guest RAM as a snapshot's
 * `memory` does. That is the VM's own RAM memfd (a lazy restore's remaining pages are read in
 * first); only a VM whose RAM is a private mapping of a sealed memfd (restored from a memory
 * image or a sealed snapshot memfd) has none, and gets a copy in a new memfd, sealed as lib's
 * RAM is. The VM's own memfd is sealed against shrinking and growing for good (F_SEAL_SEAL too,
 * so that nobody can seal it against writing either), which the restore requires. Change
 * tracking is left as it was: the handoff state is never a diff parent, and a VM restored from
 * it with MVM_RESTORE_TRACK_CHANGES starts a chain that only a full snapshot of it can base.
 * The state does not depend on the VM: free it (nothing of mvm_vm_free() touches guest RAM or
 * the memfd) and the process may exit. Do not resume the VM once the RAM is restored elsewhere:
 * two guests would run on one RAM. MVM_ERROR_INVALID_STATE in other states; a failure leaves
 * the VM paused and *@memory_fd untouched.
 *
 * MVM_RESTORE_SHARE_MEMORY (mvm_vm_restore_from_fds(), mvm_vm_restore_full()): @memory_fd
 * becomes the VM's RAM, mapped shared and writable, never read nor copied; the VM keeps a
 * duplicate of it as its own RAM memfd (a later handoff hands it on again). Because a file
 * that shrinks under a shared mapping kills the whole process (SIGBUS), only a memfd of plain
 * shared memory (not MFD_HUGETLB), open for writing, sealed with F_SEAL_SHRINK, not sealed
 * against writing, of exactly the snapshot's memory size is taken; anything else is
 * MVM_ERROR_INVALID_ARGUMENT, as is the flag with MVM_RESTORE_COPY_MEMORY, MVM_RESTORE_LAZY or
 * a diff's layers (memory_images are not used). Whoever holds the memfd can read and write the
 * guest's RAM: pass only descriptors of the process's own keeping, never a caller's. The guest
 * gets MvmRestoreOptions.generation_id, so pass the old VM's (mvm_vm_get_generation_id()) for
 * it to see no clone.
 */
gboolean mvm_vm_save_for_handoff(MvmVm *vm, int state_fd, int *memory_fd, GError **error);
/*
 * The back ends of @vm for a restore (MvmRestoreOptions.backends): a copy of its configuration
 * in which every disk's fd and NIC's tap_fd is a new descriptor (close-on-exec) of what the
 * device has open, never the path opened again (a tap opened by name and not persistent goes
 * with its last descriptor); the MACs are the ones its guest knows, vsock_cid its device's; the
 * kernel and initrd fds are -1. The descriptors are the caller's: mvm_vm_config_close_fds()
 * then mvm_vm_config_free(). Fails (having closed what it duplicated) when the process runs
 * out of descriptors (MVM_ERROR_NO_RESOURCES), and after mvm_vm_release_devices()
 * (MVM_ERROR_INVALID_STATE). Not while the VM is being freed.
 */
MvmVmConfig *mvm_vm_dup_backends(MvmVm *vm, GError **error);

/*
 * What the snapshot in @dirfd (not consumed) describes, so that a caller can tell which back
 * ends mvm_vm_restore_with_backends() will want before it asks for them. Reads `state` alone
 * (no other file, no KVM) and checks it as a restore does, untrusted, except for the limits
 * only KVM knows (vCPUs and MSRs of this host) and the size of `memory`: a restore may still
 * refuse what this accepted. Returns the snapshot's configuration: n_vcpus, memory_mib,
 * cmdline, rng; disks (their read_only flags are what the guest was told), nics (with the MACs
 * the guest knows), vsock_cid (0: no vsock device). Paths and tap names are the snapshot's
 * own, as untrusted as the rest, and NULL for a disk or NIC its VM was given by fd; every fd
 * is -1. Any problem: MVM_ERROR_INVALID_ARGUMENT with
 * the reason, worded as by a restore.
 */
MvmVmConfig *mvm_snapshot_read_config_at(int dirfd, GError **error);
/* The same from the `state` file as an open fd (not consumed, read from offset 0). */
MvmVmConfig *mvm_snapshot_read_config_fd(int state_fd, GError **error);

/*
 * The CPU each vCPU has: its CPUID table and MSRs as KVM reports them, and the TSC rate. In
 * state created or paused it reads them as they are; a running VM is paused for the read and
 * resumed (a few hundred microseconds, not reported to the state callback), since KVM
 * answers for a vCPU only outside KVM_RUN. MVM_ERROR_INVALID_STATE once stopped or crashed.
 */
MvmCpuConfig *mvm_vm_dump_cpu_config(MvmVm *vm, GError **error);

/*
 * The VM generation ID (docs/architecture.md, "Clones"): 16 bytes in guest memory that the
 * DSDT's device VGEN (_CID "VM_Gen_Counter", its method ADDR giving their address) shows the
 * guest, as Microsoft's "Virtual Machine Generation ID" paper describes. A change is announced
 * with Notify(VGEN, 0x80), raised through the Generic Event Device (ACPI0013) on
 * GSI 3 (lib/layout.h). A guest that sees a new ID knows it runs as a copy of a snapshot and
 * renews what must not repeat between copies (Linux reseeds its RNG: "crng reseeded due to
 * virtual machine fork").
 *
 * mvm_vm_new() gives a VM a random ID; mvm_vm_set_generation_id() sets another (before the
 * start: the ID the guest boots with, e.g. a daemon's ID for the VM, kept across reboots). Every
 * restore gives a new random ID (MvmRestoreOptions.generation_id chooses it) and notifies the
 * guest, which sees it at its first instruction after the resume. A VM restored from a snapshot
 * taken before the device existed has none: get returns FALSE, set fails with
 * MVM_ERROR_NOT_SUPPORTED. Any thread.
 */
#define MVM_GENERATION_ID_SIZE 16
gboolean mvm_vm_get_generation_id(MvmVm *vm, guint8 id[MVM_GENERATION_ID_SIZE]);
/* Writes @id; a VM that has run (or was restored) is notified. Stopped or crashed: INVALID_STATE.
 */
gboolean mvm_vm_set_generation_id(MvmVm *vm, const guint8 id[MVM_GENERATION_ID_SIZE],
                                  GError **error);

/* KVM facts for the Manager's properties. */
int mvm_kvm_api_version(GError **error);
guint mvm_kvm_max_vcpus(void);

G_END_DECLS
