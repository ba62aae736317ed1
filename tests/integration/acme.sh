#!/usr/bin/env bash
# Integration tests of ACME (RFC 8555) certificates that obtain and renew
# themselves, against a real ACME server: pebble (Debian package; the test
# starts it itself, like fleet.sh starts etcd). Pebble resolves the names it
# validates through a DNS stub (dns_stub.py: every A query is 127.0.0.1,
# names starting with "nx" or "c." are NXDOMAIN), so its http-01 and
# tls-alpn-01 connections reach the daemon on loopback. Pebble's own HTTPS
# certificate comes from a throwaway CA made here with openssl (the daemon
# trusts it through acme.ca_file); pebble's issuing root changes at every
# start and is fetched from its management API to verify what the daemon
# serves. Pebble runs with PEBBLE_VA_NOSLEEP=1 and its default rejection of
# 5% of good nonces, so badNonce retries happen.
#
# Tested: -t rejects the bad acme blocks (accept_terms, directory, contact,
# tls.acme without acme:, an unwritable storage); issuance by http-01 (the
# certificate served, its chain verified against pebble's root, /status,
# metrics, the event, storage modes) with a name that cannot be validated
# failing with unrecognized_name; an unknown challenge token redirected as
# usual; issuance by tls-alpn-01 (no plain listener at all); a restart with
# the ACME server gone serves the stored certificate at once; an
# unreachable directory fails the name while redirects go on, and a reload
# to a live directory retries at once; renewal of a 45-second certificate
# without a reload (where pebble has certificateValidityPeriod, 2.4 does);
# external account binding (a wrong HMAC key refused, the right one after a
# reload issued); a fleet of two instances on one etcd (started here): one orders under
# the fleet's lock, the other answers the challenge from etcd, both serve
# the one certificate.
#
# Skipped where pebble, python3, curl or openssl is not installed (Debian:
# apt install pebble; scripts/deps test installs it). PEBBLE may name
# another binary. TAP on stdout. Network: 127.0.0.1 only.
#
# Run by `make check`, or by hand: DETOURD=_build/detourd tests/integration/acme.sh

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
PEBBLE=${PEBBLE:-$(command -v pebble)}
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}

for tool in python3 curl openssl timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP $tool not found"
        exit 0
    fi
done
if [ -z "$PEBBLE" ] || [ ! -x "$PEBBLE" ]; then
    echo "1..0 # SKIP pebble not found (Debian: apt install pebble)"
    exit 0
fi
if [ ! -x "$DETOURD" ]; then
    echo "Bail out! detourd binary not found: $DETOURD (set DETOURD)"
    exit 1
fi

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

RUN_OUT=$TEST_TMP/run.out
RUN_ERR=$TEST_TMP/run.err
DNS_PY=$IT_DIR/dns_stub.py

alloc_ports 23 || {
    echo "Bail out! cannot find free loopback ports"
    exit 1
}
DNS=${PORTS[0]}                          # the DNS stub (UDP)
H=${PORTS[1]} T=${PORTS[2]}              # the daemon's plain and TLS listeners
ADM=${PORTS[3]}                          # its admin listener
DEAD=${PORTS[4]}                         # claimed, never listened on
PB1=${PORTS[5]} PM1=${PORTS[6]}          # pebble 1: tests 2 to 4 (stopped in 5)
PB2=${PORTS[7]} PM2=${PORTS[8]}          # pebble 2: the unreachable directory test
PB3=${PORTS[9]} PM3=${PORTS[10]}         # pebble 3: 45-second certificates
PB4=${PORTS[11]} PM4=${PORTS[12]}        # pebble 4: the fleet test (validates on $H, $T)
EC=${PORTS[13]} EP=${PORTS[14]}          # etcd: client and peer
FH=${PORTS[15]} FT=${PORTS[16]} FADM=${PORTS[17]}  # fleet instance A's listeners
PB5=${PORTS[18]} PM5=${PORTS[19]}        # pebble 5: external account binding required
CH=${PORTS[20]} CT=${PORTS[21]} CADM=${PORTS[22]}  # fleet instance C's listeners
L_T=127.0.0.1:$T  # the TLS listener as its metrics label it
BACKEND=https://backend.example

# ------------------------------------------------------------ helpers ----

# wait_slow SECONDS CMD...: like wait_until, polling every 0.3 s (the
# conditions here start openssl, curl or python: cheap enough, not free)
wait_slow() { WAIT_POLL=0.3 wait_until "$@"; }

# pebble_pki: a CA and a leaf for 127.0.0.1 (pebble's HTTPS listeners);
# the daemon trusts the CA through acme.ca_file
PKI=$TEST_TMP/pki
PEBBLE_CA=$PKI/pebble-ca.pem
pebble_pki() {
    mkdir -p "$PKI" || return 1
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >"$PKI/pebble.ext"
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$PKI/ca.key" -out "$PEBBLE_CA" -subj "/CN=detourd acme test CA" -days 2 \
        >"$PKI/ca.log" 2>&1 ||
        ! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$PKI/pebble.key" -out "$PKI/pebble.csr" -subj "/CN=127.0.0.1" \
            >>"$PKI/ca.log" 2>&1 ||
        ! openssl x509 -req -in "$PKI/pebble.csr" -CA "$PEBBLE_CA" -CAkey "$PKI/ca.key" \
            -set_serial "0x$RANDOM$RANDOM" -days 2 -extfile "$PKI/pebble.ext" \
            -out "$PKI/pebble.pem" >>"$PKI/ca.log" 2>&1; then
        cat "$PKI/ca.log"
        return 1
    fi
}
if ! pebble_pki; then
    echo "Bail out! cannot make pebble's certificate with openssl"
    exit 1
fi

# start_dns: the DNS stub on 127.0.0.1:$DNS, up once it answers a query
DNS_PID=
start_dns() {
    spawn dns "$PYTHON" "$DNS_PY" serve "$DNS" --max-seconds "$(scale 3600)"
    DNS_PID=$LAST_PID
    wait_until 10 _dns_answers || {
        diag "the DNS stub did not answer: $(tail -n 5 "$TEST_TMP/dns.log")"
        return 1
    }
}
dns_query() { "$PYTHON" "$DNS_PY" query "$DNS" "$@" --timeout 0.5; }
_dns_answers() {
    [ "$(dns_query ready.test A)" = "NOERROR 127.0.0.1" ] && return 0
    pid_alive "$DNS_PID" || return 0 # ended: fail at once (checked after)
    return 1
}

# start_pebble N ACMEPORT MGMTPORT [VALIDITY_SECONDS] [KID:HMACKEY]: pebble N
# (with KID:HMACKEY, external account binding required), its
# validations sent to the daemon's ports $H (http-01) and $T (tls-alpn-01);
# up once its directory answers; its issuing root is then fetched to
# $TEST_TMP/pebbleN-root.pem. PEBBLE_PID[N] is its PID.
declare -A PEBBLE_PID=()
start_pebble() {
    local n=$1 acme=$2 mgmt=$3 validity=${4:-} eab=${5:-} conf extra="" eabreq=false
    [ -n "$validity" ] && extra=",
    \"certificateValidityPeriod\": $validity"
    if [ -n "$eab" ]; then # KID:KEY: external account binding required
        eabreq=true
        extra="$extra,
    \"externalAccountMACKeys\": {\"${eab%%:*}\": \"${eab#*:}\"}"
    fi
    conf=$(write_config "pebble$n.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$acme",
    "managementListenAddress": "127.0.0.1:$mgmt",
    "certificate": "$PKI/pebble.pem",
    "privateKey": "$PKI/pebble.key",
    "httpPort": $H,
    "tlsPort": $T,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": $eabreq$extra
  }
}
EOF
)
    # a developer's PEBBLE_* settings must not change what is tested
    spawn "pebble$n" env -u PEBBLE_VA_ALWAYS_VALID -u PEBBLE_CHAIN_LENGTH \
        -u PEBBLE_ALTERNATE_ROOTS -u PEBBLE_VA_SLEEPTIME -u PEBBLE_AUTHZREUSE \
        PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=5 \
        "$PEBBLE" -config "$conf" -dnsserver "127.0.0.1:$DNS" -strict=false
    PEBBLE_PID[$n]=$LAST_PID # it logs on stdout: pebbleN.out
    # it makes its RSA root and intermediate keys first: seconds on a busy host
    if ! wait_until 60 _pebble_up "$acme" "$LAST_PID" || ! pid_alive "$LAST_PID"; then
        diag "pebble $n did not serve its directory on 127.0.0.1:$acme:"
        diag "$(tail -n 20 "$TEST_TMP/pebble$n.out")"
        return 1
    fi
    if ! curl -sS --max-time "$(scale 10)" --cacert "$PEBBLE_CA" -o "$TEST_TMP/pebble$n-root.pem" \
        "https://127.0.0.1:$mgmt/roots/0" 2>"$TEST_TMP/pebble$n-root.err" ||
        ! openssl x509 -noout -in "$TEST_TMP/pebble$n-root.pem" 2>/dev/null; then
        diag "cannot fetch pebble $n's root: $(cat "$TEST_TMP/pebble$n-root.err")"
        return 1
    fi
}
_pebble_up() { # ACMEPORT PID: the directory answers (0 too once PID ended)
    curl -s --max-time 2 --cacert "$PEBBLE_CA" "https://127.0.0.1:$1/dir" 2>/dev/null |
        grep -q '"newAccount"' && return 0
    pid_alive "$2" || return 0
    return 1
}
root_of() { echo "$TEST_TMP/pebble$1-root.pem"; }
dir_of() { echo "https://127.0.0.1:$1/dir"; }

# stop_pebble N
stop_pebble() {
    [ -n "${PEBBLE_PID[$1]:-}" ] || return 0
    stop_pid "${PEBBLE_PID[$1]}" 20
    unset "PEBBLE_PID[$1]"
}

# acme_config FILE DIRECTORY CHALLENGES STORAGE PLAIN(0|1) NAME...: a daemon
# with an admin listener, the plain listener $H (if PLAIN is 1) and the TLS
# listener $T whose tls.acme lists the NAMEs; CHALLENGES is a YAML list
# ("" for the default)
acme_config() {
    local file=$1 dir=$2 ch=$3 storage=$4 plain=$5 names
    shift 5
    names=$(printf '"%s", ' "$@")
    names=${names%, }
    {
        echo "listen:"
        [ "$plain" = 1 ] && echo "  - \"127.0.0.1:$H\""
        cat <<EOF
  - address: "$L_T"
    tls: {acme: [$names]}
admin:
  listen: "127.0.0.1:$ADM"
acme:
  directory: "$dir"
  contact: ["mailto:ops@example.com"]
  accept_terms: true
  ca_file: "$PEBBLE_CA"
EOF
        [ -n "$ch" ] && echo "  challenges: $ch"
        cat <<EOF
  storage: "$storage"
pools:
  - name: api
    regions:
      - name: eu
        url: "$BACKEND"
        state: up
        check: {type: none}
EOF
    } >"$file"
}

# start_acme NAME CONFIG: the daemon, up once its TLS and admin listeners
# accept; DPID is its PID, DLOG its log
DPID=''
DLOG=''
start_acme() {
    DPID=''
    DLOG=$(daemon_log "$1")
    start_detourd "$1" "$2" "$T" -l debug || return 1
    DPID=$LAST_PID
    wait_listen "$ADM" "$DPID" 10 || {
        diag "the admin listener did not start: $(tail -n 5 "$DLOG")"
        return 1
    }
}
stop_acme() {
    [ -n "$DPID" ] || return 0
    stop_pid "$DPID"
    DPID=
}
# daemon_up: the daemon of the previous test still runs
daemon_up() {
    if [ -z "$DPID" ] || ! pid_alive "$DPID"; then
        why "the daemon is not running (an earlier test failed)"
    fi
}

# acme_field NAME FIELD: a field of NAME's entry in /status acme ("<none>"
# when the name is not listed, "null" for null; times as epoch seconds when
# FIELD ends in _epoch)
acme_field() {
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" 2>/dev/null |
        "$PYTHON" -c 'import datetime, json, sys
name, field = sys.argv[1], sys.argv[2]
try:
    s = json.load(sys.stdin)
    e = [x for x in s["acme"] if x["name"] == name]
    if not e:
        print("<none>")
        sys.exit()
    if field.endswith("_epoch"):
        v = e[0][field[:-6]]
        print("null" if v is None else
              int(datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()))
    else:
        v = e[0][field]
        print("null" if v is None else v)
except Exception as ex:
    print("<%s>" % ex)' "$1" "$2"
}
acme_state_is() { [ "$(acme_field "$1" state)" = "$2" ]; }
# acme_status_diag NAME: why, with NAME's /status entry
acme_status_diag() {
    why "/status acme: $(curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" |
        "$PYTHON" -c 'import json,sys
try:
    print(json.dumps(json.load(sys.stdin).get("acme")))
except Exception as e:
    print("<%s>" % e)')"
    why "daemon log: $(grep -i acme "$DLOG" 2>/dev/null | tail -n 8)"
}
# wait_acme NAME STATE SECONDS
wait_acme() {
    wait_slow "$3" acme_state_is "$1" "$2" && return 0
    why "waited $3 s for $1 to be $2"
    acme_status_diag "$1"
}

# mint ADMPORT NAME [k=v]...: as mnum (lib.sh), as an integer
mint() { awk -v v="$(mnum "$@")" 'BEGIN { printf "%d\n", v }'; }

# sc OUT NAME ROOT: an openssl s_client handshake to $T with SNI NAME,
# verified against ROOT, then one request; SC_RC its exit status
sc() {
    printf 'GET /sc HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" |
        timeout "$(scale 10)" openssl s_client -connect "$L_T" -servername "$2" \
            -CAfile "$3" -verify_return_error -ign_eof >"$1" 2>&1
    SC_RC=$?
}
sc_serial() { openssl x509 -noout -serial <"$1" 2>/dev/null | sed 's/^serial=//'; }
sc_not_after_epoch() {
    local d
    d=$(openssl x509 -noout -enddate <"$1" 2>/dev/null | cut -d= -f2)
    [ -n "$d" ] && date -u -d "$d" +%s
}
sc_diag() {
    why "openssl s_client (exit $SC_RC) printed:"
    why "$(grep -vE '^-----|^[A-Za-z0-9+/=]{40,}$|^ {4}' "$1" | head -n 25)"
    return 1
}
# served_ok OUT NAME ROOT: a handshake for NAME verifies against ROOT and
# the request gets the redirect
served_ok() {
    sc "$1" "$2" "$3"
    [ "$SC_RC" = 0 ] && grep -q 'Verify return code: 0 (ok)' "$1" && grep -q '^HTTP/1.1 307 ' "$1"
}
# served_serial NAME ROOT: the serial a handshake for NAME gets ("" if none)
served_serial() {
    local o
    o=$(tmpf sc)
    served_ok "$o" "$1" "$2" && sc_serial "$o"
    rm -f "$o"
}
# expect_unrecognized_name NAME: a handshake for NAME fails with the
# unrecognized_name alert (112)
expect_unrecognized_name() {
    local o
    o=$(tmpf sc)
    sc "$o" "$1" "$PEBBLE_CA"
    grep -qi 'unrecognized.name\|alert number 112' "$o" ||
        why "a handshake for $1: no unrecognized_name alert" || sc_diag "$o" || return 1
    ! grep -q '^HTTP/1.1 ' "$o" || why "a handshake for $1 succeeded" || sc_diag "$o"
}

# hcurl NAME ROOT PATH: curl https://NAME:$T/PATH (NAME resolved to
# 127.0.0.1) verified against ROOT, the name checked; prints
# "CODE LOCATION" (curl's error on failure)
hcurl() {
    curl -sS --max-time "$(scale 10)" --cacert "$2" --resolve "$1:$T:127.0.0.1" \
        -o /dev/null -w '%{http_code} %{redirect_url}' "https://$1:$T$3" 2>&1
}

# events_of FILE: the daemon's event replay (GET /events, read for 2 s)
events_of() {
    curl -sS -N --max-time "$(scale 2)" "http://127.0.0.1:$ADM/events" >"$1" 2>/dev/null
    return 0
}
# has_event FILE KIND NAME TO: a data: line of FILE is that event
has_event() {
    "$PYTHON" - "$@" <<'PY'
import json, sys
f, kind, name, to = sys.argv[1:5]
for line in open(f, encoding="utf-8", errors="replace"):
    if not line.startswith("data:"):
        continue
    try:
        e = json.loads(line[5:])
    except ValueError:
        continue
    if e.get("kind") == kind and e.get("name") == name and e.get("to") == to:
        sys.exit(0)
sys.exit(1)
PY
}

# storage_modes DIR: the directory is 0700, holds at least two files (the
# account key, the certificate and its key), every file 0600
storage_modes() {
    local d=$1 mode n bad
    [ -d "$d" ] || why "storage $d was not created" || return 1
    mode=$(stat -c %a "$d")
    expect_eq "storage directory mode" "$mode" 700 || return 1
    n=$(find "$d" -type f | wc -l)
    [ "$n" -ge 2 ] || why "storage holds $n files: $(ls -lR "$d")" || return 1
    bad=$(find "$d" -type f ! -perm 0600 -printf '%m %p\n')
    [ -z "$bad" ] || why "files in storage that are not 0600: $bad"
}

# ------------------------------------------------------- the harness ----

HARNESS_OK=0
t_harness() {
    start_dns || why "the DNS stub did not start" || return 1
    expect_eq "DNS: A a.test" "$(dns_query a.test A)" "NOERROR 127.0.0.1" || return 1
    expect_eq "DNS: AAAA a.test" "$(dns_query a.test AAAA)" "NOERROR" || return 1
    expect_eq "DNS: A c.test" "$(dns_query c.test A)" "NXDOMAIN" || return 1
    start_pebble 1 "$PB1" "$PM1" || why "pebble did not start" || return 1
    grep -q 'BEGIN CERTIFICATE' "$(root_of 1)" || why "pebble's root is not PEM" || return 1
    HARNESS_OK=1
}
t "harness: the DNS stub answers (A 127.0.0.1, empty AAAA, NXDOMAIN for c.*); pebble serves its directory and root" t_harness

# ---------------------------------------------------------------- -t ----

# check_rejected WHAT KEY FILE: -t fails, naming KEY on stderr
check_rejected() {
    run_detourd -t -c "$3"
    [ "$LAST_RC" != 0 ] || why "$1: -t accepted it" || return 1
    grep -q -- "$2" "$RUN_ERR" || why "$1: exit $LAST_RC, but stderr does not name '$2': $(head -c 400 "$RUN_ERR")"
}

t_validate() {
    local good=$TEST_TMP/v-good.yaml f
    acme_config "$good" "$(dir_of "$PB1")" "[http-01]" "$TEST_TMP/acme-v" 1 a.test
    run_detourd -t -c "$good"
    [ "$LAST_RC" = 0 ] || why "a good acme block: -t exit $LAST_RC: $(head -c 400 "$RUN_ERR")" || return 1

    f=$TEST_TMP/v-noterms.yaml
    grep -v 'accept_terms' "$good" >"$f"
    check_rejected "accept_terms missing" accept_terms "$f" || return 1
    f=$TEST_TMP/v-falseterms.yaml
    sed 's/accept_terms: true/accept_terms: false/' "$good" >"$f"
    check_rejected "accept_terms: false" accept_terms "$f" || return 1
    f=$TEST_TMP/v-http.yaml
    sed "s|directory: \"https://|directory: \"http://|" "$good" >"$f"
    check_rejected "an http:// directory" directory "$f" || return 1
    f=$TEST_TMP/v-noturl.yaml
    sed 's|directory: ".*"|directory: "pebble"|' "$good" >"$f"
    check_rejected "a directory that is not a URL" directory "$f" || return 1
    f=$TEST_TMP/v-contact.yaml
    sed 's|mailto:ops@example.com|ops@example.com|' "$good" >"$f"
    check_rejected "a contact that is not a mailto: URI" contact "$f" || return 1
    f=$TEST_TMP/v-noblock.yaml
    sed '/^acme:/,/^pools:/{/^pools:/!d}' "$good" >"$f"
    grep -q 'tls: {acme:' "$f" && ! grep -q '^acme:' "$f" || why "v-noblock.yaml: $(cat "$f")" || return 1
    check_rejected "tls.acme without an acme: block" acme "$f" || return 1
    # a regular file where a directory must be: not writable, even by root
    : >"$TEST_TMP/afile"
    f=$TEST_TMP/v-storage.yaml
    sed "s|storage: \".*\"|storage: \"$TEST_TMP/afile/acme\"|" "$good" >"$f"
    check_rejected "an unwritable storage" storage "$f"
}
t "-t rejects accept_terms missing or false, a non-https directory, a non-mailto contact, tls.acme without acme:, an unwritable storage" t_validate

# ------------------------------------------------------------ http-01 ----

STORE_A=$TEST_TMP/acme-a
CONF_A=$TEST_TMP/a.yaml
acme_config "$CONF_A" "$(dir_of "$PB1")" "[http-01]" "$STORE_A" 1 a.test c.test

t_http01() {
    local o got na status_na ev
    [ "$HARNESS_OK" = 1 ] || why "no ACME server (the harness test failed)" || return 1
    start_acme a "$CONF_A" || why "the daemon did not start" || return 1
    wait_acme a.test valid 60 || return 1
    # the redirect over HTTPS, the name checked against pebble's root
    got=$(hcurl a.test "$(root_of 1)" /x)
    expect_eq "curl https://a.test/x" "$got" "307 $BACKEND/x" || return 1
    o=$(tmpf sc)
    served_ok "$o" a.test "$(root_of 1)" || why "the chain does not verify against pebble's root" ||
        sc_diag "$o" || return 1
    grep -q "Attempting to validate w/ HTTP: http://a.test:$H/" "$TEST_TMP/pebble1.out" ||
        why "pebble never validated a.test by http-01" || return 1
    # /status: its not_after is the served certificate's
    na=$(sc_not_after_epoch "$o")
    status_na=$(acme_field a.test not_after_epoch)
    expect_eq "/status a.test not_after" "$status_na" "$na" || return 1
    [ "$(acme_field a.test next_renewal)" != null ] || why "/status a.test: next_renewal is null" || return 1
    expect_eq "/status a.test last_error" "$(acme_field a.test last_error)" null || return 1
    storage_modes "$STORE_A" || return 1
    [ "$(mint "$ADM" detourd_acme_orders_total result=issued)" -ge 1 ] ||
        why "detourd_acme_orders_total{result=\"issued\"}: $(mval "$ADM" detourd_acme_orders_total result=issued)" || return 1
    got=$(mval "$ADM" detourd_tls_certificate_expiry_timestamp_seconds "listener=$L_T" "cert=acme:a.test")
    [ "$got" != absent ] || why "no expiry gauge for cert=\"acme:a.test\"" || return 1
    expect_eq "the expiry gauge" "$(awk -v v="$got" 'BEGIN { printf "%d\n", v }')" "$na" || return 1
    ev=$(tmpf events)
    events_of "$ev"
    has_event "$ev" certificate a.test issued || why "no certificate event to:issued for a.test: $(grep -m 3 certificate "$ev")" || return 1
    # the status page's certificate table has the name, valid
    got=$(curl -s --max-time "$(scale 5)" "http://127.0.0.1:$ADM/")
    grep -q 'data-acme-state="valid"><th scope="row">ACME</th><td>acme:a.test</td>' <<<"$got" ||
        why "the status page has no valid row for acme:a.test: $(grep -o '<tr class="cert-[^>]*>.\{0,120\}' <<<"$got" | head -n 3)"
}
t "http-01: a.test issued; https verified against pebble's root; /status, metrics, event, the status page; storage 0700, files 0600" t_http01

t_unvalidated() {
    daemon_up || return 1
    # c.test is NXDOMAIN to pebble: its validation, and so its order, fails
    wait_acme c.test failed 60 || return 1
    local err
    err=$(acme_field c.test last_error)
    [ -n "$err" ] && [ "$err" != null ] || why "/status c.test: last_error '$err'" || return 1
    expect_eq "/status c.test not_after" "$(acme_field c.test not_after)" null || return 1
    expect_unrecognized_name c.test || return 1
    [ "$(mint "$ADM" detourd_acme_orders_total result=failed)" -ge 1 ] ||
        why "detourd_acme_orders_total{result=\"failed\"}: $(mval "$ADM" detourd_acme_orders_total result=failed)" || return 1
    expect_eq "a.test still served" "$(hcurl a.test "$(root_of 1)" /y)" "307 $BACKEND/y"
}
t "a name pebble cannot validate: failed with last_error, its handshake fails with unrecognized_name" t_unvalidated

t_unknown_token() {
    daemon_up || return 1
    local out=$TEST_TMP/token.raw
    raw "$out" "$H" 'GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n' \
        --responses 1
    expect_response "$out" 1 307 "$BACKEND/.well-known/acme-challenge/unknown"
}
t "http-01: GET /.well-known/acme-challenge/UNKNOWN on the plain listener gets the usual 307" t_unknown_token

# -------------------------------------------------------- tls-alpn-01 ----

STORE_B=$TEST_TMP/acme-b
t_tlsalpn() {
    local conf=$TEST_TMP/b.yaml
    [ "$HARNESS_OK" = 1 ] || why "no ACME server (the harness test failed)" || return 1
    stop_acme
    # no plain listener: http-01 cannot succeed, only tls-alpn-01 on $T
    acme_config "$conf" "$(dir_of "$PB1")" "[tls-alpn-01]" "$STORE_B" 0 b.test
    start_acme b "$conf" || why "the daemon did not start" || return 1
    wait_acme b.test valid 60 || return 1
    expect_eq "curl https://b.test/x" "$(hcurl b.test "$(root_of 1)" /x)" "307 $BACKEND/x" || return 1
    storage_modes "$STORE_B"
}
t "tls-alpn-01 (no plain listener): b.test issued and served, verified against pebble's root" t_tlsalpn

# ------------------------------------------------------------ restart ----

t_restart() {
    local o
    [ -d "$STORE_A" ] || why "no storage from the http-01 test" || return 1
    stop_acme
    stop_pebble 1
    wait_closed "$PB1" 10 || why "pebble still listens" || return 1
    start_acme a2 "$CONF_A" || why "the daemon did not start" || return 1
    # the stored certificate is served at once: no wait
    o=$(tmpf sc)
    served_ok "$o" a.test "$(root_of 1)" ||
        why "the first handshake after the restart did not verify against the saved root" || sc_diag "$o" || return 1
    wait_acme a.test valid 10 || return 1
    expect_eq "orders issued by the restarted daemon" "$(mint "$ADM" detourd_acme_orders_total result=issued)" 0
}
t "restart with the ACME server gone: a.test served at once from storage, /status valid" t_restart

# ------------------------------------------------ unreachable directory ----

t_unreachable() {
    local conf=$TEST_TMP/u.yaml err t0
    stop_acme
    start_pebble 2 "$PB2" "$PM2" || why "pebble did not start" || return 1
    acme_config "$conf" "$(dir_of "$DEAD")" "[http-01]" "$TEST_TMP/acme-u" 1 a.test
    start_acme u "$conf" || why "the daemon did not start" || return 1
    expect_eq "a plain redirect meanwhile" "$(http_code "$H" /x -H 'Host: a.test')" 307 || return 1
    wait_acme a.test failed 30 || return 1
    err=$(acme_field a.test last_error)
    [ -n "$err" ] && [ "$err" != null ] || why "/status a.test: last_error '$err'" || return 1
    expect_unrecognized_name a.test || return 1
    # the live directory, and a reload: retried at once, not after the backoff
    acme_config "$conf" "$(dir_of "$PB2")" "[http-01]" "$TEST_TMP/acme-u" 1 a.test
    t0=$(now_ms)
    reload_daemon "$DPID" "$DLOG" || why "no reload outcome logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || return 1
    wait_acme a.test valid 40 || return 1
    diag "valid $(($(now_ms) - t0)) ms after the SIGHUP"
    expect_eq "curl https://a.test/x" "$(hcurl a.test "$(root_of 2)" /x)" "307 $BACKEND/x"
}
t "unreachable directory: redirects go on, a.test failed with last_error; the live one after SIGHUP: valid at once" t_unreachable

# ------------------------------------------------------------ renewal ----

# pebble 3 issues certificates valid for LIFE seconds: renewal starts when a
# third is left, so the second certificate comes LIFE*2/3 after the first
# (twice as long on a slow host or under valgrind, not more: the waits
# below scale, and the renewal itself takes seconds at most)
LIFE=$(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d\n", (s > 1 ? 90 : 45) }')
t_renewal() {
    local conf=$TEST_TMP/r.yaml s1 s2 na1 na2 ev log_reloads
    stop_acme
    stop_pebble 2
    start_pebble 3 "$PB3" "$PM3" "$LIFE" || why "pebble did not start" || return 1
    grep -q "certificate validity period of $LIFE seconds" "$TEST_TMP/pebble3.out" ||
        why "pebble ignored certificateValidityPeriod: $(head -n 8 "$TEST_TMP/pebble3.out")" || return 1
    acme_config "$conf" "$(dir_of "$PB3")" "" "$TEST_TMP/acme-r" 1 a.test
    start_acme r "$conf" || why "the daemon did not start" || return 1
    wait_acme a.test valid 60 || return 1
    s1=$(served_serial a.test "$(root_of 3)")
    [ -n "$s1" ] || why "no verified handshake for a.test" || return 1
    na1=$(acme_field a.test not_after_epoch)
    log_reloads=$(log_count "$DLOG" 'reloaded ')
    # no signal from here on: the daemon renews by itself
    wait_slow $((LIFE + 60)) _serial_differs a.test "$(root_of 3)" "$s1" ||
        why "still serial $s1 after $((LIFE + 60)) s (scaled)" || acme_status_diag a.test || return 1
    s2=$(served_serial a.test "$(root_of 3)")
    diag "serial $s1 then $s2"
    wait_acme a.test valid 10 || return 1
    na2=$(acme_field a.test not_after_epoch)
    [[ $na2 =~ ^[0-9]+$ ]] && [[ $na1 =~ ^[0-9]+$ ]] && [ "$na2" -gt "$na1" ] ||
        why "/status not_after did not move forward: $na1 then $na2" || return 1
    [ "$(mint "$ADM" detourd_acme_orders_total result=issued)" -ge 2 ] ||
        why "detourd_acme_orders_total{result=\"issued\"}: $(mval "$ADM" detourd_acme_orders_total result=issued)" || return 1
    ev=$(tmpf events)
    events_of "$ev"
    has_event "$ev" certificate a.test renewed || why "no certificate event to:renewed: $(grep -m 3 certificate "$ev")" || return 1
    expect_eq "reloads meanwhile" "$(log_count "$DLOG" 'reloaded ')" "$log_reloads"
}
_serial_differs() { # NAME ROOT SERIAL
    local s
    s=$(served_serial "$1" "$2")
    [ -n "$s" ] && [ "$s" != "$3" ]
}
t "renewal without a reload: a ${LIFE}-second certificate is replaced, /status not_after moves, issued >= 2, event renewed" t_renewal

# ------------------------------------------- external account binding ----

# pebble 5 requires an external account binding: with the right HMAC key
# the account is made and the name issued; with a wrong one the name fails
# and says why.
EAB_KID=kid-1
EAB_KEY=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
t_eab() {
    local conf=$TEST_TMP/e.yaml err
    stop_acme
    stop_pebble 3
    start_pebble 5 "$PB5" "$PM5" "" "$EAB_KID:$EAB_KEY" || why "pebble did not start" || return 1
    # a wrong key first: refused, reported
    printf '%s\n' "${EAB_KEY%????}AAAA" >"$TEST_TMP/eab-wrong.key"
    printf '%s\n' "$EAB_KEY" >"$TEST_TMP/eab.key"
    acme_config "$conf" "$(dir_of "$PB5")" "[http-01]" "$TEST_TMP/acme-e" 1 a.test
    sed -i "/^  accept_terms: true/a\\  eab: {kid: \"$EAB_KID\", hmac_key_file: \"$TEST_TMP/eab-wrong.key\"}" "$conf"
    start_acme e "$conf" || why "the daemon did not start" || return 1
    wait_acme a.test failed 30 || return 1
    err=$(acme_field a.test last_error)
    [[ $err == *newAccount* ]] || why "last_error '$err' does not name newAccount" || return 1
    # the right key, and a reload: the account is made, the name issued
    sed -i "s|$TEST_TMP/eab-wrong.key|$TEST_TMP/eab.key|" "$conf"
    reload_daemon "$DPID" "$DLOG" || why "no reload outcome logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || return 1
    wait_acme a.test valid 40 || return 1
    expect_eq "curl https://a.test/x" "$(hcurl a.test "$(root_of 5)" /x)" "307 $BACKEND/x"
}
t "external account binding: a wrong HMAC key fails newAccount and says so; the right one (after a reload) gets the certificate" t_eab
stop_pebble 5

# -------------------------------------------------------------- fleet ----

# Two instances on one etcd (started here, as fleet.sh does) and one name:
# one orders, under the fleet's lock, and shares the certificate through
# etcd; the other answers the challenge (pebble 4 validates on its ports
# only) and serves the same certificate. Which instance orders is made
# certain with etcd's lock order: the test holds the lock first, A queues,
# then B, and the test lets go: A (the lowest revision left) orders.
ETCD=${ETCD:-$(command -v etcd)} ETCDCTL=${ETCDCTL:-$(command -v etcdctl)}
FPREFIX=/acmetest/
ectl() {
    ETCDCTL_API=3 "$ETCDCTL" --endpoints="http://127.0.0.1:$EC" \
        --command-timeout="$(scale 5 | cut -d. -f1)s" "$@"
}
_etcd_healthy() { ectl endpoint health >/dev/null 2>&1; }
_lock_queued() { [ -n "$(ectl get --keys-only "${FPREFIX}acme/lock/a.test/$1" 2>/dev/null)" ]; }

# fleet_config FILE INSTANCE PLAIN TLS ADMIN STORAGE
fleet_config() {
    cat >"$1" <<EOF
listen:
  - "127.0.0.1:$3"
  - address: "127.0.0.1:$4"
    tls: {acme: ["a.test"]}
admin:
  listen: "127.0.0.1:$5"
acme:
  directory: "$(dir_of "$PB4")"
  contact: ["mailto:ops@example.com"]
  accept_terms: true
  ca_file: "$PEBBLE_CA"
  challenges: [http-01]
  storage: "$6"
fleet:
  instance: $2
  etcd:
    endpoints: ["http://127.0.0.1:$EC"]
    prefix: $FPREFIX
pools:
  - name: api
    regions:
      - name: eu
        url: "$BACKEND"
        state: up
        check: {type: none}
EOF
}

# served_serial_at PORT NAME ROOT: the serial a verified handshake gets
served_serial_at() {
    printf 'GET /sc HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" |
        timeout "$(scale 10)" openssl s_client -connect "127.0.0.1:$1" -servername "$2" \
            -CAfile "$3" -verify_return_error -ign_eof 2>/dev/null |
        openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}

FA_PID='' FB_PID=''
t_fleet() {
    local lease sa sb ia ib
    if ! [ -x "$ETCD" ] || ! [ -x "$ETCDCTL" ]; then
        why "etcd not installed (scripts/deps test installs etcd-server and etcd-client)"
        return 1
    fi
    stop_acme
    stop_pebble 3
    # pebble 4 validates on $H and $T: instance B's listeners
    start_pebble 4 "$PB4" "$PM4" || why "pebble did not start" || return 1
    [ "$(uname -m)" = aarch64 ] && export ETCD_UNSUPPORTED_ARCH=arm64
    spawn etcd "$ETCD" --name acme --data-dir "$TEST_TMP/etcd" \
        --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
        --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
        --initial-cluster "acme=http://127.0.0.1:$EP" --initial-cluster-state new \
        --initial-cluster-token "t-$$" --logger zap --log-level error
    wait_until 30 _etcd_healthy || why "etcd not healthy: $(tail -n 5 "$TEST_TMP/etcd.log")" || return 1
    # the test holds the lock first
    lease=$(ectl lease grant 600 | awk '{ print $2 }')
    [ -n "$lease" ] || why "no etcd lease" || return 1
    ectl put --lease="$lease" "${FPREFIX}acme/lock/a.test/test" test >/dev/null ||
        why "cannot write the test's lock key" || return 1
    fleet_config "$TEST_TMP/fa.yaml" A "$FH" "$FT" "$FADM" "$TEST_TMP/acme-fa"
    fleet_config "$TEST_TMP/fb.yaml" B "$H" "$T" "$ADM" "$TEST_TMP/acme-fb"
    start_detourd fa "$TEST_TMP/fa.yaml" "$FT" -l debug || why "A did not start" || return 1
    FA_PID=$LAST_PID
    wait_until 30 _lock_queued A ||
        why "A did not queue for the lock: $(grep acme "$(daemon_log fa)" | tail -n 5)" || return 1
    start_detourd fb "$TEST_TMP/fb.yaml" "$T" -l debug || why "B did not start" || return 1
    FB_PID=$LAST_PID
    wait_until 30 _lock_queued B || why "B did not queue for the lock" || return 1
    ectl lease revoke "$lease" >/dev/null || why "cannot let go of the test's lock" || return 1
    wait_slow 60 acme_state_is a.test valid || {
        why "B: a.test not valid"
        acme_status_diag a.test
        return 1
    }
    ADM=$FADM wait_slow 60 acme_state_is a.test valid || {
        why "A: a.test not valid"
        ADM=$FADM acme_status_diag a.test
        return 1
    }
    grep -q 'acme: a.test: this instance holds the fleet' "$(daemon_log fa)" ||
        why "A did not order: $(grep acme "$(daemon_log fa)" | tail -n 5)" || return 1
    grep -q 'serving the certificate another instance ordered' "$(daemon_log fb)" ||
        why "B did not take A's certificate: $(grep acme "$(daemon_log fb)" | tail -n 5)" || return 1
    # A accepted the challenge once B had acknowledged the answer, not
    # after giving up waiting
    ! grep -q 'not every instance has the challenge answer' "$(daemon_log fa)" ||
        why "A did not see B's acknowledgement: $(grep 'not every' "$(daemon_log fa)")" || return 1
    # pebble validated on B's plain port, which only B listens on
    grep -q "a.test:$H/.well-known/acme-challenge/" "$TEST_TMP/pebble4.out" ||
        why "pebble did not validate on B's port $H: $(grep -i valid "$TEST_TMP/pebble4.out" | tail -n 3)" || return 1
    sa=$(served_serial_at "$FT" a.test "$(root_of 4)")
    sb=$(served_serial_at "$T" a.test "$(root_of 4)")
    [ -n "$sa" ] && [ "$sa" = "$sb" ] || why "A serves serial '$sa', B '$sb'" || return 1
    ia=$(mint "$FADM" detourd_acme_orders_total result=issued)
    ib=$(mint "$ADM" detourd_acme_orders_total result=issued)
    expect_eq "orders issued by A and B" "$ia $ib" "1 0" || return 1
    [ -n "$(ectl get --keys-only "${FPREFIX}acme/cert/a.test")" ] ||
        why "no ${FPREFIX}acme/cert/a.test in etcd" || return 1
    # B keeps its own copy
    storage_modes "$TEST_TMP/acme-fb"
}
t "fleet: A orders under the lock, B (whose ports pebble validates) answers the challenge from etcd; both serve one certificate" t_fleet

# the serial of the certificate in PREFIX/acme/cert/NAME ("" if none)
etcd_cert_serial() {
    ectl get --print-value-only "${FPREFIX}acme/cert/$1" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["cert"])' 2>/dev/null |
        openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}
_cert_back() { [ -n "$(etcd_cert_serial a.test)" ]; }

t_fleet_reshare() {
    local sa before
    [ -n "$FA_PID" ] && [ -n "$FB_PID" ] || why "the fleet test did not start both instances" || return 1
    sa=$(served_serial_at "$FT" a.test "$(root_of 4)")
    [ -n "$sa" ] || why "A serves no a.test certificate" || return 1
    # etcd loses the key (as after a refused write or an outage when the
    # certificate came): the instance that obtained it writes it again
    before=$(log_count "$(daemon_log fa)" 'written again')
    ectl del "${FPREFIX}acme/cert/a.test" >/dev/null || why "cannot delete the key" || return 1
    wait_until 30 _cert_back ||
        why "the certificate did not come back to etcd: $(grep acme "$(daemon_log fa)" | tail -n 5)" ||
        return 1
    expect_eq "serial in etcd" "$(etcd_cert_serial a.test)" "$sa" || return 1
    wait_log "$(daemon_log fa)" 'acme: a.test: etcd lacks the certificate this instance obtained: written again' \
        10 $((before + 1)) || why "A did not say it wrote it again" || return 1
    # B, which only took it, does not write it; nobody ordered another
    ! grep -q 'written again' "$(daemon_log fb)" || why "B wrote it too" || return 1
    expect_eq "orders issued by A and B" \
        "$(mint "$FADM" detourd_acme_orders_total result=issued) $(mint "$ADM" detourd_acme_orders_total result=issued)" \
        "1 0"
}
t "fleet: the certificate deleted from etcd is written again by the instance that obtained it, not by the others" t_fleet_reshare

_member_gone() { [ -z "$(ectl get --keys-only "${FPREFIX}acme/member/B")" ]; }
t_fleet_member_gone() {
    [ -n "$FB_PID" ] || why "the fleet test did not start B" || return 1
    [ -n "$(ectl get --keys-only "${FPREFIX}acme/member/B")" ] ||
        why "B is not a member before the reload" || return 1
    # B's config without ACME: no acme section, no listener that needs it
    awk '/^  - address: / || /^    tls: \{acme/ { next }
         /^acme:/ { skip = 1; next }
         skip && /^  / { next }
         { skip = 0; print }' "$TEST_TMP/fb.yaml" >"$TEST_TMP/fb-plain.yaml"
    ! grep -Eq '^acme:|acme: \[' "$TEST_TMP/fb-plain.yaml" || why "acme left in the config" || return 1
    cp "$TEST_TMP/fb-plain.yaml" "$TEST_TMP/fb.yaml"
    reload_daemon "$FB_PID" "$(daemon_log fb)" || why "no reload outcome logged" || return 1
    expect_eq "reload succeeded" "$RELOAD_OK" 1 || return 1
    # its member key goes at once, not when its lease ends: no holder
    # waits for its acknowledgements
    wait_until 10 _member_gone || why "B's member key is still in etcd" || return 1
    [ -n "$(ectl get --keys-only "${FPREFIX}acme/member/A")" ] || why "A's member key went too"
}
t "fleet: an instance whose ACME section a reload removes leaves the members at once" t_fleet_member_gone

# C orders c.test; a member that never acknowledges holds its challenge
# (at most 10 s), and meanwhile a newer certificate for c.test comes to
# etcd, as another instance's would: C takes it and its order stops before
# the challenge is accepted, so that no duplicate is issued.
FC_PID=''
_chal_published() { [ -n "$(ectl get --prefix --keys-only "${FPREFIX}acme/http01/" 2>/dev/null)" ]; }
t_fleet_superseded() {
    local lease want got
    _etcd_healthy || why "etcd is not running" || return 1
    lease=$(ectl lease grant 600 | awk '{ print $2 }')
    [ -n "$lease" ] || why "no etcd lease" || return 1
    ectl put --lease="$lease" "${FPREFIX}acme/member/ghost" 1 >/dev/null ||
        why "cannot write the ghost member" || return 1
    fleet_config "$TEST_TMP/fc.yaml" C "$CH" "$CT" "$CADM" "$TEST_TMP/acme-fc"
    sed -i 's/a\.test/c.test/' "$TEST_TMP/fc.yaml"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=c.test -addext subjectAltName=DNS:c.test \
        -keyout "$TEST_TMP/c-key.pem" -out "$TEST_TMP/c-cert.pem" >/dev/null 2>&1 ||
        why "openssl cannot make a certificate" || return 1
    # ready before C starts: the ghost holds the challenge for 10 s only
    python3 -c 'import json, sys; print(json.dumps({"cert": open(sys.argv[1]).read(), "key": open(sys.argv[2]).read()}))' \
        "$TEST_TMP/c-cert.pem" "$TEST_TMP/c-key.pem" >"$TEST_TMP/c-share.json" || return 1
    start_detourd fc "$TEST_TMP/fc.yaml" "$CT" -l debug || why "C did not start" || return 1
    FC_PID=$LAST_PID
    wait_until 30 _chal_published ||
        why "C published no challenge answer: $(grep acme "$(daemon_log fc)" | tail -n 5)" || return 1
    ectl put "${FPREFIX}acme/cert/c.test" <"$TEST_TMP/c-share.json" >/dev/null ||
        why "cannot write cert/c.test" || return 1
    wait_log "$(daemon_log fc)" "acme: c.test: another instance's certificate came first: this order stops" 30 ||
        why "C's order did not stop: $(grep acme "$(daemon_log fc)" | tail -n 5)" || return 1
    ectl lease revoke "$lease" >/dev/null
    want=$(openssl x509 -noout -serial -in "$TEST_TMP/c-cert.pem" | sed 's/^serial=//')
    got=$(served_serial_at "$CT" c.test "$TEST_TMP/c-cert.pem")
    expect_eq "serial C serves" "$got" "$want" || return 1
    expect_eq "orders C issued" "$(mint "$CADM" detourd_acme_orders_total result=issued)" 0 || return 1
    ADM=$CADM acme_state_is c.test valid || why "c.test is not valid at C" || return 1
    # the lock and the challenge answer went with the order
    wait_until 10 _no_c_keys || why "keys left: $(ectl get --prefix --keys-only "${FPREFIX}acme/")"
}
_no_c_keys() {
    [ -z "$(ectl get --prefix --keys-only "${FPREFIX}acme/lock/c.test/" 2>/dev/null)" ] &&
        ! _chal_published
}
t "fleet: an order stops before its challenge is accepted when another instance's newer certificate comes" t_fleet_superseded
[ -n "$FC_PID" ] && stop_pid "$FC_PID"
[ -n "$FA_PID" ] && stop_pid "$FA_PID"
[ -n "$FB_PID" ] && stop_pid "$FB_PID"

stop_acme
t "no sanitizer report in any daemon's log" t_no_sanitizer_reports
done_testing
