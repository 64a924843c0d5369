/*
 * The event store: an append-only log of encoded events in LMDB, keyed by seq. Only this
 * module includes lmdb.h.
 *
 * Layout in the LMDB environment at DIR (data.mdb, lock.mdb):
 *   "events": key = seq as 8 bytes big-endian (so keys sort by seq), value = encoded event
 *   "meta":   key "format" = "budgetd-2"
 * Seqs are gapless from 1. Nothing is ever overwritten or deleted. A store of format 1
 * ("budgetd-1") also has "ids": key = an event's id, value = its seq. It is no longer written
 * or read, and the store is marked "budgetd-2" the first time it is opened to write.
 */
#ifndef BUDGET_STORE_H
#define BUDGET_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/protocol.h"
#include "wal.h"

/* The file in the data folder that a running budgetd holds locked (a POSIX write lock over
 * the whole file) for its whole life; it holds that daemon's pid as text. Only budgetd
 * (main.c) takes the lock; offline readers only look whether it is held. */
#define STORE_DAEMON_LOCK_FILE "budgetd.lock"

typedef struct store store;
typedef struct store_reader store_reader;

/* A view of stored bytes: valid until the store_reader it came from ends. */
typedef struct {
    const uint8_t *data;
    size_t size;
} store_val;

/* Where a test makes a storage operation fail (the seam of the fault-injection tests). */
typedef enum {
    STORE_FAULT_PUT = 1, /* an mdb_put inside the batch */
    STORE_FAULT_COMMIT,  /* mdb_txn_commit, failing before anything is written */
    /* The batch's record was written to the write-ahead file but its sync failed: the outcome
     * is unknown. (Without the file, read-only stores aside: LMDB's own sync.) */
    STORE_FAULT_SYNC,
    /* The commit wrote its data pages but writing its meta page failed: LMDB marks the
     * environment fatal (every later transaction fails with MDB_PANIC) and whether the batch
     * is on disk is unknown. The fault strikes after a commit that did write everything, the
     * case in which answering "nothing was written" would be false. */
    STORE_FAULT_META,
    /* Writing a batch's record into the write-ahead file fails: nothing is synced, the batch
     * is not written. */
    STORE_FAULT_WAL_WRITE,
    /* The background sync of LMDB's data file (before a checkpoint) fails: the store turns
     * broken, and the next append reports an unknown outcome. Strikes on the syncer thread. */
    STORE_FAULT_LMDB_SYNC,
} store_fault_point;

/* Returns 0 to go on, or a positive errno / MDB_MAP_FULL to fail the operation with. */
typedef int (*store_fault_fn)(void *ctx, store_fault_point point);

typedef struct {
    size_t map_bytes_initial; /* 0: 64 MiB. The map doubles when it fills. */
    size_t map_bytes_max;     /* 0: 1 TiB */
    store_fault_fn fault;     /* NULL in production */
    void *fault_ctx;
    /* Open an existing store for reading only (an audit of a backup): DIR is not created,
     * nothing is written, store_append fails. */
    bool read_only;
    /* Bytes of records the write-ahead file DATA/wal holds when it is created; 0:
     * STORE_WAL_AREA_BYTES_DEFAULT. An existing file keeps its size. */
    uint64_t wal_area_bytes;
} store_options;

/* Enough for the largest batch (BUDGET_BATCH_EVENTS_MAX events of EVENT_BYTES_MAX bytes and
 * their ids; commit.c checks it), so that every batch fits once LMDB has caught up. */
#define STORE_WAL_AREA_BYTES_DEFAULT ((uint64_t)80 << 20)

/*
 * Opens (creating DIR and the environment when missing) the store at `dir`. Returns 0, or
 * BUDGET_EUNAVAILABLE with `why` set (permissions, not an LMDB environment, another format).
 *
 * A writable store keeps the write-ahead file DATA/wal (daemon/wal.h): each batch is synced
 * there once, LMDB takes it without a sync and is synced in the background. Opening after an
 * unclean stop puts LMDB back to the last transaction known to be on disk and brings in the
 * file's records after it, so that every batch store_append returned 0 for is there. A
 * read-only open of a folder left so while no budgetd holds it is refused (LMDB's file may
 * lack what the write-ahead file holds); starting budgetd on it once recovers it.
 */
int store_open(store **out, const char *dir, const store_options *opt, char *why, size_t why_size);
/* Closes the environment: LMDB is synced and the write-ahead file marked clean, unless the
 * store is broken. No reader may be active. */
void store_close(store *s);

/* The last seq (0 when empty) and its hash (zeros when empty). */
int store_head(store *s, uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES]);

/* One event to append: its seq, its encoded bytes, and the id it creates (indexed). */
typedef wal_item store_item;

/*
 * Appends `n` events in one write transaction, durable before it returns (one sync of the
 * write-ahead file). The seqs must follow the head
 * without a gap and each item must have an id (else BUDGET_EINTERNAL, nothing written); that
 * no id is taken twice is the ledger's to check, the store keeps no index of them. On
 * MDB_MAP_FULL the map is doubled (waiting for active readers to end) and the batch retried.
 * Returns 0 when every event is durable; BUDGET_EUNAVAILABLE when the batch was not written
 * (disk full, I/O error, map at its maximum): the caller fails exactly this batch and may go
 * on; or BUDGET_EINTERNAL with *sync_failed = true when the commit's outcome is unknown (its
 * sync failed, or writing its meta page did and LMDB marked the environment fatal): whether
 * the batch is on disk is unknown, and the caller must stop writing and restart from the disk.
 * Called from one thread at a time (the writer thread).
 */
int store_append(store *s, const store_item *items, size_t n, bool *sync_failed);

/* A read transaction: a consistent snapshot of the log. Any thread; many at once. It holds at
 * least every batch whose store_append returned before it began; two readers begun in turn
 * may see heads out of that order (LMDB copies the meta page after choosing it; see
 * test_store's the_map_grows_while_readers_come_and_go), so no reader's head is a floor for
 * the next one's. */
int store_reader_begin(store *s, store_reader **out);
void store_reader_end(store_reader *r);
/* The head as this reader sees it. */
uint64_t store_reader_head(store_reader *r);
/* The event at `seq`: 0, or BUDGET_ENOT_FOUND. */
int store_reader_get(store_reader *r, uint64_t seq, store_val *out);

/*
 * Calls `fn` for each event with seq > after, in seq order, until it returns nonzero (which
 * store_reader_scan then returns) or the log ends (0). Values are valid during the call.
 */
typedef int (*store_scan_fn)(void *ctx, uint64_t seq, store_val event);
int store_reader_scan(store_reader *r, uint64_t after, store_scan_fn fn, void *ctx);

typedef struct {
    uint64_t map_bytes;      /* current map size */
    uint64_t map_used_bytes; /* pages in use * page size */
    uint64_t map_growths;    /* times the map was grown since open */
    uint64_t events;
    bool growth_waiting; /* a growth waits for live readers; new readers wait for it */
    /* Every commit is synced before store_append returns: through the write-ahead file, or
     * by LMDB itself (none of MDB_NOSYNC, MDB_NOMETASYNC, MDB_MAPASYNC). Always true for a
     * writable store; a test holds it so, since an acknowledged event must survive a power
     * failure. */
    bool commits_synced;
    bool wal;                      /* the write-ahead file is in use */
    uint64_t wal_checkpoints;      /* LMDB synced behind it and a checkpoint written, since open */
    uint64_t wal_bytes_live;       /* records not yet behind a checkpoint */
    uint64_t wal_waits;            /* appends that waited for a checkpoint to free space */
    uint64_t wal_records_replayed; /* brought into LMDB at open */
    uint64_t wal_events_replayed;  /* the events of those records */
    bool wal_unclean_start;        /* opened after an unclean stop (crash, kill, power loss) */
} store_stats;
void store_get_stats(store *s, store_stats *out);

/*
 * Drops this process's mapping of the pages that hold the values from `lo` to `hi` (views
 * read through `r`, which must still be live): they stay in the kernel's page cache. For a
 * long read done in short scans (a subscription's catch-up pages), which store_reader_scan
 * does not release on its own. The views stay valid; reading them faults the pages in again.
 */
void store_reader_release(store_reader *r, const void *lo, const void *hi);

/* The folder the store was opened at (owned by the store), or NULL. */
const char *store_folder(store *s);

/*
 * Writes a compacted copy of the store's data file to `fd` (a pipe, a socket or a file open
 * for writing), front to back: LMDB's mdb_env_copyfd2 with MDB_CP_COMPACT, from one read
 * snapshot, free pages left out. What is written is a whole data.mdb. Appends go on
 * meanwhile; a map growth waits until the copy ends, so the reader of a pipe must keep up.
 * Any thread that holds no reader; blocks while `fd` does; O(size of the store). Returns 0,
 * or BUDGET_EUNAVAILABLE with `why` set (what was written is then partial).
 */
int store_backup_fd(store *s, int fd, char *why, size_t why_size);

#endif
