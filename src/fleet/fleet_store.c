/* The fleet's keys (fleet_store.h). */
#include "autoconf.h"

#include "fleet/fleet_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = FNV64_OFFSET;
    for (size_t i = 0; i < n; i++) h = fnv1a64_mix(h, (unsigned char)k[i]);
    return h;
}

bool fleet_store_init(struct fleet_store *s, const char *prefix, fleet_exists_fn exists, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->prefix = strdup(prefix);
    s->exists = exists;
    s->arg = arg;
    s->mask = 63;
    s->slot = calloc(s->mask + 1, sizeof(*s->slot));
    if (!s->prefix || !s->slot) {
        fleet_store_free(s);
        return false;
    }
    return true;
}

static void entry_value_clear(struct fleet_entry *e)
{
    fleet_drain_clear(&e->drain);
    fleet_window_clear(&e->window);
    fleet_health_clear(&e->health);
    e->good = false;
}

static void entry_free(struct fleet_entry *e)
{
    if (!e) return;
    entry_value_clear(e);
    free(e->key);
    free(e->raw);
    free(e->error);
    free(e);
}

void fleet_store_free(struct fleet_store *s)
{
    for (size_t i = 0; i < s->n; i++) entry_free(s->v[i]);
    free(s->v);
    free(s->slot);
    free(s->prefix);
    memset(s, 0, sizeof(*s));
}

static size_t *slot_of(const struct fleet_store *s, const char *key, size_t klen)
{
    size_t i = (size_t)key_hash(key, klen) & s->mask;
    for (;; i = (i + 1) & s->mask) {
        size_t x = s->slot[i];
        if (!x) return &s->slot[i];
        const struct fleet_entry *e = s->v[x - 1];
        if (e->keylen == klen && memcmp(e->key, key, klen) == 0) return &s->slot[i];
    }
}

static bool rehash(struct fleet_store *s, size_t size)
{
    size_t *t = calloc(size, sizeof(*t));
    if (!t) return false;
    free(s->slot);
    s->slot = t;
    s->mask = size - 1;
    for (size_t i = 0; i < s->n; i++) *slot_of(s, s->v[i]->key, s->v[i]->keylen) = i + 1;
    return true;
}

struct fleet_entry *fleet_store_find(const struct fleet_store *s, const char *key, size_t klen)
{
    size_t x = s->slot ? *slot_of(s, key, klen) : 0;
    return x ? s->v[x - 1] : NULL;
}

static struct fleet_entry *entry_add(struct fleet_store *s, const char *key, size_t klen)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        struct fleet_entry **v = realloc(s->v, cap * sizeof(*v));
        if (!v) return NULL;
        s->v = v;
        s->cap = cap;
    }
    if (2 * (s->n + 1) > s->mask + 1 && !rehash(s, 2 * (s->mask + 1))) return NULL;
    struct fleet_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = malloc(klen + 1))) {
        free(e);
        return NULL;
    }
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    e->keylen = klen;
    fleet_drain_clear(&e->drain);
    fleet_window_clear(&e->window);
    s->v[s->n++] = e;
    *slot_of(s, key, klen) = s->n;
    return e;
}

/* O(1): the slot is emptied by shifting back the entries probed past it
 * (no tombstones), and the last entry of v takes e's place. */
static void entry_remove(struct fleet_store *s, struct fleet_entry *e)
{
    size_t *sl = slot_of(s, e->key, e->keylen);
    if (!*sl) return;
    size_t i = *sl - 1, hole = (size_t)(sl - s->slot);
    s->slot[hole] = 0;
    for (size_t j = (hole + 1) & s->mask; s->slot[j]; j = (j + 1) & s->mask) {
        const struct fleet_entry *x = s->v[s->slot[j] - 1];
        size_t home = (size_t)key_hash(x->key, x->keylen) & s->mask;
        /* x stays where it is if its home lies in (hole, j], cyclically */
        bool stays = hole < j ? home > hole && home <= j : home > hole || home <= j;
        if (stays) continue;
        s->slot[hole] = s->slot[j];
        s->slot[j] = 0;
        hole = j;
    }
    size_t last = --s->n;
    if (i != last) {
        struct fleet_entry *m = s->v[last];
        s->v[i] = m;
        *slot_of(s, m->key, m->keylen) = i + 1;
    }
    entry_free(e);
}

/* What the entry's operator meaning is, for change detection. */
static bool operator_kind(const struct fleet_entry *e)
{
    return e->k.kind == FLEET_KEY_DRAIN || e->k.kind == FLEET_KEY_MAINT;
}

/* Decodes raw for e into a fresh entry value; false with err. */
static bool decode(const struct fleet_store *s, struct fleet_entry *e, const char *raw, size_t n,
                   struct fleet_entry *into, char *err, size_t errlen)
{
    switch (e->k.kind) {
    case FLEET_KEY_DRAIN:
        if (s->exists && !s->exists(s->arg, e->k.pool, e->k.region)) {
            snprintf(err, errlen, "no region %s/%s in this instance's config", e->k.pool,
                     e->k.region);
            return false;
        }
        return fleet_drain_decode(raw, n, &into->drain, err, errlen);
    case FLEET_KEY_MAINT:
        return fleet_window_decode(raw, n, s->exists, s->arg, &into->window, err, errlen);
    case FLEET_KEY_HEALTH: return fleet_health_decode(raw, n, &into->health, err, errlen);
    default: return true;
    }
}

/* Applies e's newest value (e->raw): in force if good, else rejected. */
static int evaluate(struct fleet_store *s, struct fleet_entry *e)
{
    char err[FLEET_ERR_LEN] = "";
    struct fleet_entry nv = {0};
    fleet_drain_clear(&nv.drain);
    fleet_window_clear(&nv.window);
    bool was_rejected = e->error != NULL;
    int ch = 0;
    if (e->k.kind == FLEET_KEY_BAD || !decode(s, e, e->raw, e->rawlen, &nv, err, sizeof(err))) {
        if (e->k.kind == FLEET_KEY_BAD) {
            char kerr[FLEET_ERR_LEN - 8];
            struct fleet_key k;
            fleet_key_parse(s->prefix, e->key, e->keylen, &k, kerr, sizeof(kerr));
            snprintf(err, sizeof(err), "key %s", kerr);
        }
        free(e->error);
        e->error = strdup(err[0] ? err : "invalid");
        s->rejections++;
        return FLEET_CH_REJECTED;
    }
    free(e->error);
    e->error = NULL;
    if (was_rejected) ch |= FLEET_CH_FIXED;
    entry_value_clear(e);
    e->drain = nv.drain;
    e->window = nv.window;
    e->health = nv.health;
    e->good = e->k.kind != FLEET_KEY_OTHER;
    e->good_rev = e->rev;
    if (operator_kind(e)) ch |= FLEET_CH_OPERATOR;
    if (e->k.kind == FLEET_KEY_HEALTH) ch |= FLEET_CH_HEALTH;
    return ch;
}

int fleet_store_put(struct fleet_store *s, const char *key, size_t klen, const char *val,
                    size_t vlen, int64_t rev, int64_t lease)
{
    if (rev > s->revision) s->revision = rev;
    struct fleet_entry *e = fleet_store_find(s, key, klen);
    if (e) {
        e->seen = true;
        if (e->rawlen == vlen && memcmp(e->raw, val, vlen) == 0) {
            e->rev = rev; /* the same value again (a full read): nothing to tell */
            if (e->good && e->good_rev < rev && !e->error) e->good_rev = rev;
            bool counted = fleet_entry_verdict(e);
            e->lease = lease;
            return counted != fleet_entry_verdict(e) ? FLEET_CH_HEALTH : 0;
        }
    } else {
        if (!(e = entry_add(s, key, klen))) return -1;
        char err[FLEET_ERR_LEN];
        fleet_key_parse(s->prefix, key, klen, &e->k, err, sizeof(err));
        e->seen = true;
    }
    char *raw = malloc(vlen + 1);
    if (!raw) return -1;
    memcpy(raw, val, vlen);
    raw[vlen] = '\0';
    free(e->raw);
    e->raw = raw;
    e->rawlen = vlen;
    e->rev = rev;
    e->lease = lease;
    return evaluate(s, e);
}

int fleet_store_delete(struct fleet_store *s, const char *key, size_t klen, int64_t rev)
{
    if (rev > s->revision) s->revision = rev;
    struct fleet_entry *e = fleet_store_find(s, key, klen);
    if (!e) return 0;
    int ch = e->error ? FLEET_CH_FIXED : 0;
    if (e->good && operator_kind(e)) ch |= FLEET_CH_OPERATOR;
    if (e->good && e->k.kind == FLEET_KEY_HEALTH) ch |= FLEET_CH_HEALTH;
    entry_remove(s, e);
    return ch;
}

void fleet_store_mark(struct fleet_store *s)
{
    for (size_t i = 0; i < s->n; i++) s->v[i]->seen = false;
}

int fleet_store_sweep(struct fleet_store *s, int64_t rev)
{
    int ch = 0;
    for (size_t i = s->n; i-- > 0;) {
        if (i >= s->n || s->v[i]->seen) continue;
        struct fleet_entry *e = s->v[i];
        ch |= fleet_store_delete(s, e->key, e->keylen, rev);
    }
    if (rev > s->revision) s->revision = rev;
    return ch;
}

int fleet_store_revalidate(struct fleet_store *s)
{
    int ch = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct fleet_entry *e = s->v[i];
        if (e->k.kind == FLEET_KEY_OTHER || e->k.kind == FLEET_KEY_BAD) continue;
        bool had_error = e->error != NULL;
        char *old_error = had_error ? strdup(e->error) : NULL;
        int c = evaluate(s, e);
        if (c & FLEET_CH_REJECTED) {
            /* the same rejection as before is not a new one */
            if (had_error && old_error && strcmp(old_error, e->error) == 0) {
                s->rejections--;
                c &= ~FLEET_CH_REJECTED;
            }
            /* a good value whose region is gone means nothing any more */
            if (e->good && e->k.kind == FLEET_KEY_DRAIN && s->exists &&
                !s->exists(s->arg, e->k.pool, e->k.region)) {
                entry_value_clear(e);
                c |= FLEET_CH_OPERATOR;
            }
        }
        free(old_error);
        ch |= c;
    }
    return ch | FLEET_CH_OPERATOR | FLEET_CH_HEALTH;
}

bool fleet_entry_verdict(const struct fleet_entry *e)
{
    return e->good && e->k.kind == FLEET_KEY_HEALTH && e->lease != 0;
}

size_t fleet_store_rejected(const struct fleet_store *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) n += s->v[i]->error != NULL;
    return n;
}

void fleet_layer_free(struct fleet_layer *l)
{
    for (size_t i = 0; l->names && i < l->l.nwindows; i++) free(l->names[i]);
    free(l->names);
    free(l->drains);
    free(l->windows);
    memset(l, 0, sizeof(*l));
}

bool fleet_store_layer(const struct fleet_store *s, struct fleet_layer *out)
{
    memset(out, 0, sizeof(*out));
    size_t nd = 0, nw = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct fleet_entry *e = s->v[i];
        nd += e->good && e->k.kind == FLEET_KEY_DRAIN;
        nw += e->good && e->k.kind == FLEET_KEY_MAINT;
    }
    out->drains = calloc(nd ? nd : 1, sizeof(*out->drains));
    out->windows = calloc(nw ? nw : 1, sizeof(*out->windows));
    out->names = calloc(nw ? nw : 1, sizeof(*out->names));
    if (!out->drains || !out->windows || !out->names) {
        fleet_layer_free(out);
        return false;
    }
    out->l.drains = out->drains;
    out->l.windows = out->windows;
    for (size_t i = 0; i < s->n; i++) {
        const struct fleet_entry *e = s->v[i];
        if (!e->good) continue;
        if (e->k.kind == FLEET_KEY_DRAIN) {
            out->drains[out->l.ndrains++] = (struct maint_fleet_drain){
                .key = e->key,
                .pool = e->k.pool,
                .region = e->k.region,
                .state = e->drain.state,
                .has_from = e->drain.has_from,
                .has_until = e->drain.has_until,
                .from_ms = e->drain.from_ms,
                .until_ms = e->drain.until_ms,
                .reason = e->drain.reason,
            };
        } else if (e->k.kind == FLEET_KEY_MAINT) {
            size_t k = out->l.nwindows;
            size_t len = strlen(e->k.name) + 7;
            if (!(out->names[k] = malloc(len))) {
                fleet_layer_free(out);
                return false;
            }
            snprintf(out->names[k], len, "fleet:%s", e->k.name);
            out->windows[k] = (struct maint_fleet_window){
                .name = out->names[k],
                .from_ms = e->window.from_ms,
                .until_ms = e->window.until_ms,
                .state = e->window.state,
                .reason = e->window.reason,
                .pools = (const char *const *)e->window.pools,
                .regions = (const char *const *)e->window.regions,
                .nregions = e->window.n,
            };
            out->l.nwindows++;
        }
    }
    return true;
}
