/* etcd's JSON gateway, pure (etcd_json.h), on jansson. */
#include "autoconf.h"

#include "fleet/etcd_json.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t etcd_b64_len(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

void etcd_b64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

bool etcd_b64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return false;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(s[i]);
        if (v < 0) return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    out[o] = '\0';
    *outlen = o;
    return true;
}

void etcd_prefix_end(const char *prefix, char *out, size_t len)
{
    snprintf(out, len, "%s", prefix);
    size_t n = strlen(out);
    while (n && (unsigned char)out[n - 1] == 0xff) out[--n] = '\0';
    if (n) out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
}

/* ---- requests ---- */

static json_t *b64_str(const void *p, size_t n)
{
    char *e = malloc(etcd_b64_len(n));
    if (!e) return NULL;
    etcd_b64_encode(p, n, e);
    json_t *s = json_string(e);
    free(e);
    return s;
}

static json_t *i64_str(int64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%" PRId64, v);
    return json_string(b);
}

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static json_t *key_range(const char *key, const char *range_end)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "key", b64_str(key, strlen(key)));
    if (range_end) json_object_set_new(o, "range_end", b64_str(range_end, strlen(range_end)));
    return o;
}

char *etcd_req_range(const char *key, const char *range_end, int64_t revision)
{
    json_t *o = key_range(key, range_end);
    if (o && revision > 0) json_object_set_new(o, "revision", i64_str(revision));
    return dump(o);
}

char *etcd_req_watch(const char *key, const char *range_end, int64_t start_revision)
{
    json_t *c = key_range(key, range_end);
    if (c && start_revision > 0) json_object_set_new(c, "start_revision", i64_str(start_revision));
    /* an idle watch still hears from etcd now and then (etcd.c) */
    if (c) json_object_set_new(c, "progress_notify", json_true());
    json_t *o = c ? json_object() : NULL;
    if (!o) {
        json_decref(c);
        return NULL;
    }
    json_object_set_new(o, "create_request", c);
    return dump(o);
}

char *etcd_req_put(const char *key, const char *value, size_t vlen, int64_t lease)
{
    json_t *o = key_range(key, NULL);
    if (o) json_object_set_new(o, "value", b64_str(value, vlen));
    if (o && lease) json_object_set_new(o, "lease", i64_str(lease));
    return dump(o);
}

char *etcd_req_delete(const char *key, const char *range_end)
{
    return dump(key_range(key, range_end));
}

char *etcd_req_lease_grant(int64_t ttl_s)
{
    json_t *o = json_object();
    if (o) json_object_set_new(o, "TTL", i64_str(ttl_s));
    return dump(o);
}

char *etcd_req_lease_id(int64_t id)
{
    json_t *o = json_object();
    if (o) json_object_set_new(o, "ID", i64_str(id));
    return dump(o);
}

char *etcd_req_auth(const char *name, const char *password)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "name", json_string(name));
        json_object_set_new(o, "password", json_string(password));
    }
    return dump(o);
}

/* ---- answers ---- */

/* An int64 field: "12", 12 or absent (0). False if it is something else. */
static bool get_i64(json_t *o, const char *name, int64_t *v)
{
    json_t *f = json_object_get(o, name);
    *v = 0;
    if (!f || json_is_null(f)) return true;
    if (json_is_integer(f)) {
        *v = (int64_t)json_integer_value(f);
        return true;
    }
    if (!json_is_string(f)) return false;
    const char *s = json_string_value(f);
    char *end;
    if (!*s) return true;
    long long x = strtoll(s, &end, 10);
    if (*end) return false;
    *v = (int64_t)x;
    return true;
}

static bool get_bool(json_t *o, const char *name)
{
    return json_is_true(json_object_get(o, name));
}

static bool bad(struct etcd_error *e, const char *what)
{
    if (e) {
        e->code = 0;
        snprintf(e->message, sizeof(e->message), "%s", what);
    }
    return false;
}

/* An error object of either form into e; true if o is one. */
static bool error_of(json_t *o, struct etcd_error *e)
{
    json_t *err = json_object_get(o, "error");
    if (!err) return false;
    json_t *msg = json_object_get(o, "message"), *code = json_object_get(o, "code");
    if (json_is_object(err)) {
        msg = json_object_get(err, "message");
        code = json_object_get(err, "grpc_code");
    } else if (!msg) {
        msg = err;
    }
    if (e) {
        e->code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
        snprintf(e->message, sizeof(e->message), "%s",
                 json_is_string(msg) ? json_string_value(msg) : "error");
        if (e->code == 0 && !e->message[0]) snprintf(e->message, sizeof(e->message), "error");
    }
    return true;
}

/* The answer as an object that is not an error; NULL with e set. */
static json_t *load(const char *buf, size_t len, struct etcd_error *e)
{
    json_error_t je;
    json_t *o = json_loadb(buf, len, 0, &je);
    if (!o) {
        char why[ETCD_ERR_LEN];
        snprintf(why, sizeof(why), "malformed answer: %s", je.text);
        bad(e, why);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        bad(e, "malformed answer: not an object");
        return NULL;
    }
    if (error_of(o, e)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

bool etcd_parse_error(const char *buf, size_t len, struct etcd_error *e)
{
    json_t *o = json_loadb(buf, len, 0, NULL);
    bool is = o && json_is_object(o) && error_of(o, e);
    json_decref(o);
    return is;
}

static int64_t header_revision(json_t *o)
{
    int64_t r = 0;
    get_i64(json_object_get(o, "header"), "revision", &r);
    return r;
}

/* A base64 field into a malloc'd, NUL-terminated buffer. */
static bool b64_field(json_t *o, const char *name, char **out, size_t *n)
{
    json_t *f = json_object_get(o, name);
    const char *s = json_is_string(f) ? json_string_value(f) : "";
    if (f && !json_is_string(f)) return false;
    size_t sl = strlen(s);
    unsigned char *b = malloc(sl * 3 / 4 + 4);
    if (!b) return false;
    if (!etcd_b64_decode(s, sl, b, n)) {
        free(b);
        return false;
    }
    *out = (char *)b;
    return true;
}

static bool kv_of(json_t *o, struct etcd_kv *kv)
{
    memset(kv, 0, sizeof(*kv));
    if (!json_is_object(o)) return false;
    if (!b64_field(o, "key", &kv->key, &kv->keylen) ||
        !b64_field(o, "value", &kv->value, &kv->vlen) ||
        !get_i64(o, "mod_revision", &kv->mod_revision) || !get_i64(o, "lease", &kv->lease)) {
        free(kv->key);
        free(kv->value);
        memset(kv, 0, sizeof(*kv));
        return false;
    }
    return true;
}

void etcd_range_clear(struct etcd_range *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->kvs[i].key);
        free(r->kvs[i].value);
    }
    free(r->kvs);
    memset(r, 0, sizeof(*r));
}

bool etcd_parse_range(const char *buf, size_t len, struct etcd_range *out, struct etcd_error *e)
{
    memset(out, 0, sizeof(*out));
    json_t *o = load(buf, len, e);
    if (!o) return false;
    json_t *kvs = json_object_get(o, "kvs");
    bool ok = true;
    out->revision = header_revision(o);
    out->more = get_bool(o, "more");
    if (kvs && !json_is_array(kvs)) ok = bad(e, "malformed answer: kvs is not a list");
    size_t n = ok && kvs ? json_array_size(kvs) : 0;
    if (n && !(out->kvs = calloc(n, sizeof(*out->kvs)))) ok = bad(e, "out of memory");
    for (size_t i = 0; ok && i < n; i++) {
        if (!kv_of(json_array_get(kvs, i), &out->kvs[i]))
            ok = bad(e, "malformed answer: a key-value pair");
        else
            out->n++;
    }
    if (ok && out->revision <= 0) ok = bad(e, "malformed answer: no revision");
    json_decref(o);
    if (!ok) etcd_range_clear(out);
    return ok;
}

void etcd_watch_clear(struct etcd_watch_msg *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->events[i].kv.key);
        free(m->events[i].kv.value);
    }
    free(m->events);
    memset(m, 0, sizeof(*m));
}

/* ---- the watch stream ---- */

void etcd_stream_init(struct etcd_stream *s, size_t max)
{
    memset(s, 0, sizeof(*s));
    s->max = max;
}

void etcd_stream_clear(struct etcd_stream *s)
{
    s->start = s->len = s->scanned = 0;
}

void etcd_stream_free(struct etcd_stream *s)
{
    free(s->buf);
    etcd_stream_init(s, s->max);
}

bool etcd_stream_add(struct etcd_stream *s, const void *p, size_t n)
{
    if (!n) return true;
    /* what the messages taken left behind goes first */
    if (s->start) {
        memmove(s->buf, s->buf + s->start, s->len - s->start);
        s->len -= s->start;
        s->scanned -= s->start;
        s->start = 0;
    }
    /* the message under way (no '\n' pending: each add follows
     * etcd_stream_next() until NULL) may not grow past max */
    if (s->scanned == s->len && s->len + n > s->max) {
        size_t room = s->max > s->len ? s->max - s->len : 0; /* its bytes still allowed */
        if (!memchr(p, '\n', room < n ? room + 1 : n)) return false;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) return false;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return true;
}

const char *etcd_stream_next(struct etcd_stream *s, size_t *len)
{
    const char *nl =
        s->scanned < s->len ? memchr(s->buf + s->scanned, '\n', s->len - s->scanned) : NULL;
    if (!nl) {
        s->scanned = s->len;
        return NULL;
    }
    const char *msg = s->buf + s->start;
    *len = (size_t)(nl - msg);
    s->start = s->scanned = (size_t)(nl - s->buf) + 1;
    if (s->start == s->len) s->start = s->len = s->scanned = 0; /* the pointer stays valid */
    return msg;
}

const char *etcd_stream_rest(struct etcd_stream *s, size_t *len)
{
    const char *msg = s->buf + s->start;
    *len = s->len - s->start;
    etcd_stream_clear(s);
    return *len ? msg : NULL;
}

bool etcd_parse_watch(const char *buf, size_t len, struct etcd_watch_msg *out, struct etcd_error *e)
{
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *o = json_loadb(buf, len, 0, &je);
    if (!o) {
        char why[ETCD_ERR_LEN];
        snprintf(why, sizeof(why), "malformed watch message: %s", je.text);
        return bad(e, why);
    }
    bool ok = true;
    json_t *r = json_is_object(o) ? json_object_get(o, "result") : NULL;
    if (!json_is_object(o)) {
        ok = bad(e, "malformed watch message");
    } else if (error_of(o, e)) {
        ok = false;
    } else if (!json_is_object(r)) {
        ok = bad(e, "malformed watch message: no result");
    } else {
        out->revision = header_revision(r);
        out->created = get_bool(r, "created");
        out->canceled = get_bool(r, "canceled");
        get_i64(r, "compact_revision", &out->compact_revision);
        get_i64(r, "watch_id", &out->watch_id);
        json_t *why = json_object_get(r, "cancel_reason");
        if (json_is_string(why))
            snprintf(out->cancel_reason, sizeof(out->cancel_reason), "%s", json_string_value(why));
        json_t *evs = json_object_get(r, "events");
        size_t n = json_is_array(evs) ? json_array_size(evs) : 0;
        if (evs && !json_is_array(evs)) ok = bad(e, "malformed watch message: events");
        if (n && !(out->events = calloc(n, sizeof(*out->events)))) ok = bad(e, "out of memory");
        for (size_t k = 0; ok && k < n; k++) {
            json_t *ev = json_array_get(evs, k);
            json_t *type = json_is_object(ev) ? json_object_get(ev, "type") : NULL;
            struct etcd_event *x = &out->events[k];
            if (type && !(json_is_string(type) && (strcmp(json_string_value(type), "PUT") == 0 ||
                                                   strcmp(json_string_value(type), "DELETE") == 0)))
                ok = bad(e, "malformed watch message: event type");
            else if (!json_is_object(ev) || !kv_of(json_object_get(ev, "kv"), &x->kv))
                ok = bad(e, "malformed watch message: event");
            else {
                x->type =
                    type && strcmp(json_string_value(type), "DELETE") == 0 ? ETCD_DELETE : ETCD_PUT;
                out->n++;
            }
        }
    }
    json_decref(o);
    if (!ok) etcd_watch_clear(out);
    return ok;
}

bool etcd_parse_lease(const char *buf, size_t len, int64_t *id, int64_t *ttl, struct etcd_error *e)
{
    json_t *o = load(buf, len, e);
    if (!o) return false;
    bool ok = get_i64(o, "ID", id) && get_i64(o, "TTL", ttl) && *id != 0;
    json_decref(o);
    return ok || bad(e, "malformed answer: no lease ID");
}

bool etcd_parse_keepalive(const char *buf, size_t len, int64_t *ttl, struct etcd_error *e)
{
    json_t *o = load(buf, len, e);
    if (!o) return false;
    json_t *r = json_object_get(o, "result");
    bool ok = false, err = false;
    if (json_is_object(r)) {
        if (error_of(r, e))
            err = true;
        else
            ok = get_i64(r, "TTL", ttl);
    }
    json_decref(o);
    if (!ok && !err) bad(e, "malformed keepalive answer");
    return ok;
}

bool etcd_parse_ok(const char *buf, size_t len, int64_t *revision, struct etcd_error *e)
{
    json_t *o = load(buf, len, e);
    if (!o) return false;
    *revision = header_revision(o);
    json_decref(o);
    return true;
}

bool etcd_parse_auth(const char *buf, size_t len, char **token, struct etcd_error *e)
{
    json_t *o = load(buf, len, e);
    if (!o) return false;
    json_t *t = json_object_get(o, "token");
    *token = json_is_string(t) ? strdup(json_string_value(t)) : NULL;
    json_decref(o);
    return *token || bad(e, "malformed answer: no token");
}
