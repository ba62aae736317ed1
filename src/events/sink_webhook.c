/* The webhook event sink (sink_webhook.h).
 *
 * One event at a time, in order: the oldest queued event is POSTed (it
 * stays queued until it is done); a 2xx answer delivers it, anything else (another status,
 * a connection or TLS error, no complete answer within the timeout) is a
 * failed try, retried after 1 s, 2 s, 4 s, ... with the same id, up to
 * `retries` times; then the event is failed and the next one goes. Each try
 * has a connection of its own (closed after the answer) and one deadline for
 * the whole request. Names are resolved by an evdns base of the sink's own,
 * never by a blocking resolver. Everything runs on the main loop; libevent's
 * HTTP callbacks only record the outcome and schedule `finish`, which tears
 * the connection down outside libevent's own stack. */
#include "autoconf.h"

#include "events/sink_webhook.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

#include "control/config.h"
#include "events/events_config.h"
#include "events/events.h"
#include "lib/file.h"
#include "lib/log.h"

#define WEBHOOK_MAX_ANSWER_BODY  (1024 * 1024) /* a receiver's answer body is read and dropped */
#define WEBHOOK_MAX_ANSWER_HEADS (64 * 1024)

/* The settings a try uses, copied from the config at load. */
struct wh_conf {
    char *url;     /* for log lines */
    char *host;    /* to connect to, without brackets */
    char *hosthdr; /* the Host header: host[:port], IPv6 in brackets */
    char *path;    /* path and query */
    char *secret;  /* NULL: no signature */
    char *ca_file; /* NULL: the system store */
    struct header *headers;
    size_t nheaders;
    unsigned port;
    bool tls, tls_verify;
    uint64_t timeout_ms;
    unsigned retries;
};

enum wh_state {
    WH_IDLE,    /* nothing in hand */
    WH_SENDING, /* a try is in flight (conn set) */
    WH_BACKOFF, /* a try failed; the retry timer runs */
};

struct sink_webhook {
    struct event_base *base;
    struct events *hub;
    struct event_sink sink;
    bool attached;
    struct wh_conf *conf; /* NULL: not configured */

    struct evdns_base *dns; /* made on first use */
    SSL_CTX *ssl_ctx;       /* for ssl_ctx_ca (NULL: the system store) */
    char *ssl_ctx_ca;

    enum wh_state state;
    struct event_rec *cur; /* the event in hand (our reference) */
    unsigned tries;        /* tries made for cur */
    struct evhttp_connection *conn;
    SSL *ssl;          /* owned by conn's bufferevent */
    bool have_outcome; /* the try in flight has ended, finish is scheduled */
    int status;        /* the answer's status, 0: none */
    int req_error;     /* an enum evhttp_request_error + 1, 0: none */
    int sock_error;    /* errno seen when the request ended without an answer */
    char why[192];     /* what went wrong in the last try */

    struct event *kick;     /* starts the next event (from wake) */
    struct event *finish;   /* ends the try in flight, outside libevent's callbacks */
    struct event *deadline; /* the whole request's timeout */
    struct event *backoff;  /* the retry timer */
};

static void webhook_next(struct sink_webhook *s);
static void webhook_try(struct sink_webhook *s);

/* ---- pure helpers ---- */

void webhook_sign(const char *secret, const char *body, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, len, md,
              &mdlen) ||
        mdlen != 32) {
        memset(out, '0', 64);
        out[64] = '\0';
        return;
    }
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

unsigned webhook_backoff_ms(unsigned n)
{
    unsigned ms = WEBHOOK_BACKOFF_FIRST_MS;
    for (unsigned i = 1; i < n && ms < WEBHOOK_BACKOFF_MAX_MS; i++) ms *= 2;
    return ms < WEBHOOK_BACKOFF_MAX_MS ? ms : WEBHOOK_BACKOFF_MAX_MS;
}

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

static void tv_ms(struct timeval *tv, uint64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

/* ---- settings ---- */

static void conf_free(struct wh_conf *c)
{
    if (!c) return;
    free(c->url);
    free(c->host);
    free(c->hosthdr);
    free(c->path);
    free(c->secret);
    free(c->ca_file);
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        free(c->headers[i].value);
    }
    free(c->headers);
    free(c);
}

static bool dup_opt(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

static struct wh_conf *conf_copy(const struct events_cfg *e)
{
    struct wh_conf *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->port = e->webhook_port;
    c->tls = e->webhook_tls;
    c->tls_verify = e->webhook_tls_verify;
    c->timeout_ms = e->webhook_timeout_ms;
    c->retries = e->webhook_retries;
    bool ok = dup_opt(&c->url, e->webhook_url) && dup_opt(&c->host, e->webhook_host) &&
              dup_opt(&c->path, e->webhook_path ? e->webhook_path : "/") &&
              dup_opt(&c->secret, e->webhook_secret) && dup_opt(&c->ca_file, e->webhook_ca_file);
    if (ok && c->host) {
        bool v6 = strchr(c->host, ':') != NULL;
        char port[8] = ""; /* only a port other than the scheme's default is named */
        if (c->port != (c->tls ? 443u : 80u)) snprintf(port, sizeof(port), ":%u", c->port);
        size_t n = strlen(c->host) + sizeof(port) + 2;
        c->hosthdr = malloc(n);
        if (c->hosthdr)
            snprintf(c->hosthdr, n, "%s%s%s%s", v6 ? "[" : "", c->host, v6 ? "]" : "", port);
        ok = c->hosthdr != NULL;
    }
    if (ok && e->nwebhook_headers) {
        c->headers = calloc(e->nwebhook_headers, sizeof(*c->headers));
        ok = c->headers != NULL;
        for (size_t i = 0; ok && i < e->nwebhook_headers; i++) {
            c->headers[i].name = strdup(e->webhook_headers[i].name);
            c->headers[i].value = strdup(e->webhook_headers[i].value);
            c->nheaders++;
            ok = c->headers[i].name && c->headers[i].value;
        }
    }
    if (!ok || !c->host) {
        conf_free(c);
        return NULL;
    }
    return c;
}

/* ---- connections ---- */

static struct evdns_base *dns_for(struct sink_webhook *s)
{
    if (s->dns) return s->dns;
    s->dns = evdns_base_new(s->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!s->dns) {
        /* no resolv.conf: IP literals and /etc/hosts still work */
        s->dns = evdns_base_new(s->base, 0);
        if (s->dns) evdns_base_load_hosts(s->dns, NULL);
    }
    return s->dns;
}

/* One TLS context per trust store; rebuilt when a reload names another. */
static SSL_CTX *ssl_ctx_for(struct sink_webhook *s, const char *ca_file)
{
    if (s->ssl_ctx && ((!ca_file && !s->ssl_ctx_ca) ||
                       (ca_file && s->ssl_ctx_ca && strcmp(ca_file, s->ssl_ctx_ca) == 0)))
        return s->ssl_ctx;
    SSL_CTX_free(s->ssl_ctx); /* connections in flight hold their own reference */
    free(s->ssl_ctx_ca);
    s->ssl_ctx = NULL;
    s->ssl_ctx_ca = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(s->why, sizeof(s->why), "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* the file is read without ever blocking the loop (lib/file.h) */
    char why[256] = "";
    int ok = ca_file ? file_load_verify(ctx, ca_file, why, sizeof(why))
                     : SSL_CTX_set_default_verify_paths(ctx);
    ERR_clear_error();
    if (!ok) {
        snprintf(s->why, sizeof(s->why), "TLS: cannot load CA certificates%s%s%s%s",
                 ca_file ? " from " : "", ca_file ? ca_file : "", why[0] ? ": " : "", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ca_file && !(s->ssl_ctx_ca = strdup(ca_file))) {
        SSL_CTX_free(ctx);
        snprintf(s->why, sizeof(s->why), "out of memory");
        return NULL;
    }
    s->ssl_ctx = ctx;
    return ctx;
}

/* A bufferevent speaking TLS to c->host, verified unless tls_verify is off. */
static struct bufferevent *tls_bev(struct sink_webhook *s, const struct wh_conf *c)
{
    SSL_CTX *ctx = ssl_ctx_for(s, c->ca_file);
    if (!ctx) return NULL;
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        snprintf(s->why, sizeof(s->why), "TLS: cannot create a session");
        return NULL;
    }
    bool ip = is_ip_literal(c->host);
    if (!ip) SSL_set_tlsext_host_name(ssl, c->host); /* SNI */
    if (c->tls_verify) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->host);
        else
            SSL_set1_host(ssl, c->host);
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(s->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        snprintf(s->why, sizeof(s->why), "out of memory");
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    s->ssl = ssl;
    return bev;
}

static void conn_close(struct sink_webhook *s)
{
    if (s->conn) evhttp_connection_free(s->conn); /* frees its request, bufferevent and SSL */
    s->conn = NULL;
    s->ssl = NULL;
    if (s->deadline) event_del(s->deadline);
    if (s->finish) event_del(s->finish);
    s->have_outcome = false;
}

/* ---- one try ---- */

static const char *req_error_text(int e)
{
    switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF: return "connection closed before a complete answer";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid answer";
    case EVREQ_HTTP_BUFFER_ERROR: return "connection error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "request cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "answer too large";
    default: return "no answer";
    }
}

/* Why a try that got no status failed, from what its connection saw. */
static void describe_failure(struct sink_webhook *s)
{
    struct bufferevent *bev = s->conn ? evhttp_connection_get_bufferevent(s->conn) : NULL;
    int dnserr = bev ? bufferevent_socket_get_dns_error(bev) : 0;
    long vr = s->ssl ? SSL_get_verify_result(s->ssl) : X509_V_OK;
    unsigned long tlserr = s->ssl && bev ? bufferevent_get_openssl_error(bev) : 0;
    if (dnserr) {
        snprintf(s->why, sizeof(s->why), "DNS: %s", evutil_gai_strerror(dnserr));
    } else if (vr != X509_V_OK) {
        snprintf(s->why, sizeof(s->why), "TLS: certificate: %s", X509_verify_cert_error_string(vr));
    } else if (tlserr) {
        const char *r = ERR_reason_error_string(tlserr);
        snprintf(s->why, sizeof(s->why), "TLS: %s", r ? r : "handshake failed");
    } else if (s->req_error) {
        snprintf(s->why, sizeof(s->why), "%s", req_error_text(s->req_error - 1));
    } else if (s->sock_error && s->sock_error != ENOTCONN) {
        snprintf(s->why, sizeof(s->why), "connect: %s", strerror(s->sock_error));
    } else {
        /* libevent 2.1 reports a failed connect without an error code (its
         * cleanup's shutdown() leaves ENOTCONN): refused or unreachable */
        snprintf(s->why, sizeof(s->why), "cannot connect");
    }
    while (bev && s->ssl && bufferevent_get_openssl_error(bev)) {
    }
}

static void on_request_error(enum evhttp_request_error err, void *arg)
{
    struct sink_webhook *s = arg;
    if (s->state == WH_SENDING && !s->have_outcome) s->req_error = (int)err + 1;
}

/* libevent's end of the request (req NULL or without a status: no answer).
 * Only records: the connection is freed from `finish`. */
static void on_request_done(struct evhttp_request *req, void *arg)
{
    struct sink_webhook *s = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (s->state != WH_SENDING || s->have_outcome) return;
    s->status = req ? evhttp_request_get_response_code(req) : 0;
    if (s->status > 0)
        snprintf(s->why, sizeof(s->why), "HTTP %d", s->status);
    else {
        s->sock_error = err;
        describe_failure(s);
    }
    s->have_outcome = true;
    event_del(s->deadline);
    event_active(s->finish, EV_TIMEOUT, 0);
}

/* Whether the event in hand is still queued: a full queue drops its oldest,
 * which may be this one (events.c counted it as dropped; it is not tried
 * again, and its outcome is not counted twice). */
static bool cur_queued(const struct sink_webhook *s)
{
    return s->cur && evq_peek(&s->sink.q) == s->cur;
}

static void try_failed(struct sink_webhook *s)
{
    const struct wh_conf *c = s->conf;
    if (!cur_queued(s)) {
        log_debug("events webhook: event %s (%s) dropped from the full queue after try %u: %s",
                  s->cur->id, event_kind_name(s->cur->kind), s->tries, s->why);
        webhook_next(s);
        return;
    }
    if (c && s->tries <= c->retries) {
        unsigned ms = webhook_backoff_ms(s->tries);
        log_debug("events webhook: event %s (%s) try %u failed: %s; retrying in %u ms", s->cur->id,
                  event_kind_name(s->cur->kind), s->tries, s->why, ms);
        struct timeval tv;
        tv_ms(&tv, ms);
        s->state = WH_BACKOFF;
        evtimer_add(s->backoff, &tv);
        return;
    }
    s->sink.failed++;
    log_warn("events webhook: event %s (%s) failed after %u tr%s to %s: %s", s->cur->id,
             event_kind_name(s->cur->kind), s->tries, s->tries == 1 ? "y" : "ies", c ? c->url : "?",
             s->why);
    webhook_next(s);
}

/* The try in flight has an outcome (or its deadline passed): tear it down,
 * then deliver, retry or fail. */
static void try_end(struct sink_webhook *s)
{
    int status = s->status;
    conn_close(s);
    if (status >= 200 && status <= 299) {
        if (cur_queued(s)) s->sink.delivered++;
        log_debug("events webhook: event %s (%s) delivered: HTTP %d", s->cur->id,
                  event_kind_name(s->cur->kind), status);
        webhook_next(s);
        return;
    }
    try_failed(s);
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sink_webhook *s = arg;
    if (s->state == WH_SENDING) try_end(s);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sink_webhook *s = arg;
    if (s->state != WH_SENDING || s->have_outcome) return;
    s->status = 0;
    snprintf(s->why, sizeof(s->why), "no complete answer within %llu ms",
             (unsigned long long)(s->conf ? s->conf->timeout_ms : 0));
    try_end(s);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sink_webhook *s = arg;
    if (s->state != WH_BACKOFF || !s->cur || !s->conf) return;
    if (cur_queued(s))
        webhook_try(s);
    else
        webhook_next(s); /* dropped from the full queue while waiting */
}

static bool add_header(struct evkeyvalq *h, const char *name, const char *value)
{
    return evhttp_add_header(h, name, value) == 0;
}

/* A configured User-Agent replaces detourd's (the other headers detourd
 * sets are refused in the config). */
static bool has_header(const struct wh_conf *c, const char *name)
{
    for (size_t i = 0; i < c->nheaders; i++)
        if (strcasecmp(c->headers[i].name, name) == 0) return true;
    return false;
}

/* Starts a try of s->cur with the current settings; a try that cannot
 * even start fails like one that got no answer. */
static void webhook_try(struct sink_webhook *s)
{
    const struct wh_conf *c = s->conf;
    struct event_rec *ev = s->cur;
    s->state = WH_SENDING;
    s->tries++;
    s->status = 0;
    s->req_error = 0;
    s->sock_error = 0;
    s->have_outcome = false;
    s->why[0] = '\0';

    struct evdns_base *dns = dns_for(s);
    struct bufferevent *bev = NULL;
    if (!dns) {
        snprintf(s->why, sizeof(s->why), "cannot set up DNS resolution");
        goto fail;
    }
    if (c->tls && !(bev = tls_bev(s, c))) goto fail;
    s->conn =
        evhttp_connection_base_bufferevent_new(s->base, dns, bev, c->host, (unsigned short)c->port);
    if (!s->conn) {
        if (bev) bufferevent_free(bev);
        s->ssl = NULL;
        snprintf(s->why, sizeof(s->why), "out of memory");
        goto fail;
    }
    /* libevent's own (per read/write) timeout only backs up the deadline
     * below, which bounds the whole request and names the cause */
    struct timeval tv;
    tv_ms(&tv, c->timeout_ms + 1000);
    evhttp_connection_set_timeout_tv(s->conn, &tv);
    evhttp_connection_set_retries(s->conn, 0);
    evhttp_connection_set_max_body_size(s->conn, WEBHOOK_MAX_ANSWER_BODY);
    evhttp_connection_set_max_headers_size(s->conn, WEBHOOK_MAX_ANSWER_HEADS);

    struct evhttp_request *req = evhttp_request_new(on_request_done, s);
    if (!req) {
        snprintf(s->why, sizeof(s->why), "out of memory");
        goto fail;
    }
    evhttp_request_set_error_cb(req, on_request_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char sig[7 + 65] = "sha256=";
    if (c->secret) webhook_sign(c->secret, ev->json, ev->json_len, sig + 7);
    bool ok =
        add_header(h, "Host", c->hosthdr) && add_header(h, "Content-Type", "application/json") &&
        (has_header(c, "User-Agent") || add_header(h, "User-Agent", "detourd/" PACKAGE_VERSION)) &&
        add_header(h, "X-Detourd-Event-Id", ev->id) &&
        (!c->secret || add_header(h, "X-Detourd-Signature", sig)) &&
        add_header(h, "Connection", "close");
    for (size_t i = 0; ok && i < c->nheaders; i++)
        ok = add_header(h, c->headers[i].name, c->headers[i].value);
    ok = ok && evbuffer_add(evhttp_request_get_output_buffer(req), ev->json, ev->json_len) == 0;
    if (!ok) {
        evhttp_request_free(req);
        snprintf(s->why, sizeof(s->why), "cannot build the request");
        goto fail;
    }
    /* the deadline first: a connect that fails at once calls back from here */
    tv_ms(&tv, c->timeout_ms);
    evtimer_add(s->deadline, &tv);
    /* -1 only when libevent cannot copy the path (it frees req then): no
     * bind address is set, and a failed connect calls back instead */
    if (evhttp_make_request(s->conn, req, EVHTTP_REQ_POST, c->path) != 0) {
        if (!s->have_outcome) {
            describe_failure(s);
            s->have_outcome = true;
            event_active(s->finish, EV_TIMEOUT, 0);
        }
    }
    return;
fail:
    /* report from the loop, like any other outcome */
    s->have_outcome = true;
    event_active(s->finish, EV_TIMEOUT, 0);
}

/* Done with the event in hand (if any): takes it off the queue and starts
 * the next one. The event being worked on stays queued until then (it
 * counts in detourd_events_queued); the sink holds a reference of its own
 * in case a full queue drops it meanwhile. */
static void webhook_next(struct sink_webhook *s)
{
    if (s->cur) {
        if (cur_queued(s)) event_unref(evq_pop(&s->sink.q));
        event_unref(s->cur);
    }
    s->cur = NULL;
    s->tries = 0;
    s->state = WH_IDLE;
    struct event_rec *ev = s->conf ? evq_peek(&s->sink.q) : NULL;
    if (!ev) return;
    s->cur = event_ref(ev);
    webhook_try(s);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct sink_webhook *s = arg;
    if (s->state == WH_IDLE) webhook_next(s);
}

/* events.c's call after queueing: start from the loop if idle. */
static void webhook_wake(void *arg)
{
    struct sink_webhook *s = arg;
    if (s->state == WH_IDLE && s->conf) event_active(s->kick, EV_TIMEOUT, 0);
}

/* Stops working on the event in hand (it stays queued: whoever clears the
 * queue counts it). */
static void abandon(struct sink_webhook *s)
{
    conn_close(s);
    if (s->backoff) event_del(s->backoff);
    if (s->kick) event_del(s->kick);
    if (s->cur) event_unref(s->cur);
    s->cur = NULL;
    s->tries = 0;
    s->state = WH_IDLE;
}

/* ---- the sink ---- */

struct sink_webhook *sink_webhook_new(struct event_base *base, struct events *hub)
{
    struct sink_webhook *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base = base;
    s->hub = hub;
    s->sink.name = "webhook";
    s->sink.wake = webhook_wake;
    s->sink.arg = s;
    s->kick = event_new(base, -1, 0, on_kick, s);
    s->finish = event_new(base, -1, 0, on_finish, s);
    s->deadline = evtimer_new(base, on_deadline, s);
    s->backoff = evtimer_new(base, on_backoff, s);
    if (!evq_init(&s->sink.q, EVENTS_QUEUE_MAX) || !s->kick || !s->finish || !s->deadline ||
        !s->backoff) {
        sink_webhook_free(s);
        return NULL;
    }
    return s;
}

void sink_webhook_config(struct sink_webhook *s, const struct events_cfg *cfg)
{
    if (!s) return;
    if (!cfg || !cfg->webhook_url) {
        if (s->attached) events_sink_remove(s->hub, &s->sink);
        s->attached = false;
        abandon(s);
        s->sink.dropped += evq_clear(&s->sink.q);
        conf_free(s->conf);
        s->conf = NULL;
        return;
    }
    struct wh_conf *c = conf_copy(cfg);
    if (!c) {
        log_error("events webhook: out of memory; %s",
                  s->conf ? "keeping the previous settings" : "no webhook events are sent");
        return;
    }
    conf_free(s->conf); /* a try in flight has what it needs already */
    s->conf = c;
    if (!s->attached) events_sink_add(s->hub, &s->sink);
    s->attached = true;
    webhook_wake(s); /* events queued while unconfigured: none (detached), but harmless */
}

void sink_webhook_free(struct sink_webhook *s)
{
    if (!s) return;
    if (s->attached) events_sink_remove(s->hub, &s->sink);
    abandon(s);
    evq_free(&s->sink.q);
    if (s->kick) event_free(s->kick);
    if (s->finish) event_free(s->finish);
    if (s->deadline) event_free(s->deadline);
    if (s->backoff) event_free(s->backoff);
    if (s->dns) evdns_base_free(s->dns, 0);
    SSL_CTX_free(s->ssl_ctx);
    free(s->ssl_ctx_ca);
    conf_free(s->conf);
    free(s);
}
