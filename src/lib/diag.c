#include "autoconf.h"

#include "lib/diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void diag_init(struct diag *d, const char *file)
{
    memset(d, 0, sizeof(*d));
    d->file = file;
}

void diag_free(struct diag *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].msg);
        free(d->items[i].file);
    }
    free(d->items);
    d->items = NULL;
    d->n = d->cap = d->dropped = 0;
    d->cur = NULL;
}

void diag_set_file(struct diag *d, const char *file)
{
    d->cur = file;
}

void diag_add(struct diag *d, unsigned line, unsigned col, const char *fmt, ...)
{
    if (d->n >= DIAG_MAX_ITEMS) {
        d->dropped++;
        return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct diag_item *it = realloc(d->items, cap * sizeof(*it));
        if (!it) return; /* out of memory: the error count is what matters */
        d->items = it;
        d->cap = cap;
    }
    struct diag_item *it = &d->items[d->n];
    it->msg = strdup(buf);
    if (!it->msg) return;
    it->file = NULL;
    if (d->cur && (!d->file || strcmp(d->cur, d->file) != 0) && !(it->file = strdup(d->cur))) {
        free(it->msg);
        return;
    }
    it->line = line;
    it->col = col;
    d->n++;
}

void diag_format(const struct diag *d, size_t i, char *buf, size_t len)
{
    const struct diag_item *it = &d->items[i];
    const char *file = it->file ? it->file : d->file;
    if (it->line)
        snprintf(buf, len, "%s:%u:%u: %s", file, it->line, it->col, it->msg);
    else
        snprintf(buf, len, "%s: %s", file, it->msg);
}

void diag_print(const struct diag *d, FILE *out)
{
    char buf[1024];
    for (size_t i = 0; i < d->n; i++) {
        diag_format(d, i, buf, sizeof(buf));
        fprintf(out, "%s\n", buf);
    }
    if (d->dropped)
        fprintf(out, "%s: %zu more error%s not shown\n", d->file, d->dropped,
                d->dropped == 1 ? "" : "s");
}
