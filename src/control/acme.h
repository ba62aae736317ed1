/* The ACME client (RFC 8555) on the control plane: it orders a certificate
 * for every name of the listeners' `tls.acme` lists, answers the
 * challenges through what it publishes for the serving threads
 * (serve/acme_live.h), keeps account, certificates and keys in `storage`,
 * and renews them (ARI, RFC 9773, when the server offers it, else when a
 * third of the lifetime is left).
 *
 * Everything runs on the main event loop, one HTTP request at a time over
 * libevent's client, one order at a time: nothing waits for the ACME
 * server, and the request path only ever reads the published table.
 * Failures are retried with backoff (1 min doubling to 1 h, or the
 * server's Retry-After when later); a reload retries failed names at once. */
#ifndef DETOURD_ACME_H
#define DETOURD_ACME_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "snapshot.h"

struct acme;
struct server;
struct evbuffer;

/* Starts following cfg->acme (NULL: nothing to do until a reload adds it).
 * Certificates found in storage are served at once. NULL on OOM. */
struct acme *acme_start(struct event_base *base, struct server *srv, const struct config *cfg);
/* After a committed reload: names added are ordered, names gone stop
 * being served, failed names are tried again now. */
void acme_reload(struct acme *a, const struct config *cfg);
/* In a fleet (fleet.h): one instance orders a name at a time under a lock
 * in etcd, certificates and challenge answers are shared there. */
struct fleet;
void acme_set_fleet(struct acme *a, struct fleet *f);
/* Stops (an order in flight is abandoned) and frees everything. */
void acme_stop(struct acme *a);

/* `,"acme":[...]` for /status (an empty list without ACME). */
void acme_status_json(const struct acme *a, struct evbuffer *o);
/* The certificate table's ACME rows, and the metrics. */
void acme_page_html(const struct acme *a, struct evbuffer *o, time_t now);
void acme_metrics(const struct acme *a, struct evbuffer *out);
/* When the certificate of name expires (0: none), for the expiry gauge. */
time_t acme_cert_not_after(const struct acme *a, const char *name);

#endif
