/* The redirect server as the control plane sees it: starts the worker
 * threads (serve/worker.h), binds their listeners, publishes each new
 * config (hitless reload) and drives the graceful shutdown.
 *
 * Each worker is a thread with its own event_base, whatever the number of
 * workers (one included): the main thread runs signals, health checks,
 * the admin listener and reloads, and never the request path. It talks to
 * workers through their mailboxes and frees what workers might still read
 * (old configs, old choices, old listener sets) only after every worker
 * has passed a barrier.
 *
 * struct server is opaque: the admin pages and metrics read it through the
 * accessors below (main thread only). */
#ifndef DETOURD_SERVER_H
#define DETOURD_SERVER_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/accesslog.h"
#include "serve/worker.h"
#include "snapshot.h"

struct server;
struct counters;
struct listener_set;

/* A server that is not running yet (server_retire frees at once). */
struct server *server_new(void);
/* Binds every listener of cfg (taking passed sockets first) and starts the
 * workers; false with a message in err. cfg's reference passes to s. */
bool server_start(struct server *s, struct event_base *base, struct config *cfg, char *err,
                  size_t errlen);
/* Reload in two steps. server_prepare binds the addresses cfg adds (kept
 * addresses keep their sockets); NULL with a message in err if one cannot
 * be bound. Then either server_commit publishes cfg (its reference passes
 * to s) and the new listeners, or server_abort closes what was opened. */
struct listener_set *server_prepare(struct server *s, struct config *cfg, char *err, size_t errlen);
void server_commit(struct server *s, struct config *cfg, struct listener_set *set);
void server_abort(struct server *s, struct listener_set *set);
/* Graceful stop: close listeners, let connections finish, then leave the
 * main loop (at the latest after limits.shutdown_timeout). */
void server_stop(struct server *s);
/* Joins the workers and frees everything, s included. */
void server_free(struct server *s);
/* Frees p with free_fn once no worker can still be reading it. */
void server_retire(struct server *s, void *p, void (*free_fn)(void *));
/* Publishes a new access log file (NULL: none); the old one is closed
 * once no worker can still be writing to it. */
void server_set_alog(struct server *s, struct alog_file *f);
unsigned server_workers_for(const struct config *cfg);

/* ---- accessors (main thread) ---- */
/* The running config (NULL before server_start). */
const struct config *server_config(const struct server *s);
unsigned server_workers(const struct server *s);
unsigned server_connections(const struct server *s);
bool server_stopping(const struct server *s);
/* The request totals that outlive configs (counters.h); with
 * server_workers() rows of server_config()'s live counters. */
const struct counters *server_counters(const struct server *s);

#endif
