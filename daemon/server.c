/*
 * The server: connections, request dispatch, group commit and worker jobs.
 *
 * Threads: the loop thread owns every connection and both ledgers. The writer thread only
 * runs store_append on a batch handed to it. Worker threads (libuv's pool) run read jobs on
 * their own store readers and their own ledgers.
 *
 * Two ledgers: `committed` holds exactly the durable events and answers every read;
 * `speculative` is committed plus the batches not yet durable, and every write is checked
 * against it in arrival order, so two clerks never both win the last krona. When a commit
 * fails, speculative is rebuilt from committed and the writes still waiting are checked again.
 */
#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <uv.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "event.h"
#include "log.h"
#include "proto/frame.h"
#include "proto/mp.h"
#include "proto/validate.h"
#include "request.h"
#include "server.h"

#define RECV_BYTES_INITIAL (16u * 1024u)
#define RECV_BYTES_MAX (BUDGET_FRAME_HEADER_BYTES + BUDGET_FRAME_BYTES_MAX)

typedef struct server server;
typedef struct conn conn;

/* One request's place in its connection's answer order. */
typedef struct {
    char *frame; /* the whole response frame (header included), malloc'd; NULL until ready */
    size_t size;
} slot;

struct conn {
    uv_pipe_t pipe;
    server *srv;
    ledger_actor actor;
    uint8_t *recv;
    size_t recv_len, recv_cap;
    slot slots[BUDGET_CONN_INFLIGHT_MAX];
    uint32_t slot_head, slot_count;
    size_t out_bytes;   /* handed to uv_write and not yet written */
    uint32_t refs;      /* batch entries and jobs that will answer into this connection */
    bool reading;       /* uv_read_start is in effect */
    bool closing;       /* uv_close called */
    bool closed;        /* close callback ran; freed when refs reach 0 */
    bool close_flushed; /* close once every answer is written (unframeable stream) */
    bool processing;    /* inside conn_process: answers made there must not re-enter it */
    conn *prev, *next;
};

/* A write waiting for, or riding in, a group commit. */
typedef struct {
    conn *c;
    uint32_t slot;
    uint64_t req_id;
    ledger_cmd cmd;
    bool has_expect_head;
    uint64_t expect_head;
    bool dup;        /* a retry of an event still in flight: answered with its result */
    ledger_event ev; /* the event made (or, for dup, the original's) */
    uint8_t hash[BUDGET_HASH_BYTES];
    size_t offset; /* of the encoded event in the batch's bytes */
    size_t size;
} batch_entry;

typedef struct {
    batch_entry *entries;
    size_t count, cap;
    uint8_t *bytes;
    size_t bytes_len, bytes_cap;
    store_item *items;
    size_t items_count;
    int rc;
    bool sync_failed;
} batch;

typedef enum { JOB_BALANCES, JOB_EVENTS, JOB_VERIFY } job_kind;

typedef struct {
    uv_work_t work;
    server *srv;
    conn *c;
    uint32_t slot;
    uint64_t req_id;
    job_kind kind;
    balances_query bq;
    events_query eq;
    uint64_t head; /* committed head when the job was queued */
    msgpack_sbuffer out;
} job;

struct server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_signal_t sigterm, sigint;
    uv_async_t writer_async;
    uv_check_t commit_check;
    const char *socket_path;
    store *store;

    ledger *committed;
    uint64_t committed_head;
    uint8_t committed_hash[BUDGET_HASH_BYTES];
    ledger *speculative;
    uint64_t spec_head;
    uint8_t spec_hash[BUDGET_HASH_BYTES];

    batch batches[2];
    batch *pending;  /* filling on the loop thread */
    batch *inflight; /* with the writer thread, or NULL */

    uv_thread_t writer;
    uv_mutex_t writer_mutex;
    uv_cond_t writer_cond;
    batch *writer_job;
    bool writer_done;
    bool writer_stop;

    conn *conns;
    uint32_t conn_count;
    uint32_t jobs_running;
    bool stopping;
    int exit_status;
    uint64_t started_ms;

    /* counters for stats */
    uint64_t requests, errors, batches_committed, batch_events_max, commits_failed;
    uint64_t connections_total, connections_refused;
};

static void conn_flush(conn *c);
static void conn_process(conn *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_close(conn *c);
static void maybe_finish(server *s);
static void schedule_commit(server *s);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- responses ------------------------------------------------------------------------ */

/* A response under construction: the frame header is patched in when it is finished. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} resp;

static void resp_begin(resp *r, uint64_t req_id, bool ok)
{
    static const char header[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&r->sb, header, sizeof(header));
    msgpack_pack_map(&r->pk, 3);
    pack_key_uint(&r->pk, "id", req_id);
    pack_cstr(&r->pk, "ok");
    if (ok)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_cstr(&r->pk, ok ? "result" : "error");
}

static void resp_error_into(resp *r, uint64_t req_id, int code, const char *message)
{
    resp_begin(r, req_id, false);
    msgpack_pack_map(&r->pk, 2);
    pack_key_str(&r->pk, "code", budget_err_code(code));
    pack_key_str(&r->pk, "message", message);
}

/* Finishes the frame; a result over the frame limit becomes a too_large error. */
static void resp_finish(resp *r, uint64_t req_id)
{
    size_t body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    if (body > BUDGET_FRAME_BYTES_MAX) {
        msgpack_sbuffer_destroy(&r->sb);
        resp_error_into(r, req_id, BUDGET_ETOO_LARGE,
                        "the result is over the 1 MiB frame limit; narrow the query or page it");
        body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    }
    budget_frame_header((uint8_t *)r->sb.data, (uint32_t)body);
}

/* ---- connections: answer order and output ----------------------------------------------- */

static bool conn_slot_open(conn *c, uint32_t *idx)
{
    if (c->slot_count == BUDGET_CONN_INFLIGHT_MAX)
        return false;
    *idx = (c->slot_head + c->slot_count) % BUDGET_CONN_INFLIGHT_MAX;
    c->slot_count++;
    c->slots[*idx].frame = NULL;
    c->slots[*idx].size = 0;
    return true;
}

/* Hands a finished response to its slot; the connection writes it when its turn comes. */
static void conn_answer(conn *c, uint32_t idx, resp *r, uint64_t req_id)
{
    resp_finish(r, req_id);
    if (c->closing) {
        msgpack_sbuffer_destroy(&r->sb);
        return;
    }
    c->slots[idx].size = r->sb.size;
    c->slots[idx].frame = msgpack_sbuffer_release(&r->sb);
    conn_flush(c);
}

static void conn_answer_error(conn *c, uint32_t idx, uint64_t req_id, int code, const char *msg)
{
    resp r;
    if (code != 0)
        c->srv->errors++;
    resp_error_into(&r, req_id, code, msg);
    conn_answer(c, idx, &r, req_id);
}

typedef struct {
    uv_write_t req;
    conn *c;
    char *frame;
    size_t size;
} write_req;

static void conn_maybe_resume(conn *c)
{
    if (c->closing || c->reading)
        return;
    if (c->slot_count >= BUDGET_CONN_INFLIGHT_MAX || c->out_bytes > BUDGET_CONN_OUTPUT_BYTES_MAX)
        return;
    if (c->close_flushed || c->processing)
        return;
    /* Frames already received are handled before reading more. */
    conn_process(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;

    c->out_bytes -= w->size;
    free(w->frame);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        log_debug("uid %u: write failed: %s", c->actor.uid, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->close_flushed && c->out_bytes == 0 && c->slot_count == 0) {
        conn_close(c);
        return;
    }
    conn_maybe_resume(c);
}

static void conn_flush(conn *c)
{
    while (c->slot_count > 0 && c->slots[c->slot_head].frame) {
        slot *sl = &c->slots[c->slot_head];
        write_req *w = malloc(sizeof(*w));
        c->slot_head = (c->slot_head + 1) % BUDGET_CONN_INFLIGHT_MAX;
        c->slot_count--;
        if (!w) {
            free(sl->frame);
            sl->frame = NULL;
            conn_close(c);
            return;
        }
        w->c = c;
        w->frame = sl->frame;
        w->size = sl->size;
        sl->frame = NULL;
        uv_buf_t buf = uv_buf_init(w->frame, (unsigned int)w->size);
        c->out_bytes += w->size;
        int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
        if (rc < 0) {
            c->out_bytes -= w->size;
            free(w->frame);
            free(w);
            conn_close(c);
            return;
        }
    }
    conn_maybe_resume(c);
}

static void conn_free(conn *c)
{
    for (uint32_t i = 0; i < BUDGET_CONN_INFLIGHT_MAX; i++)
        free(c->slots[i].frame);
    free(c->recv);
    free(c);
}

static void conn_unref(conn *c)
{
    c->refs--;
    if (c->refs == 0 && c->closed)
        conn_free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    server *s = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->conn_count--;
    c->closed = true;
    if (c->refs == 0)
        conn_free(c);
    maybe_finish(s);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

/* ---- group commit ---------------------------------------------------------------------- */

static int batch_reserve(batch *b)
{
    if (b->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        batch_entry *e = realloc(b->entries, cap * sizeof(*e));
        if (!e)
            return BUDGET_EUNAVAILABLE;
        b->entries = e;
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

static void batch_free(batch *b)
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

/* A write whose id exists: the same content is answered with the first result. */
static void admit_retry(server *s, batch_entry *e, uint64_t existing)
{
    char msg[200];
    if (existing <= s->committed_head) {
        store_reader *r;
        store_val v;
        ledger_event ev;
        const uint8_t *prev, *hash;
        if (store_reader_begin(s->store, &r) != 0) {
            conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EUNAVAILABLE,
                              "the event store cannot be read now");
            return;
        }
        int rc = store_reader_get(r, existing, &v);
        if (rc == 0)
            rc = event_decode(v.data, v.size, &ev);
        if (rc == 0)
            rc = event_link(v.data, v.size, &prev, &hash);
        if (rc == 0 && ledger_same_request(&e->cmd, &ev)) {
            uint8_t h[BUDGET_HASH_BYTES];
            memcpy(h, hash, sizeof(h));
            store_reader_end(r);
            answer_write_ok(s, e->c, e->slot, e->req_id, &ev, h);
            return;
        }
        store_reader_end(r);
        if (rc != 0) {
            conn_answer_error(e->c, e->slot, e->req_id, BUDGET_EINTERNAL,
                              "the event that holds this id cannot be read");
            return;
        }
    } else {
        const batch_entry *orig = find_undurable(s, existing);
        if (orig && ledger_same_request(&e->cmd, &orig->ev)) {
            batch_entry *d = &s->pending->entries[s->pending->count++];
            *d = *e;
            d->dup = true;
            d->ev = orig->ev;
            memcpy(d->hash, orig->hash, sizeof(d->hash));
            return;
        }
    }
    snprintf(msg, sizeof(msg), "id %s is taken by event %llu with other content", e->cmd.id,
             (unsigned long long)existing);
    conn_answer_error(e->c, e->slot, e->req_id, BUDGET_ECONFLICT, msg);
}

/*
 * Checks a write against the speculative ledger and, when it passes, encodes its event into
 * the pending batch and applies it to the speculative ledger. `e` is copied; on any error the
 * write is answered here. The connection's reference is kept by a queued entry and dropped
 * otherwise.
 */
static void admit_write(server *s, const batch_entry *in)
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
        admit_retry(s, &e, existing);
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
    e.ev.ts_ms = now_ms();
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
        conn_unref(e.c);
    else
        schedule_commit(s);
}

static void writer_main(void *arg)
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
        conn_unref(e->c);
    }
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
        conn_unref(e->c);
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
        s->exit_status = 1;
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

static void server_stop(server *s, int status);

static void on_writer_done(uv_async_t *h)
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
    s->inflight = NULL;
    if (b->sync_failed) {
        log_error("a commit's sync failed: the disk's state is unknown; stopping writes and "
                  "exiting so a restart replays what is on disk");
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
    if (s->pending->count > 0)
        schedule_commit(s);
    maybe_finish(s);
}

/* Hands the pending batch to the writer thread, when it is idle. */
static void launch_commit(server *s)
{
    batch *b = s->pending;
    size_t n = 0;

    if (s->inflight || b->count == 0 || s->exit_status != 0)
        return;
    free(b->items);
    b->items = malloc(b->count * sizeof(*b->items));
    if (!b->items) {
        answer_batch_failed(s, b, "budgetd is out of memory");
        batch_reset(b);
        recheck_pending(s);
        return;
    }
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

/* Runs once per loop turn, after every read of that turn: writes read together commit together. */
static void on_commit_check(uv_check_t *h)
{
    server *s = h->data;
    uv_check_stop(h);
    launch_commit(s);
}

static void schedule_commit(server *s)
{
    if (!s->inflight)
        uv_check_start(&s->commit_check, on_commit_check);
}

/* ---- read jobs on worker threads --------------------------------------------------------- */

typedef struct {
    ledger *l;
    uint64_t upto;
    int rc;
} replay_ctx;

static int replay_one(void *ctx, uint64_t seq, store_val v)
{
    replay_ctx *r = ctx;
    ledger_event ev;
    if (seq > r->upto)
        return 1;
    if (event_decode(v.data, v.size, &ev) != 0 || ledger_apply(r->l, &ev) != 0) {
        r->rc = BUDGET_EINTERNAL;
        return 1;
    }
    return 0;
}

static void job_balances(job *j, store_reader *rd, resp *r)
{
    ledger_error err;
    replay_ctx ctx = {ledger_new(), j->bq.as_of, 0};

    if (!ctx.l) {
        resp_error_into(r, j->req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    store_reader_scan(rd, 0, replay_one, &ctx);
    if (ctx.rc != 0) {
        resp_error_into(r, j->req_id, BUDGET_EINTERNAL, "the log does not replay; run verify");
    } else {
        resp_begin(r, j->req_id, true);
        if (request_pack_balances(&r->pk, ctx.l, &j->bq, j->bq.as_of, &err) != 0) {
            msgpack_sbuffer_destroy(&r->sb);
            resp_error_into(r, j->req_id, err.code, err.message);
        }
    }
    ledger_free(ctx.l);
}

typedef struct {
    const events_query *q;
    uint64_t head, next, scanned;
    uint32_t found;
    msgpack_sbuffer events; /* the matching events' stored bytes, back to back */
    int rc;
} events_ctx;

static int events_one(void *ctx, uint64_t seq, store_val v)
{
    events_ctx *e = ctx;
    ledger_event ev;

    if (seq > e->head || e->found >= e->q->limit || e->scanned >= BUDGET_EVENTS_SCAN_MAX)
        return 1;
    e->scanned++;
    e->next = seq;
    if (event_decode(v.data, v.size, &ev) != 0) {
        e->rc = BUDGET_EINTERNAL;
        return 1;
    }
    if (request_event_matches(e->q, &ev)) {
        msgpack_sbuffer_write(&e->events, (const char *)v.data, v.size);
        e->found++;
    }
    return 0;
}

static void job_events(job *j, store_reader *rd, resp *r)
{
    events_ctx e = {&j->eq, j->head, j->eq.after, 0, 0, {0}, 0};

    msgpack_sbuffer_init(&e.events);
    if (e.next > e.head)
        e.next = e.head;
    store_reader_scan(rd, j->eq.after, events_one, &e);
    if (e.rc != 0) {
        resp_error_into(r, j->req_id, BUDGET_EINTERNAL, "an event cannot be decoded; run verify");
    } else {
        /* Every event was scanned up to `head` when fewer than `limit` matched. */
        if (e.found < j->eq.limit && e.scanned < BUDGET_EVENTS_SCAN_MAX)
            e.next = e.head > j->eq.after ? e.head : j->eq.after;
        resp_begin(r, j->req_id, true);
        msgpack_pack_map(&r->pk, 3);
        pack_cstr(&r->pk, "events");
        msgpack_pack_array(&r->pk, e.found);
        msgpack_sbuffer_write(&r->sb, e.events.data, e.events.size);
        pack_key_uint(&r->pk, "next", e.next);
        pack_key_uint(&r->pk, "head", e.head);
    }
    msgpack_sbuffer_destroy(&e.events);
}

typedef struct {
    uint64_t expect;
    uint8_t prev[BUDGET_HASH_BYTES];
    uint64_t first_bad;
    const char *why;
} verify_ctx;

static int verify_one(void *ctx, uint64_t seq, store_val v)
{
    verify_ctx *c = ctx;
    const uint8_t *prev, *hash;
    uint64_t stored_seq;

    if (seq != c->expect || event_seq(v.data, v.size, &stored_seq) != 0 || stored_seq != seq) {
        c->first_bad = c->expect;
        c->why = "seq";
        return 1;
    }
    if (event_check_link(v.data, v.size, c->prev, &c->why) != 0 ||
        event_link(v.data, v.size, &prev, &hash) != 0) {
        c->first_bad = seq;
        return 1;
    }
    memcpy(c->prev, hash, sizeof(c->prev));
    c->expect++;
    return 0;
}

static void job_verify(job *j, store_reader *rd, resp *r)
{
    verify_ctx c = {1, {0}, 0, ""};
    uint64_t head = store_reader_head(rd);

    store_reader_scan(rd, 0, verify_one, &c);
    resp_begin(r, j->req_id, true);
    msgpack_pack_map(&r->pk, 5);
    pack_cstr(&r->pk, "ok");
    if (c.first_bad == 0)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_key_uint(&r->pk, "checked", c.expect - 1);
    pack_key_uint(&r->pk, "head", head);
    pack_cstr(&r->pk, "first_bad");
    if (c.first_bad)
        msgpack_pack_uint64(&r->pk, c.first_bad);
    else
        msgpack_pack_nil(&r->pk);
    pack_key_str(&r->pk, "reason", c.first_bad ? c.why : "");
}

static void job_work(uv_work_t *w)
{
    job *j = w->data;
    store_reader *rd;
    resp r;

    if (store_reader_begin(j->srv->store, &rd) != 0) {
        resp_error_into(&r, j->req_id, BUDGET_EUNAVAILABLE, "the event store cannot be read now");
    } else {
        switch (j->kind) {
        case JOB_BALANCES:
            job_balances(j, rd, &r);
            break;
        case JOB_EVENTS:
            job_events(j, rd, &r);
            break;
        case JOB_VERIFY:
            job_verify(j, rd, &r);
            break;
        }
        store_reader_end(rd);
    }
    resp_finish(&r, j->req_id);
    j->out = r.sb;
}

static void job_done(uv_work_t *w, int status)
{
    job *j = w->data;
    server *s = j->srv;
    conn *c = j->c;

    (void)status;
    if (!c->closing) {
        c->slots[j->slot].size = j->out.size;
        c->slots[j->slot].frame = msgpack_sbuffer_release(&j->out);
        conn_flush(c);
    }
    msgpack_sbuffer_destroy(&j->out);
    free(j);
    s->jobs_running--;
    conn_unref(c);
    maybe_finish(s);
}

static void queue_job(conn *c, uint32_t idx, uint64_t req_id, job *j)
{
    server *s = c->srv;

    if (s->jobs_running >= BUDGET_READ_JOBS_MAX) {
        free(j);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE,
                          "too many long reads are running; retry shortly");
        return;
    }
    j->work.data = j;
    j->srv = s;
    j->c = c;
    j->slot = idx;
    j->req_id = req_id;
    j->head = s->committed_head;
    msgpack_sbuffer_init(&j->out);
    c->refs++;
    s->jobs_running++;
    uv_queue_work(s->loop, &j->work, job_work, job_done);
}

/* ---- ops --------------------------------------------------------------------------------- */

typedef void (*op_fn)(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args);

static bool args_empty(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args,
                       const char *op)
{
    char msg[120];
    if (!args || (args->type == MSGPACK_OBJECT_MAP && args->via.map.size == 0))
        return true;
    snprintf(msg, sizeof(msg), "%s takes no args", op);
    conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, msg);
    return false;
}

static void op_hello(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    resp r;
    if (!args_empty(c, idx, req_id, args, "hello"))
        return;
    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 5);
    pack_key_uint(&r.pk, "protocol", BUDGET_PROTOCOL_VERSION);
    pack_key_str(&r.pk, "server", "budgetd");
    pack_key_str(&r.pk, "version", BUDGET_VERSION);
    pack_key_uint(&r.pk, "head", c->srv->committed_head);
    pack_cstr(&r.pk, "actor");
    msgpack_pack_map(&r.pk, 2);
    pack_key_uint(&r.pk, "uid", c->actor.uid);
    pack_key_str(&r.pk, "name", c->actor.name);
    conn_answer(c, idx, &r, req_id);
}

static void op_balances(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    server *s = c->srv;
    balances_query q;
    ledger_error err;
    resp r;
    char msg[120];

    if (request_decode_balances(args, &q, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    if (q.has_as_of && q.as_of > s->committed_head) {
        snprintf(msg, sizeof(msg), "as_of %llu is after the last event, %llu",
                 (unsigned long long)q.as_of, (unsigned long long)s->committed_head);
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND, msg);
        return;
    }
    if (q.has_as_of && q.as_of < s->committed_head) {
        job *j = calloc(1, sizeof(*j));
        if (!j) {
            conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
            return;
        }
        j->kind = JOB_BALANCES;
        j->bq = q;
        queue_job(c, idx, req_id, j);
        return;
    }
    resp_begin(&r, req_id, true);
    if (request_pack_balances(&r.pk, s->committed, &q, s->committed_head, &err) != 0) {
        msgpack_sbuffer_destroy(&r.sb);
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    conn_answer(c, idx, &r, req_id);
}

static void op_events(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    ledger_error err;
    job *j = calloc(1, sizeof(*j));

    if (!j) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    if (request_decode_events(args, &j->eq, &err) != 0) {
        free(j);
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    j->kind = JOB_EVENTS;
    queue_job(c, idx, req_id, j);
}

static void op_verify(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    job *j;
    if (!args_empty(c, idx, req_id, args, "verify"))
        return;
    j = calloc(1, sizeof(*j));
    if (!j) {
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    j->kind = JOB_VERIFY;
    queue_job(c, idx, req_id, j);
}

static void op_stats(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    server *s = c->srv;
    ledger_counts counts;
    store_stats st;
    resp r;

    if (!args_empty(c, idx, req_id, args, "stats"))
        return;
    ledger_get_counts(s->committed, &counts);
    store_get_stats(s->store, &st);
    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 19);
    pack_key_uint(&r.pk, "head", s->committed_head);
    pack_key_uint(&r.pk, "events", ledger_events(s->committed));
    pack_key_uint(&r.pk, "frames", counts.frames);
    pack_key_uint(&r.pk, "allocations", counts.allocations);
    pack_key_uint(&r.pk, "avrop", counts.avrop);
    pack_key_uint(&r.pk, "decisions", counts.decisions);
    pack_key_uint(&r.pk, "units", counts.units);
    pack_key_uint(&r.pk, "connections", s->conn_count);
    pack_key_uint(&r.pk, "connections_total", s->connections_total);
    pack_key_uint(&r.pk, "connections_refused", s->connections_refused);
    pack_key_uint(&r.pk, "requests", s->requests);
    pack_key_uint(&r.pk, "errors", s->errors);
    pack_key_uint(&r.pk, "batches", s->batches_committed);
    pack_key_uint(&r.pk, "batch_events_max", s->batch_events_max);
    pack_key_uint(&r.pk, "commits_failed", s->commits_failed);
    pack_key_uint(&r.pk, "map_bytes", st.map_bytes);
    pack_key_uint(&r.pk, "map_used_bytes", st.map_used_bytes);
    pack_key_uint(&r.pk, "map_growths", st.map_growths);
    pack_key_uint(&r.pk, "uptime_ms", now_ms() - s->started_ms);
    conn_answer(c, idx, &r, req_id);
}

static void op_write(conn *c, uint32_t idx, uint64_t req_id, const request_write_op *w,
                     const msgpack_object *args)
{
    batch_entry e;
    ledger_error err;

    memset(&e, 0, sizeof(e));
    if (request_decode_write(w, args, &e.cmd, &e.has_expect_head, &e.expect_head, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    e.c = c;
    e.slot = idx;
    e.req_id = req_id;
    c->refs++;
    admit_write(c->srv, &e);
}

/* The read ops, a table: name and handler. Writes come from request.c's table. */
static const struct {
    const char *name;
    op_fn fn;
} read_ops[] = {
    {"hello", op_hello},   {"balances", op_balances}, {"events", op_events},
    {"verify", op_verify}, {"stats", op_stats},
};

/* ---- frames ------------------------------------------------------------------------------ */

/* The envelope's id, read best-effort from a frame that failed validation; 0 if unreadable. */
static uint64_t peek_request_id(const uint8_t *body, size_t size)
{
    mp_reader r;
    uint32_t n;
    uint64_t id = 0;

    mp_reader_init(&r, body, size);
    if (mp_read_map(&r, &n) != 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        int eq = mp_read_str_eq(&r, "id");
        if (eq < 0)
            return 0;
        if (eq == 1)
            return mp_read_uint(&r, &id) == 0 ? id : 0;
        if (mp_skip(&r, BUDGET_DEPTH_MAX) != 0)
            return 0;
    }
    return 0;
}

static void dispatch(conn *c, uint32_t idx, const msgpack_object *root)
{
    const msgpack_object *op = NULL, *args = NULL, *id = NULL;
    uint64_t req_id = 0;
    char msg[160];

    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        const msgpack_object *v = &root->via.map.ptr[i].val;
        if (k->via.str.size == 2 && memcmp(k->via.str.ptr, "id", 2) == 0)
            id = v;
        else if (k->via.str.size == 2 && memcmp(k->via.str.ptr, "op", 2) == 0)
            op = v;
        else if (k->via.str.size == 4 && memcmp(k->via.str.ptr, "args", 4) == 0)
            args = v;
        else {
            conn_answer_error(c, idx, 0, BUDGET_EBAD_REQUEST,
                              "a request holds only id, op and args");
            return;
        }
    }
    if (!id || id->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        conn_answer_error(c, idx, 0, BUDGET_EBAD_REQUEST, "a request needs a uint id");
        return;
    }
    req_id = id->via.u64;
    if (!op || op->type != MSGPACK_OBJECT_STR) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, "a request needs a str op");
        return;
    }
    if (args && args->type == MSGPACK_OBJECT_NIL)
        args = NULL;
    if (args && args->type != MSGPACK_OBJECT_MAP) {
        conn_answer_error(c, idx, req_id, BUDGET_EBAD_REQUEST, "args must be a map");
        return;
    }
    const request_write_op *w = request_find_write(op->via.str.ptr, op->via.str.size);
    if (w) {
        op_write(c, idx, req_id, w, args);
        return;
    }
    for (size_t i = 0; i < sizeof(read_ops) / sizeof(read_ops[0]); i++) {
        if (strlen(read_ops[i].name) == op->via.str.size &&
            memcmp(read_ops[i].name, op->via.str.ptr, op->via.str.size) == 0) {
            read_ops[i].fn(c, idx, req_id, args);
            return;
        }
    }
    snprintf(msg, sizeof(msg), "no op \"%.*s\"",
             (int)(op->via.str.size > 40 ? 40 : op->via.str.size), op->via.str.ptr);
    conn_answer_error(c, idx, req_id, BUDGET_EUNKNOWN_OP, msg);
}

static void handle_frame(conn *c, const uint8_t *body, size_t size)
{
    char why[160];
    msgpack_unpacked u;
    size_t off = 0;
    uint32_t idx = 0;
    int rc;

    conn_slot_open(c, &idx); /* the caller checked that a slot is free */
    c->srv->requests++;
    rc = budget_validate_frame(body, size, why, sizeof(why));
    if (rc != 0) {
        conn_answer_error(c, idx, peek_request_id(body, size), rc, why);
        return;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)body, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        conn_answer_error(c, idx, 0, BUDGET_EBAD_REQUEST, "the frame is not one msgpack map");
        return;
    }
    dispatch(c, idx, &u.data);
    msgpack_unpacked_destroy(&u);
}

/* Handles every whole frame received, while answer slots and output room allow. */
static void conn_process(conn *c)
{
    size_t used = 0;
    uint32_t body = 0;

    c->processing = true;
    while (!c->closing && !c->close_flushed && c->slot_count < BUDGET_CONN_INFLIGHT_MAX &&
           c->out_bytes <= BUDGET_CONN_OUTPUT_BYTES_MAX) {
        int rc = budget_frame_peek(c->recv + used, c->recv_len - used, &body);
        if (rc == 1)
            break;
        if (rc < 0) {
            uint32_t idx = 0;
            char msg[120];
            uint32_t n = ((uint32_t)c->recv[used] << 24) | ((uint32_t)c->recv[used + 1] << 16) |
                         ((uint32_t)c->recv[used + 2] << 8) | c->recv[used + 3];
            snprintf(msg, sizeof(msg), "a frame of %u bytes; frames are 1..%u bytes", n,
                     BUDGET_FRAME_BYTES_MAX);
            log_info("uid %u: %s; closing the connection", c->actor.uid, msg);
            conn_slot_open(c, &idx);
            c->close_flushed = true;
            conn_answer_error(c, idx, 0, BUDGET_ETOO_LARGE, msg);
            used = c->recv_len;
            break;
        }
        handle_frame(c, c->recv + used + BUDGET_FRAME_HEADER_BYTES, body);
        used += BUDGET_FRAME_HEADER_BYTES + body;
    }
    if (used > 0) {
        memmove(c->recv, c->recv + used, c->recv_len - used);
        c->recv_len -= used;
    }
    c->processing = false;
    if (c->closing || c->close_flushed)
        return;
    bool room =
        c->slot_count < BUDGET_CONN_INFLIGHT_MAX && c->out_bytes <= BUDGET_CONN_OUTPUT_BYTES_MAX;
    if (room && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!room && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    size_t need = c->recv_len + 1;

    (void)suggested;
    if (c->recv_len >= BUDGET_FRAME_HEADER_BYTES) {
        uint32_t body = ((uint32_t)c->recv[0] << 24) | ((uint32_t)c->recv[1] << 16) |
                        ((uint32_t)c->recv[2] << 8) | c->recv[3];
        if (body <= BUDGET_FRAME_BYTES_MAX && body + BUDGET_FRAME_HEADER_BYTES > need)
            need = body + BUDGET_FRAME_HEADER_BYTES;
    }
    if (need > c->recv_cap || c->recv_cap == 0) {
        size_t cap = c->recv_cap ? c->recv_cap : RECV_BYTES_INITIAL;
        while (cap < need)
            cap *= 2;
        if (cap > RECV_BYTES_MAX)
            cap = RECV_BYTES_MAX;
        uint8_t *p = realloc(c->recv, cap);
        if (p) {
            c->recv = p;
            c->recv_cap = cap;
        }
    }
    *buf = uv_buf_init((char *)c->recv + c->recv_len, (unsigned int)(c->recv_cap - c->recv_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = stream->data;

    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug("uid %u: read failed: %s", c->actor.uid, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    c->recv_len += (size_t)nread;
    conn_process(c);
}

/* The peer's uid and user name, from the kernel. */
static int peer_actor(conn *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uv_os_fd_t fd;
    struct passwd pw, *found = NULL;
    char buf[4096];

    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return -1;
    c->actor.uid = cred.uid;
    c->actor.name[0] = '\0';
    if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &found) == 0 && found &&
        strlen(found->pw_name) <= BUDGET_NAME_BYTES_MAX)
        snprintf(c->actor.name, sizeof(c->actor.name), "%s", found->pw_name);
    return 0;
}

static void on_connection(uv_stream_t *listener, int status)
{
    server *s = listener->data;
    conn *c;

    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->conn_count++;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0 || peer_actor(c) != 0) {
        conn_close(c);
        return;
    }
    s->connections_total++;
    if (s->conn_count > BUDGET_CONNECTIONS_MAX || s->stopping) {
        uint32_t idx = 0;
        s->connections_refused++;
        log_warn("uid %u refused: %u connections is the limit", c->actor.uid,
                 BUDGET_CONNECTIONS_MAX);
        conn_slot_open(c, &idx);
        c->close_flushed = true;
        conn_answer_error(c, idx, 0, BUDGET_EUNAVAILABLE,
                          s->stopping ? "budgetd is stopping" : "too many connections");
        return;
    }
    conn_process(c);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum)
{
    server *s = h->data;
    log_info("signal %d: finishing the batch in flight, then stopping", signum);
    server_stop(s, 0);
}

static void close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Once stopping, and no batch or job is left, every handle is closed and the loop ends. */
static void maybe_finish(server *s)
{
    if (!s->stopping || s->inflight || s->pending->count > 0 || s->jobs_running > 0)
        return;
    for (conn *c = s->conns; c; c = c->next)
        conn_close(c);
    if (s->conns)
        return; /* the last close callback calls again */
    close_if_open((uv_handle_t *)&s->sigterm);
    close_if_open((uv_handle_t *)&s->sigint);
    close_if_open((uv_handle_t *)&s->writer_async);
    close_if_open((uv_handle_t *)&s->commit_check);
}

static void server_stop(server *s, int status)
{
    if (status > s->exit_status)
        s->exit_status = status;
    if (s->stopping)
        return;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, NULL);
    if (unlink(s->socket_path) != 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s", s->socket_path, strerror(errno));
    maybe_finish(s);
}

/* Removes a socket file left by a daemon that died; refuses when one still answers there. */
static int clear_stale_socket(const char *path)
{
    struct stat st;
    struct sockaddr_un addr;
    int fd, rc;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_error("%s exists and is not a socket", path);
        return -EEXIST;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    close(fd);
    if (rc == 0) {
        log_error("another budgetd answers on %s", path);
        return -EADDRINUSE;
    }
    if (unlink(path) != 0)
        return -errno;
    log_info("removed the stale socket %s", path);
    return 0;
}

static int server_listen(server *s)
{
    int rc = clear_stale_socket(s->socket_path);
    if (rc != 0)
        return rc;
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = s;
    /* The socket is created 0660 (owner and group), never more open, not even for a moment. */
    mode_t old = umask(0117);
    rc = uv_pipe_bind(&s->listener, s->socket_path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (rc != 0) {
        log_error("cannot listen on %s: %s", s->socket_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    return rc;
}

int server_run(const server_config *cfg)
{
    server *s = calloc(1, sizeof(*s));
    int status;

    if (!s)
        return 1;
    s->loop = uv_default_loop();
    s->socket_path = cfg->socket_path;
    s->store = cfg->store;
    s->committed = cfg->ledger;
    s->committed_head = cfg->head;
    memcpy(s->committed_hash, cfg->head_hash, sizeof(s->committed_hash));
    s->speculative = ledger_clone(s->committed);
    s->spec_head = cfg->head;
    memcpy(s->spec_hash, cfg->head_hash, sizeof(s->spec_hash));
    s->pending = &s->batches[0];
    s->started_ms = now_ms();
    if (!s->speculative) {
        log_error("out of memory");
        ledger_free(s->committed);
        free(s);
        return 1;
    }

    uv_mutex_init(&s->writer_mutex);
    uv_cond_init(&s->writer_cond);
    uv_async_init(s->loop, &s->writer_async, on_writer_done);
    s->writer_async.data = s;
    uv_check_init(s->loop, &s->commit_check);
    s->commit_check.data = s;
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    uv_thread_create(&s->writer, writer_main, s);

    if (server_listen(s) != 0) {
        s->stopping = true;
        s->exit_status = 1;
        maybe_finish(s);
    } else {
        log_info("serving %s: head %llu", s->socket_path, (unsigned long long)s->committed_head);
    }
    uv_run(s->loop, UV_RUN_DEFAULT);

    uv_mutex_lock(&s->writer_mutex);
    s->writer_stop = true;
    uv_cond_signal(&s->writer_cond);
    uv_mutex_unlock(&s->writer_mutex);
    uv_thread_join(&s->writer);
    uv_loop_close(s->loop);
    uv_mutex_destroy(&s->writer_mutex);
    uv_cond_destroy(&s->writer_cond);

    status = s->exit_status;
    log_info("stopped at head %llu", (unsigned long long)s->committed_head);
    ledger_free(s->committed);
    ledger_free(s->speculative);
    batch_free(&s->batches[0]);
    batch_free(&s->batches[1]);
    free(s);
    return status;
}
