#include "autoconf.h"

#include <string.h>

#include "health.h"
#include "unit.h"

static struct check_cfg cfg(unsigned rise, unsigned fall, bool initial_up)
{
    struct check_cfg c;
    memset(&c, 0, sizeof(c));
    c.rise = rise;
    c.fall = fall;
    c.initial_up = initial_up;
    c.interval_ms = 2000;
    c.fast_interval_ms = 250;
    c.down_interval_ms = 5000;
    return c;
}

static struct probe_result res(bool ok, double ms)
{
    struct probe_result r;
    memset(&r, 0, sizeof(r));
    r.reason = ok ? HR_OK : HR_CONNECT_REFUSED;
    r.latency_ms = ms;
    return r;
}

/* Feeds a string of results ('+' ok, '-' fail) and returns the states after
 * each one as a string of 'U'/'D'. */
static void run(struct health_state *s, const struct check_cfg *c, const char *seq, char *out)
{
    for (size_t i = 0; seq[i]; i++) {
        struct probe_result r = res(seq[i] == '+', 10);
        health_state_update(s, c, &r);
        out[i] = s->up ? 'U' : 'D';
    }
    out[strlen(seq)] = '\0';
}

START_TEST(test_fall_needs_consecutive_failures)
{
    struct check_cfg c = cfg(2, 3, true);
    struct health_state s;
    health_state_init(&s, &c);
    char out[64];
    run(&s, &c, "--+--+---+", out);
    ck_assert_str_eq(out, "UUUUUUUUDD");
}
END_TEST

START_TEST(test_rise_needs_consecutive_successes)
{
    struct check_cfg c = cfg(3, 1, false);
    struct health_state s;
    health_state_init(&s, &c);
    ck_assert(!s.up);
    char out[64];
    run(&s, &c, "++-++-+++-", out);
    ck_assert_str_eq(out, "DDDDDDDDUD");
}
END_TEST

START_TEST(test_initial_up_then_down_then_back)
{
    struct check_cfg c = cfg(2, 2, true);
    struct health_state s;
    health_state_init(&s, &c);
    char out[64];
    run(&s, &c, "+--+-++", out);
    ck_assert_str_eq(out, "UUDDDDU");
}
END_TEST

START_TEST(test_update_reports_changes_only)
{
    struct check_cfg c = cfg(1, 1, true);
    struct health_state s;
    health_state_init(&s, &c);
    struct probe_result ok = res(true, 5), bad = res(false, 5);
    ck_assert(!health_state_update(&s, &c, &ok));
    ck_assert(health_state_update(&s, &c, &bad));
    ck_assert(!health_state_update(&s, &c, &bad));
    ck_assert(health_state_update(&s, &c, &ok));
}
END_TEST

START_TEST(test_intervals)
{
    struct check_cfg c = cfg(2, 3, true);
    struct health_state s;
    health_state_init(&s, &c);
    ck_assert_uint_eq(health_state_interval(&s, &c), 2000); /* stable up */
    struct probe_result bad = res(false, 1), ok = res(true, 1);
    health_state_update(&s, &c, &bad);
    ck_assert_uint_eq(health_state_interval(&s, &c), 250); /* change pending */
    health_state_update(&s, &c, &bad);
    health_state_update(&s, &c, &bad);
    ck_assert(!s.up);
    ck_assert_uint_eq(health_state_interval(&s, &c), 5000); /* stable down */
    health_state_update(&s, &c, &ok);
    ck_assert_uint_eq(health_state_interval(&s, &c), 250); /* rise pending */
    health_state_update(&s, &c, &ok);
    ck_assert(s.up);
    ck_assert_uint_eq(health_state_interval(&s, &c), 2000);
}
END_TEST

START_TEST(test_jitter_bounds)
{
    ck_assert_uint_eq(health_jitter(1000, 0, 0.7), 1000);
    ck_assert_uint_eq(health_jitter(1000, 10, 0.0), 900);
    ck_assert_uint_eq(health_jitter(1000, 10, 0.5), 1000);
    ck_assert_uint_le(health_jitter(1000, 10, 0.9999), 1100);
    ck_assert_uint_ge(health_jitter(1000, 10, 0.9999), 1099);
}
END_TEST

START_TEST(test_latency_moving_average)
{
    struct check_cfg c = cfg(1, 1, true);
    struct health_state s;
    health_state_init(&s, &c);
    struct probe_result r = res(true, 100);
    health_state_update(&s, &c, &r);
    ck_assert(s.have_latency);
    ck_assert_double_eq_tol(s.latency_ms, 100, 1e-9);
    r = res(true, 200);
    health_state_update(&s, &c, &r);
    ck_assert_double_eq_tol(s.latency_ms, 100 + HEALTH_EWMA_ALPHA * 100, 1e-9);
    /* failures do not move the average */
    r = res(false, 5000);
    health_state_update(&s, &c, &r);
    ck_assert_double_eq_tol(s.latency_ms, 100 + HEALTH_EWMA_ALPHA * 100, 1e-9);
}
END_TEST

START_TEST(test_reason_names)
{
    ck_assert_str_eq(health_reason_name(HR_CONNECT_REFUSED), "connect refused");
    ck_assert_str_eq(health_reason_label(HR_CONNECT_REFUSED), "connect_refused");
    ck_assert_str_eq(health_reason_name(HR_BODY), "body mismatch");
    for (int i = 0; i < HR_COUNT; i++) {
        ck_assert_ptr_nonnull(health_reason_name((enum health_reason)i));
        ck_assert(strchr(health_reason_label((enum health_reason)i), ' ') == NULL);
    }
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("hysteresis");
    tcase_add_test(tc, test_fall_needs_consecutive_failures);
    tcase_add_test(tc, test_rise_needs_consecutive_successes);
    tcase_add_test(tc, test_initial_up_then_down_then_back);
    tcase_add_test(tc, test_update_reports_changes_only);
    tcase_add_test(tc, test_intervals);
    tcase_add_test(tc, test_jitter_bounds);
    tcase_add_test(tc, test_latency_moving_average);
    tcase_add_test(tc, test_reason_names);
    suite_add_tcase(s, tc);
    return s;
}
