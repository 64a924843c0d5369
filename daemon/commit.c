/* Group commit and the writer thread (commit.h). */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "clock.h"
#include "commit.h"
#include "event.h"
#include "log.h"

/* Every batch fits in the store's write-ahead file: a record takes 32 bytes, and each event 8
 * bytes more than its id and its bytes (daemon/wal.h). */
_Static_assert(STORE_WAL_AREA_BYTES_DEFAULT >=
                   32u + (uint64_t)BUDGET_BATCH_EVENTS_MAX *
                             (8u + BUDGET_ID_BYTES_MAX + EVENT_BYTES_MAX),
               "the largest batch must fit in the write-ahead file");
#include "proto/text.h"
#include "request.h"

/* ---- group commit ---------------------------------------------------------------------- */

static int batch_reserve(commit_batch_t *b)
{
    if (b->count == b->cap) {
        /* Entries and their store items grow together: launching a commit allocates nothing. */
        size_t cap = b->cap ? b->cap * 2 : 64;
        commit_entry_t *e = realloc(b->entries, cap * sizeof(*e));
        if (!e)
            return BUDGET_EUNAVAILABLE;
        b->entries = e;
        store_item *items = realloc(b->items, cap * sizeof(*items));
        if (!items)
            return BUDGET_EUNAVAILABLE;
        b->items = items;
        b->cap = cap;
    }
    if (b->bytes_cap - b->bytes_len < EVENT_BYTES_MAX) {
        size_t cap = b->bytes_cap ? b->bytes_cap * 2 : 64 * EVENT_BYTES_MAX;
        uint8_t *p = realloc(b->bytes, cap);
        if (!p)
            return BUDGET_EUNAVAILABLE;
        b->bytes = p;
        b->bytes_cap = cap;
    }
    return 0;
}

static void entries_copy(commit_entry_t *dst, const commit_entry_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        commit_entry_copy(&dst[i], &src[i]);
}

static void batch_reset(commit_batch_t *b)
{
    b->count = 0;
    b->bytes_len = 0;
    b->items_count = 0;
    b->rc = 0;
    b->sync_failed = false;
}

static void batch_free(commit_batch_t *b)
{
    free(b->entries);
    free(b->bytes);
    free(b->items);
}

static void answer_write_ok(commit_t *m, conn_t *c, uint32_t idx, uint64_t req_id,
                            const ledger_event *ev, const uint8_t hash[BUDGET_HASH_BYTES])
{
    resp_t r;
    (void)m;
    resp_begin(&r, req_id, true);
    request_pack_write_result(&r.pk, ev, hash);
    conn_answer(c, idx, &r, req_id);
}

/* The batch entry holding the event `seq` that is not yet durable, or NULL. */
static const commit_entry_t *find_undurable(commit_t *m, uint64_t seq)
{
    commit_batch_t *bs[2] = {m->inflight, m->pending};
    for (int i = 0; i < 2; i++) {
        if (!bs[i])
            continue;
        for (size_t j = 0; j < bs[i]->count; j++)
            if (!bs[i]->entries[j].dup && bs[i]->entries[j].ev.seq == seq)
                return &bs[i]->entries[j];
    }
    return NULL;
}

/* A retry of a write already durable, answered on a worker thread: reading the event that
 * holds its id may wait on the disk, which the loop thread never does. */
typedef struct {
    job_t base;
    store *store;
    ledger_cmd cmd;
    ledger_actor actor; /* who sent it: a retry counts only from the same uid */
    uint64_t existing;
} retry_job;

/* Why a write whose id is taken by `ev` (made by event `existing`) is a conflict. */
static void conflict_message(char *msg, size_t size, const char *id, uint64_t existing,
                             const ledger_actor *actor, const ledger_event *ev)
{
    if (ev != NULL && ev->actor.uid != actor->uid)
        snprintf(msg, size, "id %s is taken by event %llu, sent by another user", id,
                 (unsigned long long)existing);
    else
        snprintf(msg, size, "id %s is taken by event %llu with other content", id,
                 (unsigned long long)existing);
}

static void retry_run(job_t *w, resp_t *r)
{
    retry_job *j = (retry_job *)w;
    store_reader *rd;
    store_val v;
    ledger_event ev;
    const uint8_t *prev, *hash;
    char msg[200];

    if (store_reader_begin(j->store, &rd) != 0) {
        resp_error_into(r, w->req_id, BUDGET_EUNAVAILABLE, "the event store cannot be read now");
        return;
    }
    int rc = store_reader_get(rd, j->existing, &v);
    if (rc == 0)
        rc = event_decode(v.data, v.size, &ev);
    if (rc == 0)
        rc = event_link(v.data, v.size, &prev, &hash);
    if (rc != 0) {
        resp_error_into(r, w->req_id, BUDGET_EINTERNAL,
                        "the event that holds this id cannot be read");
    } else if (ledger_same_request(&j->cmd, &j->actor, &ev)) {
        resp_begin(r, w->req_id, true);
        request_pack_write_result(&r->pk, &ev, hash);
    } else {
        conflict_message(msg, sizeof(msg), j->cmd.id, j->existing, &j->actor, &ev);
        resp_error_into(r, w->req_id, BUDGET_ECONFLICT, msg);
    }
    store_reader_end(rd);
}

static void retry_finished(job_t *w)
{
    conn_write_answered(w->c);
}

/*
 * A write whose id exists: the same content from the same uid is answered with the first
 * result (in flight: with the first's outcome, when it comes); other content, or any content
 * from another uid, with `conflict`. Returns true when the answer comes later (from a worker job,
 * which then ends the write), false when it is answered or queued here.
 */
static bool admit_retry(commit_t *m, commit_entry_t *e, uint64_t existing)
{
    char msg[200];
    if (existing <= m->committed_head) {
        retry_job *j = calloc(1, sizeof(*j));
        if (!j) {
            conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EUNAVAILABLE, "out of memory");
            return false;
        }
        j->store = m->store;
        ledger_event_copy(&j->cmd, &e->cmd);
        j->actor = *conn_actor(e->c);
        j->existing = existing;
        j->base.run = retry_run;
        j->base.finished = retry_finished;
        return job_queue(m->jobs, e->c, e->slot, e->req_id, &j->base) == 0;
    }
    const commit_entry_t *orig = find_undurable(m, existing);
    if (orig && ledger_same_request(&e->cmd, conn_actor(e->c), &orig->ev)) {
        /* `e` is the pending batch's next entry (commit_admit): it rides there, answered
         * with the original's result once that is durable. */
        assert(e == &m->pending->entries[m->pending->count]);
        e->dup = true;
        ledger_event_copy(&e->ev, &orig->ev);
        memcpy(e->hash, orig->hash, sizeof(e->hash));
        m->pending->count++;
        return false;
    }
    conflict_message(msg, sizeof(msg), e->cmd.id, existing, conn_actor(e->c),
                     orig ? &orig->ev : NULL);
    conn_answer_error(e->c, e->slot, e->req_id, BUDGET_ECONFLICT, msg);
    return false;
}

/*
 * Checks a write against the speculative ledger and, when it passes, encodes its event into
 * the pending batch and applies it to the speculative ledger. `in` is copied; on any error the
 * write is answered here. The connection's reference is kept by a queued entry and dropped
 * otherwise.
 */
void commit_admit(commit_t *m, const commit_entry_t *in)
{
    commit_batch_t *b = m->pending;
    commit_entry_t *e;
    ledger_error err;
    uint64_t existing = 0;
    char msg[200];
    size_t before = b->count;

    assert(in->c != NULL && m->pending != m->inflight);
    assert(m->spec_head >= m->committed_head);

    if (*m->stopping) {
        conn_answer_error(in->c, in->slot, in->req_id, BUDGET_EUNAVAILABLE,
                          "budgetd is stopping; retry with the same id");
        goto done;
    }
    if (b->count >= BUDGET_BATCH_EVENTS_MAX || batch_reserve(b) != 0) {
        conn_answer_error(in->c, in->slot, in->req_id, BUDGET_EUNAVAILABLE,
                          "the write queue is full; retry with the same id");
        goto done;
    }
    /* The write is made where it will ride, in the batch's next entry, which counts only once
     * the write passes: no copy of the entry after the check. */
    e = &b->entries[b->count];
    memcpy(e, in, offsetof(commit_entry_t, cmd));
    ledger_event_copy(&e->cmd, &in->cmd);
    /* Time never goes backwards in the log, even when the clock is set back: an event is
     * stamped no earlier than the one before it (docs/events.md). The rules see the stamp:
     * an avrop's last day is checked against it. */
    uint64_t now = clock_now_ms(), last = ledger_last_ts(m->speculative);
    e->cmd.ts_ms = now > last ? now : last;
    int rc = ledger_check(m->speculative, &e->cmd, conn_actor(e->c), &e->ev, &existing, &err);
    if (rc == 1) {
        if (admit_retry(m, e, existing))
            return; /* the retry job ends the write */
        goto done;
    }
    /* A malformed write is refused as such, whatever the head (docs/events.md: the order). */
    if (rc == BUDGET_EBAD_REQUEST) {
        conn_answer_error(e->c, e->slot, e->req_id, rc, err.message);
        goto done;
    }
    if (e->has_expect_head && e->expect_head != m->spec_head) {
        snprintf(msg, sizeof(msg), "expect_head is %llu but the log's last seq is %llu",
                 (unsigned long long)e->expect_head, (unsigned long long)m->spec_head);
        conn_answer_error(e->c, e->slot, e->req_id, BUDGET_ECONFLICT, msg);
        goto done;
    }
    if (rc < 0) {
        conn_answer_error(e->c, e->slot, e->req_id, rc, err.message);
        goto done;
    }
    e->ev.seq = m->spec_head + 1;
    e->ev.ts_ms = e->cmd.ts_ms;
    e->dup = false;
    e->offset = b->bytes_len;
    rc = event_encode(&e->ev, m->spec_hash, b->bytes + b->bytes_len, EVENT_BYTES_MAX, e->hash);
    if (rc < 0 || ledger_apply(m->speculative, &e->ev) != 0) {
        log_error("event %llu (%s) could not be encoded or applied", (unsigned long long)e->ev.seq,
                  e->cmd.id);
        conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EINTERNAL,
                          "the event could not be made");
        goto done;
    }
    e->size = (size_t)rc;
    b->bytes_len += e->size;
    m->spec_head = e->ev.seq;
    memcpy(m->spec_hash, e->hash, sizeof(m->spec_hash));
    b->count++;
done:
    if (b->count == before)
        conn_write_answered(in->c); /* the step launches the batch otherwise */
}

static void answer_batch_failed(commit_t *m, commit_batch_t *b, const char *why);
static void commit_halt(commit_t *m);

/* ---- groups: the writes of a `batch` op -------------------------------------------------- */

/* A group being checked: copies of its entries (each with its event once checked) and what
 * was found. The writes accepted so far are applied to the speculative ledger as they pass;
 * a group that is not queued in the end takes them out again (group_restore). */
typedef struct {
    commit_entry_t *entries;
    uint32_t n, accepted, refused, exist;
    bool queued;
    commit_refusal_t *refusals;
    uint64_t *existing; /* the seq of the event that holds each write's id, or 0 */
    uint64_t ts_ms;
} group_check;

static void group_refuse(group_check *g, uint32_t index, int code, const char *message)
{
    commit_refusal_t *r = &g->refusals[g->refused++];
    r->index = index;
    r->code = code;
    snprintf(r->message, sizeof(r->message), "%s", message);
}

static int refusal_order(const void *a, const void *b)
{
    const commit_refusal_t *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

/* A str of text that may hold a client's bytes: escaped unless clean. */
static void pack_clean(msgpack_packer *pk, const char *s)
{
    char safe[BUDGET_ESCAPED_BYTES(sizeof(((commit_refusal_t *)0)->message) + 100)];
    size_t len = strlen(s);
    if (!budget_text_clean(s, len))
        s = safe, len = budget_escape(safe, sizeof(safe), s, len);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* {"dry_run", "writes": [each write's result, as a single write's]}. */
static void pack_group_ok(resp_t *r, uint64_t req_id, const commit_entry_t *e, uint32_t n,
                          bool dry_run)
{
    resp_begin(r, req_id, true);
    msgpack_pack_map(&r->pk, 2);
    pack_cstr(&r->pk, "dry_run");
    if (dry_run)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_cstr(&r->pk, "writes");
    msgpack_pack_array(&r->pk, n);
    for (uint32_t i = 0; i < n; i++)
        request_pack_write_result(&r->pk, &e[i].ev, e[i].hash);
}

/* The error of a refused group: the first refusal's code, a message naming it, and
 * "refusals": [{"index", "code", "message"}...] in the order of the writes. */
static void pack_group_refused(resp_t *r, uint64_t req_id, uint32_t n, commit_refusal_t *refusals,
                               uint32_t count)
{
    char msg[400];

    qsort(refusals, count, sizeof(*refusals), refusal_order);
    snprintf(msg, sizeof(msg), "%u of %u writes refused, nothing written; write %u: %s", count, n,
             refusals[0].index, refusals[0].message);
    resp_begin(r, req_id, false);
    msgpack_pack_map(&r->pk, 3);
    pack_key_str(&r->pk, "code", budget_err_code(refusals[0].code));
    pack_cstr(&r->pk, "message");
    pack_clean(&r->pk, msg);
    pack_cstr(&r->pk, "refusals");
    msgpack_pack_array(&r->pk, count);
    for (uint32_t i = 0; i < count; i++) {
        msgpack_pack_map(&r->pk, 3);
        pack_key_uint(&r->pk, "index", refusals[i].index);
        pack_key_str(&r->pk, "code", budget_err_code(refusals[i].code));
        pack_cstr(&r->pk, "message");
        pack_clean(&r->pk, refusals[i].message);
    }
}

/* A retry of a group whose events are all durable, answered on a worker thread (it reads
 * them): the first results when every write is the same request, else each that is not. */
typedef struct {
    job_t base;
    store *store;
    ledger_actor actor;
    bool dry_run;
    uint32_t n;
    uint64_t *existing;         /* n seqs, after the entries */
    commit_refusal_t *refusals; /* room for n */
    commit_entry_t entries[];
} group_retry_job;

static int group_retry_read(store_reader *rd, uint64_t seq, commit_entry_t *e)
{
    store_val v;
    const uint8_t *prev, *hash;
    int rc = store_reader_get(rd, seq, &v);
    if (rc == 0)
        rc = event_decode(v.data, v.size, &e->ev);
    if (rc == 0)
        rc = event_link(v.data, v.size, &prev, &hash);
    if (rc == 0)
        memcpy(e->hash, hash, sizeof(e->hash));
    return rc;
}

static void group_retry_run(job_t *w, resp_t *r)
{
    group_retry_job *j = (group_retry_job *)w;
    store_reader *rd;
    uint32_t refused = 0;
    char msg[200];

    if (store_reader_begin(j->store, &rd) != 0) {
        resp_error_into(r, w->req_id, BUDGET_EUNAVAILABLE, "the event store cannot be read now");
        return;
    }
    for (uint32_t i = 0; i < j->n; i++) {
        commit_entry_t *e = &j->entries[i];
        commit_refusal_t *f = &j->refusals[refused];
        if (group_retry_read(rd, j->existing[i], e) != 0) {
            store_reader_end(rd);
            resp_error_into(r, w->req_id, BUDGET_EINTERNAL,
                            "an event that holds an id of this batch cannot be read");
            return;
        }
        if (ledger_same_request(&e->cmd, &j->actor, &e->ev))
            continue;
        conflict_message(msg, sizeof(msg), e->cmd.id, j->existing[i], &j->actor, &e->ev);
        f->index = i;
        f->code = BUDGET_ECONFLICT;
        snprintf(f->message, sizeof(f->message), "%s", msg);
        refused++;
    }
    store_reader_end(rd);
    if (refused > 0)
        pack_group_refused(r, w->req_id, j->n, j->refusals, refused);
    else
        pack_group_ok(r, w->req_id, j->entries, j->n, j->dry_run);
}

void commit_answer_refused(conn_t *c, uint32_t slot, uint64_t req_id, uint32_t n,
                           commit_refusal_t *refusals, uint32_t count)
{
    resp_t r;
    pack_group_refused(&r, req_id, n, refusals, count);
    conn_answer(c, slot, &r, req_id);
}

/* Queues the retry job of `g`. True when it was queued (it ends the write), false when it
 * was answered here. */
static bool group_retry(commit_t *m, group_check *g, bool dry_run)
{
    const commit_entry_t *first = &g->entries[0];
    size_t n = g->n;
    group_retry_job *j = calloc(
        1, sizeof(*j) + n * (sizeof(commit_entry_t) + sizeof(uint64_t) + sizeof(commit_refusal_t)));
    if (!j) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EUNAVAILABLE,
                          "out of memory");
        return false;
    }
    entries_copy(j->entries, g->entries, n);
    j->existing = (uint64_t *)(j->entries + n);
    memcpy(j->existing, g->existing, n * sizeof(uint64_t));
    j->refusals = (commit_refusal_t *)(j->existing + n);
    j->store = m->store;
    j->actor = *conn_actor(first->c);
    j->dry_run = dry_run;
    j->n = g->n;
    j->base.run = group_retry_run;
    j->base.finished = retry_finished;
    return job_queue(m->jobs, first->c, first->slot, first->req_id, &j->base) == 0;
}

static void group_free(group_check *g)
{
    free(g->entries);
    free(g->refusals);
    free(g->existing);
}

/* 0, or -1 when out of memory (nothing to free). */
static int group_init(commit_t *m, group_check *g, const commit_entry_t *entries, uint32_t n)
{
    memset(g, 0, sizeof(*g));
    g->n = n;
    g->entries = malloc(n * sizeof(*g->entries));
    g->refusals = malloc(n * sizeof(*g->refusals));
    g->existing = calloc(n, sizeof(*g->existing));
    if (!g->entries || !g->refusals || !g->existing) {
        group_free(g);
        return -1;
    }
    entries_copy(g->entries, entries, n);
    /* Every event of a group is stamped alike, never before the last (as commit_admit). */
    uint64_t now = clock_now_ms(), last = ledger_last_ts(m->speculative);
    g->ts_ms = now > last ? now : last;
    return 0;
}

/* Checks write `i` against the state the accepted writes before it leave, and applies it
 * there when it passes. */
static void group_check_one(commit_t *m, group_check *g, uint32_t i, const commit_group_opts *o)
{
    commit_entry_t *e = &g->entries[i];
    ledger_error err;
    uint64_t existing = 0;
    char msg[200];

    if (o->check && o->check(o->check_ctx, m->speculative, i, &e->cmd, &err) != 0) {
        group_refuse(g, i, err.code, err.message);
        return;
    }
    e->cmd.ts_ms = g->ts_ms; /* the rules see the time the event will be stamped with */
    int rc = ledger_check(m->speculative, &e->cmd, conn_actor(e->c), &e->ev, &existing, &err);
    if (rc == 1 && existing > m->spec_head) {
        snprintf(msg, sizeof(msg), "id %s is also the id of write %llu of this batch", e->cmd.id,
                 (unsigned long long)(existing - m->spec_head - 1));
        group_refuse(g, i, BUDGET_ECONFLICT, msg);
    } else if (rc == 1) {
        g->existing[i] = existing;
        g->exist++;
    } else if (rc < 0) {
        group_refuse(g, i, rc, err.message);
    } else {
        e->ev.seq = m->spec_head + 1 + g->accepted;
        e->ev.ts_ms = g->ts_ms;
        rc = ledger_apply(m->speculative, &e->ev);
        if (rc != 0)
            group_refuse(g, i, rc, "the event could not be applied");
        else
            g->accepted++;
    }
}

/* A group whose ids partly exist: each existing one is refused too. */
static void group_refuse_existing(group_check *g)
{
    char msg[200];
    for (uint32_t i = 0; i < g->n; i++) {
        if (g->existing[i] == 0)
            continue;
        snprintf(msg, sizeof(msg),
                 "id %s is taken by event %llu; a batch is retried whole, with every id as "
                 "before",
                 g->entries[i].cmd.id, (unsigned long long)g->existing[i]);
        group_refuse(g, i, BUDGET_ECONFLICT, msg);
    }
}

/* Encodes the group's events, chained from the speculative head, into `b` (NULL: a dry run,
 * for their hashes only). 0, or -1 (nothing added to `b`). */
static int group_encode(commit_t *m, group_check *g, commit_batch_t *b)
{
    uint8_t prev[BUDGET_HASH_BYTES], scratch[EVENT_BYTES_MAX];
    size_t at = b ? b->bytes_len : 0;

    memcpy(prev, m->spec_hash, sizeof(prev));
    for (uint32_t i = 0; i < g->n; i++) {
        commit_entry_t *e = &g->entries[i];
        uint8_t *out = b ? b->bytes + at : scratch;
        int rc = event_encode(&e->ev, prev, out, EVENT_BYTES_MAX, e->hash);
        if (rc < 0) {
            log_error("event %llu (%s) could not be encoded", (unsigned long long)e->ev.seq,
                      e->cmd.id);
            return -1;
        }
        e->offset = at;
        e->size = (size_t)rc;
        e->dup = false;
        e->group = i == 0 ? g->n : 0;
        e->in_group = i > 0;
        at += b ? (size_t)rc : 0;
        memcpy(prev, e->hash, sizeof(prev));
    }
    if (b)
        b->bytes_len = at;
    return 0;
}

/* Room in `b` for `n` more entries and their events. 0 or BUDGET_EUNAVAILABLE. */
static int group_reserve(commit_batch_t *b, uint32_t n)
{
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->count + n)
        cap *= 2;
    if (cap > b->cap) {
        commit_entry_t *e = realloc(b->entries, cap * sizeof(*e));
        if (!e)
            return BUDGET_EUNAVAILABLE;
        b->entries = e;
        store_item *items = realloc(b->items, cap * sizeof(*items));
        if (!items)
            return BUDGET_EUNAVAILABLE;
        b->items = items;
        b->cap = cap;
    }
    size_t need = b->bytes_len + (size_t)(n + 1) * EVENT_BYTES_MAX;
    if (b->bytes_cap < need) {
        size_t bytes_cap = b->bytes_cap ? b->bytes_cap : 64 * EVENT_BYTES_MAX;
        while (bytes_cap < need)
            bytes_cap *= 2;
        uint8_t *p = realloc(b->bytes, bytes_cap);
        if (!p)
            return BUDGET_EUNAVAILABLE;
        b->bytes = p;
        b->bytes_cap = bytes_cap;
    }
    return 0;
}

/* Queues the checked group in the pending batch (the speculative ledger holds it already).
 * True when queued. */
static bool group_queue(commit_t *m, group_check *g, const commit_group_opts *o)
{
    commit_batch_t *b = m->pending;
    const commit_entry_t *first = &g->entries[0];

    if (group_encode(m, g, b) != 0) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EINTERNAL,
                          "the events could not be made");
        return false;
    }
    /* A failed commit checks the group again (recheck_pending): it keeps the batch's head. */
    g->entries[0].has_expect_head = o->has_expect_head;
    g->entries[0].expect_head = o->expect_head;
    entries_copy(b->entries + b->count, g->entries, g->n);
    b->count += g->n;
    g->queued = true;
    m->spec_head += g->n;
    memcpy(m->spec_hash, g->entries[g->n - 1].hash, sizeof(m->spec_hash));
    return true;
}

/* The outcome of a checked group: refused, a retry, answered as a dry run, or queued. True
 * when the write is ended later (queued, or a retry job). */
static bool group_settle(commit_t *m, group_check *g, const commit_group_opts *o)
{
    const commit_entry_t *first = &g->entries[0];
    char msg[200];
    resp_t r;

    if (g->exist > 0 && (g->exist < g->n || g->refused > 0))
        group_refuse_existing(g);
    if (g->refused > 0) {
        pack_group_refused(&r, first->req_id, g->n, g->refusals, g->refused);
        conn_answer(first->c, first->slot, &r, first->req_id);
        return false;
    }
    if (g->exist == g->n) {
        for (uint32_t i = 0; i < g->n; i++)
            if (g->existing[i] > m->committed_head) {
                conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EUNAVAILABLE,
                                  "this batch is being written; retry with the same ids");
                return false;
            }
        return group_retry(m, g, o->dry_run);
    }
    if (o->has_expect_head && o->expect_head != m->spec_head) {
        snprintf(msg, sizeof(msg), "expect_head is %llu but the log's last seq is %llu",
                 (unsigned long long)o->expect_head, (unsigned long long)m->spec_head);
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_ECONFLICT, msg);
        return false;
    }
    if (!o->dry_run)
        return group_queue(m, g, o);
    if (group_encode(m, g, NULL) != 0) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EINTERNAL,
                          "the events could not be made");
        return false;
    }
    pack_group_ok(&r, first->req_id, g->entries, g->n, true);
    conn_answer(first->c, first->slot, &r, first->req_id);
    return false;
}

/*
 * The speculative ledger without a group that was not queued: made again from the committed
 * one and the events not yet durable (the batch in flight, then the pending one). O(the
 * ledger), and only after a group applied some writes and was then refused or only a dry run.
 * Out of memory, the speculative ledger cannot be trusted: the daemon stops, as after a failed
 * rebuild in recheck_pending.
 */
static void group_restore(commit_t *m)
{
    const commit_batch_t *bs[2] = {m->inflight, m->pending};
    ledger *fresh = ledger_clone(m->committed);

    for (int i = 0; fresh && i < 2; i++)
        for (size_t j = 0; bs[i] && j < bs[i]->count; j++)
            if (!bs[i]->entries[j].dup && ledger_apply(fresh, &bs[i]->entries[j].ev) != 0) {
                ledger_free(fresh);
                fresh = NULL;
                break;
            }
    if (!fresh) {
        log_error("out of memory restoring the write state after a batch; stopping");
        answer_batch_failed(m, m->pending, "budgetd is out of memory");
        batch_reset(m->pending);
        commit_halt(m);
        return;
    }
    ledger_free(m->speculative);
    m->speculative = fresh;
}

void commit_admit_group(commit_t *m, const commit_entry_t *entries, uint32_t n,
                        const commit_group_opts *o)
{
    const commit_entry_t *first = &entries[0];
    group_check g;
    bool later = false;

    assert(n > 0 && n <= COMMIT_GROUP_WRITES_MAX && m->pending != m->inflight);
    if (*m->stopping || m->halted) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EUNAVAILABLE,
                          "budgetd is stopping; retry with the same ids");
    } else if (m->pending->count + n > BUDGET_BATCH_EVENTS_MAX ||
               group_reserve(m->pending, n) != 0) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EUNAVAILABLE,
                          "the write queue is full; retry with the same ids");
    } else if (group_init(m, &g, entries, n) != 0) {
        conn_answer_error(first->c, first->slot, first->req_id, BUDGET_EUNAVAILABLE,
                          "out of memory");
    } else {
        for (uint32_t i = 0; i < n; i++)
            group_check_one(m, &g, i, o);
        later = group_settle(m, &g, o);
        if (!g.queued && g.accepted > 0)
            group_restore(m);
        group_free(&g);
    }
    if (!later)
        conn_write_answered(first->c);
}

static void writer_main(void *arg)
{
    commit_t *m = arg;

    uv_mutex_lock(&m->writer_mutex);
    for (;;) {
        while (!m->writer_job && !m->writer_stop)
            uv_cond_wait(&m->writer_cond, &m->writer_mutex);
        if (!m->writer_job)
            break;
        commit_batch_t *b = m->writer_job;
        uv_mutex_unlock(&m->writer_mutex);

        bool sync_failed = false;
        int rc = store_append(m->store, b->items, b->items_count, &sync_failed);

        uv_mutex_lock(&m->writer_mutex);
        b->rc = rc;
        b->sync_failed = sync_failed;
        m->writer_job = NULL;
        m->writer_done = true;
        uv_async_send(&m->writer_async);
    }
    uv_mutex_unlock(&m->writer_mutex);
}

static void answer_batch_ok(commit_t *m, commit_batch_t *b)
{
    for (size_t i = 0; i < b->count; i++) {
        commit_entry_t *e = &b->entries[i];
        assert(e->dup || e->ev.seq == m->committed_head + 1); /* in order, with no gap */
        if (!e->dup) {
            uv_mutex_lock(&m->committed_lock);
            int applied = ledger_apply(m->committed, &e->ev);
            uv_mutex_unlock(&m->committed_lock);
            if (applied != 0)
                log_error("committed event %llu does not apply to the committed ledger",
                          (unsigned long long)e->ev.seq);
            m->committed_head = e->ev.seq;
            memcpy(m->committed_hash, e->hash, sizeof(m->committed_hash));
            if (m->snapshot != NULL && m->snapshot_every != 0 && e->ev.seq % m->snapshot_every == 0)
                m->snapshot(m->owner, m->committed, e->hash);
        }
        if (e->in_group)
            continue; /* answered with its group's first write */
        if (e->group > 0) {
            resp_t r;
            pack_group_ok(&r, e->req_id, e, e->group, false);
            conn_answer(e->c, e->slot, &r, e->req_id);
        } else {
            answer_write_ok(m, e->c, e->slot, e->req_id, &e->ev, e->hash);
        }
        conn_write_answered(e->c);
    }
    m->durable(m->owner, b); /* the batch is durable and applied: now it may be seen */
    m->batches_committed++;
    if (b->items_count > m->batch_events_max)
        m->batch_events_max = b->items_count;
}

static void answer_batch_failed(commit_t *m, commit_batch_t *b, const char *why)
{
    m->commits_failed++;
    for (size_t i = 0; i < b->count; i++) {
        commit_entry_t *e = &b->entries[i];
        if (e->in_group)
            continue; /* one answer for the group */
        conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EUNAVAILABLE, why);
        conn_write_answered(e->c);
    }
}

/* The disk's state is unknown: nothing more is written, and the owner stops. */
static void commit_halt(commit_t *m)
{
    m->halted = true;
    m->fatal(m->owner);
}

/* After a failed commit: speculative = committed, and the waiting writes are checked again. */
static void recheck_pending(commit_t *m)
{
    commit_batch_t *b = m->pending;
    commit_entry_t *waiting = NULL;

    assert(m->inflight == NULL); /* the failed batch was answered */
    size_t n = b->count;
    ledger *fresh = ledger_clone(m->committed);

    if (n > 0)
        waiting = malloc(n * sizeof(*waiting));
    if (!fresh || (n > 0 && !waiting)) {
        log_error("out of memory rebuilding the write state; stopping");
        free(waiting);
        ledger_free(fresh);
        answer_batch_failed(m, b, "budgetd is out of memory");
        batch_reset(b);
        commit_halt(m);
        return;
    }
    if (n > 0)
        entries_copy(waiting, b->entries, n);
    ledger_free(m->speculative);
    m->speculative = fresh;
    m->spec_head = m->committed_head;
    memcpy(m->spec_hash, m->committed_hash, sizeof(m->spec_hash));
    batch_reset(b);
    for (size_t i = 0; i < n; i++) {
        /* keeps or drops the entry's connection reference */
        if (waiting[i].group == 0) {
            commit_admit(m, &waiting[i]);
            continue;
        }
        /* A group is checked again whole (its access was checked when it came). */
        commit_group_opts o = {.has_expect_head = waiting[i].has_expect_head,
                               .expect_head = waiting[i].expect_head};
        commit_admit_group(m, &waiting[i], waiting[i].group, &o);
        i += waiting[i].group - 1;
    }
    free(waiting);
}

/*
 * The one step that turns the writer's outcome into answers, on the loop thread: the batch's
 * writes are applied and answered (or refused), the batch is published, and the connections
 * that wait are woken. Answers only queue bytes: no frame is handled here.
 */
static void on_writer_done(uv_async_t *h)
{
    commit_t *m = h->data;
    commit_batch_t *b;

    uv_mutex_lock(&m->writer_mutex);
    if (!m->writer_done) {
        uv_mutex_unlock(&m->writer_mutex);
        return;
    }
    m->writer_done = false;
    uv_mutex_unlock(&m->writer_mutex);

    b = m->inflight;
    assert(b != NULL && b != m->pending);
    m->inflight = NULL;
    if (m->hub)
        conn_hub_cork(m->hub);
    if (b->sync_failed) {
        log_error("a commit's sync failed (or its meta page write did): the disk's state is "
                  "unknown; stopping writes and exiting so a restart replays what is on disk");
        answer_batch_failed(m, b, "the disk failed to sync; budgetd is restarting");
        batch_reset(b);
        answer_batch_failed(m, m->pending, "budgetd is restarting after a disk failure");
        batch_reset(m->pending);
        commit_halt(m);
    } else if (b->rc != 0) {
        log_warn("commit of %zu events failed: %s", b->items_count, budget_strerror(b->rc));
        answer_batch_failed(m, b,
                            "the commit failed (disk full or I/O error); nothing was "
                            "written; retry with the same id");
        batch_reset(b);
        recheck_pending(m);
    } else {
        answer_batch_ok(m, b);
        batch_reset(b);
    }
    if (m->hub)
        conn_hub_uncork(m->hub);
    /* Answers were only queued; the connections they woke handle their next frames at the
     * step, checked against the settled ledgers. */
    m->quiet(m->owner);
}

void commit_launch(commit_t *m)
{
    commit_batch_t *b = m->pending;
    size_t n = 0;

    assert(m->pending != m->inflight);
    if (m->inflight || b->count == 0 || m->halted)
        return;
    for (size_t i = 0; i < b->count; i++) {
        commit_entry_t *e = &b->entries[i];
        if (e->dup)
            continue;
        b->items[n].seq = e->ev.seq;
        b->items[n].bytes = b->bytes + e->offset;
        b->items[n].size = e->size;
        b->items[n].id = e->ev.id;
        b->items[n].id_len = strlen(e->ev.id);
        n++;
    }
    b->items_count = n;
    m->pending = (b == &m->batches[0]) ? &m->batches[1] : &m->batches[0];
    batch_reset(m->pending);
    m->inflight = b;
    if (n == 0) {
        /* Only retries of events already durable: nothing to write. */
        uv_mutex_lock(&m->writer_mutex);
        m->writer_done = true;
        uv_mutex_unlock(&m->writer_mutex);
        uv_async_send(&m->writer_async);
        return;
    }
    uv_mutex_lock(&m->writer_mutex);
    m->writer_job = b;
    uv_cond_signal(&m->writer_cond);
    uv_mutex_unlock(&m->writer_mutex);
}

int commit_start(commit_t *m, uv_loop_t *loop, ledger *committed, uint64_t head,
                 const uint8_t head_hash[BUDGET_HASH_BYTES])
{
    assert(m->store && m->jobs && m->stopping && m->durable && m->fatal && m->quiet);
    m->loop = loop;
    m->committed = committed;
    uv_mutex_init(&m->committed_lock);
    m->committed_head = head;
    memcpy(m->committed_hash, head_hash, sizeof(m->committed_hash));
    m->speculative = ledger_clone(committed);
    if (!m->speculative) {
        ledger_free(committed);
        m->committed = NULL;
        uv_mutex_destroy(&m->committed_lock);
        return -1;
    }
    m->spec_head = head;
    memcpy(m->spec_hash, head_hash, sizeof(m->spec_hash));
    m->pending = &m->batches[0];
    uv_mutex_init(&m->writer_mutex);
    uv_cond_init(&m->writer_cond);
    uv_async_init(loop, &m->writer_async, on_writer_done);
    m->writer_async.data = m;
    uv_thread_create(&m->writer, writer_main, m);
    return 0;
}

bool commit_idle(const commit_t *m)
{
    return m->inflight == NULL && m->pending->count == 0;
}

void commit_close(commit_t *m)
{
    assert(commit_idle(m));
    if (!uv_is_closing((uv_handle_t *)&m->writer_async))
        uv_close((uv_handle_t *)&m->writer_async, NULL);
}

void commit_join(commit_t *m)
{
    uv_mutex_lock(&m->writer_mutex);
    m->writer_stop = true;
    uv_cond_signal(&m->writer_cond);
    uv_mutex_unlock(&m->writer_mutex);
    uv_thread_join(&m->writer);
    uv_mutex_destroy(&m->writer_mutex);
    uv_cond_destroy(&m->writer_cond);
    ledger_free(m->committed);
    uv_mutex_destroy(&m->committed_lock);
    ledger_free(m->speculative);
    batch_free(&m->batches[0]);
    batch_free(&m->batches[1]);
}

uint64_t commit_head(const commit_t *m)
{
    return m->committed_head;
}

const uint8_t *commit_head_hash(const commit_t *m)
{
    return m->committed_hash;
}

const ledger *commit_ledger(const commit_t *m)
{
    return m->committed;
}

const ledger *commit_speculative(const commit_t *m)
{
    return m->speculative;
}

bool commit_find_id(commit_t *m, const char *id, uint64_t *seq)
{
    uv_mutex_lock(&m->committed_lock);
    bool found = ledger_id_seq(m->committed, id, seq);
    uv_mutex_unlock(&m->committed_lock);
    return found;
}
