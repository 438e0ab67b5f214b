#!/bin/busybox sh
# /init of the L1 initramfs built by tests/vmhost/run-with-kvm.
# Runs as PID 1 inside the QEMU TCG VM. Serial ports:
#   ttyS0  kernel console + this script's log   (host: a log file)
# virtio-serial ports (plain char devices, no tty processing, fast):
#   "stdout"  COMMAND's stdout                  (host: run-with-kvm's stdout)
#   "stderr"  COMMAND's stderr                  (host: run-with-kvm's stderr)
# The 9p share "state" holds config (sourced below), cmd.sh, and receives rc.

# shellcheck disable=SC2013,SC2086,SC1091,SC2154
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /host /state
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/ttyS0 2>&1

log() { echo "vmhost-init: $*"; }
fail() {
	log "FATAL: $*"
	dmesg | tail -n 40
	[ -d /state/. ] && echo "init: $*" >/state/init-failed
	sync
	reboot -f
	sleep 10
}

port() { # NAME -> /dev/vportXpY
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && echo "/dev/${p##*/}" && return 0
	done
	fail "no virtio-serial port named $1"
}

# Modules, in dependency order; each line: name [params...]. Like modprobe,
# take MODULE.PARAM=VALUE arguments from the kernel command line too.
modparams() {
	for a in $(cat /proc/cmdline); do
		case $a in "$1".*=*) printf '%s ' "${a#"$1".}" ;; esac
	done
}
while read -r mod params; do
	[ -n "$mod" ] || continue
	params="$params $(modparams "$mod")"
	insmod "/lib/modules/$mod.ko" $params || fail "insmod $mod $params"
done </modules.list

P9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$P9,cache=none" state /state || fail "mount state share"
. /state/config || fail "reading /state/config"
log "modules loaded; $(ls -l /dev/kvm 2>&1)"
[ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm modules"

if [ "${SYSTEMD:-0}" = 1 ]; then
	# The host's root, writable through an overlay whose upper layer is this VM's memory:
	# systemd, dbus-daemon and what the command installs may write anywhere, and nothing
	# reaches the host.
	mkdir -p /lower /layer
	mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || fail "mount host root"
	mount -t tmpfs -o mode=755 tmpfs /layer || fail "mount the overlay's tmpfs"
	mkdir -p /layer/upper /layer/work
	mount -t overlay -o lowerdir=/lower,upperdir=/layer/upper,workdir=/layer/work,xino=off \
		overlay /host || fail "mount the overlay root"
else
	mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || fail "mount host root"
fi
mount -t proc proc /host/proc || fail "mount /proc"
mount -t sysfs sysfs /host/sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mount /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "mount /run"
mkdir -p /host/run/vmhost /host/run/lock
mount --bind /state /host/run/vmhost || fail "bind state"

# Shared host directories: RW_COUNT, RW_PATH_<i> and RW_MODE_<i> (rw or ro)
# come from /state/config, parents before children.
i=0
while [ "$i" -lt "${RW_COUNT:-0}" ]; do
	eval "p=\$RW_PATH_$i mode=\$RW_MODE_$i"
	opts="$P9,cache=mmap"
	[ "$mode" = ro ] && opts="$P9,ro,cache=loose"
	mkdir -p "/host$p" 2>/dev/null
	mount -t 9p -o "$opts" "rw$i" "/host$p" || fail "mount rw$i at $p"
	i=$((i + 1))
done

# systemd as PID 1 (run-with-kvm --systemd): it finds /proc, /sys, /dev, /run and /tmp mounted
# and keeps them; /run/vmhost is the state share. It boots to vmhost.target, whose service runs
# the command (systemd-command.sh: the heartbeat, the ports, the exit status, the reboot).
if [ "${SYSTEMD:-0}" = 1 ]; then
	units=/host/etc/systemd/system
	cat >"$units/vmhost.target" <<-EOF
		[Unit]
		Description=run-with-kvm: the command under systemd
		Requires=basic.target vmhost-heartbeat.service vmhost-command.service
		After=basic.target
		AllowIsolate=yes
	EOF
	cat >"$units/vmhost-heartbeat.service" <<-EOF
		[Unit]
		Description=run-with-kvm: heartbeat for the host's stall watch
		DefaultDependencies=no
		[Service]
		ExecStart=/bin/bash /run/vmhost/systemd-command.sh --heartbeat
	EOF
	cat >"$units/vmhost-command.service" <<-EOF
		[Unit]
		Description=run-with-kvm: the command
		After=basic.target
		[Service]
		Type=exec
		ExecStart=/bin/bash /run/vmhost/systemd-command.sh $(port stdout) $(port stderr)
		StandardInput=null
		StandardOutput=journal+console
	EOF
	# A fresh machine: its own ID, no first-boot questions.
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >/host/etc/machine-id
	echo >>/host/etc/machine-id
	log "starting systemd"
	exec switch_root /host /lib/systemd/systemd --unit=vmhost.target
fi

# A heartbeat the host watches (run-with-kvm --stall): when it stops, this
# kernel has stopped running userspace, and the host ends the VM and names the
# tests that were running (MVM_TEST_JOURNAL, in the state share).
# Each beat says how loaded the VM was, for the report of a stall.
beat() {
	set -- $(cat /proc/loadavg)
	echo "load $1 $2 $3, $(grep MemAvailable /proc/meminfo | tr -s ' ')"
}
(while :; do beat >/state/heartbeat; sleep 5; done) </dev/null >/dev/null 2>&1 &
echo $! >/state/heartbeat.pid # run-with-kvm's own test stops it to play a frozen kernel

out=$(port stdout) || fail "no stdout port"
err=$(port stderr) || fail "no stderr port"
log "starting command"
chroot /host /usr/bin/env -i /bin/bash /run/vmhost/cmd.sh \
	</dev/null >"$out" 2>"$err"
rc=$?
log "command exited with $rc"
echo "$rc" >/state/rc.tmp && mv /state/rc.tmp /state/rc
# Flush: QEMU drops data still queued in the ports when the VM reboots, so
# send an end token on each and wait until the host has read up to it.
printf '\001\002MVMEOF-%s' "$EOF_ID" >"$out"
printf '\001\002MVMEOF-%s' "$EOF_ID" >"$err"
n=0
while [ ! -e /state/ack-out ] || [ ! -e /state/ack-err ]; do
	n=$((n + 1))
	[ "$n" -le 600 ] || { log "host did not acknowledge the output"; break; }
	sleep 0.05
done
sync
i=$((RW_COUNT - 1))
while [ "$i" -ge 0 ]; do
	eval "p=\$RW_PATH_$i"
	umount "/host$p" 2>/dev/null
	i=$((i - 1))
done
sync
reboot -f
