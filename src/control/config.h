/* Loading the configuration: YAML file -> struct config (snapshot.h),
 * validated in full, with every error positioned. A config is built
 * completely (including everything the request path precomputes from it)
 * before it is ever used. */
#ifndef DETOURD_CONFIG_H
#define DETOURD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/diag.h"
#include "snapshot.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DETOURD_DEFAULT_CONFIG SYSCONFDIR "/detourd/detourd.yaml"

#define CONFIG_MAX_FILE_BYTES (16u << 20) /* each: the config and every included file */
#define CONFIG_MAX_INCLUDES   1000        /* files, over all `include:` patterns */

/* Loads and validates path. On success returns a config; on failure returns
 * NULL with every problem in d (d->file must outlive the call). */
struct config *config_load(const char *path, struct diag *d);
/* Same, from memory (tests); name is used in messages. */
struct config *config_parse(const char *name, const char *buf, size_t len, struct diag *d);
/* Frees c at once (config_unref() is the way once c may be in use). */
void config_free(void *c);

/* From now on, an included file whose name is `live` (matched by an
 * include pattern, whether it exists or not) is read from `candidate`
 * instead: `detourd -t --replace LIVE=CANDIDATE` checks a new version of a
 * drop-in before it is renamed into place. NULL live: no replacement.
 * False on OOM. */
bool config_replace_include(const char *live, const char *candidate);
/* True once a load matched config_replace_include()'s file to a pattern. */
bool config_replace_seen(void);

/* Helpers shared with tests. Return false on a malformed value. */
bool config_parse_duration(const char *s, uint64_t *ms);
bool config_parse_size(const char *s, uint64_t *bytes);

const char *region_state_name(enum region_state s);
/* Evaluates c's schedule at now_ms (Unix ms) into c->sched_now and every
 * region's `op`. Main thread only, once c is in use. */
void config_sched_apply(struct config *c, int64_t now_ms);

#endif
