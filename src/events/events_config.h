/* The `events:` section: the exec and webhook sinks as configured,
 * validated with positioned errors; what each sink is told at load
 * (sink_exec_config, sink_webhook_config). */
#ifndef DETOURD_EVENTS_CONFIG_H
#define DETOURD_EVENTS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

struct cfg_ctx;
struct yt_node;

struct events_cfg {
    char **exec_argv; /* NULL-terminated; NULL: no exec sink */
    size_t exec_argc;
    uint64_t exec_timeout_ms;
    char *webhook_url; /* normalised; NULL: no webhook sink */
    char *webhook_host;
    unsigned webhook_port;
    char *webhook_path;   /* path and query, at least "/" */
    bool webhook_tls;     /* https */
    char *webhook_secret; /* NULL: no X-Detourd-Signature */
    struct header *webhook_headers;
    size_t nwebhook_headers;
    uint64_t webhook_timeout_ms;
    unsigned webhook_retries;
    bool webhook_tls_verify;
    char *webhook_ca_file; /* NULL: the system's trust store */
};

/* The section's loader (control/config.c's walk): x->c->events, always
 * made, with the defaults and the keys of v (NULL: absent) applied. */
void events_config_load(struct cfg_ctx *x, const struct yt_node *v);
void events_cfg_free(struct events_cfg *e);

#endif
