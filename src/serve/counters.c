#include "autoconf.h"

#include "serve/counters.h"
#include "lib/hash.h"
#include "serve/redirect.h"

#include <stdlib.h>
#include <string.h>

#define ERROR_STATUS(code, reason) code,
const unsigned counters_error_status[] = {HTTP_ERRORS(ERROR_STATUS) 200};
_Static_assert(sizeof(counters_error_status) / sizeof(counters_error_status[0]) ==
                   COUNTERS_ERROR_STATUSES,
               "COUNTERS_ERROR_STATUSES counts HTTP_ERRORS and 200");

void counters_layout(struct config *c)
{
    unsigned n = 0;
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        for (size_t k = 0; k < p->nregions; k++) p->regions[k].tmpl.slot = n++;
        p->fallback.slot = n++;
        p->reject.slot = n++;
    }
    c->nslots = n + COUNTERS_ERROR_STATUSES;
}

unsigned counters_error_slot(const struct config *c, unsigned status)
{
    unsigned i = 0;
    while (i + 1 < COUNTERS_ERROR_STATUSES && counters_error_status[i] != status) i++;
    return (unsigned)(c->nslots - COUNTERS_ERROR_STATUSES + i);
}

bool counters_alloc(struct config *c, unsigned nrows)
{
    if (c->counts) return true;
    /* rows start on their own cache line: workers never share one */
    c->stride = (c->nslots + 7) & ~(size_t)7;
    c->counts = calloc(c->stride * (nrows ? nrows : 1), sizeof(*c->counts));
    return c->counts != NULL;
}

uint64_t counters_live(const struct config *c, unsigned nrows, unsigned slot)
{
    uint64_t n = 0;
    if (!c->counts) return 0;
    for (unsigned r = 0; r < nrows; r++)
        n += atomic_load_explicit(&c->counts[r * c->stride + slot], memory_order_relaxed);
    return n;
}

void counters_each_slot(const struct config *c, counters_slot_fn *fn, void *arg)
{
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        for (size_t k = 0; k < p->nregions; k++)
            fn(arg, p->name, p->regions[k].name, p->status, p->regions[k].tmpl.slot);
        fn(arg, p->name, "fallback", p->status, p->fallback.slot);
        fn(arg, p->name, "reject", 503, p->reject.slot);
    }
    for (unsigned e = 0; e < COUNTERS_ERROR_STATUSES; e++)
        fn(arg, "", "", counters_error_status[e], counters_error_slot(c, counters_error_status[e]));
}

/* ---- lasting totals: open addressing by (pool, region, code) ---- */

struct total {
    char *pool, *region; /* pool == NULL: empty */
    unsigned code;
    uint64_t n;
};

struct counters {
    struct total *t;
    size_t size, used;
};

static uint64_t key_hash(const char *pool, const char *region, unsigned code)
{
    uint64_t h = fnv1a64_mix(fnv1a64_str(FNV64_OFFSET, pool), 0x100); /* separator */
    return fnv1a64_mix(fnv1a64_str(h, region), code);
}

struct counters *counters_new(void)
{
    struct counters *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->size = 64;
    t->t = calloc(t->size, sizeof(*t->t));
    if (!t->t) {
        free(t);
        return NULL;
    }
    return t;
}

void counters_free(struct counters *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->size; i++) {
        free(t->t[i].pool);
        free(t->t[i].region);
    }
    free(t->t);
    free(t);
}

static struct total *find(const struct counters *t, const char *pool, const char *region,
                          unsigned code)
{
    for (size_t i = key_hash(pool, region, code) & (t->size - 1);; i = (i + 1) & (t->size - 1)) {
        struct total *e = &t->t[i];
        if (!e->pool) return e;
        if (e->code == code && strcmp(e->pool, pool) == 0 && strcmp(e->region, region) == 0)
            return e;
    }
}

static bool grow(struct counters *t)
{
    struct counters bigger = {calloc(t->size * 2, sizeof(struct total)), t->size * 2, t->used};
    if (!bigger.t) return false;
    for (size_t i = 0; i < t->size; i++)
        if (t->t[i].pool) *find(&bigger, t->t[i].pool, t->t[i].region, t->t[i].code) = t->t[i];
    free(t->t);
    *t = bigger;
    return true;
}

static void add(struct counters *t, const char *pool, const char *region, unsigned code, uint64_t n)
{
    if (!n) return;
    if ((t->used + 1) * 2 > t->size && !grow(t)) return;
    struct total *e = find(t, pool, region, code);
    if (!e->pool) {
        e->pool = strdup(pool);
        e->region = strdup(region);
        if (!e->pool || !e->region) {
            free(e->pool);
            free(e->region);
            e->pool = e->region = NULL;
            return;
        }
        e->code = code;
        t->used++;
    }
    e->n += n;
}

struct fold_arg {
    struct counters *t;
    const struct config *c;
    unsigned nrows;
    uint64_t *snap; /* by slot: what an earlier fold took; NULL: nothing */
    bool take;      /* record what this fold takes in snap */
};

static void fold_one(void *arg, const char *pool, const char *region, unsigned code, unsigned slot)
{
    struct fold_arg *a = arg;
    uint64_t n = counters_live(a->c, a->nrows, slot);
    if (a->take) {
        a->snap[slot] = n;
        add(a->t, pool, region, code, n);
    } else {
        add(a->t, pool, region, code, a->snap ? n - a->snap[slot] : n);
    }
}

void counters_fold(struct counters *t, const struct config *c, unsigned nrows)
{
    struct fold_arg a = {t, c, nrows, NULL, false};
    counters_each_slot(c, fold_one, &a);
}

uint64_t *counters_fold_start(struct counters *t, const struct config *c, unsigned nrows)
{
    uint64_t *snap = calloc(c->nslots ? c->nslots : 1, sizeof(*snap));
    if (!snap) return NULL;
    struct fold_arg a = {t, c, nrows, snap, true};
    counters_each_slot(c, fold_one, &a);
    return snap;
}

void counters_fold_rest(struct counters *t, const struct config *c, unsigned nrows, uint64_t *snap)
{
    struct fold_arg a = {t, c, nrows, snap, false};
    counters_each_slot(c, fold_one, &a);
    free(snap);
}

uint64_t counters_total(const struct counters *t, const struct config *c, unsigned nrows,
                        const char *pool, const char *region, unsigned code, unsigned slot)
{
    const struct total *e = find(t, pool, region, code);
    return (e->pool ? e->n : 0) + counters_live(c, nrows, slot);
}

static void mark_one(void *arg, const char *pool, const char *region, unsigned code, unsigned slot)
{
    (void)slot;
    add(arg, pool, region, code, 1);
}

void counters_each_removed(const struct counters *t, const struct config *c, counters_total_fn *fn,
                           void *arg)
{
    struct counters *seen = counters_new();
    if (seen) counters_each_slot(c, mark_one, seen);
    for (size_t i = 0; i < t->size; i++) {
        const struct total *e = &t->t[i];
        if (!e->pool || (seen && find(seen, e->pool, e->region, e->code)->pool)) continue;
        fn(arg, e->pool, e->region, e->code, e->n);
    }
    counters_free(seen);
}
