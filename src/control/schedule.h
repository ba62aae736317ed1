/* The scheduling core of timed overrides and maintenance windows: given
 * the operator's overrides, the windows and an instant, the effective
 * operator state of every region, each window's phase, and the next
 * instant at which any of that changes.
 *
 * Pure: no I/O, no clock reads, no global state. Time is always an
 * argument (milliseconds since the Unix epoch, wall clock), so the daemon
 * evaluates at "now", `detourd -t --at TIME` at a planned instant, and the
 * tests at whatever instant they like. Because sched_eval() depends on
 * nothing but its arguments, a wall-clock jump (NTP step, suspend) needs no
 * special case: the caller evaluates again with the new time and re-arms
 * its timer at sched_next_boundary().
 *
 * (The file is not called sched.h: with src/ on the include path that
 * would hide the system's <sched.h>, which <pthread.h> includes.) */
#ifndef DETOURD_SCHEDULE_H
#define DETOURD_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/config.h"

/* Enough for any time sched_format_time() writes, NUL included. */
#define SCHED_TIME_LEN 40

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM).
 * 'T' and 'Z' may be lower case (RFC 3339 section 5.6); everything else is
 * rejected: a date alone, a missing offset, a space for 'T', a field out
 * of range (February 29 only in leap years, second 60 never). Fractions
 * are cut to milliseconds. */
bool sched_parse_time(const char *s, int64_t *unix_ms);
/* UTC, e.g. 2026-11-28T04:00:00Z; milliseconds (.250) only when not 0, so
 * sched_parse_time() reads back the same instant. */
void sched_format_time(int64_t unix_ms, char *buf, size_t len);

/* A region's own override from the config. Active while state is not
 * REGION_AUTO and it has no end, or its end is still ahead. Every int64_t
 * is an instant (the epoch, 0, included): "no end" is has_until, never a
 * value of until_ms. */
struct sched_override {
    enum region_state state;
    bool has_until;     /* false: no end */
    int64_t until_ms;   /* the end, when has_until */
    const char *reason; /* NULL: none given */
};

/* A drain of one region kept in the fleet's etcd (fleet/): weaker than the
 * region's own override, stronger than any window. Active while set and
 * now is in [from, until) (no from: since ever; no until: until the key
 * is deleted). */
struct sched_fleet_drain {
    bool set;                /* false: none */
    enum region_state state; /* REGION_DRAIN or REGION_DOWN */
    bool has_from, has_until;
    int64_t from_ms, until_ms;
    const char *reason; /* NULL: none given */
    const char *key;    /* the full etcd key: its source's name */
};

struct sched_target {
    size_t pool, region; /* indexes into the model's pools and their regions */
};

/* A maintenance window: state applies during [from_ms, until_ms) to every
 * region it names. */
struct sched_window {
    const char *name;
    int64_t from_ms, until_ms;
    enum region_state state; /* REGION_DRAIN or REGION_DOWN */
    const char *reason;      /* NULL: none given */
    const struct sched_target *targets;
    size_t ntargets;
};

struct sched_pool {
    const struct sched_override *overrides; /* one per region */
    size_t nregions;
    const struct sched_fleet_drain *fleet; /* one per region, or NULL: no fleet drain */
};

struct sched_model {
    const struct sched_pool *pools;
    size_t npools;
    const struct sched_window *windows;
    size_t nwindows;
    /* windows[nconfig_windows..] came from the fleet (named "fleet:NAME"):
     * a model composed over the config's own by maint.c owns them */
    size_t nconfig_windows;
    bool composed; /* built by maint_compose(): freed by maint_model_free() */
};

enum sched_source {
    SCHED_SOURCE_NONE,   /* no operator state: the health check decides */
    SCHED_SOURCE_CONFIG, /* the region's own override */
    SCHED_SOURCE_WINDOW, /* a maintenance window (see window) */
    SCHED_SOURCE_FLEET,  /* a fleet drain (see key) */
};

enum sched_phase { SCHED_PENDING, SCHED_ACTIVE, SCHED_OVER };

/* What sched_eval() says about one region. Strings are the model's. */
struct sched_region {
    enum region_state state; /* REGION_AUTO when source is SCHED_SOURCE_NONE */
    enum sched_source source;
    const char *window;  /* the window's name (SCHED_SOURCE_WINDOW), else NULL */
    size_t window_index; /* its index in the model (SCHED_SOURCE_WINDOW only) */
    const char *key;     /* the fleet drain's key (SCHED_SOURCE_FLEET), else NULL */
    const char *reason;  /* the source's reason, or NULL */
    bool has_until;      /* false: no end (or no source) */
    int64_t until_ms;    /* when the source ends, when has_until */
};

/* Filled by sched_eval(); the caller provides the arrays. */
struct sched_result {
    struct sched_region **pools; /* [pool][region], shaped like the model */
    enum sched_phase *phases;    /* one per window */
};

/* The effective operator state of every region at now_ms, by precedence:
 * the region's own active override, else its active fleet drain, else the
 * active windows naming it
 * (down beats drain; between equal states the one that ends last, then
 * the first listed), else none (health checks). Targets outside the model
 * are ignored. */
void sched_eval(const struct sched_model *m, int64_t now_ms, struct sched_result *out);
/* A window's phase at now_ms: pending before from, active in [from, until),
 * over from until on. */
enum sched_phase sched_window_phase(const struct sched_window *w, int64_t now_ms);
/* Whether a fleet drain is in force at now_ms. */
bool sched_fleet_active(const struct sched_fleet_drain *f, int64_t now_ms);
/* The earliest window start or end, fleet drain start or end, or active
 * override end, strictly after
 * now_ms: where the result of sched_eval() may next change. INT64_MAX when
 * nothing is ahead. */
int64_t sched_next_boundary(const struct sched_model *m, int64_t now_ms);

/* ---- what changed between two evaluations ----
 * A region's operator state moves when the source in force changes: one
 * ends, another starts, or (by a reload) a source changes its state or its
 * rank. The override events tell each such change as it happened: when one
 * source hands a region to another at the same instant, the end of the
 * first and the start of the second, whether or not the state changes. */

/* True if a and b name the same source: none, the region's own override,
 * the same fleet drain (by key) or the same window (by name, so across a
 * reload too). */
bool sched_same_source(const struct sched_region *a, const struct sched_region *b);

/* Whether the source s names (the region's own override, or the window
 * named s->window) applies to region `region` of pool `pool` of m at now_ms:
 * the override is active, or the window is active and names the region,
 * whether or not something stronger hides it. False for no source. */
bool sched_source_applies(const struct sched_model *m, size_t pool, size_t region,
                          const struct sched_region *s, int64_t now_ms);

/* One region between two evaluations: what was in force, what is now, and
 * whether each source applied on the other side (sched_source_applies). */
struct sched_step {
    const struct sched_region *was, *now;
    bool was_applies; /* was's source still applies now (now's wins over it) */
    bool now_applied; /* now's source applied before (was's hid it) */
};

enum sched_note {
    SCHED_NOTE_ENDED,     /* was's source no longer applies */
    SCHED_NOTE_STARTED,   /* now's source applies and did not before */
    SCHED_NOTE_CHANGED,   /* the same source with another state (a reload) */
    SCHED_NOTE_OVERTAKEN, /* both apply on both sides; now's wins now (a reload) */
};

/* The changes a step makes, in the order they are told: an end before a
 * start. Writes 0 to 2 notes to out and returns how many. */
size_t sched_step_notes(const struct sched_step *s, enum sched_note out[2]);

const char *sched_source_name(enum sched_source s);
const char *sched_phase_name(enum sched_phase p);

#endif
