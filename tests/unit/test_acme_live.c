/* What the ACME client publishes for the serving threads (serve/acme_live.h)
 * and how the handshakes of a listener use it (serve/tls.c): the lookups,
 * the swap, freeing a table, and in-memory handshakes against listeners
 * loaded from a config with `tls.acme` (SNI with an ACME certificate or
 * none yet, tls-alpn-01 with and without a pending challenge). */
#include "autoconf.h"

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/config.h"
#include "control/tls_config.h"
#include "serve/acme_live.h"
#include "serve/tls_srv.h"
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

/* ---- handshakes ---- */

/* with the acme: section tls.acme names need (nothing is ordered here) */
#define POOLS                                                                                      \
    "pools:\n  - name: api\n    regions:\n      - {name: eu, url: \"https://eu.test\"}\n"          \
    "acme: {directory: \"https://127.0.0.1:14000/dir\", accept_terms: true, storage: /tmp}\n"

static char tmpdir[32];
static char static_pem[64], static_key[64];

/* A static certificate for static.example and for a.example (which tls.acme
 * also lists: the static one wins), in files for the config. */
static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/acme_live_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(static_pem, sizeof(static_pem), "%s/s.pem", tmpdir);
    snprintf(static_key, sizeof(static_key), "%s/s.key", tmpdir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"static.example", -1,
                               -1, 0);
    X509_set_issuer_name(x, n);
    X509_EXTENSION *e =
        X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:static.example,DNS:a.example");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(x, k, EVP_sha256());
    FILE *f = fopen(static_pem, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(static_key, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void teardown(void)
{
    unlink(static_pem);
    unlink(static_key);
    rmdir(tmpdir);
}

static struct config *load(const char *yaml)
{
    struct diag d;
    diag_init(&d, "t.yaml");
    struct config *c = config_parse("t.yaml", yaml, strlen(yaml), &d);
    char line[512] = "";
    if (d.n) diag_format(&d, 0, line, sizeof(line));
    ck_assert_msg(c && d.n == 0, "rejected: %s", line);
    diag_free(&d);
    return c;
}

struct result {
    bool ok;
    int alert;     /* the server's alert the client got, or -1 */
    char alpn[16]; /* selected */
    char cn[64];   /* the CN of the certificate the server sent */
    bool resumed;
    SSL_SESSION *sess; /* for a resumption (caller frees) */
};

static int client_max = TLS1_3_VERSION;

static void info_cb(const SSL *ssl, int where, int ret)
{
    (void)ssl;
    int *alert = SSL_get_ex_data(ssl, 0);
    if ((where & SSL_CB_READ_ALERT) && alert) *alert = ret & 0xff;
}

/* One in-memory handshake with t: sni (or none), alpn (wire format, or
 * none). */
static struct result shake(struct tls_srv *t, const char *sni, const char *alpn, size_t alpn_len,
                           SSL_SESSION *resume)
{
    struct result r = {.alert = -1};
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_max_proto_version(cctx, client_max);
    SSL *srv = SSL_new(t->ctx), *cli = SSL_new(cctx);
    BIO *sb, *cb;
    ck_assert_int_eq(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(srv, sb, sb);
    SSL_set_bio(cli, cb, cb);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    SSL_set_ex_data(cli, 0, &r.alert);
    SSL_set_info_callback(cli, info_cb);
    if (sni) SSL_set_tlsext_host_name(cli, sni);
    if (alpn) SSL_set_alpn_protos(cli, (const unsigned char *)alpn, (unsigned)alpn_len);
    if (resume) SSL_set_session(cli, resume);
    bool sdone = false, cdone = false, failed = false;
    for (int i = 0; i < 16 && !(sdone && cdone) && !failed; i++) {
        SSL *ends[2] = {cli, srv};
        bool *done[2] = {&cdone, &sdone};
        for (int k = 0; k < 2 && !failed; k++) {
            if (*done[k]) continue;
            int rc = SSL_do_handshake(ends[k]);
            if (rc == 1) {
                *done[k] = true;
                continue;
            }
            int e = SSL_get_error(ends[k], rc);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) failed = true;
        }
    }
    /* the client may still read what the server sent last (an alert) */
    if (failed) {
        char b[16];
        SSL_read(cli, b, sizeof(b));
    }
    ERR_clear_error();
    r.ok = sdone && cdone;
    if (r.ok) {
        const unsigned char *p;
        unsigned n;
        SSL_get0_alpn_selected(cli, &p, &n);
        if (n && n < sizeof(r.alpn)) memcpy(r.alpn, p, n); /* p is NULL without ALPN */
        X509 *peer = SSL_get1_peer_certificate(cli);
        if (peer) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, r.cn,
                                      sizeof(r.cn));
            X509_free(peer);
        }
        r.resumed = SSL_session_reused(cli);
        /* TLS 1.3 tickets arrive after the handshake */
        char b[16];
        SSL_read(cli, b, sizeof(b));
        ERR_clear_error();
        r.sess = SSL_get1_session(cli);
        SSL_shutdown(cli); /* else freeing it makes the session not resumable */
    }
    SSL_free(srv);
    SSL_free(cli);
    SSL_CTX_free(cctx);
    return r;
}

struct counts {
    const char *listener;
    uint64_t full, failed, fail[TLS_FAIL_N];
};

static void count_cb(const struct tls_stats_view *v, void *arg)
{
    struct counts *c = arg;
    if (strcmp(v->listener, c->listener)) return;
    c->full = v->full;
    c->failed = v->failed;
    memcpy(c->fail, v->fail, sizeof(c->fail));
}

static struct counts counts_of(const char *listener)
{
    struct counts c = {listener, 0, 0, {0}};
    tls_stats_each(count_cb, &c);
    return c;
}

#define ALPN_ACME "\012acme-tls/1"
#define ALPN_BOTH "\010http/1.1\012acme-tls/1"
#define ALPN_HTTP "\010http/1.1"

START_TEST(test_acme_only_listener)
{
    struct config *c =
        load("listen:\n  - {address: \"127.0.0.1:18441\", tls: {acme: [a.example, B.Example.]}}\n"
             "  - {address: \"127.0.0.1:18442\", tls: {acme: [c.example]}}\n" POOLS);
    struct tls_srv *t = c->listen_tls[0];
    ck_assert_ptr_nonnull(t);
    size_t n;
    const char *const *names = tls_srv_acme_names(t, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(names[0], "a.example");
    ck_assert_str_eq(names[1], "b.example");
    ck_assert_uint_eq(tls_srv_ncerts(t), 0);
    ck_assert_ptr_null(acme_live_get());

    /* nothing published yet: every name fails with unrecognized_name,
     * and so does a handshake without SNI (there is no default) */
    struct result r = shake(t, "a.example", NULL, 0, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_UNRECOGNIZED_NAME);
    /* counted by the callback (the other refusals below are counted by
     * the transport, which these in-memory handshakes do not run) */
    struct counts k = counts_of("127.0.0.1:18441");
    ck_assert_uint_eq(k.fail[TLS_FAIL_UNKNOWN_SNI], 1);
    ck_assert_uint_eq(k.failed, 1);
    r = shake(t, NULL, NULL, 0, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_UNRECOGNIZED_NAME);
    r = shake(t, "other.example", NULL, 0, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_UNRECOGNIZED_NAME);

    /* published: the name is served at once (any case, trailing dot);
     * the other still fails */
    struct acme_live *l = new_table();
    add_cert(l, "a.example", true);
    add_alpn(l, "b.example");
    add_alpn(l, "zz.example");
    ck_assert_ptr_null(acme_live_swap(l));
    r = shake(t, "A.Example.", ALPN_HTTP, sizeof(ALPN_HTTP) - 1, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "a.example");
    ck_assert_str_eq(r.alpn, "http/1.1");
    SSL_SESSION_free(r.sess);
    r = shake(t, "b.example", NULL, 0, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_UNRECOGNIZED_NAME);

    /* tls-alpn-01: the challenge certificate and acme-tls/1, also where
     * http/1.1 is offered beside it; on any TLS listener (zz.example is
     * in no tls.acme list) */
    r = shake(t, "b.example", ALPN_ACME, sizeof(ALPN_ACME) - 1, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "b.example");
    ck_assert_str_eq(r.alpn, "acme-tls/1");
    ck_assert(!r.sess || !SSL_SESSION_has_ticket(r.sess)); /* nothing to resume */
    SSL_SESSION_free(r.sess);
    r = shake(c->listen_tls[1], "ZZ.example", ALPN_BOTH, sizeof(ALPN_BOTH) - 1, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "zz.example");
    ck_assert_str_eq(r.alpn, "acme-tls/1");
    SSL_SESSION_free(r.sess);

    /* ... refused (no_application_protocol) for a name with no pending
     * challenge, a name with a certificate included, or no name */
    k = counts_of("127.0.0.1:18441");
    r = shake(t, "a.example", ALPN_ACME, sizeof(ALPN_ACME) - 1, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_NO_APPLICATION_PROTOCOL);
    r = shake(t, NULL, ALPN_BOTH, sizeof(ALPN_BOTH) - 1, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_NO_APPLICATION_PROTOCOL);
    struct counts k2 = counts_of("127.0.0.1:18441");
    ck_assert_uint_eq(k2.fail[TLS_FAIL_PROTOCOL] - k.fail[TLS_FAIL_PROTOCOL], 2);
    ck_assert_uint_eq(k2.failed - k.failed, 2);

    acme_live_free(acme_live_swap(NULL));
    config_free(c);
}
END_TEST

START_TEST(test_acme_beside_static)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "listen:\n  - address: \"127.0.0.1:18443\"\n    tls:\n"
             "      certificates: [{cert: %s, key: %s}]\n"
             "      acme: [a.example, p.example, w.example]\n" POOLS,
             static_pem, static_key);
    struct config *c = load(yaml);
    struct tls_srv *t = c->listen_tls[0];
    ck_assert_ptr_nonnull(t);
    struct acme_live *l = new_table();
    add_cert(l, "a.example", false);
    add_cert(l, "w.example", false);
    acme_live_swap(l);

    /* a static certificate wins over ACME's for the same name */
    struct result r = shake(t, "a.example", NULL, 0, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "static.example");
    SSL_SESSION_free(r.sess);
    /* an ACME name without a static certificate: ACME's */
    r = shake(t, "w.example", NULL, 0, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "w.example");
    /* a session of an ACME name's handshake resumes */
    SSL_SESSION *s = r.sess;
    r = shake(t, "w.example", NULL, 0, s);
    ck_assert(r.ok);
    ck_assert(r.resumed);
    SSL_SESSION_free(r.sess);
    /* ... but a validation never resumes: it needs the certificate */
    acme_live_free(acme_live_swap(NULL));
    l = new_table();
    add_alpn(l, "w.example");
    acme_live_swap(l);
    r = shake(t, "w.example", ALPN_ACME, sizeof(ALPN_ACME) - 1, s);
    ck_assert(r.ok);
    ck_assert(!r.resumed);
    ck_assert_str_eq(r.cn, "w.example");
    ck_assert_str_eq(r.alpn, "acme-tls/1");
    SSL_SESSION_free(r.sess);
    SSL_SESSION_free(s);
    /* the same over TLS 1.2 (a session ticket of its own kind) */
    client_max = TLS1_2_VERSION;
    acme_live_free(acme_live_swap(NULL));
    l = new_table();
    add_cert(l, "w.example", false);
    acme_live_swap(l);
    r = shake(t, "w.example", NULL, 0, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "w.example");
    s = r.sess;
    r = shake(t, "w.example", NULL, 0, s);
    ck_assert(r.ok && r.resumed);
    SSL_SESSION_free(r.sess);
    acme_live_free(acme_live_swap(NULL));
    l = new_table();
    add_alpn(l, "w.example");
    acme_live_swap(l);
    r = shake(t, "w.example", ALPN_ACME, sizeof(ALPN_ACME) - 1, s);
    ck_assert(r.ok);
    ck_assert(!r.resumed);
    ck_assert_str_eq(r.alpn, "acme-tls/1");
    ck_assert_str_eq(r.cn, "w.example");
    SSL_SESSION_free(r.sess);
    SSL_SESSION_free(s);
    client_max = TLS1_3_VERSION;
    /* a pending ACME name is not covered by unknown_sni: default */
    r = shake(t, "p.example", NULL, 0, NULL);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.alert, SSL_AD_UNRECOGNIZED_NAME);
    /* other names still get the default certificate */
    r = shake(t, "unknown.example", NULL, 0, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "static.example");
    SSL_SESSION_free(r.sess);
    r = shake(t, NULL, NULL, 0, NULL);
    ck_assert(r.ok);
    ck_assert_str_eq(r.cn, "static.example");
    SSL_SESSION_free(r.sess);

    acme_live_free(acme_live_swap(NULL));
    config_free(c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("acme_live");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_lookups);
    tcase_add_test(tc, test_swap);
    suite_add_tcase(s, tc);
    tc = tcase_create("handshakes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_acme_only_listener);
    tcase_add_test(tc, test_acme_beside_static);
    suite_add_tcase(s, tc);
    return s;
}
