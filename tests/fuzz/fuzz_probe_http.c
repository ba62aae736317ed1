/* Fuzz harness: the health probe's response parsing (probe_http.c). The
 * status line, the end of the head and Content-Length are read from a
 * buffer that is not NUL-terminated: nothing may read past it, and the
 * results stay in range. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "control/probe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    const char *nl = memchr(buf, '\n', size);
    int status = probe_http_status(buf, nl ? (size_t)(nl - buf) : size);
    assert(status >= 0 && status <= 999);
    size_t head = probe_http_head_end(buf, size);
    assert(head <= size);
    if (head) {
        assert(head >= 2 && buf[head - 1] == '\n');
        long long cl = probe_http_content_length(buf, head);
        assert(cl >= -1);
    }
    /* the probe looks at the head as it grows: any prefix is fine too */
    size_t cut = size ? (size_t)data[size - 1] % (size + 1) : 0;
    size_t h2 = probe_http_head_end(buf, cut);
    assert(h2 <= cut);
    if (h2) assert(h2 == head); /* the first blank line, whatever follows */
    return 0;
}
