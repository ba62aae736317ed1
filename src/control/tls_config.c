/* A listener's `tls:` block, loaded: see tls_config.h. */
#include "autoconf.h"

#include "control/tls_config.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/config_walk.h"
#include "lib/diag.h"
#include "lib/file.h"
#include "lib/log.h"
#include "serve/tls_srv.h"

/* Mozilla's "intermediate" TLS 1.2 list */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* A listener's `tls:` block as written (positions are those of the
 * values, for messages). */
struct tls_pos {
    unsigned line, col;
};

struct tls_cert_conf {
    size_t index; /* in the YAML list, for messages */
    char *cert, *key;
    struct tls_pos cert_pos, key_pos;
};

struct tls_conf {
    const char *listener; /* the address as written */
    struct tls_pos pos;   /* of the block */
    struct tls_cert_conf *certs;
    size_t ncerts;
    int min_version, max_version; /* TLS1_2_VERSION / TLS1_3_VERSION */
    char *ciphers, *ciphersuites; /* NULL: the defaults */
    struct tls_pos ciphers_pos, ciphersuites_pos;
    bool tickets;      /* session_tickets */
    char *ticket_keys; /* NULL: the process's rotating key */
    struct tls_pos ticket_keys_pos;
    bool reject_unknown; /* unknown_sni: reject */
    char *hsts;          /* the Strict-Transport-Security value, or NULL */
    char **acme;         /* tls.acme: lowercase, no trailing dot */
    size_t nacme;
    bool has_acme; /* the key is written (even when wrong) */
};

static void tls_conf_free(struct tls_conf *tc)
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
    free(tc->hsts);
    for (size_t i = 0; i < tc->nacme; i++) free(tc->acme[i]);
    free(tc->acme);
    free(tc);
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

/* ---- hsts ---- */

#define HSTS_MAX_BYTES 1024
#define HSTS_HEADER    "Strict-Transport-Security: "

/* s[0..n) without the spaces and tabs around it */
static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

/* What is wrong with an hsts value (RFC 6797 6.1), or NULL: it goes into
 * the header as written, so no control character; it needs exactly one
 * max-age directive with a number of seconds. */
static const char *hsts_problem(const char *v)
{
    size_t len = strlen(v), ages = 0;
    if (len == 0) return "is empty";
    if (len > HSTS_MAX_BYTES) return "is longer than 1024 bytes";
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return "holds a control character";
    for (const char *d = v; d;) {
        const char *end = strchr(d, ';'), *eq;
        size_t n = end ? (size_t)(end - d) : strlen(d);
        eq = memchr(d, '=', n);
        const char *name = d, *val = eq ? eq + 1 : d + n;
        size_t nlen = eq ? (size_t)(eq - d) : n, vlen = eq ? n - nlen - 1 : 0;
        trim(&name, &nlen);
        trim(&val, &vlen);
        if (nlen == 7 && strncasecmp(name, "max-age", 7) == 0) {
            if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') val++, vlen -= 2;
            if (!eq || vlen == 0 || strspn(val, "0123456789") < vlen)
                return "has a max-age that is not a number of seconds";
            ages++;
        }
        d = end ? end + 1 : NULL;
    }
    if (ages == 0) return "has no max-age=SECONDS directive";
    if (ages > 1) return "has max-age twice";
    return NULL;
}

/* The header line, as every answer of the listener copies it. */
static bool hsts_build(struct tls_srv *t, const char *v)
{
    size_t n = strlen(HSTS_HEADER) + strlen(v) + 2;
    t->hsts.p = malloc(n + 1);
    if (!t->hsts.p) return false;
    snprintf(t->hsts.p, n + 1, HSTS_HEADER "%s\r\n", v);
    t->hsts.len = n;
    return true;
}

/* ---- loading ---- */

/* A file's bytes (lib/file.h: a regular file, never waited on), or NULL
 * reported at pos; *len as file_read() says. Free with file_free(): it may
 * hold a private key. */
static char *read_file(const char *path, size_t max, size_t *len, struct diag *d,
                       struct tls_pos pos, const char *what, struct file_error *fe)
{
    char *buf = file_read(path, max, len, fe);
    char why[128];
    if (buf || fe->kind == FILE_ETOOBIG) return buf;
    if (fe->kind == FILE_EOPEN || fe->kind == FILE_EREAD)
        AT(d, pos, "%s: cannot %s %s: %s", what, fe->kind == FILE_EOPEN ? "open" : "read", path,
           strerror(fe->err));
    else
        AT(d, pos, "%s: %s %s", what, path, file_why(fe, why, sizeof(why)));
    return NULL;
}

/* A PEM file in a memory BIO, for OpenSSL's readers (NULL: reported). */
static BIO *read_pem(const char *path, char **buf, size_t *len, struct diag *d, struct tls_pos pos,
                     const char *what)
{
    struct file_error fe;
    *buf = read_file(path, FILE_MAX_PEM_BYTES, len, d, pos, what, &fe);
    if (!*buf && fe.kind == FILE_ETOOBIG)
        AT(d, pos, "%s: %s is larger than %u bytes", what, path, FILE_MAX_PEM_BYTES);
    BIO *b = *buf ? BIO_new_mem_buf(*buf, (int)*len) : NULL;
    if (*buf && !b) {
        AT(d, pos, "%s: out of memory reading %s", what, path);
        file_free(*buf, *len);
        *buf = NULL;
    }
    return b;
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
    char *buf;
    size_t len;
    BIO *f = read_pem(cc->cert, &buf, &len, d, cc->cert_pos, what);
    if (f) {
        ERR_clear_error();
        c->x509 = PEM_read_bio_X509(f, NULL, no_password, NULL);
        if (!c->x509) {
            AT(d, cc->cert_pos, "%s: %s holds no PEM certificate: %s", what, cc->cert,
               ossl_reason(why, sizeof(why)));
            ok = false;
        } else {
            c->chain = sk_X509_new_null();
            X509 *x;
            while (c->chain && (x = PEM_read_bio_X509(f, NULL, no_password, NULL)))
                if (!sk_X509_push(c->chain, x)) X509_free(x);
            unsigned long e = ERR_peek_last_error();
            if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                AT(d, cc->cert_pos, "%s: %s: a chain certificate cannot be read: %s", what,
                   cc->cert, ossl_reason(why, sizeof(why)));
                ok = false;
            }
            ERR_clear_error();
        }
        BIO_free(f);
        file_free(buf, len);
    } else {
        ok = false;
    }
    f = read_pem(cc->key, &buf, &len, d, cc->key_pos, what);
    if (f) {
        c->key = PEM_read_bio_PrivateKey(f, NULL, no_password, NULL);
        BIO_free(f);
        file_free(buf, len);
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
    struct file_error fe;
    size_t n;
    char *buf = read_file(tc->ticket_keys, TLS_TICKET_KEY_BYTES * TLS_MAX_TICKET_KEYS, &n, d,
                          tc->ticket_keys_pos, "tls.ticket_keys", &fe);
    if (!buf && fe.kind != FILE_ETOOBIG) return true; /* reported */
    if (!buf || n == 0 || n % TLS_TICKET_KEY_BYTES) {
        AT(d, tc->ticket_keys_pos,
           "tls.ticket_keys: %s holds %zu%s bytes: it must hold 1 to 64 keys of %d bytes each "
           "(e.g. made with: openssl rand %d)",
           tc->ticket_keys, n, n > TLS_TICKET_KEY_BYTES * TLS_MAX_TICKET_KEYS ? " or more" : "",
           TLS_TICKET_KEY_BYTES, TLS_TICKET_KEY_BYTES);
    } else {
        t->nkeys = n / TLS_TICKET_KEY_BYTES;
        t->keys = calloc(t->nkeys, sizeof(*t->keys));
        if (!t->keys) {
            file_free(buf, n);
            return false;
        }
        for (size_t i = 0; i < t->nkeys; i++) {
            const unsigned char *r = (const unsigned char *)buf + i * TLS_TICKET_KEY_BYTES;
            memcpy(t->keys[i].name, r, 16);
            memcpy(t->keys[i].hmac, r + 16, 32);
            memcpy(t->keys[i].aes, r + 48, 32);
        }
    }
    file_free(buf, n);
    return true;
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
    /* the tls.acme names too (their certificates change without a
     * reload): another listener's ACME names do not resume here */
    for (size_t i = 0; ok && i < t->nacme; i++)
        ok = EVP_DigestUpdate(m, t->acme_names[i], strlen(t->acme_names[i]) + 1) == 1;
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

/* ---- can any handshake succeed? ---- */

/* Every TLS 1.3 suite OpenSSL has: the check's client offers them all. */
#define ALL_TLS13_SUITES                                                                           \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"                  \
    "TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256"
#define PROBE_ROUNDS 16 /* a handshake takes 2-4 flights each way */

struct key_kind {
    int id;              /* EVP_PKEY_* */
    const char *name;    /* for messages */
    const char *sigalgs; /* what a client offers that takes only this kind */
};

static const struct key_kind key_kinds[] = {
    {EVP_PKEY_EC, "ECDSA", "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ECDSA+SHA224:ECDSA+SHA1"},
    {EVP_PKEY_RSA, "RSA",
     "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:RSA+SHA256:RSA+SHA384:"
     "RSA+SHA512:RSA+SHA224:RSA+SHA1"},
    {EVP_PKEY_RSA_PSS, "RSA-PSS", "rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512"},
    {EVP_PKEY_ED25519, "Ed25519", "ed25519"},
    {EVP_PKEY_ED448, "Ed448", "ed448"},
};
#define NKINDS (sizeof(key_kinds) / sizeof(key_kinds[0]))

static const struct key_kind *key_kind_of(const EVP_PKEY *k)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (EVP_PKEY_get_base_id(k) == key_kinds[i].id) return &key_kinds[i];
    return NULL;
}

/* Drives both ends of an in-memory handshake: true once both finished;
 * else why holds OpenSSL's reason (the side that gave up first). */
static bool probe_run(SSL *srv, SSL *cli, char *why, size_t len)
{
    bool sdone = false, cdone = false;
    for (int i = 0; i < PROBE_ROUNDS && !(sdone && cdone); i++) {
        SSL *ends[2] = {cli, srv};
        bool *done[2] = {&cdone, &sdone};
        for (int k = 0; k < 2; k++) {
            if (*done[k]) continue;
            ERR_clear_error();
            int r = SSL_do_handshake(ends[k]);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ends[k], r);
            if (r == 1) {
                *done[k] = true;
            } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                ossl_reason(why, len);
                return false;
            }
        }
    }
    if (!(sdone && cdone)) snprintf(why, len, "the handshake did not finish");
    return sdone && cdone;
}

/* One handshake in memory against the built context, by a client that
 * accepts anything the block's protocols allow (every suite at security
 * level 0, every TLS 1.3 suite, no certificate check) but signature
 * algorithms of one key kind only, asking for the name of c: true if it
 * completed. */
static bool probe_one(SSL_CTX *sctx, SSL_CTX *cctx, const struct tls_cert *c,
                      const struct key_kind *kind, char *why, size_t len)
{
    SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
    BIO *sb = NULL, *cb = NULL;
    bool ok = false;
    if (!srv || !cli || BIO_new_bio_pair(&sb, 0, &cb, 0) != 1) {
        snprintf(why, len, "out of memory");
        goto out;
    }
    SSL_set_bio(srv, sb, sb);
    SSL_set_bio(cli, cb, cb);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    if (kind) SSL_set1_sigalgs_list(cli, kind->sigalgs);
    if (c->nnames) {
        char name[260];
        const char *n = c->names[0];
        if (n[0] == '*') /* a wildcard: one name it covers */
            snprintf(name, sizeof(name), "x%s", n + 1);
        else
            snprintf(name, sizeof(name), "%s", n);
        SSL_set_tlsext_host_name(cli, name);
    }
    ok = probe_run(srv, cli, why, len);
out:
    SSL_free(srv);
    SSL_free(cli);
    ERR_clear_error();
    return ok;
}

static const char *versions_text(const struct tls_conf *tc)
{
    if (tc->min_version == tc->max_version)
        return tc->min_version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
    return "TLSv1.2 and TLSv1.3";
}

/* A block with which no handshake can succeed (a TLS 1.2 cipher list that
 * fits no certificate, only ECDSA suites for an RSA key, ...) is an error:
 * one in-memory handshake per key kind of the certificates, until one
 * completes. It runs at every load, off the serving threads; usually the
 * first handshake completes. */
static bool check_handshake(const struct tls_srv *t, const struct tls_conf *tc, struct diag *d)
{
    /* tls.acme alone: no certificate to try before the ACME client has
     * one (its certificates are checked as they come) */
    if (!t->ncerts) return true;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!cctx) return false;
    SSL_CTX_set_security_level(cctx, 0);
    SSL_CTX_set_min_proto_version(cctx, tc->min_version);
    SSL_CTX_set_max_proto_version(cctx, tc->max_version);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    bool ok = SSL_CTX_set_cipher_list(cctx, "ALL:COMPLEMENTOFALL:@SECLEVEL=0") == 1 &&
              SSL_CTX_set_ciphersuites(cctx, ALL_TLS13_SUITES) == 1;
    ERR_clear_error();
    char why[256] = "no certificate", kinds[64] = "";
    bool tried[NKINDS + 1] = {false};
    for (size_t i = 0; ok && i < t->ncerts; i++) {
        const struct key_kind *kind = key_kind_of(t->certs[i].key);
        size_t k = kind ? (size_t)(kind - key_kinds) : NKINDS;
        if (tried[k]) continue;
        tried[k] = true;
        size_t used = strlen(kinds);
        snprintf(kinds + used, sizeof(kinds) - used, "%s%s", used ? ", " : "",
                 kind ? kind->name : "other");
        /* the first certificate of this kind with a name */
        const struct tls_cert *c = &t->certs[i];
        for (size_t j = i; j < t->ncerts && !c->nnames; j++)
            if (t->certs[j].nnames && key_kind_of(t->certs[j].key) == kind) c = &t->certs[j];
        if (probe_one(t->ctx, cctx, c, kind, why, sizeof(why))) {
            SSL_CTX_free(cctx);
            return true;
        }
    }
    SSL_CTX_free(cctx);
    if (!ok) return false; /* out of memory */
    /* the list that limits the protocols in use takes the blame */
    bool only12 = tc->max_version < TLS1_3_VERSION, only13 = tc->min_version == TLS1_3_VERSION;
    struct tls_pos pos = only12 && tc->ciphers        ? tc->ciphers_pos
                         : only13 && tc->ciphersuites ? tc->ciphersuites_pos
                                                      : tc->pos;
    const char *key = only12 && tc->ciphers        ? "tls.ciphers"
                      : only13 && tc->ciphersuites ? "tls.ciphersuites"
                                                   : "tls";
    AT(d, pos,
       "%s: no TLS handshake can succeed with these settings (protocols %s, %s certificate): %s",
       key, versions_text(tc), kinds, why);
    return true;
}

/* A tls.acme name that a static certificate covers is served by that
 * certificate (the contract: a valid static certificate wins); the ACME
 * client still keeps one for it. Said once per load, as it is allowed. */
static void acme_overlap(const struct tls_srv *t)
{
    for (size_t i = 0; i < t->nacme; i++) {
        const struct tls_cert *c = tls_sni_static(t, t->acme_names[i]);
        if (c)
            log_info("listener %s: tls.acme name %s is also covered by certificate %s, which "
                     "serves it",
                     t->listener, t->acme_names[i], c->file);
    }
}

/* Every problem of tc is reported in one pass: the lists OpenSSL parses
 * and every certificate file, whatever else is wrong. */
static struct tls_srv *tls_srv_build(struct tls_conf *tc, struct diag *d)
{
    char why[256], what[64];
    size_t before = d->n + d->dropped;
    struct tls_srv *t = calloc(1, sizeof(*t));
    if (!t || !(t->listener = strdup(tc->listener)) ||
        !(t->certs = calloc(tc->ncerts ? tc->ncerts : 1, sizeof(*t->certs))) ||
        !(t->stats = tls_stats_for(tc->listener)) || !tls_ready())
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
    if (d->n + d->dropped != before || (!t->ncerts && !tc->nacme)) goto fail;
    /* the names move to t */
    t->acme_names = tc->acme;
    t->nacme = tc->nacme;
    tc->acme = NULL;
    tc->nacme = 0;
    if (!tls_sni_build(t) || !set_sid_ctx(ctx, t)) goto oom;
    acme_overlap(t);
    if (tc->hsts && !hsts_build(t, tc->hsts)) goto oom;

    SSL_CTX_set_min_proto_version(ctx, tc->min_version);
    SSL_CTX_set_max_proto_version(ctx, tc->max_version);
    if (!use_pair(ctx, &t->def)) goto oom; /* each was taken by check_certs */
    if (!tls_srv_arm(t, tc->tickets)) goto oom;
    /* from here t is freed with its context */
    if (!check_handshake(t, tc, d) || d->n + d->dropped != before) {
        if (d->n + d->dropped == before)
            diag_add(d, 0, 0, "out of memory checking %s", tc->listener);
        tls_srv_unref(t);
        return NULL;
    }
    return t;
oom:
    diag_add(d, 0, 0, "out of memory loading the TLS settings of %s", tc->listener);
fail:
    ERR_clear_error();
    if (t) {
        SSL_CTX_free(t->ctx);
        tls_srv_free(t);
    }
    return NULL;
}

/* ---- the `tls:` key ---- */

static struct tls_pos pos_of(const struct yt_node *n)
{
    struct tls_pos p = {n->line, n->col};
    return p;
}

static void load_tls_certs(struct cfg_ctx *x, const struct yt_node *n, struct tls_conf *tc)
{
    static const char *const keys[] = {"cert", "key", NULL};
    if (!cfg_want(x, n, YT_SEQ, "tls.certificates")) return;
    if (n->len == 0) {
        CFG_ERR(x, n, "tls.certificates: at least one certificate is required");
        return;
    }
    tc->certs = calloc(n->len, sizeof(*tc->certs));
    if (!tc->certs) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *item = n->u.items[i], *v;
        if (!cfg_want(x, item, YT_MAP, "tls.certificates[]")) continue;
        cfg_check_keys(x, item, "a certificate", keys);
        struct tls_cert_conf *cc = &tc->certs[tc->ncerts];
        cc->index = i;
        if ((v = yt_get(item, "cert")) && cfg_get_str(x, v, "tls.certificates[].cert", &cc->cert))
            cc->cert_pos = pos_of(v);
        else if (!v)
            CFG_ERR(x, item, "tls.certificates[]: 'cert' is required");
        if ((v = yt_get(item, "key")) && cfg_get_str(x, v, "tls.certificates[].key", &cc->key))
            cc->key_pos = pos_of(v);
        else if (!v)
            CFG_ERR(x, item, "tls.certificates[]: 'key' is required");
        tc->ncerts++;
    }
}

static void load_tls_protocols(struct cfg_ctx *x, const struct yt_node *n, struct tls_conf *tc)
{
    if (!cfg_want(x, n, YT_SEQ, "tls.protocols")) return;
    if (n->len == 0) {
        CFG_ERR(x, n, "tls.protocols: at least one protocol is required (TLSv1.2, TLSv1.3)");
        return;
    }
    int lo = 0, hi = 0;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        if (!cfg_scalar(x, v, "tls.protocols")) continue;
        int ver = cfg_key_is(v, "TLSv1.2")   ? TLS1_2_VERSION
                  : cfg_key_is(v, "TLSv1.3") ? TLS1_3_VERSION
                                             : 0;
        if (!ver) {
            char name[64];
            CFG_ERR(x, v, "tls.protocols: '%s' is not accepted (TLSv1.2, TLSv1.3)",
                    cfg_shown(v, name, sizeof(name)));
            continue;
        }
        if (!lo || ver < lo) lo = ver;
        if (ver > hi) hi = ver;
    }
    if (lo) {
        tc->min_version = lo;
        tc->max_version = hi;
    }
}

/* A DNS name as ACME orders it (RFC 1123 host name): labels of 1 to 63
 * letters, digits and hyphens, not starting or ending with a hyphen, 253
 * bytes at most (name lowercase, without its trailing dot); not an IPv4
 * address (an ACME dns identifier is a name). NULL when it is one, else
 * what is wrong. */
static const char *acme_name_problem(const char *name)
{
    size_t len = strlen(name);
    if (len == 0) return "is empty";
    if (strchr(name, '*'))
        return "is a wildcard: http-01 and tls-alpn-01 cannot validate wildcard names (only "
               "dns-01 can); list each name";
    if (len > 253) return "is longer than 253 bytes";
    bool alpha = false;
    for (const char *l = name; *l;) {
        size_t n = strcspn(l, ".");
        if (n == 0) return "has an empty label";
        if (n > 63) return "has a label longer than 63 bytes";
        if (l[0] == '-' || l[n - 1] == '-') return "has a label that starts or ends with '-'";
        for (size_t i = 0; i < n; i++) {
            char ch = l[i];
            if (ch >= 'a' && ch <= 'z')
                alpha = true;
            else if (!(ch >= '0' && ch <= '9') && ch != '-')
                return "is not a host name (letters, digits, '-' and '.' only)";
        }
        l += n;
        if (*l == '.' && *++l == '\0') return "has an empty label";
    }
    /* digits and dots only: an IPv4 address, which is no dns identifier */
    if (!alpha && strspn(name, "0123456789.") == len)
        return "is an IP address: tls.acme takes DNS names";
    return NULL;
}

/* tls.acme: [names] */
static void load_tls_acme(struct cfg_ctx *x, const struct yt_node *n, struct tls_conf *tc)
{
    tc->has_acme = true;
    if (n->kind == YT_SCALAR && !cfg_is_null(n)) {
        CFG_ERR(x, n, "tls.acme: expected a list of names, got a scalar (write [\"%s\"])", n->str);
        return;
    }
    if (!cfg_want(x, n, YT_SEQ, "tls.acme")) return;
    if (n->len == 0) {
        CFG_ERR(x, n, "tls.acme: at least one name is required (or omit 'acme')");
        return;
    }
    if (n->len > TLS_ACME_MAX_NAMES) {
        CFG_ERR(x, n, "tls.acme: %zu names: at most %d per listener", n->len, TLS_ACME_MAX_NAMES);
        return;
    }
    tc->acme = calloc(n->len, sizeof(*tc->acme));
    if (!tc->acme) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        char *name = NULL, shown[80];
        if (!cfg_get_str(x, v, "tls.acme", &name)) continue;
        for (char *p = name; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p |= 0x20;
        size_t len = strlen(name);
        if (len > 1 && name[len - 1] == '.') name[len - 1] = '\0'; /* the same host */
        const char *why = acme_name_problem(name);
        if (why) {
            CFG_ERR(x, v, "tls.acme: '%s' %s", cfg_shown(v, shown, sizeof(shown)), why);
            free(name);
            continue;
        }
        size_t k = 0;
        while (k < tc->nacme && strcmp(tc->acme[k], name) != 0) k++;
        if (k < tc->nacme) {
            CFG_ERR(x, v, "tls.acme: '%s' is listed twice", name);
            free(name);
            continue;
        }
        tc->acme[tc->nacme++] = name;
    }
}

/* Parsed, then loaded (files, OpenSSL) with the positions kept for the
 * messages. */
struct tls_srv *tls_config_load(struct cfg_ctx *x, const struct yt_node *n, const char *listener)
{
    static const char *const keys[] = {
        "certificates", "protocols",   "ciphers", "ciphersuites", "session_tickets",
        "ticket_keys",  "unknown_sni", "hsts",    "acme",         NULL};
    static const char *const sni[] = {"default", "reject", NULL};
    if (!cfg_want(x, n, YT_MAP, "tls")) return NULL;
    cfg_check_keys(x, n, "tls", keys);
    struct tls_conf *tc = calloc(1, sizeof(*tc));
    if (!tc) return NULL;
    tc->listener = listener;
    tc->pos = pos_of(n);
    tc->tickets = true;
    tc->min_version = TLS1_2_VERSION;
    tc->max_version = TLS1_3_VERSION;
    size_t before = x->d->n + x->d->dropped;
    const struct yt_node *v;
    /* tls.acme alone is a listener whose certificates all come from ACME */
    if ((v = yt_get(n, "acme"))) load_tls_acme(x, v, tc);
    if ((v = yt_get(n, "certificates")))
        load_tls_certs(x, v, tc);
    else if (!tc->has_acme)
        CFG_ERR(x, n, "tls: 'certificates' is required (or 'acme', to obtain them from ACME)");
    if ((v = yt_get(n, "protocols"))) load_tls_protocols(x, v, tc);
    if ((v = yt_get(n, "ciphers")) && cfg_get_str(x, v, "tls.ciphers", &tc->ciphers))
        tc->ciphers_pos = pos_of(v);
    if ((v = yt_get(n, "ciphersuites")) && cfg_get_str(x, v, "tls.ciphersuites", &tc->ciphersuites))
        tc->ciphersuites_pos = pos_of(v);
    if ((v = yt_get(n, "session_tickets"))) cfg_get_bool(x, v, "tls.session_tickets", &tc->tickets);
    if ((v = yt_get(n, "ticket_keys")) && cfg_get_str(x, v, "tls.ticket_keys", &tc->ticket_keys))
        tc->ticket_keys_pos = pos_of(v);
    int e;
    if ((v = yt_get(n, "unknown_sni")) && cfg_get_enum(x, v, "tls.unknown_sni", sni, &e))
        tc->reject_unknown = e == 1;
    if ((v = yt_get(n, "hsts")) && cfg_get_str(x, v, "tls.hsts", &tc->hsts)) {
        const char *why = hsts_problem(tc->hsts);
        if (why)
            CFG_ERR(x, v,
                    "tls.hsts: the value %s (e.g. \"max-age=31536000\" or "
                    "\"max-age=31536000; includeSubDomains\")",
                    why);
    }
    /* the files are checked too when something above is wrong: every
     * problem in one pass */
    struct tls_srv *t = tc->ncerts || tc->nacme ? tls_srv_build(tc, x->d) : NULL;
    if (t && x->d->n + x->d->dropped != before) {
        tls_srv_unref(t);
        t = NULL;
    }
    tls_conf_free(tc);
    return t;
}

/* ---- what a loaded listener shows ---- */

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

const char *const *tls_srv_acme_names(const struct tls_srv *t, size_t *n)
{
    *n = t ? t->nacme : 0;
    return *n ? (const char *const *)t->acme_names : NULL;
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
