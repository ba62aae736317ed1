#include "autoconf.h"

#include <stdio.h>
#include <string.h>

#include "control/maint_text.h"
#include "control/schedule.h"
#include "unit.h"

#define MIN  (60 * INT64_C(1000))
#define HOUR (60 * MIN)

/* 2026-11-28T00:00:00Z: the tests' instants are offsets from it. */
#define T0 INT64_C(1795824000000)

static int64_t at(const char *s)
{
    int64_t ms;
    ck_assert_msg(sched_parse_time(s, &ms), "rejected %s", s);
    return ms;
}

/* ---- RFC 3339 ---- */

START_TEST(test_parse_valid)
{
    ck_assert_int_eq(at("1970-01-01T00:00:00Z"), 0);
    ck_assert_int_eq(at("2026-11-28T00:00:00Z"), T0);
    ck_assert_int_eq(at("2026-11-28T04:00:00Z"), INT64_C(1795838400000));
    ck_assert_int_eq(at("2024-02-29T12:34:56Z"), INT64_C(1709210096000));
    ck_assert_int_eq(at("2000-02-29T00:00:00Z"), INT64_C(951782400000));
    ck_assert_int_eq(at("1969-12-31T23:59:59Z"), -1000);
    ck_assert_int_eq(at("0001-01-01T00:00:00Z"), INT64_C(-62135596800000));
    ck_assert_int_eq(at("0000-01-01T00:00:00Z"), INT64_C(-62167219200000));
    ck_assert_int_eq(at("9999-12-31T23:59:59Z"), INT64_C(253402300799000));
    /* offsets: local time minus the offset is UTC */
    ck_assert_int_eq(at("2026-11-28T06:00:00+02:00"), T0 + 4 * HOUR);
    ck_assert_int_eq(at("2026-11-27T22:30:00-05:30"), T0 + 4 * HOUR);
    ck_assert_int_eq(at("2026-11-28T04:00:00+00:00"), T0 + 4 * HOUR);
    ck_assert_int_eq(at("2026-11-28T04:00:00-00:00"), T0 + 4 * HOUR);
    ck_assert_int_eq(at("2026-11-28T23:59:00+23:59"), T0);
    /* across a day, month and year boundary */
    ck_assert_int_eq(at("2027-01-01T01:00:00+02:00"), at("2026-12-31T23:00:00Z"));
    /* fractions, cut to milliseconds */
    ck_assert_int_eq(at("2026-11-28T00:00:00.5Z"), T0 + 500);
    ck_assert_int_eq(at("2026-11-28T00:00:00.25Z"), T0 + 250);
    ck_assert_int_eq(at("2026-11-28T00:00:00.123Z"), T0 + 123);
    ck_assert_int_eq(at("2026-11-28T00:00:00.123999999Z"), T0 + 123);
    ck_assert_int_eq(at("2026-11-28T00:00:00.000Z"), T0);
    ck_assert_int_eq(at("1969-12-31T23:59:59.750Z"), -250);
    /* RFC 3339 5.6: 'T' and 'Z' may be lower case */
    ck_assert_int_eq(at("2026-11-28t00:00:00z"), T0);
}
END_TEST

START_TEST(test_parse_rejects)
{
    static const char *const bad[] = {
        "",
        "2026-11-28",                /* a date alone */
        "2026-11-28T04:00:00",       /* no offset */
        "2026-11-28T04:00Z",         /* no seconds */
        "2026-11-28 04:00:00Z",      /* space for 'T' */
        "2026-11-28T04:00:00 Z",     /* space before the offset */
        "2026-11-28T04:00:00Z ",     /* trailing space */
        " 2026-11-28T04:00:00Z",     /* leading space */
        "2026-11-28T04:00:00ZZ",     /* trailing garbage */
        "2026-11-28T04:00:00+02",    /* offset without minutes */
        "2026-11-28T04:00:00+0200",  /* offset without colon */
        "2026-11-28T04:00:00+2:00",  /* one-digit offset hour */
        "2026-11-28T04:00:00+24:00", /* offset hour out of range */
        "2026-11-28T04:00:00+02:60", /* offset minute out of range */
        "2026-11-28T04:00:00UTC",    /* a zone name */
        "2026-11-28T04:00:00.Z",     /* a dot without digits */
        "2026-11-28T04:00:00,5Z",    /* comma fraction */
        "2026-11-28T4:00:00Z",       /* one-digit hour */
        "2026-11-8T04:00:00Z",       /* one-digit day */
        "26-11-28T04:00:00Z",        /* two-digit year */
        "+2026-11-28T04:00:00Z",     /* signed year */
        "12026-11-28T04:00:00Z",     /* five-digit year */
        "2026/11/28T04:00:00Z",      /* wrong separators */
        "20261128T040000Z",          /* ISO 8601 basic format */
        "2026-00-28T04:00:00Z",      /* month 0 */
        "2026-13-28T04:00:00Z",      /* month 13 */
        "2026-11-00T04:00:00Z",      /* day 0 */
        "2026-11-31T04:00:00Z",      /* November has 30 days */
        "2026-12-32T04:00:00Z",      /* December has 31 */
        "2026-04-31T04:00:00Z",      /* April has 30 */
        "2026-02-29T04:00:00Z",      /* not a leap year */
        "2100-02-29T04:00:00Z",      /* a century: not a leap year */
        "2024-02-30T04:00:00Z",      /* even in a leap year */
        "2026-11-28T24:00:00Z",      /* hour 24 */
        "2026-11-28T04:60:00Z",      /* minute 60 */
        "2026-11-28T23:59:60Z",      /* a leap second is refused */
        "2026-11-28T04:00:61Z",      /* second 61 */
        "2026-11-28T04:00:-1Z",      /* a sign inside */
        "2026-11-28T04:00:0xZ",      /* not a digit */
        "now",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = 42;
        ck_assert_msg(!sched_parse_time(bad[i], &ms), "accepted \"%s\"", bad[i]);
        ck_assert_int_eq(ms, 42); /* untouched on failure */
    }
    /* leap days that do exist */
    int64_t ms;
    ck_assert(sched_parse_time("2024-02-29T00:00:00Z", &ms));
    ck_assert(sched_parse_time("2000-02-29T00:00:00Z", &ms));
    ck_assert(sched_parse_time("2026-11-28T23:59:59Z", &ms));
}
END_TEST

static const char *fmt(int64_t ms)
{
    static char buf[SCHED_TIME_LEN];
    sched_format_time(ms, buf, sizeof(buf));
    return buf;
}

START_TEST(test_format)
{
    ck_assert_str_eq(fmt(T0 + 4 * HOUR), "2026-11-28T04:00:00Z");
    ck_assert_str_eq(fmt(0), "1970-01-01T00:00:00Z");
    ck_assert_str_eq(fmt(-1000), "1969-12-31T23:59:59Z");
    ck_assert_str_eq(fmt(-250), "1969-12-31T23:59:59.750Z");
    ck_assert_str_eq(fmt(T0 + 5), "2026-11-28T00:00:00.005Z");
    ck_assert_str_eq(fmt(INT64_C(951782400000)), "2000-02-29T00:00:00Z");
    ck_assert_str_eq(fmt(INT64_C(253402300799000)), "9999-12-31T23:59:59Z");
    ck_assert_str_eq(fmt(INT64_C(-62167219200000)), "0000-01-01T00:00:00Z");
    /* the extremes are printed, not crashed on */
    ck_assert_int_gt(strlen(fmt(INT64_MAX)), 0);
    ck_assert_int_gt(strlen(fmt(INT64_MIN)), 0);
    /* a short buffer is cut, never overrun */
    char small[8];
    memset(small, 'x', sizeof(small));
    sched_format_time(T0, small, 5);
    ck_assert_str_eq(small, "2026");
    ck_assert_int_eq(small[5], 'x');
}
END_TEST

START_TEST(test_round_trip)
{
    /* instants every 7 h 13 min 17.3 s over ~1200 years, leap days and
     * the years before 1970 included: format and parse agree */
    const int64_t step = 7 * HOUR + 13 * MIN + 17300;
    for (int64_t ms = at("1600-01-01T00:00:00Z"); ms < at("2800-01-01T00:00:00Z");
         ms += step * 97) {
        const char *s = fmt(ms);
        int64_t back;
        ck_assert_msg(sched_parse_time(s, &back), "rejected its own %s", s);
        ck_assert_msg(back == ms, "%s: %lld != %lld", s, (long long)back, (long long)ms);
    }
    /* and the other way round, through an offset */
    ck_assert_str_eq(fmt(at("2028-02-29T01:30:00+03:00")), "2028-02-28T22:30:00Z");
    ck_assert_str_eq(fmt(at("2026-12-31T20:00:00-04:00")), "2027-01-01T00:00:00Z");
}
END_TEST

/* ---- evaluation ----
 * Two pools: "api" with regions eu, us, ap and "web" with eu, us. */

enum { API, WEB };
enum { EU, US, AP };

static struct sched_override ov_api[3], ov_web[2];
static struct sched_pool pools[2];
static struct sched_window win[4];
static struct sched_region res_api[3], res_web[2];
static struct sched_region *res_pools[2];
static enum sched_phase phases[4];
static struct sched_model model;
static struct sched_result result;

/* A region's own override that ends at until, and one without an end. */
static struct sched_override timed(enum region_state state, int64_t until, const char *reason)
{
    return (struct sched_override){
        .state = state, .has_until = true, .until_ms = until, .reason = reason};
}

static struct sched_override endless(enum region_state state, const char *reason)
{
    return (struct sched_override){.state = state, .reason = reason};
}

static void setup(void)
{
    memset(ov_api, 0, sizeof(ov_api));
    memset(ov_web, 0, sizeof(ov_web));
    memset(win, 0, sizeof(win));
    pools[API] = (struct sched_pool){.overrides = ov_api, .nregions = 3};
    pools[WEB] = (struct sched_pool){.overrides = ov_web, .nregions = 2};
    res_pools[API] = res_api;
    res_pools[WEB] = res_web;
    model = (struct sched_model){.pools = pools, .npools = 2, .windows = win, .nwindows = 0};
    result = (struct sched_result){.pools = res_pools, .phases = phases};
}

static void set_window(size_t k, const char *name, int64_t from, int64_t until,
                       enum region_state state, const struct sched_target *targets, size_t n)
{
    win[k] = (struct sched_window){.name = name,
                                   .from_ms = from,
                                   .until_ms = until,
                                   .state = state,
                                   .reason = name,
                                   .targets = targets,
                                   .ntargets = n};
    if (model.nwindows <= k) model.nwindows = k + 1;
}

static const struct sched_region *eval(int64_t now, size_t pool, size_t region)
{
    sched_eval(&model, now, &result);
    return &result.pools[pool][region];
}

static void assert_none(const struct sched_region *r)
{
    ck_assert_int_eq(r->state, REGION_AUTO);
    ck_assert_int_eq(r->source, SCHED_SOURCE_NONE);
    ck_assert_ptr_null(r->window);
    ck_assert_ptr_null(r->reason);
    ck_assert(!r->has_until);
}

static void assert_window(const struct sched_region *r, enum region_state state, const char *name)
{
    ck_assert_int_eq(r->source, SCHED_SOURCE_WINDOW);
    ck_assert_int_eq(r->state, state);
    ck_assert_ptr_nonnull(r->window);
    ck_assert_str_eq(r->window, name);
    ck_assert_str_eq(r->reason, name);
}

static void assert_config(const struct sched_region *r, enum region_state state)
{
    ck_assert_int_eq(r->source, SCHED_SOURCE_CONFIG);
    ck_assert_int_eq(r->state, state);
    ck_assert_ptr_null(r->window);
}

START_TEST(test_nothing)
{
    setup();
    for (size_t r = 0; r < 3; r++) assert_none(eval(T0, API, r));
    for (size_t r = 0; r < 2; r++) assert_none(eval(T0, WEB, r));
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
    /* an empty model is fine too */
    struct sched_model empty = {0};
    sched_eval(&empty, T0, &result);
    ck_assert_int_eq(sched_next_boundary(&empty, T0), INT64_MAX);
}
END_TEST

START_TEST(test_override)
{
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + 4 * HOUR, "CHG-1234 migration");
    ov_api[US] = endless(REGION_DOWN, NULL);
    ov_web[US] = endless(REGION_UP, "pinned");
    const struct sched_region *r = eval(T0, API, EU);
    assert_config(r, REGION_DRAIN);
    ck_assert_str_eq(r->reason, "CHG-1234 migration");
    ck_assert_int_eq(r->until_ms, T0 + 4 * HOUR);
    assert_config(eval(T0, API, US), REGION_DOWN);
    ck_assert_ptr_null(result.pools[API][US].reason);
    ck_assert(!result.pools[API][US].has_until);
    assert_config(eval(T0, WEB, US), REGION_UP);
    assert_none(eval(T0, API, AP));
    assert_none(eval(T0, WEB, EU));
    /* the last instant with the override, then none: [.., until) */
    assert_config(eval(T0 + 4 * HOUR - 1, API, EU), REGION_DRAIN);
    assert_none(eval(T0 + 4 * HOUR, API, EU));
    assert_config(eval(T0 + 4 * HOUR, API, US), REGION_DOWN);
    /* only the end of the timed one is a boundary */
    ck_assert_int_eq(sched_next_boundary(&model, T0), T0 + 4 * HOUR);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 4 * HOUR), INT64_MAX);
}
END_TEST

START_TEST(test_until_past)
{
    setup();
    /* loaded after its end: the region is auto, and nothing is armed */
    ov_api[EU] = timed(REGION_DRAIN, T0 - 1, "yesterday");
    assert_none(eval(T0, API, EU));
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
    /* ending exactly now counts as past */
    ov_api[EU].until_ms = T0;
    assert_none(eval(T0, API, EU));
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
    /* an auto "override" with an until is no override and no boundary */
    ov_api[EU] = timed(REGION_AUTO, T0 + HOUR, "ignored");
    assert_none(eval(T0, API, EU));
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
    /* a window already over: listed as over, applies nowhere */
    static const struct sched_target t[] = {{API, US}};
    set_window(0, "old", T0 - 2 * HOUR, T0 - HOUR, REGION_DOWN, t, 1);
    assert_none(eval(T0, API, US));
    ck_assert_int_eq(phases[0], SCHED_OVER);
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
}
END_TEST

START_TEST(test_epoch_is_an_instant)
{
    /* 1970-01-01T00:00:00Z is 0 ms, an instant like any other: an until
     * there is long past, not "no end" */
    setup();
    ov_api[EU] = timed(REGION_DRAIN, at("1970-01-01T00:00:00Z"), "epoch");
    assert_none(eval(T0, API, EU));
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);
    /* before it, the override is in force and ends there */
    const struct sched_region *r = eval(-1000, API, EU);
    assert_config(r, REGION_DRAIN);
    ck_assert(r->has_until);
    ck_assert_int_eq(r->until_ms, 0);
    ck_assert_int_eq(sched_next_boundary(&model, -1000), 0);
    assert_none(eval(0, API, EU));
    /* only an override without an end has none */
    ov_api[US] = endless(REGION_DOWN, "forever");
    r = eval(T0, API, US);
    assert_config(r, REGION_DOWN);
    ck_assert(!r->has_until);
    ck_assert_int_eq(sched_next_boundary(&model, T0), INT64_MAX);

    /* a window from the epoch is active from it on; one that ends there is over */
    static const struct sched_target t[] = {{WEB, EU}};
    static const struct sched_target t2[] = {{WEB, US}};
    set_window(0, "since-1970", 0, T0 + HOUR, REGION_DOWN, t, 1);
    set_window(1, "1969", -HOUR, 0, REGION_DRAIN, t2, 1);
    r = eval(T0, WEB, EU);
    assert_window(r, REGION_DOWN, "since-1970");
    ck_assert(r->has_until);
    ck_assert_int_eq(r->until_ms, T0 + HOUR);
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    assert_none(&result.pools[WEB][US]);
    ck_assert_int_eq(phases[1], SCHED_OVER);
    assert_window(eval(0, WEB, EU), REGION_DOWN, "since-1970");
    assert_none(&result.pools[WEB][US]);
    assert_none(eval(-1, WEB, EU));
    ck_assert_int_eq(phases[0], SCHED_PENDING);
    assert_window(&result.pools[WEB][US], REGION_DRAIN, "1969");
    ck_assert_int_eq(sched_next_boundary(&model, -2 * HOUR), -HOUR);
    ck_assert_int_eq(sched_next_boundary(&model, -HOUR), 0);
    ck_assert_int_eq(sched_next_boundary(&model, 0), T0 + HOUR);
}
END_TEST

START_TEST(test_phases)
{
    setup();
    static const struct sched_target t[] = {{API, EU}, {WEB, EU}};
    set_window(0, "eu-west-db", T0 + 2 * HOUR, T0 + 4 * HOUR, REGION_DRAIN, t, 2);
    /* a window naming nothing still has its phases */
    set_window(1, "empty", T0 + HOUR, T0 + 5 * HOUR, REGION_DOWN, NULL, 0);
    const int64_t from = T0 + 2 * HOUR, until = T0 + 4 * HOUR;

    assert_none(eval(from - 1, API, EU));
    ck_assert_int_eq(phases[0], SCHED_PENDING);
    ck_assert_int_eq(sched_window_phase(&win[0], from - 1), SCHED_PENDING);

    const struct sched_region *r = eval(from, API, EU);
    assert_window(r, REGION_DRAIN, "eu-west-db");
    ck_assert_int_eq(r->window_index, 0);
    ck_assert_int_eq(r->until_ms, until);
    assert_window(&result.pools[WEB][EU], REGION_DRAIN, "eu-west-db");
    assert_none(&result.pools[API][US]);
    assert_none(&result.pools[WEB][US]);
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    ck_assert_int_eq(phases[1], SCHED_ACTIVE);

    assert_window(eval(until - 1, WEB, EU), REGION_DRAIN, "eu-west-db");
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    assert_none(eval(until, WEB, EU));
    ck_assert_int_eq(phases[0], SCHED_OVER);
    ck_assert_int_eq(phases[1], SCHED_ACTIVE);
    assert_none(eval(T0 + 5 * HOUR, API, EU));
    ck_assert_int_eq(phases[1], SCHED_OVER);

    /* every start and end is a boundary, in order */
    int64_t expect[] = {T0 + HOUR, from, until, T0 + 5 * HOUR, INT64_MAX};
    int64_t now = T0;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        now = sched_next_boundary(&model, now);
        ck_assert_int_eq(now, expect[i]);
    }
}
END_TEST

START_TEST(test_back_to_back)
{
    /* one window ends exactly when the next starts: no gap, no overlap */
    setup();
    static const struct sched_target t[] = {{API, EU}};
    set_window(0, "first", T0 + HOUR, T0 + 2 * HOUR, REGION_DOWN, t, 1);
    set_window(1, "second", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    assert_window(eval(T0 + 2 * HOUR - 1, API, EU), REGION_DOWN, "first");
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    ck_assert_int_eq(phases[1], SCHED_PENDING);
    const struct sched_region *r = eval(T0 + 2 * HOUR, API, EU);
    assert_window(r, REGION_DRAIN, "second");
    ck_assert_int_eq(r->until_ms, T0 + 3 * HOUR);
    ck_assert_int_eq(phases[0], SCHED_OVER);
    ck_assert_int_eq(phases[1], SCHED_ACTIVE);
    /* the shared instant is one boundary */
    ck_assert_int_eq(sched_next_boundary(&model, T0 + HOUR), T0 + 2 * HOUR);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 2 * HOUR), T0 + 3 * HOUR);
    assert_none(eval(T0 + 3 * HOUR, API, EU));
}
END_TEST

START_TEST(test_override_ends_inside_window)
{
    setup();
    static const struct sched_target t[] = {{API, EU}};
    ov_api[EU] = timed(REGION_DRAIN, T0 + 2 * HOUR, "own");
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    /* before the window and inside it, the region's own override wins */
    assert_config(eval(T0, API, EU), REGION_DRAIN);
    assert_config(eval(T0 + HOUR, API, EU), REGION_DRAIN);
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    assert_config(eval(T0 + 2 * HOUR - 1, API, EU), REGION_DRAIN);
    /* from the override's end on, the window applies */
    const struct sched_region *r = eval(T0 + 2 * HOUR, API, EU);
    assert_window(r, REGION_DOWN, "w");
    ck_assert_int_eq(r->until_ms, T0 + 3 * HOUR);
    assert_none(eval(T0 + 3 * HOUR, API, EU));
    int64_t expect[] = {T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR, INT64_MAX};
    int64_t now = T0;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        now = sched_next_boundary(&model, now);
        ck_assert_int_eq(now, expect[i]);
    }
}
END_TEST

START_TEST(test_override_ends_as_window_starts)
{
    setup();
    static const struct sched_target t[] = {{WEB, US}};
    ov_web[US] = timed(REGION_UP, T0 + HOUR, "pinned");
    set_window(0, "w", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 1);
    assert_config(eval(T0 + HOUR - 1, WEB, US), REGION_UP);
    assert_window(eval(T0 + HOUR, WEB, US), REGION_DRAIN, "w");
    ck_assert_int_eq(sched_next_boundary(&model, T0), T0 + HOUR);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + HOUR), T0 + 2 * HOUR);
}
END_TEST

START_TEST(test_override_beats_window)
{
    setup();
    static const struct sched_target t[] = {{API, EU}, {API, US}, {API, AP}};
    set_window(0, "w", T0, T0 + HOUR, REGION_DOWN, t, 3);
    ov_api[EU] = endless(REGION_UP, "keep eu");
    ov_api[US] = timed(REGION_DRAIN, T0 + 2 * HOUR, "longer");
    assert_config(eval(T0, API, EU), REGION_UP);
    assert_config(&result.pools[API][US], REGION_DRAIN);
    ck_assert_int_eq(result.pools[API][US].until_ms, T0 + 2 * HOUR);
    assert_window(&result.pools[API][AP], REGION_DOWN, "w");
    /* the override outlives the window: the window's end changes nothing for us */
    assert_config(eval(T0 + HOUR, API, US), REGION_DRAIN);
    assert_none(&result.pools[API][AP]);
    assert_none(eval(T0 + 2 * HOUR, API, US));
}
END_TEST

START_TEST(test_overlapping)
{
    setup();
    static const struct sched_target eu[] = {{API, EU}};
    static const struct sched_target eu_us[] = {{API, US}, {API, EU}};
    /* drain 1h-5h, down 2h-3h, drain 1h-4h (ends earlier), down 2h-3h again */
    set_window(0, "drain-long", T0 + HOUR, T0 + 5 * HOUR, REGION_DRAIN, eu, 1);
    set_window(1, "down-short", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DOWN, eu_us, 2);
    set_window(2, "drain-shorter", T0 + HOUR, T0 + 4 * HOUR, REGION_DRAIN, eu_us, 2);
    set_window(3, "down-twin", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DOWN, eu, 1);

    /* equal states: the one that ends last */
    const struct sched_region *r = eval(T0 + HOUR, API, EU);
    assert_window(r, REGION_DRAIN, "drain-long");
    ck_assert_int_eq(r->until_ms, T0 + 5 * HOUR);
    ck_assert_int_eq(r->window_index, 0);
    assert_window(&result.pools[API][US], REGION_DRAIN, "drain-shorter");
    /* down beats drain, although it ends first; on a full tie the first listed */
    r = eval(T0 + 2 * HOUR, API, EU);
    assert_window(r, REGION_DOWN, "down-short");
    ck_assert_int_eq(r->until_ms, T0 + 3 * HOUR);
    ck_assert_int_eq(r->window_index, 1);
    assert_window(&result.pools[API][US], REGION_DOWN, "down-short");
    /* the down windows end: back to the drain that ends last */
    assert_window(eval(T0 + 3 * HOUR, API, EU), REGION_DRAIN, "drain-long");
    assert_window(&result.pools[API][US], REGION_DRAIN, "drain-shorter");
    assert_window(eval(T0 + 4 * HOUR, API, EU), REGION_DRAIN, "drain-long");
    assert_none(&result.pools[API][US]);
    assert_none(eval(T0 + 5 * HOUR, API, EU));

    /* the order of the list matters only on a full tie */
    static const struct sched_target ap[] = {{API, AP}};
    setup();
    set_window(0, "later-listed-longer", T0, T0 + 2 * HOUR, REGION_DRAIN, ap, 1);
    set_window(1, "b", T0, T0 + HOUR, REGION_DRAIN, ap, 1);
    assert_window(eval(T0, API, AP), REGION_DRAIN, "later-listed-longer");
    setup();
    set_window(0, "a", T0, T0 + HOUR, REGION_DRAIN, ap, 1);
    set_window(1, "b-longer", T0, T0 + 2 * HOUR, REGION_DRAIN, ap, 1);
    assert_window(eval(T0, API, AP), REGION_DRAIN, "b-longer");
    setup();
    set_window(0, "drain", T0, T0 + HOUR, REGION_DRAIN, ap, 1);
    set_window(1, "down", T0, T0 + HOUR, REGION_DOWN, ap, 1);
    assert_window(eval(T0, API, AP), REGION_DOWN, "down");
}
END_TEST

/* A schedule with something happening at many instants, and what each
 * region's source must be at a given time, computed independently of
 * sched_eval's order of evaluation. */
static void busy_schedule(void)
{
    static const struct sched_target a[] = {{API, EU}, {WEB, EU}};
    static const struct sched_target b[] = {{API, EU}, {API, US}};
    setup();
    ov_api[AP] = timed(REGION_DRAIN, T0 + 6 * HOUR, "ap");
    ov_api[EU] = timed(REGION_DOWN, T0 + 90 * MIN, "eu");
    set_window(0, "a", T0 + HOUR, T0 + 3 * HOUR, REGION_DRAIN, a, 2);
    set_window(1, "b", T0 + 2 * HOUR, T0 + 4 * HOUR, REGION_DOWN, b, 2);
    set_window(2, "c", T0 + 5 * HOUR, T0 + 7 * HOUR, REGION_DRAIN, b, 2);
}

static void expect_busy(int64_t now)
{
    sched_eval(&model, now, &result);
    const int64_t h = now - T0;
    /* api/eu: its own down until 1:30; then a (drain, 1-3) until b (down,
     * 2-4) opens; b beats a; nothing from 4 to 5; then c (drain, 5-7) */
    const struct sched_region *r = &result.pools[API][EU];
    if (h < 90 * MIN)
        assert_config(r, REGION_DOWN);
    else if (h < 2 * HOUR)
        assert_window(r, REGION_DRAIN, "a");
    else if (h < 4 * HOUR)
        assert_window(r, REGION_DOWN, "b");
    else if (h >= 5 * HOUR && h < 7 * HOUR)
        assert_window(r, REGION_DRAIN, "c");
    else
        assert_none(r);
    r = &result.pools[API][US];
    if (h >= 2 * HOUR && h < 4 * HOUR)
        assert_window(r, REGION_DOWN, "b");
    else if (h >= 5 * HOUR && h < 7 * HOUR)
        assert_window(r, REGION_DRAIN, "c");
    else
        assert_none(r);
    r = &result.pools[API][AP];
    if (h < 6 * HOUR)
        assert_config(r, REGION_DRAIN);
    else
        assert_none(r);
    r = &result.pools[WEB][EU];
    if (h >= HOUR && h < 3 * HOUR)
        assert_window(r, REGION_DRAIN, "a");
    else
        assert_none(r);
    assert_none(&result.pools[WEB][US]);
}

START_TEST(test_clock_jumps)
{
    busy_schedule();
    /* the instants around every boundary, visited forward, backward and in
     * a jumbled order (NTP steps, a suspend): each answer depends only on
     * the instant asked about */
    static const int64_t marks[] = {0, 60, 90, 120, 180, 240, 300, 360, 420};
    int64_t instants[3 * 9 + 2];
    size_t n = 0;
    instants[n++] = T0 - 24 * HOUR;
    for (size_t i = 0; i < 9; i++) {
        instants[n++] = T0 + marks[i] * MIN - 1;
        instants[n++] = T0 + marks[i] * MIN;
        instants[n++] = T0 + marks[i] * MIN + 1;
    }
    instants[n++] = T0 + 48 * HOUR;
    for (size_t i = 0; i < n; i++) expect_busy(instants[i]);
    for (size_t i = n; i-- > 0;) expect_busy(instants[i]);
    for (size_t i = 0; i < n; i++) expect_busy(instants[(i * 7) % n]);

    /* a jump forward over several boundaries: the timer is re-armed at the
     * next one after the new time, not at the ones skipped */
    expect_busy(T0 + 30 * MIN);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 30 * MIN), T0 + HOUR);
    expect_busy(T0 + 150 * MIN); /* jumped 2 h: a and b active, eu's override over */
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 150 * MIN), T0 + 3 * HOUR);
    ck_assert_int_eq(phases[0], SCHED_ACTIVE);
    ck_assert_int_eq(phases[1], SCHED_ACTIVE);
    ck_assert_int_eq(phases[2], SCHED_PENDING);
    /* and back (the clock was ahead): windows are pending again and the
     * ended override applies again */
    expect_busy(T0 + 10 * MIN);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 10 * MIN), T0 + HOUR);
    ck_assert_int_eq(phases[0], SCHED_PENDING);
    ck_assert_int_eq(phases[1], SCHED_PENDING);
    /* past everything: nothing to arm */
    expect_busy(T0 + 8 * HOUR);
    ck_assert_int_eq(sched_next_boundary(&model, T0 + 8 * HOUR), INT64_MAX);
    ck_assert_int_eq(phases[2], SCHED_OVER);

    /* walking the boundaries one by one from the start visits them all */
    static const int64_t all[] = {60, 90, 120, 180, 240, 300, 360, 420};
    int64_t now = T0 - HOUR;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        now = sched_next_boundary(&model, now);
        ck_assert_int_eq(now, T0 + all[i] * MIN);
        expect_busy(now);
    }
    ck_assert_int_eq(sched_next_boundary(&model, now), INT64_MAX);
}
END_TEST

START_TEST(test_stray_targets)
{
    /* targets outside the model (the config validates them; the core
     * must not trust that) are ignored */
    setup();
    static const struct sched_target t[] = {{API, 3}, {2, 0}, {WEB, EU}};
    set_window(0, "w", T0, T0 + HOUR, REGION_DOWN, t, 3);
    assert_window(eval(T0, WEB, EU), REGION_DOWN, "w");
    for (size_t r = 0; r < 3; r++) assert_none(&result.pools[API][r]);
    assert_none(&result.pools[WEB][US]);
}
END_TEST

/* ---- steps: what changed between two evaluations ---- */

static struct sched_region was_api[3], was_web[2];
static struct sched_region *was_pools[2] = {was_api, was_web};
static enum sched_phase was_phases[4];
static struct sched_step step;

/* The notes of one region from instant `before` to instant `after`, both
 * evaluated with the model (the clock path); step holds the step. */
static size_t notes_between(int64_t before, int64_t after, size_t pool, size_t region,
                            enum sched_note out[2])
{
    struct sched_result was = {.pools = was_pools, .phases = was_phases};
    sched_eval(&model, before, &was);
    sched_eval(&model, after, &result);
    step = (struct sched_step){.was = &was.pools[pool][region], .now = &result.pools[pool][region]};
    step.was_applies = sched_source_applies(&model, pool, region, step.was, after);
    step.now_applied = sched_source_applies(&model, pool, region, step.now, before);
    return sched_step_notes(&step, out);
}

/* The notes of region (pool, region) at the boundary t: as many as given,
 * in that order. */
#define assert_notes(t, pool, region, ...)                                                         \
    do {                                                                                           \
        static const enum sched_note want_[] = {__VA_ARGS__};                                      \
        enum sched_note got_[2];                                                                   \
        size_t n_ = notes_between((t)-1, (t), pool, region, got_);                                 \
        ck_assert_uint_eq(n_, sizeof(want_) / sizeof(want_[0]));                                   \
        for (size_t i_ = 0; i_ < n_; i_++) ck_assert_int_eq(got_[i_], want_[i_]);                  \
    } while (0)

static void assert_no_notes(int64_t t, size_t pool, size_t region)
{
    enum sched_note got[2];
    ck_assert_uint_eq(notes_between(t - 1, t, pool, region, got), 0);
}

START_TEST(test_applies)
{
    setup();
    static const struct sched_target t[] = {{API, EU}, {WEB, US}};
    set_window(0, "w", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 2);
    ov_api[US] = timed(REGION_DOWN, T0 + HOUR, "own");
    const struct sched_region w = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "w"};
    const struct sched_region other = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "other"};
    const struct sched_region own = {.state = REGION_DOWN, .source = SCHED_SOURCE_CONFIG};
    const struct sched_region none = {.state = REGION_AUTO};
    /* a window applies to the regions it names, during [from, until) */
    ck_assert(!sched_source_applies(&model, API, EU, &w, T0 + HOUR - 1));
    ck_assert(sched_source_applies(&model, API, EU, &w, T0 + HOUR));
    ck_assert(sched_source_applies(&model, WEB, US, &w, T0 + 2 * HOUR - 1));
    ck_assert(!sched_source_applies(&model, WEB, US, &w, T0 + 2 * HOUR));
    ck_assert(!sched_source_applies(&model, API, US, &w, T0 + HOUR));
    ck_assert(!sched_source_applies(&model, API, EU, &other, T0 + HOUR));
    /* even where something stronger hides it */
    ov_api[EU] = endless(REGION_UP, "pinned");
    ck_assert(sched_source_applies(&model, API, EU, &w, T0 + HOUR));
    /* the region's own override while it is active */
    ck_assert(sched_source_applies(&model, API, US, &own, T0));
    ck_assert(!sched_source_applies(&model, API, US, &own, T0 + HOUR));
    ck_assert(!sched_source_applies(&model, API, AP, &own, T0));
    /* no source applies nowhere; nor does anything outside the model */
    ck_assert(!sched_source_applies(&model, API, EU, &none, T0 + HOUR));
    ck_assert(!sched_source_applies(&model, API, 3, &w, T0 + HOUR));
    ck_assert(!sched_source_applies(&model, 2, EU, &w, T0 + HOUR));
}
END_TEST

START_TEST(test_handover_notes)
{
    static const struct sched_target t[] = {{API, EU}};
    /* the same state on both sides: still an end and a start, in that order */
    setup();
    set_window(0, "second", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "first", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 1);
    assert_notes(T0 + HOUR, API, EU, SCHED_NOTE_STARTED);
    assert_notes(T0 + 2 * HOUR, API, EU, SCHED_NOTE_ENDED, SCHED_NOTE_STARTED);
    ck_assert_str_eq(step.was->window, "first");
    ck_assert_str_eq(step.now->window, "second");
    ck_assert_int_eq(step.was->state, step.now->state);
    assert_notes(T0 + 3 * HOUR, API, EU, SCHED_NOTE_ENDED);
    assert_no_notes(T0 + 90 * MIN, API, EU);
    /* another state */
    setup();
    set_window(0, "first", T0 + HOUR, T0 + 2 * HOUR, REGION_DOWN, t, 1);
    set_window(1, "second", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    assert_notes(T0 + 2 * HOUR, API, EU, SCHED_NOTE_ENDED, SCHED_NOTE_STARTED);
    /* the region's own override hands it to a window */
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + HOUR, "own");
    set_window(0, "w", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 1);
    assert_notes(T0 + HOUR, API, EU, SCHED_NOTE_ENDED, SCHED_NOTE_STARTED);
    ck_assert_int_eq(step.was->source, SCHED_SOURCE_CONFIG);
    ck_assert_int_eq(step.now->source, SCHED_SOURCE_WINDOW);
}
END_TEST

START_TEST(test_nested_notes)
{
    static const struct sched_target t[] = {{API, EU}};
    /* a stronger window inside a weaker one: it starts over it, and when it
     * ends the outer one, which applied all along, holds the region again:
     * no start is claimed for it */
    setup();
    set_window(0, "outer", T0 + HOUR, T0 + 4 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "inner", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    assert_notes(T0 + HOUR, API, EU, SCHED_NOTE_STARTED);
    assert_notes(T0 + 2 * HOUR, API, EU, SCHED_NOTE_STARTED);
    ck_assert(step.was_applies);
    assert_notes(T0 + 3 * HOUR, API, EU, SCHED_NOTE_ENDED);
    ck_assert_str_eq(step.was->window, "inner");
    ck_assert_str_eq(step.now->window, "outer");
    ck_assert(step.now_applied);
    assert_notes(T0 + 4 * HOUR, API, EU, SCHED_NOTE_ENDED);
    /* one with the same state inside never holds the region: nothing */
    setup();
    set_window(0, "outer", T0 + HOUR, T0 + 4 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "inner", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    assert_no_notes(T0 + 2 * HOUR, API, EU);
    assert_no_notes(T0 + 3 * HOUR, API, EU);
    /* overlapping ones with the same state: the later end takes the region
     * while the first still applies; the first's end changes nothing */
    setup();
    set_window(0, "early", T0 + HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "late", T0 + 2 * HOUR, T0 + 4 * HOUR, REGION_DRAIN, t, 1);
    assert_notes(T0 + 2 * HOUR, API, EU, SCHED_NOTE_STARTED);
    ck_assert(step.was_applies);
    assert_no_notes(T0 + 3 * HOUR, API, EU);
    /* the region's own override ends inside a window: only its end */
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + 2 * HOUR, "own");
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    assert_no_notes(T0 + HOUR, API, EU);
    assert_notes(T0 + 2 * HOUR, API, EU, SCHED_NOTE_ENDED);
    ck_assert(step.now_applied);
    /* the wall clock back before that end: the override is in force again
     * over the window, which still applies */
    enum sched_note got[2];
    ck_assert_uint_eq(notes_between(T0 + 150 * MIN, T0 + 90 * MIN, API, EU, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_STARTED);
    ck_assert_int_eq(step.now->source, SCHED_SOURCE_CONFIG);
    ck_assert(step.was_applies);
}
END_TEST

START_TEST(test_reload_notes)
{
    /* a reload compares two models: the step is built by hand */
    const struct sched_region none = {.state = REGION_AUTO};
    const struct sched_region a_drain = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "a"};
    const struct sched_region a_down = {
        .state = REGION_DOWN, .source = SCHED_SOURCE_WINDOW, .window = "a"};
    const struct sched_region b_drain = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "b"};
    const struct sched_region own = {.state = REGION_DOWN, .source = SCHED_SOURCE_CONFIG};
    enum sched_note got[2];
    struct sched_step st = {.was = &a_drain, .now = &a_drain};
    ck_assert_uint_eq(sched_step_notes(&st, got), 0);
    /* the same window with another state */
    st = (struct sched_step){.was = &a_drain, .now = &a_down, .was_applies = true};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_CHANGED);
    /* a replaced by b */
    st = (struct sched_step){.was = &a_drain, .now = &b_drain};
    ck_assert_uint_eq(sched_step_notes(&st, got), 2);
    ck_assert_int_eq(got[0], SCHED_NOTE_ENDED);
    ck_assert_int_eq(got[1], SCHED_NOTE_STARTED);
    /* both still apply, b now ranks first (its until moved) */
    st = (struct sched_step){
        .was = &a_drain, .now = &b_drain, .was_applies = true, .now_applied = true};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_OVERTAKEN);
    /* an override added over a window that stays */
    st = (struct sched_step){.was = &a_drain, .now = &own, .was_applies = true};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_STARTED);
    /* and removed again */
    st = (struct sched_step){.was = &own, .now = &a_drain, .now_applied = true};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_ENDED);
    /* from nothing, to nothing */
    st = (struct sched_step){.was = &none, .now = &own};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_STARTED);
    st = (struct sched_step){.was = &own, .now = &none};
    ck_assert_uint_eq(sched_step_notes(&st, got), 1);
    ck_assert_int_eq(got[0], SCHED_NOTE_ENDED);
    ck_assert(sched_same_source(&a_drain, &a_down));
    ck_assert(!sched_same_source(&a_drain, &b_drain));
    ck_assert(!sched_same_source(&own, &a_down));
    ck_assert(sched_same_source(&none, &none));
}
END_TEST

/* ---- the words: log lines and event reasons (maint_text.h) ---- */

static char txt[MAINT_TEXT_LEN];

/* The event reason of note j at the boundary t (the clock path). */
static const char *event_at(int64_t t, size_t pool, size_t region, size_t j)
{
    enum sched_note notes[2];
    size_t n = notes_between(t - 1, t, pool, region, notes);
    ck_assert_uint_gt(n, j);
    maint_text_event(notes[j], &step, MAINT_BY_CLOCK, txt, sizeof(txt));
    return txt;
}

START_TEST(test_text_source)
{
    struct sched_region s = {.state = REGION_DRAIN,
                             .source = SCHED_SOURCE_WINDOW,
                             .window = "outer",
                             .reason = "rack move",
                             .has_until = true,
                             .until_ms = T0 + 4 * HOUR};
    maint_text_source(&s, txt, sizeof(txt));
    ck_assert_str_eq(txt, "drain under maintenance outer (rack move, until 2026-11-28T04:00:00Z)");
    s = (struct sched_region){.state = REGION_UP, .source = SCHED_SOURCE_CONFIG, .reason = "pin"};
    maint_text_source(&s, txt, sizeof(txt));
    ck_assert_str_eq(txt, "up by its own override (pin)");
    s.reason = NULL;
    maint_text_source(&s, txt, sizeof(txt));
    ck_assert_str_eq(txt, "up by its own override");
    s.has_until = true;
    s.until_ms = 0; /* the epoch is an instant, not "none" */
    maint_text_source(&s, txt, sizeof(txt));
    ck_assert_str_eq(txt, "up by its own override (until 1970-01-01T00:00:00Z)");
    s = (struct sched_region){.state = REGION_AUTO};
    maint_text_source(&s, txt, sizeof(txt));
    ck_assert_str_eq(txt, "auto");

    const struct sched_region none = {.state = REGION_AUTO};
    const struct sched_region a = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "a"};
    const struct sched_region b = {
        .state = REGION_DRAIN, .source = SCHED_SOURCE_WINDOW, .window = "b", .reason = "r"};
    const struct sched_region c = {
        .state = REGION_DOWN, .source = SCHED_SOURCE_WINDOW, .window = "c"};
    maint_text_fate(&a, &none, txt, sizeof(txt));
    ck_assert_str_eq(txt, "is now auto");
    maint_text_fate(&none, &none, txt, sizeof(txt));
    ck_assert_str_eq(txt, "stays auto");
    maint_text_fate(&a, &b, txt, sizeof(txt));
    ck_assert_str_eq(txt, "stays drain under maintenance b (r)");
    maint_text_fate(&b, &c, txt, sizeof(txt));
    ck_assert_str_eq(txt, "is now down under maintenance c");
    maint_text_fate(NULL, &c, txt, sizeof(txt)); /* a region new in a reload */
    ck_assert_str_eq(txt, "is now down under maintenance c");
}
END_TEST

START_TEST(test_text_clock_events)
{
    static const struct sched_target t[] = {{API, EU}};
    /* a handover between windows with one state: the end says who holds
     * the region now, the start is a start */
    setup();
    set_window(0, "second", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "first", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 1);
    ck_assert_str_eq(event_at(T0 + HOUR, API, EU, 0), "maintenance first started: first");
    ck_assert_str_eq(event_at(T0 + 2 * HOUR, API, EU, 0),
                     "maintenance first ended: first; the region stays drain under maintenance "
                     "second (second, until 2026-11-28T03:00:00Z)");
    ck_assert_str_eq(event_at(T0 + 2 * HOUR, API, EU, 1), "maintenance second started: second");
    ck_assert_str_eq(event_at(T0 + 3 * HOUR, API, EU, 0),
                     "maintenance second ended: second; the region is now auto");

    /* an inner window inside an outer one: its start takes precedence over
     * the outer one, its end leaves the region under it; nothing claims
     * the outer one started then */
    setup();
    set_window(0, "outer", T0 + HOUR, T0 + 4 * HOUR, REGION_DRAIN, t, 1);
    set_window(1, "inner", T0 + 2 * HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    ck_assert_str_eq(event_at(T0 + 2 * HOUR, API, EU, 0),
                     "maintenance inner started: inner; it takes precedence over maintenance "
                     "outer (outer, until 2026-11-28T04:00:00Z)");
    ck_assert_str_eq(event_at(T0 + 3 * HOUR, API, EU, 0),
                     "maintenance inner ended: inner; the region is now drain under maintenance "
                     "outer (outer, until 2026-11-28T04:00:00Z)");

    /* the region's own override ends inside a window, then one ends as a
     * window starts */
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + 2 * HOUR, NULL);
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    ck_assert_str_eq(event_at(T0 + 2 * HOUR, API, EU, 0),
                     "override drain ended: no reason given; the region is now down under "
                     "maintenance w (w, until 2026-11-28T03:00:00Z)");
    ck_assert_str_eq(event_at(T0 + 3 * HOUR, API, EU, 0),
                     "maintenance w ended: w; the region is now auto");
    setup();
    ov_api[EU] = timed(REGION_UP, T0 + HOUR, "pinned");
    set_window(0, "w", T0 + HOUR, T0 + 2 * HOUR, REGION_DRAIN, t, 1);
    ck_assert_str_eq(event_at(T0 + HOUR, API, EU, 0),
                     "override up ended: pinned; the region is now drain under maintenance w "
                     "(w, until 2026-11-28T02:00:00Z)");
    ck_assert_str_eq(event_at(T0 + HOUR, API, EU, 1), "maintenance w started: w");

    /* the wall clock stepped back: the override is in force again over
     * the window, and a window is pending again */
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + 2 * HOUR, "own");
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    enum sched_note n[2];
    ck_assert_uint_eq(notes_between(T0 + 150 * MIN, T0 + 90 * MIN, API, EU, n), 1);
    maint_text_event(n[0], &step, MAINT_BY_CLOCK_BACK, txt, sizeof(txt));
    ck_assert_str_eq(txt, "override drain in force again (the wall clock moved back): own; it "
                          "takes precedence over maintenance w (w, until 2026-11-28T03:00:00Z)");
    ck_assert(maint_text_override(n[0], &step, MAINT_BY_CLOCK_BACK, txt, sizeof(txt)));
    ck_assert_str_eq(txt, "override drain in force again (the wall clock moved back): own; it "
                          "takes precedence over maintenance w (w, until 2026-11-28T03:00:00Z)");
    ov_api[EU] = endless(REGION_AUTO, NULL);
    ck_assert_uint_eq(notes_between(T0 + 90 * MIN, T0, API, EU, n), 1);
    maint_text_event(n[0], &step, MAINT_BY_CLOCK_BACK, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance w is pending again (the wall clock moved back): w; the "
                          "region is now auto");
}
END_TEST

START_TEST(test_text_override_lines)
{
    static const struct sched_target t[] = {{API, EU}};
    setup();
    ov_api[EU] = timed(REGION_DRAIN, T0 + 2 * HOUR, "CHG-1 migration");
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    enum sched_note n[2];
    ck_assert_uint_eq(notes_between(T0 + 2 * HOUR - 1, T0 + 2 * HOUR, API, EU, n), 1);
    ck_assert(maint_text_override(n[0], &step, MAINT_BY_CLOCK, txt, sizeof(txt)));
    ck_assert_str_eq(txt, "override drain ended at 2026-11-28T02:00:00Z (CHG-1 migration); the "
                          "region is now down under maintenance w (w, until 2026-11-28T03:00:00Z)");
    /* a reload's changes are told by its events */
    ck_assert(!maint_text_override(n[0], &step, MAINT_BY_RELOAD, txt, sizeof(txt)));
    /* alone: auto again */
    setup();
    ov_api[EU] = timed(REGION_DOWN, T0 + 2 * HOUR, NULL);
    ck_assert_uint_eq(notes_between(T0 + 2 * HOUR - 1, T0 + 2 * HOUR, API, EU, n), 1);
    ck_assert(maint_text_override(n[0], &step, MAINT_BY_CLOCK, txt, sizeof(txt)));
    ck_assert_str_eq(txt, "override down ended at 2026-11-28T02:00:00Z (no reason given); the "
                          "region is now auto");
    /* a window's end or start is not the override's */
    setup();
    set_window(0, "w", T0 + HOUR, T0 + 3 * HOUR, REGION_DOWN, t, 1);
    ck_assert_uint_eq(notes_between(T0 + HOUR - 1, T0 + HOUR, API, EU, n), 1);
    ck_assert(!maint_text_override(n[0], &step, MAINT_BY_CLOCK, txt, sizeof(txt)));
    ck_assert_uint_eq(notes_between(T0 + 3 * HOUR - 1, T0 + 3 * HOUR, API, EU, n), 1);
    ck_assert(!maint_text_override(n[0], &step, MAINT_BY_CLOCK, txt, sizeof(txt)));
}
END_TEST

START_TEST(test_text_reload_events)
{
    const struct sched_region none = {.state = REGION_AUTO};
    const struct sched_region r1 = {.state = REGION_DRAIN,
                                    .source = SCHED_SOURCE_WINDOW,
                                    .window = "r1",
                                    .reason = "one",
                                    .has_until = true,
                                    .until_ms = T0};
    const struct sched_region r2 = {.state = REGION_DRAIN,
                                    .source = SCHED_SOURCE_WINDOW,
                                    .window = "r2",
                                    .reason = "two",
                                    .has_until = true,
                                    .until_ms = T0 + HOUR};
    const struct sched_region r1_down = {.state = REGION_DOWN,
                                         .source = SCHED_SOURCE_WINDOW,
                                         .window = "r1",
                                         .reason = "one",
                                         .has_until = true,
                                         .until_ms = T0};
    const struct sched_region own = {
        .state = REGION_UP, .source = SCHED_SOURCE_CONFIG, .reason = "pinned"};
    const struct sched_region own_down = {.state = REGION_DOWN, .source = SCHED_SOURCE_CONFIG};
    struct sched_step st = {.was = &r1, .now = &r2};
    maint_text_event(SCHED_NOTE_ENDED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance r1 ended (config reloaded): one; the region stays drain "
                          "under maintenance r2 (two, until 2026-11-28T01:00:00Z)");
    maint_text_event(SCHED_NOTE_STARTED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance r2 started (config reloaded): two");
    st = (struct sched_step){.was = &r1, .now = &r1_down, .was_applies = true};
    maint_text_event(SCHED_NOTE_CHANGED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance r1 changed from drain to down (config reloaded): one");
    st = (struct sched_step){.was = &own, .now = &own_down, .was_applies = true};
    maint_text_event(SCHED_NOTE_CHANGED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "override changed from up to down (config reloaded): no reason given");
    st = (struct sched_step){.was = &r1, .now = &r2, .was_applies = true, .now_applied = true};
    maint_text_event(SCHED_NOTE_OVERTAKEN, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance r2 takes precedence over maintenance r1 (one, until "
                          "2026-11-28T00:00:00Z) (config reloaded): two");
    st = (struct sched_step){.was = &r1, .now = &own, .was_applies = true};
    maint_text_event(SCHED_NOTE_STARTED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "override up started (config reloaded): pinned; it takes precedence "
                          "over maintenance r1 (one, until 2026-11-28T00:00:00Z)");
    st = (struct sched_step){.was = &own, .now = &r1, .now_applied = true};
    maint_text_event(SCHED_NOTE_ENDED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "override up ended (config reloaded): pinned; the region is now drain "
                          "under maintenance r1 (one, until 2026-11-28T00:00:00Z)");
    st = (struct sched_step){.was = &none, .now = &own};
    maint_text_event(SCHED_NOTE_STARTED, &st, MAINT_BY_RELOAD, txt, sizeof(txt));
    ck_assert_str_eq(txt, "override up started (config reloaded): pinned");
}
END_TEST

START_TEST(test_text_windows)
{
    const struct sched_window w = {.name = "eu-west-db",
                                   .from_ms = T0 + 2 * HOUR,
                                   .until_ms = T0 + 4 * HOUR,
                                   .state = REGION_DRAIN,
                                   .reason = "CHG-1234"};
    const struct sched_region none = {.state = REGION_AUTO};
    const struct sched_region held = {.state = REGION_DRAIN,
                                      .source = SCHED_SOURCE_WINDOW,
                                      .window = "eu-west-db",
                                      .reason = "CHG-1234",
                                      .has_until = true,
                                      .until_ms = T0 + 4 * HOUR};
    const struct sched_region pinned = {
        .state = REGION_UP, .source = SCHED_SOURCE_CONFIG, .reason = "pinned"};
    const struct sched_region outer = {.state = REGION_DRAIN,
                                       .source = SCHED_SOURCE_WINDOW,
                                       .window = "outer",
                                       .has_until = true,
                                       .until_ms = T0 + 5 * HOUR};
    const struct sched_region deep = {.state = REGION_DOWN,
                                      .source = SCHED_SOURCE_WINDOW,
                                      .window = "deep",
                                      .reason = "r",
                                      .has_until = true,
                                      .until_ms = T0 + 3 * HOUR};
    /* a start holding every region it names */
    struct maint_target t[] = {{"api", "eu-west", &none, &held}, {"web", "eu-west", &none, &held}};
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_CLOCK, t, 2, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db started: drain api/eu-west, web/eu-west until "
                          "2026-11-28T04:00:00Z (CHG-1234)");
    maint_text_window(&w, MAINT_WINDOW_IN_FORCE, SCHED_ACTIVE, MAINT_BY_CLOCK, t, 2, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db in force: drain api/eu-west, web/eu-west until "
                          "2026-11-28T04:00:00Z (CHG-1234)");
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_CLOCK_BACK, t, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db in force again (the wall clock moved back): "
                          "drain api/eu-west until 2026-11-28T04:00:00Z (CHG-1234)");
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_RELOAD, t, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db started (config reloaded): drain api/eu-west "
                          "until 2026-11-28T04:00:00Z (CHG-1234)");
    /* a start where something else holds a region: what holds it */
    struct maint_target mixed[] = {{"api", "eu-west", &none, &held},
                                   {"api", "us", &pinned, &pinned},
                                   {"web", "eu-west", &none, &deep}};
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_CLOCK, mixed, 3, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db started: drain api/eu-west until "
                          "2026-11-28T04:00:00Z (CHG-1234); api/us stays up by its own override "
                          "(pinned); web/eu-west is now down under maintenance deep (r, until "
                          "2026-11-28T03:00:00Z)");
    struct maint_target outside[] = {{"web", "sa", &outer, &outer}};
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_CLOCK, outside, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt,
                     "maintenance eu-west-db started until 2026-11-28T04:00:00Z (CHG-1234); "
                     "web/sa stays drain under maintenance outer (until 2026-11-28T05:00:00Z)");

    /* ends: the regions left to their checks first, then the others */
    struct maint_target ended[] = {{"api", "eu-west", &held, &none},
                                   {"api", "us", &pinned, &pinned},
                                   {"web", "eu-west", &held, &none},
                                   {"web", "sa", &held, &outer},
                                   {"web", "gone", &held, NULL}};
    maint_text_window(&w, MAINT_WINDOW_ENDED, SCHED_OVER, MAINT_BY_CLOCK, ended, 4, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db ended: CHG-1234; api/eu-west, web/eu-west are "
                          "now auto; api/us stays up by its own override (pinned); web/sa stays "
                          "drain under maintenance outer (until 2026-11-28T05:00:00Z)");
    maint_text_window(&w, MAINT_WINDOW_ENDED, SCHED_OVER, MAINT_BY_CLOCK, ended, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db ended: CHG-1234; api/eu-west is now auto");
    maint_text_window(&w, MAINT_WINDOW_ENDED, SCHED_PENDING, MAINT_BY_CLOCK_BACK, ended + 3, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db is pending again (the wall clock moved back): "
                          "CHG-1234; web/sa stays drain under maintenance outer (until "
                          "2026-11-28T05:00:00Z)");
    maint_text_window(&w, MAINT_WINDOW_ENDED, SCHED_OVER, MAINT_BY_RELOAD, ended + 4, 1, txt,
                      sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db ended (config reloaded): CHG-1234; web/gone is "
                          "no longer in the config");
    /* a jump over the whole window */
    maint_text_window(&w, MAINT_WINDOW_MOVED, SCHED_OVER, MAINT_BY_CLOCK, t, 2, txt, sizeof(txt));
    ck_assert_str_eq(txt, "maintenance eu-west-db is over now (the wall clock moved): api/eu-west, "
                          "web/eu-west (CHG-1234)");
    /* a text longer than its buffer is cut, and says so */
    char small[24];
    maint_text_window(&w, MAINT_WINDOW_STARTED, SCHED_ACTIVE, MAINT_BY_CLOCK, t, 2, small,
                      sizeof(small));
    ck_assert_str_eq(small, "maintenance eu-west-...");
    /* and never inside a character: "é" is two bytes, the second would be
     * where the mark starts */
    const struct sched_region e = {.state = REGION_DRAIN,
                                   .source = SCHED_SOURCE_WINDOW,
                                   .window = "w",
                                   .reason = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"};
    char cut[34];
    maint_text_source(&e, cut, sizeof(cut));
    ck_assert_str_eq(cut, "drain under maintenance w (\xc3\xa9...");
    maint_text_source(&e, cut, sizeof(cut) - 1);
    ck_assert_str_eq(cut, "drain under maintenance w (\xc3\xa9...");
    /* nothing is appended after the mark */
    const struct sched_region f = {.state = REGION_DRAIN,
                                   .source = SCHED_SOURCE_WINDOW,
                                   .window = "\xc3\xa9\xc3\xa9",
                                   .reason = "r"};
    maint_text_source(&f, cut, 29);
    ck_assert_str_eq(cut, "drain under maintenance ...");
}
END_TEST

START_TEST(test_names)
{
    ck_assert_str_eq(sched_source_name(SCHED_SOURCE_NONE), "none");
    ck_assert_str_eq(sched_source_name(SCHED_SOURCE_CONFIG), "config");
    ck_assert_str_eq(sched_source_name(SCHED_SOURCE_WINDOW), "maintenance");
    ck_assert_str_eq(sched_phase_name(SCHED_PENDING), "pending");
    ck_assert_str_eq(sched_phase_name(SCHED_ACTIVE), "active");
    ck_assert_str_eq(sched_phase_name(SCHED_OVER), "over");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("time");
    tcase_add_test(tc, test_parse_valid);
    tcase_add_test(tc, test_parse_rejects);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("eval");
    tcase_add_test(tc, test_nothing);
    tcase_add_test(tc, test_override);
    tcase_add_test(tc, test_until_past);
    tcase_add_test(tc, test_epoch_is_an_instant);
    tcase_add_test(tc, test_phases);
    tcase_add_test(tc, test_back_to_back);
    tcase_add_test(tc, test_override_ends_inside_window);
    tcase_add_test(tc, test_override_ends_as_window_starts);
    tcase_add_test(tc, test_override_beats_window);
    tcase_add_test(tc, test_overlapping);
    tcase_add_test(tc, test_clock_jumps);
    tcase_add_test(tc, test_stray_targets);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("steps");
    tcase_add_test(tc, test_applies);
    tcase_add_test(tc, test_handover_notes);
    tcase_add_test(tc, test_nested_notes);
    tcase_add_test(tc, test_reload_notes);
    suite_add_tcase(s, tc);
    tc = tcase_create("text");
    tcase_add_test(tc, test_text_source);
    tcase_add_test(tc, test_text_clock_events);
    tcase_add_test(tc, test_text_override_lines);
    tcase_add_test(tc, test_text_reload_events);
    tcase_add_test(tc, test_text_windows);
    suite_add_tcase(s, tc);
    return s;
}
