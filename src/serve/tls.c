/* TLS on the redirect listeners, as worker threads run it: see tls.h. The
 * listeners' settings are loaded by control/tls_config.c. */
#include "autoconf.h"

#include "serve/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "lib/defer.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "serve/acme_live.h"
#include "serve/tls_srv.h"

/* ---- process-wide state ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ctx_idx = -1;
static EVP_CIPHER *ticket_cipher;

/* Every listener address that ever had TLS, with its handshake counts:
 * appended by the config loader, walked for /metrics, never shortened. */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_stats *stats_list;

/* The process's ticket keys: a ring of three, so the slot being written is
 * one no handshake reads (current and previous are the other two). */
static struct tkey own_keys[3];
static _Atomic unsigned own_gen;

/* ---- the socket under OpenSSL ----
 * A BIO of our own instead of OpenSSL's socket BIO: reads tell whether they
 * drained the socket (a short read), so that a connection on an
 * edge-triggered event can stop reading without one more recv() that only
 * says EAGAIN; writes use send() with MSG_NOSIGNAL. */

static BIO_METHOD *sock_method;
static _Thread_local bool sock_drained; /* the last read emptied the socket */
static _Thread_local bool sock_more;    /* more bytes follow this write at once */

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
    /* MSG_MORE: the kernel holds a short segment until the write that
     * ends the group (one without it), so a ticket, an answer and a
     * close_notify leave in one segment */
    int flags = MSG_NOSIGNAL | (sock_more ? MSG_MORE : 0);
    while ((n = send(fd, buf, len, flags)) < 0 && errno == EINTR) continue;
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

static void srv_free(void *t)
{
    tls_srv_free(t);
}

/* The context's last reference went: a worker's connection may have held
 * it (the last handshake of a retired config). Its certificates, SNI table
 * and keys are freed on the control thread (lib/defer.h). */
static void ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    defer_free(ptr, srv_free);
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

bool tls_ready(void)
{
    pthread_once(&once, init_once);
    return ctx_idx >= 0 && ticket_cipher && sock_method;
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

void tls_srv_free(struct tls_srv *t)
{
    for (size_t i = 0; i < t->ncerts; i++) cert_free(&t->certs[i]);
    free(t->certs);
    free(t->tab);
    free(t->keys);
    free(t->hsts.p);
    free(t->listener);
    for (size_t i = 0; i < t->nacme; i++) free(t->acme_names[i]);
    free(t->acme_names);
    free(t);
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

bool tls_sni_build(struct tls_srv *t)
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
    if (!t->ncerts) return true; /* tls.acme alone: no default certificate */
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

const struct tls_cert *tls_sni_static(const struct tls_srv *t, const char *name)
{
    const struct tls_pair *p = sni_find(t, name);
    return p ? (p->c[0] ? p->c[0] : p->c[1]) : NULL;
}

/* name (as the client sent it: any case, maybe a trailing dot) is one of
 * the listener's tls.acme names. A scan: at most 100 names, and only for
 * a name no static certificate covers. */
static bool acme_listed(const struct tls_srv *t, const char *name)
{
    size_t len = strlen(name);
    if (len && name[len - 1] == '.') len--;
    for (size_t i = 0; i < t->nacme; i++) {
        const char *a = t->acme_names[i];
        if (strncasecmp(a, name, len) == 0 && a[len] == '\0') return true;
    }
    return false;
}

/* ---- per-connection state: bits in the SSL's app data ----
 * The low byte holds flags; above it, why a failed handshake failed (enum
 * fail_why) and its detail (OpenSSL's library and reason, an errno, the
 * first byte), kept until the connection is freed and the failure logged:
 * no allocation, and 32 bits suffice on every platform. */

enum {
    TS_PEEKED = 1,        /* a first byte arrived */
    TS_DONE = 2,          /* handshake finished (and counted) */
    TS_FAILED = 4,        /* handshake failure counted */
    TS_SNI_REJECT = 8,    /* refused for its server name */
    TS_ALPN_REFUSED = 16, /* offered ALPN without http/1.1 */
    TS_CLOSED = 32,       /* close_notify sent, or none can be (the stream broke) */
    TS_ACME = 64,         /* a tls-alpn-01 validation: the challenge certificate is set */
};
#define TS_WHY_SHIFT 8
#define TS_ARG_SHIFT 12
#define TS_ARG_MASK  0xfffffu

/* Why a handshake failed, for the log line. */
enum fail_why {
    WHY_NONE,
    WHY_SSL,     /* arg: OpenSSL's library << 12 | reason */
    WHY_SYSCALL, /* arg: errno */
    WHY_EOF,     /* the client closed mid-handshake */
    WHY_TIMEOUT,
    WHY_PLAIN,        /* plain HTTP */
    WHY_GARBAGE,      /* arg: the first byte */
    WHY_SNI,          /* unknown_sni: reject, or no certificate but tls.acme ones */
    WHY_ACME_PENDING, /* a tls.acme name without its certificate yet */
    WHY_ACME_ALPN,    /* acme-tls/1 without a pending challenge; arg: 1 with a server name */
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

static void count_fail(SSL *ssl, enum tls_fail reason, enum fail_why why, unsigned arg)
{
    struct tls_stats *s = srv_of(ssl)->stats;
    atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->fail[reason], 1, memory_order_relaxed);
    st_set(ssl, TS_FAILED | (uintptr_t)why << TS_WHY_SHIFT |
                    (uintptr_t)(arg & TS_ARG_MASK) << TS_ARG_SHIFT);
}

/* OpenSSL's error code, packed for the state bits (every library and
 * reason OpenSSL defines fits). */
static unsigned ssl_err_arg(unsigned long e)
{
    return (unsigned)(ERR_GET_LIB(e) & 0xff) << 12 | (unsigned)(ERR_GET_REASON(e) & 0xfff);
}

/* ---- OpenSSL callbacks ---- */

/* A name of the listener's tls.acme list that no static certificate
 * covers: the ACME client's certificate for it; none yet, the handshake
 * fails as for an unknown name (the default certificate, which does not
 * name it, would only make the client fail later and less clearly). */
static int acme_sni(SSL *ssl, const char *name, int *alert)
{
    const struct acme_live_cert *ac = acme_live_cert(acme_live_get(), name, strlen(name));
    if (!ac) {
        count_fail(ssl, TLS_FAIL_UNKNOWN_SNI, WHY_ACME_PENDING, 0);
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    /* the SSL takes its own references: the table may be retired before
     * the connection ends */
    SSL_certs_clear(ssl);
    if (SSL_use_cert_and_key(ssl, ac->x509, ac->key, ac->chain, 1) != 1) {
        ERR_clear_error();
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_srv *t = arg;
    if (st_get(ssl) & TS_ACME) return SSL_TLSEXT_ERR_OK; /* hello_cb set the challenge's */
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_pair *p = name ? sni_find(t, name) : NULL;
    if (!p) {
        if (name && t->nacme && acme_listed(t, name)) return acme_sni(ssl, name, alert);
        /* the default certificate; a listener with tls.acme alone has none */
        if (!t->reject_unknown && t->ncerts) return SSL_TLSEXT_ERR_OK;
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

/* ALPN (RFC 7301): http/1.1 when the client offers it; a client that
 * offers ALPN without it (only h2, say) gets the fatal
 * no_application_protocol alert instead of an HTTP/1.1 answer it cannot
 * read; one that offers no ALPN is not asked (this callback does not run).
 * A tls-alpn-01 validation (RFC 8737) that hello_cb took gets acme-tls/1
 * instead: the rule is about HTTP clients only. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    bool acme = st_get(ssl) & TS_ACME;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (acme ? n == ACME_TLS_ALPN_LEN && memcmp(in + i + 1, ACME_TLS_ALPN, n) == 0
                 : n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    st_set(ssl, TS_ALPN_REFUSED);
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* OpenSSL sends no_application_protocol */
}

/* ---- tls-alpn-01 (RFC 8737) ----
 * The ACME server's validator connects with ALPN acme-tls/1 alone and the
 * name being validated, and must get the challenge certificate the ACME
 * client made for that name (serve/acme_live.h). That has to be decided
 * before OpenSSL picks anything: in the ClientHello callback, from the raw
 * extensions (SSL_get_servername() is not set yet there). */

/* The ALPN extension's protocol list offers acme-tls/1. */
static bool offers_acme(const unsigned char *p, size_t len)
{
    if (len < 2 || ((size_t)p[0] << 8 | p[1]) != len - 2) return false;
    for (size_t i = 2; i < len;) {
        size_t n = p[i];
        if (i + 1 + n > len) return false;
        if (n == ACME_TLS_ALPN_LEN && memcmp(p + i + 1, ACME_TLS_ALPN, n) == 0) return true;
        i += 1 + n;
    }
    return false;
}

/* The host_name of the server_name extension (RFC 6066 3: a list of
 * type, length, name) into buf as a C string: its length, 0 if none. */
static size_t hello_name(SSL *ssl, char *buf, size_t cap)
{
    const unsigned char *p;
    size_t len;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2 ||
        ((size_t)p[0] << 8 | p[1]) != len - 2)
        return 0;
    for (size_t i = 2; i + 3 <= len;) {
        size_t n = (size_t)p[i + 1] << 8 | p[i + 2];
        if (i + 3 + n > len) return 0;
        if (p[i] == TLSEXT_NAMETYPE_host_name) {
            if (n == 0 || n >= cap || memchr(p + i + 3, '\0', n)) return 0;
            memcpy(buf, p + i + 3, n);
            buf[n] = '\0';
            return n;
        }
        i += 3 + n;
    }
    return 0;
}

/* Every handshake passes here first; one that offers acme-tls/1 is a
 * validation: the challenge certificate of its name when one is pending
 * (sni_cb then leaves it, alpn_cb selects acme-tls/1), else refused with
 * no_application_protocol (RFC 8737 answers no HTTP client: nothing else
 * may be served to it). On any TLS listener: the validator reaches
 * whichever one the name's address leads to. */
static int hello_cb(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    const unsigned char *p;
    size_t len;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
                                  &len) != 1 ||
        !offers_acme(p, len))
        return SSL_CLIENT_HELLO_SUCCESS;
    char name[256];
    size_t n = hello_name(ssl, name, sizeof(name));
    const struct acme_live_alpn *a = n ? acme_live_alpn(acme_live_get(), name, n) : NULL;
    if (!a) {
        count_fail(ssl, TLS_FAIL_PROTOCOL, WHY_ACME_ALPN, n != 0);
        *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
        return SSL_CLIENT_HELLO_ERROR;
    }
    /* the SSL takes its own references; and a validation resumes no
     * session (one resumed would send no certificate) nor gets a ticket */
    SSL_certs_clear(ssl);
    if (SSL_use_cert_and_key(ssl, a->x509, a->key, NULL, 1) != 1 ||
        SSL_set_session_id_context(ssl, (const unsigned char *)ACME_TLS_ALPN, ACME_TLS_ALPN_LEN) !=
            1) {
        ERR_clear_error();
        count_fail(ssl, TLS_FAIL_OTHER, WHY_NONE, 0);
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_options(ssl, SSL_OP_NO_TICKET);
    SSL_set_num_tickets(ssl, 0);
    st_set(ssl, TS_ACME);
    return SSL_CLIENT_HELLO_SUCCESS;
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

/* Ticket IVs come from a pool per thread, filled TICKET_IV_POOL at a time:
 * one RAND_bytes() per that many tickets instead of one each (each call
 * costs about 6,000 instructions and, for OpenSSL's fork check, a getpid()
 * system call). An IV unused so far is as unpredictable as a fresh one. */
#define TICKET_IV_LEN  16
#define TICKET_IV_POOL 64
static _Thread_local unsigned char iv_pool[TICKET_IV_POOL * TICKET_IV_LEN];
static _Thread_local unsigned iv_left;

static bool ticket_iv(unsigned char *iv)
{
    if (!iv_left) {
        if (RAND_bytes(iv_pool, sizeof(iv_pool)) != 1) return false;
        iv_left = TICKET_IV_POOL;
    }
    iv_left--;
    memcpy(iv, iv_pool + iv_left * TICKET_IV_LEN, TICKET_IV_LEN);
    return true;
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *c,
                     EVP_MAC_CTX *h, int enc)
{
    const struct tls_srv *t = srv_of(ssl);
    const struct tkey *keys[TLS_MAX_TICKET_KEYS] = {NULL};
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
        if (!ticket_iv(iv)) return -1;
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

/* A TLS 1.3 server writes its session ticket at the end of the
 * handshake, before it has read the client's first request: the ticket is
 * held (MSG_MORE) to leave in one segment with the answer that follows, or
 * the close_notify (the kernel sends it after 200 ms at most in any case).
 * Set on each connection (tls_conn_new) until its handshake is done:
 * OpenSSL calls it for every record while it is set. */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    (void)ssl, (void)arg;
    if (write_p && version == TLS1_3_VERSION && content_type == SSL3_RT_HANDSHAKE && len &&
        *(const unsigned char *)buf == SSL3_MT_NEWSESSION_TICKET)
        sock_more = true;
}

/* ---- handshake counts ---- */

struct tls_stats *tls_stats_for(const char *listener)
{
    pthread_mutex_lock(&stats_lock);
    struct tls_stats *s;
    for (s = stats_list; s; s = s->next)
        if (strcmp(s->listener, listener) == 0) break;
    if (!s && (s = calloc(1, sizeof(*s)))) {
        if ((s->listener = strdup(listener))) {
            s->next = stats_list;
            stats_list = s;
        } else {
            free(s);
            s = NULL;
        }
    }
    pthread_mutex_unlock(&stats_lock);
    return s;
}

const char *tls_fail_name(enum tls_fail f)
{
    static const char *const names[TLS_FAIL_N] = {"timeout", "plain_http", "protocol",
                                                  "unknown_sni", "other"};
    return names[f];
}

void tls_stats_each(void (*fn)(const struct tls_stats_view *v, void *arg), void *arg)
{
    pthread_mutex_lock(&stats_lock);
    for (const struct tls_stats *s = stats_list; s; s = s->next) {
        struct tls_stats_view v = {s->listener,
                                   atomic_load(&s->full),
                                   atomic_load(&s->resumed),
                                   atomic_load(&s->failed),
                                   {0}};
        for (int i = 0; i < TLS_FAIL_N; i++) v.fail[i] = atomic_load(&s->fail[i]);
        fn(&v, arg);
    }
    pthread_mutex_unlock(&stats_lock);
}

/* ---- failed handshakes in the log ----
 * Each is logged at info by the worker that saw it, with the client, the
 * listener and the reason, at most TLS_FAIL_LOG_PER_S lines a second per
 * listener. The rest of a second is summed into one line, written by the
 * failure that starts a later second or else by tls_fail_log_flush() (the
 * control plane, once a second). No lock: one atomic word per listener. */

#define LOG_COUNT_MASK ((UINT64_C(1) << TLS_LOG_COUNT_BITS) - 1)

static uint64_t log_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec;
}

static void log_not_shown(const struct tls_stats *s, uint64_t n)
{
    log_info("%" PRIu64 " more failed TLS handshake%s on %s in the last second not shown", n,
             n == 1 ? "" : "s", s->listener);
}

/* Counts a failure into the current second: true if it may be logged.
 * The failure that opens a new second reports what the last one hid. */
static bool log_admit(struct tls_stats *s)
{
    uint64_t now = log_second();
    uint64_t old = atomic_load_explicit(&s->log_state, memory_order_relaxed), nw, hidden;
    do {
        hidden = 0;
        if (old >> TLS_LOG_COUNT_BITS == now) {
            nw = (old & LOG_COUNT_MASK) == LOG_COUNT_MASK ? old : old + 1;
        } else {
            uint64_t n = old & LOG_COUNT_MASK;
            hidden = n > TLS_FAIL_LOG_PER_S ? n - TLS_FAIL_LOG_PER_S : 0;
            nw = now << TLS_LOG_COUNT_BITS | 1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->log_state, &old, nw, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (hidden) log_not_shown(s, hidden);
    return (nw & LOG_COUNT_MASK) <= TLS_FAIL_LOG_PER_S;
}

void tls_fail_log_flush(void)
{
    if (!log_enabled(LOG_INFO)) return;
    uint64_t now = log_second();
    pthread_mutex_lock(&stats_lock);
    for (struct tls_stats *s = stats_list; s; s = s->next) {
        uint64_t old = atomic_load_explicit(&s->log_state, memory_order_relaxed), n;
        do {
            n = old & LOG_COUNT_MASK;
            if (old >> TLS_LOG_COUNT_BITS >= now || n <= TLS_FAIL_LOG_PER_S) break;
        } while (!atomic_compare_exchange_weak_explicit(
            &s->log_state, &old, (old & ~LOG_COUNT_MASK) | TLS_FAIL_LOG_PER_S, memory_order_relaxed,
            memory_order_relaxed));
        if (old >> TLS_LOG_COUNT_BITS < now && n > TLS_FAIL_LOG_PER_S)
            log_not_shown(s, n - TLS_FAIL_LOG_PER_S);
    }
    pthread_mutex_unlock(&stats_lock);
}

static void fmt_peer(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
    } else if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    } else {
        snprintf(buf, len, "?");
    }
}

/* A name the client sent, safe to log: printable ASCII, at most 64 bytes. */
static void fmt_name(const char *name, char *buf, size_t len)
{
    size_t i = 0;
    for (; name[i] && i + 1 < len && i < 64; i++)
        buf[i] = name[i] > ' ' && name[i] < 0x7f ? name[i] : '?';
    buf[i] = '\0';
}

static const char *fail_text(const SSL *ssl, uintptr_t st, char *buf, size_t len)
{
    unsigned arg = (unsigned)(st >> TS_ARG_SHIFT & TS_ARG_MASK);
    char name[80];
    switch ((enum fail_why)(st >> TS_WHY_SHIFT & 0xf)) {
    case WHY_SSL: {
        if (st & TS_ALPN_REFUSED)
            return "no application protocol: the client offers ALPN without http/1.1";
        const char *r = ERR_reason_error_string(ERR_PACK(arg >> 12, 0, arg & 0xfff));
        if (!r) {
            snprintf(buf, len, "OpenSSL error (library %u, reason %u)", arg >> 12, arg & 0xfff);
            return buf;
        }
        return r;
    }
    case WHY_SYSCALL: snprintf(buf, len, "connection error: %s", strerror((int)arg)); return buf;
    case WHY_EOF: return "the client closed the connection mid-handshake";
    case WHY_TIMEOUT:
        return st & TS_PEEKED ? "handshake not finished within header_timeout"
                              : "no ClientHello within header_timeout";
    case WHY_PLAIN: return "a plain-HTTP request on this TLS port (answered with 400)";
    case WHY_GARBAGE:
        snprintf(buf, len, "not a TLS handshake (first byte 0x%02x)", arg & 0xff);
        return buf;
    case WHY_SNI: {
        const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        const char *why = srv_of(ssl)->ncerts ? "unknown_sni: reject"
                                              : "no default certificate: tls.acme names only";
        if (!sni) {
            snprintf(buf, len, "no server name (%s)", why);
            return buf;
        }
        fmt_name(sni, name, sizeof(name));
        snprintf(buf, len, "unknown server name '%s' (%s)", name, why);
        return buf;
    }
    case WHY_ACME_PENDING: {
        const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        fmt_name(sni ? sni : "", name, sizeof(name));
        snprintf(buf, len, "server name '%s' has no certificate yet (tls.acme)", name);
        return buf;
    }
    case WHY_ACME_ALPN:
        return arg ? "ALPN acme-tls/1 (tls-alpn-01) for a name with no pending challenge"
                   : "ALPN acme-tls/1 (tls-alpn-01) without a server name";
    case WHY_NONE: break;
    }
    return "unknown reason";
}

static void log_fail(const SSL *ssl, uintptr_t st, const struct sockaddr *peer)
{
    const struct tls_srv *t = srv_of(ssl);
    if (!log_enabled(LOG_INFO) || !log_admit(t->stats)) return;
    char who[INET6_ADDRSTRLEN + 16], buf[160];
    fmt_peer(peer, who, sizeof(who));
    log_info("TLS handshake failed: client %s on %s: %s", who, t->listener,
             fail_text(ssl, st, buf, sizeof(buf)));
}

/* ---- the listener's context ---- */

bool tls_srv_arm(struct tls_srv *t, bool tickets)
{
    SSL_CTX *ctx = t->ctx;
    /* a peer that closes without close_notify ends its stream (what it
     * was sent before is still flushed). The client's order of suites is
     * honoured (no SSL_OP_CIPHER_SERVER_PREFERENCE): every suite allowed
     * is strong, and a client without AES hardware puts ChaCha20 first. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* DHE suites get the RFC 7919 group matching the certificate's
     * strength (ffdhe2048 and up) */
    SSL_CTX_set_dh_auto(ctx, 1);
    /* buffers only while a record is in flight: an idle connection keeps
     * none, nor does a handshake that stalls (keeping them through the
     * handshake would save some 8,000 instructions of 2.6 million, for
     * 34 kB more in every half-done handshake) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only */
    /* one recv() takes what the socket has, not a record header first */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (tickets) {
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_client_hello_cb(ctx, hello_cb, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    /* from here the context owns t: freed with its last reference */
    return tls_ready() && SSL_CTX_set_ex_data(ctx, ctx_idx, t) == 1;
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
    SSL_set_msg_callback(ssl, msg_cb);
    return ssl;
}

const struct chunk *tls_conn_hsts(const void *ssl)
{
    const struct tls_srv *t = srv_of(ssl);
    return t->hsts.len ? &t->hsts : NULL;
}

bool tls_conn_handshaking(const void *ssl)
{
    return !(st_get(ssl) & TS_DONE);
}

void tls_conn_free(void *p, bool timed_out, const struct sockaddr *peer)
{
    SSL *ssl = p;
    uintptr_t st = st_get(ssl);
    if (!(st & (TS_DONE | TS_FAILED))) {
        if (timed_out)
            count_fail(ssl, TLS_FAIL_TIMEOUT, WHY_TIMEOUT, 0);
        else if (st & TS_PEEKED)
            count_fail(ssl, TLS_FAIL_OTHER, WHY_EOF, 0); /* closed mid-handshake */
        st = st_get(ssl);
    }
    if (st & TS_FAILED) log_fail(ssl, st, peer);
    SSL_free(ssl);
}

void tls_conn_notify(void *p)
{
    SSL *ssl = p;
    uintptr_t st = st_get(ssl);
    if ((st & (TS_DONE | TS_CLOSED)) != TS_DONE) return;
    st_set(ssl, TS_CLOSED);
    SSL_shutdown(ssl); /* close_notify; the peer's is not awaited */
    ERR_clear_error();
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
        count_fail(ssl, TLS_FAIL_PLAIN_HTTP, WHY_PLAIN, 0);
        return TRANSPORT_PLAIN;
    }
    count_fail(ssl, TLS_FAIL_PROTOCOL, WHY_GARBAGE, b);
    return TRANSPORT_ERROR;
}

/* A handshake that SSL_do_handshake() ended with error e: counted, and
 * why kept for the log line. */
static void handshake_failed(SSL *ssl, int e, int err)
{
    unsigned long code = ERR_peek_last_error();
    if (st_get(ssl) & TS_FAILED) {
        /* a callback refused it and counted why */
    } else if (st_get(ssl) & TS_SNI_REJECT) {
        count_fail(ssl, TLS_FAIL_UNKNOWN_SNI, WHY_SNI, 0);
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && err == 0) ||
               (e == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
                ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        count_fail(ssl, TLS_FAIL_OTHER, WHY_EOF, 0);
    } else if (e == SSL_ERROR_SYSCALL) {
        count_fail(ssl, TLS_FAIL_OTHER, WHY_SYSCALL, (unsigned)err);
    } else if (e == SSL_ERROR_SSL) {
        count_fail(ssl, TLS_FAIL_PROTOCOL, WHY_SSL, ssl_err_arg(code));
    } else {
        count_fail(ssl, TLS_FAIL_OTHER, WHY_NONE, 0);
    }
    ERR_clear_error();
}

static ssize_t handshake(int fd, SSL *ssl)
{
    if (!(st_get(ssl) & TS_PEEKED)) {
        ssize_t r = first_byte(fd, ssl);
        if (r <= 0) return r;
    }
    ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
    errno = 0;
    int r = SSL_do_handshake(ssl);
    sock_more = false;
    if (r == 1) {
        SSL_set_msg_callback(ssl, NULL);
        struct tls_stats *s = srv_of(ssl)->stats;
        atomic_fetch_add_explicit(SSL_session_reused(ssl) ? &s->resumed : &s->full, 1,
                                  memory_order_relaxed);
        st_set(ssl, TS_DONE);
        return 1;
    }
    int err = errno;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    handshake_failed(ssl, e, err);
    return TRANSPORT_ERROR;
}

static ssize_t tls_recv(int fd, void *ctx, char *buf, size_t len)
{
    SSL *ssl = ctx;
    if (!(st_get(ssl) & TS_DONE)) {
        ssize_t r = handshake(fd, ssl);
        if (r != 1) return r;
    }
    /* a tls-alpn-01 validation ends with its handshake (RFC 8737 3: the
     * validator sends nothing more): no HTTP is read or answered on it,
     * the connection ends cleanly at once */
    if (st_get(ssl) & TS_ACME) return 0;
    size_t got;
    errno = 0;
    sock_drained = false;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, len, &got);
    if (r == 1) return (ssize_t)got;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    ERR_clear_error();
    /* close_notify (answered with ours), or the peer closed without one
     * (OpenSSL then takes no SSL_shutdown): both end the stream */
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    st_set(ssl, TS_CLOSED);
    return e == SSL_ERROR_SYSCALL && errno == 0 ? 0 : TRANSPORT_ERROR;
}

static ssize_t tls_send(int fd, void *ctx, const char *buf, size_t len, bool more)
{
    (void)fd;
    SSL *ssl = ctx;
    size_t done;
    ERR_clear_error();
    sock_more = more;
    int r = SSL_write_ex(ssl, buf, len, &done);
    sock_more = false;
    if (r == 1) return (ssize_t)done;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TRANSPORT_AGAIN;
    ERR_clear_error();
    return TRANSPORT_ERROR;
}

static void tls_shutdown(int fd, void *ctx)
{
    tls_conn_notify(ctx);
    shutdown(fd, SHUT_WR);
}

const struct transport transport_tls = {"tls", tls_recv, tls_send, tls_shutdown};
