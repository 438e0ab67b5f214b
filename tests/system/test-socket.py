#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Socket activation without systemd as PID 1: systemd-socket-activate listens on a path and
starts microvmd on the first connection, passing the socket as microvmd.socket does
(FileDescriptorName=microvmd). There is no bus at all ($DBUS_SYSTEM_BUS_ADDRESS points nowhere),
so the clients speak peer-to-peer D-Bus: they create and start a real guest, a second client
works at the same time and sees the first one's changes, and the peer's uid is checked;
peers that do not authenticate are disconnected, and each uid's connections are bounded."""

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import Gio, GLib  # noqa: E402

OM = "org.freedesktop.DBus.ObjectManager"


def iterate_until(predicate, timeout=60):
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a signal")
        if not ctx.iteration(False):
            time.sleep(0.005)


class SocketTest(systest.TestCase):
    def setUp(self):
        super().setUp()
        systest.require_kvm()
        if not shutil.which("systemd-socket-activate"):
            systest.skip("systemd-socket-activate is not installed")
        os.chmod(self.tmp.path, 0o755)  # so that other users reach the socket, and are refused
        self.socket = self.tmp.join("io.socket")

    def activate(self, extra_args=(), env=None, log_path=None):
        argv = ["systemd-socket-activate", "-l", self.socket, "--fdname=microvmd",
                "-E", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + self.tmp.join("no-bus")]
        for key, value in (env or {}).items():
            argv += ["-E", f"{key}={value}"]
        # systemd-socket-activate execs microvmd once a client connects: same process.
        self.daemon = self.start_daemon(list(extra_args), wrapper_argv=argv, log_path=log_path)
        # The path appears at bind(), before listen(): wait for the listening flag
        # (__SO_ACCEPTCON in /proc/net/unix) without connecting, which would start microvmd.
        systest.wait_for(self.listening, 30, "the listening socket")
        os.chmod(self.socket, 0o666)

    def listening(self):
        with open("/proc/net/unix") as f:
            return any(line.split()[3] == "00010000" and line.split()[-1] == self.socket
                       for line in f.readlines()[1:] if len(line.split()) >= 8)

    def managed_paths(self, conn):
        reply, err = systest.call(conn, systest.PATH, OM, "GetManagedObjects", None,
                                  "(a{oa{sa{sv}}})")
        self.assertIsNone(err)
        return sorted(reply[0].keys())

    def test_two_clients_run_a_guest(self):
        self.activate()
        started = time.monotonic()
        first = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(first), [])
        print(f"# first connection → first reply (includes starting microvmd): "
              f"{(time.monotonic() - started) * 1000:.1f} ms")

        second = systest.peer_connect(self.socket)
        added, removed, states = [], [], []
        second.signal_subscribe(None, OM, "InterfacesAdded", systest.PATH, None,
                                Gio.DBusSignalFlags.NONE,
                                lambda *a: added.append(a[5].unpack()[0]))
        second.signal_subscribe(None, OM, "InterfacesRemoved", systest.PATH, None,
                                Gio.DBusSignalFlags.NONE,
                                lambda *a: removed.append(a[5].unpack()[0]))
        second.signal_subscribe(None, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                None, None, Gio.DBusSignalFlags.NONE,
                                lambda *a: states.append(a[5].unpack()[1].get("State")))
        # A reply on this connection: the daemon has set it up, so it gets the signals of what
        # the first client does next (they raced before: one run in six missed InterfacesAdded).
        self.assertEqual(self.managed_paths(second), [])

        path, err = systest.create_vm(first, "p2p-guest")
        self.assertIsNone(err)
        iterate_until(lambda: path in added)
        _, err = systest.call(first, path, systest.VM, "Start")
        self.assertIsNone(err)
        self.assertEqual(systest.vm_state(second, path), "running")
        iterate_until(lambda: "running" in states)
        self.assertEqual(self.managed_paths(second), [path])

        # The first client goes away: the second keeps the objects and can act on them.
        first.close_sync(None)
        _, err = systest.call(second, path, systest.VM, "Stop")
        self.assertIsNone(err)
        self.assertEqual(systest.vm_state(second, path), "stopped")
        _, err = systest.call(second, path, systest.VM, "Delete")
        self.assertIsNone(err)
        iterate_until(lambda: path in removed)
        self.assertEqual(self.managed_paths(second), [])

        # A third client after all that gets a consistent view.
        third = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(third), [])
        second.close_sync(None)
        third.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)

    def test_only_external_authentication(self):
        """The kernel's word (SO_PEERCRED) is the only one taken: other mechanisms are refused."""
        import socket
        self.activate()
        for mechanism in (b"ANONYMOUS 74657374", b"DBUS_COOKIE_SHA1 30"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(self.socket)
                sock.sendall(b"\0AUTH " + mechanism + b"\r\n")
                reply = sock.recv(4096).decode()
                self.assertTrue(reply.startswith("REJECTED"), reply)
                self.assertEqual(reply.split()[1:], ["EXTERNAL"], reply)
        # ...and the daemon is still there for a proper client.
        conn = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(conn), [])
        conn.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)

    def test_out_of_descriptors(self):
        """A client that connects while microvmd has no descriptor to spare waits in the
        backlog: the daemon neither spins on the socket nor warns each turn (G_DEBUG makes a
        warning fatal), its other client is still served, and once there is room the waiting
        client and a new one are served too."""
        import resource
        import socket
        self.activate(env={"G_DEBUG": "fatal-warnings"})
        first = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(first), [])
        pid = self.daemon.proc.pid  # systemd-socket-activate exec'ed microvmd
        open_fds = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        next_free = min(set(range(len(open_fds) + 1)) - open_fds)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (next_free, hard))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waiting:
            waiting.settimeout(30)
            waiting.connect(self.socket)
            # No assertion on time: only long enough for microvmd to try, and fail, to accept.
            time.sleep(0.3)
            self.assertEqual(self.managed_paths(first), [])
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
            # Accepted now: the server's side of the authentication speaks first.
            waiting.sendall(b"\0AUTH\r\n")
            self.assertTrue(waiting.recv(4096).startswith(b"REJECTED"))
        second = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(second), [])
        first.close_sync(None)
        second.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)

    def test_peer_uid_is_checked(self):
        systest.require_root_and_setpriv()
        self.activate()
        address = f"unix:path={self.socket}"
        # Root is served (and starts the daemon); nobody is refused at authentication.
        self.assertEqual(systest.run_client_as(0, 0, address, ["list"], p2p=True),
                         [{"op": "list", "vm": None, "error": None}])
        result = systest.run_client_as(systest.NOBODY, systest.NOBODY, address, ["list"],
                                       p2p=True)
        self.assertEqual(result[0]["op"], "connect", result)
        self.assertEqual(self.daemon.stop(), 0)

    def test_socket_group_and_descriptors(self):
        """A member of the socket group acts on its own VMs, never on root's (there is no
        polkit on the socket); root acts on everyone's."""
        systest.require_root_and_setpriv()
        self.activate([f"--socket-group={systest.NOBODY}"])
        address = f"unix:path={self.socket}"
        fd = systest.open_guest_for_client()
        self.addCleanup(os.close, fd)
        root = systest.peer_connect(self.socket)
        _, err = systest.create_vm(root, "rootvm")
        self.assertIsNone(err)

        def as_nobody(ops):
            result = systest.run_client_as(systest.NOBODY, systest.NOBODY, address, ops,
                                           p2p=True, kernel_fd=fd)
            return {(r["op"], r["vm"]): r["error"] for r in result}

        errors = as_nobody(["list", "create", "by-path", "create-fd", "by-fd", "start", "by-fd",
                            "console", "by-fd", "config", "by-fd", "stop", "by-fd", "start",
                            "rootvm", "config", "rootvm", "console", "rootvm", "delete",
                            "rootvm"])
        self.assertIsNone(errors[("list", None)])
        # A member of the socket group may act, but never makes root open a path...
        self.assertEqual(errors[("create", "by-path")], systest.ERR + "NotAuthorized")
        for op in ("create-fd", "start", "console", "config", "stop"):
            self.assertIsNone(errors[(op, "by-fd")], (op, errors))
        # ...nor touches or reads root's VM.
        for op in ("start", "config", "console", "delete"):
            self.assertEqual(errors[(op, "rootvm")], systest.ERR + "NotAuthorized", op)
        self.assertEqual(systest.vm_state(root, systest.PATH + "/vm/rootvm"), "created")
        by_fd = systest.PATH + "/vm/by_2dfd"
        owner, err = systest.call(root, by_fd, "org.freedesktop.DBus.Properties", "Get",
                                  GLib.Variant("(ss)", (systest.VM, "Owner")), "(v)")
        self.assertEqual((owner, err), ((systest.NOBODY,), None))
        _, err = systest.call(root, by_fd, systest.VM, "GetConfig", None, "(a{sv})")
        self.assertIsNone(err)
        self.assertEqual(as_nobody(["delete", "by-fd"]), {("delete", "by-fd"): None})
        root.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)

    def test_unauthenticated_peers_bounded(self):
        """A peer that never authenticates is disconnected after the daemon's timeout (5 s),
        and one uid holds at most 32 connections: one more is closed at once, while another
        uid still connects and calls, and the first one's authenticated connection goes on."""
        import socket
        systest.require_root_and_setpriv()
        self.activate([f"--socket-group={systest.NOBODY}"])
        conn = systest.peer_connect(self.socket)  # root's first place (and starts microvmd)
        self.assertEqual(self.managed_paths(conn), [])

        def silent_peer():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(sock.close)
            sock.settimeout(60)
            sock.connect(self.socket)
            sock.sendall(b"\0")  # the credentials byte, then nothing
            return sock

        def closed_by_daemon(sock):
            try:
                return sock.recv(4096) == b""
            except ConnectionResetError:
                return True

        silent = [silent_peer() for _ in range(31)]
        # Root's 33rd connection is refused at accept: its AUTH gets no "OK", only the close.
        extra = silent_peer()
        extra.sendall(b"AUTH EXTERNAL 30\r\n")
        self.assertTrue(closed_by_daemon(extra))

        # Another uid is not affected.
        result = systest.run_client_as(systest.NOBODY, systest.NOBODY,
                                       f"unix:path={self.socket}", ["list"], p2p=True)
        self.assertEqual(result, [{"op": "list", "vm": None, "error": None}])

        # The silent ones are disconnected by the daemon; root's own connection goes on.
        for sock in silent:
            self.assertTrue(closed_by_daemon(sock))
        self.assertEqual(self.managed_paths(conn), [])
        again = systest.peer_connect(self.socket)
        self.assertEqual(self.managed_paths(again), [])
        again.close_sync(None)
        conn.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)

    def test_failing_clients_log_limited(self):
        """Clients that connect and fail over and over get a few lines in the daemon's log,
        then one a second; the rest is counted in a summary, and all are accounted for."""
        import re
        import socket
        rounds = 60
        self.activate(log_path=self.tmp.join("daemon.log"))
        started = time.monotonic()
        for _ in range(rounds):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(self.socket)
                sock.sendall(b"\0AUTH ANONYMOUS 74657374\r\n")
                self.assertTrue(sock.recv(4096).startswith(b"REJECTED"))
            # ...and it hangs up: the handshake fails.
        conn = systest.peer_connect(self.socket)  # a proper client is still served
        self.assertEqual(self.managed_paths(conn), [])
        conn.close_sync(None)
        self.assertEqual(self.daemon.stop(), 0)
        elapsed = int(time.monotonic() - started) + 1

        log = self.daemon.log()
        lines = log.count("peer: a client failed to authenticate")
        suppressed = sum(int(n) for n in
                         re.findall(r"(\d+) more messages? caused by socket clients suppressed", log))
        print(f"# {lines} lines, {suppressed} suppressed, in {elapsed} s")
        self.assertGreaterEqual(lines, 1)
        self.assertLessEqual(lines, 10 + elapsed)  # the burst, then one a second
        self.assertEqual(lines + suppressed, rounds)


if __name__ == "__main__":
    systest.main()
