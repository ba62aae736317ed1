#include "autoconf.h"

#include "lib/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/json.h"

/* set by the main thread, read by every thread */
static _Atomic int cur_level = LOG_INFO;
static _Atomic bool cur_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities (sd-daemon(3)): err, warning, info, debug */
static const char *const level_prefix[] = {"<3>", "<4>", "<6>", "<7>"};

/* Is stderr the journal? systemd sets JOURNAL_STREAM to the device and
 * inode of the stream it connected (systemd.exec(5)); a line then starts
 * with its priority, so that `journalctl -p warning` can filter. Decided
 * once: stderr is not reopened. */
static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static bool to_journal;

static void journal_check(void)
{
    const char *v = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char end;
    to_journal = v && sscanf(v, "%llu:%llu%c", &dev, &ino, &end) == 2 &&
                 fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
                 (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_level level, bool json)
{
    atomic_store_explicit(&cur_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&cur_json, json, memory_order_relaxed);
}

bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&cur_level, memory_order_relaxed);
}

bool log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

/* Writes all of buf to stderr, blocking; gives up on an error. */
static void write_all(const char *buf, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t k = write(STDERR_FILENO, buf + off, len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
}

/* The writer thread. Once the daemon runs, no thread writes stderr itself:
 * a journal that stalls, or a pipe nobody reads, would otherwise stop the
 * thread that logs -- a worker logging a failed handshake would stop
 * answering redirects. Lines go into a ring (a copy under a mutex held for
 * nothing else) and one thread writes them out, blocking as long as stderr
 * does; a line that finds the ring full is dropped and counted, and the
 * count is written once the ring drains. Before log_async_start and after
 * log_async_stop, log_msg writes directly. */
#define RING_SIZE (256u * 1024u)
enum ring_mode { MODE_DIRECT, MODE_RING, MODE_DROP };
static struct {
    pthread_mutex_t mu;
    pthread_cond_t more, drained;
    char *buf;
    size_t head, used;  /* the oldest byte; bytes waiting */
    unsigned long lost; /* lines dropped since the last report */
    bool stop, idle;    /* log_async_stop asked; the writer has nothing left */
    enum ring_mode mode;
    pthread_t thread;
} ring = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .more = PTHREAD_COND_INITIALIZER,
          .drained = PTHREAD_COND_INITIALIZER};

static void *ring_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ring.mu);
    for (;;) {
        while (ring.used == 0 && !ring.lost && !ring.stop) {
            ring.idle = true;
            pthread_cond_broadcast(&ring.drained);
            pthread_cond_wait(&ring.more, &ring.mu);
        }
        ring.idle = false;
        if (ring.used == 0 && !ring.lost) break; /* stop, and nothing left */
        size_t n = ring.used < RING_SIZE - ring.head ? ring.used : RING_SIZE - ring.head;
        const char *p = ring.buf + ring.head;
        unsigned long lost = ring.used == 0 ? ring.lost : 0;
        if (lost) ring.lost = 0;
        pthread_mutex_unlock(&ring.mu);
        if (n) write_all(p, n);
        if (lost) {
            char msg[96];
            int k = snprintf(msg, sizeof(msg),
                             "detourd[warn]: %lu log line%s dropped: stderr did not keep up\n",
                             lost, lost == 1 ? "" : "s");
            if (k > 0) write_all(msg, (size_t)k);
        }
        pthread_mutex_lock(&ring.mu);
        ring.head = (ring.head + n) % RING_SIZE;
        ring.used -= n;
    }
    ring.idle = true;
    pthread_cond_broadcast(&ring.drained);
    pthread_mutex_unlock(&ring.mu);
    return NULL;
}

static void flush_at_exit(void)
{
    log_async_stop(LOG_EXIT_WAIT_MS);
}

bool log_async_start(void)
{
    if (ring.mode != MODE_DIRECT) return true;
    ring.buf = malloc(RING_SIZE);
    if (!ring.buf) return false;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the writer takes no signal */
    int e = pthread_create(&ring.thread, NULL, ring_writer, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        free(ring.buf);
        ring.buf = NULL;
        return false;
    }
    pthread_mutex_lock(&ring.mu);
    ring.mode = MODE_RING;
    pthread_mutex_unlock(&ring.mu);
    atexit(flush_at_exit); /* every return from main writes what is queued */
    return true;
}

bool log_async_stop(int timeout_ms)
{
    pthread_mutex_lock(&ring.mu);
    if (ring.mode != MODE_RING) {
        pthread_mutex_unlock(&ring.mu);
        return true;
    }
    ring.stop = true;
    pthread_cond_signal(&ring.more);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int e = 0;
    while (!(ring.idle && ring.used == 0 && !ring.lost) && e == 0)
        e = pthread_cond_timedwait(&ring.drained, &ring.mu, &until);
    bool done = ring.idle && ring.used == 0 && !ring.lost;
    /* a writer still blocked keeps the ring: later lines are dropped */
    ring.mode = done ? MODE_DIRECT : MODE_DROP;
    pthread_mutex_unlock(&ring.mu);
    if (!done) return false;
    pthread_join(ring.thread, NULL);
    free(ring.buf);
    ring.buf = NULL;
    return true;
}

/* Queues (or, outside the daemon's run, writes) one whole line. */
static void emit(const char *line, size_t len)
{
    pthread_mutex_lock(&ring.mu);
    if (ring.mode == MODE_DIRECT) {
        pthread_mutex_unlock(&ring.mu);
        write_all(line, len);
        return;
    }
    if (ring.mode == MODE_RING && RING_SIZE - ring.used >= len) {
        size_t tail = (ring.head + ring.used) % RING_SIZE;
        size_t first = len < RING_SIZE - tail ? len : RING_SIZE - tail;
        memcpy(ring.buf + tail, line, first);
        memcpy(ring.buf, line + first, len - first);
        ring.used += len;
        pthread_cond_signal(&ring.more);
    } else if (ring.mode == MODE_RING) {
        ring.lost++;
    }
    pthread_mutex_unlock(&ring.mu);
}

/* Each line is formatted whole and leaves in one piece: lines of different
 * threads never interleave. */
void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000);
    char line[JSON_ESCAPE_MAX(sizeof(msg)) + 128];
    int n;
    pthread_once(&journal_once, journal_check);
    const char *prio = to_journal ? level_prefix[level] : "";
    if (atomic_load_explicit(&cur_json, memory_order_relaxed)) {
        char esc[JSON_ESCAPE_MAX(sizeof(msg))];
        size_t len = json_escape(esc, msg, strlen(msg));
        n = snprintf(line, sizeof(line), "%s{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%.*s\"}\n",
                     prio, when, level_names[level], (int)len, esc);
    } else {
        n = snprintf(line, sizeof(line), "%s%s detourd[%s]: %s\n", prio, when, level_names[level],
                     msg);
    }
    if (n < 0) return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    emit(line, len);
}
