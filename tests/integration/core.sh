#!/bin/bash
# Integration tests of the connection core: request counters across
# reloads (they never go down, also for a chunked body whose answer is held
# across a reload, and for regions a reload removed), error answers to
# HEAD, and connections that go idle and come back (their request buffers
# are given back and taken again). TAP on stdout; 127.0.0.1 only.
#
# Run by `make check`, or by hand: DETOURD=_build/detourd tests/integration/core.sh

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}

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

ulimit -n 4096 2>/dev/null || true

alloc_ports 2 || {
    echo "Bail out! cannot find free loopback ports"
    exit 1
}
P=${PORTS[0]} ADM=${PORTS[1]}

# conf REGION: the counters daemon's config, one region named REGION
CONF=$TEST_TMP/core.yaml
conf() {
    cat >"$CONF" <<EOF
listen: ["127.0.0.1:$P"]
workers: 2
admin:
  listen: "127.0.0.1:$ADM"
limits:
  idle_timeout: 60s
  max_uri_bytes: 1024
pools:
  - name: api
    hosts: [api.test]
    regions:
      - name: $1
        url: "http://127.0.0.1:9/$1"
        state: up
        check: {type: none}
EOF
}

# metric NAME LABELS: the value of one sample of /metrics ("absent" if none)
metric() {
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/metrics" |
        awk -v n="$1{$2}" '$1 == n { print $2; f = 1 } END { if (!f) print "absent" }'
}

# status_requests REGION: /status's requests of region REGION of pool api
status_requests() {
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
for p in s["pools"]:
    for r in p["regions"]:
        if p["name"] == "api" and r["name"] == sys.argv[1]:
            print(r["requests"])' "$1"
}

# reload: SIGHUP, then waits (bounded) until the daemon logged the result
reload() {
    local log
    log=$(daemon_log core)
    reload_daemon "$DPID" "$log" 10 || why "no reload logged" || return 1
    [ "$RELOAD_OK" = 1 ] || why "a reload failed: $(tail -3 "$log")"
}

# get N: N redirects on one keep-alive connection
get() {
    local i urls=()
    for ((i = 0; i < $1; i++)); do urls+=("http://127.0.0.1:$P/r$i"); done
    curl -s --max-time "$(scale 10)" -H 'Host: api.test' "${urls[@]}" >/dev/null
}

LABELS_EU='pool="api",region="eu",code="307"'
conf eu
if start_detourd core "$CONF" "$P"; then
    DPID=$LAST_PID
else
    echo "Bail out! detourd did not start"
    exit 1
fi
for ((i = 0; i < 100; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$ADM/healthz")" != 000 ] && break
    sleep 0.05
done

t_counters_survive_reload() {
    get 5 || why "requests failed" || return 1
    expect_eq "requests_total before the reload" "$(metric detourd_requests_total "$LABELS_EU")" 5 || return 1
    expect_eq "/status requests before the reload" "$(status_requests eu)" 5 || return 1
    local k v
    for ((k = 1; k <= 3; k++)); do
        reload || return 1
        v=$(metric detourd_requests_total "$LABELS_EU")
        expect_eq "requests_total after reload $k" "$v" $((5 + (k - 1) * 2)) || return 1
        expect_eq "/status requests after reload $k" "$(status_requests eu)" "$v" || return 1
        get 2 || why "requests failed" || return 1
    done
    expect_eq "requests_total at the end" "$(metric detourd_requests_total "$LABELS_EU")" 11
}
t "counters keep their totals across reloads (metrics and /status)" t_counters_survive_reload

# /metrics read while a reload runs (from the SIGHUP until well after the
# reload is logged) never shows a total lower than before.
t_counters_monotonic() {
    local last v k i n log before seen
    log=$(daemon_log core)
    n=$(awk -v t="$(scale 10)" 'BEGIN { printf "%d\n", t / 0.02 + 1 }')
    last=$(metric detourd_requests_total "$LABELS_EU")
    for ((k = 0; k < 4; k++)); do
        get 3 || why "requests failed" || return 1
        v=$(metric detourd_requests_total "$LABELS_EU")
        [ "$v" -eq $((last + 3)) ] || why "after 3 requests: $v, want $((last + 3))" || return 1
        last=$v
        before=$(grep -c "reloaded " "$log")
        kill -HUP "$DPID"
        seen=0
        for ((i = 0; i < n && seen < 5; i++)); do
            v=$(metric detourd_requests_total "$LABELS_EU")
            [ "$v" -ge "$last" ] 2>/dev/null || why "reload $k: requests_total went down: $last -> $v" || return 1
            # five more reads once the reload is done
            [ "$(grep -c "reloaded " "$log")" -gt "$before" ] && seen=$((seen + 1))
        done
        [ "$seen" -gt 0 ] || why "reload $k was not logged" || return 1
    done
}
t "/metrics read during and after 4 reloads never shows a total go down" t_counters_monotonic

t_removed_region_keeps_total() {
    local before
    before=$(metric detourd_requests_total "$LABELS_EU")
    conf us
    reload || return 1
    expect_eq "the removed region's total" "$(metric detourd_requests_total "$LABELS_EU")" "$before" || return 1
    get 1 || why "request failed" || return 1
    expect_eq "the new region's total" \
        "$(metric detourd_requests_total 'pool="api",region="us",code="307"')" 1 || return 1
    conf eu
    reload || return 1
    expect_eq "the region back: its old total" "$(metric detourd_requests_total "$LABELS_EU")" "$before"
}
t "a region a reload removed keeps its total" t_removed_region_keeps_total

# The answer to a chunked request waits for the end of the body; a reload
# in between must not lose its count.
t_chunked_across_reload() {
    local before fifo o cpid
    before=$(metric detourd_requests_total "$LABELS_EU")
    fifo=$TEST_TMP/chunk.fifo
    o=$(tmpf chunk)
    mkfifo "$fifo"
    "$PYTHON" - "$P" "$fifo" >"$o" 2>"$o.err" <<'PY' &
import socket, sys
port, fifo = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"POST /held HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
print("sent-head", flush=True)
open(fifo).read()  # until the test says the reload is done
s.sendall(b"0\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d:
        break
    buf += d
print(buf.split(b"\r\n")[0].decode(), flush=True)
PY
    cpid=$!
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q sent-head "$o" && break
        sleep 0.05
    done
    grep -q sent-head "$o" || why "the client did not send its head" || { kill "$cpid"; return 1; }
    reload || { echo >"$fifo"; wait "$cpid"; return 1; }
    echo go >"$fifo"
    wait "$cpid"
    grep -q "^HTTP/1.1 307" "$o" || why "no 307 after the body: $(cat "$o" "$o.err")" || return 1
    expect_eq "requests_total after the held answer" \
        "$(metric detourd_requests_total "$LABELS_EU")" $((before + 1))
}
t "an answer held for a chunked body across a reload is counted" t_chunked_across_reload

# ------------------------------------------------------------- HEAD ----

# head_error NAME STATUS REQUEST: the error answer to HEAD has the head of
# the one to GET (Content-Length included) and no body
head_error() {
    local name=$1 status=$2 req=$3 g h
    g=$(tmpf "get-$name")
    h=$(tmpf "head-$name")
    raw "$g" "$P" --responses 1 "${req/HEAD/GET}"
    expect_response "$g" 1 "$status" || return 1
    raw "$h" "$P" --head all --timeout 1 "$req"
    expect_response "$h" 1 "$status" || return 1
    expect_eq "$name: bytes after the HEAD answer's head" "$(r_trailing "$h")" 0 || raw_diag "$h" || return 1
    expect_eq "$name: HEAD Content-Length (as for GET)" "$(r_hdr "$h" 1 content-length)" \
        "$(r_hdr "$g" 1 content-length)" || return 1
    [ "$(r_hdr "$g" 1 content-length)" -gt 0 ] || why "$name: GET's error has no body"
}
t_head_421() { head_error 421 421 'HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n'; }
t_head_400() { head_error 400 400 'HEAD / HTTP/1.1\r\nHost: api.test\r\nBad header\r\n\r\n'; }
t_head_414() {
    local long
    long=$(printf 'a%.0s' {1..2000})
    head_error 414 414 "HEAD /$long HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n"
}
t_head_505() { head_error 505 505 'HEAD / HTTP/2.5\r\nHost: api.test\r\n\r\n'; }
t "HEAD: a 421 answer has no body" t_head_421
t "HEAD: a 400 answer has no body" t_head_400
t "HEAD: a 414 answer has no body" t_head_414
t "HEAD: a 505 answer has no body" t_head_505

# An absolute-form target without a path and a chunked body: the held
# answer copies an empty path (no copy from or to nowhere), and the
# connection goes on with the next request.
t_chunked_empty_path() {
    local o
    o=$(tmpf chunked-empty-path)
    raw "$o" "$P" --responses 2 'POST http://api.test HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: api.test\r\n\r\n'
    expect_response "$o" 1 307 || return 1
    expect_response "$o" 2 307
}
t "a chunked body after an absolute-form target without a path" t_chunked_empty_path

# ------------------------------------------------------------- idle ----

# Many connections go idle after one request (giving their buffers back)
# and then each asks again, some with a head split over two writes.
t_idle_and_back() {
    local o
    o=$(tmpf idle)
    "$PYTHON" - "$P" >"$o" 2>&1 <<'PY'
import socket, sys, time
port = int(sys.argv[1])
N = 300
req = b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n"
def answer(s):
    buf = b""
    while True:
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            n = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length:")]
            if n and len(body) >= n[0]:
                return head.split(b"\r\n")[0]
        d = s.recv(65536)
        if not d:
            return None
        buf += d
socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    if answer(s) != b"HTTP/1.1 307 Temporary Redirect":
        print("first answer %d wrong" % i); sys.exit(1)
    socks.append(s)
for i, s in enumerate(socks):
    if i % 3 == 0:
        s.sendall(req[:10])
for i, s in enumerate(socks):
    s.sendall(req[10:] if i % 3 == 0 else req)
for i, s in enumerate(socks):
    if answer(s) != b"HTTP/1.1 307 Temporary Redirect":
        print("second answer %d wrong" % i); sys.exit(1)
print("ok")
PY
    grep -qx ok "$o" || why "$(cat "$o")"
}
t "300 connections idle after a request, then each asks again (some heads split)" t_idle_and_back

t_still_running() {
    pid_alive "$DPID" || why "detourd died: $(tail -5 "$(daemon_log core)")" || return 1
    stop_pid "$DPID" 10 || why "detourd did not stop on SIGTERM" || return 1
    expect_eq "exit status" "$LAST_RC" 0
}
t "the daemon is alive and stops cleanly" t_still_running
t "no sanitizer reports" t_no_sanitizer_reports

done_testing
