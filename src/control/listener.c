#include "autoconf.h"

#include "control/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "control/sdnotify.h"
#include "serve/tls.h"

int listener_open(const struct listen_addr *a, bool reuseport, char *err, size_t errlen)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", a->text, strerror(errno));
        return -1;
    }
    int one = 1;
    const char *what = NULL;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        what = "SO_REUSEADDR";
    else if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        what = "SO_REUSEPORT";
    else if (a->ss.ss_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        what = "IPV6_V6ONLY";
    else if (bind(fd, (const struct sockaddr *)&a->ss, a->sslen) < 0)
        what = "bind";
    else if (listen(fd, LISTEN_BACKLOG) < 0)
        what = "listen";
    if (what) {
        snprintf(err, errlen, "listen %s: %s: %s", a->text, what, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void listener_defer_accept(int fd, unsigned seconds)
{
    int s = seconds ? (int)seconds : 1;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &s, sizeof(s)); /* an optimisation only */
}

/* ---- sets, and their diff on reload ---- */

static void close_listener(struct listener *l, unsigned nfds)
{
    if (!l->fds) return;
    for (unsigned i = 0; i < nfds; i++) {
        if (l->fds[i] < 0) continue;
        if (!l->shared || i == 0) close(l->fds[i]);
    }
    free(l->fds);
    l->fds = NULL;
}

static bool open_listener(struct listener *l, unsigned nfds, uint64_t defer_ms, char *err,
                          size_t errlen)
{
    unsigned defer_s = (unsigned)((defer_ms + 999) / 1000);
    l->fds = malloc(nfds * sizeof(int));
    if (!l->fds) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    for (unsigned i = 0; i < nfds; i++) l->fds[i] = -1;
    int pfd = sdnotify_listen_fd((const struct sockaddr *)&l->addr.ss, l->addr.sslen);
    if (pfd >= 0) {
        l->shared = l->inherited = true;
        listener_defer_accept(pfd, defer_s);
        for (unsigned i = 0; i < nfds; i++) l->fds[i] = pfd;
        return true;
    }
    for (unsigned i = 0; i < nfds; i++) {
        l->fds[i] = listener_open(&l->addr, nfds > 1, err, errlen);
        if (l->fds[i] < 0) {
            close_listener(l, nfds);
            return false;
        }
        listener_defer_accept(l->fds[i], defer_s);
    }
    return true;
}

static const struct listener *find_listener(const struct listener_set *set, const char *text)
{
    for (size_t i = 0; set && i < set->n; i++)
        if (strcmp(set->l[i].addr.text, text) == 0) return &set->l[i];
    return NULL;
}

void listener_set_discard(struct listener_set *set, const struct listener_set *old)
{
    for (size_t i = 0; i < set->n; i++) {
        tls_srv_unref(set->l[i].tls);
        if (find_listener(old, set->l[i].addr.text))
            free(set->l[i].fds);
        else
            close_listener(&set->l[i], set->nfds);
    }
    free(set->l);
    free(set);
}

struct listener_set *listener_set_build(const struct config *cfg, const struct listener_set *old,
                                        unsigned nfds, char *err, size_t errlen)
{
    struct listener_set *set = calloc(1, sizeof(*set));
    if (set) set->l = calloc(cfg->nlisten ? cfg->nlisten : 1, sizeof(*set->l));
    if (!set || !set->l) {
        free(set);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    set->nfds = nfds;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        struct listener *l = &set->l[set->n];
        const struct listener *was = find_listener(old, cfg->listen[i].text);
        l->addr = cfg->listen[i];
        if (was) {
            l->shared = was->shared;
            l->inherited = was->inherited;
            l->fds = malloc(nfds * sizeof(int));
            if (l->fds) memcpy(l->fds, was->fds, nfds * sizeof(int));
        } else if (!open_listener(l, nfds, cfg->limits.header_timeout_ms, err, errlen)) {
            goto fail;
        }
        if (!l->fds) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        /* a kept address serves the new config's certificates */
        l->tls = tls_srv_ref(cfg->listen_tls ? cfg->listen_tls[i] : NULL);
        set->n++;
    }
    return set;
fail:
    listener_set_discard(set, old);
    return NULL;
}

void listener_set_log_added(const struct listener_set *set, const struct listener_set *old)
{
    for (size_t i = 0; i < set->n; i++)
        if (!find_listener(old, set->l[i].addr.text))
            log_info("listening on %s", set->l[i].addr.text);
}

struct listener_fds *listener_set_removed(const struct listener_set *old,
                                          const struct listener_set *set)
{
    struct listener_fds *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->fds = calloc(old ? old->n * old->nfds + 1 : 1, sizeof(int));
    if (!b->fds) {
        free(b);
        return NULL;
    }
    for (size_t i = 0; old && i < old->n; i++) {
        if (set && find_listener(set, old->l[i].addr.text)) continue;
        log_info("closing listener %s", old->l[i].addr.text);
        for (unsigned k = 0; k < old->nfds; k++)
            if (!old->l[i].shared || k == 0) b->fds[b->n++] = old->l[i].fds[k];
    }
    return b;
}

void listener_fds_close(void *p)
{
    struct listener_fds *b = p;
    for (size_t i = 0; i < b->n; i++) close(b->fds[i]);
    free(b->fds);
    free(b);
}

void listener_set_free(void *p)
{
    struct listener_set *set = p;
    for (size_t i = 0; i < set->n; i++) {
        tls_srv_unref(set->l[i].tls);
        free(set->l[i].fds);
    }
    free(set->l);
    free(set);
}

void listener_set_close(struct listener_set *set)
{
    if (!set) return;
    for (size_t i = 0; i < set->n; i++) close_listener(&set->l[i], set->nfds);
    listener_set_free(set);
}
