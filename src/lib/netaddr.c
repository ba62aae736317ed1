#include "autoconf.h"

#include "lib/netaddr.h"
#include "lib/lit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>

bool netaddr_parse_u64(const char *s, size_t *consumed, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    if (s[0] < '0' || s[0] > '9') return false;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *consumed = i;
    *out = v;
    return true;
}

bool netaddr_parse_listen(const char *s, struct listen_addr *out)
{
    memset(out, 0, sizeof(*out));
    const char *colon;
    char host[48];
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host)) return false;
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host)) return false;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        if (strcmp(host, "*") == 0 || host[0] == '\0') strcpy(host, "0.0.0.0");
    }
    size_t n;
    uint64_t port;
    if (!netaddr_parse_u64(colon + 1, &n, &port) || colon[1 + n] != '\0' || port == 0 ||
        port > 65535)
        return false;
    out->port = (uint16_t)port;
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (s[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(out->port);
        out->sslen = sizeof(*sin);
        snprintf(out->text, sizeof(out->text), "%s:%u", host, out->port);
    } else if (s[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(out->port);
        out->sslen = sizeof(*sin6);
        char norm[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &sin6->sin6_addr, norm, sizeof(norm));
        snprintf(host, sizeof(host), "%s", norm);
        snprintf(out->text, sizeof(out->text), "[%s]:%u", host, out->port);
    } else {
        return false;
    }
    snprintf(out->host, sizeof(out->host), "%s", host);
    return true;
}

static bool url_char_ok(unsigned char c)
{
    static const uint8_t bad[128] = {['"'] = 1, ['<'] = 1, ['>'] = 1, ['\\'] = 1, ['^'] = 1,
                                     ['`'] = 1, ['{'] = 1, ['|'] = 1, ['}'] = 1};
    return c > 0x20 && c < 0x7f && !bad[c];
}

const char *netaddr_parse_url(const char *s, bool allow_query, struct url *u)
{
    memset(u, 0, sizeof(*u));
    size_t slen = strlen(s);
    size_t sch;
    if (strncasecmp(s, LIT("http://")) == 0) {
        sch = 7;
        u->port = 80;
    } else if (strncasecmp(s, LIT("https://")) == 0) {
        sch = 8;
        u->port = 443;
    } else {
        return "must be an absolute http:// or https:// URL";
    }
    for (size_t i = 0; i < slen; i++)
        if (!url_char_ok((unsigned char)s[i]))
            return "contains a character not allowed in a URL (percent-encode it)";
    const char *a = s + sch;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0) return "has no host";
    if (memchr(a, '@', alen)) return "must not carry user:password@";
    const char *port = NULL;
    size_t hlen;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb) return "has an unterminated IPv6 literal";
        hlen = (size_t)(rb - a - 1);
        if (hlen >= sizeof(u->host)) return "has a host name that is too long";
        memcpy(u->host, a + 1, hlen);
        struct in6_addr tmp;
        if (inet_pton(AF_INET6, u->host, &tmp) != 1) return "has an invalid IPv6 literal";
        if (rb + 1 < a + alen) {
            if (rb[1] != ':') return "has garbage after the IPv6 literal";
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        hlen = colon ? (size_t)(colon - a) : alen;
        if (hlen == 0) return "has no host";
        if (hlen >= sizeof(u->host)) return "has a host name that is too long";
        for (size_t i = 0; i < hlen; i++) {
            char c = a[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_'))
                return "has an invalid host name";
            u->host[i] = (char)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
        }
        if (colon) port = colon + 1;
    }
    if (port) {
        size_t plen = (size_t)(a + alen - port), used;
        uint64_t p;
        if (plen == 0 || !netaddr_parse_u64(port, &used, &p) || used != plen || p == 0 || p > 65535)
            return "has an invalid port (1..65535)";
        u->port = (unsigned)p;
    }
    const char *rest = a + alen;
    if (!allow_query && strpbrk(rest, "?#")) return "must not carry a query or fragment";
    if (strchr(rest, '#')) return "must not carry a fragment";
    /* normalise: lowercase scheme and host, keep port and path as written */
    size_t n = slen;
    if (!allow_query && n > sch + alen && s[n - 1] == '/') n--;
    u->norm = malloc(n + 1);
    if (!u->norm) return "out of memory";
    memcpy(u->norm, s, n);
    u->norm[n] = '\0';
    for (size_t i = 0; i < sch + alen; i++)
        if (u->norm[i] >= 'A' && u->norm[i] <= 'Z') u->norm[i] |= 0x20;
    return NULL;
}

bool netaddr_parse_cidr(const char *s, struct cidr *out)
{
    memset(out, 0, sizeof(*out));
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(addr)) return false;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return false;
    }
    if (slash) {
        size_t used;
        uint64_t b;
        if (!netaddr_parse_u64(slash + 1, &used, &b) || slash[1 + used] != '\0' || b > out->bits)
            return false;
        out->bits = (unsigned)b;
    }
    /* host bits cleared once here: cidr_match compares without masking them */
    unsigned full = out->bits / 8, rest = out->bits % 8;
    if (full < sizeof(out->addr)) {
        out->addr[full] &= (uint8_t)(0xff << (8 - rest));
        memset(out->addr + full + 1, 0, sizeof(out->addr) - full - 1);
    }
    out->full = full;
    out->mask = rest ? (uint8_t)(0xff << (8 - rest)) : 0;
    return true;
}
