#include "autoconf.h"

#include "control/schedule.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MS_PER_SEC 1000
#define MS_PER_DAY INT64_C(86400000)

/* ---- civil time (proleptic Gregorian, UTC) ---- */

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 (H. Hinnant's days_from_civil: eras of 400 years
 * make it exact without tables or loops). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* ---- RFC 3339 ---- */

/* n decimal digits at *p, advancing it; false unless all n are digits. */
static bool digits(const char **p, unsigned n, unsigned *v)
{
    *v = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (c < '0' || c > '9') return false;
        *v = *v * 10 + (c - '0');
    }
    *p += n;
    return true;
}

static bool expect(const char **p, char c)
{
    if (**p != c) return false;
    (*p)++;
    return true;
}

bool sched_parse_time(const char *s, int64_t *unix_ms)
{
    const char *p = s;
    unsigned year, mon, day, hour, min, sec, ms = 0;
    if (!digits(&p, 4, &year) || !expect(&p, '-') || !digits(&p, 2, &mon) || !expect(&p, '-') ||
        !digits(&p, 2, &day))
        return false;
    if (*p != 'T' && *p != 't') return false;
    p++;
    if (!digits(&p, 2, &hour) || !expect(&p, ':') || !digits(&p, 2, &min) || !expect(&p, ':') ||
        !digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return false;
        /* milliseconds from the first three digits; finer ones are cut */
        for (unsigned scale = 100; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (unsigned)(*p - '0') * scale;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        unsigned oh, om;
        if (!digits(&p, 2, &oh) || !expect(&p, ':') || !digits(&p, 2, &om)) return false;
        if (oh > 23 || om > 59) return false;
        offset_min = sign * (int)(oh * 60 + om);
    } else {
        return false;
    }
    if (*p != '\0') return false;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon)) return false;
    if (hour > 23 || min > 59 || sec > 59) return false; /* no leap second: 60 is refused */

    int64_t secs = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    *unix_ms = (secs - (int64_t)offset_min * 60) * MS_PER_SEC + ms;
    return true;
}

void sched_format_time(int64_t unix_ms, char *buf, size_t len)
{
    /* floor division: instants before 1970 still count forward within a day */
    int64_t days = unix_ms / MS_PER_DAY, rem = unix_ms % MS_PER_DAY;
    if (rem < 0) {
        rem += MS_PER_DAY;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    unsigned ms = (unsigned)(rem % MS_PER_SEC), s = (unsigned)(rem / MS_PER_SEC);
    if (ms)
        snprintf(buf, len, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%03uZ", y, m, d, s / 3600,
                 s / 60 % 60, s % 60, ms);
    else
        snprintf(buf, len, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ", y, m, d, s / 3600,
                 s / 60 % 60, s % 60);
}

/* ---- evaluation ---- */

/* How strongly a window's state keeps traffic away: down beats drain. */
static int severity(enum region_state s)
{
    switch (s) {
    case REGION_DOWN: return 2;
    case REGION_DRAIN: return 1;
    default: return 0;
    }
}

static const struct sched_fleet_drain *fleet_of(const struct sched_model *m, size_t p, size_t i)
{
    return m->pools[p].fleet ? &m->pools[p].fleet[i] : NULL;
}

static bool override_active(const struct sched_override *o, int64_t now_ms)
{
    return o->state != REGION_AUTO && (!o->has_until || now_ms < o->until_ms);
}

bool sched_fleet_active(const struct sched_fleet_drain *f, int64_t now_ms)
{
    return f && f->set && severity(f->state) && (!f->has_from || now_ms >= f->from_ms) &&
           (!f->has_until || now_ms < f->until_ms);
}

enum sched_phase sched_window_phase(const struct sched_window *w, int64_t now_ms)
{
    if (now_ms < w->from_ms) return SCHED_PENDING;
    if (now_ms < w->until_ms) return SCHED_ACTIVE;
    return SCHED_OVER;
}

/* True if window w should be the source instead of the one r holds.
 * Windows are visited in order, so on a full tie the earlier one stays. */
static bool window_wins(const struct sched_window *w, const struct sched_region *r)
{
    if (r->source != SCHED_SOURCE_WINDOW) return true;
    int a = severity(w->state), b = severity(r->state);
    if (a != b) return a > b;
    return w->until_ms > r->until_ms;
}

void sched_eval(const struct sched_model *m, int64_t now_ms, struct sched_result *out)
{
    for (size_t p = 0; p < m->npools; p++)
        for (size_t i = 0; i < m->pools[p].nregions; i++) {
            const struct sched_override *o = &m->pools[p].overrides[i];
            struct sched_region *r = &out->pools[p][i];
            *r = (struct sched_region){.state = REGION_AUTO, .source = SCHED_SOURCE_NONE};
            if (override_active(o, now_ms))
                *r = (struct sched_region){.state = o->state,
                                           .source = SCHED_SOURCE_CONFIG,
                                           .reason = o->reason,
                                           .has_until = o->has_until,
                                           .until_ms = o->until_ms};
            else if (sched_fleet_active(fleet_of(m, p, i), now_ms)) {
                const struct sched_fleet_drain *f = fleet_of(m, p, i);
                *r = (struct sched_region){.state = f->state,
                                           .source = SCHED_SOURCE_FLEET,
                                           .key = f->key,
                                           .reason = f->reason,
                                           .has_until = f->has_until,
                                           .until_ms = f->until_ms};
            }
        }
    for (size_t k = 0; k < m->nwindows; k++) {
        const struct sched_window *w = &m->windows[k];
        out->phases[k] = sched_window_phase(w, now_ms);
        if (out->phases[k] != SCHED_ACTIVE || severity(w->state) == 0) continue;
        for (size_t t = 0; t < w->ntargets; t++) {
            const struct sched_target *tg = &w->targets[t];
            if (tg->pool >= m->npools || tg->region >= m->pools[tg->pool].nregions) continue;
            struct sched_region *r = &out->pools[tg->pool][tg->region];
            if (r->source == SCHED_SOURCE_CONFIG || r->source == SCHED_SOURCE_FLEET ||
                !window_wins(w, r))
                continue;
            *r = (struct sched_region){.state = w->state,
                                       .source = SCHED_SOURCE_WINDOW,
                                       .window = w->name,
                                       .window_index = k,
                                       .reason = w->reason,
                                       .has_until = true,
                                       .until_ms = w->until_ms};
        }
    }
}

static void consider(int64_t t, int64_t now_ms, int64_t *next)
{
    if (t > now_ms && t < *next) *next = t;
}

int64_t sched_next_boundary(const struct sched_model *m, int64_t now_ms)
{
    int64_t next = INT64_MAX;
    for (size_t p = 0; p < m->npools; p++)
        for (size_t i = 0; i < m->pools[p].nregions; i++) {
            const struct sched_override *o = &m->pools[p].overrides[i];
            if (o->state != REGION_AUTO && o->has_until) consider(o->until_ms, now_ms, &next);
            const struct sched_fleet_drain *f = fleet_of(m, p, i);
            if (f && f->set && f->has_from) consider(f->from_ms, now_ms, &next);
            if (f && f->set && f->has_until) consider(f->until_ms, now_ms, &next);
        }
    for (size_t k = 0; k < m->nwindows; k++) {
        consider(m->windows[k].from_ms, now_ms, &next);
        consider(m->windows[k].until_ms, now_ms, &next);
    }
    return next;
}

/* ---- steps ---- */

bool sched_same_source(const struct sched_region *a, const struct sched_region *b)
{
    if (a->source != b->source) return false;
    if (a->source == SCHED_SOURCE_FLEET) return strcmp(a->key, b->key) == 0;
    return a->source != SCHED_SOURCE_WINDOW || strcmp(a->window, b->window) == 0;
}

static bool names(const struct sched_window *w, size_t pool, size_t region)
{
    for (size_t t = 0; t < w->ntargets; t++)
        if (w->targets[t].pool == pool && w->targets[t].region == region) return true;
    return false;
}

bool sched_source_applies(const struct sched_model *m, size_t pool, size_t region,
                          const struct sched_region *s, int64_t now_ms)
{
    if (pool >= m->npools || region >= m->pools[pool].nregions) return false;
    switch (s->source) {
    case SCHED_SOURCE_CONFIG: return override_active(&m->pools[pool].overrides[region], now_ms);
    case SCHED_SOURCE_FLEET: {
        const struct sched_fleet_drain *f = fleet_of(m, pool, region);
        return sched_fleet_active(f, now_ms) && strcmp(f->key, s->key) == 0;
    }
    case SCHED_SOURCE_WINDOW:
        for (size_t k = 0; k < m->nwindows; k++) {
            const struct sched_window *w = &m->windows[k];
            if (strcmp(w->name, s->window) == 0)
                return severity(w->state) && sched_window_phase(w, now_ms) == SCHED_ACTIVE &&
                       names(w, pool, region);
        }
        return false;
    default: return false;
    }
}

size_t sched_step_notes(const struct sched_step *s, enum sched_note out[2])
{
    const struct sched_region *was = s->was, *now = s->now;
    size_t n = 0;
    if (sched_same_source(was, now)) {
        if (was->state != now->state) out[n++] = SCHED_NOTE_CHANGED;
        return n;
    }
    if (was->source != SCHED_SOURCE_NONE && !s->was_applies) out[n++] = SCHED_NOTE_ENDED;
    if (now->source != SCHED_SOURCE_NONE && !s->now_applied) out[n++] = SCHED_NOTE_STARTED;
    if (n == 0) /* both sources applied before and apply now: their rank changed */
        out[n++] = was->source == SCHED_SOURCE_NONE   ? SCHED_NOTE_STARTED
                   : now->source == SCHED_SOURCE_NONE ? SCHED_NOTE_ENDED
                                                      : SCHED_NOTE_OVERTAKEN;
    return n;
}

const char *sched_source_name(enum sched_source s)
{
    static const char *const names[] = {
        [SCHED_SOURCE_NONE] = "none",
        [SCHED_SOURCE_CONFIG] = "config",
        [SCHED_SOURCE_WINDOW] = "maintenance",
        [SCHED_SOURCE_FLEET] = "fleet",
    };
    return names[s];
}

const char *sched_phase_name(enum sched_phase p)
{
    static const char *const names[] = {
        [SCHED_PENDING] = "pending",
        [SCHED_ACTIVE] = "active",
        [SCHED_OVER] = "over",
    };
    return names[p];
}
