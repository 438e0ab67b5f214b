# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the Python tests share (tests/system, tests/tools, and tests/bench/compare): the launcher
of the tests' private D-Bus bus (private-bus.conf beside this file, or another configuration),
child processes that die with the test, and whether /dev/kvm is usable.

Import it with sys.path.insert(0, <this directory>)."""

import ctypes
import os
import signal
import subprocess

PRIVATE_BUS_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "private-bus.conf")


def die_with_parent():
    """preexec_fn: a child (bus, daemon, mock) is killed when the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_and_reap(proc, sig=signal.SIGKILL, timeout=30):
    """Sends @sig to @proc if it still runs and reaps it (SIGKILL after @timeout seconds)."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kvm_unusable():
    """Why /dev/kvm does not open read-write here (a sentence), or None."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"/dev/kvm is not usable: {e}"
    return None


class PrivateBus:
    """A dbus-daemon of our own on @config (default: private-bus.conf). With @directory its
    socket is there (overriding the configuration's <listen>). Raises RuntimeError when it gives
    no address (e.g. a configuration it refuses)."""

    def __init__(self, directory=None, config=PRIVATE_BUS_CONF):
        argv = ["dbus-daemon", "--config-file=" + config, "--print-address=1", "--nofork"]
        if directory is not None:
            argv.append("--address=unix:dir=" + directory)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, preexec_fn=die_with_parent)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError("dbus-daemon did not start (bad configuration?)")

    def stop(self):
        kill_and_reap(self.proc, signal.SIGTERM)
        self.proc.stdout.close()
