/* lib/file: only regular files are read, nothing ever blocks on opening
 * or reading one, and what is read is bounded. */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/file.h"
#include "unit.h"

static char dir[PATH_MAX];

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/detourd-file-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static const char *at(const char *name)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

static void write_file(const char *name, const char *text, size_t len)
{
    FILE *f = fopen(at(name), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static void teardown(void)
{
    static const char *const names[] = {"f",   "fifo", "to-fifo", "to-f",    "big",
                                        "pem", "sub",  "empty",   "missing", NULL};
    for (const char *const *n = names; *n; n++)
        if (unlink(at(*n)) != 0) rmdir(at(*n));
    ck_assert_int_eq(rmdir(dir), 0);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

START_TEST(regular_file)
{
    write_file("f", "hello\n", 6);
    struct file_error e;
    size_t len;
    char *buf = file_read(at("f"), 100, &len, &e);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(e.kind, FILE_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(buf, "hello\n"); /* NUL-terminated */
    file_free(buf, len);
    /* through a symlink */
    ck_assert_int_eq(symlink("f", at("to-f")), 0);
    buf = file_read(at("to-f"), 100, &len, &e);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, 6);
    file_free(buf, len);
    /* empty */
    write_file("empty", "", 0);
    buf = file_read(at("empty"), 100, &len, &e);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, 0);
    file_free(buf, len);
    int fd = file_open(at("f"), &e);
    ck_assert_int_ge(fd, 0);
    ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
}
END_TEST

/* A FIFO without a writer: refused at once, by its type, directly or
 * through a symlink (an open would block forever without O_NONBLOCK, and
 * a read would wait for a writer). */
START_TEST(fifo)
{
    ck_assert_int_eq(mkfifo(at("fifo"), 0600), 0);
    ck_assert_int_eq(symlink("fifo", at("to-fifo")), 0);
    const char *names[] = {"fifo", "to-fifo"};
    for (int i = 0; i < 2; i++) {
        struct file_error e;
        size_t len;
        double t0 = now_s();
        ck_assert_ptr_null(file_read(at(names[i]), 100, &len, &e));
        ck_assert_int_eq(e.kind, FILE_ENOTREG);
        ck_assert_int_lt(file_open(at(names[i]), &e), 0);
        ck_assert_int_eq(e.kind, FILE_ENOTREG);
        ck_assert_msg(now_s() - t0 < 2, "took %.1f s", now_s() - t0);
        char why[128];
        ck_assert_str_eq(file_why(&e, why, sizeof(why)), "is a FIFO, not a regular file");
        ck_assert_str_eq(file_sep(&e), " ");
    }
}
END_TEST

START_TEST(directory)
{
    ck_assert_int_eq(mkdir(at("sub"), 0700), 0);
    struct file_error e;
    size_t len;
    ck_assert_ptr_null(file_read(at("sub"), 100, &len, &e));
    ck_assert_int_eq(e.kind, FILE_ENOTREG);
    char why[128];
    ck_assert_str_eq(file_why(&e, why, sizeof(why)), "is a directory, not a regular file");
}
END_TEST

START_TEST(device)
{
    struct file_error e;
    size_t len;
    ck_assert_ptr_null(file_read("/dev/null", 100, &len, &e));
    ck_assert_int_eq(e.kind, FILE_ENOTREG);
    char why[128];
    ck_assert_str_eq(file_why(&e, why, sizeof(why)), "is a character device, not a regular file");
    /* one that would never end if it were read */
    ck_assert_ptr_null(file_read("/dev/zero", 100, &len, &e));
    ck_assert_int_eq(e.kind, FILE_ENOTREG);
}
END_TEST

START_TEST(missing)
{
    struct file_error e;
    size_t len;
    ck_assert_ptr_null(file_read(at("missing"), 100, &len, &e));
    ck_assert_int_eq(e.kind, FILE_EOPEN);
    ck_assert_int_eq(e.err, ENOENT);
    char why[128];
    ck_assert_str_eq(file_why(&e, why, sizeof(why)), "cannot open: No such file or directory");
    ck_assert_str_eq(file_sep(&e), ": ");
}
END_TEST

/* Exactly the limit is read; one byte more is refused, and says how many
 * bytes at least ("max + 1 or more"). */
START_TEST(size_limit)
{
    char text[4096];
    memset(text, 'x', sizeof(text));
    write_file("big", text, 1000);
    struct file_error e;
    size_t len;
    char *buf = file_read(at("big"), 1000, &len, &e);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, 1000);
    file_free(buf, len);
    ck_assert_ptr_null(file_read(at("big"), 999, &len, &e));
    ck_assert_int_eq(e.kind, FILE_ETOOBIG);
    ck_assert_uint_eq(len, 1000);
    char why[128];
    ck_assert_str_eq(file_why(&e, why, sizeof(why)), "is larger than 999 bytes");
    /* a file larger than its first buffer still reads whole */
    write_file("big", text, sizeof(text));
    buf = file_read(at("big"), 1 << 20, &len, &e);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, sizeof(text));
    file_free(buf, len);
    ck_assert_ptr_null(file_read(at("big"), 0, &len, &e));
    ck_assert_int_eq(e.kind, FILE_ETOOBIG);
}
END_TEST

/* CA certificates: a FIFO, a file without a certificate, a missing file
 * are errors with a reason; nothing blocks. */
START_TEST(load_verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(ctx);
    char err[256];
    ck_assert_int_eq(mkfifo(at("fifo"), 0600), 0);
    ck_assert(!file_load_verify(ctx, at("fifo"), err, sizeof(err)));
    ck_assert_str_eq(err, "is a FIFO, not a regular file");
    write_file("pem", "not a certificate\n", 18);
    ck_assert(!file_load_verify(ctx, at("pem"), err, sizeof(err)));
    ck_assert_str_eq(err, "holds no PEM certificate");
    ck_assert(!file_load_verify(ctx, at("missing"), err, sizeof(err)));
    ck_assert_str_eq(err, "cannot open: No such file or directory");
    SSL_CTX_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("file");
    TCase *tc = tcase_create("read");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, regular_file);
    tcase_add_test(tc, fifo);
    tcase_add_test(tc, directory);
    tcase_add_test(tc, device);
    tcase_add_test(tc, missing);
    tcase_add_test(tc, size_limit);
    tcase_add_test(tc, load_verify);
    suite_add_tcase(s, tc);
    return s;
}
