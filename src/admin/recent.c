#include "autoconf.h"

#include "admin/recent.h"

#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

/* One region's counter at each sample of the ring, for the samples first
 * to last (sequence numbers; present in every one of them). */
struct entry {
    char *pool, *region; /* NULL: a free cell */
    uint64_t first, last;
    uint64_t n[RECENT_SLOTS];
};

struct recent {
    uint64_t start_ms;
    uint64_t taken;            /* samples committed; the next one is number `taken` */
    uint64_t at[RECENT_SLOTS]; /* when sample s was taken: at[s % RECENT_SLOTS] */
    struct entry *t;           /* open addressing, linear probing */
    size_t cap, used;          /* cap: a power of 2, or 0 */
};

static uint64_t key_hash(const char *pool, const char *region)
{
    return fnv1a64_str(fnv1a64_mix(fnv1a64_str(FNV64_OFFSET, pool), 0x100), region);
}

/* The cell of pool/region in t, or the free cell where it would go. */
static struct entry *cell(struct entry *t, size_t cap, const char *pool, const char *region)
{
    size_t i = (size_t)key_hash(pool, region) & (cap - 1);
    while (t[i].pool && (strcmp(t[i].pool, pool) != 0 || strcmp(t[i].region, region) != 0))
        i = (i + 1) & (cap - 1);
    return &t[i];
}

static const struct entry *find(const struct recent *r, const char *pool, const char *region)
{
    if (!r->cap) return NULL;
    const struct entry *e = cell(r->t, r->cap, pool, region);
    return e->pool ? e : NULL;
}

/* Moves the entries that keep into a table of cap cells (keep: still
 * reachable by a window); frees the others. False on OOM (nothing moved). */
static bool rebuild(struct recent *r, size_t cap, uint64_t keep_from)
{
    struct entry *t = calloc(cap, sizeof(*t));
    if (!t) return false;
    size_t used = 0;
    for (size_t i = 0; i < r->cap; i++) {
        struct entry *e = &r->t[i];
        if (!e->pool) continue;
        if (e->last < keep_from) {
            free(e->pool);
            free(e->region);
            continue;
        }
        *cell(t, cap, e->pool, e->region) = *e;
        used++;
    }
    free(r->t);
    r->t = t;
    r->cap = cap;
    r->used = used;
    return true;
}

struct recent *recent_new(uint64_t start_ms)
{
    struct recent *r = calloc(1, sizeof(*r));
    if (r) r->start_ms = start_ms;
    return r;
}

void recent_free(struct recent *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->cap; i++) {
        free(r->t[i].pool);
        free(r->t[i].region);
    }
    free(r->t);
    free(r);
}

bool recent_put(struct recent *r, const char *pool, const char *region, uint64_t count)
{
    struct entry *e = r->cap ? cell(r->t, r->cap, pool, region) : NULL;
    if (!e || !e->pool) {
        if ((r->used + 1) * 2 > r->cap) {
            if (!rebuild(r, r->cap ? r->cap * 2 : 64, 0)) return false;
            e = cell(r->t, r->cap, pool, region);
        }
        char *p = strdup(pool), *g = strdup(region);
        if (!p || !g) {
            free(p);
            free(g);
            return false;
        }
        e->pool = p;
        e->region = g;
        e->first = r->taken;
        r->used++;
    } else if (e->last + 1 < r->taken) {
        e->first = r->taken; /* missing from a sample since (a reload): new again */
    }
    e->last = r->taken;
    e->n[r->taken % RECENT_SLOTS] = count;
    return true;
}

void recent_commit(struct recent *r, uint64_t now_ms)
{
    r->at[r->taken % RECENT_SLOTS] = now_ms;
    r->taken++;
    /* forget the regions no window can reach (a reload removed them) */
    uint64_t keep_from = r->taken > RECENT_SLOTS ? r->taken - RECENT_SLOTS : 0;
    for (size_t i = 0; i < r->cap; i++)
        if (r->t[i].pool && r->t[i].last < keep_from) {
            rebuild(r, r->cap, keep_from); /* on OOM they wait for the next sample */
            break;
        }
}

struct recent_window recent_window(const struct recent *r, uint64_t now_ms)
{
    struct recent_window w = {r->start_ms, -1};
    uint64_t oldest = r->taken > RECENT_SLOTS ? r->taken - RECENT_SLOTS : 0;
    for (uint64_t s = r->taken; s-- > oldest;) {
        uint64_t at = r->at[s % RECENT_SLOTS];
        if (at <= now_ms && now_ms - at >= (uint64_t)RECENT_WINDOW_S * 1000) {
            w.since_ms = at;
            w.slot = (long)s;
            return w;
        }
    }
    /* none old enough: since the start, while the ring holds every sample
     * since; else (samples late: a stalled loop) the oldest it holds */
    if (oldest > 0) {
        w.since_ms = r->at[oldest % RECENT_SLOTS];
        w.slot = (long)oldest;
    }
    return w;
}

uint64_t recent_base(const struct recent *r, const struct recent_window *w, const char *pool,
                     const char *region)
{
    if (w->slot < 0) return 0;
    uint64_t s = (uint64_t)w->slot;
    const struct entry *e = find(r, pool, region);
    if (!e || s < e->first || s > e->last) return 0; /* new since that sample */
    return e->n[s % RECENT_SLOTS];
}
