/* The state file's keys: `state_file` (where the last known health of
 * every region is kept across restarts) and `state_max_age` (an older file
 * is ignored at startup). See statefile.h. */
#include "autoconf.h"

#include <sys/stat.h>

#include "control/config_walk.h"
#include "control/statefile.h"
#include "lib/file.h"

void statefile_config_load(struct cfg_ctx *x, const struct yt_node *v)
{
    struct config *c = x->c;
    if (!v || cfg_is_null(v) || !cfg_get_str(x, v, "state_file", &c->state_file)) return;
    if (c->state_file[0] != '/') {
        CFG_ERR(x, v, "state_file: '%s' must be an absolute path", c->state_file);
        return;
    }
    /* Every write renames a new file over it: it may only be a regular
     * file (or a symlink to one), or not exist yet. As root, a device such
     * as /dev/null would otherwise be replaced. (stat, not open: a FIFO is
     * never waited on.) A path that cannot be looked at is the writer's
     * warning, as a missing directory is. */
    struct stat sb;
    if (stat(c->state_file, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        struct file_error fe = {.kind = FILE_ENOTREG, .mode = sb.st_mode};
        char why[64];
        CFG_ERR(x, v, "state_file: '%s' %s", c->state_file, file_why(&fe, why, sizeof(why)));
    }
}

void statefile_config_load_max_age(struct cfg_ctx *x, const struct yt_node *v)
{
    x->c->state_max_age_ms = STATEFILE_DEFAULT_MAX_AGE_MS;
    if (v)
        cfg_get_duration(x, v, "state_max_age", 0, 7 * 24 * (uint64_t)CFG_MS_PER_HOUR,
                         &x->c->state_max_age_ms);
}
