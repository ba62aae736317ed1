#include "autoconf.h"

#include "admin/metrics.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "serve/counters.h"
#include "events/events.h"
#include "control/health.h"
#include "control/server.h"
#include "control/tls_config.h"
#include "serve/tls.h"
#include "lib/lit.h"

uint64_t metrics_requests(const struct daemon_view *v, const struct config *c, const char *pool,
                          const char *region, unsigned code, unsigned slot)
{
    return counters_total(server_counters(v->srv), c, server_workers(v->srv), pool, region, code,
                          slot);
}

/* ---- exposition ---- */

void metrics_label(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            evbuffer_add(out, LIT("\\\\"));
        else if (*s == '"')
            evbuffer_add(out, LIT("\\\""));
        else if (*s == '\n')
            evbuffer_add(out, LIT("\\n"));
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
    evbuffer_add(out, LIT("{pool=\""));
    metrics_label(out, pool);
    evbuffer_add(out, LIT("\",region=\""));
    metrics_label(out, region);
    evbuffer_add(out, LIT("\""));
}

static void tls_label(struct evbuffer *out, const char *name, const char *listener)
{
    evbuffer_add_printf(out, "%s{listener=\"", name);
    metrics_label(out, listener);
    evbuffer_add(out, LIT("\""));
}

static void render_tls_handshakes(const struct tls_stats_view *s, void *arg)
{
    struct evbuffer *out = arg;
    const char *const results[] = {"full", "resumed", "failed"};
    const uint64_t n[] = {s->full, s->resumed, s->failed};
    for (int i = 0; i < 3; i++) {
        tls_label(out, "detourd_tls_handshakes_total", s->listener);
        evbuffer_add_printf(out, ",result=\"%s\"} %llu\n", results[i], (unsigned long long)n[i]);
    }
}

static void render_tls_failures(const struct tls_stats_view *s, void *arg)
{
    struct evbuffer *out = arg;
    for (int i = 0; i < TLS_FAIL_N; i++) {
        tls_label(out, "detourd_tls_handshake_failures_total", s->listener);
        evbuffer_add_printf(out, ",reason=\"%s\"} %llu\n", tls_fail_name((enum tls_fail)i),
                            (unsigned long long)s->fail[i]);
    }
}

static void render_tls(struct evbuffer *out, const struct config *c)
{
    head(out, "detourd_tls_handshakes_total", "counter",
         "TLS handshakes on the redirect listeners, by result.");
    tls_stats_each(render_tls_handshakes, out);
    head(out, "detourd_tls_handshake_failures_total", "counter",
         "Failed TLS handshakes, by reason.");
    tls_stats_each(render_tls_failures, out);
    head(out, "detourd_tls_certificate_expiry_timestamp_seconds", "gauge",
         "Unix time when each listener certificate expires (notAfter).");
    for (size_t i = 0; c && i < c->nlisten; i++) {
        const struct tls_srv *t = c->listen_tls[i];
        for (size_t k = 0; t && k < tls_srv_ncerts(t); k++) {
            struct tls_cert_info ci = tls_srv_cert(t, k);
            tls_label(out, "detourd_tls_certificate_expiry_timestamp_seconds", c->listen[i].text);
            evbuffer_add(out, LIT(",cert=\""));
            metrics_label(out, ci.file);
            evbuffer_add_printf(out, "\"} %lld\n", (long long)ci.not_after);
        }
    }
}

struct render_arg {
    struct evbuffer *out;
    const struct daemon_view *v;
    const struct config *c;
};

static void render_total(struct evbuffer *out, const char *pool, const char *region, unsigned code,
                         uint64_t n)
{
    evbuffer_add(out, LIT("detourd_requests_total"));
    pr_labels(out, pool, region);
    evbuffer_add_printf(out, ",code=\"%u\"} %llu\n", code, (unsigned long long)n);
}

static void render_one(void *arg, const char *pool, const char *region, unsigned code,
                       unsigned slot)
{
    struct render_arg *a = arg;
    uint64_t n = metrics_requests(a->v, a->c, pool, region, code, slot);
    bool is_region = strcmp(region, "fallback") != 0 && strcmp(region, "reject") != 0 && *pool;
    if (!n && !is_region) return; /* quiet series only for real regions */
    render_total(a->out, pool, region, code, n);
}

static void render_removed(void *arg, const char *pool, const char *region, unsigned code,
                           uint64_t n)
{
    render_total(arg, pool, region, code, n);
}

/* Events by configured sink: delivered, failed, dropped; and the queue. */
static void render_events(struct evbuffer *out)
{
    const struct event_sink *first = events_sinks(events_default());
    head(out, "detourd_events_total", "counter",
         "Events by sink and result: delivered, failed (after its tries), dropped (a full "
         "queue's oldest, or queued when the sink was removed).");
    for (const struct event_sink *s = first; s; s = s->next) {
        if (!s->name) continue;
        evbuffer_add_printf(out,
                            "detourd_events_total{sink=\"%s\",result=\"delivered\"} %llu\n"
                            "detourd_events_total{sink=\"%s\",result=\"failed\"} %llu\n"
                            "detourd_events_total{sink=\"%s\",result=\"dropped\"} %llu\n",
                            s->name, (unsigned long long)s->delivered, s->name,
                            (unsigned long long)s->failed, s->name, (unsigned long long)s->dropped);
    }
    head(out, "detourd_events_queued", "gauge",
         "Events waiting in a sink's queue (the one in progress included).");
    for (const struct event_sink *s = first; s; s = s->next)
        if (s->name)
            evbuffer_add_printf(out, "detourd_events_queued{sink=\"%s\"} %zu\n", s->name, s->q.len);
}

void metrics_render(struct evbuffer *out, const struct daemon_view *v)
{
    const struct config *c = server_config(v->srv);

    head(out, "detourd_requests_total", "counter",
         "Requests answered, by pool, region (or fallback/reject) and status code.");
    struct render_arg ra = {out, v, c};
    counters_each_slot(c, render_one, &ra);
    /* series of pools and regions a reload removed keep their totals */
    counters_each_removed(server_counters(v->srv), c, render_removed, out);

    size_t nh = health_count(v->health);
    head(out, "detourd_region_up", "gauge",
         "1 if the region may receive traffic (up and weight > 0), else 0.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        evbuffer_add(out, LIT("detourd_region_up"));
        pr_labels(out, h->pool->name, h->region->name);
        const struct region *r = h->region;
        evbuffer_add_printf(out, "} %d\n", health_region_up(r) && r->weight > 0 ? 1 : 0);
    }
    head(out, "detourd_region_state_changes_total", "counter",
         "Up/down transitions: decided by health checks, or by an override ending or a "
         "maintenance window starting or ending.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        evbuffer_add(out, LIT("detourd_region_state_changes_total"));
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)h->changes);
    }
    head(out, "detourd_check_duration_seconds", "histogram",
         "Duration of health checks, from start to verdict.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        for (int b = 0; b < HEALTH_DURATION_BUCKETS; b++) {
            evbuffer_add(out, LIT("detourd_check_duration_seconds_bucket"));
            pr_labels(out, h->pool->name, h->region->name);
            evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", health_duration_bounds[b],
                                (unsigned long long)h->dur_buckets[b]);
        }
        evbuffer_add(out, LIT("detourd_check_duration_seconds_bucket"));
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->probes);
        evbuffer_add(out, LIT("detourd_check_duration_seconds_sum"));
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %.6f\n", h->dur_sum);
        evbuffer_add(out, LIT("detourd_check_duration_seconds_count"));
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)h->probes);
    }
    head(out, "detourd_check_failures_total", "counter", "Failed health checks, by reason.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        for (int r = 1; r < HR_COUNT; r++) {
            evbuffer_add(out, LIT("detourd_check_failures_total"));
            pr_labels(out, h->pool->name, h->region->name);
            evbuffer_add_printf(out, ",reason=\"%s\"} %llu\n",
                                health_reason_label((enum health_reason)r),
                                (unsigned long long)h->failures[r]);
        }
    }
    head(out, "detourd_connections_active", "gauge", "Open client connections.");
    evbuffer_add_printf(out, "detourd_connections_active %u\n", server_connections(v->srv));
    render_tls(out, server_config(v->srv));
    render_events(out);
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
