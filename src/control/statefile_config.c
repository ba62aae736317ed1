/* The state file's keys: `state_file` (where the last known health of
 * every region is kept across restarts) and `state_max_age` (an older file
 * is ignored at startup). See statefile.h. */
#include "autoconf.h"

#include "control/config_walk.h"
#include "control/statefile.h"

void statefile_config_load(struct cfg_ctx *x, const struct yt_node *v)
{
    struct config *c = x->c;
    if (v && !cfg_is_null(v) && cfg_get_str(x, v, "state_file", &c->state_file) &&
        c->state_file[0] != '/')
        CFG_ERR(x, v, "state_file: '%s' must be an absolute path", c->state_file);
}

void statefile_config_load_max_age(struct cfg_ctx *x, const struct yt_node *v)
{
    x->c->state_max_age_ms = STATEFILE_DEFAULT_MAX_AGE_MS;
    if (v)
        cfg_get_duration(x, v, "state_max_age", 0, 7 * 24 * (uint64_t)CFG_MS_PER_HOUR,
                         &x->c->state_max_age_ms);
}
