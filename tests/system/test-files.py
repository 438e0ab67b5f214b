#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The files a distribution ships, checked as the tools that read them would: xmllint with
polkit's DTD, dbus-daemon loading the bus policy, the activation files as key files, and
`systemd-analyze verify` / `security --offline=yes` on the built units (exposure at most 3.0)."""

import os
import re
import shutil
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import GLib  # noqa: E402

POLKIT_DTD = "/usr/share/polkit-1/policyconfig-1.dtd"
MAX_EXPOSURE = 3.0
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
        for action in ET.parse(ENV["MVMD_POLKIT_POLICY"]).getroot().iter("action"):
            defaults = action.find("defaults")
            expected = "yes" if action.get("id").endswith(".read") else None
            for key in ("allow_any", "allow_inactive", "allow_active"):
                value = defaults.find(key).text
                if expected:
                    self.assertEqual(value, expected)
                else:  # mutating: an administrator, never plain yes
                    self.assertTrue(value.startswith("auth_admin"), (action.get("id"), value))

    def test_bus_policy_loads(self):
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
        with open(ENV["MVMD_SOCKET_UNIT"]) as f:
            socket_unit = f.read().splitlines()
        self.assertIn("ListenStream=/run/microvmd/io.socket", socket_unit)
        self.assertIn("FileDescriptorName=microvmd", socket_unit)


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


if __name__ == "__main__":
    if not systest.MICROVMD:
        systest.skip("MICROVMD is not set (run through meson test)")
    unittest.main(verbosity=2)
