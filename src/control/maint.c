#include "autoconf.h"

#include "control/maint.h"

#include <event2/event.h>
#include <stdint.h>
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

struct maint {
    struct event_base *base;
    struct event *timer;
    struct health_ctl *health;
    struct config *cfg;       /* a reference */
    struct sched_result prev; /* shaped like cfg's: the evaluation in force */
    size_t prev_npools;       /* its shape, for freeing it */
    int64_t prev_ms;          /* the instant prev was evaluated for */
    bool phases_known;        /* prev.phases is an evaluation (not before the first) */
    bool timed;               /* cfg has a window or an until: the timer runs */
};

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

/* ---- evaluations kept: shaped like a config's sched_now ---- */

static void result_free(struct sched_result *r, size_t npools)
{
    for (size_t i = 0; r->pools && i < npools; i++) free(r->pools[i]);
    free(r->pools);
    free(r->phases);
    *r = (struct sched_result){0};
}

/* A copy of c's evaluation in force; false on OOM (out is then empty). */
static bool result_copy(struct sched_result *out, const struct config *c)
{
    size_t nw = c->sched->nwindows;
    out->pools = calloc(c->npools ? c->npools : 1, sizeof(*out->pools));
    out->phases = calloc(nw ? nw : 1, sizeof(*out->phases));
    if (!out->pools || !out->phases) {
        result_free(out, 0);
        return false;
    }
    for (size_t i = 0; i < c->npools; i++) {
        size_t n = c->pools[i].nregions;
        out->pools[i] = calloc(n ? n : 1, sizeof(*out->pools[i]));
        if (!out->pools[i]) {
            result_free(out, i);
            return false;
        }
        memcpy(out->pools[i], c->sched_now->pools[i], n * sizeof(*out->pools[i]));
    }
    memcpy(out->phases, c->sched_now->phases, nw * sizeof(*out->phases));
    return true;
}

/* ---- steps: from one evaluation to the next ---- */

/* One side of a step: a config and an evaluation of its schedule. Both
 * sides have the same config on the clock path; a reload goes from the
 * old config's evaluation to the new one's, matching pools, regions and
 * windows by name. */
struct side {
    const struct config *c;
    const struct sched_result *r;
    int64_t ms;        /* the instant r was evaluated for */
    bool phases_known; /* false before the first evaluation: nothing started or ended */
};

enum cause {
    BY_CLOCK,      /* the wall clock passed a boundary */
    BY_CLOCK_BACK, /* the wall clock was stepped back */
    BY_RELOAD,     /* a reload changed the schedule */
};

static const char *why_text(const char *reason)
{
    return reason ? reason : "no reason given";
}

static size_t find_pool(const struct config *c, size_t hint, const char *name)
{
    if (hint < c->npools && strcmp(c->pools[hint].name, name) == 0) return hint;
    for (size_t i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].name, name) == 0) return i;
    return SIZE_MAX;
}

static size_t find_region(const struct pool *p, size_t hint, const char *name)
{
    if (hint < p->nregions && strcmp(p->regions[hint].name, name) == 0) return hint;
    for (size_t k = 0; k < p->nregions; k++)
        if (strcmp(p->regions[k].name, name) == 0) return k;
    return SIZE_MAX;
}

static size_t find_window(const struct sched_model *m, size_t hint, const char *name)
{
    if (hint < m->nwindows && strcmp(m->windows[hint].name, name) == 0) return hint;
    for (size_t k = 0; k < m->nwindows; k++)
        if (strcmp(m->windows[k].name, name) == 0) return k;
    return SIZE_MAX;
}

/* Region k of pool i of `to`'s config in `from`'s: false if it has none. */
static bool counterpart(const struct side *from, const struct side *to, size_t i, size_t k,
                        size_t *fi, size_t *fk)
{
    if (from->c == to->c) {
        *fi = i;
        *fk = k;
        return true;
    }
    *fi = find_pool(from->c, i, to->c->pools[i].name);
    if (*fi == SIZE_MAX) return false;
    *fk = find_region(&from->c->pools[*fi], k, to->c->pools[i].regions[k].name);
    return *fk != SIZE_MAX;
}

/* The step of region k of pool i of a's config from b: its notes (0 when
 * nothing changed, or when b has no such region). */
static size_t region_step(const struct side *b, const struct side *a, size_t i, size_t k,
                          struct sched_step *st, enum sched_note notes[2])
{
    size_t bi, bk;
    if (!counterpart(b, a, i, k, &bi, &bk)) return 0;
    st->was = &b->r->pools[bi][bk];
    st->now = &a->r->pools[i][k];
    if (sched_same_source(st->was, st->now) && st->was->state == st->now->state) return 0;
    st->was_applies = sched_source_applies(a->c->sched, i, k, st->was, a->ms);
    st->now_applied = sched_source_applies(b->c->sched, bi, bk, st->now, b->ms);
    return sched_step_notes(st, notes);
}

/* "maintenance NAME" or "override STATE" */
static void source_name(const struct sched_region *s, char *buf, size_t len)
{
    if (s->source == SCHED_SOURCE_WINDOW)
        snprintf(buf, len, "maintenance %s", s->window);
    else
        snprintf(buf, len, "override %s", region_state_name(s->state));
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

/* The reason of the override event for one note of a step. */
static void note_text(enum sched_note n, const struct sched_step *st, enum cause why, char *buf,
                      size_t len)
{
    char was[160], now[160];
    source_name(st->was, was, sizeof(was));
    source_name(st->now, now, sizeof(now));
    const char *by = why == BY_RELOAD ? " (config reloaded)" : "";
    switch (n) {
    case SCHED_NOTE_ENDED:
        if (why == BY_CLOCK_BACK)
            snprintf(buf, len, "%s is pending again (the wall clock moved back): %s", was,
                     why_text(st->was->reason));
        else
            snprintf(buf, len, "%s ended%s: %s", was, by, why_text(st->was->reason));
        break;
    case SCHED_NOTE_STARTED:
        if (why == BY_CLOCK_BACK)
            snprintf(buf, len, "%s in force again (the wall clock moved back): %s", now,
                     why_text(st->now->reason));
        else
            snprintf(buf, len, "%s started%s: %s", now, by, why_text(st->now->reason));
        break;
    case SCHED_NOTE_CHANGED:
        if (st->now->source == SCHED_SOURCE_WINDOW)
            snprintf(now, sizeof(now), "maintenance %s", st->now->window);
        else
            snprintf(now, sizeof(now), "override");
        snprintf(buf, len, "%s changed from %s to %s%s: %s", now, region_state_name(st->was->state),
                 region_state_name(st->now->state), by, why_text(st->now->reason));
        break;
    case SCHED_NOTE_OVERTAKEN:
        snprintf(buf, len, "%s takes precedence over %s%s: %s", now, was, by,
                 why_text(st->now->reason));
        break;
    }
}

/* The override events of every region that a's evaluation changed: for
 * each region, an end before a start. */
static void region_events(const struct side *b, const struct side *a, enum cause why)
{
    for (size_t i = 0; i < a->c->npools; i++) {
        const struct pool *p = &a->c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            struct sched_step st;
            enum sched_note notes[2];
            size_t n = region_step(b, a, i, k, &st, notes);
            for (size_t j = 0; j < n; j++) {
                char text[EVENT_REASON_MAX];
                note_text(notes[j], &st, why, text, sizeof(text));
                event_emit(EVENT_OVERRIDE, p->name, p->regions[k].name,
                           region_state_name(st.was->state), region_state_name(st.now->state),
                           text);
            }
        }
    }
}

/* The log lines of regions whose own override ended (ends) or is in force
 * again (!ends) on the clock path; a reload's are its events. */
static void region_lines(const struct side *b, const struct side *a, enum cause why, bool ends)
{
    if (why == BY_RELOAD) return;
    for (size_t i = 0; i < a->c->npools; i++) {
        const struct pool *p = &a->c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            struct sched_step st;
            enum sched_note notes[2];
            size_t n = region_step(b, a, i, k, &st, notes);
            for (size_t j = 0; j < n; j++) {
                const char *name = p->regions[k].name;
                if (ends && notes[j] == SCHED_NOTE_ENDED && st.was->source == SCHED_SOURCE_CONFIG) {
                    char until[SCHED_TIME_LEN], state[160];
                    sched_format_time(st.was->until_ms, until, sizeof(until));
                    source_text(st.now, state, sizeof(state));
                    log_info("pool %s region %s: override %s ended at %s (%s); now %s", p->name,
                             name, region_state_name(st.was->state), until,
                             why_text(st.was->reason), state);
                } else if (!ends && notes[j] == SCHED_NOTE_STARTED &&
                           st.now->source == SCHED_SOURCE_CONFIG) {
                    log_info("pool %s region %s: override %s in force again (the wall clock "
                             "moved back)",
                             p->name, name, region_state_name(st.now->state));
                }
            }
        }
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

/* Each window of b that was active and no longer is in a (or is gone from
 * a's config). */
static void windows_ended(const struct side *b, const struct side *a, enum cause why)
{
    if (!b->phases_known) return;
    const struct sched_model *bm = b->c->sched, *am = a->c->sched;
    for (size_t k = 0; k < bm->nwindows; k++) {
        const struct sched_window *w = &bm->windows[k];
        if (b->r->phases[k] != SCHED_ACTIVE) continue;
        size_t ka = find_window(am, k, w->name);
        enum sched_phase now = ka == SIZE_MAX ? SCHED_OVER : a->r->phases[ka];
        if (now == SCHED_ACTIVE) continue;
        char regions[512];
        targets_text(b->c, w, regions, sizeof(regions));
        const char *verb = why == BY_RELOAD       ? "ended (config reloaded)"
                           : now == SCHED_PENDING ? "is pending again (the wall clock moved back)"
                                                  : "ended";
        log_info("maintenance %s %s: %s back to their own state (%s)", w->name, verb, regions,
                 why_text(w->reason));
    }
}

/* Each window of a that is active and was not in b: started, or found in
 * force (at startup, or new in a reload). */
static void windows_started(const struct side *b, const struct side *a, enum cause why)
{
    const struct sched_model *bm = b->c->sched, *am = a->c->sched;
    for (size_t k = 0; k < am->nwindows; k++) {
        const struct sched_window *w = &am->windows[k];
        if (a->r->phases[k] != SCHED_ACTIVE) continue;
        size_t kb = b->phases_known ? find_window(bm, k, w->name) : SIZE_MAX;
        if (kb != SIZE_MAX && b->r->phases[kb] == SCHED_ACTIVE) continue;
        const char *verb = kb == SIZE_MAX     ? "in force"
                           : why == BY_RELOAD ? "started (config reloaded)"
                           : b->r->phases[kb] == SCHED_OVER
                               ? "in force again (the wall clock moved back)"
                               : "started";
        char regions[512], until[SCHED_TIME_LEN];
        targets_text(a->c, w, regions, sizeof(regions));
        sched_format_time(w->until_ms, until, sizeof(until));
        log_info("maintenance %s %s: %s %s until %s (%s)", w->name, verb,
                 region_state_name(w->state), regions, until, why_text(w->reason));
    }
}

/* Each window of a whose phase moved between pending and over (the clock
 * jumped over it, or a reload moved it) */
static void windows_moved(const struct side *b, const struct side *a, enum cause why)
{
    if (!b->phases_known) return;
    const struct sched_model *bm = b->c->sched, *am = a->c->sched;
    for (size_t k = 0; k < am->nwindows; k++) {
        const struct sched_window *w = &am->windows[k];
        size_t kb = find_window(bm, k, w->name);
        if (kb == SIZE_MAX) continue;
        enum sched_phase was = b->r->phases[kb], now = a->r->phases[k];
        if (was == now || was == SCHED_ACTIVE || now == SCHED_ACTIVE) continue;
        char regions[512];
        targets_text(a->c, w, regions, sizeof(regions));
        log_info("maintenance %s is %s now (%s): %s (%s)", w->name, sched_phase_name(now),
                 why == BY_RELOAD ? "config reloaded" : "the wall clock moved", regions,
                 why_text(w->reason));
    }
}

/* Logs and sends what changed from b to a: the ends first, then the
 * starts, so a handover is told in the order it happens. */
static void announce(const struct side *b, const struct side *a, bool reload)
{
    enum cause why = reload ? BY_RELOAD : a->ms < b->ms ? BY_CLOCK_BACK : BY_CLOCK;
    windows_ended(b, a, why);
    region_lines(b, a, why, true);
    windows_started(b, a, why);
    region_lines(b, a, why, false);
    windows_moved(b, a, why);
    region_events(b, a, why);
}

/* For every region whose operator state m->prev does not have: counts a
 * change of whether it may receive traffic and republishes its pool's
 * choice. Then the evaluation in force is m->prev. */
static void account(struct maint *m)
{
    struct config *c = m->cfg;
    bool any = false;
    time_t now_s = time(NULL);
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        bool dirty = false;
        for (size_t k = 0; k < p->nregions; k++) {
            struct region *r = &p->regions[k];
            enum region_state was = m->prev.pools[i][k].state,
                              now = c->sched_now->pools[i][k].state;
            if (was == now) continue;
            dirty = true;
            if (up_with(r, was) != up_with(r, now) && r->health) {
                r->health->changes++;
                r->health->last_change = now_s;
            }
        }
        if (dirty) {
            health_republish(m->health, p);
            any = true;
        }
        memcpy(m->prev.pools[i], c->sched_now->pools[i], p->nregions * sizeof(*m->prev.pools[i]));
    }
    memcpy(m->prev.phases, c->sched_now->phases, c->sched->nwindows * sizeof(*m->prev.phases));
    m->prev_ms = c->sched_now_ms;
    m->phases_known = true;
    if (any) health_notify_status(m->health);
}

/* Evaluates the schedule at now_ms: logs and sends what changed since the
 * last evaluation, counts it and republishes the pools it changed. */
static void evaluate(struct maint *m, int64_t now_ms)
{
    struct config *c = m->cfg;
    config_sched_apply(c, now_ms);
    struct side b = {c, &m->prev, m->prev_ms, m->phases_known};
    struct side a = {c, c->sched_now, now_ms, true};
    announce(&b, &a, false);
    account(m);
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

/* Takes cfg, with the evaluation it was loaded with as the one in force
 * (its regions' choices were published with it), and evaluates it now. A
 * reload (old given) tells what changed from old's evaluation in force to
 * cfg's now; a start tells only what changed since the load, and which
 * windows are in force. */
static bool follow(struct maint *m, struct config *cfg, const struct config *old)
{
    struct sched_result loaded;
    if (!result_copy(&loaded, cfg)) return false;
    int64_t loaded_ms = cfg->sched_now_ms;
    maint_warn_expired(cfg, loaded_ms);
    int64_t now = clock_wall_ms();
    config_sched_apply(cfg, now);
    struct side a = {cfg, cfg->sched_now, now, true};
    if (old) {
        struct side b = {old, old->sched_now, old->sched_now_ms, true};
        announce(&b, &a, true);
    } else {
        struct side b = {cfg, &loaded, loaded_ms, false};
        announce(&b, &a, false);
    }
    result_free(&m->prev, m->prev_npools);
    m->prev = loaded;
    m->prev_npools = cfg->npools;
    m->cfg = config_ref(cfg);
    m->timed = has_timed(cfg);
    account(m);
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
    if (!m->timer || !follow(m, cfg, NULL)) {
        if (m->timer) event_free(m->timer);
        free(m);
        return NULL;
    }
    return m;
}

void maint_reload(struct maint *m, struct config *cfg)
{
    struct config *old = m->cfg;
    if (!follow(m, cfg, old)) {
        /* out of memory: no timer; the schedule stays as evaluated at load */
        log_error("maintenance: out of memory; boundaries will not be followed until a reload");
        evtimer_del(m->timer);
        m->cfg = config_ref(cfg);
        m->timed = false;
    }
    config_unref(old);
}

void maint_stop(struct maint *m)
{
    if (!m) return;
    if (m->timer) event_free(m->timer);
    config_unref(m->cfg);
    result_free(&m->prev, m->prev_npools);
    free(m);
}
