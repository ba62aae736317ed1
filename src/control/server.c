#include "autoconf.h"

#include "serve/server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "serve/conn.h"
#include "serve/counters.h"
#include "control/listener.h"
#include "lib/log.h"
#include "serve/tls.h"
#include "serve/worker.h"

#define ACCEPT_BATCH    64  /* connections taken per wakeup of a listener */
#define ACCEPT_RETRY_MS 100 /* pause after EMFILE and friends */

enum {
    CMD_CONFIG = 1u << 0,    /* take s->cfg */
    CMD_LISTENERS = 1u << 1, /* rebuild accept events from s->lset */
    CMD_STOP = 1u << 2,      /* graceful stop */
    CMD_EXIT = 1u << 3,      /* leave the loop now */
    CMD_BARRIER = 1u << 4,   /* acknowledge s->barrier_seq */
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
    /* request totals of retired configs: a config's counts are folded in
     * once no worker counts into it any more */
    struct counters *totals;
    struct event *stop_timer;
    bool running;
};

unsigned server_workers_for(const struct config *cfg)
{
    if (cfg->workers) return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > SERVER_MAX_WORKERS ? SERVER_MAX_WORKERS : (unsigned)n;
}

static void kick(int efd)
{
    uint64_t one = 1;
    ssize_t r = write(efd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is saturated, a wakeup is pending anyway */
}

static void send_cmd(struct worker *w, unsigned cmd)
{
    atomic_fetch_or(&w->cmds, cmd);
    kick(w->efd);
}

static void broadcast(struct server *s, unsigned cmd)
{
    for (unsigned i = 0; i < s->nw; i++) send_cmd(&s->w[i], cmd);
}

/* ---- the worker side ---- */

static void set_row(struct worker *w)
{
    w->counts = counters_row(w->cfg, w->id);
}

static void accepting(struct worker *w, bool on)
{
    if (w->accepting == on) return;
    for (size_t i = 0; i < w->nls; i++) {
        if (on)
            event_add(w->ls[i].ev, NULL);
        else
            event_del(w->ls[i].ev);
    }
    w->accepting = on;
}

static bool below_limit(struct worker *w)
{
    return atomic_load(&w->srv->nconns) < w->cfg->limits.max_connections;
}

static void pause_accepting(struct worker *w, unsigned ms)
{
    accepting(w, false);
    w->paused = true;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(w->resume_timer, &tv);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->stopping) return;
    if (below_limit(w)) {
        w->paused = false;
        accepting(w, true);
    } else {
        /* another worker's connections may be the ones that close */
        pause_accepting(w, ACCEPT_RETRY_MS);
    }
}

/* The worker has nothing left to do: a thread leaves its loop (and then
 * reports); the inline worker reports at once. */
static void worker_done(struct worker *w)
{
    if (w->done) return;
    w->done = true;
    if (!w->inline_loop) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    worker_alog_flush(w);
    atomic_fetch_add(&w->srv->exited, 1);
    kick(w->srv->efd);
}

void worker_conn_closed(struct worker *w)
{
    atomic_fetch_sub(&w->srv->nconns, 1);
    if (w->paused && !w->stopping && below_limit(w)) {
        evtimer_del(w->resume_timer);
        w->paused = false;
        accepting(w, true);
    }
    if (w->stopping && conn_set_empty(&w->conns)) worker_done(w);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    struct tls_srv *tls = NULL;
    w->now_ms = clock_now_ms();
    for (size_t k = 0; k < w->nls; k++) {
        if (w->ls[k].fd == lfd) {
            tls = w->ls[k].tls;
            break;
        }
    }
    for (int i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("accept: %s; pausing new connections for %d ms", strerror(errno),
                         ACCEPT_RETRY_MS);
                pause_accepting(w, ACCEPT_RETRY_MS);
                return;
            }
            log_warn("accept: %s", strerror(errno));
            return;
        }
        unsigned n = atomic_fetch_add(&s->nconns, 1) + 1;
        conn_accepted(w, fd, &ss, len, tls);
        if (n >= w->cfg->limits.max_connections && !w->paused) {
            log_debug("max_connections (%u) reached; pausing accept", n);
            pause_accepting(w, ACCEPT_RETRY_MS);
        }
    }
}

/* Makes the worker's accept events match s->lset. */
static void sync_listeners(struct worker *w)
{
    struct listener_set *set = atomic_load(&w->srv->lset);
    size_t n = w->stopping || !set ? 0 : set->n;
    struct lsock *ls = calloc(n ? n : 1, sizeof(*ls));
    if (!ls) {
        log_error("worker %u: out of memory updating listeners", w->id);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int fd = set->l[i].fds[w->id];
        ls[i].fd = fd;
        ls[i].tls = tls_srv_ref(set->l[i].tls); /* the set may go before w->ls */
        for (size_t k = 0; k < w->nls; k++) {
            if (w->ls[k].fd == fd && w->ls[k].ev) { /* kept: move its event */
                ls[i].ev = w->ls[k].ev;
                w->ls[k].ev = NULL;
                break;
            }
        }
        if (!ls[i].ev) {
            ls[i].ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_accept, w);
            if (ls[i].ev && w->accepting) event_add(ls[i].ev, NULL);
        }
    }
    for (size_t k = 0; k < w->nls; k++) {
        if (w->ls[k].ev) event_free(w->ls[k].ev); /* removed: main closes the fd later */
        tls_srv_unref(w->ls[k].tls);
    }
    free(w->ls);
    w->ls = ls;
    w->nls = n;
    /* a socket without an event (OOM) is skipped */
    for (size_t i = 0; i < w->nls;) {
        if (!w->ls[i].ev) {
            tls_srv_unref(w->ls[i].tls);
            w->ls[i] = w->ls[--w->nls];
        } else {
            i++;
        }
    }
}

static void on_mbox(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    /* read the sequence before the commands: an acknowledged barrier then
     * covers every command sent before it */
    uint64_t seq = atomic_load(&s->barrier_seq);
    unsigned cmds = atomic_exchange(&w->cmds, 0);
    w->now_ms = clock_now_ms();
    if (cmds & CMD_CONFIG) {
        struct config *c = atomic_load(&s->cfg);
        if (c != w->cfg) {
            config_ref(c);
            config_unref(w->cfg);
            w->cfg = c;
            set_row(w);
        }
    }
    if (cmds & CMD_STOP && !w->stopping) {
        w->stopping = true;
        accepting(w, false);
        evtimer_del(w->resume_timer);
        sync_listeners(w); /* drops every accept event */
        conn_shutdown_all(w);
        if (conn_set_empty(&w->conns)) worker_done(w);
    }
    if (cmds & CMD_LISTENERS) sync_listeners(w);
    if (cmds & CMD_EXIT) worker_done(w);
    if (cmds & CMD_BARRIER) {
        atomic_store(&w->acked, seq);
        kick(s->efd);
    }
}

void worker_alog_flush(struct worker *w)
{
    if (w->alog.len) alog_flush(&w->alog, atomic_load(&w->srv->alog));
}

static void on_alog_timer(evutil_socket_t fd, short what, void *arg)
{
    worker_alog_flush(arg);
    conn_trim_free(arg);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    worker_alog_flush(w);
    atomic_fetch_add(&w->srv->exited, 1);
    kick(w->srv->efd);
    return NULL;
}

static bool worker_init(struct server *s, struct worker *w, unsigned id)
{
    w->srv = s;
    w->id = id;
    w->efd = -1;
    if (s->nw == 1) {
        /* One worker runs on the main thread: a single-threaded process
         * spares the kernel a file reference count on every socket call
         * and libc its cancellation wrappers. */
        w->inline_loop = true;
        w->base = s->base;
    } else {
        struct event_config *ec = event_config_new();
        if (!ec) return false;
        /* one thread per base: libevent needs no locks */
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    if (!w->base) return false;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) return false;
    w->mbox = event_new(w->base, w->efd, EV_READ | EV_PERSIST, on_mbox, w);
    w->resume_timer = evtimer_new(w->base, on_resume, w);
    w->alog_timer = event_new(w->base, -1, EV_PERSIST, on_alog_timer, w);
    if (!w->mbox || !w->resume_timer || !w->alog_timer || !conn_set_init(w)) return false;
    event_add(w->mbox, NULL);
    struct timeval second = {1, 0};
    event_add(w->alog_timer, &second);
    w->cfg = config_ref(atomic_load(&s->cfg));
    set_row(w);
    w->now_ms = clock_now_ms();
    w->accepting = true;
    sync_listeners(w);
    return true;
}

/* ---- the main side ---- */

static void reap_retired(struct server *s)
{
    uint64_t min = UINT64_MAX;
    for (unsigned i = 0; i < s->nw; i++) {
        uint64_t a = atomic_load(&s->w[i].acked);
        if (a < min) min = a;
    }
    bool all_gone = atomic_load(&s->exited) == s->nw;
    struct retired **pp = &s->retired;
    while (*pp) {
        struct retired *r = *pp;
        if (all_gone || r->seq <= min) {
            *pp = r->next;
            r->free_fn(r->p);
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

void server_retire(struct server *s, void *p, void (*free_fn)(void *))
{
    if (!p) return;
    if (!s->running || atomic_load(&s->exited) == s->nw) {
        free_fn(p);
        return;
    }
    struct retired *r = malloc(sizeof(*r));
    if (!r) {
        /* cannot track it: leaking is safer than freeing early */
        log_warn("out of memory: leaking a retired object");
        return;
    }
    r->p = p;
    r->free_fn = free_fn;
    r->seq = atomic_fetch_add(&s->barrier_seq, 1) + 1;
    r->next = s->retired;
    s->retired = r;
    /* many retires in one callback (a reload publishes a choice per pool)
     * share one barrier, sent when the callback returns */
    if (s->barrier_ev)
        event_active(s->barrier_ev, EV_TIMEOUT, 0);
    else
        broadcast(s, CMD_BARRIER);
}

static void on_barrier(evutil_socket_t fd, short what, void *arg)
{
    broadcast(arg, CMD_BARRIER);
}

static void on_main_mbox(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    reap_retired(s);
    if (atomic_load(&s->stopping) && atomic_load(&s->exited) == s->nw)
        event_base_loopexit(s->base, NULL);
}

struct config_job {
    struct server *s;
    struct config *c;
    uint64_t *snap; /* what was folded when it was replaced */
};

static void retire_config_done(void *p)
{
    struct config_job *j = p;
    counters_fold_rest(j->s->totals, j->c, j->s->nw, j->snap);
    config_unref(j->c);
    free(j);
}

/* The replaced config's counts move to the lasting totals at once (no
 * reader sees them vanish); what workers count into it until they let go
 * of it follows after the barrier. */
static void retire_config(struct server *s, struct config *c)
{
    uint64_t *snap = counters_fold_start(s->totals, c, s->nw);
    struct config_job *j = malloc(sizeof(*j));
    if (!j) {
        free(snap);
        config_unref(c); /* what it counts from now on is lost, nothing else */
        return;
    }
    *j = (struct config_job){s, c, snap};
    server_retire(s, j, retire_config_done);
}

struct server *server_new(void)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->efd = -1;
    s->totals = counters_new();
    if (!s->totals) {
        free(s);
        return NULL;
    }
    return s;
}

bool server_start(struct server *s, struct event_base *base, struct config *cfg, char *err,
                  size_t errlen)
{
    s->base = base;
    atomic_store(&s->cfg, cfg);
    s->nw = server_workers_for(cfg);
    s->w = calloc(s->nw, sizeof(*s->w));
    if (!s->w) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    for (unsigned i = 0; i < s->nw; i++) s->w[i].efd = -1;
    if (!counters_alloc(cfg, s->nw)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    struct listener_set *set = listener_set_build(cfg, NULL, s->nw, err, errlen);
    if (!set) return false;
    atomic_store(&s->lset, set);
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->mbox = s->efd >= 0 ? event_new(base, s->efd, EV_READ | EV_PERSIST, on_main_mbox, s) : NULL;
    if (!s->mbox) {
        snprintf(err, errlen, "cannot create the main mailbox: %s", strerror(errno));
        return false;
    }
    event_add(s->mbox, NULL);
    s->barrier_ev = event_new(base, -1, 0, on_barrier, s);
    for (unsigned i = 0; i < s->nw; i++) {
        if (!worker_init(s, &s->w[i], i)) {
            snprintf(err, errlen, "cannot set up worker %u: %s", i, strerror(errno));
            return false;
        }
    }
    for (unsigned i = 0; i < s->nw && !s->w[0].inline_loop; i++) {
        int e = pthread_create(&s->w[i].thread, NULL, worker_main, &s->w[i]);
        if (e) {
            snprintf(err, errlen, "cannot start worker %u: %s", i, strerror(e));
            for (unsigned k = 0; k < i; k++) send_cmd(&s->w[k], CMD_EXIT);
            for (unsigned k = 0; k < i; k++) pthread_join(s->w[k].thread, NULL);
            s->nw = i; /* joined: server_free must not join them again */
            for (unsigned k = 0; k < s->nw; k++) s->w[k].thread = 0;
            return false;
        }
    }
    s->running = true;
    return true;
}

struct listener_set *server_prepare(struct server *s, struct config *cfg, char *err, size_t errlen)
{
    if (!counters_alloc(cfg, s->nw)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (server_workers_for(cfg) != s->nw)
        log_warn("workers: the number of workers changes only with a restart (keeping %u)", s->nw);
    return listener_set_build(cfg, atomic_load(&s->lset), s->nw, err, errlen);
}

void server_abort(struct server *s, struct listener_set *set)
{
    listener_set_discard(set, atomic_load(&s->lset));
}

void server_commit(struct server *s, struct config *cfg, struct listener_set *set)
{
    struct listener_set *old = atomic_load(&s->lset);
    listener_set_log_added(set, old);
    struct listener_fds *gone = listener_set_removed(old, set);
    struct config *prev = atomic_exchange(&s->cfg, cfg);
    atomic_store(&s->lset, set);
    broadcast(s, CMD_CONFIG | CMD_LISTENERS);
    server_retire(s, old, listener_set_free);
    if (gone) server_retire(s, gone, listener_fds_close);
    retire_config(s, prev);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    log_warn("shutdown_timeout reached; closing the remaining connections");
    broadcast(s, CMD_EXIT);
}

void server_stop(struct server *s)
{
    if (atomic_exchange(&s->stopping, true)) return;
    broadcast(s, CMD_STOP);
    /* listening sockets close once every worker has dropped its events */
    struct listener_fds *all = listener_set_removed(atomic_load(&s->lset), NULL);
    struct listener_set *empty = calloc(1, sizeof(*empty));
    if (all && empty) {
        struct listener_set *old = atomic_exchange(&s->lset, empty);
        server_retire(s, old, listener_set_free);
        server_retire(s, all, listener_fds_close);
    } else {
        free(empty);
        if (all) listener_fds_close(all);
    }
    uint64_t ms = atomic_load(&s->cfg)->limits.shutdown_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    s->stop_timer = evtimer_new(s->base, on_stop_timeout, s);
    if (s->stop_timer) evtimer_add(s->stop_timer, &tv);
    if (atomic_load(&s->exited) == s->nw) event_base_loopexit(s->base, NULL);
}

void server_free(struct server *s)
{
    if (!s) return;
    for (unsigned i = 0; i < s->nw; i++) send_cmd(&s->w[i], CMD_EXIT);
    for (unsigned i = 0; i < s->nw; i++)
        if (s->w[i].thread) pthread_join(s->w[i].thread, NULL);
    atomic_store(&s->exited, s->nw);
    reap_retired(s);
    for (unsigned i = 0; i < s->nw; i++) {
        struct worker *w = &s->w[i];
        if (!w->base) continue;
        conn_set_free(w);
        for (size_t k = 0; k < w->nls; k++) {
            event_free(w->ls[k].ev);
            tls_srv_unref(w->ls[k].tls);
        }
        free(w->ls);
        if (w->resume_timer) event_free(w->resume_timer);
        if (w->alog_timer) event_free(w->alog_timer);
        alog_buf_free(&w->alog);
        if (w->mbox) event_free(w->mbox);
        if (w->efd >= 0) close(w->efd);
        config_unref(w->cfg);
        if (!w->inline_loop) event_base_free(w->base);
    }
    free(s->w);
    listener_set_close(atomic_load(&s->lset));
    if (s->mbox) event_free(s->mbox);
    if (s->barrier_ev) event_free(s->barrier_ev);
    if (s->efd >= 0) close(s->efd);
    if (s->stop_timer) event_free(s->stop_timer);
    config_unref(atomic_load(&s->cfg));
    alog_file_close(atomic_load(&s->alog));
    counters_free(s->totals);
    free(s);
}

void server_set_alog(struct server *s, struct alog_file *f)
{
    struct alog_file *old = atomic_exchange(&s->alog, f);
    server_retire(s, old, alog_file_close);
}

const struct config *server_config(const struct server *s)
{
    return atomic_load(&((struct server *)s)->cfg);
}

unsigned server_workers(const struct server *s)
{
    return s->nw;
}

unsigned server_connections(const struct server *s)
{
    return atomic_load(&((struct server *)s)->nconns);
}

bool server_stopping(const struct server *s)
{
    return atomic_load(&((struct server *)s)->stopping);
}

const struct counters *server_counters(const struct server *s)
{
    return s->totals;
}
