#include "autoconf.h"

#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"

#define ACCEPT_BATCH    64  /* connections taken per wakeup of a listener */
#define ACCEPT_RETRY_MS 100 /* pause after EMFILE and friends */

uint64_t worker_now(struct worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    (void)w;
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void accepting(struct worker *w, bool on)
{
    if (w->accepting == on) return;
    for (size_t i = 0; i < w->nls; i++) {
        if (!w->ls[i].ev) continue;
        if (on)
            event_add(w->ls[i].ev, NULL);
        else
            event_del(w->ls[i].ev);
    }
    w->accepting = on;
}

static void pause_accepting(struct worker *w, unsigned ms)
{
    accepting(w, false);
    w->paused = true;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(w->resume_timer, &tv);
}

static bool below_limit(struct worker *w)
{
    return atomic_load(&w->srv->nconns) < w->srv->cfg->limits.max_connections;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->srv->stopping) return;
    if (below_limit(w)) {
        w->paused = false;
        accepting(w, true);
    } else {
        pause_accepting(w, ACCEPT_RETRY_MS);
    }
}

void server_conn_closed(struct worker *w)
{
    atomic_fetch_sub(&w->srv->nconns, 1);
    if (w->paused && !w->srv->stopping && below_limit(w)) {
        evtimer_del(w->resume_timer);
        w->paused = false;
        accepting(w, true);
    }
    if (w->srv->stopping && !w->conns) event_base_loopexit(w->base, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    w->now_ms = worker_now(w);
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
        conn_accepted(w, fd, &ss, len);
        if (n >= s->cfg->limits.max_connections && !w->paused) {
            log_debug("max_connections (%u) reached; pausing accept", n);
            accepting(w, false);
            w->paused = true;
        }
    }
}

bool server_init(struct server *s, struct event_base *base, struct config *cfg, char *err,
                 size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    atomic_init(&s->nconns, 0);
    struct worker *w = &s->w;
    w->srv = s;
    w->base = base;
    w->now_ms = worker_now(w);
    w->resume_timer = evtimer_new(base, on_resume, w);
    w->ls = calloc(cfg->nlisten, sizeof(*w->ls));
    if (!w->ls || !w->resume_timer) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = listener_open(&cfg->listen[i], err, errlen);
        if (fd < 0) return false;
        w->ls[w->nls].fd = fd;
        w->ls[w->nls].ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, w);
        w->nls++;
        if (!w->ls[w->nls - 1].ev) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
    }
    accepting(w, true);
    return true;
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    log_warn("shutdown_timeout reached; closing the remaining connections");
    event_base_loopexit(s->w.base, NULL);
}

void server_stop(struct server *s)
{
    struct worker *w = &s->w;
    if (s->stopping) return;
    s->stopping = true;
    accepting(w, false);
    evtimer_del(w->resume_timer);
    for (size_t i = 0; i < w->nls; i++) {
        event_free(w->ls[i].ev);
        w->ls[i].ev = NULL;
        close(w->ls[i].fd);
        w->ls[i].fd = -1;
    }
    /* idle connections close now, busy ones after their answer */
    conn_shutdown_all(w);
    uint64_t ms = s->cfg->limits.shutdown_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    s->stop_timer = evtimer_new(w->base, on_stop_timeout, s);
    if (s->stop_timer) evtimer_add(s->stop_timer, &tv);
    if (!w->conns) event_base_loopexit(w->base, NULL);
}

void server_free(struct server *s)
{
    struct worker *w = &s->w;
    conn_free_pool(w);
    for (size_t i = 0; i < w->nls; i++) {
        if (w->ls[i].ev) event_free(w->ls[i].ev);
        if (w->ls[i].fd >= 0) close(w->ls[i].fd);
    }
    free(w->ls);
    if (w->resume_timer) event_free(w->resume_timer);
    if (s->stop_timer) event_free(s->stop_timer);
}
