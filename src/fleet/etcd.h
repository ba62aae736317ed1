/* detourd's own etcd v3 client, over etcd's JSON gateway (HTTP/1.1, etcd
 * 3.4 or later), on libevent's HTTP client with an evdns base of its own
 * and OpenSSL for https endpoints. Main thread only; nothing here ever
 * blocks the loop (files are read through lib/file.h).
 *
 * One session at a time, a state you can list:
 *
 *   BACKOFF ─▶ AUTH (with username) ─▶ LEASE (keep the lease alive, or
 *   grant one) ─▶ READ (every key under the prefix, when no revision is
 *   known, it was compacted, or the lease had expired) ─▶ WATCH (from the
 *   last revision seen + 1) ─▶ WATCHING
 *
 * and from any of them, etcd_stop(): STOPPING (revoking the lease, one
 * deadline of the timeout) ─▶ STOPPED.
 *
 * A failure of the session's own requests (authenticate, the lease, the
 * read: a connection error, an error answer, no answer within the
 * timeout) or of the watch (the same, or its stream ending) ends the
 * session: its connections are closed, the next endpoint is tried after a
 * backoff doubling from 1 s to 30 s, reset once a session has lasted
 * 10 s. A compacted revision makes the next session read everything
 * again; an expired auth token is authenticated again at once. While
 * WATCHING, the lease is kept alive every third of its TTL, and writes
 * (this instance's verdicts, under its lease) go out one at a time over
 * the connection of the unary requests. A write that etcd refuses (a user
 * that may only read, "database space exceeded") or does not answer ends
 * nothing: it is reported through the written hook, and the caller
 * writes again later. */
#ifndef DETOURD_ETCD_H
#define DETOURD_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet/etcd_json.h"

struct event_base;
struct fleet_cfg;
struct etcd;

enum etcd_state {
    ETCD_BACKOFF,
    ETCD_AUTH,
    ETCD_LEASE,
    ETCD_READ,
    ETCD_WATCH,
    ETCD_WATCHING,
    ETCD_STOPPING, /* etcd_stop(): revoking the lease */
    ETCD_STOPPED,
};

struct etcd_hooks {
    /* every key under the prefix at r->revision (a full read) */
    void (*full_read)(void *arg, const struct etcd_range *r);
    /* changes seen by the watch, in order */
    void (*events)(void *arg, const struct etcd_watch_msg *m);
    /* the watch is established (endpoint: its URL as configured); this
     * instance's keys should be written now (under etcd_lease()) */
    void (*up)(void *arg, const char *endpoint);
    /* the session ended (why: one line) */
    void (*down)(void *arg, const char *why);
    /* the lease was kept alive (or granted) just now */
    void (*lease_ok)(void *arg);
    /* a write (etcd_put, etcd_delete) of key is over: why is NULL when
     * etcd took it, else why it was refused or got no answer (one line);
     * the session goes on either way */
    void (*written)(void *arg, const char *key, const char *why);
    /* after etcd_stop(): the revoke is over (done, refused or timed out) */
    void (*stopped)(void *arg);
};

/* Starts connecting at once. cfg is copied. NULL on OOM or when TLS
 * cannot be set up (err says why). */
struct etcd *etcd_new(struct event_base *base, const struct fleet_cfg *cfg,
                      const struct etcd_hooks *hooks, void *arg, char *err, size_t errlen);
/* The end of this client's work (a stop, or a reload that replaces it):
 * the session is closed and the lease revoked, so that this instance's
 * verdicts leave etcd at once rather than lease_ttl later; bounded by the
 * timeout (an authentication first where the token is gone), best effort.
 * No hook runs afterwards but stopped, once, and only where
 * etcd_stopping() is true on return (a lease to revoke). */
void etcd_stop(struct etcd *e);
bool etcd_stopping(const struct etcd *e);
/* Frees at once: whatever is in flight is dropped. */
void etcd_free(struct etcd *e);

/* Writes key=value under this instance's lease (with_lease) or none; only
 * while WATCHING (false otherwise: the up hook is the time to write). True:
 * the written hook tells how it went, unless the session ends first. */
bool etcd_put(struct etcd *e, const char *key, const char *value, size_t vlen, bool with_lease);
bool etcd_delete(struct etcd *e, const char *key);

enum etcd_state etcd_state(const struct etcd *e);
const char *etcd_state_name(enum etcd_state s);
const char *etcd_endpoint(const struct etcd *e); /* the one in use or tried last */
int64_t etcd_revision(const struct etcd *e);     /* the last revision seen */
/* Lease ID now (0: none). */
int64_t etcd_lease(const struct etcd *e);

#endif
