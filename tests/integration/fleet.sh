#!/usr/bin/env bash
# Fleet tests: several detourd instances that make the same choices and are
# steered from one place.
#  - balance: hash: two instances with one config (one and two workers, the
#    regions listed in another order) send each of 10,000 users to the same
#    region (raw pipelined requests, one keep-alive connection each).
#  - etcd (detourd's own client, real etcd from the Debian package): one
#    member and three instances; a drain put into etcd redirects every
#    instance elsewhere without a reload (the time printed); a value
#    overwritten with garbage leaves the drain in force and is listed,
#    counted, logged and sent; each kind of bad value is rejected; a fleet
#    maintenance window; health consensus (one instance whose check of a
#    region fails moves nothing until a quorum agrees); SIGKILL of an
#    instance and its verdicts expiring with its lease; etcd stopped and
#    restarted; a watch resumed from a compacted revision (everything read
#    again); a three-member cluster on loopback with the member in use
#    killed mid-test (the watch goes on through another endpoint); https
#    with a client certificate, etcd users and an expiring token. Also: the
#    page lists a rejected key, a rejected key of any length shown in full,
#    verdicts without a lease count for nothing, the lease revoked on
#    SIGTERM and on a reload that renames the instance, a reload to
#    another prefix, TCP keepalive on the watch, and a user that may only
#    read (its writes refused and retried, its session undisturbed).
#    Skipped where etcd or etcdctl is not installed (Debian: etcd-server,
#    etcd-client; scripts/deps test installs them).
# Shared ticket_keys (TLS resumption across instances) are tested in tls.sh:
# "two daemons sharing a ticket_keys file resume each other's sessions".
# TAP on stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
alloc_ports 26 || {
    echo "Bail out! no free ports"
    exit 1
}
HA=${PORTS[0]} HB=${PORTS[1]} LA=${PORTS[2]} LB=${PORTS[3]}
LC=${PORTS[4]} LD=${PORTS[5]} ADMA=${PORTS[6]} ADMB=${PORTS[7]} ADMC=${PORTS[8]} ADMD=${PORTS[9]}
EC=${PORTS[10]} EP=${PORTS[11]} # the one-member etcd
C1=${PORTS[12]} C2=${PORTS[13]} C3=${PORTS[14]} P1=${PORTS[15]} P2=${PORTS[16]} P3=${PORTS[17]} # the cluster
XLIVE=${PORTS[18]} XDEAD=${PORTS[19]} # what the checks of cons/x reach
TC=${PORTS[20]} TP=${PORTS[21]} LE=${PORTS[22]} ADME=${PORTS[23]} # etcd over TLS with users
LF=${PORTS[24]} ADMF=${PORTS[25]} # an instance whose etcd user may only read

# ---- the same choices on every instance: balance: hash ----

hash_config() { # NAME PORT WORKERS REVERSED
    local regions="r1:1 r2:2 r3:3 r4:1 r5:5" r
    [ "$4" = 1 ] && regions="r5:5 r4:1 r3:3 r2:2 r1:1"
    {
        cat <<EOF
listen: ["127.0.0.1:$2"]
workers: $3
checks: {type: none}
pools:
  - name: api
    balance: hash
    hash_key: "header:X-User-Id"
    body: none
    regions:
EOF
        for r in $regions; do
            echo "      - {name: ${r%:*}, url: \"http://${r%:*}.test\", weight: ${r#*:}}"
        done
    } | write_config "$1.yaml"
}

# N users, pipelined in batches over one connection per port; prints
# "answered PORT N", "differ N" and "share REGION N" (of the first port)
read -r -d '' HASH_PY <<'PYEOF'
import collections, socket, sys
n, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]

def locations(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f, out = s.makefile("rb"), []
    for b in range(0, n, 500):
        s.sendall(b"".join(b"GET /u HTTP/1.1\r\nHost: fleet.test\r\nX-User-Id: user-%d\r\n\r\n" % i
                           for i in range(b, min(n, b + 500))))
        for _ in range(b, min(n, b + 500)):
            if not f.readline():
                return out
            loc, clen = None, 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.partition(b":")
                if k.lower() == b"location":
                    loc = v.strip().decode()
                elif k.lower() == b"content-length":
                    clen = int(v)
            f.read(clen)
            out.append(loc)
    return out

got = [locations(p) for p in ports]
for p, g in zip(ports, got):
    print("answered %d %d" % (p, len(g)))
print("differ %d" % sum(1 for x in zip(*got) if len(set(x)) != 1))
for loc, c in sorted(collections.Counter(got[0]).items(), key=str):
    print("share %s %d" % (str(loc).split("//")[-1].split(".")[0], c))
PYEOF

t_hash_same_choice() {
    local out ms
    hash_config hash-a "$HA" 1 0 >/dev/null
    hash_config hash-b "$HB" 2 1 >/dev/null
    start_detourd hash-a "$TEST_TMP/hash-a.yaml" "$HA" || why "instance A did not start" || return 1
    start_detourd hash-b "$TEST_TMP/hash-b.yaml" "$HB" || why "instance B did not start" || return 1
    ms=$(now_ms)
    out=$("$PYTHON" -c "$HASH_PY" 10000 "$HA" "$HB")
    diag "10,000 users on two instances: $(($(now_ms) - ms)) ms"
    expect_eq "answers from A" "$(sed -n "s/^answered $HA //p" <<<"$out")" 10000 || return 1
    expect_eq "answers from B" "$(sed -n "s/^answered $HB //p" <<<"$out")" 10000 || return 1
    expect_eq "users sent elsewhere by B than by A" "$(sed -n 's/^differ //p' <<<"$out")" 0 || return 1
    # weighted: each region gets its weight's share (of 12), give or take a third
    local -A weight=([r1]=1 [r2]=2 [r3]=3 [r4]=1 [r5]=5)
    local r n w
    while read -r _ r n; do
        w=${weight[$r]:-0}
        [ $((n * 12 * 3)) -ge $((10000 * w * 2)) ] && [ $((n * 12 * 3)) -le $((10000 * w * 4)) ] ||
            why "region $r (weight $w) got $n of 10000 users" || return 1
    done < <(grep '^share ' <<<"$out")
    expect_eq "regions chosen" "$(grep -c '^share ' <<<"$out")" 5
}
t "balance: hash: two instances send each of 10,000 users to the same region" t_hash_same_choice


# ---- etcd ----

# ETCD and ETCDCTL may name other binaries
ETCD=${ETCD:-$(command -v etcd)} ETCDCTL=${ETCDCTL:-$(command -v etcdctl)}
ETCD_TESTS=(
    "etcd and three instances start; each is connected and sees the others as members"
    "a drain put into etcd: every instance redirects elsewhere, no reload (the time printed)"
    "/status names the drain's source and reason; -t --at says it cannot see etcd"
    "a reload keeps the fleet's drain in force throughout: no answer goes to the drained region"
    "a drain overwritten with garbage stays in force: rejected, listed, counted, logged, sent"
    "each kind of bad value is rejected and moves nothing; fixed or deleted, it is no longer listed"
    "the drain deleted from etcd: traffic returns everywhere"
    "a fleet maintenance window drains its regions and is listed as fleet:NAME"
    "consensus: one instance's failing check moves nothing; a quorum of failures moves every instance"
    "SIGKILL of an instance: its verdicts expire with its lease, members shrink"
    "etcd stopped: everything in force stays, fleet.connected false; back after a restart"
    "a watch resumed from a compacted revision: everything is read again"
    "a three-member cluster: the member in use killed, the watch goes on through another"
    "https with a client certificate and etcd users: connects, follows, renews an expired token"
    "the status page lists a rejected key whose previous value stays in force"
    "a user that may only read: refused writes are retried, the watch stays, drains apply"
    "SIGTERM of an instance: its lease is revoked, its verdicts gone at once"
    "a reload that renames the instance revokes the old name's lease"
    "a verdict written by hand without a lease counts for nothing"
    "a reload to another prefix: the old prefix's drains end, the new one's apply"
    "a rejected key of any length is listed, logged and sent in full"
    "the watch connection has TCP keepalives: a silently dropped connection is noticed"
)
if ! [ -x "$ETCD" ] || ! [ -x "$ETCDCTL" ]; then
    for d in "${ETCD_TESTS[@]}"; do
        tap_skip "$d" "etcd/etcdctl not found (Debian: apt install etcd-server etcd-client)"
    done
    t_no_sanitizer_reports
    done_testing
    exit 0
fi
export ETCDCTL_API=3
# etcd 3.4 starts on arm64 only when told that it is not supported there
[ "$(uname -m)" = aarch64 ] && export ETCD_UNSUPPORTED_ARCH=arm64
# ectl ARGS...: etcdctl on the members EPS names (default: the one member)
ectl() {
    "$ETCDCTL" --endpoints="${EPS:-http://127.0.0.1:$EC}" --command-timeout="$(scale 5 | cut -d. -f1)s" "$@"
}

# fleet_config NAME PORT ADMIN XCHECK ENDPOINTS: instance NAME; its check
# of cons/x connects to 127.0.0.1:XCHECK (consensus: majority)
fleet_config() {
    write_config "$1.yaml" <<EOF
listen: ["127.0.0.1:$2"]
admin: {listen: "127.0.0.1:$3"}
checks: {type: none}
pools:
  - name: web
    hosts: [web.test]
    body: none
    regions:
      - {name: eu, url: "http://eu.test", priority: 1}
      - {name: us, url: "http://us.test", priority: 2}
      - {name: ap, url: "http://ap.test", priority: 3}
  - name: cons
    hosts: [cons.test]
    body: none
    regions:
      - name: x
        url: "http://x.test"
        priority: 1
        check: {type: tcp, url: "http://127.0.0.1:$4", interval: 200ms, fast_interval: 100ms,
                down_interval: 200ms, timeout: 500ms, rise: 1, fall: 2, consensus: majority}
      - {name: y, url: "http://y.test", priority: 2}
fleet:
  instance: $1
  etcd: {endpoints: [$5], timeout: 1s, lease_ttl: 3s}
EOF
}

declare -A DPID=() PORT=([A]=$LA [B]=$LB [C]=$LC [D]=$LD [E]=$LE [F]=$LF)
declare -A ADM=([A]=$ADMA [B]=$ADMB [C]=$ADMC [D]=$ADMD [E]=$ADME [F]=$ADMF)

# status NAME EXPR: a Python expression over instance NAME's /status (s;
# r: its regions by POOL/REGION)
status() {
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:${ADM[$1]}/status" |
        "$PYTHON" -c 'import json,sys
try:
    s = json.load(sys.stdin)
    r = {p["name"] + "/" + x["name"]: x for p in s["pools"] for x in p["regions"]}
    print(eval(sys.argv[1]))
except Exception as e:
    print("<%s>" % e)' "$2"
}
status_is() { [ "$(status "$1" "$2")" = "$3" ]; }
metric() { # NAME SERIES: its value on NAME's /metrics
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:${ADM[$1]}/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

# POLL_PY T0 SECONDS HOST WANT PORT...: polls every instance (a keep-alive
# connection each, a request every 2 ms) until all redirect HOST to WANT or
# SECONDS (scaled) have passed; prints the ms since T0 (ms since the epoch)
# and what each instance answered last
read -r -d '' POLL_PY <<'PYEOF'
import os, socket, sys, time
t0, secs, host, want = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
ports = [int(p) for p in sys.argv[5:]]
end = time.monotonic() + secs * float(os.environ.get("TIMEOUT_SCALE") or 1)
conns, last = {}, {}

def location(p):
    s = conns.get(p)
    try:
        if s is None:
            s = conns[p] = socket.create_connection(("127.0.0.1", p), timeout=5)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:  # body: none, so the head is all
            d = s.recv(4096)
            if not d:
                raise OSError("closed")
            buf += d
    except OSError:
        conns.pop(p, None)
        return None
    for line in buf.decode("latin-1").split("\r\n"):
        if line.lower().startswith("location:"):
            return line[9:].strip()

while True:
    for p in ports:
        last[p] = location(p)
    if all(last[p] == want for p in ports) or time.monotonic() > end:
        break
    time.sleep(0.002)
print(int(time.time() * 1000) - t0, " ".join("%d:%s" % kv for kv in sorted(last.items())))
sys.exit(0 if all(last[p] == want for p in ports) else 1)
PYEOF

# all_redirect SECONDS HOST WANT NAME...: until every instance named
# redirects HOST to WANT; ELAPSED: ms since T0 (set by the caller)
all_redirect() {
    local secs=$1 host=$2 want=$3 n ports=() out rc
    shift 3
    for n in "$@"; do ports+=("${PORT[$n]}"); done
    out=$("$PYTHON" -c "$POLL_PY" "${T0:-$(now_ms)}" "$secs" "$host" "$want" "${ports[@]}")
    rc=$?
    ELAPSED=${out%% *}
    [ "$rc" = 0 ] || why "after ${ELAPSED} ms, want $want for $host: ${out#* }"
}

# start_etcd NAME DATADIR CLIENT PEER CLUSTER STATE: one member
start_etcd() {
    spawn "etcd:$1" "$ETCD" --name "$1" --data-dir "$2" \
        --listen-client-urls "http://127.0.0.1:$3" --advertise-client-urls "http://127.0.0.1:$3" \
        --listen-peer-urls "http://127.0.0.1:$4" --initial-advertise-peer-urls "http://127.0.0.1:$4" \
        --initial-cluster "$5" --initial-cluster-state "$6" --initial-cluster-token "t-$$" \
        --logger zap --log-level error
}
etcd_healthy() { EPS=$1 ectl endpoint health >/dev/null 2>&1; }
one_etcd() {
    start_etcd fleet "$TEST_TMP/etcd" "$EC" "$EP" "fleet=http://127.0.0.1:$EP" "${1:-new}"
    ETCD_PID=$LAST_PID
    wait_until 30 etcd_healthy "http://127.0.0.1:$EC" ||
        why "etcd not healthy: $(tail -n 5 "$TEST_TMP/etcd:fleet.log")"
}

start_instance() { # NAME XCHECK ENDPOINTS
    start_detourd "$1" "$(fleet_config "$1" "${PORT[$1]}" "${ADM[$1]}" "$2" "$3")" "${PORT[$1]}" ||
        why "detourd $1 did not start" || return 1
    DPID[$1]=$LAST_PID
}

t_start() {
    one_etcd || return 1
    start_backend x "$XLIVE" || why "no backend for the checks" || return 1
    XPID=$LAST_PID
    # A's check of cons/x fails (nothing listens there); B's and C's pass
    start_instance A "$XDEAD" "\"http://127.0.0.1:$EC\"" || return 1
    start_instance B "$XLIVE" "\"http://127.0.0.1:$EC\"" || return 1
    start_instance C "$XLIVE" "\"http://127.0.0.1:$EC\"" || return 1
    local n
    for n in A B C; do
        wait_until 20 status_is "$n" 's["fleet"]["connected"]' True ||
            why "$n not connected: $(status "$n" 's["fleet"]')" || return 1
    done
    for n in A B C; do
        wait_until 20 status_is "$n" 's["fleet"]["members"]' "['A', 'B', 'C']" ||
            why "$n members: $(status "$n" 's["fleet"]["members"]')" || return 1
    done
    T0=$(now_ms)
    all_redirect 1 web.test "http://eu.test/x" A B C
}
t "${ETCD_TESTS[0]}" t_start

# the kernel probes an idle watch connection, so that a peer gone without
# a word (a host powered off, a NAT entry dropped) ends the session
t_tcp_keepalive() {
    local n out
    for n in A B C; do
        out=$(ss -tnoHp state established "( dport = :$EC )" 2>/dev/null | grep "pid=${DPID[$n]},")
        grep -q 'timer:(keepalive' <<<"$out" || why "$n's connections to etcd: $out" || return 1
    done
}
t "${ETCD_TESTS[21]}" t_tcp_keepalive

t_drain() {
    T0=$(now_ms)
    ectl put /detourd/drain/web/eu '{"reason": "CHG-77 database move"}' >/dev/null ||
        why "etcdctl put failed" || return 1
    all_redirect 10 web.test "http://us.test/x" A B C || return 1
    diag "etcd put -> every instance (3) redirects elsewhere: $ELAPSED ms, etcdctl's own start included (bench/fleet measures it)"
    local n
    for n in A B C; do
        [ "$(log_count "$(daemon_log "$n")" 'reloaded |SIGHUP')" = 0 ] || why "$n reloaded" || return 1
    done
    wait_log "$(daemon_log A)" 'fleet drain /detourd/drain/web/eu started: drain \(CHG-77 database move\)' 5 ||
        why "A logged no start: $(grep fleet "$(daemon_log A)" | tail -n 3)"
}
t "${ETCD_TESTS[1]}" t_drain

t_status() {
    expect_eq "override_source" "$(status B 'r["web/eu"]["override_source"]')" "fleet:/detourd/drain/web/eu" || return 1
    expect_eq "override_reason" "$(status B 'r["web/eu"]["override_reason"]')" "CHG-77 database move" || return 1
    expect_eq "override" "$(status B 'r["web/eu"]["override"]')" "drain" || return 1
    expect_match "why" "$(status B '[p["why"] for p in s["pools"] if p["name"] == "web"][0]')" \
        'eu drained by fleet drain /detourd/drain/web/eu \(CHG-77' || return 1
    RUN_OUT=$(tmpf at.out) RUN_ERR=$(tmpf at.err)
    run_detourd -t -c "$TEST_TMP/A.yaml" --at 2030-01-01T00:00:00Z
    expect_eq "-t --at" "$LAST_RC" 0 || return 1
    grep -q '^note: -t does not read etcd' "$RUN_OUT" || why "no note: $(cat "$RUN_OUT")"
}
t "${ETCD_TESTS[2]}" t_status

t_garbage() {
    local rev n
    ectl put /detourd/drain/web/eu '{"reason": "CHG-77 extended",}' >/dev/null || why "put failed" || return 1
    rev=$(ectl get /detourd/drain/web/eu -w json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
    for n in A B C; do
        wait_until 10 status_is "$n" '[(x["key"], x["revision"], x["in_force"]) for x in s["fleet"]["rejected"]]' \
            "[('/detourd/drain/web/eu', $rev, True)]" ||
            why "$n: rejected $(status "$n" 's["fleet"]["rejected"]')" || return 1
    done
    # the drain holds: still elsewhere, still its first reason
    T0=$(now_ms)
    all_redirect 1 web.test "http://us.test/x" A B C || return 1
    expect_eq "reason" "$(status A 'r["web/eu"]["override_reason"]')" "CHG-77 database move" || return 1
    expect_match "error" "$(status A 's["fleet"]["rejected"][0]["error"]')" '^not JSON' || return 1
    expect_eq "rejected_keys" "$(metric A detourd_fleet_rejected_keys)" 1 || return 1
    expect_eq "rejections_total" "$(metric A detourd_fleet_rejections_total)" 1 || return 1
    grep -qF "fleet: key /detourd/drain/web/eu (revision $rev) rejected: not JSON" "$(daemon_log A)" ||
        why "no log line" || return 1
    curl -s --max-time "$(scale 2)" "http://127.0.0.1:$ADMA/events" >"$TEST_TMP/sse" 2>/dev/null
    grep -q '"kind":"fleet","to":"rejected".*"key":"/detourd/drain/web/eu"' "$TEST_TMP/sse" ||
        why "no fleet event: $(grep fleet "$TEST_TMP/sse")"
}
# the status page lists the rejected key, saying that its previous value
# stays in force (and nothing after that)
t_page_rejected() {
    local rev
    rev=$(ectl get /detourd/drain/web/eu -w json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADMA/" >"$TEST_TMP/page.html" ||
        why "no status page" || return 1
    grep -qF '<code>/detourd/drain/web/eu</code> (revision '"$rev"'): not JSON' "$TEST_TMP/page.html" ||
        why "page: $(grep -ao 'fleet-rejected.*</ul>' "$TEST_TMP/page.html" | cat -v)" || return 1
    grep -qF ' its previous value stays in force</li></ul>' "$TEST_TMP/page.html" ||
        why "page: $(grep -ao 'fleet-rejected.*</ul>' "$TEST_TMP/page.html" | cat -v)"
}
# WATCH_PY PORT HOST WANT STOPFILE: asks PORT for HOST back to back (one
# kept-alive connection) until STOPFILE exists (at most 60 s); creates
# STOPFILE.started after the first answer; prints the answers and how many
# were not WANT
read -r -d '' WATCH_PY <<'PYEOF'
import os, socket, sys, time
port, host, want, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s, n, bad, end = None, 0, 0, time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < end:
    try:
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise OSError("closed")
            buf += d
    except OSError:
        s = None
        continue
    loc = [l[9:].strip() for l in buf.decode("latin-1").split("\r\n") if l.lower().startswith("location:")]
    n += 1
    bad += (loc[:1] != [want])
    if n == 1:
        open(stop + ".started", "w").close()
print(n, bad)
PYEOF
t_reload_keeps() {
    local stop=$TEST_TMP/watch.stop pid
    rm -f "$stop" "$stop.started"
    spawn watch "$PYTHON" -c "$WATCH_PY" "$LA" web.test "http://us.test/x" "$stop"
    pid=$LAST_PID
    wait_file "$stop.started" 20 "$pid" || why "the watcher got no answer" || return 1
    reload_daemon "${DPID[A]}" "$(daemon_log A)" && [ "$RELOAD_OK" = 1 ] || why "A did not reload" || return 1
    reload_daemon "${DPID[A]}" "$(daemon_log A)" && [ "$RELOAD_OK" = 1 ] || why "A did not reload" || return 1
    : >"$stop"
    wait_exit "$pid" 10 || why "the watcher did not stop" || return 1
    local n bad
    read -r n bad <"$TEST_TMP/watch.out"
    [ "${n:-0}" -gt 0 ] || why "no answer during the reloads" || return 1
    expect_eq "answers elsewhere than us during two reloads (of $n)" "$bad" 0 || return 1
    expect_eq "source after the reloads" "$(status A 'r["web/eu"]["override_source"]')" "fleet:/detourd/drain/web/eu"
}
t "${ETCD_TESTS[3]}" t_reload_keeps

t "${ETCD_TESTS[4]}" t_garbage
t "${ETCD_TESTS[14]}" t_page_rejected

t_bad_values() {
    local -A bad=(
        [/detourd/drain/web/us]='{"reason": "\ud800"}'
        [/detourd/drain/web/ap]=$'{"reason": "a\xe2\x80\xa8b"}'
        [/detourd/drain/cons/y]=$'{"reason": "caf\xe9"}'
        [/detourd/maintenance/typo]='{"form": "2026-11-28T02:00:00Z"}'
        [/detourd/drain/web/nosuch]='{}'
        [/detourd/maintenance/backwards]='{"from": "2030-01-01T04:00:00Z", "until": "2030-01-01T02:00:00Z", "regions": ["web/us"]}'
        [/detourd/drain/a.b]='{}'
    )
    local -A want=(
        [/detourd/drain/web/us]='not JSON'
        [/detourd/drain/web/ap]='line separator U\+2028'
        [/detourd/drain/cons/y]='not JSON'
        [/detourd/maintenance/typo]="unknown field 'form'"
        [/detourd/drain/web/nosuch]='no region web/nosuch'
        [/detourd/maintenance/backwards]='until: must be after from'
        [/detourd/drain/a.b]='key not /detourd/drain/POOL/REGION'
    )
    local k
    for k in "${!bad[@]}"; do
        printf '%s' "${bad[$k]}" | ectl put "$k" >/dev/null || why "put $k failed" || return 1
    done
    wait_until 10 status_is B 'len(s["fleet"]["rejected"])' 8 ||
        why "rejected: $(status B 's["fleet"]["rejected"]')" || return 1
    for k in "${!want[@]}"; do
        expect_match "$k" "$(status B '[x["error"] for x in s["fleet"]["rejected"] if x["key"] == "'"$k"'"]')" \
            "${want[$k]}" || return 1
    done
    # nothing moved: web still us (eu drained), cons still x
    T0=$(now_ms)
    all_redirect 1 web.test "http://us.test/x" A B C || return 1
    all_redirect 1 cons.test "http://x.test/x" B C || return 1
    expect_eq "maintenance" "$(status B 's["maintenance"]')" "[]" || return 1
    # fixed or deleted: no longer listed
    ectl put /detourd/drain/web/eu '{"reason": "CHG-77 extended"}' >/dev/null || return 1
    for k in "${!bad[@]}"; do ectl del "$k" >/dev/null || return 1; done
    wait_until 10 status_is B 's["fleet"]["rejected"]' "[]" ||
        why "still rejected: $(status B 's["fleet"]["rejected"]')" || return 1
    wait_until 5 status_is B 'r["web/eu"]["override_reason"]' "CHG-77 extended" ||
        why "reason $(status B 'r["web/eu"]["override_reason"]')"
}
t "${ETCD_TESTS[5]}" t_bad_values

t_long_key() {
    local k n
    k=/detourd/drain/web/$(printf 'long-region-name-%.0s' {1..40})$'\x01'end
    printf '{}' | ectl put "$k" >/dev/null || why "put failed" || return 1
    wait_until 10 status_is B 'len(s["fleet"]["rejected"])' 1 ||
        why "rejected: $(status B 's["fleet"]["rejected"]')" || return 1
    # non-printing bytes are shown as \xNN, and nothing is cut off
    local shown=${k/$'\x01'/\\x01}
    n=${#shown}
    expect_eq "the key listed ($n bytes)" "$(status B 's["fleet"]["rejected"][0]["key"]')" "$shown" ||
        return 1
    grep -qF "fleet: key $shown (revision" "$(daemon_log B)" || why "no log line with the full key" ||
        return 1
    curl -s --max-time "$(scale 2)" "http://127.0.0.1:$ADMB/events" >"$TEST_TMP/sse-long" 2>/dev/null
    grep -qF "\"key\":\"${shown//\\/\\\\}\"" "$TEST_TMP/sse-long" ||
        why "no event with the full key: $(grep -o '"key":"[^"]*"' "$TEST_TMP/sse-long" | tail -n 1)" || return 1
    ectl del "$k" >/dev/null || return 1
    wait_until 10 status_is B 's["fleet"]["rejected"]' "[]" ||
        why "still rejected: $(status B 's["fleet"]["rejected"]')"
}
t "${ETCD_TESTS[20]}" t_long_key

t_undrain() {
    T0=$(now_ms)
    ectl del /detourd/drain/web/eu >/dev/null || why "etcdctl del failed" || return 1
    all_redirect 10 web.test "http://eu.test/x" A B C || return 1
    diag "etcd delete -> traffic back on every instance: $ELAPSED ms"
    expect_eq "override_source" "$(status A 'r["web/eu"]["override_source"]')" "None"
}
t "${ETCD_TESTS[6]}" t_undrain

t_window() {
    T0=$(now_ms)
    ectl put /detourd/maintenance/rack '{"from": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z", "regions": ["web/eu", "web/us"], "reason": "rack move"}' >/dev/null ||
        why "put failed" || return 1
    all_redirect 10 web.test "http://ap.test/x" A B C || return 1
    expect_eq "listed" "$(status C '[(w["name"], w["phase"], w["state"]) for w in s["maintenance"]]')" \
        "[('fleet:rack', 'active', 'drain')]" || return 1
    expect_eq "source" "$(status C 'r["web/us"]["override_source"]')" "maintenance:fleet:rack" || return 1
    ectl del /detourd/maintenance/rack >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" A B C
}
t "${ETCD_TESTS[7]}" t_window

t_consensus() {
    # A's check fails, B's and C's pass: x stays up everywhere, A included
    wait_until 10 status_is A '(r["cons/x"]["check_up"], r["cons/x"]["votes"]["up"], r["cons/x"]["votes"]["down"], r["cons/x"]["state"])' \
        "(False, 2, 1, 'up')" || why "A: $(status A 'r["cons/x"]')" || return 1
    T0=$(now_ms)
    all_redirect 1 cons.test "http://x.test/x" A B C || return 1
    expect_eq "A's votes metric" "$(metric A 'detourd_region_votes{pool="cons",region="x",verdict="down"}')" 1 || return 1
    expect_eq "A healthy" "$(metric A 'detourd_region_healthy{pool="cons",region="x"}')" 0 || return 1
    curl -s "http://127.0.0.1:$ADMA/" | grep -q 'health votes' || why "no votes on A's page" || return 1
    # the backend stops: B and C agree with A, a quorum, and x fails over on every instance
    stop_pid "$XPID" || true
    T0=$(now_ms)
    all_redirect 15 cons.test "http://y.test/x" A B C || return 1
    diag "a region down for everyone: every instance failed over $ELAPSED ms after its backend stopped (fall 2 x 100-200 ms, plus etcd)"
    wait_until 5 status_is B '(r["cons/x"]["votes"]["down"], r["cons/x"]["state"])' "(3, 'down')" ||
        why "B: $(status B 'r["cons/x"]["votes"]')" || return 1
    start_backend x "$XLIVE" || return 1
    XPID=$LAST_PID
    T0=$(now_ms)
    all_redirect 15 cons.test "http://x.test/x" A B C
}
t "${ETCD_TESTS[8]}" t_consensus

_mod_rev() { ectl get "$1" -w json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])'; }
t_no_lease() {
    # down votes from instances that have no lease: a majority if they counted
    ectl put /detourd/health/cons/x/ghost '{"up": false}' >/dev/null || why "put failed" || return 1
    ectl put /detourd/health/cons/x/ghost2 '{"up": false}' >/dev/null || why "put failed" || return 1
    local rev rc=0
    rev=$(_mod_rev /detourd/health/cons/x/ghost2)
    wait_until 10 status_is A "s['fleet']['revision'] >= $rev" True || why "A did not see revision $rev" || rc=1
    [ $rc = 0 ] && { expect_eq "members" "$(status A 's["fleet"]["members"]')" "['A', 'B', 'C']" || rc=1; }
    [ $rc = 0 ] && { expect_eq "A's votes on cons/x" \
        "$(status A '(r["cons/x"]["votes"]["up"], r["cons/x"]["votes"]["down"], r["cons/x"]["state"])')" \
        "(2, 1, 'up')" || rc=1; }
    [ $rc = 0 ] && { expect_eq "members metric" "$(metric B detourd_fleet_members)" 3 || rc=1; }
    ectl del /detourd/health/cons/x/ghost >/dev/null
    ectl del /detourd/health/cons/x/ghost2 >/dev/null
    return $rc
}
t "${ETCD_TESTS[18]}" t_no_lease

health_keys_of() { ectl get --prefix --keys-only "/detourd/health/" | grep -c "/$1\$"; }
_no_keys() { [ "$(health_keys_of "$1")" = 0 ]; }
t_sigkill() {
    expect_eq "C's keys" "$(health_keys_of C)" 5 || return 1
    kill -KILL "${DPID[C]}"
    wait_exit "${DPID[C]}" 5 || return 1
    # lease_ttl 3s: gone soon after (etcd checks leases every 500 ms)
    wait_until 15 _no_keys C || why "C's keys still there: $(health_keys_of C)" || return 1
    wait_until 5 status_is A 's["fleet"]["members"]' "['A', 'B']" ||
        why "A members $(status A 's["fleet"]["members"]')" || return 1
    expect_eq "members metric" "$(metric A detourd_fleet_members)" 2 || return 1
    # A and B: one up, one down, no majority: x stays up
    expect_eq "A votes" "$(status A '(r["cons/x"]["votes"]["up"], r["cons/x"]["votes"]["down"], r["cons/x"]["state"])')" "(1, 1, 'up')"
}
t "${ETCD_TESTS[9]}" t_sigkill

t_etcd_down() {
    local n
    ectl put /detourd/drain/web/eu '{"reason": "during the outage"}' >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://us.test/x" A B || return 1
    stop_pid "$ETCD_PID" || why "etcd did not stop" || return 1
    for n in A B; do
        wait_until 15 status_is "$n" 's["fleet"]["connected"]' False ||
            why "$n still connected" || return 1
        wait_log "$(daemon_log "$n")" 'fleet: lost etcd' 5 || why "$n: no log line" || return 1
    done
    # longer than lease_ttl: each decides alone, says so, and keeps the drain
    wait_until 10 status_is A 's["fleet"]["deciding_alone"]' True || why "A not alone" || return 1
    wait_log "$(daemon_log A)" 'fleet: cut off from etcd for more than lease_ttl' 5 || why "A: no log line" || return 1
    T0=$(now_ms)
    all_redirect 1 web.test "http://us.test/x" A B || return 1
    expect_eq "connected metric" "$(metric A detourd_fleet_connected)" 0 || return 1
    one_etcd existing || return 1
    for n in A B; do
        wait_until 40 status_is "$n" 's["fleet"]["connected"]' True || why "$n not back" || return 1
        wait_log "$(daemon_log "$n")" 'fleet: connected to etcd' 5 2 || why "$n: no log line" || return 1
    done
    wait_until 10 status_is A 's["fleet"]["deciding_alone"]' False || why "A still alone" || return 1
    T0=$(now_ms)
    ectl del /detourd/drain/web/eu >/dev/null || return 1
    all_redirect 10 web.test "http://eu.test/x" A B
}
t "${ETCD_TESTS[10]}" t_etcd_down

_rev_now() { ectl get /detourd/ --prefix --limit 1 -w json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'; }
t_compacted() {
    # A frozen while etcd restarts and its history is compacted: on waking it
    # finds its watch gone, resumes from a revision that no longer exists,
    # and reads everything again. Its lease must outlive the freeze (one
    # that expired makes it read everything at once, without resuming).
    local ups
    ups=$(log_count "$(daemon_log A)" 'fleet: connected to etcd')
    sed -i 's/lease_ttl: 3s}$/lease_ttl: 30s}/' "$TEST_TMP/A.yaml"
    reload_daemon "${DPID[A]}" "$(daemon_log A)" && [ "$RELOAD_OK" = 1 ] || why "A did not reload" || return 1
    wait_log "$(daemon_log A)" 'fleet: connected to etcd' 10 $((ups + 1)) || why "A did not reconnect" || return 1
    kill -STOP "${DPID[A]}" || return 1
    stop_pid "$ETCD_PID" || { kill -CONT "${DPID[A]}"; why "etcd did not stop"; return 1; }
    one_etcd existing || { kill -CONT "${DPID[A]}"; return 1; }
    if ! { ectl put /detourd/drain/web/eu '{"reason": "while A slept"}' &&
        ectl put /detourd/drain/web/us '{"reason": "while A slept"}' &&
        ectl compact "$(_rev_now)"; } >/dev/null; then
        kill -CONT "${DPID[A]}"
        why "put or compact failed"
        return 1
    fi
    kill -CONT "${DPID[A]}" || return 1
    T0=$(now_ms)
    all_redirect 30 web.test "http://ap.test/x" A B || return 1
    wait_log "$(daemon_log A)" 'compacted: reading everything again' 5 ||
        why "A: $(grep fleet "$(daemon_log A)" | tail -n 4)" || return 1
    ectl del /detourd/drain/ --prefix >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" A B
}
t "${ETCD_TESTS[11]}" t_compacted

# lease_ttl is 3 s and keepalives go every second: without a revoke the
# keys of a stopped instance outlive it by 2 s at least
t_sigterm() {
    local t0 ms
    [ "$(health_keys_of B)" = 5 ] || why "B's keys: $(health_keys_of B)" || return 1
    t0=$(now_ms)
    kill -TERM "${DPID[B]}"
    wait_until 10 _no_keys B || why "B's keys still there: $(health_keys_of B)" || return 1
    ms=$(($(now_ms) - t0))
    diag "B's verdicts gone from etcd $ms ms after its SIGTERM (lease_ttl 3 s)"
    [ "$ms" -lt 1500 ] || why "B's verdicts lasted $ms ms after its SIGTERM" || return 1
    wait_exit "${DPID[B]}" 10 || why "B did not exit" || return 1
    grep -q 'fleet: lease [0-9a-f]* revoked' "$(daemon_log B)" || why "B: no log line"
}
t "${ETCD_TESTS[16]}" t_sigterm

t_rename() {
    local t0 ms
    [ "$(health_keys_of A)" = 5 ] || why "A's keys: $(health_keys_of A)" || return 1
    sed -i 's/^  instance: A$/  instance: A2/' "$TEST_TMP/A.yaml"
    t0=$(now_ms)
    reload_daemon "${DPID[A]}" "$(daemon_log A)" && [ "$RELOAD_OK" = 1 ] || why "A did not reload" || return 1
    wait_until 10 _no_keys A || why "A's keys still there: $(health_keys_of A)" || return 1
    ms=$(($(now_ms) - t0))
    diag "the old name's verdicts gone from etcd $ms ms after the reload (lease_ttl 3 s)"
    [ "$ms" -lt 1500 ] || why "A's verdicts lasted $ms ms after the reload" || return 1
    wait_until 10 _a2_keys || why "A2's keys: $(health_keys_of A2)" || return 1
    wait_until 10 status_is A '"A2" in s["fleet"]["members"] and "A" not in s["fleet"]["members"]' True ||
        why "members: $(status A 's["fleet"]["members"]')"
}
_a2_keys() { [ "$(health_keys_of A2)" = 5 ]; }
t "${ETCD_TESTS[17]}" t_rename

# a reload to another prefix: the store of the new one is built beside the
# one in use and swapped in at the commit; the old prefix's drain ends
t_prefix() {
    ectl put /detourd/drain/web/eu '{"reason": "old prefix"}' >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://us.test/x" A || return 1
    sed -i 's|^\(  etcd: {.*\)}$|\1, prefix: /other/}|' "$TEST_TMP/A.yaml"
    grep -q 'prefix: /other/' "$TEST_TMP/A.yaml" || why "config: $(grep etcd "$TEST_TMP/A.yaml")" || return 1
    reload_daemon "${DPID[A]}" "$(daemon_log A)" && [ "$RELOAD_OK" = 1 ] || why "A did not reload" || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" A || return 1
    wait_until 10 status_is A '(s["fleet"]["prefix"], s["fleet"]["connected"])' "('/other/', True)" ||
        why "A: $(status A 's["fleet"]')" || return 1
    ectl put /other/drain/web/eu '{"reason": "new prefix"}' >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://us.test/x" A || return 1
    expect_eq "source" "$(status A 'r["web/eu"]["override_source"]')" "fleet:/other/drain/web/eu" || return 1
    ectl del /other/drain/web/eu >/dev/null || return 1
    ectl del /detourd/drain/web/eu >/dev/null || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" A
}
t "${ETCD_TESTS[19]}" t_prefix

_put_via() { EPS="http://127.0.0.1:$1" ectl put "$2" "$3" >/dev/null 2>&1; }
t_cluster() {
    local init="m1=http://127.0.0.1:$P1,m2=http://127.0.0.1:$P2,m3=http://127.0.0.1:$P3" i used
    local -a cp=("$C1" "$C2" "$C3") pp=("$P1" "$P2" "$P3") mpid=()
    for i in 0 1 2; do
        start_etcd "m$((i + 1))" "$TEST_TMP/m$((i + 1))" "${cp[$i]}" "${pp[$i]}" "$init" new
        mpid+=("$LAST_PID")
    done
    local eps="http://127.0.0.1:$C1,http://127.0.0.1:$C2,http://127.0.0.1:$C3"
    wait_until 40 etcd_healthy "$eps" || why "cluster not healthy: $(tail -n 3 "$TEST_TMP/etcd:m1.log")" || return 1
    start_instance D "$XLIVE" "\"http://127.0.0.1:$C1\", \"http://127.0.0.1:$C2\", \"http://127.0.0.1:$C3\"" ||
        return 1
    wait_until 20 status_is D 's["fleet"]["connected"]' True || why "D not connected" || return 1
    used=$(status D 's["fleet"]["endpoint"]')
    for i in 0 1 2; do [ "http://127.0.0.1:${cp[$i]}" = "$used" ] && break; done
    diag "D watches through member m$((i + 1)) ($used); killing it"
    kill -KILL "${mpid[$i]}"
    wait_exit "${mpid[$i]}" 5 || return 1
    local other=$(((i + 1) % 3))
    T0=$(now_ms)
    # the survivors may be electing a leader: retried until it takes
    wait_until 20 _put_via "${cp[$other]}" /detourd/drain/web/eu '{"reason": "m down"}' ||
        why "put through m$((other + 1)) failed" || return 1
    all_redirect 20 web.test "http://us.test/x" D || return 1
    diag "the drain reached D through another member $ELAPSED ms after the put"
    wait_until 10 status_is D 's["fleet"]["connected"]' True || why "D not connected" || return 1
    [ "$(status D 's["fleet"]["endpoint"]')" != "$used" ] || why "D still names $used"
}
t "${ETCD_TESTS[12]}" t_cluster

# a CA, etcd's server certificate (127.0.0.1) and detourd's client
# certificate (without a Common Name: etcd 3.4's gateway refuses one that has
# it, since it would not use it as the user name)
make_certs() {
    local d=$TEST_TMP/pki rc
    mkdir -p "$d" && cd "$d" || return 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=fleet test CA" -keyout ca.key -out ca.pem 2>/dev/null &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=etcd" \
            -keyout etcd.key -out etcd.csr 2>/dev/null &&
        openssl x509 -req -in etcd.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n') \
            -out etcd.pem 2>/dev/null &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=detourd" \
            -keyout client.key -out client.csr 2>/dev/null &&
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out client.pem 2>/dev/null
    rc=$?
    cd - >/dev/null || return 1
    return $rc
}
# tctl ARGS...: etcdctl over TLS (as TUSER, once auth is on)
tctl() {
    # shellcheck disable=SC2086 # TUSER_ARGS is two words or none
    "$ETCDCTL" --endpoints="https://127.0.0.1:$TC" --cacert "$TEST_TMP/pki/ca.pem" \
        --cert "$TEST_TMP/pki/etcd.pem" --key "$TEST_TMP/pki/etcd.key" \
        --command-timeout="$(scale 5 | cut -d. -f1)s" ${TUSER:+--user "$TUSER"} "$@"
}
_tls_healthy() { tctl endpoint health >/dev/null 2>&1; }
_ms_since() { [ $(($(now_ms) - $1)) -ge "$2" ]; } # T MS: MS have passed since T
t_tls_auth() {
    make_certs || why "openssl could not make the certificates" || return 1
    local p=$TEST_TMP/pki
    # simple tokens live 2 s: the instance renews its token while it runs
    spawn "etcd:tls" "$ETCD" --name tls --data-dir "$TEST_TMP/etcd-tls" \
        --listen-client-urls "https://127.0.0.1:$TC" --advertise-client-urls "https://127.0.0.1:$TC" \
        --listen-peer-urls "http://127.0.0.1:$TP" --initial-advertise-peer-urls "http://127.0.0.1:$TP" \
        --initial-cluster "tls=http://127.0.0.1:$TP" --cert-file "$p/etcd.pem" --key-file "$p/etcd.key" \
        --trusted-ca-file "$p/ca.pem" --client-cert-auth --auth-token-ttl 2 --logger zap --log-level error
    wait_until 30 _tls_healthy || why "etcd over TLS not healthy: $(tail -n 3 "$TEST_TMP/etcd:tls.log")" || return 1
    { tctl user add root:rootpw && tctl user add detourd:s3cret && tctl role add fleet &&
        tctl role grant-permission fleet --prefix=true readwrite /detourd/ &&
        tctl user grant-role detourd fleet && tctl auth enable; } >"$TEST_TMP/tls-setup.log" 2>&1 ||
        why "etcd users: $(cat "$TEST_TMP/tls-setup.log")" || return 1
    printf 's3cret\n' >"$TEST_TMP/etcd.password"
    start_detourd E "$(write_config E.yaml <<EOF
listen: ["127.0.0.1:$LE"]
admin: {listen: "127.0.0.1:$ADME"}
checks: {type: none}
pools:
  - name: web
    hosts: [web.test]
    body: none
    regions:
      - {name: eu, url: "http://eu.test", priority: 1}
      - {name: us, url: "http://us.test", priority: 2}
fleet:
  instance: E
  etcd:
    endpoints: ["https://127.0.0.1:$TC"]
    ca_file: $p/ca.pem
    cert: $p/client.pem
    key: $p/client.key
    username: detourd
    password_file: $TEST_TMP/etcd.password
    timeout: 1s
    lease_ttl: 3s
EOF
)" "$LE" -l debug || why "detourd E did not start" || return 1
    DPID[E]=$LAST_PID
    wait_until 20 status_is E 's["fleet"]["connected"]' True ||
        why "E not connected: $(grep fleet "$(daemon_log E)" | tail -n 3)" || return 1
    TUSER=root:rootpw tctl put /detourd/drain/web/eu '{"reason": "over TLS"}' >/dev/null || why "put failed" || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://us.test/x" E || return 1
    # the token expires 2 s after its last use (lease keepalives do not use
    # it); once it has, a reload puts E's verdicts again: refused, the token
    # is renewed and the puts sent again, the session undisturbed
    local t_used=$T0
    wait_until 10 _ms_since "$t_used" 3000 || return 1
    reload_daemon "${DPID[E]}" "$(daemon_log E)" || why "no reload" || return 1
    wait_log "$(daemon_log E)" 'invalid auth token.*authenticating again' 10 || why "no token renewal seen" || return 1
    TUSER=root:rootpw tctl del /detourd/drain/web/eu >/dev/null || why "del failed" || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" E || return 1
    expect_eq "E's verdicts" "$(TUSER=root:rootpw tctl get --prefix --keys-only /detourd/health/ | grep -c '/E$')" 2 ||
        return 1
    expect_eq "sessions lost" "$(log_count "$(daemon_log E)" 'fleet: lost etcd')" 0
}
t "${ETCD_TESTS[13]}" t_tls_auth

# F's etcd user may read the prefix but not write: its verdicts are
# refused, which is logged and counted and retried; the session, the
# watch and the drains that an operator puts are not disturbed
t_read_only() {
    local p=$TEST_TMP/pki
    # short, so that several keepalives and retries pass below, but scaled:
    # a slow host (valgrind) must not lose the session to its own slowness
    RO_TIMEOUT_MS=$(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d\n", 1000 * s }')
    { TUSER=root:rootpw tctl user add reader:r34d && TUSER=root:rootpw tctl role add fleet-ro &&
        TUSER=root:rootpw tctl role grant-permission fleet-ro --prefix=true read /detourd/ &&
        TUSER=root:rootpw tctl user grant-role reader fleet-ro; } >"$TEST_TMP/ro-setup.log" 2>&1 ||
        why "etcd users: $(cat "$TEST_TMP/ro-setup.log")" || return 1
    printf 'r34d\n' >"$TEST_TMP/etcd-ro.password"
    start_detourd F "$(write_config F.yaml <<EOF
listen: ["127.0.0.1:$LF"]
admin: {listen: "127.0.0.1:$ADMF"}
checks: {type: none}
pools:
  - name: web
    hosts: [web.test]
    body: none
    regions:
      - {name: eu, url: "http://eu.test", priority: 1}
      - {name: us, url: "http://us.test", priority: 2}
fleet:
  instance: F
  etcd:
    endpoints: ["https://127.0.0.1:$TC"]
    ca_file: $p/ca.pem
    cert: $p/client.pem
    key: $p/client.key
    username: reader
    password_file: $TEST_TMP/etcd-ro.password
    timeout: ${RO_TIMEOUT_MS}ms
    lease_ttl: $((3 * RO_TIMEOUT_MS))ms
EOF
)" "$LF" || why "detourd F did not start" || return 1
    DPID[F]=$LAST_PID
    wait_until 20 status_is F 's["fleet"]["connected"]' True ||
        why "F not connected: $(grep fleet "$(daemon_log F)" | tail -n 3)" || return 1
    wait_log "$(daemon_log F)" 'fleet: etcd refused .*permission denied' 10 ||
        why "F: $(grep fleet "$(daemon_log F)" | tail -n 3)" || return 1
    local t0
    t0=$(now_ms)
    # several keepalives and retries later, the session is still the first
    wait_until 10 _ms_since "$t0" $((5 * RO_TIMEOUT_MS)) || return 1
    expect_eq "sessions lost" "$(log_count "$(daemon_log F)" 'fleet: lost etcd|cannot reach etcd')" 0 || return 1
    expect_eq "connected" "$(status F 's["fleet"]["connected"]')" "True" || return 1
    [ "$(metric F detourd_fleet_write_errors_total)" -ge 2 ] 2>/dev/null ||
        why "write errors: $(metric F detourd_fleet_write_errors_total)" || return 1
    [ "$(log_count "$(daemon_log F)" 'fleet: etcd refused')" -le 2 ] ||
        why "refusals logged $(log_count "$(daemon_log F)" 'fleet: etcd refused') times" || return 1
    TUSER=root:rootpw tctl put /detourd/drain/web/eu '{"reason": "read-only F"}' >/dev/null || why "put failed" || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://us.test/x" F || return 1
    TUSER=root:rootpw tctl del /detourd/drain/web/eu >/dev/null || why "del failed" || return 1
    T0=$(now_ms)
    all_redirect 10 web.test "http://eu.test/x" F
}
t "${ETCD_TESTS[15]}" t_read_only

t "no sanitizer reports" t_no_sanitizer_reports
done_testing
