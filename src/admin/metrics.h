/* The Prometheus exposition. Request counters live in counters.h; the
 * server folds a retired config's counts into its lasting totals. */
#ifndef DETOURD_METRICS_H
#define DETOURD_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "control/config.h"

struct server;
struct health_ctl;
struct evbuffer;
struct fleet;
struct recent;

/* What the admin endpoints show besides the config and health. */
struct daemon_view {
    struct server *srv;
    struct health_ctl *health;
    struct fleet *fleet; /* NULL: not started */
    struct acme *acme;   /* NULL: not started */
    const char *config_path;
    time_t start_time;
    uint64_t reloads_ok, reloads_failed;
    bool last_reload_ok;
    time_t last_reload;
    const struct recent *recent; /* the last minute's requests (admin.c samples them) */
};

/* Requests answered from one counter column of the running config c:
 * those of retired configs and the live ones. */
uint64_t metrics_requests(const struct daemon_view *v, const struct config *c, const char *pool,
                          const char *region, unsigned code, unsigned slot);
/* Prometheus text exposition format 0.0.4. */
void metrics_render(struct evbuffer *out, const struct daemon_view *v);
/* Writes s as a Prometheus label value (escaping \ " and newlines). */
void metrics_label(struct evbuffer *out, const char *s);

#endif
