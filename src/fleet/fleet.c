/* The fleet (fleet.h). */
#include "autoconf.h"

#include "fleet/fleet.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/health.h"
#include "control/maint.h"
#include "control/schedule.h"
#include "events/events.h"
#include "fleet/etcd.h"
#include "fleet/fleet_config.h"
#include "fleet/fleet_store.h"
#include "lib/clock.h"
#include "lib/hash.h"
#include "lib/html.h"
#include "lib/json.h"
#include "lib/lit.h"
#include "lib/log.h"

/* a key in a log line: at most this much of it (it is whole in /status) */
#define LOG_KEY_MAX 1024
/* this instance's writes that etcd refused are written again after a
 * backoff, and logged once, then at most once a minute */
#define FLEET_RETRY_FIRST_MS 1000
#define FLEET_RETRY_MAX_MS   30000
#define FLEET_REFUSED_LOG_MS 60000

/* A region of the running config, for tallies and lookups by name. */
struct fleet_region {
    struct pool *p;
    struct region *r;
    struct fleet_tally t; /* live verdicts, this instance's included */
};

struct fleet {
    struct event_base *base;
    struct health_ctl *health;
    struct maint *maint;
    struct config *cfg;   /* a reference: the running config */
    struct fleet_cfg *fc; /* cfg->fleet, or NULL: idle */
    struct etcd *etcd;
    struct etcd *old;   /* replaced by a reload, revoking its lease */
    struct event *reap; /* frees old once it is done */
    struct fleet_store store;
    bool have_store;
    /* a reload to another prefix (or none): the store it will have, built
     * beside the one in use until fleet_commit() */
    bool replacing;
    struct fleet_store next;
    bool have_next;
    /* the running config's regions by name */
    struct fleet_region *regions;
    size_t nregions;
    size_t *slot; /* index + 1 */
    size_t mask;
    /* connection */
    bool connected;
    bool ever_failed;  /* a failure was logged since the last connection */
    int64_t since_ms;  /* wall clock: connected or disconnected since */
    uint64_t lease_ok; /* monotonic ms of the last lease keepalive (or the start) */
    bool alone;
    struct event *tick;
    /* this instance's writes */
    uint64_t write_errors; /* refused or unanswered, since the start */
    size_t writes_out;     /* sent, not answered yet: a round */
    bool round_failed;     /* a write of this round failed */
    bool refused;          /* writes fail now (said once) */
    uint64_t refused_logged_ms;
    uint64_t refused_unlogged; /* failures since that line */
    unsigned retry_ms;
    struct event *retry;
    /* the ACME client's keys under PREFIX "acme/" (fleet.h) */
    fleet_acme_fn *acme_fn;
    void *acme_arg;
    bool acme_changed;
};

/* ---- names ---- */

static uint64_t name_hash(const char *pool, const char *region)
{
    uint64_t h = fnv1a64_mix(fnv1a64_str(FNV64_OFFSET, pool), 0xff);
    return fnv1a64_str(h, region);
}

static void index_free(struct fleet *f)
{
    free(f->regions);
    free(f->slot);
    f->regions = NULL;
    f->slot = NULL;
    f->nregions = 0;
}

static bool index_build(struct fleet *f, struct config *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->npools; i++) n += c->pools[i].nregions;
    size_t size = 16;
    while (size < 2 * n) size *= 2;
    struct fleet_region *rs = calloc(n ? n : 1, sizeof(*rs));
    size_t *slot = calloc(size, sizeof(*slot));
    if (!rs || !slot) {
        free(rs);
        free(slot);
        return false;
    }
    index_free(f);
    f->regions = rs;
    f->slot = slot;
    f->mask = size - 1;
    for (size_t i = 0; i < c->npools; i++)
        for (size_t k = 0; k < c->pools[i].nregions; k++) {
            struct fleet_region *x = &rs[f->nregions++];
            x->p = &c->pools[i];
            x->r = &c->pools[i].regions[k];
            size_t s = name_hash(x->p->name, x->r->name) & f->mask;
            while (slot[s]) s = (s + 1) & f->mask;
            slot[s] = f->nregions;
        }
    return true;
}

static struct fleet_region *find(const struct fleet *f, const char *pool, const char *region)
{
    if (!f->slot) return NULL;
    for (size_t s = name_hash(pool, region) & f->mask; f->slot[s]; s = (s + 1) & f->mask) {
        struct fleet_region *x = &f->regions[f->slot[s] - 1];
        if (strcmp(x->p->name, pool) == 0 && strcmp(x->r->name, region) == 0) return x;
    }
    return NULL;
}

static bool exists(void *arg, const char *pool, const char *region)
{
    return find(arg, pool, region) != NULL;
}

/* A key as it is shown: bytes that would not print become \xNN. At most
 * max bytes of it (SIZE_MAX: all, as /status and the page show it); a
 * longer one says how much is left out. Malloc'd; NULL on OOM. */
static char *shown(const char *key, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    char *buf = malloc(4 * n + 48);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c >= 0x7f || c == '\\')
            o += (size_t)snprintf(buf + o, 5, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (n < len)
        snprintf(buf + o, 48, "... (%zu bytes more)", len - n);
    else
        buf[o] = '\0';
    return buf;
}

#define SHOWN(s) ((s) ? (s) : "(a key: out of memory)")

/* ---- this instance's verdicts ---- */

static bool self_key(const struct fleet *f, const struct fleet_region *x, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%shealth/%s/%s/%s", f->fc->prefix, x->p->name, x->r->name,
                     f->fc->instance);
    return n > 0 && (size_t)n < len;
}

static void publish_verdict(struct fleet *f, const struct fleet_region *x)
{
    const struct health *h = x->r->health;
    if (!f->etcd || !h || etcd_state(f->etcd) != ETCD_WATCHING) return;
    char key[512];
    if (!self_key(f, x, key, sizeof(key))) return;
    char why[160] = "";
    if (h->probes && h->last.reason != HR_OK)
        snprintf(why, sizeof(why), "%s%s%s", health_reason_phase(h->last.reason),
                 h->last.detail[0] ? ": " : "", h->last.detail);
    char *v = fleet_health_encode(h->st.up, clock_wall_ms(), why);
    if (v && etcd_put(f->etcd, key, v, strlen(v), true)) f->writes_out++;
    free(v);
}

/* Every region's verdict; and the keys of this instance's regions that
 * are gone from the config are deleted. */
static void publish_all(struct fleet *f)
{
    for (size_t i = 0; i < f->nregions; i++) publish_verdict(f, &f->regions[i]);
    if (!f->etcd || etcd_state(f->etcd) != ETCD_WATCHING) return;
    for (size_t i = 0; i < f->store.n; i++) {
        const struct fleet_entry *e = f->store.v[i];
        if (e->k.kind == FLEET_KEY_HEALTH && strcmp(e->k.instance, f->fc->instance) == 0 &&
            !find(f, e->k.pool, e->k.region) && etcd_delete(f->etcd, e->key))
            f->writes_out++;
    }
}

/* A write failed: said once, then at most once a minute. */
static void write_refused(struct fleet *f, const char *key, const char *why)
{
    uint64_t now = clock_now_ms();
    f->write_errors++;
    f->refused_unlogged++;
    char *sk = shown(key, strlen(key), LOG_KEY_MAX);
    if (!f->refused) {
        log_warn(
            "fleet: etcd refused writing %s: %s; this instance's verdicts in etcd may be stale "
            "until it takes them (written again with a backoff from 1 s to 30 s; the session "
            "and the watch go on)",
            SHOWN(sk), why);
    } else if (now - f->refused_logged_ms >= FLEET_REFUSED_LOG_MS) {
        log_warn("fleet: etcd still refuses this instance's writes: %" PRIu64
                 " refused since the last line, the last %s: %s",
                 f->refused_unlogged, SHOWN(sk), why);
    } else {
        log_debug("fleet: etcd refused writing %s: %s", SHOWN(sk), why);
        free(sk);
        return;
    }
    free(sk);
    f->refused = true;
    f->refused_logged_ms = now;
    f->refused_unlogged = 0;
}

static void on_written(void *arg, const char *key, const char *why)
{
    struct fleet *f = arg;
    if (f->writes_out) f->writes_out--;
    size_t pl = f->fc ? strlen(f->fc->prefix) : 0;
    if (why && f->fc && !strncmp(key, f->fc->prefix, pl) && !strncmp(key + pl, "acme/", 5)) {
        /* the ACME client's: it sees the key missing and writes it again */
        char *sk = shown(key, strlen(key), LOG_KEY_MAX);
        log_warn("fleet: etcd refused writing %s (ACME): %s", SHOWN(sk), why);
        free(sk);
        f->write_errors++;
        why = NULL;
    }
    if (why) {
        f->round_failed = true;
        write_refused(f, key, why);
    }
    if (f->writes_out) return;
    /* a round of writes is over: written again later, or all taken */
    if (f->round_failed) {
        if (!evtimer_pending(f->retry, NULL)) {
            struct timeval tv = {(time_t)(f->retry_ms / 1000),
                                 (suseconds_t)(f->retry_ms % 1000) * 1000};
            evtimer_add(f->retry, &tv);
            f->retry_ms =
                f->retry_ms * 2 > FLEET_RETRY_MAX_MS ? FLEET_RETRY_MAX_MS : f->retry_ms * 2;
        }
    } else if (f->refused) {
        f->refused = false;
        f->retry_ms = FLEET_RETRY_FIRST_MS;
        log_info("fleet: etcd takes this instance's writes again");
    }
    f->round_failed = false;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct fleet *f = arg;
    if (f->fc && f->etcd && etcd_state(f->etcd) == ETCD_WATCHING) publish_all(f);
}

/* ---- consensus ---- */

static bool other_verdict(const struct fleet *f, const struct fleet_entry *e)
{
    return fleet_entry_verdict(e) && strcmp(e->k.instance, f->fc->instance) != 0;
}

static void tally(struct fleet *f)
{
    for (size_t i = 0; i < f->nregions; i++) {
        const struct health *h = f->regions[i].r->health;
        f->regions[i].t = (struct fleet_tally){0, 0};
        if (h) {
            if (h->st.up)
                f->regions[i].t.up++;
            else
                f->regions[i].t.down++;
        }
    }
    if (!f->have_store) return;
    for (size_t i = 0; i < f->store.n; i++) {
        const struct fleet_entry *e = f->store.v[i];
        if (!other_verdict(f, e)) continue;
        struct fleet_region *x = find(f, e->k.pool, e->k.region);
        if (!x) continue;
        if (e->health.up)
            x->t.up++;
        else
            x->t.down++;
    }
}

/* Works out every region's health from the verdicts (checks.consensus). */
static void decide(struct fleet *f)
{
    tally(f);
    for (size_t i = 0; i < f->nregions; i++) {
        struct fleet_region *x = &f->regions[i];
        struct health *h = x->r->health;
        if (!h) continue;
        int mode = f->fc ? x->r->check->consensus : CHECK_CONSENSUS_OFF;
        if (mode == CHECK_CONSENSUS_OFF) {
            health_set_consensus(f->health, h, false, false, "consensus off");
            continue;
        }
        bool down = fleet_consensus_down(mode, h->st.up, x->t, f->alone);
        char why[200];
        if (f->alone)
            snprintf(why, sizeof(why),
                     "cut off from etcd for more than lease_ttl: this instance decides alone");
        else if (mode == CHECK_CONSENSUS_MAJORITY)
            snprintf(why, sizeof(why), "%u of %u instances say down; majority needed", x->t.down,
                     x->t.up + x->t.down);
        else
            snprintf(why, sizeof(why), "%u of %u instances say down; %d needed", x->t.down,
                     x->t.up + x->t.down, mode);
        health_set_consensus(f->health, h, true, down, why);
    }
}

static void on_verdict(void *arg, struct health *h)
{
    struct fleet *f = arg;
    if (!f->fc) return;
    struct fleet_region *x = find(f, h->pool->name, h->region->name);
    if (x) publish_verdict(f, x);
    decide(f);
}

/* ---- applying what etcd says ---- */

static void apply_layer(struct fleet *f)
{
    struct fleet_layer l;
    if (!fleet_store_layer(&f->store, &l) || !maint_set_layer(f->maint, &l.l))
        log_error("fleet: out of memory applying the fleet's drains and windows; what was in "
                  "force stays");
    fleet_layer_free(&l);
}

/* Logs and sends what a change of one key did. */
static void tell(struct fleet *f, const char *key, size_t klen, int ch, bool deleted)
{
    if (ch & FLEET_CH_REJECTED) {
        const struct fleet_entry *e = fleet_store_find(&f->store, key, klen);
        if (!e) return;
        char *sk = shown(key, klen, LOG_KEY_MAX), *full = shown(key, klen, SIZE_MAX);
        log_warn("fleet: key %s (revision %" PRId64 ") rejected: %s; %s", SHOWN(sk), e->rev,
                 e->error, e->good ? "its previous value stays in force" : "it sets nothing");
        event_emit_fleet("rejected", SHOWN(full), e->error);
        free(sk);
        free(full);
    } else if (ch & FLEET_CH_FIXED) {
        char *sk = shown(key, klen, LOG_KEY_MAX);
        log_info("fleet: key %s %s", SHOWN(sk),
                 deleted ? "deleted (no longer rejected)" : "accepted again");
        free(sk);
    }
}

/* One key changed (put, or delete when val is NULL); the bits it made. */
static int change(struct fleet *f, const char *key, size_t klen, const char *val, size_t vlen,
                  int64_t rev, int64_t lease)
{
    size_t pl = strlen(f->fc->prefix);
    if (klen > pl + 5 && memcmp(key + pl, "acme/", 5) == 0) f->acme_changed = true;
    int ch = val ? fleet_store_put(&f->store, key, klen, val, vlen, rev, lease)
                 : fleet_store_delete(&f->store, key, klen, rev);
    if (ch < 0) {
        log_error("fleet: out of memory following etcd; reading everything again later");
        return 0;
    }
    tell(f, key, klen, ch, !val);
    return ch;
}

static void acme_tell(struct fleet *f)
{
    f->acme_changed = false;
    if (f->acme_fn) f->acme_fn(f->acme_arg);
}

static void after(struct fleet *f, int ch)
{
    if (f->acme_changed) acme_tell(f);
    if (ch & FLEET_CH_OPERATOR) apply_layer(f);
    if (ch & FLEET_CH_HEALTH) decide(f);
}

static void on_full_read(void *arg, const struct etcd_range *r)
{
    struct fleet *f = arg;
    int ch = 0;
    fleet_store_mark(&f->store);
    for (size_t i = 0; i < r->n; i++)
        ch |= change(f, r->kvs[i].key, r->kvs[i].keylen, r->kvs[i].value, r->kvs[i].vlen,
                     r->kvs[i].mod_revision, r->kvs[i].lease);
    ch |= fleet_store_sweep(&f->store, r->revision);
    log_info("fleet: read %zu key%s under %s at revision %" PRId64 " (%zu rejected)", r->n,
             r->n == 1 ? "" : "s", f->fc->prefix, r->revision, fleet_store_rejected(&f->store));
    f->acme_changed = true; /* keys may have gone without a delete seen */
    after(f, ch | FLEET_CH_OPERATOR | FLEET_CH_HEALTH);
}

static void on_events(void *arg, const struct etcd_watch_msg *m)
{
    struct fleet *f = arg;
    int ch = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct etcd_kv *kv = &m->events[i].kv;
        bool del = m->events[i].type == ETCD_DELETE;
        ch |= change(f, kv->key, kv->keylen, del ? NULL : kv->value, kv->vlen, kv->mod_revision,
                     kv->lease);
    }
    after(f, ch);
}

static void on_up(void *arg, const char *endpoint)
{
    struct fleet *f = arg;
    if (!f->connected) {
        f->connected = true;
        f->since_ms = clock_wall_ms();
        char why[400];
        snprintf(why, sizeof(why), "watching %s at %s from revision %" PRId64, f->fc->prefix,
                 endpoint, etcd_revision(f->etcd));
        log_info("fleet: connected to etcd: %s", why);
        event_emit_fleet("connected", NULL, why);
    }
    f->ever_failed = false;
    f->writes_out = 0;
    f->round_failed = false;
    event_del(f->retry);
    publish_all(f);
    acme_tell(f); /* writes can go now */
    /* back after being cut off: its lease had expired, so everything was
     * read again before this watch (etcd.c); the verdicts are current */
    if (f->alone) {
        f->alone = false;
        log_info("fleet: in touch with etcd again: the fleet's verdicts count again");
        decide(f);
    }
}

static void on_down(void *arg, const char *why)
{
    struct fleet *f = arg;
    f->writes_out = 0; /* the session's writes went with it */
    f->round_failed = false;
    event_del(f->retry);
    if (f->connected) {
        f->connected = false;
        f->since_ms = clock_wall_ms();
        log_warn("fleet: lost etcd (%s); everything in force stays, reconnecting", why);
        event_emit_fleet("disconnected", NULL, why);
        f->ever_failed = true;
    } else if (!f->ever_failed) {
        log_warn("fleet: cannot reach etcd (%s); retrying", why);
        event_emit_fleet("disconnected", NULL, why);
        f->ever_failed = true;
    } else {
        log_debug("fleet: %s", why);
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Cut off is lease_ttl after the last keepalive: one timer, pushed back by
 * every keepalive (no periodic wakeup). */
static void alone_arm(struct fleet *f)
{
    uint64_t ms = f->fc->lease_ttl_ms + 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(f->tick, &tv);
}

static void on_lease_ok(void *arg)
{
    struct fleet *f = arg;
    f->lease_ok = mono_ms();
    alone_arm(f);
    /* a keepalive of a new session comes before its read and its watch:
     * the verdicts known until then may be stale, so this instance goes on
     * deciding alone until the watch is up (on_up) */
    if (f->alone && f->etcd && etcd_state(f->etcd) == ETCD_WATCHING) {
        f->alone = false;
        log_info("fleet: in touch with etcd again: the fleet's verdicts count again");
        decide(f);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct fleet *f = arg;
    if (!f->fc || f->alone) return;
    if (mono_ms() - f->lease_ok <= f->fc->lease_ttl_ms) {
        alone_arm(f);
        return;
    }
    f->alone = true;
    log_warn("fleet: cut off from etcd for more than lease_ttl (%llu ms): deciding every "
             "region's health alone until it is back",
             (unsigned long long)f->fc->lease_ttl_ms);
    decide(f);
}

/* ---- life ---- */

static void on_stopped(void *arg)
{
    struct fleet *f = arg;
    event_active(f->reap, EV_TIMEOUT, 0); /* not on the client's own stack */
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct fleet *f = arg;
    if (f->old && !etcd_stopping(f->old)) {
        etcd_free(f->old);
        f->old = NULL;
    }
}

static bool client_start(struct fleet *f)
{
    static const struct etcd_hooks hooks = {
        .full_read = on_full_read,
        .events = on_events,
        .up = on_up,
        .down = on_down,
        .lease_ok = on_lease_ok,
        .written = on_written,
        .stopped = on_stopped,
    };
    char err[300];
    f->connected = false;
    f->ever_failed = false;
    f->since_ms = clock_wall_ms();
    f->lease_ok = mono_ms();
    f->alone = false;
    f->writes_out = 0;
    f->round_failed = f->refused = false;
    f->retry_ms = FLEET_RETRY_FIRST_MS;
    f->etcd = etcd_new(f->base, f->fc, &hooks, f, err, sizeof(err));
    alone_arm(f);
    if (!f->etcd) {
        log_error("%s; the fleet is not followed", err);
        return false;
    }
    log_info("fleet: instance %s, etcd %s%s, prefix %s", f->fc->instance, f->fc->endpoints[0].url,
             f->fc->nendpoints > 1 ? " (and more)" : "", f->fc->prefix);
    return true;
}

/* The client goes: its lease is revoked (the verdicts published under it
 * leave etcd at once), it is freed once that is over. */
static void client_stop(struct fleet *f)
{
    if (f->tick) event_del(f->tick);
    if (f->retry) event_del(f->retry);
    f->connected = false;
    if (!f->etcd) return;
    etcd_stop(f->etcd);
    if (etcd_stopping(f->etcd)) {
        etcd_free(f->old); /* a reload before the last one's revoke was over */
        f->old = f->etcd;
    } else {
        etcd_free(f->etcd);
    }
    f->etcd = NULL;
}

static bool store_for(struct fleet *f, const struct fleet_cfg *fc)
{
    if (f->have_store && fc && strcmp(f->store.prefix, fc->prefix) == 0) return true;
    if (f->have_store) fleet_store_free(&f->store);
    f->have_store = false;
    if (!fc) return true;
    f->have_store = fleet_store_init(&f->store, fc->prefix, exists, f);
    return f->have_store;
}

struct fleet *fleet_start(struct event_base *base, struct health_ctl *h, struct maint *m,
                          struct config *cfg)
{
    struct fleet *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    f->base = base;
    f->health = h;
    f->maint = m;
    f->cfg = config_ref(cfg);
    f->fc = cfg->fleet;
    f->tick = evtimer_new(base, on_tick, f);
    f->retry = evtimer_new(base, on_retry, f);
    f->reap = event_new(base, -1, 0, on_reap, f);
    if (!f->tick || !f->retry || !f->reap || !index_build(f, cfg) || !store_for(f, f->fc)) {
        fleet_stop(f);
        return NULL;
    }
    health_on_verdict(h, on_verdict, f);
    if (f->fc) client_start(f);
    decide(f); /* the tallies /status shows: this instance's verdicts so far */
    return f;
}

static void next_free(struct fleet *f)
{
    if (f->have_next) fleet_store_free(&f->next);
    f->have_next = f->replacing = false;
}

void fleet_prepare(struct fleet *f, struct config *cfg)
{
    if (!f) return;
    next_free(f);
    const struct fleet_cfg *fc = cfg->fleet;
    /* the store in use stays as it is until the commit: an abort goes on
     * with it, and the client that follows it, unchanged */
    f->replacing = !(f->have_store && fc && strcmp(f->store.prefix, fc->prefix) == 0);
    if (f->replacing && fc) f->have_next = fleet_store_init(&f->next, fc->prefix, exists, f);
    if (!index_build(f, cfg) || (f->replacing && fc && !f->have_next)) {
        log_error("fleet: out of memory; the fleet's drains and windows do not apply to the new "
                  "configuration");
        return;
    }
    struct fleet_store *st = f->replacing ? &f->next : &f->store;
    if (!fc) return;
    fleet_store_revalidate(st);
    for (size_t i = 0; i < st->n; i++) {
        const struct fleet_entry *e = st->v[i];
        if (e->error && (e->k.kind == FLEET_KEY_DRAIN || e->k.kind == FLEET_KEY_MAINT))
            log_debug("fleet: key %s stays rejected: %s", e->key, e->error);
    }
    struct fleet_layer l;
    if (!fleet_store_layer(st, &l) || !maint_compose(cfg, &l.l))
        log_error("fleet: out of memory applying the fleet's drains and windows to the new "
                  "configuration");
    fleet_layer_free(&l);
}

void fleet_abort(struct fleet *f)
{
    if (!f) return;
    next_free(f);
    if (!index_build(f, f->cfg)) return;
    if (f->fc && f->have_store) fleet_store_revalidate(&f->store);
}

void fleet_commit(struct fleet *f, struct config *cfg)
{
    if (!f) return;
    struct config *old = f->cfg;
    bool same = (!old->fleet && !cfg->fleet) || fleet_cfg_same_client(old->fleet, cfg->fleet);
    if (f->replacing) {
        if (f->have_store) fleet_store_free(&f->store);
        f->store = f->next;
        f->have_store = f->have_next;
        memset(&f->next, 0, sizeof(f->next));
        f->have_next = f->replacing = false;
        if (f->have_store) apply_layer(f); /* the old prefix's drains and windows end */
    }
    f->cfg = config_ref(cfg);
    f->fc = cfg->fleet;
    if (!same) {
        client_stop(f);
        if (f->fc) client_start(f);
    }
    config_unref(old);
    if (f->fc) publish_all(f);
    decide(f);
}

void fleet_stopping(struct fleet *f)
{
    if (!f || !f->etcd) return;
    if (f->tick) event_del(f->tick);
    if (f->retry) event_del(f->retry);
    etcd_stop(f->etcd);
}

void fleet_stop(struct fleet *f)
{
    if (!f) return;
    client_stop(f);
    /* the revokes under way: each ends within etcd.timeout (its own
     * deadline is an event of this loop) */
    while (f->old && etcd_stopping(f->old))
        if (event_base_loop(f->base, EVLOOP_ONCE) < 0) break;
    etcd_free(f->old);
    if (f->tick) event_free(f->tick);
    if (f->retry) event_free(f->retry);
    if (f->reap) event_free(f->reap);
    if (f->have_store) fleet_store_free(&f->store);
    next_free(f);
    index_free(f);
    config_unref(f->cfg);
    free(f);
}

/* ---- what the admin listener shows ---- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The instances with a live verdict, this one included, sorted, each once
 * (the array is the caller's; the names the store's). */
static const char **members(const struct fleet *f, size_t *n)
{
    const char **v = calloc(f->store.n + 1, sizeof(*v));
    *n = 0;
    if (!v) return NULL;
    v[(*n)++] = f->fc->instance;
    for (size_t i = 0; i < f->store.n; i++)
        if (other_verdict(f, f->store.v[i])) v[(*n)++] = f->store.v[i]->k.instance;
    qsort(v, *n, sizeof(*v), name_cmp);
    size_t o = 0;
    for (size_t i = 0; i < *n; i++)
        if (!o || strcmp(v[o - 1], v[i]) != 0) v[o++] = v[i];
    *n = o;
    return v;
}

static void time_json(struct evbuffer *o, int64_t ms)
{
    char t[SCHED_TIME_LEN];
    sched_format_time(ms, t, sizeof(t));
    json_str(o, t);
}

void fleet_status_json(const struct fleet *f, struct evbuffer *o)
{
    if (!f || !f->fc || !f->have_store) {
        evbuffer_add(o, LIT(",\"fleet\":null"));
        return;
    }
    evbuffer_add(o, LIT(",\"fleet\":{\"instance\":"));
    json_str(o, f->fc->instance);
    evbuffer_add_printf(o, ",\"connected\":%s,\"since\":", f->connected ? "true" : "false");
    time_json(o, f->since_ms);
    evbuffer_add(o, LIT(",\"endpoint\":"));
    json_str(o, f->etcd ? etcd_endpoint(f->etcd) : NULL);
    evbuffer_add_printf(o, ",\"state\":\"%s\",\"prefix\":",
                        f->etcd ? etcd_state_name(etcd_state(f->etcd)) : "stopped");
    json_str(o, f->fc->prefix);
    evbuffer_add_printf(o, ",\"revision\":%" PRId64 ",\"keys\":%zu,\"rejected\":[",
                        f->etcd ? etcd_revision(f->etcd) : 0, f->store.n);
    bool first = true;
    for (size_t i = 0; i < f->store.n; i++) {
        const struct fleet_entry *e = f->store.v[i];
        if (!e->error) continue;
        char *sk = shown(e->key, e->keylen, SIZE_MAX);
        evbuffer_add(o, first ? "{\"key\":" : ",{\"key\":", first ? 7 : 8);
        json_str(o, SHOWN(sk));
        free(sk);
        evbuffer_add(o, LIT(",\"error\":"));
        json_str(o, e->error);
        evbuffer_add_printf(o, ",\"revision\":%" PRId64 ",\"in_force\":%s}", e->rev,
                            e->good ? "true" : "false");
        first = false;
    }
    evbuffer_add_printf(o,
                        "],\"rejections\":%" PRIu64 ",\"write_errors\":%" PRIu64 ",\"members\":[",
                        f->store.rejections, f->write_errors);
    size_t n;
    const char **m = members(f, &n);
    for (size_t i = 0; m && i < n; i++) {
        if (i) evbuffer_add(o, LIT(","));
        json_str(o, m[i]);
    }
    free(m);
    evbuffer_add_printf(o, "],\"deciding_alone\":%s}", f->alone ? "true" : "false");
}

static int consensus_of(const struct fleet *f, const struct region *r)
{
    return f && f->fc && f->have_store && r->check ? r->check->consensus : CHECK_CONSENSUS_OFF;
}

void fleet_votes_json(const struct fleet *f, const struct pool *p, const struct region *r,
                      struct evbuffer *o)
{
    if (consensus_of(f, r) == CHECK_CONSENSUS_OFF) return;
    const struct fleet_region *x = find(f, p->name, r->name);
    if (!x) return;
    evbuffer_add_printf(o, ",\"votes\":{\"up\":%u,\"down\":%u,\"instances\":{", x->t.up, x->t.down);
    json_str(o, f->fc->instance);
    evbuffer_add_printf(o, ":\"%s\"", r->health && r->health->st.up ? "up" : "down");
    for (size_t i = 0; i < f->store.n; i++) {
        const struct fleet_entry *e = f->store.v[i];
        if (!other_verdict(f, e) || strcmp(e->k.pool, p->name) || strcmp(e->k.region, r->name))
            continue;
        evbuffer_add(o, LIT(","));
        json_str(o, e->k.instance);
        evbuffer_add_printf(o, ":\"%s\"", e->health.up ? "up" : "down");
    }
    evbuffer_add_printf(o, "},\"consensus\":\"%s\"}",
                        r->health && health_up(r->health) ? "up" : "down");
}

static void label(struct evbuffer *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(o, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(o, LIT("\\n"));
        else
            evbuffer_add(o, s, 1);
    }
}

void fleet_metrics(const struct fleet *f, struct evbuffer *o)
{
    if (!f || !f->fc || !f->have_store) return;
    size_t n;
    const char **m = members(f, &n);
    free(m);
    evbuffer_add_printf(
        o,
        "# HELP detourd_fleet_connected 1 while the fleet's etcd is watched\n"
        "# TYPE detourd_fleet_connected gauge\ndetourd_fleet_connected %d\n"
        "# HELP detourd_fleet_revision The last etcd revision seen\n"
        "# TYPE detourd_fleet_revision gauge\ndetourd_fleet_revision %" PRId64 "\n"
        "# HELP detourd_fleet_rejected_keys Keys under the prefix whose value is rejected now\n"
        "# TYPE detourd_fleet_rejected_keys gauge\ndetourd_fleet_rejected_keys %zu\n"
        "# HELP detourd_fleet_rejections_total Values rejected since the start\n"
        "# TYPE detourd_fleet_rejections_total counter\ndetourd_fleet_rejections_total %" PRIu64
        "\n"
        "# HELP detourd_fleet_write_errors_total This instance's writes to etcd refused or not "
        "answered\n"
        "# TYPE detourd_fleet_write_errors_total counter\ndetourd_fleet_write_errors_total %" PRIu64
        "\n"
        "# HELP detourd_fleet_members Instances with a live verdict, this one included\n"
        "# TYPE detourd_fleet_members gauge\ndetourd_fleet_members %zu\n"
        "# HELP detourd_fleet_deciding_alone 1 while cut off from etcd longer than lease_ttl\n"
        "# TYPE detourd_fleet_deciding_alone gauge\ndetourd_fleet_deciding_alone %d\n",
        f->connected ? 1 : 0, f->etcd ? etcd_revision(f->etcd) : 0, fleet_store_rejected(&f->store),
        f->store.rejections, f->write_errors, m ? n : 1, f->alone ? 1 : 0);
    bool head = false;
    for (size_t i = 0; i < f->nregions; i++) {
        const struct fleet_region *x = &f->regions[i];
        if (consensus_of(f, x->r) == CHECK_CONSENSUS_OFF) continue;
        if (!head)
            evbuffer_add(o, LIT("# HELP detourd_region_votes The live verdicts on a region, "
                                "this instance's included\n"
                                "# TYPE detourd_region_votes gauge\n"));
        head = true;
        for (int up = 1; up >= 0; up--) {
            evbuffer_add(o, LIT("detourd_region_votes{pool=\""));
            label(o, x->p->name);
            evbuffer_add(o, LIT("\",region=\""));
            label(o, x->r->name);
            evbuffer_add_printf(o, "\",verdict=\"%s\"} %u\n", up ? "up" : "down",
                                up ? x->t.up : x->t.down);
        }
    }
}

void fleet_page_html(const struct fleet *f, struct evbuffer *o)
{
    if (!f || !f->fc || !f->have_store) return;
    char t[SCHED_TIME_LEN];
    sched_format_time(f->since_ms, t, sizeof(t));
    evbuffer_add(o, LIT("<section aria-label=\"fleet\" id=\"fleet\"><h2><span>fleet</span></h2>"
                        "<p class=\"fleet\">instance <b>"));
    html_str(o, f->fc->instance);
    evbuffer_add_printf(o, "</b> \xc2\xb7 <span class=\"%s\">%s</span> ",
                        f->connected ? "up" : "down",
                        f->connected ? "connected to etcd" : "etcd unreachable");
    html_str(o, f->etcd ? etcd_endpoint(f->etcd) : "");
    evbuffer_add_printf(o, " since %s \xc2\xb7 revision %" PRId64 " \xc2\xb7 %zu keys under ", t,
                        f->etcd ? etcd_revision(f->etcd) : 0, f->store.n);
    html_str(o, f->fc->prefix);
    size_t n;
    const char **m = members(f, &n);
    evbuffer_add(o, LIT(" \xc2\xb7 members: "));
    for (size_t i = 0; m && i < n; i++) {
        if (i) evbuffer_add(o, LIT(", "));
        html_str(o, m[i]);
    }
    free(m);
    if (f->alone) evbuffer_add(o, LIT(" \xc2\xb7 <b>deciding alone</b>"));
    evbuffer_add(o, LIT("</p>"));
    size_t rej = fleet_store_rejected(&f->store);
    if (rej) {
        evbuffer_add_printf(o, "<p class=\"fleet-rejected\">%zu rejected key%s:</p><ul>", rej,
                            rej == 1 ? "" : "s");
        for (size_t i = 0; i < f->store.n; i++) {
            const struct fleet_entry *e = f->store.v[i];
            if (!e->error) continue;
            char *sk = shown(e->key, e->keylen, SIZE_MAX);
            evbuffer_add(o, LIT("<li><code>"));
            html_str(o, SHOWN(sk));
            free(sk);
            evbuffer_add_printf(o, "</code> (revision %" PRId64 "): ", e->rev);
            html_str(o, e->error);
            if (e->good)
                evbuffer_add(o, LIT(" \xe2\x80\x94 its previous value stays in force</li>"));
            else
                evbuffer_add(o, LIT("</li>"));
        }
        evbuffer_add(o, LIT("</ul>"));
    }
    bool head = false;
    for (size_t i = 0; i < f->nregions; i++) {
        const struct fleet_region *x = &f->regions[i];
        if (consensus_of(f, x->r) == CHECK_CONSENSUS_OFF) continue;
        if (!head)
            evbuffer_add(o,
                         LIT("<table class=\"votes\"><caption>health votes "
                             "(checks.consensus)</caption><tr><th scope=\"col\">region</th>"
                             "<th scope=\"col\">up</th><th scope=\"col\">down</th>"
                             "<th scope=\"col\">verdicts</th><th scope=\"col\">state</th></tr>"));
        head = true;
        evbuffer_add(o, LIT("<tr><td>"));
        html_str(o, x->p->name);
        evbuffer_add(o, LIT("/"));
        html_str(o, x->r->name);
        evbuffer_add_printf(o, "</td><td>%u</td><td>%u</td><td>", x->t.up, x->t.down);
        html_str(o, f->fc->instance);
        evbuffer_add_printf(o, ": %s", x->r->health && x->r->health->st.up ? "up" : "down");
        for (size_t k = 0; k < f->store.n; k++) {
            const struct fleet_entry *e = f->store.v[k];
            if (!other_verdict(f, e) || strcmp(e->k.pool, x->p->name) ||
                strcmp(e->k.region, x->r->name))
                continue;
            evbuffer_add(o, LIT(", "));
            html_str(o, e->k.instance);
            evbuffer_add_printf(o, ": %s", e->health.up ? "up" : "down");
        }
        bool up = x->r->health && health_up(x->r->health);
        evbuffer_add_printf(o, "</td><td class=\"%s\">%s</td></tr>", up ? "up" : "down",
                            up ? "up" : "down");
    }
    if (head) evbuffer_add(o, LIT("</table>"));
    evbuffer_add(o, LIT("</section>"));
}

/* ---- ACME over the fleet ---- */

void fleet_acme_follow(struct fleet *f, fleet_acme_fn *fn, void *arg)
{
    f->acme_fn = fn;
    f->acme_arg = arg;
}

bool fleet_acme_on(const struct fleet *f)
{
    return f && f->fc && f->have_store;
}

bool fleet_acme_connected(const struct fleet *f)
{
    return fleet_acme_on(f) && f->etcd && etcd_state(f->etcd) == ETCD_WATCHING &&
           etcd_lease(f->etcd) != 0;
}

int64_t fleet_acme_lease(const struct fleet *f)
{
    return fleet_acme_connected(f) ? etcd_lease(f->etcd) : 0;
}

const char *fleet_acme_instance(const struct fleet *f)
{
    return f && f->fc ? f->fc->instance : NULL;
}

static bool acme_key(const struct fleet *f, const char *rest, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%sacme/%s", f->fc->prefix, rest);
    return n > 0 && (size_t)n < len;
}

bool fleet_acme_put(struct fleet *f, const char *rest, const char *val, size_t len, bool lease)
{
    char key[1024];
    if (!fleet_acme_connected(f) || !acme_key(f, rest, key, sizeof(key))) return false;
    if (!etcd_put(f->etcd, key, val, len, lease)) return false;
    f->writes_out++;
    return true;
}

bool fleet_acme_delete(struct fleet *f, const char *rest)
{
    char key[1024];
    if (!fleet_acme_connected(f) || !acme_key(f, rest, key, sizeof(key))) return false;
    if (!etcd_delete(f->etcd, key)) return false;
    f->writes_out++;
    return true;
}

void fleet_acme_each(const struct fleet *f, const char *sub, fleet_acme_each_fn *fn, void *arg)
{
    if (!fleet_acme_on(f)) return;
    char want[1024];
    if (!acme_key(f, sub, want, sizeof(want))) return;
    size_t wl = strlen(want), pl = strlen(f->fc->prefix) + 5;
    for (size_t i = 0; i < f->store.n; i++) {
        const struct fleet_entry *e = f->store.v[i];
        if (e->keylen < wl || memcmp(e->key, want, wl) != 0 || memchr(e->key, '\0', e->keylen))
            continue;
        fn(arg, e->key + pl, e->raw, e->rawlen, e->rev);
    }
}
