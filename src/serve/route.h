/* Host -> pool routing: exact names and "*.suffix" wildcards in one open
 * addressing table built at config load; the default pool catches the rest. */
#ifndef DETOURD_ROUTE_H
#define DETOURD_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "snapshot.h"

#define ROUTE_MAX_HOST 255

/* Builds c->routes from the pools' hosts. False on allocation failure. */
bool route_build(struct config *c);
void route_free(struct route_table *t);
/* The pool for a Host value (any case, optional ":port", IPv6 literals in
 * brackets); the default pool or NULL when nothing matches. */
const struct pool *route_lookup(const struct config *c, const char *host, size_t len);
/* Normalises a Host value into out (lowercase, no port, no trailing dot);
 * returns its length, or 0 if it is not usable. out holds ROUTE_MAX_HOST. */
size_t route_normalize(const char *host, size_t len, char *out);

#endif
