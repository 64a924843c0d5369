/*
 * Snapshots (daemon/snapshot.c): a ledger restored from a snapshot, with the events after it
 * applied, answers exactly as the whole log replayed, on logs that hold every event type; and
 * a snapshot that is damaged anywhere, truncated, keyed otherwise, or not at the log's seq and
 * hash, or missing, is never applied: the answer is still the full replay's.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "budget/errors.h"
#include "daemon/bigmem.h"
#include "daemon/event.h"
#include "daemon/ledger.h"
#include "daemon/replay.h"
#include "daemon/request.h"
#include "daemon/snapio.h"
#include "daemon/snapmac.h"
#include "daemon/snapshot.h"
#include "daemon/store.h"

#define FIXTURE BUDGET_SOURCE_DIR "/tests/fixtures/v1-log/data/data.mdb"

static char dir[64];
static char data[128];

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[512];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof(dir), "%s/snapshot-XXXXXX", tmp);
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof(data), "%s/data", dir);
}

static void teardown(void)
{
    remove_tree(dir);
}

TestSuite(snapshot, .init = setup, .fini = teardown, .timeout = 300);

/* ---- a log of every event type ---------------------------------------------------------- */

typedef struct {
    store *st;
    ledger *l;
    uint64_t seq;
    uint8_t prev[BUDGET_HASH_BYTES];
    bool types[LEDGER_TYPE_END];
    bool break_next; /* the next event links to a wrong prev */
} log_writer;

static const ledger_actor clerk = {1000, "clerk"}, approver = {1002, "approver"};

/* Checks, encodes and appends one command; asserts it is accepted. */
static void put(log_writer *w, ledger_cmd *c, const ledger_actor *who)
{
    ledger_event ev;
    ledger_error err;
    uint8_t bytes[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
    c->ts_ms = 1630000000000ull + w->seq * 1000;
    int rc = ledger_check(w->l, c, who, &ev, NULL, &err);
    cr_assert_eq(rc, 0, "%s %s refused: %s", ledger_type_name(c->type), c->id, err.message);
    ev.seq = ++w->seq;
    cr_assert_eq(ledger_apply(w->l, &ev), 0);
    uint8_t wrong[BUDGET_HASH_BYTES] = {1};
    int n = event_encode(&ev, w->break_next ? wrong : w->prev, bytes, sizeof(bytes), hash);
    w->break_next = false;
    cr_assert_gt(n, 0);
    store_item item = {ev.seq, bytes, (size_t)n, ev.id, strlen(ev.id)};
    bool sync_failed = false;
    if (w->st != NULL) /* none: the ledger alone */
        cr_assert_eq(store_append(w->st, &item, 1, &sync_failed), 0);
    memcpy(w->prev, hash, sizeof(w->prev));
    w->types[ev.type] = true;
}

static ledger_cmd cmd(ledger_type type, const char *id)
{
    ledger_cmd c;
    memset(&c, 0, sizeof(c));
    c.type = type;
    snprintf(c.id, sizeof(c.id), "%s", id);
    return c;
}

static void decided(ledger_cmd *c, int32_t date)
{
    strcpy(c->decision_body, "KS");
    c->decision_date = date;
    strcpy(c->decision_paragraph, "241");
}

static void register_unit(log_writer *w, const char *code, const char *parent)
{
    char id[32];
    snprintf(id, sizeof(id), "unit-%s", code);
    ledger_cmd c = cmd(LEDGER_UNIT_REGISTERED, id);
    strcpy(c.unit, code);
    strcpy(c.title, code);
    strcpy(c.unit_kind, "nämnd");
    if (parent)
        strcpy(c.parent, parent);
    put(w, &c, &clerk);
}

/* One round of the budget: a frame, adjusted, allocations proposed, approved, rejected and
 * withdrawn, avrop requested and decided, a reduction and a reversal, an outcome. */
static void budget_round(log_writer *w, int round)
{
    char id[64], frame[32], alloc[32], avrop[32];
    int32_t year = round < 12 ? 2021 : 2022;
    snprintf(frame, sizeof(frame), "f%d", round);
    ledger_cmd c = cmd(LEDGER_FRAME_GRANTED, frame);
    strcpy(c.unit, "KS");
    c.year = year;
    c.amount = 300000000 + round;
    snprintf(c.title, sizeof(c.title), "Ram %d", round);
    decided(&c, 20210824);
    c.intended = true;
    put(w, &c, &clerk);

    snprintf(id, sizeof(id), "f%d-adj", round);
    c = cmd(LEDGER_FRAME_ADJUSTED, id);
    strcpy(c.frame, frame);
    c.amount = -1000000;
    strcpy(c.title, "Minskning");
    decided(&c, 20210825);
    put(w, &c, &clerk);

    for (int k = 0; k < 3; k++) {
        snprintf(alloc, sizeof(alloc), "a%d-%d", round, k);
        c = cmd(LEDGER_ALLOCATION_PROPOSED, alloc);
        strcpy(c.frame, frame);
        strcpy(c.unit, k == 0 ? "SON" : "KFN");
        c.amount = 50000000;
        strcpy(c.title, "Områdesarbete");
        put(w, &c, &clerk);
    }
    snprintf(id, sizeof(id), "a%d-0-ok", round);
    c = cmd(LEDGER_DECISION_APPROVED, id);
    snprintf(c.target, sizeof(c.target), "a%d-0", round);
    decided(&c, 20210928);
    put(w, &c, &approver);
    snprintf(id, sizeof(id), "a%d-1-no", round);
    c = cmd(LEDGER_DECISION_REJECTED, id);
    snprintf(c.target, sizeof(c.target), "a%d-1", round);
    decided(&c, 20210928);
    put(w, &c, &approver);
    snprintf(id, sizeof(id), "a%d-2-wd", round);
    c = cmd(LEDGER_REQUEST_WITHDRAWN, id);
    snprintf(c.target, sizeof(c.target), "a%d-2", round);
    put(w, &c, &clerk);

    snprintf(alloc, sizeof(alloc), "a%d-0", round);
    for (int k = 0; k < 2; k++) {
        snprintf(avrop, sizeof(avrop), "v%d-%d", round, k);
        c = cmd(LEDGER_AVROP_REQUESTED, avrop);
        strcpy(c.allocation, alloc);
        c.amount = 10000000;
        strcpy(c.note, "Hösten");
        put(w, &c, &clerk);
        snprintf(id, sizeof(id), "v%d-%d-ok", round, k);
        c = cmd(LEDGER_DECISION_APPROVED, id);
        strcpy(c.target, avrop);
        decided(&c, 20211001);
        put(w, &c, &approver);
    }
    snprintf(id, sizeof(id), "r%d", round);
    c = cmd(LEDGER_ALLOCATION_REDUCTION_REQUESTED, id);
    strcpy(c.allocation, alloc);
    c.amount = 1000000;
    strcpy(c.title, "Mindre behov");
    put(w, &c, &clerk);
    snprintf(id, sizeof(id), "r%d-ok", round);
    c = cmd(LEDGER_DECISION_APPROVED, id);
    snprintf(c.target, sizeof(c.target), "r%d", round);
    decided(&c, 20211101);
    put(w, &c, &approver);
    snprintf(id, sizeof(id), "q%d", round);
    c = cmd(LEDGER_AVROP_REVERSAL_REQUESTED, id);
    snprintf(c.target, sizeof(c.target), "v%d-0", round);
    c.amount = 500000;
    strcpy(c.title, "Återföring");
    put(w, &c, &clerk);
    snprintf(id, sizeof(id), "q%d-no", round);
    c = cmd(LEDGER_DECISION_REJECTED, id);
    snprintf(c.target, sizeof(c.target), "q%d", round);
    decided(&c, 20211102);
    put(w, &c, &approver);

    snprintf(id, sizeof(id), "o%d", round);
    c = cmd(LEDGER_OUTCOME_RECORDED, id);
    strcpy(c.unit, "SON");
    c.year = year;
    c.month = 1 + round % 12;
    strcpy(c.allocation, alloc);
    c.amount = 1234567 + round;
    strcpy(c.note, "Utfall");
    put(w, &c, &clerk);
}

/* The end of the cycle: a unit renamed and closed, a budget adopted, the year closed and a
 * frame's unspent money carried over. */
static void cycle_end(log_writer *w)
{
    ledger_cmd c = cmd(LEDGER_UNIT_RENAMED, "unit-BUN-namn");
    strcpy(c.unit, "BUN");
    strcpy(c.title, "Bildningsnämnden");
    put(w, &c, &clerk);
    c = cmd(LEDGER_UNIT_CLOSED, "unit-BUN-slut");
    strcpy(c.unit, "BUN");
    strcpy(c.reference, "KF 2022-12-12 § 5");
    put(w, &c, &clerk);

    c = cmd(LEDGER_BUDGET_ADOPTED, "b2022");
    c.year = 2022;
    c.plan_until = 2025;
    strcpy(c.title, "Budget 2022 med plan 2023–2025");
    c.lines.count = 2;
    strcpy(c.lines.line[0].unit, "KS");
    strcpy(c.lines.line[0].continues, "f0");
    c.lines.line[0].amount = 150000000;
    c.lines.line[0].plans = 3;
    for (int k = 0; k < 3; k++)
        c.lines.line[0].plan[k] = 150000000;
    strcpy(c.lines.line[1].unit, "SON");
    c.lines.line[1].amount = 100000000;
    c.lines.line[1].plans = 3;
    for (int k = 0; k < 3; k++)
        c.lines.line[1].plan[k] = 100000000 + k;
    decided(&c, 20211122);
    put(w, &c, &clerk);
    c = cmd(LEDGER_YEAR_CLOSED, "bokslut-2021");
    c.year = 2021;
    strcpy(c.note, "Bokslut 2021");
    decided(&c, 20220425);
    put(w, &c, &clerk);
    c = cmd(LEDGER_FRAME_CARRIED_OVER, "f0-omb");
    strcpy(c.frame, "f0");
    c.amount = 50000000;
    strcpy(c.title, "Ombudgetering");
    decided(&c, 20220426);
    put(w, &c, &clerk);
}

static store *open_store(const char *path)
{
    store *st = NULL;
    char why[256];
    cr_assert_eq(store_open(&st, path, NULL, why, sizeof(why)), 0, "store_open: %s", why);
    return st;
}

/* Writes the log of every type through `w` (a store and a ledger, both empty). */
static void write_types(log_writer *w)
{
    register_unit(w, "KS", NULL);
    register_unit(w, "SON", "KS");
    register_unit(w, "KFN", "KS");
    register_unit(w, "BUN", "KS");
    for (int round = 0; round < 12; round++)
        budget_round(w, round);
    cycle_end(w);
    for (int round = 12; round < 16; round++)
        budget_round(w, round);
}

/* Writes the log of every type into `data`; its head. */
static uint64_t write_every_type(bool types[LEDGER_TYPE_END])
{
    log_writer w = {.st = open_store(data), .l = ledger_new()};
    write_types(&w);
    memcpy(types, w.types, sizeof(w.types));
    ledger_free(w.l);
    store_close(w.st);
    return w.seq;
}

/* A copy of the v1 fixture's log (274 events written by an earlier budgetd). */
static void copy_fixture(void)
{
    char to[256];
    cr_assert_eq(mkdir(data, 0700), 0);
    snprintf(to, sizeof(to), "%s/data.mdb", data);
    FILE *in = fopen(FIXTURE, "rb"), *out = fopen(to, "wb");
    cr_assert(in && out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

/* ---- answers ---------------------------------------------------------------------------- */

typedef struct {
    char *bytes;
    size_t size;
} answer;

/* What `balances` (the whole ledger, then, without `decided_by`, the years view) answers from
 * `l`, as bytes; `decided_by` (0: none) as the request gives it. */
static answer answers_by(const ledger *l, uint64_t as_of, int32_t decided_by)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    ledger_error err;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    balances_query q;
    memset(&q, 0, sizeof(q));
    q.decided_by = decided_by;
    cr_assert_eq(request_pack_balances(&pk, l, &q, as_of, &err), 0, "%s", err.message);
    if (decided_by == 0) {
        q.years = true;
        q.from = 2018;
        q.to = 2030;
        cr_assert_eq(request_pack_balances(&pk, l, &q, as_of, &err), 0, "%s", err.message);
    }
    const char *units[] = {"KS", "SON", "KFN", "BUN"};
    for (size_t i = 0; i < 4; i++) {
        ledger_outcome_view o;
        ledger_outcome(l, units[i], 2021, &o);
        msgpack_pack_int64(&pk, o.outcome);
        msgpack_pack_int64(&pk, o.budget);
        msgpack_pack_int64(&pk, o.forecast);
    }
    ledger_counts counts;
    ledger_get_counts(l, &counts);
    msgpack_pack_bin(&pk, sizeof(counts));
    msgpack_pack_bin_body(&pk, &counts, sizeof(counts));
    msgpack_pack_uint64(&pk, ledger_events(l));
    msgpack_pack_uint64(&pk, ledger_last_ts(l));
    return (answer){sb.data, sb.size};
}

static answer answers_of(const ledger *l, uint64_t as_of)
{
    return answers_by(l, as_of, 0);
}

static ledger *full_replay(store *st, uint64_t upto)
{
    replay_result res;
    ledger *l = ledger_new();
    cr_assert_eq(replay_log(st, l, upto, &res), 0, "replay: %s", res.why);
    return l;
}

/* Restores the newest valid snapshot at or below `upto` and applies the rest; *from: its seq
 * (0 when none was valid, then a full replay). */
static ledger *restored(const snapshots *s, store *st, uint64_t upto, bool check_before,
                        uint64_t *from)
{
    uint8_t hash[BUDGET_HASH_BYTES];
    char why[256];
    replay_result res;
    *from = 0;
    ledger *l = snapshot_restore(s, st, upto, from, hash, why, sizeof(why));
    if (l == NULL) {
        *from = 0;
        return full_replay(st, upto);
    }
    cr_assert_eq(replay_log_from(st, l, *from, hash, upto, check_before, &res), 0, "%s", res.why);
    cr_assert_eq(res.head, upto);
    return l;
}

static void expect_same(const ledger *a, const ledger *b, uint64_t as_of, const char *what)
{
    answer x = answers_of(a, as_of), y = answers_of(b, as_of);
    cr_assert(x.size == y.size && memcmp(x.bytes, y.bytes, x.size) == 0,
              "%s as of %llu: the answers differ", what, (unsigned long long)as_of);
    free(x.bytes);
    free(y.bytes);
}

/* Writes a snapshot of the log at each of `at` (full replays to them). */
static void write_snapshots(const snapshots *s, store *st, const uint64_t *at, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        replay_result res;
        ledger *l = ledger_new();
        cr_assert_eq(replay_log(st, l, at[i], &res), 0);
        char why[256];
        cr_assert_eq(snapshot_write(s, l, res.hash, why, sizeof(why)), 0, "%s", why);
        ledger_free(l);
    }
}

static void snapshot_path(const snapshots *s, uint64_t seq, char *out, size_t size)
{
    snprintf(out, size, "%s/%llu.snap", s->dir, (unsigned long long)seq);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Every third seq from 1 to head, and the head, answered from snapshots + the tail equals the
 * full replay; returns the share (in percent) of them that started from a snapshot. */
static uint64_t compare_everywhere(const snapshots *s, store *st, uint64_t head, bool check_before)
{
    uint64_t from_snapshots = 0, compared = 0;
    for (uint64_t upto = 1; upto <= head;
         upto = upto + 3 > head && upto != head ? head : upto + 3) {
        uint64_t from;
        ledger *a = restored(s, st, upto, check_before, &from);
        ledger *b = full_replay(st, upto);
        cr_assert_leq(from, upto);
        expect_same(a, b, upto, "snapshot + tail");
        from_snapshots += from != 0;
        compared++;
        ledger_free(a);
        ledger_free(b);
    }
    return from_snapshots * 100 / compared;
}

/* ---- tests ------------------------------------------------------------------------------ */

Test(snapshot, every_event_type_is_in_the_logs_compared)
{
    bool types[LEDGER_TYPE_END];
    write_every_type(types);
    for (int t = 1; t < LEDGER_TYPE_END; t++)
        cr_expect(types[t], "the log has no %s", ledger_type_name((ledger_type)t));
}

static int memstream_write(void *ctx, const void *bytes, size_t n)
{
    return fwrite(bytes, 1, n, ctx) == n ? 0 : -1;
}

typedef struct {
    const char *at;
} memory_source;

static int memory_read(void *ctx, void *bytes, size_t n)
{
    memory_source *m = ctx;
    memcpy(bytes, m->at, n);
    m->at += n;
    return 0;
}

/* The bytes ledger_save writes of `l`. */
static answer saved(const ledger *l)
{
    answer a = {NULL, 0};
    FILE *f = open_memstream(&a.bytes, &a.size);
    snap_sink sink = {memstream_write, f};
    cr_assert_eq(ledger_save(l, &sink), 0);
    fclose(f);
    return a;
}

typedef struct {
    const uint8_t *bytes;
    size_t at;
} mem_source;

static int mem_read(void *ctx, void *bytes, size_t n)
{
    mem_source *m = ctx;
    memcpy(bytes, m->bytes + m->at, n);
    m->at += n;
    return 0;
}

static int mem_write(void *ctx, const void *bytes, size_t n)
{
    return fwrite(bytes, 1, n, ctx) == n ? 0 : -1;
}

/* An array read back holds its items, with room for an eighth more (and SNAP_ROOM_MIN), so
 * that events applied after a restore do not move it whole; none, or one over its bound, is
 * as before. */
Test(snapshot, an_array_read_back_has_room_to_grow)
{
    for (uint32_t n = 0; n <= 100000; n = n < 10 ? n + 1 : n * 10) {
        uint64_t *items = malloc((n + 1) * sizeof(*items));
        for (uint32_t i = 0; i < n; i++)
            items[i] = (uint64_t)i * 7919u;
        char *saved = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&saved, &size);
        snap_sink sink = {mem_write, f};
        cr_assert_eq(snap_put_array(&sink, items, n, sizeof(*items)), 0);
        cr_assert_eq(fclose(f), 0);

        mem_source m = {(const uint8_t *)saved, 0};
        snap_source source = {mem_read, &m, size};
        void *got;
        uint32_t count, cap;
        cr_assert_eq(snap_get_array(&source, &got, &count, &cap, sizeof(*items), n), 0);
        cr_assert_eq(count, n);
        if (n == 0) {
            cr_assert_null(got);
            cr_assert_eq(cap, 0);
        } else {
            cr_assert_eq(cap, n + n / SNAP_ROOM_SHARE + SNAP_ROOM_MIN, "%u items, room %u", n, cap);
            cr_assert(memcmp(got, items, (size_t)n * sizeof(*items)) == 0);
            /* The room is the allocation's own: writing all of it is fine (ASan would say). */
            memset((uint64_t *)got + n, 0xa5, (size_t)(cap - n) * sizeof(*items));
        }
        free(got);
        if (n > 0) {
            m.at = 0;
            source.left = size;
            cr_assert_eq(snap_get_array(&source, &got, &count, &cap, sizeof(*items), n - 1), -1);
            cr_assert_null(got);
        }
        free(saved);
        free(items);
    }
}

Test(snapshot, a_state_saved_and_loaded_is_the_same_state)
{
    bool types[LEDGER_TYPE_END];
    uint64_t head = write_every_type(types);
    store *st = open_store(data);
    for (uint64_t upto = 0; upto <= head; upto += 7) {
        ledger *l = full_replay(st, upto);
        answer first = saved(l);
        memory_source m = {first.bytes};
        snap_source source = {memory_read, &m, first.size};
        ledger *back = ledger_load(&source);
        cr_assert_not_null(back, "the state at %llu does not load", (unsigned long long)upto);
        cr_assert_eq(ledger_load_finish(back), 0);
        answer second = saved(back);
        cr_assert(first.size == second.size && memcmp(first.bytes, second.bytes, first.size) == 0,
                  "the state at %llu loads as another", (unsigned long long)upto);
        expect_same(l, back, upto, "loaded");
        /* Cut short anywhere, or with a byte more, it does not load. */
        for (uint64_t cut = 0; cut < first.size; cut += 1 + first.size / 97) {
            memory_source c = {first.bytes};
            snap_source shorter = {memory_read, &c, cut};
            ledger *none = ledger_load(&shorter);
            cr_assert_null(none, "a state cut at %llu loads", (unsigned long long)cut);
        }
        free(first.bytes);
        free(second.bytes);
        ledger_free(back);
        ledger_free(l);
    }
    store_close(st);
}

/* The bytes of layout 1, before decided_last, from `now` (layout 2): the layout's number 1, and
 * the counters without the 8 bytes of closings and corrections (decided_last's 4 were padding). */
static answer layout_1_of(answer now)
{
    size_t cut = ledger_peek_bytes() - 8;
    answer old = {malloc(now.size - 8), now.size - 8};
    cr_assert_not_null(old.bytes);
    memcpy(old.bytes, now.bytes, cut);
    memcpy(old.bytes + cut, now.bytes + cut + 8, now.size - cut - 8);
    uint32_t one = 1;
    memcpy(old.bytes, &one, sizeof(one));
    return old;
}

/* A state saved in the layout before decided_last (snapshots written by the build before) still
 * loads as the same state, so that start-up and `as_of` use them; but no view by decision day
 * starts from it, whatever the day, for its decisions' days are not known. A layout of another
 * number does not load. */
Test(snapshot, a_state_of_the_layout_before_loads_and_starts_no_decided_view)
{
    bool types[LEDGER_TYPE_END];
    write_every_type(types);
    store *st = open_store(data);
    ledger *l = full_replay(st, 9);
    cr_assert(ledger_decided_base(l, 20991231), "the state at 9 is no view by 2099-12-31");
    answer now = saved(l);
    cr_assert(ledger_peek_decided_base((const uint8_t *)now.bytes, now.size, 20991231));
    answer old = layout_1_of(now);
    memory_source m = {old.bytes};
    snap_source source = {memory_read, &m, old.size};
    ledger *back = ledger_load(&source);
    cr_assert_not_null(back, "a state of layout 1 does not load");
    cr_assert_eq(ledger_load_finish(back), 0);
    expect_same(l, back, 9, "loaded from layout 1");
    cr_assert_not(ledger_decided_base(back, 20991231));
    cr_assert_not(ledger_peek_decided_base((const uint8_t *)old.bytes, old.size, 20991231));
    uint32_t three = 3;
    memcpy(old.bytes, &three, sizeof(three));
    m.at = old.bytes;
    source.left = old.size;
    cr_assert_null(ledger_load(&source), "a state of layout 3 loads");
    free(now.bytes);
    free(old.bytes);
    ledger_free(back);
    ledger_free(l);
    store_close(st);
}

/* Leaves the heap's free blocks full of 0xa5, as a long-running daemon's hold what it freed. */
static void dirty_the_heap(void)
{
    enum { BLOCKS = 512 };
    void *blocks[BLOCKS];
    for (size_t i = 0; i < BLOCKS; i++) {
        size_t size = 16 + (i * 997) % 65536;
        blocks[i] = malloc(size);
        cr_assert_not_null(blocks[i]);
        memset(blocks[i], 0xa5, size);
    }
    for (size_t i = 0; i < BLOCKS; i++)
        free(blocks[i]);
}

static void expect_same_bytes(const ledger *a, const ledger *b, const char *what)
{
    answer x = saved(a), y = saved(b);
    size_t at = 0;
    while (at < x.size && at < y.size && x.bytes[at] == y.bytes[at])
        at++;
    cr_assert(x.size == y.size && at == x.size,
              "%s: %zu and %zu bytes, the first difference at %zu", what, x.size, y.size, at);
    free(x.bytes);
    free(y.bytes);
}

/* A snapshot holds the state and nothing else: the padding of each record and the bytes after
 * each text's end are zeros, not whatever the memory held before. So one state saves the same
 * bytes however it was built: by the writes themselves, replayed (on a heap full of old bytes),
 * or restored from a snapshot with the events after it applied. */
Test(snapshot, one_state_saves_the_same_bytes_however_it_was_built)
{
    log_writer w = {.st = open_store(data), .l = ledger_new()};
    write_types(&w);
    uint64_t head = w.seq;
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(snapshot_write(&s, w.l, w.prev, why, sizeof(why)), 0, "%s", why);
    budget_round(&w, 20);

    dirty_the_heap();
    ledger *replayed = full_replay(w.st, w.seq);
    expect_same_bytes(w.l, replayed, "written and replayed");
    dirty_the_heap();
    uint64_t from;
    uint8_t hash[BUDGET_HASH_BYTES];
    replay_result res;
    ledger *restored = snapshot_restore(&s, w.st, w.seq, &from, hash, why, sizeof(why));
    cr_assert_not_null(restored, "%s", why);
    cr_assert_eq(from, head);
    cr_assert_eq(replay_log_from(w.st, restored, from, hash, w.seq, false, &res), 0, "%s", res.why);
    expect_same_bytes(w.l, restored, "written and restored with the tail");
    ledger_free(restored);
    ledger_free(replayed);
    ledger_free(w.l);
    store_close(w.st);
}

/* Fills the blocks that bigmem keeps for reuse with old bytes: blocks of 4 to 24 MiB. */
static void dirty_the_spares(void)
{
    static const size_t mib[] = {4, 5, 6, 8, 10, 12, 16, 20, 24};
    void *blocks[sizeof(mib) / sizeof(mib[0])];
    for (size_t i = 0; i < sizeof(mib) / sizeof(mib[0]); i++) {
        blocks[i] = bigmem_malloc(mib[i] << 20);
        cr_assert_not_null(blocks[i]);
        memset(blocks[i], 0xa5, mib[i] << 20);
    }
    for (size_t i = 0; i < sizeof(mib) / sizeof(mib[0]); i++)
        bigmem_free(blocks[i]);
}

static uint64_t blocks_reused(void)
{
    bigmem_stats st;
    bigmem_get_stats(&st);
    return st.reused;
}

/* The same with a state large enough for arrays of 4 MiB and more, which are built in the
 * pages of arrays freed before (bigmem.h) and so hold the old bytes of those: loaded from its
 * saved bytes, copied, and grown by the same events as the state built by the writes, it
 * saves the same bytes. */
Test(snapshot, a_large_state_built_in_reused_pages_saves_the_same_bytes)
{
    bigmem_init();
    log_writer w = {.l = ledger_new()};
    register_unit(&w, "KS", NULL);
    register_unit(&w, "SON", "KS");
    register_unit(&w, "KFN", "KS");
    int round = 0;
    for (; round < 20000; round++)
        budget_round(&w, round);
    answer first = saved(w.l);
    cr_assert_gt(first.size, (size_t)16 << 20, "the state is %zu bytes", first.size);

    dirty_the_spares();
    uint64_t reused = blocks_reused();
    memory_source m = {first.bytes};
    snap_source source = {memory_read, &m, first.size};
    ledger *back = ledger_load(&source);
    cr_assert_not_null(back);
    cr_assert_eq(ledger_load_finish(back), 0);
    cr_assert_geq(blocks_reused() - reused, 3, "the load took %llu blocks kept",
                  (unsigned long long)(blocks_reused() - reused));
    expect_same_bytes(w.l, back, "built and loaded in reused pages");

    dirty_the_spares();
    reused = blocks_reused();
    ledger *copy = ledger_clone(w.l);
    cr_assert_not_null(copy);
    cr_assert_geq(blocks_reused() - reused, 3);
    expect_same_bytes(w.l, copy, "built and copied into reused pages");

    /* grown past their room, through the same events, their tables in reused pages too */
    dirty_the_spares();
    reused = blocks_reused();
    log_writer wb = w, wc = w;
    wb.l = back;
    wc.l = copy;
    for (int end = round + 3000; round < end; round++) {
        budget_round(&w, round);
        budget_round(&wb, round);
        budget_round(&wc, round);
    }
    cr_assert_geq(blocks_reused() - reused, 1, "nothing grew into a block kept");
    expect_same_bytes(w.l, back, "loaded in reused pages and grown");
    expect_same_bytes(w.l, copy, "copied into reused pages and grown");
    free(first.bytes);
    ledger_free(copy);
    ledger_free(back);
    ledger_free(w.l);
    bigmem_trim(0);
}

Test(snapshot, restored_with_the_tail_equals_a_full_replay_of_every_type)
{
    bool types[LEDGER_TYPE_END];
    uint64_t head = write_every_type(types);
    store *st = open_store(data);
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    const uint64_t at[] = {1, 4, 17, 40, 100, 163, 200, head - 1, head};
    write_snapshots(&s, st, at, sizeof(at) / sizeof(at[0]));
    cr_assert_gt(compare_everywhere(&s, st, head, true), 90);
    cr_assert_gt(compare_everywhere(&s, st, head, false), 90);
    store_close(st);
}

Test(snapshot, restored_with_the_tail_equals_a_full_replay_of_an_earlier_log)
{
    copy_fixture();
    store *st = open_store(data);
    uint64_t head;
    uint8_t hash[BUDGET_HASH_BYTES];
    cr_assert_eq(store_head(st, &head, hash), 0);
    cr_assert_eq(head, 274);
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    const uint64_t at[] = {1, 10, 50, 99, 150, 273};
    write_snapshots(&s, st, at, sizeof(at) / sizeof(at[0]));
    cr_assert_gt(compare_everywhere(&s, st, head, true), 90);
    store_close(st);
}

/* The log of every type with snapshots at 40 and 120: the store, the folder, the head. */
static uint64_t damage_setup(store **st, snapshots *s)
{
    bool types[LEDGER_TYPE_END];
    uint64_t head = write_every_type(types);
    *st = open_store(data);
    char why[256];
    cr_assert_eq(snapshots_open(s, data, 100, why, sizeof(why)), 0, "%s", why);
    const uint64_t at[] = {40, 120};
    write_snapshots(s, *st, at, 2);
    return head;
}

/* The full replay's answer as of `upto` on the store of this test, made once. */
static answer full_answer(store *st, uint64_t upto)
{
    static store *cached_store;
    static uint64_t cached_upto;
    static answer cached;
    if (cached.bytes == NULL || cached_store != st || cached_upto != upto) {
        free(cached.bytes);
        ledger *b = full_replay(st, upto);
        cached = answers_of(b, upto);
        ledger_free(b);
        cached_store = st;
        cached_upto = upto;
    }
    return cached;
}

/* The answer as of `upto` starts from snapshot `want_from` (0: none) and equals the full
 * replay's. */
static void expect_restored_from(const snapshots *s, store *st, uint64_t upto, uint64_t want_from,
                                 const char *what)
{
    uint64_t from;
    ledger *a = restored(s, st, upto, true, &from);
    cr_assert_eq(from, want_from, "%s: restored from %llu, expected %llu", what,
                 (unsigned long long)from, (unsigned long long)want_from);
    answer x = answers_of(a, upto), y = full_answer(st, upto);
    cr_assert(x.size == y.size && memcmp(x.bytes, y.bytes, x.size) == 0,
              "%s as of %llu: the answers differ", what, (unsigned long long)upto);
    free(x.bytes);
    ledger_free(a);
}

static char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    long n = file_size(path);
    char *bytes = malloc((size_t)n);
    cr_assert_eq(fread(bytes, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return bytes;
}

static void write_all(const char *path, const char *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(bytes, 1, size, f), size);
    fclose(f);
}

/* Flips one byte in the middle of the snapshot at `seq`. */
static void damage_snapshot(const snapshots *s, uint64_t seq)
{
    char path[PATH_MAX + 32];
    snapshot_path(s, seq, path, sizeof(path));
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f, "open %s", path);
    long middle = file_size(path) / 2;
    fseek(f, middle, SEEK_SET);
    int byte = fgetc(f);
    fseek(f, middle, SEEK_SET);
    fputc(byte ^ 0x20, f);
    fclose(f);
}

/* The state as of `upto` made again by snapshot_rebuild: from snapshot `want_from` (0: the first
 * event), with the log's hash of event `upto`, and the very bytes of the log replayed whole. */
static void expect_rebuilt(const snapshots *s, store *st, uint64_t upto, uint64_t want_from,
                           const char *what)
{
    uint64_t from = UINT64_MAX;
    uint8_t hash[BUDGET_HASH_BYTES], stored[BUDGET_HASH_BYTES];
    char why[256] = "";
    ledger *a = snapshot_rebuild(s, st, upto, &from, hash, why, sizeof(why));
    cr_assert_not_null(a, "%s, event %llu: %s", what, (unsigned long long)upto, why);
    cr_assert_eq(from, want_from, "%s, event %llu: made from %llu, expected %llu", what,
                 (unsigned long long)upto, (unsigned long long)from, (unsigned long long)want_from);
    cr_assert_eq(replay_stored_hash(st, upto, stored), 0);
    cr_assert(memcmp(hash, stored, BUDGET_HASH_BYTES) == 0, "%s, event %llu: not the log's hash",
              what, (unsigned long long)upto);
    ledger *b = full_replay(st, upto);
    expect_same_bytes(a, b, what);
    ledger_free(a);
    ledger_free(b);
}

/* What budgetd writes its snapshots of while it serves: the state made again from the snapshot
 * before and the events since, never trusted further than a read as of that point is. At every
 * point it saves the bytes of the log replayed whole; with the snapshots below damaged it is
 * made from the first event; past the log's end there is none. */
Test(snapshot, a_state_made_again_from_the_log_saves_the_bytes_of_the_log_replayed)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s); /* snapshots at 40 and 120 */
    for (uint64_t upto = 1; upto <= head; upto++)
        expect_rebuilt(&s, st, upto, upto >= 120 ? 120 : upto >= 40 ? 40 : 0, "made again");
    damage_snapshot(&s, 120);
    expect_rebuilt(&s, st, head, 40, "the snapshot at 120 damaged");
    damage_snapshot(&s, 40);
    expect_rebuilt(&s, st, head, 0, "both damaged");
    uint64_t from;
    uint8_t hash[BUDGET_HASH_BYTES];
    char why[256] = "";
    ledger *none = snapshot_rebuild(&s, st, head + 1, &from, hash, why, sizeof(why));
    cr_assert_null(none, "a state past the log's end");
    cr_assert(strstr(why, "the log ends at event") != NULL, "%s", why);
    store_close(st);
}

Test(snapshot, a_flipped_byte_anywhere_is_never_applied)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 120, path, sizeof(path));
    size_t size;
    char *good = read_all(path, &size);
    expect_restored_from(&s, st, head, 120, "undamaged");
    for (size_t at = 0; at < size; at += at < 96 || at > size - 64 ? 1 : 1 + size / 150) {
        for (int bit = 0; bit < 8; bit += 7) {
            good[at] ^= (char)(1 << bit);
            write_all(path, good, size);
            good[at] ^= (char)(1 << bit);
            char what[64];
            snprintf(what, sizeof(what), "byte %zu bit %d flipped", at, bit);
            expect_restored_from(&s, st, head, 40, what);
        }
    }
    free(good);
    store_close(st);
}

Test(snapshot, a_truncated_or_extended_snapshot_is_never_applied)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 120, path, sizeof(path));
    size_t size;
    char *good = read_all(path, &size);
    for (size_t cut = 0; cut < size; cut += cut < 96 || cut > size - 64 ? 1 : 1 + size / 100) {
        write_all(path, good, cut);
        expect_restored_from(&s, st, head, 40, "truncated");
    }
    char *longer = malloc(size + 1);
    memcpy(longer, good, size);
    longer[size] = 0;
    write_all(path, longer, size + 1);
    expect_restored_from(&s, st, head, 40, "a byte longer");
    free(longer);
    free(good);
    store_close(st);
}

/* Each file's tag is under a key of its own, drawn from its header's random bytes: the same
 * state written twice gets two headers and two tags, and neither file's header makes the
 * other's body and tag pass. */
Test(snapshot, each_write_has_a_key_of_its_own_and_headers_cannot_be_swapped)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 120, path, sizeof(path));
    size_t size_a, size_b;
    char *a = read_all(path, &size_a);
    const uint64_t at[] = {120};
    write_snapshots(&s, st, at, 1);
    char *b = read_all(path, &size_b);
    cr_assert(size_a > SNAPSHOT_HEADER_BYTES && size_b > SNAPSHOT_HEADER_BYTES);
    cr_assert(memcmp(a + SNAPSHOT_HEADER_BYTES - SNAPSHOT_NONCE_BYTES,
                     b + SNAPSHOT_HEADER_BYTES - SNAPSHOT_NONCE_BYTES, SNAPSHOT_NONCE_BYTES) != 0,
              "two writes drew the same random bytes");
    cr_assert(memcmp(a + size_a - SNAPSHOT_MAC_BYTES, b + size_b - SNAPSHOT_MAC_BYTES,
                     SNAPSHOT_MAC_BYTES) != 0,
              "two writes under one key");
    expect_restored_from(&s, st, head, 120, "the second write");
    write_all(path, a, size_a);
    expect_restored_from(&s, st, head, 120, "the first write");
    /* The first file's header on the second file's body and tag. */
    memcpy(b, a, SNAPSHOT_HEADER_BYTES);
    write_all(path, b, size_b);
    expect_restored_from(&s, st, head, 40, "a header swapped in");
    free(a);
    free(b);
    store_close(st);
}

/* The tag is Poly1305 over header and body under the keyed BLAKE2b-256 of the header, as
 * snapshot.h says, recomputed here from the folder's key: not under the folder's key itself,
 * which every file would then share. */
Test(snapshot, the_tag_is_under_the_key_made_from_the_files_header)
{
    store *st;
    snapshots s;
    damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 120, path, sizeof(path));
    size_t size;
    char *file = read_all(path, &size);
    cr_assert_gt(size, SNAPSHOT_HEADER_BYTES + SNAPSHOT_MAC_BYTES);
    const unsigned char *bytes = (const unsigned char *)file;
    size_t tagged = size - SNAPSHOT_MAC_BYTES;
    unsigned char one[crypto_onetimeauth_KEYBYTES];
    crypto_generichash(one, sizeof(one), bytes, SNAPSHOT_HEADER_BYTES, s.key, SNAPSHOT_KEY_BYTES);
    cr_assert_eq(crypto_onetimeauth_verify(bytes + tagged, bytes, tagged, one), 0,
                 "the tag is not Poly1305 under the header's own key");
    cr_assert_neq(crypto_onetimeauth_verify(bytes + tagged, bytes, tagged, s.key), 0,
                  "the tag is under the folder's key");
    free(file);
    store_close(st);
}

/* The tag of `n` bytes by snapmac, fed in pieces of random sizes (up to `piece_max`). */
static void snapmac_of(const uint8_t key[SNAPMAC_KEY_BYTES], const uint8_t *bytes, size_t n,
                       size_t piece_max, bool only_sodium, uint8_t tag[SNAPMAC_BYTES])
{
    snapmac_use_sodium(only_sodium);
    snapmac m;
    snapmac_init(&m, key);
    cr_assert_eq(m.ossl == NULL, only_sodium, "%s",
                 only_sodium ? "libsodium was asked for, OpenSSL's code was used"
                             : "OpenSSL gives no Poly1305 here: nothing to compare");
    for (size_t done = 0; done < n;) {
        size_t piece = 1 + randombytes_uniform((uint32_t)piece_max);
        piece = piece < n - done ? piece : n - done;
        snapmac_update(&m, bytes + done, piece);
        done += piece;
    }
    cr_assert_eq(snapmac_final(&m, tag), 0);
    snapmac_use_sodium(false);
}

/* OpenSSL's Poly1305 and libsodium's give the same tag for any bytes, key and pieces: a snapshot
 * written by either code is read by the other. */
Test(snapshot, openssl_and_libsodium_make_the_same_tag)
{
    cr_assert_geq(sodium_init(), 0);
    size_t big = 3u << 20;
    uint8_t *bytes = malloc(big);
    cr_assert_not_null(bytes);
    randombytes_buf(bytes, big);
    size_t lengths[] = {0, 1, 15, 16, 17, 63, 64, 65, 1000, 4096, 65537, 3u << 20};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        for (int round = 0; round < 4; round++) {
            uint8_t key[SNAPMAC_KEY_BYTES], ossl[SNAPMAC_BYTES], sodium[SNAPMAC_BYTES],
                whole[SNAPMAC_BYTES];
            randombytes_buf(key, sizeof(key));
            size_t piece_max = round == 0 ? 1 : round == 1 ? 17 : round == 2 ? 4096 : big;
            snapmac_of(key, bytes, lengths[i], piece_max, false, ossl);
            snapmac_of(key, bytes, lengths[i], piece_max, true, sodium);
            crypto_onetimeauth(whole, bytes, lengths[i], key);
            cr_assert(memcmp(ossl, whole, SNAPMAC_BYTES) == 0,
                      "%zu bytes in pieces of up to %zu: OpenSSL's tag is not Poly1305's",
                      lengths[i], piece_max);
            cr_assert(memcmp(sodium, whole, SNAPMAC_BYTES) == 0,
                      "%zu bytes in pieces of up to %zu: libsodium's tag in pieces differs",
                      lengths[i], piece_max);
        }
    }
    free(bytes);
}

/* A snapshot tagged by libsodium's code (a build or machine without OpenSSL's Poly1305) restores
 * where OpenSSL's code checks it, and the reverse; a damaged one is refused by either. */
Test(snapshot, a_snapshot_tagged_by_either_code_is_read_by_the_other)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 120, path, sizeof(path));
    for (int writer = 0; writer < 2; writer++) {
        unlink(path);
        snapmac_use_sodium(writer == 1);
        const uint64_t at[] = {120};
        write_snapshots(&s, st, at, 1);
        snapmac_use_sodium(writer == 0);
        expect_restored_from(&s, st, head, 120, writer == 1 ? "tagged by libsodium" : "by OpenSSL");
        size_t size;
        char *file = read_all(path, &size);
        file[size / 2] ^= 0x01;
        write_all(path, file, size);
        expect_restored_from(&s, st, head, 40, "a flipped byte");
        free(file);
        snapmac_use_sodium(false);
    }
    store_close(st);
}

Test(snapshot, a_snapshot_under_another_key_is_never_applied)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    struct stat key_stat;
    char key[PATH_MAX + 32];
    snprintf(key, sizeof(key), "%s/key", s.dir);
    cr_assert_eq(stat(key, &key_stat), 0);
    cr_assert_eq(key_stat.st_mode & 0777, 0600, "the key is not 0600");
    cr_assert_eq(key_stat.st_size, SNAPSHOT_KEY_BYTES);
    /* A folder whose key was replaced: its snapshots are foreign. */
    cr_assert_eq(unlink(key), 0);
    snapshots other;
    char why[256];
    cr_assert_eq(snapshots_open(&other, data, 100, why, sizeof(why)), 0, "%s", why);
    cr_assert(memcmp(other.key, s.key, SNAPSHOT_KEY_BYTES) != 0);
    expect_restored_from(&other, st, head, 0, "another key");
    expect_restored_from(&other, st, 100, 0, "another key");
    store_close(st);
}

Test(snapshot, a_snapshot_not_at_the_logs_seq_and_hash_is_never_applied)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char from[PATH_MAX + 32], to[PATH_MAX + 32];
    /* Renamed to another seq: its name is not its seq. */
    snapshot_path(&s, 120, from, sizeof(from));
    snapshot_path(&s, 130, to, sizeof(to));
    cr_assert_eq(rename(from, to), 0);
    expect_restored_from(&s, st, head, 40, "renamed");
    cr_assert_eq(rename(to, from), 0);
    expect_restored_from(&s, st, head, 120, "named back");

    /* Authentic, at a seq the log has, but of another log: the hash is not the log's. */
    char other[256];
    snprintf(other, sizeof(other), "%s/other", dir);
    cr_assert_eq(mkdir(other, 0700), 0);
    snprintf(to, sizeof(to), "%s/data.mdb", other);
    FILE *in = fopen(FIXTURE, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    store *foreign = open_store(other);
    replay_result res;
    ledger *l = ledger_new();
    cr_assert_eq(replay_log(foreign, l, 150, &res), 0);
    char why[256];
    cr_assert_eq(snapshot_write(&s, l, res.hash, why, sizeof(why)), 0, "%s", why);
    ledger_free(l);
    store_close(foreign);
    expect_restored_from(&s, st, head, 120, "another log's, at 150");
    expect_restored_from(&s, st, 160, 120, "another log's, at 150");

    /* And one past the log's head is not used for an earlier as_of. */
    expect_restored_from(&s, st, 119, 40, "before 120");
    store_close(st);
}

Test(snapshot, without_snapshots_the_log_is_replayed_whole)
{
    store *st;
    snapshots s;
    uint64_t head = damage_setup(&st, &s);
    char path[PATH_MAX + 32];
    snapshot_path(&s, 40, path, sizeof(path));
    cr_assert_eq(unlink(path), 0);
    snapshot_path(&s, 120, path, sizeof(path));
    cr_assert_eq(unlink(path), 0);
    expect_restored_from(&s, st, head, 0, "none");
    store_close(st);
}

Test(snapshot, only_the_newest_are_kept)
{
    bool types[LEDGER_TYPE_END];
    uint64_t head = write_every_type(types);
    store *st = open_store(data);
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 3, why, sizeof(why)), 0, "%s", why);
    const uint64_t at[] = {10, 20, 30, 40, 50};
    write_snapshots(&s, st, at, 5);
    uint64_t seqs[10];
    cr_assert_eq(snapshot_list(&s, seqs, 10), 3);
    cr_assert(seqs[0] == 50 && seqs[1] == 40 && seqs[2] == 30);
    /* A temporary file a write left is removed when the folder is opened. */
    char tmp[PATH_MAX + 40];
    snprintf(tmp, sizeof(tmp), "%s/60.snap.tmp", s.dir);
    write_all(tmp, "x", 1);
    cr_assert_eq(snapshots_open(&s, data, 3, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(file_size(tmp), -1);
    expect_restored_from(&s, st, head, 50, "the newest");
    store_close(st);
}

/* A log of every type written, and `w` set to go on writing it: its store, its ledger
 * replayed, its head and the head's hash. The head. */
static uint64_t continue_every_type(log_writer *w)
{
    bool types[LEDGER_TYPE_END];
    uint64_t head = write_every_type(types);
    memset(w, 0, sizeof(*w));
    w->st = open_store(data);
    w->l = full_replay(w->st, head);
    w->seq = head;
    replay_result res;
    cr_assert_eq(replay_check_chain(w->st, UINT64_MAX, &res), 0, "%s", res.why);
    memcpy(w->prev, res.hash, sizeof(w->prev));
    return head;
}

/* Two more rounds on `w`, the first event of the second linked to a wrong prev; its seq. The
 * writer's ledger is freed: the log is what is read from here on. */
static uint64_t break_a_link(log_writer *w)
{
    budget_round(w, 20);
    uint64_t broken = w->seq + 1;
    w->break_next = true;
    budget_round(w, 21);
    ledger_free(w->l);
    return broken;
}

/* A read as of `point` returned `rc`: whole before the broken link, refused at it and after. */
static void expect_refused_from(int rc, uint64_t point, uint64_t broken, const replay_result *res)
{
    if (point < broken) {
        cr_assert_eq(rc, 0, "as of %llu: %s", (unsigned long long)point, res->why);
    } else {
        cr_assert_eq(rc, BUDGET_EINTERNAL, "as of %llu: not refused", (unsigned long long)point);
        cr_assert_eq(res->bad_seq, broken, "as of %llu: %s", (unsigned long long)point, res->why);
    }
}

/* What `balances as_of` does past a snapshot (ops.c, balances_ledger): the snapshot restored,
 * then the events after it applied with their links checked from its hash. A link broken
 * among those events fails every read at or past it, at that event; a read before it is
 * whole. */
Test(snapshot, a_link_broken_after_a_snapshot_fails_the_reads_past_it)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    replay_result res;
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(snapshot_write(&s, w.l, w.prev, why, sizeof(why)), 0, "%s", why);
    uint64_t broken = break_a_link(&w);

    const uint64_t points[] = {broken - 1, broken, w.seq};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        uint64_t from;
        uint8_t hash[BUDGET_HASH_BYTES];
        ledger *l = snapshot_restore(&s, w.st, points[i], &from, hash, why, sizeof(why));
        cr_assert_not_null(l, "%s", why);
        cr_assert_eq(from, head, "as of %llu: restored %llu", (unsigned long long)points[i],
                     (unsigned long long)from);
        int rc = replay_log_from(w.st, l, from, hash, points[i], false, &res);
        expect_refused_from(rc, points[i], broken, &res);
        ledger_free(l);
        /* The same read as budgetd makes it: the links after the snapshot hashed while it is
         * read, beside the replay. */
        memset(&res, 0, sizeof(res));
        l = NULL;
        rc = snapshot_state(&s, w.st, points[i], 0, &l, &from, &res);
        expect_refused_from(rc, points[i], broken, &res);
        ledger_free(l);
    }
    store_close(w.st);
}

/* A replay beside a check of the links stops where the check does: at the head when the check
 * began. Events appended after that, one of them linked to a wrong prev, are not applied
 * unhashed: the replay ends at that head, with its hash. */
Test(snapshot, a_replay_beside_a_check_applies_only_what_the_check_covers)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    replay_links links;
    cr_assert_eq(replay_links_start(&links, w.st, 0, UINT64_MAX), 0);
    uint8_t head_hash[BUDGET_HASH_BYTES];
    memcpy(head_hash, w.prev, sizeof(head_hash));
    w.break_next = true;
    budget_round(&w, 20);
    ledger_free(w.l);
    cr_assert_gt(w.seq, head);

    replay_result res;
    ledger *l = ledger_new();
    cr_assert_eq(replay_log_beside(w.st, l, 0, UINT64_MAX, 0, &links, &res), 0, "%s", res.why);
    cr_assert_eq(res.head, head, "applied to %llu, the check covered %llu",
                 (unsigned long long)res.head, (unsigned long long)head);
    cr_assert_eq(ledger_events(l), head);
    cr_assert_arr_eq(res.hash, head_hash, BUDGET_HASH_BYTES);
    ledger_free(l);
    store_close(w.st);
}

/* The seam: the first event after a snapshot does not name the snapshot's event as its prev.
 * Every read past the snapshot is refused at that event, whether its links are hashed beside
 * the restore or by the replay's walker; the read as of the snapshot's own event is whole. */
Test(snapshot, a_link_broken_right_after_a_snapshot_fails_the_reads_past_it)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(snapshot_write(&s, w.l, w.prev, why, sizeof(why)), 0, "%s", why);
    w.break_next = true;
    budget_round(&w, 20);
    ledger_free(w.l);
    const uint64_t broken = head + 1;

    const uint64_t points[] = {head, broken, broken + 1, w.seq};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        replay_result res;
        uint64_t from;
        ledger *l = NULL;
        memset(&res, 0, sizeof(res));
        int rc = snapshot_state(&s, w.st, points[i], 0, &l, &from, &res);
        expect_refused_from(rc, points[i], broken, &res);
        if (rc == 0)
            cr_assert_eq(from, head, "as of %llu: from %llu", (unsigned long long)points[i],
                         (unsigned long long)from);
        ledger_free(l);
    }
    store_close(w.st);
}

/* The events 1..upto of the store applied one at a time with ledger_apply_decided, as a
 * reference for replay_decided. */
typedef struct {
    ledger *l;
    uint64_t upto;
    int32_t day;
} decided_ref;

static int apply_decided_one(void *ctx, uint64_t seq, store_val v)
{
    decided_ref *d = ctx;
    if (seq > d->upto)
        return 1;
    ledger_event ev;
    cr_assert_eq(event_decode(v.data, v.size, &ev), 0, "event %llu", (unsigned long long)seq);
    cr_assert_eq(ledger_apply_decided(d->l, &ev, d->day), 0, "event %llu by %d",
                 (unsigned long long)seq, (int)d->day);
    return 0;
}

static answer decided_one_by_one(store *st, uint64_t upto, int32_t day)
{
    decided_ref d = {ledger_new(), upto, day};
    store_reader *rd;
    cr_assert_eq(store_reader_begin(st, &rd), 0);
    cr_assert_geq(store_reader_scan(rd, 0, apply_decided_one, &d), 0);
    store_reader_end(rd);
    cr_assert_eq(ledger_last_seq(d.l), upto);
    answer a = answers_by(d.l, upto, day);
    ledger_free(d.l);
    return a;
}

/* The view by `day` as of `upto` built by replay_decided, or, when `from` is not 0, from a copy
 * of the one as of `from` with replay_decided_from (as from_kept in ops.c builds it). */
static ledger *decided_view(store *st, uint64_t from, uint64_t upto, int32_t day,
                            replay_result *res)
{
    ledger *l = ledger_new();
    if (from == 0) {
        cr_assert_eq(replay_decided(st, l, upto, day, res), 0, "%s", res->why);
        return l;
    }
    cr_assert_eq(replay_decided(st, l, from, day, res), 0, "%s", res->why);
    ledger *copy = ledger_clone(l);
    ledger_free(l);
    uint8_t hash[BUDGET_HASH_BYTES];
    memcpy(hash, res->hash, sizeof(hash));
    cr_assert_eq(replay_decided_from(st, copy, from, hash, upto, day, res), 0, "%s", res->why);
    return copy;
}

/* What `balances decided_by` does (ops.c, balances_ledger): replay_decided walks and checks the
 * chain on one thread and applies on the caller's, or replay_decided_from goes on from a copy
 * of a view kept from an earlier read. Its state is that of the events applied one by one, at
 * every point and for days before, among and after the log's decisions; and a link broken
 * anywhere up to the point fails the view at that link, as an `as_of` read fails. */
Test(snapshot, a_decided_view_is_the_events_applied_one_by_one_with_every_link_checked)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    const int32_t days[] = {20210101, 20210825, 20210928, 20211231, 20991231};
    replay_result res;
    /* The days give views that differ: the first day's leaves out what the last day's holds. */
    answer first = decided_one_by_one(w.st, head, days[0]);
    answer last = decided_one_by_one(w.st, head, days[sizeof(days) / sizeof(days[0]) - 1]);
    cr_assert(first.size != last.size || memcmp(first.bytes, last.bytes, first.size) != 0,
              "every day gives the same view");
    free(first.bytes);
    free(last.bytes);
    for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++)
        for (uint64_t upto = 1; upto <= head; upto += upto < head - 7 ? 7 : 1) {
            answer want = decided_one_by_one(w.st, upto, days[i]);
            for (uint64_t from = 0; from < upto; from += from == 0 ? upto / 3 + 1 : upto) {
                ledger *l = decided_view(w.st, from, upto, days[i], &res);
                cr_assert_eq(res.head, upto);
                answer got = answers_by(l, upto, days[i]);
                cr_assert(got.size == want.size && memcmp(got.bytes, want.bytes, got.size) == 0,
                          "decided by %d as of %llu (from %llu): not the events applied one by one",
                          (int)days[i], (unsigned long long)upto, (unsigned long long)from);
                free(got.bytes);
                ledger_free(l);
            }
            free(want.bytes);
        }

    uint64_t broken = break_a_link(&w);
    const uint64_t points[] = {broken - 1, broken, w.seq};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        ledger *l = ledger_new();
        expect_refused_from(replay_decided(w.st, l, points[i], 20991231, &res), points[i], broken,
                            &res);
        ledger_free(l);
    }
    /* Gone on with from a view before the broken link: refused at it too. */
    ledger *before = decided_view(w.st, 0, broken - 1, 20991231, &res);
    uint8_t hash[BUDGET_HASH_BYTES];
    memcpy(hash, res.hash, sizeof(hash));
    expect_refused_from(replay_decided_from(w.st, before, broken - 1, hash, w.seq, 20991231, &res),
                        w.seq, broken, &res);
    ledger_free(before);
    store_close(w.st);
}

/*
 * A view by decision day starts from the ledger's state at a point (a snapshot's) only where that
 * state is the view (ledger_decided_base): there, the state with the later events applied by
 * replay_decided_from is the events applied one by one with ledger_apply_decided; where it is
 * not, starting there gives another view for some point and day, the latest day among them, so
 * the rule is what keeps views right, for a year closed or a correction asked for as well as for
 * a decision dated later. snapshot_restore_decided and snapshot_newest find the newest snapshot
 * the rule allows for each day, and none when it allows none.
 */
Test(snapshot, a_decided_view_starts_from_a_state_only_where_that_state_is_the_view)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    const int32_t days[] = {20210101, 20210825, 20210928, 20211231, 20991231};
    enum { DAYS = sizeof(days) / sizeof(days[0]) };
    answer want[DAYS];
    uint64_t newest[DAYS] = {0}, allowed = 0, refused_differs = 0, refused_differs_last = 0;
    replay_result res;
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, SNAPSHOT_KEEP_MAX, why, sizeof(why)), 0, "%s", why);

    for (size_t i = 0; i < DAYS; i++)
        want[i] = decided_one_by_one(w.st, head, days[i]);
    for (uint64_t at = 1; at < head; at += 4) {
        ledger *base = full_replay(w.st, at);
        uint8_t hash[BUDGET_HASH_BYTES];
        cr_assert_eq(replay_stored_hash(w.st, at, hash), 0);
        cr_assert_eq(snapshot_write(&s, base, hash, why, sizeof(why)), 0, "%s", why);
        for (size_t i = 0; i < DAYS; i++) {
            ledger *l = ledger_clone(base);
            cr_assert_not_null(l);
            int rc = replay_decided_from(w.st, l, at, hash, head, days[i], &res);
            answer got = rc == 0 ? answers_by(l, head, days[i]) : (answer){NULL, 0};
            bool same = rc == 0 && got.size == want[i].size &&
                        memcmp(got.bytes, want[i].bytes, got.size) == 0;
            if (ledger_decided_base(base, days[i])) {
                cr_assert(same,
                          "decided by %d from the state at %llu: not the events applied one "
                          "by one",
                          (int)days[i], (unsigned long long)at);
                allowed++;
                newest[i] = at;
            } else if (!same) {
                refused_differs++;
                refused_differs_last += i == DAYS - 1;
            }
            free(got.bytes);
            ledger_free(l);
        }
        ledger_free(base);
    }
    cr_assert_gt(allowed, 0, "no state is a view of any day");
    cr_assert_gt(refused_differs, 0, "no state the rule refuses would give another view");
    cr_assert_gt(refused_differs_last, 0,
                 "after every decision's day, no state the rule refuses (a closed year, a "
                 "correction) would give another view");

    for (size_t i = 0; i < DAYS; i++) {
        uint64_t from = 0;
        uint8_t hash[BUDGET_HASH_BYTES];
        ledger *l =
            snapshot_restore_decided(&s, w.st, head, days[i], &from, hash, why, sizeof(why));
        cr_assert_eq(snapshot_newest(&s, head, days[i]), newest[i], "decided by %d", (int)days[i]);
        if (newest[i] == 0) {
            cr_assert_null(l, "decided by %d: restored %llu", (int)days[i],
                           (unsigned long long)from);
        } else {
            cr_assert_not_null(l, "decided by %d: %s", (int)days[i], why);
            cr_assert_eq(from, newest[i], "decided by %d", (int)days[i]);
            cr_assert(ledger_decided_base(l, days[i]));
            ledger_free(l);
        }
        free(want[i].bytes);
    }
    cr_assert_neq(newest[0], newest[DAYS - 1], "every day starts from the same snapshot");
    store_close(w.st);
}

Test(snapshot, a_chain_broken_before_a_snapshot_is_still_found)
{
    log_writer w;
    uint64_t head = continue_every_type(&w);
    replay_result res;
    w.break_next = true;
    budget_round(&w, 20);
    snapshots s;
    char why[256];
    cr_assert_eq(snapshots_open(&s, data, 100, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(snapshot_write(&s, w.l, w.prev, why, sizeof(why)), 0, "%s", why);
    uint64_t new_head = w.seq;
    ledger_free(w.l);

    /* The snapshot is authentic and at the log's seq and hash, but the chain before it is
     * broken: checking the chain (start-up, beside the restore) finds it. */
    cr_assert_eq(replay_check_chain(w.st, UINT64_MAX, &res), BUDGET_EINTERNAL);
    cr_assert_eq(res.bad_seq, head + 1);
    uint64_t from;
    uint8_t hash[BUDGET_HASH_BYTES];
    ledger *l = snapshot_restore(&s, w.st, UINT64_MAX, &from, hash, why, sizeof(why));
    cr_assert_not_null(l, "%s", why);
    cr_assert_eq(from, new_head);
    cr_assert_eq(replay_log_from(w.st, l, from, hash, UINT64_MAX, true, &res), BUDGET_EINTERNAL);
    cr_assert_eq(res.bad_seq, head + 1);
    ledger_free(l);
    store_close(w.st);
}
