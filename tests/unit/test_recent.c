#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>

#include "admin/recent.h"
#include "unit.h"

#define S    1000 /* ms */
#define TICK (RECENT_TICK_S * S)

/* requests of pool/region over the window ending at now_ms, its counter
 * being count then */
static uint64_t over(const struct recent *r, uint64_t now_ms, const char *pool, const char *region,
                     uint64_t count)
{
    struct recent_window w = recent_window(r, now_ms);
    return count - recent_base(r, &w, pool, region);
}

/* one sample at now_ms of the regions api/eu and api/us */
static void sample2(struct recent *r, uint64_t now_ms, uint64_t eu, uint64_t us)
{
    ck_assert(recent_put(r, "api", "eu", eu));
    ck_assert(recent_put(r, "api", "us", us));
    recent_commit(r, now_ms);
}

START_TEST(since_start_for_the_first_minute)
{
    struct recent *r = recent_new(100 * S);
    ck_assert_ptr_nonnull(r);
    struct recent_window w = recent_window(r, 100 * S);
    ck_assert_int_eq(w.slot, -1);
    ck_assert_uint_eq(w.since_ms, 100 * S);
    sample2(r, 100 * S, 0, 0);
    for (uint64_t t = 100 * S + TICK, n = 1; t < 160 * S; t += TICK, n++) sample2(r, t, 10 * n, n);
    /* 59 s after the start: no sample a minute old, so since the start */
    w = recent_window(r, 159 * S);
    ck_assert_int_eq(w.slot, -1);
    ck_assert_uint_eq(w.since_ms, 100 * S);
    ck_assert_uint_eq(over(r, 159 * S, "api", "eu", 115), 115);
    recent_free(r);
}
END_TEST

START_TEST(the_last_minute)
{
    struct recent *r = recent_new(0);
    /* eu gets 10 a tick for 2 min, then nothing (drained); us 1 a tick,
     * then 11 */
    uint64_t eu = 0, us = 0, t = 0;
    for (; t <= 120 * S; t += TICK, eu += 10, us += 1) sample2(r, t, eu, us);
    for (; t <= 200 * S; t += TICK, us += 11) sample2(r, t, eu, us);
    /* the newest sample at least 60 s old is 60 s old */
    struct recent_window w = recent_window(r, 200 * S);
    ck_assert_uint_eq(w.since_ms, 140 * S);
    ck_assert_uint_eq(over(r, 200 * S, "api", "eu", eu), 0);
    ck_assert_uint_eq(over(r, 200 * S, "api", "us", us), 11 * 13);
    /* between samples the window is up to a tick longer */
    w = recent_window(r, 204 * S);
    ck_assert_uint_eq(w.since_ms, 140 * S);
    recent_free(r);
}
END_TEST

START_TEST(regions_of_a_reload)
{
    struct recent *r = recent_new(0);
    uint64_t t = 0;
    for (; t <= 100 * S; t += TICK) sample2(r, t, t / S, 0);
    /* a reload removes us and adds ap: ap counts from 0, us is forgotten */
    for (; t <= 200 * S; t += TICK) {
        ck_assert(recent_put(r, "api", "eu", t / S));
        ck_assert(recent_put(r, "api", "ap", t / S - 100));
        recent_commit(r, t);
        if (t == 130 * S) /* ap is new: counted since it appeared */
            ck_assert_uint_eq(over(r, t, "api", "ap", 30), 30);
    }
    ck_assert_uint_eq(over(r, 200 * S, "api", "eu", 200), 60);
    ck_assert_uint_eq(over(r, 200 * S, "api", "ap", 100), 60);
    /* us left the ring: back now, it is new (its lasting total counts) */
    ck_assert_uint_eq(over(r, 200 * S, "api", "us", 7), 7);
    recent_free(r);
}
END_TEST

START_TEST(many_regions)
{
    struct recent *r = recent_new(0);
    char pool[32], region[32];
    for (uint64_t t = 0; t <= 70 * S; t += TICK) {
        for (int i = 0; i < 500; i++) {
            snprintf(pool, sizeof(pool), "p%d", i / 3);
            snprintf(region, sizeof(region), "r%d", i % 3);
            ck_assert(recent_put(r, pool, region, t / S * (uint64_t)i));
        }
        recent_commit(r, t);
    }
    struct recent_window w = recent_window(r, 70 * S);
    ck_assert_uint_eq(w.since_ms, 10 * S);
    for (int i = 0; i < 500; i++) {
        snprintf(pool, sizeof(pool), "p%d", i / 3);
        snprintf(region, sizeof(region), "r%d", i % 3);
        ck_assert_uint_eq(recent_base(r, &w, pool, region), 10 * (uint64_t)i);
    }
    recent_free(r);
}
END_TEST

START_TEST(late_samples)
{
    struct recent *r = recent_new(0);
    uint64_t t = 0;
    for (; t <= 300 * S; t += TICK) sample2(r, t, t / S, 0);
    /* the loop stalled: samples every second for a while, none a minute
     * old left in the ring; the oldest one it holds */
    for (t = 400 * S; t < 400 * S + RECENT_SLOTS * S; t += S) sample2(r, t, t / S, 0);
    struct recent_window w = recent_window(r, t);
    ck_assert_uint_eq(w.since_ms, 400 * S);
    ck_assert_uint_eq(over(r, t, "api", "eu", t / S), t / S - 400);
    recent_free(r);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("recent");
    TCase *tc = tcase_create("window");
    tcase_add_test(tc, since_start_for_the_first_minute);
    tcase_add_test(tc, the_last_minute);
    tcase_add_test(tc, regions_of_a_reload);
    tcase_add_test(tc, many_regions);
    tcase_add_test(tc, late_samples);
    suite_add_tcase(s, tc);
    return s;
}
