/* Planning: `detourd -t --at TIME` prints, for an instant, each region's
 * operator state and its source, and where each pool's traffic would go
 * if every health check passed. Nothing is bound or probed. */
#ifndef DETOURD_PLAN_H
#define DETOURD_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "control/config.h"

/* Evaluates c's schedule at at_ms (Unix ms; this changes c's operator
 * states, so c must not be in use) and writes the plan to out. False on
 * OOM. */
bool plan_print(FILE *out, struct config *c, int64_t at_ms);

#endif
