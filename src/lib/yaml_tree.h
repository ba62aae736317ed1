/* A small positioned tree over libyaml events. libyaml itself neither
 * detects duplicate keys nor limits nesting; this layer does both, and keeps
 * line:column (1-based) on every node so the config loader can point at the
 * exact place of a semantic error: the line and column a text editor shows
 * (only LF, CRLF and a lone CR end a line; columns count characters), not
 * libyaml's, which also breaks lines at U+0085, U+2028 and U+2029.
 *
 * An alias shares the anchored node instead of copying it, but whoever walks
 * the tree visits it once per alias: a few aliases of aliases make a small
 * file a huge document. What aliases add to the document (the nodes and text
 * of each aliased part, expanded) is therefore counted as it is built, and
 * bounded. */
#ifndef DETOURD_YAML_TREE_H
#define DETOURD_YAML_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/diag.h"

#define YT_MAX_DEPTH 32
#define YT_MAX_NODES 1000000
/* what all aliases together may add to the document */
#define YT_MAX_ALIAS_NODES 250000
#define YT_MAX_ALIAS_BYTES (4u << 20) /* of scalar text */

enum yt_kind { YT_SCALAR, YT_MAP, YT_SEQ };

struct yt_node;

struct yt_pair {
    struct yt_node *key, *value;
};

struct yt_node {
    enum yt_kind kind;
    unsigned line, col;
    bool plain; /* scalar written without quotes (may be a number/bool) */
    bool dup;   /* a key that repeats an earlier one of its mapping (reported) */
    size_t len; /* scalar length, or number of items/pairs */
    char *str;  /* scalar text, NUL-terminated (may contain NULs) */
    union {
        struct yt_node **items; /* YT_SEQ */
        struct yt_pair *pairs;  /* YT_MAP */
    } u;
    size_t cap;
    size_t xnodes, xbytes; /* this subtree with every alias expanded */
};

struct yt_doc {
    struct yt_node *root; /* NULL for an empty document */
    struct yt_node **all; /* every node, for freeing (aliases share nodes) */
    size_t nall, capall;
};

/* Parses buf into doc; returns false (with errors added to d) on failure. */
bool yt_parse(struct yt_doc *doc, const char *buf, size_t len, struct diag *d);
void yt_free(struct yt_doc *doc);
/* Map lookup by key; NULL if absent. */
struct yt_node *yt_get(const struct yt_node *map, const char *key);
const char *yt_kind_name(enum yt_kind k);

#endif
