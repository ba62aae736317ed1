/* The access log: one line per answered request, combined or JSON.
 * Each worker formats into its own buffer (no lock, no syscall on the
 * request path) and writes it out when it grows past ALOG_FLUSH_AT or once
 * a second. The file is shared; SIGUSR1 (logrotate) opens a new one and the
 * old one is closed once no worker can still be writing to it. */
#ifndef DETOURD_ACCESSLOG_H
#define DETOURD_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define ALOG_FLUSH_AT  (32 * 1024)
#define ALOG_MAX_LINE  (4 * 1024) /* longer fields are cut */
#define ALOG_MAX_FIELD 2048

struct alog_file {
    int fd;
};

struct alog_buf {
    char *p;
    size_t len, cap;
    time_t sec;
    char when[40]; /* cached per second */
    bool when_json;
    uint64_t dropped;
};

struct alog_str {
    const char *p;
    size_t len; /* p == NULL: absent ("-") */
};

struct alog_entry {
    const struct sockaddr_storage *peer;
    struct alog_str method, target, host, ua, referer;
    unsigned minor;
    unsigned status;
    size_t bytes;
    const char *pool, *region; /* NULL: "-" */
};

bool alog_open(const char *path, struct alog_file **out, char *err, size_t errlen);
void alog_file_close(void *f); /* for server_retire */
void alog_buf_free(struct alog_buf *b);
void alog_append(struct alog_buf *b, const struct alog_entry *e, bool json, time_t now);
/* Writes the buffer to f (if any) and empties it. */
void alog_flush(struct alog_buf *b, const struct alog_file *f);

#endif
