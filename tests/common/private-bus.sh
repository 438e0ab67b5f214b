# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
# The shell launcher of the private bus of the tests (private-bus.conf beside this file); bash,
# sourced. scripts/demo uses private_bus_start alone; the shell tests of tests/daemon call
# private_bus_test_setup, which also makes TMP, cleans up on exit and defines start_daemon.

PRIVATE_BUS_CONF=$(dirname "${BASH_SOURCE[0]}")/private-bus.conf

# private_bus_start DIR: a dbus-daemon on private-bus.conf, its socket in DIR (its address in
# DIR/address). Sets BUS_PID and ADDR; fails if the bus gave no address.
private_bus_start() {
    dbus-daemon --config-file="$PRIVATE_BUS_CONF" --address="unix:dir=$1" --print-address=3 \
        --nofork 3>"$1/address" 2>/dev/null &
    BUS_PID=$!
    for _ in $(seq 100); do [ -s "$1/address" ] && break; sleep 0.05; done
    ADDR=$(head -n1 "$1/address")
    [ -n "$ADDR" ]
}

private_bus_cleanup() {
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    [ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}

# For a TAP test: a temporary directory TMP, the bus in it, all removed on exit. Sets TMP, ADDR,
# BUS_PID, DAEMON_PID. Needs MICROVMD (the built daemon), for start_daemon.
private_bus_test_setup() {
    : "${MICROVMD:?MICROVMD must point to the built microvmd}"
    TMP=$(mktemp -d /tmp/microvmd-sh-XXXXXX)
    BUS_PID=
    DAEMON_PID=
    trap private_bus_cleanup EXIT
    private_bus_start "$TMP" || { echo "Bail out! no bus address"; exit 1; }
}

# Starts microvmd on the bus (its output to $1, default the test's stderr: stdout is TAP) and
# waits for its name.
start_daemon() {
    "$MICROVMD" --address="$ADDR" --state-dir="$TMP/state" --runtime-dir="$TMP/run" \
        2>"${1:-/dev/stderr}" >&2 &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        if gdbus call --address "$ADDR" -d org.freedesktop.DBus -o /org/freedesktop/DBus \
            -m org.freedesktop.DBus.NameHasOwner org.microvmd.MicroVM1 2>/dev/null | grep -q true; then
            return 0
        fi
        sleep 0.05
    done
    echo "Bail out! microvmd did not take its name"
    exit 1
}
