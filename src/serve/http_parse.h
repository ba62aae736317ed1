/* Incremental HTTP/1.x request-head parser and chunked-body skipper.
 * Pure: bytes in, spans and a status out; no I/O, no allocation.
 *
 * The caller keeps the request's bytes contiguous from offset 0 of buf and
 * calls http_parse_head() again with the longer buffer whenever more bytes
 * arrive; each byte is scanned once. Spans are offsets into that buffer. */
#ifndef DETOURD_HTTP_PARSE_H
#define DETOURD_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_span {
    uint32_t off, len;
};

enum http_result { HTTP_AGAIN = 0, HTTP_DONE = 1, HTTP_ERROR = -1 };

#define HTTP_MAX_CAPTURE 6

struct http_limits {
    size_t max_header_bytes; /* request line + headers; over it: 431 */
    size_t max_uri_bytes;    /* request target; over it: 414 */
    char *const *capture;    /* header names whose values to keep (lowercase) */
    size_t ncapture;         /* at most HTTP_MAX_CAPTURE */
};

enum http_target_form { HTTP_ORIGIN, HTTP_ABSOLUTE, HTTP_AUTHORITY, HTTP_ASTERISK };

struct http_req {
    /* parser state; zero it (http_req_init) before the first call */
    uint32_t line; /* start of the line being parsed */
    uint32_t scan; /* where the search for the next LF resumes */
    uint8_t phase; /* request line, headers, done */

    /* results, valid once HTTP_DONE is returned */
    uint32_t head_len;  /* bytes of the head, including the blank line */
    uint16_t status;    /* error status when HTTP_ERROR: 400, 414, ... */
    const char *reason; /* short why of an error (for debug logging) */
    struct http_span method;
    struct http_span target;
    struct http_span path; /* path + query to append; empty means "/" */
    struct http_span host; /* Host field value, or authority of the target */
    uint8_t form;          /* enum http_target_form */
    uint8_t minor;         /* HTTP/1.minor */
    bool has_host;
    bool is_head;
    bool keep_alive;
    bool expect_continue;
    bool chunked;
    bool has_length;
    uint64_t content_length;
    uint8_t captured; /* bit i: capture[i] was seen (the first one counts) */
    struct http_span capture[HTTP_MAX_CAPTURE];
    bool conn_close; /* Connection: close seen */
    bool conn_keep;  /* Connection: keep-alive seen */
};

void http_req_init(struct http_req *r);
enum http_result http_parse_head(struct http_req *r, const char *buf, size_t len,
                                 const struct http_limits *lim);

/* Chunked transfer-coding skipper: consumes chunk framing and data. */
struct http_chunked {
    uint8_t state;
    uint16_t linelen;   /* bytes in the current size/ext/trailer line */
    uint64_t remaining; /* data bytes left in the current chunk */
    uint64_t total;     /* bytes of the body consumed so far: sizes, extensions,
                           CRLFs and trailers as well as data, so that a limit on
                           it bounds what a client can make us read */
};

void http_chunked_init(struct http_chunked *c);
/* Consumes up to len bytes; *used says how many. Returns HTTP_DONE at the end
 * of the body (trailers included), HTTP_AGAIN when it wants more, HTTP_ERROR
 * on malformed framing. */
enum http_result http_chunked_skip(struct http_chunked *c, const char *buf, size_t len,
                                   size_t *used);

/* RFC 9110 token characters (table shared with the config validator). */
extern const uint8_t http_tchar[256];

#endif
