/* What the config walk (control/config.c) hands the loader of each
 * section: the positioned YAML node of its key, a context that collects
 * errors at those positions, and typed getters that report a wrong value
 * where it is written, naming the allowed range. Each subsystem declares
 * and validates its own keys next to its code (like an nginx module's
 * command table) with these; config.c keeps the walk: the top-level keys,
 * `include:`, the lists that span files, positions and the error list.
 *
 * Control plane only: nothing here is seen by serve/. */
#ifndef DETOURD_CONFIG_WALK_H
#define DETOURD_CONFIG_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/config.h"
#include "lib/diag.h"
#include "lib/yaml_tree.h"

#define CFG_MAX_NAME_LEN 64
#define CFG_MS_PER_HOUR  (3600u * 1000u)

/* Names seen so far, with the line of each: duplicate checks stay linear
 * for configs of many thousand pools or listeners. */
struct cfg_seen {
    struct cfg_seen_slot {
        const char *name; /* NULL: empty */
        unsigned line;
        const char *file;
    } * slot;
    size_t mask, n;
};

/* Where name was first seen, or NULL after recording it (name and file
 * must outlive s). Out of memory, nothing is found. Free s->slot after. */
const struct cfg_seen_slot *cfg_seen_put(struct cfg_seen *s, const char *name, unsigned line,
                                         const char *file);
/* The line where name was first seen, or 0 after recording it. */
unsigned cfg_seen_add(struct cfg_seen *s, const char *name, unsigned line);

struct cfg_host_ref; /* pools_config.c */
struct cfg_inc_file; /* config.c */
struct sched_window;

/* One load of a config. A section loader uses d, c and root; the rest is
 * the walk's (and the lists' that span files: pools and maintenance). */
struct cfg_ctx {
    struct diag *d;
    struct config *c;
    const struct yt_node *root; /* the main file's top level */
    const char *cur;            /* the file walked now: c->path or an included one */
    size_t curno;               /* its number: 0 the main file, then each included one */
    /* pools_config.c: every host of every pool with its node; the file of
     * each pool; pool names over all files */
    struct cfg_host_ref *hosts;
    size_t nhosts, caphosts;
    const char **pool_file;
    struct cfg_seen pool_names;
    /* maint_config.c: the windows of every file, moved into c->sched */
    struct sched_window *windows;
    size_t nwindows;
    struct cfg_seen window_names;
    /* config.c: the files `include:` names, parsed */
    struct cfg_inc_file *inc;
    size_t ninc;
};

/* An error at node (its line and column) in the file walked now. */
#define CFG_ERR(ctx, node, ...) diag_add((ctx)->d, (node)->line, (node)->col, __VA_ARGS__)

/* Errors from now on are in file number no (0: the main file). */
void cfg_set_file(struct cfg_ctx *x, const char *file, size_t no);
/* "line N" of file, for a message about the file walked now: "line N of
 * FILE" when file is another one. */
const char *cfg_line_of(const struct cfg_ctx *x, const char *file, unsigned line, char *buf,
                        size_t len);

/* ---- typed getters: false (reported at n, with what) on a wrong value ---- */

bool cfg_want(struct cfg_ctx *x, const struct yt_node *n, enum yt_kind k, const char *what);
/* A scalar without NUL bytes (a "\0" escape in a quoted string): values
 * are compared and parsed as C strings, which would cut them short. */
bool cfg_scalar(struct cfg_ctx *x, const struct yt_node *n, const char *what);
/* ~, null or nothing, unquoted */
bool cfg_is_null(const struct yt_node *n);
/* A scalar's text for a message: bytes that would not print (a NUL from a
 * "\0" escape, controls) are shown as \xNN, and a long one is cut. */
const char *cfg_shown(const struct yt_node *n, char *buf, size_t size);
/* The key is exactly lit: compared with its length, so that a key with a
 * NUL in it ("limit\0") is never taken for a shorter one. */
bool cfg_key_is(const struct yt_node *k, const char *lit);
/* Reports every key of map not in allowed (NULL-terminated), listing them. */
void cfg_check_keys(struct cfg_ctx *x, const struct yt_node *map, const char *what,
                    const char *const *allowed);
/* A copy of the text into *out (replacing what was there). */
bool cfg_get_str(struct cfg_ctx *x, const struct yt_node *n, const char *what, char **out);
bool cfg_get_uint(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                  uint64_t max, uint64_t *out);
bool cfg_get_unsigned(struct cfg_ctx *x, const struct yt_node *n, const char *what, unsigned min,
                      unsigned max, unsigned *out);
/* "250ms", "2s", "1m", "1h", in ms */
bool cfg_get_duration(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                      uint64_t max, uint64_t *out);
/* bytes, or with k, m, g */
bool cfg_get_size(struct cfg_ctx *x, const struct yt_node *n, const char *what, uint64_t min,
                  uint64_t max, size_t *out);
/* *out: the index in names (NULL-terminated) */
bool cfg_get_enum(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                  const char *const *names, int *out);
bool cfg_get_bool(struct cfg_ctx *x, const struct yt_node *n, const char *what, bool *out);
/* 1..CFG_MAX_NAME_LEN characters of A-Z a-z 0-9 . _ - */
bool cfg_get_name(struct cfg_ctx *x, const struct yt_node *n, const char *what, char **out);
/* An RFC 3339 instant (schedule.h), in Unix ms. */
bool cfg_get_time(struct cfg_ctx *x, const struct yt_node *n, const char *what, int64_t *ms);
/* An operator's free text: logged and shown on the status page. */
void cfg_get_reason(struct cfg_ctx *x, const struct yt_node *n, char **out);
/* A header value or similar: no control characters (they would split the
 * response) other than tab. */
bool cfg_text_ok(const char *s);
/* A map of header names to values: names are tokens, values have no
 * control characters; refused(name) may veto a name with a reason. */
void cfg_load_header_map(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                         const char *(*refused)(const char *), struct header **out, size_t *nout);
void cfg_free_headers(struct header *h, size_t n);
/* path (written at n) names a file detourd can read: a regular file (or a
 * symlink to one) that opens; else an error naming it. Never blocks. */
bool cfg_file_readable(struct cfg_ctx *x, const struct yt_node *n, const char *what,
                       const char *path);

/* ---- the sections of the control plane without a header of their own
 * (each is called with its key's value, NULL when absent) ---- */

/* listen_config.c: `listen:`, a list of addresses (or one), each plain or
 * {address, tls}. Loaded first: other sections check against them. */
void listen_config_load(struct cfg_ctx *x, const struct yt_node *v);

/* pools_config.c: the `pools:` list n of the file walked now, appended to
 * x->c->pools (which has room for those of every file). */
void pools_config_load(struct cfg_ctx *x, const struct yt_node *n);
/* Once every file's pools are loaded: each host in one pool only. */
void pools_config_check_hosts(struct cfg_ctx *x);

/* maint_config.c: the `maintenance:` list n of the file walked now,
 * appended to x->windows (which has room for those of every file); after
 * every file's pools. */
void maint_config_load(struct cfg_ctx *x, const struct yt_node *n);
/* x->c->sched from x's windows (taken) and the regions' own overrides,
 * evaluated now. False on OOM. */
bool maint_config_build(struct cfg_ctx *x);
void maint_config_free_windows(struct sched_window *w, size_t n);
/* Frees c->sched and c->sched_now. */
void maint_config_free(struct config *c);

/* statefile_config.c: `state_file` (an absolute path) and `state_max_age`
 * (default STATEFILE_DEFAULT_MAX_AGE_MS). */
void statefile_config_load(struct cfg_ctx *x, const struct yt_node *v);
void statefile_config_load_max_age(struct cfg_ctx *x, const struct yt_node *v);

#endif
