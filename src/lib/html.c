#include "autoconf.h"

#include "lib/html.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <string.h>

#include "lib/json.h"
#include "lib/lit.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

static inline bool html_plain(unsigned char c)
{
    return (c >= 0x20 && c < 0x7f && c != '&' && c != '<' && c != '>' && c != '"' && c != '\'') ||
           c == '\t' || c == '\n';
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

size_t html_escape(char *out, const char *in, size_t n)
{
    const unsigned char *s = (const unsigned char *)in;
    char *o = out;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && html_plain(s[j])) j++;
        o = put(o, (const char *)s + i, j - i);
        i = j;
        if (i == n) break;
        unsigned char c = s[i];
        size_t len = 1, bad = 1;
        switch (c) {
        case '&': o = put(o, LIT("&amp;")); break;
        case '<': o = put(o, LIT("&lt;")); break;
        case '>': o = put(o, LIT("&gt;")); break;
        case '"': o = put(o, LIT("&quot;")); break;
        case '\'': o = put(o, LIT("&#39;")); break;
        default:
            len = c >= 0x80 ? utf8_seq(s + i, n - i, &bad) : 0;
            if (len) {
                o = put(o, (const char *)s + i, len);
            } else {
                o = put(o, LIT(REPLACEMENT)); /* ill-formed, or a control character */
                len = bad;
            }
        }
        i += len;
    }
    return (size_t)(o - out);
}

void html_str(struct evbuffer *out, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n) return;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)HTML_ESCAPE_MAX(n), &v, 1) < 1) return;
    v.iov_len = html_escape(v.iov_base, s, n);
    evbuffer_commit_space(out, &v, 1);
}
