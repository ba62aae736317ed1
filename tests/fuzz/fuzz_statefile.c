/* Fuzz harness: the state file decoder (statefile.c). Any bytes: it never
 * crashes or reads past the buffer (which is not NUL-terminated); on
 * failure nothing is left allocated and there is a reason; on success the
 * regions are sorted, unique, findable, and encoding them and decoding
 * that again gives the same document. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/statefile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so that ASan sees any read past the end */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct statefile st, again;
    char err[256];
    if (!statefile_decode(buf, size, &st, err, sizeof(err))) {
        assert(st.n == 0 && st.regions == NULL && err[0]);
        free(buf);
        return 0;
    }
    for (size_t i = 0; i < st.n; i++) {
        const struct statefile_region *r = &st.regions[i];
        assert(r->pool[0] && r->region[0]);
        assert(statefile_find(&st, r->pool, r->region) == r);
    }
    char *enc;
    size_t len;
    if (statefile_encode(&st, &enc, &len)) {
        assert(statefile_decode(enc, len, &again, err, sizeof(err)));
        assert(again.n == st.n && again.written_ms == st.written_ms);
        for (size_t i = 0; i < st.n; i++) {
            assert(strcmp(again.regions[i].pool, st.regions[i].pool) == 0);
            assert(strcmp(again.regions[i].region, st.regions[i].region) == 0);
            assert(again.regions[i].check_hash == st.regions[i].check_hash);
            assert(again.regions[i].up == st.regions[i].up);
            assert(again.regions[i].since_ms == st.regions[i].since_ms);
        }
        statefile_clear(&again);
        free(enc);
    }
    statefile_clear(&st);
    free(buf);
    return 0;
}
