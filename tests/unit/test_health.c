#include "autoconf.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "control/config.h"
#include "lib/diag.h"
#include "control/health.h"
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

/* ---- the live part: reloads keep each region's schedule ---- */

/* A loopback TCP socket bound to a free port; listening or not. */
static int loopback_socket(bool listening, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    if (listening) ck_assert_int_eq(listen(fd, 8), 0);
    return fd;
}

static struct config *live_config(unsigned hang_port, unsigned dead_port, const char *dead_path)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "listen: [\"127.0.0.1:8080\"]\n"
             "checks: {interval: 3s, fast_interval: 3s, down_interval: 3s, timeout: 600ms,"
             " rise: 2, fall: 3, jitter: 0%%}\n"
             "pools:\n"
             "  - name: api\n"
             "    regions:\n"
             "      - {name: hang, url: \"http://127.0.0.1:%u\"}\n"
             "      - name: dead\n"
             "        url: \"http://127.0.0.1:%u\"\n"
             "        check: {url: \"http://127.0.0.1:%u%s\"}\n",
             hang_port, dead_port, dead_port, dead_path);
    struct diag d;
    diag_init(&d, "live.yaml");
    struct config *c = config_parse("live.yaml", yaml, strlen(yaml), &d);
    diag_free(&d);
    ck_assert_msg(c != NULL, "config rejected");
    return c;
}

static const struct health *record(const struct health_ctl *hc, const char *region)
{
    for (size_t i = 0; i < health_count(hc); i++)
        if (strcmp(health_at(hc, i)->region->name, region) == 0) return health_at(hc, i);
    ck_abort_msg("no health record for %s", region);
    return NULL;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop until the region has `probes` results (bounded). */
static void run_until_probes(struct event_base *base, const struct health_ctl *hc,
                             const char *region, uint64_t probes, double secs)
{
    double end = mono_s() + secs;
    while (record(hc, region)->probes < probes) {
        ck_assert_msg(mono_s() < end, "%s: no probe result within %.1f s", region, secs);
        struct timeval tick = {0, 20000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

START_TEST(test_reload_keeps_schedule_and_probe)
{
    unsigned hang_port, dead_port;
    int hang_fd = loopback_socket(true, &hang_port);  /* connects, never answers */
    int dead_fd = loopback_socket(false, &dead_port); /* bound, not listening: refused */
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    struct config *c1 = live_config(hang_port, dead_port, "/");
    struct health_ctl *hc = health_start(base, c1, NULL, NULL);
    ck_assert_ptr_nonnull(hc);

    /* both probe at once: dead is refused, hang waits for its timeout */
    run_until_probes(base, hc, "dead", 1, 5);
    const struct health *dead = record(hc, "dead");
    const struct health *hang = record(hc, "hang");
    ck_assert_uint_eq(dead->last.reason, HR_CONNECT_REFUSED);
    uint64_t due = dead->due_ms;
    ck_assert_uint_ne(due, 0);
    ck_assert_ptr_nonnull(hang->probe);
    ck_assert_uint_eq(hang->probes, 0);
    const struct probe *in_flight = hang->probe;

    /* reloads of the same file keep the next probe's time and the probe in
     * flight: however frequent, they never delay a check */
    struct config *c2 = live_config(hang_port, dead_port, "/");
    ck_assert(health_reload(hc, c2));
    struct config *c3 = live_config(hang_port, dead_port, "/");
    ck_assert(health_reload(hc, c3));
    dead = record(hc, "dead");
    hang = record(hc, "hang");
    ck_assert_ptr_eq(dead->region, &c3->pools[0].regions[1]);
    ck_assert_uint_eq(dead->due_ms, due);
    ck_assert_uint_eq(dead->probes, 1);
    ck_assert_uint_eq(dead->st.fail, 1);
    ck_assert_ptr_eq(hang->probe, in_flight);

    /* the carried probe reports to the new record */
    run_until_probes(base, hc, "hang", 1, 5);
    hang = record(hc, "hang");
    ck_assert_uint_eq(hang->last.reason, HR_TIMEOUT);
    ck_assert_ptr_null(hang->probe);
    ck_assert_uint_ne(hang->due_ms, 0);
    ck_assert_uint_eq(record(hc, "dead")->probes, 1); /* not due yet */

    /* a changed check starts over and probes at once */
    struct config *c4 = live_config(hang_port, dead_port, "/other");
    ck_assert(health_reload(hc, c4));
    ck_assert_uint_eq(record(hc, "dead")->probes, 0);
    ck_assert_uint_eq(record(hc, "hang")->probes, 1);
    run_until_probes(base, hc, "dead", 1, 5);

    health_stop(hc);
    config_unref(c1);
    config_unref(c2);
    config_unref(c3);
    config_unref(c4);
    event_base_free(base);
    close(hang_fd);
    close(dead_fd);
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
    TCase *tl = tcase_create("reload");
    tcase_set_timeout(tl, 30);
    tcase_add_test(tl, test_reload_keeps_schedule_and_probe);
    suite_add_tcase(s, tl);
    return s;
}
