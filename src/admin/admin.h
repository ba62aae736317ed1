/* The admin listener: /healthz, /status (JSON), /metrics (Prometheus) and
 * an HTML status page, on its own address and on the main thread (evhttp),
 * never on the workers that serve redirects. Clients outside admin.allow
 * get 403. */
#ifndef DETOURD_ADMIN_H
#define DETOURD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "control/config.h"
#include "admin/metrics.h"

struct admin;
struct event_base;

/* Starts the admin listener if cfg has one (else returns an idle admin). */
struct admin *admin_start(struct event_base *base, struct daemon_view *v, const struct config *cfg,
                          char *err, size_t errlen);
/* Follows a reload in two steps, like the redirect listeners: prepare binds
 * a changed admin.listen (false with err if it cannot; nothing changed),
 * commit switches to it (or closes the listener if cfg has none). */
bool admin_prepare(struct admin *a, const struct config *cfg, int *fd, char *err, size_t errlen);
void admin_commit(struct admin *a, const struct config *cfg, int fd);
void admin_stop(struct admin *a);

/* Writes the /status document (exposed for tests). */
struct evbuffer;
void admin_status_json(struct evbuffer *out, const struct daemon_view *v);
/* Writes the status page, its rows filled in (exposed for tests). */
void admin_page_html(struct evbuffer *out, const struct daemon_view *v);

#endif
