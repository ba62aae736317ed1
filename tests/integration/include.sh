#!/usr/bin/env bash
# Integration tests of `include:` against the real daemon: a maintenance
# window in a drop-in file drains a region of the main file; a drop-in
# added (and one removed) is picked up by a reload; an error in a drop-in
# is reported at its own FILE:LINE:COL by -t, and a reload with it is
# rejected while the previous config goes on serving. TAP on stdout.
# Network: 127.0.0.1 only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

: "${DETOURD:=${TOP_BUILDDIR:-.}/detourd}"

alloc_ports 2 || {
    echo "Bail out! no free ports"
    exit 1
}
L=${PORTS[0]} ADM=${PORTS[1]}

# status PYEXPR: evaluates PYEXPR over the /status document `s` (helper:
# R(pool, region)) and prints the result
status() {
    curl -sS --max-time "$(scale 5)" "http://127.0.0.1:$ADM/status" | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
def R(p, r):
    return [x for x in [q for q in s["pools"] if q["name"] == p][0]["regions"] if x["name"] == r][0]
print(eval(sys.argv[1]))' "$1"
}

# location [HOST]: where a request is redirected now
location() {
    curl -s -o /dev/null -w '%{redirect_url}' --max-time "$(scale 5)" \
        -H "Host: ${1:-www.test}" "http://127.0.0.1:$L/x"
}

# The main file includes a directory beside it; its pattern is relative.
DIR=$TEST_TMP/etc
mkdir -p "$DIR/conf.d"
CONF=$DIR/detourd.yaml
cat >"$CONF" <<EOF
listen: ["127.0.0.1:$L"]
admin: {listen: "127.0.0.1:$ADM"}
checks: {type: none}
include: ["conf.d/*.yaml"]
pools:
  - name: web
    regions:
      - {name: eu, url: "http://eu.test", priority: 1}
      - {name: us, url: "http://us.test", priority: 2}
EOF
cat >"$DIR/conf.d/10-api.yaml" <<EOF
pools:
  - name: api
    hosts: [api.test]
    regions:
      - {name: a, url: "http://a.test"}
EOF
cat >"$DIR/conf.d/20-maint.yaml" <<EOF
maintenance:
  - name: eu-rack
    from: "2001-01-01T00:00:00Z"
    until: "2999-01-01T00:00:00Z"
    state: drain
    regions: [web/eu]
    reason: "rack move"
EOF

start_detourd inc "$CONF" "$L" || echo "Bail out! detourd did not start"
PID=$LAST_PID
LOG=$(daemon_log inc)

t_window_in_dropin() {
    expect_eq "the main file's pool, eu drained" "$(location)" "http://us.test/x" || return 1
    expect_eq "the drop-in's pool" "$(location api.test)" "http://a.test/x" || return 1
    expect_eq "/status" \
        "$(status '[R("web","eu")[k] for k in ("override","override_source","override_reason")]')" \
        "['drain', 'maintenance:eu-rack', 'rack move']"
}
t "a window in a drop-in file drains a region of the main file" t_window_in_dropin

t_reload_picks_up() {
    cat >"$DIR/conf.d/30-new.yaml" <<EOF
pools:
  - name: new
    hosts: [new.test]
    regions:
      - {name: n, url: "http://n.test"}
EOF
    rm "$DIR/conf.d/20-maint.yaml"
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "reload" "$RELOAD_OK" 1 || return 1
    expect_eq "the new drop-in's pool" "$(location new.test)" "http://n.test/x" || return 1
    expect_eq "the window's file removed: eu again" "$(location)" "http://eu.test/x" || return 1
    expect_eq "the other drop-in's pool" "$(location api.test)" "http://a.test/x"
}
t "a drop-in added (and one removed) is picked up by SIGHUP" t_reload_picks_up

t_error_in_dropin() {
    local bad=$DIR/conf.d/40-bad.yaml new=$DIR/conf.d/30-new.yaml
    cat >"$bad" <<EOF
pools:
  - name: bad
    hosts: [new.test]
    regions:
      - {name: x, url: "http://x.test", weight: many}
log: {level: debug}
EOF
    RUN_OUT=$TEST_TMP/t.out RUN_ERR=$TEST_TMP/t.err run_detourd -t -c "$CONF"
    expect_eq "-t exit status" "$LAST_RC" 1 || return 1
    local want
    want="$bad:3:13: hosts: 'new.test' is already used by pool new (line 3 of $new)
$bad:5:49: weight: 'many' is not a whole number
$bad:6:1: 'log' is not allowed in an included file (it holds only 'pools' and 'maintenance')"
    expect_eq "-t errors" "$(sort -t: -k2,2n -k3,3n "$TEST_TMP/t.err")" "$want" || return 1
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "reload" "$RELOAD_OK" 0 || return 1
    local line
    while IFS= read -r line; do
        [ "$(grep -cF -- "$line" "$LOG")" = 1 ] || why "not logged once: $line" || return 1
    done <<<"$want"
    expect_eq "the previous config serves" "$(location new.test)" "http://n.test/x" || return 1
    rm "$bad"
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "reload once fixed" "$RELOAD_OK" 1
}
t "an error in a drop-in: -t reports it at its own FILE:LINE:COL, a reload with it is rejected" t_error_in_dropin

# check_t NAME CONF: detourd -t -c CONF, bounded: a -t that waits on a FIFO
# is killed (status 124) instead of hanging the suite. Output in
# $TEST_TMP/NAME.out and .err; LAST_RC its status.
check_t() {
    # shellcheck disable=SC2086 # DETOURD_WRAPPER is a command line on purpose
    timeout "$(scale 10)" $DETOURD_WRAPPER "$DETOURD" -t -c "$2" </dev/null >"$TEST_TMP/$1.out" 2>"$TEST_TMP/$1.err"
    LAST_RC=$?
}

FIFO=$DIR/conf.d/60-fifo.yaml MAIN_FIFO=$TEST_TMP/main.fifo
# whatever the outcome, nothing of it is left for the next tests
t_fifo() {
    _t_fifo
    local rc=$?
    rm -f "$FIFO" "$MAIN_FIFO"
    rmdir "$DIR/conf.d/70-dir.yaml" 2>/dev/null
    return $rc
}
_t_fifo() {
    local fifo=$FIFO main=$MAIN_FIFO
    mkfifo "$fifo" "$main" || why "mkfifo failed" || return 1
    # matched by the include pattern: an error at the pattern, naming it
    check_t fifo "$CONF"
    expect_eq "-t exit status (124: it waited on the FIFO)" "$LAST_RC" 1 || return 1
    expect_eq "-t errors" "$(cat "$TEST_TMP/fifo.err")" \
        "$CONF:4:11: include: $fifo is a FIFO, not a regular file" || return 1
    # a reload with it is rejected, and the daemon goes on serving
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "reload" "$RELOAD_OK" 0 || return 1
    grep -qF -- "$fifo is a FIFO, not a regular file" "$LOG" || why "not logged" || return 1
    expect_eq "the previous config serves" "$(location new.test)" "http://n.test/x" || return 1
    rm -f "$fifo"
    # the main file itself
    check_t main "$main"
    expect_eq "-t of a FIFO: exit status" "$LAST_RC" 1 || return 1
    expect_eq "-t of a FIFO: errors" "$(cat "$TEST_TMP/main.err")" \
        "$main: is a FIFO, not a regular file" || return 1
    # a directory matched by the pattern, and one given as the config
    mkdir "$DIR/conf.d/70-dir.yaml"
    check_t dir "$CONF"
    rmdir "$DIR/conf.d/70-dir.yaml"
    expect_eq "a directory matched: -t errors" "$(cat "$TEST_TMP/dir.err")" \
        "$CONF:4:11: include: $DIR/conf.d/70-dir.yaml is a directory, not a regular file" || return 1
    check_t dir "$DIR"
    expect_eq "-t of a directory" "$LAST_RC:$(cat "$TEST_TMP/dir.err")" \
        "1:$DIR: is a directory, not a regular file" || return 1
    reload_daemon "$PID" "$LOG" || why "no reload outcome" || return 1
    expect_eq "reload once removed" "$RELOAD_OK" 1
}
t "a FIFO or a directory as an included file or as the config: -t names it at once, a reload is rejected" t_fifo

t_replace() {
    # a candidate for a drop-in that does not exist yet, then for one that does
    local live=$DIR/conf.d/50-etcd.yaml cand=$DIR/conf.d/.50-etcd.yaml.new
    cat >"$cand" <<EOF
maintenance:
  - {name: w, from: "2000-01-01T00:00:00Z", until: "2100-01-01T00:00:00Z", regions: ["web/nope"]}
EOF
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF" --replace "$live=$cand"
    expect_eq "-t of a bad candidate" "$LAST_RC" 1 || return 1
    grep -qF "$cand:2:" "$TEST_TMP/r.err" || why "error not at the candidate's line: $(cat "$TEST_TMP/r.err")" || return 1
    # the same through a relative -c and a symlinked directory
    local rc
    ln -sfn "$DIR" "$TEST_TMP/etc-link"
    (cd "$DIR" && "$DETOURD" -t -c ./detourd.yaml --replace "$live=$cand" >/dev/null 2>&1)
    rc=$?
    expect_eq "-t -c ./detourd.yaml of a bad candidate" "$rc" 1 || return 1
    "$DETOURD" -t -c "$TEST_TMP/etc-link/detourd.yaml" --replace "$live=$cand" >/dev/null 2>&1
    rc=$?
    expect_eq "-t through a symlinked directory, of a bad candidate" "$rc" 1 || return 1
    # a FILE no include pattern matches is an error, not a silent check of the live config
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF" --replace "$DIR/elsewhere.yaml=$cand"
    expect_eq "-t --replace of an unmatched file" "$LAST_RC" 1 || return 1
    grep -qF -- "--replace: no include pattern of the configuration matches $DIR/elsewhere.yaml" "$TEST_TMP/r.err" ||
        why "no message for an unmatched file: $(cat "$TEST_TMP/r.err")" || return 1
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF"
    expect_eq "-t without the candidate" "$LAST_RC" 0 || return 1
    sed -i 's|web/nope|web/us|' "$cand"
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF" --replace "$live=$cand" \
        --at 2026-01-01T00:00:00Z
    expect_eq "-t of a good candidate" "$LAST_RC" 0 || return 1
    grep -q "maintenance w: active" "$TEST_TMP/r.out" || why "the candidate was not read: $(cat "$TEST_TMP/r.out")" || return 1
    # the live file exists (bad): the candidate is read in its place, not both
    sed 's|web/us|web/nope|' "$cand" >"$live"
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF" --replace "$DIR/conf.d/../conf.d/50-etcd.yaml=$cand"
    expect_eq "-t with the live file replaced" "$LAST_RC" 0 || return 1
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd -t -c "$CONF"
    expect_eq "-t of the live file" "$LAST_RC" 1 || return 1
    rm -f "$live" "$cand"
    RUN_OUT=$TEST_TMP/r.out RUN_ERR=$TEST_TMP/r.err run_detourd --replace "$live=$cand"
    expect_eq "--replace without -t" "$LAST_RC" 2
}
t "-t --replace FILE=NEW checks a drop-in's candidate in its place (existing or not)" t_replace

t_no_sanitizer_reports
done_testing
