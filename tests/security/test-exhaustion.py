#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""One tenant cannot starve the others of microvmd's descriptors (docs/security.md, limits).

microvmd runs as the unit runs it (soft RLIMIT_NOFILE 1024, hard 524288: it raises the soft
limit itself), on a system-like bus with the polkitd mock granting the own-VM actions, and on
its own socket (socket activation) whose group is the attacker's. The attacker, a user made for
the test, creates 125 VMs (its quota allows them), holds 2,000 consoles (16 per VM; a 17th is
refused with LimitReached) and opens 1,000 connections to the socket that never authenticate
(32 stay, for at most 5 s; the rest are closed at once). Meanwhile a second new user creates,
starts and reads the console of a VM, root lists everything, and when the attacker goes its
descriptors come back."""

import json
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "system"))
import systest  # noqa: E402
from gi.repository import GLib  # noqa: E402  (systest required the version)

N_VMS = 125
CONSOLES_PER_VM = 16  # daemon/bounds.h MVMD_CONSOLE_CLIENTS_MAX
PEERS_PER_UID = 32  # daemon/bounds.h MVMD_PEERS_PER_UID_MAX
N_PEERS = 1000
# The unit's LimitNOFILE= (data/microvmd.service.in) over systemd's default soft limit; below
# it where our own hard limit is lower and cannot be raised (a container without
# CAP_SYS_RESOURCE: 20,000 on some CI machines, still ten times what the attacker holds).
DAEMON_NOFILE = f"--nofile=1024:{min(524288, resource.getrlimit(resource.RLIMIT_NOFILE)[1])}"
# The attacker's own: its consoles, its peers, and what Python needs.
ATTACKER_NOFILE = "--nofile=8192:8192"


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_once_listening(path, timeout_s=30):
    """systemd-socket-activate makes the socket's file (bind) a moment before it listens: a
    connection in between is refused. A loaded CI host once hit that moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return systest.peer_connect(path)
        except GLib.Error as error:
            if "Connection refused" not in error.message or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ExhaustionTest(systest.TestCase):
    def setUp(self):
        super().setUp()
        systest.require_kvm()
        systest.require_root_and_setpriv()
        for tool in ("systemd-socket-activate", "prlimit"):
            if not shutil.which(tool):
                systest.skip(f"{tool} is not installed")
        os.chmod(self.tmp.path, 0o755)  # the users reach the bus and the socket
        self.bus = self.start_bus(system=True, policy=os.environ["MVMD_DBUS_POLICY"])
        self.root = self.bus.connect()
        systest.start_mock(self, self.bus, self.root, "--template", "polkitd")
        systest.set_polkit_allowed(self.root, systest.OWN_ACTIONS)
        self.kernel_fd = systest.open_guest_for_client()
        self.addCleanup(os.close, self.kernel_fd)

    def start_microvmd(self, attacker, attacker_gid):
        import pwd
        config = self.tmp.join("microvmd.conf")
        with open(config, "w") as f:
            # Descriptors are the point, not memory: 125 × 16 MiB is more than the nested VM
            # of tests/vmhost has, whose RAM would be the default MemoryMiB.
            f.write(f"[Quota:{pwd.getpwuid(attacker).pw_name}]\nVMs={N_VMS}\n"
                    "MemoryMiB=infinity\n")
        self.socket = self.tmp.join("io.socket")
        wrapper = ["prlimit", DAEMON_NOFILE, "--",
                   "systemd-socket-activate", "-l", self.socket, "--fdname=microvmd"]
        daemon = self.start_daemon([f"--address={self.bus.address}", f"--config={config}",
                                    f"--socket-group={attacker_gid}"], wrapper_argv=wrapper)
        systest.wait_for(lambda: os.path.exists(self.socket), 30, "the socket")
        os.chmod(self.socket, 0o666)
        # The first connection starts microvmd (systemd-socket-activate execs it).
        self.root_peer = connect_once_listening(self.socket)
        # Closed already when microvmd stopped first.
        self.addCleanup(lambda: self.root_peer.is_closed() or self.root_peer.close_sync(None))
        systest.wait_for(lambda: systest.name_has_owner(self.root), 60, "microvmd on the bus")
        return daemon

    def start_attacker(self, uid, gid):
        argv = ["prlimit", ATTACKER_NOFILE, "--"] + systest.script_argv(
            uid, gid, os.path.join(HERE, "hog.py"),
            [self.bus.address, self.socket, str(N_VMS), str(CONSOLES_PER_VM + 1), str(N_PEERS),
             str(PEERS_PER_UID)])
        hog = subprocess.Popen(argv, cwd=systest.client_dir(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, pass_fds=(self.kernel_fd,),
                               env=dict(os.environ, HOME="/", PYTHONDONTWRITEBYTECODE="1",
                                        CLIENT_KERNEL_FD=str(self.kernel_fd)),
                               preexec_fn=systest.die_with_parent)
        self.addCleanup(systest.kill_and_reap, hog)
        line = hog.stdout.readline()
        self.assertTrue(line, "the attacker died before reporting")
        return hog, json.loads(line)

    def test_descriptor_exhaustion(self):
        attacker, attacker_gid = systest.throwaway_user(self, "attacker")
        victim, victim_gid = systest.throwaway_user(self, "victim")
        daemon = self.start_microvmd(attacker, attacker_gid)
        pid = daemon.proc.pid  # prlimit and systemd-socket-activate exec: microvmd's pid

        hog, held = self.start_attacker(attacker, attacker_gid)
        self.assertEqual(held["vms"], N_VMS, held)
        self.assertEqual(held["create_errors"], {})
        self.assertEqual(held["consoles"], N_VMS * CONSOLES_PER_VM, held)
        self.assertEqual(held["console_errors"], {systest.ERR + "LimitReached": N_VMS})
        self.assertLessEqual(held["peers_open"], PEERS_PER_UID, held)
        self.assertGreaterEqual(held["peers_closed"], N_PEERS - PEERS_PER_UID, held)
        hogged = open_fds(pid)
        self.assertGreater(hogged, N_VMS * CONSOLES_PER_VM)

        # Another user is served as if nothing happened: a VM made, started, its console read.
        results = systest.run_client_as(
            victim, victim_gid, self.bus.address,
            ["create-fd", "victim", "start", "victim", "console", "victim", "stop", "victim"],
            kernel_fd=self.kernel_fd)
        self.assertEqual([(r["op"], r["error"]) for r in results],
                         [("create-fd", None), ("start", None), ("console", None),
                          ("stop", None)])
        # The attacker's next VM is over its quota; root still sees everyone's.
        self.assertEqual(systest.create_vm(self.root, "root-vm")[1], None)
        result = systest.run_client_as(attacker, attacker_gid, self.bus.address,
                                       ["create-fd", "one-more"], kernel_fd=self.kernel_fd)
        self.assertEqual(result[0]["error"], systest.ERR + "QuotaExceeded")
        reply, err = systest.call(self.root, systest.PATH, systest.MANAGER, "ListVMs", None)
        self.assertIsNone(err)
        self.assertEqual(len(reply[0]), N_VMS + 2)

        # The attacker goes: its consoles and connections are given back.
        hog.stdin.close()
        self.assertEqual(hog.wait(timeout=60), 0)
        systest.wait_for(lambda: open_fds(pid) < hogged - N_VMS * CONSOLES_PER_VM, 60,
                         "the attacker's descriptors to be closed")
        self.assertTrue(daemon.alive())
        self.assertEqual(daemon.stop(), 0)


if __name__ == "__main__":
    systest.main()
