#!/usr/bin/env bash
# Integration tests of the exec event sink against the real daemon. The
# command is a shell script written here: it records its standard input,
# its DETOURD_* environment, its open descriptors and the order it ran in
# into the temp dir, and holds a lock directory while it runs (a second
# instance finding it held records an overlap). Events come from reloads
# (SIGHUP) and an override added by a reload. Checked: the JSON on stdin
# and the variables (absent fields unset even if detourd's environment has
# them), no descriptor of detourd leaks into the command, several events
# run one at a time in order, a failing command is logged with its status,
# a hanging command that never reads its stdin is killed with its process
# group after the timeout while redirects are still answered and the next
# event still runs, a removed command runs no more, a command running at
# shutdown is killed, and -t rejects a relative or non-executable command.
# TAP on stdout. Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"

alloc_ports 2 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]}

REC=$TEST_TMP/rec # what the command records
mkdir -p "$REC"
HOOK=$TEST_TMP/hook.sh
cat >"$HOOK" <<'EOF'
#!/bin/sh
# $1: mode (record, slow, fail, hang), $2: where to record
d=$2 id=$DETOURD_EVENT_ID
mkdir "$d/lock" 2>/dev/null || echo "$id" >>"$d/overlap"
env | grep -E '^(DETOURD_(EVENT_ID|EVENT_KIND|POOL|REGION|FROM|TO|REASON|TIME)|EXEC_TEST_[A-Z]*)=' | sort >"$d/env.$id"
ls /proc/self/fd >"$d/fd.$id"
if [ "$1" = hang ]; then # never reads stdin; leaves a process behind
    rmdir "$d/lock"
    sleep 600 &
    echo $! >"$d/grandchild.$id"
    echo $$ >"$d/hanging.$id"
    wait
    exit 0
fi
cat >"$d/in.$id"
[ "$1" = slow ] && sleep 0.3
echo "$id" >>"$d/order"
rmdir "$d/lock"
[ "$1" = fail ] && exit 3
exit 0
EOF
chmod +x "$HOOK"

CONF=$TEST_TMP/detourd.yaml
# conf MODE [TIMEOUT] [REGION EXTRA]: the config, running the hook in MODE
# ("none": no events block)
conf() {
    local events=""
    [ "$1" != none ] && events="events:
  exec: {command: [\"$HOOK\", \"$1\", \"$REC\"], timeout: ${2:-5s}}"
    cat >"$CONF" <<EOF
listen: ["127.0.0.1:$L"]
admin: {listen: "127.0.0.1:$ADM"}
checks: {type: none}
log: {level: debug}
$events
pools:
  - name: web
    regions:
      - {name: eu, url: "http://eu.test", priority: 1${3:+, $3}}
      - {name: us, url: "http://us.test", priority: 2}
EOF
}

# last_id KIND: the id of the last event of KIND in the daemon's log
last_id() {
    grep -F ' event {' "$LOG" | grep -F "\"kind\":\"$1\"" | tail -n 1 |
        sed -e 's/.*"id":"\([^"]*\)".*/\1/'
}
# logged_ids: the ids of every event logged so far, in order
logged_ids() { grep -F ' event {' "$LOG" | sed -e 's/.*"id":"\([^"]*\)".*/\1/'; }
order_has() { grep -qxF -- "$1" "$REC/order" 2>/dev/null; }
order_lines() { if [ -e "$REC/order" ]; then wc -l <"$REC/order"; else echo 0; fi; }

# gone PID...: none of them runs any more (a zombie counts as ended)
gone() {
    local p
    for p in "$@"; do ! pid_alive "$p" || return 1; done
}

# zombies_of: the daemon's children that ended and were not reaped
zombies_of() {
    local f line rest
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086 # split: state ppid ...
        set -- $rest
        [ "$1" = Z ] && [ "$2" = "$PID" ] && printf '%s ' "${f//[^0-9]/}"
    done
}

# events_total RESULT: detourd_events_total{sink="exec",result=RESULT} now
# ("absent" when the series is not there)
events_total() {
    local v
    v=$(curl -sS --max-time "$(scale 5)" "http://127.0.0.1:$ADM/metrics" |
        sed -n "s/^detourd_events_total{sink=\"exec\",result=\"$1\"} //p")
    echo "${v:-absent}"
}

# reload_id: SIGHUP; prints the id of the reload event it produced
reload_id() {
    reload_daemon "$PID" "$LOG" >/dev/null || return 1
    last_id reload
}

# check_event ID: what the command got on stdin is the JSON the daemon
# logged for ID, and each DETOURD_* variable matches its field (absent
# fields: unset)
check_event() {
    local logged
    logged=$(grep -F " event {\"id\":\"$1\"" "$LOG" | sed -e 's/^.* event //')
    [ -n "$logged" ] || why "event $1 not in the log" || return 1
    expect_eq "stdin of $1" "$(cat "$REC/in.$1")" "$logged" || return 1
    local bad
    bad=$("$PYTHON" -c '
import json, sys
ev = json.loads(open(sys.argv[1]).read())
env = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]))
names = {"id": "EVENT_ID", "kind": "EVENT_KIND", "pool": "POOL", "region": "REGION",
         "from": "FROM", "to": "TO", "reason": "REASON", "time": "TIME"}
bad = []
for f, n in names.items():
    if env.get("DETOURD_" + n) != ev.get(f):
        bad.append("DETOURD_%s=%r for %s=%r" % (n, env.get("DETOURD_" + n), f, ev.get(f)))
if env.get("EXEC_TEST_MARK") != "kept":
    bad.append("EXEC_TEST_MARK (detourd'"'"'s environment) not passed on")
extra = set(env) - {"DETOURD_" + n for n in names.values()} - {"EXEC_TEST_MARK"}
if extra:
    bad.append("unexpected variables: %s" % sorted(extra))
print("; ".join(bad))' "$REC/in.$1" "$REC/env.$1")
    [ -z "$bad" ] || why "$1: $bad"
}

# The daemon runs with descriptor 9 open (not close-on-exec, as a passed
# socket would be) and a stale DETOURD_POOL in its environment.
conf record
# shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
EXEC_TEST_MARK=kept DETOURD_POOL=stale start_detourd exec "$CONF" "$L" 9>"$TEST_TMP/inherited" ||
    echo "Bail out! detourd did not start"
PID=$LAST_PID
LOG=$(daemon_log exec)

t_reload_event() {
    local id
    id=$(reload_id) || why "no reload outcome" || return 1
    wait_until 10 order_has "$id" || why "the command did not run for $id" || return 1
    check_event "$id" || return 1
    expect_match "the event" "$(cat "$REC/in.$id")" '"kind":"reload","to":"ok","reason":"reloaded ' ||
        return 1
    # ls's own descriptors: 0 (the pipe), 1, 2 and the directory it lists
    expect_eq "descriptors open in the command" "$(sort -n "$REC/fd.$id" | tr '\n' ' ')" "0 1 2 3 "
}
t "a reload event: its JSON on stdin, DETOURD_* set from its fields (absent ones unset), no descriptor leaks" t_reload_event

t_override_event() {
    conf record 5s 'state: drain, reason: "rack move"'
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    local oid rid
    oid=$(last_id override) rid=$(last_id reload)
    [ -n "$oid" ] || why "no override event logged" || return 1
    wait_until 10 order_has "$rid" || why "the command did not run for $rid" || return 1
    order_has "$oid" || why "the command did not run for the override $oid" || return 1
    check_event "$oid" || return 1
    grep -qx 'DETOURD_POOL=web' "$REC/env.$oid" || why "DETOURD_POOL: $(cat "$REC/env.$oid")" ||
        return 1
    grep -qx 'DETOURD_REGION=eu' "$REC/env.$oid" || why "DETOURD_REGION: $(cat "$REC/env.$oid")" ||
        return 1
    grep -qx 'DETOURD_TO=drain' "$REC/env.$oid" || why "DETOURD_TO: $(cat "$REC/env.$oid")" ||
        return 1
    grep -q '^DETOURD_REASON=.*rack move' "$REC/env.$oid" || why "DETOURD_REASON: $(cat "$REC/env.$oid")"
}
t "an override event: pool, region, from, to and reason in the environment" t_override_event

# kinds_since N: the kinds of the events logged after the first N, in order
kinds_since() {
    grep -F ' event {' "$LOG" | tail -n +$(($1 + 1)) | sed -e 's/.*"kind":"\([a-z_]*\)".*/\1/' | tr '\n' ' '
}
t_reload_order() {
    local n
    conf record # eu back to auto (the previous test drained it)
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    n=$(grep -cF ' event {' "$LOG")
    conf record 5s 'state: drain, reason: "rack move"'
    sed -i -e 's|{name: us, url: "http://us.test", priority: 2}|{name: us, url: "http://us.test", priority: 2, state: down, reason: "r2"}|' "$CONF"
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "a reload that takes the last regions: its events in cause order" "$(kinds_since "$n")" \
        "override override all_down reload " || return 1
    n=$(grep -cF ' event {' "$LOG")
    conf record
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "and the one that gives them back" "$(kinds_since "$n")" "override override all_down reload " ||
        return 1
    # the command has run for all of them before the next test counts
    wait_until 20 order_has "$(last_id reload)" || why "the command did not catch up"
}
t "a reload's events come in cause order: the overrides, then the all-down change, then the reload" t_reload_order


t_in_order_one_at_a_time() {
    conf slow
    local ids=() id ran logged i
    ran=$(order_lines) logged=$(logged_ids | wc -l)
    for i in 1 2 3 4; do
        id=$(reload_id) || why "no reload outcome" || return 1
        ids+=("$id")
    done
    wait_until 20 order_has "${ids[3]}" || why "the 4th event did not run" || return 1
    # every event since (the override's end and the 4 reloads), as logged
    expect_eq "the order the commands ran in" "$(tail -n +"$((ran + 1))" "$REC/order" | tr '\n' ' ')" \
        "$(logged_ids | tail -n +"$((logged + 1))" | tr '\n' ' ')" || return 1
    [ ! -e "$REC/overlap" ] || why "two commands ran at once: $(cat "$REC/overlap")" || return 1
    wait_log "$LOG" "events exec: event ${ids[3]} \\(reload\\) delivered" 10 ||
        why "the 4th event's end not logged" || return 1
    expect_eq "zombie children of detourd" "$(zombies_of)" ""
}
t "4 reloads while the command is slow: 5 events, run one at a time, in order, all reaped" \
    t_in_order_one_at_a_time

t_failing_command() {
    conf fail
    local id failed delivered
    failed=$(events_total failed) delivered=$(events_total delivered)
    id=$(reload_id) || why "no reload outcome" || return 1
    wait_log "$LOG" "\\[warn\\]: events exec: event $id \\(reload\\) failed: $HOOK exited with status 3" 10 ||
        why "no warning with status 3 for $id" || return 1
    expect_eq "failed events" "$(events_total failed)" "$((failed + 1))" || return 1
    expect_eq "delivered events" "$(events_total delivered)" "$delivered" || return 1
    conf record
    id=$(reload_id) || why "no reload outcome" || return 1
    wait_until 10 order_has "$id" || why "the next event $id did not run" || return 1
    wait_log "$LOG" "events exec: event $id \\(reload\\) delivered: .* exited 0" 10 ||
        why "exit 0 not logged at debug for $id"
}
t "a command that exits 3 is logged (warn) with its status; the next event runs" t_failing_command

t_hang_killed() {
    conf hang 2s
    local hid id t0 code ms gc failed
    failed=$(events_total failed)
    hid=$(reload_id) || why "no reload outcome" || return 1
    wait_file "$REC/hanging.$hid" 10 || why "the hanging command did not start" || return 1
    t0=$(now_ms)
    gc=$(cat "$REC/grandchild.$hid")
    pid_alive "$gc" || why "the command's background process is not running" || return 1
    conf record
    id=$(reload_id) || why "no reload outcome" || return 1 # queued behind the hanging one
    # redirects are answered while the command hangs without reading
    for _ in 1 2 3; do
        code=$(http_code "$L" /while-hanging)
        expect_eq "a redirect while the command hangs" "$code" 307 || return 1
    done
    wait_log "$LOG" "\\[warn\\]: events exec: event $hid \\(reload\\) failed: .*did not finish within its timeout \\(2000 ms\\); its process group was killed" 10 ||
        why "no timeout warning for $hid" || return 1
    ms=$(($(now_ms) - t0))
    wait_until 5 order_has "$id" || why "the next event $id did not run after the kill" || return 1
    expect_eq "failed events (the timeout counted once)" "$(events_total failed)" "$((failed + 1))" ||
        return 1
    wait_until 5 gone "$gc" || why "the process the command started survived" ||
        return 1
    wait_until 5 gone "$(cat "$REC/hanging.$hid")" || why "the command survived" || return 1
    [ "$ms" -le "$(awk -v s="$(scale 5)" 'BEGIN { printf "%d\n", s * 1000 }')" ] ||
        why "killed only after $ms ms (timeout 2s)"
    diag "the hanging command was killed ${ms} ms after it was seen running (timeout 2 s)"
}
t "a command that hangs without reading stdin: redirects answered, killed with its group after 2s, the next event runs" \
    t_hang_killed

t_removed() {
    conf hang 5s # long enough to be still running at the removal on a busy host
    local hid qid id id2 failed dropped
    failed=$(events_total failed) dropped=$(events_total dropped)
    hid=$(reload_id) || why "no reload outcome" || return 1
    wait_file "$REC/hanging.$hid" 10 || why "the hanging command did not start" || return 1
    conf record
    qid=$(reload_id) || why "no reload outcome" || return 1 # queued behind it
    conf none
    id=$(reload_id) || why "no reload outcome" || return 1 # detached: not queued
    wait_log "$LOG" 'events exec: no command configured any more; the running one finishes' 10 ||
        why "removal not logged" || return 1
    expect_eq "the exec series without the sink" "$(events_total delivered)" absent || return 1
    # the running one still ends by its timeout
    wait_log "$LOG" "events exec: event $hid \\(reload\\) failed: .*did not finish within its timeout" 20 ||
        why "the running command did not end by its timeout" || return 1
    conf record
    id2=$(reload_id) || why "no reload outcome" || return 1
    wait_until 10 order_has "$id2" || why "the command did not run again once configured" ||
        return 1
    ! order_has "$id" || why "the command ran for $id, after it was removed" || return 1
    ! order_has "$qid" || why "the command ran for $qid, queued when it was removed" || return 1
    expect_eq "dropped events (the queued one)" "$(events_total dropped)" "$((dropped + 1))" ||
        return 1
    expect_eq "failed events (the running one)" "$(events_total failed)" "$((failed + 1))"
}
t "a reload that removes the command: the running one finishes, the queued one is dropped (counted), no more runs; configured again, it runs" \
    t_removed

t_totals() {
    expect_eq "delivered events" "$(events_total delivered)" \
        "$(log_count "$LOG" 'events exec: event .* delivered: ')" || return 1
    expect_eq "failed events" "$(events_total failed)" \
        "$(log_count "$LOG" '\[warn\]: events exec: event .* failed: ')"
}
t "detourd_events_total{sink=\"exec\"}: delivered and failed match the log" t_totals

t_shutdown_kills() {
    conf hang 60s
    local hid hp gc
    hid=$(reload_id) || why "no reload outcome" || return 1
    wait_file "$REC/hanging.$hid" 10 || why "the hanging command did not start" || return 1
    hp=$(cat "$REC/hanging.$hid") gc=$(cat "$REC/grandchild.$hid")
    stop_pid "$PID" 10 || why "detourd did not stop in time" || return 1
    expect_eq "exit status" "$LAST_RC" 0 || return 1
    grep -qE "events exec: event $hid \\(reload\\) abandoned at shutdown" "$LOG" ||
        why "the kill at shutdown not logged" || return 1
    wait_until 5 gone "$hp" "$gc" ||
        why "the command ($hp) or what it started ($gc) survived the daemon"
}
t "at shutdown a running command and its group are killed; detourd exits 0 at once" t_shutdown_kills

t_check_rejects() {
    local c=$TEST_TMP/bad.yaml
    printf '#!/bin/sh\n' >"$TEST_TMP/noexec.sh"
    chmod 644 "$TEST_TMP/noexec.sh"
    local cmd want
    for cmd in "hook.sh" "$TEST_TMP/noexec.sh"; do
        cat >"$c" <<EOF
listen: ["127.0.0.1:$L"]
events:
  exec: {command: ["$cmd"]}
pools:
  - name: web
    regions: [{name: eu, url: "http://eu.test"}]
EOF
        RUN_OUT=$TEST_TMP/t.out RUN_ERR=$TEST_TMP/t.err run_detourd -t -c "$c"
        expect_eq "-t exit status for $cmd" "$LAST_RC" 1 || return 1
        if [ "$cmd" = hook.sh ]; then
            want="$c:3:20: events.exec.command: 'hook.sh' must be an absolute path (no PATH search)"
        else
            want="$c:3:20: events.exec.command: cannot run '$cmd': Permission denied"
        fi
        expect_eq "-t error" "$(cat "$TEST_TMP/t.err")" "$want" || return 1
    done
}
t "detourd -t rejects a relative command and a non-executable one" t_check_rejects

# a command or its child left behind by a failed test is stopped (by its
# PID, if it still is the hook or its sleep)
for f in "$REC"/hanging.* "$REC"/grandchild.*; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    pid_alive "$p" && grep -qE 'hook\.sh|sleep' "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p"
done

t "no sanitizer report in the daemon's log" t_no_sanitizer_reports
done_testing
