/*
 * The baseline: raw LMDB appends of events of the size budgetd writes, on the disk under test,
 * synced as budgetd syncs them (LMDB's default commit: no MDB_NOSYNC, no MDB_NOMETASYNC).
 *
 * For each batch size (events per write transaction) it appends for a fixed time into a fresh
 * environment and reports events/s, commits/s and the latency of one transaction (begin, the
 * puts, the synced commit). The values are real encoded events shaped like the load
 * generator's (an allocation.proposed and an avrop.requested in turn), so only budgetd's own
 * work separates its figures from these.
 *
 * With --fdatasync it first measures the floor under any durable commit: one page holding an
 * event of the mean size, overwritten in a file written and synced beforehand (so that no sync
 * carries metadata), then fdatasync'd; its RESULT keys are NAME_fdatasync_....
 *
 * usage: bench_lmdb --dir DIR [--seconds S] [--batches 1,64,1024] [--name NAME] [--fdatasync]
 * Its RESULT keys are NAME_b<batch>_... (NAME defaults to "lmdb").
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "budget/limits.h"
#include "daemon/event.h"
#include "daemon/ledger.h"

/* Distinct events encoded once and stored round-robin. */
#define POOL_EVENTS 4096
/* The map: enough for any run here; a run stops early rather than fill it. */
#define MAP_BYTES ((size_t)4 << 30)
#define RUN_BYTES_MAX ((size_t)3 << 30)
#define BATCHES_MAX 8
/* The fdatasync baseline: a file of this many pages, each overwritten in turn. */
#define SYNC_PAGE_BYTES 4096
#define SYNC_FILE_PAGES 1024

typedef struct {
    uint8_t *bytes;
    size_t offsets[POOL_EVENTS], sizes[POOL_EVENTS];
    double mean_bytes;
} pool;

/* Encodes POOL_EVENTS events the way budgetd would for the load generator's appends. */
static int pool_make(pool *p)
{
    uint8_t prev[BUDGET_HASH_BYTES] = {0}, hash[BUDGET_HASH_BYTES];
    size_t used = 0, total = 0;
    ledger_event ev;

    p->bytes = malloc((size_t)POOL_EVENTS * EVENT_BYTES_MAX);
    if (!p->bytes)
        return -1;
    for (unsigned i = 0; i < POOL_EVENTS; i++) {
        memset(&ev, 0, sizeof(ev));
        ev.seq = 1000000 + i;
        ev.ts_ms = (uint64_t)time(NULL) * 1000u + i;
        ev.actor.uid = 0;
        snprintf(ev.actor.name, sizeof(ev.actor.name), "root");
        snprintf(ev.id, sizeof(ev.id), BENCH_WRITE_ID_FORMAT, BENCH_TAG_EXAMPLE, i % 64,
                 (unsigned long long)(10000 + i));
        snprintf(ev.frame, sizeof(ev.frame), BENCH_FRAME_ID_FORMAT, BENCH_TAG_EXAMPLE, i % 16);
        snprintf(ev.unit, sizeof(ev.unit), "%s", BENCH_ALLOCATION_UNIT);
        ev.year = BENCH_YEAR;
        ev.amount = 1;
        if (i % 2 == 0) {
            ev.type = LEDGER_ALLOCATION_PROPOSED;
            snprintf(ev.title, sizeof(ev.title), "%s", BENCH_PURPOSE);
        } else {
            ev.type = LEDGER_AVROP_REQUESTED;
            snprintf(ev.allocation, sizeof(ev.allocation), BENCH_ALLOCATION_ID_FORMAT,
                     BENCH_TAG_EXAMPLE, i % 256);
            snprintf(ev.note, sizeof(ev.note), "%s", BENCH_NOTE);
        }
        int n = event_encode(&ev, prev, p->bytes + used, EVENT_BYTES_MAX, hash);
        if (n < 0) {
            fprintf(stderr, "bench_lmdb: event %u does not encode\n", i);
            return -1;
        }
        p->offsets[i] = used;
        p->sizes[i] = (size_t)n;
        used += (size_t)n;
        total += (size_t)n;
        memcpy(prev, hash, sizeof(prev));
    }
    p->mean_bytes = (double)total / POOL_EVENTS;
    return 0;
}

static void remove_env(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static void seq_key(uint8_t out[8], uint64_t seq)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)seq;
        seq >>= 8;
    }
}

/* Appends in transactions of `batch` events for `seconds`; prints its RESULT lines. */
static int run_batch(const char *parent, const pool *p, unsigned batch, double seconds,
                     const char *name)
{
    char dir[4096];
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    bench_latency lat;
    uint64_t seq = 0, commits = 0;
    size_t bytes = 0;
    int rc;

    snprintf(dir, sizeof(dir), "%s/lmdb-batch-%u", parent, batch);
    remove_env(dir);
    if (mkdir(dir, 0750) != 0) {
        fprintf(stderr, "bench_lmdb: mkdir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, MAP_BYTES);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 4);
    if (rc == 0)
        rc = mdb_env_open(env, dir, MDB_NOTLS, 0640);
    if (rc == 0 && (rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &dbi);
        rc = rc ? rc : mdb_txn_commit(txn);
    }
    if (rc != 0) {
        fprintf(stderr, "bench_lmdb: %s: %s\n", dir, mdb_strerror(rc));
        if (env)
            mdb_env_close(env);
        return -1;
    }

    bench_latency_init(&lat);
    uint64_t start = bench_now_ns();
    uint64_t until = start + (uint64_t)(seconds * 1e9);
    uint64_t now = start;
    while (now < until && bytes < RUN_BYTES_MAX) {
        uint64_t t0 = now;
        rc = mdb_txn_begin(env, NULL, 0, &txn);
        for (unsigned i = 0; rc == 0 && i < batch; i++) {
            uint8_t key_bytes[8];
            unsigned k = (unsigned)(seq % POOL_EVENTS);
            seq_key(key_bytes, ++seq);
            MDB_val key = {sizeof(key_bytes), key_bytes};
            MDB_val val = {p->sizes[k], p->bytes + p->offsets[k]};
            rc = mdb_put(txn, dbi, &key, &val, MDB_APPEND);
            bytes += p->sizes[k];
        }
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc != 0) {
            fprintf(stderr, "bench_lmdb: batch %u: %s\n", batch, mdb_strerror(rc));
            break;
        }
        now = bench_now_ns();
        bench_latency_add(&lat, now - t0);
        commits++;
    }
    double elapsed = (double)(now - start) / 1e9;
    mdb_env_close(env);
    remove_env(dir);
    if (rc != 0) {
        bench_latency_free(&lat);
        return -1;
    }

    printf("raw LMDB, %4u events/commit: %10.0f events/s  %8.0f commits/s  commit p50 %8.1f us  "
           "p99 %8.1f us\n",
           batch, (double)seq / elapsed, (double)commits / elapsed,
           (double)bench_latency_at(&lat, 0.5) / 1e3, (double)bench_latency_at(&lat, 0.99) / 1e3);
    char key[64];
    snprintf(key, sizeof(key), "%s_b%u_events_per_s", name, batch);
    bench_result(key, "%.0f", (double)seq / elapsed);
    snprintf(key, sizeof(key), "%s_b%u_commits_per_s", name, batch);
    bench_result(key, "%.1f", (double)commits / elapsed);
    snprintf(key, sizeof(key), "%s_b%u_commit_p50_us", name, batch);
    bench_result(key, "%.1f", (double)bench_latency_at(&lat, 0.5) / 1e3);
    snprintf(key, sizeof(key), "%s_b%u_commit_p99_us", name, batch);
    bench_result(key, "%.1f", (double)bench_latency_at(&lat, 0.99) / 1e3);
    bench_latency_free(&lat);
    return 0;
}

/* Overwrites a page of a pre-written file and syncs it, for `seconds`; prints its RESULT lines. */
static int run_fdatasync(const char *parent, const pool *p, double seconds, const char *name)
{
    char path[4096];
    static uint8_t page[SYNC_PAGE_BYTES];
    bench_latency lat;
    uint64_t syncs = 0;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/fdatasync-baseline", parent);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "bench_lmdb: %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* Every page written and the file synced once, so a later sync moves data only. */
    for (unsigned i = 0; i < SYNC_FILE_PAGES && rc == 0; i++)
        if (pwrite(fd, page, sizeof(page), (off_t)i * SYNC_PAGE_BYTES) != (ssize_t)sizeof(page))
            rc = -1;
    if (rc == 0 && fsync(fd) != 0)
        rc = -1;
    size_t event = p->sizes[0] < sizeof(page) ? p->sizes[0] : sizeof(page);
    memcpy(page, p->bytes + p->offsets[0], event);

    bench_latency_init(&lat);
    uint64_t start = bench_now_ns(), now = start;
    uint64_t until = start + (uint64_t)(seconds * 1e9);
    while (rc == 0 && now < until) {
        uint64_t t0 = now;
        off_t at = (off_t)(syncs % SYNC_FILE_PAGES) * SYNC_PAGE_BYTES;
        if (pwrite(fd, page, sizeof(page), at) != (ssize_t)sizeof(page) || fdatasync(fd) != 0)
            rc = -1;
        now = bench_now_ns();
        bench_latency_add(&lat, now - t0);
        syncs++;
    }
    if (rc != 0)
        fprintf(stderr, "bench_lmdb: %s: %s\n", path, strerror(errno));
    close(fd);
    unlink(path);
    if (rc == 0) {
        double p50 = (double)bench_latency_at(&lat, 0.5) / 1e3;
        double p99 = (double)bench_latency_at(&lat, 0.99) / 1e3;
        printf(
            "one %d-byte page written and fdatasync'd: p50 %8.1f us  p99 %8.1f us  (%llu syncs)\n",
            SYNC_PAGE_BYTES, p50, p99, (unsigned long long)syncs);
        char key[64];
        snprintf(key, sizeof(key), "%s_fdatasync_p50_us", name);
        bench_result(key, "%.1f", p50);
        snprintf(key, sizeof(key), "%s_fdatasync_p99_us", name);
        bench_result(key, "%.1f", p99);
    }
    bench_latency_free(&lat);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: bench_lmdb --dir DIR [--seconds S] [--batches 1,64,1024] [--name NAME] "
                 "[--fdatasync]\n"
                 "Appends events of budgetd's size to raw LMDB, synced, per batch size; with\n"
                 "--fdatasync first one page written and synced, the floor under a commit.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"dir", required_argument, NULL, 'd'},
        {"seconds", required_argument, NULL, 's'},
        {"batches", required_argument, NULL, 'b'},
        {"name", required_argument, NULL, 'n'},
        {"fdatasync", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *name = "lmdb";
    double seconds = 2.0;
    unsigned batches[BATCHES_MAX] = {1, 64, 1024};
    size_t batch_count = 3;
    bool fdatasync_too = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 's':
            seconds = bench_arg_double(optarg, "--seconds");
            break;
        case 'b': {
            char *list = strdup(optarg), *save = NULL;
            batch_count = 0;
            for (char *t = strtok_r(list, ",", &save); t && batch_count < BATCHES_MAX;
                 t = strtok_r(NULL, ",", &save))
                batches[batch_count++] = (unsigned)bench_arg_long(t, "--batches");
            free(list);
            break;
        }
        case 'n':
            name = optarg;
            break;
        case 'f':
            fdatasync_too = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!dir || batch_count == 0) {
        usage(stderr);
        return 2;
    }

    pool p;
    if (pool_make(&p) != 0)
        return 1;
    printf("raw LMDB baseline in %s: events of %.0f bytes on average, %.1f s per batch size\n", dir,
           p.mean_bytes, seconds);
    bench_result("event_bytes_mean", "%.0f", p.mean_bytes);
    int status = 0;
    if (fdatasync_too && run_fdatasync(dir, &p, seconds, name) != 0)
        status = 1;
    for (size_t i = 0; i < batch_count; i++)
        if (run_batch(dir, &p, batches[i], seconds, name) != 0)
            status = 1;
    free(p.bytes);
    return status;
}
