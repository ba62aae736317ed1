#include "autoconf.h"

#include "control/probe.h"

#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "lib/file.h"
#include "lib/log.h"

struct ctx_cache {
    char *ca_file; /* NULL: the system store */
    SSL_CTX *ctx;
};

struct probe_env {
    struct event_base *base;
    struct evdns_base *dns;
    struct ctx_cache *ctxs;
    size_t nctx;
};

struct probe_env *probe_env_new(struct event_base *base, struct evdns_base *dns)
{
    struct probe_env *env = calloc(1, sizeof(*env));
    if (!env) return NULL;
    env->base = base;
    env->dns = dns;
    return env;
}

void probe_env_free(struct probe_env *env)
{
    if (!env) return;
    probe_env_forget_trust(env);
    free(env->ctxs);
    free(env);
}

void probe_env_forget_trust(struct probe_env *env)
{
    /* a probe in flight holds its own reference to its context */
    for (size_t i = 0; i < env->nctx; i++) {
        SSL_CTX_free(env->ctxs[i].ctx);
        free(env->ctxs[i].ca_file);
    }
    env->nctx = 0;
}

/* One SSL_CTX per trust store, made on first use after a start or reload. */
static SSL_CTX *ssl_ctx_for(struct probe_env *env, const char *ca_file, char *err, size_t errlen)
{
    for (size_t i = 0; i < env->nctx; i++) {
        const char *f = env->ctxs[i].ca_file;
        if ((!f && !ca_file) || (f && ca_file && strcmp(f, ca_file) == 0)) return env->ctxs[i].ctx;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* the file is read without ever blocking the loop (lib/file.h) */
    char why[256] = "";
    int ok = ca_file ? file_load_verify(ctx, ca_file, why, sizeof(why))
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        snprintf(err, errlen, "cannot load CA certificates%s%s%s%s", ca_file ? " from " : "",
                 ca_file ? ca_file : "", why[0] ? ": " : "", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct ctx_cache *n = realloc(env->ctxs, (env->nctx + 1) * sizeof(*n));
    if (!n) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    env->ctxs = n;
    n[env->nctx].ca_file = ca_file ? strdup(ca_file) : NULL;
    n[env->nctx].ctx = ctx;
    env->nctx++;
    return ctx;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    probe_done_cb cb = p->cb;
    void *cbarg = p->arg;
    struct probe_result res = p->res;
    probe_cancel(p);
    cb(cbarg, &res);
}

void probe_finish(struct probe *p, enum health_reason reason, int err, const char *detail)
{
    if (p->done) return;
    p->done = true;
    p->res.reason = reason;
    p->res.err = err;
    p->res.status = p->status;
    p->res.latency_ms = ms_since(&p->started);
    snprintf(p->res.detail, sizeof(p->res.detail), "%s", detail ? detail : "");
    /* tear down now (no more callbacks), report from the loop */
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
        p->ssl = NULL; /* freed with the bufferevent */
    }
    event_del(p->deadline);
    event_active(p->deliver, EV_TIMEOUT, 0);
}

static void tls_error_text(struct probe *p, char *buf, size_t len)
{
    unsigned long e = bufferevent_get_openssl_error(p->bev);
    long vr = p->ssl ? SSL_get_verify_result(p->ssl) : X509_V_OK;
    if (vr != X509_V_OK)
        snprintf(buf, len, "certificate: %s", X509_verify_cert_error_string(vr));
    else if (e)
        snprintf(buf, len, "%s",
                 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "handshake failed");
    else
        snprintf(buf, len, "handshake failed");
    /* drain the rest of the queue so it does not leak into the next probe */
    while (bufferevent_get_openssl_error(p->bev)) {
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct probe *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        p->connected = true;
        p->kind->connected(p);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        p->kind->eof(p);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        int dnserr = bufferevent_socket_get_dns_error(bev);
        int err = EVUTIL_SOCKET_ERROR();
        char buf[96];
        if (dnserr) {
            probe_finish(p, HR_DNS, dnserr, evutil_gai_strerror(dnserr));
        } else if (p->ssl && (bufferevent_get_openssl_error(bev) ||
                              SSL_get_verify_result(p->ssl) != X509_V_OK)) {
            tls_error_text(p, buf, sizeof(buf));
            probe_finish(p, HR_TLS, 0, buf);
        } else if (!p->connected) {
            probe_finish(p, err == ECONNREFUSED ? HR_CONNECT_REFUSED : HR_CONNECT, err,
                         err ? strerror(err) : "connect failed");
        } else if (p->ssl && !p->status && err == 0) {
            probe_finish(p, HR_TLS, 0, "handshake failed");
        } else {
            probe_finish(p, HR_RESET, err, err ? strerror(err) : "connection reset");
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    p->kind->readable(p);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    char buf[64];
    snprintf(buf, sizeof(buf), "no answer within %llums", (unsigned long long)p->c->timeout_ms);
    if (!p->connected)
        probe_finish(p, HR_CONNECT_TIMEOUT, ETIMEDOUT, buf);
    else
        probe_finish(p, HR_TIMEOUT, ETIMEDOUT, buf);
}

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

struct probe *probe_start(struct probe_env *env, const struct check_cfg *c, probe_done_cb cb,
                          void *arg)
{
    struct probe *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->env = env;
    p->c = c;
    p->kind = c->type == CHECK_TCP ? &probe_kind_tcp : &probe_kind_http;
    p->cb = cb;
    p->arg = arg;
    p->content_length = -1;
    clock_gettime(CLOCK_MONOTONIC, &p->started);
    p->deadline = evtimer_new(env->base, on_deadline, p);
    p->deliver = event_new(env->base, -1, 0, on_deliver, p);
    if (!p->deadline || !p->deliver) goto oom;

    char err[128];
    if (c->tls && c->type == CHECK_HTTP) {
        SSL_CTX *ctx = ssl_ctx_for(env, c->ca_file, err, sizeof(err));
        if (!ctx) {
            probe_finish(p, HR_TLS, 0, err);
            return p;
        }
        p->ssl = SSL_new(ctx);
        if (!p->ssl) goto oom;
        if (!is_ip_literal(c->host)) SSL_set_tlsext_host_name(p->ssl, c->host);
        if (c->tls_verify) {
            SSL_set_verify(p->ssl, SSL_VERIFY_PEER, NULL);
            X509_VERIFY_PARAM *vp = SSL_get0_param(p->ssl);
            if (is_ip_literal(c->host))
                X509_VERIFY_PARAM_set1_ip_asc(vp, c->host);
            else
                X509_VERIFY_PARAM_set1_host(vp, c->host, 0);
        } else {
            SSL_set_verify(p->ssl, SSL_VERIFY_NONE, NULL);
        }
        p->bev = bufferevent_openssl_socket_new(env->base, -1, p->ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!p->bev) {
            SSL_free(p->ssl);
            p->ssl = NULL;
            goto oom;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(p->bev, 1);
    } else {
        p->bev = bufferevent_socket_new(env->base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!p->bev) goto oom;
    }
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    bufferevent_setwatermark(p->bev, EV_READ, 0, PROBE_MAX_BODY + 16384);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    struct timeval tv = {(time_t)(c->timeout_ms / 1000),
                         (suseconds_t)(c->timeout_ms % 1000) * 1000};
    evtimer_add(p->deadline, &tv);
    if (bufferevent_socket_connect_hostname(p->bev, env->dns, AF_UNSPEC, c->host, (int)c->port) <
        0) {
        int dnserr = bufferevent_socket_get_dns_error(p->bev);
        int e = EVUTIL_SOCKET_ERROR();
        if (dnserr)
            probe_finish(p, HR_DNS, dnserr, evutil_gai_strerror(dnserr));
        else
            probe_finish(p, e == ECONNREFUSED ? HR_CONNECT_REFUSED : HR_CONNECT, e,
                         e ? strerror(e) : "connect failed");
    }
    return p;
oom:
    probe_cancel(p);
    return NULL;
}

void probe_rebind(struct probe *p, const struct check_cfg *c, void *arg)
{
    p->c = c;
    p->arg = arg;
}

void probe_cancel(struct probe *p)
{
    if (!p) return;
    if (p->bev)
        bufferevent_free(p->bev);
    else if (p->ssl)
        SSL_free(p->ssl);
    if (p->deadline) event_free(p->deadline);
    if (p->deliver) event_free(p->deliver);
    free(p);
}
