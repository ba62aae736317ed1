#include "autoconf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "serve/select.h"
#include "unit.h"

#define BIT(i) (UINT64_C(1) << (i))

/* A hand-made pool: regions with priority, weight and operator state. */
static struct pool P;
static struct region R[CONFIG_MAX_REGIONS];

static void pool_reset(size_t n, enum all_down_action a)
{
    memset(&P, 0, sizeof(P));
    memset(R, 0, sizeof(R));
    P.name = "p";
    P.regions = R;
    P.nregions = n;
    P.all_down = a;
    for (size_t i = 0; i < n; i++) {
        R[i].priority = 1;
        R[i].weight = 1;
        R[i].state = R[i].op = REGION_AUTO;
    }
}

static void region_set(size_t i, unsigned prio, unsigned weight, enum region_state st)
{
    R[i].priority = prio;
    R[i].weight = weight;
    R[i].state = R[i].op = st; /* the operator state in force: as configured */
}

static uint64_t all_set(size_t n)
{
    return n >= 64 ? ~UINT64_C(0) : BIT(n) - 1;
}

/* Counts of each index in seq[0..n). */
static void count(const uint16_t *seq, size_t n, size_t *cnt, size_t nreg)
{
    memset(cnt, 0, nreg * sizeof(*cnt));
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_lt(seq[i], nreg);
        cnt[seq[i]]++;
    }
}

/* ---- smooth weighted round-robin ---- */

static void expect_seq(const unsigned *w, size_t n, uint64_t mask, const char *want)
{
    uint16_t seq[256];
    size_t len = select_wrr(w, n, mask, seq);
    char got[257];
    for (size_t i = 0; i < len && i < 256; i++) got[i] = (char)('a' + seq[i]);
    got[len < 256 ? len : 256] = '\0';
    ck_assert_str_eq(got, want);
}

START_TEST(test_wrr_order)
{
    const unsigned w511[] = {5, 1, 1};
    expect_seq(w511, 3, 7, "aabacaa"); /* a a b a c a a */
    const unsigned w111[] = {1, 1, 1};
    expect_seq(w111, 3, 7, "abc");
    const unsigned w21[] = {2, 1};
    expect_seq(w21, 2, 3, "aba");
    const unsigned w32[] = {3, 2};
    expect_seq(w32, 2, 3, "ababa");
    const unsigned w1[] = {1};
    expect_seq(w1, 1, 1, "a");
    const unsigned w4[] = {4};
    expect_seq(w4, 1, 1, "aaaa");
    const unsigned w115[] = {1, 1, 5};
    expect_seq(w115, 3, 7, "ccacbcc");
    /* a masked-out region is skipped, the others keep their relative order */
    const unsigned w5x11[] = {5, 9, 1, 1};
    expect_seq(w5x11, 4, 0xd, "aacadaa");
    /* weight 0 inside the mask contributes nothing */
    const unsigned w501[] = {5, 0, 1, 1};
    expect_seq(w501, 4, 0xf, "aacadaa");
    /* an empty mask yields an empty sequence */
    expect_seq(w511, 3, 0, "");
}
END_TEST

/* Deterministic pseudo-random numbers for weight sets. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 16;
}

START_TEST(test_wrr_exact_proportions)
{
    uint32_t seed = 42;
    static uint16_t seq[CONFIG_MAX_REGIONS * CONFIG_MAX_WEIGHT];
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + lcg(&seed) % 12;
        unsigned w[CONFIG_MAX_REGIONS];
        uint64_t mask = 0;
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            w[i] = lcg(&seed) % 4 == 0 ? lcg(&seed) % 200 : lcg(&seed) % 7;
            if (lcg(&seed) % 5) mask |= BIT(i);
            if (mask & BIT(i)) total += w[i];
        }
        size_t len = select_wrr(w, n, mask, seq);
        ck_assert_uint_eq(len, total);
        size_t cnt[CONFIG_MAX_REGIONS];
        count(seq, len, cnt, n);
        for (size_t i = 0; i < n; i++) {
            size_t want = (mask & BIT(i)) ? w[i] : 0;
            ck_assert_msg(cnt[i] == want, "round %d region %zu: %zu, want %zu", round, i, cnt[i],
                          want);
        }
    }

    /* the largest case: 64 regions of weight 1000 */
    unsigned w[CONFIG_MAX_REGIONS];
    for (size_t i = 0; i < CONFIG_MAX_REGIONS; i++) w[i] = CONFIG_MAX_WEIGHT - (unsigned)i * 7;
    size_t len = select_wrr(w, CONFIG_MAX_REGIONS, ~UINT64_C(0), seq);
    size_t total = 0;
    for (size_t i = 0; i < CONFIG_MAX_REGIONS; i++) total += w[i];
    ck_assert_uint_eq(len, total);
    size_t cnt[CONFIG_MAX_REGIONS];
    count(seq, len, cnt, CONFIG_MAX_REGIONS);
    for (size_t i = 0; i < CONFIG_MAX_REGIONS; i++) ck_assert_uint_eq(cnt[i], w[i]);
    /* the highest region (index 63) is reachable */
    ck_assert_uint_gt(cnt[63], 0);
}
END_TEST

START_TEST(test_wrr_spread)
{
    /* equal weights interleave: no region twice in a row */
    unsigned w[8] = {3, 3, 3, 3, 3, 3, 3, 3};
    uint16_t seq[64];
    size_t len = select_wrr(w, 8, 0xff, seq);
    ck_assert_uint_eq(len, 24);
    for (size_t i = 1; i < len; i++) ck_assert_uint_ne(seq[i], seq[i - 1]);
    /* a heavy region never takes more than its share plus one in any prefix */
    unsigned w2[3] = {10, 3, 2};
    len = select_wrr(w2, 3, 7, seq);
    ck_assert_uint_eq(len, 15);
    size_t c0 = 0;
    for (size_t k = 0; k < len; k++) {
        c0 += seq[k] == 0;
        ck_assert_uint_le(c0 * 15, (k + 1) * 10 + 15);
    }
}
END_TEST

/* ---- tiers ---- */

START_TEST(test_tier)
{
    pool_reset(5, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 1, REGION_AUTO);
    region_set(1, 1, 2, REGION_AUTO);
    region_set(2, 2, 1, REGION_AUTO);
    region_set(3, 3, 1, REGION_AUTO);
    region_set(4, 2, 5, REGION_UP);
    uint64_t all = all_set(5);
    ck_assert_uint_eq(select_tier(&P, all), BIT(0) | BIT(1));
    /* one region of the best tier is enough */
    ck_assert_uint_eq(select_tier(&P, all & ~BIT(0)), BIT(1));
    /* fail over to the next tier only when the whole tier is down */
    ck_assert_uint_eq(select_tier(&P, all & ~(BIT(0) | BIT(1))), BIT(2) | BIT(4));
    ck_assert_uint_eq(select_tier(&P, BIT(3) | BIT(4)), BIT(4));
    ck_assert_uint_eq(select_tier(&P, BIT(3)), BIT(3));
    ck_assert_uint_eq(select_tier(&P, 0), 0);
    /* and back */
    ck_assert_uint_eq(select_tier(&P, BIT(3) | BIT(1)), BIT(1));
    /* bits beyond nregions are ignored */
    ck_assert_uint_eq(select_tier(&P, BIT(3) | BIT(40)), BIT(3));

    /* weight 0 is never chosen */
    region_set(1, 1, 0, REGION_AUTO);
    ck_assert_uint_eq(select_tier(&P, all), BIT(0));
    region_set(0, 1, 0, REGION_UP);
    ck_assert_uint_eq(select_tier(&P, all), BIT(2) | BIT(4));

    /* operator down and drain are never chosen, even when reported up */
    pool_reset(4, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 1, REGION_DOWN);
    region_set(1, 1, 1, REGION_DRAIN);
    region_set(2, 2, 1, REGION_AUTO);
    region_set(3, 2, 1, REGION_DRAIN);
    ck_assert_uint_eq(select_tier(&P, all_set(4)), BIT(2));
    ck_assert_uint_eq(select_tier(&P, BIT(0) | BIT(1) | BIT(3)), 0);

    /* priority 0 beats 1; priorities need not be contiguous */
    pool_reset(4, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1000, 1, REGION_AUTO);
    region_set(1, 0, 1, REGION_AUTO);
    region_set(2, 7, 1, REGION_AUTO);
    region_set(3, 0, 1, REGION_AUTO);
    ck_assert_uint_eq(select_tier(&P, all_set(4)), BIT(1) | BIT(3));
    ck_assert_uint_eq(select_tier(&P, BIT(0) | BIT(2)), BIT(2));
    ck_assert_uint_eq(select_tier(&P, BIT(0)), BIT(0));

    /* 64 regions: the last bit works */
    pool_reset(64, ALL_DOWN_FAIL_OPEN);
    for (size_t i = 0; i < 64; i++) region_set(i, 64 - (unsigned)i, 1, REGION_AUTO);
    ck_assert_uint_eq(select_tier(&P, ~UINT64_C(0)), BIT(63));
    ck_assert_uint_eq(select_tier(&P, ~BIT(63)), BIT(62));
}
END_TEST

START_TEST(test_fail_open_set)
{
    pool_reset(5, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 1, REGION_AUTO);
    region_set(1, 1, 1, REGION_UP);
    region_set(2, 1, 1, REGION_DOWN);
    region_set(3, 1, 1, REGION_DRAIN);
    region_set(4, 1, 0, REGION_AUTO);
    ck_assert_uint_eq(select_fail_open_set(&P), BIT(0) | BIT(1) | BIT(4));
}
END_TEST

/* ---- choices ---- */

static void choice_counts(struct choice *ch, size_t calls, size_t *cnt, size_t nreg)
{
    memset(cnt, 0, nreg * sizeof(*cnt));
    for (size_t i = 0; i < calls; i++) {
        enum choice_action a;
        int r = select_next(&P, ch, 0, &a);
        ck_assert_int_eq(a, CHOICE_REGION);
        ck_assert_int_ge(r, 0);
        ck_assert_int_lt(r, (int)nreg);
        cnt[r]++;
    }
}

START_TEST(test_compute_region)
{
    pool_reset(4, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 5, REGION_AUTO);
    region_set(1, 1, 1, REGION_AUTO);
    region_set(2, 1, 1, REGION_UP);
    region_set(3, 2, 9, REGION_AUTO);
    struct choice *ch = select_compute(&P, all_set(4), NULL, -1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_uint_eq(ch->up, all_set(4));
    ck_assert_uint_eq(ch->n, 7);
    /* the smooth order, then again */
    static const int order[] = {0, 0, 1, 0, 2, 0, 0};
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 7; i++) {
            enum choice_action a;
            ck_assert_int_eq(select_next(&P, ch, 0, &a), order[i]);
        }
    /* every aligned window of sum(weights) requests: exactly 5/1/1/0 */
    for (int win = 0; win < 1000; win++) {
        size_t cnt[4];
        choice_counts(ch, 7, cnt, 4);
        ck_assert_uint_eq(cnt[0], 5);
        ck_assert_uint_eq(cnt[1], 1);
        ck_assert_uint_eq(cnt[2], 1);
        ck_assert_uint_eq(cnt[3], 0);
    }
    free(ch);

    /* fail-over to the next tier */
    ch = select_compute(&P, BIT(3), NULL, -1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_uint_eq(ch->n, 9);
    for (int i = 0; i < 50; i++) {
        enum choice_action a;
        ck_assert_int_eq(select_next(&P, ch, 0, &a), 3);
        ck_assert_int_eq(a, CHOICE_REGION);
    }
    free(ch);

    /* a single region of weight 1 */
    ch = select_compute(&P, BIT(1), NULL, -1);
    ck_assert_uint_eq(ch->n, 1);
    for (int i = 0; i < 10; i++) {
        enum choice_action a;
        ck_assert_int_eq(select_next(&P, ch, 0, &a), 1);
    }
    free(ch);
}
END_TEST

START_TEST(test_compute_many_calls)
{
    pool_reset(6, ALL_DOWN_REJECT);
    const unsigned w[6] = {3, 2, 0, 5, 7, 1};
    for (size_t i = 0; i < 6; i++) region_set(i, 1, w[i], REGION_AUTO);
    region_set(5, 1, 1, REGION_DRAIN);
    struct choice *ch = select_compute(&P, all_set(6), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_uint_eq(ch->n, 17);
    size_t cnt[6];
    choice_counts(ch, 17 * 10000, cnt, 6);
    ck_assert_uint_eq(cnt[0], 30000);
    ck_assert_uint_eq(cnt[1], 20000);
    ck_assert_uint_eq(cnt[2], 0);
    ck_assert_uint_eq(cnt[3], 50000);
    ck_assert_uint_eq(cnt[4], 70000);
    ck_assert_uint_eq(cnt[5], 0);
    /* a window that starts anywhere still has exact counts (the sequence is periodic) */
    size_t start = (size_t)atomic_load(&ch->next) + 5;
    for (size_t i = 0; i < 5; i++) {
        enum choice_action a;
        select_next(&P, ch, 0, &a);
    }
    ck_assert_uint_eq(atomic_load(&ch->next), start);
    choice_counts(ch, 17, cnt, 6);
    ck_assert_uint_eq(cnt[0], 3);
    ck_assert_uint_eq(cnt[1], 2);
    ck_assert_uint_eq(cnt[3], 5);
    ck_assert_uint_eq(cnt[4], 7);
    free(ch);
}
END_TEST

struct thread_arg {
    struct choice *ch;
    size_t calls;
    size_t cnt[4];
};

static void *worker(void *p)
{
    struct thread_arg *t = p;
    for (size_t i = 0; i < t->calls; i++) {
        enum choice_action a;
        int r = select_next(&P, t->ch, 0, &a);
        if (r >= 0 && r < 4) t->cnt[r]++;
    }
    return NULL;
}

START_TEST(test_compute_threads)
{
    /* exact proportions across all workers together, not per worker */
    pool_reset(3, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 5, REGION_AUTO);
    region_set(1, 1, 1, REGION_AUTO);
    region_set(2, 1, 1, REGION_AUTO);
    struct choice *ch = select_compute(&P, all_set(3), NULL, -1);
    enum { NT = 4 };
    struct thread_arg args[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].ch = ch;
        args[i].calls = 7 * 5000 + (size_t)i; /* uneven per worker */
    }
    size_t total = 0;
    for (int i = 0; i < NT; i++) total += args[i].calls;
    for (int i = 0; i < NT; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    /* pad the total up to a whole number of windows */
    size_t cnt[4] = {0};
    for (int i = 0; i < NT; i++)
        for (int r = 0; r < 4; r++) cnt[r] += args[i].cnt[r];
    while (total % 7) {
        enum choice_action a;
        cnt[select_next(&P, ch, 0, &a)]++;
        total++;
    }
    ck_assert_uint_eq(cnt[0], total / 7 * 5);
    ck_assert_uint_eq(cnt[1], total / 7);
    ck_assert_uint_eq(cnt[2], total / 7);
    free(ch);
}
END_TEST

START_TEST(test_compute_all_down)
{
    enum choice_action a;

    /* fail_open: as if every auto/up region with weight > 0 were passing */
    pool_reset(4, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 2, REGION_AUTO);
    region_set(1, 1, 1, REGION_UP);
    region_set(2, 0, 3, REGION_DOWN);  /* better tier, but down by hand */
    region_set(3, 0, 3, REGION_DRAIN); /* better tier, but drained */
    struct choice *ch = select_compute(&P, 0, NULL, -1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_uint_eq(ch->up, 0);
    ck_assert_uint_eq(ch->n, 3);
    size_t cnt[4];
    choice_counts(ch, 300, cnt, 4);
    ck_assert_uint_eq(cnt[0], 200);
    ck_assert_uint_eq(cnt[1], 100);
    ck_assert_uint_eq(cnt[2], 0);
    ck_assert_uint_eq(cnt[3], 0);
    free(ch);

    /* fail_open keeps the tiers: the best auto tier wins */
    pool_reset(3, ALL_DOWN_FAIL_OPEN);
    region_set(0, 2, 1, REGION_AUTO);
    region_set(1, 1, 1, REGION_AUTO);
    region_set(2, 1, 0, REGION_AUTO); /* weight 0: still never */
    ch = select_compute(&P, 0, NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(select_next(&P, ch, 0, &a), 1);
    free(ch);

    /* fail_open with every region down or drained by hand: reject */
    pool_reset(3, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 1, REGION_DOWN);
    region_set(1, 1, 1, REGION_DRAIN);
    region_set(2, 2, 4, REGION_DOWN);
    ch = select_compute(&P, 0, NULL, -1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    ck_assert_int_eq(select_next(&P, ch, 0, &a), -1);
    ck_assert_int_eq(a, CHOICE_REJECT);
    free(ch);
    /* ... even when the health checks say they are up */
    ch = select_compute(&P, all_set(3), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    free(ch);

    /* fail_open with every weight 0: reject */
    pool_reset(2, ALL_DOWN_FAIL_OPEN);
    region_set(0, 1, 0, REGION_AUTO);
    region_set(1, 1, 0, REGION_UP);
    ch = select_compute(&P, 0, NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    ck_assert_int_eq(select_next(&P, ch, 0, &a), -1);
    free(ch);
    ch = select_compute(&P, all_set(2), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    free(ch);

    /* fallback */
    pool_reset(2, ALL_DOWN_FALLBACK);
    region_set(1, 2, 1, REGION_AUTO);
    ch = select_compute(&P, 0, NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_FALLBACK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(select_next(&P, ch, 0, &a), -1);
        ck_assert_int_eq(a, CHOICE_FALLBACK);
    }
    free(ch);
    /* but only when nothing is up: one up region of any tier is used */
    ch = select_compute(&P, BIT(1), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_int_eq(select_next(&P, ch, 0, &a), 1);
    free(ch);

    /* reject */
    pool_reset(2, ALL_DOWN_REJECT);
    ch = select_compute(&P, 0, NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    ck_assert_int_eq(select_next(&P, ch, 0, &a), -1);
    ck_assert_int_eq(a, CHOICE_REJECT);
    free(ch);
    /* reported up, but drained by hand: still all down */
    region_set(0, 1, 1, REGION_DRAIN);
    ch = select_compute(&P, BIT(0), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REJECT);
    free(ch);
    ch = select_compute(&P, BIT(0) | BIT(1), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_int_eq(select_next(&P, ch, 0, &a), 1);
    free(ch);
}
END_TEST

/* ---- latency and hash balance ---- */

START_TEST(test_latency_leader)
{
    pool_reset(4, ALL_DOWN_FAIL_OPEN);
    region_set(3, 2, 1, REGION_AUTO);
    uint64_t tier = BIT(0) | BIT(1) | BIT(2);
    double lat[4] = {100, 90, 50, 1};
    ck_assert_int_eq(select_latency_leader(&P, tier, lat, -1), 2);
    /* the leader changes only for a region at least 20% faster */
    ck_assert_int_eq(select_latency_leader(&P, tier, lat, 0), 2);
    double lat2[4] = {100, 85, 95, 1};
    ck_assert_int_eq(select_latency_leader(&P, tier, lat2, 0), 0);
    ck_assert_int_eq(select_latency_leader(&P, tier, lat2, -1), 1);
    double lat3[4] = {100, 80, -1, 1};
    ck_assert_int_eq(select_latency_leader(&P, tier, lat3, 0), 1);
    /* a previous leader that left the tier or lost its measurement does not stick */
    ck_assert_int_eq(select_latency_leader(&P, BIT(1) | BIT(2), lat2, 0), 1);
    double lat4[4] = {-1, 85, 95, 1};
    ck_assert_int_eq(select_latency_leader(&P, tier, lat4, 0), 1);
    /* nothing measured */
    double none[4] = {-1, -1, -1, -1};
    ck_assert_int_eq(select_latency_leader(&P, tier, none, -1), -1);

    /* select_compute follows the leader (one region, every request) */
    P.balance = BALANCE_LATENCY;
    struct choice *ch = select_compute(&P, all_set(4), lat, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_int_eq(ch->leader, 2);
    enum choice_action a;
    for (int i = 0; i < 10; i++) ck_assert_int_eq(select_next(&P, ch, 0, &a), 2);
    free(ch);
    ch = select_compute(&P, all_set(4), lat2, 0);
    ck_assert_int_eq(ch->leader, 0);
    free(ch);
    /* no measurements yet: weighted over the tier */
    ch = select_compute(&P, all_set(4), NULL, -1);
    ck_assert_int_eq(ch->action, CHOICE_REGION);
    ck_assert_int_eq(ch->leader, -1);
    ck_assert_uint_eq(ch->n, 3);
    free(ch);
    ch = select_compute(&P, all_set(4), none, -1);
    ck_assert_int_eq(ch->leader, -1);
    ck_assert_uint_eq(ch->n, 3);
    free(ch);
}
END_TEST

START_TEST(test_hash)
{
    static const char *const names[] = {"eu", "us", "ap", "sa"};
    pool_reset(4, ALL_DOWN_REJECT);
    P.balance = BALANCE_HASH;
    region_set(0, 1, 1, REGION_AUTO);
    region_set(1, 1, 2, REGION_AUTO);
    region_set(2, 1, 1, REGION_AUTO);
    region_set(3, 2, 1, REGION_AUTO);
    struct select_state *st = calloc(1, sizeof(*st));
    ck_assert_ptr_nonnull(st);
    for (size_t i = 0; i < 4; i++) {
        R[i].name = (char *)names[i];
        st->seed[i] = select_key_hash(names[i], strlen(names[i]));
    }
    P.sel = st;

    ck_assert(select_key_hash("10.0.0.1", 8) == select_key_hash("10.0.0.1", 8));
    ck_assert(select_key_hash("10.0.0.1", 8) != select_key_hash("10.0.0.2", 8));

    struct choice *all = select_compute(&P, all_set(4), NULL, -1);
    ck_assert_int_eq(all->action, CHOICE_HASH);
    ck_assert_uint_eq(all->n, 3);
    struct choice *no_us = select_compute(&P, all_set(4) & ~BIT(1), NULL, -1);
    ck_assert_int_eq(no_us->action, CHOICE_HASH);
    ck_assert_uint_eq(no_us->n, 2);

    enum { KEYS = 20000 };
    size_t cnt[4] = {0};
    for (unsigned k = 0; k < KEYS; k++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "client-%u", k);
        uint64_t h = select_key_hash(key, (size_t)n);
        enum choice_action a;
        int r = select_next(&P, all, h, &a);
        ck_assert_int_eq(a, CHOICE_HASH);
        ck_assert(r >= 0 && r <= 2);
        /* the same client keeps the same region */
        ck_assert_int_eq(select_next(&P, all, h, &a), r);
        cnt[r]++;
        /* when a region goes down, only its clients move */
        int r2 = select_next(&P, no_us, h, &a);
        ck_assert(r2 == 0 || r2 == 2);
        if (r != 1) ck_assert_int_eq(r2, r);
    }
    /* weighted: 1:2:1 within a few percent */
    ck_assert_uint_gt(cnt[0], KEYS / 4 - KEYS / 25);
    ck_assert_uint_lt(cnt[0], KEYS / 4 + KEYS / 25);
    ck_assert_uint_gt(cnt[1], KEYS / 2 - KEYS / 25);
    ck_assert_uint_lt(cnt[1], KEYS / 2 + KEYS / 25);
    ck_assert_uint_eq(cnt[3], 0);
    free(all);
    free(no_us);

    /* all down: the all_down action, as for weighted pools */
    struct choice *none = select_compute(&P, 0, NULL, -1);
    ck_assert_int_eq(none->action, CHOICE_REJECT);
    enum choice_action a;
    ck_assert_int_eq(select_next(&P, none, 42, &a), -1);
    free(none);
    free(st);
}
END_TEST

/* Weighted rendezvous hashing over five regions: shares within 2% of the
 * weights over 100,000 keys, and removing one region moves only its keys. */
START_TEST(test_hash_distribution)
{
    static const char *const names[] = {"r0", "r1", "r2", "r3", "r4"};
    static const unsigned weights[] = {1, 2, 3, 4, 5};
    enum { N = 5, KEYS = 100000 };
    pool_reset(N, ALL_DOWN_REJECT);
    P.balance = BALANCE_HASH;
    struct select_state *st = calloc(1, sizeof(*st));
    ck_assert_ptr_nonnull(st);
    for (size_t i = 0; i < N; i++) {
        region_set(i, 1, weights[i], REGION_AUTO);
        R[i].name = (char *)names[i];
        st->seed[i] = select_key_hash(names[i], strlen(names[i]));
    }
    P.sel = st;
    struct choice *all = select_compute(&P, all_set(N), NULL, -1);
    struct choice *less = select_compute(&P, all_set(N) & ~BIT(2), NULL, -1);
    size_t cnt[N] = {0}, moved_to[N] = {0}, moved = 0;
    for (unsigned k = 0; k < KEYS; k++) {
        uint64_t h = select_key_hash(&k, sizeof(k));
        enum choice_action a;
        int r = select_next(&P, all, h, &a);
        int r2 = select_next(&P, less, h, &a);
        cnt[r]++;
        if (r != r2) {
            ck_assert_int_eq(r, 2); /* only the removed region's keys move */
            moved++;
            moved_to[r2]++;
        }
    }
    for (size_t i = 0; i < N; i++) {
        double share = (double)cnt[i] / KEYS, want = weights[i] / 15.0;
        ck_assert_msg(share > want - 0.02 && share < want + 0.02, "region %zu: %.4f vs %.4f", i,
                      share, want);
    }
    ck_assert_uint_eq(moved, cnt[2]);
    /* the moved keys spread by weight over the remaining regions (1:2:4:5) */
    for (size_t i = 0; i < N; i++) {
        if (i == 2) continue;
        double share = (double)moved_to[i] / moved, want = weights[i] / 12.0;
        ck_assert_msg(share > want - 0.03 && share < want + 0.03, "moved to %zu: %.4f vs %.4f", i,
                      share, want);
    }
    free(all);
    free(less);
    free(st);
}
END_TEST

/* ---- per-config state ---- */

START_TEST(test_init_publish)
{
    static const char yaml[] = "listen: [\"127.0.0.1:8080\"]\n"
                               "pools:\n"
                               "  - name: api\n"
                               "    regions:\n"
                               "      - {name: eu, url: \"https://eu.example.com\", weight: 2}\n"
                               "      - {name: us, url: \"https://us.example.com\", priority: 2}\n"
                               "      - {name: ap, url: \"https://ap.example.com\", state: down}\n"
                               "  - name: off\n"
                               "    hosts: [off.example.com]\n"
                               "    all_down: {action: reject}\n"
                               "    regions:\n"
                               "      - {name: x, url: \"https://x.example.com\", state: drain}\n";
    struct diag d;
    diag_init(&d, "sel.yaml");
    struct config *c = config_parse("sel.yaml", yaml, sizeof(yaml) - 1, &d);
    ck_assert_msg(c != NULL, "config rejected");
    diag_free(&d);

    struct pool *p = &c->pools[0];
    ck_assert_ptr_nonnull(p->sel);
    struct choice *cur = atomic_load(&p->sel->cur);
    ck_assert_ptr_nonnull(cur);
    /* initial: auto counts as up */
    ck_assert_int_eq(cur->action, CHOICE_REGION);
    ck_assert_uint_eq(cur->up, BIT(0) | BIT(1));
    ck_assert_uint_eq(cur->n, 2);
    enum choice_action a;
    ck_assert_int_eq(select_next(p, cur, 0, &a), 0);

    /* eu goes down: us takes over */
    struct choice *old = select_publish(p, NULL, BIT(1), NULL);
    ck_assert_ptr_eq(old, cur);
    free(old);
    cur = atomic_load(&p->sel->cur);
    ck_assert_uint_eq(cur->up, BIT(1));
    for (int i = 0; i < 5; i++) ck_assert_int_eq(select_next(p, cur, 0, &a), 1);

    /* everything down: fail_open by default, back to the best tier */
    old = select_publish(p, NULL, 0, NULL);
    free(old);
    cur = atomic_load(&p->sel->cur);
    ck_assert_int_eq(cur->action, CHOICE_REGION);
    ck_assert_int_eq(select_next(p, cur, 0, &a), 0);

    /* a pool whose only region is drained rejects from the start */
    struct choice *off = atomic_load(&c->pools[1].sel->cur);
    ck_assert_int_eq(off->action, CHOICE_REJECT);
    ck_assert_int_eq(select_next(&c->pools[1], off, 0, &a), -1);
    ck_assert_int_eq(a, CHOICE_REJECT);

    /* release frees the current choices; config_free tolerates it */
    select_release(c);
    ck_assert_ptr_null(c->pools[0].sel);
    config_free(c);
}
END_TEST

static struct config *parse_yaml(const char *yaml)
{
    struct diag d;
    diag_init(&d, "sel.yaml");
    struct config *c = config_parse("sel.yaml", yaml, strlen(yaml), &d);
    diag_free(&d);
    ck_assert_msg(c != NULL, "config rejected");
    return c;
}

#define WRR_POOL(W0, NAME1)                                                                        \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "pools:\n"                                                                                     \
    "  - name: api\n"                                                                              \
    "    regions:\n"                                                                               \
    "      - {name: eu, url: \"https://eu.example.com\", weight: " W0 "}\n"                        \
    "      - {name: " NAME1 ", url: \"https://us.example.com\"}\n"                                 \
    "      - {name: ap, url: \"https://ap.example.com\", priority: 2}\n"

/* The regions the next n requests go to, as letters ('a' + index). */
static void take(struct pool *p, int n, char *out)
{
    struct choice *ch = atomic_load(&p->sel->cur);
    enum choice_action a;
    for (int i = 0; i < n; i++) out[i] = (char)('a' + select_next(p, ch, 0, &a));
    out[n] = '\0';
}

START_TEST(test_publish_same_choice_keeps_cycle)
{
    struct config *c = parse_yaml(WRR_POOL("2", "us"));
    struct pool *p = &c->pools[0];
    char got[16];
    take(p, 2, got);
    ck_assert_str_eq(got, "ab");
    /* the same up-set again: nothing is published, the cycle goes on */
    struct choice *cur = atomic_load(&p->sel->cur);
    ck_assert_ptr_null(select_publish(p, NULL, BIT(0) | BIT(1) | BIT(2), NULL));
    ck_assert_ptr_eq(atomic_load(&p->sel->cur), cur);
    /* the backup tier goes down: the traffic is the same, the choice records
     * the new up-set and continues the cycle */
    struct choice *old = select_publish(p, NULL, BIT(0) | BIT(1), NULL);
    ck_assert_ptr_eq(old, cur);
    free(old);
    cur = atomic_load(&p->sel->cur);
    ck_assert_uint_eq(cur->up, BIT(0) | BIT(1));
    take(p, 4, got);
    ck_assert_str_eq(got, "aaba"); /* the cycle is a, b, a */
    /* a real change starts the new sequence from its beginning */
    old = select_publish(p, NULL, BIT(1) | BIT(2), NULL);
    free(old);
    take(p, 2, got);
    ck_assert_str_eq(got, "bb");
    config_unref(c);
}
END_TEST

/* A reload with the same pool goes on where the running cycle is, so a
 * reload between requests does not send them all to the first region. */
START_TEST(test_publish_across_reload)
{
    struct config *run = parse_yaml(WRR_POOL("1", "us"));
    char got[16];
    take(&run->pools[0], 1, got);
    ck_assert_str_eq(got, "a");
    for (int i = 0; i < 5; i++) {
        struct config *next = parse_yaml(WRR_POOL("1", "us"));
        free(select_publish(&next->pools[0], &run->pools[0], BIT(0) | BIT(1), NULL));
        config_unref(run);
        run = next;
        take(&run->pools[0], 1, got);
        ck_assert_str_eq(got, i % 2 ? "a" : "b");
    }
    /* other weights: a new sequence, from its start */
    struct config *w = parse_yaml(WRR_POOL("3", "us"));
    free(select_publish(&w->pools[0], &run->pools[0], BIT(0) | BIT(1), NULL));
    take(&w->pools[0], 4, got);
    ck_assert_str_eq(got, "aaba");
    /* a region renamed: the same sequence of indexes, but other regions */
    struct config *r = parse_yaml(WRR_POOL("3", "sa"));
    take(&w->pools[0], 1, got);
    free(select_publish(&r->pools[0], &w->pools[0], BIT(0) | BIT(1), NULL));
    take(&r->pools[0], 4, got);
    ck_assert_str_eq(got, "aaba");
    /* the up-set differs from the running one: the choice is another */
    struct config *d = parse_yaml(WRR_POOL("3", "sa"));
    free(select_publish(&d->pools[0], &r->pools[0], BIT(1), NULL));
    take(&d->pools[0], 2, got);
    ck_assert_str_eq(got, "bb");
    config_unref(run);
    config_unref(w);
    config_unref(r);
    config_unref(d);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("select");
    TCase *tc = tcase_create("wrr");
    tcase_add_test(tc, test_wrr_order);
    tcase_add_test(tc, test_wrr_exact_proportions);
    tcase_add_test(tc, test_wrr_spread);
    suite_add_tcase(s, tc);

    TCase *tt = tcase_create("choice");
    tcase_add_test(tt, test_tier);
    tcase_add_test(tt, test_fail_open_set);
    tcase_add_test(tt, test_compute_region);
    tcase_add_test(tt, test_compute_many_calls);
    tcase_add_test(tt, test_compute_threads);
    tcase_add_test(tt, test_compute_all_down);
    tcase_add_test(tt, test_latency_leader);
    tcase_add_test(tt, test_hash);
    tcase_add_test(tt, test_hash_distribution);
    tcase_add_test(tt, test_init_publish);
    tcase_add_test(tt, test_publish_same_choice_keeps_cycle);
    tcase_add_test(tt, test_publish_across_reload);
    suite_add_tcase(s, tt);
    return s;
}
