#!/usr/bin/python3
"""Write a newc ("070701") cpio archive from a tiny spec, without root.

Used by tests/linux-guest/build-linux-guest.  Because the archive is written
directly, device nodes (e.g. /dev/console, c 5 1) can be created without
mknod privileges, and every header gets uid/gid 0 and mtime 0 so the output
is reproducible.

Spec format (one entry per line, '#' comments, like the kernel's
usr/gen_init_cpio):
    dir   <name> <mode>
    file  <name> <hostpath> <mode>
    slink <name> <target> <mode>
    nod   <name> <mode> <c|b> <major> <minor>

Usage: mkinitramfs.py SPEC OUT.cpio
"""
import os
import stat
import sys


class NewcWriter:
    def __init__(self, fp):
        self.fp = fp
        self.ino = 721  # arbitrary start, like gen_init_cpio
        self.off = 0

    def _w(self, data):
        self.fp.write(data)
        self.off += len(data)

    def _pad(self):
        if self.off % 4:
            self._w(b"\0" * (4 - self.off % 4))

    def entry(self, name, mode, data=b"", nlink=1, rmaj=0, rmin=0):
        name = name.lstrip("/")
        nb = name.encode() + b"\0"
        fields = [
            self.ino, mode, 0, 0, nlink, 0, len(data),
            0, 0, rmaj, rmin, len(nb), 0,
        ]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._w(hdr)
        self._w(nb)
        self._pad()
        if data:
            self._w(data)
            self._pad()

    def trailer(self):
        self.ino = 0
        self.entry("TRAILER!!!", 0)
        # pad the archive to a 512-byte multiple like GNU cpio does
        if self.off % 512:
            self._w(b"\0" * (512 - self.off % 512))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    spec, out = sys.argv[1:]
    seen = set()
    with open(spec) as sf, open(out, "wb") as of:
        w = NewcWriter(of)
        for lineno, line in enumerate(sf, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            f = line.split()
            kind, name = f[0], f[1]
            if name in seen:
                sys.exit(f"{spec}:{lineno}: duplicate entry {name}")
            seen.add(name)
            if kind == "dir":
                w.entry(name, stat.S_IFDIR | int(f[2], 8), nlink=2)
            elif kind == "file":
                with open(f[2], "rb") as hf:
                    data = hf.read()
                w.entry(name, stat.S_IFREG | int(f[3], 8), data)
            elif kind == "slink":
                w.entry(name, stat.S_IFLNK | int(f[3], 8), f[2].encode())
            elif kind == "nod":
                t = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[f[3]]
                w.entry(name, t | int(f[2], 8), rmaj=int(f[4]), rmin=int(f[5]))
            else:
                sys.exit(f"{spec}:{lineno}: unknown entry type {kind}")
        w.trailer()


if __name__ == "__main__":
    main()
