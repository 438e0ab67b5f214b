/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The virtio devices with sockets on the host side, against real KVM: vsock
 * both ways (unix sockets, Firecracker-style) and across a snapshot, and net
 * through taps in a network namespace the test makes (skipped where it cannot).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "microvm.h"
#include "snapshot-test-util.h"
#include "virtio-test-util.h"
#include "virtio.h"
#include "vm-private.h"

/* ---- vsock ---- */

static int unix_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    g_assert_cmpint(listen(fd, 4), ==, 0);
    return fd;
}

static int unix_connect(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

/* Reads until @len bytes, EOF or 60 s; returns what came, NUL-terminated. */
static char *read_some(int fd, gsize len)
{
    char *buf = g_malloc0(len + 1);
    gsize got = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    while (got < len && poll(&pfd, 1, 60000) == 1) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            break;
        got += (gsize)r;
    }
    return buf;
}

static char *read_line(int fd)
{
    GString *s = g_string_new(NULL);
    char c;

    while (s->len < 64) {
        g_autofree char *one = read_some(fd, 1);
        c = one[0];
        if (c == '\0' || c == '\n')
            break;
        g_string_append_c(s, c);
    }
    return g_string_free(s, FALSE);
}

static gboolean wait_eof(int fd)
{
    g_autofree char *rest = read_some(fd, 4096);
    return rest[0] == '\0';
}

/* The guest's connection to host port 1234 arrives on <uds>_1234. */
static void vsock_serve_guest(int listen_fd)
{
    struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};

    g_assert_cmpint(poll(&pfd, 1, 60000), ==, 1);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autofree char *ping = read_some(fd, strlen("ping from guest"));
    g_assert_cmpstr(ping, ==, "ping from guest");
    g_assert_cmpint(write(fd, "pong from host", 14), ==, 14);
    /* The guest shuts down: the device closes our end. */
    g_assert_true(wait_eof(fd));
    close(fd);
}

/* Over @fd, connected to the device's socket: the guest's port 5000 echoes a line. */
static void vsock_talk(Guest *g, int fd)
{
    g_assert_cmpint(write(fd, "CONNECT 5000\n", 13), ==, 13);
    g_autofree char *ok = read_line(fd);
    g_assert_true(g_str_has_prefix(ok, "OK "));
    g_assert_cmpint(write(fd, "hello from host", 15), ==, 15);
    /* A half close: the guest learns we send no more (SHUTDOWN), its answer still comes back. */
    g_assert_cmpint(shutdown(fd, SHUT_WR), ==, 0);
    g_autofree char *echo = read_some(fd, strlen("echo: hello from host"));
    if (strcmp(echo, "echo: hello from host") != 0)
        g_test_message("guest so far:\n%s", guest_output(g));
    g_assert_cmpstr(echo, ==, "echo: hello from host");
    /* The guest answers our SHUTDOWN with an RST: the device closes its end. */
    g_assert_true(wait_eof(fd));
    close(fd);
}

/* A host program connects to <uds> and asks for the guest's port 5000. */
static void vsock_connect_guest(Guest *g, const char *uds)
{
    /* A bad handshake is refused without reaching the guest. */
    int bad = unix_connect(uds);
    g_assert_cmpint(write(bad, "HELLO 5000\n", 11), ==, 11);
    g_assert_true(wait_eof(bad));
    close(bad);

    vsock_talk(g, unix_connect(uds));
}

/* A vsock guest (cid 42) on <dir>/v.sock: it calls host port 1234, then listens on 5000. */
typedef struct {
    char *dir;
    char *uds;
    char *guest_port;
    int listen_fd; /* host port 1234 */
    MvmVmConfig *config;
    Guest *g;
} VsockGuest;

static void vsock_guest_start(VsockGuest *v)
{
    g_autoptr(GError) error = NULL;

    v->dir = g_dir_make_tmp("mvm-vsock-XXXXXX", &error);
    g_assert_no_error(error);
    v->uds = g_build_filename(v->dir, "v.sock", NULL);
    v->guest_port = g_strdup_printf("%s_1234", v->uds);
    v->listen_fd = unix_listen(v->guest_port);
    v->config = guest_config("mode=vsock hostport=1234 port=5000");
    v->config->vsock_cid = 42;
    v->config->vsock_uds_path = g_strdup(v->uds);
    v->g = guest_start(v->config);
}

/* Waits for the guest's end; returns its output. */
static char *vsock_guest_finish(VsockGuest *v)
{
    char *out = guest_finish(v->g);

    close(v->listen_fd);
    g_clear_pointer(&v->g, guest_free);
    /* The VM removed its socket. */
    g_assert_false(g_file_test(v->uds, G_FILE_TEST_EXISTS));
    g_unlink(v->guest_port);
    g_rmdir(v->dir);
    g_free(v->dir);
    g_free(v->uds);
    g_free(v->guest_port);
    mvm_vm_config_free(v->config);
    return out;
}

static void test_vsock(void)
{
    g_autoptr(GError) error = NULL;
    VsockGuest v;

    if (!have_kvm())
        return;
    vsock_guest_start(&v);
    /* A second VM cannot take over the socket of a running one. */
    v.config->vsock_cid = 43;
    g_assert_null(mvm_vm_new(v.config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "in use"));
    g_clear_error(&error);
    vsock_serve_guest(v.listen_fd);
    g_assert_true(guest_wait_for(v.g, "VSOCK listening 5000", GUEST_TIMEOUT_US));
    vsock_connect_guest(v.g, v.uds);
    g_autofree char *out = vsock_guest_finish(&v);
    g_assert_nonnull(strstr(out, "VSOCK cid 42"));
    g_assert_nonnull(strstr(out, "PASS vsock-connect"));
    g_assert_nonnull(strstr(out, "PASS vsock-listen"));
}

/* The lowest descriptor number this process has free: the next one it would get. */
static int lowest_free_fd(void)
{
    int fd = 0;

    while (fcntl(fd, F_GETFD) >= 0)
        fd++;
    return fd;
}

/*
 * A host program connects while the VMM has no descriptor to spare (its soft limit at the
 * next free one): the I/O thread cannot accept the connection, rests instead of spinning on
 * the socket, and takes it once there is room again.
 */
static void test_vsock_out_of_descriptors(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct rlimit saved, none;
    VsockGuest v;
    int fd;

    if (!have_kvm())
        return;
    vsock_guest_start(&v);
    vsock_serve_guest(v.listen_fd);
    g_assert_true(guest_wait_for(v.g, "VSOCK listening 5000", GUEST_TIMEOUT_US));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_strlcpy(addr.sun_path, v.uds, sizeof(addr.sun_path));
    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
    none = saved;
    none.rlim_cur = (rlim_t)lowest_free_fd();
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &none), ==, 0);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    /* No assertion on time: only long enough that the I/O thread tries, and fails, to accept. */
    g_usleep(300 * 1000);
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
    vsock_talk(v.g, fd);
    g_autofree char *out = vsock_guest_finish(&v);
    g_assert_nonnull(strstr(out, "PASS vsock-listen"));
}

/*
 * Connections do not survive a snapshot: a restored vsock device says so (TRANSPORT_RESET), and
 * the guest reads its CID again. A plain restore keeps the snapshot's CID, a clone gets the one
 * its back end names or a new one.
 */
static char *restore_vsock(const char *snap, const char *uds, MvmRestoreFlags flags, guint32 cid)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) backends = mvm_vm_config_new();
    int dirfd = open(snap, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    backends->vsock_uds_path = g_strdup(uds);
    backends->vsock_cid = cid;
    g_assert_cmpint(dirfd, >=, 0);
    MvmVm *vm = mvm_vm_restore_with_backends(dirfd, backends, flags, &error);
    close(dirfd);
    g_assert_no_error(error);
    g_autoptr(Guest) restored = guest_wrap(vm);
    g_assert_true(mvm_vm_resume(vm, &error));
    mvm_vm_console_write(vm, (const guint8 *)"x", 1);
    g_autofree char *out = guest_finish(restored);
    g_assert_nonnull(strstr(out, "PASS vsock-transport-reset"));
    return g_strdup_printf("%s\nconfig cid %u", out, mvm_vm_get_config(vm)->vsock_cid);
}

static void test_vsock_snapshot_restore(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *uds = g_build_filename(dir, "v.sock", NULL);
    g_autofree char *snap = g_build_filename(dir, "snapshot", NULL);
    g_assert_cmpint(g_mkdir(snap, 0700), ==, 0);
    g_autoptr(MvmVmConfig) config = guest_config("mode=vsock pause=1");
    config->vsock_cid = 7;
    config->vsock_uds_path = g_strdup(uds);
    g_autoptr(Guest) g = guest_start(config);
    g_assert_true(guest_wait_for(g, "VSOCK paused", GUEST_TIMEOUT_US));
    g_assert_true(mvm_vm_snapshot(g->vm, snap, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_clear_pointer(&g, guest_free);

    g_autofree char *plain = restore_vsock(snap, uds, MVM_RESTORE_NONE, 0);
    g_assert_nonnull(strstr(plain, "VSOCK cid after reset 7\n"));
    g_autofree char *named = restore_vsock(snap, uds, MVM_RESTORE_CLONE, 4242);
    g_assert_nonnull(strstr(named, "VSOCK cid after reset 4242\n"));
    g_autofree char *fresh = restore_vsock(snap, uds, MVM_RESTORE_CLONE, 0);
    guint64 cid = g_ascii_strtoull(strstr(fresh, "config cid ") + 11, NULL, 10);
    g_autofree char *want = g_strdup_printf("VSOCK cid after reset %" G_GUINT64_FORMAT "\n", cid);
    g_assert_cmpuint(cid, !=, 7);
    g_assert_cmpuint(cid, >=, MVM_VSOCK_CID_MIN);
    g_assert_nonnull(strstr(fresh, want));
    rm_rf(dir);
}

static void collect_message(MvmVm *vm, GLogLevelFlags level, const char *message,
                            gpointer user_data)
{
    g_ptr_array_add(user_data, g_strdup(message));
}

/* Not ready to read: neither data nor EOF nor an error (poll without waiting). */
static gboolean still_open(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, 0) == 0;
}

/*
 * A VM's vsock device holds at most MVM_VSOCK_CONNECTIONS_MAX connections: host programs that
 * connect past it are closed at once (said once), the ones held stay. The device accepts in order,
 * so once the first refused one is closed, every earlier one has been taken.
 */
static void test_vsock_host_bound(void)
{
    g_autoptr(GPtrArray) messages = g_ptr_array_new_with_free_func(g_free);
    int held[MVM_VSOCK_CONNECTIONS_MAX];
    guint refused = 0;

    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *uds = g_build_filename(dir, "v.sock", NULL);
    g_autoptr(MvmVmConfig) config = guest_config("mode=vsock pause=1");
    config->vsock_cid = 9;
    config->vsock_uds_path = g_strdup(uds);
    g_autoptr(Guest) g = guest_start(config);
    mvm_vm_set_log_callback(g->vm, collect_message, messages);
    g_assert_true(guest_wait_for(g, "VSOCK paused", GUEST_TIMEOUT_US));

    for (guint i = 0; i < G_N_ELEMENTS(held); i++)
        held[i] = unix_connect(uds); /* they never say CONNECT: each holds its place */
    for (guint i = 0; i < 3; i++) {
        int fd = unix_connect(uds);
        g_autofree char *got = read_some(fd, 1);

        g_assert_cmpstr(got, ==, ""); /* EOF: closed by the device */
        refused++;
        close(fd);
    }
    for (guint i = 0; i < G_N_ELEMENTS(held); i++) {
        g_assert_true(still_open(held[i]));
        close(held[i]);
    }
    g_clear_pointer(&g, guest_free); /* stops the guest, still paused */
    g_assert_cmpuint(refused, ==, 3);
    g_assert_cmpuint(messages->len, ==, 1);
    g_assert_nonnull(strstr(messages->pdata[0], "refusing host connections"));
    rm_rf(dir);
}

/*
 * The socket's directory is opened once, refusing a symbolic link on the way: a path whose
 * parent is a link (as a swap of a directory for one would make it) is refused before
 * anything is removed, and a stale socket the link leads to stays where it is. A stale socket
 * in the real directory goes, and the VM's own socket is removed at the end.
 */
static void test_vsock_symlinked_dir(void)
{
    g_autoptr(GError) error = NULL;

    if (!have_kvm())
        return;
    g_autofree char *dir = make_tmpdir();
    g_autofree char *real = g_build_filename(dir, "real", NULL);
    g_autofree char *link = g_build_filename(dir, "link", NULL);
    g_autofree char *stale = g_build_filename(real, "v.sock", NULL);
    g_autofree char *through_link = g_build_filename(link, "v.sock", NULL);
    g_assert_cmpint(g_mkdir(real, 0700), ==, 0);
    g_assert_cmpint(symlink(real, link), ==, 0);
    close(unix_listen(stale)); /* a socket file nobody listens on */

    g_autoptr(MvmVmConfig) config = guest_config("mode=vsock pause=1");
    config->vsock_cid = 9;
    config->vsock_uds_path = g_strdup(through_link);
    g_assert_null(mvm_vm_new(config, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "symbolic link"));
    g_clear_error(&error);
    g_assert_true(g_file_test(stale, G_FILE_TEST_EXISTS));

    g_free(config->vsock_uds_path);
    config->vsock_uds_path = g_strdup(stale);
    MvmVm *vm = mvm_vm_new(config, &error);
    g_assert_no_error(error);
    g_assert_true(g_file_test(stale, G_FILE_TEST_EXISTS)); /* bound again, by the VM */
    mvm_vm_free(vm);
    g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
    rm_rf(dir);
}

/* ---- net: a tap in a network namespace of the test's own ---- */

#define TEST_TAP  "mvmtest0"
#define ETHERTYPE 0x88b5

static const guint8 test_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/* Takes the guest's hello, checks it, answers to the MAC it came from (returned in @mac). */
static void net_exchange(int pkt, int ifindex, guint8 mac[6])
{
    guint8 frame[1600];
    struct pollfd pfd = {.fd = pkt, .events = POLLIN};

    g_assert_cmpint(poll(&pfd, 1, 60000), ==, 1);
    ssize_t n = recv(pkt, frame, sizeof(frame), 0);
    g_assert_cmpint(n, >=, 14 + 20);
    g_assert_cmpmem(frame + 14, 20, "hello from guest net", 20);
    memcpy(mac, frame + 6, 6);

    guint8 reply[60] = {0};
    memcpy(reply, mac, 6);
    memcpy(reply + 6, "\x02\x00\x00\x00\x00\x01", 6);
    reply[12] = ETHERTYPE >> 8;
    reply[13] = ETHERTYPE & 0xff;
    memcpy(reply + 14, "hello from host net", 19);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, mac, 6);
    g_assert_cmpint(sendto(pkt, reply, sizeof(reply), 0, (struct sockaddr *)&to, sizeof(to)), ==,
                    sizeof(reply));
}

static void send_burst(int pkt, int ifindex, const guint8 mac[6], guint n)
{
    guint8 frame[60] = {0};
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};

    memcpy(frame, mac, 6);
    memcpy(frame + 6, "\x02\x00\x00\x00\x00\x01", 6);
    frame[12] = ETHERTYPE >> 8;
    frame[13] = ETHERTYPE & 0xff;
    memcpy(frame + 14, "burst from host", 15);
    memcpy(to.sll_addr, mac, 6);
    for (guint i = 0; i < n; i++)
        g_assert_cmpint(sendto(pkt, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)),
                        ==, sizeof(frame));
}

static guint count_frames(int pkt, guint expected)
{
    guint8 frame[1600];
    guint n = 0;
    struct pollfd pfd = {.fd = pkt, .events = POLLIN};

    while (n < expected && poll(&pfd, 1, 5000) == 1 && recv(pkt, frame, sizeof(frame), 0) > 0)
        n++;
    return n;
}

static MvmVmConfig *net_config(const char *cmdline, const char *tap, int fd, const guint8 *mac)
{
    MvmVmConfig *config = guest_config(cmdline);
    MvmNetConfig *nic = g_new0(MvmNetConfig, 1);

    nic->tap_name = g_strdup(tap);
    nic->tap_fd = fd;
    if (mac != NULL)
        memcpy(nic->mac, mac, 6);
    config->nics = g_ptr_array_new();
    g_ptr_array_add(config->nics, nic);
    return config;
}

/* A tap by name with a MAC from the config: frames both ways, a burst, then the tap vanishes. */
static void net_by_name(void)
{
    int ifindex;
    guint8 mac[6];
    guint burst = 200;

    test_make_tap(TEST_TAP, FALSE, &ifindex);
    int pkt = test_packet_socket(ifindex, ETHERTYPE);
    g_autofree char *cmdline = g_strdup_printf("mode=net burst=%u rxburst=%u gone=1", burst, burst);
    g_autoptr(MvmVmConfig) config = net_config(cmdline, TEST_TAP, -1, test_mac);
    g_autoptr(Guest) g = guest_start(config);
    net_exchange(pkt, ifindex, mac);
    g_assert_cmpmem(mac, 6, test_mac, 6);
    g_assert_true(guest_wait_for(g, "PASS net-rx", GUEST_TIMEOUT_US));
    guint got = count_frames(pkt, burst);
    /* Host to guest: a burst the tap queues while the guest takes one frame per buffer. */
    g_assert_true(guest_wait_for(g, "NET rx-ready", GUEST_TIMEOUT_US));
    send_burst(pkt, ifindex, mac, burst);
    g_assert_true(guest_wait_for(g, "NET rx-burst", GUEST_TIMEOUT_US));
    gint64 r0 = guest_marker_time(g, 0x112), r1 = guest_marker_time(g, 0x113);
    g_assert_cmpint(r1, >, r0);
    g_printerr("# BENCH virtio-net rx: %u frames, %.0f frames/s (first to last, as the guest "
               "took them)\n",
               burst, (burst - 1) / ((r1 - r0) / 1e6));

    g_assert_true(guest_wait_for(g, "NET waiting", GUEST_TIMEOUT_US));
    gint64 t0 = guest_marker_time(g, 0x110), t1 = guest_marker_time(g, 0x111);
    g_assert_cmpint(t1, >, t0);
    /* stderr: the parent shows it; the child's stdout is its own TAP stream. */
    g_printerr("# BENCH virtio-net tx: %u of %u frames reached the tap; %.0f frames/s (guest "
               "sends one at a time and waits for each)\n",
               got, burst, burst / ((t1 - t0) / 1e6));
    g_assert_cmpuint(got, ==, burst);

    /* The tap goes away under the running VM: its device must shrug that off. */
    g_assert_cmpint(system("ip link delete " TEST_TAP), ==, 0);
    mvm_vm_console_write(g->vm, (const guint8 *)"x", 1);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "NET mac 52:54:00:12:34:56"));
    g_assert_nonnull(strstr(out, "PASS net-tap-gone"));
    g_assert_nonnull(strstr(out, "PASS net-link-down"));
    close(pkt);
}

/* A tap handed over as an fd, and no MAC in the config: a generated, local unicast one. */
static void net_by_fd(void)
{
    int ifindex;
    guint8 mac[6];
    int fd = test_make_tap("mvmtest1", TRUE, &ifindex);
    int pkt = test_packet_socket(ifindex, ETHERTYPE);
    g_autoptr(MvmVmConfig) config = net_config("mode=net", NULL, fd, NULL);
    g_autoptr(Guest) g = guest_start(config);

    close(fd); /* the VM has its own copy */
    net_exchange(pkt, ifindex, mac);
    g_autofree char *out = guest_finish(g);
    g_assert_cmpuint(mac[0] & 3, ==, 2); /* locally administered, unicast */
    g_autofree char *line = g_strdup_printf("NET mac %02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                                            mac[2], mac[3], mac[4], mac[5]);
    g_assert_nonnull(strstr(out, line));
    close(pkt);
}

/* The MAC @vm's NIC shows its guest (its config space), and the one its config says. */
static void assert_mac(MvmVm *vm, const guint8 *want)
{
    const MvmNetConfig *nic = g_ptr_array_index(mvm_vm_get_config(vm)->nics, 0);
    guint8 seen[6];

    mvm_virtio_read_config(g_ptr_array_index(vm->virtio, 0), 0, seen, sizeof(seen));
    g_assert_cmpmem(seen, 6, nic->mac, 6);
    if (want != NULL)
        g_assert_cmpmem(seen, 6, want, 6);
}

static MvmVm *restore_nic(const char *dir, MvmRestoreFlags flags, const guint8 *mac)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MvmVmConfig) backends = net_config("", TEST_TAP, -1, mac);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    g_assert_cmpint(dirfd, >=, 0);
    MvmVm *vm = mvm_vm_restore_with_backends(dirfd, backends, flags, &error);
    close(dirfd);
    g_assert_no_error(error);
    return vm;
}

/*
 * A restored NIC keeps the MAC its guest read, even from a snapshot whose config recorded none
 * (older builds chose it in the device); a clone's gets the one its back end names, or a new
 * local unicast one.
 */
static void net_clone(void)
{
    static const guint8 other_mac[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
    static const guint8 zero[6] = {0};
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = make_tmpdir();
    int ifindex;

    test_make_tap(TEST_TAP, FALSE, &ifindex);
    {
        g_autoptr(MvmVmConfig) config = net_config("mode=idle", TEST_TAP, -1, test_mac);
        g_autoptr(Guest) g = guest_start(config);
        g_assert_true(guest_wait_for(g, "IDLE", GUEST_TIMEOUT_US));
        g_assert_true(mvm_vm_snapshot(g->vm, dir, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
        g_assert_no_error(error);
    }
    g_autoptr(MvmVm) plain = restore_nic(dir, MVM_RESTORE_NONE, NULL);
    assert_mac(plain, test_mac);
    g_clear_pointer(&plain, mvm_vm_free);

    g_autoptr(MvmVm) clone = restore_nic(dir, MVM_RESTORE_CLONE, NULL);
    assert_mac(clone, NULL);
    const MvmNetConfig *nic = g_ptr_array_index(mvm_vm_get_config(clone)->nics, 0);
    g_assert_true(memcmp(nic->mac, test_mac, 6) != 0 && memcmp(nic->mac, zero, 6) != 0);
    g_assert_cmphex(nic->mac[0] & 3, ==, 2); /* locally administered, unicast */
    g_clear_pointer(&clone, mvm_vm_free);

    g_autoptr(MvmVm) named = restore_nic(dir, MVM_RESTORE_CLONE, other_mac);
    assert_mac(named, other_mac);
    g_clear_pointer(&named, mvm_vm_free);

    /* The config of an older snapshot: no MAC, the guest's only in the device's state. */
    g_autoptr(GVariant) payload = snapshot_read_payload(dir);
    g_autoptr(GVariant) config = g_variant_lookup_value(payload, "config", NULL);
    g_autoptr(GVariant) nics = g_variant_lookup_value(config, "network", NULL);
    g_autoptr(GVariant) nic0 = g_variant_get_child_value(nics, 0);
    GVariant *zero_mac = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, zero, 6, 1);
    GVariant *new_nics = variant_replace_child(nics, 0, vardict_with(nic0, "mac", zero_mac));
    snapshot_write_payload(
        dir, vardict_with(payload, "config", vardict_with(config, "network", new_nics)), 2, 2);
    g_autoptr(MvmVm) old = restore_nic(dir, MVM_RESTORE_NONE, NULL);
    assert_mac(old, test_mac);
    g_clear_pointer(&old, mvm_vm_free);
    rm_rf(dir);
    g_assert_cmpint(system("ip link delete " TEST_TAP), ==, 0);
}

/* Pages of @base with @diff's changed pages over them that differ from @full's. */
static guint chain_mismatches(const char *base, const char *diff, const char *full)
{
    g_autoptr(GVariant) payload = snapshot_read_payload(diff);
    g_autoptr(GVariant) pages = g_variant_lookup_value(payload, "changed-pages", NULL);
    g_autofree char *base_path = g_build_filename(base, "memory", NULL);
    g_autofree char *diff_path = g_build_filename(diff, "memory", NULL);
    g_autofree char *full_path = g_build_filename(full, "memory", NULL);
    int base_fd = open(base_path, O_RDONLY | O_CLOEXEC);
    int diff_fd = open(diff_path, O_RDONLY | O_CLOEXEC);
    int full_fd = open(full_path, O_RDONLY | O_CLOEXEC);
    gsize n_bytes;
    const guint8 *bits = g_variant_get_fixed_array(pages, &n_bytes, 1);
    guint8 chain[4096], want[4096];
    guint bad = 0;

    for (guint64 page = 0; page < n_bytes * 8; page++) {
        gboolean changed = (bits[page / 8] >> (page % 8)) & 1;
        g_assert_cmpint(pread(changed ? diff_fd : base_fd, chain, 4096, page * 4096), ==, 4096);
        g_assert_cmpint(pread(full_fd, want, 4096, page * 4096), ==, 4096);
        if (memcmp(chain, want, 4096) != 0) {
            g_printerr("# page 0x%" G_GINT64_MODIFIER "x differs (in the diff: %d)\n", page * 4096,
                       changed);
            bad++;
        }
    }
    close(base_fd);
    close(diff_fd);
    close(full_fd);
    return bad;
}

/*
 * A frame the device receives after a snapshot, into an rx buffer it took before it (and held:
 * the tap had nothing then), is in the next diff: base + diff is the full snapshot of the same
 * moment, page for page.
 */
static void net_diff_held_buffer(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *base = make_tmpdir(), *diff = make_tmpdir(), *full = make_tmpdir();
    int ifindex;
    guint8 mac[6];

    test_make_tap(TEST_TAP, FALSE, &ifindex);
    int pkt = test_packet_socket(ifindex, ETHERTYPE);
    g_autoptr(MvmVmConfig) config = net_config("mode=net rxburst=1 gone=1", TEST_TAP, -1, test_mac);
    g_autoptr(Guest) g = guest_start(config);
    net_exchange(pkt, ifindex, mac);
    g_assert_true(guest_wait_for(g, "NET rx-ready", GUEST_TIMEOUT_US));
    g_usleep(200 * 1000); /* the device has taken an rx buffer and found the tap empty */
    g_assert_true(mvm_vm_snapshot(g->vm, base, MVM_SNAPSHOT_TRACK_CHANGES, &error));
    g_assert_no_error(error);
    send_burst(pkt, ifindex, mac, 1);
    g_assert_true(guest_wait_for(g, "NET waiting", GUEST_TIMEOUT_US));
    g_assert_true(
        mvm_vm_snapshot(g->vm, diff, MVM_SNAPSHOT_DIFF | MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_true(mvm_vm_snapshot(g->vm, full, MVM_SNAPSHOT_LEAVE_PAUSED, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(chain_mismatches(base, diff, full), ==, 0);
    g_clear_pointer(&g, guest_free);
    close(pkt);
    rm_rf(base);
    rm_rf(diff);
    rm_rf(full);
    g_assert_cmpint(system("ip link delete " TEST_TAP), ==, 0);
}

/*
 * The rate of @n frames through a token bucket of @size that took @seconds from the first to
 * the last: the first @size + 1 go at once (the bucket starts full and may go into debt).
 */
static double limited_rate(guint n, guint64 size, double seconds)
{
    g_assert_cmpfloat(seconds, >, 0);
    return (n - 1 - size) / seconds;
}

/*
 * Rate limits, both ways. The guest sends a burst unlimited, then the host limits what it sends
 * live to 1,000 frames a second (100 every 100 ms; half the unlimited rate where that is slower,
 * as under nested emulation) and it sends again; then it takes frames limited, from its
 * creation, to 200 a second (20 every 100 ms). Each measures within 5 %, and no frame is lost.
 */
static void net_rate_limit(void)
{
    int ifindex;
    guint8 mac[6];
    guint burst = 300, burst2 = 1000, rxburst = 300;
    const guint64 rx_size = 20;

    test_make_tap(TEST_TAP, FALSE, &ifindex);
    int pkt = test_packet_socket(ifindex, ETHERTYPE);
    int rcvbuf = 4 << 20; /* the first burst is read after it is sent */
    g_assert_cmpint(setsockopt(pkt, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)), ==, 0);
    g_autofree char *cmdline =
        g_strdup_printf("mode=net burst=%u burst2=%u rxburst=%u", burst, burst2, rxburst);
    g_autoptr(MvmVmConfig) config = net_config(cmdline, TEST_TAP, -1, test_mac);
    MvmNetConfig *nic = g_ptr_array_index(config->nics, 0);
    nic->rx_rate_limit.ops = (MvmTokenBucketConfig){.size = rx_size, .refill_time_ms = 100};
    g_autoptr(Guest) g = guest_start(config);
    net_exchange(pkt, ifindex, mac);

    g_assert_true(guest_wait_for(g, "NET burst2-ready", GUEST_TIMEOUT_US));
    g_assert_cmpuint(count_frames(pkt, burst), ==, burst);
    double unlimited = burst / guest_marker_span_s(g, 0x110, 0x111);
    guint64 limit = unlimited >= 2000 ? 1000 : MAX((guint64)(unlimited / 2) / 10 * 10, 50);
    MvmRateLimit tx = {.ops = {.size = limit / 10, .refill_time_ms = 100}};
    g_autoptr(GError) error = NULL;
    g_assert_true(mvm_vm_set_nic_rate_limits(g->vm, 0, NULL, &tx, &error));
    g_assert_no_error(error);
    MvmRateLimit bad = {.ops = {.size = 1}};
    g_assert_false(mvm_vm_set_nic_rate_limits(g->vm, 0, &bad, NULL, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(mvm_vm_set_nic_rate_limits(g->vm, 1, NULL, &tx, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    mvm_vm_console_write(g->vm, (const guint8 *)"x", 1);

    /* Read as they come: the socket's buffer holds only a few hundred. */
    g_assert_cmpuint(count_frames(pkt, burst2), ==, burst2);
    g_assert_true(guest_wait_for(g, "NET rx-ready", GUEST_TIMEOUT_US));
    double tx_rate = limited_rate(burst2, tx.ops.size, guest_marker_span_s(g, 0x114, 0x115));
    send_burst(pkt, ifindex, mac, rxburst);
    g_autofree char *out = guest_finish(g);
    g_assert_nonnull(strstr(out, "NET rx-burst"));
    double rx_rate = limited_rate(rxburst, rx_size, guest_marker_span_s(g, 0x112, 0x113));
    g_printerr("# tx: unlimited %.0f frames/s; limited to %" G_GUINT64_FORMAT
               "/s: %.1f frames/s (%u frames)\n",
               unlimited, limit, tx_rate, burst2);
    g_printerr("# rx: limited to 200/s: %.1f frames/s (%u frames)\n", rx_rate, rxburst);
    g_assert_cmpfloat(tx_rate, >=, limit * 0.95);
    g_assert_cmpfloat(tx_rate, <=, limit * 1.05);
    g_assert_cmpfloat(rx_rate, >=, 200 * 0.95);
    g_assert_cmpfloat(rx_rate, <=, 200 * 1.05);
    MvmNicStats stats;
    g_assert_true(mvm_vm_get_nic_stats(g->vm, 0, &stats));
    g_printerr("# nic: rx %" G_GUINT64_FORMAT " frames %" G_GUINT64_FORMAT
               " bytes, tx %" G_GUINT64_FORMAT " frames %" G_GUINT64_FORMAT
               " bytes, %" G_GUINT64_FORMAT " dropped; waited rx %" G_GUINT64_FORMAT
               ", tx %" G_GUINT64_FORMAT " times\n",
               stats.rx_frames, stats.rx_bytes, stats.tx_frames, stats.tx_bytes, stats.tx_dropped,
               stats.rx_throttled, stats.tx_throttled);
    g_assert_cmpuint(stats.tx_frames, ==, 1 + burst + burst2);
    g_assert_cmpuint(stats.tx_bytes, ==, (1 + burst + burst2) * 64); /* FRAME_BYTES each */
    g_assert_cmpuint(stats.tx_dropped, ==, 0);
    g_assert_cmpuint(stats.rx_frames, >=, 1 + rxburst);
    g_assert_cmpuint(stats.rx_throttled, >, 0);
    g_assert_cmpuint(stats.tx_throttled, >, 0);
    const MvmNetConfig *now = g_ptr_array_index(mvm_vm_get_config(g->vm)->nics, 0);
    g_assert_cmpuint(now->tx_rate_limit.ops.size, ==, tx.ops.size);
    g_assert_cmpuint(now->rx_rate_limit.ops.size, ==, rx_size); /* NULL left it */
    close(pkt);
    g_assert_cmpint(system("ip link delete " TEST_TAP), ==, 0);
}

/* Runs in a child (g_test_trap_subprocess) that owns a fresh network namespace. */
static void net_in_namespace(void)
{
    net_by_name();
    net_by_fd();
    net_clone();
    net_diff_held_buffer();
    net_rate_limit();
}

static void test_net(void)
{
    if (have_kvm())
        run_in_net_namespace(net_in_namespace);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/virtio/vsock", test_vsock);
    g_test_add_func("/virtio/vsock-out-of-descriptors", test_vsock_out_of_descriptors);
    g_test_add_func("/virtio/vsock/host-bound", test_vsock_host_bound);
    g_test_add_func("/virtio/vsock-snapshot-restore", test_vsock_snapshot_restore);
    g_test_add_func("/virtio/vsock-symlinked-dir", test_vsock_symlinked_dir);
    g_test_add_func("/virtio/net", test_net);
    return g_test_run();
}
