#include "autoconf.h"

#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/json.h"

static enum log_level cur_level = LOG_INFO;
static bool cur_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(enum log_level level, bool json)
{
    cur_level = level;
    cur_json = json;
}

bool log_enabled(enum log_level level)
{
    return level <= cur_level;
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

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > cur_level) return;
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
    if (cur_json) {
        char esc[JSON_ESCAPE_MAX(sizeof(msg))];
        size_t n = json_escape(esc, msg, strlen(msg));
        fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%.*s\"}\n", when,
                level_names[level], (int)n, esc);
    } else {
        fprintf(stderr, "%s detourd[%s]: %s\n", when, level_names[level], msg);
    }
}
