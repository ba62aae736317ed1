/* Choosing the region: priority tiers, then the pool's balance
 * (smooth weighted round-robin, lowest latency, or weighted rendezvous
 * hashing), and the all_down action. Pure except for the atomic counter
 * that spreads requests.
 *
 * Whenever what the choice depends on changes (the set of up regions, the
 * latency leader), a new `choice` is computed off the request path and
 * published with one atomic store; the request path only loads the
 * pointer and, for weighted pools, bumps a counter. */
#ifndef DETOURD_SELECT_H
#define DETOURD_SELECT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

enum choice_action { CHOICE_REGION, CHOICE_HASH, CHOICE_FALLBACK, CHOICE_REJECT };

/* The latency leader changes only for a region at least this much faster. */
#define SELECT_LATENCY_SWITCH 0.8

struct choice {
    enum choice_action action;
    uint64_t up;           /* the up-set this choice was made for */
    int leader;            /* balance: latency — the chosen region, else -1 */
    uint32_t n;            /* sequence length, or regions in the tier (hash) */
    _Atomic uint64_t next; /* shared by all workers: exact proportions */
    uint16_t seq[];        /* WRR: region per step; hash: the tier's regions */
};

struct select_state {
    _Atomic(struct choice *) cur;
    uint64_t seed[CONFIG_MAX_REGIONS]; /* per region name: stable hashing */
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
/* The lowest-latency region of tier (latency_ms < 0: unknown); prev keeps
 * its place unless another is at least 20% faster. -1 if none is known. */
int select_latency_leader(const struct pool *p, uint64_t tier, const double *latency_ms, int prev);
/* Computes the choice for an up-set, all_down included. latency_ms may be
 * NULL (no measurements). NULL on OOM. */
struct choice *select_compute(const struct pool *p, uint64_t up, const double *latency_ms,
                              int prev_leader);

/* True if two choices send traffic the same way (then the published one
 * stays, and so does its position in the weighted cycle). */
bool select_same(const struct choice *a, const struct choice *b);
/* True if two pools have the same regions (names and weights, in order):
 * then equal choices of theirs send traffic to the same places. */
bool select_same_regions(const struct pool *a, const struct pool *b);

/* 64-bit hash of a hashing key (client address or header value). */
uint64_t select_key_hash(const void *key, size_t len);
/* Weighted rendezvous hashing over the choice's tier. */
int select_rendezvous(const struct pool *p, const struct choice *ch, uint64_t key_hash);

/* The region index for the next request, or -1 for fallback/reject
 * (then *action says which). key_hash matters for CHOICE_HASH only. */
static inline int select_next(const struct pool *p, struct choice *ch, uint64_t key_hash,
                              enum choice_action *action)
{
    *action = ch->action;
    switch (ch->action) {
    case CHOICE_REGION:
        if (ch->n == 1) return ch->seq[0];
        return ch->seq[atomic_fetch_add_explicit(&ch->next, 1, memory_order_relaxed) % ch->n];
    case CHOICE_HASH: return select_rendezvous(p, ch, key_hash);
    default: return -1;
    }
}

/* Per-pool selection state for a new config: the initial choice uses the
 * operator states only (auto counts as up until health checks report). */
bool select_init(struct config *c);
void select_release(struct config *c);
/* The one way a pool's choice is published: at load, on every health
 * change and on a reload. Computes the choice for the up-set `up`
 * (latency_ms may be NULL). `prev` is the pool whose choice the traffic
 * follows now: p itself (or NULL), or on a reload the same-named pool of the
 * running config. When the new choice sends traffic the same way as prev's
 * (same regions and weights, same sequence), it continues prev's position
 * in the weighted cycle instead of starting over; when it equals p's
 * current choice outright, nothing is published. Returns the replaced
 * choice for the caller to free once no worker can still be reading it;
 * NULL when nothing changed (or on OOM: then the current choice stays). */
struct choice *select_publish(struct pool *p, const struct pool *prev, uint64_t up,
                              const double *latency_ms);

#endif
