/* The op table: read ops answered on the loop thread or by worker jobs; writes go to commit.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "proto/text.h"
#include "log.h"
#include "server_internal.h"
#include "checkpoint.h"
#include "event.h"
#include "replay.h"
#include "audit_ops.h"
#include "subscribe.h"

/* ---- read jobs on worker threads --------------------------------------------------------- */

typedef enum { JOB_BALANCES, JOB_EVENTS, JOB_VERIFY } job_kind;

typedef struct {
    worker_job base;
    job_kind kind;
    balances_query bq;
    events_query eq;
    uint64_t head; /* committed head when the job was queued */
} job;

/* Balances as of an earlier event: the log replayed up to it into a ledger of the job's own.
 * No store reader may be held here: the replay's walker thread begins its own. */
static void job_balances(job *j, resp *r)
{
    ledger_error err;
    replay_result res;
    ledger *l = ledger_new();

    if (!l) {
        resp_error_into(r, j->base.req_id, BUDGET_EUNAVAILABLE, "out of memory");
        return;
    }
    int rc = replay_log(j->base.srv->store, l, j->bq.as_of, &res);
    if (rc != 0) {
        resp_error_into(r, j->base.req_id, rc, res.why);
    } else {
        resp_begin(r, j->base.req_id, true);
        if (request_pack_balances(&r->pk, l, &j->bq, j->bq.as_of, &err) != 0) {
            msgpack_sbuffer_destroy(&r->sb);
            resp_error_into(r, j->base.req_id, err.code, err.message);
        }
    }
    ledger_free(l);
}

typedef struct {
    const events_query *q;
    uint64_t head, next, scanned;
    uint32_t found;
    msgpack_sbuffer events; /* the matching events' stored bytes, back to back */
    int rc;
    store_reader *rd;
} events_ctx;

/* True when the avrop `id` (an event before this one) was requested from `allocation`. */
static bool avrop_of(store_reader *rd, const char *id, const char *allocation)
{
    uint64_t seq;
    store_val v;
    ledger_event avrop;

    return store_reader_find_id(rd, id, strlen(id), &seq) == 0 &&
           store_reader_get(rd, seq, &v) == 0 && event_decode(v.data, v.size, &avrop) == 0 &&
           strcmp(avrop.allocation, allocation) == 0;
}

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
    event_match m = request_event_matches(e->q, &ev);
    if (m == EVENT_YES ||
        (m == EVENT_IF_AVROP_OF_ENTITY && avrop_of(e->rd, ev.target, e->q->entity))) {
        msgpack_sbuffer_write(&e->events, (const char *)v.data, v.size);
        e->found++;
    }
    return 0;
}

static void job_events(job *j, store_reader *rd, resp *r)
{
    events_ctx e = {&j->eq, j->head, j->eq.after, 0, 0, {0}, 0, rd};

    msgpack_sbuffer_init(&e.events);
    if (e.next > e.head)
        e.next = e.head;
    store_reader_scan(rd, j->eq.after, events_one, &e);
    if (e.rc != 0) {
        resp_error_into(r, j->base.req_id, BUDGET_EINTERNAL,
                        "an event cannot be decoded; run verify");
    } else {
        /* Every event was scanned up to `head` when fewer than `limit` matched. */
        if (e.found < j->eq.limit && e.scanned < BUDGET_EVENTS_SCAN_MAX)
            e.next = e.head > j->eq.after ? e.head : j->eq.after;
        resp_begin(r, j->base.req_id, true);
        msgpack_pack_map(&r->pk, 3);
        pack_cstr(&r->pk, "events");
        msgpack_pack_array(&r->pk, e.found);
        msgpack_sbuffer_write(&r->sb, e.events.data, e.events.size);
        pack_key_uint(&r->pk, "next", e.next);
        pack_key_uint(&r->pk, "head", e.head);
    }
    msgpack_sbuffer_destroy(&e.events);
}

/* The whole chain re-walked (checkpoint_walk_chain, as `audit check` does it offline). */
static void job_verify(job *j, store_reader *rd, resp *r)
{
    checkpoint_chain chain;

    checkpoint_walk_chain(rd, 0, &chain);
    resp_begin(r, j->base.req_id, true);
    msgpack_pack_map(&r->pk, 5);
    pack_cstr(&r->pk, "ok");
    if (chain.first_bad == 0)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_key_uint(&r->pk, "checked", chain.checked);
    pack_key_uint(&r->pk, "head", chain.head);
    pack_cstr(&r->pk, "first_bad");
    if (chain.first_bad)
        msgpack_pack_uint64(&r->pk, chain.first_bad);
    else
        msgpack_pack_nil(&r->pk);
    pack_key_str(&r->pk, "reason", chain.why);
}

static void read_job_run(worker_job *w, resp *r)
{
    job *j = (job *)w;
    store_reader *rd;

    if (j->kind == JOB_BALANCES) {
        job_balances(j, r);
        return;
    }
    if (store_reader_begin(w->srv->store, &rd) != 0) {
        resp_error_into(r, w->req_id, BUDGET_EUNAVAILABLE, "the event store cannot be read now");
        return;
    }
    switch (j->kind) {
    case JOB_BALANCES:
        break;
    case JOB_EVENTS:
        job_events(j, rd, r);
        break;
    case JOB_VERIFY:
        job_verify(j, rd, r);
        break;
    }
    store_reader_end(rd);
}

/*
 * Worker jobs take their turns on libuv's pool: at most WORKER_JOBS_ON_POOL_MAX at once; the
 * others wait in server.jobs_waiting. The next to run is the oldest job of a uid with the
 * fewest jobs on the pool, so a uid that queued many slow reads has one after the other, and
 * another uid's read runs as soon as a thread is free, not after them all. A uid may have at
 * most BUDGET_READ_JOBS_PER_UID_MAX jobs running or waiting, and all uids
 * BUDGET_READ_JOBS_MAX; past either a request is answered `unavailable` at once.
 */
static void worker_run(uv_work_t *w)
{
    worker_job *j = w->data;
    if (j->srv->job_hook)
        j->srv->job_hook();
    j->run(j, &j->answer);
    resp_finish(&j->answer, j->req_id);
}

static void worker_done(uv_work_t *w, int status);

static uint32_t jobs_on_pool_of(const server *s, uint32_t uid)
{
    uint32_t n = 0;
    for (const worker_job *o = s->jobs_on_pool; o; o = o->next)
        n += o->uid == uid;
    return n;
}

/* Hands waiting jobs to the pool while it has room, fairly between uids. */
static void worker_start_waiting(server *s)
{
    while (s->jobs_waiting && s->jobs_on_pool_count < WORKER_JOBS_ON_POOL_MAX) {
        worker_job **best = NULL, *prev = NULL, *best_prev = NULL;
        uint32_t best_running = UINT32_MAX;
        for (worker_job **p = &s->jobs_waiting; *p; prev = *p, p = &(*p)->next) {
            uint32_t running = jobs_on_pool_of(s, (*p)->uid);
            if (running < best_running) {
                best = p;
                best_prev = prev;
                best_running = running;
            }
            if (running == 0)
                break; /* none is fewer */
        }
        worker_job *j = *best;
        *best = j->next;
        if (s->jobs_waiting_tail == j)
            s->jobs_waiting_tail = best_prev;
        j->next = s->jobs_on_pool;
        s->jobs_on_pool = j;
        s->jobs_on_pool_count++;
        uv_queue_work(s->loop, &j->work, worker_run, worker_done);
    }
}

static void worker_done(uv_work_t *w, int status)
{
    worker_job *j = w->data;
    server *s = j->srv;
    conn *c = j->c;

    (void)status;
    for (worker_job **p = &s->jobs_on_pool; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    s->jobs_on_pool_count--;
    worker_start_waiting(s);
    c->jobs_running--;
    size_t size = j->answer.sb.size;
    conn_answer_frame(c, j->slot, msgpack_sbuffer_release(&j->answer.sb), size);
    if (j->finished)
        j->finished(j);
    free(j);
    s->jobs_running--;
    conn_unref(c);
    maybe_finish(s);
}

int worker_queue(conn *c, uint32_t idx, uint64_t req_id, worker_job *j)
{
    server *s = c->srv;
    uint32_t uid = c->actor.uid, mine = 0;
    char msg[200];

    for (const worker_job *o = s->jobs_on_pool; o; o = o->next)
        mine += o->uid == uid;
    for (const worker_job *o = s->jobs_waiting; o; o = o->next)
        mine += o->uid == uid;
    if (s->jobs_running >= BUDGET_READ_JOBS_MAX || mine >= BUDGET_READ_JOBS_PER_UID_MAX) {
        free(j);
        if (mine >= BUDGET_READ_JOBS_PER_UID_MAX)
            snprintf(msg, sizeof(msg),
                     "uid %u has %u long reads (events, verify, balances as_of, checkpoint) "
                     "running or waiting, the most one uid may; retry once one is "
                     "answered",
                     uid, mine);
        else
            snprintf(msg, sizeof(msg),
                     "%u long reads are running or waiting, the most budgetd takes; retry "
                     "shortly",
                     BUDGET_READ_JOBS_MAX);
        conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, msg);
        return -1;
    }
    j->work.data = j;
    j->srv = s;
    j->c = c;
    j->uid = uid;
    j->slot = idx;
    j->req_id = req_id;
    c->refs++;
    c->jobs_running++;
    s->jobs_running++;
    j->next = NULL;
    if (s->jobs_waiting_tail)
        s->jobs_waiting_tail->next = j;
    else
        s->jobs_waiting = j;
    s->jobs_waiting_tail = j;
    worker_start_waiting(s);
    return 0;
}

/* A read job: its answer is made from a store reader begun on the worker thread. */
static void queue_job(conn *c, uint32_t idx, uint64_t req_id, job *j)
{
    j->base.run = read_job_run;
    j->head = c->srv->committed_head;
    worker_queue(c, idx, req_id, &j->base);
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

/* "roles": [{"role", "units"}...]: what the caller holds; units ["*"] means every unit. */
static void pack_hello_roles(conn *c, msgpack_packer *pk)
{
    const char *units[ACCESS_UNITS_MAX];
    size_t units_count, roles = 0;
    access_role role;
    bool all;
    int i = 0;

    while (access_next_role(c->srv->access, &c->grants, &i, &role, &all, units, ACCESS_UNITS_MAX,
                            &units_count))
        roles++;
    pack_cstr(pk, "roles");
    msgpack_pack_array(pk, roles);
    i = 0;
    while (access_next_role(c->srv->access, &c->grants, &i, &role, &all, units, ACCESS_UNITS_MAX,
                            &units_count)) {
        msgpack_pack_map(pk, 2);
        pack_key_str(pk, "role", access_role_name(role));
        pack_cstr(pk, "units");
        msgpack_pack_array(pk, all ? 1 : units_count);
        if (all)
            pack_cstr(pk, "*");
        for (size_t u = 0; !all && u < units_count; u++)
            pack_cstr(pk, units[u]);
    }
}

static void op_hello(conn *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    resp r;
    if (!args_empty(c, idx, req_id, args, "hello"))
        return;
    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 6);
    pack_key_uint(&r.pk, "protocol", BUDGET_PROTOCOL_VERSION);
    pack_key_str(&r.pk, "server", "budgetd");
    pack_key_str(&r.pk, "version", BUDGET_VERSION);
    pack_key_uint(&r.pk, "head", c->srv->committed_head);
    pack_cstr(&r.pk, "actor");
    msgpack_pack_map(&r.pk, 2);
    pack_key_uint(&r.pk, "uid", c->actor.uid);
    pack_key_str(&r.pk, "name", c->actor.name);
    pack_hello_roles(c, &r.pk);
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
    msgpack_pack_map(&r.pk, 20 + SUB_STATS_COUNT);
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
    pack_key_uint(&r.pk, "connections_timed_out", s->connections_timed_out);
    pack_key_uint(&r.pk, "requests", s->requests);
    pack_key_uint(&r.pk, "errors", s->errors);
    pack_key_uint(&r.pk, "batches", s->batches_committed);
    pack_key_uint(&r.pk, "batch_events_max", s->batch_events_max);
    pack_key_uint(&r.pk, "commits_failed", s->commits_failed);
    pack_key_uint(&r.pk, "map_bytes", st.map_bytes);
    pack_key_uint(&r.pk, "map_used_bytes", st.map_used_bytes);
    pack_key_uint(&r.pk, "map_growths", st.map_growths);
    pack_key_uint(&r.pk, "uptime_ms", uv_hrtime() / 1000000u - s->started_ms);
    sub_pack_stats(s, &r.pk);
    conn_answer(c, idx, &r, req_id);
}

/*
 * Refusals are logged, but at most REFUSALS_LOGGED_PER_S a second, so a client that asks for
 * what it may not have thousands of times cannot flood the log; the rest are counted and the
 * count is logged once the second is over (refusals_log_flush, also run by the sweep, and at stop
 * whatever the time).
 */
#define REFUSALS_LOGGED_PER_S 10

void refusals_log_flush(server *s, bool force)
{
    if (!force && uv_now(s->loop) - s->refusals_window_ms < 1000)
        return;
    if (s->refusals_unlogged > 0)
        log_info("%llu more refusals in the last second were not logged (at most %d a second "
                 "are)",
                 (unsigned long long)s->refusals_unlogged, REFUSALS_LOGGED_PER_S);
    s->refusals_unlogged = 0;
    s->refusals_logged = 0;
    s->refusals_window_ms = uv_now(s->loop);
}

bool refusal_to_log(server *s)
{
    refusals_log_flush(s, false);
    if (s->refusals_logged < REFUSALS_LOGGED_PER_S) {
        s->refusals_logged++;
        return true;
    }
    s->refusals_unlogged++;
    return false;
}

/*
 * The access check every op passes before it runs: may this connection's identity do `op`,
 * which needs `need`, for `unit` (NULL: for any unit; `what` says why the unit is concerned)?
 * When not, the request is answered forbidden and the refusal logged.
 */
static bool allowed(conn *c, uint32_t idx, uint64_t req_id, const char *op, access_role need,
                    const char *unit, const char *what)
{
    char why[600], who[BUDGET_NAME_BYTES_MAX + 32];

    if (c->actor.name[0])
        snprintf(who, sizeof(who), "uid %u (%s)", c->actor.uid, c->actor.name);
    else
        snprintf(who, sizeof(who), "uid %u", c->actor.uid);
    int rc = access_decide(c->srv->access, &c->grants, need, unit, what, op, who, why, sizeof(why));
    if (rc == 0)
        return true;
    /* The unit of a frame.grant is the client's, not yet checked: the reason, which names it,
     * is escaped before it reaches the log or the answer. */
    char safe[BUDGET_ESCAPED_BYTES(sizeof(why))];
    budget_escape(safe, sizeof(safe), why, strlen(why));
    if (rc == BUDGET_EINTERNAL)
        log_error("%s", safe);
    else if (refusal_to_log(c->srv))
        log_info("refused: %s", safe);
    conn_answer_error(c, idx, req_id, rc, safe);
    return false;
}

static void op_write(conn *c, uint32_t idx, uint64_t req_id, const request_write_op *w,
                     const msgpack_object *args)
{
    batch_entry e;
    ledger_error err;
    access_scope scope;

    memset(&e, 0, sizeof(e));
    if (request_decode_write(w, args, &e.cmd, &e.has_expect_head, &e.expect_head, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    /* The role was checked by dispatch; a role limited to units is checked here, where the
     * units the write is for can be read from the state the write will be checked against;
     * the role must hold for every one of them. */
    access_write_scope(c->srv->speculative, &e.cmd, &scope);
    for (size_t i = 0; i < scope.count; i++)
        if (!allowed(c, idx, req_id, w->op, w->need, scope.units[i].unit, scope.units[i].what))
            return;
    e.c = c;
    e.slot = idx;
    e.req_id = req_id;
    c->refs++;
    c->writes_waiting++;
    admit_write(c->srv, &e);
}

/*
 * The read ops, a table: name, the role a caller must hold, handler. The role comes second
 * so that a row without one does not compile; dispatch checks it before the op runs. Writes
 * come from request.c's table, which declares theirs the same way.
 */
static const struct {
    const char *name;
    access_role need;
    op_fn fn;
} read_ops[] = {
    {"hello", ACCESS_ANYONE, op_hello},
    {"balances", ACCESS_READER, op_balances},
    {"events", ACCESS_READER, op_events},
    {"verify", ACCESS_AUDITOR, op_verify},
    {"stats", ACCESS_READER, op_stats},
    /* subscribe.c and audit_ops.c */
    {"subscribe", ACCESS_READER, op_subscribe},
    {"checkpoint", ACCESS_AUDITOR, op_checkpoint},
    {"backup", ACCESS_AUDITOR, op_backup},
};

void dispatch(conn *c, uint32_t idx, const budget_envelope *env, const msgpack_object *args)
{
    uint64_t req_id = env->id;
    char msg[160], op[BUDGET_ESCAPED_BYTES(BUDGET_OP_BYTES_MAX)];

    const request_write_op *w = request_find_write(env->op, env->op_len);
    if (w) {
        if (allowed(c, idx, req_id, w->op, w->need, NULL, NULL))
            op_write(c, idx, req_id, w, args);
        return;
    }
    for (size_t i = 0; i < sizeof(read_ops) / sizeof(read_ops[0]); i++) {
        if (strlen(read_ops[i].name) == env->op_len &&
            memcmp(read_ops[i].name, env->op, env->op_len) == 0) {
            if (allowed(c, idx, req_id, read_ops[i].name, read_ops[i].need, NULL, NULL))
                read_ops[i].fn(c, idx, req_id, args);
            return;
        }
    }
    /* The op is the client's bytes: escaped, and cut with an ellipsis past 32 bytes. */
    budget_escape(op, sizeof(op), env->op, env->op_len);
    snprintf(msg, sizeof(msg), "no op \"%s\"", op);
    conn_answer_error(c, idx, req_id, BUDGET_EUNKNOWN_OP, msg);
}
