/*
 * The `batch` op against a real budgetd: its writes are checked against the ledger as each
 * leaves it (an allocation may use a frame granted earlier in the batch, two allocations that
 * each fit but not together are refused), committed in one group commit at consecutive seqs,
 * or refused together with every refusal and its index; dry runs, retries, limits, writes of
 * the wrong kind, and the role and units of each write under an access file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e_util.h"

static e2e_daemon bd;

/* The events start() writes before a test's own: the registrations of KS, SON and KFN. */
#define U 3

/* Starts budgetd and registers the units the tests name (three events, seqs 1..3). */
static void start(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static char conf_dir[64], conf_path[128];

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    if (conf_dir[0]) {
        unlink(conf_path);
        rmdir(conf_dir);
    }
}

TestSuite(batch, .fini = teardown, .timeout = 120);

/* ---- packing a batch ---------------------------------------------------------------------- */

/* {"writes": [n writes follow], "dry_run": dry_run} */
static void batch_begin(e2e_buf *b, uint32_t n, bool dry_run)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_pack_str(b, "dry_run");
    if (dry_run)
        msgpack_pack_true(&b->pk);
    else
        msgpack_pack_false(&b->pk);
    e2e_pack_str(b, "writes");
    msgpack_pack_array(&b->pk, n);
}

/* {"op": op, "args": {n pairs follow}} */
static void write_begin(e2e_buf *b, const char *op, uint32_t n)
{
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_str(b, "op", op);
    e2e_pack_str(b, "args");
    msgpack_pack_map(&b->pk, n);
}

static void w_grant(e2e_buf *b, const char *id, const char *unit, int64_t amount)
{
    write_begin(b, "frame.grant", 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "title", "Utökat trygghetsarbete");
    e2e_kv_decision(b);
    e2e_kv_str(b, "reference", id); /* a reference of its own: no grant is a duplicate */
}

static void w_propose(e2e_buf *b, const char *id, const char *frame, const char *unit,
                      int64_t amount)
{
    write_begin(b, "allocation.propose", 5);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "frame", frame);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "purpose", "Trygghetsinsatser");
}

static void w_register(e2e_buf *b, const char *id, const char *unit, const char *name)
{
    write_begin(b, "unit.register", 4);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_str(b, "name", name);
    e2e_kv_str(b, "kind", "nämnd");
}

/* ---- reading answers ---------------------------------------------------------------------- */

/* The refusals of a refused batch: count, and index and code of each (at most 8 kept). */
typedef struct {
    size_t count;
    uint64_t index[8];
    char code[8][32];
    char message[8][256];
} refusals;

static void read_refusals(const budget_response *r, refusals *out)
{
    memset(out, 0, sizeof(*out));
    const msgpack_object *error = budget_map_get(&r->unpacked.data, "error");
    e2e_assert(error != NULL, "no error in a refused batch");
    const msgpack_object *list = budget_map_get(error, "refusals");
    e2e_assert(list != NULL && list->type == MSGPACK_OBJECT_ARRAY, "no refusals list");
    out->count = list->via.array.size;
    for (size_t i = 0; i < out->count && i < 8; i++) {
        const msgpack_object *f = &list->via.array.ptr[i];
        out->index[i] = e2e_map_uint(f, "index");
        budget_map_str(f, "code", out->code[i], sizeof(out->code[i]));
        budget_map_str(f, "message", out->message[i], sizeof(out->message[i]));
    }
}

/* The "writes" of an ok batch answer, asserting `n` of them. */
static const msgpack_object *written(const budget_response *r, uint32_t n)
{
    e2e_assert(r->ok, "batch refused: %s: %s", r->code, r->message);
    const msgpack_object *w = budget_map_get(&r->result, "writes");
    e2e_assert(w != NULL && w->type == MSGPACK_OBJECT_ARRAY, "no writes in the answer");
    e2e_assert_int(w->via.array.size, n, "writes answered");
    return w;
}

/* The allocated + pending of a frame, from balances. */
static int64_t frame_reserved(budget_client *c, const char *frame)
{
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "frame", frame);
    e2e_call(c, "balances", &b, &r);
    e2e_assert(r.ok, "balances of %s: %s", frame, r.message);
    const msgpack_object *frames = budget_map_get(&r.result, "frames");
    e2e_assert(frames && frames->via.array.size == 1, "no frame %s", frame);
    int64_t v = budget_map_int(&frames->via.array.ptr[0], "allocated", -1) +
                budget_map_int(&frames->via.array.ptr[0], "pending", -1);
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    return v;
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(batch, an_allocation_may_use_a_frame_granted_earlier_in_the_batch_all_in_one_commit)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);

    uint64_t head = e2e_head(c), commits = e2e_stat(c, "batches");
    batch_begin(&b, 3, false);
    w_grant(&b, "KS-2021", "KS", 300000000);
    w_propose(&b, "ks-son", "KS-2021", "SON", 100000000);
    w_propose(&b, "ks-kfn", "KS-2021", "KFN", 50000000);
    e2e_call(c, "batch", &b, &r);
    const msgpack_object *w = written(&r, 3);
    e2e_assert(!budget_map_get(&r.result, "dry_run")->via.boolean, "a real batch says dry_run");
    const char *ids[] = {"KS-2021", "ks-son", "ks-kfn"};
    for (uint32_t i = 0; i < 3; i++) {
        e2e_assert_int(e2e_map_uint(&w->via.array.ptr[i], "seq"), head + 1 + i, "seq of a write");
        e2e_assert(e2e_map_str_is(&w->via.array.ptr[i], "id", ids[i]), "id of write %u", i);
    }
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), head + 3, "head after the batch");
    e2e_assert_int(e2e_stat(c, "batches"), commits + 1, "group commits for one batch");
    e2e_assert_int(frame_reserved(c, "KS-2021"), 150000000, "reserved of the frame");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, a_unit_registered_earlier_in_the_batch_may_be_named_by_the_writes_after_it)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    /* Named before it is registered: refused, and the registration is not written either. */
    uint64_t head = e2e_head(c);
    batch_begin(&b, 2, false);
    w_grant(&b, "BUN-2021", "BUN", 1000);
    w_register(&b, "unit-BUN", "BUN", "Barn- och ungdomsnämnden");
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a grant to a unit registered after it in the batch was written");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_int(f.index[0], 0, "index of the refused grant");
    e2e_assert_str(f.code[0], "not_found", "code");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), head, "head after a refused batch");

    batch_begin(&b, 3, false);
    w_register(&b, "unit-BUN", "BUN", "Barn- och ungdomsnämnden");
    w_grant(&b, "BUN-2021", "BUN", 1000);
    w_propose(&b, "bun-son", "BUN-2021", "SON", 400);
    e2e_call(c, "batch", &b, &r);
    written(&r, 3);
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), head + 3, "head after the batch");
    e2e_assert_int(frame_reserved(c, "BUN-2021"), 400, "reserved of the frame");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, two_allocations_that_each_fit_but_not_together_are_refused_and_nothing_is_written)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    batch_begin(&b, 1, false);
    w_grant(&b, "F", "KS", 100);
    e2e_call(c, "batch", &b, &r);
    written(&r, 1);
    budget_response_free(&r);
    uint64_t head = e2e_head(c);

    batch_begin(&b, 2, false);
    w_propose(&b, "a1", "F", "SON", 60);
    w_propose(&b, "a2", "F", "KFN", 60);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "two allocations over the frame were written");
    e2e_assert_str(r.code, "insufficient_funds", "code of the batch");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_int(f.index[0], 1, "index of the refused write");
    e2e_assert_str(f.code[0], "insufficient_funds", "code of the refusal");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), head, "head after a refused batch");
    e2e_assert_int(frame_reserved(c, "F"), 0, "reserved after a refused batch");

    /* Each alone fits: the first allocation was refused only with the second. */
    batch_begin(&b, 1, false);
    w_propose(&b, "a1", "F", "SON", 60);
    e2e_call(c, "batch", &b, &r);
    written(&r, 1);
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, every_bad_write_is_refused_with_its_index_and_nothing_is_written)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    batch_begin(&b, 6, false);
    w_grant(&b, "good", "KS", 100);
    write_begin(&b, "balances", 0); /* a read */
    w_grant(&b, "bad-amount", "KS", 0);
    write_begin(&b, "frame.grant", 1); /* missing args */
    e2e_kv_str(&b, "id", "short");
    w_propose(&b, "no-frame", "nowhere", "SON", 5);
    w_grant(&b, "good", "KS", 100); /* the same id twice */
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a batch with bad writes was written");
    read_refusals(&r, &f);
    /* What cannot be read is refused before the ledger is asked: 1 and 3. */
    e2e_assert_int(f.count, 2, "refusals of writes that cannot be read");
    e2e_assert_int(f.index[0], 1, "first refused");
    e2e_assert(strstr(f.message[0], "not a write op") != NULL, "message: %s", f.message[0]);
    e2e_assert_int(f.index[1], 3, "second refused");
    e2e_assert_str(f.code[1], "bad_request", "code of a write without its args");
    budget_response_free(&r);

    batch_begin(&b, 4, false);
    w_grant(&b, "good", "KS", 100);
    w_grant(&b, "bad-amount", "KS", 0);
    w_propose(&b, "no-frame", "nowhere", "SON", 5);
    w_grant(&b, "good", "KS", 100);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a batch with bad writes was written");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 3, "refusals");
    e2e_assert_int(f.index[0], 1, "first refused");
    e2e_assert_str(f.code[0], "bad_request", "a zero amount");
    e2e_assert_int(f.index[1], 2, "second refused");
    e2e_assert_str(f.code[1], "not_found", "an allocation of no frame");
    e2e_assert_int(f.index[2], 3, "third refused");
    e2e_assert_str(f.code[2], "conflict", "an id given twice");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U, "head after refused batches");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, a_grant_without_its_decision_is_refused_with_its_index_and_nothing_is_written)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    batch_begin(&b, 3, false);
    w_grant(&b, "F", "KS", 100);
    write_begin(&b, "frame.grant", 5); /* as a grant was written before decisions */
    e2e_kv_str(&b, "id", "G");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Utökat trygghetsarbete");
    w_propose(&b, "F-SON", "F", "SON", 50);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a batch with a grant without its decision was written");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_int(f.index[0], 1, "the grant without its decision");
    e2e_assert_str(f.code[0], "bad_request", "a grant without its decision");
    e2e_assert(strstr(f.message[0], "decision_body") != NULL, "message: %s", f.message[0]);
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U, "head after a refused batch");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, a_dry_run_answers_as_the_batch_would_be_and_writes_nothing)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    batch_begin(&b, 2, true);
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a1", "F", "SON", 60);
    e2e_call(c, "batch", &b, &r);
    const msgpack_object *w = written(&r, 2);
    e2e_assert(budget_map_get(&r.result, "dry_run")->via.boolean, "dry_run not said");
    e2e_assert_int(e2e_map_uint(&w->via.array.ptr[1], "seq"), U + 2, "seq a dry run would give");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U, "head after a dry run");

    batch_begin(&b, 2, true);
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a1", "F", "SON", 160);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a dry run over the frame passed");
    read_refusals(&r, &f);
    e2e_assert_int(f.index[0], 1, "refused write of a dry run");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U, "head after a refused dry run");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, a_retried_batch_answers_as_before_and_one_whose_ids_partly_exist_is_refused)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    refusals f;
    uint64_t seqs[2];
    e2e_buf_init(&b);

    batch_begin(&b, 2, false);
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a1", "F", "SON", 60);
    e2e_call(c, "batch", &b, &r);
    const msgpack_object *w = written(&r, 2);
    for (int i = 0; i < 2; i++)
        seqs[i] = e2e_map_uint(&w->via.array.ptr[i], "seq");
    budget_response_free(&r);

    e2e_call(c, "batch", &b, &r); /* the same again */
    w = written(&r, 2);
    for (int i = 0; i < 2; i++)
        e2e_assert_int(e2e_map_uint(&w->via.array.ptr[i], "seq"), seqs[i], "seq of a retry");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U + 2, "head after a retry");

    batch_begin(&b, 2, false); /* the same ids, other content */
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a1", "F", "SON", 61);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a retry with other content was answered ok");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals of a changed retry");
    e2e_assert_int(f.index[0], 1, "the changed write");
    e2e_assert_str(f.code[0], "conflict", "code");
    budget_response_free(&r);

    batch_begin(&b, 2, false); /* one id exists, one is new */
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a2", "F", "SON", 10);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "a batch whose ids partly exist was written");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_int(f.index[0], 0, "the existing id");
    e2e_assert_str(f.code[0], "conflict", "code");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U + 2, "head after refused retries");
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, limits_of_a_batch)
{
    start();
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    char id[32];
    e2e_buf_init(&b);

    batch_begin(&b, 0, false);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok && strcmp(r.code, "bad_request") == 0, "an empty batch: %s", r.code);
    budget_response_free(&r);

    batch_begin(&b, 1001, false);
    for (int i = 0; i < 1001; i++) {
        snprintf(id, sizeof(id), "f-%d", i);
        w_grant(&b, id, "KS", 100);
    }
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok && strcmp(r.code, "too_large") == 0, "1001 writes: %s", r.code);
    budget_response_free(&r);

    batch_begin(&b, 1000, false);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "f-%d", i);
        w_grant(&b, id, "KS", 100);
    }
    e2e_call(c, "batch", &b, &r);
    written(&r, 1000);
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), U + 1000, "head after 1000 writes");

    e2e_buf_clear(&b); /* an arg it does not take */
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_int(&b, "writes", 1);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok && strcmp(r.code, "bad_request") == 0, "writes not an array: %s", r.code);
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

Test(batch, subscribers_see_a_batch_as_its_events)
{
    start();
    budget_client *c = e2e_client(&bd), *s = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);

    e2e_call(s, "subscribe", NULL, &r);
    e2e_assert(r.ok, "subscribe refused");
    budget_response_free(&r);
    batch_begin(&b, 2, false);
    w_grant(&b, "F", "KS", 100);
    w_propose(&b, "a1", "F", "SON", 60);
    e2e_call(c, "batch", &b, &r);
    written(&r, 2);
    budget_response_free(&r);
    for (uint64_t seq = 1; seq <= 2; seq++) {
        e2e_assert(budget_client_recv(s, &r) == 0, "no push");
        const msgpack_object *ev = budget_map_get(&r.unpacked.data, "event");
        e2e_assert(ev != NULL, "a push without an event");
        e2e_assert_int(e2e_map_uint(ev, "seq"), seq, "seq pushed");
        budget_response_free(&r);
    }
    e2e_buf_destroy(&b);
    budget_client_close(s);
    budget_client_close(c);
}

/* ---- access ------------------------------------------------------------------------------- */

enum {
    UID_ADMIN = 60001,
    UID_CLERK = 60002,
    UID_SON_CLERK = 60007,
    UID_ADMIN_SON_CLERK = 60011, /* admin for every unit, clerk for SON only */
};

static const char access_text[] = "user 60001 admin\n"
                                  "user 60002 clerk\n"
                                  "user 60007 clerk SON\n"
                                  "user 60011 admin\n"
                                  "user 60011 clerk SON\n";

static budget_client *as(uint32_t uid)
{
    e2e_identity who = {uid, E2E_OTHER_GID, {0}, 0};
    return e2e_client_as(&bd, &who);
}

static void start_with_access(void)
{
    snprintf(conf_dir, sizeof(conf_dir), "/tmp/budgetd-batch-XXXXXX");
    cr_assert_not_null(mkdtemp(conf_dir));
    snprintf(conf_path, sizeof(conf_path), "%s/access", conf_dir);
    int fd = open(conf_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "cannot write %s: %s", conf_path, strerror(errno));
    cr_assert_eq(write(fd, access_text, strlen(access_text)), (ssize_t)strlen(access_text));
    close(fd);
    chmod(conf_dir, 0755);
    const char *argv[] = {"--config", conf_path, NULL};
    cr_assert_eq(e2e_daemon_start_with(&bd, argv), 0, "budgetd did not start");
    e2e_identity admin = {UID_ADMIN, E2E_OTHER_GID, {0}, 0};
    e2e_register_units(&bd, &admin, "KS", "SON", "KFN", NULL);
}

/* A refused batch of `uid` whose single refusal is `index`, forbidden. */
/* The batch `b` sent by `uid` is refused at write `index` alone, forbidden; the refusal says
 * `why` when it is not NULL. */
static void expect_forbidden(uint32_t uid, const e2e_buf *b, uint64_t index, const char *why)
{
    budget_client *c = as(uid);
    budget_response r;
    refusals f;
    e2e_call(c, "batch", b, &r);
    e2e_assert(!r.ok, "uid %u: a forbidden batch was written", uid);
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_int(f.index[0], index, "index of the forbidden write");
    e2e_assert_str(f.code[0], "forbidden", "code");
    e2e_assert(why == NULL || strstr(f.message[0], why) != NULL, "the refusal says \"%s\", not %s",
               f.message[0], why);
    budget_response_free(&r);
    budget_client_close(c);
}

Test(batch, every_write_is_checked_for_its_role_and_its_units)
{
    start_with_access();
    budget_client *admin = as(UID_ADMIN);
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);

    batch_begin(&b, 2, false);
    w_grant(&b, "KS-F", "KS", 1000);
    w_grant(&b, "SON-F", "SON", 1000);
    e2e_call(admin, "batch", &b, &r);
    written(&r, 2);
    budget_response_free(&r);

    /* A clerk may propose but not grant. */
    batch_begin(&b, 2, false);
    w_propose(&b, "a1", "KS-F", "SON", 10);
    w_grant(&b, "F2", "KS", 1000);
    expect_forbidden(UID_CLERK, &b, 1, NULL);

    /* A clerk for SON proposes from a frame SON holds, not from one KS holds. */
    batch_begin(&b, 2, false);
    w_propose(&b, "a1", "SON-F", "SON", 10);
    w_propose(&b, "a2", "KS-F", "SON", 10);
    expect_forbidden(UID_SON_CLERK, &b, 1,
                     "allocation.propose needs the clerk role for KS (frame KS-F is held by KS)");

    /* The units of a write come from the state the batch leaves before it: KS holds the frame
     * granted at index 0, so the proposal from it needs the clerk role for KS. */
    batch_begin(&b, 2, false);
    w_grant(&b, "KS-G", "KS", 1000);
    w_propose(&b, "a3", "KS-G", "SON", 10);
    expect_forbidden(UID_ADMIN_SON_CLERK, &b, 1, "(frame KS-G is held by KS)");

    batch_begin(&b, 2, false);
    w_grant(&b, "SON-G", "SON", 1000);
    w_propose(&b, "a4", "SON-G", "SON", 10);
    budget_client *c = as(UID_ADMIN_SON_CLERK);
    e2e_call(c, "batch", &b, &r);
    written(&r, 2);
    budget_response_free(&r);
    budget_client_close(c);
    e2e_assert_int(e2e_head(admin), U + 4, "head: only the allowed batches");
    e2e_buf_destroy(&b);
    budget_client_close(admin);
}

/* An avrop in a batch is checked against its last day by the time the batch's events are
 * stamped with, as a single write is. */
Test(batch, an_avrop_in_a_batch_after_its_last_day_is_refused)
{
    start();
    budget_client *c = e2e_client(&bd), *other = e2e_client_as(&bd, &e2e_other);
    e2e_buf b;
    budget_response r;
    refusals f;
    e2e_buf_init(&b);

    batch_begin(&b, 2, false);
    write_begin(&b, "frame.grant", 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "F");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 1000);
    e2e_kv_str(&b, "title", "Ram");
    e2e_kv_str(&b, "avrop_last_day", "2021-12-31");
    e2e_kv_decision(&b);
    w_propose(&b, "a1", "F", "SON", 500);
    e2e_call(c, "batch", &b, &r);
    written(&r, 2);
    budget_response_free(&r);
    batch_begin(&b, 1, false);
    write_begin(&b, "approve", 2 + E2E_DECISION_PAIRS);
    e2e_kv_str(&b, "id", "a1-ok");
    e2e_kv_str(&b, "target", "a1");
    e2e_kv_decision(&b);
    e2e_call(other, "batch", &b, &r);
    written(&r, 1);
    budget_response_free(&r);

    uint64_t head = e2e_head(c);
    batch_begin(&b, 1, false);
    write_begin(&b, "avrop.request", 3);
    e2e_kv_str(&b, "id", "v1");
    e2e_kv_str(&b, "allocation", "a1");
    e2e_kv_int(&b, "amount", 100);
    e2e_call(c, "batch", &b, &r);
    e2e_assert(!r.ok, "an avrop after its last day was written in a batch");
    read_refusals(&r, &f);
    e2e_assert_int(f.count, 1, "refusals");
    e2e_assert_str(f.code[0], "invalid_state", "code of the refusal");
    budget_response_free(&r);
    e2e_assert_int(e2e_head(c), head, "head after the refused batch");
    e2e_buf_destroy(&b);
    budget_client_close(other);
    budget_client_close(c);
}
