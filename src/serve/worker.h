/* A worker: a thread with its own event loop, listening sockets and
 * connections (conn.h). Shared by server.c, which runs workers, and conn.c,
 * which serves their connections; nothing else includes it. */
#ifndef DETOURD_WORKER_H
#define DETOURD_WORKER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/accesslog.h"
#include "snapshot.h"
#include "serve/conn.h"
#include "serve/redirect.h"

struct server;

struct lsock {
    int fd;
    struct event *ev;
    struct tls_srv *tls; /* the listener set's (tls.h), or NULL */
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
    struct conn_set conns;
    uint64_t now_ms; /* clock_now_ms(), refreshed at each callback */
    struct date_cache date;
    _Atomic uint64_t *counts; /* this worker's row of cfg's counters */
    struct alog_buf alog;
    struct event *alog_timer;
};

/* server.c, for conn.c: a connection of w was closed. */
void worker_conn_closed(struct worker *w);
/* Writes the worker's buffered access log lines. */
void worker_alog_flush(struct worker *w);

#endif
