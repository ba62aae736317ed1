/* The exec event sink: runs events.exec.command once per event, one at a time, in order
 * (posix_spawn; JSON on stdin; DETOURD_* variables; killed after its timeout; reaped through a
 * libevent SIGCHLD event). It drains its own bounded queue (events.h); it never blocks the loop. */
#ifndef DETOURD_SINK_EXEC_H
#define DETOURD_SINK_EXEC_H

struct event_base;
struct event_rec;
struct events;
struct events_cfg;
struct sink_exec;

/* Creates the sink, not yet attached to the hub. NULL on OOM. */
struct sink_exec *sink_exec_new(struct event_base *base, struct events *hub);
/* Applies cfg's settings (copied: cfg may be freed afterwards). Configured:
 * attaches to the hub (if not yet); not configured: detaches, dropping what
 * was queued (counted as dropped). Main thread; at startup and each reload. */
void sink_exec_config(struct sink_exec *s, const struct events_cfg *cfg);
/* Detaches and frees. A running command's process group gets SIGKILL and
 * the command is reaped if it ends at once (within 100 ms; otherwise the
 * daemon is exiting and init reaps it); nothing waits longer. */
void sink_exec_free(struct sink_exec *s);

/* The command's environment for ev (pure: for the sink and tests): every
 * entry of base_env except DETOURD_* variables of the event, then
 * DETOURD_EVENT_ID, DETOURD_EVENT_KIND, DETOURD_POOL, DETOURD_REGION,
 * DETOURD_FROM, DETOURD_TO, DETOURD_REASON, DETOURD_TIME for the fields the
 * event has (an absent field leaves its variable unset, even if base_env
 * set it; a value over 32 KiB is cut at a character boundary, since exec
 * refuses longer strings). NULL-terminated, freed with sink_exec_env_free; NULL on OOM. */
char **sink_exec_env(char *const *base_env, const struct event_rec *ev);
void sink_exec_env_free(char **env);

#endif
