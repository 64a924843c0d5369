/*
 * Ledgers as they stood at an earlier event, kept a while after they are built.
 *
 * A `balances` read with `as_of` or `decided_by` builds the ledger as it stood at that point
 * (a snapshot and the events after it, or the log from its start): hundreds of milliseconds on
 * a large log. A client reading every page of such an answer asks once per page, with the same
 * point each time, and several clients often ask for the same point at once (a report opened
 * by a committee). The cache keeps the last few ledgers built, keyed by the point, so that the
 * next page, and the same point asked for at once, use the one ledger instead of building it
 * again, and a ledger being built is waited for rather than built twice. A ledger no read has
 * used for a while is freed.
 *
 * A kept ledger is only ever read (the packers take a const ledger): the events at or below
 * its point never change, so it stays right for as long as it is kept.
 *
 * Thread-safe: worker jobs get and release; the loop thread trims.
 */
#ifndef BUDGET_HISTORY_H
#define BUDGET_HISTORY_H

#include <stdint.h>

#include "ledger.h"

/* budgetd's defaults, and the most --as-of-keep allows. */
#define HISTORY_KEEP_DEFAULT 2
#define HISTORY_KEEP_MAX 16
#define HISTORY_IDLE_S_DEFAULT 10

typedef struct history_cache history_cache;

/* The point a ledger stands at: after event `upto`, and, when `decided_by` is not 0, only
 * what had been decided by that day (YYYYMMDD, as request.h gives it). */
typedef struct {
    uint64_t upto;
    int32_t decided_by;
} history_key;

/* Builds the ledger at the key's point into *out; 0, or a budget error code. */
typedef int (*history_build_fn)(void *ctx, ledger **out);

typedef struct {
    uint64_t hits;   /* reads answered from a kept ledger, or one another read was building */
    uint64_t builds; /* ledgers built */
    uint64_t kept;   /* ledgers kept now */
    uint64_t based;  /* ledgers built from a copy of one kept (history_cache_base) */
    uint64_t from_snapshot; /* ledgers built from a snapshot (history_cache_note_snapshot) */
    uint64_t queued;        /* reads that waited for another build to end before building */
} history_stats;

/* Keeps at most `kept_max` ledgers (0: none; every read builds its own), each freed once no
 * read has used it for `idle_ms`. A build starts only while fewer than `builds_max` (at least
 * 1) ledgers are being built or held by reads: a read that would build another waits, and the
 * idle kept ones make room for it, so that reads of many points at once hold about
 * `builds_max` ledgers in memory. NULL when out of memory. */
history_cache *history_cache_new(uint32_t kept_max, uint64_t idle_ms, uint32_t builds_max);
void history_cache_free(history_cache *c);

/*
 * The ledger at `key`: a kept one; or, when another read is building it, that one once built;
 * else one built now by `build(ctx, ...)` (once fewer than `builds_max` are being built or
 * held), kept
 * when there is room (a slot free, or the least recently used kept ledger that no read holds).
 * NULL with *rc set when the build failed.
 * Every ledger returned is given back with history_cache_release.
 */
const ledger *history_cache_get(history_cache *c, history_key key, history_build_fn build,
                                void *ctx, int *rc);
void history_cache_release(history_cache *c, const ledger *l);

/*
 * For a read of a point not kept: the kept ledger with the same `decided_by` (0: none) at the
 * latest point from event `floor` (at least 1) to `upto`, held as history_cache_get's are, its
 * point in *at; NULL when none. A copy of it with the events after *at applied is the ledger at
 * `upto`, for less than restoring a snapshot at `floor` or before (the caller passes the newest
 * one at or below `upto` that could serve the read, or 0) and applying more events, or replaying
 * the log from its first event.
 */
const ledger *history_cache_base(history_cache *c, int32_t decided_by, uint64_t floor,
                                 uint64_t upto, uint64_t *at);

/* Frees the kept ledgers that no read holds and none has used for `idle_ms` before `now_ms`
 * (monotonic milliseconds, as history_now_ms gives). */
void history_cache_trim(history_cache *c, uint64_t now_ms);
uint64_t history_now_ms(void);

/* Counts a ledger built from a snapshot, for history_stats. */
void history_cache_note_snapshot(history_cache *c);
void history_cache_stats(history_cache *c, history_stats *out);

#endif
