/* TLS on the redirect listeners: see tls.h. */
#include "autoconf.h"

#include "serve/tls.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/hash.h"
#include "lib/log.h"

/* Mozilla's "intermediate" TLS 1.2 list */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

#define TICKET_KEY_BYTES 80 /* nginx's format: 16 name, 32 HMAC secret, 32 AES key */

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

struct tls_stats {
    struct tls_stats *next;
    char *listener;
    _Atomic uint64_t full, resumed, failed;
    _Atomic uint64_t fail[TLS_FAIL_N];
};

struct tls_srv {
    SSL_CTX *ctx;
    char *listener;
    struct tls_stats *stats;
    struct tls_cert *certs;
    size_t ncerts;
    struct sni_slot *tab;
    size_t mask;
    struct tls_pair def;
    bool reject_unknown;
    struct tkey *keys; /* from ticket_keys; NULL: the process's keys */
    size_t nkeys;
};

/* ---- process-wide state ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ctx_idx = -1;
static EVP_CIPHER *ticket_cipher;
static struct tls_stats *stats_list; /* grows in the main thread only */

/* The process's ticket keys: a ring of three, so the slot being written is
 * one no handshake reads (current and previous are the other two). */
static struct tkey own_keys[3];
static _Atomic unsigned own_gen;

static void srv_free(struct tls_srv *t);

/* ---- the socket under OpenSSL ----
 * A BIO of our own instead of OpenSSL's socket BIO: reads tell whether they
 * drained the socket (a short read), so that a connection on an
 * edge-triggered event can stop reading without one more recv() that only
 * says EAGAIN; writes use send() with MSG_NOSIGNAL. */

static BIO_METHOD *sock_method;
static _Thread_local bool sock_drained; /* the last read emptied the socket */

static int sock_read(BIO *b, char *buf, size_t len, size_t *got)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t n;
    BIO_clear_retry_flags(b);
    while ((n = recv(fd, buf, len, 0)) < 0 && errno == EINTR) continue;
    sock_drained = n < (ssize_t)len;
    if (n > 0) {
        *got = (size_t)n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    *got = 0;
    return n == 0 ? 0 : -1;
}

static int sock_write(BIO *b, const char *buf, size_t len, size_t *done)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t n;
    BIO_clear_retry_flags(b);
    while ((n = send(fd, buf, len, MSG_NOSIGNAL)) < 0 && errno == EINTR) continue;
    if (n >= 0) {
        *done = (size_t)n;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    *done = 0;
    return -1;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *sock_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "detourd socket");
    if (m && (!BIO_meth_set_read_ex(m, sock_read) || !BIO_meth_set_write_ex(m, sock_write) ||
              !BIO_meth_set_ctrl(m, sock_ctrl))) {
        BIO_meth_free(m);
        m = NULL;
    }
    return m;
}

static void ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr) srv_free(ptr);
}

static bool new_key(struct tkey *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->hmac, sizeof(k->hmac)) == 1 &&
           RAND_bytes(k->aes, sizeof(k->aes)) == 1;
}

static void init_once(void)
{
    ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_data_free);
    ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    sock_method = sock_method_new();
    if (!new_key(&own_keys[0])) log_error("TLS: cannot make a session ticket key");
}

void tls_rotate_ticket_key(void)
{
    pthread_once(&once, init_once);
    unsigned g = atomic_load(&own_gen);
    if (!new_key(&own_keys[(g + 1) % 3])) {
        log_error("TLS: cannot make a new session ticket key; keeping the current one");
        return;
    }
    atomic_store(&own_gen, g + 1);
    log_info("TLS: session ticket key rotated");
}

/* ---- messages ---- */

/* OpenSSL's reason for the last error (and the queue cleared). */
static const char *ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        snprintf(buf, len, "OpenSSL error %lx", e);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
    return buf;
}

#define AT(d, pos, ...) diag_add((d), (pos).line, (pos).col, __VA_ARGS__)

/* ---- configuration ---- */

void tls_conf_free(struct tls_conf *tc)
{
    if (!tc) return;
    for (size_t i = 0; i < tc->ncerts; i++) {
        free(tc->certs[i].cert);
        free(tc->certs[i].key);
    }
    free(tc->certs);
    free(tc->ciphers);
    free(tc->ciphersuites);
    free(tc->ticket_keys);
    free(tc);
}

static void cert_free(struct tls_cert *c)
{
    free(c->file);
    X509_free(c->x509);
    EVP_PKEY_free(c->key);
    sk_X509_pop_free(c->chain, X509_free);
    for (size_t i = 0; i < c->nnames; i++) free(c->names[i]);
    free(c->names);
}

static void srv_free(struct tls_srv *t)
{
    for (size_t i = 0; i < t->ncerts; i++) cert_free(&t->certs[i]);
    free(t->certs);
    free(t->tab);
    free(t->keys);
    free(t->listener);
    free(t);
}

static FILE *open_file(const char *path, struct diag *d, struct tls_pos pos, const char *what)
{
    FILE *f = fopen(path, "rb");
    if (!f) AT(d, pos, "%s: cannot open %s: %s", what, path, strerror(errno));
    return f;
}

static time_t asn1_time(const ASN1_TIME *a)
{
    struct tm tm;
    if (!a || ASN1_TIME_to_tm(a, &tm) != 1) return 0;
    return timegm(&tm);
}

static bool add_name(struct tls_cert *c, const unsigned char *s, int len)
{
    if (len <= 0 || len > 253 || memchr(s, '\0', (size_t)len)) return true; /* not a host name */
    char **v = realloc(c->names, (c->nnames + 1) * sizeof(*v));
    if (!v) return false;
    c->names = v;
    char *n = malloc((size_t)len + 1);
    if (!n) return false;
    for (int i = 0; i < len; i++) n[i] = (char)tolower(s[i]);
    n[len] = '\0';
    c->names[c->nnames++] = n;
    return true;
}

/* The DNS names of the subjectAltName, or the CN when there are none. */
static bool cert_names(struct tls_cert *c)
{
    GENERAL_NAMES *san = X509_get_ext_d2i(c->x509, NID_subject_alt_name, NULL, NULL);
    bool ok = true;
    for (int i = 0; san && ok && i < sk_GENERAL_NAME_num(san); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
        if (g->type == GEN_DNS)
            ok = add_name(c, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(san);
    if (!ok || c->nnames) return ok;
    const X509_NAME *sub = X509_get_subject_name(c->x509);
    int i = sub ? X509_NAME_get_index_by_NID(sub, NID_commonName, -1) : -1;
    if (i < 0) return true;
    const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(sub, i));
    return add_name(c, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
}

static int no_password(char *buf, int size, int rw, void *u)
{
    (void)buf, (void)size, (void)rw, (void)u;
    return -1;
}

static bool load_cert(struct tls_cert *c, const struct tls_cert_conf *cc, struct diag *d,
                      const char *what)
{
    char why[256];
    bool ok = true;
    c->file = strdup(cc->cert);
    if (!c->file) return false;
    FILE *f = open_file(cc->cert, d, cc->cert_pos, what);
    if (f) {
        ERR_clear_error();
        c->x509 = PEM_read_X509(f, NULL, no_password, NULL);
        if (!c->x509) {
            AT(d, cc->cert_pos, "%s: %s holds no PEM certificate: %s", what, cc->cert,
               ossl_reason(why, sizeof(why)));
            ok = false;
        } else {
            c->chain = sk_X509_new_null();
            X509 *x;
            while (c->chain && (x = PEM_read_X509(f, NULL, no_password, NULL)))
                if (!sk_X509_push(c->chain, x)) X509_free(x);
            unsigned long e = ERR_peek_last_error();
            if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                AT(d, cc->cert_pos, "%s: %s: a chain certificate cannot be read: %s", what,
                   cc->cert, ossl_reason(why, sizeof(why)));
                ok = false;
            }
            ERR_clear_error();
        }
        fclose(f);
    } else {
        ok = false;
    }
    f = open_file(cc->key, d, cc->key_pos, what);
    if (f) {
        c->key = PEM_read_PrivateKey(f, NULL, no_password, NULL);
        fclose(f);
        if (!c->key) {
            AT(d, cc->key_pos,
               "%s: %s holds no usable PEM private key (it must not be encrypted): %s", what,
               cc->key, ossl_reason(why, sizeof(why)));
            ok = false;
        }
    } else {
        ok = false;
    }
    if (!ok) return true; /* reported */
    if (X509_check_private_key(c->x509, c->key) != 1) {
        AT(d, cc->key_pos, "%s: %s does not match the certificate %s: %s", what, cc->key, cc->cert,
           ossl_reason(why, sizeof(why)));
        return true;
    }
    c->ok = true;
    c->rsa = EVP_PKEY_get_base_id(c->key) == EVP_PKEY_RSA ||
             EVP_PKEY_get_base_id(c->key) == EVP_PKEY_RSA_PSS;
    c->not_before = asn1_time(X509_get0_notBefore(c->x509));
    c->not_after = asn1_time(X509_get0_notAfter(c->x509));
    return cert_names(c);
}

/* nginx's ticket key file: 80-byte records, the first encrypts */
static bool load_ticket_keys(struct tls_srv *t, const struct tls_conf *tc, struct diag *d)
{
    FILE *f = open_file(tc->ticket_keys, d, tc->ticket_keys_pos, "tls.ticket_keys");
    if (!f) return true;
    unsigned char buf[TICKET_KEY_BYTES * 64 + 1];
    size_t n = fread(buf, 1, sizeof(buf), f);
    bool err = ferror(f);
    fclose(f);
    if (err) {
        AT(d, tc->ticket_keys_pos, "tls.ticket_keys: cannot read %s: %s", tc->ticket_keys,
           strerror(errno));
    } else if (n == 0 || n % TICKET_KEY_BYTES || n > TICKET_KEY_BYTES * 64) {
        AT(d, tc->ticket_keys_pos,
           "tls.ticket_keys: %s holds %zu%s bytes: it must hold 1 to 64 keys of %d bytes each "
           "(e.g. made with: openssl rand %d)",
           tc->ticket_keys, n, n > TICKET_KEY_BYTES * 64 ? " or more" : "", TICKET_KEY_BYTES,
           TICKET_KEY_BYTES);
    } else {
        t->nkeys = n / TICKET_KEY_BYTES;
        t->keys = calloc(t->nkeys, sizeof(*t->keys));
        if (!t->keys) return false;
        for (size_t i = 0; i < t->nkeys; i++) {
            const unsigned char *r = buf + i * TICKET_KEY_BYTES;
            memcpy(t->keys[i].name, r, 16);
            memcpy(t->keys[i].hmac, r + 16, 32);
            memcpy(t->keys[i].aes, r + 48, 32);
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return true;
}

/* ---- SNI table ---- */

static struct sni_slot *sni_slot(struct sni_slot *tab, size_t mask, const char *name, size_t len,
                                 bool wild)
{
    size_t i = (size_t)(fnv1a64(name, len) ^ wild) & mask;
    while (tab[i].name &&
           (tab[i].wild != wild || strncmp(tab[i].name, name, len) || tab[i].name[len]))
        i = (i + 1) & mask;
    return &tab[i];
}

static bool sni_build(struct tls_srv *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->ncerts; i++) n += t->certs[i].nnames;
    size_t size = 16;
    while (size < 2 * n + 2) size *= 2;
    t->tab = calloc(size, sizeof(*t->tab));
    if (!t->tab) return false;
    t->mask = size - 1;
    for (size_t i = 0; i < t->ncerts; i++) {
        const struct tls_cert *c = &t->certs[i];
        for (size_t k = 0; k < c->nnames; k++) {
            const char *name = c->names[k];
            bool wild = name[0] == '*' && name[1] == '.';
            if (wild) name += 2;
            struct sni_slot *s = sni_slot(t->tab, t->mask, name, strlen(name), wild);
            s->name = name;
            s->wild = wild;
            if (!s->pair.c[c->rsa]) s->pair.c[c->rsa] = c; /* the first listed wins */
        }
    }
    const struct tls_cert *first = &t->certs[0];
    if (first->nnames) {
        const char *name = first->names[0];
        bool wild = name[0] == '*' && name[1] == '.';
        if (wild) name += 2;
        t->def = sni_slot(t->tab, t->mask, name, strlen(name), wild)->pair;
    } else {
        t->def.c[first->rsa] = first;
    }
    return true;
}

/* An exact name first, then a wildcard covering its first label. */
static const struct tls_pair *sni_find(const struct tls_srv *t, const char *name)
{
    char low[256];
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof(low)) return NULL;
    if (name[len - 1] == '.') len--; /* a trailing dot names the same host */
    for (size_t i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[len] = '\0';
    const struct sni_slot *s = sni_slot(t->tab, t->mask, low, len, false);
    if (s->name) return &s->pair;
    const char *dot = memchr(low, '.', len);
    if (!dot || dot == low) return NULL;
    s = sni_slot(t->tab, t->mask, dot + 1, len - (size_t)(dot + 1 - low), true);
    return s->name ? &s->pair : NULL;
}

/* ---- per-connection state: bits in the SSL's app data ---- */

enum {
    TS_PEEKED = 1,     /* a first byte arrived */
    TS_DONE = 2,       /* handshake finished (and counted) */
    TS_FAILED = 4,     /* handshake failure counted */
    TS_SNI_REJECT = 8, /* refused for its server name */
};

static uintptr_t st_get(const SSL *ssl)
{
    return (uintptr_t)SSL_get_app_data(ssl);
}

static void st_set(SSL *ssl, uintptr_t bits)
{
    SSL_set_app_data(ssl, (void *)(st_get(ssl) | bits));
}

static struct tls_srv *srv_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx);
}

static void count_fail(SSL *ssl, enum tls_fail why)
{
    struct tls_stats *s = srv_of(ssl)->stats;
    atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->fail[why], 1, memory_order_relaxed);
    st_set(ssl, TS_FAILED);
}

/* ---- OpenSSL callbacks ---- */

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_srv *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_pair *p = name ? sni_find(t, name) : NULL;
    if (!p) {
        if (!t->reject_unknown) return SSL_TLSEXT_ERR_OK; /* the default certificate */
        st_set(ssl, TS_SNI_REJECT);
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (p->c[0] == t->def.c[0] && p->c[1] == t->def.c[1]) return SSL_TLSEXT_ERR_OK;
    SSL_certs_clear(ssl);
    for (int i = 0; i < 2; i++) {
        const struct tls_cert *c = p->c[i];
        if (c && SSL_use_cert_and_key(ssl, c->x509, c->key, c->chain, 1) != 1) {
            ERR_clear_error();
            *alert = SSL_AD_INTERNAL_ERROR;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl, (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static bool ticket_mac(EVP_MAC_CTX *h, const struct tkey *k)
{
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(h, p) == 1;
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *c,
                     EVP_MAC_CTX *h, int enc)
{
    const struct tls_srv *t = srv_of(ssl);
    const struct tkey *keys[64] = {NULL};
    size_t n = 0;
    if (t->keys) {
        for (; n < t->nkeys; n++) keys[n] = &t->keys[n];
    } else {
        unsigned g = atomic_load_explicit(&own_gen, memory_order_acquire);
        keys[n++] = &own_keys[g % 3];
        if (g) keys[n++] = &own_keys[(g + 2) % 3];
    }
    if (enc) {
        const struct tkey *k = keys[0];
        if (RAND_bytes(iv, 16) != 1) return -1;
        memcpy(name, k->name, 16);
        if (EVP_EncryptInit_ex(c, ticket_cipher, NULL, k->aes, iv) != 1 || !ticket_mac(h, k))
            return -1;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (memcmp(name, keys[i]->name, 16)) continue;
        if (EVP_DecryptInit_ex(c, ticket_cipher, NULL, keys[i]->aes, iv) != 1 ||
            !ticket_mac(h, keys[i]))
            return -1;
        /* 2: send a fresh ticket: when a newer key encrypts, and after
         * every TLS 1.3 resumption (clients use a ticket once, RFC 8446
         * appendix C.4; without a new one every other handshake is full) */
        return i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
    }
    return 0; /* unknown key: a full handshake */
}

/* ---- the listener's context ---- */

static struct tls_stats *stats_for(const char *listener)
{
    for (struct tls_stats *s = stats_list; s; s = s->next)
        if (strcmp(s->listener, listener) == 0) return s;
    struct tls_stats *s = calloc(1, sizeof(*s));
    if (!s || !(s->listener = strdup(listener))) {
        free(s);
        return NULL;
    }
    s->next = stats_list;
    stats_list = s;
    return s;
}

/* Every certificate as a handshake will hand it to OpenSSL (key size,
 * security level), on a scratch context: a refusal is a config error at
 * that certificate, not a failure of every handshake for its names. */
static bool check_certs(const struct tls_srv *t, const struct tls_conf *tc, struct diag *d)
{
    SSL_CTX *probe = SSL_CTX_new(TLS_server_method());
    if (!probe) return false;
    char why[256];
    for (size_t i = 0; i < t->ncerts; i++) {
        const struct tls_cert *c = &t->certs[i];
        if (!c->ok || SSL_CTX_use_cert_and_key(probe, c->x509, c->key, c->chain, 1) == 1) continue;
        const struct tls_cert_conf *cc = &tc->certs[c->conf];
        AT(d, cc->cert_pos, "tls.certificates[%zu]: OpenSSL refuses %s: %s", cc->index, cc->cert,
           ossl_reason(why, sizeof(why)));
    }
    SSL_CTX_free(probe);
    return true;
}

/* Sessions resume only where the same certificates serve: the session
 * context is a digest of them (so a fleet with the same certificates and
 * ticket_keys resumes across instances, another listener does not). */
static bool set_sid_ctx(SSL_CTX *ctx, const struct tls_srv *t)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE], one[EVP_MAX_MD_SIZE];
    unsigned int n = 0, k;
    bool ok = m && EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < t->ncerts; i++)
        ok = X509_digest(t->certs[i].x509, EVP_sha256(), one, &k) == 1 &&
             EVP_DigestUpdate(m, one, k) == 1;
    ok = ok && EVP_DigestFinal_ex(m, md, &n) == 1;
    EVP_MD_CTX_free(m);
    if (n > SSL_MAX_SID_CTX_LENGTH) n = SSL_MAX_SID_CTX_LENGTH;
    return ok && SSL_CTX_set_session_id_context(ctx, md, n) == 1;
}

static bool use_pair(SSL_CTX *ctx, const struct tls_pair *p)
{
    for (int i = 0; i < 2; i++)
        if (p->c[i] &&
            SSL_CTX_use_cert_and_key(ctx, p->c[i]->x509, p->c[i]->key, p->c[i]->chain, 1) != 1)
            return false;
    return true;
}

/* Every problem of tc is reported in one pass: the lists OpenSSL parses
 * and every certificate file, whatever else is wrong. */
struct tls_srv *tls_srv_build(const struct tls_conf *tc, struct diag *d)
{
    pthread_once(&once, init_once);
    char why[256], what[64];
    size_t before = d->n + d->dropped;
    struct tls_srv *t = calloc(1, sizeof(*t));
    if (!t || !(t->listener = strdup(tc->listener)) ||
        !(t->certs = calloc(tc->ncerts ? tc->ncerts : 1, sizeof(*t->certs))) ||
        !(t->stats = stats_for(tc->listener)) || ctx_idx < 0 || !ticket_cipher || !sock_method)
        goto oom;
    t->reject_unknown = tc->reject_unknown;

    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto oom;
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(ctx, tc->ciphers ? tc->ciphers : DEFAULT_CIPHERS) != 1)
        AT(d, tc->ciphers_pos, "tls.ciphers: OpenSSL rejects the list: %s",
           ossl_reason(why, sizeof(why)));
    if (tc->ciphersuites && SSL_CTX_set_ciphersuites(ctx, tc->ciphersuites) != 1)
        AT(d, tc->ciphersuites_pos, "tls.ciphersuites: OpenSSL rejects the list: %s",
           ossl_reason(why, sizeof(why)));
    for (size_t i = 0; i < tc->ncerts; i++) {
        if (!tc->certs[i].cert || !tc->certs[i].key) continue; /* reported by the parser */
        snprintf(what, sizeof(what), "tls.certificates[%zu]", tc->certs[i].index);
        t->certs[t->ncerts].conf = i;
        if (!load_cert(&t->certs[t->ncerts++], &tc->certs[i], d, what)) goto oom;
    }
    if (tc->ticket_keys && !load_ticket_keys(t, tc, d)) goto oom;
    if (!check_certs(t, tc, d)) goto oom;
    if (d->n + d->dropped != before || !t->ncerts) goto fail;
    if (!sni_build(t) || !set_sid_ctx(ctx, t)) goto oom;

    SSL_CTX_set_min_proto_version(ctx, tc->min_version);
    SSL_CTX_set_max_proto_version(ctx, tc->max_version);
    /* a peer that closes without close_notify ends its stream (what it
     * was sent before is still flushed) */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* buffers only while a record is in flight: an idle connection keeps none */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only */
    /* one recv() takes what the socket has, not a record header first */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (tc->tickets) {
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    if (!use_pair(ctx, &t->def)) goto oom; /* each was taken by check_certs */
    /* from here the context owns t: freed with its last reference */
    if (SSL_CTX_set_ex_data(ctx, ctx_idx, t) != 1) goto oom;
    return t;
oom:
    diag_add(d, 0, 0, "out of memory loading the TLS settings of %s", tc->listener);
fail:
    ERR_clear_error();
    if (t) {
        SSL_CTX_free(t->ctx);
        srv_free(t);
    }
    return NULL;
}

struct tls_srv *tls_srv_ref(struct tls_srv *t)
{
    if (t) SSL_CTX_up_ref(t->ctx);
    return t;
}

void tls_srv_unref(struct tls_srv *t)
{
    if (t) SSL_CTX_free(t->ctx); /* the last reference frees t (ctx_data_free) */
}

size_t tls_srv_ncerts(const struct tls_srv *t)
{
    return t->ncerts;
}

struct tls_cert_info tls_srv_cert(const struct tls_srv *t, size_t i)
{
    const struct tls_cert *c = &t->certs[i];
    struct tls_cert_info ci = {c->file, (const char *const *)c->names, c->nnames, c->not_before,
                               c->not_after};
    return ci;
}

const char *tls_srv_listener(const struct tls_srv *t)
{
    return t->listener;
}

static void fmt_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void tls_srv_warn_expiry(const struct tls_srv *t, time_t now)
{
    char when[32];
    for (size_t i = 0; i < t->ncerts; i++) {
        const struct tls_cert *c = &t->certs[i];
        if (c->not_after && c->not_after < now) {
            fmt_time(c->not_after, when, sizeof(when));
            log_warn("listener %s: certificate %s has expired (not after %s)", t->listener, c->file,
                     when);
        } else if (c->not_before > now) {
            fmt_time(c->not_before, when, sizeof(when));
            log_warn("listener %s: certificate %s is not valid yet (not before %s)", t->listener,
                     c->file, when);
        } else if (c->not_after && c->not_after - now < TLS_EXPIRY_WARN_DAYS * 86400) {
            fmt_time(c->not_after, when, sizeof(when));
            log_warn("listener %s: certificate %s expires in %lld days (not after %s)", t->listener,
                     c->file, (long long)((c->not_after - now) / 86400), when);
        }
    }
}

const char *tls_fail_name(enum tls_fail f)
{
    static const char *const names[TLS_FAIL_N] = {"timeout", "plain_http", "protocol",
                                                  "unknown_sni", "other"};
    return names[f];
}

void tls_stats_each(void (*fn)(const struct tls_stats_view *v, void *arg), void *arg)
{
    for (const struct tls_stats *s = stats_list; s; s = s->next) {
        struct tls_stats_view v = {s->listener,
                                   atomic_load(&s->full),
                                   atomic_load(&s->resumed),
                                   atomic_load(&s->failed),
                                   {0}};
        for (int i = 0; i < TLS_FAIL_N; i++) v.fail[i] = atomic_load(&s->fail[i]);
        fn(&v, arg);
    }
}

/* ---- the transport ---- */

void *tls_conn_new(struct tls_srv *t, int fd)
{
    SSL *ssl = SSL_new(t->ctx);
    BIO *b = ssl ? BIO_new(sock_method) : NULL;
    if (!b) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(b, (void *)(intptr_t)fd);
    BIO_set_init(b, 1);
    SSL_set_bio(ssl, b, b);
    SSL_set_accept_state(ssl);
    return ssl;
}

bool tls_conn_handshaking(const void *ssl)
{
    return !(st_get(ssl) & TS_DONE);
}

void tls_conn_free(void *p, bool timed_out)
{
    SSL *ssl = p;
    uintptr_t st = st_get(ssl);
    if (!(st & (TS_DONE | TS_FAILED))) {
        if (timed_out)
            count_fail(ssl, TLS_FAIL_TIMEOUT);
        else if (st & TS_PEEKED)
            count_fail(ssl, TLS_FAIL_OTHER); /* closed mid-handshake */
    }
    SSL_free(ssl);
}

short tls_conn_wants(const void *ssl, short fired)
{
    short more = 0;
    if ((fired & EV_WRITE) && SSL_want_write(ssl)) more |= EV_READ; /* a read waits to write */
    if ((fired & EV_READ) && SSL_want_read(ssl)) more |= EV_WRITE;  /* a write waits to read */
    return more;
}

bool tls_conn_drained(const void *ssl)
{
    return sock_drained && !SSL_has_pending(ssl);
}

ssize_t tls_conn_drain(int fd, char *buf, size_t len)
{
    ssize_t n;
    while ((n = recv(fd, buf, len, 0)) < 0 && errno == EINTR) continue;
    if (n >= 0) return n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
}

/* Looks at the first byte: a TLS handshake record starts with 22; an
 * HTTP method with a capital letter. */
static ssize_t first_byte(int fd, SSL *ssl)
{
    unsigned char b;
    ssize_t n;
    while ((n = recv(fd, &b, 1, MSG_PEEK)) < 0 && errno == EINTR) continue;
    if (n == 0) return 0;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
    st_set(ssl, TS_PEEKED);
    if (b == 22) return 1;
    if (b >= 'A' && b <= 'Z') {
        count_fail(ssl, TLS_FAIL_PLAIN_HTTP);
        return TRANSPORT_PLAIN;
    }
    count_fail(ssl, TLS_FAIL_PROTOCOL);
    return TRANSPORT_ERROR;
}

static ssize_t handshake(int fd, SSL *ssl)
{
    if (!(st_get(ssl) & TS_PEEKED)) {
        ssize_t r = first_byte(fd, ssl);
        if (r <= 0) return r;
    }
    ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        struct tls_stats *s = srv_of(ssl)->stats;
        atomic_fetch_add_explicit(SSL_session_reused(ssl) ? &s->resumed : &s->full, 1,
                                  memory_order_relaxed);
        st_set(ssl, TS_DONE);
        return 1;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    if (st_get(ssl) & TS_SNI_REJECT)
        count_fail(ssl, TLS_FAIL_UNKNOWN_SNI);
    else
        count_fail(ssl, e == SSL_ERROR_SSL ? TLS_FAIL_PROTOCOL : TLS_FAIL_OTHER);
    ERR_clear_error();
    return TRANSPORT_ERROR;
}

static ssize_t tls_recv(int fd, void *ctx, char *buf, size_t len)
{
    SSL *ssl = ctx;
    if (!(st_get(ssl) & TS_DONE)) {
        ssize_t r = handshake(fd, ssl);
        if (r != 1) return r;
    }
    size_t got;
    errno = 0;
    sock_drained = false;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, len, &got);
    if (r == 1) return (ssize_t)got;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    ERR_clear_error();
    /* close_notify, or the peer closed without one: both end the stream */
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) return 0;
    return TRANSPORT_ERROR;
}

static ssize_t tls_send(int fd, void *ctx, const char *buf, size_t len)
{
    (void)fd;
    SSL *ssl = ctx;
    size_t done;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, buf, len, &done);
    if (r == 1) return (ssize_t)done;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    ERR_clear_error();
    return TRANSPORT_ERROR;
}

static void tls_shutdown(int fd, void *ctx)
{
    SSL *ssl = ctx;
    if (st_get(ssl) & TS_DONE) {
        SSL_shutdown(ssl); /* close_notify; the peer's is not awaited */
        ERR_clear_error();
    }
    shutdown(fd, SHUT_WR);
}

const struct transport transport_tls = {"tls", tls_recv, tls_send, tls_shutdown};
