/* A listener's `tls:` block: its keys parsed and validated, then
 * everything loaded and built from them (certificate, key and ticket-key
 * files, the OpenSSL context, the SNI table) into a struct tls_srv that
 * serve/tls.c runs handshakes with. Errors are positioned at the key they
 * are about, with OpenSSL's reason. And what the control plane reads back
 * from a loaded listener: its certificates, for /status, /metrics and the
 * expiry warnings. */
#ifndef DETOURD_TLS_CONFIG_H
#define DETOURD_TLS_CONFIG_H

#include <stddef.h>
#include <time.h>

#include "serve/tls.h"

struct cfg_ctx;
struct yt_node;

/* The `tls:` block n of the listener written as listener: its settings
 * loaded, or NULL with every problem reported (the files are read even
 * when a key is wrong: every error in one pass). */
struct tls_srv *tls_config_load(struct cfg_ctx *x, const struct yt_node *n, const char *listener);

/* Certificates of a listener, for /status, metrics and warnings. */
struct tls_cert_info {
    const char *file; /* as written in the config */
    const char *const *names;
    size_t nnames;
    time_t not_before, not_after;
};
size_t tls_srv_ncerts(const struct tls_srv *t);
struct tls_cert_info tls_srv_cert(const struct tls_srv *t, size_t i);
const char *tls_srv_listener(const struct tls_srv *t);
/* At most this many names in a listener's `tls.acme` */
#define TLS_ACME_MAX_NAMES 100
/* The names of the listener's `tls.acme` list (lowercase, no trailing
 * dot, in the order written), for control/acme.c; NULL and *n = 0 when it
 * has none. */
const char *const *tls_srv_acme_names(const struct tls_srv *t, size_t *n);

/* Logs a warning for each certificate that has expired, is not valid yet,
 * or expires within TLS_EXPIRY_WARN_DAYS of now. */
#define TLS_EXPIRY_WARN_DAYS 14
void tls_srv_warn_expiry(const struct tls_srv *t, time_t now);

#endif
