/* The redirect server: worker threads, listeners, the accept loop,
 * connection bookkeeping, hitless reload and graceful shutdown.
 *
 * Each worker is a thread with its own event_base; connections never move
 * between workers. The main thread owns signals, health checks and reload;
 * it talks to workers through a mailbox (an eventfd plus command bits) and
 * frees what workers might still read (old configs, old choices, old
 * listener sets) only after every worker has passed a barrier. */
#ifndef DETOURD_SERVER_H
#define DETOURD_SERVER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "accesslog.h"
#include "config.h"
#include "redirect.h"

#define SERVER_MAX_WORKERS 256

struct conn;
struct server;

/* One listen address: an fd per worker (SO_REUSEPORT), or one fd shared by
 * all workers (a socket passed by systemd). */
struct listener {
    struct listen_addr addr;
    int *fds;    /* nworkers entries */
    bool shared; /* fds are all the same socket */
    bool inherited;
};

struct listener_set {
    struct listener *l;
    size_t n;
};

struct lsock {
    int fd;
    struct event *ev;
};

struct worker {
    struct server *srv;
    unsigned id;
    pthread_t thread;
    bool inline_loop; /* the only worker: runs on the main thread's loop */
    bool done;
    struct event_base *base;
    /* mailbox */
    int efd;
    struct event *mbox;
    _Atomic unsigned cmds;
    _Atomic uint64_t acked; /* last barrier sequence seen */
    /* state owned by the worker thread */
    struct config *cfg; /* current config (a reference) */
    struct lsock *ls;
    size_t nls;
    bool accepting;
    bool paused; /* at max_connections or out of fds */
    bool stopping;
    struct event *resume_timer;
    struct conn *conns; /* open connections (doubly linked) */
    struct conn *free_conns;
    size_t nfree;
    size_t free_low; /* fewest idle connection objects since the last trim */
    uint64_t now_ms; /* monotonic, refreshed at each callback */
    struct date_cache date;
    _Atomic uint64_t *counts; /* this worker's row of cfg->counts */
    struct alog_buf alog;
    struct event *alog_timer;
};

struct retired {
    void *p;
    void (*free_fn)(void *);
    uint64_t seq;
    struct retired *next;
};

struct server {
    struct event_base *base; /* the main thread's loop */
    _Atomic(struct config *) cfg;
    _Atomic(struct listener_set *) lset;
    _Atomic(struct alog_file *) alog; /* NULL: no access log */
    struct worker *w;
    unsigned nw;
    _Atomic unsigned nconns;
    _Atomic bool stopping;
    /* main-thread mailbox: workers report barriers and exits */
    int efd;
    struct event *mbox;
    _Atomic unsigned exited;
    _Atomic uint64_t barrier_seq;
    struct retired *retired;
    struct event *barrier_ev; /* one barrier broadcast per batch of retires */
    /* called (main thread) when no worker uses a replaced config any more,
     * before it is released: its counters are folded into lasting totals */
    void (*config_retired)(void *ctx, const struct config *c, unsigned nrows);
    void *config_retired_ctx;
    struct event *stop_timer;
    bool running;
};

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
/* Joins the workers and frees everything. */
void server_free(struct server *s);
/* Frees p with free_fn once no worker can still be reading it. */
void server_retire(struct server *s, void *p, void (*free_fn)(void *));
/* Publishes a new access log file (NULL: none); the old one is closed
 * once no worker can still be writing to it. */
void server_set_alog(struct server *s, struct alog_file *f);
/* Writes the worker's buffered access log lines. */
void worker_alog_flush(struct worker *w);
unsigned server_workers_for(const struct config *cfg);

/* conn.c */
void conn_accepted(struct worker *w, int fd, const struct sockaddr_storage *peer,
                   socklen_t peerlen);
void conn_close(struct conn *c);
/* Shutdown: close idle connections now; busy ones end after their answer
 * (with Connection: close). */
void conn_shutdown_all(struct worker *w);
void conn_free_pool(struct worker *w);
/* Frees the idle connection objects no connection needed since the last
 * call (once a second), so a burst's high-water mark does not stay. */
void conn_trim_free(struct worker *w);

/* server.c, used by conn.c */
void server_conn_closed(struct worker *w);
uint64_t worker_now(struct worker *w);

#endif
