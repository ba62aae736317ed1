#include "autoconf.h"

#include "control/statefile.h"

#include <errno.h>
#include <pthread.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "control/health.h"
#include "lib/file.h"
#include "lib/json.h"
#include "lib/log.h"
#include "control/schedule.h"

/* ---- encoding ---- */

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    /* the capacity was computed for the worst case: this never overflows */
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_s(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_str(struct out *o, const char *s)
{
    put(o, "\"", 1);
    o->len += json_escape(o->p + o->len, s, strlen(s));
    put(o, "\"", 1);
}

static void put_time(struct out *o, int64_t ms)
{
    char t[SCHED_TIME_LEN];
    sched_format_time(ms, t, sizeof(t));
    put_str(o, t);
}

bool statefile_encode(const struct statefile *st, char **out, size_t *len)
{
    /* fixed parts: 200 bytes per region and for the head, times included */
    size_t cap = 256;
    for (size_t i = 0; i < st->n; i++) {
        size_t a = strlen(st->regions[i].pool), b = strlen(st->regions[i].region);
        size_t need = 200 + JSON_ESCAPE_MAX(a) + JSON_ESCAPE_MAX(b);
        if (cap > SIZE_MAX - need) return false;
        cap += need;
    }
    struct out o = {malloc(cap), 0, cap};
    if (!o.p) return false;
    put_s(&o, "{\"format\": \"" STATEFILE_FORMAT "\", \"version\": ");
    char num[64];
    snprintf(num, sizeof(num), "%d", STATEFILE_VERSION);
    put_s(&o, num);
    put_s(&o, ",\n \"written_at\": ");
    put_time(&o, st->written_ms);
    put_s(&o, ",\n \"regions\": [");
    for (size_t i = 0; i < st->n; i++) {
        const struct statefile_region *r = &st->regions[i];
        put_s(&o, i ? ",\n  {\"pool\": " : "\n  {\"pool\": ");
        put_str(&o, r->pool);
        put_s(&o, ", \"region\": ");
        put_str(&o, r->region);
        snprintf(num, sizeof(num), ", \"check_hash\": \"%016llx\", \"up\": %s, \"since\": ",
                 (unsigned long long)r->check_hash, r->up ? "true" : "false");
        put_s(&o, num);
        put_time(&o, r->since_ms);
        put_s(&o, "}");
    }
    put_s(&o, st->n ? "\n ]}\n" : "]}\n");
    o.p[o.len] = '\0'; /* within cap: the head alone leaves far more room */
    *out = o.p;
    *len = o.len;
    return true;
}

/* ---- decoding ---- */

struct dec {
    const char *p, *end;
    char *err;
    size_t errlen;
    bool failed;
};

static bool fail(struct dec *d, const char *fmt, ...)
{
    if (!d->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, d->errlen, fmt, ap);
        va_end(ap);
        d->failed = true;
    }
    return false;
}

static void ws(struct dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static bool at_end(struct dec *d)
{
    ws(d);
    return d->p >= d->end;
}

/* Consumes c (after white space) or fails. */
static bool expect(struct dec *d, char c)
{
    if (at_end(d)) return fail(d, "truncated");
    if (*d->p != c) return fail(d, "malformed JSON: '%c' expected", c);
    d->p++;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(struct dec *d, const char *s, unsigned *v)
{
    if (d->end - s < 4) return fail(d, "truncated");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0) return fail(d, "malformed JSON: bad \\u escape");
        *v = *v << 4 | (unsigned)h;
    }
    return true;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A JSON string; its value (NUL-terminated, malloc'd) in *out unless out
 * is NULL. Only well-formed UTF-8, no NUL: names are C strings. */
static bool string(struct dec *d, char **out)
{
    if (!expect(d, '"')) return false;
    /* the decoded value is never longer than its source */
    const char *s = d->p;
    while (s < d->end && *s != '"') s += *s == '\\' && s + 1 < d->end ? 2 : 1;
    if (s >= d->end) return fail(d, "truncated");
    char *v = NULL, *o = NULL;
    if (out) {
        v = o = malloc((size_t)(s - d->p) + 1);
        if (!v) return fail(d, "out of memory");
    }
    const char *p = d->p;
    while (*p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            free(v);
            return fail(d, "malformed JSON: control character in a string");
        }
        if (c >= 0x80) {
            size_t bad, n = utf8_seq((const unsigned char *)p, (size_t)(s - p), &bad);
            if (!n) {
                free(v);
                return fail(d, "malformed UTF-8 in a string");
            }
            if (o) memcpy(o, p, n), o += n;
            p += n;
            continue;
        }
        if (c != '\\') {
            if (o) *o++ = (char)c;
            p++;
            continue;
        }
        char e = p[1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char val[] = "\"\\/\b\f\n\r\t";
            if (o) *o++ = val[simple - "\"\\/bfnrt"];
            p += 2;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || !hex4(d, p + 2, &cp)) {
            free(v);
            return fail(d, "malformed JSON: bad escape in a string");
        }
        p += 6;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            free(v);
            return fail(d, "malformed JSON: lone surrogate in a string");
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(d, p + 2, &lo) || lo < 0xdc00 ||
                lo > 0xdfff) {
                free(v);
                return fail(d, "malformed JSON: lone surrogate in a string");
            }
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0) {
            free(v);
            return fail(d, "NUL in a string");
        }
        if (o) o += put_utf8(o, cp);
    }
    d->p = s + 1;
    if (out) {
        *o = '\0';
        *out = v;
    }
    return true;
}

/* A JSON number; *ival its value when it is an integer of at most 9
 * digits, else -1. */
static bool number(struct dec *d, long *ival)
{
    const char *p = d->p, *e = d->end;
    if (p < e && *p == '-') p++;
    const char *digits = p;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9') p++;
    else
        return fail(d, p >= e ? "truncated" : "malformed JSON: bad number");
    bool integer = d->p == digits && p - digits <= 9;
    if (p < e && *p == '.') {
        integer = false;
        if (++p >= e || *p < '0' || *p > '9') return fail(d, "malformed JSON: bad number");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return fail(d, "malformed JSON: bad number");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    *ival = -1;
    if (integer) {
        *ival = 0;
        for (const char *q = digits; q < p; q++) *ival = *ival * 10 + (*q - '0');
    }
    d->p = p;
    return true;
}

static bool literal(struct dec *d, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n) return fail(d, "truncated");
    if (memcmp(d->p, word, n) != 0) return fail(d, "malformed JSON: unexpected '%c'", *d->p);
    d->p += n;
    return true;
}

static bool boolean(struct dec *d, bool *v)
{
    if (at_end(d)) return fail(d, "truncated");
    *v = *d->p == 't';
    return literal(d, *v ? "true" : "false");
}

static bool skip_value(struct dec *d, unsigned depth);

/* Walks an object: for each member, f (or skip_value when f returns 0 for
 * an unknown key... see member()). */
typedef int (*member_fn)(struct dec *d, const char *key, void *arg);

static bool object(struct dec *d, unsigned depth, member_fn f, void *arg)
{
    if (depth > STATEFILE_MAX_DEPTH) return fail(d, "nested too deeply");
    if (!expect(d, '{')) return false;
    if (at_end(d)) return fail(d, "truncated");
    if (*d->p == '}') {
        d->p++;
        return true;
    }
    for (;;) {
        char *key;
        if (!string(d, &key)) return false;
        bool ok = expect(d, ':');
        if (ok) {
            ws(d);
            int r = f ? f(d, key, arg) : 0; /* 1 parsed, 0 unknown, -1 failed */
            ok = r > 0 || (r == 0 && skip_value(d, depth + 1));
        }
        free(key);
        if (!ok) return false;
        if (at_end(d)) return fail(d, "truncated");
        if (*d->p == '}') {
            d->p++;
            return true;
        }
        if (!expect(d, ',')) return false;
    }
}

typedef bool (*item_fn)(struct dec *d, void *arg);

static bool array(struct dec *d, unsigned depth, item_fn f, void *arg)
{
    if (depth > STATEFILE_MAX_DEPTH) return fail(d, "nested too deeply");
    if (!expect(d, '[')) return false;
    if (at_end(d)) return fail(d, "truncated");
    if (*d->p == ']') {
        d->p++;
        return true;
    }
    for (;;) {
        if (!(f ? f(d, arg) : skip_value(d, depth + 1))) return false;
        if (at_end(d)) return fail(d, "truncated");
        if (*d->p == ']') {
            d->p++;
            return true;
        }
        if (!expect(d, ',')) return false;
    }
}

static bool skip_value(struct dec *d, unsigned depth)
{
    if (at_end(d)) return fail(d, "truncated");
    long n;
    bool b;
    switch (*d->p) {
    case '{': return object(d, depth, NULL, NULL);
    case '[': return array(d, depth, NULL, NULL);
    case '"': return string(d, NULL);
    case 't':
    case 'f': return boolean(d, &b);
    case 'n': return literal(d, "null");
    default: return number(d, &n);
    }
}

/* A string member parsed as an RFC 3339 time. */
static bool time_value(struct dec *d, const char *what, int64_t *ms)
{
    char *s;
    if (!string(d, &s)) return false;
    bool ok = sched_parse_time(s, ms);
    free(s);
    return ok || fail(d, "%s is not an RFC 3339 time", what);
}

enum { F_POOL = 1, F_REGION = 2, F_HASH = 4, F_UP = 8, F_SINCE = 16, F_REGION_ALL = 31 };

struct region_ctx {
    struct statefile_region r;
    unsigned seen;
};

static int once(struct dec *d, unsigned *seen, unsigned bit, const char *key)
{
    if (*seen & bit) return fail(d, "'%s' given twice", key), -1;
    *seen |= bit;
    return 1;
}

static int region_member(struct dec *d, const char *key, void *arg)
{
    struct region_ctx *x = arg;
    if (strcmp(key, "pool") == 0 || strcmp(key, "region") == 0) {
        bool pool = key[0] == 'p';
        if (once(d, &x->seen, pool ? F_POOL : F_REGION, key) < 0) return -1;
        char **dst = pool ? &x->r.pool : &x->r.region;
        if (!string(d, dst)) return -1;
        if (!(*dst)[0]) return fail(d, "empty %s name", key), -1;
        return 1;
    }
    if (strcmp(key, "check_hash") == 0) {
        if (once(d, &x->seen, F_HASH, key) < 0) return -1;
        char *s;
        if (!string(d, &s)) return -1;
        bool ok = strlen(s) == 16;
        x->r.check_hash = 0;
        for (size_t i = 0; ok && i < 16; i++) {
            int h = hexval(s[i]);
            ok = h >= 0;
            x->r.check_hash = x->r.check_hash << 4 | (uint64_t)(h < 0 ? 0 : h);
        }
        free(s);
        return ok ? 1 : (fail(d, "check_hash is not 16 hex digits"), -1);
    }
    if (strcmp(key, "up") == 0) {
        if (once(d, &x->seen, F_UP, key) < 0) return -1;
        if (at_end(d)) return fail(d, "truncated"), -1;
        if (*d->p != 't' && *d->p != 'f') return fail(d, "'up' is not true or false"), -1;
        return boolean(d, &x->r.up) ? 1 : -1;
    }
    if (strcmp(key, "since") == 0) {
        if (once(d, &x->seen, F_SINCE, key) < 0) return -1;
        return time_value(d, "since", &x->r.since_ms) ? 1 : -1;
    }
    return 0;
}

struct doc_ctx {
    struct statefile *st;
    size_t cap;
    unsigned seen;
    long version;
    char *format;
};

static bool region_item(struct dec *d, void *arg)
{
    struct doc_ctx *x = arg;
    struct region_ctx rc = {0};
    if (at_end(d)) return fail(d, "truncated");
    if (*d->p != '{') return fail(d, "a region is not an object");
    bool ok = object(d, 2, region_member, &rc);
    if (ok && rc.seen != F_REGION_ALL)
        ok = fail(d, "a region lacks pool, region, check_hash, up or since");
    if (ok && x->st->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 16;
        struct statefile_region *nr = realloc(x->st->regions, cap * sizeof(*nr));
        if (!nr)
            ok = fail(d, "out of memory");
        else
            x->st->regions = nr, x->cap = cap;
    }
    if (!ok) {
        free(rc.r.pool);
        free(rc.r.region);
        return false;
    }
    x->st->regions[x->st->n++] = rc.r;
    return true;
}

enum { D_FORMAT = 1, D_VERSION = 2, D_WRITTEN = 4, D_REGIONS = 8, D_ALL = 15 };

static int doc_member(struct dec *d, const char *key, void *arg)
{
    struct doc_ctx *x = arg;
    if (strcmp(key, "format") == 0) {
        if (once(d, &x->seen, D_FORMAT, key) < 0) return -1;
        return string(d, &x->format) ? 1 : -1;
    }
    if (strcmp(key, "version") == 0) {
        if (once(d, &x->seen, D_VERSION, key) < 0) return -1;
        if (at_end(d)) return fail(d, "truncated"), -1;
        if (!((*d->p >= '0' && *d->p <= '9') || *d->p == '-'))
            return fail(d, "'version' is not a number"), -1;
        return number(d, &x->version) ? 1 : -1;
    }
    if (strcmp(key, "written_at") == 0) {
        if (once(d, &x->seen, D_WRITTEN, key) < 0) return -1;
        return time_value(d, "written_at", &x->st->written_ms) ? 1 : -1;
    }
    if (strcmp(key, "regions") == 0) {
        if (once(d, &x->seen, D_REGIONS, key) < 0) return -1;
        if (at_end(d)) return fail(d, "truncated"), -1;
        if (*d->p != '[') return fail(d, "'regions' is not a list"), -1;
        return array(d, 1, region_item, x) ? 1 : -1;
    }
    return 0;
}

static int region_cmp(const void *a, const void *b)
{
    const struct statefile_region *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    return c ? c : strcmp(x->region, y->region);
}

bool statefile_decode(const char *buf, size_t len, struct statefile *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    struct dec d = {buf, buf + len, err, errlen, false};
    struct doc_ctx x = {.st = st, .version = -1};
    if (errlen) err[0] = '\0';
    bool ok = true;
    if (len > STATEFILE_MAX_BYTES)
        ok = fail(&d, "larger than %u bytes", STATEFILE_MAX_BYTES);
    else if (at_end(&d))
        ok = fail(&d, "empty");
    else if (*d.p != '{')
        ok = fail(&d, "not a detourd state file (not a JSON object)");
    else
        ok = object(&d, 0, doc_member, &x) && (at_end(&d) || fail(&d, "data after the end"));
    /* the format first: a foreign file is called that, whatever else is wrong */
    if (ok && (!(x.seen & D_FORMAT) || strcmp(x.format, STATEFILE_FORMAT) != 0))
        ok = fail(&d, "not a detourd state file (no \"format\": \"" STATEFILE_FORMAT "\")");
    if (ok && x.version != STATEFILE_VERSION)
        ok = fail(&d, "version %ld (this detourd reads version %d)", x.version, STATEFILE_VERSION);
    if (ok && x.seen != D_ALL) ok = fail(&d, "written_at or regions missing");
    free(x.format);
    if (ok && st->n) { /* qsort() of no regions would be passed NULL */
        qsort(st->regions, st->n, sizeof(*st->regions), region_cmp);
        for (size_t i = 1; ok && i < st->n; i++)
            if (region_cmp(&st->regions[i - 1], &st->regions[i]) == 0)
                ok = fail(&d, "region %s/%s listed twice", st->regions[i].pool,
                          st->regions[i].region);
    }
    if (!ok) statefile_clear(st);
    return ok;
}

const struct statefile_region *statefile_find(const struct statefile *st, const char *pool,
                                              const char *region)
{
    struct statefile_region key = {.pool = (char *)pool, .region = (char *)region};
    if (!st->n) return NULL;
    return bsearch(&key, st->regions, st->n, sizeof(key), region_cmp);
}

void statefile_clear(struct statefile *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->regions[i].pool);
        free(st->regions[i].region);
    }
    free(st->regions);
    memset(st, 0, sizeof(*st));
}

/* ---- files ---- */

bool statefile_read(const char *path, struct statefile *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    size_t len;
    struct file_error fe;
    char *buf = file_read(path, STATEFILE_MAX_BYTES, &len, &fe);
    if (!buf) {
        if (fe.kind == FILE_EOPEN || fe.kind == FILE_EREAD)
            snprintf(err, errlen, "%s", strerror(fe.err));
        else
            file_why(&fe, err, errlen);
        return false;
    }
    bool ok = statefile_decode(buf, len, st, err, errlen);
    free(buf);
    return ok;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Is path something a rename may replace: nothing, a regular file, or a
 * symlink (the link is replaced, never what it points to)? Anything else
 * (a device, a FIFO, a socket, a directory) is never renamed over: as root,
 * `state_file: /dev/null` would otherwise replace the host's /dev/null. */
static bool replaceable(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (lstat(path, &sb) != 0 || S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)) return true;
    struct file_error fe = {.kind = FILE_ENOTREG, .mode = sb.st_mode};
    file_why(&fe, err, errlen);
    return false;
}

bool statefile_write(const char *path, const struct statefile *st, bool *refused, char *err,
                     size_t errlen)
{
    bool no = false;
    if (!refused) refused = &no;
    *refused = false;
    char *buf;
    size_t len;
    if (!statefile_encode(st, &buf, &len)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof(".tmp"));
    char *dir = strdup(path);
    if (!tmp || !dir) {
        snprintf(err, errlen, "out of memory");
        free(buf), free(tmp), free(dir);
        return false;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", sizeof(".tmp"));
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else
        slash[slash == dir] = '\0'; /* "/state.json": the directory is "/" */
    const char *step = "create";
    bool ok = false;
    /* O_NONBLOCK: a FIFO left at the temporary name is never waited on */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        close(fd);
        fd = -1; /* not ours to remove */
        errno = EEXIST;
    }
    if (fd >= 0) {
        step = "write";
        if (write_all(fd, buf, len) && (step = "fsync", fsync(fd) == 0)) ok = true;
        int e = errno;
        if (close(fd) != 0 && ok) step = "close", ok = false, e = errno;
        errno = e;
    }
    /* checked again just before: it may have been replaced since the load */
    if (ok && !replaceable(path, err, errlen)) {
        *refused = true;
        unlink(tmp);
        free(buf), free(tmp), free(dir);
        return false;
    }
    if (ok && (step = "rename", rename(tmp, path) != 0)) ok = false;
    if (!ok) {
        snprintf(err, errlen, "%s %s: %s", step, tmp, strerror(errno));
        if (fd >= 0) unlink(tmp);
    } else {
        /* the rename itself is durable once the directory is */
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) {
            snprintf(err, errlen, "fsync %s: %s", dir, strerror(errno));
            ok = false;
        }
        if (dfd >= 0) close(dfd);
    }
    free(buf);
    free(tmp);
    free(dir);
    return ok;
}

/* ---- the daemon ---- */

size_t statefile_restore(struct health_ctl *h, struct config *cfg, int64_t now_ms)
{
    const char *path = cfg->state_file;
    if (!path) return 0;
    struct statefile st;
    char err[256];
    if (!statefile_read(path, &st, err, sizeof(err))) {
        log_warn("state file %s: %s; every region starts in its initial state", path, err);
        return 0;
    }
    int64_t age = now_ms - st.written_ms;
    if (age > (int64_t)cfg->state_max_age_ms || -age > (int64_t)cfg->state_max_age_ms) {
        log_warn("state file %s: written %.1f s %s, more than state_max_age (%.1f s): ignored; "
                 "every region starts in its initial state",
                 path, (double)(age < 0 ? -age : age) / 1000, age < 0 ? "in the future" : "ago",
                 (double)cfg->state_max_age_ms / 1000);
        statefile_clear(&st);
        return 0;
    }
    size_t restored = 0, down = 0, changed = 0, total = 0;
    for (size_t i = 0; i < cfg->npools; i++) {
        struct pool *p = &cfg->pools[i];
        bool moved = false;
        for (size_t j = 0; j < p->nregions; j++, total++) {
            struct region *r = &p->regions[j];
            const struct statefile_region *s = statefile_find(&st, p->name, r->name);
            if (!s || !r->health) continue;
            if (s->check_hash != check_cfg_hash(r->check)) {
                changed++;
                continue;
            }
            struct health *hr = r->health;
            moved = moved || hr->st.up != s->up;
            hr->st.up = s->up;
            int64_t since = s->since_ms > now_ms ? now_ms : s->since_ms;
            hr->last_change = (time_t)(since / 1000);
            restored++;
            if (!s->up) {
                down++;
                log_info("pool %s region %s starts DOWN, as saved in the state file", p->name,
                         r->name);
            }
        }
        if (moved) health_republish(h, p);
    }
    log_info("state file %s: %zu of %zu region%s start in their saved state (%zu down); "
             "%zu with a changed check start in their initial state",
             path, restored, total, total == 1 ? "" : "s", down, changed);
    statefile_clear(&st);
    return restored;
}

/* One snapshot of every region's health, taken on the main thread (a copy
 * of a few words per region) and written by the writer thread: the event
 * loop never encodes, hashes, writes or fsyncs. The config is referenced so
 * that the names and checks the snapshot points to outlive a reload. */
struct job {
    struct config *cfg;
    char *path;
    int64_t written_ms;
    size_t n;
    struct job_region {
        const struct pool *pool;
        const struct region *region;
        bool up;
        int64_t since_ms;
    } r[];
};

struct statefile_ctl {
    struct health_ctl *h;
    struct event *timer;
    char *path;
    const struct config *cfg; /* the running config (the server's) */
    /* the writer thread and the one job waiting for it (a newer snapshot
     * replaces an unwritten one) */
    pthread_t thread;
    bool have_thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *next;
    bool stop;
    bool failing;  /* the last write failed (and was logged); writer only */
    double cpu_ms; /* the writer's CPU time so far; writer only */
};

static void job_free(struct job *j)
{
    if (!j) return;
    config_unref(j->cfg);
    free(j->path);
    free(j);
}

static void job_write(struct statefile_ctl *s, struct job *j)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct statefile st = {.regions = calloc(j->n ? j->n : 1, sizeof(*st.regions)), .n = j->n};
    st.written_ms = j->written_ms;
    char err[512];
    bool ok = st.regions != NULL;
    if (!ok) snprintf(err, sizeof(err), "out of memory");
    for (size_t i = 0; ok && i < j->n; i++)
        st.regions[i] = (struct statefile_region){
            .pool = j->r[i].pool->name,
            .region = j->r[i].region->name,
            .check_hash = check_cfg_hash(j->r[i].region->check),
            .up = j->r[i].up,
            .since_ms = j->r[i].since_ms,
        };
    bool refused = false;
    if (ok) ok = statefile_write(j->path, &st, &refused, err, sizeof(err));
    free(st.regions); /* the names are the config's */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    struct timespec cpu;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    double cpu_ms = (double)cpu.tv_sec * 1e3 + (double)cpu.tv_nsec / 1e6 - s->cpu_ms;
    s->cpu_ms += cpu_ms;
    if (refused && !s->failing)
        log_error("state file %s %s: nothing written (only a regular file is ever replaced)",
                  j->path, err);
    else if (!ok && !s->failing)
        log_warn("state file %s: cannot write it: %s", j->path, err);
    else if (!ok)
        log_debug("state file %s: cannot write it: %s", j->path, err);
    else if (s->failing)
        log_info("state file %s: written again", j->path);
    else
        log_debug("state file %s: written (%zu regions, %.1f ms, %.1f ms of CPU)", j->path, j->n,
                  ms, cpu_ms);
    s->failing = !ok;
}

static void *writer(void *arg)
{
    struct statefile_ctl *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->next && !s->stop) pthread_cond_wait(&s->cond, &s->lock);
        struct job *j = s->next;
        s->next = NULL;
        if (!j) break; /* stopping, nothing left */
        pthread_mutex_unlock(&s->lock);
        job_write(s, j);
        job_free(j);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Snapshots the health of every region for the writer (main thread). */
static void write_now(struct statefile_ctl *s)
{
    if (!s->path || !s->cfg) return;
    size_t n = health_count(s->h);
    struct job *j = malloc(sizeof(*j) + n * sizeof(j->r[0]));
    char *path = strdup(s->path);
    if (!j || !path) {
        free(j);
        free(path);
        log_warn("state file %s: out of memory; not written", s->path);
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    j->cfg = config_ref((struct config *)s->cfg);
    j->path = path;
    j->written_ms = clock_wall_ms();
    j->n = n;
    for (size_t i = 0; i < n; i++) {
        const struct health *h = health_at(s->h, i);
        j->r[i] = (struct job_region){h->pool, h->region, h->st.up, (int64_t)h->last_change * 1000};
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    log_debug("state file %s: snapshot of %zu regions for the writer (%.2f ms on the loop)",
              s->path, n,
              (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    pthread_mutex_lock(&s->lock);
    struct job *old = s->next;
    s->next = j;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    job_free(old); /* never written: this one is newer */
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    write_now(arg);
}

static void on_health_change(void *arg)
{
    statefile_changed(arg);
}

struct statefile_ctl *statefile_start(struct event_base *base, struct health_ctl *h,
                                      const struct config *cfg)
{
    struct statefile_ctl *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->h = h;
    s->cfg = cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->timer = evtimer_new(base, on_timer, s);
    if (!s->timer || (cfg->state_file && !(s->path = strdup(cfg->state_file))) ||
        pthread_create(&s->thread, NULL, writer, s) != 0) {
        if (s->timer) event_free(s->timer);
        free(s->path);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    s->have_thread = true;
    /* nothing is written until something changes: a restart that changes
     * nothing must not make a saved state look newer than it is */
    health_on_change(h, on_health_change, s);
    return s;
}

void statefile_reload(struct statefile_ctl *s, const struct config *cfg)
{
    if (!s) return;
    s->cfg = cfg;
    bool same = (!s->path && !cfg->state_file) ||
                (s->path && cfg->state_file && strcmp(s->path, cfg->state_file) == 0);
    if (!same) {
        char *p = cfg->state_file ? strdup(cfg->state_file) : NULL;
        if (cfg->state_file && !p) {
            log_warn("state file %s: out of memory; still writing %s", cfg->state_file,
                     s->path ? s->path : "none");
        } else {
            free(s->path);
            s->path = p;
        }
    }
    if (!s->path) evtimer_del(s->timer);
    statefile_changed(s); /* regions may have come or gone */
}

void statefile_changed(struct statefile_ctl *s)
{
    if (!s || !s->path || evtimer_pending(s->timer, NULL)) return;
    struct timeval tv = {1, 0};
    evtimer_add(s->timer, &tv);
}

void statefile_stop(struct statefile_ctl *s, bool write)
{
    if (!s) return;
    health_on_change(s->h, NULL, NULL);
    event_free(s->timer);
    if (write) write_now(s);
    /* the writer finishes what is queued (the last health), then ends */
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->have_thread) pthread_join(s->thread, NULL);
    job_free(s->next);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}
