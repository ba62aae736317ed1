/* Deferred frees: see defer.h. A lock-free stack (pushes from any thread,
 * the control thread takes the whole stack at once) and an eventfd. */
#include "autoconf.h"

#include "lib/defer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct deferred {
    void *p;
    defer_fn *fn;
    struct deferred *next;
};

static _Atomic(struct deferred *) stack;
static _Atomic bool running;
static pthread_t owner;
static int efd = -1;

void defer_free(void *p, defer_fn *fn)
{
    if (!p) return;
    if (!atomic_load_explicit(&running, memory_order_acquire) ||
        pthread_equal(pthread_self(), owner)) {
        fn(p);
        return;
    }
    struct deferred *d = malloc(sizeof(*d));
    if (!d) {
        fn(p); /* better late here than never */
        return;
    }
    d->p = p;
    d->fn = fn;
    d->next = atomic_load_explicit(&stack, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&stack, &d->next, d, memory_order_release,
                                                  memory_order_relaxed))
        continue;
    uint64_t one = 1;
    ssize_t r = write(efd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is saturated, a wakeup is pending anyway */
}

int defer_start(void)
{
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return -1;
    owner = pthread_self();
    atomic_store_explicit(&running, true, memory_order_release);
    return efd;
}

void defer_run(void)
{
    uint64_t v;
    ssize_t r = read(efd, &v, sizeof(v));
    (void)r;
    struct deferred *d = atomic_exchange_explicit(&stack, NULL, memory_order_acquire);
    while (d) {
        struct deferred *next = d->next;
        d->fn(d->p);
        free(d);
        d = next;
    }
}

void defer_stop(void)
{
    if (!atomic_load(&running)) return;
    atomic_store_explicit(&running, false, memory_order_release);
    defer_run();
    /* efd stays open: a thread that saw running just before the store (an
     * abandoned configuration load finishing during the exit) may still
     * push and write to it; what it pushes is left to the exit */
}
