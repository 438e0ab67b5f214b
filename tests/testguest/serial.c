/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 16550 UART on COM1, and a small printf. Output polls the LSR (the transmitter is ready at
 * once). Input halts until the receive interrupt: a guest waiting for a line costs its host
 * nothing, where polling would cost a core in exits, and a nested host under QEMU's TCG was held
 * for good by a guest spinning on the LSR (tests/vmhost/README.md).
 */
#include "guest.h"

#define COM1          MVM_SERIAL_COM1_PORT
#define UART_RBR      0
#define UART_THR      0
#define UART_IER      1
#define UART_LSR      5
#define UART_IER_RDA  0x01 /* interrupt when received data is available */
#define UART_LSR_DR   0x01 /* data ready */
#define UART_LSR_THRE 0x20 /* transmit holding register empty */
#define COM1_GSI      4    /* ISA IRQ 4, the same IOAPIC pin */
#define COM1_VECTOR   0x42 /* mode_virtio_irq.c has 0x40, mode_vmgenid.c and mode_pattern.c 0x41 */

static volatile u32 serial_lock_word;

void serial_lock(void)
{
    while (__atomic_exchange_n(&serial_lock_word, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&serial_lock_word, __ATOMIC_RELAXED))
            cpu_relax();
}

void serial_unlock(void)
{
    __atomic_store_n(&serial_lock_word, 0, __ATOMIC_RELEASE);
}

void serial_putc(char c)
{
    while (!(inb(COM1 + UART_LSR) & UART_LSR_THRE))
        cpu_relax();
    outb(COM1 + UART_THR, (u8)c);
}

/* Interrupts stay off but for irq_wait(), which checks nothing between its STI and HLT. */
int serial_getc(void)
{
    static bool rx_interrupt;

    __asm__ volatile("cli");
    if (!rx_interrupt && irq_setup_wake("serial", COM1_GSI, COM1_VECTOR)) {
        outb(COM1 + UART_IER, UART_IER_RDA);
        rx_interrupt = true;
    }
    while (!(inb(COM1 + UART_LSR) & UART_LSR_DR)) {
        if (rx_interrupt)
            irq_wait();
        else
            cpu_relax();
    }
    return inb(COM1 + UART_RBR);
}

static void put_str(const char *s)
{
    if (!s)
        s = "(null)";
    while (*s)
        serial_putc(*s++);
}

static void put_num(u64 v, unsigned base, bool negative, unsigned width, char pad)
{
    char buf[24];
    unsigned n = 0;

    do {
        unsigned d = (unsigned)(v % base);
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (negative)
        buf[n++] = '-';
    while (width > n) {
        serial_putc(pad);
        width--;
    }
    while (n)
        serial_putc(buf[--n]);
}

void vgprintf_locked(const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            serial_putc(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        unsigned width = 0, longs = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (unsigned)(*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            longs++;
            fmt++;
        }
        switch (*fmt) {
        case 's':
            put_str(va_arg(ap, const char *));
            break;
        case 'c':
            serial_putc((char)va_arg(ap, int));
            break;
        case 'd':
        case 'i': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_num(v < 0 ? (u64)-v : (u64)v, 10, v < 0, width, pad);
            break;
        }
        case 'u':
            put_num(longs ? va_arg(ap, u64) : va_arg(ap, unsigned), 10, false, width, pad);
            break;
        case 'x':
            put_num(longs ? va_arg(ap, u64) : va_arg(ap, unsigned), 16, false, width, pad);
            break;
        case 'p':
            put_str("0x");
            put_num((u64)va_arg(ap, void *), 16, false, width, pad);
            break;
        case '%':
            serial_putc('%');
            break;
        case '\0':
            return;
        default:
            serial_putc('%');
            serial_putc(*fmt);
            break;
        }
    }
}

void gprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    serial_lock();
    vgprintf_locked(fmt, ap);
    serial_unlock();
    va_end(ap);
}

void gprintf_nolock(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vgprintf_locked(fmt, ap);
    va_end(ap);
}
