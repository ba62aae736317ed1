/* Timed overrides and maintenance windows at run time: keeps every
 * region's operator state (snapshot.h: region.op) current as the wall
 * clock passes the boundaries of the running config's schedule
 * (schedule.h), republishes the choices of the pools it changes, logs each
 * start and end once and sends it as an override event per region (an end
 * before a start, so a handover is told as it happens; the words are
 * maint_text.h's), and counts the changes that move traffic in the
 * region's state changes. Main thread only. */
#ifndef DETOURD_MAINT_H
#define DETOURD_MAINT_H

#include <stdint.h>

#include "control/config.h"

struct event_base;
struct health_ctl;
struct maint;
struct sched_model;

/* The fleet's operator state (fleet/), by name: drains of regions and
 * maintenance windows kept in etcd. Composed over a config's own schedule
 * (names resolved against its pools; what names no region of it is left
 * out), so that they reach the request path by the same way as the
 * config's overrides and windows: the schedule's evaluation, each region's
 * `op`, its pool's published choice. */
struct maint_fleet_drain {
    const char *key; /* the full etcd key */
    const char *pool, *region;
    enum region_state state; /* REGION_DRAIN or REGION_DOWN */
    bool has_from, has_until;
    int64_t from_ms, until_ms;
    const char *reason; /* NULL: none */
};

struct maint_fleet_window {
    const char *name; /* "fleet:NAME" */
    int64_t from_ms, until_ms;
    enum region_state state;
    const char *reason;
    const char *const *pools, *const *regions; /* nregions of each */
    size_t nregions;
};

struct maint_layer {
    const struct maint_fleet_drain *drains;
    size_t ndrains;
    const struct maint_fleet_window *windows;
    size_t nwindows;
};

/* Follows cfg (a reference is kept) from now on. NULL on OOM. */
struct maint *maint_start(struct event_base *base, struct health_ctl *h, struct config *cfg);
/* Moves to a newly committed config: tells what the reload changed from
 * the old config's evaluation in force to the new one's now, matching
 * pools, regions and windows by name, so a window already in force before
 * the reload is not logged again. */
void maint_reload(struct maint *m, struct config *cfg);
void maint_stop(struct maint *m);

/* Composes layer (NULL or empty: none) over cfg's own schedule into the
 * model cfg follows from now on, and evaluates it now; every string is
 * copied. For a config not yet in use (a reload, before its choices are
 * published): maint_reload() then tells what changed. False on OOM (cfg
 * is then unchanged). */
bool maint_compose(struct config *cfg, const struct maint_layer *layer);
/* The fleet's state changed: composes it over the running config, logs,
 * sends and counts what that changes, and republishes the pools it moves,
 * exactly as a boundary of the schedule does. False on OOM (nothing
 * changed). */
bool maint_set_layer(struct maint *m, const struct maint_layer *layer);
/* Frees a model maint_compose() built. */
void maint_model_free(struct sched_model *model);
/* Warns about each override whose `until` is not after now_ms: it ended
 * before the config was loaded, and the region is auto. */
void maint_warn_expired(const struct config *cfg, int64_t now_ms);

#endif
