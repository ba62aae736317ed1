#include "autoconf.h"

#include "lib/json.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <string.h>

#include "lib/lit.h"

size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    *bad = 1;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; /* below: overlong */
        if (c == 0xed) hi = 0x9f; /* above: a surrogate */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90; /* below: overlong */
        if (c == 0xf4) hi = 0x8f; /* above: beyond U+10FFFF */
    } else {
        return 0; /* 80-c1 (continuation, overlong lead) or f5-ff */
    }
    for (size_t k = 1; k < len; k++) {
        if (k >= n || s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return len;
}

static inline bool json_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

size_t json_escape(char *out, const char *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    char *o = out;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && json_plain(s[j])) j++; /* a typical string is one run */
        memcpy(o, s + i, j - i);
        o += j - i;
        i = j;
        if (i == n) break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t bad, len = utf8_seq(s + i, n - i, &bad);
            if (len) {
                memcpy(o, s + i, len);
                o += len;
                i += len;
            } else {
                memcpy(o, LIT("\\ufffd"));
                o += LIT_LEN("\\ufffd");
                i += bad;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\': *o++ = (char)c; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default: /* other control characters and DEL */
            memcpy(o, LIT("u00"));
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
        i++;
    }
    return (size_t)(o - out);
}

void json_str(struct evbuffer *out, const char *s)
{
    if (!s) {
        evbuffer_add(out, LIT("null"));
        return;
    }
    size_t n = strlen(s);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(JSON_ESCAPE_MAX(n) + 2), &v, 1) < 1) return;
    char *o = v.iov_base;
    o[0] = '"';
    size_t len = 1 + json_escape(o + 1, s, n);
    o[len++] = '"';
    v.iov_len = len;
    evbuffer_commit_space(out, &v, 1);
}
