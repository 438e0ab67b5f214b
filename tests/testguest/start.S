/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Entry point, per the Linux 64-bit boot protocol: long mode, CS = 0x10, DS/ES/SS = 0x18,
 * identity-mapped paging, interrupts off, %rsi = struct boot_params.
 */
#include "guest-defs.h"

    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    /* The benchmark's "first guest instruction" marker: the first I/O, before anything else. */
    movl $1, %eax
    outl %eax, $0xf8

    /* Leave the VMM's boot stack (0x8ff0) at once: 0x8000 is reused for the SMP trampoline. */
    leaq boot_stack_top(%rip), %rsp
    pushfq
    popq %r13
    movq %rsi, %r12
    cld

    /* Zero .bss (a reboot may not give us fresh memory). __bss_start/__bss_end are 8-aligned. */
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq

    movq %r12, boot_params_ptr(%rip)
    movq %r13, entry_rflags(%rip)
    movl %cs, %eax
    movl %eax, entry_cs(%rip)
    movl %ds, %eax
    movl %eax, entry_ds(%rip)
    movl %es, %eax
    movl %eax, entry_es(%rip)
    movl %ss, %eax
    movl %eax, entry_ss(%rip)

    xorl %ebp, %ebp
    movq %r12, %rdi
    call guest_main
    /* guest_main does not return; stay put if it ever does. */
1:  pause
    jmp 1b

    .section .bss
    .balign 8
    .globl boot_params_ptr, entry_rflags, entry_cs, entry_ds, entry_es, entry_ss
boot_params_ptr: .quad 0
entry_rflags:    .quad 0
entry_cs:        .long 0
entry_ds:        .long 0
entry_es:        .long 0
entry_ss:        .long 0

    /* Stacks are not zeroed: see .stacks in the linker script. */
    .section .stacks, "aw", @nobits
    .balign 16
boot_stack:
    .skip BOOT_STACK_SIZE
    .globl boot_stack_top
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
