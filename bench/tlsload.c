/* tlsload — a TLS handshake load generator for bench/run: every request on
 * a new connection, with a full TLS handshake (-m full) or a resumed one
 * (-m resumed, with the session ticket the server sent last). One thread,
 * non-blocking sockets on epoll, N connections in flight.
 *
 *   tlsload -m full|resumed [-c CONNS] [-d SECONDS] [-T TIMEOUT_S]
 *           [-s SNI] [-p PATH] [-1] HOST PORT
 *
 * Each request: connect, handshake, "GET PATH HTTP/1.1" with
 * "Connection: close", read the answer until the server closes, close.
 * At the end it prints a summary and one machine-readable line in the same
 * form as bench/run's wrk hook:
 *   BENCH requests=.. duration_us=.. bytes=.. connect=.. read=.. write=..
 *         status=.. timeout=.. p50_us=.. p99_us=..
 * and one line about the handshakes:
 *   TLS full=.. resumed=.. other_protocol=.. client_cpu_us=..
 * With -1 it makes one request, prints the protocol, cipher, whether it
 * resumed and the answer's head (after a first connection for a ticket
 * with -m resumed), and exits 0 when the answer is complete.
 *
 * Certificates are not verified (as wrk does not): the point is the
 * server's cost, and the client's signature check of the handshake runs
 * anyway.
 *
 * Build: cc -O2 -o tlsload tlsload.c -lssl -lcrypto */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { P_CONNECT, P_HANDSHAKE, P_WRITE, P_READ };

struct conn {
    int fd;
    SSL *ssl;
    enum phase phase;
    int64_t start_us;
    size_t sent;
    size_t got;   /* bytes of the answer kept in head[] */
    size_t total; /* plaintext bytes read */
    char head[2048];
};

static const char *opt_host = "127.0.0.1";
static int opt_port;
static int opt_conns = 16;
static int opt_secs = 10;
static int opt_timeout_s = 5;
static int opt_resume;
static int opt_once;
static const char *opt_sni = "bench.example";
static const char *opt_path = "/";

static SSL_CTX *ctx;
static SSL_SESSION *last_session; /* the newest ticket the server sent */
static struct sockaddr_in addr;
static int epfd;
static char request[1024];
static size_t request_len;

static uint64_t n_requests, n_bytes, n_full, n_resumed, n_other_proto;
static uint64_t e_connect, e_read, e_write, e_status, e_timeout;
static uint32_t *lat;
static size_t lat_n, lat_cap;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "tlsload: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (last_session) SSL_SESSION_free(last_session);
    last_session = sess;
    return 1; /* we keep the reference */
}

static void record_latency(int64_t us)
{
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? 2 * lat_cap : 65536;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) die("realloc");
    }
    lat[lat_n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void conn_close(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* close() also removes it from epoll */
        c->fd = -1;
    }
}

static int conn_start(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->start_us = now_us();
    c->sent = c->got = c->total = 0;
    c->phase = P_CONNECT;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        e_connect++;
        conn_close(c);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) die("SSL_new");
    SSL_set_tlsext_host_name(c->ssl, opt_sni);
    if (opt_resume && last_session) {
        /* a copy: a TLS 1.3 client marks the session it resumed with as
         * used up, and a server need not send a new ticket (HAProxy does
         * not), so the next connection would get a full handshake */
        SSL_SESSION *copy = SSL_SESSION_dup(last_session);
        if (!copy || !SSL_set_session(c->ssl, copy)) die("SSL_set_session");
        SSL_SESSION_free(copy);
    }
    SSL_set_connect_state(c->ssl);
    return 0;
}

/* The status code of a complete head in c->head, or 0 while incomplete. */
static int answer_status(const struct conn *c)
{
    if (c->got < 12 || !memmem(c->head, c->got, "\r\n\r\n", 4)) return 0;
    if (memcmp(c->head, "HTTP/1.", 7) != 0) return -1;
    return atoi(c->head + 9);
}

/* Drives a connection until it waits for the socket (0) or is done (1, the
 * answer is complete and the server closed; -1, an error, counted). */
static int conn_step(struct conn *c)
{
    int r;
    if (c->phase == P_CONNECT) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            e_connect++;
            return -1;
        }
        c->phase = P_HANDSHAKE;
    }
    if (c->phase == P_HANDSHAKE) {
        r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
            if (opt_once) ERR_print_errors_fp(stderr);
            e_connect++;
            return -1;
        }
        if (SSL_session_reused(c->ssl))
            n_resumed++;
        else
            n_full++;
        if (SSL_version(c->ssl) != TLS1_3_VERSION) n_other_proto++;
        c->phase = P_WRITE;
    }
    if (c->phase == P_WRITE) {
        r = SSL_write(c->ssl, request + c->sent, (int)(request_len - c->sent));
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
            e_write++;
            return -1;
        }
        c->sent += (size_t)r;
        if (c->sent < request_len) return 0;
        c->phase = P_READ;
    }
    for (;;) {
        char buf[16384];
        r = SSL_read(c->ssl, buf, sizeof buf);
        if (r > 0) {
            size_t room = sizeof c->head - 1 - c->got;
            size_t n = (size_t)r < room ? (size_t)r : room;
            memcpy(c->head + c->got, buf, n);
            c->got += n;
            c->head[c->got] = 0;
            c->total += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        /* close_notify, or a close without it (both end the answer) */
        int st = answer_status(c);
        if (e != SSL_ERROR_ZERO_RETURN && e != SSL_ERROR_SYSCALL && e != SSL_ERROR_SSL) st = 0;
        if (st == 0) {
            e_read++;
            return -1;
        }
        if (st < 200 || st > 399) e_status++;
        /* a clean end: without this, SSL_free marks the connection's
         * session (the newest ticket) not resumable */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        return 1;
    }
}

static void print_once(struct conn *c)
{
    const char *group = SSL_group_to_name(c->ssl, (int)SSL_get_negotiated_group(c->ssl));
    printf("protocol %s, cipher %s, %s handshake, group %s\n", SSL_get_version(c->ssl),
           SSL_get_cipher_name(c->ssl), SSL_session_reused(c->ssl) ? "resumed" : "full",
           group ? group : "(none)");
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    printf("alpn %.*s\n", (int)alpn_len, alpn_len ? (const char *)alpn : "(none)");
    char *end = strstr(c->head, "\r\n\r\n");
    if (end) end[2] = 0;
    fputs(c->head, stdout);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t percentile(double p)
{
    if (!lat_n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)lat_n);
    return lat[i < lat_n ? i : lat_n - 1];
}

static void usage(void)
{
    fputs("usage: tlsload -m full|resumed [-c CONNS] [-d SECONDS] [-T TIMEOUT_S] [-s SNI] "
          "[-p PATH] [-1] HOST PORT\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    int opt;
    const char *mode = NULL;
    while ((opt = getopt(argc, argv, "m:c:d:T:s:p:1")) != -1) {
        switch (opt) {
        case 'm': mode = optarg; break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'd': opt_secs = atoi(optarg); break;
        case 'T': opt_timeout_s = atoi(optarg); break;
        case 's': opt_sni = optarg; break;
        case 'p': opt_path = optarg; break;
        case '1': opt_once = 1; break;
        default: usage();
        }
    }
    if (!mode || optind + 2 != argc || opt_conns < 1 || opt_secs < 1 || opt_timeout_s < 1) usage();
    if (!strcmp(mode, "resumed"))
        opt_resume = 1;
    else if (strcmp(mode, "full") != 0)
        usage();
    opt_host = argv[optind];
    opt_port = atoi(argv[optind + 1]);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &addr.sin_addr) != 1) {
        fprintf(stderr, "tlsload: %s is not an IPv4 address\n", opt_host);
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                                   opt_path, opt_sni);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    int nconns = opt_once ? 1 : opt_conns;
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;

    /* A resumed run first makes one full handshake for a ticket. */
    int priming = opt_resume;
    int64_t t0 = now_us();
    int64_t end = t0 + (int64_t)opt_secs * 1000000;
    int64_t timeout_us = (int64_t)opt_timeout_s * 1000000;
    int64_t started = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = now_us();
        if (!opt_once && now >= end && !priming) break;
        if (priming && now - t0 > 2 * timeout_us) {
            fprintf(stderr, "tlsload: no session ticket from the server within %d s\n",
                    2 * opt_timeout_s);
            return 1;
        }
        if (opt_once && now - t0 > timeout_us) {
            fprintf(stderr, "tlsload: no answer within %d s\n", opt_timeout_s);
            return 1;
        }
        int active = 0;
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->fd >= 0 && now - c->start_us > timeout_us) {
                e_timeout++;
                conn_close(c);
            }
            if (c->fd < 0 && !(priming && i > 0) && !(opt_once && started > (opt_resume ? 1 : 0)))
                if (conn_start(c) == 0) started++;
            active += c->fd >= 0;
        }
        if (opt_once && !active) break;
        int n = epoll_wait(epfd, evs, 256, 50);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            int r = conn_step(c);
            if (r == 0) continue;
            if (r > 0) {
                if (priming) {
                    /* the ticket is in; the measured run starts now */
                    priming = 0;
                    t0 = now_us();
                    end = t0 + (int64_t)opt_secs * 1000000;
                    n_full = n_resumed = 0;
                    getrusage(RUSAGE_SELF, &ru0);
                    if (opt_once) started = 1;
                } else {
                    n_requests++;
                    n_bytes += c->total;
                    record_latency(now_us() - c->start_us);
                    if (opt_once) print_once(c);
                }
            }
            conn_close(c);
            if (opt_once && r < 0) {
                fprintf(
                    stderr,
                    "tlsload: the request failed (connect/handshake %llu, read %llu, write %llu)\n",
                    (unsigned long long)e_connect, (unsigned long long)e_read,
                    (unsigned long long)e_write);
                return 1;
            }
        }
    }
    int64_t duration = now_us() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    for (int i = 0; i < nconns; i++) conn_close(&conns[i]);
    if (opt_once) return n_requests == 1 && !e_status ? 0 : 1;

    qsort(lat, lat_n, sizeof *lat, cmp_u32);
    double cpu_us = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                             ru0.ru_stime.tv_sec) *
                        1e6 +
                    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                             ru0.ru_stime.tv_usec);
    printf("%s handshakes, %d connections, %.1f s: %llu requests, %.0f req/s, p50 %.3f ms, "
           "p99 %.3f ms; full %llu, resumed %llu; errors: connect/handshake %llu, read %llu, "
           "write %llu, status %llu, timeout %llu; client CPU %.0f%%\n",
           mode, nconns, (double)duration / 1e6, (unsigned long long)n_requests,
           (double)n_requests * 1e6 / (double)duration, percentile(50) / 1000.0,
           percentile(99) / 1000.0, (unsigned long long)n_full, (unsigned long long)n_resumed,
           (unsigned long long)e_connect, (unsigned long long)e_read, (unsigned long long)e_write,
           (unsigned long long)e_status, (unsigned long long)e_timeout,
           cpu_us * 100 / (double)duration);
    printf("BENCH requests=%llu duration_us=%lld bytes=%llu connect=%llu read=%llu write=%llu "
           "status=%llu timeout=%llu p50_us=%u p99_us=%u\n",
           (unsigned long long)n_requests, (long long)duration, (unsigned long long)n_bytes,
           (unsigned long long)e_connect, (unsigned long long)e_read, (unsigned long long)e_write,
           (unsigned long long)e_status, (unsigned long long)e_timeout, percentile(50),
           percentile(99));
    printf("TLS full=%llu resumed=%llu other_protocol=%llu client_cpu_us=%.0f\n",
           (unsigned long long)n_full, (unsigned long long)n_resumed,
           (unsigned long long)n_other_proto, cpu_us);
    return 0;
}
