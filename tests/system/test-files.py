#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The files a distribution ships, checked as the tools that read them would: xmllint with
polkit's DTD, dbus-daemon loading the bus policy, the activation files as key files, and
`systemd-analyze verify` / `security --offline=yes` on the built units (exposure at most 1.4)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import GLib  # noqa: E402

POLKIT_DTD = "/usr/share/polkit-1/policyconfig-1.dtd"
# Issue 15 (1.8 before it); docs/security.md, "The unit's sandbox", says what the rest is.
MAX_EXPOSURE = 1.4
# Calls the unit refuses although microvmd makes them, each with what microvmd does instead.
# Under strace they fail as they would under the unit (EPERM injected).
REFUSED = {
    # GLib's thread pool: without the scheduler settings to copy (which would need
    # sched_setattr, of @resources), it starts its threads from a thread of its own.
    "sched_getattr",
}
ENV = os.environ


def run(argv, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)


def keyfile(path):
    kf = GLib.KeyFile()
    kf.load_from_file(path, GLib.KeyFileFlags.NONE)
    return kf


class PolicyFiles(systest.TestCase):
    def test_polkit_policy_is_valid(self):
        if not os.path.exists(POLKIT_DTD):
            self.skipTest(f"{POLKIT_DTD} is not installed (polkitd)")
        for path in (ENV["MVMD_POLKIT_POLICY_IN"], ENV["MVMD_POLKIT_POLICY"]):
            out = run(["xmllint", "--noout", "--dtdvalid", POLKIT_DTD, path])
            self.assertEqual(out.returncode, 0, out.stdout)
        # xmllint must be able to say no: a policy without <defaults> is not valid.
        broken = self.tmp.join("broken.policy")
        with open(ENV["MVMD_POLKIT_POLICY"]) as f:
            text = re.sub(r"<defaults>.*?</defaults>", "", f.read(), flags=re.S)
        with open(broken, "w") as f:
            f.write(text)
        self.assertNotEqual(run(["xmllint", "--noout", "--dtdvalid", POLKIT_DTD,
                                 broken]).returncode, 0)

    def test_polkit_actions_match_the_daemon(self):
        with open(ENV["MVMD_NAMES_H"]) as f:
            used = set(re.findall(r'#define MVMD_ACTION_\w+\s+"([^"]+)"', f.read()))
        shipped = {a.get("id") for a in ET.parse(ENV["MVMD_POLKIT_POLICY"]).getroot()
                   .iter("action")}
        self.assertTrue(used)
        self.assertEqual(used, shipped)
        # Each own-VM action has its -others twin (create has none: a new VM is one's own).
        for action_id in used - {"org.microvmd.vm.create"}:
            self.assertIn(action_id.removesuffix("-others") + "-others", used)
        for action in ET.parse(ENV["MVMD_POLKIT_POLICY"]).getroot().iter("action"):
            action_id = action.get("id")
            defaults = action.find("defaults")
            for key in ("allow_any", "allow_inactive", "allow_active"):
                value = defaults.find(key).text
                if action_id.endswith(".read"):
                    self.assertEqual(value, "yes")
                elif key == "allow_active" and not action_id.endswith("-others"):
                    # One's own VMs, as one's own media: no password in an active session.
                    self.assertEqual(value, "yes", action_id)
                else:  # other users' VMs, or not at the seat: an administrator
                    self.assertTrue(value.startswith("auth_admin"), (action_id, value))

    def test_polkit_policy_is_translated(self):
        """i18n.merge_file put each catalog's description and message into the policy."""
        linguas_path = os.path.join(os.path.dirname(ENV["MVMD_POLKIT_POLICY_IN"]), "..", "po",
                                    "LINGUAS")
        with open(linguas_path) as f:
            languages = [w for line in f for w in line.split("#")[0].split()]
        lang = "{http://www.w3.org/XML/1998/namespace}lang"
        for action in ET.parse(ENV["MVMD_POLKIT_POLICY"]).getroot().iter("action"):
            for tag in ("description", "message"):
                translated = {e.get(lang) for e in action.findall(tag) if e.get(lang)}
                self.assertEqual(translated, set(languages), (action.get("id"), tag))

    def test_bus_policy_loads(self):
        """xmllint for the XML; dbus-daemon for the rest. (The busconfig.dtd that libdbus-1-dev
        ships predates send_destination and friends: every policy in
        /usr/share/dbus-1/system.d fails it, so it cannot judge ours.)"""
        path = ENV["MVMD_DBUS_POLICY"]
        out = run(["xmllint", "--noout", path])
        self.assertEqual(out.returncode, 0, out.stdout)
        root = ET.parse(path).getroot()
        owners = [p.get("user") for p in root.iter("policy") if p.find("allow[@own]") is not None]
        self.assertEqual(owners, ["root"])
        # dbus-daemon itself parses it, strictly, as the system bus would.
        systest.Bus(self.tmp, system=True, policy=path).stop()
        broken = self.tmp.join("broken.conf")
        with open(path) as f:
            text = f.read().replace("<allow own=", "<allow owner=")
        with open(broken, "w") as f:
            f.write(text)
        with self.assertRaises(RuntimeError):
            systest.Bus(self.tmp, system=True, policy=broken)

    def test_activation_files(self):
        bus = keyfile(ENV["MVMD_BUS_SERVICE"])
        self.assertEqual(bus.get_string("D-BUS Service", "Name"), systest.NAME)
        self.assertEqual(bus.get_string("D-BUS Service", "Exec"), "/bin/false")
        alias = bus.get_string("D-BUS Service", "SystemdService")
        self.assertEqual(alias, f"dbus-{systest.NAME}.service")
        # systemd unit files are not key files (repeated keys): read the lines.
        with open(ENV["MVMD_SERVICE_UNIT"]) as f:
            unit = f.read().splitlines()
        self.assertIn(f"Alias={alias}", unit)
        self.assertIn(f"BusName={systest.NAME}", unit)
        self.assertIn("Type=notify", unit)
        # A system bus reads it as activatable (it would hand the start to systemd).
        bus_dir = os.path.dirname(ENV["MVMD_BUS_SERVICE"])
        system_bus = systest.Bus(self.tmp, system=True, policy=ENV["MVMD_DBUS_POLICY"],
                                 servicedir=bus_dir)
        self.addCleanup(system_bus.stop)
        names, err = systest.call(system_bus.connect(), "/org/freedesktop/DBus",
                                  "org.freedesktop.DBus", "ListActivatableNames", None, "(as)",
                                  name="org.freedesktop.DBus")
        self.assertIsNone(err)
        self.assertIn(systest.NAME, names[0])
        with open(ENV["MVMD_SOCKET_UNIT"]) as f:
            socket_unit = f.read().splitlines()
        self.assertIn("ListenStream=/run/microvmd/io.socket", socket_unit)
        self.assertIn("FileDescriptorName=microvmd", socket_unit)


class ErrorNames(systest.TestCase):
    def test_every_error_is_documented(self):
        """Each D-Bus error name of daemon/names.h is in the interface XML and both references."""
        with open(ENV["MVMD_NAMES_H"]) as f:
            names = re.findall(r'#define MVMD_DBUS_ERROR_\w+\s+MVMD_DBUS_ERROR_PREFIX "(\w+)"',
                               f.read())
        self.assertIn("NoResources", names)
        self.assertIn("LimitReached", names)
        root = os.path.dirname(os.path.dirname(ENV["MVMD_NAMES_H"]))
        for doc in ("introspection/org.microvmd.MicroVM1.Manager.xml", "docs/usage-dbus.md",
                    "docs/man/microvmd.8.rst"):
            with open(os.path.join(root, doc)) as f:
                text = f.read()
            for name in names:
                self.assertRegex(text, rf"\b{name}\b", f"{doc} does not name the error {name}")


class Tmpfiles(systest.TestCase):
    def test_tmpfiles_creates_the_directories(self):
        if not shutil.which("systemd-tmpfiles"):
            self.skipTest("systemd-tmpfiles is not installed")
        if os.geteuid() != 0:
            self.skipTest("needs root (the directories belong to root)")
        out = run(["systemd-tmpfiles", "--create", f"--root={self.tmp.path}",
                   ENV["MVMD_TMPFILES"]])
        self.assertEqual(out.returncode, 0, out.stdout)
        for path, mode in (("var/lib/microvmd", 0o700), ("run/microvmd", 0o755)):
            st = os.stat(self.tmp.join(path))
            self.assertEqual(st.st_mode & 0o7777, mode, path)
            self.assertEqual(st.st_uid, 0, path)


class Units(systest.TestCase):
    def setUp(self):
        super().setUp()
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        # ExecStart= must name an executable that exists: point it at the build.
        with open(ENV["MVMD_SERVICE_UNIT"]) as f:
            text = re.sub(r"^ExecStart=\S+", f"ExecStart={systest.MICROVMD}", f.read(),
                          flags=re.M)
        self.unit = self.tmp.join("microvmd.service")
        with open(self.unit, "w") as f:
            f.write(text)
        shutil.copy(ENV["MVMD_SOCKET_UNIT"], self.tmp.join("microvmd.socket"))

    def analyze(self, *args):
        out = run(["systemd-analyze"] + list(args), cwd=self.tmp.path)
        if re.search(r"not been booted with systemd|Failed to (connect|initialize)", out.stdout):
            self.skipTest(f"systemd-analyze cannot run here: {out.stdout.strip()[:200]}")
        return out

    def test_verify(self):
        out = self.analyze("verify", "--man=no", "microvmd.service", "microvmd.socket")
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertEqual(out.stdout.strip(), "", out.stdout)

    def test_security_exposure(self):
        out = self.analyze("security", "--offline=yes", "--no-pager", "microvmd.service")
        match = re.search(r"Overall exposure level for microvmd\.service: ([0-9.]+)", out.stdout)
        self.assertIsNotNone(match, out.stdout)
        exposure = float(match.group(1))
        print(f"# systemd-analyze security exposure: {exposure}")
        self.assertLessEqual(exposure, MAX_EXPOSURE, out.stdout)

    def unit_syscall_filter(self):
        """The set of calls the unit's SystemCallFilter= lines allow, applied in order."""
        listing = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
        groups, current = {}, None
        for line in listing.splitlines():
            if line.startswith("@"):
                current = groups.setdefault(line.strip(), [])
            elif line.startswith("    ") and current is not None and "#" not in line:
                current.append(line.strip())

        def expand(item, seen=()):
            if not item.startswith("@"):
                return {item}
            return set().union(*(expand(i, seen + (item,)) for i in groups[item]
                                 if i not in seen))

        allowed = None
        with open(self.unit) as f:
            for line in f:
                if not line.startswith("SystemCallFilter="):
                    continue
                value = line.split("=", 1)[1].strip()
                deny = value.startswith("~")
                items = set().union(*(expand(i) for i in value.lstrip("~").split()))
                if allowed is None:
                    self.assertFalse(deny, "the filter must be an allow list")
                    allowed = items
                else:
                    allowed = allowed - items if deny else allowed | items
        return allowed

    def test_sandbox_calls_pass_the_filter(self):
        """microvmd puts its vCPU and I/O threads in seccomp filters and Landlock domains of
        their own: the unit's filter must let it (systemd 252 has these in no group)."""
        needed = {"seccomp", "prctl", "landlock_create_ruleset", "landlock_add_rule",
                  "landlock_restrict_self"}
        self.assertEqual(needed - self.unit_syscall_filter(), set())

    def test_syscalls_pass_the_filter(self):
        """Runs a guest through its life under strace: every call microvmd made must pass, or
        be one the unit refuses on purpose (REFUSED, refused here too)."""
        systest.require_kvm()
        if not shutil.which("strace"):
            self.skipTest("strace is not installed")
        allowed = self.unit_syscall_filter()
        self.assertEqual(REFUSED & allowed, set(), "REFUSED names calls the unit allows")
        bus = systest.Bus(self.tmp)
        self.addCleanup(bus.stop)
        trace = self.tmp.join("trace")
        # LeakSanitizer cannot run under ptrace (the asan test setup): the other tests do it.
        asan = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        daemon = systest.Daemon(self.tmp, [f"--address={bus.address}"],
                                env={"ASAN_OPTIONS": asan.lstrip(":")},
                                wrapper_argv=["strace", "-f", "-qq", "-o", trace, "-e",
                                              f"inject={','.join(sorted(REFUSED))}:error=EPERM"])
        self.addCleanup(systest.kill_and_reap, daemon.proc)
        client = bus.connect()
        systest.wait_for(lambda: systest.name_has_owner(client), 60, "microvmd on the bus")
        path, err = systest.create_vm(client, "traced")
        self.assertIsNone(err)
        for method, args in (("Start", None), ("Pause", systest.NO_OPTIONS), ("Resume", None),
                             ("OpenConsole", None), ("GetStats", None), ("Stop", None),
                             ("Delete", None)):
            _, err = systest.call(client, path, systest.VM, method, args)
            self.assertIsNone(err, method)
        # strace blocks SIGTERM for itself (-o FILE PROG): signal microvmd, its child.
        with open(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children") as f:
            microvmd_pid = int(f.read().split()[0])
        os.kill(microvmd_pid, signal.SIGTERM)
        self.assertEqual(daemon.proc.wait(timeout=120), 0)
        with open(trace) as f:
            used = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", f.read(), flags=re.M))
        self.assertIn("ioctl", used)  # the trace saw KVM at work
        print(f"# {len(used)} different system calls, all checked against the unit's filter;"
              f" refused as under the unit: {', '.join(sorted(used & REFUSED)) or 'none'}")
        self.assertEqual(used - allowed - REFUSED, set())


if __name__ == "__main__":
    if not systest.MICROVMD:
        systest.skip("MICROVMD is not set (run through meson test)")
    unittest.main(verbosity=2)
