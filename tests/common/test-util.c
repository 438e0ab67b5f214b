/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What every C test that runs a VM shares (test-util.h). */
#include "test-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

char *kvm_device_unusable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0)
        return g_strdup_printf("/dev/kvm is not usable here (%s)", g_strerror(errno));
    close(fd);
    return NULL;
}

gboolean have_kvm(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *why = NULL;

    if (mvm_kvm_api_version(&error) >= 0)
        return TRUE;
    why = g_strdup_printf("no usable KVM: %s", error->message);
    g_test_skip(why);
    return FALSE;
}

MvmVmConfig *testguest_config(const char *cmdline, guint vcpus, guint64 memory_mib)
{
    MvmVmConfig *config = mvm_vm_config_new();

    config->kernel_path = g_strdup(g_getenv("MVM_TESTGUEST"));
    g_assert_nonnull(config->kernel_path);
    config->cmdline = g_strdup(cmdline);
    config->n_vcpus = vcpus;
    config->memory_mib = memory_mib;
    config->debug_exit = TRUE;
    return config;
}

Capture *capture_new(void)
{
    Capture *c = g_new0(Capture, 1);

    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->output = g_string_new(NULL);
    return c;
}

/* Callers free their VM first: a freed VM no longer calls on_console(). */
void capture_free(Capture *c)
{
    g_string_free(c->output, TRUE);
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_free(c);
}

void on_console(MvmVm *vm, const guint8 *data, gsize len, gpointer user_data)
{
    Capture *c = user_data;

    g_mutex_lock(&c->lock);
    g_string_append_len(c->output, (const char *)data, (gssize)len);
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

gsize capture_len(Capture *c)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);
    return c->output->len;
}

char *capture_dup_from(Capture *c, gsize from)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);
    return g_strdup(c->output->str + MIN(from, c->output->len));
}

gboolean capture_wait_from(Capture *c, gsize from, const char *needle, gint64 timeout_us)
{
    gint64 deadline = g_get_monotonic_time() + timeout_us;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&c->lock);

    while (strstr(c->output->str + MIN(from, c->output->len), needle) == NULL)
        if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            return FALSE;
    return TRUE;
}

/* lstat, not stat: a link to a directory is removed as a link, and what it points to stays. */
void rm_rf(const char *path)
{
    GStatBuf st;

    if (g_lstat(path, &st) < 0) {
        if (errno != ENOENT)
            g_test_message("cannot stat %s: %s", path, g_strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        const char *name;

        while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
            g_autofree char *child = g_build_filename(path, name, NULL);
            rm_rf(child);
        }
    }
    if (g_remove(path) < 0 && errno != ENOENT)
        g_test_message("cannot remove %s: %s", path, g_strerror(errno));
}

gboolean testguest_parse_blkbench(const char *out, guint32 tsc_khz, TestguestBlkbench *f)
{
    guint64 rb, rt, wb, wt, n, nt, tt;
    const char *r = strstr(out, "BLKBENCH read bytes "), *w = strstr(out, "BLKBENCH write bytes ");
    const char *k = strstr(out, "BLKBENCH notifies ");
    double hz = tsc_khz * 1e3;

    if (r == NULL || w == NULL || k == NULL ||
        sscanf(r, "BLKBENCH read bytes %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT, &rb, &rt) !=
            2 ||
        sscanf(w, "BLKBENCH write bytes %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT, &wb, &wt) !=
            2 ||
        sscanf(k,
               "BLKBENCH notifies %" G_GUINT64_FORMAT " tsc %" G_GUINT64_FORMAT
               " trapped-writes tsc %" G_GUINT64_FORMAT,
               &n, &nt, &tt) != 3 ||
        n == 0)
        return FALSE;
    f->read_mbs = rb / 1e6 / (rt / hz);
    f->write_mbs = wb / 1e6 / (wt / hz);
    f->notify_us = nt / hz * 1e6 / n;
    f->trapped_us = tt / hz * 1e6 / n;
    return TRUE;
}

gboolean testguest_parse_cpuid(const char *output, guint32 leaf, guint32 subleaf, guint32 regs[4])
{
    /* The guest prints the leaf with 8 digits and the subleaf with as many as it needs. */
    g_autofree char *prefix = g_strdup_printf("CPUID 0x%08x 0x%x ", leaf, subleaf);

    for (const char *p = output; (p = strstr(p, prefix)) != NULL; p++)
        if ((p == output || p[-1] == '\n') && sscanf(p + strlen(prefix), "0x%x 0x%x 0x%x 0x%x",
                                                     &regs[0], &regs[1], &regs[2], &regs[3]) == 4)
            return TRUE;
    return FALSE;
}

/* ---- taps ---- */

/* A tap made in a throwaway network namespace: what the test needs, tried in a child. */
static gboolean probe_tap(void)
{
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int fd;

    if (unshare(CLONE_NEWNET) != 0 || (fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)) < 0)
        return FALSE;
    g_strlcpy(ifr.ifr_name, "mvmprobe0", sizeof(ifr.ifr_name));
    return ioctl(fd, TUNSETIFF, &ifr) == 0;
}

gboolean test_can_unshare_net(void)
{
    g_autofree char *ip = g_find_program_in_path("ip");
    if (ip == NULL)
        return FALSE;
    pid_t pid = fork();

    if (pid == 0)
        _exit(probe_tap() ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int test_make_tap(const char *name, gboolean keep_fd, int *ifindex)
{
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(fd, TUNSETIFF, &ifr), ==, 0);
    if (!keep_fd) {
        g_assert_cmpint(ioctl(fd, TUNSETPERSIST, 1), ==, 0);
        close(fd);
        fd = -1;
    }
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&ifr, 0, sizeof(ifr));
    g_strlcpy(ifr.ifr_name, name, sizeof(ifr.ifr_name));
    g_assert_cmpint(ioctl(sock, SIOCGIFFLAGS, &ifr), ==, 0);
    ifr.ifr_flags |= IFF_UP;
    g_assert_cmpint(ioctl(sock, SIOCSIFFLAGS, &ifr), ==, 0);
    g_assert_cmpint(ioctl(sock, SIOCGIFINDEX, &ifr), ==, 0);
    close(sock);
    *ifindex = ifr.ifr_ifindex;
    return fd;
}

int test_packet_socket(int ifindex, guint16 ethertype)
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ethertype));
    struct sockaddr_ll addr = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ethertype), .sll_ifindex = ifindex};

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}
