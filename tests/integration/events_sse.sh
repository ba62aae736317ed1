#!/usr/bin/env bash
# Integration tests of the admin listener's GET /events (Server-Sent
# Events): the stream's headers, the replay of the last 100 events (oldest
# first), Last-Event-ID, live events, keep-alive comments, admin.allow (at
# the request and at a reload), a client that does not read (dropped; the
# others go on), a client that sends after its request (dropped, the
# daemon's memory bounded), a replay larger than the unread limit (served
# in full), the limit on streams, and SIGTERM with streams open. The
# clients are real: curl and a Python SSE reader. TAP on stdout. Network:
# 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
MAX_STREAMS=64 # admin.c's SSE_MAX_SUBSCRIBERS
RING=100       # events.h's EVENTS_RING

alloc_ports 7 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]} B=${PORTS[2]} L2=${PORTS[3]} ADM2=${PORTS[4]}
L3=${PORTS[5]} ADM3=${PORTS[6]}

# One Python helper, several modes:
#   stream PORT OUT [LAST_ID]  an SSE reader: one JSON line per thing read
#                              ({"status"...} first, then each event, comment
#                              and retry; {"eof": "clean"|"error"} at the end),
#                              each with "t", the time it arrived (Unix ms)
#   stall PORT READY           a client that asks for /events and never reads
#                              (a 4 KB receive buffer); READY once it asked
#   hold PORT N READY          N streams at once; READY holds their statuses
#   flood PORT OUT             asks for /events, reads the status line, then
#                              sends 64 KiB blocks (reading nothing) until
#                              the connection fails or 128 MiB went out; OUT:
#                              {"port", "status", "sent", "how"} (how:
#                              "closed: ERROR", "blocked" (a send made no
#                              progress for 10 s) or "all sent"), then
#                              holds the connection
#   pipeline PORT OUT          asks for /events and, in the same write, for
#                              /healthz; OUT: {"port", "got", "how"} (bytes
#                              read until "eof", "reset" or "open" (10 s))
#   events OUT                 the events of OUT, one "ID KIND" a line
#   latency OUT                "N MAX_MS": for the reload events of OUT, the
#                              worst time from the event's own time to arrival
read -r -d '' SSE_PY <<'PYEOF'
import http.client, json, os, signal, socket, sys, time

signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

def stream(port, out, last_id=None):
    f = open(out, "a")
    def emit(o):
        o["t"] = time.time() * 1000
        f.write(json.dumps(o) + "\n")
        f.flush()
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    hdr = {"Accept": "text/event-stream"}
    if last_id:
        hdr["Last-Event-ID"] = last_id
    conn.request("GET", "/events", headers=hdr)
    r = conn.getresponse()
    emit({"status": r.status, "type": r.getheader("Content-Type"),
          "cache": r.getheader("Cache-Control")})
    if r.status != 200:
        emit({"body": r.read().decode("utf-8", "replace")})
        return
    ev = {}
    try:
        while True:
            line = r.readline()
            if not line:
                emit({"eof": "clean"})
                return
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if ev:
                    emit(ev)
                ev = {}
            elif line.startswith(":"):
                emit({"comment": line[1:].strip()})
            else:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                ev[k] = ev[k] + "\n" + v if k == "data" and k in ev else v
    except Exception as e:
        emit({"eof": "error", "error": repr(e)})

def stall(port, ready):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", int(port)))
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    open(ready, "w").close()
    end = time.monotonic() + 600
    while time.monotonic() < end:
        time.sleep(1)

def hold(port, n, ready):
    socks, codes = [], []
    for _ in range(int(n)):
        s = socket.create_connection(("127.0.0.1", int(port)))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(10 * float(os.environ.get("TIMEOUT_SCALE") or 1))
        head = b""
        while b"\r\n" not in head:
            b = s.recv(1)
            if not b:
                break
            head += b
        codes.append(head.split(b" ")[1].decode() if head.count(b" ") >= 1 else "none")
    with open(ready + ".tmp", "w") as f:
        f.write(" ".join(codes) + "\n")
    os.rename(ready + ".tmp", ready)
    end = time.monotonic() + 600
    while time.monotonic() < end:
        time.sleep(1)

def scaled(s):
    return s * float(os.environ.get("TIMEOUT_SCALE") or 1)

def put(out, o):
    with open(out + ".tmp", "w") as f:
        f.write(json.dumps(o) + "\n")
    os.rename(out + ".tmp", out)

def flood(port, out):
    s = socket.create_connection(("127.0.0.1", int(port)))
    o = {"port": s.getsockname()[1], "sent": 0}
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(scaled(10))
    head = b""
    while b"\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    o["status"] = head.split(b" ")[1].decode() if head.count(b" ") >= 1 else "none"
    block = b"x" * 65536
    o["how"] = "all sent"
    try:
        while o["sent"] < 128 << 20:
            o["sent"] += s.send(block)
    except socket.timeout:
        o["how"] = "blocked"
    except OSError as e:
        o["how"] = "closed: " + type(e).__name__
    put(out, o)
    end = time.monotonic() + 600  # the connection stays (until SIGTERM)
    while time.monotonic() < end:
        time.sleep(1)

def pipeline(port, out):
    s = socket.create_connection(("127.0.0.1", int(port)))
    o = {"port": s.getsockname()[1], "got": 0, "how": "eof"}
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(scaled(10))
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            o["got"] += len(b)
    except socket.timeout:
        o["how"] = "open"
    except OSError:
        o["how"] = "reset"
    put(out, o)

def lines(out):
    if not os.path.exists(out):
        return
    for raw in open(out):
        try:
            yield json.loads(raw)
        except ValueError:
            pass  # a line being written

def events(out):
    for o in lines(out):
        if "id" in o and "event" in o:
            d = json.loads(o["data"])
            ok = d["id"] == o["id"] and d["kind"] == o["event"]
            print(o["id"], o["event"] if ok else "MISMATCH:" + o["data"])

def latency(out):
    import datetime
    worst, n = 0.0, 0
    for o in lines(out):
        if o.get("event") == "reload":
            d = json.loads(o["data"])
            t = datetime.datetime.strptime(d["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            t = t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
            worst, n = max(worst, o["t"] - t), n + 1
    print(n, "%.1f" % worst)

mode, args = sys.argv[1], sys.argv[2:]
{"stream": stream, "stall": stall, "hold": hold, "flood": flood, "pipeline": pipeline,
 "events": events, "latency": latency}[mode](*args)
PYEOF

sse() { "$PYTHON" -c "$SSE_PY" "$@"; }

# reader NAME PORT [LAST_ID]: a background SSE reader (stopped at the
# end); its output file is $TEST_TMP/NAME.sse
reader() {
    rm -f "$TEST_TMP/$1.sse"
    spawn "sse:$1" "$PYTHON" -c "$SSE_PY" stream "$2" "$TEST_TMP/$1.sse" "${3:-}"
}
sse_file() { echo "$TEST_TMP/$1.sse"; }

# n_events NAME: events NAME's reader got so far
n_events() { sse events "$(sse_file "$1")" | wc -l; }
_n_events_ge() { [ "$(n_events "$1")" -ge "$2" ]; }
# wait_events NAME N SECONDS: until NAME's reader has N events
wait_events() {
    wait_until "$3" _n_events_ge "$1" "$2" || why "waited $3 s for $2 events on $1; got $(n_events "$1")"
}
_has() { grep -q -- "$2" "$(sse_file "$1")" 2>/dev/null; }
# wait_sse NAME STRING SECONDS: until NAME's output holds STRING
wait_sse() {
    wait_until "$3" _has "$1" "$2" || why "waited $3 s for $2 in ${1}'s stream: $(tail -3 "$(sse_file "$1")")"
}

# the id of the last event the daemon logged (-l debug logs each one)
last_logged_id() {
    grep -o 'event {"id":"[^"]*"' "$1" | tail -1 | sed 's/.*"id":"//; s/"$//'
}

# conf FILE LISTEN ADMIN [ALLOW] [DRILL]: pool api (one region, always up)
# and pool bulk: 3 pools of 60 regions that DRILL (a reason) drains all at
# once (a reload with DRILL set emits 180 override events; one without it
# 180 more)
conf() {
    local allow="" state="" i p
    [ -n "${4:-}" ] && allow="
  allow: $4"
    [ -n "${5:-}" ] && state=", state: drain, reason: \"$5\""
    {
        cat <<YAML
listen: ["127.0.0.1:$2"]
admin:
  listen: "127.0.0.1:$3"$allow
pools:
  - name: api
    regions:
      - {name: main, url: "http://127.0.0.1:$B", check: {type: none}}
YAML
        for p in 1 2 3; do
            printf '  - name: bulk%d\n    hosts: [bulk%d.test]\n    regions:\n' "$p" "$p"
            for ((i = 0; i < 60; i++)); do
                printf '      - {name: r%02d, url: "http://127.0.0.1:%s/%d", check: {type: none}%s}\n' \
                    "$i" "$B" "$i" "$state"
            done
        done
    } >"$1"
}

CONF=$TEST_TMP/main.yaml
conf "$CONF" "$L" "$ADM"
start_detourd main "$CONF" "$L" -l debug || echo "Bail out! detourd did not start"
DPID=$LAST_PID
LOG=$(daemon_log main)
wait_listen "$ADM" "$DPID" 10 || echo "Bail out! the admin listener did not start"

# the keep-alive reader: subscribed first, checked last (15 s later)
reader early "$ADM"

# ------------------------------------------------------------ basics ----

t_headers() {
    local h code
    h=$(tmpf head)
    code=$(curl -sS -I -o "$h" -w '%{http_code} %{content_type}' --max-time "$(scale 5)" "http://127.0.0.1:$ADM/events")
    expect_eq "HEAD /events" "$code" "200 text/event-stream" || return 1
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST --max-time "$(scale 5)" "http://127.0.0.1:$ADM/events")
    expect_eq "POST /events" "$code" 405 || return 1
    wait_sse early '"status"' 5 || return 1
    expect_eq "GET /events: status, type, cache" \
        "$(head -1 "$(sse_file early)" | "$PYTHON" -c 'import json,sys; o=json.load(sys.stdin); print(o["status"], o["type"], o["cache"])')" \
        "200 text/event-stream no-store" || return 1
    wait_sse early '"retry": "2000"' 5
}
t "GET /events: 200 text/event-stream, no-store, retry: 2000 first; HEAD like GET, POST 405" t_headers

t_curl() {
    local f
    f=$(tmpf curl)
    # curl -N ends at --max-time with what it read (exit 28): the stream's start
    curl -sS -N --max-time "$(scale 2)" "http://127.0.0.1:$ADM/events" >"$f" 2>/dev/null
    grep -q '^retry: 2000$' "$f" || why "curl -N read: $(head -c 300 "$f")"
}
t "curl -N reads the stream" t_curl

# ------------------------------------------------ replay and Last-Event-ID ----

FIRST_REPLAY=
t_replay() {
    local i got want ids last
    # 2 reloads: 360 override events and 2 reload events, well over the ring
    conf "$CONF" "$L" "$ADM" "" "drill"
    reload_daemon "$DPID" "$LOG" && [ "$RELOAD_OK" = 1 ] || why "reload 1 failed" || return 1
    conf "$CONF" "$L" "$ADM"
    reload_daemon "$DPID" "$LOG" && [ "$RELOAD_OK" = 1 ] || why "reload 2 failed" || return 1
    wait_log "$LOG" 'event \{"id":"[^"]*","time":"[^"]*","kind":"reload"' 5 2 || why "no reload events logged" || return 1
    last=$(last_logged_id "$LOG")
    [ -n "$last" ] || why "no event in the log" || return 1
    reader replay "$ADM"
    wait_events replay "$RING" 10 || return 1
    ids=$(sse events "$(sse_file replay)")
    FIRST_REPLAY=$ids
    got=$(echo "$ids" | wc -l)
    # nothing else happened: the stream holds the replay and nothing more
    expect_eq "events replayed" "$got" "$RING" || return 1
    expect_eq "the last replayed" "$(echo "$ids" | tail -1 | cut -d' ' -f1)" "$last" || return 1
    got=$(echo "$ids" | awk '{ n = split($1, a, "-"); print a[n] }' | tr '\n' ' ')
    want=$(for ((i = ${last##*-} - RING + 1; i <= ${last##*-}; i++)); do printf '%d ' "$i"; done)
    expect_eq "sequence numbers, oldest first" "$got" "$want" || return 1
    ! echo "$ids" | grep -q MISMATCH || why "id/event lines disagree with the JSON: $(echo "$ids" | grep MISMATCH | head -2)" || return 1
    echo "$ids" | tail -1 | grep -q ' reload$' || why "the last one is not the reload: $(echo "$ids" | tail -1)" || return 1
    echo "$ids" | head -1 | grep -q ' override$' || why "the first one is not an override: $(echo "$ids" | head -1)"
}
t "a new stream gets the last $RING events first, oldest first, id and event matching the JSON" t_replay

t_last_event_id() {
    [ -n "$FIRST_REPLAY" ] || why "no replay to start from" || return 1
    local id got
    id=$(echo "$FIRST_REPLAY" | sed -n "$((RING - 10))p" | cut -d' ' -f1)
    reader after "$ADM" "$id"
    wait_events after 10 10 || return 1
    # then one live event: what came before it is the replay
    reload_daemon "$DPID" "$LOG" || return 1
    wait_events after 11 10 || return 1
    got=$(sse events "$(sse_file after)" | head -11)
    expect_eq "after $id" "$(echo "$got" | head -10)" "$(echo "$FIRST_REPLAY" | tail -10)" || return 1
    echo "$got" | tail -1 | grep -q ' reload$' || why "the 11th is not the live reload: $got"
}
t "Last-Event-ID: only the events after it, then live ones" t_last_event_id

t_foreign_id() {
    local last first r got
    last=$(last_logged_id "$LOG")
    first=${last%-*}-$((${last##*-} - RING + 1))
    # an id of another process, one too old for the ring, junk: all of it
    reader foreign "$ADM" "0123456789abcdef-5"
    reader old "$ADM" "${last%-*}-1"
    reader junk "$ADM" "not an id"
    for r in foreign old junk; do
        wait_events "$r" "$RING" 10 || return 1
        got=$(sse events "$(sse_file "$r")")
        expect_eq "$r: the first replayed" "$(echo "$got" | head -1 | cut -d' ' -f1)" "$first" || return 1
        expect_eq "$r: the last replayed" "$(echo "$got" | sed -n "${RING}p" | cut -d' ' -f1)" "$last" || return 1
    done
}
t "Last-Event-ID of another process, one older than the ring, or junk: the whole ring" t_foreign_id

# ------------------------------------------------------------ live ----

t_live() {
    local before got lat
    before=$(n_events early)
    reload_daemon "$DPID" "$LOG" || return 1
    wait_events early "$((before + 1))" 5 || return 1
    sse events "$(sse_file early)" | tail -1 | grep -q ' reload$' || why "the live event is not the reload" || return 1
    # a failed reload: its event names the error
    echo "pools: [" >"$TEST_TMP/bad.yaml"
    cp "$CONF" "$TEST_TMP/good.yaml"
    cp "$TEST_TMP/bad.yaml" "$CONF"
    reload_daemon "$DPID" "$LOG"
    cp "$TEST_TMP/good.yaml" "$CONF"
    [ "$RELOAD_OK" = 0 ] || why "the bad config loaded" || return 1
    wait_sse early '\\"to\\":\\"failed\\"' 5 || return 1
    got=$(sse latency "$(sse_file early)")
    diag "reload events on a live stream: ${got%% *}, worst time from the event to the client ${got#* } ms"
    lat=${got#* }
    awk -v l="$lat" -v s="$TIMEOUT_SCALE" 'BEGIN { exit !(l < 200 * s) }' ||
        why "an event took $lat ms to reach the client"
}
t "live events reach a stream at once (a reload, a failed reload)" t_live

# ------------------------------------------------- a client that stalls ----

t_stall() {
    local ready=$TEST_TMP/stall.ready i spid before subs
    reader good "$ADM"
    wait_events good "$RING" 10 || return 1
    subs=$(log_count "$LOG" 'events: 127.0.0.1:[0-9]+ subscribed \(')
    spawn stall "$PYTHON" -c "$SSE_PY" stall "$ADM" "$ready"
    spid=$LAST_PID
    wait_file "$ready" 10 "$spid" || why "the stalled client did not start" || return 1
    wait_log "$LOG" 'events: 127.0.0.1:[0-9]+ subscribed \(' 5 "$((subs + 1))" || return 1
    before=$(n_events good)
    # each pair of reloads: 360 events of ~450 bytes (160 KB); the stalled
    # client's socket buffers fill, then 256 KB wait in the daemon
    for ((i = 0; i < 20; i++)); do
        conf "$CONF" "$L" "$ADM" "" "drill $i: $(printf '%0200d' 0)"
        reload_daemon "$DPID" "$LOG" || return 1
        conf "$CONF" "$L" "$ADM"
        reload_daemon "$DPID" "$LOG" || return 1
        grep -q 'closing the stream to .* bytes unread' "$LOG" && break
    done
    wait_log "$LOG" 'events: closing the stream to 127\.0\.0\.1:[0-9]+: [0-9]+ bytes unread' 5 ||
        why "the stalled client was never dropped" || return 1
    diag "$(grep -m1 -o 'closing the stream to .*' "$LOG") after $((i + 1)) reload pairs"
    # the good reader got every event, the daemon still answers
    wait_events good "$((before + (i + 1) * 362))" 20 || return 1
    expect_eq "/healthz" "$(curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/healthz")" ok || return 1
    stop_pid "$spid" 5
    ! grep -q '"eof"' "$(sse_file good)" || why "the good reader's stream ended"
}
t "a client that does not read is dropped past 256 KB unread; a reading one gets every event" t_stall

# ------------------------------------ a client that sends after its request ----

# rss_kb PID: the process's resident set (kB)
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# jfield FILE KEY: KEY of the JSON object in FILE
jfield() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

t_sender() {
    local out=$TEST_TMP/flood.json fpid rss0 rss1 port before sent how
    [ -r "/proc/$DPID/status" ] || why "no /proc/$DPID/status" || return 1
    rss0=$(rss_kb "$DPID")
    before=$(n_events good)
    spawn flood "$PYTHON" -c "$SSE_PY" flood "$ADM" "$out"
    fpid=$LAST_PID
    wait_file "$out" 60 "$fpid" || why "the flooding client did not finish" || return 1
    rss1=$(rss_kb "$DPID") # the client still there
    stop_pid "$fpid" 5
    port=$(jfield "$out" port) sent=$(jfield "$out" sent) how=$(jfield "$out" how)
    diag "a client sending after its request: $how after $sent bytes; detourd's VmRSS $rss0 kB before, $rss1 kB after"
    expect_eq "its status" "$(jfield "$out" status)" 200 || return 1
    [[ $how == closed:* ]] || why "the connection was not closed: $how after $sent bytes" || return 1
    [ "$sent" -lt $((100 << 20)) ] || why "$sent bytes accepted" || return 1
    [ $((rss1 - rss0)) -lt $((16 << 10)) ] || why "VmRSS grew by $((rss1 - rss0)) kB" || return 1
    wait_log "$LOG" "events: closing the stream to 127\.0\.0\.1:$port: it sent [0-9]+ bytes after its request" 5 ||
        why "no log line about it" || return 1
    # the other streams go on
    reload_daemon "$DPID" "$LOG" || return 1
    wait_events good "$((before + 1))" 5 || return 1
    ! grep -q '"eof"' "$(sse_file good)" || why "the good reader's stream ended"
}
t "a client that sends after its request is dropped (detourd reads at most 4 KB of it; VmRSS bounded); the others go on" t_sender

t_pipelined() {
    local out=$TEST_TMP/pipeline.json port
    "$PYTHON" -c "$SSE_PY" pipeline "$ADM" "$out" || why "the client failed" || return 1
    port=$(jfield "$out" port)
    expect_match "the connection" "$(jfield "$out" how)" '^(eof|reset)$' || return 1
    wait_log "$LOG" "events: closing the stream to 127\.0\.0\.1:$port: it sent [0-9]+ bytes after its request" 5 ||
        why "no log line about it"
}
t "a request pipelined behind GET /events ends the stream" t_pipelined

# ------------------------------------- a replay larger than the limit ----

# 100 failed reloads, each with an error that shows ~490 control bytes (a
# config message is cut at 512 bytes; each byte is \u0001 in the JSON,
# whatever the length of the test's paths): the last 100 events come to
# about 330 KB, which a new stream gets in full before anything else.
CONF3=$TEST_TMP/third.yaml
t_big_replay() {
    local i log3 d3 f cpid size n
    cat >"$CONF3" <<YAML
listen: ["127.0.0.1:$L3"]
admin:
  listen: "127.0.0.1:$ADM3"
pools:
  - name: api
    regions:
      - {name: main, url: "http://127.0.0.1:$B", check: {type: none}}
YAML
    start_detourd third "$CONF3" "$L3" || return 1
    d3=$LAST_PID
    log3=$(daemon_log third)
    wait_listen "$ADM3" "$d3" 10 || return 1
    cp "$CONF3" "$CONF3.good"
    { cat "$CONF3.good"; printf 'log:\n  level: "%s"\n' "$(printf '\\x01%.0s' {1..1000})"; } >"$CONF3"
    for ((i = 0; i < RING; i++)); do
        reload_daemon "$d3" "$log3" && [ "$RELOAD_OK" = 0 ] || why "reload $i did not fail" || return 1
    done
    cp "$CONF3.good" "$CONF3"
    f=$(tmpf big)
    spawn curl-big curl -sS -N -o "$f" "http://127.0.0.1:$ADM3/events"
    cpid=$LAST_PID
    wait_until 10 _n_lines_ge "$f" '^event: reload$' "$RING"
    n=$(grep -c '^event: reload$' "$f")
    size=$(wc -c <"$f")
    diag "the replay: $n events, $size bytes"
    stop_pid "$cpid" 5
    expect_eq "events replayed" "$n" "$RING" || return 1
    [ "$size" -gt $((256 * 1024)) ] ||
        why "the replay is only $size bytes: no longer above the 256 KB unread limit, so this tests nothing" || return 1
    expect_eq "events with the error's control bytes" "$(grep -c '^data: .*\(\\u0001\)\{300\}' "$f")" "$RING" || return 1
    ! grep -q 'closing the stream' "$log3" || why "$(grep -m1 'closing the stream' "$log3")" || return 1
    stop_pid "$d3" 15
    expect_eq "exit status" "$LAST_RC" 0
}
_n_lines_ge() { [ "$(grep -c -- "$2" "$1")" -ge "$3" ]; }
t "a replay larger than 256 KB reaches a reading client in full" t_big_replay

# ------------------------------------ admin.allow and the stream limit ----

CONF2=$TEST_TMP/second.yaml
t_allow() {
    local code body
    conf "$CONF2" "$L2" "$ADM2" '["10.0.0.0/8"]'
    start_detourd second "$CONF2" "$L2" || return 1
    DPID2=$LAST_PID
    wait_listen "$ADM2" "$DPID2" 10 || return 1
    body=$(tmpf deny)
    code=$(curl -sS -o "$body" -w '%{http_code}' --max-time "$(scale 5)" "http://127.0.0.1:$ADM2/events")
    expect_eq "GET /events from 127.0.0.1, allow 10.0.0.0/8" "$code" 403 || return 1
    ! grep -q retry "$body" || why "a refused client got the stream"
}
t "admin.allow: a client outside it gets 403 from /events" t_allow

t_limit() {
    local ready=$TEST_TMP/hold.ready got code body hpid
    conf "$CONF2" "$L2" "$ADM2"
    reload_daemon "$DPID2" "$(daemon_log second)" && [ "$RELOAD_OK" = 1 ] || why "reload failed" || return 1
    spawn hold "$PYTHON" -c "$SSE_PY" hold "$ADM2" "$MAX_STREAMS" "$ready"
    hpid=$LAST_PID
    wait_file "$ready" 20 "$hpid" || why "the holder did not get its streams" || return 1
    got=$(tr ' ' '\n' <"$ready" | sort | uniq -c | awk '{ printf "%s*%s ", $1, $2 }')
    expect_eq "$MAX_STREAMS streams" "$got" "$MAX_STREAMS*200 " || return 1
    body=$(tmpf limit)
    code=$(curl -sS -o "$body" -w '%{http_code}' --max-time "$(scale 5)" "http://127.0.0.1:$ADM2/events")
    expect_eq "stream $((MAX_STREAMS + 1))" "$code" 503 || return 1
    grep -q "too many event streams (at most $MAX_STREAMS" "$body" || why "503 body: $(cat "$body")" || return 1
    expect_eq "/status meanwhile" "$(curl -s -o /dev/null -w '%{http_code}' --max-time "$(scale 5)" "http://127.0.0.1:$ADM2/status")" 200 || return 1
    stop_pid "$hpid" 5
    # the closed streams free their places
    wait_until 10 _stream_ok "$ADM2" || why "no stream after the holder left"
}
_stream_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/events")" = 200 ]; }
t "at most $MAX_STREAMS streams: the next gets 503 with the reason; closed ones free their places" t_limit

t_allow_reload() {
    reader allowed "$ADM2"
    wait_sse allowed '"retry"' 5 || return 1
    conf "$CONF2" "$L2" "$ADM2" '["10.0.0.0/8"]'
    reload_daemon "$DPID2" "$(daemon_log second)" && [ "$RELOAD_OK" = 1 ] || why "reload failed" || return 1
    wait_sse allowed '"eof"' 5 || return 1
    grep -q '"eof": "clean"' "$(sse_file allowed)" || why "the stream did not end cleanly: $(tail -1 "$(sse_file allowed)")" || return 1
    grep -q 'ending the stream to 127.0.0.1:[0-9]* (no longer in admin.allow)' "$(daemon_log second)" ||
        why "no log line about it"
}
t "a reload that takes a client out of admin.allow ends its stream" t_allow_reload

t_admin_removed() {
    conf "$CONF2" "$L2" "$ADM2"
    reload_daemon "$DPID2" "$(daemon_log second)" && [ "$RELOAD_OK" = 1 ] || why "reload failed" || return 1
    reader gone "$ADM2"
    wait_sse gone '"retry"' 5 || return 1
    # the admin section removed: the listener and its streams go
    grep -v -e '^admin:' -e '^  listen: "127.0.0.1:'"$ADM2" "$CONF2" >"$CONF2.new" && mv "$CONF2.new" "$CONF2"
    reload_daemon "$DPID2" "$(daemon_log second)" && [ "$RELOAD_OK" = 1 ] || why "reload failed" || return 1
    wait_sse gone '"eof"' 5 || return 1
    stop_pid "$DPID2" 15
    expect_eq "exit status" "$LAST_RC" 0
}
t "a reload that removes the admin listener ends its streams; exit 0 after" t_admin_removed

# ------------------------------------------------------------ the end ----

t_keepalive() {
    wait_sse early '"comment": "keep-alive"' 25 || return 1
    ! grep -q '"eof"' "$(sse_file early)" || why "the stream ended"
}
t "an idle stream gets ': keep-alive' every 15 s and outlives the admin timeout (10 s)" t_keepalive

t_sigterm() {
    local r
    reader last "$ADM"
    wait_sse last '"retry"' 5 || return 1
    stop_pid "$DPID" 15
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    for r in early last good; do
        wait_sse "$r" '"eof"' 5 || return 1
        grep -q '"eof": "clean"' "$(sse_file "$r")" || why "$r: $(tail -1 "$(sse_file "$r")")" || return 1
    done
}
t "SIGTERM with streams open: exit 0, each stream ends cleanly" t_sigterm

t "no sanitizer report in the daemons' logs" t_no_sanitizer_reports

done_testing
[ "$TAP_FAILED" -eq 0 ]
