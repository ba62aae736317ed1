/* The `admin:` section: see admin_config.h. */
#include "autoconf.h"

#include "admin/admin_config.h"

#include <stdlib.h>
#include <string.h>

#include "control/config_walk.h"
#include "lib/netaddr.h"

struct admin_cfg {
    struct listen_addr listen;
    struct cidr *allow;
    size_t nallow;
};

const struct listen_addr *admin_cfg_listen(const struct admin_cfg *a)
{
    return &a->listen;
}

bool admin_cfg_allows(const struct admin_cfg *a, const struct sockaddr *sa)
{
    for (size_t i = 0; sa && i < a->nallow; i++)
        if (cidr_match(&a->allow[i], sa)) return true;
    return false;
}

void admin_cfg_free(struct admin_cfg *a)
{
    if (!a) return;
    free(a->allow);
    free(a);
}

/* Would binding both addresses clash (same port, and the same address or
 * a wildcard of the same family)? */
static bool same_socket(const struct listen_addr *a, const struct listen_addr *b)
{
    if (a->port != b->port || a->ss.ss_family != b->ss.ss_family) return false;
    const char *any = a->ss.ss_family == AF_INET6 ? "::" : "0.0.0.0";
    return strcmp(a->host, b->host) == 0 || strcmp(a->host, any) == 0 || strcmp(b->host, any) == 0;
}

void admin_config_load(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"listen", "allow", NULL};
    struct config *c = x->c;
    if (!n || cfg_is_null(n)) return;
    if (!cfg_want(x, n, YT_MAP, "admin")) return;
    struct admin_cfg *a = c->admin = calloc(1, sizeof(*a));
    if (!a) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    cfg_check_keys(x, n, "admin", keys);
    const struct yt_node *v = yt_get(n, "listen");
    if (!v) {
        CFG_ERR(x, n, "admin: 'listen' is required");
    } else if (cfg_scalar(x, v, "admin.listen")) {
        if (!netaddr_parse_listen(v->str, &a->listen)) {
            CFG_ERR(x, v, "admin.listen: '%s' is not an address (IPv4:PORT, [IPv6]:PORT or *:PORT)",
                    v->str);
        } else {
            a->listen.line = v->line;
            a->listen.col = v->col;
            for (size_t i = 0; i < c->nlisten; i++)
                if (same_socket(&c->listen[i], &a->listen))
                    CFG_ERR(x, v, "admin.listen: %s overlaps the redirect listener %s (line %u)",
                            a->listen.text, c->listen[i].text, c->listen[i].line);
        }
    }
    static const char *const dflt[] = {"127.0.0.0/8", "::1/128"};
    v = yt_get(n, "allow");
    size_t cnt = v && v->kind == YT_SEQ ? v->len : 2;
    if (v && !cfg_want(x, v, YT_SEQ, "admin.allow")) return;
    a->allow = calloc(cnt ? cnt : 1, sizeof(*a->allow));
    if (!a->allow) return;
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *it = v ? v->u.items[i] : NULL;
        if (it && !cfg_scalar(x, it, "admin.allow")) continue;
        if (!netaddr_parse_cidr(it ? it->str : dflt[i], &a->allow[a->nallow])) {
            CFG_ERR(x, it, "admin.allow: '%s' is not an address or CIDR (e.g. 10.0.0.0/8, ::1/128)",
                    it->str);
            continue;
        }
        a->nallow++;
    }
}
