/*
 * Storage faults, end to end, with budgetd-faulty (budgetd built with BUDGET_FAULT_INJECTION:
 * $BUDGETD_FAULT makes the Nth put, commit, sync or meta page write of the store fail). For
 * each kind of fault, N = 1, 2, ... until a run of the workload completes without meeting it:
 *
 *   put / commit, ENOSPC or EIO, once:  the batch that meets it is answered `unavailable`
 *       and never acknowledged; the daemon keeps serving; the same writes retried succeed.
 *   put / commit, EIO, always:  every write from then on is `unavailable`, reads are still
 *       served, SIGTERM still stops the daemon cleanly.
 *   put / commit, MAP_FULL, once:  the map grows and the batch succeeds; nobody notices.
 *   sync or meta, EIO:  the batch is answered `unavailable`, nothing after it is
 *       acknowledged, and the daemon exits with status 1.
 *
 * After every run the production budgetd is started on the same folder: the chain verifies,
 * every acknowledged write is there at its seq, nothing else is (a put or commit fault
 * leaves no part of its batch; a sync or meta fault may leave the whole batch, never a part
 * of it), and the unacknowledged writes retried with their ids are made once or answer the
 * seq they already have.
 *
 * Two faults of the machine around the store: a disk that holds a commit for a while (reads
 * meanwhile never show it), and a user database that is slow to answer for one uid (other
 * clients are served meanwhile).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "rel_util.h"

/* A run for each N up to this; the workload meets every point fewer times than that. */
#define NTH_MAX 200
/* Writes of the workload and how they are sent: groups are pipelined on one connection. */
#define WRITES 11
#define ATTEMPTS_MAX 3

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(faults, .fini = teardown, .timeout = 600);

typedef enum { MODE_ONCE, MODE_ALWAYS } fault_mode;

/* What a write of the workload became. */
typedef struct {
    const char *op;
    char id[40];
    e2e_buf args;
    bool acked, unanswered;
    uint64_t seq;
    int unavailable; /* times answered unavailable */
} write_rec;

/* The i-th write of the workload. */
static void pack_write(write_rec *w, int i)
{
    static const char *const ids[WRITES] = {"f",  "a",     "a-ok",  "v1",    "v2",   "v3",
                                            "v4", "v1-ok", "v2-no", "v3-wd", "f-adj"};
    snprintf(w->id, sizeof(w->id), "w-%s", ids[i]);
    e2e_buf_init(&w->args);
    switch (i) {
    case 0:
        w->op = "frame.grant";
        rel_pack_grant(&w->args, w->id, "KS", 1000000000);
        break;
    case 1:
        w->op = "allocation.propose";
        rel_pack_propose(&w->args, w->id, "w-f", "SON", 100000000);
        break;
    case 2:
        w->op = "approve";
        rel_pack_decide(&w->args, w->id, "w-a");
        break;
    case 3:
    case 4:
    case 5:
    case 6:
        w->op = "avrop.request";
        rel_pack_avrop(&w->args, w->id, "w-a", 1000000 * (i - 2));
        break;
    case 7:
        w->op = "approve";
        rel_pack_decide(&w->args, w->id, "w-v1");
        break;
    case 8:
        w->op = "reject";
        rel_pack_decide(&w->args, w->id, "w-v2");
        break;
    case 9:
        w->op = "withdraw";
        rel_pack_target(&w->args, w->id, "w-v3");
        break;
    default:
        w->op = "frame.adjust";
        rel_pack_adjust(&w->args, w->id, "w-f", 1000);
        break;
    }
}

/* The workload's groups: [first, first + count) are sent together. */
static const struct {
    int first, count;
} groups[] = {{0, 1}, {1, 1}, {2, 1}, {3, 4}, {7, 2}, {9, 1}, {10, 1}};

/* Decisions come from the second identity (four-eyes); the rest, a withdrawal included, from
 * the requester. */
static bool by_other(int i)
{
    return i == 2 || i == 7 || i == 8;
}

typedef struct {
    const char *point, *error;
    fault_mode mode;
    int nth;
} fault_spec;

typedef struct {
    write_rec w[WRITES];
    bool injected;        /* the log shows the fault was met */
    bool stopped_early;   /* the workload stopped at a persistent fault or a sync failure */
    int unavailable;      /* answers `unavailable` */
    int ok_after_failure; /* acknowledgements after a sync failure: must stay 0 */
} run_result;

/* Answers to a group sent at once; returns false when the connection is gone. */
static bool send_group(budget_client *c, write_rec *w, int first, int count, bool *failed_seen,
                       run_result *out)
{
    int sent = 0;
    for (int i = first; i < first + count; i++) {
        if (budget_client_send(c, w[i].op, w[i].args.sb.data, w[i].args.sb.size) <= 0)
            break;
        w[i].unanswered = true;
        sent++;
    }
    for (int i = first; i < first + sent; i++) {
        budget_response r;
        if (budget_client_recv(c, &r) != 0)
            return false;
        w[i].unanswered = false;
        if (r.ok) {
            if (*failed_seen)
                out->ok_after_failure += 1;
            w[i].acked = true;
            w[i].seq = (uint64_t)budget_map_int(&r.result, "seq", 0);
        } else {
            rel_assert(&rd, strcmp(r.code, "unavailable") == 0, "%s %s refused: %s: %s", w[i].op,
                       w[i].id, r.code, r.message);
            w[i].unavailable++;
            out->unavailable++;
        }
        budget_response_free(&r);
    }
    return sent == count;
}

/* A read that must be served while writes fail. */
static void expect_reads_served(budget_client *c)
{
    budget_response r;
    rel_assert(&rd, budget_client_call(c, "hello", NULL, 0, &r) == 0 && r.ok,
               "hello not served after a failed commit");
    budget_response_free(&r);
    rel_assert(&rd, budget_client_call(c, "stats", NULL, 0, &r) == 0 && r.ok, "stats not served");
    rel_assert(&rd, budget_map_int(&r.result, "commits_failed", 0) >= 1,
               "stats does not count the failed commit");
    budget_response_free(&r);
}

/* A fault after which the batch may or may not be on disk: a failed sync, or a failed write of
 * the meta page (LMDB then marks the environment fatal). The daemon must stop as for both. */
static bool outcome_unknown(const fault_spec *f)
{
    return strcmp(f->point, "sync") == 0 || strcmp(f->point, "meta") == 0;
}

/* Runs the workload against a daemon that injects `f`. */
static void run_workload(const fault_spec *f, run_result *out)
{
    budget_client *root = NULL, *other = NULL, *c;
    bool sync = outcome_unknown(f);
    bool failed_seen = false;

    rel_assert(&rd, budget_client_connect(rd.d.socket, &root) == 0, "connect");
    other = e2e_client_as(&rd.d, &e2e_other);
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]) && !out->stopped_early; g++) {
        c = by_other(groups[g].first) ? other : root;
        bool alive = send_group(c, out->w, groups[g].first, groups[g].count, &failed_seen, out);
        for (int i = groups[g].first; i < groups[g].first + groups[g].count; i++) {
            write_rec *w = &out->w[i];
            if (w->unavailable > 0)
                failed_seen = true;
            /* A write refused as unavailable is retried, as a client would. */
            while (alive && !w->acked && w->unavailable > 0 && !sync &&
                   w->unavailable < ATTEMPTS_MAX && f->mode == MODE_ONCE)
                alive = send_group(c, out->w, i, 1, &failed_seen, out);
        }
        if (!alive || (failed_seen && (sync || f->mode == MODE_ALWAYS)))
            out->stopped_early = true;
        if (failed_seen && !sync)
            expect_reads_served(c);
    }
    if (f->mode == MODE_ALWAYS && failed_seen && !sync) {
        /* The fault persists: a retry fails again, and nothing was half-made. */
        for (int i = 0; i < WRITES; i++) {
            if (out->w[i].acked || out->w[i].unavailable == 0)
                continue;
            send_group(by_other(i) ? other : root, out->w, i, 1, &failed_seen, out);
            rel_assert(&rd, !out->w[i].acked, "a write succeeded under a persistent fault");
            break;
        }
    }
    budget_client_close(other);
    budget_client_close(root);
}

/* After the run, on the production budgetd: nothing acknowledged lost, nothing half-written,
 * and unanswered writes retried make no duplicate. */
static void check_on_disk(const fault_spec *f, run_result *res)
{
    budget_client *c = NULL;
    rel_event *log;
    bool sync = outcome_unknown(f);

    rd.binary = BUDGETD_PATH;
    rd.env[0][0] = '\0';
    rel_assert(&rd, rel_restart(&rd) == 0, "budgetd does not start on the data left by %s:%d",
               f->point, f->nth);
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    budget_client *other = e2e_client_as(&rd.d, &e2e_other);
    uint64_t head = rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    rel_assert(&rd, n == head, "log and head differ");

    size_t acked = 0;
    for (int i = 0; i < WRITES; i++) {
        write_rec *w = &res->w[i];
        if (!w->acked)
            continue;
        acked++;
        rel_assert(&rd, w->seq >= 1 && w->seq <= n && strcmp(log[w->seq - 1].id, w->id) == 0,
                   "%s:%d: acknowledged %s (seq %" PRIu64 ") is lost", f->point, f->nth, w->id,
                   w->seq);
    }
    /* Every event on disk was acknowledged, except after a sync failure: the batch whose
     * sync failed was written (the fault strikes after LMDB's commit) but never
     * acknowledged. Its retries below must then answer the seqs it already has. */
    if (!sync)
        rel_assert(&rd, n == REL_UNIT_EVENTS + acked,
                   "%s:%d: %zu events on disk but %zu acknowledged: a failed batch was written",
                   f->point, f->nth, n, acked);
    free(log);

    /* Retry what was not acknowledged: made now, or the seq it already has; never twice. */
    for (int i = 0; i < WRITES; i++) {
        write_rec *w = &res->w[i];
        rel_result r1, r2;
        if (w->acked || (w->unavailable == 0 && !w->unanswered))
            continue;
        budget_client *who = by_other(i) ? other : c;
        rel_write(who, w->op, w->args.sb.data, w->args.sb.size, &r1);
        rel_assert(&rd, r1.transport == 0 && r1.ok, "%s:%d: retry of %s: %s: %s", f->point, f->nth,
                   w->id, r1.code, r1.message);
        rel_write(who, w->op, w->args.sb.data, w->args.sb.size, &r2);
        rel_assert(&rd, r2.ok && r2.seq == r1.seq, "%s:%d: a second retry of %s made seq %" PRIu64,
                   f->point, f->nth, w->id, r2.seq);
    }
    n = rel_read_log(&rd, c, &log); /* asserts that no id is there twice */
    free(log);
    budget_client_close(other);
    budget_client_close(c);
    rel_stop_clean(&rd);
}

/* One run: returns true when the fault was met. */
static bool run_once(const fault_spec *f)
{
    run_result res;
    int status = 0;
    bool sync = outcome_unknown(f);
    bool map_full = strcmp(f->error, "MAP_FULL") == 0;

    memset(&res, 0, sizeof(res));
    for (int i = 0; i < WRITES; i++)
        pack_write(&res.w[i], i);
    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=%s:%d:%s:%s", f->point, f->nth, f->error,
             f->mode == MODE_ALWAYS ? "always" : "once");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");

    run_workload(f, &res);
    res.injected = rel_log_contains(&rd, "fault injected");

    if (map_full) {
        /* The map grows and the batch is retried: no client sees anything. */
        rel_assert(&rd, res.unavailable == 0, "MAP_FULL at %s %d reached a client", f->point,
                   f->nth);
        for (int i = 0; i < WRITES; i++)
            rel_assert(&rd, res.w[i].acked, "%s was not acknowledged", res.w[i].id);
        if (res.injected) {
            budget_client *c = NULL;
            budget_response r;
            rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
            rel_assert(&rd, budget_client_call(c, "stats", NULL, 0, &r) == 0 && r.ok, "stats");
            rel_assert(&rd, budget_map_int(&r.result, "map_growths", 0) >= 1,
                       "MAP_FULL was met but the map did not grow");
            budget_response_free(&r);
            budget_client_close(c);
        }
    } else if (res.injected) {
        /* After a fault of unknown outcome budgetd answers and stops at once: a client whose
         * send fails on the closing connection may never read that answer, so there the
         * batch may be left unanswered instead (and is retried below). */
        int unanswered = 0;
        for (int i = 0; i < WRITES; i++)
            unanswered += sync && res.w[i].unanswered;
        rel_assert(&rd, res.unavailable + unanswered >= 1,
                   "%s %d %s was met but no write was refused", f->point, f->nth, f->error);
    } else {
        rel_assert(&rd, res.unavailable == 0, "writes refused without a fault");
    }

    if (sync && res.injected) {
        rel_assert(&rd, res.ok_after_failure == 0, "%d writes acknowledged after a failed sync",
                   res.ok_after_failure);
        rel_assert(&rd, rel_wait_exit(&rd, 10000, &status) == 0,
                   "budgetd did not exit after a failed sync");
        rel_assert(&rd, WIFEXITED(status) && WEXITSTATUS(status) == 1,
                   "after a failed sync budgetd exited with status 0x%x, not 1", status);
        rel_assert(&rd, rel_log_contains(&rd, "sync failed"), "the log does not say why");
    } else {
        rel_stop_clean(&rd);
    }
    check_on_disk(f, &res);
    rel_cleanup(&rd);
    for (int i = 0; i < WRITES; i++)
        e2e_buf_destroy(&res.w[i].args);
    return res.injected;
}

/* N = 1, 2, ... until a run completes without meeting the fault. Returns the runs with it. */
static int series(const char *point, const char *error, fault_mode mode)
{
    fault_spec f = {point, error, mode, 0};
    int met = 0;
    /* RELIABILITY_FAULT_STRIDE=K tries N = 1, 1+K, 1+2K, ... (the valgrind pass, where each
     * run costs seconds); the default tries every N. */
    long stride = e2e_env_long("RELIABILITY_FAULT_STRIDE", 1);
    if (stride < 1)
        stride = 1;
    for (f.nth = 1; f.nth <= NTH_MAX; f.nth += (int)stride) {
        if (!run_once(&f))
            break;
        met++;
    }
    cr_assert(f.nth <= NTH_MAX, "the workload never completed under %s %s", point, error);
    fprintf(stderr, "faults: %s %s %s: met in %d runs (N=1..%d, step %ld), run N=%d completed\n",
            point, error, mode == MODE_ALWAYS ? "always" : "once", met, f.nth - (int)stride, stride,
            f.nth);
    return met;
}

Test(faults, put_failure_fails_its_batch_and_the_daemon_serves_on)
{
    cr_assert_gt(series("put", "ENOSPC", MODE_ONCE), 0);
    cr_assert_gt(series("put", "EIO", MODE_ONCE), 0);
}

Test(faults, commit_failure_fails_its_batch_and_the_daemon_serves_on)
{
    cr_assert_gt(series("commit", "ENOSPC", MODE_ONCE), 0);
    cr_assert_gt(series("commit", "EIO", MODE_ONCE), 0);
}

Test(faults, persistent_failure_refuses_writes_and_keeps_reads)
{
    cr_assert_gt(series("put", "EIO", MODE_ALWAYS), 0);
    cr_assert_gt(series("commit", "ENOSPC", MODE_ALWAYS), 0);
}

Test(faults, map_full_grows_the_map_and_the_batch_succeeds)
{
    cr_assert_gt(series("put", "MAP_FULL", MODE_ONCE), 0);
    cr_assert_gt(series("commit", "MAP_FULL", MODE_ONCE), 0);
}

Test(faults, sync_failure_acknowledges_nothing_and_exits_1)
{
    cr_assert_gt(series("sync", "EIO", MODE_ONCE), 0);
}

/* A commit whose meta page could not be written: its outcome is unknown, as after a failed
 * sync, and the batch is never answered "nothing was written". The fault strikes after a
 * commit that did write the batch, so a daemon that answered so and went on would leave an
 * event on disk that its client was told is not there. */
Test(faults, meta_write_failure_acknowledges_nothing_and_exits_1)
{
    cr_assert_gt(series("meta", "EIO", MODE_ONCE), 0);
}

/* A batch's record that cannot be written to the write-ahead file fails that batch alone:
 * nothing of it is synced, and the daemon serves on. */
Test(faults, write_ahead_record_failure_fails_its_batch_and_the_daemon_serves_on)
{
    cr_assert_gt(series("walwrite", "EIO", MODE_ONCE), 0);
    cr_assert_gt(series("walwrite", "ENOSPC", MODE_ALWAYS), 0);
}

/*
 * LMDB's data file is synced behind the write-ahead file by a thread of the store's own; a
 * small file (BUDGETD_WAL_BYTES) makes that happen every few writes. When that sync fails,
 * LMDB's file can no longer be trusted past the last checkpoint: the next write gets an
 * unknown outcome and budgetd exits 1. Every write acknowledged before is still there on the
 * next start (from the write-ahead file), and the log verifies.
 */
Test(faults, a_failed_background_sync_stops_the_daemon_and_loses_nothing)
{
    enum { WRITES_MAX = 400 };
    static char ids[WRITES_MAX][32];
    int acked = 0, status = 0;
    bool refused = false;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=lmdbsync:2:EIO");
    snprintf(rd.env[1], sizeof(rd.env[1]), "BUDGETD_WAL_BYTES=4096");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    budget_client *c = NULL;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    for (int i = 0; i < WRITES_MAX && !refused; i++) {
        e2e_buf args;
        rel_result r;
        snprintf(ids[acked], sizeof(ids[acked]), "bg-%d", i);
        e2e_buf_init(&args);
        rel_pack_grant(&args, ids[acked], "KS", 1000 + i);
        rel_write(c, "frame.grant", args.sb.data, args.sb.size, &r);
        e2e_buf_destroy(&args);
        if (r.transport == 0 && r.ok)
            acked++;
        else
            refused = true;
    }
    budget_client_close(c);
    rel_assert(&rd, rel_log_contains(&rd, "fault injected: lmdbsync call 2"),
               "LMDB was never synced behind the write-ahead file");
    rel_assert(&rd, refused, "budgetd acknowledged %d writes after its background sync failed",
               acked);
    rel_assert(&rd, rel_wait_exit(&rd, 10000, &status) == 0,
               "budgetd did not exit after its background sync failed");
    rel_assert(&rd, WIFEXITED(status) && WEXITSTATUS(status) == 1,
               "after a failed background sync budgetd exited with status 0x%x, not 1", status);

    rd.binary = BUDGETD_PATH;
    rd.env[0][0] = '\0';
    rel_assert(&rd, rel_restart(&rd) == 0, "budgetd does not start after the failed sync");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_verify(&rd, c);
    rel_event *log;
    size_t n = rel_read_log(&rd, c, &log);
    for (int i = 0; i < acked; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = strcmp(log[k].id, ids[i]) == 0;
        rel_assert(&rd, found, "acknowledged %s is lost", ids[i]);
    }
    free(log);
    budget_client_close(c);
    fprintf(stderr, "faults: lmdbsync EIO at its 2nd call: %d writes acknowledged, all kept\n",
            acked);
    rel_stop_clean(&rd);
}

/* A real map that fills: started at LMDB's smallest, it grows many times under load. */
Test(faults, a_tiny_map_grows_under_load)
{
    budget_client *c = NULL;
    e2e_buf b;
    char id[32];
    rel_event *log;
    uint64_t seqs[600];

    rd.binary = BUDGETD_PATH;
    rd.extra[0] = "--map-size";
    rd.extra[1] = "65536";
    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    e2e_buf_init(&b);
    for (int i = 0; i < 600; i++) {
        rel_result r;
        snprintf(id, sizeof(id), "map-%d", i);
        rel_pack_grant(&b, id, "KS", 1000 + i);
        rel_write(c, "frame.grant", b.sb.data, b.sb.size, &r);
        rel_assert(&rd, r.transport == 0 && r.ok, "write %d: %s", i, r.code);
        seqs[i] = r.seq;
    }
    budget_response s;
    rel_assert(&rd, budget_client_call(c, "stats", NULL, 0, &s) == 0 && s.ok, "stats");
    int64_t growths = budget_map_int(&s.result, "map_growths", 0);
    fprintf(stderr, "faults: a 64 KiB map grew %" PRId64 " times to %" PRId64 " bytes\n", growths,
            budget_map_int(&s.result, "map_bytes", 0));
    rel_assert(&rd, growths >= 1, "the map never grew");
    budget_response_free(&s);
    budget_client_close(c);
    e2e_buf_destroy(&b);
    rel_stop_clean(&rd);

    rd.extra[0] = rd.extra[1] = NULL;
    rel_assert(&rd, rel_restart(&rd) == 0, "restart");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    rel_assert(&rd, n == REL_UNIT_EVENTS + 600, "%zu events after the restart", n);
    for (int i = 0; i < 600; i++) {
        snprintf(id, sizeof(id), "map-%d", i);
        rel_assert(&rd, strcmp(log[seqs[i] - 1].id, id) == 0, "%s is lost", id);
    }
    free(log);
    budget_client_close(c);
}

/* One request of the pipelined failure test: a grant of `frame`, or a hello. */
static void pipe_request(e2e_buf *b, uint64_t id, const char *frame)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, frame ? 3 : 2);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", frame ? "frame.grant" : "hello");
    if (frame) {
        msgpack_pack_str(&b->pk, 4);
        msgpack_pack_str_body(&b->pk, "args", 4);
        msgpack_pack_map(&b->pk, 5 + E2E_DECISION_PAIRS);
        e2e_kv_str(b, "id", frame);
        e2e_kv_str(b, "unit", "KS");
        e2e_kv_int(b, "year", 2021);
        e2e_kv_int(b, "amount", 100);
        e2e_kv_str(b, "title", "Utökat trygghetsarbete");
        e2e_kv_decision(b);
    }
    e2e_frame_end(b);
}

/*
 * Writes pipelined behind a write whose commit fails are checked against the ledger without
 * it: the same grant sent again on the same connection is written as new (the first seq after
 * the units), not refused as a conflict with an event that was never written, and the hello
 * between them shows the log as it was.
 */
Test(faults, writes_behind_a_failed_commit_see_the_ledger_without_it)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=commit:1:EIO");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    int fd = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, fd >= 0, "connect");
    e2e_buf_init(&b);
    pipe_request(&b, 1, "pipe-f1");
    pipe_request(&b, 2, NULL);
    pipe_request(&b, 3, "pipe-f1");
    rel_assert(&rd, e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");
    for (uint64_t id = 1; id <= 3; id++) {
        rel_assert(&rd, e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "no answer to request %" PRIu64, id);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env), "malformed answer");
        rel_assert(&rd, env.id == id, "answer %" PRIu64 " out of order", env.id);
        if (id == 1)
            rel_assert(&rd, !env.ok && strcmp(env.code, "unavailable") == 0,
                       "the failed commit was answered %s", env.ok ? "ok" : env.code);
        if (id == 2)
            rel_assert(&rd, env.ok && e2e_map_uint(env.result, "head") == REL_UNIT_EVENTS,
                       "hello after the failed commit does not show an empty log");
        if (id == 3)
            rel_assert(&rd, env.ok && e2e_map_uint(env.result, "seq") == REL_UNIT_EVENTS + 1,
                       "the grant sent again was answered %s", env.ok ? "ok" : env.code);
        msgpack_unpacked_destroy(&u);
    }
    close(fd);
    e2e_buf_destroy(&b);
    rel_stop_clean(&rd);
}

/* Waits (bounded, stretched) until the daemon's log holds `text`. */
static bool wait_log(const char *text, int timeout_ms)
{
    int64_t deadline = e2e_now_us() + (int64_t)timeout_ms * e2e_slow() * 1000;
    while (!rel_log_contains(&rd, text)) {
        if (e2e_now_us() > deadline)
            return false;
        rel_sleep_ms(5);
    }
    return true;
}

/* The answer to the oldest request sent on `c` without waiting, as rel_write reports one. */
static void answer_of(budget_client *c, rel_result *out)
{
    budget_response resp;
    memset(out, 0, sizeof(*out));
    int rc = budget_client_recv(c, &resp);
    if (rc != 0) {
        out->transport = rc;
        return;
    }
    out->ok = resp.ok;
    if (resp.ok)
        out->seq = (uint64_t)budget_map_int(&resp.result, "seq", 0);
    snprintf(out->code, sizeof(out->code), "%s", resp.ok ? "" : resp.code);
    snprintf(out->message, sizeof(out->message), "%s", resp.ok ? "" : resp.message);
    budget_response_free(&resp);
}

/*
 * A retry counts only from the uid that first sent it. Root proposes an allocation; its
 * commit is held 2 s and then fails. Meanwhile nobody (the second identity) sends the same
 * proposal, id and content alike. Were that taken for a retry of root's, it would wait on
 * root's commit and, when that failed, be written as nobody's own; root, retrying, would get
 * `ok` for an event the log says nobody proposed, and could then approve its own proposal.
 * Now nobody is answered `conflict` at once, root's retry writes root's proposal, four-eyes
 * refuses root's approval and allows nobody's, and nobody's proposal sent again once root's
 * is durable is a conflict too.
 */
Test(faults, a_retry_counts_only_from_the_uid_that_sent_it)
{
    e2e_buf grant, prop, dec;
    rel_result r, ra, rb;
    budget_client *a = NULL, *b = NULL;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=commit:2:DELAY=%d,commit:2:EIO",
             2000 * e2e_slow());
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &a) == 0, "connect");
    b = e2e_client_as(&rd.d, &e2e_other);
    e2e_buf_init(&grant);
    e2e_buf_init(&prop);
    e2e_buf_init(&dec);
    rel_pack_grant(&grant, "uid-f", "KS", 1000000);
    rel_write(a, "frame.grant", grant.sb.data, grant.sb.size, &r);
    rel_assert(&rd, r.ok, "the grant: %s %s", r.code, r.message);
    rel_pack_propose(&prop, "uid-a", "uid-f", "SON", 1000);

    /* Root's proposal, whose commit is held and then fails. */
    rel_assert(&rd, budget_client_send(a, "allocation.propose", prop.sb.data, prop.sb.size) > 0,
               "send root's proposal");
    rel_assert(&rd, wait_log("fault injected: commit call 2 waits", 5000),
               "root's commit was never held");
    /* Nobody's identical proposal while root's is in flight. */
    rel_assert(&rd, budget_client_send(b, "allocation.propose", prop.sb.data, prop.sb.size) > 0,
               "send nobody's proposal");
    answer_of(b, &rb);
    answer_of(a, &ra);
    rel_assert(&rd, ra.transport == 0 && !ra.ok && strcmp(ra.code, "unavailable") == 0,
               "root's failed commit was answered %s", ra.ok ? "ok" : ra.code);
    rel_assert(&rd, rb.transport == 0 && !rb.ok && strcmp(rb.code, "conflict") == 0,
               "nobody's copy of root's proposal in flight was answered %s (seq %" PRIu64 ")",
               rb.ok ? "ok" : rb.code, rb.seq);
    rel_assert(&rd, rel_log_contains(&rd, "fault injected: commit call 2 fails"),
               "the commit did not fail");

    /* Root retries: its own proposal is written. */
    rel_write(a, "allocation.propose", prop.sb.data, prop.sb.size, &r);
    rel_assert(&rd, r.ok, "root's retry: %s %s", r.code, r.message);
    uint64_t proposed = r.seq;
    /* Once durable, nobody's copy is still a conflict, and root's retry still its own. */
    rel_write(b, "allocation.propose", prop.sb.data, prop.sb.size, &r);
    rel_assert(&rd, !r.ok && strcmp(r.code, "conflict") == 0,
               "nobody's copy of root's durable proposal was answered %s", r.ok ? "ok" : r.code);
    rel_write(a, "allocation.propose", prop.sb.data, prop.sb.size, &r);
    rel_assert(&rd, r.ok && r.seq == proposed, "root's second retry: %s seq %" PRIu64, r.code,
               r.seq);

    /* Four-eyes follows the log: root proposed, so root may not approve; nobody may. */
    rel_pack_decide(&dec, "uid-d", "uid-a");
    rel_write(a, "approve", dec.sb.data, dec.sb.size, &r);
    rel_assert(&rd, !r.ok && strcmp(r.code, "forbidden") == 0,
               "root approved the proposal it sent: %s", r.ok ? "ok" : r.code);
    rel_write(b, "approve", dec.sb.data, dec.sb.size, &r);
    rel_assert(&rd, r.ok, "nobody's approval: %s %s", r.code, r.message);

    budget_client_close(a);
    budget_client_close(b);
    e2e_buf_destroy(&grant);
    e2e_buf_destroy(&prop);
    e2e_buf_destroy(&dec);
    rel_stop_clean(&rd);
}

/* True when a frame is waiting to be read on `fd`. */
static bool answer_waiting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/*
 * A read never shows an event that is not durable. The commit of a grant is held for 300 ms
 * (a slow disk; longer in a slow build); meanwhile another connection asks balances over and over.
 * budgetd answers a write as soon as its commit returns, before it handles anything else, so a read
 * that shows the frame must find the grant's answer already waiting on the writer's socket; and a
 * read sent after that answer arrived must show the frame.
 */
Test(faults, reads_never_show_a_write_before_it_is_durable)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    int checked = 0;

    rd.binary = BUDGETD_FAULTY_PATH;
    int hold_ms = 300 * e2e_slow();
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=commit:1:DELAY=%d", hold_ms);
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    int writer = e2e_raw_connect(rd.d.socket);
    int reader = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, writer >= 0 && reader >= 0, "connect");
    e2e_buf_init(&b);
    pipe_request(&b, 1, "slow-frame");
    rel_assert(&rd, e2e_raw_send(writer, b.sb.data, b.sb.size) == 0, "send the grant");

    for (uint64_t id = 1; id <= 200 * (uint64_t)e2e_slow(); id++) {
        bool answered_before = answer_waiting(writer);
        e2e_buf_clear(&b);
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_uint(&b, "id", id);
        e2e_kv_str(&b, "op", "balances");
        msgpack_pack_str(&b.pk, 4);
        msgpack_pack_str_body(&b.pk, "args", 4);
        msgpack_pack_map(&b.pk, 1);
        e2e_kv_str(&b, "frame", "slow-frame");
        e2e_frame_end(&b);
        rel_assert(&rd, e2e_raw_send(reader, b.sb.data, b.sb.size) == 0, "send balances");
        rel_assert(&rd, e2e_raw_recv(reader, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "no answer to balances %" PRIu64, id);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env), "malformed answer");
        if (env.ok) {
            rel_assert(&rd, answer_waiting(writer),
                       "balances %" PRIu64 " showed the frame before its commit was answered", id);
        } else {
            rel_assert(&rd, strcmp(env.code, "not_found") == 0, "balances %" PRIu64 " failed: %s",
                       id, env.code);
            rel_assert(&rd, !answered_before,
                       "balances %" PRIu64 " sent after the grant's answer did not show it", id);
            checked++;
        }
        msgpack_unpacked_destroy(&u);
        if (answered_before)
            break;
        rel_sleep_ms(5);
    }
    rel_assert(&rd, checked > 0, "no read fell inside the commit's %d ms", hold_ms);
    rel_assert(&rd, e2e_raw_recv(writer, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
               "the grant was not answered");
    rel_assert(&rd, e2e_envelope_read(&u.data, &env) && env.ok, "the grant was refused");
    msgpack_unpacked_destroy(&u);
    fprintf(stderr, "faults: %d reads during a held commit saw none of it\n", checked);
    close(writer);
    close(reader);
    e2e_buf_destroy(&b);
    rel_stop_clean(&rd);
}

/* Sends the request framed in `b` (id `id`) on raw connection `fd`, and frees `b`; true when
 * it is answered ok within the frame timeout. */
static bool raw_ask(int fd, e2e_buf *b, uint64_t id)
{
    msgpack_unpacked u;
    e2e_envelope env;
    bool ok = false;

    if (e2e_raw_send(fd, b->sb.data, b->sb.size) == 0 &&
        e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME) {
        ok = e2e_envelope_read(&u.data, &env) && env.ok && env.id == id;
        msgpack_unpacked_destroy(&u);
    }
    e2e_buf_destroy(b);
    return ok;
}

static bool raw_hello(int fd, uint64_t id)
{
    e2e_buf b;
    e2e_buf_init(&b);
    pipe_request(&b, id, NULL);
    return raw_ask(fd, &b, id);
}

/* An `events` read of one event: a long read, answered by a worker job. */
static bool raw_events(int fd, uint64_t id)
{
    e2e_buf b;
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", id);
    e2e_kv_str(&b, "op", "events");
    msgpack_pack_str(&b.pk, 4);
    msgpack_pack_str_body(&b.pk, "args", 4);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_uint(&b, "limit", 1);
    e2e_frame_end(&b);
    return raw_ask(fd, &b, id);
}

#define SLOW_CLIENTS 5

/*
 * The user name and groups of a connecting client come from the user database, which may be a
 * directory service that is slow or down. Looking up nobody (the second identity) is made to
 * take 3 s, and nobody connects 5 times, each sending a hello. Meanwhile a client already
 * connected is answered 20 hellos and a long read, and a new root client connects and is
 * answered; and none of nobody's hellos is answered yet. Then all are, after one lookup.
 * Were the lookup made on the loop thread, every client would wait; were nobody's 5
 * connections looked up apiece (the last comes from a process of another group), they would
 * fill the lookups allowed at once and the new client would wait its turn.
 */
Test(faults, a_slow_user_database_holds_up_only_the_client_it_is_slow_for)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    int slow[SLOW_CLIENTS];

    rd.binary = BUDGETD_FAULTY_PATH;
    /* Not stretched by the build's slowness: the others' 23 round trips must fit in it, and
     * the stop waits for the lookups running. */
    int delay_ms = 3000;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_LOOKUP_DELAY=%u:%d", E2E_OTHER_UID, delay_ms);
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    int early = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, early >= 0 && raw_hello(early, 1), "the first client was not served");

    int64_t began = e2e_now_ms();
    e2e_buf_init(&b);
    pipe_request(&b, 7, NULL);
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        /* The last from a process whose group is another: the lookup is the uid's all the
         * same (its other groups come with it). */
        e2e_identity who = e2e_other;
        if (i == SLOW_CLIENTS - 1)
            who = (e2e_identity){E2E_OTHER_UID, 60100, {E2E_OTHER_GID}, 1};
        slow[i] = e2e_raw_connect_as(rd.d.socket, &who);
        rel_assert(&rd, slow[i] >= 0, "nobody cannot connect: %d", slow[i]);
        rel_assert(&rd, e2e_raw_send(slow[i], b.sb.data, b.sb.size) == 0, "send nobody's hello");
    }

    for (uint64_t id = 2; id < 22; id++)
        rel_assert(&rd, raw_hello(early, id), "hello %" PRIu64 " waited for nobody's lookup", id);
    rel_assert(&rd, raw_events(early, 22), "a long read waited for nobody's lookup");
    int late = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, late >= 0 && raw_hello(late, 1), "a new client waited for nobody's lookup");
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        struct pollfd p = {.fd = slow[i], .events = POLLIN};
        rel_assert(&rd, poll(&p, 1, 0) == 0, "the others were served only after a lookup");
    }

    for (int i = 0; i < SLOW_CLIENTS; i++) {
        rel_assert(&rd, e2e_raw_recv(slow[i], delay_ms + E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "nobody's hello %d was never answered", i);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env) && env.ok && env.id == 7,
                   "nobody's hello %d was refused", i);
        msgpack_unpacked_destroy(&u);
    }
    rel_assert(&rd, e2e_now_ms() - began >= delay_ms, "nobody was answered before its lookup");
    rel_assert(&rd, rel_log_count(&rd, "looking up uids 65534 to 65534") == 1, "no delay set");
    int lookups = rel_log_count(&rd, "the lookup of uid 65534 waits");
    rel_assert(&rd, lookups == 1, "nobody's 5 connections were looked up %d times", lookups);
    fprintf(stderr,
            "faults: 21 hellos, a long read and a new client served during a %d ms "
            "lookup for %d connections\n",
            delay_ms, SLOW_CLIENTS);
    close(early);
    close(late);
    for (int i = 0; i < SLOW_CLIENTS; i++)
        close(slow[i]);
    e2e_buf_destroy(&b);
    rel_stop_clean(&rd);
}

#define SLOW_UIDS 4

/*
 * A directory that is slow for everyone: 4 users connect, and looking each up takes 2 s. At
 * most 2 lookups run at once, so libuv's pool (4 threads) keeps threads for long reads: a
 * client already connected is answered 5 long reads while they wait. Then every one of the 4
 * is answered. Were all 4 let run at once, the long reads would wait for them.
 */
Test(faults, lookups_of_a_slow_directory_leave_threads_for_long_reads)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    int slow[SLOW_UIDS];
    e2e_identity who[SLOW_UIDS];

    rd.binary = BUDGETD_FAULTY_PATH;
    int delay_ms = 2000;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_LOOKUP_DELAY=60001-%d:%d", 60000 + SLOW_UIDS,
             delay_ms);
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    int early = e2e_raw_connect(rd.d.socket);
    rel_assert(&rd, early >= 0 && raw_hello(early, 1), "the first client was not served");

    e2e_buf_init(&b);
    pipe_request(&b, 7, NULL);
    for (int i = 0; i < SLOW_UIDS; i++) {
        who[i] = (e2e_identity){60001 + (uint32_t)i, E2E_OTHER_GID, {0}, 0};
        slow[i] = e2e_raw_connect_as(rd.d.socket, &who[i]);
        rel_assert(&rd, slow[i] >= 0, "uid %u cannot connect: %d", who[i].uid, slow[i]);
        rel_assert(&rd, e2e_raw_send(slow[i], b.sb.data, b.sb.size) == 0, "send a hello");
    }
    for (uint64_t id = 2; id < 7; id++)
        rel_assert(&rd, raw_events(early, id), "long read %" PRIu64 " waited for the lookups", id);
    for (int i = 0; i < SLOW_UIDS; i++) {
        struct pollfd p = {.fd = slow[i], .events = POLLIN};
        rel_assert(&rd, poll(&p, 1, 0) == 0, "the long reads were served only after a lookup");
    }
    for (int i = 0; i < SLOW_UIDS; i++) {
        rel_assert(&rd, e2e_raw_recv(slow[i], 2 * delay_ms + E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "uid %u was never answered", who[i].uid);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env) && env.ok && env.id == 7,
                   "uid %u was refused", who[i].uid);
        msgpack_unpacked_destroy(&u);
        close(slow[i]);
    }
    close(early);
    e2e_buf_destroy(&b);
    rel_stop_clean(&rd);
}

/*
 * Clients whose lookups outlast the idle timeout (1 s here; each lookup takes 3 s) are refused
 * `unavailable` and let go, rather than held for as long as the directory takes: 3 users, two
 * of them being looked up and the third waiting its turn. The lookups that end later find
 * their connections gone, and the one that waited is never looked up.
 */
Test(faults, a_lookup_longer_than_the_idle_timeout_is_given_up)
{
    e2e_buf b;
    msgpack_unpacked u;
    e2e_envelope env;
    e2e_identity who[3] = {
        e2e_other, {60001, E2E_OTHER_GID, {0}, 0}, {60002, E2E_OTHER_GID, {0}, 0}};
    int fds[3];

    rd.binary = BUDGETD_FAULTY_PATH;
    rd.extra[0] = "--idle-timeout";
    rd.extra[1] = "1";
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_LOOKUP_DELAY=60001-65534:3000");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    e2e_buf_init(&b);
    pipe_request(&b, 7, NULL);
    for (int i = 0; i < 3; i++) {
        fds[i] = e2e_raw_connect_as(rd.d.socket, &who[i]);
        rel_assert(&rd, fds[i] >= 0, "uid %u cannot connect: %d", who[i].uid, fds[i]);
        rel_assert(&rd, e2e_raw_send(fds[i], b.sb.data, b.sb.size) == 0, "send a hello");
    }
    for (int i = 0; i < 3; i++) {
        rel_assert(&rd, e2e_raw_recv(fds[i], E2E_FRAME_TIMEOUT_MS, &u) == E2E_FRAME,
                   "uid %u: no answer", who[i].uid);
        rel_assert(&rd, e2e_envelope_read(&u.data, &env) && !env.ok && env.id == 0,
                   "uid %u was not refused", who[i].uid);
        rel_assert(&rd, strcmp(env.code, "unavailable") == 0, "refused %s", env.code);
        msgpack_unpacked_destroy(&u);
        rel_assert(&rd, e2e_raw_wait_close(fds[i], E2E_FRAME_TIMEOUT_MS), "refused, not closed");
        close(fds[i]);
    }
    rel_assert(&rd, rel_log_count(&rd, "the user database did not say who uid") == 3,
               "not 3 log lines for them");
    rel_stop_clean(&rd); /* waits for the 2 lookups running, which find their connections gone */
    int lookups = rel_log_count(&rd, "fault injected: the lookup of uid");
    rel_assert(&rd, lookups == 2, "%d lookups ran, not 2", lookups);
    e2e_buf_destroy(&b);
}

/*
 * SIGTERM while lookups run and wait: nobody connects 3 times and 2 other users once each
 * (lookups of 1 s; two run, the third waits its turn), and the daemon is stopped once both
 * run. It exits 0 once the running lookups return, without starting the waiting one and
 * without touching a connection it has let go (ASan and valgrind check that).
 */
Test(faults, a_stop_while_lookups_run_is_clean)
{
    e2e_identity who[3] = {
        e2e_other, {60001, E2E_OTHER_GID, {0}, 0}, {60002, E2E_OTHER_GID, {0}, 0}};
    int fds[5];

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_LOOKUP_DELAY=60001-65534:1000");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    for (int i = 0; i < 5; i++) {
        fds[i] = e2e_raw_connect_as(rd.d.socket, &who[i < 3 ? 0 : i - 2]);
        rel_assert(&rd, fds[i] >= 0, "connect %d: %d", i, fds[i]);
    }
    /* Nobody's 3 connections share a lookup, 60001 has the other: both run, 60002 waits. */
    int running = 0;
    for (int64_t deadline = e2e_now_ms() + E2E_FRAME_TIMEOUT_MS; e2e_now_ms() < deadline;) {
        running = rel_log_count(&rd, "fault injected: the lookup of uid");
        if (running >= 2)
            break;
        rel_sleep_ms(10);
    }
    rel_assert(&rd, running == 2, "%d lookups running, not 2", running);
    int64_t began = e2e_now_ms();
    rel_stop_clean(&rd);
    int64_t took = e2e_now_ms() - began;
    running = rel_log_count(&rd, "fault injected: the lookup of uid");
    rel_assert(&rd, running == 2, "the stop started the lookup that waited (%d in all)", running);
    fprintf(stderr, "faults: stopped %lld ms after SIGTERM with lookups running\n",
            (long long)took);
    for (int i = 0; i < 5; i++)
        close(fds[i]);
}

/* The `events` read of raw_events, framed into `b` (not sent). */
static void pack_events(e2e_buf *b, uint64_t id)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", "events");
    e2e_pack_str(b, "args");
    msgpack_pack_map(&b->pk, 1);
    e2e_kv_uint(b, "limit", 1);
    e2e_frame_end(b);
}

/* The next answer on `fd` within `timeout_ms`: its envelope, and false when none came. */
static bool answer_within(int fd, int timeout_ms, e2e_envelope *env, char *message, size_t size)
{
    msgpack_unpacked u;
    if (e2e_raw_recv(fd, timeout_ms, &u) != E2E_FRAME)
        return false;
    bool read = e2e_envelope_read(&u.data, env);
    message[0] = '\0';
    if (read && !env->ok)
        budget_map_str(budget_map_get(&u.data, "error"), "message", message, size);
    msgpack_unpacked_destroy(&u);
    return read;
}

/* Long reads of one uid: 4 on each of 16 connections (a connection takes at most 4 at once:
 * each may answer 1 MiB, and its output is 4 MiB). */
#define HOG_CONNS 16
#define HOG_READS_PER_CONN 4
#define HOG_READS (HOG_CONNS * HOG_READS_PER_CONN)

/*
 * Long reads (events, verify, balances as_of) run on libuv's pool of 4 threads. One uid
 * queues 64 of them (on 16 connections), each made to take 2 s: the names and groups of new clients
 * were looked up on that pool too, behind the 64 (16 s), so a new user's hello waited, or was
 * refused by the idle timeout. Now lookups have threads of their own: nobody's hello is answered at
 * once. A uid may have 16 long reads running or waiting: the other 48 are answered
 * `unavailable` at once. And the turns on the pool are fair: nobody's long read runs when the
 * first thread is free, not after root's 16.
 */
Test(faults, long_reads_of_one_uid_hold_up_neither_new_clients_nor_another_uid)
{
    e2e_buf b;
    e2e_envelope env;
    char message[300];

    rd.binary = BUDGETD_FAULTY_PATH;
    int delay_ms = 2000; /* not stretched: what it is compared with is */
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_JOB_DELAY=%d", delay_ms);
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    rel_assert(&rd, rel_log_contains(&rd, "every worker job takes 2000 ms longer"), "no delay set");

    int hog[HOG_CONNS];
    e2e_buf_init(&b);
    for (uint64_t id = 1; id <= HOG_READS_PER_CONN; id++)
        pack_events(&b, id);
    for (int i = 0; i < HOG_CONNS; i++) {
        hog[i] = e2e_raw_connect(rd.d.socket);
        rel_assert(&rd, hog[i] >= 0, "root cannot connect");
        rel_assert(&rd, e2e_raw_send(hog[i], b.sb.data, b.sb.size) == 0, "send the long reads");
    }
    e2e_buf_destroy(&b);
    /* The daemon took all 64 (and this stats). */
    budget_client *c = NULL;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    uint64_t requests = 0;
    for (int64_t deadline = e2e_now_ms() + E2E_FRAME_TIMEOUT_MS; e2e_now_ms() < deadline;) {
        budget_response r;
        rel_assert(&rd, budget_client_call(c, "stats", NULL, 0, &r) == 0 && r.ok, "stats");
        requests = (uint64_t)budget_map_int(&r.result, "requests", 0);
        budget_response_free(&r);
        if (requests >= HOG_READS + 1)
            break;
        rel_sleep_ms(10);
    }
    budget_client_close(c);
    rel_assert(&rd, requests >= HOG_READS + 1, "the daemon took %" PRIu64 " requests", requests);

    /* A new user is looked up and answered at once. */
    int64_t began = e2e_now_ms();
    int other = e2e_raw_connect_as(rd.d.socket, &e2e_other);
    rel_assert(&rd, other >= 0, "nobody cannot connect: %d", other);
    e2e_buf_init(&b);
    pipe_request(&b, 7, NULL);
    rel_assert(&rd, e2e_raw_send(other, b.sb.data, b.sb.size) == 0, "send nobody's hello");
    e2e_buf_destroy(&b);
    int bound_ms = 1000 * e2e_slow();
    rel_assert(&rd, answer_within(other, bound_ms, &env, message, sizeof(message)),
               "nobody's hello was not answered within %d ms, behind root's long reads", bound_ms);
    rel_assert(&rd, env.ok && env.id == 7, "nobody's hello was refused: %s: %s", env.code, message);
    int64_t hello_ms = e2e_now_ms() - began;

    /* Nobody's long read runs when the first thread is free: within two of root's. */
    began = e2e_now_ms();
    e2e_buf_init(&b);
    pack_events(&b, 8);
    rel_assert(&rd, e2e_raw_send(other, b.sb.data, b.sb.size) == 0, "send nobody's read");
    e2e_buf_destroy(&b);
    bound_ms = 2 * delay_ms + 1500 * e2e_slow();
    rel_assert(&rd, answer_within(other, bound_ms, &env, message, sizeof(message)),
               "nobody's long read was not answered within %d ms", bound_ms);
    rel_assert(&rd, env.ok && env.id == 8, "nobody's long read failed: %s: %s", env.code, message);
    int64_t read_ms = e2e_now_ms() - began;

    /* Root's: 16 answered, the other 48 refused at once (answered in order behind them). */
    int ok = 0, refused = 0;
    for (int i = 0; i < HOG_READS; i++) {
        uint64_t id = (uint64_t)(i % HOG_READS_PER_CONN) + 1;
        rel_assert(&rd,
                   answer_within(hog[i / HOG_READS_PER_CONN], 8 * delay_ms + E2E_FRAME_TIMEOUT_MS,
                                 &env, message, sizeof(message)),
                   "root's long read %" PRIu64 " was not answered", id);
        rel_assert(&rd, env.id == id, "answer %" PRIu64 " for request %" PRIu64, env.id, id);
        if (env.ok) {
            ok++;
            continue;
        }
        rel_assert(&rd, strcmp(env.code, "unavailable") == 0, "read %" PRIu64 ": %s: %s", id,
                   env.code, message);
        rel_assert(&rd,
                   strstr(message, "uid 0 has 16 long reads") != NULL &&
                       strstr(message, "the most one uid may") != NULL,
                   "read %" PRIu64 " refused with \"%s\"", id, message);
        refused++;
    }
    rel_assert(&rd, ok == (int)BUDGET_READ_JOBS_PER_UID_MAX && refused == HOG_READS - ok,
               "root's long reads: %d answered, %d refused", ok, refused);
    fprintf(stderr,
            "faults: behind 64 long reads of 2 s: a new user's hello in %lld ms, its long read "
            "in %lld ms; root had %d run and %d refused\n",
            (long long)hello_ms, (long long)read_ms, ok, refused);
    close(other);
    for (int i = 0; i < HOG_CONNS; i++)
        close(hog[i]);
    rel_stop_clean(&rd);
}

/* Grants frame `id` (100 öre to KS) and asserts it is acknowledged. */
static void grant_ok(budget_client *c, const char *id)
{
    e2e_buf b;
    rel_result res;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", id);
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Utökat trygghetsarbete");
    e2e_kv_decision(&b);
    e2e_kv_str(&b, "reference", id); /* a decision of its own: not a duplicate grant */
    rel_write(c, "frame.grant", b.sb.data, b.sb.size, &res);
    rel_assert(&rd, res.ok, "the grant of %s was refused: %s", id, res.code);
    e2e_buf_destroy(&b);
}

/*
 * The log's time never goes backwards, though the clock may: budgetd runs a day ahead and
 * writes two events, then restarts with the clock right (a day back) and writes two more.
 * Their ts are not earlier than those before, and the chain verifies.
 */
Test(faults, a_clock_set_back_does_not_turn_the_log_back)
{
    rel_event *log = NULL;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_CLOCK_OFFSET_MS=86400000");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    budget_client *c = NULL;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    grant_ok(c, "ahead-1");
    grant_ok(c, "ahead-2");
    budget_client_close(c);
    rel_stop_clean(&rd);

    rd.env[0][0] = '\0';
    rel_assert(&rd, rel_restart(&rd) == 0, "restart with the clock set back");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect again");
    grant_ok(c, "back-1");
    grant_ok(c, "back-2");
    rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    rel_assert(&rd, n == REL_UNIT_EVENTS + 4, "%zu events", n);
    uint64_t wall = (uint64_t)time(NULL) * 1000;
    rel_assert(&rd, log[REL_UNIT_EVENTS].ts_ms > wall + 86000000,
               "the first event after the registrations is not a day ahead");
    for (size_t i = 1; i < n; i++)
        rel_assert(&rd, log[i].ts_ms >= log[i - 1].ts_ms,
                   "event %" PRIu64 " (%" PRIu64 ") is stamped before event %" PRIu64 " (%" PRIu64
                   ")",
                   log[i].seq, log[i].ts_ms, log[i - 1].seq, log[i - 1].ts_ms);
    free(log);
    budget_client_close(c);
    rel_stop_clean(&rd);
}
