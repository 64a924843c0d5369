/*
 * Replay: rebuilds a ledger from the log, on two threads. One walks the store, checks that
 * each event is the next link of the chain (its seq, its prev, and its hash recomputed from its
 * bytes, as `verify` does) and decodes it; the caller's thread applies the decoded events in
 * batches as they come. A log that was changed anywhere up to `upto` does not replay. Used at
 * start-up and for `balances` as of an earlier event or decided by a day.
 */
#ifndef BUDGET_REPLAY_H
#define BUDGET_REPLAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/protocol.h"
#include "ledger.h"
#include "store.h"

typedef struct {
    uint64_t head;                   /* the seq of the last event applied (0: none) */
    uint8_t hash[BUDGET_HASH_BYTES]; /* its hash (zeros: none) */
    uint64_t bad_seq;                /* when replay_log fails on an event: its seq (else 0) */
    char why[200];                   /* when replay_log fails: which event, and why */
    /* replay_check_chain and chain_job only: the kind of break, as `verify` names it ("prev",
     * "hash", "seq", "malformed", "missing"); NULL when none */
    const char *code;
} replay_result;

/*
 * Applies events 1..upto (UINT64_MAX: all) of `st` to `l`, which should be empty. Returns 0,
 * BUDGET_EINTERNAL when an event is missing or out of order, breaks the chain (prev or hash),
 * does not decode or breaks a rule (the ledger then holds the events before it; `out->bad_seq`
 * is its seq and `out->why` says why), or BUDGET_EUNAVAILABLE when the store cannot be read,
 * a thread cannot be started or the ledger runs out of memory.
 */
/* The hash event `seq` is stored with: 0, or -1 when it cannot be read (past the head, not an
 * event, or the store unreadable). */
int replay_stored_hash(store *st, uint64_t seq, uint8_t hash[BUDGET_HASH_BYTES]);

int replay_log(store *st, ledger *l, uint64_t upto, replay_result *out);

/*
 * The same from a snapshot: `l` holds events 1..from (snapshot_restore), the last with hash
 * `from_hash`, and events from+1..upto are applied to it. With `check_before` every event up to
 * `from` is checked as a link of the chain too (start-up checks the whole chain) and event
 * `from` must have hash `from_hash`; without, the chain is checked from `from_hash` on. The
 * errors of replay_log; a log that ends before `from` is BUDGET_EINTERNAL.
 */
int replay_log_from(store *st, ledger *l, uint64_t from, const uint8_t from_hash[BUDGET_HASH_BYTES],
                    uint64_t upto, bool check_before, replay_result *out);

/*
 * Checks every link of the chain 1..upto (UINT64_MAX: all) as replay_log does, its seq (the
 * one it is stored under and the one it carries), prev and hash recomputed, without decoding
 * or applying: out->head and out->hash are the last event's. 0, BUDGET_EINTERNAL (out->bad_seq,
 * out->why) or BUDGET_EUNAVAILABLE. Start-up runs it beside the restore of a snapshot.
 */
int replay_check_chain(store *st, uint64_t upto, replay_result *out);

/*
 * The same check shared between threads: chain_job_new fixes what is checked (1..upto, or to
 * the head when that is lower; NULL when the store cannot be read or out of memory) and the
 * size of a piece (`piece_events`, 0: 65 536 events, a few ms of work); each
 * thread that calls chain_job_help checks pieces of it until none is left; once every helper
 * has returned, chain_job_finish gives replay_check_chain's result and frees the job. Start-up
 * helps with a thread of its own while the main thread reads a snapshot, then with the main
 * thread too.
 */
typedef struct chain_job chain_job;
chain_job *chain_job_new(store *st, uint64_t upto, uint64_t piece_events);
/* The same for the links first..upto: the first's prev must be the stored hash of event
 * first - 1. */
chain_job *chain_job_new_from(store *st, uint64_t first, uint64_t upto, uint64_t piece_events);
void chain_job_help(chain_job *j);
/* chain_job_help as a thread's start routine (pthread_create's): `job` is the chain_job. */
void *chain_job_thread(void *job);
int chain_job_finish(chain_job *j, replay_result *out);
/* Before any help: the pieces are taken from the last one back, so that a piece after the
 * first broken link is done before it (the tests' worst order for finding it). */
void chain_job_last_first(chain_job *j);
/* Any time: the pieces not yet taken that begin after event `seq` are not checked, for a break
 * there could not change what the caller makes of the result (0: none is). chain_job_finish then
 * gives a break found at or before it, or BUDGET_EUNAVAILABLE saying the check was stopped. */
void chain_job_stop_after(chain_job *j, uint64_t seq);

/*
 * The links from+1..upto checked on a thread of their own while the state at `from` is being
 * restored, so that the replay after it only decodes and applies (SHA-256 of each event is
 * about a third of a replay's walk). replay_links_start starts the check (0, or
 * BUDGET_EUNAVAILABLE when the store cannot be read); event from+1's prev must be the stored
 * hash of event `from`, which the restored state's hash is checked against. Then either
 * replay_log_beside applies events from+1..upto to that state with ledger_apply, or with
 * ledger_apply_decided by `decided_by` when it is not 0, taking the check over (its result is
 * the replay's, with replay_log_from's errors), or replay_links_cancel stops it. The check
 * covers the log up to its head when it began, at most, and so does the replay beside it.
 */
typedef struct {
    chain_job *job;
    pthread_t thread;
    bool running; /* else the check is done by replay_log_beside's thread at its end */
} replay_links;
int replay_links_start(replay_links *k, store *st, uint64_t from, uint64_t upto);
void replay_links_cancel(replay_links *k);
int replay_log_beside(store *st, ledger *l, uint64_t from, uint64_t upto, int32_t decided_by,
                      replay_links *links, replay_result *out);

/*
 * Applies events 1..upto of `st` to `l` (empty) with ledger_apply_decided: what had been
 * decided by the day `decided_by` (YYYYMMDD, not 0), by what the log held at `upto`. On the
 * same two threads as replay_log, and with the same check of every link up to `upto`: a view
 * of the log is only ever built from events that are the chain's. The errors of replay_log.
 */
int replay_decided(store *st, ledger *l, uint64_t upto, int32_t decided_by, replay_result *out);

/*
 * The same from a view already built: `l` holds what had been decided by `decided_by` by event
 * `from` (replay_decided's, or a copy of one), the last event with hash `from_hash`; events
 * from+1..upto are applied to it, their links checked from `from_hash` as they are read. The
 * errors of replay_log_from.
 */
int replay_decided_from(store *st, ledger *l, uint64_t from,
                        const uint8_t from_hash[BUDGET_HASH_BYTES], uint64_t upto,
                        int32_t decided_by, replay_result *out);

/*
 * The last seq, at most `upto`, of an event entered before `ts_end_ms` (ms since the epoch),
 * into *seq (0: none). The ts of the log never falls (commit.c stamps each event at least as
 * late as the one before), so this is a binary search: O(log n) events read. 0, or
 * BUDGET_EUNAVAILABLE / BUDGET_EINTERNAL when the store cannot be read.
 */
int replay_seq_before(store *st, uint64_t upto, uint64_t ts_end_ms, uint64_t *seq);

#endif
