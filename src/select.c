#include "autoconf.h"

#include "select.h"

#include <stdlib.h>
#include <string.h>

static bool usable(const struct region *r)
{
    return r->weight > 0 && r->state != REGION_DOWN && r->state != REGION_DRAIN;
}

uint64_t select_tier(const struct pool *p, uint64_t up)
{
    unsigned best = ~0u;
    uint64_t tier = 0;
    for (size_t i = 0; i < p->nregions; i++) {
        const struct region *r = &p->regions[i];
        if (!(up >> i & 1) || !usable(r)) continue;
        if (r->priority < best) {
            best = r->priority;
            tier = 0;
        }
        if (r->priority == best) tier |= UINT64_C(1) << i;
    }
    return tier;
}

uint64_t select_fail_open_set(const struct pool *p)
{
    uint64_t m = 0;
    for (size_t i = 0; i < p->nregions; i++)
        if (p->regions[i].state == REGION_AUTO || p->regions[i].state == REGION_UP)
            m |= UINT64_C(1) << i;
    return m;
}

size_t select_wrr(const unsigned *weights, size_t n, uint64_t mask, uint16_t *seq)
{
    long cur[CONFIG_MAX_REGIONS] = {0};
    long total = 0;
    for (size_t i = 0; i < n; i++)
        if (mask >> i & 1) total += weights[i];
    for (long step = 0; step < total; step++) {
        size_t best = 0;
        long bestv = 0;
        bool have = false;
        for (size_t i = 0; i < n; i++) {
            if (!(mask >> i & 1) || weights[i] == 0) continue;
            cur[i] += weights[i];
            if (!have || cur[i] > bestv) {
                best = i;
                bestv = cur[i];
                have = true;
            }
        }
        cur[best] -= total;
        seq[step] = (uint16_t)best;
    }
    return (size_t)total;
}

struct choice *select_compute(const struct pool *p, uint64_t up)
{
    uint64_t tier = select_tier(p, up);
    enum choice_action action = CHOICE_REGION;
    if (!tier) {
        switch (p->all_down) {
        case ALL_DOWN_FAIL_OPEN:
            tier = select_tier(p, select_fail_open_set(p));
            if (!tier) action = CHOICE_REJECT; /* every region down/drain by hand */
            break;
        case ALL_DOWN_FALLBACK: action = CHOICE_FALLBACK; break;
        case ALL_DOWN_REJECT: action = CHOICE_REJECT; break;
        }
    }
    unsigned weights[CONFIG_MAX_REGIONS];
    size_t total = 0;
    for (size_t i = 0; i < p->nregions; i++) {
        weights[i] = p->regions[i].weight;
        if (tier >> i & 1) total += weights[i];
    }
    struct choice *ch = calloc(1, sizeof(*ch) + total * sizeof(ch->seq[0]));
    if (!ch) return NULL;
    ch->action = action;
    ch->up = up;
    if (action == CHOICE_REGION) {
        ch->n = (uint32_t)select_wrr(weights, p->nregions, tier, ch->seq);
        if (ch->n == 0) ch->action = CHOICE_REJECT;
    }
    atomic_init(&ch->next, 0);
    return ch;
}

bool select_init(struct config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        p->sel = calloc(1, sizeof(*p->sel));
        if (!p->sel) return false;
        struct choice *ch = select_compute(p, select_fail_open_set(p));
        if (!ch) return false;
        atomic_init(&p->sel->cur, ch);
    }
    return true;
}

struct choice *select_publish(struct pool *p, uint64_t up)
{
    struct choice *ch = select_compute(p, up);
    if (!ch) return NULL;
    return atomic_exchange_explicit(&p->sel->cur, ch, memory_order_acq_rel);
}

void select_release(struct config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        if (!p->sel) continue;
        free(atomic_load(&p->sel->cur));
        free(p->sel);
        p->sel = NULL;
    }
}
