/* The webhook event sink (sink_webhook.h). */
#include "autoconf.h"

#include "sink_webhook.h"

#include <stdlib.h>

#include "config.h"
#include "events.h"

struct sink_webhook {
    struct event_base *base;
    struct events *hub;
};

struct sink_webhook *sink_webhook_new(struct event_base *base, struct events *hub)
{
    struct sink_webhook *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base = base;
    s->hub = hub;
    return s;
}

void sink_webhook_config(struct sink_webhook *s, const struct events_cfg *cfg)
{
    (void)s, (void)cfg;
}

void sink_webhook_free(struct sink_webhook *s)
{
    free(s);
}
