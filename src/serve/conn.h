/* Client connections of one worker: read, parse, answer, discard bodies,
 * time out, close gracefully. conn.c owns the list of open connections,
 * the free lists (connection objects and request buffers) and the timeout
 * queues; the request path lives there and in redirect.c.
 *
 * The worker that owns a connection set (worker.c) keeps its first fields
 * current (the config, the counter row, the stop flag) and hears of each
 * closed connection through `closed`; conn.c never calls into worker.c. */
#ifndef DETOURD_CONN_H
#define DETOURD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "lib/accesslog.h"
#include "serve/redirect.h"
#include "snapshot.h"

struct event;
struct event_base;
struct conn;
struct conn_io;

/* The byte stream under a connection: plain TCP today. A TLS transport
 * implements the same three calls over SSL_read/SSL_write on the
 * non-blocking socket (WANT_READ and WANT_WRITE both answer
 * TRANSPORT_AGAIN: a connection's single edge-triggered event watches both
 * directions and retries whatever waits), and the parser and the answer
 * logic do not change. */
#define TRANSPORT_AGAIN (-1) /* nothing now; the connection's next event retries */
#define TRANSPORT_ERROR (-2) /* the stream is broken: close */
struct transport {
    const char *name;
    /* > 0: bytes read; 0: the peer ended its side; or TRANSPORT_* */
    ssize_t (*recv)(int fd, void *ctx, char *buf, size_t len);
    /* > 0: bytes written; or TRANSPORT_* . more: the connection's end
     * follows these bytes at once (the transport may hold them back to
     * send them with its closing bytes: TLS's close_notify) */
    ssize_t (*send)(int fd, void *ctx, const char *buf, size_t len, bool more);
    /* ends the write side after the last answer (a lingering close) */
    void (*shutdown)(int fd, void *ctx);
};
extern const struct transport transport_tcp;

/* Timeouts: one queue per duration, so a new deadline is appended at the
 * tail and the head expires first; one timer event per queue. A reload
 * that changes a timeout starts using another queue. */
#define CONN_TIMEOUT_QUEUES 4
struct conn_timeq {
    struct conn *head, *tail;
    uint64_t ms;    /* the duration its members were queued with */
    uint64_t armed; /* when its event fires (0: not armed) */
    struct event *ev;
    struct conn_set *s;
};

struct conn_set {
    /* the owner's: set before conn_set_init() and kept current */
    struct event_base *base;
    struct config *cfg;                     /* what new requests use (a reference) */
    _Atomic uint64_t *counts;               /* the owner's row of cfg's counters */
    _Atomic(struct alog_file *) *alog_file; /* the access log file (NULL: none) */
    bool stopping;                          /* graceful stop: no keep-alive */
    void (*closed)(struct conn_set *s);     /* after each close */
    /* shared by the connections */
    uint64_t now_ms;        /* clock_now_ms(), refreshed at each callback */
    struct date_cache date; /* the Date header, per second */
    struct alog_buf alog;   /* access log lines not written yet */
    struct conn *open;      /* open connections (doubly linked) */
    struct conn *free;      /* closed ones kept for reuse */
    size_t nfree;
    struct conn_io *free_io; /* request buffers kept for reuse */
    size_t nfree_io;
    /* the fewest objects each free list held since the last trim */
    size_t free_low, free_io_low;
    char *drop; /* where input after the last answer is read and dropped */
    struct conn_timeq tq[CONN_TIMEOUT_QUEUES];
};

/* Sets up the connection side of a zeroed set whose owner's fields are
 * filled in. */
bool conn_set_init(struct conn_set *s);
/* Closes every connection and frees the set (the owner's fields stay). */
void conn_set_free(struct conn_set *s);
static inline bool conn_set_empty(const struct conn_set *s)
{
    return !s->open;
}

struct tls_srv;
/* Takes an accepted socket; reads and answers what it brought at once.
 * tls: the listener's TLS settings (tls.h), or NULL for plain HTTP. */
void conn_accepted(struct conn_set *s, int fd, const struct sockaddr_storage *peer,
                   socklen_t peerlen, struct tls_srv *tls);
/* Frees the connection objects and request buffers no connection needed
 * since the last call (once a second), so a burst's high-water mark does
 * not stay resident. */
void conn_trim_free(struct conn_set *s);
/* Shutdown: close idle connections now; busy ones end after their answer
 * (with Connection: close). */
void conn_shutdown_all(struct conn_set *s);
/* Writes the buffered access log lines. */
void conn_alog_flush(struct conn_set *s);

#endif
