/* Timed overrides and maintenance windows as configured: the
 * `maintenance:` lists of the main file and every included one (each
 * window naming POOL/REGION of any file's pools), and the scheduling model
 * (control/schedule.h) built from them and from each region's own `state`
 * and `until`, evaluated at load so that the first choices follow it. */
#include "autoconf.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "control/config_walk.h"
#include "control/maint.h"
#include "control/schedule.h"
#include "lib/clock.h"

/* "POOL/REGION" of a maintenance window, resolved against the pools. */
static bool find_target(struct cfg_ctx *x, const struct yt_node *n, struct sched_target *t)
{
    if (!cfg_scalar(x, n, "maintenance regions")) return false;
    const char *slash = strchr(n->str, '/');
    char buf[96];
    if (!slash || slash == n->str || !slash[1] || strchr(slash + 1, '/')) {
        CFG_ERR(x, n, "regions: '%s' is not POOL/REGION", cfg_shown(n, buf, sizeof(buf)));
        return false;
    }
    size_t plen = (size_t)(slash - n->str);
    const struct config *c = x->c;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        if (!p->name || strlen(p->name) != plen || memcmp(p->name, n->str, plen) != 0) continue;
        for (size_t k = 0; k < p->nregions; k++)
            if (p->regions[k].name && strcmp(p->regions[k].name, slash + 1) == 0) {
                *t = (struct sched_target){i, k};
                return true;
            }
        CFG_ERR(x, n, "regions: pool %s has no region '%s'", p->name, slash + 1);
        return false;
    }
    CFG_ERR(x, n, "regions: no pool '%.*s'", (int)plen, n->str);
    return false;
}

static void load_window(struct cfg_ctx *x, const struct yt_node *n, struct sched_window *w)
{
    static const char *const keys[] = {"name", "from", "until", "state", "regions", "reason", NULL};
    static const char *const states[] = {"drain", "down", NULL};
    w->state = REGION_DRAIN;
    if (!cfg_want(x, n, YT_MAP, "maintenance window")) return;
    cfg_check_keys(x, n, "a maintenance window", keys);
    const struct yt_node *v, *from = yt_get(n, "from"), *until = yt_get(n, "until");
    char *name = NULL, *reason = NULL;
    if ((v = yt_get(n, "name")))
        cfg_get_name(x, v, "maintenance name", &name);
    else
        CFG_ERR(x, n, "maintenance: 'name' is required");
    w->name = name;
    bool times = true;
    if (!from)
        CFG_ERR(x, n, "maintenance%s%s: 'from' is required", name ? " " : "", name ? name : "");
    if (!until)
        CFG_ERR(x, n, "maintenance%s%s: 'until' is required", name ? " " : "", name ? name : "");
    times = from && until;
    if (from && !cfg_get_time(x, from, "from", &w->from_ms)) times = false;
    if (until && !cfg_get_time(x, until, "until", &w->until_ms)) times = false;
    if (times && w->until_ms <= w->from_ms)
        CFG_ERR(x, until, "until: must be after from (%s)", from->str);
    int e;
    if ((v = yt_get(n, "state")) && cfg_get_enum(x, v, "maintenance state", states, &e))
        w->state = e == 0 ? REGION_DRAIN : REGION_DOWN;
    if ((v = yt_get(n, "reason"))) cfg_get_reason(x, v, &reason);
    w->reason = reason;
    if (!(v = yt_get(n, "regions"))) {
        CFG_ERR(x, n, "maintenance%s%s: 'regions' is required", name ? " " : "", name ? name : "");
        return;
    }
    if (!cfg_want(x, v, YT_SEQ, "maintenance regions")) return;
    if (v->len == 0) {
        CFG_ERR(x, v, "regions: at least one POOL/REGION is required");
        return;
    }
    struct sched_target *t = calloc(v->len, sizeof(*t));
    if (!t) return;
    w->targets = t;
    for (size_t i = 0; i < v->len; i++)
        if (find_target(x, v->u.items[i], &t[w->ntargets])) w->ntargets++;
}

void maint_config_load(struct cfg_ctx *x, const struct yt_node *n)
{
    if (!x->windows) return;
    char at[PATH_MAX + 32];
    for (size_t i = 0; i < n->len; i++) {
        struct sched_window *w = &x->windows[x->nwindows++];
        load_window(x, n->u.items[i], w);
        const struct cfg_seen_slot *first =
            w->name ? cfg_seen_put(&x->window_names, w->name, n->u.items[i]->line, x->cur) : NULL;
        if (first)
            CFG_ERR(x, yt_get(n->u.items[i], "name"),
                    "maintenance name '%s' is used twice (first at %s)", w->name,
                    cfg_line_of(x, first->file, first->line, at, sizeof(at)));
    }
}

void maint_config_free_windows(struct sched_window *w, size_t n)
{
    for (size_t i = 0; w && i < n; i++) {
        free((char *)w[i].name);
        free((char *)w[i].reason);
        free((struct sched_target *)w[i].targets);
    }
    free(w);
}

void maint_config_free(struct config *c)
{
    if (c->sched && c->sched != c->sched_own) maint_model_free(c->sched);
    struct sched_model *m = c->sched_own;
    if (m) {
        for (size_t i = 0; i < m->npools; i++) free((struct sched_override *)m->pools[i].overrides);
        free((struct sched_pool *)m->pools);
        maint_config_free_windows((struct sched_window *)m->windows, m->nwindows);
        free(m);
    }
    struct sched_result *r = c->sched_now;
    if (r) {
        for (size_t i = 0; r->pools && i < c->npools; i++) free(r->pools[i]);
        free(r->pools);
        free(r->phases);
        free(r);
    }
    c->sched = NULL;
    c->sched_own = NULL;
    c->sched_now = NULL;
}

/* The scheduling model of the loaded config (it takes x's windows) and
 * its evaluation at the load instant, so that even the first choices
 * published follow it. */
bool maint_config_build(struct cfg_ctx *x)
{
    struct config *c = x->c;
    struct sched_model *m = calloc(1, sizeof(*m));
    struct sched_result *r = calloc(1, sizeof(*r));
    c->sched = m;
    c->sched_own = m;
    c->sched_now = r;
    if (!m || !r) return false;
    m->windows = x->windows;
    m->nwindows = x->nwindows;
    m->nconfig_windows = x->nwindows;
    x->windows = NULL;
    struct sched_pool *sp = calloc(c->npools ? c->npools : 1, sizeof(*sp));
    m->pools = sp;
    r->pools = calloc(c->npools ? c->npools : 1, sizeof(*r->pools));
    r->phases = calloc(m->nwindows ? m->nwindows : 1, sizeof(*r->phases));
    if (!sp || !r->pools || !r->phases) return false;
    m->npools = c->npools;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        struct sched_override *o = calloc(p->nregions ? p->nregions : 1, sizeof(*o));
        sp[i].overrides = o;
        r->pools[i] = calloc(p->nregions ? p->nregions : 1, sizeof(*r->pools[i]));
        if (!o || !r->pools[i]) return false;
        sp[i].nregions = p->nregions;
        for (size_t k = 0; k < p->nregions; k++)
            o[k] = (struct sched_override){.state = p->regions[k].state,
                                           .has_until = p->regions[k].has_until,
                                           .until_ms = p->regions[k].until_ms,
                                           .reason = p->regions[k].reason};
    }
    config_sched_apply(c, clock_wall_ms());
    return true;
}

void config_sched_apply(struct config *c, int64_t now_ms)
{
    sched_eval(c->sched, now_ms, c->sched_now);
    c->sched_now_ms = now_ms;
    for (size_t i = 0; i < c->npools; i++)
        for (size_t k = 0; k < c->pools[i].nregions; k++)
            c->pools[i].regions[k].op = c->sched_now->pools[i][k].state;
}
