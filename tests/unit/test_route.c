#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "serve/route.h"
#include "unit.h"

#define REGION "    regions:\n      - {name: r, url: \"https://r.example.net\"}\n"

static struct config *load(const char *yaml)
{
    struct diag d;
    diag_init(&d, "route.yaml");
    struct config *c = config_parse("route.yaml", yaml, strlen(yaml), &d);
    if (!c) diag_print(&d, stderr);
    ck_assert_uint_eq(d.n, 0);
    ck_assert_ptr_nonnull(c);
    diag_free(&d);
    return c;
}

static const char routes_yaml[] =
    "listen: [\"127.0.0.1:8080\"]\n"
    "pools:\n"
    "  - name: api\n"
    "    hosts: [\"api.example.com\", \"*.api.example.com\"]\n" REGION "  - name: web\n"
    "    hosts: [\"WWW.Example.com\", \"*.example.com\", \"example.org.\"]\n" REGION
    "  - name: deep\n"
    "    hosts: [\"*.x.y.example.com\"]\n" REGION "  - name: v6\n"
    "    hosts: [\"[2001:db8::1]\", \"[::1]\", \"192.0.2.7\"]\n" REGION "  - name: def\n" REGION;

static struct config *cfg;

static void setup(void)
{
    cfg = load(routes_yaml);
}

static void teardown(void)
{
    config_free(cfg);
    cfg = NULL;
}

static const char *lookup(const struct config *c, const char *host)
{
    const struct pool *p = route_lookup(c, host, strlen(host));
    return p ? p->name : "(null)";
}

struct route_case {
    const char *host, *pool;
};

static const struct route_case cases[] = {
    /* exact */
    {"api.example.com", "api"},
    {"www.example.com", "web"},
    {"example.org", "web"},
    /* any case */
    {"API.EXAMPLE.COM", "api"},
    {"Api.Example.Com", "api"},
    {"www.EXAMPLE.com", "web"},
    /* :port stripped */
    {"api.example.com:8080", "api"},
    {"api.example.com:", "api"},
    {"API.example.com:443", "api"},
    /* trailing dot */
    {"api.example.com.", "api"},
    {"api.example.com.:80", "api"},
    {"example.org.", "web"},
    /* wildcards: one or more labels, never the suffix itself */
    {"v1.api.example.com", "api"},
    {"a.b.api.example.com", "api"},
    {"A.B.C.API.EXAMPLE.COM:9", "api"},
    {"foo.example.com", "web"},
    {"a.b.example.com", "web"},
    {"example.com", "def"},
    {"example.com:80", "def"},
    /* the longest wildcard wins */
    {"q.x.y.example.com", "deep"},
    {"p.q.x.y.example.com", "deep"},
    {"x.y.example.com", "web"},
    {"y.example.com", "web"},
    /* a suffix must start at a label boundary */
    {"fooexample.com", "def"},
    {"xapi.example.com", "web"},
    {"api.example.comx", "def"},
    {"www.example.co", "def"},
    /* IPv6 literals, with and without port */
    {"[2001:db8::1]", "v6"},
    {"[2001:db8::1]:8080", "v6"},
    {"[2001:DB8::1]:8080", "v6"},
    {"[::1]:80", "v6"},
    {"[::2]:80", "def"},
    {"192.0.2.7:8080", "v6"},
    {"192.0.2.7", "v6"},
    /* no match and unusable values: the default pool */
    {"unknown.test", "def"},
    {"", "def"},
    {":8080", "def"},
    {".", "def"},
    {"[::1", "def"},
    {"localhost", "def"},
};

START_TEST(test_lookup)
{
    const struct route_case *rc = &cases[_i];
    ck_assert_msg(strcmp(lookup(cfg, rc->host), rc->pool) == 0, "'%s' -> %s, want %s", rc->host,
                  lookup(cfg, rc->host), rc->pool);
}
END_TEST

START_TEST(test_lookup_len)
{
    /* only len bytes are looked at */
    const char *h = "api.example.com.evil";
    const struct pool *p = route_lookup(cfg, h, strlen("api.example.com"));
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p->name, "api");
    p = route_lookup(cfg, h, 3);
    ck_assert_str_eq(p->name, "def");
    ck_assert_ptr_eq(route_lookup(cfg, "whatever", 0), cfg->default_pool);

    /* names longer than a DNS name fall to the default pool */
    char longname[600];
    memset(longname, 'a', sizeof(longname));
    memcpy(longname + sizeof(longname) - 16, ".api.example.com", 16);
    p = route_lookup(cfg, longname, sizeof(longname));
    ck_assert_str_eq(p->name, "def");
    /* a 255-byte name still works */
    p = route_lookup(cfg, longname + sizeof(longname) - 255, 255);
    ck_assert_str_eq(p->name, "api");
}
END_TEST

START_TEST(test_no_default)
{
    struct config *c = load("listen: [\"127.0.0.1:8080\"]\n"
                            "pools:\n"
                            "  - name: api\n"
                            "    hosts: [\"api.example.com\", \"*.wild.test\"]\n" REGION);
    ck_assert_ptr_null(c->default_pool);
    ck_assert_str_eq(lookup(c, "api.example.com"), "api");
    ck_assert_str_eq(lookup(c, "a.wild.test"), "api");
    ck_assert_str_eq(lookup(c, "a.b.wild.test"), "api");
    ck_assert_ptr_null(route_lookup(c, "wild.test", 9));
    ck_assert_ptr_null(route_lookup(c, "other.test", 10));
    ck_assert_ptr_null(route_lookup(c, "", 0));
    ck_assert_ptr_null(route_lookup(c, "example.com", 11));
    config_free(c);

    /* only a default pool: everything goes there */
    c = load("listen: [\"127.0.0.1:8080\"]\npools:\n  - name: only\n" REGION);
    ck_assert_str_eq(lookup(c, "anything.test"), "only");
    ck_assert_str_eq(lookup(c, ""), "only");
    ck_assert_str_eq(lookup(c, "[::1]:80"), "only");
    config_free(c);
}
END_TEST

START_TEST(test_many_hosts)
{
    /* enough names to need a bigger table and to collide */
    enum { POOLS = 20, HOSTS = 40 };
    size_t cap = 256 + POOLS * (HOSTS * 32 + 128), o = 0;
    char *y = malloc(cap);
    ck_assert_ptr_nonnull(y);
    o += (size_t)snprintf(y + o, cap - o, "listen: [\"127.0.0.1:8080\"]\npools:\n");
    for (int p = 0; p < POOLS; p++) {
        o += (size_t)snprintf(y + o, cap - o, "  - name: p%d\n    hosts: [", p);
        for (int h = 0; h < HOSTS; h++)
            o += (size_t)snprintf(y + o, cap - o, "%s\"%sh%d.p%d.test\"", h ? ", " : "",
                                  h % 5 == 0 ? "*." : "", h, p);
        o += (size_t)snprintf(y + o, cap - o, "]\n" REGION);
    }
    ck_assert_uint_lt(o, cap);
    struct config *c = load(y);
    free(y);
    for (int p = 0; p < POOLS; p++) {
        char want[16];
        snprintf(want, sizeof(want), "p%d", p);
        for (int h = 0; h < HOSTS; h++) {
            char host[64];
            if (h % 5 == 0) {
                snprintf(host, sizeof(host), "sub.H%d.P%d.test:81", h, p);
                ck_assert_str_eq(lookup(c, host), want);
                snprintf(host, sizeof(host), "h%d.p%d.test", h, p);
                ck_assert_ptr_null(route_lookup(c, host, strlen(host)));
            } else {
                snprintf(host, sizeof(host), "H%d.p%d.TEST.", h, p);
                ck_assert_str_eq(lookup(c, host), want);
                snprintf(host, sizeof(host), "x.h%d.p%d.test", h, p);
                ck_assert_ptr_null(route_lookup(c, host, strlen(host)));
            }
        }
    }
    ck_assert_ptr_null(route_lookup(c, "h1.p99.test", 11));
    config_free(c);
}
END_TEST

START_TEST(test_normalize)
{
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"Example.COM", "example.com"},
        {"example.com:8080", "example.com"},
        {"example.com.", "example.com"},
        {"example.com.:1", "example.com"},
        {"[2001:DB8::1]:443", "[2001:db8::1]"},
        {"[::1]", "[::1]"},
        {"a", "a"},
        {"10.0.0.1:80", "10.0.0.1"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char out[ROUTE_MAX_HOST];
        size_t n = route_normalize(ok[i].in, strlen(ok[i].in), out);
        ck_assert_msg(n == strlen(ok[i].out) && memcmp(out, ok[i].out, n) == 0,
                      "'%s' -> '%.*s', want '%s'", ok[i].in, (int)n, out, ok[i].out);
    }
    static const char *const bad[] = {"", ":80", ".", ".:80", "[::1", "[", ":"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[ROUTE_MAX_HOST];
        ck_assert_msg(route_normalize(bad[i], strlen(bad[i]), out) == 0, "accepted '%s'", bad[i]);
    }
    /* length limit */
    char big[300], out[ROUTE_MAX_HOST];
    memset(big, 'b', sizeof(big));
    ck_assert_uint_eq(route_normalize(big, ROUTE_MAX_HOST, out), ROUTE_MAX_HOST);
    ck_assert_uint_eq(route_normalize(big, ROUTE_MAX_HOST + 1, out), 0);
    ck_assert_uint_eq(route_normalize(big, sizeof(big), out), 0);
}
END_TEST

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

Suite *make_suite(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("lookup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_lookup, 0, NELEM(cases));
    tcase_add_test(tc, test_lookup_len);
    suite_add_tcase(s, tc);

    TCase *t2 = tcase_create("tables");
    tcase_add_test(t2, test_no_default);
    tcase_add_test(t2, test_many_hosts);
    tcase_add_test(t2, test_normalize);
    suite_add_tcase(s, t2);
    return s;
}
