#include "autoconf.h"

#include "serve/redirect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/html.h"
#include "lib/lit.h"

#define DATE_HDR "\r\nDate: "
#define CL_HDR   "\r\nContent-Length: "

const char *http_reason(unsigned status)
{
    switch (status) {
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    }
    return "Error";
}

void date_cache_update(struct date_cache *dc, time_t now)
{
    if (dc->sec == now && dc->str[0]) return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(dc->str, sizeof(dc->str), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    dc->sec = now;
}

/* 1 = may appear in a path or query as is (RFC 3986 pchar / "/" / "?"). */
static const unsigned char uri_ok[256] = {
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,  ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,  ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,  ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,  ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,  ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,  ['u'] = 1, ['v'] = 1,
    ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1,  ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,  ['-'] = 1, ['.'] = 1,
    ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1,
    ['*'] = 1, ['+'] = 1, [','] = 1, [';'] = 1, ['='] = 1, [':'] = 1,  ['@'] = 1, ['/'] = 1,
    ['?'] = 1,
};

static const char hexdig[] = "0123456789ABCDEF";

static inline bool ishex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Escapes into out; *amps counts the '&'s written (the HTML body needs
 * them as "&amp;"). Runs of bytes that need nothing are found with a tight
 * table scan and copied with memcpy: a typical path is one run. */
static size_t escape_path(char *out, const char *in, size_t n, size_t *amps)
{
    const unsigned char *p = (const unsigned char *)in;
    char *o = out;
    size_t i = 0;
    if (n == 0 || p[0] != '/') *o++ = '/';
    while (i < n) {
        size_t j = i;
        while (j + 4 <= n &&
               (uri_ok[p[j]] & uri_ok[p[j + 1]] & uri_ok[p[j + 2]] & uri_ok[p[j + 3]]))
            j += 4;
        while (j < n && uri_ok[p[j]]) j++;
        memcpy(o, p + i, j - i);
        o += j - i;
        if (j == n) break;
        unsigned char c = p[j];
        if (c == '%' && j + 2 < n && ishex(p[j + 1]) && ishex(p[j + 2])) {
            *o++ = '%';
        } else {
            o[0] = '%';
            o[1] = hexdig[c >> 4];
            o[2] = hexdig[c & 15];
            o += 3;
        }
        i = j + 1;
    }
    size_t a = 0;
    for (const char *q = out; (q = memchr(q, '&', (size_t)(o - q))) != NULL; q++) a++;
    *amps = a;
    return (size_t)(o - out);
}

size_t redirect_escape_path(char *out, const char *in, size_t n)
{
    size_t amps;
    return escape_path(out, in, n, &amps);
}

static char *put(char *o, const void *src, size_t n)
{
    memcpy(o, src, n);
    return o + n;
}

static char *put_uint(char *o, size_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(o, tmp + i, sizeof(tmp) - i);
}

/* Copies an already percent-encoded path, turning '&' into "&amp;" (the only
 * character of an encoded URI that matters inside a double-quoted attribute). */
static char *put_html(char *o, const char *s, size_t n, size_t amps)
{
    if (!amps) return put(o, s, n);
    const char *end = s + n;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        size_t run = amp ? (size_t)(amp - s) : (size_t)(end - s);
        o = put(o, s, run);
        s += run;
        if (amp) {
            o = put(o, LIT("&amp;"));
            s++;
        }
    }
    return o;
}

size_t redirect_max(const struct pool *p, const struct tmpl *t, size_t path_len)
{
    size_t esc = 3 * path_len + 1;
    return t->head.len + esc + sizeof(DATE_HDR) + HTTP_DATE_LEN + sizeof(CL_HDR) + 24 +
           p->tail.len + sizeof("Connection: keep-alive\r\n\r\n") + t->body_pre.len + 5 * esc +
           t->body_post.len;
}

size_t redirect_build(char *out, const struct pool *p, const struct tmpl *t, const char *path,
                      size_t path_len, bool head_only, enum conn_hdr ch,
                      const struct date_cache *dc, const struct chunk *extra)
{
    char *o = put(out, t->head.p, t->head.len);
    const char *esc = o;
    size_t esc_len = 0, amps = 0;
    if (t->with_path) {
        esc_len = escape_path(o, path, path_len, &amps);
        o += esc_len;
    }
    o = put(o, LIT(DATE_HDR));
    o = put(o, dc->str, HTTP_DATE_LEN);
    o = put(o, LIT(CL_HDR));
    size_t body_len = 0;
    if (t->body_pre.len) body_len = t->body_pre.len + esc_len + 4 * amps + t->body_post.len;
    o = put_uint(o, body_len);
    o = put(o, LIT("\r\n"));
    o = put(o, p->tail.p, p->tail.len);
    if (extra) o = put(o, extra->p, extra->len);
    if (ch == CONN_HDR_CLOSE)
        o = put(o, LIT("Connection: close\r\n"));
    else if (ch == CONN_HDR_KEEP)
        o = put(o, LIT("Connection: keep-alive\r\n"));
    o = put(o, LIT("\r\n"));
    if (!head_only && body_len) {
        o = put(o, t->body_pre.p, t->body_pre.len);
        o = put_html(o, esc, esc_len, amps);
        o = put(o, t->body_post.p, t->body_post.len);
    }
    return (size_t)(o - out);
}

/* Error answers are literals but for Date: nothing is formatted for them
 * but the cached date and one small number. */
struct err_tmpl {
    unsigned status;
    const char *line; /* status line and "Date: " */
    size_t line_len;
    const char *body;
    size_t body_len;
};

#define ERR_TMPL(code, reason)                                                                     \
    {                                                                                              \
        code, "HTTP/1.1 " #code " " reason "\r\nDate: ",                                           \
            sizeof("HTTP/1.1 " #code " " reason "\r\nDate: ") - 1, #code " " reason "\n",          \
            sizeof(#code " " reason "\n") - 1                                                      \
    }

#define ERR_TMPL_ITEM(code, reason) ERR_TMPL(code, reason),
static const struct err_tmpl err_tmpls[] = {
    ERR_TMPL(500, "Internal Server Error"), /* for a status without a template */
    ERR_TMPL(503, "Service Unavailable"), HTTP_ERRORS(ERR_TMPL_ITEM)};

size_t redirect_error(char *out, unsigned status, bool head_only, const struct date_cache *dc,
                      const struct chunk *extra)
{
    const struct err_tmpl *t = &err_tmpls[0];
    for (size_t i = 0; i < sizeof(err_tmpls) / sizeof(err_tmpls[0]); i++)
        if (err_tmpls[i].status == status) t = &err_tmpls[i];
    char *o = put(out, t->line, t->line_len);
    o = put(o, dc->str, HTTP_DATE_LEN);
    o = put(o, LIT("\r\nContent-Type: text/plain\r\nContent-Length: "));
    o = put_uint(o, t->body_len);
    o = put(o, LIT("\r\n"));
    if (extra) o = put(o, extra->p, extra->len);
    o = put(o, LIT("Connection: close\r\n\r\n"));
    if (!head_only) o = put(o, t->body, t->body_len);
    return (size_t)(o - out);
}

size_t redirect_text(char *out, const char *body, size_t len, bool head_only, enum conn_hdr ch,
                     const struct date_cache *dc)
{
    char *o = put(out, LIT("HTTP/1.1 200 OK\r\nDate: "));
    o = put(o, dc->str, HTTP_DATE_LEN);
    o = put(o, LIT("\r\nContent-Type: text/plain\r\nContent-Length: "));
    o = put_uint(o, len);
    o = put(o, LIT("\r\n"));
    if (ch == CONN_HDR_CLOSE)
        o = put(o, LIT("Connection: close\r\n"));
    else if (ch == CONN_HDR_KEEP)
        o = put(o, LIT("Connection: keep-alive\r\n"));
    o = put(o, LIT("\r\n"));
    if (!head_only) o = put(o, body, len);
    return (size_t)(o - out);
}

/* ---- templates, built at config load ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* Makes room for n more bytes and a NUL; false (and oom set) if it cannot. */
static bool sb_grow(struct sbuf *b, size_t n)
{
    if (b->oom) return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return false;
        }
        b->p = np;
        b->cap = cap;
    }
    return true;
}

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (!sb_grow(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_html(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (!sb_grow(b, HTML_ESCAPE_MAX(n))) return;
    b->len += html_escape(b->p + b->len, s, n);
    b->p[b->len] = '\0';
}

static bool sb_take(struct sbuf *b, struct chunk *c)
{
    if (b->oom) {
        free(b->p);
        return false;
    }
    if (!b->p) sb_add(b, LIT(""));
    c->p = b->p;
    c->len = b->len;
    memset(b, 0, sizeof(*b));
    return !b->oom && c->p;
}

static bool build_tmpl(struct tmpl *t, unsigned status, const char *url, bool with_path,
                       const char *extra_head, enum body_kind body)
{
    struct sbuf b = {0};
    char line[64];
    snprintf(line, sizeof(line), "HTTP/1.1 %u %s", status, http_reason(status));
    sb_str(&b, line);
    if (url) {
        sb_str(&b, "\r\nLocation: ");
        sb_str(&b, url);
    }
    if (extra_head) sb_str(&b, extra_head);
    bool ok = sb_take(&b, &t->head);
    t->with_path = with_path;
    t->status = status;
    if (body == BODY_HTML) {
        /* short: every byte is copied for every request (HTML5 needs no
         * html, head or body tags) */
        sb_str(&b, "<!DOCTYPE html>\n<title>");
        snprintf(line, sizeof(line), "%u %s", status, http_reason(status));
        sb_str(&b, line);
        sb_str(&b, "</title>\n");
        if (url) {
            sb_str(&b, "<p><a href=\"");
            sb_html(&b, url);
            ok = sb_take(&b, &t->body_pre) && ok;
            sb_str(&b, "\">Continue here</a>\n");
        } else {
            sb_str(&b, "<p>No backend region is available. Try again later.\n");
            ok = sb_take(&b, &t->body_pre) && ok;
        }
        ok = sb_take(&b, &t->body_post) && ok;
    }
    return ok;
}

static void free_tmpl(struct tmpl *t)
{
    free(t->head.p);
    free(t->body_pre.p);
    free(t->body_post.p);
    memset(t, 0, sizeof(*t));
}

bool redirect_prepare(struct config *c, struct diag *d)
{
    bool ok = true;
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        struct sbuf b = {0};
        if (p->body == BODY_HTML) sb_str(&b, "Content-Type: text/html; charset=utf-8\r\n");
        if (p->cache_control && p->cache_control[0]) {
            sb_str(&b, "Cache-Control: ");
            sb_str(&b, p->cache_control);
            sb_str(&b, "\r\n");
        }
        for (size_t h = 0; h < p->nheaders; h++) {
            sb_str(&b, p->headers[h].name);
            sb_str(&b, ": ");
            sb_str(&b, p->headers[h].value);
            sb_str(&b, "\r\n");
        }
        ok = sb_take(&b, &p->tail) && ok;
        for (size_t r = 0; r < p->nregions; r++) {
            ok = build_tmpl(&p->regions[r].tmpl, p->status, p->regions[r].url, true, NULL,
                            p->body) &&
                 ok;
            p->regions[r].tmpl.region = p->regions[r].name;
        }
        if (p->all_down_url)
            ok = build_tmpl(&p->fallback, p->status, p->all_down_url, false, NULL, p->body) && ok;
        p->fallback.region = "fallback";
        char ra[48];
        snprintf(ra, sizeof(ra), "\r\nRetry-After: %u", p->retry_after);
        ok = build_tmpl(&p->reject, 503, NULL, false, ra, p->body) && ok;
        p->reject.region = "reject";
    }
    if (!ok) diag_add(d, 0, 0, "out of memory building response templates");
    return ok;
}

void redirect_release(struct config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        free(p->tail.p);
        p->tail = (struct chunk){0};
        for (size_t r = 0; r < p->nregions; r++) free_tmpl(&p->regions[r].tmpl);
        free_tmpl(&p->fallback);
        free_tmpl(&p->reject);
    }
}
