# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared pieces of the `system` suite: private buses (a permissive one, and a system-like one
that loads the shipped policy), the built microvmd, a NOTIFY_SOCKET listener, and GDBus clients
(bus or peer-to-peer). Paths come from the environment meson sets (see meson.build)."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import gi

gi.require_version("Gio", "2.0")
gi.require_version("GLib", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

import reachable  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import mvmtest  # noqa: E402
# The system tests take these from here.
from mvmtest import die_with_parent, kill_and_reap  # noqa: E402,F401

NAME = "org.microvmd.MicroVM1"
PATH = "/org/microvmd/MicroVM1"
MANAGER = NAME + ".Manager"
VM = NAME + ".VM"
ERR = NAME + ".Error."
# The polkit actions: on one's own VMs, and (-others) on other users' VMs.
ACTIONS = {
    "create": "org.microvmd.vm.create",
    "manage": "org.microvmd.vm.manage",
    "console": "org.microvmd.vm.console",
    "snapshot": "org.microvmd.vm.snapshot",
    "read-others": "org.microvmd.vm.read-others",
    "manage-others": "org.microvmd.vm.manage-others",
    "console-others": "org.microvmd.vm.console-others",
    "snapshot-others": "org.microvmd.vm.snapshot-others",
}
OWN_ACTIONS = [ACTIONS[a] for a in ("create", "manage", "console", "snapshot")]
# Methods with an a{sv} of options (Pause), called without any.
NO_OPTIONS = GLib.Variant("(a{sv})", ({},))
# Nested KVM emulates guest kernel code (docs/kvm-hosts.md): be generous with guest timeouts.
GUEST_TIMEOUT_MS = 60000

MICROVMD = os.environ.get("MICROVMD")
TESTGUEST = os.environ.get("MVM_TESTGUEST")

# Like Debian's /usr/share/dbus-1/system.conf: method calls and name ownership are denied
# unless a policy file allows them; ours is <include>d as shipped. Root may own anything
# else, for the mocks (polkitd, machined) that the tests start as root.
SYSTEM_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
    <allow send_destination="*"/>
  </policy>
  <include>{policy}</include>
  {servicedir}
</busconfig>
"""


def skip(reason):
    """Meson counts exit status 77 as skipped."""
    print(f"SKIP: {reason}")
    sys.exit(77)


def require_kvm():
    """In a test or its setUp: skips it (unittest would count skip()'s exit as an error)."""
    why = mvmtest.kvm_unusable()
    if why:
        raise unittest.SkipTest(why)
    if not TESTGUEST or not os.path.exists(TESTGUEST):
        raise unittest.SkipTest("the test guest (testguest.elf) is not built")


class TmpDir:
    def __init__(self, mode=0o700):
        self.path = tempfile.mkdtemp(prefix="microvmd-system-")
        os.chmod(self.path, mode)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Bus(mvmtest.PrivateBus):
    """A private dbus-daemon: tests/common/private-bus.conf, its socket in @tmp. system=True: the
    system-like policy with ours included."""

    def __init__(self, tmp, system=False, policy=None, servicedir=None):
        if not system:
            super().__init__(tmp.path)
            return
        conf = tmp.join("bus.conf")
        with open(conf, "w") as f:
            f.write(SYSTEM_CONF.format(dir=tmp.path, policy=policy, servicedir=(
                f"<servicedir>{servicedir}</servicedir>" if servicedir else "")))
        super().__init__(config=conf)

    def connect(self):
        return Gio.DBusConnection.new_for_address_sync(
            self.address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)


def name_has_owner(conn, name=NAME):
    reply = conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "NameHasOwner",
                           GLib.Variant("(s)", (name,)), GLib.VariantType("(b)"),
                           Gio.DBusCallFlags.NONE, -1, None)
    return reply.unpack()[0]


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    """The built microvmd. @args after the directory options; @env added to ours."""

    def __init__(self, tmp, args, env=None, wrapper_argv=(), log_path=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        # e.g. MVMD_TEST_DAEMON_WRAPPER="valgrind --error-exitcode=1", as for tests/daemon.
        wrapper = list(wrapper_argv) + os.environ.get("MVMD_TEST_DAEMON_WRAPPER", "").split()
        argv = wrapper + [MICROVMD, f"--state-dir={tmp.join('state')}",
                                f"--runtime-dir={tmp.join('run')}", "--shutdown-timeout=2"]
        if os.environ.get("MVMD_TEST_VERBOSE"):
            argv.append("--verbose")
        self.started_at = time.monotonic()
        # stdout to our stderr: the test log keeps the daemon's messages; or both to
        # @log_path, for a test that reads them.
        self.log_path = log_path
        out = open(log_path, "a") if log_path else sys.stderr
        self.proc = subprocess.Popen(argv + list(args), env=full_env, stdout=out,
                                     stderr=out if log_path else None, preexec_fn=die_with_parent)
        if log_path:
            out.close()

    def log(self):
        """What the daemon wrote, when started with a log_path."""
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=60):
        if not self.alive():
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1


class NotifyListener:
    """The service manager's side of sd_notify(3): a datagram socket for $NOTIFY_SOCKET."""

    def __init__(self, tmp):
        self.path = tmp.join("notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (monotonic time, {key: value})

    def receive(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = {}
        for line in data.decode().split("\n"):
            if "=" in line:
                key, value = line.split("=", 1)
                fields[key] = value
        entry = (time.monotonic(), fields)
        self.messages.append(entry)
        return entry

    def wait_for(self, key, value=None, timeout=60):
        """Returns the (time, fields) of the first new message with @key (= @value)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or '*'} from microvmd; got {self.messages}")
            entry = self.receive(left)
            if entry and key in entry[1] and (value is None or entry[1][key] == value):
                return entry

    def close(self):
        self.sock.close()


def peer_connect(socket_path):
    """A peer-to-peer D-Bus connection to microvmd's socket (EXTERNAL authentication)."""
    return Gio.DBusConnection.new_for_address_sync(
        f"unix:path={socket_path}", Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT, None, None)


def call(conn, path, interface, method, args=None, reply_type=None, fds=None,
         timeout=GUEST_TIMEOUT_MS, name=NAME, flags=Gio.DBusCallFlags.NONE, messages=None):
    """Calls @method; returns (unpacked reply, None) or (None, D-Bus error name). An error's
    message is appended to the list @messages, when given."""
    # On a peer-to-peer connection there is no bus: no destination.
    dest = name if conn.get_unique_name() else None
    try:
        if fds is not None:
            fd_list = Gio.UnixFDList.new_from_array(fds)
            reply, _ = conn.call_with_unix_fd_list_sync(
                dest, path, interface, method, args,
                GLib.VariantType(reply_type) if reply_type else None, flags, timeout, fd_list,
                None)
        else:
            reply = conn.call_sync(dest, path, interface, method, args,
                                   GLib.VariantType(reply_type) if reply_type else None, flags,
                                   timeout, None)
        return (reply.unpack() if reply else None), None
    except GLib.Error as e:
        remote = Gio.DBusError.get_remote_error(e)
        if messages is not None:
            messages.append(e.message)
        return None, remote or f"local:{e.message}"


def guest_config(mode="echo", kernel_fd=False, extra=""):
    """A{sv} text for the test guest (tests/testguest/README.md); kernel as path or handle 0."""
    kernel = "'kernel-fd': <handle 0>" if kernel_fd else f"'kernel': <'{TESTGUEST}'>"
    return GLib.Variant.parse(
        GLib.VariantType("a{sv}"),
        "{" + kernel + f", 'cmdline': <'mode={mode}'>, 'debug-exit': <true>,"
        f" 'memory-mib': <uint64 16>{extra}" + "}", None, None)


def create_vm(conn, name, **kwargs):
    """CreateVM with the test guest; returns (path, error)."""
    fds = None
    if kwargs.get("kernel_fd"):
        fds = [os.open(TESTGUEST, os.O_RDONLY | os.O_CLOEXEC)]
    try:
        args = GLib.Variant.new_tuple(GLib.Variant("s", name), guest_config(**kwargs))
        reply, err = call(conn, PATH, MANAGER, "CreateVM", args, "(o)", fds=fds)
    finally:
        for fd in fds or []:
            os.close(fd)
    return (reply[0] if reply else None), err


def vm_state(conn, path):
    reply, err = call(conn, path, "org.freedesktop.DBus.Properties", "Get",
                      GLib.Variant("(ss)", (VM, "State")), "(v)")
    assert err is None, err
    return reply[0]


class TestCase(unittest.TestCase):
    """Cleans up what setUp made, in reverse order, even when a test fails."""

    def setUp(self):
        self.tmp = TmpDir()
        self.addCleanup(self.tmp.cleanup)

    def start_bus(self, **kwargs):
        bus = Bus(self.tmp, **kwargs)
        self.addCleanup(bus.stop)
        return bus

    def start_daemon(self, args, **kwargs):
        daemon = Daemon(self.tmp, args, **kwargs)
        self.addCleanup(kill_and_reap, daemon.proc)
        return daemon


POLKIT = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
MOCK = "org.freedesktop.DBus.Mock"


def start_mock(test, bus, conn, *args):
    """python-dbusmock on the system-like @bus, as `python3 -m dbusmock --system ARGS` (e.g.
    "--template", "polkitd"); stopped after @test. Returns once its name is on the bus."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    proc = subprocess.Popen([sys.executable, "-m", "dbusmock", "--system"] + list(args),
                            env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr,
                            preexec_fn=die_with_parent)
    test.addCleanup(kill_and_reap, proc)
    name = POLKIT if "polkitd" in args else args[0]
    wait_for(lambda: name_has_owner(conn, name), 30, name)
    return proc


def set_polkit_allowed(conn, actions):
    """What the polkitd mock says yes to, for every caller."""
    _, err = call(conn, POLKIT_PATH, MOCK, "SetAllowed", GLib.Variant("(as)", (list(actions),)),
                  name=POLKIT)
    assert err is None, err


def main():
    if not MICROVMD:
        skip("MICROVMD is not set (run through meson test)")
    unittest.main(verbosity=2)


NOBODY = 65534  # uid "nobody" and gid "nogroup" on Debian
# client.py and the modules it imports (relative to this directory), copied side by side into
# one directory: run from there (see reachable.py).
CLIENT_FILES = ("client.py", "systest.py", "reachable.py",
                os.path.join("..", "common", "mvmtest.py"))
_client_dir = None


def client_dir():
    """The directory with the client's copies, made once per test process and removed when
    it exits."""
    global _client_dir
    if _client_dir is None:
        _client_dir = reachable.ReachableDir("microvmd-client-")
        atexit.register(_client_dir.cleanup)
        here = os.path.dirname(os.path.abspath(__file__))
        for name in CLIENT_FILES:
            _client_dir.copy(os.path.join(here, name))
    return _client_dir.path


def script_argv(uid, gid, script, args):
    """The command line that runs the python @script (a path) as @uid/@gid (no supplementary
    groups), from a copy in client_dir(), beside the modules client.py imports; run it with
    cwd=client_dir()."""
    path = os.path.join(client_dir(), os.path.basename(script))
    if not os.path.exists(path):
        _client_dir.copy(script)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
            sys.executable, path] + list(args)


def client_argv(uid, gid, address, ops):
    """The command line that runs client.py as @uid/@gid (see script_argv)."""
    return script_argv(uid, gid, "client.py", [address] + list(ops))


# Unprivileged accounts every Debian has, one per role, where no user can be made (no useradd,
# or a read-only /etc as inside tests/vmhost's VM). None owns a file the tests touch.
STAND_IN_USERS = {"": "daemon", "attacker": "daemon", "victim": "bin", "web": "daemon"}


def throwaway_user(test, role=""):
    """A system user made for @test (useradd) and removed after it; its (uid, gid). Where none
    can be made, an existing unprivileged user stands in for the @role (STAND_IN_USERS)."""
    import pwd
    name = f"mvmtest-{os.getpid()}{role and '-' + role}"
    if shutil.which("useradd") and subprocess.run(
            ["useradd", "--system", "--no-create-home", "--user-group", "--shell",
             "/usr/sbin/nologin", name], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode == 0:
        test.addCleanup(subprocess.run, ["userdel", name], stdout=subprocess.DEVNULL)
    elif role in STAND_IN_USERS:
        name = STAND_IN_USERS[role]
    else:
        raise unittest.SkipTest(f"no user can be made for the role {role}")
    pw = pwd.getpwnam(name)
    assert pw.pw_uid not in (0, NOBODY), pw
    return pw.pw_uid, pw.pw_gid


def require_root_and_setpriv():
    if os.geteuid() != 0:
        skip("needs root, to run clients as another user")
    if not shutil.which("setpriv"):
        skip("setpriv (util-linux) is not installed")


def run_client_as(uid, gid, address, ops, p2p=False, interactive=False, kernel_fd=None,
                  env=None):
    """Runs client.py as @uid/@gid (no supplementary groups), with @env added to ours;
    returns its results, in order."""
    import json
    argv = client_argv(uid, gid, address, ops)
    if p2p:
        argv.append("--p2p")
    if interactive:
        argv.append("--interactive")
    env = dict(os.environ, HOME="/", PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    if kernel_fd is not None:
        env["CLIENT_KERNEL_FD"] = str(kernel_fd)
    out = subprocess.run(argv, env=env, cwd=client_dir(), stdout=subprocess.PIPE, text=True,
                         timeout=300, pass_fds=(kernel_fd,) if kernel_fd is not None else (),
                         check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def open_guest_for_client():
    """The guest ELF opened by us, for an unprivileged client to pass on as a descriptor."""
    fd = os.open(TESTGUEST, os.O_RDONLY)
    os.set_inheritable(fd, True)
    return fd
