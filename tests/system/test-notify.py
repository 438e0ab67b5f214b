#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""microvmd under a pretend service manager: $NOTIFY_SOCKET and $WATCHDOG_USEC as systemd sets
them for Type=notify, on a private bus. READY=1 only once the name is owned and the stored
definitions are loaded, STATUS= follows the VMs, WATCHDOG=1 at half the period, RELOADING=1 …
READY=1 on SIGHUP and Manager.Reload(), STOPPING=1 with EXTEND_TIMEOUT_USEC= on SIGTERM, and
ERRNO=/BUSERROR= when start-up fails."""

import os
import signal
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import GLib  # noqa: E402

WATCHDOG_USEC = 1000000


def write_definition(state_dir, name, memory_mib=16):
    """A stored definition as microvmd writes them (daemon/store.c, definition.c keyfile)."""
    os.makedirs(os.path.join(state_dir, "vms"), exist_ok=True)
    with open(os.path.join(state_dir, "vms", name + ".vm"), "w") as f:
        f.write(f"[VM]\nName={name}\nUUID={uuid.uuid4()}\n\n[Config]\n"
                f"kernel={systest.TESTGUEST}\ncmdline=mode=echo\nmemory-mib={memory_mib}\n"
                "debug-exit=true\npersist=true\n")


class NotifyTest(systest.TestCase):
    def setUp(self):
        super().setUp()
        if not systest.TESTGUEST:
            systest.skip("the test guest (testguest.elf) is not built")
        self.bus = self.start_bus()
        self.client = self.bus.connect()
        self.notify = systest.NotifyListener(self.tmp)
        self.addCleanup(self.notify.close)
        write_definition(self.tmp.join("state"), "stored")

    def start(self, extra_env=None, args=None):
        env = {"NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        env.update(extra_env or {})
        return self.start_daemon(args or [f"--address={self.bus.address}"], env=env)

    def test_ready_status_watchdog(self):
        daemon = self.start()
        when, fields = self.notify.wait_for("READY", "1")
        # READY=1 means "the name is ours": a client may call right away.
        self.assertTrue(systest.name_has_owner(self.client))
        self.assertEqual(fields.get("STATUS"), "0 running, 0 paused, 1 defined")
        print(f"# exec → READY=1: {(when - daemon.started_at) * 1000:.1f} ms")

        # Pings for 3 s: half the period apart. Under load a ping may come late, never early,
        # so the median is what is checked, against generous bounds.
        pings = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            entry = self.notify.receive(deadline - time.monotonic())
            if entry and entry[1].get("WATCHDOG") == "1":
                pings.append(entry[0])
        self.assertGreaterEqual(len(pings), 3, "too few WATCHDOG=1")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        median = statistics.median(gaps)
        print(f"# WATCHDOG=1: {len(pings)} pings, median gap {median * 1000:.0f} ms "
              f"(WATCHDOG_USEC {WATCHDOG_USEC // 1000} ms)")
        self.assertGreater(median, WATCHDOG_USEC / 1e6 / 4)
        self.assertLess(median, WATCHDOG_USEC / 1e6)
        self.assertEqual(daemon.stop(), 0)

    def test_status_follows_vms(self):
        self.start()
        self.notify.wait_for("READY", "1")
        path, err = systest.create_vm(self.client, "one")
        self.assertIsNone(err)
        self.notify.wait_for("STATUS", "0 running, 0 paused, 2 defined")
        if systest.mvmtest.kvm_unusable():
            return  # the rest needs KVM
        _, err = systest.call(self.client, path, systest.VM, "Start")
        self.assertIsNone(err)
        self.notify.wait_for("STATUS", "1 running, 0 paused, 2 defined")
        _, err = systest.call(self.client, path, systest.VM, "Pause", systest.NO_OPTIONS)
        self.assertIsNone(err)
        self.notify.wait_for("STATUS", "0 running, 1 paused, 2 defined")
        _, err = systest.call(self.client, path, systest.VM, "Stop")
        self.assertIsNone(err)
        self.notify.wait_for("STATUS", "0 running, 0 paused, 2 defined")

    def assert_reload(self, trigger):
        before = time.monotonic()
        trigger()
        when, fields = self.notify.wait_for("RELOADING", "1")
        # systemd wants CLOCK_MONOTONIC in µs with RELOADING=1 (Type=notify-reload).
        stamp = int(fields["MONOTONIC_USEC"]) / 1e6
        self.assertGreaterEqual(stamp, before - 1)
        self.assertLessEqual(stamp, when + 1)
        self.notify.wait_for("READY", "1")

    def vm_names(self):
        reply, err = systest.call(self.client, systest.PATH, systest.MANAGER, "ListVMs", None,
                                  "(a(soss))")
        self.assertIsNone(err)
        return [vm[0] for vm in reply[0]]

    def memory_mib(self, name):
        reply, err = systest.call(self.client, systest.PATH, systest.MANAGER, "GetVMByName",
                                  GLib.Variant("(s)", (name,)), "(o)")
        self.assertIsNone(err)
        reply, err = systest.call(self.client, reply[0], "org.freedesktop.DBus.Properties",
                                  "Get", GLib.Variant("(ss)", (systest.VM, "MemoryMiB")), "(v)")
        self.assertIsNone(err)
        return reply[0]

    def test_reload(self):
        daemon = self.start()
        self.notify.wait_for("READY", "1")
        state = self.tmp.join("state")
        write_definition(state, "added-later")
        self.assert_reload(lambda: daemon.proc.send_signal(signal.SIGHUP))
        self.assertEqual(self.vm_names(), ["added-later", "stored"])

        # Changed and removed definitions of VMs that are not running are taken over.
        write_definition(state, "added-by-call", memory_mib=32)
        write_definition(state, "stored", memory_mib=64)
        os.unlink(os.path.join(state, "vms", "added-later.vm"))
        self.assert_reload(lambda: self.assertIsNone(
            systest.call(self.client, systest.PATH, systest.MANAGER, "Reload")[1]))
        self.assertEqual(self.vm_names(), ["added-by-call", "stored"])
        self.assertEqual(self.memory_mib("stored"), 64)

        if not systest.mvmtest.kvm_unusable():
            # A running VM keeps running, whatever happened to its file.
            path, _ = systest.call(self.client, systest.PATH, systest.MANAGER, "GetVMByName",
                                   GLib.Variant("(s)", ("stored",)), "(o)")
            self.assertIsNone(systest.call(self.client, path[0], systest.VM, "Start")[1])
            os.unlink(os.path.join(state, "vms", "stored.vm"))
            self.assert_reload(lambda: daemon.proc.send_signal(signal.SIGHUP))
            self.assertEqual(self.vm_names(), ["added-by-call", "stored"])
            self.assertEqual(systest.vm_state(self.client, path[0]), "running")
        self.assertTrue(daemon.alive())

    def test_stopping(self):
        daemon = self.start()
        self.notify.wait_for("READY", "1")
        daemon.proc.send_signal(signal.SIGTERM)
        _, fields = self.notify.wait_for("STOPPING", "1")
        self.assertGreater(int(fields["EXTEND_TIMEOUT_USEC"]), 2 * 1000000)
        self.assertEqual(daemon.proc.wait(timeout=60), 0)

    def test_start_failures(self):
        daemon = self.start(args=[f"--address=unix:path={self.tmp.join('no-such-bus')}"])
        _, fields = self.notify.wait_for("STATUS")
        self.assertTrue(fields["STATUS"].startswith("Failed to start"), fields)
        self.assertTrue("ERRNO" in fields or "BUSERROR" in fields, fields)
        self.assertEqual(daemon.proc.wait(timeout=60), 1)

        first = self.start()
        self.notify.wait_for("READY", "1")
        second = self.start()
        _, fields = self.notify.wait_for("ERRNO")
        self.assertEqual(int(fields["ERRNO"]), 17)  # EEXIST: the name is taken
        self.assertEqual(second.proc.wait(timeout=60), 1)
        self.assertEqual(first.stop(), 0)


if __name__ == "__main__":
    systest.main()
