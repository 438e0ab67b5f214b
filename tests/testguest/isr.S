/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Exception entry stubs, and the CPL0 <-> CPL3 switches of the compute mode.
 *
 * Nothing here returns with IRETQ: KVM's instruction emulator (which runs all guest CPL0 code on
 * our CI machines) cannot emulate a protected-mode IRET. Exceptions report and end the VM; the
 * way back from user mode discards the trap frame and restores a saved kernel stack.
 */
#include "guest-defs.h"

    .text
    .code64

/* Vectors 0-31, 16 bytes each: isr_stubs + 16 * vector. */
    .balign 16
    .globl isr_stubs
isr_stubs:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    /* the CPU pushed an error code */
    .else
    pushq $0
    .endif
    pushq $\vec
    jmp isr_common
    .endr

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq %rsp, %rdi
    andq $-16, %rsp
    call exception_handler
1:  pause
    jmp 1b

/*
 * u64 user_run(u64 entry, u64 stack_top, u64 arg, u32 method) -> %rax from user mode.
 * Runs entry(arg) at CPL3 on stack_top; user code comes back with SYSCALL or INT $0x80 and
 * %rax = result, %r8 = its %cs (for the CPL check; stored in user_cs).
 * method: 0 = SYSEXIT (64-bit), 1 = SYSRET, 2 = IRETQ.
 */
    .globl user_run
user_run:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, user_kernel_rsp(%rip)
    movq %rdi, user_entry(%rip)
    movq %rsi, user_stack(%rip)
    movq %rdx, user_arg(%rip)
    movq %rdx, %rdi          /* the user function's argument */
    cmpl $1, %ecx
    je user_enter_sysret
    cmpl $2, %ecx
    je user_enter_iret
    /* SYSEXIT with REX.W: CS = SYSENTER_CS + 32, SS = SYSENTER_CS + 40, RIP = RDX, RSP = RCX */
    movq user_entry(%rip), %rdx
    movq user_stack(%rip), %rcx
    .globl user_sysexit_insn
user_sysexit_insn:
    sysexitq

user_enter_sysret:
    /* SYSRETQ: RIP = RCX, RFLAGS = R11, CS = STAR[63:48] + 16, SS = STAR[63:48] + 8 */
    movq user_entry(%rip), %rcx
    movq $0x2, %r11
    movq user_stack(%rip), %rsp
    sysretq

/* Also the fallback when SYSEXIT raised #UD (AMD CPUs in long mode): exception_handler jumps
 * here with user_entry/user_stack set and %rdi lost, so reload the argument. */
    .globl user_enter_iret
user_enter_iret:
    movq user_arg(%rip), %rdi
    pushq $(SEL_UDATA | 3)
    pushq user_stack(%rip)
    pushq $0x2
    pushq $(SEL_UCODE64 | 3)
    pushq user_entry(%rip)
    iretq

/* SYSCALL from user mode (LSTAR): still on the user stack, RCX/R11 = user RIP/RFLAGS. */
    .globl user_syscall_entry
user_syscall_entry:
    movq user_kernel_rsp(%rip), %rsp
    jmp user_back

/* INT $0x80 from user mode: on TSS.RSP0 with a trap frame we do not need. */
    .globl user_int80_entry
user_int80_entry:
    movq user_kernel_rsp(%rip), %rsp
    jmp user_back

user_back:
    movq %r8, user_cs(%rip)
    movl $SEL_DATA, %ecx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %ss
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

/*
 * The user-mode program (runs at CPL3; its page has the U/S bit in compute mode's page tables).
 * %rdi = iterations. A plain dec/jnz loop; returns the remaining count (0) in %rax and its
 * %cs in %r8, then leaves through SYSCALL or INT $0x80 as user_leave_int says.
 */
    .globl user_compute
user_compute:
    movq %rdi, %rcx
    testq %rcx, %rcx
    jz 2f
1:  decq %rcx
    jnz 1b
2:  movq %rcx, %rax
    movl %cs, %r8d
    cmpb $0, user_leave_int(%rip)
    jne 3f
    syscall
3:  int $0x80
4:  jmp 4b

    .data
    .balign 8
    .globl user_kernel_rsp, user_entry, user_stack, user_arg, user_cs, user_leave_int
user_kernel_rsp: .quad 0
user_entry:      .quad 0
user_stack:      .quad 0
user_arg:        .quad 0
user_cs:         .quad 0
user_leave_int:  .byte 0

    .section .note.GNU-stack, "", @progbits
