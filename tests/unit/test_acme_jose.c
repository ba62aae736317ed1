/* lib/acme_jose: every signature is verified here with OpenSSL directly,
 * every encoding is decoded back, and the RFCs' own examples (RFC 7638
 * thumbprint, RFC 9773 certificate identifier) are reproduced. */
#include "autoconf.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/acme_jose.h"
#include "unit.h"

/* RFC 7638 section 3.1: the example RSA key and its thumbprint */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
    "BJECPebWK"
    "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
    "FDW2QvzqY368QQMi"
    "cAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcR"
    "wr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char rfc7638_thumbprint[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/* Decodes base64url that must be valid; the result is NUL-terminated. */
static unsigned char *dec(const char *s, size_t *len)
{
    unsigned char *raw;
    size_t n;
    ck_assert_msg(b64url_decode(s, strlen(s), &raw, &n), "not base64url: %s", s);
    unsigned char *out = malloc(n + 1);
    ck_assert_ptr_nonnull(out);
    memcpy(out, raw, n);
    out[n] = '\0';
    free(raw);
    if (len) *len = n;
    return out;
}

static json_t *dec_json(const char *s)
{
    char *text = (char *)dec(s, NULL);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    ck_assert_msg(j != NULL, "not JSON: %s (%s)", text, err.text);
    free(text);
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "no string member %s", key);
    return json_string_value(v);
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len;
    ck_assert_int_eq(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
    ck_assert_uint_eq(len, 32);
}

/* Verifies sig over in with k: ES256 signatures arrive as r||s and go
 * back to DER for OpenSSL. */
static bool verify(EVP_PKEY *k, const char *in, const unsigned char *sig, size_t siglen)
{
    unsigned char *der = NULL;
    int derlen = 0;
    if (EVP_PKEY_is_a(k, "EC")) {
        ck_assert_uint_eq(siglen, 64);
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        ck_assert(es && r && s);
        ck_assert_int_eq(ECDSA_SIG_set0(es, r, s), 1);
        derlen = i2d_ECDSA_SIG(es, &der);
        ck_assert_int_gt(derlen, 0);
        ECDSA_SIG_free(es);
        sig = der;
        siglen = (size_t)derlen;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ck_assert_int_eq(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
    int rc = EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)in, strlen(in));
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return rc == 1;
}

/* The public key from an RFC 7638 style n and e (base64url). */
static EVP_PKEY *rsa_public(const char *n64, const char *e64)
{
    size_t nlen, elen;
    unsigned char *n = dec(n64, &nlen), *e = dec(e64, &elen);
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    ck_assert(bn && be && bld);
    ck_assert(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn));
    ck_assert(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be));
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL;
    ck_assert(params && ctx);
    ck_assert_int_eq(EVP_PKEY_fromdata_init(ctx), 1);
    ck_assert_int_eq(EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return k;
}

/* A signed certificate for names with the given serial and, when akid is
 * not NULL, an Authority Key Identifier; read back from DER as a
 * certificate from a CA would be. */
static X509 *make_cert(EVP_PKEY *k, const char *const *names, size_t n, const unsigned char *serial,
                       int slen, const unsigned char *akid, int alen)
{
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    ck_assert(X509_set_version(x, X509_VERSION_3));
    BIGNUM *bn = BN_bin2bn(serial, slen, NULL);
    ck_assert(bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
    BN_free(bn);
    X509_NAME *xn = X509_get_subject_name(x);
    ck_assert(X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_UTF8, (const unsigned char *)"test", -1,
                                         -1, 0));
    ck_assert(X509_set_issuer_name(x, xn));
    ck_assert(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    ck_assert(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    ck_assert(X509_set_pubkey(x, k));
    if (n > 0) {
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
        for (size_t i = 0; i < n; i++) {
            GENERAL_NAME *gn = GENERAL_NAME_new();
            ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
            ck_assert(gn && ia5 && ASN1_STRING_set(ia5, names[i], -1));
            GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
            ck_assert(sk_GENERAL_NAME_push(gens, gn));
        }
        ck_assert(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT));
        GENERAL_NAMES_free(gens);
    }
    if (akid) {
        AUTHORITY_KEYID *a = AUTHORITY_KEYID_new();
        a->keyid = ASN1_OCTET_STRING_new();
        ck_assert(a->keyid && ASN1_OCTET_STRING_set(a->keyid, akid, alen));
        ck_assert(X509_add1_ext_i2d(x, NID_authority_key_identifier, a, 0, X509V3_ADD_DEFAULT));
        AUTHORITY_KEYID_free(a);
    }
    ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    ck_assert_int_gt(len, 0);
    X509_free(x);
    const unsigned char *p = der;
    x = d2i_X509(NULL, &p, len);
    ck_assert_ptr_nonnull(x);
    OPENSSL_free(der);
    return x;
}

static X509 *simple_cert(EVP_PKEY *k, const char *name)
{
    const unsigned char serial[] = {0x01};
    return make_cert(k, &name, 1, serial, 1, NULL, 0);
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    ck_assert(b && PEM_write_bio_X509(b, x));
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    return s;
}

START_TEST(b64url_round_trip)
{
    static const struct {
        const char *raw, *enc;
    } v[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *e = b64url(v[i].raw, strlen(v[i].raw));
        ck_assert_str_eq(e, v[i].enc);
        free(e);
        size_t n;
        unsigned char *d = dec(v[i].enc, &n);
        ck_assert_uint_eq(n, strlen(v[i].raw));
        ck_assert_mem_eq(d, v[i].raw, n);
        free(d);
    }
    /* the URL-safe alphabet: 0xfb 0xff -> "-_8", never "+/" */
    const unsigned char odd[] = {0xfb, 0xff};
    char *e = b64url(odd, 2);
    ck_assert_str_eq(e, "-_8");
    free(e);
    /* every byte value through and back */
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    e = b64url(all, sizeof(all));
    ck_assert_ptr_null(strpbrk(e, "+/="));
    size_t n;
    unsigned char *d = dec(e, &n);
    ck_assert_uint_eq(n, 256);
    ck_assert_mem_eq(d, all, 256);
    free(d);
    free(e);
}
END_TEST

START_TEST(b64url_invalid)
{
    static const char *const bad[] = {"Zg==", "Zm9v YmFy", "Zm9v\nYmFy", "Zm+v",   "Zm/v",
                                      "Z",    "Zm9vY",     "Zm9v!",      "Zm\x80v"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *out = (unsigned char *)"x";
        size_t n = 99;
        ck_assert_msg(!b64url_decode(bad[i], strlen(bad[i]), &out, &n), "accepted %s", bad[i]);
        ck_assert_ptr_null(out);
        ck_assert_uint_eq(n, 0);
    }
    /* the length bounds the input: what follows is not read */
    unsigned char *out;
    size_t n;
    ck_assert(b64url_decode("Zm9v====", 4, &out, &n));
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(out, "foo", 3);
    free(out);
}
END_TEST

START_TEST(thumbprint_rfc7638)
{
    EVP_PKEY *k = rsa_public(rfc7638_n, "AQAB");
    char *jwk = acme_jwk(k);
    char want[600];
    snprintf(want, sizeof(want), "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"%s\"}", rfc7638_n);
    ck_assert_str_eq(jwk, want);
    char *t = acme_thumbprint(k);
    ck_assert_str_eq(t, rfc7638_thumbprint);
    char *ka = acme_keyauth("tok-EN_1", t);
    ck_assert_str_eq(ka, "tok-EN_1.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    unsigned char got[32], want_md[32];
    acme_keyauth_digest(ka, got);
    sha256(ka, strlen(ka), want_md);
    ck_assert_mem_eq(got, want_md, 32);
    free(ka);
    free(t);
    free(jwk);
    EVP_PKEY_free(k);
}
END_TEST

/* The EC JWK: members in RFC 7638 order, x and y always 32 bytes, even
 * for a coordinate with a leading zero byte. */
START_TEST(jwk_ec)
{
    EVP_PKEY *k = NULL;
    unsigned char pub[65];
    for (int tries = 0; tries < 4000; tries++) {
        EVP_PKEY_free(k);
        k = acme_key_new(ACME_KEY_EC256);
        ck_assert_ptr_nonnull(k);
        size_t len;
        ck_assert(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub,
                                                  sizeof(pub), &len));
        ck_assert_uint_eq(len, 65);
        ck_assert_uint_eq(pub[0], 0x04);
        if (pub[1] == 0 || pub[33] == 0) break;
    }
    ck_assert_msg(pub[1] == 0 || pub[33] == 0, "no key with a short coordinate");
    char *jwk = acme_jwk(k);
    const char prefix[] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"";
    ck_assert_int_eq(strncmp(jwk, prefix, strlen(prefix)), 0);
    ck_assert_ptr_null(strpbrk(jwk, " \n\t"));
    json_t *j = json_loads(jwk, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(json_object_size(j), 4);
    size_t xl, yl;
    unsigned char *x = dec(jstr(j, "x"), &xl), *y = dec(jstr(j, "y"), &yl);
    ck_assert_uint_eq(xl, 32);
    ck_assert_uint_eq(yl, 32);
    ck_assert_mem_eq(x, pub + 1, 32);
    ck_assert_mem_eq(y, pub + 33, 32);
    /* "x" before "y" */
    ck_assert(strstr(jwk, "\"x\"") < strstr(jwk, "\"y\""));
    /* the thumbprint is SHA-256 of exactly this text */
    unsigned char md[32];
    sha256(jwk, strlen(jwk), md);
    char *want = b64url(md, 32), *t = acme_thumbprint(k);
    ck_assert_str_eq(t, want);
    free(t);
    free(want);
    free(x);
    free(y);
    json_decref(j);
    free(jwk);
    EVP_PKEY_free(k);
    /* another curve is no ES256 key */
    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_null(acme_jwk(k));
    ck_assert_ptr_null(acme_jws(k, NULL, "n", "https://ca/x", "{}"));
    EVP_PKEY_free(k);
}
END_TEST

/* Checks one flattened JWS made by acct; returns its protected header. */
static json_t *check_jws(const char *jws, EVP_PKEY *acct, const char *alg, const char *payload)
{
    json_t *o = json_loads(jws, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_eq(json_object_size(o), 3);
    const char *prot = jstr(o, "protected"), *pay = jstr(o, "payload"), *sig = jstr(o, "signature");
    json_t *h = dec_json(prot);
    ck_assert_str_eq(jstr(h, "alg"), alg);
    char *p = (char *)dec(pay, NULL);
    ck_assert_str_eq(p, payload);
    free(p);
    /* the signature covers protected "." payload, and only that */
    size_t slen;
    unsigned char *s = dec(sig, &slen);
    char *input = malloc(strlen(prot) + strlen(pay) + 2);
    sprintf(input, "%s.%s", prot, pay);
    ck_assert(verify(acct, input, s, slen));
    input[strlen(input) - 1] ^= 1;
    ck_assert(!verify(acct, input, s, slen));
    free(input);
    free(s);
    json_decref(o);
    return h;
}

START_TEST(jws_es256)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    const char *kid = "https://ca.example/acme/acct/\"42\"";
    char *jws =
        acme_jws(k, kid, "nonce-1", "https://ca.example/acme/new-order", "{\"identifiers\":[]}");
    ck_assert_ptr_nonnull(jws);
    json_t *h = check_jws(jws, k, "ES256", "{\"identifiers\":[]}");
    ck_assert_uint_eq(json_object_size(h), 4);
    ck_assert_str_eq(jstr(h, "kid"), kid);
    ck_assert_str_eq(jstr(h, "nonce"), "nonce-1");
    ck_assert_str_eq(jstr(h, "url"), "https://ca.example/acme/new-order");
    ck_assert_ptr_null(json_object_get(h, "jwk"));
    json_decref(h);
    free(jws);
    /* ECDSA is randomized: two signatures differ, and both verify */
    char *a = acme_jws(k, "k", "n", "u", NULL), *b = acme_jws(k, "k", "n", "u", NULL);
    ck_assert_str_ne(a, b);
    json_decref(check_jws(a, k, "ES256", ""));
    json_decref(check_jws(b, k, "ES256", ""));
    free(a);
    free(b);
    /* another key's signature does not verify */
    EVP_PKEY *other = acme_key_new(ACME_KEY_EC256);
    jws = acme_jws(other, "k", "n", "u", "{}");
    json_t *o = json_loads(jws, 0, NULL);
    size_t slen;
    unsigned char *s = dec(jstr(o, "signature"), &slen);
    char input[4096];
    snprintf(input, sizeof(input), "%s.%s", jstr(o, "protected"), jstr(o, "payload"));
    ck_assert(verify(other, input, s, slen));
    ck_assert(!verify(k, input, s, slen));
    free(s);
    json_decref(o);
    free(jws);
    EVP_PKEY_free(other);
    EVP_PKEY_free(k);
}
END_TEST

/* Without a kid the header carries the account JWK (newAccount); an empty
 * or NULL payload is a POST-as-GET with payload "". */
START_TEST(jws_jwk_and_post_as_get)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    char *jwk = acme_jwk(k);
    for (int i = 0; i < 2; i++) {
        char *jws = acme_jws(k, NULL, "abc", "https://ca.example/new-acct", i ? "" : NULL);
        ck_assert_ptr_nonnull(jws);
        json_t *o = json_loads(jws, 0, NULL);
        ck_assert_str_eq(jstr(o, "payload"), "");
        json_decref(o);
        json_t *h = check_jws(jws, k, "ES256", "");
        ck_assert_ptr_null(json_object_get(h, "kid"));
        char *got = json_dumps(json_object_get(h, "jwk"), JSON_COMPACT | JSON_PRESERVE_ORDER);
        ck_assert_str_eq(got, jwk);
        free(got);
        ck_assert_str_eq(jstr(h, "nonce"), "abc");
        json_decref(h);
        free(jws);
    }
    free(jwk);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(jws_rs256)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_RSA2048);
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(EVP_PKEY_get_bits(k), 2048);
    char *jws = acme_jws(k, NULL, "n0", "https://ca.example/new-acct", "{\"a\":1}");
    json_t *h = check_jws(jws, k, "RS256", "{\"a\":1}");
    json_t *jwk = json_object_get(h, "jwk");
    ck_assert_str_eq(jstr(jwk, "kty"), "RSA");
    ck_assert_str_eq(jstr(jwk, "e"), "AQAB");
    size_t nlen;
    unsigned char *n = dec(jstr(jwk, "n"), &nlen);
    ck_assert_uint_eq(nlen, 256);
    ck_assert_uint_ne(n[0], 0); /* minimal big-endian */
    free(n);
    json_decref(h);
    free(jws);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(eab_hs256)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    size_t hlen;
    unsigned char *hkey =
        dec("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W", &hlen);
    char *eab = acme_eab("kid-1", hkey, hlen, k, "https://ca.example/acme/new-account");
    ck_assert_ptr_nonnull(eab);
    json_t *o = json_loads(eab, 0, NULL);
    ck_assert_ptr_nonnull(o);
    const char *prot = jstr(o, "protected"), *pay = jstr(o, "payload");
    json_t *h = dec_json(prot);
    ck_assert_uint_eq(json_object_size(h), 3);
    ck_assert_str_eq(jstr(h, "alg"), "HS256");
    ck_assert_str_eq(jstr(h, "kid"), "kid-1");
    ck_assert_str_eq(jstr(h, "url"), "https://ca.example/acme/new-account");
    json_decref(h);
    char *p = (char *)dec(pay, NULL), *jwk = acme_jwk(k);
    ck_assert_str_eq(p, jwk);
    free(p);
    free(jwk);
    char input[2048];
    snprintf(input, sizeof(input), "%s.%s", prot, pay);
    unsigned char mac[32];
    size_t maclen;
    ck_assert_ptr_nonnull(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hkey, hlen,
                                    (const unsigned char *)input, strlen(input), mac, sizeof(mac),
                                    &maclen));
    char *want = b64url(mac, maclen);
    ck_assert_str_eq(jstr(o, "signature"), want);
    free(want);
    json_decref(o);
    free(eab);
    free(hkey);
    EVP_PKEY_free(k);
}
END_TEST

/* The CSR's DNS names from its subjectAltName, "," separated. */
static void csr_names(X509_REQ *req, char *out, size_t size)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    ck_assert_ptr_nonnull(exts);
    int i = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
    ck_assert_int_ge(i, 0);
    GENERAL_NAMES *gens = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, i));
    ck_assert_ptr_nonnull(gens);
    out[0] = '\0';
    for (int j = 0; j < sk_GENERAL_NAME_num(gens); j++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, j);
        ck_assert_int_eq(gn->type, GEN_DNS);
        if (j) strncat(out, ",", size - strlen(out) - 1);
        strncat(out, (const char *)ASN1_STRING_get0_data(gn->d.dNSName), size - strlen(out) - 1);
    }
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static X509_REQ *csr_parse(const char *csr)
{
    size_t len;
    unsigned char *der = dec(csr, &len);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    ck_assert_ptr_nonnull(req);
    ck_assert_ptr_eq(p, der + len);
    free(der);
    return req;
}

START_TEST(csr_names_and_signature)
{
    for (int t = 0; t < 2; t++) {
        EVP_PKEY *k = acme_key_new(t ? ACME_KEY_RSA2048 : ACME_KEY_EC256);
        const char *const names[] = {"www.example.com", "example.com", "*.example.com"};
        char *csr = acme_csr(k, names, 3);
        ck_assert_ptr_nonnull(csr);
        X509_REQ *req = csr_parse(csr);
        ck_assert_int_eq(X509_REQ_verify(req, k), 1);
        ck_assert_int_eq(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), k), 1);
        ck_assert_int_eq(X509_REQ_get_signature_nid(req),
                         t ? NID_sha256WithRSAEncryption : NID_ecdsa_with_SHA256);
        char cn[256];
        ck_assert_int_gt(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName,
                                                   cn, sizeof(cn)),
                         0);
        ck_assert_str_eq(cn, "www.example.com");
        char got[256];
        csr_names(req, got, sizeof(got));
        ck_assert_str_eq(got, "www.example.com,example.com,*.example.com");
        /* a different key does not verify it */
        EVP_PKEY *other = acme_key_new(ACME_KEY_EC256);
        ck_assert_int_ne(X509_REQ_verify(req, other), 1);
        EVP_PKEY_free(other);
        X509_REQ_free(req);
        free(csr);
        EVP_PKEY_free(k);
    }
    /* a name too long for a CN is only in subjectAltName */
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    const char *const longname[] = {"a-very-long-label-that-goes-on-and-on-and-on.and-on-and-on"
                                    ".example.com"};
    char *csr = acme_csr(k, longname, 1);
    ck_assert_ptr_nonnull(csr);
    X509_REQ *req = csr_parse(csr);
    ck_assert_int_eq(X509_REQ_verify(req, k), 1);
    ck_assert_int_eq(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
    char got[256];
    csr_names(req, got, sizeof(got));
    ck_assert_str_eq(got, longname[0]);
    X509_REQ_free(req);
    free(csr);
    /* no names, or an empty one */
    ck_assert_ptr_null(acme_csr(k, longname, 0));
    const char *const empty[] = {"example.com", ""};
    ck_assert_ptr_null(acme_csr(k, empty, 2));
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(alpn_cert)
{
    const char *ka =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    X509 *x;
    EVP_PKEY *k;
    time_t now = time(NULL);
    ck_assert(acme_alpn_cert("shop.example.com", ka, &x, &k));
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(k);
    ck_assert(EVP_PKEY_is_a(k, "EC"));
    ck_assert_int_eq(EVP_PKEY_get_bits(k), 256);
    ck_assert_int_eq(X509_get_version(x), X509_VERSION_3);
    ck_assert_int_eq(X509_verify(x, k), 1);
    ck_assert(acme_cert_key_match(x, k));
    /* self-signed */
    ck_assert_int_eq(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    /* validity: an hour back, seven days on */
    ck_assert_int_le(labs((long)(acme_not_before(x) - (now - 3600))), 60);
    ck_assert_int_le(labs((long)(acme_not_after(x) - (now + 7 * 86400))), 60);
    /* exactly one SAN, the name */
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    ck_assert_ptr_nonnull(gens);
    ck_assert_int_eq(sk_GENERAL_NAME_num(gens), 1);
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);
    ck_assert_int_eq(gn->type, GEN_DNS);
    ck_assert_str_eq((const char *)ASN1_STRING_get0_data(gn->d.dNSName), "shop.example.com");
    GENERAL_NAMES_free(gens);
    /* the critical acmeIdentifier: 04 20 SHA-256(keyauth) */
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int i = X509_get_ext_by_OBJ(x, oid, -1);
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(X509_get_ext_by_OBJ(x, oid, i), -1); /* only once */
    X509_EXTENSION *ext = X509_get_ext(x, i);
    ck_assert_int_eq(X509_EXTENSION_get_critical(ext), 1);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    ck_assert_int_eq(ASN1_STRING_length(v), 34);
    const unsigned char *d = ASN1_STRING_get0_data(v);
    ck_assert_uint_eq(d[0], 0x04);
    ck_assert_uint_eq(d[1], 0x20);
    unsigned char md[32];
    sha256(ka, strlen(ka), md);
    ck_assert_mem_eq(d + 2, md, 32);
    ASN1_OBJECT_free(oid);
    /* a fresh key and serial each time */
    X509 *x2;
    EVP_PKEY *k2;
    ck_assert(acme_alpn_cert("shop.example.com", ka, &x2, &k2));
    ck_assert_int_ne(EVP_PKEY_eq(k, k2), 1);
    ck_assert_int_ne(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(x2)), 0);
    ck_assert(!acme_cert_key_match(x, k2));
    X509_free(x2);
    EVP_PKEY_free(k2);
    X509_free(x);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(ari_id)
{
    /* RFC 9773 section 4.1 */
    const unsigned char akid[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                  0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    const unsigned char serial[] = {0x00, 0x87, 0x65, 0x43, 0x21};
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    const char *name = "example.com";
    X509 *x = make_cert(k, &name, 1, serial, sizeof(serial), akid, sizeof(akid));
    char *id = acme_ari_id(x);
    ck_assert_str_eq(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    X509_free(x);
    /* high bit clear: no 00 in front */
    const unsigned char small[] = {0x12, 0x34};
    x = make_cert(k, &name, 1, small, sizeof(small), akid, 1);
    id = acme_ari_id(x);
    ck_assert_str_eq(id, "aQ.EjQ");
    free(id);
    X509_free(x);
    /* no AKI, no identifier */
    x = make_cert(k, &name, 1, small, sizeof(small), NULL, 0);
    ck_assert_ptr_null(acme_ari_id(x));
    X509_free(x);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(chain_parse)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    X509 *c[3] = {simple_cert(k, "leaf.example"), simple_cert(k, "int1.example"),
                  simple_cert(k, "int2.example")};
    char *pem[3] = {cert_pem(c[0]), cert_pem(c[1]), cert_pem(c[2])};
    char all[16384];
    snprintf(all, sizeof(all), "%s%s%s", pem[0], pem[1], pem[2]);
    X509 *leaf;
    STACK_OF(X509) * chain;
    ck_assert(acme_chain_parse(all, strlen(all), &leaf, &chain));
    ck_assert_int_eq(X509_cmp(leaf, c[0]), 0);
    ck_assert_int_eq(sk_X509_num(chain), 2);
    ck_assert_int_eq(X509_cmp(sk_X509_value(chain, 0), c[1]), 0);
    ck_assert_int_eq(X509_cmp(sk_X509_value(chain, 1), c[2]), 0);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    /* one certificate: an empty chain */
    ck_assert(acme_chain_parse(pem[0], strlen(pem[0]), &leaf, &chain));
    ck_assert_int_eq(X509_cmp(leaf, c[0]), 0);
    ck_assert_ptr_nonnull(chain);
    ck_assert_int_eq(sk_X509_num(chain), 0);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    /* nothing, garbage, a key among the certificates, a cut block, a
     * block whose base64 is not a certificate */
    char *keypem = acme_key_pem(k);
    char bad[5][16384];
    snprintf(bad[0], sizeof(bad[0]), "%s", "");
    snprintf(bad[1], sizeof(bad[1]), "%s", "garbage\n");
    snprintf(bad[2], sizeof(bad[2]), "%s%s%s", pem[0], keypem, pem[1]);
    snprintf(bad[3], sizeof(bad[3]), "%s%.*s", pem[0], (int)strlen(pem[1]) - 40, pem[1]);
    snprintf(bad[4], sizeof(bad[4]),
             "%s-----BEGIN CERTIFICATE-----\nZm9vYmFy\n"
             "-----END CERTIFICATE-----\n",
             pem[0]);
    for (int i = 0; i < 5; i++) {
        leaf = (X509 *)1;
        chain = (STACK_OF(X509) *)1;
        ck_assert_msg(!acme_chain_parse(bad[i], strlen(bad[i]), &leaf, &chain), "bad[%d]", i);
        ck_assert_ptr_null(leaf);
        ck_assert_ptr_null(chain);
    }
    /* the length bounds the input: only the first certificate */
    ck_assert(acme_chain_parse(all, strlen(pem[0]), &leaf, &chain));
    ck_assert_int_eq(sk_X509_num(chain), 0);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    free(keypem);
    for (int i = 0; i < 3; i++) {
        free(pem[i]);
        X509_free(c[i]);
    }
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(covers)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    const char *const names[] = {"example.com", "*.Wild.example"};
    const unsigned char serial[] = {0x05};
    X509 *x = make_cert(k, names, 2, serial, 1, NULL, 0);
    static const char *const yes[] = {"example.com", "EXAMPLE.Com", "a.wild.example",
                                      "A.WILD.EXAMPLE", "x-1.wild.example"};
    static const char *const no[] = {
        "wild.example",       ".wild.example", "a.b.wild.example", "www.example.com",
        "example.co",         "example.com.",  "xexample.com",     "",
        "a.wild.example.com", "awild.example"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        ck_assert_msg(acme_cert_covers(x, yes[i]), "%s not covered", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ck_assert_msg(!acme_cert_covers(x, no[i]), "%s covered", no[i]);
    X509_free(x);
    /* no subjectAltName: the CN does not count */
    x = make_cert(k, NULL, 0, serial, 1, NULL, 0);
    ck_assert(!acme_cert_covers(x, "test"));
    X509_free(x);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(key_pem)
{
    for (int t = 0; t < 2; t++) {
        EVP_PKEY *k = acme_key_new(t ? ACME_KEY_RSA2048 : ACME_KEY_EC256);
        char *pem = acme_key_pem(k);
        ck_assert_ptr_nonnull(pem);
        ck_assert_int_eq(strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28), 0);
        EVP_PKEY *back = acme_key_from_pem(pem, strlen(pem));
        ck_assert_ptr_nonnull(back);
        ck_assert_int_eq(EVP_PKEY_eq(k, back), 1);
        /* the private half came back too: it signs what k verifies */
        char *jws = acme_jws(back, "kid", "n", "u", "{}");
        json_decref(check_jws(jws, k, t ? "RS256" : "ES256", "{}"));
        free(jws);
        EVP_PKEY_free(back);
        /* a cut PEM is no key */
        ck_assert_ptr_null(acme_key_from_pem(pem, strlen(pem) / 2));
        free(pem);
        EVP_PKEY_free(k);
    }
    ck_assert_ptr_null(acme_key_from_pem("", 0));
    ck_assert_ptr_null(acme_key_from_pem("garbage", 7));
    /* an encrypted key is refused without asking for a passphrase */
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    BIO *b = BIO_new(BIO_s_mem());
    ck_assert(PEM_write_bio_PrivateKey(b, k, EVP_aes_128_cbc(), (unsigned char *)"secret", 6, NULL,
                                       NULL));
    char *data;
    long n = BIO_get_mem_data(b, &data);
    ck_assert_ptr_null(acme_key_from_pem(data, (size_t)n));
    BIO_free(b);
    /* a public key is not a private key */
    b = BIO_new(BIO_s_mem());
    ck_assert(PEM_write_bio_PUBKEY(b, k));
    n = BIO_get_mem_data(b, &data);
    ck_assert_ptr_null(acme_key_from_pem(data, (size_t)n));
    BIO_free(b);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(key_match)
{
    EVP_PKEY *ec = acme_key_new(ACME_KEY_EC256), *ec2 = acme_key_new(ACME_KEY_EC256);
    EVP_PKEY *rsa = acme_key_new(ACME_KEY_RSA2048);
    X509 *x = simple_cert(ec, "example.com"), *y = simple_cert(rsa, "example.com");
    ck_assert(acme_cert_key_match(x, ec));
    ck_assert(!acme_cert_key_match(x, ec2));
    ck_assert(!acme_cert_key_match(x, rsa));
    ck_assert(acme_cert_key_match(y, rsa));
    ck_assert(!acme_cert_key_match(y, ec));
    /* after a PEM round trip the key still matches */
    char *pem = acme_key_pem(rsa);
    EVP_PKEY *back = acme_key_from_pem(pem, strlen(pem));
    ck_assert(acme_cert_key_match(y, back));
    EVP_PKEY_free(back);
    free(pem);
    X509_free(x);
    X509_free(y);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec2);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(validity_times)
{
    EVP_PKEY *k = acme_key_new(ACME_KEY_EC256);
    X509 *x = simple_cert(k, "example.com");
    ck_assert(ASN1_TIME_set_string(X509_getm_notBefore(x), "20250301120000Z"));
    ck_assert(ASN1_TIME_set_string(X509_getm_notAfter(x), "491231235959Z"));
    ck_assert_int_eq((long long)acme_not_before(x), 1740830400LL);
    ck_assert_int_eq((long long)acme_not_after(x), 2524607999LL);
    X509_free(x);
    EVP_PKEY_free(k);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("acme_jose");
    TCase *tc = tcase_create("jose");
    /* RSA key generation is slow, the more so under valgrind */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, b64url_round_trip);
    tcase_add_test(tc, b64url_invalid);
    tcase_add_test(tc, thumbprint_rfc7638);
    tcase_add_test(tc, jwk_ec);
    tcase_add_test(tc, jws_es256);
    tcase_add_test(tc, jws_jwk_and_post_as_get);
    tcase_add_test(tc, jws_rs256);
    tcase_add_test(tc, eab_hs256);
    tcase_add_test(tc, csr_names_and_signature);
    tcase_add_test(tc, alpn_cert);
    tcase_add_test(tc, ari_id);
    tcase_add_test(tc, chain_parse);
    tcase_add_test(tc, covers);
    tcase_add_test(tc, key_pem);
    tcase_add_test(tc, key_match);
    tcase_add_test(tc, validity_times);
    suite_add_tcase(s, tc);
    return s;
}
