/* Health checking: schedules one probe at a time per region, owns the
 * rise/fall hysteresis (the only place a region changes state), and
 * publishes each pool's up-set to the request path. Runs on the main
 * thread; workers only read what it publishes. */
#ifndef DETOURD_HEALTH_H
#define DETOURD_HEALTH_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "control/config.h"
#include "control/health_config.h"

/* Why a probe failed (relayd's host_error, haproxy's check status). */
enum health_reason {
    HR_OK,
    HR_DNS,
    HR_CONNECT_REFUSED,
    HR_CONNECT_TIMEOUT,
    HR_CONNECT, /* any other connect error */
    HR_TLS,
    HR_TIMEOUT,
    HR_STATUS,
    HR_BODY,
    HR_RESET,
    HR_COUNT
};

const char *health_reason_name(enum health_reason r); /* "connect refused", ... */
/* The step that failed, as log lines name it ("connect", "http", ...). */
const char *health_reason_phase(enum health_reason r);
/* Metric label form: "connect_refused", ... */
const char *health_reason_label(enum health_reason r);

struct probe_result {
    enum health_reason reason; /* HR_OK on success */
    int status;                /* HTTP status, when one was read */
    int err;                   /* errno or TLS/DNS error code, when known */
    char detail[96];           /* short human text ("Connection refused") */
    double latency_ms;         /* probe start to verdict */
};

/* The pure hysteresis state of one region. */
struct health_state {
    bool up;
    bool checked;      /* at least one state decision was made by checks */
    unsigned succ;     /* consecutive successes */
    unsigned fail;     /* consecutive failures */
    double latency_ms; /* moving average of successful probes */
    bool have_latency;
};

#define HEALTH_EWMA_ALPHA 0.3

void health_state_init(struct health_state *s, const struct check_cfg *c);
/* Applies one probe result. Returns true when the state changed. */
bool health_state_update(struct health_state *s, const struct check_cfg *c,
                         const struct probe_result *r);
/* Milliseconds until the next probe (before jitter). */
uint64_t health_state_interval(const struct health_state *s, const struct check_cfg *c);
/* Applies jitter_pct around ms with a random value in [0, 1). */
uint64_t health_jitter(uint64_t ms, unsigned pct, double rnd);

/* The live health of one region (survives reloads when the check is
 * unchanged). */
struct health {
    struct health_state st;
    struct probe_result last;
    time_t last_time;   /* wall clock of the last probe result */
    time_t last_change; /* wall clock of the last state change */
    uint64_t changes;   /* state changes */
    uint64_t failures[HR_COUNT];
    uint64_t probes;
    /* check duration histogram (seconds) */
    uint64_t dur_buckets[12];
    double dur_sum;
    /* owner links */
    struct health_ctl *ctl;
    struct pool *pool;
    struct region *region;
    struct event *timer;
    struct probe *probe;
    uint64_t due_ms; /* monotonic ms the next probe is due; 0: none scheduled */
    /* the fleet's consensus (fleet/): while cons_on, cons_down decides
     * whether the region is up for traffic instead of st.up */
    bool cons_on, cons_down;
};

/* Up by its checks: this instance's verdict, or the fleet's consensus
 * where it decides (checks.consensus). */
static inline bool health_up(const struct health *h)
{
    return h->cons_on ? !h->cons_down : h->st.up;
}

#define HEALTH_DURATION_BUCKETS 12
extern const double health_duration_bounds[HEALTH_DURATION_BUCKETS];

struct event_base;
struct health_ctl;

/* Frees a published choice once no worker can read it (server_retire). */
typedef void (*health_retire_fn)(void *ctx, void *p, void (*free_fn)(void *));

/* Starts checking every region of cfg; first probes run at once. */
struct health_ctl *health_start(struct event_base *base, struct config *cfg,
                                health_retire_fn retire, void *retire_ctx);
/* Moves to a new config before it is published: the state of every region
 * whose pool name, region name and check are unchanged carries over, with
 * its schedule (the probe in flight, or the time the next one is due); new
 * or changed regions start at `initial` and are probed at once. Publishes
 * the new config's choices; a pool whose choice is unchanged goes on with
 * its weighted cycle where it was. False on OOM (then nothing changed). */
bool health_reload(struct health_ctl *h, struct config *cfg);
void health_stop(struct health_ctl *h);
/* Emits the all-down events health_reload() held back, so that they follow
 * the override events of the same reload (maint_reload). */
void health_flush_events(struct health_ctl *h);
/* fn(arg) runs on the main thread after any region's health changed
 * (statefile.c); NULL: nothing runs. */
void health_on_change(struct health_ctl *h, void (*fn)(void *), void *arg);
/* fn(arg, h) runs on the main thread when region h's own verdict
 * changed, before its pool's choice is published (the fleet publishes it
 * and works out the consensus); NULL: nothing runs. */
void health_on_verdict(struct health_ctl *hc, void (*fn)(void *, struct health *), void *arg);
/* The fleet's consensus for h: on, with the region down or not, or off
 * (its own verdict decides). Logs and republishes when that moves the
 * region; why says how the fleet decided. */
void health_set_consensus(struct health_ctl *hc, struct health *h, bool on, bool down,
                          const char *why);
/* Publishes p's choice again after its regions' operator states changed
 * (maint.c); nothing is published if traffic goes the same way. */
void health_republish(struct health_ctl *h, struct pool *p);
/* The region(s) a pool's traffic goes to now: "eu-west", "eu+us",
 * "fallback", "reject". */
void health_choice_text(const struct pool *p, char *buf, size_t len);
/* Sends systemd a STATUS= line: "api→eu-west; 3/3 regions up". */
void health_notify_status(const struct health_ctl *h);

/* Walks every region's live health (for status and metrics). */
size_t health_count(const struct health_ctl *h);
const struct health *health_at(const struct health_ctl *h, size_t i);
/* True if the region is up for traffic (operator override included). */
bool health_region_up(const struct region *r);
/* The up-set of a pool as the request path sees it. */
uint64_t health_pool_upset(const struct pool *p);

#endif
