/*
 * The event store (daemon/store.h): round trips through reopen, the append checks, snapshots,
 * map growth (alone, under concurrent readers, at its maximum), the fault-injection seam, and
 * refusing directories that are not budgetd stores. Each test works in its own temp dir.
 *
 * Events here are synthetic: `size` bytes derived from the seq, whose last 32 bytes (the
 * place of an encoded event's hash) hold a pattern distinct for every seq.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "daemon/checkpoint.h"
#include "daemon/event.h"
#include "daemon/replay.h"
#include "daemon/store.h"

/* LMDB's MDB_MAP_FULL, the one non-errno code a fault function may return (store.h). */
#define TEST_MAP_FULL (-30792)

#define KIB ((size_t)1024)
#define MIB (1024 * KIB)

/* ---- a fresh directory per test ---- */

static char tmp_root[64];
static char store_dir[128];

static void setup(void)
{
    umask(022);
    strcpy(tmp_root, "/tmp/budgetd-store-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp_root));
    snprintf(store_dir, sizeof store_dir, "%s/store", tmp_root);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

/* ---- synthetic events ---- */

static size_t varied_size(uint64_t seq)
{
    return BUDGET_HASH_BYTES + 8 + (size_t)(seq * 37 % 260);
}

static void event_hash(uint64_t seq, uint8_t hash[BUDGET_HASH_BYTES])
{
    for (int i = 0; i < 8; i++)
        hash[i] = (uint8_t)(seq >> (56 - 8 * i));
    for (int i = 8; i < BUDGET_HASH_BYTES; i++)
        hash[i] = (uint8_t)(0xa5 ^ (i * 29) ^ (seq * 7));
}

static void event_fill(uint64_t seq, uint8_t *out, size_t size)
{
    uint64_t x = seq * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < size - BUDGET_HASH_BYTES; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)x;
    }
    event_hash(seq, out + size - BUDGET_HASH_BYTES);
}

static void event_id(uint64_t seq, char *out, size_t cap)
{
    snprintf(out, cap, "ev-%llu", (unsigned long long)seq);
}

/* `n` events from `first`, each `size` bytes (0: varied by seq). */
typedef struct {
    size_t n;
    store_item *items;
    uint8_t **bytes;
    char (*ids)[24];
} batch;

static void batch_make(batch *b, uint64_t first, size_t n, size_t size)
{
    b->n = n;
    b->items = calloc(n, sizeof *b->items);
    b->bytes = calloc(n, sizeof *b->bytes);
    b->ids = calloc(n, sizeof *b->ids);
    cr_assert(b->items && b->bytes && b->ids);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = first + i;
        size_t bytes = size != 0 ? size : varied_size(seq);
        b->bytes[i] = malloc(bytes);
        cr_assert_not_null(b->bytes[i]);
        event_fill(seq, b->bytes[i], bytes);
        event_id(seq, b->ids[i], sizeof b->ids[i]);
        b->items[i] = (store_item){seq, b->bytes[i], bytes, b->ids[i], strlen(b->ids[i])};
    }
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->bytes[i]);
    free(b->items);
    free(b->bytes);
    free(b->ids);
}

static int append(store *s, uint64_t first, size_t n, size_t size, bool *sync_failed)
{
    batch b;
    batch_make(&b, first, n, size);
    int rc = store_append(s, b.items, n, sync_failed);
    batch_free(&b);
    return rc;
}

static void append_ok(store *s, uint64_t first, size_t n, size_t size)
{
    bool sync_failed = true;
    int rc = append(s, first, n, size, &sync_failed);
    cr_assert_eq(rc, 0, "append %llu+%zu: %d", (unsigned long long)first, n, rc);
    cr_assert(!sync_failed);
}

static store *open_store(const store_options *opt)
{
    store *s = NULL;
    char why[256];
    int rc = store_open(&s, store_dir, opt, why, sizeof why);
    cr_assert_eq(rc, 0, "store_open: %s", why);
    cr_assert_not_null(s);
    return s;
}

static void assert_head(store *s, uint64_t expect)
{
    uint64_t seq;
    uint8_t hash[BUDGET_HASH_BYTES], want[BUDGET_HASH_BYTES] = {0};
    cr_assert_eq(store_head(s, &seq, hash), 0);
    cr_assert_eq(seq, expect, "head %llu, expected %llu", (unsigned long long)seq,
                 (unsigned long long)expect);
    if (expect > 0)
        event_hash(expect, want);
    cr_assert_arr_eq(hash, want, BUDGET_HASH_BYTES);
}

static bool event_matches(uint64_t seq, store_val v, size_t size)
{
    size_t want = size != 0 ? size : varied_size(seq);
    if (v.size != want)
        return false;
    uint8_t *expect = malloc(want);
    event_fill(seq, expect, want);
    bool same = memcmp(v.data, expect, want) == 0;
    free(expect);
    return same;
}

/* Every event 1..head is there, byte for byte. */
static void assert_log(store *s, uint64_t head, size_t size)
{
    store_reader *r;
    cr_assert_eq(store_reader_begin(s, &r), 0);
    cr_assert_eq(store_reader_head(r), head);
    for (uint64_t seq = 1; seq <= head; seq++) {
        store_val v;
        cr_assert_eq(store_reader_get(r, seq, &v), 0, "get %llu", (unsigned long long)seq);
        cr_assert(event_matches(seq, v, size), "event %llu differs", (unsigned long long)seq);
    }
    store_val v;
    cr_assert_eq(store_reader_get(r, head + 1, &v), BUDGET_ENOT_FOUND);
    store_reader_end(r);
}

/* Nothing of the events first..first+n-1 is visible. */
static void assert_absent(store *s, uint64_t first, size_t n)
{
    store_reader *r;
    cr_assert_eq(store_reader_begin(s, &r), 0);
    for (uint64_t seq = first; seq < first + n; seq++) {
        store_val v;
        cr_assert_eq(store_reader_get(r, seq, &v), BUDGET_ENOT_FOUND, "%llu is visible",
                     (unsigned long long)seq);
    }
    store_reader_end(r);
}

/* ---- scanning ---- */

typedef struct {
    uint64_t seqs[64];
    size_t count;
    size_t stop_at; /* return 7 at this call (from 1); 0: never */
    bool bytes_ok;
} scan_log;

static int scan_record(void *ctx, uint64_t seq, store_val event)
{
    scan_log *log = ctx;
    if (log->count < 64)
        log->seqs[log->count] = seq;
    log->count++;
    if (!event_matches(seq, event, 0))
        log->bytes_ok = false;
    return log->count == log->stop_at ? 7 : 0;
}

static void assert_scan(store_reader *r, uint64_t after, uint64_t head)
{
    scan_log log = {.bytes_ok = true};
    cr_assert_eq(store_reader_scan(r, after, scan_record, &log), 0);
    uint64_t expect_count = after >= head ? 0 : head - after;
    cr_assert_eq(log.count, expect_count, "after %llu: %zu events", (unsigned long long)after,
                 log.count);
    for (size_t i = 0; i < log.count && i < 64; i++)
        cr_assert_eq(log.seqs[i], after + 1 + i);
    cr_assert(log.bytes_ok);
}

/* ---- round trips ---- */

Test(store, empty_store)
{
    store *s = open_store(NULL);
    assert_head(s, 0);
    store_reader *r;
    store_val v;
    cr_assert_eq(store_reader_begin(s, &r), 0);
    cr_assert_eq(store_reader_head(r), 0);
    cr_assert_eq(store_reader_get(r, 0, &v), BUDGET_ENOT_FOUND);
    cr_assert_eq(store_reader_get(r, 1, &v), BUDGET_ENOT_FOUND);
    assert_scan(r, 0, 0);
    store_reader_end(r);

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.events, 0);
    cr_assert_eq(st.map_bytes, 64 * MIB);
    cr_assert_eq(st.map_growths, 0);
    cr_assert(st.commits_synced, "commits are not synced: an acknowledged event could be lost");
    store_close(s);

    s = open_store(NULL);
    assert_head(s, 0);
    store_close(s);
}

Test(store, creates_the_directory_0750)
{
    store *s = open_store(NULL);
    struct stat st;
    cr_assert_eq(stat(store_dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0750);
    store_close(s);
}

Test(store, round_trip_through_reopen)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 1, 0);
    append_ok(s, 2, 5, 0);
    append_ok(s, 7, 10, 0);
    assert_head(s, 16);
    assert_log(s, 16, 0);

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.events, 16);
    cr_assert_eq(st.map_growths, 0);
    cr_assert(st.map_used_bytes > 0 && st.map_used_bytes <= st.map_bytes);
    store_close(s);

    s = open_store(NULL);
    assert_head(s, 16);
    assert_log(s, 16, 0);

    store_reader *r;
    cr_assert_eq(store_reader_begin(s, &r), 0);
    assert_scan(r, 0, 16);
    assert_scan(r, 1, 16);
    assert_scan(r, 9, 16);
    assert_scan(r, 15, 16);
    assert_scan(r, 16, 16);
    assert_scan(r, UINT64_MAX, 16);
    store_reader_end(r);

    /* The log goes on from the reopened head. */
    append_ok(s, 17, 3, 0);
    assert_head(s, 19);
    assert_log(s, 19, 0);
    store_close(s);
}

Test(store, scan_stops_at_a_nonzero_return)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 10, 0);
    store_reader *r;
    cr_assert_eq(store_reader_begin(s, &r), 0);
    scan_log log = {.stop_at = 3, .bytes_ok = true};
    cr_assert_eq(store_reader_scan(r, 4, scan_record, &log), 7);
    cr_assert_eq(log.count, 3);
    cr_assert_eq(log.seqs[0], 5);
    cr_assert_eq(log.seqs[2], 7);
    store_reader_end(r);
    store_close(s);
}

/* ---- the append checks ---- */

Test(store, a_gap_in_seqs_writes_nothing)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 3, 0);
    batch b;
    bool sync_failed = true;
    batch_make(&b, 4, 4, 0);
    b.items[2].seq = 8; /* 4, 5, 8, 7 */
    cr_assert_eq(store_append(s, b.items, b.n, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(!sync_failed);
    batch_free(&b);
    assert_head(s, 3);
    assert_absent(s, 4, 5);
    store_close(s);

    s = open_store(NULL);
    assert_head(s, 3);
    assert_log(s, 3, 0);
    store_close(s);
}

Test(store, a_wrong_first_seq_writes_nothing)
{
    store *s = open_store(NULL);
    bool sync_failed;
    cr_assert_eq(append(s, 2, 3, 0, &sync_failed), BUDGET_EINTERNAL); /* empty: must be 1 */
    cr_assert_eq(append(s, 0, 3, 0, &sync_failed), BUDGET_EINTERNAL);
    assert_head(s, 0);
    append_ok(s, 1, 3, 0);
    cr_assert_eq(append(s, 3, 2, 0, &sync_failed), BUDGET_EINTERNAL); /* repeats the head */
    cr_assert_eq(append(s, 5, 2, 0, &sync_failed), BUDGET_EINTERNAL); /* skips one */
    cr_assert(!sync_failed);
    assert_head(s, 3);
    assert_absent(s, 4, 3);
    assert_log(s, 3, 0);
    store_close(s);
}

Test(store, malformed_items_write_nothing)
{
    store *s = open_store(NULL);
    bool sync_failed;
    batch b;
    batch_make(&b, 1, 3, 0);
    cr_assert_eq(store_append(s, b.items, 0, &sync_failed), 0); /* an empty batch: nothing */

    store_item saved = b.items[1];
    b.items[1].size = BUDGET_HASH_BYTES - 1;
    cr_assert_eq(store_append(s, b.items, 3, &sync_failed), BUDGET_EINTERNAL);
    b.items[1] = saved;
    b.items[1].bytes = NULL;
    cr_assert_eq(store_append(s, b.items, 3, &sync_failed), BUDGET_EINTERNAL);
    b.items[1] = saved;
    b.items[1].id_len = 0;
    cr_assert_eq(store_append(s, b.items, 3, &sync_failed), BUDGET_EINTERNAL);
    b.items[1] = saved;
    b.items[1].id_len = BUDGET_ID_BYTES_MAX + 1;
    cr_assert_eq(store_append(s, b.items, 3, &sync_failed), BUDGET_EINTERNAL);
    assert_head(s, 0);
    assert_absent(s, 1, 3);

    b.items[1] = saved;
    cr_assert_eq(store_append(s, b.items, 3, &sync_failed), 0);
    batch_free(&b);
    assert_log(s, 3, 0);
    store_close(s);
}

/* ---- snapshots ---- */

Test(store, readers_see_a_snapshot)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 3, 0);
    store_reader *before, *after;
    cr_assert_eq(store_reader_begin(s, &before), 0);
    append_ok(s, 4, 3, 0);
    cr_assert_eq(store_reader_begin(s, &after), 0);

    store_val v;
    cr_assert_eq(store_reader_head(before), 3);
    cr_assert_eq(store_reader_get(before, 4, &v), BUDGET_ENOT_FOUND);
    assert_scan(before, 0, 3);

    cr_assert_eq(store_reader_head(after), 6);
    cr_assert_eq(store_reader_get(after, 4, &v), 0);
    cr_assert(event_matches(4, v, 0));
    assert_scan(after, 0, 6);
    assert_scan(after, 3, 6);

    store_reader_end(before);
    store_reader_end(after);
    assert_head(s, 6);
    store_close(s);
}

/* ---- map growth ---- */

#define GROWTH_EVENTS 20000
#define GROWTH_BATCH 100
#define GROWTH_EVENT_BYTES 300

Test(store, the_map_grows_and_keeps_everything)
{
    store_options opt = {.map_bytes_initial = 256 * KIB};
    store *s = open_store(&opt);
    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.map_bytes, 256 * KIB);

    for (uint64_t seq = 1; seq <= GROWTH_EVENTS; seq += GROWTH_BATCH)
        append_ok(s, seq, GROWTH_BATCH, GROWTH_EVENT_BYTES);
    assert_head(s, GROWTH_EVENTS);
    store_get_stats(s, &st);
    cr_assert(st.map_growths > 0);
    cr_assert(st.map_used_bytes > 5 * MIB, "used %llu", (unsigned long long)st.map_used_bytes);
    cr_assert(st.map_used_bytes <= st.map_bytes);
    cr_assert_eq(st.events, GROWTH_EVENTS);
    cr_log_info("growth: %llu growths from 256 KiB to %llu KiB, %llu KiB used",
                (unsigned long long)st.map_growths, (unsigned long long)st.map_bytes / 1024,
                (unsigned long long)st.map_used_bytes / 1024);
    uint64_t grown_to = st.map_bytes;
    store_close(s);

    /* A reopened store keeps the size it grew to, though asked for less. */
    s = open_store(&opt);
    store_get_stats(s, &st);
    cr_assert_eq(st.map_bytes, grown_to);
    cr_assert_eq(st.map_growths, 0);
    assert_head(s, GROWTH_EVENTS);
    assert_log(s, GROWTH_EVENTS, GROWTH_EVENT_BYTES);
    store_close(s);
}

typedef struct {
    store *s;
    atomic_bool stop;
    atomic_ulong rounds;
    atomic_ulong errors;
    atomic_ulong appended; /* the head once the last store_append returned */
} reader_crowd;

/*
 * A reader sees every batch whose append returned before it began. Two readers begun one after
 * the other need not see heads in that order: LMDB picks a read's meta page by the last txnid
 * and copies it after, so a reader slow to copy can find the page already holding the commit
 * after next, a newer state than a reader begun just after it (whose txnid the writer has not
 * yet published). Both states are whole and stay mapped while read; only their order is loose.
 */
static void reader_round(reader_crowd *c, unsigned *rng)
{
    store_reader *r, *inner = NULL;
    uint64_t before = atomic_load(&c->appended);
    if (store_reader_begin(c->s, &r) != 0) {
        atomic_fetch_add(&c->errors, 1);
        return;
    }
    uint64_t head = store_reader_head(r);
    if (head < before || head > GROWTH_EVENTS)
        atomic_fetch_add(&c->errors, 1);
    /* Now and then a second reader on the same thread, begun while holding the first. */
    uint64_t inner_before = atomic_load(&c->appended);
    if ((rand_r(rng) & 3) == 0 && store_reader_begin(c->s, &inner) != 0)
        atomic_fetch_add(&c->errors, 1);
    if (head > 0) {
        store_val v;
        uint64_t seq = 1 + (uint64_t)rand_r(rng) % head;
        if (store_reader_get(r, seq, &v) != 0 || !event_matches(seq, v, GROWTH_EVENT_BYTES))
            atomic_fetch_add(&c->errors, 1);
        if (store_reader_get(r, head, &v) != 0 || !event_matches(head, v, GROWTH_EVENT_BYTES))
            atomic_fetch_add(&c->errors, 1);
    }
    if (inner != NULL) {
        if (store_reader_head(inner) < inner_before)
            atomic_fetch_add(&c->errors, 1);
        store_reader_end(inner);
    }
    store_reader_end(r);
    atomic_fetch_add(&c->rounds, 1);
}

static void *reader_thread(void *arg)
{
    reader_crowd *c = arg;
    unsigned rng = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&c->stop)) {
        reader_round(c, &rng);
        store_stats st;
        store_get_stats(c->s, &st);
    }
    return NULL;
}

Test(store, the_map_grows_while_readers_come_and_go)
{
    store_options opt = {.map_bytes_initial = 256 * KIB};
    reader_crowd crowd = {.s = open_store(&opt)};
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, reader_thread, &crowd), 0);

    for (uint64_t seq = 1; seq <= GROWTH_EVENTS; seq += GROWTH_BATCH) {
        append_ok(crowd.s, seq, GROWTH_BATCH, GROWTH_EVENT_BYTES);
        atomic_store(&crowd.appended, seq + GROWTH_BATCH - 1);
    }

    atomic_store(&crowd.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    cr_assert_eq(atomic_load(&crowd.errors), 0);
    cr_assert(atomic_load(&crowd.rounds) > 0);

    store_stats st;
    store_get_stats(crowd.s, &st);
    cr_assert(st.map_growths > 0);
    cr_log_info("growth under readers: %llu growths, %lu reader rounds",
                (unsigned long long)st.map_growths, atomic_load(&crowd.rounds));
    assert_log(crowd.s, GROWTH_EVENTS, GROWTH_EVENT_BYTES);
    store_close(crowd.s);
}

/* ---- fault injection ---- */

typedef struct {
    store_fault_point point;
    int err;
    unsigned fail_at; /* the call at `point` (from 1) that fails; 0: no faults */
    bool forever;     /* every call after fail_at fails too */
    unsigned calls;
    unsigned failures;
} fault_plan;

static int fault_fn(void *ctx, store_fault_point point)
{
    fault_plan *p = ctx;
    if (p->fail_at == 0 || point != p->point)
        return 0;
    p->calls++;
    if (p->calls == p->fail_at || (p->forever && p->calls > p->fail_at)) {
        p->failures++;
        return p->err;
    }
    return 0;
}

static void arm(fault_plan *p, store_fault_point point, int err, unsigned fail_at, bool forever)
{
    *p = (fault_plan){.point = point, .err = err, .fail_at = fail_at, .forever = forever};
}

/* Returns once a growth of `s` waits for its live readers to end. */
/* Waits until a growth of `s` waits for its live readers to end; false after 10 s without. */
static bool wait_for_growth(store *s)
{
    store_stats st;
    for (int waited_ms = 0; waited_ms < 10000; waited_ms++) {
        store_get_stats(s, &st);
        if (st.growth_waiting)
            return true;
        usleep(1000);
    }
    return false;
}

/* A map that the blocking thread holds a reader of while a growth is pending. */
typedef struct {
    store *s;
    atomic_int stage; /* 1: first reader held; 2: the append has started */
    atomic_int result;
} nested_reader;

static void *nested_reader_thread(void *arg)
{
    nested_reader *n = arg;
    store_reader *outer, *inner;
    if (store_reader_begin(n->s, &outer) != 0) {
        atomic_store(&n->result, -1);
        atomic_store(&n->stage, 1);
        return NULL;
    }
    atomic_store(&n->stage, 1);
    while (atomic_load(&n->stage) < 2)
        usleep(1000);
    if (!wait_for_growth(n->s)) { /* the growth now waits for `outer` to end */
        store_reader_end(outer);
        atomic_store(&n->result, -2);
        return NULL;
    }
    int rc = store_reader_begin(n->s, &inner);
    if (rc == 0)
        store_reader_end(inner);
    store_reader_end(outer);
    atomic_store(&n->result, rc == 0 ? 1 : -1);
    return NULL;
}

Test(store, a_second_reader_on_a_thread_passes_a_waiting_growth)
{
    fault_plan plan = {0};
    store_options opt = {.map_bytes_initial = 256 * KIB, .fault = fault_fn, .fault_ctx = &plan};
    nested_reader n = {.s = open_store(&opt)};
    append_ok(n.s, 1, 3, 0);

    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, nested_reader_thread, &n), 0);
    while (atomic_load(&n.stage) < 1)
        usleep(1000);
    arm(&plan, STORE_FAULT_COMMIT, TEST_MAP_FULL, 1, false);
    atomic_store(&n.stage, 2);
    append_ok(n.s, 4, 3, 0); /* grows: waits for the thread's readers to end */
    pthread_join(thread, NULL);
    cr_assert_eq(atomic_load(&n.result), 1, "-2: the growth never waited; -1: a reader failed");

    store_stats st;
    store_get_stats(n.s, &st);
    cr_assert_eq(st.map_growths, 1);
    cr_assert_eq(st.map_bytes, 512 * KIB);
    assert_log(n.s, 6, 0);
    store_close(n.s);
}

/* A growth forced at the first commit, with a flag raised when it is about to start. */
typedef struct {
    store *s;
    atomic_bool fault_seen;
    atomic_bool holder_ready;
    atomic_bool main_waits;
    int append_rc;
} held_growth;

static int map_full_at_first_commit(void *ctx, store_fault_point point)
{
    held_growth *h = ctx;
    if (point != STORE_FAULT_COMMIT || atomic_exchange(&h->fault_seen, true))
        return 0;
    return TEST_MAP_FULL;
}

static void *holder_thread(void *arg)
{
    held_growth *h = arg;
    store_reader *r;
    if (store_reader_begin(h->s, &r) != 0)
        return NULL;
    atomic_store(&h->holder_ready, true);
    while (!atomic_load(&h->main_waits))
        usleep(1000);
    usleep(50 * 1000); /* the main thread is in store_reader_begin by now, or soon after */
    store_reader_end(r);
    return NULL;
}

static void *growing_writer_thread(void *arg)
{
    held_growth *h = arg;
    bool sync_failed;
    h->append_rc = append(h->s, 4, 3, 0, &sync_failed);
    return NULL;
}

Test(store, a_waiting_growth_holds_back_new_readers)
{
    held_growth h = {0};
    store_options opt = {
        .map_bytes_initial = 256 * KIB, .fault = map_full_at_first_commit, .fault_ctx = &h};
    atomic_store(&h.fault_seen, true); /* off for the first batch */
    h.s = open_store(&opt);
    append_ok(h.s, 1, 3, 0);
    atomic_store(&h.fault_seen, false);

    pthread_t holder, writer;
    cr_assert_eq(pthread_create(&holder, NULL, holder_thread, &h), 0);
    while (!atomic_load(&h.holder_ready))
        usleep(1000);
    cr_assert_eq(pthread_create(&writer, NULL, growing_writer_thread, &h), 0);
    cr_assert(wait_for_growth(h.s), "the growth never waited for the reader held");

    /* The growth is waiting for the holder: this reader must wait until it is done. */
    store_reader *r;
    store_stats st;
    atomic_store(&h.main_waits, true);
    cr_assert_eq(store_reader_begin(h.s, &r), 0);
    store_get_stats(h.s, &st);
    cr_assert_eq(st.map_growths, 1, "a new reader went in ahead of a waiting growth");
    store_reader_end(r);

    pthread_join(writer, NULL);
    pthread_join(holder, NULL);
    cr_assert_eq(h.append_rc, 0);
    assert_log(h.s, 6, 0);
    store_close(h.s);
}

typedef struct {
    store_fault_point point;
    int err;
    unsigned nth;
} fault_case;

ParameterizedTestParameters(store, a_fault_fails_exactly_its_batch)
{
    static fault_case cases[] = {
        {STORE_FAULT_PUT, ENOSPC, 1},    {STORE_FAULT_PUT, ENOSPC, 2},
        {STORE_FAULT_PUT, ENOSPC, 3},    {STORE_FAULT_PUT, EIO, 1},
        {STORE_FAULT_PUT, EIO, 2},       {STORE_FAULT_PUT, EIO, 3},
        {STORE_FAULT_COMMIT, ENOSPC, 1}, {STORE_FAULT_COMMIT, ENOSPC, 2},
        {STORE_FAULT_COMMIT, ENOSPC, 3}, {STORE_FAULT_COMMIT, EIO, 1},
        {STORE_FAULT_COMMIT, EIO, 2},    {STORE_FAULT_COMMIT, EIO, 3},
    };
    return cr_make_param_array(fault_case, cases, sizeof cases / sizeof cases[0]);
}

/*
 * Batches of 4 events after 3 good ones; the Nth call at the point fails. A batch makes 8
 * puts (an event and its id each) and one commit, so a put fault fails the first batch and a
 * commit fault the Nth.
 */
ParameterizedTest(fault_case *c, store, a_fault_fails_exactly_its_batch)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);

    unsigned failing = c->point == STORE_FAULT_PUT ? 1 : c->nth;
    uint64_t head = 3;
    arm(&plan, c->point, c->err, c->nth, false);
    for (unsigned batch_no = 1; batch_no < failing; batch_no++, head += 4)
        append_ok(s, head + 1, 4, 0);
    bool sync_failed = true;
    cr_assert_eq(append(s, head + 1, 4, 0, &sync_failed), BUDGET_EUNAVAILABLE);
    cr_assert(!sync_failed);
    cr_assert_eq(plan.failures, 1);
    assert_head(s, head);
    assert_absent(s, head + 1, 4);
    store_close(s);

    plan.fail_at = 0;
    s = open_store(&opt);
    assert_head(s, head);
    assert_absent(s, head + 1, 4);
    assert_log(s, head, 0);
    append_ok(s, head + 1, 4, 0);
    assert_log(s, head + 4, 0);
    store_close(s);
}

Test(store, a_failed_batch_leaves_the_store_writable)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_COMMIT, ENOSPC, 1, false);
    bool sync_failed;
    cr_assert_eq(append(s, 4, 4, 0, &sync_failed), BUDGET_EUNAVAILABLE);
    append_ok(s, 4, 4, 0); /* the next batch, fault off, in the same open store */
    assert_head(s, 7);
    assert_log(s, 7, 0);
    store_close(s);
}

/*
 * A commit whose meta page could not be written (LMDB then marks the environment fatal) has
 * an unknown outcome: the batch is not answered "not written" (BUDGET_EUNAVAILABLE) but
 * reported as a failed sync, and every later append fails alike. The fault strikes after a
 * commit that wrote everything, and indeed the store opened again holds the batch.
 */
Test(store, a_failed_meta_write_is_an_unknown_outcome)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_META, EIO, 1, false);
    bool sync_failed = false;
    cr_assert_eq(append(s, 4, 4, 0, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(sync_failed, "a failed meta page write was reported as nothing written");
    sync_failed = false;
    cr_assert_eq(append(s, 4, 4, 0, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(sync_failed, "the store went on appending after a failed meta page write");
    assert_head(s, 3); /* the head is left for the disk to say */
    store_close(s);

    s = open_store(NULL);
    assert_head(s, 7);
    assert_log(s, 7, 0);
    store_close(s);
}

Test(store, map_full_once_at_put_grows_and_succeeds)
{
    fault_plan plan = {0};
    store_options opt = {.map_bytes_initial = 256 * KIB, .fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_PUT, TEST_MAP_FULL, 3, false);
    append_ok(s, 4, 4, 0);
    cr_assert_eq(plan.failures, 1);
    cr_assert_eq(plan.calls, 3 + 4); /* the retry asked the fault function again */

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.map_growths, 1);
    cr_assert_eq(st.map_bytes, 512 * KIB);
    assert_head(s, 7);
    store_close(s);

    plan.fail_at = 0;
    s = open_store(&opt);
    assert_log(s, 7, 0);
    store_close(s);
}

Test(store, map_full_once_at_commit_grows_and_succeeds)
{
    fault_plan plan = {0};
    store_options opt = {.map_bytes_initial = 256 * KIB, .fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_COMMIT, TEST_MAP_FULL, 1, false);
    append_ok(s, 4, 4, 0);
    cr_assert_eq(plan.failures, 1);
    cr_assert_eq(plan.calls, 2);

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.map_growths, 1);
    assert_head(s, 7);
    store_close(s);

    plan.fail_at = 0;
    s = open_store(&opt);
    assert_log(s, 7, 0);
    store_close(s);
}

Test(store, map_full_forever_stops_at_the_maximum)
{
    fault_plan plan = {0};
    store_options opt = {.map_bytes_initial = 256 * KIB,
                         .map_bytes_max = 1 * MIB,
                         .fault = fault_fn,
                         .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_PUT, TEST_MAP_FULL, 1, true);
    bool sync_failed = true;
    cr_assert_eq(append(s, 4, 4, 0, &sync_failed), BUDGET_EUNAVAILABLE);
    cr_assert(!sync_failed);
    cr_assert_eq(plan.failures, 3); /* 256 KiB, 512 KiB, 1 MiB: then the maximum */

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.map_growths, 2);
    cr_assert_eq(st.map_bytes, 1 * MIB);
    assert_head(s, 3);
    assert_absent(s, 4, 4);

    plan.fail_at = 0;
    append_ok(s, 4, 4, 0);
    assert_log(s, 7, 0);
    store_close(s);
}

Test(store, a_sync_fault_reports_an_unknown_outcome)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_SYNC, EIO, 1, false);
    bool sync_failed = false;
    cr_assert_eq(append(s, 4, 4, 0, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(sync_failed);
    assert_head(s, 3); /* the cached head waits for a restart from the disk */

    /* The store takes no more writes: the caller must restart. */
    sync_failed = false;
    cr_assert_eq(append(s, 4, 1, 0, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(sync_failed);
    store_close(s);

    plan.fail_at = 0;
    s = open_store(&opt);
    assert_head(s, 7); /* the commit had happened */
    assert_log(s, 7, 0);
    append_ok(s, 8, 2, 0);
    store_close(s);
}

/* ---- the map at its maximum ---- */

Test(store, the_map_maximum_fails_whole_batches)
{
    store_options opt = {.map_bytes_initial = 256 * KIB, .map_bytes_max = 1 * MIB};
    store *s = open_store(&opt);
    uint64_t head = 0;
    int rc = 0;
    bool sync_failed = true;
    /* 1 MiB holds some 3000 events of 300 bytes: the 40th batch of 100 cannot fit. */
    for (int batch_no = 0; batch_no < 40; batch_no++) {
        rc = append(s, head + 1, GROWTH_BATCH, GROWTH_EVENT_BYTES, &sync_failed);
        if (rc != 0)
            break;
        head += GROWTH_BATCH;
    }
    cr_assert_eq(rc, BUDGET_EUNAVAILABLE);
    cr_assert(!sync_failed);
    cr_assert(head > 0);

    store_stats st;
    store_get_stats(s, &st);
    cr_assert_eq(st.map_bytes, 1 * MIB);
    cr_assert_eq(st.map_growths, 2);
    cr_log_info("map maximum: %llu events fit in 1 MiB", (unsigned long long)head);
    assert_head(s, head);
    assert_absent(s, head + 1, GROWTH_BATCH);
    assert_log(s, head, GROWTH_EVENT_BYTES); /* reads go on */

    /* Failing again changes nothing either. */
    cr_assert_eq(append(s, head + 1, GROWTH_BATCH, GROWTH_EVENT_BYTES, &sync_failed),
                 BUDGET_EUNAVAILABLE);
    assert_head(s, head);
    store_close(s);

    s = open_store(&opt);
    assert_head(s, head);
    assert_absent(s, head + 1, GROWTH_BATCH);
    assert_log(s, head, GROWTH_EVENT_BYTES);
    store_close(s);
}

/* ---- directories that are not budgetd stores ---- */

static void write_file(const char *path, const void *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

static void assert_open_refused(const char *dir, const char *because)
{
    store *s = (store *)&s;
    char why[256];
    cr_assert_eq(store_open(&s, dir, NULL, why, sizeof why), BUDGET_EUNAVAILABLE);
    cr_assert_null(s);
    cr_assert_not_null(strstr(why, dir), "why: %s", why);
    cr_assert_not_null(strstr(why, because), "why: %s", why);
    cr_assert_null(strchr(why, '\n'));
    cr_log_info("refused: %s", why);
}

Test(store, refuses_a_data_file_that_is_not_lmdb)
{
    cr_assert_eq(mkdir(store_dir, 0750), 0);
    char path[160];
    char text[16384];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = "this is not an LMDB file\n"[i % 25];
    snprintf(path, sizeof path, "%s/data.mdb", store_dir);
    write_file(path, text, sizeof text);
    assert_open_refused(store_dir, "not an LMDB file");
}

/* data.mdb's bytes, in a buffer for the caller to free. */
static char *data_bytes(size_t *size)
{
    char path[160];
    snprintf(path, sizeof path, "%s/data.mdb", store_dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    *size = (size_t)ftell(f);
    rewind(f);
    char *bytes = malloc(*size);
    cr_assert_eq(fread(bytes, 1, *size, f), *size);
    fclose(f);
    return bytes;
}

/* Rewrites every copy of the format mark in data.mdb (LMDB pages carry no checksums). */
static void rewrite_format(const char *from, const char *to)
{
    char path[160];
    size_t size;
    char *bytes = data_bytes(&size);
    size_t len = strlen(from), found = 0;
    for (char *at = bytes; (at = memmem(at, size - (size_t)(at - bytes), from, len)) != NULL;
         at += len, found++)
        memcpy(at, to, len);
    cr_assert(found > 0);
    snprintf(path, sizeof path, "%s/data.mdb", store_dir);
    write_file(path, bytes, size);
    free(bytes);
}

/* True when data.mdb holds `text` anywhere. */
static bool data_holds(const char *text)
{
    size_t size;
    char *bytes = data_bytes(&size);
    bool found = memmem(bytes, size, text, strlen(text)) != NULL;
    free(bytes);
    return found;
}

Test(store, refuses_another_format)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 3, 0);
    store_close(s);
    rewrite_format("budgetd-2", "budgetd-7");
    assert_open_refused(store_dir, "format \"budgetd-7\" is not budgetd-2");
}

/* A store written before format 2 (it indexed ids in "ids") reads as it is; opened to write,
 * it is marked "budgetd-2", so that a build that would look ids up there refuses it. */
Test(store, a_store_of_format_1_is_read_and_marked_2_once_opened_to_write)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 3, 0);
    store_close(s);
    rewrite_format("budgetd-2", "budgetd-1");

    store_options ro = {.read_only = true};
    s = open_store(&ro);
    assert_log(s, 3, 0);
    store_close(s);
    cr_assert(!data_holds("budgetd-2"), "a read-only open marked the store");

    s = open_store(NULL);
    assert_log(s, 3, 0);
    append_ok(s, 4, 2, 0);
    store_close(s);
    rewrite_format("budgetd-2", "budgetd-8");
    assert_open_refused(store_dir, "format \"budgetd-8\" is not budgetd-2");
}

Test(store, refuses_a_directory_it_cannot_create)
{
    char dir[192];
    snprintf(dir, sizeof dir, "%s/missing/store", tmp_root);
    assert_open_refused(dir, "No such file or directory");
}

/* ---- replay over real events ---- */

/* A grant of 100 öre to KS for 2021 (an adjustment of `frame` by 100 when `frame` is set),
 * as event `seq`. */
static ledger_event grant_event(uint64_t seq, const char *id, const char *frame)
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = frame ? LEDGER_FRAME_ADJUSTED : LEDGER_FRAME_GRANTED;
    ev.seq = seq;
    ev.ts_ms = 1630000000000u + seq;
    memcpy(ev.id, id, strlen(id) + 1);
    if (frame)
        memcpy(ev.frame, frame, strlen(frame) + 1);
    memcpy(ev.unit, "KS", 3);
    ev.year = 2021;
    ev.amount = 100;
    memcpy(ev.title, "Ram", 4);
    return ev;
}

/* Appends `n` events chained from the start (event_encode), whatever they say: a log a faulty
 * writer could have left. */
static void append_events(store *s, const ledger_event *evs, size_t n)
{
    static uint8_t bytes[8][EVENT_BYTES_MAX];
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    store_item items[8];
    cr_assert(n <= 8);
    for (size_t i = 0; i < n; i++) {
        int size = event_encode(&evs[i], prev, bytes[i], sizeof bytes[i], prev);
        cr_assert_gt(size, 0, "event %zu cannot be encoded", i + 1);
        items[i] = (store_item){evs[i].seq, bytes[i], (size_t)size, evs[i].id, strlen(evs[i].id)};
    }
    bool sync_failed = false;
    cr_assert_eq(store_append(s, items, n, &sync_failed), 0);
}

/* Replay stops at the first event that breaks a rule (here: an adjustment of a frame that does
 * not exist), with the events before it applied, and says which. */
Test(store, replay_stops_at_an_event_that_breaks_a_rule)
{
    store_options opt = {0};
    store *s = open_store(&opt);
    ledger_event evs[] = {grant_event(1, "f1", NULL), grant_event(2, "j1", "f1"),
                          grant_event(3, "j2", "no-such-frame"), grant_event(4, "f2", NULL)};
    append_events(s, evs, 4);

    replay_result res;
    ledger *l = ledger_new();
    cr_assert_eq(replay_log(s, l, UINT64_MAX, &res), BUDGET_EINTERNAL);
    cr_assert_str_eq(res.why, "event 3 breaks a ledger rule on replay");
    cr_assert_eq(res.head, 2, "the events before it are applied");
    cr_assert_eq(ledger_events(l), 2);
    ledger_free(l);

    /* Up to the event before it, the replay succeeds. */
    l = ledger_new();
    cr_assert_eq(replay_log(s, l, 2, &res), 0, "%s", res.why);
    cr_assert_eq(res.head, 2);
    ledger_free(l);
    store_close(s);
}

/* Replay (start-up's, and budgetctl's offline replay of a copy) follows the chain link by link:
 * an event whose prev is not the hash of the event before it stops the replay there, with the
 * events before it applied, even when that event's own hash is sound. */
Test(store, replay_stops_at_an_event_whose_prev_is_not_the_event_before_it)
{
    for (uint64_t broken = 1; broken <= 4; broken++) {
        store_options opt = {0};
        store *s = open_store(&opt);
        ledger_event evs[] = {grant_event(1, "f1", NULL), grant_event(2, "f2", NULL),
                              grant_event(3, "f3", NULL), grant_event(4, "f4", NULL)};
        static uint8_t bytes[4][EVENT_BYTES_MAX];
        uint8_t prev[BUDGET_HASH_BYTES] = {0};
        store_item items[4];
        for (size_t i = 0; i < 4; i++) {
            if (i + 1 == broken)
                prev[i % BUDGET_HASH_BYTES] ^= 0x40; /* a link to some other event */
            int size = event_encode(&evs[i], prev, bytes[i], sizeof bytes[i], prev);
            cr_assert_gt(size, 0);
            items[i] =
                (store_item){evs[i].seq, bytes[i], (size_t)size, evs[i].id, strlen(evs[i].id)};
        }
        bool sync_failed = false;
        cr_assert_eq(store_append(s, items, 4, &sync_failed), 0);

        replay_result res;
        ledger *l = ledger_new();
        cr_assert_eq(replay_log(s, l, UINT64_MAX, &res), BUDGET_EINTERNAL,
                     "a log broken at event %llu replays", (unsigned long long)broken);
        char want[96];
        snprintf(want, sizeof want, "event %llu does not follow event %llu in the chain (prev)",
                 (unsigned long long)broken, (unsigned long long)broken - 1);
        cr_assert_str_eq(res.why, want);
        cr_assert_eq(ledger_events(l), broken - 1, "the events before it are applied");
        ledger_free(l);
        store_close(s);
        teardown();
        setup();
    }
}

/* Replay hands decoded events from its walker to its applier through a ring of a few hundred
 * slots. A log many times the ring's length replays whole, from the first event and from a
 * point within it, and one broken far past the ring's first lap stops at that event with every
 * event before it applied: the slots are reused lap after lap without an event lost, repeated
 * or taken out of order. */
Test(store, a_log_many_times_the_replay_ring_replays_whole_and_stops_where_it_breaks)
{
    enum { EVENTS = 2000, BROKEN = 1777, FROM = 333, CHUNK = 100 };
    static uint8_t bytes[CHUNK][EVENT_BYTES_MAX];
    static ledger_event evs[CHUNK];
    static char ids[CHUNK][16];
    uint8_t prev[BUDGET_HASH_BYTES] = {0}, from_hash[BUDGET_HASH_BYTES] = {0};
    store_options opt = {0};
    store *s = open_store(&opt);
    /* Event 1 grants frame f; each after it adjusts f by 100 öre, but event BROKEN adjusts a
     * frame that does not exist. */
    for (uint64_t first = 1; first <= EVENTS; first += CHUNK) {
        store_item items[CHUNK];
        for (size_t i = 0; i < CHUNK; i++) {
            uint64_t seq = first + i;
            snprintf(ids[i], sizeof ids[i], "j%llu", (unsigned long long)seq);
            evs[i] = seq == 1 ? grant_event(1, "f", NULL)
                              : grant_event(seq, ids[i], seq == BROKEN ? "no-such-frame" : "f");
            int size = event_encode(&evs[i], prev, bytes[i], sizeof bytes[i], prev);
            cr_assert_gt(size, 0);
            if (seq == FROM)
                memcpy(from_hash, prev, BUDGET_HASH_BYTES);
            items[i] = (store_item){seq, bytes[i], (size_t)size, evs[i].id, strlen(evs[i].id)};
        }
        bool sync_failed = false;
        cr_assert_eq(store_append(s, items, CHUNK, &sync_failed), 0);
    }

    replay_result res;
    ledger_frame_view f;
    ledger *l = ledger_new();
    cr_assert_eq(replay_log(s, l, UINT64_MAX, &res), BUDGET_EINTERNAL);
    cr_assert_eq(res.bad_seq, BROKEN);
    cr_assert_str_eq(res.why, "event 1777 breaks a ledger rule on replay");
    cr_assert_eq(ledger_events(l), BROKEN - 1, "the events before it are applied");
    cr_assert(ledger_frame(l, "f", &f));
    cr_assert_eq(f.granted, 100 * (BROKEN - 1), "each adjustment applied once");
    ledger_free(l);

    /* Up to the event before it, from the first event and from event FROM. */
    l = ledger_new();
    cr_assert_eq(replay_log(s, l, BROKEN - 1, &res), 0, "%s", res.why);
    cr_assert_eq(res.head, BROKEN - 1);
    cr_assert(ledger_frame(l, "f", &f));
    cr_assert_eq(f.granted, 100 * (BROKEN - 1));
    ledger_free(l);

    l = ledger_new();
    cr_assert_eq(replay_log(s, l, FROM, &res), 0, "%s", res.why);
    cr_assert_eq(replay_log_from(s, l, FROM, from_hash, BROKEN - 1, false, &res), 0, "%s", res.why);
    cr_assert_eq(ledger_events(l), BROKEN - 1);
    cr_assert(ledger_frame(l, "f", &f));
    cr_assert_eq(f.granted, 100 * (BROKEN - 1));
    ledger_free(l);
    store_close(s);
}

/* The chain checked in pieces of `piece` events by `threads` threads (the caller one of them),
 * the pieces taken from the first or from the last. */
static int check_in_pieces(store *s, uint64_t piece, int threads, bool last_first,
                           replay_result *res)
{
    chain_job *j = chain_job_new(s, UINT64_MAX, piece);
    cr_assert_not_null(j);
    if (last_first)
        chain_job_last_first(j);
    pthread_t helpers[4];
    cr_assert_leq(threads, 5);
    for (int i = 0; i < threads - 1; i++)
        cr_assert_eq(pthread_create(&helpers[i], NULL, chain_job_thread, j), 0);
    chain_job_help(j);
    for (int i = 0; i < threads - 1; i++)
        pthread_join(helpers[i], NULL);
    return chain_job_finish(j, res);
}

/* verify walks the chain on two threads in pieces (checkpoint_walk_chain_on_two): for pieces
 * of 1, 2, 7 and the default, it says what one walk says. */
static void expect_walks_agree(store *s)
{
    store_reader *rd;
    checkpoint_chain one, two;
    cr_assert_eq(store_reader_begin(s, &rd), 0);
    checkpoint_walk_chain(rd, 0, &one);
    const uint64_t pieces[] = {1, 2, 7, 0};
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        cr_assert(checkpoint_walk_chain_on_two(s, rd, pieces[p], &two));
        cr_assert_eq(two.first_bad, one.first_bad, "pieces of %llu: first bad %llu, one walk %llu",
                     (unsigned long long)pieces[p], (unsigned long long)two.first_bad,
                     (unsigned long long)one.first_bad);
        cr_assert_str_eq(two.why, one.why, "pieces of %llu", (unsigned long long)pieces[p]);
        cr_assert_eq(two.checked, one.checked);
        cr_assert_eq(two.head, one.head);
        if (one.first_bad == 0)
            cr_assert_arr_eq(two.head_hash, one.head_hash, BUDGET_HASH_BYTES);
    }
    store_reader_end(rd);
}

/* A log of `n` grants; the links at the seqs in `broken` (0-terminated) name another event as
 * prev, and the events at the seqs in `changed` had a byte changed after they were hashed. The
 * last event's hash is put in `last`. */
static store *chain_log(uint64_t n, const uint64_t *broken, const uint64_t *changed,
                        uint8_t last[BUDGET_HASH_BYTES])
{
    store_options opt = {0};
    store *s = open_store(&opt);
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    static uint8_t bytes[64][EVENT_BYTES_MAX];
    static char ids[64][16];
    store_item items[64];
    cr_assert_leq(n, 64);
    for (uint64_t seq = 1; seq <= n; seq++) {
        snprintf(ids[seq - 1], sizeof ids[seq - 1], "f%llu", (unsigned long long)seq);
        ledger_event ev = grant_event(seq, ids[seq - 1], NULL);
        uint8_t link[BUDGET_HASH_BYTES];
        memcpy(link, prev, sizeof link);
        for (const uint64_t *b = broken; *b != 0; b++)
            if (*b == seq)
                link[seq % BUDGET_HASH_BYTES] ^= 0x40; /* a link to some other event */
        int size = event_encode(&ev, link, bytes[seq - 1], sizeof bytes[seq - 1], prev);
        cr_assert_gt(size, 0);
        for (const uint64_t *c = changed; *c != 0; c++)
            if (*c == seq)
                bytes[seq - 1][size / 2] ^= 0x01;
        items[seq - 1] =
            (store_item){seq, bytes[seq - 1], (size_t)size, ids[seq - 1], strlen(ids[seq - 1])};
    }
    bool sync_failed = false;
    cr_assert_eq(store_append(s, items, n, &sync_failed), 0);
    memcpy(last, prev, BUDGET_HASH_BYTES);
    return s;
}

/* Start-up checks the chain in pieces on two threads: whatever the pieces and the threads, it
 * finds what one walk from the first event finds: the lowest broken link, also when that is a
 * piece's first or last event or a piece after it is done first. */
Test(store, the_chain_checked_in_pieces_finds_what_one_walk_finds)
{
    const uint64_t n = 40, pieces[] = {1, 3, 7, 39, 40, 0};
    const size_t npieces = sizeof pieces / sizeof *pieces;
    uint8_t last[BUDGET_HASH_BYTES];
    replay_result want, got;

    const uint64_t none[] = {0};
    store *s = chain_log(n, none, none, last);
    cr_assert_eq(replay_check_chain(s, UINT64_MAX, &want), 0, "%s", want.why);
    cr_assert_eq(want.head, n);
    cr_assert_arr_eq(want.hash, last, BUDGET_HASH_BYTES);
    for (size_t p = 0; p < npieces; p++)
        for (int threads = 1; threads <= 4; threads++) {
            /* threads == 4: one thread, the pieces taken from the last */
            cr_assert_eq(
                check_in_pieces(s, pieces[p], threads == 4 ? 1 : threads, threads == 4, &got), 0,
                "%s", got.why);
            cr_assert_eq(got.head, n);
            cr_assert_arr_eq(got.hash, last, BUDGET_HASH_BYTES, "the head's hash, pieces of %llu",
                             (unsigned long long)pieces[p]);
        }
    expect_walks_agree(s);
    store_close(s);
    teardown();
    setup();

    /* Each damage alone, a prev and then a changed byte; then two at once. */
    const uint64_t at[] = {1, 2, 3, 7, 8, 21, 39, 40};
    const size_t nat = sizeof at / sizeof *at;
    for (size_t a = 0; a <= 2 * nat; a++) {
        bool changed = a >= nat && a < 2 * nat;
        uint64_t seq = a < 2 * nat ? at[a % nat] : 9;
        const uint64_t one[] = {seq, 0}, two[] = {30, seq, 0};
        if (a == 2 * nat)
            s = chain_log(n, two, none, last);
        else
            s = changed ? chain_log(n, none, one, last) : chain_log(n, one, none, last);
        cr_assert_eq(replay_check_chain(s, UINT64_MAX, &want), BUDGET_EINTERNAL);
        cr_assert_eq(want.bad_seq, seq, "one walk: bad at %llu, not %llu",
                     (unsigned long long)want.bad_seq, (unsigned long long)seq);
        cr_assert(strstr(want.why, changed ? "(hash)" : "(prev)") != NULL, "%s", want.why);
        for (size_t p = 0; p < npieces; p++)
            for (int threads = 1; threads <= 4; threads++) {
                cr_assert_eq(
                    check_in_pieces(s, pieces[p], threads == 4 ? 1 : threads, threads == 4, &got),
                    BUDGET_EINTERNAL, "damage at %llu passes in pieces of %llu",
                    (unsigned long long)seq, (unsigned long long)pieces[p]);
                cr_assert_eq(got.bad_seq, seq, "pieces of %llu, %d threads: bad at %llu, not %llu",
                             (unsigned long long)pieces[p], threads,
                             (unsigned long long)got.bad_seq, (unsigned long long)seq);
                cr_assert_str_eq(got.why, want.why);
            }
        expect_walks_agree(s);
        store_close(s);
        teardown();
        setup();
    }
}

/* A read as of an event past a snapshot hashes the links after the snapshot's event while the
 * snapshot is read (chain_job_new_from): in pieces of any size, on one thread or two, it finds
 * the lowest break at or after its first event, also at that first event itself (its prev not
 * the stored hash of the event before), and nothing before it. */
Test(store, the_chain_checked_from_an_event_finds_the_breaks_from_it_on)
{
    const uint64_t n = 40, firsts[] = {2, 5, 21, 40}, pieces[] = {1, 3, 7, 0};
    const uint64_t breaks[] = {0, 4, 5, 6, 21, 27, 40};
    uint8_t last[BUDGET_HASH_BYTES];
    for (size_t b = 0; b < sizeof breaks / sizeof *breaks; b++) {
        const uint64_t none[] = {0}, one[] = {breaks[b], 0};
        store *s = chain_log(n, breaks[b] != 0 ? one : none, none, last);
        for (size_t f = 0; f < sizeof firsts / sizeof *firsts; f++)
            for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++)
                for (int threads = 1; threads <= 2; threads++) {
                    chain_job *j = chain_job_new_from(s, firsts[f], UINT64_MAX, pieces[p]);
                    cr_assert_not_null(j);
                    pthread_t helper;
                    if (threads == 2)
                        cr_assert_eq(pthread_create(&helper, NULL, chain_job_thread, j), 0);
                    chain_job_help(j);
                    if (threads == 2)
                        pthread_join(helper, NULL);
                    replay_result res;
                    int rc = chain_job_finish(j, &res);
                    if (breaks[b] >= firsts[f]) {
                        cr_assert_eq(rc, BUDGET_EINTERNAL, "break %llu, from %llu, pieces of %llu",
                                     (unsigned long long)breaks[b], (unsigned long long)firsts[f],
                                     (unsigned long long)pieces[p]);
                        cr_assert_eq(res.bad_seq, breaks[b]);
                        cr_assert(strstr(res.why, "(prev)") != NULL, "%s", res.why);
                    } else {
                        cr_assert_eq(rc, 0, "break %llu, from %llu, pieces of %llu: %s",
                                     (unsigned long long)breaks[b], (unsigned long long)firsts[f],
                                     (unsigned long long)pieces[p], res.why);
                        cr_assert_eq(res.head, n);
                        cr_assert_arr_eq(res.hash, last, BUDGET_HASH_BYTES);
                    }
                }
        store_close(s);
        teardown();
        setup();
    }
}

/* A check told to stop after an event (chain_job_stop_after: a replay beside it failed there)
 * still finds a break at or before it, whichever piece holds it; a break only after it is not
 * looked for, and the check says it was stopped, not that the chain is whole. */
Test(store, a_chain_check_stopped_after_an_event_finds_only_the_breaks_up_to_it)
{
    const uint64_t n = 40, breaks[] = {5, 30};
    uint8_t last[BUDGET_HASH_BYTES];
    for (size_t b = 0; b < 2; b++) {
        const uint64_t none[] = {0}, one[] = {breaks[b], 0};
        store *s = chain_log(n, one, none, last);
        for (uint64_t stop = 0; stop <= n; stop += 5) {
            chain_job *j = chain_job_new(s, UINT64_MAX, 3);
            cr_assert_not_null(j);
            chain_job_stop_after(j, stop);
            chain_job_help(j);
            replay_result res;
            int rc = chain_job_finish(j, &res);
            /* A piece that begins at or before `stop` is checked whole. */
            uint64_t reach = stop == 0 ? 0 : ((stop - 1) / 3 + 1) * 3;
            if (breaks[b] <= reach) {
                cr_assert_eq(rc, BUDGET_EINTERNAL, "break %llu, stop %llu",
                             (unsigned long long)breaks[b], (unsigned long long)stop);
                cr_assert_eq(res.bad_seq, breaks[b]);
            } else {
                cr_assert_eq(rc, BUDGET_EUNAVAILABLE, "break %llu, stop %llu: %s",
                             (unsigned long long)breaks[b], (unsigned long long)stop, res.why);
                cr_assert(strstr(res.why, "stopped") != NULL, "%s", res.why);
            }
        }
        store_close(s);
        teardown();
        setup();
    }
}

/* verify (checkpoint_walk_chain) holds each event to the seq it is stored under: an event
 * whose own seq is another, though its link and hash are sound, is the first bad one. */
Test(store, verify_finds_an_event_stored_under_another_seq)
{
    for (uint64_t wrong = 1; wrong <= 3; wrong++) {
        store_options opt = {0};
        store *s = open_store(&opt);
        ledger_event evs[] = {grant_event(1, "f1", NULL), grant_event(2, "f2", NULL),
                              grant_event(3, "f3", NULL)};
        evs[wrong - 1].seq = 7; /* stored as event `wrong`, says it is event 7 */
        static uint8_t bytes[3][EVENT_BYTES_MAX];
        uint8_t prev[BUDGET_HASH_BYTES] = {0};
        store_item items[3];
        for (size_t i = 0; i < 3; i++) {
            int size = event_encode(&evs[i], prev, bytes[i], sizeof bytes[i], prev);
            cr_assert_gt(size, 0);
            items[i] = (store_item){i + 1, bytes[i], (size_t)size, evs[i].id, strlen(evs[i].id)};
        }
        bool sync_failed = false;
        cr_assert_eq(store_append(s, items, 3, &sync_failed), 0);

        store_reader *rd;
        cr_assert_eq(store_reader_begin(s, &rd), 0);
        checkpoint_chain chain;
        checkpoint_walk_chain(rd, 0, &chain);
        store_reader_end(rd);
        cr_assert_eq(chain.first_bad, wrong, "event %llu says it is event 7; first bad: %llu",
                     (unsigned long long)wrong, (unsigned long long)chain.first_bad);
        cr_assert_str_eq(chain.why, "seq");
        cr_assert_eq(chain.checked, wrong - 1);
        expect_walks_agree(s);
        replay_result res;
        cr_assert_eq(replay_check_chain(s, UINT64_MAX, &res), BUDGET_EINTERNAL);
        cr_assert_eq(res.bad_seq, wrong);
        store_close(s);
        teardown();
        setup();
    }
}

/* After a failed sync the store takes no write, and does not even try one: what is on disk is
 * unknown until a restart reads it. */
Test(store, after_a_failed_sync_no_write_is_tried)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 2, 0);
    arm(&plan, STORE_FAULT_SYNC, EIO, 1, false);
    bool sync_failed = false;
    cr_assert_eq(append(s, 3, 1, 0, &sync_failed), BUDGET_EINTERNAL);
    cr_assert(sync_failed);
    /* Counts every put from now on, failing none. */
    arm(&plan, STORE_FAULT_PUT, EIO, 1000000, false);
    for (int i = 0; i < 3; i++) {
        sync_failed = false;
        cr_assert_eq(append(s, 3, 1, 0, &sync_failed), BUDGET_EINTERNAL);
        cr_assert(sync_failed);
    }
    cr_assert_eq(plan.calls, 0, "%u puts were tried after the failed sync", plan.calls);
    store_close(s);
}

/* ---- the write-ahead file: unclean stops, torn records, rollback, its faults ---- */

/* A child that ends without closing its store: a crash, as far as the store can tell (what it
 * wrote is in the page cache, but nothing was marked clean). 0 when every step went as asked. */
typedef struct {
    store_options opt;
    uint64_t first;   /* the first seq appended (0: 1) */
    uint64_t batches; /* appended from `first`, `per` events each */
    size_t per;
    size_t size;
    uint64_t fail_batch; /* this batch (from 1) must fail with BUDGET_EUNAVAILABLE; 0: none */
} crash_plan;

static int crash_child(const crash_plan *p)
{
    store *s = NULL;
    char why[256];
    if (store_open(&s, store_dir, &p->opt, why, sizeof why) != 0)
        return 2;
    uint64_t seq = p->first != 0 ? p->first : 1;
    for (uint64_t b = 1; b <= p->batches; b++) {
        batch x;
        bool sync_failed = false;
        batch_make(&x, seq, p->per, p->size);
        int rc = store_append(s, x.items, x.n, &sync_failed);
        batch_free(&x);
        if (b == p->fail_batch) {
            if (rc != BUDGET_EUNAVAILABLE || sync_failed)
                return 3;
            if (p->opt.fault_ctx != NULL)
                ((fault_plan *)p->opt.fault_ctx)->fail_at = 0;
            continue; /* the same seqs go again in the next batch */
        }
        if (rc != 0 || sync_failed)
            return 4;
        seq += p->per;
    }
    return 0; /* the store is left open */
}

static void crash_after(const crash_plan *p)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        _exit(crash_child(p));
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writing child failed: %d",
              WEXITSTATUS(status));
}

static uint64_t le64_at(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The newest checkpoint in the store's write-ahead file: its LMDB txnid, lsn and area. */
typedef struct {
    uint64_t txnid, lsn, area;
} wal_head;

static wal_head read_wal_head(void)
{
    char path[192];
    uint8_t slot[2][64];
    snprintf(path, sizeof path, "%s/wal", store_dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(fseek(f, i * 4096L, SEEK_SET), 0);
        cr_assert_eq(fread(slot[i], 1, sizeof slot[i], f), sizeof slot[i]);
    }
    fclose(f);
    int newest = le64_at(slot[1] + 8) > le64_at(slot[0] + 8) ? 1 : 0;
    return (wal_head){le64_at(slot[newest] + 16), le64_at(slot[newest] + 32),
                      le64_at(slot[newest] + 40)};
}

/* Overwrites `size` bytes of `file` in the store's folder at `at`. */
static void patch_file(const char *file, long at, const void *bytes, size_t size)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s", store_dir, file);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, at, SEEK_SET), 0);
    cr_assert_eq(fwrite(bytes, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

Test(store, an_unclean_stop_keeps_every_append)
{
    crash_plan p = {.batches = 40, .per = 3};
    crash_after(&p);
    store *s = open_store(NULL);
    store_stats st;
    store_get_stats(s, &st);
    cr_assert(st.wal && st.commits_synced);
    cr_assert_eq(st.wal_records_replayed, 40, "replayed %llu records",
                 (unsigned long long)st.wal_records_replayed);
    assert_head(s, 120);
    assert_log(s, 120, 0);
    append_ok(s, 121, 2, 0);
    store_close(s);

    /* A clean close leaves nothing to bring in. */
    s = open_store(NULL);
    store_get_stats(s, &st);
    cr_assert_eq(st.wal_records_replayed, 0);
    assert_log(s, 122, 0);
    store_close(s);
}

/*
 * After a power loss LMDB's newest meta pages may point at pages that never reached the disk.
 * Here both meta pages newer than the checkpoint point at a root page that does not exist:
 * the store must not trust them, but go back to the checkpoint and bring in the records.
 */
Test(store, recovery_does_not_trust_lmdbs_newer_meta_pages)
{
    crash_plan p = {.batches = 6, .per = 2};
    crash_after(&p);
    wal_head w = read_wal_head();
    long page = sysconf(_SC_PAGESIZE);
    for (long slot = 0; slot < 2; slot++) {
        uint8_t meta[160];
        char path[192];
        snprintf(path, sizeof path, "%s/data.mdb", store_dir);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f);
        cr_assert_eq(fseek(f, slot * page, SEEK_SET), 0);
        cr_assert_eq(fread(meta, 1, sizeof meta, f), sizeof meta);
        fclose(f);
        uint64_t txnid;
        memcpy(&txnid, meta + 144, sizeof txnid);
        cr_assert_gt(txnid, w.txnid, "LMDB's meta page %ld is not newer than the checkpoint", slot);
        uint64_t bogus_root = 0x7fffff; /* the main database's root: a page past the file */
        patch_file("data.mdb", slot * page + 128, &bogus_root, sizeof bogus_root);
    }
    store *s = open_store(NULL);
    assert_head(s, 12);
    assert_log(s, 12, 0);
    store_close(s);
}

/* A record cut short or changed is where the log ends: the records before it are kept. */
Test(store, a_torn_record_ends_the_log_there)
{
    crash_plan p = {.batches = 3, .per = 4, .size = 700};
    crash_after(&p);
    wal_head w = read_wal_head();
    /* Each record: 32 bytes, then per event 8 + id + bytes, rounded to 8. */
    long at = 8192 + (long)(w.lsn % w.area);
    uint8_t len_bytes[4];
    char path[192];
    snprintf(path, sizeof path, "%s/wal", store_dir);
    for (int r = 0; r < 2; r++) {
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f);
        cr_assert_eq(fseek(f, at + 4, SEEK_SET), 0);
        cr_assert_eq(fread(len_bytes, 1, 4, f), 4);
        fclose(f);
        at += (long)(len_bytes[0] | len_bytes[1] << 8 | len_bytes[2] << 16);
    }
    /* The third record's second half never reached the disk. */
    uint8_t zeros[1500] = {0};
    patch_file("wal", at + 1500, zeros, sizeof zeros);
    store *s = open_store(NULL);
    assert_head(s, 8);
    assert_log(s, 8, 700);
    assert_absent(s, 9, 4);
    append_ok(s, 9, 1, 700);
    store_close(s);
}

/* A record whose structure holds but one of whose events changed on the way (a bit flipped on
 * the disk) is caught by its checksum: the log ends before it. */
Test(store, a_record_with_a_changed_byte_ends_the_log_there)
{
    crash_plan p = {.batches = 3, .per = 2, .size = 500};
    crash_after(&p);
    wal_head w = read_wal_head();
    uint8_t len_bytes[4], byte;
    char path[192];
    long at = 8192 + (long)(w.lsn % w.area);
    snprintf(path, sizeof path, "%s/wal", store_dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, at + 4, SEEK_SET), 0);
    cr_assert_eq(fread(len_bytes, 1, 4, f), 4);
    at += (long)(len_bytes[0] | len_bytes[1] << 8 | len_bytes[2] << 16); /* the second record */
    long inside = at + 32 + 8 + 4 + 100; /* its first event's 100th byte (id "ev-3") */
    cr_assert_eq(fseek(f, inside, SEEK_SET), 0);
    cr_assert_eq(fread(&byte, 1, 1, f), 1);
    fclose(f);
    byte ^= 0x10;
    patch_file("wal", inside, &byte, 1);
    store *s = open_store(NULL);
    assert_head(s, 2);
    assert_log(s, 2, 500);
    assert_absent(s, 3, 4);
    store_close(s);
}

/* A small file is written round and round; LMDB is synced behind it, and nothing is lost. */
Test(store, the_file_wraps_around_and_keeps_everything)
{
    store_options opt = {.wal_area_bytes = 64 * KIB};
    store *s = open_store(&opt);
    uint64_t seq = 1;
    for (int b = 0; b < 200; b++, seq += 5)
        append_ok(s, seq, 5, 900);
    store_stats st;
    store_get_stats(s, &st);
    cr_assert_gt(st.wal_checkpoints, 10, "%llu checkpoints",
                 (unsigned long long)st.wal_checkpoints);
    cr_assert_lt(st.wal_bytes_live, 64 * KIB);
    store_close(s);

    crash_plan p = {.opt = opt, .batches = 300, .per = 2, .size = 1200};
    /* The crash child starts from an empty log: begin again in a new folder. */
    teardown();
    setup();
    crash_after(&p);
    s = open_store(&opt);
    assert_head(s, 600);
    assert_log(s, 600, 1200);
    store_close(s);
}

/* A batch LMDB refused after its record was synced is spoiled in the file: it never comes back,
 * even when the process ends before any later record is written over it. */
Test(store, a_batch_lmdb_refused_does_not_come_back)
{
    fault_plan plan = {0};
    arm(&plan, STORE_FAULT_COMMIT, ENOSPC, 3, false);
    crash_plan p = {
        .opt = {.fault = fault_fn, .fault_ctx = &plan}, .batches = 3, .per = 3, .fail_batch = 3};
    crash_after(&p); /* ends right after the refusal */
    store *s = open_store(NULL);
    assert_head(s, 6);
    assert_log(s, 6, 0);
    assert_absent(s, 7, 3);
    store_close(s);

    plan = (fault_plan){0};
    arm(&plan, STORE_FAULT_COMMIT, ENOSPC, 1, false);
    crash_plan again = {.opt = {.fault = fault_fn, .fault_ctx = &plan},
                        .first = 7,
                        .batches = 3,
                        .per = 3,
                        .fail_batch = 1};
    crash_after(&again); /* the refused batch goes again, and two more after it */
    s = open_store(NULL);
    assert_head(s, 12);
    assert_log(s, 12, 0);
    store_close(s);
}

/* A record that cannot be written fails its batch alone; the store goes on. */
Test(store, a_failed_record_write_fails_only_its_batch)
{
    fault_plan plan = {0};
    store_options opt = {.fault = fault_fn, .fault_ctx = &plan};
    store *s = open_store(&opt);
    append_ok(s, 1, 3, 0);
    arm(&plan, STORE_FAULT_WAL_WRITE, EIO, 1, false);
    bool sync_failed = true;
    cr_assert_eq(append(s, 4, 2, 0, &sync_failed), BUDGET_EUNAVAILABLE);
    cr_assert(!sync_failed);
    append_ok(s, 4, 2, 0);
    assert_log(s, 5, 0);
    store_close(s);
}

/* LMDB's background sync fails: the store stops taking writes; what was acknowledged stays. */
Test(store, a_failed_lmdb_sync_stops_the_store_and_loses_nothing)
{
    fault_plan plan = {0};
    store_options opt = {.wal_area_bytes = 64 * KIB, .fault = fault_fn, .fault_ctx = &plan};
    arm(&plan, STORE_FAULT_LMDB_SYNC, EIO, 1, false);
    store *s = open_store(&opt);
    uint64_t acked = 0;
    bool sync_failed = false;
    for (int b = 0; b < 400 && !sync_failed; b++) {
        int rc = append(s, acked + 1, 4, 800, &sync_failed);
        if (rc == 0)
            acked += 4;
        else
            cr_assert(sync_failed && rc == BUDGET_EINTERNAL, "rc %d", rc);
    }
    cr_assert(sync_failed, "the store went on after its background sync failed");
    cr_assert_eq(plan.failures, 1);
    store_close(s);

    plan.fail_at = 0;
    s = open_store(&opt);
    assert_head(s, acked);
    assert_log(s, acked, 800);
    store_close(s);
}

/* Offline readers refuse a folder budgetd left uncleanly; a writable open recovers it. */
Test(store, a_read_only_open_refuses_an_unrecovered_folder)
{
    crash_plan p = {.batches = 2, .per = 2};
    crash_after(&p);
    store_options ro = {.read_only = true};
    store *s = (store *)&s;
    char why[256];
    cr_assert_eq(store_open(&s, store_dir, &ro, why, sizeof why), BUDGET_EUNAVAILABLE);
    cr_assert_not_null(strstr(why, "did not stop cleanly"), "why: %s", why);
    s = open_store(NULL);
    store_close(s);
    s = open_store(&ro);
    assert_log(s, 4, 0);
    store_close(s);
}

/* A data file put back from an older copy while the write-ahead file says more is refused,
 * and nothing is changed: with the right data file back, the store opens whole. */
Test(store, an_older_data_file_under_an_unclean_write_ahead_file_is_refused)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 2, 0);
    store_close(s);
    char live[192], old[192], newer[192], cmd[1024];
    snprintf(live, sizeof live, "%s/data.mdb", store_dir);
    snprintf(old, sizeof old, "%s/old.mdb", tmp_root);
    snprintf(newer, sizeof newer, "%s/newer.mdb", tmp_root);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", live, old);
    cr_assert_eq(system(cmd), 0);
    s = open_store(NULL);
    append_ok(s, 3, 2, 0); /* the copy is now older than the store */
    store_close(s);

    crash_plan p = {.first = 5, .batches = 3, .per = 1};
    crash_after(&p);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s' '%s'", live, newer, old, live);
    cr_assert_eq(system(cmd), 0);
    assert_open_refused(store_dir, "older than the write-ahead file");

    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", newer, live);
    cr_assert_eq(system(cmd), 0);
    s = open_store(NULL);
    assert_log(s, 7, 0);
    store_close(s);
}

/* The file takes the size asked for at the next open, and what it held is kept either way. */
Test(store, the_file_is_resized_at_open_and_keeps_everything)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 10, 0);
    store_close(s);
    crash_plan p = {.opt = {.wal_area_bytes = 16 * KIB}, .first = 11, .batches = 60, .per = 3};
    crash_after(&p);
    wal_head w = read_wal_head();
    cr_assert_eq(w.area, 16 * KIB);
    s = open_store(NULL); /* the default size again, after an unclean stop */
    assert_log(s, 190, 0);
    store_close(s);
    w = read_wal_head();
    cr_assert_eq(w.area, STORE_WAL_AREA_BYTES_DEFAULT);
}

/* A fault function that ends the process at its Nth commit: a crash amid a replay. */
static int exit_at_commit(void *ctx, store_fault_point point)
{
    unsigned *left = ctx;
    if (point == STORE_FAULT_COMMIT && --*left == 0)
        _exit(0);
    return 0;
}

/*
 * A crash while the records are brought in leaves the old checkpoint in charge: the next
 * start goes back to it again. Its pages must still be there, though the replay before the
 * crash committed transactions that freed them.
 */
Test(store, a_crash_while_records_are_brought_in_loses_nothing)
{
    store *s = open_store(NULL);
    append_ok(s, 1, 40, 0);
    store_close(s);
    crash_plan p = {.first = 41, .batches = 12, .per = 2};
    crash_after(&p);

    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        unsigned left = 8; /* the 8th of the 12 records' commits */
        store_options o = {.fault = exit_at_commit, .fault_ctx = &left};
        char why[256];
        store_open(&s, store_dir, &o, why, sizeof why);
        _exit(3); /* the replay did not reach its 8th commit */
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the replay ended otherwise: %d",
              WEXITSTATUS(status));
    s = open_store(NULL);
    assert_log(s, 64, 0);
    store_close(s);
}

/*
 * Many small commits: each takes new pages while a checkpoint's pin holds, so checkpoints must
 * come often enough for the freed pages to be used again. The data file stays within some
 * megabytes of what the log needs (with checkpoints only every quarter of the write-ahead
 * file, 3 000 such commits grew it to 86 MB; these 6 000 stay under 24 MiB).
 */
Test(store, many_small_commits_keep_the_data_file_small)
{
    store *s = open_store(NULL);
    for (uint64_t seq = 1; seq <= 6000; seq++)
        append_ok(s, seq, 1, 0);
    store_stats st;
    store_get_stats(s, &st);
    cr_log_info("6000 commits: %llu bytes of pages in use, %llu checkpoints",
                (unsigned long long)st.map_used_bytes, (unsigned long long)st.wal_checkpoints);
    cr_assert_lt(st.map_used_bytes, 24 * MIB, "the data file holds %llu bytes of pages",
                 (unsigned long long)st.map_used_bytes);
    cr_assert_gt(st.wal_checkpoints, 10);
    store_close(s);
}
