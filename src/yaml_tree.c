#include "autoconf.h"

#include "yaml_tree.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct anchor {
    char *name;
    struct yt_node *node;
};

struct builder {
    struct yt_doc *doc;
    struct diag *d;
    struct yt_node *stack[YT_MAX_DEPTH + 1];
    char *stack_anchor[YT_MAX_DEPTH + 1];
    int depth;
    struct anchor *anchors;
    size_t nanchors, capanchors;
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
    if (doc->nall >= YT_MAX_NODES) {
        diag_add(b->d, m->line + 1, m->column + 1, "document has more than %d nodes", YT_MAX_NODES);
        return NULL;
    }
    if (!grow((void **)&doc->all, &doc->capall, doc->nall + 1, sizeof(*doc->all))) return NULL;
    struct yt_node *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->kind = kind;
    n->line = (unsigned)m->line + 1;
    n->col = (unsigned)m->column + 1;
    doc->all[doc->nall++] = n;
    return n;
}

static void anchor_add(struct builder *b, char *name, struct yt_node *n)
{
    if (!name) return;
    if (!grow((void **)&b->anchors, &b->capanchors, b->nanchors + 1, sizeof(*b->anchors))) {
        free(name);
        return;
    }
    b->anchors[b->nanchors++] = (struct anchor){name, n};
}

static struct yt_node *anchor_find(struct builder *b, const char *name)
{
    for (size_t i = b->nanchors; i-- > 0;)
        if (strcmp(b->anchors[i].name, name) == 0) return b->anchors[i].node;
    return NULL;
}

static bool same_key(const struct yt_node *a, const struct yt_node *b)
{
    return a->kind == YT_SCALAR && b->kind == YT_SCALAR && a->len == b->len &&
           memcmp(a->str, b->str, a->len) == 0;
}

/* Attach a finished node to its parent (or make it the root). */
static bool attach(struct builder *b, struct yt_node *n)
{
    if (b->depth == 0) {
        b->doc->root = n;
        return true;
    }
    struct yt_node *p = b->stack[b->depth - 1];
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
        for (size_t i = 0; i < p->len; i++) {
            if (same_key(p->u.pairs[i].key, n)) {
                diag_add(b->d, n->line, n->col, "duplicate key '%s' (first at line %u)", n->str,
                         p->u.pairs[i].key->line);
                b->failed = true;
                break;
            }
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
        if (!attach(b, n)) return false;
        anchor_add(b, dup_anchor(ev->data.scalar.anchor), n);
        return true;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (b->depth >= YT_MAX_DEPTH) {
            diag_add(b->d, ev->start_mark.line + 1, ev->start_mark.column + 1,
                     "nesting deeper than %d levels", YT_MAX_DEPTH);
            return false;
        }
        n = node_new(b, ev->type == YAML_SEQUENCE_START_EVENT ? YT_SEQ : YT_MAP, &ev->start_mark);
        if (!n) return false;
        b->stack_anchor[b->depth] =
            dup_anchor(ev->type == YAML_SEQUENCE_START_EVENT ? ev->data.sequence_start.anchor
                                                             : ev->data.mapping_start.anchor);
        b->stack[b->depth++] = n;
        return true;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        n = b->stack[--b->depth];
        if (!attach(b, n)) return false;
        /* registered only once complete, so an alias can never form a cycle */
        anchor_add(b, b->stack_anchor[b->depth], n);
        b->stack_anchor[b->depth] = NULL;
        return true;
    case YAML_ALIAS_EVENT:
        n = anchor_find(b, (const char *)ev->data.alias.anchor);
        if (!n) {
            diag_add(b->d, ev->start_mark.line + 1, ev->start_mark.column + 1,
                     "unknown alias '*%s'", ev->data.alias.anchor);
            return false;
        }
        return attach(b, n);
    case YAML_DOCUMENT_START_EVENT:
        if (b->doc->root) {
            diag_add(b->d, ev->start_mark.line + 1, ev->start_mark.column + 1,
                     "only one YAML document is allowed");
            return false;
        }
        return true;
    default: return true;
    }
}

bool yt_parse(struct yt_doc *doc, const char *buf, size_t len, struct diag *d)
{
    memset(doc, 0, sizeof(*doc));
    struct builder b = {.doc = doc, .d = d};
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
            const yaml_mark_t *m = p.problem ? &p.problem_mark : &p.context_mark;
            diag_add(d, m->line + 1, m->column + 1, "YAML syntax error: %s%s%s",
                     p.problem ? p.problem : "unknown", p.context ? " " : "",
                     p.context ? p.context : "");
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
    for (size_t i = 0; i < b.nanchors; i++) free(b.anchors[i].name);
    free(b.anchors);
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
