/* Health checks as configured: the `checks:` block (over built-in
 * defaults) and each region's `check:` block over it, validated with
 * positioned errors; what the probes and the health updater read, and how
 * a reload or the state file recognises an unchanged check. */
#ifndef DETOURD_HEALTH_CONFIG_H
#define DETOURD_HEALTH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

struct cfg_ctx;
struct yt_node;

enum check_type { CHECK_HTTP, CHECK_TCP, CHECK_NONE };

#define CHECK_STATUS_MIN 100
#define CHECK_STATUS_MAX 599

/* The effective health check of one region: built-in defaults, then the
 * `checks:` block, then the region's own `check:` block. */
struct check_cfg {
    enum check_type type;
    char *url;  /* normalised check url (default: the region url) */
    bool tls;   /* https */
    char *host; /* host to connect to (no brackets) */
    unsigned port;
    char *path; /* request target: path and query, "/" if empty */
    char *method;
    uint8_t expect[(CHECK_STATUS_MAX + 1) / 8 + 1]; /* bit per acceptable status */
    char *expect_body;                              /* NULL: any body */
    struct header *headers;
    size_t nheaders;
    bool tls_verify;
    char *ca_file; /* NULL: the system store */
    uint64_t interval_ms, fast_interval_ms, down_interval_ms, timeout_ms;
    unsigned rise, fall;
    unsigned jitter_pct;
    bool initial_up;
    /* With a fleet (fleet/): whether this region is down is decided by the
     * instances' verdicts: CHECK_CONSENSUS_OFF (this instance alone),
     * CHECK_CONSENSUS_MAJORITY, or at least N saying down. Not part of
     * check_cfg_equal(): changing it keeps the region's health. */
    int consensus;
    unsigned borrowed; /* CHECK_BORROW_* bits: pointers owned by config.checks */
};

#define CHECK_CONSENSUS_OFF      0
#define CHECK_CONSENSUS_MAJORITY (-1)
#define CHECK_CONSENSUS_MAX      1000

#define CHECK_BORROW_URL     1u
#define CHECK_BORROW_HOST    2u
#define CHECK_BORROW_PATH    4u
#define CHECK_BORROW_METHOD  8u
#define CHECK_BORROW_BODY    16u
#define CHECK_BORROW_CA      32u
#define CHECK_BORROW_HEADERS 64u
#define CHECK_BORROW_ALL     127u

static inline bool check_status_ok(const struct check_cfg *c, unsigned status)
{
    return status <= CHECK_STATUS_MAX && (c->expect[status / 8] >> (status % 8) & 1);
}

/* True if two regions' effective checks are the same (health carries over). */
bool check_cfg_equal(const struct check_cfg *a, const struct check_cfg *b);
/* A hash of the fields check_cfg_equal compares, stable across runs, builds
 * and hosts: the state file records it to recognise an unchanged check. */
uint64_t check_cfg_hash(const struct check_cfg *c);
/* Frees c (not what it borrows). NULL is fine. */
void check_cfg_free(struct check_cfg *c);

/* ---- loading (control/config.c's walk) ---- */

/* The `checks:` section: x->c->checks, built-in defaults with the keys of
 * v (NULL: absent) applied. Loaded before the pools. */
void health_config_load_checks(struct cfg_ctx *x, const struct yt_node *v);
/* r->check: the `checks:` block (its strings and headers borrowed, not
 * copied) with the region's own `check:` block n (NULL: none) applied. */
void health_config_region(struct cfg_ctx *x, const struct yt_node *n, struct region *r);
/* Once r's url is known: resolves the check url (its own or the region's)
 * into host, port and path; an error is reported at `at`. */
void health_config_finish(struct cfg_ctx *x, const struct yt_node *at, struct region *r);

#endif
