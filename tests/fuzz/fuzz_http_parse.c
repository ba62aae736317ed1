/* libFuzzer harness: the request parser and the chunked skipper must never
 * read out of bounds, loop, or accept a head whose spans leave the buffer.
 * The input is also fed in two pieces to exercise the incremental path. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "serve/http_parse.h"
#include "serve/redirect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_spans(const struct http_req *r, size_t len)
{
    assert(r->head_len <= len);
    assert((size_t)r->method.off + r->method.len <= r->head_len);
    assert((size_t)r->path.off + r->path.len <= r->head_len);
    assert((size_t)r->host.off + r->host.len <= r->head_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct http_limits lim = {.max_header_bytes = 2048, .max_uri_bytes = 1024};
    const char *buf = (const char *)data;
    struct http_req one, two;
    http_req_init(&one);
    enum http_result a = http_parse_head(&one, buf, size, &lim);
    if (a == HTTP_DONE) {
        check_spans(&one, size);
        static char out[3 * 4096 + 8];
        if (one.path.len <= 4096) redirect_escape_path(out, buf + one.path.off, one.path.len);
        struct http_chunked ch;
        http_chunked_init(&ch);
        size_t used = 0;
        http_chunked_skip(&ch, buf + one.head_len, size - one.head_len, &used);
        assert(used <= size - one.head_len);
    }
    /* the same bytes in two reads must give the same verdict, status
     * included (414 or 431 never depends on where a packet ended) */
    http_req_init(&two);
    size_t cut = size ? data[0] % (size + 1) : 0;
    enum http_result b = http_parse_head(&two, buf, cut, &lim);
    if (b == HTTP_AGAIN) b = http_parse_head(&two, buf, size, &lim);
    assert(a == b);
    if (a == HTTP_DONE) assert(one.head_len == two.head_len);
    if (a == HTTP_ERROR) assert(one.status == two.status);
    return 0;
}
