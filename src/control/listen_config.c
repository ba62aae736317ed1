/* The `listen:` key: the redirect listeners' addresses, each plain or with
 * its `tls:` block (control/tls_config.c). */
#include "autoconf.h"

#include <stdlib.h>

#include "control/config_walk.h"
#include "control/tls_config.h"
#include "lib/netaddr.h"

void listen_config_load(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"address", "tls", NULL};
    if (!n) {
        CFG_ERR(x, x->root, "'listen' is required");
        return;
    }
    struct config *c = x->c;
    if (n->kind == YT_SCALAR && !cfg_is_null(n)) {
        /* a single address is accepted as a one-item list */
    } else if (!cfg_want(x, n, YT_SEQ, "listen")) {
        return;
    }
    size_t cnt = n->kind == YT_SEQ ? n->len : 1;
    if (cnt == 0) {
        CFG_ERR(x, n, "listen: at least one address is required");
        return;
    }
    c->listen = calloc(cnt, sizeof(*c->listen));
    c->listen_tls = calloc(cnt, sizeof(*c->listen_tls));
    if (!c->listen || !c->listen_tls) return;
    struct cfg_seen seen = {0};
    for (size_t i = 0; i < cnt; i++) {
        const struct yt_node *item = n->kind == YT_SEQ ? n->u.items[i] : n, *tls = NULL;
        if (item->kind == YT_MAP) {
            /* {address: ..., tls: {...}} */
            cfg_check_keys(x, item, "a listener", keys);
            tls = yt_get(item, "tls");
            const struct yt_node *a = yt_get(item, "address");
            if (!a) {
                CFG_ERR(x, item, "listen: 'address' is required");
                tls_srv_unref(tls ? tls_config_load(x, tls, "?") : NULL); /* its errors too */
                continue;
            }
            item = a;
        }
        struct listen_addr la;
        const char *bad = NULL;
        unsigned first = 0;
        if (!cfg_scalar(x, item, "listen")) {
            bad = "?";
        } else if (!netaddr_parse_listen(item->str, &la)) {
            CFG_ERR(
                x, item,
                "listen: '%s' is not an address (IPv4:PORT, [IPv6]:PORT or *:PORT, port 1..65535)",
                item->str);
            bad = item->str;
        } else {
            la.line = item->line;
            la.col = item->col;
            c->listen[c->nlisten] = la;
            first = cfg_seen_add(&seen, c->listen[c->nlisten].text, la.line);
            if (first) {
                CFG_ERR(x, item, "listen: '%s' is listed twice (first at line %u)", item->str,
                        first);
                bad = item->str;
            }
        }
        if (bad) {
            /* not a listener, but its tls: block is checked all the same */
            if (tls) tls_srv_unref(tls_config_load(x, tls, bad));
            continue;
        }
        if (tls) c->listen_tls[c->nlisten] = tls_config_load(x, tls, c->listen[c->nlisten].text);
        c->nlisten++;
    }
    free(seen.slot);
}
