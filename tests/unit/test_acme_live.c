/* What the ACME client publishes for the serving threads (serve/acme_live.h):
 * the lookups, the swap, freeing a table. */
#include "autoconf.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/acme_live.h"
#include "unit.h"

/* ---- fixtures ---- */

/* A self-signed P-256 certificate for name (its CN and only SAN). */
static X509 *make_cert(const char *name, EVP_PKEY **key)
{
    *key = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(*key);
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, *key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", name);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    ck_assert_ptr_nonnull(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    ck_assert_int_gt(X509_sign(x, *key, EVP_sha256()), 0);
    return x;
}

static void add_cert(struct acme_live *l, const char *name, bool chain)
{
    struct acme_live_cert *c = &l->certs[l->ncerts++];
    c->name = strdup(name);
    c->x509 = make_cert(name, &c->key);
    if (chain) {
        EVP_PKEY *k;
        c->chain = sk_X509_new_null();
        sk_X509_push(c->chain, make_cert("issuer.test", &k));
        EVP_PKEY_free(k);
    }
}

static void add_token(struct acme_live *l, const char *token, const char *keyauth)
{
    struct acme_live_token *t = &l->tokens[l->ntokens++];
    t->token = strdup(token);
    t->token_len = strlen(token);
    t->keyauth = strdup(keyauth);
    t->keyauth_len = strlen(keyauth);
}

static void add_alpn(struct acme_live *l, const char *name)
{
    struct acme_live_alpn *a = &l->alpn[l->nalpn++];
    a->name = strdup(name);
    a->x509 = make_cert(name, &a->key);
}

static struct acme_live *new_table(void)
{
    struct acme_live *l = calloc(1, sizeof(*l));
    ck_assert_ptr_nonnull(l);
    l->certs = calloc(4, sizeof(*l->certs));
    l->tokens = calloc(4, sizeof(*l->tokens));
    l->alpn = calloc(4, sizeof(*l->alpn));
    return l;
}

/* ---- the table ---- */

START_TEST(test_lookups)
{
    ck_assert_ptr_null(acme_live_cert(NULL, "a.example", 9));
    ck_assert_ptr_null(acme_live_token(NULL, "t", 1));
    ck_assert_ptr_null(acme_live_alpn(NULL, "a.example", 9));
    struct acme_live *l = new_table();
    add_cert(l, "a.example", false);
    add_cert(l, "b.example", true);
    add_token(l, "tok-1_A", "tok-1_A.thumb");
    add_alpn(l, "c.example");

    /* any case, with or without a trailing dot; len bounds the name */
    ck_assert_ptr_eq(acme_live_cert(l, "a.example", 9), &l->certs[0]);
    ck_assert_ptr_eq(acme_live_cert(l, "B.Example.", 10), &l->certs[1]);
    ck_assert_ptr_eq(acme_live_cert(l, "A.EXAMPLE.ORG", 9), &l->certs[0]);
    ck_assert_ptr_null(acme_live_cert(l, "a.example..", 11));
    ck_assert_ptr_null(acme_live_cert(l, "a.exampl", 8));
    ck_assert_ptr_null(acme_live_cert(l, "a.examplex", 10));
    ck_assert_ptr_null(acme_live_cert(l, "x.a.example", 11));
    ck_assert_ptr_null(acme_live_cert(l, ".", 1));
    ck_assert_ptr_null(acme_live_cert(l, "", 0));
    ck_assert_ptr_null(acme_live_cert(l, "c.example", 9)); /* a challenge is no certificate */
    ck_assert_ptr_eq(acme_live_alpn(l, "C.example.", 10), &l->alpn[0]);
    ck_assert_ptr_null(acme_live_alpn(l, "a.example", 9));

    /* tokens: exact bytes */
    ck_assert_ptr_eq(acme_live_token(l, "tok-1_A", 7), &l->tokens[0]);
    ck_assert_ptr_null(acme_live_token(l, "TOK-1_A", 7));
    ck_assert_ptr_null(acme_live_token(l, "tok-1_", 6));
    ck_assert_ptr_null(acme_live_token(l, "tok-1_AB", 8));
    ck_assert_ptr_null(acme_live_token(l, "", 0));

    /* the http-01 path: the prefix, then the token up to a query */
#define P(s) acme_live_http01(l, s, strlen(s))
    ck_assert_ptr_eq(P("/.well-known/acme-challenge/tok-1_A"), &l->tokens[0]);
    ck_assert_ptr_eq(P("/.well-known/acme-challenge/tok-1_A?x=1"), &l->tokens[0]);
    ck_assert_ptr_null(P("/.well-known/acme-challenge/tok-1_A/"));
    ck_assert_ptr_null(P("/.well-known/acme-challenge/"));
    ck_assert_ptr_null(P("/.well-known/acme-challenge/?tok-1_A"));
    ck_assert_ptr_null(P("/.well-known/acme-challengE/tok-1_A"));
    ck_assert_ptr_null(P("/tok-1_A"));
    ck_assert_ptr_null(acme_live_http01(NULL, "/.well-known/acme-challenge/tok-1_A", 35));
#undef P
    acme_live_free(l);
    acme_live_free(NULL);
}
END_TEST

START_TEST(test_swap)
{
    struct acme_live *a = new_table(), *b = new_table();
    add_cert(a, "a.example", true);
    add_alpn(b, "b.example");
    ck_assert_ptr_null(acme_live_swap(a));
    ck_assert_ptr_eq(acme_live_get(), a);
    ck_assert_ptr_eq(acme_live_swap(b), a);
    ck_assert_ptr_eq(acme_live_get(), b);
    ck_assert_ptr_eq(acme_live_swap(NULL), b);
    ck_assert_ptr_null(acme_live_get());
    /* what the control plane does after its barrier: everything freed
     * (valgrind and ASan runs of this suite see leaks) */
    acme_live_free(a);
    acme_live_free(b);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("acme_live");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_lookups);
    tcase_add_test(tc, test_swap);
    suite_add_tcase(s, tc);
    return s;
}
