#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A tenant that tries to take all of microvmd's descriptors, run as a non-root user by
test-exhaustion.py: on the bus at ADDRESS it creates N_VMS VMs (the test guest from the
inherited descriptor $CLIENT_KERNEL_FD) and calls OpenConsole CONSOLES times on each, keeping
every console it gets; then it opens N_PEERS connections to microvmd's own socket SOCKET that
send the credentials byte and never authenticate, and waits until at most SETTLED of them are
still open (microvmd closes the rest). It prints one JSON line: what it holds and
the errors it got, by name and count. It holds everything until its stdin closes."""

import collections
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import Gio, GLib  # noqa: E402


def create_vms(conn, n, errors):
    paths = []
    for i in range(n):
        args = GLib.Variant.new_tuple(GLib.Variant("s", f"hog{i}"),
                                      systest.guest_config(kernel_fd=True))
        reply, err = systest.call(conn, systest.PATH, systest.MANAGER, "CreateVM", args, "(o)",
                                  # A copy each time: the fd list takes what it is given.
                                  fds=[os.dup(int(os.environ["CLIENT_KERNEL_FD"]))])
        if err:
            errors[err] += 1
        else:
            paths.append(reply[0])
    return paths


def open_consoles(conn, paths, per_vm, errors):
    held = []
    for path in paths:
        for _ in range(per_vm):
            try:
                reply, fd_list = conn.call_with_unix_fd_list_sync(
                    systest.NAME, path, systest.VM, "OpenConsole", None,
                    GLib.VariantType("(h)"), Gio.DBusCallFlags.NONE, systest.GUEST_TIMEOUT_MS,
                    None, None)
            except GLib.Error as e:
                errors[Gio.DBusError.get_remote_error(e) or f"local:{e.message}"] += 1
                continue
            held.append(fd_list.get(reply.unpack()[0]))
    return held


def closed_by_peer(sock):
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def open_peers(path, n, settled):
    """(the connections still open once at most @settled are, or after 120 s; the number
    closed). microvmd accepts and closes the extra ones as fast as its host lets it: at once
    on a real one, over a minute inside tests/vmhost's emulated CPU."""
    peers = []
    for _ in range(n):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)  # the backlog drains as microvmd accepts (and closes) them
        sock.connect(path)
        sock.sendall(b"\0")
        peers.append(sock)
    for sock in peers:
        sock.settimeout(0.001)
    deadline = time.monotonic() + 120
    while True:
        peers = [s for s in peers if not closed_by_peer(s)]
        if len(peers) <= settled or time.monotonic() > deadline:
            return peers, n - len(peers)
        time.sleep(0.5)


def main():
    address, socket_path, n_vms, per_vm, n_peers, settled = sys.argv[1:7]
    conn = Gio.DBusConnection.new_for_address_sync(
        address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
        Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    create_errors = collections.Counter()
    console_errors = collections.Counter()
    paths = create_vms(conn, int(n_vms), create_errors)
    consoles = open_consoles(conn, paths, int(per_vm), console_errors)
    peers, peers_closed = open_peers(socket_path, int(n_peers), int(settled))
    print(json.dumps({"vms": len(paths), "create_errors": create_errors,
                      "consoles": len(consoles), "console_errors": console_errors,
                      "peers_open": len(peers), "peers_closed": peers_closed}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
