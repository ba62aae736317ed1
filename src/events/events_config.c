/* The `events:` section: see events_config.h. */
#include "autoconf.h"

#include "events/events_config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/config_walk.h"
#include "lib/lit.h"
#include "lib/netaddr.h"

static const char *webhook_reserved(const char *name)
{
    static const char *const reserved[] = {
        "host",       "content-type",       "content-length",
        "connection", "transfer-encoding",  "x-detourd-signature",
        "expect",     "x-detourd-event-id", NULL};
    for (const char *const *r = reserved; *r; r++)
        if (strcasecmp(name, *r) == 0) return "is set by detourd itself and cannot be configured";
    return NULL;
}

static void load_exec(struct cfg_ctx *x, const struct yt_node *n, struct events_cfg *e)
{
    static const char *const keys[] = {"command", "timeout", NULL};
    if (!cfg_want(x, n, YT_MAP, "events.exec")) return;
    cfg_check_keys(x, n, "events.exec", keys);
    const struct yt_node *v = yt_get(n, "command");
    if (!v) {
        CFG_ERR(x, n, "events.exec: 'command' is required");
    } else if (v->kind == YT_SCALAR && !cfg_is_null(v)) {
        CFG_ERR(x, v,
                "events.exec.command: give a list (the program and its arguments, e.g. "
                "[\"/usr/local/bin/notify\", \"--channel\", \"ops\"]); no shell runs it");
    } else if (cfg_want(x, v, YT_SEQ, "events.exec.command")) {
        if (!v->len) CFG_ERR(x, v, "events.exec.command: the list is empty");
        e->exec_argv = calloc(v->len + 1, sizeof(*e->exec_argv));
        if (!e->exec_argv) return;
        for (size_t i = 0; i < v->len; i++) {
            char *s = NULL;
            if (!cfg_get_str(x, v->u.items[i], "events.exec.command", &s)) continue;
            e->exec_argv[e->exec_argc++] = s;
            if (!cfg_text_ok(s))
                CFG_ERR(x, v->u.items[i],
                        "events.exec.command: item %zu contains a control character", i);
        }
        const char *prog = e->exec_argc ? e->exec_argv[0] : NULL;
        struct stat st;
        if (prog && prog[0] != '/')
            CFG_ERR(x, v->u.items[0],
                    "events.exec.command: '%s' must be an absolute path (no PATH search)", prog);
        else if (prog && access(prog, X_OK) != 0)
            CFG_ERR(x, v->u.items[0], "events.exec.command: cannot run '%s': %s", prog,
                    strerror(errno));
        else if (prog && (stat(prog, &st) != 0 || !S_ISREG(st.st_mode)))
            CFG_ERR(x, v->u.items[0], "events.exec.command: '%s' is not a file", prog);
    }
    if ((v = yt_get(n, "timeout")))
        cfg_get_duration(x, v, "events.exec.timeout", 100, CFG_MS_PER_HOUR, &e->exec_timeout_ms);
}

static void load_webhook(struct cfg_ctx *x, const struct yt_node *n, struct events_cfg *e)
{
    static const char *const keys[] = {"url",     "secret",  "headers",    "timeout",
                                       "retries", "ca_file", "tls_verify", NULL};
    if (!cfg_want(x, n, YT_MAP, "events.webhook")) return;
    cfg_check_keys(x, n, "events.webhook", keys);
    const struct yt_node *v = yt_get(n, "url");
    char *s = NULL;
    if (!v) {
        CFG_ERR(x, n, "events.webhook: 'url' is required");
    } else if (cfg_get_str(x, v, "events.webhook.url", &s)) {
        struct url u;
        const char *err = netaddr_parse_url(s, true, &u);
        if (err) {
            CFG_ERR(x, v, "events.webhook.url: '%s' %s", s, err);
        } else {
            e->webhook_url = u.norm;
            e->webhook_tls = strncmp(u.norm, LIT("https:")) == 0;
            e->webhook_host = strdup(u.host);
            e->webhook_port = u.port;
            const char *rest = u.norm + (e->webhook_tls ? 8 : 7);
            const char *slash = rest + strcspn(rest, "/?");
            e->webhook_path = *slash == '/' ? strdup(slash) : NULL;
            if (!e->webhook_path && *slash == '?') {
                size_t len = strlen(slash);
                e->webhook_path = malloc(len + 2);
                if (e->webhook_path) {
                    e->webhook_path[0] = '/';
                    memcpy(e->webhook_path + 1, slash, len + 1);
                }
            } else if (!e->webhook_path) {
                e->webhook_path = strdup("/");
            }
        }
        free(s);
    }
    if ((v = yt_get(n, "secret")) &&
        cfg_get_str(x, v, "events.webhook.secret", &e->webhook_secret) && !e->webhook_secret[0])
        CFG_ERR(x, v, "events.webhook.secret: empty (leave the key out for no signature)");
    if ((v = yt_get(n, "headers")) && !cfg_is_null(v))
        cfg_load_header_map(x, v, "events.webhook.headers", webhook_reserved, &e->webhook_headers,
                            &e->nwebhook_headers);
    if ((v = yt_get(n, "timeout")))
        cfg_get_duration(x, v, "events.webhook.timeout", 100, 10 * 60 * 1000,
                         &e->webhook_timeout_ms);
    if ((v = yt_get(n, "retries")))
        cfg_get_unsigned(x, v, "events.webhook.retries", 0, 100, &e->webhook_retries);
    if ((v = yt_get(n, "tls_verify")))
        cfg_get_bool(x, v, "events.webhook.tls_verify", &e->webhook_tls_verify);
    if ((v = yt_get(n, "ca_file")) &&
        cfg_get_str(x, v, "events.webhook.ca_file", &e->webhook_ca_file))
        cfg_file_readable(x, v, "events.webhook.ca_file", e->webhook_ca_file);
}

void events_config_load(struct cfg_ctx *x, const struct yt_node *n)
{
    static const char *const keys[] = {"exec", "webhook", NULL};
    struct events_cfg *e = x->c->events = calloc(1, sizeof(*e));
    if (!e) {
        diag_add(x->d, 0, 0, "out of memory");
        return;
    }
    e->exec_timeout_ms = 10 * 1000;
    e->webhook_timeout_ms = 5 * 1000;
    e->webhook_retries = 5;
    e->webhook_tls_verify = true;
    if (!n || cfg_is_null(n) || !cfg_want(x, n, YT_MAP, "events")) return;
    cfg_check_keys(x, n, "events", keys);
    const struct yt_node *v;
    if ((v = yt_get(n, "exec")) && !cfg_is_null(v)) load_exec(x, v, e);
    if ((v = yt_get(n, "webhook")) && !cfg_is_null(v)) load_webhook(x, v, e);
}

void events_cfg_free(struct events_cfg *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->exec_argc; i++) free(e->exec_argv[i]);
    free(e->exec_argv);
    free(e->webhook_url);
    free(e->webhook_host);
    free(e->webhook_path);
    free(e->webhook_secret);
    cfg_free_headers(e->webhook_headers, e->nwebhook_headers);
    free(e->webhook_ca_file);
    free(e);
}
