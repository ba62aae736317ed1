/* Listening sockets: bind with the options a redirect server wants, and
 * the sets of them a config asks for, diffed on reload so that an address
 * kept by the new config keeps its sockets (and its queued connections). */
#ifndef DETOURD_LISTENER_H
#define DETOURD_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "serve/worker.h" /* struct listener_set: what the workers accept on */
#include "snapshot.h"

#define LISTEN_BACKLOG 4096

/* Sockets to close once no worker polls them any more. */
struct listener_fds {
    int *fds;
    size_t n;
};

/* Binds and listens on a (with SO_REUSEPORT so that each worker can have a
 * socket of its own); returns the fd, or -1 with a message in err that
 * names the address. */
int listener_open(const struct listen_addr *a, bool reuseport, char *err, size_t errlen);
/* Wakes the accepting side only once a connection has data (the request
 * usually comes with it): accept, read, answer, with no wait in between.
 * A silent connection is handed over after about `seconds`. */
void listener_defer_accept(int fd, unsigned seconds);

/* The set cfg asks for, nfds sockets per address: addresses old has share
 * its sockets, new ones are bound (sockets passed by systemd first). NULL
 * with a message in err if one cannot be bound. */
struct listener_set *listener_set_build(const struct config *cfg, const struct listener_set *old,
                                        unsigned nfds, char *err, size_t errlen);
/* Drops a set that was never published: closes only the sockets it opened
 * itself (those old does not have). */
void listener_set_discard(struct listener_set *set, const struct listener_set *old);
/* Logs the addresses set adds to old. */
void listener_set_log_added(const struct listener_set *set, const struct listener_set *old);
/* The sockets of old that set (NULL: none) no longer has; logs each
 * address closed. NULL on allocation failure. */
struct listener_fds *listener_set_removed(const struct listener_set *old,
                                          const struct listener_set *set);
/* Closes the sockets of a listener_set_removed() batch and frees it. */
void listener_fds_close(void *fds);
/* Frees a set's memory; its sockets stay open (they live on in the next
 * set, or in a listener_set_removed() batch). */
void listener_set_free(void *set);
/* Closes every socket of the set and frees it (at exit). */
void listener_set_close(struct listener_set *set);

#endif
