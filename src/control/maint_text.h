/* The words of maint.c: its log lines and the reasons of its override
 * events, built from evaluations of the schedule (schedule.h). Pure: no
 * I/O, no clock, no global state, so every phrasing is unit-tested.
 *
 * Each text says what is true at that instant and nothing else: a source
 * that ended "ended", one that starts "started", and one that applied all
 * along and holds the region again is named as what the region "stays" or
 * "is now" under, never as starting. A region whose operator state comes
 * from nowhere any more "is now auto". */
#ifndef DETOURD_MAINT_TEXT_H
#define DETOURD_MAINT_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "control/schedule.h"

/* Room for any text built here (a log line's limit); longer ones are cut
 * and end in "..." */
#define MAINT_TEXT_LEN 2048

enum maint_cause {
    MAINT_BY_CLOCK,      /* the wall clock passed a boundary */
    MAINT_BY_CLOCK_BACK, /* the wall clock was stepped back */
    MAINT_BY_RELOAD,     /* a reload changed the schedule */
};

/* Where a region's operator state comes from, with its reason and end:
 * "drain under maintenance outer (rack move, until 2026-11-28T04:00:00Z)",
 * "up by its own override (pinned)", "auto". */
void maint_text_source(const struct sched_region *s, char *buf, size_t len);

/* What happened to a region's operator state from was to now, as a
 * predicate: "is now auto", "stays drain under maintenance outer (...)"
 * (the same state, whoever holds it now), "is now down under ...". */
void maint_text_fate(const struct sched_region *was, const struct sched_region *now, char *buf,
                     size_t len);

/* The reason of the override event for note n of step st, e.g.
 * "maintenance inner ended: disk swap; the region is now drain under
 * maintenance outer (rack move, until ...)". */
void maint_text_event(enum sched_note n, const struct sched_step *st, enum maint_cause why,
                      char *buf, size_t len);

/* The log line of a region's own override or fleet drain for note n of
 * st, to follow "pool P region R: ": a fleet drain's start or end; an
 * override's end ("override drain ended at T (reason); the
 * region is now auto") or, the wall clock stepped back, its return. False
 * when the note is not about the region's own override, or is told by the
 * reload (whose events say it). */
bool maint_text_override(enum sched_note n, const struct sched_step *st, enum maint_cause why,
                         char *buf, size_t len);

/* How a window's phase moved. */
enum maint_window_change {
    MAINT_WINDOW_STARTED,  /* active now, not before */
    MAINT_WINDOW_IN_FORCE, /* active now, its phase before unknown: at start, or new in a reload */
    MAINT_WINDOW_ENDED,    /* active before, not now (or gone from the config) */
    MAINT_WINDOW_MOVED,    /* between pending and over: it never applied */
};

/* One region a window names, for the window's log line. */
struct maint_target {
    const char *pool, *region;
    const struct sched_region *was; /* NULL: not in the config before (a reload) */
    const struct sched_region *now; /* NULL: not in the config any more (a reload) */
};

/* The log line of window w's change: its start names the regions it holds
 * and tells what holds the others ("maintenance b started: drain web/eu
 * until T (reason); web/us stays up by its own override (pinned)"); its end
 * tells what each region is now ("maintenance inner ended: disk swap;
 * web/us is now drain under maintenance outer (rack move, until T)").
 * phase: the window's phase now (for MAINT_WINDOW_MOVED). */
void maint_text_window(const struct sched_window *w, enum maint_window_change ch,
                       enum sched_phase phase, enum maint_cause why, const struct maint_target *t,
                       size_t n, char *buf, size_t len);

#endif
