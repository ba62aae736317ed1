/* Fuzz harness: the Location builder (redirect.c). Any request path, any
 * template: the answer fits redirect_max(), its head holds no control
 * character but its CRLFs, the Location value is a valid URI reference
 * (only unreserved, reserved and %XX). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "serve/redirect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] =
    "listen: [\"127.0.0.1:8080\"]\n"
    "pools:\n"
    "  - name: html\n"
    "    regions:\n"
    "      - {name: eu, url: \"https://eu.example.com/base\"}\n"
    "      - {name: us, url: \"http://[2001:db8::1]:8080\"}\n"
    "    all_down: {action: fallback, url: \"https://sorry.example/?a=1&b=2\"}\n"
    "  - name: plain\n"
    "    hosts: [p.example]\n"
    "    status: 308\n"
    "    body: none\n"
    "    cache_control: ~\n"
    "    headers: {X-A: \"1\"}\n"
    "    regions:\n"
    "      - {name: eu, url: \"https://eu.example.com\"}\n"
    "    all_down: {action: reject, retry_after: 5}\n";

static struct config *cfg;

static const struct tmpl *pick(const struct pool *p, unsigned k)
{
    if (k % 4 == 2 && p->fallback.head.p) return &p->fallback; /* built for all_down: fallback */
    if (k % 4 == 3) return &p->reject;
    return &p->regions[k % p->nregions].tmpl;
}

static int uri_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+,;=:@/?%[]", c));
}

static int hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg) {
        struct diag d;
        diag_init(&d, "fuzz.yaml");
        cfg = config_parse("fuzz.yaml", yaml, sizeof(yaml) - 1, &d);
        assert(cfg);
        diag_free(&d);
    }
    if (size == 0) return 0;
    unsigned sel = data[0];
    const char *path = (const char *)data + 1;
    size_t plen = size - 1;
    const struct pool *p = &cfg->pools[sel & 1];
    const struct tmpl *t = pick(p, sel >> 1);
    struct date_cache dc = {0};
    date_cache_update(&dc, 784111777);
    size_t max = redirect_max(p, t, plen);
    char *out = malloc(max + 1);
    assert(out);
    size_t n = redirect_build(out, p, t, path, plen, sel & 0x20, (enum conn_hdr)((sel >> 6) % 3),
                              &dc, NULL);
    assert(n <= max);
    out[n] = '\0';
    char *end = strstr(out, "\r\n\r\n");
    assert(end);
    for (char *q = out; q < end; q++)
        assert((unsigned char)*q >= 0x20 || *q == '\t' || (q[0] == '\r' && q[1] == '\n') ||
               (q[0] == '\n' && q[-1] == '\r'));
    char *loc = strstr(out, "\r\nLocation: ");
    if (loc && loc < end) {
        loc += 12;
        char *le = strstr(loc, "\r\n");
        for (char *q = loc; q < le; q++) {
            assert(uri_char((unsigned char)*q));
            if (*q == '%') assert(hex((unsigned char)q[1]) && hex((unsigned char)q[2]));
        }
    }
    /* the plain escaper on its own: 3 bytes per input byte at most, plus '/' */
    char *esc = malloc(3 * plen + 2);
    assert(esc);
    size_t el = redirect_escape_path(esc, path, plen);
    assert(el <= 3 * plen + 1 && esc[0] == '/');
    for (size_t i = 0; i < el; i++) assert(uri_char((unsigned char)esc[i]));
    free(esc);
    free(out);
    return 0;
}
