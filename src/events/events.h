/* Events: state changes pushed out as they happen (the contract's
 * "Events"). Producers (the health updater, the override scheduler, the
 * all-down test in the publish path, the reload path) call event_emit() on
 * the main thread; the event is formatted once into its JSON object, kept in
 * a ring of the last EVENTS_RING events (replayed by GET /events), and a
 * reference is handed to every sink's bounded queue. Sinks drain their own
 * queues asynchronously; nothing on the request path or in the health
 * updater ever waits on a sink. Main thread only. */
#ifndef DETOURD_EVENTS_H
#define DETOURD_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVENTS_RING      100  /* replayed to a new /events subscriber */
#define EVENTS_QUEUE_MAX 1000 /* per sink; beyond it the oldest are dropped */
#define EVENT_REASON_MAX 1024 /* bytes of a reason; a longer one is cut, with "..." */

enum event_kind {
    EVENT_REGION_STATE,
    EVENT_OVERRIDE,
    EVENT_ALL_DOWN,
    EVENT_RELOAD,
    EVENT_FLEET,
    EVENT_CERTIFICATE
};

const char *event_kind_name(enum event_kind k); /* "region_state", ... */

/* One event, immutable once emitted; shared by the ring and the queues
 * (reference counted, main thread only). */
struct event_rec {
    unsigned refs;
    uint64_t seq; /* 1, 2, ... in this process */
    enum event_kind kind;
    int64_t time_ms; /* Unix ms */
    char id[48];     /* unique across processes and hosts: "<boot id>-<seq>" */
    char time[32];   /* RFC 3339 UTC with milliseconds */
    char *pool, *region, *from, *to, *reason; /* NULL: the field is absent */
    char *key;                                /* fleet: the etcd key (NULL: absent) */
    char *json;                               /* the object, one line, no newline */
    size_t json_len;
};

struct event_rec *event_ref(struct event_rec *ev);
void event_unref(struct event_rec *ev);

/* Builds an event (pure: for tests and event_emit); NULL on OOM. A reason
 * over EVENT_REASON_MAX bytes is cut at a character boundary and ends in
 * U+2026, so one event stays small in every queue and stream. */
struct event_rec *event_make(enum event_kind kind, uint64_t seq, const char *boot_id,
                             int64_t time_ms, const char *instance, const char *pool,
                             const char *region, const char *from, const char *to,
                             const char *reason);

/* The same with a "key" field (fleet events: the etcd key rejected). */
struct event_rec *event_make_key(enum event_kind kind, uint64_t seq, const char *boot_id,
                                 int64_t time_ms, const char *instance, const char *pool,
                                 const char *region, const char *from, const char *to,
                                 const char *reason, const char *key);

/* A bounded FIFO of event references. */
struct event_queue {
    struct event_rec **v;
    size_t cap, head, len;
};

bool evq_init(struct event_queue *q, size_t cap);
/* Drops every queued event; returns how many. */
size_t evq_clear(struct event_queue *q);
void evq_free(struct event_queue *q);
/* Appends a reference to ev; a full queue first drops its oldest (returns
 * true when one was dropped). */
bool evq_push(struct event_queue *q, struct event_rec *ev);
/* The oldest queued event (still queued), or NULL. */
struct event_rec *evq_peek(const struct event_queue *q);
/* Removes the oldest; the caller owns the returned reference. */
struct event_rec *evq_pop(struct event_queue *q);

/* A consumer of events. The sink owns the struct and initialises name, q
 * (evq_init), wake and arg; events.c appends each event to q (counting
 * what a full queue drops) and then calls wake(arg), which starts work if
 * the sink is idle. It must not emit events or remove sinks from wake. */
struct event_sink {
    const char *name; /* metric label ("exec", "webhook"); NULL: not in metrics */
    struct event_queue q;
    uint64_t delivered, failed, dropped;
    void (*wake)(void *arg);
    void *arg;
    struct event_sink *next; /* events.c's list */
};

/* The process's event hub: starts empty (no sinks), with a ring of the
 * last EVENTS_RING events. instance: this host's name (NULL: gethostname). */
struct events *events_new(const char *instance);
void events_free(struct events *e);
/* Makes e the hub event_emit() uses (NULL: events are dropped). */
void events_set_default(struct events *e);
struct events *events_default(void);

void events_sink_add(struct events *e, struct event_sink *s);
void events_sink_remove(struct events *e, struct event_sink *s);
/* Sinks, for metrics (NULL-terminated walk through ->next). */
const struct event_sink *events_sinks(const struct events *e);

/* Emits an event through the default hub (no-op without one). Strings are
 * copied; NULL leaves a field out. Formats the JSON once, stamps id and
 * time, rings it and queues it for every sink. */
void event_emit(enum event_kind kind, const char *pool, const char *region, const char *from,
                const char *to, const char *reason);
/* A fleet event: to is "connected", "disconnected" or "rejected"; key
 * (NULL: none) the etcd key rejected. */
void event_emit_fleet(const char *to, const char *key, const char *reason);
/* A certificate event (ACME): name is the certificate's name ("name" in
 * the JSON), to issued, renewed or failed. */
void event_emit_certificate(const char *name, const char *to, const char *reason);
/* Same through a given hub, at a given time (tests). */
struct event_rec *events_emit_at(struct events *e, int64_t time_ms, enum event_kind kind,
                                 const char *pool, const char *region, const char *from,
                                 const char *to, const char *reason);

/* Calls fn for each ringed event with seq > after, oldest first. */
void events_replay(const struct events *e, uint64_t after,
                   void (*fn)(void *arg, struct event_rec *ev), void *arg);
/* The seq a Last-Event-ID names, if it is one of this process's ids
 * ("<boot id>-<seq>"); false otherwise (then everything is replayed). */
bool events_parse_id(const struct events *e, const char *id, uint64_t *seq);
/* The seq of the last event emitted (0: none yet). */
uint64_t events_last_seq(const struct events *e);
const char *events_instance(const struct events *e);

#endif
