/* detourd's etcd v3 client (etcd.h). */
#include "autoconf.h"

#include "fleet/etcd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/fleet_config.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"

#define ETCD_BACKOFF_FIRST_MS 1000
#define ETCD_BACKOFF_MAX_MS   30000
/* a session that lasted this long resets the backoff: one that fails at
 * once, again and again, backs off instead of flapping every second */
#define ETCD_SESSION_STABLE_MS 10000
#define ETCD_MAX_ANSWER        (256u << 20) /* a full read of a large fleet */
#define ETCD_MAX_HEADERS       (64u * 1024)
/* one message of the watch stream: as much as a full read may hold */
#define ETCD_MAX_WATCH_MSG ETCD_MAX_ANSWER
/* A watch connection dropped without a word (a host gone, a NAT entry or
 * a firewall state expired) is found two ways. The kernel probes it once
 * idle (TCP keepalive, every third of lease_ttl, three probes): a peer
 * gone ends the session within about 4/3 lease_ttl. And the watch asks for
 * progress notifications, which etcd sends to an idle watch every 10 min
 * (--experimental-watch-progress-notify-interval): a stream silent for
 * three of those is restarted. */
#define ETCD_PROGRESS_S           600
#define ETCD_WATCH_IDLE_S         (3 * ETCD_PROGRESS_S)
#define ETCD_TCP_KEEPALIVE_CNT    3
#define ETCD_PASSWORD_MAX         4096
#define ETCD_GRPC_UNAUTHENTICATED 16

struct ureq;
typedef void (*ureq_done)(struct etcd *e, const struct ureq *r, const char *body, size_t len);

/* One unary request (POST with a JSON body), queued; one in flight. */
struct ureq {
    const char *path;
    char *body;
    ureq_done done;
    char *key;    /* a write (put, delete) of this key: a failure leaves the session up */
    bool retried; /* sent again after renewing an expired token */
    struct ureq *next;
};

struct etcd {
    struct event_base *base;
    struct fleet_cfg *cfg; /* a copy: endpoints, prefix, files, timeouts */
    char *prefix_end;
    struct etcd_hooks h;
    void *arg;
    struct evdns_base *dns;
    SSL_CTX *ssl;

    enum etcd_state state;
    size_t ep;           /* the endpoint of this session */
    unsigned backoff_ms; /* before the next session */
    uint64_t up_ms;      /* monotonic: when the watch was established */
    char *token;         /* etcd auth token, or NULL */
    int64_t lease;
    int64_t rev; /* the last revision seen; 0: none */
    bool need_full;

    struct evhttp_connection *uconn;
    struct ureq *uhead, *utail, *ucur;
    int ustatus;
    struct evbuffer *ubody;
    bool uhave;
    struct event *ufinish, *udeadline;

    struct evhttp_connection *wconn;
    bool in_wchunk; /* in wconn's own callback: the session may not be torn down here */
    struct etcd_stream ws;
    char wwhy[512];
    struct event *wfinish, *wdeadline;

    struct event *backoff_ev, *keepalive_ev;
};

const char *etcd_state_name(enum etcd_state s)
{
    static const char *const names[] = {
        [ETCD_BACKOFF] = "backoff",   [ETCD_AUTH] = "auth",       [ETCD_LEASE] = "lease",
        [ETCD_READ] = "read",         [ETCD_WATCH] = "watch",     [ETCD_WATCHING] = "watching",
        [ETCD_STOPPING] = "stopping", [ETCD_STOPPED] = "stopped",
    };
    return names[s];
}

static const struct fleet_endpoint *endpoint(const struct etcd *e)
{
    return &e->cfg->endpoints[e->ep];
}

static void tv_ms(struct timeval *tv, uint64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

static void session_fail(struct etcd *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_next(struct etcd *e);
static void send_next(struct etcd *e);
static void written(struct etcd *e, const struct ureq *r, const char *why);
static void stop_done(struct etcd *e, const char *why);
static bool auth_request(struct etcd *e);

/* ---- connections ---- */

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

static SSL_CTX *ssl_ctx_new(const struct fleet_cfg *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "fleet: TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    char why[256] = "";
    int ok = c->ca_file ? file_load_verify(ctx, c->ca_file, why, sizeof(why))
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        snprintf(err, errlen, "fleet: TLS: cannot load CA certificates%s%s%s%s",
                 c->ca_file ? " from " : "", c->ca_file ? c->ca_file : "", why[0] ? ": " : "", why);
        goto fail;
    }
    if (c->cert) {
        struct file_error fe;
        size_t cl = 0, kl = 0;
        char *cert = file_read(c->cert, FILE_MAX_PEM_BYTES, &cl, &fe);
        char *key = cert ? file_read(c->key, FILE_MAX_PEM_BYTES, &kl, &fe) : NULL;
        BIO *cb = cert ? BIO_new_mem_buf(cert, (int)cl) : NULL;
        BIO *kb = key ? BIO_new_mem_buf(key, (int)kl) : NULL;
        X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
        EVP_PKEY *pk = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
        ok = x && pk && SSL_CTX_use_certificate(ctx, x) == 1 &&
             SSL_CTX_use_PrivateKey(ctx, pk) == 1 && SSL_CTX_check_private_key(ctx) == 1;
        /* the rest of the chain, if the file has one */
        while (ok && cb) {
            X509 *extra = PEM_read_bio_X509(cb, NULL, NULL, NULL);
            if (!extra) break;
            if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) X509_free(extra);
        }
        X509_free(x);
        EVP_PKEY_free(pk);
        BIO_free(cb);
        BIO_free(kb);
        if (cert) file_free(cert, cl);
        if (key) file_free(key, kl);
        if (!ok) {
            snprintf(err, errlen, "fleet: TLS: cannot use the client certificate %s with key %s",
                     c->cert, c->key);
            goto fail;
        }
    }
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

static struct evhttp_connection *connect_to(struct etcd *e, const struct fleet_endpoint *ep)
{
    struct bufferevent *bev = NULL;
    if (ep->tls) {
        SSL *ssl = SSL_new(e->ssl);
        if (!ssl) return NULL;
        bool ip = is_ip_literal(ep->host);
        if (!ip) SSL_set_tlsext_host_name(ssl, ep->host);
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ep->host);
        else
            SSL_set1_host(ssl, ep->host);
        bev = bufferevent_openssl_socket_new(e->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!bev) {
            SSL_free(ssl);
            return NULL;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    struct evhttp_connection *c = evhttp_connection_base_bufferevent_new(
        e->base, e->dns, bev, ep->host, (unsigned short)ep->port);
    if (!c) {
        if (bev) bufferevent_free(bev);
        return NULL;
    }
    evhttp_connection_set_retries(c, 0);
    evhttp_connection_set_max_headers_size(c, ETCD_MAX_HEADERS);
    return c;
}

/* Headers every request carries. */
static bool add_headers(struct etcd *e, struct evhttp_request *req)
{
    const struct fleet_endpoint *ep = endpoint(e);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char host[300];
    bool v6 = strchr(ep->host, ':') != NULL;
    snprintf(host, sizeof(host), "%s%s%s:%u", v6 ? "[" : "", ep->host, v6 ? "]" : "", ep->port);
    return evhttp_add_header(h, "Host", host) == 0 &&
           evhttp_add_header(h, "Content-Type", "application/json") == 0 &&
           evhttp_add_header(h, "User-Agent", "detourd/" PACKAGE_VERSION) == 0 &&
           (!e->token || evhttp_add_header(h, "Authorization", e->token) == 0);
}

/* Why a request got no answer, from its connection. */
static void describe(const struct etcd *e, struct evhttp_connection *c, char *buf, size_t len)
{
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    int dnserr = bev ? bufferevent_socket_get_dns_error(bev) : 0;
    unsigned long tlserr = bev && endpoint(e)->tls ? bufferevent_get_openssl_error(bev) : 0;
    if (dnserr)
        snprintf(buf, len, "DNS: %s", evutil_gai_strerror(dnserr));
    else if (tlserr) {
        const char *r = ERR_reason_error_string(tlserr);
        snprintf(buf, len, "TLS: %s", r ? r : "handshake failed");
    } else
        snprintf(buf, len, "no answer (connection refused or closed)");
    ERR_clear_error();
}

/* ---- unary requests ---- */

static void ureq_free(struct ureq *r)
{
    if (!r) return;
    free(r->body);
    free(r->key);
    free(r);
}

static void unary_close(struct etcd *e)
{
    if (e->uconn) evhttp_connection_free(e->uconn);
    e->uconn = NULL;
    ureq_free(e->ucur);
    e->ucur = NULL;
    while (e->uhead) {
        struct ureq *r = e->uhead;
        e->uhead = r->next;
        ureq_free(r);
    }
    e->utail = NULL;
    e->uhave = false;
    event_del(e->ufinish);
    event_del(e->udeadline);
}

static void on_udone(struct evhttp_request *req, void *arg)
{
    struct etcd *e = arg;
    if (!e->ucur || e->uhave) return;
    e->ustatus = req ? evhttp_request_get_response_code(req) : 0;
    evbuffer_drain(e->ubody, evbuffer_get_length(e->ubody));
    if (req && e->ustatus) evbuffer_add_buffer(e->ubody, evhttp_request_get_input_buffer(req));
    e->uhave = true;
    event_active(e->ufinish, EV_TIMEOUT, 0);
}

/* An error answer: its message, and a token that expired is dropped. */
static void answer_error(struct etcd *e, int status, const char *body, size_t len, char *why,
                         size_t wlen)
{
    struct etcd_error er = {0};
    if (etcd_parse_error(body, len, &er)) {
        snprintf(why, wlen, "%s (HTTP %d)", er.message, status);
        if (er.code == ETCD_GRPC_UNAUTHENTICATED || strstr(er.message, "token")) {
            free(e->token);
            e->token = NULL;
        }
    } else {
        /* not etcd's JSON (the gateway's own refusals are plain text): its
         * first line, printable bytes only */
        char text[160];
        size_t n = 0;
        for (size_t i = 0; i < len && body[i] != '\n' && n + 1 < sizeof(text); i++)
            text[n++] =
                (unsigned char)body[i] >= 0x20 && (unsigned char)body[i] < 0x7f ? body[i] : '?';
        text[n] = '\0';
        snprintf(why, wlen, "HTTP %d%s%s", status, n ? ": " : "", text);
    }
}

static void on_ufinish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    struct ureq *r = e->ucur;
    if (!r || !e->uhave) return;
    e->ucur = NULL;
    e->uhave = false;
    event_del(e->udeadline);
    size_t len = evbuffer_get_length(e->ubody);
    const char *body = (const char *)evbuffer_pullup(e->ubody, -1);
    if (!body) body = "";
    if (e->ustatus == 200) {
        r->done(e, r, body, len);
    } else if (e->ustatus > 0) {
        char why[300];
        answer_error(e, e->ustatus, body, len, why, sizeof(why));
        if ((e->state == ETCD_WATCHING || e->state == ETCD_STOPPING) && e->cfg->username &&
            !e->token && !r->retried) {
            /* the token expired (etcd's auth-token-ttl): authenticate again
             * and send the request once more, the watch undisturbed */
            log_debug("fleet: %s: %s; authenticating again", r->path, why);
            r->retried = true;
            r->next = e->uhead;
            e->uhead = r;
            if (!e->utail) e->utail = r;
            if (auth_request(e)) {
                send_next(e);
                return;
            }
            return; /* the session ended and freed the queue, r with it */
        }
        if (r->key)
            written(e, r, why);
        else
            session_fail(e, "%s: %s", r->path, why);
    } else {
        char why[160];
        describe(e, e->uconn, why, sizeof(why));
        if (r->key)
            written(e, r, why); /* the next request connects again */
        else
            session_fail(e, "%s: %s", r->path, why);
    }
    ureq_free(r);
    if (e->state != ETCD_BACKOFF) send_next(e);
}

static void on_udeadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    struct ureq *r = e->ucur;
    if (!r) return;
    char why[160];
    snprintf(why, sizeof(why), "no answer within %llu ms", (unsigned long long)e->cfg->timeout_ms);
    if (!r->key) {
        session_fail(e, "%s: %s", r->path, why);
        return;
    }
    /* a write: its connection is dropped (the request with it) and the
     * next request connects again; a dead etcd is the lease's to find */
    evhttp_connection_free(e->uconn);
    e->uconn = NULL;
    e->ucur = NULL;
    e->uhave = false;
    event_del(e->ufinish);
    written(e, r, why);
    ureq_free(r);
    if (e->state != ETCD_BACKOFF) send_next(e);
}

static void send_next(struct etcd *e)
{
    if (e->ucur || !e->uhead) return;
    struct ureq *r = e->uhead;
    e->uhead = r->next;
    if (!e->uhead) e->utail = NULL;
    e->ucur = r;
    if (!e->uconn) {
        if (!(e->uconn = connect_to(e, endpoint(e)))) {
            session_fail(e, "cannot set up a connection");
            return;
        }
        evhttp_connection_set_max_body_size(e->uconn, ETCD_MAX_ANSWER);
        struct timeval tv;
        tv_ms(&tv, e->cfg->timeout_ms + 1000); /* backs up the deadline below */
        evhttp_connection_set_timeout_tv(e->uconn, &tv);
    }
    struct evhttp_request *req = evhttp_request_new(on_udone, e);
    if (!req || !add_headers(e, req) ||
        evbuffer_add(evhttp_request_get_output_buffer(req), r->body, strlen(r->body)) != 0) {
        if (req) evhttp_request_free(req);
        session_fail(e, "cannot build a request");
        return;
    }
    struct timeval tv;
    tv_ms(&tv, e->cfg->timeout_ms);
    evtimer_add(e->udeadline, &tv);
    if (evhttp_make_request(e->uconn, req, EVHTTP_REQ_POST, r->path) != 0 && !e->uhave) {
        e->ustatus = 0;
        e->uhave = true;
        event_active(e->ufinish, EV_TIMEOUT, 0);
    }
}

/* Queues a request; body and key (a write's, or NULL) are taken (NULL
 * body: out of memory, the session ends). */
static void send_req_key(struct etcd *e, const char *path, char *body, ureq_done done, char *key)
{
    struct ureq *r = body ? calloc(1, sizeof(*r)) : NULL;
    if (!r) {
        free(body);
        free(key);
        session_fail(e, "out of memory");
        return;
    }
    r->path = path;
    r->body = body;
    r->done = done;
    r->key = key;
    if (e->utail)
        e->utail->next = r;
    else
        e->uhead = r;
    e->utail = r;
    send_next(e);
}

static void send_req(struct etcd *e, const char *path, char *body, ureq_done done)
{
    send_req_key(e, path, body, done, NULL);
}

/* ---- the watch ---- */

static void watch_close(struct etcd *e)
{
    if (e->wconn) evhttp_connection_free(e->wconn);
    e->wconn = NULL;
    etcd_stream_clear(&e->ws);
    event_del(e->wfinish);
    event_del(e->wdeadline);
}

static void watch_end(struct etcd *e, const char *why)
{
    if (!e->wwhy[0]) snprintf(e->wwhy, sizeof(e->wwhy), "%s", why);
    event_active(e->wfinish, EV_TIMEOUT, 0);
}

/* TCP keepalive on the watch's socket (see ETCD_PROGRESS_S); best effort */
static void watch_tcp_keepalive(struct etcd *e)
{
    struct bufferevent *bev = e->wconn ? evhttp_connection_get_bufferevent(e->wconn) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return;
    int on = 1;
    int s = (int)(e->cfg->lease_ttl_ms / 3000);
    if (s < 1) s = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_KEEPIDLE
    int cnt = ETCD_TCP_KEEPALIVE_CNT;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &s, sizeof(s));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &s, sizeof(s));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#endif
}

static void keepalive_arm(struct etcd *e)
{
    uint64_t ms = e->cfg->lease_ttl_ms / 3;
    if (ms < 500) ms = 500;
    struct timeval tv;
    tv_ms(&tv, ms);
    evtimer_add(e->keepalive_ev, &tv);
}

static void watch_message(struct etcd *e, const struct etcd_watch_msg *m)
{
    if (m->canceled) {
        if (m->compact_revision > 0) {
            e->need_full = true;
            watch_end(e, "the revision to resume from was compacted: reading everything again");
        } else {
            char why[300];
            snprintf(why, sizeof(why), "watch cancelled%s%s", m->cancel_reason[0] ? ": " : "",
                     m->cancel_reason);
            watch_end(e, why);
        }
        return;
    }
    if (m->created && e->state == ETCD_WATCH) {
        e->state = ETCD_WATCHING;
        e->up_ms = clock_now_ms();
        watch_tcp_keepalive(e);
        event_del(e->wdeadline);
        keepalive_arm(e);
        if (e->h.up) e->h.up(e->arg, endpoint(e)->url);
    }
    if (m->n) {
        for (size_t i = 0; i < m->n; i++)
            if (m->events[i].kv.mod_revision > e->rev) e->rev = m->events[i].kv.mod_revision;
        if (e->h.events) e->h.events(e->arg, m);
    }
}

static void wchunk(struct etcd *e, struct evhttp_request *req);

static void on_wchunk(struct evhttp_request *req, void *arg)
{
    struct etcd *e = arg;
    if (!e->wconn || e->wwhy[0]) return;
    /* the hooks run from here may write (etcd_put): whatever ends the
     * session meanwhile is deferred to wfinish, outside libevent's stack */
    e->in_wchunk = true;
    wchunk(e, req);
    e->in_wchunk = false;
}

/* One message of the stream; false once the watch is over. */
static bool watch_one(struct etcd *e, const char *p, size_t len)
{
    struct etcd_watch_msg m;
    struct etcd_error er = {0};
    if (!etcd_parse_watch(p, len, &m, &er)) {
        if (er.code == ETCD_GRPC_UNAUTHENTICATED || strstr(er.message, "token")) {
            free(e->token);
            e->token = NULL;
        }
        char why[300];
        snprintf(why, sizeof(why), "watch: %s", er.message);
        watch_end(e, why);
        return false;
    }
    watch_message(e, &m);
    etcd_watch_clear(&m);
    return !e->wwhy[0];
}

static void wchunk(struct etcd *e, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    const void *p = n ? evbuffer_pullup(in, -1) : NULL;
    if (p && !etcd_stream_add(&e->ws, p, n)) {
        char why[160];
        snprintf(why, sizeof(why), "watch: a message longer than %u MiB (or out of memory)",
                 ETCD_MAX_WATCH_MSG >> 20);
        evbuffer_drain(in, n);
        watch_end(e, why);
        return;
    }
    evbuffer_drain(in, n);
    const char *msg;
    size_t len;
    while ((msg = etcd_stream_next(&e->ws, &len)))
        if (!watch_one(e, msg, len)) return;
}

static void on_wdone(struct evhttp_request *req, void *arg)
{
    struct etcd *e = arg;
    if (!e->wconn) return;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    char why[300];
    /* what the stream left without its '\n': an error that ended it, or
     * the body of an error answer */
    size_t len = 0;
    const char *body = etcd_stream_rest(&e->ws, &len);
    if (body && status == 200) {
        e->in_wchunk = true;
        bool go = watch_one(e, body, len);
        e->in_wchunk = false;
        if (!go) return;
    }
    if (status && status != 200) {
        if (!body) {
            struct evbuffer *in = evhttp_request_get_input_buffer(req);
            len = evbuffer_get_length(in);
            body = (const char *)evbuffer_pullup(in, -1);
        }
        char w[280];
        answer_error(e, status, body ? body : "", body ? len : 0, w, sizeof(w));
        snprintf(why, sizeof(why), "watch: %s", w);
    } else if (status == 200) {
        snprintf(why, sizeof(why), "watch: the stream ended");
    } else {
        char w[160];
        describe(e, e->wconn, w, sizeof(w));
        snprintf(why, sizeof(why), "watch: %s", w);
    }
    watch_end(e, why);
}

static void on_wfinish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    char why[sizeof(e->wwhy)];
    snprintf(why, sizeof(why), "%s", e->wwhy[0] ? e->wwhy : "watch ended");
    session_fail(e, "%s", why);
}

static void on_wdeadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    session_fail(e, "watch: not established within %llu ms",
                 (unsigned long long)e->cfg->timeout_ms);
}

static void watch_start(struct etcd *e)
{
    e->state = ETCD_WATCH;
    e->wwhy[0] = '\0';
    if (!(e->wconn = connect_to(e, endpoint(e)))) {
        session_fail(e, "cannot set up a connection");
        return;
    }
    struct timeval tv = {ETCD_WATCH_IDLE_S, 0};
    evhttp_connection_set_timeout_tv(e->wconn, &tv);
    char *body = etcd_req_watch(e->cfg->prefix, e->prefix_end, e->rev + 1);
    struct evhttp_request *req = body ? evhttp_request_new(on_wdone, e) : NULL;
    if (req) evhttp_request_set_chunked_cb(req, on_wchunk);
    if (!req || !add_headers(e, req) ||
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body)) != 0) {
        if (req) evhttp_request_free(req);
        free(body);
        session_fail(e, "cannot build the watch request");
        return;
    }
    free(body);
    tv_ms(&tv, e->cfg->timeout_ms);
    evtimer_add(e->wdeadline, &tv);
    if (evhttp_make_request(e->wconn, req, EVHTTP_REQ_POST, "/v3/watch") != 0)
        watch_end(e, "watch: cannot send the request");
}

/* ---- the session's steps ---- */

static void on_range(struct etcd *e, const struct ureq *rq, const char *body, size_t len)
{
    (void)rq;
    struct etcd_range r;
    struct etcd_error er = {0};
    if (!etcd_parse_range(body, len, &r, &er)) {
        session_fail(e, "read: %s", er.message);
        return;
    }
    e->rev = r.revision;
    e->need_full = false;
    if (e->h.full_read) e->h.full_read(e->arg, &r);
    etcd_range_clear(&r);
    watch_start(e);
}

static void read_or_watch(struct etcd *e)
{
    if (e->rev && !e->need_full) {
        watch_start(e);
        return;
    }
    e->state = ETCD_READ;
    send_req(e, "/v3/kv/range", etcd_req_range(e->cfg->prefix, e->prefix_end, 0), on_range);
}

static void on_grant(struct etcd *e, const struct ureq *rq, const char *body, size_t len)
{
    (void)rq;
    int64_t id = 0, ttl = 0;
    struct etcd_error er = {0};
    if (!etcd_parse_lease(body, len, &id, &ttl, &er)) {
        session_fail(e, "lease grant: %s", er.message);
        return;
    }
    e->lease = id;
    if (e->h.lease_ok) e->h.lease_ok(e->arg);
    if (e->state == ETCD_LEASE)
        read_or_watch(e);
    else if (e->state == ETCD_WATCHING && e->h.up) /* the old lease had expired: write again */
        e->h.up(e->arg, endpoint(e)->url);
}

static void lease_grant(struct etcd *e)
{
    int64_t ttl = (int64_t)((e->cfg->lease_ttl_ms + 999) / 1000);
    send_req(e, "/v3/lease/grant", etcd_req_lease_grant(ttl), on_grant);
}

static void on_keepalive(struct etcd *e, const struct ureq *rq, const char *body, size_t len)
{
    (void)rq;
    int64_t ttl = 0;
    struct etcd_error er = {0};
    if (!etcd_parse_keepalive(body, len, &ttl, &er)) {
        session_fail(e, "lease keepalive: %s", er.message);
        return;
    }
    if (ttl <= 0) {
        log_info("fleet: lease %llx expired; granting a new one", (unsigned long long)e->lease);
        e->lease = 0;
        /* cut off for longer than lease_ttl: what is known may be stale
         * (other leases expired meanwhile); read everything before the
         * watch is up again rather than catch up after it */
        if (e->state == ETCD_LEASE) e->need_full = true;
        lease_grant(e);
        return;
    }
    if (e->h.lease_ok) e->h.lease_ok(e->arg);
    if (e->state == ETCD_LEASE)
        read_or_watch(e);
    else if (e->state == ETCD_WATCHING)
        keepalive_arm(e);
}

static void lease_step(struct etcd *e)
{
    e->state = ETCD_LEASE;
    if (e->lease)
        send_req(e, "/v3/lease/keepalive", etcd_req_lease_id(e->lease), on_keepalive);
    else
        lease_grant(e);
}

static void on_auth(struct etcd *e, const struct ureq *rq, const char *body, size_t len)
{
    (void)rq;
    struct etcd_error er = {0};
    char *token;
    if (!etcd_parse_auth(body, len, &token, &er)) {
        session_fail(e, "authenticate: %s", er.message);
        return;
    }
    free(e->token);
    e->token = token;
    if (e->state == ETCD_AUTH) lease_step(e);
}

/* Puts an authentication at the head of the queue (false: the session
 * ended, with the reason). */
static bool auth_request(struct etcd *e)
{
    struct file_error fe;
    size_t len = 0;
    char *pw = file_read(e->cfg->password_file, ETCD_PASSWORD_MAX, &len, &fe);
    if (!pw || len > ETCD_PASSWORD_MAX) {
        char why[128];
        session_fail(e, "%s%s%s", e->cfg->password_file, pw ? " " : file_sep(&fe),
                     pw ? "is too large" : file_why(&fe, why, sizeof(why)));
        if (pw) file_free(pw, len);
        return false;
    }
    size_t n = len;
    while (n && (pw[n - 1] == '\n' || pw[n - 1] == '\r')) pw[--n] = '\0';
    char *body = etcd_req_auth(e->cfg->username, pw);
    file_free(pw, len);
    struct ureq *r = body ? calloc(1, sizeof(*r)) : NULL;
    if (!r) {
        free(body);
        session_fail(e, "out of memory");
        return false;
    }
    *r = (struct ureq){
        .path = "/v3/auth/authenticate", .body = body, .done = on_auth, .next = e->uhead};
    e->uhead = r;
    if (!e->utail) e->utail = r;
    return true;
}

static void auth_step(struct etcd *e)
{
    e->state = ETCD_AUTH;
    if (auth_request(e)) send_next(e);
}

static void session_next(struct etcd *e)
{
    log_debug("fleet: connecting to etcd at %s", endpoint(e)->url);
    if (e->cfg->username && !e->token)
        auth_step(e);
    else
        lease_step(e);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    if (e->state == ETCD_BACKOFF)
        session_next(e);
    else if (e->state == ETCD_STOPPING) /* the revoke's deadline */
        stop_done(e, "no answer in time");
}

static void on_keepalive_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct etcd *e = arg;
    if (e->state != ETCD_WATCHING) return;
    if (e->lease)
        send_req(e, "/v3/lease/keepalive", etcd_req_lease_id(e->lease), on_keepalive);
    else
        lease_grant(e);
}

static void session_fail(struct etcd *e, const char *fmt, ...)
{
    if (e->state == ETCD_BACKOFF || e->state == ETCD_STOPPED) return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (e->state == ETCD_STOPPING) {
        stop_done(e, why);
        return;
    }
    if (e->in_wchunk) {
        watch_end(e, why);
        return;
    }
    bool was_up = e->state == ETCD_WATCHING;
    bool token_gone = e->cfg->username && !e->token;
    if (was_up && clock_now_ms() - e->up_ms >= ETCD_SESSION_STABLE_MS)
        e->backoff_ms = ETCD_BACKOFF_FIRST_MS;
    unary_close(e);
    watch_close(e);
    event_del(e->keepalive_ev);
    e->state = ETCD_BACKOFF;
    char msg[700];
    snprintf(msg, sizeof(msg), "%s: %s", endpoint(e)->url, why);
    if (e->cfg->nendpoints) e->ep = (e->ep + 1) % e->cfg->nendpoints;
    unsigned ms = e->backoff_ms;
    /* an expired token is renewed at once, where the session was up */
    if (token_gone && was_up) ms = 0;
    e->backoff_ms =
        e->backoff_ms * 2 > ETCD_BACKOFF_MAX_MS ? ETCD_BACKOFF_MAX_MS : e->backoff_ms * 2;
    struct timeval tv;
    tv_ms(&tv, ms);
    evtimer_add(e->backoff_ev, &tv);
    if (e->h.down) e->h.down(e->arg, msg);
}

/* ---- the client ---- */

static bool copy_cfg(struct fleet_cfg *d, const struct fleet_cfg *s)
{
    memset(d, 0, sizeof(*d));
    *d = *s;
    d->endpoints = calloc(s->nendpoints ? s->nendpoints : 1, sizeof(*d->endpoints));
    d->instance = d->prefix = d->ca_file = d->cert = d->key = d->username = d->password_file = NULL;
    d->nendpoints = 0;
    if (!d->endpoints) return false;
    for (size_t i = 0; i < s->nendpoints; i++) {
        d->endpoints[i] = s->endpoints[i];
        d->endpoints[i].url = strdup(s->endpoints[i].url);
        d->endpoints[i].host = strdup(s->endpoints[i].host);
        d->nendpoints++;
        if (!d->endpoints[i].url || !d->endpoints[i].host) return false;
    }
#define DUP(f) (!s->f || (d->f = strdup(s->f)) != NULL)
    return DUP(instance) && DUP(prefix) && DUP(ca_file) && DUP(cert) && DUP(key) && DUP(username) &&
           DUP(password_file);
#undef DUP
}

struct etcd *etcd_new(struct event_base *base, const struct fleet_cfg *cfg,
                      const struct etcd_hooks *hooks, void *arg, char *err, size_t errlen)
{
    struct etcd *e = calloc(1, sizeof(*e));
    if (!e) goto oom;
    e->base = base;
    e->h = *hooks;
    e->arg = arg;
    e->cfg = calloc(1, sizeof(*e->cfg));
    e->backoff_ms = ETCD_BACKOFF_FIRST_MS;
    e->state = ETCD_BACKOFF;
    if (!e->cfg || !copy_cfg(e->cfg, cfg) || !cfg->nendpoints) goto oom;
    size_t pl = strlen(cfg->prefix) + 1;
    if (!(e->prefix_end = malloc(pl))) goto oom;
    etcd_prefix_end(cfg->prefix, e->prefix_end, pl);
    bool tls = false;
    for (size_t i = 0; i < cfg->nendpoints; i++) tls |= cfg->endpoints[i].tls;
    if (tls && !(e->ssl = ssl_ctx_new(cfg, err, errlen))) {
        etcd_free(e);
        return NULL;
    }
    e->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!e->dns) {
        /* no resolv.conf: IP literals and /etc/hosts still work */
        e->dns = evdns_base_new(base, 0);
        if (e->dns) evdns_base_load_hosts(e->dns, NULL);
    }
    e->ubody = evbuffer_new();
    etcd_stream_init(&e->ws, ETCD_MAX_WATCH_MSG);
    e->ufinish = event_new(base, -1, 0, on_ufinish, e);
    e->udeadline = evtimer_new(base, on_udeadline, e);
    e->wfinish = event_new(base, -1, 0, on_wfinish, e);
    e->wdeadline = evtimer_new(base, on_wdeadline, e);
    e->backoff_ev = evtimer_new(base, on_backoff, e);
    e->keepalive_ev = evtimer_new(base, on_keepalive_timer, e);
    if (!e->dns || !e->ubody || !e->ufinish || !e->udeadline || !e->wfinish || !e->wdeadline ||
        !e->backoff_ev || !e->keepalive_ev)
        goto oom;
    struct timeval now = {0, 0};
    evtimer_add(e->backoff_ev, &now);
    return e;
oom:
    snprintf(err, errlen, "fleet: out of memory");
    etcd_free(e);
    return NULL;
}

void etcd_free(struct etcd *e)
{
    if (!e) return;
    if (e->ufinish) unary_close(e);
    if (e->wfinish) watch_close(e);
    struct event *evs[] = {e->ufinish,   e->udeadline,  e->wfinish,
                           e->wdeadline, e->backoff_ev, e->keepalive_ev};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i]) event_free(evs[i]);
    if (e->ubody) evbuffer_free(e->ubody);
    etcd_stream_free(&e->ws);
    if (e->dns) evdns_base_free(e->dns, 0);
    SSL_CTX_free(e->ssl);
    if (e->cfg) fleet_cfg_free(e->cfg);
    free(e->prefix_end);
    free(e->token);
    free(e);
}

/* A write answered (why NULL), refused or unanswered: the caller's to
 * log, count and write again; the session goes on. */
static void written(struct etcd *e, const struct ureq *r, const char *why)
{
    if (e->h.written) e->h.written(e->arg, r->key, why);
}

static void on_put(struct etcd *e, const struct ureq *r, const char *body, size_t len)
{
    int64_t rev;
    struct etcd_error er = {0};
    written(e, r, etcd_parse_ok(body, len, &rev, &er) ? NULL : er.message);
}

static bool write_req(struct etcd *e, const char *path, char *body, const char *key)
{
    char *k = strdup(key);
    if (!k) {
        free(body);
        return false;
    }
    send_req_key(e, path, body, on_put, k);
    return true;
}

bool etcd_put(struct etcd *e, const char *key, const char *value, size_t vlen, bool with_lease)
{
    if (e->state != ETCD_WATCHING) return false;
    return write_req(e, "/v3/kv/put", etcd_req_put(key, value, vlen, with_lease ? e->lease : 0),
                     key);
}

bool etcd_delete(struct etcd *e, const char *key)
{
    if (e->state != ETCD_WATCHING) return false;
    return write_req(e, "/v3/kv/deleterange", etcd_req_delete(key, NULL), key);
}

/* ---- the end ---- */

static void stop_done(struct etcd *e, const char *why)
{
    if (e->state != ETCD_STOPPING) return;
    if (why)
        log_warn(
            "fleet: cannot revoke lease %llx at %s (%s): this instance's verdicts stay in etcd "
            "until it expires",
            (unsigned long long)e->lease, endpoint(e)->url, why);
    else
        log_info("fleet: lease %llx revoked: this instance's verdicts are gone from etcd",
                 (unsigned long long)e->lease);
    unary_close(e);
    event_del(e->backoff_ev);
    e->state = ETCD_STOPPED;
    e->lease = 0;
    if (e->h.stopped) e->h.stopped(e->arg);
}

static void on_revoke(struct etcd *e, const struct ureq *rq, const char *body, size_t len)
{
    (void)rq;
    int64_t rev;
    struct etcd_error er = {0};
    stop_done(e, etcd_parse_ok(body, len, &rev, &er) ? NULL : er.message);
}

void etcd_stop(struct etcd *e)
{
    if (!e || e->state == ETCD_STOPPING || e->state == ETCD_STOPPED) return;
    unary_close(e);
    watch_close(e);
    event_del(e->keepalive_ev);
    event_del(e->backoff_ev);
    e->state = ETCD_STOPPED;
    if (!e->lease) return;
    e->state = ETCD_STOPPING;
    /* one deadline for it all, an authentication included */
    struct timeval tv;
    tv_ms(&tv, e->cfg->timeout_ms);
    evtimer_add(e->backoff_ev, &tv);
    if (e->cfg->username && !e->token && !auth_request(e)) return;
    send_req(e, "/v3/lease/revoke", etcd_req_lease_id(e->lease), on_revoke);
}

bool etcd_stopping(const struct etcd *e)
{
    return e && e->state == ETCD_STOPPING;
}

enum etcd_state etcd_state(const struct etcd *e)
{
    return e->state;
}

const char *etcd_endpoint(const struct etcd *e)
{
    return endpoint(e)->url;
}

int64_t etcd_revision(const struct etcd *e)
{
    return e->rev;
}

int64_t etcd_lease(const struct etcd *e)
{
    return e->lease;
}
