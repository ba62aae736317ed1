/* Addresses, CIDRs and URLs as the config writes them: pure parsers (no
 * I/O, no name resolution) and the CIDR match the admin listener runs for
 * every request. */
#ifndef DETOURD_NETADDR_H
#define DETOURD_NETADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t sslen;
    char text[64]; /* as written, normalised: "127.0.0.1:8080", "[::]:8080" */
    char host[48]; /* numeric host without brackets */
    uint16_t port;
    unsigned line, col;
};

/* An admin.allow entry: the network with its host bits cleared. */
struct cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned bits;
    unsigned full; /* bits / 8: whole bytes to compare */
    uint8_t mask;  /* for the byte after them; 0 when bits % 8 == 0 */
};

/* An absolute http(s) URL. */
struct url {
    char *norm;     /* scheme and host lowercased, one trailing '/' dropped (malloc'd) */
    char host[256]; /* without brackets */
    unsigned port;  /* explicit or the scheme's default */
};

/* Digits at the start of s (at least one, no sign); false on overflow. */
bool netaddr_parse_u64(const char *s, size_t *consumed, uint64_t *out);
/* IPv4:PORT, [IPv6]:PORT, *:PORT or :PORT (port 1..65535). */
bool netaddr_parse_listen(const char *s, struct listen_addr *out);
/* ADDRESS or ADDRESS/BITS, IPv4 or IPv6. */
bool netaddr_parse_cidr(const char *s, struct cidr *out);
/* Parses s into u (u->norm to be freed); NULL, or why it is not a URL.
 * allow_query: a query may follow the path (check urls). */
const char *netaddr_parse_url(const char *s, bool allow_query, struct url *u);

/* True if sa is inside c: a few byte compares, no allocation. */
static inline bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa->sa_family != c->family) return false;
    if (c->family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (memcmp(a, c->addr, c->full) != 0) return false;
    return !c->mask || (a[c->full] & c->mask) == c->addr[c->full];
}

#endif
