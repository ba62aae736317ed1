/* detourd: flags, startup, signals, the main loop. */
#include "autoconf.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "health.h"
#include "log.h"
#include "server.h"

#define EXIT_CONFIG 1
#define EXIT_USAGE  2

static void usage(FILE *out)
{
    fprintf(out,
            "usage: detourd [-c FILE] [-t] [-l LEVEL] [-V] [-h]\n"
            "\n"
            "Answers every HTTP request with a redirect to the healthiest backend region.\n"
            "\n"
            "  -c FILE   config file (default %s)\n"
            "  -t        validate the config and exit\n"
            "  -l LEVEL  log level: error, warn, info, debug (overrides log.level)\n"
            "  -V        print the version and exit\n"
            "  -h        print this help and exit\n",
            DETOURD_DEFAULT_CONFIG);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    if (s->stopping) {
        log_warn("%s again: exiting now", strsignal(sig));
        event_base_loopexit(s->w.base, NULL);
        return;
    }
    log_info("%s: stopping (draining connections for up to %llums)", strsignal(sig),
             (unsigned long long)s->cfg->limits.shutdown_timeout_ms);
    server_stop(s);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    /* until hitless reload lands: never let SIGHUP kill the daemon */
    log_warn("SIGHUP: configuration reload is not supported yet; restart detourd to apply "
             "changes (still serving the loaded configuration)");
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
    log_info("SIGUSR1: no log files to reopen (logs go to stderr)");
}

int main(int argc, char **argv)
{
    const char *path = DETOURD_DEFAULT_CONFIG;
    bool test_only = false;
    bool level_set = false;
    enum log_level level = LOG_INFO;
    int opt;
    while ((opt = getopt(argc, argv, "c:tl:Vh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': test_only = true; break;
        case 'l':
            if (!log_parse_level(optarg, &level)) {
                fprintf(stderr, "detourd: -l: '%s' is not one of error, warn, info, debug\n",
                        optarg);
                return EXIT_USAGE;
            }
            level_set = true;
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

    struct diag d;
    diag_init(&d, path);
    struct config *cfg = config_load(path, &d);
    if (!cfg) {
        diag_print(&d, stderr);
        diag_free(&d);
        return EXIT_CONFIG;
    }
    diag_free(&d);
    if (test_only) {
        printf("%s: configuration OK\n", path);
        config_free(cfg);
        return 0;
    }
    log_setup(level_set ? level : cfg->log_level, cfg->log_json);
    signal(SIGPIPE, SIG_IGN);

    struct event_config *ecfg = event_config_new();
    /* one thread per base; no locks needed inside libevent */
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
    struct event_base *base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (!base) {
        log_error("cannot create the event loop");
        config_free(cfg);
        return EXIT_CONFIG;
    }

    static struct server srv;
    char err[256];
    if (!server_init(&srv, base, cfg, err, sizeof(err))) {
        log_error("%s", err);
        server_free(&srv);
        event_base_free(base);
        config_free(cfg);
        return EXIT_CONFIG;
    }
    struct health_ctl *health = health_start(base, cfg);
    if (!health) {
        log_error("cannot start health checks (out of memory)");
        server_free(&srv);
        event_base_free(base);
        config_free(cfg);
        return EXIT_CONFIG;
    }
    struct event *sigterm = evsignal_new(base, SIGTERM, on_stop_signal, &srv);
    struct event *sigint = evsignal_new(base, SIGINT, on_stop_signal, &srv);
    struct event *sighup = evsignal_new(base, SIGHUP, on_hup, &srv);
    struct event *sigusr1 = evsignal_new(base, SIGUSR1, on_usr1, &srv);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    evsignal_add(sighup, NULL);
    evsignal_add(sigusr1, NULL);

    for (size_t i = 0; i < cfg->nlisten; i++) log_info("listening on %s", cfg->listen[i].text);
    log_info("detourd %s started: %zu pool%s from %s", PACKAGE_VERSION, cfg->npools,
             cfg->npools == 1 ? "" : "s", cfg->path);

    event_base_dispatch(base);

    log_info("stopped");
    health_stop(health);
    event_free(sigterm);
    event_free(sigint);
    event_free(sighup);
    event_free(sigusr1);
    server_free(&srv);
    event_base_free(base);
    config_free(cfg);
    libevent_global_shutdown();
    return 0;
}
