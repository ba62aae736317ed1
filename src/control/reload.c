/* Loading a new configuration on a thread of its own: see reload.h.
 *
 * A load is a job shared by its thread and the main thread, freed by
 * whichever lets go of it last. The thread reports through the job's own
 * eventfd, so an abandoned job can still finish and report into the void
 * after the reloader is gone. Its state is decided once, by a
 * compare-and-swap: done (the thread finished first) or abandoned (the
 * deadline came first). */
#include "autoconf.h"

#include "control/reload.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"
#include "lib/log.h"

enum job_state { JOB_RUNNING, JOB_DONE, JOB_ABANDONED };

struct job {
    struct config *(*load)(const char *path, struct diag *d);
    _Atomic int state;
    _Atomic unsigned refs; /* the thread's and the main thread's */
    int efd;
    char *path;
    char *running_alog; /* NULL: none */
    struct reload_result r;
};

struct reloader {
    struct event_base *base;
    char *path;
    struct reload_hooks hooks;
    void *arg;
    struct job *job; /* the load running now, or NULL */
    struct event *job_ev;
    struct event *timer;
    bool pending; /* asked for again while a load ran */
};

/* Abandoned loads whose threads still run, and loader threads alive (over
 * every reloader). */
static _Atomic unsigned stuck, alive;

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void job_unref(struct job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1) return;
    config_free(j->r.cfg);
    alog_file_close(j->r.alog);
    diag_free(&j->r.dg);
    if (j->efd >= 0) close(j->efd);
    free(j->path);
    free(j->running_alog);
    free(j);
}

static void *load_main(void *arg)
{
    struct job *j = arg;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct reload_result *r = &j->r;
    r->cfg = j->load(j->path, &r->dg);
    const char *alog = r->cfg ? r->cfg->access_log : NULL;
    if (alog && !(j->running_alog && strcmp(alog, j->running_alog) == 0) &&
        !alog_open(alog, &r->alog, r->err, sizeof(r->err))) {
        config_free(r->cfg); /* never published: nothing else holds it */
        r->cfg = NULL;
    }
    r->load_ms = ms_since(&t0);
    int running = JOB_RUNNING;
    if (atomic_compare_exchange_strong(&j->state, &running, JOB_DONE)) {
        uint64_t one = 1;
        ssize_t w = write(j->efd, &one, sizeof(one));
        (void)w;
    } else {
        atomic_fetch_sub(&stuck, 1);
        log_warn("reload: the abandoned load of %s ended after %.0f ms; its result is dropped",
                 j->path, r->load_ms);
    }
    job_unref(j);
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

static void finish(struct reloader *rl);

static void on_job(evutil_socket_t fd, short what, void *arg)
{
    struct reloader *rl = arg;
    struct job *j = rl->job;
    (void)fd, (void)what;
    if (!j || atomic_load(&j->state) != JOB_DONE) return;
    rl->hooks.done(rl->arg, &j->r);
    finish(rl);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct reloader *rl = arg;
    struct job *j = rl->job;
    (void)fd, (void)what;
    int running = JOB_RUNNING;
    if (!j || !atomic_compare_exchange_strong(&j->state, &running, JOB_ABANDONED))
        return; /* it finished just now: on_job follows */
    atomic_fetch_add(&stuck, 1);
    struct reload_result r = {.path = rl->path};
    diag_init(&r.dg, rl->path);
    unsigned ms = rl->hooks.timeout_ms ? rl->hooks.timeout_ms : RELOAD_TIMEOUT_MS;
    snprintf(r.err, sizeof(r.err),
             "the new configuration was still loading after %g s: abandoned (a file that "
             "cannot be read?)",
             ms / 1000.0);
    rl->hooks.done(rl->arg, &r);
    diag_free(&r.dg);
    finish(rl);
}

/* Starts a thread with every signal blocked: signals stay the main loop's. */
static int spawn(struct job *j)
{
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t t;
    if (pthread_attr_init(&attr)) return ENOMEM;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    atomic_fetch_add(&alive, 1);
    int e = pthread_create(&t, &attr, load_main, j);
    if (e) atomic_fetch_sub(&alive, 1);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return e;
}

static bool start(struct reloader *rl)
{
    if (atomic_load(&stuck) >= RELOAD_MAX_STUCK) {
        log_error("reload of %s refused: %u earlier loads are still stuck reading files", rl->path,
                  atomic_load(&stuck));
        return false;
    }
    struct job *j = calloc(1, sizeof(*j));
    const char *alog = rl->hooks.starting(rl->arg);
    if (!j || !(j->path = strdup(rl->path)) || (alog && !(j->running_alog = strdup(alog)))) {
        if (j) free(j->path);
        free(j);
        log_error("reload of %s: out of memory", rl->path);
        return false;
    }
    j->load = rl->hooks.load ? rl->hooks.load : config_load;
    atomic_init(&j->state, JOB_RUNNING);
    atomic_init(&j->refs, 2);
    j->r.path = j->path;
    diag_init(&j->r.dg, j->path);
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rl->job_ev = j->efd >= 0 ? event_new(rl->base, j->efd, EV_READ, on_job, rl) : NULL;
    int e = rl->job_ev ? spawn(j) : errno;
    if (e) {
        log_error("reload of %s: cannot start a loader thread: %s", rl->path, strerror(e));
        if (rl->job_ev) event_free(rl->job_ev);
        rl->job_ev = NULL;
        atomic_store(&j->refs, 1);
        job_unref(j);
        return false;
    }
    rl->job = j;
    event_add(rl->job_ev, NULL);
    unsigned ms = rl->hooks.timeout_ms ? rl->hooks.timeout_ms : RELOAD_TIMEOUT_MS;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(rl->timer, &tv);
    return true;
}

/* The running load is over (done or abandoned): the next one may start. */
static void finish(struct reloader *rl)
{
    evtimer_del(rl->timer);
    if (rl->job_ev) event_free(rl->job_ev);
    rl->job_ev = NULL;
    job_unref(rl->job);
    rl->job = NULL;
    if (rl->pending) {
        rl->pending = false;
        start(rl);
    }
}

struct reloader *reloader_new(struct event_base *base, const char *path,
                              const struct reload_hooks *hooks, void *arg)
{
    struct reloader *rl = calloc(1, sizeof(*rl));
    if (!rl) return NULL;
    rl->base = base;
    rl->hooks = *hooks;
    rl->arg = arg;
    rl->path = strdup(path);
    rl->timer = evtimer_new(base, on_timeout, rl);
    if (!rl->path || !rl->timer) {
        reloader_free(rl);
        return NULL;
    }
    return rl;
}

bool reloader_request(struct reloader *rl)
{
    if (rl->job) {
        rl->pending = true;
        log_info("reload of %s: one is running; the new one follows it", rl->path);
        return true;
    }
    return start(rl);
}

unsigned reloader_stuck(void)
{
    return atomic_load(&stuck);
}

bool reloader_wait(unsigned ms)
{
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (unsigned waited = 0; atomic_load(&alive); waited += 10) {
        if (waited >= ms) return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

bool reloader_busy(const struct reloader *rl)
{
    return rl->job != NULL;
}

void reloader_free(struct reloader *rl)
{
    if (!rl) return;
    if (rl->job) {
        int running = JOB_RUNNING;
        if (atomic_compare_exchange_strong(&rl->job->state, &running, JOB_ABANDONED))
            atomic_fetch_add(&stuck, 1);
        rl->pending = false;
        finish(rl);
    }
    if (rl->timer) event_free(rl->timer);
    free(rl->path);
    free(rl);
}
