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

alloc_ports 7 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]} A=${PORTS[2]} B=${PORTS[3]}
LL=${PORTS[4]} ADML=${PORTS[5]} CLOSED=${PORTS[6]}

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
    def P(pool):
        return [p for p in s["pools"] if p["name"] == pool][0]
    def R(pool, region):
        return [r for r in P(pool)["regions"] if r["name"] == region][0]
    try:
        v = eval(expr, {"s": s, "P": P, "R": R, "all": all, "sum": sum, "isinstance": isinstance, "int": int, "str": str})
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
    grep -q '<span class="st c-up">up</span>' "$f" || why "no state text in the HTML" || return 1
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

# ------------------------------------ the page reads right (as served) ----

# A second daemon with five pools (the compact mode): api has a region up,
# one down (nothing listens on CLOSED), one with weight 0 and one drained by
# a maintenance window with a reason; web has its only healthy region
# drained by an override without an end and falls back; three pools more.
LOOK=$(write_config look.yaml <<YAML
listen: ["127.0.0.1:$LL"]
workers: 2
admin: {listen: "127.0.0.1:$ADML"}
checks: {$FAST}
pools:
  - name: api
    hosts: [api.look]
    regions:
      - {name: primary, url: "http://127.0.0.1:$B/primary", priority: 1, weight: 3}
      - {name: broken, url: "http://127.0.0.1:$CLOSED/broken", priority: 1}
      - {name: zero, url: "http://127.0.0.1:$B/zero", priority: 2, weight: 0}
      - {name: held, url: "http://127.0.0.1:$B/held", priority: 2}
  - name: web
    hosts: [web.look]
    all_down: {action: fallback, url: "https://status.example.com/"}
    regions:
      - {name: w1, url: "http://127.0.0.1:$B/w1", state: drain, reason: "capacity move"}
      - {name: w2, url: "http://127.0.0.1:$CLOSED/w2"}
  - {name: p3, hosts: [p3.look], regions: [{name: r3, url: "http://127.0.0.1:$B/r3"}]}
  - {name: p4, hosts: [p4.look], regions: [{name: r4, url: "http://127.0.0.1:$B/r4"}]}
  - {name: p5, regions: [{name: r5, url: "http://127.0.0.1:$B/r5"}]}
maintenance:
  - {name: db-upgrade, from: "2001-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", state: drain,
     regions: [api/held], reason: "CHG-1234 database upgrade"}
YAML
)

# look FILE EXPR: EXPR over the status page in FILE (page.py)
look() { "$PYTHON" "$IT_DIR/page.py" "$@"; }

# lget EXPR: one value out of a fresh /status of the look daemon
lget() {
    local f
    f=$(tmpf lstatus)
    if [ "$(get "http://127.0.0.1:$ADML/status" "$f")" = "200 application/json" ]; then
        pg get "$f" "$1"
    else
        echo "<no status>"
    fi
}
_lget_is() { [ "$(lget "$1")" = "$2" ]; }

# lpage: the look daemon's page as served, to a fresh file; prints its path
lpage() {
    local f
    f=$(tmpf lpage)
    get "http://127.0.0.1:$ADML/" "$f" >/dev/null && echo "$f"
}

LOOK_OK=
t_look_start() {
    start_detourd look "$LOOK" "$LL" || why "detourd look did not start" || return 1
    wait_listen "$ADML" "$LAST_PID" 10 || why "its admin listener did not start" || return 1
    # every region checked; broken and w2 down, past fall (2) failures
    wait_until 20 _lget_is '(all(r["last_check"] is not None for p in s["pools"] for r in p["regions"]) and
        R("api", "broken")["consecutive_failures"] > 2 and R("web", "w2")["consecutive_failures"] > 2)' true ||
        why "the look daemon's regions were never all checked: $(lget 'R("api", "broken")')" || return 1
    LOOK_OK=1
}
t "a daemon with five pools: a region down, one with weight 0, one in maintenance, a pool in fallback" t_look_start

# look_t DESC FUNC: a test of the look daemon, failed if it did not start
_look_guard() { [ -n "$LOOK_OK" ] || why "the look daemon did not start"; }
look_t() { t "$1" eval "_look_guard && $2"; }

# redirects_to PORT HOST N: N requests for HOST; prints how many got a 307
redirects_to() {
    local i
    for ((i = 0; i < $3; i++)); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time "$(scale 5)" -H "Host: $2" "http://127.0.0.1:$1/n$i"
    done | grep -c '^307$'
}

t_look_down_after() {
    local f got n
    f=$(lpage) || why "no page" || return 1
    got=$(look "$f" 'd["pools"]["api"]["why"]')
    expect_match "api's why" "$got" \
        '^tier 1: primary; out of that tier: broken down after 2 failures \(connect: Connection refused; ([0-9]+) in a row now\)$' ||
        return 1
    n=${BASH_REMATCH[1]}
    expect_eq "the count in a row, in the why line and in broken's row" \
        "$n failed in a row" "$(look "$f" 're.sub("^down ", "", d["pools"]["api"]["rows"]["broken"]["cells"]["state"])')" ||
        return 1
    # /status says the same, its count that of the same document
    got=$(lget 'str(P("api")["why"].endswith("; %d in a row now)" % R("api", "broken")["consecutive_failures"])) + " " + P("api")["why"]')
    expect_match "/status why" "$got" \
        '^True tier 1: primary; out of that tier: broken down after 2 failures \(connect: Connection refused; [0-9]+ in a row now\)$'
}
look_t "why: down after fall (2) failures, not after the count in a row, which follows it; page and /status" t_look_down_after

WEB_PILL="no region may receive traffic: w1 drained, w2 down → fallback"
WEB_WHY='^no region may receive traffic: w1 drained by the config override \(capacity move, until removed\), w2 down after 2 failures \(connect: Connection refused; [0-9]+ in a row now\) → fallback to https://status\.example\.com/$'

t_look_all_down() {
    local f
    f=$(lpage) || why "no page" || return 1
    expect_eq "web's pill" "$(look "$f" 'd["pools"]["web"]["pill"]')" "$WEB_PILL" || return 1
    expect_match "web's why" "$(look "$f" 'd["pools"]["web"]["why"]')" "$WEB_WHY" || return 1
    expect_eq "api has no pill" "$(look "$f" 'd["pools"]["api"]["pill"]')" null || return 1
    expect_match "/status why" "$(lget 'P("web")["why"]')" "$WEB_WHY" || return 1
    expect_eq "/status all_down_active, chosen" "$(lget '[P("web")["all_down_active"], P("web")["chosen"]]')" \
        '[true, ["fallback"]]' || return 1
    ! look "$f" 'd["text"]' | grep -q "all regions down" || why "the page says 'all regions down'"
}
look_t "all down: 'no region may receive traffic' and why per region (w1 drained, w2 down), as served and in /status" t_look_all_down

t_look_weight0() {
    local f
    f=$(lpage) || why "no page" || return 1
    expect_eq "zero: state, override" "$(look "$f" '[d["pools"]["api"]["rows"]["zero"][k] for k in ("state", "pill_cls")] + [d["pools"]["api"]["rows"]["zero"]["cells"]["override"]]')" \
        '["drain", "st c-drain", "auto"]' || return 1
    expect_match "zero's state cell" "$(look "$f" 'd["pools"]["api"]["rows"]["zero"]["cells"]["state"]')" \
        '^drain weight 0 · [0-9]+ ok in a row$' || return 1
    expect_eq "zero's weight cell: class, title" \
        "$(look "$f" '[d["pools"]["api"]["rows"]["zero"][k]["weight"] for k in ("cell_cls", "titles")]')" \
        '["n ov", "weight 0: no new traffic, whatever the override"]' || return 1
    expect_match "zero's state title" "$(look "$f" 'd["pools"]["api"]["rows"]["zero"]["titles"]["state"]')" \
        '; drained by its weight 0$'
}
look_t "weight 0: the row says drain with 'weight 0' beside it, the weight marked, the override auto" t_look_weight0

t_look_until_removed() {
    local f
    f=$(lpage) || why "no page" || return 1
    expect_eq "w1's override cell" "$(look "$f" 'd["pools"]["web"]["rows"]["w1"]["cells"]["override"]')" \
        "drain config · until removed capacity move" || return 1
    expect_eq "w1's override title" "$(look "$f" 'd["pools"]["web"]["rows"]["w1"]["titles"]["override"]')" \
        "capacity move – until removed" || return 1
    expect_match "held's override cell (a window: a real end)" \
        "$(look "$f" 'd["pools"]["api"]["rows"]["held"]["cells"]["override"]')" \
        '^drain maintenance:db-upgrade · [0-9]+ days left CHG-1234 database upgrade$' || return 1
    expect_eq "/status override_until of w1, held" "$(lget '[R("web", "w1")["override_until"], R("api", "held")["override_until"]]')" \
        '[null, "2099-01-01T00:00:00Z"]' || return 1
    ! look "$f" 'd["text"]' | grep -Eq '9999-|2000-01-01|[0-9]{6,} days' || why "a magic instant on the page"
}
look_t "an override without an end: 'until removed' (override cell, tooltip, why), override_until null" t_look_until_removed

t_look_colours() {
    local f
    f=$(lpage) || why "no page" || return 1
    expect_eq "row class and state pill of primary, broken, zero, held; web/w1" \
        "$(look "$f" '[[d["pools"][p]["rows"][r][k] for k in ("cls", "pill_cls")] for p, r in (("api", "primary"), ("api", "broken"), ("api", "zero"), ("api", "held"), ("web", "w1"))]')" \
        '[["state-up", "st c-up"], ["state-down", "st c-down"], ["state-drain", "st c-drain"], ["state-drain maint", "st c-maint"], ["state-drain", "st c-drain"]]' ||
        return 1
    expect_eq "the window's row" "$(look "$f" 'd["maint"]')" '{"db-upgrade": "maint-active"}'
}
look_t "maintenance has its colour (class maint, pill c-maint), a drain by the operator its own" t_look_colours

# share_ok FILE: every share cell of the page in FILE is its region's
# data-recent over its pool's sum, in the page's format
share_ok() {
    look "$1" '[(p, r, x["share"]) for p, v in d["pools"].items() for r, x in v["rows"].items()
        if x["share"] != (lambda n, t: "–" if not t else "%.*f %%" % (0 if 100 * n / t >= 10 or n == 0 else 1, 100 * n / t))(
            x["recent"], sum(y["recent"] for y in v["rows"].values()))]'
}

t_look_share() {
    local f got
    expect_eq "api.look redirects" "$(redirects_to "$LL" api.look 9)" 9 || return 1
    expect_eq "web.look redirects (fallback)" "$(redirects_to "$LL" web.look 4)" 4 || return 1
    expect_eq "p3.look redirects" "$(redirects_to "$LL" p3.look 3)" 3 || return 1
    wait_until 10 _lget_is 'P("api")["recent_requests"] >= 9 and P("p3")["recent_requests"] >= 3' true ||
        why "the redirects never showed in recent_requests" || return 1
    f=$(lpage) || why "no page" || return 1
    expect_eq "shares off their data-recent" "$(share_ok "$f")" "[]" || return 1
    expect_eq "api/primary, broken; web/w1; p3/r3" \
        "$(look "$f" '[d["pools"]["api"]["rows"]["primary"]["share"], d["pools"]["api"]["rows"]["broken"]["share"], d["pools"]["web"]["rows"]["w1"]["share"], d["pools"]["p3"]["rows"]["r3"]["share"]]')" \
        '["100 %", "0 %", "–", "100 %"]' || return 1
    got=$(look "$f" '[d["pools"]["api"]["share_title"], d["pools"]["api"]["share_sub"], d["pools"]["api"]["rows"]["primary"]["share_label"]]')
    expect_match "the share column's definition" "$got" \
        "^\[\"share of the pool's redirects over the last minute \(since the start during detourd's first minute\), the same in /status \(recent_requests\)\", \"(since start|last minute)\", \"share, (since start|last minute)\"\]$" ||
        return 1
    expect_eq "/status: each pool's recent_requests the sum of its regions'; no more than requests" \
        "$(lget 'all(p["recent_requests"] == sum(r["recent_requests"] for r in p["regions"]) and all(0 <= r["recent_requests"] <= r["requests"] for r in p["regions"]) for p in s["pools"]) and isinstance(s["recent_seconds"], int)')" \
        true
}
look_t "share: of the pool's redirects over the last minute, one definition (title; recent_requests in /status)" t_look_share

t_look_compact() {
    local f
    f=$(lpage) || why "no page" || return 1
    expect_eq "compact, pools" "$(look "$f" '[d["compact"], list(d["pools"])]')" \
        '[true, ["api", "web", "p3", "p4", "p5"]]' || return 1
    expect_eq "every pool a closed <details>" "$(look "$f" '[[v["details"], v["open"]] for v in d["pools"].values()]')" \
        '[[true, false], [true, false], [true, false], [true, false], [true, false]]' || return 1
    expect_eq "summaries: traffic, up/total, worst state" \
        "$(look "$f" '[[v[k] for k in ("sc", "su", "worst", "worst_cls")] for v in d["pools"].values()]')" \
        '[["→ primary", "1/4 up", "down", "st c-down"], ["→ fallback", "0/2 up", "down", "st c-down"], ["→ r3", "1/1 up", "up", "st c-up"], ["→ r4", "1/1 up", "up", "st c-up"], ["→ r5", "1/1 up", "up", "st c-up"]]' ||
        return 1
    # the rows are in the HTML all the same
    expect_eq "rows" "$(look "$f" 'sorted(p + "/" + r for p, v in d["pools"].items() for r in v["rows"])')" \
        '["api/broken", "api/held", "api/primary", "api/zero", "p3/r3", "p4/r4", "p5/r5", "web/w1", "web/w2"]' ||
        return 1
    f=$(tmpf page)
    get "http://127.0.0.1:$ADM/" "$f" >/dev/null || return 1
    expect_eq "two pools: not compact" "$(look "$f" 'd["compact"]')" false
}
look_t "more than 4 pools: one summary line per pool (<details>), the rows inside; 2 pools: not" t_look_compact

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
