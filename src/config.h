/* The immutable configuration: YAML file -> struct config, validated in
 * full. A config is built completely (including everything the request path
 * precomputes from it) before it is ever used; it is never modified after
 * config_load() returns. */
#ifndef DETOURD_CONFIG_H
#define DETOURD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "diag.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DETOURD_DEFAULT_CONFIG SYSCONFDIR "/detourd/detourd.yaml"

#define CONFIG_MAX_FILE_BYTES (16u << 20)
#define CONFIG_MAX_WEIGHT     1000
#define CONFIG_MAX_PRIORITY   1000
#define CONFIG_MAX_REGIONS    64 /* per pool: an up-set fits in a uint64_t */

enum region_state { REGION_AUTO, REGION_UP, REGION_DOWN, REGION_DRAIN };
enum balance { BALANCE_WEIGHTED, BALANCE_LATENCY, BALANCE_HASH };
enum body_kind { BODY_HTML, BODY_NONE };
enum all_down_action { ALL_DOWN_FAIL_OPEN, ALL_DOWN_FALLBACK, ALL_DOWN_REJECT };
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t sslen;
    char text[64];  /* as written, normalised: "127.0.0.1:8080", "[::]:8080" */
    char host[48];  /* numeric host without brackets */
    uint16_t port;
    unsigned line, col;
};

struct header {
    char *name, *value;
};

/* A precomputed response piece (built at load, see redirect.c). */
struct chunk {
    char *p;
    size_t len;
};

/* Everything of one kind of response that does not depend on the request:
 *   head [escaped path] "\r\nDate: ..." "Content-Length: N" tail [Connection]
 *   "\r\n" body_pre [HTML-escaped path] body_post */
struct tmpl {
    struct chunk head;      /* status line + "Location: " + url (no CRLF) */
    struct chunk body_pre;  /* HTML body up to the path */
    struct chunk body_post; /* HTML body after the path */
    bool with_path;         /* append the request's path and query */
};

struct region {
    char *name;
    char *url;          /* normalised: lowercase scheme, no trailing '/' */
    size_t url_len;
    unsigned priority;
    unsigned weight;
    enum region_state state;
    unsigned line, col;
    struct tmpl tmpl;   /* response template (redirect.c) */
};

struct pool {
    char *name;
    char **hosts;
    size_t nhosts;
    bool is_default;
    unsigned status;
    enum balance balance;
    char *hash_key; /* "client_ip" or "header:NAME" */
    char *cache_control;
    struct header *headers;
    size_t nheaders;
    enum body_kind body;
    enum all_down_action all_down;
    char *all_down_url;
    unsigned retry_after;
    struct region *regions;
    size_t nregions;
    unsigned line, col;
    /* response templates (redirect.c) */
    struct chunk tail;      /* Cache-Control + extra headers, each ending CRLF */
    struct tmpl fallback;   /* all_down: fallback */
    struct tmpl reject;     /* all_down: reject, and nothing left to choose */
    struct select_state *sel; /* selection state (select.c), the one mutable part */
};

struct limits {
    unsigned max_connections;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    size_t max_header_bytes;
    size_t max_uri_bytes;
    size_t max_body_discard;
    uint64_t shutdown_timeout_ms;
};

struct config {
    char *path;
    struct listen_addr *listen;
    size_t nlisten;
    unsigned workers; /* 0 = auto */
    enum log_level log_level;
    bool log_json;
    struct limits limits;
    struct pool *pools;
    size_t npools;
    struct pool *default_pool;
    struct route_table *routes; /* Host -> pool (route.c) */
};

/* Loads and validates path. On success returns a config; on failure returns
 * NULL with every problem in d (d->file must outlive the call). */
struct config *config_load(const char *path, struct diag *d);
/* Same, from memory (tests); name is used in messages. */
struct config *config_parse(const char *name, const char *buf, size_t len, struct diag *d);
void config_free(struct config *c);

/* Helpers shared with tests. Return false on a malformed value. */
bool config_parse_duration(const char *s, uint64_t *ms);
bool config_parse_size(const char *s, uint64_t *bytes);
bool config_parse_listen(const char *s, struct listen_addr *out);

const char *region_state_name(enum region_state s);

#endif
