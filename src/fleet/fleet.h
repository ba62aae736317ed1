/* The fleet: this instance as one of several steered through etcd (the
 * contract's "Fleet"). Follows the keys under the prefix with its own
 * etcd client (etcd.h), keeps what each means (fleet_store.h), applies
 * the drains and maintenance windows through the same operator-state path
 * as the config's (maint_set_layer: the schedule, each region's op, its
 * pool's published choice; no reload), publishes this instance's verdict
 * for every region under its lease, and with checks.consensus decides a
 * region's health with the other instances' verdicts
 * (health_set_consensus). Main thread only: nothing here runs on a worker
 * or ever makes one wait.
 *
 * etcd out of reach changes nothing in force; cut off for longer than
 * lease_ttl (counted from the last lease keepalive), the instance decides
 * alone until it is back, and says so. */
#ifndef DETOURD_FLEET_H
#define DETOURD_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include "control/config.h"

struct event_base;
struct evbuffer;
struct health_ctl;
struct maint;
struct fleet;

/* Follows cfg's `fleet:` (none: idle until a reload adds one). NULL on OOM. */
struct fleet *fleet_start(struct event_base *base, struct health_ctl *h, struct maint *m,
                          struct config *cfg);
/* A reload, before cfg's choices are published: the keys are validated
 * against cfg and the fleet's drains and windows composed over its
 * schedule, so that the reload itself moves nothing the fleet holds. */
void fleet_prepare(struct fleet *f, struct config *cfg);
/* The reload failed after fleet_prepare(): back to the running config. */
void fleet_abort(struct fleet *f);
/* The reload is committed: a changed `fleet:` restarts the client (the
 * old one's lease is revoked meanwhile); the verdicts of new regions are
 * published, those of gone ones deleted. */
void fleet_commit(struct fleet *f, struct config *cfg);
/* The daemon begins to stop: this instance's lease is revoked, so that
 * its verdicts leave etcd now rather than lease_ttl after it is gone;
 * nothing more is written. */
void fleet_stopping(struct fleet *f);
/* Waits for the revokes under way (each bounded by etcd.timeout, on the
 * main loop), then frees. */
void fleet_stop(struct fleet *f);

/* ,"fleet":{...} for /status (null without a fleet). */
void fleet_status_json(const struct fleet *f, struct evbuffer *out);
/* ,"votes":{...} of region r of pool p where consensus decides it. */
void fleet_votes_json(const struct fleet *f, const struct pool *p, const struct region *r,
                      struct evbuffer *out);
/* The fleet's metrics (none without a fleet). */
void fleet_metrics(const struct fleet *f, struct evbuffer *out);
/* The status page's fleet line and votes (nothing without a fleet). */
void fleet_page_html(const struct fleet *f, struct evbuffer *out);

/* ---- the ACME client's keys (control/acme.c) ----
 * Under PREFIX "acme/": its locks, challenge answers and certificates
 * (docs/fleet.md). fn runs on the main loop after keys there changed, a
 * full read, and each connection to etcd. */
typedef void fleet_acme_fn(void *arg);
void fleet_acme_follow(struct fleet *f, fleet_acme_fn *fn, void *arg);
/* In a fleet (a `fleet:` section, its store begun). */
bool fleet_acme_on(const struct fleet *f);
/* Watching etcd under a lease: writes can go. */
bool fleet_acme_connected(const struct fleet *f);
const char *fleet_acme_instance(const struct fleet *f);
/* The lease this instance's keys go under now (0: none). */
int64_t fleet_acme_lease(const struct fleet *f);
/* Writes PREFIX "acme/" rest (under this instance's lease, or none);
 * false when not connected. */
bool fleet_acme_put(struct fleet *f, const char *rest, const char *val, size_t len, bool lease);
bool fleet_acme_delete(struct fleet *f, const char *rest);
/* Calls fn for every key under PREFIX "acme/" sub as last seen: rest
 * (after "acme/"), its value and revision. */
typedef void fleet_acme_each_fn(void *arg, const char *rest, const char *val, size_t len,
                                int64_t rev);
void fleet_acme_each(const struct fleet *f, const char *sub, fleet_acme_each_fn *fn, void *arg);

#endif
