#!/usr/bin/env bash
# Integration tests of health checks and the region choice, with real
# backends on 127.0.0.1 whose health the tests switch while detourd probes
# them. TAP on stdout.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py
# fast checks; the probe timeout is generous (a loaded host, valgrind): a
# backend that is up must never look down
FAST="interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: $(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d", 1000 * s }')ms, rise: 2, fall: 2, jitter: 0%"

# backend NAME PORT [--tls CERT KEY]: a health target; its mode file is
# $TEST_TMP/NAME.mode
backend() {
    local name=$1 port=$2
    shift 2
    echo ok >"$TEST_TMP/$name.mode"
    spawn "hb:$name" "$PYTHON" "$HB" "$port" "$TEST_TMP/$name.mode" "$@"
    BPID[$name]=$LAST_PID
    wait_listen "$port" "$LAST_PID" 20 || why "backend $name did not start"
}
declare -A BPID=()
set_mode() { echo "$2" >"$TEST_TMP/$1.mode"; }

# answer PORT [PATH]: "STATUS LOCATION" of one request
answer() {
    curl -s -o /dev/null --max-time "$(scale 5)" -w '%{http_code} %{redirect_url}' \
        "http://127.0.0.1:$1${2:-/x?y=1}"
}

# wait_answer PORT ERE SECONDS: polls until the answer matches (bounded)
wait_answer() {
    local got
    # shellcheck disable=SC2317 # called through wait_until
    _answer_is() { got=$(answer "$1"); [[ $got =~ $2 ]]; }
    wait_until "$3" _answer_is "$1" "$2" && return 0
    why "waited $3 s for /$2/, last answer '$got'"
}

# wait_hanswer PORT HOST WANT SECONDS: polls until hanswer is WANT
wait_hanswer() {
    local got
    # shellcheck disable=SC2317 # called through wait_until
    _hanswer_is() { got=$(hanswer "$1" "$2"); [ "$got" = "$3" ]; }
    wait_until "$4" _hanswer_is "$1" "$2" "$3" && return 0
    why "waited $4 s for '$3' (Host: $2), last answer '$got'"
}

# conf FILE LISTEN POOLBODY: a config with fast checks
conf() {
    printf 'listen: ["127.0.0.1:%s"]\nchecks: {%s}\npools:\n%s\n' "$2" "$FAST" "$3" >"$1"
}

alloc_ports 11 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} A=${PORTS[1]} B=${PORTS[2]} L2=${PORTS[3]} C=${PORTS[4]} L3=${PORTS[5]}
L4=${PORTS[6]} T=${PORTS[7]} L5=${PORTS[8]} L6=${PORTS[9]} D=${PORTS[10]}

backend a "$A"
backend b "$B"

# ---- fail-over and fail-back across tiers ----
CONF=$(tmpf tiers.yaml)
conf "$CONF" "$L" "  - name: api
    regions:
      - {name: primary, url: \"http://127.0.0.1:$A\", priority: 1}
      - {name: secondary, url: \"http://127.0.0.1:$B\", priority: 2}"
start_detourd tiers "$CONF" "$L" || echo "Bail out! detourd did not start"
TIERS_PID=$LAST_PID

t_primary_first() {
    wait_answer "$L" "^307 http://127.0.0.1:$A/x\\?y=1\$" 20
}
t "healthy primary tier gets the traffic, path and query kept" t_primary_first

t_closed_port_fails_over() {
    stop_pid "${BPID[a]}" 5
    local t0 t1
    t0=$(now_ms)
    wait_answer "$L" "^307 http://127.0.0.1:$B/" 20 || return 1
    t1=$(now_ms)
    diag "fail-over after $((t1 - t0)) ms"
    grep -q "pool api region primary DOWN after 2 failures: connect: Connection refused" \
        "$(daemon_log tiers)" || why "no DOWN line with its reason in the log"
}
t "primary port closed: traffic moves to the secondary tier, logged with the reason" t_closed_port_fails_over

t_fail_back() {
    backend a "$A" || return 1
    wait_answer "$L" "^307 http://127.0.0.1:$A/" 20 || return 1
    grep -q "pool api region primary UP after 2 successes" "$(daemon_log tiers)" ||
        why "no UP line in the log"
}
t "primary recovers: traffic fails back after rise successes" t_fail_back

t_status_500() {
    set_mode a 500
    wait_answer "$L" "^307 http://127.0.0.1:$B/" 20 || return 1
    grep -q "region primary DOWN after 2 failures: http: status 500" "$(daemon_log tiers)" ||
        why "no 'http: status 500' reason in the log"
    set_mode a ok
    wait_answer "$L" "^307 http://127.0.0.1:$A/" 20
}
t "health endpoint answering 500 marks the region down (and back)" t_status_500

t_hang() {
    set_mode a hang
    wait_answer "$L" "^307 http://127.0.0.1:$B/" 20 || return 1
    grep -q "region primary DOWN after 2 failures: timeout" "$(daemon_log tiers)" ||
        why "no timeout reason in the log"
    set_mode a ok
    wait_answer "$L" "^307 http://127.0.0.1:$A/" 20
}
t "health endpoint hanging past timeout marks the region down" t_hang

t_one_line_per_change() {
    local downs
    downs=$(grep -c "region primary DOWN" "$(daemon_log tiers)")
    expect_eq "DOWN lines for three outages" "$downs" 3
}
t "each state change is logged once" t_one_line_per_change
stop_pid "$TIERS_PID" 10

# ---- expect_body, tcp checks, initial: down ----
CONF=$(tmpf kinds.yaml)
conf "$CONF" "$L2" "  - name: body
    hosts: [body.test]
    regions:
      - {name: good, url: \"http://127.0.0.1:$A\", check: {expect_body: \"ok\"}}
  - name: tcp
    hosts: [tcp.test]
    regions:
      - {name: t1, url: \"http://127.0.0.1:$C\", check: {type: tcp}}
      - {name: t2, url: \"http://127.0.0.1:$B\", priority: 2, check: {type: tcp}}
  - name: init
    hosts: [init.test]
    regions:
      - {name: late, url: \"http://127.0.0.1:$B\", check: {initial: down, interval: 1s, rise: 3}}
      - {name: other, url: \"http://127.0.0.1:$A\", priority: 2}"
set_mode b 500 # 'late' fails its checks until t_initial_down lets it pass
start_detourd kinds "$CONF" "$L2" || echo "Bail out! detourd did not start"
KINDS_PID=$LAST_PID

hanswer() {
    curl -s -o /dev/null --max-time "$(scale 5)" -w '%{http_code} %{redirect_url}' \
        -H "Host: $2" "http://127.0.0.1:$1/x"
}

t_initial_down() {
    # 'late' starts down and its checks fail (b answers 500): 'other' serves
    local got
    got=$(hanswer "$L2" init.test)
    expect_match "first answer" "$got" "^307 http://127.0.0.1:$A/x" || return 1
    set_mode b ok # now it comes up after rise (3) successes
    wait_hanswer "$L2" init.test "307 http://127.0.0.1:$B/x" 20 || return 1
    # a region that had started up would have logged its fall meanwhile
    ! grep -q "region late DOWN" "$(daemon_log kinds)" || why "'late' was up before its checks" || return 1
    grep -q "pool init region late UP after 3 successes" "$(daemon_log kinds)" ||
        why "no UP line for 'late': $(grep 'region late' "$(daemon_log kinds)")"
}
t "initial: down — the region starts down and comes up after rise successes" t_initial_down

t_body_mismatch() {
    local got
    got=$(grep -c "region good DOWN" "$(daemon_log kinds)")
    expect_eq "no DOWN while the body matches" "$got" 0 || return 1
    set_mode a body
    wait_log "$(daemon_log kinds)" "pool body region good DOWN after 2 failures: body: expect_body not found" 20 ||
        why "expect_body mismatch not detected"
    # fail_open: the only region still gets the traffic
    got=$(hanswer "$L2" body.test)
    expect_match "fail_open answer" "$got" "^307 http://127.0.0.1:$A/x" || return 1
    set_mode a ok
}
t "expect_body mismatch marks the region down; fail_open keeps traffic flowing" t_body_mismatch

t_tcp() {
    # nothing listens on C: t1 goes down, t2 (tcp connect to B) takes over
    wait_hanswer "$L2" tcp.test "307 http://127.0.0.1:$B/x" 20 || return 1
    grep -q "pool tcp region t1 DOWN after 2 failures: connect: Connection refused" "$(daemon_log kinds)" ||
        why "no connect refused reason"
    backend c "$C" || return 1
    wait_hanswer "$L2" tcp.test "307 http://127.0.0.1:$C/x" 20
}
t "tcp check: a closed port is down, an open one up" t_tcp
stop_pid "$KINDS_PID" 10

# ---- https checks against a self-signed certificate ----
CERT=$TEST_TMP/cert.pem KEY=$TEST_TMP/key.pem
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$KEY" -out "$CERT" -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    >/dev/null 2>&1
backend tls "$T" --tls "$CERT" "$KEY"
# a CA file that trusts another certificate until the test puts $CERT in it
OTHER=$TEST_TMP/other.pem ROTATED=$TEST_TMP/rotated-ca.pem
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TEST_TMP/other.key" -out "$OTHER" -days 2 \
    -subj "/CN=other" >/dev/null 2>&1
cp "$OTHER" "$ROTATED"
# a TLS handshake by a daemon under valgrind on a busy host can take seconds
TLS_TIMEOUT=$(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d", 5000 * s }')ms
CONF=$(tmpf tls.yaml)
conf "$CONF" "$L3" "  - name: verify
    hosts: [verify.test]
    all_down: {action: reject, retry_after: 7}
    regions:
      - {name: strict, url: \"https://127.0.0.1:$T\", check: {timeout: $TLS_TIMEOUT}}
  - name: trusted
    hosts: [trusted.test]
    all_down: {action: reject}
    regions:
      - {name: ca, url: \"https://127.0.0.1:$T\", check: {ca_file: \"$CERT\", timeout: $TLS_TIMEOUT}}
  - name: noverify
    hosts: [noverify.test]
    all_down: {action: reject}
    regions:
      - {name: off, url: \"https://localhost:$T\", check: {tls_verify: false, timeout: $TLS_TIMEOUT}}
  - name: rotated
    hosts: [rotated.test]
    all_down: {action: reject}
    regions:
      - {name: r, url: \"https://127.0.0.1:$T\", check: {ca_file: \"$ROTATED\", timeout: $TLS_TIMEOUT}}"
start_detourd tls "$CONF" "$L3" || echo "Bail out! detourd did not start"
TLS_PID=$LAST_PID

t_tls() {
    wait_log "$(daemon_log tls)" "pool verify region strict DOWN after 2 failures: tls" 20 ||
        why "self-signed certificate was not rejected: $(grep verify "$(daemon_log tls)")" || return 1
    # (the state is published just after the log line: wait for it)
    wait_hanswer "$L3" verify.test "503 " 20 || return 1
    wait_hanswer "$L3" trusted.test "307 https://127.0.0.1:$T/x" 20 || return 1
    wait_hanswer "$L3" noverify.test "307 https://localhost:$T/x" 20 || return 1
    ! grep -q "region ca DOWN\|region off DOWN" "$(daemon_log tls)" ||
        why "a trusted TLS region went down"
}
t "https check: self-signed fails verification, passes with its ca_file or tls_verify: false" t_tls

# The CA file's contents change and SIGHUP is sent, the config unchanged:
# the checks use the new contents (a trust store cached by name before).
t_tls_ca_reload() {
    wait_hanswer "$L3" rotated.test "503 " 20 || return 1
    cp "$CERT" "$ROTATED"
    reload_daemon "$TLS_PID" "$(daemon_log tls)" 20 || why "no reload outcome" || return 1
    wait_hanswer "$L3" rotated.test "307 https://127.0.0.1:$T/x" 20
}
t "https check: a reload reads a changed ca_file again" t_tls_ca_reload
stop_pid "$TLS_PID" 10

# ---- all_down actions ----
CONF=$(tmpf alldown.yaml)
conf "$CONF" "$L4" "  - name: open
    hosts: [open.test]
    regions:
      - {name: r1, url: \"http://127.0.0.1:$D\"}
      - {name: r2, url: \"http://127.0.0.1:$D/two\", state: drain}
  - name: fallback
    hosts: [fallback.test]
    all_down: {action: fallback, url: \"https://status.example.com/maint?from=detourd\"}
    regions:
      - {name: r1, url: \"http://127.0.0.1:$D\"}
  - name: reject
    hosts: [reject.test]
    all_down: {action: reject, retry_after: 42}
    regions:
      - {name: r1, url: \"http://127.0.0.1:$D\"}"
start_detourd alldown "$CONF" "$L4" || echo "Bail out! detourd did not start"
ALLDOWN_PID=$LAST_PID

wait_down() { # LOG POOL: waits until the pool's region r1 is down
    wait_log "$1" "pool $2 region r1 DOWN" 20 || why "pool $2 never went down"
}

t_fail_open() {
    wait_down "$(daemon_log alldown)" open || return 1
    local got
    got=$(hanswer "$L4" open.test)
    expect_eq "fail_open skips the drained region" "$got" "307 http://127.0.0.1:$D/x"
}
t "all_down fail_open: redirects as if auto regions passed; drain still wins" t_fail_open

t_fallback() {
    wait_down "$(daemon_log alldown)" fallback || return 1
    # (the state is published just after the log line: wait for it)
    wait_hanswer "$L4" fallback.test "307 https://status.example.com/maint?from=detourd" 20
}
t "all_down fallback: exactly the fallback url, no path appended" t_fallback

t_reject() {
    wait_down "$(daemon_log alldown)" reject || return 1
    wait_hanswer "$L4" reject.test "503 " 20 || return 1
    local out
    out=$(curl -s -i --max-time "$(scale 5)" -H "Host: reject.test" "http://127.0.0.1:$L4/x")
    expect_match "status" "$out" "^HTTP/1.1 503 Service Unavailable" || return 1
    expect_match "Retry-After" "$out" $'Retry-After: 42\r' || return 1
    [[ $out != *Location:* ]] || why "a 503 with a Location"
}
t "all_down reject: 503 with Retry-After" t_reject
stop_pid "$ALLDOWN_PID" 10

# ---- balance: hash and latency ----
CONF=$(tmpf balance.yaml)
conf "$CONF" "$L5" "  - name: hash
    hosts: [hash.test]
    balance: hash
    hash_key: \"header:X-User\"
    regions:
      - {name: h1, url: \"http://127.0.0.1:$A/h1\", check: {type: tcp}}
      - {name: h2, url: \"http://127.0.0.1:$B/h2\", check: {type: tcp}}
      - {name: h3, url: \"http://127.0.0.1:$C/h3\", check: {type: tcp}}
  - name: lat
    hosts: [lat.test]
    balance: latency
    regions:
      - {name: slow, url: \"http://127.0.0.1:$A/slow\"}
      - {name: fast, url: \"http://127.0.0.1:$B/fast\"}"
set_mode a ok
start_detourd balance "$CONF" "$L5" || echo "Bail out! detourd did not start"
BAL_PID=$LAST_PID

t_hash_sticky() {
    local u first got seen=""
    for u in alice bob carol dave erin frank; do
        first=$(curl -s -o /dev/null --max-time "$(scale 10)" -w '%{redirect_url}' -H "Host: hash.test" -H "X-User: $u" \
            "http://127.0.0.1:$L5/x")
        for _ in 1 2 3; do
            got=$(curl -s -o /dev/null --max-time "$(scale 10)" -w '%{redirect_url}' -H "Host: hash.test" \
                -H "X-User: $u" "http://127.0.0.1:$L5/x")
            expect_eq "user $u again" "$got" "$first" || return 1
        done
        seen="$seen ${first%/x}"
    done
    diag "users went to:$seen"
    [[ $(tr ' ' '\n' <<<"$seen" | sort -u | grep -c .) -ge 2 ]] || why "all users on one region"
}
t "balance hash: the same X-User keeps the same region" t_hash_sticky

lat_wait() { # REGION: waits until lat.test goes to REGION
    local got
    # shellcheck disable=SC2317 # called through wait_until
    _lat_is() { got=$(hanswer "$L5" lat.test); [[ $got == *"/$1/x" ]]; }
    wait_until 20 _lat_is "$1" && return 0
    why "latency choice never became $1: '$got'"
}
t_latency() {
    set_mode a slow
    lat_wait fast || return 1
    set_mode a ok
    set_mode b slow
    lat_wait slow || return 1
    set_mode b ok
    grep -q "pool lat: latency leader fast -> slow" "$(daemon_log balance)" ||
        why "the leader change was not logged"
}
t "balance latency: the faster region leads, and the lead changes when it slows" t_latency
stop_pid "$BAL_PID" 10

# ---- a region's state override ----
CONF=$(tmpf override.yaml)
conf "$CONF" "$L6" "  - name: api
    regions:
      - {name: forced, url: \"http://127.0.0.1:$D/forced\", state: up}
      - {name: healthy, url: \"http://127.0.0.1:$A/healthy\", state: down}
  - name: unchecked
    hosts: [unchecked.test]
    regions:
      - {name: nocheck, url: \"http://127.0.0.1:$D/none\", check: {type: none}}
      - {name: backup, url: \"http://127.0.0.1:$A/backup\", priority: 2}"
start_detourd override "$CONF" "$L6" || echo "Bail out! detourd did not start"
OV_PID=$LAST_PID
t_override() {
    # the checks of 'forced' fail (nothing listens on D) and are logged
    wait_log "$(daemon_log override)" "region forced DOWN.*operator override in force" 20
    local got
    got=$(answer "$L6")
    expect_eq "state: up wins over failing checks, state: down over passing" "$got" \
        "307 http://127.0.0.1:$D/forced/x?y=1" || return 1
    grep -q "region forced DOWN.*operator override in force" "$(daemon_log override)" ||
        why "checks did not keep running under the override"
}
t "operator state overrides checks, and checks keep running" t_override

t_type_none() {
    # nothing listens on D, but a region with check type none is never probed
    local got
    got=$(curl -s -o /dev/null --max-time "$(scale 10)" -w '%{http_code} %{redirect_url}' -H 'Host: unchecked.test' \
        "http://127.0.0.1:$L6/x")
    expect_eq "type: none keeps its initial state" "$got" "307 http://127.0.0.1:$D/none/x" ||
        return 1
    ! grep -q "region nocheck" "$(daemon_log override)" || why "a type: none region was checked"
}
t "check type none: the region is never probed and keeps its initial state" t_type_none
stop_pid "$OV_PID" 10

t "no sanitizer report in any daemon's log" t_no_sanitizer_reports

done_testing
