/* Listening sockets: bind with the options a redirect server wants. */
#ifndef DETOURD_LISTENER_H
#define DETOURD_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define LISTEN_BACKLOG 4096

/* Binds and listens on a (with SO_REUSEPORT so that each worker can have a
 * socket of its own); returns the fd, or -1 with a message in err that
 * names the address. */
int listener_open(const struct listen_addr *a, bool reuseport, char *err, size_t errlen);
/* Wakes the accepting side only once a connection has data (the request
 * usually comes with it): accept, read, answer, with no wait in between.
 * A silent connection is handed over after about `seconds`. */
void listener_defer_accept(int fd, unsigned seconds);

#endif
