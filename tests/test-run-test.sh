#!/bin/bash
# tests/run-test, the wrapper of every test: what a test leaves behind (even in a session of
# its own, as linux-early-boot-check's VMM is) dies with it, and a test stopped by the test
# runner at its timeout names what was still running, then ends it all.
# Usage: test-run-test.sh RUN_TEST   (TAP output)
set -uo pipefail
run_test=${1:?usage: test-run-test.sh RUN_TEST}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)) failed=1; echo "not ok $n - $1"; sed 's/^/# /' "$tmp/err"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# A sleeper in a new session, its pid in $tmp/pid once it runs sleep (before its exec, /proc
# shows the shell's command line); $2 more seconds of the main process.
cat >"$tmp/leaver" <<'SH'
#!/bin/bash
setsid sleep 997 </dev/null >/dev/null 2>&1 &
until [ "$(tr '\0' ' ' <"/proc/$!/cmdline")" = "sleep 997 " ]; do sleep 0.01; done
echo $! >"$1/pid"
sleep "$2"
exit 3
SH
chmod +x "$tmp/leaver"

"$run_test" "$tmp/leaver" "$tmp" 0 2>"$tmp/err"
status=$?
pid=$(cat "$tmp/pid")
if [ $status = 3 ] && ! alive "$pid" && grep -q 'left 1 process(es).*ending them' "$tmp/err" &&
	grep -q "pid $pid .*sleep 997" "$tmp/err"; then
	ok "a process left in another session is named and ended; the exit status is the test's"
else
	not_ok "leftover (status $status, pid $pid alive: $(alive "$pid" && echo yes || echo no))"
fi

"$run_test" "$tmp/leaver" "$tmp" 999 2>"$tmp/err" &
wrapper=$!
while [ ! -s "$tmp/pid" ] || [ "$(cat "$tmp/pid")" = "$pid" ]; do sleep 0.1; done
pid=$(cat "$tmp/pid")
kill -TERM "$wrapper" # what meson does at a test's timeout
wait "$wrapper"
status=$?
if [ $status = 143 ] && ! alive "$pid" && grep -q 'stopped by the test runner' "$tmp/err" &&
	grep -q "pid $pid .*sleep 997" "$tmp/err" && grep -q 'sleep 999' "$tmp/err"; then
	ok "at the runner's SIGTERM every process of the test is named, then ended"
else
	not_ok "timeout (status $status, pid $pid alive: $(alive "$pid" && echo yes || echo no))"
fi

MVM_TEST_JOURNAL=$tmp/journal "$run_test" sh -c 'exit 5' 2>"$tmp/err"
if [ $? = 5 ] && grep -q '^start [0-9]* [0-9]* 0 sh -c exit 5$' "$tmp/journal" &&
	grep -q '^end [0-9]* [0-9]* 5 sh -c exit 5$' "$tmp/journal"; then
	ok "MVM_TEST_JOURNAL gets the start and the end of the test"
else
	not_ok "journal: $(cat "$tmp/journal" 2>&1)"
fi

"$run_test" sh -c 'kill -ABRT $$' 2>"$tmp/err"
if [ $? = 134 ]; then
	ok "a test killed by a signal is reported killed by that signal"
else
	not_ok "signal"
fi
echo "1..$n"
exit $failed
