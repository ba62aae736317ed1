/* etcd's v3 JSON gateway (grpc-gateway, etcd 3.4 and later), pure:
 * request bodies and the parsing of its answers. Keys and values are
 * base64 in both directions; 64-bit integers are JSON strings ("12") or,
 * from some versions, numbers; absent fields are zero (proto3). An error
 * answer is {"error": "...", "code": N, "message": "..."} (or, in a
 * stream, {"error": {"grpc_code": N, "http_code": N, "message": "..."}}).
 * No I/O: etcd.c sends and receives; tests/unit/test_fleet.c feeds these
 * the answers of a real etcd 3.4. */
#ifndef DETOURD_ETCD_JSON_H
#define DETOURD_ETCD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_ERR_LEN 256

/* base64 (RFC 4648, with padding); the output is NUL-terminated. */
size_t etcd_b64_len(size_t n); /* bytes b64_encode writes, NUL included */
void etcd_b64_encode(const void *in, size_t n, char *out);
/* Decodes s[0..n) into out (at least n * 3 / 4 + 1 bytes, NUL-terminated
 * after *outlen bytes); false if s is not base64. */
bool etcd_b64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen);

/* The key after prefix, one past the last key under it: prefix with its
 * last byte incremented (etcd's range_end for "every key under"). */
void etcd_prefix_end(const char *prefix, char *out, size_t len);

/* ---- request bodies (malloc'd JSON text; NULL on OOM) ---- */

char *etcd_req_range(const char *key, const char *range_end, int64_t revision);
/* with progress notifications: etcd tells an idle watch its revision now
 * and then, so that silence means a dead stream */
char *etcd_req_watch(const char *key, const char *range_end, int64_t start_revision);
char *etcd_req_put(const char *key, const char *value, size_t vlen, int64_t lease);
char *etcd_req_delete(const char *key, const char *range_end);
char *etcd_req_lease_grant(int64_t ttl_s);
char *etcd_req_lease_id(int64_t id); /* keepalive, revoke */
char *etcd_req_auth(const char *name, const char *password);

/* ---- answers ---- */

struct etcd_kv {
    char *key; /* NUL-terminated; keylen bytes (a key may hold a NUL) */
    size_t keylen;
    char *value;
    size_t vlen;
    int64_t mod_revision;
    int64_t lease;
};

enum etcd_event_type { ETCD_PUT, ETCD_DELETE };

struct etcd_event {
    enum etcd_event_type type;
    struct etcd_kv kv;
};

/* An error answer's code (gRPC: 16 unauthenticated, 11 out of range =
 * compacted, 5 not found = lease expired, 14 unavailable) and text. */
struct etcd_error {
    int code;
    char message[ETCD_ERR_LEN];
};

struct etcd_range {
    int64_t revision; /* the header's: the store's revision at the read */
    struct etcd_kv *kvs;
    size_t n;
    bool more;
};

struct etcd_watch_msg {
    int64_t revision; /* the header's */
    bool created, canceled;
    int64_t compact_revision; /* >0: the start revision was compacted */
    int64_t watch_id;
    char cancel_reason[ETCD_ERR_LEN];
    struct etcd_event *events;
    size_t n;
};

/* The watch stream's framing. The gateway ends every message with '\n'
 * (JSON text holds none: the delimiter is never inside a message); an
 * error that ends the stream may come without one. Bytes are added as the
 * transport delivers them, cut anywhere (inside a multi-byte character
 * too); only the bytes added since the last search are searched, so a long
 * message costs linear time however it is cut. */
struct etcd_stream {
    char *buf;
    size_t start, len, cap; /* pending bytes: buf[start..len) */
    size_t scanned;         /* buf[start..scanned) holds no '\n' */
    size_t max;             /* the longest message taken */
};
void etcd_stream_init(struct etcd_stream *s, size_t max);
void etcd_stream_clear(struct etcd_stream *s); /* drops what is pending */
void etcd_stream_free(struct etcd_stream *s);
/* false (nothing added): the message under way would be longer than max,
 * or out of memory */
bool etcd_stream_add(struct etcd_stream *s, const void *p, size_t n);
/* The next complete message, its '\n' left out, or NULL; valid until the
 * next etcd_stream_add(). */
const char *etcd_stream_next(struct etcd_stream *s, size_t *len);
/* What is left once the stream has ended (a last message without its
 * '\n'), taken; NULL when nothing is. */
const char *etcd_stream_rest(struct etcd_stream *s, size_t *len);

/* Each: false with err (an error answer fills *e when e is given, with
 * e->code > 0 or e->message set; a malformed answer leaves e->code 0). */
bool etcd_parse_error(const char *buf, size_t len, struct etcd_error *e);
bool etcd_parse_range(const char *buf, size_t len, struct etcd_range *out, struct etcd_error *e);
void etcd_range_clear(struct etcd_range *r);
/* One message of the watch stream (as etcd_stream_next() gives it); false
 * with e set when it is an error or malformed. */
bool etcd_parse_watch(const char *buf, size_t len, struct etcd_watch_msg *out,
                      struct etcd_error *e);
void etcd_watch_clear(struct etcd_watch_msg *m);
/* lease grant: its ID and TTL (seconds) */
bool etcd_parse_lease(const char *buf, size_t len, int64_t *id, int64_t *ttl, struct etcd_error *e);
/* lease keepalive (a stream of one answer): TTL 0 means the lease is gone */
bool etcd_parse_keepalive(const char *buf, size_t len, int64_t *ttl, struct etcd_error *e);
/* put, deleterange, revoke: any answer with a header */
bool etcd_parse_ok(const char *buf, size_t len, int64_t *revision, struct etcd_error *e);
/* authenticate: the token (malloc'd) */
bool etcd_parse_auth(const char *buf, size_t len, char **token, struct etcd_error *e);

#endif
