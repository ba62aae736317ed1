/* detourd: flags, startup, signals, reload, the main loop. */
#include "autoconf.h"

#include <event2/event.h>
#include <getopt.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "control/config.h"
#include "events/events.h"
#include "control/health.h"
#include "lib/clock.h"
#include "lib/defer.h"
#include "lib/log.h"
#include "control/maint.h"
#include "control/plan.h"
#include "control/reload.h"
#include "control/schedule.h"
#include "control/sdnotify.h"
#include "control/server.h"
#include "events/sink_exec.h"
#include "events/sink_webhook.h"
#include "control/acme.h"
#include "fleet/fleet.h"
#include "control/statefile.h"
#include "control/tls_config.h"
#include "serve/tls.h"

#define EXIT_CONFIG 1
#define EXIT_USAGE  2

struct daemon {
    const char *path;
    bool level_set;
    enum log_level level;
    struct event_base *base;
    struct server *srv;
    struct health_ctl *health;
    struct maint *maint;
    struct fleet *fleet;
    struct acme *acme;
    struct statefile_ctl *state;
    struct admin *admin;
    struct events *events;
    struct sink_exec *exec;
    struct sink_webhook *webhook;
    struct reloader *reloader;
    struct timespec reload_t0; /* when the load of the reload in progress started */
    struct daemon_view view;   /* what /status and /metrics show */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: detourd [-c FILE] [-t [--at TIME] [--replace FILE=NEW]] [-l LEVEL] [-V] [-h]\n"
            "\n"
            "Answers every HTTP request with a redirect to the healthiest backend region.\n"
            "\n"
            "  -c FILE   config file (default %s)\n"
            "  -t        validate the config and exit\n"
            "  --at TIME with -t: also print each region's operator state at TIME\n"
            "            (RFC 3339) and where traffic would go if every check passed\n"
            "  --replace FILE=NEW  with -t: check the config as if NEW were renamed\n"
            "            over FILE, an included file (FILE need not exist yet)\n"
            "  -l LEVEL  log level: error, warn, info, debug (overrides log.level)\n"
            "  -V        print the version and exit\n"
            "  -h        print this help and exit\n"
            "\n"
            "Signals: SIGHUP reloads the config, SIGTERM/SIGINT stop gracefully,\n"
            "SIGUSR1 reopens the access log.\n",
            DETOURD_DEFAULT_CONFIG);
}

static void retire(void *ctx, void *p, void (*free_fn)(void *))
{
    server_retire(ctx, p, free_fn);
}

static void apply_logging(struct daemon *d, const struct config *cfg)
{
    log_setup(d->level_set ? d->level : cfg->log_level, cfg->log_json);
}

static bool same_alog(const struct config *a, const struct config *b)
{
    return (!a->access_log && !b->access_log) ||
           (a->access_log && b->access_log && strcmp(a->access_log, b->access_log) == 0);
}

static void reopen_logs(struct daemon *d)
{
    const struct config *cfg = server_config(d->srv);
    if (!cfg->access_log) {
        log_info("SIGUSR1: no access log configured; nothing to reopen");
        return;
    }
    struct alog_file *f;
    char err[256];
    if (!alog_open(cfg->access_log, &f, err, sizeof(err))) {
        log_error("SIGUSR1: %s; still writing to the old file", err);
        return;
    }
    server_set_alog(d->srv, f);
    log_info("SIGUSR1: reopened the access log %s", cfg->access_log);
}

/* Certificates that expired, are not valid yet or expire soon: warned at
 * load and once a day. */
static void warn_expiry(const struct config *cfg)
{
    time_t now = time(NULL);
    for (size_t i = 0; cfg && i < cfg->nlisten; i++)
        if (cfg->listen_tls[i]) tls_srv_warn_expiry(cfg->listen_tls[i], now);
}

static void on_daily(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    (void)fd, (void)what;
    warn_expiry(server_config(d->srv));
}

static void on_ticket_rotate(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    tls_rotate_ticket_key();
}

/* the count of failed TLS handshakes a second's log lines did not show */
static void on_second(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    tls_fail_log_flush();
}

/* A reload starts: its load runs on a thread of its own (control/reload.h). */
static const char *reload_starting(void *arg)
{
    struct daemon *d = arg;
    sdnotify_reloading();
    clock_gettime(CLOCK_MONOTONIC, &d->reload_t0);
    return server_config(d->srv)->access_log;
}

static void reload_failed(struct daemon *d, const char *err, const char *first)
{
    char why[1400];
    d->view.last_reload = time(NULL);
    d->view.reloads_failed++;
    d->view.last_reload_ok = false;
    log_error("reload failed (%s); still serving the previous configuration", err);
    snprintf(why, sizeof(why), "%s%s%s", err, first[0] ? "; the first: " : "", first);
    event_emit(EVENT_RELOAD, NULL, NULL, NULL, "failed", why);
    if (!server_stopping(d->srv)) sdnotify_ready();
}

/* The load is over: validate the rest (listeners bind, health moves over),
 * then commit; on any error the running config is untouched. */
static void reload_done(void *arg, struct reload_result *r)
{
    struct daemon *d = arg;
    char err[256], first[1024] = "", why[1400];
    struct config *cfg = r->cfg;
    struct alog_file *alog = r->alog;
    r->cfg = NULL;
    r->alog = NULL;
    if (server_stopping(d->srv)) {
        log_info("reload of %s dropped: stopping", d->path);
        config_unref(cfg);
        alog_file_close(alog);
        return; /* systemd heard STOPPING=1: no READY=1 after it */
    }
    if (!cfg) {
        for (size_t i = 0; i < r->dg.n; i++) {
            char line[1024]; /* each item names its own file: the config or an included one */
            diag_format(&r->dg, i, line, sizeof(line));
            log_error("%s", line);
        }
        size_t nerr = r->dg.n + r->dg.dropped;
        if (r->dg.dropped) log_error("%s: %zu more errors not shown", d->path, r->dg.dropped);
        if (r->dg.n) diag_format(&r->dg, 0, first, sizeof(first));
        if (r->err[0]) {
            if (!nerr) log_error("%s", r->err);
            snprintf(err, sizeof(err), "%s", r->err);
        } else {
            snprintf(err, sizeof(err), "%zu error%s in the new configuration", nerr,
                     nerr == 1 ? "" : "s");
        }
        reload_failed(d, err, first);
        return;
    }
    struct listener_set *set = NULL;
    int admin_fd = -1;
    if (!(set = server_prepare(d->srv, cfg, err, sizeof(err)))) {
        log_error("%s", err);
    } else if (!admin_prepare(d->admin, cfg, &admin_fd, err, sizeof(err))) {
        log_error("%s", err);
        server_abort(d->srv, set);
        set = NULL;
    } else {
        /* the fleet's drains and windows hold in the new config from its
         * first published choice on */
        fleet_prepare(d->fleet, cfg);
        if (!health_reload(d->health, cfg)) {
            snprintf(err, sizeof(err), "out of memory moving health state");
            log_error("%s", err);
            fleet_abort(d->fleet); /* back to the running config */
            server_abort(d->srv, set);
            set = NULL;
        }
    }
    if (!set) {
        if (admin_fd >= 0) close(admin_fd);
        alog_file_close(alog);
        config_unref(cfg);
        reload_failed(d, err, first);
        return;
    }
    d->view.last_reload = time(NULL);
    bool alog_changed = !same_alog(server_config(d->srv), cfg);
    server_commit(d->srv, cfg, set);
    if (alog_changed) server_set_alog(d->srv, alog);
    apply_logging(d, cfg);
    warn_expiry(cfg);
    maint_reload(d->maint, cfg);
    fleet_commit(d->fleet, cfg);
    acme_reload(d->acme, cfg);
    health_flush_events(d->health); /* all-down events after the overrides that caused them */
    statefile_reload(d->state, cfg);
    sink_exec_config(d->exec, cfg->events);
    sink_webhook_config(d->webhook, cfg->events);
    health_notify_status(d->health);
    sdnotify_ready();
    admin_commit(d->admin, cfg, admin_fd);
    d->view.reloads_ok++;
    d->view.last_reload_ok = true;
#ifdef HAVE_MALLOC_TRIM
    malloc_trim(0); /* what the last reloads freed goes back to the system */
#endif
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double total = (double)(t1.tv_sec - d->reload_t0.tv_sec) * 1e3 +
                   (double)(t1.tv_nsec - d->reload_t0.tv_nsec) / 1e6;
    snprintf(why, sizeof(why),
             "reloaded %s: %zu pool%s, %zu listener%s (%.1f ms; loaded in %.1f ms)", d->path,
             cfg->npools, cfg->npools == 1 ? "" : "s", cfg->nlisten, cfg->nlisten == 1 ? "" : "s",
             total, r->load_ms);
    log_info("%s", why);
    event_emit(EVENT_RELOAD, NULL, NULL, NULL, "ok", why);
}

/* A worker let go of the last reference to something: free it here. */
static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    defer_run();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    switch (sig) {
    case SIGHUP:
        if (server_stopping(d->srv) || !d->reloader) break;
        log_info("SIGHUP: reloading %s", d->path);
        reloader_request(d->reloader);
        break;
    case SIGUSR1: reopen_logs(d); break;
    default:
        if (server_stopping(d->srv)) {
            log_warn("%s again: exiting now", strsignal((int)sig));
            event_base_loopexit(d->base, NULL);
            return;
        }
        log_info("%s: stopping (draining connections for up to %llums)", strsignal((int)sig),
                 (unsigned long long)server_config(d->srv)->limits.shutdown_timeout_ms);
        sdnotify_stopping();
        fleet_stopping(d->fleet); /* its verdicts leave etcd while connections drain */
        server_stop(d->srv);
    }
}

int main(int argc, char **argv)
{
    static struct daemon d = {.path = DETOURD_DEFAULT_CONFIG, .level = LOG_INFO};
#ifdef HAVE_MALLOPT
    /* Fixed thresholds: glibc otherwise raises both after the first large
     * block is freed (a reload's file buffer), and from then on keeps every
     * freed page of every thread's heap for good. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
#endif
    bool test_only = false;
    const char *at = NULL;
    int64_t at_ms = 0;
    const char *replace = NULL;
    static const struct option longopts[] = {{"at", required_argument, NULL, 'A'},
                                             {"replace", required_argument, NULL, 'R'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tl:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'A':
            at = optarg;
            if (!sched_parse_time(at, &at_ms)) {
                fprintf(stderr,
                        "detourd: --at: '%s' is not an RFC 3339 time (like "
                        "2026-11-28T04:00:00Z)\n",
                        at);
                return EXIT_USAGE;
            }
            break;
        case 'R':
            replace = optarg;
            if (!strchr(replace, '=') || replace[0] == '=' || !strchr(replace, '=')[1]) {
                fprintf(stderr, "detourd: --replace: '%s' is not FILE=NEW\n", replace);
                return EXIT_USAGE;
            }
            break;
        case 'c': d.path = optarg; break;
        case 't': test_only = true; break;
        case 'l':
            if (!log_parse_level(optarg, &d.level)) {
                fprintf(stderr, "detourd: -l: '%s' is not one of error, warn, info, debug\n",
                        optarg);
                return EXIT_USAGE;
            }
            d.level_set = true;
            break;
        case 'V': printf("detourd %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "detourd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (at && !test_only) {
        fprintf(stderr, "detourd: --at needs -t (it plans; it does not run the daemon)\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (replace && !test_only) {
        fprintf(stderr, "detourd: --replace needs -t (it checks; it does not run the daemon)\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (replace) {
        char *live = strndup(replace, (size_t)(strchr(replace, '=') - replace));
        bool ok = live && config_replace_include(live, strchr(replace, '=') + 1);
        free(live);
        if (!ok) {
            fprintf(stderr, "detourd: out of memory\n");
            return EXIT_CONFIG;
        }
    }

    struct diag dg;
    diag_init(&dg, d.path);
    struct config *cfg = config_load(d.path, &dg);
    if (!cfg) {
        diag_print(&dg, stderr);
        diag_free(&dg);
        return EXIT_CONFIG;
    }
    diag_free(&dg);
    if (replace && !config_replace_seen()) {
        char *live = strndup(replace, (size_t)(strchr(replace, '=') - replace));
        fprintf(stderr, "%s: --replace: no include pattern of the configuration matches %s\n",
                d.path, live ? live : replace);
        free(live);
        config_unref(cfg);
        return EXIT_CONFIG;
    }
    if (test_only) {
        warn_expiry(cfg);
        maint_warn_expired(cfg, cfg->sched_now_ms);
        printf("%s: configuration OK\n", d.path);
        bool ok = !at || plan_print(stdout, cfg, at_ms);
        config_unref(cfg);
        if (!ok) fprintf(stderr, "detourd: out of memory\n");
        return ok ? 0 : EXIT_CONFIG;
    }
    apply_logging(&d, cfg);
    warn_expiry(cfg);
    signal(SIGPIPE, SIG_IGN);
    /* from here on no thread writes stderr itself (a stalled journal must
     * not stop a worker); without the writer thread, lines go out directly */
    if (!log_async_start()) log_warn("cannot start the log writer thread; logging directly");
    d.srv = server_new();
    if (!d.srv) {
        log_error("out of memory");
        config_unref(cfg);
        return EXIT_CONFIG;
    }
    d.view = (struct daemon_view){
        .srv = d.srv,
        .config_path = d.path,
        .start_time = time(NULL),
        .last_reload_ok = true,
        .last_reload = time(NULL),
    };

    d.base = event_base_new();
    if (!d.base) {
        log_error("cannot create the event loop");
        config_unref(cfg);
        server_free(d.srv);
        return EXIT_CONFIG;
    }
    /* signals are loop events from here on: a SIGHUP or SIGTERM during
     * startup is handled once the loop runs instead of killing the daemon */
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    struct event *sigev[sizeof(sigs) / sizeof(sigs[0])];
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigev[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
        if (sigev[i]) evsignal_add(sigev[i], NULL);
    }
    /* what workers let go of is freed on this thread, not on theirs */
    int defer_fd = defer_start();
    struct event *defer_ev =
        defer_fd >= 0 ? event_new(d.base, defer_fd, EV_READ | EV_PERSIST, on_defer, NULL) : NULL;
    if (defer_ev)
        event_add(defer_ev, NULL);
    else
        defer_stop(); /* frees at once, on whichever thread */
    /* the event hub before any producer; sinks attach once configured */
    d.events = events_new(NULL);
    d.exec = d.events ? sink_exec_new(d.base, d.events) : NULL;
    d.webhook = d.events ? sink_webhook_new(d.base, d.events) : NULL;
    int rc = EXIT_CONFIG;
    char err[256];
    struct event *timers[3] = {NULL, NULL, NULL};
    struct alog_file *alog = NULL;
    if (!d.webhook || !d.exec) {
        log_error("out of memory");
        config_unref(cfg);
        goto out;
    }
    events_set_default(d.events);
    sink_exec_config(d.exec, cfg->events);
    sink_webhook_config(d.webhook, cfg->events);
    /* health first: the choices reflect `initial` before any request */
    d.health = health_start(d.base, cfg, retire, d.srv);
    if (!d.health) {
        log_error("cannot start health checks (out of memory)");
        config_unref(cfg);
        goto out;
    }
    /* before any check runs or any request is answered */
    statefile_restore(d.health, cfg, clock_wall_ms());
    d.state = statefile_start(d.base, d.health, cfg);
    if (!d.state) {
        log_error("cannot keep the state file (out of memory)");
        config_unref(cfg);
        goto out;
    }
    if (cfg->access_log && !alog_open(cfg->access_log, &alog, err, sizeof(err))) {
        log_error("%s", err);
        config_unref(cfg);
        goto out;
    }
    /* before the listeners: certificates kept in storage serve the first
     * handshake; orders run on this loop, never on a worker */
    d.acme = acme_start(d.base, d.srv, cfg);
    d.view.acme = d.acme;
    if (!d.acme) {
        log_error("cannot start the ACME client (out of memory)");
        config_unref(cfg);
        alog_file_close(alog);
        goto out;
    }
    if (!server_start(d.srv, d.base, cfg, err, sizeof(err))) { /* takes cfg either way */
        log_error("%s", err);
        alog_file_close(alog);
        goto out;
    }
    server_set_alog(d.srv, alog);
    d.view.health = d.health;
    d.maint = maint_start(d.base, d.health, cfg); /* the server holds cfg */
    if (!d.maint) {
        log_error("cannot follow the maintenance schedule (out of memory)");
        goto out;
    }
    d.fleet = fleet_start(d.base, d.health, d.maint, cfg); /* the server holds cfg */
    if (!d.fleet) {
        log_error("cannot follow the fleet (out of memory)");
        goto out;
    }
    d.view.fleet = d.fleet;
    acme_set_fleet(d.acme, d.fleet);

    d.admin = admin_start(d.base, &d.view, cfg, err, sizeof(err));
    if (!d.admin) {
        log_error("%s", err);
        goto out;
    }
    static const struct reload_hooks hooks = {.starting = reload_starting, .done = reload_done};
    d.reloader = reloader_new(d.base, d.path, &hooks, &d);
    if (!d.reloader) {
        log_error("out of memory");
        goto out;
    }
    struct timeval day = {86400, 0}, rotate = {TLS_TICKET_ROTATE_S, 0}, second = {1, 0};
    timers[0] = event_new(d.base, -1, EV_PERSIST, on_daily, &d);
    timers[1] = event_new(d.base, -1, EV_PERSIST, on_ticket_rotate, &d);
    timers[2] = event_new(d.base, -1, EV_PERSIST, on_second, &d);
    if (timers[0]) event_add(timers[0], &day);
    if (timers[1]) event_add(timers[1], &rotate);
    if (timers[2]) event_add(timers[2], &second);
    sdnotify_unused_fds(); /* warns about each passed socket no listen: entry takes */
    sdnotify_init(d.base);
    health_notify_status(d.health);
    sdnotify_ready();

    for (size_t i = 0; i < cfg->nlisten; i++) log_info("listening on %s", cfg->listen[i].text);
    log_info("detourd %s started: %zu pool%s from %s, %u worker%s", PACKAGE_VERSION, cfg->npools,
             cfg->npools == 1 ? "" : "s", cfg->path, server_workers(d.srv),
             server_workers(d.srv) == 1 ? "" : "s");

    event_base_dispatch(d.base);
    rc = 0;
    log_info("stopped");
out:
    reloader_free(d.reloader); /* a load still running is abandoned */
    d.reloader = NULL;         /* the loop may still run while the fleet revokes its lease */
    admin_stop(d.admin);
    acme_set_fleet(d.acme, NULL); /* the fleet goes first */
    fleet_stop(d.fleet);
    maint_stop(d.maint);
    events_set_default(NULL); /* no more events: the sinks go first */
    sink_webhook_free(d.webhook);
    sink_exec_free(d.exec);
    statefile_stop(d.state, rc == 0); /* the last health, written at shutdown */
    health_stop(d.health);
    server_free(d.srv);
    acme_stop(d.acme); /* after the workers: its table is no longer read */
    if (defer_ev) event_free(defer_ev);
    defer_stop(); /* the workers are gone */
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigev[i]) event_free(sigev[i]);
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        if (timers[i]) event_free(timers[i]);
    sdnotify_free();
    events_free(d.events);
    event_base_free(d.base);
    /* a load still running (abandoned, or begun just before the stop) must
     * not race the libraries' teardown at exit */
    if (!reloader_wait(RELOAD_EXIT_WAIT_MS)) {
        log_warn("a configuration load still runs (a file that cannot be read?); exiting without "
                 "waiting for it");
        log_async_stop(LOG_EXIT_WAIT_MS);
        _exit(rc);
    }
    libevent_global_shutdown();
    return rc;
}
