/*
 * The replay benchmark.
 *
 * 1. Writes a log of N (default 1 000 000) realistic events straight into a store, without a
 *    daemon: eight fiscal years of 24 units, four frames per unit and year with adjustments,
 *    tens of thousands of allocations proposed and decided, and hundreds of thousands of
 *    avrop requested and decided, by a dozen clerks. Every event is made by ledger_check from
 *    a command, encoded with its hash link, and applied, exactly as budgetd would.
 * 2. In-process, on that log: the LMDB scan alone, scan + decode, scan + decode + apply (what
 *    start-up replay does), scan + hash check (what verify does), and the heap of one ledger.
 * 3. Starts budgetd on it and times: start-up until the socket answers (and the replay time
 *    budgetd logs), the daemon's memory after replay, `balances` as of an event near the
 *    start, the middle and the end, the current `balances`, and `verify` of the whole chain.
 *
 * 4. With --snapshots N (docs/performance.md, "Snapshots"): while writing the log, a snapshot of
 *    the ledger every N events, written by snapshot_write as budgetd writes them, and budgetd
 *    run with --snapshot-every N; --snapshots 0 runs it with --snapshot-every 0 (the log
 *    replayed from its first event, as before snapshots). Besides the figures above, 8 `balances
 *    as_of` at once: their wall time and the daemon's peak resident memory meanwhile, spread
 *    over the log and then all at one point; every page of one `as_of` read in turn; and
 *    `as_of` stepping forward 1000 events at a time.
 *
 * usage: bench_replay --dir DIR [--events N] [--budgetd PATH] [--keep] [--reuse] [--no-daemon]
 *                     [--snapshots N]
 * --keep leaves the log in DIR/replay-data; --reuse takes the log left there instead of
 * writing one (for profiling, or to run with and without snapshots on the same log);
 * --no-daemon stops after the in-process figures.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "bench_wire.h"
#include "budget/errors.h"
#include "budget/limits.h"
#include "daemon/event.h"
#include "daemon/ledger.h"
#include "daemon/replay.h"
#include "daemon/snapshot.h"
#include "daemon/store.h"

#define UNITS 24
#define YEARS 8
#define YEAR_FIRST 2019
#define FRAMES_PER_UNIT 4
#define ACTORS 12
/* Events per store transaction while writing the log. */
#define WRITE_BATCH 8192
/* Pending allocations and avrop wait in a queue this long before they are decided. */
#define ALLOCATION_QUEUE_LAG 40
#define AVROP_QUEUE_LAG 400
#define START_TIMEOUT_MS 120000
#define CALL_TIMEOUT_MS 120000
#define STOP_TIMEOUT_MS 10000

static const char *const unit_codes[UNITS] = {
    "KS", "SON", "KFN", "UBN", "SBN", "MHN", "BUN", "TN",  "VON", "AMN", "KOS",  "RN",
    "ON", "VAN", "FN",  "KN",  "LN",  "MN",  "BYN", "GYN", "KUN", "IFN", "STAB", "REV",
};
/* The register of units: KS, the board, and the committees and offices under it; the
 * auditors (REV) answer to the council, not to KS. */
static const char *const unit_names[UNITS] = {
    "Kommunstyrelsen",
    "Social- och omsorgsnämnden",
    "Kultur- och fritidsnämnden",
    "Utbildningsnämnden",
    "Samhällsbyggnadsnämnden",
    "Miljö- och hälsoskyddsnämnden",
    "Barn- och ungdomsnämnden",
    "Tekniska nämnden",
    "Vård- och omsorgsnämnden",
    "Arbetsmarknadsnämnden",
    "Kommunledningsförvaltningen",
    "Räddningsnämnden",
    "Omsorgsnämnden",
    "Valnämnden",
    "Fritidsnämnden",
    "Kulturnämnden",
    "Lokalnämnden",
    "Måltidsnämnden",
    "Byggnadsnämnden",
    "Gymnasienämnden",
    "Kommunala utvecklingsnämnden",
    "Integrationsnämnden",
    "Stadsledningskontorets stab",
    "Revisionen",
};
static const char *const unit_kinds[UNITS] = {
    "styrelse", "nämnd", "nämnd",       "nämnd", "nämnd", "nämnd", "nämnd",       "nämnd",
    "nämnd",    "nämnd", "förvaltning", "nämnd", "nämnd", "nämnd", "nämnd",       "nämnd",
    "nämnd",    "nämnd", "nämnd",       "nämnd", "nämnd", "nämnd", "förvaltning", "nämnd",
};
static const char *const actor_names[ACTORS] = {
    "anna.l", "lars.p", "maria.s", "erik.j", "karin.n", "johan.b",
    "eva.k",  "per.o",  "sara.h",  "nils.a", "ida.m",   "olof.g",
};
static const char *const purposes[] = {
    "Områdesarbete i Skäggetorp",
    "Fältassistenter kvällstid",
    "Trygghetsvandringar med föreningar",
    "Fritidsgårdar med förlängda öppettider",
    "Belysning av gång- och cykelvägar",
    "Sommarlovsaktiviteter för unga",
    "Samverkan med polisen i Berga",
    "Stöd till föräldravandrare",
    "Förebyggande insatser mot våld i nära relationer",
    "Digitala trygghetskameror vid resecentrum",
    "Utbildning av personal i konflikthantering",
    "Extra städning och klotterborttagning",
};
static const char *const notes[] = {
    "",
    "Kvartal 1",
    "Kvartal 2",
    "Kvartal 3",
    "Kvartal 4",
    "Enligt plan",
    "Avser personalkostnader",
    "Avser material och lokaler",
};

/* ---- a small deterministic generator --------------------------------------------------- */

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng() % n);
}

/* ---- writing the log ------------------------------------------------------------------- */

typedef struct {
    uint32_t index; /* the allocation's or avrop's number, which makes its id */
    int year;
    uint32_t proposer; /* actor */
} pending;

/* A FIFO of pending requests, decided in order with a lag. */
typedef struct {
    pending *items;
    size_t head, count, cap;
} queue;

typedef struct {
    store *st;
    ledger *l;
    uint64_t seq;
    uint8_t prev[BUDGET_HASH_BYTES];
    uint64_t ts_ms;
    uint64_t ts_step_ms;
    uint8_t *bytes;
    size_t bytes_len;
    store_item items[WRITE_BATCH];
    char ids[WRITE_BATCH][BUDGET_ID_BYTES_MAX + 1];
    size_t items_count;

    uint32_t allocations, avrop, decisions, adjustments, withdrawals;
    uint32_t *approved; /* allocation numbers approved, with their year below */
    int *approved_year;
    size_t approved_count, approved_cap;
    size_t approved_year_start; /* first approved entry of the current year */
    queue allocation_queue, avrop_queue;
    snapshots snaps;
    uint64_t snapshot_every; /* 0: none */
    double snapshot_s;       /* spent writing them */
} writer;

static int queue_push(queue *q, pending p)
{
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 1024;
        pending *items = malloc(cap * sizeof(*items));
        if (!items)
            return -1;
        for (size_t i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->count) % q->cap] = p;
    q->count++;
    return 0;
}

static pending queue_pop(queue *q)
{
    pending p = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return p;
}

static int flush_batch(writer *w)
{
    bool sync_failed = false;
    if (w->items_count == 0)
        return 0;
    int rc = store_append(w->st, w->items, w->items_count, &sync_failed);
    if (rc != 0) {
        fprintf(stderr, "bench_replay: store_append: %s\n", budget_strerror(rc));
        return -1;
    }
    w->items_count = 0;
    w->bytes_len = 0;
    return 0;
}

/* Checks, encodes, applies and queues one command as the next event; exits on a refusal,
 * which would be a bug in this generator. */
static int emit(writer *w, const ledger_cmd *cmd, uint32_t actor_index)
{
    ledger_actor actor = {1001 + actor_index, ""};
    ledger_event ev;
    ledger_error err;
    uint64_t existing;

    snprintf(actor.name, sizeof(actor.name), "%s", actor_names[actor_index]);
    int rc = ledger_check(w->l, cmd, &actor, &ev, &existing, &err);
    if (rc != 0) {
        fprintf(stderr, "bench_replay: the generator made a refused %s (%s): %s\n",
                ledger_type_name(cmd->type), cmd->id, rc == 1 ? "the id exists" : err.message);
        exit(1);
    }
    ev.seq = ++w->seq;
    w->ts_ms += w->ts_step_ms;
    ev.ts_ms = w->ts_ms;
    uint8_t *out = w->bytes + w->bytes_len;
    uint8_t hash[BUDGET_HASH_BYTES];
    int size = event_encode(&ev, w->prev, out, EVENT_BYTES_MAX, hash);
    if (size < 0 || ledger_apply(w->l, &ev) != 0) {
        fprintf(stderr, "bench_replay: event %llu does not encode or apply\n",
                (unsigned long long)ev.seq);
        exit(1);
    }
    memcpy(w->prev, hash, sizeof(hash));
    if (w->snapshot_every != 0 && ev.seq % w->snapshot_every == 0) {
        char why[256];
        double t0 = bench_now_s();
        if (snapshot_write(&w->snaps, w->l, hash, why, sizeof(why)) != 0) {
            fprintf(stderr, "bench_replay: %s\n", why);
            exit(1);
        }
        w->snapshot_s += bench_now_s() - t0;
    }
    store_item *item = &w->items[w->items_count];
    memcpy(w->ids[w->items_count], ev.id, strlen(ev.id) + 1);
    item->seq = ev.seq;
    item->bytes = out;
    item->size = (size_t)size;
    item->id = w->ids[w->items_count];
    item->id_len = strlen(ev.id);
    w->bytes_len += (size_t)size;
    w->items_count++;
    return w->items_count == WRITE_BATCH ? flush_batch(w) : 0;
}

static void frame_name(char *out, size_t size, int year, uint32_t unit, uint32_t k)
{
    snprintf(out, size, "ram-%d-%s-%u", year, unit_codes[unit], k);
}

static void allocation_name(char *out, size_t size, int year, uint32_t n)
{
    snprintf(out, size, "ford-%d-%06u", year, n);
}

/* The decision of a command: body, date YYYYMMDD, paragraph. */
static void set_decision(ledger_cmd *c, const char *body, int32_t date, uint32_t paragraph)
{
    snprintf(c->decision_body, sizeof(c->decision_body), "%s", body);
    c->decision_date = date;
    snprintf(c->decision_paragraph, sizeof(c->decision_paragraph), "%u", paragraph);
}

/* Registers every unit of unit_codes, KS first and the rest under it (REV under none): the
 * ledger refuses a write that names a unit that is not registered and open. */
static int register_units(writer *w)
{
    for (uint32_t u = 0; u < UNITS; u++) {
        ledger_cmd c = {0};
        c.type = LEDGER_UNIT_REGISTERED;
        snprintf(c.id, sizeof(c.id), "enhet-%s", unit_codes[u]);
        snprintf(c.unit, sizeof(c.unit), "%s", unit_codes[u]);
        snprintf(c.title, sizeof(c.title), "%s", unit_names[u]);
        snprintf(c.unit_kind, sizeof(c.unit_kind), "%s", unit_kinds[u]);
        if (u > 0 && strcmp(unit_codes[u], "REV") != 0)
            snprintf(c.parent, sizeof(c.parent), "%s", unit_codes[0]);
        snprintf(c.reference, sizeof(c.reference), "KF %d § %u", YEAR_FIRST - 1, 10 + u);
        if (emit(w, &c, rng_below(ACTORS)) != 0)
            return -1;
    }
    return 0;
}

static int grant_frames(writer *w, int year)
{
    for (uint32_t u = 0; u < UNITS; u++) {
        for (uint32_t k = 0; k < FRAMES_PER_UNIT; k++) {
            ledger_cmd c = {0};
            c.type = LEDGER_FRAME_GRANTED;
            frame_name(c.id, sizeof(c.id), year, u, k);
            snprintf(c.unit, sizeof(c.unit), "%s", unit_codes[u]);
            c.year = year;
            c.amount = (int64_t)(2 + rng_below(199)) * 1000000000LL; /* 20..2000 mkr */
            snprintf(c.title, sizeof(c.title), "Budgetram %d för %s, del %u", year, unit_codes[u],
                     k + 1);
            set_decision(&c, "KF", (year - 1) * 10000 + 1100 + 10 + (int32_t)rng_below(18),
                         100 + rng_below(300));
            snprintf(c.reference, sizeof(c.reference), "KF %d § %s", year - 1,
                     c.decision_paragraph);
            if (emit(w, &c, rng_below(ACTORS)) != 0)
                return -1;
        }
    }
    return 0;
}

static int adjust_frame(writer *w, int year)
{
    ledger_cmd c = {0};
    c.type = LEDGER_FRAME_ADJUSTED;
    snprintf(c.id, sizeof(c.id), "tillagg-%d-%06u", year, w->adjustments++);
    frame_name(c.frame, sizeof(c.frame), year, rng_below(UNITS), rng_below(FRAMES_PER_UNIT));
    c.amount = (int64_t)(1 + rng_below(10)) * 100000000LL; /* 1..10 mkr */
    snprintf(c.title, sizeof(c.title), "Tilläggsanslag för %s", purposes[rng_below(12)]);
    set_decision(&c, "KF",
                 year * 10000 + (1 + (int32_t)rng_below(12)) * 100 + 1 + (int32_t)rng_below(28),
                 1 + rng_below(400));
    return emit(w, &c, rng_below(ACTORS));
}

static int propose(writer *w, int year)
{
    ledger_frame_view f;
    ledger_cmd c = {0};
    c.type = LEDGER_ALLOCATION_PROPOSED;
    frame_name(c.frame, sizeof(c.frame), year, rng_below(UNITS), rng_below(FRAMES_PER_UNIT));
    if (!ledger_frame(w->l, c.frame, &f) || f.unallocated < 1000000)
        return 0; /* this frame is used up: another step */
    uint32_t n = w->allocations++;
    allocation_name(c.id, sizeof(c.id), year, n);
    snprintf(c.unit, sizeof(c.unit), "%s", unit_codes[rng_below(UNITS)]);
    c.amount = f.unallocated / (20 + rng_below(60));
    snprintf(c.title, sizeof(c.title), "%s", purposes[rng_below(12)]);
    uint32_t actor = rng_below(ACTORS);
    if (queue_push(&w->allocation_queue, (pending){n, year, actor}) != 0)
        return -1;
    return emit(w, &c, actor);
}

static int approved_add(writer *w, uint32_t n, int year)
{
    if (w->approved_count == w->approved_cap) {
        size_t cap = w->approved_cap ? w->approved_cap * 2 : 4096;
        uint32_t *a = realloc(w->approved, cap * sizeof(*a));
        if (!a)
            return -1;
        w->approved = a;
        int *y = realloc(w->approved_year, cap * sizeof(*y));
        if (!y)
            return -1;
        w->approved_year = y;
        w->approved_cap = cap;
    }
    w->approved[w->approved_count] = n;
    w->approved_year[w->approved_count] = year;
    w->approved_count++;
    return 0;
}

/* Decides the oldest pending request of `q`: mostly approved, some rejected or withdrawn. */
static int decide(writer *w, queue *q, bool is_avrop)
{
    pending p = queue_pop(q);
    ledger_cmd c = {0};
    uint32_t roll = rng_below(100);
    uint32_t actor = (p.proposer + 1 + rng_below(ACTORS - 1)) % ACTORS; /* never the proposer */
    if (is_avrop)
        snprintf(c.target, sizeof(c.target), "avrop-%d-%07u", p.year, p.index);
    else
        allocation_name(c.target, sizeof(c.target), p.year, p.index);
    if (roll < 3) {
        c.type = LEDGER_REQUEST_WITHDRAWN;
        snprintf(c.id, sizeof(c.id), "aterkallad-%07u", w->withdrawals++);
        snprintf(c.note, sizeof(c.note), "Återkallad av den som begärde");
        actor = p.proposer;
    } else {
        c.type = roll < (is_avrop ? 8u : 10u) ? LEDGER_DECISION_REJECTED : LEDGER_DECISION_APPROVED;
        snprintf(c.id, sizeof(c.id), "beslut-%08u", w->decisions++);
        set_decision(&c, "KS",
                     p.year * 10000 + (1 + (int32_t)rng_below(12)) * 100 + 1 +
                         (int32_t)rng_below(28),
                     1 + rng_below(400));
        snprintf(c.note, sizeof(c.note), "%s", notes[rng_below(8)]);
    }
    if (emit(w, &c, actor) != 0)
        return -1;
    if (!is_avrop && c.type == LEDGER_DECISION_APPROVED)
        return approved_add(w, p.index, p.year);
    return 0;
}

static int request_avrop(writer *w, int year)
{
    ledger_cmd c = {0};
    ledger_allocation_view a;
    size_t span = w->approved_count - w->approved_year_start;
    if (span == 0)
        return 0;
    size_t k = w->approved_year_start + rng_below((uint32_t)span);
    allocation_name(c.allocation, sizeof(c.allocation), w->approved_year[k], w->approved[k]);
    if (!ledger_allocation(w->l, c.allocation, &a) || a.available < 1000)
        return 0;
    c.type = LEDGER_AVROP_REQUESTED;
    uint32_t n = w->avrop++;
    snprintf(c.id, sizeof(c.id), "avrop-%d-%07u", year, n);
    c.amount = a.available / (8 + rng_below(40));
    snprintf(c.note, sizeof(c.note), "%s", notes[rng_below(8)]);
    uint32_t actor = rng_below(ACTORS);
    if (queue_push(&w->avrop_queue, (pending){n, year, actor}) != 0)
        return -1;
    return emit(w, &c, actor);
}

/* One step of a year: a weighted choice among what can happen now. */
static int step(writer *w, int year)
{
    uint32_t roll = rng_below(10000);
    if (roll < 8)
        return adjust_frame(w, year);
    if (roll < 8 + 500)
        return propose(w, year);
    if (roll < 8 + 1000)
        return w->allocation_queue.count > ALLOCATION_QUEUE_LAG
                   ? decide(w, &w->allocation_queue, false)
                   : propose(w, year);
    if (roll < 5500)
        return request_avrop(w, year);
    return w->avrop_queue.count > AVROP_QUEUE_LAG ? decide(w, &w->avrop_queue, true)
                                                  : request_avrop(w, year);
}

/* Writes the log of `events` events into `data_dir`; `made` gets the counts of what it holds. */
static int write_log(const char *data_dir, uint64_t events, uint64_t snapshot_every,
                     ledger_counts *made)
{
    store_options opt = {.map_bytes_initial = (size_t)2 << 30};
    char why[256];
    writer *w = calloc(1, sizeof(*w));
    if (!w)
        return -1;
    if (store_open(&w->st, data_dir, &opt, why, sizeof(why)) != 0) {
        fprintf(stderr, "bench_replay: %s\n", why);
        free(w);
        return -1;
    }
    w->snapshot_every = snapshot_every;
    if (snapshot_every != 0 &&
        snapshots_open(&w->snaps, data_dir, SNAPSHOT_KEEP_DEFAULT, why, sizeof(why)) != 0) {
        fprintf(stderr, "bench_replay: %s\n", why);
        return -1;
    }
    w->l = ledger_new();
    w->bytes = malloc((size_t)WRITE_BATCH * EVENT_BYTES_MAX);
    if (!w->l || !w->bytes)
        return -1;
    w->ts_ms = 1546300800000ull; /* 2019-01-01 */
    w->ts_step_ms = (uint64_t)YEARS * 365 * 86400 * 1000 / events;

    double t0 = bench_now_s();
    uint64_t per_year = events / YEARS;
    int rc = register_units(w);
    for (int y = 0; y < YEARS && rc == 0; y++) {
        int year = YEAR_FIRST + y;
        uint64_t until = y == YEARS - 1 ? events : per_year * (uint64_t)(y + 1);
        w->approved_year_start = w->approved_count;
        rc = grant_frames(w, year);
        while (rc == 0 && w->seq < until)
            rc = step(w, year);
    }
    if (rc == 0)
        rc = flush_batch(w);
    if (rc == 0 && w->seq != events) {
        fprintf(stderr, "bench_replay: wrote %llu events, not %llu\n", (unsigned long long)w->seq,
                (unsigned long long)events);
        rc = -1;
    }
    double elapsed = bench_now_s() - t0;

    ledger_counts counts;
    ledger_get_counts(w->l, &counts);
    *made = counts;
    printf("wrote %llu events in %.2f s: %llu units registered, %llu frames, %llu adjustments, "
           "%llu allocations, %llu avrop, %llu decisions, %llu withdrawals\n",
           (unsigned long long)w->seq, elapsed, (unsigned long long)counts.registrations,
           (unsigned long long)counts.frames, (unsigned long long)counts.adjustments,
           (unsigned long long)counts.allocations, (unsigned long long)counts.avrop,
           (unsigned long long)counts.decisions, (unsigned long long)counts.withdrawals);
    bench_result("replay_log_events", "%llu", (unsigned long long)w->seq);
    bench_result("replay_log_allocations", "%llu", (unsigned long long)counts.allocations);
    bench_result("replay_log_write_s", "%.2f", elapsed);
    if (snapshot_every != 0) {
        printf("wrote a snapshot every %llu events: %.2f s of it\n",
               (unsigned long long)snapshot_every, w->snapshot_s);
        bench_result("replay_log_snapshots_s", "%.2f", w->snapshot_s);
    }

    ledger_free(w->l);
    store_close(w->st);
    free(w->bytes);
    free(w->approved);
    free(w->approved_year);
    free(w->allocation_queue.items);
    free(w->avrop_queue.items);
    free(w);
    return rc;
}

/* ---- in-process figures ---------------------------------------------------------------- */

typedef struct {
    ledger *l;
    uint64_t bytes;
    uint8_t prev[BUDGET_HASH_BYTES];
    int failed;
} scan_ctx;

static int scan_only(void *ctx, uint64_t seq, store_val v)
{
    scan_ctx *c = ctx;
    (void)seq;
    c->bytes += v.size + v.data[v.size - 1];
    return 0;
}

static int scan_decode(void *ctx, uint64_t seq, store_val v)
{
    scan_ctx *c = ctx;
    ledger_event ev;
    if (event_decode(v.data, v.size, &ev) != 0 || ev.seq != seq)
        c->failed = 1;
    return c->failed;
}

/* What budgetd's start-up replay does for each event: the link, the decode, the apply. */
static int scan_replay(void *ctx, uint64_t seq, store_val v)
{
    scan_ctx *c = ctx;
    ledger_event ev;
    const uint8_t *prev, *hash;
    if (event_link(v.data, v.size, &prev, &hash) != 0 || memcmp(prev, c->prev, 32) != 0 ||
        event_decode(v.data, v.size, &ev) != 0 || ev.seq != seq || ledger_apply(c->l, &ev) != 0)
        c->failed = 1;
    else
        memcpy(c->prev, hash, BUDGET_HASH_BYTES);
    return c->failed;
}

static int scan_verify(void *ctx, uint64_t seq, store_val v)
{
    scan_ctx *c = ctx;
    const uint8_t *prev, *hash;
    (void)seq;
    if (event_check_link(v.data, v.size, c->prev, NULL) != 0 ||
        event_link(v.data, v.size, &prev, &hash) != 0)
        c->failed = 1;
    else
        memcpy(c->prev, hash, BUDGET_HASH_BYTES);
    return c->failed;
}

/* What one in-process replay made: its events applied and the ledger's counts. */
typedef struct {
    uint64_t events;
    ledger_counts counts;
    double clone_s; /* ledger_clone of the whole ledger: what a snapshot costs the loop */
} replayed_ledger;

/* Times one scan of the whole log with `fn`; the best of `runs`. Returns seconds or -1. With
 * scan_replay, `replayed` gets what the last run's ledger holds. */
static double time_scan(store *st, store_scan_fn fn, int runs, size_t *heap_bytes,
                        replayed_ledger *replayed)
{
    double best = -1;
    for (int i = 0; i < runs; i++) {
        store_reader *r;
        scan_ctx c = {0};
        if (fn == scan_replay && !(c.l = ledger_new()))
            return -1;
        size_t heap0 = mallinfo2().uordblks;
        if (store_reader_begin(st, &r) != 0)
            return -1;
        double t0 = bench_now_s();
        int rc = store_reader_scan(r, 0, fn, &c);
        double t = bench_now_s() - t0;
        store_reader_end(r);
        if (heap_bytes)
            *heap_bytes = mallinfo2().uordblks - heap0;
        if (replayed && c.l) {
            replayed->events = ledger_events(c.l);
            ledger_get_counts(c.l, &replayed->counts);
            double c0 = bench_now_s();
            ledger *copy = ledger_clone(c.l);
            double clone_s = bench_now_s() - c0;
            ledger_free(copy);
            if (replayed->clone_s == 0 || clone_s < replayed->clone_s)
                replayed->clone_s = clone_s;
        }
        ledger_free(c.l);
        if (rc != 0 || c.failed) {
            fprintf(stderr, "bench_replay: the in-process scan failed\n");
            return -1;
        }
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

/* The replayed ledger holds every event written and, when `made` is given (a log this run
 * wrote), the same entities as the ledger that wrote it; else says what differs. */
static int check_replayed(const replayed_ledger *r, uint64_t events, const ledger_counts *made)
{
    if (r->events != events) {
        fprintf(stderr, "bench_replay: the in-process replay applied %llu events, not %llu\n",
                (unsigned long long)r->events, (unsigned long long)events);
        return -1;
    }
    if (made && memcmp(&r->counts, made, sizeof(*made)) != 0) {
        fprintf(stderr,
                "bench_replay: the replayed ledger holds %llu units, %llu frames, %llu "
                "allocations, %llu avrop, %llu decisions; the log was written with %llu, %llu, "
                "%llu, %llu, %llu\n",
                (unsigned long long)r->counts.registrations, (unsigned long long)r->counts.frames,
                (unsigned long long)r->counts.allocations, (unsigned long long)r->counts.avrop,
                (unsigned long long)r->counts.decisions, (unsigned long long)made->registrations,
                (unsigned long long)made->frames, (unsigned long long)made->allocations,
                (unsigned long long)made->avrop, (unsigned long long)made->decisions);
        return -1;
    }
    return 0;
}

/* Times the start-up's check of the whole chain on `threads` threads (1 or 2): seconds or -1. */
static double time_chain(store *st, int threads, uint64_t events)
{
    replay_result res;
    pthread_t helper;
    double t0 = bench_now_s();
    chain_job *j = chain_job_new(st, UINT64_MAX, 0);
    if (j == NULL)
        return -1;
    bool helped = threads > 1 && pthread_create(&helper, NULL, chain_job_thread, j) == 0;
    chain_job_help(j);
    if (helped)
        pthread_join(helper, NULL);
    int rc = chain_job_finish(j, &res);
    double t = bench_now_s() - t0;
    return rc == 0 && res.head == events ? t : -1;
}

/* Times the restore of the newest snapshot of `data_dir`, as a read as of an earlier event does
 * it (the file read, its keyed hash checked, the state rebuilt): the best of three in seconds,
 * its seq in *at; -1 when there is none. */
static double time_restore(store *st, const char *data_dir, uint64_t *at)
{
    snapshots snaps;
    char why[256];
    uint8_t hash[BUDGET_HASH_BYTES];
    double best = -1;
    if (snapshots_open(&snaps, data_dir, SNAPSHOT_KEEP_DEFAULT, why, sizeof(why)) != 0)
        return -1;
    for (int round = 0; round < 3; round++) {
        double t0 = bench_now_s();
        ledger *l = snapshot_restore(&snaps, st, UINT64_MAX, at, hash, why, sizeof(why));
        double t = bench_now_s() - t0;
        if (l == NULL)
            return -1;
        ledger_free(l);
        best = best < 0 || t < best ? t : best;
    }
    return best;
}

/* Times what a read as of the event before the head does after its snapshot's restore: the
 * events after the newest snapshot below it applied (replay_log_from, its walker and applier):
 * the best of three in seconds, the events applied in *applied; -1 when there is no snapshot. */
static double time_tail(store *st, const char *data_dir, uint64_t events, uint64_t *applied)
{
    snapshots snaps;
    char why[256];
    uint8_t hash[BUDGET_HASH_BYTES];
    double best = -1;
    uint64_t at;
    if (events < 2 ||
        snapshots_open(&snaps, data_dir, SNAPSHOT_KEEP_DEFAULT, why, sizeof(why)) != 0)
        return -1;
    for (int round = 0; round < 3; round++) {
        ledger *l = snapshot_restore(&snaps, st, events - 1, &at, hash, why, sizeof(why));
        if (l == NULL)
            return -1;
        replay_result res;
        double t0 = bench_now_s();
        int rc = replay_log_from(st, l, at, hash, events - 1, false, &res);
        double t = bench_now_s() - t0;
        ledger_free(l);
        if (rc != 0 || res.head != events - 1)
            return -1;
        best = best < 0 || t < best ? t : best;
    }
    *applied = events - 1 - at;
    return best;
}

static int in_process(const char *data_dir, uint64_t events, const ledger_counts *made)
{
    store *st;
    char why[256];
    size_t heap = 0;
    uint64_t restored_at = 0;
    replayed_ledger replayed = {0};
    if (store_open(&st, data_dir, NULL, why, sizeof(why)) != 0) {
        fprintf(stderr, "bench_replay: %s\n", why);
        return -1;
    }
    double scan = time_scan(st, scan_only, 3, NULL, NULL);
    double decode = time_scan(st, scan_decode, 3, NULL, NULL);
    double replay = time_scan(st, scan_replay, 3, &heap, &replayed);
    double verify = time_scan(st, scan_verify, 1, NULL, NULL);
    /* The chain check start-up runs beside a snapshot's restore, on one thread and on two,
     * alternated; the best of three each. */
    double chain1 = -1, chain2 = -1;
    for (int round = 0; round < 3; round++) {
        double t1 = time_chain(st, 1, events), t2 = time_chain(st, 2, events);
        if (t1 < 0 || t2 < 0) {
            fprintf(stderr, "bench_replay: the chain check failed\n");
            store_close(st);
            return -1;
        }
        chain1 = chain1 < 0 || t1 < chain1 ? t1 : chain1;
        chain2 = chain2 < 0 || t2 < chain2 ? t2 : chain2;
    }
    double restore = time_restore(st, data_dir, &restored_at);
    uint64_t tail_events = 0;
    double tail = time_tail(st, data_dir, events, &tail_events);
    store_close(st);
    if (scan < 0 || decode < 0 || replay < 0 || verify < 0 ||
        check_replayed(&replayed, events, made) != 0)
        return -1;
    double n = (double)events;
    printf("in-process: scan %.3f s (%.1f M events/s), + decode %.3f s (%.1f M/s), + apply "
           "%.3f s (%.1f M/s), hash check %.3f s (%.1f M/s); one ledger %.1f MiB of heap\n",
           scan, n / scan / 1e6, decode, n / decode / 1e6, replay, n / replay / 1e6, verify,
           n / verify / 1e6, (double)heap / (1 << 20));
    bench_result("inproc_scan_events_per_s", "%.0f", n / scan);
    bench_result("inproc_decode_events_per_s", "%.0f", n / decode);
    bench_result("inproc_replay_events_per_s", "%.0f", n / replay);
    bench_result("inproc_verify_events_per_s", "%.0f", n / verify);
    bench_result("inproc_ledger_heap_mib", "%.1f", (double)heap / (1 << 20));
    printf("in-process: ledger_clone of the whole ledger %.1f ms (a snapshot's cost to the loop)\n",
           replayed.clone_s * 1e3);
    bench_result("inproc_ledger_clone_ms", "%.1f", replayed.clone_s * 1e3);
    printf("in-process: the chain checked in pieces, one thread %.3f s, two threads %.3f s "
           "(%.2f of one)\n",
           chain1, chain2, chain2 / chain1);
    bench_result("inproc_chain_1thread_s", "%.3f", chain1);
    bench_result("inproc_chain_2threads_s", "%.3f", chain2);
    if (restore >= 0) {
        printf("in-process: the newest snapshot (at %llu) restored in %.1f ms\n",
               (unsigned long long)restored_at, restore * 1e3);
        bench_result("inproc_snapshot_restore_ms", "%.1f", restore * 1e3);
    }
    if (tail > 0 && tail_events > 0) {
        printf("in-process: then %llu events applied after a snapshot in %.1f ms (%.2f us each)\n",
               (unsigned long long)tail_events, tail * 1e3, tail * 1e6 / (double)tail_events);
        bench_result("inproc_tail_events_per_s", "%.0f", (double)tail_events / tail);
    }
    return 0;
}

/* ---- the daemon ------------------------------------------------------------------------ */

typedef struct {
    pid_t pid;
    char socket[4200];
    char log[4200];
} daemon_proc;

static int daemon_start(daemon_proc *d, const char *budgetd, const char *dir, const char *data,
                        uint64_t snapshot_every)
{
    char every[32];
    snprintf(every, sizeof(every), "%llu", (unsigned long long)snapshot_every);
    snprintf(d->socket, sizeof(d->socket), "%s/budgetd.sock", dir);
    snprintf(d->log, sizeof(d->log), "%s/budgetd.log", dir);
    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        FILE *log = freopen(d->log, "w", stderr);
        if (!log)
            _exit(127);
        execl(budgetd, budgetd, "--data", data, "--socket", d->socket, "--snapshot-every", every,
              (char *)NULL);
        fprintf(stderr, "bench_replay: cannot run %s: %s\n", budgetd, strerror(errno));
        fflush(stderr); /* stderr is a file now, fully buffered, and _exit flushes nothing */
        _exit(127);
    }
    return 0;
}

/* Waits until `hello` is answered; returns seconds since `t0`, or -1. */
static double daemon_wait_ready(daemon_proc *d, double t0)
{
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    mp_writer w;
    bench_request_begin(&w, frame, sizeof(frame), 1, "hello", 0);
    size_t size = bench_request_end(&w);
    while (bench_now_s() - t0 < START_TIMEOUT_MS / 1000.0) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "bench_replay: budgetd exited during start-up; see %s\n", d->log);
            d->pid = 0;
            return -1;
        }
        bench_conn c;
        if (bench_conn_open(&c, d->socket, CALL_TIMEOUT_MS) == 0) {
            bench_response r;
            int rc = bench_conn_call(&c, frame, size, &r);
            double ready = bench_now_s() - t0;
            bench_conn_close(&c);
            if (rc == 0 && r.ok)
                return ready;
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "bench_replay: budgetd did not answer within %d ms\n", START_TIMEOUT_MS);
    return -1;
}

/* The "replayed N events in X s" line of the daemon's log: X, or -1 when there is none or N
 * is not `events`. */
static double logged_replay_s(const daemon_proc *d, uint64_t events)
{
    char line[512];
    double s = -1;
    unsigned long long replayed = 0;
    FILE *f = fopen(d->log, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        const char *at = strstr(line, "replayed ");
        unsigned long long n;
        double x;
        if (at && sscanf(at, "replayed %llu events in %lf s", &n, &x) == 2) {
            const char *from = strstr(at, "from snapshot ");
            if (from)
                printf("budgetd started from snapshot %s", from + strlen("from snapshot "));
            s = x;
            replayed = n;
        }
    }
    fclose(f);
    if (s < 0 || replayed != events) {
        fprintf(stderr, "bench_replay: budgetd logged %s%llu events replayed, not %llu; see %s\n",
                s < 0 ? "no replay line, " : "", replayed, (unsigned long long)events, d->log);
        return -1;
    }
    return s;
}

static void daemon_stop(daemon_proc *d)
{
    int status;
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    for (int i = 0; i < STOP_TIMEOUT_MS; i += 10) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return;
        }
        struct timespec pause = {0, 10000000};
        nanosleep(&pause, NULL);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
}

/* One call on its own connection, timed from sending to having the whole answer. */
static double timed_call(const daemon_proc *d, const uint8_t *frame, size_t size, bench_response *r,
                         bench_conn *c)
{
    if (bench_conn_open(c, d->socket, CALL_TIMEOUT_MS) != 0)
        return -1;
    double t0 = bench_now_s();
    if (bench_conn_call(c, frame, size, r) != 0)
        return -1;
    return bench_now_s() - t0;
}

static int balances_as_of(const daemon_proc *d, uint64_t as_of, uint64_t events, const char *key)
{
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    mp_writer w;
    bench_response r;
    bench_conn c;
    bench_request_begin(&w, frame, sizeof(frame), 2, "balances", as_of ? 1 : 0);
    if (as_of) {
        mp_write_cstr(&w, "as_of");
        mp_write_uint(&w, as_of);
    }
    size_t size = bench_request_end(&w);
    double t = timed_call(d, frame, size, &r, &c);
    size_t bytes = c.used;
    /* The current balances are as of the last event: the whole log was replayed. */
    uint64_t expected = as_of ? as_of : events;
    bool ok = t >= 0 && r.ok;
    uint64_t answered = ok ? bench_result_uint(&r, "as_of", 0) : 0;
    bench_conn_close(&c);
    if (!ok) {
        fprintf(stderr, "bench_replay: balances as_of %llu failed: %s %s\n",
                (unsigned long long)as_of, r.code, r.message);
        return -1;
    }
    if (answered != expected) {
        fprintf(stderr, "bench_replay: balances as_of %llu answered as of %llu, not %llu\n",
                (unsigned long long)as_of, (unsigned long long)answered,
                (unsigned long long)expected);
        return -1;
    }
    if (as_of)
        printf("balances as_of %-8llu %.3f s (%zu bytes answered)\n", (unsigned long long)as_of, t,
               bytes);
    else
        printf("balances (current)      %.4f s (%zu bytes answered)\n", t, bytes);
    bench_result(key, "%.4f", t);
    return 0;
}

/* `balances` decided by `day` (YYYY-MM-DD), as of event `as_of` (0: the head): the log replayed
 * counting decisions by their date (ledger_apply_decided), from its first event, or from a
 * snapshot whose state is that day's view. */
static int balances_decided_by(const daemon_proc *d, const char *day, uint64_t as_of,
                               const char *key)
{
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    mp_writer w;
    bench_response r;
    bench_conn c;
    bench_request_begin(&w, frame, sizeof(frame), 4, "balances", as_of != 0 ? 2 : 1);
    mp_write_cstr(&w, "decided_by");
    mp_write_cstr(&w, day);
    if (as_of != 0) {
        mp_write_cstr(&w, "as_of");
        mp_write_uint(&w, as_of);
    }
    size_t size = bench_request_end(&w);
    double t = timed_call(d, frame, size, &r, &c);
    size_t bytes = c.used;
    bool ok = t >= 0 && r.ok;
    bench_conn_close(&c);
    if (!ok) {
        fprintf(stderr, "bench_replay: balances decided_by %s failed: %s %s\n", day, r.code,
                r.message);
        return -1;
    }
    printf("balances decided_by %s as of %s %.3f s (%zu bytes answered)\n", day,
           as_of != 0 ? "an event" : "the head", t, bytes);
    bench_result(key, "%.4f", t);
    return 0;
}

static int verify(const daemon_proc *d, uint64_t events)
{
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    mp_writer w;
    bench_response r;
    bench_conn c;
    bench_request_begin(&w, frame, sizeof(frame), 3, "verify", 0);
    size_t size = bench_request_end(&w);
    double t = timed_call(d, frame, size, &r, &c);
    bool ok = t >= 0 && r.ok && bench_result_bool(&r, "ok", false) &&
              bench_result_uint(&r, "checked", 0) == events;
    bench_conn_close(&c);
    if (!ok) {
        fprintf(stderr, "bench_replay: verify failed: %s %s\n", r.code, r.message);
        return -1;
    }
    printf("verify                  %.3f s (%.2f M events/s)\n", t, (double)events / t / 1e6);
    bench_result("daemon_verify_s", "%.3f", t);
    bench_result("daemon_verify_events_per_s", "%.0f", (double)events / t);
    return 0;
}

static void memory(const daemon_proc *d, const char *when)
{
    long rss = bench_proc_status_kib(d->pid, "VmRSS");
    long anon = bench_proc_status_kib(d->pid, "RssAnon");
    long file = bench_proc_status_kib(d->pid, "RssFile");
    long hwm = bench_proc_status_kib(d->pid, "VmHWM");
    char key[64];
    printf("memory %-16s VmRSS %.1f MiB (anon %.1f, file %.1f), VmHWM %.1f MiB\n", when,
           rss / 1024.0, anon / 1024.0, file / 1024.0, hwm / 1024.0);
    snprintf(key, sizeof(key), "daemon_rss_%s_mib", when);
    bench_result(key, "%.1f", rss / 1024.0);
    snprintf(key, sizeof(key), "daemon_rss_anon_%s_mib", when);
    bench_result(key, "%.1f", anon / 1024.0);
    snprintf(key, sizeof(key), "daemon_rss_file_%s_mib", when);
    bench_result(key, "%.1f", file / 1024.0);
    snprintf(key, sizeof(key), "daemon_hwm_%s_mib", when);
    bench_result(key, "%.1f", hwm / 1024.0);
}

/* One of the concurrent as_of calls. */
typedef struct {
    const daemon_proc *d;
    uint64_t as_of;
    double s;
    bool ok;
} as_of_call;

static void *as_of_thread(void *arg)
{
    as_of_call *a = arg;
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    mp_writer w;
    bench_response r;
    bench_conn c;
    bench_request_begin(&w, frame, sizeof(frame), 2, "balances", 1);
    mp_write_cstr(&w, "as_of");
    mp_write_uint(&w, a->as_of);
    size_t size = bench_request_end(&w);
    a->s = timed_call(a->d, frame, size, &r, &c);
    a->ok = a->s >= 0 && r.ok && bench_result_uint(&r, "as_of", 0) == a->as_of;
    bench_conn_close(&c);
    return NULL;
}

#define CONCURRENT_AS_OF 8
/* Pages of one balances answer read at most (a 1 M-event log's has about 60). */
#define AS_OF_PAGES_MAX 1000

/* Every page of `balances as_of` one point on one connection, as a client reading the whole
 * answer does (each page asks again with the offsets of `next`): the first page's time, and
 * all of them. Budgetd builds the ledger of the point for the first page; whether the pages
 * after it build it again is what this shows. */
static int every_page_as_of(const daemon_proc *d, uint64_t as_of)
{
    static const char *const lists[] = {"frames_offset", "offset", "units_offset"};
    uint64_t offsets[3] = {0, 0, 0};
    uint8_t frame[BENCH_REQUEST_BYTES_MAX];
    bench_conn c;
    bench_response r;
    double first = 0, t0 = bench_now_s();
    unsigned pages = 0;
    bool more = true;

    if (bench_conn_open(&c, d->socket, CALL_TIMEOUT_MS) != 0)
        return -1;
    while (more && pages < AS_OF_PAGES_MAX) {
        mp_writer w;
        bench_request_begin(&w, frame, sizeof(frame), 10 + pages, "balances", 4);
        mp_write_cstr(&w, "as_of");
        mp_write_uint(&w, as_of);
        for (int i = 0; i < 3; i++) {
            mp_write_cstr(&w, lists[i]);
            mp_write_uint(&w, offsets[i]);
        }
        size_t size = bench_request_end(&w);
        if (bench_conn_call(&c, frame, size, &r) != 0 || !r.ok ||
            bench_result_uint(&r, "as_of", 0) != as_of) {
            fprintf(stderr, "bench_replay: page %u of balances as_of %llu failed: %s %s\n", pages,
                    (unsigned long long)as_of, r.code, r.message);
            bench_conn_close(&c);
            return -1;
        }
        if (pages++ == 0)
            first = bench_now_s() - t0;
        more = bench_result_bool(&r, "more", false);
        for (int i = 0; i < 3; i++)
            offsets[i] = bench_result_inner_uint(&r, "next", lists[i], offsets[i]);
    }
    double all = bench_now_s() - t0;
    bench_conn_close(&c);
    if (more) {
        fprintf(stderr, "bench_replay: balances as_of %llu has more than %d pages\n",
                (unsigned long long)as_of, AS_OF_PAGES_MAX);
        return -1;
    }
    printf("every page of balances as_of %llu: %u pages in %.3f s; the first %.3f s (%.1f x)\n",
           (unsigned long long)as_of, pages, all, first, first > 0 ? all / first : 0.0);
    bench_result("daemon_as_of_pages", "%u", pages);
    bench_result("daemon_as_of_every_page_s", "%.3f", all);
    bench_result("daemon_as_of_first_page_s", "%.3f", first);
    return 0;
}

/* The steps of stepping_as_of. */
#define AS_OF_STEPS 5

/* An auditor stepping forward through the log: `balances as_of` at `start`, then at `step`
 * events after it, AS_OF_STEPS times. Each step is a point not asked before; budgetd may
 * start it from the ledger kept for the step before. The first point's time and the mean of
 * the steps. */
static int stepping_as_of(const daemon_proc *d, uint64_t start, uint64_t step)
{
    double first = 0, steps = 0;
    for (int i = 0; i <= AS_OF_STEPS; i++) {
        uint8_t frame[BENCH_REQUEST_BYTES_MAX];
        mp_writer w;
        bench_response r;
        bench_conn c;
        uint64_t at = start + (uint64_t)i * step;
        bench_request_begin(&w, frame, sizeof(frame), 20 + (uint64_t)i, "balances", 1);
        mp_write_cstr(&w, "as_of");
        mp_write_uint(&w, at);
        size_t size = bench_request_end(&w);
        double t = timed_call(d, frame, size, &r, &c);
        bool ok = t >= 0 && r.ok && bench_result_uint(&r, "as_of", 0) == at;
        bench_conn_close(&c);
        if (!ok) {
            fprintf(stderr, "bench_replay: balances as_of %llu failed: %s %s\n",
                    (unsigned long long)at, r.code, r.message);
            return -1;
        }
        if (i == 0)
            first = t;
        else
            steps += t;
    }
    steps /= AS_OF_STEPS;
    printf("balances as_of %llu, then %d steps of %llu events: %.3f s, each step %.4f s\n",
           (unsigned long long)start, AS_OF_STEPS, (unsigned long long)step, first, steps);
    bench_result("daemon_as_of_step_first_s", "%.4f", first);
    bench_result("daemon_as_of_step_s", "%.4f", steps);
    return 0;
}

/* 8 `balances as_of` at once, spread over the log, or all at the one point `same` (when not
 * 0): the wall time until the last answer, and the daemon's peak resident memory meanwhile
 * (its peak is reset first: clear_refs 5). */
static int concurrent_as_of(const daemon_proc *d, uint64_t events, uint64_t same)
{
    as_of_call calls[CONCURRENT_AS_OF];
    pthread_t threads[CONCURRENT_AS_OF];
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)d->pid);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    long before = bench_proc_status_kib(d->pid, "VmHWM");
    double t0 = bench_now_s();
    for (int i = 0; i < CONCURRENT_AS_OF; i++) {
        uint64_t at = same != 0 ? same : events * (uint64_t)(2 * i + 1) / (2 * CONCURRENT_AS_OF);
        calls[i] = (as_of_call){d, at, 0, false};
        pthread_create(&threads[i], NULL, as_of_thread, &calls[i]);
    }
    bool ok = true;
    for (int i = 0; i < CONCURRENT_AS_OF; i++) {
        pthread_join(threads[i], NULL);
        ok = ok && calls[i].ok;
    }
    double wall = bench_now_s() - t0;
    long hwm = bench_proc_status_kib(d->pid, "VmHWM");
    if (!ok) {
        fprintf(stderr, "bench_replay: a concurrent balances as_of failed\n");
        return -1;
    }
    printf("8 balances as_of at once%s %.3f s wall; peak VmRSS %.1f MiB (%.1f MiB before)\n",
           same != 0 ? ", one point," : "", wall, hwm / 1024.0, before / 1024.0);
    bench_result(same != 0 ? "daemon_as_of_8_same_wall_s" : "daemon_as_of_8_wall_s", "%.3f", wall);
    bench_result(same != 0 ? "daemon_as_of_8_same_hwm_mib" : "daemon_as_of_8_hwm_mib", "%.1f",
                 hwm / 1024.0);
    return 0;
}

static int with_daemon(const char *budgetd, const char *dir, const char *data, uint64_t events,
                       uint64_t snapshot_every)
{
    daemon_proc d = {0};
    double t0 = bench_now_s();
    if (daemon_start(&d, budgetd, dir, data, snapshot_every) != 0)
        return -1;
    double ready = daemon_wait_ready(&d, t0);
    if (ready < 0) {
        daemon_stop(&d);
        return -1;
    }
    double replay = logged_replay_s(&d, events);
    if (replay < 0) {
        daemon_stop(&d);
        return -1;
    }
    printf("budgetd start-up        %.3f s until the socket answers; replay logged %.3f s "
           "(%.2f M events/s)\n",
           ready, replay, replay > 0 ? (double)events / replay / 1e6 : 0.0);
    bench_result("daemon_ready_s", "%.3f", ready);
    bench_result("daemon_replay_s", "%.3f", replay);
    if (replay > 0)
        bench_result("daemon_replay_events_per_s", "%.0f", (double)events / replay);
    memory(&d, "replayed");

    int rc = 0;
    rc |= balances_as_of(&d, 0, events, "daemon_balances_now_s");
    rc |= balances_as_of(&d, events / 100, events, "daemon_balances_as_of_start_s");
    rc |= balances_as_of(&d, events / 2, events, "daemon_balances_as_of_middle_s");
    rc |= balances_as_of(&d, events - 1, events, "daemon_balances_as_of_end_s");
    rc |= concurrent_as_of(&d, events, 0);
    rc |= concurrent_as_of(&d, events, events - 3);
    rc |= every_page_as_of(&d, events - 5);
    rc |= stepping_as_of(&d, events / 2 + 7, 1000);
    rc |= balances_decided_by(&d, "2024-06-30", 0, "daemon_balances_decided_by_s");
    /* After every decision and withdrawal of the log (a report of what had been decided by
     * today): from the newest snapshot at or below the point. 2024-06-30 starts from the newest
     * snapshot taken before anything dated after that day was entered, if one is kept. */
    rc |= balances_decided_by(&d, "2099-12-31", 0, "daemon_balances_decided_late_s");
    rc |= balances_decided_by(&d, "2099-12-31", events - 1, "daemon_balances_decided_late_end_s");
    rc |= verify(&d, events);
    memory(&d, "after_reads");
    daemon_stop(&d);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

/* Removes the files in `dir` (the store and what budgetd keeps beside it, its snapshots too)
 * and `dir` itself. */
static void remove_folder(const char *dir)
{
    char path[4400];
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && strcmp(e->d_name, "snapshots") == 0)
            remove_folder(path);
    }
    closedir(d);
    rmdir(dir);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: bench_replay --dir DIR [--events N] [--budgetd PATH] [--keep] [--reuse]\n"
                 "                    [--no-daemon] [--snapshots N]\n"
                 "Writes a log of N realistic events in DIR/data, replays it in-process, then\n"
                 "times budgetd's start-up, balances as_of, verify and memory on it.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"dir", required_argument, NULL, 'd'},
        {"events", required_argument, NULL, 'n'},
        {"budgetd", required_argument, NULL, 'b'},
        {"keep", no_argument, NULL, 'k'},
        {"reuse", no_argument, NULL, 'r'},
        {"no-daemon", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {"snapshots", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *budgetd = BUDGETD_PATH;
    uint64_t events = 1000000, snapshot_every = 0;
    bool keep = false, reuse = false, no_daemon = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'n':
            events = (uint64_t)bench_arg_long(optarg, "--events");
            break;
        case 'b':
            budgetd = optarg;
            break;
        case 'k':
            keep = true;
            break;
        case 'r':
            reuse = keep = true;
            break;
        case 'D':
            no_daemon = true;
            break;
        case 's':
            snapshot_every =
                strcmp(optarg, "0") == 0 ? 0 : (uint64_t)bench_arg_long(optarg, "--snapshots");
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!dir || events < 10000) {
        usage(stderr);
        return 2;
    }
    char data[4200];
    snprintf(data, sizeof(data), "%s/replay-data", dir);
    if (!reuse)
        remove_folder(data);

    ledger_counts made;
    int rc = reuse ? 0 : write_log(data, events, snapshot_every, &made);
    if (rc == 0)
        rc = in_process(data, events, reuse ? NULL : &made);
    if (rc == 0 && !no_daemon)
        rc = with_daemon(budgetd, dir, data, events, snapshot_every);
    if (!keep)
        remove_folder(data);
    return rc == 0 ? 0 : 1;
}
