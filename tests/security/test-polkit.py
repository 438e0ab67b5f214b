#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Authorization on a private *system-like* bus: dbus-daemon with a system.conf-style default
policy and our data/org.microvmd.MicroVM1.conf included as shipped; polkitd and
systemd-machined mocked by python-dbusmock. An unprivileged caller (nobody, via setpriv) is
denied every mutating method until polkit says yes; on another user's VM the -others actions
are asked, and reading its details needs read-others; the owner reads without asking; listing
is always allowed; without a polkit authority only root may act; a running VM is registered
with machined through a leader process of its own."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
import systest  # noqa: E402
from systest import GLib  # noqa: E402

POLKIT, POLKIT_PATH, MOCK = systest.POLKIT, systest.POLKIT_PATH, systest.MOCK
MACHINED = "org.freedesktop.machine1"
MACHINED_PATH = "/org/freedesktop/machine1"
NOT_AUTHORIZED = systest.ERR + "NotAuthorized"

# Every method that changes something (GetCPUConfig pauses the guest to read its registers), on a
# VM that root made; "guest" exists, "mine" not.
MUTATING_OPS = ["create-fd", "mine", "start", "guest", "pause", "guest", "resume", "guest",
                "shutdown", "guest", "stop", "guest", "reboot", "guest", "console", "guest",
                "cpu-config", "guest", "snapshot", "guest", "working-set", "guest", "restore",
                "copy", "delete", "guest", "reload"]
# Public: anyone, never asked.
PUBLIC_OPS = ["list", "managed"]
# The details of root's VM "guest": another user's, so read-others is asked.
DETAIL_OPS = ["stats", "guest", "config", "guest", "exit-reason", "guest"]
# What the bus shows everyone of a VM: no configuration, no exit reason.
PUBLIC_PROPERTIES = {"Name", "UUID", "State", "VCPUs", "MemoryMiB", "StateChangedAt", "Owner"}


class CheckMonitor:
    """Records the calls to polkit on the bus (BecomeMonitor, as root): the arguments of each
    CheckAuthorization in .checks, the ids of each CancelCheckAuthorization in .cancels."""

    def __init__(self, bus):
        self.checks = []
        self.cancels = []
        self.conn = bus.connect()
        self.conn.add_filter(self.on_message)
        rules = [f"type='method_call',interface='{POLKIT}.Authority',member='{member}'"
                 for member in ("CheckAuthorization", "CancelCheckAuthorization")]
        _, err = systest.call(self.conn, "/org/freedesktop/DBus",
                              "org.freedesktop.DBus.Monitoring", "BecomeMonitor",
                              GLib.Variant("(asu)", (rules, 0)), name="org.freedesktop.DBus")
        assert err is None, err

    def on_message(self, conn, message, incoming):
        # Runs in GDBus' worker thread; list.append is atomic in CPython.
        if not incoming or message.get_interface() != f"{POLKIT}.Authority":
            return message
        if message.get_member() == "CheckAuthorization":
            self.checks.append(message.get_body().unpack())
        else:
            self.cancels.append(message.get_body().unpack()[0])
        # Not ours to answer: a monitor that sends anything is disconnected by the bus.
        return None


def caller_files_held(daemon, workdir):
    """What microvmd has open of a caller's: files in @workdir, files of the caller's /proc."""
    fd_dir = f"/proc/{daemon.proc.pid}/fd"
    held = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith(workdir + "/") or target.endswith(("/oom_score_adj", "/comm")):
            held.append(target)
    return held


class PolkitTest(systest.TestCase):
    def setUp(self):
        super().setUp()
        systest.require_kvm()
        systest.require_root_and_setpriv()
        os.chmod(self.tmp.path, 0o755)  # nobody must reach the bus socket
        self.bus = self.start_bus(system=True, policy=os.environ["MVMD_DBUS_POLICY"])
        self.root = self.bus.connect()
        self.kernel_fd = systest.open_guest_for_client()
        self.addCleanup(os.close, self.kernel_fd)

    def start_mock(self, *args):
        return systest.start_mock(self, self.bus, self.root, *args)

    def start_microvmd(self, **kwargs):
        daemon = self.start_daemon([f"--address={self.bus.address}"], **kwargs)
        systest.wait_for(lambda: systest.name_has_owner(self.root), 60, "microvmd on the bus")
        path, err = systest.create_vm(self.root, "guest")
        self.assertIsNone(err)
        return daemon, path

    def as_nobody(self, ops, interactive=False):
        results = systest.run_client_as(systest.NOBODY, systest.NOBODY, self.bus.address, ops,
                                        interactive=interactive, kernel_fd=self.kernel_fd)
        return [(r["op"], r["vm"], r["error"]) for r in results]

    def assert_all(self, results, error):
        self.assertTrue(results)
        for op, vm, err in results:
            self.assertEqual(err, error, f"{op} {vm or ''}: {err}")

    def test_polkit_decides_for_unprivileged_callers(self):
        self.start_mock("--template", "polkitd")
        daemon, _ = self.start_microvmd()
        monitor = CheckMonitor(self.bus)
        # polkitd's template says no to everything until told otherwise.
        self.assert_all(self.as_nobody(MUTATING_OPS), NOT_AUTHORIZED)
        self.assert_checks(monitor, interactive=False)
        monitor.checks.clear()
        self.assert_all(self.as_nobody(MUTATING_OPS, interactive=True), NOT_AUTHORIZED)
        self.assert_checks(monitor, interactive=True)
        monitor.checks.clear()
        self.assert_all(self.as_nobody(PUBLIC_OPS), None)
        self.assertEqual(monitor.checks, [])  # listing never asks
        self.assert_all(self.as_nobody(DETAIL_OPS), NOT_AUTHORIZED)
        systest.wait_for(lambda: len(monitor.checks) >= 3, 10, "the read checks")
        self.assertEqual({(c[1], c[2]["verb"], c[2]["owner"], c[3]) for c in monitor.checks},
                         {(systest.ACTIONS["read-others"], verb, "0", 0)
                          for verb in ("GetStats", "GetConfig", "GetExitReason")})

        self.set_allowed(systest.ACTIONS.values())
        results = self.as_nobody(["create-fd", "mine", "start", "mine", "pause", "mine",
                                  "resume", "mine", "console", "mine", "stop", "mine",
                                  "delete", "mine", "reload"])
        self.assert_all(results, None)
        # polkit's yes does not extend to making root open a path.
        self.assertEqual(self.as_nobody(["create", "by-path", "snapshot", "guest", "restore",
                                         "copy"]),
                         [("create", "by-path", NOT_AUTHORIZED), ("snapshot", "guest",
                          NOT_AUTHORIZED), ("restore", "copy", NOT_AUTHORIZED)])
        self.assertEqual(daemon.stop(), 0)

    def test_snapshot_files_of_unprivileged_callers(self):
        """nobody, allowed to snapshot, never makes root create a file: a directory of root's
        (by path, dir-fd or O_PATH dir-fd) is refused and stays empty; a FIFO, /dev/null, a
        read-only, O_APPEND or hard-linked file, or one file twice, is refused by name with an
        answer at once; files nobody made itself take the snapshot, and restore from (a FIFO
        as the state to restore is refused, never read)."""
        self.start_mock("--template", "polkitd")
        daemon, path = self.start_microvmd()
        # Root's VM: snapshot-others; the copy nobody restores is nobody's own: snapshot.
        self.set_allowed([systest.ACTIONS["snapshot-others"], systest.ACTIONS["snapshot"]])
        _, err = systest.call(self.root, path, systest.VM, "Start")
        self.assertIsNone(err)
        target = os.path.join(self.tmp.path, "root-only")
        workdir = os.path.join(self.tmp.path, "nobody")
        os.mkdir(target, 0o755)
        os.mkdir(workdir, 0o700)
        os.chown(workdir, systest.NOBODY, systest.NOBODY)
        env = {"CLIENT_TARGET": target, "CLIENT_WORKDIR": workdir}

        def as_nobody(ops):
            results = systest.run_client_as(systest.NOBODY, systest.NOBODY, self.bus.address,
                                            ops, env=env)
            return [(r["op"], r["error"]) for r in results]

        dirs = ["snapshot-path", "snapshot-dir-fd", "snapshot-opath"]
        self.assertEqual(as_nobody([x for op in dirs for x in (op, "guest")]),
                         [(op, NOT_AUTHORIZED) for op in dirs])
        self.assertEqual(os.listdir(target), [])
        bad = ["snapshot-fifo", "snapshot-devnull", "snapshot-readonly", "snapshot-append",
               "snapshot-hardlink", "snapshot-same"]
        self.assertEqual(as_nobody([x for op in bad for x in (op, "guest")] + ["list"]),
                         [(op, systest.ERR + "InvalidArgument") for op in bad] + [("list", None)])
        # Files of proc, the client's own (regular, one link, its owner's): refused by file
        # system, never truncated nor written with root's privileges.
        proc, = systest.run_client_as(systest.NOBODY, systest.NOBODY, self.bus.address,
                                      ["snapshot-proc", "guest"], env=env)
        self.assertEqual(proc["error"], systest.ERR + "InvalidArgument", proc)
        self.assertEqual(len(proc["message"]), 2, proc)
        for message in proc["message"]:
            self.assertIn("on a proc file system", message)
        self.assertFalse(proc["written"], proc)
        # The refused descriptors are all closed (by the daemon's closer thread, never by the
        # main loop): none left pointing at nobody's files.
        systest.wait_for(lambda: not caller_files_held(daemon, workdir), 30,
                         "microvmd to close the refused descriptors")
        self.assertEqual(as_nobody(["snapshot-files", "guest", "restore-fifo", "fifo",
                                    "restore-files", "copy"]),
                         [("snapshot-files", None),
                          ("restore-fifo", systest.ERR + "InvalidArgument"),
                          ("restore-files", None)])
        for name in ("state", "memory"):
            st = os.stat(os.path.join(workdir, name))
            self.assertEqual((st.st_uid, st.st_nlink), (systest.NOBODY, 1))
            self.assertGreater(st.st_size, 0)
        copy, err = systest.call(self.root, systest.PATH, systest.MANAGER, "GetVMByName",
                                 GLib.Variant("(s)", ("copy",)), "(o)")
        self.assertIsNone(err)
        self.assertEqual(systest.vm_state(self.root, copy[0]), "paused")
        self.assertEqual(daemon.stop(), 0)

    def test_snapshot_files_from_another_mount_namespace(self):
        """As under the unit (PrivateMounts=, PrivateTmp=): microvmd in a mount namespace of
        its own, where every mount has another ID than the caller's, still takes a caller's
        files on ext4 or tmpfs (found by device number) to snapshot into and restore from."""
        if not shutil.which("unshare"):
            self.skipTest("unshare (util-linux) is not installed")
        self.start_mock("--template", "polkitd")
        daemon, path = self.start_microvmd(
            wrapper_argv=["unshare", "--mount", "--propagation", "private"])
        # "guest" is root's: nobody snapshots it with the -others action, restores its own copy.
        allowed = [systest.ACTIONS["snapshot"], systest.ACTIONS["snapshot-others"]]
        self.set_allowed(allowed)
        _, err = systest.call(self.root, path, systest.VM, "Start")
        self.assertIsNone(err)
        shm = tempfile.mkdtemp(prefix="microvmd-test-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, shm)
        os.chmod(shm, 0o755)  # nobody must reach its workdir
        for i, parent in enumerate((self.tmp.path, shm)):
            workdir = os.path.join(parent, "nobody")
            os.mkdir(workdir, 0o700)
            os.chown(workdir, systest.NOBODY, systest.NOBODY)
            results = systest.run_client_as(
                systest.NOBODY, systest.NOBODY, self.bus.address,
                ["snapshot-files", "guest", "restore-files", f"copy{i}"],
                env={"CLIENT_WORKDIR": workdir})
            self.assertEqual([(r["op"], r["error"]) for r in results],
                             [("snapshot-files", None), ("restore-files", None)], parent)
        self.assertEqual(daemon.stop(), 0)

    def assert_checks(self, monitor, interactive):
        """One check per mutating call: the caller's bus name, the VM and the method. "guest"
        is root's: the -others actions, with its owner (0) in the details."""
        expected = {"CreateVM": ("create", "mine"), "Reload": ("manage-others", None),
                    "OpenConsole": ("console-others", "guest"),
                    "Snapshot": ("snapshot-others", "guest"),
                    "SaveWorkingSet": ("snapshot-others", "guest"),
                    "RestoreVM": ("snapshot", "copy")}
        systest.wait_for(lambda: len(monitor.checks) >= 14, 10, "the polkit checks")
        verbs = []
        for (kind, subject), action, details, flags, cancellation in monitor.checks:
            self.assertEqual(kind, "system-bus-name")
            self.assertTrue(subject["name"].startswith(":"), subject)
            verb = details["verb"]
            verbs.append(verb)
            short, vm = expected.get(verb, ("manage-others", "guest"))
            self.assertEqual(action, systest.ACTIONS[short], verb)
            self.assertEqual(details.get("vm"), vm, verb)
            self.assertEqual(details.get("owner"), "0" if vm == "guest" else None, verb)
            self.assertEqual(flags, 1 if interactive else 0, verb)
        self.assertEqual(sorted(verbs), sorted(
            ["CreateVM", "Start", "Pause", "Resume", "Shutdown", "Stop", "Reboot",
             "OpenConsole", "GetCPUConfig", "Snapshot", "SaveWorkingSet", "RestoreVM", "Delete",
             "Reload"]))

    def test_interactive_check_cancelled_when_the_caller_leaves(self):
        self.start_mock("--template", "polkitd")
        daemon, _ = self.start_microvmd()
        monitor = CheckMonitor(self.bus)
        # polkit "shows a password dialog" (never answers) for manage-others (root's VM).
        _, err = systest.call(self.root, POLKIT_PATH, MOCK, "SimulateHangActions",
                              GLib.Variant("(as)", ([systest.ACTIONS["manage-others"]],)),
                              name=POLKIT)
        self.assertIsNone(err)
        client = subprocess.Popen(
            systest.client_argv(systest.NOBODY, systest.NOBODY, self.bus.address,
                                ["start", "guest", "--interactive"]),
            cwd=systest.client_dir(), stdout=subprocess.DEVNULL, preexec_fn=systest.die_with_parent)
        self.addCleanup(systest.kill_and_reap, client)
        systest.wait_for(lambda: monitor.checks, 30, "the interactive check")
        cancellation_id = monitor.checks[0][4]
        self.assertTrue(cancellation_id)
        self.assertEqual(monitor.cancels, [])
        client.kill()
        client.wait()
        systest.wait_for(lambda: monitor.cancels, 30, "CancelCheckAuthorization")
        self.assertEqual(monitor.cancels, [cancellation_id])
        # A non-interactive check carries no id (nothing to cancel).
        monitor.checks.clear()
        self.assert_all(self.as_nobody(["console", "guest"]), NOT_AUTHORIZED)
        self.assertEqual(monitor.checks[0][4], "")
        self.assertEqual(daemon.stop(), 0)

    def test_without_polkit_only_root(self):
        daemon, path = self.start_microvmd()
        self.assert_all(self.as_nobody(MUTATING_OPS), NOT_AUTHORIZED)
        self.assert_all(self.as_nobody(PUBLIC_OPS), None)
        self.assert_all(self.as_nobody(DETAIL_OPS), NOT_AUTHORIZED)
        for method in ("Start", "Stop", "GetConfig"):
            _, err = systest.call(self.root, path, systest.VM, method)
            self.assertIsNone(err, method)
        self.assertEqual(daemon.stop(), 0)

    def set_allowed(self, actions):
        systest.set_polkit_allowed(self.root, actions)

    def test_owner_rules(self):
        """nobody creates and owns a VM; another user allowed only the own-VM actions can
        neither change it nor read its details or console (and nothing changes); with the
        -others actions it can; root always can. The bus shows the VM's owner to everyone and
        its configuration to no one who is not allowed to read it."""
        self.start_mock("--template", "polkitd")
        daemon, _ = self.start_microvmd()
        other_uid, other_gid = systest.throwaway_user(self)
        workdir = os.path.join(self.tmp.path, "other")
        os.mkdir(workdir, 0o700)
        os.chown(workdir, other_uid, other_gid)

        def as_other(ops):
            results = systest.run_client_as(other_uid, other_gid, self.bus.address, ops,
                                            env={"CLIENT_WORKDIR": workdir})
            return [(r["op"], r["error"]) for r in results]

        self.set_allowed(systest.OWN_ACTIONS)
        monitor = CheckMonitor(self.bus)
        self.assert_all(self.as_nobody(["create-fd", "mine", "start", "mine"]), None)
        mine, err = systest.call(self.root, systest.PATH, systest.MANAGER, "GetVMByName",
                                 GLib.Variant("(s)", ("mine",)), "(o)")
        self.assertIsNone(err)
        mine = mine[0]
        owner, err = systest.call(self.root, mine, "org.freedesktop.DBus.Properties", "Get",
                                  GLib.Variant("(ss)", (systest.VM, "Owner")), "(v)")
        self.assertEqual((owner, err), ((systest.NOBODY,), None))
        # The owner reads their own VM without a polkit round trip.
        monitor.checks.clear()
        self.assert_all(self.as_nobody(["config", "mine", "exit-reason", "mine", "stats",
                                        "mine", "console", "mine"]), None)
        self.assertEqual([c[1] for c in monitor.checks], [systest.ACTIONS["console"]])

        denied = ["stop", "pause", "shutdown", "reboot", "delete", "snapshot-files", "config",
                  "exit-reason", "stats", "console"]
        self.assertEqual(as_other([x for op in denied for x in (op, "mine")]),
                         [(op, NOT_AUTHORIZED) for op in denied])
        self.assertEqual(systest.vm_state(self.root, mine), "running")
        # The files the denied snapshot was offered stay empty (then go, for the next one).
        for name in ("state", "memory"):
            self.assertEqual(os.stat(os.path.join(workdir, name)).st_size, 0)
            os.unlink(os.path.join(workdir, name))
        result = systest.run_client_as(other_uid, other_gid, self.bus.address, ["managed"])
        self.assertIsNone(result[0]["error"])
        props = result[0]["reply"][mine][systest.VM]
        self.assertEqual(set(props), PUBLIC_PROPERTIES)
        self.assertEqual(props["Owner"], str(systest.NOBODY))
        self.assertNotIn("mode=echo", json.dumps(result[0]["reply"]))  # the guest's cmdline

        self.set_allowed(systest.OWN_ACTIONS + [systest.ACTIONS[a] for a in (
            "read-others", "manage-others", "console-others", "snapshot-others")])
        allowed = ["config", "exit-reason", "stats", "console", "pause", "resume",
                   "snapshot-files", "stop"]
        self.assertEqual(as_other([x for op in allowed for x in (op, "mine")]),
                         [(op, None) for op in allowed])
        self.assertEqual(systest.vm_state(self.root, mine), "stopped")
        # Root is never asked, and the VM stays nobody's.
        monitor.checks.clear()
        for method in ("Start", "GetConfig", "Stop", "GetExitReason"):
            _, err = systest.call(self.root, mine, systest.VM, method)
            self.assertIsNone(err, method)
        self.assertEqual(monitor.checks, [])
        owner, _ = systest.call(self.root, mine, "org.freedesktop.DBus.Properties", "Get",
                                GLib.Variant("(ss)", (systest.VM, "Owner")), "(v)")
        self.assertEqual(owner, (systest.NOBODY,))
        self.assertEqual(daemon.stop(), 0)

    def test_machined_registration(self):
        self.start_mock(MACHINED, MACHINED_PATH, MACHINED + ".Manager")
        _, err = systest.call(self.root, MACHINED_PATH, MOCK, "AddMethod",
                              GLib.Variant("(sssss)", (
                                  "", "CreateMachine", "sayssusa(sv)", "o",
                                  "ret = '/org/freedesktop/machine1/machine/' + args[0]")),
                              name=MACHINED)
        self.assertIsNone(err)
        daemon, path = self.start_microvmd()
        uuid, err = systest.call(self.root, path, "org.freedesktop.DBus.Properties", "Get",
                                 GLib.Variant("(ss)", (systest.VM, "UUID")), "(v)")
        self.assertIsNone(err)
        _, err = systest.call(self.root, path, systest.VM, "Start")
        self.assertIsNone(err)

        def calls(method):
            reply, err = systest.call(self.root, MACHINED_PATH, MOCK, "GetMethodCalls",
                                      GLib.Variant("(s)", (method,)), "(a(tav))",
                                      name=MACHINED)
            self.assertIsNone(err)
            return [args for _, args in reply[0]]

        def proc(pid, field):
            with open(f"/proc/{pid}/{field}") as f:
                return f.read()

        systest.wait_for(lambda: calls("CreateMachine"), 30, "CreateMachine")
        name, machine_id, service, klass, leader, root_dir, props = calls("CreateMachine")[0]
        self.assertEqual((name, service, klass, root_dir, props),
                         ("guest", "microvmd", "vm", "", []))
        self.assertEqual(bytes(machine_id).hex(), uuid[0].replace("-", ""))
        # The leader is a process of its own, made by the factory microvmd forked at start:
        # machined gives it a scope, and signals it, never microvmd.
        self.assertNotEqual(leader, daemon.proc.pid)
        self.assertEqual(proc(leader, "comm"), "vm-leader\n")
        factory = int(proc(leader, "stat").rsplit(")", 1)[1].split()[1])
        self.assertEqual(proc(factory, "comm"), "vm-leaders\n")
        self.assertEqual(int(proc(factory, "stat").rsplit(")", 1)[1].split()[1]),
                         daemon.proc.pid)
        # Nothing of microvmd's is open in it: no guest memory, no KVM, no bus.
        own = sorted(os.readlink(f"/proc/{leader}/fd/{fd}")
                     for fd in os.listdir(f"/proc/{leader}/fd") if int(fd) > 2)
        self.assertEqual(len(own), 2, own)
        self.assertEqual(own[0], "anon_inode:[signalfd]")
        self.assertTrue(own[1].startswith("pipe:"), own)
        # A stopped VM's leader leaves: its scope empties, and machined forgets the machine.
        _, err = systest.call(self.root, path, systest.VM, "Stop")
        self.assertIsNone(err)
        systest.wait_for(lambda: not os.path.exists(f"/proc/{leader}"), 30, "the leader's exit")
        self.assertEqual(len(calls("CreateMachine")), 1)
        self.assertEqual(daemon.stop(), 0)


if __name__ == "__main__":
    systest.main()
