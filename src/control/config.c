#include "autoconf.h"

#include "control/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <glob.h>
#include <openssl/ssl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/hash.h"
#include "serve/counters.h"
#include "serve/http_parse.h"
#include "lib/netaddr.h"
#include "serve/redirect.h"
#include "serve/route.h"
#include "control/schedule.h"
#include "serve/select.h"
#include "serve/tls.h"
#include "lib/yaml_tree.h"
#include "lib/lit.h"
#include "lib/clock.h"

#define MAX_NAME_LEN 64
#define MS_PER_HOUR  (3600u * 1000u)

struct host_ref {
    const char *host;
    const struct pool *pool;
    const struct yt_node *node;
    const char *file; /* the node's file (ctx.cur then) */
    size_t fileno;    /* 0: the main file, then each included one in order */
};

/* A file named by `include:`, parsed. */
struct inc_file {
    char *name;
    struct yt_doc doc; /* root NULL: empty, or not parsed (errors reported) */
};

/* Names seen so far, with the line of each: duplicate checks stay linear
 * for configs of many thousand pools or listeners. */
struct seen {
    struct seen_slot {
        const char *name; /* NULL: empty */
        unsigned line;
        const char *file;
    } * slot;
    size_t mask, n;
};

struct ctx {
    struct diag *d;
    struct config *c;
    struct host_ref *hosts; /* every host of every pool, with its node */
    size_t nhosts, caphosts;
    struct sched_window *windows; /* `maintenance:`, moved into c->sched */
    size_t nwindows;
    struct inc_file *inc; /* `include:` */
    size_t ninc;
    const char *cur;          /* the file walked now: c->path or an included one */
    size_t curno;             /* its number (host_ref.fileno) */
    const char **pool_file;   /* the file of each pool */
    struct seen pool_names;   /* over all files */
    struct seen window_names; /* over all files */
};

static struct seen_slot *seen_find(struct seen_slot *tab, size_t mask, const char *name)
{
    size_t i = (size_t)fnv1a64_str(FNV64_OFFSET, name) & mask;
    while (tab[i].name && strcmp(tab[i].name, name) != 0) i = (i + 1) & mask;
    return &tab[i];
}

/* Where name was first seen, or NULL after recording it (name and file
 * must outlive s). Out of memory, nothing is found. */
static const struct seen_slot *seen_put(struct seen *s, const char *name, unsigned line,
                                        const char *file)
{
    if (2 * (s->n + 1) > s->mask) {
        size_t size = s->mask ? 2 * (s->mask + 1) : 64;
        struct seen_slot *t = calloc(size, sizeof(*t));
        if (!t) return NULL;
        for (size_t i = 0; s->slot && i <= s->mask; i++)
            if (s->slot[i].name) *seen_find(t, size - 1, s->slot[i].name) = s->slot[i];
        free(s->slot);
        s->slot = t;
        s->mask = size - 1;
    }
    struct seen_slot *e = seen_find(s->slot, s->mask, name);
    if (e->name) return e;
    *e = (struct seen_slot){name, line, file};
    s->n++;
    return NULL;
}

/* The line where name was first seen, or 0 after recording it. */
static unsigned seen_add(struct seen *s, const char *name, unsigned line)
{
    const struct seen_slot *e = seen_put(s, name, line, NULL);
    return e ? e->line : 0;
}

#define ERR(ctx, node, ...) diag_add((ctx)->d, (node)->line, (node)->col, __VA_ARGS__)

/* Errors from now on are in file number no (0: the main file). */
static void set_file(struct ctx *x, const char *file, size_t no)
{
    x->cur = file;
    x->curno = no;
    diag_set_file(x->d, no ? file : NULL);
}

/* "line N" of file, for a message about the file walked now: "line N of
 * FILE" when file is another one. */
static const char *line_of(const struct ctx *x, const char *file, unsigned line, char *buf,
                           size_t len)
{
    if (!file || !x->cur || strcmp(file, x->cur) == 0)
        snprintf(buf, len, "line %u", line);
    else
        snprintf(buf, len, "line %u of %s", line, file);
    return buf;
}

const char *region_state_name(enum region_state s)
{
    static const char *names[] = {"auto", "up", "down", "drain"};
    return names[s];
}

/* ---- scalar parsing helpers (pure) ---- */

bool config_parse_duration(const char *s, uint64_t *ms)
{
    size_t n;
    uint64_t v;
    if (!netaddr_parse_u64(s, &n, &v)) return false;
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
    if (!netaddr_parse_u64(s, &n, &v)) return false;
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

/* ---- typed getters over yaml nodes ---- */

static bool want(struct ctx *x, const struct yt_node *n, enum yt_kind k, const char *what)
{
    if (n->kind == k) return true;
    ERR(x, n, "%s: expected %s, got %s", what, yt_kind_name(k), yt_kind_name(n->kind));
    return false;
}

/* A scalar without NUL bytes (a "\0" escape in a quoted string): values
 * are compared and parsed as C strings, which would cut them short. */
static bool scalar(struct ctx *x, const struct yt_node *n, const char *what)
{
    if (!want(x, n, YT_SCALAR, what)) return false;
    if (memchr(n->str, '\0', n->len)) {
        ERR(x, n, "%s: NUL byte in string", what);
        return false;
    }
    return true;
}

static bool is_null(const struct yt_node *n)
{
    return n->kind == YT_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0);
}

/* A scalar's text for a message: bytes that would not print (a NUL from a
 * "\0" escape, controls) are shown as \xNN, and a long one is cut. */
static const char *shown(const struct yt_node *n, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n->len && o + 5 < size; i++) {
        unsigned char c = (unsigned char)n->str[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (o + 5 >= size && size > 4) memcpy(buf + size - 4, LIT("...")), o = size - 1;
    buf[o] = '\0';
    return buf;
}

/* The key is exactly lit: compared with its length, so that a key with a
 * NUL in it ("limit\0") is never taken for a shorter one. */
static bool key_is(const struct yt_node *k, const char *lit)
{
    size_t n = strlen(lit);
    return k->kind == YT_SCALAR && k->len == n && memcmp(k->str, lit, n) == 0;
}

static void check_keys(struct ctx *x, const struct yt_node *map, const char *what,
                       const char *const *allowed)
{
    for (size_t i = 0; i < map->len; i++) {
        const struct yt_node *k = map->u.pairs[i].key;
        if (k->kind != YT_SCALAR || k->dup) continue; /* reported by the tree */
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = key_is(k, *a);
        if (ok) continue;
        char list[512] = "", name[96];
        for (const char *const *a = allowed; *a; a++) {
            if (a != allowed) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            strncat(list, *a, sizeof(list) - strlen(list) - 1);
        }
        ERR(x, k, "unknown key '%s' in %s (expected one of: %s)", shown(k, name, sizeof(name)),
            what, list);
    }
}

static bool get_str(struct ctx *x, const struct yt_node *n, const char *what, char **out)
{
    if (!scalar(x, n, what)) return false;
    char *s = strdup(n->str);
    if (!s) return false;
    free(*out);
    *out = s;
    return true;
}

static bool get_uint(struct ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    if (!scalar(x, n, what)) return false;
    size_t used;
    uint64_t v;
    if (!n->plain || !netaddr_parse_u64(n->str, &used, &v) || n->str[used] != '\0') {
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
    if (!scalar(x, n, what)) return false;
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
    if (!scalar(x, n, what)) return false;
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
    if (!scalar(x, n, what)) return false;
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

static bool get_bool(struct ctx *x, const struct yt_node *n, const char *what, bool *out)
{
    if (n->kind == YT_SCALAR && n->plain && (key_is(n, "true") || key_is(n, "false"))) {
        *out = key_is(n, "true");
        return true;
    }
    ERR(x, n, "%s: expected true or false", what);
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

/* An RFC 3339 instant (schedule.h). */
static bool get_time(struct ctx *x, const struct yt_node *n, const char *what, int64_t *ms)
{
    if (!scalar(x, n, what)) return false;
    char buf[96];
    if (!sched_parse_time(n->str, ms)) {
        ERR(x, n, "%s: '%s' is not an RFC 3339 time (like 2026-11-28T04:00:00Z)", what,
            shown(n, buf, sizeof(buf)));
        return false;
    }
    return true;
}

static bool text_ok(const char *s);

/* An operator's free text: logged and shown on the status page. */
static void get_reason(struct ctx *x, const struct yt_node *n, char **out)
{
    if (!get_str(x, n, "reason", out)) return;
    if (!text_ok(*out)) {
        ERR(x, n, "reason: control characters are not allowed");
        free(*out);
        *out = NULL;
    }
}

/* A header value or similar: no control characters (they would split the
 * response) other than tab. */
static bool text_ok(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f) return false;
    return true;
}

/* Would a connection to host reach a wildcard listener of this family?
 * (IPv6 listeners are v6-only.) */
static bool reaches_wildcard(const char *host, bool v6)
{
    if (strcmp(host, "localhost") == 0) return true;
    if (v6) return strcmp(host, "::1") == 0 || strcmp(host, "::") == 0;
    return strncmp(host, LIT("127.")) == 0 || strcmp(host, "0.0.0.0") == 0;
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

static void free_headers(struct header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void check_free(struct check_cfg *c)
{
    unsigned b = c->borrowed;
    if (!(b & CHECK_BORROW_URL)) free(c->url);
    if (!(b & CHECK_BORROW_HOST)) free(c->host);
    if (!(b & CHECK_BORROW_PATH)) free(c->path);
    if (!(b & CHECK_BORROW_METHOD)) free(c->method);
    if (!(b & CHECK_BORROW_BODY)) free(c->expect_body);
    if (!(b & CHECK_BORROW_CA)) free(c->ca_file);
    if (!(b & CHECK_BORROW_HEADERS)) free_headers(c->headers, c->nheaders);
    memset(c, 0, sizeof(*c));
}

/* A region's check starts as the `checks:` block: its strings and headers
 * are borrowed, not copied (a region costs the same however many default
 * headers there are), until the region sets its own (own()). */
static void check_borrow(struct check_cfg *dst, const struct check_cfg *src)
{
    *dst = *src;
    dst->borrowed = CHECK_BORROW_ALL;
}

/* Makes the string at *field the check's own to replace: a borrowed one is
 * dropped, not freed. */
static void own(struct check_cfg *c, unsigned bit, char **field)
{
    if (!(c->borrowed & bit)) return;
    *field = NULL;
    c->borrowed &= ~bit;
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
    for (size_t i = 0; i < a->nheaders && a->headers != b->headers; i++)
        if (strcmp(a->headers[i].name, b->headers[i].name) != 0 ||
            strcmp(a->headers[i].value, b->headers[i].value) != 0)
            return false;
    return true;
}

/* Folds a string (or its absence) into h: a length first, so that no two
 * different field sequences give the same input. */
static uint64_t hash_str(uint64_t h, const char *s)
{
    uint64_t n = s ? strlen(s) : UINT64_MAX;
    for (int i = 0; i < 8; i++) h = fnv1a64_mix(h, (n >> (8 * i)) & 0xff);
    return s ? fnv1a64_str(h, s) : h;
}

static uint64_t hash_u64(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++) h = fnv1a64_mix(h, (v >> (8 * i)) & 0xff);
    return h;
}

/* The same fields as check_cfg_equal, each in a fixed byte order and
 * width: stable across runs, builds and hosts (the state file keeps it). */
uint64_t check_cfg_hash(const struct check_cfg *c)
{
    uint64_t h = FNV64_OFFSET;
    const uint64_t nums[] = {
        (uint64_t)c->type,
        c->tls,
        c->port,
        c->tls_verify,
        c->interval_ms,
        c->fast_interval_ms,
        c->down_interval_ms,
        c->timeout_ms,
        c->rise,
        c->fall,
        c->jitter_pct,
        c->initial_up,
        c->nheaders,
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) h = hash_u64(h, nums[i]);
    h = fnv1a64_add(h, c->expect, sizeof(c->expect));
    const char *strs[] = {c->url, c->host, c->path, c->method, c->expect_body, c->ca_file};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) h = hash_str(h, strs[i]);
    for (size_t i = 0; i < c->nheaders; i++) {
        h = hash_str(h, c->headers[i].name);
        h = hash_str(h, c->headers[i].value);
    }
    return h;
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
        if (!scalar(x, it, "expect_status")) continue;
        const char *v = it->str;
        if (strlen(v) == 3 && v[0] >= '1' && v[0] <= '5' && (v[1] | 0x20) == 'x' &&
            (v[2] | 0x20) == 'x') {
            unsigned lo = (unsigned)(v[0] - '0') * 100;
            expect_set(c, lo, lo + 99);
            continue;
        }
        size_t used;
        uint64_t code;
        if (netaddr_parse_u64(v, &used, &code) && v[used] == '\0' && code >= CHECK_STATUS_MIN &&
            code <= CHECK_STATUS_MAX) {
            expect_set(c, (unsigned)code, (unsigned)code);
            continue;
        }
        ERR(x, it, "expect_status: '%s' is not a status code (100..599) or class (1xx..5xx)", v);
    }
}

static void load_check_headers(struct ctx *x, const struct yt_node *n, struct check_cfg *c)
{
    if (c->borrowed & CHECK_BORROW_HEADERS)
        c->borrowed &= ~(unsigned)CHECK_BORROW_HEADERS;
    else
        free_headers(c->headers, c->nheaders);
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
    if ((v = yt_get(n, "method"))) own(c, CHECK_BORROW_METHOD, &c->method);
    if (v && get_str(x, v, "check method", &c->method)) {
        bool ok = c->method[0] != '\0';
        for (const char *m = c->method; *m; m++) ok = ok && http_tchar[(unsigned char)*m];
        if (!ok) ERR(x, v, "check method: '%s' is not an HTTP method token", c->method);
    }
    if ((v = yt_get(n, "expect_status"))) load_expect(x, v, c);
    if ((v = yt_get(n, "expect_body"))) {
        own(c, CHECK_BORROW_BODY, &c->expect_body);
        if (get_str(x, v, "expect_body", &c->expect_body) && c->expect_body[0] == '\0') {
            free(c->expect_body);
            c->expect_body = NULL;
        }
    }
    if ((v = yt_get(n, "headers"))) load_check_headers(x, v, c);
    if ((v = yt_get(n, "tls_verify"))) get_bool(x, v, "tls_verify", &c->tls_verify);
    if ((v = yt_get(n, "ca_file"))) own(c, CHECK_BORROW_CA, &c->ca_file);
    if (v && get_str(x, v, "ca_file", &c->ca_file)) {
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
    if ((v = yt_get(n, "jitter")) && scalar(x, v, "jitter")) {
        size_t used;
        uint64_t pct;
        if (!netaddr_parse_u64(v->str, &used, &pct) || strcmp(v->str + used, "%") != 0 || pct > 50)
            ERR(x, v, "jitter: '%s' is not a percentage from 0%% to 50%%", v->str);
        else
            c->jitter_pct = (unsigned)pct;
    }
    if ((v = yt_get(n, "initial")) && get_enum(x, v, "initial", initials, &e))
        c->initial_up = e == 0;
    if (in_region && (v = yt_get(n, "url"))) {
        own(c, CHECK_BORROW_URL, &c->url);
        get_str(x, v, "check url", &c->url);
    }
}

/* Resolves the check url (given or the region's) into host, port, path. */
static void finish_check(struct ctx *x, const struct yt_node *at, struct region *r)
{
    struct check_cfg *c = &r->check;
    const char *src = c->url ? c->url : r->url;
    if (!src) return;
    struct url u;
    const char *err = netaddr_parse_url(src, true, &u);
    if (err) {
        ERR(x, at, "check url: '%s' %s", src, err);
        return;
    }
    own(c, CHECK_BORROW_URL, &c->url);
    own(c, CHECK_BORROW_HOST, &c->host);
    own(c, CHECK_BORROW_PATH, &c->path);
    free(c->url);
    free(c->host);
    free(c->path);
    c->url = u.norm;
    c->tls = strncmp(u.norm, LIT("https:")) == 0;
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

static struct tls_pos pos_of(const struct yt_node *n)
{
    struct tls_pos p = {n->line, n->col};
    return p;
}

static void load_tls_certs(struct ctx *x, const struct yt_node *n, struct tls_conf *tc)
{
    static const char *const keys[] = {"cert", "key", NULL};
    if (!want(x, n, YT_SEQ, "tls.certificates")) return;
    if (n->len == 0) {
        ERR(x, n, "tls.certificates: at least one certificate is required");
        return;
    }
    tc->certs = calloc(n->len, sizeof(*tc->certs));
    if (!tc->certs) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *item = n->u.items[i], *v;
        if (!want(x, item, YT_MAP, "tls.certificates[]")) continue;
        check_keys(x, item, "a certificate", keys);
        struct tls_cert_conf *cc = &tc->certs[tc->ncerts];
        cc->index = i;
        if ((v = yt_get(item, "cert")) && get_str(x, v, "tls.certificates[].cert", &cc->cert))
            cc->cert_pos = pos_of(v);
        else if (!v)
            ERR(x, item, "tls.certificates[]: 'cert' is required");
        if ((v = yt_get(item, "key")) && get_str(x, v, "tls.certificates[].key", &cc->key))
            cc->key_pos = pos_of(v);
        else if (!v)
            ERR(x, item, "tls.certificates[]: 'key' is required");
        tc->ncerts++;
    }
}

static void load_tls_protocols(struct ctx *x, const struct yt_node *n, struct tls_conf *tc)
{
    if (!want(x, n, YT_SEQ, "tls.protocols")) return;
    if (n->len == 0) {
        ERR(x, n, "tls.protocols: at least one protocol is required (TLSv1.2, TLSv1.3)");
        return;
    }
    int lo = 0, hi = 0;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        if (!scalar(x, v, "tls.protocols")) continue;
        int ver = key_is(v, "TLSv1.2") ? TLS1_2_VERSION : key_is(v, "TLSv1.3") ? TLS1_3_VERSION : 0;
        if (!ver) {
            char name[64];
            ERR(x, v, "tls.protocols: '%s' is not accepted (TLSv1.2, TLSv1.3)",
                shown(v, name, sizeof(name)));
            continue;
        }
        if (!lo || ver < lo) lo = ver;
        if (ver > hi) hi = ver;
    }
    if (lo) {
        tc->min_version = lo;
        tc->max_version = hi;
    }
}

/* A listener's `tls:` block: parsed here, loaded (files, OpenSSL) by tls.c
 * with the positions kept for its messages. */
static struct tls_srv *load_tls(struct ctx *x, const struct yt_node *n, const char *listener)
{
    static const char *const keys[] = {
        "certificates",    "protocols",   "ciphers",     "ciphersuites",
        "session_tickets", "ticket_keys", "unknown_sni", NULL};
    static const char *const sni[] = {"default", "reject", NULL};
    if (!want(x, n, YT_MAP, "tls")) return NULL;
    check_keys(x, n, "tls", keys);
    struct tls_conf *tc = calloc(1, sizeof(*tc));
    if (!tc) return NULL;
    tc->listener = listener;
    tc->tickets = true;
    tc->min_version = TLS1_2_VERSION;
    tc->max_version = TLS1_3_VERSION;
    size_t before = x->d->n + x->d->dropped;
    const struct yt_node *v;
    if ((v = yt_get(n, "certificates")))
        load_tls_certs(x, v, tc);
    else
        ERR(x, n, "tls: 'certificates' is required");
    if ((v = yt_get(n, "protocols"))) load_tls_protocols(x, v, tc);
    if ((v = yt_get(n, "ciphers")) && get_str(x, v, "tls.ciphers", &tc->ciphers))
        tc->ciphers_pos = pos_of(v);
    if ((v = yt_get(n, "ciphersuites")) && get_str(x, v, "tls.ciphersuites", &tc->ciphersuites))
        tc->ciphersuites_pos = pos_of(v);
    if ((v = yt_get(n, "session_tickets"))) get_bool(x, v, "tls.session_tickets", &tc->tickets);
    if ((v = yt_get(n, "ticket_keys")) && get_str(x, v, "tls.ticket_keys", &tc->ticket_keys))
        tc->ticket_keys_pos = pos_of(v);
    int e;
    if ((v = yt_get(n, "unknown_sni")) && get_enum(x, v, "tls.unknown_sni", sni, &e))
        tc->reject_unknown = e == 1;
    /* the files are checked too when something above is wrong: every
     * problem in one pass */
    struct tls_srv *t = tc->ncerts ? tls_srv_build(tc, x->d) : NULL;
    if (t && x->d->n + x->d->dropped != before) {
        tls_srv_unref(t);
        t = NULL;
    }
    tls_conf_free(tc);
    return t;
}

static void load_listen(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"address", "tls", NULL};
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
    c->listen_tls = calloc(cnt, sizeof(*c->listen_tls));
    if (!c->listen || !c->listen_tls) return;
    struct seen seen = {0};
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *item = n->kind == YT_SEQ ? n->u.items[i] : n, *tls = NULL;
        if (item->kind == YT_MAP) {
            /* {address: ..., tls: {...}} */
            check_keys(x, item, "a listener", keys);
            tls = yt_get(item, "tls");
            const struct yt_node *a = yt_get(item, "address");
            if (!a) {
                ERR(x, item, "listen: 'address' is required");
                tls_srv_unref(tls ? load_tls(x, tls, "?") : NULL); /* its errors too */
                continue;
            }
            item = a;
        }
        struct listen_addr la;
        const char *bad = NULL;
        unsigned first = 0;
        if (!scalar(x, item, "listen")) {
            bad = "?";
        } else if (!netaddr_parse_listen(item->str, &la)) {
            ERR(x, item,
                "listen: '%s' is not an address (IPv4:PORT, [IPv6]:PORT or *:PORT, port 1..65535)",
                item->str);
            bad = item->str;
        } else {
            la.line = item->line;
            la.col = item->col;
            c->listen[c->nlisten] = la;
            first = seen_add(&seen, c->listen[c->nlisten].text, la.line);
            if (first) {
                ERR(x, item, "listen: '%s' is listed twice (first at line %u)", item->str, first);
                bad = item->str;
            }
        }
        if (bad) {
            /* not a listener, but its tls: block is checked all the same */
            if (tls) tls_srv_unref(load_tls(x, tls, bad));
            continue;
        }
        if (tls) c->listen_tls[c->nlisten] = load_tls(x, tls, c->listen[c->nlisten].text);
        c->nlisten++;
    }
    free(seen.slot);
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
    } else if (scalar(x, v, "admin.listen")) {
        if (!netaddr_parse_listen(v->str, &c->admin_listen)) {
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
        if (it && !scalar(x, it, "admin.allow")) continue;
        if (!netaddr_parse_cidr(it ? it->str : dflt[i], &c->admin_allow[c->nadmin_allow])) {
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
            const char *err = netaddr_parse_url(s, true, &url);
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
    static const char *const keys[] = {"name",  "url",    "priority", "weight", "state",
                                       "until", "reason", "check",    NULL};
    static const char *const states[] = {"auto", "up", "down", "drain", NULL};
    r->priority = 1;
    r->weight = 1;
    r->line = n->line;
    r->col = n->col;
    check_borrow(&r->check, &x->c->checks);
    if (!want(x, n, YT_MAP, "region")) return;
    check_keys(x, n, "region", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "name"))) {
        /* the metrics label a pool's fallback and reject answers with these */
        if (get_name(x, v, "region name", &r->name) &&
            (strcmp(r->name, "fallback") == 0 || strcmp(r->name, "reject") == 0))
            ERR(x, v, "region name '%s' is reserved: it labels the pool's %s answers in metrics",
                r->name, r->name);
    } else {
        ERR(x, n, "region: 'name' is required");
    }
    if ((v = yt_get(n, "priority")))
        get_unsigned(x, v, "priority", 0, CONFIG_MAX_PRIORITY, &r->priority);
    if ((v = yt_get(n, "weight"))) get_unsigned(x, v, "weight", 0, CONFIG_MAX_WEIGHT, &r->weight);
    int e;
    if ((v = yt_get(n, "state")) && get_enum(x, v, "state", states, &e))
        r->state = (enum region_state)e;
    if ((v = yt_get(n, "until"))) {
        r->has_until = get_time(x, v, "until", &r->until_ms);
        if (r->has_until && r->state == REGION_AUTO)
            ERR(x, v, "until: needs a state other than auto (until ends that override)");
    }
    if ((v = yt_get(n, "reason"))) get_reason(x, v, &r->reason);
    const struct yt_node *chk = yt_get(n, "check");
    if (chk) load_check(x, chk, &r->check, true);
    if (!(v = yt_get(n, "url"))) {
        ERR(x, n, "region%s%s: 'url' is required", r->name ? " " : "", r->name ? r->name : "");
        return;
    }
    char *s = NULL;
    if (!get_str(x, v, "url", &s)) return;
    struct url u;
    const char *err = netaddr_parse_url(s, false, &u);
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
        x->hosts[x->nhosts++] = (struct host_ref){s, p, h, x->cur, x->curno};
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
        if (!ok && strncasecmp(p->hash_key, LIT("header:")) == 0 && p->hash_key[7]) {
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
    if (x->fileno != y->fileno) return x->fileno < y->fileno ? -1 : 1;
    if (x->node->line != y->node->line) return x->node->line < y->node->line ? -1 : 1;
    return x->node->col < y->node->col ? -1 : x->node->col > y->node->col;
}

static void check_hosts(struct ctx *x)
{
    struct host_ref *refs = x->hosts;
    size_t n = x->nhosts;
    if (!n) return;
    qsort(refs, n, sizeof(*refs), host_ref_cmp);
    char at[PATH_MAX + 32];
    for (size_t i = 1; i < n; i++) {
        if (strcmp(refs[i].host, refs[i - 1].host) != 0) continue;
        set_file(x, refs[i].file, refs[i].fileno);
        if (refs[i].pool == refs[i - 1].pool)
            ERR(x, refs[i].node, "hosts: '%s' is listed twice in pool %s", refs[i].host,
                refs[i].pool->name ? refs[i].pool->name : "?");
        else
            ERR(x, refs[i].node, "hosts: '%s' is already used by pool %s (%s)", refs[i].host,
                refs[i - 1].pool->name ? refs[i - 1].pool->name : "?",
                line_of(x, refs[i - 1].file, refs[i - 1].node->line, at, sizeof(at)));
    }
    set_file(x, x->c->path, 0);
}

/* The pools of one file (the current one), appended to c->pools, which
 * has room for those of every file. */
static void load_pools(struct ctx *x, const struct yt_node *n)
{
    struct config *c = x->c;
    if (!c->pools) return;
    char at[PATH_MAX + 32];
    for (size_t i = 0; i < n->len; i++) {
        x->pool_file[c->npools] = x->cur;
        struct pool *p = &c->pools[c->npools++];
        load_pool(x, n->u.items[i], p);
        const struct seen_slot *first =
            p->name ? seen_put(&x->pool_names, p->name, p->line, x->cur) : NULL;
        if (first)
            ERR(x, yt_get(n->u.items[i], "name"), "pool name '%s' is used twice (first at %s)",
                p->name, line_of(x, first->file, first->line, at, sizeof(at)));
        if (p->is_default) {
            if (c->default_pool)
                ERR(x, n->u.items[i],
                    "pool %s: a second default pool (no 'hosts'); pool %s at %s is "
                    "already the default",
                    p->name ? p->name : "?", c->default_pool->name ? c->default_pool->name : "?",
                    line_of(x, x->pool_file[c->default_pool - c->pools], c->default_pool->line, at,
                            sizeof(at)));
            else
                c->default_pool = p;
        }
    }
}

/* "POOL/REGION" of a maintenance window, resolved against the pools. */
static bool find_target(struct ctx *x, const struct yt_node *n, struct sched_target *t)
{
    if (!scalar(x, n, "maintenance regions")) return false;
    const char *slash = strchr(n->str, '/');
    char buf[96];
    if (!slash || slash == n->str || !slash[1] || strchr(slash + 1, '/')) {
        ERR(x, n, "regions: '%s' is not POOL/REGION", shown(n, buf, sizeof(buf)));
        return false;
    }
    size_t plen = (size_t)(slash - n->str);
    const struct config *c = x->c;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        if (!p->name || strlen(p->name) != plen || memcmp(p->name, n->str, plen) != 0) continue;
        for (size_t k = 0; k < p->nregions; k++)
            if (p->regions[k].name && strcmp(p->regions[k].name, slash + 1) == 0) {
                *t = (struct sched_target){i, k};
                return true;
            }
        ERR(x, n, "regions: pool %s has no region '%s'", p->name, slash + 1);
        return false;
    }
    ERR(x, n, "regions: no pool '%.*s'", (int)plen, n->str);
    return false;
}

static void load_window(struct ctx *x, const struct yt_node *n, struct sched_window *w)
{
    static const char *const keys[] = {"name", "from", "until", "state", "regions", "reason", NULL};
    static const char *const states[] = {"drain", "down", NULL};
    w->state = REGION_DRAIN;
    if (!want(x, n, YT_MAP, "maintenance window")) return;
    check_keys(x, n, "a maintenance window", keys);
    const struct yt_node *v, *from = yt_get(n, "from"), *until = yt_get(n, "until");
    char *name = NULL, *reason = NULL;
    if ((v = yt_get(n, "name")))
        get_name(x, v, "maintenance name", &name);
    else
        ERR(x, n, "maintenance: 'name' is required");
    w->name = name;
    bool times = true;
    if (!from) ERR(x, n, "maintenance%s%s: 'from' is required", name ? " " : "", name ? name : "");
    if (!until)
        ERR(x, n, "maintenance%s%s: 'until' is required", name ? " " : "", name ? name : "");
    times = from && until;
    if (from && !get_time(x, from, "from", &w->from_ms)) times = false;
    if (until && !get_time(x, until, "until", &w->until_ms)) times = false;
    if (times && w->until_ms <= w->from_ms)
        ERR(x, until, "until: must be after from (%s)", from->str);
    int e;
    if ((v = yt_get(n, "state")) && get_enum(x, v, "maintenance state", states, &e))
        w->state = e == 0 ? REGION_DRAIN : REGION_DOWN;
    if ((v = yt_get(n, "reason"))) get_reason(x, v, &reason);
    w->reason = reason;
    if (!(v = yt_get(n, "regions"))) {
        ERR(x, n, "maintenance%s%s: 'regions' is required", name ? " " : "", name ? name : "");
        return;
    }
    if (!want(x, v, YT_SEQ, "maintenance regions")) return;
    if (v->len == 0) {
        ERR(x, v, "regions: at least one POOL/REGION is required");
        return;
    }
    struct sched_target *t = calloc(v->len, sizeof(*t));
    if (!t) return;
    w->targets = t;
    for (size_t i = 0; i < v->len; i++)
        if (find_target(x, v->u.items[i], &t[w->ntargets])) w->ntargets++;
}

/* The windows of one file (the current one), appended to x->windows,
 * which has room for those of every file. */
static void load_maintenance(struct ctx *x, const struct yt_node *n)
{
    if (!x->windows) return;
    char at[PATH_MAX + 32];
    for (size_t i = 0; i < n->len; i++) {
        struct sched_window *w = &x->windows[x->nwindows++];
        load_window(x, n->u.items[i], w);
        const struct seen_slot *first =
            w->name ? seen_put(&x->window_names, w->name, n->u.items[i]->line, x->cur) : NULL;
        if (first)
            ERR(x, yt_get(n->u.items[i], "name"),
                "maintenance name '%s' is used twice (first at %s)", w->name,
                line_of(x, first->file, first->line, at, sizeof(at)));
    }
}

/* Reads path whole into a new buffer; NULL with *what (and errno) set. */
static char *read_whole(const char *path, size_t *len, const char **what)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *what = "cannot open";
        return NULL;
    }
    char *buf = malloc(CONFIG_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        *what = "out of memory";
        return NULL;
    }
    *len = fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || *len > CONFIG_MAX_FILE_BYTES) {
        free(buf);
        *what = err ? "cannot read" : "too large";
        errno = err;
        return NULL;
    }
    return buf;
}

/* The pattern as glob(3) takes it: a relative one is relative to the
 * main file's directory, whose name is escaped (it may hold '*', '?'...). */
static char *include_pattern(const char *main, const char *pat)
{
    const char *slash = strrchr(main, '/');
    size_t dlen = pat[0] == '/' || !slash ? 0 : (size_t)(slash - main) + 1;
    char *out = malloc(2 * dlen + strlen(pat) + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < dlen; i++) {
        if (strchr("*?[]\\", main[i])) *o++ = '\\';
        *o++ = main[i];
    }
    strcpy(o, pat);
    return out;
}

/* One file matched by pattern node n: read and parsed into x->inc (its
 * YAML errors are its own; not being read is an error at the pattern). */
static void include_file(struct ctx *x, const struct yt_node *n, const char *name)
{
    size_t len = 0;
    const char *what = NULL;
    char *buf = read_whole(name, &len, &what);
    if (!buf) {
        if (strcmp(what, "too large") == 0)
            ERR(x, n, "include: %s is larger than %u bytes", name, CONFIG_MAX_FILE_BYTES);
        else
            ERR(x, n, "include: %s: %s: %s", name, what, strerror(errno));
        return;
    }
    struct inc_file *f = &x->inc[x->ninc];
    if ((f->name = strdup(name))) {
        x->ninc++;
        set_file(x, f->name, x->ninc);
        if (!yt_parse(&f->doc, buf, len, x->d)) f->doc.root = NULL;
        set_file(x, x->c->path, 0);
    } else {
        ERR(x, n, "out of memory");
    }
    free(buf);
}

/* The directory glob(3) could not read: a missing one is not an error
 * (its pattern matches nothing), an unreadable one is. */
static _Thread_local int glob_errno;
static _Thread_local char glob_epath[PATH_MAX];

static int glob_error(const char *path, int err)
{
    if (err == ENOENT || err == ENOTDIR) return 0;
    glob_errno = err;
    snprintf(glob_epath, sizeof(glob_epath), "%s", path);
    return 1;
}

/* `include:`: every file its patterns match, in order (each pattern's in
 * name order), parsed into x->inc. */
/* config_replace_include(): the included file checked as another one. */
static char *replace_live, *replace_new;
static bool replace_seen; /* an include pattern named replace_live */

/* path, with its directory resolved (the file itself need not exist). */
static char *canonical(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX], *out;
    if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        char *d = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        bool ok = d && realpath(d, dir);
        free(d);
        if (!ok) return strdup(path);
    }
    const char *base = slash ? slash + 1 : path;
    size_t n = strlen(dir) + strlen(base) + 2;
    if ((out = malloc(n))) snprintf(out, n, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", base);
    return out;
}

bool config_replace_seen(void)
{
    return replace_seen;
}

bool config_replace_include(const char *live, const char *candidate)
{
    replace_seen = false;
    free(replace_live);
    free(replace_new);
    replace_live = live ? canonical(live) : NULL;
    replace_new = candidate ? strdup(candidate) : NULL;
    return !live || (replace_live && replace_new);
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files one include pattern names, in name order: what glob(3) finds,
 * with the replaced file in it when the pattern matches its name even if
 * it does not exist yet. Returns NULL when nothing is to be read. */
static char **include_list(const glob_t *g, const char *pat, size_t *n)
{
    char **v = calloc(g->gl_pathc + 2, sizeof(*v));
    if (!v) return NULL;
    bool seen = false;
    *n = 0;
    for (size_t k = 0; k < g->gl_pathc; k++) {
        char *c = replace_live ? canonical(g->gl_pathv[k]) : NULL;
        bool is_live = c && strcmp(c, replace_live) == 0;
        free(c);
        seen = seen || is_live;
        v[(*n)++] = is_live ? replace_live : g->gl_pathv[k];
    }
    if (replace_live && !seen) {
        /* the pattern's directory resolved like the name's (a relative -c,
         * "./", a symlinked directory) */
        char *cp = canonical(pat);
        if (cp && fnmatch(cp, replace_live, FNM_PATHNAME | FNM_PERIOD) == 0) {
            v[(*n)++] = replace_live;
            qsort(v, *n, sizeof(*v), path_cmp);
            seen = true;
        }
        free(cp);
    }
    replace_seen = replace_seen || seen;
    return v;
}

static void load_include(struct ctx *x, const struct yt_node *n)
{
    if (is_null(n)) return;
    if (!want(x, n, YT_SEQ, "include")) return;
    x->inc = calloc(CONFIG_MAX_INCLUDES, sizeof(*x->inc));
    if (!x->inc) {
        ERR(x, n, "out of memory");
        return;
    }
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        if (!scalar(x, v, "include")) continue;
        if (!v->len) {
            ERR(x, v, "include: empty pattern");
            continue;
        }
        char *pat = include_pattern(x->c->path, v->str);
        if (!pat) {
            ERR(x, v, "out of memory");
            continue;
        }
        glob_t g;
        glob_errno = 0;
        int rc = glob(pat, 0, glob_error, &g);
        if (rc != 0 && rc != GLOB_NOMATCH) {
            if (rc == GLOB_ABORTED)
                ERR(x, v, "include: %s: cannot read the directory: %s", glob_epath,
                    strerror(glob_errno));
            else
                ERR(x, v, "include: '%s': out of memory", v->str);
            globfree(&g);
            free(pat);
            continue;
        }
        if (rc == GLOB_NOMATCH) g.gl_pathc = 0;
        size_t nfiles = 0;
        char **files = include_list(&g, pat, &nfiles);
        free(pat);
        if (!files) ERR(x, v, "include: '%s': out of memory", v->str);
        for (size_t k = 0; files && k < nfiles; k++) {
            if (x->ninc == CONFIG_MAX_INCLUDES) {
                ERR(x, v, "include: more than %d files", CONFIG_MAX_INCLUDES);
                break;
            }
            include_file(x, v, files[k] == replace_live ? replace_new : files[k]);
        }
        free(files);
        globfree(&g);
        if (x->ninc == CONFIG_MAX_INCLUDES && i + 1 < n->len) break;
    }
}

/* An included file's top level: only `pools:` and `maintenance:`. Its
 * lists, NULL where absent or not a list (reported). */
static void included_lists(struct ctx *x, const struct yt_node *root, const struct yt_node **pools,
                           const struct yt_node **windows)
{
    *pools = *windows = NULL;
    if (!root || is_null(root) || !want(x, root, YT_MAP, "included file")) return;
    char name[96];
    for (size_t i = 0; i < root->len; i++) {
        const struct yt_node *k = root->u.pairs[i].key;
        if (k->kind != YT_SCALAR || k->dup || key_is(k, "pools") || key_is(k, "maintenance"))
            continue;
        ERR(x, k,
            "'%s' is not allowed in an included file (it holds only 'pools' and 'maintenance')",
            shown(k, name, sizeof(name)));
    }
    const struct yt_node *v;
    if ((v = yt_get(root, "pools")) && !is_null(v) && want(x, v, YT_SEQ, "pools")) *pools = v;
    if ((v = yt_get(root, "maintenance")) && !is_null(v) && want(x, v, YT_SEQ, "maintenance"))
        *windows = v;
}

/* Pools, then maintenance windows (which name pools' regions) of the main
 * file and every included one, in order, as one list of each. */
static void load_lists(struct ctx *x, const struct yt_node *root)
{
    struct config *c = x->c;
    size_t nfiles = x->ninc + 1, npools = 0, nwindows = 0;
    const struct yt_node **lists = calloc(2 * nfiles, sizeof(*lists));
    if (!lists) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    const struct yt_node *v, *inc = yt_get(root, "include");
    if ((v = yt_get(root, "pools")) && want(x, v, YT_SEQ, "pools")) lists[0] = v;
    if ((v = yt_get(root, "maintenance")) && !is_null(v) && want(x, v, YT_SEQ, "maintenance"))
        lists[1] = v;
    for (size_t i = 0; i < x->ninc; i++) {
        set_file(x, x->inc[i].name, i + 1);
        included_lists(x, x->inc[i].doc.root, &lists[2 * i + 2], &lists[2 * i + 3]);
    }
    set_file(x, c->path, 0);
    for (size_t i = 0; i < nfiles; i++) {
        if (lists[2 * i]) npools += lists[2 * i]->len;
        if (lists[2 * i + 1]) nwindows += lists[2 * i + 1]->len;
    }
    if (!yt_get(root, "pools") && !inc)
        ERR(x, root, "'pools' is required");
    else if (!npools && lists[0])
        ERR(x, lists[0], "pools: at least one pool is required");
    else if (!npools && !yt_get(root, "pools"))
        ERR(x, inc, "'pools' is required: neither this file nor an included one has a pool");
    c->pools = npools ? calloc(npools, sizeof(*c->pools)) : NULL;
    x->pool_file = calloc(npools ? npools : 1, sizeof(*x->pool_file));
    x->windows = calloc(nwindows ? nwindows : 1, sizeof(*x->windows));
    if ((npools && !c->pools) || !x->pool_file || !x->windows) {
        diag_add(x->d, 0, 0, "out of memory");
    } else {
        for (size_t i = 0; i < nfiles; i++) {
            set_file(x, i ? x->inc[i - 1].name : c->path, i);
            if (lists[2 * i]) load_pools(x, lists[2 * i]);
        }
        set_file(x, c->path, 0);
        check_hosts(x);
        for (size_t i = 0; i < nfiles; i++) {
            set_file(x, i ? x->inc[i - 1].name : c->path, i);
            if (lists[2 * i + 1]) load_maintenance(x, lists[2 * i + 1]);
        }
        set_file(x, c->path, 0);
    }
    free(lists);
}

/* ---- events: ---- */

static const char *webhook_reserved(const char *name)
{
    static const char *const reserved[] = {
        "host",       "content-type",       "content-length",
        "connection", "transfer-encoding",  "x-detourd-signature",
        "expect",     "x-detourd-event-id", NULL};
    for (const char *const *r = reserved; *r; r++)
        if (strcasecmp(name, *r) == 0) return "is set by detourd itself and cannot be configured";
    return NULL;
}

static void load_exec(struct ctx *x, const struct yt_node *n, struct events_cfg *e)
{
    static const char *const keys[] = {"command", "timeout", NULL};
    if (!want(x, n, YT_MAP, "events.exec")) return;
    check_keys(x, n, "events.exec", keys);
    const struct yt_node *v = yt_get(n, "command");
    if (!v) {
        ERR(x, n, "events.exec: 'command' is required");
    } else if (v->kind == YT_SCALAR && !is_null(v)) {
        ERR(x, v,
            "events.exec.command: give a list (the program and its arguments, e.g. "
            "[\"/usr/local/bin/notify\", \"--channel\", \"ops\"]); no shell runs it");
    } else if (want(x, v, YT_SEQ, "events.exec.command")) {
        if (!v->len) ERR(x, v, "events.exec.command: the list is empty");
        e->exec_argv = calloc(v->len + 1, sizeof(*e->exec_argv));
        if (!e->exec_argv) return;
        for (size_t i = 0; i < v->len; i++) {
            char *s = NULL;
            if (!get_str(x, v->u.items[i], "events.exec.command", &s)) continue;
            e->exec_argv[e->exec_argc++] = s;
            if (!text_ok(s))
                ERR(x, v->u.items[i], "events.exec.command: item %zu contains a control character",
                    i);
        }
        const char *prog = e->exec_argc ? e->exec_argv[0] : NULL;
        struct stat st;
        if (prog && prog[0] != '/')
            ERR(x, v->u.items[0],
                "events.exec.command: '%s' must be an absolute path (no PATH search)", prog);
        else if (prog && access(prog, X_OK) != 0)
            ERR(x, v->u.items[0], "events.exec.command: cannot run '%s': %s", prog,
                strerror(errno));
        else if (prog && (stat(prog, &st) != 0 || !S_ISREG(st.st_mode)))
            ERR(x, v->u.items[0], "events.exec.command: '%s' is not a file", prog);
    }
    if ((v = yt_get(n, "timeout")))
        get_duration(x, v, "events.exec.timeout", 100, MS_PER_HOUR, &e->exec_timeout_ms);
}

static void load_webhook(struct ctx *x, const struct yt_node *n, struct events_cfg *e)
{
    static const char *const keys[] = {"url",     "secret",  "headers",    "timeout",
                                       "retries", "ca_file", "tls_verify", NULL};
    if (!want(x, n, YT_MAP, "events.webhook")) return;
    check_keys(x, n, "events.webhook", keys);
    const struct yt_node *v = yt_get(n, "url");
    char *s = NULL;
    if (!v) {
        ERR(x, n, "events.webhook: 'url' is required");
    } else if (get_str(x, v, "events.webhook.url", &s)) {
        struct url u;
        const char *err = netaddr_parse_url(s, true, &u);
        if (err) {
            ERR(x, v, "events.webhook.url: '%s' %s", s, err);
        } else {
            e->webhook_url = u.norm;
            e->webhook_tls = strncmp(u.norm, LIT("https:")) == 0;
            e->webhook_host = strdup(u.host);
            e->webhook_port = u.port;
            const char *rest = u.norm + (e->webhook_tls ? 8 : 7);
            const char *slash = rest + strcspn(rest, "/?");
            e->webhook_path = *slash == '/' ? strdup(slash) : NULL;
            if (!e->webhook_path && *slash == '?') {
                size_t len = strlen(slash);
                e->webhook_path = malloc(len + 2);
                if (e->webhook_path) {
                    e->webhook_path[0] = '/';
                    memcpy(e->webhook_path + 1, slash, len + 1);
                }
            } else if (!e->webhook_path) {
                e->webhook_path = strdup("/");
            }
        }
        free(s);
    }
    if ((v = yt_get(n, "secret")) && get_str(x, v, "events.webhook.secret", &e->webhook_secret) &&
        !e->webhook_secret[0])
        ERR(x, v, "events.webhook.secret: empty (leave the key out for no signature)");
    if ((v = yt_get(n, "headers")) && !is_null(v))
        load_header_map(x, v, "events.webhook.headers", webhook_reserved, &e->webhook_headers,
                        &e->nwebhook_headers);
    if ((v = yt_get(n, "timeout")))
        get_duration(x, v, "events.webhook.timeout", 100, 10 * 60 * 1000, &e->webhook_timeout_ms);
    if ((v = yt_get(n, "retries")))
        get_unsigned(x, v, "events.webhook.retries", 0, 100, &e->webhook_retries);
    if ((v = yt_get(n, "tls_verify")))
        get_bool(x, v, "events.webhook.tls_verify", &e->webhook_tls_verify);
    if ((v = yt_get(n, "ca_file")) &&
        get_str(x, v, "events.webhook.ca_file", &e->webhook_ca_file) &&
        access(e->webhook_ca_file, R_OK) != 0)
        ERR(x, v, "events.webhook.ca_file: cannot read '%s': %s", e->webhook_ca_file,
            strerror(errno));
}

static void load_events(struct ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"exec", "webhook", NULL};
    if (is_null(n) || !want(x, n, YT_MAP, "events")) return;
    check_keys(x, n, "events", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "exec")) && !is_null(v)) load_exec(x, v, &x->c->events);
    if ((v = yt_get(n, "webhook")) && !is_null(v)) load_webhook(x, v, &x->c->events);
}

static void free_events(struct events_cfg *e)
{
    for (size_t i = 0; i < e->exec_argc; i++) free(e->exec_argv[i]);
    free(e->exec_argv);
    free(e->webhook_url);
    free(e->webhook_host);
    free(e->webhook_path);
    free(e->webhook_secret);
    free_headers(e->webhook_headers, e->nwebhook_headers);
    free(e->webhook_ca_file);
}

static void load_root(struct ctx *x, const struct yt_node *root)
{
    static const char *const keys[] = {
        "listen", "workers",     "admin",   "log",        "access_log",    "limits", "checks",
        "pools",  "maintenance", "include", "state_file", "state_max_age", "events", NULL};
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
        if (key_is(v, "auto"))
            c->workers = 0;
        else
            get_unsigned(x, v, "workers", 1, 256, &c->workers);
    }
    if ((v = yt_get(root, "log"))) load_log(x, v);
    if ((v = yt_get(root, "access_log"))) load_access_log(x, v);
    if ((v = yt_get(root, "admin"))) load_admin(x, v);
    if ((v = yt_get(root, "limits"))) load_limits(x, v);
    if ((v = yt_get(root, "checks"))) load_check(x, v, &x->c->checks, false);
    if ((v = yt_get(root, "include"))) load_include(x, v);
    load_lists(x, root);
    if ((v = yt_get(root, "state_file")) && !is_null(v) &&
        get_str(x, v, "state_file", &c->state_file) && c->state_file[0] != '/')
        ERR(x, v, "state_file: '%s' must be an absolute path", c->state_file);
    if ((v = yt_get(root, "state_max_age")))
        get_duration(x, v, "state_max_age", 0, 7 * 24 * (uint64_t)MS_PER_HOUR,
                     &c->state_max_age_ms);
    if ((v = yt_get(root, "events"))) load_events(x, v);
}

static void free_windows(struct sched_window *w, size_t n)
{
    for (size_t i = 0; w && i < n; i++) {
        free((char *)w[i].name);
        free((char *)w[i].reason);
        free((struct sched_target *)w[i].targets);
    }
    free(w);
}

static void sched_free(struct config *c)
{
    struct sched_model *m = c->sched;
    if (m) {
        for (size_t i = 0; i < m->npools; i++) free((struct sched_override *)m->pools[i].overrides);
        free((struct sched_pool *)m->pools);
        free_windows((struct sched_window *)m->windows, m->nwindows);
        free(m);
    }
    struct sched_result *r = c->sched_now;
    if (r) {
        for (size_t i = 0; r->pools && i < c->npools; i++) free(r->pools[i]);
        free(r->pools);
        free(r->phases);
        free(r);
    }
    c->sched = NULL;
    c->sched_now = NULL;
}

/* The scheduling model of the loaded config (it takes x's windows) and
 * its evaluation at the load instant, so that even the first choices
 * published follow it. */
static bool sched_build(struct ctx *x)
{
    struct config *c = x->c;
    struct sched_model *m = calloc(1, sizeof(*m));
    struct sched_result *r = calloc(1, sizeof(*r));
    c->sched = m;
    c->sched_now = r;
    if (!m || !r) return false;
    m->windows = x->windows;
    m->nwindows = x->nwindows;
    x->windows = NULL;
    struct sched_pool *sp = calloc(c->npools ? c->npools : 1, sizeof(*sp));
    m->pools = sp;
    r->pools = calloc(c->npools ? c->npools : 1, sizeof(*r->pools));
    r->phases = calloc(m->nwindows ? m->nwindows : 1, sizeof(*r->phases));
    if (!sp || !r->pools || !r->phases) return false;
    m->npools = c->npools;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        struct sched_override *o = calloc(p->nregions ? p->nregions : 1, sizeof(*o));
        sp[i].overrides = o;
        r->pools[i] = calloc(p->nregions ? p->nregions : 1, sizeof(*r->pools[i]));
        if (!o || !r->pools[i]) return false;
        sp[i].nregions = p->nregions;
        for (size_t k = 0; k < p->nregions; k++)
            o[k] = (struct sched_override){.state = p->regions[k].state,
                                           .has_until = p->regions[k].has_until,
                                           .until_ms = p->regions[k].until_ms,
                                           .reason = p->regions[k].reason};
    }
    config_sched_apply(c, clock_wall_ms());
    return true;
}

void config_sched_apply(struct config *c, int64_t now_ms)
{
    sched_eval(c->sched, now_ms, c->sched_now);
    c->sched_now_ms = now_ms;
    for (size_t i = 0; i < c->npools; i++)
        for (size_t k = 0; k < c->pools[i].nregions; k++)
            c->pools[i].regions[k].op = c->sched_now->pools[i][k].state;
}

/* The distinct header names used by `hash_key: header:NAME`, which the
 * request parser captures. */
static int capture_add(struct ctx *x, const char *name, const struct pool *p)
{
    struct config *c = x->c;
    for (size_t k = 0; k < c->ncapture; k++)
        if (strcasecmp(c->capture[k], name) == 0) return (int)k;
    if (c->ncapture == CONFIG_MAX_CAPTURE) {
        if (p) set_file(x, x->pool_file[p - c->pools], x->pool_file[p - c->pools] != c->path);
        diag_add(x->d, p ? p->line : 0, p ? p->col : 0,
                 "too many different hash_key headers: at most %d request headers are kept, "
                 "%s",
                 CONFIG_MAX_CAPTURE,
                 c->access_log ? "2 of them for the access log" : "over all pools");
        set_file(x, c->path, 0);
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
        if (p->balance != BALANCE_HASH || !p->hash_key || strncasecmp(p->hash_key, LIT("header:")))
            continue;
        p->hash_header = capture_add(x, p->hash_key + 7, p);
    }
}

static void set_defaults(struct config *c)
{
    c->workers = 1;
    c->log_level = LOG_INFO;
    c->state_max_age_ms = 10 * 60 * 1000;
    c->events.exec_timeout_ms = 10 * 1000;
    c->events.webhook_timeout_ms = 5 * 1000;
    c->events.webhook_retries = 5;
    c->events.webhook_tls_verify = true;
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
    c->release = config_free;
    c->loaded_at = time(NULL);
    size_t before = d->n + d->dropped;
    struct yt_doc doc;
    if (!yt_parse(&doc, buf, len, d)) {
        config_free(c);
        return NULL;
    }
    struct ctx x = {.d = d, .c = c};
    set_file(&x, c->path, 0);
    if (!check_defaults(&c->checks)) diag_add(d, 0, 0, "out of memory");
    load_root(&x, doc.root);
    free(x.hosts);
    free(x.pool_names.slot);
    free(x.window_names.slot);
    if (d->n + d->dropped == before && !sched_build(&x) && d->n + d->dropped == before)
        diag_add(d, 0, 0, "out of memory");
    free_windows(x.windows, x.nwindows); /* when sched_build did not take them */
    yt_free(&doc);
    for (size_t i = 0; i < x.ninc; i++) yt_free(&x.inc[i].doc);
    collect_capture(&x); /* names the pools' files */
    for (size_t i = 0; i < x.ninc; i++) free(x.inc[i].name);
    free(x.inc);
    free(x.pool_file);
    counters_layout(c);
    if (d->n + d->dropped == before &&
        !(redirect_prepare(c, d) && route_build(c) && select_init(c)) &&
        d->n + d->dropped == before)
        diag_add(d, 0, 0, "out of memory");
    if (d->n + d->dropped != before) {
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

void config_free(void *cp)
{
    struct config *c = cp;
    if (!c) return;
    select_release(c);
    redirect_release(c);
    sched_free(c);
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
            free(p->regions[k].reason);
            check_free(&p->regions[k].check);
        }
        free(p->regions);
    }
    free(c->pools);
    check_free(&c->checks); /* after the regions that borrow from it */
    for (size_t i = 0; i < c->ncapture; i++) free(c->capture[i]);
    free(c->capture);
    free(c->access_log);
    free(c->state_file);
    free_events(&c->events);
    free(c->admin_allow);
    free((void *)c->counts);
    for (size_t i = 0; c->listen_tls && i < c->nlisten; i++) tls_srv_unref(c->listen_tls[i]);
    free(c->listen_tls);
    free(c->listen);
    free(c->path);
    free(c);
}
