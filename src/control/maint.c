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
#include "control/maint_text.h"
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
    for (size_t i = 0; i < c->sched->npools; i++)
        for (size_t k = 0; c->sched->pools[i].fleet && k < c->sched->pools[i].nregions; k++) {
            const struct sched_fleet_drain *f = &c->sched->pools[i].fleet[k];
            if (f->set && (f->has_from || f->has_until)) return true;
        }
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
    case REGION_AUTO: return r->health ? health_up(r->health) : true;
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
    const struct sched_model *m; /* the model r evaluates: c's, or the one c followed before */
    const struct sched_result *r;
    int64_t ms;        /* the instant r was evaluated for */
    bool phases_known; /* false before the first evaluation: nothing started or ended */
};

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
    st->was_applies = sched_source_applies(a->m, i, k, st->was, a->ms);
    st->now_applied = sched_source_applies(b->m, bi, bk, st->now, b->ms);
    return sched_step_notes(st, notes);
}

/* The override events of every region that a's evaluation changed: for
 * each region, an end before a start. */
static void region_events(const struct side *b, const struct side *a, enum maint_cause why)
{
    for (size_t i = 0; i < a->c->npools; i++) {
        const struct pool *p = &a->c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            struct sched_step st;
            enum sched_note notes[2];
            size_t n = region_step(b, a, i, k, &st, notes);
            for (size_t j = 0; j < n; j++) {
                char text[MAINT_TEXT_LEN]; /* event_make() cuts it to EVENT_REASON_MAX */
                maint_text_event(notes[j], &st, why, text, sizeof(text));
                event_emit(EVENT_OVERRIDE, p->name, p->regions[k].name,
                           region_state_name(st.was->state), region_state_name(st.now->state),
                           text);
            }
        }
    }
}

/* The log lines of regions whose own override ended (ends) or is in force
 * again (!ends); a reload's are its events. */
static void region_lines(const struct side *b, const struct side *a, enum maint_cause why,
                         bool ends)
{
    for (size_t i = 0; i < a->c->npools; i++) {
        const struct pool *p = &a->c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            struct sched_step st;
            enum sched_note notes[2];
            size_t n = region_step(b, a, i, k, &st, notes);
            for (size_t j = 0; j < n; j++) {
                char line[MAINT_TEXT_LEN];
                if ((notes[j] == SCHED_NOTE_ENDED) == ends &&
                    maint_text_override(notes[j], &st, why, line, sizeof(line)))
                    log_info("pool %s region %s: %s", p->name, p->regions[k].name, line);
            }
        }
    }
}

/* Logs window w of own's config: its targets with each region's
 * evaluation on both sides (own is the side after when own_is_now). */
static void log_window(const struct sched_window *w, enum maint_window_change ch,
                       enum sched_phase phase, enum maint_cause why, const struct side *own,
                       const struct side *other, bool own_is_now)
{
    struct maint_target *t = calloc(w->ntargets ? w->ntargets : 1, sizeof(*t));
    for (size_t j = 0; t && j < w->ntargets; j++) {
        size_t p = w->targets[j].pool, r = w->targets[j].region, op, or ;
        const struct sched_region *mine = &own->r->pools[p][r], *theirs = NULL;
        if (counterpart(other, own, p, r, &op, & or)) theirs = &other->r->pools[op][or];
        t[j] = (struct maint_target){own->c->pools[p].name, own->c->pools[p].regions[r].name,
                                     own_is_now ? theirs : mine, own_is_now ? mine : theirs};
    }
    char line[MAINT_TEXT_LEN];
    maint_text_window(w, ch, phase, why, t, t ? w->ntargets : 0, line, sizeof(line));
    log_info("%s", line);
    free(t);
}

/* Each window of b that was active and no longer is in a (or is gone from
 * a's config). */
static void windows_ended(const struct side *b, const struct side *a, enum maint_cause why)
{
    if (!b->phases_known) return;
    const struct sched_model *bm = b->m, *am = a->m;
    for (size_t k = 0; k < bm->nwindows; k++) {
        const struct sched_window *w = &bm->windows[k];
        if (b->r->phases[k] != SCHED_ACTIVE) continue;
        size_t ka = find_window(am, k, w->name);
        enum sched_phase now = ka == SIZE_MAX ? SCHED_OVER : a->r->phases[ka];
        if (now != SCHED_ACTIVE) log_window(w, MAINT_WINDOW_ENDED, now, why, b, a, false);
    }
}

/* Each window of a that is active and was not in b: started, or found in
 * force (at start, or new in a reload). */
static void windows_started(const struct side *b, const struct side *a, enum maint_cause why)
{
    const struct sched_model *bm = b->m, *am = a->m;
    for (size_t k = 0; k < am->nwindows; k++) {
        const struct sched_window *w = &am->windows[k];
        if (a->r->phases[k] != SCHED_ACTIVE) continue;
        size_t kb = b->phases_known ? find_window(bm, k, w->name) : SIZE_MAX;
        if (kb != SIZE_MAX && b->r->phases[kb] == SCHED_ACTIVE) continue;
        log_window(w, kb == SIZE_MAX ? MAINT_WINDOW_IN_FORCE : MAINT_WINDOW_STARTED, SCHED_ACTIVE,
                   why, a, b, true);
    }
}

/* Each window of a whose phase moved between pending and over (the clock
 * jumped over it, or a reload moved it). */
static void windows_moved(const struct side *b, const struct side *a, enum maint_cause why)
{
    if (!b->phases_known) return;
    const struct sched_model *bm = b->m, *am = a->m;
    for (size_t k = 0; k < am->nwindows; k++) {
        const struct sched_window *w = &am->windows[k];
        size_t kb = find_window(bm, k, w->name);
        if (kb == SIZE_MAX) continue;
        enum sched_phase was = b->r->phases[kb], now = a->r->phases[k];
        if (was != now && was != SCHED_ACTIVE && now != SCHED_ACTIVE)
            log_window(w, MAINT_WINDOW_MOVED, now, why, a, b, true);
    }
}

/* Logs and sends what changed from b to a: the ends first, then the
 * starts, so a handover is told in the order it happens. */
static void announce(const struct side *b, const struct side *a, bool reload)
{
    enum maint_cause why = reload          ? MAINT_BY_RELOAD
                           : a->ms < b->ms ? MAINT_BY_CLOCK_BACK
                                           : MAINT_BY_CLOCK;
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

/* A reload (b the old config's evaluation in force, a the new one's at
 * load): each region whose operator state the new config changed in a way
 * that changes whether it may receive traffic counts a change, as a start
 * or end on the clock does; account() then counts what changed since the
 * load. The new region's health judges both states: it carries the old
 * one's verdict. */
static void count_reload(const struct side *b, const struct side *a)
{
    time_t now_s = time(NULL);
    for (size_t i = 0; i < a->c->npools; i++) {
        const struct pool *p = &a->c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) {
            const struct region *r = &p->regions[k];
            size_t bi, bk;
            if (!r->health || !counterpart(b, a, i, k, &bi, &bk)) continue;
            if (up_with(r, b->r->pools[bi][bk].state) == up_with(r, a->r->pools[i][k].state))
                continue;
            r->health->changes++;
            r->health->last_change = now_s;
        }
    }
}

/* Evaluates the schedule at now_ms: logs and sends what changed since the
 * last evaluation, counts it and republishes the pools it changed. */
static void evaluate(struct maint *m, int64_t now_ms)
{
    struct config *c = m->cfg;
    config_sched_apply(c, now_ms);
    struct side b = {c, c->sched, &m->prev, m->prev_ms, m->phases_known};
    struct side a = {c, c->sched, c->sched_now, now_ms, true};
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
    struct side a = {cfg, cfg->sched, cfg->sched_now, now, true};
    if (old) {
        struct side b = {old, old->sched, old->sched_now, old->sched_now_ms, true};
        struct side at_load = {cfg, cfg->sched, &loaded, loaded_ms, true};
        announce(&b, &a, true);
        count_reload(&b, &at_load);
    } else {
        struct side b = {cfg, cfg->sched, &loaded, loaded_ms, false};
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

/* ---- the fleet's layer, composed over a config's own schedule ---- */

void maint_model_free(struct sched_model *m)
{
    if (!m || !m->composed) return;
    for (size_t i = 0; m->pools && i < m->npools; i++) {
        struct sched_fleet_drain *f = (struct sched_fleet_drain *)m->pools[i].fleet;
        for (size_t k = 0; f && k < m->pools[i].nregions; k++) {
            free((char *)f[k].key);
            free((char *)f[k].reason);
        }
        free(f);
    }
    free((struct sched_pool *)m->pools);
    for (size_t k = m->nconfig_windows; m->windows && k < m->nwindows; k++) {
        free((char *)m->windows[k].name);
        free((char *)m->windows[k].reason);
        free((struct sched_target *)m->windows[k].targets);
    }
    free((struct sched_window *)m->windows);
    free(m);
}

static bool dup_opt(const char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

static bool resolve(const struct config *c, const char *pool, const char *region, size_t *pi,
                    size_t *ri)
{
    *pi = find_pool(c, 0, pool);
    if (*pi == SIZE_MAX) return false;
    *ri = find_region(&c->pools[*pi], 0, region);
    return *ri != SIZE_MAX;
}

/* c's own model with layer over it; NULL on OOM. Names that match nothing
 * of c are left out. */
static struct sched_model *compose(const struct config *c, const struct maint_layer *L)
{
    const struct sched_model *own = c->sched_own;
    struct sched_model *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->composed = true;
    struct sched_pool *pools = calloc(own->npools ? own->npools : 1, sizeof(*pools));
    size_t nw = own->nwindows + L->nwindows;
    struct sched_window *w = calloc(nw ? nw : 1, sizeof(*w));
    m->pools = pools;
    m->windows = w;
    m->nconfig_windows = own->nwindows;
    if (!pools || !w) goto oom;
    m->npools = own->npools;
    for (size_t i = 0; i < own->npools; i++) pools[i] = own->pools[i];
    for (size_t i = 0; i < own->npools; i++) pools[i].fleet = NULL;
    for (size_t d = 0; d < L->ndrains; d++) {
        const struct maint_fleet_drain *fd = &L->drains[d];
        size_t pi, ri;
        if (!resolve(c, fd->pool, fd->region, &pi, &ri)) continue;
        struct sched_fleet_drain *f = (struct sched_fleet_drain *)pools[pi].fleet;
        if (!f) {
            f = calloc(pools[pi].nregions ? pools[pi].nregions : 1, sizeof(*f));
            if (!f) goto oom;
            pools[pi].fleet = f;
        }
        f += ri;
        free((char *)f->key);
        free((char *)f->reason);
        *f = (struct sched_fleet_drain){.set = true,
                                        .state = fd->state,
                                        .has_from = fd->has_from,
                                        .has_until = fd->has_until,
                                        .from_ms = fd->from_ms,
                                        .until_ms = fd->until_ms};
        if (!dup_opt(&f->key, fd->key) || !dup_opt(&f->reason, fd->reason)) goto oom;
    }
    memcpy(w, own->windows, own->nwindows * sizeof(*w));
    m->nwindows = own->nwindows;
    for (size_t k = 0; k < L->nwindows; k++) {
        const struct maint_fleet_window *fw = &L->windows[k];
        struct sched_window *x = &w[m->nwindows++];
        *x = (struct sched_window){
            .from_ms = fw->from_ms, .until_ms = fw->until_ms, .state = fw->state};
        struct sched_target *t = calloc(fw->nregions ? fw->nregions : 1, sizeof(*t));
        x->targets = t;
        if (!t || !dup_opt(&x->name, fw->name) || !dup_opt(&x->reason, fw->reason)) goto oom;
        for (size_t j = 0; j < fw->nregions; j++) {
            size_t pi, ri;
            if (resolve(c, fw->pools[j], fw->regions[j], &pi, &ri))
                t[x->ntargets++] = (struct sched_target){pi, ri};
        }
    }
    return m;
oom:
    maint_model_free(m);
    return NULL;
}

/* The model c follows with layer: its own when the layer is empty. */
static bool layer_model(const struct config *c, const struct maint_layer *L,
                        struct sched_model **out)
{
    if (!L || (!L->ndrains && !L->nwindows)) {
        *out = c->sched_own;
        return true;
    }
    return (*out = compose(c, L)) != NULL;
}

/* c follows nm from now on (its evaluation's phases sized for it). */
static bool switch_model(struct config *c, struct sched_model *nm)
{
    enum sched_phase *ph = calloc(nm->nwindows ? nm->nwindows : 1, sizeof(*ph));
    if (!ph) return false;
    free(c->sched_now->phases);
    c->sched_now->phases = ph;
    c->sched = nm;
    return true;
}

bool maint_compose(struct config *cfg, const struct maint_layer *layer)
{
    struct sched_model *nm, *old = cfg->sched;
    if (!layer_model(cfg, layer, &nm)) return false;
    if (!switch_model(cfg, nm)) {
        if (nm != cfg->sched_own) maint_model_free(nm);
        return false;
    }
    if (old != cfg->sched_own && old != nm) maint_model_free(old);
    config_sched_apply(cfg, clock_wall_ms());
    return true;
}

bool maint_set_layer(struct maint *m, const struct maint_layer *layer)
{
    struct config *c = m->cfg;
    struct sched_model *nm, *old = c->sched;
    if (!layer_model(c, layer, &nm)) return false;
    enum sched_phase *pp = calloc(nm->nwindows ? nm->nwindows : 1, sizeof(*pp));
    if (!pp || !switch_model(c, nm)) {
        free(pp);
        if (nm != c->sched_own) maint_model_free(nm);
        return false;
    }
    int64_t now = clock_wall_ms();
    config_sched_apply(c, now);
    struct side b = {c, old, &m->prev, m->prev_ms, m->phases_known};
    struct side a = {c, nm, c->sched_now, now, true};
    announce(&b, &a, false);
    free(m->prev.phases); /* the old model's shape: account() copies the new one's */
    m->prev.phases = pp;
    account(m);
    if (old != c->sched_own && old != nm) maint_model_free(old);
    m->timed = has_timed(c);
    evtimer_del(m->timer);
    arm(m, now);
    return true;
}
