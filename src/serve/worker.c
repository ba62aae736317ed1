/* A worker thread: its loop, its mailbox, accepting (see worker.h). */
#include "autoconf.h"

#include "serve/worker.h"

#include <errno.h>
#include <signal.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "serve/counters.h"
#include "serve/tls.h"

#define ACCEPT_BATCH    64  /* connections taken per wakeup of a listener */
#define ACCEPT_RETRY_MS 100 /* pause after EMFILE and friends */

void worker_kick(int efd)
{
    uint64_t one = 1;
    ssize_t r = write(efd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is saturated, a wakeup is pending anyway */
}

void worker_send(struct worker *w, unsigned cmds)
{
    atomic_fetch_or(&w->cmds, cmds);
    worker_kick(w->efd);
}

static void set_config(struct worker *w, struct config *c)
{
    w->conns.cfg = c;
    w->conns.counts = counters_row(c, w->id);
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
    return atomic_load(&w->sh->nconns) < w->conns.cfg->limits.max_connections;
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
    if (w->conns.stopping) return;
    if (below_limit(w)) {
        w->paused = false;
        accepting(w, true);
    } else {
        /* another worker's connections may be the ones that close */
        pause_accepting(w, ACCEPT_RETRY_MS);
    }
}

/* Nothing left to do: leave the loop (worker_main then reports). */
static void worker_done(struct worker *w)
{
    if (w->done) return;
    w->done = true;
    event_base_loopexit(w->base, NULL);
}

/* conn.h's `closed`: a connection of this worker was closed. */
static void conn_closed(struct conn_set *s)
{
    struct worker *w = (struct worker *)((char *)s - offsetof(struct worker, conns));
    atomic_fetch_sub(&w->sh->nconns, 1);
    if (w->paused && !s->stopping && below_limit(w)) {
        evtimer_del(w->resume_timer);
        w->paused = false;
        accepting(w, true);
    }
    if (s->stopping && conn_set_empty(s)) worker_done(w);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;
    struct tls_srv *tls = NULL;
    w->conns.now_ms = clock_now_ms();
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
        unsigned n = atomic_fetch_add(&w->sh->nconns, 1) + 1;
        conn_accepted(&w->conns, fd, &ss, len, tls);
        if (n >= w->conns.cfg->limits.max_connections && !w->paused) {
            log_debug("max_connections (%u) reached; pausing accept", n);
            pause_accepting(w, ACCEPT_RETRY_MS);
        }
    }
}

/* Makes the worker's accept events match the published listener set. */
static void sync_listeners(struct worker *w)
{
    struct listener_set *set = atomic_load(&w->sh->lset);
    size_t n = w->conns.stopping || !set ? 0 : set->n;
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
        if (w->ls[k].ev) event_free(w->ls[k].ev); /* removed: the control plane closes the fd */
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
    struct serve_shared *sh = w->sh;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    /* read the sequence before the commands: an acknowledged barrier then
     * covers every command sent before it */
    uint64_t seq = atomic_load(&sh->barrier_seq);
    unsigned cmds = atomic_exchange(&w->cmds, 0);
    w->conns.now_ms = clock_now_ms();
    if (cmds & WORKER_CONFIG) {
        struct config *c = atomic_load(&sh->cfg);
        if (c != w->conns.cfg) {
            struct config *old = w->conns.cfg;
            set_config(w, config_ref(c));
            config_unref(old); /* never the last: the control plane holds it until the barrier */
        }
    }
    if (cmds & WORKER_STOP && !w->conns.stopping) {
        w->conns.stopping = true;
        accepting(w, false);
        evtimer_del(w->resume_timer);
        sync_listeners(w); /* drops every accept event */
        conn_shutdown_all(&w->conns);
        if (conn_set_empty(&w->conns)) worker_done(w);
    }
    if (cmds & WORKER_LISTENERS) sync_listeners(w);
    if (cmds & WORKER_EXIT) worker_done(w);
    /* Acknowledge at every wakeup, not only when the barrier bit is among
     * the commands: that bit may have been taken by the previous wakeup,
     * which read an older sequence, and this one is back in the loop
     * having done everything sent before seq. */
    if (seq > atomic_load(&w->acked)) {
        atomic_store(&w->acked, seq);
        worker_kick(sh->efd);
    }
}

static void on_alog_timer(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    conn_alog_flush(&w->conns);
    conn_trim_free(&w->conns);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    conn_alog_flush(&w->conns);
    atomic_fetch_add(&w->sh->exited, 1);
    worker_kick(w->sh->efd);
    return NULL;
}

bool worker_init(struct worker *w, struct serve_shared *sh, unsigned id)
{
    w->sh = sh;
    w->id = id;
    w->efd = -1;
    struct event_config *ec = event_config_new();
    if (!ec) return false;
    /* one thread per base: libevent needs no locks */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base) return false;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) return false;
    w->mbox = event_new(w->base, w->efd, EV_READ | EV_PERSIST, on_mbox, w);
    w->resume_timer = evtimer_new(w->base, on_resume, w);
    w->alog_timer = event_new(w->base, -1, EV_PERSIST, on_alog_timer, w);
    w->conns.base = w->base;
    w->conns.alog_file = &sh->alog;
    w->conns.closed = conn_closed;
    if (!w->mbox || !w->resume_timer || !w->alog_timer || !conn_set_init(&w->conns)) return false;
    event_add(w->mbox, NULL);
    struct timeval second = {1, 0};
    event_add(w->alog_timer, &second);
    set_config(w, config_ref(atomic_load(&sh->cfg)));
    w->conns.now_ms = clock_now_ms();
    w->accepting = true;
    sync_listeners(w);
    return true;
}

int worker_start(struct worker *w)
{
    /* signals are the main loop's: a worker never sees one (nor an EINTR) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->started = e == 0;
    return e;
}

void worker_join(struct worker *w)
{
    if (w->started) pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_release(struct worker *w)
{
    if (!w->base) return;
    conn_set_free(&w->conns);
    for (size_t k = 0; k < w->nls; k++) {
        event_free(w->ls[k].ev);
        tls_srv_unref(w->ls[k].tls);
    }
    free(w->ls);
    w->ls = NULL;
    w->nls = 0;
    if (w->resume_timer) event_free(w->resume_timer);
    if (w->alog_timer) event_free(w->alog_timer);
    if (w->mbox) event_free(w->mbox);
    if (w->efd >= 0) close(w->efd);
    config_unref(w->conns.cfg);
    event_base_free(w->base);
    w->base = NULL;
}
