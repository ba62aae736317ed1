/* The exec event sink: runs events.exec.command once per event, one at a time, in order
 * (posix_spawn; JSON on stdin; DETOURD_* variables; killed after its timeout; reaped through a
 * libevent SIGCHLD event). It drains its own bounded queue (events.h); it never blocks the loop. */
#ifndef DETOURD_SINK_EXEC_H
#define DETOURD_SINK_EXEC_H

struct event_base;
struct events;
struct events_cfg;
struct sink_exec;

/* Creates the sink, not yet attached to the hub. NULL on OOM. */
struct sink_exec *sink_exec_new(struct event_base *base, struct events *hub);
/* Applies cfg's settings (copied: cfg may be freed afterwards). Configured:
 * attaches to the hub (if not yet); not configured: detaches, dropping what
 * was queued (counted as dropped). Main thread; at startup and each reload. */
void sink_exec_config(struct sink_exec *s, const struct events_cfg *cfg);
/* Detaches and frees; work in flight is abandoned. */
void sink_exec_free(struct sink_exec *s);

#endif
