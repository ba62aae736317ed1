#include "autoconf.h"

#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
