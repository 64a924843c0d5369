/*
 * Snapshots: the ledger's state at a position of the chain, saved in the data folder
 * (DATA/snapshots/<seq>.snap) so that start-up and `balances as_of` apply only the events after
 * it instead of the whole log. A snapshot is derived data, never trusted: it records the seq
 * and hash of the event it was taken after and a Poly1305 tag (snapmac.h) over all of
 * its bytes, under a key of its own: the BLAKE2b of its header (which holds random bytes drawn
 * for that file) keyed with a random key kept in DATA/snapshots/key (0600). A file that is damaged,
 * truncated, from another data folder or build, or edited, or whose seq and hash are not the
 * log's, is ignored and the log replayed instead. docs/performance.md, "Snapshots".
 *
 * No libuv: the daemon calls snapshot_rebuild and snapshot_write on a thread of their own, start-up
 * and as_of call snapshot_restore on theirs. A `snapshots` is read-only once open, so any thread
 * may use it.
 */
#ifndef BUDGET_SNAPSHOT_H
#define BUDGET_SNAPSHOT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "budget/protocol.h"
#include "ledger.h"
#include "replay.h"
#include "store.h"

#define SNAPSHOT_KEY_BYTES 32
#define SNAPSHOT_MAC_BYTES 16
#define SNAPSHOT_NONCE_BYTES 16
/* The header: magic (8), seq (8), hash (32), bytes of the body (8), nonce (16). */
#define SNAPSHOT_HEADER_BYTES 72
/* Snapshots looked at by snapshot_restore, newest first: the folder holds --snapshots-keep. */
#define SNAPSHOT_LIST_MAX 1000
/* The defaults of --snapshot-every and --snapshots-keep. */
#define SNAPSHOT_EVERY_DEFAULT 100000u
#define SNAPSHOT_KEEP_DEFAULT 10u
#define SNAPSHOT_KEEP_MAX 1000u

typedef struct {
    char dir[PATH_MAX]; /* DATA/snapshots */
    uint8_t key[SNAPSHOT_KEY_BYTES];
    uint32_t keep; /* snapshot_write removes all but the newest `keep` (>= 1) */
} snapshots;

/*
 * Opens (making it, 0700, when missing) the folder of `data`'s snapshots, and its key (made
 * from random bytes, 0600, synced, on first use). Removes the temporary files a write that was
 * cut short left. 0, or BUDGET_EUNAVAILABLE with `why` set: the daemon then serves without
 * snapshots.
 */
int snapshots_open(snapshots *s, const char *data, uint32_t keep, char *why, size_t why_size);

/*
 * Saves `l`, whose last event is ledger_last_seq(l) with hash `hash`, as <seq>.snap: written to
 * a temporary file, synced, renamed, the folder synced; then removes all but the newest
 * `s->keep` snapshots. `l` is only read, and must not change meanwhile. 0, or
 * BUDGET_EUNAVAILABLE with `why` set (no snapshot is left half written).
 */
int snapshot_write(const snapshots *s, const ledger *l, const uint8_t hash[BUDGET_HASH_BYTES],
                   char *why, size_t why_size);

/*
 * Reads a snapshot of `size` bytes from `f` with `key`: the ledger it holds, and the seq and
 * hash it was taken at. The keyed hash is checked over every byte before the ledger is used
 * (ledger_load_finish); every count is bounded by `size`. NULL with `why` set when the bytes
 * are not an authentic snapshot (or out of memory).
 */
ledger *snapshot_read_stream(FILE *f, uint64_t size, const uint8_t key[SNAPSHOT_KEY_BYTES],
                             uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES], char *why,
                             size_t why_size);

/* The seqs of the snapshots in the folder, newest first, at most `max`: their number. */
size_t snapshot_list(const snapshots *s, uint64_t *seqs, size_t max);

/*
 * The state of the newest snapshot at or below `upto` that is authentic and whose seq and hash
 * are those of the log in `st` (the stored hash of event seq): its ledger, *seq and *hash. NULL
 * when there is none (then `why`, when not empty, says why the last one looked at was
 * ignored). The chain itself is not checked here: start-up checks it whole.
 */
ledger *snapshot_restore(const snapshots *s, store *st, uint64_t upto, uint64_t *seq,
                         uint8_t hash[BUDGET_HASH_BYTES], char *why, size_t why_size);

/*
 * The ledger as of event `upto`, or, with `decided_by` not 0, the view of what had been decided
 * by that day at that event: from the newest snapshot at or below `upto` that can serve it
 * (snapshot_restore, snapshot_restore_decided) with the events after it applied, their links
 * checked from its hash; or, when there is none (or `s` is NULL) or the events after it do not
 * apply, the log replayed from its first event. The snapshot's seq in *from (0: the first
 * event). 0 with the ledger in *out and the replay's end in *res; else a budget error code with
 * res->why set.
 */
int snapshot_state(const snapshots *s, store *st, uint64_t upto, int32_t decided_by, ledger **out,
                   uint64_t *from, replay_result *res);

/*
 * The ledger as of event `upto` made again from the log, as a snapshot of it would hold it: the
 * newest snapshot at or below `upto` with the events after it applied, or the log replayed from
 * its first event (snapshot_state, no decision day), ending exactly at `upto`. Its seq in *from (0:
 * the first event), the hash of event `upto` in `hash`. NULL with `why` set when the log cannot
 * give it. Reads the store only, so any thread may call it while the daemon appends: the daemon
 * writes its snapshots from it rather than from a copy of the ledger it serves.
 */
ledger *snapshot_rebuild(const snapshots *s, store *st, uint64_t upto, uint64_t *from,
                         uint8_t hash[BUDGET_HASH_BYTES], char *why, size_t why_size);

/*
 * The seq of the newest snapshot at or below `upto` by its name, and, when `decided_by` is not 0,
 * whose first bytes say a view by that day may start from it (snapshot_restore_decided); 0 when
 * none, or `s` is NULL. Restoring it may still fail.
 */
uint64_t snapshot_newest(const snapshots *s, uint64_t upto, int32_t decided_by);

/*
 * As snapshot_restore, for a view of what was decided by `decided_by` (YYYYMMDD, not 0): the
 * newest snapshot at or below `upto` whose state is that view at its point (ledger_decided_base),
 * so that the view is the events after it applied by ledger_apply_decided. A snapshot whose first
 * bytes say it is not is passed over unread; the state of one read is asked again. NULL when there
 * is none.
 */
ledger *snapshot_restore_decided(const snapshots *s, store *st, uint64_t upto, int32_t decided_by,
                                 uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES], char *why,
                                 size_t why_size);

#endif
