/* TLS on the redirect listeners: the certificates, SNI table, protocols and
 * session-ticket keys of one listener (built at config load, validated
 * with positioned errors), and the TLS transport of a connection (conn.h's
 * seam) over OpenSSL on the non-blocking socket.
 *
 * A struct tls_srv lives as long as its SSL_CTX: the config holds one
 * reference, the listener set another, and every connection's SSL holds
 * the context, so a handshake that outlives a reload still finds its SNI
 * table. Handshake counts outlive configs: they are kept per listener
 * address for the life of the process. */
#ifndef DETOURD_TLS_H
#define DETOURD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "serve/conn.h"
#include "lib/diag.h"

/* A listener's `tls:` block as written (config.c fills it; positions are
 * those of the values, for messages). */
struct tls_pos {
    unsigned line, col;
};

struct tls_cert_conf {
    size_t index; /* in the YAML list, for messages */
    char *cert, *key;
    struct tls_pos cert_pos, key_pos;
};

struct tls_conf {
    const char *listener; /* the address as written */
    struct tls_cert_conf *certs;
    size_t ncerts;
    int min_version, max_version; /* TLS1_2_VERSION / TLS1_3_VERSION */
    char *ciphers, *ciphersuites; /* NULL: the defaults */
    struct tls_pos ciphers_pos, ciphersuites_pos;
    bool tickets;      /* session_tickets */
    char *ticket_keys; /* NULL: the process's rotating key */
    struct tls_pos ticket_keys_pos;
    bool reject_unknown; /* unknown_sni: reject */
};

void tls_conf_free(struct tls_conf *tc);

struct tls_srv;

/* Loads the certificates, keys and ticket keys tc names and builds the
 * listener's context. NULL with every problem added to d at its position. */
struct tls_srv *tls_srv_build(const struct tls_conf *tc, struct diag *d);
struct tls_srv *tls_srv_ref(struct tls_srv *t);
void tls_srv_unref(struct tls_srv *t);

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

/* Logs a warning for each certificate that has expired, is not valid yet,
 * or expires within TLS_EXPIRY_WARN_DAYS of now. */
#define TLS_EXPIRY_WARN_DAYS 14
void tls_srv_warn_expiry(const struct tls_srv *t, time_t now);

/* The process's own ticket key (no ticket_keys file): made at the first
 * context, rotated by tls_rotate_ticket_key() (every TLS_TICKET_ROTATE_S,
 * main thread), the previous one still decrypting. */
#define TLS_TICKET_ROTATE_S (12 * 3600)
void tls_rotate_ticket_key(void);

/* Handshake counts per listener address, for /metrics (main thread). */
enum tls_fail {
    TLS_FAIL_TIMEOUT,
    TLS_FAIL_PLAIN_HTTP,
    TLS_FAIL_PROTOCOL,
    TLS_FAIL_UNKNOWN_SNI,
    TLS_FAIL_OTHER,
    TLS_FAIL_N
};
struct tls_stats_view {
    const char *listener;
    uint64_t full, resumed, failed;
    uint64_t fail[TLS_FAIL_N];
};
const char *tls_fail_name(enum tls_fail f);
/* Calls fn for every listener address that ever had TLS. */
void tls_stats_each(void (*fn)(const struct tls_stats_view *v, void *arg), void *arg);

/* ---- the transport (worker threads) ---- */

/* Returned by recv instead of bytes: the client speaks plain HTTP to this
 * TLS port (nothing was consumed: the caller answers in plain text). */
#define TRANSPORT_PLAIN (-3)

extern const struct transport transport_tls;

/* A server-side SSL on fd for t; NULL when out of memory. */
void *tls_conn_new(struct tls_srv *t, int fd);
/* The handshake has not finished (a timeout then counts as a failure). */
bool tls_conn_handshaking(const void *ssl);
/* Frees the connection's SSL; a handshake that began and never finished is
 * counted as failed (timed_out: reason "timeout", else "other"). */
void tls_conn_free(void *ssl, bool timed_out);
/* The event directions to serve besides those that fired (EV_READ,
 * EV_WRITE): OpenSSL's last call waits for the other one. */
short tls_conn_wants(const void *ssl, short fired);
/* After a read that returned bytes: the socket was emptied and nothing
 * waits inside OpenSSL, so the next edge will say when more arrives. */
bool tls_conn_drained(const void *ssl);
/* Reads what the socket has without decrypting it (a lingering close only
 * drains). */
ssize_t tls_conn_drain(int fd, char *buf, size_t len);

#endif
