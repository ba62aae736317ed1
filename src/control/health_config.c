/* Health checks: the `checks:` block (defaults over built-in ones) and a
 * region's `check:` block over it; see health_config.h. */
#include "autoconf.h"

#include "control/health_config.h"

#include <stdlib.h>
#include <string.h>

#include "control/config_walk.h"
#include "lib/hash.h"
#include "lib/lit.h"
#include "lib/netaddr.h"
#include "serve/http_parse.h"

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

void check_cfg_free(struct check_cfg *c)
{
    if (!c) return;
    unsigned b = c->borrowed;
    if (!(b & CHECK_BORROW_URL)) free(c->url);
    if (!(b & CHECK_BORROW_HOST)) free(c->host);
    if (!(b & CHECK_BORROW_PATH)) free(c->path);
    if (!(b & CHECK_BORROW_METHOD)) free(c->method);
    if (!(b & CHECK_BORROW_BODY)) free(c->expect_body);
    if (!(b & CHECK_BORROW_CA)) free(c->ca_file);
    if (!(b & CHECK_BORROW_HEADERS)) cfg_free_headers(c->headers, c->nheaders);
    free(c);
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

static void load_expect(struct cfg_ctx *x, const struct yt_node *n, struct check_cfg *c)
{
    const struct yt_node *one[1] = {n};
    const struct yt_node *const *items = one;
    size_t cnt = 1;
    if (n->kind == YT_SEQ) {
        items = (const struct yt_node *const *)n->u.items;
        cnt = n->len;
        if (cnt == 0) {
            CFG_ERR(x, n, "expect_status: empty list");
            return;
        }
    }
    memset(c->expect, 0, sizeof(c->expect));
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *it = items[i];
        if (!cfg_scalar(x, it, "expect_status")) continue;
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
        CFG_ERR(x, it, "expect_status: '%s' is not a status code (100..599) or class (1xx..5xx)",
                v);
    }
}

static void load_check_headers(struct cfg_ctx *x, const struct yt_node *n, struct check_cfg *c)
{
    if (c->borrowed & CHECK_BORROW_HEADERS)
        c->borrowed &= ~(unsigned)CHECK_BORROW_HEADERS;
    else
        cfg_free_headers(c->headers, c->nheaders);
    c->headers = NULL;
    c->nheaders = 0;
    cfg_load_header_map(x, n, "check headers", NULL, &c->headers, &c->nheaders);
}

/* Applies the keys present in n over c. in_region allows `url`. */
static void load_check(struct cfg_ctx *x, const struct yt_node *n, struct check_cfg *c,
                       bool in_region)
{
    static const char *const region_keys[] = {
        "url",        "type",    "method",   "expect_status", "expect_body",   "headers",
        "tls_verify", "ca_file", "interval", "fast_interval", "down_interval", "timeout",
        "rise",       "fall",    "jitter",   "initial",       "consensus",     NULL};
    const char *const *keys = in_region ? region_keys : region_keys + 1;
    static const char *const types[] = {"http", "tcp", "none", NULL};
    static const char *const initials[] = {"up", "down", NULL};
    const char *what = in_region ? "check" : "checks";
    if (!cfg_want(x, n, YT_MAP, what)) return;
    cfg_check_keys(x, n, what, keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "type")) && cfg_get_enum(x, v, "check type", types, &e))
        c->type = (enum check_type)e;
    if ((v = yt_get(n, "method"))) own(c, CHECK_BORROW_METHOD, &c->method);
    if (v && cfg_get_str(x, v, "check method", &c->method)) {
        bool ok = c->method[0] != '\0';
        for (const char *m = c->method; *m; m++) ok = ok && http_tchar[(unsigned char)*m];
        if (!ok) CFG_ERR(x, v, "check method: '%s' is not an HTTP method token", c->method);
    }
    if ((v = yt_get(n, "expect_status"))) load_expect(x, v, c);
    if ((v = yt_get(n, "expect_body"))) {
        own(c, CHECK_BORROW_BODY, &c->expect_body);
        if (cfg_get_str(x, v, "expect_body", &c->expect_body) && c->expect_body[0] == '\0') {
            free(c->expect_body);
            c->expect_body = NULL;
        }
    }
    if ((v = yt_get(n, "headers"))) load_check_headers(x, v, c);
    if ((v = yt_get(n, "tls_verify"))) cfg_get_bool(x, v, "tls_verify", &c->tls_verify);
    if ((v = yt_get(n, "ca_file"))) own(c, CHECK_BORROW_CA, &c->ca_file);
    if (v && cfg_get_str(x, v, "ca_file", &c->ca_file))
        cfg_file_readable(x, v, "ca_file", c->ca_file);
    if ((v = yt_get(n, "interval")))
        cfg_get_duration(x, v, "interval", 100, CFG_MS_PER_HOUR, &c->interval_ms);
    if ((v = yt_get(n, "fast_interval")))
        cfg_get_duration(x, v, "fast_interval", 10, CFG_MS_PER_HOUR, &c->fast_interval_ms);
    if ((v = yt_get(n, "down_interval")))
        cfg_get_duration(x, v, "down_interval", 100, CFG_MS_PER_HOUR, &c->down_interval_ms);
    if ((v = yt_get(n, "timeout"))) cfg_get_duration(x, v, "timeout", 10, 60000, &c->timeout_ms);
    if ((v = yt_get(n, "rise"))) cfg_get_unsigned(x, v, "rise", 1, 100, &c->rise);
    if ((v = yt_get(n, "fall"))) cfg_get_unsigned(x, v, "fall", 1, 100, &c->fall);
    if ((v = yt_get(n, "jitter")) && cfg_scalar(x, v, "jitter")) {
        size_t used;
        uint64_t pct;
        if (!netaddr_parse_u64(v->str, &used, &pct) || strcmp(v->str + used, "%") != 0 || pct > 50)
            CFG_ERR(x, v, "jitter: '%s' is not a percentage from 0%% to 50%%", v->str);
        else
            c->jitter_pct = (unsigned)pct;
    }
    if ((v = yt_get(n, "initial")) && cfg_get_enum(x, v, "initial", initials, &e))
        c->initial_up = e == 0;
    if ((v = yt_get(n, "consensus")) && cfg_scalar(x, v, "consensus")) {
        size_t used;
        uint64_t k;
        if (strcmp(v->str, "off") == 0)
            c->consensus = CHECK_CONSENSUS_OFF;
        else if (strcmp(v->str, "majority") == 0)
            c->consensus = CHECK_CONSENSUS_MAJORITY;
        else if (netaddr_parse_u64(v->str, &used, &k) && !v->str[used] && k >= 1 &&
                 k <= CHECK_CONSENSUS_MAX)
            c->consensus = (int)k;
        else
            CFG_ERR(x, v, "consensus: '%s' is not off, majority or a count from 1 to %d", v->str,
                    CHECK_CONSENSUS_MAX);
    }
    if (in_region && (v = yt_get(n, "url"))) {
        own(c, CHECK_BORROW_URL, &c->url);
        cfg_get_str(x, v, "check url", &c->url);
    }
}

/* Resolves the check url (given or the region's) into host, port, path. */
void health_config_finish(struct cfg_ctx *x, const struct yt_node *at, struct region *r)
{
    struct check_cfg *c = r->check;
    const char *src = c->url ? c->url : r->url;
    if (!src) return;
    struct url u;
    const char *err = netaddr_parse_url(src, true, &u);
    if (err) {
        CFG_ERR(x, at, "check url: '%s' %s", src, err);
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

void health_config_load_checks(struct cfg_ctx *x, const struct yt_node *n)
{
    struct check_cfg *c = x->c->checks = calloc(1, sizeof(*c));
    if (!c || !check_defaults(c)) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    if (n) load_check(x, n, c, false);
}

void health_config_region(struct cfg_ctx *x, const struct yt_node *n, struct region *r)
{
    if (!x->c->checks) return; /* out of memory, reported */
    if (!(r->check = malloc(sizeof(*r->check)))) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    check_borrow(r->check, x->c->checks);
    if (n) load_check(x, n, r->check, true);
}
