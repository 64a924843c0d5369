/*
 * Group commit. Writes are checked in arrival order against the speculative ledger and
 * queued in the pending batch; once per loop turn the pending batch goes to the writer
 * thread, which appends it in one LMDB transaction. Only then are its writes applied to
 * the committed ledger and answered.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "log.h"
#include "server_internal.h"
#include "event.h"
#include "subscribe.h"

/* ---- group commit ---------------------------------------------------------------------- */

static int batch_reserve(batch *b)
{
    if (b->count == b->cap) {
        /* Entries and their store items grow together: launching a commit allocates nothing. */
        size_t cap = b->cap ? b->cap * 2 : 64;
        batch_entry *e = realloc(b->entries, cap * sizeof(*e));
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

static void batch_reset(batch *b)
{
    b->count = 0;
    b->bytes_len = 0;
    b->items_count = 0;
    b->rc = 0;
    b->sync_failed = false;
}

void batch_free(batch *b)
{
    free(b->entries);
    free(b->bytes);
    free(b->items);
}

static void answer_write_ok(server *s, conn *c, uint32_t idx, uint64_t req_id,
                            const ledger_event *ev, const uint8_t hash[BUDGET_HASH_BYTES])
{
    resp r;
    (void)s;
    resp_begin(&r, req_id, true);
    request_pack_write_result(&r.pk, ev, hash);
    conn_answer(c, idx, &r, req_id);
}

/* The batch entry holding the event `seq` that is not yet durable, or NULL. */
static const batch_entry *find_undurable(server *s, uint64_t seq)
{
    batch *bs[2] = {s->inflight, s->pending};
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
    worker_job base;
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

static void retry_run(worker_job *w, resp *r)
{
    retry_job *j = (retry_job *)w;
    store_reader *rd;
    store_val v;
    ledger_event ev;
    const uint8_t *prev, *hash;
    char msg[200];

    if (store_reader_begin(w->srv->store, &rd) != 0) {
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

static void retry_finished(worker_job *w)
{
    conn_write_answered(w->c);
}

/*
 * A write whose id exists: the same content from the same uid is answered with the first
 * result (in flight: with the first's outcome, when it comes); other content, or any content
 * from another uid, with `conflict`. Returns true when the answer comes later (from a worker job,
 * which then ends the write), false when it is answered or queued here.
 */
static bool admit_retry(server *s, batch_entry *e, uint64_t existing)
{
    char msg[200];
    if (existing <= s->committed_head) {
        retry_job *j = calloc(1, sizeof(*j));
        if (!j) {
            conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EUNAVAILABLE, "out of memory");
            return false;
        }
        j->cmd = e->cmd;
        j->actor = e->c->actor;
        j->existing = existing;
        j->base.run = retry_run;
        j->base.finished = retry_finished;
        return worker_queue(e->c, e->slot, e->req_id, &j->base) == 0;
    }
    const batch_entry *orig = find_undurable(s, existing);
    if (orig && ledger_same_request(&e->cmd, &e->c->actor, &orig->ev)) {
        batch_entry *d = &s->pending->entries[s->pending->count++];
        *d = *e;
        d->dup = true;
        d->ev = orig->ev;
        memcpy(d->hash, orig->hash, sizeof(d->hash));
        return false;
    }
    conflict_message(msg, sizeof(msg), e->cmd.id, existing, &e->c->actor, orig ? &orig->ev : NULL);
    conn_answer_error(e->c, e->slot, e->req_id, BUDGET_ECONFLICT, msg);
    return false;
}

/*
 * Checks a write against the speculative ledger and, when it passes, encodes its event into
 * the pending batch and applies it to the speculative ledger. `e` is copied; on any error the
 * write is answered here. The connection's reference is kept by a queued entry and dropped
 * otherwise.
 */
void admit_write(server *s, const batch_entry *in)
{
    batch_entry e = *in;
    ledger_error err;
    uint64_t existing = 0;
    char msg[200];
    size_t before = s->pending->count;

    if (s->stopping) {
        conn_answer_error(e.c, e.slot, e.req_id, BUDGET_EUNAVAILABLE,
                          "budgetd is stopping; retry with the same id");
        goto done;
    }
    if (s->pending->count >= BUDGET_BATCH_EVENTS_MAX || batch_reserve(s->pending) != 0) {
        conn_answer_error(e.c, e.slot, e.req_id, BUDGET_EUNAVAILABLE,
                          "the write queue is full; retry with the same id");
        goto done;
    }
    int rc = ledger_check(s->speculative, &e.cmd, &e.c->actor, &e.ev, &existing, &err);
    if (rc == 1) {
        if (admit_retry(s, &e, existing))
            return; /* the retry job ends the write */
        goto done;
    }
    /* A malformed write is refused as such, whatever the head (docs/events.md: the order). */
    if (rc == BUDGET_EBAD_REQUEST) {
        conn_answer_error(e.c, e.slot, e.req_id, rc, err.message);
        goto done;
    }
    if (e.has_expect_head && e.expect_head != s->spec_head) {
        snprintf(msg, sizeof(msg), "expect_head is %llu but the log's last seq is %llu",
                 (unsigned long long)e.expect_head, (unsigned long long)s->spec_head);
        conn_answer_error(e.c, e.slot, e.req_id, BUDGET_ECONFLICT, msg);
        goto done;
    }
    if (rc < 0) {
        conn_answer_error(e.c, e.slot, e.req_id, rc, err.message);
        goto done;
    }
    batch *b = s->pending;
    e.ev.seq = s->spec_head + 1;
    /* Time never goes backwards in the log, even when the clock is set back: an event is
     * stamped no earlier than the one before it (docs/events.md). */
    uint64_t now = now_ms(), last = ledger_last_ts(s->speculative);
    e.ev.ts_ms = now > last ? now : last;
    e.dup = false;
    e.offset = b->bytes_len;
    rc = event_encode(&e.ev, s->spec_hash, b->bytes + b->bytes_len, EVENT_BYTES_MAX, e.hash);
    if (rc < 0 || ledger_apply(s->speculative, &e.ev) != 0) {
        log_error("event %llu (%s) could not be encoded or applied", (unsigned long long)e.ev.seq,
                  e.cmd.id);
        conn_answer_error(e.c, e.slot, e.req_id, BUDGET_EINTERNAL, "the event could not be made");
        goto done;
    }
    e.size = (size_t)rc;
    b->bytes_len += e.size;
    s->spec_head = e.ev.seq;
    memcpy(s->spec_hash, e.hash, sizeof(s->spec_hash));
    b->entries[b->count++] = e;
done:
    if (s->pending->count == before)
        conn_write_answered(e.c); /* the step launches the batch otherwise */
}

void writer_main(void *arg)
{
    server *s = arg;

    uv_mutex_lock(&s->writer_mutex);
    for (;;) {
        while (!s->writer_job && !s->writer_stop)
            uv_cond_wait(&s->writer_cond, &s->writer_mutex);
        if (!s->writer_job)
            break;
        batch *b = s->writer_job;
        uv_mutex_unlock(&s->writer_mutex);

        bool sync_failed = false;
        int rc = store_append(s->store, b->items, b->items_count, &sync_failed);

        uv_mutex_lock(&s->writer_mutex);
        b->rc = rc;
        b->sync_failed = sync_failed;
        s->writer_job = NULL;
        s->writer_done = true;
        uv_async_send(&s->writer_async);
    }
    uv_mutex_unlock(&s->writer_mutex);
}

static void answer_batch_ok(server *s, batch *b)
{
    for (size_t i = 0; i < b->count; i++) {
        batch_entry *e = &b->entries[i];
        if (!e->dup) {
            if (ledger_apply(s->committed, &e->ev) != 0)
                log_error("committed event %llu does not apply to the committed ledger",
                          (unsigned long long)e->ev.seq);
            s->committed_head = e->ev.seq;
            memcpy(s->committed_hash, e->hash, sizeof(s->committed_hash));
        }
        answer_write_ok(s, e->c, e->slot, e->req_id, &e->ev, e->hash);
        conn_write_answered(e->c);
    }
    sub_publish(s, b); /* the batch is durable and applied: now it may be seen */
    s->batches_committed++;
    if (b->items_count > s->batch_events_max)
        s->batch_events_max = b->items_count;
}

static void answer_batch_failed(server *s, batch *b, const char *why)
{
    s->commits_failed++;
    for (size_t i = 0; i < b->count; i++) {
        batch_entry *e = &b->entries[i];
        conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EUNAVAILABLE, why);
        conn_write_answered(e->c);
    }
}

/* After a failed commit: speculative = committed, and the waiting writes are checked again. */
static void recheck_pending(server *s)
{
    batch *b = s->pending;
    batch_entry *waiting = NULL;
    size_t n = b->count;
    ledger *fresh = ledger_clone(s->committed);

    if (n > 0)
        waiting = malloc(n * sizeof(*waiting));
    if (!fresh || (n > 0 && !waiting)) {
        log_error("out of memory rebuilding the write state; stopping");
        free(waiting);
        ledger_free(fresh);
        answer_batch_failed(s, b, "budgetd is out of memory");
        batch_reset(b);
        server_stop(s, 1);
        return;
    }
    if (n > 0)
        memcpy(waiting, b->entries, n * sizeof(*waiting));
    ledger_free(s->speculative);
    s->speculative = fresh;
    s->spec_head = s->committed_head;
    memcpy(s->spec_hash, s->committed_hash, sizeof(s->spec_hash));
    batch_reset(b);
    for (size_t i = 0; i < n; i++)
        admit_write(s, &waiting[i]); /* keeps or drops the entry's connection reference */
    free(waiting);
}

void on_writer_done(uv_async_t *h)
{
    server *s = h->data;
    batch *b;

    uv_mutex_lock(&s->writer_mutex);
    if (!s->writer_done) {
        uv_mutex_unlock(&s->writer_mutex);
        return;
    }
    s->writer_done = false;
    uv_mutex_unlock(&s->writer_mutex);

    b = s->inflight;
    assert(b != NULL);
    s->inflight = NULL;
    if (b->sync_failed) {
        log_error("a commit's sync failed (or its meta page write did): the disk's state is "
                  "unknown; stopping writes and exiting so a restart replays what is on disk");
        answer_batch_failed(s, b, "the disk failed to sync; budgetd is restarting");
        batch_reset(b);
        answer_batch_failed(s, s->pending, "budgetd is restarting after a disk failure");
        batch_reset(s->pending);
        server_stop(s, 1);
    } else if (b->rc != 0) {
        log_warn("commit of %zu events failed: %s", b->items_count, budget_strerror(b->rc));
        answer_batch_failed(s, b,
                            "the commit failed (disk full or I/O error); nothing was "
                            "written; retry with the same id");
        batch_reset(b);
        recheck_pending(s);
    } else {
        answer_batch_ok(s, b);
        batch_reset(b);
    }
    /* Answers were only queued; the connections they woke handle their next frames at the
     * step, checked against the settled ledgers. */
    maybe_finish(s);
}

void launch_commit(server *s)
{
    batch *b = s->pending;
    size_t n = 0;

    assert(!s->running_ready);
    if (s->inflight || b->count == 0 || s->exit_status != 0)
        return;
    for (size_t i = 0; i < b->count; i++) {
        batch_entry *e = &b->entries[i];
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
    s->pending = (b == &s->batches[0]) ? &s->batches[1] : &s->batches[0];
    batch_reset(s->pending);
    s->inflight = b;
    if (n == 0) {
        /* Only retries of events already durable: nothing to write. */
        uv_mutex_lock(&s->writer_mutex);
        s->writer_done = true;
        uv_mutex_unlock(&s->writer_mutex);
        uv_async_send(&s->writer_async);
        return;
    }
    uv_mutex_lock(&s->writer_mutex);
    s->writer_job = b;
    uv_cond_signal(&s->writer_cond);
    uv_mutex_unlock(&s->writer_mutex);
}
