#include "autoconf.h"

#include "control/plan.h"

#include <stdlib.h>

#include "control/schedule.h"
#include "fleet/fleet_config.h"
#include "serve/select.h"

static void region_line(FILE *out, const struct region *r, const struct sched_region *s)
{
    fprintf(out, "  region %s: %s", r->name, region_state_name(s->state));
    if (s->source == SCHED_SOURCE_WINDOW)
        fprintf(out, " by maintenance:%s", s->window);
    else if (s->source == SCHED_SOURCE_FLEET)
        fprintf(out, " by fleet:%s", s->key);
    else if (s->source == SCHED_SOURCE_CONFIG)
        fprintf(out, " by config");
    if (s->has_until) {
        char t[SCHED_TIME_LEN];
        sched_format_time(s->until_ms, t, sizeof(t));
        fprintf(out, " until %s", t);
    }
    if (s->reason) fprintf(out, " (%s)", s->reason);
    if (r->weight == 0) fprintf(out, " [weight 0]");
    fputc('\n', out);
}

/* The choice select.c would publish if every region's check passed. */
static bool traffic_line(FILE *out, const struct pool *p)
{
    uint64_t all = p->nregions >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << p->nregions) - 1;
    struct choice *ch = select_compute(p, all, NULL, -1);
    if (!ch) return false;
    fprintf(out, "  traffic:");
    if (ch->action == CHOICE_FALLBACK) {
        fprintf(out, " none (no region may receive traffic: fallback to %s)\n",
                p->all_down_url ? p->all_down_url : "?");
    } else if (ch->action == CHOICE_REJECT) {
        fprintf(out, " none (no region may receive traffic: reject)\n");
    } else {
        uint64_t seen = 0;
        for (uint32_t i = 0; i < ch->n; i++) seen |= UINT64_C(1) << ch->seq[i];
        bool first = true;
        for (size_t k = 0; k < p->nregions; k++) {
            if (!(seen >> k & 1)) continue;
            fprintf(out, "%s %s", first ? "" : ",", p->regions[k].name);
            first = false;
        }
        fputc('\n', out);
    }
    free(ch);
    return true;
}

bool plan_print(FILE *out, struct config *c, int64_t at_ms)
{
    char t[SCHED_TIME_LEN];
    config_sched_apply(c, at_ms);
    sched_format_time(at_ms, t, sizeof(t));
    fprintf(out, "at %s, if every health check passes:\n", t);
    if (c->fleet)
        fprintf(out,
                "note: -t does not read etcd: the fleet's drains and maintenance windows "
                "(under %s) are not shown; a fleet drain overrides any window, a region's own "
                "state: overrides both\n",
                fleet_cfg_prefix(c->fleet));
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        fprintf(out, "pool %s\n", p->name);
        for (size_t k = 0; k < p->nregions; k++)
            region_line(out, &p->regions[k], &c->sched_now->pools[i][k]);
        if (!traffic_line(out, p)) return false;
    }
    for (size_t k = 0; k < c->sched->nwindows; k++) {
        const struct sched_window *w = &c->sched->windows[k];
        fprintf(out, "maintenance %s: %s\n", w->name, sched_phase_name(c->sched_now->phases[k]));
    }
    return true;
}
