/* The redirect server: listeners, the accept loop, connection bookkeeping,
 * graceful shutdown. One worker = one event_base; connections never move
 * between workers. */
#ifndef DETOURD_SERVER_H
#define DETOURD_SERVER_H

#include <event2/event.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "redirect.h"

struct conn;

struct lsock {
    int fd;
    struct event *ev;
};

struct server;

struct worker {
    struct server *srv;
    struct event_base *base;
    struct lsock *ls;
    size_t nls;
    bool accepting; /* listen events are added */
    bool paused;    /* at max_connections or out of fds */
    struct event *resume_timer;
    struct conn *conns; /* all open connections (doubly linked) */
    struct conn *free_conns;
    size_t nfree;
    uint64_t now_ms; /* monotonic, refreshed at each callback */
    struct date_cache date;
    uint64_t requests; /* answered requests (all statuses) */
};

struct server {
    struct config *cfg; /* current config (workers read it) */
    struct worker w;    /* a single worker for now */
    _Atomic unsigned nconns;
    bool stopping;
    struct event *stop_timer;
};

/* Binds every listener of cfg; returns false with a message in err. */
bool server_init(struct server *s, struct event_base *base, struct config *cfg, char *err,
                 size_t errlen);
/* Graceful stop: close listeners, let connections finish, then leave the
 * loop (at the latest after limits.shutdown_timeout). */
void server_stop(struct server *s);
void server_free(struct server *s);

/* conn.c */
void conn_accepted(struct worker *w, int fd, const struct sockaddr_storage *peer,
                   socklen_t peerlen);
void conn_close(struct conn *c);
/* Shutdown: close idle connections now; busy ones end after their answer
 * (with Connection: close). */
void conn_shutdown_all(struct worker *w);
void conn_free_pool(struct worker *w);

/* server.c, used by conn.c */
void server_conn_closed(struct worker *w);
uint64_t worker_now(struct worker *w);

#endif
