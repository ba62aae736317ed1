#include "autoconf.h"

#include "metrics.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "health.h"
#include "server.h"

struct total {
    char *pool, *region;
    unsigned code;
    uint64_t n;
};

struct metrics {
    struct total *t; /* open addressing; pool == NULL: empty */
    size_t size, used;
};

static uint64_t key_hash(const char *pool, const char *region, unsigned code)
{
    uint64_t h = fnv1a64_mix(fnv1a64_str(FNV64_OFFSET, pool), 0x100); /* separator */
    return fnv1a64_mix(fnv1a64_str(h, region), code);
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->size = 64;
    m->t = calloc(m->size, sizeof(*m->t));
    if (!m->t) {
        free(m);
        return NULL;
    }
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->size; i++) {
        free(m->t[i].pool);
        free(m->t[i].region);
    }
    free(m->t);
    free(m);
}

static struct total *find(const struct metrics *m, const char *pool, const char *region,
                          unsigned code)
{
    for (size_t i = key_hash(pool, region, code) & (m->size - 1);; i = (i + 1) & (m->size - 1)) {
        struct total *t = &m->t[i];
        if (!t->pool) return t;
        if (t->code == code && strcmp(t->pool, pool) == 0 && strcmp(t->region, region) == 0)
            return t;
    }
}

static bool grow(struct metrics *m)
{
    struct metrics bigger = {calloc(m->size * 2, sizeof(struct total)), m->size * 2, m->used};
    if (!bigger.t) return false;
    for (size_t i = 0; i < m->size; i++)
        if (m->t[i].pool) *find(&bigger, m->t[i].pool, m->t[i].region, m->t[i].code) = m->t[i];
    free(m->t);
    *m = bigger;
    return true;
}

static void add(struct metrics *m, const char *pool, const char *region, unsigned code, uint64_t n)
{
    if (!n) return;
    if ((m->used + 1) * 2 > m->size && !grow(m)) return;
    struct total *t = find(m, pool, region, code);
    if (!t->pool) {
        t->pool = strdup(pool);
        t->region = strdup(region);
        if (!t->pool || !t->region) {
            free(t->pool);
            free(t->region);
            t->pool = t->region = NULL;
            return;
        }
        t->code = code;
        m->used++;
    }
    t->n += n;
}

static uint64_t live(const struct config *c, unsigned nrows, unsigned slot)
{
    uint64_t n = 0;
    if (!c->counts) return 0;
    for (unsigned r = 0; r < nrows; r++)
        n += atomic_load_explicit(&c->counts[r * c->stride + slot], memory_order_relaxed);
    return n;
}

/* Calls fn for every counter column of c with its labels. */
static void each_slot(const struct config *c,
                      void (*fn)(void *, const char *, const char *, unsigned, unsigned), void *arg)
{
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        for (size_t k = 0; k < p->nregions; k++)
            fn(arg, p->name, p->regions[k].name, p->status, p->regions[k].tmpl.slot);
        fn(arg, p->name, "fallback", p->status, p->fallback.slot);
        fn(arg, p->name, "reject", 503, p->reject.slot);
    }
    for (unsigned e = 0; e < CONFIG_ERROR_STATUSES; e++)
        fn(arg, "", "", config_error_status[e], config_error_slot(c, config_error_status[e]));
}

struct fold_arg {
    struct metrics *m;
    const struct config *c;
    unsigned nrows;
};

static void fold_one(void *arg, const char *pool, const char *region, unsigned code, unsigned slot)
{
    struct fold_arg *a = arg;
    add(a->m, pool, region, code, live(a->c, a->nrows, slot));
}

void metrics_fold(struct metrics *m, const struct config *c, unsigned nrows)
{
    struct fold_arg a = {m, c, nrows};
    each_slot(c, fold_one, &a);
}

uint64_t metrics_slot_total(const struct metrics *m, const struct config *c, unsigned nrows,
                            const char *pool, const char *region, unsigned code, unsigned slot)
{
    const struct total *t = find(m, pool, region, code);
    return (t->pool ? t->n : 0) + live(c, nrows, slot);
}

/* ---- exposition ---- */

void metrics_label(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*s == '"')
            evbuffer_add(out, "\\\"", 2);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

static void head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void pr_labels(struct evbuffer *out, const char *pool, const char *region)
{
    evbuffer_add(out, "{pool=\"", 7);
    metrics_label(out, pool);
    evbuffer_add(out, "\",region=\"", 10);
    metrics_label(out, region);
    evbuffer_add(out, "\"", 1);
}

struct render_arg {
    struct evbuffer *out;
    const struct metrics *m;
    const struct config *c;
    unsigned nrows;
    struct metrics *seen; /* series already printed */
};

static void render_one(void *arg, const char *pool, const char *region, unsigned code,
                       unsigned slot)
{
    struct render_arg *a = arg;
    uint64_t n = metrics_slot_total(a->m, a->c, a->nrows, pool, region, code, slot);
    bool is_region = strcmp(region, "fallback") != 0 && strcmp(region, "reject") != 0 && *pool;
    if (!n && !is_region) return; /* quiet series only for real regions */
    evbuffer_add(a->out, "detourd_requests_total", 22);
    pr_labels(a->out, pool, region);
    evbuffer_add_printf(a->out, ",code=\"%u\"} %llu\n", code, (unsigned long long)n);
    if (a->seen) add(a->seen, pool, region, code, 1);
}

void metrics_render(struct evbuffer *out, const struct daemon_view *v)
{
    const struct config *c = atomic_load(&v->srv->cfg);
    unsigned nrows = v->srv->nw;

    head(out, "detourd_requests_total", "counter",
         "Requests answered, by pool, region (or fallback/reject) and status code.");
    struct render_arg ra = {out, v->metrics, c, nrows, metrics_new()};
    each_slot(c, render_one, &ra);
    /* series of pools and regions a reload removed keep their totals */
    for (size_t i = 0; i < v->metrics->size; i++) {
        const struct total *t = &v->metrics->t[i];
        if (!t->pool || (ra.seen && find(ra.seen, t->pool, t->region, t->code)->pool)) continue;
        evbuffer_add(out, "detourd_requests_total", 22);
        pr_labels(out, t->pool, t->region);
        evbuffer_add_printf(out, ",code=\"%u\"} %llu\n", t->code, (unsigned long long)t->n);
    }
    metrics_free(ra.seen);

    size_t nh = health_count(v->health);
    head(out, "detourd_region_up", "gauge",
         "1 if the region may receive traffic (up and weight > 0), else 0.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        evbuffer_add(out, "detourd_region_up", 17);
        pr_labels(out, h->pool->name, h->region->name);
        const struct region *r = h->region;
        evbuffer_add_printf(out, "} %d\n", health_region_up(r) && r->weight > 0 ? 1 : 0);
    }
    head(out, "detourd_region_state_changes_total", "counter",
         "Up/down transitions decided by health checks.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        evbuffer_add(out, "detourd_region_state_changes_total", 34);
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)h->changes);
    }
    head(out, "detourd_check_duration_seconds", "histogram",
         "Duration of health checks, from start to verdict.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        for (int b = 0; b < HEALTH_DURATION_BUCKETS; b++) {
            evbuffer_add(out, "detourd_check_duration_seconds_bucket", 37);
            pr_labels(out, h->pool->name, h->region->name);
            evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", health_duration_bounds[b],
                                (unsigned long long)h->dur_buckets[b]);
        }
        evbuffer_add(out, "detourd_check_duration_seconds_bucket", 37);
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->probes);
        evbuffer_add(out, "detourd_check_duration_seconds_sum", 34);
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %.6f\n", h->dur_sum);
        evbuffer_add(out, "detourd_check_duration_seconds_count", 36);
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)h->probes);
    }
    head(out, "detourd_check_failures_total", "counter", "Failed health checks, by reason.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        for (int r = 1; r < HR_COUNT; r++) {
            evbuffer_add(out, "detourd_check_failures_total", 28);
            pr_labels(out, h->pool->name, h->region->name);
            evbuffer_add_printf(out, ",reason=\"%s\"} %llu\n",
                                health_reason_label((enum health_reason)r),
                                (unsigned long long)h->failures[r]);
        }
    }
    head(out, "detourd_connections_active", "gauge", "Open client connections.");
    evbuffer_add_printf(out, "detourd_connections_active %u\n", atomic_load(&v->srv->nconns));
    head(out, "detourd_config_reloads_total", "counter", "Configuration reloads, by result.");
    evbuffer_add_printf(out,
                        "detourd_config_reloads_total{result=\"success\"} %llu\n"
                        "detourd_config_reloads_total{result=\"failure\"} %llu\n",
                        (unsigned long long)v->reloads_ok, (unsigned long long)v->reloads_failed);
    head(out, "detourd_config_last_reload_successful", "gauge",
         "1 if the last reload (or the start) succeeded.");
    evbuffer_add_printf(out, "detourd_config_last_reload_successful %d\n",
                        v->last_reload_ok ? 1 : 0);
    head(out, "detourd_config_last_reload_timestamp_seconds", "gauge",
         "Unix time of the last reload attempt (or of the start).");
    evbuffer_add_printf(out, "detourd_config_last_reload_timestamp_seconds %lld\n",
                        (long long)v->last_reload);
    head(out, "detourd_build_info", "gauge", "Always 1; the version as a label.");
    evbuffer_add_printf(out, "detourd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    head(out, "detourd_start_time_seconds", "gauge", "Unix time the daemon started.");
    evbuffer_add_printf(out, "detourd_start_time_seconds %lld\n", (long long)v->start_time);
}
