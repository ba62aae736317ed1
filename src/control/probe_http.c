/* http(s): sends one HTTP/1.0 request (so the answer is never chunked and
 * the server closes after it, as haproxy's httpchk does) and passes when
 * the status is expected and, if expect_body is set, the first 64 KiB of
 * the body contain it. */
#include "autoconf.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/probe.h"
#include "lib/lit.h"

#define MAX_HEAD 16384

static void http_connected(struct probe *p)
{
    const struct check_cfg *c = p->c;
    struct evbuffer *out = bufferevent_get_output(p->bev);
    bool host_set = false;
    for (size_t i = 0; i < c->nheaders; i++)
        host_set |= strcasecmp(c->headers[i].name, "host") == 0;
    evbuffer_add_printf(out, "%s %s HTTP/1.0\r\n", c->method, c->path);
    if (!host_set) {
        bool v6 = strchr(c->host, ':') != NULL;
        bool dflt = c->port == (c->tls ? 443u : 80u);
        if (dflt)
            evbuffer_add_printf(out, "Host: %s%s%s\r\n", v6 ? "[" : "", c->host, v6 ? "]" : "");
        else
            evbuffer_add_printf(out, "Host: %s%s%s:%u\r\n", v6 ? "[" : "", c->host, v6 ? "]" : "",
                                c->port);
    }
    evbuffer_add_printf(out, "User-Agent: detourd/%s\r\nAccept: */*\r\nConnection: close\r\n",
                        PACKAGE_VERSION);
    for (size_t i = 0; i < c->nheaders; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", c->headers[i].name, c->headers[i].value);
    evbuffer_add(out, LIT("\r\n"));
}

/* Parses "HTTP/1.x NNN ..." from the start of buf; 0 if malformed. */
int probe_http_status(const char *buf, size_t len)
{
    if (len < 12 || memcmp(buf, LIT("HTTP/")) != 0) return 0;
    const char *sp = memchr(buf, ' ', len);
    if (!sp || (size_t)(sp - buf) + 4 > len) return 0;
    int s = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9') return 0;
        s = s * 10 + (sp[i] - '0');
    }
    return s;
}

long long probe_http_content_length(const char *head, size_t len)
{
    const char *p = head, *end = head + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        if ((size_t)(nl - p) > 15 && strncasecmp(p, LIT("content-length:")) == 0) {
            /* digits within the line only: the buffer is not NUL-terminated */
            const char *d = p + 15;
            while (d < nl && (*d == ' ' || *d == '\t')) d++;
            long long v = -1;
            for (; d < nl && *d >= '0' && *d <= '9' && v < (1LL << 50); d++)
                v = (v < 0 ? 0 : v * 10) + (*d - '0');
            return v;
        }
        p = nl + 1;
    }
    return -1;
}

size_t probe_http_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n') return i + 2;
        if (i + 3 < len && memcmp(buf + i, LIT("\r\n\r\n")) == 0) return i + 4;
    }
    return 0;
}

static void fail_status(struct probe *p)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "status %d", p->status);
    probe_finish(p, HR_STATUS, 0, buf);
}

/* Decides once enough has arrived; final = the server closed. */
static void http_decide(struct probe *p, bool final)
{
    const struct check_cfg *c = p->c;
    struct evbuffer *in = bufferevent_get_input(p->bev);
    size_t len = evbuffer_get_length(in);
    size_t want = len < MAX_HEAD + PROBE_MAX_BODY ? len : MAX_HEAD + PROBE_MAX_BODY;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    if (!p->status) {
        const char *nl = buf ? memchr(buf, '\n', want) : NULL;
        if (!nl) {
            if (final || want >= MAX_HEAD)
                probe_finish(p, HR_STATUS, 0,
                             final ? "connection closed before a status line" : "no status line");
            return;
        }
        p->status = probe_http_status(buf, (size_t)(nl - buf));
        if (!p->status) {
            probe_finish(p, HR_STATUS, 0, "malformed status line");
            return;
        }
        if (!check_status_ok(c, (unsigned)p->status)) {
            fail_status(p);
            return;
        }
        if (!c->expect_body) {
            probe_finish(p, HR_OK, 0, "ok");
            return;
        }
    }
    if (!p->head_len) {
        size_t e = probe_http_head_end(buf, want);
        if (!e) {
            if (final || want >= MAX_HEAD) probe_finish(p, HR_BODY, 0, "incomplete response head");
            return;
        }
        p->head_len = e;
        p->content_length = probe_http_content_length(buf, p->head_len);
    }
    size_t body = want - p->head_len;
    size_t need = strlen(c->expect_body);
    if (body >= need && memmem(buf + p->head_len, body, c->expect_body, need)) {
        probe_finish(p, HR_OK, 0, "ok");
        return;
    }
    bool complete = final || body >= PROBE_MAX_BODY ||
                    (p->content_length >= 0 && body >= (size_t)p->content_length);
    if (complete) probe_finish(p, HR_BODY, 0, "expect_body not found");
}

static void http_readable(struct probe *p)
{
    http_decide(p, false);
}

static void http_eof(struct probe *p)
{
    http_decide(p, true);
}

const struct probe_kind probe_kind_http = {http_connected, http_readable, http_eof};
