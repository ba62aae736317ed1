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

alloc_ports 7 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} A=${PORTS[1]} H=${PORTS[2]} L2=${PORTS[3]} S=${PORTS[4]}
BL=${PORTS[5]} BA=${PORTS[6]}

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

# ---- a reload never holds up a redirect or the admin listener ----
# Before, the one worker (workers: 1) ran inside the main loop, which also
# parsed the new config: while a large config loaded, no redirect and no
# /healthz was answered at all. A client sends redirects back to back and a
# second one polls /healthz; both must be answered while the load runs
# (between "SIGHUP: reloading" and "reloaded" in the log).
BIG_POOLS=1500
[ -n "${DETOURD_WRAPPER:-}" ] && BIG_POOLS=300 # valgrind: 20x slower loads
big_config() { # FILE VERSION
    {
        echo "listen: [\"127.0.0.1:$BL\"]"
        echo "admin: {listen: \"127.0.0.1:$BA\"}"
        echo "checks: {type: none}"
        echo "pools:"
        awk -v n="$BIG_POOLS" -v v="$2" 'BEGIN {
            for (p = 0; p < n; p++) {
                printf "  - name: p%d\n", p
                if (p) printf "    hosts: [\"h%d.example.com\"]\n", p
                print "    regions:"
                for (r = 0; r < 10; r++)
                    printf "      - {name: r%d, url: \"https://r%d.p%d.example.com/%s\", priority: %d, weight: %d}\n", r, r, p, v, r % 3 + 1, r + 1
            } }'
    } >"$1.tmp" && mv "$1.tmp" "$1"
}
BIG=$TEST_TMP/big.yaml
big_config "$BIG" v1
start_detourd big "$BIG" "$BL" || echo "Bail out! detourd did not start"
BIG_PID=$LAST_PID
BIG_LOG=$(daemon_log big)

# the clients: answers' wall-clock times (s) go to FILE.redirect and
# FILE.healthz, one a line, until FILE.stop exists
timing_clients() { # FILE
    "$PYTHON" - "$BL" "$BA" "$1" <<'PY'
import os, socket, sys, threading, time
port, aport, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def keepalive(p, req, name, expect):
    s = socket.create_connection(("127.0.0.1", p), 10)
    s.settimeout(30)
    f = open(f"{out}.{name}", "w", buffering=1)
    buf = b""
    while not os.path.exists(out + ".stop"):
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                f.write("closed\n"); return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        while len(rest) < n:
            rest += s.recv(65536)
        buf = rest[n:]
        f.write(("%.3f\n" % time.time()) if head.startswith(expect) else "wrong\n")
        if name == "healthz":
            time.sleep(0.005)
ts = [threading.Thread(target=keepalive, args=(port, b"GET /x HTTP/1.1\r\nHost: h7.example.com\r\n\r\n", "redirect", b"HTTP/1.1 307")),
      threading.Thread(target=keepalive, args=(aport, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", "healthz", b"HTTP/1.1 200"))]
for t in ts: t.start()
for t in ts: t.join()
PY
}

# the Unix time (s) of the last log line matching ERE
log_time() { # LOG ERE
    grep -E "$2" "$1" | tail -n 1 | "$PYTHON" -c '
import sys, datetime
s = sys.stdin.read().split(" ")[0]
print(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp())'
}

# answers FILE FROM TO: how many answer times in FILE lie in [FROM, TO]
answers() { awk -v a="$2" -v b="$3" '$1 + 0 >= a && $1 + 0 <= b { n++ } END { print n + 0 }' "$1"; }
# max_gap FILE FROM TO: the longest time (ms) without an answer from FROM to TO
max_gap() {
    awk -v a="$2" -v b="$3" 'BEGIN { last = a; m = 0 }
        $1 + 0 > a && $1 + 0 <= b { if ($1 - last > m) m = $1 - last; last = $1 }
        END { if (b - last > m) m = b - last; printf "%d\n", m * 1000 }' "$1"
}

t_reload_never_holds_up_answers() {
    local out=$TEST_TMP/timing t0 t1 nr nh loaded gap
    spawn timing timing_clients "$out"
    local cpid=$LAST_PID
    wait_until 10 _has_lines "$out.redirect" 20 || why "no redirects before the reload" || return 1
    wait_until 10 _has_lines "$out.healthz" 5 || why "no /healthz before the reload" || return 1
    big_config "$BIG" v2
    reload_daemon "$BIG_PID" "$BIG_LOG" 60 || return 1
    [ "$RELOAD_OK" = 1 ] || why "the reload failed" || return 1
    touch "$out.stop"
    wait_exit "$cpid" 10
    t0=$(log_time "$BIG_LOG" 'SIGHUP: reloading')
    t1=$(log_time "$BIG_LOG" 'reloaded ')
    loaded=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d\n", (b - a) * 1000 }')
    nr=$(answers "$out.redirect" "$t0" "$t1")
    nh=$(answers "$out.healthz" "$t0" "$t1")
    gap=$(max_gap "$out.redirect" "$t0" "$t1")
    diag "while the new config (${BIG_POOLS} pools x 10 regions) loaded (SIGHUP to reloaded: $loaded ms): $nr redirects, $nh /healthz answers, longest wait for a redirect $gap ms"
    ! grep -qE 'wrong|closed' "$out.redirect" "$out.healthz" || why "a wrong answer or a closed connection" || return 1
    [ "$nh" -ge 1 ] || why "no /healthz was answered during the reload" || return 1
    # a loop held up by the load answers nothing for as long as it lasts
    [ "$gap" -lt $((loaded / 2)) ] || why "no redirect for $gap ms of the reload's $loaded ms" || return 1
    expect_match "the new config serves" \
        "$(curl -s -o /dev/null -w '%{redirect_url}' -H 'Host: h7.example.com' "http://127.0.0.1:$BL/x")" '/v2/x$'
}
_has_lines() { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }
t "a reload of a large config holds up no redirect and no /healthz while it loads" \
    t_reload_never_holds_up_answers

t_sigterm_during_a_load() {
    big_config "$BIG" v1
    kill -HUP "$BIG_PID"
    wait_log "$BIG_LOG" "SIGHUP: reloading" 10 2 || return 1
    kill -TERM "$BIG_PID"
    wait_exit "$BIG_PID" 30 || why "detourd did not stop" || return 1
    expect_eq "exit status" "$LAST_RC" 0
}
t "SIGTERM while a new config loads: a clean exit" t_sigterm_during_a_load

t "no sanitizer reports" t_no_sanitizer_reports
done_testing
