#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/config.h"
#include "serve/redirect.h"
#include "unit.h"

#define DATE_STR "Sun, 06 Nov 1994 08:49:37 GMT"

static const char yaml[] = "listen: [\"127.0.0.1:8080\"]\n"
                           "pools:\n"
                           "  - name: api\n"
                           "    hosts: [\"api.example.com\"]\n"
                           "    headers: {Retry-After: \"120\", X-Served-By: detourd}\n"
                           "    regions:\n"
                           "      - name: eu\n"
                           "        url: \"HTTPS://EU.Example.com/base/\"\n"
                           "      - name: amp\n"
                           "        url: \"https://amp.example.com/a&b\"\n"
                           "  - name: plain\n"
                           "    hosts: [\"plain.example.com\"]\n"
                           "    status: 308\n"
                           "    cache_control: \"\"\n"
                           "    body: none\n"
                           "    regions:\n"
                           "      - name: us\n"
                           "        url: \"http://us.example.com:8080\"\n"
                           "  - name: fb\n"
                           "    hosts: [\"fb.example.com\"]\n"
                           "    status: 302\n"
                           "    cache_control: \"max-age=60\"\n"
                           "    all_down:\n"
                           "      action: fallback\n"
                           "      url: \"https://status.example.com/maint?x=1&y=2\"\n"
                           "    regions:\n"
                           "      - name: ap\n"
                           "        url: \"https://ap.example.com/\"\n"
                           "  - name: rej\n"
                           "    status: 303\n"
                           "    cache_control: null\n"
                           "    all_down: {action: reject, retry_after: 45}\n"
                           "    regions:\n"
                           "      - name: sa\n"
                           "        url: \"https://sa.example.com\"\n";

static struct config *cfg;
static struct date_cache dc;

static void setup(void)
{
    struct diag d;
    diag_init(&d, "redirect.yaml");
    cfg = config_parse("redirect.yaml", yaml, sizeof(yaml) - 1, &d);
    if (!cfg) diag_print(&d, stderr);
    ck_assert_uint_eq(d.n, 0);
    ck_assert_ptr_nonnull(cfg);
    diag_free(&d);
    memset(&dc, 0, sizeof(dc));
    date_cache_update(&dc, 784111777);
}

static void teardown(void)
{
    config_free(cfg);
    cfg = NULL;
}

static const struct pool *pool(const char *name)
{
    for (size_t i = 0; i < cfg->npools; i++)
        if (strcmp(cfg->pools[i].name, name) == 0) return &cfg->pools[i];
    ck_abort_msg("no pool %s", name);
    return NULL;
}

/* Builds into a buffer of exactly redirect_max() bytes (ASan checks the bound). */
static char *build(const struct pool *p, const struct tmpl *t, const char *path, size_t plen,
                   bool head_only, enum conn_hdr ch, size_t *len)
{
    size_t max = redirect_max(p, t, plen);
    char *out = malloc(max + 1);
    ck_assert_ptr_nonnull(out);
    *len = redirect_build(out, p, t, path, plen, head_only, ch, &dc, NULL);
    ck_assert_uint_le(*len, max);
    out[*len] = '\0';
    return out;
}

static char *build_s(const struct pool *p, const struct tmpl *t, const char *path, bool head_only,
                     enum conn_hdr ch, size_t *len)
{
    return build(p, t, path, strlen(path), head_only, ch, len);
}

#define ck_bytes(got, glen, want)                                                                  \
    ck_assert_msg((glen) == strlen(want) && memcmp((got), (want), (glen)) == 0,                    \
                  "got (%zu)\n%.*s\nwant (%zu)\n%s", (size_t)(glen), (int)(glen), (got),           \
                  strlen(want), (want))

/* Parses a response: checks its framing, finds Content-Length and the body. */
struct resp {
    unsigned status;
    size_t head_len, body_len;
    long content_length;
    const char *body;
};

static struct resp parse_resp(const char *s, size_t len)
{
    struct resp r = {0};
    r.content_length = -1;
    ck_assert_msg(len > 12 && memcmp(s, "HTTP/1.1 ", 9) == 0, "status line: %.*s", (int)len, s);
    r.status = (unsigned)strtoul(s + 9, NULL, 10);
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= len; i++)
        if (memcmp(s + i, "\r\n\r\n", 4) == 0) {
            end = s + i + 4;
            break;
        }
    ck_assert_ptr_nonnull(end);
    r.head_len = (size_t)(end - s);
    r.body = end;
    r.body_len = len - r.head_len;
    /* every header line is "Name: value" with no stray CR or LF */
    const char *line = (const char *)memchr(s, '\n', len) + 1;
    while (line < end - 2) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        ck_assert_ptr_nonnull(nl);
        ck_assert_msg(nl[-1] == '\r', "bare LF in head");
        ck_assert_ptr_nonnull(memchr(line, ':', (size_t)(nl - line)));
        ck_assert_msg(memchr(line, '\r', (size_t)(nl - 1 - line)) == NULL, "bare CR in head");
        if (strncmp(line, "Content-Length: ", 16) == 0) {
            ck_assert_int_eq(r.content_length, -1); /* only once */
            r.content_length = strtol(line + 16, NULL, 10);
        }
        line = nl + 1;
    }
    ck_assert_int_ge(r.content_length, 0);
    return r;
}

static bool has_header(const char *s, size_t len, const char *hdr)
{
    struct resp r = parse_resp(s, len);
    size_t n = strlen(hdr);
    for (const char *p = s + 1; p + n + 2 <= s + r.head_len; p++)
        if (p[-1] == '\n' && memcmp(p, hdr, n) == 0 && p[n] == '\r') return true;
    return false;
}

static bool has_header_name(const char *s, size_t len, const char *name)
{
    struct resp r = parse_resp(s, len);
    size_t n = strlen(name);
    for (const char *p = s + 1; p + n + 1 <= s + r.head_len; p++)
        if (p[-1] == '\n' && strncasecmp(p, name, n) == 0 && p[n] == ':') return true;
    return false;
}

static const char api_body[] =
    "<!DOCTYPE html>\n<title>307 Temporary Redirect</title>\n"
    "<p><a href=\"https://eu.example.com/base/a%20b/%C3%A9?c=1&amp;d=%25&amp;e=\">Continue "
    "here</a>\n";

START_TEST(test_build_exact)
{
    const struct pool *p = pool("api");
    ck_assert_str_eq(p->regions[0].url, "https://eu.example.com/base");
    size_t len;
    char *out =
        build_s(p, &p->regions[0].tmpl, "/a b/\xc3\xa9?c=1&d=%&e=", false, CONN_HDR_NONE, &len);
    char want[2048];
    snprintf(want, sizeof(want),
             "HTTP/1.1 307 Temporary Redirect\r\n"
             "Location: https://eu.example.com/base/a%%20b/%%C3%%A9?c=1&d=%%25&e=\r\n"
             "Date: " DATE_STR "\r\n"
             "Content-Length: %zu\r\n"
             "Content-Type: text/html; charset=utf-8\r\n"
             "Cache-Control: no-store\r\n"
             "Retry-After: 120\r\n"
             "X-Served-By: detourd\r\n"
             "\r\n%s",
             strlen(api_body), api_body);
    ck_bytes(out, len, want);
    /* the body's '&' is escaped, the Location's is not */
    ck_assert_ptr_nonnull(strstr(want, "?c=1&d=%25&e=\r\n"));
    struct resp r = parse_resp(out, len);
    ck_assert_uint_eq(r.status, 307);
    ck_assert_uint_eq((size_t)r.content_length, r.body_len);
    free(out);
}
END_TEST

START_TEST(test_build_connection)
{
    const struct pool *p = pool("api");
    const struct tmpl *t = &p->regions[0].tmpl;
    size_t n0, n1, n2;
    char *none = build_s(p, t, "/x", false, CONN_HDR_NONE, &n0);
    char *close = build_s(p, t, "/x", false, CONN_HDR_CLOSE, &n1);
    char *keep = build_s(p, t, "/x", false, CONN_HDR_KEEP, &n2);
    struct resp r0 = parse_resp(none, n0);
    ck_assert(!has_header_name(none, n0, "Connection"));
    ck_assert(has_header(close, n1, "Connection: close"));
    ck_assert(has_header(keep, n2, "Connection: keep-alive"));
    /* exactly the Connection line is added, right before the blank line */
    size_t hl = r0.head_len - 2;
    char want[4096];
    snprintf(want, sizeof(want), "%.*sConnection: close\r\n%s", (int)hl, none, none + hl);
    ck_bytes(close, n1, want);
    snprintf(want, sizeof(want), "%.*sConnection: keep-alive\r\n%s", (int)hl, none, none + hl);
    ck_bytes(keep, n2, want);
    free(none);
    free(close);
    free(keep);
}
END_TEST

/* A listener's extra header lines (HSTS): copied as they are, after the
 * pool's, before Connection, within redirect_max(); the same for errors. */
START_TEST(test_build_extra_headers)
{
    static char line[] = "Strict-Transport-Security: max-age=31536000\r\n";
    const struct chunk hsts = {line, sizeof(line) - 1};
    const struct pool *p = pool("api");
    const struct tmpl *t = &p->regions[0].tmpl;
    for (int ch = CONN_HDR_NONE; ch <= CONN_HDR_KEEP; ch++) {
        for (int head = 0; head < 2; head++) {
            size_t n0, n;
            char *plain = build_s(p, t, "/x?a&b", head, (enum conn_hdr)ch, &n0);
            size_t max = redirect_max(p, t, 6) + hsts.len;
            char *out = malloc(max);
            ck_assert_ptr_nonnull(out);
            n = redirect_build(out, p, t, "/x?a&b", 6, head, (enum conn_hdr)ch, &dc, &hsts);
            ck_assert_uint_le(n, max);
            /* the plain answer with the line inserted before Connection
             * (or the blank line) */
            struct resp r = parse_resp(plain, n0);
            size_t at = r.head_len - 2;
            const char *conn = ch == CONN_HDR_CLOSE  ? "Connection: close\r\n"
                               : ch == CONN_HDR_KEEP ? "Connection: keep-alive\r\n"
                                                     : "";
            at -= strlen(conn);
            char want[4096];
            snprintf(want, sizeof(want), "%.*s%s%s", (int)at, plain, line, plain + at);
            ck_bytes(out, n, want);
            free(out);
            free(plain);
        }
    }
    for (int head = 0; head < 2; head++) {
        char plain[REDIRECT_ERROR_MAX], out[REDIRECT_ERROR_MAX + sizeof(line)], want[1024];
        size_t n0 = redirect_error(plain, 400, head, &dc, NULL);
        size_t n = redirect_error(out, 400, head, &dc, &hsts);
        const char *conn = strstr(plain, "Connection: close\r\n");
        ck_assert_ptr_nonnull(conn);
        snprintf(want, sizeof(want), "%.*s%s%.*s", (int)(conn - plain), plain, line,
                 (int)(n0 - (size_t)(conn - plain)), conn);
        ck_bytes(out, n, want);
    }
}
END_TEST

START_TEST(test_build_head)
{
    const struct pool *p = pool("api");
    const struct tmpl *t = &p->regions[0].tmpl;
    for (int ch = CONN_HDR_NONE; ch <= CONN_HDR_KEEP; ch++) {
        size_t ng, nh;
        char *get = build_s(p, t, "/a&b", false, (enum conn_hdr)ch, &ng);
        char *head = build_s(p, t, "/a&b", true, (enum conn_hdr)ch, &nh);
        struct resp rg = parse_resp(get, ng), rh = parse_resp(head, nh);
        ck_assert_uint_gt(rg.body_len, 0);
        ck_assert_uint_eq((size_t)rg.content_length, rg.body_len);
        /* HEAD: the same head (same Content-Length), no body */
        ck_assert_uint_eq(rh.body_len, 0);
        ck_assert_int_eq(rh.content_length, rg.content_length);
        ck_assert_uint_eq(nh, rg.head_len);
        ck_assert_int_eq(memcmp(get, head, nh), 0);
        free(get);
        free(head);
    }
}
END_TEST

START_TEST(test_build_paths)
{
    const struct pool *p = pool("api");
    const struct tmpl *t = &p->regions[0].tmpl;
    static const struct {
        const char *path, *loc;
    } cases[] = {
        {"/p?", "https://eu.example.com/base/p?"}, /* empty query kept */
        {"/p?q", "https://eu.example.com/base/p?q"},
        {"/", "https://eu.example.com/base/"},
        {"", "https://eu.example.com/base/"},            /* '*' and an empty absolute path */
        {"?q=1", "https://eu.example.com/base/?q=1"},    /* absolute-form without a path */
        {"/a%2Fb", "https://eu.example.com/base/a%2Fb"}, /* escapes kept as sent */
        {"/a#frag", "https://eu.example.com/base/a%23frag"},
        {"/\"<x>\"", "https://eu.example.com/base/%22%3Cx%3E%22"},
        {"/a\r\nSet-Cookie: x", "https://eu.example.com/base/a%0D%0ASet-Cookie:%20x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        char *out = build_s(p, t, cases[i].path, false, CONN_HDR_NONE, &n);
        char hdr[512];
        snprintf(hdr, sizeof(hdr), "Location: %s", cases[i].loc);
        ck_assert_msg(has_header(out, n, hdr), "path '%s': %s", cases[i].path, out);
        struct resp r = parse_resp(out, n);
        ck_assert_uint_eq((size_t)r.content_length, r.body_len);
        free(out);
    }
}
END_TEST

START_TEST(test_build_html_escaping)
{
    /* a region url with '&': escaped in the body, literal in Location */
    const struct pool *p = pool("api");
    ck_assert_str_eq(p->regions[1].url, "https://amp.example.com/a&b");
    size_t n;
    char *out = build_s(p, &p->regions[1].tmpl, "/c&d?e&f", false, CONN_HDR_NONE, &n);
    ck_assert(has_header(out, n, "Location: https://amp.example.com/a&b/c&d?e&f"));
    struct resp r = parse_resp(out, n);
    ck_assert_uint_eq((size_t)r.content_length, r.body_len);
    char body[1024];
    snprintf(body, sizeof(body), "%.*s", (int)r.body_len, r.body);
    ck_assert_ptr_nonnull(strstr(body, "href=\"https://amp.example.com/a&amp;b/c&amp;d?e&amp;f\""));
    ck_assert_ptr_null(strstr(body, "&b"));
    ck_assert_ptr_null(strstr(body, "&d"));
    ck_assert_ptr_null(strstr(body, "&f"));
    free(out);
}
END_TEST

START_TEST(test_build_body_none)
{
    const struct pool *p = pool("plain");
    ck_assert_str_eq(p->cache_control, "");
    size_t n;
    char *out = build_s(p, &p->regions[0].tmpl, "/x?y", false, CONN_HDR_CLOSE, &n);
    ck_bytes(out, n,
             "HTTP/1.1 308 Permanent Redirect\r\n"
             "Location: http://us.example.com:8080/x?y\r\n"
             "Date: " DATE_STR "\r\n"
             "Content-Length: 0\r\n"
             "Connection: close\r\n"
             "\r\n");
    free(out);
    /* HEAD is byte-identical */
    char *head = build_s(p, &p->regions[0].tmpl, "/x?y", true, CONN_HDR_CLOSE, &n);
    ck_assert(has_header(head, n, "Content-Length: 0"));
    ck_assert_uint_eq(parse_resp(head, n).body_len, 0);
    free(head);
}
END_TEST

START_TEST(test_build_cache_control)
{
    const struct pool *p = pool("fb");
    size_t n;
    char *out = build_s(p, &p->regions[0].tmpl, "/", false, CONN_HDR_NONE, &n);
    ck_assert(has_header(out, n, "Cache-Control: max-age=60"));
    ck_assert_uint_eq(parse_resp(out, n).status, 302);
    ck_assert(has_header(out, n, "Location: https://ap.example.com/"));
    ck_assert(has_header(out, n, "Content-Type: text/html; charset=utf-8"));
    free(out);

    /* null cache_control omits the header too */
    p = pool("rej");
    out = build_s(p, &p->regions[0].tmpl, "/", false, CONN_HDR_NONE, &n);
    ck_assert(!has_header_name(out, n, "Cache-Control"));
    ck_assert_uint_eq(parse_resp(out, n).status, 303);
    ck_assert(has_header(out, n, "Location: https://sa.example.com/"));
    free(out);

    p = pool("plain");
    out = build_s(p, &p->regions[0].tmpl, "/", false, CONN_HDR_NONE, &n);
    ck_assert(!has_header_name(out, n, "Cache-Control"));
    ck_assert(!has_header_name(out, n, "Content-Type"));
    free(out);
}
END_TEST

START_TEST(test_build_fallback)
{
    const struct pool *p = pool("fb");
    ck_assert_int_eq(p->all_down, ALL_DOWN_FALLBACK);
    size_t n;
    /* exactly all_down.url: no path appended */
    char *out = build_s(p, &p->fallback, "/ignored?x", false, CONN_HDR_KEEP, &n);
    const char *body = "<!DOCTYPE html>\n<title>302 Found</title>\n"
                       "<p><a href=\"https://status.example.com/maint?x=1&amp;y=2\">Continue "
                       "here</a>\n";
    char want[2048];
    snprintf(want, sizeof(want),
             "HTTP/1.1 302 Found\r\n"
             "Location: https://status.example.com/maint?x=1&y=2\r\n"
             "Date: " DATE_STR "\r\n"
             "Content-Length: %zu\r\n"
             "Content-Type: text/html; charset=utf-8\r\n"
             "Cache-Control: max-age=60\r\n"
             "Connection: keep-alive\r\n"
             "\r\n%s",
             strlen(body), body);
    ck_bytes(out, n, want);
    free(out);
}
END_TEST

START_TEST(test_build_reject)
{
    const struct pool *p = pool("rej");
    ck_assert_int_eq(p->all_down, ALL_DOWN_REJECT);
    size_t n;
    char *out = build_s(p, &p->reject, "/x", false, CONN_HDR_NONE, &n);
    const char *body = "<!DOCTYPE html>\n<title>503 Service Unavailable</title>\n"
                       "<p>No backend region is available. Try again later.\n";
    char want[2048];
    snprintf(want, sizeof(want),
             "HTTP/1.1 503 Service Unavailable\r\n"
             "Retry-After: 45\r\n"
             "Date: " DATE_STR "\r\n"
             "Content-Length: %zu\r\n"
             "Content-Type: text/html; charset=utf-8\r\n"
             "\r\n%s",
             strlen(body), body);
    ck_bytes(out, n, want);
    free(out);

    /* body: none and the default retry_after */
    p = pool("plain");
    out = build_s(p, &p->reject, "/x", false, CONN_HDR_CLOSE, &n);
    ck_bytes(out, n,
             "HTTP/1.1 503 Service Unavailable\r\n"
             "Retry-After: 30\r\n"
             "Date: " DATE_STR "\r\n"
             "Content-Length: 0\r\n"
             "Connection: close\r\n"
             "\r\n");
    free(out);
}
END_TEST

START_TEST(test_build_max_bound)
{
    /* worst cases for the size bound: every byte escaped, every byte '&' */
    char path[600];
    for (int kind = 0; kind < 4; kind++) {
        size_t plen = sizeof(path);
        for (size_t i = 0; i < plen; i++) {
            switch (kind) {
            case 0: path[i] = (char)(i & 0xff); break;
            case 1: path[i] = '&'; break;
            case 2: path[i] = ' '; break;
            case 3: path[i] = (char)(0x80 | (i & 0x7f)); break;
            }
        }
        for (size_t pi = 0; pi < cfg->npools; pi++) {
            const struct pool *p = &cfg->pools[pi];
            for (size_t ri = 0; ri < p->nregions; ri++) {
                for (int head = 0; head < 2; head++) {
                    size_t n;
                    char *out = build(p, &p->regions[ri].tmpl, path, plen, head, CONN_HDR_KEEP, &n);
                    struct resp r = parse_resp(out, n);
                    if (!head) ck_assert_uint_eq((size_t)r.content_length, r.body_len);
                    free(out);
                }
            }
        }
    }
}
END_TEST

/* ---- escaping ---- */

static void esc_eq(const char *in, size_t n, const char *want)
{
    char *out = malloc(3 * n + 1); /* the documented bound */
    ck_assert_ptr_nonnull(out);
    size_t len = redirect_escape_path(out, in, n);
    ck_assert_uint_le(len, 3 * n + 1);
    ck_assert_msg(len == strlen(want) && memcmp(out, want, len) == 0,
                  "escape '%.*s': '%.*s' != '%s'", (int)n, in, (int)len, out, want);
    free(out);
}

#define ESC(in, want) esc_eq(in, sizeof(in) - 1, want)

START_TEST(test_escape_path)
{
    ESC("", "/");
    ESC("/", "/");
    ESC("a", "/a");
    ESC(" ", "/%20");
    ESC("?q", "/?q");
    ESC("/a b", "/a%20b");
    ESC("/a/b/c?d=e&f=g", "/a/b/c?d=e&f=g");
    /* valid escapes stay, in either case */
    ESC("/%41", "/%41");
    ESC("/%aF%Fa", "/%aF%Fa");
    ESC("/x%20y", "/x%20y");
    /* stray percent signs become %25 */
    ESC("/%", "/%25");
    ESC("/%4", "/%254");
    ESC("/a%2", "/a%252");
    ESC("/%zz", "/%25zz");
    ESC("/%4g", "/%254g");
    ESC("/%g4", "/%25g4");
    ESC("/%%41", "/%25%41");
    ESC("%41", "/%41");
    ESC("%", "/%25");
    /* bytes >= 0x80 */
    ESC("/\xc3\xa9", "/%C3%A9");
    ESC("/\x80\xff", "/%80%FF");
    /* controls, space, DEL */
    ESC("/\x01\x1f\x7f", "/%01%1F%7F");
    ESC("/a\0b", "/a%00b");
    ESC("/\r\n", "/%0D%0A");
    /* characters not allowed in a URI */
    ESC("/\"<>\\^`{|}", "/%22%3C%3E%5C%5E%60%7B%7C%7D");
    ESC("/#[]", "/%23%5B%5D");
    /* everything allowed stays */
    ESC("/AZaz09-._~!$&'()*+,;=:@/?", "/AZaz09-._~!$&'()*+,;=:@/?");
}
END_TEST

START_TEST(test_escape_every_byte)
{
    const char *ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
                     "!$&'()*+,;=:@/?";
    for (int c = 0; c < 256; c++) {
        char in[2] = {'/', (char)c};
        char want[8];
        if (c != 0 && strchr(ok, c))
            snprintf(want, sizeof(want), "/%c", c);
        else
            snprintf(want, sizeof(want), "/%%%02X", c);
        esc_eq(in, 2, want);
        /* without the leading '/' as well: 3*n+1 bytes are enough */
        esc_eq(in + 1, 1, c == '/' ? "/" : want);
    }
}
END_TEST

/* ---- error responses ---- */

START_TEST(test_error_responses)
{
    static const struct {
        unsigned status;
        const char *reason;
    } cases[] = {
        {400, "Bad Request"},
        {408, "Request Timeout"},
        {414, "URI Too Long"},
        {421, "Misdirected Request"},
        {431, "Request Header Fields Too Large"},
        {501, "Not Implemented"},
        {503, "Service Unavailable"},
        {505, "HTTP Version Not Supported"},
        {500, "Internal Server Error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[REDIRECT_ERROR_MAX];
        size_t n = redirect_error(out, cases[i].status, false, &dc, NULL);
        char body[128], want[REDIRECT_ERROR_MAX];
        snprintf(body, sizeof(body), "%u %s\n", cases[i].status, cases[i].reason);
        snprintf(want, sizeof(want),
                 "HTTP/1.1 %u %s\r\n"
                 "Date: " DATE_STR "\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n"
                 "\r\n%s",
                 cases[i].status, cases[i].reason, strlen(body), body);
        ck_bytes(out, n, want);
        struct resp r = parse_resp(out, n);
        ck_assert_uint_eq(r.status, cases[i].status);
        ck_assert_uint_eq((size_t)r.content_length, r.body_len);
        ck_assert_str_eq(http_reason(cases[i].status), cases[i].reason);
        /* HEAD: the same head, Content-Length included, and no body */
        char head[REDIRECT_ERROR_MAX];
        size_t hn = redirect_error(head, cases[i].status, true, &dc, NULL);
        ck_assert_uint_eq(hn, n - strlen(body));
        ck_assert(memcmp(head, out, hn) == 0);
    }
    ck_assert_str_eq(http_reason(307), "Temporary Redirect");
    ck_assert_str_eq(http_reason(308), "Permanent Redirect");
    ck_assert_str_eq(http_reason(302), "Found");
    ck_assert_str_eq(http_reason(303), "See Other");
    ck_assert_str_eq(http_reason(499), "Error");
}
END_TEST

/* the answer to an ACME http-01 challenge: 200, text/plain, the key
 * authorization; Connection as asked; HEAD without the body */
START_TEST(test_text_answer)
{
    static const char ka[] = "tok_-1.thumbprint-base64url";
    static const char *const conn[] = {"", "Connection: close\r\n", "Connection: keep-alive\r\n"};
    for (int ch = CONN_HDR_NONE; ch <= CONN_HDR_KEEP; ch++) {
        for (int head = 0; head < 2; head++) {
            char out[REDIRECT_TEXT_MAX + sizeof(ka)], want[512];
            size_t n = redirect_text(out, ka, strlen(ka), head, (enum conn_hdr)ch, &dc);
            snprintf(want, sizeof(want),
                     "HTTP/1.1 200 OK\r\n"
                     "Date: " DATE_STR "\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "%s\r\n%s",
                     strlen(ka), conn[ch], head ? "" : ka);
            ck_bytes(out, n, want);
            ck_assert_uint_le(n, REDIRECT_TEXT_MAX + strlen(ka));
        }
    }
}
END_TEST

/* ---- Date ---- */

START_TEST(test_date_cache)
{
    struct date_cache d;
    memset(&d, 0, sizeof(d));
    date_cache_update(&d, 784111777);
    ck_assert_str_eq(d.str, "Sun, 06 Nov 1994 08:49:37 GMT");
    ck_assert_uint_eq(strlen(d.str), HTTP_DATE_LEN);
    ck_assert(d.sec == 784111777);
    /* same second: unchanged */
    date_cache_update(&d, 784111777);
    ck_assert_str_eq(d.str, "Sun, 06 Nov 1994 08:49:37 GMT");
    date_cache_update(&d, 784111778);
    ck_assert_str_eq(d.str, "Sun, 06 Nov 1994 08:49:38 GMT");

    memset(&d, 0, sizeof(d));
    date_cache_update(&d, 0);
    ck_assert_str_eq(d.str, "Thu, 01 Jan 1970 00:00:00 GMT");
    date_cache_update(&d, 951782400); /* leap day */
    ck_assert_str_eq(d.str, "Tue, 29 Feb 2000 00:00:00 GMT");
    date_cache_update(&d, 1767225599);
    ck_assert_str_eq(d.str, "Wed, 31 Dec 2025 23:59:59 GMT");
    ck_assert_uint_eq(strlen(d.str), HTTP_DATE_LEN);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("redirect");
    TCase *tc = tcase_create("build");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_build_exact);
    tcase_add_test(tc, test_build_connection);
    tcase_add_test(tc, test_build_head);
    tcase_add_test(tc, test_build_extra_headers);
    tcase_add_test(tc, test_build_paths);
    tcase_add_test(tc, test_build_html_escaping);
    tcase_add_test(tc, test_build_body_none);
    tcase_add_test(tc, test_build_cache_control);
    tcase_add_test(tc, test_build_fallback);
    tcase_add_test(tc, test_build_reject);
    tcase_add_test(tc, test_build_max_bound);
    tcase_add_test(tc, test_error_responses);
    tcase_add_test(tc, test_text_answer);
    suite_add_tcase(s, tc);

    TCase *te = tcase_create("escape");
    tcase_add_test(te, test_escape_path);
    tcase_add_test(te, test_escape_every_byte);
    tcase_add_test(te, test_date_cache);
    suite_add_tcase(s, te);
    return s;
}
