/*
 * Replay: rebuilds a ledger from the log, on two threads. One walks the store, checks that
 * each event is the next link of the chain (its seq, its prev, and its hash recomputed from its
 * bytes, as `verify` does) and decodes it; the caller's thread applies the decoded events in
 * batches as they come. A log that was changed anywhere up to `upto` does not replay. Used at
 * start-up and for `balances` as of an earlier event.
 */
#ifndef BUDGET_REPLAY_H
#define BUDGET_REPLAY_H

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
} replay_result;

/*
 * Applies events 1..upto (UINT64_MAX: all) of `st` to `l`, which should be empty. Returns 0,
 * BUDGET_EINTERNAL when an event is missing or out of order, breaks the chain (prev or hash),
 * does not decode or breaks a rule (the ledger then holds the events before it; `out->bad_seq`
 * is its seq and `out->why` says why), or BUDGET_EUNAVAILABLE when the store cannot be read
 * or a thread cannot be started.
 */
int replay_log(store *st, ledger *l, uint64_t upto, replay_result *out);

#endif
