# shellcheck shell=bash
# Helpers for detourd's integration tests: temp dir, free ports, spawning and
# stopping processes by PID, a raw-socket client, an HTTP response parser and
# TAP output. Sourced by run.sh (bash). Network use is 127.0.0.1 only; every
# wait is bounded and scaled by $TIMEOUT_SCALE (e.g. 5 under valgrind).
#
# Environment:
#   DETOURD          the daemon binary (required by start_detourd)
#   DETOURD_WRAPPER  optional command prefix, e.g. "valgrind -q ..."
#   DETOURD_EXIT_LOG optional file: "NAME PID STATUS" of every daemon that ended
#   TIMEOUT_SCALE    multiplier for every wait (default 1)
#   IT_OUT           where the per-run temp dir goes (default
#                    $TOP_BUILDDIR/tests/out, else $TMPDIR)
#   KEEP_TMP=1       keep the temp dir (its path is printed as a TAP comment)
#   IT_TIMING=1      print how long each test took (TAP comments)
#   IT_PORT_LOCKS    directory of port claims shared by concurrent runs
#                    (default ${TMPDIR:-/tmp}/detourd-test-ports)
#
# Waiting: a test never sleeps and then assumes. Every wait is a condition
# polled until a deadline that is scaled by TIMEOUT_SCALE (deadlines only
# cost time when a test fails, so make them generous). Helpers for that:
#   wait_until SECONDS CMD...      CMD polled until it succeeds
#   wait_file FILE SECONDS [PID]   FILE exists (fails early if PID ended)
#   wait_log FILE ERE SECONDS [N]  FILE has at least N lines matching ERE
#   wait_listen PORT [PID] [SECS]  PORT accepts connections
#   wait_closed PORT SECONDS       PORT refuses connections
#   hold_port PORT                 a process that has bound and listens on
#                                  PORT (SO_REUSEADDR) before it returns
# Processes a test starts signal readiness: start_detourd/start_backend wait
# until the port accepts; raw clients (IT_PY send) take the parts
#   @responses:N  wait until N answers arrived
#   @ready:FILE   create FILE (e.g. "my first request was answered")
#   @wait:FILE    wait until FILE exists before sending the next part
# so a test can act (SIGHUP, another client) at a known point of a client's
# conversation: raw_bg starts such a client, wait_file waits for its mark,
# raw_wait collects it. reload_daemon PID LOG sends SIGHUP and waits for the
# reload's outcome in the log (RELOAD_OK says which). After a health change
# is logged, wait for the answer it leads to (the state is published just
# after the log line). Ports come from alloc_ports only (claimed, so a
# connect to one reaches this run's process and no other run's).
# A "nothing happens for X" check may sleep, if load can only make it pass.

export TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}
PYTHON=${PYTHON:-python3}
IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BACKEND_PY=$IT_DIR/backend.py

TAP_N=0
TAP_FAILED=0
WHY=
SPAWNED=()            # PIDs still to stop
declare -A PID_NAME=()
LAST_PID=
LAST_RC=

# ---------------------------------------------------------------- TAP ----

diag() {
    local line
    while IFS= read -r line; do printf '# %s\n' "$line"; done <<<"$*"
}

tap_ok() {
    TAP_N=$((TAP_N + 1))
    printf 'ok %d - %s\n' "$TAP_N" "$*"
}

tap_not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=$((TAP_FAILED + 1))
    printf 'not ok %d - %s\n' "$TAP_N" "$*"
}

tap_skip() { # DESC REASON
    TAP_N=$((TAP_N + 1))
    printf 'ok %d - %s # SKIP %s\n' "$TAP_N" "$1" "$2"
}

# why MSG: records why the current test fails; always returns 1 so that
# `cond || why "..."` fails the test function.
why() {
    WHY="${WHY:+$WHY
}$*"
    return 1
}

# t DESC FUNC [ARGS...]: one TAP line; FUNC fails the test by returning
# non-zero (its why messages become TAP diagnostics).
t() {
    local desc=$1 t0
    shift
    WHY=
    t0=$(now_ms)
    if "$@"; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc"
        [ -n "$WHY" ] && diag "$WHY"
    fi
    [ "${IT_TIMING:-0}" = 1 ] && diag "took $(($(now_ms) - t0)) ms"
    return 0
}

done_testing() {
    printf '1..%d\n' "$TAP_N"
    [ "$TAP_FAILED" -eq 0 ] || diag "$TAP_FAILED of $TAP_N tests failed"
}

# expect_eq WHAT GOT WANT
expect_eq() {
    [ "$2" = "$3" ] || why "$1: got '$2', want '$3'"
}

# expect_match WHAT GOT ERE
expect_match() {
    [[ $2 =~ $3 ]] || why "$1: got '$2', want a match of /$3/"
}

# ------------------------------------------------------- time and temp ----

# scale SECONDS: SECONDS * TIMEOUT_SCALE
scale() {
    awk -v a="$1" -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%g\n", a * s }'
}

now_ms() {
    local ns
    ns=$(date +%s%N)
    echo $((ns / 1000000))
}

# wait_until SECONDS CMD...: polls CMD (every 50 ms, or WAIT_POLL seconds)
# until it succeeds or SECONDS (scaled) have passed; 0 if it succeeded. CMD
# runs at least once.
wait_until() {
    local end
    end=$(($(now_ms) + $(awk -v t="$(scale "$1")" 'BEGIN { printf "%d\n", t * 1000 }')))
    shift
    while true; do
        "$@" && return 0
        [ "$(now_ms)" -lt "$end" ] || return 1
        sleep "${WAIT_POLL:-0.05}"
    done
}

# wait_file FILE SECONDS [PID]: until FILE exists; fails early once PID ended
wait_file() {
    wait_until "$2" _wf_check "$1" "${3:-}"
    [ -e "$1" ]
}
_wf_check() { # FILE PID: 0 when FILE exists, 0 too when PID ended (checked after)
    [ -e "$1" ] && return 0
    [ -n "$2" ] && ! pid_alive "$2" && return 0
    return 1
}

# log_count FILE ERE: lines of FILE matching ERE (0 if no file)
log_count() {
    local c
    c=$(grep -cE -- "$2" "$1" 2>/dev/null)
    echo "${c:-0}"
}

# wait_log FILE ERE SECONDS [N]: until FILE has at least N (default 1)
# lines matching ERE
wait_log() {
    wait_until "$3" _log_at_least "$1" "$2" "${4:-1}"
}
_log_at_least() { [ "$(log_count "$1" "$2")" -ge "$3" ]; }

# One directory per run, under the build tree's tests/out (IT_OUT), else
# under $TMPDIR; removed on exit unless KEEP_TMP=1.
IT_OUT=${IT_OUT:-${TOP_BUILDDIR:-.}/tests/out}
if mkdir -p "$IT_OUT" 2>/dev/null; then
    TEST_TMP=$(mktemp -d "$IT_OUT/it.XXXXXX")
else
    TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/detourd-it.XXXXXX")
fi
if [ -z "$TEST_TMP" ] || ! TEST_TMP=$(cd "$TEST_TMP" && pwd); then
    echo "Bail out! cannot create a temp dir"
    exit 1
fi

# tmpf NAME: a fresh (empty) file in the temp dir; prints its path
tmpf() {
    mktemp "$TEST_TMP/$1.XXXXXX"
}

# --------------------------------------------------------- processes ----

# pid_alive PID: true while PID runs (a zombie counts as ended)
pid_alive() {
    local line st
    if [ -d /proc/self ]; then
        [ -r "/proc/$1/stat" ] || return 1
        { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
        st=${line##*) }
        st=${st%% *}
        [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

forget_pid() {
    local p keep=()
    for p in "${SPAWNED[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    SPAWNED=("${keep[@]}")
}

# wait_exit PID SECONDS: waits (bounded, scaled) for PID to end and reaps it;
# LAST_RC is its exit status. Returns 1 if it is still running.
wait_exit() {
    local pid=$1 i n
    n=$(awk -v t="$(scale "$2")" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        pid_alive "$pid" || break
        sleep 0.05
    done
    if pid_alive "$pid"; then
        LAST_RC=
        return 1
    fi
    wait "$pid" 2>/dev/null
    LAST_RC=$?
    forget_pid "$pid"
    if [ -n "${DETOURD_EXIT_LOG:-}" ] && [[ ${PID_NAME[$pid]:-} == detourd:* ]]; then
        echo "${PID_NAME[$pid]} $pid $LAST_RC" >>"$DETOURD_EXIT_LOG"
    fi
    return 0
}

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL. LAST_RC as wait_exit.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    wait_exit "$pid" "${2:-10}" && return 0
    diag "${PID_NAME[$pid]:-process} $pid ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null
    wait_exit "$pid" 5
    return 1
}

# spawn NAME CMD...: runs CMD in the background (stdout NAME.out, stderr
# NAME.log in the temp dir); LAST_PID is its PID.
spawn() {
    local name=$1
    shift
    "$@" <"/dev/null" >"$TEST_TMP/$name.out" 2>"$TEST_TMP/$name.log" &
    LAST_PID=$!
    SPAWNED+=("$LAST_PID")
    PID_NAME[$LAST_PID]=$name
}

cleanup() {
    local p
    for p in "${SPAWNED[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${SPAWNED[@]}"; do
        wait_exit "$p" 10 || {
            kill -KILL "$p" 2>/dev/null
            wait_exit "$p" 5
        }
    done
    release_ports
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        diag "temp dir kept: $TEST_TMP"
    else
        rm -rf "$TEST_TMP"
        rmdir "$IT_OUT" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# write_config NAME: stdin to a file in the temp dir; prints its path
write_config() {
    cat >"$TEST_TMP/$1"
    echo "$TEST_TMP/$1"
}

# can_connect PORT: one TCP connect to 127.0.0.1:PORT (closed at once)
can_connect() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_listen PORT [PID] [SECONDS]: polls until PORT accepts (bounded);
# fails early if PID ended.
wait_listen() {
    local port=$1 pid=${2:-} i n
    n=$(awk -v t="$(scale "${3:-10}")" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        can_connect "$port" && return 0
        if [ -n "$pid" ] && ! pid_alive "$pid"; then return 1; fi
        sleep 0.05
    done
    return 1
}

# run_detourd ARGS...: runs detourd (wrapped) in the foreground; stdout and
# stderr go to the files named by $RUN_OUT and $RUN_ERR; LAST_RC is its status.
run_detourd() {
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    $DETOURD_WRAPPER "$DETOURD" "$@" <"/dev/null" >"$RUN_OUT" 2>"$RUN_ERR"
    LAST_RC=$?
}

# start_detourd NAME CONFIG PORT [ARGS...]: starts the daemon and waits until
# PORT accepts. LAST_PID is its PID; its stderr is $TEST_TMP/NAME.log.
start_detourd() {
    local name=$1 conf=$2 port=$3
    shift 3
    # shellcheck disable=SC2086
    spawn "detourd:$name" $DETOURD_WRAPPER "$DETOURD" -c "$conf" "$@"
    if ! wait_listen "$port" "$LAST_PID" 10; then
        diag "detourd $name did not start listening on 127.0.0.1:$port"
        diag "$(tail -n 20 "$TEST_TMP/detourd:$name.log" 2>/dev/null)"
        return 1
    fi
}

# reload_daemon PID LOG [SECONDS]: SIGHUP, then waits (bounded) until LOG
# reports the reload's outcome ("reloaded ..." or "reload failed ...");
# RELOAD_OK is 1 if it succeeded. Use it rather than a bare kill -HUP: two
# signals sent close together may be folded into one reload.
reload_daemon() {
    local before_ok before_bad
    before_ok=$(log_count "$2" 'reloaded ')
    before_bad=$(log_count "$2" 'reload failed')
    kill -HUP "$1" || return 1
    wait_until "${3:-20}" _reload_outcome "$2" "$before_ok" "$before_bad" || return 1
    # shellcheck disable=SC2034 # read by the suites
    RELOAD_OK=0
    # shellcheck disable=SC2034
    [ "$(log_count "$2" 'reloaded ')" -gt "$before_ok" ] && RELOAD_OK=1
    return 0
}
_reload_outcome() {
    [ "$(log_count "$1" 'reloaded ')" -gt "$2" ] || [ "$(log_count "$1" 'reload failed')" -gt "$3" ]
}

# daemon_log NAME: path of a daemon's stderr
# mval ADMPORT NAME [k=v]...: one sample of /metrics (labels in any order);
# "absent" when there is none
mval() {
    local port=$1 name=$2
    shift 2
    curl -s --max-time "$(scale 5)" "http://127.0.0.1:$port/metrics" |
        awk -v name="$name" -v want="$*" '
        BEGIN { n = split(want, w, " ") }
        /^#/ { next }
        {
            base = $1
            sub(/\{.*/, "", base)
            if (base != name) next
            for (i = 1; i <= n; i++) {
                k = w[i]; sub(/=.*/, "", k)
                v = w[i]; sub(/^[^=]*=/, "", v)
                if (index($1, k "=\"" v "\"") == 0) next
            }
            print $2; found = 1; exit
        }
        END { if (!found) print "absent" }'
}
# mnum ADMPORT NAME [k=v]...: as mval, 0 when absent
mnum() {
    local v
    v=$(mval "$@")
    [ "$v" = absent ] && v=0
    echo "$v"
}

daemon_log() { echo "$TEST_TMP/detourd:$1.log"; }

# start_backend NAME PORT: the python backend answering as region NAME
start_backend() {
    spawn "backend:$1" "$PYTHON" "$BACKEND_PY" "$2" "$1"
    if ! wait_listen "$2" "$LAST_PID" 10; then
        diag "backend $1 did not start on 127.0.0.1:$2"
        diag "$(tail -n 20 "$TEST_TMP/backend:$1.log" 2>/dev/null)"
        return 1
    fi
}

# wait_closed PORT SECONDS: until new connections to PORT are refused
wait_closed() {
    wait_until "$2" _refused "$1"
}
_refused() { ! can_connect "$1"; }

# hold_port PORT: starts a process that binds 127.0.0.1:PORT (SO_REUSEADDR)
# and listens, and returns once it does (it writes a ready file after
# listen()). LAST_PID is its PID: stop it with stop_pid. Fails, with the
# reason as a diagnostic, if the port cannot be bound.
hold_port() {
    local ready
    ready=$(tmpf "hold.$1")
    rm -f "$ready"
    spawn "hold:$1" "$PYTHON" -c '
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
open(sys.argv[2], "w").close()
end = time.monotonic() + 600  # bounded: never outlives a hung test by much
while time.monotonic() < end:
    time.sleep(1)
' "$1" "$ready"
    if ! wait_file "$ready" 10 "$LAST_PID" || ! pid_alive "$LAST_PID"; then
        diag "cannot hold 127.0.0.1:$1: $(cat "$TEST_TMP/hold:$1.log")"
        return 1
    fi
}

# --------------------------------------------------------- python tool ----

# One script, several modes:
#   ports N                  N distinct free loopback ports
#   send [opts] PART...      a raw client (see below); received bytes to stdout
#   parse FILE [--head L]    the HTTP responses in FILE, one fact per line
# PART is a string with \r \n \t \xHH \\ escapes, or @file:PATH, or an
# action: @responses:N (wait for N answers), @ready:FILE (create FILE),
# @wait:FILE (wait until FILE exists, at most 60 s scaled).
# send options:
#   --timeout S     idle read timeout (default 2)
#   --responses N   stop once N responses are complete, then wait --grace S
#                   (default 0.5) for EOF
#   --sequential    send part k+1 only after k responses arrived
#   --pause S       sleep between parts (not scaled: it shapes the traffic)
#   --split N       send every part in N-byte writes (--pause between them)
#   --shutdown      half-close after the last part
#   --head LIST|all which responses answer HEAD (they have no body)
#   --parse-to F    also write what "parse" would print about them to F
#   --tls NAME      speak TLS (NAME for SNI, "-" for none; no hostname check)
#   --cafile F      with --tls: verify the server's certificate against F
#   --tls-info F    with --tls: write "VERSION SERIAL ALPN" of the handshake
#                   to F (SERIAL needs --cafile)
# send exit status: 0 the server closed, 3 timed out with the connection open,
# 4 reset, 2 cannot connect, 5 the TLS handshake failed. Times are scaled by $TIMEOUT_SCALE.
read -r -d '' IT_PY <<'PYEOF'
import codecs, errno, os, random, socket, sys, time

SCALE = float(os.environ.get("TIMEOUT_SCALE") or 1)

def part_bytes(s):
    if s.startswith("@file:"):
        with open(s[6:], "rb") as f:
            return f.read()
    return codecs.escape_decode(s.encode("utf-8", "surrogateescape"))[0]

def head_set(spec):
    if spec == "all":
        return "all"
    return {int(x) for x in spec.split(",") if x}

def parse(buf, heads, final):
    """Complete responses in buf: list of (status_line, headers, body)."""
    out, pos = [], 0
    while pos < len(buf):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = buf[pos:end].decode("latin-1").split("\r\n")
        hdrs = []
        for l in lines[1:]:
            n, _, v = l.partition(":")
            hdrs.append((n.strip().lower(), v.strip()))
        parts = lines[0].split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            status = 0
        idx = len(out) + 1
        bstart = end + 4
        cl = [v for n, v in hdrs if n == "content-length"]
        if heads == "all" or idx in heads or 100 <= status < 200 or status in (204, 304):
            blen = 0
        elif cl and cl[0].isdigit():
            blen = int(cl[0])
        elif final:
            blen = len(buf) - bstart
        else:
            break
        if bstart + blen > len(buf):
            break
        out.append((lines[0], hdrs, buf[bstart:bstart + blen]))
        pos = bstart + blen
    return out, pos

def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except OSError:
            return True

def claim(lockdir, p, owner):
    """Claims port p for the shell owner: True if it is ours now."""
    path = os.path.join(lockdir, str(p))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or "0")
                age = time.time() - os.stat(path).st_mtime
            except (OSError, ValueError):
                return False
            if (pid and pid_alive(pid)) or (not pid and age < 10):
                return False
            try:  # stale: its run ended without releasing it
                os.unlink(path)
            except OSError:
                return False
            continue
        except OSError:
            return False
        os.write(fd, str(owner).encode())
        os.close(fd)
        return True
    return False

def unclaim(lockdir, p, owner):
    path = os.path.join(lockdir, str(p))
    try:
        with open(path) as f:
            if f.read().strip() == str(owner):
                os.unlink(path)
    except OSError:
        pass

def ports(n, lockdir, owner, exclude):
    lo, hi = 20000, 32767
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
        if eph > 12000:  # stay below the ephemeral range: no clash with clients
            lo, hi = 10000, min(eph - 1, 32767)
    except (OSError, ValueError, IndexError):
        pass
    got, socks = [], []
    for _ in range(20000):
        if len(got) == n:
            break
        p = random.randint(lo, hi)
        if p in got or str(p) in exclude:
            continue
        if not claim(lockdir, p, owner):
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))  # no SO_REUSEADDR: TIME_WAIT counts as busy
        except OSError:
            s.close()
            unclaim(lockdir, p, owner)
            continue
        socks.append(s)
        got.append(p)
    for s in socks:
        s.close()
    print(" ".join(map(str, got)))

def tls_wrap(s, name, cafile, info):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        t = ctx.wrap_socket(s, server_hostname=None if name == "-" else name)
    except OSError as e:
        sys.stderr.write("raw: tls: %s\n" % e)
        s.close()
        return None
    if info:
        with open(info, "w") as f:
            f.write("%s %s %s\n" % (t.version(), (t.getpeercert() or {}).get("serialNumber", "-"),
                                     t.selected_alpn_protocol() or "-"))
    return t

def send(argv):
    timeout, grace, pause, want, seq, shut, heads = 2.0, 0.5, 0.0, 0, False, False, set()
    split, dump_to = 0, None
    tls, cafile, tls_info = None, None, None
    port, parts, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--timeout": timeout = float(argv[i + 1]); i += 2
        elif a == "--grace": grace = float(argv[i + 1]); i += 2
        elif a == "--pause": pause = float(argv[i + 1]); i += 2
        elif a == "--responses": want = int(argv[i + 1]); i += 2
        elif a == "--head": heads = head_set(argv[i + 1]); i += 2
        elif a == "--sequential": seq = True; i += 1
        elif a == "--shutdown": shut = True; i += 1
        elif a == "--split": split = int(argv[i + 1]); i += 2
        elif a == "--parse-to": dump_to = argv[i + 1]; i += 2
        elif a == "--tls": tls = argv[i + 1]; i += 2
        elif a == "--cafile": cafile = argv[i + 1]; i += 2
        elif a == "--tls-info": tls_info = argv[i + 1]; i += 2
        elif port is None: port = int(a); i += 1
        elif a.startswith(("@responses:", "@ready:", "@wait:")):
            k, _, v = a[1:].partition(":"); parts.append((k, v)); i += 1
        else: parts.append(part_bytes(a)); i += 1
    if split > 0:  # every piece its own write (and --pause between them)
        parts = [p[j:j + split] if isinstance(p, bytes) else p
                 for p in parts for j in (range(0, len(p), split) if isinstance(p, bytes) else [0])]
    timeout *= SCALE  # --pause is not scaled: it shapes the traffic
    grace *= SCALE
    buf = bytearray()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        sys.stderr.write("raw: connect: %s\n" % e)
        return 2
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        s = tls_wrap(s, tls, cafile, tls_info)
        if s is None:
            return 5
    hard_end = time.monotonic() + 20 * timeout + 10  # overall bound
    if any(isinstance(p, tuple) and p[0] == "wait" for p in parts):
        hard_end += 60 * SCALE
    ndata = sum(1 for p in parts if isinstance(p, bytes))

    def complete():
        return len(parse(bytes(buf), heads, False)[0])

    def read_until(n, idle):
        """Reads until n responses (n=0: until EOF). -> cond|eof|timeout|reset"""
        while True:
            if n and complete() >= n:
                return "cond"
            if time.monotonic() > hard_end:
                return "timeout"
            s.settimeout(idle)
            try:
                d = s.recv(65536)
            except socket.timeout:
                return "timeout"
            except OSError as e:
                sys.stderr.write("raw: recv: %s\n" % e)
                return "reset"
            if not d:
                return "eof"
            buf.extend(d)

    state = None
    k = -1
    for p in parts:
        if isinstance(p, tuple):  # an action between the parts
            what, arg = p
            if what == "ready":
                open(arg, "w").close()
                continue
            if what == "wait":
                wend = time.monotonic() + 60 * SCALE
                while not os.path.exists(arg) and time.monotonic() < wend:
                    time.sleep(0.02)
                if os.path.exists(arg):
                    continue
                sys.stderr.write("raw: gave up waiting for %s\n" % arg)
                state = "timeout"
                break
            state = read_until(int(arg), timeout)  # responses
            if state != "cond":
                break
            state = None
            continue
        k += 1
        if k and pause:
            time.sleep(pause)
        try:
            s.settimeout(timeout)
            s.sendall(p)
        except OSError as e:
            sys.stderr.write("raw: send: %s\n" % e)
            break
        if seq and k + 1 < ndata:
            state = read_until(k + 1, timeout)
            if state != "cond":
                break
    else:
        state = None
    if shut:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    if state in (None, "cond"):
        state = read_until(want, timeout)
        if state == "cond":
            state = read_until(0, grace)
            if state == "timeout":
                state = "open"
    elif state == "timeout":
        state = "open"
    s.close()
    sys.stdout.buffer.write(bytes(buf))
    sys.stdout.flush()
    if dump_to:
        with open(dump_to, "w") as f:
            dump(bytes(buf), heads, f.write)
    return {"eof": 0, "cond": 0, "open": 3, "timeout": 3, "reset": 4}[state]

def parse_file(argv):
    heads = set()
    if len(argv) > 2 and argv[1] == "--head":
        heads = head_set(argv[2])
    with open(argv[0], "rb") as f:
        buf = f.read()
    dump(buf, heads, sys.stdout.write)

def dump(buf, heads, w):
    res, pos = parse(buf, heads, True)
    w("count %d\n" % len(res))
    w("trailing %d\n" % (len(buf) - pos))
    for i, (sl, hdrs, body) in enumerate(res, 1):
        w("R%d statusline %s\n" % (i, sl))
        parts = sl.split(" ", 2)
        w("R%d status %s\n" % (i, parts[1] if len(parts) > 1 else ""))
        for n, v in hdrs:
            w("R%d h %s %s\n" % (i, n, v))
        w("R%d body_len %d\n" % (i, len(body)))
        w("R%d body %s\n" % (i, body.decode("latin-1").encode("unicode_escape").decode()))

mode = sys.argv[1]
if mode == "ports":
    ports(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:])
elif mode == "send":
    sys.exit(send(sys.argv[2:]))
elif mode == "parse":
    parse_file(sys.argv[2:])
else:
    sys.exit("unknown mode " + mode)
PYEOF

USED_PORTS=()
# Ports are claimed in a directory shared by every test run on this host (a
# file per port holding the claiming shell's PID), so that concurrent runs
# (two checkouts, make -j, a stress run) never pick the same port between
# choosing it and binding it. A claim whose PID has ended is stale and taken
# over. The claims are released at exit.
IT_PORT_LOCKS=${IT_PORT_LOCKS:-${TMPDIR:-/tmp}/detourd-test-ports}
if ! { mkdir -p "$IT_PORT_LOCKS" 2>/dev/null && chmod 1777 "$IT_PORT_LOCKS" 2>/dev/null; } &&
    [ ! -w "$IT_PORT_LOCKS" ]; then
    IT_PORT_LOCKS=$TEST_TMP/ports # cannot share: at least no clash within this run
    mkdir -p "$IT_PORT_LOCKS"
fi

# alloc_ports N: sets PORTS to N distinct free loopback ports (below 32768
# and below the ephemeral range), claimed for this run, none handed out
# before in this run.
alloc_ports() {
    # shellcheck disable=SC2207
    PORTS=($("$PYTHON" -c "$IT_PY" ports "$1" "$IT_PORT_LOCKS" "$$" "${USED_PORTS[@]}"))
    USED_PORTS+=("${PORTS[@]}")
    [ "${#PORTS[@]}" -eq "$1" ]
}

# release_ports: drops this run's port claims (called at exit)
release_ports() {
    local p f owner
    for p in "${USED_PORTS[@]}"; do
        f=$IT_PORT_LOCKS/$p
        owner=$(cat "$f" 2>/dev/null)
        [ "$owner" = "$$" ] && rm -f "$f"
    done
}

# raw OUT PORT [send options] PART...: raw exchange; the bytes received go to
# OUT, the parsed responses to OUT.p; RAW_RC is the exit status of "send"
# (0 closed by the server, 3 still open, 4 reset, 2 no connection) and
# RAW_MS how long it took.
raw() {
    local out=$1 t0
    shift
    t0=$(now_ms)
    "$PYTHON" -c "$IT_PY" send --parse-to "$out.p" "$@" >"$out" 2>"$out.err"
    RAW_RC=$?
    RAW_MS=$(($(now_ms) - t0))
}

# raw_bg OUT PORT [send options] PART...: like raw, in the background;
# RAW_PID is its PID. Wait for its @ready: marks with wait_file, then for its
# end with raw_wait OUT (which sets RAW_RC and parses OUT like raw).
raw_bg() {
    local out=$1
    shift
    "$PYTHON" -c "$IT_PY" send --parse-to "$out.p" "$@" >"$out" 2>"$out.err" &
    RAW_PID=$!
    SPAWNED+=("$RAW_PID")
    PID_NAME[$RAW_PID]="client:${out##*/}"
}

# raw_wait OUT [PID] [SECONDS]: waits (bounded) for a raw_bg client to end;
# RAW_RC is its status (124 if it had to be stopped)
raw_wait() {
    local pid=${2:-$RAW_PID}
    if wait_exit "$pid" "${3:-60}"; then
        RAW_RC=$LAST_RC
    else
        stop_pid "$pid" 2
        RAW_RC=124
        why "raw client $pid did not end"
    fi
    [ -e "$1.p" ] || "$PYTHON" -c "$IT_PY" parse "$1" >"$1.p"
}

# r_count OUT / r_status OUT N / r_hdr OUT N NAME / r_body_len OUT N /
# r_hdr_count OUT N NAME / r_body OUT N (escaped)
r_count() { sed -n 's/^count //p' "$1.p"; }
r_trailing() { sed -n 's/^trailing //p' "$1.p"; }
r_status() { sed -n "s/^R$2 status //p" "$1.p"; }
r_hdr() {
    local name
    name=$(printf '%s' "$3" | tr '[:upper:]' '[:lower:]')
    awk -v p="R$2" -v n="$name" '$1 == p && $2 == "h" && $3 == n {
        sub(/^[^ ]+ [^ ]+ [^ ]+ ?/, ""); print; exit }' "$1.p"
}
r_hdr_count() {
    local name
    name=$(printf '%s' "$3" | tr '[:upper:]' '[:lower:]')
    awk -v p="R$2" -v n="$name" '$1 == p && $2 == "h" && $3 == n { c++ } END { print c + 0 }' "$1.p"
}
r_body_len() { sed -n "s/^R$2 body_len //p" "$1.p"; }
r_body() { sed -n "s/^R$2 body //p" "$1.p"; }

# raw_diag OUT: what a raw exchange got, for a failing test
raw_diag() {
    why "raw exchange: rc=$RAW_RC after ${RAW_MS}ms; received ($(wc -c <"$1") bytes):"
    why "$(head -c 600 "$1" | cat -v)"
    [ -s "$1.err" ] && why "$(cat "$1.err")"
    return 1
}

# expect_response OUT N STATUS [LOCATION]: response N has STATUS (and LOCATION)
expect_response() {
    local got
    got=$(r_status "$1" "$2")
    if [ "$got" != "$3" ]; then
        why "response $2: status '$got', want '$3'"
        raw_diag "$1"
        return 1
    fi
    if [ $# -ge 4 ]; then
        got=$(r_hdr "$1" "$2" location)
        [ "$got" = "$4" ] || why "response $2: Location '$got', want '$4'" || return 1
    fi
}

# expect_closed / expect_open: how the last raw exchange ended
expect_closed() {
    [ "$RAW_RC" = 0 ] || why "connection not closed by the server (raw rc=$RAW_RC)"
}
expect_open() {
    [ "$RAW_RC" = 3 ] || why "connection did not stay open (raw rc=$RAW_RC)"
}

# http_code PORT PATH [curl args]: the status of a plain curl request
http_code() {
    local port=$1 path=$2
    shift 2
    curl -sS -o /dev/null -w '%{http_code}' --max-time "$(scale 5)" "$@" \
        "http://127.0.0.1:$port$path" 2>/dev/null
}

# still_served PORT [HOST]: a normal request on a new connection gets the
# redirect
still_served() {
    local code hdr=()
    [ -n "${2:-}" ] && hdr=(-H "Host: $2")
    code=$(http_code "$1" /still-served "${hdr[@]}")
    [ "$code" = 307 ] || why "a normal request afterwards got '$code', want 307"
}

# json_field FILE KEY: a field of the backend's JSON answer
json_field() {
    "$PYTHON" -c 'import json,sys
try:
    v = json.load(open(sys.argv[1]))[sys.argv[2]]
except Exception as e:
    v = "<%s>" % e
print(v)' "$1" "$2"
}

# t_no_sanitizer_reports: fails if any daemon's log holds a sanitizer
# report (ASan/LSan/UBSan/TSan builds); use as the last test of a suite
t_no_sanitizer_reports() {
    local f found=""
    for f in "$TEST_TMP"/detourd:*.log; do
        [ -e "$f" ] || continue
        if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|ThreadSanitizer' "$f"; then
            found+=" ${f##*/}"
            why "$(grep -m 5 -E 'Sanitizer|runtime error:' "$f")"
        fi
    done
    [ -z "$found" ] || why "sanitizer reports in:$found"
}
