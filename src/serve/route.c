#include "autoconf.h"

#include "serve/route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

struct route_entry {
    const char *name; /* lowercase; "*.x" stored as ".x" */
    size_t len;
    uint32_t hash;
    const struct pool *pool;
};

struct route_table {
    struct route_entry *slots;
    size_t mask;
    size_t n;
    bool has_wildcards;
};

static uint32_t host_hash(const char *s, size_t n)
{
    uint64_t h = fnv1a64(s, n);
    return (uint32_t)(h ^ h >> 32);
}

size_t route_normalize(const char *host, size_t len, char *out)
{
    size_t end = len;
    if (len && host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        if (!rb) return 0;
        end = (size_t)(rb - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon) end = (size_t)(colon - host);
    }
    if (end && host[end - 1] == '.') end--;
    if (end == 0 || end > ROUTE_MAX_HOST) return 0;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)host[i];
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
    }
    return end;
}

static const struct route_entry *find(const struct route_table *t, const char *s, size_t n)
{
    uint32_t h = host_hash(s, n);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const struct route_entry *e = &t->slots[i];
        if (!e->name) return NULL;
        if (e->hash == h && e->len == n && memcmp(e->name, s, n) == 0) return e;
    }
}

bool route_build(struct config *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->npools; i++) n += c->pools[i].nhosts;
    size_t size = 16;
    while (size < n * 2 + 1) size *= 2;
    struct route_table *t = calloc(1, sizeof(*t));
    if (!t) return false;
    t->slots = calloc(size, sizeof(*t->slots));
    if (!t->slots) {
        free(t);
        return false;
    }
    t->mask = size - 1;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool *p = &c->pools[i];
        for (size_t k = 0; k < p->nhosts; k++) {
            const char *name = p->hosts[k]; /* validated and lowercased */
            if (name[0] == '*') {
                name++;
                t->has_wildcards = true;
            }
            size_t len = strlen(name);
            uint32_t h = host_hash(name, len);
            size_t s = h & t->mask;
            while (t->slots[s].name) s = (s + 1) & t->mask;
            t->slots[s] = (struct route_entry){name, len, h, p};
            t->n++;
        }
    }
    c->routes = t;
    return true;
}

void route_free(struct route_table *t)
{
    if (!t) return;
    free(t->slots);
    free(t);
}

const struct pool *route_lookup(const struct config *c, const char *host, size_t len)
{
    const struct route_table *t = c->routes;
    if (t->n == 0) return c->default_pool; /* one default pool: nothing to match */
    char buf[ROUTE_MAX_HOST];
    size_t n = route_normalize(host, len, buf);
    if (n == 0) return c->default_pool;
    const struct route_entry *e = find(t, buf, n);
    if (e) return e->pool;
    if (t->has_wildcards) {
        /* longest suffix first: "a.b.example.com" tries ".b.example.com" ... */
        for (size_t i = 1; i < n; i++) {
            if (buf[i] != '.') continue;
            e = find(t, buf + i, n - i);
            if (e) return e->pool;
        }
    }
    return c->default_pool;
}
