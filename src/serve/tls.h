/* TLS on the redirect listeners, as worker threads run it: the TLS
 * transport of a connection (conn.h's seam) over OpenSSL on the
 * non-blocking socket, the handshake's SNI, ALPN and session-ticket
 * callbacks over a listener's settings, and the handshake counts. The
 * settings (certificates, SNI table, protocols, ticket keys) are loaded and
 * validated by control/tls_config.c.
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

#include "serve/conn.h"

struct tls_srv; /* a listener's TLS settings: made by control/tls_config.c */

struct tls_srv *tls_srv_ref(struct tls_srv *t);
void tls_srv_unref(struct tls_srv *t);

/* The process's own ticket key (no ticket_keys file): made at the first
 * context, rotated by tls_rotate_ticket_key() (every TLS_TICKET_ROTATE_S,
 * main thread), the previous one still decrypting. */
#define TLS_TICKET_ROTATE_S (12 * 3600)
void tls_rotate_ticket_key(void);

/* Handshake counts per listener address, for /metrics. */
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
/* Failed handshakes are logged at info, at most TLS_FAIL_LOG_PER_S lines a
 * second per listener, then one line with how many were not shown; this
 * writes that line for a second that is over when no later failure has
 * (the control plane calls it once a second). */
#define TLS_FAIL_LOG_PER_S 10
void tls_fail_log_flush(void);
/* Calls fn for every listener address that ever had TLS, under the lock
 * that the config loader (any thread) takes to add one. */
void tls_stats_each(void (*fn)(const struct tls_stats_view *v, void *arg), void *arg);

/* ---- the transport (worker threads) ---- */

/* Returned by recv instead of bytes: the client speaks plain HTTP to this
 * TLS port (nothing was consumed: the caller answers in plain text). */
#define TRANSPORT_PLAIN (-3)

extern const struct transport transport_tls;

/* A server-side SSL on fd for t; NULL when out of memory. */
void *tls_conn_new(struct tls_srv *t, int fd);
/* The listener's Strict-Transport-Security header line (built at load,
 * "Strict-Transport-Security: VALUE\r\n"), or NULL without `hsts:`. */
const struct chunk *tls_conn_hsts(const void *ssl);
/* The handshake has not finished (a timeout then counts as a failure). */
bool tls_conn_handshaking(const void *ssl);
/* Frees the connection's SSL; a handshake that began and never finished is
 * counted as failed (timed_out: reason "timeout", else "other"), and a
 * failed one is logged (rate-limited) with peer, the client's address. */
void tls_conn_free(void *ssl, bool timed_out, const struct sockaddr *peer);
/* A clean end of a connection whose handshake finished: close_notify
 * (RFC 8446 6.1), once; the peer's is not awaited. Sent before a lingering
 * close, and before the socket closes after Connection: close, HTTP/1.0,
 * the keep-alive idle timeout or a graceful stop. */
void tls_conn_notify(void *ssl);
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
