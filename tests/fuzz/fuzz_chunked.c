/* Fuzz harness: the chunked-body skipper. Whatever the bytes, it never
 * consumes past its input, counts every byte it consumes (framing and
 * trailers included: max_body_discard bounds them all), stops at the end of
 * the body, and reaches the same verdict however the input is split. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "serve/http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct http_chunked one, two;
    size_t used1 = 0, used2 = 0, u = 0;
    http_chunked_init(&one);
    enum http_result a = http_chunked_skip(&one, buf, size, &used1);
    assert(used1 <= size);
    assert(one.total == used1);
    /* done consumes nothing more */
    if (a == HTTP_DONE) assert(http_chunked_skip(&one, buf, size, &u) == HTTP_DONE && u == 0);

    /* pieces of varying size: the first byte picks them */
    http_chunked_init(&two);
    size_t step = size ? (size_t)data[0] % 7 + 1 : 1;
    enum http_result b = HTTP_AGAIN;
    while (b == HTTP_AGAIN && used2 < size) {
        size_t n = size - used2 < step ? size - used2 : step;
        b = http_chunked_skip(&two, buf + used2, n, &u);
        assert(u <= n);
        used2 += u;
        if (b == HTTP_AGAIN) assert(u == n);
    }
    if (b == HTTP_AGAIN && size == 0) b = a;
    assert(a == b);
    if (a != HTTP_ERROR) assert(used1 == used2);
    assert(two.total == used2);
    return 0;
}
