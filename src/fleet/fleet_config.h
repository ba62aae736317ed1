/* The `fleet:` section: this instance's name in the fleet and how to reach
 * the fleet's etcd (endpoints, prefix, TLS, authentication, timeouts),
 * validated with positioned errors. What the fleet client (fleet/fleet.h)
 * reads. Control plane only. */
#ifndef DETOURD_FLEET_CONFIG_H
#define DETOURD_FLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

struct cfg_ctx;
struct yt_node;

#define FLEET_DEFAULT_PREFIX       "/detourd/"
#define FLEET_DEFAULT_TIMEOUT_MS   2000
#define FLEET_DEFAULT_LEASE_TTL_MS 10000
#define FLEET_MAX_ENDPOINTS        16

/* One endpoint, parsed from its URL. */
struct fleet_endpoint {
    char *url; /* as configured, for messages and /status */
    char *host;
    unsigned port;
    bool tls;
};

struct fleet_cfg {
    char *instance;
    struct fleet_endpoint *endpoints;
    size_t nendpoints;
    char *prefix;                   /* ends in '/' */
    char *ca_file, *cert, *key;     /* NULL: system store / no client certificate */
    char *username, *password_file; /* NULL: no etcd authentication */
    uint64_t timeout_ms;            /* per request */
    uint64_t lease_ttl_ms;          /* this instance's keys outlive it this long */
};

const char *fleet_cfg_prefix(const struct fleet_cfg *f);
/* True if a and b reach etcd the same way as the same instance (the
 * client goes on); false means it starts again with b. */
bool fleet_cfg_same_client(const struct fleet_cfg *a, const struct fleet_cfg *b);

/* The section's loader: x->c->fleet, NULL when v is absent or null.
 * Also checks that `consensus` (a check key) is used only with a fleet. */
void fleet_config_load(struct cfg_ctx *x, const struct yt_node *v);
void fleet_cfg_free(struct fleet_cfg *f);

#endif
