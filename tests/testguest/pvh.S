/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU smoke tests only (testguest-pvh.elf): a PVH entry (xen/arch-x86/hvm/start_info.h, entered
 * in 32-bit flat protected mode, paging off, %ebx = struct hvm_start_info) that recreates what
 * microvmd's 64-bit Linux entry gives: identity page tables at 0x9000 (0-4 GiB, 2 MiB pages),
 * long mode with CS = 0x10 and DS/ES/SS = 0x18, boot_params at 0x7000 (pvh.c), then _start.
 */
#include "guest-defs.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

    .section .note.pvh, "a", @note
    .balign 4
    .long 4           /* name size */
    .long 4           /* desc size */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long pvh_entry32
    .balign 4

    .text
    .code32
pvh_entry32:
    cli
    cld
    movl %ebx, %esi                 /* start_info, kept in %esi */

    /* Zero PML4 and PDPT, then link PML4[0] -> PDPT, PDPT[0..3] -> PDs. */
    movl $0x9000, %edi
    movl $(2 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl
    movl $(0xa000 | 3), 0x9000
    movl $(0xb000 | 3), 0xa000
    movl $(0xc000 | 3), 0xa008
    movl $(0xd000 | 3), 0xa010
    movl $(0xe000 | 3), 0xa018
    /* 2048 2 MiB pages, present | writable | PS. */
    movl $0xb000, %edi
    movl $0x83, %eax
    movl $2048, %ecx
1:  movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

    lgdt pvh_gdtr
    movl $0x20, %eax                /* CR4.PAE */
    movl %eax, %cr4
    movl $0x9000, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl $0x80010021, %eax          /* PG | WP | NE | PE */
    movl %eax, %cr0
    ljmpl $SEL_CODE64, $pvh_entry64

    .code64
pvh_entry64:
    movl $SEL_DATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x8ff0, %esp
    movl %esi, %edi
    call pvh_make_boot_params
    movl $0x7000, %esi
    jmp _start

    .section .rodata
    .balign 8
pvh_gdtr:
    .word GDT_ENTRIES * 8 - 1
    .long gdt_table

    .section .note.GNU-stack, "", @progbits
