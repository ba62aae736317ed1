/* Positioned error lists: every config problem is reported as
 * FILE:LINE:COL: message, all of them in one pass. A list may span files
 * (a config and the files it includes): each item keeps its own. */
#ifndef DETOURD_DIAG_H
#define DETOURD_DIAG_H

#include <stddef.h>
#include <stdio.h>

struct diag_item {
    char *file;         /* owned; NULL: the list's file */
    unsigned line, col; /* 1-based; 0 = no position */
    char *msg;
};

struct diag {
    const char *file; /* borrowed */
    const char *cur;  /* the file items are added for now (borrowed); NULL: file */
    struct diag_item *items;
    size_t n, cap;
    size_t dropped; /* errors past DIAG_MAX_ITEMS: counted, not kept */
};

/* One mistake in an anchored part is repeated at every alias of it: past
 * this many, errors are only counted. */
#define DIAG_MAX_ITEMS 100

void diag_init(struct diag *d, const char *file);
void diag_free(struct diag *d);
void diag_add(struct diag *d, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Writes "FILE:LINE:COL: message\n" for each item. */
/* Items added from now on are in file (copied into each; file is borrowed
 * until the next call). NULL: back to the list's own file. */
void diag_set_file(struct diag *d, const char *file);
void diag_print(const struct diag *d, FILE *out);
/* The i-th item formatted into buf (for logging). */
void diag_format(const struct diag *d, size_t i, char *buf, size_t len);

#endif
