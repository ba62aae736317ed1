/* Request counters: one home for their layout, the increments, the worker
 * rows, the sums and the totals that outlive a config.
 *
 * Each config has a matrix of counters: one column (slot) per answer kind
 * (every region's template, each pool's fallback and reject, every error
 * status) and one row per worker, each row on its own cache lines. A worker
 * is the only writer of its row: an increment is a plain load and store.
 * When a reload retires a config, its counts are folded by label (pool,
 * region, status) into lasting totals, so a counter never goes down, also
 * for regions and pools the new config no longer has. */
#ifndef DETOURD_COUNTERS_H
#define DETOURD_COUNTERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "snapshot.h"

/* Statuses the request path answers without a pool: the errors
 * (HTTP_ERRORS in redirect.h), then 200 (an ACME http-01 challenge,
 * serve/acme_live.h); each has a column after every template's. */
#define COUNTERS_ERROR_STATUSES 8
extern const unsigned counters_error_status[COUNTERS_ERROR_STATUSES];

/* Numbers every template's column (at config load). */
void counters_layout(struct config *c);
unsigned counters_error_slot(const struct config *c, unsigned status);
/* Allocates c's matrix with nrows worker rows (once; later calls keep it). */
bool counters_alloc(struct config *c, unsigned nrows);

/* A worker's row of c. */
static inline _Atomic uint64_t *counters_row(const struct config *c, unsigned worker)
{
    return c->counts + (size_t)worker * c->stride;
}

/* Counts one answer; only the row's worker calls it: no locked instruction. */
static inline void counters_inc(_Atomic uint64_t *row, unsigned slot)
{
    uint64_t n = atomic_load_explicit(&row[slot], memory_order_relaxed);
    atomic_store_explicit(&row[slot], n + 1, memory_order_relaxed);
}

/* The sum of one column over the rows of c (any thread; relaxed reads). */
uint64_t counters_live(const struct config *c, unsigned nrows, unsigned slot);

/* Lasting totals by label; used by one thread (the main one). */
struct counters;
struct counters *counters_new(void);
void counters_free(struct counters *t);
/* Adds every count of a config no worker counts into any more. */
void counters_fold(struct counters *t, const struct config *c, unsigned nrows);
/* A reload replaced c, but workers may still count into it until they
 * pass a barrier. counters_fold_start folds what c counted so far (so no
 * reader sees its counts vanish) and returns a snapshot of it (NULL on
 * allocation failure: counters_fold_rest then folds everything);
 * counters_fold_rest adds what came after the snapshot and frees it. */
uint64_t *counters_fold_start(struct counters *t, const struct config *c, unsigned nrows);
void counters_fold_rest(struct counters *t, const struct config *c, unsigned nrows, uint64_t *snap);
/* Answers of one column of the running config c: folded + live. */
uint64_t counters_total(const struct counters *t, const struct config *c, unsigned nrows,
                        const char *pool, const char *region, unsigned code, unsigned slot);

/* Calls fn for every column of c with its labels (error statuses have an
 * empty pool and region). */
typedef void counters_slot_fn(void *arg, const char *pool, const char *region, unsigned code,
                              unsigned slot);
void counters_each_slot(const struct config *c, counters_slot_fn *fn, void *arg);
/* Calls fn for every lasting total whose labels c has no column for (pools
 * and regions a reload removed). */
typedef void counters_total_fn(void *arg, const char *pool, const char *region, unsigned code,
                               uint64_t n);
void counters_each_removed(const struct counters *t, const struct config *c, counters_total_fn *fn,
                           void *arg);

#endif
