#!/bin/bash
# run-with-kvm --systemd: what the services of vmhost.target run (init.sh writes the units).
#   systemd-command.sh --heartbeat            the heartbeat the host's stall watch reads
#   systemd-command.sh STDOUT_PORT STDERR_PORT
#       runs the command (cmd.sh) with its output on the two virtio-serial ports, reports its
#       exit status, flushes the ports as init.sh does, and reboots (QEMU then exits).
set -u
state=/run/vmhost
if [ "${1:-}" = --heartbeat ]; then
	while :; do
		read -r l1 l5 l15 _ </proc/loadavg
		echo "load $l1 $l5 $l15, $(grep MemAvailable /proc/meminfo | tr -s ' ')" >"$state/heartbeat"
		sleep 5
	done
fi
out=${1:?} err=${2:?}
env -i /bin/bash "$state/cmd.sh" </dev/null >"$out" 2>"$err"
rc=$?
echo "systemd-command: the command exited with $rc"
echo "$rc" >"$state/rc.tmp" && mv "$state/rc.tmp" "$state/rc"
# shellcheck disable=SC1091
. "$state/config" # EOF_ID
printf '\001\002MVMEOF-%s' "$EOF_ID" >"$out"
printf '\001\002MVMEOF-%s' "$EOF_ID" >"$err"
for _ in $(seq 600); do
	[ -e "$state/ack-out" ] && [ -e "$state/ack-err" ] && break
	sleep 0.05
done
sync
systemctl reboot --force --force
