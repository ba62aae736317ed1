/* The reloader (control/reload.c): a load runs on its own thread while the
 * main loop goes on; a load past its deadline is abandoned as failed and
 * its late result dropped; a reload asked for during a load follows it;
 * too many stuck loads refuse further reloads. The load function is the
 * test's own: it blocks until the test lets it go. */
#include <check.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "control/reload.h"
#include "unit.h"

static const char *const YAML = "listen: [\"127.0.0.1:1\"]\n"
                                "pools:\n"
                                "  - name: p\n"
                                "    regions: [{name: r, url: \"https://r.example\"}]\n";

/* ---- a load that waits for the test ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned released;        /* loads allowed to finish */
static _Atomic unsigned started; /* loads that began */
static _Atomic unsigned ended;   /* loads that returned */
static bool fail_load;

static struct config *gated_load(const char *path, struct diag *d)
{
    unsigned me = atomic_fetch_add(&started, 1);
    pthread_mutex_lock(&mu);
    while (released <= me) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    struct config *c = NULL;
    if (fail_load)
        diag_add(d, 3, 7, "a mistake in %s", path);
    else
        c = config_parse(path, YAML, strlen(YAML), d);
    atomic_fetch_add(&ended, 1);
    return c;
}

static void release(unsigned n)
{
    pthread_mutex_lock(&mu);
    released += n;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* ---- the main side ---- */

struct seen {
    unsigned starts, dones, ok;
    char err[256];
    size_t nerr;
    struct event_base *base;
};

static const char *starting(void *arg)
{
    struct seen *s = arg;
    s->starts++;
    return NULL;
}

static void done(void *arg, struct reload_result *r)
{
    struct seen *s = arg;
    s->dones++;
    if (r->cfg) {
        s->ok++;
        config_unref(r->cfg);
        r->cfg = NULL;
    }
    snprintf(s->err, sizeof(s->err), "%s", r->err);
    s->nerr = r->dg.n;
    event_base_loopbreak(s->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop for at most ms, or until done() breaks it. */
static void run_for(struct seen *s, unsigned ms)
{
    struct event *t = evtimer_new(s->base, on_deadline, s->base);
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(t, &tv);
    event_base_dispatch(s->base);
    event_free(t);
}

/* Runs the loop until done() ran `want` times in all (bounded: 10 s). */
static void run_until(struct seen *s, unsigned want)
{
    for (int i = 0; i < 1000 && s->dones < want; i++) run_for(s, 10);
}

/* Waits until every loader thread is over (their loads, and their
 * bookkeeping after them). */
static void drain(struct seen *s)
{
    for (int i = 0; i < 1000 && (atomic_load(&ended) < atomic_load(&started) || reloader_stuck());
         i++)
        run_for(s, 10);
    ck_assert_uint_eq(reloader_stuck(), 0);
}

/* Each test starts with no load running (without fork mode, tests share
 * this process). */
static void reset(void)
{
    struct seen s = {.base = event_base_new()};
    release(1000);
    drain(&s);
    event_base_free(s.base);
    pthread_mutex_lock(&mu);
    released = atomic_load(&started);
    pthread_mutex_unlock(&mu);
    fail_load = false;
}

START_TEST(test_load_on_its_own_thread)
{
    reset();
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {.load = gated_load, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    ck_assert(rl);
    ck_assert(reloader_request(rl));
    ck_assert_uint_eq(s.starts, 1);
    /* the loop runs while the load waits */
    run_for(&s, 50);
    ck_assert(reloader_busy(rl));
    ck_assert_uint_eq(s.dones, 0);
    release(1);
    run_until(&s, 1);
    ck_assert_uint_eq(s.dones, 1);
    ck_assert_uint_eq(s.ok, 1);
    ck_assert(!reloader_busy(rl));
    reloader_free(rl);
    event_base_free(s.base);
}
END_TEST

START_TEST(test_failed_load_reports_errors)
{
    reset();
    fail_load = true;
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {.load = gated_load, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    release(1);
    ck_assert(reloader_request(rl));
    run_until(&s, 1);
    ck_assert_uint_eq(s.ok, 0);
    ck_assert_uint_eq(s.nerr, 1);
    ck_assert_str_eq(s.err, "");
    reloader_free(rl);
    event_base_free(s.base);
}
END_TEST

START_TEST(test_deadline_abandons_and_drops_the_late_result)
{
    reset();
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {
        .load = gated_load, .timeout_ms = 200, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    ck_assert(reloader_request(rl));
    run_until(&s, 1);
    ck_assert_uint_eq(s.dones, 1);
    ck_assert_uint_eq(s.ok, 0);
    ck_assert_msg(strstr(s.err, "still loading after 0.2 s: abandoned"), "%s", s.err);
    ck_assert(!reloader_busy(rl));
    /* the next reload runs although the abandoned load still hangs */
    unsigned before = atomic_load(&started);
    ck_assert(reloader_request(rl));
    while (atomic_load(&started) == before) run_for(&s, 10);
    release(2); /* the abandoned one and the new one */
    run_until(&s, 2);
    ck_assert_uint_eq(s.dones, 2);
    ck_assert_uint_eq(s.ok, 1);
    /* the abandoned load ended too, and its result never reached done() */
    drain(&s);
    run_for(&s, 50);
    ck_assert_uint_eq(s.dones, 2);
    reloader_free(rl);
    event_base_free(s.base);
}
END_TEST

START_TEST(test_request_during_a_load_follows_it)
{
    reset();
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {.load = gated_load, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    ck_assert(reloader_request(rl));
    ck_assert(reloader_request(rl)); /* queued */
    ck_assert(reloader_request(rl)); /* the same one: one more load, not two */
    ck_assert_uint_eq(s.starts, 1);
    release(1);
    run_until(&s, 1);
    ck_assert_uint_eq(s.starts, 2); /* the queued one started after the first was done */
    release(1);
    run_until(&s, 2);
    run_for(&s, 50);
    ck_assert_uint_eq(s.starts, 2);
    ck_assert_uint_eq(s.dones, 2);
    ck_assert_uint_eq(s.ok, 2);
    reloader_free(rl);
    event_base_free(s.base);
}
END_TEST

START_TEST(test_too_many_stuck_loads_refuse)
{
    reset();
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {
        .load = gated_load, .timeout_ms = 50, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    for (unsigned i = 0; i < RELOAD_MAX_STUCK; i++) {
        ck_assert(reloader_request(rl));
        run_until(&s, i + 1);
    }
    ck_assert_uint_eq(s.ok, 0);
    ck_assert(!reloader_request(rl)); /* refused: nothing starts */
    ck_assert_uint_eq(s.starts, RELOAD_MAX_STUCK);
    ck_assert_uint_eq(reloader_stuck(), RELOAD_MAX_STUCK);
    release(RELOAD_MAX_STUCK);
    drain(&s);
    release(1);
    ck_assert(reloader_request(rl)); /* the stuck ones ended: allowed again */
    run_until(&s, RELOAD_MAX_STUCK + 1);
    ck_assert_uint_eq(s.ok, 1);
    reloader_free(rl);
    event_base_free(s.base);
}
END_TEST

START_TEST(test_free_while_loading)
{
    reset();
    struct seen s = {.base = event_base_new()};
    struct reload_hooks h = {.load = gated_load, .starting = starting, .done = done};
    struct reloader *rl = reloader_new(s.base, "test.yaml", &h, &s);
    ck_assert(reloader_request(rl));
    reloader_free(rl); /* the load is abandoned; its thread ends on its own */
    release(1);
    drain(&s);
    ck_assert_uint_eq(s.dones, 0);
    event_base_free(s.base);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = tcase_create("reloader");
    tcase_add_test(tc, test_load_on_its_own_thread);
    tcase_add_test(tc, test_failed_load_reports_errors);
    tcase_add_test(tc, test_deadline_abandons_and_drops_the_late_result);
    tcase_add_test(tc, test_request_during_a_load_follows_it);
    tcase_add_test(tc, test_too_many_stuck_loads_refuse);
    tcase_add_test(tc, test_free_while_loading);
    suite_add_tcase(s, tc);
    return s;
}
