#include "autoconf.h"

#include "control/server.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "control/listener.h"
#include "lib/log.h"
#include "serve/counters.h"

struct retired {
    void *p;
    void (*free_fn)(void *);
    uint64_t seq;
    struct retired *next;
};

struct server {
    struct serve_shared sh;  /* what the workers read; sh.efd: the main mailbox,
                              * where workers report barriers and exits */
    struct event_base *base; /* the main thread's loop */
    struct worker *w;
    unsigned nw;
    bool stopping;
    struct event *mbox;
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

static void broadcast(struct server *s, unsigned cmd)
{
    for (unsigned i = 0; i < s->nw; i++) worker_send(&s->w[i], cmd);
}

static void reap_retired(struct server *s)
{
    uint64_t min = UINT64_MAX;
    for (unsigned i = 0; i < s->nw; i++) {
        uint64_t a = atomic_load(&s->w[i].acked);
        if (a < min) min = a;
    }
    bool all_gone = atomic_load(&s->sh.exited) == s->nw;
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
    if (!s->running || atomic_load(&s->sh.exited) == s->nw) {
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
    r->seq = atomic_fetch_add(&s->sh.barrier_seq, 1) + 1;
    r->next = s->retired;
    s->retired = r;
    /* many retires in one callback (a reload publishes a choice per pool)
     * share one barrier, sent when the callback returns */
    if (s->barrier_ev)
        event_active(s->barrier_ev, EV_TIMEOUT, 0);
    else
        broadcast(s, WORKER_BARRIER);
}

static void on_barrier(evutil_socket_t fd, short what, void *arg)
{
    broadcast(arg, WORKER_BARRIER);
}

static void on_main_mbox(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    reap_retired(s);
    if (s->stopping && atomic_load(&s->sh.exited) == s->nw) event_base_loopexit(s->base, NULL);
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
    s->sh.efd = -1;
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
    atomic_store(&s->sh.cfg, cfg);
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
    atomic_store(&s->sh.lset, set);
    s->sh.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->mbox =
        s->sh.efd >= 0 ? event_new(base, s->sh.efd, EV_READ | EV_PERSIST, on_main_mbox, s) : NULL;
    if (!s->mbox) {
        snprintf(err, errlen, "cannot create the main mailbox: %s", strerror(errno));
        return false;
    }
    event_add(s->mbox, NULL);
    s->barrier_ev = event_new(base, -1, 0, on_barrier, s);
    for (unsigned i = 0; i < s->nw; i++) {
        if (!worker_init(&s->w[i], &s->sh, i)) {
            snprintf(err, errlen, "cannot set up worker %u: %s", i, strerror(errno));
            return false;
        }
    }
    for (unsigned i = 0; i < s->nw; i++) {
        int e = worker_start(&s->w[i]);
        if (e) {
            snprintf(err, errlen, "cannot start worker %u: %s", i, strerror(e));
            return false; /* server_free stops and joins those that started */
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
    return listener_set_build(cfg, atomic_load(&s->sh.lset), s->nw, err, errlen);
}

void server_abort(struct server *s, struct listener_set *set)
{
    listener_set_discard(set, atomic_load(&s->sh.lset));
}

void server_commit(struct server *s, struct config *cfg, struct listener_set *set)
{
    struct listener_set *old = atomic_load(&s->sh.lset);
    listener_set_log_added(set, old);
    struct listener_fds *gone = listener_set_removed(old, set);
    struct config *prev = atomic_exchange(&s->sh.cfg, cfg);
    atomic_store(&s->sh.lset, set);
    broadcast(s, WORKER_CONFIG | WORKER_LISTENERS);
    server_retire(s, old, listener_set_free);
    if (gone) server_retire(s, gone, listener_fds_close);
    retire_config(s, prev);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    log_warn("shutdown_timeout reached; closing the remaining connections");
    broadcast(s, WORKER_EXIT);
}

void server_stop(struct server *s)
{
    if (s->stopping) return;
    s->stopping = true;
    broadcast(s, WORKER_STOP);
    /* listening sockets close once every worker has dropped its events */
    struct listener_fds *all = listener_set_removed(atomic_load(&s->sh.lset), NULL);
    struct listener_set *empty = calloc(1, sizeof(*empty));
    if (all && empty) {
        struct listener_set *old = atomic_exchange(&s->sh.lset, empty);
        server_retire(s, old, listener_set_free);
        server_retire(s, all, listener_fds_close);
    } else {
        free(empty);
        if (all) listener_fds_close(all);
    }
    uint64_t ms = atomic_load(&s->sh.cfg)->limits.shutdown_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    s->stop_timer = evtimer_new(s->base, on_stop_timeout, s);
    if (s->stop_timer) evtimer_add(s->stop_timer, &tv);
    if (atomic_load(&s->sh.exited) == s->nw) event_base_loopexit(s->base, NULL);
}

void server_free(struct server *s)
{
    if (!s) return;
    for (unsigned i = 0; i < s->nw; i++)
        if (s->w[i].efd >= 0) worker_send(&s->w[i], WORKER_EXIT);
    for (unsigned i = 0; i < s->nw; i++) worker_join(&s->w[i]);
    atomic_store(&s->sh.exited, s->nw);
    reap_retired(s);
    for (unsigned i = 0; i < s->nw; i++) worker_release(&s->w[i]);
    free(s->w);
    listener_set_close(atomic_load(&s->sh.lset));
    if (s->mbox) event_free(s->mbox);
    if (s->barrier_ev) event_free(s->barrier_ev);
    if (s->sh.efd >= 0) close(s->sh.efd);
    if (s->stop_timer) event_free(s->stop_timer);
    config_unref(atomic_load(&s->sh.cfg));
    alog_file_close(atomic_load(&s->sh.alog));
    counters_free(s->totals);
    free(s);
}

void server_set_alog(struct server *s, struct alog_file *f)
{
    struct alog_file *old = atomic_exchange(&s->sh.alog, f);
    server_retire(s, old, alog_file_close);
}

const struct config *server_config(const struct server *s)
{
    return atomic_load(&((struct server *)s)->sh.cfg);
}

unsigned server_workers(const struct server *s)
{
    return s->nw;
}

unsigned server_connections(const struct server *s)
{
    return atomic_load(&((struct server *)s)->sh.nconns);
}

bool server_stopping(const struct server *s)
{
    return s->stopping;
}

const struct counters *server_counters(const struct server *s)
{
    return s->totals;
}
