#include "autoconf.h"

#include "control/maint.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "events/events.h"
#include "control/health.h"
#include "lib/log.h"
#include "control/schedule.h"

/* The timer never sleeps longer than this: it runs on the monotonic
 * clock, so a wall-clock step (NTP, suspend) is noticed within this time
 * and every boundary is evaluated again at once. */
#define MAINT_TICK_MS 1000

#define PHASE_UNKNOWN (-1)

struct maint {
    struct event_base *base;
    struct event *timer;
    struct health_ctl *health;
    struct config *cfg;        /* a reference */
    struct sched_region *prev; /* per region of cfg, flat: the evaluation in force */
    int *prev_phases;          /* per window: enum sched_phase, or PHASE_UNKNOWN */
    bool timed;                /* cfg has a window or an until: the timer runs */
};

static size_t region_total(const struct config *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->npools; i++) n += c->pools[i].nregions;
    return n;
}

static bool has_timed(const struct config *c)
{
    if (c->sched->nwindows) return true;
    for (size_t i = 0; i < c->npools; i++)
        for (size_t k = 0; k < c->pools[i].nregions; k++)
            if (c->pools[i].regions[k].state != REGION_AUTO && c->pools[i].regions[k].has_until)
                return true;
    return false;
}

/* Up for traffic under operator state op (health_region_up with op). */
static bool up_with(const struct region *r, enum region_state op)
{
    switch (op) {
    case REGION_UP: return true;
    case REGION_AUTO: return r->health ? r->health->st.up : true;
    default: return false;
    }
}

static void targets_text(const struct config *c, const struct sched_window *w, char *buf,
                         size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t t = 0; t < w->ntargets && o < len; t++) {
        const struct pool *p = &c->pools[w->targets[t].pool];
        int n = snprintf(buf + o, len - o, "%s%s/%s", t ? ", " : "", p->name,
                         p->regions[w->targets[t].region].name);
        if (n < 0) break;
        o += (size_t)n;
    }
}

static void log_window(const struct config *c, size_t k, int was, enum sched_phase now)
{
    const struct sched_window *w = &c->sched->windows[k];
    char regions[512], until[SCHED_TIME_LEN];
    targets_text(c, w, regions, sizeof(regions));
    sched_format_time(w->until_ms, until, sizeof(until));
    const char *why = w->reason ? w->reason : "no reason given";
    if (now == SCHED_ACTIVE)
        log_info("maintenance %s %s: %s %s until %s (%s)", w->name,
                 was == PHASE_UNKNOWN ? "in force" : "started", region_state_name(w->state),
                 regions, until, why);
    else if (was == SCHED_ACTIVE)
        log_info("maintenance %s ended: %s back to their own state (%s)", w->name, regions, why);
    else if (was != PHASE_UNKNOWN)
        log_info("maintenance %s is %s now (the wall clock moved): %s (%s)", w->name,
                 sched_phase_name(now), regions, why);
}

/* What a region's operator state is now, for a log line. */
static void source_text(const struct sched_region *s, char *buf, size_t len)
{
    if (s->source == SCHED_SOURCE_WINDOW)
        snprintf(buf, len, "%s by maintenance %s", region_state_name(s->state), s->window);
    else if (s->source == SCHED_SOURCE_CONFIG)
        snprintf(buf, len, "%s by its own override", region_state_name(s->state));
    else
        snprintf(buf, len, "auto (its health check decides)");
}

static void log_override(const struct pool *p, const struct region *r,
                         const struct sched_region *was, const struct sched_region *now)
{
    char until[SCHED_TIME_LEN], state[160];
    source_text(now, state, sizeof(state));
    if (was->source == SCHED_SOURCE_CONFIG && now->source != SCHED_SOURCE_CONFIG) {
        sched_format_time(r->until_ms, until, sizeof(until));
        log_info("pool %s region %s: override %s ended at %s (%s); now %s", p->name, r->name,
                 region_state_name(r->state), until, r->reason ? r->reason : "no reason given",
                 state);
    } else if (now->source == SCHED_SOURCE_CONFIG && was->source != SCHED_SOURCE_CONFIG) {
        log_info("pool %s region %s: override %s in force again (the wall clock moved back)",
                 p->name, r->name, region_state_name(r->state));
    }
}

/* An override event for a region whose operator state or its source
 * changed (by the clock, or by a reload: on_reload). */
static void note_override(const struct pool *p, const struct region *r,
                          const struct sched_region *was, const struct sched_region *now,
                          bool on_reload)
{
    bool same_window = was->source != SCHED_SOURCE_WINDOW || now->source != SCHED_SOURCE_WINDOW ||
                       strcmp(was->window, now->window) == 0;
    if (was->state == now->state && was->source == now->source && same_window) return;
    bool started = now->source != SCHED_SOURCE_NONE;
    const struct sched_region *src = started ? now : was;
    char why[320];
    int n = src->source == SCHED_SOURCE_WINDOW
                ? snprintf(why, sizeof(why), "maintenance %s", src->window)
                : snprintf(why, sizeof(why), "override %s", region_state_name(src->state));
    if (n < 0) return;
    snprintf(why + n, sizeof(why) - (size_t)n, " %s%s: %s", started ? "started" : "ended",
             on_reload ? " (config reloaded)" : "", src->reason ? src->reason : "no reason given");
    event_emit(EVENT_OVERRIDE, p->name, r->name, region_state_name(was->state),
               region_state_name(now->state), why);
}

/* Evaluates the schedule at now_ms; for every region whose operator state
 * changed: logs the end of its own override, counts a change of whether it
 * may receive traffic, and republishes its pool's choice. */
static void evaluate(struct maint *m, int64_t now_ms)
{
    struct config *c = m->cfg;
    config_sched_apply(c, now_ms);
    bool any = false;
    time_t now_s = time(NULL);
    size_t f = 0;
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        bool dirty = false;
        for (size_t k = 0; k < p->nregions; k++, f++) {
            struct region *r = &p->regions[k];
            const struct sched_region *now = &c->sched_now->pools[i][k];
            struct sched_region *was = &m->prev[f];
            if (was->state != now->state) {
                dirty = true;
                if (up_with(r, was->state) != up_with(r, now->state) && r->health) {
                    r->health->changes++;
                    r->health->last_change = now_s;
                }
            }
            if (was->source != now->source || was->state != now->state) {
                log_override(p, r, was, now);
                note_override(p, r, was, now, false);
            }
            *was = *now;
        }
        if (dirty) {
            health_republish(m->health, p);
            any = true;
        }
    }
    for (size_t k = 0; k < c->sched->nwindows; k++) {
        enum sched_phase ph = c->sched_now->phases[k];
        if (m->prev_phases[k] != (int)ph) {
            log_window(c, k, m->prev_phases[k], ph);
            m->prev_phases[k] = (int)ph;
        }
    }
    if (any) health_notify_status(m->health);
}

/* Sleeps until the next boundary, or MAINT_TICK_MS at most. */
static void arm(struct maint *m, int64_t now_ms)
{
    if (!m->timed) return;
    int64_t next = sched_next_boundary(m->cfg->sched, m->cfg->sched_now_ms);
    int64_t ms = next == INT64_MAX ? MAINT_TICK_MS : next - now_ms;
    if (ms > MAINT_TICK_MS) ms = MAINT_TICK_MS;
    if (ms < 1) ms = 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(m->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct maint *m = arg;
    (void)fd, (void)what;
    int64_t now = clock_wall_ms();
    const struct config *c = m->cfg;
    /* a boundary reached, or the wall clock went back: evaluate again */
    if (now >= sched_next_boundary(c->sched, c->sched_now_ms) || now < c->sched_now_ms)
        evaluate(m, now);
    arm(m, now);
}

void maint_warn_expired(const struct config *c, int64_t now_ms)
{
    for (size_t i = 0; i < c->npools; i++)
        for (size_t k = 0; k < c->pools[i].nregions; k++) {
            const struct region *r = &c->pools[i].regions[k];
            if (r->state == REGION_AUTO || !r->has_until || r->until_ms > now_ms) continue;
            char until[SCHED_TIME_LEN];
            sched_format_time(r->until_ms, until, sizeof(until));
            log_warn("pool %s region %s: state %s ended at %s, before this config was loaded: "
                     "the region is auto",
                     c->pools[i].name, r->name, region_state_name(r->state), until);
        }
}

/* The pool of c named like `like` (at index `hint` in the common case). */
static const struct pool *find_pool(const struct config *c, size_t hint, const char *name)
{
    if (hint < c->npools && strcmp(c->pools[hint].name, name) == 0) return &c->pools[hint];
    for (size_t i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].name, name) == 0) return &c->pools[i];
    return NULL;
}

/* Override events for what a reload changed: each region of cfg that old
 * had too, whose operator state in force is not the one it had. */
static void note_reload(const struct config *old, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool *p = &cfg->pools[i];
        const struct pool *op = find_pool(old, i, p->name);
        if (!op) continue;
        size_t oi = (size_t)(op - old->pools);
        for (size_t k = 0; k < p->nregions; k++)
            for (size_t j = 0; j < op->nregions; j++)
                if (strcmp(op->regions[j].name, p->regions[k].name) == 0) {
                    note_override(p, &p->regions[k], &old->sched_now->pools[oi][j],
                                  &cfg->sched_now->pools[i][k], true);
                    break;
                }
    }
}

/* Takes cfg: the evaluation it was loaded with is the one in force;
 * windows keep the phases they had in old (by name), if given. */
static bool follow(struct maint *m, struct config *cfg, const struct config *old,
                   const int *old_phases)
{
    size_t n = region_total(cfg);
    struct sched_region *prev = calloc(n ? n : 1, sizeof(*prev));
    int *phases = calloc(cfg->sched->nwindows ? cfg->sched->nwindows : 1, sizeof(*phases));
    if (!prev || !phases) {
        free(prev);
        free(phases);
        return false;
    }
    size_t f = 0;
    for (size_t i = 0; i < cfg->npools; i++)
        for (size_t k = 0; k < cfg->pools[i].nregions; k++) prev[f++] = cfg->sched_now->pools[i][k];
    for (size_t k = 0; k < cfg->sched->nwindows; k++) {
        phases[k] = PHASE_UNKNOWN;
        for (size_t j = 0; old && j < old->sched->nwindows; j++)
            if (strcmp(old->sched->windows[j].name, cfg->sched->windows[k].name) == 0)
                phases[k] = old_phases ? old_phases[j] : PHASE_UNKNOWN;
    }
    free(m->prev);
    free(m->prev_phases);
    m->prev = prev;
    m->prev_phases = phases;
    if (old) note_reload(old, cfg);
    m->cfg = config_ref(cfg);
    m->timed = has_timed(cfg);
    int64_t now = clock_wall_ms();
    maint_warn_expired(cfg, cfg->sched_now_ms);
    evaluate(m, now);
    evtimer_del(m->timer);
    arm(m, now);
    return true;
}

struct maint *maint_start(struct event_base *base, struct health_ctl *h, struct config *cfg)
{
    struct maint *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->base = base;
    m->health = h;
    m->timer = evtimer_new(base, on_timer, m);
    if (!m->timer || !follow(m, cfg, NULL, NULL)) {
        if (m->timer) event_free(m->timer);
        free(m);
        return NULL;
    }
    return m;
}

void maint_reload(struct maint *m, struct config *cfg)
{
    struct config *old = m->cfg;
    int *old_phases = m->prev_phases;
    m->prev_phases = NULL;
    if (!follow(m, cfg, old, old_phases)) {
        /* out of memory: no timer; the schedule stays as evaluated at load */
        log_error("maintenance: out of memory; boundaries will not be followed until a reload");
        evtimer_del(m->timer);
        m->cfg = config_ref(cfg);
        m->timed = false;
    }
    free(old_phases);
    config_unref(old);
}

void maint_stop(struct maint *m)
{
    if (!m) return;
    if (m->timer) event_free(m->timer);
    config_unref(m->cfg);
    free(m->prev);
    free(m->prev_phases);
    free(m);
}
