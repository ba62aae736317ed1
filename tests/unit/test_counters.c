#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"
#include "serve/counters.h"
#include "unit.h"

static struct config *load(const char *yaml)
{
    struct diag d;
    diag_init(&d, "counters.yaml");
    struct config *c = config_parse("counters.yaml", yaml, strlen(yaml), &d);
    if (!c) diag_print(&d, stderr);
    ck_assert_ptr_nonnull(c);
    diag_free(&d);
    return c;
}

static const char two_regions[] = "listen: [\"127.0.0.1:8080\"]\n"
                                  "pools:\n"
                                  "  - name: api\n"
                                  "    regions:\n"
                                  "      - {name: eu, url: \"https://eu.example.net\"}\n"
                                  "      - {name: us, url: \"https://us.example.net\"}\n";

static const char one_region[] = "listen: [\"127.0.0.1:8080\"]\n"
                                 "pools:\n"
                                 "  - name: api\n"
                                 "    regions:\n"
                                 "      - {name: us, url: \"https://us.example.net\"}\n";

static const struct region *region(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->pools[0].nregions; i++)
        if (strcmp(c->pools[0].regions[i].name, name) == 0) return &c->pools[0].regions[i];
    ck_abort_msg("no region %s", name);
    return NULL;
}

static uint64_t total(const struct counters *t, const struct config *c, unsigned nrows,
                      const char *name)
{
    const struct region *r = region(c, name);
    return counters_total(t, c, nrows, "api", name, c->pools[0].status, r->tmpl.slot);
}

START_TEST(test_layout)
{
    struct config *c = load(two_regions);
    const struct pool *p = &c->pools[0];
    /* every template and every error status has its own column */
    ck_assert_uint_eq(c->nslots, 4 + COUNTERS_ERROR_STATUSES);
    ck_assert_uint_ne(p->regions[0].tmpl.slot, p->regions[1].tmpl.slot);
    ck_assert_uint_ne(p->fallback.slot, p->reject.slot);
    for (unsigned e = 0; e < COUNTERS_ERROR_STATUSES; e++)
        ck_assert_uint_eq(counters_error_slot(c, counters_error_status[e]), 4 + e);
    ck_assert(counters_alloc(c, 3));
    /* rows do not share a cache line */
    ck_assert_uint_ge(c->stride, c->nslots);
    ck_assert_uint_eq(c->stride % 8, 0);
    config_unref(c);
}
END_TEST

START_TEST(test_rows_sum)
{
    struct config *c = load(two_regions);
    ck_assert(counters_alloc(c, 2));
    unsigned eu = region(c, "eu")->tmpl.slot;
    counters_inc(counters_row(c, 0), eu);
    counters_inc(counters_row(c, 1), eu);
    counters_inc(counters_row(c, 1), eu);
    ck_assert_uint_eq(counters_live(c, 2, eu), 3);
    ck_assert_uint_eq(counters_live(c, 2, region(c, "us")->tmpl.slot), 0);
    config_unref(c);
}
END_TEST

/* A reload folds the old config: totals never go down, also for a region
 * the new config does not have, and what is counted into the old config
 * between the reload and the barrier is kept too. */
START_TEST(test_fold_across_reload)
{
    struct counters *t = counters_new();
    struct config *old = load(two_regions), *cur = load(one_region);
    ck_assert(counters_alloc(old, 2));
    ck_assert(counters_alloc(cur, 2));
    unsigned eu = region(old, "eu")->tmpl.slot, us = region(old, "us")->tmpl.slot;
    for (int i = 0; i < 5; i++) counters_inc(counters_row(old, 0), eu);
    counters_inc(counters_row(old, 1), us);
    ck_assert_uint_eq(total(t, old, 2, "us"), 1);

    uint64_t *snap = counters_fold_start(t, old, 2); /* the reload publishes cur */
    ck_assert_ptr_nonnull(snap);
    ck_assert_uint_eq(total(t, cur, 2, "us"), 1); /* no gap before the barrier */
    counters_inc(counters_row(old, 1), us);       /* a worker that has not switched yet */
    counters_inc(counters_row(cur, 0), region(cur, "us")->tmpl.slot);
    counters_fold_rest(t, old, 2, snap); /* the barrier passed */
    ck_assert_uint_eq(total(t, cur, 2, "us"), 3);

    config_unref(old);
    config_unref(cur);
    counters_free(t);
}
END_TEST

struct seen {
    unsigned n;
    uint64_t eu;
};

static void on_removed(void *arg, const char *pool, const char *region, unsigned code, uint64_t n)
{
    struct seen *s = arg;
    s->n++;
    if (strcmp(pool, "api") == 0 && strcmp(region, "eu") == 0 && code == 307) s->eu = n;
}

START_TEST(test_removed_keep_totals)
{
    struct counters *t = counters_new();
    struct config *old = load(two_regions), *cur = load(one_region);
    ck_assert(counters_alloc(old, 1));
    ck_assert(counters_alloc(cur, 1));
    for (int i = 0; i < 4; i++) counters_inc(counters_row(old, 0), region(old, "eu")->tmpl.slot);
    counters_inc(counters_row(old, 0), region(old, "us")->tmpl.slot);
    counters_inc(counters_row(old, 0), counters_error_slot(old, 400));
    counters_fold(t, old, 1);
    struct seen s = {0, 0};
    counters_each_removed(t, cur, on_removed, &s);
    ck_assert_uint_eq(s.n, 1); /* eu only: us and the 400s have columns in cur */
    ck_assert_uint_eq(s.eu, 4);
    ck_assert_uint_eq(total(t, cur, 1, "us"), 1);
    ck_assert_uint_eq(counters_total(t, cur, 1, "", "", 400, counters_error_slot(cur, 400)), 1);
    config_unref(old);
    config_unref(cur);
    counters_free(t);
}
END_TEST

/* Many labels: the totals table grows and keeps every one. */
START_TEST(test_many_folds)
{
    struct counters *t = counters_new();
    for (int k = 0; k < 200; k++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 "listen: [\"127.0.0.1:8080\"]\npools:\n  - name: p%d\n    regions:\n"
                 "      - {name: r, url: \"https://r.example.net\"}\n",
                 k);
        struct config *c = load(yaml);
        ck_assert(counters_alloc(c, 1));
        for (int i = 0; i <= k; i++)
            counters_inc(counters_row(c, 0), c->pools[0].regions[0].tmpl.slot);
        counters_fold(t, c, 1);
        config_unref(c);
    }
    struct config *c = load(one_region);
    ck_assert(counters_alloc(c, 1));
    struct seen s = {0, 0};
    counters_each_removed(t, c, on_removed, &s);
    ck_assert_uint_eq(s.n, 200);
    config_unref(c);
    counters_free(t);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("counters");
    TCase *tc = tcase_create("counters");
    tcase_add_test(tc, test_layout);
    tcase_add_test(tc, test_rows_sum);
    tcase_add_test(tc, test_fold_across_reload);
    tcase_add_test(tc, test_removed_keep_totals);
    tcase_add_test(tc, test_many_folds);
    suite_add_tcase(s, tc);
    return s;
}
