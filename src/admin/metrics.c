#include "autoconf.h"

#include "admin/metrics.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "control/acme.h"
#include "fleet/fleet.h"
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

static void render_tls(struct evbuffer *out, const struct config *c, const struct daemon_view *v)
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
        /* ACME certificates: cert="acme:NAME" */
        size_t na = 0;
        const char *const *names = t ? tls_srv_acme_names(t, &na) : NULL;
        for (size_t k = 0; k < na; k++) {
            time_t end = acme_cert_not_after(v->acme, names[k]);
            if (!end) continue;
            tls_label(out, "detourd_tls_certificate_expiry_timestamp_seconds", c->listen[i].text);
            evbuffer_add(out, LIT(",cert=\"acme:"));
            metrics_label(out, names[k]);
            evbuffer_add_printf(out, "\"} %lld\n", (long long)end);
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

/* ---- process_*: what a Prometheus client library exports for a process ---- */

/* Fields of /proc/self/stat after the command name: utime (14), stime (15),
 * starttime (22), vsize (23), rss (24), numbered as in proc(5). */
static bool proc_stat(unsigned long long *utime, unsigned long long *stime,
                      unsigned long long *start, unsigned long long *vsize, long long *rss)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    return p && sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                       "%*d %*d %llu %llu %lld",
                       utime, stime, start, vsize, rss) == 5;
}

/* The boot time (Unix seconds), from /proc/stat's btime. */
static long long boot_time(void)
{
    char line[256];
    long long bt = -1;
    FILE *f = fopen("/proc/stat", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %lld", &bt) == 1) break;
    if (f) fclose(f);
    return bt;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void render_process(struct evbuffer *out, const struct daemon_view *v)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long ut, st, start, vsize;
    long long rss, bt = boot_time();
    bool ok = tick > 0 && page > 0 && proc_stat(&ut, &st, &start, &vsize, &rss);
    if (ok) {
        head(out, "process_cpu_seconds_total", "counter",
             "Total user and system CPU time spent in seconds.");
        evbuffer_add_printf(out, "process_cpu_seconds_total %.2f\n", (double)(ut + st) / tick);
        head(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        evbuffer_add_printf(out, "process_resident_memory_bytes %lld\n", rss * page);
        head(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        evbuffer_add_printf(out, "process_virtual_memory_bytes %llu\n", vsize);
    }
    head(out, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
    if (ok && bt >= 0)
        evbuffer_add_printf(out, "process_start_time_seconds %.2f\n",
                            (double)bt + (double)start / tick);
    else
        evbuffer_add_printf(out, "process_start_time_seconds %lld\n", (long long)v->start_time);
    long fds = open_fds();
    if (fds >= 0) {
        head(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        evbuffer_add_printf(out, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        head(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            evbuffer_add_printf(out, "process_max_fds +Inf\n");
        else
            evbuffer_add_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
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
    head(out, "detourd_region_healthy", "gauge",
         "1 if this instance's health check of the region passes (or it has none), whatever "
         "the operator state, else 0.");
    for (size_t i = 0; i < nh; i++) {
        const struct health *h = health_at(v->health, i);
        evbuffer_add(out, LIT("detourd_region_healthy"));
        pr_labels(out, h->pool->name, h->region->name);
        evbuffer_add_printf(out, "} %d\n", h->st.up ? 1 : 0);
    }
    head(out, "detourd_region_state_changes_total", "counter",
         "State changes: each up/down change of the health check, and each start or end of an "
         "override or maintenance window that changes whether the region may receive traffic.");
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
    fleet_metrics(v->fleet, out);
    acme_metrics(v->acme, out);
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
    render_tls(out, server_config(v->srv), v);
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
    render_process(out, v);
}
