/*
 * Replay on two threads (replay.h). The walker fills batches of decoded events in a small
 * ring; the applier empties them. Decoding and walking the map cost about as much per event
 * as applying, so splitting them nearly halves a replay on two cores. The walker also checks
 * each event's syntax (ledger_syntax_ok), which needs no state, to lighten the applier. The ring
 * holds RING_BATCHES * BATCH_EVENTS decoded events, whatever the log's length.
 *
 * The ring is kept small because a decoded event is large: a ledger_event is about 13.4 KiB,
 * nearly all of it the lines of a budget adoption, and an event of any other type writes only its
 * first 1.4 KiB. Each slot of the ring so costs a page or two the first time it is written, and
 * every replay has a ring of its own: a ring of 4 096 slots (54 MiB) cost each read as of an
 * earlier point about 5 500 page faults and 20 MiB of resident memory more than this one. 256
 * slots are 3.4 MiB, taken from the heap (below BIGMEM_MMAP_BYTES), of which the pages written
 * come to about 1.4 MiB.
 *
 * One thread is nearly always the faster, and waits for the other. Woken for each batch the
 * other hands over, it would sleep again after that one batch: a wake-up per batch, each a
 * system call on both sides and a switch on a busy core. So a thread that finds the ring full
 * (the walker) or empty (the applier) sleeps until RING_WAKE batches, half the ring, are free or
 * ready for it, and the other signals only then: a replay of 100 000 events after a snapshot
 * took about 2 000 futex calls instead of 4 800.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bigmem.h"
#include "budget/errors.h"
#include "event.h"
#include "replay.h"

#define BATCH_EVENTS 32
#define RING_BATCHES 8
/* A thread that waits on the ring sleeps until this many batches are free or ready for it. */
#define RING_WAKE 4
/* The bytes of a decoded event the applier asks for ahead (prefetch_head). */
#define EVENT_HEAD_BYTES 512

typedef struct {
    ledger_event events[BATCH_EVENTS];
    uint32_t count;
} batch;

_Static_assert(RING_BATCHES * sizeof(batch) < BIGMEM_MMAP_BYTES,
               "the ring comes from the heap, not from a fresh mapping of its own");

typedef struct {
    store *st;
    uint64_t upto;
    uint64_t from; /* events up to `from` are only checked as links, not applied */
    uint64_t scan_after;
    uint8_t from_hash[BUDGET_HASH_BYTES];
    int32_t decided_by; /* 0: ledger_apply; else ledger_apply_decided by this day */
    bool links_beside;  /* the links are checked by a chain_job beside the walk, not by it */

    pthread_mutex_t mutex;
    pthread_cond_t filled;  /* a batch is ready for the applier, or the walker is done */
    pthread_cond_t emptied; /* a batch is free for the walker, or the applier stopped */
    batch *ring;
    uint64_t produced, consumed; /* batches handed over / taken back, ever */
    bool walk_done, apply_stopped;

    /* The walker's own state. */
    batch *current;
    uint64_t expect;
    uint8_t prev[BUDGET_HASH_BYTES];
    uint64_t bad_seq;
    int rc;
    char why[200];
} replay_ctx;

/* The walker waits for a free batch; false when the applier has stopped. */
static bool take_free_batch(replay_ctx *r)
{
    pthread_mutex_lock(&r->mutex);
    if (r->produced - r->consumed == RING_BATCHES)
        while (r->produced - r->consumed > RING_BATCHES - RING_WAKE && !r->apply_stopped)
            pthread_cond_wait(&r->emptied, &r->mutex);
    bool go = !r->apply_stopped;
    pthread_mutex_unlock(&r->mutex);
    if (go) {
        r->current = &r->ring[r->produced % RING_BATCHES];
        r->current->count = 0;
    }
    return go;
}

static void hand_over(replay_ctx *r)
{
    pthread_mutex_lock(&r->mutex);
    r->produced++;
    if (r->produced - r->consumed >= RING_WAKE)
        pthread_cond_signal(&r->filled);
    pthread_mutex_unlock(&r->mutex);
    r->current = NULL;
}

/* Stops the walk at event `seq`, the first that cannot be replayed, saying why. */
static int walk_broken(replay_ctx *r, uint64_t seq, const char *what)
{
    snprintf(r->why, sizeof(r->why), "event %llu %s", (unsigned long long)seq, what);
    r->bad_seq = seq;
    r->rc = BUDGET_EINTERNAL;
    return 1;
}

/* What is wrong with link `seq` by event_check_link's `why`, as the log and verify say it. */
static void link_problem(uint64_t seq, const char *why, char *what, size_t what_size)
{
    if (strcmp(why, "prev") == 0)
        snprintf(what, what_size, "does not follow event %llu in the chain (prev)",
                 (unsigned long long)(seq - 1));
    else if (strcmp(why, "hash") == 0)
        snprintf(what, what_size, "is not what its hash says: its bytes were changed (hash)");
    else
        snprintf(what, what_size, "is malformed (malformed)");
}

/* Event `seq` is the next one, its stored prev the last event's hash and its stored hash the
 * SHA-256 of its bytes (`hash` is set to it): 0, or walk_broken's 1. */
static int walk_link(replay_ctx *r, uint64_t seq, store_val v, const uint8_t **hash)
{
    const char *why = "";
    char what[120];
    if (seq != r->expect)
        return walk_broken(r, r->expect, "is missing from the log");
    if (event_check_link(v.data, v.size, r->prev, &why) != 0 ||
        event_link(v.data, v.size, NULL, hash) != 0) {
        link_problem(seq, why, what, sizeof(what));
        return walk_broken(r, seq, what);
    }
    return 0;
}

static int walk_one(void *ctx, uint64_t seq, store_val v)
{
    replay_ctx *r = ctx;
    const uint8_t *hash;

    if (seq > r->upto)
        return 1;
    if (seq <= r->from) {
        /* Before the snapshot the ledger starts from: a link of the chain, checked only. */
        if (walk_link(r, seq, v, &hash) != 0)
            return 1;
        if (seq == r->from && memcmp(hash, r->from_hash, BUDGET_HASH_BYTES) != 0)
            return walk_broken(r, seq, "is not the event the snapshot was taken at");
        memcpy(r->prev, hash, BUDGET_HASH_BYTES);
        r->expect++;
        return 0;
    }
    if (!r->current && !take_free_batch(r))
        return 1;
    ledger_event *ev = &r->current->events[r->current->count];
    /* Hashing here, on the walker, runs beside the applier's work. */
    if (r->links_beside) {
        if (seq != r->expect)
            return walk_broken(r, r->expect, "is missing from the log");
    } else if (walk_link(r, seq, v, &hash) != 0) {
        return 1;
    }
    if (event_decode(v.data, v.size, ev) != 0 || ev->seq != seq)
        return walk_broken(r, seq, "cannot be decoded");
    /* The checks that need no state are made here, beside the applier rather than in it. */
    if (!ledger_syntax_ok(ev))
        return walk_broken(r, seq, "breaks a ledger rule on replay");
    if (!r->links_beside)
        memcpy(r->prev, hash, BUDGET_HASH_BYTES);
    r->expect++;
    if (++r->current->count == BATCH_EVENTS)
        hand_over(r);
    return 0;
}

static void *walker_main(void *arg)
{
    replay_ctx *r = arg;
    store_reader *rd;

    if (store_reader_begin(r->st, &rd) != 0) {
        snprintf(r->why, sizeof(r->why), "the event store cannot be read");
        r->rc = BUDGET_EUNAVAILABLE;
    } else {
        int rc = store_reader_scan(rd, r->scan_after, walk_one, r);
        /* A scan stopped by the store itself (a gap, an unreadable page); walk_one stops it
         * with 1. */
        if (rc < 0 && r->rc == 0)
            walk_broken(r, r->expect, "cannot be read from the store");
        store_reader_end(rd);
    }
    if (r->current && r->current->count > 0)
        hand_over(r);
    pthread_mutex_lock(&r->mutex);
    r->walk_done = true;
    pthread_cond_signal(&r->filled);
    pthread_mutex_unlock(&r->mutex);
    return NULL;
}

/*
 * Asks for the first bytes of the event applied next: its seq, actor, ids, unit, year and amount,
 * which every rule reads first. The walker wrote them on the other core, so each is a miss that
 * would otherwise stall the applier at its first look (the strnlen of the event's id); fetched
 * while this event is applied, they are at hand. Six reads as of 999 999 from the snapshot at
 * 900 000 took 0.88 of the time without it (six alternated rounds).
 */
static inline void prefetch_head(const ledger_event *ev)
{
    _Static_assert(offsetof(ledger_event, amount) < EVENT_HEAD_BYTES, "the head holds the ids");
    const char *p = (const char *)ev;
    for (size_t at = 0; at < EVENT_HEAD_BYTES; at += 64)
        __builtin_prefetch(p + at);
}

/* Applies batches until the walker is done; 0, or the seq of the event that could not be
 * applied, with the ledger's code in *code. */
static uint64_t apply_batches(replay_ctx *r, ledger *l, int *code)
{
    for (;;) {
        pthread_mutex_lock(&r->mutex);
        if (r->produced == r->consumed)
            while (r->produced - r->consumed < RING_WAKE && !r->walk_done)
                pthread_cond_wait(&r->filled, &r->mutex);
        bool empty = r->produced == r->consumed;
        pthread_mutex_unlock(&r->mutex);
        if (empty)
            return 0;

        const batch *b = &r->ring[r->consumed % RING_BATCHES];
        for (uint32_t i = 0; i < b->count; i++) {
            const ledger_event *ev = &b->events[i];
            if (i + 1 < b->count)
                prefetch_head(&b->events[i + 1]);
            *code = r->decided_by != 0 ? ledger_apply_decided_syntax_ok(l, ev, r->decided_by)
                                       : ledger_apply_syntax_ok(l, ev);
            if (*code != 0)
                return ev->seq;
        }

        pthread_mutex_lock(&r->mutex);
        r->consumed++;
        if (r->produced - r->consumed <= RING_BATCHES - RING_WAKE)
            pthread_cond_signal(&r->emptied);
        pthread_mutex_unlock(&r->mutex);
    }
}

int replay_log(store *st, ledger *l, uint64_t upto, replay_result *out)
{
    static const uint8_t none[BUDGET_HASH_BYTES];
    return replay_log_from(st, l, 0, none, upto, true, out);
}

/* Ends the check of `links` started beside a replay, helping with what is left of it, and makes
 * its result the replay's when it found a break at or before the replay's own, or the replay
 * had none; with none, the chain's last hash is the replay's. */
static int finish_links(chain_job *links, pthread_t *checker, int rc, replay_result *out)
{
    replay_result chain;
    /* A replay that failed takes only a break at or before its own: the pieces after that are
     * left unchecked (those under way end). */
    if (rc != 0)
        chain_job_stop_after(links, out->bad_seq);
    chain_job_help(links);
    if (checker != NULL)
        pthread_join(*checker, NULL);
    int crc = chain_job_finish(links, &chain);
    if (crc == 0 && rc == 0) {
        memcpy(out->hash, chain.hash, BUDGET_HASH_BYTES);
    } else if (crc != 0 && (rc == 0 || (chain.bad_seq != 0 && chain.bad_seq <= out->bad_seq))) {
        memcpy(out->why, chain.why, sizeof(out->why));
        out->bad_seq = chain.bad_seq;
        out->code = chain.code;
        rc = crc;
    }
    return rc;
}

static uint64_t chain_job_upto(const chain_job *j);

int replay_links_start(replay_links *k, store *st, uint64_t from, uint64_t upto)
{
    memset(k, 0, sizeof(*k));
    k->job = chain_job_new_from(st, from + 1, upto, 0);
    if (k->job == NULL)
        return BUDGET_EUNAVAILABLE;
    k->running = pthread_create(&k->thread, NULL, chain_job_thread, k->job) == 0;
    return 0;
}

void replay_links_cancel(replay_links *k)
{
    replay_result ignored;
    if (k->job == NULL)
        return;
    chain_job_stop_after(k->job, 0);
    if (k->running)
        pthread_join(k->thread, NULL);
    chain_job_finish(k->job, &ignored);
    memset(k, 0, sizeof(*k));
}

/* replay_log_from, applying with ledger_apply_decided when `decided_by` is not 0, and with the
 * links checked by `beside` (replay_links_start's, taken over) when it is not NULL. */
static int replay_run(store *st, ledger *l, uint64_t from,
                      const uint8_t from_hash[BUDGET_HASH_BYTES], uint64_t upto, bool check_before,
                      int32_t decided_by, replay_links *beside, replay_result *out)
{
    replay_ctx *r = calloc(1, sizeof(*r));
    pthread_t walker, checker;
    int rc = 0, code = 0;
    chain_job *links = NULL;
    bool checking = false;

    memset(out, 0, sizeof(*out));
    if (beside != NULL) {
        links = beside->job;
        checker = beside->thread;
        checking = beside->running;
        memset(beside, 0, sizeof(*beside));
    }
    if (!r || !(r->ring = malloc(RING_BATCHES * sizeof(batch)))) {
        free(r);
        if (links != NULL)
            finish_links(links, checking ? &checker : NULL, BUDGET_EUNAVAILABLE, out);
        memset(out, 0, sizeof(*out));
        snprintf(out->why, sizeof(out->why), "out of memory");
        return BUDGET_EUNAVAILABLE;
    }
    r->st = st;
    r->upto = upto;
    /* The walker does not hash what the check beside it does not cover (the head when the
     * check began, where that is lower): a replay beside a check stops where the check does. */
    if (links != NULL && chain_job_upto(links) < upto)
        r->upto = chain_job_upto(links);
    r->from = from;
    r->decided_by = decided_by;
    memcpy(r->from_hash, from_hash, BUDGET_HASH_BYTES);
    r->expect = 1;
    if (!check_before) {
        r->scan_after = from;
        r->expect = from + 1;
        memcpy(r->prev, from_hash, BUDGET_HASH_BYTES);
    }
    pthread_mutex_init(&r->mutex, NULL);
    pthread_cond_init(&r->filled, NULL);
    pthread_cond_init(&r->emptied, NULL);
    r->links_beside = links != NULL;
    if (pthread_create(&walker, NULL, walker_main, r) != 0) {
        snprintf(out->why, sizeof(out->why), "cannot start the replay thread");
        rc = BUDGET_EUNAVAILABLE;
        goto failed_thread;
    }

    uint64_t broken = apply_batches(r, l, &code);
    pthread_mutex_lock(&r->mutex);
    r->apply_stopped = true;
    pthread_cond_signal(&r->emptied);
    pthread_mutex_unlock(&r->mutex);
    pthread_join(walker, NULL);

    if (broken && code == BUDGET_EUNAVAILABLE) {
        snprintf(out->why, sizeof(out->why), "out of memory at event %llu",
                 (unsigned long long)broken);
        out->bad_seq = broken;
        rc = BUDGET_EUNAVAILABLE;
    } else if (broken) {
        snprintf(out->why, sizeof(out->why), "event %llu breaks a ledger rule on replay",
                 (unsigned long long)broken);
        out->bad_seq = broken;
        rc = BUDGET_EINTERNAL;
    } else if (r->rc != 0) {
        memcpy(out->why, r->why, sizeof(out->why));
        out->bad_seq = r->bad_seq;
        rc = r->rc;
    }
    if (rc == 0)
        memcpy(out->hash, r->prev, BUDGET_HASH_BYTES);
    if (links != NULL) {
        rc = finish_links(links, checking ? &checker : NULL, rc, out);
        links = NULL;
    }
    out->head = ledger_last_seq(l);
    if (rc == 0 && out->head < from) {
        snprintf(out->why, sizeof(out->why), "the log ends before event %llu",
                 (unsigned long long)from);
        rc = BUDGET_EINTERNAL;
    }

failed_thread:
    if (links != NULL)
        finish_links(links, checking ? &checker : NULL, rc, out);
    pthread_cond_destroy(&r->emptied);
    pthread_cond_destroy(&r->filled);
    pthread_mutex_destroy(&r->mutex);
    free(r->ring);
    free(r);
    return rc;
}

int replay_log_from(store *st, ledger *l, uint64_t from, const uint8_t from_hash[BUDGET_HASH_BYTES],
                    uint64_t upto, bool check_before, replay_result *out)
{
    return replay_run(st, l, from, from_hash, upto, check_before, 0, NULL, out);
}

int replay_log_beside(store *st, ledger *l, uint64_t from, uint64_t upto, int32_t decided_by,
                      replay_links *links, replay_result *out)
{
    static const uint8_t unused[BUDGET_HASH_BYTES];
    return replay_run(st, l, from, unused, upto, false, decided_by, links, out);
}

/* ---- the chain alone, in pieces -------------------------------------------------------------- */

/*
 * Every event carries its predecessor's hash, so a piece of the chain can be checked on its
 * own once the stored hash of the event before it is read: each piece checks that its first
 * event's prev is that hash, and the piece before checks that the hash is the event's own.
 * The threads that help take pieces in order from a shared counter; the first broken link of
 * the chain is the lowest seq any piece found broken, which is what a walk from the first
 * event would have stopped at.
 */
#define CHAIN_PIECE_EVENTS 65536u

struct chain_job {
    store *st;
    uint64_t first;              /* the first seq checked: 1, or after a restored state */
    uint64_t upto;               /* the last seq checked: the head, or less when asked */
    uint64_t piece_events;       /* events in a piece */
    bool last_first;             /* pieces are taken from the last (chain_job_last_first) */
    _Atomic uint64_t next_piece; /* the next piece to take */
    _Atomic uint64_t stop_after; /* pieces that begin after it are not checked (UINT64_MAX: none) */
    pthread_mutex_t lock;        /* guards what follows */
    uint64_t bad_seq;            /* the lowest broken link found (0: none) */
    const char *code;            /* its kind, as replay_result's */
    char why[200];               /* why it is broken */
    uint64_t pieces_checked;     /* to the end, or to a broken link */
    uint64_t pieces_stopped;     /* not checked: they begin after stop_after */
    uint8_t last_hash[BUDGET_HASH_BYTES]; /* the hash of event `upto` */
};

typedef struct {
    chain_job *job;
    uint64_t from, to, expect;
    uint8_t prev[BUDGET_HASH_BYTES];
    bool have_prev; /* prev holds the stored hash of event from - 1 (or zeros, from 1) */
    uint64_t bad_seq;
    const char *code; /* as replay_result's */
    char why[200];
} chain_piece;

static int piece_broken(chain_piece *p, uint64_t seq, const char *code, const char *what)
{
    p->bad_seq = seq;
    p->code = code;
    snprintf(p->why, sizeof(p->why), "event %llu %s", (unsigned long long)seq, what);
    return 1;
}

static int piece_one(void *ctx, uint64_t seq, store_val v)
{
    chain_piece *p = ctx;
    const uint8_t *hash;
    const char *why = "";
    if (!p->have_prev) {
        /* Event from - 1: only its stored hash is taken. Whatever is wrong with it, the
         * piece it belongs to finds at a lower seq; this piece then has nothing to add. */
        if (seq != p->from - 1 || event_link(v.data, v.size, NULL, &hash) != 0)
            return 1;
        memcpy(p->prev, hash, BUDGET_HASH_BYTES);
        p->have_prev = true;
        return 0;
    }
    if (seq > p->to)
        return 1;
    if (seq != p->expect)
        return piece_broken(p, p->expect, "missing", "is missing from the log");
    uint64_t stored;
    if (event_seq(v.data, v.size, &stored) != 0)
        return piece_broken(p, seq, "malformed", "is malformed (malformed)");
    if (stored != seq)
        return piece_broken(p, seq, "seq", "is stored under another seq (seq)");
    if (event_check_link(v.data, v.size, p->prev, &why) != 0 ||
        event_link(v.data, v.size, NULL, &hash) != 0) {
        char what[120];
        link_problem(seq, why, what, sizeof(what));
        return piece_broken(p, seq, why[0] != '\0' ? why : "malformed", what);
    }
    memcpy(p->prev, hash, BUDGET_HASH_BYTES);
    p->expect++;
    return 0;
}

/* Checks events from..to through `rd`; records what it found in the job. */
static void check_piece(chain_job *j, store_reader *rd, uint64_t from, uint64_t to)
{
    chain_piece p = {.job = j, .from = from, .to = to, .expect = from, .have_prev = from == 1};
    int rc = store_reader_scan(rd, from >= 2 ? from - 2 : 0, piece_one, &p);
    if (p.bad_seq == 0 && p.have_prev && p.expect <= to) {
        if (rc < 0)
            snprintf(p.why, sizeof(p.why), "event %llu cannot be read from the store",
                     (unsigned long long)p.expect);
        else
            snprintf(p.why, sizeof(p.why), "event %llu is missing from the log",
                     (unsigned long long)p.expect);
        p.bad_seq = p.expect;
        p.code = "missing";
    }
    pthread_mutex_lock(&j->lock);
    if (p.bad_seq != 0 && (j->bad_seq == 0 || p.bad_seq < j->bad_seq)) {
        j->bad_seq = p.bad_seq;
        j->code = p.code;
        memcpy(j->why, p.why, sizeof(j->why));
    }
    if (p.bad_seq == 0 && p.have_prev && to == j->upto)
        memcpy(j->last_hash, p.prev, BUDGET_HASH_BYTES);
    j->pieces_checked++;
    pthread_mutex_unlock(&j->lock);
}

chain_job *chain_job_new(store *st, uint64_t upto, uint64_t piece_events)
{
    return chain_job_new_from(st, 1, upto, piece_events);
}

chain_job *chain_job_new_from(store *st, uint64_t first, uint64_t upto, uint64_t piece_events)
{
    chain_job *j = calloc(1, sizeof(*j));
    store_reader *rd;
    if (j == NULL)
        return NULL;
    if (store_reader_begin(st, &rd) != 0) {
        free(j);
        return NULL;
    }
    uint64_t head = store_reader_head(rd);
    store_reader_end(rd);
    j->st = st;
    j->first = first != 0 ? first : 1;
    j->upto = upto < head ? upto : head;
    j->piece_events = piece_events != 0 ? piece_events : CHAIN_PIECE_EVENTS;
    atomic_init(&j->next_piece, 0);
    atomic_init(&j->stop_after, UINT64_MAX);
    pthread_mutex_init(&j->lock, NULL);
    return j;
}

/* The last seq the job checks. */
static uint64_t chain_job_upto(const chain_job *j)
{
    return j->upto;
}

/* The number of pieces of the job. */
static uint64_t pieces_of(const chain_job *j)
{
    return j->upto < j->first ? 0 : (j->upto - j->first) / j->piece_events + 1;
}

void chain_job_help(chain_job *j)
{
    /* The reader first: a thread that cannot read takes no piece, and leaves them all to the
     * others (chain_job_finish says when none could). */
    store_reader *rd;
    if (store_reader_begin(j->st, &rd) != 0)
        return;
    for (;;) {
        uint64_t piece = atomic_fetch_add(&j->next_piece, 1);
        if (piece >= pieces_of(j))
            break;
        if (j->last_first)
            piece = pieces_of(j) - 1 - piece;
        uint64_t from = j->first + piece * j->piece_events;
        if (from > j->upto)
            break;
        pthread_mutex_lock(&j->lock);
        bool past_bad = j->bad_seq != 0 && from > j->bad_seq;
        pthread_mutex_unlock(&j->lock);
        if (past_bad)
            continue; /* it cannot lower what is found */
        if (from > atomic_load(&j->stop_after)) {
            pthread_mutex_lock(&j->lock);
            j->pieces_stopped++;
            pthread_mutex_unlock(&j->lock);
            continue;
        }
        uint64_t to = from - 1 + j->piece_events;
        check_piece(j, rd, from, to < j->upto ? to : j->upto);
    }
    store_reader_end(rd);
}

void *chain_job_thread(void *job)
{
    chain_job_help(job);
    return NULL;
}

void chain_job_last_first(chain_job *j)
{
    j->last_first = true;
}

void chain_job_stop_after(chain_job *j, uint64_t seq)
{
    atomic_store(&j->stop_after, seq);
}

int chain_job_finish(chain_job *j, replay_result *out)
{
    memset(out, 0, sizeof(*out));
    int rc = 0;
    if (j->bad_seq != 0) {
        out->bad_seq = j->bad_seq;
        out->code = j->code;
        out->head = j->bad_seq - 1;
        memcpy(out->why, j->why, sizeof(out->why));
        rc = BUDGET_EINTERNAL;
    } else if (j->pieces_checked + j->pieces_stopped < pieces_of(j)) {
        /* no helper could read the store */
        snprintf(out->why, sizeof(out->why), "the event store cannot be read");
        rc = BUDGET_EUNAVAILABLE;
    } else if (j->pieces_stopped > 0) {
        snprintf(out->why, sizeof(out->why), "the check was stopped after event %llu",
                 (unsigned long long)atomic_load(&j->stop_after));
        rc = BUDGET_EUNAVAILABLE;
    } else {
        out->head = j->upto;
        memcpy(out->hash, j->last_hash, BUDGET_HASH_BYTES);
    }
    pthread_mutex_destroy(&j->lock);
    free(j);
    return rc;
}

int replay_check_chain(store *st, uint64_t upto, replay_result *out)
{
    chain_job *j = chain_job_new(st, upto, 0);
    if (j == NULL) {
        memset(out, 0, sizeof(*out));
        snprintf(out->why, sizeof(out->why), "the event store cannot be read");
        return BUDGET_EUNAVAILABLE;
    }
    chain_job_help(j);
    return chain_job_finish(j, out);
}

/* ---- what was decided by a day, and the seq at a time ---------------------------------- */

int replay_decided(store *st, ledger *l, uint64_t upto, int32_t decided_by, replay_result *out)
{
    static const uint8_t none[BUDGET_HASH_BYTES];
    if (decided_by == 0) {
        memset(out, 0, sizeof(*out));
        snprintf(out->why, sizeof(out->why), "no day to decide by");
        return BUDGET_EINTERNAL;
    }
    /* From the first event: the links are hashed on a thread of their own, with the pieces left
     * when the apply ends hashed on this one, while the walker only decodes. The view is not
     * answered unless the check passed. */
    replay_links links;
    if (replay_links_start(&links, st, 0, upto) != 0) {
        memset(out, 0, sizeof(*out));
        snprintf(out->why, sizeof(out->why), "the event store cannot be read");
        return BUDGET_EUNAVAILABLE;
    }
    return replay_run(st, l, 0, none, upto, true, decided_by, &links, out);
}

int replay_decided_from(store *st, ledger *l, uint64_t from,
                        const uint8_t from_hash[BUDGET_HASH_BYTES], uint64_t upto,
                        int32_t decided_by, replay_result *out)
{
    if (decided_by == 0 || from == 0) {
        memset(out, 0, sizeof(*out));
        snprintf(out->why, sizeof(out->why), "no day to decide by, or no view to start from");
        return BUDGET_EINTERNAL;
    }
    return replay_run(st, l, from, from_hash, upto, false, decided_by, NULL, out);
}

/* The ts of event `seq`: 0, or an error. */
static int ts_of(store_reader *rd, uint64_t seq, uint64_t *ts)
{
    store_val v;
    ledger_event ev;
    if (store_reader_get(rd, seq, &v) != 0 || event_decode(v.data, v.size, &ev) != 0)
        return BUDGET_EINTERNAL;
    *ts = ev.ts_ms;
    return 0;
}

int replay_seq_before(store *st, uint64_t upto, uint64_t ts_end_ms, uint64_t *seq)
{
    store_reader *rd;
    if (store_reader_begin(st, &rd) != 0)
        return BUDGET_EUNAVAILABLE;
    uint64_t lo = 0, hi = store_reader_head(rd);
    if (hi > upto)
        hi = upto;
    int rc = 0;
    /* Invariant: events 1..lo are before ts_end_ms, events after hi are not. */
    while (rc == 0 && lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2, ts;
        rc = ts_of(rd, mid, &ts);
        if (rc == 0 && ts < ts_end_ms)
            lo = mid;
        else
            hi = mid - 1;
    }
    store_reader_end(rd);
    *seq = lo;
    return rc;
}

int replay_stored_hash(store *st, uint64_t seq, uint8_t hash[BUDGET_HASH_BYTES])
{
    store_reader *rd;
    store_val v;
    const uint8_t *stored;
    int rc = -1;
    if (store_reader_begin(st, &rd) != 0)
        return -1;
    if (seq <= store_reader_head(rd) && store_reader_get(rd, seq, &v) == 0 &&
        event_link(v.data, v.size, NULL, &stored) == 0) {
        memcpy(hash, stored, BUDGET_HASH_BYTES);
        rc = 0;
    }
    store_reader_end(rd);
    return rc;
}
