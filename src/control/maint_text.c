#include "autoconf.h"

#include "control/maint_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "control/config.h"

#define CUT_MARK "..."

/* A text being built into a caller's buffer: appends until it is full,
 * then marks the cut. */
struct text {
    char *p;
    size_t len, cap;
    bool cut; /* full: nothing more is appended */
};

static struct text text_start(char *buf, size_t len)
{
    if (len) buf[0] = '\0';
    return (struct text){buf, 0, len, len == 0};
}

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    if (t->cut) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < t->cap - t->len) {
        t->len += (size_t)n;
        return;
    }
    /* cut: before the character the mark would split (UTF-8), and say so */
    t->cut = true;
    t->len = t->cap - 1;
    if (t->cap <= sizeof(CUT_MARK)) return;
    size_t at = t->cap - sizeof(CUT_MARK);
    while (at > 0 && ((unsigned char)t->p[at] & 0xC0) == 0x80) at--;
    memcpy(t->p + at, CUT_MARK, sizeof(CUT_MARK));
    t->len = at + sizeof(CUT_MARK) - 1;
}

static const char *why_text(const char *reason)
{
    return reason ? reason : "no reason given";
}

static const char *state(const struct sched_region *s)
{
    return region_state_name(s->state);
}

/* " (reason, until T)", " (reason)", " (until T)" or nothing */
static void put_detail(struct text *t, const struct sched_region *s)
{
    char until[SCHED_TIME_LEN];
    if (s->has_until) sched_format_time(s->until_ms, until, sizeof(until));
    if (s->reason && s->has_until)
        put(t, " (%s, until %s)", s->reason, until);
    else if (s->reason)
        put(t, " (%s)", s->reason);
    else if (s->has_until)
        put(t, " (until %s)", until);
}

static void put_source(struct text *t, const struct sched_region *s)
{
    switch (s->source) {
    case SCHED_SOURCE_WINDOW: put(t, "%s under maintenance %s", state(s), s->window); break;
    case SCHED_SOURCE_CONFIG: put(t, "%s by its own override", state(s)); break;
    case SCHED_SOURCE_FLEET: put(t, "%s by fleet drain %s", state(s), s->key); break;
    default: put(t, "auto"); return;
    }
    put_detail(t, s);
}

void maint_text_source(const struct sched_region *s, char *buf, size_t len)
{
    struct text t = text_start(buf, len);
    put_source(&t, s);
}

static const struct sched_region no_source = {.state = REGION_AUTO};

static void put_fate(struct text *t, const struct sched_region *was, const struct sched_region *now)
{
    if (!was) was = &no_source;
    if (now->source == SCHED_SOURCE_NONE) {
        put(t, "%s auto", was->source == SCHED_SOURCE_NONE ? "stays" : "is now");
        return;
    }
    put(t, "%s ", was->state == now->state ? "stays" : "is now");
    put_source(t, now);
}

void maint_text_fate(const struct sched_region *was, const struct sched_region *now, char *buf,
                     size_t len)
{
    struct text t = text_start(buf, len);
    put_fate(&t, was, now);
}

/* "maintenance NAME" or "override STATE": what starts or ends */
static void put_name(struct text *t, const struct sched_region *s)
{
    if (s->source == SCHED_SOURCE_WINDOW)
        put(t, "maintenance %s", s->window);
    else if (s->source == SCHED_SOURCE_FLEET)
        put(t, "fleet drain %s (%s)", s->key, state(s));
    else
        put(t, "override %s", state(s));
}

/* "maintenance NAME (reason, until T)" or "the region's own override
 * STATE (...)": a source that still applies, for a source taking
 * precedence over it */
static void put_ref(struct text *t, const struct sched_region *s)
{
    if (s->source == SCHED_SOURCE_WINDOW)
        put(t, "maintenance %s", s->window);
    else if (s->source == SCHED_SOURCE_FLEET)
        put(t, "fleet drain %s (%s)", s->key, state(s));
    else
        put(t, "the region's own override %s", state(s));
    put_detail(t, s);
}

void maint_text_event(enum sched_note n, const struct sched_step *st, enum maint_cause why,
                      char *buf, size_t len)
{
    struct text t = text_start(buf, len);
    const char *by = why == MAINT_BY_RELOAD ? " (config reloaded)" : "";
    switch (n) {
    case SCHED_NOTE_ENDED:
        put_name(&t, st->was);
        if (why == MAINT_BY_CLOCK_BACK)
            put(&t, " is pending again (the wall clock moved back)");
        else
            put(&t, " ended%s", by);
        put(&t, ": %s; the region ", why_text(st->was->reason));
        put_fate(&t, st->was, st->now);
        break;
    case SCHED_NOTE_STARTED:
        put_name(&t, st->now);
        if (why == MAINT_BY_CLOCK_BACK)
            put(&t, " in force again (the wall clock moved back)");
        else
            put(&t, " started%s", by);
        put(&t, ": %s", why_text(st->now->reason));
        if (st->was_applies) {
            put(&t, "; it takes precedence over ");
            put_ref(&t, st->was);
        }
        break;
    case SCHED_NOTE_CHANGED:
        if (st->now->source == SCHED_SOURCE_WINDOW)
            put(&t, "maintenance %s", st->now->window);
        else if (st->now->source == SCHED_SOURCE_FLEET)
            put(&t, "fleet drain %s", st->now->key);
        else
            put(&t, "override");
        put(&t, " changed from %s to %s%s: %s", state(st->was), state(st->now), by,
            why_text(st->now->reason));
        break;
    case SCHED_NOTE_OVERTAKEN:
        put_name(&t, st->now);
        put(&t, " takes precedence over ");
        put_ref(&t, st->was);
        put(&t, "%s: %s", by, why_text(st->now->reason));
        break;
    }
}

bool maint_text_override(enum sched_note n, const struct sched_step *st, enum maint_cause why,
                         char *buf, size_t len)
{
    struct text t = text_start(buf, len);
    if (why == MAINT_BY_RELOAD) return false;
    if (n == SCHED_NOTE_ENDED && st->was->source == SCHED_SOURCE_CONFIG) {
        put(&t, "override %s ended", state(st->was));
        if (st->was->has_until) {
            char until[SCHED_TIME_LEN];
            sched_format_time(st->was->until_ms, until, sizeof(until));
            put(&t, " at %s", until);
        }
        put(&t, " (%s); the region ", why_text(st->was->reason));
        put_fate(&t, st->was, st->now);
        return true;
    }
    if (n == SCHED_NOTE_ENDED && st->was->source == SCHED_SOURCE_FLEET) {
        put(&t, "fleet drain %s (%s) ended (%s); the region ", st->was->key, state(st->was),
            why_text(st->was->reason));
        put_fate(&t, st->was, st->now);
        return true;
    }
    if (n == SCHED_NOTE_STARTED && st->now->source == SCHED_SOURCE_FLEET) {
        put(&t, "fleet drain %s started: %s", st->now->key, state(st->now));
        put_detail(&t, st->now);
        if (st->was_applies) {
            put(&t, "; it takes precedence over ");
            put_ref(&t, st->was);
        }
        return true;
    }
    if (n == SCHED_NOTE_STARTED && st->now->source == SCHED_SOURCE_CONFIG &&
        why == MAINT_BY_CLOCK_BACK) {
        put(&t, "override %s in force again (the wall clock moved back): %s", state(st->now),
            why_text(st->now->reason));
        if (st->was_applies) {
            put(&t, "; it takes precedence over ");
            put_ref(&t, st->was);
        }
        return true;
    }
    return false;
}

static bool holds(const struct sched_window *w, const struct sched_region *s)
{
    return s && s->source == SCHED_SOURCE_WINDOW && strcmp(s->window, w->name) == 0;
}

static const char *verb(enum maint_window_change ch, enum maint_cause why)
{
    switch (ch) {
    case MAINT_WINDOW_STARTED:
        return why == MAINT_BY_RELOAD       ? "started (config reloaded)"
               : why == MAINT_BY_CLOCK_BACK ? "in force again (the wall clock moved back)"
                                            : "started";
    case MAINT_WINDOW_IN_FORCE: return "in force";
    case MAINT_WINDOW_ENDED:
        return why == MAINT_BY_RELOAD       ? "ended (config reloaded)"
               : why == MAINT_BY_CLOCK_BACK ? "is pending again (the wall clock moved back)"
                                            : "ended";
    default: return "";
    }
}

/* "POOL/REGION, ..." of the targets `pick` selects; how many */
static size_t put_targets(struct text *t, const struct maint_target *tg, size_t n,
                          const struct sched_window *w,
                          bool (*pick)(const struct sched_window *, const struct maint_target *))
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!pick || pick(w, &tg[i])) put(t, "%s%s/%s", k++ ? ", " : "", tg[i].pool, tg[i].region);
    return k;
}

static bool held(const struct sched_window *w, const struct maint_target *t)
{
    return holds(w, t->now);
}

static bool freed(const struct sched_window *w, const struct maint_target *t)
{
    (void)w;
    return t->now && t->now->source == SCHED_SOURCE_NONE &&
           (!t->was || t->was->source != SCHED_SOURCE_NONE);
}

static size_t count(const struct maint_target *t, size_t n, const struct sched_window *w,
                    bool (*pick)(const struct sched_window *, const struct maint_target *))
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += pick(w, &t[i]);
    return k;
}

void maint_text_window(const struct sched_window *w, enum maint_window_change ch,
                       enum sched_phase phase, enum maint_cause why, const struct maint_target *t,
                       size_t n, char *buf, size_t len)
{
    struct text o = text_start(buf, len);
    if (ch == MAINT_WINDOW_MOVED) {
        put(&o, "maintenance %s is %s now (%s): ", w->name, sched_phase_name(phase),
            why == MAINT_BY_RELOAD ? "config reloaded" : "the wall clock moved");
        put_targets(&o, t, n, w, NULL);
        put(&o, " (%s)", why_text(w->reason));
        return;
    }
    if (ch == MAINT_WINDOW_ENDED) {
        /* what each region is now: first those it left to their checks */
        put(&o, "maintenance %s %s: %s; ", w->name, verb(ch, why), why_text(w->reason));
        size_t k = count(t, n, w, freed);
        if (k) {
            put_targets(&o, t, n, w, freed);
            put(&o, " %s now auto", k == 1 ? "is" : "are");
        }
        for (size_t i = 0; i < n; i++) {
            if (freed(w, &t[i])) continue;
            put(&o, "%s%s/%s ", k++ ? "; " : "", t[i].pool, t[i].region);
            if (t[i].now)
                put_fate(&o, t[i].was, t[i].now);
            else
                put(&o, "is no longer in the config");
        }
        return;
    }
    /* a start: the regions it holds, then what holds the others */
    char until[SCHED_TIME_LEN];
    sched_format_time(w->until_ms, until, sizeof(until));
    put(&o, "maintenance %s %s", w->name, verb(ch, why));
    if (count(t, n, w, held)) {
        put(&o, ": %s ", region_state_name(w->state));
        put_targets(&o, t, n, w, held);
        put(&o, " until %s (%s)", until, why_text(w->reason));
    } else {
        put(&o, " until %s (%s)", until, why_text(w->reason));
    }
    for (size_t i = 0; i < n; i++) {
        if (held(w, &t[i]) || !t[i].now) continue;
        put(&o, "; %s/%s ", t[i].pool, t[i].region);
        put_fate(&o, t[i].was, t[i].now);
    }
}
