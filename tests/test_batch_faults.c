/*
 * A `batch` is all on disk or none: after a storage fault of budgetd-faulty (a put or commit
 * that fails, a sync that fails), after a commit that fails while the batch waits behind it,
 * and after SIGKILL at a random moment while batches are written. After each, the production
 * budgetd on the same folder holds every id of a batch or none of them, at consecutive seqs,
 * every acknowledged batch whole, and the chain verifies.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "rel_util.h"

#define BATCH_WRITES 6
#define NTH_MAX 40
#define CRASH_CYCLES_DEFAULT 6
#define CRASH_BATCHES_MAX 2000

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(batch_faults, .fini = teardown, .timeout = 600);

/* The ids of batch `tag`: a frame, then allocations from it. */
static void batch_id(char *out, size_t size, const char *tag, int i)
{
    snprintf(out, size, "%s-%d", tag, i);
}

/* {"writes": [frame.grant TAG-0, allocation.propose TAG-1.. from it]} */
static void pack_batch(e2e_buf *b, const char *tag)
{
    char id[64], frame[64];
    batch_id(frame, sizeof(frame), tag, 0);
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 1);
    e2e_pack_str(b, "writes");
    msgpack_pack_array(&b->pk, BATCH_WRITES);
    for (int i = 0; i < BATCH_WRITES; i++) {
        batch_id(id, sizeof(id), tag, i);
        msgpack_pack_map(&b->pk, 2);
        e2e_kv_str(b, "op", i == 0 ? "frame.grant" : "allocation.propose");
        e2e_pack_str(b, "args");
        msgpack_pack_map(&b->pk, i == 0 ? 5 + E2E_DECISION_PAIRS : 5);
        e2e_kv_str(b, "id", id);
        if (i == 0) {
            e2e_kv_str(b, "unit", "KS");
            e2e_kv_int(b, "year", 2021);
            e2e_kv_int(b, "amount", 1000000);
            e2e_kv_str(b, "title", "Utökat trygghetsarbete");
            e2e_kv_decision(b);
        } else {
            e2e_kv_str(b, "frame", frame);
            e2e_kv_str(b, "unit", "SON");
            e2e_kv_int(b, "amount", 1000);
            e2e_kv_str(b, "purpose", "Trygghetsinsatser");
        }
    }
}

/* Sends batch `tag`: 1 ok (its first seq in *seq), 0 refused (its code in `code`), -1 no answer. */
static int send_batch(budget_client *c, const char *tag, uint64_t *seq, char *code, size_t size)
{
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);
    pack_batch(&b, tag);
    int rc = budget_client_call(c, "batch", b.sb.data, b.sb.size, &r);
    e2e_buf_destroy(&b);
    if (rc != 0)
        return -1;
    int out = r.ok ? 1 : 0;
    if (r.ok) {
        const msgpack_object *w = budget_map_get(&r.result, "writes");
        *seq = w && w->type == MSGPACK_OBJECT_ARRAY && w->via.array.size == BATCH_WRITES
                   ? budget_map_int(&w->via.array.ptr[0], "seq", 0)
                   : 0;
    } else {
        snprintf(code, size, "%s", r.code);
    }
    budget_response_free(&r);
    return out;
}

/* How many ids of batch `tag` the log holds; each found must follow the one before. */
static int batch_in_log(const rel_event *log, size_t n, const char *tag, uint64_t *first)
{
    char id[64];
    int found = 0;
    uint64_t prev = 0;
    *first = 0;
    for (int i = 0; i < BATCH_WRITES; i++) {
        batch_id(id, sizeof(id), tag, i);
        for (size_t k = 0; k < n; k++) {
            if (strcmp(log[k].id, id) != 0)
                continue;
            rel_assert(&rd, i == 0 || found == 0 || log[k].seq == prev + 1,
                       "%s is at seq %" PRIu64 ", not right after %" PRIu64, id, log[k].seq, prev);
            if (i == 0)
                *first = log[k].seq;
            prev = log[k].seq;
            found++;
        }
    }
    return found;
}

/* The production budgetd on the folder: the chain verifies and batch `tag` is whole or
 * absent (whole when `acked`, at `acked_seq`); returns true when whole. */
static bool check_on_disk(const char *tag, bool acked, uint64_t acked_seq)
{
    rd.binary = NULL;
    rd.env[0][0] = '\0';
    rel_assert(&rd, rel_restart(&rd) == 0, "budgetd did not start on the folder");
    budget_client *c = NULL;
    rel_event *log = NULL;
    uint64_t first;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    int found = batch_in_log(log, n, tag, &first);
    rel_assert(&rd, found == 0 || found == BATCH_WRITES, "batch %s is in the log in part: %d of %d",
               tag, found, BATCH_WRITES);
    rel_assert(&rd, !acked || (found == BATCH_WRITES && first == acked_seq),
               "batch %s was acknowledged at %" PRIu64 " but the log holds %d of it", tag,
               acked_seq, found);
    /* Retried with the same ids, it is made once, or answers the seqs it has. */
    uint64_t seq = 0;
    char code[32] = "";
    rel_assert(&rd, send_batch(c, tag, &seq, code, sizeof(code)) == 1, "the retry was refused: %s",
               code);
    rel_assert(&rd, found == 0 || seq == first, "the retry answered %" PRIu64 ", not %" PRIu64, seq,
               first);
    free(log);
    n = rel_read_log(&rd, c, &log);
    rel_assert(&rd, batch_in_log(log, n, tag, &first) == BATCH_WRITES, "after the retry");
    free(log);
    budget_client_close(c);
    rel_stop_clean(&rd);
    return found == BATCH_WRITES;
}

/* One run under `fault`: a single grant, then the batch. True when the fault was met. */
static bool fault_run(const char *fault, bool exits)
{
    budget_client *c = NULL;
    uint64_t seq = 0;
    char code[32] = "";
    e2e_buf b;
    rel_result w;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=%s", fault);
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    e2e_buf_init(&b);
    rel_pack_grant(&b, "before", "KS", 100);
    rel_write(c, "frame.grant", b.sb.data, b.sb.size, &w);
    e2e_buf_destroy(&b);
    int rc = w.transport == 0 ? send_batch(c, "B", &seq, code, sizeof(code)) : -1;
    budget_client_close(c);
    bool met = rel_log_contains(&rd, "fault injected");
    rel_assert(&rd, rc != 0 || strcmp(code, "unavailable") == 0, "the batch was refused: %s", code);
    rel_assert(&rd, met || rc == 1, "no fault, and the batch was not written");
    if (exits && met) {
        int status = 0;
        rel_assert(&rd, rel_wait_exit(&rd, 10000, &status) == 0, "budgetd did not exit");
    } else {
        rel_stop_clean(&rd);
    }
    check_on_disk("B", rc == 1, seq);
    rel_cleanup(&rd);
    return met;
}

static void fault_series(const char *point, const char *error, bool exits)
{
    char fault[64];
    int nth;
    for (nth = 1; nth <= NTH_MAX; nth++) {
        snprintf(fault, sizeof(fault), "%s:%d:%s", point, nth, error);
        if (!fault_run(fault, exits))
            break;
    }
    fprintf(stderr, "batch_faults: %s %s met in %d runs\n", point, error, nth - 1);
    cr_assert(nth > 1, "the fault %s %s was never met", point, error);
    cr_assert(nth <= NTH_MAX, "the batch never went through under %s %s", point, error);
}

Test(batch_faults, a_failed_put_leaves_no_part_of_a_batch)
{
    fault_series("put", "EIO", false);
}

Test(batch_faults, a_failed_commit_leaves_no_part_of_a_batch)
{
    fault_series("commit", "ENOSPC", false);
}

Test(batch_faults, a_failed_sync_leaves_a_batch_whole_or_absent)
{
    fault_series("sync", "EIO", true);
}

/*
 * A batch that waits behind a commit that then fails is checked again, whole, against the
 * ledger without that commit: its allocation from the frame of the failed grant is refused,
 * its own grant with it, and nothing of it is written.
 */
Test(batch_faults, a_batch_behind_a_failed_commit_is_checked_again_whole)
{
    e2e_buf b;
    budget_response r;

    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_FAULT=put:1:DELAY=600,commit:1:EIO");
    cr_assert_eq(rel_start(&rd), 0, "budgetd-faulty did not start");
    budget_client *a = NULL, *c = NULL;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &a) == 0, "connect");
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    uint64_t head = e2e_head(c); /* the units rel_start registered */
    e2e_buf_init(&b);
    rel_pack_grant(&b, "G", "KS", 1000000);
    rel_assert(&rd, budget_client_send(a, "frame.grant", b.sb.data, b.sb.size) > 0, "send");
    rel_sleep_ms(200 * e2e_slow()); /* the grant is in flight, held by the slow put */

    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_pack_str(&b, "writes");
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "op", "frame.grant");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "X");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 1000);
    e2e_kv_str(&b, "title", "Utökat trygghetsarbete");
    e2e_kv_decision(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "op", "allocation.propose");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 5);
    e2e_kv_str(&b, "id", "X-1");
    e2e_kv_str(&b, "frame", "G");
    e2e_kv_str(&b, "unit", "SON");
    e2e_kv_int(&b, "amount", 1000);
    e2e_kv_str(&b, "purpose", "Trygghetsinsatser");
    e2e_call(c, "batch", &b, &r);
    rel_assert(&rd, !r.ok, "the batch was written without the frame it uses");
    rel_assert(&rd, strcmp(r.code, "not_found") == 0, "the batch was refused %s: %s", r.code,
               r.message);
    const msgpack_object *error = budget_map_get(&r.unpacked.data, "error");
    const msgpack_object *list = budget_map_get(error, "refusals");
    rel_assert(&rd,
               list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 1 &&
                   budget_map_int(&list->via.array.ptr[0], "index", -1) == 1,
               "the refusal is not of write 1");
    budget_response_free(&r);
    rel_assert(&rd, budget_client_recv(a, &r) == 0 && !r.ok, "the grant was not refused");
    budget_response_free(&r);
    rel_assert(&rd, e2e_head(c) == head, "something was written");
    e2e_buf_destroy(&b);
    budget_client_close(a);
    budget_client_close(c);
    rel_stop_clean(&rd);
    rel_cleanup(&rd);
}

/* What the writer thread of the crash test sent. */
typedef struct {
    const char *socket;
    int cycle;
    atomic_bool *stop;
    int sent;
    bool acked[CRASH_BATCHES_MAX];
    uint64_t seq[CRASH_BATCHES_MAX];
} crash_client;

static void crash_tag(char *out, size_t size, int cycle, int k)
{
    snprintf(out, size, "c%d-b%d", cycle, k);
}

static void *crash_main(void *arg)
{
    crash_client *cl = arg;
    budget_client *c = NULL;
    char tag[32], code[32];

    if (budget_client_connect(cl->socket, &c) != 0)
        return NULL;
    while (!atomic_load(&cl->stop[0]) && cl->sent < CRASH_BATCHES_MAX) {
        crash_tag(tag, sizeof(tag), cl->cycle, cl->sent);
        int k = cl->sent++;
        int rc = send_batch(c, tag, &cl->seq[k], code, sizeof(code));
        cl->acked[k] = rc == 1;
        if (rc < 0)
            break;
    }
    budget_client_close(c);
    return NULL;
}

/* After a restart: every batch sent is whole or absent, every acknowledged one whole where
 * it was acknowledged. */
static void crash_check(const crash_client *cl)
{
    budget_client *c = NULL;
    rel_event *log = NULL;
    char tag[32];
    uint64_t first;

    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    for (int k = 0; k < cl->sent; k++) {
        crash_tag(tag, sizeof(tag), cl->cycle, k);
        int found = batch_in_log(log, n, tag, &first);
        rel_assert(&rd, found == 0 || found == BATCH_WRITES, "batch %s in part: %d", tag, found);
        rel_assert(&rd, !cl->acked[k] || (found == BATCH_WRITES && first == cl->seq[k]),
                   "acknowledged batch %s lost", tag);
    }
    free(log);
    budget_client_close(c);
}

Test(batch_faults, sigkill_while_batches_are_written_leaves_each_whole_or_absent)
{
    static crash_client cl;
    pthread_t thread;
    atomic_bool stop;
    uint64_t rng = rel_seed("batch crash");
    long cycles = e2e_env_long("RELIABILITY_CRASH_CYCLES", CRASH_CYCLES_DEFAULT);
    int sent = 0;

    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    for (int k = 0; k < cycles; k++) {
        memset(&cl, 0, sizeof(cl));
        cl.socket = rd.d.socket;
        cl.cycle = k;
        cl.stop = &stop;
        atomic_store(&stop, false);
        cr_assert_eq(pthread_create(&thread, NULL, crash_main, &cl), 0);
        rel_sleep_ms(5 + (int)(rel_rand(&rng) % 200));
        e2e_daemon_kill(&rd.d);
        atomic_store(&stop, true);
        rel_assert(&rd, rel_join(&thread, 1, 10000, &rd), "the writer did not end");
        rel_assert(&rd, rel_restart(&rd) == 0, "budgetd did not start after SIGKILL");
        crash_check(&cl);
        sent += cl.sent;
    }
    fprintf(stderr, "batch_faults: %ld kills, %d batches sent\n", cycles, sent);
    rel_stop_clean(&rd);
}
