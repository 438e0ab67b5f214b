/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cage of the threads a guest drives.
 *
 * Every guest shares the daemon's process, so a bug in a device that a guest exploits runs
 * with whatever system calls its thread may make. Each vCPU and I/O thread therefore puts
 * itself, before it touches guest state, into:
 *
 *  - a seccomp filter built from allowed[] below: the calls its work needs, with the
 *    arguments narrowed where seccomp can see them (ioctl requests, no PROT_EXEC, AF_UNIX
 *    sockets only on a VM with vsock). Anything else traps (SECCOMP_RET_TRAP): the call fails
 *    with EPERM, the thread is marked, and the VM crashes with the call's name in its reason
 *    (vm-run.c, iothread.c). The process, and every other VM, runs on: a refused call is
 *    far more often a path the table missed than an attack, and the call did not happen.
 *  - a Landlock domain that handles every file system right and grants none: the threads
 *    work only on descriptors opened before. Kernels without Landlock get seccomp alone.
 *
 * A filter is built once per flag combination, exported as BPF and loaded by each thread
 * with seccomp(2): a thread start costs one system call, not a libseccomp compile.
 *
 * What no filter can take away: the threads share the process's descriptor table and memory.
 * docs/security.md says what that leaves and why the table is what it is.
 */
#include "sandbox.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <ucontext.h>
#include <unistd.h>

#include "error-private.h"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a seccomp trap (linux/uapi asm-generic/siginfo.h) */
#endif

/* What seccomp may check of a call's arguments. */
typedef enum {
    ARG_ANY,
    ARG_NOT_EXEC,   /* mmap, mprotect: argument 2 without PROT_EXEC */
    ARG_UNIX,       /* socket: argument 0 is AF_UNIX */
    ARG_VCPU_IOCTL, /* ioctl: argument 1 one of vcpu_ioctls[] */
    ARG_IO_IOCTL,   /* ioctl: argument 1 one of io_ioctls[] */
    ARG_FCNTL,      /* fcntl: argument 1 one of fcntl_commands[] (no F_SETOWN, F_SETSIG…) */
    ARG_MADVISE,    /* madvise: argument 2 one of madvise_advice[] */
    ARG_OWN_PID,    /* tgkill: argument 0 is this process */
    ARG_NO_ADDRESS, /* sendto: argument 4 is NULL, a connected socket's send() */
} ArgRule;

#define VCPU  MVM_SANDBOX_VCPU
#define IO    MVM_SANDBOX_IO
#define VSOCK MVM_SANDBOX_VSOCK

typedef struct {
    int nr;
    guint who; /* VCPU, IO: the threads that may; VSOCK: only on a VM with vsock */
    ArgRule arg;
} AllowedCall;

/*
 * The one table. A vCPU thread runs KVM_RUN and emulates device registers: it writes
 * eventfds (queue kicks, news for the daemon's main loop) and raises interrupt lines. An I/O
 * thread runs a GMainContext over the back ends: disk reads and writes, tap frames, vsock
 * streams, entropy. Both allocate memory (glibc maps, never executable), take locks (futex),
 * read clocks and end (exit).
 */
static const AllowedCall allowed[] = {
    /* descriptors already held */
    {SCMP_SYS(read), VCPU | IO, ARG_ANY},
    {SCMP_SYS(write), VCPU | IO, ARG_ANY},
    {SCMP_SYS(readv), IO, ARG_ANY},
    {SCMP_SYS(writev), VCPU | IO, ARG_ANY}, /* logging to stderr */
    {SCMP_SYS(pread64), IO, ARG_ANY},
    {SCMP_SYS(pwrite64), IO, ARG_ANY},
    {SCMP_SYS(preadv), IO, ARG_ANY},
    {SCMP_SYS(pwritev), IO, ARG_ANY},
    {SCMP_SYS(preadv2), IO, ARG_ANY},
    {SCMP_SYS(pwritev2), IO, ARG_ANY},
    {SCMP_SYS(fdatasync), IO, ARG_ANY}, /* virtio-blk flush */
    {SCMP_SYS(fsync), IO, ARG_ANY},
    {SCMP_SYS(close), VCPU | IO, ARG_ANY},
    {SCMP_SYS(eventfd2), VCPU | IO, ARG_ANY}, /* a GMainContext's wakeup, made on first use */
    {SCMP_SYS(fcntl), IO, ARG_FCNTL},
    {SCMP_SYS(poll), IO, ARG_ANY}, /* the GMainContext */
    {SCMP_SYS(ppoll), IO, ARG_ANY},
    {SCMP_SYS(sendmsg), VCPU | IO, ARG_ANY},       /* the journal's socket, when logging there */
    {SCMP_SYS(sendto), VCPU | IO, ARG_NO_ADDRESS}, /* send(): vsock streams */
    {SCMP_SYS(recvfrom), IO, ARG_ANY},             /* recv() */
    {SCMP_SYS(recvmsg), IO, ARG_ANY},
    {SCMP_SYS(getrandom), IO, ARG_ANY},          /* virtio-rng */
    {SCMP_SYS(getpeername), VCPU | IO, ARG_ANY}, /* GLib's log writer: is stderr the journal? */
    /* KVM */
    {SCMP_SYS(ioctl), VCPU, ARG_VCPU_IOCTL},
    {SCMP_SYS(ioctl), IO, ARG_IO_IOCTL},
    /* guest-initiated vsock connections: to "<uds_path>_<port>" */
    {SCMP_SYS(socket), VSOCK, ARG_UNIX},
    {SCMP_SYS(connect), VSOCK, ARG_ANY},
    {SCMP_SYS(accept4), VSOCK, ARG_ANY},
    {SCMP_SYS(shutdown), VSOCK, ARG_ANY},
    {SCMP_SYS(getsockopt), VSOCK, ARG_ANY},
    /* memory: glibc's arenas and thread stacks */
    {SCMP_SYS(mmap), VCPU | IO, ARG_NOT_EXEC},
    {SCMP_SYS(mprotect), VCPU | IO, ARG_NOT_EXEC},
    {SCMP_SYS(munmap), VCPU | IO, ARG_ANY},
    {SCMP_SYS(mremap), VCPU | IO, ARG_ANY},
    {SCMP_SYS(madvise), VCPU | IO, ARG_MADVISE},
    {SCMP_SYS(brk), VCPU | IO, ARG_ANY},
    /* locks, time, signals, identity, the end */
    {SCMP_SYS(futex), VCPU | IO, ARG_ANY},
    {SCMP_SYS(sched_yield), VCPU | IO, ARG_ANY},
    {SCMP_SYS(restart_syscall), VCPU | IO, ARG_ANY}, /* a wait interrupted by a signal */
    {SCMP_SYS(clock_gettime), VCPU | IO, ARG_ANY},   /* when the vDSO falls back */
    {SCMP_SYS(clock_nanosleep), VCPU | IO, ARG_ANY},
    {SCMP_SYS(nanosleep), VCPU | IO, ARG_ANY},
    {SCMP_SYS(gettimeofday), VCPU | IO, ARG_ANY},
    {SCMP_SYS(time), VCPU | IO, ARG_ANY},
    {SCMP_SYS(rt_sigreturn), VCPU | IO, ARG_ANY}, /* the kick and SIGSYS handlers return */
    {SCMP_SYS(rt_sigprocmask), VCPU | IO, ARG_ANY},
    {SCMP_SYS(sigaltstack), VCPU | IO, ARG_ANY}, /* sanitizers at thread exit */
    {SCMP_SYS(tgkill), VCPU | IO, ARG_OWN_PID},  /* kicks of sibling vCPUs; abort() */
    {SCMP_SYS(getpid), VCPU | IO, ARG_ANY},
    {SCMP_SYS(gettid), VCPU | IO, ARG_ANY},
    {SCMP_SYS(exit), VCPU | IO, ARG_ANY},
};

/* The vCPU's own ioctls, and the VM ioctls device emulation makes on a vCPU thread. */
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,      /* the loop */
    KVM_GET_REGS, /* rip in a crash's reason */
    KVM_IRQ_LINE, /* serial and i8042 interrupts */
    TCGETS,       /* GLib's log writer: is stderr a terminal (colours)? */
};

static const unsigned long io_ioctls[] = {
    KVM_IRQ_LINE, /* the interrupt line, for a back end without an irqfd */
    TCGETS,
};

/* Flags of a descriptor; not its owner or signal (F_SETOWN, F_SETSIG), nor leases or notify. */
static const unsigned long fcntl_commands[] = {
    F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC,
};

/* glibc's arenas and stacks, sanitizers: never MADV_DODUMP, MADV_HWPOISON and the like. */
static const unsigned long madvise_advice[] = {
    MADV_DONTNEED, MADV_FREE, MADV_WILLNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTDUMP,
};

/*
 * A new thread or process inherits the filter; glibc blocks every signal while it creates one,
 * and a trap with SIGSYS blocked would kill the whole process. These fail plainly instead.
 */
static const int refused_quietly[] = {
    SCMP_SYS(clone),
    SCMP_SYS(clone3),
    SCMP_SYS(fork),
    SCMP_SYS(vfork),
};

/*
 * What the process as a whole never calls: a call to any of them means its code was
 * hijacked. execve also covers what a hijacked thread would run next; ptrace and
 * process_vm_* would read another process; the rest changes the host.
 */
static const int never_called[] = {
    SCMP_SYS(execve),
    SCMP_SYS(execveat),
#ifndef __SANITIZE_ADDRESS__ /* LeakSanitizer stops the world with ptrace */
    SCMP_SYS(ptrace),
#endif
    SCMP_SYS(process_vm_readv),
    SCMP_SYS(process_vm_writev),
    SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load),
    SCMP_SYS(init_module),
    SCMP_SYS(finit_module),
    SCMP_SYS(delete_module),
    SCMP_SYS(bpf),
    SCMP_SYS(mount),
    SCMP_SYS(umount2),
    SCMP_SYS(pivot_root),
    SCMP_SYS(chroot),
    SCMP_SYS(fsopen),
    SCMP_SYS(fsmount),
    SCMP_SYS(fsconfig),
    SCMP_SYS(fspick),
    SCMP_SYS(move_mount),
    SCMP_SYS(open_tree),
    SCMP_SYS(mount_setattr),
    SCMP_SYS(open_by_handle_at),
    SCMP_SYS(swapon),
    SCMP_SYS(swapoff),
    SCMP_SYS(reboot),
    SCMP_SYS(keyctl),
    SCMP_SYS(add_key),
    SCMP_SYS(request_key),
    SCMP_SYS(perf_event_open),
    SCMP_SYS(userfaultfd),
    SCMP_SYS(iopl),
    SCMP_SYS(ioperm),
    SCMP_SYS(acct),
    SCMP_SYS(quotactl),
    SCMP_SYS(settimeofday),
    SCMP_SYS(clock_settime),
    SCMP_SYS(clock_adjtime),
    SCMP_SYS(adjtimex),
    SCMP_SYS(syslog),
    SCMP_SYS(setns),
    SCMP_SYS(unshare),
};

/* ---- the mode ---------------------------------------------------------------------------- */

static const char *const mode_names[] = {
    [MVM_SANDBOX_MODE_ENFORCE] = "enforce",
    [MVM_SANDBOX_MODE_LOG] = "log",
    [MVM_SANDBOX_MODE_OFF] = "off",
};

static gint sandbox_mode = -1; /* -1: not read from the environment yet */

gboolean mvm_sandbox_mode_from_string(const char *text, MvmSandboxMode *mode)
{
    for (guint i = 0; i < G_N_ELEMENTS(mode_names); i++)
        if (g_strcmp0(text, mode_names[i]) == 0) {
            *mode = (MvmSandboxMode)i;
            return TRUE;
        }
    return FALSE;
}

const char *mvm_sandbox_mode_to_string(MvmSandboxMode mode)
{
    return (guint)mode < G_N_ELEMENTS(mode_names) ? mode_names[mode] : "unknown";
}

void mvm_sandbox_set_mode(MvmSandboxMode mode)
{
    g_atomic_int_set(&sandbox_mode, (gint)mode);
}

MvmSandboxMode mvm_sandbox_get_mode(void)
{
    gint mode = g_atomic_int_get(&sandbox_mode);

    if (mode < 0) {
        const char *env = g_getenv("MVM_SANDBOX");
        MvmSandboxMode parsed = MVM_SANDBOX_MODE_ENFORCE;

        if (env != NULL && !mvm_sandbox_mode_from_string(env, &parsed))
            g_warning("MVM_SANDBOX=%s is not enforce, log or off: enforcing", env);
        g_atomic_int_compare_and_exchange(&sandbox_mode, -1, (gint)parsed);
        mode = g_atomic_int_get(&sandbox_mode);
    }
    return (MvmSandboxMode)mode;
}

/* ---- violations ------------------------------------------------------------------------- */

typedef struct {
    int violation;   /* the first refused call's number + 1; 0: none. Written by the handler. */
    guint64 args[2]; /* its first two arguments */
    char who[32];    /* "vCPU 0", "I/O" */
} SandboxSlot;

static __thread SandboxSlot slot;

/*
 * glibc's localtime() reopens the time zone file for each call when TZ is unset, and GLib's
 * log writer calls it for every line's time stamp. Refused quietly: the line's time is UTC.
 * Nothing is opened either way; the path is only compared, never used.
 */
static gboolean is_time_zone_lookup(int nr, const ucontext_t *uc)
{
    const char *path = (const char *)uc->uc_mcontext.gregs[REG_RSI];

    return (nr == __NR_openat || nr == __NR_newfstatat) && path != NULL &&
           strcmp(path, "/etc/localtime") == 0;
}

/*
 * SIGSYS from SECCOMP_RET_TRAP, on the thread that made the call. Only async-signal-safe
 * work: note the call and let it fail with EPERM. The thread's own loop ends the VM.
 */
static void on_sigsys(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    int expected = 0;

    /* Only seccomp's: a SIGSYS someone sent must not rewrite whatever call it interrupted. */
    if (info->si_code != SYS_SECCOMP)
        return;
    if (is_time_zone_lookup(info->si_syscall, uc)) {
        uc->uc_mcontext.gregs[REG_RAX] = -EACCES;
        return;
    }
    if (__atomic_load_n(&slot.violation, __ATOMIC_SEQ_CST) == 0) {
        slot.args[0] = (guint64)uc->uc_mcontext.gregs[REG_RDI];
        slot.args[1] = (guint64)uc->uc_mcontext.gregs[REG_RSI];
    }
    __atomic_compare_exchange_n(&slot.violation, &expected, info->si_syscall + 1, FALSE,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
}

static void install_sigsys_handler_once(void)
{
    static gsize installed;

    if (g_once_init_enter(&installed)) {
        struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSYS, &sa, NULL);
        g_once_init_leave(&installed, 1);
    }
}

gboolean mvm_sandbox_violated(void)
{
    return __atomic_load_n(&slot.violation, __ATOMIC_SEQ_CST) != 0;
}

char *mvm_sandbox_dup_violation(void)
{
    int nr = __atomic_load_n(&slot.violation, __ATOMIC_SEQ_CST) - 1;

    if (nr < 0)
        return NULL;
    g_autofree char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    return g_strdup_printf("the %s thread made system call %s (%d; arguments 0x%" G_GINT64_MODIFIER
                           "x, 0x%" G_GINT64_MODIFIER "x, ...), which its sandbox forbids",
                           slot.who, name != NULL ? name : "?", nr, slot.args[0], slot.args[1]);
}

/* ---- building filters ------------------------------------------------------------------- */

/* One rule per allowed value of argument @index. */
static int add_one_of(scmp_filter_ctx ctx, int nr, unsigned int index, const unsigned long *values,
                      guint n_values)
{
    int ret = 0;

    for (guint i = 0; i < n_values && ret == 0; i++) {
        struct scmp_arg_cmp cmp = {.arg = index, .op = SCMP_CMP_EQ, .datum_a = values[i]};
        ret = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp);
    }
    return ret;
}

static int add_allowed(scmp_filter_ctx ctx, const AllowedCall *call)
{
    const unsigned long own_pid[] = {(unsigned long)getpid()};

    switch (call->arg) {
    case ARG_ANY:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call->nr, 0);
    case ARG_NOT_EXEC:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call->nr, 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    case ARG_UNIX:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call->nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    case ARG_VCPU_IOCTL:
        return add_one_of(ctx, call->nr, 1, vcpu_ioctls, G_N_ELEMENTS(vcpu_ioctls));
    case ARG_IO_IOCTL:
        return add_one_of(ctx, call->nr, 1, io_ioctls, G_N_ELEMENTS(io_ioctls));
    case ARG_FCNTL:
        return add_one_of(ctx, call->nr, 1, fcntl_commands, G_N_ELEMENTS(fcntl_commands));
    case ARG_MADVISE:
        return add_one_of(ctx, call->nr, 2, madvise_advice, G_N_ELEMENTS(madvise_advice));
    case ARG_OWN_PID:
        return add_one_of(ctx, call->nr, 0, own_pid, G_N_ELEMENTS(own_pid));
    case ARG_NO_ADDRESS:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call->nr, 1, SCMP_A4(SCMP_CMP_EQ, 0));
    }
    g_return_val_if_reached(-EINVAL);
}

static gboolean wanted(const AllowedCall *call, MvmSandboxFlags flags)
{
    guint role = call->who & (VCPU | IO);

    if (call->who & VSOCK)
        return (flags & IO) && (flags & VSOCK); /* only an I/O thread serves vsock */
    return (role & flags) != 0;
}

static gboolean libseccomp_error(GError **error, int ret, const char *what)
{
    g_set_error(error, MVM_ERROR, mvm_error_code_for_errno(-ret, MVM_ERROR_FAILED),
                "cannot build the threads' seccomp filter (%s): %s", what, g_strerror(-ret));
    return FALSE;
}

static GBytes *read_bpf(int fd, GError **error)
{
    off_t size = lseek(fd, 0, SEEK_END);

    if (size <= 0 || size % sizeof(struct sock_filter) != 0 || size > 64 * 1024) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "libseccomp exported %lld bytes of BPF",
                    (long long)size);
        return NULL;
    }
    g_autofree guint8 *program = g_malloc(size);
    if (pread(fd, program, size, 0) != size) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot read a seccomp filter back");
        return NULL;
    }
    return g_bytes_new_take(g_steal_pointer(&program), size);
}

/* libseccomp writes its BPF only to a descriptor: a memfd, read back. */
static GBytes *export_bpf(scmp_filter_ctx ctx, GError **error)
{
    int fd = memfd_create("mvm-seccomp", MFD_CLOEXEC);
    GBytes *program = NULL;
    int ret;

    if (fd < 0) {
        mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot export a seccomp filter");
        return NULL;
    }
    if ((ret = seccomp_export_bpf(ctx, fd)) < 0)
        libseccomp_error(error, ret, "export");
    else
        program = read_bpf(fd, error);
    close(fd);
    return program;
}

static GBytes *build_thread_filter(MvmSandboxFlags flags, GError **error)
{
    gboolean log = mvm_sandbox_get_mode() == MVM_SANDBOX_MODE_LOG;
    uint32_t refuse = log ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
    scmp_filter_ctx ctx = seccomp_init(refuse);
    int ret;

    if (ctx == NULL)
        return libseccomp_error(error, -ENOMEM, "init"), NULL;
    /* A call of another ABI (x32, int 0x80) is a violation too, not a thread that vanishes. */
    ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, refuse);
    for (guint i = 0; i < G_N_ELEMENTS(allowed) && ret == 0; i++)
        if (wanted(&allowed[i], flags))
            ret = add_allowed(ctx, &allowed[i]);
    /* (In log mode they are logged like the rest: the default action.) */
    for (guint i = 0; i < G_N_ELEMENTS(refused_quietly) && ret == 0 && !log; i++)
        ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), refused_quietly[i], 0);
    GBytes *program = ret == 0 ? export_bpf(ctx, error) : NULL;
    if (ret != 0)
        libseccomp_error(error, ret, "rules");
    seccomp_release(ctx);
    return program;
}

static GMutex filters_lock;
static GBytes *filters[(MVM_SANDBOX_VSOCK << 1)]; /* by flags, built on first use */

static gboolean make_landlock_ruleset(GError **error); /* Landlock, below */

gboolean mvm_sandbox_prepare(MvmSandboxFlags flags, GError **error)
{
    g_return_val_if_fail(flags < G_N_ELEMENTS(filters), FALSE);

    if (mvm_sandbox_get_mode() == MVM_SANDBOX_MODE_OFF)
        return TRUE;
    install_sigsys_handler_once();
    mvm_sandbox_landlock_abi(); /* said once, here rather than on a new thread */

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&filters_lock);
    if (filters[flags] == NULL)
        filters[flags] = build_thread_filter(flags, error);
    return filters[flags] != NULL && make_landlock_ruleset(error);
}

/* ---- Landlock --------------------------------------------------------------------------- */

/* The kernel's struct landlock_ruleset_attr, as of ABI 6: Debian 12's headers know ABI 1. */
typedef struct {
    guint64 handled_access_fs;
    guint64 handled_access_net;
    guint64 scoped;
} RulesetAttr;

#define LANDLOCK_CREATE_RULESET_VERSION_FLAG (1U << 0)
#define LANDLOCK_FS_RIGHTS_ABI1              ((1ULL << 13) - 1)          /* execute … make_sym */
#define LANDLOCK_FS_REFER                    (1ULL << 13)                /* ABI 2 */
#define LANDLOCK_FS_TRUNCATE                 (1ULL << 14)                /* ABI 3 */
#define LANDLOCK_FS_IOCTL_DEV                (1ULL << 15)                /* ABI 5 */
#define LANDLOCK_NET_TCP                     ((1ULL << 0) | (1ULL << 1)) /* bind, connect: ABI 4 */
#define LANDLOCK_SCOPE_ABSTRACT_UNIX         (1ULL << 0)                 /* ABI 6 */

int mvm_sandbox_landlock_abi(void)
{
    static gsize abi_plus_one;

    if (g_once_init_enter(&abi_plus_one)) {
        long abi =
            syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION_FLAG);
        if (abi <= 0) {
            g_message("Landlock is not available in this kernel (%s): vCPU and I/O threads run "
                      "under seccomp alone (said once)",
                      g_strerror(errno));
            abi = 0;
        }
        g_once_init_leave(&abi_plus_one, (gsize)abi + 1);
    }
    return (int)(abi_plus_one - 1);
}

/*
 * Every right the kernel knows is handled, and no rule grants one: no file system at all. One
 * ruleset for every thread of the process, kept open: a thread entering its domain then needs
 * no descriptor of its own, so a process out of descriptors cannot fail (and crash) a VM whose
 * start already succeeded.
 */
static int landlock_ruleset = -1;

static gboolean make_landlock_ruleset(GError **error)
{
    int abi = mvm_sandbox_landlock_abi();
    RulesetAttr attr = {.handled_access_fs = LANDLOCK_FS_RIGHTS_ABI1};
    gsize size = sizeof(attr.handled_access_fs);

    if (abi == 0 || landlock_ruleset >= 0)
        return TRUE;
    if (abi >= 2)
        attr.handled_access_fs |= LANDLOCK_FS_REFER;
    if (abi >= 3)
        attr.handled_access_fs |= LANDLOCK_FS_TRUNCATE;
    if (abi >= 4) {
        attr.handled_access_net = LANDLOCK_NET_TCP;
        size = G_STRUCT_OFFSET(RulesetAttr, scoped);
    }
    if (abi >= 5)
        attr.handled_access_fs |= LANDLOCK_FS_IOCTL_DEV;
    if (abi >= 6) {
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX;
        size = sizeof(attr);
    }
    /* Close-on-exec by the kernel's own rule for Landlock rulesets. */
    landlock_ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (landlock_ruleset < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot create a Landlock ruleset");
    return TRUE;
}

static gboolean enter_landlock(GError **error)
{
    int ruleset;

    g_mutex_lock(&filters_lock);
    ruleset = landlock_ruleset;
    g_mutex_unlock(&filters_lock);
    if (mvm_sandbox_landlock_abi() == 0)
        return TRUE;
    if (ruleset < 0) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "no Landlock ruleset was prepared");
        return FALSE;
    }
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot enter a Landlock domain");
    return TRUE;
}

/* ---- entering ---------------------------------------------------------------------------- */

gboolean mvm_sandbox_enter(MvmSandboxFlags flags, const char *who, GError **error)
{
    g_return_val_if_fail(flags < G_N_ELEMENTS(filters), FALSE);

    if (mvm_sandbox_get_mode() == MVM_SANDBOX_MODE_OFF)
        return TRUE;
    g_mutex_lock(&filters_lock);
    GBytes *program = filters[flags] != NULL ? g_bytes_ref(filters[flags]) : NULL;
    g_mutex_unlock(&filters_lock);
    if (program == NULL) {
        g_set_error(error, MVM_ERROR, MVM_ERROR_FAILED, "no seccomp filter was prepared");
        return FALSE;
    }
    g_autoptr(GBytes) owned = program;
    gsize size;
    struct sock_fprog prog = {.filter = (struct sock_filter *)g_bytes_get_data(program, &size)};
    prog.len = (unsigned short)(size / sizeof(struct sock_filter));

    g_strlcpy(slot.who, who, sizeof(slot.who));
    /* A trap with SIGSYS blocked kills the process: the thread's creator may have blocked it. */
    sigset_t sigsys;
    sigemptyset(&sigsys);
    sigaddset(&sigsys, SIGSYS);
    pthread_sigmask(SIG_UNBLOCK, &sigsys, NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot set no_new_privs");
    if (!enter_landlock(error))
        return FALSE;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED, "cannot load the seccomp filter");
    return TRUE;
}

/* ---- the whole process ------------------------------------------------------------------ */

gboolean mvm_sandbox_lock_process(GError **error)
{
    MvmSandboxMode mode = mvm_sandbox_get_mode();
    int ret = 0;

    if (mode == MVM_SANDBOX_MODE_OFF)
        return TRUE;
    /* Before the rule below forbids it: nobody may replace the handler afterwards. */
    install_sigsys_handler_once();

    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL)
        return libseccomp_error(error, -ENOMEM, "init");
    uint32_t action = mode == MVM_SANDBOX_MODE_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
    for (guint i = 0; i < G_N_ELEMENTS(never_called) && ret == 0; i++)
        ret = seccomp_rule_add(ctx, action, never_called[i], 0);
    /* Setting a SIGSYS handler (the kernel reads the signal as an int); asking is fine. */
    if (ret == 0)
        ret = seccomp_rule_add(ctx, action, SCMP_SYS(rt_sigaction), 2,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffff, SIGSYS),
                               SCMP_A1(SCMP_CMP_NE, 0));
    if (ret == 0)
        ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, action);
    /* Every thread already running gets it too (GLib may have started some). */
    if (ret == 0)
        ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (ret == 0)
        ret = seccomp_load(ctx);
    seccomp_release(ctx);
    if (ret != 0)
        return libseccomp_error(error, ret, "the process's deny list");
    return TRUE;
}
