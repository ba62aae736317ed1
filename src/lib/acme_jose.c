/* JOSE and X.509 helpers for the ACME client: base64url, account keys and
 * their JWKs, flattened JWS requests (ES256, RS256), external account
 * binding, CSRs, the tls-alpn-01 certificate, the ARI certificate
 * identifier and PEM chains. Only the OpenSSL 3.0 API without deprecated
 * calls; no I/O and no global state. */
#include "autoconf.h"

#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/acme_jose.h"
#include "lib/json.h"

/* RFC 8737 section 6.1: id-pe-acmeIdentifier. OpenSSL 3.0 has no NID for
 * it; OBJ_txt2obj(..., 1) builds the OID without registering anything in
 * OpenSSL's process-wide object table, so no thread can race on it. */
#define ACME_IDENTIFIER_OID "1.3.6.1.5.5.7.1.31"

/* The CN attribute holds at most 64 characters (RFC 5280 ub-common-name):
 * a longer DNS name only goes in subjectAltName, which is what ACME CAs
 * read anyway. */
#define CN_MAX 64

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *b64url(const void *p, size_t n)
{
    const unsigned char *s = p;
    if (n > (SIZE_MAX - 1) / 4 * 3 - 3) return NULL;
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out) return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64url_alphabet[v >> 18 & 63];
        *o++ = b64url_alphabet[v >> 12 & 63];
        *o++ = b64url_alphabet[v >> 6 & 63];
        *o++ = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = b64url_alphabet[v >> 18 & 63];
        *o++ = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = b64url_alphabet[v >> 18 & 63];
        *o++ = b64url_alphabet[v >> 12 & 63];
        *o++ = b64url_alphabet[v >> 6 & 63];
    }
    *o = '\0';
    return out;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

bool b64url_decode(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    /* one character alone carries only 6 bits: never a whole byte */
    if (len % 4 == 1) return false;
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (!buf) return false;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return false;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
        }
    }
    *out = buf;
    *outlen = n;
    return true;
}

/* printf into a malloc'd string. */
static char *strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* s as a quoted JSON string. The kid, nonce and URL come from the server:
 * they are escaped rather than trusted to be plain. */
static char *json_quote(const char *s)
{
    size_t n = strlen(s);
    if (n > (SIZE_MAX - 3) / 6) return NULL;
    char *q = malloc(JSON_ESCAPE_MAX(n) + 3);
    if (!q) return NULL;
    q[0] = '"';
    size_t w = json_escape(q + 1, s, n);
    q[w + 1] = '"';
    q[w + 2] = '\0';
    return q;
}

static char *b64url_str(const char *s)
{
    return b64url(s, strlen(s));
}

/* An OpenSSL memory BIO's contents as a malloc'd NUL-terminated string. */
static char *bio_string(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

enum key_kind { KEY_OTHER, KEY_P256, KEY_RSA };

/* ES256 needs exactly P-256; other curves and key types are refused. */
static enum key_kind key_kind(EVP_PKEY *k)
{
    if (!k) return KEY_OTHER;
    if (EVP_PKEY_is_a(k, "RSA")) return KEY_RSA;
    if (!EVP_PKEY_is_a(k, "EC")) return KEY_OTHER;
    char group[64];
    size_t glen;
    if (!EVP_PKEY_get_group_name(k, group, sizeof(group), &glen)) return KEY_OTHER;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0 ? KEY_P256 : KEY_OTHER;
}

EVP_PKEY *acme_key_new(enum acme_key_type t)
{
    switch (t) {
    case ACME_KEY_EC256: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    case ACME_KEY_RSA2048: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    }
    return NULL;
}

char *acme_key_pem(EVP_PKEY *k)
{
    if (!k) return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return NULL;
    char *s = NULL;
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") */
    if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) s = bio_string(b);
    BIO_free(b);
    if (!s) ERR_clear_error();
    return s;
}

/* An encrypted key is refused: without this callback OpenSSL would ask for
 * a passphrase on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

EVP_PKEY *acme_key_from_pem(const char *pem, size_t len)
{
    if (!pem || len > INT_MAX) return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b) return NULL;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    /* the failed read leaves errors that a later TLS call on this thread
     * would otherwise find and misreport */
    if (!k) ERR_clear_error();
    return k;
}

/* A BIGNUM parameter of k as base64url: padded to pad bytes, or minimal
 * when pad is 0. */
static char *bn_param_b64(EVP_PKEY *k, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(k, param, &bn)) return NULL;
    int n = pad ? pad : BN_num_bytes(bn);
    char *s = NULL;
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && BN_bn2binpad(bn, buf, n) == n) s = b64url(buf, (size_t)n);
    free(buf);
    BN_free(bn);
    return s;
}

char *acme_jwk(EVP_PKEY *k)
{
    char *a = NULL, *b = NULL, *jwk = NULL;
    switch (key_kind(k)) {
    case KEY_P256:
        a = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        b = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
        if (a && b)
            jwk = strfmt("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
        break;
    case KEY_RSA:
        a = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
        b = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0);
        if (a && b) jwk = strfmt("{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", a, b);
        break;
    case KEY_OTHER: break;
    }
    free(a);
    free(b);
    if (!jwk) ERR_clear_error();
    return jwk;
}

static bool sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32;
}

char *acme_thumbprint(EVP_PKEY *k)
{
    char *jwk = acme_jwk(k);
    if (!jwk) return NULL;
    unsigned char md[32];
    char *t = sha256(jwk, strlen(jwk), md) ? b64url(md, sizeof(md)) : NULL;
    free(jwk);
    return t;
}

char *acme_keyauth(const char *token, const char *thumbprint)
{
    if (!token || !thumbprint) return NULL;
    return strfmt("%s.%s", token, thumbprint);
}

void acme_keyauth_digest(const char *keyauth, unsigned char out[32])
{
    /* SHA-256 cannot fail short of a broken library; zeroes then rather
     * than stack garbage */
    if (!sha256(keyauth, strlen(keyauth), out)) memset(out, 0, 32);
}

/* The JWS signature of in with k: ES256 as r||s (RFC 7518 3.4), not the
 * DER that OpenSSL produces, or RS256. */
static unsigned char *jws_sign(EVP_PKEY *k, enum key_kind kind, const char *in, size_t *siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *der = NULL, *sig = NULL;
    size_t dlen = 0;
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(ctx, NULL, &dlen, (const unsigned char *)in, strlen(in)) != 1)
        goto out;
    der = malloc(dlen);
    if (!der || EVP_DigestSign(ctx, der, &dlen, (const unsigned char *)in, strlen(in)) != 1)
        goto out;
    if (kind == KEY_RSA) {
        sig = der;
        der = NULL;
        *siglen = dlen;
        goto out;
    }
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    if (!es) goto out;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    sig = malloc(64);
    if (sig && (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)) {
        free(sig);
        sig = NULL;
    }
    ECDSA_SIG_free(es);
    *siglen = 64;
out:
    free(der);
    EVP_MD_CTX_free(ctx);
    return sig;
}

/* {"protected":...,"payload":...,"signature":...} from the encoded parts. */
static char *jws_object(const char *prot, const char *payload, const unsigned char *sig,
                        size_t siglen)
{
    char *s = b64url(sig, siglen);
    if (!s) return NULL;
    char *o =
        strfmt("{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", prot, payload, s);
    free(s);
    return o;
}

char *acme_jws(EVP_PKEY *acct, const char *kid, const char *nonce, const char *url,
               const char *payload)
{
    enum key_kind kind = key_kind(acct);
    if (kind == KEY_OTHER || !nonce || !url) return NULL;
    char *qkid = NULL, *jwk = NULL, *qnonce = json_quote(nonce), *qurl = json_quote(url);
    char *header = NULL, *prot = NULL, *pay = NULL, *input = NULL, *jws = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    if (kid)
        qkid = json_quote(kid);
    else
        jwk = acme_jwk(acct);
    if (!qnonce || !qurl || !(qkid || jwk)) goto out;
    header = strfmt("{\"alg\":\"%s\",\"%s\":%s,\"nonce\":%s,\"url\":%s}",
                    kind == KEY_P256 ? "ES256" : "RS256", kid ? "kid" : "jwk", kid ? qkid : jwk,
                    qnonce, qurl);
    if (!header || !(prot = b64url_str(header))) goto out;
    /* POST-as-GET (RFC 8555 6.3) signs an empty payload, not "{}" */
    if (!(pay = b64url_str(payload ? payload : ""))) goto out;
    if (!(input = strfmt("%s.%s", prot, pay))) goto out;
    if (!(sig = jws_sign(acct, kind, input, &siglen))) goto out;
    jws = jws_object(prot, pay, sig, siglen);
out:
    if (!jws) ERR_clear_error();
    free(qkid), free(jwk), free(qnonce), free(qurl);
    free(header), free(prot), free(pay), free(input), free(sig);
    return jws;
}

char *acme_eab(const char *kid, const unsigned char *hmac, size_t hlen, EVP_PKEY *acct,
               const char *url)
{
    if (!kid || !url || !hmac) return NULL;
    char *qkid = json_quote(kid), *qurl = json_quote(url), *jwk = acme_jwk(acct);
    char *header = NULL, *prot = NULL, *pay = NULL, *input = NULL, *jws = NULL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (!qkid || !qurl || !jwk) goto out;
    header = strfmt("{\"alg\":\"HS256\",\"kid\":%s,\"url\":%s}", qkid, qurl);
    if (!header || !(prot = b64url_str(header)) || !(pay = b64url_str(jwk))) goto out;
    if (!(input = strfmt("%s.%s", prot, pay))) goto out;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hmac, hlen, (unsigned char *)input,
                   strlen(input), mac, sizeof(mac), &maclen))
        goto out;
    jws = jws_object(prot, pay, mac, maclen);
out:
    if (!jws) ERR_clear_error();
    OPENSSL_cleanse(mac, sizeof(mac));
    free(qkid), free(qurl), free(jwk), free(header), free(prot), free(pay), free(input);
    return jws;
}

/* names[0..n) as a subjectAltName value: dNSNames only. */
static GENERAL_NAMES *dns_names(const char *const *names, size_t n)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    if (!gens) return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        if (len == 0 || len > INT_MAX || !gn || !ia5 || !ASN1_STRING_set(ia5, names[i], (int)len)) {
            GENERAL_NAME_free(gn);
            ASN1_IA5STRING_free(ia5);
            GENERAL_NAMES_free(gens);
            return NULL;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
        if (!sk_GENERAL_NAME_push(gens, gn)) {
            GENERAL_NAME_free(gn);
            GENERAL_NAMES_free(gens);
            return NULL;
        }
    }
    return gens;
}

/* A subject (or issuer) of CN=name, or empty when name does not fit a CN. */
static X509_NAME *cn_name(const char *name)
{
    X509_NAME *xn = X509_NAME_new();
    if (xn && strlen(name) <= CN_MAX &&
        !X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_UTF8, (const unsigned char *)name, -1, -1,
                                    0)) {
        X509_NAME_free(xn);
        return NULL;
    }
    return xn;
}

char *acme_csr(EVP_PKEY *key, const char *const *names, size_t n)
{
    if (!key || !names || n == 0 || !names[0]) return NULL;
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = cn_name(names[0]);
    GENERAL_NAMES *gens = dns_names(names, n);
    STACK_OF(X509_EXTENSION) *exts = NULL;
    unsigned char *der = NULL;
    char *csr = NULL;
    if (!req || !subject || !gens) goto out;
    if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
        !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key))
        goto out;
    if (!X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) ||
        !X509_REQ_add_extensions(req, exts))
        goto out;
    if (X509_REQ_sign(req, key, EVP_sha256()) <= 0) goto out;
    int len = i2d_X509_REQ(req, &der);
    if (len > 0) csr = b64url(der, (size_t)len);
out:
    if (!csr) ERR_clear_error();
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    return csr;
}

/* The critical id-pe-acmeIdentifier extension: its extnValue is the DER
 * of an OCTET STRING holding SHA-256(keyauth), so the value bytes are
 * 04 20 followed by the digest (RFC 8737 3). */
static X509_EXTENSION *acme_identifier_ext(const char *keyauth)
{
    unsigned char digest[32], *inner = NULL;
    acme_keyauth_digest(keyauth, digest);
    ASN1_OBJECT *oid = OBJ_txt2obj(ACME_IDENTIFIER_OID, 1);
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new(), *wrapped = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    int len;
    if (!oid || !value || !wrapped || !ASN1_OCTET_STRING_set(value, digest, sizeof(digest)))
        goto out;
    if ((len = i2d_ASN1_OCTET_STRING(value, &inner)) <= 0) goto out;
    if (!ASN1_OCTET_STRING_set(wrapped, inner, len)) goto out;
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, wrapped);
out:
    OPENSSL_free(inner);
    ASN1_OCTET_STRING_free(wrapped);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    return ext;
}

/* A random positive serial of 16 bytes (RFC 5280 allows up to 20). */
static bool random_serial(X509 *x)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) return false;
    b[0] &= 0x7f; /* positive, and the DER needs no 00 byte in front */
    b[0] |= 0x01; /* and never zero */
    BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    return ok;
}

bool acme_alpn_cert(const char *name, const char *keyauth, X509 **cert, EVP_PKEY **key)
{
    *cert = NULL;
    *key = NULL;
    if (!name || !*name || !keyauth) return false;
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    X509 *x = X509_new();
    X509_NAME *subject = cn_name(name);
    const char *const one[] = {name};
    GENERAL_NAMES *gens = dns_names(one, 1);
    X509_EXTENSION *ident = acme_identifier_ext(keyauth);
    bool ok = false;
    if (!k || !x || !subject || !gens || !ident) goto out;
    if (!X509_set_version(x, X509_VERSION_3) || !random_serial(x) ||
        !X509_set_subject_name(x, subject) || !X509_set_issuer_name(x, subject) ||
        !X509_set_pubkey(x, k))
        goto out;
    /* an hour back, so that a validator whose clock lags still accepts it */
    if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, NULL) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 7, 0, NULL))
        goto out;
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) ||
        !X509_add_ext(x, ident, -1))
        goto out;
    if (X509_sign(x, k, EVP_sha256()) <= 0) goto out;
    ok = true;
out:
    X509_EXTENSION_free(ident);
    GENERAL_NAMES_free(gens);
    X509_NAME_free(subject);
    if (ok) {
        *cert = x;
        *key = k;
    } else {
        ERR_clear_error();
        X509_free(x);
        EVP_PKEY_free(k);
    }
    return ok;
}

char *acme_ari_id(X509 *leaf)
{
    if (!leaf) return NULL;
    const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(leaf);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
    if (!akid || ASN1_STRING_length(akid) <= 0 || !serial) return NULL;
    /* the serial's DER content bytes, which keep the 00 a positive number
     * with its high bit set needs: what i2d writes after tag and length */
    unsigned char *der = NULL;
    int dlen = i2d_ASN1_INTEGER(serial, &der);
    char *id = NULL, *a = NULL, *s = NULL;
    const unsigned char *p = der;
    long clen;
    int tag, cls;
    if (dlen <= 0 || (ASN1_get_object(&p, &clen, &tag, &cls, dlen) & 0x80) ||
        tag != V_ASN1_INTEGER || clen <= 0 || p + clen != der + dlen)
        goto out;
    a = b64url(ASN1_STRING_get0_data(akid), (size_t)ASN1_STRING_length(akid));
    s = b64url(p, (size_t)clen);
    if (a && s) id = strfmt("%s.%s", a, s);
out:
    if (!id) ERR_clear_error();
    OPENSSL_free(der);
    free(a);
    free(s);
    return id;
}

/* One PEM certificate block: the whole block must be one certificate. */
static X509 *pem_block_cert(const char *name, const unsigned char *data, long len)
{
    if (strcmp(name, PEM_STRING_X509) != 0) return NULL;
    const unsigned char *p = data;
    X509 *x = d2i_X509(NULL, &p, len);
    if (x && p != data + len) {
        X509_free(x);
        return NULL;
    }
    return x;
}

bool acme_chain_parse(const char *pem, size_t len, X509 **leaf, STACK_OF(X509) * *chain)
{
    *leaf = NULL;
    *chain = NULL;
    if (!pem || len > INT_MAX) return false;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *all = sk_X509_new_null();
    bool ok = false;
    if (!b || !all) goto out;
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        /* PEM_read_bio_X509 would skip blocks of other types silently:
         * reading each block keeps a key or a CSR in the chain an error */
        if (!PEM_read_bio(b, &name, &header, &data, &dlen)) {
            unsigned long e = ERR_peek_last_error();
            /* no further BEGIN line is the end; a broken block is not */
            ok = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE &&
                 sk_X509_num(all) > 0;
            break;
        }
        X509 *x = pem_block_cert(name, data, dlen);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (!x) break;
        if (!sk_X509_push(all, x)) {
            X509_free(x);
            break;
        }
    }
    if (ok) {
        *leaf = sk_X509_shift(all);
        *chain = all;
        all = NULL;
    }
out:
    ERR_clear_error();
    sk_X509_pop_free(all, X509_free);
    BIO_free(b);
    return ok;
}

/* An ASN1_TIME as time_t: the seconds from the epoch to it. 0 if OpenSSL
 * cannot read it, which for notAfter reads as long expired (so the
 * certificate is renewed rather than trusted). */
static time_t asn1_time_t(const ASN1_TIME *t)
{
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    time_t r = 0;
    if (epoch && t && ASN1_TIME_diff(&days, &secs, epoch, t))
        r = (time_t)days * 86400 + (time_t)secs;
    ASN1_TIME_free(epoch);
    return r;
}

time_t acme_not_after(X509 *c)
{
    return c ? asn1_time_t(X509_get0_notAfter(c)) : 0;
}

time_t acme_not_before(X509 *c)
{
    return c ? asn1_time_t(X509_get0_notBefore(c)) : 0;
}

/* Does the certificate's dNSName d[0..dlen) cover name? A wildcard "*.rest"
 * stands for exactly one non-empty label in front of rest. */
static bool dns_match(const char *d, size_t dlen, const char *name)
{
    size_t nlen = strlen(name);
    if (dlen == 0 || memchr(d, '\0', dlen)) return false;
    if (dlen == nlen && strncasecmp(d, name, nlen) == 0) return true;
    if (dlen < 3 || d[0] != '*' || d[1] != '.') return false;
    const char *dot = strchr(name, '.');
    if (!dot || dot == name) return false;
    size_t rest = nlen - (size_t)(dot + 1 - name);
    return rest == dlen - 2 && rest > 0 && strncasecmp(dot + 1, d + 2, rest) == 0;
}

bool acme_cert_covers(X509 *c, const char *name)
{
    if (!c || !name || !*name) return false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; gens && !found && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        if (gn->type != GEN_DNS) continue;
        found = dns_match((const char *)ASN1_STRING_get0_data(gn->d.dNSName),
                          (size_t)ASN1_STRING_length(gn->d.dNSName), name);
    }
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    return found;
}

bool acme_cert_key_match(X509 *c, EVP_PKEY *key)
{
    if (!c || !key) return false;
    EVP_PKEY *pub = X509_get0_pubkey(c);
    /* EVP_PKEY_eq compares the public halves; unlike
     * X509_check_private_key it leaves no error behind on a mismatch */
    bool eq = pub && EVP_PKEY_eq(pub, key) == 1;
    ERR_clear_error();
    return eq;
}
