/* The `admin:` section: where the admin listener binds and which clients
 * it serves, validated with positioned errors (an address that would clash
 * with a redirect listener is one). Opaque to everyone but admin_config.c:
 * the admin listener reads it through these accessors. */
#ifndef DETOURD_ADMIN_CONFIG_H
#define DETOURD_ADMIN_CONFIG_H

#include <stdbool.h>
#include <sys/socket.h>

#include "snapshot.h"

struct admin_cfg;
struct cfg_ctx;
struct yt_node;

/* The address admin.listen names. */
const struct listen_addr *admin_cfg_listen(const struct admin_cfg *a);
/* True if a client at sa is in admin.allow (default: loopback only). */
bool admin_cfg_allows(const struct admin_cfg *a, const struct sockaddr *sa);

/* The section's loader (control/config.c's walk, after `listen`):
 * x->c->admin, left NULL when v is absent or null (no admin listener). */
void admin_config_load(struct cfg_ctx *x, const struct yt_node *v);
void admin_cfg_free(struct admin_cfg *a);

#endif
