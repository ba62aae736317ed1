#include "autoconf.h"

#include "serve/select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

static bool usable(const struct region *r)
{
    return r->weight > 0 && r->op != REGION_DOWN && r->op != REGION_DRAIN;
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
        if (p->regions[i].op == REGION_AUTO || p->regions[i].op == REGION_UP) m |= UINT64_C(1) << i;
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

int select_latency_leader(const struct pool *p, uint64_t tier, const double *lat, int prev)
{
    int best = -1;
    for (size_t i = 0; i < p->nregions; i++) {
        if (!(tier >> i & 1) || lat[i] < 0) continue;
        if (best < 0 || lat[i] < lat[best]) best = (int)i;
    }
    if (best < 0) return -1;
    if (prev >= 0 && (size_t)prev < p->nregions && (tier >> prev & 1) && lat[prev] >= 0 &&
        !(lat[best] <= SELECT_LATENCY_SWITCH * lat[prev]))
        return prev;
    return best;
}

struct choice *select_compute(const struct pool *p, uint64_t up, const double *latency_ms,
                              int prev_leader)
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
    struct choice *ch = calloc(1, sizeof(*ch) + (total + CONFIG_MAX_REGIONS) * sizeof(ch->seq[0]));
    if (!ch) return NULL;
    ch->action = action;
    ch->up = up;
    ch->leader = -1;
    atomic_init(&ch->next, 0);
    if (action != CHOICE_REGION) return ch;
    if (p->balance == BALANCE_LATENCY && latency_ms) {
        ch->leader = select_latency_leader(p, tier, latency_ms, prev_leader);
        if (ch->leader >= 0) {
            ch->n = 1;
            ch->seq[0] = (uint16_t)ch->leader;
            return ch;
        }
        /* nothing measured yet: weighted until the first results arrive */
    }
    if (p->balance == BALANCE_HASH) {
        ch->action = CHOICE_HASH;
        for (size_t i = 0; i < p->nregions; i++)
            if (tier >> i & 1) ch->seq[ch->n++] = (uint16_t)i;
        return ch;
    }
    ch->n = (uint32_t)select_wrr(weights, p->nregions, tier, ch->seq);
    if (ch->n == 0) ch->action = CHOICE_REJECT;
    return ch;
}

bool select_same(const struct choice *a, const struct choice *b)
{
    return a->action == b->action && a->n == b->n && a->leader == b->leader &&
           memcmp(a->seq, b->seq, a->n * sizeof(a->seq[0])) == 0;
}

static inline uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

uint64_t select_key_hash(const void *key, size_t len)
{
    return mix64(fnv1a64(key, len));
}

int select_rendezvous(const struct pool *p, const struct choice *ch, uint64_t key_hash)
{
    int best = -1;
    double best_score = 0;
    for (uint32_t j = 0; j < ch->n; j++) {
        int i = ch->seq[j];
        uint64_t h = mix64(key_hash ^ p->sel->seed[i]);
        /* u in (0,1): 53 random bits, never 0 or 1 */
        double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        double score = (double)p->regions[i].weight / -log(u);
        if (best < 0 || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

bool select_init(struct config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        p->sel = calloc(1, sizeof(*p->sel));
        if (!p->sel) return false;
        for (size_t k = 0; k < p->nregions; k++)
            p->sel->seed[k] = select_key_hash(p->regions[k].name, strlen(p->regions[k].name));
        struct choice *ch = select_compute(p, select_fail_open_set(p), NULL, -1);
        if (!ch) return false;
        atomic_init(&p->sel->cur, ch);
    }
    return true;
}

bool select_same_regions(const struct pool *a, const struct pool *b)
{
    if (a->nregions != b->nregions) return false;
    for (size_t i = 0; i < a->nregions; i++)
        if (a->regions[i].weight != b->regions[i].weight ||
            strcmp(a->regions[i].name, b->regions[i].name) != 0)
            return false;
    return true;
}

struct choice *select_publish(struct pool *p, const struct pool *prev, uint64_t up,
                              const double *latency_ms)
{
    if (!prev) prev = p;
    struct choice *cur = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    const struct choice *base =
        prev == p ? cur : atomic_load_explicit(&prev->sel->cur, memory_order_acquire);
    if (base && prev != p && !select_same_regions(p, prev)) base = NULL;
    struct choice *ch = select_compute(p, up, latency_ms, base ? base->leader : -1);
    if (!ch) return NULL;
    if (base && select_same(base, ch)) {
        if (base == cur && cur->up == up) {
            free(ch); /* nothing changes, not even what /status shows */
            return NULL;
        }
        /* the same traffic: go on where the running cycle is */
        atomic_store_explicit(&ch->next, atomic_load_explicit(&base->next, memory_order_relaxed),
                              memory_order_relaxed);
    }
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
