/* Loading the configuration: see config.h. This file is the walk: the
 * top-level keys as a table of sections, each loaded by its subsystem (a
 * `*_config.c` next to its code, through config_walk.h); `include:` and
 * the lists of pools and maintenance windows that span the main file and
 * the included ones; positions and the error list; the core keys
 * (workers, log, access_log, limits); and what the request path
 * precomputes once everything is loaded. */
#include "autoconf.h"

#include "control/config.h"

#include <errno.h>
#include <fnmatch.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "admin/admin_config.h"
#include "control/acme_config.h"
#include "control/config_walk.h"
#include "control/health_config.h"
#include "control/schedule.h"
#include "events/events_config.h"
#include "fleet/fleet_config.h"
#include "lib/file.h"
#include "lib/hash.h"
#include "lib/lit.h"
#include "lib/netaddr.h"
#include "lib/yaml_tree.h"
#include "serve/counters.h"
#include "serve/http_parse.h"
#include "serve/redirect.h"
#include "serve/route.h"
#include "serve/select.h"
#include "serve/tls.h"

/* A file named by `include:`, parsed. */
struct cfg_inc_file {
    char *name;
    struct yt_doc doc; /* root NULL: empty, or not parsed (errors reported) */
};

static struct cfg_seen_slot *seen_find(struct cfg_seen_slot *tab, size_t mask, const char *name)
{
    size_t i = (size_t)fnv1a64_str(FNV64_OFFSET, name) & mask;
    while (tab[i].name && strcmp(tab[i].name, name) != 0) i = (i + 1) & mask;
    return &tab[i];
}

const struct cfg_seen_slot *cfg_seen_put(struct cfg_seen *s, const char *name, unsigned line,
                                         const char *file)
{
    if (2 * (s->n + 1) > s->mask) {
        size_t size = s->mask ? 2 * (s->mask + 1) : 64;
        struct cfg_seen_slot *t = calloc(size, sizeof(*t));
        if (!t) return NULL;
        for (size_t i = 0; s->slot && i <= s->mask; i++)
            if (s->slot[i].name) *seen_find(t, size - 1, s->slot[i].name) = s->slot[i];
        free(s->slot);
        s->slot = t;
        s->mask = size - 1;
    }
    struct cfg_seen_slot *e = seen_find(s->slot, s->mask, name);
    if (e->name) return e;
    *e = (struct cfg_seen_slot){name, line, file};
    s->n++;
    return NULL;
}

unsigned cfg_seen_add(struct cfg_seen *s, const char *name, unsigned line)
{
    const struct cfg_seen_slot *e = cfg_seen_put(s, name, line, NULL);
    return e ? e->line : 0;
}

void cfg_set_file(struct cfg_ctx *x, const char *file, size_t no)
{
    x->cur = file;
    x->curno = no;
    diag_set_file(x->d, no ? file : NULL);
}

const char *cfg_line_of(const struct cfg_ctx *x, const char *file, unsigned line, char *buf,
                        size_t len)
{
    if (!file || !x->cur || strcmp(file, x->cur) == 0)
        snprintf(buf, len, "line %u", line);
    else
        snprintf(buf, len, "line %u of %s", line, file);
    return buf;
}

const char *region_state_name(enum region_state s)
{
    static const char *names[] = {"auto", "up", "down", "drain"};
    return names[s];
}

/* ---- scalar parsing helpers (pure) ---- */

bool config_parse_duration(const char *s, uint64_t *ms)
{
    size_t n;
    uint64_t v;
    if (!netaddr_parse_u64(s, &n, &v)) return false;
    const char *u = s + n;
    uint64_t mul;
    if (strcmp(u, "ms") == 0)
        mul = 1;
    else if (strcmp(u, "s") == 0)
        mul = 1000;
    else if (strcmp(u, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(u, "h") == 0)
        mul = CFG_MS_PER_HOUR;
    else
        return false;
    if (v > UINT64_MAX / mul) return false;
    *ms = v * mul;
    return true;
}

bool config_parse_size(const char *s, uint64_t *bytes)
{
    size_t n;
    uint64_t v;
    if (!netaddr_parse_u64(s, &n, &v)) return false;
    const char *u = s + n;
    uint64_t mul;
    if (*u == '\0')
        mul = 1;
    else if (strcasecmp(u, "k") == 0)
        mul = 1024;
    else if (strcasecmp(u, "m") == 0)
        mul = 1024 * 1024;
    else if (strcasecmp(u, "g") == 0)
        mul = 1024 * 1024 * 1024;
    else
        return false;
    if (v > UINT64_MAX / mul) return false;
    *bytes = v * mul;
    return true;
}

/* ---- typed getters over yaml nodes (config_walk.h says what each does) ---- */

bool cfg_want(struct cfg_ctx *x, const struct yt_node *n, enum yt_kind k, const char *what)
{
    if (n->kind == k) return true;
    CFG_ERR(x, n, "%s: expected %s, got %s", what, yt_kind_name(k), yt_kind_name(n->kind));
    return false;
}

bool cfg_scalar(struct cfg_ctx *x, const struct yt_node *n, const char *what)
{
    if (!cfg_want(x, n, YT_SCALAR, what)) return false;
    if (memchr(n->str, '\0', n->len)) {
        CFG_ERR(x, n, "%s: NUL byte in string", what);
        return false;
    }
    return true;
}

bool cfg_is_null(const struct yt_node *n)
{
    return n->kind == YT_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0);
}

const char *cfg_shown(const struct yt_node *n, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n->len && o + 5 < size; i++) {
        unsigned char c = (unsigned char)n->str[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (o + 5 >= size && size > 4) memcpy(buf + size - 4, LIT("...")), o = size - 1;
    buf[o] = '\0';
    return buf;
}

bool cfg_key_is(const struct yt_node *k, const char *lit)
{
    size_t n = strlen(lit);
    return k->kind == YT_SCALAR && k->len == n && memcmp(k->str, lit, n) == 0;
}

void cfg_check_keys(struct cfg_ctx *x, const struct yt_node *map, const char *what,
                    const char *const *allowed)
{
    for (size_t i = 0; i < map->len; i++) {
        const struct yt_node *k = map->u.pairs[i].key;
        if (k->kind != YT_SCALAR || k->dup) continue; /* reported by the tree */
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = cfg_key_is(k, *a);
        if (ok) continue;
        char list[512] = "", name[96];
        for (const char *const *a = allowed; *a; a++) {
            if (a != allowed) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            strncat(list, *a, sizeof(list) - strlen(list) - 1);
        }
        CFG_ERR(x, k, "unknown key '%s' in %s (expected one of: %s)",
                cfg_shown(k, name, sizeof(name)), what, list);
    }
}

bool cfg_get_str(struct cfg_ctx *x, const struct yt_node *n, const char *what, char **out)
{
    if (!cfg_scalar(x, n, what)) return false;
    char *s = strdup(n->str);
    if (!s) return false;
    free(*out);
    *out = s;
    return true;
}

bool cfg_get_uint(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                  uint64_t max, uint64_t *out)
{
    if (!cfg_scalar(x, n, what)) return false;
    size_t used;
    uint64_t v;
    if (!n->plain || !netaddr_parse_u64(n->str, &used, &v) || n->str[used] != '\0') {
        CFG_ERR(x, n, "%s: '%s' is not a whole number", what, n->str);
        return false;
    }
    if (v < min || v > max) {
        CFG_ERR(x, n, "%s: %s is out of range (%llu..%llu)", what, n->str, (unsigned long long)min,
                (unsigned long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_unsigned(struct cfg_ctx *x, const struct yt_node *n, const char *what, unsigned min,
                      unsigned max, unsigned *out)
{
    uint64_t v;
    if (!cfg_get_uint(x, n, what, min, max, &v)) return false;
    *out = (unsigned)v;
    return true;
}

static void fmt_ms(uint64_t ms, char *buf, size_t len)
{
    if (ms % CFG_MS_PER_HOUR == 0 && ms)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / CFG_MS_PER_HOUR));
    else if (ms % 60000 == 0 && ms)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0 && ms)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

bool cfg_get_duration(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    if (!cfg_scalar(x, n, what)) return false;
    uint64_t v;
    if (!config_parse_duration(n->str, &v)) {
        CFG_ERR(x, n, "%s: '%s' is not a duration (a number with a unit: ms, s, m, h; e.g. 250ms)",
                what, n->str);
        return false;
    }
    if (v < min || v > max) {
        char a[32], b[32];
        fmt_ms(min, a, sizeof(a));
        fmt_ms(max, b, sizeof(b));
        CFG_ERR(x, n, "%s: %s is out of range (%s..%s)", what, n->str, a, b);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_size(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                  uint64_t max, size_t *out)
{
    if (!cfg_scalar(x, n, what)) return false;
    uint64_t v;
    if (!config_parse_size(n->str, &v)) {
        CFG_ERR(x, n, "%s: '%s' is not a size (bytes, or a number with k, m or g)", what, n->str);
        return false;
    }
    if (v < min || v > max) {
        CFG_ERR(x, n, "%s: %s is out of range (%llu..%llu bytes)", what, n->str,
                (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (size_t)v;
    return true;
}

bool cfg_get_enum(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                  const char *const *names, int *out)
{
    if (!cfg_scalar(x, n, what)) return false;
    char list[256] = "";
    for (int i = 0; names[i]; i++) {
        if (strcmp(n->str, names[i]) == 0) {
            *out = i;
            return true;
        }
        if (i) strncat(list, " | ", sizeof(list) - strlen(list) - 1);
        strncat(list, names[i], sizeof(list) - strlen(list) - 1);
    }
    CFG_ERR(x, n, "%s: '%s' is not one of: %s", what, n->str, list);
    return false;
}

bool cfg_get_bool(struct cfg_ctx *x, const struct yt_node *n, const char *what, bool *out)
{
    if (n->kind == YT_SCALAR && n->plain && (cfg_key_is(n, "true") || cfg_key_is(n, "false"))) {
        *out = cfg_key_is(n, "true");
        return true;
    }
    CFG_ERR(x, n, "%s: expected true or false", what);
    return false;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CFG_MAX_NAME_LEN) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

bool cfg_get_name(struct cfg_ctx *x, const struct yt_node *n, const char *what, char **out)
{
    if (!cfg_get_str(x, n, what, out)) return false;
    if (!valid_name(*out)) {
        CFG_ERR(x, n, "%s: '%s' must be 1..%d characters of A-Z a-z 0-9 . _ -", what, n->str,
                CFG_MAX_NAME_LEN);
        return false;
    }
    return true;
}

bool cfg_get_time(struct cfg_ctx *x, const struct yt_node *n, const char *what, int64_t *ms)
{
    if (!cfg_scalar(x, n, what)) return false;
    char buf[96];
    if (!sched_parse_time(n->str, ms)) {
        CFG_ERR(x, n, "%s: '%s' is not an RFC 3339 time (like 2026-11-28T04:00:00Z)", what,
                cfg_shown(n, buf, sizeof(buf)));
        return false;
    }
    return true;
}

void cfg_get_reason(struct cfg_ctx *x, const struct yt_node *n, char **out)
{
    if (!cfg_get_str(x, n, "reason", out)) return;
    if (!cfg_text_ok(*out)) {
        CFG_ERR(x, n, "reason: control characters are not allowed");
        free(*out);
        *out = NULL;
    }
}

bool cfg_text_ok(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f) return false;
    return true;
}

void cfg_load_header_map(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                         const char *(*refused)(const char *), struct header **out, size_t *nout)
{
    if (!cfg_want(x, n, YT_MAP, what)) return;
    *out = calloc(n->len ? n->len : 1, sizeof(**out));
    if (!*out) return;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *k = n->u.pairs[i].key, *v = n->u.pairs[i].value;
        if (k->kind != YT_SCALAR) continue;
        bool ok = k->len > 0;
        for (size_t j = 0; j < k->len; j++) ok = ok && http_tchar[(unsigned char)k->str[j]];
        if (!ok) {
            CFG_ERR(x, k, "%s: '%s' is not a valid header name", what, k->str);
            continue;
        }
        const char *why = refused ? refused(k->str) : NULL;
        if (why) {
            CFG_ERR(x, k, "%s: '%s' %s", what, k->str, why);
            continue;
        }
        struct header h = {0};
        if (!cfg_get_str(x, v, what, &h.value)) continue;
        if (!cfg_text_ok(h.value)) {
            CFG_ERR(x, v, "%s: value of '%s' contains a control character", what, k->str);
            free(h.value);
            continue;
        }
        h.name = strdup(k->str);
        (*out)[(*nout)++] = h;
    }
}

bool cfg_file_readable(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                       const char *path)
{
    struct file_error fe;
    int fd = file_open(path, &fe);
    if (fd >= 0) {
        close(fd);
        return true;
    }
    char why[128];
    if (fe.kind == FILE_EOPEN)
        CFG_ERR(x, n, "%s: cannot read '%s': %s", what, path, strerror(fe.err));
    else
        CFG_ERR(x, n, "%s: '%s' %s", what, path, file_why(&fe, why, sizeof(why)));
    return false;
}

void cfg_free_headers(struct header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

/* ---- sections ---- */

static void load_limits(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {
        "max_connections", "header_timeout",   "idle_timeout",     "max_header_bytes",
        "max_uri_bytes",   "max_body_discard", "shutdown_timeout", NULL};
    if (!n) return;
    if (!cfg_want(x, n, YT_MAP, "limits")) return;
    cfg_check_keys(x, n, "limits", keys);
    struct limits *l = &x->c->limits;
    const struct yt_node *v;
    if ((v = yt_get(n, "max_connections")))
        cfg_get_unsigned(x, v, "limits.max_connections", 1, 1000000, &l->max_connections);
    if ((v = yt_get(n, "header_timeout")))
        cfg_get_duration(x, v, "limits.header_timeout", 100, CFG_MS_PER_HOUR,
                         &l->header_timeout_ms);
    if ((v = yt_get(n, "idle_timeout")))
        cfg_get_duration(x, v, "limits.idle_timeout", 100, CFG_MS_PER_HOUR, &l->idle_timeout_ms);
    if ((v = yt_get(n, "max_header_bytes")))
        cfg_get_size(x, v, "limits.max_header_bytes", 512, 1 << 20, &l->max_header_bytes);
    if ((v = yt_get(n, "max_uri_bytes")))
        cfg_get_size(x, v, "limits.max_uri_bytes", 16, 1 << 20, &l->max_uri_bytes);
    if ((v = yt_get(n, "max_body_discard")))
        cfg_get_size(x, v, "limits.max_body_discard", 0, 1u << 30, &l->max_body_discard);
    if ((v = yt_get(n, "shutdown_timeout")))
        cfg_get_duration(x, v, "limits.shutdown_timeout", 0, CFG_MS_PER_HOUR,
                         &l->shutdown_timeout_ms);
}

static void load_log(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"level", "format", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    if (!n) return;
    if (!cfg_want(x, n, YT_MAP, "log")) return;
    cfg_check_keys(x, n, "log", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "level")) && cfg_get_enum(x, v, "log.level", levels, &e))
        x->c->log_level = (enum log_level)e;
    if ((v = yt_get(n, "format")) && cfg_get_enum(x, v, "log.format", formats, &e))
        x->c->log_json = e == 1;
}

static void load_access_log(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"path", "format", NULL};
    static const char *const formats[] = {"combined", "json", NULL};
    if (!n) return;
    if (cfg_is_null(n)) return;
    if (!cfg_want(x, n, YT_MAP, "access_log")) return;
    cfg_check_keys(x, n, "access_log", keys);
    const struct yt_node *v;
    int e;
    if ((v = yt_get(n, "path")) && cfg_get_str(x, v, "access_log.path", &x->c->access_log)) {
        if (x->c->access_log[0] != '/') {
            CFG_ERR(x, v, "access_log.path: '%s' must be an absolute path", x->c->access_log);
        }
    } else if (!v) {
        CFG_ERR(x, n, "access_log: 'path' is required");
    }
    if ((v = yt_get(n, "format")) && cfg_get_enum(x, v, "access_log.format", formats, &e))
        x->c->access_log_json = e == 1;
}

/* The pattern as glob(3) takes it: a relative one is relative to the
 * main file's directory, whose name is escaped (it may hold '*', '?'...). */
static char *include_pattern(const char *main, const char *pat)
{
    const char *slash = strrchr(main, '/');
    size_t dlen = pat[0] == '/' || !slash ? 0 : (size_t)(slash - main) + 1;
    char *out = malloc(2 * dlen + strlen(pat) + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < dlen; i++) {
        if (strchr("*?[]\\", main[i])) *o++ = '\\';
        *o++ = main[i];
    }
    strcpy(o, pat);
    return out;
}

/* One file matched by pattern node n: read and parsed into x->inc (its
 * YAML errors are its own; not being read is an error at the pattern). */
static void include_file(struct cfg_ctx *x, const struct yt_node *n, const char *name)
{
    size_t len = 0;
    struct file_error fe;
    char *buf = file_read(name, CONFIG_MAX_FILE_BYTES, &len, &fe);
    if (!buf) {
        char why[128];
        CFG_ERR(x, n, "include: %s%s%s", name, file_sep(&fe), file_why(&fe, why, sizeof(why)));
        return;
    }
    struct cfg_inc_file *f = &x->inc[x->ninc];
    if ((f->name = strdup(name))) {
        x->ninc++;
        cfg_set_file(x, f->name, x->ninc);
        if (!yt_parse(&f->doc, buf, len, x->d)) f->doc.root = NULL;
        cfg_set_file(x, x->c->path, 0);
    } else {
        CFG_ERR(x, n, "out of memory");
    }
    free(buf);
}

/* The directory glob(3) could not read: a missing one is not an error
 * (its pattern matches nothing), an unreadable one is. */
static _Thread_local int glob_errno;
static _Thread_local char glob_epath[PATH_MAX];

static int glob_error(const char *path, int err)
{
    if (err == ENOENT || err == ENOTDIR) return 0;
    glob_errno = err;
    snprintf(glob_epath, sizeof(glob_epath), "%s", path);
    return 1;
}

/* `include:`: every file its patterns match, in order (each pattern's in
 * name order), parsed into x->inc. */
/* config_replace_include(): the included file checked as another one. */
static char *replace_live, *replace_new;
static bool replace_seen; /* an include pattern named replace_live */

/* path, with its directory resolved (the file itself need not exist). */
static char *canonical(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX], *out;
    if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        char *d = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        bool ok = d && realpath(d, dir);
        free(d);
        if (!ok) return strdup(path);
    }
    const char *base = slash ? slash + 1 : path;
    size_t n = strlen(dir) + strlen(base) + 2;
    if ((out = malloc(n))) snprintf(out, n, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", base);
    return out;
}

bool config_replace_seen(void)
{
    return replace_seen;
}

bool config_replace_include(const char *live, const char *candidate)
{
    replace_seen = false;
    free(replace_live);
    free(replace_new);
    replace_live = live ? canonical(live) : NULL;
    replace_new = candidate ? strdup(candidate) : NULL;
    return !live || (replace_live && replace_new);
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files one include pattern names, in name order: what glob(3) finds,
 * with the replaced file in it when the pattern matches its name even if
 * it does not exist yet. Returns NULL when nothing is to be read. */
static char **include_list(const glob_t *g, const char *pat, size_t *n)
{
    char **v = calloc(g->gl_pathc + 2, sizeof(*v));
    if (!v) return NULL;
    bool seen = false;
    *n = 0;
    for (size_t k = 0; k < g->gl_pathc; k++) {
        char *c = replace_live ? canonical(g->gl_pathv[k]) : NULL;
        bool is_live = c && strcmp(c, replace_live) == 0;
        free(c);
        seen = seen || is_live;
        v[(*n)++] = is_live ? replace_live : g->gl_pathv[k];
    }
    if (replace_live && !seen) {
        /* the pattern's directory resolved like the name's (a relative -c,
         * "./", a symlinked directory) */
        char *cp = canonical(pat);
        if (cp && fnmatch(cp, replace_live, FNM_PATHNAME | FNM_PERIOD) == 0) {
            v[(*n)++] = replace_live;
            qsort(v, *n, sizeof(*v), path_cmp);
            seen = true;
        }
        free(cp);
    }
    replace_seen = replace_seen || seen;
    return v;
}

static void load_include(struct cfg_ctx *x, const struct yt_node *n)
{
    if (cfg_is_null(n)) return;
    if (!cfg_want(x, n, YT_SEQ, "include")) return;
    x->inc = calloc(CONFIG_MAX_INCLUDES, sizeof(*x->inc));
    if (!x->inc) {
        CFG_ERR(x, n, "out of memory");
        return;
    }
    /* The limit is over every pattern together, reported at the one that
     * goes over it; after that no file is read, but the later patterns are
     * still checked. */
    bool over = false;
    for (size_t i = 0; i < n->len; i++) {
        const struct yt_node *v = n->u.items[i];
        if (!cfg_scalar(x, v, "include")) continue;
        if (!v->len) {
            CFG_ERR(x, v, "include: empty pattern");
            continue;
        }
        if (over) continue;
        char *pat = include_pattern(x->c->path, v->str);
        if (!pat) {
            CFG_ERR(x, v, "out of memory");
            continue;
        }
        glob_t g;
        glob_errno = 0;
        int rc = glob(pat, 0, glob_error, &g);
        if (rc != 0 && rc != GLOB_NOMATCH) {
            if (rc == GLOB_ABORTED)
                CFG_ERR(x, v, "include: %s: cannot read the directory: %s", glob_epath,
                        strerror(glob_errno));
            else
                CFG_ERR(x, v, "include: '%s': out of memory", v->str);
            globfree(&g);
            free(pat);
            continue;
        }
        if (rc == GLOB_NOMATCH) g.gl_pathc = 0;
        size_t nfiles = 0;
        char **files = include_list(&g, pat, &nfiles);
        free(pat);
        if (!files) CFG_ERR(x, v, "include: '%s': out of memory", v->str);
        for (size_t k = 0; files && k < nfiles; k++) {
            if (x->ninc == CONFIG_MAX_INCLUDES) {
                CFG_ERR(x, v, "include: more than %d files", CONFIG_MAX_INCLUDES);
                over = true;
                break;
            }
            include_file(x, v, files[k] == replace_live ? replace_new : files[k]);
        }
        free(files);
        globfree(&g);
    }
}

/* An included file's top level: only `pools:` and `maintenance:`. Its
 * lists, NULL where absent or not a list (reported). */
static void included_lists(struct cfg_ctx *x, const struct yt_node *root,
                           const struct yt_node **pools, const struct yt_node **windows)
{
    *pools = *windows = NULL;
    if (!root || cfg_is_null(root) || !cfg_want(x, root, YT_MAP, "included file")) return;
    char name[96];
    for (size_t i = 0; i < root->len; i++) {
        const struct yt_node *k = root->u.pairs[i].key;
        if (k->kind != YT_SCALAR || k->dup || cfg_key_is(k, "pools") ||
            cfg_key_is(k, "maintenance"))
            continue;
        CFG_ERR(x, k,
                "'%s' is not allowed in an included file (it holds only 'pools' and 'maintenance')",
                cfg_shown(k, name, sizeof(name)));
    }
    const struct yt_node *v;
    if ((v = yt_get(root, "pools")) && !cfg_is_null(v) && cfg_want(x, v, YT_SEQ, "pools"))
        *pools = v;
    if ((v = yt_get(root, "maintenance")) && !cfg_is_null(v) &&
        cfg_want(x, v, YT_SEQ, "maintenance"))
        *windows = v;
}

/* Pools, then maintenance windows (which name pools' regions) of the main
 * file and every included one, in order, as one list of each. */
static void load_lists(struct cfg_ctx *x, const struct yt_node *root)
{
    struct config *c = x->c;
    size_t nfiles = x->ninc + 1, npools = 0, nwindows = 0;
    const struct yt_node **lists = calloc(2 * nfiles, sizeof(*lists));
    if (!lists) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    const struct yt_node *v, *inc = yt_get(root, "include");
    if ((v = yt_get(root, "pools")) && cfg_want(x, v, YT_SEQ, "pools")) lists[0] = v;
    if ((v = yt_get(root, "maintenance")) && !cfg_is_null(v) &&
        cfg_want(x, v, YT_SEQ, "maintenance"))
        lists[1] = v;
    for (size_t i = 0; i < x->ninc; i++) {
        cfg_set_file(x, x->inc[i].name, i + 1);
        included_lists(x, x->inc[i].doc.root, &lists[2 * i + 2], &lists[2 * i + 3]);
    }
    cfg_set_file(x, c->path, 0);
    for (size_t i = 0; i < nfiles; i++) {
        if (lists[2 * i]) npools += lists[2 * i]->len;
        if (lists[2 * i + 1]) nwindows += lists[2 * i + 1]->len;
    }
    if (!yt_get(root, "pools") && !inc)
        CFG_ERR(x, root, "'pools' is required");
    else if (!npools && lists[0])
        CFG_ERR(x, lists[0], "pools: at least one pool is required");
    else if (!npools && !yt_get(root, "pools"))
        CFG_ERR(x, inc, "'pools' is required: neither this file nor an included one has a pool");
    c->pools = npools ? calloc(npools, sizeof(*c->pools)) : NULL;
    x->pool_file = calloc(npools ? npools : 1, sizeof(*x->pool_file));
    x->windows = calloc(nwindows ? nwindows : 1, sizeof(*x->windows));
    if ((npools && !c->pools) || !x->pool_file || !x->windows) {
        diag_add(x->d, 0, 0, "out of memory");
    } else {
        for (size_t i = 0; i < nfiles; i++) {
            cfg_set_file(x, i ? x->inc[i - 1].name : c->path, i);
            if (lists[2 * i]) pools_config_load(x, lists[2 * i]);
        }
        cfg_set_file(x, c->path, 0);
        pools_config_check_hosts(x);
        for (size_t i = 0; i < nfiles; i++) {
            cfg_set_file(x, i ? x->inc[i - 1].name : c->path, i);
            if (lists[2 * i + 1]) maint_config_load(x, lists[2 * i + 1]);
        }
        cfg_set_file(x, c->path, 0);
    }
    free(lists);
}

static void load_workers(struct cfg_ctx *x, const struct yt_node *v)
{
    if (!v) return;
    if (cfg_key_is(v, "auto"))
        x->c->workers = 0;
    else
        cfg_get_unsigned(x, v, "workers", 1, 256, &x->c->workers);
}

/* `include:` first: the lists of pools and maintenance windows span the
 * main file and every included one. */
static void load_files(struct cfg_ctx *x, const struct yt_node *v)
{
    (void)v;
    const struct yt_node *inc = yt_get(x->root, "include");
    if (inc) load_include(x, inc);
    load_lists(x, x->root);
}

/* The top-level keys, in the order "unknown key" lists them, each with
 * its section's loader. Loaders run in this order, once per load whether
 * their key is there or not (v NULL: absent; a section may set defaults
 * then). The order matters where a section checks against another:
 * `listen` first (region urls and admin.listen are checked against the
 * listeners), `checks` before the pools (a region's check starts from
 * it). `maintenance` and `include` are loaded with `pools`. */
static const struct cfg_section {
    const char *key;
    void (*load)(struct cfg_ctx *x, const struct yt_node *v);
} sections[] = {
    {"listen", listen_config_load},                   /* listen_config.c, tls_config.c */
    {"workers", load_workers},                        /* here */
    {"admin", admin_config_load},                     /* admin/admin_config.c */
    {"log", load_log},                                /* here */
    {"access_log", load_access_log},                  /* here */
    {"limits", load_limits},                          /* here */
    {"checks", health_config_load_checks},            /* health_config.c */
    {"pools", load_files},                            /* here: pools_config.c per file */
    {"maintenance", NULL},                            /* with pools: maint_config.c */
    {"include", NULL},                                /* with pools: here */
    {"state_file", statefile_config_load},            /* statefile_config.c */
    {"state_max_age", statefile_config_load_max_age}, /* statefile_config.c */
    {"events", events_config_load},                   /* events/events_config.c */
    {"fleet", fleet_config_load},                     /* fleet/fleet_config.c */
    {"acme", acme_config_load},                       /* acme_config.c: after listen, state_file */
};

#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

static void load_root(struct cfg_ctx *x, const struct yt_node *root)
{
    if (!root || cfg_is_null(root)) {
        diag_add(x->d, 1, 1, "the configuration is empty ('listen' and 'pools' are required)");
        return;
    }
    if (!cfg_want(x, root, YT_MAP, "configuration")) return;
    const char *keys[NSECTIONS + 1];
    for (size_t i = 0; i < NSECTIONS; i++) keys[i] = sections[i].key;
    keys[NSECTIONS] = NULL;
    cfg_check_keys(x, root, "the top level", keys);
    x->root = root;
    for (size_t i = 0; i < NSECTIONS; i++)
        if (sections[i].load) sections[i].load(x, yt_get(root, sections[i].key));
}

/* The distinct header names used by `hash_key: header:NAME`, which the
 * request parser captures. */
static int capture_add(struct cfg_ctx *x, const char *name, const struct pool *p)
{
    struct config *c = x->c;
    for (size_t k = 0; k < c->ncapture; k++)
        if (strcasecmp(c->capture[k], name) == 0) return (int)k;
    if (c->ncapture == CONFIG_MAX_CAPTURE) {
        if (p) cfg_set_file(x, x->pool_file[p - c->pools], x->pool_file[p - c->pools] != c->path);
        diag_add(x->d, p ? p->line : 0, p ? p->col : 0,
                 "too many different hash_key headers: at most %d request headers are kept, "
                 "%s",
                 CONFIG_MAX_CAPTURE,
                 c->access_log ? "2 of them for the access log" : "over all pools");
        cfg_set_file(x, c->path, 0);
        return -1;
    }
    if (!c->capture) c->capture = calloc(CONFIG_MAX_CAPTURE, sizeof(char *));
    char *lc = strdup(name);
    if (!c->capture || !lc) {
        free(lc);
        return -1;
    }
    for (char *q = lc; *q; q++)
        if (*q >= 'A' && *q <= 'Z') *q |= 0x20;
    c->capture[c->ncapture] = lc;
    return (int)c->ncapture++;
}

/* The request headers the parser keeps: the access log's, then the header
 * names of `hash_key: header:NAME`. */
static void collect_capture(struct cfg_ctx *x)
{
    struct config *c = x->c;
    c->capture_ua = c->capture_referer = -1;
    if (c->access_log) {
        c->capture_ua = capture_add(x, "user-agent", NULL);
        c->capture_referer = capture_add(x, "referer", NULL);
    }
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        p->hash_header = -1;
        if (p->balance != BALANCE_HASH || !p->hash_key || strncasecmp(p->hash_key, LIT("header:")))
            continue;
        p->hash_header = capture_add(x, p->hash_key + 7, p);
    }
}

static void set_defaults(struct config *c)
{
    c->workers = 1;
    c->log_level = LOG_INFO;
    c->limits = (struct limits){
        .max_connections = 10000,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_header_bytes = 8192,
        .max_uri_bytes = 8192,
        .max_body_discard = 1 << 20,
        .shutdown_timeout_ms = 10000,
    };
}

struct config *config_parse(const char *name, const char *buf, size_t len, struct diag *d)
{
    struct config *c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(name))) {
        free(c);
        diag_add(d, 0, 0, "out of memory");
        return NULL;
    }
    set_defaults(c);
    atomic_init(&c->refs, 1);
    c->release = config_free;
    c->loaded_at = time(NULL);
    size_t before = d->n + d->dropped;
    struct yt_doc doc;
    if (!yt_parse(&doc, buf, len, d)) {
        config_free(c);
        return NULL;
    }
    struct cfg_ctx x = {.d = d, .c = c};
    cfg_set_file(&x, c->path, 0);
    load_root(&x, doc.root);
    free(x.hosts);
    free(x.pool_names.slot);
    free(x.window_names.slot);
    if (d->n + d->dropped == before && !maint_config_build(&x) && d->n + d->dropped == before)
        diag_add(d, 0, 0, "out of memory");
    maint_config_free_windows(x.windows, x.nwindows); /* when not taken */
    yt_free(&doc);
    for (size_t i = 0; i < x.ninc; i++) yt_free(&x.inc[i].doc);
    collect_capture(&x); /* names the pools' files */
    for (size_t i = 0; i < x.ninc; i++) free(x.inc[i].name);
    free(x.inc);
    free(x.pool_file);
    counters_layout(c);
    if (d->n + d->dropped == before &&
        !(redirect_prepare(c, d) && route_build(c) && select_init(c)) &&
        d->n + d->dropped == before)
        diag_add(d, 0, 0, "out of memory");
    if (d->n + d->dropped != before) {
        config_free(c);
        return NULL;
    }
    return c;
}

struct config *config_load(const char *path, struct diag *d)
{
    size_t len;
    struct file_error fe;
    char *buf = file_read(path, CONFIG_MAX_FILE_BYTES, &len, &fe);
    if (!buf) {
        char why[128];
        if (fe.kind == FILE_ETOOBIG)
            diag_add(d, 0, 0, "file is larger than %u bytes", CONFIG_MAX_FILE_BYTES);
        else
            diag_add(d, 0, 0, "%s", file_why(&fe, why, sizeof(why)));
        return NULL;
    }
    struct config *c = config_parse(path, buf, len, d);
    free(buf);
    return c;
}

void config_free(void *cp)
{
    struct config *c = cp;
    if (!c) return;
    select_release(c);
    redirect_release(c);
    maint_config_free(c);
    route_free(c->routes);
    for (size_t i = 0; i < c->npools; i++) {
        struct pool *p = &c->pools[i];
        free(p->name);
        for (size_t k = 0; k < p->nhosts; k++) free(p->hosts[k]);
        free(p->hosts);
        free(p->hash_key);
        free(p->cache_control);
        for (size_t k = 0; k < p->nheaders; k++) {
            free(p->headers[k].name);
            free(p->headers[k].value);
        }
        free(p->headers);
        free(p->all_down_url);
        for (size_t k = 0; k < p->nregions; k++) {
            free(p->regions[k].name);
            free(p->regions[k].url);
            free(p->regions[k].reason);
            check_cfg_free(p->regions[k].check);
        }
        free(p->regions);
    }
    free(c->pools);
    check_cfg_free(c->checks); /* after the regions that borrow from it */
    for (size_t i = 0; i < c->ncapture; i++) free(c->capture[i]);
    free(c->capture);
    free(c->access_log);
    free(c->state_file);
    events_cfg_free(c->events);
    admin_cfg_free(c->admin);
    fleet_cfg_free(c->fleet);
    acme_cfg_free(c->acme);
    free((void *)c->counts);
    for (size_t i = 0; c->listen_tls && i < c->nlisten; i++) tls_srv_unref(c->listen_tls[i]);
    free(c->listen_tls);
    free(c->listen);
    free(c->path);
    free(c);
}
