/* The `acme:` section (acme_config.h). */
#include "autoconf.h"

#include "control/acme_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "control/config_walk.h"
#include "control/tls_config.h"
#include "fleet/fleet_config.h"
#include "lib/netaddr.h"

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool acme_cfg_same_account(const struct acme_cfg *a, const struct acme_cfg *b)
{
    if (!a || !b || a->ncontact != b->ncontact) return false;
    for (size_t i = 0; i < a->ncontact; i++)
        if (strcmp(a->contact[i], b->contact[i]) != 0) return false;
    return strcmp(a->directory, b->directory) == 0 && str_eq(a->ca_file, b->ca_file) &&
           str_eq(a->eab_kid, b->eab_kid) && str_eq(a->eab_hmac_file, b->eab_hmac_file) &&
           strcmp(a->storage, b->storage) == 0;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void acme_cfg_free(struct acme_cfg *a)
{
    if (!a) return;
    free(a->directory);
    free_list(a->contact, a->ncontact);
    free(a->ca_file);
    free(a->eab_kid);
    free(a->eab_hmac_file);
    free(a->storage);
    free_list(a->names, a->nnames);
    free(a);
}

/* Every listener's `tls.acme` names, each once, in the order written. */
static size_t gather_names(const struct config *c, char ***out)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i < c->nlisten; i++) {
        size_t k = 0;
        if (c->listen_tls[i]) tls_srv_acme_names(c->listen_tls[i], &k);
        total += k;
    }
    char **v = total ? calloc(total, sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < c->nlisten; i++) {
        size_t k = 0;
        const char *const *names =
            c->listen_tls[i] ? tls_srv_acme_names(c->listen_tls[i], &k) : NULL;
        for (size_t j = 0; j < k; j++) {
            size_t m = 0;
            while (m < n && strcmp(v[m], names[j]) != 0) m++;
            if (m == n && (v[n] = strdup(names[j]))) n++;
        }
    }
    *out = v;
    return n;
}

static bool has_plain_listener(const struct config *c)
{
    for (size_t i = 0; i < c->nlisten; i++)
        if (!c->listen_tls[i]) return true;
    return false;
}

/* Where the ACME files go when `storage` is not set: beside the state
 * file, else in systemd's StateDirectory=, else the package's. */
static char *default_storage(const struct config *c)
{
    char buf[4096];
    const char *sd = getenv("STATE_DIRECTORY");
    if (c->state_file) {
        const char *slash = strrchr(c->state_file, '/');
        int len = slash ? (int)(slash - c->state_file) : 0;
        snprintf(buf, sizeof(buf), "%.*s/acme", len, c->state_file);
    } else if (sd && sd[0] == '/') {
        size_t len = strcspn(sd, ":"); /* the first of several */
        snprintf(buf, sizeof(buf), "%.*s/acme", (int)len, sd);
    } else {
        snprintf(buf, sizeof(buf), "%s/acme", ACME_DEFAULT_STATE_DIR);
    }
    return strdup(buf);
}

/* storage must be a directory detourd can write, or one it can create. */
static void check_storage(struct cfg_ctx *x, const struct yt_node *n, const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            CFG_ERR(x, n, "acme.storage: '%s' is not a directory", dir);
        else if (access(dir, W_OK | X_OK) != 0)
            CFG_ERR(x, n, "acme.storage: '%s' is not writable (%s)", dir, strerror(errno));
        return;
    }
    if (errno != ENOENT) {
        CFG_ERR(x, n, "acme.storage: '%s': %s", dir, strerror(errno));
        return;
    }
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dir);
    size_t len = strlen(parent);
    while (len > 1 && parent[len - 1] == '/') parent[--len] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    if (access(parent, W_OK | X_OK) != 0)
        CFG_ERR(x, n, "acme.storage: '%s' does not exist and cannot be created in '%s' (%s)", dir,
                parent, strerror(errno));
}

static void load_contact(struct cfg_ctx *x, const struct yt_node *n, struct acme_cfg *a)
{
    const struct yt_node *one[1] = {n};
    const struct yt_node *const *items = one;
    size_t count = 1;
    if (n->kind == YT_SEQ) {
        items = (const struct yt_node *const *)n->u.items;
        count = n->len;
    } else if (!cfg_scalar(x, n, "acme.contact")) {
        return;
    }
    if (count > 16) {
        CFG_ERR(x, n, "acme.contact: at most 16 URIs");
        return;
    }
    a->contact = calloc(count ? count : 1, sizeof(*a->contact));
    for (size_t i = 0; a->contact && i < count; i++) {
        char *s = NULL;
        if (!cfg_get_str(x, items[i], "acme.contact", &s)) continue;
        if (strncmp(s, "mailto:", 7) != 0 || !s[7] || !strchr(s + 7, '@') || strchr(s, ',') ||
            !cfg_text_ok(s)) {
            CFG_ERR(x, items[i], "acme.contact: '%s' must be a mailto: URI with one address", s);
            free(s);
            continue;
        }
        a->contact[a->ncontact++] = s;
    }
}

static void load_challenges(struct cfg_ctx *x, const struct yt_node *n, struct acme_cfg *a,
                            bool plain)
{
    if (!cfg_want(x, n, YT_SEQ, "acme.challenges")) return;
    a->http01 = a->tlsalpn01 = false;
    if (n->len == 0) CFG_ERR(x, n, "acme.challenges: name at least one (http-01, tls-alpn-01)");
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        if (!cfg_scalar(x, v, "acme.challenges")) continue;
        bool *slot = strcmp(v->str, "http-01") == 0       ? &a->http01
                     : strcmp(v->str, "tls-alpn-01") == 0 ? &a->tlsalpn01
                                                          : NULL;
        if (!slot) {
            char buf[64];
            CFG_ERR(x, v, "acme.challenges: '%s' is not http-01 or tls-alpn-01",
                    cfg_shown(v, buf, sizeof(buf)));
        } else if (*slot) {
            CFG_ERR(x, v, "acme.challenges: '%s' is listed twice", v->str);
        } else {
            *slot = true;
            if (slot == &a->tlsalpn01 && !a->http01) a->prefer_alpn = true;
        }
    }
    if (a->http01 && !a->tlsalpn01 && !plain)
        CFG_ERR(x, n, "acme.challenges: http-01 needs a plain (non-TLS) listener to answer on");
}

static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(host, "localhost")) return true;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* In a fleet the etcd prefix holds the certificates' private keys: etcd
 * must be reached over TLS and with authentication (a client certificate
 * or a user), unless it listens on this host's loopback only. */
static void check_fleet(struct cfg_ctx *x, const struct yt_node *v, const struct fleet_cfg *f)
{
    if (!f) return;
    bool auth = f->username || f->cert;
    for (size_t i = 0; i < f->nendpoints; i++) {
        const struct fleet_endpoint *e = &f->endpoints[i];
        if (is_loopback(e->host)) continue;
        if (!e->tls || !auth) {
            CFG_ERR(x, v,
                    "acme: with `fleet:` the certificates' private keys are kept in etcd under "
                    "%sacme/: the endpoint %s needs https and authentication (fleet.etcd.cert "
                    "and key, or username and password_file)",
                    f->prefix ? f->prefix : "PREFIX/", e->url);
            return;
        }
    }
}

void acme_config_load(struct cfg_ctx *x, const struct yt_node *v)
{
    static const char *const keys[] = {"directory", "contact",  "accept_terms",
                                       "ca_file",   "key_type", "challenges",
                                       "eab",       "storage",  NULL};
    struct config *c = x->c;
    char **names = NULL;
    size_t nnames = gather_names(c, &names);
    if (!v || cfg_is_null(v)) {
        if (nnames) {
            const struct yt_node *l = yt_get(x->root, "listen");
            CFG_ERR(x, l ? l : x->root,
                    "listen: tls.acme names '%s'%s but there is no `acme:` section (the ACME "
                    "server, contact and accept_terms)",
                    names[0], nnames > 1 ? " and more" : "");
        }
        free_list(names, nnames);
        return;
    }
    if (!cfg_want(x, v, YT_MAP, "acme")) {
        free_list(names, nnames);
        return;
    }
    cfg_check_keys(x, v, "acme", keys);
    struct acme_cfg *a = calloc(1, sizeof(*a));
    if (!a) {
        free_list(names, nnames);
        return;
    }
    c->acme = a;
    a->names = names;
    a->nnames = nnames;
    a->key_type = ACME_KEY_EC256;
    a->http01 = a->tlsalpn01 = true;
    if (nnames > ACME_MAX_NAMES)
        CFG_ERR(x, v, "acme: at most %d names over all listeners (%zu)", ACME_MAX_NAMES, nnames);
    const struct yt_node *n;
    if (!(n = yt_get(v, "directory"))) {
        CFG_ERR(x, v, "acme: 'directory' is required (the ACME server's directory URL)");
    } else if (cfg_get_str(x, n, "acme.directory", &a->directory)) {
        struct url u;
        const char *err = netaddr_parse_url(a->directory, true, &u);
        if (err)
            CFG_ERR(x, n, "acme.directory: '%s' %s", a->directory, err);
        else if (strncmp(u.norm, "https://", 8) != 0)
            CFG_ERR(x, n, "acme.directory: '%s' must be an https:// URL (RFC 8555 6.1)",
                    a->directory);
        if (!err) free(u.norm);
    }
    if ((n = yt_get(v, "contact"))) load_contact(x, n, a);
    bool terms = false;
    if (!(n = yt_get(v, "accept_terms")))
        CFG_ERR(x, v,
                "acme: 'accept_terms: true' is required (the ACME server's terms of service)");
    else if (cfg_get_bool(x, n, "acme.accept_terms", &terms) && !terms)
        CFG_ERR(x, n, "acme.accept_terms: must be true: no account without the server's terms");
    if ((n = yt_get(v, "ca_file")) && cfg_get_str(x, n, "acme.ca_file", &a->ca_file))
        cfg_file_readable(x, n, "acme.ca_file", a->ca_file);
    if ((n = yt_get(v, "key_type"))) {
        static const char *const kinds[] = {"ecdsa-p256", "rsa-2048", NULL};
        int k;
        if (cfg_get_enum(x, n, "acme.key_type", kinds, &k))
            a->key_type = k == 0 ? ACME_KEY_EC256 : ACME_KEY_RSA2048;
    }
    bool plain = has_plain_listener(c);
    if ((n = yt_get(v, "challenges"))) load_challenges(x, n, a, plain);
    if (!plain) a->http01 = false; /* nothing can answer it */
    if ((n = yt_get(v, "eab")) && cfg_want(x, n, YT_MAP, "acme.eab")) {
        static const char *const eab_keys[] = {"kid", "hmac_key_file", NULL};
        cfg_check_keys(x, n, "acme.eab", eab_keys);
        const struct yt_node *k = yt_get(n, "kid"), *f = yt_get(n, "hmac_key_file");
        if (!k || !f) CFG_ERR(x, n, "acme.eab: 'kid' and 'hmac_key_file' go together");
        if (k) cfg_get_str(x, k, "acme.eab.kid", &a->eab_kid);
        if (f && cfg_get_str(x, f, "acme.eab.hmac_key_file", &a->eab_hmac_file))
            cfg_file_readable(x, f, "acme.eab.hmac_key_file", a->eab_hmac_file);
    }
    if ((n = yt_get(v, "storage"))) {
        if (cfg_get_str(x, n, "acme.storage", &a->storage)) {
            if (!a->storage[0]) CFG_ERR(x, n, "acme.storage: must not be empty");
            check_storage(x, n, a->storage);
        }
    } else {
        a->storage = default_storage(c);
        if (a->storage) check_storage(x, v, a->storage);
    }
    if (!a->storage) a->storage = strdup("acme");
    check_fleet(x, v, c->fleet);
}
