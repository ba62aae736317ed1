/* The `acme:` section: which ACME server (directory URL, its CA), the
 * account (contact, terms, external account binding, the key type of the
 * certificates), the challenges to answer and where everything is kept
 * (storage), validated with positioned errors; and the names to order,
 * gathered from every listener's `tls.acme`. What the ACME client
 * (control/acme.h) reads. Control plane only. */
#ifndef DETOURD_ACME_CONFIG_H
#define DETOURD_ACME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/acme_jose.h"
#include "snapshot.h"

struct cfg_ctx;
struct yt_node;

#define ACME_DEFAULT_STATE_DIR "/var/lib/detourd"
#define ACME_MAX_NAMES         1000

struct acme_cfg {
    char *directory; /* https URL */
    char **contact;  /* mailto: URIs */
    size_t ncontact;
    char *ca_file; /* NULL: the system's trust store */
    enum acme_key_type key_type;
    bool http01, tlsalpn01;        /* challenges allowed (and answerable) */
    bool prefer_alpn;              /* tls-alpn-01 listed before http-01 */
    char *eab_kid, *eab_hmac_file; /* NULL: no external account binding */
    char *storage;                 /* a directory (created 0700) */
    char **names;                  /* over all listeners, unique, in order */
    size_t nnames;
};

/* The section's loader (after listen and state_file): x->c->acme, NULL
 * when absent. Also reports `tls.acme` names without the section. */
void acme_config_load(struct cfg_ctx *x, const struct yt_node *v);
void acme_cfg_free(struct acme_cfg *a);
/* True if a and b use the same account on the same server the same way
 * (the client keeps its directory, nonce and account URL). */
bool acme_cfg_same_account(const struct acme_cfg *a, const struct acme_cfg *b);

#endif
