#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Per-user quotas (microvmd.conf, --config): one user's VMs add up to at most [Quota]'s or
[Quota:USER]'s VMs=, MemoryMiB= and VCPUs=. Proved on root's own VMs, on a private bus, with
limits in [Quota:root] or [Quota:0] (root is unlimited unless a group names it; a group's
missing keys come from [Quota]; `infinity` lifts a limit). Each limit alone refuses a CreateVM
with QuotaExceeded naming it and the file, and nothing is made: no object, no stored definition,
the name stays free; Delete gives a VM's share back. RestoreVM is charged the snapshot's own
memory. Stored definitions are loaded even over a lowered limit, and still count. A bad or
missing --config file stops microvmd at start (status 2, naming the file, group and key);
Reload and SIGHUP re-read it, and a bad file makes Reload fail and leaves the old limits."""

import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
import systest  # noqa: E402
from systest import GLib  # noqa: E402

QUOTA_EXCEEDED = systest.ERR + "QuotaExceeded"
MIN_MEMORY_MIB = 2  # lib/include/microvm.h MVM_MIN_MEMORY_MIB (memory-mib: even, 2 or more)
MAX_MEMORY_MIB = 1024 * 1024  # daemon/definition.h MVMD_MEMORY_MIB_MAX
# Only test_restore_charges_the_snapshot starts a VM: the others are defined, never started, so
# their kernel is never opened and need not exist.
KERNEL = systest.TESTGUEST or "/nonexistent/testguest.elf"


def vm_config(memory_mib, vcpus=1, persist=False, boot=False):
    config = {"kernel": GLib.Variant("s", KERNEL), "memory-mib": GLib.Variant("t", memory_mib),
              "vcpus": GLib.Variant("u", vcpus), "persist": GLib.Variant("b", persist)}
    if boot:  # the test guest, parked in `cli; hlt` (tests/testguest/README.md)
        config.update({"cmdline": GLib.Variant("s", "mode=idle"),
                       "debug-exit": GLib.Variant("b", True)})
    return GLib.Variant("a{sv}", config)


def host_memory_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


FIFO = object()  # test_bad_config_stops_microvmd: a FIFO in the file's place
ENDLESS = object()  # and a link to /dev/zero, a file without end

class QuotaTest(systest.TestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root: the limits tested are [Quota:root]'s")
        self.bus = self.start_bus()
        self.conn = self.bus.connect()
        self.config = self.tmp.join("microvmd.conf")

    def write_config(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def run_microvmd(self, config, **kwargs):
        # "--config" and its value apart: a microvmd without the option names neither file
        # nor group in its complaint, so test_bad_config_stops_microvmd cannot pass by chance.
        return self.start_daemon([f"--address={self.bus.address}", "--config", config],
                                 **kwargs)

    def start_microvmd(self, text):
        """microvmd with @text as its config file, once it is on the bus."""
        self.write_config(text)
        daemon = self.run_microvmd(self.config)
        systest.wait_for(lambda: not daemon.alive() or systest.name_has_owner(self.conn), 60,
                         "microvmd on the bus")
        self.assertTrue(daemon.alive(), f"microvmd exited ({daemon.proc.returncode}) at start")
        return daemon

    def exit_status(self, config, log_path):
        """microvmd's exit status and what it wrote, when it must stop at once."""
        daemon = self.run_microvmd(config, log_path=log_path)
        try:
            systest.wait_for(lambda: not daemon.alive(), 10, "microvmd to exit")
        finally:  # one that stays would hold the bus name against the next case's
            systest.kill_and_reap(daemon.proc)
        return daemon.proc.returncode, daemon.log()

    def manager(self, method, args=None, reply_type=None):
        """(reply, error name, error message without the GDBus prefix) of a Manager method."""
        messages = []
        reply, err = systest.call(self.conn, systest.PATH, systest.MANAGER, method, args,
                                  reply_type, messages=messages)
        message = messages[0].removeprefix(f"GDBus.Error:{err}: ") if messages else ""
        return reply, err, message

    def create(self, name, memory_mib, vcpus=1, **kwargs):
        """CreateVM: (path, error name, error message)."""
        args = GLib.Variant.new_tuple(GLib.Variant("s", name),
                                      vm_config(memory_mib, vcpus, **kwargs))
        reply, err, message = self.manager("CreateVM", args, "(o)")
        return (reply[0] if reply else None), err, message

    def restore(self, name, snapshot_dir):
        reply, err, message = self.manager(
            "RestoreVM", GLib.Variant("(ssa{sv})", (name, snapshot_dir, {})), "(o)")
        return (reply[0] if reply else None), err, message

    def assert_created(self, name, memory_mib, vcpus=1, **kwargs):
        path, err, message = self.create(name, memory_mib, vcpus, **kwargs)
        self.assertIsNone(err, f"{name}: {message}")
        return path

    def assert_refused(self, limit, name, err, message):
        """QuotaExceeded for @limit, naming the config file; no VM @name was made."""
        self.assertEqual(err, QUOTA_EXCEEDED, f"{name}: {message}")
        self.assertIn(limit, message)
        self.assertIn(self.config, message)
        _, err, _ = self.manager("GetVMByName", GLib.Variant("(s)", (name,)), "(o)")
        self.assertEqual(err, systest.ERR + "NoSuchVM", name)

    def assert_create_refused(self, limit, name, memory_mib, vcpus=1, **kwargs):
        _, err, message = self.create(name, memory_mib, vcpus, **kwargs)
        self.assert_refused(limit, name, err, message)

    def vm_names(self):
        reply, err, message = self.manager("ListVMs", None, "(a(soss))")
        self.assertIsNone(err, message)
        return sorted(vm[0] for vm in reply[0])

    def vm_path(self, name):
        reply, err, message = self.manager("GetVMByName", GLib.Variant("(s)", (name,)), "(o)")
        self.assertIsNone(err, message)
        return reply[0]

    def vm_call(self, path, method, args=None):
        messages = []
        _, err = systest.call(self.conn, path, systest.VM, method, args, messages=messages)
        self.assertIsNone(err, f"{method}: {messages}")

    def vm_property(self, path, name):
        reply, err = systest.call(self.conn, path, "org.freedesktop.DBus.Properties", "Get",
                                  GLib.Variant("(ss)", (systest.VM, name)), "(v)")
        self.assertIsNone(err, name)
        return reply[0]

    def stored(self):
        """Every file under microvmd's state directory (systest.Daemon's --state-dir)."""
        root = self.tmp.join("state")
        return sorted(os.path.relpath(os.path.join(d, f), root)
                      for d, _, files in os.walk(root) for f in files)

    def test_limits_on_create(self):
        """Each limit alone refuses; the VMs made before stay; Delete gives a share back."""
        daemon = self.start_microvmd("[Quota:root]\nVMs=3\nMemoryMiB=100\nVCPUs=4\n")
        self.assert_created("a", 32)
        b = self.assert_created("b", 32)
        self.assert_create_refused("MemoryMiB", "c", 64)  # 128 MiB of 100
        self.assert_create_refused("VCPUs", "c", 32, vcpus=3)  # 5 vCPUs of 4
        self.assert_created("c", 32)  # 3 VMs, 96 MiB, 3 vCPUs: each within its limit
        self.assert_create_refused("VMs", "d", MIN_MEMORY_MIB)  # 98 MiB and 4 vCPUs would fit
        self.assertEqual(self.vm_names(), ["a", "b", "c"])
        self.vm_call(b, "Delete")  # "created": Delete needs a VM that is not running or paused
        self.assert_created("d", MIN_MEMORY_MIB)
        self.assert_create_refused("VMs", "e", MIN_MEMORY_MIB)
        self.assertEqual(self.vm_names(), ["a", "c", "d"])
        self.assertEqual(daemon.stop(), 0)

    def test_refused_persistent_create_stores_nothing(self):
        daemon = self.start_microvmd("[Quota:root]\nVMs=1\n")
        self.assert_created("kept", 16, persist=True)
        stored = self.stored()
        self.assertTrue(stored, "the persistent VM's definition is not in the state directory")
        self.assert_create_refused("VMs", "refused", 16, persist=True)
        self.assertEqual(self.stored(), stored)
        # A new microvmd finds the one definition, and only it.
        self.assertEqual(daemon.stop(), 0)
        daemon = self.start_microvmd("[Quota:root]\nVMs=1\n")
        self.assertEqual(self.vm_names(), ["kept"])
        self.assertEqual(daemon.stop(), 0)

    def test_restore_charges_the_snapshot(self):
        """RestoreVM is charged the snapshot's 32 MiB (not CreateVM's default 128, not 0)."""
        systest.require_kvm()
        daemon = self.start_microvmd("[Quota:root]\nVMs=8\nMemoryMiB=48\n")
        original = self.assert_created("original", 32, boot=True)
        self.vm_call(original, "Start")
        snapshot = self.tmp.join("snapshot")
        self.vm_call(original, "Snapshot", GLib.Variant("(sa{sv})", (snapshot, {})))
        # The original still holds its 32 MiB: 32 more would pass 48.
        _, err, message = self.restore("copy", snapshot)
        self.assert_refused("MemoryMiB", "copy", err, message)
        self.assertEqual(self.vm_names(), ["original"])
        self.vm_call(original, "Stop")
        self.vm_call(original, "Delete")
        copy, err, message = self.restore("copy", snapshot)
        self.assertIsNone(err, message)
        self.assertEqual(self.vm_property(copy, "MemoryMiB"), 32)
        self.assertEqual(self.vm_property(copy, "State"), "paused")
        # The copy holds its 32 MiB: another 32 do not fit.
        self.assert_create_refused("MemoryMiB", "more", 32)
        self.assertEqual(daemon.stop(), 0)

    def test_shared_memory_image_is_charged(self):
        """The memory image clones of a snapshot share is charged to its owner beside the VMs
        (a page a clone writes is in both), and given back with the last VM that maps it."""
        systest.require_kvm()
        daemon = self.start_microvmd("[Quota:root]\nVMs=8\nMemoryMiB=96\n")
        original = self.assert_created("original", 32, boot=True)
        self.vm_call(original, "Start")
        snapshot = self.tmp.join("snapshot")
        self.vm_call(original, "Snapshot", GLib.Variant("(sa{sv})", (snapshot, {})))
        self.vm_call(original, "Stop")
        self.vm_call(original, "Delete")
        clone, err, message = self.restore("clone", snapshot)
        self.assertIsNone(err, message)
        # The clone's 32 MiB and its image's 32: 48 more would pass 96 (without the image: 80).
        self.assert_create_refused("MemoryMiB", "more", 48)
        self.vm_call(clone, "Stop")
        self.vm_call(clone, "Delete")
        # The machine, and with it the image, is freed after Delete's reply.
        systest.wait_for(lambda: self.create("more", 48)[1] is None, 10,
                         "the image's 32 MiB given back")
        self.assertEqual(daemon.stop(), 0)

    def test_loaded_definitions_are_charged_never_refused(self):
        daemon = self.start_microvmd("")  # root unlimited
        for name in ("p1", "p2", "p3"):
            self.assert_created(name, 16, persist=True)
        self.assertEqual(daemon.stop(), 0)
        # The administrator lowers root's limit below what root holds.
        daemon = self.start_microvmd("[Quota:root]\nVMs=2\n")
        self.assertEqual(self.vm_names(), ["p1", "p2", "p3"])
        self.assert_create_refused("VMs", "p4", MIN_MEMORY_MIB)
        self.vm_call(self.vm_path("p1"), "Delete")
        self.assert_create_refused("VMs", "p4", MIN_MEMORY_MIB)  # 2 held of 2
        self.vm_call(self.vm_path("p2"), "Delete")
        self.assert_created("p4", MIN_MEMORY_MIB)
        self.assertEqual(self.vm_names(), ["p3", "p4"])
        self.assertEqual(daemon.stop(), 0)

    def test_bad_config_stops_microvmd(self):
        """Status 2 within seconds; stderr names the file, and the group and key at fault."""
        cases = [("[Quota]\nVMs=-1\n", ["Quota", "VMs"]),
                 ("[Quota]\nVMs=lots\n", ["Quota", "VMs"]),
                 ("[Quota]\nVMz=3\n", ["Quota", "VMz"]),
                 ("[Quota:no-such-user-xyz]\nVMs=1\n", ["no-such-user-xyz"]),
                 ("[quota]\nVMs=1\n", ["quota", "unknown group"]),  # misspelled: no defaults
                 (FIFO, ["not a regular file"]),  # would hang the start
                 (ENDLESS, ["larger than"]),  # would be read until memory runs out
                 (None, [])]  # no such file
        for i, (text, words) in enumerate(cases):
            with self.subTest(config=text):
                path = self.tmp.join(f"bad-{i}.conf")
                if text is FIFO:
                    os.mkfifo(path)
                elif text is ENDLESS:
                    os.symlink("/dev/zero", path)
                elif text is not None:
                    with open(path, "w") as f:
                        f.write(text)
                status, log = self.exit_status(path, self.tmp.join(f"bad-{i}.log"))
                self.assertEqual(status, 2, log)
                for word in [path] + words:
                    self.assertIn(word, log)
        self.assertFalse(systest.name_has_owner(self.conn))

    def test_infinity_and_uid_groups(self):
        """[Quota:0] is root's group; the keys it leaves out are [Quota]'s; `infinity` is no
        limit (not the default, the host's memory)."""
        if host_memory_mib() >= MAX_MEMORY_MIB:
            self.skipTest("the host has as much memory as one VM may have")
        daemon = self.start_microvmd("[Quota]\nVMs=1\n[Quota:0]\nMemoryMiB=infinity\n")
        self.assert_created("huge", MAX_MEMORY_MIB)
        self.assert_create_refused("VMs", "second", MIN_MEMORY_MIB)
        self.assertEqual(daemon.stop(), 0)

    def test_reload(self):
        daemon = self.start_microvmd("[Quota:root]\nVMs=1\n")
        self.assert_created("one", 16)
        self.assert_create_refused("VMs", "two", 16)
        self.write_config("[Quota:root]\nVMs=2\n")
        _, err, message = self.manager("Reload")
        self.assertIsNone(err, message)
        self.assert_created("two", 16)
        # A bad file: Reload fails, and the limits read last (VMs=2) stay in force.
        self.write_config("[Quota]\nVMs=x\n")
        _, err, message = self.manager("Reload")
        self.assertEqual(err, systest.ERR + "Failed", message)
        self.assert_create_refused("VMs", "three", 16)
        self.assertEqual(self.vm_names(), ["one", "two"])
        # SIGHUP re-reads the file as Reload does.
        self.write_config("[Quota:root]\nVMs=3\n")
        daemon.proc.send_signal(signal.SIGHUP)
        systest.wait_for(lambda: self.create("three", 16)[1] is None, 30,
                         "SIGHUP to raise root's limit to 3 VMs")
        self.assert_create_refused("VMs", "four", 16)
        self.assertEqual(self.vm_names(), ["one", "three", "two"])
        self.assertEqual(daemon.stop(), 0)


if __name__ == "__main__":
    systest.main()
