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

t_no_sanitizer_reports
done_testing
