#!/usr/bin/env bash
# Integration tests of what a reload keeps: health checks go on at their
# own pace however often the config is reloaded, and a pool whose choice is
# unchanged goes on with its weighted sequence. TAP on stdout.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py

# backend NAME PORT: a health target; its mode file is $TEST_TMP/NAME.mode
backend() {
    echo ok >"$TEST_TMP/$1.mode"
    spawn "hb:$1" "$PYTHON" "$HB" "$2" "$TEST_TMP/$1.mode"
    wait_listen "$2" "$LAST_PID" 10 || why "backend $1 did not start"
}
set_mode() { echo "$2" >"$TEST_TMP/$1.mode"; }

# log_count FILE ERE: lines of FILE matching ERE
log_count() { grep -cE "$2" "$1" 2>/dev/null || true; }

# wait_log FILE ERE SECONDS [N]: polls until FILE has N (default 1) lines
# matching ERE (bounded, scaled)
wait_log() {
    local i n want=${4:-1} got
    n=$(awk -v t="$(scale "$3")" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        got=$(log_count "$1" "$2")
        [ "$got" -ge "$want" ] && return 0
        sleep 0.05
    done
    why "waited $3 s for $want line(s) matching /$2/ in ${1##*/}, found $got"
}

alloc_ports 5 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} A=${PORTS[1]} H=${PORTS[2]} L2=${PORTS[3]} S=${PORTS[4]}

backend dead "$A" || echo "Bail out! backend did not start"
backend hang "$H" || echo "Bail out! backend did not start"
backend spare "$S" || echo "Bail out! backend did not start"

# ---- health checks under a reload storm ----
# A 3 s interval, and a reload about every half second: before, each reload
# put every probe off by a full interval (and dropped the one in flight),
# so a region that died stayed up for as long as the reloads went on.
INTERVAL=3 FAST=0.5 TIMEOUT=1 FALL=2
CONF=$(write_config storm.yaml <<EOF
listen: ["127.0.0.1:$L"]
checks: {interval: ${INTERVAL}s, fast_interval: 500ms, down_interval: 3s, timeout: 1s, rise: 1, fall: $FALL, jitter: 0%, initial: down}
pools:
  - name: api
    regions:
      - {name: dead, url: "http://127.0.0.1:$A", priority: 1}
      - {name: spare, url: "http://127.0.0.1:$S", priority: 2}
  - name: slow
    hosts: [slow.test]
    regions:
      - {name: hang, url: "http://127.0.0.1:$H"}
EOF
)
start_detourd storm "$CONF" "$L" || echo "Bail out! detourd did not start"
STORM_PID=$LAST_PID
STORM_LOG=$(daemon_log storm)

t_storm_failover() {
    wait_log "$STORM_LOG" "region dead UP after" 10 || return 1
    wait_log "$STORM_LOG" "region hang UP after" 10 || return 1
    # the reloads start, then both backends fail: one answers 500, one
    # never answers (its probe is in flight across reloads)
    local reloads0 t0 t1 bound
    reloads0=$(log_count "$STORM_LOG" "reloaded ")
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    spawn reloader bash -c 'while kill -HUP "$1" 2>/dev/null; do sleep 0.5; done' _ "$STORM_PID"
    local rpid=$LAST_PID
    wait_log "$STORM_LOG" "reloaded " 10 $((reloads0 + 2)) || return 1
    set_mode dead 500
    set_mode hang hang
    t0=$(now_ms)
    # the normal bound: the next probe within an interval, then fall - 1
    # fast ones, each taking up to the timeout; plus slack for a loaded host
    bound=$(awk -v i=$INTERVAL -v f=$FAST -v t=$TIMEOUT -v n=$FALL \
        'BEGIN { printf "%g\n", i + (n - 1) * f + n * t + 3 }')
    wait_log "$STORM_LOG" "region dead DOWN after $FALL failures: http: status 500" "$bound" &&
        wait_log "$STORM_LOG" "region hang DOWN after $FALL failures: timeout" "$bound"
    local rc=$?
    t1=$(now_ms)
    stop_pid "$rpid" 5
    diag "both regions down $((t1 - t0)) ms after their backends failed" \
        "($(($(log_count "$STORM_LOG" "reloaded ") - reloads0)) reloads meanwhile)"
    [ "$rc" = 0 ] || return 1
    [ "$(log_count "$STORM_LOG" "reloaded ")" -ge $((reloads0 + 6)) ] ||
        why "too few reloads happened meanwhile"
}
t "reloads every 0.5 s: a dead region still goes down within the normal fail-over time" \
    t_storm_failover

t_storm_traffic_moved() {
    local got
    got=$(curl -s -o /dev/null --max-time "$(scale 5)" -w '%{http_code} %{redirect_url}' \
        "http://127.0.0.1:$L/x")
    expect_eq "answer after fail-over" "$got" "307 http://127.0.0.1:$S/x"
}
t "the traffic moved to the spare region" t_storm_traffic_moved
stop_pid "$STORM_PID" 10

# ---- the weighted sequence goes on across reloads ----
CONF2=$(write_config wrr.yaml <<EOF
listen: ["127.0.0.1:$L2"]
pools:
  - name: api
    regions:
      - {name: a, url: "http://a.test", check: {type: none}}
      - {name: b, url: "http://b.test", check: {type: none}}
EOF
)
start_detourd wrr "$CONF2" "$L2" || echo "Bail out! detourd did not start"
WRR_PID=$LAST_PID
WRR_LOG=$(daemon_log wrr)

t_wrr_across_reloads() {
    local i got seq=""
    for ((i = 1; i <= 10; i++)); do
        got=$(curl -s -o /dev/null --max-time "$(scale 5)" -w '%{redirect_url}' \
            "http://127.0.0.1:$L2/")
        got=${got#http://}
        seq+="${got%.test/} "
        kill -HUP "$WRR_PID"
        wait_log "$WRR_LOG" "reloaded " 10 "$i" || return 1
    done
    expect_eq "regions of 10 requests with a reload between each" "$seq" "a b a b a b a b a b "
}
t "an unchanged pool keeps its place in the weighted sequence across reloads" \
    t_wrr_across_reloads

t_wrr_changed_weights_restart() {
    sed -i 's|name: b, |name: b, weight: 2, |' "$CONF2"
    kill -HUP "$WRR_PID"
    wait_log "$WRR_LOG" "reloaded " 10 11 || return 1
    local i got seq=""
    for ((i = 1; i <= 3; i++)); do
        got=$(curl -s -o /dev/null --max-time "$(scale 5)" -w '%{redirect_url}' \
            "http://127.0.0.1:$L2/")
        got=${got#http://}
        seq+="${got%.test/} "
    done
    expect_eq "regions after a weight change" "$seq" "b a b "
}
t "changed weights start the new sequence from its beginning" t_wrr_changed_weights_restart
stop_pid "$WRR_PID" 10

# ---- memory after a burst of connections ----
# Connection objects freed after a burst go back to the system: the daemon
# does not keep the high-water mark of every burst for good.
CONF3=$(write_config burst.yaml <<EOF
listen: ["127.0.0.1:$L2"]
workers: 2
pools:
  - name: api
    regions:
      - {name: a, url: "http://a.test", check: {type: none}}
EOF
)
start_detourd burst "$CONF3" "$L2" || echo "Bail out! detourd did not start"
BURST_PID=$LAST_PID

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# burst PORT N PID DEADLINE: N connections each send a partial request head
# (so each holds its request buffers), wait until the daemon's RSS has grown
# by 2 MiB, then all close; prints "BASE PEAK" in KiB.
burst() {
    "$PYTHON" - "$@" <<'PY'
import socket, sys, time
port, n, pid, limit = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def rss():
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
base = rss()
socks = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(n)]
for s in socks:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
deadline, peak = time.monotonic() + limit, base
while time.monotonic() < deadline:
    peak = max(peak, rss())
    if peak - base >= 2048:
        break
    time.sleep(0.05)
for s in socks:
    s.close()
print(base, peak)
PY
}

t_burst_memory_returns() {
    local base peak now i n out
    burst "$L2" 20 "$BURST_PID" "$(scale 5)" >/dev/null || why "warm-up burst failed" || return 1
    out=$(burst "$L2" 400 "$BURST_PID" "$(scale 10)") || why "burst failed" || return 1
    read -r base peak <<<"$out"
    [ $((peak - base)) -ge 2048 ] || why "the burst took only $((peak - base)) KiB" || return 1
    # the idle objects go within a few seconds; what stays is the event
    # loop's per-descriptor state, which pins some pages
    local goal=$((peak - (peak - base) / 3))
    n=$(awk -v t="$(scale 10)" 'BEGIN { printf "%d\n", t / 0.1 + 1 }')
    for ((i = 0; i < n; i++)); do
        now=$(rss_kb "$BURST_PID")
        [ "$now" -le "$goal" ] && break
        sleep 0.1
    done
    diag "RSS ${base} KiB before a burst of 400 connections, ${peak} KiB during it, ${now} KiB once closed"
    [ "$now" -le "$goal" ] || why "RSS still ${now} KiB, want at most ${goal} KiB"
}
# sanitizer and valgrind builds have allocators of their own
if [ -n "${DETOURD_WRAPPER:-}" ] || [ ! -r "/proc/$BURST_PID/status" ] ||
    grep -qE 'lib(a|t)san' "/proc/$BURST_PID/maps" 2>/dev/null; then
    tap_skip "the memory of a burst of connections goes back" "needs /proc and glibc's allocator"
else
    t "the memory of a burst of connections goes back once they are closed" t_burst_memory_returns
fi
stop_pid "$BURST_PID" 10

t "no sanitizer reports" t_no_sanitizer_reports
done_testing
