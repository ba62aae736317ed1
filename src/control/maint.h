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

/* Follows cfg (a reference is kept) from now on. NULL on OOM. */
struct maint *maint_start(struct event_base *base, struct health_ctl *h, struct config *cfg);
/* Moves to a newly committed config: tells what the reload changed from
 * the old config's evaluation in force to the new one's now, matching
 * pools, regions and windows by name, so a window already in force before
 * the reload is not logged again. */
void maint_reload(struct maint *m, struct config *cfg);
void maint_stop(struct maint *m);
/* Warns about each override whose `until` is not after now_ms: it ended
 * before the config was loaded, and the region is auto. */
void maint_warn_expired(const struct config *cfg, int64_t now_ms);

#endif
