#include "autoconf.h"

#include "accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool alog_open(const char *path, struct alog_file **out, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
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

static void put(struct alog_buf *b, const char *s, size_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static const char hexd[] = "0123456789abcdef";

/* Copies a field, escaping what could break the line: quotes, backslashes,
 * control characters and bytes >= 0x80 (combined: \xHH; JSON: \u00HH). */
static void put_esc(struct alog_buf *b, struct alog_str s, bool json)
{
    if (!s.p) {
        if (json)
            put(b, "null", 4);
        else
            put(b, "-", 1);
        return;
    }
    size_t n = s.len < ALOG_MAX_FIELD ? s.len : ALOG_MAX_FIELD;
    if (json) put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            if (json) {
                char e[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
                put(b, e, 6);
            } else {
                char e[4] = {'\\', 'x', hexd[c >> 4], hexd[c & 15]};
                put(b, e, 4);
            }
        } else {
            b->p[b->len++] = (char)c;
        }
    }
    if (json) put(b, "\"", 1);
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
    if (!reserve(b, ALOG_MAX_LINE + 6 * 6 * ALOG_MAX_FIELD)) {
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
        put(b, "\",\"method\":", 11);
        put_esc(b, e->method, true);
        put(b, ",\"target\":", 10);
        put_esc(b, e->target, true);
        n = snprintf(num, sizeof(num), ",\"proto\":\"HTTP/1.%u\",\"status\":%u,\"bytes\":%zu",
                     e->minor, e->status, e->bytes);
        put(b, num, (size_t)n);
        put(b, ",\"host\":", 8);
        put_esc(b, e->host, true);
        put(b, ",\"pool\":", 8);
        put_cstr(b, e->pool, true);
        put(b, ",\"region\":", 10);
        put_cstr(b, e->region, true);
        put(b, ",\"referer\":", 11);
        put_esc(b, e->referer, true);
        put(b, ",\"user_agent\":", 14);
        put_esc(b, e->ua, true);
        put(b, "}\n", 2);
        return;
    }
    /* combined: client - - [time] "request" status bytes "referer" "ua" */
    put(b, client, strlen(client));
    put(b, " - - [", 6);
    put(b, b->when, strlen(b->when));
    put(b, "] \"", 3);
    if (e->method.p) {
        put_esc(b, e->method, false);
        put(b, " ", 1);
        put_esc(b, e->target, false);
        n = snprintf(num, sizeof(num), " HTTP/1.%u", e->minor);
        put(b, num, (size_t)n);
    } else {
        put(b, "-", 1);
    }
    n = snprintf(num, sizeof(num), "\" %u %zu \"", e->status, e->bytes);
    put(b, num, (size_t)n);
    put_esc(b, e->referer, false);
    put(b, "\" \"", 3);
    put_esc(b, e->ua, false);
    put(b, "\"\n", 2);
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
