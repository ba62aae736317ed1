/* systemd integration over libsystemd's sd-daemon: this module owns the
 * watchdog timer, the notify messages, and the listening sockets passed by
 * socket activation until a caller takes them (or sdnotify_unused_fds
 * closes them). Without HAVE_SYSTEMD every function is a stub. */
#include "autoconf.h"

#include "control/sdnotify.h"

#include <stdarg.h>

#ifdef HAVE_SYSTEMD

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL
#define STATUS_MAX    512

static struct event *watchdog_ev;

/* socket activation */
static int nfds = -1;   /* inherited fds (SD_LISTEN_FDS_START..); -1: not looked yet */
static bool *taken;     /* per inherited fd: handed out or closed */
static bool fds_closed; /* sdnotify_unused_fds ran: hand out nothing more */

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1");
}

void sdnotify_init(struct event_base *base)
{
    uint64_t usec = 0;
    if (watchdog_ev || sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    /* ping at half the deadline, as sd_watchdog_enabled(3) recommends */
    uint64_t half = usec / 2;
    if (half < USEC_PER_MSEC) half = USEC_PER_MSEC;
    struct timeval tv = {.tv_sec = (time_t)(half / USEC_PER_SEC),
                         .tv_usec = (suseconds_t)(half % USEC_PER_SEC)};
    watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
    if (!watchdog_ev || event_add(watchdog_ev, &tv) < 0) {
        log_error("systemd watchdog: cannot start the timer");
        if (watchdog_ev) event_free(watchdog_ev);
        watchdog_ev = NULL;
        return;
    }
    sd_notify(0, "WATCHDOG=1");
    log_debug("systemd watchdog: WatchdogSec=%llums, pinging every %llums",
              (unsigned long long)(usec / USEC_PER_MSEC),
              (unsigned long long)(half / USEC_PER_MSEC));
}

void sdnotify_ready(void)
{
    sd_notifyf(0, "READY=1\nMAINPID=%lu", (unsigned long)getpid());
}

void sdnotify_reloading(void)
{
    /* MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match this
     * message to the reload it asked for; older versions ignore it. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long now =
        (unsigned long long)ts.tv_sec * USEC_PER_SEC + (unsigned long long)ts.tv_nsec / 1000;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", now);
}

void sdnotify_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}

void sdnotify_status(const char *fmt, ...)
{
    char buf[STATUS_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    /* one message is KEY=VALUE lines: a newline would start a new key */
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    sd_notifyf(0, "STATUS=%s", buf);
}

void sdnotify_free(void)
{
    if (watchdog_ev) event_free(watchdog_ev);
    watchdog_ev = NULL;
    free(taken);
    taken = NULL;
    nfds = 0;
    fds_closed = true;
}

/* ---- socket activation ---- */

static void look_for_fds(void)
{
    if (nfds >= 0) return;
    /* unset LISTEN_* so nothing we might start inherits them */
    int n = sd_listen_fds(1);
    nfds = n > 0 ? n : 0;
    if (nfds == 0) return;
    taken = calloc((size_t)nfds, sizeof(*taken));
    if (!taken) {
        log_error("socket activation: out of memory; ignoring %d passed sockets", nfds);
        nfds = 0;
    }
}

/* "127.0.0.1:80", "[::]:80", or a description of a socket that is not one */
static void fd_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, outlen, "fd %d (not a socket)", fd);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%u", host, ntohs(sin6->sin6_port));
    } else {
        snprintf(out, outlen, "fd %d (address family %d)", fd, (int)ss.ss_family);
    }
}

/* Same family, address and port (and IPv6 scope). No wildcard matching: a
 * passed 0.0.0.0:80 is not 127.0.0.1:80, and binding both would clash. */
static bool same_addr(const struct sockaddr *want, socklen_t wantlen,
                      const struct sockaddr_storage *got, socklen_t gotlen)
{
    if (want->sa_family != got->ss_family) return false;
    if (want->sa_family == AF_INET) {
        if (wantlen < sizeof(struct sockaddr_in) || gotlen < sizeof(struct sockaddr_in))
            return false;
        const struct sockaddr_in *a = (const struct sockaddr_in *)want;
        const struct sockaddr_in *b = (const struct sockaddr_in *)got;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (want->sa_family == AF_INET6) {
        if (wantlen < sizeof(struct sockaddr_in6) || gotlen < sizeof(struct sockaddr_in6))
            return false;
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)want;
        const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)got;
        return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    return false;
}

int sdnotify_listen_fd(const struct sockaddr *sa, socklen_t len)
{
    look_for_fds();
    if (fds_closed || !sa) return -1;
    for (int i = 0; i < nfds; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        if (taken[i] || sd_is_socket(fd, sa->sa_family, SOCK_STREAM, 1) <= 0) continue;
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) continue;
        if (!same_addr(sa, len, &ss, sslen)) continue;
        char name[80];
        fd_name(fd, name, sizeof(name));
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            log_error("socket activation: %s: fcntl failed; binding it ourselves", name);
            continue;
        }
        if (sa->sa_family == AF_INET6) {
            int v6only = 0;
            socklen_t olen = sizeof(v6only);
            if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen) == 0 && !v6only)
                log_warn("socket activation: %s is not v6-only, so it takes IPv4 connections "
                         "too (set BindIPv6Only=ipv6-only in the .socket unit)",
                         name);
        }
        taken[i] = true;
        log_debug("socket activation: using the passed socket %s (fd %d)", name, fd);
        return fd;
    }
    return -1;
}

int sdnotify_unused_fds(void)
{
    look_for_fds();
    int closed = 0;
    if (!fds_closed) {
        for (int i = 0; i < nfds; i++) {
            if (taken[i]) continue;
            int fd = SD_LISTEN_FDS_START + i;
            char name[80];
            fd_name(fd, name, sizeof(name));
            log_warn("socket activation: passed socket %s matches no listen: entry; closing it",
                     name);
            close(fd);
            taken[i] = true;
            closed++;
        }
    }
    fds_closed = true;
    free(taken);
    taken = NULL;
    nfds = 0;
    return closed;
}

#else /* !HAVE_SYSTEMD */

void sdnotify_init(struct event_base *base)
{
    (void)base;
}

void sdnotify_free(void) {}

void sdnotify_ready(void) {}

void sdnotify_reloading(void) {}

void sdnotify_stopping(void) {}

void sdnotify_status(const char *fmt, ...)
{
    (void)fmt;
}

int sdnotify_listen_fd(const struct sockaddr *sa, socklen_t len)
{
    (void)sa;
    (void)len;
    return -1;
}

int sdnotify_unused_fds(void)
{
    return 0;
}

#endif
