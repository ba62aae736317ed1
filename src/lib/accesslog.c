#include "autoconf.h"

#include "lib/accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/json.h"
#include "lib/lit.h"

bool alog_open(const char *path, struct alog_file **out, char *err, size_t errlen)
{
    /* never waits: a FIFO without a reader is an error (ENXIO) rather than
     * a hang, and a full pipe drops lines rather than stall a worker */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "access_log %s: %s", path, strerror(errno));
        return false;
    }
    struct alog_file *f = malloc(sizeof(*f));
    if (!f) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return false;
    }
    f->fd = fd;
    *out = f;
    return true;
}

void alog_file_close(void *p)
{
    struct alog_file *f = p;
    if (!f) return;
    close(f->fd);
    free(f);
}

void alog_buf_free(struct alog_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static bool reserve(struct alog_buf *b, size_t n)
{
    if (b->len + n <= b->cap) return true;
    size_t cap = b->cap ? b->cap : ALOG_FLUSH_AT + ALOG_MAX_LINE;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* Every call stays inside what alog_append() reserved. */
static void put(struct alog_buf *b, const char *s, size_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* escaped fields in a line: method, target, host, pool, region, referer,
 * user agent (each at most 6 bytes a byte escaped, either format) */
#define ALOG_FIELDS 7

static const char hexd[] = "0123456789abcdef";

/* Copies a field (cut at ALOG_MAX_FIELD). JSON: a quoted string by the JSON
 * escaper, or null. Combined: quotes, backslashes, control characters and
 * bytes >= 0x7f become \xHH, as nginx writes them, or "-" when absent. */
static void put_esc(struct alog_buf *b, struct alog_str s, bool json)
{
    if (!s.p) {
        if (json)
            put(b, LIT("null"));
        else
            put(b, LIT("-"));
        return;
    }
    size_t n = s.len < ALOG_MAX_FIELD ? s.len : ALOG_MAX_FIELD;
    if (json) {
        put(b, LIT("\""));
        b->len += json_escape(b->p + b->len, s.p, n);
        put(b, LIT("\""));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, sizeof(e));
        } else if (c < 0x20 || c >= 0x7f) {
            char e[4] = {'\\', 'x', hexd[c >> 4], hexd[c & 15]};
            put(b, e, sizeof(e));
        } else {
            b->p[b->len++] = (char)c;
        }
    }
}

static void put_cstr(struct alog_buf *b, const char *s, bool json)
{
    struct alog_str v = {s, s ? strlen(s) : 0};
    put_esc(b, v, json);
}

static void client_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)len);
    else if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)len);
    else
        snprintf(buf, len, "-");
}

void alog_append(struct alog_buf *b, const struct alog_entry *e, bool json, time_t now)
{
    if (!reserve(b, ALOG_MAX_LINE + ALOG_FIELDS * JSON_ESCAPE_MAX(ALOG_MAX_FIELD))) {
        b->dropped++;
        return;
    }
    if (b->sec != now || !b->when[0] || b->when_json != json) {
        b->when_json = json;
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(b->when, sizeof(b->when), json ? "%Y-%m-%dT%H:%M:%SZ" : "%d/%b/%Y:%H:%M:%S +0000",
                 &tm);
        b->sec = now;
    }
    char client[INET6_ADDRSTRLEN], num[64];
    client_text(e->peer, client, sizeof(client));
    int n;
    if (json) {
        n = snprintf(num, sizeof(num), "{\"time\":\"%s\",\"client\":\"", b->when);
        put(b, num, (size_t)n);
        put(b, client, strlen(client));
        put(b, LIT("\",\"method\":"));
        put_esc(b, e->method, true);
        put(b, LIT(",\"target\":"));
        put_esc(b, e->target, true);
        n = snprintf(num, sizeof(num), ",\"proto\":\"HTTP/1.%u\",\"status\":%u,\"bytes\":%zu",
                     e->minor, e->status, e->bytes);
        put(b, num, (size_t)n);
        put(b, LIT(",\"host\":"));
        put_esc(b, e->host, true);
        put(b, LIT(",\"pool\":"));
        put_cstr(b, e->pool, true);
        put(b, LIT(",\"region\":"));
        put_cstr(b, e->region, true);
        put(b, LIT(",\"referer\":"));
        put_esc(b, e->referer, true);
        put(b, LIT(",\"user_agent\":"));
        put_esc(b, e->ua, true);
        put(b, LIT("}\n"));
        return;
    }
    /* combined: client - - [time] "request" status bytes "referer" "ua" */
    put(b, client, strlen(client));
    put(b, LIT(" - - ["));
    put(b, b->when, strlen(b->when));
    put(b, LIT("] \""));
    if (e->method.p) {
        put_esc(b, e->method, false);
        put(b, LIT(" "));
        put_esc(b, e->target, false);
        n = snprintf(num, sizeof(num), " HTTP/1.%u", e->minor);
        put(b, num, (size_t)n);
    } else {
        put(b, LIT("-"));
    }
    n = snprintf(num, sizeof(num), "\" %u %zu \"", e->status, e->bytes);
    put(b, num, (size_t)n);
    put_esc(b, e->referer, false);
    put(b, LIT("\" \""));
    put_esc(b, e->ua, false);
    put(b, LIT("\"\n"));
}

void alog_flush(struct alog_buf *b, const struct alog_file *f)
{
    size_t off = 0;
    while (f && off < b->len) {
        ssize_t n = write(f->fd, b->p + off, b->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* disk full and the like: drop rather than block */
        off += (size_t)n;
    }
    b->len = 0;
}
