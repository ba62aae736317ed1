/* Fuzz harness: the fleet's key and value decoders (fleet/fleet_value.c)
 * and the store that applies them (fleet/fleet_store.c): any bytes, as a
 * key and as the value of each kind of key. The first byte picks the
 * kind; the rest is the value (the key, for the key parser). Nothing
 * crashes or reads past the buffer; a rejected value leaves nothing
 * allocated and says why; an accepted drain or window is consistent
 * (until after from); a bad value never replaces a good one. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/fleet_store.h"
#include "fleet/fleet_value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool exists(void *arg, const char *pool, const char *region)
{
    (void)arg;
    return strcmp(pool, "api") == 0 && strcmp(region, "eu") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    unsigned kind = data[0] % 4;
    /* an exact-size copy, so that ASan sees any read past the end */
    char *buf = malloc(size - 1 ? size - 1 : 1);
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1;
    char err[FLEET_ERR_LEN];
    switch (kind) {
    case 0: {
        struct fleet_key k;
        enum fleet_key_kind r = fleet_key_parse("/detourd/", buf, len, &k, err, sizeof(err));
        assert(r != FLEET_KEY_BAD || err[0]);
        break;
    }
    case 1: {
        struct fleet_drain d;
        if (fleet_drain_decode(buf, len, &d, err, sizeof(err))) {
            assert(!(d.has_from && d.has_until) || d.until_ms > d.from_ms);
            assert(d.state == REGION_DRAIN || d.state == REGION_DOWN);
            fleet_drain_clear(&d);
        } else {
            assert(err[0] && !d.reason);
        }
        break;
    }
    case 2: {
        struct fleet_window w;
        if (fleet_window_decode(buf, len, exists, NULL, &w, err, sizeof(err))) {
            assert(w.until_ms > w.from_ms && w.n > 0);
            fleet_window_clear(&w);
        } else {
            assert(err[0] && !w.pools && !w.reason);
        }
        break;
    }
    default: {
        /* a good drain, then these bytes over it: the good one stays or is replaced by a good one
         */
        struct fleet_store s;
        if (!fleet_store_init(&s, "/detourd/", exists, NULL)) break;
        const char *k = "/detourd/drain/api/eu";
        fleet_store_put(&s, k, strlen(k), "{\"reason\":\"ok\"}", 15, 1, 0);
        int ch = fleet_store_put(&s, k, strlen(k), buf, len, 2, 0);
        const struct fleet_entry *e = fleet_store_find(&s, k, strlen(k));
        assert(e && e->good);
        if (ch > 0 && (ch & FLEET_CH_REJECTED)) {
            assert(e->error && e->good_rev == 1 && strcmp(e->drain.reason, "ok") == 0);
        }
        fleet_store_free(&s);
    }
    }
    free(buf);
    return 0;
}
