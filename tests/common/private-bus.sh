# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by the shell tests of tests/daemon: a private dbus-daemon in a temporary directory and
# microvmd on it. Sets TMP, ADDR, BUS_PID, DAEMON_PID; cleans up on exit.
# Needs MICROVMD (the built daemon).

: "${MICROVMD:?MICROVMD must point to the built microvmd}"
TMP=$(mktemp -d /tmp/microvmd-sh-XXXXXX)
BUS_PID=
DAEMON_PID=

private_bus_cleanup() {
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    [ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap private_bus_cleanup EXIT

cat > "$TMP/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=$TMP</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF

dbus-daemon --config-file="$TMP/bus.conf" --print-address=3 --nofork 3>"$TMP/address" 2>/dev/null &
BUS_PID=$!
for _ in $(seq 100); do [ -s "$TMP/address" ] && break; sleep 0.05; done
ADDR=$(head -n1 "$TMP/address")
[ -n "$ADDR" ] || { echo "Bail out! no bus address"; exit 1; }

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
