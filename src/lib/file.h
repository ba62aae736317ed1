/* Reading the files detourd is configured with: the config and its
 * includes, certificates, keys, ticket keys, CA files, the state file.
 * Each must be a regular file (or a symlink to one). Anything else (a
 * FIFO, a device, a socket, a directory) is refused by its type before it
 * is opened, and opening never blocks (O_NONBLOCK, O_NOCTTY), so a FIFO
 * without a writer or a terminal can never stall a load; what is read is
 * bounded. */
#ifndef DETOURD_FILE_H
#define DETOURD_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/types.h>
#include <sys/types.h>

enum file_err {
    FILE_OK,
    FILE_EOPEN,   /* it cannot be opened (or stat'ed): errno in err */
    FILE_EREAD,   /* reading failed: errno in err */
    FILE_ENOTREG, /* not a regular file: its type in mode */
    FILE_ETOOBIG, /* more bytes than allowed: max in max */
    FILE_ENOMEM,
};

struct file_error {
    enum file_err kind;
    int err;     /* FILE_EOPEN, FILE_EREAD */
    mode_t mode; /* FILE_ENOTREG */
    size_t max;  /* FILE_ETOOBIG */
};

/* What a file of type mode is, for a message: "a FIFO", "a directory",
 * "a character device", "a block device", "a socket"; NULL for another. */
const char *file_type_name(mode_t mode);
/* Why e happened, in words that follow the file's name: "cannot open: No
 * such file or directory", "cannot read: ...", "is a FIFO, not a regular
 * file", "is larger than 16777216 bytes", "out of memory". */
const char *file_why(const struct file_error *e, char *buf, size_t len);
/* The separator between a file's name and file_why(): ": " after an errno
 * reason ("x.pem: cannot open: ..."), " " before one that is a predicate
 * ("x.pem is a FIFO, not a regular file"). */
const char *file_sep(const struct file_error *e);

/* path opened read-only, close-on-exec, without blocking; a regular file
 * or -1 with *e set. */
int file_open(const char *path, struct file_error *e);

/* All of path, at most max bytes, in a malloc'd buffer (a NUL after the
 * last byte, not counted in *len); NULL with *e set. Past max, *len is
 * max + 1 ("max + 1 or more bytes"). Buffers are wiped when they grow:
 * file_free() wipes the last one, for secrets (keys). */
char *file_read(const char *path, size_t max, size_t *len, struct file_error *e);
/* Wipes buf's len bytes (and its NUL), then frees it. */
void file_free(char *buf, size_t len);

/* The PEM certificates (and CRLs) of path added to ctx's trust store, read
 * as above (what SSL_CTX_load_verify_locations does, without ever
 * blocking on the file). False with the reason in err (file_why() words,
 * or "holds no PEM certificate") when it cannot be read or holds none. */
#define FILE_MAX_PEM_BYTES (16u << 20)
bool file_load_verify(SSL_CTX *ctx, const char *path, char *err, size_t errlen);

#endif
