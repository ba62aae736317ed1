#include "autoconf.h"

#include "health.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "probe.h"
#include "select.h"

const double health_duration_bounds[HEALTH_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

static const char *const reason_names[HR_COUNT] = {
    "ok",  "dns",     "connect refused", "connect timeout", "connect",
    "tls", "timeout", "status",          "body mismatch",   "reset",
};
static const char *const reason_labels[HR_COUNT] = {
    "ok",  "dns",     "connect_refused", "connect_timeout", "connect",
    "tls", "timeout", "status",          "body_mismatch",   "reset",
};

const char *health_reason_name(enum health_reason r)
{
    return r < HR_COUNT ? reason_names[r] : "?";
}

const char *health_reason_label(enum health_reason r)
{
    return r < HR_COUNT ? reason_labels[r] : "unknown";
}

/* ---- the pure part: hysteresis and scheduling ---- */

void health_state_init(struct health_state *s, const struct check_cfg *c)
{
    memset(s, 0, sizeof(*s));
    s->up = c->initial_up;
}

bool health_state_update(struct health_state *s, const struct check_cfg *c,
                         const struct probe_result *r)
{
    bool ok = r->reason == HR_OK;
    if (ok) {
        s->succ++;
        s->fail = 0;
        if (!s->have_latency) {
            s->latency_ms = r->latency_ms;
            s->have_latency = true;
        } else {
            s->latency_ms += HEALTH_EWMA_ALPHA * (r->latency_ms - s->latency_ms);
        }
    } else {
        s->fail++;
        s->succ = 0;
    }
    bool was = s->up;
    if (!s->up && s->succ >= c->rise) s->up = true;
    if (s->up && s->fail >= c->fall) s->up = false;
    if (was != s->up) s->checked = true;
    /* counters keep counting; a change needs a fresh run of rise/fall */
    return was != s->up;
}

uint64_t health_state_interval(const struct health_state *s, const struct check_cfg *c)
{
    bool pending = s->up ? s->fail > 0 : s->succ > 0;
    if (pending) return c->fast_interval_ms;
    return s->up ? c->interval_ms : c->down_interval_ms;
}

uint64_t health_jitter(uint64_t ms, unsigned pct, double rnd)
{
    if (!pct) return ms;
    double spread = (double)ms * pct / 100.0;
    double v = (double)ms - spread + 2 * spread * rnd;
    return v < 1 ? 1 : (uint64_t)v;
}

/* ---- the live part ---- */

struct health_ctl {
    struct event_base *base;
    struct evdns_base *dns;
    struct probe_env *penv;
    struct config *cfg;
    struct health *all;
    size_t n;
};

bool health_region_up(const struct region *r)
{
    switch (r->state) {
    case REGION_UP: return true;
    case REGION_DOWN:
    case REGION_DRAIN: return false;
    case REGION_AUTO: return r->health ? r->health->st.up : true;
    }
    return false;
}

uint64_t health_pool_upset(const struct pool *p)
{
    uint64_t m = 0;
    for (size_t i = 0; i < p->nregions; i++)
        if (health_region_up(&p->regions[i])) m |= UINT64_C(1) << i;
    return m;
}

static void pool_latencies(const struct pool *p, double *lat)
{
    for (size_t i = 0; i < p->nregions; i++) {
        const struct health *h = p->regions[i].health;
        lat[i] = h && h->st.have_latency ? h->st.latency_ms : -1;
    }
}

static void swap_choice(struct pool *p, struct choice *ch)
{
    struct choice *old = atomic_exchange_explicit(&p->sel->cur, ch, memory_order_acq_rel);
    /* single event loop for now: nobody can hold the old choice */
    free(old);
}

static void publish(struct pool *p)
{
    double lat[CONFIG_MAX_REGIONS];
    pool_latencies(p, lat);
    struct choice *cur = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    struct choice *ch = select_compute(p, health_pool_upset(p), lat, cur ? cur->leader : -1);
    if (ch) swap_choice(p, ch);
}

/* balance: latency — a new measurement may move the leader */
static void republish_latency(struct pool *p)
{
    double lat[CONFIG_MAX_REGIONS];
    pool_latencies(p, lat);
    struct choice *cur = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    struct choice *ch = select_compute(p, health_pool_upset(p), lat, cur->leader);
    if (!ch) return;
    if (ch->leader != cur->leader) {
        if (ch->leader >= 0 && cur->leader >= 0)
            log_info("pool %s: latency leader %s -> %s (%.1f ms vs %.1f ms)", p->name,
                     p->regions[cur->leader].name, p->regions[ch->leader].name, lat[ch->leader],
                     lat[cur->leader]);
        swap_choice(p, ch);
    } else {
        free(ch);
    }
}

static void schedule(struct health *h, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(h->timer, &tv);
}

static void observe_duration(struct health *h, double ms)
{
    double s = ms / 1000.0;
    h->dur_sum += s;
    for (int i = 0; i < HEALTH_DURATION_BUCKETS; i++)
        if (s <= health_duration_bounds[i]) h->dur_buckets[i]++;
}

static void log_change(const struct health *h)
{
    const struct check_cfg *c = &h->region->check;
    const struct probe_result *r = &h->last;
    if (h->st.up)
        log_info("pool %s region %s UP after %u success%s (%.1f ms)%s", h->pool->name,
                 h->region->name, h->st.succ, h->st.succ == 1 ? "" : "es", r->latency_ms,
                 h->region->state != REGION_AUTO ? " (operator override in force)" : "");
    else
        log_warn("pool %s region %s DOWN after %u failure%s: %s: %s%s", h->pool->name,
                 h->region->name, h->st.fail, h->st.fail == 1 ? "" : "s",
                 health_reason_name(r->reason), r->detail,
                 h->region->state != REGION_AUTO ? " (operator override in force)" : "");
    (void)c;
}

static void on_probe_done(void *arg, const struct probe_result *r)
{
    struct health *h = arg;
    const struct check_cfg *c = &h->region->check;
    h->probe = NULL;
    h->last = *r;
    h->last_time = time(NULL);
    h->probes++;
    if (r->reason != HR_OK) h->failures[r->reason]++;
    observe_duration(h, r->latency_ms);
    log_debug("pool %s region %s check: %s%s%s (%.1f ms)", h->pool->name, h->region->name,
              health_reason_name(r->reason), r->detail[0] ? ": " : "", r->detail, r->latency_ms);
    if (health_state_update(&h->st, c, r)) {
        h->changes++;
        h->last_change = h->last_time;
        log_change(h);
        publish(h->pool);
    } else if (h->pool->balance == BALANCE_LATENCY && r->reason == HR_OK) {
        republish_latency(h->pool);
    }
    double rnd = (double)(random() % 10000) / 10000.0;
    schedule(h, health_jitter(health_state_interval(&h->st, c), c->jitter_pct, rnd));
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    if (h->probe) return; /* one at a time */
    h->probe = probe_start(h->ctl->penv, &h->region->check, on_probe_done, h);
    if (!h->probe) {
        log_warn("pool %s region %s: cannot start a check (out of memory)", h->pool->name,
                 h->region->name);
        schedule(h, h->region->check.interval_ms);
    }
}

struct health_ctl *health_start(struct event_base *base, struct config *cfg)
{
    struct health_ctl *hc = calloc(1, sizeof(*hc));
    if (!hc) return NULL;
    hc->base = base;
    hc->cfg = cfg;
    hc->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!hc->dns) {
        /* no resolv.conf: IP literals and /etc/hosts still work */
        hc->dns = evdns_base_new(base, 0);
        if (hc->dns) evdns_base_load_hosts(hc->dns, NULL);
    }
    hc->penv = probe_env_new(base, hc->dns);
    size_t n = 0;
    for (size_t i = 0; i < cfg->npools; i++) n += cfg->pools[i].nregions;
    hc->all = calloc(n ? n : 1, sizeof(*hc->all));
    if (!hc->dns || !hc->penv || !hc->all) {
        health_stop(hc);
        return NULL;
    }
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    for (size_t i = 0; i < cfg->npools; i++) {
        struct pool *p = &cfg->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            struct health *h = &hc->all[hc->n++];
            struct region *r = &p->regions[k];
            h->ctl = hc;
            h->pool = p;
            h->region = r;
            health_state_init(&h->st, &r->check);
            h->last_change = time(NULL);
            h->timer = evtimer_new(base, on_timer, h);
            r->health = h;
            if (h->timer) event_active(h->timer, EV_TIMEOUT, 0); /* first probe now */
        }
        publish(p);
    }
    return hc;
}

void health_stop(struct health_ctl *hc)
{
    if (!hc) return;
    for (size_t i = 0; i < hc->n; i++) {
        struct health *h = &hc->all[i];
        if (h->probe) probe_cancel(h->probe);
        if (h->timer) event_free(h->timer);
        h->region->health = NULL;
    }
    free(hc->all);
    probe_env_free(hc->penv);
    if (hc->dns) evdns_base_free(hc->dns, 0);
    free(hc);
}
