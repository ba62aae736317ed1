#!/bin/bash
# Integration tests of HTTPS listeners: config validation (-t, including
# blocks with which no handshake can succeed), redirects, keep-alive,
# pipelining and bodies over TLS, SNI (exact, wildcard, unknown, ECDSA or
# RSA by the client's signature algorithms), protocols, ALPN, cipher choice
# (the client's order, DHE), close_notify on every clean close, HSTS, plain
# HTTP, garbage and stalled handshakes and how failures are logged
# (rate-limited), session resumption (tickets, one per handshake, shared
# ticket_keys, across reloads), certificate renewal by reload, and the TLS
# metrics and /status listeners. Real clients only: curl, openssl s_client,
# Python's ssl. Certificates come from a throwaway CA made with openssl in
# the temp dir. TAP on stdout; 127.0.0.1 only.
#
# Run by `make check`, or by hand: DETOURD=_build/detourd tests/integration/tls.sh

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}

for tool in curl python3 awk openssl timeout; do
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

T_START=$(now_ms)
RUN_OUT=$TEST_TMP/run.out
RUN_ERR=$TEST_TMP/run.err

# ------------------------------------------------------ certificates ----

# A throwaway CA and its leaves, made with `openssl ca` so that not_before
# and not_after can be set exactly (an expired leaf, one that expires in 5
# days). Every leaf has its own serial: a test tells the certificate a
# client got by its serial.
PKI=$TEST_TMP/pki
CA=$PKI/ca.pem

# pki_init: the CA (ECDSA P-256) and the database `openssl ca` needs
pki_init() {
    mkdir -p "$PKI/issued" || return 1
    : >"$PKI/index.txt"
    cat >"$PKI/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
database = $PKI/index.txt
new_certs_dir = $PKI/issued
serial = $PKI/serial
default_md = sha256
policy = any_cn
unique_subject = no
[any_cn]
commonName = supplied
EOF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$PKI/ca.key" -out "$CA" -subj "/CN=detourd test CA" -days 365 \
        >"$PKI/ca.log" 2>&1 || { cat "$PKI/ca.log"; return 1; }
}

# utc +OFFSET: a `date -d` offset as the time format of `openssl ca`
utc() { date -u -d "$1" +%Y%m%d%H%M%SZ; }

# leaf NAME ec|rsa SERIAL START END DNS,...: NAME.pem and NAME.key in $PKI,
# signed by the CA, for the DNS names (the first is also the CN)
leaf() {
    local n=$1 ka san
    case $2 in
    ec) ka=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) ka=(-newkey rsa:2048) ;;
    esac
    openssl req -new "${ka[@]}" -nodes -keyout "$PKI/$n.key" -subj "/CN=${6%%,*}" \
        -out "$PKI/$n.csr" >"$PKI/$n.log" 2>&1 || { cat "$PKI/$n.log"; return 1; }
    echo "$3" >"$PKI/serial"
    san=$(printf '%s' "$6" | sed 's/\([^,]*\)/DNS:\1/g')
    printf 'subjectAltName=%s\n' "$san" >"$PKI/$n.ext"
    openssl ca -batch -config "$PKI/ca.cnf" -cert "$CA" -keyfile "$PKI/ca.key" \
        -in "$PKI/$n.csr" -out "$PKI/$n.pem" -notext -startdate "$4" -enddate "$5" \
        -extfile "$PKI/$n.ext" >>"$PKI/$n.log" 2>&1 || { cat "$PKI/$n.log"; return 1; }
}

# not_after FILE: a certificate's not_after as RFC 3339 (UTC) / as epoch
not_after() {
    date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ
}
not_after_epoch() {
    date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s
}

make_pki() {
    local start
    start=$(utc '-1 hour')
    pki_init &&
        leaf ec ec EC "$start" "$(utc '+30 days')" 'a.test,*.w.test' &&
        leaf rsa rsa A5 "$start" "$(utc '+30 days')" 'a.test,*.w.test' &&
        leaf b ec B0 "$start" "$(utc '+30 days')" 'b.test' &&
        leaf expired ec E0 20200101000000Z 20210101000000Z 'expired.test' &&
        leaf soon ec 50 "$start" "$(utc '+5 days 1 hour')" 'soon.test' &&
        leaf r1 ec 01 "$start" "$(utc '+20 days')" 'a.test' &&
        leaf r2 ec 02 "$start" "$(utc '+40 days')" 'a.test' &&
        leaf r3 ec 03 "$start" "$(utc '+50 days')" 'a.test' &&
        leaf r4 ec 04 "$start" "$(utc '+60 days')" 'a.test' || return 1
    printf 'this is not PEM\n' >"$PKI/notpem.txt"
    head -c 160 /dev/urandom >"$PKI/ticket.keys"
    head -c 81 /dev/urandom >"$PKI/bad81.keys"
    : >"$PKI/empty.keys"
    # the reload daemon's files start as r1, and are replaced by tests
    cp "$PKI/r1.pem" "$PKI/rel.pem" && cp "$PKI/r1.key" "$PKI/rel.key" || return 1
    # the first half of a real ClientHello: a handshake that stalls midway
    half_hello "$PKI/half_hello.bin"
}

# half_hello FILE: the first half of the ClientHello Python's ssl sends
half_hello() {
    "$PYTHON" - "$1" <<'PY'
import ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = ssl.MemoryBIO()
obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="a.test")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
assert hello[:1] == b"\x16" and len(hello) > 100, hello[:8]
with open(sys.argv[1], "wb") as f:
    f.write(hello[:len(hello) // 2])
PY
}

if ! make_pki; then
    echo "Bail out! cannot make the test certificates with openssl"
    exit 1
fi

# ------------------------------------------------------------- ports ----

alloc_ports 13 || {
    echo "Bail out! cannot find free loopback ports"
    exit 1
}
P_H=${PORTS[0]} P_T=${PORTS[1]} P_REJ=${PORTS[2]} P_13=${PORTS[3]} P_NOTIX=${PORTS[4]}
P_K1=${PORTS[5]} ADM=${PORTS[6]} P_K2=${PORTS[7]} P_R=${PORTS[8]} ADM_R=${PORTS[9]}
P_LOG=${PORTS[10]} P_BURST=${PORTS[11]} P_STOP=${PORTS[12]}
L_T=127.0.0.1:$P_T # the main TLS listener's address, as its metrics label it
REGION=https://eu.example
HT=$(scale 2) # the main daemon's header_timeout, seconds
PEER_IDLE=$(scale 3) # the peer daemon's idle_timeout, seconds

# ------------------------------------------------------------ configs ----

POOLS="pools:
  - name: api
    regions:
      - name: eu
        url: \"$REGION\"
        state: up
        check: {type: none}"

# tls_ec: one certificate, the ECDSA one for a.test and *.w.test
TLS_EC="certificates: [{cert: \"$PKI/ec.pem\", key: \"$PKI/ec.key\"}]"

# The main daemon (two workers: one SNI table, one ticket key, counters
# summed): a plain listener and TLS listeners that differ in one
# setting each. On $P_T the first certificate (b.test) is the default, and
# every answer carries HSTS. $P_LOG and $P_BURST take failed handshakes
# whose log lines are counted.
HSTS="max-age=31536000; includeSubDomains"
C_MAIN=$(write_config main.yaml <<EOF
listen:
  - "127.0.0.1:$P_H"
  - address: "127.0.0.1:$P_T"
    tls:
      hsts: "$HSTS"
      certificates:
        - cert: "$PKI/b.pem"
          key: "$PKI/b.key"
        - cert: "$PKI/ec.pem"
          key: "$PKI/ec.key"
        - cert: "$PKI/rsa.pem"
          key: "$PKI/rsa.key"
        - cert: "$PKI/soon.pem"
          key: "$PKI/soon.key"
  - address: "127.0.0.1:$P_REJ"
    tls:
      $TLS_EC
      unknown_sni: reject
  - address: "127.0.0.1:$P_13"
    tls:
      $TLS_EC
      protocols: [TLSv1.3]
  - address: "127.0.0.1:$P_NOTIX"
    tls:
      $TLS_EC
      session_tickets: false
  - address: "127.0.0.1:$P_K1"
    tls:
      $TLS_EC
      ticket_keys: "$PKI/ticket.keys"
  - address: "127.0.0.1:$P_LOG"
    tls:
      $TLS_EC
  - address: "127.0.0.1:$P_BURST"
    tls:
      $TLS_EC
admin:
  listen: "127.0.0.1:$ADM"
workers: 2
limits: {header_timeout: ${HT}s, idle_timeout: 30s, max_body_discard: 64k}
$POOLS
EOF
)

# A second instance sharing the ticket keys of $P_K1
C_PEER=$(write_config peer.yaml <<EOF
listen:
  - address: "127.0.0.1:$P_K2"
    tls:
      $TLS_EC
      ticket_keys: "$PKI/ticket.keys"
limits: {idle_timeout: ${PEER_IDLE}s}
$POOLS
EOF
)

# The daemon whose certificate files are replaced and reloaded
# rel_config [LINE]...: its text, with LINEs added to the tls block
rel_config() {
    local l
    cat <<EOF
listen:
  - address: "127.0.0.1:$P_R"
    tls:
      certificates:
        - cert: "$PKI/rel.pem"
          key: "$PKI/rel.key"
EOF
    for l in "$@"; do printf '      %s\n' "$l"; done
    cat <<EOF
admin:
  listen: "127.0.0.1:$ADM_R"
limits: {idle_timeout: 60s}
$POOLS
EOF
}
C_REL=$(rel_config | write_config rel.yaml)

# The daemon stopped with SIGTERM while a TLS connection idles
C_STOP=$(write_config stop.yaml <<EOF
listen:
  - address: "127.0.0.1:$P_STOP"
    tls:
      $TLS_EC
limits: {idle_timeout: 60s}
$POOLS
EOF
)

# ------------------------------------------------------------ clients ----

# sc OUT PORT [s_client args]: openssl s_client's handshake, then one request
# (GET /sc, Connection: close) read until the daemon closes; stdout and
# stderr to OUT, SC_RC its exit status
sc() {
    local out=$1 port=$2
    shift 2
    printf 'GET /sc HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n' |
        timeout "$(scale 10)" openssl s_client -connect "127.0.0.1:$port" -CAfile "$CA" \
            -ign_eof "$@" >"$out" 2>&1
    SC_RC=$?
}
# sc_serial OUT: serial of the certificate s_client got ("" if none)
sc_serial() { openssl x509 -noout -serial <"$1" 2>/dev/null | sed 's/^serial=//'; }
# sc_session OUT: New or Reused
sc_session() { sed -n 's/^\(New\|Reused\), .*/\1/p' "$1" | head -n 1; }
# sc_answered OUT: the request got the redirect
sc_answered() { grep -q "^HTTP/1.1 307 " "$1"; }
# sc_diag OUT: what s_client printed, less the certificate
sc_diag() {
    why "openssl s_client (exit $SC_RC) printed:"
    why "$(grep -vE '^-----|^[A-Za-z0-9+/=]{40,}$|^ {4}' "$1" | head -n 30)"
    return 1
}

# served PORT NAME|- [s_client args]: the serial of the certificate a
# handshake with SNI NAME ("-": without SNI) gets; "" if it failed
served() {
    local port=$1 name=$2 o sni
    shift 2
    o=$(tmpf sc)
    if [ "$name" = - ]; then sni=(-noservername); else sni=(-servername "$name"); fi
    sc "$o" "$port" "${sni[@]}" "$@"
    sc_answered "$o" && sc_serial "$o"
}

# expect_cert WHAT PORT NAME|- SERIAL [s_client args]
expect_cert() {
    local what=$1 port=$2 name=$3 want=$4 got
    shift 4
    got=$(served "$port" "$name" "$@")
    [ "$got" = "$want" ] || why "$what: got the certificate with serial '$got', want '$want'"
}

# hcurl NAME PORT PATH [curl args]: curl over https://NAME:PORT (NAME
# resolved to 127.0.0.1), verified against the test CA; prints -w's output
hcurl() {
    local name=$1 port=$2 path=$3
    shift 3
    curl -sS --max-time "$(scale 10)" --cacert "$CA" --resolve "$name:$port:127.0.0.1" \
        -o /dev/null "$@" "https://$name:$port$path" 2>&1
}

# traw OUT PORT [send options] PART...: raw exchange over TLS (SNI a.test,
# verified against the test CA), as lib.sh's raw
traw() {
    local out=$1 port=$2
    shift 2
    raw "$out" "$port" --tls a.test --cafile "$CA" --tls-info "$out.tls" "$@"
}

# tls_end PORT REQUEST [READY]: a TLS client (Python's ssl, SNI a.test, ALPN
# http/1.1) that sends REQUEST (\r\n escapes), reads until the connection
# ends and prints how it ended and the redirects it got: "close_notify N"
# (a clean TLS end), "eof N" (the socket closed without close_notify: ssl's
# SSLEOFError with suppress_ragged_eofs off, OpenSSL's "unexpected eof"),
# "reset N" or "open N" (still open after TLS_END_WAIT seconds, scaled,
# default 20). READY is created once the first answer is complete.
tls_end() {
    "$PYTHON" - "$@" <<'PY'
import codecs, os, socket, ssl, sys, time
port, req = int(sys.argv[1]), codecs.escape_decode(sys.argv[2].encode())[0]
ready = sys.argv[3] if len(sys.argv) > 3 else None
limit = float(os.environ.get("TLS_END_WAIT") or 20) * float(os.environ.get("TIMEOUT_SCALE") or 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
raw = socket.create_connection(("127.0.0.1", port), timeout=limit)
s = ctx.wrap_socket(raw, server_hostname="a.test", suppress_ragged_eofs=False)
s.sendall(req)
buf, how, end = b"", "open", time.monotonic() + limit
while time.monotonic() < end:
    s.settimeout(max(0.05, end - time.monotonic()))
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    except ssl.SSLEOFError:
        how = "eof"
        break
    except OSError:
        how = "reset"
        break
    if not d:
        how = "close_notify"
        break
    buf += d
    if ready and b"\r\n\r\n" in buf and not os.path.exists(ready):
        open(ready, "w").close()
print(how, buf.count(b"HTTP/1.1 307 "))
PY
}

# get_session PORT FILE [s_client args]: a full handshake saving its session
# to FILE
get_session() {
    local port=$1 f=$2 o
    shift 2
    o=$(tmpf sess)
    rm -f "$f"
    sc "$o" "$port" -servername a.test -sess_out "$f" "$@"
    sc_answered "$o" || sc_diag "$o" || return 1
    expect_eq "the first handshake" "$(sc_session "$o")" New || return 1
    [ -s "$f" ] || why "s_client saved no session (no ticket received?)"
}
# resumed PORT FILE [s_client args]: prints New or Reused ("" if it failed)
resumed() {
    local port=$1 f=$2 o
    shift 2
    o=$(tmpf sess)
    sc "$o" "$port" -servername a.test -sess_in "$f" "$@"
    sc_answered "$o" && sc_session "$o"
}

# ------------------------------------------------------------ metrics ----

hs() { mnum "$ADM" detourd_tls_handshakes_total "listener=${2:-$L_T}" "result=$1"; }
fails() { mnum "$ADM" detourd_tls_handshake_failures_total "listener=${2:-$L_T}" "reason=$1"; }
_is() { [ "$("${@:2}")" = "$1" ]; }
# wait_eq SECONDS WANT CMD...: polls until CMD prints WANT
wait_eq() {
    local secs=$1 want=$2
    shift 2
    wait_until "$secs" _is "$want" "$@" || why "waited ${secs}s for '$*' to be $want, got '$("$@")'"
}

# at FILE NEEDLE: "LINE:COL" of NEEDLE's first occurrence in FILE
at() { awk -v s="$2" '{ i = index($0, s); if (i) { print NR ":" i; exit } }' "$1"; }

# ====================================================== validation ====

t_check_valid() {
    run_detourd -t -c "$C_MAIN"
    expect_eq "exit status" "$LAST_RC" 0 || why "$(cat "$RUN_ERR")" || return 1
    expect_eq "stdout" "$(cat "$RUN_OUT")" "$C_MAIN: configuration OK" || return 1
    grep -qE "listener $L_T: certificate $PKI/soon.pem expires in 5 days \(not after $(not_after "$PKI/soon.pem")\)" "$RUN_ERR" ||
        why "no warning about soon.pem expiring in 5 days: $(cat "$RUN_ERR")"
}
t "-t accepts a config with TLS listeners (and warns of a certificate expiring in 5 days)" t_check_valid

t_check_expired() {
    local c
    c=$(write_config expired.yaml <<EOF
listen:
  - address: "127.0.0.1:$P_T"
    tls:
      certificates:
        - {cert: "$PKI/expired.pem", key: "$PKI/expired.key"}
$POOLS
EOF
)
    run_detourd -t -c "$c"
    expect_eq "exit status" "$LAST_RC" 0 || why "$(cat "$RUN_ERR")" || return 1
    grep -qF "listener $L_T: certificate $PKI/expired.pem has expired (not after 2021-01-01T00:00:00Z)" "$RUN_ERR" ||
        why "no 'has expired' warning: $(cat "$RUN_ERR")"
}
t "-t accepts an expired certificate with a warning" t_check_expired

t_check_errors() {
    local c p n=0 want=()
    c=$TEST_TMP/bad.yaml
    {
        echo "listen:"
        # listen[0..2]: certificate files
        for p in "$PKI/missing.pem:$PKI/ec.key" "$PKI/notpem.txt:$PKI/ec.key" "$PKI/ec.pem:$PKI/b.key"; do
            n=$((n + 1))
            printf '  - address: "127.0.0.1:%d"\n    tls:\n      certificates:\n' $((10000 + n))
            printf '        - cert: "%s"\n          key: "%s"\n' "${p%%:*}" "${p#*:}"
        done
        # listen[3..8]: one bad setting each
        for p in "protocols: [TLSv1.2, TLSv1.1]" "protocols: [SSLv3]" 'ciphers: "NO-SUCH-CIPHER"' \
            'ciphersuites: "TLS_NO_SUCH_SUITE"' "ticket_keys: \"$PKI/bad81.keys\"" \
            "ticket_keys: \"$PKI/empty.keys\""; do
            n=$((n + 1))
            printf '  - address: "127.0.0.1:%d"\n    tls:\n      %s\n      %s\n' $((10000 + n)) "$TLS_EC" "$p"
        done
        echo "$POOLS"
    } >"$c"
    run_detourd -t -c "$c"
    expect_eq "exit status" "$LAST_RC" 1 || why "$(cat "$RUN_OUT" "$RUN_ERR")" || return 1
    [ ! -s "$RUN_OUT" ] || why "stdout not empty: $(cat "$RUN_OUT")" || return 1
    # "WHAT|ERE" per error, the ERE anchored at the start of a line: the
    # position of the offending value, then the setting's name (its path
    # from listen[N] may be written out)
    local pre="(listen\\[[0-9]+\\]\\.)?(tls\\.)?"
    want=(
        "missing cert file|^$c:$(at "$c" "\"$PKI/missing.pem\""): ${pre}certificates\[0\](\.cert)?: .*[Nn]o such file"
        "cert not PEM|^$c:$(at "$c" "\"$PKI/notpem.txt\""): ${pre}certificates\[0\](\.cert)?: "
        "key not matching its cert|^$c:$(at "$c" "\"$PKI/b.key\""): ${pre}certificates\[0\](\.key)?: "
        "protocol TLSv1.1|^$c:$(at "$c" "TLSv1.1"): ${pre}protocols(\[1\])?: "
        "protocol SSLv3|^$c:$(at "$c" "SSLv3"): ${pre}protocols(\[0\])?: "
        "bad cipher list|^$c:$(at "$c" '"NO-SUCH-CIPHER"'): ${pre}ciphers: "
        "bad ciphersuites|^$c:$(at "$c" '"TLS_NO_SUCH_SUITE"'): ${pre}ciphersuites: "
        "ticket_keys of 81 bytes|^$c:$(at "$c" "\"$PKI/bad81.keys\""): ${pre}ticket_keys: "
        "empty ticket_keys|^$c:$(at "$c" "\"$PKI/empty.keys\""): ${pre}ticket_keys: "
    )
    local w bad=0
    for w in "${want[@]}"; do
        grep -qE -- "${w#*|}" "$RUN_ERR" || { why "${w%%|*}: no line matching /${w#*|}/"; bad=1; }
    done
    [ "$bad" = 0 ] || why "stderr was:" "$(cat "$RUN_ERR")"
}
t "-t reports every bad TLS setting at its FILE:LINE:COL in one run, exit 1" t_check_errors

# at_line FILE LINE NEEDLE: "LINE:COL" of NEEDLE on line LINE of FILE
at_line() { awk -v l="$2" -v s="$3" 'NR == l { print NR ":" index($0, s); exit }' "$1"; }

# A FIFO or a device where a certificate, a key or ticket keys belong: -t
# names each at once (never waits for a writer, never reads a device) and
# fails.
t_check_not_regular() {
    local fifo=$TEST_TMP/tls.fifo c rc
    mkfifo "$fifo" || why "mkfifo failed" || return 1
    c=$(write_config fifo.yaml <<EOF
listen:
  - address: "127.0.0.1:$P_T"
    tls:
      certificates:
        - {cert: "$fifo", key: "$PKI/ec.key"}
        - {cert: "$PKI/ec.pem", key: "$fifo"}
        - {cert: "/dev/zero", key: "$PKI/ec.key"}
      ticket_keys: "$fifo"
$POOLS
EOF
)
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    timeout "$(scale 10)" $DETOURD_WRAPPER "$DETOURD" -t -c "$c" </dev/null >"$TEST_TMP/nr.out" 2>"$TEST_TMP/nr.err"
    rc=$?
    rm -f "$fifo"
    expect_eq "exit status (124: it waited on the FIFO)" "$rc" 1 || return 1
    local want
    want="$c:$(at_line "$c" 5 "\"$fifo"): tls.certificates[0]: $fifo is a FIFO, not a regular file
$c:$(at_line "$c" 6 "\"$fifo"): tls.certificates[1]: $fifo is a FIFO, not a regular file
$c:$(at_line "$c" 7 '"/dev/zero'): tls.certificates[2]: /dev/zero is a character device, not a regular file
$c:$(at_line "$c" 8 "\"$fifo"): tls.ticket_keys: $fifo is a FIFO, not a regular file"
    expect_eq "-t errors" "$(cat "$TEST_TMP/nr.err")" "$want"
}
t "a FIFO or a device as a certificate, key or ticket_keys: -t names it at once, exit 1" t_check_not_regular

# blocks with which no handshake can succeed: a TLS 1.2 list of suites
# without authentication (refused at any security level above 0), and
# only ECDSA suites for an RSA certificate
t_check_no_handshake() {
    local c
    c=$(write_config nohs.yaml <<EOF
listen:
  - address: "127.0.0.1:10001"
    tls:
      certificates: [{cert: "$PKI/ec.pem", key: "$PKI/ec.key"}]
      protocols: [TLSv1.2]
      ciphers: "aNULL:eNULL"
  - address: "127.0.0.1:10002"
    tls:
      certificates: [{cert: "$PKI/rsa.pem", key: "$PKI/rsa.key"}]
      protocols: [TLSv1.2]
      ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
  - address: "127.0.0.1:10003"
    tls:
      certificates: [{cert: "$PKI/rsa.pem", key: "$PKI/rsa.key"}, {cert: "$PKI/ec.pem", key: "$PKI/ec.key"}]
      protocols: [TLSv1.2]
      ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256"
  - address: "127.0.0.1:10004"
    tls:
      certificates: [{cert: "$PKI/rsa.pem", key: "$PKI/rsa.key"}]
      ciphers: "aNULL:eNULL"
$POOLS
EOF
)
    run_detourd -t -c "$c"
    expect_eq "exit status" "$LAST_RC" 1 || why "$(cat "$RUN_OUT" "$RUN_ERR")" || return 1
    local w bad=0 want=(
        "aNULL:eNULL under TLSv1.2|^$c:$(at "$c" '"aNULL:eNULL"'): (listen\[0\]\.)?tls\.ciphers: no TLS handshake can succeed .*TLSv1\.2.*ECDSA.*: no shared cipher"
        "ECDSA suites for an RSA certificate|^$c:$(at "$c" '"ECDHE-ECDSA-AES128-GCM-SHA256:'): (listen\[1\]\.)?tls\.ciphers: no TLS handshake can succeed .*RSA.*: no shared cipher"
    )
    for w in "${want[@]}"; do
        grep -qE -- "${w#*|}" "$RUN_ERR" || { why "${w%%|*}: no line matching /${w#*|}/"; bad=1; }
    done
    # an ECDSA certificate beside the RSA one, or TLS 1.3 allowed: fine
    expect_eq "error lines" "$(grep -c 'no TLS handshake can succeed' "$RUN_ERR")" 2 || bad=1
    [ "$bad" = 0 ] || why "stderr was:" "$(cat "$RUN_ERR")"
}
t "-t rejects a TLS block with which no handshake can succeed, at its ciphers key" t_check_no_handshake

t_check_hsts() {
    local c
    c=$(write_config hsts.yaml <<EOF
listen:
  - address: "127.0.0.1:10001"
    tls:
      $TLS_EC
      hsts: "includeSubDomains"
  - address: "127.0.0.1:10002"
    tls:
      $TLS_EC
      hsts: "max-age=1\r\nX-Evil: 1"
  - address: "127.0.0.1:10003"
    tls:
      $TLS_EC
      hsts: "max-age=soon"
$POOLS
EOF
)
    run_detourd -t -c "$c"
    expect_eq "exit status" "$LAST_RC" 1 || why "$(cat "$RUN_OUT" "$RUN_ERR")" || return 1
    local w bad=0 want=(
        "no max-age|^$c:$(at "$c" '"includeSubDomains"'): (listen\[0\]\.)?tls\.hsts: .*no max-age"
        "control characters|^$c:$(at "$c" '"max-age=1'): (listen\[1\]\.)?tls\.hsts: .*control character"
        "not a number|^$c:$(at "$c" '"max-age=soon"'): (listen\[2\]\.)?tls\.hsts: .*max-age that is not a number"
    )
    for w in "${want[@]}"; do
        grep -qE -- "${w#*|}" "$RUN_ERR" || { why "${w%%|*}: no line matching /${w#*|}/"; bad=1; }
    done
    [ "$bad" = 0 ] || why "stderr was:" "$(cat "$RUN_ERR")"
}
t "-t rejects an hsts value without max-age, with control characters or a bad max-age" t_check_hsts

# ============================================================ start ====

start_detourd main "$C_MAIN" "$P_T" || { echo "Bail out! detourd did not start with TLS listeners"; exit 1; }
MAIN_PID=$LAST_PID
MAIN_LOG=$(daemon_log main)
for p in "$P_H" "$P_REJ" "$P_13" "$P_NOTIX" "$P_K1" "$ADM"; do
    wait_listen "$p" "$MAIN_PID" 10 || { echo "Bail out! 127.0.0.1:$p not listening"; exit 1; }
done
PEER_PID=
start_detourd peer "$C_PEER" "$P_K2" && PEER_PID=$LAST_PID
REL_PID=
if start_detourd rel "$C_REL" "$P_R" && wait_listen "$ADM_R" "$LAST_PID" 10; then
    REL_PID=$LAST_PID
fi
REL_LOG=$(daemon_log rel)

# ========================================================= redirects ====

t_https_redirect() {
    local got plain
    got=$(hcurl a.test "$P_T" '/p?q=1' -w '%{http_code} %{redirect_url}')
    expect_eq "https answer" "$got" "307 $REGION/p?q=1" || return 1
    plain=$(curl -sS --max-time "$(scale 5)" -o /dev/null -H 'Host: a.test' \
        -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$P_H/p?q=1")
    expect_eq "the same request over plain HTTP" "$plain" "$got"
}
t "curl https://a.test/p?q=1: 307 with the Location plain HTTP gives" t_https_redirect

t_keepalive() {
    local got
    got=$(curl -sS --max-time "$(scale 10)" --cacert "$CA" --resolve "a.test:$P_T:127.0.0.1" \
        -o /dev/null -o /dev/null -w '%{http_code} %{num_connects} %{redirect_url};' \
        "https://a.test:$P_T/k1" "https://a.test:$P_T/k2?x" 2>&1)
    expect_eq "two requests (status, new connections, Location)" "$got" \
        "307 1 $REGION/k1;307 0 $REGION/k2?x;"
}
t "keep-alive: curl's two requests share one TLS connection" t_keepalive

t_pipeline_sclient() {
    local o
    o=$(tmpf pipe)
    printf 'GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nHEAD /2?h HTTP/1.1\r\nHost: a.test\r\n\r\nGET /3 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n' |
        timeout "$(scale 10)" openssl s_client -quiet -connect "127.0.0.1:$P_T" \
            -servername a.test -CAfile "$CA" >"$o" 2>"$o.err"
    RAW_RC=$?
    "$PYTHON" -c "$IT_PY" parse "$o" --head 2 >"$o.p"
    expect_eq "answers" "$(r_count "$o")" 3 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$REGION/1" || return 1
    expect_response "$o" 2 307 "$REGION/2?h" || return 1
    expect_response "$o" 3 307 "$REGION/3" || return 1
    expect_eq "bytes after the last answer" "$(r_trailing "$o")" 0
}
t "pipelining: three requests in one write (openssl s_client), answered in order" t_pipeline_sclient

t_pipeline_python() {
    local o
    o=$(tmpf pipe)
    traw "$o" "$P_T" 'GET /a HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b HTTP/1.1\r\nHost: a.test\r\n\r\nGET /c HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_eq "answers" "$(r_count "$o")" 3 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$REGION/a" || return 1
    expect_response "$o" 3 307 "$REGION/c" || return 1
    expect_closed
}
t "pipelining (Python ssl): answered in order, closed after Connection: close" t_pipeline_python

t_head() {
    local o cl
    o=$(tmpf head)
    traw "$o" "$P_T" --head 1 'HEAD /h?x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$REGION/h?x" || return 1
    cl=$(r_hdr "$o" 1 content-length)
    expect_match "Content-Length" "$cl" '^[1-9][0-9]*$' || return 1
    expect_eq "bytes after the head" "$(r_trailing "$o")" 0 || return 1
    expect_closed
}
t "HEAD over TLS: the head only" t_head

head -c 10000 /dev/urandom >"$TEST_TMP/10k.bin"
head -c 1048576 /dev/urandom >"$TEST_TMP/1m.bin"

t_body_cl() {
    local o
    o=$(tmpf bodycl)
    traw "$o" "$P_T" 'POST /b1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10000\r\n\r\n' \
        "@file:$TEST_TMP/10k.bin" 'GET /b2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_eq "answers" "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$REGION/b1" || return 1
    expect_response "$o" 2 307 "$REGION/b2" || return 1
    expect_closed
}
t "a Content-Length body is discarded and the connection reused" t_body_cl

t_body_chunked() {
    local o
    o=$(tmpf bodych)
    traw "$o" "$P_T" 'POST /c1 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n' \
        '2710\r\n' "@file:$TEST_TMP/10k.bin" '\r\n5\r\nhello\r\n0\r\n\r\n' \
        'GET /c2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_eq "answers" "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$REGION/c1" || return 1
    expect_response "$o" 2 307 "$REGION/c2" || return 1
    expect_closed
}
t "a chunked body is discarded and the connection reused" t_body_chunked

t_curl_post() {
    local got
    got=$(curl -sS --max-time "$(scale 10)" --cacert "$CA" --resolve "a.test:$P_T:127.0.0.1" \
        -o /dev/null -o /dev/null -w '%{http_code} %{num_connects};' \
        --data-binary "@$TEST_TMP/10k.bin" -H 'Transfer-Encoding: chunked' \
        "https://a.test:$P_T/d1" "https://a.test:$P_T/d2" 2>&1)
    expect_eq "two chunked POSTs by curl (status, new connections)" "$got" "307 1;307 0;"
}
t "curl: two chunked POSTs on one TLS connection" t_curl_post

t_lingering() {
    local o
    o=$(tmpf linger)
    traw "$o" "$P_T" --timeout 10 \
        'POST /big HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1048576\r\n\r\n' "@file:$TEST_TMP/1m.bin"
    expect_eq "answers" "$(r_count "$o")" 1 || raw_diag "$o" || return 1
    expect_response "$o" 1 307 "$REGION/big" || return 1
    expect_eq "Connection" "$(r_hdr "$o" 1 connection)" close || return 1
    [ "$RAW_RC" = 0 ] || why "the connection was not closed cleanly (raw rc=$RAW_RC: 4 is a reset)" || raw_diag "$o"
}
t "a body over max_body_discard: the redirect, then a lingering close (no reset)" t_lingering

# ====================================================== close_notify ====

# RFC 8446 6.1: every clean close sends close_notify; a client that reads
# to the end then sees a clean end, not a truncation ("unexpected eof")
t_close_notify_close() {
    local o got
    got=$(tls_end "$P_T" 'GET /cn HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n')
    expect_eq "Connection: close (how it ended, answers)" "$got" "close_notify 1" || return 1
    got=$(tls_end "$P_T" 'GET /cn10 HTTP/1.0\r\n\r\n')
    expect_eq "HTTP/1.0 (how it ended, answers)" "$got" "close_notify 1" || return 1
    o=$(tmpf cn)
    sc "$o" "$P_T" -servername a.test -msg
    sc_answered "$o" || sc_diag "$o" || return 1
    grep -q '^<<< TLS 1.3, Alert \[length 0002\], warning close_notify' "$o" ||
        why "openssl s_client saw no close_notify" || sc_diag "$o" || return 1
    ! grep -qi 'unexpected eof' "$o" || why "openssl s_client reports an unexpected eof" || sc_diag "$o"
}
t "close_notify after Connection: close and after an HTTP/1.0 answer (Python ssl, openssl s_client)" t_close_notify_close

t_close_notify_idle() {
    local got
    [ -n "$PEER_PID" ] || why "the peer daemon did not start" || return 1
    got=$(TLS_END_WAIT=$((3 * PEER_IDLE + 10)) tls_end "$P_K2" 'GET /idle HTTP/1.1\r\nHost: a.test\r\n\r\n')
    expect_eq "idle_timeout ${PEER_IDLE}s (how it ended, answers)" "$got" "close_notify 1"
}
t "close_notify at the keep-alive idle timeout" t_close_notify_idle

# ================================================================ HSTS ====

t_hsts() {
    local o
    o=$(tmpf hsts)
    traw "$o" "$P_T" 'GET /h1 HTTP/1.1\r\nHost: a.test\r\n\r\n' \
        'GET /bad HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n'
    expect_response "$o" 1 307 "$REGION/h1" || return 1
    expect_eq "307: Strict-Transport-Security" "$(r_hdr "$o" 1 strict-transport-security)" "$HSTS" || return 1
    expect_eq "307: Strict-Transport-Security fields" "$(r_hdr_count "$o" 1 strict-transport-security)" 1 || return 1
    expect_response "$o" 2 400 || return 1
    expect_eq "400: Strict-Transport-Security" "$(r_hdr "$o" 2 strict-transport-security)" "$HSTS" || return 1
    traw "$o" "$P_T" --head 1 'HEAD /h2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$REGION/h2" || return 1
    expect_eq "HEAD: Strict-Transport-Security" "$(r_hdr "$o" 1 strict-transport-security)" "$HSTS" || return 1
    traw "$o" "$P_T" 'GET /v HTTP/1.2\r\nHost: a.test\r\n\r\n'
    expect_response "$o" 1 505 || return 1
    expect_eq "505: Strict-Transport-Security" "$(r_hdr "$o" 1 strict-transport-security)" "$HSTS"
}
t "hsts: Strict-Transport-Security on every answer of the TLS listener (307, HEAD, 400, 505)" t_hsts

t_hsts_not_plain() {
    local o
    o=$(tmpf nohsts)
    raw "$o" "$P_H" 'GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n' 'GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'
    expect_response "$o" 1 307 "$REGION/p" || return 1
    expect_response "$o" 2 400 || return 1
    expect_eq "plain listener: Strict-Transport-Security fields" \
        "$(($(r_hdr_count "$o" 1 strict-transport-security) + $(r_hdr_count "$o" 2 strict-transport-security)))" 0 || return 1
    raw "$o" "$P_T" 'GET /plain HTTP/1.1\r\nHost: a.test\r\n\r\n'
    expect_response "$o" 1 400 || return 1
    expect_eq "plain HTTP on the TLS port: Strict-Transport-Security fields" \
        "$(r_hdr_count "$o" 1 strict-transport-security)" 0 || return 1
    traw "$o" "$P_13" 'GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    expect_response "$o" 1 307 "$REGION/x" || return 1
    expect_eq "a TLS listener without hsts: Strict-Transport-Security fields" \
        "$(r_hdr_count "$o" 1 strict-transport-security)" 0
}
t "hsts: never on the plain listener, the plain-text 400 of a TLS port, or a TLS listener without it" t_hsts_not_plain

# ================================================================ SNI ====

t_sni_exact() {
    local got
    got=$(hcurl a.test "$P_T" /sni -w '%{http_code}')
    expect_eq "curl (verifying a.test)" "$got" 307 || return 1
    got=$(hcurl b.test "$P_T" /sni -w '%{http_code}')
    expect_eq "curl (verifying b.test)" "$got" 307 || return 1
    expect_cert "SNI a.test" "$P_T" a.test EC || return 1
    expect_cert "SNI b.test" "$P_T" b.test B0 || return 1
    expect_cert "SNI A.Test (case)" "$P_T" A.Test EC || return 1
    expect_cert "SNI soon.test" "$P_T" soon.test 50
}
t "SNI: an exact name (any case) gets its certificate; curl verifies it" t_sni_exact

t_sni_wildcard() {
    local got
    got=$(hcurl x.w.test "$P_T" /w -w '%{http_code}')
    expect_eq "curl (verifying x.w.test)" "$got" 307 || return 1
    expect_cert "SNI x.w.test" "$P_T" x.w.test EC || return 1
    expect_cert "SNI y.x.w.test (two labels)" "$P_T" y.x.w.test B0 || return 1
    expect_cert "SNI w.test (no label)" "$P_T" w.test B0
}
t "SNI: a wildcard covers exactly one label" t_sni_wildcard

t_sni_default() {
    expect_cert "SNI nope.test" "$P_T" nope.test B0 || return 1
    expect_cert "no SNI" "$P_T" - B0
}
t "SNI: an unknown name, or none, gets the first certificate" t_sni_default

t_sni_reject() {
    local o before
    o=$(tmpf rej)
    before=$(fails unknown_sni "127.0.0.1:$P_REJ")
    sc "$o" "$P_REJ" -servername nope.test
    ! sc_answered "$o" || why "an unknown name was answered" || return 1
    grep -qi 'unrecognized.name' "$o" || why "no unrecognized_name alert" || sc_diag "$o" || return 1
    sc "$o" "$P_REJ" -noservername
    ! sc_answered "$o" || why "a handshake without SNI was answered" || return 1
    grep -qi 'unrecognized.name' "$o" || why "no SNI: no unrecognized_name alert" || sc_diag "$o" || return 1
    expect_cert "SNI a.test on the rejecting listener" "$P_REJ" a.test EC || return 1
    wait_eq 5 $((before + 2)) fails unknown_sni "127.0.0.1:$P_REJ"
}
t "unknown_sni: reject: an unknown name or none fails with unrecognized_name (counted)" t_sni_reject

RSA_ALGS=RSA-PSS+SHA256:rsa_pkcs1_sha256
t_ecdsa_rsa() {
    expect_cert "default client" "$P_T" a.test EC || return 1
    expect_cert "RSA-only signature algorithms, TLS 1.2" "$P_T" a.test A5 -sigalgs "$RSA_ALGS" -tls1_2 || return 1
    expect_cert "RSA-only signature algorithms, TLS 1.3" "$P_T" a.test A5 -sigalgs "$RSA_ALGS" -tls1_3 || return 1
    expect_cert "RSA-only signature algorithms, wildcard name" "$P_T" z.w.test A5 -sigalgs "$RSA_ALGS" || return 1
    expect_cert "ECDSA-only signature algorithms, TLS 1.2" "$P_T" a.test EC -sigalgs ECDSA+SHA256 -tls1_2
}
t "ECDSA and RSA for one name: chosen by the client's signature algorithms, ECDSA first" t_ecdsa_rsa

# ========================================================== protocols ====

t_tls13_only() {
    local o
    o=$(tmpf p13)
    sc "$o" "$P_13" -servername a.test -tls1_2
    ! sc_answered "$o" || why "TLS 1.2 was accepted by a TLSv1.3-only listener" || return 1
    sc "$o" "$P_13" -servername a.test -tls1_3
    sc_answered "$o" || why "TLS 1.3 was refused" || sc_diag "$o"
}
t "protocols: [TLSv1.3] refuses TLS 1.2" t_tls13_only

t_no_tls11() {
    local o before v
    o=$(tmpf p11)
    before=$(hs failed)
    # the client's own defaults forbid TLS 1.1: lift them so that it is the
    # daemon that refuses
    sc "$o" "$P_T" -servername a.test -tls1_1 -cipher 'DEFAULT@SECLEVEL=0'
    ! sc_answered "$o" || why "TLS 1.1 was accepted" || return 1
    if grep -q 'written 0 bytes' "$o"; then
        diag "this openssl cannot offer TLS 1.1 at all: the daemon's refusal is not checked"
    else
        wait_eq 5 $((before + 1)) hs failed || why "the daemon did not count the refused handshake" || return 1
    fi
    for v in -tls1_2 -tls1_3; do
        sc "$o" "$P_T" -servername a.test "$v"
        sc_answered "$o" || why "$v refused" || sc_diag "$o" || return 1
    done
}
t "default protocols: TLS 1.1 refused, TLS 1.2 and 1.3 accepted" t_no_tls11

t_alpn() {
    local o before
    o=$(tmpf alpn)
    sc "$o" "$P_T" -servername a.test -alpn http/1.1
    sc_answered "$o" || sc_diag "$o" || return 1
    grep -q '^ALPN protocol: http/1.1' "$o" || why "http/1.1 not selected" || sc_diag "$o" || return 1
    sc "$o" "$P_T" -servername a.test
    sc_answered "$o" || why "a client offering no ALPN was not served" || sc_diag "$o" || return 1
    grep -q '^No ALPN negotiated' "$o" || why "no ALPN offered: one was selected" || sc_diag "$o" || return 1
    sc "$o" "$P_T" -servername a.test -alpn h2,http/1.1
    grep -q '^ALPN protocol: http/1.1' "$o" || why "h2,http/1.1: http/1.1 not selected" || sc_diag "$o" || return 1
    before=$(fails protocol)
    sc "$o" "$P_T" -servername a.test -alpn h2
    ! sc_answered "$o" || why "a client offering only h2 was answered" || return 1
    grep -q 'alert no application protocol' "$o" ||
        why "offering only h2: no no_application_protocol alert" || sc_diag "$o" || return 1
    wait_eq 5 $((before + 1)) fails protocol || return 1
    wait_log "$MAIN_LOG" "TLS handshake failed: client 127\.0\.0\.1:[0-9]+ on $L_T: no application protocol" 5 ||
        why "no log line for the refused ALPN: $(grep 'handshake failed' "$MAIN_LOG" | tail -n 3)"
}
t "ALPN: http/1.1 selected when offered, none offered is served, h2 alone gets no_application_protocol" t_alpn

# ========================================================= cipher choice ====

t_client_order() {
    local o
    o=$(tmpf order)
    sc "$o" "$P_T" -servername a.test -tls1_2 -cipher 'ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384'
    sc_answered "$o" || sc_diag "$o" || return 1
    grep -q 'Cipher is ECDHE-ECDSA-CHACHA20-POLY1305' "$o" ||
        why "TLS 1.2, ChaCha20 first: got $(grep -m1 'Cipher is' "$o")" || return 1
    sc "$o" "$P_T" -servername a.test -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384
    sc_answered "$o" || sc_diag "$o" || return 1
    grep -q 'Cipher is TLS_CHACHA20_POLY1305_SHA256' "$o" ||
        why "TLS 1.3, ChaCha20 first: got $(grep -m1 'Cipher is' "$o")" || return 1
    sc "$o" "$P_T" -servername a.test -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256
    grep -q 'Cipher is TLS_AES_128_GCM_SHA256' "$o" ||
        why "TLS 1.3, AES-128 first: got $(grep -m1 'Cipher is' "$o")"
}
t "the client's order of suites is honoured: ChaCha20 first gets ChaCha20 (TLS 1.2 and 1.3)" t_client_order

t_dhe() {
    local o
    o=$(tmpf dhe)
    sc "$o" "$P_T" -servername a.test -tls1_2 -cipher DHE-RSA-AES128-GCM-SHA256
    sc_answered "$o" || why "DHE-RSA-AES128-GCM-SHA256 was refused" || sc_diag "$o" || return 1
    grep -q 'Cipher is DHE-RSA-AES128-GCM-SHA256' "$o" || why "got $(grep -m1 'Cipher is' "$o")" || return 1
    expect_eq "certificate" "$(sc_serial "$o")" A5 || return 1
    grep -qE 'Server Temp Key: DH, (2048|3072|4096) bits' "$o" ||
        why "the DH group: $(grep -m1 'Server Temp Key' "$o")"
}
t "DHE suites of the default list work (automatic ffdhe parameters, RSA certificate)" t_dhe

# ============================================ plain HTTP, garbage, stalls ====

t_plain_http() {
    local o before
    o=$(tmpf plain)
    before=$(fails plain_http)
    raw "$o" "$P_T" 'GET /plain HTTP/1.1\r\nHost: a.test\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n'
    expect_response "$o" 1 400 || return 1
    expect_eq "status line" "$(sed -n 's/^R1 statusline //p' "$o.p")" "HTTP/1.1 400 Bad Request" || return 1
    expect_eq "Content-Type" "$(r_hdr "$o" 1 content-type)" "text/plain; charset=utf-8" || return 1
    expect_eq "Connection" "$(r_hdr "$o" 1 connection)" close || return 1
    expect_eq "body" "$(r_body "$o" 1)" 'This port speaks HTTPS: use https:// for this address.\n' || return 1
    expect_closed || return 1
    wait_eq 5 $((before + 1)) fails plain_http
}
t "plain HTTP to a TLS port: the plain-text 400, then close (counted as plain_http)" t_plain_http

t_garbage() {
    local o before tbefore
    o=$(tmpf garbage)
    before=$(($(fails protocol) + $(fails other)))
    tbefore=$(fails timeout)
    # a TLS record header followed by junk, then bytes that are no record at all
    raw "$o" "$P_T" --timeout 10 '\x16\x03\x01\x00\x30garbage garbage garbage garbage garbage garbage!!'
    [ "$RAW_RC" = 0 ] || [ "$RAW_RC" = 4 ] || why "junk handshake: not closed (raw rc=$RAW_RC)" || return 1
    ! grep -q 'HTTP/' "$o" || why "junk handshake got an HTTP answer: $(cat -v "$o")" || return 1
    raw "$o" "$P_T" --timeout 10 '\x00\xff\x13\x37\x80\x01\x02\x03\xde\xad\xbe\xef\x00\x00\x00\x00'
    [ "$RAW_RC" = 0 ] || [ "$RAW_RC" = 4 ] || why "binary junk: not closed (raw rc=$RAW_RC)" || return 1
    ! grep -q 'HTTP/' "$o" || why "binary junk got an HTTP answer: $(cat -v "$o")" || return 1
    # half a ClientHello, then the client goes away
    raw "$o" "$P_T" --timeout 0.2 "@file:$PKI/half_hello.bin"
    expect_eq "aborted handshake: bytes received" "$(wc -c <"$o")" 0 || return 1
    wait_until 5 _fails_sum_is $((before + 3)) ||
        why "protocol+other failures: $(($(fails protocol) + $(fails other))), want $((before + 3))" || return 1
    # dropped for what they sent, not closed later by header_timeout (a
    # check of the daemon's own reason instead of a clock on a busy host)
    expect_eq "timeout failures" "$(fails timeout)" "$tbefore" || return 1
    expect_eq "then a normal request" "$(hcurl a.test "$P_T" /after-junk -w '%{http_code}')" 307 || return 1
    pid_alive "$MAIN_PID" || why "detourd died"
}
_fails_sum_is() { [ $(($(fails protocol) + $(fails other))) = "$1" ]; }
t "garbage instead of a ClientHello, or an aborted one: dropped, counted, the daemon serves on" t_garbage

t_silent_close_not_counted() {
    local f0 full0
    f0=$(hs failed)
    full0=$(hs full)
    can_connect "$P_T" && can_connect "$P_T" && can_connect "$P_T" || why "cannot connect" || return 1
    expect_eq "a request after them" "$(hcurl a.test "$P_T" /x -w '%{http_code}')" 307 || return 1
    wait_eq 5 $((full0 + 1)) hs full || return 1
    expect_eq "failed handshakes after 3 connections closed before a byte" "$(hs failed)" "$f0"
}
t "a connection closed before its first byte is not counted as a failed handshake" t_silent_close_not_counted

# stall OUT PART...: a raw client (no TLS) that sends PART and waits for the
# daemon to close; in the background, "RC MS" to OUT.res at its end
stall() {
    local out=$1
    shift
    (
        raw "$out" "$P_T" --timeout 30 "$@"
        # written whole, then renamed: the waiter reads it once it exists
        echo "$RAW_RC $RAW_MS" >"$out.res.tmp" && mv "$out.res.tmp" "$out.res"
    ) &
    SPAWNED+=($!)
    PID_NAME[$!]=stall
}

# A connection that sends nothing stays in the kernel until its deferred
# accept (TCP_DEFER_ACCEPT) gives up, a few seconds, and is closed
# header_timeout after that: it is only bounded more loosely.
t_stalls() {
    local o1 o2 p1 p2 before rc ms o lo hi
    before=$(fails timeout)
    o1=$(tmpf stall-nothing)
    o2=$(tmpf stall-half)
    stall "$o1"
    p1=$!
    stall "$o2" "@file:$PKI/half_hello.bin"
    p2=$!
    lo=$(awk -v h="$HT" 'BEGIN { printf "%d\n", h * 1000 - 250 }')
    for o in "$o2" "$o1"; do
        # well before idle_timeout (30 s); the client's own start and a
        # busy host's late timers are in the slack
        hi=$(awk -v h="$HT" -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d\n", 3 * h * 1000 + 8000 * s }')
        wait_file "$o.res" 60 || why "${o##*/}: the client did not end" || return 1
        read -r rc ms <"$o.res"
        [ "$rc" = 0 ] || [ "$rc" = 4 ] || why "${o##*/}: not closed (raw rc=$rc)" || return 1
        [ "$ms" -ge "$lo" ] && [ "$ms" -le "$hi" ] ||
            why "${o##*/}: closed after $ms ms, header_timeout is ${HT}s (want $lo..$hi ms)" || return 1
        expect_eq "${o##*/}: bytes received" "$(wc -c <"$o")" 0 || return 1
    done
    wait_exit "$p1" 5
    wait_exit "$p2" 5
    # the connection that sent nothing may count or not; the half ClientHello does
    wait_until 5 _fails_at_least timeout $((before + 1)) ||
        why "timeout failures: $(fails timeout), want at least $((before + 1))" || return 1
    [ "$(fails timeout)" -le $((before + 2)) ] || why "timeout failures: $(fails timeout), want at most $((before + 2))"
}
_fails_at_least() { [ "$(fails "$1")" -ge "$2" ]; }
t "a stalled handshake (nothing, or half a ClientHello) is closed at header_timeout" t_stalls

# ==================================================== failures logged ====

# fail_conn PORT HEX [close]: a raw connection that sends the bytes HEX,
# then reads until the daemon closes (or, with close, closes at once);
# prints its own port
fail_conn() {
    "$PYTHON" - "$@" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
print(s.getsockname()[1], flush=True)
s.sendall(bytes.fromhex(sys.argv[2]))
if len(sys.argv) < 4:
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
s.close()
PY
}

# logged LISTENER_PORT CLIENT_PORT|RE REASON_ERE: waits for the line
logged() {
    wait_log "$MAIN_LOG" "TLS handshake failed: client 127\.0\.0\.1:$2 on 127\.0\.0\.1:$1: $3" 5 ||
        why "no log line 'client 127.0.0.1:$2 on 127.0.0.1:$1: $3'; the last ones: $(grep 'handshake failed' "$MAIN_LOG" | tail -n 3)"
}

t_fail_log() {
    local port o
    port=$(fail_conn "$P_LOG" 00ff1337)
    logged "$P_LOG" "$port" 'not a TLS handshake \(first byte 0x00\)$' || return 1
    port=$(fail_conn "$P_LOG" "$(printf 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n' | od -An -tx1 | tr -d ' \n')")
    logged "$P_LOG" "$port" 'a plain-HTTP request on this TLS port' || return 1
    port=$(fail_conn "$P_LOG" "$(od -An -tx1 "$PKI/half_hello.bin" | tr -d ' \n')" close)
    logged "$P_LOG" "$port" 'the client closed the connection mid-handshake$' || return 1
    o=$(tmpf flog)
    sc "$o" "$P_LOG" -servername a.test -tls1_2 -cipher AES128-SHA
    logged "$P_LOG" '[0-9]+' 'no shared cipher$' || return 1
    sc "$o" "$P_13" -servername a.test -tls1_2
    logged "$P_13" '[0-9]+' 'unsupported protocol$' || return 1
    # from the tests above
    logged "$P_REJ" '[0-9]+' "unknown server name 'nope\.test' \(unknown_sni: reject\)$" || return 1
    logged "$P_REJ" '[0-9]+' 'no server name \(unknown_sni: reject\)$' || return 1
    logged "$P_T" '[0-9]+' 'handshake not finished within header_timeout$'
}
t "failed handshakes are logged with the client's address and port, the listener and the reason" t_fail_log

# shown / hidden: the burst's log lines, and the sum of the "not shown" ones
burst_shown() { log_count "$MAIN_LOG" "TLS handshake failed: client 127\.0\.0\.1:[0-9]+ on 127\.0\.0\.1:$P_BURST: "; }
burst_hidden() {
    sed -n "s/.*detourd\[info\]: \([0-9]*\) more failed TLS handshakes\{0,1\} on 127\.0\.0\.1:$P_BURST in the last second not shown\$/\1/p" \
        "$MAIN_LOG" | awk '{ n += $1 } END { print n + 0 }'
}
_burst_total_is() { [ $(($(burst_shown) + $(burst_hidden))) -ge "$1" ]; }

t_fail_log_burst() {
    local secs shown hidden lines
    # 50 connections that each send a byte that starts no TLS record
    secs=$("$PYTHON" - "$P_BURST" <<'PY'
import socket, sys, time
t0 = time.monotonic()
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) for _ in range(50)]
for s in socks:
    s.sendall(b"\x00")
for s in socks:
    try:
        s.recv(16)
    except OSError:
        pass
    s.close()
print(int(time.monotonic() - t0))
PY
)
    # the count of the last second comes out without any further failure
    wait_until 10 _burst_total_is 50 ||
        why "shown $(burst_shown) + not shown $(burst_hidden) lines, want 50 in all" || return 1
    shown=$(burst_shown)
    hidden=$(burst_hidden)
    lines=$(log_count "$MAIN_LOG" "more failed TLS handshakes? on 127\.0\.0\.1:$P_BURST in the last second not shown")
    expect_eq "shown + not shown" $((shown + hidden)) 50 || return 1
    # at most 10 a second: the burst took $secs whole seconds, so it spans
    # at most secs + 2 seconds of the rate limit
    [ "$shown" -ge 10 ] && [ "$shown" -le $((10 * (secs + 2))) ] ||
        why "$shown lines shown for a burst of $secs s, want 10..$((10 * (secs + 2)))" || return 1
    [ "$lines" -ge 1 ] || why "no 'not shown' line"
}
t "a burst of 50 failed handshakes: at most 10 lines a second, then how many were not shown" t_fail_log_burst

# ========================================================= resumption ====

t_resume() {
    local v=$1 s got
    s=$TEST_TMP/sess$v
    get_session "$P_T" "$s" "-tls1_$v" || return 1
    got=$(resumed "$P_T" "$s" "-tls1_$v")
    expect_eq "the second handshake" "$got" Reused
}
# tickets OUT: the NewSessionTicket messages s_client -msg saw
tickets() { grep -c '^<<< TLS 1.3, Handshake \[length [0-9a-f]*\], NewSessionTicket' "$1"; }

t_one_ticket() {
    local o s=$TEST_TMP/onetix
    o=$(tmpf onetix)
    rm -f "$s"
    sc "$o" "$P_T" -servername a.test -tls1_3 -msg -sess_out "$s"
    sc_answered "$o" || sc_diag "$o" || return 1
    expect_eq "tickets after a full handshake" "$(tickets "$o")" 1 || return 1
    sc "$o" "$P_T" -servername a.test -tls1_3 -msg -sess_in "$s"
    sc_answered "$o" || sc_diag "$o" || return 1
    expect_eq "the second handshake" "$(sc_session "$o")" Reused || return 1
    expect_eq "tickets after a resumed handshake" "$(tickets "$o")" 1
}
t "TLS 1.3: one ticket per handshake, full or resumed" t_one_ticket

# The TLS 1.3 ticket is held back to leave with the first answer: a
# client that sends nothing after its handshake still gets it (the kernel
# sends what is held after 200 ms at most)
t_ticket_without_request() {
    local out
    out=$("$PYTHON" - "$P_T" <<'PY' 2>&1
import os, socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="a.test")
end = time.monotonic() + 5 * float(os.environ.get("TIMEOUT_SCALE") or 1)
while not s.session.has_ticket and time.monotonic() < end:
    s.settimeout(0.1)
    try:
        s.recv(1)  # processes the ticket; no answer comes
    except (socket.timeout, ssl.SSLWantReadError):
        pass
print("ticket" if s.session.has_ticket else "no ticket")
PY
)
    expect_eq "a client that sent no request" "$out" ticket
}
t "TLS 1.3: a client that sends no request after its handshake still gets its ticket" t_ticket_without_request

t "TLS 1.2: a session ticket resumes (s_client -sess_out / -sess_in)" t_resume 2
t "TLS 1.3: a session ticket resumes (s_client -sess_out / -sess_in)" t_resume 3

t_resume_shared() {
    local v s got
    [ -n "$PEER_PID" ] || why "the second daemon did not start" || return 1
    for v in 3 2; do
        s=$TEST_TMP/shared$v
        get_session "$P_K1" "$s" "-tls1_$v" || return 1
        got=$(resumed "$P_K2" "$s" "-tls1_$v")
        expect_eq "TLS 1.$v: the other daemon's handshake" "$got" Reused || return 1
    done
    got=$(resumed "$P_T" "$s" -tls1_2)
    expect_eq "a listener without those ticket keys" "$got" New
}
t "two daemons sharing a ticket_keys file resume each other's sessions" t_resume_shared

t_resume_after_reload() {
    local v got
    for v in 2 3; do get_session "$P_T" "$TEST_TMP/rl$v" "-tls1_$v" || return 1; done
    reload_daemon "$MAIN_PID" "$MAIN_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || why "$(tail -n 5 "$MAIN_LOG")" || return 1
    for v in 2 3; do
        got=$(resumed "$P_T" "$TEST_TMP/rl$v" "-tls1_$v")
        expect_eq "TLS 1.$v after the reload" "$got" Reused || return 1
    done
}
t "without ticket_keys: a session from before a reload resumes after it" t_resume_after_reload

t_ticket_rotation() {
    local old=$TEST_TMP/rot-old new=$TEST_TMP/rot-new got
    [ -n "$PEER_PID" ] || why "the second daemon did not start" || return 1
    get_session "$P_K1" "$old" -tls1_3 || return 1
    # a new key first: it encrypts, the old ones still decrypt
    { head -c 80 /dev/urandom && cat "$PKI/ticket.keys"; } >"$PKI/ticket.keys.new" &&
        mv "$PKI/ticket.keys.new" "$PKI/ticket.keys"
    reload_daemon "$MAIN_PID" "$MAIN_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || why "$(tail -n 5 "$MAIN_LOG")" || return 1
    got=$(resumed "$P_K1" "$old" -tls1_3)
    expect_eq "a session made with the old key" "$got" Reused || return 1
    get_session "$P_K1" "$new" -tls1_3 || return 1
    got=$(resumed "$P_K1" "$new" -tls1_3)
    expect_eq "a session made with the new key" "$got" Reused || return 1
    got=$(resumed "$P_K2" "$new" -tls1_3)
    expect_eq "the new key's session on the daemon not reloaded yet" "$got" New
}
t "ticket_keys re-read at reload: a prepended key encrypts, the old ones still decrypt" t_ticket_rotation

t_no_tickets() {
    local v s o got
    for v in 3 2; do
        s=$TEST_TMP/notix$v
        o=$(tmpf notix)
        rm -f "$s"
        sc "$o" "$P_NOTIX" -servername a.test -sess_out "$s" "-tls1_$v"
        sc_answered "$o" || sc_diag "$o" || return 1
        [ -s "$s" ] || continue # no ticket, nothing to offer
        got=$(resumed "$P_NOTIX" "$s" "-tls1_$v")
        expect_eq "TLS 1.$v: the second handshake" "$got" New || return 1
    done
}
t "session_tickets: false: no resumption" t_no_tickets

# ================================================= metrics and status ====

t_handshake_metrics() {
    local f0 r0 x0 s=$TEST_TMP/msess o
    f0=$(hs full)
    r0=$(hs resumed)
    x0=$(hs failed)
    get_session "$P_T" "$s" -tls1_3 || return 1
    expect_eq "resumed" "$(resumed "$P_T" "$s" -tls1_3)" Reused || return 1
    o=$(tmpf mplain)
    raw "$o" "$P_T" 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n'
    wait_eq 5 $((f0 + 1)) hs full || return 1
    wait_eq 5 $((r0 + 1)) hs resumed || return 1
    wait_eq 5 $((x0 + 1)) hs failed
}
t "detourd_tls_handshakes_total: full, resumed and failed each move by one" t_handshake_metrics

t_expiry_metric() {
    local c got want
    for c in b ec rsa soon; do
        got=$(mval "$ADM" detourd_tls_certificate_expiry_timestamp_seconds "listener=$L_T" "cert=$PKI/$c.pem")
        want=$(not_after_epoch "$PKI/$c.pem")
        awk -v a="$got" -v b="$want" 'BEGIN { exit !(a == b + 0 && a != "absent") }' ||
            why "expiry of $c.pem: got '$got', want $want" || return 1
    done
}
t "detourd_tls_certificate_expiry_timestamp_seconds: each certificate's not_after" t_expiry_metric

t_status_listeners() {
    local f
    f=$(tmpf status)
    curl -s --max-time "$(scale 5)" -o "$f" "http://127.0.0.1:$ADM/status" || why "GET /status failed" || return 1
    local out
    out=$("$PYTHON" - "$f" "127.0.0.1:$P_H" "$L_T" "$PKI" \
        "$(not_after "$PKI/ec.pem")" "$(not_after "$PKI/soon.pem")" <<'PY' 2>&1
import json, sys
f, plain, tls, pki, ec_na, soon_na = sys.argv[1:]
s = json.load(open(f))
ls = {l.get("address"): l for l in s["listeners"]}
bad = []
def check(what, got, want):
    if got != want:
        bad.append("%s: got %r, want %r" % (what, got, want))
check("addresses", sorted(ls), sorted(ls) if plain in ls and tls in ls else [plain, tls, "..."])
if plain in ls:
    check(plain + " tls", ls[plain].get("tls"), False)
if tls in ls:
    t = ls[tls]
    check(tls + " tls", t.get("tls"), True)
    cs = t.get("certificates") or []
    check("certificate files", [c.get("cert") for c in cs],
          [pki + "/" + n + ".pem" for n in ("b", "ec", "rsa", "soon")])
    by = {c.get("cert"): c for c in cs}
    ec = by.get(pki + "/ec.pem", {})
    check("ec.pem names", ec.get("names"), ["a.test", "*.w.test"])
    check("ec.pem not_after", ec.get("not_after"), ec_na)
    if ec.get("days_left") not in (29, 30):
        bad.append("ec.pem days_left: %r, want 29 or 30" % ec.get("days_left"))
    soon = by.get(pki + "/soon.pem", {})
    check("soon.pem names", soon.get("names"), ["soon.test"])
    check("soon.pem not_after", soon.get("not_after"), soon_na)
    check("soon.pem days_left", soon.get("days_left"), 5)
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
) || why "$out" || why "/status listeners: $(head -c 1500 "$f")"
}
t "/status lists the listeners with their certificates (names, not_after, days_left)" t_status_listeners

t_status_page_certs() {
    local f rows
    f=$(tmpf page)
    curl -s --max-time "$(scale 5)" -o "$f" "http://127.0.0.1:$ADM/" || why "GET / failed" || return 1
    # one row per certificate; those with fewer than 14 days left are marked
    rows=$(grep -o '<tr class="cert-[a-z]*" data-days-left="[-0-9]*"><th scope="row">[^<]*</th><td>[^<]*</td>' "$f")
    echo "$rows" | grep -q "class=\"cert-soon\" data-days-left=\"5\".*<td>$PKI/soon.pem</td>" ||
        why "soon.pem is not marked: $rows" || return 1
    echo "$rows" | grep -q "class=\"cert-ok\" data-days-left=\"[23][0-9]\".*<td>$PKI/ec.pem</td>" ||
        why "ec.pem is not listed as ok: $rows"
}
t "the status page lists the certificates and marks those with fewer than 14 days left" t_status_page_certs

t_soon_warning() {
    grep -qE "listener $L_T: certificate $PKI/soon.pem expires in 5 days \(not after $(not_after "$PKI/soon.pem")\)" "$MAIN_LOG" ||
        why "no warning in the log: $(grep -i 'certificate' "$MAIN_LOG" | head -n 5)"
}
t "a certificate that expires in 5 days is logged as a warning" t_soon_warning

# A client that pipelines requests and never reads its answers stalls its
# output; a byte it sends now and then must not keep the connection open
# past idle_timeout (it used to: each arriving byte retried the stalled
# write, and each retry restarted the timeout).
t_stalled_reader_pokes() {
    [ -n "$PEER_PID" ] || why "the peer daemon did not start" || return 1
    local out
    out=$("$PYTHON" - "$P_K2" "$PEER_IDLE" <<'PY' 2>&1
import os, select, socket, ssl, sys, time
port, idle = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.connect(("127.0.0.1", port))
s = ctx.wrap_socket(raw, server_hostname="a.test")
s.settimeout(1.0)
req, end = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n" * 100, time.monotonic() + 30
try:  # until the server stops taking requests (its answers are not read)
    while time.monotonic() < end:
        s.sendall(req)
except (socket.timeout, ssl.SSLError, OSError):
    pass
stalled = time.monotonic()
p = select.poll()
p.register(s.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
limit = stalled + 3 * idle + 10
while time.monotonic() < limit:
    if p.poll(500):
        took = time.monotonic() - stalled
        print("closed %.1f s after the stall (idle_timeout %.1f s)" % (took, idle))
        sys.exit(0 if took < 2 * idle + 3 else 1)
    try:
        os.write(s.fileno(), b"\x17")  # a byte under the TLS layer
    except OSError:
        print("closed (write failed) %.1f s after the stall" % (time.monotonic() - stalled))
        sys.exit(0)
print("still open %.1f s after the stall (idle_timeout %.1f s)" % (limit - stalled, idle))
sys.exit(1)
PY
) || why "$out"
}
t "a stalled reader that sends a byte now and then is still closed at idle_timeout" t_stalled_reader_pokes

# ============================================================= reload ====

rel_serial() { served "$P_R" a.test; }
rel_expiry() { mval "$ADM_R" detourd_tls_certificate_expiry_timestamp_seconds "listener=127.0.0.1:$P_R" "cert=$PKI/rel.pem"; }

t_reload_renew() {
    local o
    [ -n "$REL_PID" ] || why "the reload daemon did not start" || return 1
    expect_eq "the certificate before" "$(rel_serial)" 01 || return 1
    o=$(tmpf relka)
    # a keep-alive connection: its first answer comes before the reload,
    # its second after it
    raw_bg "$o" "$P_R" --tls a.test --cafile "$CA" --tls-info "$o.tls" --timeout 10 \
        'GET /ka1 HTTP/1.1\r\nHost: a.test\r\n\r\n' @responses:1 "@ready:$o.sent" "@wait:$o.go" \
        'GET /ka2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    local cpid=$RAW_PID
    wait_file "$o.sent" 20 "$cpid" || why "the first request was not answered" || return 1
    cp "$PKI/r2.pem" "$PKI/rel.pem" && cp "$PKI/r2.key" "$PKI/rel.key" || return 1
    reload_daemon "$REL_PID" "$REL_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || why "$(tail -n 5 "$REL_LOG")" || return 1
    expect_eq "a new connection's certificate" "$(rel_serial)" 02 || return 1
    expect_eq "expiry metric" "$(rel_expiry)" "$(not_after_epoch "$PKI/r2.pem")" || return 1
    : >"$o.go"
    raw_wait "$o" "$cpid"
    expect_eq "answers on the connection opened before the reload" "$(r_count "$o")" 2 || raw_diag "$o" || return 1
    expect_response "$o" 2 307 "$REGION/ka2" || return 1
    expect_eq "its certificate (version serial alpn)" "$(cut -d' ' -f2 "$o.tls")" 01
}
t "reload: renewed certificate files serve new connections; an open one goes on" t_reload_renew

t_reload_mismatch() {
    [ -n "$REL_PID" ] || why "the reload daemon did not start" || return 1
    # a new certificate whose key was not copied: the key is r2's
    cp "$PKI/r3.pem" "$PKI/rel.pem" || return 1
    reload_daemon "$REL_PID" "$REL_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 0 || return 1
    grep -qE "$C_REL:$(at "$C_REL" "\"$PKI/rel.key\""): (listen\[0\]\.)?(tls\.)?certificates\[0\]" "$REL_LOG" ||
        why "no FILE:LINE:COL error logged: $(tail -n 5 "$REL_LOG")" || return 1
    pid_alive "$REL_PID" || why "detourd died" || return 1
    expect_eq "a new connection's certificate" "$(rel_serial)" 02 || return 1
    expect_eq "expiry metric" "$(rel_expiry)" "$(not_after_epoch "$PKI/r2.pem")"
}
t "reload with a key that does not match: rejected, logged, the old certificate serves" t_reload_mismatch

t_reload_same_text() {
    [ -n "$REL_PID" ] || why "the reload daemon did not start" || return 1
    local sum0
    sum0=$(cksum <"$C_REL")
    cp "$PKI/r4.pem" "$PKI/rel.pem" && cp "$PKI/r4.key" "$PKI/rel.key" || return 1
    reload_daemon "$REL_PID" "$REL_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || why "$(tail -n 5 "$REL_LOG")" || return 1
    expect_eq "config text" "$(cksum <"$C_REL")" "$sum0" || return 1
    expect_eq "a new connection's certificate" "$(rel_serial)" 04
}
t "reload with an unchanged config text picks up a renewed certificate" t_reload_same_text

t_reload_no_handshake() {
    [ -n "$REL_PID" ] || why "the reload daemon did not start" || return 1
    rel_config 'protocols: [TLSv1.2]' 'ciphers: "aNULL:eNULL"' >"$C_REL"
    reload_daemon "$REL_PID" "$REL_LOG" || why "no reload logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 0 || return 1
    grep -qE "$C_REL:$(at "$C_REL" '"aNULL:eNULL"'): (listen\[0\]\.)?tls\.ciphers: no TLS handshake can succeed" "$REL_LOG" ||
        why "no FILE:LINE:COL error logged: $(tail -n 5 "$REL_LOG")" || return 1
    expect_eq "a new connection's certificate" "$(rel_serial)" 04
}
t "reload with a TLS block with which no handshake can succeed: rejected, the old settings serve" t_reload_no_handshake

rel_hsts() {
    local o
    o=$(tmpf relhsts)
    traw "$o" "$P_R" 'GET /h HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n'
    [ "$(r_status "$o" 1)" = 307 ] && r_hdr "$o" 1 strict-transport-security
}
t_reload_hsts() {
    [ -n "$REL_PID" ] || why "the reload daemon did not start" || return 1
    local v
    for v in "max-age=60" "max-age=120; preload" ""; do
        rel_config ${v:+"hsts: \"$v\""} >"$C_REL"
        reload_daemon "$REL_PID" "$REL_LOG" || why "no reload logged" || return 1
        expect_eq "reload succeeded" "$RELOAD_OK" 1 || why "$(tail -n 5 "$REL_LOG")" || return 1
        expect_eq "Strict-Transport-Security after the reload to hsts '$v'" "$(rel_hsts)" "$v" || return 1
    done
}
t "reload: hsts is added, changed and removed" t_reload_hsts

# ====================================================== graceful stop ====

t_close_notify_stop() {
    local o pid res
    start_detourd stop "$C_STOP" "$P_STOP" || why "the daemon did not start" || return 1
    pid=$LAST_PID
    o=$(tmpf stop)
    rm -f "$o.ready"
    (tls_end "$P_STOP" 'GET /s HTTP/1.1\r\nHost: a.test\r\n\r\n' "$o.ready" >"$o") &
    local cpid=$!
    SPAWNED+=("$cpid")
    PID_NAME[$cpid]=client:stop
    wait_file "$o.ready" 20 "$cpid" || why "the keep-alive request was not answered" || return 1
    stop_pid "$pid" 15
    expect_eq "the daemon's exit status" "$LAST_RC" 0 || return 1
    wait_exit "$cpid" 20 || why "the client did not end" || return 1
    res=$(cat "$o")
    expect_eq "an idle connection at SIGTERM (how it ended, answers)" "$res" "close_notify 1"
}
t "close_notify to an idle connection at a graceful stop (SIGTERM)" t_close_notify_stop

# ============================================================ the end ====

t_all_exit0() {
    local pid bad=""
    for pid in "$MAIN_PID" "$PEER_PID" "$REL_PID"; do
        [ -n "$pid" ] || { bad+=" (one never started)"; continue; }
        pid_alive "$pid" || { bad+=" ${PID_NAME[$pid]}(died earlier)"; continue; }
        stop_pid "$pid" 15
        [ "$LAST_RC" = 0 ] || bad+=" ${PID_NAME[$pid]}(exit $LAST_RC)"
    done
    [ -z "$bad" ] || why "daemons that did not exit 0 on SIGTERM:$bad"
}
t "every daemon still runs and exits 0 on SIGTERM" t_all_exit0

t "no sanitizer report in any daemon's log" t_no_sanitizer_reports

diag "run time: $((($(now_ms) - T_START) / 1000))s"
done_testing
[ "$TAP_FAILED" -eq 0 ]
