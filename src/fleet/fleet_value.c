/* The fleet's keys and values (fleet_value.h), on jansson. */
#include "autoconf.h"

#include "fleet/fleet_value.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/health_config.h"
#include "control/schedule.h"

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

bool fleet_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > FLEET_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Splits rest[0..len) at '/' into at most max parts; the count, or max + 1
 * when there are more. */
static size_t split(const char *rest, size_t len, const char **part, size_t *plen, size_t max)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && rest[i] != '/') continue;
        if (n == max) return max + 1;
        part[n] = rest + start;
        plen[n++] = i - start;
        start = i + 1;
    }
    return n;
}

static void copy_name(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

enum fleet_key_kind fleet_key_parse(const char *prefix, const char *key, size_t len,
                                    struct fleet_key *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof(*k));
    size_t pl = strlen(prefix);
    if (errlen) err[0] = '\0';
    if (len < pl || memcmp(key, prefix, pl) != 0) return k->kind = FLEET_KEY_OTHER;
    const char *rest = key + pl;
    size_t rl = len - pl;
    static const struct {
        const char *dir;
        enum fleet_key_kind kind;
        size_t parts;
        const char *form;
    } kinds[] = {
        {"drain/", FLEET_KEY_DRAIN, 2, "drain/POOL/REGION"},
        {"maintenance/", FLEET_KEY_MAINT, 1, "maintenance/NAME"},
        {"health/", FLEET_KEY_HEALTH, 3, "health/POOL/REGION/INSTANCE"},
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t dl = strlen(kinds[i].dir);
        if (rl < dl || memcmp(rest, kinds[i].dir, dl) != 0) continue;
        const char *part[4];
        size_t plen[4];
        size_t n = split(rest + dl, rl - dl, part, plen, 3);
        bool ok = n == kinds[i].parts;
        for (size_t j = 0; ok && j < n; j++) ok = fleet_name_ok(part[j], plen[j]);
        if (!ok) {
            fail(err, errlen, "not %s%s (names of 1 to %d characters of A-Z a-z 0-9 . _ -)", prefix,
                 kinds[i].form, FLEET_NAME_MAX);
            return k->kind = FLEET_KEY_BAD;
        }
        k->kind = kinds[i].kind;
        if (k->kind == FLEET_KEY_MAINT) {
            copy_name(k->name, part[0], plen[0]);
        } else {
            copy_name(k->pool, part[0], plen[0]);
            copy_name(k->region, part[1], plen[1]);
            if (k->kind == FLEET_KEY_HEALTH) copy_name(k->instance, part[2], plen[2]);
        }
        return k->kind;
    }
    return k->kind = FLEET_KEY_OTHER;
}

/* ---- values ---- */

/* The object of buf, or NULL with err. Empty (white space only) is
 * *empty with NULL returned and no error. */
static json_t *load_object(const char *buf, size_t len, bool *empty, char *err, size_t errlen)
{
    *empty = false;
    if (len > FLEET_VALUE_MAX) {
        fail(err, errlen, "value larger than %d bytes", FLEET_VALUE_MAX);
        return NULL;
    }
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
    if (i == len) {
        *empty = true;
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v) {
        fail(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        fail(err, errlen, "not a JSON object");
        return NULL;
    }
    return v;
}

/* Every member of o is one of allowed (NULL-terminated). */
static bool known_fields(json_t *o, const char *const *allowed, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++) ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char shown[72];
            size_t n = strlen(k);
            bool plain = n <= 64;
            for (size_t i = 0; plain && i < n; i++)
                plain = (unsigned char)k[i] >= 0x20 && (unsigned char)k[i] < 0x7f;
            snprintf(shown, sizeof(shown), "%s", plain ? k : "(not shown)");
            char list[128] = "";
            size_t at = 0;
            for (size_t i = 0; allowed[i] && at < sizeof(list); i++)
                at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s", i ? ", " : "",
                                       allowed[i]);
            return fail(err, errlen, "unknown field '%s' (allowed: %s)", shown, list);
        }
    }
    return true;
}

/* A reason: one line of text (see fleet_value.h). */
static bool reason_ok(const char *s, size_t n, char *err, size_t errlen)
{
    if (n > FLEET_REASON_MAX)
        return fail(err, errlen, "reason: longer than %d bytes", FLEET_REASON_MAX);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if ((u[i] < 0x20 && u[i] != '\t') || u[i] == 0x7f)
            return fail(err, errlen, "reason: control character U+%04X", u[i]);
        if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f)
            return fail(err, errlen, "reason: control character U+%04X", u[i + 1]);
        if (u[i] == 0xe2 && i + 2 < n && u[i + 1] == 0x80 && (u[i + 2] == 0xa8 || u[i + 2] == 0xa9))
            return fail(err, errlen, "reason: line separator U+%04X", 0x2000 + (u[i + 2] - 0x80));
    }
    return true;
}

static bool get_reason(json_t *o, char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, "reason");
    *out = NULL;
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return fail(err, errlen, "reason: not a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!reason_ok(s, n, err, errlen)) return false;
    if (n == 0) return true;
    if (!(*out = strdup(s))) return fail(err, errlen, "out of memory");
    return true;
}

static bool get_time(json_t *o, const char *name, bool *has, int64_t *ms, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, name);
    *has = false;
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return fail(err, errlen, "%s: not a string", name);
    if (!sched_parse_time(json_string_value(v), ms))
        return fail(err, errlen, "%s: not an RFC 3339 time (like 2026-11-28T04:00:00Z)", name);
    *has = true;
    return true;
}

static bool get_state(json_t *o, enum region_state *st, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, "state");
    *st = REGION_DRAIN;
    if (!v || json_is_null(v)) return true;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s && strcmp(s, "drain") == 0) return true;
    if (s && strcmp(s, "down") == 0) {
        *st = REGION_DOWN;
        return true;
    }
    return fail(err, errlen, "state: not \"drain\" or \"down\"");
}

void fleet_drain_clear(struct fleet_drain *d)
{
    free(d->reason);
    memset(d, 0, sizeof(*d));
    d->state = REGION_DRAIN;
}

bool fleet_drain_decode(const char *buf, size_t len, struct fleet_drain *out, char *err,
                        size_t errlen)
{
    static const char *const fields[] = {"state", "from", "until", "reason", NULL};
    memset(out, 0, sizeof(*out));
    out->state = REGION_DRAIN;
    if (errlen) err[0] = '\0';
    bool empty;
    json_t *o = load_object(buf, len, &empty, err, errlen);
    if (!o) return empty;
    bool ok = known_fields(o, fields, err, errlen) && get_state(o, &out->state, err, errlen) &&
              get_time(o, "from", &out->has_from, &out->from_ms, err, errlen) &&
              get_time(o, "until", &out->has_until, &out->until_ms, err, errlen) &&
              get_reason(o, &out->reason, err, errlen);
    if (ok && out->has_from && out->has_until && out->until_ms <= out->from_ms)
        ok = fail(err, errlen, "until: must be after from");
    json_decref(o);
    if (!ok) fleet_drain_clear(out);
    return ok;
}

void fleet_window_clear(struct fleet_window *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->pools[i]);
        free(w->regions[i]);
    }
    free(w->pools);
    free(w->regions);
    free(w->reason);
    memset(w, 0, sizeof(*w));
    w->state = REGION_DRAIN;
}

bool fleet_window_decode(const char *buf, size_t len, fleet_exists_fn exists, void *arg,
                         struct fleet_window *out, char *err, size_t errlen)
{
    static const char *const fields[] = {"from", "until", "regions", "state", "reason", NULL};
    memset(out, 0, sizeof(*out));
    out->state = REGION_DRAIN;
    if (errlen) err[0] = '\0';
    bool empty, has_from = false, has_until = false;
    json_t *o = load_object(buf, len, &empty, err, errlen);
    if (!o) return empty ? fail(err, errlen, "from, until and regions are required") : false;
    bool ok = known_fields(o, fields, err, errlen) && get_state(o, &out->state, err, errlen) &&
              get_time(o, "from", &has_from, &out->from_ms, err, errlen) &&
              get_time(o, "until", &has_until, &out->until_ms, err, errlen) &&
              get_reason(o, &out->reason, err, errlen);
    if (ok && (!has_from || !has_until))
        ok = fail(err, errlen, "%s: required", has_from ? "until" : "from");
    if (ok && out->until_ms <= out->from_ms) ok = fail(err, errlen, "until: must be after from");
    json_t *rs = ok ? json_object_get(o, "regions") : NULL;
    if (ok && !rs) ok = fail(err, errlen, "regions: required");
    if (ok && (!json_is_array(rs) || json_array_size(rs) == 0))
        ok = fail(err, errlen, "regions: not a list of at least one \"POOL/REGION\"");
    if (ok && json_array_size(rs) > FLEET_MAX_TARGETS)
        ok = fail(err, errlen, "regions: more than %d", FLEET_MAX_TARGETS);
    size_t n = ok ? json_array_size(rs) : 0;
    if (ok) {
        out->pools = calloc(n, sizeof(*out->pools));
        out->regions = calloc(n, sizeof(*out->regions));
        if (!out->pools || !out->regions) ok = fail(err, errlen, "out of memory");
    }
    for (size_t i = 0; ok && i < n; i++) {
        json_t *t = json_array_get(rs, i);
        const char *s = json_is_string(t) ? json_string_value(t) : NULL;
        size_t sl = s ? json_string_length(t) : 0;
        const char *slash = s ? memchr(s, '/', sl) : NULL;
        if (!slash || !fleet_name_ok(s, (size_t)(slash - s)) ||
            !fleet_name_ok(slash + 1, sl - (size_t)(slash - s) - 1)) {
            ok = fail(err, errlen, "regions: item %zu is not \"POOL/REGION\"", i + 1);
            break;
        }
        out->pools[i] = strndup(s, (size_t)(slash - s));
        out->regions[i] = strdup(slash + 1);
        out->n++;
        if (!out->pools[i] || !out->regions[i]) {
            ok = fail(err, errlen, "out of memory");
            break;
        }
        for (size_t j = 0; j < i && ok; j++)
            if (strcmp(out->pools[j], out->pools[i]) == 0 &&
                strcmp(out->regions[j], out->regions[i]) == 0)
                ok = fail(err, errlen, "regions: %s listed twice", s);
        if (ok && exists && !exists(arg, out->pools[i], out->regions[i]))
            ok = fail(err, errlen, "regions: no region %s in this instance's config", s);
    }
    json_decref(o);
    if (!ok) fleet_window_clear(out);
    return ok;
}

void fleet_health_clear(struct fleet_health *h)
{
    free(h->reason);
    memset(h, 0, sizeof(*h));
}

bool fleet_health_decode(const char *buf, size_t len, struct fleet_health *out, char *err,
                         size_t errlen)
{
    static const char *const fields[] = {"up", "at", "reason", NULL};
    memset(out, 0, sizeof(*out));
    if (errlen) err[0] = '\0';
    bool empty;
    json_t *o = load_object(buf, len, &empty, err, errlen);
    if (!o) return empty ? fail(err, errlen, "up: required") : false;
    json_t *up = json_object_get(o, "up");
    bool ok = known_fields(o, fields, err, errlen) &&
              (json_is_boolean(up) || fail(err, errlen, "up: required, true or false")) &&
              get_time(o, "at", &out->has_at, &out->at_ms, err, errlen) &&
              get_reason(o, &out->reason, err, errlen);
    if (ok) out->up = json_is_true(up);
    json_decref(o);
    if (!ok) fleet_health_clear(out);
    return ok;
}

char *fleet_health_encode(bool up, int64_t at_ms, const char *reason)
{
    char at[SCHED_TIME_LEN];
    sched_format_time(at_ms, at, sizeof(at));
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "up", json_boolean(up));
    json_object_set_new(o, "at", json_string(at));
    /* a reason of ill-formed UTF-8 (a probe's detail) is left out, never sent broken */
    if (reason && reason[0]) {
        json_t *r = json_string(reason);
        if (r) json_object_set_new(o, "reason", r);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

bool fleet_consensus_down(int mode, bool own_up, struct fleet_tally t, bool alone)
{
    if (mode == CHECK_CONSENSUS_OFF || alone) return !own_up;
    if (mode == CHECK_CONSENSUS_MAJORITY) return 2 * (uint64_t)t.down > (uint64_t)t.up + t.down;
    return t.down >= (unsigned)mode;
}
