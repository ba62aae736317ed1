/* systemd integration: the notify protocol (READY, RELOADING, STOPPING,
 * STATUS, the watchdog timer) and the listening sockets passed by socket
 * activation. This module owns the watchdog timer and the inherited fds
 * until a caller takes one; nothing else in detourd talks to libsystemd.
 * Built without libsystemd (or run outside systemd: no NOTIFY_SOCKET, no
 * LISTEN_FDS) every call is a no-op: notifications do nothing,
 * sdnotify_listen_fd returns -1, sdnotify_unused_fds returns 0. */
#ifndef DETOURD_SDNOTIFY_H
#define DETOURD_SDNOTIFY_H

#include <sys/socket.h>

struct event_base;

/* Starts a timer on base that sends WATCHDOG=1 every WatchdogSec/2, if the
 * service manager asked for a watchdog; otherwise does nothing. */
void sdnotify_init(struct event_base *base);
/* Stops and frees the watchdog timer (call before freeing the base). */
void sdnotify_free(void);

/* READY=1 with MAINPID: once listening, and again after a reload. */
void sdnotify_ready(void);
/* RELOADING=1 with MONOTONIC_USEC: a reload starts; sdnotify_ready() ends it
 * (also on a failed reload, where the old config keeps running). */
void sdnotify_reloading(void);
/* STOPPING=1: a graceful stop starts. */
void sdnotify_stopping(void);
/* STATUS=... (one line; newlines become spaces), shown by systemctl status. */
void sdnotify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Socket activation. Returns the inherited listening stream socket bound to
 * exactly sa (family, address and port; a wildcard matches only a wildcard),
 * non-blocking and close-on-exec, and marks it taken; -1 if there is none.
 * Call it for each listen address before binding one yourself. */
int sdnotify_listen_fd(const struct sockaddr *sa, socklen_t len);
/* Closes the inherited sockets no sdnotify_listen_fd call took, logging each
 * one's address as a warning, and returns how many. After it,
 * sdnotify_listen_fd always returns -1 (closed fd numbers get reused). */
int sdnotify_unused_fds(void);

#endif
