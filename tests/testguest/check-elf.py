#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Static checks of testguest.elf, no VM needed: what microvmd's ELF loader relies on.

- ELF64, x86-64, ET_EXEC, no interpreter, no dynamic section;
- exactly one PT_LOAD, at physical (= virtual) 0x100000, ending below 16 MiB (the pattern mode's
  default region);
- e_entry = 0x100000, and the first instructions there are the marker write
  (mov $1,%eax; out %eax,$0xf8);
- no PVH note (microvmd would enter through it instead of the 64-bit entry).
Usage: check-elf.py testguest.elf
"""
import struct
import sys

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
MARKER = bytes.fromhex("b801000000e7f8")


def main(path):
    data = open(path, "rb").read()
    errors = []

    def check(cond, msg):
        if not cond:
            errors.append(msg)

    check(data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64")
    (e_type, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize, e_phnum) = struct.unpack_from(
        "<HHIQQQIHHH", data, 16)
    check(e_type == 2, f"e_type {e_type}, expected ET_EXEC")
    check(e_machine == 62, f"e_machine {e_machine}, expected x86-64")
    check(e_entry == 0x100000, f"e_entry {e_entry:#x}, expected 0x100000")

    loads = []
    for i in range(e_phnum):
        (p_type, _, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _) = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        check(p_type not in (PT_DYNAMIC, PT_INTERP), f"segment {i} is dynamic/interp")
        if p_type == PT_LOAD:
            loads.append((p_offset, p_vaddr, p_paddr, p_filesz, p_memsz))
        if p_type == PT_NOTE:
            off = p_offset
            while off + 12 <= p_offset + p_filesz:
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                name = data[off + 12:off + 12 + namesz].rstrip(b"\0")
                check(not (name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY),
                      "has a PVH entry note")
                off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4

    check(len(loads) == 1, f"{len(loads)} PT_LOAD segments, expected 1")
    if loads:
        p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = loads[0]
        check(p_paddr == 0x100000, f"PT_LOAD p_paddr {p_paddr:#x}, expected 0x100000")
        check(p_vaddr == p_paddr, f"PT_LOAD p_vaddr {p_vaddr:#x} != p_paddr")
        check(p_paddr + p_memsz <= 16 << 20, f"image ends at {p_paddr + p_memsz:#x}, past 16 MiB")
        entry_off = p_offset + (e_entry - p_paddr)
        first = data[entry_off:entry_off + len(MARKER)]
        check(first == MARKER, f"entry starts with {first.hex()}, expected the marker {MARKER.hex()}")
        print(f"PT_LOAD paddr {p_paddr:#x} filesz {p_filesz:#x} memsz {p_memsz:#x}, "
              f"entry {e_entry:#x}: {first.hex()}")

    for e in errors:
        print(f"FAIL {path}: {e}")
    if not errors:
        print(f"PASS {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
