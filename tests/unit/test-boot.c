/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/boot: tiny ELF and bzImage kernels built in memory, loaded into guest
 * RAM, and every structure checked the way a kernel would read it. The zero
 * page is read through the kernel's own UAPI <asm/bootparam.h>, independently
 * of lib/boot's layout. Hostile images must fail with INVALID_ARGUMENT.
 */
#include <asm/bootparam.h>
#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "acpi.h"
#include "boot.h"
#include "layout.h"
#include "memory.h"
#include "microvm.h"

#define MEM_64M        (64 * MVM_MIB)
#define SEG0_PADDR     0x1000000ULL
#define SEG0_VADDR     0xffffffff81000000ULL
#define SEG0_FILESZ    0x3000
#define SEG0_MEMSZ     0x5000
#define SEG1_PADDR     0x1200000ULL
#define SEG1_SIZE      0x1000
#define PVH_ENTRY      0x1000100ULL
#define BZ_SETUP_SECTS 3
#define BZ_PM_SIZE     0x3000

/* ---- helpers ---- */

static int memfd_with(const void *data, gsize len)
{
    int fd = memfd_create("test-boot", MFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, data, len), ==, (gssize)len);
    return fd;
}

static MvmMemory *new_memory(guint64 size)
{
    g_autoptr(GError) error = NULL;
    MvmMemory *mem = mvm_memory_new(size, &error);

    g_assert_no_error(error);
    return mem;
}

static guint8 *guest(MvmMemory *mem, guint64 gpa, guint64 len)
{
    guint8 *p = mvm_memory_get_ptr(mem, gpa, len);

    g_assert_nonnull(p);
    return p;
}

static guint64 read64(MvmMemory *mem, guint64 gpa)
{
    guint64 v;

    memcpy(&v, guest(mem, gpa, 8), 8);
    return v;
}

static guint32 read32(MvmMemory *mem, guint64 gpa)
{
    guint32 v;

    memcpy(&v, guest(mem, gpa, 4), 4);
    return v;
}

static guint8 sum8(const guint8 *p, gsize len)
{
    guint8 s = 0;

    for (gsize i = 0; i < len; i++)
        s += p[i];
    return s;
}

static guint count_occurrences(const guint8 *hay, gsize len, const void *needle, gsize nlen)
{
    guint n = 0;

    for (gsize i = 0; i + nlen <= len; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            n++;
    return n;
}

static void fill_pattern(guint8 *p, gsize len, guint8 seed)
{
    for (gsize i = 0; i < len; i++)
        p[i] = (guint8)(seed + i * 7);
}

/* ---- image builders ---- */

static void put_note(GByteArray *b, const char *name, guint32 type, const void *desc,
                     guint32 descsz)
{
    Elf64_Nhdr nh = {.n_namesz = strlen(name) + 1, .n_descsz = descsz, .n_type = type};
    guint8 pad[8] = {0};

    g_byte_array_append(b, (guint8 *)&nh, sizeof(nh));
    g_byte_array_append(b, (const guint8 *)name, nh.n_namesz);
    g_byte_array_append(b, pad, (4 - nh.n_namesz % 4) % 4);
    g_byte_array_append(b, desc, descsz);
    g_byte_array_append(b, pad, (4 - descsz % 4) % 4);
}

/* phdr 0: LOAD at SEG0 (with .bss), 1: LOAD at SEG1, 2: NOTE (a GNU note, then Xen PVH). */
static GByteArray *build_elf(gboolean with_pvh)
{
    GByteArray *b = g_byte_array_new();
    g_autoptr(GByteArray) notes = g_byte_array_new();
    guint8 gnu_desc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    guint64 pvh = PVH_ENTRY;

    put_note(notes, "GNU", 3, gnu_desc, sizeof(gnu_desc));
    if (with_pvh)
        put_note(notes, "Xen", 18, &pvh, 8);
    g_byte_array_set_size(b, 0x5000);
    memset(b->data, 0, b->len);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b->data;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = SEG0_PADDR;
    eh->e_phoff = sizeof(Elf64_Ehdr);
    eh->e_ehsize = sizeof(Elf64_Ehdr);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 3;
    Elf64_Phdr *ph = (Elf64_Phdr *)(b->data + eh->e_phoff);
    ph[0] = (Elf64_Phdr){PT_LOAD,    PF_R | PF_X, 0x1000,     SEG0_VADDR,
                         SEG0_PADDR, SEG0_FILESZ, SEG0_MEMSZ, 0x1000};
    ph[1] = (Elf64_Phdr){PT_LOAD,    PF_R | PF_W, 0x4000,    SEG0_VADDR + 0x200000,
                         SEG1_PADDR, SEG1_SIZE,   SEG1_SIZE, 0x1000};
    ph[2] = (Elf64_Phdr){PT_NOTE, PF_R, 0x200, 0, 0, notes->len, notes->len, 4};
    memcpy(b->data + 0x200, notes->data, notes->len);
    fill_pattern(b->data + 0x1000, SEG0_FILESZ, 0x11);
    fill_pattern(b->data + 0x4000, SEG1_SIZE, 0x22);
    return b;
}

static Elf64_Ehdr *elf_ehdr(GByteArray *b)
{
    return (Elf64_Ehdr *)b->data;
}

static GByteArray *build_bzimage(void)
{
    GByteArray *b = g_byte_array_new();
    guint setup_size = (BZ_SETUP_SECTS + 1) * 512;

    g_byte_array_set_size(b, setup_size + BZ_PM_SIZE);
    memset(b->data, 0, b->len);
    struct setup_header *h = (struct setup_header *)(b->data + 0x1f1);
    h->setup_sects = BZ_SETUP_SECTS;
    h->vid_mode = 0xffff;
    h->boot_flag = 0xaa55;
    h->jump = 0x6aeb; /* jmp short: the header ends at 0x202 + 0x6a = 0x26c */
    h->header = 0x53726448;
    h->version = 0x020f;
    h->kernel_version = 0x1234;
    h->loadflags = LOADED_HIGH;
    h->code32_start = 0x100000;
    h->initrd_addr_max = 0x7fffffff;
    h->kernel_alignment = 0x200000;
    h->relocatable_kernel = 1;
    h->min_alignment = 21;
    h->xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    h->cmdline_size = 2047;
    h->pref_address = 0x1000000;
    h->init_size = 0x800000;
    fill_pattern(b->data + setup_size, BZ_PM_SIZE, 0x33);
    return b;
}

static struct setup_header *bz_header(GByteArray *b)
{
    return (struct setup_header *)(b->data + 0x1f1);
}

static const MvmBootMmioDevice test_devices[] = {
    {MVM_VIRTIO_MMIO_BASE, MVM_VIRTIO_MMIO_SIZE, MVM_VIRTIO_IRQ_BASE},
    {MVM_VIRTIO_MMIO_BASE + MVM_VIRTIO_MMIO_SIZE, MVM_VIRTIO_MMIO_SIZE, MVM_VIRTIO_IRQ_BASE + 1},
};

static MvmBootConfig default_config(int kernel_fd, int initrd_fd)
{
    return (MvmBootConfig){
        .kernel_fd = kernel_fd,
        .initrd_fd = initrd_fd,
        .cmdline = "console=ttyS0 panic=-1",
        .n_vcpus = 2,
        .announce_mmio_on_cmdline = TRUE,
        .mmio_devices = test_devices,
        .n_mmio_devices = G_N_ELEMENTS(test_devices),
    };
}

static gboolean load_bytes(MvmMemory *mem, GByteArray *kernel, int initrd_fd, MvmBootInfo *info,
                           GError **error)
{
    int fd = memfd_with(kernel->data, kernel->len);
    MvmBootConfig config = default_config(fd, initrd_fd);
    gboolean ok = mvm_boot_load_linux(mem, &config, info, error);

    close(fd);
    return ok;
}

/* ---- checks shared by the happy paths ---- */

static const char *expected_cmdline = "console=ttyS0 panic=-1 virtio_mmio.device=4K@0xd0000000:5 "
                                      "virtio_mmio.device=4K@0xd0001000:6";

static void check_e820(MvmMemory *mem, const struct boot_e820_entry *e, guint n)
{
    guint64 ram = 0, reserved = 0;

    g_assert_cmpuint(n, ==, mvm_memory_get_n_regions(mem) + 2);
    g_assert_cmpuint(e[0].addr, ==, 0);
    g_assert_cmpuint(e[0].size, ==, MVM_EBDA_START);
    g_assert_cmpuint(e[1].type, ==, 2);
    g_assert_cmpuint(e[1].addr + e[1].size, ==, MVM_HIMEM_START);
    g_assert_cmpuint(e[2].addr, ==, MVM_HIMEM_START);
    for (guint i = 0; i < n; i++) {
        if (e[i].type == 1)
            ram += e[i].size;
        else
            reserved += e[i].size;
        if (i > 0) /* sorted, no overlap */
            g_assert_cmpuint(e[i].addr, >=, e[i - 1].addr + e[i - 1].size);
    }
    g_assert_cmpuint(ram + reserved, ==, mvm_memory_get_size(mem));
    g_assert_cmpuint(e[n - 1].addr + e[n - 1].size, ==, mvm_memory_get_end(mem));
    if (n == 4)
        g_assert_cmpuint(e[3].addr, ==, MVM_MMIO_GAP_END);
}

static void check_zero_page(MvmMemory *mem, const MvmBootInfo *info)
{
    const struct boot_params *bp = (const void *)guest(mem, MVM_ZERO_PAGE_ADDR, sizeof(*bp));

    g_assert_cmpuint(info->boot_params_gpa, ==, MVM_ZERO_PAGE_ADDR);
    g_assert_cmphex(bp->hdr.boot_flag, ==, 0xaa55);
    g_assert_cmphex(bp->hdr.header, ==, 0x53726448);
    g_assert_cmphex(bp->hdr.type_of_loader, ==, 0xff);
    g_assert_true(bp->hdr.loadflags & LOADED_HIGH);
    g_assert_cmphex(bp->hdr.cmd_line_ptr, ==, MVM_CMDLINE_ADDR);
    g_assert_cmphex(bp->ext_cmd_line_ptr, ==, 0);
    g_assert_cmphex(bp->hdr.ramdisk_image | ((guint64)bp->ext_ramdisk_image << 32), ==,
                    info->initrd_start);
    g_assert_cmphex(bp->hdr.ramdisk_size | ((guint64)bp->ext_ramdisk_size << 32), ==,
                    info->initrd_size);
    g_assert_cmphex(bp->acpi_rsdp_addr, ==, MVM_ACPI_RSDP_ADDR);
    g_assert_cmpuint(bp->sentinel, ==, 0);
    check_e820(mem, bp->e820_table, bp->e820_entries);
}

static void check_cmdline(MvmMemory *mem, const MvmBootInfo *info)
{
    const char *in_guest = (const char *)guest(mem, MVM_CMDLINE_ADDR, strlen(expected_cmdline) + 1);

    g_assert_cmpstr(info->cmdline, ==, expected_cmdline);
    g_assert_cmpstr(in_guest, ==, expected_cmdline);
}

static int initrd_fd_of(gsize size, guint8 seed)
{
    g_autofree guint8 *data = g_malloc(size);

    fill_pattern(data, size, seed);
    return memfd_with(data, size);
}

static void check_initrd(MvmMemory *mem, const MvmBootInfo *info, gsize size, guint8 seed,
                         guint64 limit)
{
    g_autofree guint8 *expect = g_malloc(size);

    fill_pattern(expect, size, seed);
    g_assert_cmpuint(info->initrd_size, ==, size);
    g_assert_cmpuint(info->initrd_start % MVM_PAGE_SIZE, ==, 0);
    g_assert_cmpuint(info->initrd_start, >=, info->kernel_end);
    g_assert_cmpuint(info->initrd_start + size, <=, limit);
    g_assert_cmpuint(info->initrd_start + size, >, limit - MVM_PAGE_SIZE);
    g_assert_cmpmem(guest(mem, info->initrd_start, size), size, expect, size);
}

/* ---- ELF ---- */

static void test_elf_load(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) elf = build_elf(TRUE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int initrd = initrd_fd_of(100000, 0x44);

    memset(guest(mem, SEG0_PADDR, SEG0_MEMSZ), 0xcc, SEG0_MEMSZ); /* .bss must be cleared */
    g_assert_true(load_bytes(mem, elf, initrd, &info, &error));
    g_assert_no_error(error);
    close(initrd);

    g_assert_cmpint(info.format, ==, MVM_KERNEL_FORMAT_ELF);
    g_assert_cmpint(info.entry_kind, ==, MVM_BOOT_ENTRY_LINUX64);
    g_assert_cmphex(info.entry, ==, SEG0_PADDR);
    g_assert_cmphex(info.kernel_start, ==, SEG0_PADDR);
    g_assert_cmphex(info.kernel_end, ==, SEG1_PADDR + SEG1_SIZE);
    g_assert_cmpuint(info.protocol_version, ==, 0);
    g_assert_cmpmem(guest(mem, SEG0_PADDR, SEG0_FILESZ), SEG0_FILESZ, elf->data + 0x1000,
                    SEG0_FILESZ);
    for (guint64 a = SEG0_PADDR + SEG0_FILESZ; a < SEG0_PADDR + SEG0_MEMSZ; a++)
        g_assert_cmpuint(*guest(mem, a, 1), ==, 0);
    g_assert_cmpmem(guest(mem, SEG1_PADDR, SEG1_SIZE), SEG1_SIZE, elf->data + 0x4000, SEG1_SIZE);
    check_zero_page(mem, &info);
    check_cmdline(mem, &info);
    check_initrd(mem, &info, 100000, 0x44, MEM_64M);
}

/* A .bss that starts and ends inside pages: whole pages are dropped, the edges written. */
static void test_elf_bss_unaligned(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) elf = build_elf(FALSE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    Elf64_Phdr *ph = (Elf64_Phdr *)(elf->data + elf_ehdr(elf)->e_phoff);
    const guint64 filesz = 0x1234, memsz = 0x4567;

    ph[0].p_filesz = filesz;
    ph[0].p_memsz = memsz;
    memset(guest(mem, SEG0_PADDR, 0x6000), 0xcc, 0x6000);
    g_assert_true(load_bytes(mem, elf, -1, &info, &error));
    g_assert_no_error(error);
    g_assert_cmpmem(guest(mem, SEG0_PADDR, filesz), filesz, elf->data + 0x1000, filesz);
    for (guint64 a = SEG0_PADDR + filesz; a < SEG0_PADDR + memsz; a++)
        g_assert_cmpuint(*guest(mem, a, 1), ==, 0);
    /* Past the segment nothing was touched. */
    g_assert_cmpuint(*guest(mem, SEG0_PADDR + memsz, 1), ==, 0xcc);
    g_assert_cmpuint(*guest(mem, SEG0_PADDR + 0x5fff, 1), ==, 0xcc);
}

static void test_elf_virtual_entry(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) elf = build_elf(FALSE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;

    elf_ehdr(elf)->e_entry = SEG0_VADDR + 0x40;
    g_assert_true(load_bytes(mem, elf, -1, &info, &error));
    g_assert_no_error(error);
    g_assert_cmphex(info.entry, ==, SEG0_PADDR + 0x40);
    g_assert_cmpuint(info.initrd_start, ==, 0);
}

static void test_elf_pvh(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) elf = build_elf(TRUE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int kernel = memfd_with(elf->data, elf->len);
    int initrd = initrd_fd_of(5000, 0x55);
    MvmBootConfig config = default_config(kernel, initrd);

    config.prefer_pvh = TRUE;
    g_assert_true(mvm_boot_load_linux(mem, &config, &info, &error));
    g_assert_no_error(error);
    close(kernel);
    close(initrd);
    g_assert_cmpint(info.entry_kind, ==, MVM_BOOT_ENTRY_PVH);
    g_assert_cmphex(info.entry, ==, PVH_ENTRY);
    g_assert_cmphex(info.boot_params_gpa, ==, MVM_PVH_START_INFO_ADDR);
    check_cmdline(mem, &info);

    /* hvm_start_info version 1: magic, cmdline, modlist (the initrd), memmap, rsdp. */
    guint64 si = MVM_PVH_START_INFO_ADDR;
    g_assert_cmphex(read32(mem, si + 0), ==, 0x336ec578);
    g_assert_cmpuint(read32(mem, si + 4), ==, 1);
    g_assert_cmpuint(read32(mem, si + 12), ==, 1);
    g_assert_cmphex(read64(mem, si + 24), ==, MVM_CMDLINE_ADDR);
    g_assert_cmphex(read64(mem, si + 32), ==, MVM_ACPI_RSDP_ADDR);
    guint64 mod = read64(mem, si + 16);
    g_assert_cmphex(read64(mem, mod), ==, info.initrd_start);
    g_assert_cmpuint(read64(mem, mod + 8), ==, 5000);
    guint64 map = read64(mem, si + 40);
    guint n = read32(mem, si + 48);
    struct boot_e820_entry e820[4];
    g_assert_cmpuint(n, ==, 3);
    for (guint i = 0; i < n; i++) {
        e820[i].addr = read64(mem, map + 24 * i);
        e820[i].size = read64(mem, map + 24 * i + 8);
        e820[i].type = read32(mem, map + 24 * i + 16);
    }
    check_e820(mem, e820, n);
    g_assert_cmpuint(map + 24 * n, <=, si + MVM_PAGE_SIZE);
    g_assert_cmpuint(mod + 32, <=, map);
}

static void test_elf_pvh_absent(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) elf = build_elf(FALSE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int kernel = memfd_with(elf->data, elf->len);
    MvmBootConfig config = default_config(kernel, -1);

    config.prefer_pvh = TRUE;
    g_assert_true(mvm_boot_load_linux(mem, &config, &info, &error));
    close(kernel);
    g_assert_cmpint(info.entry_kind, ==, MVM_BOOT_ENTRY_LINUX64);
    g_assert_cmphex(info.entry, ==, SEG0_PADDR);
}

/* ---- bzImage ---- */

static void test_bzimage_load(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) bz = build_bzimage();
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int initrd = initrd_fd_of(3 * 4096 + 17, 0x66);

    bz_header(bz)->initrd_addr_max = 0x2ffffff; /* the initrd must end at 48 MiB */
    g_assert_true(load_bytes(mem, bz, initrd, &info, &error));
    g_assert_no_error(error);
    close(initrd);

    g_assert_cmpint(info.format, ==, MVM_KERNEL_FORMAT_BZIMAGE);
    g_assert_cmpint(info.entry_kind, ==, MVM_BOOT_ENTRY_LINUX64);
    g_assert_cmphex(info.entry, ==, 0x100200);
    g_assert_cmphex(info.protocol_version, ==, 0x020f);
    g_assert_cmphex(info.kernel_start, ==, 0x100000);
    g_assert_cmphex(info.kernel_end, ==, 0x100000 + BZ_PM_SIZE);
    g_assert_cmpmem(guest(mem, 0x100000, BZ_PM_SIZE), BZ_PM_SIZE,
                    bz->data + (BZ_SETUP_SECTS + 1) * 512, BZ_PM_SIZE);
    check_zero_page(mem, &info);
    check_cmdline(mem, &info);
    /* Above the kernel's decompression area (16 MiB + init_size), below initrd_addr_max. */
    check_initrd(mem, &info, 3 * 4096 + 17, 0x66, 0x3000000);

    const struct boot_params *bp = (const void *)guest(mem, MVM_ZERO_PAGE_ADDR, sizeof(*bp));
    const struct setup_header *src = bz_header(bz);
    g_assert_cmpuint(bp->hdr.setup_sects, ==, BZ_SETUP_SECTS);
    g_assert_cmphex(bp->hdr.version, ==, 0x020f);
    g_assert_cmphex(bp->hdr.kernel_version, ==, src->kernel_version);
    g_assert_cmphex(bp->hdr.kernel_alignment, ==, src->kernel_alignment);
    g_assert_cmphex(bp->hdr.pref_address, ==, src->pref_address);
    g_assert_cmphex(bp->hdr.init_size, ==, src->init_size);
    g_assert_cmphex(bp->hdr.xloadflags, ==, src->xloadflags);
    g_assert_cmphex(bp->hdr.vid_mode, ==, 0xffff);
    g_assert_cmphex(bp->hdr.loadflags, ==, LOADED_HIGH | CAN_USE_HEAP);
    g_assert_cmphex(bp->hdr.heap_end_ptr, !=, 0);
}

/* ---- > 3 GiB: RAM split at the gap ---- */

static void test_large_memory(void)
{
    g_autoptr(MvmMemory) mem = new_memory(4 * MVM_GIB);
    g_autoptr(GByteArray) elf = build_elf(FALSE);
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int initrd = initrd_fd_of(8192, 0x77);

    g_assert_true(load_bytes(mem, elf, initrd, &info, &error));
    g_assert_no_error(error);
    close(initrd);
    const struct boot_params *bp = (const void *)guest(mem, MVM_ZERO_PAGE_ADDR, sizeof(*bp));
    g_assert_cmpuint(bp->e820_entries, ==, 4);
    g_assert_cmphex(bp->e820_table[2].addr + bp->e820_table[2].size, ==, MVM_MMIO_GAP_START);
    g_assert_cmphex(bp->e820_table[3].addr, ==, 4 * MVM_GIB);
    g_assert_cmphex(bp->e820_table[3].size, ==, 1 * MVM_GIB);
    check_zero_page(mem, &info);
    /* x86-64 initrd_addr_max (2 GiB - 1) wins over the end of low RAM (3 GiB). */
    check_initrd(mem, &info, 8192, 0x77, 0x80000000);
}

/* ---- GDT and page tables ---- */

static guint64 walk(MvmMemory *mem, guint64 va)
{
    const guint64 addr_mask = 0x000ffffffffff000ULL;
    guint64 pml4e = read64(mem, MVM_PML4_ADDR + ((va >> 39) & 511) * 8);
    g_assert_true(pml4e & 1);
    guint64 pdpte = read64(mem, (pml4e & addr_mask) + ((va >> 30) & 511) * 8);
    g_assert_true(pdpte & 1);
    g_assert_false(pdpte & 0x80);
    guint64 pde = read64(mem, (pdpte & addr_mask) + ((va >> 21) & 511) * 8);
    g_assert_true(pde & 1);
    g_assert_true(pde & 2);
    g_assert_true(pde & 0x80);
    return (pde & 0x000fffffffe00000ULL) | (va & 0x1fffff);
}

static void test_page_tables(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    const guint64 addrs[] = {0, 0x1234567, 0x100200, 0xd0000000, 0xfee00000, 0xffffffff};

    g_assert_true(mvm_boot_write_gdt_and_page_tables(mem, &error));
    g_assert_no_error(error);
    for (guint i = 0; i < G_N_ELEMENTS(addrs); i++)
        g_assert_cmphex(walk(mem, addrs[i]), ==, addrs[i]);
    g_assert_cmphex(read64(mem, MVM_PML4_ADDR + 8), ==, 0);              /* nothing above 512 GiB */
    g_assert_true(read64(mem, MVM_PD_ADDR + 3 * 4096 + 511 * 8) & 0x10); /* gap: uncached */
    g_assert_false(read64(mem, MVM_PD_ADDR) & 0x10);
}

static void test_gdt(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    struct kvm_segment s;

    g_assert_true(mvm_boot_write_gdt_and_page_tables(mem, &error));
    for (guint i = 0; i < MVM_BOOT_GDT_ENTRIES; i++)
        g_assert_cmphex(read64(mem, MVM_GDT_ADDR + 8 * i), ==, mvm_boot_gdt_entry(i));
    g_assert_cmphex(mvm_boot_gdt_entry(0), ==, 0);
    g_assert_cmphex(mvm_boot_gdt_entry(MVM_BOOT_GDT_ENTRIES), ==, 0);

    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_CS / 8), MVM_BOOT_CS, &s);
    g_assert_cmphex(s.base, ==, 0);
    g_assert_cmphex(s.limit, ==, 0xffffffff);
    g_assert_cmpuint(s.selector, ==, 0x10);
    g_assert_cmpuint(s.type, ==, 0xb);
    g_assert_true(s.present && s.s && s.l && s.g && !s.db && !s.unusable && s.dpl == 0);

    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_DS / 8), MVM_BOOT_DS, &s);
    g_assert_cmpuint(s.type, ==, 0x3);
    g_assert_true(s.present && s.s && !s.l && s.g && s.db);
    g_assert_cmphex(s.limit, ==, 0xffffffff);

    mvm_boot_segment_from_gdt(mvm_boot_gdt_entry(MVM_BOOT_CS32 / 8), MVM_BOOT_CS32, &s);
    g_assert_true(s.present && s.db && !s.l && s.type == 0xb && s.limit == 0xffffffff);

    mvm_boot_segment_from_gdt(0, 0, &s);
    g_assert_true(s.unusable && !s.present);

    /* Base and limit split over the descriptor, byte granularity, DPL 3, AVL. */
    mvm_boot_segment_from_gdt(0x1211f2345678abcdULL, 0x2b, &s);
    g_assert_cmphex(s.base, ==, 0x12345678);
    g_assert_cmphex(s.limit, ==, 0x1abcd);
    g_assert_cmpuint(s.dpl, ==, 3);
    g_assert_cmpuint(s.type, ==, 2);
    g_assert_true(s.avl && s.present && s.s && !s.g && !s.l && !s.db);
}

/* ---- ACPI ---- */

static guint64 find_rsdp(MvmMemory *mem)
{
    for (guint64 a = 0xe0000; a < 0x100000; a += 16)
        if (memcmp(guest(mem, a, 8), "RSD PTR ", 8) == 0)
            return a;
    g_assert_not_reached();
}

/* Returns the table at @gpa after checking signature, bounds and checksum. */
static const guint8 *acpi_table(MvmMemory *mem, guint64 gpa, const char *sig, guint32 *len)
{
    g_assert_cmphex(gpa, >=, MVM_ACPI_TABLES_ADDR);
    *len = read32(mem, gpa + 4);
    g_assert_cmphex(gpa + *len, <=, MVM_ACPI_TABLES_END);
    const guint8 *t = guest(mem, gpa, *len);
    g_assert_cmpmem(t, 4, sig, 4);
    g_assert_cmpuint(sum8(t, *len), ==, 0);
    return t;
}

/* Decodes a PkgLength (ACPI 6.4 §20.2.4); returns the package length, sets the byte count. */
static guint32 pkg_length(const guint8 *p, guint *nbytes)
{
    guint n = (p[0] >> 6) + 1;
    guint32 len = n == 1 ? (p[0] & 0x3f) : (p[0] & 0x0f);

    for (guint i = 1; i < n; i++)
        len |= (guint32)p[i] << (4 + 8 * (i - 1));
    *nbytes = n;
    return len;
}

/*
 * The generation ID device and the Generic Event Device, byte for byte where a guest parses them:
 * Method(ADDR) { Return(Package(2) { 0xff000, 0 }) }, the GED's Interrupt(Edge, ActiveHigh)
 * { 3 } and Method(_EVT, 1) { Notify(VGEN, 0x80) }.
 */
static void check_vmgenid(const guint8 *dsdt, guint32 len)
{
    static const guint8 addr[] = {0x14, 0x10, 'A',  'D',  'D',  'R',  0x00, 0xa4, 0x12,
                                  0x08, 0x02, 0x0c, 0x00, 0xf0, 0x0f, 0x00, 0x00};
    static const guint8 ged_irq[] = {0x89, 0x06, 0x00, 0x03, 0x01, MVM_VMGENID_GSI, 0, 0, 0};
    static const guint8 evt[] = {0x14, 0x0d, '_', 'E', 'V', 'T',  0x01,
                                 0x86, 'V',  'G', 'E', 'N', 0x0a, 0x80};

    G_STATIC_ASSERT(MVM_VMGENID_ADDR == 0xff000);
    g_assert_cmpuint(count_occurrences(dsdt, len, addr, sizeof(addr)), ==, 1);
    g_assert_cmpuint(count_occurrences(dsdt, len, ged_irq, sizeof(ged_irq)), ==, 1);
    g_assert_cmpuint(count_occurrences(dsdt, len, evt, sizeof(evt)), ==, 1);
    g_assert_cmpuint(count_occurrences(dsdt, len, "\x0dVM_Gen_Counter", 16), ==, 2);
    g_assert_cmpuint(count_occurrences(dsdt, len, "\x0dMVMD0001", 10), ==, 1);
    g_assert_cmpuint(count_occurrences(dsdt, len,
                                       "\x0d"
                                       "ACPI0013",
                                       10),
                     ==, 1);
    g_assert_cmpuint(count_occurrences(dsdt, len, "\x5b\x82", 2), >=, 2);
}

static void check_dsdt(const guint8 *dsdt, guint32 len, const MvmBootMmioDevice *devs, guint n)
{
    g_assert_cmpuint(count_occurrences(dsdt, len, "LNRO0005", 8), ==, n);
    g_assert_cmpuint(count_occurrences(dsdt, len, "_S5_", 4), ==, 1);
    for (guint i = 0; i < n; i++) {
        /* Memory32Fixed(ReadWrite, base, size) then Interrupt(Consumer, Edge, ActiveHigh). */
        guint8 crs[21] = {0x86, 0x09, 0x00, 0x01};
        memcpy(crs + 4, &(guint32){devs[i].base}, 4);
        memcpy(crs + 8, &(guint32){devs[i].size}, 4);
        memcpy(crs + 12, (guint8[]){0x89, 0x06, 0x00, 0x03, 0x01}, 5);
        memcpy(crs + 17, &devs[i].gsi, 4);
        g_assert_cmpuint(count_occurrences(dsdt, len, crs, sizeof(crs)), ==, 1);
    }
    /* Scope(\_SB_) spans exactly up to Name(\_S5_, Package(4) {5, 0, 0, 0}), the last object. */
    static const guint8 s5[] = {0x08, '\\', '_',  'S',  '5',  '_',  0x12,
                                0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00};
    guint nbytes;
    g_assert_cmphex(dsdt[36], ==, 0x10);
    guint32 scope_len = pkg_length(dsdt + 37, &nbytes);
    g_assert_cmpmem(dsdt + 37 + nbytes, 5, "\\_SB_", 5);
    g_assert_cmpuint(37 + scope_len + sizeof(s5), ==, len);
    g_assert_cmpmem(dsdt + 37 + scope_len, sizeof(s5), s5, sizeof(s5));
    g_assert_cmpuint(count_occurrences(dsdt, len, (guint8[]){0x0c, 0x41, 0xd0, 0x05, 0x01}, 5), ==,
                     1); /* EISAID("PNP0501") */
    /* The i8042 (PNP0303) with IRQNoFlags(1): no legacy PIC in hardware-reduced ACPI. */
    g_assert_cmpuint(count_occurrences(dsdt, len, (guint8[]){0x0c, 0x41, 0xd0, 0x03, 0x03}, 5), ==,
                     1);
    g_assert_cmpuint(count_occurrences(dsdt, len, (guint8[]){0x22, 0x02, 0x00}, 3), ==, 1);
    check_vmgenid(dsdt, len);
}

static void check_fadt(const guint8 *fadt, guint32 len, guint64 *dsdt_gpa)
{
    guint32 flags;

    g_assert_cmpuint(len, ==, 276);
    g_assert_cmpuint(fadt[8], ==, 6);
    memcpy(&flags, fadt + 112, 4);
    g_assert_true(flags & (1u << 20)); /* HW_REDUCED_ACPI */
    g_assert_true(flags & (1u << 10)); /* RESET_REG_SUP */
    guint16 boot_arch = fadt[109] | fadt[110] << 8;
    g_assert_cmphex(boot_arch, ==, (1 << 1) | (1 << 2) | (1 << 5));
    memcpy(dsdt_gpa, fadt + 140, 8);
    g_assert_cmphex(fadt[40] | fadt[41] << 8 | fadt[42] << 16 | (guint32)fadt[43] << 24, ==,
                    *dsdt_gpa);                    /* the 32-bit DSDT agrees with X_DSDT */
    for (guint off = 244; off <= 256; off += 12) { /* SLEEP_CONTROL_REG, SLEEP_STATUS_REG */
        guint64 port;
        g_assert_cmpuint(fadt[off], ==, 1); /* system I/O */
        g_assert_cmpuint(fadt[off + 1], ==, 8);
        memcpy(&port, fadt + off + 4, 8);
        g_assert_cmphex(port, ==, MVM_ACPI_SLEEP_PORT);
    }
    g_assert_cmpuint(fadt[116], ==, 1); /* RESET_REG: I/O port 0x64, value 0xfe */
    g_assert_cmphex(fadt[120], ==, 0x64);
    g_assert_cmphex(fadt[128], ==, 0xfe);
}

static void check_madt(const guint8 *madt, guint32 len, guint n_vcpus)
{
    guint lapics = 0, x2apics = 0, ioapics = 0, nmis = 0;

    g_assert_cmphex(madt[36] | madt[37] << 8 | madt[38] << 16 | (guint32)madt[39] << 24, ==,
                    MVM_LAPIC_ADDR);
    for (guint32 off = 44; off < len;) {
        guint8 type = madt[off], elen = madt[off + 1];
        g_assert_cmpuint(elen, >=, 2);
        g_assert_cmpuint(off + elen, <=, len);
        if (type == 0) {
            g_assert_cmpuint(madt[off + 3], ==, lapics); /* APIC IDs 0, 1, ... */
            g_assert_cmpuint(madt[off + 4] & 1, ==, 1);  /* enabled */
            lapics++;
        } else if (type == 9) {
            x2apics++;
        } else if (type == 1) {
            guint32 addr;
            memcpy(&addr, madt + off + 4, 4);
            g_assert_cmphex(addr, ==, MVM_IOAPIC_ADDR);
            g_assert_cmpuint(madt[off + 8] | madt[off + 9] << 8, ==, 0); /* GSI base */
            ioapics++;
        } else if (type == 4) {
            g_assert_cmpuint(madt[off + 5], ==, 1); /* LINT1 */
            nmis++;
        }
        off += elen;
    }
    g_assert_cmpuint(lapics, ==, MIN(n_vcpus, 255));
    g_assert_cmpuint(x2apics, ==, n_vcpus > 255 ? n_vcpus - 255 : 0);
    g_assert_cmpuint(ioapics, ==, 1);
    g_assert_cmpuint(nmis, ==, 1);
}

static void check_acpi(MvmMemory *mem, guint n_vcpus, const MvmBootMmioDevice *devs, guint n)
{
    guint64 rsdp = find_rsdp(mem), xsdt_gpa, dsdt_gpa = 0;
    const guint8 *r = guest(mem, rsdp, 36);
    guint32 xlen, len;
    gboolean seen_fadt = FALSE, seen_madt = FALSE;

    g_assert_cmphex(rsdp, ==, MVM_ACPI_RSDP_ADDR);
    g_assert_cmpuint(sum8(r, 20), ==, 0);
    g_assert_cmpuint(sum8(r, 36), ==, 0);
    g_assert_cmpuint(r[15], ==, 2);
    g_assert_cmpuint(read32(mem, rsdp + 20), ==, 36);
    memcpy(&xsdt_gpa, r + 24, 8);
    const guint8 *xsdt = acpi_table(mem, xsdt_gpa, "XSDT", &xlen);
    g_assert_cmpuint(xlen, ==, 36 + 2 * 8);
    for (guint32 off = 36; off < xlen; off += 8) {
        guint64 gpa;
        memcpy(&gpa, xsdt + off, 8);
        const guint8 *t = guest(mem, gpa, 4);
        if (memcmp(t, "FACP", 4) == 0) {
            const guint8 *fadt = acpi_table(mem, gpa, "FACP", &len);
            check_fadt(fadt, len, &dsdt_gpa);
            seen_fadt = TRUE;
        } else {
            const guint8 *madt = acpi_table(mem, gpa, "APIC", &len);
            check_madt(madt, len, n_vcpus);
            seen_madt = TRUE;
        }
    }
    g_assert_true(seen_fadt && seen_madt);
    const guint8 *dsdt = acpi_table(mem, dsdt_gpa, "DSDT", &len);
    check_dsdt(dsdt, len, devs, n);
}

static void test_acpi(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;

    g_assert_true(mvm_boot_write_acpi(mem, 3, test_devices, G_N_ELEMENTS(test_devices), &error));
    g_assert_no_error(error);
    check_acpi(mem, 3, test_devices, G_N_ELEMENTS(test_devices));
}

/* 32 devices make the Scope's PkgLength take more bytes; 300 vCPUs need x2APIC entries. */
static void test_acpi_large(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    MvmBootMmioDevice devs[MVM_VIRTIO_MMIO_MAX_DEVICES];

    for (guint i = 0; i < G_N_ELEMENTS(devs); i++)
        devs[i] = (MvmBootMmioDevice){MVM_VIRTIO_MMIO_BASE + i * MVM_VIRTIO_MMIO_SIZE,
                                      MVM_VIRTIO_MMIO_SIZE, MVM_VIRTIO_IRQ_BASE + i % 19};
    g_assert_true(mvm_boot_write_acpi(mem, 300, devs, G_N_ELEMENTS(devs), &error));
    g_assert_no_error(error);
    check_acpi(mem, 300, devs, G_N_ELEMENTS(devs));
    g_assert_true(mvm_boot_write_acpi(mem, 1, NULL, 0, &error));
    check_acpi(mem, 1, NULL, 0);
}

static char *run_iasl(const char *dir, const char *const *args)
{
    g_autofree char *out = NULL, *err = NULL;
    g_autoptr(GError) error = NULL;
    int status;
    g_autoptr(GPtrArray) argv = g_ptr_array_new();

    g_ptr_array_add(argv, "iasl");
    for (guint i = 0; args[i] != NULL; i++)
        g_ptr_array_add(argv, (gpointer)args[i]);
    g_ptr_array_add(argv, NULL);
    g_assert_true(g_spawn_sync(dir, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error));
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(status, NULL))
        g_error("iasl %s failed:\n%s%s", args[0], out, err);
    return g_steal_pointer(&out);
}

/*
 * ACPICA's own disassembler and compiler, which Linux's interpreter shares, read the DSDT back:
 * it must disassemble, say what we meant, and compile again without an error.
 */
static void test_acpi_iasl(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    g_autofree char *iasl = g_find_program_in_path("iasl");
    guint32 len;

    if (iasl == NULL) {
        g_test_skip("iasl is not installed (acpica-tools; scripts/install-deps installs it)");
        return;
    }
    g_assert_true(mvm_boot_write_acpi(mem, 2, test_devices, G_N_ELEMENTS(test_devices), &error));
    const guint8 *dsdt = acpi_table(mem, MVM_ACPI_TABLES_ADDR, "DSDT", &len);
    g_autofree char *dir = g_dir_make_tmp("test-boot-iasl-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *dat = g_build_filename(dir, "dsdt.dat", NULL);
    g_autofree char *dsl = g_build_filename(dir, "dsdt.dsl", NULL);
    g_assert_true(g_file_set_contents(dat, (const char *)dsdt, len, &error));
    g_free(run_iasl(dir, (const char *const[]){"-d", "dsdt.dat", NULL}));
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(dsl, &text, NULL, &error));
    static const char *const expected[] = {
        "Device (VGEN)",
        "Name (_CID, \"VM_Gen_Counter\")",
        "Method (ADDR, 0, NotSerialized)",
        "0x000FF000",
        "Device (GED)",
        "Name (_HID, \"ACPI0013\"",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
        "0x00000003,",
        "Method (_EVT, 1, NotSerialized)",
        "Notify (VGEN, 0x80)",
        "Name (_HID, \"LNRO0005\"",
    };
    for (guint i = 0; i < G_N_ELEMENTS(expected); i++)
        if (strstr(text, expected[i]) == NULL)
            g_error("the disassembled DSDT lacks \"%s\":\n%s", expected[i], text);
    g_autofree char *compiled = run_iasl(dir, (const char *const[]){"-ve", "dsdt.dsl", NULL});
    g_test_message("iasl: %s", compiled);
    g_unlink(dat);
    g_unlink(dsl);
    g_autofree char *aml = g_build_filename(dir, "dsdt.aml", NULL);
    g_unlink(aml);
    g_rmdir(dir);
}

static void test_acpi_bad_devices(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    MvmBootMmioDevice high = {0x100000000ULL, 0x1000, 5};
    MvmBootMmioDevice bad_gsi = {MVM_VIRTIO_MMIO_BASE, 0x1000, 24};

    g_assert_false(mvm_boot_write_acpi(mem, 1, &high, 1, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(mvm_boot_write_acpi(mem, 1, &bad_gsi, 1, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(mvm_boot_write_acpi(mem, 0, NULL, 0, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

/* ---- MP table ---- */

static void check_mptable(MvmMemory *mem, guint n_vcpus)
{
    const guint8 *fp = guest(mem, MVM_MPTABLE_ADDR, 16);

    g_assert_cmpmem(fp, 4, "_MP_", 4);
    g_assert_cmpuint(sum8(fp, 16), ==, 0);
    g_assert_cmpuint(fp[8], ==, 1);
    g_assert_cmpuint(fp[9], ==, 4);
    guint32 gpa = read32(mem, MVM_MPTABLE_ADDR + 4);
    guint16 base_len = *guest(mem, gpa + 4, 1) | *guest(mem, gpa + 5, 1) << 8;
    const guint8 *t = guest(mem, gpa, base_len);
    g_assert_cmpmem(t, 4, "PCMP", 4);
    g_assert_cmpuint(sum8(t, base_len), ==, 0);
    g_assert_cmphex(read32(mem, gpa + 36), ==, MVM_LAPIC_ADDR);
    guint entries = t[34] | t[35] << 8, cpus = 0, ints = 0, lints = 0, buses = 0, ioapics = 0;
    guint off = 44;
    for (guint i = 0; i < entries; i++) {
        g_assert_cmpuint(off, <, base_len);
        switch (t[off]) {
        case 0:
            g_assert_cmpuint(t[off + 1], ==, cpus);
            g_assert_cmpuint(t[off + 3], ==, cpus == 0 ? 3 : 1); /* enabled, BSP on 0 */
            cpus++;
            off += 20;
            break;
        case 1:
            g_assert_cmpmem(t + off + 2, 6, "ISA   ", 6);
            buses++;
            off += 8;
            break;
        case 2:
            g_assert_cmphex(read32(mem, gpa + off + 4), ==, MVM_IOAPIC_ADDR);
            g_assert_cmpuint(t[off + 1], ==, n_vcpus); /* unique APIC ID */
            ioapics++;
            off += 8;
            break;
        case 3:
            g_assert_cmpuint(t[off + 5], ==, t[off + 7]); /* IRQ n on pin n */
            ints++;
            off += 8;
            break;
        case 4:
            g_assert_cmpuint(t[off + 1], ==, lints == 0 ? 3 : 1); /* ExtINT, NMI */
            g_assert_cmpuint(t[off + 7], ==, lints);              /* LINT0, LINT1 */
            lints++;
            off += 8;
            break;
        default:
            g_assert_not_reached();
        }
    }
    g_assert_cmpuint(off, ==, base_len);
    g_assert_cmpuint(cpus, ==, n_vcpus);
    g_assert_cmpuint(buses, ==, 1);
    g_assert_cmpuint(ioapics, ==, 1);
    g_assert_cmpuint(ints, ==, 24);
    g_assert_cmpuint(lints, ==, 2);
    g_assert_cmpuint(gpa + base_len, <=, MVM_ACPI_RSDP_ADDR);
}

static void test_mptable(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GError) error = NULL;
    const guint counts[] = {1, 2, 64, MVM_BOOT_MPTABLE_MAX_VCPUS};

    for (guint i = 0; i < G_N_ELEMENTS(counts); i++) {
        g_assert_true(mvm_boot_write_mptable(mem, counts[i], &error));
        g_assert_no_error(error);
        check_mptable(mem, counts[i]);
    }
    g_assert_false(mvm_boot_write_mptable(mem, MVM_BOOT_MPTABLE_MAX_VCPUS + 1, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
}

/* The loader writes the tables too, with the config's vCPUs and devices. */
static void test_load_writes_tables(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) bz = build_bzimage();
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;

    g_assert_true(load_bytes(mem, bz, -1, &info, &error));
    g_assert_no_error(error);
    check_acpi(mem, 2, test_devices, G_N_ELEMENTS(test_devices));
    check_mptable(mem, 2);
    g_assert_cmphex(walk(mem, info.entry), ==, info.entry);
    g_assert_cmphex(read64(mem, MVM_GDT_ADDR + 16), ==, mvm_boot_gdt_entry(2));
}

/* ---- hostile images ---- */

static void expect_invalid_config(MvmMemory *mem, GByteArray *kernel, int initrd_fd,
                                  const char *cmdline, const char *what)
{
    g_auto(MvmBootInfo) info = {0};
    g_autoptr(GError) error = NULL;
    int fd = memfd_with(kernel->data, kernel->len);
    MvmBootConfig config = default_config(fd, initrd_fd);

    if (cmdline != NULL)
        config.cmdline = cmdline;
    g_test_message("%s", what);
    g_assert_false(mvm_boot_load_linux(mem, &config, &info, &error));
    g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    g_test_message("  -> %s", error->message);
    g_assert_null(info.cmdline);
    close(fd);
}

static void expect_invalid(MvmMemory *mem, GByteArray *kernel, const char *what)
{
    expect_invalid_config(mem, kernel, -1, NULL, what);
}

/*
 * A hostile image is a good one with up to two fields overwritten (little-endian), or cut
 * at an offset (size 0).
 */
typedef struct {
    gsize offset;
    gsize size;
    guint64 value;
} Patch;

typedef struct {
    const char *what;
    Patch patches[2];
} HostileCase;

#define EH(f) offsetof(Elf64_Ehdr, f), sizeof(((Elf64_Ehdr *)0)->f)
#define PH(i, f)                                                                                   \
    sizeof(Elf64_Ehdr) + (i) * sizeof(Elf64_Phdr) + offsetof(Elf64_Phdr, f),                       \
        sizeof(((Elf64_Phdr *)0)->f)
#define SH(f)           0x1f1 + offsetof(struct setup_header, f), sizeof(((struct setup_header *)0)->f)
#define CUT(at)         at, 0, 0
#define PVH_DESC_OFFSET (0x200 + 24 + 12 + 4) /* after the GNU note and the Xen note's name */

static const HostileCase hostile_elf[] = {
    {"truncated ELF header", {{CUT(40)}}},
    {"ELFCLASS32", {{offsetof(Elf64_Ehdr, e_ident) + EI_CLASS, 1, ELFCLASS32}}},
    {"EM_386", {{EH(e_machine), EM_386}}},
    {"phnum 0xffff", {{EH(e_phnum), 0xffff}}},
    {"phnum 0", {{EH(e_phnum), 0}}},
    {"program headers beyond the file", {{EH(e_phoff), 0x5000 - 8}}},
    {"phentsize 32", {{EH(e_phentsize), 32}}},
    {"segment beyond RAM", {{PH(1, p_paddr), MEM_64M - 0x800}}},
    {"segment in the MMIO gap", {{PH(1, p_paddr), MVM_MMIO_GAP_START}}},
    {"segment below 1 MiB", {{PH(1, p_paddr), 0x80000}}},
    {"segment size wraps", {{PH(0, p_memsz), G_MAXUINT64 - 0x1000}}},
    {"p_filesz > p_memsz", {{PH(1, p_filesz), SEG1_SIZE + 1}}},
    {"segment data beyond the file", {{PH(1, p_offset), 0x5000 - 0x10}}},
    {"p_offset near 2^64", {{PH(1, p_offset), G_MAXUINT64 - 4}}},
    {"entry outside the segments", {{EH(e_entry), 0x5000000}}},
    {"no PT_LOAD", {{EH(e_phoff), sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr)}}},
    {"PT_NOTE beyond the file", {{PH(2, p_filesz), 0x5000}}},
    {"PVH entry outside the segments", {{PVH_DESC_OFFSET, 8, 0x3000000}}},
};

static const HostileCase hostile_bzimage[] = {
    {"bad HdrS magic", {{SH(header), 0x53726449}}},
    {"no 0xaa55", {{SH(boot_flag), 0}}},
    {"protocol 2.09", {{SH(version), 0x0209}}},
    {"no XLF_KERNEL_64", {{SH(xloadflags), 0}}},
    {"not LOADED_HIGH", {{SH(loadflags), 0}}},
    {"setup_sects beyond the file", {{SH(setup_sects), 200}}},
    {"setup header shorter than init_size", {{SH(jump), 0x20eb}}},
    {"file shorter than the setup header", {{CUT(700)}}},
    {"empty file", {{CUT(0)}}},
    {"init_size beyond RAM", {{SH(init_size), 0x3001000}}},
    {"kernel_alignment not a power of two", {{SH(kernel_alignment), 0x300000}}},
    {"pref_address near 2^64", {{SH(pref_address), G_MAXUINT64 - 0x1000}}},
    {"non-relocatable below 1 MiB", {{SH(relocatable_kernel), 0}, {SH(pref_address), 0x10000}}},
};

static void apply_patches(GByteArray *img, const HostileCase *c)
{
    for (guint i = 0; i < G_N_ELEMENTS(c->patches); i++) {
        const Patch *p = &c->patches[i];
        if (p->size == 0 && p->offset == 0 && i > 0)
            continue; /* unused slot */
        g_assert_cmpuint(p->offset + p->size, <=, img->len);
        if (p->size == 0)
            g_byte_array_set_size(img, p->offset);
        for (gsize b = 0; b < p->size; b++)
            img->data[p->offset + b] = (guint8)(p->value >> (8 * b));
    }
}

static void test_hostile_images(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);

    for (guint i = 0; i < G_N_ELEMENTS(hostile_elf); i++) {
        g_autoptr(GByteArray) elf = build_elf(TRUE);
        apply_patches(elf, &hostile_elf[i]);
        expect_invalid(mem, elf, hostile_elf[i].what);
    }
    for (guint i = 0; i < G_N_ELEMENTS(hostile_bzimage); i++) {
        g_autoptr(GByteArray) bz = build_bzimage();
        apply_patches(bz, &hostile_bzimage[i]);
        expect_invalid(mem, bz, hostile_bzimage[i].what);
    }
}

static void test_hostile_other(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    g_autoptr(GByteArray) bz = build_bzimage();
    g_autoptr(GByteArray) elf = build_elf(FALSE);
    g_autofree char *long_cmdline = g_strnfill(2047, 'x');
    g_autofree char *huge_cmdline = g_strnfill(MVM_CMDLINE_MAX, 'y');
    int big = memfd_create("big-initrd", MFD_CLOEXEC);
    int pipefd[2];

    /* A sparse initrd larger than all of RAM; and one that fits RAM but not above the kernel. */
    g_assert_cmpint(ftruncate(big, 2 * MEM_64M), ==, 0);
    expect_invalid_config(mem, elf, big, NULL, "initrd larger than RAM");
    g_assert_cmpint(ftruncate(big, MEM_64M - 20 * MVM_MIB), ==, 0);
    expect_invalid_config(mem, bz, big, NULL, "initrd overlapping the kernel's init_size");
    close(big);
    /* 2047 bytes fit cmdline_size, but the device entries make it longer. */
    expect_invalid_config(mem, bz, -1, long_cmdline, "cmdline longer than cmdline_size");
    expect_invalid_config(mem, elf, -1, huge_cmdline, "cmdline longer than 64 KiB");
    g_assert_cmpint(pipe(pipefd), ==, 0);
    expect_invalid_config(mem, elf, pipefd[0], NULL, "initrd is a pipe");
    close(pipefd[0]);
    close(pipefd[1]);
}

/* Random corruption of the headers: either a load or INVALID_ARGUMENT, never a crash. */
static void fuzz_image(MvmMemory *mem, GByteArray *(*build)(void), guint span, guint iterations)
{
    for (guint i = 0; i < iterations; i++) {
        g_autoptr(GByteArray) img = build();
        g_auto(MvmBootInfo) info = {0};
        g_autoptr(GError) error = NULL;
        guint flips = g_test_rand_int_range(1, 6);

        for (guint f = 0; f < flips; f++)
            img->data[g_test_rand_int_range(0, span)] = (guint8)g_test_rand_int_range(0, 256);
        if (!load_bytes(mem, img, -1, &info, &error))
            g_assert_error(error, MVM_ERROR, MVM_ERROR_INVALID_ARGUMENT);
    }
}

static GByteArray *build_elf_pvh(void)
{
    return build_elf(TRUE);
}

static void test_fuzz(void)
{
    g_autoptr(MvmMemory) mem = new_memory(MEM_64M);
    guint n = g_test_slow() ? 20000 : 1500;

    fuzz_image(mem, build_elf_pvh, 0x240, n);
    fuzz_image(mem, build_bzimage, 0x280, n);
}

/* ---- Debian's kernel, when tests/linux-guest/build-linux-guest has made one ---- */

static int open_guest_file(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);

    return open(path, O_RDONLY | O_CLOEXEC);
}

static void test_real_kernel(void)
{
    const char *dir = g_getenv("MVM_LINUX_GUEST_DIR");

    if (dir == NULL) {
        g_test_skip("MVM_LINUX_GUEST_DIR is not set (see tests/linux-guest/build-linux-guest)");
        return;
    }
    g_autofree char *bzimage = g_build_filename(dir, "bzImage", NULL);
    if (!g_file_test(bzimage, G_FILE_TEST_EXISTS)) {
        g_test_skip_printf(
            "the Linux guest is not built in %s (tests/linux-guest/build-linux-guest)", dir);
        return;
    }
    g_autoptr(MvmMemory) mem = new_memory(256 * MVM_MIB);
    g_auto(MvmBootInfo) bz_info = {0};
    g_auto(MvmBootInfo) elf_info = {0};
    g_autoptr(GError) error = NULL;
    int initrd = open_guest_file(dir, "initramfs.cpio.gz");
    MvmBootConfig config = default_config(open_guest_file(dir, "bzImage"), initrd);

    g_assert_cmpint(config.kernel_fd, >=, 0);
    g_assert_true(mvm_boot_load_linux(mem, &config, &bz_info, &error));
    g_assert_no_error(error);
    close(config.kernel_fd);
    g_assert_cmphex(bz_info.protocol_version, >=, 0x020c);
    g_assert_cmphex(bz_info.entry, ==, 0x100200);
    check_zero_page(mem, &bz_info);

    config.kernel_fd = open_guest_file(dir, "vmlinux");
    config.prefer_pvh = TRUE;
    g_assert_cmpint(config.kernel_fd, >=, 0);
    g_assert_true(mvm_boot_load_linux(mem, &config, &elf_info, &error));
    g_assert_no_error(error);
    close(config.kernel_fd);
    if (initrd >= 0)
        close(initrd);
    g_assert_cmpint(elf_info.entry_kind, ==, MVM_BOOT_ENTRY_PVH);
    g_assert_cmphex(elf_info.kernel_start, ==, 0x1000000);
    g_assert_cmphex(elf_info.entry, >, elf_info.kernel_start);
    g_assert_cmphex(elf_info.entry, <, 0x100000000ULL);
    g_test_message("bzImage protocol %x, PVH entry 0x%" G_GINT64_MODIFIER
                   "x, initrd at 0x%" G_GINT64_MODIFIER "x",
                   bz_info.protocol_version, elf_info.entry, elf_info.initrd_start);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/boot/elf/load", test_elf_load);
    g_test_add_func("/boot/elf/bss-unaligned", test_elf_bss_unaligned);
    g_test_add_func("/boot/elf/virtual-entry", test_elf_virtual_entry);
    g_test_add_func("/boot/elf/pvh", test_elf_pvh);
    g_test_add_func("/boot/elf/pvh-absent", test_elf_pvh_absent);
    g_test_add_func("/boot/bzimage/load", test_bzimage_load);
    g_test_add_func("/boot/large-memory", test_large_memory);
    g_test_add_func("/boot/page-tables", test_page_tables);
    g_test_add_func("/boot/gdt", test_gdt);
    g_test_add_func("/boot/acpi/tables", test_acpi);
    g_test_add_func("/boot/acpi/large", test_acpi_large);
    g_test_add_func("/boot/acpi/iasl", test_acpi_iasl);
    g_test_add_func("/boot/acpi/bad-devices", test_acpi_bad_devices);
    g_test_add_func("/boot/mptable", test_mptable);
    g_test_add_func("/boot/load-writes-tables", test_load_writes_tables);
    g_test_add_func("/boot/hostile/images", test_hostile_images);
    g_test_add_func("/boot/hostile/other", test_hostile_other);
    g_test_add_func("/boot/hostile/fuzz", test_fuzz);
    g_test_add_func("/boot/real-kernel", test_real_kernel);
    return g_test_run();
}
