/* The state file: the last known health of every region, kept across
 * restarts, so that a restart during an outage does not send traffic back
 * to a dead region until its checks have failed again.
 *
 *   {"format": "detourd-state", "version": 1,
 *    "written_at": "2026-11-28T04:00:00.250Z",
 *    "regions": [{"pool": "api", "region": "eu-west",
 *                 "check_hash": "0123456789abcdef", "up": false,
 *                 "since": "2026-11-28T03:59:58Z"}, ...]}
 *
 * The pure part encodes and decodes that document; the decoder reads it
 * with jansson, the project's one JSON reader. The decoder is strict
 * about what it reads (any malformed, truncated, oversized or foreign input
 * is rejected as a whole, never half-used) and tolerant of what it does
 * not know (unknown keys are skipped), and it never crashes: it is fuzzed.
 *
 * The run-time part: at startup (not at a reload) a region whose pool
 * name, region name and effective check are unchanged and whose saved
 * state is at most state_max_age old starts in its saved state instead of
 * `initial`; afterwards the file is rewritten atomically within a second
 * of any health change and at shutdown. The main thread only copies a
 * snapshot (a few words per region); a writer thread of its own encodes,
 * writes and fsyncs it, so the event loop never waits for the disk. Every problem with
 * the file is a warning: detourd then runs as if there were none. Except
 * one: the path is renamed over at every write, so it may only be a
 * regular file (or a symlink, or nothing yet); a device, FIFO, socket or
 * directory there is a config error at load (statefile_config.c), and an
 * error, with nothing written, if it appears later. */
#ifndef DETOURD_STATEFILE_H
#define DETOURD_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/config.h"

#define STATEFILE_FORMAT  "detourd-state"
#define STATEFILE_VERSION 1
/* A larger file is not read: far more than any config's regions need. */
#define STATEFILE_MAX_BYTES (32u << 20)
/* state_max_age when not configured */
#define STATEFILE_DEFAULT_MAX_AGE_MS (10 * 60 * 1000)
/* The deepest nesting the decoder follows in values it skips. */
#define STATEFILE_MAX_DEPTH 16

struct statefile_region {
    char *pool, *region;
    uint64_t check_hash; /* check_cfg_hash() of the region's effective check */
    bool up;
    int64_t since_ms; /* Unix ms of its last state change */
};

struct statefile {
    int64_t written_ms; /* Unix ms */
    struct statefile_region *regions;
    size_t n;
};

/* ---- pure ---- */

/* The JSON of st (ending in a newline; *len bytes, then a NUL) in a
 * malloc'd buffer; false on OOM. */
bool statefile_encode(const struct statefile *st, char **out, size_t *len);
/* Decodes buf[0..len) into st (free it with statefile_clear). False when
 * it is not a well-formed state file of this version, with the reason in
 * err; st is then empty. The regions come out sorted by pool and region
 * name, each at most once. */
bool statefile_decode(const char *buf, size_t len, struct statefile *st, char *err, size_t errlen);
/* The saved region of that pool and name, or NULL. */
const struct statefile_region *statefile_find(const struct statefile *st, const char *pool,
                                              const char *region);
void statefile_clear(struct statefile *st);

/* ---- files ---- */

/* Reads and decodes path; false with the reason in err. */
bool statefile_read(const char *path, struct statefile *st, char *err, size_t errlen);
/* Writes st to path atomically: a temporary file in the same directory,
 * written and fsync'd, renamed over path, then the directory fsync'd.
 * False with the reason in err (path is then untouched). Never renames
 * over anything but a regular file or a symlink: path found (just before
 * the rename) to be a device, FIFO, socket or directory is left alone,
 * with *refused set (refused may be NULL) and err saying what it is ("is
 * a FIFO, not a regular file"). */
bool statefile_write(const char *path, const struct statefile *st, bool *refused, char *err,
                     size_t errlen);

/* ---- the daemon ---- */

struct event_base;
struct health_ctl;
struct statefile_ctl;

/* At startup, before any check has run or any request is served: applies
 * cfg->state_file (if set) to the regions of cfg that health_start() has
 * just initialised, republishing their pools. Logs what it did, and a
 * warning for any problem with the file. Returns the regions restored. */
size_t statefile_restore(struct health_ctl *h, struct config *cfg, int64_t now_ms);
/* Keeps the file of cfg (a reference is not kept: only the path is copied)
 * up to date with h from now on. NULL on OOM. */
struct statefile_ctl *statefile_start(struct event_base *base, struct health_ctl *h,
                                      const struct config *cfg);
/* A reload committed cfg: its state_file (perhaps another, perhaps none)
 * is written from now on, the first time within a second. */
void statefile_reload(struct statefile_ctl *s, const struct config *cfg);
/* Health changed: the file is written within a second (one write for every
 * change in that second). */
void statefile_changed(struct statefile_ctl *s);
/* Frees s; with write, writes the file first, if one is configured (at
 * shutdown; not after a failed start, whose regions never ran a check). */
void statefile_stop(struct statefile_ctl *s, bool write);

#endif
