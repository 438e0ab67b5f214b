/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testguest: a freestanding 64-bit x86 program for testing microvmd. Shared declarations.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "guest-defs.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define noreturn      _Noreturn
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- port and MMIO access ---- */
static inline void outb(u16 port, u8 v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline void outl(u16 port, u32 v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
/* One access of exactly the given width (a plain volatile access could be split or merged). */
static inline u32 mmio_read32(u64 addr)
{
    u32 v;
    __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
static inline void mmio_write32(u64 addr, u32 v)
{
    __asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}
static inline u64 mmio_read64(u64 addr)
{
    u64 v;
    __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
static inline void mmio_write64(u64 addr, u64 v)
{
    __asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}
static inline void cpu_relax(void)
{
    __asm__ volatile("pause" : : : "memory");
}
static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}
static inline u64 read_cr3(void)
{
    u64 v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}
static inline void write_cr3(u64 v)
{
    __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}
static inline u64 read_cr4(void)
{
    u64 v;
    __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}
static inline void write_cr4(u64 v)
{
    __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory");
}
static inline u32 atomic_inc_u32(volatile u32 *p)
{
    return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST);
}
static inline u32 atomic_load_u32(volatile u32 *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

/* ---- lib.c ---- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
bool str_has_prefix(const char *s, const char *prefix);
/* Busy waits on the TSC, assuming at most TSC_ASSUMED_KHZ (so waits are never too short). */
void tsc_delay_us(u64 us);
u64 tsc_deadline_ms(u64 ms);
bool tsc_passed(u64 deadline);
noreturn void guest_exit(u32 code);

/* ---- serial.c ---- */
void serial_putc(char c);
int serial_getc(void); /* blocks */
void serial_lock(void);
void serial_unlock(void);
/* printf subset: %s %c %d %i %u %x %p, modifiers l ll z; '0' and width for numbers. */
void gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vgprintf_locked(const char *fmt, va_list ap);
/* For the exception handler: writes without taking the lock (it may be held). */
void gprintf_nolock(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- cmdline.c ---- */
void cmdline_init(const char *cmdline);
const char *cmdline_raw(void);
const char *arg_str(const char *key, const char *def);
u64 arg_u64(const char *key, u64 def);
/* The range is RAM in the e820 map, and identity-mapped (below 3 GiB). */
bool range_is_ram(u64 start, u64 end);
bool arg_present(const char *key);

/* ---- main.c: result helpers ---- */
extern const char *current_mode;
bool check_u64(const char *what, u64 expected, u64 got);
void pass(const char *what);
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- start.S ---- */
extern const u8 *boot_params_ptr;
extern u64 entry_rflags;
extern u32 entry_cs, entry_ds, entry_ss, entry_es;

/* ---- cpu.c ---- */
struct exception_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error_code;
    u64 rip, cs, rflags, rsp, ss;
};
void cpu_init(void);    /* our GDT, IDT (exceptions report and fail), TSS */
void cpu_load_ap(void); /* on an AP: our IDT (the trampoline loaded the GDT) */
void cpu_set_idt_gate(unsigned vector, void (*handler)(void), unsigned dpl);

/*
 * irq.c: IOAPIC pin @gsi to @vector (edge, active high, to the BSP), 8259s masked, LAPIC on;
 * @handler runs for each interrupt, before the EOI (FALSE, with a FAIL line naming @what, for
 * a pin the IOAPIC does not have). irq_wait() enables interrupts, halts, and returns with them
 * off again once one interrupt was handled.
 */
bool irq_setup(const char *what, u32 gsi, u8 vector, void (*handler)(void));
/* As irq_setup(), but the interrupt only ends irq_wait(): its caller checks why it woke. */
bool irq_setup_wake(const char *what, u32 gsi, u8 vector);
void irq_wait(void);
/*
 * The LAPIC timer, one-shot, on @vector (LAPIC on, nothing else set up); lapic_sleep_ms() halts
 * until it fired @ms later (at most about 4 s), the vCPU costing the host nothing meanwhile.
 */
void lapic_timer_setup(u8 vector);
void lapic_sleep_ms(u64 ms);
void cpu_set_rsp0(u64 rsp0);
void cpu_load_tss(void);
void exception_handler(struct exception_frame *f);
extern u64 gdt_table[];
extern const u16 gdt_limit;

/* ---- acpi.c ---- */
struct acpi_info {
    u64 rsdp;
    u8 rsdp_revision;
    bool rsdp_ok;   /* checksums valid */
    bool used_xsdt; /* else RSDT */
    bool root_ok;   /* XSDT/RSDT checksum valid */
    u64 madt;       /* 0: not found */
    bool madt_ok;   /* checksum valid */
    u32 lapic_addr; /* from the MADT */
    u32 n_lapics;   /* enabled (or online-capable) processor LAPIC/x2APIC entries */
    u32 lapic_ids[64];
    u64 fadt;     /* "FACP"; 0: not found */
    u64 dsdt;     /* from the FADT (X_DSDT, else DSDT); 0: none (or a bad FADT) */
    bool dsdt_ok; /* checksum valid */
};
bool acpi_scan(struct acpi_info *info); /* false: no RSDP */
u64 mptable_find(void);                 /* address of "_MP_" with a valid checksum, or 0 */

/* ---- modes ---- */
bool mode_boot(void);
bool mode_echo(void);
bool mode_iotest(void);
bool mode_reset(void);
bool mode_triplefault(void);
bool mode_sandbox(void);
bool mode_smp(void);
bool mode_compute(void);
bool mode_pattern(void);
bool mode_kvmclock(void);
bool mode_cpuid(void);
/* virtio modes (virtio.h is the driver) */
bool mode_blk(void);
bool mode_blkbench(void);
bool mode_blkloop(void);
bool mode_rng(void);
bool mode_hostile(void);
bool mode_vsock(void);
bool mode_net(void);
bool mode_virtioirq(void);
bool mode_vtransport(void);
bool mode_idle(void);
bool mode_ctrlaltdel(void);
bool mode_vmgenid(void);
bool mode_dirty(void);
