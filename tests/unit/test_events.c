#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "events/events.h"
#include "events/events_config.h"
#include "unit.h"

/* 2026-11-27T15:24:44.663Z */
#define T0 INT64_C(1795793084663)

START_TEST(test_format_all_fields)
{
    struct event_rec *ev =
        event_make(EVENT_REGION_STATE, 17, "00112233aabbccdd", T0, "edge-1", "api", "eu-west", "up",
                   "down", "3 failures: connect: Connection refused");
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(ev->id, "00112233aabbccdd-17");
    ck_assert_str_eq(ev->time, "2026-11-27T15:24:44.663Z");
    ck_assert_str_eq(ev->json,
                     "{\"id\":\"00112233aabbccdd-17\",\"time\":\"2026-11-27T15:24:44.663Z\","
                     "\"kind\":\"region_state\",\"pool\":\"api\",\"region\":\"eu-west\","
                     "\"from\":\"up\",\"to\":\"down\",\"reason\":\"3 failures: connect: "
                     "Connection refused\",\"instance\":\"edge-1\"}");
    ck_assert_uint_eq(ev->json_len, strlen(ev->json));
    event_unref(ev);
}
END_TEST

START_TEST(test_format_absent_and_escaped)
{
    /* a reload: no pool, region or from; quotes, a newline and bad UTF-8 escaped */
    struct event_rec *ev = event_make(EVENT_RELOAD, 1, "ff", 0, "h\"x", NULL, NULL, NULL, "failed",
                                      "c.yaml:1:1: \"bad\"\n\xff");
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(ev->json, "{\"id\":\"ff-1\",\"time\":\"1970-01-01T00:00:00.000Z\","
                               "\"kind\":\"reload\",\"to\":\"failed\",\"reason\":\"c.yaml:1:1: "
                               "\\\"bad\\\"\\n\\ufffd\",\"instance\":\"h\\\"x\"}");
    ck_assert_ptr_null(ev->pool);
    ck_assert_str_eq(ev->to, "failed");
    event_unref(ev);
}
END_TEST

START_TEST(test_reason_cut)
{
    /* 1,500 two-byte characters: cut at a character boundary, ending in U+2026 */
    char big[3001];
    for (int i = 0; i < 1500; i++) memcpy(big + 2 * i, "\xc3\xa9", 2);
    big[3000] = '\0';
    struct event_rec *ev =
        event_make(EVENT_RELOAD, 1, "ab", T0, "h", NULL, NULL, NULL, "failed", big);
    ck_assert_ptr_nonnull(ev);
    size_t n = strlen(ev->reason);
    ck_assert_uint_le(n, EVENT_REASON_MAX);
    ck_assert_uint_ge(n, EVENT_REASON_MAX - 4);
    ck_assert_str_eq(ev->reason + n - 3, "\xe2\x80\xa6");
    ck_assert_int_eq(memcmp(ev->reason, big, n - 3), 0);
    ck_assert_uint_eq((n - 3) % 2, 0); /* no half character */
    ck_assert_ptr_nonnull(strstr(ev->json, "\xe2\x80\xa6\",\"instance\""));
    event_unref(ev);
    /* exactly the limit: kept whole */
    memset(big, 'x', EVENT_REASON_MAX);
    big[EVENT_REASON_MAX] = '\0';
    ev = event_make(EVENT_RELOAD, 1, "ab", T0, "h", NULL, NULL, NULL, "failed", big);
    ck_assert_str_eq(ev->reason, big);
    event_unref(ev);
}
END_TEST

START_TEST(test_kind_names)
{
    ck_assert_str_eq(event_kind_name(EVENT_REGION_STATE), "region_state");
    ck_assert_str_eq(event_kind_name(EVENT_OVERRIDE), "override");
    ck_assert_str_eq(event_kind_name(EVENT_ALL_DOWN), "all_down");
    ck_assert_str_eq(event_kind_name(EVENT_RELOAD), "reload");
}
END_TEST

static struct event_rec *mk(uint64_t seq)
{
    struct event_rec *ev =
        event_make(EVENT_RELOAD, seq, "ab", T0, "h", NULL, NULL, NULL, "ok", "x");
    ck_assert_ptr_nonnull(ev);
    return ev;
}

START_TEST(test_queue_fifo_and_drop_oldest)
{
    struct event_queue q;
    ck_assert(evq_init(&q, 3));
    ck_assert_ptr_null(evq_peek(&q));
    ck_assert_ptr_null(evq_pop(&q));
    struct event_rec *e[5];
    for (int i = 0; i < 5; i++) e[i] = mk((uint64_t)i + 1);
    ck_assert(!evq_push(&q, e[0]));
    ck_assert(!evq_push(&q, e[1]));
    ck_assert(!evq_push(&q, e[2]));
    ck_assert_uint_eq(q.len, 3);
    ck_assert(evq_push(&q, e[3])); /* full: e[0] dropped */
    ck_assert(evq_push(&q, e[4])); /* and e[1] */
    ck_assert_uint_eq(q.len, 3);
    ck_assert_uint_eq(e[0]->refs, 1); /* only the test's reference is left */
    ck_assert_uint_eq(e[2]->refs, 2);
    ck_assert_ptr_eq(evq_peek(&q), e[2]);
    struct event_rec *x = evq_pop(&q);
    ck_assert_ptr_eq(x, e[2]);
    event_unref(x);
    ck_assert_uint_eq(evq_clear(&q), 2);
    ck_assert_uint_eq(q.len, 0);
    evq_free(&q);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(e[i]->refs, 1);
        event_unref(e[i]);
    }
}
END_TEST

START_TEST(test_queue_wraps)
{
    struct event_queue q;
    ck_assert(evq_init(&q, 4));
    uint64_t next = 1, expect = 1;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 3; i++) {
            struct event_rec *ev = mk(next++);
            evq_push(&q, ev);
            event_unref(ev);
        }
        while (q.len > 1) {
            struct event_rec *ev = evq_pop(&q);
            ck_assert_uint_eq(ev->seq, expect++);
            event_unref(ev);
        }
    }
    evq_free(&q);
}
END_TEST

struct sink_log {
    struct event_sink sink;
    unsigned wakes;
};

static void on_wake(void *arg)
{
    ((struct sink_log *)arg)->wakes++;
}

static void collect(void *arg, struct event_rec *ev)
{
    uint64_t *seen = arg;
    seen[seen[0] + 1] = ev->seq;
    seen[0]++;
}

START_TEST(test_hub_ring_sinks_ids)
{
    struct events *e = events_new("edge-1");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(events_instance(e), "edge-1");
    struct sink_log a = {{.name = "exec", .wake = on_wake, .arg = &a}, 0};
    struct sink_log b = {{.name = NULL, .wake = on_wake, .arg = &b}, 0};
    ck_assert(evq_init(&a.sink.q, EVENTS_QUEUE_MAX));
    ck_assert(evq_init(&b.sink.q, 2));
    events_sink_add(e, &a.sink);
    events_sink_add(e, &b.sink);
    events_sink_add(e, &a.sink); /* twice: once */
    unsigned n = 0;
    for (const struct event_sink *s = events_sinks(e); s; s = s->next) n++;
    ck_assert_uint_eq(n, 2);

    struct event_rec *first = NULL;
    for (int i = 0; i < EVENTS_RING + 20; i++) {
        struct event_rec *ev = events_emit_at(e, T0 + i, EVENT_OVERRIDE, "api", "eu", "auto",
                                              "drain", "maintenance w started: CHG-1");
        ck_assert_ptr_nonnull(ev);
        if (!first) first = event_ref(ev);
    }
    ck_assert_uint_eq(events_last_seq(e), EVENTS_RING + 20);
    ck_assert_uint_eq(a.wakes, EVENTS_RING + 20);
    ck_assert_uint_eq(a.sink.q.len, EVENTS_RING + 20);
    ck_assert_uint_eq(a.sink.dropped, 0);
    ck_assert_uint_eq(b.sink.q.len, 2);
    ck_assert_uint_eq(b.sink.dropped, EVENTS_RING + 18);

    /* the ring keeps the last EVENTS_RING, oldest first */
    uint64_t seen[EVENTS_RING + 2] = {0};
    events_replay(e, 0, collect, seen);
    ck_assert_uint_eq(seen[0], EVENTS_RING);
    ck_assert_uint_eq(seen[1], 21);
    ck_assert_uint_eq(seen[EVENTS_RING], EVENTS_RING + 20);
    /* after a given id */
    uint64_t seq = 0;
    char id[64];
    snprintf(id, sizeof(id), "%.*s-%d", (int)(strchr(first->id, '-') - first->id), first->id,
             EVENTS_RING + 15);
    ck_assert(events_parse_id(e, id, &seq));
    ck_assert_uint_eq(seq, EVENTS_RING + 15);
    memset(seen, 0, sizeof(seen));
    events_replay(e, seq, collect, seen);
    ck_assert_uint_eq(seen[0], 5);
    ck_assert_uint_eq(seen[1], EVENTS_RING + 16);
    /* ids of another process, a future seq and junk are not ours */
    ck_assert(!events_parse_id(e, "0000000000000000-3", &seq));
    snprintf(id, sizeof(id), "%.*s-%d", (int)(strchr(first->id, '-') - first->id), first->id,
             EVENTS_RING + 21);
    ck_assert(!events_parse_id(e, id, &seq));
    ck_assert(!events_parse_id(e, first->id + 1, &seq));
    ck_assert(!events_parse_id(e, "", &seq));
    ck_assert(!events_parse_id(e, NULL, &seq));
    snprintf(id, sizeof(id), "%.*s-", (int)(strchr(first->id, '-') - first->id), first->id);
    ck_assert(!events_parse_id(e, id, &seq));
    snprintf(id, sizeof(id), "%.*s-1x", (int)(strchr(first->id, '-') - first->id), first->id);
    ck_assert(!events_parse_id(e, id, &seq));
    snprintf(id, sizeof(id), "%.*s-99999999999999999999999",
             (int)(strchr(first->id, '-') - first->id), first->id);
    ck_assert(!events_parse_id(e, id, &seq));

    /* ids are unique per process: two hubs, two prefixes */
    struct events *e2 = events_new(NULL);
    ck_assert_ptr_nonnull(e2);
    struct event_rec *other = events_emit_at(e2, T0, EVENT_RELOAD, NULL, NULL, NULL, "ok", "x");
    ck_assert_str_ne(other->id, first->id);
    ck_assert(!events_parse_id(e, other->id, &seq));
    events_free(e2);

    events_sink_remove(e, &b.sink);
    events_emit_at(e, T0, EVENT_RELOAD, NULL, NULL, NULL, "ok", "x");
    ck_assert_uint_eq(b.sink.q.len, 2);
    ck_assert_uint_eq(a.sink.q.len, EVENTS_RING + 21);
    event_unref(first);
    evq_free(&b.sink.q);
    events_free(e);
    ck_assert_uint_eq(a.sink.q.len, 0); /* what was queued is dropped with the hub */
    ck_assert_uint_eq(a.sink.dropped, EVENTS_RING + 21);
    evq_free(&a.sink.q);
}
END_TEST

START_TEST(test_emit_without_hub)
{
    events_set_default(NULL);
    event_emit(EVENT_RELOAD, NULL, NULL, NULL, "ok", "nothing happens");
    struct events *e = events_new("h");
    events_set_default(e);
    ck_assert_ptr_eq(events_default(), e);
    event_emit(EVENT_RELOAD, NULL, NULL, NULL, "ok", "x");
    ck_assert_uint_eq(events_last_seq(e), 1);
    events_free(e);
    ck_assert_ptr_null(events_default());
}
END_TEST

static struct config *parse(const char *yaml, struct diag *d)
{
    diag_init(d, "events.yaml");
    return config_parse("events.yaml", yaml, strlen(yaml), d);
}

#define BASE                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "pools:\n"                                                                                     \
    "  - name: api\n"                                                                              \
    "    regions:\n"                                                                               \
    "      - {name: eu, url: \"https://eu.example.net\"}\n"

START_TEST(test_config_events)
{
    struct diag d;
    struct config *c = parse(BASE "events:\n"
                                  "  exec:\n"
                                  "    command: [\"/bin/sh\", \"-c\", \"cat\"]\n"
                                  "    timeout: 3s\n"
                                  "  webhook:\n"
                                  "    url: \"https://Hooks.Example.com:8443/a/b?x=1\"\n"
                                  "    secret: s3cret\n"
                                  "    headers: {Authorization: \"Bearer t\"}\n"
                                  "    timeout: 2s\n"
                                  "    retries: 0\n"
                                  "    tls_verify: false\n",
                             &d);
    if (!c) diag_print(&d, stderr);
    ck_assert_ptr_nonnull(c);
    const struct events_cfg *e = c->events;
    ck_assert_uint_eq(e->exec_argc, 3);
    ck_assert_str_eq(e->exec_argv[0], "/bin/sh");
    ck_assert_str_eq(e->exec_argv[2], "cat");
    ck_assert_ptr_null(e->exec_argv[3]);
    ck_assert_uint_eq(e->exec_timeout_ms, 3000);
    ck_assert_str_eq(e->webhook_host, "hooks.example.com");
    ck_assert_uint_eq(e->webhook_port, 8443);
    ck_assert_str_eq(e->webhook_path, "/a/b?x=1");
    ck_assert(e->webhook_tls);
    ck_assert_str_eq(e->webhook_secret, "s3cret");
    ck_assert_uint_eq(e->nwebhook_headers, 1);
    ck_assert_str_eq(e->webhook_headers[0].name, "Authorization");
    ck_assert_uint_eq(e->webhook_timeout_ms, 2000);
    ck_assert_uint_eq(e->webhook_retries, 0);
    ck_assert(!e->webhook_tls_verify);
    config_unref(c);
    diag_free(&d);

    /* defaults; no events block: no sinks */
    c = parse(BASE "events:\n  webhook: {url: \"http://127.0.0.1:9000\"}\n", &d);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(c->events->exec_argv);
    ck_assert_str_eq(c->events->webhook_path, "/");
    ck_assert_uint_eq(c->events->webhook_port, 9000);
    ck_assert(!c->events->webhook_tls);
    ck_assert_uint_eq(c->events->webhook_timeout_ms, 5000);
    ck_assert_uint_eq(c->events->webhook_retries, 5);
    ck_assert(c->events->webhook_tls_verify);
    ck_assert_ptr_null(c->events->webhook_secret);
    config_unref(c);
    diag_free(&d);
    c = parse(BASE, &d);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(c->events->exec_argv);
    ck_assert_ptr_null(c->events->webhook_url);
    config_unref(c);
    diag_free(&d);
}
END_TEST

static void expect_error(const char *events, const char *msg)
{
    struct diag d;
    char yaml[2048];
    snprintf(yaml, sizeof(yaml), BASE "%s", events);
    struct config *c = parse(yaml, &d);
    ck_assert_msg(c == NULL, "accepted: %s", events);
    bool found = false;
    for (size_t i = 0; i < d.n; i++) {
        char line[1024];
        diag_format(&d, i, line, sizeof(line));
        if (strstr(line, msg)) found = true;
    }
    if (!found) diag_print(&d, stderr);
    ck_assert_msg(found, "no '%s' for: %s", msg, events);
    diag_free(&d);
}

START_TEST(test_config_events_errors)
{
    expect_error("events: {exec: {command: \"/bin/true --x\"}}\n", "give a list");
    expect_error("events: {exec: {command: []}}\n", "the list is empty");
    expect_error("events: {exec: {command: [notify]}}\n", "must be an absolute path");
    expect_error("events: {exec: {command: [/nonexistent/notify]}}\n", "cannot run");
    expect_error("events: {exec: {command: [/tmp]}}\n", "is not a file");
    expect_error("events: {exec: {timeout: 1s}}\n", "'command' is required");
    expect_error("events: {exec: {command: [/bin/true], timeout: 10}}\n", "is not a duration");
    expect_error("events: {exec: {command: [/bin/true], shell: yes}}\n", "shell");
    expect_error("events: {webhook: {secret: x}}\n", "'url' is required");
    expect_error("events: {webhook: {url: \"ftp://x\"}}\n", "events.webhook.url");
    expect_error("events: {webhook: {url: \"http://x\", secret: \"\"}}\n", "secret: empty");
    expect_error("events: {webhook: {url: \"http://x\", headers: {Host: y}}}\n",
                 "is set by detourd itself");
    expect_error("events: {webhook: {url: \"http://x\", headers: {X-Detourd-Signature: y}}}\n",
                 "is set by detourd itself");
    expect_error("events: {webhook: {url: \"http://x\", retries: 101}}\n", "out of range");
    expect_error("events: {webhook: {url: \"http://x\", ca_file: /nonexistent.pem}}\n",
                 "cannot read");
    expect_error("events: {webhook: {url: \"http://x\", ca_file: /dev/null}}\n",
                 "events.webhook.ca_file: '/dev/null' is a character device, not a regular file");
    expect_error("events: {webhook: {url: \"http://x\", ca_file: /tmp}}\n",
                 "events.webhook.ca_file: '/tmp' is a directory, not a regular file");
    expect_error("events: {sms: {}}\n", "sms");
    expect_error("events: [exec]\n", "events");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("events");
    TCase *tc = tcase_create("events");
    tcase_add_test(tc, test_format_all_fields);
    tcase_add_test(tc, test_format_absent_and_escaped);
    tcase_add_test(tc, test_kind_names);
    tcase_add_test(tc, test_reason_cut);
    tcase_add_test(tc, test_queue_fifo_and_drop_oldest);
    tcase_add_test(tc, test_queue_wraps);
    tcase_add_test(tc, test_hub_ring_sinks_ids);
    tcase_add_test(tc, test_emit_without_hub);
    tcase_add_test(tc, test_config_events);
    tcase_add_test(tc, test_config_events_errors);
    suite_add_tcase(s, tc);
    return s;
}
