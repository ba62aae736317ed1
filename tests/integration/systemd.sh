#!/usr/bin/env bash
# systemd integration of the real daemon, without systemd running: the
# notify protocol against a datagram socket this script owns (READY,
# STATUS, RELOADING, STOPPING, WATCHDOG), socket activation through
# systemd-socket-activate, and the shipped unit files checked by
# systemd-analyze (verify, and the sandbox's exposure score). TAP on stdout.
#
# Run by `make check` (DETOURD, TOP_SRCDIR, TOP_BUILDDIR set), or by hand:
#   DETOURD=_build/detourd TOP_SRCDIR=. tests/integration/systemd.sh

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}
MAX_EXPOSURE=2.0

for tool in curl python3 awk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP $tool not found"
        exit 0
    fi
done
if [ ! -x "$DETOURD" ]; then
    echo "Bail out! detourd binary not found: $DETOURD (set DETOURD)"
    exit 1
fi

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
: "${TOP_SRCDIR:=$IT_DIR/../..}"
UNIT_DIR=$TOP_SRCDIR/systemd

# Built without libsystemd (configure --without-systemd), detourd neither
# notifies nor adopts sockets: those tests are skipped, the unit files still
# checked.
HAVE_SD=yes
if [ -f "$TOP_BUILDDIR/autoconf.h" ]; then
    grep -q '^#define HAVE_SYSTEMD 1' "$TOP_BUILDDIR/autoconf.h" || HAVE_SD=no
elif ! grep -qa 'sd_listen_fds' "$DETOURD"; then
    HAVE_SD=no
fi

alloc_ports 6 || {
    echo "Bail out! cannot find free loopback ports"
    exit 1
}
P_NOTIFY=${PORTS[0]} P_ACT=${PORTS[1]} P_EXTRA=${PORTS[2]} P_OWN=${PORTS[3]}
B_EU=${PORTS[4]} P_PLAIN=${PORTS[5]}

# region url: nothing listens there; `state: up` and fail_open keep the
# redirects coming whatever the checks find
conf_for() { # LISTEN-ENTRIES
    cat <<EOF
listen: [$1]
checks: {interval: 1s, timeout: 200ms}
pools:
  - name: api
    regions:
      - name: eu-west
        url: "http://127.0.0.1:$B_EU"
        state: up
EOF
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds (bounded, scaled)
wait_for() {
    local what=$1 secs n i
    secs=$(scale "$2")
    n=$(awk -v t="$secs" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    shift 2
    for ((i = 0; i < n; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    why "waited $secs s for $what"
}

# ------------------------------------------------------ notify protocol ----

# The service manager's side: a datagram socket; each message becomes one
# line of NOTES, its KEY=VALUE fields joined by '|'. Ends by itself.
NOTIFY_PY='
import os, socket, sys, time
path, out, life = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
end = time.monotonic() + life
with open(out, "a") as f:
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        f.write(d.decode("utf-8", "replace").strip("\n").replace("\n", "|") + "\n")
        f.flush()
'
NOTIFY_SOCK=$TEST_TMP/notify.sock
NOTES=$TEST_TMP/notes
WATCHDOG_MS=400

# note_line ERE [FROM]: the number of the first line of NOTES after line FROM
# (default 0) that has a field matching ERE (a whole field); empty if none
note_line() {
    awk -v re="^($1)\$" -v from="${2:-0}" 'NR > from {
        n = split($0, f, "|"); for (i = 1; i <= n; i++) if (f[i] ~ re) { print NR; exit } }' "$NOTES"
}
has_note() { [ -n "$(note_line "$1" "${2:-0}")" ]; }
notes_diag() {
    why "notify messages so far:"
    why "$(tail -n 20 "$NOTES")"
    return 1
}
sock_ready() { [ -S "$NOTIFY_SOCK" ]; }

t_ready() {
    wait_for "READY=1" 20 has_note 'READY=1' || notes_diag || return 1
    # READY=1 promises the listeners are open: a connect must work right now
    can_connect "$P_NOTIFY" || why "READY=1 sent but 127.0.0.1:$P_NOTIFY refuses connections"
    local line
    line=$(sed -n "$(note_line 'READY=1')p" "$NOTES")
    if [[ $line == *MAINPID=* ]]; then
        expect_match "MAINPID" "$line" "(^|\\|)MAINPID=$D_PID(\\||\$)"
    fi
}

t_status() {
    wait_for "STATUS=" 20 has_note 'STATUS=.+' || notes_diag || return 1
    diag "$(grep -o 'STATUS=[^|]*' "$NOTES" | tail -n 1)"
}

t_watchdog() {
    local n0 n1
    n0=$(grep -c 'WATCHDOG=1' "$NOTES")
    # one every WATCHDOG_USEC/2 = 200 ms: 3 more come within a few seconds,
    # however loaded the host
    wait_log "$NOTES" 'WATCHDOG=1' 10 $((n0 + 3))
    n1=$(grep -c 'WATCHDOG=1' "$NOTES")
    [ $((n1 - n0)) -ge 3 ] ||
        why "WATCHDOG_USEC=${WATCHDOG_MS}000: $((n1 - n0)) WATCHDOG=1 in $(scale 10) s"
}

# reload_once: SIGHUP, then RELOADING=1 and a later READY=1; still serving
reload_once() {
    local from r
    from=$(wc -l <"$NOTES")
    kill -HUP "$D_PID" || why "cannot signal detourd" || return 1
    wait_for "RELOADING=1" 20 has_note 'RELOADING=1' "$from" || notes_diag || return 1
    r=$(note_line 'RELOADING=1' "$from")
    wait_for "READY=1 after RELOADING=1" 20 has_note 'READY=1' "$r" || notes_diag || return 1
    pid_alive "$D_PID" || why "detourd died during the reload"
    still_served "$P_NOTIFY"
}

t_reload() {
    # a real change: the region's weight
    sed -i 's/state: up/state: up\n        weight: 2/' "$C_NOTIFY"
    reload_once || return 1
    has_note 'MONOTONIC_USEC=[0-9]+' ||
        diag "(RELOADING=1 has no MONOTONIC_USEC: fine before Type=notify-reload)"
}

t_reload_bad() {
    echo 'no_such_key: 1' >>"$C_NOTIFY" # invalid: the old config keeps running
    reload_once
}

t_stopping() {
    local from
    from=$(wc -l <"$NOTES")
    kill -TERM "$D_PID"
    wait_for "STOPPING=1" 20 has_note 'STOPPING=1' "$from" || notes_diag || return 1
    wait_exit "$D_PID" 15 || why "detourd still runs 15 s after SIGTERM" || return 1
    expect_eq "exit status after SIGTERM" "$LAST_RC" 0
}

notify_suite() {
    : >"$NOTES"
    spawn notify-listener "$PYTHON" -c "$NOTIFY_PY" "$NOTIFY_SOCK" "$NOTES" "$(scale 120)"
    local nl_pid=$LAST_PID
    WHY=
    wait_for "the notify socket" 20 sock_ready || {
        echo "Bail out! the test's notify listener did not start: $WHY"
        exit 1
    }
    C_NOTIFY=$(conf_for "\"127.0.0.1:$P_NOTIFY\"" | write_config notify.yaml)
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    spawn detourd:notify env NOTIFY_SOCKET="$NOTIFY_SOCK" WATCHDOG_USEC=$((WATCHDOG_MS * 1000)) \
        $DETOURD_WRAPPER "$DETOURD" -c "$C_NOTIFY"
    D_PID=$LAST_PID

    t "READY=1 is sent once detourd listens (MAINPID is its pid)" t_ready
    t "a STATUS= line describes the pools" t_status
    t "with WATCHDOG_USEC set, WATCHDOG=1 comes every half period" t_watchdog
    t "SIGHUP: RELOADING=1, then READY=1 once the new config is in" t_reload
    t "a failed reload also ends with READY=1 (the old config keeps serving)" t_reload_bad
    t "SIGTERM: STOPPING=1, then exit 0" t_stopping
    stop_pid "$nl_pid" 5
}

NOTIFY_TESTS=("READY=1" "STATUS=" "WATCHDOG=1" "RELOADING=1 ... READY=1"
    "failed reload ... READY=1" "STOPPING=1")
if [ "$HAVE_SD" = yes ]; then
    notify_suite
else
    for n in "${NOTIFY_TESTS[@]}"; do tap_skip "notify: $n" "built without libsystemd"; done
fi

t_no_notify_socket() {
    local c
    c=$(conf_for "\"127.0.0.1:$P_PLAIN\"" | write_config plain.yaml)
    # shellcheck disable=SC2086
    spawn detourd:plain env -u NOTIFY_SOCKET -u LISTEN_FDS -u LISTEN_PID \
        WATCHDOG_USEC=100000 $DETOURD_WRAPPER "$DETOURD" -c "$c"
    local pid=$LAST_PID
    wait_listen "$P_PLAIN" "$pid" 10 || why "detourd did not start without NOTIFY_SOCKET" || return 1
    still_served "$P_PLAIN" || return 1
    stop_pid "$pid" 15
    expect_eq "exit status" "$LAST_RC" 0
}
t "without NOTIFY_SOCKET nothing changes (serves, stops cleanly)" t_no_notify_socket

# --------------------------------------------------------- the journal ----
# When stderr is the journal (JOURNAL_STREAM names its device and inode),
# every line starts with its syslog priority (sd-daemon(3)), so that
# `journalctl -p warning` filters; on any other stderr, no prefix.
t_journal_priorities() {
    local c log=$TEST_TMP/detourd:journal.log
    c=$(conf_for "\"127.0.0.1:$P_PLAIN\"" | write_config journal.yaml)
    : >"$log" # spawn's 2> keeps this inode
    # shellcheck disable=SC2086
    spawn detourd:journal env JOURNAL_STREAM="$(stat -c %d:%i "$log")" \
        $DETOURD_WRAPPER "$DETOURD" -c "$c" -l debug
    local pid=$LAST_PID
    wait_listen "$P_PLAIN" "$pid" 10 || why "detourd did not start" || return 1
    echo "pools: [" >"$c" # a broken config: the reload logs errors
    kill -HUP "$pid"
    wait_log "$log" 'reload failed' 10 || return 1
    stop_pid "$pid" 15
    grep -qE '^<6>[0-9-]+T[0-9:.]+Z detourd\[info\]: listening on' "$log" ||
        why "no <6> on an info line"
    grep -qE '^<3>[0-9-]+T.* detourd\[error\]: reload failed' "$log" ||
        why "no <3> on an error line"
    grep -qE '^<7>[0-9-]+T.* detourd\[debug\]: ' "$log" || why "no <7> on a debug line"
    local bare
    bare=$(grep -cvE '^<[3467]>' "$log")
    [ "$bare" = 0 ] || why "$bare lines without a priority prefix"
    [ -z "$WHY" ]
}
t "stderr is the journal: each line starts with its priority (<3> error ... <7> debug)" \
    t_journal_priorities

t_journal_other_stream() {
    local c log=$TEST_TMP/detourd:notjournal.log
    c=$(conf_for "\"127.0.0.1:$P_PLAIN\"" | write_config notjournal.yaml)
    # shellcheck disable=SC2086 # another stream's device and inode
    spawn detourd:notjournal env JOURNAL_STREAM="$(stat -c %d:%i "$c")" \
        $DETOURD_WRAPPER "$DETOURD" -c "$c"
    local pid=$LAST_PID
    wait_listen "$P_PLAIN" "$pid" 10 || why "detourd did not start" || return 1
    stop_pid "$pid" 15
    ! grep -qE '^<[0-9]>' "$log" || why "a priority prefix on a stderr that is not the journal"
    grep -q 'detourd\[info\]: listening on' "$log" || why "no log line"
    [ -z "$WHY" ]
}
t "JOURNAL_STREAM naming another stream: no prefix" t_journal_other_stream

# ---------------------------------------------------- socket activation ----

t_socket_activation() {
    local c log pid code
    # passed: P_ACT (in the config) and P_EXTRA (not); P_OWN is bound by detourd
    c=$(conf_for "\"127.0.0.1:$P_ACT\", \"127.0.0.1:$P_OWN\"" | write_config act.yaml)
    # systemd-socket-activate passes only the environment named with -E
    local envs=() v
    for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
        [ -n "${!v:-}" ] && envs+=(-E "$v=${!v}")
    done
    # shellcheck disable=SC2086
    spawn detourd:act systemd-socket-activate "${envs[@]}" -l "127.0.0.1:$P_ACT" \
        -l "127.0.0.1:$P_EXTRA" $DETOURD_WRAPPER "$DETOURD" -c "$c"
    pid=$LAST_PID
    log=$(daemon_log act)
    # the sockets exist before detourd does: the first connection starts it
    wait_for "systemd-socket-activate to listen" 20 grep -q "Listening on 127.0.0.1:$P_EXTRA" \
        "$log" || {
        why "$(cat "$log")"
        return 1
    }
    code=$(http_code "$P_ACT" /activated)
    if [ "$code" != 307 ]; then
        why "request on the passed socket 127.0.0.1:$P_ACT got '$code', want 307"
        why "$(tail -n 20 "$log")"
        return 1
    fi
    wait_listen "$P_OWN" "$pid" 10 || why "detourd did not bind 127.0.0.1:$P_OWN itself" || return 1
    still_served "$P_OWN" || return 1
    pid_alive "$pid" || why "detourd is not running" || return 1
    grep -v 'Listening on' "$log" | grep -q "127.0.0.1:$P_EXTRA.*listen" ||
        why "no warning about the passed socket 127.0.0.1:$P_EXTRA that matches no listen: entry"
    ! can_connect "$P_EXTRA" || why "the unused passed socket 127.0.0.1:$P_EXTRA still accepts"
    ! grep -qi 'address already in use' "$log" || why "detourd tried to bind a passed address"
    stop_pid "$pid" 15
    expect_eq "exit status" "$LAST_RC" 0
}
if [ "$HAVE_SD" != yes ]; then
    tap_skip "socket activation" "built without libsystemd"
elif command -v systemd-socket-activate >/dev/null 2>&1; then
    t "socket activation: a passed socket is adopted and served, an unused one closed with a warning" \
        t_socket_activation
else
    tap_skip "socket activation" "systemd-socket-activate not found"
fi

# ------------------------------------------------------------ unit files ----

# The templates with the paths filled in as `make install` would, the
# binary being the one under test (systemd-analyze verify wants it to exist).
UNITS=$TEST_TMP/units
mkdir -p "$UNITS"
BIN=$(cd "$(dirname "$DETOURD")" && pwd)/$(basename "$DETOURD")
for u in detourd.service detourd.socket; do
    sed -e "s|@sbindir@/detourd|$BIN|g" -e 's|@sbindir@|/usr/sbin|g' -e 's|@sysconfdir@|/etc|g' \
        "$UNIT_DIR/$u.in" >"$UNITS/$u"
done

t_verify() {
    local out
    # --man=no: the man pages are not installed where this runs
    out=$(cd "$UNITS" && systemd-analyze verify --man=no ./detourd.service ./detourd.socket 2>&1)
    local rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then why "systemd-analyze verify (rc $rc):" "$out"; fi
}

# The unit's commented LoadCredential= example (keys for HTTPS listeners),
# enabled as an operator would in a drop-in, must verify as cleanly.
t_verify_credentials() {
    local dir=$TEST_TMP/units-credentials out rc
    mkdir -p "$dir"
    sed -e 's/^#\(LoadCredential=\)/\1/' "$UNITS/detourd.service" >"$dir/detourd.service"
    grep -q '^LoadCredential=' "$dir/detourd.service" ||
        why "detourd.service carries no commented LoadCredential= example" || return 1
    out=$(cd "$dir" && systemd-analyze verify --man=no ./detourd.service 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then why "systemd-analyze verify (rc $rc):" "$out"; fi
}

SEC_OUT=$TEST_TMP/security.out
t_security() {
    (cd "$UNITS" && systemd-analyze security --offline=true --no-pager ./detourd.service) \
        >"$SEC_OUT" 2>&1
    local score
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' "$SEC_OUT")
    [ -n "$score" ] || why "no exposure level in:" "$(tail -n 20 "$SEC_OUT")" || return 1
    diag "systemd-analyze security: overall exposure $score"
    awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' ||
        why "exposure $score > $MAX_EXPOSURE; the open items:" "$(grep '✗' "$SEC_OUT")"
}

# what the sandbox must still allow, as systemd itself reads the unit
t_sandbox_allows() {
    local need
    for need in "Service may allocate Internet sockets" "Service may allocate local sockets" \
        "Service has access to the host's network" "Service process receives ambient capabilities" \
        "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE"; do
        grep -qF "$need" "$SEC_OUT" || why "the sandbox no longer allows: $need"
    done
    grep -q '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' "$UNITS/detourd.service" ||
        why "no AmbientCapabilities=CAP_NET_BIND_SERVICE: ports below 1024 cannot be bound"
    [ -z "$WHY" ]
}

if command -v systemd-analyze >/dev/null 2>&1; then
    t "systemd-analyze verify: detourd.service and detourd.socket are clean" t_verify
    t "systemd-analyze verify: the LoadCredential= example of detourd.service, enabled" \
        t_verify_credentials
    t "systemd-analyze security: exposure of detourd.service <= $MAX_EXPOSURE" t_security
    t "the sandbox still allows listening below 1024, outbound TCP, AF_UNIX" t_sandbox_allows
else
    tap_skip "systemd-analyze verify" "systemd-analyze not found"
    tap_skip "systemd-analyze verify: the LoadCredential= example" "systemd-analyze not found"
    tap_skip "systemd-analyze security" "systemd-analyze not found"
    tap_skip "the sandbox still allows what detourd needs" "systemd-analyze not found"
fi

done_testing
[ "$TAP_FAILED" -eq 0 ]
