/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Our own GDT, IDT and TSS. Every CPU exception is reported on the serial port and fails the run
 * (instead of escalating to a triple fault that only says "crashed").
 */
#include "guest.h"

/* Flat descriptors (Intel SDM vol. 3, 3.4.5): base 0, limit 4 GiB, G = 1. */
#define DESC_CODE32  0x00cf9a000000ffffULL
#define DESC_CODE64  0x00af9a000000ffffULL /* L = 1 */
#define DESC_DATA    0x00cf92000000ffffULL
#define DESC_UDATA   0x00cff2000000ffffULL /* DPL 3 */
#define DESC_UCODE64 0x00affa000000ffffULL /* DPL 3, L = 1 */

__attribute__((aligned(16))) u64 gdt_table[GDT_ENTRIES] = {
    [0] = 0,
    [SEL_CODE32 / 8] = DESC_CODE32,
    [SEL_CODE64 / 8] = DESC_CODE64,
    [SEL_DATA / 8] = DESC_DATA,
    [SEL_UDATA / 8] = DESC_UDATA,
    [SEL_UCODE64 / 8] = DESC_UCODE64,
    [SEL_UDATA2 / 8] = DESC_UDATA,
    /* [SEL_TSS / 8], two entries: filled in by cpu_init() (the base is not a link-time constant
     * the descriptor format can hold). */
};
const u16 gdt_limit = sizeof(gdt_table) - 1;

struct idt_gate {
    u16 offset_lo;
    u16 selector;
    u8 ist;
    u8 type_attr;
    u16 offset_mid;
    u32 offset_hi;
    u32 reserved;
} __attribute__((packed));

struct tss64 {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __attribute__((packed));

struct table_ptr {
    u16 limit;
    u64 base;
} __attribute__((packed));

static __attribute__((aligned(16))) struct idt_gate idt[256];
static __attribute__((aligned(16))) struct tss64 tss;

extern const u8 isr_stubs[];
extern const u8 user_sysexit_insn[];
extern void user_enter_iret(void);

void cpu_set_idt_gate(unsigned vector, void (*handler)(void), unsigned dpl)
{
    u64 addr = (u64)handler;
    idt[vector] = (struct idt_gate){
        .offset_lo = (u16)addr,
        .selector = SEL_CODE64,
        .ist = 0,
        .type_attr = (u8)(0x8e | (dpl << 5)), /* present, 64-bit interrupt gate */
        .offset_mid = (u16)(addr >> 16),
        .offset_hi = (u32)(addr >> 32),
    };
}

static void load_idt(void)
{
    struct table_ptr p = {.limit = sizeof(idt) - 1, .base = (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(p));
}

void cpu_init(void)
{
    u64 base = (u64)&tss;
    u64 limit = sizeof(tss) - 1;

    /* 64-bit TSS descriptor (SDM vol. 3, 8.2.3): type 9 (available), present, DPL 0. */
    gdt_table[SEL_TSS / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
                             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt_table[SEL_TSS / 8 + 1] = base >> 32;
    tss.iomap_base = sizeof(tss); /* no I/O bitmap */

    struct table_ptr g = {.limit = gdt_limit, .base = (u64)gdt_table};
    /* Same selectors as the boot GDT, so the loaded segment registers stay valid. */
    __asm__ volatile("lgdt %0" : : "m"(g));

    for (unsigned v = 0; v < 32; v++)
        cpu_set_idt_gate(v, (void (*)(void))(isr_stubs + 16 * v), 0);
    load_idt();
}

void cpu_load_ap(void)
{
    load_idt();
}

void cpu_set_rsp0(u64 rsp0)
{
    tss.rsp[0] = rsp0;
}

void cpu_load_tss(void)
{
    /* LTR marks the descriptor busy; clear that so a second load works. */
    gdt_table[SEL_TSS / 8] &= ~(0x2ULL << 40);
    __asm__ volatile("ltr %w0" : : "r"((u16)SEL_TSS) : "memory");
}

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS",
    "#NP", "#SS", "#GP", "#PF", "R15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void exception_handler(struct exception_frame *f)
{
    /* compute mode: 64-bit SYSEXIT is #UD on AMD CPUs; enter user mode with IRETQ instead. */
    if (f->vector == 6 && f->rip == (u64)user_sysexit_insn) {
        extern u8 user_sysexit_failed;
        user_sysexit_failed = 1;
        user_enter_iret();
    }

    u64 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    const char *name =
        f->vector < 32 && exception_names[f->vector] ? exception_names[f->vector] : "?";
    gprintf_nolock("FAIL exception: vector=%lu (%s) error=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx "
                   "rsp=0x%lx cr2=0x%lx\n",
                   f->vector, name, f->error_code, f->rip, f->cs, f->rflags, f->rsp, cr2);
    gprintf_nolock("TESTGUEST-DONE %s FAIL\n", current_mode ? current_mode : "?");
    guest_exit(1);
}
