#include "autoconf.h"

#include "admin/admin.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_config.h"
#include "admin/recent.h"
#include "events/events.h"
#include "fleet/fleet.h"
#include "control/health.h"
#include "control/schedule.h"
#include "lib/html.h"
#include "lib/clock.h"
#include "lib/json.h"
#include "control/listener.h"
#include "lib/lit.h"
#include "lib/log.h"
#include "serve/select.h"
#include "control/server.h"
#include "control/acme.h"
#include "control/acme_config.h"
#include "control/tls_config.h"
#include "serve/tls.h"

extern const char admin_page[];
extern const size_t admin_page_len;

#define ADMIN_TIMEOUT_S 10
#define ADMIN_MAX_BODY  4096

/* GET /events: each subscriber's unsent output beyond its replay is
 * bounded (a client that does not read is dropped), so is their number; a
 * comment line every SSE_KEEPALIVE_S keeps proxies and clients aware of a
 * live stream. A client has nothing to send after its request: what it
 * sends ends its stream, and at most SSE_MAX_INPUT of it is read. */
#define SSE_MAX_SUBSCRIBERS 64
#define SSE_MAX_BUFFERED    (256 * 1024)
#define SSE_MAX_INPUT       4096
#define SSE_KEEPALIVE_S     15
#define SSE_RETRY_MS        2000
#define SSE_QUEUE           16 /* wake drains it at once; a bound all the same */

struct sse_sub;

struct admin {
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct listen_addr addr;
    struct daemon_view *v;
    struct event_base *base;
    struct sse_sub *subs; /* GET /events streams */
    unsigned nsubs;
    struct event *keepalive; /* every SSE_KEEPALIVE_S while there are streams */
    struct event *reap;      /* closes the streams marked `dead` (deferred from wake) */
    struct recent *recent;   /* the last minute's requests (the share column) */
    struct event *sample;    /* every RECENT_TICK_S: a sample for recent */
};

/* ---- JSON ---- */

static const char *effective_state(const struct region *r)
{
    if (r->op == REGION_DRAIN || r->weight == 0) return "drain";
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
    evbuffer_add(o, LIT("["));
    if (ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT) {
        json_str(o, ch->action == CHOICE_FALLBACK ? "fallback" : "reject");
    } else {
        uint64_t seen = 0;
        bool first = true;
        for (uint32_t i = 0; i < ch->n; i++) {
            unsigned r = ch->seq[i];
            if (seen >> r & 1) continue;
            seen |= UINT64_C(1) << r;
            if (!first) evbuffer_add(o, LIT(","));
            json_str(o, p->regions[r].name);
            first = false;
        }
    }
    evbuffer_add(o, LIT("]"));
}

static void num_or_null(struct evbuffer *o, bool have, double v)
{
    if (have && isfinite(v))
        evbuffer_add_printf(o, "%.3f", v);
    else
        evbuffer_add(o, LIT("null"));
}

/* The operator state in force for region k of pool p (schedule.h). */
static const struct sched_region *op_of(const struct config *c, const struct pool *p, size_t k)
{
    return &c->sched_now->pools[p - c->pools][k];
}

/* "config" or "maintenance:NAME" */
static void op_source(char *b, size_t len, const struct sched_region *s)
{
    if (s->source == SCHED_SOURCE_WINDOW)
        snprintf(b, len, "maintenance:%s", s->window);
    else if (s->source == SCHED_SOURCE_FLEET)
        snprintf(b, len, "fleet:%s", s->key);
    else
        snprintf(b, len, "%s", sched_source_name(s->source));
}

/* An instant as an RFC 3339 string (the epoch is an instant like any other) */
static void time_json(struct evbuffer *o, int64_t ms)
{
    char t[SCHED_TIME_LEN];
    sched_format_time(ms, t, sizeof(t));
    json_str(o, t);
}

/* ... or null where there is none (has is false) */
static void time_or_null(struct evbuffer *o, bool has, int64_t ms)
{
    if (has)
        time_json(o, ms);
    else
        evbuffer_add(o, LIT("null"));
}

/* "maintenance": every window of the config and its phase now */
static void maintenance_json(struct evbuffer *o, const struct config *c)
{
    const struct sched_model *m = c->sched;
    evbuffer_add(o, LIT("\"maintenance\":["));
    for (size_t k = 0; k < m->nwindows; k++) {
        const struct sched_window *w = &m->windows[k];
        if (k) evbuffer_add(o, LIT(","));
        evbuffer_add(o, LIT("{\"name\":"));
        json_str(o, w->name);
        evbuffer_add(o, LIT(",\"from\":"));
        time_json(o, w->from_ms);
        evbuffer_add(o, LIT(",\"until\":"));
        time_json(o, w->until_ms);
        evbuffer_add_printf(o, ",\"state\":\"%s\",\"regions\":[", region_state_name(w->state));
        for (size_t t = 0; t < w->ntargets; t++) {
            const struct pool *p = &c->pools[w->targets[t].pool];
            char pr[160];
            snprintf(pr, sizeof(pr), "%s/%s", p->name, p->regions[w->targets[t].region].name);
            if (t) evbuffer_add(o, LIT(","));
            json_str(o, pr);
        }
        evbuffer_add(o, LIT("],\"reason\":"));
        json_str(o, w->reason);
        evbuffer_add_printf(o, ",\"phase\":\"%s\"}", sched_phase_name(c->sched_now->phases[k]));
    }
    evbuffer_add(o, LIT("]"));
}

/* ---- why: how a pool's current choice came about ---- */

/* Why region k of p gets no traffic: its operator state in force (and
 * where that comes from), its weight, or its health check. */
static void why_out(struct evbuffer *o, const struct config *c, const struct pool *p, size_t k)
{
    const struct region *r = &p->regions[k];
    const struct sched_region *op = op_of(c, p, k);
    evbuffer_add_printf(o, "%s ", r->name);
    if (r->op == REGION_DOWN || r->op == REGION_DRAIN) {
        const char *verb = r->op == REGION_DRAIN ? "drained" : "marked down";
        char t[SCHED_TIME_LEN];
        if (op->source == SCHED_SOURCE_WINDOW) {
            evbuffer_add_printf(o, "%s by maintenance %s", verb, op->window);
            if (op->reason) evbuffer_add_printf(o, " (%s)", op->reason);
            return;
        }
        if (op->source == SCHED_SOURCE_FLEET) {
            evbuffer_add_printf(o, "%s by fleet drain %s", verb, op->key);
            if (op->reason) evbuffer_add_printf(o, " (%s)", op->reason);
            return;
        }
        /* the end, or "until removed" where the override has none */
        if (op->has_until)
            sched_format_time(op->until_ms, t, sizeof(t));
        else
            snprintf(t, sizeof(t), "removed");
        evbuffer_add_printf(o, "%s by the config override (%s%suntil %s)", verb,
                            op->reason ? op->reason : "", op->reason ? ", " : "", t);
        return;
    }
    if (r->weight == 0) {
        evbuffer_add(o, LIT("weight 0"));
        return;
    }
    const struct health *h = r->health;
    if (!h || !h->probes) {
        evbuffer_add(o, LIT("down (its initial state; not checked yet)"));
    } else if (h->st.fail && h->last.reason != HR_OK) {
        /* it went down after `fall` failures; the streak goes on counting */
        unsigned n = h->st.fail, fall = r->check->fall;
        const char *step = health_reason_phase(h->last.reason),
                   *sep = h->last.detail[0] ? ": " : "";
        if (h->st.checked && n >= fall) {
            evbuffer_add_printf(o, "down after %u failure%s (%s%s%s", fall, fall == 1 ? "" : "s",
                                step, sep, h->last.detail);
            if (n > fall) evbuffer_add_printf(o, "; %u in a row now", n);
            evbuffer_add(o, LIT(")"));
        } else { /* down since the start, or again after a success */
            evbuffer_add_printf(o, "down (%u failure%s in a row: %s%s%s)", n, n == 1 ? "" : "s",
                                step, sep, h->last.detail);
        }
    } else {
        evbuffer_add_printf(o, "down (%u of %u successes needed to come back)", h->st.succ,
                            r->check->rise);
    }
}

/* The next priority above prev among p's regions (prev: -1 for the
 * lowest), or -1 if none. */
static long next_priority(const struct pool *p, long prev)
{
    long best = -1;
    for (size_t k = 0; k < p->nregions; k++) {
        long pr = (long)p->regions[k].priority;
        if (pr > prev && (best < 0 || pr < best)) best = pr;
    }
    return best;
}

/* What keeps region k of p from traffic, in a word: "drained", "marked
 * down", "weight 0" or "down" (why_out() says it at length). The page's
 * script says the same (outWord()). */
static const char *out_word(const struct region *r)
{
    if (r->op == REGION_DRAIN) return "drained";
    if (r->op == REGION_DOWN) return "marked down";
    if (r->weight == 0) return "weight 0";
    return "down";
}

/* The all-down action in force: "fallback to URL", "reject", "fail_open to
 * eu, us" (long) or "fallback", "reject", "fail_open" (short). */
static void all_down_action(struct evbuffer *o, const struct pool *p, const struct choice *ch,
                            bool lng)
{
    if (ch->action == CHOICE_FALLBACK) {
        evbuffer_add(o, LIT("fallback"));
        if (lng) evbuffer_add_printf(o, " to %s", p->all_down_url ? p->all_down_url : "?");
    } else if (ch->action == CHOICE_REJECT) {
        evbuffer_add(o, LIT("reject"));
    } else { /* fail_open: the regions as if their checks passed */
        evbuffer_add(o, LIT("fail_open"));
        if (!lng) return;
        evbuffer_add(o, LIT(" to "));
        uint64_t seen = 0;
        for (uint32_t i = 0; i < ch->n; i++) seen |= UINT64_C(1) << ch->seq[i];
        bool first = true;
        for (size_t k = 0; k < p->nregions; k++) {
            if (!(seen >> k & 1)) continue;
            evbuffer_add_printf(o, "%s%s", first ? "" : ", ", p->regions[k].name);
            first = false;
        }
    }
}

/* True while no region of p may receive traffic: the all_down action
 * decides (fail_open included). */
static bool pool_all_down(const struct pool *p, const struct choice *ch)
{
    return ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT ||
           select_tier(p, ch->up) == 0;
}

#define ARROW " \xe2\x86\x92 " /* → */

/* Writes one line: which tier is active and why every better region is
 * out, e.g. "tier 1 unavailable: eu-west drained by maintenance eu-west-db
 * (CHG-1234), eu-central down after 3 failures (connect: Connection
 * refused); tier 2: us-east"; or, when no region may receive traffic, why
 * each is out and what happens instead: "no region may receive traffic: eu
 * down after 3 failures (...), us drained by ... → fallback to URL". Main
 * thread (reads health and maint state). */
static void pool_why(struct evbuffer *o, const struct config *c, const struct pool *p)
{
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    uint64_t tier = select_tier(p, ch->up), chosen = 0;
    if (pool_all_down(p, ch)) {
        evbuffer_add(o, LIT("no region may receive traffic: "));
        for (size_t k = 0; k < p->nregions; k++) {
            if (k) evbuffer_add(o, LIT(", "));
            why_out(o, c, p, k);
        }
        evbuffer_add(o, LIT(ARROW));
        all_down_action(o, p, ch, true);
        return;
    }
    long active = -1;
    for (size_t k = 0; k < p->nregions && active < 0; k++)
        if (tier >> k & 1) active = (long)p->regions[k].priority;
    for (uint32_t i = 0; i < ch->n; i++) chosen |= UINT64_C(1) << ch->seq[i];
    bool first_tier = true;
    for (long pr = next_priority(p, -1); pr >= 0 && pr < active; pr = next_priority(p, pr)) {
        evbuffer_add_printf(o, "%stier %ld unavailable: ", first_tier ? "" : "; ", pr);
        first_tier = false;
        bool first = true;
        for (size_t k = 0; k < p->nregions; k++) {
            if ((long)p->regions[k].priority != pr) continue;
            if (!first) evbuffer_add(o, LIT(", "));
            why_out(o, c, p, k);
            first = false;
        }
    }
    if (!first_tier) evbuffer_add(o, LIT("; "));
    evbuffer_add_printf(o, "tier %ld: ", active);
    bool first = true;
    for (size_t k = 0; k < p->nregions; k++) {
        if (!(chosen >> k & 1)) continue;
        evbuffer_add_printf(o, "%s%s", first ? "" : ", ", p->regions[k].name);
        first = false;
    }
    if (ch->leader >= 0 && __builtin_popcountll(tier) > 1)
        evbuffer_add(o, LIT(" (the lowest latency)"));
    first = true;
    for (size_t k = 0; k < p->nregions; k++) {
        if ((long)p->regions[k].priority != active || (tier >> k & 1)) continue;
        evbuffer_add_printf(o, "%s", first ? "; out of that tier: " : ", ");
        why_out(o, c, p, k);
        first = false;
    }
}

/* The short form of an all-down pool's why, for the pill beside its name:
 * "no region may receive traffic: eu down, us drained → fallback". */
static void pool_all_down_short(struct evbuffer *o, const struct pool *p, const struct choice *ch)
{
    evbuffer_add(o, LIT("no region may receive traffic: "));
    for (size_t k = 0; k < p->nregions; k++)
        evbuffer_add_printf(o, "%s%s %s", k ? ", " : "", p->regions[k].name,
                            out_word(&p->regions[k]));
    evbuffer_add(o, LIT(ARROW));
    all_down_action(o, p, ch, false);
}

/* What b holds as a string (NULL on OOM), b freed; the caller frees it. */
static char *take_str(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    if (s) {
        evbuffer_remove(b, s, n);
        s[n] = '\0';
    }
    evbuffer_free(b);
    return s;
}

/* pool_why() as a string (NULL on OOM); the caller frees it. */
static char *pool_why_str(const struct config *c, const struct pool *p)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) return NULL;
    pool_why(b, c, p);
    return take_str(b);
}

/* pool_all_down_short() as a string (NULL on OOM); the caller frees it. */
static char *pool_all_down_str(const struct pool *p, const struct choice *ch)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) return NULL;
    pool_all_down_short(b, p, ch);
    return take_str(b);
}

/* The share column's window, one per document, the same for /status and
 * the page: each region's redirects over the last minute (since the start
 * during the first minute; recent.h). */
struct share_window {
    struct recent_window w;
    long long seconds; /* its length */
};

static struct share_window share_window(const struct daemon_view *v)
{
    struct share_window sw = {{0, -1}, (long long)(time(NULL) - v->start_time)};
    if (v->recent) {
        uint64_t now = clock_now_ms();
        sw.w = recent_window(v->recent, now);
        sw.seconds = (long long)((now - sw.w.since_ms + 500) / 1000);
    }
    if (sw.seconds < 0) sw.seconds = 0;
    return sw;
}

/* "last minute", or "since start" during the first minute */
static const char *share_window_name(const struct share_window *sw)
{
    return sw->seconds >= RECENT_WINDOW_S ? "last minute" : "since start";
}

/* Region k of p's redirects over the window; total: its counter now. */
static uint64_t region_recent(const struct daemon_view *v, const struct share_window *sw,
                              const struct pool *p, size_t k, uint64_t total)
{
    uint64_t base = v->recent ? recent_base(v->recent, &sw->w, p->name, p->regions[k].name) : 0;
    return total > base ? total - base : 0;
}

static long long days_left(time_t not_after, time_t now)
{
    long long d = (long long)(not_after - now);
    return d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
}

/* "listeners": each address, and the certificates of a TLS one */
static void listeners_json(struct evbuffer *o, const struct config *c, time_t now)
{
    evbuffer_add(o, LIT("\"listeners\":["));
    for (size_t i = 0; i < c->nlisten; i++) {
        const struct tls_srv *t = c->listen_tls[i];
        if (i) evbuffer_add(o, LIT(","));
        evbuffer_add(o, LIT("{\"address\":"));
        json_str(o, c->listen[i].text);
        if (!t) {
            evbuffer_add(o, LIT(",\"tls\":false}"));
            continue;
        }
        evbuffer_add(o, LIT(",\"tls\":true,\"certificates\":["));
        for (size_t k = 0; k < tls_srv_ncerts(t); k++) {
            struct tls_cert_info ci = tls_srv_cert(t, k);
            char when[32];
            struct tm tm;
            if (!gmtime_r(&ci.not_after, &tm) ||
                !strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm))
                when[0] = '\0';
            if (k) evbuffer_add(o, LIT(","));
            evbuffer_add(o, LIT("{\"cert\":"));
            json_str(o, ci.file);
            evbuffer_add(o, LIT(",\"names\":["));
            for (size_t n = 0; n < ci.nnames; n++) {
                if (n) evbuffer_add(o, LIT(","));
                json_str(o, ci.names[n]);
            }
            evbuffer_add_printf(o, "],\"not_after\":\"%s\",\"days_left\":%lld}", when,
                                days_left(ci.not_after, now));
        }
        evbuffer_add(o, LIT("]}"));
    }
    evbuffer_add(o, LIT("],"));
}

void admin_status_json(struct evbuffer *o, const struct daemon_view *v)
{
    const struct config *c = server_config(v->srv);
    evbuffer_add_printf(o,
                        "{\"version\":\"%s\",\"now\":%lld,\"start_time\":%lld,\"config\":{"
                        "\"path\":",
                        PACKAGE_VERSION, (long long)time(NULL), (long long)v->start_time);
    json_str(o, v->config_path);
    evbuffer_add_printf(o, ",\"loaded_at\":%lld,\"last_reload\":", (long long)c->loaded_at);
    if (v->reloads_ok + v->reloads_failed)
        evbuffer_add_printf(o, "{\"time\":%lld,\"success\":%s}", (long long)v->last_reload,
                            v->last_reload_ok ? "true" : "false");
    else
        evbuffer_add(o, LIT("null")); /* no SIGHUP yet */
    evbuffer_add_printf(o,
                        ",\"reloads\":{\"success\":%llu,\"failure\":%llu}},"
                        "\"connections_active\":%u,",
                        (unsigned long long)v->reloads_ok, (unsigned long long)v->reloads_failed,
                        server_connections(v->srv));
    listeners_json(o, c, time(NULL));
    struct share_window sw = share_window(v);
    evbuffer_add_printf(o, "\"recent_seconds\":%lld,\"pools\":[", sw.seconds);
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        if (i) evbuffer_add(o, LIT(","));
        evbuffer_add(o, LIT("{\"name\":"));
        json_str(o, p->name);
        evbuffer_add(o, LIT(",\"hosts\":["));
        for (size_t k = 0; k < p->nhosts; k++) {
            if (k) evbuffer_add(o, LIT(","));
            json_str(o, p->hosts[k]);
        }
        const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
        bool all_down = pool_all_down(p, ch); /* fail_open counts too */
        uint64_t total = 0, recent = 0, req[CONFIG_MAX_REGIONS], rec[CONFIG_MAX_REGIONS];
        for (size_t k = 0; k < p->nregions; k++) {
            req[k] = metrics_requests(v, c, p->name, p->regions[k].name, p->status,
                                      p->regions[k].tmpl.slot);
            rec[k] = region_recent(v, &sw, p, k, req[k]);
            total += req[k];
            recent += rec[k];
        }
        evbuffer_add_printf(o,
                            "],\"default\":%s,\"balance\":\"%s\",\"all_down\":\"%s\","
                            "\"all_down_active\":%s,\"requests\":%llu,\"recent_requests\":%llu,"
                            "\"chosen\":",
                            p->is_default ? "true" : "false", balance_name(p->balance),
                            all_down_name(p->all_down), all_down ? "true" : "false",
                            (unsigned long long)total, (unsigned long long)recent);
        chosen_json(o, p);
        char *why = pool_why_str(c, p);
        evbuffer_add(o, LIT(",\"why\":"));
        json_str(o, why);
        free(why);
        evbuffer_add(o, LIT(",\"regions\":["));
        for (size_t k = 0; k < p->nregions; k++) {
            const struct region *r = &p->regions[k];
            const struct health *h = r->health;
            if (k) evbuffer_add(o, LIT(","));
            evbuffer_add(o, LIT("{\"name\":"));
            json_str(o, r->name);
            evbuffer_add(o, LIT(",\"url\":"));
            json_str(o, r->url);
            const struct sched_region *op = op_of(c, p, k);
            char src[600];
            op_source(src, sizeof(src), op);
            evbuffer_add_printf(o, ",\"state\":\"%s\",\"override\":\"%s\",\"override_source\":",
                                effective_state(r), region_state_name(r->op));
            if (op->source == SCHED_SOURCE_NONE)
                evbuffer_add(o, LIT("null"));
            else
                json_str(o, src);
            evbuffer_add(o, LIT(",\"override_until\":"));
            time_or_null(o, op->has_until, op->until_ms);
            evbuffer_add(o, LIT(",\"override_reason\":"));
            json_str(o, op->reason);
            evbuffer_add_printf(o,
                                ",\"check_up\":%s,"
                                "\"weight\":%u,\"priority\":%u,\"last_check\":",
                                h && h->st.up ? "true" : "false", r->weight, r->priority);
            if (h && h->probes) {
                evbuffer_add_printf(o, "{\"time\":%lld,\"ok\":%s,\"reason\":\"%s\",\"detail\":",
                                    (long long)h->last_time,
                                    h->last.reason == HR_OK ? "true" : "false",
                                    health_reason_label(h->last.reason));
                json_str(o, h->last.detail);
                evbuffer_add(o, LIT(",\"latency_ms\":"));
                num_or_null(o, true, h->last.latency_ms);
                if (h->last.status)
                    evbuffer_add_printf(o, ",\"status\":%d}", h->last.status);
                else
                    evbuffer_add(o, LIT(",\"status\":null}"));
            } else {
                evbuffer_add(o, LIT("null"));
            }
            evbuffer_add_printf(o,
                                ",\"consecutive_successes\":%u,\"consecutive_failures\":%u,"
                                "\"latency_ms\":",
                                h ? h->st.succ : 0, h ? h->st.fail : 0);
            num_or_null(o, h && h->st.have_latency, h ? h->st.latency_ms : 0);
            evbuffer_add_printf(o, ",\"requests\":%llu,\"recent_requests\":%llu,\"last_change\":",
                                (unsigned long long)req[k], (unsigned long long)rec[k]);
            if (h && h->changes)
                evbuffer_add_printf(o, "%lld", (long long)h->last_change);
            else
                evbuffer_add(o, LIT("null")); /* no change since the start */
            evbuffer_add_printf(o, ",\"state_changes\":%llu",
                                (unsigned long long)(h ? h->changes : 0));
            fleet_votes_json(v->fleet, p, r, o);
            evbuffer_add(o, LIT("}"));
        }
        evbuffer_add(o, LIT("]}"));
    }
    evbuffer_add(o, LIT("],"));
    maintenance_json(o, c);
    fleet_status_json(v->fleet, o);
    acme_status_json(v->acme, o);
    evbuffer_add(o, LIT("}\n"));
}

/* ---- the status page ---- */

/* What the page reads of the server, in one place. */
static const struct config *view_config(const struct daemon_view *v)
{
    return server_config(v->srv);
}

static unsigned view_connections(const struct daemon_view *v)
{
    return server_connections(v->srv);
}

static uint64_t region_requests(const struct daemon_view *v, const struct config *c,
                                const struct pool *p, const struct region *r)
{
    return metrics_requests(v, c, p->name, r->name, p->status, r->tmpl.slot);
}

#define EN_DASH "\xe2\x80\x93"

struct page {
    struct evbuffer *o;
    const struct daemon_view *v;
    const struct config *c;
    time_t now;
    struct share_window sw; /* the share column's */
    bool compact;           /* one summary line per pool, opening to its regions */
};

/* The page's script writes the same words (ago(), iso(), ms() there). */
static void ago(char *b, size_t len, bool have, time_t t, time_t now)
{
    if (!have) {
        snprintf(b, len, "never");
        return;
    }
    long long s = now > t ? (long long)(now - t) : 0;
    if (s < 2)
        snprintf(b, len, "just now");
    else if (s < 90)
        snprintf(b, len, "%lld s ago", s);
    else if (s < 5400)
        snprintf(b, len, "%lld min ago", (s + 30) / 60);
    else if (s < 36000)
        snprintf(b, len, "%lld h %lld min ago", s / 3600, s % 3600 / 60);
    else if (s < 172800)
        snprintf(b, len, "%lld h ago", (s + 1800) / 3600);
    else
        snprintf(b, len, "%lld days ago", (s + 43200) / 86400);
}

/* "5 min": the time until an override or a window starts or ends */
static void left(char *b, size_t len, int64_t until_ms, time_t now)
{
    long long s = (long long)(until_ms / 1000) - (long long)now;
    if (s < 0) s = 0;
    if (s < 90)
        snprintf(b, len, "%lld s", s);
    else if (s < 5400)
        snprintf(b, len, "%lld min", (s + 30) / 60);
    else if (s < 172800)
        snprintf(b, len, "%lld h %lld min", s / 3600, s % 3600 / 60);
    else
        snprintf(b, len, "%lld days", s / 86400);
}

static void iso(char *b, size_t len, time_t t)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(b, len, "%Y-%m-%dT%H:%M:%SZ", &tm)) b[0] = '\0';
}

static void ms(char *b, size_t len, bool have, double v)
{
    if (have && isfinite(v))
        snprintf(b, len, "%.1f ms", v);
    else
        snprintf(b, len, EN_DASH);
}

/* A header item: <div title><dt>label</dt><dd class>value</dd></div> */
static void page_item(struct page *pg, const char *label, const char *val, const char *cls,
                      const char *title)
{
    struct evbuffer *o = pg->o;
    evbuffer_add(o, LIT("<div"));
    if (title) {
        evbuffer_add(o, LIT(" title=\""));
        html_str(o, title);
        evbuffer_add(o, LIT("\""));
    }
    evbuffer_add(o, LIT("><dt>"));
    html_str(o, label);
    evbuffer_add(o, LIT("</dt><dd"));
    if (cls) evbuffer_add_printf(o, " class=\"%s\"", cls);
    evbuffer_add(o, LIT(">"));
    html_str(o, val);
    evbuffer_add(o, LIT("</dd></div>"));
}

static void page_header(struct page *pg)
{
    const struct daemon_view *v = pg->v;
    char a[64], t[64], b[160];
    page_item(pg, "version", PACKAGE_VERSION, NULL, NULL);
    iso(t, sizeof(t), pg->c->loaded_at);
    snprintf(b, sizeof(b), "loaded %s", t);
    page_item(pg, "config", v->config_path, NULL, b);
    if (v->reloads_ok + v->reloads_failed) {
        char val[96];
        ago(a, sizeof(a), true, v->last_reload, pg->now);
        snprintf(val, sizeof(val), "%s, %s", v->last_reload_ok ? "ok" : "FAILED", a);
        iso(t, sizeof(t), v->last_reload);
        snprintf(b, sizeof(b), "%s " EN_DASH " reloads: %llu ok, %llu failed", t,
                 (unsigned long long)v->reloads_ok, (unsigned long long)v->reloads_failed);
        page_item(pg, "last reload", val, v->last_reload_ok ? NULL : "bad", b);
    } else {
        page_item(pg, "last reload", "none", NULL, NULL);
    }
    snprintf(a, sizeof(a), "%u", view_connections(v));
    page_item(pg, "connections", a, NULL, NULL);
    ago(a, sizeof(a), true, v->start_time, pg->now);
    char *sfx = strstr(a, " ago");
    if (sfx) *sfx = '\0';
    iso(t, sizeof(t), v->start_time);
    page_item(pg, "up since", a, NULL, t);
}

/* The regions traffic goes to now (a bit each), or the all-down action. */
static uint64_t chosen_regions(const struct pool *p, const char **action)
{
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    *action = NULL;
    if (ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT) {
        *action = ch->action == CHOICE_FALLBACK ? "fallback" : "reject";
        return 0;
    }
    uint64_t set = 0;
    for (uint32_t i = 0; i < ch->n; i++) set |= UINT64_C(1) << ch->seq[i];
    return set;
}

/* A region's colour on the page, one per meaning wherever it shows (row,
 * state pill, timeline, legend): "up", "down", "drain", or "maint" while a
 * maintenance window holds it (drained or down as planned). The script's
 * meaning() says the same. */
static const char *region_colour(const struct config *c, const struct pool *p, size_t k)
{
    const struct region *r = &p->regions[k];
    if (op_of(c, p, k)->source == SCHED_SOURCE_WINDOW &&
        (r->op == REGION_DRAIN || r->op == REGION_DOWN))
        return "maint";
    return effective_state(r);
}

/* The override cell: the operator state in force and, when one is, where
 * it comes from, why, and how long it has left, or "until removed" when
 * it has no end (the reason and the end as a tooltip). */
static void page_override(struct page *pg, const struct pool *p, size_t k, const char *ov)
{
    struct evbuffer *o = pg->o;
    const struct sched_region *op = op_of(pg->c, p, k);
    if (op->source == SCHED_SOURCE_NONE) {
        evbuffer_add_printf(o, "<td data-label=\"override\"%s>%s</td>",
                            strcmp(ov, "auto") ? " class=\"ov\"" : "", ov);
        return;
    }
    char src[600], t[SCHED_TIME_LEN], l[64];
    op_source(src, sizeof(src), op);
    evbuffer_add(o, LIT("<td data-label=\"override\" class=\"ov\" title=\""));
    if (op->reason) {
        html_str(o, op->reason);
        evbuffer_add(o, LIT(" " EN_DASH " "));
    }
    if (op->has_until) {
        sched_format_time(op->until_ms, t, sizeof(t));
        evbuffer_add_printf(o, "until %s", t);
    } else {
        evbuffer_add(o, LIT("until removed"));
    }
    evbuffer_add_printf(o, "\">%s<span class=\"d\">", ov);
    html_str(o, src);
    if (op->has_until) {
        left(l, sizeof(l), op->until_ms, pg->now);
        evbuffer_add_printf(o, " \xc2\xb7 %s left", l);
    } else {
        evbuffer_add(o, LIT(" \xc2\xb7 until removed"));
    }
    if (op->reason) {
        evbuffer_add(o, LIT("</span><span class=\"d\">"));
        html_str(o, op->reason);
    }
    evbuffer_add(o, LIT("</span></td>"));
}

/* "12 %" (one decimal under 10), or a dash with nothing to share */
static void share_text(char *b, size_t len, uint64_t n, uint64_t total, double *pct)
{
    *pct = total ? 100.0 * (double)n / (double)total : 0;
    if (total)
        snprintf(b, len, "%.*f %%", *pct >= 10 || *pct == 0 ? 0 : 1, *pct);
    else
        snprintf(b, len, EN_DASH);
}

/* The share column's definition (its header's tooltip; the script's
 * SHARE_TITLE says the same). */
#define SHARE_TITLE                                                                                \
    "share of the pool's redirects over the last minute (since the start during detourd's "        \
    "first minute), the same in /status (recent_requests)"

static void page_row(struct page *pg, const struct pool *p, size_t k, bool chosen, uint64_t req,
                     uint64_t recent, uint64_t recent_total)
{
    struct evbuffer *o = pg->o;
    const struct region *r = &p->regions[k];
    const struct health *h = r->health;
    const char *st = effective_state(r), *ov = region_state_name(r->op);
    const char *colour = region_colour(pg->c, p, k);
    char a[96], b[96], t[64];
    unsigned succ = h ? h->st.succ : 0, fail = h ? h->st.fail : 0;
    /* drained by its weight alone: the override column says auto */
    bool by_weight = r->weight == 0 && r->op != REGION_DRAIN && r->op != REGION_DOWN;

    evbuffer_add_printf(o, "<tr class=\"state-%s%s\" data-pool=\"", st,
                        strcmp(colour, "maint") ? "" : " maint");
    html_str(o, p->name);
    evbuffer_add(o, LIT("\" data-region=\""));
    html_str(o, r->name);
    evbuffer_add_printf(o, "\" data-state=\"%s\"><th scope=\"row\">", st);
    html_str(o, r->name);
    if (chosen)
        evbuffer_add(o, LIT("<span class=\"chosen\" title=\"traffic goes here now\">"
                            "\xe2\x86\x90 chosen</span>"));
    evbuffer_add(o, LIT("<span class=\"u\">"));
    html_str(o, r->url);
    evbuffer_add(o, LIT("</span></th>"));

    /* state */
    evbuffer_add_printf(o,
                        "<td data-label=\"state\" title=\"checks %s; %u successes, %u failures in "
                        "a row%s\"><span class=\"st c-%s\">%s</span><span class=\"d\">",
                        h && h->st.up ? "pass" : "fail", succ, fail,
                        by_weight ? "; drained by its weight 0" : "", colour, st);
    if (by_weight) evbuffer_add(o, LIT("weight 0 \xc2\xb7 "));
    if (fail > 0)
        evbuffer_add_printf(o, "%u failed in a row", fail);
    else
        evbuffer_add_printf(o, "%u ok in a row", succ);
    evbuffer_add(o, LIT("</span></td>"));
    page_override(pg, p, k, ov);
    evbuffer_add_printf(o, "<td data-label=\"priority\" class=\"n\">%u</td>", r->priority);
    if (r->weight == 0)
        evbuffer_add(o, LIT("<td data-label=\"weight\" class=\"n ov\" title=\"weight 0: no new "
                            "traffic, whatever the override\">0</td>"));
    else
        evbuffer_add_printf(o, "<td data-label=\"weight\" class=\"n\">%u</td>", r->weight);

    /* last check */
    if (h && h->probes) {
        const struct probe_result *lc = &h->last;
        iso(t, sizeof(t), h->last_time);
        evbuffer_add(o, LIT("<td data-label=\"last check\" title=\""));
        html_str(o, t);
        if (lc->detail[0]) {
            evbuffer_add(o, LIT(" " EN_DASH " "));
            html_str(o, lc->detail);
        }
        if (lc->status) evbuffer_add_printf(o, " (HTTP %d)", lc->status);
        evbuffer_add(o, LIT("\">"));
        if (lc->reason == HR_OK) {
            evbuffer_add(o, LIT("ok"));
        } else {
            snprintf(a, sizeof(a), "%s", health_reason_label(lc->reason));
            for (char *c = a; *c; c++)
                if (*c == '_') *c = ' ';
            html_str(o, a);
        }
        if (lc->status) evbuffer_add_printf(o, " %d", lc->status);
        ago(a, sizeof(a), true, h->last_time, pg->now);
        evbuffer_add(o, LIT("<span class=\"d\">"));
        html_str(o, a);
        if (isfinite(lc->latency_ms)) {
            ms(b, sizeof(b), true, lc->latency_ms);
            evbuffer_add_printf(o, ", %s", b);
        }
        evbuffer_add(o, LIT("</span></td>"));
    } else {
        evbuffer_add(o, LIT("<td data-label=\"last check\">not yet</td>"));
    }

    /* latency */
    ms(a, sizeof(a), h && h->st.have_latency, h ? h->st.latency_ms : 0);
    evbuffer_add_printf(o, "<td data-label=\"latency\" class=\"n\">%s</td>", a);

    /* share of the pool's redirects over the window */
    double sh;
    share_text(a, sizeof(a), recent, recent_total, &sh);
    evbuffer_add_printf(
        o,
        "<td data-label=\"share, %s\" class=\"n\" data-recent=\"%llu\" title=\"%llu "
        "of %llu redirects over the last %lld s; %llu since start\">%s"
        "<span class=\"bar\" aria-hidden=\"true\"><i style=\"width:%.1f%%\">"
        "</i></span></td>",
        share_window_name(&pg->sw), (unsigned long long)recent, (unsigned long long)recent,
        (unsigned long long)recent_total, pg->sw.seconds, (unsigned long long)req, a, sh);

    /* last change */
    bool changed = h && h->changes;
    unsigned long long changes = h ? (unsigned long long)h->changes : 0;
    if (changed)
        iso(t, sizeof(t), h->last_change);
    else
        t[0] = '\0';
    ago(a, sizeof(a), changed, changed ? h->last_change : 0, pg->now);
    evbuffer_add_printf(o,
                        "<td data-label=\"last change\" title=\"%s " EN_DASH
                        " %llu changes since start\">%s"
                        "<span class=\"d\">%llu change%s</span></td></tr>",
                        t, changes, a, changes, changes == 1 ? "" : "s");
}

/* More pools than this: the compact mode, one summary line per pool that
 * opens to its regions (the script's COMPACT_POOLS). */
#define PAGE_COMPACT_POOLS 4

/* How bad a colour is, for a pool's summary: its worst region. */
static int colour_rank(const char *c)
{
    return strcmp(c, "down") == 0    ? 3
           : strcmp(c, "drain") == 0 ? 2
           : strcmp(c, "maint") == 0 ? 1
                                     : 0;
}

/* The compact mode's summary of a pool: where its traffic goes, how many
 * regions are up, its worst state (the script's summary() says the same). */
static void page_summary(struct page *pg, const struct pool *p, uint64_t chosen, const char *action,
                         const char *worst)
{
    struct evbuffer *o = pg->o;
    unsigned up = 0;
    for (size_t k = 0; k < p->nregions; k++)
        up += strcmp(effective_state(&p->regions[k]), "up") == 0;
    evbuffer_add(o, LIT("<span class=\"sum\"><span class=\"sc\" title=\"traffic goes here now\">"
                        "\xe2\x86\x92 "));
    if (action) {
        evbuffer_add_printf(o, "%s", action);
    } else {
        bool first = true;
        for (size_t k = 0; k < p->nregions; k++) {
            if (!(chosen >> k & 1)) continue;
            if (!first) evbuffer_add(o, LIT(", "));
            html_str(o, p->regions[k].name);
            first = false;
        }
    }
    evbuffer_add_printf(o,
                        "</span><span class=\"su\">%u/%zu up</span><span class=\"sr\">worst "
                        "state: </span><span class=\"st c-%s\" title=\"its worst region\">%s"
                        "</span></span>",
                        up, p->nregions, worst, strcmp(worst, "maint") ? worst : "maintenance");
}

static void page_pool(struct page *pg, const struct pool *p)
{
    struct evbuffer *o = pg->o;
    const char *action, *worst = "up";
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    bool all_down = pool_all_down(p, ch);
    uint64_t chosen = chosen_regions(p, &action), rtotal = 0;
    uint64_t req[CONFIG_MAX_REGIONS], recent[CONFIG_MAX_REGIONS];
    for (size_t k = 0; k < p->nregions; k++) {
        req[k] = region_requests(pg->v, pg->c, p, &p->regions[k]);
        recent[k] = region_recent(pg->v, &pg->sw, p, k, req[k]);
        rtotal += recent[k];
        const char *c = region_colour(pg->c, p, k);
        if (colour_rank(c) > colour_rank(worst)) worst = c;
    }
    evbuffer_add_printf(o, "<section class=\"pool%s\" aria-label=\"pool ",
                        pg->compact ? " compact" : "");
    html_str(o, p->name);
    evbuffer_add(o, LIT("\" data-pool=\""));
    html_str(o, p->name);
    evbuffer_add(o, LIT("\">"));
    if (pg->compact) {
        /* closed: the summary says what is wrong; the script remembers
         * what the operator opened */
        evbuffer_add(o, LIT("<details data-pool=\""));
        html_str(o, p->name);
        evbuffer_add(o, LIT("\"><summary>"));
    }
    evbuffer_add(o, LIT("<h2><span class=\"pn\">pool "));
    html_str(o, p->name);
    evbuffer_add(o, LIT("</span>"));
    if (pg->compact) page_summary(pg, p, chosen, action, worst);
    evbuffer_add(o, LIT("<small class=\"meta\">"));
    if (p->is_default) {
        evbuffer_add(o, LIT("default pool"));
    } else {
        evbuffer_add(o, LIT("hosts: "));
        for (size_t k = 0; k < p->nhosts; k++) {
            if (k) evbuffer_add(o, LIT(", "));
            html_str(o, p->hosts[k]);
        }
    }
    evbuffer_add_printf(o,
                        "</small><small class=\"meta\">balance: %s \xc2\xb7 all down: %s</small>",
                        balance_name(p->balance), all_down_name(p->all_down));
    if (all_down) {
        char *pill = pool_all_down_str(p, ch);
        evbuffer_add(o, LIT("<span class=\"pill\">"));
        html_str(o, pill);
        evbuffer_add(o, LIT("</span>"));
        free(pill);
    }
    evbuffer_add(o, LIT("</h2>"));
    if (pg->compact) evbuffer_add(o, LIT("</summary>"));
    evbuffer_add(o, LIT("<p class=\"why\">"));
    char *why = pool_why_str(pg->c, p);
    html_str(o, why);
    free(why);
    evbuffer_add(o, LIT("</p><table class=\"cards\"><caption class=\"sr\">Regions of pool "));
    html_str(o, p->name);
    evbuffer_add(o, LIT("</caption><thead><tr>"));
    static const char *const cols[] = {"region", "state",      "override", "priority",
                                       "weight", "last check", "latency"};
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
        evbuffer_add_printf(o, "<th scope=\"col\">%s</th>", cols[i]);
    evbuffer_add_printf(o,
                        "<th scope=\"col\" title=\"" SHARE_TITLE "\">share<span class=\"d\">%s"
                        "</span></th><th scope=\"col\">last change</th></tr></thead><tbody>",
                        share_window_name(&pg->sw));
    for (size_t k = 0; k < p->nregions; k++)
        page_row(pg, p, k, chosen >> k & 1, req[k], recent[k], rtotal);
    evbuffer_add(o, LIT("</tbody></table>"));
    if (pg->compact) evbuffer_add(o, LIT("</details>"));
    evbuffer_add(o, LIT("</section>"));
}

static void page_pools(struct page *pg)
{
    for (size_t i = 0; i < pg->c->npools; i++) page_pool(pg, &pg->c->pools[i]);
}

static void tls_table_open(struct evbuffer *o)
{
    evbuffer_add(o, LIT("<section aria-label=\"TLS certificates\"><h2><span>TLS "
                        "certificates</span></h2><table><caption class=\"sr\">"
                        "Certificates of the TLS listeners</caption><thead><tr>"
                        "<th scope=\"col\">listener</th><th scope=\"col\">"
                        "certificate</th><th scope=\"col\">names</th>"
                        "<th scope=\"col\">expires</th><th scope=\"col\">days "
                        "left</th></tr></thead><tbody>"));
}

/* The certificates of the TLS listeners, then those ACME keeps; fewer
 * than TLS_EXPIRY_WARN_DAYS days left are marked. */
static void page_tls(struct page *pg)
{
    struct evbuffer *o = pg->o;
    const struct config *c = pg->c;
    bool any = false;
    for (size_t i = 0; i < c->nlisten; i++) {
        const struct tls_srv *t = c->listen_tls[i];
        for (size_t k = 0; t && k < tls_srv_ncerts(t); k++) {
            struct tls_cert_info ci = tls_srv_cert(t, k);
            if (!any) tls_table_open(o);
            any = true;
            long long left = days_left(ci.not_after, pg->now);
            bool soon = left < TLS_EXPIRY_WARN_DAYS;
            char t1[64];
            iso(t1, sizeof(t1), ci.not_after);
            evbuffer_add_printf(o,
                                "<tr class=\"cert-%s\" data-days-left=\"%lld\"><th scope=\"row\">",
                                soon ? "soon" : "ok", left);
            html_str(o, c->listen[i].text);
            evbuffer_add(o, LIT("</th><td>"));
            html_str(o, ci.file);
            evbuffer_add(o, LIT("</td><td>"));
            for (size_t n = 0; n < ci.nnames; n++) {
                if (n) evbuffer_add(o, LIT(", "));
                html_str(o, ci.names[n]);
            }
            evbuffer_add(o, LIT("</td><td>"));
            html_str(o, t1);
            evbuffer_add_printf(o, "</td><td class=\"n\">%lld%s</td></tr>", left,
                                left < 0 ? " (expired)"
                                : soon   ? " (renew soon)"
                                         : "");
        }
    }
    if (c->acme && c->acme->nnames) {
        if (!any) tls_table_open(o);
        any = true;
        acme_page_html(pg->v->acme, o, pg->now);
    }
    if (any) evbuffer_add(o, LIT("</tbody></table></section>"));
}

/* The maintenance schedule: every window, its phase and time left. */
static void page_maint(struct page *pg)
{
    struct evbuffer *o = pg->o;
    const struct config *c = pg->c;
    const struct sched_model *m = c->sched;
    if (!m->nwindows) return;
    evbuffer_add(o, LIT("<section aria-label=\"maintenance\"><h2><span>maintenance</span></h2>"
                        "<table class=\"cards\"><caption class=\"sr\">Maintenance windows</caption>"
                        "<thead><tr>"
                        "<th scope=\"col\">window</th><th scope=\"col\">phase</th>"
                        "<th scope=\"col\">state</th><th scope=\"col\">regions</th>"
                        "<th scope=\"col\">from</th><th scope=\"col\">until</th>"
                        "<th scope=\"col\">reason</th></tr></thead><tbody>"));
    for (size_t k = 0; k < m->nwindows; k++) {
        const struct sched_window *w = &m->windows[k];
        enum sched_phase ph = c->sched_now->phases[k];
        char from[SCHED_TIME_LEN], until[SCHED_TIME_LEN], l[64];
        sched_format_time(w->from_ms, from, sizeof(from));
        sched_format_time(w->until_ms, until, sizeof(until));
        evbuffer_add_printf(o, "<tr class=\"maint-%s\" data-window=\"", sched_phase_name(ph));
        html_str(o, w->name);
        evbuffer_add(o, LIT("\"><th scope=\"row\">"));
        html_str(o, w->name);
        evbuffer_add_printf(o, "</th><td data-label=\"phase\">%s", sched_phase_name(ph));
        if (ph != SCHED_OVER) {
            left(l, sizeof(l), ph == SCHED_ACTIVE ? w->until_ms : w->from_ms, pg->now);
            evbuffer_add_printf(o, "<span class=\"d\">%s%s%s</span>",
                                ph == SCHED_PENDING ? "starts in " : "", l,
                                ph == SCHED_PENDING ? "" : " left");
        }
        evbuffer_add_printf(o, "</td><td data-label=\"state\">%s</td><td data-label=\"regions\">",
                            region_state_name(w->state));
        for (size_t t = 0; t < w->ntargets; t++) {
            const struct pool *p = &c->pools[w->targets[t].pool];
            if (t) evbuffer_add(o, LIT(", "));
            html_str(o, p->name);
            evbuffer_add(o, LIT("/"));
            html_str(o, p->regions[w->targets[t].region].name);
        }
        evbuffer_add_printf(o,
                            "</td><td data-label=\"from\">%s</td><td data-label=\"until\">%s</td>"
                            "<td data-label=\"reason\">",
                            from, until);
        if (w->reason) html_str(o, w->reason);
        evbuffer_add(o, LIT("</td></tr>"));
    }
    evbuffer_add(o, LIT("</tbody></table></section>"));
}

static void page_fleet(struct page *pg)
{
    fleet_page_html(pg->v->fleet, pg->o);
}

static void page_title(struct page *pg)
{
    unsigned down = 0;
    for (size_t i = 0; i < pg->c->npools; i++)
        for (size_t k = 0; k < pg->c->pools[i].nregions; k++)
            down += strcmp(effective_state(&pg->c->pools[i].regions[k]), "down") == 0;
    if (down) evbuffer_add_printf(pg->o, "(%u down) ", down);
}

static void page_footer(struct page *pg)
{
    char t[64];
    iso(t, sizeof(t), pg->now);
    evbuffer_add_printf(pg->o, "As of %s. Live while scripts run: changes show at once.", t);
}

/* Serves admin_page with its marks (an HTML comment "<!--@NAME-->")
 * replaced by the current state; the text between them is referenced, not
 * copied. */
void admin_page_html(struct evbuffer *o, const struct daemon_view *v)
{
    static const struct {
        const char *name;
        void (*fill)(struct page *);
    } marks[] = {{"title", page_title}, {"header", page_header}, {"pools", page_pools},
                 {"maint", page_maint}, {"tls", page_tls},       {"footer", page_footer},
                 {"fleet", page_fleet}};
    struct page pg = {o, v, view_config(v), time(NULL), share_window(v), false};
    pg.compact = pg.c->npools > PAGE_COMPACT_POOLS;
    const char *s = admin_page, *end = admin_page + admin_page_len;
    while (s < end) {
        const char *m = memmem(s, (size_t)(end - s), LIT("<!--@"));
        const char *e = m ? memmem(m, (size_t)(end - m), LIT("-->")) : NULL;
        if (!m || !e) break;
        evbuffer_add_reference(o, s, (size_t)(m - s), NULL, NULL);
        const char *name = m + LIT_LEN("<!--@");
        size_t len = (size_t)(e - name);
        for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
            if (strlen(marks[i].name) != len || memcmp(marks[i].name, name, len) != 0) continue;
            marks[i].fill(&pg);
        }
        s = e + LIT_LEN("-->");
    }
    evbuffer_add_reference(o, s, (size_t)(end - s), NULL, NULL);
}

/* ---- HTTP ---- */

static bool allowed_addr(const struct sockaddr *sa, const struct config *c)
{
    return sa && c->admin && admin_cfg_allows(c->admin, sa);
}

static bool allowed(struct evhttp_request *req, const struct config *c)
{
    struct evhttp_connection *con = evhttp_request_get_connection(req);
    return allowed_addr(con ? evhttp_connection_get_addr(con) : NULL, c);
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

/* ---- GET /events: Server-Sent Events ---- */

/* One stream. Its sink gets every event the hub emits; wake writes it out
 * at once. */
struct sse_sub {
    struct event_sink sink; /* name NULL: not in the metrics */
    struct admin *a;
    struct events *hub;
    struct evhttp_request *req;
    struct evhttp_connection *con;
    struct evbuffer *chunk;                       /* what the next chunk carries */
    struct evbuffer *in, *out;                    /* the connection's */
    struct evbuffer_cb_entry *in_cb, *out_cb;     /* sse_input, sse_output */
    size_t replay_left;                           /* bytes of the head and replay not sent yet */
    enum { SSE_LIVE, SSE_UNREAD, SSE_SENT } dead; /* not LIVE: a->reap closes it */
    char peer[64];
    struct sse_sub *next;
};

/* What the client has not taken yet (the socket buffers aside). */
static size_t sse_pending(const struct sse_sub *s)
{
    return evbuffer_get_length(s->out);
}

/* Marks s for a->reap to close (why: SSE_UNREAD or SSE_SENT). */
static void sse_kill(struct sse_sub *s, int why)
{
    if (s->dead) return;
    s->dead = why;
    event_active(s->a->reap, 0, 0);
}

/* The client sent something after its request. Runs inside libevent's
 * read: the stream is only marked. */
static void sse_input(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    if (info->n_added) sse_kill(arg, SSE_SENT);
}

/* The socket took info->n_deleted bytes: the replay's share of them no
 * longer counts against the client. */
static void sse_output(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    struct sse_sub *s = arg;
    s->replay_left -= info->n_deleted < s->replay_left ? info->n_deleted : s->replay_left;
    if (!s->replay_left) {
        evbuffer_remove_cb_entry(b, s->out_cb);
        s->out_cb = NULL;
    }
}

/* id:, event: and data: (the event's JSON, one line) */
static void sse_format(void *arg, struct event_rec *ev)
{
    struct evbuffer *b = arg;
    evbuffer_add_printf(b, "id: %s\nevent: %s\ndata: ", ev->id, event_kind_name(ev->kind));
    evbuffer_add(b, ev->json, ev->json_len);
    evbuffer_add(b, LIT("\n\n"));
}

/* Sends s->chunk. A client that leaves more than SSE_MAX_BUFFERED unread
 * beyond what is left of its replay is marked for closing, not closed: wake
 * runs inside the hub's walk of its sinks, which must not change under it.
 * (The replay may be larger than the limit: a client that reads always
 * gets all of it.) */
static void sse_flush(struct sse_sub *s)
{
    if (evbuffer_get_length(s->chunk)) evhttp_send_reply_chunk(s->req, s->chunk);
    if (sse_pending(s) > SSE_MAX_BUFFERED + s->replay_left) sse_kill(s, SSE_UNREAD);
}

static void sse_wake(void *arg)
{
    struct sse_sub *s = arg;
    struct event_rec *ev;
    while ((ev = evq_pop(&s->sink.q))) {
        if (!s->dead) sse_format(s->chunk, ev);
        event_unref(ev);
    }
    if (!s->dead) sse_flush(s);
}

/* Takes s off the hub and the admin's list and frees it; its request and
 * connection are the caller's to end. */
static void sse_unlink(struct sse_sub *s)
{
    struct admin *a = s->a;
    events_sink_remove(s->hub, &s->sink);
    evq_free(&s->sink.q);
    for (struct sse_sub **pp = &a->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (--a->nsubs == 0) event_del(a->keepalive);
    evhttp_connection_set_closecb(s->con, NULL, NULL);
    if (s->in_cb) evbuffer_remove_cb_entry(s->in, s->in_cb);
    if (s->out_cb) evbuffer_remove_cb_entry(s->out, s->out_cb);
    evbuffer_free(s->chunk);
    free(s);
}

/* Ends s's stream: now (the connection closed at once), or with the last
 * chunk (the connection closes once it is written: Connection: close). */
static void sse_end(struct sse_sub *s, bool now)
{
    struct evhttp_request *req = s->req;
    struct evhttp_connection *con = s->con;
    sse_unlink(s);
    if (now)
        evhttp_connection_free(con); /* and its request */
    else
        evhttp_send_reply_end(req);
}

/* libevent closes the connection: the client went away, or a write failed
 * or made no progress for ADMIN_TIMEOUT_S. */
static void sse_closed(struct evhttp_connection *con, void *arg)
{
    struct sse_sub *s = arg;
    struct evhttp_request *req = s->req;
    (void)con;
    log_debug("events: %s disconnected", s->peer);
    sse_unlink(s);
    /* libevent leaves a request its connection dropped mid-reply to its
     * owner; ending it frees it. One still attached goes with the
     * connection. */
    if (!evhttp_request_get_connection(req)) evhttp_send_reply_end(req);
}

static void sse_reap(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    (void)fd, (void)what;
    for (struct sse_sub *s = a->subs, *next; s; s = next) {
        next = s->next;
        if (s->dead == SSE_UNREAD)
            log_warn("events: closing the stream to %s: %zu bytes unread (the client does not "
                     "read)",
                     s->peer, sse_pending(s));
        else if (s->dead == SSE_SENT)
            log_warn("events: closing the stream to %s: it sent %zu bytes after its request (an "
                     "event stream takes none)",
                     s->peer, evbuffer_get_length(s->in));
        else
            continue;
        sse_end(s, true);
    }
}

static void sse_keepalive(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    (void)fd, (void)what;
    for (struct sse_sub *s = a->subs; s; s = s->next) {
        if (s->dead) continue;
        evbuffer_add(s->chunk, LIT(": keep-alive\n\n"));
        sse_flush(s);
    }
}

/* Ends the streams of clients cfg's admin.allow no longer admits (cfg
 * NULL: every stream). */
static void sse_end_streams(struct admin *a, const struct config *cfg, const char *why)
{
    for (struct sse_sub *s = a->subs, *next; s; s = next) {
        next = s->next;
        if (cfg && allowed_addr(evhttp_connection_get_addr(s->con), cfg)) continue;
        log_info("events: ending the stream to %s (%s)", s->peer, why);
        sse_end(s, s->dead != SSE_LIVE);
    }
}

static void sse_subscribe(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
    struct events *hub = events_default();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!hub || a->nsubs >= SSE_MAX_SUBSCRIBERS) {
        evhttp_add_header(h, "Retry-After", "15");
        if (hub)
            evbuffer_add_printf(body,
                                "too many event streams (at most %d at a time); try again "
                                "later\n",
                                SSE_MAX_SUBSCRIBERS);
        else
            evbuffer_add_printf(body, "events are not available\n");
        reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", body);
        return;
    }
    struct sse_sub *s = calloc(1, sizeof(*s));
    if (!s || !(s->chunk = evbuffer_new()) || !evq_init(&s->sink.q, SSE_QUEUE)) {
        if (s && s->chunk) evbuffer_free(s->chunk);
        free(s);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    s->sink.wake = sse_wake;
    s->sink.arg = s;
    s->a = a;
    s->hub = hub;
    s->req = req;
    s->con = evhttp_request_get_connection(req);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->con);
    s->in = bufferevent_get_input(bev);
    s->out = bufferevent_get_output(bev);
    char *host = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(s->con, &host, &port);
    if (host && strchr(host, ':'))
        snprintf(s->peer, sizeof(s->peer), "[%s]:%u", host, port);
    else
        snprintf(s->peer, sizeof(s->peer), "%s:%u", host ? host : "?", port);
    /* the ring after the event the client saw last, when it is one of
     * ours; the whole ring otherwise */
    uint64_t after = 0;
    const char *last = evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
    if (!last || !events_parse_id(hub, last, &after)) after = 0;
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Accel-Buffering", "no"); /* a proxy passes each event on */
    evhttp_add_header(h, "Connection", "close");     /* the stream ends with the connection */
    evhttp_send_reply_start(req, 200, "OK");
    evbuffer_add_printf(s->chunk, "retry: %d\n\n", SSE_RETRY_MS);
    events_replay(hub, after, sse_format, s->chunk);
    evhttp_send_reply_chunk(req, s->chunk);
    s->replay_left = sse_pending(s); /* the head, retry: and the replay */
    s->out_cb = evbuffer_add_cb(s->out, sse_output, s);
    s->next = a->subs;
    a->subs = s;
    if (a->nsubs++ == 0) {
        struct timeval tv = {SSE_KEEPALIVE_S, 0};
        event_add(a->keepalive, &tv);
    }
    events_sink_add(hub, &s->sink);
    evhttp_connection_set_closecb(s->con, sse_closed, s);
    /* the client sends nothing more: no read timeout; a write that makes
     * no progress still times out. libevent goes on reading (to see the
     * client close) with nothing to take what it reads: bound it, and end
     * the stream of a client that sends anything. */
    struct timeval wt = {ADMIN_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, NULL, &wt);
    bufferevent_setwatermark(bev, EV_READ, 0, SSE_MAX_INPUT);
    s->in_cb = evbuffer_add_cb(s->in, sse_input, s);
    log_info("events: %s subscribed (%u stream%s)", s->peer, a->nsubs, a->nsubs == 1 ? "" : "s");
    /* (without in_cb, for want of memory, the watermark still bounds what
     * it sends; without out_cb the limit stays that far above the replay) */
    if (evbuffer_get_length(s->in)) sse_kill(s, SSE_SENT); /* already, behind its request */
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
    } else if (strcmp(path, "/events") == 0) {
        if (m == EVHTTP_REQ_GET)
            sse_subscribe(a, req, body);
        else /* HEAD: the stream's headers, no stream */
            reply(req, 200, "OK", "text/event-stream", body);
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        admin_page_html(body, v);
        reply(req, 200, "OK", "text/html; charset=utf-8", body);
    } else {
        evbuffer_add_printf(body, "not found; try /, /status, /events, /metrics or /healthz\n");
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

/* A sample of every region's request counter for the share column: on the
 * main thread, every RECENT_TICK_S; the request path does nothing for it. */
static void sample_requests(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    const struct config *c = server_config(a->v->srv);
    (void)fd, (void)what;
    for (size_t i = 0; c && i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        for (size_t k = 0; k < p->nregions; k++)
            recent_put(a->recent, p->name, p->regions[k].name,
                       region_requests(a->v, c, p, &p->regions[k]));
    }
    recent_commit(a->recent, clock_now_ms());
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
    a->base = base;
    a->keepalive = event_new(base, -1, EV_PERSIST, sse_keepalive, a);
    a->reap = event_new(base, -1, 0, sse_reap, a);
    /* the counters were 0 at the start */
    uint64_t now = clock_now_ms(), up = (uint64_t)(time(NULL) - v->start_time) * 1000;
    a->recent = recent_new(now > up ? now - up : 0);
    a->sample = event_new(base, -1, EV_PERSIST, sample_requests, a);
    if (!a->keepalive || !a->reap || !a->recent || !a->sample) {
        admin_stop(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct timeval tick = {RECENT_TICK_S, 0};
    event_add(a->sample, &tick);
    v->recent = a->recent;
    if (cfg->admin) {
        int fd = open_admin(admin_cfg_listen(cfg->admin), err, errlen);
        if (fd < 0 || !attach(a, admin_cfg_listen(cfg->admin), fd, err, errlen)) {
            admin_stop(a);
            return NULL;
        }
    }
    return a;
}

bool admin_prepare(struct admin *a, const struct config *cfg, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (!cfg->admin || (a->bound && strcmp(a->addr.text, admin_cfg_listen(cfg->admin)->text) == 0))
        return true;
    *fd = open_admin(admin_cfg_listen(cfg->admin), err, errlen);
    return *fd >= 0;
}

void admin_commit(struct admin *a, const struct config *cfg, int fd)
{
    char err[200];
    if (!cfg->admin || fd >= 0)
        sse_end_streams(a, NULL, cfg->admin ? "admin.listen moved" : "admin listener closed");
    else
        sse_end_streams(a, cfg, "no longer in admin.allow");
    if (!cfg->admin) {
        if (a->bound) {
            log_info("closing admin listener %s", a->addr.text);
            evhttp_del_accept_socket(a->http, a->bound);
            a->bound = NULL;
        }
        return;
    }
    if (fd >= 0 && !attach(a, admin_cfg_listen(cfg->admin), fd, err, sizeof(err)))
        log_error("%s", err);
}

void admin_stop(struct admin *a)
{
    if (!a) return;
    /* each stream ends with its last chunk if the socket takes it now;
     * evhttp_free closes the connections and frees their requests */
    while (a->subs) {
        struct sse_sub *s = a->subs;
        struct evhttp_request *req = s->req;
        struct bufferevent *bev = evhttp_connection_get_bufferevent(s->con);
        sse_unlink(s);
        evhttp_send_reply_end(req);
        if (bev) evbuffer_write(bufferevent_get_output(bev), bufferevent_getfd(bev));
    }
    if (a->http) evhttp_free(a->http);
    if (a->keepalive) event_free(a->keepalive);
    if (a->reap) event_free(a->reap);
    if (a->sample) event_free(a->sample);
    if (a->recent) a->v->recent = NULL;
    recent_free(a->recent);
    free(a);
}
