/* What the ACME client publishes for the serving threads: see acme_live.h.
 *
 * The tables are small (a name per certificate, a few pending challenges
 * at a time), and lookups happen only on rare paths (a handshake for a
 * name no static certificate covers, an http-01 request, an acme-tls/1
 * handshake): a linear scan needs no index to build, and nothing on the
 * reader's side allocates or locks. */
#include "autoconf.h"

#include "serve/acme_live.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic(struct acme_live *) live;

const struct acme_live *acme_live_get(void)
{
    return atomic_load_explicit(&live, memory_order_acquire);
}

struct acme_live *acme_live_swap(struct acme_live *l)
{
    /* release: a reader that sees l sees it whole; acquire: the caller
     * frees the previous table after every write into it */
    return atomic_exchange_explicit(&live, l, memory_order_acq_rel);
}

void acme_live_free(void *p)
{
    struct acme_live *l = p;
    if (!l) return;
    for (size_t i = 0; i < l->ncerts; i++) {
        struct acme_live_cert *c = &l->certs[i];
        free(c->name);
        X509_free(c->x509);
        EVP_PKEY_free(c->key);
        sk_X509_pop_free(c->chain, X509_free);
    }
    free(l->certs);
    for (size_t i = 0; i < l->ntokens; i++) {
        free(l->tokens[i].token);
        free(l->tokens[i].keyauth);
    }
    free(l->tokens);
    for (size_t i = 0; i < l->nalpn; i++) {
        free(l->alpn[i].name);
        X509_free(l->alpn[i].x509);
        EVP_PKEY_free(l->alpn[i].key);
    }
    free(l->alpn);
    free(l);
}

/* ASCII only: a host name in a ClientHello or a Host header is never
 * subject to the locale */
static inline unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* stored (lowercase, no trailing dot) names the same host as name[0..len)
 * in any case, with or without one trailing dot */
static bool same_name(const char *stored, const char *name, size_t len)
{
    if (len && name[len - 1] == '.') len--;
    if (!stored || len == 0) return false;
    size_t i = 0;
    for (; i < len; i++)
        if (!stored[i] || (unsigned char)stored[i] != lower((unsigned char)name[i])) return false;
    return stored[i] == '\0';
}

const struct acme_live_cert *acme_live_cert(const struct acme_live *l, const char *name, size_t len)
{
    if (!l || !name) return NULL;
    for (size_t i = 0; i < l->ncerts; i++)
        if (same_name(l->certs[i].name, name, len)) return &l->certs[i];
    return NULL;
}

const struct acme_live_token *acme_live_token(const struct acme_live *l, const char *token,
                                              size_t len)
{
    if (!l || !token || len == 0) return NULL;
    /* tokens are base64url: compared byte for byte */
    for (size_t i = 0; i < l->ntokens; i++) {
        const struct acme_live_token *t = &l->tokens[i];
        if (t->token_len == len && memcmp(t->token, token, len) == 0) return t;
    }
    return NULL;
}

const struct acme_live_alpn *acme_live_alpn(const struct acme_live *l, const char *name, size_t len)
{
    if (!l || !name) return NULL;
    for (size_t i = 0; i < l->nalpn; i++)
        if (same_name(l->alpn[i].name, name, len)) return &l->alpn[i];
    return NULL;
}

const struct acme_live_token *acme_live_http01(const struct acme_live *l, const char *path,
                                               size_t len)
{
    if (!l || !l->ntokens || len <= ACME_CHALLENGE_PREFIX_LEN ||
        memcmp(path, ACME_CHALLENGE_PREFIX, ACME_CHALLENGE_PREFIX_LEN) != 0)
        return NULL;
    const char *tok = path + ACME_CHALLENGE_PREFIX_LEN;
    size_t n = len - ACME_CHALLENGE_PREFIX_LEN;
    const char *q = memchr(tok, '?', n);
    if (q) n = (size_t)(q - tok);
    return acme_live_token(l, tok, n);
}
