/* Reading configured files without ever blocking: see file.h. */
#include "autoconf.h"

#include "lib/file.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *file_type_name(mode_t mode)
{
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return NULL;
}

const char *file_why(const struct file_error *e, char *buf, size_t len)
{
    switch (e->kind) {
    case FILE_OK: snprintf(buf, len, "no error"); break;
    case FILE_EOPEN: snprintf(buf, len, "cannot open: %s", strerror(e->err)); break;
    case FILE_EREAD: snprintf(buf, len, "cannot read: %s", strerror(e->err)); break;
    case FILE_ENOTREG: {
        const char *type = file_type_name(e->mode);
        snprintf(buf, len, "is %s%snot a regular file", type ? type : "", type ? ", " : "");
        break;
    }
    case FILE_ETOOBIG: snprintf(buf, len, "is larger than %zu bytes", e->max); break;
    case FILE_ENOMEM: snprintf(buf, len, "out of memory"); break;
    }
    return buf;
}

const char *file_sep(const struct file_error *e)
{
    return e->kind == FILE_ENOTREG || e->kind == FILE_ETOOBIG ? " " : ": ";
}

static void set_err(struct file_error *e, enum file_err kind, int err)
{
    *e = (struct file_error){.kind = kind, .err = err};
}

int file_open(const char *path, struct file_error *e)
{
    struct stat st;
    /* by its type first: a device is never opened (opening one can have
     * effects of its own), a FIFO never waited on */
    if (stat(path, &st) != 0) {
        set_err(e, FILE_EOPEN, errno);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *e = (struct file_error){.kind = FILE_ENOTREG, .mode = st.st_mode};
        return -1;
    }
    int fd;
    while ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) < 0 && errno == EINTR)
        continue;
    if (fd < 0) {
        set_err(e, FILE_EOPEN, errno);
        return -1;
    }
    /* and again on what was opened: the name may have been replaced */
    if (fstat(fd, &st) != 0) {
        set_err(e, FILE_EREAD, errno);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *e = (struct file_error){.kind = FILE_ENOTREG, .mode = st.st_mode};
        close(fd);
        return -1;
    }
    set_err(e, FILE_OK, 0);
    return fd;
}

/* memset that the compiler may not drop */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--) *v++ = 0;
}

void file_free(char *buf, size_t len)
{
    if (!buf) return;
    wipe(buf, len + 1);
    free(buf);
}

char *file_read(const char *path, size_t max, size_t *len, struct file_error *e)
{
    *len = 0;
    int fd = file_open(path, e);
    if (fd < 0) return NULL;
    struct stat st;
    size_t cap = fstat(fd, &st) == 0 && st.st_size >= 0 ? (size_t)st.st_size : 0;
    /* one byte more than allowed: a file that grew is still caught */
    if (cap > max) cap = max;
    cap += 1;
    char *buf = malloc(cap + 1);
    size_t n = 0;
    while (buf) {
        if (n == cap) {
            if (n > max) break;
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = malloc(ncap + 1);
            if (nb) memcpy(nb, buf, n);
            file_free(buf, cap);
            buf = nb;
            cap = ncap;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int err = errno;
            close(fd);
            file_free(buf, cap);
            set_err(e, FILE_EREAD, err);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) {
        set_err(e, FILE_ENOMEM, ENOMEM);
        return NULL;
    }
    if (n > max) {
        file_free(buf, cap);
        *e = (struct file_error){.kind = FILE_ETOOBIG, .max = max};
        *len = max + 1;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

bool file_load_verify(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
    struct file_error fe;
    size_t len;
    char *buf = file_read(path, FILE_MAX_PEM_BYTES, &len, &fe);
    if (!buf) {
        file_why(&fe, err, errlen);
        return false;
    }
    BIO *b = BIO_new_mem_buf(buf, (int)len);
    STACK_OF(X509_INFO) *infos = b ? PEM_X509_INFO_read_bio(b, NULL, NULL, NULL) : NULL;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int added = 0;
    for (int i = 0; infos && store && i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *in = sk_X509_INFO_value(infos, i);
        if (in->x509 && X509_STORE_add_cert(store, in->x509) == 1) added++;
        if (in->crl && X509_STORE_add_crl(store, in->crl) == 1) added++;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(b);
    file_free(buf, len);
    ERR_clear_error();
    if (!added) snprintf(err, errlen, "holds no PEM certificate");
    return added > 0;
}
