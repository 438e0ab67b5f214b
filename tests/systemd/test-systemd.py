#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""microvmd as installed, under a real systemd (PID 1) with the real system dbus-daemon,
polkitd, systemd-machined and journald: what tests/systemd/run-suite runs inside
`run-with-kvm --systemd`, as root, after copying the package onto the (throwaway) root.

Prints TAP. MVM_SYSTEMD_CHECKS=N runs only the first N checks; MVM_SYSTEMD_ONLY=3,9 only those
(each check brings the daemon to the state it needs). MVM_TESTGUEST is the test guest
(testguest.elf), readable by everyone. Only the standard library and the installed tools
(systemctl, busctl, gdbus, machinectl, journalctl, microvmctl) are used."""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

NAME = "org.microvmd.MicroVM1"
PATH = "/org/microvmd/MicroVM1"
MANAGER = NAME + ".Manager"
VM_IFACE = NAME + ".VM"
NOT_AUTHORIZED = NAME + ".Error.NotAuthorized"
UNIT = "microvmd.service"
SOCKET = "/run/microvmd/io.socket"
MICROVMCTL = "/usr/bin/microvmctl"
EXIT_NOT_AUTHORIZED = 8  # microvmctl's exit code for NotAuthorized (microvmctl(1))
TESTGUEST = os.environ.get("MVM_TESTGUEST", "/var/lib/microvmd-test/testguest.elf")
# Everything here runs nested under QEMU TCG: guests and tools are ~10x slower than native.
GUEST_WAIT = 120
USERS = ("mvmuser1", "mvmuser2")
RULES = "/etc/polkit-1/rules.d/50-microvmd-test.rules"
WATCHDOG_DROPIN = "/run/systemd/system/microvmd.service.d/50-test-watchdog.conf"
SUMMARY = re.compile(r"^(\d+) running, (\d+) paused, (\d+) defined$")


class CheckFailed(Exception):
    pass


class CheckTimeout(Exception):
    pass


def diag(text):
    for line in str(text).rstrip("\n").split("\n"):
        print(f"# {line}", flush=True)


def run(argv, timeout=60, check=True, user=None, stdin=subprocess.DEVNULL, pass_fds=()):
    """Runs @argv (as @user through runuser); returns the CompletedProcess. check: a non-zero
    exit raises CheckFailed with the output."""
    if user:
        argv = ["runuser", "-u", user, "--"] + list(argv)
    try:
        proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout, pass_fds=pass_fds)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"{' '.join(argv)}: no end within {timeout} s "
                          f"(stdout {e.stdout!r}, stderr {e.stderr!r})")
    if check and proc.returncode != 0:
        raise CheckFailed(f"{' '.join(argv)}: exit {proc.returncode}\nstdout: {proc.stdout}"
                          f"\nstderr: {proc.stderr}")
    return proc


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def wait_for(predicate, timeout=GUEST_WAIT, what="a condition", interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- systemd -----------------------------------------------------------------------------

def show(unit, *props):
    out = run(["systemctl", "show", unit] + [f"--property={p}" for p in props]).stdout
    values = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def prop(unit, name):
    return show(unit, name).get(name, "")


def is_active(unit=UNIT):
    return run(["systemctl", "is-active", unit], check=False).stdout.strip()


def main_pid():
    return int(prop(UNIT, "MainPID") or 0)


def start_daemon():
    run(["systemctl", "start", UNIT], timeout=120)
    wait_for(lambda: is_active() == "active", 60, "microvmd active")
    wait_for(bus_owned, 60, "org.microvmd.MicroVM1 on the system bus")


def stop_daemon():
    run(["systemctl", "stop", UNIT], timeout=120)
    wait_for(lambda: is_active() in ("inactive", "failed"), 60, "microvmd stopped")
    run(["systemctl", "reset-failed", UNIT], check=False)


def bus_owned():
    proc = run(["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "NameHasOwner", "s", NAME], check=False)
    return proc.stdout.strip() == "b true"


def journal(*args, since=None):
    argv = ["journalctl", "--no-pager", "-q"] + list(args)
    if since is not None:
        argv.append(f"--since=@{since:.6f}")
    return run(argv, timeout=60, check=False).stdout


def now():
    # journald's clock: a moment ago, so nothing logged at this very instant is missed.
    return time.time() - 0.01


# ---- microvmd over the bus ---------------------------------------------------------------

def escape_path(name):
    """g_dbus_escape_object_path()."""
    return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)


def vm_path(name):
    return f"{PATH}/vm/{escape_path(name)}"


def busctl(*args, user=None, timeout=60, pass_fds=()):
    return run(["busctl", "--system"] + list(args), user=user, check=False, timeout=timeout,
               pass_fds=pass_fds)


def call_vm(name, method, *sig_args, user=None):
    return busctl("call", NAME, vm_path(name), VM_IFACE, method, *sig_args, user=user)


def call_manager(method, *sig_args, user=None):
    return busctl("call", NAME, PATH, MANAGER, method, *sig_args, user=user)


def gdbus_vm(name, method, *args, user=None):
    """gdbus call: its error output names the D-Bus error."""
    return run(["gdbus", "call", "--system", "-d", NAME, "-o", vm_path(name), "-m",
                f"{VM_IFACE}.{method}"] + list(args), user=user, check=False)


def list_vms():
    """name → state, from Manager.ListVMs."""
    proc = busctl("--json=short", "call", NAME, PATH, MANAGER, "ListVMs")
    expect(proc.returncode == 0, f"ListVMs failed: {proc.stderr}")
    return {entry[0]: entry[2] for entry in json.loads(proc.stdout)["data"][0]}


def vm_state(name):
    return list_vms().get(name)


def wait_state(name, states, timeout=GUEST_WAIT):
    if isinstance(states, str):
        states = (states,)
    return wait_for(lambda: vm_state(name) in states, timeout, f"VM {name} in {states}")


def exit_reason(name):
    proc = busctl("--json=short", "call", NAME, vm_path(name), VM_IFACE, "GetExitReason")
    expect(proc.returncode == 0, f"GetExitReason {name}: {proc.stderr}")
    return json.loads(proc.stdout)["data"][0]


def uptime_us(name):
    """GetStats' uptime-us: time since the VM's last start."""
    proc = busctl("--json=short", "call", NAME, vm_path(name), VM_IFACE, "GetStats")
    expect(proc.returncode == 0, f"GetStats {name}: {proc.stderr}")
    return json.loads(proc.stdout)["data"][0]["uptime-us"]["data"]


def ctl(*args, user=None, timeout=120, check=True):
    return run([MICROVMCTL] + list(args), user=user, timeout=timeout, check=check)


def create(name, cmdline="mode=idle", memory=16, start=True, extra=(), user=None, check=True):
    args = ["create", name, f"--kernel={TESTGUEST}", f"--cmdline={cmdline}",
            f"--memory={memory}"] + list(extra)
    if start:
        args.append("--start")
    return ctl(*args, user=user, check=check)


def remove_all_vms():
    """Stops and deletes every VM (and any stored definition), as root."""
    if is_active() != "active":
        return
    for name, state in list_vms().items():
        if state in ("running", "paused"):
            ctl("stop", name, check=False)
            wait_state(name, ("stopped", "crashed"))
        ctl("delete", name, check=False)
    expect(list_vms() == {}, f"VMs left after deleting them all: {list_vms()}")


def console_log(name):
    try:
        with open(f"/run/microvmd/vm/{name}/console.log", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_console(name, text, timeout=GUEST_WAIT):
    return wait_for(lambda: text in console_log(name), timeout,
                    f"'{text}' on {name}'s console")


def fresh_daemon():
    """microvmd running with no VM."""
    if is_active() != "active":
        start_daemon()
    remove_all_vms()


# ---- machined -----------------------------------------------------------------------------

def machines():
    """name → class, from `machinectl list`."""
    out = run(["machinectl", "list", "--no-legend", "--no-pager"]).stdout
    result = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            result[fields[0]] = fields[1]
    return result


# ---- the checks ---------------------------------------------------------------------------

INSTALLED = [
    "/usr/libexec/microvmd",
    "/usr/bin/microvmctl",
    "/usr/lib/systemd/system/microvmd.service",
    "/usr/lib/systemd/system/microvmd.socket",
    "/usr/share/dbus-1/system.d/org.microvmd.MicroVM1.conf",
    "/usr/share/dbus-1/system-services/org.microvmd.MicroVM1.service",
    "/usr/share/polkit-1/actions/org.microvmd.MicroVM1.policy",
    "/usr/lib/tmpfiles.d/microvmd.conf",
]


def check_installed():
    """package installed: unit files, bus policy, activation file, polkit policy; the units
    enabled as a package's postinst does, the socket started"""
    for path in INSTALLED:
        expect(os.path.isfile(path), f"{path} is not installed")
    expect(os.path.isfile(TESTGUEST), f"the test guest {TESTGUEST} is missing")
    info = show(UNIT, "LoadState", "FragmentPath", "Type", "BusName")
    # FragmentPath: /lib/systemd/system/… on a merged-/usr system, the same file.
    info["FragmentPath"] = os.path.realpath(info.get("FragmentPath", ""))
    expect(info == {"LoadState": "loaded", "Type": "notify", "BusName": NAME,
                    "FragmentPath": "/usr/lib/systemd/system/microvmd.service"},
           f"systemd sees {info}")
    # systemd-tmpfiles --create (run-suite) made the directories the snippet names.
    st = os.stat("/var/lib/microvmd")
    expect(st.st_mode & 0o777 == 0o700, f"/var/lib/microvmd has mode {oct(st.st_mode)}")
    # The system bus knows the name (activation file) and the policy lets root call it.
    activatable = run(["busctl", "--system", "list", "--activatable", "--no-legend"]).stdout
    expect(re.search(rf"^{re.escape(NAME)}\s", activatable, re.M),
           f"{NAME} is not activatable on the system bus:\n{activatable}")
    # polkitd loaded the actions.
    actions = run(["pkaction"], timeout=60).stdout.split()
    for action in ("create", "manage", "console", "snapshot", "read-others", "manage-others"):
        expect(f"org.microvmd.vm.{action}" in actions, f"polkitd lacks org.microvmd.vm.{action}")
    # As a package's postinst: enable (the bus activation alias), then the socket now.
    run(["systemctl", "enable", UNIT])
    alias = "/etc/systemd/system/dbus-org.microvmd.MicroVM1.service"
    expect(os.path.islink(alias), f"{alias}: no alias after systemctl enable")
    run(["systemctl", "enable", "--now", "microvmd.socket"])
    expect(is_active("microvmd.socket") == "active", "microvmd.socket is not active")
    expect(os.path.exists(SOCKET), f"{SOCKET} does not exist")
    expect(is_active() != "active", "microvmd.service started by enabling it")


def check_socket_activation():
    """socket activation: the first client on /run/microvmd/io.socket starts microvmd"""
    if is_active() == "active":
        stop_daemon()
    run(["systemctl", "start", "microvmd.socket"])
    expect(is_active() == "inactive", f"microvmd is {is_active()} before any client")
    before = int(prop("microvmd.socket", "NAccepted") or 0)
    since = now()
    proc = ctl(f"--socket={SOCKET}", "list", timeout=120)
    diag(f"microvmctl --socket list: {proc.stdout.strip() or '(no VMs)'}")
    wait_for(lambda: is_active() == "active", 60, "microvmd active")
    expect(main_pid() > 0, "no MainPID")
    triggered = prop(UNIT, "TriggeredBy")
    expect("microvmd.socket" in triggered, f"TriggeredBy={triggered}")
    log = journal("-u", "microvmd.socket", "-u", UNIT, since=since)
    expect("Started" in log, f"systemd logged no start:\n{log}")
    expect(int(prop("microvmd.socket", "NAccepted") or 0) == before,
           "the socket is Accept=no: systemd itself accepted nothing")
    stop_daemon()
    expect(is_active("microvmd.socket") == "active", "the socket went with the service")


def check_bus_activation():
    """bus activation: a call to org.microvmd.MicroVM1 starts microvmd through systemd"""
    if is_active() == "active":
        stop_daemon()
    expect(not bus_owned(), "the name is owned with the service stopped")
    since = now()
    proc = call_manager("ListVMs")
    expect(proc.returncode == 0, f"ListVMs: {proc.stderr}")
    diag(f"ListVMs: {proc.stdout.strip()}")
    expect(is_active() == "active", f"microvmd is {is_active()} after the call")
    log = journal("-u", "dbus.service", since=since)
    expect(re.search(r"Activating via systemd: service name='org\.microvmd\.MicroVM1' "
                     r"unit='dbus-org\.microvmd\.MicroVM1\.service'", log),
           f"dbus-daemon did not activate through systemd:\n{log}")
    expect("Successfully activated service 'org.microvmd.MicroVM1'" in log,
           f"dbus-daemon saw no activation succeed:\n{log}")
    diag("dbus: " + " | ".join(line for line in log.splitlines() if "microvmd" in line))


def status_text():
    return prop(UNIT, "StatusText")


def wait_status(running, paused, defined):
    want = f"{running} running, {paused} paused, {defined} defined"
    wait_for(lambda: status_text() == want, 60, f"StatusText '{want}' (is '{status_text()}')")
    return want


def check_notify_status():
    """Type=notify readiness and STATUS=: systemctl show and status have the daemon's summary"""
    fresh_daemon()
    info = show(UNIT, "Type", "NotifyAccess", "ActiveState", "SubState", "StatusText")
    expect(info["Type"] == "notify" and info["NotifyAccess"] == "main", f"{info}")
    expect(info["ActiveState"] == "active" and info["SubState"] == "running", f"{info}")
    expect(SUMMARY.match(info["StatusText"]), f"StatusText '{info['StatusText']}'")
    wait_status(0, 0, 0)
    create("status1")
    want = wait_status(1, 0, 1)
    out = run(["systemctl", "status", "--no-pager", UNIT], check=False).stdout
    expect(f'Status: "{want}"' in out, f"systemctl status lacks the status:\n{out}")
    ctl("pause", "status1")
    wait_status(0, 1, 1)
    create("status2", start=False)
    wait_status(0, 1, 2)
    remove_all_vms()
    wait_status(0, 0, 0)


def check_machined():
    """machined: each running VM a machine of class vm in a scope of its own; poweroff, reboot
    and terminate reach only their VM"""
    fresh_daemon()
    pid = main_pid()
    # A's guest answers Ctrl-Alt-Del (a graceful shutdown request) by exiting.
    create("mach-a", "mode=ctrlaltdel action=exit", extra=["--set=debug-exit=true"])
    for name in ("mach-b", "mach-c", "mach-d"):
        create(name)
    names = ["mach-a", "mach-b", "mach-c", "mach-d"]
    for name in names:
        wait_state(name, "running")
    wait_console("mach-a", "WAITING for ctrl-alt-del")
    try:
        wait_for(lambda: all(n in machines() for n in names), 60, "all four in machinectl list")
    finally:
        diag("machinectl list:\n" + run(["machinectl", "list", "--no-pager"], check=False).stdout)
        diag(journal("-u", UNIT, "-n", "15"))
    listed = machines()
    expect(all(listed[n] == "vm" for n in names), f"classes: {listed}")
    for name in names:
        info = {}
        for line in run(["machinectl", "show", name, "-p", "Class", "-p", "Unit",
                         "-p", "Service"]).stdout.splitlines():
            key, _, value = line.partition("=")
            info[key] = value
        scope = "machine-" + run(["systemd-escape", name]).stdout.strip() + ".scope"
        expect(info == {"Class": "vm", "Unit": scope, "Service": "microvmd"},
               f"machinectl show {name}: {info}")

    run(["machinectl", "poweroff", "mach-a"])
    wait_state("mach-a", ("stopped",))
    expect(exit_reason("mach-a").startswith("debug-exit"),
           f"mach-a ended by '{exit_reason('mach-a')}', not by its guest")
    expect("CTRL-ALT-DEL" in console_log("mach-a"), "mach-a's guest saw no Ctrl-Alt-Del")
    wait_for(lambda: "mach-a" not in machines(), 60, "mach-a gone from machinectl list")
    states = list_vms()
    expect(all(states[n] == "running" for n in names[1:]), f"after poweroff: {states}")

    # A reboot is a hard reset (Stop, then Start): a guest that has been up for less time
    # than has passed since we asked was started again.
    asked = time.monotonic()
    run(["machinectl", "reboot", "mach-b"])
    wait_for(lambda: vm_state("mach-b") == "running" and "mach-b" in machines()
             and uptime_us("mach-b") < (time.monotonic() - asked) * 1e6, 60,
             "mach-b running again since the reboot, and listed")
    states = list_vms()
    expect(states["mach-c"] == "running" and states["mach-d"] == "running",
           f"after reboot: {states}")

    run(["machinectl", "terminate", "mach-c"])
    wait_state("mach-c", ("stopped",))
    wait_for(lambda: "mach-c" not in machines(), 60, "mach-c gone from machinectl list")
    states = list_vms()
    expect(states["mach-b"] == "running" and states["mach-d"] == "running",
           f"after terminate: {states}")
    listed = machines()
    expect(set(n for n in listed if n.startswith("mach-")) == {"mach-b", "mach-d"},
           f"machinectl list: {listed}")
    expect(is_active() == "active" and main_pid() == pid,
           f"microvmd is {is_active()}, MainPID {main_pid()} (was {pid})")
    remove_all_vms()
    wait_for(lambda: not any(n.startswith("mach-") for n in machines()), 60,
             "no machine left after the VMs stopped")


def journal_entries(*matches):
    out = journal("-u", UNIT, "-o", "json", *matches)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def check_journal():
    """journal: a VM's lifecycle entries carry MICROVM_VM=<name>; a chatty guest's console does
    not reach the journal"""
    fresh_daemon()
    for name in ("alpha", "beta"):
        create(name)
        wait_state(name, "running")
        ctl("stop", name)
        wait_state(name, "stopped")
    entries = journal_entries("MICROVM_VM=alpha")
    messages = [e.get("MESSAGE", "") for e in entries]
    diag("MICROVM_VM=alpha: " + " | ".join(messages[-6:]))
    expect(entries, "no journal entries with MICROVM_VM=alpha")
    expect(all(e.get("MICROVM_VM") == "alpha" for e in entries),
           f"entries of others: {[e.get('MICROVM_VM') for e in entries]}")
    expect(all(m.startswith("alpha: ") for m in messages), f"messages: {messages}")
    for text in ("alpha: starting", "→ running", "alpha: stopping (forced)", "→ stopped"):
        expect(any(text in m for m in messages), f"no '{text}' among {messages}")
    expect(all(e.get("_SYSTEMD_UNIT") == UNIT for e in entries), "entries of another unit")
    beta = journal_entries("MICROVM_VM=beta")
    expect(beta and all(e.get("MICROVM_VM") == "beta" for e in beta), "beta's entries")

    since = now()
    create("chatty", "mode=pattern pages=1 every=1 delay=10", memory=32)
    wait_for(lambda: console_log("chatty").count("COUNTER") >= 500, GUEST_WAIT,
             "500 COUNTER lines on chatty's console")
    ctl("stop", "chatty")
    lines = console_log("chatty").count("\n")
    log = journal("-u", UNIT, "-o", "cat", since=since)
    diag(f"chatty printed {lines} console lines; microvmd logged "
         f"{len(log.splitlines())} journal lines meanwhile")
    expect("COUNTER" not in log and "PATTERN" not in log,
           f"console lines in the journal:\n{log[:2000]}")
    expect(len(log.splitlines()) < 20, f"the journal got {len(log.splitlines())} lines:\n{log}")
    remove_all_vms()


def check_reload():
    """systemctl reload with guests running: same MainPID, guests running, stored
    definitions read again"""
    fresh_daemon()
    create("rel-a")
    create("rel-b")
    ctl("create", "rel-stored", f"--kernel={TESTGUEST}", "--cmdline=mode=idle", "--memory=16",
        "--persist")
    wait_state("rel-a", "running")
    wait_state("rel-b", "running")
    pid = main_pid()
    stored = "/var/lib/microvmd/vms/rel-stored.vm"
    expect(os.path.exists(stored), f"{stored} not written")
    os.unlink(stored)  # a stored definition whose file is gone goes at the reload
    since = now()
    run(["systemctl", "reload", UNIT], timeout=120)
    wait_for(lambda: "rel-stored" not in list_vms(), 60, "rel-stored gone after the reload")
    expect(main_pid() == pid, f"MainPID {main_pid()}, was {pid}")
    wait_for(lambda: prop(UNIT, "ActiveState") == "active", 60, "active again")
    states = list_vms()
    expect(states == {"rel-a": "running", "rel-b": "running"}, f"after the reload: {states}")
    log = journal("-u", UNIT, "-o", "cat", since=since)
    expect("Reload" in log, f"systemd logged no reload:\n{log}")
    remove_all_vms()


def write_rules():
    os.makedirs(os.path.dirname(RULES), exist_ok=True)
    with open(RULES, "w") as f:
        f.write("""// microvmd's systemd suite: mvmuser1 may create and manage its own VMs, no more.
polkit.addRule(function(action, subject) {
    if (subject.user == "mvmuser1" &&
        (action.id == "org.microvmd.vm.create" || action.id == "org.microvmd.vm.manage"))
        return polkit.Result.YES;
});
""")


def make_users():
    for user in USERS:
        if run(["id", user], check=False).returncode != 0:
            run(["useradd", "--create-home", "--shell", "/bin/bash", user])


def expect_yes(proc, what):
    expect(proc.returncode == 0, f"{what}: refused (exit {proc.returncode}): {proc.stderr}")


def expect_no(proc, what, action=None):
    """Refused as NotAuthorized: microvmctl's exit code 8, busctl's message from auth.c (which
    names the polkit action, or @action: the words of another refusal), or gdbus's error
    name."""
    text = proc.stderr
    ok = proc.returncode != 0 and (
        proc.returncode == EXIT_NOT_AUTHORIZED or "not authorized to call" in text
        or NOT_AUTHORIZED in text or (action is not None and action in text))
    if ok and action:
        ok = action in text
    expect(ok, f"{what}: expected NotAuthorized{' for ' + action if action else ''}, got exit "
               f"{proc.returncode}: {proc.stdout} {text}")


def check_polkit():
    """polkit for real: a rules file lets mvmuser1 create and manage its VMs, mvmuser2 nothing;
    every method answers yes or NotAuthorized accordingly (microvmctl, busctl and gdbus)"""
    fresh_daemon()
    make_users()
    write_rules()
    run(["systemctl", "restart", "polkit.service"], timeout=120)
    create("rootvm")
    wait_state("rootvm", "running")
    u1, u2 = USERS
    results = []

    def yes(proc, what):
        expect_yes(proc, what)
        results.append(f"yes {what}")

    def no(proc, what, action=None):
        expect_no(proc, what, action)
        results.append(f"no  {what}")

    try:
        # mvmuser1 through microvmctl, on its own VM: create and manage are granted.
        yes(create("u1vm", start=False, user=u1), "u1 microvmctl create")
        yes(ctl("start", "u1vm", user=u1), "u1 microvmctl start")
        wait_state("u1vm", "running")
        yes(ctl("pause", "u1vm", user=u1), "u1 microvmctl pause")
        wait_state("u1vm", "paused")
        yes(ctl("resume", "u1vm", user=u1), "u1 microvmctl resume")
        wait_state("u1vm", "running")
        yes(ctl("list", user=u1), "u1 microvmctl list")
        yes(ctl("status", "u1vm", user=u1), "u1 microvmctl status (own VM: never asked)")
        # console and snapshot are not granted.
        no(ctl("console", "u1vm", user=u1, timeout=60, check=False), "u1 microvmctl console",
           None)
        snapdir = f"/home/{u1}/snap"
        run(["mkdir", "-p", snapdir], user=u1)
        no(ctl("snapshot", "u1vm", snapdir, user=u1, check=False), "u1 microvmctl snapshot")
        expect(os.listdir(snapdir) in ([], ["state", "memory"], ["memory", "state"]),
               f"{snapdir}: {os.listdir(snapdir)}")
        # Root's VM: the -others actions, not granted.
        no(ctl("stop", "rootvm", user=u1, check=False), "u1 microvmctl stop rootvm")
        no(ctl("pause", "rootvm", user=u1, check=False), "u1 microvmctl pause rootvm")
        no(ctl("delete", "rootvm", user=u1, check=False), "u1 microvmctl delete rootvm")

        # The same through busctl: the daemon's message names the polkit action.
        no(call_vm("u1vm", "OpenConsole", user=u1), "u1 busctl OpenConsole own",
           "org.microvmd.vm.console")
        no(call_vm("u1vm", "Snapshot", "sa{sv}", f"/home/{u1}/snap", "0", user=u1),
           "u1 busctl Snapshot own")
        yes(call_vm("u1vm", "Pause", "a{sv}", "0", user=u1), "u1 busctl Pause own")
        wait_state("u1vm", "paused")
        yes(call_vm("u1vm", "Resume", user=u1), "u1 busctl Resume own")
        wait_state("u1vm", "running")
        yes(call_vm("u1vm", "GetStats", user=u1), "u1 busctl GetStats own")
        yes(call_vm("u1vm", "GetConfig", user=u1), "u1 busctl GetConfig own")
        yes(call_vm("u1vm", "GetExitReason", user=u1), "u1 busctl GetExitReason own")
        yes(call_vm("u1vm", "Reboot", user=u1), "u1 busctl Reboot own")
        wait_state("u1vm", "running")
        for method, args, action in [
                ("Stop", (), "org.microvmd.vm.manage-others"),
                ("Pause", ("a{sv}", "0"), "org.microvmd.vm.manage-others"),
                ("Reboot", (), "org.microvmd.vm.manage-others"),
                ("Shutdown", ("u", "5"), "org.microvmd.vm.manage-others"),
                ("Delete", (), "org.microvmd.vm.manage-others"),
                ("OpenConsole", (), "org.microvmd.vm.console-others"),
                ("GetStats", (), "org.microvmd.vm.read-others"),
                ("GetConfig", (), "org.microvmd.vm.read-others"),
                ("GetExitReason", (), "org.microvmd.vm.read-others"),
                ("GetCPUConfig", (), "org.microvmd.vm.manage-others")]:
            no(call_vm("rootvm", method, *args, user=u1), f"u1 busctl {method} rootvm", action)
        no(call_manager("Reload", user=u1), "u1 busctl Reload",
           "org.microvmd.vm.manage-others")
        # A path is root's to open, whatever polkit says; a descriptor is fine.
        no(call_manager("CreateVM", "sa{sv}", "u1path", "1", "kernel", "s", TESTGUEST,
                        user=u1), "u1 busctl CreateVM by path",
           "only root may have microvmd open a path")
        # busctl (systemd 252) cannot pass a descriptor: microvmctl makes the VM (passing
        # the kernel as one), busctl drives it.
        yes(create("u1fd", start=False, user=u1), "u1 microvmctl create (second VM)")
        yes(call_vm("u1fd", "Start", user=u1), "u1 busctl Start own")
        wait_state("u1fd", "running")
        yes(call_vm("u1fd", "Stop", user=u1), "u1 busctl Stop own")
        wait_state("u1fd", "stopped")
        yes(call_vm("u1fd", "Delete", user=u1), "u1 busctl Delete own")
        # gdbus names the error.
        proc = gdbus_vm("rootvm", "Stop", user=u1)
        expect(NOT_AUTHORIZED in proc.stderr, f"gdbus Stop rootvm: {proc.stderr}")
        results.append("no  u1 gdbus Stop rootvm (error name NotAuthorized)")

        # mvmuser2: nothing granted.
        no(create("u2vm", user=u2, check=False), "u2 microvmctl create")
        proc = call_manager("CreateVM", "sa{sv}", "u2path", "1", "kernel", "s", TESTGUEST,
                            user=u2)
        expect_no(proc, "u2 busctl CreateVM", "org.microvmd.vm.create")
        results.append("no  u2 busctl CreateVM (polkit action org.microvmd.vm.create)")
        yes(ctl("list", user=u2), "u2 microvmctl list (public)")
        no(ctl("stop", "u1vm", user=u2, check=False), "u2 microvmctl stop u1vm")
        no(call_vm("u1vm", "GetStats", user=u2), "u2 busctl GetStats u1vm",
           "org.microvmd.vm.read-others")
        no(call_vm("u1vm", "Pause", "a{sv}", "0", user=u2), "u2 busctl Pause u1vm",
           "org.microvmd.vm.manage-others")
        expect(vm_state("u2vm") is None and vm_state("u2fd") is None, "u2 made a VM")
        expect(vm_state("rootvm") == "running", f"rootvm is {vm_state('rootvm')}")
        expect(vm_state("u1vm") == "running", f"u1vm is {vm_state('u1vm')}")

        # Finally mvmuser1 stops and deletes its own VM.
        yes(ctl("stop", "u1vm", user=u1), "u1 microvmctl stop own")
        wait_state("u1vm", "stopped")
        yes(ctl("delete", "u1vm", user=u1), "u1 microvmctl delete own")
    finally:
        diag(f"{len(results)} answers as expected:\n" + "\n".join(results))
    remove_all_vms()


TAP = "mvmtap0"
MAC = "52:54:00:12:34:56"
ETHERTYPE = 0x88b5


def serve_vsock_guest(listener, result):
    """The guest's connection to host port 1234: ping, pong, then its shutdown."""
    try:
        listener.settimeout(GUEST_WAIT)
        conn, _ = listener.accept()
        conn.settimeout(GUEST_WAIT)
        data = b""
        while len(data) < len(b"ping from guest"):
            chunk = conn.recv(64)
            if not chunk:
                break
            data += chunk
        result["ping"] = data
        conn.sendall(b"pong from host")
        result["eof"] = conn.recv(64) == b""
        conn.close()
    except OSError as e:
        result["error"] = repr(e)


def vsock_talk(uds):
    """Connects to the guest's port 5000 through the device's socket; returns its echo."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(GUEST_WAIT)
    sock.connect(uds)
    sock.sendall(b"CONNECT 5000\n")
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    expect(line.startswith(b"OK "), f"CONNECT 5000 answered {line!r}")
    sock.sendall(b"hello from host")
    sock.shutdown(socket.SHUT_WR)
    echo = b""
    while True:
        chunk = sock.recv(256)
        if not chunk:
            break
        echo += chunk
    sock.close()
    return echo


def net_exchange(pkt):
    """Takes the guest's hello from the tap, answers to its MAC."""
    deadline = time.monotonic() + GUEST_WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pkt], [], [], 1)
        if not ready:
            continue
        frame = pkt.recv(2048)
        if frame[14:34] != b"hello from guest net":
            continue
        mac = frame[6:12]
        reply = mac + bytes.fromhex("020000000001") + ETHERTYPE.to_bytes(2, "big")
        reply += b"hello from host net"
        pkt.send(reply.ljust(60, b"\0"))
        return ":".join(f"{b:02x}" for b in mac)
    raise CheckFailed("no frame from the guest on the tap")


def check_devices():
    """a guest with every device kind (blk, net on a tap, vsock, rng) under the unit's sandbox:
    the test guest's blk, rng, vsock and net modes, each with all four attached"""
    fresh_daemon()
    # Disks on tmpfs: microvmd takes disks only on file systems it knows (not the overlay
    # that is this VM's root).
    disk_dir = "/run/microvmd-test"
    os.makedirs(disk_dir, exist_ok=True)
    run(["ip", "link", "delete", TAP], check=False)
    run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
    run(["ip", "link", "set", TAP, "up"])
    summary = []
    for cid, mode in enumerate(("blk", "rng", "vsock", "net"), start=10):
        name = f"dev-{mode}"
        image = os.path.join(disk_dir, f"{name}.img")
        original = os.urandom(1 << 20)
        with open(image, "wb") as f:
            f.write(original)
        # Root may have microvmd make the device's socket by path: in its RuntimeDirectory,
        # the only place besides its StateDirectory the unit lets it write.
        uds = f"/run/microvmd/{name}.sock"
        listener = None
        served = {}
        thread = None
        cmdline = {"blk": "mode=blk sectors=8 writeat=8 seed=3", "rng": "mode=rng bytes=256",
                   "vsock": "mode=vsock hostport=1234 port=5000", "net": "mode=net"}[mode]
        if mode == "vsock":
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(uds + "_1234")
            listener.listen(1)
            thread = threading.Thread(target=serve_vsock_guest, args=(listener, served))
            thread.start()
        pkt = None
        if mode == "net":
            pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
            pkt.bind((TAP, ETHERTYPE))
        try:
            create(name, cmdline, memory=32, extra=[
                f"--disk={image}", f"--tap={TAP},mac={MAC}", f"--vsock={cid},{uds}", "--rng",
                "--set=debug-exit=true"])
            config = call_vm(name, "GetConfig").stdout
            for key in ("disks", "network", "vsock", "rng"):
                expect(key in config, f"{name}'s config lacks {key}: {config}")
            if mode == "vsock":
                wait_console(name, "VSOCK listening 5000")
                echo = vsock_talk(uds)
                expect(echo == b"echo: hello from host", f"the guest echoed {echo!r}")
            if mode == "net":
                mac = net_exchange(pkt)
                expect(mac == MAC, f"the guest sent from {mac}, configured {MAC}")
            wait_state(name, ("stopped", "crashed"))
            out = console_log(name)
            reason = exit_reason(name)
            done = f"TESTGUEST-DONE {mode} PASS"
            if done not in out or "FAIL" in out or not reason.startswith("debug-exit"):
                diag(out[-3000:])
                raise CheckFailed(f"{name}: exit reason '{reason}'")
            for line in {"blk": ["PASS blk-write-read", "BLK capacity 2048 "],
                         "rng": ["PASS rng"],
                         "vsock": ["PASS vsock-connect", "PASS vsock-listen"],
                         "net": ["PASS net-rx", f"NET mac {MAC}"]}[mode]:
                expect(line in out, f"{name}: no '{line}' on the console:\n{out[-2000:]}")
            if mode == "vsock":
                thread.join(GUEST_WAIT)
                expect(served.get("ping") == b"ping from guest" and served.get("eof"),
                       f"the guest's connection: {served}")
            with open(image, "rb") as f:
                after = f.read()
            if mode == "blk":
                # The guest wrote sectors 8..15 and nothing else.
                expect(after[:8 * 512] == original[:8 * 512]
                       and after[16 * 512:] == original[16 * 512:]
                       and after[8 * 512:16 * 512] != original[8 * 512:16 * 512],
                       "the disk image is not as the guest's writes leave it")
            else:
                expect(after == original, f"{name} changed its disk")
            summary.append(f"{name}: {reason}; " + " ".join(
                l for l in out.splitlines() if l.startswith(("PASS", "NET mac", "VSOCK cid"))))
        finally:
            if listener:
                listener.close()
            if pkt:
                pkt.close()
            if thread:
                thread.join(5)
            for path in (uds + "_1234",):
                if os.path.exists(path):
                    os.unlink(path)
        ctl("delete", name)
    diag("\n".join(summary))
    expect(not journal("-u", UNIT, "--grep", "sandbox-violation"),
           "a sandbox violation was logged")
    run(["ip", "link", "delete", TAP], check=False)
    remove_all_vms()


def check_security():
    """systemd-analyze security: exposure at most 2.0; the shipped SystemCallFilter, no new
    privileges and the capability bounding set in effect on the running daemon"""
    fresh_daemon()
    out = run(["systemd-analyze", "security", "--no-pager", UNIT], timeout=120,
              check=False).stdout
    match = re.search(r"Overall exposure level for microvmd\.service: ([0-9.]+)", out)
    expect(match, f"no exposure level:\n{out[-2000:]}")
    score = float(match.group(1))
    diag(f"exposure {score}: {match.group(0)}")
    expect(score <= 2.0, f"exposure {score} > 2.0")
    filt = prop(UNIT, "SystemCallFilter")
    expect(filt and "ioctl" in filt and "landlock_restrict_self" in filt,
           f"SystemCallFilter={filt[:300]}")
    expect(prop(UNIT, "SystemCallErrorNumber") in ("1", "EPERM"),
           f"SystemCallErrorNumber={prop(UNIT, 'SystemCallErrorNumber')}")
    status = {}
    with open(f"/proc/{main_pid()}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    diag(f"the daemon's Seccomp {status.get('Seccomp')}, NoNewPrivs {status.get('NoNewPrivs')}, "
         f"CapBnd {status.get('CapBnd')}")
    expect(status.get("Seccomp") == "2", f"Seccomp {status.get('Seccomp')}: no filter")
    expect(status.get("NoNewPrivs") == "1", "NoNewPrivs is not set")
    # CAP_NET_ADMIN (12) and CAP_LEASE (28), nothing else.
    expect(int(status.get("CapBnd", "0"), 16) == (1 << 12) | (1 << 28),
           f"CapBnd {status.get('CapBnd')}")


def check_stop():
    """systemctl stop with 3 guests running, one that shuts down politely: done within
    TimeoutStopSec, Result=success, no VM left"""
    fresh_daemon()
    create("stop-polite", "mode=ctrlaltdel action=exit", extra=["--set=debug-exit=true"])
    create("stop-deaf1")
    create("stop-deaf2")
    for name in ("stop-polite", "stop-deaf1", "stop-deaf2"):
        wait_state(name, "running")
    wait_console("stop-polite", "WAITING for ctrl-alt-del")
    cgroup = prop(UNIT, "ControlGroup")
    timeout = prop(UNIT, "TimeoutStopUSec")
    since = now()
    started = time.monotonic()
    run(["systemctl", "stop", UNIT], timeout=180)
    took = time.monotonic() - started
    info = show(UNIT, "Result", "ActiveState", "ExecMainStatus", "ExecMainCode")
    diag(f"systemctl stop took {took:.1f} s (TimeoutStopSec={timeout}): {info}")
    expect(info["Result"] == "success" and info["ActiveState"] in ("inactive",), f"{info}")
    log = journal("-u", UNIT, "-o", "cat", since=since)
    expect("stop-polite: state running → stopped" in log or
           re.search(r"stop-polite: run ended: debug-exit", log),
           f"the polite guest did not shut down by itself:\n{log}")
    for name in ("stop-deaf1", "stop-deaf2"):
        expect(f"{name}: stopping (forced)" in log, f"{name} not stopped:\n{log}")
    expect("SIGKILL" not in log and "timed out" not in log.lower(), f"killed:\n{log}")
    procs = f"/sys/fs/cgroup{cgroup}/cgroup.procs"
    expect(not os.path.exists(procs) or not open(procs).read().strip(),
           f"processes left in {cgroup}")
    expect(not any(n.startswith("stop-") for n in machines()), "machines left")
    start_daemon()
    expect(list_vms() == {}, f"VMs after the restart: {list_vms()}")


def check_watchdog():
    """watchdog: a hung main loop (SIGUSR2, test builds) misses WatchdogSec=6s; systemd logs
    the timeout and restarts microvmd"""
    os.makedirs(os.path.dirname(WATCHDOG_DROPIN), exist_ok=True)
    with open(WATCHDOG_DROPIN, "w") as f:
        f.write("[Service]\nWatchdogSec=6s\n")
    run(["systemctl", "daemon-reload"], timeout=120)
    try:
        if is_active() == "active":
            stop_daemon()
        start_daemon()
        expect(prop(UNIT, "WatchdogUSec") in ("6s", "6000000"),
               f"WatchdogUSec={prop(UNIT, 'WatchdogUSec')}")
        pid, restarts = main_pid(), int(prop(UNIT, "NRestarts"))
        since = now()
        os.kill(pid, signal.SIGUSR2)
        wait_for(lambda: int(prop(UNIT, "NRestarts")) > restarts and main_pid() not in (0, pid)
                 and is_active() == "active", 120, "microvmd restarted by the watchdog")
        log = journal("-u", UNIT, "-o", "cat", since=since)
        diag("\n".join(line for line in log.splitlines()
                       if "atchdog" in line or "test hook" in line))
        expect("Watchdog timeout" in log, f"no watchdog timeout logged:\n{log}")
        expect("test hook: SIGUSR2" in log, f"the daemon never hung:\n{log}")
        wait_for(bus_owned, 60, "the restarted microvmd on the bus")
        diag(f"NRestarts {restarts} → {prop(UNIT, 'NRestarts')}, MainPID {pid} → {main_pid()}")
    finally:
        os.unlink(WATCHDOG_DROPIN)
        run(["systemctl", "daemon-reload"], timeout=120)


PATTERN = "mode=pattern pages=64 base_mib=8 every=20 delay=2000"


def counts(name):
    return [int(m) for m in re.findall(r"COUNTER (\d+)", console_log(name))]


def check_restart():
    """systemctl restart with a counting guest and a paused one, made by microvmctl (kernel-fd):
    both handed to the next microvmd through the fd store, counting on, never booted again, the
    kernel's descriptor carried for the next boot; the store empty after"""
    fresh_daemon()
    create("keep-run", PATTERN, memory=32)
    create("keep-paused", PATTERN, memory=32)
    for name in ("keep-run", "keep-paused"):
        wait_state(name, "running")
        wait_for(lambda n=name: len(counts(n)) >= 2, GUEST_WAIT, f"{name} counting")
    ctl("pause", "keep-paused")
    wait_state("keep-paused", "paused")
    before = counts("keep-run")[-1]
    pid, since = main_pid(), now()
    started = time.monotonic()
    run(["systemctl", "restart", UNIT], timeout=180)
    wait_for(bus_owned, 60, "the next microvmd on the bus")
    wait_state("keep-run", "running")
    took = time.monotonic() - started
    expect(main_pid() not in (0, pid), f"MainPID {pid} → {main_pid()}")
    wait_state("keep-paused", "paused")
    log = journal("-u", UNIT, "-o", "cat", since=since)
    diag("\n".join(line for line in log.splitlines() if "hand" in line or "taken" in line
                    or "taking" in line or "restart" in line))
    diag(f"systemctl restart to keep-run running again: {took:.1f} s")
    for name in ("keep-run", "keep-paused"):
        expect(f"{name}: handing over to the next microvmd" in log, f"{name} not handed:\n{log}")
        expect(f"{name}: taken over" in log, f"{name} not taken over:\n{log}")
    wait_for(lambda: counts("keep-run")[-1] > before + 1, GUEST_WAIT, "keep-run counting on")
    for name in ("keep-run", "keep-paused"):
        text = console_log(name)
        expect(text.count("TESTGUEST pattern start") == 1 and "FAIL" not in text,
               f"{name} booted again or failed:\n{text[-2000:]}")
    expect(prop(UNIT, "NFileDescriptorStore") == "0",
           f"{prop(UNIT, 'NFileDescriptorStore')} descriptors left in the store")
    ctl("resume", "keep-paused")
    n = counts("keep-paused")[-1]
    wait_for(lambda: counts("keep-paused")[-1] > n, GUEST_WAIT, "keep-paused counting on")
    # microvmctl passed the kernel as kernel-fd: it came along, and a new boot reads it.
    ctl("stop", "keep-paused")
    wait_state("keep-paused", ("stopped", "crashed"))
    ctl("start", "keep-paused")
    wait_state("keep-paused", "running")
    wait_for(lambda: console_log("keep-paused").count("TESTGUEST pattern start") == 2,
             GUEST_WAIT, "keep-paused booting again from its handed-over kernel-fd")
    # Registered again: the last daemon's leaders left with it (CreateMachine retries a name
    # whose old scope is still going).
    wait_for(lambda: set(machines()) >= {"keep-run", "keep-paused"}, 30,
             "both VMs in machinectl again")
    # A stop is no restart: nothing is handed over, nothing comes back.
    stop_daemon()
    expect(prop(UNIT, "NFileDescriptorStore") == "0", "a stop left descriptors in the store")
    start_daemon()
    expect(list_vms() == {}, f"VMs after stop and start: {list_vms()}")


CHECKS = [
    (check_installed, 120),
    (check_socket_activation, 120),
    (check_bus_activation, 120),
    (check_notify_status, 180),
    (check_machined, 400),
    (check_journal, 300),
    (check_reload, 240),
    (check_polkit, 600),
    (check_devices, 600),
    (check_security, 180),
    (check_stop, 240),
    (check_watchdog, 240),
    (check_restart, 400),
]


def on_alarm(signum, frame):
    raise CheckTimeout()


def main():
    count = int(os.environ.get("MVM_SYSTEMD_CHECKS") or len(CHECKS))
    only = os.environ.get("MVM_SYSTEMD_ONLY")
    selected = [i for i in range(1, len(CHECKS) + 1)
                if (i in {int(x) for x in only.split(",")} if only else i <= count)]
    signal.signal(signal.SIGALRM, on_alarm)
    print(f"1..{len(selected)}", flush=True)
    failed = 0
    total_start = time.monotonic()
    for number, index in enumerate(selected, start=1):
        check, limit = CHECKS[index - 1]
        title = " ".join(check.__doc__.split())
        started = time.monotonic()
        error = None
        signal.alarm(limit)
        try:
            check()
        except CheckTimeout:
            error = f"timed out after {limit} s"
        except (CheckFailed, OSError, subprocess.SubprocessError, ValueError, KeyError,
                json.JSONDecodeError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        took = time.monotonic() - started
        if error is None:
            print(f"ok {number} - check {index}: {title} ({took:.1f} s)", flush=True)
            continue
        failed += 1
        print(f"not ok {number} - check {index}: {title} ({took:.1f} s)", flush=True)
        diag(error)
        diag("systemctl status microvmd:\n" + run(
            ["systemctl", "status", "--no-pager", "-n", "0", UNIT], check=False).stdout)
        diag("journalctl -u microvmd (last 30):\n" + journal("-u", UNIT, "-n", "30"))
    diag(f"{len(selected) - failed} of {len(selected)} checks passed in "
         f"{time.monotonic() - total_start:.0f} s")
    if shutil.which("journalctl") and os.environ.get("MVM_SYSTEMD_JOURNAL"):
        with open(os.environ["MVM_SYSTEMD_JOURNAL"], "w") as f:
            f.write(journal("-b"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
