#include "autoconf.h"

#include "lib/yaml_tree.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "lib/hash.h"

/* Anchors by name (a later anchor of the same name replaces the earlier
 * one) and the keys of every mapping, in open-addressing tables: thousands
 * of anchors or keys cost linear time, not quadratic. */
struct anchor {
    char *name; /* NULL: empty slot */
    struct yt_node *node;
};

struct key_slot {
    const struct yt_node *map, *key; /* map NULL: empty slot */
};

/* Line and column as a text editor shows them. libyaml also ends a line
 * at U+0085, U+2028 and U+2029 (YAML 1.1 line breaks), even inside a
 * quoted string, so its mark.line is one too many per such character and
 * its column restarts there; an editor ends a line only at LF, CRLF or a
 * lone CR. A mark's index counts characters (not bytes; CR and LF one
 * each; a leading byte order mark not at all), so the position is counted
 * again from the text: a cursor goes forward as marks come (in document
 * order), and back to the start only for an earlier one (an error's
 * context). UTF-16 input (libyaml decodes it after a BOM) keeps libyaml's
 * own marks. */
struct pos_map {
    const unsigned char *buf;
    size_t len, start; /* start: after a UTF-8 byte order mark */
    bool utf8;
    size_t byte, chr; /* the cursor: a byte offset and its character index */
    size_t line, col; /* 0-based, at the cursor */
};

static void pos_init(struct pos_map *pm, const char *buf, size_t len)
{
    const unsigned char *u = (const unsigned char *)buf;
    *pm = (struct pos_map){.buf = u, .len = len, .utf8 = true};
    if (len >= 2 && ((u[0] == 0xfe && u[1] == 0xff) || (u[0] == 0xff && u[1] == 0xfe)))
        pm->utf8 = false;
    else if (len >= 3 && u[0] == 0xef && u[1] == 0xbb && u[2] == 0xbf)
        pm->start = 3;
    pm->byte = pm->start;
}

/* The 1-based line and column of mark m. */
static void pos_of(struct pos_map *pm, const yaml_mark_t *m, unsigned *line, unsigned *col)
{
    if (!pm->utf8) {
        *line = (unsigned)m->line + 1;
        *col = (unsigned)m->column + 1;
        return;
    }
    if (m->index < pm->chr) { /* back to the start */
        pm->byte = pm->start;
        pm->chr = pm->line = pm->col = 0;
    }
    const unsigned char *u = pm->buf;
    while (pm->chr < m->index && pm->byte < pm->len) {
        unsigned char c = u[pm->byte];
        size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (c == '\n' || (c == '\r' && (pm->byte + 1 >= pm->len || u[pm->byte + 1] != '\n'))) {
            pm->line++;
            pm->col = 0;
        } else {
            pm->col++; /* a CR before LF, too: libyaml counts it as a character */
        }
        pm->byte += n > pm->len - pm->byte ? pm->len - pm->byte : n;
        pm->chr++;
    }
    *line = (unsigned)pm->line + 1;
    *col = (unsigned)pm->col + 1;
}

struct builder {
    struct yt_doc *doc;
    struct diag *d;
    struct pos_map *pm;
    struct yt_node *stack[YT_MAX_DEPTH + 1];
    char *stack_anchor[YT_MAX_DEPTH + 1];
    int depth;
    struct anchor *anchors;
    size_t nanchors, anchor_mask; /* the table has anchor_mask + 1 slots, or none */
    struct key_slot *keys;
    size_t nkeys, key_mask;
    size_t alias_nodes, alias_bytes; /* what aliases added so far */
    bool failed;
};

const char *yt_kind_name(enum yt_kind k)
{
    switch (k) {
    case YT_SCALAR: return "a scalar";
    case YT_MAP: return "a mapping";
    case YT_SEQ: return "a list";
    }
    return "?";
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need) ncap *= 2;
    void *np = realloc(*p, ncap * elem);
    if (!np) return false;
    *p = np;
    *cap = ncap;
    return true;
}

static struct yt_node *node_new(struct builder *b, enum yt_kind kind, const yaml_mark_t *m)
{
    struct yt_doc *doc = b->doc;
    unsigned line, col;
    pos_of(b->pm, m, &line, &col);
    if (doc->nall >= YT_MAX_NODES) {
        diag_add(b->d, line, col, "document has more than %d nodes", YT_MAX_NODES);
        return NULL;
    }
    if (!grow((void **)&doc->all, &doc->capall, doc->nall + 1, sizeof(*doc->all))) return NULL;
    struct yt_node *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->kind = kind;
    n->line = line;
    n->col = col;
    doc->all[doc->nall++] = n;
    return n;
}

static struct anchor *anchor_slot(struct anchor *tab, size_t mask, const char *name)
{
    size_t i = (size_t)fnv1a64_str(FNV64_OFFSET, name) & mask;
    while (tab[i].name && strcmp(tab[i].name, name) != 0) i = (i + 1) & mask;
    return &tab[i];
}

/* Takes name. False only when out of memory. */
static bool anchor_add(struct builder *b, char *name, struct yt_node *n)
{
    if (!name) return true;
    if (2 * (b->nanchors + 1) > b->anchor_mask) { /* keep the table at most half full */
        size_t size = b->anchor_mask ? 2 * (b->anchor_mask + 1) : 16;
        struct anchor *t = calloc(size, sizeof(*t));
        if (!t) {
            free(name);
            return false;
        }
        for (size_t i = 0; b->anchors && i <= b->anchor_mask; i++)
            if (b->anchors[i].name) *anchor_slot(t, size - 1, b->anchors[i].name) = b->anchors[i];
        free(b->anchors);
        b->anchors = t;
        b->anchor_mask = size - 1;
    }
    struct anchor *a = anchor_slot(b->anchors, b->anchor_mask, name);
    if (a->name) {
        free(name); /* redefined: the later node wins */
    } else {
        a->name = name;
        b->nanchors++;
    }
    a->node = n;
    return true;
}

static struct yt_node *anchor_find(struct builder *b, const char *name)
{
    if (!b->anchors) return NULL;
    return anchor_slot(b->anchors, b->anchor_mask, name)->node;
}

static bool same_key(const struct yt_node *a, const struct yt_node *b)
{
    return a->kind == YT_SCALAR && b->kind == YT_SCALAR && a->len == b->len &&
           memcmp(a->str, b->str, a->len) == 0;
}

static struct key_slot *key_slot(struct key_slot *tab, size_t mask, const struct yt_node *map,
                                 const struct yt_node *key)
{
    uint64_t h = fnv1a64_add(fnv1a64(&map, sizeof(map)), key->str, key->len);
    size_t i = (size_t)h & mask;
    while (tab[i].map && !(tab[i].map == map && same_key(tab[i].key, key))) i = (i + 1) & mask;
    return &tab[i];
}

/* The earlier key equal to key in map, after recording key if there is none.
 * *oom is set when the table cannot grow. */
static const struct yt_node *key_seen(struct builder *b, const struct yt_node *map,
                                      const struct yt_node *key, bool *oom)
{
    if (2 * (b->nkeys + 1) > b->key_mask) {
        size_t size = b->key_mask ? 2 * (b->key_mask + 1) : 64;
        struct key_slot *t = calloc(size, sizeof(*t));
        if (!t) {
            *oom = true;
            return NULL;
        }
        for (size_t i = 0; b->keys && i <= b->key_mask; i++)
            if (b->keys[i].map) *key_slot(t, size - 1, b->keys[i].map, b->keys[i].key) = b->keys[i];
        free(b->keys);
        b->keys = t;
        b->key_mask = size - 1;
    }
    struct key_slot *s = key_slot(b->keys, b->key_mask, map, key);
    if (s->map) return s->key;
    *s = (struct key_slot){map, key};
    b->nkeys++;
    return NULL;
}

/* Counts what an alias to n at m adds; false (reported) past the limits.
 * Every count stays bounded: a node's expanded size is at most the real
 * nodes plus what aliases added. */
static bool alias_adds(struct builder *b, const struct yt_node *n, const yaml_mark_t *m)
{
    b->alias_nodes += n->xnodes;
    b->alias_bytes += n->xbytes;
    if (b->alias_nodes <= YT_MAX_ALIAS_NODES && b->alias_bytes <= YT_MAX_ALIAS_BYTES) return true;
    unsigned line, col;
    pos_of(b->pm, m, &line, &col);
    diag_add(b->d, line, col,
             "aliases add more than %u nodes or %u bytes of text to the document: "
             "alias less, or write the parts out",
             (unsigned)YT_MAX_ALIAS_NODES, (unsigned)YT_MAX_ALIAS_BYTES);
    return false;
}

/* Attach a finished node to its parent (or make it the root). */
static bool attach(struct builder *b, struct yt_node *n)
{
    if (b->depth == 0) {
        b->doc->root = n;
        return true;
    }
    struct yt_node *p = b->stack[b->depth - 1];
    p->xnodes += n->xnodes;
    p->xbytes += n->xbytes;
    if (p->kind == YT_SEQ) {
        if (!grow((void **)&p->u.items, &p->cap, p->len + 1, sizeof(*p->u.items))) return false;
        p->u.items[p->len++] = n;
        return true;
    }
    /* mapping: a pending key has value == NULL */
    if (p->len > 0 && p->u.pairs[p->len - 1].value == NULL) {
        p->u.pairs[p->len - 1].value = n;
        return true;
    }
    if (n->kind != YT_SCALAR) {
        diag_add(b->d, n->line, n->col, "mapping keys must be scalars, not %s",
                 yt_kind_name(n->kind));
        b->failed = true;
        /* keep going with a placeholder key so the rest is still checked */
    } else {
        bool oom = false;
        const struct yt_node *first = key_seen(b, p, n, &oom);
        if (oom) return false;
        if (first) {
            diag_add(b->d, n->line, n->col, "duplicate key '%s' (first at line %u)", n->str,
                     first->line);
            n->dup = true;
            b->failed = true;
        }
    }
    if (!grow((void **)&p->u.pairs, &p->cap, p->len + 1, sizeof(*p->u.pairs))) return false;
    p->u.pairs[p->len++] = (struct yt_pair){n, NULL};
    return true;
}

static char *dup_anchor(const yaml_char_t *a)
{
    return a ? strdup((const char *)a) : NULL;
}

static bool on_event(struct builder *b, yaml_event_t *ev)
{
    struct yt_node *n;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = node_new(b, YT_SCALAR, &ev->start_mark);
        if (!n) return false;
        n->len = ev->data.scalar.length;
        n->str = malloc(n->len + 1);
        if (!n->str) return false;
        memcpy(n->str, ev->data.scalar.value, n->len);
        n->str[n->len] = '\0';
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->xnodes = 1;
        n->xbytes = n->len;
        if (!attach(b, n)) return false;
        return anchor_add(b, dup_anchor(ev->data.scalar.anchor), n);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (b->depth >= YT_MAX_DEPTH) {
            unsigned line, col;
            pos_of(b->pm, &ev->start_mark, &line, &col);
            diag_add(b->d, line, col, "nesting deeper than %d levels", YT_MAX_DEPTH);
            return false;
        }
        n = node_new(b, ev->type == YAML_SEQUENCE_START_EVENT ? YT_SEQ : YT_MAP, &ev->start_mark);
        if (!n) return false;
        n->xnodes = 1;
        b->stack_anchor[b->depth] =
            dup_anchor(ev->type == YAML_SEQUENCE_START_EVENT ? ev->data.sequence_start.anchor
                                                             : ev->data.mapping_start.anchor);
        b->stack[b->depth++] = n;
        return true;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        n = b->stack[--b->depth];
        /* registered only once complete, so an alias can never form a cycle */
        char *anchor = b->stack_anchor[b->depth];
        b->stack_anchor[b->depth] = NULL;
        if (!attach(b, n)) {
            free(anchor);
            return false;
        }
        return anchor_add(b, anchor, n);
    case YAML_ALIAS_EVENT:
        n = anchor_find(b, (const char *)ev->data.alias.anchor);
        if (!n) {
            unsigned line, col;
            pos_of(b->pm, &ev->start_mark, &line, &col);
            diag_add(b->d, line, col, "unknown alias '*%s'", ev->data.alias.anchor);
            return false;
        }
        return alias_adds(b, n, &ev->start_mark) && attach(b, n);
    case YAML_DOCUMENT_START_EVENT:
        if (b->doc->root) {
            unsigned line, col;
            pos_of(b->pm, &ev->start_mark, &line, &col);
            diag_add(b->d, line, col, "only one YAML document is allowed");
            return false;
        }
        return true;
    default: return true;
    }
}

/* The line and column (0-based, in characters) of a byte offset, counting
 * line breaks as libyaml does: LF, CR, CR LF. */
static yaml_mark_t offset_mark(const char *buf, size_t len, size_t off)
{
    yaml_mark_t m = {0};
    m.index = off;
    if (off > len) off = len;
    for (size_t i = 0; i < off; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n' || (c == '\r' && (i + 1 >= len || buf[i + 1] != '\n'))) {
            m.line++;
            m.column = 0;
        } else if ((c & 0xc0) != 0x80) { /* not a UTF-8 continuation byte */
            m.column++;
        }
    }
    return m;
}

bool yt_parse(struct yt_doc *doc, const char *buf, size_t len, struct diag *d)
{
    memset(doc, 0, sizeof(*doc));
    struct pos_map pm;
    pos_init(&pm, buf, len);
    struct builder b = {.doc = doc, .d = d, .pm = &pm};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        diag_add(d, 0, 0, "out of memory");
        return false;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    bool ok = true, done = false;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            yaml_mark_t pos = p.problem ? p.problem_mark : p.context_mark;
            unsigned line, col;
            /* the reader (encoding errors) sets a byte offset, not a mark */
            if (p.error == YAML_READER_ERROR) {
                pos = offset_mark(buf, len, p.problem_offset);
                line = (unsigned)pos.line + 1;
                col = (unsigned)pos.column + 1;
            } else {
                pos_of(&pm, &pos, &line, &col);
            }
            diag_add(d, line, col, "YAML syntax error: %s%s%s", p.problem ? p.problem : "unknown",
                     p.context ? " " : "", p.context ? p.context : "");
            ok = false;
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        if (!on_event(&b, &ev)) {
            if (!b.failed && d->n == 0) diag_add(d, 0, 0, "out of memory");
            ok = false;
            done = true;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    while (b.depth > 0) free(b.stack_anchor[--b.depth]);
    for (size_t i = 0; b.anchors && i <= b.anchor_mask; i++) free(b.anchors[i].name);
    free(b.anchors);
    free(b.keys);
    /* b.failed (duplicate or complex keys) is reported but not fatal here:
     * the config walk goes on so every other error is reported too */
    if (!ok) {
        yt_free(doc);
        return false;
    }
    return true;
}

void yt_free(struct yt_doc *doc)
{
    for (size_t i = 0; i < doc->nall; i++) {
        struct yt_node *n = doc->all[i];
        if (n->kind == YT_SCALAR)
            free(n->str);
        else if (n->kind == YT_SEQ)
            free(n->u.items);
        else
            free(n->u.pairs);
        free(n);
    }
    free(doc->all);
    memset(doc, 0, sizeof(*doc));
}

struct yt_node *yt_get(const struct yt_node *map, const char *key)
{
    if (!map || map->kind != YT_MAP) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < map->len; i++) {
        const struct yt_node *k = map->u.pairs[i].key;
        if (k->kind == YT_SCALAR && k->len == kl && memcmp(k->str, key, kl) == 0)
            return map->u.pairs[i].value;
    }
    return NULL;
}
