#!/bin/bash
# run-with-kvm ends a nested VM whose kernel stops answering, within --stall seconds, and names
# the test that was running then (tests/run-test's journal) and the CPU's state. A frozen kernel is played by
# stopping init's heartbeat. Boots the QEMU TCG VM (~10 s), so it runs on hosts with /dev/kvm
# (forced VM) and skips inside the nested VM itself.
# Usage: test-stall.sh RUN_WITH_KVM RUN_TEST   (TAP output)
set -uo pipefail
run_with_kvm=${1:?} run_test=${2:?}
if [ -n "${MVM_VMHOST_INSIDE:-}" ]; then
	echo "1..0 # SKIP already inside tests/vmhost (no QEMU inside QEMU)"
	exit 0 # TAP: the plan says skip
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$run_with_kvm" --force-vm --quiet --cpus 1 --memory 512 --stall 20 --timeout 600 -- \
	sh -c 'kill -STOP "$(cat /run/vmhost/heartbeat.pid)" && exec "$0" sleep 1234' "$run_test" \
	>"$out" 2>&1
status=$?
echo "1..1"
if [ $status = 75 ] && grep -q 'the VM stopped answering (no heartbeat for [0-9]* s)' "$out" &&
	grep -q 'tests running when it stopped' "$out" && grep -q 'sleep 1234' "$out" &&
	grep -q '^  | RIP=' "$out"; then
	echo "ok 1 - a VM that stops answering is ended, naming the test it ran (status $status)"
else
	echo "not ok 1 - status $status"
	sed 's/^/# /' "$out"
	exit 1
fi
