/* The fleet's keys and values in etcd (the contract's "Fleet"), decoded
 * and validated. Pure: no I/O, no clock, no global state; fuzzed
 * (tests/fuzz/fuzz_fleet_value.c), because any etcd client can write them.
 *
 *   PREFIX drain/POOL/REGION              {"state", "from", "until", "reason"}
 *   PREFIX maintenance/NAME               {"from", "until", "regions", "state", "reason"}
 *   PREFIX health/POOL/REGION/INSTANCE    {"up", "at", "reason"}   (written by detourd)
 *
 * A value is a JSON object (jansson) of well-formed UTF-8 (no lone
 * surrogate, no NUL); unknown fields, a field of the wrong type or twice,
 * a bad RFC 3339 time, `until` not after `from` are errors; a reason is
 * free text of at most FLEET_REASON_MAX bytes without control characters
 * or line breaks (U+2028, U+2029 included: every log line and event must
 * stay one line). Errors are one short line naming the field. */
#ifndef DETOURD_FLEET_VALUE_H
#define DETOURD_FLEET_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

#define FLEET_VALUE_MAX   (64 * 1024) /* bytes of one value */
#define FLEET_REASON_MAX  1024
#define FLEET_NAME_MAX    64   /* a pool, region, window or instance name */
#define FLEET_MAX_TARGETS 1024 /* regions of one window */
#define FLEET_ERR_LEN     256

enum fleet_key_kind {
    FLEET_KEY_OTHER,  /* under the prefix, outside drain/, maintenance/, health/: ignored */
    FLEET_KEY_BAD,    /* under one of them, but not of its form: rejected */
    FLEET_KEY_DRAIN,  /* drain/POOL/REGION */
    FLEET_KEY_MAINT,  /* maintenance/NAME */
    FLEET_KEY_HEALTH, /* health/POOL/REGION/INSTANCE */
};

struct fleet_key {
    enum fleet_key_kind kind;
    char pool[FLEET_NAME_MAX + 1], region[FLEET_NAME_MAX + 1];
    char name[FLEET_NAME_MAX + 1];     /* FLEET_KEY_MAINT */
    char instance[FLEET_NAME_MAX + 1]; /* FLEET_KEY_HEALTH */
};

/* True for 1..FLEET_NAME_MAX characters of A-Z a-z 0-9 . _ - (the
 * config's names). */
bool fleet_name_ok(const char *s, size_t n);
/* Parses key[0..len) (any bytes) under prefix; err says why for
 * FLEET_KEY_BAD. A key outside the prefix is FLEET_KEY_OTHER. */
enum fleet_key_kind fleet_key_parse(const char *prefix, const char *key, size_t len,
                                    struct fleet_key *k, char *err, size_t errlen);

struct fleet_drain {
    enum region_state state; /* REGION_DRAIN (default) or REGION_DOWN */
    bool has_from, has_until;
    int64_t from_ms, until_ms;
    char *reason; /* NULL: none */
};

struct fleet_window {
    int64_t from_ms, until_ms;
    enum region_state state; /* REGION_DRAIN (default) or REGION_DOWN */
    char *reason;
    char **pools, **regions; /* n of each: POOL/REGION split */
    size_t n;
};

struct fleet_health {
    bool up;
    bool has_at;
    int64_t at_ms;
    char *reason;
};

/* Whether pool/region exists (in the running config). */
typedef bool (*fleet_exists_fn)(void *arg, const char *pool, const char *region);

/* A drain's value; empty (or only white space) and {} mean drain from now
 * until the key is deleted. exists (may be NULL) checks the key's
 * pool/region. False with err, out then empty. */
bool fleet_drain_decode(const char *buf, size_t len, struct fleet_drain *out, char *err,
                        size_t errlen);
bool fleet_window_decode(const char *buf, size_t len, fleet_exists_fn exists, void *arg,
                         struct fleet_window *out, char *err, size_t errlen);
bool fleet_health_decode(const char *buf, size_t len, struct fleet_health *out, char *err,
                         size_t errlen);
void fleet_drain_clear(struct fleet_drain *d);
void fleet_window_clear(struct fleet_window *w);
void fleet_health_clear(struct fleet_health *h);

/* The value this instance writes for its verdict: {"up":..,"at":..,"reason":..}
 * (malloc'd, NUL-terminated); NULL on OOM. */
char *fleet_health_encode(bool up, int64_t at_ms, const char *reason);

/* ---- consensus (checks.consensus) ---- */

/* The tally of one region's live verdicts, this instance's included. */
struct fleet_tally {
    unsigned up, down;
};

/* Whether a region is down for traffic by the fleet's verdicts: mode is
 * check_cfg.consensus (CHECK_CONSENSUS_MAJORITY: more than half of the
 * live verdicts say down; N > 0: at least N say down); alone (cut off
 * longer than the lease) or mode off: own verdict only. */
bool fleet_consensus_down(int mode, bool own_up, struct fleet_tally t, bool alone);

#endif
