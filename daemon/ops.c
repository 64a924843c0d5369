/* The op table (ops.h): read ops answered on the loop thread or by worker jobs; writes go to
 * commit.c. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "bigmem.h"
#include "budget/errors.h"
#include "proto/text.h"
#include "log.h"
#include "checkpoint.h"
#include "event.h"
#include "ops.h"
#include "replay.h"
#include "snapshot.h"
#include "request.h"

/* ---- read jobs on worker threads --------------------------------------------------------- */

typedef enum { JOB_BALANCES, JOB_EVENTS, JOB_VERIFY } job_kind;

typedef struct {
    job_t base;
    job_kind kind;
    store *store;
    commit_t *commit;
    const snapshots *snapshots; /* NULL: none kept */
    history_cache *history;
    balances_query bq;
    events_query eq;
    uint64_t head; /* committed head when the job was queued */
} job;

/*
 * The ledger as of `upto` from a copy of the one kept for a read of an earlier point, when one
 * is kept no further back than the newest snapshot that could serve the read (history_cache_base):
 * an auditor stepping forward through the log pays for a copy and the events since the last
 * step, not for a snapshot restored again. A view by decision day takes one kept for the same
 * day, no further back than the newest snapshot that is such a view (snapshot_newest), so a
 * report asked again as events are entered pays for the events since, not for the whole log.
 * NULL when none is kept there, or the copy or its replay failed: the caller builds it the usual
 * way.
 */
static ledger *from_kept(job *j, uint64_t upto, replay_result *res)
{
    int32_t day = j->bq.decided_by;
    uint64_t at = 0, floor = snapshot_newest(j->snapshots, upto, day);
    uint8_t hash[BUDGET_HASH_BYTES];
    const ledger *base = history_cache_base(j->history, day, floor, upto, &at);
    if (base == NULL)
        return NULL;
    /* The links after it are hashed while it is copied, and beside the replay (snapshot_state). */
    replay_links links = {0};
    if (at < upto && replay_links_start(&links, j->store, at, upto) != 0)
        memset(&links, 0, sizeof(links));
    ledger *l = replay_stored_hash(j->store, at, hash) == 0 ? ledger_clone(base) : NULL;
    history_cache_release(j->history, base);
    int rc = 0;
    if (l == NULL)
        replay_links_cancel(&links);
    else if (links.job != NULL)
        rc = replay_log_beside(j->store, l, at, upto, day, &links, res);
    else
        rc = day != 0 ? replay_decided_from(j->store, l, at, hash, upto, day, res)
                      : replay_log_from(j->store, l, at, hash, upto, false, res);
    if (l != NULL && rc != 0) {
        ledger_free(l);
        l = NULL;
    }
    return l;
}

/*
 * The ledger as of event `upto`: from a kept one (from_kept), else from the newest snapshot that
 * can serve the read with the events after it applied, else the log replayed from its first
 * event (snapshot_state). A view by decision day starts only from a snapshot whose state is that
 * view (nothing in it dated after the day, no closed year, no correction); another leaves out or
 * changes events such a state holds. No store reader may be held here: the replay's walker
 * begins its own.
 */
static int balances_ledger(job *j, uint64_t upto, ledger **out, replay_result *res)
{
    ledger *l = from_kept(j, upto, res);
    if (l != NULL) {
        *out = l;
        return 0;
    }
    uint64_t from = 0;
    int rc = snapshot_state(j->snapshots, j->store, upto, j->bq.decided_by, out, &from, res);
    if (rc == 0 && from != 0)
        history_cache_note_snapshot(j->history);
    return rc;
}

typedef struct {
    job *j;
    uint64_t upto;
    replay_result *res;
} balances_build;

static int balances_build_run(void *ctx, ledger **out)
{
    balances_build *b = ctx;
    return balances_ledger(b->j, b->upto, out, b->res);
}

/* Balances as of an earlier event, or what was decided by a day: from the ledger at that point
 * kept since an earlier page or read, or built now (history.h). */
static void job_balances(job *j, resp_t *r)
{
    ledger_error err;
    replay_result res;
    const ledger *l = NULL;

    uint64_t upto = j->bq.has_as_of ? j->bq.as_of : j->head;
    int rc = 0;
    memset(&res, 0, sizeof(res));
    if (j->bq.as_of_day != 0) {
        rc = replay_seq_before(j->store, j->head, request_day_end_ms(j->bq.as_of_day), &upto);
        if (rc != 0)
            snprintf(res.why, sizeof(res.why), "the event store cannot be read now");
    }
    if (rc == 0) {
        balances_build b = {.j = j, .upto = upto, .res = &res};
        history_key key = {.upto = upto, .decided_by = j->bq.decided_by};
        l = history_cache_get(j->history, key, balances_build_run, &b, &rc);
    }
    if (rc != 0) {
        resp_error_into(r, j->base.req_id, rc, res.why);
    } else {
        resp_begin(r, j->base.req_id, true);
        if (request_pack_balances(&r->pk, l, &j->bq, upto, &err) != 0) {
            msgpack_sbuffer_destroy(&r->sb);
            resp_error_into(r, j->base.req_id, err.code, err.message);
        }
    }
    history_cache_release(j->history, l);
}

/* The stored bytes of the events of one `events` page, at most: room is left in the frame for
 * the envelope (a page of 1000 events of up to EVENT_BYTES_MAX would not fit). */
#define EVENTS_PAGE_BYTES_MAX (BUDGET_FRAME_BYTES_MAX - 64u * 1024u)

typedef struct {
    const events_query *q;
    uint64_t head, next, scanned;
    uint32_t found;
    msgpack_sbuffer events; /* the matching events' stored bytes, back to back */
    int rc;
    store_reader *rd;
    commit_t *commit;
    bool full; /* the page stopped at EVENTS_PAGE_BYTES_MAX */
} events_ctx;

/* True when the request `id` (an avrop, a reduction or a reversal: an event before this one,
 * so at or below the reader's head) was made on `allocation`. The committed ledger says which
 * event made it; the event itself, read from the log, says on what. */
static bool avrop_of(commit_t *commit, store_reader *rd, const char *id, const char *allocation)
{
    uint64_t seq;
    store_val v;
    ledger_event avrop;

    return commit_find_id(commit, id, &seq) && store_reader_get(rd, seq, &v) == 0 &&
           event_decode(v.data, v.size, &avrop) == 0 && strcmp(avrop.id, id) == 0 &&
           strcmp(avrop.allocation, allocation) == 0;
}

static int events_one(void *ctx, uint64_t seq, store_val v)
{
    events_ctx *e = ctx;
    ledger_event ev;

    if (seq > e->head || e->found >= e->q->limit || e->scanned >= BUDGET_EVENTS_SCAN_MAX)
        return 1;
    /* Events of up to EVENT_BYTES_MAX (an adoption): a page stops before the one that would
     * take it over its byte bound, and `next` stays on the event before. */
    if (e->found > 0 && e->events.size + v.size > EVENTS_PAGE_BYTES_MAX) {
        e->full = true;
        return 1;
    }
    e->scanned++;
    e->next = seq;
    if (event_decode(v.data, v.size, &ev) != 0) {
        e->rc = BUDGET_EINTERNAL;
        return 1;
    }
    event_match m = request_event_matches(e->q, &ev);
    if (m == EVENT_YES ||
        (m == EVENT_IF_AVROP_OF_ENTITY && avrop_of(e->commit, e->rd, ev.target, e->q->entity))) {
        msgpack_sbuffer_write(&e->events, (const char *)v.data, v.size);
        e->found++;
    }
    return 0;
}

static void job_events(job *j, store_reader *rd, resp_t *r)
{
    events_ctx e = {&j->eq, j->head, j->eq.after, 0, 0, {0}, 0, rd, j->commit, false};

    msgpack_sbuffer_init(&e.events);
    if (e.next > e.head)
        e.next = e.head;
    store_reader_scan(rd, j->eq.after, events_one, &e);
    if (e.rc != 0) {
        resp_error_into(r, j->base.req_id, BUDGET_EINTERNAL,
                        "an event cannot be decoded; run verify");
    } else {
        /* Every event was scanned up to `head` when fewer than `limit` matched. */
        if (e.found < j->eq.limit && e.scanned < BUDGET_EVENTS_SCAN_MAX && !e.full)
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

/* The whole chain re-walked, as `audit check` does it offline (checkpoint_walk_chain). */
static void job_verify(job *j, store_reader *rd, resp_t *r)
{
    checkpoint_chain chain;

    if (!checkpoint_walk_chain_on_two(j->store, rd, 0, &chain))
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

static void read_job_run(job_t *w, resp_t *r)
{
    job *j = (job *)w;
    store_reader *rd;

    if (j->kind == JOB_BALANCES) {
        job_balances(j, r);
        return;
    }
    if (store_reader_begin(j->store, &rd) != 0) {
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

/* A read job: its answer is made from a store reader begun on the worker thread. */
static void queue_job(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, job *j)
{
    j->base.run = read_job_run;
    j->store = o->store;
    j->commit = o->commit;
    j->snapshots = o->snapshots;
    j->history = o->history;
    j->head = commit_head(o->commit);
    job_queue(o->jobs, c, idx, req_id, &j->base);
}

/* ---- ops --------------------------------------------------------------------------------- */

typedef void (*op_fn)(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args);

static bool args_empty(conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args,
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
static void pack_hello_roles(const ops_t *o, conn_t *c, msgpack_packer *pk)
{
    const char *units[ACCESS_UNITS_MAX];
    size_t units_count, roles = 0;
    access_role role;
    bool all;
    int i = 0;

    while (access_next_role(o->hub->access, conn_grants(c), &i, &role, &all, units,
                            ACCESS_UNITS_MAX, &units_count))
        roles++;
    pack_cstr(pk, "roles");
    msgpack_pack_array(pk, roles);
    i = 0;
    while (access_next_role(o->hub->access, conn_grants(c), &i, &role, &all, units,
                            ACCESS_UNITS_MAX, &units_count)) {
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

static void op_hello(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    resp_t r;
    if (!args_empty(c, idx, req_id, args, "hello"))
        return;
    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, 6);
    pack_key_uint(&r.pk, "protocol", BUDGET_PROTOCOL_VERSION);
    pack_key_str(&r.pk, "server", "budgetd");
    pack_key_str(&r.pk, "version", BUDGET_VERSION);
    pack_key_uint(&r.pk, "head", commit_head(o->commit));
    pack_cstr(&r.pk, "actor");
    msgpack_pack_map(&r.pk, 2);
    pack_key_uint(&r.pk, "uid", conn_actor(c)->uid);
    pack_key_str(&r.pk, "name", conn_actor(c)->name);
    pack_hello_roles(o, c, &r.pk);
    conn_answer(c, idx, &r, req_id);
}

static void op_balances(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                        const msgpack_object *args)
{
    uint64_t head = commit_head(o->commit);
    balances_query q;
    ledger_error err;
    resp_t r;
    char msg[120];

    if (request_decode_balances(args, &q, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    if (q.has_as_of && q.as_of > head) {
        snprintf(msg, sizeof(msg), "as_of %llu is after the last event, %llu",
                 (unsigned long long)q.as_of, (unsigned long long)head);
        conn_answer_error(c, idx, req_id, BUDGET_ENOT_FOUND, msg);
        return;
    }
    if ((q.has_as_of && q.as_of < head) || q.as_of_day != 0 || q.decided_by != 0) {
        job *j = calloc(1, sizeof(*j));
        if (!j) {
            conn_answer_error(c, idx, req_id, BUDGET_EUNAVAILABLE, "out of memory");
            return;
        }
        j->kind = JOB_BALANCES;
        j->bq = q;
        queue_job(o, c, idx, req_id, j);
        return;
    }
    resp_begin(&r, req_id, true);
    if (request_pack_balances(&r.pk, commit_ledger(o->commit), &q, head, &err) != 0) {
        msgpack_sbuffer_destroy(&r.sb);
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    conn_answer(c, idx, &r, req_id);
}

/* The register of units, as the committed ledger stands: answered at once (its pages are
 * bounded as balances' are). */
static void op_units(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    uint64_t offset;
    ledger_error err;
    resp_t r;

    if (request_decode_units(args, &offset, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    resp_begin(&r, req_id, true);
    if (request_pack_units(&r.pk, commit_ledger(o->commit), offset, commit_head(o->commit), &err) !=
        0) {
        msgpack_sbuffer_destroy(&r.sb);
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    conn_answer(c, idx, &r, req_id);
}

/* A unit's outcome in a year, as the committed ledger stands: answered at once (a page of
 * figures is bounded as balances' are). */
static void op_outcome(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                       const msgpack_object *args)
{
    outcome_query q;
    ledger_error err;
    resp_t r;

    if (request_decode_outcome(args, &q, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    resp_begin(&r, req_id, true);
    if (request_pack_outcome(&r.pk, commit_ledger(o->commit), &q, commit_head(o->commit), &err) !=
        0) {
        msgpack_sbuffer_destroy(&r.sb);
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    conn_answer(c, idx, &r, req_id);
}

static void op_events(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args)
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
    queue_job(o, c, idx, req_id, j);
}

static void op_verify(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args)
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
    queue_job(o, c, idx, req_id, j);
}

static void op_stats(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    const commit_t *m = o->commit;
    const conn_hub_t *h = o->hub;
    ledger_counts counts;
    store_stats st;
    history_stats hs;
    bigmem_stats ms;
    resp_t r;

    if (!args_empty(c, idx, req_id, args, "stats"))
        return;
    ledger_get_counts(commit_ledger(m), &counts);
    store_get_stats(o->store, &st);
    history_cache_stats(o->history, &hs);
    bigmem_get_stats(&ms);
    stat_pair pairs[] = {
        {"head", commit_head(m)},
        {"events", ledger_events(commit_ledger(m))},
        {"frames", counts.frames},
        {"allocations", counts.allocations},
        {"avrop", counts.avrop},
        {"decisions", counts.decisions},
        {"units", counts.units},
        {"connections", h->count},
        {"connections_total", h->connections_total},
        {"connections_refused", h->connections_refused},
        {"connections_timed_out", h->connections_timed_out},
        {"requests", h->requests},
        {"errors", h->errors},
        {"answers", h->answers},
        {"answer_writes", h->answer_writes},
        {"reads_deferred", h->reads_deferred},
        {"read_rests", h->read_rests},
        {"batches", m->batches_committed},
        {"batch_events_max", m->batch_events_max},
        {"commits_failed", m->commits_failed},
        {"map_bytes", st.map_bytes},
        {"map_used_bytes", st.map_used_bytes},
        {"map_growths", st.map_growths},
        {"wal_checkpoints", st.wal_checkpoints},
        {"wal_bytes_live", st.wal_bytes_live},
        {"wal_waits", st.wal_waits},
        {"wal_events_recovered", st.wal_events_replayed},
        {"as_of_builds", hs.builds},
        {"as_of_hits", hs.hits},
        {"as_of_kept", hs.kept},
        {"as_of_from_kept", hs.based},
        {"as_of_from_snapshot", hs.from_snapshot},
        {"as_of_queued", hs.queued},
        {"mem_blocks_reused", ms.reused},
        {"mem_spare_bytes", ms.spare_bytes},
        {"uptime_ms", uv_hrtime() / 1000000u - o->started_ms},
    };
    stat_pair subs[SUB_STATS_COUNT];
    sub_stats(o->subs, subs);

    /* The map's size is counted from the lists, so a counter is added in one place. */
    size_t n = sizeof(pairs) / sizeof(pairs[0]);
    resp_begin(&r, req_id, true);
    msgpack_pack_map(&r.pk, (uint32_t)(n + SUB_STATS_COUNT));
    for (size_t i = 0; i < n; i++)
        pack_key_uint(&r.pk, pairs[i].key, pairs[i].value);
    for (size_t i = 0; i < SUB_STATS_COUNT; i++)
        pack_key_uint(&r.pk, subs[i].key, subs[i].value);
    conn_answer(c, idx, &r, req_id);
}

/*
 * The access check every op passes before it runs: may this connection's identity do `op`,
 * which needs `need`, for `unit` (NULL: for any unit; `what` says why the unit is concerned)?
 * When not, the request is answered forbidden and the refusal logged.
 */
static bool allowed(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const char *op,
                    access_role need, const char *unit, const char *what)
{
    char why[600], who[BUDGET_NAME_BYTES_MAX + 32];

    if (access_allows(o->hub->access, conn_grants(c), need, unit))
        return true; /* the words below are only a refusal's */
    const ledger_actor *actor = conn_actor(c);
    if (actor->name[0])
        snprintf(who, sizeof(who), "uid %u (%s)", actor->uid, actor->name);
    else
        snprintf(who, sizeof(who), "uid %u", actor->uid);
    int rc =
        access_decide(o->hub->access, conn_grants(c), need, unit, what, op, who, why, sizeof(why));
    if (rc == 0)
        return true;
    /* The unit of a frame.grant is the client's, not yet checked: the reason, which names it,
     * is escaped before it reaches the log or the answer. */
    char safe[BUDGET_ESCAPED_BYTES(sizeof(why))];
    budget_escape(safe, sizeof(safe), why, strlen(why));
    if (rc == BUDGET_EINTERNAL)
        log_error("%s", safe);
    else if (refusal_to_log(o->refusals))
        log_info("refused: %s", safe);
    conn_answer_error(c, idx, req_id, rc, safe);
    return false;
}

static void op_write(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const request_write_op *w,
                     const msgpack_object *args)
{
    commit_entry_t e;
    ledger_error err;
    access_scope scope;

    commit_entry_clear(&e);
    if (request_decode_write(w, args, &e.cmd, &e.has_expect_head, &e.expect_head, &err) != 0) {
        conn_answer_error(c, idx, req_id, err.code, err.message);
        return;
    }
    /* The role was checked by dispatch; a role limited to units is checked here, where the
     * units the write is for can be read from the state the write will be checked against;
     * the role must hold for every one of them. */
    size_t i;
    if (access_write_refused(o->hub->access, conn_grants(c), w->need, commit_speculative(o->commit),
                             &e.cmd, &scope, &i) &&
        !allowed(o, c, idx, req_id, w->op, w->need, scope.units[i].unit, scope.units[i].what))
        return;
    e.c = c;
    e.slot = idx;
    e.req_id = req_id;
    conn_write_begin(c);
    commit_admit(o->commit, &e);
}

static void op_batch(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id, const msgpack_object *args)
{
    batch_op(o->commit, o->hub->access, o->refusals, c, idx, req_id, args);
}

static void op_subscribe(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                         const msgpack_object *args)
{
    sub_subscribe(o->subs, c, idx, req_id, args);
}

static void op_checkpoint(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                          const msgpack_object *args)
{
    audit_checkpoint(o->audit, c, idx, req_id, args);
}

static void op_backup(ops_t *o, conn_t *c, uint32_t idx, uint64_t req_id,
                      const msgpack_object *args)
{
    audit_backup(o->audit, c, idx, req_id, args);
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
    {"units", ACCESS_READER, op_units},
    {"outcome", ACCESS_READER, op_outcome},
    {"events", ACCESS_READER, op_events},
    {"verify", ACCESS_AUDITOR, op_verify},
    {"stats", ACCESS_READER, op_stats},
    /* batch.c: every write in it is checked for its own role and units */
    {"batch", ACCESS_READER, op_batch},
    /* sub.c and audit_ops.c */
    {"subscribe", ACCESS_READER, op_subscribe},
    {"checkpoint", ACCESS_AUDITOR, op_checkpoint},
    {"backup", ACCESS_AUDITOR, op_backup},
};

static void dispatch(ops_t *o, conn_t *c, uint32_t idx, const budget_envelope *env,
                     const msgpack_object *args)
{
    uint64_t req_id = env->id;
    char msg[160], op[BUDGET_ESCAPED_BYTES(BUDGET_OP_BYTES_MAX)];

    const request_write_op *w = request_find_write(env->op, env->op_len);
    if (w) {
        if (allowed(o, c, idx, req_id, w->op, w->need, NULL, NULL))
            op_write(o, c, idx, req_id, w, args);
        return;
    }
    for (size_t i = 0; i < sizeof(read_ops) / sizeof(read_ops[0]); i++) {
        if (strlen(read_ops[i].name) == env->op_len &&
            memcmp(read_ops[i].name, env->op, env->op_len) == 0) {
            if (allowed(o, c, idx, req_id, read_ops[i].name, read_ops[i].need, NULL, NULL))
                read_ops[i].fn(o, c, idx, req_id, args);
            return;
        }
    }
    /* The op is the client's bytes: escaped, and cut with an ellipsis past 32 bytes. */
    budget_escape(op, sizeof(op), env->op, env->op_len);
    snprintf(msg, sizeof(msg), "no op \"%s\"", op);
    conn_answer_error(c, idx, req_id, BUDGET_EUNKNOWN_OP, msg);
}

void ops_frame(ops_t *o, conn_t *c, uint32_t idx, const budget_envelope *env, int rc,
               const char *why)
{
    msgpack_unpacked u;
    size_t off = 0;

    assert(o->hub && o->commit && o->jobs && o->subs && o->audit && o->refusals);
    assert(!conn_ending(c)); /* conn_process hands no frame to a connection that ends */
    if (conn_sub(c)) {
        /* Pushes and answers cannot share a stream unambiguously: the last frame, then close. */
        sub_detach(c);
        conn_close_when_flushed(c);
        conn_answer_error(c, idx, env->id, BUDGET_EBAD_REQUEST,
                          "this connection is subscribed; send requests on another connection");
        return;
    }
    if (rc != 0) {
        /* An answer with id 0 answers no request: it is the last frame (docs/protocol.md). */
        if (env->id == 0)
            conn_close_when_flushed(c);
        conn_answer_error(c, idx, env->id, rc, why);
        return;
    }
    if (env->args == NULL) {
        dispatch(o, c, idx, env, NULL);
        return;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)env->args, env->args_size, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        conn_answer_error(c, idx, env->id, BUDGET_EBAD_REQUEST, "args are not one msgpack map");
        return;
    }
    dispatch(o, c, idx, env, &u.data);
    msgpack_unpacked_destroy(&u);
}
