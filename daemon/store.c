/*
 * The event store (store.h): budgetd's append-only log of encoded events in LMDB.
 *
 * Threads. One writer thread appends; any thread may hold readers. When the map fills, LMDB
 * must move it (munmap and mmap again), which is only safe while no read transaction of this
 * process is live, because readers hold pointers into the map. The "gate" below counts live
 * readers; a growth closes it, waits for the count to reach zero, moves the map, and opens it
 * again. While a growth waits, new readers wait too, so a steady stream of short readers cannot
 * starve it, except on a thread that already holds a reader: that thread would wait for the
 * growth while the growth waits for its reader (the trap of a writer-preferring rwlock taken
 * recursively). Such a reader goes in and the growth waits for it to end.
 *
 * The thread that appends must hold no reader, or a growth would wait for it forever.
 *
 * Durability. Each batch is first written to the write-ahead file (wal.h) and synced there,
 * once; then LMDB commits it with MDB_NOSYNC, so a commit costs one sync, not LMDB's two (data
 * pages, then the meta page). A thread of the store's own (the syncer) syncs LMDB behind the
 * writer: given the writer's last transaction T, it syncs the data file, which puts every page
 * of T on disk, and then writes a checkpoint into the write-ahead file: T's id, the log's head
 * at T, T's meta page as it was written, and where the records after T start. Records before
 * that are no longer needed and their space is written again.
 *
 * After a power loss the data file may hold any mix of the pages written since its last sync,
 * meta pages included, so LMDB's own choice of meta page cannot be trusted. Opening after an
 * unclean stop therefore writes the checkpoint's meta page over both of LMDB's, which puts
 * LMDB back at T, and brings in the records after it. That T is whole on disk needs one more
 * thing: its pages must not have been reused since. LMDB reuses a page only once no reader
 * can see a transaction that holds it, so the syncer keeps a read transaction open on T (the
 * "pin") until the next checkpoint is on disk.
 *
 * A commit that fails before its meta page is written leaves the previous one in charge; its
 * record in the write-ahead file is spoiled and synced (wal_retract), so the batch is simply
 * not there. If writing the meta page itself fails, LMDB marks the environment fatal (MDB_PANIC
 * on the next transaction): the store checks for the mark as soon as a commit fails
 * (env_fatal) and then reports an unknown outcome for that very batch, as for a failed sync,
 * and the daemon restarts from the disk.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "fileio.h"
#include "store.h"
#include "wal.h"

_Static_assert(sizeof(size_t) >= 8, "the store maps up to a terabyte: it needs 64-bit sizes");

/* Format 2 writes no "ids" database; a store of format 1 (which did) is marked 2 when it is
 * first opened to write, so that a build that still reads "ids" refuses it. */
#define STORE_FORMAT "budgetd-2"
#define STORE_FORMAT_1 "budgetd-1"
#define STORE_FORMAT_KEY "format"
/* Keys of "events" (and values of a format 1 store's "ids"): a seq as 8 bytes big-endian. */
#define STORE_SEQ_BYTES 8
#define STORE_MAP_BYTES_INITIAL_DEFAULT ((size_t)64 << 20)
#define STORE_MAP_BYTES_MAX_DEFAULT ((size_t)1 << 40)
/* Named databases: events, ids, meta. */
#define STORE_DATABASES_MAX 4
/* Reader slots in lock.mdb: BUDGET_READ_JOBS_MAX worker reads, the loop thread, headroom. */
#define STORE_READERS_MAX 256
/* Tries of one batch. Every retry follows a growth, and growths double up to map_bytes_max,
 * so a map that starts at one page reaches any 64-bit maximum well within this. */
#define STORE_APPEND_TRIES_MAX 64
/* Shown of a foreign format mark in an error message. */
#define STORE_FORMAT_SHOWN_MAX 32
/* A scan unmaps the pages it has read after every this many events (release_map_pages). */
#define STORE_SCAN_RELEASE_EVENTS 65536
/* Bytes below the next event that a scan asks the CPU for ahead of use (prefetch_from). */
#define STORE_SCAN_PREFETCH_BYTES 1024
/*
 * When the writer asks the syncer for a checkpoint: once this share of the write-ahead file
 * holds records (1/4), once STORE_CHECKPOINT_COMMITS commits were made since the last one was
 * asked for, or once LMDB's data file has grown by STORE_CHECKPOINT_GROWTH_BYTES since then.
 * While a checkpoint's pin holds, LMDB reuses no page freed after it, and what a checkpoint
 * frees becomes reusable only at the next one, so the data file carries about two intervals'
 * worth of pages besides the log: a small commit writes about eight pages, and without the
 * last two bounds a few thousand of them would grow the file, and what a checkpoint must sync,
 * by tens of megabytes. The syncer does one checkpoint at a time; asking again while one waits
 * only replaces it with a newer one.
 */
#define STORE_WAL_CHECKPOINT_SHARE 4
#define STORE_CHECKPOINT_COMMITS 256
/* How often the syncer starts the writeback of LMDB's dirty pages between checkpoints. */
#define STORE_WRITEBACK_EVERY_NS 5000000L
#define STORE_CHECKPOINT_GROWTH_BYTES ((uint64_t)4 << 20)

/*
 * Where a meta page keeps its fields, in LMDB 0.9's file format on a 64-bit machine: the page
 * header (the page's number first, 8 bytes; 16 bytes in all), then MDB_meta: mm_magic, ...,
 * mm_txnid last. The store checks these on every open against a transaction it knows
 * (meta_read), so a build of LMDB that lays them out otherwise is refused, never misread.
 */
#define LMDB_PAGE_PGNO_AT 0
#define LMDB_META_MAGIC_AT 16
#define LMDB_META_MAGIC 0xBEEFC0DEu
#define LMDB_META_TXNID_AT 144

struct store {
    MDB_env *env;
    MDB_dbi events;
    MDB_dbi ids; /* a format 1 store's index of ids, no longer written; valid when has_ids */
    bool has_ids;
    size_t map_bytes_max;
    size_t lmdb_page_bytes;
    store_fault_fn fault;
    void *fault_ctx;
    /* Writer thread only: set when a commit's outcome is unknown; every later append fails. */
    bool broken;
    /* Writer thread only: STORE_FAULT_META struck, and the store acts as LMDB does once a
     * meta page write has failed (fault injection only). */
    bool fatal_injected;
    bool read_only; /* store_options.read_only: set once at open */

    pthread_mutex_t lock;        /* guards every field below */
    pthread_cond_t readers_gone; /* readers_live fell to 0 while a growth waits */
    pthread_cond_t gate_opened;  /* a growth finished */
    unsigned readers_live;       /* readers and stats calls inside the gate */
    bool growth_waiting;         /* new readers wait, unless their thread already holds one */
    bool growing;                /* the map is moving: every reader waits */
    bool unmapped;               /* moving the map failed: no reader may enter again */
    uint64_t head_seq;
    uint8_t head_hash[BUDGET_HASH_BYTES];
    size_t map_bytes;
    uint64_t map_growths;
    uint64_t map_used_bytes; /* as of the last commit; read by store_get_stats */

    /* The write-ahead file; NULL for a read-only store. */
    wal *wal;
    /* Writer thread only. */
    uint64_t wal_lsn;    /* where the next record goes */
    uint64_t last_txnid; /* the last committed LMDB transaction, its head and its meta page */
    uint64_t last_seq;
    uint8_t last_meta[WAL_META_BYTES];
    /* The syncer, and what it shares with the writer under ck_lock. */
    pthread_t syncer;
    bool syncer_started;
    pthread_mutex_t ck_lock;
    pthread_cond_t ck_wake; /* a checkpoint was asked for, or the syncer should stop */
    pthread_cond_t ck_done; /* a checkpoint is on disk, or the syncer failed */
    bool ck_stop;
    bool ck_queued;         /* ck_next waits for the syncer */
    wal_checkpoint ck_next; /* asked for, with its pin */
    MDB_txn *ck_next_pin;
    MDB_txn *ck_pin;            /* the read transaction on the last checkpoint's transaction */
    uint64_t ck_lsn;            /* records from here on are not yet behind a checkpoint */
    uint64_t ck_asked_lsn;      /* the newest checkpoint asked for covers records below this */
    uint64_t wal_lsn_shown;     /* wal_lsn as of the last commit, for store_get_stats */
    uint64_t ck_asked_pgno;     /* writer: LMDB's last page when the last checkpoint was asked */
    uint64_t commits_since_ask; /* writer: commits since then */
    uint64_t commits_written;   /* under ck_lock: commits so far */
    uint64_t commits_handed;    /* syncer: commits_written when it last started writeback */
    bool syncer_idle;           /* under ck_lock: the syncer waits for the next commit */
    int ck_error;               /* the syncer failed (an errno): the store is broken */
    uint64_t wal_checkpoints;
    uint64_t wal_waits;
    uint64_t wal_records_replayed;
    uint64_t wal_events_replayed;
    bool wal_unclean; /* opened after an unclean stop */
};

struct store_reader {
    store *s;
    MDB_txn *txn;
    uint64_t head;
    pthread_t thread; /* a reader ends on the thread that began it */
};

/*
 * Readers (and stats calls in progress) this thread holds, on any store. Counting across
 * stores only errs one way: a thread holding a reader of one store may pass a growth that
 * waits on another, which delays that growth but never blocks it.
 */
static _Thread_local unsigned store_thread_readers;

static void seq_encode(uint8_t out[STORE_SEQ_BYTES], uint64_t seq)
{
    for (int i = STORE_SEQ_BYTES - 1; i >= 0; i--) {
        out[i] = (uint8_t)seq;
        seq >>= 8;
    }
}

static uint64_t seq_decode(const uint8_t in[STORE_SEQ_BYTES])
{
    uint64_t seq = 0;
    for (int i = 0; i < STORE_SEQ_BYTES; i++)
        seq = seq << 8 | in[i];
    return seq;
}

static size_t round_up(size_t bytes, size_t unit)
{
    return (bytes + unit - 1) / unit * unit;
}

/* ---- the gate between readers and growth ---- */

/* Returns 0, or BUDGET_EUNAVAILABLE when the map is gone (see grow_map). */
static int gate_enter(store *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->growing || (s->growth_waiting && store_thread_readers == 0))
        pthread_cond_wait(&s->gate_opened, &s->lock);
    if (s->unmapped) {
        pthread_mutex_unlock(&s->lock);
        return BUDGET_EUNAVAILABLE;
    }
    s->readers_live++;
    pthread_mutex_unlock(&s->lock);
    store_thread_readers++;
    return 0;
}

static void gate_leave(store *s)
{
    assert(store_thread_readers > 0);
    store_thread_readers--;
    pthread_mutex_lock(&s->lock);
    assert(s->readers_live > 0);
    s->readers_live--;
    if (s->readers_live == 0 && s->growth_waiting)
        pthread_cond_signal(&s->readers_gone);
    pthread_mutex_unlock(&s->lock);
}

/* Holds back new readers and waits until every live one has ended. */
static void gate_close(store *s)
{
    pthread_mutex_lock(&s->lock);
    assert(!s->growth_waiting && !s->growing);
    s->growth_waiting = true;
    while (s->readers_live > 0)
        pthread_cond_wait(&s->readers_gone, &s->lock);
    s->growing = true;
    pthread_mutex_unlock(&s->lock);
}

static void gate_open(store *s, size_t map_bytes, bool unmapped)
{
    pthread_mutex_lock(&s->lock);
    if (unmapped)
        s->unmapped = true;
    else if (map_bytes != s->map_bytes)
        s->map_growths++;
    s->map_bytes = map_bytes;
    s->growing = false;
    s->growth_waiting = false;
    pthread_cond_broadcast(&s->gate_opened);
    pthread_mutex_unlock(&s->lock);
}

/* ---- opening ---- */

static int open_failed(char *why, size_t why_size, const char *dir, const char *what, int rc)
{
    if (why_size > 0)
        snprintf(why, why_size, "store at %s: %s: %s", dir, what, mdb_strerror(rc));
    return BUDGET_EUNAVAILABLE;
}

static int open_refused(char *why, size_t why_size, const char *dir, const char *what)
{
    if (why_size > 0)
        snprintf(why, why_size, "store at %s: %s", dir, what);
    return BUDGET_EUNAVAILABLE;
}

/* Creates DIR (one level) when it is missing. */
static int make_dir(const char *dir, char *why, size_t why_size)
{
    if (mkdir(dir, 0750) == 0 || errno == EEXIST)
        return 0;
    return open_failed(why, why_size, dir, "cannot create the directory", errno);
}

/* True when DIR holds no data file yet, or an empty one (LMDB initializes both alike). */
static bool data_file_is_new(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    int len = snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (len < 0 || (size_t)len >= sizeof path)
        return false;
    return stat(path, &st) != 0 || st.st_size == 0;
}

/*
 * A new environment starts at map_initial. An existing one keeps the map size stored in it
 * (the size it had grown to), raised to map_initial when that is larger.
 */
static int open_env(store *s, const char *dir, size_t map_initial, char *why, size_t why_size)
{
    bool fresh = !s->read_only && data_file_is_new(dir);
    int rc = mdb_env_create(&s->env);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot create an LMDB environment", rc);
    rc = mdb_env_set_maxdbs(s->env, STORE_DATABASES_MAX);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, STORE_READERS_MAX);
    if (rc == 0 && fresh)
        rc = mdb_env_set_mapsize(s->env, map_initial);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS | (s->read_only ? MDB_RDONLY : MDB_NOSYNC), 0640);
    if (rc != 0)
        goto failed;

    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (!s->read_only && info.me_mapsize < map_initial) {
        rc = mdb_env_set_mapsize(s->env, map_initial);
        if (rc != 0)
            goto failed;
        mdb_env_info(s->env, &info);
    }
    MDB_stat st;
    mdb_env_stat(s->env, &st);
    s->map_bytes = info.me_mapsize;
    s->lmdb_page_bytes = st.ms_psize;
    s->map_used_bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    return 0;

failed:
    mdb_env_close(s->env);
    s->env = NULL;
    return open_failed(why, why_size, dir, "cannot open the LMDB environment", rc);
}

/* A fresh environment: it must hold nothing else, then gets the three databases and the mark. */
static int create_layout(store *s, MDB_txn *txn, const char *dir, char *why, size_t why_size)
{
    MDB_dbi main_dbi, meta_dbi;
    MDB_stat st;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0)
        rc = mdb_stat(txn, main_dbi, &st);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot read the LMDB environment", rc);
    if (st.ms_entries != 0)
        return open_refused(why, why_size, dir,
                            "an LMDB environment that is not a budgetd store (no format mark)");

    rc = mdb_dbi_open(txn, "events", MDB_CREATE, &s->events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta_dbi);
    if (rc == 0) {
        MDB_val key = {sizeof STORE_FORMAT_KEY - 1, STORE_FORMAT_KEY};
        MDB_val val = {sizeof STORE_FORMAT - 1, STORE_FORMAT};
        rc = mdb_put(txn, meta_dbi, &key, &val, MDB_NOOVERWRITE);
    }
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot create the store's databases", rc);
    return 0;
}

/* Copies a foreign format mark into `out` for a message, printable ASCII only. */
static void format_shown(const MDB_val *val, char out[STORE_FORMAT_SHOWN_MAX + 1])
{
    size_t n = val->mv_size < STORE_FORMAT_SHOWN_MAX ? val->mv_size : STORE_FORMAT_SHOWN_MAX;
    const uint8_t *bytes = val->mv_data;
    for (size_t i = 0; i < n; i++)
        out[i] = bytes[i] >= 0x20 && bytes[i] < 0x7f && bytes[i] != '"' ? (char)bytes[i] : '?';
    out[n] = '\0';
}

/* An existing store: the mark must be ours and the events present. A store of format 1 is
 * marked 2 when opened to write (in the caller's transaction). */
static int check_layout(store *s, MDB_txn *txn, MDB_dbi meta_dbi, const char *dir, char *why,
                        size_t why_size)
{
    MDB_val key = {sizeof STORE_FORMAT_KEY - 1, STORE_FORMAT_KEY};
    MDB_val val;
    int rc = mdb_get(txn, meta_dbi, &key, &val);
    if (rc == MDB_NOTFOUND)
        return open_refused(why, why_size, dir, "not a budgetd store (no format mark)");
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot read the format mark", rc);
    bool format_1 = val.mv_size == sizeof STORE_FORMAT_1 - 1 &&
                    memcmp(val.mv_data, STORE_FORMAT_1, val.mv_size) == 0;
    if (!format_1 && (val.mv_size != sizeof STORE_FORMAT - 1 ||
                      memcmp(val.mv_data, STORE_FORMAT, val.mv_size))) {
        char shown[STORE_FORMAT_SHOWN_MAX + 1];
        char what[128];
        format_shown(&val, shown);
        snprintf(what, sizeof what, "format \"%s\" is not %s", shown, STORE_FORMAT);
        return open_refused(why, why_size, dir, what);
    }
    rc = mdb_dbi_open(txn, "events", 0, &s->events);
    if (rc != 0)
        return open_failed(why, why_size, dir, "damaged: a database is missing", rc);
    rc = mdb_dbi_open(txn, "ids", 0, &s->ids);
    s->has_ids = rc == 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return open_failed(why, why_size, dir, "cannot open the index of ids", rc);
    if (format_1 && !s->read_only) {
        MDB_val mark = {sizeof STORE_FORMAT - 1, STORE_FORMAT};
        rc = mdb_put(txn, meta_dbi, &key, &mark, 0);
        if (rc != 0)
            return open_failed(why, why_size, dir, "cannot mark the store's format", rc);
    }
    return 0;
}

/*
 * The last event in `txn`'s view: its seq (0 when the log is empty) and, when `hash` is not
 * NULL, its hash. MDB_CORRUPTED when the last entry is not one the store writes.
 */
static int read_last(store *s, MDB_txn *txn, uint64_t *seq, uint8_t *hash)
{
    MDB_cursor *cursor;
    MDB_val key, val;
    int rc = mdb_cursor_open(txn, s->events, &cursor);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
    if (rc == MDB_NOTFOUND) {
        *seq = 0;
        if (hash != NULL)
            memset(hash, 0, BUDGET_HASH_BYTES);
        rc = 0;
    } else if (rc == 0) {
        if (key.mv_size != STORE_SEQ_BYTES || val.mv_size < BUDGET_HASH_BYTES) {
            rc = MDB_CORRUPTED;
        } else {
            *seq = seq_decode(key.mv_data);
            if (hash != NULL)
                memcpy(hash, (const uint8_t *)val.mv_data + val.mv_size - BUDGET_HASH_BYTES,
                       BUDGET_HASH_BYTES);
        }
    }
    mdb_cursor_close(cursor);
    return rc;
}

/* Loads the head, and checks that the log is gapless from 1 (as many entries as the seq). */
static int load_head(store *s, MDB_txn *txn, const char *dir, char *why, size_t why_size)
{
    MDB_stat st;
    int rc = read_last(s, txn, &s->head_seq, s->head_hash);
    if (rc == 0)
        rc = mdb_stat(txn, s->events, &st);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot read the last event", rc);
    if (st.ms_entries != s->head_seq) {
        char what[128];
        snprintf(what, sizeof what, "damaged: %zu events but the last seq is %llu", st.ms_entries,
                 (unsigned long long)s->head_seq);
        return open_refused(why, why_size, dir, what);
    }
    return 0;
}

/* Opens (creating when new) the databases in one write transaction, and loads the head. */
static int open_databases(store *s, const char *dir, char *why, size_t why_size)
{
    MDB_txn *txn;
    MDB_dbi meta_dbi;
    int rc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot begin a write transaction", rc);
    rc = mdb_dbi_open(txn, "meta", 0, &meta_dbi);
    if (rc == MDB_NOTFOUND && s->read_only)
        rc = open_refused(why, why_size, dir, "not a budgetd store (no format mark)");
    else if (rc == MDB_NOTFOUND)
        rc = create_layout(s, txn, dir, why, why_size);
    else if (rc == 0)
        rc = check_layout(s, txn, meta_dbi, dir, why, why_size);
    else
        rc = open_failed(why, why_size, dir, "cannot open the meta database", rc);
    if (rc == 0)
        rc = load_head(s, txn, dir, why, why_size);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    /* The commit keeps the database handles (and, for a new store, creates the layout). */
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot commit the store's layout", rc);
    return 0;
}

/* The write-ahead file's part of opening and closing (below, with the appending). */
static int wal_before_env(store *s, const char *dir, uint64_t area, wal_checkpoint *ck, bool *found,
                          char *why, size_t why_size);
static int wal_after_env(store *s, const char *dir, const wal_checkpoint *ck, bool found,
                         uint64_t area, char *why, size_t why_size);
static void wal_finish(store *s);

int store_open(store **out, const char *dir, const store_options *opt, char *why, size_t why_size)
{
    store_options o = opt != NULL ? *opt : (store_options){0};
    size_t os_page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_max = o.map_bytes_max != 0 ? o.map_bytes_max : STORE_MAP_BYTES_MAX_DEFAULT;
    size_t map_initial =
        o.map_bytes_initial != 0 ? o.map_bytes_initial : STORE_MAP_BYTES_INITIAL_DEFAULT;
    uint64_t wal_area = o.wal_area_bytes != 0 ? o.wal_area_bytes : STORE_WAL_AREA_BYTES_DEFAULT;

    *out = NULL;
    if (why_size > 0)
        why[0] = '\0';
    /* Map sizes are whole OS pages; the maximum is at least the initial size. */
    map_initial = round_up(map_initial, os_page_bytes);
    map_max = round_up(map_max, os_page_bytes);
    if (map_max < map_initial)
        map_max = map_initial;

    store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return open_failed(why, why_size, dir, "cannot allocate the store", ENOMEM);
    s->map_bytes_max = map_max;
    s->fault = o.fault;
    s->fault_ctx = o.fault_ctx;
    s->read_only = o.read_only;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->readers_gone, NULL);
    pthread_cond_init(&s->gate_opened, NULL);
    pthread_mutex_init(&s->ck_lock, NULL);
    pthread_cond_init(&s->ck_wake, NULL);
    pthread_cond_init(&s->ck_done, NULL);

    wal_checkpoint ck;
    bool found = false;
    bool env_open = false;
    int rc = o.read_only ? 0 : make_dir(dir, why, why_size);
    if (rc == 0)
        rc = wal_before_env(s, dir, wal_area, &ck, &found, why, why_size);
    if (rc == 0)
        rc = open_env(s, dir, map_initial, why, why_size);
    if (rc == 0) {
        env_open = true;
        rc = open_databases(s, dir, why, why_size);
    }
    if (rc == 0 && !s->read_only)
        rc = wal_after_env(s, dir, &ck, found, wal_area, why, why_size);
    if (rc != 0) {
        wal_finish(s);
        if (env_open)
            mdb_env_close(s->env);
        wal_close(s->wal);
        pthread_cond_destroy(&s->ck_done);
        pthread_cond_destroy(&s->ck_wake);
        pthread_mutex_destroy(&s->ck_lock);
        pthread_cond_destroy(&s->gate_opened);
        pthread_cond_destroy(&s->readers_gone);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (s == NULL)
        return;
    assert(s->readers_live == 0);
    wal_finish(s);
    mdb_env_close(s->env);
    wal_close(s->wal);
    pthread_cond_destroy(&s->ck_done);
    pthread_cond_destroy(&s->ck_wake);
    pthread_mutex_destroy(&s->ck_lock);
    pthread_cond_destroy(&s->gate_opened);
    pthread_cond_destroy(&s->readers_gone);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int store_head(store *s, uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES])
{
    pthread_mutex_lock(&s->lock);
    *seq = s->head_seq;
    memcpy(hash, s->head_hash, BUDGET_HASH_BYTES);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* ---- appending ---- */

static int fault_at(store *s, store_fault_point point)
{
    return s->fault != NULL ? s->fault(s->fault_ctx, point) : 0;
}

/* The batch follows `head` without a gap, and every item is well formed. */
static int check_batch(const store_item *items, size_t n, uint64_t head)
{
    for (size_t i = 0; i < n; i++) {
        const store_item *item = &items[i];
        if (item->seq != head + 1 + i)
            return BUDGET_EINTERNAL;
        if (item->bytes == NULL || item->size < BUDGET_HASH_BYTES)
            return BUDGET_EINTERNAL;
        if (item->id == NULL || item->id_len == 0 || item->id_len > BUDGET_ID_BYTES_MAX)
            return BUDGET_EINTERNAL;
    }
    return 0;
}

/* Puts one event. An LMDB error (or an injected one) poisons the transaction. Its id is not
 * indexed here: the daemon's ledger finds the event that made an id (commit_find_id). */
static int put_item(store *s, MDB_txn *txn, const store_item *item)
{
    uint8_t seq_key[STORE_SEQ_BYTES];
    seq_encode(seq_key, item->seq);
    MDB_val key = {STORE_SEQ_BYTES, seq_key};
    MDB_val val = {item->size, (void *)item->bytes};
    /* Seqs only grow, so every event goes at the end of "events": no search, full pages. */
    int rc = fault_at(s, STORE_FAULT_PUT);
    if (rc == 0)
        rc = mdb_put(txn, s->events, &key, &val, MDB_APPEND);
    return rc;
}

/* One try of a batch in one write transaction: 0 when committed (its id in *txnid), else the
 * LMDB/errno code. */
static int write_batch(store *s, const store_item *items, size_t n, uint64_t *txnid)
{
    MDB_txn *txn;
    if (s->fatal_injected)
        return MDB_PANIC;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    *txnid = mdb_txn_id(txn);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = put_item(s, txn, &items[i]);
    if (rc == 0)
        rc = fault_at(s, STORE_FAULT_COMMIT);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    /* Frees the transaction whether it succeeds or not. */
    rc = mdb_txn_commit(txn);
    if (rc == 0 && (rc = fault_at(s, STORE_FAULT_META)) != 0)
        s->fatal_injected = true;
    return rc;
}

/*
 * True when LMDB has marked the environment fatal: a commit failed while writing its meta
 * page (mdb_env_write_meta), after its data pages were written and synced. LMDB then tries
 * to put the old meta back through the page cache, but the new one may already be on disk,
 * so the batch may or may not be there after a restart. There is no call that reads the mark,
 * but every transaction begun after it fails with MDB_PANIC; the writer thread holds no other
 * write transaction, so beginning one here cannot wait.
 */
static bool env_fatal(store *s)
{
    if (s->fatal_injected)
        return true;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0)
        mdb_txn_abort(txn);
    return rc == MDB_PANIC;
}

/*
 * Doubles the map, capped at map_bytes_max, once every reader has ended. Returns 0, or
 * BUDGET_EUNAVAILABLE when the map is at its maximum. When LMDB cannot map the larger size
 * (address space exhausted), it has already unmapped the old one and the environment is
 * unusable: the store turns broken (BUDGET_EINTERNAL) and later readers are refused; a
 * restart maps the size stored on disk again.
 */
static int grow_map(store *s)
{
    pthread_mutex_lock(&s->lock);
    size_t now = s->map_bytes;
    pthread_mutex_unlock(&s->lock);
    if (now >= s->map_bytes_max)
        return BUDGET_EUNAVAILABLE;
    size_t next = now > s->map_bytes_max / 2 ? s->map_bytes_max : now * 2;

    /* Waiting for readers on a thread that holds one would never end. */
    assert(store_thread_readers == 0);
    if (store_thread_readers != 0)
        return BUDGET_EINTERNAL;

    gate_close(s);
    MDB_envinfo info = {0};
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc == 0)
        mdb_env_info(s->env, &info);
    else
        s->broken = true;
    gate_open(s, info.me_mapsize, rc != 0);
    return rc == 0 ? 0 : BUDGET_EINTERNAL;
}

/* Writes the batch, growing the map and trying again while it is full. */
static int append_tries(store *s, const store_item *items, size_t n, uint64_t *txnid)
{
    for (int tries = 0; tries < STORE_APPEND_TRIES_MAX; tries++) {
        int rc = write_batch(s, items, n, txnid);
        switch (rc) {
        case 0:
            return 0;
        case MDB_MAP_FULL:
            rc = grow_map(s);
            if (rc != 0)
                return rc;
            continue;
        case MDB_KEYEXIST:
            /* An id that is already taken: the caller's checks and the log disagree. */
            return BUDGET_EINTERNAL;
        case MDB_PANIC:
            /* An earlier commit failed while writing its meta page: nothing is certain. */
            s->broken = true;
            return BUDGET_EINTERNAL;
        default:
            /* ENOSPC, EIO, ENOMEM, ...: the transaction was aborted and nothing is written,
             * unless the meta page's write was what failed: the outcome is then unknown. */
            if (env_fatal(s)) {
                s->broken = true;
                return BUDGET_EINTERNAL;
            }
            return BUDGET_EUNAVAILABLE;
        }
    }
    return BUDGET_EUNAVAILABLE;
}

/* ---- the write-ahead file and its checkpoints ---- */

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/*
 * Reads transaction `txnid`'s meta page (the first WAL_META_BYTES of it) from the data file.
 * Only the writer writes meta pages, and LMDB writes transaction T's into page T % 2, so on the
 * writer's thread after T's commit (or before any writer runs) the page holds T's until T + 2.
 * 0, or EPROTO when the page is not T's meta page in the layout this file knows.
 */
static int meta_read(store *s, uint64_t txnid, uint8_t out[WAL_META_BYTES])
{
    size_t at = (size_t)(txnid & 1) * s->lmdb_page_bytes;
    MDB_envinfo info = {0};
    mdb_env_info(s->env, &info);
    if (info.me_mapaddr != NULL && info.me_mapsize >= at + WAL_META_BYTES) {
        /* The map shows the file as written (one page cache), and only this thread writes a
         * meta page or moves the map: a copy, without a system call. */
        memcpy(out, (const uint8_t *)info.me_mapaddr + at, WAL_META_BYTES);
    } else {
        int fd;
        if (mdb_env_get_fd(s->env, &fd) != 0)
            return EBADF;
        int err = fileio_pread_all(fd, out, WAL_META_BYTES, at);
        if (err != 0)
            return err;
    }
    uint32_t magic;
    memcpy(&magic, out + LMDB_META_MAGIC_AT, sizeof magic);
    if (magic != LMDB_META_MAGIC || load_u64(out + LMDB_META_TXNID_AT) != txnid)
        return EPROTO;
    return 0;
}

/* A checkpoint of the writer's last transaction, records from `lsn` on after it. */
static void checkpoint_of_last(store *s, uint64_t lsn, wal_checkpoint *ck)
{
    memset(ck, 0, sizeof *ck);
    ck->txnid = s->last_txnid;
    ck->seq = s->last_seq;
    ck->lsn = lsn;
    ck->page_bytes = (uint32_t)s->lmdb_page_bytes;
    memcpy(ck->meta, s->last_meta, WAL_META_BYTES);
}

/*
 * Writer thread: asks the syncer for a checkpoint of the last transaction. The pin is begun
 * here, where no write transaction runs, so it sees exactly that transaction. A request still
 * queued is replaced by this newer one.
 */
static void checkpoint_ask(store *s)
{
    MDB_txn *pin;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &pin) != 0)
        return; /* no reader slot now: the next commit asks again */
    if (mdb_txn_id(pin) != s->last_txnid) {
        mdb_txn_abort(pin);
        return;
    }
    MDB_envinfo info = {0};
    mdb_env_info(s->env, &info);
    s->ck_asked_pgno = info.me_last_pgno;
    s->commits_since_ask = 0;
    MDB_txn *replaced = NULL;
    pthread_mutex_lock(&s->ck_lock);
    if (s->ck_queued)
        replaced = s->ck_next_pin;
    checkpoint_of_last(s, s->wal_lsn, &s->ck_next);
    s->ck_next_pin = pin;
    s->ck_queued = true;
    s->ck_asked_lsn = s->wal_lsn;
    pthread_cond_signal(&s->ck_wake);
    pthread_mutex_unlock(&s->ck_lock);
    if (replaced != NULL)
        mdb_txn_abort(replaced);
}

/*
 * The syncer: for each checkpoint asked for, syncs LMDB's data file (every page of the
 * checkpoint's transaction is then on disk), writes the checkpoint, and only then lets go of
 * the previous pin. A failure stops it for good: the writer finds ck_error and the store turns
 * broken, so the daemon restarts and recovers from the last checkpoint that did reach the disk.
 */
static void *syncer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "budgetd-syncer"); /* named for ps, top and the tests */
    int data_fd = -1;
    mdb_env_get_fd(s->env, &data_fd);
    pthread_mutex_lock(&s->ck_lock);
    for (;;) {
        while (!s->ck_queued && !s->ck_stop) {
            /* Nothing committed since the last writeback: sleep until a commit wakes us. */
            if (s->commits_written == s->commits_handed) {
                s->syncer_idle = true;
                pthread_cond_wait(&s->ck_wake, &s->ck_lock);
                s->syncer_idle = false;
                continue;
            }
            /* Between checkpoints, LMDB's pages are handed to the disk a little at a time,
             * so that a checkpoint's sync, and the appends' syncs beside it, find little
             * left to write. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += STORE_WRITEBACK_EVERY_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&s->ck_wake, &s->ck_lock, &until) == ETIMEDOUT &&
                s->commits_written != s->commits_handed && data_fd >= 0) {
                s->commits_handed = s->commits_written;
                pthread_mutex_unlock(&s->ck_lock);
                sync_file_range(data_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
                pthread_mutex_lock(&s->ck_lock);
            }
        }
        if (!s->ck_queued)
            break;
        wal_checkpoint ck = s->ck_next;
        MDB_txn *pin = s->ck_next_pin;
        s->ck_queued = false;
        pthread_mutex_unlock(&s->ck_lock);

        int err = fault_at(s, STORE_FAULT_LMDB_SYNC);
        if (err == 0)
            err = mdb_env_sync(s->env, 1);
        if (err == 0)
            err = wal_checkpoint_write(s->wal, &ck);

        pthread_mutex_lock(&s->ck_lock);
        MDB_txn *old = err == 0 ? s->ck_pin : pin;
        if (err == 0) {
            s->ck_pin = pin;
            s->ck_lsn = ck.lsn;
            s->wal_checkpoints++;
        } else {
            s->ck_error = err;
            s->ck_stop = true;
        }
        pthread_cond_broadcast(&s->ck_done);
        pthread_mutex_unlock(&s->ck_lock);
        if (old != NULL)
            mdb_txn_abort(old);
        pthread_mutex_lock(&s->ck_lock);
        if (err != 0)
            break;
    }
    pthread_mutex_unlock(&s->ck_lock);
    return NULL;
}

/* Where a record of `bytes` goes from `lsn`: moved to the next lap when it does not fit. */
static uint64_t wal_place(const store *s, uint64_t lsn, size_t bytes)
{
    uint64_t area = wal_area_bytes(s->wal);
    uint64_t at = lsn % area;
    return at + bytes > area ? lsn + (area - at) : lsn;
}

/*
 * Writer thread: waits until a record of `bytes` fits without overwriting a record LMDB may
 * still lack on disk, asking for a checkpoint of everything so far when none covers it. 0, or
 * an errno when the syncer has failed.
 */
static int wal_make_room(store *s, size_t bytes)
{
    uint64_t area = wal_area_bytes(s->wal);
    bool waited = false;
    pthread_mutex_lock(&s->ck_lock);
    for (;;) {
        if (s->ck_error != 0) {
            int err = s->ck_error;
            pthread_mutex_unlock(&s->ck_lock);
            return err;
        }
        /* With every record behind a checkpoint, any record fits, wherever it goes. */
        if (s->ck_lsn == s->wal_lsn || wal_place(s, s->wal_lsn, bytes) + bytes <= s->ck_lsn + area)
            break;
        if (!waited) {
            s->wal_waits++;
            waited = true;
        }
        if (s->ck_asked_lsn < s->wal_lsn) {
            pthread_mutex_unlock(&s->ck_lock);
            checkpoint_ask(s);
            pthread_mutex_lock(&s->ck_lock);
            if (s->ck_asked_lsn < s->wal_lsn) {
                /* No pin could be had: nothing will free the space. */
                pthread_mutex_unlock(&s->ck_lock);
                return EAGAIN;
            }
            continue;
        }
        pthread_cond_wait(&s->ck_done, &s->ck_lock);
    }
    pthread_mutex_unlock(&s->ck_lock);
    return 0;
}

/* After a commit: keeps its meta page, and asks for a checkpoint once enough is unsynced. */
static int after_commit(store *s, uint64_t txnid, uint64_t head)
{
    int err = meta_read(s, txnid, s->last_meta);
    if (err != 0)
        return err;
    s->last_txnid = txnid;
    s->last_seq = head;
    uint64_t share = wal_area_bytes(s->wal) / STORE_WAL_CHECKPOINT_SHARE;
    MDB_envinfo info = {0};
    mdb_env_info(s->env, &info);
    bool grown = (uint64_t)info.me_last_pgno > s->ck_asked_pgno &&
                 ((uint64_t)info.me_last_pgno - s->ck_asked_pgno) * s->lmdb_page_bytes >=
                     STORE_CHECKPOINT_GROWTH_BYTES;
    pthread_mutex_lock(&s->ck_lock);
    s->wal_lsn_shown = s->wal_lsn;
    s->commits_written++;
    if (s->syncer_idle)
        pthread_cond_signal(&s->ck_wake);
    bool ask = (s->wal_lsn - s->ck_asked_lsn >= share && s->wal_lsn - s->ck_lsn >= share) ||
               grown || ++s->commits_since_ask >= STORE_CHECKPOINT_COMMITS;
    pthread_mutex_unlock(&s->ck_lock);
    if (ask)
        checkpoint_ask(s);
    return 0;
}

/*
 * Appends through the write-ahead file: the record, its one sync, then LMDB without a sync.
 * Returns as append_tries does; *unknown is set when the outcome is unknown.
 */
static int append_logged(store *s, const store_item *items, size_t n)
{
    size_t bytes = wal_record_bytes(items, n);
    if (bytes > wal_area_bytes(s->wal))
        return BUDGET_EUNAVAILABLE; /* larger than the file: never with the default size */
    int err = wal_make_room(s, bytes);
    if (err == EAGAIN)
        return BUDGET_EUNAVAILABLE;
    if (err != 0) {
        s->broken = true;
        return BUDGET_EINTERNAL;
    }

    uint64_t lsn = s->wal_lsn, next = 0;
    bool written = false;
    err = fault_at(s, STORE_FAULT_WAL_WRITE);
    if (err == 0)
        err = wal_append(s->wal, items, n, &lsn, &next, &written);
    if (err != 0)
        return BUDGET_EUNAVAILABLE; /* not synced, and the next record goes over it */
    err = wal_sync(s->wal);
    if (err == 0)
        err = fault_at(s, STORE_FAULT_SYNC);
    if (err != 0) {
        s->broken = true; /* the record may or may not be on disk */
        return BUDGET_EINTERNAL;
    }
    s->wal_lsn = next;

    uint64_t txnid = 0;
    int rc = append_tries(s, items, n, &txnid);
    if (rc == 0 && after_commit(s, txnid, items[n - 1].seq) != 0) {
        s->broken = true; /* committed, but no checkpoint can be made of it */
        return BUDGET_EINTERNAL;
    }
    if (rc != 0 && !s->broken) {
        /* Not written to LMDB: the record must not come back at the next open either. */
        if (wal_retract(s->wal, lsn) != 0) {
            s->broken = true;
            return BUDGET_EINTERNAL;
        }
        s->wal_lsn = lsn;
    }
    return rc;
}

int store_append(store *s, const store_item *items, size_t n, bool *sync_failed)
{
    *sync_failed = false;
    if (s->broken || s->read_only) {
        *sync_failed = s->broken;
        return s->broken ? BUDGET_EINTERNAL : BUDGET_EUNAVAILABLE;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t head = s->head_seq;
    pthread_mutex_unlock(&s->lock);
    int rc = check_batch(items, n, head);
    if (rc != 0 || n == 0)
        return rc;

    rc = append_logged(s, items, n);
    if (rc != 0) {
        *sync_failed = s->broken;
        return rc;
    }

    /* The appending thread is the one that moves the map: its meta pages are safe to read. */
    MDB_envinfo info = {0};
    mdb_env_info(s->env, &info);
    const store_item *last = &items[n - 1];
    pthread_mutex_lock(&s->lock);
    s->map_used_bytes = ((uint64_t)info.me_last_pgno + 1) * s->lmdb_page_bytes;
    s->head_seq = last->seq;
    memcpy(s->head_hash, last->bytes + last->size - BUDGET_HASH_BYTES, BUDGET_HASH_BYTES);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* ---- opening and closing with the write-ahead file ---- */

/* True when a running budgetd holds DIR (its lock file is locked). */
static bool daemon_holds(const char *dir)
{
    char path[PATH_MAX];
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    if (snprintf(path, sizeof path, "%s/%s", dir, STORE_DAEMON_LOCK_FILE) >= (int)sizeof path)
        return false;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    bool held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    return held;
}

/*
 * After an unclean stop: writes the checkpoint's meta page over both of LMDB's meta pages,
 * which puts LMDB back at the checkpoint's transaction (whose pages the pin kept from reuse
 * and the sync put on disk), and syncs. The data file must be the one the checkpoint was made
 * of: its meta pages must be LMDB's and one of them at least as new as the checkpoint, else a
 * data file put in place since (a restored backup) would be overwritten.
 */
static int restore_meta(const char *dir, const wal_checkpoint *ck, char *why, size_t why_size)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/data.mdb", dir) >= (int)sizeof path)
        return open_refused(why, why_size, dir, "the path is too long");
    if (ck->page_bytes < WAL_META_BYTES || ck->page_bytes > (1u << 16) ||
        load_u64(ck->meta + LMDB_META_TXNID_AT) != ck->txnid)
        return open_refused(why, why_size, dir, "the write-ahead file's checkpoint is damaged");
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return open_failed(why, why_size, dir,
                           "the write-ahead file holds events but data.mdb cannot be opened",
                           errno);
    uint8_t page[2][WAL_META_BYTES];
    uint64_t newest = 0;
    bool lmdb = true;
    for (int i = 0; i < 2; i++) {
        uint32_t magic = 0;
        if (fileio_pread_all(fd, page[i], WAL_META_BYTES, (uint64_t)i * ck->page_bytes) != 0) {
            lmdb = false;
            break;
        }
        memcpy(&magic, page[i] + LMDB_META_MAGIC_AT, sizeof magic);
        uint64_t txnid = load_u64(page[i] + LMDB_META_TXNID_AT);
        if (magic == LMDB_META_MAGIC && txnid > newest)
            newest = txnid;
    }
    if (!lmdb || newest < ck->txnid) {
        close(fd);
        return open_refused(why, why_size, dir,
                            "budgetd did not stop cleanly, and data.mdb is older than the "
                            "write-ahead file (wal) says: was it replaced? Nothing was changed");
    }
    int err = 0;
    for (uint64_t i = 0; i < 2 && err == 0; i++) {
        uint8_t meta[WAL_META_BYTES];
        memcpy(meta, ck->meta, WAL_META_BYTES);
        memcpy(meta + LMDB_PAGE_PGNO_AT, &i, sizeof i); /* each meta page names itself */
        err = fileio_pwrite_all(fd, meta, WAL_META_BYTES, i * ck->page_bytes);
    }
    if (err == 0 && fdatasync(fd) != 0)
        err = errno;
    close(fd);
    if (err != 0)
        return open_failed(why, why_size, dir, "cannot put LMDB back at the last checkpoint", err);
    return 0;
}

static int wal_before_env(store *s, const char *dir, uint64_t area, wal_checkpoint *ck, bool *found,
                          char *why, size_t why_size)
{
    int rc = wal_open(&s->wal, dir, area, s->read_only, found, ck, why, why_size);
    if (rc != 0)
        return rc;
    if (s->read_only) {
        bool unclean = *found && !ck->clean;
        wal_close(s->wal);
        s->wal = NULL;
        if (unclean && !daemon_holds(dir))
            return open_refused(why, why_size, dir,
                                "budgetd did not stop cleanly: its write-ahead file (wal) may "
                                "hold events data.mdb lacks; start budgetd on the folder once "
                                "to bring them in");
        return 0;
    }
    if (*found && !ck->clean)
        return restore_meta(dir, ck, why, why_size);
    return 0;
}

static int wal_after_replay(store *s, const char *dir, uint64_t lsn, uint64_t area, char *why,
                            size_t why_size);

/* Replay of one record at open: the same checks and commit as an append, without the file. */
static int replay_record(void *ctx, const store_item *items, size_t n)
{
    store *s = ctx;
    uint64_t txnid;
    if (check_batch(items, n, s->head_seq) != 0)
        return BUDGET_EINTERNAL;
    int rc = append_tries(s, items, n, &txnid);
    if (rc != 0)
        return rc;
    const store_item *last = &items[n - 1];
    s->head_seq = last->seq;
    memcpy(s->head_hash, last->bytes + last->size - BUDGET_HASH_BYTES, BUDGET_HASH_BYTES);
    s->wal_records_replayed++;
    s->wal_events_replayed += n;
    return 0;
}

/*
 * After LMDB is open: brings in the records after an unclean stop's checkpoint, syncs LMDB,
 * writes a fresh checkpoint of where it stands (every record is then behind it, so the file
 * may take the size asked for), pins it and starts the syncer.
 */
static int wal_after_env(store *s, const char *dir, const wal_checkpoint *ck, bool found,
                         uint64_t area, char *why, size_t why_size)
{
    uint64_t lsn = found ? ck->lsn : 0;
    /*
     * While the records are brought in, the old checkpoint is still the one on disk: a crash
     * now puts LMDB back at it again. So its pages must not be reused meanwhile, which a read
     * transaction on it (the guard) ensures until the new checkpoint is written.
     */
    MDB_txn *guard = NULL;
    if (found && !ck->clean) {
        s->wal_unclean = true;
        if (s->head_seq != ck->seq)
            return open_refused(why, why_size, dir,
                                "data.mdb at the write-ahead file's checkpoint does not hold "
                                "the events the checkpoint says");
        int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &guard);
        if (rc != 0)
            return open_failed(why, why_size, dir, "cannot begin a read transaction", rc);
        uint64_t head;
        rc = wal_replay(s->wal, ck, replay_record, s, &lsn, &head);
        if (rc != 0 || s->broken) {
            mdb_txn_abort(guard);
            return open_failed(why, why_size, dir,
                               "cannot bring the write-ahead file's events into data.mdb",
                               rc == BUDGET_EUNAVAILABLE ? ENOSPC : EIO);
        }
    }
    int rc = wal_after_replay(s, dir, lsn, area, why, why_size);
    if (guard != NULL)
        mdb_txn_abort(guard);
    return rc;
}

/* The rest of wal_after_env: a checkpoint of where LMDB stands, its pin, the syncer. */
static int wal_after_replay(store *s, const char *dir, uint64_t lsn, uint64_t area, char *why,
                            size_t why_size)
{
    MDB_txn *pin;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &pin);
    if (rc != 0)
        return open_failed(why, why_size, dir, "cannot begin a read transaction", rc);
    s->last_txnid = mdb_txn_id(pin);
    s->last_seq = s->head_seq;
    rc = meta_read(s, s->last_txnid, s->last_meta);
    if (rc == EPROTO) {
        mdb_txn_abort(pin);
        return open_refused(why, why_size, dir,
                            "LMDB's meta page is not laid out as budgetd knows it (another "
                            "LMDB build?); the write-ahead file cannot be used with it");
    }
    wal_checkpoint now;
    checkpoint_of_last(s, lsn, &now);
    if (rc == 0)
        rc = mdb_env_sync(s->env, 1);
    if (rc == 0)
        rc = wal_checkpoint_write(s->wal, &now);
    if (rc == 0)
        rc = wal_resize(s->wal, area, &now);
    lsn = now.lsn;
    if (rc != 0) {
        mdb_txn_abort(pin);
        return open_failed(why, why_size, dir, "cannot write the write-ahead file's checkpoint",
                           rc);
    }
    s->ck_pin = pin;
    s->wal_lsn = s->ck_lsn = s->ck_asked_lsn = s->wal_lsn_shown = lsn;
    MDB_envinfo info = {0};
    mdb_env_info(s->env, &info);
    s->ck_asked_pgno = info.me_last_pgno;
    if (pthread_create(&s->syncer, NULL, syncer_main, s) != 0)
        return open_failed(why, why_size, dir, "cannot start the syncer", EAGAIN);
    s->syncer_started = true;
    return 0;
}

/* Stops the syncer; when nothing failed, syncs LMDB and marks the file clean. */
static void wal_finish(store *s)
{
    if (s->syncer_started) {
        pthread_mutex_lock(&s->ck_lock);
        s->ck_stop = true;
        pthread_cond_signal(&s->ck_wake);
        pthread_mutex_unlock(&s->ck_lock);
        pthread_join(s->syncer, NULL);
        s->syncer_started = false;
        if (!s->broken && s->ck_error == 0 && mdb_env_sync(s->env, 1) == 0) {
            wal_checkpoint ck;
            checkpoint_of_last(s, s->wal_lsn, &ck);
            ck.clean = true;
            wal_checkpoint_write(s->wal, &ck);
        }
    }
    if (s->ck_queued && s->ck_next_pin != NULL)
        mdb_txn_abort(s->ck_next_pin);
    s->ck_queued = false;
    s->ck_next_pin = NULL;
    if (s->ck_pin != NULL)
        mdb_txn_abort(s->ck_pin);
    s->ck_pin = NULL;
}

/* ---- reading ---- */

/* What a failed LMDB read means to the caller. */
static int read_error(int rc)
{
    switch (rc) {
    case MDB_NOTFOUND:
        return BUDGET_ENOT_FOUND;
    case MDB_READERS_FULL:
    case ENOMEM:
        return BUDGET_EUNAVAILABLE;
    default:
        return BUDGET_EINTERNAL;
    }
}

int store_reader_begin(store *s, store_reader **out)
{
    *out = NULL;
    store_reader *r = malloc(sizeof *r);
    if (r == NULL)
        return BUDGET_EUNAVAILABLE;
    r->s = s;
    r->thread = pthread_self();

    int rc = gate_enter(s);
    if (rc != 0) {
        free(r);
        return rc;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc == 0) {
        rc = read_last(s, r->txn, &r->head, NULL);
        if (rc != 0)
            mdb_txn_abort(r->txn);
    }
    if (rc != 0) {
        gate_leave(s);
        free(r);
        return read_error(rc);
    }
    *out = r;
    return 0;
}

void store_reader_end(store_reader *r)
{
    if (r == NULL)
        return;
    assert(pthread_equal(r->thread, pthread_self()));
    mdb_txn_abort(r->txn);
    gate_leave(r->s);
    free(r);
}

uint64_t store_reader_head(store_reader *r)
{
    return r->head;
}

int store_reader_get(store_reader *r, uint64_t seq, store_val *out)
{
    if (seq == 0 || seq > r->head)
        return BUDGET_ENOT_FOUND;
    uint8_t seq_key[STORE_SEQ_BYTES];
    seq_encode(seq_key, seq);
    MDB_val key = {STORE_SEQ_BYTES, seq_key};
    MDB_val val;
    int rc = mdb_get(r->txn, r->s->events, &key, &val);
    if (rc != 0)
        /* Below the head every seq exists: a missing one is damage, not "not found". */
        return rc == MDB_NOTFOUND ? BUDGET_EINTERNAL : read_error(rc);
    if (val.mv_size < BUDGET_HASH_BYTES)
        return BUDGET_EINTERNAL;
    out->data = val.mv_data;
    out->size = val.mv_size;
    return 0;
}

/*
 * Drops this process's mapping of the map's pages from `lo` to `hi` (pointers into the map):
 * they stay in the kernel's page cache and a later read maps them again with a minor fault.
 * Without it every page that start-up replay, `verify` or `balances as_of` has read stays in
 * the daemon's resident set: the whole log, hundreds of MiB at a million events, that nothing
 * needs mapped. The map is read-only and shared (no MDB_WRITEMAP), so nothing is lost. The
 * caller holds a reader, so the map cannot move meanwhile.
 */
static void release_map_pages(const uint8_t *lo, const uint8_t *hi)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)lo & ~(page - 1);
    uintptr_t end = ((uintptr_t)hi + page - 1) & ~(page - 1);
    madvise((void *)start, end - start, MADV_DONTNEED);
}

/* Asks the CPU for the cache line at `p`. GCC 12 deletes loops of __builtin_prefetch in
 * prefetch_from as if they did nothing, so on x86 the instruction is written out. */
static inline void prefetch_line(const uint8_t *p)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p);
#endif
}

/*
 * Asks the CPU for an event's bytes and for the bytes below it, ahead of use. Appended keys
 * fill an LMDB page downwards from its end, so the events that follow this one in the log sit
 * just below it in the same page: a scan reads the map in a pattern the hardware prefetcher
 * does not follow on its own. Only a hint: a prefetch never faults, and stays in the page.
 */
static void prefetch_from(const uint8_t *data, size_t size)
{
    size_t below = (uintptr_t)data & 4095; /* bytes between the page's start and data */
    if (below > STORE_SCAN_PREFETCH_BYTES)
        below = STORE_SCAN_PREFETCH_BYTES;
    for (size_t at = 0; at < size; at += 64)
        prefetch_line(data + at);
    for (size_t at = 64; at <= below; at += 64)
        prefetch_line(data - at);
}

/*
 * O(events after `after`). Checks on the way that seqs run without a gap up to the head this
 * reader saw. A long scan unmaps the pages it has read as it goes (release_map_pages), so the
 * log it reads never stays in the resident set.
 */
int store_reader_scan(store_reader *r, uint64_t after, store_scan_fn fn, void *ctx)
{
    if (after >= r->head)
        return 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(r->txn, r->s->events, &cursor);
    if (rc != 0)
        return read_error(rc);

    uint64_t expect = after + 1;
    uint8_t seq_key[STORE_SEQ_BYTES];
    seq_encode(seq_key, expect);
    MDB_val key = {STORE_SEQ_BYTES, seq_key};
    MDB_val val;
    const uint8_t *lo = NULL, *hi = NULL; /* the span of the map this scan has read */
    int result = 0;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    while (rc == 0) {
        if (key.mv_size != STORE_SEQ_BYTES || val.mv_size < BUDGET_HASH_BYTES ||
            seq_decode(key.mv_data) != expect) {
            result = BUDGET_EINTERNAL;
            break;
        }
        const uint8_t *data = val.mv_data;
        if (lo == NULL || data < lo)
            lo = data;
        if (data + val.mv_size > hi)
            hi = data + val.mv_size;
        /* The next entry is found, and its bytes asked for, before `fn` runs on this one, so
         * that the memory latency of what follows overlaps the work on this one. Both stay
         * valid: nothing writes in a read transaction. */
        MDB_val next_key, next_val;
        int next_rc = mdb_cursor_get(cursor, &next_key, &next_val, MDB_NEXT);
        if (next_rc == 0)
            prefetch_from(next_val.mv_data, next_val.mv_size);
        result = fn(ctx, expect, (store_val){data, val.mv_size});
        if (result != 0)
            break;
        expect++;
        if ((expect - after - 1) % STORE_SCAN_RELEASE_EVENTS == 0) {
            release_map_pages(lo, hi);
            lo = hi = NULL;
        }
        key = next_key;
        val = next_val;
        rc = next_rc;
    }
    mdb_cursor_close(cursor);
    if (expect - (after + 1) >= STORE_SCAN_RELEASE_EVENTS && lo != NULL)
        release_map_pages(lo, hi);
    if (result != 0)
        return result;
    if (rc != MDB_NOTFOUND)
        return read_error(rc);
    return expect == r->head + 1 ? 0 : BUDGET_EINTERNAL;
}

void store_get_stats(store *s, store_stats *out)
{
    /* Never waits for a growth of the map: the loop thread asks for these. The bytes in use
     * are those of the last commit (or of opening), kept by the appending thread. */
    pthread_mutex_lock(&s->lock);
    out->map_bytes = s->map_bytes;
    out->map_growths = s->map_growths;
    out->events = s->head_seq;
    out->map_used_bytes = s->map_used_bytes;
    out->growth_waiting = s->growth_waiting && !s->growing;
    pthread_mutex_unlock(&s->lock);
    unsigned int flags = 0;
    out->wal = s->wal != NULL;
    out->commits_synced =
        !s->read_only &&
        (s->wal != NULL || (mdb_env_get_flags(s->env, &flags) == 0 &&
                            (flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC)) == 0));
    pthread_mutex_lock(&s->ck_lock);
    out->wal_checkpoints = s->wal_checkpoints;
    out->wal_waits = s->wal_waits;
    out->wal_records_replayed = s->wal_records_replayed;
    out->wal_events_replayed = s->wal_events_replayed;
    out->wal_unclean_start = s->wal_unclean;
    out->wal_bytes_live = s->wal != NULL ? s->wal_lsn_shown - s->ck_lsn : 0;
    pthread_mutex_unlock(&s->ck_lock);
}

void store_reader_release(store_reader *r, const void *lo, const void *hi)
{
    (void)r; /* holding it keeps the map from moving meanwhile */
    if (lo != NULL && hi != NULL && lo < hi)
        release_map_pages(lo, hi);
}

/* ---- backup ---- */

const char *store_folder(store *s)
{
    const char *path = NULL;
    return mdb_env_get_path(s->env, &path) == 0 ? path : NULL;
}

/*
 * A copy reads every page through the map. LMDB does not say where the map starts (without
 * MDB_FIXEDMAP), so the span between the first and last entries of both databases stands for
 * it: nearly every page of the file lies in it. Called inside the gate.
 */
static void release_copied_pages(store *s)
{
    static const MDB_cursor_op ends[2] = {MDB_FIRST, MDB_LAST};
    MDB_dbi dbis[2] = {s->events, s->ids};
    const uint8_t *lo = NULL, *hi = NULL;
    MDB_txn *txn;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return;
    for (int i = 0; i < (s->has_ids ? 2 : 1); i++) {
        MDB_cursor *cursor;
        MDB_val key, val;
        if (mdb_cursor_open(txn, dbis[i], &cursor) != 0)
            continue;
        for (int e = 0; e < 2; e++) {
            if (mdb_cursor_get(cursor, &key, &val, ends[e]) != 0)
                continue;
            const uint8_t *p = val.mv_data;
            if (lo == NULL || p < lo)
                lo = p;
            if (p + val.mv_size > hi)
                hi = p + val.mv_size;
        }
        mdb_cursor_close(cursor);
    }
    if (lo != NULL)
        release_map_pages(lo, hi);
    mdb_txn_abort(txn);
}

/*
 * mdb_env_copyfd2 reads through its own read transaction, pointing into the map the whole
 * time: the copy holds the gate like any reader, so a growth waits for it to end.
 */
int store_backup_fd(store *s, int fd, char *why, size_t why_size)
{
    int rc = gate_enter(s);
    if (rc != 0) {
        snprintf(why, why_size, "the store is not readable now");
        return rc;
    }
    rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    release_copied_pages(s);
    gate_leave(s);
    if (rc != 0) {
        snprintf(why, why_size, "the copy failed: %s", mdb_strerror(rc));
        return BUDGET_EUNAVAILABLE;
    }
    return 0;
}
