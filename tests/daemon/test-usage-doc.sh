#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs the shell examples of docs/usage-dbus.md against a real microvmd on a private bus, with
# the system bus swapped for the private one and the example paths for real files (the test
# guest as kernel and initrd). An example that fails where the document shows success, or an
# error other than the ones it shows, fails the test. Needs /dev/kvm (else exit 77).
set -u

: "${MVM_TESTGUEST:?MVM_TESTGUEST must point to the test guest}"
DOC=${G_TEST_SRCDIR:-$(dirname "$0")}/../../docs/usage-dbus.md
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "SKIP: /dev/kvm is not usable"; exit 77; }
[ -r "$DOC" ] || { echo "Bail out! $DOC not found"; exit 1; }

# shellcheck source=tests/common/private-bus.sh
. "$(dirname "$0")/../common/private-bus.sh"
private_bus_test_setup
start_daemon "$TMP/daemon.log"

# The examples, every ```sh block but the last (it starts a bus of its own: below), rewritten:
# the private bus for the system bus, real files for /srv and /run, a 1 s Shutdown wait
# (the test guest ignores Ctrl-Alt-Del: the document says that is a Timeout error), and no
# interactive commands.
truncate -s 1M "$TMP/root.img"
awk '/^```sh/{b++; on=1; next} /^```/{on=0} on{print b "\t" $0}' "$DOC" > "$TMP/blocks"
last=$(cut -f1 "$TMP/blocks" | sort -n | tail -n1)
# microvmctl runs only where no other client can do it: the restore of a diff with its layers
# (descriptors, which gdbus and busctl cannot pass).
awk -F'\t' -v last="$last" '$1 != last { sub(/^[0-9]+\t/, ""); print }' "$TMP/blocks" |
    sed -e "/^microvmctl restore .*--layer/s|^microvmctl |\"${MICROVMCTL:-microvmctl}\" --address=\"$ADDR\" |" |
    grep -v -e '^microvmctl ' -e '^tail -f' -e '^gdbus monitor' |
    sed -e "s|gdbus call --system|gdbus call --address \"$ADDR\"|" \
        -e "s|^busctl --timeout=40 |busctl --address=\"$ADDR\" --timeout=40 |" \
        -e "s|^busctl |busctl --address=\"$ADDR\" |" \
        -e "s|/srv/vm/vmlinux|$MVM_TESTGUEST|g" -e "s|/srv/vm/initrd.img|$MVM_TESTGUEST|g" \
        -e "s|/srv/vm/[a-z]*\.img|$TMP/root.img|g" -e "s|/srv/snap/web|$TMP/snap/web|g" \
        -e "s|mkdir $TMP|mkdir -p $TMP|" -e "s|/run/microvmd/db.vsock|$TMP/db.vsock|g" \
        -e "s|Shutdown u 30|Shutdown u 1|" > "$TMP/examples.sh"
echo "# running $(grep -c -e '^gdbus' -e '^busctl' "$TMP/examples.sh") example calls"
bash "$TMP/examples.sh" > "$TMP/out" 2>&1
cat "$TMP/out" | sed 's/^/# /'

N=0
FAILED=0
ok() { N=$((N + 1)); echo "ok $N - $*"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $*"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

# Exactly the two failures the document shows: the bad key, and the Shutdown timeout.
errors=$(grep -c -e '^Error:' -e '^Call failed:' "$TMP/out")
check "two errors, as documented (got $errors)" '[ "$errors" -eq 2 ]'
check "the bad key is InvalidArgument naming it" \
    "grep -q \"InvalidArgument: config key 'vcpus'\" \"$TMP/out\""
check "the graceful shutdown timed out" "grep -q 'did not shut down within 1 s' \"$TMP/out\""
check "web was created" "grep -q \"objectpath '/org/microvmd/MicroVM1/vm/web'\" \"$TMP/out\""
check "web2 was created with busctl" "grep -q 'o \"/org/microvmd/MicroVM1/vm/web2\"' \"$TMP/out\""
check "the State property read running" "grep -q 's \"running\"' \"$TMP/out\""
check "ListVMs showed web running" "grep -Eq \"\\('web', (objectpath )?'/org/microvmd/MicroVM1/vm/web', 'running'\" \"$TMP/out\""
check "portable was created with a CPU template" \
    "grep -q '\"cpu-template\" s \"x86-64-v2\"' \"$TMP/out\""
check "GetCPUConfig answered for web" "grep -q '\"cpu-template\" s \"host\" \"tsc-khz\" u' \"$TMP/out\""
check "the snapshot was written" "[ -s \"$TMP/snap/web/state\" ]"
diff_id=$(tail -c 32 "$TMP/snap/web-diff/state" | od -An -tx1 | tr -d ' \n')
check "the diff was written, GetStats shows its ID as diff-parent" \
    "[ \${#diff_id} -eq 64 ] && grep -q '\"diff-parent\" s \"$diff_id\"' \"$TMP/out\""
check "the diff is smaller than its base" \
    "[ \$(du -k \"$TMP/snap/web-diff/memory\" | cut -f1) -lt \$(du -k \"$TMP/snap/web-base/memory\" | cut -f1) ]"
list=$(gdbus call --address "$ADDR" -d org.microvmd.MicroVM1 -o /org/microvmd/MicroVM1 \
    -m org.microvmd.MicroVM1.Manager.ListVMs)
echo "# after the examples: $list"
check "web was deleted" "! grep -q \"'web',\" <<<\"\$list\""
check "web-copy runs" "grep -Eq \"\\('web-copy', (objectpath )?'/org/microvmd/MicroVM1/vm/web_2dcopy', 'running'\" <<<\"\$list\""
check "web-diff runs, restored with its layer" "grep -Eq \"\\('web-diff', (objectpath )?'/org/microvmd/MicroVM1/vm/web_2ddiff', 'running'\" <<<\"\$list\""
check "web-clone runs" "grep -Eq \"\\('web-clone', (objectpath )?'/org/microvmd/MicroVM1/vm/web_2dclone', 'running'\" <<<\"\$list\""
clone_config=$(gdbus call --address "$ADDR" -d org.microvmd.MicroVM1 \
    -o /org/microvmd/MicroVM1/vm/web_2dclone -m org.microvmd.MicroVM1.VM.GetConfig)
echo "# web-clone: $clone_config"
check "web-clone is a clone with a generation ID" \
    "grep -q \"'clone': <true>\" <<<\"\$clone_config\" &&
     grep -Eq \"'generation-id': <'[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'>\" <<<\"\$clone_config\""
store_config=$(gdbus call --address "$ADDR" -d org.microvmd.MicroVM1 \
    -o /org/microvmd/MicroVM1/vm/store -m org.microvmd.MicroVM1.VM.GetConfig)
echo "# store: $store_config"
check "store has the limits SetResources gave" \
    "grep -q \"'bandwidth': <{'size': <uint64 500000>\" <<<\"\$store_config\" &&
     grep -q \"'rx-bandwidth': <{'size': <uint64 100000>\" <<<\"\$store_config\" &&
     grep -q \"'tx-ops': <{'size': <uint64 100>\" <<<\"\$store_config\" &&
     ! grep -q \"'ops'\" <<<\"\$store_config\""
check "db is defined and stored" "[ -f \"$TMP/state/vms/db.vm\" ]"
check "the daemon is alive" "kill -0 $DAEMON_PID"

# The last block, in a dbus-run-session of its own as the document says, with the built
# daemon and test guest for build/... and a directory of ours for /tmp/mvmd.
awk -F'\t' -v last="$last" '$1 == last { sub(/^[0-9]+\t/, ""); print }' "$TMP/blocks" |
    grep -v '^dbus-run-session' |
    sed -e "s|build/daemon/microvmd|$MICROVMD|" \
        -e "s|\$PWD/build/tests/testguest/testguest.elf|$MVM_TESTGUEST|" \
        -e "s|/tmp/mvmd|$TMP/trial|g" > "$TMP/trial.sh"
timeout 60 dbus-run-session -- bash "$TMP/trial.sh" > "$TMP/trial.out" 2>/dev/null
sed 's/^/# /' "$TMP/trial.out"
check "without root: the VM was created" "grep -q \"objectpath '/org/microvmd/MicroVM1/vm/t'\" \"$TMP/trial.out\""
check "without root: its console log shows the boot" "grep -q 'TESTGUEST boot start' \"$TMP/trial.out\""
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
rc=$?
DAEMON_PID=
check "SIGTERM with running VMs: exit 0" "[ $rc -eq 0 ]"
echo "1..$N"
[ $FAILED -eq 0 ]
