/* Logging to stderr: levels, text or JSON lines. The daemon never writes
 * its own log files; systemd's journal or the container runtime takes
 * stderr from there. */
#ifndef DETOURD_LOG_H
#define DETOURD_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_setup(enum log_level level, bool json);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__);                               \
    } while (0)

/* From log_async_start on, lines go through a writer thread: no thread
 * that logs ever waits for stderr (a full ring drops the line and counts
 * it). log_async_stop waits up to timeout_ms for what is queued to be
 * written, then logs directly again; false if stderr did not take it in
 * time (later lines are then dropped). An exit through exit() or a return
 * from main stops it that way; _exit() callers call log_async_stop first. */
#define LOG_EXIT_WAIT_MS 1000 /* how long an exit waits for stderr to take the queue */
bool log_async_start(void);
bool log_async_stop(int timeout_ms);

/* Parses "error" | "warn" | "info" | "debug"; false if unknown. */
bool log_parse_level(const char *s, enum log_level *out);

#endif
