#!/usr/bin/env bash
# Integration tests of the daemon's lifecycle: hitless reload (validate then
# commit, health carry-over, listener diff, under load), worker threads,
# the access log and its reopening, JSON logs. TAP on stdout.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py
# the probe timeout is generous (a loaded host, valgrind): a backend that is
# up must never look down
FAST="interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: $(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d", 1000 * s }')ms, rise: 2, fall: 2, jitter: 0%"

alloc_ports 8 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} L2=${PORTS[1]} A=${PORTS[2]} B=${PORTS[3]} W=${PORTS[4]} G=${PORTS[5]}
S=${PORTS[6]} SA=${PORTS[7]}

loc() { # PORT [HOST]: "STATUS LOCATION"
    curl -s -o /dev/null --max-time "$(scale 5)" -w '%{http_code} %{redirect_url}' \
        -H "Host: ${2:-x.test}" "http://127.0.0.1:$1/p"
}

wait_loc() { # PORT WANT SECONDS
    local got
    # shellcheck disable=SC2317 # called through wait_until
    _loc_is() { got=$(loc "$1"); [ "$got" = "$2" ]; }
    wait_until "$3" _loc_is "$1" "$2" && return 0
    why "waited $3 s for '$2', last '$got'"
}

# hup PID LOG: SIGHUP and wait until the log reports the reload's outcome
hup() {
    reload_daemon "$1" "$2" 20 || why "no reload outcome in the log"
}

echo ok >"$TEST_TMP/a.mode"
echo ok >"$TEST_TMP/b.mode"
spawn hb:a "$PYTHON" "$HB" "$A" "$TEST_TMP/a.mode"
wait_listen "$A" "$LAST_PID" 20 || echo "Bail out! backend a"
spawn hb:b "$PYTHON" "$HB" "$B" "$TEST_TMP/b.mode"
BPID=$LAST_PID
wait_listen "$B" "$LAST_PID" 20 || echo "Bail out! backend b"

CONF=$TEST_TMP/reload.yaml
base_conf() { # WEIGHT_A URL_SUFFIX [EXTRA_LISTEN]
    cat >"$CONF" <<YAML
listen: ["127.0.0.1:$L"${3:+, \"127.0.0.1:$3\"}]
workers: 2
checks: {$FAST}
pools:
  - name: api
    regions:
      - {name: a, url: "http://127.0.0.1:$A$2", priority: 1, weight: $1}
      - {name: b, url: "http://127.0.0.1:$B$2", priority: 2}
YAML
}
base_conf 1 ""
start_detourd reload "$CONF" "$L" || echo "Bail out! detourd did not start"
RPID=$LAST_PID
RLOG=$(daemon_log reload)

t_reload_url() {
    wait_loc "$L" "307 http://127.0.0.1:$A/p" 20 || return 1
    base_conf 1 "/v2"
    hup "$RPID" "$RLOG" || return 1
    expect_eq "after the reload" "$(loc "$L")" "307 http://127.0.0.1:$A/v2/p"
}
t "SIGHUP: the new config serves the next request" t_reload_url

t_reload_bad() {
    printf 'listen: ["127.0.0.1:%s"]\npools:\n  - name: api\n    bogus: 1\n' "$L" >"$CONF"
    hup "$RPID" "$RLOG" || return 1
    grep -q "reload.yaml:4:5: unknown key 'bogus'" "$RLOG" || why "no FILE:LINE:COL error logged"
    grep -q "reload failed" "$RLOG" || why "no 'reload failed' line"
    expect_eq "old config still serving" "$(loc "$L")" "307 http://127.0.0.1:$A/v2/p"
}
t "a config with errors is rejected with FILE:LINE:COL; the old one keeps serving" t_reload_bad

t_carry_over() {
    base_conf 1 "/v2"
    hup "$RPID" "$RLOG" || return 1
    stop_pid "$BPID" 5 # the secondary goes down (not used yet)
    set_a() { echo "$1" >"$TEST_TMP/a.mode"; }
    set_a 500
    wait_log "$RLOG" "region a DOWN" 20 || why "a never went down" || return 1
    wait_log "$RLOG" "region b DOWN" 20 || why "b never went down" || return 1
    # restart b, wait for it, then reload a weight change: a must stay down
    spawn hb:b "$PYTHON" "$HB" "$B" "$TEST_TMP/b.mode"
    BPID=$LAST_PID
    wait_listen "$B" "$BPID" 20 || why "backend b did not restart" || return 1
    wait_loc "$L" "307 http://127.0.0.1:$B/v2/p" 20 || return 1
    base_conf 5 "/v2"
    hup "$RPID" "$RLOG" || return 1
    expect_eq "right after a weight-only reload" "$(loc "$L")" "307 http://127.0.0.1:$B/v2/p" ||
        return 1
    set_a ok
    wait_loc "$L" "307 http://127.0.0.1:$A/v2/p" 20
}
t "health state carries over a reload for regions whose check is unchanged" t_carry_over

t_listeners() {
    base_conf 5 "/v2" "$L2"
    hup "$RPID" "$RLOG" || return 1
    expect_eq "added listener" "$(loc "$L2")" "307 http://127.0.0.1:$A/v2/p" || return 1
    base_conf 5 "/v2"
    hup "$RPID" "$RLOG" || return 1
    wait_closed "$L2" 10 || why "removed listener still accepts"
    expect_eq "kept listener" "$(loc "$L")" "307 http://127.0.0.1:$A/v2/p"
}
t "listeners: an added address is opened, a removed one closed, a kept one stays" t_listeners

t_reload_port_in_use() {
    # a new address that cannot be bound fails the reload as a whole; the
    # holder has bound and listens (SO_REUSEADDR, as the daemon's own
    # sockets) before the reload starts
    hold_port "$G" || why "could not hold port $G" || return 1
    local hold=$LAST_PID
    base_conf 1 "/v3" "$G"
    hup "$RPID" "$RLOG" || { stop_pid "$hold"; return 1; }
    stop_pid "$hold"
    expect_eq "the reload failed" "$RELOAD_OK" 0 || return 1
    grep -q "listen 127.0.0.1:$G: bind: Address already in use" "$RLOG" ||
        why "the bind error was not logged"
    expect_eq "old config still serving" "$(loc "$L")" "307 http://127.0.0.1:$A/v2/p"
}
t "a reload whose new address is in use fails and changes nothing" t_reload_port_in_use

t_reload_under_load() {
    base_conf 1 ""
    hup "$RPID" "$RLOG" || return 1
    local stop=$TEST_TMP/stop out=$TEST_TMP/load.out i
    "$PYTHON" "$IT_DIR/loadloop.py" "$L" "$stop" 4 300 "$out.started" >"$out" &
    local lp=$!
    SPAWNED+=("$lp")
    # the clients have each had an answer before the first reload
    wait_file "$out.started" 30 "$lp" || why "the load clients did not start" || { touch "$stop"; return 1; }
    for ((i = 0; i < 50; i++)); do
        base_conf $((i % 3 + 1)) ""
        hup "$RPID" "$RLOG" || break
    done
    touch "$stop"
    wait_exit "$lp" 60 || { stop_pid "$lp"; why "the load clients did not stop"; }
    diag "$(cat "$out")"
    local reloads
    reloads=$(grep -c "reloaded " "$RLOG")
    [ "$reloads" -ge 50 ] || why "only $reloads reloads logged"
    grep -q "^requests [1-9][0-9]* failures 0$" "$out" || why "failures under reload"
}
t "50 reloads while clients loop requests: no request refused or failed" t_reload_under_load

t_sigterm_workers() {
    stop_pid "$RPID" 15
    expect_eq "exit status" "$LAST_RC" 0
}
t "SIGTERM with two workers: exit 0" t_sigterm_workers

# ---- workers share the exact weighted proportions ----
WCONF=$TEST_TMP/workers.yaml
cat >"$WCONF" <<YAML
listen: ["127.0.0.1:$W"]
workers: 2
log: {format: json}
access_log: {path: "$TEST_TMP/access.log"}
pools:
  - name: api
    regions:
      - {name: a, url: "http://a.test", weight: 3, state: up}
      - {name: b, url: "http://b.test", weight: 1, state: up}
YAML
start_detourd workers "$WCONF" "$W" || echo "Bail out! detourd did not start"
WPID=$LAST_PID

t_wrr_across_workers() {
    local i na=0 nb=0 got
    for ((i = 0; i < 200; i++)); do
        got=$(curl -s -o /dev/null --max-time "$(scale 10)" -w '%{redirect_url}' -H 'Connection: close' "http://127.0.0.1:$W/")
        case $got in
        http://a.test/) na=$((na + 1)) ;;
        http://b.test/) nb=$((nb + 1)) ;;
        esac
    done
    expect_eq "a:b over 200 requests on new connections" "$na:$nb" "150:50"
}
t "two workers: weighted proportions are exact across workers (3:1)" t_wrr_across_workers

t_json_log() {
    local line
    line=$(grep -m1 '"msg"' "$(daemon_log workers)")
    expect_match "a JSON log line" "$line" '^\{"time":"[0-9T:.-]+Z","level":"info","msg":".*"\}$'
}
t "log.format json: stderr lines are JSON objects" t_json_log

# stderr is a pipe whose reader has stopped reading (a stalled journal):
# every thread that logs would block in write(2). A worker logging while
# the pipe is full must go on answering (its lines are dropped and
# counted), and so must the admin listener.
t_stderr_stalled() {
    local fifo=$TEST_TMP/stall.fifo out=$TEST_TMP/stall.out go=$TEST_TMP/stall.go pid
    mkfifo "$fifo" || return 1
    # holds the FIFO open without reading until $go exists, then copies
    # everything to $out (bounded: it gives up waiting after 300 s)
    spawn stall-reader "$PYTHON" -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
deadline = time.time() + 300
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.05)
with open(sys.argv[3], "wb") as f:
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        f.write(b)
        f.flush()
' "$fifo" "$go" "$out"
    local conf
    conf=$(write_config stall.yaml <<YAML
listen: ["127.0.0.1:$S"]
admin: {listen: "127.0.0.1:$SA"}
pools:
  - name: api
    hosts: ["x.test"]
    regions:
      - {name: a, url: "http://127.0.0.1:$A", check: {type: none}}
YAML
)
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    $DETOURD_WRAPPER "$DETOURD" -c "$conf" -l debug </dev/null >/dev/null 2>"$fifo" &
    pid=$!
    SPAWNED+=("$pid")
    PID_NAME[$pid]=detourd:stall
    wait_listen "$S" "$pid" 10 || why "detourd did not start" || return 1
    # 4,000 requests for a Host no pool takes, a connection each: each
    # makes the worker log two debug lines (about 540 KB in all, more than
    # the pipe and the daemon's log queue hold together)
    "$PYTHON" - "$S" "$(scale 10)" <<'PY' || why "the worker stopped answering while stderr was full" || return 1
import socket, sys
for i in range(4000):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=float(sys.argv[2]))
    s.sendall(b"GET /p HTTP/1.1\r\nHost: nope.test\r\n\r\n")
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    s.close()
    if not got.startswith(b"HTTP/1.1 421"):
        sys.exit("request %d: %r" % (i, got[:40]))
PY
    expect_eq "a redirect while stderr is full" \
        "$(curl -s -o /dev/null --max-time "$(scale 5)" -w '%{http_code}' -H 'Host: x.test' \
            "http://127.0.0.1:$S/p")" 307 || return 1
    curl -sf -o /dev/null --max-time "$(scale 5)" "http://127.0.0.1:$SA/metrics" ||
        why "/metrics did not answer while stderr was full" || return 1
    : >"$go"
    wait_log "$out" "log lines dropped: stderr did not keep up" 20 ||
        why "no count of the dropped lines once stderr read again" || return 1
    stop_pid "$pid"
}
t "stderr stalled (a full pipe): workers and the admin listener go on; dropped lines are counted" \
    t_stderr_stalled

t_access_log() {
    curl -s -o /dev/null -A 'tester/1.0' -e 'http://from.test/' "http://127.0.0.1:$W/x?q=1"
    wait_log "$TEST_TMP/access.log" 'GET /x\?q=1' 20
    expect_match "combined line" "$(grep 'GET /x?q=1' "$TEST_TMP/access.log")" \
        '^127\.0\.0\.1 - - \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9:]{8} \+0000\] "GET /x\?q=1 HTTP/1\.1" 307 [0-9]+ "http://from\.test/" "tester/1\.0"$' ||
        return 1
    mv "$TEST_TMP/access.log" "$TEST_TMP/access.log.1"
    kill -USR1 "$WPID"
    wait_file "$TEST_TMP/access.log" 20 "$WPID"
    [ -f "$TEST_TMP/access.log" ] || why "SIGUSR1 did not create a new access log" || return 1
    curl -s -o /dev/null --max-time "$(scale 10)" "http://127.0.0.1:$W/after"
    wait_log "$TEST_TMP/access.log" 'GET /after' 20
    grep -q 'GET /after' "$TEST_TMP/access.log" || why "no line in the reopened file" || return 1
    ! grep -q 'GET /after' "$TEST_TMP/access.log.1" || why "a line went to the rotated file"
}
t "access log: combined lines; SIGUSR1 reopens it after rotation" t_access_log

t_access_log_json() {
    sed -i 's|access_log: {path: "\(.*\)"}|access_log: {path: "\1", format: json}|' "$WCONF"
    hup "$WPID" "$(daemon_log workers)" || return 1
    curl -s -o /dev/null --max-time "$(scale 10)" -H 'X-Nothing: 1' "http://127.0.0.1:$W/js\"on"
    wait_log "$TEST_TMP/access.log" '"target":"/js' 20
    expect_match "JSON line" "$(grep '"target":"/js' "$TEST_TMP/access.log")" \
        '^\{"time":"[0-9T:-]+Z","client":"127\.0\.0\.1","method":"GET","target":"/js\\"on","proto":"HTTP/1\.1","status":307,"bytes":[0-9]+,"host":"127\.0\.0\.1:[0-9]+","pool":"api","region":"[ab]",'
}
t "access log: format json, switched by a reload" t_access_log_json
stop_pid "$WPID" 10

t "no sanitizer report in any daemon's log" t_no_sanitizer_reports

done_testing
