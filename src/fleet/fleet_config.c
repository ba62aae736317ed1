/* The `fleet:` section (fleet_config.h). */
#include "autoconf.h"

#include "fleet/fleet_config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/config_walk.h"
#include "control/health_config.h"
#include "lib/netaddr.h"

const char *fleet_cfg_prefix(const struct fleet_cfg *f)
{
    return f->prefix;
}

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool fleet_cfg_same_client(const struct fleet_cfg *a, const struct fleet_cfg *b)
{
    if (!a || !b || a->nendpoints != b->nendpoints) return false;
    for (size_t i = 0; i < a->nendpoints; i++)
        if (strcmp(a->endpoints[i].url, b->endpoints[i].url) != 0) return false;
    return strcmp(a->instance, b->instance) == 0 && strcmp(a->prefix, b->prefix) == 0 &&
           str_eq(a->ca_file, b->ca_file) && str_eq(a->cert, b->cert) && str_eq(a->key, b->key) &&
           str_eq(a->username, b->username) && str_eq(a->password_file, b->password_file) &&
           a->timeout_ms == b->timeout_ms && a->lease_ttl_ms == b->lease_ttl_ms;
}

void fleet_cfg_free(struct fleet_cfg *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->nendpoints; i++) {
        free(f->endpoints[i].url);
        free(f->endpoints[i].host);
    }
    free(f->endpoints);
    free(f->instance);
    free(f->prefix);
    free(f->ca_file);
    free(f->cert);
    free(f->key);
    free(f->username);
    free(f->password_file);
    free(f);
}

/* http://HOST:PORT or https://HOST:PORT, nothing after (a trailing '/' is
 * allowed). */
static void load_endpoint(struct cfg_ctx *x, const struct yt_node *n, struct fleet_cfg *f)
{
    char buf[128];
    if (!cfg_scalar(x, n, "fleet endpoint")) return;
    struct url u;
    const char *err = netaddr_parse_url(n->str, false, &u);
    if (err) {
        CFG_ERR(x, n, "endpoints: '%s' %s", cfg_shown(n, buf, sizeof(buf)), err);
        return;
    }
    bool tls = strncmp(u.norm, "https://", 8) == 0;
    const char *rest = u.norm + (tls ? 8 : 7);
    if (strchr(rest, '/') || strchr(rest, '?')) {
        CFG_ERR(x, n, "endpoints: '%s' must be http(s)://HOST:PORT, without a path",
                cfg_shown(n, buf, sizeof(buf)));
    } else {
        struct fleet_endpoint *e = &f->endpoints[f->nendpoints];
        e->url = strdup(n->str);
        e->host = strdup(u.host);
        e->port = u.port;
        e->tls = tls;
        if (e->url && e->host)
            f->nendpoints++;
        else
            free(e->url), free(e->host);
    }
    free(u.norm);
}

/* "majority" or a count (checks.consensus, validated in health_config.c)
 * needs a fleet to count in. */
static void check_consensus(struct cfg_ctx *x)
{
    const struct yt_node *checks = yt_get(x->root, "checks");
    const struct yt_node *v = checks && checks->kind == YT_MAP ? yt_get(checks, "consensus") : NULL;
    if (v && !x->c->fleet && !(v->kind == YT_SCALAR && strcmp(v->str, "off") == 0))
        CFG_ERR(x, v, "checks.consensus: needs a `fleet:` section (the instances that vote)");
}

void fleet_config_load(struct cfg_ctx *x, const struct yt_node *v)
{
    static const char *const keys[] = {"instance", "etcd", NULL};
    static const char *const etcd_keys[] = {"endpoints", "prefix",   "ca_file",       "cert",
                                            "key",       "username", "password_file", "timeout",
                                            "lease_ttl", NULL};
    if (!v || cfg_is_null(v)) {
        check_consensus(x);
        return;
    }
    if (!cfg_want(x, v, YT_MAP, "fleet")) return;
    cfg_check_keys(x, v, "fleet", keys);
    struct fleet_cfg *f = calloc(1, sizeof(*f));
    if (!f) return;
    x->c->fleet = f;
    f->timeout_ms = FLEET_DEFAULT_TIMEOUT_MS;
    f->lease_ttl_ms = FLEET_DEFAULT_LEASE_TTL_MS;
    const struct yt_node *n;
    if ((n = yt_get(v, "instance"))) {
        cfg_get_name(x, n, "fleet instance", &f->instance);
    } else {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) != 0 || !host[0]) snprintf(host, sizeof(host), "x");
        /* a host name may hold what keys cannot: keep the name characters */
        for (char *p = host; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
                *p = '_';
        host[CFG_MAX_NAME_LEN] = '\0';
        f->instance = strdup(host);
    }
    const struct yt_node *e = yt_get(v, "etcd");
    if (!e) {
        CFG_ERR(x, v, "fleet: 'etcd' is required");
        check_consensus(x);
        return;
    }
    if (!cfg_want(x, e, YT_MAP, "fleet.etcd")) return;
    cfg_check_keys(x, e, "fleet.etcd", etcd_keys);
    if (!(n = yt_get(e, "endpoints"))) {
        CFG_ERR(x, e, "fleet.etcd: 'endpoints' is required");
    } else if (n->kind == YT_SCALAR) {
        f->endpoints = calloc(1, sizeof(*f->endpoints));
        if (f->endpoints) load_endpoint(x, n, f);
    } else if (cfg_want(x, n, YT_SEQ, "fleet.etcd.endpoints")) {
        if (n->len == 0 || n->len > FLEET_MAX_ENDPOINTS)
            CFG_ERR(x, n, "endpoints: from 1 to %d URLs", FLEET_MAX_ENDPOINTS);
        f->endpoints = calloc(n->len ? n->len : 1, sizeof(*f->endpoints));
        for (size_t i = 0; f->endpoints && i < n->len && i < FLEET_MAX_ENDPOINTS; i++)
            load_endpoint(x, n->u.items[i], f);
    }
    if ((n = yt_get(e, "prefix")) && cfg_get_str(x, n, "fleet.etcd.prefix", &f->prefix)) {
        size_t len = strlen(f->prefix);
        if (len == 0 || f->prefix[len - 1] != '/' || len > 256 || !cfg_text_ok(f->prefix))
            CFG_ERR(x, n, "prefix: '%s' must end in '/' (one prefix per fleet, like /detourd/)",
                    f->prefix);
    }
    if (!f->prefix) f->prefix = strdup(FLEET_DEFAULT_PREFIX);
    static const char *const files[] = {"ca_file", "cert", "key", "password_file"};
    char **dst[] = {&f->ca_file, &f->cert, &f->key, &f->password_file};
    for (size_t i = 0; i < 4; i++)
        if ((n = yt_get(e, files[i])) && cfg_get_str(x, n, files[i], dst[i]))
            cfg_file_readable(x, n, files[i], *dst[i]);
    if ((f->cert == NULL) != (f->key == NULL))
        CFG_ERR(x, e, "fleet.etcd: 'cert' and 'key' go together");
    if ((n = yt_get(e, "username"))) cfg_get_str(x, n, "fleet.etcd.username", &f->username);
    if ((f->username == NULL) != (f->password_file == NULL))
        CFG_ERR(x, e, "fleet.etcd: 'username' and 'password_file' go together");
    if ((n = yt_get(e, "timeout")))
        cfg_get_duration(x, n, "fleet.etcd.timeout", 100, 60000, &f->timeout_ms);
    if ((n = yt_get(e, "lease_ttl")))
        cfg_get_duration(x, n, "fleet.etcd.lease_ttl", 2000, CFG_MS_PER_HOUR, &f->lease_ttl_ms);
    if (f->lease_ttl_ms < 2 * f->timeout_ms && (n = yt_get(e, "lease_ttl")))
        CFG_ERR(x, n, "lease_ttl: must be at least twice the timeout (%llu ms)",
                (unsigned long long)f->timeout_ms);
    bool any_tls = false;
    for (size_t i = 0; i < f->nendpoints; i++) any_tls |= f->endpoints[i].tls;
    if (!any_tls && (f->ca_file || f->cert) && (n = yt_get(e, f->ca_file ? "ca_file" : "cert")))
        CFG_ERR(x, n, "%s: no endpoint is https", f->ca_file ? "ca_file" : "cert");
}
