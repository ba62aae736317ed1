/* Where each pool's traffic went over the last minute: the status page's
 * share column and /status's recent_requests.
 *
 * The main thread samples every region's lasting request counter
 * (metrics_requests) every RECENT_TICK_S; a region's recent requests are
 * its counter now less its counter at the newest sample at least
 * RECENT_WINDOW_S old (less 0, the count at the start, while detourd has
 * run for less than that). The request path does nothing for it. Counts are
 * keyed by pool and region name, as the lasting totals are, so a reload
 * changes nothing for the regions it keeps.
 *
 * Pure bookkeeping: time is an argument (monotonic milliseconds). */
#ifndef DETOURD_RECENT_H
#define DETOURD_RECENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECENT_WINDOW_S 60
#define RECENT_TICK_S   5
/* enough samples to hold one at least RECENT_WINDOW_S old, and a spare */
#define RECENT_SLOTS (RECENT_WINDOW_S / RECENT_TICK_S + 2)

struct recent;

/* start_ms: when every counter was 0 (the process's start). NULL on OOM. */
struct recent *recent_new(uint64_t start_ms);
void recent_free(struct recent *r);

/* One sample: recent_put() every region's counter, then recent_commit()
 * with the instant they were read. A region not put in a sample is
 * forgotten once no window can reach back to a sample that had it. False
 * on OOM (that region then counts from 0). */
bool recent_put(struct recent *r, const char *pool, const char *region, uint64_t count);
void recent_commit(struct recent *r, uint64_t now_ms);

/* The window ending at now_ms: where it starts (recent_since) and each
 * region's counter there (recent_base: 0 at the start, and for a region
 * that sample did not have: one new since). */
struct recent_window {
    uint64_t since_ms;
    long slot; /* the sample at since_ms, or -1: the start */
};
struct recent_window recent_window(const struct recent *r, uint64_t now_ms);
uint64_t recent_base(const struct recent *r, const struct recent_window *w, const char *pool,
                     const char *region);

#endif
