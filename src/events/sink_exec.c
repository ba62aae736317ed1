/* The exec event sink (sink_exec.h).
 *
 * One child at a time. For the event at the head of the queue:
 *   - a pipe (both ends close-on-exec; the write end non-blocking) carries
 *     the JSON and a newline to the child's standard input, written from a
 *     libevent write event, so a child that never reads costs the loop
 *     nothing;
 *   - posix_spawn (no shell, no PATH search: the config demands an absolute
 *     path) with the pipe dup'ed onto fd 0, every descriptor from 3 up
 *     closed in the child, a process group of its own, an empty signal mask
 *     and every signal at its default (detourd ignores SIGPIPE; libevent
 *     catches SIGHUP, SIGTERM, ...; neither must leak into the command);
 *   - a timer: after `timeout` the whole process group gets SIGKILL, so
 *     what the command started dies with it;
 *   - a libevent SIGCHLD event reaps the child with waitpid(pid, WNOHANG):
 *     only our own child, never anyone else's.
 * The outcome is logged (exit 0 at debug, anything else at warn with the
 * event's id and kind) and counted; a failed event is not retried. */
#include "autoconf.h"

#include "events/sink_exec.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
#include <dirent.h>
#endif

#include "control/config.h"
#include "events/events_config.h"
#include "events/events.h"
#include "lib/log.h"

extern char **environ;

/* A DETOURD_* value longer than this is cut (at a UTF-8 character
 * boundary): Linux refuses to exec with one string over 128 KiB
 * (MAX_ARG_STRLEN); the JSON on stdin is always whole. */
#define ENV_VALUE_MAX (32 * 1024)

/* How long sink_exec_free waits for a killed child to be reaped. */
#define FREE_REAP_WAIT_MS 100

struct sink_exec {
    struct event_base *base;
    struct events *hub;
    struct event_sink sink;
    bool attached;
    char **argv; /* the configured command (copied); NULL: not configured */
    uint64_t timeout_ms;
    struct event *kick;    /* starts the next event outside the producer's call */
    struct event *sigchld; /* added once the sink is first configured */
    /* the running child (pid 0: none) */
    pid_t pid;
    struct event_rec *cur; /* our own reference */
    /* cur is still the head of the queue (in progress counts in the queue's
     * length, as events.h asks); false once a full queue dropped it (then it
     * was counted as dropped, not again when it ends) or a reload removed the
     * sink (then its outcome is counted as usual) */
    bool cur_queued, cur_dropped;
    char *prog; /* its argv[0], for the log (a reload may change argv) */
    uint64_t cur_timeout_ms;
    struct timespec started;
    bool timed_out;
    int wfd;    /* write end of its stdin; -1 once done */
    char *wbuf; /* JSON + "\n" */
    size_t wlen, woff;
    struct event *wev;
    struct event *timer;
};

static const char *const env_names[] = {
    "DETOURD_EVENT_ID", "DETOURD_EVENT_KIND", "DETOURD_POOL",   "DETOURD_REGION",
    "DETOURD_FROM",     "DETOURD_TO",         "DETOURD_REASON", "DETOURD_TIME",
};
#define NENV (sizeof(env_names) / sizeof(env_names[0]))

static bool is_ours(const char *entry)
{
    for (size_t i = 0; i < NENV; i++) {
        size_t n = strlen(env_names[i]);
        if (strncmp(entry, env_names[i], n) == 0 && entry[n] == '=') return true;
    }
    return false;
}

char **sink_exec_env(char *const *base_env, const struct event_rec *ev)
{
    size_t n = 0;
    while (base_env && base_env[n]) n++;
    char **env = calloc(n + NENV + 1, sizeof(*env));
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_ours(base_env[i]) && !(env[k++] = strdup(base_env[i]))) goto oom;
    const char *const val[NENV] = {
        ev->id,  event_kind_name(ev->kind), ev->pool, ev->region, ev->from, ev->to, ev->reason,
        ev->time};
    for (size_t i = 0; i < NENV; i++) {
        if (!val[i]) continue; /* an absent field: the variable is unset */
        size_t vlen = strlen(val[i]);
        if (vlen > ENV_VALUE_MAX) {
            vlen = ENV_VALUE_MAX;
            while (vlen && ((unsigned char)val[i][vlen] & 0xC0) == 0x80) vlen--;
        }
        size_t len = strlen(env_names[i]) + 1 + vlen + 1;
        if (!(env[k] = malloc(len))) goto oom;
        snprintf(env[k++], len, "%s=%.*s", env_names[i], (int)vlen, val[i]);
    }
    return env;
oom:
    sink_exec_env_free(env);
    return NULL;
}

void sink_exec_env_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++) free(env[i]);
    free(env);
}

static void free_argv(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++) free(argv[i]);
    free(argv);
}

static uint64_t ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t ms = (int64_t)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
    return ms > 0 ? (uint64_t)ms : 0;
}

/* ---- the child's standard input ---- */

static void stdin_close(struct sink_exec *s)
{
    if (s->wev) event_del(s->wev);
    if (s->wfd >= 0) close(s->wfd);
    s->wfd = -1;
    free(s->wbuf);
    s->wbuf = NULL;
}

/* Writes what the pipe takes now; waits for writability for the rest. A
 * child that closed its stdin (EPIPE: SIGPIPE is ignored here) simply gets
 * no more. */
static void stdin_write(struct sink_exec *s)
{
    while (s->wfd >= 0 && s->woff < s->wlen) {
        ssize_t n = write(s->wfd, s->wbuf + s->woff, s->wlen - s->woff);
        if (n > 0) {
            s->woff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (s->wev && !event_pending(s->wev, EV_WRITE, NULL)) event_add(s->wev, NULL);
            return;
        } else {
            break; /* EPIPE: it does not want the event on stdin */
        }
    }
    stdin_close(s); /* all written (EOF for the child), or given up */
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    stdin_write(arg);
}

/* ---- spawning ---- */

/* Starts the command for ev; 0 or an errno value. */
static int spawn(struct sink_exec *s, struct event_rec *ev)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return errno;
    int err = 0;
    char **env = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    if (fcntl(p[1], F_SETFL, O_NONBLOCK) != 0) {
        err = errno;
        goto out;
    }
    if ((err = posix_spawn_file_actions_init(&fa))) goto out;
    fa_ok = true;
    /* dup2 onto 0 clears close-on-exec there (also when p[0] is 0 already) */
    if ((err = posix_spawn_file_actions_adddup2(&fa, p[0], STDIN_FILENO))) goto out;
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
    /* Everything of ours is opened close-on-exec except what libraries
     * create (libevent's outgoing sockets for health checks and webhooks)
     * and what the service manager passed: close all of it. */
    if ((err = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1))) goto out;
#else
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            int fd = atoi(de->d_name);
            if (fd > STDERR_FILENO && fd != dirfd(d) &&
                (err = posix_spawn_file_actions_addclose(&fa, fd))) {
                closedir(d);
                goto out;
            }
        }
        closedir(d);
    }
#endif
    if ((err = posix_spawnattr_init(&attr))) goto out;
    attr_ok = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if ((err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                   POSIX_SPAWN_SETSIGDEF)) ||
        (err = posix_spawnattr_setpgroup(&attr, 0)) ||
        (err = posix_spawnattr_setsigmask(&attr, &none)) ||
        (err = posix_spawnattr_setsigdefault(&attr, &all)))
        goto out;
    if (!(env = sink_exec_env(environ, ev)) || !(s->prog = strdup(s->argv[0])) ||
        !(s->wbuf = malloc(ev->json_len + 1))) {
        err = ENOMEM;
        goto out;
    }
    memcpy(s->wbuf, ev->json, ev->json_len);
    s->wbuf[ev->json_len] = '\n';
    s->wlen = ev->json_len + 1;
    s->woff = 0;
    pid_t pid;
    if ((err = posix_spawn(&pid, s->argv[0], &fa, &attr, s->argv, env))) goto out;
    s->pid = pid;
    s->cur = event_ref(ev);
    s->cur_queued = true;
    s->cur_dropped = false;
    s->cur_timeout_ms = s->timeout_ms;
    s->timed_out = false;
    clock_gettime(CLOCK_MONOTONIC, &s->started);
    s->wfd = p[1];
    p[1] = -1;
    s->wev = event_new(s->base, s->wfd, EV_WRITE | EV_PERSIST, on_writable, s);
    struct timeval tv = {(time_t)(s->cur_timeout_ms / 1000),
                         (suseconds_t)(s->cur_timeout_ms % 1000) * 1000};
    event_add(s->timer, &tv);
    log_debug("events exec: event %s (%s): started %s, pid %ld", ev->id, event_kind_name(ev->kind),
              s->prog, (long)pid);
    stdin_write(s);
out:
    if (err) {
        free(s->wbuf);
        s->wbuf = NULL;
        free(s->prog);
        s->prog = NULL;
    }
    if (attr_ok) posix_spawnattr_destroy(&attr);
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    sink_exec_env_free(env);
    close(p[0]);
    if (p[1] >= 0) close(p[1]);
    return err;
}

/* Runs queued events until one is running (or none is left). */
/* Starts the command for the oldest queued event. A command that cannot
 * be started fails its event, and the next one is tried on the loop's next
 * turn: a deleted binary with a full queue never holds the loop for a
 * thousand spawns in one callback. */
static void start_next(struct sink_exec *s)
{
    struct event_rec *ev;
    if (s->pid || !s->argv || !(ev = evq_peek(&s->sink.q))) return;
    int err = spawn(s, ev);
    if (!err) return;
    log_warn("events exec: event %s (%s) failed: cannot run %s: %s", ev->id,
             event_kind_name(ev->kind), s->argv[0], strerror(err));
    s->sink.failed++;
    event_unref(evq_pop(&s->sink.q));
    if (evq_peek(&s->sink.q) && s->kick) event_active(s->kick, EV_TIMEOUT, 1);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_next(arg);
}

/* Takes the running event out of the queue (when done, or before the
 * queue is cleared). */
static void unqueue_cur(struct sink_exec *s)
{
    if (!s->cur_queued) return;
    s->cur_queued = false;
    if (evq_peek(&s->sink.q) == s->cur) event_unref(evq_pop(&s->sink.q));
}

/* events.c calls this after each push: start outside the producer's stack.
 * A push into a full queue drops its head, which may be the running event:
 * events.c counted it as dropped. */
static void on_wake(void *arg)
{
    struct sink_exec *s = arg;
    if (s->pid && s->cur_queued && evq_peek(&s->sink.q) != s->cur) {
        s->cur_queued = false;
        s->cur_dropped = true;
    }
    if (!s->pid && s->kick) event_active(s->kick, EV_TIMEOUT, 1);
}

/* ---- the end of a child ---- */

/* The child was reaped with status st (or lost: st < 0). */
static void finished(struct sink_exec *s, int st)
{
    struct event_rec *ev = s->cur;
    const char *id = ev->id, *kind = event_kind_name(ev->kind);
    uint64_t ms = ms_since(&s->started);
    event_del(s->timer);
    stdin_close(s);
    if (s->wev) event_free(s->wev);
    s->wev = NULL;
    unqueue_cur(s);
    if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        log_debug("events exec: event %s (%s) delivered: %s exited 0 after %" PRIu64 " ms", id,
                  kind, s->prog, ms);
        if (!s->cur_dropped) s->sink.delivered++;
    } else {
        if (s->timed_out)
            log_warn("events exec: event %s (%s) failed: %s did not finish within its timeout "
                     "(%" PRIu64 " ms); its process group was killed (SIGKILL)",
                     id, kind, s->prog, s->cur_timeout_ms);
        else if (st < 0)
            log_warn("events exec: event %s (%s) failed: %s (pid %ld) was reaped elsewhere", id,
                     kind, s->prog, (long)s->pid);
        else if (WIFEXITED(st))
            log_warn("events exec: event %s (%s) failed: %s exited with status %d after %" PRIu64
                     " ms",
                     id, kind, s->prog, WEXITSTATUS(st), ms);
        else
            log_warn("events exec: event %s (%s) failed: %s was killed by signal %d (%s) after "
                     "%" PRIu64 " ms",
                     id, kind, s->prog, WTERMSIG(st), strsignal(WTERMSIG(st)), ms);
        if (!s->cur_dropped) s->sink.failed++;
    }
    free(s->prog);
    s->prog = NULL;
    event_unref(ev);
    s->cur = NULL;
    s->pid = 0;
}

/* Reaps our child if it ended: true if it did (then it is finished). */
static bool reap(struct sink_exec *s)
{
    if (!s->pid) return false;
    int st;
    pid_t r;
    do r = waitpid(s->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    finished(s, r == s->pid ? st : -1);
    return true;
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    struct sink_exec *s = arg;
    (void)sig, (void)what;
    if (reap(s)) start_next(s);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sink_exec *s = arg;
    (void)fd, (void)what;
    if (reap(s)) { /* it ended just now; SIGCHLD is on its way */
        start_next(s);
        return;
    }
    s->timed_out = true;
    kill(-s->pid, SIGKILL); /* the group: what it started dies too */
    stdin_close(s);
    /* reaped by on_sigchld */
}

/* ---- life cycle ---- */

struct sink_exec *sink_exec_new(struct event_base *base, struct events *hub)
{
    struct sink_exec *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base = base;
    s->hub = hub;
    s->wfd = -1;
    s->sink.name = "exec";
    s->sink.wake = on_wake;
    s->sink.arg = s;
    s->kick = event_new(base, -1, 0, on_kick, s);
    s->timer = evtimer_new(base, on_timeout, s);
    if (!s->kick || !s->timer || !evq_init(&s->sink.q, EVENTS_QUEUE_MAX)) {
        sink_exec_free(s);
        return NULL;
    }
    return s;
}

static char **copy_argv(char *const *argv, size_t argc)
{
    char **v = calloc(argc + 1, sizeof(*v));
    for (size_t i = 0; v && i < argc; i++)
        if (!(v[i] = strdup(argv[i]))) {
            free_argv(v);
            return NULL;
        }
    return v;
}

void sink_exec_config(struct sink_exec *s, const struct events_cfg *cfg)
{
    if (!s) return;
    if (!cfg->exec_argv || !cfg->exec_argc) {
        if (s->attached) {
            events_sink_remove(s->hub, &s->sink);
            unqueue_cur(s); /* it finishes and is counted then */
            s->sink.dropped += evq_clear(&s->sink.q);
            s->attached = false;
            log_info("events exec: no command configured any more%s",
                     s->pid ? "; the running one finishes" : "");
        }
        free_argv(s->argv);
        s->argv = NULL;
        return;
    }
    char **argv = copy_argv(cfg->exec_argv, cfg->exec_argc);
    if (!argv) {
        log_error("events exec: out of memory; keeping the previous command");
        return;
    }
    free_argv(s->argv); /* the running child has its own copy (execve'd) */
    s->argv = argv;
    s->timeout_ms = cfg->exec_timeout_ms;
    if (!s->sigchld) {
        s->sigchld = evsignal_new(s->base, SIGCHLD, on_sigchld, s);
        if (!s->sigchld || evsignal_add(s->sigchld, NULL) != 0) {
            log_error("events exec: cannot watch SIGCHLD; no command will run");
            if (s->sigchld) event_free(s->sigchld);
            s->sigchld = NULL;
            free_argv(s->argv);
            s->argv = NULL;
            return;
        }
    }
    if (!s->attached) {
        events_sink_add(s->hub, &s->sink);
        s->attached = true;
    }
}

void sink_exec_free(struct sink_exec *s)
{
    if (!s) return;
    if (s->attached) events_sink_remove(s->hub, &s->sink);
    unqueue_cur(s);
    s->sink.dropped += evq_clear(&s->sink.q);
    if (s->pid) {
        /* The event's notification cannot complete any more: SIGKILL its
         * whole group (a SIGTERM could be ignored and leave it behind),
         * then reap it if it ends at once; if it does not within
         * FREE_REAP_WAIT_MS, the daemon is exiting and init reaps it. */
        log_warn("events exec: event %s (%s) abandoned at shutdown: killing %s (pid %ld)",
                 s->cur->id, event_kind_name(s->cur->kind), s->prog, (long)s->pid);
        kill(-s->pid, SIGKILL);
        for (int i = 0; i < FREE_REAP_WAIT_MS; i++) {
            pid_t r = waitpid(s->pid, NULL, WNOHANG);
            if (r != 0 && !(r < 0 && errno == EINTR)) break;
            nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
        }
        if (!s->cur_dropped) s->sink.failed++;
        event_unref(s->cur);
        s->cur = NULL;
        s->pid = 0;
    }
    stdin_close(s);
    if (s->wev) event_free(s->wev);
    if (s->timer) event_free(s->timer);
    if (s->kick) event_free(s->kick);
    if (s->sigchld) event_free(s->sigchld);
    evq_free(&s->sink.q);
    free_argv(s->argv);
    free(s->prog);
    free(s);
}
