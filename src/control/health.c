#include "autoconf.h"

#include "control/health.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events/events.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "control/probe.h"
#include "control/sdnotify.h"
#include "serve/select.h"

const double health_duration_bounds[HEALTH_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

static const char *const reason_names[HR_COUNT] = {
    "ok",  "dns",     "connect refused", "connect timeout", "connect",
    "tls", "timeout", "status",          "body mismatch",   "reset",
};
/* The step that failed, for log lines ("connect: Connection refused"). */
static const char *const reason_phases[HR_COUNT] = {
    "ok", "dns", "connect", "connect", "connect", "tls", "timeout", "http", "body", "read",
};
static const char *const reason_labels[HR_COUNT] = {
    "ok",  "dns",     "connect_refused", "connect_timeout", "connect",
    "tls", "timeout", "status",          "body_mismatch",   "reset",
};

const char *health_reason_name(enum health_reason r)
{
    return r < HR_COUNT ? reason_names[r] : "?";
}

const char *health_reason_phase(enum health_reason r)
{
    return reason_phases[r < HR_COUNT ? r : 0];
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

/* An all-down event held back during a reload. */
struct pending_all_down {
    char *pool;
    const char *was, *is; /* static strings */
    char why[256];
};

struct health_ctl {
    struct event_base *base;
    struct evdns_base *dns;
    struct probe_env *penv;
    struct config *cfg; /* a reference: probes read its check settings */
    struct health *all;
    size_t n;
    health_retire_fn retire;
    void *retire_ctx;
    void (*on_change)(void *);
    void *on_change_arg;
    void (*on_verdict)(void *, struct health *);
    void *on_verdict_arg;
    bool started; /* health_start() returned: all-down changes are events */
    bool defer;   /* a reload is publishing: all-down events wait (health_flush_events) */
    struct pending_all_down *pending;
    size_t npending;
};

bool health_region_up(const struct region *r)
{
    switch (r->op) {
    case REGION_UP: return true;
    case REGION_DOWN:
    case REGION_DRAIN: return false;
    case REGION_AUTO: return r->health ? health_up(r->health) : true;
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

/* A pool's all-down phase under a choice: NULL while some region of its
 * own up-set takes traffic, else the policy in force. */
static const char *all_down_phase(const struct pool *p, const struct choice *ch)
{
    if (ch->action == CHOICE_FALLBACK) return "fallback";
    if (ch->action == CHOICE_REJECT) return "reject";
    return select_tier(p, ch->up) == 0 ? "fail_open" : NULL;
}

/* An all_down event when p entered or left its all-down policy between
 * two choices (before: the choice of bp, p itself or the pool p replaces
 * on a reload). */
static void note_all_down(struct health_ctl *hc, const struct pool *p, const struct pool *bp,
                          const struct choice *before, const struct choice *now)
{
    const char *was = before ? all_down_phase(bp, before) : NULL;
    const char *is = all_down_phase(p, now);
    if (!before || (was == is) || (was && is && strcmp(was, is) == 0)) return;
    char why[256];
    if (is) {
        snprintf(why, sizeof(why), "no region of pool %s is up: %s", p->name,
                 strcmp(is, "fallback") == 0 ? "redirecting to the fallback url"
                 : strcmp(is, "reject") == 0 ? "answering with an error"
                                             : "failing open to every region");
    } else {
        char pick[128];
        health_choice_text(p, pick, sizeof(pick));
        snprintf(why, sizeof(why), "traffic goes to %s again", pick);
    }
    log_info("pool %s: all-down %s (%s)", p->name, is ? "entered" : "left", why);
    if (hc->defer) {
        /* a reload: after the override events that explain it */
        struct pending_all_down *n = realloc(hc->pending, (hc->npending + 1) * sizeof(*n));
        if (n) {
            hc->pending = n;
            n += hc->npending;
            if ((n->pool = strdup(p->name))) {
                n->was = was ? was : "serving";
                n->is = is ? is : "serving";
                snprintf(n->why, sizeof(n->why), "%s", why);
                hc->npending++;
                return;
            }
        }
    }
    event_emit(EVENT_ALL_DOWN, p->name, NULL, was ? was : "serving", is ? is : "serving", why);
}

void health_flush_events(struct health_ctl *hc)
{
    hc->defer = false;
    for (size_t i = 0; i < hc->npending; i++) {
        struct pending_all_down *n = &hc->pending[i];
        event_emit(EVENT_ALL_DOWN, n->pool, NULL, n->was, n->is, n->why);
        free(n->pool);
    }
    free(hc->pending);
    hc->pending = NULL;
    hc->npending = 0;
}

/* Publishes p's choice for its up-set now (prev: as in select_publish) and
 * retires the one it replaces: workers may still be reading it. */
static void publish(struct health_ctl *hc, struct pool *p, const struct pool *prev)
{
    double lat[CONFIG_MAX_REGIONS];
    pool_latencies(p, lat);
    const struct choice *before =
        prev && prev != p ? atomic_load_explicit(&prev->sel->cur, memory_order_acquire) : NULL;
    struct choice *old = select_publish(p, prev, health_pool_upset(p), lat);
    if (!old) return;
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    if (hc && hc->started) {
        if (prev && prev != p)
            note_all_down(hc, p, prev, before, ch);
        else
            note_all_down(hc, p, p, old, ch);
    }
    if ((!prev || prev == p) && ch->leader >= 0 && old->leader >= 0 && ch->leader != old->leader)
        log_info("pool %s: latency leader %s -> %s (%.1f ms vs %.1f ms)", p->name,
                 p->regions[old->leader].name, p->regions[ch->leader].name, lat[ch->leader],
                 lat[old->leader]);
    if (hc && hc->retire)
        hc->retire(hc->retire_ctx, old, free);
    else
        free(old);
}

void health_choice_text(const struct pool *p, char *buf, size_t len)
{
    const struct choice *ch = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    buf[0] = '\0';
    if (ch->action == CHOICE_FALLBACK || ch->action == CHOICE_REJECT) {
        snprintf(buf, len, "%s", ch->action == CHOICE_FALLBACK ? "fallback" : "reject");
        return;
    }
    uint64_t seen = 0;
    size_t o = 0;
    for (uint32_t i = 0; i < ch->n && o < len; i++) {
        unsigned r = ch->seq[i];
        if (seen >> r & 1) continue;
        seen |= UINT64_C(1) << r;
        int w = snprintf(buf + o, len - o, "%s%s", o ? "+" : "", p->regions[r].name);
        if (w < 0) break;
        o += (size_t)w;
    }
}

void health_notify_status(const struct health_ctl *hc)
{
    char line[512], pick[128];
    size_t o = 0, up = 0, total = 0;
    const struct config *cfg = hc->cfg;
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool *p = &cfg->pools[i];
        for (size_t k = 0; k < p->nregions; k++, total++) up += health_region_up(&p->regions[k]);
        if (i < 3 && o < sizeof(line)) {
            health_choice_text(p, pick, sizeof(pick));
            int w = snprintf(line + o, sizeof(line) - o, "%s%s\xe2\x86\x92%s", i ? ", " : "",
                             p->name, pick);
            if (w > 0) o += (size_t)w;
        }
    }
    if (o >= sizeof(line)) o = sizeof(line) - 1;
    if (cfg->npools > 3)
        o += (size_t)snprintf(line + o, sizeof(line) - o, ", +%zu pools", cfg->npools - 3);
    if (o >= sizeof(line)) o = sizeof(line) - 1;
    snprintf(line + o, sizeof(line) - o, "; %zu/%zu regions up", up, total);
    sdnotify_status("%s", line);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Arms the timer for the next probe at `due` (monotonic milliseconds). */
static void schedule_at(struct health *h, uint64_t due)
{
    uint64_t now = mono_ms();
    uint64_t ms = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    h->due_ms = due ? due : 1;
    evtimer_add(h->timer, &tv);
}

static void schedule(struct health *h, uint64_t ms)
{
    schedule_at(h, mono_ms() + ms);
}

static void observe_duration(struct health *h, double ms)
{
    double s = ms / 1000.0;
    h->dur_sum += s;
    for (int i = 0; i < HEALTH_DURATION_BUCKETS; i++)
        if (s <= health_duration_bounds[i]) h->dur_buckets[i]++;
}

/* Logs a region's health change and emits its region_state event. */
static void note_change(const struct health *h)
{
    const struct probe_result *r = &h->last;
    const char *op = h->region->op != REGION_AUTO ? " (operator override in force)"
                     : h->cons_on                 ? " (the fleet's consensus decides)"
                                                  : "";
    char why[256];
    if (h->st.up) {
        snprintf(why, sizeof(why), "%u success%s (%.1f ms)%s", h->st.succ,
                 h->st.succ == 1 ? "" : "es", r->latency_ms, op);
        log_info("pool %s region %s UP after %s", h->pool->name, h->region->name, why);
    } else {
        snprintf(why, sizeof(why), "%u failure%s: %s: %s%s", h->st.fail, h->st.fail == 1 ? "" : "s",
                 reason_phases[r->reason < HR_COUNT ? r->reason : 0], r->detail, op);
        log_warn("pool %s region %s DOWN after %s", h->pool->name, h->region->name, why);
    }
    event_emit(EVENT_REGION_STATE, h->pool->name, h->region->name, h->st.up ? "down" : "up",
               h->st.up ? "up" : "down", why);
}

static void on_probe_done(void *arg, const struct probe_result *r)
{
    struct health *h = arg;
    const struct check_cfg *c = h->region->check;
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
        note_change(h);
        if (h->ctl->on_verdict) h->ctl->on_verdict(h->ctl->on_verdict_arg, h);
        publish(h->ctl, h->pool, NULL);
        health_notify_status(h->ctl);
        if (h->ctl->on_change) h->ctl->on_change(h->ctl->on_change_arg);
    } else if (h->pool->balance == BALANCE_LATENCY && r->reason == HR_OK) {
        publish(h->ctl, h->pool, NULL); /* a new measurement may move the leader */
    }
    double rnd = (double)(random() % 10000) / 10000.0;
    schedule(h, health_jitter(health_state_interval(&h->st, c), c->jitter_pct, rnd));
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    h->due_ms = 0;
    if (h->probe || h->region->check->type == CHECK_NONE) return; /* one at a time */
    h->probe = probe_start(h->ctl->penv, h->region->check, on_probe_done, h);
    if (!h->probe) {
        log_warn("pool %s region %s: cannot start a check (out of memory)", h->pool->name,
                 h->region->name);
        schedule(h, h->region->check->interval_ms);
    }
}

static struct health *health_array(const struct config *cfg, size_t *n)
{
    size_t cnt = 0;
    for (size_t i = 0; i < cfg->npools; i++) cnt += cfg->pools[i].nregions;
    *n = cnt;
    return calloc(cnt ? cnt : 1, sizeof(struct health));
}

/* Links the health records hs[] to cfg's regions; carried-over records
 * keep their state. */
static bool health_attach(struct health_ctl *hc, struct config *cfg, struct health *hs, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < cfg->npools; i++) {
        struct pool *p = &cfg->pools[i];
        for (size_t j = 0; j < p->nregions; j++, k++) {
            struct health *h = &hs[k];
            h->ctl = hc;
            h->pool = p;
            h->region = &p->regions[j];
            h->timer = evtimer_new(hc->base, on_timer, h);
            if (!h->timer) return false;
        }
    }
    return k == n;
}

static void health_detach(struct health *hs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (hs[i].region && hs[i].region->health == &hs[i]) hs[i].region->health = NULL;
        if (hs[i].probe) probe_cancel(hs[i].probe);
        if (hs[i].timer) event_free(hs[i].timer);
        hs[i].probe = NULL;
        hs[i].timer = NULL;
    }
}

struct health_ctl *health_start(struct event_base *base, struct config *cfg,
                                health_retire_fn retire, void *retire_ctx)
{
    struct health_ctl *hc = calloc(1, sizeof(*hc));
    if (!hc) return NULL;
    hc->base = base;
    hc->retire = retire;
    hc->retire_ctx = retire_ctx;
    hc->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!hc->dns) {
        /* no resolv.conf: IP literals and /etc/hosts still work */
        hc->dns = evdns_base_new(base, 0);
        if (hc->dns) evdns_base_load_hosts(hc->dns, NULL);
    }
    hc->penv = probe_env_new(base, hc->dns);
    hc->all = health_array(cfg, &hc->n);
    hc->cfg = config_ref(cfg);
    if (!hc->dns || !hc->penv || !hc->all || !health_attach(hc, cfg, hc->all, hc->n)) {
        health_stop(hc);
        return NULL;
    }
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    time_t now = time(NULL);
    for (size_t i = 0; i < hc->n; i++) {
        struct health *h = &hc->all[i];
        health_state_init(&h->st, h->region->check);
        h->last_change = now;
        h->region->health = h;
        event_active(h->timer, EV_TIMEOUT, 0); /* first probe now */
    }
    for (size_t i = 0; i < cfg->npools; i++) publish(hc, &cfg->pools[i], NULL);
    hc->started = true; /* all-down events from here on, not for the choices at start */
    return hc;
}

/* The old records by pool and region name: an open-addressing table, so a
 * reload of thousands of regions stays linear. */
struct old_index {
    struct health **slot;
    size_t mask;
};

static uint64_t name_hash(const char *pool, const char *region)
{
    uint64_t h = fnv1a64_mix(fnv1a64_str(FNV64_OFFSET, pool), 0xff); /* separator */
    return fnv1a64_str(h, region);
}

static bool old_index_build(struct old_index *ix, struct health_ctl *hc)
{
    size_t size = 16;
    while (size < hc->n * 2) size *= 2;
    ix->slot = calloc(size, sizeof(*ix->slot));
    if (!ix->slot) return false;
    ix->mask = size - 1;
    for (size_t i = 0; i < hc->n; i++) {
        struct health *h = &hc->all[i];
        size_t k = name_hash(h->pool->name, h->region->name) & ix->mask;
        while (ix->slot[k]) k = (k + 1) & ix->mask;
        ix->slot[k] = h;
    }
    return true;
}

static struct health *find_old(const struct old_index *ix, const struct pool *p,
                               const struct region *r)
{
    for (size_t k = name_hash(p->name, r->name) & ix->mask; ix->slot[k]; k = (k + 1) & ix->mask) {
        struct health *h = ix->slot[k];
        if (strcmp(h->pool->name, p->name) == 0 && strcmp(h->region->name, r->name) == 0) return h;
    }
    return NULL;
}

/* Everything but the links, the timer and the probe. */
static void carry_state(struct health *h, const struct health *old)
{
    h->st = old->st;
    h->last = old->last;
    h->last_time = old->last_time;
    h->last_change = old->last_change;
    h->changes = old->changes;
    memcpy(h->failures, old->failures, sizeof(h->failures));
    h->probes = old->probes;
    memcpy(h->dur_buckets, old->dur_buckets, sizeof(h->dur_buckets));
    h->dur_sum = old->dur_sum;
    h->cons_on = old->cons_on;
    h->cons_down = old->cons_down;
}

/* A carried-over region keeps its schedule, so reloads, however frequent,
 * never delay a check: the probe in flight moves over (its result counts
 * here), else the next probe stays due when it was. */
static void take_over(struct health *h, struct health *old)
{
    if (old->probe) {
        h->probe = old->probe;
        old->probe = NULL;
        probe_rebind(h->probe, h->region->check, h);
    } else if (old->due_ms) {
        schedule_at(h, old->due_ms);
    } else if (h->region->check->type != CHECK_NONE) {
        event_active(h->timer, EV_TIMEOUT, 0); /* its timer had just fired */
    }
}

bool health_reload(struct health_ctl *hc, struct config *cfg)
{
    size_t n;
    struct health *hs = health_array(cfg, &n);
    /* per new pool: the running pool of that name, whose weighted cycle
     * goes on if the choice stays the same */
    const struct pool **prev = calloc(cfg->npools ? cfg->npools : 1, sizeof(*prev));
    struct old_index ix = {0};
    if (!hs || !prev || !old_index_build(&ix, hc) || !health_attach(hc, cfg, hs, n)) {
        if (hs) health_detach(hs, n);
        free(hs);
        free(prev);
        free(ix.slot);
        return false;
    }
    time_t now = time(NULL);
    size_t kept = 0, k = 0;
    for (size_t i = 0; i < cfg->npools; i++) {
        struct pool *p = &cfg->pools[i];
        for (size_t j = 0; j < p->nregions; j++, k++) {
            struct health *h = &hs[k];
            struct health *old = find_old(&ix, p, h->region);
            if (old && !prev[i]) prev[i] = old->pool;
            h->region->health = h;
            if (old && check_cfg_equal(old->region->check, h->region->check)) {
                carry_state(h, old);
                take_over(h, old);
                kept++;
            } else {
                health_state_init(&h->st, h->region->check);
                h->last_change = now;
                event_active(h->timer, EV_TIMEOUT, 0); /* new or changed: probe now */
            }
        }
    }
    free(ix.slot);
    health_detach(hc->all, hc->n); /* cancels the probes of regions not carried */
    free(hc->all);
    struct config *old_cfg = hc->cfg;
    hc->all = hs;
    hc->n = n;
    hc->cfg = config_ref(cfg);
    probe_env_forget_trust(hc->penv); /* a reload reads changed CA files again */
    hc->defer = true; /* until health_flush_events(), after the reload's override events */
    for (size_t i = 0; i < cfg->npools; i++) publish(hc, &cfg->pools[i], prev[i]);
    free(prev);
    config_unref(old_cfg);
    log_debug("health: %zu of %zu regions carried their state over", kept, n);
    return true;
}

void health_on_change(struct health_ctl *hc, void (*fn)(void *), void *arg)
{
    hc->on_change = fn;
    hc->on_change_arg = arg;
}

void health_on_verdict(struct health_ctl *hc, void (*fn)(void *, struct health *), void *arg)
{
    hc->on_verdict = fn;
    hc->on_verdict_arg = arg;
}

void health_set_consensus(struct health_ctl *hc, struct health *h, bool on, bool down,
                          const char *why)
{
    bool was = health_up(h);
    h->cons_on = on;
    h->cons_down = down;
    bool now = health_up(h);
    if (was == now) return;
    h->changes++;
    h->last_change = time(NULL);
    if (now)
        log_info("pool %s region %s UP by the fleet's consensus (%s)", h->pool->name,
                 h->region->name, why);
    else
        log_warn("pool %s region %s DOWN by the fleet's consensus (%s)", h->pool->name,
                 h->region->name, why);
    event_emit(EVENT_REGION_STATE, h->pool->name, h->region->name, was ? "up" : "down",
               now ? "up" : "down", why);
    publish(hc, h->pool, NULL);
    health_notify_status(hc);
}

void health_republish(struct health_ctl *hc, struct pool *p)
{
    publish(hc, p, NULL);
}

void health_stop(struct health_ctl *hc)
{
    if (!hc) return;
    for (size_t i = 0; i < hc->npending; i++) free(hc->pending[i].pool);
    free(hc->pending);
    if (hc->all) health_detach(hc->all, hc->n);
    free(hc->all);
    probe_env_free(hc->penv);
    if (hc->dns) evdns_base_free(hc->dns, 0);
    config_unref(hc->cfg);
    free(hc);
}

size_t health_count(const struct health_ctl *hc)
{
    return hc->n;
}

const struct health *health_at(const struct health_ctl *hc, size_t i)
{
    return &hc->all[i];
}
