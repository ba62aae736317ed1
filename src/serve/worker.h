/* A worker: a thread with its own event loop, listening sockets and
 * connections (conn.h). It accepts, parses, answers redirects, and nothing
 * else, whatever the number of workers.
 *
 * The control plane (control/server.c) starts the workers, publishes what
 * they read in a struct serve_shared (the config, the listener set, the
 * access log file: immutable snapshots behind atomic pointers) and sends
 * them commands through each worker's mailbox (an eventfd plus command
 * bits). A worker never waits for the control plane: it takes a command
 * at its next wakeup and acknowledges barriers, so the control plane knows
 * when a retired snapshot can no longer be read and frees it. */
#ifndef DETOURD_WORKER_H
#define DETOURD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/accesslog.h"
#include "lib/netaddr.h"
#include "serve/conn.h"
#include "snapshot.h"

#define SERVER_MAX_WORKERS 256

/* One listen address: an fd per worker (SO_REUSEPORT), or one fd shared by
 * all workers (a socket passed by systemd). Built by control/listener.c. */
struct listener {
    struct listen_addr addr;
    struct tls_srv *tls; /* a reference to the config's TLS settings, or NULL */
    int *fds;            /* nfds entries */
    bool shared;         /* fds are all the same socket */
    bool inherited;
};

struct listener_set {
    struct listener *l;
    size_t n;
    unsigned nfds; /* sockets per listener: one per worker */
};

/* What the control plane publishes and every worker reads. */
struct serve_shared {
    _Atomic(struct config *) cfg;
    _Atomic(struct listener_set *) lset;
    _Atomic(struct alog_file *) alog; /* NULL: no access log */
    _Atomic unsigned nconns;          /* open connections, all workers */
    _Atomic uint64_t barrier_seq;     /* the last barrier sent */
    _Atomic unsigned exited;          /* workers that left their loop */
    int efd;                          /* the control plane's mailbox */
};

/* Mailbox commands (bits). */
enum {
    WORKER_CONFIG = 1u << 0,    /* take the published config */
    WORKER_LISTENERS = 1u << 1, /* make the accept events match the published set */
    WORKER_STOP = 1u << 2,      /* graceful stop: stop accepting, finish the connections */
    WORKER_EXIT = 1u << 3,      /* leave the loop now */
    WORKER_BARRIER = 1u << 4,   /* acknowledge barrier_seq */
};

struct lsock {
    int fd;
    struct event *ev;
    struct tls_srv *tls; /* the listener set's (serve/tls.h), or NULL */
};

struct worker {
    struct serve_shared *sh;
    unsigned id;
    pthread_t thread;
    bool started; /* the thread runs (or ran): join it */
    bool done;
    struct event_base *base;
    /* mailbox */
    int efd;
    struct event *mbox;
    _Atomic unsigned cmds;
    _Atomic uint64_t acked; /* last barrier sequence seen */
    /* state owned by the worker thread */
    struct lsock *ls;
    size_t nls;
    bool accepting;
    bool paused; /* at max_connections or out of fds */
    struct event *resume_timer;
    struct event *alog_timer;
    struct conn_set conns; /* its cfg, counter row and stop flag are the worker's */
};

/* Sets up w (zeroed) on the published state: its loop, mailbox and
 * accept events. False with errno set. */
bool worker_init(struct worker *w, struct serve_shared *sh, unsigned id);
/* Starts its thread; an errno value on failure, else 0. */
int worker_start(struct worker *w);
/* Sends commands (any thread). */
void worker_send(struct worker *w, unsigned cmds);
/* Waits for the thread to end (after WORKER_EXIT, or a finished stop). */
void worker_join(struct worker *w);
/* Closes its connections and frees what it holds (joined, or never
 * started). */
void worker_release(struct worker *w);

/* Wakes whoever reads efd. */
void worker_kick(int efd);

#endif
