/* The exec sink: the command's environment (pure), and the sink itself on a
 * real event loop with real children (/bin/sh, /bin/sleep). */
#include "autoconf.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/config.h"
#include "events/events.h"
#include "events/events_config.h"
#include "events/sink_exec.h"
#include "unit.h"

/* 2026-11-27T15:24:44.663Z */
#define T0 INT64_C(1795793084663)

static size_t env_len(char **env)
{
    size_t n = 0;
    while (env[n]) n++;
    return n;
}

static bool env_has(char **env, const char *entry)
{
    for (size_t i = 0; env[i]; i++)
        if (strcmp(env[i], entry) == 0) return true;
    return false;
}

static bool env_names(char **env, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], name, n) == 0 && env[i][n] == '=') return true;
    return false;
}

START_TEST(test_env_absent_fields_unset)
{
    char *base[] = {"PATH=/usr/bin:/bin",   "DETOURD_POOL=stale", "DETOURD_POOLS=kept",
                    "DETOURD_EVENT_ID=old", "HOME=/root",         NULL};
    struct event_rec *ev = event_make(EVENT_RELOAD, 3, "00ff", T0, "edge-1", NULL, NULL, NULL, "ok",
                                      "reloaded c.yaml");
    ck_assert_ptr_nonnull(ev);
    char **env = sink_exec_env(base, ev);
    ck_assert_ptr_nonnull(env);
    ck_assert(env_has(env, "PATH=/usr/bin:/bin"));
    ck_assert(env_has(env, "HOME=/root"));
    ck_assert(env_has(env, "DETOURD_POOLS=kept")); /* not one of ours */
    ck_assert(env_has(env, "DETOURD_EVENT_ID=00ff-3"));
    ck_assert(!env_has(env, "DETOURD_EVENT_ID=old"));
    ck_assert(env_has(env, "DETOURD_EVENT_KIND=reload"));
    ck_assert(env_has(env, "DETOURD_TO=ok"));
    ck_assert(env_has(env, "DETOURD_REASON=reloaded c.yaml"));
    ck_assert(env_has(env, "DETOURD_TIME=2026-11-27T15:24:44.663Z"));
    ck_assert(!env_names(env, "DETOURD_POOL")); /* absent: unset, the stale one too */
    ck_assert(!env_names(env, "DETOURD_REGION"));
    ck_assert(!env_names(env, "DETOURD_FROM"));
    ck_assert_uint_eq(env_len(env), 3 + 5);
    sink_exec_env_free(env);
    event_unref(ev);
}
END_TEST

START_TEST(test_env_all_fields)
{
    struct event_rec *ev = event_make(EVENT_REGION_STATE, 17, "ab", T0, "edge-1", "api", "eu-west",
                                      "up", "down", "3 failures: connect: refused");
    ck_assert_ptr_nonnull(ev);
    char **env = sink_exec_env(NULL, ev);
    ck_assert_ptr_nonnull(env);
    ck_assert_uint_eq(env_len(env), 8);
    ck_assert(env_has(env, "DETOURD_EVENT_ID=ab-17"));
    ck_assert(env_has(env, "DETOURD_EVENT_KIND=region_state"));
    ck_assert(env_has(env, "DETOURD_POOL=api"));
    ck_assert(env_has(env, "DETOURD_REGION=eu-west"));
    ck_assert(env_has(env, "DETOURD_FROM=up"));
    ck_assert(env_has(env, "DETOURD_TO=down"));
    ck_assert(env_has(env, "DETOURD_REASON=3 failures: connect: refused"));
    ck_assert(env_has(env, "DETOURD_TIME=2026-11-27T15:24:44.663Z"));
    sink_exec_env_free(env);
    event_unref(ev);
}
END_TEST

START_TEST(test_env_long_value_cut_at_a_character)
{
    size_t big = 40 * 1024;
    char *reason = malloc(big + 1);
    ck_assert_ptr_nonnull(reason);
    memset(reason, 'x', big);
    memcpy(reason + 32 * 1024 - 1, "\xc3\xa9", 2); /* an é across the 32 KiB mark */
    reason[big] = '\0';
    struct event_rec *ev =
        event_make(EVENT_RELOAD, 1, "ab", T0, "edge-1", reason, NULL, NULL, "failed", "x");
    ck_assert_ptr_nonnull(ev); /* a long pool name: reasons are cut at 1 KB by events.c */
    char **env = sink_exec_env(NULL, ev);
    ck_assert_ptr_nonnull(env);
    const char *v = NULL;
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], "DETOURD_POOL=", 13) == 0) v = env[i] + 13;
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(strlen(v), 32 * 1024 - 1); /* the é is left out whole */
    ck_assert_str_eq(ev->pool, reason);          /* the JSON is whole */
    sink_exec_env_free(env);
    event_unref(ev);
    free(reason);
}
END_TEST

/* ---- the sink on a loop ---- */

struct rig {
    struct event_base *base;
    struct event *tick;
    struct events *hub;
    struct sink_exec *s;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static void rig_init(struct rig *r, char **argv, size_t argc, uint64_t timeout_ms)
{
    r->base = event_base_new();
    ck_assert_ptr_nonnull(r->base);
    r->tick = event_new(r->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10 * 1000};
    event_add(r->tick, &tv); /* EVLOOP_ONCE returns at least every 10 ms */
    r->hub = events_new("test");
    r->s = sink_exec_new(r->base, r->hub);
    ck_assert_ptr_nonnull(r->s);
    struct events_cfg cfg = {.exec_argv = argv, .exec_argc = argc, .exec_timeout_ms = timeout_ms};
    sink_exec_config(r->s, &cfg);
    ck_assert_ptr_nonnull(events_sinks(r->hub));
}

static void rig_free(struct rig *r)
{
    sink_exec_free(r->s);
    events_free(r->hub);
    event_free(r->tick);
    event_base_free(r->base);
}

static const struct event_sink *sink(const struct rig *r)
{
    return events_sinks(r->hub);
}

static void emit(struct rig *r, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_ptr_nonnull(
            events_emit_at(r->hub, T0, EVENT_RELOAD, NULL, NULL, NULL, "ok", "test"));
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until delivered + failed reach n (at most 10 s). */
static void run_until_done(struct rig *r, uint64_t n)
{
    int64_t end = mono_ms() + 10 * 1000;
    while (sink(r)->delivered + sink(r)->failed < n && mono_ms() < end)
        event_base_loop(r->base, EVLOOP_ONCE);
}

START_TEST(test_runs_each_event)
{
    char *argv[] = {"/bin/sh", "-c",
                    "read -r line && case $line in *\"$DETOURD_EVENT_ID\"*) ;; "
                    "*) exit 1;; esac",
                    NULL};
    struct rig r;
    rig_init(&r, argv, 3, 5000);
    emit(&r, 3);
    run_until_done(&r, 3);
    ck_assert_uint_eq(sink(&r)->delivered, 3);
    ck_assert_uint_eq(sink(&r)->failed, 0);
    ck_assert_uint_eq(sink(&r)->q.len, 0);
    rig_free(&r);
}
END_TEST

START_TEST(test_exit_status_fails)
{
    char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
    struct rig r;
    rig_init(&r, argv, 3, 5000);
    emit(&r, 2);
    run_until_done(&r, 2);
    ck_assert_uint_eq(sink(&r)->delivered, 0);
    ck_assert_uint_eq(sink(&r)->failed, 2);
    rig_free(&r);
}
END_TEST

START_TEST(test_spawn_failure)
{
    char *argv[] = {"/nonexistent/notify", NULL};
    struct rig r;
    rig_init(&r, argv, 1, 5000);
    emit(&r, 2);
    run_until_done(&r, 2);
    ck_assert_uint_eq(sink(&r)->failed, 2);
    ck_assert_uint_eq(sink(&r)->q.len, 0);
    rig_free(&r);
}
END_TEST

START_TEST(test_timeout_kills)
{
    char *argv[] = {"/bin/sleep", "30", NULL};
    struct rig r;
    rig_init(&r, argv, 2, 200);
    int64_t t0 = mono_ms();
    emit(&r, 1);
    run_until_done(&r, 1);
    int64_t ms = mono_ms() - t0;
    ck_assert_uint_eq(sink(&r)->failed, 1);
    ck_assert_int_ge(ms, 150); /* the loop's clock is coarse */
    ck_assert_int_lt(ms, 5000);
    rig_free(&r);
}
END_TEST

START_TEST(test_full_queue_drops_the_running_one_once)
{
    char *argv[] = {"/bin/sleep", "30", NULL};
    struct rig r;
    rig_init(&r, argv, 2, 300);
    emit(&r, 1);
    for (int i = 0; i < 5; i++) event_base_loop(r.base, EVLOOP_ONCE); /* started */
    ck_assert_uint_eq(sink(&r)->q.len, 1);                            /* in progress counts */
    emit(&r, EVENTS_QUEUE_MAX); /* the last push drops the running one */
    ck_assert_uint_eq(sink(&r)->dropped, 1);
    ck_assert_uint_eq(sink(&r)->q.len, EVENTS_QUEUE_MAX);
    /* the dropped one times out (counted once: dropped), then the next one */
    run_until_done(&r, 1);
    ck_assert_uint_eq(sink(&r)->failed, 1);
    ck_assert_uint_eq(sink(&r)->q.len, EVENTS_QUEUE_MAX - 1);
    ck_assert_uint_eq(sink(&r)->dropped, 1);
    int64_t t0 = mono_ms();
    rig_free(&r); /* kills the third one's sleep at once */
    ck_assert_int_lt(mono_ms() - t0, 1000);
}
END_TEST

/* An event larger than a pipe's buffer: written through the write event as
 * the command reads, all of it. */
START_TEST(test_large_event_written_in_full)
{
    size_t big = 256 * 1024;
    char *reason = malloc(big + 1);
    ck_assert_ptr_nonnull(reason);
    memset(reason, 'x', big);
    reason[big] = '\0';
    char want[32];
    struct event_rec *ev = event_make(EVENT_RELOAD, 1, "0123456789abcdef", T0, "test", reason, NULL,
                                      NULL, "failed", "x"); /* the hub's ids: 16 hex digits */
    ck_assert_ptr_nonnull(ev);
    snprintf(want, sizeof(want), "%zu", ev->json_len + 1);
    event_unref(ev);
    char *argv[] = {
        "/bin/sh", "-c", "sleep 0.2; [ \"$(wc -c)\" -eq \"$1\" ] && [ ${#DETOURD_POOL} -eq 32768 ]",
        "sh",      want, NULL};
    struct rig r;
    rig_init(&r, argv, 5, 5000);
    ck_assert_ptr_nonnull(
        events_emit_at(r.hub, T0, EVENT_RELOAD, reason, NULL, NULL, "failed", "x"));
    free(reason);
    run_until_done(&r, 1);
    ck_assert_uint_eq(sink(&r)->delivered, 1);
    rig_free(&r);
}
END_TEST

/* A command that never reads a large event: the loop goes on (this test
 * runs it) and the timeout ends it. */
START_TEST(test_large_event_never_read)
{
    size_t big = 256 * 1024;
    char *reason = malloc(big + 1);
    ck_assert_ptr_nonnull(reason);
    memset(reason, 'y', big);
    reason[big] = '\0';
    char *argv[] = {"/bin/sleep", "30", NULL};
    struct rig r;
    rig_init(&r, argv, 2, 300);
    int64_t t0 = mono_ms();
    ck_assert_ptr_nonnull(
        events_emit_at(r.hub, T0, EVENT_RELOAD, reason, NULL, NULL, "failed", "x"));
    free(reason);
    emit(&r, 1);
    run_until_done(&r, 2);
    ck_assert_int_lt(mono_ms() - t0, 5000);
    ck_assert_uint_eq(sink(&r)->failed, 2);
    rig_free(&r);
}
END_TEST

START_TEST(test_removed_drops_queued_running_finishes)
{
    char *argv[] = {"/bin/sh", "-c", "sleep 0.3", NULL};
    struct rig r;
    rig_init(&r, argv, 3, 5000);
    emit(&r, 3);
    for (int i = 0; i < 5; i++) event_base_loop(r.base, EVLOOP_ONCE);
    const struct event_sink *es = sink(&r);
    ck_assert_uint_eq(es->q.len, 3);
    struct events_cfg none = {0};
    sink_exec_config(r.s, &none);
    ck_assert_ptr_null(events_sinks(r.hub));
    ck_assert_uint_eq(es->dropped, 2); /* the queued ones */
    ck_assert_uint_eq(es->q.len, 0);
    int64_t end = mono_ms() + 10 * 1000;
    while (es->delivered == 0 && mono_ms() < end) event_base_loop(r.base, EVLOOP_ONCE);
    ck_assert_uint_eq(es->delivered, 1); /* the running one finished */
    ck_assert_uint_eq(es->failed, 0);
    rig_free(&r);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("sink_exec");
    TCase *tc = tcase_create("env");
    tcase_add_test(tc, test_env_absent_fields_unset);
    tcase_add_test(tc, test_env_all_fields);
    tcase_add_test(tc, test_env_long_value_cut_at_a_character);
    suite_add_tcase(s, tc);
    tc = tcase_create("run");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_runs_each_event);
    tcase_add_test(tc, test_exit_status_fails);
    tcase_add_test(tc, test_spawn_failure);
    tcase_add_test(tc, test_timeout_kills);
    tcase_add_test(tc, test_full_queue_drops_the_running_one_once);
    tcase_add_test(tc, test_removed_drops_queued_running_finishes);
    tcase_add_test(tc, test_large_event_written_in_full);
    tcase_add_test(tc, test_large_event_never_read);
    suite_add_tcase(s, tc);
    return s;
}
