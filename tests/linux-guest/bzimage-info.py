#!/usr/bin/python3
"""Print the x86 boot-protocol facts of a bzImage and (optionally) a vmlinux.

Usage: bzimage-info.py BZIMAGE [VMLINUX]
       bzimage-info.py --payload BZIMAGE   -> "OFFSET LENGTH" of the compressed
                                             payload (file offsets, decimal)

bzImage: the real-mode setup header at 0x1f1 (Documentation/x86/boot.rst).
vmlinux: ELF header, program headers, and the PVH entry point
(XEN_ELFNOTE_PHYS32_ENTRY = 18 in a note named "Xen").
"""
import struct
import sys

XEN_ELFNOTE_PHYS32_ENTRY = 18


def u8(b, o):
    return b[o]


def u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def setup_header(img):
    if u16(img, 0x1FE) != 0xAA55 or img[0x202:0x206] != b"HdrS":
        raise SystemExit("not a bzImage: missing 0xAA55 boot_flag / HdrS magic")
    h = {}
    ss = u8(img, 0x1F1)
    h["setup_sects"] = ss
    ss = ss or 4
    h["pm_offset"] = (ss + 1) * 512  # start of the protected-mode part in the file
    v = u16(img, 0x206)
    h["version"] = v
    h["version_str"] = "%d.%02d" % (v >> 8, v & 0xFF)
    h["loadflags"] = u8(img, 0x211)
    h["code32_start"] = u32(img, 0x214)
    h["initrd_addr_max"] = u32(img, 0x22C)
    h["kernel_alignment"] = u32(img, 0x230)
    h["relocatable_kernel"] = u8(img, 0x234)
    h["min_alignment"] = u8(img, 0x235)
    h["xloadflags"] = u16(img, 0x236)
    h["cmdline_size"] = u32(img, 0x238)
    h["payload_offset"] = u32(img, 0x248)
    h["payload_length"] = u32(img, 0x24C)
    h["pref_address"] = u64(img, 0x258)
    h["init_size"] = u32(img, 0x260)
    h["handover_offset"] = u32(img, 0x264)
    h["kernel_info_offset"] = u32(img, 0x268) if v >= 0x20F else None
    kv = u16(img, 0x20E)
    if kv:
        s = img[kv + 0x200: kv + 0x200 + 256]
        h["kernel_version"] = s.split(b"\0", 1)[0].decode(errors="replace")
    else:
        h["kernel_version"] = ""
    return h


def payload_range(img):
    h = setup_header(img)
    return h["pm_offset"] + h["payload_offset"], h["payload_length"]


XLF = {
    0: "XLF_KERNEL_64",
    1: "XLF_CAN_BE_LOADED_ABOVE_4G",
    2: "XLF_EFI_HANDOVER_32",
    3: "XLF_EFI_HANDOVER_64",
    4: "XLF_EFI_KEXEC",
    5: "XLF_5LEVEL",
    6: "XLF_5LEVEL_ENABLED",
}
LOADFLAGS = {0: "LOADED_HIGH", 1: "KASLR_FLAG", 5: "QUIET_FLAG", 6: "KEEP_SEGMENTS", 7: "CAN_USE_HEAP"}


def flags(v, names):
    return " ".join(n for b, n in names.items() if v & (1 << b)) or "-"


def print_setup(path):
    img = open(path, "rb").read()
    h = setup_header(img)
    magic = img[h["pm_offset"] + h["payload_offset"]:][:6]
    print(f"bzImage: {path} ({len(img)} bytes)")
    print(f"  kernel_version string : {h['kernel_version']}")
    print(f"  boot protocol (0x206) : {h['version_str']} (0x{h['version']:04x})")
    print(f"  setup_sects   (0x1f1) : {h['setup_sects']}  -> protected-mode code at file offset 0x{h['pm_offset']:x}")
    print(f"  loadflags     (0x211) : 0x{h['loadflags']:02x} ({flags(h['loadflags'], LOADFLAGS)})")
    print(f"  code32_start  (0x214) : 0x{h['code32_start']:x}")
    print(f"  initrd_addr_max(0x22c): 0x{h['initrd_addr_max']:x}")
    print(f"  kernel_alignment(0x230): 0x{h['kernel_alignment']:x}")
    print(f"  relocatable_kernel(0x234): {h['relocatable_kernel']}")
    print(f"  min_alignment (0x235) : {h['min_alignment']} (2^n = 0x{1 << h['min_alignment']:x})")
    print(f"  xloadflags    (0x236) : 0x{h['xloadflags']:04x} ({flags(h['xloadflags'], XLF)})")
    print(f"  cmdline_size  (0x238) : {h['cmdline_size']}")
    print(f"  payload_offset(0x248) : 0x{h['payload_offset']:x} (file offset 0x{h['pm_offset'] + h['payload_offset']:x}, magic {magic.hex(' ')})")
    print(f"  payload_length(0x24c) : 0x{h['payload_length']:x} ({h['payload_length']} bytes)")
    print(f"  pref_address  (0x258) : 0x{h['pref_address']:x}")
    print(f"  init_size     (0x260) : 0x{h['init_size']:x} ({h['init_size']} bytes, {h['init_size'] / 1048576:.1f} MiB)")
    print(f"  handover_offset(0x264): 0x{h['handover_offset']:x}")
    if h["kernel_info_offset"] is not None:
        print(f"  kernel_info_offset(0x268): 0x{h['kernel_info_offset']:x}")


PT = {0: "NULL", 1: "LOAD", 2: "DYNAMIC", 3: "INTERP", 4: "NOTE", 6: "PHDR", 7: "TLS",
      0x6474E550: "GNU_EH_FRAME", 0x6474E551: "GNU_STACK", 0x6474E552: "GNU_RELRO",
      0x6474E553: "GNU_PROPERTY"}


def iter_notes(data, off, size):
    end = off + size
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        off += 12
        name = data[off:off + namesz].rstrip(b"\0").decode(errors="replace")
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        yield name, ntype, desc


def print_vmlinux(path):
    d = open(path, "rb").read()
    if d[:4] != b"\x7fELF":
        raise SystemExit(f"{path}: not an ELF file")
    if d[4] != 2 or d[5] != 1:
        raise SystemExit(f"{path}: not ELF64 little-endian")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", d, 16)
    print(f"vmlinux: {path} ({len(d)} bytes)")
    print(f"  ELF64 type={e_type} machine={e_machine} e_entry=0x{e_entry:x} phnum={e_phnum}")
    print("  program headers:")
    print("    %-8s %-10s %-18s %-18s %-10s %-10s %s" % ("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags"))
    pvh = None
    lo, hi = None, 0
    for i in range(e_phnum):
        p_type, p_flags, p_off, p_vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", d, e_phoff + i * e_phentsize)
        fl = ("R" if p_flags & 4 else "-") + ("W" if p_flags & 2 else "-") + ("X" if p_flags & 1 else "-")
        print("    %-8s 0x%08x 0x%016x 0x%016x 0x%08x 0x%08x %s" % (
            PT.get(p_type, hex(p_type)), p_off, p_vaddr, p_paddr, p_filesz, p_memsz, fl))
        if p_type == 1:
            lo = p_paddr if lo is None else min(lo, p_paddr)
            hi = max(hi, p_paddr + p_memsz)
        if p_type == 4:
            for name, ntype, desc in iter_notes(d, p_off, p_filesz):
                if name == "Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                    pvh = int.from_bytes(desc, "little")
                    pvh_len = len(desc)
    if lo is not None:
        print(f"  PT_LOAD physical span: 0x{lo:x}-0x{hi:x} ({(hi - lo) / 1048576:.1f} MiB)")
    if pvh is None:
        print("  PVH entry (Xen note type 18 XEN_ELFNOTE_PHYS32_ENTRY): absent")
    else:
        print(f"  PVH entry (Xen note type 18 XEN_ELFNOTE_PHYS32_ENTRY): 0x{pvh:x} ({pvh_len}-byte desc)")


def main():
    a = sys.argv[1:]
    if len(a) == 2 and a[0] == "--payload":
        off, ln = payload_range(open(a[1], "rb").read())
        print(off, ln)
        return
    if not 1 <= len(a) <= 2 or a[0].startswith("-"):
        raise SystemExit(__doc__)
    print_setup(a[0])
    if len(a) == 2:
        print_vmlinux(a[1])


if __name__ == "__main__":
    main()
