#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""microvmctl against the real microvmd on a private dbus-daemon, with real test guests.

Every command is run as a user would run it (a process, its exit code, stdout and stderr);
--json output is parsed and checked against what the daemon must have; the console goes through a
pseudo-terminal. Output is TAP. Environment (set by meson): MICROVMCTL, MICROVMD, MVM_TESTGUEST
(optional: without it, or without /dev/kvm, the parts that run guests are skipped),
MICROVMCTL_LOCALEDIR (the build tree's catalogs), MVMD_PO_DIR (po/ sources), MVMD_COMPLETION.
"""
import json
import os
import pty
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

# The helper tests/system shares with us (copies a client run as another user can reach), and
# what all the Python tests share (tests/common: the private bus).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import reachable  # noqa: E402
from mvmtest import PrivateBus, die_with_parent, kill_and_reap, kvm_unusable  # noqa: E402

MICROVMCTL = os.environ["MICROVMCTL"]
MICROVMD = os.environ["MICROVMD"]
TESTGUEST = os.environ.get("MVM_TESTGUEST", "")
GUEST_TIMEOUT = 60  # seconds; nested KVM emulates guest kernel code (docs/kvm-hosts.md)

# Exit codes, as in microvmctl.h and microvmctl(1).
OK, FAILED, USAGE, NO_DAEMON, NO_SUCH_VM, INVALID_STATE = 0, 1, 2, 3, 4, 5
INVALID_ARGUMENT, ALREADY_EXISTS, NOT_AUTHORIZED, TIMEOUT, LOCAL_IO = 6, 7, 8, 9, 10

class TestBus:
    """A private dbus-daemon and, on demand, microvmd on it."""

    def __init__(self, tmp, name):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.bus = PrivateBus(self.dir)
        self.address = self.bus.address
        self.daemon = None

    def daemon_args(self):
        return [MICROVMD, "--address=" + self.address,
                "--state-dir=" + os.path.join(self.dir, "state"),
                "--runtime-dir=" + os.path.join(self.dir, "run"), "--shutdown-timeout=1",
                "--cpu-template-dir=" + self.template_dir()]

    def template_dir(self):
        """Custom CPU templates: the daemon reads NAME.json here at each CreateVM and Start."""
        return os.path.join(self.dir, "cpu-templates")

    def start_daemon(self):
        self.daemon = subprocess.Popen(self.daemon_args(), stdout=sys.stderr, stderr=sys.stderr,
                                       preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.daemon.poll() is None, "microvmd exited"
            r = subprocess.run(["gdbus", "call", "--address", self.address, "-d",
                                "org.freedesktop.DBus", "-o", "/org/freedesktop/DBus", "-m",
                                "org.freedesktop.DBus.NameHasOwner", "org.microvmd.MicroVM1"],
                               capture_output=True, text=True)
            if "true" in r.stdout:
                return
            time.sleep(0.05)
        raise AssertionError("microvmd did not take its name")

    def stop(self):
        kill_and_reap(self.daemon, signal.SIGTERM)
        self.bus.stop()


class Result:
    def __init__(self, p):
        self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "rc=%d stdout=%r stderr=%r" % (self.rc, self.out[-2000:], self.err[-2000:])


def env_c(**extra):
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "LANGUAGE": ""})
    env.update(extra)
    return env


def ctl(bus, *args, input=None, env=None, timeout=120, strict=False):
    """Runs microvmctl. A console replays guest bytes, which need not be UTF-8: decoded with
    replacement unless @strict (what microvmctl itself makes of them must be valid)."""
    cmd = [MICROVMCTL] + (["--address=" + bus.address] if bus else []) + list(args)
    p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                       errors="strict" if strict else "replace", env=env or env_c(),
                       timeout=timeout)
    return Result(p)


def expect_rc(r, rc, what=""):
    assert r.rc == rc, "%s: expected exit %d, got %r" % (what, rc, r)
    if rc != OK:
        assert r.err.startswith("microvmctl: "), "no message on stderr: %r" % r


def vm_json(bus, name):
    r = ctl(bus, "status", name, "--json", "--lines=40", strict=True)
    expect_rc(r, OK, "status --json")
    return r.json()


def wait_state(bus, name, state):
    deadline = time.monotonic() + GUEST_TIMEOUT
    while True:
        s = vm_json(bus, name)
        if s["state"] == state:
            return s
        assert time.monotonic() < deadline, "%s: state %s, expected %s (%s)" % (
            name, s["state"], state, s["exit-reason"])
        time.sleep(0.1)


def wait_console(bus, name, text):
    """Waits until the console (status's replay) shows @text."""
    deadline = time.monotonic() + GUEST_TIMEOUT
    while True:
        lines = vm_json(bus, name)["console"]
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, "%s: %r not on the console: %r" % (name, text, lines)
        time.sleep(0.1)


class Pty:
    """A process on a pseudo-terminal; reads what it writes there."""

    def __init__(self, argv, env=None):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execvpe(argv[0], argv, env or env_c())
            finally:
                os._exit(127)
        self.seen = b""

    def expect(self, text, start=0, timeout=GUEST_TIMEOUT):
        """Reads until @text appears after @start; returns the offset after it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.seen.find(text, start)
            if at >= 0:
                return at + len(text)
            left = deadline - time.monotonic()
            assert left > 0, "%r not seen; got %r" % (text, self.seen[-3000:])
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side is closed
                    data = b""
                if not data:
                    raise AssertionError("pty closed before %r; got %r" % (text, self.seen[-3000:]))
                self.seen += data

    def send(self, data):
        os.write(self.fd, data)

    def wait(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.drain()
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, "process on the pty did not exit: %r" % self.seen
            self.drain(0.1)

    def drain(self, timeout=0):
        while select.select([self.fd], [], [], timeout)[0]:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            self.seen += data


# ---- the tests ---------------------------------------------------------------------------

def have_kvm():
    return bool(TESTGUEST) and kvm_unusable() is None


def test_usage(t):
    r = ctl(None, "--help")
    expect_rc(r, OK, "--help")
    for command in ("list", "status", "create", "console", "events", "snapshot", "restore",
                    "working-set", "cpu"):
        assert re.search(r"^  %s " % command, r.out, re.M), "--help lacks %s: %r" % (command, r)
    expect_rc(ctl(None), USAGE, "no command")
    expect_rc(ctl(None, "frobnicate"), USAGE, "unknown command")
    expect_rc(ctl(None, "list", "--bogus"), USAGE, "unknown option")
    expect_rc(ctl(None, "status"), USAGE, "missing name")
    expect_rc(ctl(None, "status", "a", "b"), USAGE, "extra argument")
    expect_rc(ctl(None, "--session", "--address=unix:path=/nonexistent", "list"), USAGE,
              "two connections")
    expect_rc(ctl(None, "status", "x", "--lines=-1"), USAGE, "bad --lines")
    expect_rc(ctl(None, "cpu"), USAGE, "cpu without a name")
    expect_rc(ctl(None, "cpu", "x", "--vcpu=-2"), USAGE, "bad --vcpu")
    r = ctl(None, "--version")
    expect_rc(r, OK, "--version")
    assert re.match(r"microvmctl \d+\.\d+", r.out), r


def help_options(argv):
    """The long options a --help output lists."""
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True, env=env_c())
    assert r.returncode == 0, r
    return set(re.findall(r"^  (?:-\w, )?(--[a-z-]+)", r.stdout, re.M)) - {"--help"}


def test_man_pages(t):
    """Every option of every command, and of microvmd, is in the man pages."""
    docs = os.path.join(os.path.dirname(os.environ["MVMD_PO_DIR"]), "docs", "man")
    with open(os.path.join(docs, "microvmctl.1.rst")) as f:
        ctl_page = f.read()
    with open(os.path.join(docs, "microvmd.8.rst")) as f:
        daemon_page = f.read()
    for command in ("list", "status", "info", "create", "start", "stop", "shutdown", "reboot",
                    "pause", "resume", "delete", "set", "snapshot", "restore", "working-set",
                    "console", "events", "cpu"):
        assert re.search(r"^``%s``" % command, ctl_page, re.M), "command %s not documented" % command
        for option in help_options([MICROVMCTL, command]):
            assert "``" + option in ctl_page, "%s %s not documented" % (command, option)
    for option in help_options([MICROVMD]):
        assert "``" + option in daemon_page, "microvmd %s not documented" % option
    # Each exit code of microvmctl.h is explained.
    for code in range(0, LOCAL_IO + 1):
        assert re.search(r"^%d\n    \S" % code, ctl_page, re.M), "exit code %d" % code


def test_german(t):
    """The catalog was built, is complete, and is used."""
    po = os.path.join(os.environ["MVMD_PO_DIR"], "de.po")
    r = subprocess.run(["msgfmt", "--check", "--statistics", "-o", "/dev/null", po],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "untranslated" not in r.stderr and "fuzzy" not in r.stderr, r.stderr
    # Every message of microvmctl, as xgettext finds it in the sources now, is translated.
    src = os.path.dirname(os.environ["MVMD_PO_DIR"])
    sources = sorted(f for f in os.listdir(os.path.join(src, "tools"))
                     if f.startswith("microvmctl") and f.endswith(".c"))
    pot = os.path.join(tempfile.mkdtemp(prefix="microvmctl-pot-"), "microvmctl.pot")
    r = subprocess.run(["xgettext", "--from-code=UTF-8", "--keyword=_", "--keyword=N_",
                        "--keyword=ngettext:1,2", "-o", pot] + ["tools/" + f for f in sources],
                       cwd=src, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["msgcmp", po, pot], capture_output=True, text=True)
    shutil.rmtree(os.path.dirname(pot))
    assert r.returncode == 0, "untranslated messages: " + r.stderr
    mo = os.path.join(os.environ["MICROVMCTL_LOCALEDIR"], "de", "LC_MESSAGES", "microvmd.mo")
    assert os.path.getsize(mo) > 1000, mo
    de = env_c(LANGUAGE="de")
    r = ctl(None, "--help", env=de)
    expect_rc(r, OK, "LANGUAGE=de --help")
    assert "Befehle:" in r.out and "Die VMs auflisten" in r.out, r
    assert "Mit dem Systembus verbinden" in r.out, r
    r = ctl(None, "create", "--help", env=de)
    assert "Der Kernel: ein bzImage" in r.out and "Gastspeicher in MiB" in r.out, r
    assert "Die CPU, die dem Gast gezeigt wird" in r.out, r
    r = ctl(None, "cpu", "--help", env=de)
    assert "Nur die vCPU N zeigen" in r.out, r
    r = ctl(None, "frobnicate", env=de)
    expect_rc(r, USAGE, "German error")
    assert "Unbekannter Befehl „frobnicate“" in r.err, r
    # And English without LANGUAGE.
    assert "Commands:" in ctl(None, "--help").out


def test_no_daemon(t, bus):
    for args in (["list"], ["list", "--json"], ["info"], ["status", "x"], ["start", "x"],
                 ["events"]):
        expect_rc(ctl(bus, *args), NO_DAEMON, " ".join(args) + " without a daemon")
    r = ctl(None, "--socket=" + os.path.join(bus.dir, "nothing-here"), "list")
    expect_rc(r, NO_DAEMON, "--socket to nowhere")


def test_info(t, bus):
    r = ctl(bus, "info", "--json")
    expect_rc(r, OK, "info --json")
    info = r.json()
    assert info["version"] == os.environ.get("MVMD_VERSION", info["version"]), info
    assert re.match(r"^\d+\.\d+\.\d+$", info["version"]), info
    assert isinstance(info["kvm-api-version"], int), info
    assert info["vm-count"] == 0, info
    assert "console" in info["capabilities"], info
    assert ("kvm" in info["capabilities"]) == (info["kvm-api-version"] == 12), info
    r = ctl(bus, "info")
    assert re.search(r"^Version: +%s$" % re.escape(info["version"]), r.out, re.M), r


def test_create_errors(t, bus):
    kernel = TESTGUEST or MICROVMCTL  # any regular file: defining needs no KVM
    expect_rc(ctl(bus, "create", "x"), USAGE, "no --kernel")
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--memory", "12X"), USAGE, "bad size")
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--disk", ",ro"), USAGE, "bad disk")
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--vsock", "2,/tmp/v"), USAGE,
              "reserved CID")
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--set", "vcpus"), USAGE, "bad --set")
    expect_rc(ctl(bus, "create", "x", "--kernel", "/nonexistent/vmlinux"), LOCAL_IO,
              "missing kernel")
    expect_rc(ctl(bus, "create", "x", "--kernel", "/"), LOCAL_IO, "kernel is a directory")
    r = ctl(bus, "create", "bad/name", "--kernel", kernel)
    expect_rc(r, INVALID_ARGUMENT, "bad name")
    assert "GDBus.Error" not in r.err, "the D-Bus error name is not for users: %r" % r
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--set", "no-such-key=true"),
              INVALID_ARGUMENT, "unknown key")
    expect_rc(ctl(bus, "create", "x", "--kernel", kernel, "--autostart"), INVALID_ARGUMENT,
              "autostart without persist")
    # Failures at start: a kernel that is no kernel (the daemon's InvalidArgument), and one
    # whose file is gone by then (Failed). Without KVM every start fails the same way.
    if have_kvm():
        start_failures(bus)
    for verb in ("start", "stop", "reboot", "pause", "resume", "delete", "shutdown", "console",
                 "status", "cpu"):
        r = ctl(bus, verb, "nosuchvm")
        expect_rc(r, NO_SUCH_VM, verb + " of an unknown VM")
    expect_rc(ctl(bus, "snapshot", "nosuchvm", bus.dir), NO_SUCH_VM, "snapshot unknown")
    assert ctl(bus, "list", "--json").json() == [], "a failed create left a VM behind"


def start_failures(bus):
    junk = os.path.join(bus.dir, "junk")
    with open(junk, "w") as f:
        f.write("no kernel")
    expect_rc(ctl(bus, "create", "junk", "--kernel", junk, "--persist"), OK, "create")
    r = ctl(bus, "start", "junk")
    expect_rc(r, INVALID_ARGUMENT, "start a junk kernel")
    assert "junk: " in r.err, r
    os.unlink(junk)
    r = ctl(bus, "start", "junk")
    expect_rc(r, FAILED, "start with the kernel gone")
    assert junk in r.err, "the daemon's message names the file: %r" % r
    expect_rc(ctl(bus, "delete", "junk"), OK, "delete")


def test_define(t, bus):
    """create (descriptors and --persist), list, status, delete: no guest runs."""
    kernel = TESTGUEST or MICROVMCTL
    r = ctl(bus, "create", "def1", "--kernel", kernel, "--cmdline", "mode=echo x='a b'",
            "--vcpus", "2", "--memory", "1G")
    expect_rc(r, OK, "create")
    assert r.out == "" and r.err == "", "create is quiet when piped: %r" % r
    expect_rc(ctl(bus, "create", "def1", "--kernel", kernel), ALREADY_EXISTS, "create twice")
    rel = os.path.relpath(kernel)
    expect_rc(ctl(bus, "create", "def2", "--kernel", rel, "--persist", "--autostart",
                  "--on-reboot", "stop", "--set", "debug-exit=true"), OK, "create --persist")
    vms = ctl(bus, "list", "--json").json()
    assert [v["name"] for v in vms] == ["def1", "def2"], vms
    v = vms[0]
    assert v["state"] == "created" and v["vcpus"] == 2 and v["memory-mib"] == 1024, v
    assert v["uptime-us"] is None and v["path"].startswith("/org/microvmd/MicroVM1/vm/"), v
    assert re.match(r"^[0-9a-f-]{36}$", v["uuid"]), v
    s = vm_json(bus, "def1")
    assert s["config"]["cmdline"] == "mode=echo x='a b'", s
    assert s["config"].get("kernel-fd-passed") is True and "kernel" not in s["config"], s
    assert s["console"] == [] and s["exit-reason"] == "", s
    s = vm_json(bus, "def2")
    assert s["config"]["kernel"] == os.path.realpath(kernel), "--persist sends the path: %r" % s
    assert s["config"]["persist"] is True and s["config"]["autostart"] is True, s
    assert s["config"]["on-reboot"] == "stop" and s["config"]["debug-exit"] is True, s
    assert os.path.exists(os.path.join(bus.dir, "state", "vms", "def2.vm")), "not stored"
    # Devices: disks are opened here (read-write unless ",ro") and passed as descriptors.
    disk, disk_ro = os.path.join(bus.dir, "disk.img"), os.path.join(bus.dir, "ro.img")
    for path in (disk, disk_ro):
        with open(path, "wb") as f:
            f.truncate(1 << 20)
    os.chmod(disk_ro, 0o444)
    vsock = os.path.join(bus.dir, "v.sock")
    expect_rc(ctl(bus, "create", "dev", "--kernel", kernel, "--disk", disk, "--disk",
                  disk_ro + ",ro", "--rng", "--vsock", "7," + vsock, "--tap",
                  "mvmtap0,mac=52:54:00:12:34:56"), OK, "create with devices")
    c = vm_json(bus, "dev")["config"]
    assert [(d.get("fd-passed"), d["read-only"]) for d in c["disks"]] == [(True, False),
                                                                        (True, True)], c
    assert c["rng"] is True and c["vsock"] == {"cid": 7, "uds-path": vsock}, c
    assert c["network"] == [{"tap": "mvmtap0", "mac": "52:54:00:12:34:56"}], c
    expect_rc(ctl(bus, "delete", "dev"), OK, "delete")
    expect_rc(ctl(bus, "create", "dev", "--kernel", kernel, "--disk", disk, "--persist"), OK,
              "create --persist with a disk")
    assert vm_json(bus, "dev")["config"]["disks"][0]["path"] == disk
    expect_rc(ctl(bus, "delete", "dev"), OK, "delete")
    r = ctl(bus, "create", "dev", "--kernel", kernel, "--disk", os.path.join(bus.dir, "nope"))
    expect_rc(r, LOCAL_IO, "missing disk")
    r = ctl(bus, "list")
    lines = r.out.splitlines()
    assert re.match(r"^NAME +STATE +OWNER +VCPUS +MEMORY +UPTIME$", lines[0]), r
    owner = pwd.getpwuid(os.geteuid()).pw_name
    assert re.match(r"^def1 +created +%s +2 +1 GiB +-$" % re.escape(owner), lines[1]), r
    assert ctl(bus, "list", "--names").out == "def1\ndef2\n"
    r = ctl(bus, "status", "def1")
    assert "mode=echo" in r.out and "created" in r.out and "1 GiB" in r.out, r
    owner = pwd.getpwuid(os.geteuid()).pw_name
    assert re.search(r"^  Owner: +%s$" % re.escape(owner), r.out, re.M), r
    assert vm_json(bus, "def1")["owner"] == os.geteuid()
    expect_rc(ctl(bus, "pause", "def1"), INVALID_STATE, "pause a created VM")
    expect_rc(ctl(bus, "snapshot", "def1", bus.dir), INVALID_STATE, "snapshot a created VM")
    for name in ("def1", "def2"):
        expect_rc(ctl(bus, "delete", name), OK, "delete")
    assert not os.path.exists(os.path.join(bus.dir, "state", "vms", "def2.vm"))
    expect_rc(ctl(bus, "delete", "def1"), NO_SUCH_VM, "delete twice")


def test_set(t, bus):
    """Disk and NIC rate limits: create --disk and --tap with limits, set them, set's errors;
    no guest runs (a tap is looked for only at a start)."""
    kernel = TESTGUEST or MICROVMCTL
    disk = os.path.join(bus.dir, "limited.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    expect_rc(ctl(bus, "create", "lim", "--kernel", kernel, "--disk",
                  disk + ",bandwidth=10M,ops=100/50", "--tap",
                  "mvmlim0,tx-ops=1k,mac=52:54:00:00:00:01,rx-bandwidth=100k/10"), OK,
              "create with limits")
    config = vm_json(bus, "lim")["config"]
    d, n = config["disks"][0], config["network"][0]
    assert d["bandwidth"] == {"size": 10000000, "refill-time-ms": 1000}, d
    assert d["ops"] == {"size": 100, "refill-time-ms": 50}, d
    assert n["mac"] == "52:54:00:00:00:01" and n["tx-ops"] == {"size": 1000,
                                                              "refill-time-ms": 1000}, n
    assert n["rx-bandwidth"] == {"size": 100000, "refill-time-ms": 10}, n
    assert "rx-ops" not in n and "tx-bandwidth" not in n, n
    expect_rc(ctl(bus, "set", "lim", "disk.0.bandwidth=none", "disk.0.ops=2k",
                  "nic.0.tx-ops=none", "nic.0.rx-ops=50"), OK, "set")
    config = vm_json(bus, "lim")["config"]
    d, n = config["disks"][0], config["network"][0]
    assert "bandwidth" not in d and d["ops"] == {"size": 2000, "refill-time-ms": 1000}, d
    assert "tx-ops" not in n and n["rx-ops"] == {"size": 50, "refill-time-ms": 1000}, n
    assert n["rx-bandwidth"] == {"size": 100000, "refill-time-ms": 10}, "left as it was"
    for args, rc in ((["disk.1.ops=5"], INVALID_ARGUMENT), (["disk.0.ops=0"], INVALID_ARGUMENT),
                     (["nic.1.tx-ops=5"], INVALID_ARGUMENT), (["nic.0.ops=5"], USAGE),
                     (["disk.0.rx-ops=5"], USAGE), (["disk.0.ops=fast"], USAGE),
                     (["disk.0.iops=5"], USAGE), (["disk.0.ops=10kM"], USAGE),
                     (["disk.0.bandwidth="], USAGE), ([""], USAGE), (["disk.x.ops=5"], USAGE),
                     (["disk.0.ops"], USAGE), ([], USAGE)):
        r = ctl(bus, "set", "lim", *args)
        expect_rc(r, rc, "set %s" % args)
    assert "disks[0].ops.size" in ctl(bus, "set", "lim", "disk.0.ops=0").err
    assert "network[1]" in ctl(bus, "set", "lim", "nic.1.rx-ops=5").err
    config = vm_json(bus, "lim")["config"]
    assert config["disks"][0] == d and config["network"][0] == n, "a refused set changed nothing"
    expect_rc(ctl(bus, "set", "nope", "disk.0.ops=5"), NO_SUCH_VM, "set on no VM")
    for option, value in (("--disk", disk + ",bw=1"), ("--disk", disk + ",,ro"), ("--disk", ""),
                          ("--disk", disk + ",bandwidth="), ("--tap", "mvmlim1,mac="),
                          ("--tap", "mvmlim1,ops=5"), ("--tap", ",tx-ops=5")):
        expect_rc(ctl(bus, "create", "lim2", "--kernel", kernel, option, value), USAGE,
                  "%s %s" % (option, value))
    expect_rc(ctl(bus, "delete", "lim"), OK, "delete")


OPENMETRICS_CHECK = r"""
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([family.type, s.name, s.labels, s.value])
print(json.dumps(samples))
"""


def openmetrics(bus, *names):
    """`stats --format=openmetrics`, read by the OpenMetrics parser of prometheus_client (Debian's
    python3 has it: python3-prometheus-client) where there is one, else checked line by line
    against the format's grammar; [(type or None, name, labels, value)]."""
    r = ctl(bus, "stats", "--format=openmetrics", *names, strict=True)
    expect_rc(r, OK, "stats --format=openmetrics")
    assert r.out.endswith("# EOF\n"), r.out[-200:]
    p = subprocess.run(["/usr/bin/python3", "-c", OPENMETRICS_CHECK], input=r.out,
                       capture_output=True, text=True)
    if "No module named 'prometheus_client'" not in p.stderr:
        assert p.returncode == 0, "not OpenMetrics: %s\n%s" % (p.stderr, r.out)
        return [tuple(x) for x in json.loads(p.stdout)]
    samples = []
    line_re = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*)\} ([0-9.e+-]+)$')
    for line in r.out.splitlines()[:-1]:
        if line.startswith("# "):
            assert re.match(r"^# (TYPE|UNIT|HELP) [a-z_]+ .+$", line), line
            continue
        m = line_re.match(line)
        assert m, "not an OpenMetrics sample: %r" % line
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        samples.append((None, m.group(1), labels, float(m.group(3))))
    return samples


def sample(samples, name, **labels):
    found = [s[3] for s in samples if s[1] == name and all(s[2].get(k) == v
                                                           for k, v in labels.items())]
    assert len(found) == 1, "%s %r: %r" % (name, labels, found)
    return found[0]


def test_stats(t, bus):
    """stats of VMs that do not run: every format; OpenMetrics a real parser reads; errors."""
    kernel = TESTGUEST or MICROVMCTL
    for name in ("st1", "st2"):
        expect_rc(ctl(bus, "create", name, "--kernel", kernel), OK, "create " + name)
    samples = openmetrics(bus)
    assert sample(samples, "microvmd_vm_state", vm="st1", microvmd_vm_state="created") == 1
    assert sample(samples, "microvmd_vm_state", vm="st2", microvmd_vm_state="running") == 0
    assert sample(samples, "microvmd_vm_info", vm="st2", vcpus="1") == 1
    assert sample(samples, "microvmd_vm_cpu_seconds_total", vm="st1") == 0
    assert not any(s[1].startswith("microvmd_disk_") for s in samples), "no machine, no devices"
    only = openmetrics(bus, "st2")
    assert {s[2]["vm"] for s in only} == {"st2"}, only
    r = ctl(bus, "stats", strict=True)
    expect_rc(r, OK, "stats")
    assert r.out.splitlines()[0].split()[:2] == ["NAME", "STATE"], r.out
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == ["st1", "st2"], r.out
    j = ctl(bus, "stats", "--json", "st1").json()
    assert j[0]["name"] == "st1" and j[0]["stats"]["uptime-us"] == 0, j
    expect_rc(ctl(bus, "stats", "nope"), NO_SUCH_VM, "stats of no VM")
    expect_rc(ctl(bus, "stats", "--format=xml"), USAGE, "an unknown format")
    for name in ("st1", "st2"):
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)


def test_stats_running(t, bus):
    """A guest writing its disk: stats counts the writes, its CPU time and uptime."""
    disk = os.path.join(bus.dir, "stats.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    expect_rc(ctl(bus, "create", "writer", "--kernel", TESTGUEST, "--cmdline",
                  "mode=blkloop delay_ms=5", "--memory", "16", "--disk", disk,
                  "--set", "debug-exit=true", "--start"), OK, "create --start")
    deadline = time.monotonic() + GUEST_TIMEOUT
    while not any(int(m.group(1)) >= 20 for line in vm_json(bus, "writer")["console"]
                  for m in [re.match(r"BLKLOOP wrote (\d+) ", line)] if m):
        assert time.monotonic() < deadline, "the guest did not write 20 sectors"
        time.sleep(0.1)
    samples = openmetrics(bus, "writer")
    writes = sample(samples, "microvmd_disk_write_requests_total", vm="writer", disk="0")
    written = sample(samples, "microvmd_disk_write_bytes_total", vm="writer", disk="0")
    assert writes >= 20 and written == writes * 512, (writes, written)
    assert sample(samples, "microvmd_vm_cpu_seconds_total", vm="writer") > 0
    assert sample(samples, "microvmd_vm_uptime_seconds", vm="writer") > 0
    assert sample(samples, "microvmd_vm_state", vm="writer", microvmd_vm_state="running") == 1
    assert sample(samples, "microvmd_vm_exits_total", vm="writer", reason="mmio") > 0
    disks = ctl(bus, "stats", "--json", "writer").json()[0]["stats"]["disks"]
    assert disks[0]["write-requests"] >= writes and disks[0]["throttled"] == 0, disks
    expect_rc(ctl(bus, "stop", "writer"), OK, "stop")
    expect_rc(ctl(bus, "delete", "writer"), OK, "delete")


def test_cpu_template_define(t, bus):
    """--cpu-template reaches the definition (status shows it); an unknown or malformed name is
    the daemon's InvalidArgument, named; `cpu` of a VM that is not running is InvalidState."""
    kernel = TESTGUEST or MICROVMCTL
    for name, why in (("no-such-template", "no such template"), ("../etc", "no template name")):
        r = ctl(bus, "create", "x", "--kernel", kernel, "--cpu-template=" + name)
        expect_rc(r, INVALID_ARGUMENT, "--cpu-template=" + name)
        assert name in r.err and why in r.err and "cpu-template" in r.err, r
    assert ctl(bus, "list", "--names").out == "", "a refused template left a VM behind"
    expect_rc(ctl(bus, "create", "plain", "--kernel", kernel), OK, "create")
    assert vm_json(bus, "plain")["config"]["cpu-template"] == "host", "host is the default"
    expect_rc(ctl(bus, "create", "v2", "--kernel", kernel, "--cpu-template", "x86-64-v2"), OK,
              "create --cpu-template")
    assert vm_json(bus, "v2")["config"]["cpu-template"] == "x86-64-v2"
    r = ctl(bus, "status", "v2", "--lines=0")
    assert re.search(r"^  cpu-template +x86-64-v2$", r.out, re.M), r
    for args in ([], ["--json"]):
        r = ctl(bus, "cpu", "v2", *args)
        expect_rc(r, INVALID_STATE, "cpu of a created VM")
        assert "running or paused" in r.err and r.out == "", r
    r = ctl(bus, "cpu", "v2", "--vcpu=1")
    expect_rc(r, USAGE, "--vcpu past the VM's vCPUs")
    assert "v2 has 1 vCPU," in r.err, r
    for name in ("plain", "v2"):
        expect_rc(ctl(bus, "delete", name), OK, "delete")


def cpu_text_features(out):
    """The feature names of `cpu`'s text: the Features: line and its continuation lines."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Features:"))
    words = lines[start].split()[1:]
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        words += line.split()
    return words


def cpu_text_cpuid(out, vcpu):
    """vCPU @vcpu's CPUID rows of `cpu`'s text, as tuples of numbers."""
    section = out.split("vCPU %d:\n" % vcpu, 1)[1].split("\nvCPU ", 1)[0]
    rows = re.findall(r"^    (0x\S+)  (0x\S+)  (0x\S+)  (0x\S+)  (0x\S+)  (0x\S+)$", section,
                      re.M)
    return [tuple(int(x, 16) for x in row) for row in rows]


def start_with_template(bus, name):
    """Creates and starts @name with x86-64-v2. A host whose KVM shows guests its own CPUID
    whatever the VMM sets (kvm_pvm, docs/kvm-hosts.md) cannot honour a template that takes
    features away: Start is IncompatibleCPU (exit 1) naming the template, and a custom template
    that hides nothing stands in. Returns the template the VM runs with."""
    args = ["--kernel", TESTGUEST, "--cmdline", "mode=echo", "--memory", "16", "--vcpus", "2",
            "--set", "debug-exit=true", "--start"]
    r = ctl(bus, "create", name, "--cpu-template=x86-64-v2", *args)
    if r.rc == OK:
        return "x86-64-v2"
    expect_rc(r, FAILED, "start with x86-64-v2 where KVM cannot hide features")
    assert "x86-64-v2" in r.err and "cannot be honoured" in r.err, r
    assert "GDBus.Error" not in r.err and "IncompatibleCPU" not in r.err, r
    expect_rc(ctl(bus, "delete", name), OK, "delete")
    os.makedirs(bus.template_dir(), exist_ok=True)
    with open(os.path.join(bus.template_dir(), "hides-nothing.json"), "w") as f:
        f.write('{ "description": "the host\'s CPU" }\n')
    expect_rc(ctl(bus, "create", name, "--cpu-template=hides-nothing", *args), OK,
              "create --start with a custom template")
    return "hides-nothing"


def check_cpu_json(c, template, vcpus):
    assert {"cpu-template", "tsc-khz", "tsc-scaling", "features", "vcpus"} <= set(c), c.keys()
    assert c["cpu-template"] == template, c["cpu-template"]
    assert isinstance(c["tsc-khz"], int) and c["tsc-khz"] >= 0, c["tsc-khz"]
    assert isinstance(c["tsc-scaling"], bool), c["tsc-scaling"]
    assert "sse2" in c["features"], c["features"]
    assert [v["index"] for v in c["vcpus"]] == vcpus, c["vcpus"]
    for v in c["vcpus"]:
        assert any(e["function"] == 0 for e in v["cpuid"]), v["cpuid"]
        for e in v["cpuid"]:
            assert set(e) == {"function", "index", "flags", "eax", "ebx", "ecx", "edx"}, e
            assert all(isinstance(x, int) and 0 <= x < 1 << 32 for x in e.values()), e
        assert v["msrs"], "no MSRs"
        for m in v["msrs"]:
            assert isinstance(m["index"], int) and re.match(r"^0x[0-9a-f]{16}$", m["value"]), m


def test_cpu(t, bus):
    """`cpu` of a running and a paused guest: the template, TSC and features, and each vCPU's
    CPUID and MSRs, as text and as JSON that say the same; not once the VM has stopped."""
    template = start_with_template(bus, "c1")
    r = ctl(bus, "cpu", "c1", strict=True)
    expect_rc(r, OK, "cpu")
    assert re.search(r"^CPU template: +%s$" % re.escape(template), r.out, re.M), r
    assert re.search(r"^TSC rate: +(\d+ kHz|unknown)$", r.out, re.M), r
    assert re.search(r"^TSC scaling: +(available|not available)$", r.out, re.M), r
    features = cpu_text_features(r.out)
    assert "sse2" in features, features
    if template == "x86-64-v2":
        assert "avx2" not in features, "x86-64-v2 hides AVX2: %r" % features
    assert re.search(r"^    FUNCTION +INDEX +EAX +EBX +ECX +EDX$", r.out, re.M), r
    assert re.search(r"^  MSRs \(\d+\):$", r.out, re.M), r
    assert re.search(r"^    0x[0-9a-f]{8} = 0x[0-9a-f]{16}$", r.out, re.M), r
    rj = ctl(bus, "cpu", "c1", "--json")
    expect_rc(rj, OK, "cpu --json")
    c = rj.json()
    check_cpu_json(c, template, [0, 1])
    assert c["features"] == features, "text and JSON differ: %r %r" % (features, c["features"])
    if c["tsc-khz"]:
        assert "%d kHz" % c["tsc-khz"] in r.out, r
    for vcpu in (0, 1):
        rows = [(e["function"], e["index"], e["eax"], e["ebx"], e["ecx"], e["edx"])
                for e in c["vcpus"][vcpu]["cpuid"]]
        assert cpu_text_cpuid(r.out, vcpu) == rows, "vCPU %d: text and JSON differ" % vcpu
    r = ctl(bus, "cpu", "c1", "--vcpu=1", "--json")
    expect_rc(r, OK, "cpu --vcpu=1 --json")
    check_cpu_json(r.json(), template, [1])
    r = ctl(bus, "cpu", "c1", "--vcpu", "1")
    assert "vCPU 1:" in r.out and "vCPU 0:" not in r.out, r
    expect_rc(ctl(bus, "cpu", "c1", "--vcpu=2"), USAGE, "--vcpu past the VM's vCPUs")
    expect_rc(ctl(bus, "pause", "c1"), OK, "pause")
    check_cpu_json(ctl(bus, "cpu", "c1", "--json").json(), template, [0, 1])
    assert vm_json(bus, "c1")["state"] == "paused", "cpu left the VM paused"
    expect_rc(ctl(bus, "resume", "c1"), OK, "resume")
    assert vm_json(bus, "c1")["config"]["cpu-template"] == template
    expect_rc(ctl(bus, "stop", "c1"), OK, "stop")
    expect_rc(ctl(bus, "cpu", "c1"), INVALID_STATE, "cpu of a stopped VM")
    expect_rc(ctl(bus, "delete", "c1"), OK, "delete")


def test_cpu_incompatible(t, bus):
    """A template that sets a CPU feature this host's KVM cannot give: Start is the daemon's
    IncompatibleCPU on every host, shown as its message with exit code 1 (the bit is one that
    `cpu --json` of a host-template guest shows clear in CPUID leaf 7 EBX)."""
    expect_rc(ctl(bus, "create", "h1", "--kernel", TESTGUEST, "--cmdline", "mode=echo",
                  "--memory", "16", "--start"), OK, "create --start")
    leaf7 = [e for e in ctl(bus, "cpu", "h1", "--json").json()["vcpus"][0]["cpuid"]
             if (e["function"], e["index"]) == (7, 0)]
    expect_rc(ctl(bus, "stop", "h1"), OK, "stop")
    expect_rc(ctl(bus, "delete", "h1"), OK, "delete")
    assert len(leaf7) == 1, leaf7
    clear = [bit for bit in range(32) if not leaf7[0]["ebx"] & (1 << bit)]
    if not clear:
        return "SKIP this host's KVM gives every bit of CPUID leaf 7 EBX"
    os.makedirs(bus.template_dir(), exist_ok=True)
    with open(os.path.join(bus.template_dir(), "too-much.json"), "w") as f:
        json.dump({"cpuid": [{"leaf": "0x7", "register": "ebx", "set": hex(1 << clear[0])}]}, f)
    r = ctl(bus, "create", "c2", "--kernel", TESTGUEST, "--cpu-template=too-much", "--start")
    expect_rc(r, FAILED, "start with a feature this host cannot give")
    assert "too-much" in r.err and "cannot give" in r.err, r
    assert "GDBus.Error" not in r.err, r
    expect_rc(ctl(bus, "delete", "c2"), OK, "delete")


def test_unprivileged(t, bus):
    """Listing is free; changing, and reading another user's VM's details, need polkit's yes,
    and there is no polkit here: an ordinary user (nobody) gets NotAuthorized, exit code 8,
    with the daemon's explanation, and status shows only the public part of root's VM."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return "SKIP needs root and setpriv"
    for d in (os.path.dirname(bus.dir), bus.dir):  # our temporary dirs: nobody reaches the bus
        os.chmod(d, 0o755)
    # The build tree may be out of nobody's reach: microvmctl and the kernel it opens are run
    # and read from copies (the C locale: no catalogs to read).
    with reachable.ReachableDir("microvmctl-nobody-") as copies:
        microvmctl = copies.copy(MICROVMCTL, executable=True)
        kernel = copies.copy(TESTGUEST) if TESTGUEST else microvmctl
        unprivileged_calls(bus, microvmctl, kernel, copies.path)


def nobody_runner(bus, microvmctl, cwd):
    """A function that runs @microvmctl (a copy nobody can reach) as nobody, from @cwd."""
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", microvmctl,
                 "--address=" + bus.address]

    def run(*args, input=None):
        return Result(subprocess.run(as_nobody + list(args), input=input, capture_output=True,
                                     text=True, env=env_c(), cwd=cwd, timeout=120))
    return run


def unprivileged_calls(bus, microvmctl, kernel, cwd):
    run = nobody_runner(bus, microvmctl, cwd)
    expect_rc(ctl(bus, "create", "rootvm", "--kernel", kernel), OK, "create as root")
    r = run("list", "--json")
    expect_rc(r, OK, "list as nobody")
    assert [(v["name"], v["owner"]) for v in r.json()] == [("rootvm", 0)], r
    r = run("list")
    assert re.search(r"^rootvm +created +root ", r.out, re.M), r
    # Another user's VM: the public part, and why the details are missing (no polkit here).
    r = run("status", "rootvm", "--json", "--lines=0")
    expect_rc(r, OK, "status of root's VM as nobody")
    s = r.json()
    assert (s["owner"], s["config"], s["stats"], s["exit-reason"]) == (0, None, None, None), s
    assert "read-others" in r.err, r
    r = run("create", "mine", "--kernel", kernel)
    expect_rc(r, NOT_AUTHORIZED, "create as nobody")
    assert "polkit" in r.err, r
    expect_rc(run("start", "rootvm"), NOT_AUTHORIZED, "start as nobody")
    expect_rc(run("delete", "rootvm"), NOT_AUTHORIZED, "delete as nobody")
    expect_rc(ctl(bus, "delete", "rootvm"), OK, "delete as root")


def create_echo(bus, name):
    expect_rc(ctl(bus, "create", name, "--kernel", TESTGUEST, "--cmdline", "mode=echo",
                  "--memory", "16", "--set", "debug-exit=true", "--start"), OK, "create --start")
    wait_console(bus, name, "READY")


def test_lifecycle(t, bus):
    create_echo(bus, "e1")
    expect_rc(ctl(bus, "start", "e1"), INVALID_STATE, "start a running VM")
    v = ctl(bus, "list", "--json").json()[0]
    assert v["state"] == "running" and v["uptime-us"] is not None and v["uptime-us"] >= 0, v
    s = vm_json(bus, "e1")
    assert "TESTGUEST echo start" in s["console"] and "READY" in s["console"], s
    assert s["stats"]["uptime-us"] >= 0 and s["stats"]["memory-bytes"] == 16 << 20, s
    assert s["stats"]["exits"]["io"] > 0, "the guest printed through port I/O: %r" % s
    r = ctl(bus, "pause", "e1")
    assert r.rc == OK and r.out == "" and r.err == "", r
    assert vm_json(bus, "e1")["state"] == "paused"
    expect_rc(ctl(bus, "pause", "e1"), INVALID_STATE, "pause twice")
    expect_rc(ctl(bus, "resume", "e1"), OK, "resume")
    expect_rc(ctl(bus, "resume", "e1"), INVALID_STATE, "resume a running VM")
    expect_rc(ctl(bus, "pause", "e1", "--freeze-clock"), OK, "pause --freeze-clock")
    expect_rc(ctl(bus, "resume", "e1"), OK, "resume")
    expect_rc(ctl(bus, "reboot", "e1"), OK, "reboot")
    assert vm_json(bus, "e1")["state"] == "running"
    expect_rc(ctl(bus, "stop", "e1"), OK, "stop")
    s = vm_json(bus, "e1")
    assert s["state"] == "stopped" and s["exit-reason"].startswith("requested"), s
    expect_rc(ctl(bus, "stop", "e1"), INVALID_STATE, "stop twice")
    expect_rc(ctl(bus, "delete", "e1"), OK, "delete")


def test_console_pty(t, bus):
    """Interactive: raw terminal, a round trip through the echo guest, Ctrl-] leaves, the
    terminal is restored; then progress on a terminal while shutdown waits."""
    create_echo(bus, "con")
    script = ('stty -g; "$0" --address="$1" console con; echo "rc=$?"; stty -g; '
              '"$0" --address="$1" shutdown con --timeout=2; echo "shutdown-rc=$?"')
    p = Pty(["sh", "-c", script, MICROVMCTL, bus.address])
    at = p.expect(b"Press Ctrl-] to leave.")
    at = p.expect(b"READY", at)  # the replay of what the guest printed before
    p.send(b"hello-pty")
    at = p.expect(b"hello-pty", at)  # echoed by the guest, not by the terminal (raw mode)
    p.send(b"\x1d")
    at = p.expect(b"rc=0", at)
    at = p.expect(b"shutdown-rc=%d" % TIMEOUT, at)
    assert p.wait() == 0
    out = p.seen.decode(errors="replace")
    modes = re.findall(r"^([0-9a-f]+(?::[0-9a-f]+){10,})\r?$", out, re.M)
    assert len(modes) == 2 and modes[0] == modes[1], "terminal not restored: %r" % out
    assert "Disconnected." in out, out
    assert "Waiting up to 2 s for con to shut down" in out, "no progress on a tty: %r" % out
    assert "con: " in out, out  # the daemon's timeout message
    # The guest ignored Ctrl-Alt-Del and still runs; piped, shutdown shows no progress.
    r = ctl(bus, "shutdown", "con", "--timeout=1")
    expect_rc(r, TIMEOUT, "shutdown timeout")
    assert "Waiting" not in r.err, r
    r = ctl(bus, "shutdown", "con", "--timeout=1", "--force")
    expect_rc(r, OK, "shutdown --force")
    assert vm_json(bus, "con")["state"] == "stopped"
    expect_rc(ctl(bus, "delete", "con"), OK, "delete")


def test_console_pipe(t, bus):
    """Not a terminal: stdin to the guest, its output to stdout, leave when input has ended
    and the console is quiet."""
    create_echo(bus, "pipe")
    # The guest echoes an escape sequence and bytes that are not UTF-8: console passes them
    # through untouched, status must not (below).
    p = subprocess.run([MICROVMCTL, "--address=" + bus.address, "console", "pipe",
                        "--wait-idle=1500"], input=b"abc\x1b[2Jred\nbad\xff\xfeutf\nquit\n",
                       capture_output=True, env=env_c(), timeout=120)
    assert p.returncode == 0 and b"bad\xff\xfeutf" in p.stdout, p
    r = Result(subprocess.CompletedProcess(p.args, p.returncode,
                                           p.stdout.decode(errors="replace"),
                                           p.stderr.decode(errors="replace")))
    assert "READY" in r.out and "PASS echo" in r.out, r
    assert r.out.index("abc") > r.out.index("READY"), r
    assert "TESTGUEST-DONE echo PASS" in r.out, r
    assert "Press Ctrl-]" not in r.err, r
    s = wait_state(bus, "pipe", "stopped")
    assert "debug-exit" in s["exit-reason"], s
    r = ctl(bus, "console", "pipe", "--wait-idle=200", input="")
    expect_rc(r, OK, "console of a stopped VM")
    assert "TESTGUEST-DONE echo PASS" in r.out, "replay of a stopped VM: %r" % r
    r = ctl(bus, "status", "pipe", "--lines=2")
    assert re.search(r"PASS echo\n  TESTGUEST-DONE echo PASS\n$", r.out), r
    r = ctl(bus, "status", "pipe", strict=True)
    assert "\x1b" not in r.out and "abc\ufffd[2Jred" in r.out, r
    console = vm_json(bus, "pipe")["console"]
    assert "abc\ufffd[2Jred" in console, "JSON keeps it readable: %r" % console
    assert any(re.match("^bad\ufffd+utf$", line) for line in console), console
    expect_rc(ctl(bus, "delete", "pipe"), OK, "delete")


def test_snapshot(t, bus):
    info = ctl(bus, "info", "--json").json()
    if "snapshot" not in info["capabilities"]:
        return "SKIP daemon without snapshots"
    create_echo(bus, "snap")
    d = os.path.join(bus.dir, "snapdir")
    os.mkdir(d)
    expect_rc(ctl(bus, "snapshot", "snap", os.path.join(bus.dir, "nonexistent")), LOCAL_IO,
              "snapshot into a missing directory")
    r = ctl(bus, "snapshot", "snap", d)
    expect_rc(r, OK, "snapshot")
    assert os.path.getsize(os.path.join(d, "state")) > 0, os.listdir(d)
    assert r.out == state_id(d) + "\n", "snapshot prints the new snapshot's ID: %r" % r
    # microvmctl made the files and renamed them into place: nothing else is left there.
    assert sorted(os.listdir(d)) == ["memory", "state"], os.listdir(d)
    assert vm_json(bus, "snap")["state"] == "running", "snapshot without --leave-paused"
    expect_rc(ctl(bus, "restore", "copy", d), OK, "restore")
    s = vm_json(bus, "copy")
    assert s["state"] == "paused" and s["memory-mib"] == 16, s
    # A copy's guest has a new VM generation ID; status shows it with the configuration.
    snap_id = vm_json(bus, "snap")["config"]["generation-id"]
    uuid_form = r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"
    assert re.match(uuid_form, snap_id), snap_id
    assert re.match(uuid_form, s["config"]["generation-id"]), s
    assert s["config"]["generation-id"] != snap_id and s["config"]["clone"] is False, s
    r = ctl(bus, "status", "copy", strict=True)
    assert re.search(r"^  generation-id +%s$" % s["config"]["generation-id"], r.out, re.M), r
    expect_rc(ctl(bus, "restore", "copy", d), ALREADY_EXISTS, "restore twice")
    junk = os.path.join(bus.dir, "junk")
    os.mkdir(junk)
    expect_rc(ctl(bus, "restore", "copy2", junk), LOCAL_IO, "restore from a dir without files")
    for name in ("state", "memory"):
        with open(os.path.join(junk, name), "w") as f:
            f.write("not a snapshot")
    expect_rc(ctl(bus, "restore", "copy2", junk), INVALID_ARGUMENT, "restore a non-snapshot")
    expect_rc(ctl(bus, "restore", "copy3", os.path.join(bus.dir, "nonexistent")), LOCAL_IO,
              "restore from a missing directory")
    expect_rc(ctl(bus, "resume", "copy"), OK, "resume the copy")
    # The copy carries on from the snapshot: it is still echoing.
    r = ctl(bus, "console", "copy", "--wait-idle=1500", input="zz-copy\nquit\n")
    assert "zz-copy" in r.out and "TESTGUEST-DONE echo PASS" in r.out, r
    d2 = os.path.join(bus.dir, "snapdir2")
    os.mkdir(d2)
    expect_rc(ctl(bus, "snapshot", "snap", d2, "--leave-paused"), OK, "snapshot --leave-paused")
    assert vm_json(bus, "snap")["state"] == "paused"
    expect_rc(ctl(bus, "restore", "copy4", d2, "--resume", "--copy-memory"), OK,
              "restore --resume --copy-memory")
    assert vm_json(bus, "copy4")["state"] == "running"
    # A clone: its own UUID and generation ID, and "clone" in its configuration.
    expect_rc(ctl(bus, "restore", "copy5", d2, "--clone", "--resume"), OK, "restore --clone")
    c4, c5 = vm_json(bus, "copy4"), vm_json(bus, "copy5")
    assert c5["state"] == "running" and c5["config"]["clone"] is True, c5
    assert c5["uuid"] != c4["uuid"], (c4, c5)
    assert c5["config"]["generation-id"] not in ("", c4["config"]["generation-id"]), (c4, c5)
    for name in ("snap", "copy", "copy4", "copy5"):
        ctl(bus, "stop", name)
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)
    snapshot_backends(bus)


def snapshot_backends(bus):
    """A snapshot names its disk by path: only --snapshot-backends has root open it."""
    disk = os.path.join(bus.dir, "snapdisk.img")
    with open(disk, "wb") as f:
        f.truncate(64 * 512)
    expect_rc(ctl(bus, "create", "withdisk", "--kernel", TESTGUEST, "--cmdline", "mode=echo",
                  "--memory", "16", "--disk", disk, "--persist", "--start"), OK,
              "create --persist with a disk")
    wait_console(bus, "withdisk", "READY")
    d = os.path.join(bus.dir, "snapdisk")
    os.mkdir(d)
    expect_rc(ctl(bus, "snapshot", "withdisk", d), OK, "snapshot with a disk")
    r = ctl(bus, "restore", "disk-copy", d)
    expect_rc(r, INVALID_ARGUMENT, "restore without back ends or --snapshot-backends")
    assert "use-snapshot-backends" in r.err, r
    expect_rc(ctl(bus, "restore", "disk-copy", d, "--snapshot-backends"), OK,
              "restore --snapshot-backends")
    assert vm_json(bus, "disk-copy")["config"]["disks"][0]["path"] == disk
    for name in ("withdisk", "disk-copy"):
        ctl(bus, "stop", name)
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)


def state_id(d):
    """A snapshot's ID: the last 32 bytes of its state, in lowercase hex."""
    with open(os.path.join(d, "state"), "rb") as f:
        return f.read()[-32:].hex()


def allocated(path):
    return os.stat(path).st_blocks * 512


def test_snapshot_diff(t, bus):
    """snapshot --track-changes and --diff, restore --layer and --track-changes: a pattern
    guest, a full snapshot and two diffs, each against the last; the chain restored counts on
    with every page right (it prints FAIL otherwise)."""
    info = ctl(bus, "info", "--json").json()
    if "diff-snapshots" not in info["capabilities"]:
        return "SKIP daemon without diff snapshots"
    expect_rc(ctl(bus, "create", "pat", "--kernel", TESTGUEST, "--cmdline",
                  "mode=pattern pages=64 base_mib=8 every=20 delay=2000", "--memory", "16",
                  "--set", "debug-exit=true", "--start"), OK, "create a pattern guest")
    wait_console(bus, "pat", "COUNTER")
    d = {name: os.path.join(bus.dir, "diff-" + name) for name in ("full", "d1", "d2", "junk")}
    for path in d.values():
        os.mkdir(path)
    with open(os.path.join(d["junk"], "state"), "wb") as f:
        f.write(b"MVMSNAQ\0" + bytes(64))
    expect_rc(ctl(bus, "snapshot", "pat", d["d1"], "--diff", os.path.join(bus.dir, "nowhere")),
              LOCAL_IO, "--diff of a missing directory")
    r = ctl(bus, "snapshot", "pat", d["d1"], "--diff", d["junk"])
    expect_rc(r, INVALID_ARGUMENT, "--diff of a file that is no snapshot state")
    assert "is not the state file of a snapshot" in r.err, r
    expect_rc(ctl(bus, "snapshot", "pat", d["d1"], "--diff", d["full"]), LOCAL_IO,
              "--diff of a directory without a snapshot")
    assert os.listdir(d["d1"]) == [], os.listdir(d["d1"])

    r = ctl(bus, "snapshot", "pat", d["full"], "--track-changes")
    expect_rc(r, OK, "snapshot --track-changes")
    assert r.out == state_id(d["full"]) + "\n", r
    r = ctl(bus, "snapshot", "pat", d["d1"], "--diff", d["full"])
    expect_rc(r, OK, "snapshot --diff")
    assert r.out == state_id(d["d1"]) + "\n" and r.out != state_id(d["full"]) + "\n", r
    r = ctl(bus, "snapshot", "pat", d["d2"], "--diff", d["full"])
    expect_rc(r, INVALID_ARGUMENT, "snapshot --diff of a snapshot that is not the last")
    assert "its last snapshot, ID " + state_id(d["d1"]) in r.err, r
    assert os.listdir(d["d2"]) == [], "a failed snapshot leaves nothing: %r" % os.listdir(d["d2"])
    before = state_id(d["d1"])
    r = ctl(bus, "snapshot", "pat", d["d1"], "--diff", d["d1"])
    expect_rc(r, USAGE, "a diff into its base's own directory")
    assert "holds the base" in r.err and state_id(d["d1"]) == before, r
    expect_rc(ctl(bus, "snapshot", "pat", d["d2"], "--diff", d["d1"]), OK, "a diff of a diff")
    assert vm_json(bus, "pat")["stats"]["diff-parent"] == state_id(d["d2"])
    full = allocated(os.path.join(d["full"], "memory"))
    for name in ("d1", "d2"):
        diff = allocated(os.path.join(d[name], "memory"))
        assert diff + 256 * 1024 <= full, "%s: %d bytes, the full snapshot %d" % (name, diff, full)
    expect_rc(ctl(bus, "stop", "pat"), OK, "stop")

    expect_rc(ctl(bus, "restore", "pcopy", d["d2"]), INVALID_ARGUMENT, "a diff without layers")
    expect_rc(ctl(bus, "restore", "pcopy", d["d2"], "--layer", d["d1"], "--layer", d["full"]),
              INVALID_ARGUMENT, "layers in the wrong order")
    expect_rc(ctl(bus, "restore", "pcopy", d["d2"], "--layer", os.path.join(bus.dir, "nowhere")),
              LOCAL_IO, "a missing layer")
    # 18 descriptors: more than the bus takes in one message; it hangs up on microvmctl.
    r = ctl(bus, "restore", "pcopy", d["d2"], *(["--layer", d["full"]] * 8))
    assert r.rc != OK and "through microvmd's socket (--socket)" in r.err, r
    expect_rc(ctl(bus, "restore", "pcopy", d["d2"], "--layer", d["full"], "--layer", d["d1"],
                  "--resume", "--track-changes"), OK, "restore --layer --layer --track-changes")
    s = vm_json(bus, "pcopy")
    assert s["state"] == "running", s
    assert s["config"]["layers"] == 2 and s["config"]["track-changes"] is True, s
    assert s["stats"]["diff-parent"] == state_id(d["d2"]), s
    wait_console(bus, "pcopy", "COUNTER")
    assert not any("FAIL" in line for line in vm_json(bus, "pcopy")["console"])
    for name in ("pat", "pcopy"):
        ctl(bus, "stop", name)
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)


def test_lazy(t, bus):
    """restore --lazy, working-set and restore --prefetch: a pattern guest's snapshot restored
    lazily counts on with every page right; its working set is written beside the snapshot
    (nothing else left there) and read back by --prefetch; the refusals are microvmctl's own
    (no working-set file, a set beside another snapshot) or the daemon's (a VM not restored
    lazily, --lazy with --copy-memory).
    Without the daemon's lazy-restore capability, --lazy fails (exit 1) and the rest is skipped."""
    info = ctl(bus, "info", "--json").json()
    expect_rc(ctl(bus, "create", "lz", "--kernel", TESTGUEST, "--cmdline",
                  "mode=pattern pages=64 base_mib=8 every=20 delay=2000", "--memory", "16",
                  "--set", "debug-exit=true", "--start"), OK, "create a pattern guest")
    wait_console(bus, "lz", "COUNTER")
    d = os.path.join(bus.dir, "lazy-snap")
    os.mkdir(d)
    expect_rc(ctl(bus, "snapshot", "lz", d), OK, "snapshot")
    expect_rc(ctl(bus, "stop", "lz"), OK, "stop")
    expect_rc(ctl(bus, "restore", "lzc", d, "--lazy", "--copy-memory"), INVALID_ARGUMENT,
              "--lazy --copy-memory")
    r = ctl(bus, "restore", "lzp", d, "--prefetch")
    expect_rc(r, LOCAL_IO, "--prefetch without a working-set file")
    assert "working-set" in r.err, r
    if "lazy-restore" not in info["capabilities"]:
        expect_rc(ctl(bus, "restore", "lz1", d, "--lazy"), FAILED, "--lazy without userfaultfd")
        expect_rc(ctl(bus, "delete", "lz"), OK, "delete lz")
        return "SKIP daemon without lazy-restore"
    expect_rc(ctl(bus, "restore", "plain", d, "--resume"), OK, "restore")
    expect_rc(ctl(bus, "working-set", "plain", d), FAILED, "working-set of a VM not lazy")
    assert sorted(os.listdir(d)) == ["memory", "state"], os.listdir(d)
    expect_rc(ctl(bus, "restore", "lz1", d, "--lazy", "--resume"), OK, "restore --lazy")
    wait_console(bus, "lz1", "COUNTER")
    s = vm_json(bus, "lz1")
    assert s["config"]["lazy"] is True, s
    assert 0 < s["stats"]["lazy-pages-read"] <= s["stats"]["lazy-pages-total"], s["stats"]
    expect_rc(ctl(bus, "working-set", "lz1", d), OK, "working-set")
    assert sorted(os.listdir(d)) == ["memory", "state", "working-set"], os.listdir(d)
    with open(os.path.join(d, "working-set"), "rb") as f:
        assert f.read(8) == b"MVMWSET\0"
    assert os.stat(os.path.join(d, "working-set")).st_mode & 0o777 == 0o600
    # Another snapshot's directory: its ID is not the set's, and nothing is left there.
    d2 = os.path.join(bus.dir, "lazy-snap2")
    os.mkdir(d2)
    expect_rc(ctl(bus, "snapshot", "lz1", d2), OK, "snapshot of the lazy VM")
    r = ctl(bus, "working-set", "lz1", d2)
    expect_rc(r, INVALID_ARGUMENT, "working-set beside another snapshot")
    assert "not restored from the snapshot" in r.err, r
    assert sorted(os.listdir(d2)) == ["memory", "state"], os.listdir(d2)
    expect_rc(ctl(bus, "restore", "lz2", d, "--prefetch", "--resume"), OK, "restore --prefetch")
    s = vm_json(bus, "lz2")
    assert s["state"] == "running" and s["config"]["lazy"] is True, s
    wait_console(bus, "lz2", "COUNTER")
    for name in ("lz", "plain", "lz1", "lz2"):
        assert not any("FAIL" in line for line in vm_json(bus, name)["console"]), name
        ctl(bus, "stop", name)
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)


def start_polkit_mock(bus):
    """python-dbusmock's polkitd on the test bus, saying yes to every microvmd action; None
    when python-dbusmock is not installed (for Debian's python3, which a python3 earlier in
    PATH, ours, may not be)."""
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import dbusmock"], capture_output=True).returncode != 0:
        return None
    mock = subprocess.Popen([python, "-m", "dbusmock", "--session", "--template", "polkitd"],
                            env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS=bus.address),
                            stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)
    actions = ["org.microvmd.vm." + a for a in ("create", "manage", "console", "snapshot")]
    deadline = time.monotonic() + 30
    while subprocess.run(["gdbus", "call", "--address", bus.address, "-d",
                          "org.freedesktop.PolicyKit1", "-o",
                          "/org/freedesktop/PolicyKit1/Authority", "-m",
                          "org.freedesktop.DBus.Mock.SetAllowed", str(actions)],
                         capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the polkit mock did not come up"
        time.sleep(0.1)
    return mock


def test_snapshot_unprivileged(t, bus):
    """nobody, allowed by polkit, snapshots its own VM into its own directory and restores it:
    microvmctl creates the files as nobody and the daemon only writes into them. A directory
    nobody cannot write stays empty."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return "SKIP needs root and setpriv"
    for d in (os.path.dirname(bus.dir), bus.dir):
        os.chmod(d, 0o755)
    mock = start_polkit_mock(bus)
    if mock is None:
        return "SKIP python-dbusmock is not installed"
    try:
        with reachable.ReachableDir("microvmctl-nobody-") as copies:
            microvmctl = copies.copy(MICROVMCTL, executable=True)
            snapshot_as_nobody(bus, microvmctl, copies.copy(TESTGUEST), copies.path)
    finally:
        mock.terminate()
        mock.wait(30)


def snapshot_as_nobody(bus, microvmctl, kernel, cwd):
    run = nobody_runner(bus, microvmctl, cwd)
    mine = os.path.join(cwd, "snap")
    os.mkdir(mine)
    os.chown(mine, 65534, 65534)
    roots = os.path.join(bus.dir, "root-snap")
    os.mkdir(roots, 0o755)
    expect_rc(run("create", "mine", "--kernel", kernel, "--cmdline", "mode=echo", "--memory",
                  "16", "--set", "debug-exit=true", "--start"), OK, "create --start as nobody")
    wait_console(bus, "mine", "READY")
    r = run("snapshot", "mine", roots)
    expect_rc(r, LOCAL_IO, "snapshot into root's directory as nobody")
    assert os.listdir(roots) == [], os.listdir(roots)
    expect_rc(run("snapshot", "mine", mine), OK, "snapshot as nobody")
    assert sorted(os.listdir(mine)) == ["memory", "state"], os.listdir(mine)
    for name in ("memory", "state"):
        st = os.stat(os.path.join(mine, name))
        assert st.st_uid == 65534 and st.st_mode & 0o777 == 0o600 and st.st_size > 0, st
    expect_rc(run("restore", "copy", mine, "--resume"), OK, "restore as nobody")
    s = vm_json(bus, "copy")
    assert s["state"] == "running" and s["memory-mib"] == 16, s
    r = run("console", "copy", "--wait-idle=1500", input="zz-nobody\nquit\n")
    assert "zz-nobody" in r.out and "TESTGUEST-DONE echo PASS" in r.out, r
    # A diff and its chain: any caller may pass the layers.
    base, top = os.path.join(cwd, "base"), os.path.join(cwd, "top")
    for d in (base, top):
        os.mkdir(d)
        os.chown(d, 65534, 65534)
    expect_rc(run("snapshot", "mine", base, "--track-changes"), OK, "snapshot --track-changes")
    expect_rc(run("snapshot", "mine", top, "--diff", base), OK, "snapshot --diff as nobody")
    expect_rc(run("restore", "chain", top, "--layer", base, "--resume"), OK,
              "restore a chain as nobody")
    s = vm_json(bus, "chain")
    assert s["state"] == "running" and s["config"]["layers"] == 1, s
    for name in ("mine", "copy", "chain"):
        ctl(bus, "stop", name)
        expect_rc(ctl(bus, "delete", name), OK, "delete " + name)


class Events:
    """A running `microvmctl events`; lines are read from the pipe unbuffered, so that select()
    never waits for a line already read ahead."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env_c())
        self.buf = b""
        self.lines = []

    def until(self, want, timeout=GUEST_TIMEOUT):
        """Reads lines until one satisfies @want; returns the lines read by this call."""
        start = len(self.lines)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.lines.append(line.decode())
                if want(self.lines[-1]):
                    return self.lines[start:]
            left = deadline - time.monotonic()
            assert left > 0, "event not seen; got %r" % self.lines[start:]
            if select.select([self.proc.stdout], [], [], left)[0]:
                data = os.read(self.proc.stdout.fileno(), 65536)
                assert data, "events ended; got %r" % self.lines[start:]
                self.buf += data

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(10)
        self.proc.stdout.close()
        return rc


def event_is(event, name=None, **properties):
    """A predicate on JSON event lines."""
    def want(line):
        e = json.loads(line)
        if e["event"] != event or (name and e["name"] != name):
            return False
        return all(e.get("properties", {}).get(k) == v for k, v in properties.items())
    return want


def test_events(t, bus):
    kernel = TESTGUEST or MICROVMCTL
    expect_rc(ctl(bus, "create", "pre", "--kernel", kernel), OK, "create")
    cmd = [MICROVMCTL, "--address=" + bus.address, "events", "--json"]
    text_cmd = [MICROVMCTL, "events", "--address=" + bus.address]
    procs = [Events(c) for c in (cmd, text_cmd)]
    try:
        for p in procs:  # subscribed once the existing VM is reported
            p.until(lambda line: "present" in line)
        expect_rc(ctl(bus, "create", "ev1", "--kernel", kernel, "--memory", "32"), OK, "create")
        expect_rc(ctl(bus, "delete", "ev1"), OK, "delete")
        expect_rc(ctl(bus, "delete", "pre"), OK, "delete")
        events = [json.loads(line) for line in procs[0].until(event_is("removed", "pre"))]
        added = [e for e in events if e["event"] == "added"]
        assert len(added) == 1 and added[0]["name"] == "ev1", events
        assert added[0]["properties"]["State"] == "created", added
        assert added[0]["properties"]["MemoryMiB"] == 32, added
        assert added[0]["path"] == "/org/microvmd/MicroVM1/vm/ev1", added
        removed = [e["name"] for e in events if e["event"] == "removed"]
        assert removed == ["ev1", "pre"], events
        text = procs[1].until(lambda line: line.startswith("removed pre"))
        assert any(re.match(r"^added ev1 .*\bState=created\b", line) for line in text), text
        if have_kvm():
            expect_rc(ctl(bus, "create", "ev2", "--kernel", TESTGUEST, "--cmdline", "mode=echo",
                          "--memory", "16", "--start"), OK, "create --start")
            procs[0].until(event_is("changed", "ev2", State="running"))
            expect_rc(ctl(bus, "stop", "ev2"), OK, "stop")
            procs[0].until(event_is("changed", "ev2", State="stopped"))
            procs[1].until(lambda line: re.match(r"^changed ev2 .*State=stopped", line))
            expect_rc(ctl(bus, "delete", "ev2"), OK, "delete")
    finally:
        for p in procs:
            assert p.stop() == 0, "events does not exit 0 on SIGINT"


def test_completion(t, bus):
    kernel = TESTGUEST or MICROVMCTL
    for name in ("alpha", "beta"):
        expect_rc(ctl(bus, "create", name, "--kernel", kernel), OK, "create")
    bindir = os.path.join(bus.dir, "bin")
    os.makedirs(bindir, exist_ok=True)
    link = os.path.join(bindir, "microvmctl")
    if not os.path.exists(link):
        os.symlink(MICROVMCTL, link)

    def complete(*words):
        """Completes the last of @words, as bash does on a command line with them."""
        line = " ".join(words)
        script = ('source "$COMPLETION"; COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; '
                  '_microvmctl; printf "%s\\n" "${COMPREPLY[@]}"')
        r = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True,
                           text=True, env=env_c(COMPLETION=os.environ["MVMD_COMPLETION"],
                                                PATH=bindir + ":" + os.environ["PATH"]))
        assert r.returncode == 0, r.stderr
        return sorted(x for x in r.stdout.split("\n") if x)

    assert complete("microvmctl", "sta") == ["start", "stats", "status"]
    assert complete("microvmctl", "--address", bus.address, "start", "") == ["alpha", "beta"]
    assert complete("microvmctl", "--address=" + bus.address, "console", "a") == ["alpha"]
    assert complete("microvmctl", "start", "--address", bus.address, "") == ["alpha", "beta"]
    assert "--freeze-clock" in complete("microvmctl", "pause", "--f")
    assert complete("microvmctl", "--address", bus.address, "start", "alpha", "") == []
    assert complete("microvmctl", "create", "x", "--on-reboot", "") == ["restart", "stop"]
    assert complete("microvmctl", "create", "x", "--on-reboot=r") == ["restart"]
    assert complete("microvmctl", "stats", "--format=o") == ["openmetrics"]
    assert complete("microvmctl", "stats", "--format", "") == ["json", "openmetrics", "text"]
    assert complete("microvmctl", "create", "x", "--cpu-template", "x86") == ["x86-64-v2",
                                                                             "x86-64-v3"]
    assert complete("microvmctl", "--address", bus.address, "cpu", "") == ["alpha", "beta"]
    assert "--vcpu=" in complete("microvmctl", "cpu", "alpha", "--v")
    assert complete("microvmctl", "--json") == [], "not a global option"
    assert complete("microvmctl", "--socket=/nonexistent", "stop", "") == []
    for name in ("alpha", "beta"):
        expect_rc(ctl(bus, "delete", name), OK, "delete")


def test_socket(t, tmp):
    """--socket: peer to peer with a socket-activated microvmd (systemd-socket-activate)."""
    if not shutil.which("systemd-socket-activate"):
        return "SKIP no systemd-socket-activate"
    bus = TestBus(tmp, "socketbus")
    path = os.path.join(bus.dir, "microvmd.sock")
    activator = subprocess.Popen(["systemd-socket-activate", "-l", path] + bus.daemon_args(),
                                 stdout=sys.stderr, stderr=sys.stderr, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            assert time.monotonic() < deadline and activator.poll() is None, "no socket"
            time.sleep(0.05)
        kernel = TESTGUEST or MICROVMCTL
        r = ctl(None, "--socket", path, "create", "p2p", "--kernel", kernel)
        expect_rc(r, OK, "create over the socket")
        r = ctl(None, "list", "--json", "--socket=" + path)
        expect_rc(r, OK, "list over the socket")
        assert [v["name"] for v in r.json()] == ["p2p"], r
        assert vm_json_socket(path, "p2p")["state"] == "created"
        expect_rc(ctl(None, "--socket", path, "start", "nosuch"), NO_SUCH_VM, "unknown VM")
        # The peer connection has an ObjectManager of its own: events work there too.
        events = Events([MICROVMCTL, "--socket", path, "events", "--json"])
        try:
            events.until(event_is("present", "p2p"))
            expect_rc(ctl(None, "--socket", path, "delete", "p2p"), OK, "delete over the socket")
            events.until(event_is("removed", "p2p"))
        finally:
            assert events.stop() == 0
        # When microvmd goes away, a follower on its socket ends with "no daemon".
        expect_rc(ctl(None, "--socket", path, "create", "last", "--kernel", kernel), OK, "create")
        events = Events([MICROVMCTL, "--socket", path, "events"])
        events.until(lambda line: line.startswith("present last"))
        activator.terminate()  # systemd-socket-activate execs microvmd in its own place
        assert events.proc.wait(30) == NO_DAEMON
        events.proc.stdout.close()
    finally:
        activator.terminate()
        activator.wait(30)
        bus.stop()


def vm_json_socket(path, name):
    r = ctl(None, "--socket", path, "status", name, "--json")
    expect_rc(r, OK, "status over the socket")
    return r.json()


def clear_vms(bus):
    """Removes every VM on the daemon; returns their names. Each case deletes what it creates,
    but one that fails half-way leaves its VMs, and the next cases (which list or complete
    names) would fail for that alone: they start from an empty daemon."""
    if not bus.daemon or bus.daemon.poll() is not None:
        return []
    names = ctl(bus, "list", "--names").out.split()
    for name in names:
        ctl(bus, "stop", name)  # fails unless it runs: fine
        ctl(bus, "delete", name)
    return names


def main():
    tmp = tempfile.mkdtemp(prefix="microvmctl-test-")
    n, failed = 0, 0

    def run(name, fn, *args, needs_kvm=False):
        nonlocal n, failed
        n += 1
        if needs_kvm and not have_kvm():
            print("ok %d - %s # SKIP no usable /dev/kvm or no test guest" % (n, name))
            return
        started = time.monotonic()
        error = None
        try:
            skip = fn(None, *args)
        except Exception:
            error = traceback.format_exc()
        finally:
            # Everything after a crash of the daemon would fail for that reason alone.
            if bus.daemon and bus.daemon.poll() is not None:
                print("Bail out! microvmd died (exit %d) during %s" % (bus.daemon.returncode,
                                                                       name))
                sys.exit(1)
        left = clear_vms(bus) if bus in args else []
        if left and not error:
            error = "the case left VMs behind: %s" % ", ".join(left)
        if error:
            failed += 1
            print("not ok %d - %s" % (n, name))
            for line in error.splitlines():
                print("# " + line)
            return
        extra = " # " + skip if skip else ""
        print("ok %d - %s (%.1f s)%s" % (n, name, time.monotonic() - started, extra))
        sys.stdout.flush()

    bus = TestBus(tmp, "bus")
    try:
        run("usage and exit codes", test_usage)
        run("German translation", test_german)
        run("man pages document every option", test_man_pages)
        run("no daemon", test_no_daemon, bus)
        bus.start_daemon()
        run("info", test_info, bus)
        run("create errors", test_create_errors, bus)
        run("define, list, status, delete", test_define, bus)
        run("rate limits: create and set", test_set, bus)
        run("stats", test_stats, bus)
        run("CPU templates in definitions", test_cpu_template_define, bus)
        run("events", test_events, bus)
        run("unprivileged user", test_unprivileged, bus)
        run("bash completion", test_completion, bus)
        run("lifecycle", test_lifecycle, bus, needs_kvm=True)
        run("stats of a running guest", test_stats_running, bus, needs_kvm=True)
        run("console on a pty", test_console_pty, bus, needs_kvm=True)
        run("console from a pipe", test_console_pipe, bus, needs_kvm=True)
        run("snapshot and restore", test_snapshot, bus, needs_kvm=True)
        run("diff snapshots and restore chains", test_snapshot_diff, bus, needs_kvm=True)
        run("lazy restore and working sets", test_lazy, bus, needs_kvm=True)
        run("snapshot and restore as nobody", test_snapshot_unprivileged, bus, needs_kvm=True)
        run("cpu of a running guest", test_cpu, bus, needs_kvm=True)
        run("IncompatibleCPU from start", test_cpu_incompatible, bus, needs_kvm=True)
        run("peer-to-peer socket", test_socket, tmp)
        if bus.daemon.poll() is not None:
            failed += 1
            n += 1
            print("not ok %d - microvmd died (exit %d)" % (n, bus.daemon.returncode))
    finally:
        bus.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
