/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "handoff.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "auth.h"
#include "errors.h"
#include "vm-ops.h"

#define GROUP_HANDOFF "Handoff"
/* A definition is a few KiB (a 4 KiB cmdline, 16 disks, 8 NICs): anything larger is no def. */
#define DEF_MAX_BYTES (256 * 1024)
/*
 * systemd hands every stored name to the next daemon in one environment string,
 * $LISTEN_FDNAMES, and the kernel refuses to exec a program with a string over 128 KiB: the
 * next daemon would not start, and every guest would be lost. The names stay well below.
 */
#define NAMES_MAX_BYTES (96 * 1024)
/* $FDSTORE when systemd sets it; else what the unit we ship asks (FileDescriptorStoreMax=). */
#define FD_STORE_DEFAULT 16384
/* A set older than this is stale (a restart takes seconds): never resumed on a changed disk. */
#define MAX_AGE_US (10 * 60 * G_USEC_PER_SEC)

/* What this daemon has pushed so far, against the store's limits. */
static guint next_index; /* N of "mvmd.N.": never the same twice, a VM refused half-way too */
static guint pushed_vms;
static gsize pushed_name_bytes;
static guint pushed_fds;
/* How many VMs this handoff expects (mvmd_handoff_expect()): each has its share reserved. */
static guint expected_vms;

/* ---- the daemon that leaves ------------------------------------------------------------ */

gboolean mvmd_handoff_available(gboolean fd_store_option, const char **why)
{
    const char *fdstore = g_getenv("FDSTORE");

    if (!g_getenv("NOTIFY_SOCKET")) {
        *why = "not started by systemd ($NOTIFY_SOCKET is not set)";
        return FALSE;
    }
    if (fdstore && *fdstore)
        fd_store_option = g_ascii_strtoull(fdstore, NULL, 10) > 0;
    if (!fd_store_option) {
        *why = "the unit keeps no file descriptor store (FileDescriptorStoreMax= and, before "
               "systemd 254, --fd-store)";
        return FALSE;
    }
    *why = NULL;
    return TRUE;
}

static guint store_capacity(void)
{
    const char *fdstore = g_getenv("FDSTORE");
    guint64 n = fdstore && *fdstore ? g_ascii_strtoull(fdstore, NULL, 10) : FD_STORE_DEFAULT;

    return (guint)MIN(n, G_MAXUINT);
}

gboolean mvmd_handoff_remove_from_store(const char *name)
{
    g_autofree char *message = g_strdup_printf("FDSTOREREMOVE=1\nFDNAME=%s", name);
    int r = sd_notify(0, message);

    if (r <= 0)
        g_warning("cannot remove %s from the fd store: %s", name,
                  r < 0 ? g_strerror(-r) : "$NOTIFY_SOCKET is not set");
    return r > 0;
}

/* One descriptor per message: a message's FDNAME= names all of its descriptors alike. */
static gboolean push_fd(int fd, const char *name, GPtrArray *pushed, GError **error)
{
    /* FDPOLL=0 (systemd 254 and later): a tap that reports an error is still this VM's. */
    g_autofree char *message = g_strdup_printf("FDSTORE=1\nFDPOLL=0\nFDNAME=%s", name);
    int r = sd_pid_notify_with_fds(0, 0, message, &fd, 1);

    if (r <= 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_FAILED, "cannot push %s into the fd store: %s",
                    name, r < 0 ? g_strerror(-r) : "$NOTIFY_SOCKET is not set");
        return FALSE;
    }
    g_ptr_array_add(pushed, g_strdup(name));
    return TRUE;
}

/* This boot's ID: the monotonic clock of Time= is this boot's alone. */
static const char *boot_id(void)
{
    static char *id;

    if (!id && !g_file_get_contents("/proc/sys/kernel/random/boot_id", &id, NULL, NULL))
        id = g_strdup("unknown");
    return g_strstrip(id);
}

/* One descriptor to push, "mvmd.N.KIND". */
typedef struct {
    char *kind;
    int fd;        /* borrowed */
    gboolean ours; /* a memfd made for this handoff: no other VM has it */
} Planned;

/* One VM's descriptors, its definition last. */
typedef struct {
    guint index;
    GArray *entries; /* of Planned */
} Plan;

static void planned_clear(Planned *entry)
{
    g_free(entry->kind);
}

static const char *plan_add(Plan *plan, const char *kind, int fd, gboolean ours)
{
    Planned entry = {g_strdup(kind), fd, ours};

    g_array_append_val(plan->entries, entry);
    return entry.kind;
}

static char *plan_name(const Plan *plan, guint i)
{
    return g_strdup_printf(MVMD_HANDOFF_FD_PREFIX "%u.%s", plan->index,
                           g_array_index(plan->entries, Planned, i).kind);
}

#ifndef F_DUPFD_QUERY
#define F_DUPFD_QUERY 1027 /* Linux 6.10 */
#endif

/* Type, device and inode, without a round trip to the file's server (a caller's NFS). */
static gboolean stat_fd(int fd, struct statx *stx)
{
    return statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, stx) == 0;
}

/*
 * Do @a and @b share one open file? systemd's store keeps such descriptors once, under the
 * first name, and tells them apart as its same_fd() does, which this mirrors: F_DUPFD_QUERY,
 * else kcmp(KCMP_FILE), else the same inode opened with the same flags, where two device
 * nodes are never one (every tap is /dev/net/tun). Unknown counts as one: refused, not lost.
 */
static gboolean same_open_file(int a, int b)
{
    pid_t pid = getpid();
    long r = fcntl(a, F_DUPFD_QUERY, b);
    struct statx sa, sb;

    if (r >= 0)
        return r > 0;
    r = syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);
    if (r >= 0)
        return r == 0;
    if (!stat_fd(a, &sa) || !stat_fd(b, &sb))
        return TRUE;
    if ((sa.stx_mode & S_IFMT) != (sb.stx_mode & S_IFMT) || S_ISCHR(sa.stx_mode) ||
        S_ISBLK(sa.stx_mode))
        return FALSE;
    return sa.stx_dev_major == sb.stx_dev_major && sa.stx_dev_minor == sb.stx_dev_minor &&
           sa.stx_ino == sb.stx_ino && fcntl(a, F_GETFL) == fcntl(b, F_GETFL);
}

/* The kind under which @fd's open file is among @plan's first @n entries, or NULL. */
static const char *plan_find_among(const Plan *plan, guint n, int fd)
{
    for (guint i = 0; i < n; i++) {
        const Planned *entry = &g_array_index(plan->entries, Planned, i);

        if (!entry->ours && same_open_file(entry->fd, fd))
            return entry->kind;
    }
    return NULL;
}

static const char *plan_find(const Plan *plan, int fd)
{
    return plan_find_among(plan, plan->entries->len, fd);
}

static const char *plan_find_before(const Plan *plan, guint i)
{
    return plan_find_among(plan, i, g_array_index(plan->entries, Planned, i).fd);
}

static void plan_backends(Plan *plan, const MvmVmConfig *backends)
{
    for (guint i = 0; backends->disks && i < backends->disks->len; i++) {
        const MvmDiskConfig *disk = g_ptr_array_index(backends->disks, i);
        g_autofree char *kind = g_strdup_printf("disk%u", i);

        plan_add(plan, kind, disk->fd, FALSE);
    }
    for (guint i = 0; backends->nics && i < backends->nics->len; i++) {
        const MvmNetConfig *nic = g_ptr_array_index(backends->nics, i);
        g_autofree char *kind = g_strdup_printf("nic%u", i);

        plan_add(plan, kind, nic->tap_fd, FALSE);
    }
}

/*
 * The descriptors the definition names by handle, each as the kind it goes under: "fdN", or
 * a back end's own kind when it is that back end's open file (the library dups the caller's
 * descriptor), which the store would keep only once.
 */
static char **plan_caller_fds(Plan *plan, GArray *caller_fds)
{
    g_autoptr(GStrvBuilder) kinds = g_strv_builder_new();

    for (guint i = 0; i < caller_fds->len; i++) {
        int fd = g_array_index(caller_fds, int, i);
        const char *kind = plan_find(plan, fd);
        g_autofree char *own = kind ? NULL : g_strdup_printf("fd%u", i);

        g_strv_builder_add(kinds, kind ? kind : plan_add(plan, own, fd, FALSE));
    }
    return g_strv_builder_end(kinds);
}

/*
 * The definition and what the next daemon needs besides, in a sealed memfd. The descriptors
 * its caller passed are planned too, and [Handoff] CallerFDs lists their kinds by handle.
 */
static int write_def(const MvmdHandoffOut *vm, Plan *plan, GError **error)
{
    g_autoptr(GArray) caller_fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GKeyFile) kf = mvmd_vm_definition_to_keyfile_with_fds(vm->definition, caller_fds);
    g_auto(GStrv) caller_kinds = plan_caller_fds(plan, caller_fds);
    g_autofree char *data = NULL;
    gsize len;
    int fd;

    g_key_file_set_integer(kf, GROUP_HANDOFF, "Version", MVMD_HANDOFF_VERSION);
    g_key_file_set_string(kf, GROUP_HANDOFF, "BootID", boot_id());
    g_key_file_set_int64(kf, GROUP_HANDOFF, "Time", g_get_monotonic_time());
    g_key_file_set_boolean(kf, GROUP_HANDOFF, "Running", vm->running);
    if (vm->has_generation_id) {
        g_autofree char *hex = mvmd_hex_format(vm->generation_id, MVM_GENERATION_ID_SIZE);

        g_key_file_set_string(kf, GROUP_HANDOFF, "GenerationID", hex);
    }
    g_key_file_set_integer(kf, GROUP_HANDOFF, "Disks",
                           vm->backends->disks ? (int)vm->backends->disks->len : 0);
    g_key_file_set_integer(kf, GROUP_HANDOFF, "NICs",
                           vm->backends->nics ? (int)vm->backends->nics->len : 0);
    g_key_file_set_string_list(kf, GROUP_HANDOFF, "CallerFDs", (const char *const *)caller_kinds,
                               g_strv_length(caller_kinds));
    data = g_key_file_to_data(kf, &len, NULL);
    fd = memfd_create("microvmd-handoff-def", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot write the handoff's definition");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/*
 * The back ends and caller descriptors pushed so far (dup'ed: each must stay open to be
 * compared), by inode, "MAJOR:MINOR:INO" → GArray of fds.
 */
static GHashTable *pushed_files;

static char *inode_key(int fd)
{
    struct statx stx;

    if (!stat_fd(fd, &stx))
        return NULL;
    return g_strdup_printf("%u:%u:%" G_GUINT64_FORMAT, stx.stx_dev_major, stx.stx_dev_minor,
                           (guint64)stx.stx_ino);
}

/* Open files of other VMs, to be compared with (a copy of each, closed with the table). */
typedef struct {
    char *key;
    int fd;
} FileCopy;

static void file_copy_clear(FileCopy *copy)
{
    g_free(copy->key);
    if (copy->fd >= 0)
        close(copy->fd);
}

/*
 * A copy of each descriptor of @plan that came from outside (back ends, the caller's), made
 * before any is pushed: a VM whose files cannot be compared with later VMs' is not handed over,
 * since a later VM sharing one would be lost rather than refused.
 */
static GArray *plan_copy_files(const Plan *plan, GError **error)
{
    g_autoptr(GArray) copies = g_array_new(FALSE, FALSE, sizeof(FileCopy));

    g_array_set_clear_func(copies, (GDestroyNotify)file_copy_clear);
    for (guint i = 0; i < plan->entries->len; i++) {
        const Planned *entry = &g_array_index(plan->entries, Planned, i);
        FileCopy copy = {NULL, -1};

        if (entry->ours)
            continue;
        copy.key = inode_key(entry->fd);
        copy.fd = copy.key ? fcntl(entry->fd, F_DUPFD_CLOEXEC, 3) : -1;
        if (copy.fd < 0) {
            mvmd_set_errno_error(error, MVMD_ERROR_NO_RESOURCES, "cannot look at its %s",
                                 entry->kind);
            file_copy_clear(&copy);
            return NULL;
        }
        g_array_append_val(copies, copy);
    }
    return g_steal_pointer(&copies);
}

/*
 * A descriptor another VM handed over shares its open file (one descriptor passed to two
 * CreateVM calls): the store would keep it under the other VM's name alone, and the next
 * daemon could not take this VM. Such a VM is not handed over.
 */
static gboolean plan_check_unshared(const Plan *plan, const GArray *copies, GError **error)
{
    for (guint i = 0; i < plan->entries->len; i++) {
        const Planned *entry = &g_array_index(plan->entries, Planned, i);
        const char *first = entry->ours ? NULL : plan_find_before(plan, i);

        if (first) {
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_FAILED,
                        "its %s and %s are one open file, which systemd's store keeps once", first,
                        entry->kind);
            return FALSE;
        }
    }
    for (guint i = 0; pushed_files && i < copies->len; i++) {
        const FileCopy *copy = &g_array_index(copies, FileCopy, i);
        GArray *same_inode = g_hash_table_lookup(pushed_files, copy->key);

        for (guint j = 0; same_inode && j < same_inode->len; j++) {
            if (same_open_file(copy->fd, g_array_index(same_inode, int, j))) {
                g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_FAILED,
                                    "one of its files is one another VM was handed over with, "
                                    "which systemd's store keeps once");
                return FALSE;
            }
        }
    }
    return TRUE;
}

/* @copies into the table of what was pushed: it keeps their descriptors. */
static void remember_files(GArray *copies)
{
    if (!pushed_files)
        pushed_files =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_array_unref);
    for (guint i = 0; i < copies->len; i++) {
        FileCopy *copy = &g_array_index(copies, FileCopy, i);
        GArray *same_inode = g_hash_table_lookup(pushed_files, copy->key);

        if (!same_inode) {
            same_inode = g_array_new(FALSE, FALSE, sizeof(int));
            g_hash_table_insert(pushed_files, g_strdup(copy->key), same_inode);
        }
        g_array_append_val(same_inode, copy->fd);
        copy->fd = -1;
    }
}

void mvmd_handoff_expect(guint n_vms)
{
    expected_vms = n_vms;
}

/*
 * What the store and the next daemon's environment still take, with @plan in. Each VM is
 * sure of its share of both (the budget over the VMs expected), whatever order the saves end
 * in: a VM may take more only from what is left beyond the shares of those still to come, so
 * that one owner's VMs with many descriptors cannot crowd out everybody else's.
 */
static gboolean plan_fits(const Plan *plan, gsize *name_bytes, GError **error)
{
    guint to_come = expected_vms > pushed_vms + 1 ? expected_vms - pushed_vms - 1 : 0;
    guint64 fds_reserved = (guint64)to_come * (store_capacity() / MAX(expected_vms, 1));
    guint64 names_reserved = (guint64)to_come * (NAMES_MAX_BYTES / MAX(expected_vms, 1));

    *name_bytes = 0;
    for (guint i = 0; i < plan->entries->len; i++) {
        g_autofree char *name = plan_name(plan, i);

        *name_bytes += strlen(name) + 1; /* and its ':' */
    }
    if (pushed_fds + plan->entries->len + fds_reserved > store_capacity() ||
        pushed_name_bytes + *name_bytes + names_reserved > NAMES_MAX_BYTES) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_LIMIT_REACHED,
                    "the fd store has no room for its %u descriptors (%" G_GSIZE_FORMAT
                    " bytes of names): of %u and %d, %u and %" G_GSIZE_FORMAT
                    " are taken, and a share is kept for each of %u VMs still to come",
                    plan->entries->len, *name_bytes, store_capacity(), NAMES_MAX_BYTES, pushed_fds,
                    pushed_name_bytes, to_come);
        return FALSE;
    }
    return TRUE;
}

static gboolean push_plan(const Plan *plan, GPtrArray *pushed, GError **error)
{
    for (guint i = 0; i < plan->entries->len; i++) {
        g_autofree char *name = plan_name(plan, i);

        if (!push_fd(g_array_index(plan->entries, Planned, i).fd, name, pushed, error))
            return FALSE;
    }
    return TRUE;
}

gboolean mvmd_handoff_push(const MvmdHandoffOut *vm, GError **error)
{
    g_autoptr(GPtrArray) pushed = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) entries = g_array_new(FALSE, FALSE, sizeof(Planned));
    g_autoptr(GArray) copies = NULL;
    Plan plan = {next_index++, entries};
    gsize name_bytes;
    int def_fd;
    gboolean ok;

    g_array_set_clear_func(entries, (GDestroyNotify)planned_clear);
    plan_add(&plan, "state", vm->state_fd, TRUE);
    plan_add(&plan, "memory", vm->memory_fd, TRUE);
    plan_backends(&plan, vm->backends);
    def_fd = write_def(vm, &plan, error);
    /* Last: a VM is handed over once its `def` is in the store, and only then. */
    plan_add(&plan, "def", def_fd, TRUE);
    ok = def_fd >= 0 && (copies = plan_copy_files(&plan, error)) &&
         plan_check_unshared(&plan, copies, error) && plan_fits(&plan, &name_bytes, error) &&
         push_plan(&plan, pushed, error);
    if (ok) {
        remember_files(copies);
        pushed_vms++;
        pushed_fds += plan.entries->len;
        pushed_name_bytes += name_bytes;
    } else {
        for (guint i = 0; i < pushed->len; i++)
            mvmd_handoff_remove_from_store(pushed->pdata[i]);
    }
    if (def_fd >= 0)
        close(def_fd);
    return ok;
}

/* ---- the daemon that takes over -------------------------------------------------------- */

void mvmd_handoff_in_free(MvmdHandoffIn *vm)
{
    if (!vm)
        return;
    g_free(vm->uuid);
    mvmd_vm_definition_free(vm->definition);
    if (vm->state_fd >= 0)
        close(vm->state_fd);
    if (vm->memory_fd >= 0)
        close(vm->memory_fd);
    if (vm->backends) {
        mvm_vm_config_close_fds(vm->backends);
        mvm_vm_config_free(vm->backends);
    }
    g_free(vm);
}

/* The descriptors of one VM as they came, by kind ("state", "disk0"…). */
typedef struct {
    GHashTable *fds;      /* kind → fd + 1 (0 is no fd) */
    gboolean not_removed; /* one of them may still be in the store: never resumed */
    gboolean duplicate;   /* a kind came twice */
} Pending;

static void pending_free(Pending *p)
{
    GHashTableIter iter;
    gpointer value;

    g_hash_table_iter_init(&iter, p->fds);
    while (g_hash_table_iter_next(&iter, NULL, &value))
        close(GPOINTER_TO_INT(value) - 1);
    g_hash_table_unref(p->fds);
    g_free(p);
}

/* Takes the descriptor of @kind out of @p: the caller owns it; -1 when it did not come. */
static int pending_take(Pending *p, const char *kind)
{
    gpointer value;

    if (!g_hash_table_steal_extended(p->fds, kind, NULL, &value))
        return -1;
    return GPOINTER_TO_INT(value) - 1;
}

static gboolean is_index(const char *s, gsize len)
{
    if (len == 0 || len > 9)
        return FALSE;
    for (gsize i = 0; i < len; i++)
        if (!g_ascii_isdigit(s[i]))
            return FALSE;
    return TRUE;
}

/* "mvmd.N.KIND" into @by_index; anything malformed is closed. */
static void sort_in(GHashTable *by_index, const char *name, int fd, gboolean removed)
{
    const char *rest = name + strlen(MVMD_HANDOFF_FD_PREFIX);
    const char *dot = strchr(rest, '.');
    Pending *p;
    g_autofree char *index = NULL;

    if (!dot || !is_index(rest, dot - rest) || !dot[1] || strlen(dot + 1) > 16) {
        g_warning("handoff: dropping fd %s: not a name this microvmd writes", name);
        close(fd);
        return;
    }
    index = g_strndup(rest, dot - rest);
    p = g_hash_table_lookup(by_index, index);
    if (!p) {
        p = g_new0(Pending, 1);
        p->fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_hash_table_insert(by_index, g_steal_pointer(&index), p);
    }
    p->not_removed |= !removed;
    if (g_hash_table_contains(p->fds, dot + 1)) {
        p->duplicate = TRUE;
        close(fd);
        return;
    }
    g_hash_table_insert(p->fds, g_strdup(dot + 1), GINT_TO_POINTER(fd + 1));
}

static GKeyFile *read_def(int fd, GError **error)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *data = g_malloc(DEF_MAX_BYTES + 1);
    gsize len = 0;
    ssize_t n;

    while (len <= DEF_MAX_BYTES &&
           (n = pread(fd, data + len, DEF_MAX_BYTES + 1 - len, (off_t)len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mvmd_set_errno_error(error, MVMD_ERROR_FAILED, "cannot read `def`"), NULL;
        len += (gsize)n;
    }
    if (len > DEF_MAX_BYTES) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "`def` is larger than %d bytes",
                    DEF_MAX_BYTES);
        return NULL;
    }
    if (!g_key_file_load_from_data(kf, data, len, G_KEY_FILE_NONE, error))
        return NULL;
    return g_steal_pointer(&kf);
}

static gboolean parse_generation_id(GKeyFile *kf, MvmdHandoffIn *vm, GError **error)
{
    g_autofree char *hex = g_key_file_get_string(kf, GROUP_HANDOFF, "GenerationID", NULL);

    if (!hex)
        return TRUE;
    if (!mvmd_hex_parse(hex, vm->generation_id, MVM_GENERATION_ID_SIZE)) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            "[Handoff] GenerationID is not a generation ID");
        return FALSE;
    }
    vm->has_generation_id = TRUE;
    return TRUE;
}

/* A count of [Handoff]: what the leaving daemon pushed, to be matched with the devices. */
static gboolean parse_count(GKeyFile *kf, const char *key, guint *count, GError **error)
{
    g_autoptr(GError) local = NULL;
    int n = g_key_file_get_integer(kf, GROUP_HANDOFF, key, &local);

    if (local || n < 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "[Handoff] %s is no count",
                    key);
        return FALSE;
    }
    *count = (guint)n;
    return TRUE;
}

/* Handed over in this boot, moments ago: anything else would resume old state on new disks. */
static gboolean check_fresh(GKeyFile *kf, GError **error)
{
    g_autofree char *boot = g_key_file_get_string(kf, GROUP_HANDOFF, "BootID", NULL);
    g_autoptr(GError) local = NULL;
    gint64 then = g_key_file_get_int64(kf, GROUP_HANDOFF, "Time", &local);
    gint64 age = g_get_monotonic_time() - then;

    if (g_strcmp0(boot, boot_id()) != 0 || local) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            "it was handed over in another boot");
        return FALSE;
    }
    if (age < 0 || age > MAX_AGE_US) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "it was handed over %" G_GINT64_FORMAT " s ago: too long for a restart",
                    age / G_USEC_PER_SEC);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_version(GKeyFile *kf, GError **error)
{
    g_autoptr(GError) local = NULL;
    int version = g_key_file_get_integer(kf, GROUP_HANDOFF, "Version", &local);

    if (!local && version == MVMD_HANDOFF_VERSION)
        return check_fresh(kf, error);
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                "handed over in format %d; this microvmd reads format %d", local ? 0 : version,
                MVMD_HANDOFF_VERSION);
    return FALSE;
}

/* One descriptor by @kind_prefix and @i ("disk0", "fd2"…): the caller owns it. */
static gboolean take_numbered(Pending *p, const char *kind_prefix, guint i, int *fd, GError **error)
{
    g_autofree char *kind = g_strdup_printf("%s%u", kind_prefix, i);

    *fd = pending_take(p, kind);
    if (*fd >= 0)
        return TRUE;
    g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "%s is missing", kind);
    return FALSE;
}

/* "fdN", "diskN" or "nicN": never the state, the RAM or the definition itself. */
static gboolean is_caller_kind(const char *kind)
{
    static const char *const prefixes[] = {"fd", "disk", "nic"};

    for (guint i = 0; i < G_N_ELEMENTS(prefixes); i++) {
        gsize len = strlen(prefixes[i]);

        if (strncmp(kind, prefixes[i], len) == 0 && is_index(kind + len, strlen(kind + len)))
            return TRUE;
    }
    return FALSE;
}

/*
 * The descriptors the definition names by handle, by the kinds [Handoff] CallerFDs lists: a
 * back end's ("disk0"), which take_backends() takes later, is copied; the caller's own
 * ("fd1") are taken.
 */
static GUnixFDList *take_caller_fds(GKeyFile *kf, Pending *p, GError **error)
{
    g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
    gsize n = 0;
    g_auto(GStrv) kinds = g_key_file_get_string_list(kf, GROUP_HANDOFF, "CallerFDs", &n, NULL);

    for (gsize i = 0; i < n; i++) {
        gpointer value = is_caller_kind(kinds[i]) ? g_hash_table_lookup(p->fds, kinds[i]) : NULL;

        if (!value) {
            g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT, "%s is missing", kinds[i]);
            return NULL;
        }
        if (g_unix_fd_list_append(list, GPOINTER_TO_INT(value) - 1, error) < 0)
            return NULL;
    }
    for (gsize i = 0; i < n; i++) {
        int fd = g_str_has_prefix(kinds[i], "fd") ? pending_take(p, kinds[i]) : -1;

        if (fd >= 0)
            close(fd);
    }
    return g_steal_pointer(&list);
}

/*
 * [Handoff], then the definition with the same checks as a stored one gets, and those of
 * CreateVM for the descriptors its caller passed.
 */
static gboolean parse_def(GKeyFile *kf, Pending *p, MvmdHandoffIn *vm, GError **error)
{
    g_autoptr(GUnixFDList) caller_fds = NULL;
    guint disks, nics;

    if (!check_version(kf, error) || !parse_count(kf, "Disks", &disks, error) ||
        !parse_count(kf, "NICs", &nics, error) || !parse_generation_id(kf, vm, error))
        return FALSE;
    caller_fds = take_caller_fds(kf, p, error);
    if (!caller_fds)
        return FALSE;
    vm->running = g_key_file_get_boolean(kf, GROUP_HANDOFF, "Running", NULL);
    g_key_file_remove_group(kf, GROUP_HANDOFF, NULL);
    vm->definition = mvmd_vm_definition_new_from_keyfile_with_fds(kf, caller_fds, error);
    if (!vm->definition || !mvmd_auth_check_owner_may_have(vm->definition, error))
        return FALSE;
    vm->uuid = g_strdup(vm->definition->uuid);
    if (disks != vm->definition->devices.disks->len || nics != vm->definition->devices.nics->len) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "%u disks and %u NICs were handed over for a definition with %u and %u", disks,
                    nics, vm->definition->devices.disks->len, vm->definition->devices.nics->len);
        return FALSE;
    }
    return TRUE;
}

/*
 * The definition's devices, each with the descriptor handed over: the path or tap name stays
 * beside it, unopened (the fd is used), since the machine's state names it for the next
 * handoff or snapshot. The definition's own descriptors are not the back ends': each one is
 * replaced, with the one handed over or -1, past a missing one too (the first sets @error).
 */
static gboolean take_backends(Pending *p, MvmdHandoffIn *vm, GError **error)
{
    MvmVmConfig *backends = mvmd_vm_definition_to_mvm(vm->definition);
    gboolean ok = TRUE;

    vm->backends = backends;
    backends->kernel_fd = backends->initrd_fd = -1;
    for (guint i = 0; backends->disks && i < backends->disks->len; i++) {
        MvmDiskConfig *disk = g_ptr_array_index(backends->disks, i);

        ok &= take_numbered(p, "disk", i, &disk->fd, ok ? error : NULL);
    }
    for (guint i = 0; backends->nics && i < backends->nics->len; i++) {
        MvmNetConfig *nic = g_ptr_array_index(backends->nics, i);

        ok &= take_numbered(p, "nic", i, &nic->tap_fd, ok ? error : NULL);
    }
    return ok;
}

static MvmdHandoffIn *take_vm(Pending *p, GError **error)
{
    g_autoptr(MvmdHandoffIn) vm = g_new0(MvmdHandoffIn, 1);
    g_autoptr(GKeyFile) kf = NULL;
    int def_fd = pending_take(p, "def");

    vm->state_fd = pending_take(p, "state");
    vm->memory_fd = pending_take(p, "memory");
    if (def_fd < 0 || vm->state_fd < 0 || vm->memory_fd < 0) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            def_fd < 0 ? "it was not handed over completely (no `def`)"
                                       : "its `state` or `memory` is missing");
        if (def_fd >= 0)
            close(def_fd);
        return NULL;
    }
    kf = read_def(def_fd, error);
    close(def_fd);
    if (!kf || !parse_def(kf, p, vm, error))
        return NULL;
    if (p->not_removed || p->duplicate) {
        g_set_error_literal(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                            p->duplicate ? "a descriptor of it came twice"
                                         : "it could not be removed from the fd store");
        return NULL;
    }
    if (!take_backends(p, vm, error))
        return NULL;
    if (g_hash_table_size(p->fds) > 0) {
        g_set_error(error, MVMD_ERROR, MVMD_ERROR_INVALID_ARGUMENT,
                    "%u descriptors more than its devices have", g_hash_table_size(p->fds));
        return NULL;
    }
    return g_steal_pointer(&vm);
}

GPtrArray *mvmd_handoff_collect(MvmdListenFds *passed)
{
    g_autoptr(GHashTable) by_index =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)pending_free);
    GPtrArray *vms = g_ptr_array_new_with_free_func((GDestroyNotify)mvmd_handoff_in_free);
    GHashTableIter iter;
    gpointer key, value;
    int fd;
    const char *name;

    for (guint i = 0; mvmd_listen_fds_get(passed, i, &fd, &name); i++) {
        gboolean removed;

        if (fd < 0 || !g_str_has_prefix(name, MVMD_HANDOFF_FD_PREFIX))
            continue;
        /* Out of the store before any guest runs on: a later start must not find it. */
        removed = mvmd_handoff_remove_from_store(name);
        sort_in(by_index, name, mvmd_listen_fds_steal(passed, i), removed);
    }
    g_hash_table_iter_init(&iter, by_index);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        g_autoptr(GError) error = NULL;
        MvmdHandoffIn *vm = take_vm(value, &error);

        if (vm)
            g_ptr_array_add(vms, vm);
        else
            g_warning("handoff: VM " MVMD_HANDOFF_FD_PREFIX "%s is not taken over: %s",
                      (const char *)key, error->message);
    }
    return vms;
}

/* ---- is this stop a restart? ----------------------------------------------------------- */

#define SYSTEMD_NAME   "org.freedesktop.systemd1"
#define ASK_TIMEOUT_MS 2000

typedef struct {
    GDBusConnection *connection;
    MvmdHandoffRestartFunc func;
    gpointer user_data;
} Ask;

static void ask_done(Ask *ask, gboolean restarting, const char *why)
{
    g_message("stop: %s", why);
    ask->func(restarting, ask->user_data);
    g_object_unref(ask->connection);
    g_free(ask);
}

static void get_property(Ask *ask, const char *path, const char *interface, const char *name,
                         GAsyncReadyCallback callback)
{
    g_dbus_connection_call(ask->connection, SYSTEMD_NAME, path, "org.freedesktop.DBus.Properties",
                           "Get", g_variant_new("(ss)", interface, name), G_VARIANT_TYPE("(v)"),
                           G_DBUS_CALL_FLAGS_NO_AUTO_START, ASK_TIMEOUT_MS, NULL, callback, ask);
}

/* The reply's one value, or NULL with @why set. */
static GVariant *reply_value(GObject *source, GAsyncResult *result, char **why)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    GVariant *value;

    if (!reply) {
        *why =
            g_strdup_printf("systemd did not say whether this is a restart (%s)", error->message);
        return NULL;
    }
    g_variant_get(reply, "(v)", &value);
    return value;
}

static void on_job_type(GObject *source, GAsyncResult *result, gpointer user_data)
{
    g_autofree char *why = NULL;
    g_autoptr(GVariant) value = reply_value(source, result, &why);
    const char *type = value && g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)
                           ? g_variant_get_string(value, NULL)
                           : "";
    gboolean restart = g_str_equal(type, "restart") || g_str_equal(type, "try-restart");

    if (!why)
        why = g_strdup_printf("systemd's job for the unit is a %s", type);
    ask_done(user_data, restart, why);
}

static void on_unit_job(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Ask *ask = user_data;
    g_autofree char *why = NULL;
    g_autoptr(GVariant) value = reply_value(source, result, &why);
    const char *job = "/";

    if (value && g_variant_is_of_type(value, G_VARIANT_TYPE("(uo)")))
        g_variant_get(value, "(u&o)", NULL, &job);
    if (!why && g_str_equal(job, "/"))
        why = g_strdup("systemd has no job for the unit (a signal from elsewhere)");
    if (why) {
        ask_done(ask, FALSE, why);
        return;
    }
    get_property(ask, job, "org.freedesktop.systemd1.Job", "JobType", on_job_type);
}

static void on_unit(GObject *source, GAsyncResult *result, gpointer user_data)
{
    Ask *ask = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
    const char *unit;

    if (!reply) {
        g_autofree char *why =
            g_strdup_printf("systemd does not know our unit (%s)", error->message);
        ask_done(ask, FALSE, why);
        return;
    }
    g_variant_get(reply, "(&o)", &unit);
    get_property(ask, unit, "org.freedesktop.systemd1.Unit", "Job", on_unit_job);
}

void mvmd_handoff_ask_if_restarting(GDBusConnection *connection, MvmdHandoffRestartFunc func,
                                    gpointer user_data)
{
    Ask *ask = g_new0(Ask, 1);

    ask->connection = g_object_ref(connection);
    ask->func = func;
    ask->user_data = user_data;
    g_dbus_connection_call(connection, SYSTEMD_NAME, "/org/freedesktop/systemd1",
                           "org.freedesktop.systemd1.Manager", "GetUnitByPID",
                           g_variant_new("(u)", (guint32)getpid()), G_VARIANT_TYPE("(o)"),
                           G_DBUS_CALL_FLAGS_NO_AUTO_START, ASK_TIMEOUT_MS, NULL, on_unit, ask);
}
