/*
 * The kept ledgers of earlier points (daemon/history.c): a ledger is built once per point while
 * it is kept, readers of a point being built wait for it instead of building it again, a full
 * cache evicts the least recently used ledger no reader holds and builds the rest privately,
 * a failed build is not kept, and a ledger unused for the idle time is freed.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "budget/errors.h"
#include "daemon/history.h"

typedef struct {
    atomic_int builds;
    int fail; /* builds left that fail */
    int sleep_ms;
    atomic_int now, most; /* builds running now, and the most at once */
} builder;

static int build(void *ctx, ledger **out)
{
    builder *b = ctx;
    atomic_fetch_add(&b->builds, 1);
    int now = atomic_fetch_add(&b->now, 1) + 1;
    for (int most = atomic_load(&b->most); now > most;)
        if (atomic_compare_exchange_weak(&b->most, &most, now))
            break;
    if (b->sleep_ms > 0)
        nanosleep(&(struct timespec){0, (long)b->sleep_ms * 1000000L}, NULL);
    atomic_fetch_sub(&b->now, 1);
    if (b->fail > 0) {
        b->fail--;
        return BUDGET_EUNAVAILABLE;
    }
    *out = ledger_new();
    return *out ? 0 : BUDGET_EUNAVAILABLE;
}

static const ledger *get(history_cache *c, uint64_t upto, builder *b)
{
    int rc = -1;
    const ledger *l = history_cache_get(c, (history_key){.upto = upto}, build, b, &rc);
    cr_assert_eq(rc, 0, "the build of %llu failed", (unsigned long long)upto);
    cr_assert_not_null(l);
    return l;
}

static history_stats stats(history_cache *c)
{
    history_stats s;
    history_cache_stats(c, &s);
    return s;
}

Test(history, a_point_is_built_once_while_kept)
{
    builder b = {0};
    history_cache *c = history_cache_new(2, 60000, 4);
    const ledger *first = get(c, 10, &b);
    history_cache_release(c, first);
    const ledger *again = get(c, 10, &b);
    cr_expect_eq(again, first, "the kept ledger was not the one answered");
    cr_expect_eq(atomic_load(&b.builds), 1);
    /* decided_by is part of the point */
    int rc;
    const ledger *decided =
        history_cache_get(c, (history_key){.upto = 10, .decided_by = 20240630}, build, &b, &rc);
    cr_expect_neq(decided, again);
    cr_expect_eq(atomic_load(&b.builds), 2);
    history_stats s = stats(c);
    cr_expect(s.builds == 2 && s.hits == 1 && s.kept == 2, "%llu builds %llu hits %llu kept",
              (unsigned long long)s.builds, (unsigned long long)s.hits, (unsigned long long)s.kept);
    history_cache_release(c, again);
    history_cache_release(c, decided);
    history_cache_free(c);
}

typedef struct {
    history_cache *c;
    builder *b;
    uint64_t upto;
    bool give_back; /* release the ledger at once, as a read does once it has packed its page */
    const ledger *got;
} reader;

static void *read_point(void *arg)
{
    reader *r = arg;
    int rc = -1;
    r->got = history_cache_get(r->c, (history_key){.upto = r->upto}, build, r->b, &rc);
    if (r->give_back && r->got != NULL)
        history_cache_release(r->c, r->got);
    return NULL;
}

Test(history, readers_of_a_point_being_built_wait_for_it)
{
    enum { READERS = 8 };
    builder b = {.sleep_ms = 200};
    history_cache *c = history_cache_new(2, 60000, 4);
    reader r[READERS];
    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) {
        r[i] = (reader){.c = c, .b = &b, .upto = 77};
        cr_assert_eq(pthread_create(&t[i], NULL, read_point, &r[i]), 0);
    }
    for (int i = 0; i < READERS; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(atomic_load(&b.builds), 1, "%d builds for %d readers at once",
                 atomic_load(&b.builds), READERS);
    for (int i = 0; i < READERS; i++) {
        cr_expect_eq(r[i].got, r[0].got, "reader %d got another ledger", i);
        history_cache_release(c, r[i].got);
    }
    cr_expect_eq(stats(c).hits, READERS - 1);
    history_cache_free(c);
}

Test(history, a_full_cache_evicts_the_least_recently_used_and_builds_the_rest_privately)
{
    builder b = {0};
    history_cache *c = history_cache_new(2, 60000, 4);
    history_cache_release(c, get(c, 1, &b));
    history_cache_release(c, get(c, 2, &b));
    history_cache_release(c, get(c, 1, &b)); /* 2 is now the least recently used */
    cr_assert_eq(atomic_load(&b.builds), 2);
    history_cache_release(c, get(c, 3, &b)); /* evicts 2 */
    history_cache_release(c, get(c, 1, &b));
    cr_expect_eq(atomic_load(&b.builds), 3, "1 was evicted, not 2");
    history_cache_release(c, get(c, 2, &b));
    cr_expect_eq(atomic_load(&b.builds), 4, "2 was still kept");

    /* Both slots held: a third point is built for its reader alone, and freed when given
     * back (the sanitizer build would report the leak otherwise). */
    const ledger *h1 = get(c, 1, &b), *h2 = get(c, 2, &b);
    int builds = atomic_load(&b.builds);
    const ledger *own = get(c, 9, &b);
    cr_expect_eq(stats(c).kept, 2);
    history_cache_release(c, own);
    cr_expect_eq(atomic_load(&b.builds), builds + 1);
    history_cache_release(c, get(c, 9, &b));
    cr_expect_eq(atomic_load(&b.builds), builds + 2, "a private ledger was kept");
    history_cache_release(c, h1);
    history_cache_release(c, h2);
    history_cache_free(c);
}

Test(history, a_failed_build_is_not_kept)
{
    builder b = {.fail = 1};
    history_cache *c = history_cache_new(2, 60000, 4);
    int rc = 0;
    const ledger *l = history_cache_get(c, (history_key){.upto = 5}, build, &b, &rc);
    cr_expect_null(l);
    cr_expect_eq(rc, BUDGET_EUNAVAILABLE);
    cr_expect_eq(stats(c).kept, 0);
    history_cache_release(c, get(c, 5, &b));
    cr_expect_eq(atomic_load(&b.builds), 2, "the failed build was kept");
    history_cache_free(c);
}

Test(history, nothing_is_kept_with_no_slots)
{
    builder b = {0};
    history_cache *c = history_cache_new(0, 60000, 4);
    history_cache_release(c, get(c, 5, &b));
    history_cache_release(c, get(c, 5, &b));
    cr_expect_eq(atomic_load(&b.builds), 2);
    cr_expect_eq(stats(c).kept, 0);
    history_cache_free(c);
}

Test(history, an_unused_ledger_is_freed_after_the_idle_time_and_a_held_one_is_not)
{
    builder b = {0};
    history_cache *c = history_cache_new(2, 1000, 4);
    history_cache_release(c, get(c, 1, &b));
    const ledger *held = get(c, 2, &b);
    uint64_t now = history_now_ms();
    history_cache_trim(c, now);
    cr_expect_eq(stats(c).kept, 2, "freed before its idle time");
    history_cache_trim(c, now + 5000);
    cr_expect_eq(stats(c).kept, 1, "the unused one was not freed, or the held one was");
    history_cache_release(c, get(c, 2, &b));
    cr_expect_eq(atomic_load(&b.builds), 2, "the held one was freed");
    history_cache_release(c, held);
    history_cache_trim(c, history_now_ms() + 5000);
    cr_expect_eq(stats(c).kept, 0);
    history_cache_release(c, get(c, 1, &b));
    cr_expect_eq(atomic_load(&b.builds), 3);
    history_cache_free(c);
}

Test(history, a_later_point_starts_from_the_latest_kept_one_no_further_back_than_the_floor)
{
    builder b = {0};
    history_cache *c = history_cache_new(4, 60000, 4);
    const ledger *at10 = get(c, 10, &b), *at20 = get(c, 20, &b), *at30 = get(c, 30, &b);
    int rc;
    const ledger *decided =
        history_cache_get(c, (history_key){.upto = 25, .decided_by = 20240630}, build, &b, &rc);
    history_cache_release(c, at10);
    history_cache_release(c, at20);
    history_cache_release(c, at30);
    history_cache_release(c, decided);

    uint64_t at = 0;
    const ledger *base = history_cache_base(c, 0, 0, 27, &at);
    cr_expect(base == at20 && at == 20, "upto 27: the one at %llu, not 20 (decided_by is no base)",
              (unsigned long long)at);
    history_cache_release(c, base);
    /* A view by decision day is the base of one for the same day only. */
    base = history_cache_base(c, 20240630, 1, 27, &at);
    cr_expect(base == decided && at == 25, "decided by 20240630 upto 27: the one at %llu",
              (unsigned long long)at);
    history_cache_release(c, base);
    cr_expect_null(history_cache_base(c, 20240629, 1, 27, &at), "another day's view served");
    cr_expect_null(history_cache_base(c, 20240630, 1, 24, &at), "a later point's view served");
    base = history_cache_base(c, 0, 0, 27, &at);
    /* held while the caller copies it: not freed however idle */
    history_cache_trim(c, history_now_ms() + 120000);
    cr_expect_eq(stats(c).kept, 1, "the held base was freed, or the idle ones were not");
    history_cache_release(c, base);

    history_cache_release(c, get(c, 10, &b));
    history_cache_release(c, get(c, 30, &b));
    cr_expect_null(history_cache_base(c, 0, 0, 5, &at), "nothing kept at or below 5");
    cr_expect_null(history_cache_base(c, 0, 21, 29, &at), "a snapshot at 21 is nearer than 20");
    base = history_cache_base(c, 0, 30, 40, &at);
    cr_expect(base != NULL && at == 30, "the kept one at the snapshot's point serves");
    history_cache_release(c, base);
    cr_expect_eq(stats(c).based, 4);
    history_cache_free(c);
}

Test(history, no_more_ledgers_are_built_at_once_than_allowed)
{
    enum { READERS = 6 };
    builder b = {.sleep_ms = 50};
    history_cache *c = history_cache_new(2, 60000, 2);
    reader r[READERS];
    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) {
        r[i] = (reader){.c = c, .b = &b, .upto = 100 + (uint64_t)i, .give_back = true};
        cr_assert_eq(pthread_create(&t[i], NULL, read_point, &r[i]), 0);
    }
    for (int i = 0; i < READERS; i++) {
        pthread_join(t[i], NULL);
        cr_expect_not_null(r[i].got, "reader %d got no ledger", i);
    }
    cr_expect_eq(atomic_load(&b.builds), READERS, "every point is built");
    cr_expect_eq(atomic_load(&b.most), 2, "%d built at once, not 2", atomic_load(&b.most));
    cr_expect_geq(stats(c).queued, READERS - 2);
    history_cache_free(c);
}

Test(history, a_build_waits_while_reads_hold_as_many_ledgers_as_may_be_built)
{
    builder b = {0};
    history_cache *c = history_cache_new(2, 60000, 2);
    const ledger *one = get(c, 1, &b), *two = get(c, 2, &b);
    reader r = {.c = c, .b = &b, .upto = 3, .give_back = true};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_point, &r), 0);
    nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    cr_expect_eq(atomic_load(&b.builds), 2, "a third ledger was built while two were held");
    history_cache_release(c, one);
    pthread_join(t, NULL);
    cr_expect_not_null(r.got);
    cr_expect_eq(atomic_load(&b.builds), 3);
    cr_expect_eq(stats(c).kept, 2, "the idle one made room for the third");
    history_cache_release(c, two);
    history_cache_free(c);
}
