/* One client connection: read, parse, answer, discard bodies, time out,
 * close gracefully. The whole request path lives here and in redirect.c. */
#include "autoconf.h"

#include <errno.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_parse.h"
#include "log.h"
#include "route.h"
#include "select.h"
#include "server.h"

#define OUT_INITIAL    4096
#define OUT_HIGH_WATER (64 * 1024) /* stop answering pipelined requests above */
#define IN_SLACK       1024        /* input room beyond max_header_bytes */
#define LINGER_MS      5000        /* how long a lingering close keeps reading */
#define MAX_FREE_CONNS 1024
#define READ_ROUNDS    4 /* full reads per wakeup before others get a turn */

enum conn_state {
    ST_HEAD,         /* reading a request head */
    ST_BODY_LENGTH,  /* discarding a Content-Length body */
    ST_BODY_CHUNKED, /* discarding a chunked body */
    ST_LINGER,       /* answered, closing: reading and dropping what comes */
};

struct conn {
    int fd;
    enum conn_state st;
    bool close_after;  /* close once the output is flushed */
    bool linger_after; /* ... with a lingering close */
    bool head_started; /* a partial head is buffered: header_timeout runs */
    bool want_write;   /* the write event is added */
    bool reading;      /* the read event is added */
    bool backlogged;   /* reading paused: the client does not read answers */
    bool eof;          /* the client closed its side */
    bool shut_wr;
    bool nodelay; /* TCP_NODELAY set (only once a write was partial) */
    struct worker *w;
    struct event *rev, *wev, *tev;
    uint64_t deadline; /* monotonic ms */
    uint64_t armed;    /* when the timer fires (0 = not armed) */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    struct http_req req;
    uint64_t body_left;
    struct http_chunked chunk;
    struct sockaddr_storage peer;
    /* The answer to a request with a chunked body waits for the end of the
     * body: only then is it known whether the connection can stay open. */
    struct config *pend_cfg; /* keeps pend_pool and pend_tmpl alive */
    const struct pool *pend_pool;
    const struct tmpl *pend_tmpl;
    char *pend_path;
    size_t pend_len, pend_cap;
    bool pend_head;
    uint8_t pend_minor;
    char pend_method[16];
    struct conn *prev, *next;
};

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static bool conn_process(struct conn *c);

static const struct limits *limits_of(const struct conn *c)
{
    return &c->w->cfg->limits;
}

static void read_on(struct conn *c)
{
    if (c->reading || c->backlogged || c->eof) return;
    event_add(c->rev, NULL);
    c->reading = true;
}

/* With edge-triggered reads, a reader that stops before the socket is
 * drained (fairness, a paused or lingering connection) must wake itself. */
static void read_again(struct conn *c)
{
    if (c->reading) event_active(c->rev, EV_READ, 0);
}

static void read_off(struct conn *c)
{
    if (!c->reading) return;
    event_del(c->rev);
    c->reading = false;
}

/* ---- timers: one timer event per connection, re-armed lazily ---- */

static void set_deadline(struct conn *c, uint64_t ms_from_now)
{
    uint64_t now = c->w->now_ms;
    c->deadline = now + ms_from_now;
    /* a later deadline needs nothing: the timer fires and re-arms itself */
    if (c->armed && c->armed <= c->deadline) return;
    struct timeval tv = {(time_t)(ms_from_now / 1000), (suseconds_t)(ms_from_now % 1000) * 1000};
    evtimer_add(c->tev, &tv);
    c->armed = c->deadline;
}

/* A counter row has one writer (this worker): no locked instruction. */
static inline void count(_Atomic uint64_t *row, unsigned slot)
{
    uint64_t n = atomic_load_explicit(&row[slot], memory_order_relaxed);
    atomic_store_explicit(&row[slot], n + 1, memory_order_relaxed);
}

/* ---- output ---- */

static bool out_reserve(struct conn *c, size_t need)
{
    if (c->out_len + need <= c->out_cap) return true;
    size_t cap = c->out_cap ? c->out_cap : OUT_INITIAL;
    while (cap < c->out_len + need) cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

static void start_linger(struct conn *c)
{
    if (!c->shut_wr) {
        shutdown(c->fd, SHUT_WR);
        c->shut_wr = true;
    }
    c->st = ST_LINGER;
    c->in_len = 0;
    c->backlogged = false;
    read_on(c);
    read_again(c); /* drain what arrived while the answer was written */
    set_deadline(c, LINGER_MS);
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

/* Writes what is buffered. Returns false if the connection was closed. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            if (c->out_off < c->out_len) set_nodelay(c);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_write) {
                event_add(c->wev, NULL);
                c->want_write = true;
            }
            /* a stalled reader gets idle_timeout to make progress */
            set_deadline(c, limits_of(c)->idle_timeout_ms);
            return true;
        }
        conn_close(c);
        return false;
    }
    c->out_len = c->out_off = 0;
    if (c->want_write) {
        event_del(c->wev);
        c->want_write = false;
    }
    if (c->close_after) {
        if (c->linger_after) {
            start_linger(c);
        } else {
            conn_close(c);
            return false;
        }
    }
    return true;
}

/* ---- answering ---- */

static struct alog_str span_str(const char *base, struct http_span s, bool present)
{
    struct alog_str v = {present && base ? base + s.off : NULL, s.len};
    return v;
}

/* One access log line; base is NULL when no request line was parsed. */
static void log_access(struct conn *c, const char *base, const struct http_req *r, unsigned status,
                       size_t bytes, const struct pool *p, const char *region)
{
    struct worker *w = c->w;
    const struct config *cfg = w->cfg;
    bool line = base && r->method.len;
    struct alog_entry e = {
        .peer = &c->peer,
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
    alog_append(&w->alog, &e, cfg->access_log_json, w->date.sec);
    if (w->alog.len >= ALOG_FLUSH_AT) worker_alog_flush(w);
}

static void log_access_held(struct conn *c, const struct http_req *r, size_t bytes)
{
    struct worker *w = c->w;
    struct alog_entry e = {
        .peer = &c->peer,
        .method = {c->pend_method, r->method.len},
        .target = {c->pend_path, c->pend_len},
        .minor = r->minor,
        .status = c->pend_tmpl->status,
        .bytes = bytes,
        .pool = c->pend_pool->name,
        .region = c->pend_tmpl->region,
    };
    alog_append(&w->alog, &e, w->cfg->access_log_json, w->date.sec);
    if (w->alog.len >= ALOG_FLUSH_AT) worker_alog_flush(w);
}

/* Queues an error answer; the connection closes (lingering) after it.
 * base: the request's bytes, for the access log (NULL if unparsed). */
static void answer_error(struct conn *c, unsigned status, const char *base)
{
    struct worker *w = c->w;
    c->close_after = true;
    if (!out_reserve(c, REDIRECT_ERROR_MAX)) return; /* just close */
    c->linger_after = true;
    date_cache_update(&w->date, time(NULL));
    size_t n = redirect_error(c->out + c->out_len, status, &w->date);
    c->out_len += n;
    count(w->counts, config_error_slot(w->cfg, status));
    if (w->cfg->access_log) log_access(c, base, &c->req, status, n, NULL, NULL);
    log_debug("client error %u: %s", status, c->req.reason ? c->req.reason : "");
}

/* The key of balance: hash — a request header, or the client's address
 * (also when the header is missing). */
static uint64_t hash_key(const struct conn *c, const struct pool *p, const char *base,
                         const struct http_req *r)
{
    int h = p->hash_header;
    if (h >= 0 && (r->captured >> h & 1))
        return select_key_hash(base + r->capture[h].off, r->capture[h].len);
    if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&c->peer;
        return select_key_hash(&s6->sin6_addr, sizeof(s6->sin6_addr));
    }
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&c->peer;
    return select_key_hash(&s4->sin_addr, sizeof(s4->sin_addr));
}

/* Routes the request and picks the region: the template to answer with,
 * or NULL after queuing a 421 when no pool takes the Host. */
static const struct tmpl *choose(struct conn *c, const char *base, const struct http_req *r,
                                 const struct pool **pool)
{
    const struct config *cfg = c->w->cfg;
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
    return idx >= 0 ? &p->regions[idx].tmpl : action == CHOICE_FALLBACK ? &p->fallback : &p->reject;
}

/* Queues the answer; the connection closes after it unless keep. */
static void emit(struct conn *c, const struct pool *p, const struct tmpl *t, const char *path,
                 size_t plen, bool head_only, uint8_t minor, bool keep)
{
    if (!out_reserve(c, redirect_max(p, t, plen))) {
        c->close_after = true;
        return;
    }
    enum conn_hdr ch = !keep ? CONN_HDR_CLOSE : minor == 0 ? CONN_HDR_KEEP : CONN_HDR_NONE;
    c->out_len += redirect_build(c->out + c->out_len, p, t, path, plen, head_only, ch, &c->w->date);
    /* a held answer counts in the config it was chosen from */
    const struct config *cfg = c->pend_cfg ? c->pend_cfg : c->w->cfg;
    if (cfg == c->w->cfg)
        count(c->w->counts, t->slot);
    else if (cfg->counts)
        count(cfg->counts + c->w->id * cfg->stride, t->slot);
    if (!keep) c->close_after = true;
}

/* Keeps what the answer needs until the chunked body has been skipped. */
static bool hold(struct conn *c, const struct pool *p, const struct tmpl *t, const char *path,
                 const struct http_req *r)
{
    size_t n = r->path.len;
    if (n > c->pend_cap) {
        char *np = realloc(c->pend_path, n);
        if (!np) return false;
        c->pend_path = np;
        c->pend_cap = n;
    }
    memcpy(c->pend_path, path, n);
    c->pend_len = n;
    c->pend_cfg = config_ref(c->w->cfg);
    c->pend_pool = p;
    c->pend_tmpl = t;
    c->pend_head = r->is_head;
    c->pend_minor = r->minor;
    size_t ml =
        r->method.len < sizeof(c->pend_method) - 1 ? r->method.len : sizeof(c->pend_method) - 1;
    memcpy(c->pend_method, path - r->path.off + r->method.off, ml);
    c->pend_method[ml] = '\0';
    return true;
}

static void emit_held(struct conn *c, bool keep)
{
    date_cache_update(&c->w->date, time(NULL));
    size_t before = c->out_len;
    emit(c, c->pend_pool, c->pend_tmpl, c->pend_path, c->pend_len, c->pend_head, c->pend_minor,
         keep && !c->w->stopping);
    if (c->w->cfg->access_log) {
        struct http_req r;
        http_req_init(&r);
        r.minor = c->pend_minor;
        /* the head is gone: log the method and path that were kept */
        r.method = (struct http_span){0, (uint32_t)strlen(c->pend_method)};
        r.target = (struct http_span){0, 0};
        log_access_held(c, &r, c->out_len - before);
    }
    c->pend_pool = NULL;
    config_unref(c->pend_cfg);
    c->pend_cfg = NULL;
}

/* A complete head starts at base: answer it and set up body handling.
 * avail is what is buffered from base on. */
static void on_head(struct conn *c, const char *base, size_t avail)
{
    const struct http_req *r = &c->req;
    const struct limits *lim = limits_of(c);
    bool body = r->chunked || (r->has_length && r->content_length > 0);
    bool keep = r->keep_alive && !c->w->stopping;
    /* A client that waits for 100 Continue gets the redirect at once and
     * never sends the body; one whose body is too large to skip gets the
     * redirect and a lingering close. Either way the connection ends. */
    if (body &&
        (r->expect_continue || (r->has_length && r->content_length > lim->max_body_discard)))
        keep = false;
    const struct pool *p = NULL;
    const struct tmpl *t = choose(c, base, r, &p);
    if (t && r->chunked && keep && hold(c, p, t, base + r->path.off, r)) {
        c->st = ST_BODY_CHUNKED;
        http_chunked_init(&c->chunk);
        return;
    }
    if (t) {
        size_t before = c->out_len;
        emit(c, p, t, base + r->path.off, r->path.len, r->is_head, r->minor, keep);
        if (c->w->cfg->access_log)
            log_access(c, base, r, t->status, c->out_len - before, p, t->region);
    }
    if (c->close_after) {
        /* unread bytes (a body, pipelined requests) would turn close()
         * into a reset that can destroy the answer: linger instead */
        c->linger_after = c->linger_after || body || avail > r->head_len;
        return;
    }
    if (body) {
        c->st = ST_BODY_LENGTH;
        c->body_left = r->content_length;
    }
}

/* Answers the complete requests that are buffered, up to OUT_HIGH_WATER
 * bytes of output. Returns true if any input was consumed. */
static bool conn_consume(struct conn *c)
{
    struct worker *w = c->w;
    const struct limits *lim = limits_of(c);
    const struct config *cfg = w->cfg;
    const struct http_limits hl = {lim->max_header_bytes, lim->max_uri_bytes, cfg->capture,
                                   cfg->ncapture};
    size_t pos = 0;
    unsigned answered = 0;
    bool dated = false;

    while (pos < c->in_len && !c->close_after && c->out_len < OUT_HIGH_WATER) {
        const char *buf = c->in + pos;
        size_t avail = c->in_len - pos;
        if (c->st == ST_HEAD) {
            enum http_result res = http_parse_head(&c->req, buf, avail, &hl);
            if (res == HTTP_AGAIN) break;
            if (res == HTTP_ERROR) {
                answer_error(c, c->req.status, buf);
                break;
            }
            if (!dated) {
                date_cache_update(&w->date, time(NULL));
                dated = true;
            }
            on_head(c, buf, avail);
            if (++answered == 2) set_nodelay(c); /* pipelining */
            pos += c->req.head_len;
            c->head_started = false;
            http_req_init(&c->req);
        } else if (c->st == ST_BODY_LENGTH) {
            size_t n = avail < c->body_left ? avail : (size_t)c->body_left;
            c->body_left -= n;
            pos += n;
            if (c->body_left == 0) c->st = ST_HEAD;
        } else if (c->st == ST_BODY_CHUNKED) {
            size_t used;
            enum http_result res = http_chunked_skip(&c->chunk, buf, avail, &used);
            pos += used;
            if (res == HTTP_ERROR || c->chunk.total > lim->max_body_discard) {
                /* too much (or broken framing) to skip: answer and close */
                emit_held(c, false);
                c->close_after = true;
                c->linger_after = true;
                break;
            }
            if (res == HTTP_DONE) {
                emit_held(c, true);
                c->st = ST_HEAD;
            }
        } else {
            pos = c->in_len;
        }
    }
    if (c->close_after) {
        c->in_len = 0; /* nothing after the last answer is read */
    } else if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return pos > 0;
}

/* Parses and answers what is buffered. Returns false if c was closed. */
static bool conn_process(struct conn *c)
{
    struct worker *w = c->w;
    const struct limits *lim = limits_of(c);
    for (;;) {
        bool progress = conn_consume(c);

        if (c->out_len) {
            if (!conn_flush(c)) return false;
        } else if (c->close_after) {
            if (!c->linger_after) {
                conn_close(c);
                return false;
            }
            start_linger(c);
        }
        if (c->st == ST_LINGER || c->out_len) {
            if (c->out_len >= OUT_HIGH_WATER && !c->close_after) {
                /* the client does not read its answers: stop reading requests */
                c->backlogged = true;
                read_off(c);
            }
            return true; /* the write side or the linger owns the deadline */
        }
        /* all written: buffered pipelined requests may still be waiting */
        if (!progress || c->in_len == 0) break;
    }
    if (c->st == ST_HEAD && c->in_len == 0) {
        if (w->stopping) {
            conn_close(c);
            return false;
        }
        c->head_started = false;
        set_deadline(c, lim->idle_timeout_ms);
    } else if (c->st == ST_HEAD) {
        if (!c->head_started) {
            c->head_started = true;
            set_deadline(c, lim->header_timeout_ms);
        }
    } else {
        set_deadline(c, lim->idle_timeout_ms);
    }
    return true;
}

/* ---- events ---- */

/* Reads what the socket has. Returns false if c was closed. */
static bool conn_read(struct conn *c)
{
    size_t want = limits_of(c)->max_header_bytes + IN_SLACK;
    if (c->in_cap < want) { /* a reload raised max_header_bytes */
        char *p = realloc(c->in, want);
        if (p) {
            c->in = p;
            c->in_cap = want;
        }
    }
    for (int rounds = 0; rounds < READ_ROUNDS; rounds++) {
        /* after the last answer everything read is dropped */
        if (c->close_after || c->st == ST_LINGER) c->in_len = 0;
        size_t room = c->in_cap - c->in_len;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            if (c->close_after || c->st == ST_LINGER) continue;
            if (!conn_process(c)) return false;
            /* only a full buffer suggests more is waiting right now */
            if ((size_t)n < room || c->backlogged || c->close_after) return true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        /* EOF or error: a half-sent head gets no answer; anything already
         * answered is still flushed */
        if (n == 0 && c->out_len > c->out_off && c->st != ST_LINGER) {
            c->close_after = true;
            c->linger_after = false;
            c->eof = true;
            read_off(c);
            return true;
        }
        conn_close(c);
        return false;
    }
    /* more may be waiting and no new edge will say so: come back after
     * the other connections had their turn */
    read_again(c);
    return true;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    c->w->now_ms = worker_now(c->w);
    conn_read(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    c->w->now_ms = worker_now(c->w);
    if (!conn_flush(c)) return;
    if (c->out_len == 0 && c->st != ST_LINGER) {
        if (c->backlogged && !c->close_after) {
            c->backlogged = false;
            read_on(c);
            read_again(c); /* requests that waited in the socket */
        }
        conn_process(c); /* pipelined requests held back by the backlog */
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct worker *w = c->w;
    w->now_ms = worker_now(w);
    c->armed = 0;
    if (w->now_ms < c->deadline) {
        uint64_t left = c->deadline - w->now_ms;
        struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
        evtimer_add(c->tev, &tv);
        c->armed = c->deadline;
        return;
    }
    if (c->st == ST_HEAD && c->head_started && c->in_len && c->out_len == 0 && !c->close_after) {
        /* part of a head arrived, not all of it in time */
        c->in_len = 0;
        answer_error(c, 408, NULL);
        conn_flush(c);
        return;
    }
    conn_close(c);
}

/* ---- lifecycle ---- */

/* Frees a connection object (its socket is already closed). */
static void conn_destroy(struct conn *c)
{
    free(c->in);
    free(c->out);
    free(c->pend_path);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->tev);
    free(c);
}

static struct conn *conn_get(struct worker *w)
{
    const struct limits *lim = &w->cfg->limits;
    size_t in_cap = lim->max_header_bytes + IN_SLACK;
    struct conn *c = w->free_conns;
    if (c) {
        w->free_conns = c->next;
        w->nfree--;
        if (w->nfree < w->free_low) w->free_low = w->nfree;
        if (c->in_cap != in_cap) {
            char *p = realloc(c->in, in_cap);
            if (!p) {
                conn_destroy(c);
                return NULL;
            }
            c->in = p;
            c->in_cap = in_cap;
        }
        return c;
    }
    c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->in = malloc(in_cap);
    c->in_cap = in_cap;
    c->out = malloc(OUT_INITIAL);
    c->out_cap = OUT_INITIAL;
    c->rev = event_new(w->base, -1, 0, NULL, NULL);
    c->wev = event_new(w->base, -1, 0, NULL, NULL);
    c->tev = evtimer_new(w->base, on_timer, c);
    if (!c->in || !c->out || !c->rev || !c->wev || !c->tev) {
        free(c->in);
        free(c->out);
        if (c->rev) event_free(c->rev);
        if (c->wev) event_free(c->wev);
        if (c->tev) event_free(c->tev);
        free(c);
        return NULL;
    }
    return c;
}

void conn_accepted(struct worker *w, int fd, const struct sockaddr_storage *peer, socklen_t peerlen)
{
    struct conn *c = conn_get(w);
    if (!c) {
        log_warn("out of memory: dropping a connection");
        close(fd);
        server_conn_closed(w);
        return;
    }
    c->fd = fd;
    c->nodelay = false;
    c->w = w;
    c->st = ST_HEAD;
    c->close_after = c->linger_after = c->head_started = false;
    c->want_write = c->reading = c->backlogged = c->eof = c->shut_wr = false;
    c->in_len = c->out_len = c->out_off = 0;
    c->armed = 0;
    c->pend_pool = NULL;
    c->pend_cfg = NULL;
    http_req_init(&c->req);
    memset(&c->peer, 0, sizeof(c->peer));
    memcpy(&c->peer, peer, peerlen < sizeof(c->peer) ? peerlen : sizeof(c->peer));
    /* edge-triggered: epoll need not re-poll the socket after every wakeup;
     * the reader then owns draining it (see conn_read) */
    event_assign(c->rev, w->base, fd, EV_READ | EV_PERSIST | EV_ET, on_read, c);
    event_assign(c->wev, w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    /* the request usually arrives with the connection: read it right away,
     * and only involve the event loop if the connection lives on */
    c->head_started = true; /* header_timeout counts from the connection's start */
    set_deadline(c, w->cfg->limits.header_timeout_ms);
    if (!conn_read(c)) return;
    read_on(c);
}

void conn_close(struct conn *c)
{
    struct worker *w = c->w;
    if (c->pend_cfg) {
        config_unref(c->pend_cfg);
        c->pend_cfg = NULL;
        c->pend_pool = NULL;
    }
    read_off(c);
    if (c->want_write) event_del(c->wev);
    if (c->armed) event_del(c->tev);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (w->nfree < MAX_FREE_CONNS) {
        c->next = w->free_conns;
        w->free_conns = c;
        w->nfree++;
    } else {
        conn_destroy(c);
    }
    server_conn_closed(w);
}

void conn_shutdown_all(struct worker *w)
{
    struct conn *c = w->conns;
    while (c) {
        struct conn *next = c->next;
        /* a request in progress is answered with Connection: close
         * (server->stopping) and conn_process() closes it afterwards */
        if (c->st == ST_HEAD && c->in_len == 0 && c->out_len == 0 && !c->close_after) conn_close(c);
        c = next;
    }
}

void conn_trim_free(struct worker *w)
{
    size_t n = w->free_low;
    for (; n && w->free_conns; n--) {
        struct conn *c = w->free_conns;
        w->free_conns = c->next;
        w->nfree--;
        conn_destroy(c);
    }
#ifdef HAVE_MALLOC_TRIM
    if (w->free_low) malloc_trim(0); /* hand the freed pages back */
#endif
    w->free_low = w->nfree;
}

void conn_free_pool(struct worker *w)
{
    while (w->conns) conn_close(w->conns);
    while (w->free_conns) {
        struct conn *c = w->free_conns;
        w->free_conns = c->next;
        conn_destroy(c);
    }
    w->nfree = 0;
}
