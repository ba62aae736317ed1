#include "autoconf.h"

#include "lib/log.h"

#include <errno.h>
#include <pthread.h>
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

/* Each line leaves in one write(2), not through stdio: no lock is shared
 * between threads, and lines of different threads never interleave. */
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
    for (size_t off = 0; off < len;) {
        ssize_t k = write(STDERR_FILENO, line + off, len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
}
