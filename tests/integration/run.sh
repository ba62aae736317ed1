#!/bin/bash
# detourd integration tests: a real daemon on 127.0.0.1, real clients (curl,
# raw sockets from python3), a real backend (backend.py). Prints TAP.
#
# Run by `make check` (which sets DETOURD, TOP_SRCDIR, TOP_BUILDDIR), or by
# hand:  DETOURD=_build/detourd tests/integration/run.sh
# Optional: DETOURD_WRAPPER (e.g. valgrind; see tests/valgrind.sh),
# TIMEOUT_SCALE, KEEP_TMP=1, IT_TIMING=1, IT_OUT (see lib.sh).
# Needs bash, curl, python3 (stdlib only) and coreutils; only 127.0.0.1.

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}

for tool in curl python3 awk sha256sum; do
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

# 1000 client sockets plus the daemon's: raise the soft limit if we may
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

T_START=$(now_ms)
declare -A DAEMON_PID=()

alloc_ports 18 || {
    echo "Bail out! cannot find free loopback ports"
    exit 1
}
P_MAIN=${PORTS[0]} P_SHORT=${PORTS[1]} P_LIM=${PORTS[2]} P_ROUTE=${PORTS[3]}
P_NODEF=${PORTS[4]} P_TERM1=${PORTS[5]} P_TERM2=${PORTS[6]} P_TERM3=${PORTS[7]}
P_CLI=${PORTS[8]} B_EU=${PORTS[9]} R1=${PORTS[10]} R2=${PORTS[11]} R3=${PORTS[12]}
P_CHOICE=${PORTS[13]} P_CONNS=${PORTS[14]} P_RELOAD=${PORTS[15]} P_RELOAD2=${PORTS[16]}
EU="http://127.0.0.1:$B_EU"

# ------------------------------------------------------------ configs ----

C_MAIN=$(write_config main.yaml <<EOF
listen: ["127.0.0.1:$P_MAIN"]
limits: {max_body_discard: 64k, max_connections: 100, header_timeout: 1s, idle_timeout: 5s}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)

C_SHORT=$(write_config short.yaml <<EOF
listen: ["127.0.0.1:$P_SHORT"]
limits: {header_timeout: 1s, idle_timeout: 1s}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)

C_LIM=$(write_config lim.yaml <<EOF
listen: ["127.0.0.1:$P_LIM"]
limits: {max_uri_bytes: 64, max_header_bytes: 1k}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)

C_ROUTE=$(write_config route.yaml <<EOF
listen: ["127.0.0.1:$P_ROUTE"]
pools:
  - name: a
    hosts: ["a.test", "alias.a.test"]
    regions:
      - name: ra
        url: "http://127.0.0.1:$R1"
  - name: b
    hosts: ["b.test", "*.wild.test"]
    regions:
      - name: rb
        url: "http://127.0.0.1:$R2/prefix/"
  - name: plain
    hosts: ["plain.test"]
    status: 308
    body: none
    cache_control: ""
    headers: {Retry-After: "120", X-Detour: "yes"}
    regions:
      - name: rp
        url: "https://plain.example:8443/base"
  - name: def
    regions:
      - name: rd
        url: "http://127.0.0.1:$R3"
EOF
)

C_NODEF=$(write_config nodef.yaml <<EOF
listen: ["127.0.0.1:$P_NODEF"]
pools:
  - name: api
    hosts: ["api.test"]
    regions:
      - name: eu
        url: "$EU"
EOF
)

# regions here are "state: up": health checks must not change the choice
C_CHOICE=$(write_config choice.yaml <<EOF
listen: ["127.0.0.1:$P_CHOICE"]
pools:
  - name: reject
    hosts: ["reject.test"]
    all_down: {action: reject, retry_after: 120}
    regions:
      - name: r1
        url: "http://127.0.0.1:$R1"
        state: down
  - name: fallback
    hosts: ["fallback.test"]
    all_down: {action: fallback, url: "https://status.example/maint"}
    regions:
      - name: r1
        url: "http://127.0.0.1:$R1"
        state: drain
  - name: failover
    hosts: ["failover.test"]
    regions:
      - name: best
        url: "http://127.0.0.1:$R1"
        priority: 1
        state: down
      - name: next
        url: "http://127.0.0.1:$R2"
        state: up
        priority: 2
      - name: worst
        url: "http://127.0.0.1:$R3"
        state: up
        priority: 3
  - name: weighted
    hosts: ["weighted.test"]
    regions:
      - name: a
        url: "http://127.0.0.1:$R1"
        state: up
        weight: 3
      - name: b
        url: "http://127.0.0.1:$R2"
        state: up
        weight: 1
      - name: zero
        url: "http://127.0.0.1:$R3"
        state: up
        weight: 0
  - name: hash
    hosts: ["hash.test"]
    balance: hash
    regions:
      - name: a
        url: "http://127.0.0.1:$R1"
        state: up
      - name: b
        url: "http://127.0.0.1:$R2"
        state: up
      - name: c
        url: "http://127.0.0.1:$R3"
        state: up
EOF
)

# max_connections: silent connections must outlive the test's sleeps
C_CONNS=$(write_config conns.yaml <<EOF
listen: ["127.0.0.1:$P_CONNS"]
limits: {max_connections: 100, header_timeout: 30s, idle_timeout: 30s, shutdown_timeout: 2s}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)

# SIGTERM: an in-flight request must be able to outlive the signal
C_TERM1=$(write_config term1.yaml <<EOF
listen: ["127.0.0.1:$P_TERM1"]
limits: {header_timeout: 30s, idle_timeout: 30s, shutdown_timeout: 5s}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)
# SIGTERM with a client that never finishes: shutdown_timeout ends it
C_TERM2=$(write_config term2.yaml <<EOF
listen: ["127.0.0.1:$P_TERM2"]
limits: {header_timeout: 30s, idle_timeout: 30s, shutdown_timeout: 1s}
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
)
C_TERM3=$(sed "s/$P_TERM2/$P_TERM3/" "$C_TERM2" | write_config term3.yaml)

# ------------------------------------------------------------- start ----

start_backend eu "$B_EU" || { echo "Bail out! backend did not start"; exit 1; }
start_detourd main "$C_MAIN" "$P_MAIN" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[main]=$LAST_PID
start_detourd short "$C_SHORT" "$P_SHORT" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[short]=$LAST_PID
start_detourd lim "$C_LIM" "$P_LIM" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[lim]=$LAST_PID
start_detourd route "$C_ROUTE" "$P_ROUTE" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[route]=$LAST_PID
start_detourd nodef "$C_NODEF" "$P_NODEF" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[nodef]=$LAST_PID
start_detourd choice "$C_CHOICE" "$P_CHOICE" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[choice]=$LAST_PID
start_detourd conns "$C_CONNS" "$P_CONNS" || { echo "Bail out! detourd did not start"; exit 1; }
DAEMON_PID[conns]=$LAST_PID

# test data
BODY_SMALL=$TEST_TMP/small.txt
printf 'hello, backend\n' >"$BODY_SMALL"
BODY_100K=$TEST_TMP/100k.bin
head -c 102400 /dev/urandom >"$BODY_100K"
BODY_64K=$TEST_TMP/64k.bin
head -c 65536 /dev/urandom >"$BODY_64K"
BODY_2M=$TEST_TMP/2m.bin
head -c 2097152 /dev/urandom >"$BODY_2M"

# ============================================================== CLI ====

RUN_OUT=$TEST_TMP/run.out
RUN_ERR=$TEST_TMP/run.err

t_version() {
    run_detourd -V
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    local want='^detourd [0-9]+\.[0-9]+'
    local v
    v=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$TOP_BUILDDIR/autoconf.h" 2>/dev/null)
    [ -n "$v" ] && want="^detourd ${v//./\\.}\$"
    expect_match "-V output" "$(cat "$RUN_OUT")" "$want"
}
t "-V prints 'detourd VERSION' and exits 0" t_version

t_help() {
    run_detourd -h
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    grep -q '^usage: detourd' "$RUN_OUT" || why "no usage on stdout: $(head -3 "$RUN_OUT")"
}
t "-h prints usage on stdout and exits 0" t_help

t_badflag() {
    run_detourd "$@"
    expect_eq "exit status of detourd $*" "$LAST_RC" 2 || return 1
    [ -s "$RUN_ERR" ] || why "nothing on stderr"
}
t "bad flag (-Z) exits 2" t_badflag -Z
t "bad log level (-l loud) exits 2" t_badflag -l loud
t "unexpected argument exits 2" t_badflag -t extra

t_check_ok() {
    run_detourd -t -c "$C_MAIN"
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "stdout" "$(cat "$RUN_OUT")" "$C_MAIN: configuration OK"
}
t "-t on a good config prints 'FILE: configuration OK', exit 0" t_check_ok

t_check_bad() {
    local c=$TEST_TMP/bad.yaml
    cat >"$c" <<EOF
listen: ["127.0.0.1:$P_CLI"]
limits:
  header_timeout: 5
  idle_timeout: 2x
pools:
  - name: api
    regions:
      - name: eu
        url: "$EU"
EOF
    run_detourd -t -c "$c"
    expect_eq "exit status" "$LAST_RC" 1 || return 1
    grep -q "^$c:3:19: .*header_timeout" "$RUN_ERR" ||
        why "no '$c:3:19: ...header_timeout...' on stderr: $(cat "$RUN_ERR")" || return 1
    grep -q "^$c:4:17: .*idle_timeout" "$RUN_ERR" ||
        why "second error '$c:4:17: ...idle_timeout...' not reported: $(cat "$RUN_ERR")" || return 1
    [ ! -s "$RUN_OUT" ] || why "stdout not empty: $(cat "$RUN_OUT")"
}
t "-t on a bad config prints every error as FILE:LINE:COL: msg, exit 1" t_check_bad

t_check_missing() {
    run_detourd -t -c "$TEST_TMP/does-not-exist.yaml"
    expect_eq "exit status" "$LAST_RC" 1 || return 1
    grep -q "does-not-exist.yaml" "$RUN_ERR" || why "message does not name the file: $(cat "$RUN_ERR")"
}
t "-t on a missing file exits 1 naming the file" t_check_missing

t_port_in_use() {
    local c=$TEST_TMP/inuse.yaml
    # the backend holds B_EU
    cat >"$c" <<EOF
listen: ["127.0.0.1:$B_EU"]
pools:
  - name: api
    regions:
      - name: eu
        url: "http://127.0.0.1:$R1"
EOF
    run_detourd -t -c "$c"
    expect_eq "-t on a config whose port is in use (nothing is bound)" "$LAST_RC" 0 || return 1
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line
    spawn "detourd:inuse" $DETOURD_WRAPPER "$DETOURD" -c "$c"
    local pid=$LAST_PID
    if ! wait_exit "$pid" 10; then
        stop_pid "$pid"
        why "detourd kept running although 127.0.0.1:$B_EU is in use"
        return 1
    fi
    expect_eq "exit status" "$LAST_RC" 1 || return 1
    grep -q "127.0.0.1:$B_EU" "$(daemon_log inuse)" ||
        why "message does not name 127.0.0.1:$B_EU: $(cat "$(daemon_log inuse)")"
}
t "port in use: exit 1, the message names the address" t_port_in_use

# ========================================================= redirects ====

t_get_basic() {
    local o d now ds
    o=$(tmpf get)
    raw "$o" "$P_MAIN" 'GET /a/b?x=1&y=two HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/a/b?x=1&y=two" || return 1
    expect_eq "status line" "$(sed -n 's/^R1 statusline //p' "$o.p")" \
        "HTTP/1.1 307 Temporary Redirect" || return 1
    local cl
    cl=$(r_hdr "$o" 1 content-length)
    expect_match Content-Length "$cl" '^[1-9][0-9]*$' || return 1
    expect_eq "body bytes (Content-Length $cl)" "$(r_body_len "$o" 1)" "$cl" || return 1
    expect_eq "bytes after the body" "$(r_trailing "$o")" 0 || return 1
    expect_eq "Content-Length fields" "$(r_hdr_count "$o" 1 content-length)" 1 || return 1
    d=$(r_hdr "$o" 1 date)
    expect_match Date "$d" '^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT$' || return 1
    if ds=$(date -d "$d" +%s 2>/dev/null); then
        now=$(date +%s)
        [ $((now - ds)) -le 120 ] && [ $((ds - now)) -le 120 ] ||
            why "Date '$d' is not now" || return 1
    fi
    expect_eq Cache-Control "$(r_hdr "$o" 1 cache-control)" no-store || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "GET path+query: 307, exact Location, Content-Length = body, Date, Cache-Control" t_get_basic

# loc PATH-AS-SENT WANT-LOCATION-SUFFIX [HOST]
t_loc() {
    local o
    o=$(tmpf loc)
    raw "$o" "$P_MAIN" "GET $1 HTTP/1.1\\r\\nHost: ${3:-api.example}\\r\\nConnection: close\\r\\n\\r\\n"
    expect_response "$o" 1 307 "$EU$2"
}
t "empty query '?' is kept" t_loc '/p?' '/p?'
t "query of only '?&' is kept" t_loc '/p?&' '/p?&'
t "root path" t_loc '/' '/'
t "byte 0x80 and '\"' are percent-encoded" t_loc '/caf\x80/"q"?a="b"' '/caf%80/%22q%22?a=%22b%22'
t "'<', '>', '{', '|', '\\\\' and '^' are percent-encoded" t_loc '/x<y>{z}|\\^' '/x%3Cy%3E%7Bz%7D%7C%5C%5E'
t "valid %XX escapes are kept, a stray '%' becomes %25" t_loc '/a%2Fb%41%zz%4' '/a%2Fb%41%25zz%254'
t "sub-delims, ':' and '@' in path and query are kept" t_loc "/a:b@c!\$&'()*+,;=/?q=/?:@" "/a:b@c!\$&'()*+,;=/?q=/?:@"
t "'#' in a raw target is percent-encoded, not treated as a fragment" t_loc '/a#b' '/a%23b'
t "the client's Host is never copied into Location" t_loc '/h' '/h' 'evil.example:666'

t_html_body() {
    local o
    o=$(tmpf html)
    raw "$o" "$P_MAIN" 'GET /h?a=1&b=<x> HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/h?a=1&b=%3Cx%3E" || return 1
    grep -qF "href=\"$EU/h?a=1&amp;b=%3Cx%3E\"" "$o" ||
        why "body has no HTML-escaped link: $(r_body "$o" 1)"
}
t "HTML body carries the link, HTML-escaped" t_html_body

t_absolute_form() {
    local o
    o=$(tmpf abs)
    raw "$o" "$P_MAIN" 'GET http://user@whatever.test:81/abs/p?x=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/abs/p?x=1" || return 1
    raw "$o" "$P_MAIN" 'GET http://whatever.test HTTP/1.1\r\nHost: whatever.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/"
}
t "absolute-form target: its path and query are used" t_absolute_form

t_asterisk() {
    local o
    o=$(tmpf star)
    raw "$o" "$P_MAIN" 'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/"
}
t "'OPTIONS *' maps to /" t_asterisk

t_any_method() {
    local o m
    o=$(tmpf meth)
    for m in POST PUT DELETE PATCH OPTIONS TRACE PROPFIND X-CUSTOM_1; do
        raw "$o" "$P_MAIN" "$m /m/$m?q HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n"
        expect_response "$o" 1 307 "$EU/m/$m?q" || why "method $m" || return 1
    done
}
t "any method gets the redirect" t_any_method

t_http10() {
    local o
    o=$(tmpf h10)
    raw "$o" "$P_MAIN" 'GET /old?x HTTP/1.0\r\n\r\n'
    expect_response "$o" 1 307 "$EU/old?x" || return 1
    expect_eq "status line version" "$(sed -n 's/^R1 statusline \(HTTP\/1\..\) .*/\1/p' "$o.p")" "HTTP/1.1" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "HTTP/1.0 without Host: redirect (default pool), Connection: close, closed" t_http10

t_leading_crlf() {
    local o
    o=$(tmpf lead)
    raw "$o" "$P_MAIN" '\r\n\r\nGET /lead HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/lead"
}
t "empty lines before the request line are ignored" t_leading_crlf

t_bytewise() {
    local o
    o=$(tmpf bytewise)
    raw "$o" "$P_MAIN" --split 1 --pause 0.002 \
        'GET /bytes?x=1 HTTP/1.1\r\nHost: a\r\nX-A: b\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/bytes?x=1" || return 1
    expect_closed
}
t "a request sent one byte per write" t_bytewise

t_obs_text() {
    local o
    o=$(tmpf obstext)
    raw "$o" "$P_MAIN" 'GET /ot HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9 \xff\tok \r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/ot"
}
t "obs-text (bytes >= 0x80) and tabs in a header value are accepted" t_obs_text

t_half_close() {
    local o
    o=$(tmpf halfclose)
    raw "$o" "$P_MAIN" --shutdown \
        'GET /hc1 HTTP/1.1\r\nHost: a\r\n\r\nGET /hc2 HTTP/1.1\r\nHost: a\r\n\r\nGET /hc3 HTTP/1.1\r\nHost: a\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 3 || raw_diag "$o" || return 1
    expect_response "$o" 3 307 "$EU/hc3" || return 1
    expect_closed
}
t "client half-closes after 3 pipelined requests: all 3 answered, then closed" t_half_close

t_half_head() {
    local o
    o=$(tmpf halfhead)
    raw "$o" "$P_MAIN" --shutdown 'GET /partial HTTP/1.1\r\nHost: a\r\n'
    expect_closed || return 1
    grep -q ' 307 ' "$o" && why "a redirect for an unfinished head: $(head -1 "$o")" && return 1
    still_served "$P_MAIN"
}
t "client half-closes in the middle of a head: no redirect, closed" t_half_head

t_http10_chunked() {
    local o st
    o=$(tmpf h10chunk)
    raw "$o" "$P_MAIN" 'POST /c10 HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /after HTTP/1.0\r\nHost: a\r\n\r\n'
    st=$(r_status "$o" 1)
    [ "$st" = 307 ] || [ "$st" = 400 ] || why "status '$st', want 307 or 400" || raw_diag "$o" || return 1
    expect_eq responses "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "HTTP/1.0 with Transfer-Encoding: one answer, Connection: close, closed" t_http10_chunked

# ======================================================== curl -L ====

# follow METHOD BODYFILE|"" : curl -L through detourd to the backend
t_follow() {
    local m=$1 f=$2 o res want_len=0 want_sha
    o=$(tmpf follow)
    want_sha=$(printf '' | sha256sum | cut -d' ' -f1)
    local args=(-sS -L -o "$o" -w '%{http_code} %{num_redirects}' --max-time "$(scale 15)" -X "$m")
    if [ -n "$f" ]; then
        args+=(--data-binary "@$f" -H 'Content-Type: application/octet-stream')
        want_len=$(wc -c <"$f")
        want_sha=$(sha256sum "$f" | cut -d' ' -f1)
    fi
    res=$(curl "${args[@]}" "http://127.0.0.1:$P_MAIN/up/load?m=$m&x=%41" 2>"$o.err") ||
        why "curl failed: $(cat "$o.err")" || return 1
    expect_eq "curl status and redirects" "$res" "200 1" || return 1
    expect_eq method "$(json_field "$o" method)" "$m" || return 1
    expect_eq "path at the backend" "$(json_field "$o" path)" "/up/load?m=$m&x=%41" || return 1
    expect_eq "body length at the backend" "$(json_field "$o" body_len)" "$want_len" || return 1
    expect_eq "body sha256 at the backend" "$(json_field "$o" body_sha256)" "$want_sha" || return 1
    expect_eq region "$(json_field "$o" region)" eu
}
t "curl -L GET reaches the backend" t_follow GET ""
t "curl -L POST small body: method and body intact" t_follow POST "$BODY_SMALL"
t "curl -L POST 100 KB binary body: method and body intact" t_follow POST "$BODY_100K"
t "curl -L PUT 100 KB binary body: method and body intact" t_follow PUT "$BODY_100K"
t "curl -L DELETE with a body: method and body intact" t_follow DELETE "$BODY_SMALL"
t "curl -L DELETE without a body" t_follow DELETE ""
t "curl -L PATCH 100 KB binary body: method and body intact" t_follow PATCH "$BODY_100K"

# ============================================================= HEAD ====

t_head() {
    local o g
    o=$(tmpf head)
    g=$(tmpf headget)
    raw "$o" "$P_MAIN" 'HEAD /hd?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_closed || return 1
    # on the wire: exactly the head, nothing after the blank line
    local total headlen
    total=$(wc -c <"$o")
    headlen=$("$PYTHON" -c 'import sys; b=open(sys.argv[1],"rb").read(); i=b.find(b"\r\n\r\n"); print(i+4 if i>=0 else -1)' "$o")
    [ "$headlen" -gt 0 ] || raw_diag "$o" || return 1
    expect_eq "bytes on the wire after the head" "$((total - headlen))" 0 || return 1
    raw "$g" "$P_MAIN" 'GET /hd?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_response "$g" 1 307 "$EU/hd?q=1" || return 1
    local hcl gcl
    hcl=$("$PYTHON" -c "$IT_PY" parse "$o" --head all | sed -n 's/^R1 h content-length //p')
    gcl=$(r_hdr "$g" 1 content-length)
    expect_eq "HEAD Content-Length vs GET" "$hcl" "$gcl" || return 1
    grep -q "^Location: $EU/hd?q=1"$'\r'"\$" "$o" || why "HEAD has no Location"
}
t "HEAD: headers only, no body bytes, Content-Length as for GET" t_head

t_head_pipelined() {
    local o
    o=$(tmpf headpipe)
    raw "$o" "$P_MAIN" --head 1 'HEAD /h1 HTTP/1.1\r\nHost: a\r\n\r\nGET /h2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/h1" || return 1
    expect_response "$o" 2 307 "$EU/h2" || return 1
    expect_eq "bytes after the GET body" "$(r_trailing "$o")" 0
}
t "HEAD then GET on one connection: the GET answer follows the HEAD head directly" t_head_pipelined

# ======================================================= keep-alive ====

t_curl_reuse() {
    local e o n codes
    e=$(tmpf reuse.err)
    o=$(tmpf reuse.out)
    codes=$(curl -sv --max-time "$(scale 10)" -w '%{http_code}\n' -o /dev/null -o /dev/null -o /dev/null \
        "http://127.0.0.1:$P_MAIN/k1" "http://127.0.0.1:$P_MAIN/k2" "http://127.0.0.1:$P_MAIN/k3" 2>"$e")
    expect_eq "status codes" "$(echo "$codes" | tr '\n' ' ')" "307 307 307 " || return 1
    n=$(grep -cE 'Re-?using existing' "$e")
    [ "$n" -ge 2 ] || why "curl re-used the connection $n times, want 2: $(grep -E '^\* ' "$e" | head -20)"
    : "$o"
}
t "keep-alive: curl re-uses one connection for 3 requests" t_curl_reuse

t_sequential3() {
    local o
    o=$(tmpf seq3)
    raw "$o" "$P_MAIN" --sequential \
        'GET /s1 HTTP/1.1\r\nHost: a\r\n\r\n' \
        'GET /s2 HTTP/1.1\r\nHost: a\r\n\r\n' \
        'GET /s3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 3 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/s1" || return 1
    expect_response "$o" 2 307 "$EU/s2" || return 1
    expect_response "$o" 3 307 "$EU/s3" || return 1
    expect_eq "Connection on answer 1" "$(r_hdr "$o" 1 connection)" "" || return 1
    expect_eq "Connection on answer 2" "$(r_hdr "$o" 2 connection)" "" || return 1
    expect_eq "Connection on answer 3" "$(r_hdr "$o" 3 connection)" close || return 1
    expect_closed
}
t "keep-alive: 3 requests one after another on one connection, answered in order" t_sequential3

t_keep11() {
    local o
    o=$(tmpf keep11)
    raw "$o" "$P_MAIN" --responses 1 'GET /k HTTP/1.1\r\nHost: a\r\n\r\n'
    expect_response "$o" 1 307 "$EU/k" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" "" || return 1
    expect_open
}
t "HTTP/1.1: the connection stays open after the answer" t_keep11

t_close11() {
    local o
    o=$(tmpf close11)
    raw "$o" "$P_MAIN" --responses 1 --grace 2 'GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/c" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "HTTP/1.1 + Connection: close: answer says close, connection closed" t_close11

t_close11_tokens() {
    local o
    o=$(tmpf close11t)
    raw "$o" "$P_MAIN" --responses 1 --grace 2 'GET /c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n'
    expect_response "$o" 1 307 "$EU/c" || return 1
    expect_closed
}
t "Connection: 'Upgrade, CLOSE' (list, any case) closes" t_close11_tokens

t_close10() {
    local o
    o=$(tmpf close10)
    raw "$o" "$P_MAIN" --responses 1 --grace 2 'GET /c10 HTTP/1.0\r\nHost: a\r\n\r\n'
    expect_response "$o" 1 307 "$EU/c10" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "HTTP/1.0 closes by default" t_close10

t_keep10() {
    local o
    o=$(tmpf keep10)
    raw "$o" "$P_MAIN" --responses 1 'GET /k10 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n'
    expect_response "$o" 1 307 "$EU/k10" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" keep-alive || return 1
    expect_open || return 1
    raw "$o" "$P_MAIN" --sequential \
        'GET /k10a HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n' \
        'GET /k10b HTTP/1.0\r\nHost: a\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 2 307 "$EU/k10b" || return 1
    expect_eq "Connection on answer 2" "$(r_hdr "$o" 2 connection)" close || return 1
    expect_closed
}
t "HTTP/1.0 + Connection: keep-alive: kept, answer says keep-alive" t_keep10

t_idle_timeout() {
    local o
    o=$(tmpf idle)
    raw "$o" "$P_SHORT" --responses 1 --grace 4 'GET /i HTTP/1.1\r\nHost: a\r\n\r\n'
    expect_response "$o" 1 307 "$EU/i" || return 1
    expect_eq responses "$(r_count "$o")" 1 || return 1
    expect_eq "bytes after the answer" "$(r_trailing "$o")" 0 || return 1
    expect_closed || return 1
    [ "$RAW_MS" -ge 700 ] || why "closed after ${RAW_MS}ms, before idle_timeout (1s)"
}
t "an idle keep-alive connection is closed after idle_timeout, silently" t_idle_timeout

t_idle_new() {
    local o
    o=$(tmpf idlenew)
    raw "$o" "$P_SHORT" --timeout 4
    expect_closed || return 1
    expect_eq "bytes received" "$(wc -c <"$o")" 0 || return 1
    [ "$RAW_MS" -ge 700 ] || why "closed after ${RAW_MS}ms, before header_timeout/idle_timeout (1s)"
}
t "a connection that never sends anything is closed after the timeout (1s), silently" t_idle_new

# ======================================================= pipelining ====

t_pipeline10() {
    local o req="" i
    o=$(tmpf pipe10)
    for i in 1 2 3 4 5 6 7 8 9 10; do req+="GET /p$i?n=$i HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"; done
    raw "$o" "$P_MAIN" --responses 10 "$req"
    expect_eq responses "$(r_count "$o")" 10 || raw_diag "$o" || return 1
    for i in 1 2 3 4 5 6 7 8 9 10; do
        expect_response "$o" "$i" 307 "$EU/p$i?n=$i" || return 1
    done
    expect_open
}
t "pipelining: 10 requests in one write, 10 answers in order" t_pipeline10

t_pipeline_mixed() {
    local o
    o=$(tmpf pipemix)
    raw "$o" "$P_MAIN" --head 3 \
        'GET /m1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /m2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcdeHEAD /m3 HTTP/1.1\r\nHost: a\r\n\r\nPOST /m4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /m5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 5 || raw_diag "$o" || return 1
    local i
    for i in 1 2 3 4 5; do expect_response "$o" "$i" 307 "$EU/m$i" || return 1; done
    expect_eq "bytes after the last answer" "$(r_trailing "$o")" 0 || return 1
    expect_closed
}
t "pipelining: GET, POST+body, HEAD, chunked POST, GET in one write" t_pipeline_mixed

t_pipeline_many() {
    local n=$1 o f i
    o=$(tmpf pipemany)
    f=$(tmpf pipemany.req)
    for ((i = 1; i <= n; i++)); do printf 'GET /q%d HTTP/1.1\r\nHost: a\r\n\r\n' "$i"; done >"$f"
    raw "$o" "$P_MAIN" --timeout 5 --responses "$n" "@file:$f"
    local c
    c=$(r_count "$o")
    [ "$c" = "$n" ] || why "$c answers to $n pipelined requests (raw rc=$RAW_RC after ${RAW_MS}ms; last: $(tail -c 200 "$o" | cat -v))" || return 1
    local got want
    got=$(sed -n 's/^R[0-9]* h location //p' "$o.p" | sed "s|^$EU||" | tr '\n' ' ')
    want=$(for ((i = 1; i <= n; i++)); do printf '/q%d ' "$i"; done)
    [ "$got" = "$want" ] || why "Locations out of order" || return 1
    grep -q '^R[0-9]* status [^3]' "$o.p" && why "a non-redirect answer: $(grep '^R[0-9]* status [^3]' "$o.p" | head -3)"
    return 0
}
t "pipelining: 300 requests in one write (more than the input buffer), all answered in order" t_pipeline_many 300
t "pipelining: 2000 requests in one write, all answered in order" t_pipeline_many 2000

# ========================================================= bad input ====

# bad PORT STATUS PART...: the right error, Connection: close, closed, and
# the daemon still serves a new connection
bad() {
    local port=$1 want=$2 o cl
    shift 2
    o=$(tmpf bad)
    raw "$o" "$port" --timeout 3 "$@"
    expect_response "$o" 1 "$want" || return 1
    expect_eq "responses" "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_eq "Connection" "$(r_hdr "$o" 1 connection)" close || return 1
    cl=$(r_hdr "$o" 1 content-length)
    expect_eq "body bytes vs Content-Length" "$(r_body_len "$o" 1)" "$cl" || return 1
    [ -n "$(r_hdr "$o" 1 date)" ] || why "no Date" || return 1
    expect_closed || return 1
    still_served "$port" "$SERVED_HOST"
}
SERVED_HOST=
H='Host: a\r\n'
t "malformed request line -> 400" bad "$P_MAIN" 400 'GARBAGE\r\n\r\n'
t "request line without version (HTTP/0.9 style) -> 400" bad "$P_MAIN" 400 'GET /\r\n\r\n'
t "request line with two spaces -> 400" bad "$P_MAIN" 400 "GET  / HTTP/1.1\\r\\n$H\\r\\n"
t "request line with a trailing word -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1 x\\r\\n$H\\r\\n"
t "lowercase version 'http/1.1' -> 400" bad "$P_MAIN" 400 "GET / http/1.1\\r\\n$H\\r\\n"
t "method with a non-token character -> 400" bad "$P_MAIN" 400 "G(T / HTTP/1.1\\r\\n$H\\r\\n"
t "target not starting with / -> 400" bad "$P_MAIN" 400 "GET nopath HTTP/1.1\\r\\n$H\\r\\n"
t "bare CR in a header -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\rb\\r\\n\\r\\n"
t "bare CR in the request line -> 400" bad "$P_MAIN" 400 "GET /a\\rb HTTP/1.1\\r\\n$H\\r\\n"
t "bare CR ending a header line -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\r\\r\\n\\r\\n"
t "NUL in a header value -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\x00b\\r\\n\\r\\n"
t "NUL in the request target -> 400" bad "$P_MAIN" 400 "GET /a\\x00b HTTP/1.1\\r\\n$H\\r\\n"
t "control character 0x01 in a header value -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\x01b\\r\\n\\r\\n"
t "DEL (0x7f) in a header value -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\x7fb\\r\\n\\r\\n"
t "control character in a field name -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X\\x01A: b\\r\\n\\r\\n"
t "field name with a space -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}Bad Name: x\\r\\n\\r\\n"
t "field name with '@' -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X@Y: z\\r\\n\\r\\n"
t "whitespace before the colon -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\nHost : a\\r\\n\\r\\n"
t "empty field name -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}: v\\r\\n\\r\\n"
t "header line without a colon -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}NoColon\\r\\n\\r\\n"
t "obs-fold -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\r\\n  b\\r\\n\\r\\n"
t "obs-fold with a tab -> 400" bad "$P_MAIN" 400 "GET / HTTP/1.1\\r\\n${H}X-A: a\\r\\n\\tb\\r\\n\\r\\n"
t "HTTP/1.1 without Host -> 400" bad "$P_MAIN" 400 'GET / HTTP/1.1\r\nX-A: b\r\n\r\n'
t "two Host fields -> 400" bad "$P_MAIN" 400 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'
t "two identical Host fields -> 400" bad "$P_MAIN" 400 'GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n'
t "non-numeric Content-Length -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: abc\\r\\n\\r\\n"
t "negative Content-Length -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: -1\\r\\n\\r\\n"
t "Content-Length with a sign (+5) -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: +5\\r\\n\\r\\nabcde"
t "overflowing Content-Length -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: 99999999999999999999999\\r\\n\\r\\n"
t "Content-Length just over 2^64 -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: 18446744073709551617\\r\\n\\r\\n"
t "empty Content-Length -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length:\\r\\n\\r\\n"
t "two different Content-Length fields -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: 5\\r\\nContent-Length: 6\\r\\n\\r\\nabcdef"
t "Content-Length list '5, 6' -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: 5, 6\\r\\n\\r\\nabcdef"
t "Content-Length with Transfer-Encoding -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Content-Length: 5\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
t "Transfer-Encoding with Content-Length (other order) -> 400" bad "$P_MAIN" 400 "POST / HTTP/1.1\\r\\n${H}Transfer-Encoding: chunked\\r\\nContent-Length: 5\\r\\n\\r\\n0\\r\\n\\r\\n"
t "Transfer-Encoding: gzip -> 501" bad "$P_MAIN" 501 "POST / HTTP/1.1\\r\\n${H}Transfer-Encoding: gzip\\r\\n\\r\\n"
t "Transfer-Encoding: gzip, chunked -> 501" bad "$P_MAIN" 501 "POST / HTTP/1.1\\r\\n${H}Transfer-Encoding: gzip, chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
t "HTTP/2.0 -> 505" bad "$P_MAIN" 505 "GET / HTTP/2.0\\r\\n$H\\r\\n"
t "HTTP/1.2 -> 505" bad "$P_MAIN" 505 "GET / HTTP/1.2\\r\\n$H\\r\\n"
t "HTTP/0.9 -> 505" bad "$P_MAIN" 505 "GET / HTTP/0.9\\r\\n$H\\r\\n"
LONG100=$(printf '/%099d' 0)
t "target over max_uri_bytes (64) -> 414" bad "$P_LIM" 414 "GET $LONG100 HTTP/1.1\\r\\n$H\\r\\n"
LONG20K=$(printf '/%019999d' 0)
t "20 KB target (more than the input buffer, default limits) -> 414" bad "$P_MAIN" 414 "GET $LONG20K HTTP/1.1\\r\\n$H\\r\\n"
BIGHDR=$(printf 'X-Big: %02000d' 0)
t "head over max_header_bytes (1k) -> 431" bad "$P_LIM" 431 "GET / HTTP/1.1\\r\\n$H$BIGHDR\\r\\n\\r\\n"
MANYHDR=$(for i in $(seq 1 60); do printf 'X-H%02d: %s\\r\\n' "$i" 0123456789; done)
t "many small headers over max_header_bytes (1k) -> 431" bad "$P_LIM" 431 "GET / HTTP/1.1\\r\\n$H$MANYHDR\\r\\n"
BIG12K=$(printf 'X-Big: %012000d' 0)
t "12 KB header (default limits) -> 431" bad "$P_MAIN" 431 "GET / HTTP/1.1\\r\\n$H$BIG12K\\r\\n\\r\\n"
SERVED_HOST=api.test
t "unknown Host, no default pool -> 421" bad "$P_NODEF" 421 'GET / HTTP/1.1\r\nHost: other.test\r\n\r\n'
t "HTTP/1.0 without Host, no default pool -> 421" bad "$P_NODEF" 421 'GET / HTTP/1.0\r\n\r\n'
SERVED_HOST=

# broken chunked framing: one answer (the redirect or a 400) with
# Connection: close, nothing after it served
t_bad_chunk() {
    local o st
    o=$(tmpf badchunk)
    raw "$o" "$P_MAIN" --timeout 3 "POST /chunk HTTP/1.1\\r\\n${H}Transfer-Encoding: chunked\\r\\n\\r\\n$1GET /next HTTP/1.1\\r\\n$H\\r\\n"
    st=$(r_status "$o" 1)
    [ "$st" = 307 ] || [ "$st" = 400 ] || why "status '$st', want 307 or 400" || raw_diag "$o" || return 1
    expect_eq responses "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed || return 1
    still_served "$P_MAIN"
}
t "malformed chunk size: one answer with Connection: close, then closed" t_bad_chunk 'zz\r\nabc\r\n0\r\n\r\n'
t "chunk data not followed by CRLF: one answer with Connection: close" t_bad_chunk '3\r\nabcX\r\n0\r\n\r\n'

t_uri_at_limit() {
    local o p
    o=$(tmpf urilimit)
    p=$(printf '/%063d' 0)
    raw "$o" "$P_LIM" "GET $p HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n"
    expect_response "$o" 1 307 "$EU$p"
}
t "target of exactly max_uri_bytes is served" t_uri_at_limit

t_known_host_nodef() {
    local o
    o=$(tmpf knownhost)
    raw "$o" "$P_NODEF" 'GET /k HTTP/1.1\r\nHost: API.test:8080\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$EU/k"
}
t "no default pool: a known Host is still served" t_known_host_nodef

t_same_cl_twice() {
    local o
    o=$(tmpf samecl)
    raw "$o" "$P_MAIN" 'POST /same HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/same" || return 1
    expect_response "$o" 2 307 "$EU/after"
}
t "the same Content-Length twice is accepted (body skipped, next request served)" t_same_cl_twice

t_bad_stops_pipeline() {
    local o
    o=$(tmpf badpipe)
    raw "$o" "$P_MAIN" 'GET / HTTP/2.0\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_response "$o" 1 505 || return 1
    expect_closed
}
t "nothing pipelined after a bad request is answered" t_bad_stops_pipeline

t_header_timeout() {
    local o
    o=$(tmpf hto)
    raw "$o" "$P_SHORT" --timeout 5 'GET /slow HTTP/1.1\r\nHost: a\r\n'
    expect_response "$o" 1 408 || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed || return 1
    [ "$RAW_MS" -ge 700 ] || why "408 after ${RAW_MS}ms, before header_timeout (1s)" || return 1
    still_served "$P_SHORT"
}
t "head not complete within header_timeout -> 408 and close" t_header_timeout

t_header_trickle() {
    local o
    o=$(tmpf trickle)
    # a byte now and then must not extend header_timeout (1s)
    raw "$o" "$P_SHORT" --timeout 5 --pause 0.3 'GET /t HTTP/1.1\r\n' 'X-1: a\r\n' 'X-2: a\r\n' \
        'X-3: a\r\n' 'X-4: a\r\n' 'X-5: a\r\n' 'Host: a\r\n\r\n'
    expect_response "$o" 1 408 || return 1
    expect_eq responses "$(r_count "$o")" 1 || raw_diag "$o"
}
t "header_timeout covers the whole head (trickling bytes do not extend it)" t_header_trickle

t_others_served() {
    local try
    # the keep-alive connection idles between its two requests while the
    # other client runs; past idle_timeout (5 s) its close would be right,
    # so a host too slow for that is tried again (at most 3 times)
    for try in 1 2 3; do
        _others_served && return 0
        [ "$OTHERS_GAP" -lt 4000 ] && return 1
        diag "try $try: the host took ${OTHERS_GAP} ms between the two requests (idle_timeout 5 s): again"
    done
    return 1
}
_others_served() {
    local a b pa t0
    a=$(tmpf others.a)
    b=$(tmpf others.b)
    OTHERS_GAP=0
    # A: a keep-alive client between two requests; B: garbage meanwhile
    raw_bg "$a" "$P_MAIN" --timeout 5 'GET /o1 HTTP/1.1\r\nHost: a\r\n\r\n' \
        @responses:1 "@ready:$a.sent" "@wait:$a.go" \
        'GET /o2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    pa=$RAW_PID
    wait_file "$a.sent" 20 "$pa" || why "the keep-alive client's first request was not answered" || return 1
    t0=$(now_ms)
    raw "$b" "$P_MAIN" 'GET / HTTP/1.1\r\nX: \x01\r\n\r\n'
    : >"$a.go"
    OTHERS_GAP=$(($(now_ms) - t0))
    local brc=$RAW_RC
    raw_wait "$a" "$pa"
    RAW_RC=$brc
    expect_response "$b" 1 400 || return 1
    expect_eq "responses on the other connection" "$(r_count "$a")" 2 || raw_diag "$a" || return 1
    expect_response "$a" 2 307 "$EU/o2"
}
t "a bad request does not disturb another client's keep-alive connection" t_others_served

# ====================================================== host routing ====

# route HOST PATH WANT_LOCATION [HTTP_VERSION]
t_route() {
    local o hl=""
    o=$(tmpf route)
    [ -n "$1" ] && hl="Host: $1\\r\\n"
    raw "$o" "$P_ROUTE" "GET $2 HTTP/${4:-1.1}\\r\\n${hl}Connection: close\\r\\n\\r\\n"
    expect_response "$o" 1 307 "$3"
}
RA="http://127.0.0.1:$R1" RB="http://127.0.0.1:$R2/prefix" RD="http://127.0.0.1:$R3"
t "routing: exact host" t_route a.test /x "$RA/x"
t "routing: second host of a pool" t_route alias.a.test /x "$RA/x"
t "routing: Host in upper case with a port" t_route A.TEST:8080 '/x?y' "$RA/x?y"
t "routing: second pool; trailing / of the region url dropped" t_route b.test /p "$RB/p"
t "routing: wildcard *.wild.test matches x.wild.test" t_route x.wild.test /w "$RB/w"
t "routing: wildcard matches deeper names (a.b.wild.test)" t_route A.b.Wild.Test:1 /w "$RB/w"
t "routing: wildcard does not match the bare domain (-> default)" t_route wild.test /w "$RD/w"
t "routing: unknown host -> default pool" t_route other.test /d "$RD/d"
t "routing: a suffix that is not a label boundary -> default" t_route xa.test /d "$RD/d"
t "routing: HTTP/1.0 without Host -> default pool" t_route "" /d "$RD/d" 1.0
t "routing: IPv4 literal Host -> default pool" t_route "127.0.0.1:$P_ROUTE" /d "$RD/d"
t "routing: IPv6 literal Host -> default pool" t_route "[::1]:$P_ROUTE" /d "$RD/d"
t "routing: Host value with surrounding blanks" t_route ' \t a.test \t' /x "$RA/x"
t "routing: Host with a trailing dot" t_route 'a.test.' /x "$RA/x"
t "routing: absolute-form authority with upper case and port" t_route b.test 'HTTP://A.TEST:8080/x?y' "$RA/x?y"

t_route_absolute() {
    local o
    o=$(tmpf routeabs)
    raw "$o" "$P_ROUTE" 'GET http://a.test/abs?q HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$RA/abs?q"
}
t "routing: an absolute-form target's authority wins over Host" t_route_absolute

t_pool_options() {
    local o
    o=$(tmpf plain)
    raw "$o" "$P_ROUTE" 'GET /p?q HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 308 "https://plain.example:8443/base/p?q" || return 1
    expect_eq "status line" "$(sed -n 's/^R1 statusline //p' "$o.p")" "HTTP/1.1 308 Permanent Redirect" || return 1
    expect_eq Content-Length "$(r_hdr "$o" 1 content-length)" 0 || return 1
    expect_eq "body bytes" "$(r_body_len "$o" 1)" 0 || return 1
    expect_eq "bytes after the head" "$(r_trailing "$o")" 0 || return 1
    expect_eq "Cache-Control fields" "$(r_hdr_count "$o" 1 cache-control)" 0 || return 1
    expect_eq Retry-After "$(r_hdr "$o" 1 retry-after)" 120 || return 1
    expect_eq X-Detour "$(r_hdr "$o" 1 x-detour)" yes || return 1
    [ -n "$(r_hdr "$o" 1 date)" ] || why "no Date"
}
t "pool options: status 308, body none, cache_control '', extra headers" t_pool_options

# ===================================================== region choice ====

t_reject() {
    local o
    o=$(tmpf reject)
    raw "$o" "$P_CHOICE" 'GET /r?q HTTP/1.1\r\nHost: reject.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 503 || return 1
    expect_eq "status line" "$(sed -n 's/^R1 statusline //p' "$o.p")" "HTTP/1.1 503 Service Unavailable" || return 1
    expect_eq Retry-After "$(r_hdr "$o" 1 retry-after)" 120 || return 1
    expect_eq "Location fields" "$(r_hdr_count "$o" 1 location)" 0 || return 1
    expect_eq "body bytes vs Content-Length" "$(r_body_len "$o" 1)" "$(r_hdr "$o" 1 content-length)"
}
t "all_down reject (only region down): 503 with Retry-After, no Location" t_reject

t_fallback() {
    local o
    o=$(tmpf fallback)
    raw "$o" "$P_CHOICE" 'GET /any/path?q=1 HTTP/1.1\r\nHost: fallback.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "https://status.example/maint"
}
t "all_down fallback (only region drained): Location is exactly the url, no path" t_fallback

t_failover() {
    local o
    o=$(tmpf failover)
    raw "$o" "$P_CHOICE" 'GET /f HTTP/1.1\r\nHost: failover.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "http://127.0.0.1:$R2/f"
}
t "priority: the best tier is down, the next tier (not the last) is chosen" t_failover

t_weighted() {
    local o req="" i got w
    o=$(tmpf weighted)
    for i in 1 2 3 4 5 6 7 8; do req+="GET /w$i HTTP/1.1\\r\\nHost: weighted.test\\r\\n\\r\\n"; done
    raw "$o" "$P_CHOICE" --responses 8 "$req"
    expect_eq responses "$(r_count "$o")" 8 || raw_diag "$o" || return 1
    # which region answered each request, in order: a (weight 3), b (1), zero (0)
    got=$(sed -n 's/^R[0-9]* h location //p' "$o.p" |
        sed -e "s|^http://127.0.0.1:$R1/.*|a|" -e "s|^http://127.0.0.1:$R2/.*|b|" \
            -e "s|^http://127.0.0.1:$R3/.*|zero|" | tr '\n' ' ')
    case $got in *zero*) why "a weight-0 region was chosen: $got"; return 1 ;; esac
    for w in "$(echo "$got" | cut -d' ' -f1-4)" "$(echo "$got" | cut -d' ' -f5-8)"; do
        [ "$(echo "$w" | tr ' ' '\n' | grep -c '^a$')" = 3 ] &&
            [ "$(echo "$w" | tr ' ' '\n' | grep -c '^b$')" = 1 ] ||
            why "a window of 4 requests is not 3 x a + 1 x b: '$w' (all: $got)" || return 1
    done
}
t "weighted 3:1 (+ weight 0): each aligned window of 4 requests is 3 a + 1 b" t_weighted

t_hash_sticky() {
    local o req="" i n
    o=$(tmpf hash)
    for i in 1 2 3 4 5 6 7 8 9 10; do req+="GET /h$i HTTP/1.1\\r\\nHost: hash.test\\r\\n\\r\\n"; done
    raw "$o" "$P_CHOICE" --responses 10 "$req"
    expect_eq responses "$(r_count "$o")" 10 || raw_diag "$o" || return 1
    n=$(sed -n 's/^R[0-9]* h location //p' "$o.p" | sed 's|/h[0-9]*$||' | sort -u | wc -l)
    expect_eq "distinct regions for one client" "$n" 1
}
t "balance hash (client_ip): one client always gets the same region" t_hash_sticky

# ====================================================== body discard ====

t_small_body_keep() {
    local o
    o=$(tmpf smallbody)
    raw "$o" "$P_MAIN" --sequential \
        'POST /b1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world' \
        'GET /b2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/b1" || return 1
    expect_eq "Connection on answer 1" "$(r_hdr "$o" 1 connection)" "" || return 1
    expect_response "$o" 2 307 "$EU/b2" || return 1
    expect_closed
}
t "body discard: POST with a small body, then a second request on the connection" t_small_body_keep

t_body_later() {
    local o
    o=$(tmpf bodylater)
    raw "$o" "$P_MAIN" --pause 0.2 \
        'POST /l1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n' '01234' \
        '56789GET /l2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/l1" || return 1
    expect_response "$o" 2 307 "$EU/l2" || return 1
    expect_closed
}
t "body discard: a body arriving in pieces after the head" t_body_later

t_chunked_keep() {
    local o
    o=$(tmpf chunked)
    raw "$o" "$P_MAIN" --sequential \
        'POST /c1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n' \
        'GET /c2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/c1" || return 1
    expect_eq "Connection on answer 1" "$(r_hdr "$o" 1 connection)" "" || return 1
    expect_response "$o" 2 307 "$EU/c2" || return 1
    expect_closed
}
t "body discard: chunked body (extension, trailer), then a second request" t_chunked_keep

t_chunked_split() {
    local o
    o=$(tmpf chunksplit)
    raw "$o" "$P_MAIN" --pause 0.1 \
        'POST /cs1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1' '0\r' '\n0123456' '789abcdef\r' \
        '\n0\r' '\n\r' '\nGET /cs2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/cs1" || return 1
    expect_response "$o" 2 307 "$EU/cs2" || return 1
    expect_closed
}
t "body discard: chunked framing split at awkward places" t_chunked_split

t_body_at_limit() {
    local o
    o=$(tmpf body64k)
    raw "$o" "$P_MAIN" --pause 0.1 \
        'POST /e1 HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n' "@file:$BODY_64K" \
        'GET /e2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/e1" || return 1
    expect_eq "Connection on answer 1" "$(r_hdr "$o" 1 connection)" "" || return 1
    expect_response "$o" 2 307 "$EU/e2" || return 1
    expect_closed
}
t "body discard: a body of exactly max_body_discard (64k) keeps the connection" t_body_at_limit

t_big_body_raw() {
    local o
    o=$(tmpf big)
    raw "$o" "$P_MAIN" --timeout 10 'POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 2097152\r\n\r\n' "@file:$BODY_2M"
    [ "$RAW_RC" != 4 ] || why "connection reset" || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/big" || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed || return 1
    still_served "$P_MAIN"
}
t "2 MB body (over max_body_discard): the whole body sent, then the 307 is read" t_big_body_raw

t_big_chunked_raw() {
    local o f
    o=$(tmpf bigchunk)
    f=$(tmpf bigchunk.req)
    {
        printf 'POST /bigc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n'
        printf '200000\r\n'
        cat "$BODY_2M"
        printf '\r\n0\r\n\r\n'
    } >"$f"
    raw "$o" "$P_MAIN" --timeout 10 "@file:$f"
    [ "$RAW_RC" != 4 ] || why "connection reset" || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/bigc" || return 1
    expect_eq responses "$(r_count "$o")" 1 || return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed || return 1
    still_served "$P_MAIN"
}
t "2 MB chunked body (over max_body_discard): 307 with Connection: close, then closed" t_big_chunked_raw

# A connection whose first read at accept fills the read rounds (a body
# already waiting) must still hear of what its client sends later. The
# daemon is stopped while the client connects and sends, so the data is
# there before the accept.
t_accept_full_read() {
    local o b pid=${DAEMON_PID[main]} sent
    o=$(tmpf fullread)
    b=$(tmpf fullread.body)
    head -c 60000 /dev/zero | tr '\0' x >"$b"
    kill -STOP "$pid" || return 1
    raw_bg "$o" "$P_MAIN" --timeout 5 \
        'POST /f1 HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n' "@file:$b" \
        "@ready:$o.sent" @responses:1 'GET /f2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    wait_file "$o.sent" 20 "$RAW_PID"
    sent=$?
    kill -CONT "$pid"
    [ "$sent" = 0 ] || why "the client could not send its body" || return 1
    raw_wait "$o"
    expect_eq responses "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/f1" || return 1
    expect_response "$o" 2 307 "$EU/f2"
}
t "a request that fills the first reads at accept: later input on that connection is still read" t_accept_full_read

t_big_body_curl() {
    local res e
    e=$(tmpf bigcurl.err)
    res=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$(scale 15)" "$@" \
        -X POST --data-binary "@$BODY_2M" "http://127.0.0.1:$P_MAIN/bigcurl" 2>"$e")
    local rc=$?
    expect_eq "curl status" "$res" 307 || why "curl stderr: $(cat "$e")" || return 1
    expect_eq "curl exit" "$rc" 0 || why "curl stderr: $(cat "$e")"
}
t "curl POST 2 MB without -L prints 307, exits 0" t_big_body_curl
t "curl POST 2 MB without -L, no Expect: sends it all, prints 307, exits 0" t_big_body_curl -H 'Expect:'
t "curl POST 2 MB with Expect: 100-continue prints 307, exits 0" t_big_body_curl -H 'Expect: 100-continue'

t_expect_continue() {
    local o
    o=$(tmpf expect)
    raw "$o" "$P_MAIN" --timeout 1 --responses 1 --grace 2 \
        'POST /exp HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n'
    expect_eq responses "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$EU/exp" || return 1
    grep -q '100 Continue' "$o" && why "a 100 Continue was sent" && return 1
    expect_eq Connection "$(r_hdr "$o" 1 connection)" close || return 1
    expect_closed
}
t "Expect: 100-continue: the 307 at once (head only sent), no 100 Continue" t_expect_continue

t_expect_small() {
    local o
    o=$(tmpf expect0)
    raw "$o" "$P_MAIN" --timeout 1 --responses 1 \
        'POST /exp0 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n'
    expect_response "$o" 1 307 "$EU/exp0" || return 1
    grep -q '100 Continue' "$o" && why "a 100 Continue was sent" && return 1
    return 0
}
t "Expect: 100-continue with an empty body: the 307, no 100 Continue" t_expect_small

# ==================================================== max_connections ====

t_many_idle() {
    local n=1000 lim o
    lim=$(ulimit -n)
    if [ "$lim" != unlimited ] && [ "$lim" -lt $((n + 64)) ]; then
        n=$((lim - 64))
        diag "ulimit -n is $lim: opening $n connections instead of 1000"
    fi
    o=$(tmpf many)
    "$PYTHON" - "$P_CONNS" "$n" >"$o" 2>&1 <<'PYEOF'
import errno, os, select, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
scale = float(os.environ.get("TIMEOUT_SCALE") or 1)
addr = ("127.0.0.1", port)

def answer(s, wait):
    """Status line of an answer on s within wait seconds, or 'none'."""
    s.setblocking(True)
    s.settimeout(wait)
    data = b""
    try:
        while b"\r\n" not in data:
            d = s.recv(4096)
            if not d:
                return "eof" if not data else data.split(b"\r\n")[0].decode("latin-1")
            data += d
    except socket.timeout:
        return "none"
    except OSError as e:
        return "error %s" % e
    return data.split(b"\r\n")[0].decode("latin-1")


def server_unread(port, cport):
    """Bytes the server side of 127.0.0.1:cport -> :port has not read yet
    (its receive queue in /proc/net/tcp), or None if there is no such socket."""
    want_l, want_r = "0100007F:%04X" % port, "0100007F:%04X" % cport
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if x[1] == want_l and x[2] == want_r and x[3] == "01":
                    return int(x[4].split(":")[1], 16)
    except OSError:
        pass
    return None

def wait_read(port, s, secs):
    """Until the daemon has read everything s sent (bounded); True if so."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if server_unread(port, s.getsockname()[1]) == 0:
            return True
        time.sleep(0.02)
    return False

def server_sockets(port):
    """Established server-side sockets on :port with an empty receive queue."""
    n, want = 0, "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if x[1] == want and x[3] == "01" and x[4].endswith(":00000000"):
                    n += 1
    except OSError:
        pass
    return n

first = socket.create_connection(addr, timeout=5 * scale)  # accepted: it is first
first.sendall(b"GET /he")  # (a connection is handed over once it has data)
wait_read(port, first, 20 * scale)  # the daemon accepted it and read that
socks, failed = [], 0
for i in range(n - 1):
    s = socket.socket()
    s.setblocking(False)
    e = s.connect_ex(addr)
    if e not in (0, errno.EINPROGRESS):
        failed += 1
    socks.append(s)
print("opened", len(socks) + 1, "connect_errors", failed)
# each idle connection sends the first byte of a request: a silent one would
# stay in the kernel (TCP_DEFER_ACCEPT) and never count against the limit
late_i = 199
todo = {s.fileno(): s for i, s in enumerate(socks) if i != late_i}
poller = select.poll()
for fd in todo:
    poller.register(fd, select.POLLOUT)
end = time.monotonic() + 10 * scale
while todo and time.monotonic() < end:
    for fd, ev in poller.poll(500):
        s = todo.pop(fd, None)
        if s is None:
            continue
        poller.unregister(fd)
        try:
            s.send(b"G")
        except OSError:
            failed += 1
print("primed", len(socks) - len(todo) - 1)
# the daemon accepts up to max_connections (100) and reads their byte: wait
# until it holds them
end = time.monotonic() + 20 * scale
while server_sockets(port) < 100 and time.monotonic() < end:
    time.sleep(0.05)
print("read_by_daemon", server_sockets(port))
print("daemon_pid_check")
sys.stdout.flush()
# a connection the daemon holds still works
first.sendall(b"ld HTTP/1.1\r\nHost: a\r\n\r\n")
print("held", answer(first, 5 * scale))
# one far past the limit is not served while the limit holds
late = socks[late_i]
late_ok = True
try:
    _, w, _ = select.select([], [late], [], 2 * scale)
    late.setblocking(True)
    late.sendall(b"GET /late HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
except OSError as e:
    late_ok = False
    print("late_send_error", e)
if late_ok:
    print("late_before", answer(late, 0.5))
sys.stdout.flush()
for i, s in enumerate(socks):
    if s is not late:
        s.close()
first.close()
if late_ok:
    print("late_after", answer(late, 10 * scale))
late.close()
PYEOF
    local prc=$?
    pid_alive "${DAEMON_PID[conns]}" || why "detourd died (see $(daemon_log conns))" || return 1
    [ "$prc" = 0 ] || why "client script failed ($prc): $(cat "$o")" || return 1
    grep -q '^held HTTP/1.1 307' "$o" || why "a held connection was not served: $(cat "$o")" || return 1
    if grep -q '^late_before' "$o"; then
        grep -q '^late_before none' "$o" ||
            why "a connection beyond max_connections was served while 100 were open: $(cat "$o")" || return 1
        grep -q '^late_after HTTP/1.1 307' "$o" ||
            why "the waiting connection was not served once others closed: $(cat "$o")" || return 1
    else
        diag "could not test the connection beyond the limit: $(cat "$o")"
    fi
    still_served "$P_CONNS"
}
t "1000 idle connections against max_connections 100: limit holds, daemon lives, serves after" t_many_idle

# ============================================================ SIGTERM ====

# A client for the shutdown tests. usage: PORT READYFILE GOFILE
# Connection "idle" does a request and stays open; connection "busy" does a
# request, then sends half of a second head. Then READYFILE is created, and
# once GOFILE exists: idle should see EOF (closed by the daemon), busy sends
# the rest of its head and reads until EOF. Facts go to stdout.
read -r -d '' TERM_PY <<'PYEOF'
import os, socket, sys, time
port, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def server_unread(port, cport):
    """Bytes the server side of 127.0.0.1:cport -> :port has not read yet
    (its receive queue in /proc/net/tcp), or None if there is no such socket."""
    want_l, want_r = "0100007F:%04X" % port, "0100007F:%04X" % cport
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if x[1] == want_l and x[2] == want_r and x[3] == "01":
                    return int(x[4].split(":")[1], 16)
    except OSError:
        pass
    return None

def wait_read(port, s, secs):
    """Until the daemon has read everything s sent (bounded); True if so."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if server_unread(port, s.getsockname()[1]) == 0:
            return True
        time.sleep(0.02)
    return False

def server_sockets(port):
    """Established server-side sockets on :port with an empty receive queue."""
    n, want = 0, "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if x[1] == want and x[3] == "01" and x[4].endswith(":00000000"):
                    n += 1
    except OSError:
        pass
    return n

scale = float(os.environ.get("TIMEOUT_SCALE") or 1)
addr = ("127.0.0.1", port)

def read_all(s, wait):
    s.settimeout(wait)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, "eof"
            data += d
    except socket.timeout:
        return data, "timeout"
    except OSError as e:
        return data, "error %s" % e

def one_request(s, path):
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    s.settimeout(5 * scale)
    got = b""
    while True:  # one whole answer: the head, then Content-Length bytes
        head, sep, body = got.partition(b"\r\n\r\n")
        if sep:
            cl = [l.split(b":", 1)[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")]
            if len(body) >= int(cl[0]) if cl else True:
                break
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got.split(b"\r\n")[0].decode("latin-1")

idle = socket.create_connection(addr, timeout=5 * scale)
print("idle_first", one_request(idle, b"/idle"))
busy = socket.create_connection(addr, timeout=5 * scale)
print("busy_first", one_request(busy, b"/busy"))
busy.sendall(b"GET /inflight HTTP/1.1\r\nHost: a\r\n")  # the head is not finished
if not wait_read(port, busy, 20 * scale):  # the daemon has read it
    print("busy_unread", server_unread(port, busy.getsockname()[1]))
sys.stdout.flush()
open(ready, "w").close()
deadline = time.monotonic() + 30 * scale
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
if "--hold" in sys.argv:  # never finish: wait for the daemon to go away
    data, how = read_all(busy, 20 * scale)
    print("busy_end", how, len(data))
    sys.exit(0)
data, how = read_all(idle, 3 * scale)
print("idle_after", how, len(data))
busy.sendall(b"X-Last: 1\r\n\r\n")
data, how = read_all(busy, 5 * scale)
head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
print("busy_status", head[0])
print("busy_end", how)
for h in head[1:]:
    print("busy_hdr", h)
PYEOF

# term_client NAME PORT [--hold]: starts TERM_PY; waits until it is ready.
# Sets TERM_CPID, TERM_OUT, TERM_GO.
term_client() {
    local ready i
    TERM_OUT=$(tmpf "$1")
    ready=$TERM_OUT.ready
    TERM_GO=$TERM_OUT.go
    "$PYTHON" -c "$TERM_PY" "$2" "$ready" "$TERM_GO" "${@:3}" >"$TERM_OUT" 2>&1 &
    TERM_CPID=$!
    SPAWNED+=("$TERM_CPID")
    PID_NAME[$TERM_CPID]="client:$1"
    for ((i = 0; i < 400; i++)); do
        [ -e "$ready" ] && return 0
        pid_alive "$TERM_CPID" || break
        sleep 0.05
    done
    [ -e "$ready" ] || why "shutdown test client not ready: $(cat "$TERM_OUT")"
}

# wait_refused PORT SECONDS: until new connections to PORT are refused
wait_refused() {
    local i n
    n=$(awk -v t="$(scale "$2")" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        can_connect "$1" || return 0
        sleep 0.05
    done
    return 1
}

t_sigterm_inflight() {
    start_detourd term1 "$C_TERM1" "$P_TERM1" || why "did not start" || return 1
    local pid=$LAST_PID t0 ms o
    if ! term_client term1 "$P_TERM1"; then
        stop_pid "$TERM_CPID"
        stop_pid "$pid"
        return 1
    fi
    o=$TERM_OUT
    t0=$(now_ms)
    kill -TERM "$pid"
    wait_refused "$P_TERM1" 10 || why "still accepting new connections after SIGTERM"
    : >"$TERM_GO"
    wait_exit "$TERM_CPID" 30 || stop_pid "$TERM_CPID"
    if ! wait_exit "$pid" 10; then
        stop_pid "$pid"
        why "detourd did not exit after SIGTERM"
        return 1
    fi
    ms=$(($(now_ms) - t0))
    [ -z "$WHY" ] || return 1
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    [ "$ms" -le "$(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d\n", 5000 + 5000 * s }')" ] ||
        why "exit took ${ms}ms, shutdown_timeout is 5s" || return 1
    grep -q '^idle_first HTTP/1.1 307' "$o" || why "first request failed: $(cat "$o")" || return 1
    grep -q '^idle_after eof 0' "$o" || why "idle keep-alive connection not closed at SIGTERM: $(cat "$o")" || return 1
    grep -q '^busy_status HTTP/1.1 307' "$o" || why "in-flight request not answered: $(cat "$o")" || return 1
    grep -qi '^busy_hdr Connection: close' "$o" || why "in-flight answer lacks Connection: close: $(cat "$o")" || return 1
    grep -q '^busy_end eof' "$o" || why "in-flight connection not closed after its answer: $(cat "$o")"
}
t "SIGTERM: listener closed, idle connection closed, in-flight answered, exit 0" t_sigterm_inflight

t_sigterm_stuck() {
    start_detourd term2 "$C_TERM2" "$P_TERM2" || why "did not start" || return 1
    local pid=$LAST_PID t0 ms
    if ! term_client term2 "$P_TERM2" --hold; then
        stop_pid "$TERM_CPID"
        stop_pid "$pid"
        return 1
    fi
    t0=$(now_ms)
    kill -TERM "$pid"
    if ! wait_exit "$pid" 10; then
        stop_pid "$pid"
        stop_pid "$TERM_CPID"
        why "detourd did not exit within shutdown_timeout (1s) + margin"
        return 1
    fi
    ms=$(($(now_ms) - t0))
    local rc=$LAST_RC
    : >"$TERM_GO"
    wait_exit "$TERM_CPID" 30 || stop_pid "$TERM_CPID"
    expect_eq "exit status" "$rc" 0 || return 1
    [ "$ms" -ge 500 ] || why "exited after ${ms}ms: did not wait for the in-flight request" || return 1
    [ "$ms" -le "$(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d\n", 1000 + 5000 * s }')" ] ||
        why "exit took ${ms}ms, shutdown_timeout is 1s"
}
t "SIGTERM with a client that never finishes its head: exit 0 after shutdown_timeout" t_sigterm_stuck

# ============================================================ SIGHUP ====

# reload_conf URL [EXTRA_LISTEN]: rewrites the reload daemon's config
reload_conf() {
    local listen="\"127.0.0.1:$P_RELOAD\""
    [ -n "${2:-}" ] && listen+=", \"127.0.0.1:$2\""
    cat >"$C_RELOAD" <<EOF
listen: [$listen]
pools:
  - name: api
    regions:
      - name: eu
        url: "$1"
        state: up
EOF
}

# wait_location PORT WANT SECONDS: polls until a GET's Location is WANT
wait_location() {
    local i n got
    n=$(awk -v t="$(scale "$3")" 'BEGIN { printf "%d\n", t / 0.1 + 1 }')
    for ((i = 0; i < n; i++)); do
        got=$(curl -s -o /dev/null -w '%{redirect_url}' --max-time "$(scale 2)" "http://127.0.0.1:$1/r")
        [ "$got" = "$2" ] && return 0
        sleep 0.1
    done
    why "Location '$got' after ${3}s, want '$2'"
}

C_RELOAD=$TEST_TMP/reload.yaml
reload_conf "http://127.0.0.1:$R1"
if start_detourd reload "$C_RELOAD" "$P_RELOAD"; then
    DAEMON_PID[reload]=$LAST_PID
fi

t_reload_url() {
    local pid=${DAEMON_PID[reload]:-} o
    [ -n "$pid" ] || why "the reload daemon did not start" || return 1
    wait_location "$P_RELOAD" "http://127.0.0.1:$R1/r" 2 || return 1
    o=$(tmpf reloadka)
    # a keep-alive connection from before the reload is served after it: its
    # first request is answered before the SIGHUP, its second after the
    # reload took effect
    raw_bg "$o" "$P_RELOAD" --timeout 5 'GET /ka1 HTTP/1.1\r\nHost: a\r\n\r\n' \
        @responses:1 "@ready:$o.sent" "@wait:$o.go" \
        'GET /ka2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    local cpid=$RAW_PID
    wait_file "$o.sent" 20 "$cpid" || why "the client's first request was not answered" || return 1
    reload_conf "http://127.0.0.1:$R2/v2"
    reload_daemon "$pid" "$(daemon_log reload)" || why "no reload outcome logged" || return 1
    wait_location "$P_RELOAD" "http://127.0.0.1:$R2/v2/r" 10 || return 1
    : >"$o.go"
    raw_wait "$o" "$cpid"
    expect_eq "answers on a connection opened before the reload" "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "http://127.0.0.1:$R1/ka1" || return 1
    pid_alive "$pid" || why "detourd died"
}
t "SIGHUP: a changed region url is used; an open connection survives the reload" t_reload_url

t_reload_bad() {
    local pid=${DAEMON_PID[reload]:-}
    [ -n "$pid" ] || why "the reload daemon did not start" || return 1
    printf 'listen: ["127.0.0.1:%s"]\npools:\n  - name: api\n    regions:\n      - name: eu\n        url: "ftp://x"\n' \
        "$P_RELOAD" >"$C_RELOAD"
    reload_daemon "$pid" "$(daemon_log reload)" || why "no reload outcome logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 0 || return 1
    grep -q "$C_RELOAD:6:[0-9]*: " "$(daemon_log reload)" ||
        why "no '$C_RELOAD:6:COL: ...' error logged: $(tail -5 "$(daemon_log reload)")" || return 1
    pid_alive "$pid" || why "detourd died" || return 1
    wait_location "$P_RELOAD" "http://127.0.0.1:$R2/v2/r" 1
}
t "SIGHUP with a broken config: FILE:LINE:COL logged, the old config keeps serving" t_reload_bad

t_reload_listeners() {
    local pid=${DAEMON_PID[reload]:-}
    [ -n "$pid" ] || why "the reload daemon did not start" || return 1
    reload_conf "http://127.0.0.1:$R3" "$P_RELOAD2"
    kill -HUP "$pid"
    wait_listen "$P_RELOAD2" "$pid" 5 || why "added listener 127.0.0.1:$P_RELOAD2 not opened" || return 1
    wait_location "$P_RELOAD2" "http://127.0.0.1:$R3/r" 2 || return 1
    reload_conf "http://127.0.0.1:$R3"
    kill -HUP "$pid"
    wait_refused "$P_RELOAD2" 5 || why "removed listener 127.0.0.1:$P_RELOAD2 still accepts" || return 1
    [ "$(http_code "$P_RELOAD" /still)" = 307 ] || why "the kept listener stopped serving"
}
t "SIGHUP: an added listener opens, a removed one closes, the kept one serves" t_reload_listeners

t_reload_no_refusal() {
    local pid=${DAEMON_PID[reload]:-} codes f i
    [ -n "$pid" ] || why "the reload daemon did not start" || return 1
    f=$(tmpf reloadloop)
    for ((i = 0; i < 60; i++)); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time "$(scale 10)" "http://127.0.0.1:$P_RELOAD/loop$i"
    done >"$f" &
    local lp=$!
    SPAWNED+=("$lp")
    for ((i = 0; i < 5; i++)); do
        reload_daemon "$pid" "$(daemon_log reload)" || why "reload $i: no outcome logged"
    done
    wait_exit "$lp" 120 || why "the request loop did not end"
    codes=$(sort "$f" | uniq -c | tr -s ' ' | tr '\n' ';')
    [ "$(grep -c '^307$' "$f")" = 60 ] || why "requests during reloads: $codes (want 60 x 307)"
}
t "SIGHUP: no request fails while the config is reloaded 5 times" t_reload_no_refusal

t_sigusr1() {
    local pid=${DAEMON_PID[reload]:-}
    [ -n "$pid" ] || why "the reload daemon did not start" || return 1
    kill -USR1 "$pid"
    wait_log "$(daemon_log reload)" 'SIGUSR1: no access log configured' 20 ||
        why "SIGUSR1 was not handled: $(tail -n 3 "$(daemon_log reload)")" || return 1
    pid_alive "$pid" || why "detourd died on SIGUSR1" || return 1
    [ "$(http_code "$P_RELOAD" /usr1)" = 307 ] || why "not serving after SIGUSR1"
}
t "SIGUSR1 does not stop the daemon" t_sigusr1

t_sigint() {
    start_detourd term3 "$C_TERM3" "$P_TERM3" || why "did not start" || return 1
    local pid=$LAST_PID
    [ "$(http_code "$P_TERM3" /before)" = 307 ] || why "not serving before SIGINT" || return 1
    kill -INT "$pid"
    wait_exit "$pid" 10 || { stop_pid "$pid"; why "did not exit on SIGINT"; return 1; }
    expect_eq "exit status" "$LAST_RC" 0
}
t "SIGINT: exit 0" t_sigint

# ======================================================= the end ====

t_all_exit0() {
    local name pid bad=""
    for name in main short lim route nodef choice conns reload; do
        pid=${DAEMON_PID[$name]:-}
        [ -n "$pid" ] || { bad+=" $name(never started)"; continue; }
        pid_alive "$pid" || { bad+=" $name(died earlier)"; continue; }
        stop_pid "$pid" 15
        [ "$LAST_RC" = 0 ] || bad+=" $name(exit $LAST_RC)"
    done
    [ -z "$bad" ] || why "daemons that did not exit 0 on SIGTERM:$bad"
}
t "every daemon still runs and exits 0 on SIGTERM" t_all_exit0

t "no sanitizer report in any daemon's log" t_no_sanitizer_reports

diag "run time: $((($(now_ms) - T_START) / 1000))s"
done_testing
[ "$TAP_FAILED" -eq 0 ]
