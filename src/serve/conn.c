/* One client connection: read, parse, answer, discard bodies, time out,
 * close gracefully. The whole request path lives here and in redirect.c.
 *
 * Memory: an idle keep-alive connection holds only its struct conn (a few
 * hundred bytes, its event embedded). The input and output buffers, the
 * parsed request and a held answer live in a struct conn_io that a
 * connection takes from the worker's free list when bytes arrive and gives
 * back as soon as it is idle again, as nginx does with its header buffer.
 * Timeouts are queues per duration (conn.h), not a timer per connection. */
#include "autoconf.h"

#include "serve/conn.h"

#include <errno.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "serve/acme_live.h"
#include "serve/counters.h"
#include "serve/http_parse.h"
#include "lib/log.h"
#include "serve/route.h"
#include "serve/select.h"
#include "serve/tls.h"
#include "lib/lit.h"

#define OUT_INITIAL    4096
#define OUT_KEEP       (16 * 1024) /* a buffer given back keeps at most this much output room */
#define OUT_HIGH_WATER (64 * 1024) /* stop answering pipelined requests above */
#define IN_SLACK       1024        /* input room beyond max_header_bytes */
#define LINGER_MS      5000        /* a lingering close ends after this without input */
#define LINGER_MAX_MS  30000       /* ... and this long after it began in any case */
#define DROP_BYTES     16384       /* reads of input that is dropped */
#define MAX_FREE_CONNS 1024
#define MAX_FREE_IO    64
#define TRIM_MIN_BYTES (256 * 1024) /* freed by a trim before malloc_trim runs */
#define READ_ROUNDS    4            /* full reads per wakeup before others get a turn */
#define NO_QUEUE       0xff

/* What a connection is doing; each state names its timeout. */
enum conn_state {
    CS_IDLE,         /* between requests, nothing buffered: idle_timeout */
    CS_HEAD,         /* a request head is arriving: header_timeout */
    CS_BODY_LENGTH,  /* discarding a Content-Length body: idle_timeout */
    CS_BODY_CHUNKED, /* discarding a chunked body; its answer is held: idle_timeout */
    CS_LINGER,       /* answered, write side shut: reading and dropping, LINGER_MS */
};

/* What happens once the queued output is written. */
enum conn_after {
    AFTER_KEEP,   /* wait for the next request */
    AFTER_CLOSE,  /* close */
    AFTER_LINGER, /* shut the write side and drop input for a while, then close:
                   * unread input would turn close() into a reset that can
                   * destroy the answer */
};

/* An answer waiting for the end of a chunked body: only then is it known
 * whether the connection can stay open. */
struct held {
    struct config *cfg; /* keeps pool and tmpl alive; NULL: nothing held */
    const struct pool *pool;
    const struct tmpl *tmpl;
    char *path;
    size_t len, cap;
    bool head;
    uint8_t minor;
    char method[16];
};

/* What a connection needs only while a request is in progress. */
struct conn_io {
    struct conn_io *next; /* in the free list */
    struct http_req req;
    uint64_t body_left;
    struct http_chunked chunk;
    struct held held;
    char *out;
    size_t out_len, out_off, out_cap;
    size_t in_len, in_cap;
    char in[];
};

union conn_peer {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

struct conn {
    struct event ev; /* read and write, edge-triggered, added once */
    struct conn_set *s;
    const struct transport *tp;
    void *tctx; /* the transport's state (none for TCP) */
    struct conn_io *io;
    struct conn *prev, *next;   /* open connections; next: free list */
    struct conn *tprev, *tnext; /* its timeout queue */
    uint64_t deadline;          /* monotonic ms */
    uint64_t qkey;              /* the deadline its queue position was set for (<= deadline) */
    uint64_t linger_end;        /* CS_LINGER: when it closes even if input still comes */
    union conn_peer peer;
    int fd;
    uint8_t st;          /* enum conn_state */
    uint8_t after;       /* enum conn_after */
    uint8_t tq;          /* timeout queue, or NO_QUEUE */
    bool registered : 1; /* ev is added */
    bool backlogged : 1; /* reading paused: the client does not read its answers */
    bool eof : 1;        /* the client ended its side */
    bool nodelay : 1;    /* TCP_NODELAY set (only once a write was partial) */
    bool tls : 1;        /* tp is transport_tls, tctx its SSL */
    bool timed_out : 1;  /* closed by its deadline */
    bool wstall : 1;     /* output waits for the client: its idle_timeout runs */
};

static void on_event(evutil_socket_t fd, short what, void *arg);
static bool conn_process(struct conn *c);
static void conn_close(struct conn *c);
static void conn_end(struct conn *c);

/* ---- the plain TCP transport ---- */

static inline ssize_t tcp_recv(int fd, void *ctx, char *buf, size_t len)
{
    (void)ctx;
    ssize_t n;
    while ((n = recv(fd, buf, len, 0)) < 0 && errno == EINTR) continue;
    if (n >= 0) return n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
}

static inline ssize_t tcp_send(int fd, void *ctx, const char *buf, size_t len, bool more)
{
    (void)ctx, (void)more;
    ssize_t n;
    while ((n = send(fd, buf, len, MSG_NOSIGNAL)) < 0 && errno == EINTR) continue;
    if (n > 0) return n;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
}

static void tcp_shutdown(int fd, void *ctx)
{
    (void)ctx;
    shutdown(fd, SHUT_WR);
}

const struct transport transport_tcp = {"tcp", tcp_recv, tcp_send, tcp_shutdown};

/* Plain TCP is called directly (and inlined); another transport through
 * its table. */
static inline ssize_t conn_recv(struct conn *c, char *buf, size_t len)
{
    if (c->tp == &transport_tcp) return tcp_recv(c->fd, NULL, buf, len);
    return c->tp->recv(c->fd, c->tctx, buf, len);
}

static inline ssize_t conn_send(struct conn *c, const char *buf, size_t len)
{
    if (c->tp == &transport_tcp) return tcp_send(c->fd, NULL, buf, len, false);
    /* after the last answer the close follows at once (conn_end, or the
     * lingering close's shutdown) */
    return c->tp->send(c->fd, c->tctx, buf, len, c->after != AFTER_KEEP);
}

static const struct limits *limits_of(const struct conn *c)
{
    return &c->s->cfg->limits;
}

static bool out_pending(const struct conn *c)
{
    return c->io && c->io->out_off < c->io->out_len;
}

/* ---- request buffers: held only while a request is in progress ---- */

static size_t in_size(const struct conn_set *s)
{
    return s->cfg->limits.max_header_bytes + IN_SLACK;
}

static void io_destroy(struct conn_io *io)
{
    free(io->out);
    free(io->held.path);
    free(io);
}

static struct conn_io *io_new(size_t in_cap)
{
    struct conn_io *io = malloc(sizeof(*io) + in_cap);
    if (!io) return NULL;
    io->out = malloc(OUT_INITIAL);
    if (!io->out) {
        free(io);
        return NULL;
    }
    io->out_cap = OUT_INITIAL;
    io->in_cap = in_cap;
    io->held.path = NULL;
    io->held.cap = 0;
    return io;
}

static inline bool io_attach(struct conn *c)
{
    struct conn_set *s = c->s;
    size_t want = in_size(c->s);
    struct conn_io *io;
    while ((io = s->free_io) && io->in_cap != want) { /* a reload changed max_header_bytes */
        s->free_io = io->next;
        s->nfree_io--;
        io_destroy(io);
    }
    if (io) {
        s->free_io = io->next;
        if (--s->nfree_io < s->free_io_low) s->free_io_low = s->nfree_io;
    } else if (!(io = io_new(want))) {
        return false;
    }
    io->in_len = io->out_len = io->out_off = 0;
    io->held.cfg = NULL;
    /* a head in progress (CS_HEAD) starts here; an idle connection's next
     * head starts in conn_consume */
    if (c->st == CS_HEAD) http_req_init(&io->req);
    c->io = io;
    return true;
}

/* (io_attach drops a kept buffer whose input size a reload changed.) */
static inline void io_release(struct conn *c)
{
    struct conn_io *io = c->io;
    if (!io) return;
    c->io = NULL;
    if (io->held.cfg) config_unref(io->held.cfg);
    io->held.cfg = NULL;
    struct conn_set *s = c->s;
    if (s->nfree_io >= MAX_FREE_IO) {
        io_destroy(io);
        return;
    }
    if (io->out_cap > OUT_KEEP) { /* a pipelined burst grew it */
        char *p = realloc(io->out, OUT_INITIAL);
        if (p) {
            io->out = p;
            io->out_cap = OUT_INITIAL;
        }
    }
    io->next = s->free_io;
    s->free_io = io;
    s->nfree_io++;
}

/* A reload raised max_header_bytes while a head is arriving. */
static struct conn_io *io_grow(struct conn *c)
{
    size_t want = in_size(c->s);
    struct conn_io *bigger = realloc(c->io, sizeof(*bigger) + want);
    if (bigger) {
        c->io = bigger;
        bigger->in_cap = want;
    }
    return c->io;
}

/* Gives the buffer back when nothing is in progress. */
static void io_release_if_idle(struct conn *c)
{
    if (c->io && (c->st == CS_IDLE || c->st == CS_HEAD) && c->io->in_len == 0 && !out_pending(c) &&
        c->after == AFTER_KEEP)
        io_release(c);
}

/* ---- events: one per connection, for both directions ---- */

static void conn_register(struct conn *c)
{
    if (c->registered) return;
    event_add(&c->ev, NULL);
    c->registered = true;
}

/* With edge-triggered events, a reader that stops before the socket is
 * drained (fairness, a paused or lingering connection) must wake itself.
 * The event is added first: libevent's event_add() of an event that is
 * already active does not reach epoll, and the connection would never hear
 * of its socket again (found by a 2 MB body that filled READ_ROUNDS reads
 * in the read at accept time). */
static void read_again(struct conn *c)
{
    conn_register(c);
    event_active(&c->ev, EV_READ, 0);
}

/* ---- timeouts ---- */

static void timeq_arm(struct conn_timeq *q, uint64_t at)
{
    uint64_t now = q->s->now_ms, ms = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(q->ev, &tv);
    q->armed = at;
}

static void timeout_unlink(struct conn *c)
{
    if (c->tq == NO_QUEUE) return;
    struct conn_timeq *q = &c->s->tq[c->tq];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        q->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        q->tail = c->tprev;
    c->tq = NO_QUEUE;
}

static struct conn_timeq *timeq_for(struct conn_set *s, uint64_t ms)
{
    struct conn_timeq *q = s->tq, *empty = NULL;
    for (int i = 0; i < CONN_TIMEOUT_QUEUES; i++) {
        if (q[i].ms == ms) return &q[i];
        if (!q[i].head && !empty) empty = &q[i];
    }
    if (empty) {
        empty->ms = ms;
        return empty;
    }
    return &q[0]; /* durations of several reloads at once: the sorted insert copes */
}

/* Puts c in q, ordered by key (almost always last: a queue holds one
 * duration). */
static void timeq_insert(struct conn_timeq *q, struct conn *c, uint64_t key)
{
    struct conn *prev = q->tail;
    while (prev && prev->qkey > key) prev = prev->tprev;
    c->qkey = key;
    c->tq = (uint8_t)(q - q->s->tq);
    c->tprev = prev;
    c->tnext = prev ? prev->tnext : q->head;
    if (c->tnext)
        c->tnext->tprev = c;
    else
        q->tail = c;
    if (prev)
        prev->tnext = c;
    else
        q->head = c;
    if (!q->armed || key < q->armed) timeq_arm(q, key);
}

/* The connection times out ms from now (whatever its earlier deadline).
 * Staying in the same queue, it only moves its deadline: the queue's timer
 * finds it later and puts it back at the tail (once per timeout, not once
 * per request). */
static void set_timeout(struct conn *c, uint64_t ms)
{
    struct conn_set *s = c->s;
    uint64_t deadline = s->now_ms + ms;
    if (c->tq != NO_QUEUE && s->tq[c->tq].ms == ms && deadline >= c->deadline) {
        c->deadline = deadline;
        return;
    }
    timeout_unlink(c);
    c->deadline = deadline;
    timeq_insert(timeq_for(s, ms), c, deadline);
}

static void conn_expire(struct conn *c);

static void on_timeq(evutil_socket_t fd, short what, void *arg)
{
    struct conn_timeq *q = arg;
    struct conn_set *s = q->s;
    (void)fd;
    (void)what;
    s->now_ms = clock_now_ms();
    q->armed = 0;
    struct conn *c;
    while ((c = q->head) && c->qkey <= s->now_ms) {
        timeout_unlink(c);
        if (c->deadline > s->now_ms)
            timeq_insert(q, c, c->deadline); /* it was active since it was queued */
        else
            conn_expire(c);
    }
    if (q->head && (!q->armed || q->head->qkey < q->armed)) timeq_arm(q, q->head->qkey);
}

/* ---- output ---- */

static bool out_grow(struct conn *c, size_t need)
{
    struct conn_io *io = c->io;
    size_t cap = io->out_cap ? io->out_cap : OUT_INITIAL;
    while (cap < io->out_len + need) cap *= 2;
    char *p = realloc(io->out, cap);
    if (!p) return false;
    io->out = p;
    io->out_cap = cap;
    return true;
}

static inline bool out_reserve(struct conn *c, size_t need)
{
    const struct conn_io *io = c->io;
    return io->out_len + need <= io->out_cap || out_grow(c, need);
}

static void start_linger(struct conn *c)
{
    c->tp->shutdown(c->fd, c->tctx);
    c->st = CS_LINGER;
    io_release(c); /* what is still buffered is never answered */
    c->backlogged = false;
    conn_register(c);
    read_again(c); /* drain what arrived while the answer was written */
    c->linger_end = c->s->now_ms + LINGER_MAX_MS;
    set_timeout(c, LINGER_MS);
}

/* Input keeps coming (a large body still on its way): as nginx's
 * lingering_timeout and lingering_time, each read gives LINGER_MS more,
 * up to LINGER_MAX_MS in all, so a slow sender still reads its answer
 * instead of a reset. */
static void linger_more(struct conn *c)
{
    uint64_t now = c->s->now_ms;
    if (now + LINGER_MS <= c->linger_end) set_timeout(c, LINGER_MS);
}

/* An answer normally leaves in one write after the request that asked for
 * it carried the ACK of the previous one, so Nagle never holds it and the
 * setsockopt is saved. Split writes and pipelined batches could wait for a
 * delayed ACK: those connections get TCP_NODELAY. */
static void set_nodelay(struct conn *c)
{
    if (c->nodelay) return;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->nodelay = true;
}

/* Writes what is buffered, then does what c->after says. Returns false if
 * the connection was closed. */
static bool conn_flush(struct conn *c)
{
    struct conn_io *io = c->io;
    bool wrote = false;
    while (io->out_off < io->out_len) {
        ssize_t n = conn_send(c, io->out + io->out_off, io->out_len - io->out_off);
        if (n > 0) {
            io->out_off += (size_t)n;
            wrote = true;
            if (io->out_off < io->out_len) set_nodelay(c);
            continue;
        }
        if (n == TRANSPORT_AGAIN) {
            conn_register(c);
            /* a stalled reader gets idle_timeout from the stall, and again
             * whenever it takes some of its answers; a wakeup that writes
             * nothing (input arriving) does not extend it */
            if (wrote || !c->wstall) set_timeout(c, limits_of(c)->idle_timeout_ms);
            c->wstall = true;
            return true;
        }
        conn_close(c);
        return false;
    }
    c->wstall = false;
    io->out_len = io->out_off = 0;
    if (c->after == AFTER_CLOSE) {
        conn_end(c);
        return false;
    }
    if (c->after == AFTER_LINGER) start_linger(c);
    return true;
}

/* ---- answering ---- */

static struct alog_str span_str(const char *base, struct http_span s, bool present)
{
    struct alog_str v = {present && base ? base + s.off : NULL, s.len};
    return v;
}

static void peer_storage(const struct conn *c, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &c->peer, sizeof(c->peer));
}

static void log_entry(struct conn *c, struct alog_entry *e)
{
    struct conn_set *s = c->s;
    alog_append(&s->alog, e, s->cfg->access_log_json, s->date.sec);
    if (s->alog.len >= ALOG_FLUSH_AT) conn_alog_flush(s);
}

/* One access log line; base is NULL when no request line was parsed. */
static void log_access(struct conn *c, const char *base, const struct http_req *r, unsigned status,
                       size_t bytes, const struct pool *p, const char *region)
{
    const struct config *cfg = c->s->cfg;
    bool line = base && r->method.len;
    struct sockaddr_storage ss;
    peer_storage(c, &ss);
    struct alog_entry e = {
        .peer = &ss,
        .method = span_str(base, r->method, line),
        .target = span_str(base, r->target, line),
        .host = span_str(base, r->host, line && r->host.len),
        .minor = r->minor,
        .status = status,
        .bytes = bytes,
        .pool = p ? p->name : NULL,
        .region = region,
    };
    if (cfg->capture_ua >= 0)
        e.ua = span_str(base, r->capture[cfg->capture_ua],
                        line && (r->captured >> cfg->capture_ua & 1));
    if (cfg->capture_referer >= 0)
        e.referer = span_str(base, r->capture[cfg->capture_referer],
                             line && (r->captured >> cfg->capture_referer & 1));
    log_entry(c, &e);
}

/* The head is gone: logs the method and path that were kept. */
static void log_access_held(struct conn *c, size_t bytes)
{
    const struct held *h = &c->io->held;
    struct sockaddr_storage ss;
    peer_storage(c, &ss);
    struct alog_entry e = {
        .peer = &ss,
        .method = {h->method, strlen(h->method)},
        .target = {h->path, h->len},
        .minor = h->minor,
        .status = h->tmpl->status,
        .bytes = bytes,
        .pool = h->pool->name,
        .region = h->tmpl->region,
    };
    log_entry(c, &e);
}

/* Queues an error answer; the connection closes (lingering) after it.
 * base: the request's bytes, for the access log (NULL if unparsed). An
 * answer to HEAD has the same head and no body. */
static void answer_error(struct conn *c, unsigned status, const char *base)
{
    struct conn_set *s = c->s;
    struct conn_io *io = c->io;
    const struct chunk *hsts = c->tls ? tls_conn_hsts(c->tctx) : NULL;
    c->after = AFTER_CLOSE;
    if (!out_reserve(c, REDIRECT_ERROR_MAX + (hsts ? hsts->len : 0))) return; /* just close */
    c->after = AFTER_LINGER;
    date_cache_update(&s->date, time(NULL));
    char *o = io->out + io->out_len;
    size_t n = redirect_error(o, status, io->req.is_head, &s->date, hsts);
    io->out_len += n;
    counters_inc(s->counts, counters_error_slot(s->cfg, status));
    if (s->cfg->access_log) log_access(c, base, &io->req, status, n, NULL, NULL);
    log_debug("client error %u: %s", status, io->req.reason ? io->req.reason : "");
}

/* A plain-HTTP request on a TLS port: the connection goes on as plain TCP
 * for one plain-text answer, then closes (lingering over the request,
 * which is still unread: the transport only peeked at it). */
static void answer_plain_on_tls(struct conn *c)
{
    static const char answer[] = "HTTP/1.1 400 Bad Request\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 55\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "This port speaks HTTPS: use https:// for this address.\n";
    tls_conn_free(c->tctx, false, &c->peer.sa);
    c->tctx = NULL;
    c->tp = &transport_tcp;
    c->tls = false;
    c->after = AFTER_CLOSE;
    if (!c->io && !io_attach(c)) return;
    if (!out_reserve(c, sizeof(answer) - 1)) return;
    memcpy(c->io->out + c->io->out_len, answer, sizeof(answer) - 1);
    c->io->out_len += sizeof(answer) - 1;
    c->after = AFTER_LINGER;
}

/* The key of balance: hash — a request header, or the client's address
 * (also when the header is missing). */
static uint64_t hash_key(const struct conn *c, const struct pool *p, const char *base,
                         const struct http_req *r)
{
    int h = p->hash_header;
    if (h >= 0 && (r->captured >> h & 1))
        return select_key_hash(base + r->capture[h].off, r->capture[h].len);
    if (c->peer.sa.sa_family == AF_INET6)
        return select_key_hash(&c->peer.in6.sin6_addr, sizeof(c->peer.in6.sin6_addr));
    return select_key_hash(&c->peer.in4.sin_addr, sizeof(c->peer.in4.sin_addr));
}

/* Routes the request and picks the region: the template to answer with
 * (counted here, when the answer is decided: an answer held for a chunked
 * body counts in the config it was chosen from, which a reload folds into
 * the lasting totals), or NULL after queuing a 421 when no pool takes the
 * Host. */
static const struct tmpl *choose(struct conn *c, const char *base, const struct http_req *r,
                                 const struct pool **pool)
{
    struct conn_set *s = c->s;
    const struct config *cfg = s->cfg;
    const struct pool *p;
    if (r->host.len || r->form == HTTP_ABSOLUTE || r->form == HTTP_AUTHORITY)
        p = route_lookup(cfg, base + r->host.off, r->host.len);
    else
        p = cfg->default_pool;
    if (!p) {
        log_debug("no pool for Host '%.*s'", (int)(r->host.len < 256 ? r->host.len : 256),
                  base + r->host.off);
        answer_error(c, 421, base);
        return NULL;
    }
    struct choice *choice = atomic_load_explicit(&p->sel->cur, memory_order_acquire);
    uint64_t key = choice->action == CHOICE_HASH ? hash_key(c, p, base, r) : 0;
    enum choice_action action;
    int idx = select_next(p, choice, key, &action);
    *pool = p;
    const struct tmpl *t = idx >= 0                    ? &p->regions[idx].tmpl
                           : action == CHOICE_FALLBACK ? &p->fallback
                                                       : &p->reject;
    counters_inc(s->counts, t->slot);
    return t;
}

/* Queues the answer; the connection closes after it unless keep. */
static void emit(struct conn *c, const struct pool *p, const struct tmpl *t, const char *path,
                 size_t plen, bool head_only, uint8_t minor, bool keep)
{
    struct conn_io *io = c->io;
    size_t max = redirect_max(p, t, plen);
    /* Strict-Transport-Security: only on a TLS listener with hsts: */
    const struct chunk *hsts = NULL;
    if (c->tls && (hsts = tls_conn_hsts(c->tctx))) max += hsts->len;
    if (!out_reserve(c, max)) {
        c->after = AFTER_CLOSE;
        return;
    }
    enum conn_hdr ch = !keep ? CONN_HDR_CLOSE : minor == 0 ? CONN_HDR_KEEP : CONN_HDR_NONE;
    io->out_len +=
        redirect_build(io->out + io->out_len, p, t, path, plen, head_only, ch, &c->s->date, hsts);
    if (!keep && c->after == AFTER_KEEP) c->after = AFTER_CLOSE;
}

/* An ACME http-01 challenge (RFC 8555 8.3) on a plain listener: GET or
 * HEAD of ACME_CHALLENGE_PREFIX + a pending token is answered with its key
 * authorization, whatever the Host (the validator sends the name being
 * validated, which no pool need know). True if answered (or, out of
 * memory, the connection set to close); anything else is routed as usual.
 * The caller compared the path's prefix already: only challenge paths
 * reach the table. */
static bool answer_http01(struct conn *c, const char *base, const struct http_req *r, bool keep)
{
    if (!r->is_head && !(r->method.len == 3 && memcmp(base + r->method.off, "GET", 3) == 0))
        return false;
    const struct acme_live_token *tk =
        acme_live_http01(acme_live_get(), base + r->path.off, r->path.len);
    if (!tk) return false;
    struct conn_set *s = c->s;
    struct conn_io *io = c->io;
    if (!out_reserve(c, REDIRECT_TEXT_MAX + tk->keyauth_len)) {
        c->after = AFTER_CLOSE;
        return true;
    }
    enum conn_hdr ch = !keep ? CONN_HDR_CLOSE : r->minor == 0 ? CONN_HDR_KEEP : CONN_HDR_NONE;
    size_t n = redirect_text(io->out + io->out_len, tk->keyauth, tk->keyauth_len, r->is_head, ch,
                             &s->date);
    io->out_len += n;
    if (!keep && c->after == AFTER_KEEP) c->after = AFTER_CLOSE;
    counters_inc(s->counts, counters_error_slot(s->cfg, 200));
    if (s->cfg->access_log) log_access(c, base, r, 200, n, NULL, NULL);
    log_debug("ACME http-01 challenge answered");
    return true;
}

/* Keeps what the answer needs until the chunked body has been skipped. */
static bool hold(struct conn *c, const struct pool *p, const struct tmpl *t, const char *path,
                 const struct http_req *r)
{
    struct held *h = &c->io->held;
    size_t n = r->path.len;
    if (n > h->cap) {
        char *np = realloc(h->path, n);
        if (!np) return false;
        h->path = np;
        h->cap = n;
    }
    if (n) memcpy(h->path, path, n); /* h->path is NULL until a first path */
    h->len = n;
    h->cfg = config_ref(c->s->cfg);
    h->pool = p;
    h->tmpl = t;
    h->head = r->is_head;
    h->minor = r->minor;
    size_t ml = r->method.len < sizeof(h->method) - 1 ? r->method.len : sizeof(h->method) - 1;
    memcpy(h->method, path - r->path.off + r->method.off, ml);
    h->method[ml] = '\0';
    return true;
}

static void emit_held(struct conn *c, bool keep)
{
    struct conn_io *io = c->io;
    struct held *h = &io->held;
    date_cache_update(&c->s->date, time(NULL));
    size_t before = io->out_len;
    emit(c, h->pool, h->tmpl, h->path, h->len, h->head, h->minor, keep && !c->s->stopping);
    if (c->s->cfg->access_log) log_access_held(c, io->out_len - before);
    config_unref(h->cfg);
    h->cfg = NULL;
}

/* A complete head starts at base: answer it and set up body handling.
 * avail is what is buffered from base on. */
static void on_head(struct conn *c, const char *base, size_t avail)
{
    struct conn_io *io = c->io;
    const struct http_req *r = &io->req;
    const struct limits *lim = limits_of(c);
    bool body = r->chunked || (r->has_length && r->content_length > 0);
    bool keep = r->keep_alive && !c->s->stopping;
    /* A client that waits for 100 Continue gets the redirect at once and
     * never sends the body; one whose body is too large to skip gets the
     * redirect and a lingering close. Either way the connection ends. */
    if (body &&
        (r->expect_continue || (r->has_length && r->content_length > lim->max_body_discard)))
        keep = false;
    const struct pool *p = NULL;
    const struct tmpl *t = NULL;
    /* the one thing a plain request pays for ACME: a prefix compare */
    if (!c->tls && r->path.len > ACME_CHALLENGE_PREFIX_LEN &&
        memcmp(base + r->path.off, ACME_CHALLENGE_PREFIX, ACME_CHALLENGE_PREFIX_LEN) == 0 &&
        answer_http01(c, base, r, keep && !r->chunked)) {
        /* answered now (a chunked body is not held for it: lingered over) */
    } else {
        t = choose(c, base, r, &p);
    }
    if (t && r->chunked && keep) {
        if (hold(c, p, t, base + r->path.off, r)) {
            c->st = CS_BODY_CHUNKED;
            http_chunked_init(&io->chunk);
            return;
        }
        keep = false; /* out of memory: answer now, linger over the body */
    }
    if (t) {
        size_t before = io->out_len;
        emit(c, p, t, base + r->path.off, r->path.len, r->is_head, r->minor, keep);
        if (c->s->cfg->access_log)
            log_access(c, base, r, t->status, io->out_len - before, p, t->region);
    }
    if (c->after != AFTER_KEEP) {
        /* unread bytes (a body, pipelined requests): linger */
        if (body || avail > r->head_len) c->after = AFTER_LINGER;
        return;
    }
    if (body) {
        c->st = CS_BODY_LENGTH;
        io->body_left = r->content_length;
    }
}

/* Answers the complete requests that are buffered, up to OUT_HIGH_WATER
 * bytes of output. Returns true if any input was consumed. */
static bool conn_consume(struct conn *c)
{
    struct conn_set *s = c->s;
    struct conn_io *io = c->io;
    const struct limits *lim = limits_of(c);
    const struct config *cfg = s->cfg;
    const struct http_limits hl = {lim->max_header_bytes, lim->max_uri_bytes, cfg->capture,
                                   cfg->ncapture};
    size_t pos = 0;
    unsigned answered = 0;
    bool dated = false;

    while (pos < io->in_len && c->after == AFTER_KEEP && io->out_len < OUT_HIGH_WATER) {
        const char *buf = io->in + pos;
        size_t avail = io->in_len - pos;
        bool first = c->st == CS_IDLE; /* the first bytes of a head */
        switch ((enum conn_state)c->st) {
        case CS_IDLE:
            http_req_init(&io->req);
            c->st = CS_HEAD;
            /* fall through */
        case CS_HEAD: {
            enum http_result res = http_parse_head(&io->req, buf, avail, &hl);
            if (res == HTTP_AGAIN) {
                if (first) set_timeout(c, lim->header_timeout_ms); /* from its first byte */
                goto out;
            }
            if (res == HTTP_ERROR) {
                answer_error(c, io->req.status, buf);
                goto out;
            }
            if (!dated) {
                date_cache_update(&s->date, time(NULL));
                dated = true;
            }
            c->st = CS_IDLE;
            on_head(c, buf, avail);
            if (++answered == 2) set_nodelay(c); /* pipelining */
            pos += io->req.head_len;
            break;
        }
        case CS_BODY_LENGTH: {
            size_t n = avail < io->body_left ? avail : (size_t)io->body_left;
            io->body_left -= n;
            pos += n;
            if (io->body_left == 0) c->st = CS_IDLE;
            break;
        }
        case CS_BODY_CHUNKED: {
            size_t used;
            enum http_result res = http_chunked_skip(&io->chunk, buf, avail, &used);
            pos += used;
            if (res == HTTP_ERROR || io->chunk.total > lim->max_body_discard) {
                /* too much (or broken framing) to skip: answer and close */
                emit_held(c, false);
                c->after = AFTER_LINGER;
                goto out;
            }
            if (res == HTTP_DONE) {
                emit_held(c, true);
                c->st = CS_IDLE;
            }
            break;
        }
        case CS_LINGER: pos = io->in_len; break;
        }
    }
out:
    if (c->after != AFTER_KEEP) {
        io->in_len = 0; /* nothing after the last answer is read */
    } else if (pos) {
        memmove(io->in, io->in + pos, io->in_len - pos);
        io->in_len -= pos;
    }
    return pos > 0;
}

/* Parses and answers what is buffered. Returns false if c was closed. */
static bool conn_process(struct conn *c)
{
    const struct limits *lim = limits_of(c);
    for (;;) {
        bool progress = conn_consume(c);
        if (out_pending(c)) {
            if (!conn_flush(c)) return false;
        } else if (c->after == AFTER_CLOSE) {
            conn_end(c);
            return false;
        } else if (c->after == AFTER_LINGER) {
            start_linger(c);
        }
        if (c->st == CS_LINGER) return true; /* the linger owns the deadline */
        if (out_pending(c)) {
            if (c->io->out_len >= OUT_HIGH_WATER && c->after == AFTER_KEEP)
                c->backlogged = true; /* the client does not read its answers */
            return true;              /* the write side owns the deadline */
        }
        /* all written: buffered pipelined requests may still be waiting */
        if (!progress || c->io->in_len == 0) break;
    }
    if (c->st == CS_IDLE && c->io->in_len) {
        set_timeout(c, lim->header_timeout_ms); /* the next request began */
    } else if (c->st == CS_IDLE) {
        if (c->s->stopping) {
            conn_end(c);
            return false;
        }
        io_release(c);
        set_timeout(c, lim->idle_timeout_ms);
    } else if (c->st != CS_HEAD) {
        set_timeout(c, lim->idle_timeout_ms); /* a body: progress restarts its timeout */
    } /* CS_HEAD: header_timeout runs from the head's first byte */
    return true;
}

/* Reads what the socket has. Returns false if c was closed. */
static bool conn_read(struct conn *c)
{
    for (int rounds = 0; rounds < READ_ROUNDS; rounds++) {
        /* after the last answer everything read is dropped */
        bool drop = c->after != AFTER_KEEP || c->st == CS_LINGER;
        char *buf;
        size_t room;
        if (drop) {
            buf = c->s->drop;
            room = DROP_BYTES;
        } else {
            if (!c->io && !io_attach(c)) {
                log_warn("out of memory: closing a connection");
                conn_close(c);
                return false;
            }
            struct conn_io *io = c->io;
            if (io->in_len && io->in_cap < in_size(c->s)) io = io_grow(c);
            buf = io->in + io->in_len;
            room = io->in_cap - io->in_len;
        }
        /* a lingering TLS connection only drains the socket */
        ssize_t n = c->tls && c->st == CS_LINGER ? tls_conn_drain(c->fd, buf, room)
                                                 : conn_recv(c, buf, room);
        if (n > 0) {
            if (drop) {
                if (c->st == CS_LINGER) linger_more(c);
                continue;
            }
            c->io->in_len += (size_t)n;
            if (!conn_process(c)) return false;
            /* only a full buffer suggests more is waiting right now (TLS
             * returns a record at a time: its socket tells) */
            if ((size_t)n < room && (!c->tls || tls_conn_drained(c->tctx))) return true;
            if (c->backlogged || c->after != AFTER_KEEP) return true;
            continue;
        }
        if (n == TRANSPORT_PLAIN) {
            answer_plain_on_tls(c);
            if (c->after == AFTER_CLOSE) {
                conn_close(c);
                return false;
            }
            return conn_flush(c);
        }
        if (n == TRANSPORT_AGAIN) {
            io_release_if_idle(c);
            return true;
        }
        /* the end or an error: a half-sent head gets no answer; anything
         * already answered is still flushed */
        if (n == 0 && out_pending(c) && c->st != CS_LINGER) {
            c->after = AFTER_CLOSE;
            c->eof = true;
            return true;
        }
        if (n == 0)
            conn_end(c); /* TLS answers the client's close_notify with its own */
        else
            conn_close(c);
        return false;
    }
    /* more may be waiting and no new edge will say so: come back after
     * the other connections had their turn */
    read_again(c);
    return true;
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    c->s->now_ms = clock_now_ms();
    /* TLS may need the other direction: a read waiting to write (the
     * handshake) or a write waiting to read, as OpenSSL last asked */
    if (c->tls) what |= tls_conn_wants(c->tctx, what);
    if ((what & EV_WRITE) && out_pending(c)) {
        if (!conn_flush(c)) return;
        if (!out_pending(c) && c->st != CS_LINGER && c->io) {
            if (c->backlogged) {
                c->backlogged = false;
                what |= EV_READ; /* requests that waited in the socket */
            }
            if (!conn_process(c)) return; /* pipelined requests held back by the backlog */
        }
    }
    if ((what & EV_READ) && !c->backlogged && !c->eof) conn_read(c);
}

/* A deadline passed. */
static void conn_expire(struct conn *c)
{
    c->timed_out = true;
    if (c->st == CS_HEAD && c->io && c->io->in_len && !out_pending(c) && c->after == AFTER_KEEP) {
        /* part of a head arrived, not all of it in time */
        c->io->in_len = 0;
        answer_error(c, 408, NULL);
        conn_flush(c);
        return;
    }
    /* an idle or silent connection ends cleanly; a stalled handshake, or a
     * client that does not read its answers, is cut */
    if (out_pending(c) || c->st == CS_LINGER || (c->tls && tls_conn_handshaking(c->tctx)))
        conn_close(c);
    else
        conn_end(c);
}

/* ---- lifecycle ---- */

static struct conn *conn_get(struct conn_set *s)
{
    struct conn *c = s->free;
    if (c) {
        s->free = c->next;
        if (--s->nfree < s->free_low) s->free_low = s->nfree;
        return c;
    }
    return malloc(sizeof(*c));
}

void conn_accepted(struct conn_set *s, int fd, const struct sockaddr_storage *peer,
                   socklen_t peerlen, struct tls_srv *tls)
{
    struct conn *c = conn_get(s);
    if (!c) {
        log_warn("out of memory: dropping a connection");
        close(fd);
        s->closed(s);
        return;
    }
    /* the one place a connection object is (re)set */
    c->s = s;
    c->tp = &transport_tcp;
    c->tctx = NULL;
    c->tls = c->timed_out = c->wstall = false;
    if (tls) {
        if (!(c->tctx = tls_conn_new(tls, fd))) {
            log_warn("out of memory: dropping a TLS connection");
            close(fd);
            c->next = s->free; /* back to the free list */
            s->free = c;
            s->nfree++;
            s->closed(s);
            return;
        }
        c->tp = &transport_tls;
        c->tls = true;
    }
    c->io = NULL;
    c->fd = fd;
    c->st = CS_HEAD; /* header_timeout counts from the connection's start */
    c->after = AFTER_KEEP;
    c->tq = NO_QUEUE;
    c->registered = c->backlogged = c->eof = c->nodelay = false;
    memset(&c->peer, 0, sizeof(c->peer));
    memcpy(&c->peer, peer, peerlen < sizeof(c->peer) ? peerlen : sizeof(c->peer));
    /* edge-triggered for both directions, added once: epoll need not be
     * told again after every wakeup; the reader owns draining the socket */
    event_assign(&c->ev, s->base, fd, EV_READ | EV_WRITE | EV_PERSIST | EV_ET, on_event, c);
    c->prev = NULL;
    c->next = s->open;
    if (s->open) s->open->prev = c;
    s->open = c;
    set_timeout(c, s->cfg->limits.header_timeout_ms);
    /* the request usually arrives with the connection: read it right away,
     * and only involve the event loop if the connection lives on */
    if (!conn_read(c)) return;
    conn_register(c);
}

/* Closes c at once: what a broken connection, a stalled handshake or a
 * client that stopped reading gets (no close_notify). */
static void conn_close(struct conn *c)
{
    struct conn_set *s = c->s;
    io_release(c);
    event_del(&c->ev); /* also when only activated by read_again */
    timeout_unlink(c);
    if (c->tctx) {
        tls_conn_free(c->tctx, c->timed_out, &c->peer.sa);
        c->tctx = NULL;
    }
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->open = c->next;
    if (c->next) c->next->prev = c->prev;
    if (s->nfree < MAX_FREE_CONNS) {
        c->next = s->free;
        s->free = c;
        s->nfree++;
    } else {
        free(c);
    }
    s->closed(s);
}

/* The clean end of a connection: over TLS, close_notify first (RFC 8446
 * 6.1), so that the client can tell the end from a truncation. */
static void conn_end(struct conn *c)
{
    if (c->tls) tls_conn_notify(c->tctx);
    conn_close(c);
}

void conn_shutdown_all(struct conn_set *s)
{
    struct conn *c = s->open;
    while (c) {
        struct conn *next = c->next;
        /* a request in progress is answered with Connection: close
         * (s->stopping) and conn_process() closes it afterwards */
        if ((c->st == CS_IDLE || c->st == CS_HEAD) && !c->io && c->after == AFTER_KEEP)
            conn_end(c); /* close_notify only where the handshake finished */
        c = next;
    }
}

void conn_trim_free(struct conn_set *s)
{
    size_t freed = 0;
    for (size_t n = s->free_low; n && s->free; n--) {
        struct conn *c = s->free;
        s->free = c->next;
        s->nfree--;
        free(c);
        freed += sizeof(*c);
    }
    for (size_t n = s->free_io_low; n && s->free_io; n--) {
        struct conn_io *io = s->free_io;
        s->free_io = io->next;
        s->nfree_io--;
        freed += sizeof(*io) + io->in_cap + io->out_cap;
        io_destroy(io);
    }
#ifdef HAVE_MALLOC_TRIM
    /* hand the pages back after a burst; malloc_trim walks every arena, so
     * not for the odd object that ordinary churn leaves over */
    if (freed >= TRIM_MIN_BYTES) malloc_trim(0);
#else
    (void)freed;
#endif
    s->free_low = s->nfree;
    s->free_io_low = s->nfree_io;
}

void conn_alog_flush(struct conn_set *s)
{
    if (s->alog.len) alog_flush(&s->alog, atomic_load(s->alog_file));
}

bool conn_set_init(struct conn_set *s)
{
    s->drop = malloc(DROP_BYTES);
    if (!s->drop) return false;
    for (int i = 0; i < CONN_TIMEOUT_QUEUES; i++) {
        s->tq[i].s = s;
        s->tq[i].ev = evtimer_new(s->base, on_timeq, &s->tq[i]);
        if (!s->tq[i].ev) return false;
    }
    return true;
}

void conn_set_free(struct conn_set *s)
{
    while (s->open) conn_close(s->open);
    while (s->free) {
        struct conn *c = s->free;
        s->free = c->next;
        free(c);
    }
    s->nfree = 0;
    while (s->free_io) {
        struct conn_io *io = s->free_io;
        s->free_io = io->next;
        io_destroy(io);
    }
    s->nfree_io = 0;
    for (int i = 0; i < CONN_TIMEOUT_QUEUES; i++)
        if (s->tq[i].ev) event_free(s->tq[i].ev);
    memset(s->tq, 0, sizeof(s->tq));
    free(s->drop);
    s->drop = NULL;
    alog_buf_free(&s->alog);
}
