/* Request counters that outlive configs, and the Prometheus exposition.
 * Workers count into their row of the running config's matrix (one writer
 * per row, no locked instructions); when a config is retired, its counts
 * are folded here by pool, region and status, so counters never go back. */
#ifndef DETOURD_METRICS_H
#define DETOURD_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

struct metrics;
struct server;
struct health_ctl;
struct evbuffer;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
/* Adds every count of a retired config (nrows worker rows). */
void metrics_fold(struct metrics *m, const struct config *c, unsigned nrows);
/* Requests answered from one counter column: folded + live. */
uint64_t metrics_slot_total(const struct metrics *m, const struct config *c, unsigned nrows,
                            const char *pool, const char *region, unsigned code, unsigned slot);

/* What the admin endpoints show besides the config and health. */
struct daemon_view {
    struct server *srv;
    struct health_ctl *health;
    struct metrics *metrics;
    const char *config_path;
    time_t start_time;
    uint64_t reloads_ok, reloads_failed;
    bool last_reload_ok;
    time_t last_reload;
};

/* Prometheus text exposition format 0.0.4. */
void metrics_render(struct evbuffer *out, const struct daemon_view *v);
/* Writes s as a Prometheus label value (escaping \ " and newlines). */
void metrics_label(struct evbuffer *out, const char *s);

#endif
