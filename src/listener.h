/* Listening sockets: bind with the options a redirect server wants. */
#ifndef DETOURD_LISTENER_H
#define DETOURD_LISTENER_H

#include <stddef.h>

#include "config.h"

#define LISTEN_BACKLOG 4096

/* Binds and listens on a; returns the fd, or -1 with a message in err
 * that names the address. */
int listener_open(const struct listen_addr *a, char *err, size_t errlen);

#endif
