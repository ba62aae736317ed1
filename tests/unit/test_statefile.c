#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/config.h"
#include "control/health_config.h"
#include "control/statefile.h"
#include "unit.h"

/* 2026-11-28T00:00:00Z */
#define T0 INT64_C(1795824000000)

static struct statefile_region R(const char *pool, const char *region, uint64_t hash, bool up,
                                 int64_t since) {
    return (struct statefile_region){(char *)pool, (char *)region, hash, up, since};
}

static bool
decode(const char *s, struct statefile *st, char *err, size_t errlen)
{
    return statefile_decode(s, strlen(s), st, err, errlen);
}

/* Decoding s fails, with a reason containing want. */
static void rejects(const char *s, const char *want)
{
    struct statefile st;
    char err[256];
    ck_assert_msg(!decode(s, &st, err, sizeof(err)), "accepted: %s", s);
    ck_assert_msg(strstr(err, want), "%s: reason '%s', want '%s'", s, err, want);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_ptr_null(st.regions);
}

#define HEAD                                                                                       \
    "{\"format\": \"detourd-state\", \"version\": 1, \"written_at\": \"2026-11-28T00:00:00Z\", "

START_TEST(round_trip)
{
    struct statefile_region rs[] = {
        R("web", "us", 0xffffffffffffffffu, true, T0 - 1000),
        R("api", "eu-west", 0x0123456789abcdefu, false, T0 - 61250),
        R("api", "\xc3\xa9t\xc3\xa9 \"q\" \\ \t", 0, true, 0),
    };
    struct statefile in = {T0 + 250, rs, 3}, out;
    char *buf, err[256];
    size_t len;
    ck_assert(statefile_encode(&in, &buf, &len));
    ck_assert_uint_eq(strlen(buf), len);
    ck_assert(buf[len - 1] == '\n');
    ck_assert_msg(statefile_decode(buf, len, &out, err, sizeof(err)), "%s: %s", err, buf);
    free(buf);
    ck_assert_int_eq(out.written_ms, T0 + 250);
    ck_assert_uint_eq(out.n, 3);
    /* sorted by pool, then region */
    ck_assert_str_eq(out.regions[0].pool, "api");
    ck_assert_str_eq(out.regions[0].region, "eu-west");
    ck_assert_str_eq(out.regions[1].region, "\xc3\xa9t\xc3\xa9 \"q\" \\ \t");
    ck_assert_str_eq(out.regions[2].pool, "web");
    const struct statefile_region *r = statefile_find(&out, "api", "eu-west");
    ck_assert_ptr_nonnull(r);
    ck_assert(r->check_hash == 0x0123456789abcdefu);
    ck_assert(!r->up);
    ck_assert_int_eq(r->since_ms, T0 - 61250);
    r = statefile_find(&out, "web", "us");
    ck_assert(r && r->up && r->check_hash == 0xffffffffffffffffu && r->since_ms == T0 - 1000);
    ck_assert_ptr_null(statefile_find(&out, "web", "eu"));
    ck_assert_ptr_null(statefile_find(&out, "api", "us"));
    statefile_clear(&out);

    struct statefile empty = {T0, NULL, 0};
    ck_assert(statefile_encode(&empty, &buf, &len));
    ck_assert(statefile_decode(buf, len, &out, err, sizeof(err)));
    ck_assert_uint_eq(out.n, 0);
    ck_assert_ptr_null(statefile_find(&out, "a", "b"));
    statefile_clear(&out);
    free(buf);
}
END_TEST

START_TEST(tolerant)
{
    struct statefile st;
    char err[256];
    /* unknown keys (of any shape) are skipped, in any order, escapes decoded */
    const char *s =
        "\n{\"regions\": [{\"x\": [1, {\"y\": null}, -2.5e3], \"up\": false, "
        "\"since\": \"2026-11-28T01:00:00+01:00\", \"check_hash\": \"ABCDEF0123456789\", "
        "\"region\": \"e\\u00e9\\ud83d\\ude00\", \"pool\": \"p\\/q\"}], \"host\": \"h\", "
        "\"written_at\": \"2026-11-28T00:00:00.5Z\", \"version\": 1, "
        "\"format\": \"detourd-state\"}\r\n ";
    ck_assert_msg(decode(s, &st, err, sizeof(err)), "%s", err);
    ck_assert_uint_eq(st.n, 1);
    ck_assert_int_eq(st.written_ms, T0 + 500);
    ck_assert_str_eq(st.regions[0].pool, "p/q");
    ck_assert_str_eq(st.regions[0].region, "e\xc3\xa9\xf0\x9f\x98\x80");
    ck_assert(st.regions[0].check_hash == 0xabcdef0123456789u);
    ck_assert_int_eq(st.regions[0].since_ms, T0);
    statefile_clear(&st);
}
END_TEST

START_TEST(corrupt)
{
    rejects("", "empty");
    rejects("   \n", "empty");
    rejects("garbage", "not a detourd state file");
    rejects("[1, 2]", "not a detourd state file");
    rejects(HEAD "\"regions\": []} x", "after the end");
    rejects(HEAD "\"regions\": [],}", "malformed");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"region\": \"b\", \"check_hash\": "
                 "\"0000000000000000\", \"up\": \"maybe\", \"since\": \"2026-11-28T00:00:00Z\"}]}",
            "'up' is not true or false");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"region\": \"b\", \"check_hash\": "
                 "\"000000000000000g\", \"up\": true, \"since\": \"2026-11-28T00:00:00Z\"}]}",
            "check_hash");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"region\": \"b\", \"check_hash\": "
                 "\"00\", \"up\": true, \"since\": \"2026-11-28T00:00:00Z\"}]}",
            "check_hash");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"region\": \"b\", \"check_hash\": "
                 "\"0000000000000000\", \"up\": true, \"since\": \"yesterday\"}]}",
            "since is not an RFC 3339 time");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"region\": \"b\", \"up\": true, "
                 "\"since\": \"2026-11-28T00:00:00Z\"}]}",
            "lacks");
    rejects(HEAD "\"regions\": [{\"pool\": \"\", \"region\": \"b\"}]}", "empty pool name");
    rejects(HEAD "\"regions\": [{\"pool\": \"a\", \"pool\": \"b\"}]}",
            "'\"pool\"': a key given twice");
    rejects(HEAD "\"regions\": [], \"regions\": []}", "given twice");
    rejects(HEAD "\"regions\": [7]}", "a region is not an object");
    rejects(HEAD "\"regions\": {}}", "'regions' is not a list");
    const char *dup = "{\"pool\": \"a\", \"region\": \"b\", \"check_hash\": \"0000000000000000\", "
                      "\"up\": true, \"since\": \"2026-11-28T00:00:00Z\"}";
    char buf[1024];
    snprintf(buf, sizeof(buf), HEAD "\"regions\": [%s, %s]}", dup, dup);
    rejects(buf, "listed twice");
    /* strings: control characters, bad escapes, lone surrogates, NUL, bad UTF-8 */
    rejects(HEAD "\"x\": \"a\tb\", \"regions\": []}", "control character");
    rejects(HEAD "\"x\": \"\\q\", \"regions\": []}", "invalid escape");
    rejects(HEAD "\"x\": \"\\u12\", \"regions\": []}", "invalid escape");
    rejects(HEAD "\"x\": \"\\udc00\", \"regions\": []}", "invalid Unicode");
    rejects(HEAD "\"x\": \"\\ud800x\", \"regions\": []}", "invalid Unicode");
    rejects(HEAD "\"x\": \"\\u0000\", \"regions\": []}", "NUL");
    rejects(HEAD "\"x\": \"\xc3\x28\", \"regions\": []}", "UTF-8");
    rejects(HEAD "\"x\": \"\xed\xa0\x80\", \"regions\": []}", "UTF-8");
    rejects(HEAD "\"x\": 01, \"regions\": []}", "malformed");
    rejects(HEAD "\"x\": 1., \"regions\": []}", "invalid token");
    rejects(HEAD "\"x\": -, \"regions\": []}", "invalid token");
    rejects(HEAD "\"x\": nul, \"regions\": []}", "malformed");
    /* a NUL byte in the file */
    struct statefile st;
    char err[256];
    static const char nul[] = "{\"format\": \"detourd-state\"\0}";
    ck_assert(!statefile_decode(nul, sizeof(nul) - 1, &st, err, sizeof(err)));
    /* nested deeper than the limit: rejected, not a stack overflow (whole,
     * or cut short: jansson's own limit is far above ours, and below any
     * stack's) */
    char deep[8192];
    size_t o = (size_t)snprintf(deep, sizeof(deep), HEAD "\"x\": ");
    for (int i = 0; i < 1000; i++) deep[o++] = '[';
    for (int i = 0; i < 1000; i++) deep[o++] = ']';
    snprintf(deep + o, sizeof(deep) - o, ", \"regions\": []}");
    rejects(deep, "nested too deeply");
    o = (size_t)snprintf(deep, sizeof(deep), HEAD "\"x\": ");
    for (int i = 0; i < 5000; i++) deep[o++] = '[';
    deep[o] = '\0';
    rejects(deep, "nested too deeply");
}
END_TEST

START_TEST(foreign)
{
    rejects("{\"version\": 1, \"written_at\": \"2026-11-28T00:00:00Z\", \"regions\": []}",
            "not a detourd state file");
    rejects("{\"format\": \"other\", \"version\": 1, \"written_at\": \"2026-11-28T00:00:00Z\", "
            "\"regions\": []}",
            "not a detourd state file");
    rejects("{\"name\": \"package\", \"dependencies\": {\"a\": \"1.0\"}}",
            "not a detourd state file");
    rejects("{\"format\": \"detourd-state\", \"version\": 2, \"written_at\": "
            "\"2026-11-28T00:00:00Z\", \"regions\": []}",
            "version 2");
    rejects("{\"format\": \"detourd-state\", \"version\": 1.0, \"written_at\": "
            "\"2026-11-28T00:00:00Z\", \"regions\": []}",
            "version");
    rejects("{\"format\": \"detourd-state\", \"version\": \"1\", \"written_at\": "
            "\"2026-11-28T00:00:00Z\", \"regions\": []}",
            "not a number");
    rejects("{\"format\": \"detourd-state\", \"version\": 1, \"regions\": []}", "missing");
    rejects("{\"format\": \"detourd-state\", \"version\": 1, \"written_at\": \"now\", "
            "\"regions\": []}",
            "written_at is not an RFC 3339 time");
}
END_TEST

/* Every prefix of a valid file is rejected (a write cut short). */
START_TEST(truncated)
{
    struct statefile_region rs[] = {R("api", "eu", 1, false, T0), R("api", "us", 2, true, T0)};
    struct statefile in = {T0, rs, 2}, st;
    char *buf, err[256];
    size_t len;
    ck_assert(statefile_encode(&in, &buf, &len));
    /* the last byte is the newline: a file without it is still whole */
    for (size_t n = 0; n + 1 < len; n++) {
        char *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        ck_assert_msg(!statefile_decode(cut, n, &st, err, sizeof(err)), "prefix of %zu accepted",
                      n);
        ck_assert_uint_eq(st.n, 0);
        free(cut);
    }
    ck_assert(statefile_decode(buf, len - 1, &st, err, sizeof(err)));
    statefile_clear(&st);
    free(buf);
}
END_TEST

START_TEST(huge)
{
    struct statefile st;
    char err[256];
    size_t n = STATEFILE_MAX_BYTES + 1;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    ck_assert(!statefile_decode(big, n, &st, err, sizeof(err)));
    ck_assert_msg(strstr(err, "larger than"), "%s", err);
    free(big);

    /* many regions within the limit: all of them, found by name */
    size_t count = 20000;
    struct statefile_region *rs = calloc(count, sizeof(*rs));
    char(*names)[16] = calloc(count, sizeof(*names));
    for (size_t i = 0; i < count; i++) {
        snprintf(names[i], sizeof(names[i]), "r%zu", i);
        rs[i] = R("pool", names[i], i, i % 2, T0);
    }
    struct statefile in = {T0, rs, count};
    char *buf;
    size_t len;
    ck_assert(statefile_encode(&in, &buf, &len));
    ck_assert_msg(statefile_decode(buf, len, &st, err, sizeof(err)), "%s", err);
    ck_assert_uint_eq(st.n, count);
    const struct statefile_region *r = statefile_find(&st, "pool", "r12345");
    ck_assert(r && r->check_hash == 12345 && r->up);
    statefile_clear(&st);
    free(buf);
    free(rs);
    free(names);
}
END_TEST

/* Old files: the decoder reads them; the age is the caller's decision
 * (statefile_restore) and is tested end to end in tests/integration. Here:
 * an old written_at comes back exactly. */
START_TEST(old)
{
    struct statefile st;
    char err[256];
    ck_assert(decode("{\"format\": \"detourd-state\", \"version\": 1, \"written_at\": "
                     "\"1970-01-01T00:00:01Z\", \"regions\": []}",
                     &st, err, sizeof(err)));
    ck_assert_int_eq(st.written_ms, 1000);
    statefile_clear(&st);
}
END_TEST

/* Files on disk: an atomic write reads back; no temporary file is left;
 * a missing file or a directory is an error with a reason. */
START_TEST(files)
{
    const char *base = getenv("TMPDIR");
    char dir[200];
    snprintf(dir, sizeof(dir), "%s/detourd-statefile-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], tmp[300], err[512];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    struct statefile st;
    ck_assert(!statefile_read(path, &st, err, sizeof(err)));
    ck_assert_msg(strstr(err, "No such file"), "%s", err);
    struct statefile_region rs[] = {R("api", "eu", 7, false, T0)};
    struct statefile in = {T0, rs, 1};
    ck_assert_msg(statefile_write(path, &in, NULL, err, sizeof(err)), "%s", err);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    rs[0].up = true;
    ck_assert_msg(statefile_write(path, &in, NULL, err, sizeof(err)), "%s", err); /* replaces it */
    ck_assert_msg(statefile_read(path, &st, err, sizeof(err)), "%s", err);
    ck_assert(st.n == 1 && st.regions[0].up && st.regions[0].check_hash == 7);
    statefile_clear(&st);
    ck_assert(!statefile_read(dir, &st, err, sizeof(err)));
    char bad[300];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/state.json", dir);
    ck_assert(!statefile_write(bad, &in, NULL, err, sizeof(err)));
    ck_assert_msg(strstr(err, "No such file"), "%s", err);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Nothing but a regular file is ever renamed over: a FIFO, a directory,
 * or a device behind a name is left alone (and said to be), a symlink is
 * replaced itself (never what it points to). */
START_TEST(write_not_regular)
{
    const char *base = getenv("TMPDIR");
    char dir[200], path[256], tmp[300], err[512];
    snprintf(dir, sizeof(dir), "%s/detourd-statefile-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    struct statefile_region rs[] = {R("api", "eu", 7, false, T0)};
    struct statefile in = {T0, rs, 1};
    struct stat sb;
    bool refused;
    /* a FIFO, then a directory, where the file was */
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert(!statefile_write(path, &in, &refused, err, sizeof(err)));
    ck_assert(refused);
    ck_assert_str_eq(err, "is a FIFO, not a regular file");
    ck_assert(stat(path, &sb) == 0 && S_ISFIFO(sb.st_mode));
    ck_assert_int_ne(access(tmp, F_OK), 0); /* no temporary file left */
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert(!statefile_write(path, &in, &refused, err, sizeof(err)));
    ck_assert(refused);
    ck_assert_str_eq(err, "is a directory, not a regular file");
    ck_assert_int_eq(rmdir(path), 0);
    /* a FIFO at the temporary name: never waited on, never removed */
    ck_assert_int_eq(mkfifo(tmp, 0600), 0);
    ck_assert(!statefile_write(path, &in, &refused, err, sizeof(err)));
    ck_assert(!refused);
    ck_assert(stat(tmp, &sb) == 0 && S_ISFIFO(sb.st_mode));
    ck_assert_int_eq(unlink(tmp), 0);
    /* a symlink to a device: the link is replaced, the device untouched */
    ck_assert_int_eq(symlink("/dev/null", path), 0);
    ck_assert_msg(statefile_write(path, &in, &refused, err, sizeof(err)), "%s", err);
    ck_assert(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode));
    ck_assert(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* state_file may name nothing yet or a regular file; a device, a FIFO or
 * a directory is a config error at the key, naming what it is. */
START_TEST(config_not_regular)
{
    const char *base = getenv("TMPDIR");
    char dir[200], fifo[256], link[256], yaml[1024];
    snprintf(dir, sizeof(dir), "%s/detourd-statefile-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/state.fifo", dir);
    snprintf(link, sizeof(link), "%s/state.link", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(symlink("/dev/null", link), 0);
    const struct {
        const char *path, *why; /* why NULL: accepted */
    } cases[] = {
        {"/dev/null", "is a character device, not a regular file"},
        {fifo, "is a FIFO, not a regular file"},
        {dir, "is a directory, not a regular file"},
        {link, "is a character device, not a regular file"},
        {"/nonexistent-dir/state.json", NULL}, /* a warning at the first write */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(yaml, sizeof(yaml),
                 "listen: [\"127.0.0.1:8080\"]\nstate_file: \"%s\"\n"
                 "pools:\n  - name: p\n    regions: [{name: a, url: \"http://a.test\"}]\n",
                 cases[i].path);
        struct diag d;
        diag_init(&d, "t.yaml");
        struct config *c = config_parse("t.yaml", yaml, strlen(yaml), &d);
        if (!cases[i].why) {
            ck_assert_msg(c != NULL, "%s rejected", cases[i].path);
            config_free(c);
        } else {
            char want[512], got[1024] = "";
            snprintf(want, sizeof(want), "t.yaml:2:13: state_file: '%s' %s", cases[i].path,
                     cases[i].why);
            if (d.n) diag_format(&d, 0, got, sizeof(got));
            ck_assert_msg(c == NULL && d.n == 1 && strcmp(got, want) == 0, "%s: got '%s'",
                          cases[i].path, got);
        }
        diag_free(&d);
    }
    struct stat sb;
    ck_assert(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
    unlink(fifo);
    unlink(link);
    rmdir(dir);
}
END_TEST

static struct config *load(const char *yaml)
{
    struct diag d;
    diag_init(&d, "t.yaml");
    struct config *c = config_parse("t.yaml", yaml, strlen(yaml), &d);
    ck_assert_msg(c != NULL, "config rejected");
    diag_free(&d);
    return c;
}

/* The check hash follows check_cfg_equal: the same check the same hash,
 * whatever else changed; any check setting changed another hash. */
START_TEST(check_hash)
{
    struct config *a = load("listen: [\"127.0.0.1:8080\"]\n"
                            "pools:\n"
                            "  - name: p\n"
                            "    regions:\n"
                            "      - {name: a, url: \"http://a.test\", weight: 2}\n"
                            "      - {name: b, url: \"http://b.test\"}\n");
    struct config *b = load("listen: [\"127.0.0.1:8080\"]\n"
                            "state_file: /var/lib/detourd/state.json\n"
                            "state_max_age: 1s\n"
                            "pools:\n"
                            "  - name: p\n"
                            "    regions:\n"
                            "      - {name: a, url: \"http://a.test\", weight: 5, priority: 3}\n"
                            "      - {name: b, url: \"http://b.test\", check: {fall: 4}}\n");
    ck_assert_ptr_null(a->state_file);
    ck_assert_uint_eq(a->state_max_age_ms, 600000);
    ck_assert_str_eq(b->state_file, "/var/lib/detourd/state.json");
    ck_assert_uint_eq(b->state_max_age_ms, 1000);
    const struct check_cfg *aa = a->pools[0].regions[0].check, *ab = a->pools[0].regions[1].check;
    const struct check_cfg *ba = b->pools[0].regions[0].check, *bb = b->pools[0].regions[1].check;
    ck_assert(check_cfg_equal(aa, ba));
    ck_assert(check_cfg_hash(aa) == check_cfg_hash(ba));
    ck_assert(!check_cfg_equal(ab, bb));
    ck_assert(check_cfg_hash(ab) != check_cfg_hash(bb));
    ck_assert(check_cfg_hash(aa) != check_cfg_hash(ab)); /* another url */
    config_unref(a);
    config_unref(b);

    struct diag d;
    diag_init(&d, "t.yaml");
    static const char rel[] = "listen: [\"127.0.0.1:8080\"]\n"
                              "state_file: state.json\n"
                              "pools: [{name: p, regions: [{name: a, url: \"http://a.test\"}]}]\n";
    ck_assert_ptr_null(config_parse("t.yaml", rel, strlen(rel), &d));
    ck_assert_uint_eq(d.n, 1);
    diag_free(&d);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("statefile");
    TCase *tc = tcase_create("statefile");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, tolerant);
    tcase_add_test(tc, corrupt);
    tcase_add_test(tc, foreign);
    tcase_add_test(tc, truncated);
    tcase_add_test(tc, huge);
    tcase_add_test(tc, old);
    tcase_add_test(tc, files);
    tcase_add_test(tc, check_hash);
    tcase_add_test(tc, write_not_regular);
    tcase_add_test(tc, config_not_regular);
    suite_add_tcase(s, tc);
    return s;
}
