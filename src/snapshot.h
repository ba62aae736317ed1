/* The configuration snapshot: the one thing both planes share.
 *
 * The control plane builds a struct config completely (control/config.c:
 * YAML, validation, everything the request path precomputes from it), then
 * publishes it with one pointer store; the serving threads only read it.
 * Apart from what is marked otherwise below (each region's live health and
 * operator state, each pool's published choice: written by the control
 * plane, read by workers through atomics or not at all), a config never
 * changes after it is built.
 *
 * A worker keeps a reference while a connection uses the config it
 * started with; the last reference, wherever it is dropped, frees it on
 * the control thread (lib/defer.h), never on a serving thread.
 *
 * serve/ includes this header and nothing else outside serve/ and lib/. */
#ifndef DETOURD_SNAPSHOT_H
#define DETOURD_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "lib/defer.h"
#include "lib/log.h"
#include "lib/netaddr.h"

struct tls_srv;
struct check_cfg;
struct events_cfg;
struct admin_cfg;
struct fleet_cfg;
struct acme_cfg;
struct route_table;
struct select_state;
struct health;
struct sched_model;
struct sched_result;

#define CONFIG_MAX_WEIGHT       1000
#define CONFIG_MAX_PRIORITY     1000
#define CONFIG_MAX_REGIONS      64 /* per pool: an up-set fits in a uint64_t */
#define CONFIG_MAX_CAPTURE      6  /* request headers the parser keeps (hash keys, access log) */
#define CONFIG_MAX_HASH_HEADERS 4  /* distinct hash_key headers over all pools */

enum region_state { REGION_AUTO, REGION_UP, REGION_DOWN, REGION_DRAIN };
enum balance { BALANCE_WEIGHTED, BALANCE_LATENCY, BALANCE_HASH };
enum body_kind { BODY_HTML, BODY_NONE };
enum all_down_action { ALL_DOWN_FAIL_OPEN, ALL_DOWN_FALLBACK, ALL_DOWN_REJECT };

struct header {
    char *name, *value;
};

/* A precomputed response piece (built at load, see redirect.c). */
struct chunk {
    char *p;
    size_t len;
};

/* Everything of one kind of response that does not depend on the request:
 *   head [escaped path] "\r\nDate: ..." "Content-Length: N" tail [Connection]
 *   "\r\n" body_pre [HTML-escaped path] body_post */
struct tmpl {
    struct chunk head;      /* status line + "Location: " + url (no CRLF) */
    struct chunk body_pre;  /* HTML body up to the path */
    struct chunk body_post; /* HTML body after the path */
    bool with_path;         /* append the request's path and query */
    unsigned slot;          /* request counter column */
    unsigned status;        /* for logs and metrics */
    const char *region;     /* region name; NULL for fallback and reject */
};

struct region {
    char *name;
    char *url; /* normalised: lowercase scheme, no trailing '/' */
    size_t url_len;
    unsigned priority;
    unsigned weight;
    enum region_state state; /* as configured */
    bool has_until;          /* false: state has no end */
    int64_t until_ms;        /* state ends at this instant (Unix ms), when has_until */
    char *reason;            /* why the operator set state, or NULL */
    unsigned line, col;
    struct tmpl tmpl;        /* response template (redirect.c) */
    struct check_cfg *check; /* its effective health check (control/health_config.h) */
    struct health *health;   /* live health state (health.c), not owned */
    /* The operator state in force now: `state` until `until`, else a
     * maintenance window's, else auto (schedule.h decides, maint.c applies
     * it at each boundary). With `health` and pool.sel, the only part of a
     * config that changes after load: written and read on the main thread
     * only (selection, status), never by the request path. */
    enum region_state op;
};

struct pool {
    char *name;
    char **hosts;
    size_t nhosts;
    bool is_default;
    unsigned status;
    enum balance balance;
    char *hash_key;  /* "client_ip" or "header:NAME" */
    int hash_header; /* index into config.capture, or -1 for client_ip */
    char *cache_control;
    struct header *headers;
    size_t nheaders;
    enum body_kind body;
    enum all_down_action all_down;
    char *all_down_url;
    unsigned retry_after;
    struct region *regions;
    size_t nregions;
    unsigned line, col;
    /* response templates (redirect.c) */
    struct chunk tail;        /* Cache-Control + extra headers, each ending CRLF */
    struct tmpl fallback;     /* all_down: fallback */
    struct tmpl reject;       /* all_down: reject, and nothing left to choose */
    struct select_state *sel; /* selection state (select.c), the one mutable part */
};

struct limits {
    unsigned max_connections;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    size_t max_header_bytes;
    size_t max_uri_bytes;
    size_t max_body_discard;
    uint64_t shutdown_timeout_ms;
};

struct config {
    _Atomic unsigned refs;    /* config_ref/config_unref */
    void (*release)(void *c); /* frees it (control/config.c), on the control thread */
    time_t loaded_at;
    char *path;
    struct listen_addr *listen;
    struct tls_srv **listen_tls; /* per listener: its TLS settings (tls.h), or NULL */
    size_t nlisten;
    unsigned workers; /* 0 = auto */
    enum log_level log_level;
    bool log_json;
    struct limits limits;
    struct pool *pools;
    size_t npools;
    struct pool *default_pool;
    struct route_table *routes; /* Host -> pool (route.c) */
    struct check_cfg *checks;   /* the `checks:` block over built-in defaults */
    char **capture; /* header names the parser keeps (lowercase): hash keys, log fields */
    size_t ncapture;
    int capture_ua, capture_referer; /* indexes into capture, or -1 */
    char *access_log;                /* path, or NULL: no access log */
    bool access_log_json;
    char *state_file;          /* path, or NULL: health is not kept across restarts */
    uint64_t state_max_age_ms; /* an older state file is ignored at startup */
    struct events_cfg *events; /* `events:` (events/events_config.h) */
    struct admin_cfg *admin;   /* `admin:` (admin/admin_config.h); NULL: no admin listener */
    struct fleet_cfg *fleet;   /* `fleet:` (fleet/fleet_config.h); NULL: not in a fleet */
    struct acme_cfg *acme;     /* `acme:` (control/acme_config.h); NULL: no ACME */
    /* Timed overrides and maintenance windows (schedule.h): the config's
     * own model is immutable; the fleet's drains and windows are composed
     * over it into another (control/maint.h) on the main thread; sched_now
     * holds its evaluation in force (each region's
     * source, reason and end; each window's phase), kept current with every
     * region's `op` by the main thread. */
    struct sched_model *sched;     /* in force: sched_own, or composed over it with the fleet's */
    struct sched_model *sched_own; /* the config's own overrides and windows */
    struct sched_result *sched_now;
    int64_t sched_now_ms; /* the instant sched_now was evaluated for */
    /* request counters (counters.h): one row per worker, one column per
     * slot: every template (region, fallback, reject) and every error status */
    size_t nslots;
    size_t stride;
    _Atomic uint64_t *counts;
};

static inline struct config *config_ref(struct config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* Drops a reference; the last one frees c on the control thread. */
static inline void config_unref(struct config *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        defer_free(c, c->release);
}

#endif
