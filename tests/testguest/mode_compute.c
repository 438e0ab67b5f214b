/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mode=compute: heavy work belongs at CPL3, which runs natively under our CI machines' nested KVM
 * while CPL0 is emulated (docs/kvm-hosts.md). Builds page tables with the U/S bit (identity map of
 * 0-4 GiB, 2 MiB pages), drops to CPL3, runs `iterations` dec/jnz (default 1e8), and comes back.
 *
 * Args: iterations; enter=auto|sysexit|sysret|iret (default auto: SYSEXIT, the only one KVM's
 * emulator implements in long mode, falling back to IRETQ when the CPU raises #UD, as AMD CPUs
 * do in long mode); leave=syscall|int (default syscall; int uses INT $0x80, a DPL-3 gate).
 */
#include "guest.h"

#define MSR_EFER         0xc0000080
#define MSR_STAR         0xc0000081
#define MSR_LSTAR        0xc0000082
#define MSR_FMASK        0xc0000084
#define MSR_SYSENTER_CS  0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define EFER_SCE         (1ULL << 0)
#define CR4_SMEP         (1ULL << 20)
#define CR4_SMAP         (1ULL << 21)
#define PTE_P            0x1ULL
#define PTE_RW           0x2ULL
#define PTE_US           0x4ULL
#define PTE_PWT          0x8ULL
#define PTE_PCD          0x10ULL
#define PTE_PS           0x80ULL

enum { ENTER_SYSEXIT = 0, ENTER_SYSRET = 1, ENTER_IRET = 2 };

u64 user_run(u64 entry, u64 stack_top, u64 arg, u32 method);
void user_compute(void);
void user_syscall_entry(void);
void user_int80_entry(void);
extern u64 user_cs;
extern u8 user_leave_int;
u8 user_sysexit_failed;

static struct {
    u64 pml4[512];
    u64 pdpt[512];
    u64 pd[4][512];
} page_tables __attribute__((aligned(4096), section(".stacks")));
static u8 user_stack[USER_STACK_SIZE] __attribute__((aligned(16), section(".stacks")));
static u8 int_stack[INT_STACK_SIZE] __attribute__((aligned(16), section(".stacks")));

static void build_page_tables(void)
{
    memset(page_tables.pml4, 0, sizeof(page_tables.pml4));
    memset(page_tables.pdpt, 0, sizeof(page_tables.pdpt));
    page_tables.pml4[0] = (u64)page_tables.pdpt | PTE_P | PTE_RW | PTE_US;
    for (u64 g = 0; g < 4; g++) {
        page_tables.pdpt[g] = (u64)page_tables.pd[g] | PTE_P | PTE_RW | PTE_US;
        /* The 3-4 GiB window holds MMIO only: uncached. */
        u64 flags = PTE_P | PTE_RW | PTE_US | PTE_PS | (g == 3 ? PTE_PCD | PTE_PWT : 0);
        for (u64 i = 0; i < 512; i++)
            page_tables.pd[g][i] = (g << 30) + (i << 21) + flags;
    }
}

static int parse_enter(const char *s)
{
    if (!strcmp(s, "auto") || !strcmp(s, "sysexit"))
        return ENTER_SYSEXIT;
    if (!strcmp(s, "sysret"))
        return ENTER_SYSRET;
    if (!strcmp(s, "iret"))
        return ENTER_IRET;
    return -1;
}

bool mode_compute(void)
{
    u64 iterations = arg_u64("iterations", 100000000);
    const char *enter_s = arg_str("enter", "auto");
    const char *leave_s = arg_str("leave", "syscall");
    int enter = parse_enter(enter_s);

    if (enter < 0) {
        fail("compute: expected enter=auto|sysexit|sysret|iret got %s", enter_s);
        return false;
    }
    if (strcmp(leave_s, "syscall") && strcmp(leave_s, "int")) {
        fail("compute: expected leave=syscall|int got %s", leave_s);
        return false;
    }
    user_leave_int = !strcmp(leave_s, "int");

    build_page_tables();
    u64 old_cr3 = read_cr3();
    /* Kernel code lives in user pages too: no SMEP/SMAP. */
    write_cr4(read_cr4() & ~(CR4_SMEP | CR4_SMAP));
    write_cr3((u64)page_tables.pml4);

    /* Interrupts and exceptions from CPL3 switch to TSS.RSP0. */
    cpu_set_rsp0((u64)int_stack + sizeof(int_stack));
    cpu_load_tss();
    cpu_set_idt_gate(0x80, user_int80_entry, 3);

    /* SYSCALL: CS = STAR[47:32], SS = +8. SYSRET: CS = STAR[63:48] + 16, SS = STAR[63:48] + 8.
     * SYSEXIT (64-bit): CS = SYSENTER_CS + 32, SS = SYSENTER_CS + 40. (SDM vol. 2B.) */
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    wrmsr(MSR_STAR, ((u64)SEL_DATA << 48) | ((u64)SEL_CODE64 << 32));
    wrmsr(MSR_LSTAR, (u64)user_syscall_entry);
    wrmsr(MSR_FMASK, 0x47700); /* clear TF, IF, DF, IOPL, NT, AC */
    wrmsr(MSR_SYSENTER_CS, SEL_CODE32);
    wrmsr(MSR_SYSENTER_ESP, (u64)int_stack + sizeof(int_stack));
    wrmsr(MSR_SYSENTER_EIP, (u64)user_syscall_entry);

    gprintf("COMPUTE iterations %lu enter %s leave %s\n", iterations, enter_s, leave_s);
    u64 t0 = rdtsc();
    u64 left =
        user_run((u64)user_compute, (u64)user_stack + sizeof(user_stack), iterations, (u32)enter);
    u64 t1 = rdtsc();
    write_cr3(old_cr3);

    gprintf("COMPUTE tsc %lu%s\n", t1 - t0,
            user_sysexit_failed ? " (sysexit raised #UD; entered with iretq)" : "");
    bool ok = check_u64("compute-cpl", 3, user_cs & 3);
    ok &= check_u64("compute-loop", 0, left);
    if (ok)
        pass("compute");
    return ok;
}
