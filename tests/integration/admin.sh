#!/usr/bin/env bash
# Integration tests of the admin listener: /healthz, /status (JSON), /metrics
# (Prometheus text, checked by promtool), the HTML status page (rendered by
# headless Chromium), admin.allow, and its separation from the redirect
# port. TAP on stdout. Network: 127.0.0.1 and ::1 only.
#
# Chromium and promtool come from Debian's `chromium` and `prometheus`
# packages; when missing they are installed if we are root, else the tests
# that need them are skipped. The screenshot of the page goes to
# ${TEST_OUTPUT_DIR:-$TOP_BUILDDIR/tests/out}/status.png.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py
# the probe timeout is generous (a loaded host, valgrind): a backend that is
# up must never look down
FAST="interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: $(awk -v s="$TIMEOUT_SCALE" 'BEGIN { printf "%d", 1000 * s }')ms, rise: 2, fall: 2, jitter: 0%"
OUT_DIR=${TEST_OUTPUT_DIR:-${TOP_BUILDDIR:-.}/tests/out}

alloc_ports 15 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]} A=${PORTS[2]} B=${PORTS[3]} C=${PORTS[4]}
LP=${PORTS[5]} ADMP=${PORTS[6]} LD=${PORTS[7]} ADMD=${PORTS[8]}
L6=${PORTS[9]} ADM6=${PORTS[10]} LX=${PORTS[11]}
LL=${PORTS[12]} ADML=${PORTS[13]} LCLOSED=${PORTS[14]}

# ------------------------------------------------------------ helpers ----

declare -A BPID=() DPID=()

# backend NAME PORT: a health target; its mode file is $TEST_TMP/NAME.mode
backend() {
    echo ok >"$TEST_TMP/$1.mode"
    spawn "hb:$1" "$PYTHON" "$HB" "$2" "$TEST_TMP/$1.mode"
    BPID[$1]=$LAST_PID
    wait_listen "$2" "$LAST_PID" 10 || why "backend $1 did not start"
}

# conf FILE LISTEN ADMIN_LISTEN PRIMARY_PORT [ALLOW]: two pools; api has a
# primary (tier 1), a secondary (tier 2) and a drained spare; web (the
# default pool) one region. Two workers, fast checks.
conf() {
    local allow=""
    [ -n "${5:-}" ] && allow="
  allow: $5"
    cat >"$1" <<YAML
listen: ["127.0.0.1:$2"]
workers: 2
admin:
  listen: "$3"$allow
checks: {$FAST}
pools:
  - name: api
    hosts: [api.test]
    regions:
      - {name: primary, url: "http://127.0.0.1:$4", priority: 1, weight: 3}
      - {name: secondary, url: "http://127.0.0.1:$B", priority: 2, weight: 2}
      - {name: spare, url: "http://127.0.0.1:$B/spare", priority: 2, weight: 1, state: drain}
  - name: web
    regions:
      - {name: w1, url: "http://127.0.0.1:$B/w1", weight: 5}
YAML
}

# get URL OUTFILE [curl args]: body to OUTFILE; prints "CODE CONTENT_TYPE"
get() {
    local url=$1 out=$2
    shift 2
    curl -sS -g -o "$out" -w '%{http_code} %{content_type}' --max-time "$(scale 5)" "$@" \
        "$url" 2>"$out.err"
}

# wait_admin HOSTPORT PID: polls until the admin listener answers (bounded)
wait_admin() {
    local i n code
    n=$(awk -v t="$(scale 10)" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        code=$(curl -s -g -o /dev/null -w '%{http_code}' --max-time 1 "http://$1/healthz")
        [ "$code" != 000 ] && return 0
        pid_alive "$2" || break
        sleep 0.05
    done
    why "the admin listener $1 never answered"
}

# start NAME CONF LISTEN ADMIN_HOSTPORT: a daemon with its admin listener up
start() {
    start_detourd "$1" "$2" "$3" || why "detourd $1 did not start: $(tail -5 "$(daemon_log "$1")")" || return 1
    DPID[$1]=$LAST_PID
    wait_admin "$4" "$LAST_PID"
}

# One Python helper, several modes (see the end of the script):
#   schema FILE              problems with /status's JSON, one a line
#   get FILE EXPR            EXPR over the JSON: s, P(pool), R(pool, region)
#   metric FILE NAME [k=v]...  the sum of NAME's samples with these labels,
#                            or "absent"
#   contract FILE VERSION    problems with the contract's metrics
#   dom FILE POOL/REGION=STATE...  problems with the dumped status page
#   look PROBE EVENTS START desktop|phone  problems with what LOOK_PROBE
#                            measured (EVENTS: a /events replay; START:
#                            /status start_time)
read -r -d '' ADM_PY <<'PYEOF'
import html.parser, json, re, sys

def load(path):
    with open(path) as f:
        return json.load(f)

def schema(path):
    bad = []
    try:
        s = load(path)
    except Exception as e:
        print("not JSON: %s" % e)
        return
    def isint(v): return isinstance(v, int) and not isinstance(v, bool)
    def isnum(v): return isinstance(v, (int, float)) and not isinstance(v, bool)
    def isstr(v): return isinstance(v, str)
    def isbool(v): return isinstance(v, bool)
    def opt(f): return lambda v: v is None or f(v)
    def enum(*a): return lambda v: v in a
    def strs(v): return isinstance(v, list) and all(isstr(x) for x in v)
    def check(obj, where, spec):
        if not isinstance(obj, dict):
            bad.append("%s: not an object" % where)
            return False
        for k, f in spec.items():
            if k not in obj:
                bad.append("%s: no %s" % (where, k))
            elif not f(obj[k]):
                bad.append("%s.%s: bad value %r" % (where, k, obj[k]))
        return True
    check(s, "status", {"version": isstr, "start_time": isnum, "config": lambda v: isinstance(v, dict),
                        "connections_active": isint, "pools": lambda v: isinstance(v, list)})
    c = s.get("config") or {}
    check(c, "config", {"path": isstr, "loaded_at": isnum, "last_reload": opt(lambda v: isinstance(v, dict)),
                        "reloads": lambda v: isinstance(v, dict)})
    if isinstance(c.get("last_reload"), dict):
        check(c["last_reload"], "config.last_reload", {"time": isnum, "success": isbool})
    check(c.get("reloads") or {}, "config.reloads", {"success": isint, "failure": isint})
    for p in s.get("pools") or []:
        pw = "pool %s" % p.get("name")
        check(p, pw, {"name": isstr, "hosts": strs, "default": isbool,
                      "balance": enum("weighted", "latency", "hash"),
                      "all_down": enum("fail_open", "fallback", "reject"), "chosen": strs,
                      "regions": lambda v: isinstance(v, list) and len(v) > 0})
        names = [r.get("name") for r in p.get("regions") or []]
        for ch in p.get("chosen") or []:
            if ch not in names and ch not in ("fallback", "reject"):
                bad.append("%s: chosen %r is no region" % (pw, ch))
        for r in p.get("regions") or []:
            rw = "%s region %s" % (pw, r.get("name"))
            check(r, rw, {"name": isstr, "url": isstr, "state": enum("up", "down", "drain"),
                          "override": enum("auto", "up", "down", "drain"), "check_up": isbool,
                          "weight": isint, "priority": isint,
                          "last_check": opt(lambda v: isinstance(v, dict)),
                          "consecutive_successes": isint, "consecutive_failures": isint,
                          "latency_ms": opt(isnum), "requests": isint,
                          "last_change": opt(isnum), "state_changes": isint})
            if isinstance(r.get("last_check"), dict):
                check(r["last_check"], rw + " last_check",
                      {"time": isnum, "ok": isbool, "reason": isstr, "detail": isstr,
                       "latency_ms": opt(isnum), "status": opt(isint)})
            ov, st = r.get("override"), r.get("state")
            if ov in ("up", "down", "drain") and st != ov:
                bad.append("%s: override %s but state %s" % (rw, ov, st))
            if ov == "auto" and r.get("weight", 1) > 0 and st != ("up" if r.get("check_up") else "down"):
                bad.append("%s: override auto, check_up %s, but state %s" % (rw, r.get("check_up"), st))
            if st != "up" and r.get("name") in (p.get("chosen") or []):
                bad.append("%s: chosen while %s" % (rw, st))
    for b in bad:
        print(b)

def get(path, expr):
    s = load(path)
    def P(name):
        return [p for p in s["pools"] if p["name"] == name][0]
    def R(pool, region):
        return [r for r in P(pool)["regions"] if r["name"] == region][0]
    try:
        v = eval(expr, {"s": s, "P": P, "R": R, "len": len, "sum": sum, "sorted": sorted})
    except Exception as e:
        v = "<error %s: %s>" % (type(e).__name__, e)
    print(v if isinstance(v, str) else json.dumps(v))

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')

def prom(path):
    """-> (help {name: text}, type {name: type}, [(name, labels, value)], problems)"""
    helps, types, samples, bad = {}, {}, [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "HELP":
                    helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                elif len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3].strip()
                continue
            m = SAMPLE.match(line)
            if not m:
                bad.append("line %d unparsable: %s" % (n, line))
                continue
            labels, rest = {}, m.group(3) or ""
            while rest.strip():
                lm = LABEL.match(rest)
                if not lm:
                    bad.append("line %d: bad labels: %s" % (n, line))
                    break
                labels[lm.group(1)] = lm.group(2)
                rest = rest[lm.end():]
            try:
                v = float(m.group(4))
            except ValueError:
                bad.append("line %d: bad value: %s" % (n, line))
                continue
            samples.append((m.group(1), labels, v))
    return helps, types, samples, bad

def metric(path, name, want):
    _, _, samples, _ = prom(path)
    want = dict(w.split("=", 1) for w in want)
    vals = [v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in want.items())]
    if not vals:
        print("absent")
    else:
        t = sum(vals)
        print(int(t) if t == int(t) else t)

CONTRACT = [
    ("detourd_requests_total", "counter", {"pool", "region", "code"}),
    ("detourd_region_up", "gauge", {"pool", "region"}),
    ("detourd_region_healthy", "gauge", {"pool", "region"}),
    ("detourd_region_state_changes_total", "counter", {"pool", "region"}),
    ("detourd_check_duration_seconds", "histogram", {"pool", "region"}),
    ("detourd_check_failures_total", "counter", {"pool", "region", "reason"}),
    ("detourd_connections_active", "gauge", set()),
    ("detourd_config_reloads_total", "counter", {"result"}),
    ("detourd_config_last_reload_successful", "gauge", set()),
    ("detourd_config_last_reload_timestamp_seconds", "gauge", set()),
    ("detourd_build_info", "gauge", {"version"}),
    ("detourd_start_time_seconds", "gauge", set()),
    ("process_cpu_seconds_total", "counter", set()),
    ("process_resident_memory_bytes", "gauge", set()),
    ("process_virtual_memory_bytes", "gauge", set()),
    ("process_start_time_seconds", "gauge", set()),
    ("process_open_fds", "gauge", set()),
    ("process_max_fds", "gauge", set()),
]

def contract(path, version):
    helps, types, samples, bad = prom(path)
    for name, typ, labels in CONTRACT:
        if name not in helps:
            bad.append("%s: no HELP line" % name)
        if types.get(name) != typ:
            bad.append("%s: TYPE %s, want %s" % (name, types.get(name), typ))
        if typ == "histogram":
            parts = {"_bucket": labels | {"le"}, "_sum": labels, "_count": labels}
        else:
            parts = {"": labels}
        for suffix, want in parts.items():
            got = [l for n, l, v in samples if n == name + suffix]
            if not got:
                bad.append("%s%s: no sample" % (name, suffix))
            for l in got:
                if set(l) != want:
                    bad.append("%s%s: labels %s, want %s" % (name, suffix, sorted(l), sorted(want)))
    if types.get("detourd_check_duration_seconds") == "histogram":
        series = {}
        for n, l, v in samples:
            if n == "detourd_check_duration_seconds_bucket":
                key = (l.get("pool"), l.get("region"))
                le = float("inf") if l.get("le") == "+Inf" else float(l.get("le", "nan"))
                series.setdefault(key, []).append((le, v))
        counts = {(l.get("pool"), l.get("region")): v for n, l, v in samples
                  if n == "detourd_check_duration_seconds_count"}
        for key, bs in series.items():
            bs.sort()
            if bs[-1][0] != float("inf"):
                bad.append("check_duration %s: no le=\"+Inf\" bucket" % (key,))
            elif counts.get(key) != bs[-1][1]:
                bad.append("check_duration %s: _count %s != +Inf bucket %s" % (key, counts.get(key), bs[-1][1]))
            if any(b[1] < a[1] for a, b in zip(bs, bs[1:])):
                bad.append("check_duration %s: buckets not cumulative" % (key,))
    for n, l, v in samples:
        if n in ("detourd_region_up", "detourd_region_healthy") and v not in (0, 1):
            bad.append("%s %s = %s" % (n, l, v))
        if n == "detourd_config_reloads_total" and l.get("result") not in ("success", "failure"):
            bad.append("reloads_total result=%r" % l.get("result"))
        if n == "detourd_build_info" and (l.get("version") != version or v != 1):
            bad.append("build_info %s = %s, want version %s = 1" % (l, v, version))
    for b in bad:
        print(b)

class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ready, self.rows, self.cur = None, [], None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready")
        if tag == "tr" and "data-region" in a:
            self.cur = {"attrs": a, "text": ""}
            self.rows.append(self.cur)
    def handle_endtag(self, tag):
        if tag == "tr":
            self.cur = None
    def handle_data(self, d):
        if self.cur is not None:
            self.cur["text"] += d + " "

def dom(path, want):
    d = Dom()
    with open(path, encoding="utf-8", errors="replace") as f:
        d.feed(f.read())
    bad = []
    if d.ready != "1":
        bad.append("body data-ready=%r, want \"1\"" % d.ready)
    want = dict(w.split("=", 1) for w in want)
    got = {}
    for r in d.rows:
        a = r["attrs"]
        got["%s/%s" % (a.get("data-pool"), a.get("data-region"))] = r
    if sorted(got) != sorted(want):
        bad.append("rows %s, want %s" % (sorted(got), sorted(want)))
    for key, st in want.items():
        r = got.get(key)
        if not r:
            continue
        a, text = r["attrs"], " ".join(r["text"].split())
        if a.get("data-state") != st:
            bad.append("%s: data-state %r, want %r" % (key, a.get("data-state"), st))
        if "state-" + st not in (a.get("class") or "").split():
            bad.append("%s: class %r, want state-%s" % (key, a.get("class"), st))
        if not re.search(r"\b%s\b" % st, text):
            bad.append("%s: text %r does not say %s" % (key, text, st))
    for b in bad:
        print(b)


def look(probe_path, events_path, start, phone):
    """problems with what the page probe (LOOK_PROBE) measured"""
    import datetime
    pr = json.load(open(probe_path))
    bad = []
    if not isinstance(pr, dict):
        print("the probe failed: %r" % pr)
        return
    evs = []
    for line in open(events_path, encoding="utf-8"):
        if line.startswith("data: "):
            e = json.loads(line[6:])
            t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
            evs.append((e["kind"], e.get("pool"), round(t.timestamp() * 1000)))
    if pr["compact"] != "1":
        bad.append("not in the compact mode with 5 pools")
    if pr["scrollW"] > pr["innerW"] or pr["scrollWOpen"] > pr["innerW"]:
        bad.append("scrolls sideways: %s (%s with every pool open) px wide in %s" % (pr["scrollW"], pr["scrollWOpen"], pr["innerW"]))
    if not phone and any(b > pr["innerH"] for b in pr["fold"]):
        bad.append("not every pool above the fold (%s px): summaries end at %s" % (pr["innerH"], pr["fold"]))
    for m, c in pr["colours"].items():
        got = {k: v for k, v in c.items() if v is not None}
        if len(got) < 3 or len(set(got.values())) != 1:
            bad.append("%s: not one colour: %s" % (m, c))
    if pr["tints"]["row"] != pr["tints"]["table"] or not pr["tints"]["row"]:
        bad.append("maintenance tints: row %s, window table %s" % (pr["tints"]["row"], pr["tints"]["table"]))
    grouped = 0
    for tl in pr["tl"]:
        w = "pool %s" % tl["pool"]
        if tl["t0"] != start * 1000:
            bad.append("%s: the timeline starts at %s, detourd at %s" % (w, tl["t0"], start * 1000))
        if not re.search(r", since detourd started at [0-9:]{8}$", tl["label"]) or \
                not tl["legend"].startswith("since detourd started at "):
            bad.append("%s: does not say it shows since the start: %r / %r" % (w, tl["label"], tl["legend"][:60]))
        ax = sorted(tl["axis"], key=lambda a: a["box"][0])
        texts = [a["text"] for a in ax]
        if "now" not in texts or len(ax) < 3:
            bad.append("%s: axis labels %s" % (w, texts))
        sl, sr = tl["box"][0], tl["box"][1]
        for a, b in zip(ax, ax[1:]):
            if b["box"][0] < a["box"][1] + 2:
                bad.append("%s: axis labels %r %s and %r %s overlap" % (w, a["text"], a["box"], b["text"], b["box"]))
        for a in ax:
            if a["box"][0] < sl - 0.5 or a["box"][1] > sr + 0.5:
                bad.append("%s: axis label %r %s outside the timeline %s" % (w, a["text"], a["box"], [sl, sr]))
        first = {}
        for s in tl["segs"]:
            first[s["region"]] = min(first.get(s["region"], 1e9), s["x"])
            if s["state"] == "unknown":
                bad.append("%s: %s has a segment not known since the start" % (w, s["region"]))
        for r, x in first.items():
            if abs(x - tl["lw"]) > 0.01:
                bad.append("%s: %s's band starts at x %s, the timeline at %s" % (w, r, x, tl["lw"]))
        want = sorted(t for k, p, t in evs if k == "reload" or (k == "all_down" and p == tl["pool"]))
        got = sorted(t for m in tl["marks"] for t in m["times"])
        if got != want or sum(m["count"] for m in tl["marks"]) != len(want):
            bad.append("%s: markers for %s, want %s" % (w, got, want))
        marks = sorted(tl["marks"], key=lambda m: m["box"][0])
        for a, b in zip(marks, marks[1:]):
            if b["box"][0] < a["box"][1]:
                bad.append("%s: markers %s and %s overlap" % (w, a, b))
        span, bw = max(tl["now"] - tl["t0"], 1000), tl["width"] - tl["lw"]
        def x(t): return tl["lw"] + bw * (t - tl["t0"]) / span
        for a, b in zip(marks, marks[1:]):
            if x(min(b["times"])) - x(max(a["times"])) < 16 - 0.01:
                bad.append("%s: separate markers %s px apart (closer than 16 are one)" % (w, x(min(b["times"])) - x(max(a["times"]))))
        grouped += sum(1 for m in marks if m["count"] > 1)
    if phone and not grouped:
        bad.append("the burst of reloads is no group at a phone's width: %s" % [[m["times"] for m in tl["marks"]] for tl in pr["tl"]][:1])
    for b in bad:
        print(b)

mode = sys.argv[1]
if mode == "schema":
    schema(sys.argv[2])
elif mode == "get":
    get(sys.argv[2], sys.argv[3])
elif mode == "metric":
    metric(sys.argv[2], sys.argv[3], sys.argv[4:])
elif mode == "contract":
    contract(sys.argv[2], sys.argv[3])
elif mode == "dom":
    dom(sys.argv[2], sys.argv[3:])
elif mode == "look":
    look(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "phone")
else:
    sys.exit("unknown mode " + mode)
PYEOF

adm() { "$PYTHON" -c "$ADM_PY" "$@"; }

# status PORT: fetches /status to a fresh file; prints its path ("" on error)
status() {
    local f code
    f=$(tmpf status)
    code=$(get "http://127.0.0.1:$1/status" "$f")
    [ "${code%% *}" = 200 ] && echo "$f"
}

# sget PORT EXPR: one value out of a fresh /status
sget() {
    local f
    f=$(status "$1")
    if [ -n "$f" ]; then adm get "$f" "$2"; else echo "<no status>"; fi
}

# wait_sget PORT EXPR WANT SECONDS: polls /status until EXPR gives WANT
wait_sget() {
    local i n got
    n=$(awk -v t="$(scale "$4")" 'BEGIN { printf "%d\n", t / 0.1 + 1 }')
    for ((i = 0; i < n; i++)); do
        got=$(sget "$1" "$2")
        [ "$got" = "$3" ] && return 0
        sleep 0.1
    done
    why "waited $4 s for $2 = $3 in /status, last $got"
}

# metrics PORT: fetches /metrics to a fresh file; prints its path
metrics() {
    local f
    f=$(tmpf metrics)
    get "http://127.0.0.1:$1/metrics" "$f" >/dev/null
    echo "$f"
}

# mget PORT NAME [k=v]...: one metric out of a fresh /metrics
mget() {
    local f
    f=$(metrics "$1")
    adm metric "$f" "${@:2}"
}

# wait_mget PORT WANT SECONDS NAME [k=v]...: polls until the metric is WANT
wait_mget() {
    local port=$1 want=$2 secs=$3 i n got
    shift 3
    n=$(awk -v t="$(scale "$secs")" 'BEGIN { printf "%d\n", t / 0.1 + 1 }')
    for ((i = 0; i < n; i++)); do
        got=$(mget "$port" "$@")
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    why "waited $secs s for $* = $want in /metrics, last $got"
}

# redirects PORT N [HOST]: N requests, each on a new connection; prints how
# many got a 307
redirects() {
    local i hdr=()
    [ -n "${3:-}" ] && hdr=(-H "Host: $3")
    for ((i = 0; i < $2; i++)); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time "$(scale 5)" "${hdr[@]}" \
            "http://127.0.0.1:$1/n$i"
    done | grep -c '^307$'
}

# ensure_tool CMD PKG: CMD is on PATH, installing Debian's PKG if we are root
ensure_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    local log=$TEST_TMP/apt-$2.log
    diag "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
        -o DPkg::Lock::Timeout=120 "$2" >"$log" 2>&1 ||
        {
            timeout 300 apt-get update >>"$log" 2>&1
            DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
                -o DPkg::Lock::Timeout=120 "$2" >>"$log" 2>&1
        }
    command -v "$1" >/dev/null 2>&1
}

VERSION=$("$DETOURD" -V 2>/dev/null)
VERSION=${VERSION#detourd }

# ------------------------------------------------------------- setup ----

backend a "$A"
backend b "$B"
backend c "$C"
CONF=$TEST_TMP/main.yaml
conf "$CONF" "$L" "127.0.0.1:$ADM" "$A"
T_START_MAIN=$(date +%s)
if ! start main "$CONF" "$L" "127.0.0.1:$ADM"; then
    echo "Bail out! detourd did not start with an admin listener: $WHY"
    exit 1
fi

# -------------------------------------------------------------- tests ----

t_config_check() {
    local f=$TEST_TMP/bad-allow.yaml
    RUN_OUT=$(tmpf t.out) RUN_ERR=$(tmpf t.err)
    run_detourd -t -c "$CONF"
    expect_eq "-t on the admin config: exit" "$LAST_RC" 0 || why "$(cat "$RUN_ERR")" || return 1
    cat >"$f" <<YAML
listen: ["127.0.0.1:$L"]
admin:
  listen: "127.0.0.1:$ADM"
  allow:
    - "10.0.0.0/33"
pools:
  - name: api
    regions:
      - {name: a, url: "http://127.0.0.1:$A"}
YAML
    run_detourd -t -c "$f"
    expect_eq "-t with allow 10.0.0.0/33: exit" "$LAST_RC" 1 || return 1
    grep -q "^$f:5:[0-9]*: " "$RUN_ERR" || why "no '$f:5:COL: ...' error: $(cat "$RUN_ERR")" || return 1
    sed -i 's|"10.0.0.0/33"|"not-a-cidr"|' "$f"
    run_detourd -t -c "$f"
    expect_eq "-t with allow not-a-cidr: exit" "$LAST_RC" 1 || return 1
    grep -q "^$f:5:[0-9]*: " "$RUN_ERR" || why "no '$f:5:COL: ...' error: $(cat "$RUN_ERR")"
}
t "-t accepts the admin section and rejects a bad allow CIDR with FILE:LINE:COL" t_config_check

t_healthz() {
    local f got
    f=$(tmpf healthz)
    got=$(get "http://127.0.0.1:$ADM/healthz" "$f")
    expect_eq "status" "${got%% *}" 200 || return 1
    expect_eq "body" "$(tr -d '\r\n' <"$f")" ok
}
t "GET /healthz: 200 ok" t_healthz

t_not_found() {
    local f got
    f=$(tmpf nf)
    got=$(get "http://127.0.0.1:$ADM/no-such-thing" "$f")
    expect_eq "status of an unknown admin path" "${got%% *}" 404
}
t "GET of an unknown admin path: 404" t_not_found

t_status_schema() {
    local f got problems
    # wait until every region has been checked at least once
    wait_sget "$ADM" 'all(r["last_check"] is not None for p in s["pools"] for r in p["regions"])' true 20 ||
        return 1
    f=$(tmpf status)
    got=$(get "http://127.0.0.1:$ADM/status" "$f")
    expect_eq "status" "${got%% *}" 200 || return 1
    expect_match "Content-Type" "${got#* }" '^application/json' || return 1
    problems=$(adm schema "$f")
    [ -z "$problems" ] || why "schema: $problems" || why "$(head -c 3000 "$f")" || return 1
    expect_eq "version" "$(adm get "$f" 's["version"]')" "$VERSION" || return 1
    expect_eq "config.path" "$(adm get "$f" 's["config"]["path"]')" "$CONF" || return 1
    got=$(adm get "$f" 's["start_time"]')
    [ "${got%.*}" -ge $((T_START_MAIN - 2)) ] 2>/dev/null && [ "${got%.*}" -le $(($(date +%s) + 1)) ] ||
        why "start_time $got, started at $T_START_MAIN" || return 1
    expect_eq "pools" "$(adm get "$f" '[p["name"] for p in s["pools"]]')" '["api", "web"]' || return 1
    expect_eq "api hosts/default/balance/all_down" \
        "$(adm get "$f" '[P("api")[k] for k in ("hosts", "default", "balance", "all_down")]')" \
        '[["api.test"], false, "weighted", "fail_open"]' || return 1
    expect_eq "web is the default pool" "$(adm get "$f" 'P("web")["default"]')" true || return 1
    expect_eq "api regions: name state override weight priority check_up" \
        "$(adm get "$f" '[[r[k] for k in ("name", "state", "override", "weight", "priority", "check_up")] for r in P("api")["regions"]]')" \
        '[["primary", "up", "auto", 3, 1, true], ["secondary", "up", "auto", 2, 2, true], ["spare", "drain", "drain", 1, 2, true]]' ||
        return 1
    expect_eq "api url of primary" "$(adm get "$f" 'R("api", "primary")["url"]')" "http://127.0.0.1:$A" || return 1
    expect_eq "api chosen" "$(adm get "$f" 'P("api")["chosen"]')" '["primary"]' || return 1
    expect_eq "web chosen" "$(adm get "$f" 'P("web")["chosen"]')" '["w1"]' || return 1
    expect_eq "primary last check" \
        "$(adm get "$f" '[R("api", "primary")["last_check"][k] for k in ("ok", "reason", "status")]')" \
        '[true, "ok", 200]' || return 1
    expect_eq "primary has no failures" "$(adm get "$f" 'R("api", "primary")["consecutive_failures"]')" 0
}
t "GET /status: JSON with both pools, states, overrides, weights, priorities, chosen" t_status_schema

t_status_requests() {
    local before sent
    before=$(sget "$ADM" 'R("api", "primary")["requests"]')
    [[ $before =~ ^[0-9]+$ ]] || why "requests of primary: '$before'" || return 1
    sent=$(redirects "$L" 5 api.test)
    expect_eq "redirects answered 307" "$sent" 5 || return 1
    wait_sget "$ADM" 'R("api", "primary")["requests"]' $((before + 5)) 20
}
t "/status: a region's requests counter grows by the redirects sent to it" t_status_requests

t_status_failover() {
    local t0 f problems got
    t0=$(date +%s)
    stop_pid "${BPID[a]}" 5
    wait_sget "$ADM" 'R("api", "primary")["state"]' down 20 || return 1
    f=$(status "$ADM")
    [ -n "$f" ] || why "no /status" || return 1
    problems=$(adm schema "$f")
    [ -z "$problems" ] || why "schema after the failover: $problems" || return 1
    expect_eq "primary last_check ok/reason" \
        "$(adm get "$f" '[R("api", "primary")["last_check"][k] for k in ("ok", "reason")]')" \
        '[false, "connect_refused"]' || return 1
    expect_eq "primary check_up" "$(adm get "$f" 'R("api", "primary")["check_up"]')" false || return 1
    got=$(adm get "$f" 'R("api", "primary")["consecutive_failures"]')
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 2 ] || why "consecutive_failures $got, want >= 2" || return 1
    expect_eq "primary consecutive_successes" "$(adm get "$f" 'R("api", "primary")["consecutive_successes"]')" 0 ||
        return 1
    got=$(adm get "$f" 'R("api", "primary")["state_changes"]')
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 1 ] || why "state_changes $got, want >= 1" || return 1
    got=$(adm get "$f" 'R("api", "primary")["last_change"]')
    [ "${got%.*}" -ge $((t0 - 1)) ] 2>/dev/null || why "last_change $got, the backend died at $t0" || return 1
    expect_eq "api chosen" "$(adm get "$f" 'P("api")["chosen"]')" '["secondary"]' || return 1
    expect_eq "secondary still up" "$(adm get "$f" 'R("api", "secondary")["state"]')" up || return 1
    local before sent
    before=$(adm get "$f" 'R("api", "secondary")["requests"]')
    sent=$(redirects "$L" 4 api.test)
    expect_eq "redirects answered 307" "$sent" 4 || return 1
    wait_sget "$ADM" 'R("api", "secondary")["requests"]' $((before + 4)) 20
}
t "/status after the primary's backend dies: down, connect refused, chosen moves to the secondary" t_status_failover

t_metrics_promtool() {
    local f got
    f=$(tmpf metrics)
    got=$(get "http://127.0.0.1:$ADM/metrics" "$f")
    expect_eq "status" "${got%% *}" 200 || return 1
    expect_match "Content-Type" "${got#* }" '^text/plain' || return 1
    if ! ensure_tool promtool prometheus; then
        SKIP_WHY="promtool (Debian package prometheus) not available"
        return 0
    fi
    got=$(promtool check metrics <"$f" 2>&1) || why "promtool check metrics: $got" || return 1
}
SKIP_WHY=
t_skip() { # DESC FUNC: like t, but FUNC may set SKIP_WHY to skip
    local desc=$1 rc
    shift
    SKIP_WHY=
    WHY=
    "$@"
    rc=$?
    if [ "$rc" = 0 ] && [ -n "$SKIP_WHY" ]; then
        tap_skip "$desc" "$SKIP_WHY"
    elif [ "$rc" = 0 ]; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc"
        [ -n "$WHY" ] && diag "$WHY"
    fi
    return 0
}
t_skip "GET /metrics: text/plain that promtool check metrics accepts" t_metrics_promtool

t_metrics_contract() {
    local f problems
    expect_eq "redirects answered 307" "$(redirects "$L" 2 api.test)" 2 || return 1
    f=$(metrics "$ADM")
    problems=$(adm contract "$f" "$VERSION")
    [ -z "$problems" ] || why "$problems" || return 1
    expect_eq "region_up primary" "$(adm metric "$f" detourd_region_up pool=api region=primary)" 0 || return 1
    expect_eq "region_up secondary" "$(adm metric "$f" detourd_region_up pool=api region=secondary)" 1 || return 1
    # healthy is the check's verdict alone: a drained region whose check
    # passes is healthy but gets no traffic
    expect_eq "region_healthy primary (its check fails)" \
        "$(adm metric "$f" detourd_region_healthy pool=api region=primary)" 0 || return 1
    expect_eq "region_up spare (drained)" "$(adm metric "$f" detourd_region_up pool=api region=spare)" 0 || return 1
    expect_eq "region_healthy spare (drained, its check passes)" \
        "$(adm metric "$f" detourd_region_healthy pool=api region=spare)" 1 || return 1
    local got now pid
    pid=$(pgrep -f -n -- "-c $CONF\$" || true)
    now=$(date +%s)
    got=$(adm metric "$f" process_start_time_seconds)
    awk -v t="$got" -v a="$T_START_MAIN" -v b="$now" 'BEGIN { exit !(t >= a - 2 && t <= b) }' ||
        why "process_start_time_seconds $got is not between the start ($T_START_MAIN) and now ($now)" || return 1
    got=$(adm metric "$f" process_open_fds)
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 5 ] || why "process_open_fds: $got" || return 1
    [ -z "$pid" ] || [ "$got" -le $(($(ls "/proc/$pid/fd" | wc -l) + 8)) ] || why "process_open_fds $got, /proc says fewer" || return 1
    [ "$(adm metric "$f" process_max_fds)" -gt "$got" ] || why "process_max_fds not above open_fds" || return 1
    got=$(adm metric "$f" process_resident_memory_bytes)
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -gt 1000000 ] || why "process_resident_memory_bytes: $got" || return 1
    got=$(adm metric "$f" process_cpu_seconds_total)
    awk -v t="$got" 'BEGIN { exit !(t >= 0 && t < 100000) }' || why "process_cpu_seconds_total: $got" || return 1
    got=$(adm metric "$f" detourd_region_state_changes_total pool=api region=primary)
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 1 ] || why "state_changes_total of primary: $got" || return 1
    # the reason label is a token: "connect_refused" (or /status's "connect refused")
    got=$(adm metric "$f" detourd_check_failures_total pool=api region=primary reason=connect_refused)
    [ "$got" = absent ] &&
        got=$(adm metric "$f" detourd_check_failures_total pool=api region=primary "reason=connect refused")
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 2 ] ||
        why "check_failures_total{reason=\"connect_refused\"} of primary: $got" || return 1
    got=$(adm metric "$f" detourd_check_duration_seconds_count pool=api region=secondary)
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 2 ] || why "check_duration_seconds_count of secondary: $got" || return 1
    got=$(adm metric "$f" detourd_requests_total pool=api code=307)
    [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge 2 ] || why "requests_total of pool api: $got" || return 1
    got=$(adm metric "$f" detourd_start_time_seconds)
    expect_eq "start_time_seconds = /status start_time" "${got%.*}" "$(sget "$ADM" 'int(s["start_time"])')" || return 1
    expect_eq "config_last_reload_successful" "$(adm metric "$f" detourd_config_last_reload_successful)" 1
}
t "/metrics: every contract metric with HELP, TYPE and its labels; values follow the failover" t_metrics_contract

t_metrics_workers() {
    local n=20 before sent
    before=$(mget "$ADM" detourd_requests_total pool=web region=w1 code=307)
    [ "$before" = absent ] && before=0
    sent=$(redirects "$L" "$n")
    expect_eq "redirects answered 307" "$sent" "$n" || return 1
    wait_mget "$ADM" $((before + n)) 20 detourd_requests_total pool=web region=w1 code=307 || return 1
    sleep 0.3 # nothing more turns up later
    expect_eq "requests_total after settling" \
        "$(mget "$ADM" detourd_requests_total pool=web region=w1 code=307)" $((before + n))
}
t "/metrics: requests_total is summed over the 2 workers: exactly the redirects sent" t_metrics_workers

t_connections_active() {
    local before o i got pids=()
    before=$(mget "$ADM" detourd_connections_active)
    [[ $before =~ ^[0-9]+$ ]] || why "connections_active '$before'" || return 1
    o=$(tmpf hold)
    # three keep-alive connections, each served once, then held open until
    # the counts have been read
    for i in 1 2 3; do
        raw_bg "$o.$i" "$L" --timeout 5 --responses 1 --grace 0.1 'GET /hold HTTP/1.1\r\nHost: a\r\n\r\n' \
            @responses:1 "@ready:$o.$i.served" "@wait:$o.go"
        pids+=("$RAW_PID")
    done
    for i in 1 2 3; do
        wait_file "$o.$i.served" 20 "${pids[$((i - 1))]}" || why "client $i was not served"
    done
    [ -z "$WHY" ] && wait_mget "$ADM" $((before + 3)) 20 detourd_connections_active
    got=$(sget "$ADM" 's["connections_active"]')
    : >"$o.go"
    for i in 1 2 3; do
        raw_wait "$o.$i" "${pids[$((i - 1))]}" 30
    done
    [ -z "$WHY" ] || return 1
    [ "$got" -ge $((before + 3)) ] 2>/dev/null || why "/status connections_active $got, want >= $((before + 3))" ||
        return 1
    wait_mget "$ADM" "$before" 20 detourd_connections_active
}
t "connections_active counts open client connections, in /metrics and /status" t_connections_active

t_reload_metrics() {
    local pid=${DPID[main]} t0
    cp "$CONF" "$CONF.good"
    printf 'listen: ["127.0.0.1:%s"]\npools:\n  - name: api\n    regions:\n      - {name: a, url: "ftp://x"}\n' \
        "$L" >"$CONF"
    kill -HUP "$pid"
    wait_mget "$ADM" 0 20 detourd_config_last_reload_successful || { cp "$CONF.good" "$CONF"; return 1; }
    cp "$CONF.good" "$CONF"
    expect_eq 'reloads_total{result="failure"}' "$(mget "$ADM" detourd_config_reloads_total result=failure)" 1 ||
        return 1
    expect_eq '/status last_reload.success, reloads' \
        "$(sget "$ADM" '[s["config"]["last_reload"]["success"], s["config"]["reloads"]]')" \
        '[false, {"success": 0, "failure": 1}]' || return 1
    pid_alive "$pid" || why "detourd died" || return 1
    expect_eq "still serving" "$(redirects "$L" 1)" 1 || return 1
    t0=$(date +%s)
    kill -HUP "$pid"
    wait_mget "$ADM" 1 20 detourd_config_last_reload_successful || return 1
    expect_eq 'reloads_total{result="success"}' "$(mget "$ADM" detourd_config_reloads_total result=success)" 1 ||
        return 1
    local ts
    ts=$(mget "$ADM" detourd_config_last_reload_timestamp_seconds)
    [ "${ts%.*}" -ge $((t0 - 1)) ] 2>/dev/null || why "last_reload_timestamp_seconds $ts, reloaded at $t0" || return 1
    expect_eq '/status after a good reload' \
        "$(sget "$ADM" '[s["config"]["last_reload"]["success"], s["config"]["reloads"], s["config"]["loaded_at"] >= '"$((t0 - 1))"']')" \
        '[true, {"success": 1, "failure": 1}, true]'
}
t "failed reload: last_reload_successful 0, reloads_total{failure} 1; a good one sets them back" t_reload_metrics

t_separate() {
    local f got
    f=$(tmpf sep)
    got=$(get "http://127.0.0.1:$L/status" "$f")
    expect_eq "GET /status on the redirect port" "${got%% *}" 307 || return 1
    ! grep -q '"pools"' "$f" || why "the redirect port answered with the status JSON" || return 1
    got=$(curl -s -o /dev/null -w '%{redirect_url}' --max-time "$(scale 5)" "http://127.0.0.1:$L/metrics")
    expect_eq "GET /metrics on the redirect port: Location" "$got" "http://127.0.0.1:$B/w1/metrics"
}
t "the redirect port does not serve admin paths: GET /status there is a 307" t_separate

t_html() {
    local f got
    f=$(tmpf page)
    got=$(get "http://127.0.0.1:$ADM/" "$f")
    expect_eq "status" "${got%% *}" 200 || return 1
    expect_match "Content-Type" "${got#* }" '^text/html' || return 1
    grep -qi '<html' "$f" || why "no <html> in the page" || return 1
    got=$(grep -Eio '(src|href|action)[[:space:]]*=[[:space:]]*["'\'']?[[:space:]]*(https?:)?//[^"'\'' >]*' "$f")
    [ -z "$got" ] || why "external references: $got" || return 1
    got=$(grep -Eio 'https?://[^"'\'' )<>]*' "$f" | grep -Ev '^https?://(www\.w3\.org/|127\.0\.0\.1:)' | head -5)
    [ -z "$got" ] || why "absolute URLs in the page: $got" || return 1
    got=$(grep -Eio '@import|url\([[:space:]]*["'\'']?[[:space:]]*(https?:)?//' "$f")
    [ -z "$got" ] || why "CSS loads something: $got"
}
t "GET /: the HTML status page, with no external assets" t_html

# ------------------------------------------------------------ admin.allow ----

t_allow_deny() {
    local cf=$TEST_TMP/deny.yaml p code
    conf "$cf" "$LD" "127.0.0.1:$ADMD" "$C" '["10.0.0.0/8"]'
    start deny "$cf" "$LD" "127.0.0.1:$ADMD" || return 1
    for p in /healthz /status /metrics /; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$(scale 5)" "http://127.0.0.1:$ADMD$p")
        expect_eq "GET $p from 127.0.0.1 with allow 10.0.0.0/8" "$code" 403 || return 1
    done
    expect_eq "the redirect port still serves" "$(redirects "$LD" 1)" 1 || return 1
    stop_pid "${DPID[deny]}" 10
    expect_eq "exit status" "$LAST_RC" 0
}
t "admin.allow: a client outside the allowed CIDRs gets 403" t_allow_deny

t_allow_default_v4() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status")
    expect_eq "GET /status from 127.0.0.1, default allow" "$code" 200
}
t "admin.allow default: 127.0.0.1 is allowed" t_allow_default_v4

t_allow_default_v6() {
    if ! "$PYTHON" -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
        SKIP_WHY="no ::1 on this machine"
        return 0
    fi
    local cf=$TEST_TMP/v6.yaml f got
    conf "$cf" "$L6" "[::1]:$ADM6" "$C"
    start v6 "$cf" "$L6" "[::1]:$ADM6" || return 1
    f=$(tmpf v6)
    got=$(get "http://[::1]:$ADM6/healthz" "$f")
    expect_eq "GET /healthz from ::1, default allow" "${got%% *}" 200 || return 1
    got=$(get "http://[::1]:$ADM6/status" "$f")
    expect_eq "GET /status from ::1" "${got%% *}" 200 || return 1
    if can_connect "$ADM6"; then
        why "the admin listener on [::1] also accepts on 127.0.0.1"
        return 1
    fi
    stop_pid "${DPID[v6]}" 10
    expect_eq "exit status" "$LAST_RC" 0
}
t_skip "admin.allow default: [::1] is allowed (admin listening on [::1])" t_allow_default_v6

t_admin_port_in_use() {
    local cf=$TEST_TMP/inuse.yaml
    conf "$cf" "$LX" "127.0.0.1:$B" "$C" # the secondary's backend holds B
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    spawn "detourd:inuse" $DETOURD_WRAPPER "$DETOURD" -c "$cf"
    local pid=$LAST_PID
    if ! wait_exit "$pid" 20; then
        stop_pid "$pid"
        why "detourd kept running with its admin port in use" || return 1
    fi
    expect_eq "exit status" "$LAST_RC" 1 || return 1
    grep -q "127.0.0.1:$B" "$(daemon_log inuse)" ||
        why "the error does not name 127.0.0.1:$B: $(cat "$(daemon_log inuse)")"
}
t "admin.listen on a port in use: exit 1, the address named" t_admin_port_in_use

# --------------------------------------------------------------- Chromium ----

CHROMIUM=
find_chromium() {
    local c
    for c in chromium chromium-browser; do
        command -v "$c" >/dev/null 2>&1 && CHROMIUM=$(command -v "$c") && return 0
    done
    ensure_tool chromium chromium && CHROMIUM=$(command -v chromium)
}

# page CDP_OPTIONS... URL: headless Chromium driven in real time through
# the DevTools protocol (cdp.py: stages, DOM, screenshot), bounded, loopback
# only (every other host goes to a dead proxy). Not --dump-dom with a
# virtual time budget: the page's open /events stream never lets it end.
page() {
    local url=${*: -1}
    timeout -k 5 120 "$PYTHON" "$IT_DIR/cdp.py" "${@:1:$#-1}" \
        "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --no-default-browser-check --disable-background-networking \
        --disable-component-update --disable-sync --disable-quic --disable-extensions \
        --disable-default-apps --disable-domain-reliability --metrics-recording-only \
        --proxy-server=http://127.0.0.1:9 --hide-scrollbars \
        --user-data-dir="$TEST_TMP/chrome" -- "$url" 2>>"$TEST_TMP/chrome.log"
}

PAGE_OK=
t_page_dom() {
    find_chromium || {
        SKIP_WHY="chromium not available"
        return 0
    }
    local cf=$TEST_TMP/page.yaml d problems
    conf "$cf" "$LP" "127.0.0.1:$ADMP" "$C"
    start page "$cf" "$LP" "127.0.0.1:$ADMP" || return 1
    wait_sget "$ADMP" 'all(r["last_check"] is not None for p in s["pools"] for r in p["regions"])' true 20 ||
        return 1
    d=$(tmpf dom1)
    page --stage 'document.body.dataset.ready === "1"' "$TEST_TMP/dom1.ready" --dom "$d" \
        "http://127.0.0.1:$ADMP/" || why "chromium failed ($?): $(tail -5 "$TEST_TMP/chrome.log")" ||
        return 1
    problems=$(adm dom "$d" api/primary=up api/secondary=up api/spare=drain web/w1=up)
    [ -z "$problems" ] || why "$problems" || return 1
    grep -Eq '<svg[^>]*aria-label="Timeline of pool api, (the last hour|since detourd started at [0-9:]{8})"' "$d" ||
        why "no timeline for pool api" ||
        return 1
    PAGE_OK=1
}
t_skip "status page in Chromium: data-ready, one row per region with its state and class, a timeline per pool" t_page_dom

t_page_live() {
    if [ -z "$CHROMIUM" ]; then
        SKIP_WHY="chromium not available"
        return 0
    fi
    [ -n "$PAGE_OK" ] || why "the first page test failed" || return 1
    local d problems png size ev cpid got lag seg
    local sub=$TEST_TMP/live.subscribed shown=$TEST_TMP/live.shown
    mkdir -p "$OUT_DIR" || why "cannot create $OUT_DIR" || return 1
    png=$(cd "$OUT_DIR" && pwd)/status.png
    rm -f "$png"
    d=$(tmpf dom2)
    ev=$(tmpf ev)
    # the fallback poll every 600 s: only the event can show the change
    spawn chrome:live page \
        --stage 'document.body.dataset.ready === "1" && document.body.dataset.live === "1"' "$sub" \
        --stage 'document.querySelector("tr[data-pool=api][data-region=primary]").dataset.state === "down"' "$shown" \
        --dom "$d" --eval 'document.body.dataset.lastEvent' "$ev" --png "$png" \
        "http://127.0.0.1:$ADMP/?poll=600"
    cpid=$LAST_PID
    wait_file "$sub" 30 "$cpid" || why "the page never subscribed: $(tail -5 "$TEST_TMP/chrome.log")" || return 1
    stop_pid "${BPID[c]}" 5
    wait_file "$shown" 20 "$cpid" || why "the page never showed primary down: $(tail -5 "$TEST_TMP/chrome.log")" ||
        return 1
    wait_exit "$cpid" 30 || why "chromium did not finish" || return 1
    [ "$LAST_RC" = 0 ] || why "cdp.py: exit $LAST_RC: $(tail -5 "$TEST_TMP/chrome.log")" || return 1
    # "ID EVENT_TIME SHOWN_TIME" (Unix ms) of the event the page showed last
    got=$(tr -d '"' <"$ev")
    lag=$(echo "$got" | awk '{ print $3 - $2 }')
    diag "the page showed event ${got%% *} $lag ms after it happened (poll interval 600 s)"
    # pushed, not polled (the poll is every 600 s): a generous bound for a busy host
    awk -v l="$lag" -v s="$TIMEOUT_SCALE" 'BEGIN { exit !(l >= 0 && l < 10000 * s) }' ||
        why "the page showed the event $lag ms after it happened" || return 1
    problems=$(adm dom "$d" api/primary=down api/secondary=up api/spare=drain web/w1=up)
    [ -z "$problems" ] || why "$problems" || return 1
    # the timeline: primary's band ends in a down segment whose hover text
    # gives the check's reason
    seg=$(grep -o '<rect class="seg s-down"[^>]*data-region="primary"[^>]*><title>[^<]*' "$d" | tail -1)
    expect_match "primary's down segment" "${seg##*<title>}" \
        '^primary down, [0-9:]+[^ (]*now \([0-9]+ s\): [0-9]+ failures?: connect: ' || return 1
    [ -f "$png" ] || why "no $png" || return 1
    size=$(wc -c <"$png")
    [ "$size" -gt 5120 ] || why "$png is only $size bytes" || return 1
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || why "$png is not a PNG" || return 1
    diag "screenshot: $png"
}
t_skip "status page in Chromium: primary's row and timeline go down at the event, not at the poll (600 s); the reason on hover; screenshot" t_page_live

# ------------------------------------- the page reads right (Chromium) ----

# A daemon with five pools (the compact mode), as in admin_page.sh: api has
# a region up, one down (nothing listens on LCLOSED), one with weight 0, one
# drained by a maintenance window; web falls back, its only healthy region
# drained by an override without an end.
look_conf() {
    cat >"$1" <<YAML
listen: ["127.0.0.1:$LL"]
workers: 2
admin: {listen: "127.0.0.1:$ADML"}
checks: {$FAST}
pools:
  - name: api
    hosts: [api.look]
    regions:
      - {name: primary, url: "http://127.0.0.1:$B/primary", priority: 1, weight: 3}
      - {name: broken, url: "http://127.0.0.1:$LCLOSED/broken", priority: 1}
      - {name: zero, url: "http://127.0.0.1:$B/zero", priority: 2, weight: 0}
      - {name: held, url: "http://127.0.0.1:$B/held", priority: 2}
  - name: web
    hosts: [web.look]
    all_down: {action: fallback, url: "https://status.example.com/"}
    regions:
      - {name: w1, url: "http://127.0.0.1:$B/w1", state: drain, reason: "capacity move"}
      - {name: w2, url: "http://127.0.0.1:$LCLOSED/w2"}
  - {name: p3, hosts: [p3.look], regions: [{name: r3, url: "http://127.0.0.1:$B/r3"}]}
  - {name: p4, hosts: [p4.look], regions: [{name: r4, url: "http://127.0.0.1:$B/r4"}]}
  - {name: p5, regions: [{name: r5, url: "http://127.0.0.1:$B/r5"}]}
maintenance:
  - {name: db-upgrade, from: "2001-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", state: drain,
     regions: [api/held], reason: "CHG-1234 database upgrade"}
YAML
}

# What the page shows, measured in Chromium with every pool opened for the
# moment (a closed <details> is not laid out): its width against the
# viewport's, where the pools' summaries end (the fold), the colour of each
# meaning where it shows (a row's state pill, a timeline segment, the
# legend, a summary), the maintenance tints, and per timeline its axis
# labels, markers and segments with their boxes.
LOOK_PROBE='(function () {
  var R = function (e) { var b = e.getBoundingClientRect(); return [b.left, b.right, b.top, b.bottom]; };
  var cs = function (e, p) { return e ? getComputedStyle(e)[p] : null; };
  var q = function (s) { return document.querySelector(s); };
  var out = { compact: document.body.dataset.compact, innerW: innerWidth, innerH: innerHeight,
    scrollW: document.documentElement.scrollWidth,
    fold: [].map.call(document.querySelectorAll("section.pool summary"), function (s) { return s.getBoundingClientRect().bottom; }) };
  var closed = [].slice.call(document.querySelectorAll("details:not([open])"));
  closed.forEach(function (d) { d.open = true; });
  out.scrollWOpen = document.documentElement.scrollWidth;
  out.colours = {};
  [["up", "up"], ["down", "down"], ["drain", "drain"], ["maint", "maintenance"]].forEach(function (m) {
    out.colours[m[0]] = { pill: cs(q("tr[data-region] .st.c-" + m[0]), "backgroundColor"), seg: cs(q("rect.seg.s-" + m[1]), "fill"),
      legend: cs(q(".lg i.s-" + m[1]), "backgroundColor"), summary: cs(q(".sum .st.c-" + m[0]), "backgroundColor") };
  });
  out.tints = { row: cs(q("tr.maint"), "backgroundColor"), table: cs(q("tr.maint-active"), "backgroundColor") };
  out.tl = [].map.call(document.querySelectorAll(".tl svg"), function (svg) {
    return { pool: svg.closest("section").dataset.pool, label: svg.getAttribute("aria-label"), box: R(svg),
      legend: svg.parentNode.querySelector(".lg").textContent,
      t0: +svg.dataset.t0, now: +svg.dataset.now, lw: +svg.dataset.lw, width: +svg.getAttribute("width"),
      axis: [].map.call(svg.querySelectorAll("text.ax"), function (t) { return { text: t.textContent, box: R(t) }; }),
      marks: [].map.call(svg.querySelectorAll("[data-count]"), function (m) {
        return { kind: m.dataset.kind, count: +m.dataset.count, times: m.dataset.times.split(",").map(Number), box: R(m) }; }),
      segs: [].map.call(svg.querySelectorAll("rect.seg"), function (r) {
        return { region: r.dataset.region, state: r.dataset.state, x: +r.getAttribute("x") }; }) };
  });
  closed.forEach(function (d) { d.open = false; });
  return out;
})()'

LOOK_OK=
t_look_page() {
    if [ -z "$CHROMIUM" ]; then
        SKIP_WHY="chromium not available"
        return 0
    fi
    local cf=$TEST_TMP/look.yaml log i d s1 s2 ev start problems got png1 png2
    look_conf "$cf"
    start look "$cf" "$LL" "127.0.0.1:$ADML" || return 1
    log=$(daemon_log look)
    wait_sget "$ADML" '(all(r["last_check"] is not None for p in s["pools"] for r in p["regions"]) and
        R("api", "broken")["consecutive_failures"] > 2 and R("web", "w2")["consecutive_failures"] > 2)' true 20 ||
        return 1
    # a burst of reloads: close together on the timeline
    for i in 1 2 3 4 5 6 7 8; do
        reload_daemon "${DPID[look]}" "$log" || why "reload $i did not finish" || return 1
        [ "$RELOAD_OK" = 1 ] || why "reload $i failed: $(tail -3 "$log")" || return 1
    done
    expect_eq "redirects" "$(redirects "$LL" 6 api.look)" 6 || return 1
    start=$(sget "$ADML" 's["start_time"]')
    # the events the page gets (the replay: nothing happens after the burst)
    ev=$(tmpf events)
    curl -sN --max-time "$(scale 2)" "http://127.0.0.1:$ADML/events" >"$ev" 2>/dev/null
    d=$(tmpf ldom) s1=$(tmpf probe1) s2=$(tmpf probe2)
    mkdir -p "$OUT_DIR" || why "cannot create $OUT_DIR" || return 1
    png1=$(cd "$OUT_DIR" && pwd)/look-1400x1000.png png2=$(cd "$OUT_DIR" && pwd)/look-390x844.png
    rm -f "$png1" "$png2"
    # the fallback poll every 600 s: the page renders at its load and the
    # replayed events, then only when resized
    page --size 1400x1000 \
        --stage 'document.body.dataset.ready === "1" && document.body.dataset.live === "1" && +document.body.dataset.events > 0' \
        "$TEST_TMP/look.ready" \
        --dom "$d" --eval "$LOOK_PROBE" "$s1" --png "$png1" \
        --js 'window.__t = Date.now()' --size 390x844m \
        --stage '+document.body.dataset.rendered > window.__t && innerWidth === 390' "$TEST_TMP/look.phone" \
        --eval "$LOOK_PROBE" "$s2" --png-full "$png2" \
        "http://127.0.0.1:$ADML/?poll=600" ||
        why "chromium failed ($?): $(tail -5 "$TEST_TMP/chrome.log")" || return 1
    problems=$(adm look "$s1" "$ev" "$start" desktop)
    [ -z "$problems" ] || why "at 1400x1000: $problems"
    problems=$(adm look "$s2" "$ev" "$start" phone)
    [ -z "$problems" ] || why "at 390x844: $problems"
    [ -z "$WHY" ] || return 1
    diag "screenshots: $png1 $png2"
    LOOK_DOM=$d
    LOOK_OK=1
}
t_skip "status page in Chromium, 5 pools: fits above the fold at 1400x1000, no sideways scroll at 390x844, one colour per meaning (maintenance in row and timeline), axis labels apart, close markers grouped, timeline since the start" t_look_page

# lk FILE EXPR: EXPR over the status page in FILE (page.py)
lk() { "$PYTHON" "$IT_DIR/page.py" "$@"; }

t_look_words() {
    if [ -z "$CHROMIUM" ]; then
        SKIP_WHY="chromium not available"
        return 0
    fi
    [ -n "$LOOK_OK" ] || why "the page test before failed" || return 1
    local f e got want
    f=$(tmpf lpage)
    get "http://127.0.0.1:$ADML/" "$f" >/dev/null || why "no page" || return 1
    # what the script wrote and what the server wrote, numbers aside
    e='[[n, N(v["pill"] or ""), N(v["why"]), v["sc"], v["su"], v["worst"], v["worst_cls"], v["share_title"], v["share_sub"],
        [[r, x["cls"], x["state"], x["pill_cls"], N(x["cells"]["state"]), N(x["cells"]["override"]), x["cells"]["weight"],
          x["cell_cls"]["weight"], x["titles"]["weight"], N(x["titles"]["override"]), x["share_label"]] for r, x in v["rows"].items()]]
        for n, v in d["pools"].items()]'
    want=$(lk "$f" "$e")
    got=$(lk "$LOOK_DOM" "$e")
    [ "$got" = "$want" ] || why "the script's page differs from the served one:
script: $got
served: $want" || return 1
    expect_eq "web's pill (script)" "$(lk "$LOOK_DOM" 'd["pools"]["web"]["pill"]')" \
        "no region may receive traffic: w1 drained, w2 down → fallback" || return 1
    expect_match "api's why (script)" "$(lk "$LOOK_DOM" 'd["pools"]["api"]["why"]')" \
        '^tier 1: primary; out of that tier: broken down after 2 failures \(connect: Connection refused; [0-9]+ in a row now\)$' ||
        return 1
    expect_eq "w1's override (script)" "$(lk "$LOOK_DOM" 'd["pools"]["web"]["rows"]["w1"]["cells"]["override"]')" \
        "drain config · until removed capacity move" || return 1
    expect_match "zero's state (script)" "$(lk "$LOOK_DOM" 'd["pools"]["api"]["rows"]["zero"]["cells"]["state"]')" \
        '^drain weight 0 · [0-9]+ ok in a row$' || return 1
    expect_eq "shares off their data-recent (script)" "$(lk "$LOOK_DOM" '[(p, r, x["share"]) for p, v in d["pools"].items() for r, x in v["rows"].items()
        if x["share"] != (lambda n, t: "–" if not t else "%.*f %%" % (0 if 100 * n / t >= 10 or n == 0 else 1, 100 * n / t))(
            x["recent"], sum(y["recent"] for y in v["rows"].values()))]')" "[]" || return 1
    expect_eq "api/primary's share (script)" "$(lk "$LOOK_DOM" 'd["pools"]["api"]["rows"]["primary"]["share"]')" "100 %"
}
t_skip "status page in Chromium: the script writes what the server wrote (pill, why, summaries, state, override, weight 0, share)" t_look_words

t_look_remember() {
    if [ -z "$CHROMIUM" ]; then
        SKIP_WHY="chromium not available"
        return 0
    fi
    [ -n "$LOOK_OK" ] || why "the page test before failed" || return 1
    local o=$TEST_TMP/remember.json open='[].map.call(document.querySelectorAll("details"), function (d) { return d.dataset.pool + (d.open ? "+" : "-"); }).join(" ")'
    # p3 opened by a click; refreshed every second; then the page loaded again
    page --size 1400x1000 --stage 'document.body.dataset.ready === "1"' "$TEST_TMP/rm.ready" \
        --js 'localStorage.clear()' \
        --js 'document.querySelector("details[data-pool=p3] summary").click(); window.__t = Date.now()' \
        --stage '+document.body.dataset.rendered > window.__t + 1000' "$TEST_TMP/rm.refreshed" \
        --eval "$open" "$o.1" \
        --js 'document.querySelector("details[data-pool=api] summary").click(); document.querySelector("details[data-pool=api] summary").click()' \
        --js 'window.__old = 1' --reload \
        --stage '!window.__old && document.body.dataset.ready === "1"' "$TEST_TMP/rm.reloaded" \
        --eval "$open" "$o.2" \
        "http://127.0.0.1:$ADML/?poll=1" ||
        why "chromium failed ($?): $(tail -5 "$TEST_TMP/chrome.log")" || return 1
    expect_eq "after a refresh" "$(cat "$o.1")" '"api- web- p3+ p4- p5-"' || return 1
    expect_eq "after the page is loaded again (api opened and closed)" "$(cat "$o.2")" '"api- web- p3+ p4- p5-"'
}
t_skip "status page in Chromium, compact mode: a pool the operator opened stays open across refreshes and reloads of the page" t_look_remember

# ---------------------------------------------------------------- the end ----

t_all_exit0() {
    local name pid bad=""
    for name in main page look; do
        pid=${DPID[$name]:-}
        [ -n "$pid" ] || continue
        pid_alive "$pid" || { bad+=" $name(died earlier)"; continue; }
        stop_pid "$pid" 15
        [ "$LAST_RC" = 0 ] || bad+=" $name(exit $LAST_RC)"
    done
    [ -n "${DPID[main]:-}" ] || bad+=" main(never started)"
    [ -z "$bad" ] || why "daemons that did not exit 0 on SIGTERM:$bad"
}
t "every daemon still runs and exits 0 on SIGTERM" t_all_exit0

t "no sanitizer report in any daemon's log" t_no_sanitizer_reports

done_testing
[ "$TAP_FAILED" -eq 0 ]
