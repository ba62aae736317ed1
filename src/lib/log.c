#include "autoconf.h"

#include "lib/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/json.h"

/* set by the main thread, read by every thread */
static _Atomic int cur_level = LOG_INFO;
static _Atomic bool cur_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

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
    if (atomic_load_explicit(&cur_json, memory_order_relaxed)) {
        char esc[JSON_ESCAPE_MAX(sizeof(msg))];
        size_t len = json_escape(esc, msg, strlen(msg));
        n = snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%.*s\"}\n",
                     when, level_names[level], (int)len, esc);
    } else {
        n = snprintf(line, sizeof(line), "%s detourd[%s]: %s\n", when, level_names[level], msg);
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
