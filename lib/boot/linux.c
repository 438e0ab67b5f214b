/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Linux x86-64 boot (Documentation/arch/x86/boot.rst): the bzImage loader,
 * command line, initrd, zero page or PVH start info, and the top-level
 * mvm_boot_load_linux() that writes every boot structure.
 */
#include <elf.h>
#include <string.h>

#include "acpi.h"
#include "boot-private.h"
#include "layout.h"
#include "microvm.h"

#define BZIMAGE_HEAD_SIZE    1024   /* boot sector + first setup sector: holds the whole header */
#define BZIMAGE_MIN_PROTOCOL 0x020a /* 2.10: pref_address, init_size */
#define SETUP_SECTOR_SIZE    512

void mvm_boot_info_clear(MvmBootInfo *info)
{
    g_clear_pointer(&info->cmdline, g_free);
    memset(info, 0, sizeof(*info));
}

static gboolean check_setup_header(const MvmSetupHeader *hdr, const guint8 *head, GError **error)
{
    if (hdr->boot_flag != MVM_SETUP_BOOT_FLAG || hdr->header != MVM_SETUP_MAGIC)
        return mvm_set_invalid(error, "the kernel is neither an ELF file nor a bzImage "
                                      "(no \"HdrS\" setup header)");
    if (hdr->version < BZIMAGE_MIN_PROTOCOL)
        return mvm_set_invalid(error,
                               "the bzImage uses boot protocol %u.%02u; 2.10 or later "
                               "is needed",
                               hdr->version >> 8, hdr->version & 0xff);
    if (!(hdr->loadflags & MVM_SETUP_LOADED_HIGH))
        return mvm_set_invalid(error, "the kernel is a zImage (not LOADED_HIGH)");
    /* boot.rst "64-bit Boot Protocol": the entry at +0x200 exists when XLF_KERNEL_64 is set. */
    if (!(hdr->xloadflags & MVM_SETUP_XLF_KERNEL_64))
        return mvm_set_invalid(error, "the bzImage has no 64-bit entry point (XLF_KERNEL_64)");
    /* boot.rst: the header ends at 0x202 + the byte at 0x201 (the jump's offset). */
    if (0x202u + head[0x201] < MVM_BP_HDR_OFFSET(init_size) + sizeof(hdr->init_size))
        return mvm_set_invalid(error, "the bzImage setup header is too short");
    return TRUE;
}

/* boot.rst, init_size: where the kernel runs, and so where it needs init_size bytes. */
static gboolean runtime_start(const MvmSetupHeader *hdr, guint64 load_addr, guint64 *start,
                              GError **error)
{
    if (!hdr->relocatable_kernel) {
        *start = hdr->pref_address;
    } else {
        guint64 align = hdr->kernel_alignment;
        guint64 addr = MAX(load_addr, hdr->pref_address);
        if (align == 0 || (align & (align - 1)) != 0)
            return mvm_set_invalid(error,
                                   "the bzImage kernel_alignment 0x%" G_GINT64_MODIFIER
                                   "x is not a power of two",
                                   align);
        if (addr > G_MAXUINT64 - align)
            return mvm_set_invalid(error, "the bzImage pref_address is out of range");
        *start = (addr + align - 1) & ~(align - 1);
    }
    if (*start < MVM_HIMEM_START)
        return mvm_set_invalid(
            error, "the bzImage wants to run at 0x%" G_GINT64_MODIFIER "x, below 1 MiB", *start);
    return TRUE;
}

/* Checks that the kernel and the memory it decompresses into fit in low RAM. */
static gboolean check_bzimage_fit(MvmMemory *mem, const MvmSetupHeader *hdr, guint64 pm_size,
                                  MvmKernelImage *image, GError **error)
{
    guint64 low_end = mvm_memory_get_region(mem, 0)->size;
    guint64 start = 0;

    image->load_start = MVM_HIMEM_START;
    image->load_end = MVM_HIMEM_START + pm_size;
    if (image->load_end > low_end)
        return mvm_set_invalid(error,
                               "the bzImage (%" G_GUINT64_FORMAT " bytes) does not fit "
                               "in guest RAM",
                               pm_size);
    if (!runtime_start(hdr, MVM_HIMEM_START, &start, error))
        return FALSE;
    if (start > low_end || hdr->init_size > low_end - start)
        return mvm_set_invalid(error,
                               "the bzImage needs 0x%x bytes (init_size) from 0x%" G_GINT64_MODIFIER
                               "x: more than the %" G_GUINT64_FORMAT " MiB of low guest RAM",
                               hdr->init_size, start, low_end / MVM_MIB);
    image->reserved_end = MAX(image->load_end, start + hdr->init_size);
    return TRUE;
}

/*
 * The protected-mode code goes to 0x100000 (boot.rst "Loading the rest of the kernel");
 * the 64-bit entry is 0x200 into it. A relocatable kernel moves itself to its runtime
 * address (pref_address for Linux x86-64) before decompressing in place.
 */
gboolean mvm_boot_load_bzimage(MvmMemory *mem, int fd, guint64 file_size, MvmKernelImage *image,
                               GError **error)
{
    guint8 head[BZIMAGE_HEAD_SIZE];
    MvmSetupHeader hdr;

    if (file_size < sizeof(head))
        return mvm_set_invalid(error,
                               "the kernel (%" G_GUINT64_FORMAT " bytes) is too small "
                               "for an ELF file or a bzImage",
                               file_size);
    if (!mvm_boot_pread(fd, head, sizeof(head), 0, "kernel", error))
        return FALSE;
    memcpy(&hdr, head + MVM_SETUP_HEADER_OFFSET, sizeof(hdr));
    if (!check_setup_header(&hdr, head, error))
        return FALSE;

    guint64 setup_size = ((guint64)(hdr.setup_sects ? hdr.setup_sects : 4) + 1) * SETUP_SECTOR_SIZE;
    if (setup_size + MVM_SETUP_ENTRY64_OFFSET >= file_size)
        return mvm_set_invalid(error,
                               "the bzImage setup_sects (%u) leaves no protected-mode "
                               "code in a file of %" G_GUINT64_FORMAT " bytes",
                               hdr.setup_sects, file_size);
    guint64 pm_size = file_size - setup_size;
    if (!check_bzimage_fit(mem, &hdr, pm_size, image, error) ||
        !mvm_boot_pread_to_guest(mem, fd, MVM_HIMEM_START, pm_size, setup_size, "kernel", error))
        return FALSE;

    image->format = MVM_KERNEL_FORMAT_BZIMAGE;
    image->entry64 = MVM_HIMEM_START + MVM_SETUP_ENTRY64_OFFSET;
    image->protocol = hdr.version;
    image->initrd_addr_max = hdr.initrd_addr_max;
    image->cmdline_max = MIN(hdr.cmdline_size, MVM_CMDLINE_MAX - 1);
    image->setup_header_len = MIN(0x202u + head[0x201], 0x290u) - MVM_SETUP_HEADER_OFFSET;
    memcpy(image->setup_header, head + MVM_SETUP_HEADER_OFFSET, image->setup_header_len);
    return TRUE;
}

/* "<size>@<base>:<irq>" of drivers/virtio/virtio_mmio.c; size takes memparse's K/M/G. */
static void append_mmio_device(GString *s, const MvmBootMmioDevice *dev)
{
    static const char suffixes[] = {'G', 'M', 'K'};

    if (s->len > 0)
        g_string_append_c(s, ' ');
    g_string_append(s, "virtio_mmio.device=");
    for (guint i = 0; i <= G_N_ELEMENTS(suffixes); i++) {
        guint shift = 30 - 10 * i;
        if (i == G_N_ELEMENTS(suffixes)) {
            g_string_append_printf(s, "%" G_GUINT64_FORMAT, dev->size);
        } else if (dev->size % (1ULL << shift) == 0) {
            g_string_append_printf(s, "%" G_GUINT64_FORMAT "%c", dev->size >> shift, suffixes[i]);
            break;
        }
    }
    g_string_append_printf(s, "@0x%" G_GINT64_MODIFIER "x:%u", dev->base, dev->gsi);
}

static char *build_cmdline(const MvmBootConfig *config, const MvmKernelImage *image, GError **error)
{
    g_autoptr(GString) s = g_string_new(config->cmdline ? config->cmdline : "");

    for (guint i = 0; config->announce_mmio_on_cmdline && i < config->n_mmio_devices; i++)
        append_mmio_device(s, &config->mmio_devices[i]);
    if (s->len > image->cmdline_max) {
        mvm_set_invalid(error,
                        "the command line has %" G_GSIZE_FORMAT " bytes; the kernel "
                        "accepts at most %" G_GUINT64_FORMAT,
                        s->len, image->cmdline_max);
        return NULL;
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* boot.rst "initrd": as high as possible, below initrd_addr_max and the end of low RAM. */
static gboolean load_initrd(MvmMemory *mem, int fd, const MvmKernelImage *image, MvmBootInfo *info,
                            GError **error)
{
    guint64 size;

    if (!mvm_boot_file_size(fd, "initrd", &size, error))
        return FALSE;
    if (size == 0)
        return TRUE; /* nothing to hand over */
    guint64 limit = MIN(mvm_memory_get_region(mem, 0)->size, image->initrd_addr_max + 1);
    guint64 addr = size <= limit ? (limit - size) & ~(MVM_PAGE_SIZE - 1) : 0;
    if (addr < image->reserved_end)
        return mvm_set_invalid(error,
                               "the initrd (%" G_GUINT64_FORMAT " bytes) does not fit "
                               "between the kernel's end 0x%" G_GINT64_MODIFIER
                               "x and 0x%" G_GINT64_MODIFIER "x",
                               size, image->reserved_end, limit);
    if (!mvm_boot_pread_to_guest(mem, fd, addr, size, 0, "initrd", error))
        return FALSE;
    info->initrd_start = addr;
    info->initrd_size = size;
    return TRUE;
}

static void fill_setup_header(MvmBootParams *bp, const MvmKernelImage *image,
                              const MvmBootInfo *info)
{
    MvmSetupHeader *hdr = &bp->hdr;

    if (image->format == MVM_KERNEL_FORMAT_BZIMAGE) {
        /* boot.rst "64-bit Boot Protocol": the header comes from the image. */
        memcpy((guint8 *)bp + MVM_SETUP_HEADER_OFFSET, image->setup_header,
               image->setup_header_len);
    } else {
        hdr->boot_flag = MVM_SETUP_BOOT_FLAG;
        hdr->header = MVM_SETUP_MAGIC;
    }
    hdr->type_of_loader = MVM_SETUP_TYPE_OF_LOADER_UNDEFINED;
    /* CAN_USE_HEAP/heap_end_ptr only matter to the real-mode setup we skip; set as boot.rst asks.
     */
    hdr->loadflags |= MVM_SETUP_LOADED_HIGH | MVM_SETUP_CAN_USE_HEAP;
    hdr->heap_end_ptr = 0xfe00;
    hdr->cmd_line_ptr = (guint32)MVM_CMDLINE_ADDR;
    bp->ext_cmd_line_ptr = 0;
    hdr->ramdisk_image = (guint32)info->initrd_start;
    hdr->ramdisk_size = (guint32)info->initrd_size;
    bp->ext_ramdisk_image = (guint32)(info->initrd_start >> 32);
    bp->ext_ramdisk_size = (guint32)(info->initrd_size >> 32);
}

static gboolean write_zero_page(MvmMemory *mem, const MvmKernelImage *image,
                                const MvmBootInfo *info, GError **error)
{
    MvmBootParams *bp = mvm_memory_get_ptr(mem, MVM_ZERO_PAGE_ADDR, sizeof(*bp));
    MvmBootE820Entry e820[MVM_BOOT_E820_MAX];

    if (bp == NULL)
        return mvm_set_invalid(error, "no guest RAM for the zero page");
    memset(bp, 0, sizeof(*bp)); /* also sentinel = 0: nothing for sanitize_boot_params() to undo */
    fill_setup_header(bp, image, info);
    bp->acpi_rsdp_addr = MVM_ACPI_RSDP_ADDR;
    bp->e820_entries = (guint8)mvm_boot_build_e820(mem, e820);
    memcpy(bp->e820_table, e820, bp->e820_entries * sizeof(e820[0]));
    return TRUE;
}

/* The PVH start info page: struct, then the module list, then the memory map. */
#define PVH_MODLIST_OFFSET 64
#define PVH_MEMMAP_OFFSET  128

static gboolean write_start_info(MvmMemory *mem, const MvmBootInfo *info, GError **error)
{
    guint8 *page = mvm_memory_get_ptr(mem, MVM_PVH_START_INFO_ADDR, MVM_PAGE_SIZE);
    MvmHvmStartInfo si = {.magic = MVM_HVM_START_MAGIC_VALUE, .version = 1};
    MvmBootE820Entry e820[MVM_BOOT_E820_MAX];
    guint n = mvm_boot_build_e820(mem, e820);

    if (page == NULL)
        return mvm_set_invalid(error, "no guest RAM for the PVH start info");
    memset(page, 0, MVM_PAGE_SIZE);
    si.cmdline_paddr = MVM_CMDLINE_ADDR;
    si.rsdp_paddr = MVM_ACPI_RSDP_ADDR;
    si.memmap_paddr = MVM_PVH_START_INFO_ADDR + PVH_MEMMAP_OFFSET;
    si.memmap_entries = n;
    for (guint i = 0; i < n; i++) {
        MvmHvmMemmapEntry m = {.addr = e820[i].addr, .size = e820[i].size, .type = e820[i].type};
        memcpy(page + PVH_MEMMAP_OFFSET + i * sizeof(m), &m, sizeof(m));
    }
    if (info->initrd_size > 0) {
        MvmHvmModlistEntry mod = {.paddr = info->initrd_start, .size = info->initrd_size};
        memcpy(page + PVH_MODLIST_OFFSET, &mod, sizeof(mod));
        si.nr_modules = 1;
        si.modlist_paddr = MVM_PVH_START_INFO_ADDR + PVH_MODLIST_OFFSET;
    }
    memcpy(page, &si, sizeof(si));
    return TRUE;
}

static gboolean check_config(const MvmBootConfig *config, GError **error)
{
    if (config->kernel_fd < 0)
        return mvm_set_invalid(error, "no kernel given");
    if (config->n_vcpus == 0)
        return mvm_set_invalid(error, "a VM needs at least one vCPU");
    if (config->n_mmio_devices > MVM_VIRTIO_MMIO_MAX_DEVICES ||
        (config->n_mmio_devices > 0 && config->mmio_devices == NULL))
        return mvm_set_invalid(error, "bad virtio-mmio device list");
    return TRUE;
}

static gboolean load_kernel(MvmMemory *mem, int fd, MvmKernelImage *image, GError **error)
{
    guint8 magic[SELFMAG];
    guint64 size;

    if (!mvm_boot_file_size(fd, "kernel", &size, error))
        return FALSE;
    if (size >= sizeof(magic) && !mvm_boot_pread(fd, magic, sizeof(magic), 0, "kernel", error))
        return FALSE;
    if (size >= sizeof(magic) && memcmp(magic, ELFMAG, SELFMAG) == 0)
        return mvm_boot_load_elf(mem, fd, size, image, error);
    return mvm_boot_load_bzimage(mem, fd, size, image, error);
}

static gboolean write_firmware_tables(MvmMemory *mem, const MvmBootConfig *config, GError **error)
{
    if (!mvm_boot_write_gdt_and_page_tables(mem, error) ||
        !mvm_boot_write_acpi(mem, config->n_vcpus, config->mmio_devices, config->n_mmio_devices,
                             error))
        return FALSE;
    /* The MP table is the fallback for acpi=off; it cannot describe more CPUs. */
    if (config->n_vcpus > MVM_BOOT_MPTABLE_MAX_VCPUS)
        return TRUE;
    return mvm_boot_write_mptable(mem, config->n_vcpus, error);
}

static gboolean load_linux(MvmMemory *mem, const MvmBootConfig *config, MvmBootInfo *info,
                           GError **error)
{
    g_autofree MvmKernelImage *image = g_new0(MvmKernelImage, 1);

    if (!check_config(config, error) || !load_kernel(mem, config->kernel_fd, image, error))
        return FALSE;
    info->cmdline = build_cmdline(config, image, error);
    if (info->cmdline == NULL)
        return FALSE;
    if (config->initrd_fd >= 0 && !load_initrd(mem, config->initrd_fd, image, info, error))
        return FALSE;
    if (!mvm_memory_write(mem, MVM_CMDLINE_ADDR, info->cmdline, strlen(info->cmdline) + 1, error))
        return FALSE;

    info->format = image->format;
    info->kernel_start = image->load_start;
    info->kernel_end = image->load_end;
    info->protocol_version = image->protocol;
    if (config->prefer_pvh && image->pvh_entry != 0) {
        info->entry_kind = MVM_BOOT_ENTRY_PVH;
        info->entry = image->pvh_entry;
        info->boot_params_gpa = MVM_PVH_START_INFO_ADDR;
        if (!write_start_info(mem, info, error))
            return FALSE;
    } else {
        info->entry_kind = MVM_BOOT_ENTRY_LINUX64;
        info->entry = image->entry64;
        info->boot_params_gpa = MVM_ZERO_PAGE_ADDR;
        if (!write_zero_page(mem, image, info, error))
            return FALSE;
    }
    return write_firmware_tables(mem, config, error);
}

gboolean mvm_boot_load_linux(MvmMemory *mem, const MvmBootConfig *config, MvmBootInfo *info,
                             GError **error)
{
    g_return_val_if_fail(mem != NULL, FALSE);
    g_return_val_if_fail(config != NULL, FALSE);
    g_return_val_if_fail(info != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

    memset(info, 0, sizeof(*info));
    if (!load_linux(mem, config, info, error)) {
        mvm_boot_info_clear(info);
        return FALSE;
    }
    return TRUE;
}
