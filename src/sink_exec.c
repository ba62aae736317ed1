/* The exec event sink (sink_exec.h). */
#include "autoconf.h"

#include "sink_exec.h"

#include <stdlib.h>

#include "config.h"
#include "events.h"

struct sink_exec {
    struct event_base *base;
    struct events *hub;
};

struct sink_exec *sink_exec_new(struct event_base *base, struct events *hub)
{
    struct sink_exec *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base = base;
    s->hub = hub;
    return s;
}

void sink_exec_config(struct sink_exec *s, const struct events_cfg *cfg)
{
    (void)s, (void)cfg;
}

void sink_exec_free(struct sink_exec *s)
{
    free(s);
}
