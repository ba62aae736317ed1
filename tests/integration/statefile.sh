#!/usr/bin/env bash
# Integration tests of the state file against the real daemon: a region
# that goes down is written to it (after the change and at shutdown); a
# daemon restarted during the outage starts with that region down, so its
# very first request already goes to the other region; a corrupt, a
# truncated or a stale file is a warning and a normal start; a state_file
# naming a device or a FIFO is a config error, and a file replaced by a
# FIFO while the daemon runs is never renamed over.
#
# How "before any check could have run" is made certain: region a's check
# target is, after the first daemon, a port that accepts connections and
# never answers, and the check timeout is 60 s. A restarted daemon's
# first check of a hangs that long, so whatever a's state is in the
# meantime comes from the state file or from `initial: up`, never from a
# check. TAP on stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py

alloc_ports 2 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} PA=${PORTS[1]}
SDIR=$TEST_TMP/state
mkdir -p "$SDIR"
STATE=$SDIR/state.json
A_URL=http://127.0.0.1:$PA/x
B_URL=http://b.test/x

# The same config for every daemon: the check must stay the same for the
# saved state to apply. b is never checked (always up).
CONF=$(write_config detourd.yaml <<EOF
listen: ["127.0.0.1:$L"]
state_file: "$STATE"
checks: {interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: 60s,
         rise: 1, fall: 1, jitter: 0%, initial: up}
pools:
  - name: api
    regions:
      - {name: a, url: "http://127.0.0.1:$PA", priority: 1}
      - {name: b, url: "http://b.test", priority: 2, check: {type: none}}
EOF
)

# location: where a request is redirected now
location() {
    curl -s -o /dev/null -w '%{redirect_url}' --max-time "$(scale 5)" "http://127.0.0.1:$L/x"
}
location_is() { [ "$(location)" = "$1" ]; }

# saved FIELD [FILE]: region a's FIELD in the state file ("?" if unreadable)
saved() {
    "$PYTHON" -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print([r for r in d["regions"] if r["pool"] == "api" and r["region"] == "a"][0][sys.argv[2]])
except Exception:
    print("?")' "${2:-$STATE}" "$1"
}
saved_is() { [ "$(saved "$1")" = "$2" ]; }

# first_location NAME: starts a daemon; FIRST is where its very first
# request went (the daemon keeps running: LAST_PID)
first_location() {
    FIRST=
    start_detourd "$1" "$CONF" "$L" -l debug || return 1
    FIRST=$(location)
}

t_down_is_written() {
    echo ok >"$TEST_TMP/a.mode"
    spawn hb "$PYTHON" "$HB" "$PA" "$TEST_TMP/a.mode"
    local hb=$LAST_PID
    wait_listen "$PA" "$hb" || why "the check target did not start" || return 1
    start_detourd one "$CONF" "$L" -l debug || return 1
    local pid=$LAST_PID log
    log=$(daemon_log one)
    expect_eq "while a's target answers" "$(location)" "$A_URL" || return 1
    [ ! -e "$STATE" ] || why "the file was written though nothing changed" || return 1
    stop_pid "$hb"
    wait_log "$log" 'region a DOWN after 1 failure' 10 || why "a did not go down" || return 1
    wait_until 10 saved_is up False ||
        why "the file does not say a is down: $(cat "$STATE" 2>&1)" || return 1
    [ ! -e "$STATE.tmp" ] || why "a temporary file was left" || return 1
    expect_eq "b" "$("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1]))
print([(r["region"], r["up"]) for r in d["regions"]])' "$STATE")" "[('a', False), ('b', True)]" || return 1
    SINCE=$(saved since)
    # at shutdown too: removed now, it is there again once the daemon ended
    rm -f "$STATE"
    stop_pid "$pid" || why "the daemon did not stop" || return 1
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "a in the file written at shutdown" "$(saved up)" False || return 1
    expect_eq "since" "$(saved since)" "$SINCE" || return 1
    cp "$STATE" "$TEST_TMP/saved.json"
}
t "a region that goes down is written within a second, and again at shutdown" t_down_is_written

# from here on a's target accepts and never answers
hold_port "$PA" || echo "Bail out! cannot hold the check target's port"

t_restart_starts_down() {
    local log
    first_location two || why "the daemon did not start" || return 1
    local pid=$LAST_PID
    log=$(daemon_log two)
    expect_eq "the first request" "$FIRST" "$B_URL" || return 1
    expect_eq "starting down logged" "$(log_count "$log" 'pool api region a starts DOWN, as saved in the state file')" 1 || return 1
    expect_match "the summary" "$(grep 'regions start in their saved state' "$log")" \
        'state file .*: 2 of 2 regions start in their saved state \(1 down\)' || return 1
    expect_eq "warnings" "$(log_count "$log" 'warn')" 0 || return 1
    stop_pid "$pid" || why "the daemon did not stop" || return 1
    expect_eq "since kept across the restart" "$(saved since)" "$SINCE"
}
t "a restart during the outage starts the region down: the first request goes elsewhere" t_restart_starts_down

# t_bad_file NAME ERE: a daemon started on the state file as it is now
# sends its first request to a (`initial: up`), warns with ERE, logs no
# error, and stops normally
t_bad_file() { # NAME ERE
    local log
    first_location "$1" || why "the daemon did not start" || return 1
    local pid=$LAST_PID
    log=$(daemon_log "$1")
    expect_eq "the first request" "$FIRST" "$A_URL" || return 1
    wait_log "$log" "$2" 5 || why "no warning /$2/: $(grep -i 'state' "$log")" || return 1
    expect_eq "errors" "$(log_count "$log" 'error')" 0 || return 1
    stop_pid "$pid" || why "the daemon did not stop" || return 1
    expect_eq "exit status" "$LAST_RC" 0
}

t_corrupt() {
    printf 'not json at all\n' >"$STATE"
    t_bad_file corrupt 'warn.*state file .*: not a detourd state file.*initial state'
}
t "a corrupt state file is a warning and a normal start" t_corrupt

t_truncated() {
    head -c 60 "$TEST_TMP/saved.json" >"$STATE"
    t_bad_file truncated 'warn.*state file .*: truncated.*initial state'
}
t "a truncated state file is a warning and a normal start" t_truncated

t_stale() {
    "$PYTHON" -c '
import json, sys, time
d = json.load(open(sys.argv[1]))
d["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
json.dump(d, open(sys.argv[2], "w"))' "$TEST_TMP/saved.json" "$STATE"
    expect_eq "a in the stale file" "$(saved up)" False || return 1
    t_bad_file stale 'warn.*state file .*: written 36[0-9][0-9]\.[0-9] s ago, more than state_max_age \(600\.0 s\): ignored'
}
t "a state file older than state_max_age is ignored" t_stale

t_missing() {
    rm -f "$STATE"
    t_bad_file missing 'warn.*state file .*: No such file or directory'
}
t "a missing state file is a warning and a normal start" t_missing

# state_file naming a device or a FIFO: a config error at the key (-t
# answers at once), and /dev/null stays what it is
t_config_not_regular() {
    local fifo=$SDIR/state.fifo p c rc
    mkfifo "$fifo" || why "mkfifo failed" || return 1
    for p in /dev/null "$fifo"; do
        c=$(write_config not-regular.yaml <<EOF
listen: ["127.0.0.1:$L"]
state_file: "$p"
pools:
  - name: api
    regions: [{name: b, url: "http://b.test", check: {type: none}}]
EOF
)
        # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
        timeout "$(scale 10)" $DETOURD_WRAPPER "$DETOURD" -t -c "$c" </dev/null >"$TEST_TMP/nr.out" 2>"$TEST_TMP/nr.err"
        rc=$?
        case $p in
        /dev/null) want="is a character device, not a regular file" ;;
        *) want="is a FIFO, not a regular file" ;;
        esac
        expect_eq "-t with state_file: $p" "$rc:$(cat "$TEST_TMP/nr.err")" \
            "1:$c:2:13: state_file: '$p' $want" || return 1
    done
    [ -c /dev/null ] || why "/dev/null is no longer a character device" || return 1
    [ -p "$fifo" ] || why "the FIFO was replaced" || return 1
    rm -f "$fifo"
}
t "state_file: /dev/null or a FIFO is a config error at the key; /dev/null is untouched" t_config_not_regular

# The file replaced by a FIFO while the daemon runs: the shutdown write
# leaves it alone and says so as an error; the daemon still stops cleanly
t_write_not_regular() {
    local st=$SDIR/w.json c log pid
    c=$(write_config write-fifo.yaml <<EOF
listen: ["127.0.0.1:$L"]
state_file: "$st"
pools:
  - name: api
    regions: [{name: b, url: "http://b.test", check: {type: none}}]
EOF
)
    start_detourd wfifo "$c" "$L" || why "the daemon did not start" || return 1
    pid=$LAST_PID
    log=$(daemon_log wfifo)
    rm -f "$st"
    mkfifo "$st" || why "mkfifo failed" || return 1
    stop_pid "$pid" || why "the daemon did not stop" || return 1
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    [ -p "$st" ] || why "the FIFO was renamed over: $(ls -l "$st")" || return 1
    [ ! -e "$st.tmp" ] || why "a temporary file was left" || return 1
    expect_eq "logged as an error" \
        "$(log_count "$log" "error.*state file $st is a FIFO, not a regular file: nothing written")" 1
    rm -f "$st"
}
t "a state file replaced by a FIFO is never renamed over: an error, nothing written" t_write_not_regular

t_no_sanitizer_reports_t() { t_no_sanitizer_reports; }
t "no sanitizer reports" t_no_sanitizer_reports_t

done_testing
