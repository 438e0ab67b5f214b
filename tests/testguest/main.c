/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testguest: picks a mode from the kernel command line ("mode=NAME key=value ...") and reports
 * on the serial port: "TESTGUEST <mode> start", "PASS <what>" / "FAIL <what>: ...", and last
 * "TESTGUEST-DONE <mode> PASS|FAIL", then ends the VM through the debug exit port (0 / 1).
 */
#include "guest.h"

#define BP_CMD_LINE_PTR 0x228 /* struct boot_params: hdr.cmd_line_ptr */

const char *current_mode;

static const struct {
    const char *name;
    bool (*run)(void);
} modes[] = {
    {"boot", mode_boot},
    {"echo", mode_echo},
    {"iotest", mode_iotest},
    {"reset", mode_reset},
    {"triplefault", mode_triplefault},
    {"smp", mode_smp},
    {"compute", mode_compute},
    {"pattern", mode_pattern},
    {"kvmclock", mode_kvmclock},
    {"blk", mode_blk},
    {"blkbench", mode_blkbench},
    {"blkloop", mode_blkloop},
    {"rng", mode_rng},
    {"hostile", mode_hostile},
    {"vsock", mode_vsock},
    {"net", mode_net},
    {"virtioirq", mode_virtioirq},
    {"vtransport", mode_vtransport},
    {"idle", mode_idle},
    {"ctrlaltdel", mode_ctrlaltdel},
    {"sandbox", mode_sandbox},
    {"cpuid", mode_cpuid},
    {"vmgenid", mode_vmgenid},
    {"dirty", mode_dirty},
};

void pass(const char *what)
{
    gprintf("PASS %s\n", what);
}

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    serial_lock();
    gprintf_nolock("FAIL ");
    vgprintf_locked(fmt, ap);
    gprintf_nolock("\n");
    serial_unlock();
    va_end(ap);
}

bool check_u64(const char *what, u64 expected, u64 got)
{
    if (expected == got) {
        pass(what);
        return true;
    }
    fail("%s: expected %lu got %lu", what, expected, got);
    return false;
}

noreturn void guest_main(const u8 *boot_params);

noreturn void guest_main(const u8 *boot_params)
{
    u32 cmdline_ptr = 0;

    cpu_init();
    if (boot_params)
        memcpy(&cmdline_ptr, boot_params + BP_CMD_LINE_PTR, sizeof(cmdline_ptr));
    cmdline_init(cmdline_ptr ? (const char *)(u64)cmdline_ptr : "");

    const char *mode = arg_str("mode", "boot");
    current_mode = mode;
    gprintf("TESTGUEST %s start\n", mode);

    bool ok = false;
    bool found = false;
    for (unsigned i = 0; i < ARRAY_SIZE(modes); i++) {
        if (!strcmp(modes[i].name, mode)) {
            found = true;
            ok = modes[i].run();
            break;
        }
    }
    if (!found)
        fail("mode: expected one of boot echo iotest reset triplefault smp compute pattern idle "
             "ctrlaltdel sandbox got %s",
             mode);
    gprintf("TESTGUEST-DONE %s %s\n", mode, ok ? "PASS" : "FAIL");
    guest_exit(ok ? 0 : 1);
}
