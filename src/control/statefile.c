#include "autoconf.h"

#include "control/statefile.h"

#include <errno.h>
#include <pthread.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
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

/* ---- decoding (jansson: the project's one JSON reader) ---- */

static bool fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* Why jansson refused the text, in the decoder's words. */
static void parse_error(const json_error_t *je, char *err, size_t errlen)
{
    if (json_error_code(je) == json_error_end_of_input_expected)
        fail(err, errlen, "data after the end");
    else if (json_error_code(je) == json_error_premature_end_of_input)
        fail(err, errlen, "truncated");
    else if (json_error_code(je) == json_error_invalid_utf8)
        fail(err, errlen, "malformed UTF-8 (%s)", je->text);
    else if (json_error_code(je) == json_error_null_character ||
             json_error_code(je) == json_error_null_byte_in_key)
        fail(err, errlen, "NUL in a string");
    else if (json_error_code(je) == json_error_stack_overflow)
        fail(err, errlen, "nested too deeply");
    else if (json_error_code(je) == json_error_duplicate_key)
        fail(err, errlen, "%s: a key given twice", je->text);
    else
        fail(err, errlen, "malformed JSON: %s (line %d, column %d)", je->text, je->line,
             je->column);
}

/* The depth of v (a scalar is 0); stops counting past limit. */
static unsigned depth(json_t *v, unsigned limit)
{
    if (limit == 0) return 1;
    unsigned d = 0;
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    for (size_t i = 0; i < n; i++) {
        unsigned sub = depth(json_array_get(v, i), limit - 1) + 1;
        if (sub > d) d = sub;
    }
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            unsigned sub = depth(json_object_iter_value(it), limit - 1) + 1;
            if (sub > d) d = sub;
        }
    }
    return d;
}

/* A string member as an RFC 3339 time. */
static bool time_member(json_t *o, const char *name, int64_t *ms, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v) || !sched_parse_time(json_string_value(v), ms))
        return fail(err, errlen, "%s is not an RFC 3339 time", name);
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A name member: a non-empty string (jansson has already refused NULs). */
static bool name_member(json_t *o, const char *name, char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v)) return fail(err, errlen, "a region's %s is not a string", name);
    if (!json_string_length(v)) return fail(err, errlen, "empty %s name", name);
    if (!(*out = strdup(json_string_value(v)))) return fail(err, errlen, "out of memory");
    return true;
}

static bool region_of(json_t *o, struct statefile_region *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (!json_is_object(o)) return fail(err, errlen, "a region is not an object");
    static const char *const names[] = {"pool", "region"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(o, names[i]);
        if (json_is_string(v) && !json_string_length(v))
            return fail(err, errlen, "empty %s name", names[i]);
    }
    static const char *const need[] = {"pool", "region", "check_hash", "up", "since"};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!json_object_get(o, need[i]))
            return fail(err, errlen, "a region lacks pool, region, check_hash, up or since");
    json_t *h = json_object_get(o, "check_hash"), *up = json_object_get(o, "up");
    const char *hs = json_is_string(h) ? json_string_value(h) : "";
    bool ok = json_is_string(h) && strlen(hs) == 16;
    for (size_t i = 0; ok && i < 16; i++) {
        int x = hexval(hs[i]);
        ok = x >= 0;
        r->check_hash = r->check_hash << 4 | (uint64_t)(x < 0 ? 0 : x);
    }
    if (!ok) return fail(err, errlen, "check_hash is not 16 hex digits");
    if (!json_is_boolean(up)) return fail(err, errlen, "'up' is not true or false");
    r->up = json_is_true(up);
    if (!time_member(o, "since", &r->since_ms, err, errlen)) return false;
    if (!name_member(o, "pool", &r->pool, err, errlen) ||
        !name_member(o, "region", &r->region, err, errlen)) {
        free(r->pool);
        free(r->region);
        r->pool = r->region = NULL;
        return false;
    }
    return true;
}

static int region_cmp(const void *a, const void *b)
{
    const struct statefile_region *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    return c ? c : strcmp(x->region, y->region);
}

/* The document's members, st filled. */
static bool doc_of(json_t *o, struct statefile *st, char *err, size_t errlen)
{
    /* the format first: a foreign file is called that, whatever else is wrong */
    json_t *f = json_object_get(o, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), STATEFILE_FORMAT) != 0)
        return fail(err, errlen,
                    "not a detourd state file (no \"format\": \"" STATEFILE_FORMAT "\")");
    json_t *v = json_object_get(o, "version");
    if (v && !json_is_number(v)) return fail(err, errlen, "'version' is not a number");
    if (!json_is_integer(v) || json_integer_value(v) != STATEFILE_VERSION) {
        if (json_is_integer(v))
            return fail(err, errlen, "version %lld (this detourd reads version %d)",
                        (long long)json_integer_value(v), STATEFILE_VERSION);
        return fail(err, errlen, "version %s (this detourd reads version %d)",
                    v ? "not an integer" : "missing", STATEFILE_VERSION);
    }
    json_t *rs = json_object_get(o, "regions");
    if (!json_object_get(o, "written_at") || !rs)
        return fail(err, errlen, "written_at or regions missing");
    if (!time_member(o, "written_at", &st->written_ms, err, errlen)) return false;
    if (!json_is_array(rs)) return fail(err, errlen, "'regions' is not a list");
    size_t n = json_array_size(rs);
    if (n && !(st->regions = calloc(n, sizeof(*st->regions))))
        return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!region_of(json_array_get(rs, i), &st->regions[st->n], err, errlen)) return false;
        st->n++;
    }
    if (st->n) { /* qsort() of no regions would be passed NULL */
        qsort(st->regions, st->n, sizeof(*st->regions), region_cmp);
        for (size_t i = 1; i < st->n; i++)
            if (region_cmp(&st->regions[i - 1], &st->regions[i]) == 0)
                return fail(err, errlen, "region %s/%s listed twice", st->regions[i].pool,
                            st->regions[i].region);
    }
    return true;
}

bool statefile_decode(const char *buf, size_t len, struct statefile *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    if (errlen) err[0] = '\0';
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
    if (len > STATEFILE_MAX_BYTES)
        return fail(err, errlen, "larger than %u bytes", STATEFILE_MAX_BYTES);
    if (i == len) return fail(err, errlen, "empty");
    if (buf[i] != '{') return fail(err, errlen, "not a detourd state file (not a JSON object)");
    json_error_t je;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        parse_error(&je, err, errlen);
        return false;
    }
    bool ok = depth(o, STATEFILE_MAX_DEPTH + 1) <= STATEFILE_MAX_DEPTH ||
              fail(err, errlen, "nested too deeply");
    ok = ok && doc_of(o, st, err, errlen);
    json_decref(o);
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
