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
 * Durability. Commits use LMDB's default synced mode: mdb_txn_commit returning 0 means the
 * batch is on disk. A commit that fails before its meta page is written leaves the previous
 * one in charge, so the batch is simply not there. If writing the meta page itself fails,
 * LMDB marks the environment fatal (MDB_PANIC on the next transaction) and the new meta may
 * or may not have reached the disk: the store checks for the mark as soon as a commit fails
 * (env_fatal) and then reports an unknown outcome for that very batch, as for a failed sync,
 * and the daemon restarts from the disk.
 */
#include <assert.h>
#include <errno.h>
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
#include "store.h"

_Static_assert(sizeof(size_t) >= 8, "the store maps up to a terabyte: it needs 64-bit sizes");

#define STORE_FORMAT "budgetd-1"
#define STORE_FORMAT_KEY "format"
/* Keys of "events" and values of "ids": a seq as 8 bytes big-endian. */
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

struct store {
    MDB_env *env;
    MDB_dbi events;
    MDB_dbi ids;
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
        rc = mdb_env_open(s->env, dir, MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0), 0640);
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
        rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &s->ids);
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

/* An existing store: the mark must be ours and both data databases present. */
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
    if (val.mv_size != sizeof STORE_FORMAT - 1 || memcmp(val.mv_data, STORE_FORMAT, val.mv_size)) {
        char shown[STORE_FORMAT_SHOWN_MAX + 1];
        char what[128];
        format_shown(&val, shown);
        snprintf(what, sizeof what, "format \"%s\" is not %s", shown, STORE_FORMAT);
        return open_refused(why, why_size, dir, what);
    }
    rc = mdb_dbi_open(txn, "events", 0, &s->events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "ids", 0, &s->ids);
    if (rc != 0)
        return open_failed(why, why_size, dir, "damaged: a database is missing", rc);
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

int store_open(store **out, const char *dir, const store_options *opt, char *why, size_t why_size)
{
    store_options o = opt != NULL ? *opt : (store_options){0};
    size_t os_page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_max = o.map_bytes_max != 0 ? o.map_bytes_max : STORE_MAP_BYTES_MAX_DEFAULT;
    size_t map_initial =
        o.map_bytes_initial != 0 ? o.map_bytes_initial : STORE_MAP_BYTES_INITIAL_DEFAULT;

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

    int rc = o.read_only ? 0 : make_dir(dir, why, why_size);
    if (rc == 0)
        rc = open_env(s, dir, map_initial, why, why_size);
    if (rc == 0) {
        rc = open_databases(s, dir, why, why_size);
        if (rc != 0)
            mdb_env_close(s->env);
    }
    if (rc != 0) {
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
    mdb_env_close(s->env);
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

/* Puts one event and its id. An LMDB error (or an injected one) poisons the transaction. */
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
    if (rc != 0)
        return rc;

    MDB_val id_key = {item->id_len, (void *)item->id};
    MDB_val id_val = {STORE_SEQ_BYTES, seq_key};
    rc = fault_at(s, STORE_FAULT_PUT);
    if (rc == 0)
        rc = mdb_put(txn, s->ids, &id_key, &id_val, MDB_NOOVERWRITE);
    return rc;
}

/* One try of a batch in one write transaction: 0 when committed, else the LMDB/errno code. */
static int write_batch(store *s, const store_item *items, size_t n)
{
    MDB_txn *txn;
    if (s->fatal_injected)
        return MDB_PANIC;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
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
static int append_tries(store *s, const store_item *items, size_t n)
{
    for (int tries = 0; tries < STORE_APPEND_TRIES_MAX; tries++) {
        int rc = write_batch(s, items, n);
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

int store_append(store *s, const store_item *items, size_t n, bool *sync_failed)
{
    *sync_failed = false;
    if (s->broken) {
        *sync_failed = true;
        return BUDGET_EINTERNAL;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t head = s->head_seq;
    pthread_mutex_unlock(&s->lock);
    int rc = check_batch(items, n, head);
    if (rc != 0 || n == 0)
        return rc;

    rc = append_tries(s, items, n);
    if (rc == 0 && fault_at(s, STORE_FAULT_SYNC) != 0) {
        /* Committed, but its sync is said to have failed: the head is left for the disk. */
        s->broken = true;
        rc = BUDGET_EINTERNAL;
    }
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

int store_reader_find_id(store_reader *r, const char *id, size_t len, uint64_t *seq)
{
    if (len == 0 || len > BUDGET_ID_BYTES_MAX)
        return BUDGET_ENOT_FOUND;
    MDB_val key = {len, (void *)id};
    MDB_val val;
    int rc = mdb_get(r->txn, r->s->ids, &key, &val);
    if (rc != 0)
        return read_error(rc);
    if (val.mv_size != STORE_SEQ_BYTES)
        return BUDGET_EINTERNAL;
    uint64_t found = seq_decode(val.mv_data);
    if (found == 0 || found > r->head)
        return BUDGET_EINTERNAL;
    *seq = found;
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
    out->commits_synced = !s->read_only && mdb_env_get_flags(s->env, &flags) == 0 &&
                          (flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC)) == 0;
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
    for (int i = 0; i < 2; i++) {
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
