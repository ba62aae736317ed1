#!/usr/bin/env bash
# Integration tests of what the admin listener and the logs write for odd
# bytes, and of the status page as served (no script run): /status, the JSON
# log and the JSON access log stay valid UTF-8 JSON when the config path and
# requests carry bytes that are not UTF-8; GET / carries one row per region
# with its state, HTML-escaped, read by an HTML parser as any client without
# scripts reads it (admin.sh runs the page's script in Chromium). TAP on
# stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"
HB=$IT_DIR/health_backend.py
FAST="interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: $((1000 * TIMEOUT_SCALE))ms, rise: 2, fall: 2, jitter: 0%"

alloc_ports 4 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]} A=${PORTS[2]} B=${PORTS[3]}

# One Python helper, several modes:
#   jsonlines FILE        problems with FILE as UTF-8 JSON lines, one a line
#   jsonfile FILE         problems with FILE as one UTF-8 JSON document
#   get FILE EXPR         EXPR over the JSON document s (R(pool, region))
#   field FILE KEY VALUE  KEY of the first JSON line whose KEY starts with VALUE
#   rows FILE P/R=STATE...  problems with the rows of the page in FILE
read -r -d '' PG_PY <<'PYEOF'
import html.parser, json, re, sys

def jsonlines(path):
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                json.loads(raw.decode("utf-8"))
            except Exception as e:
                print("line %d: %s: %r" % (n, e, raw[:200]))

def jsonfile(path):
    try:
        with open(path, "rb") as f:
            json.loads(f.read().decode("utf-8"))
    except Exception as e:
        print("not UTF-8 JSON: %s" % e)

def get(path, expr):
    s = json.load(open(path, encoding="utf-8"))
    def R(pool, region):
        p = [p for p in s["pools"] if p["name"] == pool][0]
        return [r for r in p["regions"] if r["name"] == region][0]
    try:
        v = eval(expr, {"s": s, "R": R, "all": all})
    except Exception as e:
        v = "<error %s: %s>" % (type(e).__name__, e)
    print(v if isinstance(v, str) else json.dumps(v))

def field(path, key, prefix):
    for raw in open(path, "rb"):
        try:
            o = json.loads(raw.decode("utf-8"))
        except Exception:
            continue
        v = o.get(key)
        if isinstance(v, str) and v.startswith(prefix):
            print(ascii(v))
            return
    print("<none>")

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.cur, self.title, self.in_title, self.hd, self.in_hd = [], None, "", False, "", 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self.in_title = True
        if tag == "dl" and a.get("id") == "hd":
            self.in_hd = 1
        if tag == "tr" and "data-region" in a:
            self.cur = {"attrs": a, "text": ""}
            self.rows.append(self.cur)
    def handle_endtag(self, tag):
        if tag == "tr":
            self.cur = None
        if tag == "title":
            self.in_title = False
        if tag == "dl":
            self.in_hd = 0
    def handle_data(self, d):
        if self.cur is not None:
            self.cur["text"] += d + " "
        if self.in_title:
            self.title += d
        if self.in_hd:
            self.hd += d + " "

def rows(path, want):
    with open(path, "rb") as f:
        raw = f.read()
    bad = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        print("the page is not UTF-8: %s" % e)
        return
    pg = Page()
    pg.feed(text)
    want = dict(w.split("=", 1) for w in want)
    got = {"%s/%s" % (r["attrs"].get("data-pool"), r["attrs"].get("data-region")): r for r in pg.rows}
    if sorted(got) != sorted(want):
        bad.append("rows %s, want %s" % (sorted(got), sorted(want)))
    down = 0
    for key, st in want.items():
        down += st == "down"
        r = got.get(key)
        if not r:
            continue
        a, t = r["attrs"], " ".join(r["text"].split())
        if a.get("data-state") != st:
            bad.append("%s: data-state %r, want %r" % (key, a.get("data-state"), st))
        if "state-" + st not in (a.get("class") or "").split():
            bad.append("%s: class %r, want state-%s" % (key, a.get("class"), st))
        region = key.split("/", 1)[1]
        if not re.match(r"%s\b.*\b%s\b" % (re.escape(region), st), t):
            bad.append("%s: row text %r does not name the region, then say %s" % (key, t, st))
        if st == "down" and "failed in a row" not in t:
            bad.append("%s: row text %r does not count the failures" % (key, t))
    want_title = ("(%d down) " % down if down else "") + "detourd status"
    if pg.title != want_title:
        bad.append("title %r, want %r" % (pg.title, want_title))
    for w in ("version", "config", "connections", "up since"):
        if w not in pg.hd:
            bad.append("the header %r lacks %s" % (pg.hd, w))
    for b in bad:
        print(b)

mode = sys.argv[1]
if mode == "jsonlines":
    jsonlines(sys.argv[2])
elif mode == "jsonfile":
    jsonfile(sys.argv[2])
elif mode == "get":
    get(sys.argv[2], sys.argv[3])
elif mode == "field":
    field(sys.argv[2], sys.argv[3], sys.argv[4])
elif mode == "rows":
    rows(sys.argv[2], sys.argv[3:])
else:
    sys.exit("unknown mode " + mode)
PYEOF

pg() { "$PYTHON" -c "$PG_PY" "$@"; }

# get URL OUTFILE: body to OUTFILE; prints "CODE CONTENT_TYPE"
get() {
    curl -sS -g -o "$2" -w '%{http_code} %{content_type}' --max-time "$(scale 5)" "$1" 2>"$2.err"
}

# sget EXPR: one value out of a fresh /status
sget() {
    local f
    f=$(tmpf status)
    if [ "$(get "http://127.0.0.1:$ADM/status" "$f")" = "200 application/json" ]; then
        pg get "$f" "$1"
    else
        echo "<no status>"
    fi
}

# wait_sget EXPR WANT SECONDS: polls /status until EXPR gives WANT
wait_sget() {
    local i n got
    n=$(awk -v t="$(scale "$3")" 'BEGIN { printf "%d\n", t / 0.1 + 1 }')
    for ((i = 0; i < n; i++)); do
        got=$(sget "$1")
        [ "$got" = "$2" ] && return 0
        sleep 0.1
    done
    why "waited $3 s for $1 = $2 in /status, last $got"
}

# wait_grep PATTERN FILE SECONDS: polls until FILE holds a line matching
wait_grep() {
    local i n
    n=$(awk -v t="$(scale "$3")" 'BEGIN { printf "%d\n", t / 0.05 + 1 }')
    for ((i = 0; i < n; i++)); do
        grep -qa -- "$1" "$2" 2>/dev/null && return 0
        sleep 0.05
    done
    why "waited $3 s for /$1/ in ${2##*/}"
}

# backend NAME PORT: a health target; its mode file is $TEST_TMP/NAME.mode
declare -A BPID=()
backend() {
    echo ok >"$TEST_TMP/$1.mode"
    spawn "hb:$1" "$PYTHON" "$HB" "$2" "$TEST_TMP/$1.mode"
    BPID[$1]=$LAST_PID
    wait_listen "$2" "$LAST_PID" 10 || why "backend $1 did not start"
}

# ------------------------------------------------------------- setup ----

# The config file's name has a Latin-1 byte (not UTF-8) and characters
# that HTML and JSON must escape.
CDIR=$TEST_TMP/conf
mkdir -p "$CDIR"
CONF=$CDIR/$(printf 'd\xe9tour<i>&"q'"'"'.yaml')
ALOG=$TEST_TMP/access.log
cat >"$CONF" <<YAML
listen: ["127.0.0.1:$L"]
workers: 2
admin:
  listen: "127.0.0.1:$ADM"
log: {format: json}
access_log: {path: "$ALOG", format: json}
checks: {$FAST}
pools:
  - name: api
    hosts: [api.test]
    regions:
      - {name: primary, url: "http://127.0.0.1:$A", priority: 1}
      - {name: secondary, url: "http://127.0.0.1:$B", priority: 2}
      - {name: spare, url: "http://127.0.0.1:$B/spare", priority: 2, state: drain}
  - name: web
    regions:
      - {name: w1, url: "http://127.0.0.1:$B/w1"}
YAML

backend a "$A" || echo "Bail out! $WHY"
backend b "$B" || echo "Bail out! $WHY"
start_detourd main "$CONF" "$L" || echo "Bail out! detourd did not start: $(tail -5 "$(daemon_log main)")"
DPID=$LAST_PID
LOG=$(daemon_log main)
wait_listen "$ADM" "$DPID" 10 || echo "Bail out! the admin listener did not start"

# ------------------------------------------------------ valid JSON ----

t_status_json() {
    local f got
    f=$(tmpf status)
    got=$(get "http://127.0.0.1:$ADM/status" "$f")
    expect_eq "GET /status" "$got" "200 application/json" || return 1
    got=$(pg jsonfile "$f")
    [ -z "$got" ] || why "$got" || return 1
    "$PYTHON" -m json.tool "$f" >/dev/null 2>"$f.tool" || why "json.tool: $(cat "$f.tool")" || return 1
    if command -v jq >/dev/null 2>&1; then
        jq -e .pools "$f" >/dev/null 2>"$f.jq" || why "jq: $(cat "$f.jq")" || return 1
    fi
    got=$(pg get "$f" 'ascii(s["config"]["path"].rsplit("/", 1)[1])')
    expect_eq "config.path's file name" "$got" "'d\\ufffdtour<i>&\"q\\'.yaml'"
}
t "/status is valid UTF-8 JSON when the config path is not UTF-8 (the byte reads as U+FFFD)" t_status_json

t_json_log() {
    local got
    wait_grep 'started' "$LOG" 5 || return 1
    got=$(pg jsonlines "$LOG")
    [ -z "$got" ] || why "$got" || return 1
    got=$(pg field "$LOG" msg "detourd")
    expect_match "the start line" "$got" 'from .*/d\\ufffdtour<i>&"q'
}
t "log.format json: every line is valid UTF-8 JSON, the path's byte as U+FFFD" t_json_log

t_access_log_json() {
    local out got
    out=$(tmpf raw)
    # not UTF-8 in the target: Latin-1, an overlong '/', a surrogate, a
    # truncated sequence; then valid UTF-8, which passes as it is
    raw "$out" --responses 1 "$L" \
        'GET /odd/\xe9/\xc0\xaf/\xed\xa0\x80/\xe2\x82 HTTP/1.1\r\nHost: api.test\r\nUser-Agent: ua\xff\xfe"q\r\nConnection: close\r\n\r\n'
    expect_eq "status" "$(r_status "$out" 1)" 307 || return 1
    raw "$out" --responses 1 "$L" \
        'GET /caf\xc3\xa9/\xf0\x9f\x98\x80 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n'
    expect_eq "status" "$(r_status "$out" 1)" 307 || return 1
    wait_grep '"target":"/caf' "$ALOG" 5 || return 1
    wait_grep '"target":"/odd' "$ALOG" 5 || return 1
    got=$(pg jsonlines "$ALOG")
    [ -z "$got" ] || why "$got" || return 1
    expect_eq "target" "$(pg field "$ALOG" target /odd)" \
        "'/odd/\\ufffd/\\ufffd\\ufffd/\\ufffd\\ufffd\\ufffd/\\ufffd'" || return 1
    expect_eq "user_agent" "$(pg field "$ALOG" user_agent ua)" "'ua\\ufffd\\ufffd\"q'" || return 1
    expect_eq "UTF-8 target" "$(pg field "$ALOG" target /caf)" "'/caf\\xe9/\\U0001f600'"
}
t "access_log json: targets and headers that are not UTF-8 give valid JSON; UTF-8 passes" \
    t_access_log_json

# -------------------------------------------------- the page as served ----

t_page_rows() {
    local f got
    wait_sget 'all(r["last_check"] is not None for p in s["pools"] for r in p["regions"])' true 5 ||
        return 1
    f=$(tmpf page)
    got=$(get "http://127.0.0.1:$ADM/" "$f")
    expect_match "GET /" "$got" '^200 text/html' || return 1
    # what curl, a text browser or a screen reader gets, without scripts
    grep -q '<tr class="state-up" data-pool="api" data-region="primary" data-state="up">' "$f" ||
        why "no row for api/primary in state up in the HTML" || return 1
    grep -q 'data-region="spare" data-state="drain"' "$f" || why "no drained row for spare" || return 1
    grep -q '<span class="st">up</span>' "$f" || why "no state text in the HTML" || return 1
    grep -q 'primary<span class="chosen"' "$f" || why "primary is not marked chosen" || return 1
    got=$(pg rows "$f" api/primary=up api/secondary=up api/spare=drain web/w1=up)
    [ -z "$got" ] || why "$got"
}
t "GET / carries a row per region with its state in the HTML as served" t_page_rows

t_page_escaped() {
    local f
    f=$(tmpf page)
    get "http://127.0.0.1:$ADM/" "$f" >/dev/null || return 1
    grep -q "<dd>[^<]*/d$(printf '\xef\xbf\xbd')tour&lt;i&gt;&amp;&quot;q&#39;\.yaml</dd>" "$f" ||
        why "the config path is not escaped: $(grep -ao '<dt>config</dt><dd>[^/]*/[^ ]*' "$f")" ||
        return 1
    ! grep -q '<i>&' "$f" || why "raw markup from the config path in the page"
}
t "GET /: the config path is HTML-escaped and its non-UTF-8 byte is U+FFFD" t_page_escaped

t_page_down() {
    local f got
    stop_pid "${BPID[a]}" 5
    wait_sget 'R("api", "primary")["state"]' down 5 || return 1
    f=$(tmpf page)
    get "http://127.0.0.1:$ADM/" "$f" >/dev/null || return 1
    got=$(pg rows "$f" api/primary=down api/secondary=up api/spare=drain web/w1=up)
    [ -z "$got" ] || why "$got" || return 1
    grep -q 'secondary<span class="chosen"' "$f" || why "secondary is not marked chosen"
}
t "GET / after the primary dies: its row says down, the title counts it, secondary chosen" t_page_down

# ---------------------------------------------------------------- the end ----

t_exit0() {
    stop_pid "$DPID" 15
    expect_eq "exit status" "$LAST_RC" 0
}
t "detourd exits 0 on SIGTERM" t_exit0

t "no sanitizer report in the daemon's log" t_no_sanitizer_reports

done_testing
[ "$TAP_FAILED" -eq 0 ]
