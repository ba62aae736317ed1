/* FNV-1a, 64 bit: the one string hash of the daemon (host routes, hash
 * balancing keys, metric and health tables, config loading). Not keyed: for
 * tables whose keys come from the config, and for balancing, where it must be
 * stable across restarts and versions. */
#ifndef DETOURD_HASH_H
#define DETOURD_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV64_OFFSET UINT64_C(14695981039346656037)
#define FNV64_PRIME  UINT64_C(1099511628211)

/* One step: folds v (a byte, or a separator outside the byte range) into h. */
static inline uint64_t fnv1a64_mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * FNV64_PRIME;
}

/* Continues h over n bytes. */
static inline uint64_t fnv1a64_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = fnv1a64_mix(h, b[i]);
    return h;
}

/* Continues h over a NUL-terminated string (without the NUL). */
static inline uint64_t fnv1a64_str(uint64_t h, const char *s)
{
    for (const unsigned char *b = (const unsigned char *)s; *b; b++) h = fnv1a64_mix(h, *b);
    return h;
}

static inline uint64_t fnv1a64(const void *p, size_t n)
{
    return fnv1a64_add(FNV64_OFFSET, p, n);
}

#endif
