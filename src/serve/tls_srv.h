/* The inside of a listener's TLS settings (struct tls_srv): what the
 * handshake callbacks of serve/tls.c read on worker threads, filled once at
 * load by control/tls_config.c and never changed after. Only those two
 * files include this; everyone else holds an opaque struct tls_srv. */
#ifndef DETOURD_TLS_SRV_H
#define DETOURD_TLS_SRV_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "serve/tls.h"

/* One session-ticket key: nginx's 80-byte record (16 name, 32 HMAC secret,
 * 32 AES key). */
#define TLS_TICKET_KEY_BYTES 80
#define TLS_MAX_TICKET_KEYS  64
struct tkey {
    unsigned char name[16], hmac[32], aes[32];
};

/* one certificate file and its key */
struct tls_cert {
    char *file;
    X509 *x509;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    char **names;
    size_t nnames;
    time_t not_before, not_after;
    bool rsa;
    bool ok;     /* loaded and its key matches */
    size_t conf; /* its index in the config's list */
};

/* what a name selects: the ECDSA (or other non-RSA) and the RSA certificate */
struct tls_pair {
    const struct tls_cert *c[2];
};

struct sni_slot {
    const char *name; /* lowercase; a wildcard without its "*." */
    bool wild;
    struct tls_pair pair;
};

/* The handshake counts of one listener address (for the process's life),
 * and the rate limit of its failure log lines: the second (coarse
 * monotonic clock) in the high bits, the failures seen in that second in
 * the low TLS_LOG_COUNT_BITS, updated with compare-and-swap by every
 * worker. */
#define TLS_LOG_COUNT_BITS 20
struct tls_stats {
    struct tls_stats *next;
    char *listener;
    _Atomic uint64_t full, resumed, failed;
    _Atomic uint64_t fail[TLS_FAIL_N];
    _Atomic uint64_t log_state;
};

struct tls_srv {
    SSL_CTX *ctx;
    char *listener;
    struct tls_stats *stats;
    struct tls_cert *certs;
    size_t ncerts;
    struct sni_slot *tab; /* tls_sni_build() */
    size_t mask;
    struct tls_pair def;
    bool reject_unknown;
    struct tkey *keys; /* from ticket_keys; NULL: the process's keys */
    size_t nkeys;
    struct chunk hsts; /* "Strict-Transport-Security: ...\r\n", or empty */
    /* tls.acme: names whose certificates the ACME client obtains
     * (lowercase, no trailing dot, in the order written). A handshake for
     * one of them that no static certificate covers takes the ACME
     * certificate (serve/acme_live.h), or fails while there is none. */
    char **acme_names;
    size_t nacme;
};

/* False if the process-wide TLS state (ticket cipher, the socket BIO)
 * could not be made: no listener can serve TLS. */
bool tls_ready(void);
/* The counts of listener, made at its first context (thread-safe: the
 * loader appends while the admin listener walks). NULL on OOM. */
struct tls_stats *tls_stats_for(const char *listener);
/* The SNI table of t's certificates (the first listed of a name wins;
 * t->def: the first certificate's, none without certificates). False on
 * OOM. */
bool tls_sni_build(struct tls_srv *t);
/* The static certificate name (lowercase, no trailing dot) selects, or
 * NULL (after tls_sni_build). */
const struct tls_cert *tls_sni_static(const struct tls_srv *t, const char *name);
/* Sets what a handshake on t->ctx runs (the SNI, ALPN and ticket
 * callbacks, records read ahead, buffers released when idle) and hands t
 * to its context: from then on t is freed with the context's last
 * reference. False on OOM (t is then still the caller's). */
bool tls_srv_arm(struct tls_srv *t, bool tickets);
/* Frees t and its certificates (not t->ctx). */
void tls_srv_free(struct tls_srv *t);

#endif
