/* Choosing the region: priority tiers, smooth weighted round-robin, and the
 * all_down action. Pure except for the atomic counter that spreads requests.
 *
 * Whenever the set of usable regions of a pool changes, a new `choice` is
 * computed (off the request path) and published with one atomic store; the
 * request path only loads the pointer and bumps a counter. */
#ifndef DETOURD_SELECT_H
#define DETOURD_SELECT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum choice_action { CHOICE_REGION, CHOICE_FALLBACK, CHOICE_REJECT };

struct choice {
    enum choice_action action;
    uint64_t up;           /* the up-set this choice was made for */
    uint32_t n;            /* sequence length (sum of weights in the tier) */
    _Atomic uint64_t next; /* shared by all workers: exact proportions */
    uint16_t seq[];        /* region index per step of the WRR cycle */
};

struct select_state {
    _Atomic(struct choice *) cur;
};

/* Regions of p that may receive traffic, given the set that is up:
 * in `up`, weight > 0, not an operator down/drain; restricted to the best
 * (lowest) priority tier among them. */
uint64_t select_tier(const struct pool *p, uint64_t up);
/* The regions with state auto or up (what fail_open treats as passing). */
uint64_t select_fail_open_set(const struct pool *p);
/* Smooth weighted round-robin (the nginx algorithm) over the regions in
 * mask: writes sum(weights) indexes to seq and returns that count. */
size_t select_wrr(const unsigned *weights, size_t n, uint64_t mask, uint16_t *seq);
/* Computes the choice for an up-set, all_down included. NULL on OOM. */
struct choice *select_compute(const struct pool *p, uint64_t up);
/* The region index for the next request, or -1 for fallback/reject
 * (then *action says which). */
static inline int select_next(struct choice *ch, enum choice_action *action)
{
    *action = ch->action;
    if (ch->action != CHOICE_REGION) return -1;
    if (ch->n == 1) return ch->seq[0];
    uint64_t i = atomic_fetch_add_explicit(&ch->next, 1, memory_order_relaxed);
    return ch->seq[i % ch->n];
}

/* Per-pool selection state for a new config: the initial choice uses the
 * operator states only (auto counts as up until health checks report). */
bool select_init(struct config *c);
void select_release(struct config *c);
/* Publishes the choice for a new up-set; the old one is returned for the
 * caller to free once no worker can still be reading it. */
struct choice *select_publish(struct pool *p, uint64_t up);

#endif
