#!/bin/sh
# /init of the microvmd Linux test guest (built by tests/linux-guest/build-linux-guest).
# Prints two marker lines on the console and powers the VM off at once.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

vcpus=$(nproc 2>/dev/null || grep -c '^processor' /proc/cpuinfo)
mem=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB$/\1/p' /proc/meminfo)
echo "MICROVM-INIT-OK vcpus=${vcpus} mem=${mem}"
echo "MICROVM-CMDLINE $(cat /proc/cmdline)"

# Power off.  busybox "poweroff -f" calls reboot(LINUX_REBOOT_CMD_POWER_OFF)
# directly; the kernel turns that into HALT when it has no power-off method
# (no ACPI S5), and a halted guest would just sit until the runner's
# timeout.  So power off only when the DSDT has an _S5_ object; otherwise
# (or if poweroff returned) reboot: sysrq "b" = emergency_restart(), which
# with reboot=k is the i8042 0xFE reset (or a triple fault with reboot=t).
if grep -q _S5_ /sys/firmware/acpi/tables/DSDT 2>/dev/null; then
    echo "MICROVM-INIT poweroff -f (ACPI _S5_ present)"
    poweroff -f
    sleep 1
fi
echo "MICROVM-INIT reboot via sysrq-trigger b"
echo b > /proc/sysrq-trigger
sleep 1
reboot -f
sleep 5
echo "MICROVM-INIT still alive; halting"
exec halt -f
