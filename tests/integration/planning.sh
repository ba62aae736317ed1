#!/usr/bin/env bash
# Integration tests of planning and explaining: `detourd -t --at TIME`
# (each region's operator state at an instant and where traffic would go
# if every check passed; nothing bound or probed) and each pool's `why`
# line in /status and on the status page (the tier in use and why every
# better region is out). TAP on stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"

alloc_ports 3 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]} CLOSED=${PORTS[2]}

# ---- -t --at: the plan for an instant (fixed instants: no clock) ----

PCONF=$(write_config plan.yaml <<EOF
listen: ["127.0.0.1:$L"]
pools:
  - name: api
    regions:
      - {name: eu-west, url: "http://eu-west.test", priority: 1}
      - {name: eu-central, url: "http://eu-central.test", priority: 1, state: drain,
         until: "2099-11-28T02:30:00Z", reason: "disk swap"}
      - {name: us-east, url: "http://us-east.test", priority: 2}
maintenance:
  - name: eu-west-db
    from: "2099-11-28T02:00:00Z"
    until: "2099-11-28T04:00:00Z"
    state: drain
    regions: ["api/eu-west"]
    reason: "CHG-1234 database migration"
EOF
)

# plan TIME: runs -t --at TIME; the plan is in $TEST_TMP/plan.out
plan() {
    RUN_OUT=$TEST_TMP/plan.out RUN_ERR=$TEST_TMP/plan.err run_detourd -t -c "$PCONF" --at "$1"
}

t_plan_before() {
    plan 2099-11-28T01:00:00Z
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "plan" "$(cat "$TEST_TMP/plan.out")" "$PCONF: configuration OK
at 2099-11-28T01:00:00Z, if every health check passes:
pool api
  region eu-west: auto
  region eu-central: drain by config until 2099-11-28T02:30:00Z (disk swap)
  region us-east: auto
  traffic: eu-west
maintenance eu-west-db: pending"
}
t "--at before the window: the override drains its region, traffic on the other one of the tier" t_plan_before

t_plan_inside() {
    # an offset is read as the instant it names (03:00+01:00 is 02:00Z)
    plan 2099-11-28T03:00:00+01:00
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "plan" "$(sed 1d "$TEST_TMP/plan.out")" "at 2099-11-28T02:00:00Z, if every health check passes:
pool api
  region eu-west: drain by maintenance:eu-west-db until 2099-11-28T04:00:00Z (CHG-1234 database migration)
  region eu-central: drain by config until 2099-11-28T02:30:00Z (disk swap)
  region us-east: auto
  traffic: us-east
maintenance eu-west-db: active"
}
t "--at inside the window: the region drained by it, traffic on the next tier" t_plan_inside

t_plan_override_over() {
    plan 2099-11-28T02:30:00Z
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "regions" "$(grep '^  ' "$TEST_TMP/plan.out")" "  region eu-west: drain by maintenance:eu-west-db until 2099-11-28T04:00:00Z (CHG-1234 database migration)
  region eu-central: auto
  region us-east: auto
  traffic: eu-central"
}
t "--at the override's until: it has ended, its region takes the traffic" t_plan_override_over

t_plan_after() {
    plan 2099-11-28T04:00:00Z
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "regions" "$(sed -n '/^  /p; /^maintenance/p' "$TEST_TMP/plan.out")" "  region eu-west: auto
  region eu-central: auto
  region us-east: auto
  traffic: eu-west, eu-central
maintenance eu-west-db: over"
}
t "--at the window's end: every region auto, traffic on the first tier" t_plan_after

t_plan_usage() {
    plan 2099-11-28
    expect_eq "a date alone: exit status" "$LAST_RC" 2 || return 1
    expect_eq "message" "$(cat "$TEST_TMP/plan.err")" \
        "detourd: --at: '2099-11-28' is not an RFC 3339 time (like 2026-11-28T04:00:00Z)" || return 1
    expect_eq "nothing on stdout" "$(cat "$TEST_TMP/plan.out")" "" || return 1
    RUN_OUT=$TEST_TMP/u.out RUN_ERR=$TEST_TMP/u.err run_detourd -c "$PCONF" --at 2099-11-28T01:00:00Z
    expect_eq "without -t: exit status" "$LAST_RC" 2 || return 1
    expect_match "message" "$(head -n 1 "$TEST_TMP/u.err")" "^detourd: --at needs -t" || return 1
    RUN_OUT=$TEST_TMP/v.out RUN_ERR=$TEST_TMP/v.err run_detourd -t -c "$PCONF"
    expect_eq "-t alone: exit status" "$LAST_RC" 0 || return 1
    expect_eq "-t alone: no plan" "$(cat "$TEST_TMP/v.out")" "$PCONF: configuration OK"
}
t "--at: a bad time and --at without -t are usage errors (exit 2); -t alone prints no plan" t_plan_usage

# The epoch is an instant like any other: an until there is long past (not
# "no end"), a window may start or end there.
ECONF=$(write_config epoch.yaml <<EOF
listen: ["127.0.0.1:$L"]
pools:
  - name: api
    regions:
      - {name: eu, url: "http://eu.test", state: drain, until: "1970-01-01T00:00:00Z",
         reason: "long ago"}
      - {name: us, url: "http://us.test"}
maintenance:
  - {name: since-1970, from: "1970-01-01T00:00:00Z", until: "2099-11-28T04:00:00Z",
     state: down, regions: [api/us], reason: "forever, nearly"}
  - {name: until-1970, from: "1969-12-31T23:00:00Z", until: "1970-01-01T00:00:00Z",
     regions: [api/eu]}
EOF
)

# eplan TIME: -t --at TIME on the epoch config
eplan() {
    RUN_OUT=$TEST_TMP/eplan.out RUN_ERR=$TEST_TMP/eplan.err run_detourd -t -c "$ECONF" --at "$1"
}

t_plan_epoch() {
    eplan 2099-11-28T01:00:00Z
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_match "the until is past: warned" "$(cat "$TEST_TMP/eplan.err")" \
        "pool api region eu: state drain ended at 1970-01-01T00:00:00Z, before this config was loaded: the region is auto" ||
        return 1
    expect_eq "plan" "$(sed 1d "$TEST_TMP/eplan.out")" "at 2099-11-28T01:00:00Z, if every health check passes:
pool api
  region eu: auto
  region us: down by maintenance:since-1970 until 2099-11-28T04:00:00Z (forever, nearly)
  traffic: eu
maintenance since-1970: active
maintenance until-1970: over" || return 1
    eplan 1970-01-01T00:00:00Z
    expect_eq "at the epoch" "$(sed -n '/^  /p; /^maintenance/p' "$TEST_TMP/eplan.out")" "  region eu: auto
  region us: down by maintenance:since-1970 until 2099-11-28T04:00:00Z (forever, nearly)
  traffic: eu
maintenance since-1970: active
maintenance until-1970: over" || return 1
    eplan 1969-12-31T23:59:59Z
    expect_eq "a second before it" "$(sed -n '/^  /p; /^maintenance/p' "$TEST_TMP/eplan.out")" "  region eu: drain by config until 1970-01-01T00:00:00Z (long ago)
  region us: auto
  traffic: us
maintenance since-1970: pending
maintenance until-1970: active"
}
t "--at with the epoch as an until (past, not endless) and as a window's from and until" t_plan_epoch

# ---- why: how each pool's current choice came about ----

# Pools: all good; a first-tier region down after failed checks (nothing
# listens on CLOSED); two first-tier regions drained, by a window and by an
# override; every region down by hand.
WCONF=$(write_config why.yaml <<EOF
listen: ["127.0.0.1:$L"]
admin: {listen: "127.0.0.1:$ADM"}
checks: {type: none}
pools:
  - name: good
    regions:
      - {name: eu-west, url: "http://eu-west.test", priority: 1}
      - {name: eu-central, url: "http://eu-central.test", priority: 1}
      - {name: us-east, url: "http://us-east.test", priority: 2}
  - name: flaky
    hosts: [flaky.test]
    regions:
      - {name: eu-west, url: "http://eu-west.test", priority: 1}
      - {name: eu-central, url: "http://127.0.0.1:$CLOSED", priority: 1,
         check: {type: tcp, $FAST}}
  - name: maint
    hosts: [maint.test]
    regions:
      - {name: eu-west, url: "http://eu-west.test", priority: 1}
      - {name: eu-central, url: "http://eu-central.test", priority: 1, state: drain,
         until: "2099-01-01T00:00:00Z", reason: "disk swap"}
      - {name: us-east, url: "http://us-east.test", priority: 2}
  - name: dark
    hosts: [dark.test]
    all_down: {action: reject}
    regions:
      - {name: only, url: "http://only.test", state: down}
maintenance:
  - name: eu-west-db
    from: "2001-01-01T00:00:00Z"
    until: "2099-01-01T00:00:00Z"
    state: drain
    regions: ["maint/eu-west"]
    reason: "CHG-1234"
EOF
)
start_detourd why "$WCONF" "$L" || echo "Bail out! detourd did not start"

# why_of POOL: the pool's why line in /status
why_of() {
    curl -sS --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" | "$PYTHON" -c '
import json, sys
print([p for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]][0]["why"])' "$1"
}
why_matches() { [[ "$(why_of "$1")" =~ $2 ]]; }

WHY_GOOD="tier 1: eu-west, eu-central"
# eu-central went down after `fall` (3) failures; the count in a row goes on
WHY_FLAKY='tier 1: eu-west; out of that tier: eu-central down after 3 failures \(connect: Connection refused(; ([0-9]+) in a row now)?\)$'
WHY_MAINT="tier 1 unavailable: eu-west drained by maintenance eu-west-db (CHG-1234), eu-central drained by the config override (disk swap, until 2099-01-01T00:00:00Z); tier 2: us-east"
WHY_DARK="no region may receive traffic: only marked down by the config override (until removed) → reject"

t_why_good() {
    expect_eq "why" "$(why_of good)" "$WHY_GOOD"
}
t "why, every region up: the first tier and its regions" t_why_good

# flaky_streak: "WHY_COUNT CONSECUTIVE_FAILURES" of flaky/eu-central from one
# /status document
flaky_streak() {
    curl -sS --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" | "$PYTHON" -c '
import json, re, sys
p = [p for p in json.load(sys.stdin)["pools"] if p["name"] == "flaky"][0]
m = re.search(r"; ([0-9]+) in a row now\)$", p["why"])
print(m.group(1) if m else "-", [r for r in p["regions"] if r["name"] == "eu-central"][0]["consecutive_failures"])'
}
_streak_past_fall() { [ "$(flaky_streak | cut -d" " -f2)" -gt 3 ] 2>/dev/null; }

t_why_down() {
    local got
    wait_until 20 why_matches flaky "^$WHY_FLAKY" || why "why is: $(why_of flaky)" || return 1
    # past `fall`, the line still says 3 (what took it down) and counts
    # the failures in a row beside it, as /status does
    wait_until 20 _streak_past_fall || why "eu-central never failed more than 3 times in a row" || return 1
    got=$(flaky_streak)
    expect_eq "the count in the why line and consecutive_failures" "${got% *}" "${got#* }"
}
t "why, a region down after failed checks: down after fall (3) failures, the count in a row now, the last failure" t_why_down

t_why_maint() {
    expect_eq "drained" "$(why_of maint)" "$WHY_MAINT" || return 1
    expect_eq "all down" "$(why_of dark)" "$WHY_DARK"
}
t "why, the first tier drained by a window and by an override, each with its reason; all down: the action" t_why_maint

t_plan_none() {
    RUN_OUT=$TEST_TMP/none.out RUN_ERR=$TEST_TMP/none.err run_detourd -t -c "$WCONF" --at 2050-01-01T00:00:00Z
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_eq "pool dark" "$(sed -n '/^pool dark$/,/traffic:/p' "$TEST_TMP/none.out")" "pool dark
  region only: down by config
  traffic: none (no region may receive traffic: reject)"
}
t "--at where the operator states leave no region: 'no region may receive traffic', and the action" t_plan_none

# page_whys FILE: "POOL: WHY" for each pool section of a status page (as
# an HTML parser reads it)
page_whys() {
    "$PYTHON" - "$1" <<'PY'
import html.parser, sys
class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.pool, self.inwhy, self.out = None, False, []
    def handle_starttag(self, tag, a):
        a = dict(a)
        if tag == "section" and (a.get("aria-label") or "").startswith("pool "):
            self.pool = a["aria-label"][5:]
        if tag == "p" and a.get("class") == "why":
            self.inwhy = True
            self.out.append("%s: " % self.pool)
    def handle_endtag(self, tag):
        if tag == "p":
            self.inwhy = False
    def handle_data(self, d):
        if self.inwhy:
            self.out[-1] += d
p = P()
p.feed(open(sys.argv[1], encoding="utf-8").read())
print("\n".join(p.out))
PY
}

# page_ok FILE: the why lines of the page in FILE are the expected ones
page_ok() {
    local got
    got=$(page_whys "$1")
    expect_eq "good" "$(grep '^good: ' <<<"$got")" "good: $WHY_GOOD" || return 1
    expect_eq "maint" "$(grep '^maint: ' <<<"$got")" "maint: $WHY_MAINT" || return 1
    expect_eq "dark" "$(grep '^dark: ' <<<"$got")" "dark: $WHY_DARK" || return 1
    [[ "$(grep '^flaky: ' <<<"$got")" =~ ^flaky:\ $WHY_FLAKY ]] || why "flaky: $(grep '^flaky: ' <<<"$got")"
}

t_why_page() {
    local f=$TEST_TMP/page.html
    curl -sS --max-time "$(scale 5)" -o "$f" "http://127.0.0.1:$ADM/" || why "no page" || return 1
    page_ok "$f"
}
t "the status page shows each pool's why above its table, as served (no script)" t_why_page

# page CDP_OPTIONS... URL: headless Chromium driven in real time through
# the DevTools protocol (cdp.py), bounded, loopback only (every other host
# goes to a dead proxy). Not --dump-dom with a virtual time budget: the
# page's open /events stream never lets that end.
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

T_SCRIPT="the page's script shows each pool's why from /status (Chromium)"
CHROMIUM=$(command -v chromium || command -v chromium-browser)
if [ -z "$CHROMIUM" ]; then
    tap_skip "$T_SCRIPT" "chromium not available"
else
    t_why_script() {
        local f=$TEST_TMP/dom.html
        page --stage 'document.body.dataset.ready === "1"' "$TEST_TMP/dom.ready" --dom "$f" \
            "http://127.0.0.1:$ADM/" ||
            why "chromium failed ($?): $(tail -5 "$TEST_TMP/chrome.log")" || return 1
        grep -q 'data-ready="1"' "$f" || why "the script did not render the page" || return 1
        page_ok "$f"
    }
    t "$T_SCRIPT" t_why_script
fi

t_no_sanitizer_reports
done_testing
