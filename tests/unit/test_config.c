#include "autoconf.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "control/config.h"
#include "control/health_config.h"
#include "control/schedule.h"
#include "control/tls_config.h"
#include "serve/select.h"
#include "unit.h"

#define FILE_NAME "t.yaml"

static struct config *parse_len(const char *yaml, size_t len, struct diag *d)
{
    diag_init(d, FILE_NAME);
    return config_parse(FILE_NAME, yaml, len, d);
}

static struct config *parse(const char *yaml, struct diag *d)
{
    return parse_len(yaml, strlen(yaml), d);
}

/* All errors as one string, for failure messages. */
static const char *dump(const struct diag *d)
{
    static char buf[8192];
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->n && o < sizeof(buf) - 1; i++) {
        char line[1024];
        diag_format(d, i, line, sizeof(line));
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\n  %s", line);
    }
    return d->n ? buf : " (none)";
}

static bool has_err(const struct diag *d, unsigned line, unsigned col, const char *sub)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->items[i].line == line && d->items[i].col == col && strstr(d->items[i].msg, sub))
            return true;
    return false;
}

/* The config is rejected with exactly one error at line:col containing sub. */
static void expect_error_named(const char *name, const char *yaml, unsigned line, unsigned col,
                               const char *sub)
{
    struct diag d;
    struct config *c = parse(yaml, &d);
    ck_assert_msg(c == NULL, "%s: accepted:\n%s", name, yaml);
    ck_assert_msg(d.n == 1 && has_err(&d, line, col, sub),
                  "%s: want exactly %s:%u:%u: ...%s...\ngot:%s\nfor:\n%s", name, FILE_NAME, line,
                  col, sub, dump(&d), yaml);
    /* the printed form is FILE:LINE:COL: message */
    char buf[1024], want[64];
    diag_format(&d, 0, buf, sizeof(buf));
    snprintf(want, sizeof(want), "%s:%u:%u: ", FILE_NAME, line, col);
    ck_assert_msg(strncmp(buf, want, strlen(want)) == 0, "formatted: %s", buf);
    diag_free(&d);
}

#define expect_error(yaml, line, col, sub) expect_error_named(sub, yaml, line, col, sub)

static struct config *expect_ok(const char *yaml)
{
    struct diag d;
    struct config *c = parse(yaml, &d);
    ck_assert_msg(c != NULL && d.n == 0, "rejected:%s\nfor:\n%s", dump(&d), yaml);
    diag_free(&d);
    return c;
}

#define LISTEN "listen: [\"127.0.0.1:8080\"]\n"
#define REGION "    regions:\n      - {name: eu, url: \"https://eu.example.com\"}\n"
#define WINDOW                                                                                     \
    "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\", regions: "     \
    "[api/eu]}\n"

/* ---- one error per case, exact position ---- */

struct err_case {
    const char *name;
    const char *yaml;
    unsigned line, col;
    const char *sub;
};

static const struct err_case err_cases[] = {
    /* later sections: checks, admin, access_log, headers */
    {"check type unknown",
     LISTEN "pools:\n  - name: api\n    regions:\n      - {name: eu, url: "
            "\"http://e\", check: {type: ping}}\n",
     5, 51, "check type: 'ping' is not one of: http | tcp | none"},
    {"checks rise out of range", LISTEN "checks: {rise: 0}\npools:\n  - name: api\n" REGION, 2, 16,
     "rise: 0 is out of range (1..100)"},
    {"checks jitter not a percentage",
     LISTEN "checks: {jitter: 10}\npools:\n  - name: api\n" REGION, 2, 18,
     "jitter: '10' is not a percentage"},
    {"expect_status bad class",
     LISTEN "checks: {expect_status: [\"6xx\"]}\npools:\n  - name: api\n" REGION, 2, 26,
     "expect_status: '6xx' is not a status code"},
    {"checks url only per region",
     LISTEN "checks: {url: \"http://x\"}\npools:\n  - name: api\n" REGION, 2, 10,
     "unknown key 'url' in checks"},
    {"admin overlaps a listener",
     LISTEN "admin: {listen: \"0.0.0.0:8080\"}\npools:\n  - name: api\n" REGION, 2, 17,
     "admin.listen: 0.0.0.0:8080 overlaps the redirect listener 127.0.0.1:8080"},
    {"admin allow bad cidr",
     LISTEN
     "admin: {listen: \"127.0.0.1:9\", allow: [\"10.0.0.0/33\"]}\npools:\n  - name: api\n" REGION,
     2, 40, "admin.allow: '10.0.0.0/33' is not an address or CIDR"},
    {"access_log relative path",
     LISTEN "access_log: {path: logs/a.log}\npools:\n  - name: api\n" REGION, 2, 20,
     "access_log.path: 'logs/a.log' must be an absolute path"},
    {"header Content-Type is ours",
     LISTEN "pools:\n  - name: api\n    headers: {Content-Type: x}\n" REGION, 4, 15,
     "headers: 'Content-Type' is set by detourd itself"},
    /* timed overrides and maintenance windows */
    {"region until not a time",
     LISTEN "pools:\n  - name: api\n    regions:\n      - {name: eu, url: "
            "\"https://eu.example.com\", state: drain, until: \"2026-13-01T00:00:00Z\"}\n",
     5, 72, "until: '2026-13-01T00:00:00Z' is not an RFC 3339 time"},
    {"region until with state auto",
     LISTEN "pools:\n  - name: api\n    regions:\n      - {name: eu, url: "
            "\"https://eu.example.com\", until: \"2026-11-28T04:00:00Z\"}\n",
     5, 58, "until: needs a state other than auto"},
    {"window until not after from",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T04:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "regions: [api/eu]}\n",
     7, 52, "until: must be after from"},
    {"window bad timestamp",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28 02:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "regions: [api/eu]}\n",
     7, 21, "from: '2026-11-28 02:00:00Z' is not an RFC 3339 time"},
    {"window unknown pool",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "regions: [api/eu, web/eu]}\n",
     7, 94, "regions: no pool 'web'"},
    {"window unknown region",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "regions: [api/us]}\n",
     7, 86, "regions: pool api has no region 'us'"},
    {"window target not POOL/REGION",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "regions: [eu]}\n",
     7, 86, "regions: 'eu' is not POOL/REGION"},
    {"window state auto",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\", "
            "state: auto, regions: [api/eu]}\n",
     7, 83, "maintenance state: 'auto' is not one of: drain | down"},
    {"window name used twice",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n" WINDOW WINDOW, 8, 12,
     "maintenance name 'w' is used twice (first at line 7)"},
    {"window without regions",
     LISTEN "pools:\n  - name: api\n" REGION "maintenance:\n"
            "  - {name: w, from: \"2026-11-28T02:00:00Z\", until: \"2026-11-28T04:00:00Z\"}\n",
     7, 5, "maintenance w: 'regions' is required"},
    /* YAML syntax */
    {"unclosed flow list", "listen: [\"127.0.0.1:8080\"\npools: x\n", 2, 1,
     "YAML syntax error: did not find expected ',' or ']'"},
    {"bad indentation", "a: b\n c: d\n", 2, 3, "YAML syntax error: mapping values are not allowed"},
    {"tab indentation", "listen:\n\t- x\n", 2, 1, "YAML syntax error: found character that"},
    {"unclosed quote", LISTEN "pools:\n  - name: \"api\n", 4, 1, "YAML syntax error"},
    {"two documents", "---\na: 1\n---\nb: 2\n", 3, 1, "only one YAML document is allowed"},
    /* unknown keys */
    {"unknown top-level key", LISTEN "bogus: 1\npools:\n  - name: api\n" REGION, 2, 1,
     "unknown key 'bogus' in the top level"},
    {"unknown limits key", LISTEN "limits:\n  max_conns: 5\npools:\n  - name: api\n" REGION, 3, 3,
     "unknown key 'max_conns' in limits"},
    {"unknown pool key", LISTEN "pools:\n  - name: api\n    host: [a.example.com]\n" REGION, 4, 5,
     "unknown key 'host' in pool"},
    {"unknown region key",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        URL: x\n        url: "
            "\"https://eu.example.com\"\n",
     6, 9, "unknown key 'URL' in region"},
    {"unknown all_down key",
     LISTEN "pools:\n  - name: api\n    all_down: {action: reject, retry: 5}\n" REGION, 4, 32,
     "unknown key 'retry' in all_down"},
    {"unknown log key", LISTEN "log: {level: info, colour: no}\npools:\n  - name: api\n" REGION, 2,
     20, "unknown key 'colour' in log"},
    /* duplicate keys */
    {"duplicate top-level key",
     LISTEN "listen: [\"127.0.0.1:8081\"]\npools:\n  - name: api\n" REGION, 2, 1,
     "duplicate key 'listen' (first at line 1)"},
    {"duplicate pool key", LISTEN "pools:\n  - name: api\n    name: x\n" REGION, 4, 5,
     "duplicate key 'name' (first at line 3)"},
    {"duplicate region key",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        url: \"https://eu2.example.com\"\n",
     7, 9, "duplicate key 'url' (first at line 6)"},
    {"duplicate flow key",
     LISTEN "pools:\n  - {name: api, name: b, regions: [{name: eu, url: \"http://e\"}]}\n", 3, 17,
     "duplicate key 'name' (first at line 3)"},
    /* wrong types */
    {"listen is a mapping", "listen: {a: b}\npools:\n  - name: api\n" REGION, 1, 9,
     "listen: expected a list, got a mapping"},
    {"listen item is a list", "listen: [[\"127.0.0.1:8080\"]]\npools:\n  - name: api\n" REGION, 1,
     10, "listen: expected a scalar, got a list"},
    {"pools is a scalar", LISTEN "pools: 5\n", 2, 8, "pools: expected a list, got a scalar"},
    {"pool is a scalar", LISTEN "pools:\n  - api\n", 3, 5,
     "pool: expected a mapping, got a scalar"},
    {"root is a list", "[1, 2]\n", 1, 1, "configuration: expected a mapping, got a list"},
    {"limits is a list", LISTEN "limits: [1]\npools:\n  - name: api\n" REGION, 2, 9,
     "limits: expected a mapping, got a list"},
    {"pool name is a list", LISTEN "pools:\n  - name: [api]\n" REGION, 3, 11,
     "pool name: expected a scalar, got a list"},
    {"region name is a list",
     LISTEN
     "pools:\n  - name: api\n    regions:\n      - {name: [eu], url: \"https://e.example\"}\n",
     5, 16, "region name: expected a scalar, got a list"},
    {"weight is a list",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        weight: [1]\n",
     7, 17, "weight: expected a scalar, got a list"},
    {"weight is a string",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        weight: \"3\"\n",
     7, 17, "weight: '3' is not a whole number"},
    {"priority is a word",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        priority: abc\n",
     7, 19, "priority: 'abc' is not a whole number"},
    {"priority is negative",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        priority: -1\n",
     7, 19, "priority: '-1' is not a whole number"},
    {"url is a mapping",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: {a: b}\n", 6, 14,
     "url: expected a scalar, got a mapping"},
    {"hosts is a scalar", LISTEN "pools:\n  - name: api\n    hosts: a.example.com\n" REGION, 4, 12,
     "hosts: expected a list, got a scalar"},
    {"headers is a list", LISTEN "pools:\n  - name: api\n    headers: [a]\n" REGION, 4, 14,
     "headers: expected a mapping, got a list"},
    {"all_down is a scalar", LISTEN "pools:\n  - name: api\n    all_down: reject\n" REGION, 4, 15,
     "all_down: expected a mapping, got a scalar"},
    {"regions is a mapping", LISTEN "pools:\n  - name: api\n    regions: {a: b}\n", 4, 14,
     "regions: expected a list, got a mapping"},
    /* out of range and bad enums */
    {"weight too large",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        weight: 1001\n",
     7, 17, "weight: 1001 is out of range (0..1000)"},
    {"priority too large",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        priority: 1001\n",
     7, 19, "priority: 1001 is out of range (0..1000)"},
    {"workers zero", "workers: 0\n" LISTEN "pools:\n  - name: api\n" REGION, 1, 10,
     "workers: 0 is out of range (1..256)"},
    {"workers too many", "workers: 257\n" LISTEN "pools:\n  - name: api\n" REGION, 1, 10,
     "workers: 257 is out of range (1..256)"},
    {"max_connections zero", LISTEN "limits:\n  max_connections: 0\npools:\n  - name: api\n" REGION,
     3, 20, "limits.max_connections: 0 is out of range (1..1000000)"},
    {"header_timeout too short",
     LISTEN "limits:\n  header_timeout: 50ms\npools:\n  - name: api\n" REGION, 3, 19,
     "limits.header_timeout: 50ms is out of range (100ms..1h)"},
    {"idle_timeout too long", LISTEN "limits:\n  idle_timeout: 61m\npools:\n  - name: api\n" REGION,
     3, 17, "limits.idle_timeout: 61m is out of range (100ms..1h)"},
    {"shutdown_timeout too long",
     LISTEN "limits:\n  shutdown_timeout: 2h\npools:\n  - name: api\n" REGION, 3, 21,
     "limits.shutdown_timeout: 2h is out of range (0ms..1h)"},
    {"max_header_bytes too small",
     LISTEN "limits:\n  max_header_bytes: 100\npools:\n  - name: api\n" REGION, 3, 21,
     "limits.max_header_bytes: 100 is out of range (512..1048576 bytes)"},
    {"max_uri_bytes too large",
     LISTEN "limits:\n  max_uri_bytes: 2m\npools:\n  - name: api\n" REGION, 3, 18,
     "limits.max_uri_bytes: 2m is out of range (16..1048576 bytes)"},
    {"max_body_discard too large",
     LISTEN "limits:\n  max_body_discard: 2g\npools:\n  - name: api\n" REGION, 3, 21,
     "limits.max_body_discard: 2g is out of range (0..1073741824 bytes)"},
    {"retry_after too large",
     LISTEN "pools:\n  - name: api\n    all_down: {action: reject, retry_after: 86401}\n" REGION, 4,
     45, "all_down.retry_after: 86401 is out of range (0..86400)"},
    {"status not a redirect", LISTEN "pools:\n  - name: api\n    status: 404\n" REGION, 4, 13,
     "status: 404 is not one of: 307 | 308 | 302 | 303"},
    {"status 301", LISTEN "pools:\n  - name: api\n    status: 301\n" REGION, 4, 13,
     "status: 301 is not one of"},
    {"bad state",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: "
            "\"https://eu.example.com\"\n        state: off\n",
     7, 16, "state: 'off' is not one of: auto | up | down | drain"},
    {"bad balance", LISTEN "pools:\n  - name: api\n    balance: random\n" REGION, 4, 14,
     "balance: 'random' is not one of: weighted | latency | hash"},
    {"bad body", LISTEN "pools:\n  - name: api\n    body: text\n" REGION, 4, 11,
     "body: 'text' is not one of: html | none"},
    {"bad action", LISTEN "pools:\n  - name: api\n    all_down: {action: panic}\n" REGION, 4, 24,
     "all_down.action: 'panic' is not one of: fail_open | fallback | reject"},
    {"bad log level", LISTEN "log: {level: loud}\npools:\n  - name: api\n" REGION, 2, 14,
     "log.level: 'loud' is not one of: error | warn | info | debug"},
    {"bad pool name", LISTEN "pools:\n  - name: \"my pool\"\n" REGION, 3, 11,
     "pool name: 'my pool' must be 1..64 characters"},
    {"region named fallback",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: fallback\n        url: "
            "\"https://eu.example.com\"\n",
     5, 15, "region name 'fallback' is reserved"},
    {"region named reject",
     LISTEN "pools:\n  - name: api\n    regions:\n      - name: reject\n        url: "
            "\"https://eu.example.com\"\n",
     5, 15, "region name 'reject' is reserved"},
    /* durations and sizes */
    {"bare number duration", LISTEN "limits:\n  idle_timeout: 10\npools:\n  - name: api\n" REGION,
     3, 17, "limits.idle_timeout: '10' is not a duration"},
    {"fractional duration", LISTEN "limits:\n  idle_timeout: 1.5s\npools:\n  - name: api\n" REGION,
     3, 17, "'1.5s' is not a duration"},
    {"negative duration", LISTEN "limits:\n  idle_timeout: -1s\npools:\n  - name: api\n" REGION, 3,
     17, "'-1s' is not a duration"},
    {"unknown unit", LISTEN "limits:\n  idle_timeout: 5d\npools:\n  - name: api\n" REGION, 3, 17,
     "'5d' is not a duration"},
    {"unit only", LISTEN "limits:\n  idle_timeout: s\npools:\n  - name: api\n" REGION, 3, 17,
     "'s' is not a duration"},
    {"duration with space", LISTEN "limits:\n  idle_timeout: 5 s\npools:\n  - name: api\n" REGION,
     3, 17, "'5 s' is not a duration"},
    {"size kb", LISTEN "limits:\n  max_header_bytes: 8kb\npools:\n  - name: api\n" REGION, 3, 21,
     "limits.max_header_bytes: '8kb' is not a size"},
    {"size negative", LISTEN "limits:\n  max_header_bytes: -8k\npools:\n  - name: api\n" REGION, 3,
     21, "'-8k' is not a size"},
    {"size with unit t", LISTEN "limits:\n  max_body_discard: 1t\npools:\n  - name: api\n" REGION,
     3, 21, "'1t' is not a size"},
    /* duplicate names */
    {"duplicate pool names",
     LISTEN "pools:\n  - name: api\n    hosts: [a.example]\n" REGION
            "  - name: api\n    hosts: [b.example]\n" REGION,
     7, 11, "pool name 'api' is used twice (first at line 3)"},
    {"duplicate region names",
     LISTEN "pools:\n  - name: api\n    regions:\n      - {name: eu, url: \"https://eu.example\"}\n"
            "      - {name: us, url: \"https://us.example\"}\n"
            "      - {name: eu, url: \"https://eu2.example\"}\n",
     7, 16, "region name 'eu' is used twice in pool api (first at line 5)"},
    {"duplicate listen",
     "listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\npools:\n  - name: api\n" REGION, 1, 28,
     "listen: '127.0.0.1:8080' is listed twice"},
    /* hosts */
    {"duplicate host across pools",
     LISTEN
     "pools:\n  - name: api\n    hosts: [\"a.example.com\", \"b.example.com\"]\n" REGION
     "  - name: web\n    hosts:\n      - \"c.example.com\"\n      - \"b.example.com\"\n" REGION,
     10, 9, "hosts: 'b.example.com' is already used by pool api (line 4)"},
    {"duplicate host across pools, case and dot",
     LISTEN "pools:\n  - name: api\n    hosts: [\"a.example.com\"]\n" REGION
            "  - name: web\n    hosts: [\"A.Example.COM.\"]\n" REGION,
     8, 13, "hosts: 'a.example.com' is already used by pool api (line 4)"},
    {"duplicate wildcard across pools",
     LISTEN "pools:\n  - name: api\n    hosts: [\"*.example.com\"]\n" REGION
            "  - name: web\n    hosts: [\"*.example.com\"]\n" REGION,
     8, 13, "hosts: '*.example.com' is already used by pool api"},
    {"duplicate host in a pool (block list)",
     LISTEN "pools:\n  - name: api\n    hosts:\n      - a.example.com\n      - b.example.com\n"
            "      - a.example.com\n" REGION,
     7, 9, "hosts: 'a.example.com' is listed twice in pool api"},
    {"duplicate host in a pool (flow list)",
     LISTEN
     "pools:\n  - name: api\n    hosts: [a.example.com, b.example.com, A.EXAMPLE.COM]\n" REGION,
     4, 43, "hosts: 'a.example.com' is listed twice in pool api"},
    {"bad host", LISTEN "pools:\n  - name: api\n    hosts: [\"a b.example\"]\n" REGION, 4, 13,
     "hosts: 'a b.example' is not a host name"},
    {"bad wildcard", LISTEN "pools:\n  - name: api\n    hosts: [\"a.*.example\"]\n" REGION, 4, 13,
     "hosts: 'a.*.example' is not a host name"},
    {"bare wildcard", LISTEN "pools:\n  - name: api\n    hosts: [\"*.\"]\n" REGION, 4, 13,
     "is not a host name"},
    {"empty hosts", LISTEN "pools:\n  - name: api\n    hosts: []\n" REGION, 4, 12,
     "hosts: empty list"},
    /* default pools */
    {"two default pools", LISTEN "pools:\n  - name: api\n" REGION "  - name: web\n" REGION, 6, 5,
     "pool web: a second default pool (no 'hosts'); pool api at line 3 is already the default"},
    {"two default pools, hosts null",
     LISTEN "pools:\n  - name: api\n    hosts: ~\n" REGION "  - name: web\n" REGION, 7, 5,
     "pool web: a second default pool"},
    /* pools and regions */
    {"no regions", LISTEN "pools:\n  - name: api\n    regions: []\n", 4, 14,
     "regions: a pool needs at least one region"},
    {"regions missing", LISTEN "pools:\n  - name: api\n    status: 307\n", 3, 5,
     "pool api: 'regions' is required"},
    {"no pools", LISTEN "pools: []\n", 2, 8, "pools: at least one pool is required"},
    {"pools missing", LISTEN, 1, 1, "'pools' is required"},
    {"listen missing", "pools:\n  - name: api\n" REGION, 1, 1, "'listen' is required"},
    {"empty listen", "listen: []\npools:\n  - name: api\n" REGION, 1, 9,
     "listen: at least one address is required"},
    {"bad listen", "listen: [\"localhost:80\"]\npools:\n  - name: api\n" REGION, 1, 10,
     "listen: 'localhost:80' is not an address"},
    {"region without url", LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n", 5, 9,
     "region eu: 'url' is required"},
    {"region without name",
     LISTEN "pools:\n  - name: api\n    regions:\n      - url: \"https://eu.example\"\n", 5, 9,
     "region: 'name' is required"},
    {"pool without name", LISTEN "pools:\n  - hosts: [a.example]\n" REGION, 3, 5,
     "pool: 'name' is required"},
    {"fallback without url",
     LISTEN "pools:\n  - name: api\n    all_down:\n      action: fallback\n" REGION, 5, 7,
     "all_down: action fallback needs a url"},
    {"fallback url not http",
     LISTEN "pools:\n  - name: api\n    all_down: {action: fallback, url: \"ftp://x\"}\n" REGION, 4,
     39, "all_down.url: 'ftp://x' must be an absolute http:// or https:// URL"},
    /* headers */
    {"reserved header", LISTEN "pools:\n  - name: api\n    headers: {Location: x}\n" REGION, 4, 15,
     "headers: 'Location' is set by detourd itself"},
    {"bad header name", LISTEN "pools:\n  - name: api\n    headers: {\"X A\": x}\n" REGION, 4, 15,
     "headers: 'X A' is not a valid header name"},
    {"header value with newline",
     LISTEN "pools:\n  - name: api\n    headers: {X-A: \"a\\r\\nSet-Cookie: x\"}\n" REGION, 4, 20,
     "headers: value of 'X-A' contains a control character"},
    /* the tree */
    {"deep nesting", LISTEN "pools: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n", 2, 39,
     "nesting deeper than 32 levels"},
    {"unknown alias", "listen: *nope\npools:\n  - name: api\n" REGION, 1, 9,
     "unknown alias '*nope'"},
    {"alias before anchor", "listen: *a\nx: &a [\"127.0.0.1:8080\"]\n", 1, 9, "unknown alias '*a'"},
    {"list as a key", LISTEN "pools:\n  - name: api\n    ? [a]\n    : b\n" REGION, 4, 7,
     "mapping keys must be scalars, not a list"},
    /* empty */
    {"empty file", "", 1, 1, "the configuration is empty"},
    {"only a comment", "# nothing here\n", 1, 1, "the configuration is empty"},
    {"only null", "~\n", 1, 1, "the configuration is empty"},
    {"only whitespace", "\n\n   \n", 1, 1, "the configuration is empty"},
};

START_TEST(test_errors)
{
    const struct err_case *ec = &err_cases[_i];
    expect_error_named(ec->name, ec->yaml, ec->line, ec->col, ec->sub);
}
END_TEST

/* ---- region urls ---- */

struct url_case {
    const char *url;
    const char *sub; /* NULL: accepted */
};

static const struct url_case url_cases[] = {
    {"ftp://x.example", "must be an absolute http:// or https:// URL"},
    {"eu.example.com", "must be an absolute http:// or https:// URL"},
    {"//eu.example.com", "must be an absolute http:// or https:// URL"},
    {"/path", "must be an absolute http:// or https:// URL"},
    {"httpx://eu.example.com", "must be an absolute http:// or https:// URL"},
    {"https://x.example/?a=1", "must not carry a query or fragment"},
    {"https://x.example?a", "must not carry a query or fragment"},
    {"https://x.example/a?", "must not carry a query or fragment"},
    {"https://x.example/#f", "must not carry a query or fragment"},
    {"https://x.example#", "must not carry a query or fragment"},
    {"https://u:p@x.example", "must not carry user:password@"},
    {"https://u@x.example/", "must not carry user:password@"},
    {"https://x.example:0", "has an invalid port (1..65535)"},
    {"https://x.example:65536", "has an invalid port (1..65535)"},
    {"https://x.example:99999999999999999999999", "has an invalid port"},
    {"https://x.example:abc", "has an invalid port (1..65535)"},
    {"https://x.example:", "has an invalid port (1..65535)"},
    {"https://x.example:-1", "has an invalid port (1..65535)"},
    {"https://x.example:80x/", "has an invalid port (1..65535)"},
    {"https://", "has no host"},
    {"https:///path", "has no host"},
    {"https://:80/", "has no host"},
    {"https://[::1", "has an unterminated IPv6 literal"},
    {"https://[zz]/", "has an invalid IPv6 literal"},
    {"https://[::1]x/", "has garbage after the IPv6 literal"},
    {"https://[::1]:0/", "has an invalid port"},
    {"http://a b.example", "contains a character not allowed in a URL"},
    {"http://x.example/<a>", "contains a character not allowed in a URL"},
    {"http://x.example/\xc3\xa9", "contains a character not allowed in a URL"},
    {"http://x!y.example/", "has an invalid host name"},
    {"https://eu.example.com", NULL},
    {"http://eu.example.com:8080/base", NULL},
    {"https://[2001:db8::1]:8443/", NULL},
    {"https://10.0.0.1", NULL},
    {"http://x.example:65535/a%20b", NULL},
};

START_TEST(test_region_url)
{
    const struct url_case *uc = &url_cases[_i];
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n        url: \"%s\"\n",
             uc->url);
    if (uc->sub) {
        char sub[256];
        snprintf(sub, sizeof(sub), "url: '%s' %s", uc->url, uc->sub);
        expect_error(yaml, 6, 14, sub);
    } else {
        config_free(expect_ok(yaml));
    }
}
END_TEST

/* ---- a region url that is one of our listeners ---- */

struct self_case {
    const char *listen, *url;
    const char *listener; /* NULL: accepted */
};

static const struct self_case self_cases[] = {
    {"127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080"},
    {"127.0.0.1:8080", "http://127.0.0.1:8080/", "127.0.0.1:8080"},
    {"127.0.0.1:8080", "https://127.0.0.1:8080/x", "127.0.0.1:8080"},
    {"127.0.0.1:80", "http://127.0.0.1", "127.0.0.1:80"},
    {"127.0.0.1:443", "https://127.0.0.1/", "127.0.0.1:443"},
    {"0.0.0.0:8080", "http://localhost:8080/x", "0.0.0.0:8080"},
    {"0.0.0.0:8080", "http://LOCALHOST:8080", "0.0.0.0:8080"},
    {"0.0.0.0:8080", "http://127.0.0.2:8080", "0.0.0.0:8080"},
    {"*:8080", "http://0.0.0.0:8080", "0.0.0.0:8080"},
    {"[::]:9090", "http://[::1]:9090", "[::]:9090"},
    {"[::1]:9090", "http://[0:0::1]:9090/", "[::1]:9090"},
    {"10.1.2.3:80", "http://10.1.2.3/", "10.1.2.3:80"},
    /* not a loop */
    {"127.0.0.1:8080", "http://127.0.0.1:8081", NULL},
    {"127.0.0.1:8080", "https://127.0.0.1", NULL},
    {"127.0.0.1:8080", "http://eu.example.com:8080", NULL},
    {"10.1.2.3:80", "http://10.1.2.4/", NULL},
    {"127.0.0.1:8080", "http://localhost:8080", NULL},
};

START_TEST(test_self_loop)
{
    const struct self_case *sc = &self_cases[_i];
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "listen: [\"%s\"]\npools:\n  - name: api\n    regions:\n      - name: eu\n"
             "        url: \"%s\"\n",
             sc->listen, sc->url);
    if (sc->listener) {
        char sub[256];
        snprintf(sub, sizeof(sub),
                 "url: '%s' points at this daemon's own listener %s (a redirect loop)", sc->url,
                 sc->listener);
        expect_error(yaml, 6, 14, sub);
    } else {
        config_free(expect_ok(yaml));
    }
}
END_TEST

/* ---- several errors in one pass ---- */

START_TEST(test_many_errors)
{
    const char *yaml = "listen: [\"127.0.0.1:8080\", \"nowhere\"]\n" /* 1 */
                       "workers: 0\n"                                /* 2 */
                       "bogus: 1\n"                                  /* 3 */
                       "limits:\n"                                   /* 4 */
                       "  idle_timeout: 10\n"                        /* 5 */
                       "  max_header_bytes: 8kb\n"                   /* 6 */
                       "pools:\n"                                    /* 7 */
                       "  - name: api\n"                             /* 8 */
                       "    status: 200\n"                           /* 9 */
                       "    regions:\n"                              /* 10 */
                       "      - name: eu\n"                          /* 11 */
                       "        url: \"ftp://eu.example.com\"\n"     /* 12 */
                       "        weight: 5000\n"                      /* 13 */
                       "      - name: eu\n"                          /* 14 */
                       "        url: \"https://x.example/?q\"\n"     /* 15 */
                       "  - name: web\n"                             /* 16 */
                       "    all_down: {action: fallback}\n"          /* 17 */
                       "    regions: []\n";                          /* 18 */
    struct diag d;
    struct config *c = parse(yaml, &d);
    ck_assert_ptr_null(c);
    const struct {
        unsigned line, col;
        const char *sub;
    } want[] = {
        {1, 28, "listen: 'nowhere' is not an address"},
        {2, 10, "workers: 0 is out of range"},
        {3, 1, "unknown key 'bogus'"},
        {5, 17, "'10' is not a duration"},
        {6, 21, "'8kb' is not a size"},
        {9, 13, "status: 200 is not one of"},
        {12, 14, "must be an absolute http:// or https:// URL"},
        {13, 17, "weight: 5000 is out of range (0..1000)"},
        {14, 15, "region name 'eu' is used twice in pool api"},
        {15, 14, "must not carry a query or fragment"},
        {16, 5, "pool web: a second default pool"},
        {17, 15, "all_down: action fallback needs a url"},
        {18, 14, "regions: a pool needs at least one region"},
    };
    size_t nwant = sizeof(want) / sizeof(want[0]);
    for (size_t i = 0; i < nwant; i++)
        ck_assert_msg(has_err(&d, want[i].line, want[i].col, want[i].sub),
                      "missing %u:%u: %s\ngot:%s", want[i].line, want[i].col, want[i].sub,
                      dump(&d));
    ck_assert_msg(d.n == nwant, "%zu errors, want %zu:%s", d.n, nwant, dump(&d));

    /* several duplicate keys are reported together, with the rest of the
     * file's errors; a duplicated unknown key is reported once */
    diag_free(&d);
    c = parse("a: 1\na: 2\nb: 1\nb: 2\nc: {x: 1, x: 2}\n", &d);
    ck_assert_ptr_null(c);
    ck_assert_msg(
        has_err(&d, 2, 1, "duplicate key 'a'") && has_err(&d, 4, 1, "duplicate key 'b'") &&
            has_err(&d, 5, 11, "duplicate key 'x'") && has_err(&d, 1, 1, "unknown key 'a'") &&
            !has_err(&d, 2, 1, "unknown key") && has_err(&d, 1, 1, "'listen' is required"),
        "got:%s", dump(&d));
    ck_assert_msg(d.n == 8, "got:%s", dump(&d));
    diag_free(&d);
}
END_TEST

/* ---- the tree: depth, aliases, size ---- */

START_TEST(test_deep_nesting)
{
    /* far deeper than the limit: an error, no crash, no deep recursion */
    static const char *const open[] = {"[", "{a: ", "- "};
    for (int kind = 0; kind < 3; kind++) {
        size_t depth = 100000, unit = strlen(open[kind]);
        char *buf = malloc(depth * unit + 64);
        ck_assert_ptr_nonnull(buf);
        size_t o = 0;
        if (kind == 2) {
            /* block sequences: each level on its own line, indented */
            for (size_t i = 0; i < 200; i++) { /* 200 * 200 < depth * unit */
                memset(buf + o, ' ', 2 * i);
                o += 2 * i;
                memcpy(buf + o, "-\n", 2);
                o += 2;
            }
        } else {
            o += (size_t)sprintf(buf, "listen: ");
            for (size_t i = 0; i < depth; i++) {
                memcpy(buf + o, open[kind], unit);
                o += unit;
            }
        }
        struct diag d;
        struct config *c = parse_len(buf, o, &d);
        ck_assert_ptr_null(c);
        ck_assert_msg(d.n == 1 && strstr(d.items[0].msg, "nesting deeper than 32 levels"),
                      "kind %d:%s", kind, dump(&d));
        diag_free(&d);
        free(buf);
    }

    /* exactly at the limit is fine for the tree (the config then rejects the content) */
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "x: ");
    for (int i = 0; i < 31; i++) buf[n++] = '[';
    for (int i = 0; i < 31; i++) buf[n++] = ']';
    buf[n++] = '\n';
    buf[n] = '\0';
    struct diag d;
    ck_assert_ptr_null(parse(buf, &d));
    ck_assert_msg(d.n >= 1 && strstr(dump(&d), "nesting") == NULL, "%s", dump(&d));
    ck_assert_msg(has_err(&d, 1, 1, "unknown key 'x'"), "%s", dump(&d));
    diag_free(&d);
}
END_TEST

START_TEST(test_aliases)
{
    /* anchors and aliases work, and an aliased pool counts twice */
    const char *yaml = "listen: &l [\"127.0.0.1:8080\"]\n"
                       "pools:\n"
                       "  - name: api\n"
                       "    hosts: [a.example]\n"
                       "    regions: &r\n"
                       "      - {name: eu, url: \"https://eu.example.com\", weight: 3}\n"
                       "  - name: web\n"
                       "    hosts: [b.example]\n"
                       "    regions: *r\n";
    struct config *c = expect_ok(yaml);
    ck_assert_uint_eq(c->npools, 2);
    ck_assert_uint_eq(c->pools[1].nregions, 1);
    ck_assert_uint_eq(c->pools[1].regions[0].weight, 3);
    ck_assert_str_eq(c->pools[1].regions[0].url, "https://eu.example.com");
    config_free(c);

    struct diag d;
    ck_assert_ptr_null(parse("listen: [\"127.0.0.1:8080\"]\n"
                             "pools:\n"
                             "  - &p\n"
                             "    name: api\n" REGION "  - *p\n",
                             &d));
    ck_assert_msg(has_err(&d, 4, 11, "pool name 'api' is used twice"), "%s", dump(&d));
    diag_free(&d);

    /* a "billion laughs" document is cheap: nodes are shared, not copied,
     * and the alias that expands it past the limit is an error */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                       "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
                       "listen: *i\n";
    ck_assert_ptr_null(parse(bomb, &d));
    ck_assert_msg(d.n == 1 && has_err(&d, 6, 12, "aliases add more than 250000 nodes"), "%s",
                  dump(&d));
    diag_free(&d);
}
END_TEST

START_TEST(test_too_many_regions)
{
    size_t cap = 65 * 80 + 256, o = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    o += (size_t)snprintf(buf, cap, LISTEN "pools:\n  - name: api\n    regions:\n");
    for (int i = 0; i < 65; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "      - {name: r%d, url: \"https://r%d.example.com\"}\n", i, i);
    expect_error(buf, 5, 7, "regions: 65 regions, at most 64 per pool");

    /* 64 is fine */
    char *cut = strstr(buf, "      - {name: r64,");
    ck_assert_ptr_nonnull(cut);
    *cut = '\0';
    struct config *c = expect_ok(buf);
    ck_assert_uint_eq(c->pools[0].nregions, 64);
    config_free(c);
    free(buf);
}
END_TEST

/* ---- the positive path ---- */

START_TEST(test_defaults)
{
    struct config *c = expect_ok(LISTEN "pools:\n  - name: api\n" REGION);
    ck_assert_str_eq(c->path, FILE_NAME);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0].text, "127.0.0.1:8080");
    ck_assert_uint_eq(c->workers, 1);
    ck_assert_int_eq(c->log_level, LOG_INFO);
    ck_assert(!c->log_json);
    /* limits defaults from the contract */
    ck_assert_uint_eq(c->limits.max_connections, 10000);
    ck_assert_uint_eq(c->limits.header_timeout_ms, 10000);
    ck_assert_uint_eq(c->limits.idle_timeout_ms, 60000);
    ck_assert_uint_eq(c->limits.max_header_bytes, 8192);
    ck_assert_uint_eq(c->limits.max_uri_bytes, 8192);
    ck_assert_uint_eq(c->limits.max_body_discard, 1048576);
    ck_assert_uint_eq(c->limits.shutdown_timeout_ms, 10000);

    ck_assert_uint_eq(c->npools, 1);
    const struct pool *p = &c->pools[0];
    ck_assert_str_eq(p->name, "api");
    ck_assert(p->is_default);
    ck_assert_ptr_eq(c->default_pool, p);
    ck_assert_uint_eq(p->nhosts, 0);
    ck_assert_uint_eq(p->status, 307);
    ck_assert_int_eq(p->balance, BALANCE_WEIGHTED);
    ck_assert_str_eq(p->cache_control, "no-store");
    ck_assert_uint_eq(p->nheaders, 0);
    ck_assert_int_eq(p->body, BODY_HTML);
    ck_assert_int_eq(p->all_down, ALL_DOWN_FAIL_OPEN);
    ck_assert_ptr_null(p->all_down_url);
    ck_assert_uint_eq(p->retry_after, 30);
    ck_assert_uint_eq(p->nregions, 1);
    const struct region *r = &p->regions[0];
    ck_assert_str_eq(r->name, "eu");
    ck_assert_str_eq(r->url, "https://eu.example.com");
    ck_assert_uint_eq(r->url_len, strlen(r->url));
    ck_assert_uint_eq(r->priority, 1);
    ck_assert_uint_eq(r->weight, 1);
    ck_assert_int_eq(r->state, REGION_AUTO);
    ck_assert_uint_eq(r->line, 5);
    ck_assert_uint_eq(r->col, 9);
    /* everything the request path needs is built */
    ck_assert_ptr_nonnull(c->routes);
    ck_assert_ptr_nonnull(p->sel);
    ck_assert_ptr_nonnull(r->tmpl.head.p);
    ck_assert_str_eq(region_state_name(REGION_AUTO), "auto");
    ck_assert_str_eq(region_state_name(REGION_UP), "up");
    ck_assert_str_eq(region_state_name(REGION_DOWN), "down");
    ck_assert_str_eq(region_state_name(REGION_DRAIN), "drain");
    config_free(c);
}
END_TEST

START_TEST(test_full_config)
{
    const char *yaml = "listen:\n"
                       "  - \"0.0.0.0:8080\"\n"
                       "  - \"[::]:8080\"\n"
                       "workers: auto\n"
                       "log:\n"
                       "  level: debug\n"
                       "  format: json\n"
                       "limits:\n"
                       "  max_connections: 500\n"
                       "  header_timeout: 250ms\n"
                       "  idle_timeout: 2m\n"
                       "  max_header_bytes: 16K\n"
                       "  max_uri_bytes: 4k\n"
                       "  max_body_discard: 2m\n"
                       "  shutdown_timeout: 0s\n"
                       "pools:\n"
                       "  - name: api\n"
                       "    hosts: [\"API.Example.com\", \"*.api.example.com\", \"x.example.\", "
                       "\"[2001:DB8::1]\"]\n"
                       "    status: 308\n"
                       "    balance: hash\n"
                       "    hash_key: \"header:X-User-Id\"\n"
                       "    cache_control: \"private, max-age=5\"\n"
                       "    headers: {Retry-After: \"120\", X-Why: maintenance}\n"
                       "    body: none\n"
                       "    all_down:\n"
                       "      action: fallback\n"
                       "      url: \"HTTPS://Status.Example.com/Maint?x=1\"\n"
                       "    regions:\n"
                       "      - name: eu-west\n"
                       "        url: \"HTTPS://EU-West.Example.COM/Base/Path/\"\n"
                       "        priority: 0\n"
                       "        weight: 0\n"
                       "        state: drain\n"
                       "      - name: us_east.1\n"
                       "        url: \"http://US.example.com:8080\"\n"
                       "        priority: 1000\n"
                       "        weight: 1000\n"
                       "        state: up\n"
                       "      - name: ap\n"
                       "        url: \"https://[2001:db8::2]:8443/\"\n"
                       "        state: down\n"
                       "  - name: fallback\n"
                       "    cache_control: \"\"\n"
                       "    headers: {}\n"
                       "    all_down: {action: reject, retry_after: 0}\n"
                       "    regions:\n"
                       "      - {name: only, url: \"https://only.example.com//\"}\n";
    struct config *c = expect_ok(yaml);
    ck_assert_uint_eq(c->nlisten, 2);
    ck_assert_str_eq(c->listen[0].text, "0.0.0.0:8080");
    ck_assert_str_eq(c->listen[1].text, "[::]:8080");
    ck_assert_uint_eq(c->listen[0].line, 2);
    ck_assert_uint_eq(c->listen[0].col, 5);
    ck_assert_uint_eq(c->workers, 0);
    ck_assert_int_eq(c->log_level, LOG_DEBUG);
    ck_assert(c->log_json);
    ck_assert_uint_eq(c->limits.max_connections, 500);
    ck_assert_uint_eq(c->limits.header_timeout_ms, 250);
    ck_assert_uint_eq(c->limits.idle_timeout_ms, 120000);
    ck_assert_uint_eq(c->limits.max_header_bytes, 16384);
    ck_assert_uint_eq(c->limits.max_uri_bytes, 4096);
    ck_assert_uint_eq(c->limits.max_body_discard, 2 * 1048576);
    ck_assert_uint_eq(c->limits.shutdown_timeout_ms, 0);

    ck_assert_uint_eq(c->npools, 2);
    const struct pool *p = &c->pools[0];
    ck_assert(!p->is_default);
    ck_assert_uint_eq(p->nhosts, 4);
    ck_assert_str_eq(p->hosts[0], "api.example.com");
    ck_assert_str_eq(p->hosts[1], "*.api.example.com");
    ck_assert_str_eq(p->hosts[2], "x.example");
    ck_assert_str_eq(p->hosts[3], "[2001:db8::1]");
    ck_assert_uint_eq(p->status, 308);
    ck_assert_int_eq(p->balance, BALANCE_HASH);
    ck_assert_str_eq(p->hash_key, "header:X-User-Id");
    ck_assert_str_eq(p->cache_control, "private, max-age=5");
    ck_assert_uint_eq(p->nheaders, 2);
    ck_assert_str_eq(p->headers[0].name, "Retry-After");
    ck_assert_str_eq(p->headers[0].value, "120");
    ck_assert_str_eq(p->headers[1].name, "X-Why");
    ck_assert_str_eq(p->headers[1].value, "maintenance");
    ck_assert_int_eq(p->body, BODY_NONE);
    ck_assert_int_eq(p->all_down, ALL_DOWN_FALLBACK);
    /* the fallback url keeps its query; scheme and host are lowercased */
    ck_assert_str_eq(p->all_down_url, "https://status.example.com/Maint?x=1");
    ck_assert_uint_eq(p->nregions, 3);
    /* scheme and host lowercased, path kept, one trailing '/' dropped */
    ck_assert_str_eq(p->regions[0].url, "https://eu-west.example.com/Base/Path");
    ck_assert_uint_eq(p->regions[0].priority, 0);
    ck_assert_uint_eq(p->regions[0].weight, 0);
    ck_assert_int_eq(p->regions[0].state, REGION_DRAIN);
    ck_assert_str_eq(p->regions[1].name, "us_east.1");
    ck_assert_str_eq(p->regions[1].url, "http://us.example.com:8080");
    ck_assert_uint_eq(p->regions[1].priority, 1000);
    ck_assert_uint_eq(p->regions[1].weight, 1000);
    ck_assert_int_eq(p->regions[1].state, REGION_UP);
    ck_assert_str_eq(p->regions[2].url, "https://[2001:db8::2]:8443");
    ck_assert_int_eq(p->regions[2].state, REGION_DOWN);

    const struct pool *q = &c->pools[1];
    ck_assert(q->is_default);
    ck_assert_ptr_eq(c->default_pool, q);
    ck_assert_str_eq(q->cache_control, "");
    ck_assert_uint_eq(q->nheaders, 0);
    ck_assert_int_eq(q->all_down, ALL_DOWN_REJECT);
    ck_assert_uint_eq(q->retry_after, 0);
    ck_assert_str_eq(q->regions[0].url, "https://only.example.com/");
    config_free(c);
}
END_TEST

START_TEST(test_url_normalisation)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"https://x.example/", "https://x.example"},
        {"https://x.example", "https://x.example"},
        {"HTTPS://X.EXAMPLE", "https://x.example"},
        {"Http://X.Example:81/", "http://x.example:81"},
        {"https://x.example/A/B/", "https://x.example/A/B"},
        {"https://x.example/a//", "https://x.example/a/"},
        {"https://x.example/%7Euser/", "https://x.example/%7Euser"},
        {"https://[2001:DB8::1]/", "https://[2001:db8::1]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 LISTEN "pools:\n  - name: api\n    regions:\n      - {name: eu, url: \"%s\"}\n",
                 cases[i].in);
        struct config *c = expect_ok(yaml);
        ck_assert_str_eq(c->pools[0].regions[0].url, cases[i].out);
        ck_assert_uint_eq(c->pools[0].regions[0].url_len, strlen(cases[i].out));
        config_free(c);
    }
}
END_TEST

START_TEST(test_listen_forms)
{
    /* a single address is accepted as a one-item list */
    struct config *c = expect_ok("listen: \"127.0.0.1:8080\"\npools:\n  - name: api\n" REGION);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0].text, "127.0.0.1:8080");
    config_free(c);
}
END_TEST

/* TLS listeners: the parts that need no certificate files (tls.sh loads
 * real ones) */
#define POOLS "pools:\n  - name: api\n" REGION
START_TEST(test_tls_listen)
{
    /* a mapping without tls: is a plain listener */
    struct config *c = expect_ok("listen:\n  - address: \"127.0.0.1:8443\"\n" POOLS);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_ptr_null(c->listen_tls[0]);
    config_free(c);
    /* a listener without an address: its tls: block is still checked */
    struct diag d;
    c = parse("listen:\n  - tls: {}\n" POOLS, &d);
    ck_assert_ptr_null(c);
    ck_assert_msg(has_err(&d, 2, 5, "listen: 'address' is required"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 2, 10, "tls: 'certificates' is required"), "%s", dump(&d));
    ck_assert_uint_eq(d.n, 2);
    diag_free(&d);
    expect_error("listen:\n  - {address: \"127.0.0.1:8443\", tls: yes}\n" POOLS, 2, 38,
                 "tls: expected a mapping");
    expect_error("listen:\n  - {address: \"127.0.0.1:8443\", tls: {}}\n" POOLS, 2, 38,
                 "tls: 'certificates' is required");
    expect_error("listen:\n  - {address: \"127.0.0.1:8443\", tls: {certificates: []}}\n" POOLS, 2,
                 53, "at least one certificate is required");
    expect_error("listen:\n  - {address: \"127.0.0.1:8443\", tls: {certificates: [x]}}\n" POOLS, 2,
                 54, "tls.certificates[]: expected a mapping");
    expect_error(
        "listen:\n  - {address: \"127.0.0.1:8443\", tls: {certificates: [{cert: a}]}}\n" POOLS, 2,
        54, "'key' is required");
    c = parse("listen:\n  - {address: \"127.0.0.1:8443\", tls: {crt: 1, certificates: "
              "[{cert: /nonexistent/a.pem, key: /nonexistent/a.key}]}}\n" POOLS,
              &d);
    ck_assert_ptr_null(c);
    ck_assert_msg(has_err(&d, 2, 39, "unknown key 'crt' in tls"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 2, 69, "cannot open /nonexistent/a.pem"), "%s", dump(&d));
    diag_free(&d);

    /* every problem in one pass: syntax, OpenSSL's lists and the files */
    c = parse("listen:\n"
              "  - address: \"127.0.0.1:8443\"\n"
              "    tls:\n"
              "      certificates:\n"
              "        - {cert: /nonexistent/a.pem, key: /nonexistent/a.key}\n"
              "      protocols: [TLSv1.1, TLSv1.3]\n"
              "      ciphers: \"NOT-A-CIPHER\"\n"
              "      unknown_sni: maybe\n"
              "      session_tickets: 1\n" POOLS,
              &d);
    ck_assert_ptr_null(c);
    ck_assert_msg(has_err(&d, 5, 18, "cannot open /nonexistent/a.pem"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 5, 43, "cannot open /nonexistent/a.key"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 6, 19, "'TLSv1.1' is not accepted"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 7, 16, "tls.ciphers: OpenSSL rejects the list"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 8, 20, "tls.unknown_sni"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 9, 24, "expected true or false"), "%s", dump(&d));
    ck_assert_uint_eq(d.n, 6);
    diag_free(&d);
}
END_TEST

/* tls.acme: names whose certificates come from ACME, alone or beside
 * certificates: (no file is read for them) */
#define ACME_SECTION                                                                               \
    "acme: {directory: \"https://127.0.0.1:14000/dir\", accept_terms: true, storage: /tmp}\n"
#define ACME_LISTEN(list)                                                                          \
    "listen:\n  - {address: \"127.0.0.1:8443\", tls: {acme: " list "}}\n" POOLS ACME_SECTION
START_TEST(test_tls_acme)
{
    /* alone: a listener without a default certificate; names lowercase,
     * without the trailing dot, in the order written */
    struct config *c =
        expect_ok(ACME_LISTEN("[Api.Example.COM., www.example.com, xn--bcher-kva.de, a-1.b2]"));
    ck_assert_ptr_nonnull(c->listen_tls[0]);
    size_t n;
    const char *const *names = tls_srv_acme_names(c->listen_tls[0], &n);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(names[0], "api.example.com");
    ck_assert_str_eq(names[1], "www.example.com");
    ck_assert_str_eq(names[2], "xn--bcher-kva.de");
    ck_assert_str_eq(names[3], "a-1.b2");
    ck_assert_uint_eq(tls_srv_ncerts(c->listen_tls[0]), 0);
    config_free(c);
    /* a listener without acme: has none */
    ck_assert_ptr_null(tls_srv_acme_names(NULL, &n));
    ck_assert_uint_eq(n, 0);

    /* the list's errors, each at its value (the list starts at column 45) */
    expect_error(ACME_LISTEN("api.example.com"), 2, 45, "tls.acme: expected a list of names");
    expect_error(ACME_LISTEN("{a: b}"), 2, 45, "tls.acme: expected a list, got a mapping");
    expect_error(ACME_LISTEN("[]"), 2, 45, "tls.acme: at least one name is required");
    expect_error(ACME_LISTEN("[a.example, \"*.example.com\"]"), 2, 57,
                 "http-01 and tls-alpn-01 cannot validate wildcard names");
    expect_error(ACME_LISTEN("[a.example, b.*.example]"), 2, 57, "is a wildcard");
    expect_error(ACME_LISTEN("[a_b.example]"), 2, 46, "'a_b.example' is not a host name");
    expect_error(ACME_LISTEN("[-a.example]"), 2, 46, "starts or ends with '-'");
    expect_error(ACME_LISTEN("[a-.example]"), 2, 46, "starts or ends with '-'");
    expect_error(ACME_LISTEN("[a..example]"), 2, 46, "has an empty label");
    expect_error(ACME_LISTEN("[.example]"), 2, 46, "has an empty label");
    expect_error(ACME_LISTEN("[\"\"]"), 2, 46, "is empty");
    expect_error(ACME_LISTEN("[10.0.0.1]"), 2, 46, "is an IP address");
    expect_error(ACME_LISTEN("[\"[::1]\"]"), 2, 46, "is not a host name");
    expect_error(ACME_LISTEN("[a.example, [b]]"), 2, 57, "tls.acme: expected a scalar");
    expect_error(
        ACME_LISTEN("[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example]"),
        2, 46, "has a label longer than 63 bytes");
    /* the same name twice, in any case or with a trailing dot */
    expect_error(ACME_LISTEN("[a.example, b.example, A.Example.]"), 2, 68,
                 "tls.acme: 'a.example' is listed twice");

    /* at most TLS_ACME_MAX_NAMES */
    char yaml[4096], list[3000];
    size_t o = 0;
    for (int i = 0; i <= TLS_ACME_MAX_NAMES; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%sn%d.example", i ? ", " : "[", i);
    snprintf(list + o, sizeof(list) - o, "]");
    snprintf(yaml, sizeof(yaml), ACME_LISTEN("%s"), list);
    expect_error(yaml, 2, 45, "tls.acme: 101 names: at most 100 per listener");
    list[o - strlen(", n100.example")] = '\0';
    snprintf(yaml, sizeof(yaml), ACME_LISTEN("%s]"), list);
    c = expect_ok(yaml);
    tls_srv_acme_names(c->listen_tls[0], &n);
    ck_assert_uint_eq(n, TLS_ACME_MAX_NAMES);
    config_free(c);

    /* neither certificates nor acme */
    expect_error("listen:\n  - {address: \"127.0.0.1:8443\", tls: {protocols: [TLSv1.3]}}\n" POOLS,
                 2, 38, "tls: 'certificates' is required (or 'acme'");
    /* with certificates: both are checked, in one pass */
    struct diag d;
    c = parse("listen:\n  - {address: \"127.0.0.1:8443\", tls: {acme: [\"*.x\"], certificates: "
              "[{cert: /nonexistent/a.pem, key: /nonexistent/a.key}]}}\n" POOLS,
              &d);
    ck_assert_ptr_null(c);
    ck_assert_msg(has_err(&d, 2, 46, "is a wildcard"), "%s", dump(&d));
    ck_assert_msg(has_err(&d, 2, 76, "cannot open /nonexistent/a.pem"), "%s", dump(&d));
    diag_free(&d);
}
END_TEST

/* ---- helpers ---- */

START_TEST(test_parse_duration)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {
        {"0ms", 0},     {"250ms", 250},   {"1s", 1000},      {"2s", 2000},
        {"1m", 60000},  {"90m", 5400000}, {"1h", 3600000},   {"0s", 0},
        {"007s", 7000}, {"1000ms", 1000}, {"24h", 86400000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 12345;
        ck_assert_msg(config_parse_duration(ok[i].s, &v), "%s", ok[i].s);
        ck_assert_msg(v == ok[i].ms, "%s: %llu", ok[i].s, (unsigned long long)v);
    }
    static const char *const bad[] = {"",
                                      "10",
                                      "s",
                                      "ms",
                                      "-1s",
                                      "+1s",
                                      "1.5s",
                                      "1 s",
                                      " 1s",
                                      "1s ",
                                      "1S",
                                      "1sec",
                                      "1d",
                                      "1mss",
                                      "0x1s",
                                      "1e3ms",
                                      "99999999999999999999999s",
                                      "18446744073709551615h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 12345;
        ck_assert_msg(!config_parse_duration(bad[i], &v), "accepted '%s'", bad[i]);
        ck_assert_msg(v == 12345, "'%s' changed the output", bad[i]);
    }
}
END_TEST

START_TEST(test_parse_size)
{
    static const struct {
        const char *s;
        uint64_t b;
    } ok[] = {
        {"0", 0},        {"512", 512},   {"8k", 8192},       {"8K", 8192},   {"1m", 1048576},
        {"1M", 1048576}, {"16k", 16384}, {"1g", 1073741824}, {"1024", 1024},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 12345;
        ck_assert_msg(config_parse_size(ok[i].s, &v), "%s", ok[i].s);
        ck_assert_msg(v == ok[i].b, "%s: %llu", ok[i].s, (unsigned long long)v);
    }
    static const char *const bad[] = {"",
                                      "k",
                                      "8kb",
                                      "8 k",
                                      "-8k",
                                      "+8",
                                      "8.5k",
                                      "8t",
                                      "8kk",
                                      " 8",
                                      "8 ",
                                      "0x10",
                                      "18446744073709551615k"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 12345;
        ck_assert_msg(!config_parse_size(bad[i], &v), "accepted '%s'", bad[i]);
    }
}
END_TEST

START_TEST(test_parse_listen)
{
    struct listen_addr la;
    ck_assert(netaddr_parse_listen("127.0.0.1:8080", &la));
    ck_assert_str_eq(la.text, "127.0.0.1:8080");
    ck_assert_str_eq(la.host, "127.0.0.1");
    ck_assert_uint_eq(la.port, 8080);
    ck_assert_int_eq(la.ss.ss_family, AF_INET);
    ck_assert_uint_eq(la.sslen, sizeof(struct sockaddr_in));
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&la.ss;
    ck_assert_uint_eq(ntohs(sin->sin_port), 8080);
    ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001);

    ck_assert(netaddr_parse_listen("[::]:8080", &la));
    ck_assert_str_eq(la.text, "[::]:8080");
    ck_assert_str_eq(la.host, "::");
    ck_assert_int_eq(la.ss.ss_family, AF_INET6);
    ck_assert_uint_eq(la.sslen, sizeof(struct sockaddr_in6));
    ck_assert_uint_eq(ntohs(((const struct sockaddr_in6 *)&la.ss)->sin6_port), 8080);

    ck_assert(netaddr_parse_listen("[0:0:0::1]:1", &la));
    ck_assert_str_eq(la.text, "[::1]:1");
    ck_assert_str_eq(la.host, "::1");
    ck_assert_uint_eq(la.port, 1);

    ck_assert(netaddr_parse_listen("[2001:DB8::A]:65535", &la));
    ck_assert_str_eq(la.text, "[2001:db8::a]:65535");

    ck_assert(netaddr_parse_listen("*:80", &la));
    ck_assert_str_eq(la.text, "0.0.0.0:80");
    ck_assert_int_eq(la.ss.ss_family, AF_INET);
    ck_assert(netaddr_parse_listen(":81", &la));
    ck_assert_str_eq(la.text, "0.0.0.0:81");
    ck_assert(netaddr_parse_listen("0.0.0.0:9180", &la));
    ck_assert_str_eq(la.host, "0.0.0.0");

    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:x",
        "127.0.0.1:80x",
        "localhost:80",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[::1]:",
        "[127.0.0.1]:80",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "[::1:80",
        "[zz]:80",
        "256.1.1.1:80",
        "127.0.0.1:-1",
        "[1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb]:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!netaddr_parse_listen(bad[i], &la), "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(test_nul_in_file)
{
    /* a NUL byte in the file is a syntax error, not a silently shorter string */
    static const char yaml[] = "listen: [\"127.0.0.1:8080\"]\npools:\n  - name: a\0pi\n" REGION;
    struct diag d;
    ck_assert_ptr_null(parse_len(yaml, sizeof(yaml) - 1, &d));
    ck_assert_msg(d.n >= 1, "no error");
    diag_free(&d);
}
END_TEST

START_TEST(test_encoding_error_position)
{
    /* libyaml gives reader errors an offset, not a line: the position is
     * computed from it (it used to say 1:1) */
    static const char lf[] = LISTEN "pools:\n"
                                    "  - name: api\n"
                                    "    regions:\n"
                                    "      - name: eu\n"
                                    "        url: \"https://eu.example.com\"\n"
                                    "    # caf\xff\n";
    expect_error(lf, 7, 10, "invalid leading UTF-8 octet");
    static const char crlf[] =
        "listen: [\"127.0.0.1:8080\"]\r\npools:\r\n  - name: api\r\n"
        "    regions:\r\n      - name: eu\r\n"
        "        url: \"https://eu.example.com\"\r\n    # \xc3\xa9t\xc3\xa9 \xc3x\r\n";
    expect_error(crlf, 7, 12, "invalid trailing UTF-8 octet"); /* at the octet: 'x' */
    /* a bad byte in a value, after multi-byte characters on its line */
    static const char val[] = LISTEN "pools:\n  - name: \"\xc3\xa9\xc3\xa9\x80\"\n" REGION;
    expect_error(val, 3, 14, "invalid leading UTF-8 octet");
}
END_TEST

/* Positions are those a text editor shows: only LF, CRLF and a lone CR
 * end a line. libyaml also breaks lines at U+0085, U+2028 and U+2029 (YAML
 * 1.1), even inside a quoted string, which put every later error one line
 * too far per such character; columns count characters. */
START_TEST(test_unicode_line_breaks_position)
{
    static const char *const breaks[] = {"\xc2\x85", "\xe2\x80\xa8", "\xe2\x80\xa9"};
    static const char *const quotes[] = {"\"", "'"};
    for (int b = 0; b < 3; b++) {
        for (int q = 0; q < 2; q++) {
            char yaml[1024], name[64];
            /* the error on a later line */
            snprintf(yaml, sizeof(yaml),
                     LISTEN "pools:\n  - name: api\n    regions:\n      - name: eu\n"
                            "        url: \"https://eu.example.com\"\n"
                            "        reason: %sa%sb %sc%s\n"
                            "        weight: many\n",
                     quotes[q], breaks[b], breaks[b], quotes[q]);
            snprintf(name, sizeof(name), "break %d quote %d: later line", b, q);
            expect_error_named(name, yaml, 8, 17, "weight: 'many' is not a whole number");
            /* on the same line: the column counts characters */
            snprintf(yaml, sizeof(yaml),
                     LISTEN "pools:\n  - name: api\n    regions:\n"
                            "      - {name: eu, url: \"https://eu.example.com\", "
                            "reason: %s\xc3\xa9%s%s, weight: many}\n",
                     quotes[q], breaks[b], quotes[q]);
            snprintf(name, sizeof(name), "break %d quote %d: same line", b, q);
            expect_error_named(name, yaml, 5, 73, "weight: 'many' is not a whole number");
            /* a YAML syntax error after it, and CRLF line ends */
            snprintf(yaml, sizeof(yaml),
                     "listen: [\"127.0.0.1:8080\"]\r\nx: %s%s%s\r\npools: [\r\n", quotes[q],
                     breaks[b], quotes[q]);
            snprintf(name, sizeof(name), "break %d quote %d: syntax error", b, q);
            expect_error_named(name, yaml, 4, 1, "YAML syntax error");
        }
    }
    /* a byte order mark is not a character of the first line */
    expect_error("\xef\xbb\xbf" LISTEN "workers: x\npools:\n  - name: api\n" REGION, 2, 10,
                 "workers: 'x' is not a whole number");
    expect_error("\xef\xbb\xbf"
                 "workers: x\n" LISTEN "pools:\n  - name: api\n" REGION,
                 1, 10, "workers: 'x' is not a whole number");
    /* a duplicate key's "first at line N" too */
    expect_error(LISTEN "state_file: \"/nonexistent/a\xe2\x80\xa8\"\nstate_file: ~\npools:\n"
                        "  - name: api\n" REGION,
                 3, 1, "duplicate key 'state_file' (first at line 2)");
}
END_TEST

START_TEST(test_nul_in_key)
{
    /* "\0" in a quoted key: compared with its length, it matches nothing */
    expect_error(LISTEN "limits:\n  \"max_connections\\0\": 5\npools:\n  - name: api\n" REGION, 3,
                 3, "unknown key 'max_connections\\x00' in limits");
    expect_error(LISTEN "\"workers\\0\": 2\npools:\n  - name: api\n" REGION, 2, 1,
                 "unknown key 'workers\\x00'");
    /* and in a value compared as a word */
    expect_error(LISTEN "log: {format: \"json\\0\"}\npools:\n  - name: api\n" REGION, 2, 15,
                 "log.format: NUL byte in string");
    expect_error(LISTEN "limits: {idle_timeout: \"5s\\0x\"}\npools:\n  - name: api\n" REGION, 2, 24,
                 "NUL byte in string");
}
END_TEST

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

START_TEST(test_alias_amplification)
{
    /* 2,000 default check headers and a 64-region list aliased by 150 pools:
     * regions borrow the defaults instead of copying them (this took 10 s and
     * 1.5 GB), and the pools are checked in linear time */
    size_t cap = 1 << 20, o = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    o += (size_t)snprintf(buf + o, cap - o, LISTEN "checks:\n  headers:\n");
    for (int i = 0; i < 2000; i++)
        o += (size_t)snprintf(buf + o, cap - o, "    X-H%d: value-%d\n", i, i);
    o += (size_t)snprintf(buf + o, cap - o,
                          "pools:\n  - name: p0\n    hosts: [h0.example]\n"
                          "    regions: &r\n");
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "      - {name: r%d, url: \"https://r%d.example.com\"}\n", i, i);
    for (int i = 1; i < 150; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "  - {name: p%d, hosts: [h%d.example], regions: *r}\n", i, i);
    ck_assert_uint_lt(o, 64 * 1024);
    long rss0 = maxrss_kb();
    double t0 = now_s();
    struct config *c = expect_ok(buf);
    double dt = now_s() - t0;
    long grew = maxrss_kb() - rss0;
    ck_assert_uint_eq(c->npools, 150);
    const struct check_cfg *last = c->pools[149].regions[63].check;
    ck_assert_uint_eq(last->nheaders, 2000);
    ck_assert_ptr_eq(last->headers, c->checks->headers); /* shared, not copied */
    ck_assert_str_eq(last->headers[1999].value, "value-1999");
    config_free(c);
    /* generous (sanitizers, a busy machine), far below the old cost */
    ck_assert_msg(dt < 3.0, "took %.2f s", dt);
    ck_assert_msg(grew < 200 * 1024, "peak memory grew by %ld KB", grew);

    /* the same list aliased 5,000 times is past the expansion limit: an
     * error at the alias that crosses it, at once */
    o = (size_t)snprintf(buf, cap,
                         LISTEN "pools:\n  - name: p0\n    hosts: [h0.example]\n"
                                "    regions: &r\n");
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "      - {name: r%d, url: \"https://r%d.example.com\"}\n", i, i);
    for (int i = 1; i < 5000; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "  - {name: p%d, hosts: [h%d.example], regions: *r}\n", i, i);
    struct diag d;
    t0 = now_s();
    ck_assert_ptr_null(parse(buf, &d));
    dt = now_s() - t0;
    ck_assert_msg(d.n == 1 && strstr(d.items[0].msg, "aliases add more than 250000 nodes"), "%s",
                  dump(&d));
    ck_assert_msg(dt < 1.0, "took %.2f s", dt);
    diag_free(&d);

    /* text counts too: a long scalar aliased many times */
    o = (size_t)snprintf(buf, cap, "a: &a \"");
    memset(buf + o, 'x', 100000);
    o += 100000;
    o += (size_t)snprintf(buf + o, cap - o, "\"\nb: [");
    for (int i = 0; i < 50; i++) o += (size_t)snprintf(buf + o, cap - o, "*a, ");
    snprintf(buf + o, cap - o, "*a]\n");
    ck_assert_ptr_null(parse(buf, &d));
    ck_assert_msg(d.n == 1 && strstr(d.items[0].msg, "4194304 bytes of text"), "%s", dump(&d));
    ck_assert_uint_eq(d.items[0].line, 2);
    diag_free(&d);
    free(buf);
}
END_TEST

START_TEST(test_error_flood_is_capped)
{
    /* one mistake in an anchored region repeats at every alias of it: the
     * errors past DIAG_MAX_ITEMS are only counted */
    size_t cap = 1 << 16, o = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    o += (size_t)snprintf(buf + o, cap - o,
                          LISTEN "pools:\n  - name: p0\n    hosts: [h0.example]\n"
                                 "    regions: &r\n      - {name: r, url: x, weight: -1}\n");
    for (int i = 1; i < 500; i++)
        o += (size_t)snprintf(buf + o, cap - o,
                              "  - {name: p%d, hosts: [h%d.example], regions: *r}\n", i, i);
    struct diag d;
    ck_assert_ptr_null(parse(buf, &d));
    ck_assert_uint_eq(d.n, DIAG_MAX_ITEMS);
    ck_assert_uint_eq(d.n + d.dropped, 1000);
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    ck_assert_ptr_nonnull(f);
    diag_print(&d, f);
    fclose(f);
    ck_assert_msg(strstr(out, "t.yaml: 900 more errors not shown\n"), "%s", out);
    free(out);
    diag_free(&d);
    free(buf);
}
END_TEST

static struct sockaddr_storage sa_of(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1)
        a6->sin6_family = AF_INET6;
    return ss;
}

START_TEST(test_cidr)
{
    static const struct {
        const char *cidr, *ip;
        bool match;
    } cases[] = {
        {"127.0.0.0/8", "127.1.2.3", true},
        {"127.0.0.0/8", "128.0.0.1", false},
        {"10.1.2.3/8", "10.200.0.1", true}, /* host bits are ignored */
        {"192.168.1.0/23", "192.168.0.7", true},
        {"192.168.1.0/23", "192.168.2.1", false},
        {"192.168.1.128/25", "192.168.1.200", true},
        {"192.168.1.128/25", "192.168.1.127", false},
        {"10.0.0.1", "10.0.0.1", true},
        {"10.0.0.1", "10.0.0.2", false},
        {"10.0.0.1/32", "10.0.0.1", true},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"0.0.0.0/0", "::1", false},
        {"::1/128", "::1", true},
        {"::1", "::2", false},
        {"2001:db8::/32", "2001:db8:ffff::1", true},
        {"2001:db8::/33", "2001:db8:8000::1", false},
        {"2001:db8::/33", "2001:db8:7fff::1", true},
        {"::/0", "2001:db8::1", true},
        {"::/0", "127.0.0.1", false},
        {"fe80::1/127", "fe80::", true},
        {"fe80::1/127", "fe80::2", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cidr c;
        ck_assert_msg(netaddr_parse_cidr(cases[i].cidr, &c), "%s", cases[i].cidr);
        struct sockaddr_storage ss = sa_of(cases[i].ip);
        ck_assert_msg(cidr_match(&c, (struct sockaddr *)&ss) == cases[i].match, "%s in %s",
                      cases[i].ip, cases[i].cidr);
    }
    static const char *const bad[] = {"",          "/8",          "10.0.0.0/33", "::/129",
                                      "10.0.0/8",  "10.0.0.0/-1", "10.0.0.0/8x", "x",
                                      "10.0.0.0/", "1.2.3.4.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cidr c;
        ck_assert_msg(!netaddr_parse_cidr(bad[i], &c), "accepted '%s'", bad[i]);
    }
}
END_TEST

/* Timed overrides and windows are evaluated at load: an `until` already past
 * leaves its region auto; the first choices already follow them. */
START_TEST(test_maintenance_load)
{
    struct config *c = expect_ok(
        LISTEN "pools:\n  - name: api\n    regions:\n"
               "      - {name: a, url: \"https://a.example.com\", state: drain,"
               " until: \"2000-01-01T00:00:00Z\", reason: \"old change\"}\n"
               "      - {name: b, url: \"https://b.example.com\", state: drain,"
               " until: \"2999-01-01T00:00:00+02:00\", reason: \"CHG-1\"}\n"
               "      - {name: c, url: \"https://c.example.com\"}\n"
               "      - {name: d, url: \"https://d.example.com\"}\n"
               "maintenance:\n"
               "  - {name: now, from: \"2000-01-01T00:00:00Z\", until: \"2999-01-01T00:00:00Z\","
               " state: down, regions: [api/c, api/b], reason: \"rack move\"}\n"
               "  - {name: later, from: \"2998-01-01T00:00:00Z\", until: \"2999-01-01T00:00:00Z\","
               " regions: [api/d]}\n");
    const struct pool *p = &c->pools[0];
    ck_assert_int_eq(p->regions[0].state, REGION_DRAIN);
    ck_assert_int_eq(p->regions[0].op, REGION_AUTO); /* until is past */
    ck_assert_str_eq(p->regions[0].reason, "old change");
    ck_assert_int_eq(p->regions[1].op, REGION_DRAIN); /* its own override beats the window */
    ck_assert(p->regions[1].until_ms == INT64_C(32472136800000));
    ck_assert_int_eq(p->regions[2].op, REGION_DOWN);
    ck_assert_int_eq(p->regions[3].op, REGION_AUTO);
    ck_assert_uint_eq(c->sched->nwindows, 2);
    const struct sched_window *w = &c->sched->windows[0];
    ck_assert_str_eq(w->name, "now");
    ck_assert_str_eq(w->reason, "rack move");
    ck_assert_int_eq(w->state, REGION_DOWN);
    ck_assert_uint_eq(w->ntargets, 2);
    ck_assert_uint_eq(w->targets[1].region, 1);
    ck_assert_int_eq(c->sched->windows[1].state, REGION_DRAIN); /* the default */
    ck_assert_int_eq(c->sched_now->phases[0], SCHED_ACTIVE);
    ck_assert_int_eq(c->sched_now->phases[1], SCHED_PENDING);
    ck_assert_int_eq(c->sched_now->pools[0][2].source, SCHED_SOURCE_WINDOW);
    ck_assert_str_eq(c->sched_now->pools[0][2].window, "now");
    /* traffic already avoids b (drained) and c (down) */
    const struct choice *ch = atomic_load(&p->sel->cur);
    for (uint32_t i = 0; i < ch->n; i++) ck_assert(ch->seq[i] == 0 || ch->seq[i] == 3);
    config_unref(c);
}
END_TEST

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- include: files in a temporary directory, read by config_load ---- */

static char inc_dir[128];

/* A new directory whose name holds glob(3) characters: relative patterns
 * are resolved under it without being taken for patterns themselves. */
static void inc_setup(void)
{
    char tmpl[] = "/tmp/detourd-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(inc_dir, sizeof(inc_dir), "%s/a[1]*", tmpl);
    ck_assert_int_eq(mkdir(inc_dir, 0700), 0);
}

static void inc_write(const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", inc_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void inc_cleanup(void)
{
    char *slash = strrchr(inc_dir, '/');
    *slash = '\0'; /* the mkdtemp directory */
    ck_assert_int_eq(nftw(inc_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static struct config *inc_load(struct diag *d, char *path, size_t len)
{
    snprintf(path, len, "%s/main.yaml", inc_dir);
    diag_init(d, path);
    return config_load(path, d);
}

/* d has an error in file (relative to inc_dir) at line:col containing sub,
 * and diag_format prints it so. */
static bool has_err_in(const struct diag *d, const char *file, unsigned line, unsigned col,
                       const char *sub)
{
    char want[PATH_MAX + 64], buf[2048];
    snprintf(want, sizeof(want), "%s/%s:%u:%u: ", inc_dir, file, line, col);
    for (size_t i = 0; i < d->n; i++) {
        diag_format(d, i, buf, sizeof(buf));
        if (strncmp(buf, want, strlen(want)) == 0 && strstr(buf + strlen(want), sub)) return true;
    }
    return false;
}

#define INC_POOL(name, host, region)                                                               \
    "  - name: " name "\n    hosts: [\"" host "\"]\n    regions:\n"                                \
    "      - {name: " region ", url: \"https://" region ".example.com\"}\n"

START_TEST(test_include_load)
{
    inc_setup();
    inc_write(
        "main.yaml", LISTEN
        "include: [\"conf.d/*.yaml\", \"missing/*.yaml\", \"none-*.yaml\"]\n"
        "pools:\n" INC_POOL(
            "web", "web.example",
            "eu") "maintenance:\n"
                  "  - {name: m0, from: \"2000-01-01T00:00:00Z\", until: \"2999-01-01T00:00:00Z\","
                  " regions: [b/y]}\n");
    char d1[PATH_MAX];
    snprintf(d1, sizeof(d1), "%s/conf.d", inc_dir);
    ck_assert_int_eq(mkdir(d1, 0700), 0);
    /* read in name order, not in the order written */
    inc_write(
        "conf.d/20-b.yaml",
        "pools:\n" INC_POOL(
            "b", "b.example",
            "y") "maintenance:\n"
                 "  - {name: m2, from: \"2000-01-01T00:00:00Z\", until: \"2999-01-01T00:00:00Z\","
                 " state: down, regions: [web/eu]}\n");
    inc_write("conf.d/10-a.yaml",
              "maintenance:\n"
              "  - {name: m1, from: \"2998-01-01T00:00:00Z\", until: \"2999-01-01T00:00:00Z\","
              " regions: [a/x]}\n"
              "pools:\n" INC_POOL("a", "a.example", "x"));
    inc_write("conf.d/30-empty.yaml", "");
    inc_write("conf.d/40-null.yaml", "pools:\nmaintenance: ~\n");
    inc_write("conf.d/skipped.yml", "listen: nonsense\n");
    struct diag d;
    char path[PATH_MAX];
    struct config *c = inc_load(&d, path, sizeof(path));
    ck_assert_msg(c != NULL && d.n == 0, "rejected:%s", dump(&d));
    diag_free(&d);
    ck_assert_uint_eq(c->npools, 3);
    ck_assert_str_eq(c->pools[0].name, "web");
    ck_assert_str_eq(c->pools[1].name, "a");
    ck_assert_str_eq(c->pools[2].name, "b");
    ck_assert_uint_eq(c->sched->nwindows, 3);
    ck_assert_str_eq(c->sched->windows[0].name, "m0");
    ck_assert_str_eq(c->sched->windows[1].name, "m1");
    ck_assert_str_eq(c->sched->windows[2].name, "m2");
    /* windows reach pools of other files, both ways */
    ck_assert_int_eq(c->pools[0].regions[0].op, REGION_DOWN);  /* m2 */
    ck_assert_int_eq(c->pools[2].regions[0].op, REGION_DRAIN); /* m0 */
    ck_assert_int_eq(c->pools[1].regions[0].op, REGION_AUTO);  /* m1: later */
    config_unref(c);

    /* the main file may leave every pool to its includes */
    inc_write("main.yaml", LISTEN "include: [\"conf.d/*-a.yaml\"]\n");
    c = inc_load(&d, path, sizeof(path));
    ck_assert_msg(c != NULL && d.n == 0, "rejected:%s", dump(&d));
    diag_free(&d);
    ck_assert_uint_eq(c->npools, 1);
    ck_assert_str_eq(c->pools[0].name, "a");
    config_unref(c);

    /* ...but some file must have one */
    inc_write("main.yaml", LISTEN "include: [\"conf.d/3*.yaml\"]\n");
    c = inc_load(&d, path, sizeof(path));
    ck_assert_ptr_null(c);
    ck_assert_msg(d.n == 1 && has_err_in(&d, "main.yaml", 2, 10, "'pools' is required"), "got:%s",
                  dump(&d));
    diag_free(&d);
    inc_cleanup();
}
END_TEST

START_TEST(test_include_errors)
{
    inc_setup();
    inc_write("main.yaml", LISTEN
              "include: [\"d/*.yaml\", \"x.yaml\", [7]]\n"
              "pools:\n" INC_POOL("web", "web.example",
                                  "eu") "maintenance:\n"
                                        "  - {name: m1, from: \"2000-01-01T00:00:00Z\","
                                        " until: \"2999-01-01T00:00:00Z\", regions: [web/nope]}\n");
    char dir[PATH_MAX], link[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/d", inc_dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    inc_write("d/1.yaml",
              "listen: [\"127.0.0.1:9\"]\n"
              "pools:\n" INC_POOL("web", "web.example", "eu") INC_POOL(
                  "api", "api.example",
                  "eu") "  - name: other\n    hosts: [\"Other.example\", \"api.example\"]\n"
                        "    regions:\n      - {name: eu, url: \"https://eu.example.com\","
                        " weight: -1}\n");
    inc_write("d/2.yaml", "pools: [\n");
    inc_write("d/3.yaml", "maintenance:\n"
                          "  - {name: m1, from: \"2000-01-01T00:00:00Z\","
                          " until: \"2999-01-01T00:00:00Z\", regions: [api/eu, nope/eu]}\n");
    snprintf(link, sizeof(link), "%s/d/4.yaml", inc_dir);
    ck_assert_int_eq(symlink("gone", link), 0);
    inc_write("x.yaml", "- just a list\n");
    struct diag d;
    char path[PATH_MAX], want[PATH_MAX + 64];
    struct config *c = inc_load(&d, path, sizeof(path));
    ck_assert_ptr_null(c);
    /* every error of every file, in one pass, each at its own file */
    ck_assert_msg(has_err_in(&d, "main.yaml", 2, 33, "expected a scalar"), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "main.yaml", 2, 11, "d/4.yaml: cannot open"), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "main.yaml", 9, 87, "pool web has no region 'nope'"), "%s",
                  dump(&d));
    ck_assert_msg(has_err_in(&d, "d/1.yaml", 1, 1, "'listen' is not allowed"), "%s", dump(&d));
    snprintf(want, sizeof(want), "pool name 'web' is used twice (first at line 4 of %s)", path);
    ck_assert_msg(has_err_in(&d, "d/1.yaml", 3, 11, want), "%s", dump(&d));
    snprintf(want, sizeof(want), "'web.example' is already used by pool web (line 5 of %s)", path);
    ck_assert_msg(has_err_in(&d, "d/1.yaml", 4, 13, want), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "d/1.yaml", 12, 30,
                             "'api.example' is already used by pool api "
                             "(line 8)"),
                  "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "d/1.yaml", 14, 59, "weight"), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "d/2.yaml", 2, 1, "YAML syntax error"), "%s", dump(&d));
    snprintf(want, sizeof(want), "maintenance name 'm1' is used twice (first at line 9 of %s)",
             path);
    ck_assert_msg(has_err_in(&d, "d/3.yaml", 2, 12, want), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "d/3.yaml", 2, 95, "no pool 'nope'"), "%s", dump(&d));
    ck_assert_msg(has_err_in(&d, "x.yaml", 1, 1, "included file: expected a mapping"), "%s",
                  dump(&d));
    ck_assert_msg(d.n == 12, "want 12 errors, got:%s", dump(&d));
    diag_free(&d);
    inc_cleanup();
}
END_TEST

START_TEST(test_include_limit)
{
    inc_setup();
    inc_write("main.yaml",
              LISTEN "include: [\"*.inc\"]\npools:\n" INC_POOL("web", "w.example", "eu"));
    for (int i = 0; i <= CONFIG_MAX_INCLUDES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "%04d.inc", i);
        inc_write(name, "pools: []\n");
    }
    struct diag d;
    char path[PATH_MAX];
    struct config *c = inc_load(&d, path, sizeof(path));
    ck_assert_ptr_null(c);
    ck_assert_msg(d.n == 1 && has_err_in(&d, "main.yaml", 2, 11, "more than 1000 files"), "%s",
                  dump(&d));
    diag_free(&d);
    char one[PATH_MAX];
    snprintf(one, sizeof(one), "%s/0000.inc", inc_dir);
    ck_assert_int_eq(unlink(one), 0);
    c = inc_load(&d, path, sizeof(path));
    ck_assert_msg(c != NULL, "%s", dump(&d));
    diag_free(&d);
    config_unref(c);
    inc_cleanup();
}
END_TEST

/* The limit is over every pattern: a later pattern that goes over it is
 * an error at that pattern, never a file silently left out. */
START_TEST(test_include_limit_over_patterns)
{
    inc_setup();
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/many", inc_dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    snprintf(dir, sizeof(dir), "%s/conf.d", inc_dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    for (int i = 0; i < CONFIG_MAX_INCLUDES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "many/%04d.yaml", i);
        inc_write(name, "pools: []\n");
    }
    inc_write("main.yaml", LISTEN "include: [\"many/*.yaml\", \"none/*.yaml\"]\npools:\n" INC_POOL(
                               "web", "w.example", "eu"));
    struct diag d;
    char path[PATH_MAX];
    /* exactly the limit, the next pattern matching nothing: fine */
    struct config *c = inc_load(&d, path, sizeof(path));
    ck_assert_msg(c != NULL, "%s", dump(&d));
    diag_free(&d);
    config_unref(c);
    /* one more file from a later pattern, with an error of its own */
    inc_write("conf.d/zz.yaml", "pools:\n  - name: zz\n    regions: []\n");
    inc_write("main.yaml",
              LISTEN "include: [\"many/*.yaml\", \"conf.d/zz.yaml\"]\npools:\n" INC_POOL(
                  "web", "w.example", "eu"));
    c = inc_load(&d, path, sizeof(path));
    ck_assert_msg(c == NULL, "accepted with %d files", CONFIG_MAX_INCLUDES + 1);
    ck_assert_msg(d.n == 1 && has_err_in(&d, "main.yaml", 2, 26, "more than 1000 files"), "%s",
                  dump(&d));
    diag_free(&d);
    inc_cleanup();
}
END_TEST

/* A check's ca_file must be a regular file: a FIFO (never opened, so
 * nothing waits for a writer), a device or a directory is an error at the
 * key, naming it. */
START_TEST(test_ca_file_not_regular)
{
    char dir[] = "/tmp/detourd-ca-XXXXXX", fifo[64], yaml[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/ca.fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    snprintf(yaml, sizeof(yaml), LISTEN "checks: {ca_file: %s}\npools:\n  - name: api\n" REGION,
             fifo);
    char want[128];
    snprintf(want, sizeof(want), "ca_file: '%s' is a FIFO, not a regular file", fifo);
    expect_error_named("fifo", yaml, 2, 19, want);
    expect_error_named("device",
                       LISTEN "checks: {ca_file: /dev/null}\npools:\n  - name: api\n" REGION, 2, 19,
                       "ca_file: '/dev/null' is a character device, not a regular file");
    expect_error_named("directory",
                       LISTEN "checks: {ca_file: /tmp}\npools:\n  - name: api\n" REGION, 2, 19,
                       "ca_file: '/tmp' is a directory, not a regular file");
    unlink(fifo);
    rmdir(dir);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("config");
    TCase *te = tcase_create("errors");
    tcase_add_loop_test(te, test_errors, 0, NELEM(err_cases));
    tcase_add_loop_test(te, test_region_url, 0, NELEM(url_cases));
    tcase_add_loop_test(te, test_self_loop, 0, NELEM(self_cases));
    tcase_add_test(te, test_many_errors);
    tcase_add_test(te, test_deep_nesting);
    tcase_add_test(te, test_aliases);
    tcase_add_test(te, test_too_many_regions);
    tcase_add_test(te, test_nul_in_file);
    tcase_add_test(te, test_encoding_error_position);
    tcase_add_test(te, test_unicode_line_breaks_position);
    tcase_add_test(te, test_nul_in_key);
    tcase_add_test(te, test_alias_amplification);
    tcase_add_test(te, test_error_flood_is_capped);
    tcase_add_test(te, test_ca_file_not_regular);
    suite_add_tcase(s, te);

    TCase *tc = tcase_create("load");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_full_config);
    tcase_add_test(tc, test_url_normalisation);
    tcase_add_test(tc, test_listen_forms);
    tcase_add_test(tc, test_parse_duration);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_tls_listen);
    tcase_add_test(tc, test_tls_acme);
    tcase_add_test(tc, test_parse_listen);
    tcase_add_test(tc, test_cidr);
    tcase_add_test(tc, test_maintenance_load);
    tcase_add_test(tc, test_include_load);
    tcase_add_test(tc, test_include_errors);
    tcase_add_test(tc, test_include_limit);
    tcase_add_test(tc, test_include_limit_over_patterns);
    suite_add_tcase(s, tc);
    return s;
}
