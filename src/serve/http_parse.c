#include "autoconf.h"

#include "serve/http_parse.h"
#include "lib/lit.h"

#include <string.h>

enum { PH_REQLINE, PH_HEADERS, PH_DONE };

/* Longest Content-Length we accept: 18 digits cannot overflow uint64_t. */
#define MAX_CL_DIGITS 18
/* Chunk-size lines and trailer lines longer than this are rejected. */
#define MAX_CHUNK_LINE 4096

#define T1(c) [c] = 1
const uint8_t http_tchar[256] = {
    T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
    T1('^'), T1('_'), T1('`'), T1('|'), T1('~'), T1('0'),  T1('1'), T1('2'), T1('3'), T1('4'),
    T1('5'), T1('6'), T1('7'), T1('8'), T1('9'), T1('A'),  T1('B'), T1('C'), T1('D'), T1('E'),
    T1('F'), T1('G'), T1('H'), T1('I'), T1('J'), T1('K'),  T1('L'), T1('M'), T1('N'), T1('O'),
    T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'), T1('U'),  T1('V'), T1('W'), T1('X'), T1('Y'),
    T1('Z'), T1('a'), T1('b'), T1('c'), T1('d'), T1('e'),  T1('f'), T1('g'), T1('h'), T1('i'),
    T1('j'), T1('k'), T1('l'), T1('m'), T1('n'), T1('o'),  T1('p'), T1('q'), T1('r'), T1('s'),
    T1('t'), T1('u'), T1('v'), T1('w'), T1('x'), T1('y'),  T1('z'),
};
#undef T1

void http_req_init(struct http_req *r)
{
    memset(r, 0, sizeof(*r));
}

static enum http_result fail(struct http_req *r, uint16_t status, const char *why)
{
    r->status = status;
    r->reason = why;
    return HTTP_ERROR;
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static bool ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    if (alen != n) return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lit[i]) return false;
    return true;
}

/* Field values may hold HTAB, SP, visible ASCII and obs-text; no CTLs. */
/* 1 for the bytes that end a request target: controls, SP and DEL. */
static const uint8_t target_end[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, [0x20] = 1, [0x7f] = 1,
};

/* 1 for the bytes a field value may not hold: controls but HTAB, and DEL. */
static const uint8_t value_bad[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1, [0x07] = 1,
    [0x08] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1,
    [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1,
    [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, [0x7f] = 1,
};

/* Field values may hold HTAB, SP, visible ASCII and obs-text; no CTLs.
 * Branch-free over the value: one table load and an OR per byte. */
static bool value_ok(const unsigned char *p, size_t n)
{
    unsigned bad = 0;
    for (const unsigned char *end = p + n; p < end; p++) bad |= value_bad[*p];
    return !bad;
}

static enum http_result parse_target(struct http_req *r, const char *buf, uint32_t off,
                                     uint32_t len)
{
    const char *t = buf + off;
    r->target = (struct http_span){off, len};
    if (t[0] == '/') {
        r->form = HTTP_ORIGIN;
        r->path = r->target;
        return HTTP_DONE;
    }
    if (len == 1 && t[0] == '*') {
        r->form = HTTP_ASTERISK;
        r->path = (struct http_span){off, 0};
        return HTTP_DONE;
    }
    /* absolute-form: scheme "://" authority [path-abempty] [ "?" query ] */
    uint32_t i = 0;
    while (i < len && ((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z')) i++;
    while (i < len && (((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z') ||
                       (t[i] >= '0' && t[i] <= '9') || t[i] == '+' || t[i] == '-' || t[i] == '.'))
        i++;
    if (i > 0 && len - i >= 3 && memcmp(t + i, LIT("://")) == 0) {
        uint32_t a = i + 3, e = a;
        while (e < len && t[e] != '/' && t[e] != '?' && t[e] != '#') e++;
        if (e == a) return fail(r, 400, "absolute-form target without authority");
        uint32_t h = a;
        for (uint32_t k = a; k < e; k++)
            if (t[k] == '@') h = k + 1; /* drop userinfo */
        r->form = HTTP_ABSOLUTE;
        r->host = (struct http_span){off + h, e - h};
        r->path = (struct http_span){off + e, len - e};
        return HTTP_DONE;
    }
    /* authority-form is only meaningful for CONNECT */
    if (ieq(buf + r->method.off, r->method.len, "connect")) {
        r->form = HTTP_AUTHORITY;
        r->host = r->target;
        r->path = (struct http_span){off, 0};
        return HTTP_DONE;
    }
    return fail(r, 400, "malformed request target");
}

static enum http_result parse_request_line(struct http_req *r, const char *buf, uint32_t s,
                                           uint32_t e, const struct http_limits *lim)
{
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t i = s;
    while (i < e && http_tchar[p[i]]) i++;
    if (i == s || i >= e || p[i] != ' ') return fail(r, 400, "malformed method");
    r->method = (struct http_span){s, i - s};
    r->is_head = (i - s == 4 && memcmp(buf + s, LIT("HEAD")) == 0);
    uint32_t ts = ++i;
    /* the line ends in CR or LF (p[e]), which stops the scan: no bound check */
    const unsigned char *q = p + i, *last = p + e;
    while (q + 3 < last &&
           !(target_end[q[0]] | target_end[q[1]] | target_end[q[2]] | target_end[q[3]]))
        q += 4;
    while (!target_end[*q]) q++;
    i = (uint32_t)(q - p);
    if (i - ts > lim->max_uri_bytes) return fail(r, 414, "request target too long");
    if (i == ts || i >= e || p[i] != ' ') return fail(r, 400, "malformed request target");
    uint32_t te = i++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT */
    if (e - i != 8 || memcmp(buf + i, LIT("HTTP/")) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return fail(r, 400, "malformed HTTP version");
    if (p[i + 5] != '1' || p[i + 7] > '1') return fail(r, 505, "unsupported HTTP version");
    r->minor = (uint8_t)(p[i + 7] - '0');
    return parse_target(r, buf, ts, te - ts);
}

static enum http_result parse_content_length(struct http_req *r, const char *v, size_t n)
{
    if (n == 0 || n > MAX_CL_DIGITS) return fail(r, 400, "bad Content-Length");
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return fail(r, 400, "bad Content-Length");
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (r->has_length && r->content_length != x) return fail(r, 400, "conflicting Content-Length");
    r->has_length = true;
    r->content_length = x;
    return HTTP_AGAIN;
}

static void parse_connection(struct http_req *r, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
        if (ieq(v + s, i - s, "close")) r->conn_close = true;
        if (ieq(v + s, i - s, "keep-alive")) r->conn_keep = true;
    }
}

static void capture(struct http_req *r, const struct http_limits *lim, const char *name,
                    size_t nlen, uint32_t voff, size_t vlen)
{
    for (size_t k = 0; k < lim->ncapture && k < HTTP_MAX_CAPTURE; k++) {
        if (r->captured >> k & 1 || !ieq(name, nlen, lim->capture[k])) continue;
        r->captured |= (uint8_t)(1u << k);
        r->capture[k] = (struct http_span){voff, (uint32_t)vlen};
    }
}

static enum http_result parse_header(struct http_req *r, const char *buf, uint32_t s, uint32_t e,
                                     const struct http_limits *lim)
{
    const unsigned char *p = (const unsigned char *)buf;
    if (p[s] == ' ' || p[s] == '\t') return fail(r, 400, "obsolete line folding");
    uint32_t i = s;
    while (i < e && http_tchar[p[i]]) i++;
    if (i >= e || p[i] != ':') return fail(r, 400, "malformed header field name");
    if (i == s) return fail(r, 400, "empty header field name");
    const char *name = buf + s;
    size_t nlen = i - s;
    i++;
    while (i < e && (p[i] == ' ' || p[i] == '\t')) i++;
    uint32_t ve = e;
    while (ve > i && (p[ve - 1] == ' ' || p[ve - 1] == '\t')) ve--;
    if (!value_ok(p + i, ve - i)) return fail(r, 400, "control character in header value");
    const char *v = buf + i;
    size_t vlen = ve - i;
    if (lim->ncapture) capture(r, lim, name, nlen, i, vlen);

    switch (nlen) {
    case 4:
        if (ieq(name, nlen, "host")) {
            if (r->has_host) return fail(r, 400, "duplicate Host");
            r->has_host = true;
            if (r->form != HTTP_ABSOLUTE && r->form != HTTP_AUTHORITY)
                r->host = (struct http_span){i, (uint32_t)vlen};
        }
        break;
    case 6:
        if (ieq(name, nlen, "expect") && ieq(v, vlen, "100-continue")) r->expect_continue = true;
        break;
    case 10:
        if (ieq(name, nlen, "connection")) parse_connection(r, v, vlen);
        break;
    case 14:
        if (ieq(name, nlen, "content-length")) return parse_content_length(r, v, vlen);
        break;
    case 17:
        if (ieq(name, nlen, "transfer-encoding")) {
            if (r->chunked || !ieq(v, vlen, "chunked"))
                return fail(r, 501, "unsupported transfer coding");
            r->chunked = true;
        }
        break;
    }
    return HTTP_AGAIN;
}

static enum http_result finish(struct http_req *r, uint32_t head_len)
{
    r->phase = PH_DONE;
    r->head_len = head_len;
    if (r->chunked && r->has_length) return fail(r, 400, "Content-Length with Transfer-Encoding");
    if (r->minor == 1 && !r->has_host) return fail(r, 400, "HTTP/1.1 request without Host");
    if (r->minor == 1)
        r->keep_alive = !r->conn_close;
    else
        r->keep_alive = r->conn_keep && !r->conn_close && !r->chunked;
    return HTTP_DONE;
}

/* A request line starting at s does not end within the first
 * max_header_bytes of the head. Whether that says 414 or 431 is decided from
 * those bytes alone, so the verdict is the same however the bytes arrive:
 * 414 when the target (from the first space) is longer than max_uri_bytes or
 * does not end within the limit either, 431 otherwise. */
static enum http_result line_too_long(struct http_req *r, const char *buf, uint32_t s,
                                      const struct http_limits *lim)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t end = lim->max_header_bytes;
    const unsigned char *sp = s < end ? memchr(p + s, ' ', end - s) : NULL;
    if (sp) {
        size_t ts = (size_t)(sp + 1 - p), te = ts;
        while (te < end && !target_end[p[te]]) te++;
        if (te == end || te - ts > lim->max_uri_bytes)
            return fail(r, 414, "request target too long");
    }
    return fail(r, 431, "request head too large");
}

enum http_result http_parse_head(struct http_req *r, const char *buf, size_t len,
                                 const struct http_limits *lim)
{
    if (r->phase == PH_DONE) return HTTP_DONE;
    if (len > UINT32_MAX) len = UINT32_MAX;
    while (1) {
        const char *nl = r->scan < len ? memchr(buf + r->scan, '\n', len - r->scan) : NULL;
        if (!nl) {
            r->scan = (uint32_t)len;
            if (len > lim->max_header_bytes) {
                if (r->phase == PH_REQLINE) return line_too_long(r, buf, r->line, lim);
                return fail(r, 431, "request head too large");
            }
            return HTTP_AGAIN;
        }
        uint32_t s = r->line, e = (uint32_t)(nl - buf);
        uint32_t next = e + 1;
        if (next > lim->max_header_bytes && r->phase != PH_REQLINE)
            return fail(r, 431, "request head too large");
        if (e > s && buf[e - 1] == '\r') e--;
        /* A bare CR or NUL left in the line fails the scanners below: the
         * method and field names take tokens only, the target stops at
         * controls, the version is compared exactly and field values
         * refuse controls. No extra pass over the line is needed. */
        r->line = r->scan = next;
        if (r->phase == PH_REQLINE) {
            if (e == s) {
                /* RFC 9112 2.2: ignore empty lines before the request line */
                if (next > lim->max_header_bytes) return fail(r, 431, "request head too large");
                continue;
            }
            if (next > lim->max_header_bytes) return line_too_long(r, buf, s, lim);
            if (parse_request_line(r, buf, s, e, lim) == HTTP_ERROR) return HTTP_ERROR;
            r->phase = PH_HEADERS;
            continue;
        }
        if (e == s) return finish(r, next);
        if (parse_header(r, buf, s, e, lim) == HTTP_ERROR) return HTTP_ERROR;
    }
}

/* ---- chunked bodies ---- */

enum {
    CH_SIZE,
    CH_SIZE_WS,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LINE,
    CH_TRAILER_LF,
    CH_LAST_LF,
    CH_DONE
};

void http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

enum http_result http_chunked_skip(struct http_chunked *c, const char *buf, size_t len,
                                   size_t *used)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t i = 0;
    enum http_result res = HTTP_AGAIN;
    while (i < len && res == HTTP_AGAIN) {
        unsigned char ch = p[i];
        switch (c->state) {
        case CH_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (c->remaining >> 59) {
                    res = HTTP_ERROR;
                    break;
                }
                c->remaining = c->remaining * 16 + (uint64_t)h;
                if (++c->linelen > MAX_CHUNK_LINE) {
                    res = HTTP_ERROR;
                    break;
                }
                i++;
                break;
            }
            /* chunk-size [ BWS ";" chunk-ext ] CRLF: nothing else may follow the size */
            if (c->linelen == 0 ||
                !(ch == ';' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')) {
                res = HTTP_ERROR;
                break;
            }
            c->state = (ch == ' ' || ch == '\t') ? CH_SIZE_WS : CH_EXT;
            break; /* re-examine ch as whitespace, extension or line end */
        }
        case CH_SIZE_WS:
            if (ch == ';' || ch == '\r' || ch == '\n') {
                c->state = CH_EXT;
                break; /* re-examine */
            }
            if (ch != ' ' && ch != '\t') {
                res = HTTP_ERROR;
                break;
            }
            if (++c->linelen > MAX_CHUNK_LINE) {
                res = HTTP_ERROR;
                break;
            }
            i++;
            break;
        case CH_EXT:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == '\n')
                c->state = c->remaining ? CH_DATA : CH_TRAILER;
            else if (ch < 0x20 && ch != '\t') {
                res = HTTP_ERROR;
                break;
            }
            if (++c->linelen > MAX_CHUNK_LINE) {
                res = HTTP_ERROR;
                break;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                res = HTTP_ERROR;
                break;
            }
            c->state = c->remaining ? CH_DATA : CH_TRAILER;
            i++;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->remaining) n = (size_t)c->remaining;
            c->remaining -= n;
            i += n;
            if (c->remaining == 0) c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE, c->linelen = 0;
            else {
                res = HTTP_ERROR;
                break;
            }
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                res = HTTP_ERROR;
                break;
            }
            c->state = CH_SIZE;
            c->linelen = 0;
            i++;
            break;
        case CH_TRAILER: /* at the start of a trailer line */
            c->linelen = 0;
            if (ch == '\r')
                c->state = CH_LAST_LF;
            else if (ch == '\n') {
                c->state = CH_DONE;
                res = HTTP_DONE;
            } else
                c->state = CH_TRAILER_LINE;
            i++;
            break;
        case CH_TRAILER_LINE:
            if (ch == '\n')
                c->state = CH_TRAILER;
            else if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if ((ch < 0x20 && ch != '\t') || ++c->linelen > MAX_CHUNK_LINE) {
                res = HTTP_ERROR;
                break;
            }
            i++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') {
                res = HTTP_ERROR;
                break;
            }
            c->state = CH_TRAILER;
            i++;
            break;
        case CH_LAST_LF:
            if (ch != '\n') {
                res = HTTP_ERROR;
                break;
            }
            c->state = CH_DONE;
            res = HTTP_DONE;
            i++;
            break;
        case CH_DONE: res = HTTP_DONE; break;
        }
    }
    *used = i;
    c->total += i; /* framing and trailers count as much as data */
    if (c->state == CH_DONE) return HTTP_DONE;
    return res;
}
