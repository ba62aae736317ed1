#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/http_parse.h"
#include "unit.h"

static const struct http_limits LIM = {.max_header_bytes = 8192, .max_uri_bytes = 8192};

/* A test input: bytes with an explicit length (NULs allowed). */
struct input {
    const char *name;
    const char *s;
    size_t len; /* 0 = strlen(s) */
};

#define IN(name, lit)                                                                              \
    {                                                                                              \
        name, lit, sizeof(lit) - 1                                                                 \
    }

static size_t in_len(const struct input *in)
{
    return in->len ? in->len : strlen(in->s);
}

static enum http_result parse_lim(struct http_req *r, const char *s, size_t len,
                                  const struct http_limits *lim)
{
    http_req_init(r);
    return http_parse_head(r, s, len, lim);
}

static enum http_result parse(struct http_req *r, const char *s)
{
    return parse_lim(r, s, strlen(s), &LIM);
}

static bool span_eq(const char *buf, struct http_span sp, const char *want)
{
    return sp.len == strlen(want) && memcmp(buf + sp.off, want, sp.len) == 0;
}

#define ck_span(buf, sp, want)                                                                     \
    ck_assert_msg(span_eq((buf), (sp), (want)), "span '%.*s' != '%s'", (int)(sp).len,              \
                  (buf) + (sp).off, (want))

/* ---- bad input: status per case ---- */

struct bad_case {
    struct input in;
    unsigned status;
};

#define BAD(name, lit, st)                                                                         \
    {                                                                                              \
        IN(name, lit), st                                                                          \
    }

static const struct bad_case bad_cases[] = {
    /* malformed request line */
    BAD("no target", "GET\r\n\r\n", 400),
    BAD("method only with space", "GET \r\nHost: a\r\n\r\n", 400),
    BAD("no version (0.9-like)", "GET /\r\n\r\n", 400),
    BAD("0.9-like with header", "GET /index.html\r\nHost: a\r\n\r\n", 400),
    BAD("double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("version two digits", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    BAD("version without dot", "GET / HTTP/11\r\nHost: a\r\n\r\n", 400),
    BAD("version letters", "GET / HTTP/a.b\r\nHost: a\r\n\r\n", 400),
    BAD("garbage version", "GET / FTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("non-token method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("method with slash", "GE/T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("relative target", "GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("authority form without CONNECT", "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("absolute without authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("absolute empty authority", "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("request line is only spaces", "   \r\n\r\n", 400),
    /* bare CR, NUL and control characters */
    BAD("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("bare CR as line end", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    BAD("CR CR LF", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
    BAD("bare CR in header value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    BAD("bare CR in header name", "GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", 400),
    BAD("bare CR line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n", 400),
    BAD("NUL in request line", "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("NUL in method", "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("NUL in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", 400),
    BAD("NUL at value end", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0\r\n\r\n", 400),
    BAD("NUL in header name", "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", 400),
    BAD("SOH in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n", 400),
    BAD("ESC in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[31m\r\n\r\n", 400),
    BAD("VT in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x0b b\r\n\r\n", 400),
    BAD("FF in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x0c b\r\n\r\n", 400),
    BAD("DEL in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7f\r\n\r\n", 400),
    BAD("control in Host", "GET / HTTP/1.1\r\nHost: a\x02\r\n\r\n", 400),
    /* field names */
    BAD("paren in name", "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400),
    BAD("space in name", "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400),
    BAD("quote in name", "GET / HTTP/1.1\r\nHost: a\r\nX\"A: b\r\n\r\n", 400),
    BAD("at in name", "GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n", 400),
    BAD("slash in name", "GET / HTTP/1.1\r\nHost: a\r\nX/A: b\r\n\r\n", 400),
    BAD("brace in name", "GET / HTTP/1.1\r\nHost: a\r\nX{A}: b\r\n\r\n", 400),
    BAD("obs-text in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x80: b\r\n\r\n", 400),
    BAD("DEL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x7f: b\r\n\r\n", 400),
    BAD("empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    BAD("no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    BAD("tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    BAD("space before colon, other", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
    /* obs-fold */
    BAD("obs-fold space", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    BAD("obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
    BAD("fold first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    BAD("fold bare LF", "GET / HTTP/1.1\nHost: a\nX-A: b\n c\n\n", 400),
    /* Host */
    BAD("1.1 without Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    BAD("1.1 no headers at all", "GET / HTTP/1.1\r\n\r\n", 400),
    BAD("1.1 absolute without Host", "GET http://a/ HTTP/1.1\r\n\r\n", 400),
    BAD("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    BAD("two Host different case", "GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n", 400),
    BAD("two Host in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    BAD("Host and empty Host", "GET / HTTP/1.1\r\nHost:\r\nHost: a\r\n\r\n", 400),
    /* Content-Length */
    BAD("CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    BAD("CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
    BAD("CL letters", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    BAD("CL trailing letter", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", 400),
    BAD("CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    BAD("CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400),
    BAD("CL decimal", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1.5\r\n\r\n", 400),
    BAD("CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    BAD("CL blank", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   \r\n\r\n", 400),
    BAD("CL overflow 20 digits",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
    BAD("CL overflow 30 digits",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999999999999999\r\n\r\n",
        400),
    BAD("CL 19 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n",
        400),
    BAD("CL twice different",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    BAD("CL twice different (0 then 1)",
        "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\nCONTENT-LENGTH: 1\r\n\r\n", 400),
    BAD("CL then TE",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        400),
    BAD("TE then CL",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        400),
    BAD("TE then CL 1.0",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400),
    /* transfer codings */
    BAD("TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    BAD("TE gzip, chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("TE chunked, gzip",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
    BAD("TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    BAD("TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501),
    BAD("TE chunked twice",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
        "chunked\r\n\r\n",
        501),
    /* versions */
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    BAD("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    BAD("HTTP/1.9", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505),
    BAD("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505),
    BAD("HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    BAD("HTTP/9.9", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505),
};

START_TEST(test_bad_input)
{
    const struct bad_case *bc = &bad_cases[_i];
    size_t len = in_len(&bc->in);
    struct http_req r;
    enum http_result res = parse_lim(&r, bc->in.s, len, &LIM);
    ck_assert_msg(res == HTTP_ERROR, "%s: result %d, want HTTP_ERROR", bc->in.name, (int)res);
    ck_assert_msg(r.status == bc->status, "%s: status %u, want %u", bc->in.name, r.status,
                  bc->status);
    ck_assert_msg(r.reason != NULL && r.reason[0], "%s: no reason", bc->in.name);

    /* the same verdict when the bytes arrive one at a time */
    http_req_init(&r);
    res = HTTP_AGAIN;
    for (size_t k = 1; k <= len && res == HTTP_AGAIN; k++)
        res = http_parse_head(&r, bc->in.s, k, &LIM);
    ck_assert_msg(res == HTTP_ERROR && r.status == bc->status,
                  "%s (byte by byte): result %d status %u", bc->in.name, (int)res, r.status);
}
END_TEST

/* ---- limits: 414 and 431 ---- */

static char *make_request(size_t target_len, size_t nheaders, size_t hdr_value_len)
{
    size_t cap = target_len + nheaders * (hdr_value_len + 32) + 128;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    size_t o = 0;
    o += (size_t)sprintf(b + o, "GET /");
    memset(b + o, 'a', target_len - 1);
    o += target_len - 1;
    o += (size_t)sprintf(b + o, " HTTP/1.1\r\nHost: example.com\r\n");
    for (size_t i = 0; i < nheaders; i++) {
        o += (size_t)sprintf(b + o, "X-H%zu: ", i);
        memset(b + o, 'v', hdr_value_len);
        o += hdr_value_len;
        o += (size_t)sprintf(b + o, "\r\n");
    }
    o += (size_t)sprintf(b + o, "\r\n");
    b[o] = '\0';
    return b;
}

START_TEST(test_uri_too_long)
{
    struct http_limits lim = {.max_header_bytes = 8192, .max_uri_bytes = 100};
    struct http_req r;
    char *b = make_request(100, 0, 0);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &lim), HTTP_DONE);
    ck_assert_uint_eq(r.target.len, 100);
    free(b);

    b = make_request(101, 0, 0);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &lim), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 414);
    free(b);

    /* over max_header_bytes as well: still 414 when the target is to blame */
    b = make_request(9000, 0, 0);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 414);

    /* the request line has not ended yet, the input buffer is full (conn.c reads up to
     * max_header_bytes + 1024): the long target is seen early */
    ck_assert_int_eq(parse_lim(&r, b, 8192 + 1024, &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 414);
    ck_assert_int_eq(parse_lim(&r, b, 8192, &LIM), HTTP_AGAIN);
    /* just past the head limit it is at least an error */
    ck_assert_int_eq(parse_lim(&r, b, 8193, &LIM), HTTP_ERROR);
    ck_assert(r.status == 414 || r.status == 431);
    free(b);

    /* an absolute-form target counts in full */
    char abs[256];
    snprintf(abs, sizeof(abs), "GET http://example.com/%090d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    ck_assert_int_eq(parse_lim(&r, abs, strlen(abs), &lim), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 414);
}
END_TEST

START_TEST(test_head_too_large)
{
    struct http_limits lim = {.max_header_bytes = 1024, .max_uri_bytes = 1024};
    struct http_req r;
    /* find a request whose head is exactly 1024 bytes, then one byte more */
    char *b = make_request(10, 1, 10);
    size_t base = strlen(b);
    free(b);
    size_t fill = 10 + (1024 - base);
    b = make_request(10, 1, fill);
    ck_assert_uint_eq(strlen(b), 1024);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &lim), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, 1024);
    /* the whole head minus the last LF: still waiting */
    ck_assert_int_eq(parse_lim(&r, b, 1023, &lim), HTTP_AGAIN);
    free(b);

    b = make_request(10, 1, fill + 1);
    ck_assert_uint_eq(strlen(b), 1025);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &lim), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    /* byte by byte: 431 as soon as the limit is passed */
    http_req_init(&r);
    enum http_result res = HTTP_AGAIN;
    for (size_t k = 1; k <= 1025 && res == HTTP_AGAIN; k++) res = http_parse_head(&r, b, k, &lim);
    ck_assert_int_eq(res, HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    free(b);

    /* many small headers */
    b = make_request(10, 400, 20);
    ck_assert_int_eq(parse_lim(&r, b, strlen(b), &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    /* a head that never ends: 431 once past the limit, not before */
    ck_assert_int_eq(parse_lim(&r, b, 8192, &LIM), HTTP_AGAIN);
    ck_assert_int_eq(parse_lim(&r, b, 8193, &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    free(b);

    /* one enormous header line with no LF */
    b = malloc(20000);
    ck_assert_ptr_nonnull(b);
    int n = sprintf(b, "GET / HTTP/1.1\r\nX-Big: ");
    memset(b + n, 'x', 20000 - (size_t)n);
    ck_assert_int_eq(parse_lim(&r, b, 20000, &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    free(b);

    /* empty lines before the request line count as well */
    b = malloc(9000);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < 9000; i += 2) memcpy(b + i, "\r\n", 2);
    ck_assert_int_eq(parse_lim(&r, b, 9000, &LIM), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 431);
    free(b);
}
END_TEST

/* ---- well-formed requests ---- */

START_TEST(test_simple_get)
{
    const char *s = "GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
    struct http_req r;
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
    ck_span(s, r.method, "GET");
    ck_span(s, r.target, "/a/b?c=d&e");
    ck_span(s, r.path, "/a/b?c=d&e");
    ck_span(s, r.host, "example.com");
    ck_assert_uint_eq(r.form, HTTP_ORIGIN);
    ck_assert_uint_eq(r.minor, 1);
    ck_assert(r.has_host);
    ck_assert(!r.is_head);
    ck_assert(r.keep_alive);
    ck_assert(!r.expect_continue);
    ck_assert(!r.chunked);
    ck_assert(!r.has_length);
    ck_assert(!r.conn_close);
    ck_assert(!r.conn_keep);
    ck_assert_uint_eq(r.status, 0);

    /* once done, further calls are a no-op */
    ck_assert_int_eq(http_parse_head(&r, s, strlen(s), &LIM), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
}
END_TEST

START_TEST(test_again_until_complete)
{
    const char *s = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    size_t len = strlen(s);
    for (size_t k = 0; k < len; k++) {
        struct http_req r;
        ck_assert_msg(parse_lim(&r, s, k, &LIM) == HTTP_AGAIN, "prefix %zu", k);
    }
    /* the empty query and a lone '?' are kept as sent */
    struct http_req r;
    const char *q = "GET /p? HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(parse(&r, q), HTTP_DONE);
    ck_span(q, r.path, "/p?");
}
END_TEST

START_TEST(test_body_bytes_not_in_head)
{
    const char *s = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET";
    struct http_req r;
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s) - 8);
    ck_assert(r.has_length);
    ck_assert_uint_eq(r.content_length, 5);
}
END_TEST

START_TEST(test_header_values)
{
    const char *s = "GET / HTTP/1.1\r\nHost: \t example.com \t\r\nX-Empty:\r\nX-Tab: a\tb\r\n"
                    "X-Obs: caf\xc3\xa9\r\nX-Punct: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\r\n\r\n";
    struct http_req r;
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "example.com");

    /* every token character is accepted in a field name */
    const char *t = "GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n";
    ck_assert_int_eq(parse(&r, t), HTTP_DONE);

    /* the token table itself */
    const char *tok =
        "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (int c = 0; c < 256; c++)
        ck_assert_msg((http_tchar[c] != 0) == (c != 0 && strchr(tok, c) != NULL), "tchar %d", c);

    /* Host may be empty (then routing uses the default pool) */
    const char *e = "GET / HTTP/1.1\r\nHost:\r\n\r\n";
    ck_assert_int_eq(parse(&r, e), HTTP_DONE);
    ck_assert(r.has_host);
    ck_assert_uint_eq(r.host.len, 0);

    /* HTTP/1.0 needs no Host */
    const char *h10 = "GET / HTTP/1.0\r\n\r\n";
    ck_assert_int_eq(parse(&r, h10), HTTP_DONE);
    ck_assert(!r.has_host);
    ck_assert_uint_eq(r.minor, 0);
    ck_assert_uint_eq(r.host.len, 0);

    /* header names are matched without regard to case */
    const char *lc = "GET / HTTP/1.1\r\nhOsT: Example.COM\r\ncontent-LENGTH: 7\r\n\r\n";
    ck_assert_int_eq(parse(&r, lc), HTTP_DONE);
    ck_span(lc, r.host, "Example.COM");
    ck_assert_uint_eq(r.content_length, 7);
}
END_TEST

START_TEST(test_content_length)
{
    struct http_req r;
    const char *s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  42 \r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert(r.has_length);
    ck_assert_uint_eq(r.content_length, 42);

    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert(r.has_length);
    ck_assert_uint_eq(r.content_length, 0);

    /* the same value twice is fine */
    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.content_length, 12);

    /* the largest accepted value (18 digits) */
    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.content_length, UINT64_C(999999999999999999));

    /* chunked */
    s = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert(r.chunked);
    ck_assert(!r.has_length);
    ck_assert(r.keep_alive);
}
END_TEST

struct ka_case {
    const char *req;
    bool keep, close_seen, keep_seen;
};

static const struct ka_case ka_cases[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false, true, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", false, true, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true, false, true},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\n\r\n", false, true, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close,upgrade\r\n\r\n", false, true, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false,
     true, true},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true, false, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: xclose\r\n\r\n", true, false, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nX-Connection: close\r\n\r\n", true, false, false},
    {"GET / HTTP/1.0\r\n\r\n", false, false, false},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, false, true},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false, true},
    {"GET / HTTP/1.0\r\nConnection: \t keep-alive , te\r\n\r\n", true, false, true},
    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false, true, true},
    {"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", false, true, false},
    {"GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n", false, false, false},
    {"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false, false, false},
};

START_TEST(test_keep_alive)
{
    const struct ka_case *kc = &ka_cases[_i];
    struct http_req r;
    ck_assert_int_eq(parse(&r, kc->req), HTTP_DONE);
    ck_assert_msg(r.keep_alive == kc->keep, "%s: keep_alive %d", kc->req, r.keep_alive);
    ck_assert_msg(r.conn_close == kc->close_seen, "%s: conn_close %d", kc->req, r.conn_close);
    ck_assert_msg(r.conn_keep == kc->keep_seen, "%s: conn_keep %d", kc->req, r.conn_keep);
}
END_TEST

START_TEST(test_head_and_expect)
{
    struct http_req r;
    ck_assert_int_eq(parse(&r, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_DONE);
    ck_assert(r.is_head);
    /* methods are case-sensitive */
    ck_assert_int_eq(parse(&r, "head /x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_DONE);
    ck_assert(!r.is_head);
    ck_assert_int_eq(parse(&r, "HEADER /x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_DONE);
    ck_assert(!r.is_head);
    ck_assert_int_eq(parse(&r, "HEA /x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_DONE);
    ck_assert(!r.is_head);
    ck_assert_int_eq(parse(&r, "HEAD /x HTTP/1.0\r\n\r\n"), HTTP_DONE);
    ck_assert(r.is_head);

    /* any token is a method */
    const char *m = "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(parse(&r, m), HTTP_DONE);
    ck_span(m, r.method, "M-SEARCH");

    const char *e =
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    ck_assert_int_eq(parse(&r, e), HTTP_DONE);
    ck_assert(r.expect_continue);
    ck_assert_int_eq(parse(&r, "POST / HTTP/1.1\r\nHost: a\r\nexpect:  100-Continue \r\n\r\n"),
                     HTTP_DONE);
    ck_assert(r.expect_continue);
    ck_assert_int_eq(parse(&r, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"), HTTP_DONE);
    ck_assert(!r.expect_continue);
    ck_assert_int_eq(parse(&r, "POST / HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_DONE);
    ck_assert(!r.expect_continue);
}
END_TEST

START_TEST(test_absolute_form)
{
    struct http_req r;
    const char *s = "GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other.org\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.form, HTTP_ABSOLUTE);
    ck_span(s, r.target, "http://Example.com:8080/a/b?x=1");
    ck_span(s, r.host, "Example.com:8080"); /* the authority wins over Host */
    ck_span(s, r.path, "/a/b?x=1");
    ck_assert(r.has_host);

    /* a Host field never overrides the authority, whatever its case */
    s = "GET https://h.example/ HTTP/1.1\r\nHOST: x\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "h.example");
    ck_span(s, r.path, "/");

    /* empty path */
    s = "GET http://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "h.example");
    ck_assert_uint_eq(r.path.len, 0);

    /* query without a path */
    s = "GET http://h.example?q=1 HTTP/1.1\r\nHost: h.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "h.example");
    ck_span(s, r.path, "?q=1");

    /* userinfo is dropped from the host */
    s = "GET http://user:pw@h.example/p HTTP/1.1\r\nHost: h.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "h.example");
    ck_span(s, r.path, "/p");

    /* IPv6 literal authority */
    s = "GET http://[::1]:8080/v6 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "[::1]:8080");
    ck_span(s, r.path, "/v6");

    /* other schemes are still absolute-form */
    s = "GET HTTPS+X-1.2://h/p HTTP/1.0\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.form, HTTP_ABSOLUTE);
    ck_span(s, r.host, "h");
}
END_TEST

START_TEST(test_asterisk_and_connect)
{
    struct http_req r;
    const char *s = "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.form, HTTP_ASTERISK);
    ck_span(s, r.target, "*");
    ck_assert_uint_eq(r.path.len, 0);
    ck_span(s, r.host, "a.example");

    /* "*x" is not the asterisk form */
    ck_assert_int_eq(parse(&r, "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_ERROR);
    ck_assert_uint_eq(r.status, 400);

    s = "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.form, HTTP_AUTHORITY);
    ck_span(s, r.host, "api.example.com:443");
    ck_span(s, r.target, "api.example.com:443");
    ck_assert_uint_eq(r.path.len, 0);

    /* the authority wins over the Host field */
    s = "CONNECT a.example:443 HTTP/1.1\r\nHost: b.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_span(s, r.host, "a.example:443");

    /* CONNECT with an origin-form target is still origin-form */
    s = "CONNECT /x HTTP/1.1\r\nHost: b.example\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.form, HTTP_ORIGIN);
    ck_span(s, r.host, "b.example");
}
END_TEST

START_TEST(test_leading_empty_lines_and_bare_lf)
{
    struct http_req r;
    const char *s = "\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
    ck_assert_uint_eq(r.method.off, 4);
    ck_span(s, r.method, "GET");
    ck_span(s, r.path, "/x");

    s = "\n\nGET /x HTTP/1.1\nHost: a\n\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
    ck_span(s, r.method, "GET");
    ck_span(s, r.host, "a");

    /* bare LF everywhere */
    s = "GET /y?z HTTP/1.1\nHost: b.example\nConnection: close\n\nrest";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s) - 4);
    ck_span(s, r.path, "/y?z");
    ck_span(s, r.host, "b.example");
    ck_assert(!r.keep_alive);

    /* mixed line endings */
    s = "GET / HTTP/1.1\r\nHost: c\nX-A: b\r\n\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
    ck_span(s, r.host, "c");
    s = "GET / HTTP/1.1\nHost: c\r\n\r\n";
    ck_assert_int_eq(parse(&r, s), HTTP_DONE);
    ck_assert_uint_eq(r.head_len, strlen(s));
}
END_TEST

/* ---- incremental parsing: every split point ---- */

static const char *const valid_reqs[] = {
    "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "GET /a/b%20c?x=1&y=%41 HTTP/1.1\r\nHost: API.example.com:8443\r\nUser-Agent: curl/8.0\r\n"
    "Accept: */*\r\nConnection: keep-alive\r\n\r\n",
    "\r\n\nPOST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1234\r\nExpect: 100-continue\r\n"
    "Connection: close\r\n\r\n",
    "HEAD /h HTTP/1.0\nConnection: Keep-Alive\nX-Empty:\n\n",
    "PUT http://user@abs.example:81 HTTP/1.1\r\nHost: abs.example\r\nTransfer-Encoding: "
    "chunked\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: star.example\r\n\r\n",
    "CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n",
    "DELETE /x HTTP/1.1\r\nHost:  spaced.example \t\r\nX-Obs: \xe2\x82\xac\r\nContent-Length: 5\r\n"
    "content-length: 5\r\n\r\n",
};

static void assert_same(const struct http_req *a, const struct http_req *b, const char *what)
{
#define SAME(f) ck_assert_msg(a->f == b->f, "%s: field " #f " differs", what)
#define SAME_SPAN(f)                                                                               \
    ck_assert_msg(a->f.off == b->f.off && a->f.len == b->f.len, "%s: span " #f " differs", what)
    SAME(head_len);
    SAME(status);
    SAME_SPAN(method);
    SAME_SPAN(target);
    SAME_SPAN(path);
    SAME_SPAN(host);
    SAME(form);
    SAME(minor);
    SAME(has_host);
    SAME(is_head);
    SAME(keep_alive);
    SAME(expect_continue);
    SAME(chunked);
    SAME(has_length);
    SAME(content_length);
    SAME(conn_close);
    SAME(conn_keep);
#undef SAME
#undef SAME_SPAN
}

START_TEST(test_split_every_byte)
{
    const char *s = valid_reqs[_i];
    size_t len = strlen(s);
    /* trailing bytes of a next request must not change anything */
    char *buf = malloc(len + 16);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, s, len);
    memcpy(buf + len, "GET / HTTP/1.1\r\n", 16);

    struct http_req one;
    ck_assert_int_eq(parse_lim(&one, buf, len, &LIM), HTTP_DONE);
    ck_assert_uint_eq(one.head_len, len);
    struct http_req extra;
    ck_assert_int_eq(parse_lim(&extra, buf, len + 16, &LIM), HTTP_DONE);
    assert_same(&one, &extra, "with trailing bytes");

    /* two calls: a prefix of k bytes, then everything */
    for (size_t k = 0; k <= len; k++) {
        struct http_req r;
        http_req_init(&r);
        enum http_result res = http_parse_head(&r, buf, k, &LIM);
        ck_assert_msg(res == (k == len ? HTTP_DONE : HTTP_AGAIN), "req %d prefix %zu: %d", _i, k,
                      (int)res);
        ck_assert_int_eq(http_parse_head(&r, buf, len + 16, &LIM), HTTP_DONE);
        char what[64];
        snprintf(what, sizeof(what), "req %d split at %zu", _i, k);
        assert_same(&one, &r, what);
    }

    /* one byte at a time */
    struct http_req r;
    http_req_init(&r);
    for (size_t k = 0; k < len; k++)
        ck_assert_int_eq(http_parse_head(&r, buf, k, &LIM), HTTP_AGAIN);
    ck_assert_int_eq(http_parse_head(&r, buf, len, &LIM), HTTP_DONE);
    assert_same(&one, &r, "byte by byte");

    /* three pieces: every pair of split points */
    for (size_t a = 0; a <= len; a += 3) {
        for (size_t b = a; b <= len; b += 5) {
            http_req_init(&r);
            http_parse_head(&r, buf, a, &LIM);
            http_parse_head(&r, buf, b, &LIM);
            ck_assert_int_eq(http_parse_head(&r, buf, len, &LIM), HTTP_DONE);
            assert_same(&one, &r, "three pieces");
        }
    }
    free(buf);
}
END_TEST

/* ---- pipelining ---- */

START_TEST(test_pipelined)
{
    const char *s = "GET /one HTTP/1.1\r\nHost: a.example\r\n\r\n"
                    "POST /two?x HTTP/1.1\r\nHost: b.example\r\nContent-Length: 5\r\n\r\nhello"
                    "HEAD /three HTTP/1.1\nHost: c.example\n\n"
                    "\r\nGET /four HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                    "GET /five HTTP/1.1\r\nHost: e.example\r\nConnection: close\r\n\r\n"
                    "GET /six HTTP/1.1\r\nHo";
    static const struct {
        const char *path, *host;
        bool head, keep;
        uint64_t body;
    } want[] = {
        {"/one", "a.example", false, true, 0},   {"/two?x", "b.example", false, true, 5},
        {"/three", "c.example", true, true, 0},  {"/four", "", false, true, 0},
        {"/five", "e.example", false, false, 0},
    };
    const char *p = s;
    size_t left = strlen(s);
    struct http_req r;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        http_req_init(&r);
        ck_assert_msg(http_parse_head(&r, p, left, &LIM) == HTTP_DONE, "request %zu", i);
        ck_span(p, r.path, want[i].path);
        ck_span(p, r.host, want[i].host);
        ck_assert(r.is_head == want[i].head);
        ck_assert(r.keep_alive == want[i].keep);
        ck_assert_uint_eq(r.content_length, want[i].body);
        p += r.head_len + r.content_length;
        left -= r.head_len + r.content_length;
    }
    /* the last one is incomplete */
    http_req_init(&r);
    ck_assert_int_eq(http_parse_head(&r, p, left, &LIM), HTTP_AGAIN);
    ck_assert_uint_eq(left, strlen("GET /six HTTP/1.1\r\nHo"));
}
END_TEST

/* 414 or 431 (or anything else) must not depend on where the bytes are
 * split: a request line that has not ended yet is judged like a whole one. */
struct split_case {
    const char *name;
    const char *s;
    unsigned status; /* 0: HTTP_DONE */
    size_t uri;      /* max_uri_bytes (max_header_bytes is 64) */
};

static const struct split_case split_cases[] = {
    {"long method, short target",
     "GETGETGETGETGETGETGE /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 431,
     40},
    {"target over max_uri",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 414,
     40},
    {"target past the head limit",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
     "HTTP/1.1\r\nHost: a\r\n\r\n",
     414, 100},
    {"target ends at the limit",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
     414, 100},
    {"target ends before the limit",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
     431, 100},
    {"long version",
     "GET /a HTTP/1.1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nHost: "
     "a\r\n\r\n",
     431, 40},
    {"no space at all",
     "GETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGET\r\n\r\n", 431, 40},
    {"empty lines first",
     "\r\n\r\n\r\nGETGETGETGETGETGETGE /aaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", 431, 40},
    {"headers too large",
     "GET /a HTTP/1.1\r\nHost: a\r\nX-A: "
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
     431, 40},
    {"fits", "GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 0, 40},
    {"malformed, short", "GET /a HTTP/1.1 x\r\nHost: a\r\n\r\n", 400, 40},
};

static enum http_result verdict(const char *s, size_t len, size_t cut,
                                const struct http_limits *lim, unsigned *status)
{
    struct http_req r;
    http_req_init(&r);
    enum http_result res = cut ? http_parse_head(&r, s, cut, lim) : HTTP_AGAIN;
    if (res == HTTP_AGAIN) res = http_parse_head(&r, s, len, lim);
    *status = res == HTTP_ERROR ? r.status : 0;
    return res;
}

START_TEST(test_verdict_every_split)
{
    const struct split_case *sc = &split_cases[_i];
    const struct http_limits lim = {.max_header_bytes = 64, .max_uri_bytes = sc->uri};
    size_t len = strlen(sc->s);
    unsigned whole, st;
    enum http_result res = verdict(sc->s, len, 0, &lim, &whole);
    ck_assert_msg(whole == sc->status && res == (sc->status ? HTTP_ERROR : HTTP_DONE),
                  "%s: whole: %u", sc->name, whole);
    for (size_t k = 1; k < len; k++) {
        enum http_result rk = verdict(sc->s, len, k, &lim, &st);
        ck_assert_msg(rk == res && st == whole, "%s: split at %zu: %u, whole: %u", sc->name, k, st,
                      whole);
    }
    /* byte by byte */
    struct http_req r;
    http_req_init(&r);
    res = HTTP_AGAIN;
    for (size_t k = 1; k <= len && res == HTTP_AGAIN; k++)
        res = http_parse_head(&r, sc->s, k, &lim);
    st = res == HTTP_ERROR ? r.status : 0;
    ck_assert_msg(st == whole, "%s: byte by byte: %u, whole: %u", sc->name, st, whole);
}
END_TEST

/* ---- chunked bodies ---- */

struct chunked_case {
    const char *body;
    size_t len;
};

#define CK(lit)                                                                                    \
    {                                                                                              \
        lit, sizeof(lit) - 1                                                                       \
    }

static const struct chunked_case chunked_ok[] = {
    CK("0\r\n\r\n"),
    CK("5\r\nhello\r\n0\r\n\r\n"),
    CK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    CK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"),
    CK("1f\r\n0123456789012345678901234567890\r\n0\r\n\r\n"),
    CK("0005\r\nhello\r\n000\r\n\r\n"),
    CK("5;name=value\r\nhello\r\n0;last\r\n\r\n"),
    CK("5 ; a=\"b c\" ;d\r\nhello\r\n0\r\n\r\n"),
    CK("5\t;x\r\nhello\r\n0\r\n\r\n"),
    CK("5 \t \r\nhello\r\n0 \r\n\r\n"),
    CK("3\r\n\r\n\r\r\n0\r\nTrailer-A: x\r\nTrailer-B: y z\r\n\r\n"),
    CK("2\r\nab\r\n0\r\nT: \xc3\xa9\r\n\r\n"),
    CK("5\nhello\n0\n\n"),
    CK("5\r\nhello\n0\nT: v\n\n"),
    CK("4\r\n\0\0\0\0\r\n0\r\n\r\n"),
    CK("2\r\n0\r\r\n0\r\n\r\n"),
};

static enum http_result feed(struct http_chunked *c, const char *s, size_t len, size_t *used)
{
    size_t u = 0;
    enum http_result res = http_chunked_skip(c, s, len, &u);
    ck_assert_uint_le(u, len);
    *used = u;
    return res;
}

START_TEST(test_chunked_split)
{
    const struct chunked_case *cc = &chunked_ok[_i];
    size_t len = cc->len;
    char *buf = malloc(len + 20);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, cc->body, len);
    memcpy(buf + len, "GET / HTTP/1.1\r\n\r\n\r\n", 20);

    /* one shot, with the next request's bytes behind it */
    struct http_chunked c;
    size_t used;
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, buf, len + 20, &used), HTTP_DONE);
    ck_assert_msg(used == len, "case %d: used %zu of %zu", _i, used, len);
    ck_assert_uint_eq(c.total, len); /* every byte counts */
    /* done stays done and consumes nothing */
    ck_assert_int_eq(feed(&c, buf + used, 20, &used), HTTP_DONE);
    ck_assert_uint_eq(used, 0);

    /* two pieces split at every byte boundary */
    for (size_t k = 0; k <= len; k++) {
        http_chunked_init(&c);
        size_t u1, u2;
        enum http_result r1 = feed(&c, buf, k, &u1);
        if (k < len) {
            ck_assert_msg(r1 == HTTP_AGAIN, "case %d split %zu: first %d", _i, k, (int)r1);
            ck_assert_uint_eq(u1, k);
        } else {
            ck_assert_int_eq(r1, HTTP_DONE);
        }
        enum http_result r2 = feed(&c, buf + u1, len + 20 - u1, &u2);
        ck_assert_msg(r2 == HTTP_DONE, "case %d split %zu: second %d", _i, k, (int)r2);
        ck_assert_msg(u1 + u2 == len, "case %d split %zu: used %zu", _i, k, u1 + u2);
        ck_assert_uint_eq(c.total, len); /* every byte counts */
    }

    /* one byte at a time */
    http_chunked_init(&c);
    size_t pos = 0;
    enum http_result res = HTTP_AGAIN;
    while (res == HTTP_AGAIN) {
        ck_assert_uint_lt(pos, len);
        res = feed(&c, buf + pos, 1, &used);
        ck_assert_uint_eq(used, 1);
        pos += used;
    }
    ck_assert_int_eq(res, HTTP_DONE);
    ck_assert_uint_eq(pos, len);
    ck_assert_uint_eq(c.total, len); /* every byte counts */
    free(buf);
}
END_TEST

START_TEST(test_chunked_large)
{
    /* big chunk sizes are counted, not buffered */
    struct http_chunked c;
    size_t used;
    http_chunked_init(&c);
    const char *h = "fffffffffffffff\r\n"; /* 15 hex digits: 2^60 - 1 */
    ck_assert_int_eq(feed(&c, h, strlen(h), &used), HTTP_AGAIN);
    ck_assert_uint_eq(used, strlen(h));
    ck_assert_uint_eq(c.remaining, (UINT64_C(1) << 60) - 1);

    static char data[65536];
    memset(data, 'x', sizeof(data));
    for (int i = 0; i < 16; i++) {
        ck_assert_int_eq(feed(&c, data, sizeof(data), &used), HTTP_AGAIN);
        ck_assert_uint_eq(used, sizeof(data));
    }
    ck_assert_uint_eq(c.total, strlen(h) + 16 * sizeof(data));

    /* many small chunks in a row */
    http_chunked_init(&c);
    size_t total = 0;
    for (int i = 1; i <= 300; i++) {
        char piece[600];
        int n = snprintf(piece, sizeof(piece), "%x\r\n", i);
        memset(piece + n, 'y', (size_t)i);
        memcpy(piece + n + i, "\r\n", 2);
        ck_assert_int_eq(feed(&c, piece, (size_t)n + (size_t)i + 2, &used), HTTP_AGAIN);
        ck_assert_uint_eq(used, (size_t)n + (size_t)i + 2);
        total += (size_t)n + (size_t)i + 2;
    }
    ck_assert_int_eq(feed(&c, "0\r\n\r\n", 5, &used), HTTP_DONE);
    total += 5;
    ck_assert_uint_eq(c.total, total);
}
END_TEST

static const struct input chunked_bad[] = {
    IN("non-hex size", "x\r\nhello\r\n0\r\n\r\n"),
    IN("empty size line", "\r\nhello\r\n0\r\n\r\n"),
    IN("leading space", " 5\r\nhello\r\n0\r\n\r\n"),
    IN("negative size", "-5\r\nhello\r\n0\r\n\r\n"),
    IN("hex prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
    IN("garbage after size", "5x\r\nhello\r\n0\r\n\r\n"),
    IN("garbage after size and space", "5 x\r\nhello\r\n0\r\n\r\n"),
    IN("size then semicolon missing", "5 6\r\nhello\r\n0\r\n\r\n"),
    IN("overflowing size", "10000000000000000\r\n"),
    IN("16 hex digits", "ffffffffffffffff\r\n"),
    IN("data longer than size", "5\r\nhello!\r\n0\r\n\r\n"),
    IN("data shorter than size", "5\r\nhel\r\n0\r\n\r\n"),
    IN("CR without LF after data", "5\r\nhello\rX0\r\n\r\n"),
    IN("CR without LF after size", "5\rhello\r\n0\r\n\r\n"),
    IN("control in extension", "5;a\x01\r\nhello\r\n0\r\n\r\n"),
    IN("NUL in extension", "5;a\0\r\nhello\r\n0\r\n\r\n"),
    IN("control in trailer", "0\r\nT: a\x01\r\n\r\n"),
    IN("CR without LF in trailer", "0\r\nT: a\rb\r\n\r\n"),
    IN("CR without LF at end", "0\r\n\rX"),
    IN("CR without LF at last chunk", "0\rX\r\n"),
};

START_TEST(test_chunked_bad)
{
    const struct input *in = &chunked_bad[_i];
    size_t len = in_len(in);
    struct http_chunked c;
    size_t used;
    http_chunked_init(&c);
    enum http_result res = feed(&c, in->s, len, &used);
    ck_assert_msg(res == HTTP_ERROR, "%s: result %d", in->name, (int)res);

    /* byte by byte reaches the same verdict */
    http_chunked_init(&c);
    res = HTTP_AGAIN;
    for (size_t i = 0; i < len && res == HTTP_AGAIN; i++) res = feed(&c, in->s + i, 1, &used);
    ck_assert_msg(res == HTTP_ERROR, "%s (byte by byte): result %d", in->name, (int)res);
}
END_TEST

START_TEST(test_chunked_line_limits)
{
    struct http_chunked c;
    size_t used;
    /* a long extension is fine up to the limit, an endless one is not */
    char *b = malloc(10000);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "5;", 2);
    memset(b + 2, 'e', 10000 - 2);
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, b, 10000, &used), HTTP_ERROR);

    /* an endless trailer line */
    memcpy(b, "0\r\nT:", 5);
    memset(b + 5, 't', 10000 - 5);
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, b, 10000, &used), HTTP_ERROR);

    /* endless zeros in the size */
    memset(b, '0', 10000);
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, b, 10000, &used), HTTP_ERROR);

    /* a moderate extension is accepted */
    int n = sprintf(b, "1;");
    memset(b + n, 'e', 1000);
    memcpy(b + n + 1000, "\r\nz\r\n0\r\n\r\n", 10);
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, b, (size_t)n + 1010, &used), HTTP_DONE);
    ck_assert_uint_eq(used, (size_t)n + 1010);
    ck_assert_uint_eq(c.total, (size_t)n + 1010);
    free(b);
}
END_TEST

/* A client that sends endless chunk extensions or trailers, with little or
 * no data, is counted byte for byte: the body limit stops it. */
START_TEST(test_chunked_framing_counts)
{
    struct http_chunked c;
    size_t used, sent = 0;
    char piece[4200];
    /* 1-byte chunks, each with a 4000-byte extension */
    int n = snprintf(piece, sizeof(piece), "1;");
    memset(piece + n, 'e', 4000);
    memcpy(piece + n + 4000, "\r\nz\r\n", 5);
    size_t plen = (size_t)n + 4005;
    http_chunked_init(&c);
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(feed(&c, piece, plen, &used), HTTP_AGAIN);
        sent += used;
    }
    ck_assert_uint_eq(sent, 300 * plen);
    ck_assert_uint_eq(c.total, sent);
    ck_assert_uint_gt(c.total, 1u << 20); /* over the default max_body_discard */

    /* no data at all, then trailer lines without end */
    http_chunked_init(&c);
    ck_assert_int_eq(feed(&c, "0\r\n", 3, &used), HTTP_AGAIN);
    sent = used;
    memcpy(piece, "X-T: ", 5);
    memset(piece + 5, 't', 4000);
    memcpy(piece + 4005, "\r\n", 2);
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(feed(&c, piece, 4007, &used), HTTP_AGAIN);
        sent += used;
    }
    ck_assert_uint_eq(c.total, sent);
    ck_assert_uint_gt(c.total, 1u << 20);
    ck_assert_int_eq(feed(&c, "\r\n", 2, &used), HTTP_DONE);
    ck_assert_uint_eq(c.total, sent + 2);

    /* bare CRLFs where data would be: "0" sizes are one line each */
    http_chunked_init(&c);
    const char *two = "1\r\na\r\n1 \t \r\nb\r\n";
    ck_assert_int_eq(feed(&c, two, strlen(two), &used), HTTP_AGAIN);
    ck_assert_uint_eq(c.total, strlen(two));
}
END_TEST

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(test_capture_headers)
{
    char *names[] = {"x-user-id", "x-tenant"};
    const struct http_limits lim = {
        .max_header_bytes = 8192, .max_uri_bytes = 8192, .capture = names, .ncapture = 2};
    const char *req = "GET / HTTP/1.1\r\nHost: a\r\nX-User-ID:  42 \r\n"
                      "x-user-id: 43\r\nX-Other: 1\r\n\r\n";
    struct http_req r;
    http_req_init(&r);
    ck_assert_int_eq(http_parse_head(&r, req, strlen(req), &lim), HTTP_DONE);
    ck_assert_uint_eq(r.captured, 1); /* only the first name was present */
    ck_assert_uint_eq(r.capture[0].len, 2);
    ck_assert(memcmp(req + r.capture[0].off, "42", 2) == 0); /* the first field, trimmed */
    /* without capture names nothing is kept */
    http_req_init(&r);
    ck_assert_int_eq(http_parse_head(&r, req, strlen(req), &LIM), HTTP_DONE);
    ck_assert_uint_eq(r.captured, 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("http_parse");
    TCase *tc = tcase_create("head");
    tcase_add_loop_test(tc, test_bad_input, 0, NELEM(bad_cases));
    tcase_add_test(tc, test_uri_too_long);
    tcase_add_test(tc, test_capture_headers);
    tcase_add_test(tc, test_head_too_large);
    tcase_add_test(tc, test_simple_get);
    tcase_add_test(tc, test_again_until_complete);
    tcase_add_test(tc, test_body_bytes_not_in_head);
    tcase_add_test(tc, test_header_values);
    tcase_add_test(tc, test_content_length);
    tcase_add_loop_test(tc, test_keep_alive, 0, NELEM(ka_cases));
    tcase_add_test(tc, test_head_and_expect);
    tcase_add_test(tc, test_absolute_form);
    tcase_add_test(tc, test_asterisk_and_connect);
    tcase_add_test(tc, test_leading_empty_lines_and_bare_lf);
    tcase_add_loop_test(tc, test_split_every_byte, 0, NELEM(valid_reqs));
    tcase_add_test(tc, test_pipelined);
    tcase_add_loop_test(tc, test_verdict_every_split, 0, NELEM(split_cases));
    suite_add_tcase(s, tc);

    TCase *tk = tcase_create("chunked");
    tcase_add_loop_test(tk, test_chunked_split, 0, NELEM(chunked_ok));
    tcase_add_test(tk, test_chunked_large);
    tcase_add_loop_test(tk, test_chunked_bad, 0, NELEM(chunked_bad));
    tcase_add_test(tk, test_chunked_line_limits);
    tcase_add_test(tk, test_chunked_framing_counts);
    suite_add_tcase(s, tk);
    return s;
}
