/* Deferred frees: what a serving thread lets go of is freed on the control
 * thread. A worker that drops the last reference to a retired config (or a
 * TLS context) would otherwise spend a whole config's worth of free() calls
 * between two requests; instead it hands the object over with one atomic
 * push and a wakeup.
 *
 * Until defer_start() is called (tests, `detourd -t`), and on the thread
 * that called it, defer_free() frees at once. */
#ifndef DETOURD_DEFER_H
#define DETOURD_DEFER_H

typedef void defer_fn(void *p);

/* Frees p with fn, on the control thread. Any thread. */
void defer_free(void *p, defer_fn *fn);
/* The calling thread takes over the frees from now on. Returns an fd that
 * becomes readable when something is handed over (then call defer_run()),
 * or -1 on failure (then every defer_free() frees at once). */
int defer_start(void);
/* Frees everything handed over so far (the control thread). */
void defer_run(void);
/* Frees what is left; defer_free() frees at once from now on. Call once no
 * other thread can hand anything over. */
void defer_stop(void);

#endif
