#!/usr/bin/env bash
# Integration tests of timed overrides and maintenance windows against the
# real daemon: an override that ends by itself and a window that opens and
# closes while requests flow, both without a reload; what /status says of
# them; a reload that finds a window over; one window handing a region to
# another, by the clock and by a reload (the log lines and the events an
# exec sink gets); and the config errors of -t.
# The instants are computed when the test runs (a few seconds ahead,
# scaled by TIMEOUT_SCALE). TAP on stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"

alloc_ports 6 || {
    echo "Bail out! no free ports"
    exit 1
}
LO=${PORTS[0]} ADMO=${PORTS[1]} LW=${PORTS[2]} ADMW=${PORTS[3]} LH=${PORTS[4]} ADMH=${PORTS[5]}

# rfc3339 UNIX_SECONDS
rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
# secs N: N seconds scaled, rounded up to a whole second
secs() { awk -v t="$(scale "$1")" 'BEGIN { printf "%d\n", t == int(t) ? t : int(t) + 1 }'; }

# status PORT PYEXPR: evaluates PYEXPR over the /status document `s`
# (helpers: R(pool, region), W(name)) and prints the result
status() {
    curl -sS --max-time "$(scale 5)" "http://127.0.0.1:$1/status" | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
def R(p, r):
    return [x for x in [q for q in s["pools"] if q["name"] == p][0]["regions"] if x["name"] == r][0]
def W(n):
    return [w for w in s["maintenance"] if w["name"] == n][0]
print(eval(sys.argv[1]))' "$2"
}

# location PORT: where a request is redirected now
location() {
    curl -s -o /dev/null -w '%{redirect_url}' --max-time "$(scale 5)" "http://127.0.0.1:$1/x"
}
location_is() { [ "$(location "$1")" = "$2" ]; }

# ---- the daemons: both start now, so their boundaries run together ----

T0=$(date +%s)
O_END=$((T0 + $(secs 6)))                  # the override ends
# the window: first far ahead; moved near once the client runs (so that a
# slow start on a busy host cannot miss its opening)
W_FROM=$((T0 + 3600)) W_UNTIL=$((W_FROM + $(secs 2)))

OCONF=$(write_config override.yaml <<EOF
listen: ["127.0.0.1:$LO"]
admin: {listen: "127.0.0.1:$ADMO"}
checks: {type: none}
pools:
  - name: api
    regions:
      - {name: primary, url: "http://primary.test", priority: 1, state: drain,
         until: "$(rfc3339 "$O_END")", reason: "CHG-1 database migration"}
      - {name: backup, url: "http://backup.test", priority: 2}
      - {name: spare, url: "http://spare.test", priority: 3, state: drain,
         until: "1970-01-01T00:00:00Z", reason: "long ago"}
EOF
)
# window_conf: the window daemon's config for the current W_FROM/W_UNTIL
window_conf() {
    cat <<EOF
listen: ["127.0.0.1:$LW"]
workers: 2
admin: {listen: "127.0.0.1:$ADMW"}
checks: {type: none}
pools:
  - name: web
    regions:
      - {name: eu, url: "http://eu.test", priority: 1}
      - {name: us, url: "http://us.test", priority: 2}
maintenance:
  - name: eu-rack
    from: "$(rfc3339 "$W_FROM")"
    until: "$(rfc3339 "$W_UNTIL")"
    state: drain
    regions: ["web/eu"]
    reason: "rack move"
  - name: old
    from: "2001-01-01T00:00:00Z"
    until: "2001-01-02T00:00:00+02:00"
    state: down
    regions: ["web/us"]
  - name: epoch
    from: "1970-01-01T00:00:00Z"
    until: "1970-01-01T00:00:01Z"
    regions: ["web/us"]
EOF
}
WCONF=$(window_conf | write_config window.yaml)

# The handover daemon: windows that hand regions to each other, an exec
# sink recording every event (one JSON object a line, in order). Its
# boundaries are set far ahead, then moved near once it runs.
HOOK=$TEST_TMP/hook.sh
EVENTS=$TEST_TMP/events.jsonl
cat >"$HOOK" <<EOF
#!/bin/sh
{ cat; echo; } >>"$EVENTS"
EOF
chmod +x "$HOOK"
H1=$((T0 + 7200))
# hand_conf: the handover daemon's config for boundaries H1 < H2 < H3 < H4:
#   eu: window a hands it to b at H2, both drain (b is listed first: the
#       order of the list orders nothing)
#   us: inner (down, H2-H3) inside outer (drain, H1-H4)
#   ap: its own override (drain until H2) inside ap-win (down, H1-H3)
#   sa: short (drain, H2-H3) inside long (drain, H1-H4): it never holds sa
hand_conf() {
    H2=$((H1 + $(secs 2))) H3=$((H1 + 2 * $(secs 2))) H4=$((H1 + 3 * $(secs 2)))
    cat <<EOF
listen: ["127.0.0.1:$LH"]
admin: {listen: "127.0.0.1:$ADMH"}
checks: {type: none}
events:
  exec: {command: ["$HOOK"]}
pools:
  - name: web
    regions:
      - {name: eu, url: "http://eu.test"}
      - {name: us, url: "http://us.test"}
      - {name: ap, url: "http://ap.test", state: drain, until: "$(rfc3339 "$H2")", reason: "own"}
      - {name: sa, url: "http://sa.test"}
maintenance:
  - {name: b, from: "$(rfc3339 "$H2")", until: "$(rfc3339 "$H3")", regions: [web/eu],
     reason: "second half"}
  - {name: a, from: "$(rfc3339 "$H1")", until: "$(rfc3339 "$H2")", regions: [web/eu],
     reason: "first half"}
  - {name: outer, from: "$(rfc3339 "$H1")", until: "$(rfc3339 "$H4")", regions: [web/us],
     reason: "rack move"}
  - {name: inner, from: "$(rfc3339 "$H2")", until: "$(rfc3339 "$H3")", regions: [web/us],
     state: down, reason: "disk swap"}
  - {name: ap-win, from: "$(rfc3339 "$H1")", until: "$(rfc3339 "$H3")", regions: [web/ap],
     state: down, reason: "power work"}
  - {name: long, from: "$(rfc3339 "$H1")", until: "$(rfc3339 "$H4")", regions: [web/sa],
     reason: "long one"}
  - {name: short, from: "$(rfc3339 "$H2")", until: "$(rfc3339 "$H3")", regions: [web/sa],
     reason: "short one"}
EOF
}
HCONF=$(hand_conf | write_config hand.yaml)

# A client sends requests (new connections and keep-alive ones) until
# STOP exists, writing "UNIX_MS LOCATION" per answer (the time it was sent) and "FAIL ..." per
# failure to OUT.
CLIENT_PY='
import http.client, os, sys, threading, time
port, out, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
f = open(out, "w", buffering=1)
def run(keep):
    conn = None
    while not os.path.exists(stop):
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.time()
            conn.request("GET", "/p", headers={} if keep else {"Connection": "close"})
            r = conn.getresponse()
            r.read()
            line = "%d %s" % (t0 * 1000, r.getheader("Location")) if r.status == 307 \
                else "FAIL status %d" % r.status
            if not keep:
                conn.close()
                conn = None
        except Exception as e:
            line = "FAIL %r" % e
            conn = None
        with lock:
            f.write(line + "\n")
        time.sleep(0.002)
ts = [threading.Thread(target=run, args=(k,)) for k in (True, False)]
for t in ts: t.start()
for t in ts: t.join()
'

start_detourd override "$OCONF" "$LO" || echo "Bail out! detourd did not start"
OLOG=$(daemon_log override)
start_detourd window "$WCONF" "$LW" || echo "Bail out! detourd did not start"
WPID=$LAST_PID
WLOG=$(daemon_log window)
start_detourd hand "$HCONF" "$LH" || echo "Bail out! detourd did not start"
HPID=$LAST_PID
HLOG=$(daemon_log hand)
# sink_reloads: the reload events the sink got
sink_reloads() {
    local n
    n=$(grep -c '"kind":"reload"' "$EVENTS" 2>/dev/null)
    echo "${n:-0}"
}
sink_reloads_at_least() { [ "$(sink_reloads)" -ge "$1" ]; }
# hand_reload: the handover daemon on hand_conf as it is now; waits until
# the sink got everything that reload sent (its reload event comes last)
HRELOADS=0
hand_reload() {
    hand_conf >"$HCONF"
    reload_daemon "$HPID" "$HLOG" && [ "$RELOAD_OK" = 1 ] || return 1
    HRELOADS=$((HRELOADS + 1))
    wait_until 20 sink_reloads_at_least "$HRELOADS"
}
# The windows near: H1 a few seconds ahead. Should the reload land after
# H1 on a busy host, they go far again and the lead doubles. HBASE: the
# sink's lines before that (the handover tests read the ones after).
HNEAR='' LEAD=2
for _ in 1 2 3; do
    # web/eu's state changes while the windows are far: a try that landed
    # after H1 drained it, and the reload moving them away lifted that
    HCHANGES=$(status "$ADMH" 'R("web","eu")["state_changes"]')
    H1=$(($(date +%s) + $(secs "$LEAD")))
    hand_reload || break
    if [ "$(date +%s)" -lt "$H1" ]; then
        HNEAR=1
        break
    fi
    H1=$((T0 + 7200))
    hand_reload || break
    LEAD=$((LEAD * 2))
done
[ -n "$HNEAR" ] || echo "Bail out! the handover windows could not be moved near"
HBASE=$(grep -c '' "$EVENTS" 2>/dev/null) HLOGBASE=$(grep -c '' "$HLOG")

# hlog: the handover daemon's log since the windows were moved near
hlog() { tail -n +"$((HLOGBASE + 1))" "$HLOG"; }
hlog_count() {
    local c
    c=$(hlog | grep -cE -- "$1")
    echo "${c:-0}"
}
hlog_has() { [ "$(hlog_count "$1")" -ge 1 ]; }
spawn client "$PYTHON" -c "$CLIENT_PY" "$LW" "$TEST_TMP/client.txt" "$TEST_TMP/client.stop"
CLIENT_PID=$LAST_PID
client_answered() { [ -s "$TEST_TMP/client.txt" ]; }
wait_until 30 client_answered || echo "Bail out! the client got no answer"
W_FROM=$(($(date +%s) + $(secs 2))) W_UNTIL=$((W_FROM + $(secs 2)))
window_conf >"$WCONF"
reload_daemon "$WPID" "$WLOG" && [ "$RELOAD_OK" = 1 ] || echo "Bail out! the window could not be moved near"

t_override_ends() {
    # before the end (each check judged only if the end had not come by
    # the time it was answered: a busy host may get there first)
    local loc st
    loc=$(location "$LO")
    [ "$loc" = "http://backup.test/x" ] || [ "$(date +%s)" -ge "$O_END" ] ||
        why "before the end: '$loc', want http://backup.test/x" || return 1
    st=$(status "$ADMO" '[R("api","primary")[k] for k in ("override","override_source","override_until","override_reason","state")]')
    [ "$st" = "['drain', 'config', '$(rfc3339 "$O_END")', 'CHG-1 database migration', 'drain']" ] ||
        [ "$(date +%s)" -ge "$O_END" ] || why "/status before the end: $st" || return 1
    # no reload: the daemon moves traffic back by itself
    wait_until 15 location_is "$LO" "http://primary.test/x" ||
        why "traffic did not go back to primary: $(location "$LO")" || return 1
    [ "$(date +%s)" -ge "$O_END" ] || why "traffic moved back before the end" || return 1
    expect_eq "reloads" "$(log_count "$OLOG" 'reload')" 0 || return 1
    expect_eq "the end logged once, with its reason" \
        "$(log_count "$OLOG" 'region primary: override drain ended at .*CHG-1 database migration')" 1 || return 1
    expect_eq "/status after the end" \
        "$(status "$ADMO" '[R("api","primary")[k] for k in ("override","override_source","override_until","override_reason","state","state_changes")]')" \
        "['auto', None, None, None, 'up', 1]"
}
t "an override with until ends by itself: traffic goes back without a reload" t_override_ends

t_window_pending() {
    if [ "$(date +%s)" -lt "$W_FROM" ]; then
        expect_eq "phase before" "$(status "$ADMW" 'W("eu-rack")["phase"]')" pending || return 1
    fi
    expect_eq "a window long over" "$(status "$ADMW" 'W("old")')" \
        "{'name': 'old', 'from': '2001-01-01T00:00:00Z', 'until': '2001-01-01T22:00:00Z', 'state': 'down', 'regions': ['web/us'], 'reason': None, 'phase': 'over'}"
}
t "/status lists every window with its phase" t_window_pending

t_epoch() {
    expect_eq "a window from the epoch" "$(status "$ADMW" '[W("epoch")[k] for k in ("from", "until", "phase")]')" \
        "['1970-01-01T00:00:00Z', '1970-01-01T00:00:01Z', 'over']" || return 1
    expect_eq "an override until the epoch: over" \
        "$(status "$ADMO" '[R("api","spare")[k] for k in ("override","override_source","override_until","override_reason","state")]')" \
        "['auto', None, None, None, 'up']" || return 1
    expect_eq "warned once, at startup" \
        "$(log_count "$OLOG" 'pool api region spare: state drain ended at 1970-01-01T00:00:00Z, before this config was loaded: the region is auto')" 1
}
t "the epoch is an instant: a window from it lists it, an override until it is over at load" t_epoch

t_window_active() {
    wait_log "$WLOG" 'maintenance eu-rack started: drain web/eu until .* \(rack move\)' 15 ||
        why "the window did not start" || return 1
    # the status may already show the end on a loaded host: then skip it
    local got
    got=$(status "$ADMW" '(W("eu-rack")["phase"], [R("web","eu")[k] for k in ("override","override_source","override_until","override_reason")])')
    [ "$(date +%s)" -ge "$W_UNTIL" ] && return 0
    expect_eq "/status in the window" "$got" \
        "('active', ['drain', 'maintenance:eu-rack', '$(rfc3339 "$W_UNTIL")', 'rack move'])"
}
t "in the window: /status shows the region drained by it, with its end and reason" t_window_active

# zones CLIENT_FILE: checks the client's answers by the time each request
# was sent: before the window eu, inside it us, after it eu; requests sent
# within a few ms of a boundary may see either side (threads, a busy
# host), so 20 ms before and 150 ms after each are not judged. Prints
# what is wrong, or a summary line starting with "ok".
zones() {
    "$PYTHON" - "$1" "$W_FROM" "$W_UNTIL" <<'PY'
import sys
f, b, u = sys.argv[1], int(sys.argv[2]) * 1000, int(sys.argv[3]) * 1000
seen = {"before": 0, "inside": 0, "after": 0}
bad, fails, first_us, first_back = [], 0, None, None
for line in open(f):
    parts = line.split()
    if not parts:
        continue
    if parts[0] == "FAIL":
        fails += 1
        bad.append(line.strip())
        continue
    t, loc = int(parts[0]), parts[1]
    where = "eu" if "eu.test" in loc else "us" if "us.test" in loc else loc
    if where == "us" and t >= b - 20 and first_us is None:
        first_us = t - b
    if where == "eu" and t >= u - 20 and first_back is None:
        first_back = t - u
    if t < b - 20:
        zone, want = "before", "eu"
    elif b + 150 <= t < u - 20:
        zone, want = "inside", "us"
    elif t >= u + 150:
        zone, want = "after", "eu"
    else:
        continue
    seen[zone] += 1
    if where != want:
        bad.append("%s the window (sent at %+d ms from its start): %s, want %s" % (zone, t - b, where, want))
missing = [z for z, n in seen.items() if n == 0]
if fails or bad or missing:
    print("failed requests: %d; %s; no requests %s" % (fails, "; ".join(bad[:5]) or "-", missing or "-"))
    sys.exit(1)
print("ok %d/%d/%d requests before/inside/after; first to us sent %s ms after the opening, first back to eu %s ms after the end"
      % (seen["before"], seen["inside"], seen["after"], first_us, first_back))
PY
}
saw_return() { "$PYTHON" -c 'import sys
u = int(sys.argv[2]) * 1000
sys.exit(0 if any(l.split()[0] != "FAIL" and int(l.split()[0]) >= u + 150 and "eu.test" in l for l in open(sys.argv[1]) if l.strip()) else 1)' "$TEST_TMP/client.txt" "$W_UNTIL"; }

t_window_traffic() {
    wait_log "$WLOG" 'maintenance eu-rack ended' 15 || why "the window did not end" || return 1
    wait_until 10 saw_return || why "no answer back to eu after the window"
    touch "$TEST_TMP/client.stop"
    wait_exit "$CLIENT_PID" 20 || why "the client did not stop" || return 1
    local out
    out=$(zones "$TEST_TMP/client.txt") || why "$out" || return 1
    diag "$out"
    expect_eq "window log lines" "$(log_count "$WLOG" 'maintenance eu-rack (started|ended)')" 2 || return 1
    expect_eq "state changes of eu" "$(status "$ADMW" 'R("web","eu")["state_changes"]')" 2
}
t "a window opens and closes while requests flow: no failed request, traffic moves at both boundaries" t_window_traffic

t_window_over() {
    expect_eq "after the window" \
        "$(status "$ADMW" '(W("eu-rack")["phase"], R("web","eu")["override"], R("web","eu")["override_source"])')" \
        "('over', 'auto', None)" || return 1
    reload_daemon "$WPID" "$WLOG" || why "no reload outcome" || return 1
    expect_eq "reload" "$RELOAD_OK" 1 || return 1
    expect_eq "phase after a reload" "$(status "$ADMW" 'W("eu-rack")["phase"]')" over || return 1
    expect_eq "nothing logged again" "$(log_count "$WLOG" 'maintenance eu-rack')" 2
}
t "a reload keeps a window that is over listed as over and logs nothing again" t_window_over

# A reload that drains a region by its own override, and the reload that
# lifts it, each change where traffic goes: each counts, as a window's
# start and end on the clock do.
t_reload_counts() {
    local n
    n=$(status "$ADMW" 'R("web","eu")["state_changes"]')
    window_conf | sed 's|{name: eu, url: "http://eu.test", priority: 1}|{name: eu, url: "http://eu.test", priority: 1, state: drain, reason: "by hand"}|' >"$WCONF"
    reload_daemon "$WPID" "$WLOG" && [ "$RELOAD_OK" = 1 ] || why "reload with the drain failed" || return 1
    expect_eq "state changes after the drain" "$(status "$ADMW" 'R("web","eu")["state_changes"]')" $((n + 1)) ||
        return 1
    window_conf >"$WCONF"
    reload_daemon "$WPID" "$WLOG" && [ "$RELOAD_OK" = 1 ] || why "reload lifting the drain failed" || return 1
    expect_eq "state changes after the lift" "$(status "$ADMW" 'R("web","eu")["state_changes"]')" $((n + 2))
}
t "a reload that sets or lifts an override counts a state change (as a window's start and end do)" \
    t_reload_counts

# ---- handovers ----

# overrides REGION [FIELDS]: the override events of web/REGION the sink
# got since the windows were moved near, oldest first, as a Python list of
# tuples of FIELDS (default from, to and the reason's first clause)
overrides() {
    "$PYTHON" - "$EVENTS" "$HBASE" "$1" "${2:-}" <<'PY'
import json, os, sys
path, base, region, fields = sys.argv[1], int(sys.argv[2] or 0), sys.argv[3], sys.argv[4]
out = []
lines = open(path).readlines() if os.path.exists(path) else []
for line in lines[base:]:
    if not line.strip():
        continue
    try:
        e = json.loads(line)
    except ValueError:  # the hook is appending it right now
        continue
    if e["kind"] != "override" or e.get("pool") != "web" or e.get("region") != region:
        continue
    if fields:
        out.append(tuple(e.get(f) for f in fields.split(",")))
    else:
        out.append((e["from"], e["to"], e["reason"].split(";")[0]))
print(out)
PY
}
override_count() { "$PYTHON" -c 'import ast, sys; print(len(ast.literal_eval(sys.argv[1])))' "$(overrides "$1")"; }
overrides_at_least() { [ "$(override_count "$1")" -ge "$2" ]; }
# line_of ERE: the number of the first line of hlog matching ERE
line_of() { hlog | grep -nE -- "$1" | head -n 1 | cut -d: -f1; }
# ordered A B: line numbers A and B are both known and A comes first
ordered() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -lt "$2" ]; }

t_handover_clock() {
    wait_until 30 hlog_has 'maintenance b ended' || why "window b did not end" || return 1
    wait_until 10 overrides_at_least eu 4 || why "events: $(overrides eu)" || return 1
    expect_eq "web/eu's override events" "$(overrides eu)" \
        "[('auto', 'drain', 'maintenance a started: first half'), ('drain', 'drain', 'maintenance a ended: first half'), ('drain', 'drain', 'maintenance b started: second half'), ('drain', 'auto', 'maintenance b ended: second half')]" ||
        return 1
    local ended started
    ended=$(line_of 'maintenance a ended') started=$(line_of 'maintenance b started')
    ordered "$ended" "$started" ||
        why "log: a's end at line '$ended', b's start at line '$started': $(hlog | grep maintenance)" ||
        return 1
    expect_eq "log lines of a and b" "$(hlog_count 'maintenance (a|b) (started|ended)')" 4 ||
        return 1
    expect_eq "state changes of eu (the handover moves no traffic)" \
        "$(status "$ADMH" 'R("web","eu")["state_changes"]')" $((HCHANGES + 2))
}
t "one window hands a region to another at the same instant: the end, then the start, each logged and sent" t_handover_clock

# expect_lines ERE WANT: the lines of hlog matching ERE, without their
# time and level, are WANT
expect_lines() {
    expect_eq "log lines /$1/" "$(hlog | grep -E -- "$1" | sed -e 's/^.*\[info\]: //')" "$2"
}

t_wording() {
    wait_until 30 hlog_has 'maintenance long ended' || why "window long did not end" || return 1
    wait_until 10 overrides_at_least sa 2 || why "events of sa: $(overrides sa)" || return 1
    local h2 h3 h4
    h2=$(rfc3339 "$H2") h3=$(rfc3339 "$H3") h4=$(rfc3339 "$H4")
    expect_eq "a handover: web/eu" "$(overrides eu from,to,reason)" \
        "[('auto', 'drain', 'maintenance a started: first half'), ('drain', 'drain', 'maintenance a ended: first half; the region stays drain under maintenance b (second half, until $h3)'), ('drain', 'drain', 'maintenance b started: second half'), ('drain', 'auto', 'maintenance b ended: second half; the region is now auto')]" ||
        return 1
    expect_eq "an inner window in an outer one: web/us" "$(overrides us from,to,reason)" \
        "[('auto', 'drain', 'maintenance outer started: rack move'), ('drain', 'down', 'maintenance inner started: disk swap; it takes precedence over maintenance outer (rack move, until $h4)'), ('down', 'drain', 'maintenance inner ended: disk swap; the region is now drain under maintenance outer (rack move, until $h4)'), ('drain', 'auto', 'maintenance outer ended: rack move; the region is now auto')]" ||
        return 1
    expect_eq "the region's own override inside a window: web/ap" "$(overrides ap from,to,reason)" \
        "[('drain', 'down', 'override drain ended: own; the region is now down under maintenance ap-win (power work, until $h3)'), ('down', 'auto', 'maintenance ap-win ended: power work; the region is now auto')]" ||
        return 1
    expect_eq "a window that never holds its region: web/sa" "$(overrides sa from,to,reason)" \
        "[('auto', 'drain', 'maintenance long started: long one'), ('drain', 'auto', 'maintenance long ended: long one; the region is now auto')]" ||
        return 1
    expect_lines 'maintenance (a|b) ' "maintenance a started: drain web/eu until $h2 (first half)
maintenance a ended: first half; web/eu stays drain under maintenance b (second half, until $h3)
maintenance b started: drain web/eu until $h3 (second half)
maintenance b ended: second half; web/eu is now auto" || return 1
    expect_lines 'maintenance (inner|outer) ' "maintenance outer started: drain web/us until $h4 (rack move)
maintenance inner started: down web/us until $h3 (disk swap)
maintenance inner ended: disk swap; web/us is now drain under maintenance outer (rack move, until $h4)
maintenance outer ended: rack move; web/us is now auto" || return 1
    expect_lines 'maintenance ap-win |region ap: ' "maintenance ap-win started until $h3 (power work); web/ap stays drain by its own override (own, until $h2)
pool web region ap: override drain ended at $h2 (own); the region is now down under maintenance ap-win (power work, until $h3)
maintenance ap-win ended: power work; web/ap is now auto" || return 1
    expect_lines 'maintenance (long|short) ' "maintenance long started: drain web/sa until $h4 (long one)
maintenance short started until $h3 (short one); web/sa stays drain under maintenance long (long one, until $h4)
maintenance short ended: short one; web/sa stays drain under maintenance long (long one, until $h4)
maintenance long ended: long one; web/sa is now auto" || return 1
    expect_eq "no region said to be back to its own state" "$(hlog_count 'own state')" 0
}
t "each start and end says what is true then: an inner window's end leaves the outer one's state, an override's end the window's" t_wording

t_handover_reload() {
    local conf n
    n=$(override_count eu)
    conf=$(hand_conf)
    printf '%s\n  - {name: r1, from: "2001-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", regions: [web/eu], reason: "one"}\n' \
        "$conf" >"$HCONF"
    reload_daemon "$HPID" "$HLOG" && [ "$RELOAD_OK" = 1 ] || why "reload with r1 failed" || return 1
    wait_until 10 overrides_at_least eu $((n + 1)) || why "no event for r1: $(overrides eu)" || return 1
    printf '%s\n  - {name: r2, from: "2001-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", regions: [web/eu], reason: "two"}\n' \
        "$conf" >"$HCONF"
    reload_daemon "$HPID" "$HLOG" && [ "$RELOAD_OK" = 1 ] || why "reload with r2 failed" || return 1
    wait_until 10 overrides_at_least eu $((n + 3)) || why "events: $(overrides eu)" || return 1
    expect_eq "events of the reloads" "$("$PYTHON" -c 'import ast, sys; print(ast.literal_eval(sys.argv[1])[int(sys.argv[2]):])' "$(overrides eu)" "$n")" \
        "[('auto', 'drain', 'maintenance r1 started (config reloaded): one'), ('drain', 'drain', 'maintenance r1 ended (config reloaded): one'), ('drain', 'drain', 'maintenance r2 started (config reloaded): two')]" ||
        return 1
    local ended started
    ended=$(line_of 'maintenance r1 ended \(config reloaded\)') started=$(line_of 'maintenance r2 in force')
    ordered "$ended" "$started" ||
        why "log: r1's end at line '$ended', r2's at line '$started': $(hlog | grep maintenance)"
}
t "a reload that hands a region from one window to another: the end, then the start, each logged and sent" t_handover_reload

# ---- -t: the errors, each at its FILE:LINE:COL, all in one pass ----

t_config_errors() {
    local conf
    conf=$(write_config bad.yaml <<EOF
listen: ["127.0.0.1:$LO"]
pools:
  - name: api
    regions:
      - {name: eu, url: "http://eu.test", state: drain, until: "2026-02-30T00:00:00Z"}
      - {name: us, url: "http://us.test", until: "2026-11-28T04:00:00Z"}
maintenance:
  - {name: a, from: "2026-11-28T04:00:00Z", until: "2026-11-28T02:00:00Z", regions: [api/eu]}
  - {name: a, from: "2026-11-28T02:00:00Z", until: "2026-11-28T04:00:00Z", regions: [web/eu, api/ap]}
EOF
)
    RUN_OUT=$TEST_TMP/t.out RUN_ERR=$TEST_TMP/t.err run_detourd -t -c "$conf"
    expect_eq "exit status" "$LAST_RC" 1 || return 1
    local want
    want="$conf:5:64: until: '2026-02-30T00:00:00Z' is not an RFC 3339 time (like 2026-11-28T04:00:00Z)
$conf:6:50: until: needs a state other than auto (until ends that override)
$conf:8:52: until: must be after from (2026-11-28T04:00:00Z)
$conf:9:12: maintenance name 'a' is used twice (first at line 8)
$conf:9:86: regions: no pool 'web'
$conf:9:94: regions: pool api has no region 'ap'"
    expect_eq "errors" "$(sort -t: -k2,2n -k3,3n "$TEST_TMP/t.err")" "$want"
}
t "-t reports every schedule error at its FILE:LINE:COL" t_config_errors

t_config_past() {
    local conf
    conf=$(write_config past.yaml <<EOF
listen: ["127.0.0.1:$LO"]
pools:
  - name: api
    regions:
      - {name: eu, url: "http://eu.test", state: down, until: "2020-01-01T00:00:00+01:00"}
EOF
)
    RUN_OUT=$TEST_TMP/p.out RUN_ERR=$TEST_TMP/p.err run_detourd -t -c "$conf"
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    expect_match "warning" "$(cat "$TEST_TMP/p.err")" \
        "pool api region eu: state down ended at 2019-12-31T23:00:00Z, before this config was loaded: the region is auto"
}
t "-t warns about an until already past (the region is auto)" t_config_past

t_no_sanitizer_reports
done_testing
