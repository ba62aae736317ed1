/* Replays a fuzz corpus as a regression test, without libFuzzer: runs
 * LLVMFuzzerTestOneInput on every file of the corpus directory (or of the
 * directories and files given as arguments) and prints TAP. A crash or a
 * failed assertion ends the run, so the test fails. The default corpus is
 * $TOP_SRCDIR/tests/fuzz/corpus/NAME, NAME set at build time. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"name\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned ran;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %u - %s: cannot open\n", ++ran, path);
        return 1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) {
        printf("not ok %u - %s: out of memory\n", ++ran, path);
        return 1;
    }
    /* exactly len bytes, so a sanitizer sees any read past the input */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return 1;
    }
    memcpy(exact, buf, len);
    free(buf);
    fflush(stdout);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    printf("ok %u - %s\n", ++ran, path);
    return 0;
}

static int only_files(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("not ok %u - %s: not found\n", ++ran, path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) return run_file(path);
    struct dirent **list;
    int n = scandir(path, &list, only_files, alphasort);
    if (n < 0) {
        printf("not ok %u - %s: cannot list\n", ++ran, path);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char *p = malloc(strlen(path) + strlen(list[i]->d_name) + 2);
        if (p) {
            sprintf(p, "%s/%s", path, list[i]->d_name);
            bad |= run_file(p);
            free(p);
        }
        free(list[i]);
    }
    free(list);
    if (n == 0) printf("not ok %u - %s: empty corpus\n", ++ran, path), bad = 1;
    return bad;
}

int main(int argc, char **argv)
{
    int bad = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) bad |= run_path(argv[i]);
    } else {
        const char *top = getenv("TOP_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", top ? top : ".", FUZZ_NAME);
        bad |= run_path(dir);
    }
    printf("1..%u\n", ran);
    return bad;
}
