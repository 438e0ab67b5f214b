#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# microvmd driven by the command-line clients people use: gdbus and busctl, on a private bus.
# Needs MICROVMD (the built daemon). Output is TAP.
set -u

# shellcheck source=tests/common/private-bus.sh
. "$(dirname "$0")/../common/private-bus.sh"
private_bus_test_setup
N=0
FAILED=0

ok() { N=$((N + 1)); echo "ok $N - $*"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $*"; }

D=org.microvmd.MicroVM1
ROOT=/org/microvmd/MicroVM1
MGR=org.microvmd.MicroVM1.Manager
VMI=org.microvmd.MicroVM1.VM
ERR=org.microvmd.MicroVM1.Error

mgr() { gdbus call --address "$ADDR" -d $D -o $ROOT -m "$MGR.$1" "${@:2}" 2>&1; }
vm() { local path=$1 method=$2; shift 2; gdbus call --address "$ADDR" -d $D -o "$path" -m "$VMI.$method" "$@" 2>&1; }
bctl() { busctl --address="$ADDR" "$@" 2>&1; }

# expect NAME DESCRIPTION OUTPUT: OUTPUT contains NAME
expect() {
    if grep -qF -- "$1" <<<"$3"; then ok "$2"; else not_ok "$2: expected '$1', got: $3"; fi
}

start_daemon

# ---- Manager properties (busctl) ----
expect 's "0.1.0"' "Version" "$(bctl get-property $D $ROOT $MGR Version)"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then KVM=yes; else KVM=no; fi
out=$(bctl get-property $D $ROOT $MGR KvmApiVersion)
if [ $KVM = no ]; then expect 'i -1' "KvmApiVersion is -1 without KVM" "$out"; else expect 'i 12' "KvmApiVersion" "$out"; fi
expect 'u 0' "VMCount starts at 0" "$(bctl get-property $D $ROOT $MGR VMCount)"
expect '"fd-passing"' "Capabilities" "$(bctl get-property $D $ROOT $MGR Capabilities)"

# ---- CreateVM with busctl ----
out=$(bctl call $D $ROOT $MGR CreateVM 'sa{sv}' alpha 3 kernel s /boot/vmlinuz vcpus u 2 memory-mib t 64)
expect 'o "/org/microvmd/MicroVM1/vm/alpha"' "busctl CreateVM" "$out"
out=$(bctl call $D $ROOT $MGR CreateVM 'sa{sv}' alpha 1 kernel s /k)
expect "exists already" "busctl: duplicate name fails" "$out"
expect 'u 1' "VMCount 1" "$(bctl get-property $D $ROOT $MGR VMCount)"
A=$ROOT/vm/alpha
expect 's "created"' "State created" "$(bctl get-property $D $A $VMI State)"
expect 'u 2' "VCPUs" "$(bctl get-property $D $A $VMI VCPUs)"
expect 't 64' "MemoryMiB" "$(bctl get-property $D $A $VMI MemoryMiB)"
expect 's "alpha"' "Name" "$(bctl get-property $D $A $VMI Name)"
expect '"kernel" s "/boot/vmlinuz"' "GetConfig" "$(bctl call $D $A $VMI GetConfig)"
expect 's ""' "GetExitReason before any run" "$(bctl call $D $A $VMI GetExitReason)"
expect "u $(id -u)" "Owner is the caller" "$(bctl get-property $D $A $VMI Owner)"
out=$(bctl get-property $D $A $VMI UUID)
if grep -Eq '^s "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$' <<<"$out"; then ok "UUID v4"; else not_ok "UUID: $out"; fi
expect '.Shutdown' "busctl introspect shows the VM interface" "$(bctl introspect $D $A)"
intro=$(bctl introspect $D $A $VMI)
for m in .Start .Pause .Resume .Shutdown .Stop .Reboot .Delete .Snapshot .OpenConsole .GetStats \
    .GetConfig .GetExitReason .Name .UUID .State .VCPUs .MemoryMiB .StateChangedAt .Owner; do
    expect "$m" "VM interface has $m" "$intro"
done
intro=$(bctl introspect $D $ROOT $MGR)
for m in .CreateVM .RestoreVM .GetVMByName .ListVMs .Version .KvmApiVersion .VMCount .Capabilities; do
    expect "$m" "Manager interface has $m" "$intro"
done
expect "$A" "busctl tree" "$(bctl tree $D)"
expect '"data"' "busctl --json" "$(bctl --json=short get-property $D $A $VMI State)"

# ---- gdbus ----
out=$(mgr CreateVM 'beta.1' "{'kernel': <'/k'>, 'cmdline': <'console=ttyS0'>, 'vcpus': <uint32 1>}")
expect "objectpath '/org/microvmd/MicroVM1/vm/beta_2e1'" "gdbus CreateVM (escaped path)" "$out"
expect "objectpath '/org/microvmd/MicroVM1/vm/alpha'" "GetVMByName" "$(mgr GetVMByName alpha)"
out=$(mgr ListVMs)
expect "('alpha', objectpath '/org/microvmd/MicroVM1/vm/alpha', 'created'" "ListVMs alpha" "$out"
expect "('beta.1', '/org/microvmd/MicroVM1/vm/beta_2e1', 'created'" "ListVMs beta.1" "$out"
out=$(gdbus call --address "$ADDR" -d $D -o $ROOT -m org.freedesktop.DBus.ObjectManager.GetManagedObjects)
expect "'/org/microvmd/MicroVM1/vm/beta_2e1': {'org.microvmd.MicroVM1.VM'" "GetManagedObjects" "$out"
expect "<'created'>" "GetManagedObjects carries properties" "$out"
expect "'memory-bytes': <uint64 0>" "GetStats of a defined VM" "$(vm $A GetStats)"
expect "org.microvmd.MicroVM1.Manager" "gdbus introspect" "$(gdbus introspect --address "$ADDR" -d $D -o $ROOT)"

# ---- every error name ----
expect "$ERR.InvalidArgument" "name with a slash" "$(mgr CreateVM 'a/b' "{'kernel': <'/k'>}")"
expect "$ERR.InvalidArgument" "unicode name" "$(mgr CreateVM 'vm-ü' "{'kernel': <'/k'>}")"
expect "$ERR.InvalidArgument" "empty name" "$(mgr CreateVM '' "{'kernel': <'/k'>}")"
expect "$ERR.InvalidArgument" "name starting with a dot" "$(mgr CreateVM '.x' "{'kernel': <'/k'>}")"
expect "$ERR.InvalidArgument" "65-character name" "$(mgr CreateVM "$(printf 'x%.0s' $(seq 65))" "{'kernel': <'/k'>}")"
out=$(mgr CreateVM c "{'kernel': <'/k'>, 'colour': <'blue'>}")
expect "$ERR.InvalidArgument" "unknown key" "$out"
expect "'colour'" "unknown key is named" "$out"
out=$(mgr CreateVM c "{'kernel': <'/k'>, 'vcpus': <'2'>}")
expect "$ERR.InvalidArgument" "wrong type" "$out"
expect "'vcpus'" "wrong type names the key" "$out"
expect "$ERR.InvalidArgument" "vcpus out of range" "$(mgr CreateVM c "{'kernel': <'/k'>, 'vcpus': <uint32 0>}")"
expect "$ERR.InvalidArgument" "memory out of range" "$(mgr CreateVM c "{'kernel': <'/k'>, 'memory-mib': <uint64 99999999999>}")"
expect "$ERR.InvalidArgument" "relative kernel path" "$(mgr CreateVM c "{'kernel': <'vmlinuz'>}")"
expect "$ERR.InvalidArgument" "no kernel" "$(mgr CreateVM c "{}")"
expect "disks[0].path" "disk path named in the error" "$(mgr CreateVM c "{'kernel': <'/k'>, 'disks': <[{'path': <'rel'>}]>}")"
expect "$ERR.AlreadyExists" "duplicate" "$(mgr CreateVM alpha "{'kernel': <'/k'>}")"
expect "$ERR.NoSuchVM" "no such VM" "$(mgr GetVMByName nope)"
expect "$ERR.InvalidState" "Pause a created VM" "$(vm $A Pause {})"
expect "$ERR.InvalidArgument" "Pause with an unknown option" "$(vm $A Pause "{'bogus': <true>}")"
expect "the VM is not running" "busctl Pause (freeze-clock) a created VM" \
    "$(bctl call $D $A $VMI Pause 'a{sv}' 1 freeze-clock b true)"
expect "$ERR.InvalidState" "Snapshot a created VM" "$(vm $A Snapshot "$TMP" {})"
expect "$ERR.InvalidArgument" "Snapshot to a relative path" "$(vm $A Snapshot snap {})"
expect "$ERR.InvalidArgument" "RestoreVM from a relative path" "$(mgr RestoreVM r snap {})"
expect "$ERR.AlreadyExists" "RestoreVM onto a taken name" "$(mgr RestoreVM alpha "$TMP" {})"
expect "invalid VM name" "busctl RestoreVM with a bad name" \
    "$(bctl call $D $ROOT $MGR RestoreVM 'ssa{sv}' a/b "$TMP" 0)"
expect "$ERR.InvalidState" "Resume a created VM" "$(vm $A Resume)"
expect "$ERR.InvalidState" "Stop a created VM" "$(vm $A Stop)"
expect "$ERR.InvalidState" "Reboot a created VM" "$(vm $A Reboot)"
expect "$ERR.InvalidState" "Shutdown a created VM" "$(vm $A Shutdown 5)"
expect "$ERR.InvalidArgument" "Shutdown timeout too long" "$(vm $A Shutdown 99999)"
if [ $KVM = no ]; then
    expect "$ERR.Failed: cannot start the VM: KVM is not available" "Start without KVM" "$(vm $A Start)"
else
    expect "$ERR.Failed" "Start with a kernel that does not exist" "$(vm $A Start)"
fi
expect 's "created"' "still created" "$(bctl get-property $D $A $VMI State)"
expect "org.freedesktop.DBus.Error.InvalidArgs" "wrong signature" "$(mgr CreateVM 42 2>&1)"

# ---- Delete ----
expect "" "busctl Delete" "$(bctl call $D $A $VMI Delete)"
expect "$ERR.NoSuchVM" "deleted VM is gone" "$(mgr GetVMByName alpha)"
expect 'u 1' "VMCount back to 1" "$(bctl get-property $D $ROOT $MGR VMCount)"

# ---- persistence through busctl ----
expect 'o "/org/microvmd/MicroVM1/vm/kept"' "persistent VM" \
    "$(bctl call $D $ROOT $MGR CreateVM 'sa{sv}' kept 2 kernel s /k persist b true)"
[ -f "$TMP/state/vms/kept.vm" ] && ok "definition stored" || not_ok "definition stored"

# ---- SIGTERM: clean exit, then the stored VM comes back ----
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
rc=$?
DAEMON_PID=
[ $rc -eq 0 ] && ok "SIGTERM: exit 0" || not_ok "SIGTERM: exit $rc"
for _ in $(seq 100); do
    gdbus call --address "$ADDR" -d org.freedesktop.DBus -o /org/freedesktop/DBus \
        -m org.freedesktop.DBus.NameHasOwner $D | grep -q false && break
    sleep 0.05
done
start_daemon
expect "('kept', objectpath '/org/microvmd/MicroVM1/vm/kept', 'stopped'" "restored after restart" "$(mgr ListVMs)"
expect "$ERR.NoSuchVM" "transient VM not restored" "$(mgr GetVMByName beta.1)"
expect "" "Delete the stored VM" "$(bctl call $D $ROOT/vm/kept $VMI Delete)"
[ ! -e "$TMP/state/vms/kept.vm" ] && ok "definition removed" || not_ok "definition removed"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?; DAEMON_PID=
[ $rc -eq 0 ] && ok "second SIGTERM: exit 0" || not_ok "second SIGTERM: exit $rc"

echo "1..$N"
[ $FAILED -eq 0 ]
