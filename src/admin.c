#include "autoconf.h"

#include "admin.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "health.h"
#include "listener.h"
#include "log.h"
#include "select.h"
#include "server.h"

extern const char admin_page[];
extern const size_t admin_page_len;

#define ADMIN_TIMEOUT_S 10
#define ADMIN_MAX_BODY  4096

struct admin {
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct listen_addr addr;
    struct daemon_view *v;
};

/* ---- JSON ---- */

static void jstr(struct evbuffer *o, const char *s)
{
    if (!s) {
        evbuffer_add(o, "null", 4);
        return;
    }
    evbuffer_add(o, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            evbuffer_add_printf(o, "\\%c", c);
        else if (c < 0x20)
            evbuffer_add_printf(o, "\\u%04x", c);
        else
            evbuffer_add(o, s, 1);
    }
    evbuffer_add(o, "\"", 1);
}

static const char *effective_state(const struct region *r)
{
    if (r->state == REGION_DRAIN || r->weight == 0) return "drain";
    return health_region_up(r) ? "up" : "down";
}

static const char *balance_name(enum balance b)
{
    return b == BALANCE_LATENCY ? "latency" : b == BALANCE_HASH ? "hash" : "weighted";
}

static const char *all_down_name(enum all_down_action a)
{
    return a == ALL_DOWN_FALLBACK ? "fallback" : a == ALL_DOWN_REJECT ? "reject" : "fail_open";
}

static void chosen_json(struct evbuffer *o, const struct pool *p)
{
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    evbuffer_add(o, "[", 1);
    if (ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT) {
        jstr(o, ch->action == CHOICE_FALLBACK ? "fallback" : "reject");
    } else {
        uint64_t seen = 0;
        bool first = true;
        for (uint32_t i = 0; i < ch->n; i++) {
            unsigned r = ch->seq[i];
            if (seen >> r & 1) continue;
            seen |= UINT64_C(1) << r;
            if (!first) evbuffer_add(o, ",", 1);
            jstr(o, p->regions[r].name);
            first = false;
        }
    }
    evbuffer_add(o, "]", 1);
}

static void num_or_null(struct evbuffer *o, bool have, double v)
{
    if (have && isfinite(v))
        evbuffer_add_printf(o, "%.3f", v);
    else
        evbuffer_add(o, "null", 4);
}

void admin_status_json(struct evbuffer *o, const struct daemon_view *v)
{
    const struct config *c = server_config(v->srv);
    evbuffer_add_printf(o,
                        "{\"version\":\"%s\",\"now\":%lld,\"start_time\":%lld,\"config\":{"
                        "\"path\":",
                        PACKAGE_VERSION, (long long)time(NULL), (long long)v->start_time);
    jstr(o, v->config_path);
    evbuffer_add_printf(o, ",\"loaded_at\":%lld,\"last_reload\":", (long long)c->loaded_at);
    if (v->reloads_ok + v->reloads_failed)
        evbuffer_add_printf(o, "{\"time\":%lld,\"success\":%s}", (long long)v->last_reload,
                            v->last_reload_ok ? "true" : "false");
    else
        evbuffer_add(o, "null", 4); /* no SIGHUP yet */
    evbuffer_add_printf(o,
                        ",\"reloads\":{\"success\":%llu,\"failure\":%llu}},"
                        "\"connections_active\":%u,\"pools\":[",
                        (unsigned long long)v->reloads_ok, (unsigned long long)v->reloads_failed,
                        server_connections(v->srv));
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        if (i) evbuffer_add(o, ",", 1);
        evbuffer_add(o, "{\"name\":", 8);
        jstr(o, p->name);
        evbuffer_add(o, ",\"hosts\":[", 10);
        for (size_t k = 0; k < p->nhosts; k++) {
            if (k) evbuffer_add(o, ",", 1);
            jstr(o, p->hosts[k]);
        }
        const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
        bool all_down = ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT ||
                        select_tier(p, ch->up) == 0; /* fail_open counts too */
        uint64_t total = 0;
        for (size_t k = 0; k < p->nregions; k++)
            total += metrics_requests(v, c, p->name, p->regions[k].name, p->status,
                                      p->regions[k].tmpl.slot);
        evbuffer_add_printf(o,
                            "],\"default\":%s,\"balance\":\"%s\",\"all_down\":\"%s\","
                            "\"all_down_active\":%s,\"requests\":%llu,\"chosen\":",
                            p->is_default ? "true" : "false", balance_name(p->balance),
                            all_down_name(p->all_down), all_down ? "true" : "false",
                            (unsigned long long)total);
        chosen_json(o, p);
        evbuffer_add(o, ",\"regions\":[", 12);
        for (size_t k = 0; k < p->nregions; k++) {
            const struct region *r = &p->regions[k];
            const struct health *h = r->health;
            if (k) evbuffer_add(o, ",", 1);
            evbuffer_add(o, "{\"name\":", 8);
            jstr(o, r->name);
            evbuffer_add(o, ",\"url\":", 7);
            jstr(o, r->url);
            evbuffer_add_printf(o,
                                ",\"state\":\"%s\",\"override\":\"%s\",\"check_up\":%s,"
                                "\"weight\":%u,\"priority\":%u,\"last_check\":",
                                effective_state(r), region_state_name(r->state),
                                h && h->st.up ? "true" : "false", r->weight, r->priority);
            if (h && h->probes) {
                evbuffer_add_printf(o, "{\"time\":%lld,\"ok\":%s,\"reason\":\"%s\",\"detail\":",
                                    (long long)h->last_time,
                                    h->last.reason == HR_OK ? "true" : "false",
                                    health_reason_label(h->last.reason));
                jstr(o, h->last.detail);
                evbuffer_add(o, ",\"latency_ms\":", 14);
                num_or_null(o, true, h->last.latency_ms);
                if (h->last.status)
                    evbuffer_add_printf(o, ",\"status\":%d}", h->last.status);
                else
                    evbuffer_add(o, ",\"status\":null}", 15);
            } else {
                evbuffer_add(o, "null", 4);
            }
            uint64_t req = metrics_requests(v, c, p->name, r->name, p->status, r->tmpl.slot);
            evbuffer_add_printf(o,
                                ",\"consecutive_successes\":%u,\"consecutive_failures\":%u,"
                                "\"latency_ms\":",
                                h ? h->st.succ : 0, h ? h->st.fail : 0);
            num_or_null(o, h && h->st.have_latency, h ? h->st.latency_ms : 0);
            evbuffer_add_printf(o, ",\"requests\":%llu,\"last_change\":", (unsigned long long)req);
            if (h && h->changes)
                evbuffer_add_printf(o, "%lld", (long long)h->last_change);
            else
                evbuffer_add(o, "null", 4); /* no change since the start */
            evbuffer_add_printf(o, ",\"state_changes\":%llu}",
                                (unsigned long long)(h ? h->changes : 0));
        }
        evbuffer_add(o, "]}", 2);
    }
    evbuffer_add(o, "]}\n", 3);
}

/* ---- HTTP ---- */

static bool allowed(struct evhttp_request *req, const struct config *c)
{
    struct evhttp_connection *con = evhttp_request_get_connection(req);
    const struct sockaddr *sa = con ? evhttp_connection_get_addr(con) : NULL;
    if (!sa) return false;
    for (size_t i = 0; i < c->nadmin_allow; i++)
        if (cidr_match(&c->admin_allow[i], sa)) return true;
    return false;
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_send_reply(req, code, reason, body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const struct daemon_view *v = a->v;
    const struct config *c = server_config(v->srv);
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    if (!allowed(req, c)) {
        evbuffer_add_printf(body, "forbidden\n");
        reply(req, 403, "Forbidden", "text/plain; charset=utf-8", body);
        evbuffer_free(body);
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(body, "method not allowed\n");
        reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", body);
        evbuffer_free(body);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path) path = "/";
    if (strcmp(path, "/healthz") == 0) {
        bool stopping = server_stopping(v->srv);
        evbuffer_add_printf(body, stopping ? "stopping\n" : "ok\n");
        reply(req, stopping ? 503 : 200, stopping ? "Service Unavailable" : "OK",
              "text/plain; charset=utf-8", body);
    } else if (strcmp(path, "/status") == 0) {
        admin_status_json(body, v);
        reply(req, 200, "OK", "application/json", body);
    } else if (strcmp(path, "/metrics") == 0) {
        metrics_render(body, v);
        reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        evbuffer_add_reference(body, admin_page, admin_page_len, NULL, NULL);
        reply(req, 200, "OK", "text/html; charset=utf-8", body);
    } else {
        evbuffer_add_printf(body, "not found; try /, /status, /metrics or /healthz\n");
        reply(req, 404, "Not Found", "text/plain; charset=utf-8", body);
    }
    evbuffer_free(body);
}

static bool attach(struct admin *a, const struct listen_addr *addr, int fd, char *err,
                   size_t errlen)
{
    struct evhttp_bound_socket *b = evhttp_accept_socket_with_handle(a->http, fd);
    if (!b) {
        close(fd);
        snprintf(err, errlen, "admin listen %s: cannot accept", addr->text);
        return false;
    }
    if (a->bound) evhttp_del_accept_socket(a->http, a->bound); /* closes the old fd */
    a->bound = b;
    a->addr = *addr;
    log_info("admin listening on %s", addr->text);
    return true;
}

static int open_admin(const struct listen_addr *addr, char *err, size_t errlen)
{
    char e[200];
    int fd = listener_open(addr, false, e, sizeof(e));
    if (fd < 0) snprintf(err, errlen, "admin %s", e);
    return fd;
}

struct admin *admin_start(struct event_base *base, struct daemon_view *v, const struct config *cfg,
                          char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->v = v;
    a->http = evhttp_new(base);
    if (!a->http) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    /* every method reaches on_request: the allow check comes first, then 405 */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, on_request, a);
    if (cfg->admin) {
        int fd = open_admin(&cfg->admin_listen, err, errlen);
        if (fd < 0 || !attach(a, &cfg->admin_listen, fd, err, errlen)) {
            admin_stop(a);
            return NULL;
        }
    }
    return a;
}

bool admin_prepare(struct admin *a, const struct config *cfg, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (!cfg->admin || (a->bound && strcmp(a->addr.text, cfg->admin_listen.text) == 0)) return true;
    *fd = open_admin(&cfg->admin_listen, err, errlen);
    return *fd >= 0;
}

void admin_commit(struct admin *a, const struct config *cfg, int fd)
{
    char err[200];
    if (!cfg->admin) {
        if (a->bound) {
            log_info("closing admin listener %s", a->addr.text);
            evhttp_del_accept_socket(a->http, a->bound);
            a->bound = NULL;
        }
        return;
    }
    if (fd >= 0 && !attach(a, &cfg->admin_listen, fd, err, sizeof(err))) log_error("%s", err);
}

void admin_stop(struct admin *a)
{
    if (!a) return;
    if (a->http) evhttp_free(a->http);
    free(a);
}
