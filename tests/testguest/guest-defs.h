/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Constants shared by the C and assembly sources of the test guest.
 */
#pragma once

/* Our GDT (cpu.c). 0x10/0x18 keep the Linux boot protocol's meaning, so loading it needs no
 * far jump. The user selectors are laid out for both SYSRET (STAR[63:48] = 0x18: SS = 0x20,
 * CS = 0x28) and 64-bit SYSEXIT (SYSENTER_CS = 0x08: CS = 0x28, SS = 0x30). */
#define SEL_CODE32  0x08 /* flat 32-bit code, used by the AP trampoline */
#define SEL_CODE64  0x10
#define SEL_DATA    0x18
#define SEL_UDATA   0x20
#define SEL_UCODE64 0x28
#define SEL_UDATA2  0x30
#define SEL_TSS     0x38 /* 16-byte descriptor */
#define GDT_ENTRIES 9

/* SMP: the real-mode trampoline is copied here (SIPI vector 0x08). 0x8000-0x8fff is free once
 * the BSP left the VMM's boot stack at 0x8ff0. */
#define TRAMPOLINE_ADDR 0x8000
#define MAX_APS         31
#define AP_STACK_SIZE   0x2000

#define BOOT_STACK_SIZE 0x4000
#define INT_STACK_SIZE  0x2000
#define USER_STACK_SIZE 0x4000

/* Timeouts assume the TSC does not tick faster than this (a slower TSC only waits longer). */
#define TSC_ASSUMED_KHZ 3000000ULL
