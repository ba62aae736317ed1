/* Response building for the request path. Everything that does not depend
 * on the request is built once per config (redirect_prepare); per request
 * only the escaped path, the cached Date and Content-Length are added, and
 * the response is a handful of memcpy()s into the connection's out buffer. */
#ifndef DETOURD_REDIRECT_H
#define DETOURD_REDIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "lib/diag.h"
#include "snapshot.h"

#define HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

struct date_cache {
    time_t sec;
    char str[HTTP_DATE_LEN + 1];
};

enum conn_hdr { CONN_HDR_NONE, CONN_HDR_CLOSE, CONN_HDR_KEEP };

/* Refreshes the cached Date string when the second changed. */
void date_cache_update(struct date_cache *dc, time_t now);

/* Builds every template of c; false (with d filled) on allocation failure. */
bool redirect_prepare(struct config *c, struct diag *d);
void redirect_release(struct config *c);

/* An upper bound for the bytes redirect_build() writes for a path (plus
 * extra->len with extra). */
size_t redirect_max(const struct pool *p, const struct tmpl *t, size_t path_len);
/* Writes one whole response to out (at least redirect_max() bytes). extra:
 * header lines of the listener (Strict-Transport-Security on a TLS
 * listener with hsts:), each ending in CRLF, copied as they are; or NULL. */
size_t redirect_build(char *out, const struct pool *p, const struct tmpl *t, const char *path,
                      size_t path_len, bool head_only, enum conn_hdr ch,
                      const struct date_cache *dc, const struct chunk *extra);

/* The error statuses the request path answers, with their reasons: the one
 * list the error answers and their counters (counters.h) are built from. */
#define HTTP_ERRORS(X)                                                                             \
    X(400, "Bad Request")                                                                          \
    X(408, "Request Timeout")                                                                      \
    X(414, "URI Too Long")                                                                         \
    X(421, "Misdirected Request")                                                                  \
    X(431, "Request Header Fields Too Large")                                                      \
    X(501, "Not Implemented")                                                                      \
    X(505, "HTTP Version Not Supported")

/* A complete error response (always with Connection: close); head_only:
 * the same head (Content-Length included) without the body, for HEAD;
 * extra as for redirect_build(). At most REDIRECT_ERROR_MAX + extra->len
 * bytes. */
#define REDIRECT_ERROR_MAX 256
size_t redirect_error(char *out, unsigned status, bool head_only, const struct date_cache *dc,
                      const struct chunk *extra);

/* A 200 text/plain answer with body (an ACME http-01 key authorization:
 * rare, so built per request), Connection as ch says; head_only: without
 * the body. At most REDIRECT_TEXT_MAX + len bytes. */
#define REDIRECT_TEXT_MAX 160
size_t redirect_text(char *out, const char *body, size_t len, bool head_only, enum conn_hdr ch,
                     const struct date_cache *dc);

/* Percent-encodes bytes that are not allowed in a URI path or query (and a
 * '%' that does not start a %XX escape); out needs 3*n+1 bytes. A path that
 * does not start with '/' gets one. Returns the bytes written. */
size_t redirect_escape_path(char *out, const char *in, size_t n);

const char *http_reason(unsigned status);

#endif
