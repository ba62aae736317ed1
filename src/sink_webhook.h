/* The webhook event sink: POSTs each event to events.webhook.url through libevent's HTTP client
 * (HTTPS verified by OpenSSL; X-Detourd-Signature HMAC; retries with exponential backoff from 1 s
 * keeping the id). It drains its own bounded queue (events.h); it never blocks the loop. */
#ifndef DETOURD_SINK_WEBHOOK_H
#define DETOURD_SINK_WEBHOOK_H

struct event_base;
struct events;
struct events_cfg;
struct sink_webhook;

/* Creates the sink, not yet attached to the hub. NULL on OOM. */
struct sink_webhook *sink_webhook_new(struct event_base *base, struct events *hub);
/* Applies cfg's settings (copied: cfg may be freed afterwards). Configured:
 * attaches to the hub (if not yet); not configured: detaches, dropping what
 * was queued (counted as dropped). Main thread; at startup and each reload. */
void sink_webhook_config(struct sink_webhook *s, const struct events_cfg *cfg);
/* Detaches and frees; work in flight is abandoned. */
void sink_webhook_free(struct sink_webhook *s);

#endif
