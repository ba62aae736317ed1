/* Pools and their regions: the `pools:` lists of the main file and of
 * every included one (control/config.c walks the files), each pool's
 * hosts, headers and all_down policy, each region's url (never one of this
 * daemon's own listeners) and check (control/health_config.c); then the
 * hosts over all pools, each in one pool only. */
#include "autoconf.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/config_walk.h"
#include "control/health_config.h"
#include "lib/lit.h"
#include "lib/netaddr.h"
#include "serve/http_parse.h"

struct cfg_host_ref {
    const char *host;
    const struct pool *pool;
    const struct yt_node *node;
    const char *file; /* the node's file (cfg_ctx.cur then) */
    size_t fileno;    /* 0: the main file, then each included one in order */
};

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

static void load_headers(struct cfg_ctx *x, const struct yt_node *n, struct pool *p)
{
    if (cfg_is_null(n)) return;
    cfg_load_header_map(x, n, "headers", reserved_header, &p->headers, &p->nheaders);
}

static void load_all_down(struct cfg_ctx *x, const struct yt_node *n, struct pool *p)
{
    static const char *const keys[] = {"action", "url", "retry_after", NULL};
    static const char *const actions[] = {"fail_open", "fallback", "reject", NULL};
    if (!cfg_want(x, n, YT_MAP, "all_down")) return;
    cfg_check_keys(x, n, "all_down", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "action")) && cfg_get_enum(x, v, "all_down.action", actions, &e))
        p->all_down = (enum all_down_action)e;
    if ((v = yt_get(n, "retry_after")))
        cfg_get_unsigned(x, v, "all_down.retry_after", 0, 86400, &p->retry_after);
    const struct yt_node *u = yt_get(n, "url");
    if (u) {
        char *s = NULL;
        if (cfg_get_str(x, u, "all_down.url", &s)) {
            struct url url;
            const char *err = netaddr_parse_url(s, true, &url);
            const struct listen_addr *self = err ? NULL : url_is_self(x->c, &url);
            if (err) {
                CFG_ERR(x, u, "all_down.url: '%s' %s", s, err);
            } else if (self) {
                CFG_ERR(x, u,
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
    if (p->all_down == ALL_DOWN_FALLBACK && !u)
        CFG_ERR(x, n, "all_down: action fallback needs a url");
}

static void load_region(struct cfg_ctx *x, const struct yt_node *n, struct pool *p,
                        struct region *r)
{
    static const char *const keys[] = {"name",  "url",    "priority", "weight", "state",
                                       "until", "reason", "check",    NULL};
    static const char *const states[] = {"auto", "up", "down", "drain", NULL};
    r->priority = 1;
    r->weight = 1;
    r->line = n->line;
    r->col = n->col;
    if (!cfg_want(x, n, YT_MAP, "region")) return;
    cfg_check_keys(x, n, "region", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "name"))) {
        /* the metrics label a pool's fallback and reject answers with these */
        if (cfg_get_name(x, v, "region name", &r->name) &&
            (strcmp(r->name, "fallback") == 0 || strcmp(r->name, "reject") == 0))
            CFG_ERR(x, v,
                    "region name '%s' is reserved: it labels the pool's %s answers in metrics",
                    r->name, r->name);
    } else {
        CFG_ERR(x, n, "region: 'name' is required");
    }
    if ((v = yt_get(n, "priority")))
        cfg_get_unsigned(x, v, "priority", 0, CONFIG_MAX_PRIORITY, &r->priority);
    if ((v = yt_get(n, "weight")))
        cfg_get_unsigned(x, v, "weight", 0, CONFIG_MAX_WEIGHT, &r->weight);
    int e;
    if ((v = yt_get(n, "state")) && cfg_get_enum(x, v, "state", states, &e))
        r->state = (enum region_state)e;
    if ((v = yt_get(n, "until"))) {
        r->has_until = cfg_get_time(x, v, "until", &r->until_ms);
        if (r->has_until && r->state == REGION_AUTO)
            CFG_ERR(x, v, "until: needs a state other than auto (until ends that override)");
    }
    if ((v = yt_get(n, "reason"))) cfg_get_reason(x, v, &r->reason);
    const struct yt_node *chk = yt_get(n, "check");
    health_config_region(x, chk, r);
    if (!(v = yt_get(n, "url"))) {
        CFG_ERR(x, n, "region%s%s: 'url' is required", r->name ? " " : "", r->name ? r->name : "");
        return;
    }
    char *s = NULL;
    if (!cfg_get_str(x, v, "url", &s)) return;
    struct url u;
    const char *err = netaddr_parse_url(s, false, &u);
    if (err) {
        CFG_ERR(x, v, "url: '%s' %s", s, err);
    } else {
        const struct listen_addr *self = url_is_self(x->c, &u);
        if (self) {
            CFG_ERR(x, v, "url: '%s' points at this daemon's own listener %s (a redirect loop)", s,
                    self->text);
            free(u.norm);
        } else {
            r->url = u.norm;
            r->url_len = strlen(u.norm);
        }
    }
    free(s);
    if (r->check && (r->url || r->check->url))
        health_config_finish(x, chk && yt_get(chk, "url") ? yt_get(chk, "url") : v, r);
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

static void load_hosts(struct cfg_ctx *x, const struct yt_node *n, struct pool *p)
{
    if (n->kind == YT_SCALAR && !cfg_is_null(n)) {
        CFG_ERR(x, n, "hosts: expected a list, got a scalar (write [\"%s\"])", n->str);
        return;
    }
    if (!cfg_want(x, n, YT_SEQ, "hosts")) return;
    if (n->len == 0) {
        CFG_ERR(x, n, "hosts: empty list (omit 'hosts' to make this the default pool)");
        return;
    }
    p->hosts = calloc(n->len, sizeof(*p->hosts));
    if (!p->hosts) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *h = n->u.items[i];
        char *s = NULL;
        if (!cfg_get_str(x, h, "hosts", &s)) continue;
        for (char *c = s; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c |= 0x20;
        size_t len = strlen(s);
        if (len && s[len - 1] == '.' && s[0] != '[') s[--len] = '\0';
        if (!valid_host_pattern(s) || len > 253) {
            CFG_ERR(x, h, "hosts: '%s' is not a host name, [IPv6] literal or *.suffix wildcard",
                    h->str);
            free(s);
            continue;
        }
        p->hosts[p->nhosts++] = s;
        if (x->nhosts == x->caphosts) {
            size_t cap = x->caphosts ? x->caphosts * 2 : 16;
            struct cfg_host_ref *r = realloc(x->hosts, cap * sizeof(*r));
            if (!r) continue;
            x->hosts = r;
            x->caphosts = cap;
        }
        x->hosts[x->nhosts++] = (struct cfg_host_ref){s, p, h, x->cur, x->curno};
    }
}

static void load_pool(struct cfg_ctx *x, const struct yt_node *n, struct pool *p)
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
    if (!cfg_want(x, n, YT_MAP, "pool")) return;
    cfg_check_keys(x, n, "pool", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "name")))
        cfg_get_name(x, v, "pool name", &p->name);
    else
        CFG_ERR(x, n, "pool: 'name' is required");
    if ((v = yt_get(n, "hosts")) && !cfg_is_null(v))
        load_hosts(x, v, p);
    else
        p->is_default = true;
    if ((v = yt_get(n, "status"))) {
        unsigned st;
        if (cfg_get_unsigned(x, v, "status", 0, 999, &st)) {
            if (st != 302 && st != 303 && st != 307 && st != 308)
                CFG_ERR(x, v, "status: %u is not one of: 307 | 308 | 302 | 303", st);
            else
                p->status = st;
        }
    }
    int e;
    if ((v = yt_get(n, "balance")) && cfg_get_enum(x, v, "balance", balances, &e))
        p->balance = (enum balance)e;
    if ((v = yt_get(n, "hash_key")) && cfg_get_str(x, v, "hash_key", &p->hash_key)) {
        bool ok = strcmp(p->hash_key, "client_ip") == 0;
        if (!ok && strncasecmp(p->hash_key, LIT("header:")) == 0 && p->hash_key[7]) {
            ok = true;
            for (const char *c = p->hash_key + 7; *c; c++) ok = ok && http_tchar[(unsigned char)*c];
        }
        if (!ok) CFG_ERR(x, v, "hash_key: '%s' is not client_ip or header:NAME", p->hash_key);
    }
    if ((v = yt_get(n, "cache_control"))) {
        if (cfg_is_null(v)) {
            p->cache_control = strdup("");
        } else if (cfg_get_str(x, v, "cache_control", &p->cache_control) &&
                   !cfg_text_ok(p->cache_control)) {
            CFG_ERR(x, v, "cache_control: contains a control character");
        }
    } else {
        p->cache_control = strdup("no-store");
    }
    if ((v = yt_get(n, "headers"))) load_headers(x, v, p);
    if ((v = yt_get(n, "body")) && cfg_get_enum(x, v, "body", bodies, &e))
        p->body = (enum body_kind)e;
    if ((v = yt_get(n, "all_down"))) load_all_down(x, v, p);
    v = yt_get(n, "regions");
    if (!v) {
        CFG_ERR(x, n, "pool%s%s: 'regions' is required", p->name ? " " : "",
                p->name ? p->name : "");
        return;
    }
    if (!cfg_want(x, v, YT_SEQ, "regions")) return;
    if (v->len == 0) {
        CFG_ERR(x, v, "regions: a pool needs at least one region");
        return;
    }
    if (v->len > CONFIG_MAX_REGIONS) {
        CFG_ERR(x, v, "regions: %zu regions, at most %d per pool", v->len, CONFIG_MAX_REGIONS);
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
                CFG_ERR(x, nn, "region name '%s' is used twice in pool %s (first at line %u)",
                        r->name, p->name ? p->name : "?", p->regions[k].line);
                break;
            }
        }
    }
}

static int host_ref_cmp(const void *a, const void *b)
{
    const struct cfg_host_ref *x = a, *y = b;
    int c = strcmp(x->host, y->host);
    if (c) return c;
    if (x->fileno != y->fileno) return x->fileno < y->fileno ? -1 : 1;
    if (x->node->line != y->node->line) return x->node->line < y->node->line ? -1 : 1;
    return x->node->col < y->node->col ? -1 : x->node->col > y->node->col;
}

void pools_config_check_hosts(struct cfg_ctx *x)
{
    struct cfg_host_ref *refs = x->hosts;
    size_t n = x->nhosts;
    if (!n) return;
    qsort(refs, n, sizeof(*refs), host_ref_cmp);
    char at[PATH_MAX + 32];
    for (size_t i = 1; i < n; i++) {
        if (strcmp(refs[i].host, refs[i - 1].host) != 0) continue;
        cfg_set_file(x, refs[i].file, refs[i].fileno);
        if (refs[i].pool == refs[i - 1].pool)
            CFG_ERR(x, refs[i].node, "hosts: '%s' is listed twice in pool %s", refs[i].host,
                    refs[i].pool->name ? refs[i].pool->name : "?");
        else
            CFG_ERR(x, refs[i].node, "hosts: '%s' is already used by pool %s (%s)", refs[i].host,
                    refs[i - 1].pool->name ? refs[i - 1].pool->name : "?",
                    cfg_line_of(x, refs[i - 1].file, refs[i - 1].node->line, at, sizeof(at)));
    }
    cfg_set_file(x, x->c->path, 0);
}

void pools_config_load(struct cfg_ctx *x, const struct yt_node *n)
{
    struct config *c = x->c;
    if (!c->pools) return;
    char at[PATH_MAX + 32];
    for (size_t i = 0; i < n->len; i++) {
        x->pool_file[c->npools] = x->cur;
        struct pool *p = &c->pools[c->npools++];
        load_pool(x, n->u.items[i], p);
        const struct cfg_seen_slot *first =
            p->name ? cfg_seen_put(&x->pool_names, p->name, p->line, x->cur) : NULL;
        if (first)
            CFG_ERR(x, yt_get(n->u.items[i], "name"), "pool name '%s' is used twice (first at %s)",
                    p->name, cfg_line_of(x, first->file, first->line, at, sizeof(at)));
        if (p->is_default) {
            if (c->default_pool)
                CFG_ERR(x, n->u.items[i],
                        "pool %s: a second default pool (no 'hosts'); pool %s at %s is "
                        "already the default",
                        p->name ? p->name : "?",
                        c->default_pool->name ? c->default_pool->name : "?",
                        cfg_line_of(x, x->pool_file[c->default_pool - c->pools],
                                    c->default_pool->line, at, sizeof(at)));
            else
                c->default_pool = p;
        }
    }
}
