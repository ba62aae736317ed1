#include "autoconf.h"

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "counters.h"
#include "http_parse.h"
#include "redirect.h"
#include "route.h"
#include "select.h"
#include "yaml_tree.h"

#define MAX_NAME_LEN 64
#define MS_PER_HOUR  (3600u * 1000u)

struct host_ref {
    const char *host;
    const struct pool *pool;
    const struct yt_node *node;
};

struct ctx {
    struct diag *d;
    struct config *c;
    struct check_cfg checks; /* the `checks:` block over built-in defaults */
    struct host_ref *hosts;  /* every host of every pool, with its node */
    size_t nhosts, caphosts;
};

#define ERR(ctx, node, ...) diag_add((ctx)->d, (node)->line, (node)->col, __VA_ARGS__)

const char *region_state_name(enum region_state s)
{
    static const char *names[] = {"auto", "up", "down", "drain"};
    return names[s];
}

/* ---- scalar parsing helpers (pure) ---- */

static bool parse_u64(const char *s, size_t *consumed, uint64_t *out)
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

bool config_parse_duration(const char *s, uint64_t *ms)
{
    size_t n;
    uint64_t v;
    if (!parse_u64(s, &n, &v)) return false;
    const char *u = s + n;
    uint64_t mul;
    if (strcmp(u, "ms") == 0)
        mul = 1;
    else if (strcmp(u, "s") == 0)
        mul = 1000;
    else if (strcmp(u, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(u, "h") == 0)
        mul = MS_PER_HOUR;
    else
        return false;
    if (v > UINT64_MAX / mul) return false;
    *ms = v * mul;
    return true;
}

bool config_parse_size(const char *s, uint64_t *bytes)
{
    size_t n;
    uint64_t v;
    if (!parse_u64(s, &n, &v)) return false;
    const char *u = s + n;
    uint64_t mul;
    if (*u == '\0')
        mul = 1;
    else if (strcasecmp(u, "k") == 0)
        mul = 1024;
    else if (strcasecmp(u, "m") == 0)
        mul = 1024 * 1024;
    else if (strcasecmp(u, "g") == 0)
        mul = 1024 * 1024 * 1024;
    else
        return false;
    if (v > UINT64_MAX / mul) return false;
    *bytes = v * mul;
    return true;
}

bool config_parse_listen(const char *s, struct listen_addr *out)
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
    if (!parse_u64(colon + 1, &n, &port) || colon[1 + n] != '\0' || port == 0 || port > 65535)
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

/* ---- typed getters over yaml nodes ---- */

static bool want(struct ctx *x, const struct yt_node *n, enum yt_kind k, const char *what)
{
    if (n->kind == k) return true;
    ERR(x, n, "%s: expected %s, got %s", what, yt_kind_name(k), yt_kind_name(n->kind));
    return false;
}

static bool is_null(const struct yt_node *n)
{
    return n->kind == YT_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0);
}

static void check_keys(struct ctx *x, const struct yt_node *map, const char *what,
                       const char *const *allowed)
{
    for (size_t i = 0; i < map->len; i++) {
        const struct yt_node *k = map->u.pairs[i].key;
        if (k->kind != YT_SCALAR) continue; /* reported by the tree */
        bool ok = false;
        for (size_t j = 0; j < i && !ok; j++) /* a duplicate: reported by the tree */
            ok = map->u.pairs[j].key->kind == YT_SCALAR &&
                 strcmp(map->u.pairs[j].key->str, k->str) == 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(k->str, *a) == 0;
        if (ok) continue;
        char list[512] = "";
        for (const char *const *a = allowed; *a; a++) {
            if (a != allowed) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            strncat(list, *a, sizeof(list) - strlen(list) - 1);
        }
        ERR(x, k, "unknown key '%s' in %s (expected one of: %s)", k->str, what, list);
    }
}

static bool get_str(struct ctx *x, const struct yt_node *n, const char *what, char **out)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    if (memchr(n->str, '\0', n->len)) {
        ERR(x, n, "%s: NUL byte in string", what);
        return false;
    }
    char *s = strdup(n->str);
    if (!s) return false;
    free(*out);
    *out = s;
    return true;
}

static bool get_uint(struct ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    size_t used;
    uint64_t v;
    if (!n->plain || !parse_u64(n->str, &used, &v) || n->str[used] != '\0') {
        ERR(x, n, "%s: '%s' is not a whole number", what, n->str);
        return false;
    }
    if (v < min || v > max) {
        ERR(x, n, "%s: %s is out of range (%llu..%llu)", what, n->str, (unsigned long long)min,
            (unsigned long long)max);
        return false;
    }
    *out = v;
    return true;
}

static bool get_unsigned(struct ctx *x, const struct yt_node *n, const char *what, unsigned min,
                         unsigned max, unsigned *out)
{
    uint64_t v;
    if (!get_uint(x, n, what, min, max, &v)) return false;
    *out = (unsigned)v;
    return true;
}

static void fmt_ms(uint64_t ms, char *buf, size_t len)
{
    if (ms % MS_PER_HOUR == 0 && ms)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / MS_PER_HOUR));
    else if (ms % 60000 == 0 && ms)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0 && ms)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

static bool get_duration(struct ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                         uint64_t max, uint64_t *out)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    uint64_t v;
    if (!config_parse_duration(n->str, &v)) {
        ERR(x, n, "%s: '%s' is not a duration (a number with a unit: ms, s, m, h; e.g. 250ms)",
            what, n->str);
        return false;
    }
    if (v < min || v > max) {
        char a[32], b[32];
        fmt_ms(min, a, sizeof(a));
        fmt_ms(max, b, sizeof(b));
        ERR(x, n, "%s: %s is out of range (%s..%s)", what, n->str, a, b);
        return false;
    }
    *out = v;
    return true;
}

static bool get_size(struct ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                     uint64_t max, size_t *out)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    uint64_t v;
    if (!config_parse_size(n->str, &v)) {
        ERR(x, n, "%s: '%s' is not a size (bytes, or a number with k, m or g)", what, n->str);
        return false;
    }
    if (v < min || v > max) {
        ERR(x, n, "%s: %s is out of range (%llu..%llu bytes)", what, n->str,
            (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (size_t)v;
    return true;
}

static bool get_enum(struct ctx *x, const struct yt_node *n, const char *what,
                     const char *const *names, int *out)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    char list[256] = "";
    for (int i = 0; names[i]; i++) {
        if (strcmp(n->str, names[i]) == 0) {
            *out = i;
            return true;
        }
        if (i) strncat(list, " | ", sizeof(list) - strlen(list) - 1);
        strncat(list, names[i], sizeof(list) - strlen(list) - 1);
    }
    ERR(x, n, "%s: '%s' is not one of: %s", what, n->str, list);
    return false;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME_LEN) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static bool get_name(struct ctx *x, const struct yt_node *n, const char *what, char **out)
{
    if (!get_str(x, n, what, out)) return false;
    if (!valid_name(*out)) {
        ERR(x, n, "%s: '%s' must be 1..%d characters of A-Z a-z 0-9 . _ -", what, n->str,
            MAX_NAME_LEN);
        return false;
    }
    return true;
}

/* A header value or similar: no control characters (they would split the
 * response) other than tab. */
static bool text_ok(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f) return false;
    return true;
}

/* ---- URLs ---- */

struct url {
    char *norm;     /* scheme and host lowercased, one trailing '/' dropped */
    char host[256]; /* without brackets */
    unsigned port;  /* explicit or the scheme's default */
};

static bool url_char_ok(unsigned char c)
{
    return (c > 0x20 && c < 0x7f && !strchr("\"<>\\^`{|}", c));
}

/* Parses an absolute http(s) URL. Returns NULL or an error message. */
static const char *url_parse(const char *s, bool allow_query, struct url *u)
{
    memset(u, 0, sizeof(*u));
    size_t slen = strlen(s);
    size_t sch;
    if (strncasecmp(s, "http://", 7) == 0) {
        sch = 7;
        u->port = 80;
    } else if (strncasecmp(s, "https://", 8) == 0) {
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
        if (plen == 0 || !parse_u64(port, &used, &p) || used != plen || p == 0 || p > 65535)
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

/* Would a connection to host reach a wildcard listener of this family?
 * (IPv6 listeners are v6-only.) */
static bool reaches_wildcard(const char *host, bool v6)
{
    if (strcmp(host, "localhost") == 0) return true;
    if (v6) return strcmp(host, "::1") == 0 || strcmp(host, "::") == 0;
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "0.0.0.0") == 0;
}

/* True if a region url host:port is literally one of our own listeners. */
static const struct listen_addr *url_is_self(const struct config *c, const struct url *u)
{
    char canon[INET6_ADDRSTRLEN];
    const char *h = u->host;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, h, &a6) == 1) h = inet_ntop(AF_INET6, &a6, canon, sizeof(canon));
    for (size_t i = 0; i < c->nlisten; i++) {
        const struct listen_addr *l = &c->listen[i];
        if (l->port != u->port) continue;
        if (strcmp(l->host, h) == 0) return l;
        bool v6 = l->ss.ss_family == AF_INET6;
        bool any = strcmp(l->host, v6 ? "::" : "0.0.0.0") == 0;
        if (any && reaches_wildcard(h, v6)) return l;
    }
    return NULL;
}

/* A map of header names to values: names are tokens, values have no
 * control characters; refused(name) may veto a name with a reason. */
static void load_header_map(struct ctx *x, const struct yt_node *n, const char *what,
                            const char *(*refused)(const char *), struct header **out, size_t *nout)
{
    if (!want(x, n, YT_MAP, what)) return;
    *out = calloc(n->len ? n->len : 1, sizeof(**out));
    if (!*out) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *k = n->u.pairs[i].key, *v = n->u.pairs[i].value;
        if (k->kind != YT_SCALAR) continue;
        bool ok = k->len > 0;
        for (size_t j = 0; j < k->len; j++) ok = ok && http_tchar[(unsigned char)k->str[j]];
        if (!ok) {
            ERR(x, k, "%s: '%s' is not a valid header name", what, k->str);
            continue;
        }
        const char *why = refused ? refused(k->str) : NULL;
        if (why) {
            ERR(x, k, "%s: '%s' %s", what, k->str, why);
            continue;
        }
        struct header h = {0};
        if (!get_str(x, v, what, &h.value)) continue;
        if (!text_ok(h.value)) {
            ERR(x, v, "%s: value of '%s' contains a control character", what, k->str);
            free(h.value);
            continue;
        }
        h.name = strdup(k->str);
        (*out)[(*nout)++] = h;
    }
}

/* ---- health checks ---- */

static void expect_set(struct check_cfg *c, unsigned lo, unsigned hi)
{
    for (unsigned s = lo; s <= hi && s <= CHECK_STATUS_MAX; s++) c->expect[s / 8] |= 1u << (s % 8);
}

static bool check_defaults(struct check_cfg *c)
{
    memset(c, 0, sizeof(*c));
    c->type = CHECK_HTTP;
    c->method = strdup("GET");
    expect_set(c, 200, 399);
    c->tls_verify = true;
    c->interval_ms = 2000;
    c->fast_interval_ms = 250;
    c->down_interval_ms = 2000;
    c->timeout_ms = 1000;
    c->rise = 2;
    c->fall = 3;
    c->jitter_pct = 10;
    c->initial_up = true;
    return c->method != NULL;
}

static void check_free(struct check_cfg *c)
{
    free(c->url);
    free(c->host);
    free(c->path);
    free(c->method);
    free(c->expect_body);
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        free(c->headers[i].value);
    }
    free(c->headers);
    free(c->ca_file);
    memset(c, 0, sizeof(*c));
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *ok = false;
    return d;
}

static bool check_copy(struct check_cfg *dst, const struct check_cfg *src)
{
    bool ok = true;
    *dst = *src;
    dst->url = dup_or_null(src->url, &ok);
    dst->host = dup_or_null(src->host, &ok);
    dst->path = dup_or_null(src->path, &ok);
    dst->method = dup_or_null(src->method, &ok);
    dst->expect_body = dup_or_null(src->expect_body, &ok);
    dst->ca_file = dup_or_null(src->ca_file, &ok);
    dst->headers = NULL;
    dst->nheaders = 0;
    if (src->nheaders) {
        dst->headers = calloc(src->nheaders, sizeof(*dst->headers));
        if (!dst->headers) return false;
        for (size_t i = 0; i < src->nheaders; i++) {
            dst->headers[i].name = dup_or_null(src->headers[i].name, &ok);
            dst->headers[i].value = dup_or_null(src->headers[i].value, &ok);
            dst->nheaders++;
        }
    }
    return ok;
}

static bool streq_null(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool check_cfg_equal(const struct check_cfg *a, const struct check_cfg *b)
{
    if (a->type != b->type || a->tls != b->tls || a->port != b->port ||
        a->tls_verify != b->tls_verify || a->interval_ms != b->interval_ms ||
        a->fast_interval_ms != b->fast_interval_ms || a->down_interval_ms != b->down_interval_ms ||
        a->timeout_ms != b->timeout_ms || a->rise != b->rise || a->fall != b->fall ||
        a->jitter_pct != b->jitter_pct || a->initial_up != b->initial_up ||
        memcmp(a->expect, b->expect, sizeof(a->expect)) != 0 || a->nheaders != b->nheaders)
        return false;
    if (!streq_null(a->url, b->url) || !streq_null(a->host, b->host) ||
        !streq_null(a->path, b->path) || !streq_null(a->method, b->method) ||
        !streq_null(a->expect_body, b->expect_body) || !streq_null(a->ca_file, b->ca_file))
        return false;
    for (size_t i = 0; i < a->nheaders; i++)
        if (strcmp(a->headers[i].name, b->headers[i].name) != 0 ||
            strcmp(a->headers[i].value, b->headers[i].value) != 0)
            return false;
    return true;
}

static void load_expect(struct ctx *x, const struct yt_node *n, struct check_cfg *c)
{
    const struct yt_node *one[1] = {n};
    const struct yt_node *const *items = one;
    size_t cnt = 1;
    if (n->kind == YT_SEQ) {
        items = (const struct yt_node *const *)n->u.items;
        cnt = n->len;
        if (cnt == 0) {
            ERR(x, n, "expect_status: empty list");
            return;
        }
    }
    memset(c->expect, 0, sizeof(c->expect));
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *it = items[i];
        if (!want(x, it, YT_SCALAR, "expect_status")) continue;
        const char *v = it->str;
        if (strlen(v) == 3 && v[0] >= '1' && v[0] <= '5' && (v[1] | 0x20) == 'x' &&
            (v[2] | 0x20) == 'x') {
            unsigned lo = (unsigned)(v[0] - '0') * 100;
            expect_set(c, lo, lo + 99);
            continue;
        }
        size_t used;
        uint64_t code;
        if (parse_u64(v, &used, &code) && v[used] == '\0' && code >= CHECK_STATUS_MIN &&
            code <= CHECK_STATUS_MAX) {
            expect_set(c, (unsigned)code, (unsigned)code);
            continue;
        }
        ERR(x, it, "expect_status: '%s' is not a status code (100..599) or class (1xx..5xx)", v);
    }
}

static void load_check_headers(struct ctx *x, const struct yt_node *n, struct check_cfg *c)
{
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        free(c->headers[i].value);
    }
    free(c->headers);
    c->headers = NULL;
    c->nheaders = 0;
    load_header_map(x, n, "check headers", NULL, &c->headers, &c->nheaders);
}

/* Applies the keys present in n over c. in_region allows `url`. */
static void load_check(struct ctx *x, const struct yt_node *n, struct check_cfg *c, bool in_region)
{
    static const char *const region_keys[] = {
        "url",           "type",       "method",  "expect_status", "expect_body",
        "headers",       "tls_verify", "ca_file", "interval",      "fast_interval",
        "down_interval", "timeout",    "rise",    "fall",          "jitter",
        "initial",       NULL};
    const char *const *keys = in_region ? region_keys : region_keys + 1;
    static const char *const types[] = {"http", "tcp", "none", NULL};
    static const char *const initials[] = {"up", "down", NULL};
    const char *what = in_region ? "check" : "checks";
    if (!want(x, n, YT_MAP, what)) return;
    check_keys(x, n, what, keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "type")) && get_enum(x, v, "check type", types, &e))
        c->type = (enum check_type)e;
    if ((v = yt_get(n, "method")) && get_str(x, v, "check method", &c->method)) {
        bool ok = c->method[0] != '\0';
        for (const char *m = c->method; *m; m++) ok = ok && http_tchar[(unsigned char)*m];
        if (!ok) ERR(x, v, "check method: '%s' is not an HTTP method token", c->method);
    }
    if ((v = yt_get(n, "expect_status"))) load_expect(x, v, c);
    if ((v = yt_get(n, "expect_body"))) {
        if (get_str(x, v, "expect_body", &c->expect_body) && c->expect_body[0] == '\0') {
            free(c->expect_body);
            c->expect_body = NULL;
        }
    }
    if ((v = yt_get(n, "headers"))) load_check_headers(x, v, c);
    if ((v = yt_get(n, "tls_verify"))) {
        if (v->kind == YT_SCALAR && v->plain && strcmp(v->str, "true") == 0)
            c->tls_verify = true;
        else if (v->kind == YT_SCALAR && v->plain && strcmp(v->str, "false") == 0)
            c->tls_verify = false;
        else
            ERR(x, v, "tls_verify: expected true or false");
    }
    if ((v = yt_get(n, "ca_file")) && get_str(x, v, "ca_file", &c->ca_file)) {
        if (access(c->ca_file, R_OK) != 0)
            ERR(x, v, "ca_file: cannot read '%s': %s", c->ca_file, strerror(errno));
    }
    if ((v = yt_get(n, "interval")))
        get_duration(x, v, "interval", 100, MS_PER_HOUR, &c->interval_ms);
    if ((v = yt_get(n, "fast_interval")))
        get_duration(x, v, "fast_interval", 10, MS_PER_HOUR, &c->fast_interval_ms);
    if ((v = yt_get(n, "down_interval")))
        get_duration(x, v, "down_interval", 100, MS_PER_HOUR, &c->down_interval_ms);
    if ((v = yt_get(n, "timeout"))) get_duration(x, v, "timeout", 10, 60000, &c->timeout_ms);
    if ((v = yt_get(n, "rise"))) get_unsigned(x, v, "rise", 1, 100, &c->rise);
    if ((v = yt_get(n, "fall"))) get_unsigned(x, v, "fall", 1, 100, &c->fall);
    if ((v = yt_get(n, "jitter")) && want(x, v, YT_SCALAR, "jitter")) {
        size_t used;
        uint64_t pct;
        if (!parse_u64(v->str, &used, &pct) || strcmp(v->str + used, "%") != 0 || pct > 50)
            ERR(x, v, "jitter: '%s' is not a percentage from 0%% to 50%%", v->str);
        else
            c->jitter_pct = (unsigned)pct;
    }
    if ((v = yt_get(n, "initial")) && get_enum(x, v, "initial", initials, &e))
        c->initial_up = e == 0;
    if (in_region && (v = yt_get(n, "url"))) get_str(x, v, "check url", &c->url);
}

/* Resolves the check url (given or the region's) into host, port, path. */
static void finish_check(struct ctx *x, const struct yt_node *at, struct region *r)
{
    struct check_cfg *c = &r->check;
    const char *src = c->url ? c->url : r->url;
    if (!src) return;
    struct url u;
    const char *err = url_parse(src, true, &u);
    if (err) {
        ERR(x, at, "check url: '%s' %s", src, err);
        return;
    }
    free(c->url);
    c->url = u.norm;
    c->tls = strncmp(u.norm, "https:", 6) == 0;
    c->host = strdup(u.host);
    c->port = u.port;
    const char *rest = u.norm + (c->tls ? 8 : 7);
    rest += strcspn(rest, "/?");
    if (*rest == '?') {
        size_t n = strlen(rest);
        c->path = malloc(n + 2);
        if (c->path) {
            c->path[0] = '/';
            memcpy(c->path + 1, rest, n + 1);
        }
    } else {
        c->path = strdup(*rest ? rest : "/");
    }
}

/* ---- sections ---- */

static void load_listen(struct ctx *x, const struct yt_node *n)
{
    struct config *c = x->c;
    if (n->kind == YT_SCALAR && !is_null(n)) {
        /* a single address is accepted as a one-item list */
    } else if (!want(x, n, YT_SEQ, "listen")) {
        return;
    }
    size_t cnt = n->kind == YT_SEQ ? n->len : 1;
    if (cnt == 0) {
        ERR(x, n, "listen: at least one address is required");
        return;
    }
    c->listen = calloc(cnt, sizeof(*c->listen));
    if (!c->listen) return;
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *item = n->kind == YT_SEQ ? n->u.items[i] : n;
        if (!want(x, item, YT_SCALAR, "listen")) continue;
        struct listen_addr la;
        if (!config_parse_listen(item->str, &la)) {
            ERR(x, item,
                "listen: '%s' is not an address (IPv4:PORT, [IPv6]:PORT or *:PORT, port 1..65535)",
                item->str);
            continue;
        }
        la.line = item->line;
        la.col = item->col;
        bool dup = false;
        for (size_t k = 0; k < c->nlisten && !dup; k++) {
            if (strcmp(c->listen[k].text, la.text) == 0) {
                ERR(x, item, "listen: '%s' is listed twice (first at line %u)", item->str,
                    c->listen[k].line);
                dup = true;
            }
        }
        if (!dup) c->listen[c->nlisten++] = la;
    }
}

static void load_limits(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {
        "max_connections", "header_timeout",   "idle_timeout",     "max_header_bytes",
        "max_uri_bytes",   "max_body_discard", "shutdown_timeout", NULL};
    if (!want(x, n, YT_MAP, "limits")) return;
    check_keys(x, n, "limits", keys);
    struct limits *l = &x->c->limits;
    const struct yt_node *v;
    if ((v = yt_get(n, "max_connections")))
        get_unsigned(x, v, "limits.max_connections", 1, 1000000, &l->max_connections);
    if ((v = yt_get(n, "header_timeout")))
        get_duration(x, v, "limits.header_timeout", 100, MS_PER_HOUR, &l->header_timeout_ms);
    if ((v = yt_get(n, "idle_timeout")))
        get_duration(x, v, "limits.idle_timeout", 100, MS_PER_HOUR, &l->idle_timeout_ms);
    if ((v = yt_get(n, "max_header_bytes")))
        get_size(x, v, "limits.max_header_bytes", 512, 1 << 20, &l->max_header_bytes);
    if ((v = yt_get(n, "max_uri_bytes")))
        get_size(x, v, "limits.max_uri_bytes", 16, 1 << 20, &l->max_uri_bytes);
    if ((v = yt_get(n, "max_body_discard")))
        get_size(x, v, "limits.max_body_discard", 0, 1u << 30, &l->max_body_discard);
    if ((v = yt_get(n, "shutdown_timeout")))
        get_duration(x, v, "limits.shutdown_timeout", 0, MS_PER_HOUR, &l->shutdown_timeout_ms);
}

static void load_log(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"level", "format", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    if (!want(x, n, YT_MAP, "log")) return;
    check_keys(x, n, "log", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "level")) && get_enum(x, v, "log.level", levels, &e))
        x->c->log_level = (enum log_level)e;
    if ((v = yt_get(n, "format")) && get_enum(x, v, "log.format", formats, &e))
        x->c->log_json = e == 1;
}

bool config_parse_cidr(const char *s, struct cidr *out)
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
        if (!parse_u64(slash + 1, &used, &b) || slash[1 + used] != '\0' || b > out->bits)
            return false;
        out->bits = (unsigned)b;
    }
    return true;
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa->sa_family != c->family) return false;
    if (c->family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->addr, full) != 0) return false;
    if (!rest) return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (c->addr[full] & mask);
}

/* Would binding both addresses clash (same port, and the same address or
 * a wildcard of the same family)? */
static bool same_socket(const struct listen_addr *a, const struct listen_addr *b)
{
    if (a->port != b->port || a->ss.ss_family != b->ss.ss_family) return false;
    const char *any = a->ss.ss_family == AF_INET6 ? "::" : "0.0.0.0";
    return strcmp(a->host, b->host) == 0 || strcmp(a->host, any) == 0 || strcmp(b->host, any) == 0;
}

static void load_admin(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"listen", "allow", NULL};
    struct config *c = x->c;
    if (is_null(n)) return;
    if (!want(x, n, YT_MAP, "admin")) return;
    check_keys(x, n, "admin", keys);
    const struct yt_node *v = yt_get(n, "listen");
    if (!v) {
        ERR(x, n, "admin: 'listen' is required");
    } else if (want(x, v, YT_SCALAR, "admin.listen")) {
        if (!config_parse_listen(v->str, &c->admin_listen)) {
            ERR(x, v, "admin.listen: '%s' is not an address (IPv4:PORT, [IPv6]:PORT or *:PORT)",
                v->str);
        } else {
            c->admin_listen.line = v->line;
            c->admin_listen.col = v->col;
            c->admin = true;
            for (size_t i = 0; i < c->nlisten; i++)
                if (same_socket(&c->listen[i], &c->admin_listen))
                    ERR(x, v, "admin.listen: %s overlaps the redirect listener %s (line %u)",
                        c->admin_listen.text, c->listen[i].text, c->listen[i].line);
        }
    }
    static const char *const dflt[] = {"127.0.0.0/8", "::1/128"};
    v = yt_get(n, "allow");
    size_t cnt = v && v->kind == YT_SEQ ? v->len : 2;
    if (v && !want(x, v, YT_SEQ, "admin.allow")) return;
    c->admin_allow = calloc(cnt ? cnt : 1, sizeof(*c->admin_allow));
    if (!c->admin_allow) return;
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *it = v ? v->u.items[i] : NULL;
        if (it && !want(x, it, YT_SCALAR, "admin.allow")) continue;
        if (!config_parse_cidr(it ? it->str : dflt[i], &c->admin_allow[c->nadmin_allow])) {
            ERR(x, it, "admin.allow: '%s' is not an address or CIDR (e.g. 10.0.0.0/8, ::1/128)",
                it->str);
            continue;
        }
        c->nadmin_allow++;
    }
}

static void load_access_log(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"path", "format", NULL};
    static const char *const formats[] = {"combined", "json", NULL};
    if (is_null(n)) return;
    if (!want(x, n, YT_MAP, "access_log")) return;
    check_keys(x, n, "access_log", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "path")) && get_str(x, v, "access_log.path", &x->c->access_log)) {
        if (x->c->access_log[0] != '/') {
            ERR(x, v, "access_log.path: '%s' must be an absolute path", x->c->access_log);
        }
    } else if (!v) {
        ERR(x, n, "access_log: 'path' is required");
    }
    if ((v = yt_get(n, "format")) && get_enum(x, v, "access_log.format", formats, &e))
        x->c->access_log_json = e == 1;
}

/* Headers detourd writes itself: a pool may not set them. */
static const char *reserved_header(const char *name)
{
    static const char *const reserved[] = {
        "location",          "content-length", "date",         "connection",
        "transfer-encoding", "keep-alive",     "content-type", NULL};
    for (const char *const *r = reserved; *r; r++)
        if (strcasecmp(name, *r) == 0) return "is set by detourd itself and cannot be configured";
    if (strcasecmp(name, "cache-control") == 0) return "is set with the pool's cache_control key";
    return NULL;
}

static void load_headers(struct ctx *x, const struct yt_node *n, struct pool *p)
{
    if (is_null(n)) return;
    load_header_map(x, n, "headers", reserved_header, &p->headers, &p->nheaders);
}

static void load_all_down(struct ctx *x, const struct yt_node *n, struct pool *p)
{
    static const char *const keys[] = {"action", "url", "retry_after", NULL};
    static const char *const actions[] = {"fail_open", "fallback", "reject", NULL};
    if (!want(x, n, YT_MAP, "all_down")) return;
    check_keys(x, n, "all_down", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "action")) && get_enum(x, v, "all_down.action", actions, &e))
        p->all_down = (enum all_down_action)e;
    if ((v = yt_get(n, "retry_after")))
        get_unsigned(x, v, "all_down.retry_after", 0, 86400, &p->retry_after);
    const struct yt_node *u = yt_get(n, "url");
    if (u) {
        char *s = NULL;
        if (get_str(x, u, "all_down.url", &s)) {
            struct url url;
            const char *err = url_parse(s, true, &url);
            const struct listen_addr *self = err ? NULL : url_is_self(x->c, &url);
            if (err) {
                ERR(x, u, "all_down.url: '%s' %s", s, err);
            } else if (self) {
                ERR(x, u,
                    "all_down.url: '%s' points at this daemon's own listener %s (a redirect "
                    "loop)",
                    s, self->text);
                free(url.norm);
            } else {
                p->all_down_url = url.norm;
            }
        }
        free(s);
    }
    if (p->all_down == ALL_DOWN_FALLBACK && !u) ERR(x, n, "all_down: action fallback needs a url");
}

static void load_region(struct ctx *x, const struct yt_node *n, struct pool *p, struct region *r)
{
    static const char *const keys[] = {"name", "url", "priority", "weight", "state", "check", NULL};
    static const char *const states[] = {"auto", "up", "down", "drain", NULL};
    r->priority = 1;
    r->weight = 1;
    r->line = n->line;
    r->col = n->col;
    if (!check_copy(&r->check, &x->checks)) diag_add(x->d, n->line, n->col, "out of memory");
    if (!want(x, n, YT_MAP, "region")) return;
    check_keys(x, n, "region", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "name")))
        get_name(x, v, "region name", &r->name);
    else
        ERR(x, n, "region: 'name' is required");
    if ((v = yt_get(n, "priority")))
        get_unsigned(x, v, "priority", 0, CONFIG_MAX_PRIORITY, &r->priority);
    if ((v = yt_get(n, "weight"))) get_unsigned(x, v, "weight", 0, CONFIG_MAX_WEIGHT, &r->weight);
    int e;
    if ((v = yt_get(n, "state")) && get_enum(x, v, "state", states, &e))
        r->state = (enum region_state)e;
    const struct yt_node *chk = yt_get(n, "check");
    if (chk) load_check(x, chk, &r->check, true);
    if (!(v = yt_get(n, "url"))) {
        ERR(x, n, "region%s%s: 'url' is required", r->name ? " " : "", r->name ? r->name : "");
        return;
    }
    char *s = NULL;
    if (!get_str(x, v, "url", &s)) return;
    struct url u;
    const char *err = url_parse(s, false, &u);
    if (err) {
        ERR(x, v, "url: '%s' %s", s, err);
    } else {
        const struct listen_addr *self = url_is_self(x->c, &u);
        if (self) {
            ERR(x, v, "url: '%s' points at this daemon's own listener %s (a redirect loop)", s,
                self->text);
            free(u.norm);
        } else {
            r->url = u.norm;
            r->url_len = strlen(u.norm);
        }
    }
    free(s);
    if (r->url || r->check.url)
        finish_check(x, chk && yt_get(chk, "url") ? yt_get(chk, "url") : v, r);
    (void)p;
}

static bool valid_host_pattern(const char *h)
{
    const char *s = h;
    if (s[0] == '*') {
        if (s[1] != '.' || s[2] == '\0') return false;
        s += 2;
    }
    if (s[0] == '[') {
        size_t n = strlen(s);
        char tmp[64];
        struct in6_addr a;
        if (h != s || n < 3 || s[n - 1] != ']' || n - 2 >= sizeof(tmp)) return false;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        return inet_pton(AF_INET6, tmp, &a) == 1;
    }
    if (!*s || *s == '.' || s[strlen(s) - 1] == '.') return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' ||
              *s == '_'))
            return false;
    return true;
}

static void load_hosts(struct ctx *x, const struct yt_node *n, struct pool *p)
{
    if (n->kind == YT_SCALAR && !is_null(n)) {
        ERR(x, n, "hosts: expected a list, got a scalar (write [\"%s\"])", n->str);
        return;
    }
    if (!want(x, n, YT_SEQ, "hosts")) return;
    if (n->len == 0) {
        ERR(x, n, "hosts: empty list (omit 'hosts' to make this the default pool)");
        return;
    }
    p->hosts = calloc(n->len, sizeof(*p->hosts));
    if (!p->hosts) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *h = n->u.items[i];
        char *s = NULL;
        if (!get_str(x, h, "hosts", &s)) continue;
        for (char *c = s; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c |= 0x20;
        size_t len = strlen(s);
        if (len && s[len - 1] == '.' && s[0] != '[') s[--len] = '\0';
        if (!valid_host_pattern(s) || len > 253) {
            ERR(x, h, "hosts: '%s' is not a host name, [IPv6] literal or *.suffix wildcard",
                h->str);
            free(s);
            continue;
        }
        p->hosts[p->nhosts++] = s;
        if (x->nhosts == x->caphosts) {
            size_t cap = x->caphosts ? x->caphosts * 2 : 16;
            struct host_ref *r = realloc(x->hosts, cap * sizeof(*r));
            if (!r) continue;
            x->hosts = r;
            x->caphosts = cap;
        }
        x->hosts[x->nhosts++] = (struct host_ref){s, p, h};
    }
}

static void load_pool(struct ctx *x, const struct yt_node *n, struct pool *p)
{
    static const char *const keys[] = {"name",     "hosts",         "status",  "balance",
                                       "hash_key", "cache_control", "headers", "body",
                                       "all_down", "regions",       NULL};
    static const char *const balances[] = {"weighted", "latency", "hash", NULL};
    static const char *const bodies[] = {"html", "none", NULL};
    p->status = 307;
    p->retry_after = 30;
    p->line = n->line;
    p->col = n->col;
    if (!want(x, n, YT_MAP, "pool")) return;
    check_keys(x, n, "pool", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "name")))
        get_name(x, v, "pool name", &p->name);
    else
        ERR(x, n, "pool: 'name' is required");
    if ((v = yt_get(n, "hosts")) && !is_null(v))
        load_hosts(x, v, p);
    else
        p->is_default = true;
    if ((v = yt_get(n, "status"))) {
        unsigned st;
        if (get_unsigned(x, v, "status", 0, 999, &st)) {
            if (st != 302 && st != 303 && st != 307 && st != 308)
                ERR(x, v, "status: %u is not one of: 307 | 308 | 302 | 303", st);
            else
                p->status = st;
        }
    }
    int e;
    if ((v = yt_get(n, "balance")) && get_enum(x, v, "balance", balances, &e))
        p->balance = (enum balance)e;
    if ((v = yt_get(n, "hash_key")) && get_str(x, v, "hash_key", &p->hash_key)) {
        bool ok = strcmp(p->hash_key, "client_ip") == 0;
        if (!ok && strncasecmp(p->hash_key, "header:", 7) == 0 && p->hash_key[7]) {
            ok = true;
            for (const char *c = p->hash_key + 7; *c; c++) ok = ok && http_tchar[(unsigned char)*c];
        }
        if (!ok) ERR(x, v, "hash_key: '%s' is not client_ip or header:NAME", p->hash_key);
    }
    if ((v = yt_get(n, "cache_control"))) {
        if (is_null(v)) {
            p->cache_control = strdup("");
        } else if (get_str(x, v, "cache_control", &p->cache_control) &&
                   !text_ok(p->cache_control)) {
            ERR(x, v, "cache_control: contains a control character");
        }
    } else {
        p->cache_control = strdup("no-store");
    }
    if ((v = yt_get(n, "headers"))) load_headers(x, v, p);
    if ((v = yt_get(n, "body")) && get_enum(x, v, "body", bodies, &e)) p->body = (enum body_kind)e;
    if ((v = yt_get(n, "all_down"))) load_all_down(x, v, p);
    v = yt_get(n, "regions");
    if (!v) {
        ERR(x, n, "pool%s%s: 'regions' is required", p->name ? " " : "", p->name ? p->name : "");
        return;
    }
    if (!want(x, v, YT_SEQ, "regions")) return;
    if (v->len == 0) {
        ERR(x, v, "regions: a pool needs at least one region");
        return;
    }
    if (v->len > CONFIG_MAX_REGIONS) {
        ERR(x, v, "regions: %zu regions, at most %d per pool", v->len, CONFIG_MAX_REGIONS);
        return;
    }
    p->regions = calloc(v->len, sizeof(*p->regions));
    if (!p->regions) return;
    for (size_t i = 0; i < v->len; i++) {
        struct region *r = &p->regions[p->nregions++];
        load_region(x, v->u.items[i], p, r);
        for (size_t k = 0; k + 1 < p->nregions && r->name; k++) {
            if (p->regions[k].name && strcmp(p->regions[k].name, r->name) == 0) {
                const struct yt_node *nn = yt_get(v->u.items[i], "name");
                ERR(x, nn, "region name '%s' is used twice in pool %s (first at line %u)", r->name,
                    p->name ? p->name : "?", p->regions[k].line);
                break;
            }
        }
    }
}

static int host_ref_cmp(const void *a, const void *b)
{
    const struct host_ref *x = a, *y = b;
    int c = strcmp(x->host, y->host);
    if (c) return c;
    if (x->node->line != y->node->line) return x->node->line < y->node->line ? -1 : 1;
    return x->node->col < y->node->col ? -1 : x->node->col > y->node->col;
}

static void check_hosts(struct ctx *x)
{
    struct host_ref *refs = x->hosts;
    size_t n = x->nhosts;
    if (!n) return;
    qsort(refs, n, sizeof(*refs), host_ref_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(refs[i].host, refs[i - 1].host) != 0) continue;
        if (refs[i].pool == refs[i - 1].pool)
            ERR(x, refs[i].node, "hosts: '%s' is listed twice in pool %s", refs[i].host,
                refs[i].pool->name ? refs[i].pool->name : "?");
        else
            ERR(x, refs[i].node, "hosts: '%s' is already used by pool %s (line %u)", refs[i].host,
                refs[i - 1].pool->name ? refs[i - 1].pool->name : "?", refs[i - 1].node->line);
    }
}

static void load_pools(struct ctx *x, const struct yt_node *n)
{
    struct config *c = x->c;
    if (!want(x, n, YT_SEQ, "pools")) return;
    if (n->len == 0) {
        ERR(x, n, "pools: at least one pool is required");
        return;
    }
    c->pools = calloc(n->len, sizeof(*c->pools));
    if (!c->pools) return;
    for (size_t i = 0; i < n->len; i++) {
        struct pool *p = &c->pools[c->npools++];
        load_pool(x, n->u.items[i], p);
        for (size_t k = 0; k + 1 < c->npools && p->name; k++) {
            if (c->pools[k].name && strcmp(c->pools[k].name, p->name) == 0) {
                ERR(x, yt_get(n->u.items[i], "name"),
                    "pool name '%s' is used twice (first at line %u)", p->name, c->pools[k].line);
                break;
            }
        }
        if (p->is_default) {
            if (c->default_pool)
                ERR(x, n->u.items[i],
                    "pool %s: a second default pool (no 'hosts'); pool %s at line %u is "
                    "already the default",
                    p->name ? p->name : "?", c->default_pool->name ? c->default_pool->name : "?",
                    c->default_pool->line);
            else
                c->default_pool = p;
        }
    }
    check_hosts(x);
}

static void load_root(struct ctx *x, const struct yt_node *root)
{
    static const char *const keys[] = {"listen", "workers", "admin", "log", "access_log",
                                       "limits", "checks",  "pools", NULL};
    struct config *c = x->c;
    if (!root || is_null(root)) {
        diag_add(x->d, 1, 1, "the configuration is empty ('listen' and 'pools' are required)");
        return;
    }
    if (!want(x, root, YT_MAP, "configuration")) return;
    check_keys(x, root, "the top level", keys);
    const struct yt_node *v;
    /* listeners first: region urls are checked against them */
    if ((v = yt_get(root, "listen")))
        load_listen(x, v);
    else
        ERR(x, root, "'listen' is required");
    if ((v = yt_get(root, "workers"))) {
        if (v->kind == YT_SCALAR && strcmp(v->str, "auto") == 0)
            c->workers = 0;
        else
            get_unsigned(x, v, "workers", 1, 256, &c->workers);
    }
    if ((v = yt_get(root, "log"))) load_log(x, v);
    if ((v = yt_get(root, "access_log"))) load_access_log(x, v);
    if ((v = yt_get(root, "admin"))) load_admin(x, v);
    if ((v = yt_get(root, "limits"))) load_limits(x, v);
    if ((v = yt_get(root, "checks"))) load_check(x, v, &x->checks, false);
    if ((v = yt_get(root, "pools")))
        load_pools(x, v);
    else
        ERR(x, root, "'pools' is required");
}

/* The distinct header names used by `hash_key: header:NAME`, which the
 * request parser captures. */
static int capture_add(struct ctx *x, const char *name, const struct pool *p)
{
    struct config *c = x->c;
    for (size_t k = 0; k < c->ncapture; k++)
        if (strcasecmp(c->capture[k], name) == 0) return (int)k;
    if (c->ncapture == CONFIG_MAX_CAPTURE) {
        diag_add(x->d, p ? p->line : 0, p ? p->col : 0,
                 "too many different hash_key headers: at most %d request headers are kept, "
                 "%s",
                 CONFIG_MAX_CAPTURE,
                 c->access_log ? "2 of them for the access log" : "over all pools");
        return -1;
    }
    if (!c->capture) c->capture = calloc(CONFIG_MAX_CAPTURE, sizeof(char *));
    char *lc = strdup(name);
    if (!c->capture || !lc) {
        free(lc);
        return -1;
    }
    for (char *q = lc; *q; q++)
        if (*q >= 'A' && *q <= 'Z') *q |= 0x20;
    c->capture[c->ncapture] = lc;
    return (int)c->ncapture++;
}

/* The request headers the parser keeps: the access log's, then the header
 * names of `hash_key: header:NAME`. */
static void collect_capture(struct ctx *x)
{
    struct config *c = x->c;
    c->capture_ua = c->capture_referer = -1;
    if (c->access_log) {
        c->capture_ua = capture_add(x, "user-agent", NULL);
        c->capture_referer = capture_add(x, "referer", NULL);
    }
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        p->hash_header = -1;
        if (p->balance != BALANCE_HASH || !p->hash_key || strncasecmp(p->hash_key, "header:", 7))
            continue;
        p->hash_header = capture_add(x, p->hash_key + 7, p);
    }
}

static void set_defaults(struct config *c)
{
    c->workers = 1;
    c->log_level = LOG_INFO;
    c->limits = (struct limits){
        .max_connections = 10000,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_header_bytes = 8192,
        .max_uri_bytes = 8192,
        .max_body_discard = 1 << 20,
        .shutdown_timeout_ms = 10000,
    };
}

struct config *config_parse(const char *name, const char *buf, size_t len, struct diag *d)
{
    struct config *c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(name))) {
        free(c);
        diag_add(d, 0, 0, "out of memory");
        return NULL;
    }
    set_defaults(c);
    atomic_init(&c->refs, 1);
    c->loaded_at = time(NULL);
    size_t before = d->n;
    struct yt_doc doc;
    if (!yt_parse(&doc, buf, len, d)) {
        config_free(c);
        return NULL;
    }
    struct ctx x = {.d = d, .c = c};
    if (!check_defaults(&x.checks)) diag_add(d, 0, 0, "out of memory");
    load_root(&x, doc.root);
    check_free(&x.checks);
    free(x.hosts);
    yt_free(&doc);
    collect_capture(&x);
    counters_layout(c);
    if (d->n == before && !(redirect_prepare(c, d) && route_build(c) && select_init(c)) &&
        d->n == before)
        diag_add(d, 0, 0, "out of memory");
    if (d->n != before) {
        config_free(c);
        return NULL;
    }
    return c;
}

struct config *config_load(const char *path, struct diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        diag_add(d, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = malloc(CONFIG_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        diag_add(d, 0, 0, "out of memory");
        return NULL;
    }
    size_t len = fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    bool err = ferror(f);
    fclose(f);
    struct config *c = NULL;
    if (err)
        diag_add(d, 0, 0, "cannot read: %s", strerror(errno));
    else if (len > CONFIG_MAX_FILE_BYTES)
        diag_add(d, 0, 0, "file is larger than %u bytes", CONFIG_MAX_FILE_BYTES);
    else
        c = config_parse(path, buf, len, d);
    free(buf);
    return c;
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void config_unref(struct config *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) config_free(c);
}

void config_free(struct config *c)
{
    if (!c) return;
    select_release(c);
    redirect_release(c);
    route_free(c->routes);
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        free(p->name);
        for (size_t k = 0; k < p->nhosts; k++) free(p->hosts[k]);
        free(p->hosts);
        free(p->hash_key);
        free(p->cache_control);
        for (size_t k = 0; k < p->nheaders; k++) {
            free(p->headers[k].name);
            free(p->headers[k].value);
        }
        free(p->headers);
        free(p->all_down_url);
        for (size_t k = 0; k < p->nregions; k++) {
            free(p->regions[k].name);
            free(p->regions[k].url);
            check_free(&p->regions[k].check);
        }
        free(p->regions);
    }
    free(c->pools);
    for (size_t i = 0; i < c->ncapture; i++) free(c->capture[i]);
    free(c->capture);
    free(c->access_log);
    free(c->admin_allow);
    free((void *)c->counts);
    free(c->listen);
    free(c->path);
    free(c);
}
