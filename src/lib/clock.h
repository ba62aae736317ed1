/* The clocks: the request path's for timeouts, and the wall clock. */
#ifndef DETOURD_CLOCK_H
#define DETOURD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds of the coarse monotonic clock: precise enough for timeouts
 * (a tick or so) and read from the vDSO without a system call. */
static inline uint64_t clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds since the Unix epoch (wall clock): what maintenance windows
 * and timed overrides are evaluated against. */
static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
