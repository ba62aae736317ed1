/* Health probes: one in flight per region, one deadline across DNS,
 * connect, TLS, write and read (relayd's check_* files, one per kind).
 * A probe only reports; health.c decides what a result means. */
#ifndef DETOURD_PROBE_H
#define DETOURD_PROBE_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "control/config.h"
#include "control/health.h"

#define PROBE_MAX_BODY (64 * 1024) /* expect_body looks at this much */

struct evdns_base;
struct probe_env;
struct probe;

typedef void (*probe_done_cb)(void *arg, const struct probe_result *r);

struct probe_env *probe_env_new(struct event_base *base, struct evdns_base *dns);
void probe_env_free(struct probe_env *env);
/* Drops the trust stores read so far: the next probes read their ca_file
 * (or the system store) again. Called after a reload. */
void probe_env_forget_trust(struct probe_env *env);

/* Starts a probe; cb runs exactly once (never from inside probe_start)
 * unless the probe is cancelled first. */
struct probe *probe_start(struct probe_env *env, const struct check_cfg *c, probe_done_cb cb,
                          void *arg);
void probe_cancel(struct probe *p);
/* Hands a probe in flight to a new owner (a reload's copy of its region):
 * c must be equal to the check it was started with (check_cfg_equal). */
void probe_rebind(struct probe *p, const struct check_cfg *c, void *arg);

/* ---- shared by the probe kinds ---- */

struct probe_kind {
    void (*connected)(struct probe *p);
    void (*readable)(struct probe *p);
    void (*eof)(struct probe *p); /* the server closed the connection */
};

struct probe {
    struct probe_env *env;
    const struct check_cfg *c;
    const struct probe_kind *kind;
    probe_done_cb cb;
    void *arg;
    struct bufferevent *bev;
    SSL *ssl;
    struct event *deadline;
    struct event *deliver; /* defers an immediate verdict out of probe_start */
    struct timespec started;
    bool connected;
    bool done;
    struct probe_result res;
    /* http */
    int status;
    size_t head_len;
    long long content_length; /* -1: unknown */
};

extern const struct probe_kind probe_kind_http, probe_kind_tcp;

/* Ends the probe with a result (success when reason == HR_OK). */
void probe_finish(struct probe *p, enum health_reason reason, int err, const char *detail);

/* The response parsing of the http kind, pure (tests and fuzzing): the
 * status of a status line (0: malformed), where the head ends (0: not
 * yet), and its Content-Length (-1: none or malformed). */
int probe_http_status(const char *buf, size_t len);
size_t probe_http_head_end(const char *buf, size_t len);
long long probe_http_content_length(const char *head, size_t len);

#endif
