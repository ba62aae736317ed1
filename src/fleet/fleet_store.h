/* The fleet's keys as this instance knows them: every key under the
 * prefix with what it means now. Pure (no I/O, no clock): the etcd client
 * feeds it what it reads and watches (fleet.c), the tests feed it
 * directly.
 *
 * A bad value never moves traffic: a key whose newest value is rejected
 * keeps the last good value it had (nothing, if it never had one) and
 * carries the error until a good value or a delete replaces it. Values
 * are validated against the running config (unknown pools or regions are
 * errors for drains and windows; a health verdict of a region this
 * instance does not have is kept but counts for nothing), and again after
 * every reload. */
#ifndef DETOURD_FLEET_STORE_H
#define DETOURD_FLEET_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/maint.h"
#include "fleet/fleet_value.h"

struct fleet_entry {
    char *key; /* the full key (NUL-terminated; keylen bytes) */
    size_t keylen;
    struct fleet_key k;
    char *raw; /* its newest value */
    size_t rawlen;
    int64_t rev;   /* that value's revision */
    int64_t lease; /* the lease it was written under (0: none) */
    char *error;   /* NULL, or why the newest value (or the key) was rejected */
    bool good;     /* a good value is in force: */
    int64_t good_rev;
    struct fleet_drain drain;   /* FLEET_KEY_DRAIN */
    struct fleet_window window; /* FLEET_KEY_MAINT */
    struct fleet_health health; /* FLEET_KEY_HEALTH */
    bool seen;                  /* in the full read under way */
};

/* What a change did (bits). */
enum {
    FLEET_CH_OPERATOR = 1, /* a drain or window in force changed */
    FLEET_CH_HEALTH = 2,   /* a verdict changed */
    FLEET_CH_REJECTED = 4, /* a value was rejected now (fleet_store_last()) */
    FLEET_CH_FIXED = 8,    /* a rejected key was fixed or deleted */
};

struct fleet_store {
    char *prefix;
    fleet_exists_fn exists;
    void *arg;
    struct fleet_entry **v; /* in no order */
    size_t n, cap;
    size_t *slot; /* open addressing over v by key: index + 1, 0 empty */
    size_t mask;
    uint64_t rejections; /* values rejected since the start */
    int64_t revision;    /* the newest revision applied */
};

bool fleet_store_init(struct fleet_store *s, const char *prefix, fleet_exists_fn exists, void *arg);
void fleet_store_free(struct fleet_store *s);

/* A put of key at rev under lease (0: none); the FLEET_CH_* bits it
 * makes. The entry is fleet_store_find()'s. -1 on OOM (nothing changed). */
int fleet_store_put(struct fleet_store *s, const char *key, size_t klen, const char *val,
                    size_t vlen, int64_t rev, int64_t lease);
int fleet_store_delete(struct fleet_store *s, const char *key, size_t klen, int64_t rev);
struct fleet_entry *fleet_store_find(const struct fleet_store *s, const char *key, size_t klen);

/* A full read: mark, put every key read, then sweep deletes (as watch
 * deletes would) every key not read. */
void fleet_store_mark(struct fleet_store *s);
int fleet_store_sweep(struct fleet_store *s, int64_t rev);
/* After a reload (exists answers for the new config): every key's newest
 * value is validated again; a good one that no longer is loses its
 * meaning only if its pool or region is gone. */
int fleet_store_revalidate(struct fleet_store *s);

size_t fleet_store_rejected(const struct fleet_store *s);

/* A health verdict that counts: a good value under a lease. One without
 * (written by hand) would count forever, its writer gone or not. */
bool fleet_entry_verdict(const struct fleet_entry *e);

/* The drains and windows in force, as maint.h's layer; the arrays are
 * the caller's (fleet_layer_free), the strings the store's: valid until
 * the store changes. NULL-free on OOM (false). */
struct fleet_layer {
    struct maint_layer l;
    struct maint_fleet_drain *drains;
    struct maint_fleet_window *windows;
    char **names; /* "fleet:NAME" per window */
};
bool fleet_store_layer(const struct fleet_store *s, struct fleet_layer *out);
void fleet_layer_free(struct fleet_layer *l);

#endif
