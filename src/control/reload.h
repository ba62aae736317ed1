/* Loading a new configuration off the main loop. A reload reads the
 * config, its includes, certificates and keys, and opens a changed access
 * log, on a thread of its own: a file that cannot be read at once (a hung
 * network mount) delays only the reload, never a redirect (those are on the
 * worker threads anyway), a health check or an admin answer (the main
 * loop). The main thread then commits the result (main.c).
 *
 * A load still unfinished after RELOAD_TIMEOUT_MS is abandoned as failed:
 * its thread is left to finish on its own and whatever it loads is
 * dropped. At most RELOAD_MAX_STUCK such threads are left running; past
 * that, a reload is refused until one of them ends. One load runs at a
 * time; a reload asked for meanwhile runs once the current one is done. */
#ifndef DETOURD_RELOAD_H
#define DETOURD_RELOAD_H

#include <stdbool.h>

#include "lib/accesslog.h"
#include "lib/diag.h"
#include "snapshot.h"

#define RELOAD_TIMEOUT_MS   30000
#define RELOAD_MAX_STUCK    4
#define RELOAD_EXIT_WAIT_MS 2000 /* how long an exit waits for a load to end */

struct event_base;
struct reloader;

/* What a load produced, handed to the done callback on the main thread
 * (which takes cfg and alog, or leaves them to be freed). */
struct reload_result {
    const char *path;
    struct config *cfg;     /* NULL: the load failed */
    struct diag dg;         /* the config's errors, each positioned */
    struct alog_file *alog; /* cfg's access log, opened when it differs from the running one */
    char err[256];          /* why it failed, when not (only) dg: the access log, abandoned */
    double load_ms;         /* how long the load took */
};

/* How a reloader runs. */
struct reload_hooks {
    /* Loads path on the loader thread (NULL: config_load()); tests make
     * their own. */
    struct config *(*load)(const char *path, struct diag *d);
    /* The load's deadline in ms (0: RELOAD_TIMEOUT_MS). */
    unsigned timeout_ms;
    /* A load starts (at once or after the one before it): returns the
     * access log path in use now (NULL: none), which is not reopened. */
    const char *(*starting)(void *arg);
    /* A load ended (r->cfg set), failed or was abandoned (r->cfg NULL).
     * Takes r->cfg and r->alog by setting them to NULL; the rest is freed
     * after it returns. */
    void (*done)(void *arg, struct reload_result *r);
};

/* A reloader of path (copied) on the main thread's loop. NULL on OOM. */
struct reloader *reloader_new(struct event_base *base, const char *path,
                              const struct reload_hooks *hooks, void *arg);
/* A reload is asked for (SIGHUP): starts a load now, or once the running
 * one is done. False (logged) when it cannot start: too many abandoned
 * loads are still stuck, or no thread could be made. */
bool reloader_request(struct reloader *rl);
/* A load is running. */
bool reloader_busy(const struct reloader *rl);
/* Abandoned loads whose threads still run. */
unsigned reloader_stuck(void);
/* Waits up to ms for every loader thread to end (at exit: a load must not
 * run on while the libraries are torn down). False if one still runs. */
bool reloader_wait(unsigned ms);
/* Abandons a running load and frees rl. */
void reloader_free(struct reloader *rl);

#endif
