/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazily restored guest RAM (MVM_RESTORE_LAZY): a fresh memfd like any VM's, registered with
 * a userfaultfd in "missing" mode, so the first touch of a page that is not in the memfd yet
 * (by a vCPU through KVM, by a device model thread, by the VMM) waits in the kernel until a
 * page is put there. One thread per VM serves those faults: it reads the page from the
 * snapshot's `memory` with pread and places it with UFFDIO_COPY, which wakes the waiter.
 *
 * The file is read, never mapped: a caller's file that shrinks meanwhile reads as zeros past
 * its end instead of a SIGBUS that would take every VM of the process down. A read that fails
 * outright gives the guest zeros too (and a warning): a fault must be resolved, or the vCPU
 * waits for ever.
 *
 * Once every page is in (mvm_memory_lazy_finish()) the thread and the descriptors go, and the
 * memory is ordinary memfd RAM; the bitmap of pages read on demand (the working set) stays.
 * The thread is created by the restoring thread, never by a sandboxed one: it inherits its
 * creator's seccomp filter, and a vCPU's would refuse its reads.
 */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error-private.h"
#include "layout.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) /* linux/userfaultfd.h of Linux 6.1 */
#endif

#define FILL_CHUNK    (2 * MVM_MIB) /* bulk reads (prefetch, finish) go through a buffer this big */
#define MAX_EVENTS    16
#define READ_ATTEMPTS 3
#define RETRY_MAX_MS  100 /* a page that cannot be placed is tried again, at most this apart */

struct _MvmLazyMemory {
    guint8 *base; /* the RAM mapping, fd order */
    guint64 size;
    guint64 n_pages;
    int uffd;    /* -1 once finished */
    int file_fd; /* our duplicate of the snapshot's `memory`; -1 once finished */
    int stop_fd; /* eventfd: the fault thread's signal to end */
    GThread *thread;
    GMutex finish_lock; /* one finish at a time; guards the descriptors' closing */
    gboolean finished;  /* every page with data is in; the descriptors are closed */
    gboolean aborted;   /* mvm_memory_lazy_abort(): the VM is going */
    guint64 pages_in;   /* atomic: pages placed so far, any way */
    guint8 *present;    /* atomic bits: placed by us (on demand, prefetch or finish) */
    guint8 *demand;     /* atomic bits: placed because something touched them */
    guint8 source_id[MVM_SNAPSHOT_ID_SIZE];
    guint8 *fault_buf; /* the fault thread's page; aligned, for a file opened with O_DIRECT */
    dev_t source_dev;  /* the file's identity, kept after it is closed */
    ino_t source_ino;
    gboolean warned;
};

static gboolean bit_set(const guint8 *bits, guint64 page)
{
    return (__atomic_load_n(&bits[page / 8], __ATOMIC_RELAXED) >> (page % 8)) & 1;
}

static void set_bit(guint8 *bits, guint64 page)
{
    __atomic_fetch_or(&bits[page / 8], (guint8)(1u << (page % 8)), __ATOMIC_RELAXED);
}

/* ---- the userfaultfd ---- */

/*
 * Only through /dev/userfaultfd (Linux 6.1): access to the node is all it needs, which the unit
 * grants (DeviceAllow=), and its descriptors see faults taken inside the kernel (KVM's on guest
 * RAM), which the userfaultfd(2) system call gives only to CAP_SYS_PTRACE. The system call is
 * on the daemon's process-wide deny list (sandbox.c): never tried.
 */
static int open_userfaultfd(void)
{
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

    if (dev < 0)
        return -1;
    int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int saved = errno;
    close(dev);
    errno = saved;
    return fd;
}

int mvm_lazy_open_userfaultfd(GError **error)
{
    int fd = open_userfaultfd();
    struct uffdio_api api = {.api = UFFD_API};

    if (fd < 0) {
        mvm_set_errno_error(error, MVM_ERROR_NOT_SUPPORTED,
                            "lazy restore needs a userfaultfd from /dev/userfaultfd (Linux 6.1 "
                            "and later), which this process cannot open");
        return -1;
    }
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        mvm_set_errno_error(error, MVM_ERROR_NOT_SUPPORTED, "userfaultfd refused its API");
        close(fd);
        return -1;
    }
    return fd;
}

static gboolean register_ram(MvmLazyMemory *lazy, GError **error)
{
    struct uffdio_register reg = {
        .range = {.start = (guint64)(guintptr)lazy->base, .len = lazy->size},
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };

    if (ioctl(lazy->uffd, UFFDIO_REGISTER, &reg) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_NOT_SUPPORTED,
                                   "userfaultfd cannot watch guest memory here");
    if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_NOT_SUPPORTED,
                            "userfaultfd cannot fill guest memory here (no UFFDIO_COPY)");
        return FALSE;
    }
    return TRUE;
}

/* ---- placing pages ---- */

/*
 * @len bytes of the file at @offset into @buf; what the file does not have reads as zeros. A
 * read that fails is tried again a few times; then the guest gets zeros too (and a warning
 * once): a fault must be answered, or whoever touched the page waits for ever.
 */
static void read_file(MvmLazyMemory *lazy, guint8 *buf, gsize len, guint64 offset)
{
    gsize done = 0;
    guint failures = 0;

    while (done < len) {
        ssize_t n = pread(lazy->file_fd, buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && (errno == EINTR || ++failures < READ_ATTEMPTS))
            continue;
        if (n < 0 && !__atomic_exchange_n(&lazy->warned, TRUE, __ATOMIC_RELAXED))
            g_warning("lazy restore: cannot read the snapshot's memory at 0x%" G_GINT64_MODIFIER
                      "x (%s); the guest gets zeros",
                      offset + done, g_strerror(errno));
        if (n <= 0)
            break;
        done += (gsize)n;
    }
    memset(buf + done, 0, len - done);
}

static void count_placed(MvmLazyMemory *lazy, guint64 first, guint64 n, gboolean on_demand)
{
    for (guint64 page = first; page < first + n; page++) {
        set_bit(lazy->present, page);
        if (on_demand)
            set_bit(lazy->demand, page);
    }
    __atomic_fetch_add(&lazy->pages_in, n, __ATOMIC_RELAXED);
}

/*
 * Places @n pages from @buf at page @first. A page something else placed first (EEXIST) is
 * skipped: its contents are the same file's. Whoever waits on a placed page is woken.
 */
static gboolean place(MvmLazyMemory *lazy, const guint8 *buf, guint64 first, guint64 n,
                      gboolean on_demand, GError **error)
{
    guint64 done = 0;
    guint retries = 0;

    while (done < n) {
        struct uffdio_copy copy = {
            .dst = (guint64)(guintptr)(lazy->base + (first + done) * MVM_PAGE_SIZE),
            .src = (guint64)(guintptr)(buf + done * MVM_PAGE_SIZE),
            .len = (n - done) * MVM_PAGE_SIZE,
        };
        int ret = ioctl(lazy->uffd, UFFDIO_COPY, &copy);
        /* A partial copy succeeds with fewer bytes; the next call then fails on the page. */
        guint64 copied = copy.copy > 0 ? (guint64)copy.copy / MVM_PAGE_SIZE : 0;
        count_placed(lazy, first + done, copied, on_demand);
        done += copied;
        if (ret == 0 && copied > 0)
            continue;
        if (ret < 0 && errno == EEXIST) { /* placed by someone else: wake its waiters too */
            struct uffdio_range page = {.start = copy.dst + copied * MVM_PAGE_SIZE,
                                        .len = MVM_PAGE_SIZE};
            ioctl(lazy->uffd, UFFDIO_WAKE, &page);
            done++;
            continue;
        }
        if (ret < 0 && (errno == EAGAIN || errno == EINTR) && ++retries < 1000)
            continue;
        if (ret < 0 && errno == ENOENT) /* no longer registered (finished, aborted): no waiter */
            return TRUE;
        return mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                   "cannot place a page of lazily restored memory");
    }
    return TRUE;
}

/* Waits up to @ms for the signal to stop; TRUE when it came. */
static gboolean wait_for_stop(MvmLazyMemory *lazy, int ms)
{
    struct pollfd stop = {.fd = lazy->stop_fd, .events = POLLIN};

    return poll(&stop, 1, ms) > 0;
}

/*
 * Never gives up on a fault while the VM lives: the toucher waits in the kernel until the page
 * is placed. A placement that fails (out of memory for the page) is tried again, further apart
 * each time, until it succeeds or the memory is torn down.
 */
static void serve_fault(MvmLazyMemory *lazy, guint8 *buf, guint64 address)
{
    guint8 *host = (guint8 *)(guintptr)address;

    /* The kernel reports only faults inside the registered range; checked all the same. */
    if (host < lazy->base || (guint64)(host - lazy->base) >= lazy->size)
        return;
    guint64 page = (guint64)(host - lazy->base) / MVM_PAGE_SIZE;
    read_file(lazy, buf, MVM_PAGE_SIZE, page * MVM_PAGE_SIZE);
    for (int delay_ms = 1;; delay_ms = MIN(delay_ms * 2, RETRY_MAX_MS)) {
        g_autoptr(GError) error = NULL;
        if (place(lazy, buf, page, 1, TRUE, &error))
            return;
        if (!__atomic_exchange_n(&lazy->warned, TRUE, __ATOMIC_RELAXED))
            g_warning("lazy restore: %s; trying again", error->message);
        if (wait_for_stop(lazy, delay_ms))
            return;
    }
}

/* Ends only when told to (stop_fd): a fault left unserved would hang its toucher. */
static gpointer serve_faults(gpointer data)
{
    MvmLazyMemory *lazy = data;
    struct pollfd fds[2] = {{.fd = lazy->uffd, .events = POLLIN},
                            {.fd = lazy->stop_fd, .events = POLLIN}};

    for (;;) {
        struct uffd_msg msgs[MAX_EVENTS];
        int ready = poll(fds, G_N_ELEMENTS(fds), -1);
        if (ready > 0 && fds[1].revents != 0)
            break;
        ssize_t n = ready > 0 ? read(lazy->uffd, msgs, sizeof(msgs)) : -1;
        if (n < 0 && errno != EAGAIN && errno != EINTR && wait_for_stop(lazy, 1))
            break; /* never spin on an error, never leave on one */
        for (gsize i = 0; n > 0 && i < (gsize)n / sizeof(msgs[0]); i++)
            if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                serve_fault(lazy, lazy->fault_buf, msgs[i].arg.pagefault.address);
    }
    return NULL;
}

/* ---- life cycle ---- */

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(g_steal_fd(fd));
}

static void stop_thread(MvmLazyMemory *lazy)
{
    if (lazy->thread != NULL) {
        eventfd_write(lazy->stop_fd, 1);
        g_thread_join(g_steal_pointer(&lazy->thread));
    }
}

static void close_sources(MvmLazyMemory *lazy)
{
    stop_thread(lazy);
    close_fd(&lazy->uffd);
    close_fd(&lazy->file_fd);
    close_fd(&lazy->stop_fd);
}

void mvm_lazy_memory_free(MvmLazyMemory *lazy)
{
    if (lazy == NULL)
        return;
    close_sources(lazy);
    g_mutex_clear(&lazy->finish_lock);
    g_free(lazy->present);
    g_free(lazy->demand);
    free(lazy->fault_buf);
    g_free(lazy);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MvmLazyMemory, mvm_lazy_memory_free)

static MvmLazyMemory *lazy_new(MvmMemory *mem, const guint8 source_id[MVM_SNAPSHOT_ID_SIZE],
                               GError **error)
{
    g_autoptr(MvmLazyMemory) lazy = g_new0(MvmLazyMemory, 1);
    gsize n_bytes;

    lazy->base = mvm_memory_get_region(mem, 0)->host;
    lazy->size = mvm_memory_get_size(mem);
    lazy->n_pages = mvm_memory_get_n_pages(mem);
    lazy->uffd = lazy->file_fd = lazy->stop_fd = -1;
    g_mutex_init(&lazy->finish_lock);
    n_bytes = (gsize)((lazy->n_pages + 7) / 8);
    lazy->present = g_try_malloc0(n_bytes);
    lazy->demand = g_try_malloc0(n_bytes);
    /* Aligned: a file opened with O_DIRECT (the caller shares its open file) reads too. */
    if (posix_memalign((void **)&lazy->fault_buf, MVM_PAGE_SIZE, MVM_PAGE_SIZE) != 0)
        lazy->fault_buf = NULL;
    if (lazy->present == NULL || lazy->demand == NULL || lazy->fault_buf == NULL) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_FAILED,
                            "out of memory for the page maps of a lazy restore");
        return NULL;
    }
    memcpy(lazy->source_id, source_id, MVM_SNAPSHOT_ID_SIZE);
    return g_steal_pointer(&lazy);
}

static gboolean start_serving(MvmLazyMemory *lazy, int fd, GError **error)
{
    if ((lazy->uffd = mvm_lazy_open_userfaultfd(error)) < 0 || !register_ram(lazy, error))
        return FALSE;
    struct stat st;

    lazy->file_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    lazy->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (lazy->file_fd < 0 || lazy->stop_fd < 0 || fstat(lazy->file_fd, &st) < 0)
        return mvm_set_errno_error(error, MVM_ERROR_FAILED,
                                   "cannot keep the snapshot's memory for a lazy restore");
    lazy->source_dev = st.st_dev;
    lazy->source_ino = st.st_ino;
    lazy->thread = mvm_thread_new("mvm-lazy-ram", serve_faults, lazy, error);
    return lazy->thread != NULL;
}

MvmMemory *mvm_memory_new_lazy(int fd, guint64 size, const guint8 source_id[MVM_SNAPSHOT_ID_SIZE],
                               GError **error)
{
    g_autoptr(MvmMemory) mem = mvm_memory_new(size, error);

    if (mem == NULL)
        return NULL;
    g_autoptr(MvmLazyMemory) lazy = lazy_new(mem, source_id, error);
    if (lazy == NULL || !start_serving(lazy, fd, error))
        return NULL;
    /*
     * No transparent huge pages while pages are missing: khugepaged of kernels before 6.4 may
     * collapse a range with missing pages into a huge page whose missing part is zeros.
     */
    madvise(lazy->base, lazy->size, MADV_NOHUGEPAGE);
    mvm_memory_set_lazy(mem, g_steal_pointer(&lazy));
    return g_steal_pointer(&mem);
}

/* ---- bulk reads ---- */

static gboolean page_is_zero(const guint8 *page)
{
    const guint64 *words = (const guint64 *)page;

    for (gsize i = 0; i < MVM_PAGE_SIZE / sizeof(guint64); i++)
        if (words[i] != 0)
            return FALSE;
    return TRUE;
}

/*
 * Places the pages of @buf (@n from page @first); with @skip_zero, not its zero pages: a finish
 * leaves them missing, and a missing page of the memfd reads as zeros once unregistered.
 */
static gboolean place_chunk(MvmLazyMemory *lazy, const guint8 *buf, guint64 first, guint64 n,
                            gboolean skip_zero, GError **error)
{
    for (guint64 i = 0; i < n;) {
        guint64 run = i;
        while (run < n && !(skip_zero && page_is_zero(buf + run * MVM_PAGE_SIZE)))
            run++;
        if (run > i && !place(lazy, buf + i * MVM_PAGE_SIZE, first + i, run - i, FALSE, error))
            return FALSE;
        i = run + (run < n); /* past the zero page that ended the run */
    }
    return TRUE;
}

/* Pages [first, end) through a buffer, a chunk at a time. */
static gboolean fill_run(MvmLazyMemory *lazy, guint8 *buf, guint64 first, guint64 end,
                         gboolean skip_zero, GError **error)
{
    const guint64 chunk = FILL_CHUNK / MVM_PAGE_SIZE;

    for (guint64 page = first; page < end;) {
        guint64 n = MIN(chunk, end - page);
        read_file(lazy, buf, (gsize)(n * MVM_PAGE_SIZE), page * MVM_PAGE_SIZE);
        if (!place_chunk(lazy, buf, page, n, skip_zero, error))
            return FALSE;
        page += n;
    }
    return TRUE;
}

static gboolean wanted(const MvmLazyMemory *lazy, const guint8 *want, guint64 page)
{
    return (want == NULL || ((want[page / 8] >> (page % 8)) & 1)) && !bit_set(lazy->present, page);
}

/* The next run of pages in [*@end, @limit) that @want marks (all, when NULL) and are not in. */
static gboolean next_missing_run(const MvmLazyMemory *lazy, const guint8 *want, guint64 limit,
                                 guint64 *start, guint64 *end)
{
    guint64 page = *end;

    while (page < limit && !wanted(lazy, want, page))
        page++;
    if (page == limit)
        return FALSE;
    *start = page;
    while (page < limit && wanted(lazy, want, page))
        page++;
    *end = page;
    return TRUE;
}

/* The missing pages of [@first, @limit) that @want marks (NULL: all). */
static gboolean fill_missing(MvmLazyMemory *lazy, guint8 *buf, const guint8 *want, guint64 first,
                             guint64 limit, gboolean skip_zero, GError **error)
{
    guint64 start = first, end = first;

    while (next_missing_run(lazy, want, limit, &start, &end))
        if (!fill_run(lazy, buf, start, end, skip_zero, error))
            return FALSE;
    return TRUE;
}

/*
 * Every missing page with data in the file: only the file's data extents are read (its holes
 * are zero pages that need no placing), where the file system tells them (SEEK_DATA).
 */
static gboolean fill_all(MvmLazyMemory *lazy, guint8 *buf, GError **error)
{
    for (guint64 page = 0; page < lazy->n_pages;) {
        off_t data = lseek(lazy->file_fd, (off_t)(page * MVM_PAGE_SIZE), SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            return TRUE; /* only a hole is left */
        off_t hole = data < 0 ? -1 : lseek(lazy->file_fd, data, SEEK_HOLE);
        if (hole < 0) /* no SEEK_DATA here: everything */
            return fill_missing(lazy, buf, NULL, page, lazy->n_pages, TRUE, error);
        guint64 first = (guint64)data / MVM_PAGE_SIZE;
        guint64 last = MIN(((guint64)hole + MVM_PAGE_SIZE - 1) / MVM_PAGE_SIZE, lazy->n_pages);
        if (first >= lazy->n_pages)
            return TRUE;
        if (!fill_missing(lazy, buf, NULL, first, last, TRUE, error))
            return FALSE;
        page = MAX(last, first + 1); /* a file changed meanwhile still moves on */
    }
    return TRUE;
}

static guint8 *bulk_buffer(GError **error)
{
    void *buf = NULL;

    /* Aligned: a file opened with O_DIRECT (the caller shares its open file) reads too. */
    if (posix_memalign(&buf, MVM_PAGE_SIZE, FILL_CHUNK) != 0) {
        g_set_error_literal(error, MVM_ERROR, MVM_ERROR_FAILED,
                            "out of memory for reading the snapshot's memory");
        return NULL;
    }
    return buf;
}

gboolean mvm_memory_lazy_prefetch(MvmMemory *mem, const guint8 *pages, GError **error)
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);

    g_return_val_if_fail(lazy != NULL && pages != NULL, FALSE);
    guint8 *buf = bulk_buffer(error);
    if (buf == NULL)
        return FALSE;
    g_mutex_lock(&lazy->finish_lock);
    gboolean ok = lazy->finished || fill_missing(lazy, buf, pages, 0, lazy->n_pages, FALSE, error);
    g_mutex_unlock(&lazy->finish_lock);
    free(buf);
    return ok;
}

/*
 * Every page with data in, then the fault thread stops, and the range is unregistered, which
 * wakes anyone who touched a page meanwhile: what is still missing is a zero page of the memfd
 * from then on, and no fault waits on a thread any more.
 */
static void end_lazy(MvmLazyMemory *lazy)
{
    struct uffdio_range range = {.start = (guint64)(guintptr)lazy->base, .len = lazy->size};

    stop_thread(lazy);
    ioctl(lazy->uffd, UFFDIO_UNREGISTER, &range);
    close_sources(lazy);
    madvise(lazy->base, lazy->size, MADV_HUGEPAGE);
    __atomic_store_n(&lazy->finished, TRUE, __ATOMIC_RELAXED);
}

gboolean mvm_memory_lazy_finish(MvmMemory *mem, GError **error)
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);

    if (lazy == NULL || __atomic_load_n(&lazy->finished, __ATOMIC_RELAXED))
        return TRUE;
    guint8 *buf = bulk_buffer(error);
    if (buf == NULL)
        return FALSE;
    g_mutex_lock(&lazy->finish_lock);
    gboolean ok = lazy->finished || fill_all(lazy, buf, error);
    if (ok && !lazy->finished)
        end_lazy(lazy);
    g_mutex_unlock(&lazy->finish_lock);
    free(buf);
    return ok;
}

/*
 * The VM is going: whoever waits on a page, or would, gets a zero page instead of waiting on a
 * file that may never answer. No lock: a finish in progress holds it, and may be what waits.
 */
void mvm_memory_lazy_abort(MvmMemory *mem)
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);
    struct uffdio_range range;

    if (lazy == NULL || __atomic_exchange_n(&lazy->aborted, TRUE, __ATOMIC_ACQ_REL))
        return;
    range = (struct uffdio_range){.start = (guint64)(guintptr)lazy->base, .len = lazy->size};
    int uffd = __atomic_load_n(&lazy->uffd, __ATOMIC_ACQUIRE);
    if (uffd >= 0 && !__atomic_load_n(&lazy->finished, __ATOMIC_ACQUIRE))
        ioctl(uffd, UFFDIO_UNREGISTER, &range);
}

gboolean mvm_memory_lazy_is_source(MvmMemory *mem, int fd)
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);
    struct stat st;

    return lazy != NULL && fstat(fd, &st) == 0 && st.st_dev == lazy->source_dev &&
           st.st_ino == lazy->source_ino;
}

gboolean mvm_memory_lazy_get_progress(MvmMemory *mem, guint64 *pages_in, guint64 *pages_total)
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);

    if (lazy == NULL || __atomic_load_n(&lazy->finished, __ATOMIC_RELAXED))
        return FALSE;
    *pages_in = __atomic_load_n(&lazy->pages_in, __ATOMIC_RELAXED);
    *pages_total = lazy->n_pages;
    return TRUE;
}

guint8 *mvm_memory_lazy_dup_demand(MvmMemory *mem, guint8 source_id[MVM_SNAPSHOT_ID_SIZE])
{
    MvmLazyMemory *lazy = mvm_memory_get_lazy(mem);

    if (lazy == NULL)
        return NULL;
    gsize n_bytes = (gsize)((lazy->n_pages + 7) / 8);
    guint8 *copy = g_malloc(n_bytes);
    for (gsize i = 0; i < n_bytes; i++)
        copy[i] = __atomic_load_n(&lazy->demand[i], __ATOMIC_RELAXED);
    memcpy(source_id, lazy->source_id, MVM_SNAPSHOT_ID_SIZE);
    return copy;
}
