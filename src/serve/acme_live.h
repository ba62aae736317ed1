/* What the ACME client (control/acme.c) publishes for the serving threads:
 * its certificates by name, and the pending challenges (http-01 tokens and
 * their key authorizations, tls-alpn-01 challenge certificates by name).
 *
 * One immutable table behind one process-wide atomic pointer. The control
 * plane builds a whole new table at every change, publishes it with
 * acme_live_swap() and frees the old one after a worker barrier
 * (server_retire): a worker may use what it loaded until it returns to its
 * event loop. Readers (worker threads, in handshake callbacks and in the
 * request path) take no lock and allocate nothing.
 *
 * Names are stored lowercase, without a trailing dot; lookups take a name
 * in any case, with or without its trailing dot. */
#ifndef DETOURD_ACME_LIVE_H
#define DETOURD_ACME_LIVE_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

/* A certificate the ACME client holds for name (the key and chain are the
 * table's: one reference each). */
struct acme_live_cert {
    char *name;
    X509 *x509;
    EVP_PKEY *key;
    STACK_OF(X509) * chain; /* may be NULL */
};

/* A pending http-01 challenge: GET /.well-known/acme-challenge/TOKEN is
 * answered with keyauth. */
struct acme_live_token {
    char *token;
    size_t token_len;
    char *keyauth;
    size_t keyauth_len;
};

/* A pending tls-alpn-01 challenge: a handshake for name offering ALPN
 * acme-tls/1 gets this certificate. */
struct acme_live_alpn {
    char *name;
    X509 *x509;
    EVP_PKEY *key;
};

struct acme_live {
    struct acme_live_cert *certs;
    size_t ncerts;
    struct acme_live_token *tokens;
    size_t ntokens;
    struct acme_live_alpn *alpn;
    size_t nalpn;
};

/* The published table (acquire), or NULL before the first. Any thread. */
const struct acme_live *acme_live_get(void);
/* Publishes l (NULL: none) and returns the previous table, which the caller
 * retires (frees after a barrier). Control thread. */
struct acme_live *acme_live_swap(struct acme_live *l);
/* Frees a table and what it references (for server_retire). */
void acme_live_free(void *l);

/* Lookups; NULL when absent (or l NULL). */
const struct acme_live_cert *acme_live_cert(const struct acme_live *l, const char *name,
                                            size_t len);
const struct acme_live_token *acme_live_token(const struct acme_live *l, const char *token,
                                              size_t len);
const struct acme_live_alpn *acme_live_alpn(const struct acme_live *l, const char *name,
                                            size_t len);

/* The http-01 path prefix */
#define ACME_CHALLENGE_PREFIX     "/.well-known/acme-challenge/"
#define ACME_CHALLENGE_PREFIX_LEN (sizeof(ACME_CHALLENGE_PREFIX) - 1)

/* The tls-alpn-01 protocol name (RFC 8737 6.2) */
#define ACME_TLS_ALPN     "acme-tls/1"
#define ACME_TLS_ALPN_LEN (sizeof(ACME_TLS_ALPN) - 1)

/* The pending http-01 token of a request path (origin-form: the path and
 * query as sent): the part after ACME_CHALLENGE_PREFIX up to a '?', looked
 * up in l; NULL when path is not a challenge or the token is not pending. */
const struct acme_live_token *acme_live_http01(const struct acme_live *l, const char *path,
                                               size_t len);

#endif
