/* Events: one producer API, a ring for replay, a bounded queue per sink. */
#include "autoconf.h"

#include "events/events.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/json.h"
#include "lib/log.h"

struct events {
    char boot_id[20]; /* 16 hex digits, random per process */
    char *instance;
    uint64_t seq;
    struct event_rec *ring[EVENTS_RING];
    size_t ring_head, ring_len;
    struct event_sink *sinks;
};

static struct events *default_hub;

const char *event_kind_name(enum event_kind k)
{
    switch (k) {
    case EVENT_REGION_STATE: return "region_state";
    case EVENT_OVERRIDE: return "override";
    case EVENT_ALL_DOWN: return "all_down";
    case EVENT_RELOAD: return "reload";
    case EVENT_FLEET: return "fleet";
    case EVENT_CERTIFICATE: return "certificate";
    }
    return "?";
}

struct event_rec *event_ref(struct event_rec *ev)
{
    if (ev) ev->refs++;
    return ev;
}

void event_unref(struct event_rec *ev)
{
    if (!ev || --ev->refs) return;
    free(ev->pool);
    free(ev->region);
    free(ev->from);
    free(ev->to);
    free(ev->reason);
    free(ev->key);
    free(ev->json);
    free(ev);
}

static bool dup_field(char **out, const char *s)
{
    *out = NULL;
    return !s || (*out = strdup(s)) != NULL;
}

/* A copy of reason, cut to EVENT_REASON_MAX bytes (with U+2026 last) at a
 * UTF-8 character boundary. */
static bool cut_reason(char **out, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    if (n <= EVENT_REASON_MAX) return dup_field(out, reason);
    size_t keep = EVENT_REASON_MAX - 3;
    while (keep && ((unsigned char)reason[keep] & 0xc0) == 0x80) keep--;
    if (!(*out = malloc(keep + 4))) return false;
    memcpy(*out, reason, keep);
    memcpy(*out + keep, "\xe2\x80\xa6", 4);
    return true;
}

/* Appends ,"name":"escaped" to buf at *o (sized by the caller). */
static void put_field(char *buf, size_t *o, const char *name, const char *s)
{
    if (!s) return;
    *o += (size_t)sprintf(buf + *o, ",\"%s\":\"", name);
    *o += json_escape(buf + *o, s, strlen(s));
    buf[(*o)++] = '"';
}

static void format_time(int64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)s * 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char day[24];
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", day, frac);
}

struct event_rec *event_make(enum event_kind kind, uint64_t seq, const char *boot_id,
                             int64_t time_ms, const char *instance, const char *pool,
                             const char *region, const char *from, const char *to,
                             const char *reason)
{
    return event_make_key(kind, seq, boot_id, time_ms, instance, pool, region, from, to, reason,
                          NULL);
}

struct event_rec *event_make_key(enum event_kind kind, uint64_t seq, const char *boot_id,
                                 int64_t time_ms, const char *instance, const char *pool,
                                 const char *region, const char *from, const char *to,
                                 const char *reason, const char *key)
{
    struct event_rec *ev = calloc(1, sizeof(*ev));
    if (!ev) return NULL;
    ev->refs = 1;
    ev->seq = seq;
    ev->kind = kind;
    ev->time_ms = time_ms;
    snprintf(ev->id, sizeof(ev->id), "%s-%" PRIu64, boot_id, seq);
    format_time(time_ms, ev->time, sizeof(ev->time));
    if (!dup_field(&ev->pool, pool) || !dup_field(&ev->region, region) ||
        !dup_field(&ev->from, from) || !dup_field(&ev->to, to) ||
        !cut_reason(&ev->reason, reason) || !cut_reason(&ev->key, key)) {
        event_unref(ev);
        return NULL;
    }
    reason = ev->reason;
    key = ev->key;
    const char *const f[] = {pool, region, from, to, reason, instance, key};
    size_t need = 128 + sizeof(ev->id) + sizeof(ev->time);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i]) need += 16 + JSON_ESCAPE_MAX(strlen(f[i]));
    ev->json = malloc(need);
    if (!ev->json) {
        event_unref(ev);
        return NULL;
    }
    size_t o = (size_t)sprintf(ev->json, "{\"id\":\"%s\",\"time\":\"%s\",\"kind\":\"%s\"", ev->id,
                               ev->time, event_kind_name(kind));
    put_field(ev->json, &o, "pool", pool);
    put_field(ev->json, &o, "region", region);
    put_field(ev->json, &o, "from", from);
    put_field(ev->json, &o, "to", to);
    put_field(ev->json, &o, "reason", reason);
    put_field(ev->json, &o, "instance", instance);
    /* the extra field: a fleet event's etcd key, a certificate's name */
    put_field(ev->json, &o, kind == EVENT_CERTIFICATE ? "name" : "key", key);
    ev->json[o++] = '}';
    ev->json[o] = '\0';
    ev->json_len = o;
    return ev;
}

/* ---- bounded queue ---- */

bool evq_init(struct event_queue *q, size_t cap)
{
    memset(q, 0, sizeof(*q));
    q->v = calloc(cap ? cap : 1, sizeof(*q->v));
    q->cap = q->v ? cap : 0;
    return q->v != NULL;
}

size_t evq_clear(struct event_queue *q)
{
    size_t n = q->len;
    while (q->len) event_unref(evq_pop(q));
    return n;
}

void evq_free(struct event_queue *q)
{
    evq_clear(q);
    free(q->v);
    memset(q, 0, sizeof(*q));
}

bool evq_push(struct event_queue *q, struct event_rec *ev)
{
    bool dropped = false;
    if (!q->cap) return true;
    if (q->len == q->cap) {
        event_unref(evq_pop(q));
        dropped = true;
    }
    q->v[(q->head + q->len) % q->cap] = event_ref(ev);
    q->len++;
    return dropped;
}

struct event_rec *evq_peek(const struct event_queue *q)
{
    return q->len ? q->v[q->head] : NULL;
}

struct event_rec *evq_pop(struct event_queue *q)
{
    if (!q->len) return NULL;
    struct event_rec *ev = q->v[q->head];
    q->v[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return ev;
}

/* ---- the hub ---- */

struct events *events_new(const char *instance)
{
    struct events *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    char host[256] = "";
    if (!instance) {
        if (gethostname(host, sizeof(host) - 1) != 0) snprintf(host, sizeof(host), "unknown");
        instance = host;
    }
    e->instance = strdup(instance);
    if (!e->instance) {
        free(e);
        return NULL;
    }
    uint64_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint64_t)clock_wall_ms() * 1000003u ^ (uint64_t)getpid() << 32;
    snprintf(e->boot_id, sizeof(e->boot_id), "%016" PRIx64, r);
    return e;
}

void events_free(struct events *e)
{
    if (!e) return;
    if (default_hub == e) default_hub = NULL;
    for (size_t i = 0; i < e->ring_len; i++) event_unref(e->ring[(e->ring_head + i) % EVENTS_RING]);
    for (struct event_sink *s = e->sinks; s; s = s->next) s->dropped += evq_clear(&s->q);
    free(e->instance);
    free(e);
}

void events_set_default(struct events *e)
{
    default_hub = e;
}

struct events *events_default(void)
{
    return default_hub;
}

void events_sink_add(struct events *e, struct event_sink *s)
{
    for (struct event_sink *t = e->sinks; t; t = t->next)
        if (t == s) return;
    s->next = e->sinks;
    e->sinks = s;
}

void events_sink_remove(struct events *e, struct event_sink *s)
{
    for (struct event_sink **pp = &e->sinks; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            return;
        }
}

const struct event_sink *events_sinks(const struct events *e)
{
    return e ? e->sinks : NULL;
}

static struct event_rec *emit(struct events *e, int64_t time_ms, enum event_kind kind,
                              const char *pool, const char *region, const char *from,
                              const char *to, const char *reason, const char *key)
{
    struct event_rec *ev = event_make_key(kind, e->seq + 1, e->boot_id, time_ms, e->instance, pool,
                                          region, from, to, reason, key);
    if (!ev) return NULL;
    e->seq++;
    log_debug("event %s", ev->json);
    if (e->ring_len == EVENTS_RING) {
        event_unref(e->ring[e->ring_head]);
        e->ring_head = (e->ring_head + 1) % EVENTS_RING;
        e->ring_len--;
    }
    e->ring[(e->ring_head + e->ring_len++) % EVENTS_RING] = ev; /* the ring's reference */
    /* the sink list may not change from wake (documented), so walk it once */
    for (struct event_sink *s = e->sinks; s; s = s->next) {
        if (evq_push(&s->q, ev)) s->dropped++;
        if (s->wake) s->wake(s->arg);
    }
    return ev;
}

struct event_rec *events_emit_at(struct events *e, int64_t time_ms, enum event_kind kind,
                                 const char *pool, const char *region, const char *from,
                                 const char *to, const char *reason)
{
    return emit(e, time_ms, kind, pool, region, from, to, reason, NULL);
}

void event_emit_fleet(const char *to, const char *key, const char *reason)
{
    if (default_hub)
        emit(default_hub, clock_wall_ms(), EVENT_FLEET, NULL, NULL, NULL, to, reason, key);
}

void event_emit_certificate(const char *name, const char *to, const char *reason)
{
    if (default_hub)
        emit(default_hub, clock_wall_ms(), EVENT_CERTIFICATE, NULL, NULL, NULL, to, reason, name);
}

void event_emit(enum event_kind kind, const char *pool, const char *region, const char *from,
                const char *to, const char *reason)
{
    if (default_hub)
        events_emit_at(default_hub, clock_wall_ms(), kind, pool, region, from, to, reason);
}

void events_replay(const struct events *e, uint64_t after,
                   void (*fn)(void *arg, struct event_rec *ev), void *arg)
{
    for (size_t i = 0; i < e->ring_len; i++) {
        struct event_rec *ev = e->ring[(e->ring_head + i) % EVENTS_RING];
        if (ev->seq > after) fn(arg, ev);
    }
}

bool events_parse_id(const struct events *e, const char *id, uint64_t *seq)
{
    size_t n = strlen(e->boot_id);
    if (!id || strncmp(id, e->boot_id, n) != 0 || id[n] != '-') return false;
    const char *p = id + n + 1;
    if (*p < '0' || *p > '9') return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p || v > e->seq) return false;
    *seq = v;
    return true;
}

uint64_t events_last_seq(const struct events *e)
{
    return e->seq;
}

const char *events_instance(const struct events *e)
{
    return e->instance;
}
