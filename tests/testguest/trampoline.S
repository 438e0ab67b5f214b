/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The AP start-up trampoline, copied to TRAMPOLINE_ADDR by mode_smp.c. After INIT-SIPI-SIPI an AP
 * starts here in real mode at CS:IP = (TRAMPOLINE_ADDR >> 4):0, then goes to 32-bit protected
 * mode and on to long mode (SDM vol. 3, 10.8.5 "Initializing IA-32e Mode"), with the BSP's page
 * tables, and calls ap_main(index) on a stack of its own.
 *
 * Everything before the 64-bit part runs from the copy, so addresses inside the trampoline are
 * TRAMPOLINE_ADDR + (label - trampoline_start); addresses of the main image are absolute.
 */
#include "guest-defs.h"

#define T(label) (TRAMPOLINE_ADDR + (label) - trampoline_start)

#define CR0_PE 0x00000001
#define CR0_NE 0x00000020
#define CR0_WP 0x00010000
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080

    .section .rodata.trampoline, "a"
    .globl trampoline_start, trampoline_end, trampoline_cr3, trampoline_efer
    .code16
trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (trampoline_gdtr - trampoline_start)
    /* Protected mode; this also clears CR0.CD/NW, which INIT leaves set. */
    movl $(CR0_PE | CR0_NE), %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $T(trampoline_32)

    .code32
trampoline_32:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $CR4_PAE, %eax
    movl %eax, %cr4
    movl T(trampoline_cr3), %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    movl T(trampoline_efer), %eax
    xorl %edx, %edx
    wrmsr
    movl $(CR0_PG | CR0_WP | CR0_NE | CR0_PE), %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE64, $T(trampoline_64)

    .code64
trampoline_64:
    /* Claim an AP index, and with it a stack. */
    movl $1, %eax
    movl $ap_next_index, %ebx
    lock xaddl %eax, (%rbx)
    cmpl $MAX_APS, %eax
    jae 2f
    movl %eax, %edi
    incl %eax
    imull $AP_STACK_SIZE, %eax, %eax
    movl $ap_stacks, %esp
    addq %rax, %rsp
    xorl %ebp, %ebp
    movl $ap_main, %eax
    call *%rax
    /* More APs than stacks (or ap_main returned): park. An AP may halt: the VMM kicks vCPUs
     * out of KVM_RUN with a signal when it stops the VM. */
2:  cli
    hlt
    jmp 2b

    .balign 8
trampoline_gdtr:
    .word GDT_ENTRIES * 8 - 1
    .long gdt_table
    .balign 4
trampoline_cr3:
    .long 0 /* patched by the BSP */
trampoline_efer:
    .long 0 /* patched by the BSP */
trampoline_end:

    .section .stacks, "aw", @nobits
    .balign 16
    .globl ap_stacks
ap_stacks:
    .skip MAX_APS * AP_STACK_SIZE

    .section .note.GNU-stack, "", @progbits
