#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A microvmd client the tests run as another user (setpriv): performs OPS in order and prints
one JSON line each, {"op": …, "error": D-Bus error name or null}. ADDRESS is a bus address, or
with --p2p the address of microvmd's own socket.

OPS: list, reload, managed (GetManagedObjects; its reply printed as "reply"), create NAME
(kernel by path), create-fd NAME (kernel from the inherited
descriptor $CLIENT_KERNEL_FD), restore NAME (from a snapshot path),
start|pause|resume|shutdown|stop|reboot|delete|console|stats|config|exit-reason|cpu-config|
snapshot|working-set NAME (working-set: SaveWorkingSet into a memfd of the client's).

Snapshot destinations (SNAPSHOT_OPS), each "snapshot-KIND NAME": a directory $CLIENT_TARGET
by path, as a dir-fd or as an O_PATH dir-fd; or a state file of the KIND given (see
state_file()) with a proper memory file, both made in $CLIENT_WORKDIR (the client's own).
restore-files NAME restores from the files "snapshot-files" made there, restore-fifo NAME
with a FIFO in place of the state file.

snapshot-proc NAME passes the client's own /proc/self/oom_score_adj as the state file, then
its /proc/self/comm as the memory file, each opened for writing (two calls); its result adds
"message" (the error's messages) and "written" (whether any of the files changed)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systest  # noqa: E402
from systest import Gio, GLib  # noqa: E402

VM_CALLS = {
    "start": ("Start", None),
    "pause": ("Pause", systest.NO_OPTIONS),
    "resume": ("Resume", None),
    "shutdown": ("Shutdown", GLib.Variant("(u)", (1,))),
    "stop": ("Stop", None),
    "reboot": ("Reboot", None),
    "delete": ("Delete", None),
    "stats": ("GetStats", None),
    "config": ("GetConfig", None),
    "exit-reason": ("GetExitReason", None),
    "cpu-config": ("GetCPUConfig", None),
    # A path: never followed for an unprivileged caller, whatever polkit says.
    "snapshot": ("Snapshot", GLib.Variant("(sa{sv})", ("/var/tmp/microvmd-snapshot", {}))),
}


WORKDIR = os.environ.get("CLIENT_WORKDIR", "")
TARGET = os.environ.get("CLIENT_TARGET", "")
FILES = {"state-fd": GLib.Variant("h", 0), "memory-fd": GLib.Variant("h", 1)}


def new_file(name, flags=os.O_WRONLY):
    return os.open(os.path.join(WORKDIR, name), os.O_CREAT | os.O_EXCL | flags, 0o600)


def fifo(name):
    path = os.path.join(WORKDIR, name)
    os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR)  # a reader and a writer: opening it does not wait


def hard_linked(name):
    fd = new_file(name)
    os.link(os.path.join(WORKDIR, name), os.path.join(WORKDIR, name + ".link"))
    return fd


def state_file(kind, memory_fd):
    """The state file of each kind: all but "files" are refused by the daemon."""
    return {
        "files": lambda: new_file("state"),
        "fifo": lambda: fifo("state.fifo"),
        "devnull": lambda: os.open("/dev/null", os.O_WRONLY),
        "readonly": lambda: new_file("state.ro", os.O_RDONLY),
        "append": lambda: new_file("state.append", os.O_WRONLY | os.O_APPEND),
        "hardlink": lambda: hard_linked("state.linked"),
        "same": lambda: os.dup(memory_fd),
    }[kind]()


def snapshot_args(kind):
    """Snapshot's arguments and descriptors for the op snapshot-KIND."""
    if kind == "path":
        return (TARGET, {}), None
    if kind in ("dir-fd", "opath"):
        flags = os.O_DIRECTORY | (os.O_PATH if kind == "opath" else os.O_RDONLY)
        return ("", {"dir-fd": GLib.Variant("h", 0)}), [os.open(TARGET, flags)]
    memory = new_file("memory" if kind == "files" else f"memory.{kind}")
    return ("", FILES), [state_file(kind, memory), memory]


# The descriptors go to the message's fd list, which closes them.
def snapshot_to(conn, kind, name, flags):
    args, fds = snapshot_args(kind)
    return systest.call(conn, vm_path(conn, name), systest.VM, "Snapshot",
                        GLib.Variant("(sa{sv})", args), fds=fds, flags=flags)[1]


def restore_files(conn, name, flags, state_kind="files"):
    """RestoreVM from the files of "snapshot-files", or with a FIFO as its state."""
    state = os.path.join(WORKDIR, "state")
    if state_kind == "fifo":
        state = os.path.join(WORKDIR, "restore.fifo")
        os.mkfifo(state, 0o600)
    fds = [os.open(f, os.O_RDWR if f == state and state_kind == "fifo" else os.O_RDONLY)
           for f in (state, os.path.join(WORKDIR, "memory"))]
    args = GLib.Variant("(ssa{sv})", (name, "", FILES))
    return systest.call(conn, systest.PATH, systest.MANAGER, "RestoreVM", args, "(o)",
                        fds=fds, flags=flags)[1]


PROC_FILES = ("/proc/self/oom_score_adj", "/proc/self/comm")


def read_proc_files():
    contents = []
    for path in PROC_FILES:
        with open(path) as f:
            contents.append(f.read())
    return contents


def snapshot_to_proc(conn, name, flags, result):
    """Snapshot into files of proc, which root's writes would turn into requests to the kernel
    (an oom_score_adj of -1000 needs CAP_SYS_RESOURCE): both calls must fail, nothing move."""
    before = read_proc_files()
    errors, messages, plain = [], [], []
    for i, proc_path in enumerate(PROC_FILES):
        fds = [new_file(f"proc.{i}.{n}") for n in range(2)]
        plain.append(os.path.join(WORKDIR, f"proc.{i}.{1 - i}"))
        os.close(fds[i])
        fds[i] = os.open(proc_path, os.O_WRONLY)
        errors.append(systest.call(conn, vm_path(conn, name), systest.VM, "Snapshot",
                                   GLib.Variant("(sa{sv})", ("", FILES)), fds=fds,
                                   flags=flags, messages=messages)[1])
    result["message"] = messages
    result["written"] = (read_proc_files() != before or
                         any(os.stat(p).st_size for p in plain))
    return errors[0] if errors[0] == errors[1] else f"{errors[0]} then {errors[1]}"


def vm_path(conn, name):
    reply, err = systest.call(conn, systest.PATH, systest.MANAGER, "GetVMByName",
                              GLib.Variant("(s)", (name,)), "(o)")
    if err:
        raise SystemExit(f"GetVMByName({name}): {err}")
    return reply[0]


def read_console(conn, path, flags):
    """OpenConsole, then the guest's first line from the descriptor (the kept boot output)."""
    dest = systest.NAME if conn.get_unique_name() else None
    try:
        reply, fd_list = conn.call_with_unix_fd_list_sync(
            dest, path, systest.VM, "OpenConsole", None, GLib.VariantType("(h)"), flags,
            systest.GUEST_TIMEOUT_MS, None, None)
    except GLib.Error as e:
        return Gio.DBusError.get_remote_error(e) or f"local:{e.message}"
    fd = fd_list.get(reply.unpack()[0])
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as console:
        while b"TESTGUEST" not in data:
            chunk = console.read(4096)
            if not chunk:
                return "console: end of stream before the guest's banner"
            data += chunk
    return None


def managed_objects(conn, flags):
    """GetManagedObjects, as a JSON-able dict: path → interface → property → printed value."""
    reply, err = systest.call(conn, systest.PATH, "org.freedesktop.DBus.ObjectManager",
                              "GetManagedObjects", None, "(a{oa{sa{sv}}})", flags=flags)
    if err:
        return err, None
    return None, {path: {iface: {k: str(v) for k, v in props.items()}
                         for iface, props in ifaces.items()}
                  for path, ifaces in reply[0].items()}


def run(conn, op, name, flags, result):
    if op == "snapshot-proc":
        return snapshot_to_proc(conn, name, flags, result)
    if op == "list":
        return systest.call(conn, systest.PATH, systest.MANAGER, "ListVMs", None, "(a(soss))",
                            flags=flags)[1]
    if op == "reload":
        return systest.call(conn, systest.PATH, systest.MANAGER, "Reload", flags=flags)[1]
    if op == "restore":
        args = GLib.Variant("(ssa{sv})", (name, "/var/tmp/microvmd-snapshot", {}))
        return systest.call(conn, systest.PATH, systest.MANAGER, "RestoreVM", args, "(o)",
                            flags=flags)[1]
    if op in ("create", "create-fd"):
        fds = [int(os.environ["CLIENT_KERNEL_FD"])] if op == "create-fd" else None
        args = GLib.Variant.new_tuple(GLib.Variant("s", name),
                                      systest.guest_config(kernel_fd=fds is not None))
        return systest.call(conn, systest.PATH, systest.MANAGER, "CreateVM", args, "(o)",
                            fds=fds, flags=flags)[1]
    if op == "console":
        return read_console(conn, vm_path(conn, name), flags)
    if op.startswith("snapshot-"):
        return snapshot_to(conn, op[len("snapshot-"):], name, flags)
    if op == "working-set":
        fds = [os.memfd_create("working-set")]
        return systest.call(conn, vm_path(conn, name), systest.VM, "SaveWorkingSet",
                            GLib.Variant("(ha{sv})", (0, {})), fds=fds, flags=flags)[1]
    if op in ("restore-files", "restore-fifo"):
        return restore_files(conn, name, flags, op[len("restore-"):])
    method, args = VM_CALLS[op]
    return systest.call(conn, vm_path(conn, name), systest.VM, method, args, flags=flags)[1]


def main():
    argv = sys.argv[1:]
    p2p = "--p2p" in argv
    flags = Gio.DBusCallFlags.NONE
    if "--interactive" in argv:
        flags = Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION
    argv = [a for a in argv if not a.startswith("--")]
    address, ops = argv[0], argv[1:]
    conn_flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
    if not p2p:
        conn_flags |= Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    try:
        conn = Gio.DBusConnection.new_for_address_sync(address, conn_flags, None, None)
    except GLib.Error as e:
        print(json.dumps({"op": "connect", "error": e.message}), flush=True)
        return
    i = 0
    while i < len(ops):
        op = ops[i]
        name = None
        if op not in ("list", "reload", "managed"):
            i += 1
            name = ops[i]
        if op == "managed":
            error, reply = managed_objects(conn, flags)
            print(json.dumps({"op": op, "vm": None, "error": error, "reply": reply}), flush=True)
        else:
            result = {"op": op, "vm": name}
            result["error"] = run(conn, op, name, flags, result)
            print(json.dumps(result), flush=True)
        i += 1


if __name__ == "__main__":
    main()
