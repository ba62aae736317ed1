/* The webhook event sink: POSTs each event to events.webhook.url through libevent's HTTP client
 * (HTTPS verified by OpenSSL; X-Detourd-Signature HMAC; retries with exponential backoff from 1 s
 * keeping the id). It drains its own bounded queue (events.h); it never blocks the loop. */
#ifndef DETOURD_SINK_WEBHOOK_H
#define DETOURD_SINK_WEBHOOK_H

#include <stddef.h>

struct event_base;
struct events;
struct events_cfg;
struct sink_webhook;

#define WEBHOOK_BACKOFF_FIRST_MS 1000u  /* the wait before the first retry */
#define WEBHOOK_BACKOFF_MAX_MS   60000u /* doubling stops here */

/* Creates the sink, not yet attached to the hub. NULL on OOM. */
struct sink_webhook *sink_webhook_new(struct event_base *base, struct events *hub);
/* Applies cfg's settings (copied: cfg may be freed afterwards). Configured:
 * attaches to the hub (if not yet); not configured: detaches, dropping what
 * was queued (counted as dropped). Main thread; at startup and each reload.
 * A try in flight finishes with the settings it started with; the next try
 * (a retry of the same event or the next event) uses the new ones. */
void sink_webhook_config(struct sink_webhook *s, const struct events_cfg *cfg);
/* Detaches and frees; work in flight is abandoned. */
void sink_webhook_free(struct sink_webhook *s);

/* The X-Detourd-Signature value without its "sha256=" prefix: the lowercase
 * hex HMAC-SHA256 of the len bytes of body keyed with secret (pure). */
void webhook_sign(const char *secret, const char *body, size_t len, char out[65]);
/* The wait before retry number n (1, 2, ...): 1 s doubling, capped (pure). */
unsigned webhook_backoff_ms(unsigned n);

#endif
