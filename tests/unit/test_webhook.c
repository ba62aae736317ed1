#include "autoconf.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "control/config.h"
#include "events/events.h"
#include "events/events_config.h"
#include "lib/lit.h"
#include "events/sink_webhook.h"
#include "unit.h"

/* ---- the signature: RFC 4231's HMAC-SHA256 test vectors ---- */

static void sign_is(const char *key, const char *data, size_t len, const char *want)
{
    char out[65];
    memset(out, 'x', sizeof(out));
    webhook_sign(key, data, len, out);
    ck_assert_str_eq(out, want);
}

static char *repeat(int byte, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, byte, n);
    s[n] = '\0';
    return s;
}

START_TEST(rfc4231_vectors)
{
    char *k = repeat(0x0b, 20);
    sign_is(k, LIT("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    free(k);
    sign_is("Jefe", LIT("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    k = repeat(0xaa, 20);
    char *d = repeat(0xdd, 50);
    sign_is(k, d, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    free(k);
    free(d);
    char k4[26];
    for (int i = 0; i < 25; i++) k4[i] = (char)(i + 1);
    k4[25] = '\0';
    d = repeat(0xcd, 50);
    sign_is(k4, d, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    free(d);
    /* a key longer than SHA-256's block is hashed first */
    k = repeat(0xaa, 131);
    sign_is(k, LIT("Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    sign_is(k,
            LIT("This is a test using a larger than block-size key and a larger than block-size "
                "data. The key needs to be hashed before being used by the HMAC algorithm."),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
    free(k);
}
END_TEST

START_TEST(sign_uses_len_not_nul)
{
    /* the body is len bytes: a NUL inside counts, what follows does not */
    char a[65], b[65];
    webhook_sign("k", "abc\0def", 7, a);
    webhook_sign("k", "abc\0xyz", 7, b);
    ck_assert_str_ne(a, b);
    webhook_sign("k", "abcdef", 3, a);
    webhook_sign("k", "abc", 3, b);
    ck_assert_str_eq(a, b);
    sign_is("topsecret", LIT("{\"id\":\"x\"}"),
            "79aaf589857c9d79d922fcc2fa15ea9e697df76ec8fcef922b3f82519c5f5645");
}
END_TEST

START_TEST(backoff_doubles_from_1s_capped)
{
    ck_assert_uint_eq(webhook_backoff_ms(1), 1000);
    ck_assert_uint_eq(webhook_backoff_ms(2), 2000);
    ck_assert_uint_eq(webhook_backoff_ms(3), 4000);
    ck_assert_uint_eq(webhook_backoff_ms(6), 32000);
    ck_assert_uint_eq(webhook_backoff_ms(7), 60000);
    ck_assert_uint_eq(webhook_backoff_ms(100), 60000);
    ck_assert_uint_eq(webhook_backoff_ms(0), 1000);
}
END_TEST

/* ---- the sink against an in-process receiver on the same loop ---- */

struct rcv {
    struct event_base *base;
    struct evhttp *http;
    unsigned port;
    bool hold; /* never answer */
    int status;
    unsigned n;
    unsigned n_ua; /* User-Agent fields in the last request */
    char ids[8][48];
    char sig[80], ua[64], ctype[64], host[64], auth[64], path[64];
    char body[512];
};

static void copy_hdr(struct evkeyvalq *h, const char *name, char *out, size_t len)
{
    const char *v = evhttp_find_header(h, name);
    snprintf(out, len, "%s", v ? v : "");
}

static void rcv_cb(struct evhttp_request *req, void *arg)
{
    struct rcv *r = arg;
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    if (r->n < 8) copy_hdr(h, "X-Detourd-Event-Id", r->ids[r->n], sizeof(r->ids[0]));
    r->n++;
    copy_hdr(h, "X-Detourd-Signature", r->sig, sizeof(r->sig));
    copy_hdr(h, "User-Agent", r->ua, sizeof(r->ua));
    r->n_ua = 0;
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next)
        if (strcasecmp(kv->key, "User-Agent") == 0) r->n_ua++;
    copy_hdr(h, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_hdr(h, "Host", r->host, sizeof(r->host));
    copy_hdr(h, "Authorization", r->auth, sizeof(r->auth));
    snprintf(r->path, sizeof(r->path), "%s", evhttp_request_get_uri(req));
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(r->body)) n = sizeof(r->body) - 1;
    evbuffer_remove(in, r->body, n);
    r->body[n] = '\0';
    if (!r->hold) evhttp_send_reply(req, r->status, "x", NULL);
}

static void rcv_start(struct rcv *r, struct event_base *base)
{
    memset(r, 0, sizeof(*r));
    r->base = base;
    r->status = 200;
    r->http = evhttp_new(base);
    ck_assert_ptr_nonnull(r->http);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(r->http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    r->port = ntohs(sin.sin_port);
    evhttp_set_gencb(r->http, rcv_cb, r);
}

/* Runs the loop until *n reaches want (false after 10 s). */
static bool loop_until(struct event_base *base, const uint64_t *n, uint64_t want)
{
    time_t end = time(NULL) + 10;
    while (*n < want && time(NULL) <= end) event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    return *n >= want;
}

static bool loop_until_u(struct event_base *base, const unsigned *n, unsigned want)
{
    time_t end = time(NULL) + 5;
    while (*n < want && time(NULL) <= end) event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    return *n >= want;
}

static void wh_cfg(struct events_cfg *e, unsigned port, struct header *hdr)
{
    static char url[64], path[] = "/hook?a=1", host[] = "127.0.0.1", secret[] = "topsecret";
    memset(e, 0, sizeof(*e));
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook?a=1", port);
    e->webhook_url = url;
    e->webhook_host = host;
    e->webhook_port = port;
    e->webhook_path = path;
    e->webhook_secret = secret;
    e->webhook_headers = hdr;
    e->nwebhook_headers = 1;
    e->webhook_timeout_ms = 5000;
    e->webhook_retries = 2;
    e->webhook_tls_verify = true;
}

static const struct event_sink *webhook_sink(const struct events *hub)
{
    for (const struct event_sink *k = events_sinks(hub); k; k = k->next)
        if (strcmp(k->name, "webhook") == 0) return k;
    return NULL;
}

START_TEST(delivers_in_order_with_headers)
{
    struct event_base *base = event_base_new();
    struct rcv r;
    rcv_start(&r, base);
    struct events *hub = events_new("unit-host");
    struct sink_webhook *s = sink_webhook_new(base, hub);
    ck_assert_ptr_nonnull(s);
    struct header hdr = {"Authorization", "Bearer t0k"};
    struct events_cfg e;
    wh_cfg(&e, r.port, &hdr);
    sink_webhook_config(s, &e);
    const struct event_sink *k = webhook_sink(hub);
    ck_assert_ptr_nonnull(k);
    struct event_rec *ev[3];
    for (int i = 0; i < 3; i++) {
        ev[i] = events_emit_at(hub, 1700000000000 + i, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
        ck_assert_ptr_nonnull(ev[i]);
    }
    ck_assert(loop_until(base, &k->delivered, 3));
    ck_assert_uint_eq(r.n, 3);
    for (int i = 0; i < 3; i++) ck_assert_str_eq(r.ids[i], ev[i]->id);
    ck_assert_str_eq(r.body, ev[2]->json);
    char want[80] = "sha256=";
    webhook_sign("topsecret", ev[2]->json, ev[2]->json_len, want + 7);
    ck_assert_str_eq(r.sig, want);
    ck_assert_str_eq(r.ua, "detourd/" PACKAGE_VERSION);
    ck_assert_uint_eq(r.n_ua, 1);
    ck_assert_str_eq(r.ctype, "application/json");
    char host[32];
    snprintf(host, sizeof(host), "127.0.0.1:%u", r.port);
    ck_assert_str_eq(r.host, host);
    ck_assert_str_eq(r.auth, "Bearer t0k");
    ck_assert_str_eq(r.path, "/hook?a=1");
    ck_assert_uint_eq(k->failed, 0);
    ck_assert_uint_eq(k->dropped, 0);
    sink_webhook_free(s);
    events_free(hub);
    evhttp_free(r.http);
    event_base_free(base);
}
END_TEST

START_TEST(configured_user_agent_replaces_ours)
{
    struct event_base *base = event_base_new();
    struct rcv r;
    rcv_start(&r, base);
    struct events *hub = events_new("unit-host");
    struct sink_webhook *s = sink_webhook_new(base, hub);
    struct header hdr = {"user-agent", "custom/1"};
    struct events_cfg e;
    wh_cfg(&e, r.port, &hdr);
    sink_webhook_config(s, &e);
    const struct event_sink *k = webhook_sink(hub);
    events_emit_at(hub, 1700000000000, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until(base, &k->delivered, 1));
    ck_assert_str_eq(r.ua, "custom/1");
    ck_assert_uint_eq(r.n_ua, 1);
    sink_webhook_free(s);
    events_free(hub);
    evhttp_free(r.http);
    event_base_free(base);
}
END_TEST

START_TEST(unconfigured_drops_what_it_holds_and_free_abandons)
{
    struct event_base *base = event_base_new();
    struct rcv r;
    rcv_start(&r, base);
    r.hold = true;
    struct events *hub = events_new("unit-host");
    struct sink_webhook *s = sink_webhook_new(base, hub);
    struct header hdr = {"Authorization", "Bearer t0k"};
    struct events_cfg e;
    wh_cfg(&e, r.port, &hdr);
    sink_webhook_config(s, &e);
    const struct event_sink *k = webhook_sink(hub);
    ck_assert_ptr_nonnull(k);
    for (int i = 0; i < 3; i++)
        events_emit_at(hub, 1700000000000 + i, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until_u(base, &r.n, 1)); /* the first is in flight, held */
    /* a reload without webhook: the one in flight and the two queued are dropped */
    struct events_cfg none;
    memset(&none, 0, sizeof(none));
    sink_webhook_config(s, &none);
    ck_assert_ptr_null(webhook_sink(hub));
    ck_assert_uint_eq(k->dropped, 3); /* k is still the sink's own struct */
    /* configured again, then freed with a request in flight */
    sink_webhook_config(s, &e);
    events_emit_at(hub, 1700000000100, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until_u(base, &r.n, 2));
    sink_webhook_free(s);
    ck_assert_ptr_null(webhook_sink(hub));
    events_free(hub);
    evhttp_free(r.http);
    event_base_free(base);
}
END_TEST

START_TEST(retries_keep_the_id_then_fail)
{
    struct event_base *base = event_base_new();
    struct rcv r;
    rcv_start(&r, base);
    r.status = 503;
    struct events *hub = events_new("unit-host");
    struct sink_webhook *s = sink_webhook_new(base, hub);
    struct header hdr = {"Authorization", "Bearer t0k"};
    struct events_cfg e;
    wh_cfg(&e, r.port, &hdr);
    e.webhook_retries = 1; /* two tries, 1 s apart */
    sink_webhook_config(s, &e);
    const struct event_sink *k = webhook_sink(hub);
    struct event_rec *ev =
        events_emit_at(hub, 1700000000000, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until(base, &k->failed, 1));
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq(r.ids[0], ev->id);
    ck_assert_str_eq(r.ids[1], ev->id);
    ck_assert_uint_eq(k->delivered, 0);
    /* the next event goes, and a 2xx other than 200 delivers it */
    r.status = 204;
    events_emit_at(hub, 1700000000001, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until(base, &k->delivered, 1));
    ck_assert_uint_eq(r.n, 3);
    sink_webhook_free(s);
    events_free(hub);
    evhttp_free(r.http);
    event_base_free(base);
}
END_TEST

START_TEST(full_queue_drops_the_one_in_flight_once)
{
    struct event_base *base = event_base_new();
    struct rcv r;
    rcv_start(&r, base);
    r.hold = true;
    struct events *hub = events_new("unit-host");
    struct sink_webhook *s = sink_webhook_new(base, hub);
    struct header hdr = {"Authorization", "Bearer t0k"};
    struct events_cfg e;
    wh_cfg(&e, r.port, &hdr);
    e.webhook_timeout_ms = 100;
    e.webhook_retries = 1;
    sink_webhook_config(s, &e);
    const struct event_sink *k = webhook_sink(hub);
    events_emit_at(hub, 1700000000000, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert(loop_until_u(base, &r.n, 1));
    ck_assert_uint_eq(k->q.len, 1); /* the one in progress is still queued */
    for (int i = 1; i <= EVENTS_QUEUE_MAX; i++)
        events_emit_at(hub, 1700000000000 + i, EVENT_RELOAD, NULL, NULL, NULL, "ok", NULL);
    ck_assert_uint_eq(k->dropped, 1); /* the oldest: the one in flight */
    ck_assert_uint_eq(k->q.len, EVENTS_QUEUE_MAX);
    r.hold = false; /* its try times out; it is not retried, and the rest go */
    ck_assert(loop_until(base, &k->delivered, EVENTS_QUEUE_MAX));
    ck_assert_uint_eq(k->failed, 0);
    ck_assert_uint_eq(k->dropped, 1);
    ck_assert_uint_eq(k->q.len, 0);
    /* the dropped one was not tried again: the next request is another
     * event (a busy host may time out and retry a later one: r.n can be
     * more than EVENTS_QUEUE_MAX + 1, and every event is delivered once) */
    ck_assert_uint_ge(r.n, EVENTS_QUEUE_MAX + 1);
    ck_assert_str_ne(r.ids[0], r.ids[1]);
    sink_webhook_free(s);
    events_free(hub);
    evhttp_free(r.http);
    event_base_free(base);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("webhook");
    TCase *tc = tcase_create("sign");
    tcase_add_test(tc, rfc4231_vectors);
    tcase_add_test(tc, sign_uses_len_not_nul);
    tcase_add_test(tc, backoff_doubles_from_1s_capped);
    suite_add_tcase(s, tc);
    tc = tcase_create("sink");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, delivers_in_order_with_headers);
    tcase_add_test(tc, configured_user_agent_replaces_ours);
    tcase_add_test(tc, unconfigured_drops_what_it_holds_and_free_abandons);
    tcase_add_test(tc, retries_keep_the_id_then_fail);
    tcase_add_test(tc, full_queue_drops_the_one_in_flight_once);
    suite_add_tcase(s, tc);
    return s;
}
