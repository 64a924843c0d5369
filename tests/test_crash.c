/*
 * Crash loop: clients with ids of their own write concurrently, each recording what it was
 * told; budgetd is killed with SIGKILL at a random moment, restarted, and then:
 *   - every acknowledged write is in the log, at the seq it was acknowledged with;
 *   - the log runs 1..head without a gap, no id is in it twice, and `verify` holds;
 *   - every rule of the budget holds on the replayed state (read through `balances`);
 *   - every write left unanswered by the crash is retried with the same id and content:
 *     it answers the seq it already has, or is made now, once (a second retry answers the
 *     same seq), and never makes a second event.
 * Now and then the daemon is also killed while it replays at start-up.
 *
 * CI runs RELIABILITY_CRASH_CYCLES cycles (default 10); scripts/reliability.sh crash N runs N.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rel_util.h"

#define CLIENTS 8
#define CYCLES_DEFAULT 10
/* The moment of the kill, after the load starts. */
#define KILL_AFTER_MS_MIN 5
#define KILL_AFTER_MS_MAX 300
/* Requests of one client in one cycle, at most (a backstop; the kill comes first). */
#define CLIENT_REQUESTS_MAX 4000
#define ARGS_BYTES_MAX 256

#define FRAME_ORE 1000000000LL
#define ALLOCATION_ORE 500000000LL
#define SHARED_ORE 1000000LL
#define SHARED_AVROP_ORE 50000LL

typedef enum { REQ_ACKED, REQ_UNKNOWN, REQ_REFUSED } req_state;

/* One write a client sent, and what it was told. */
typedef struct {
    char id[80];
    const char *op;
    uint8_t args[ARGS_BYTES_MAX];
    size_t args_size;
    req_state state;
    bool shared; /* against the shared allocation: insufficient_funds is a fair answer */
    bool other;  /* sent as the second identity (a decision: four-eyes) */
    uint64_t seq;
    char code[32];
} request;

typedef struct {
    const char *socket;
    int cycle, index;
    atomic_bool *stop;
    request *reqs;
    size_t count;
    budget_client *other; /* the connection of the second identity, for decisions */
    char failure[512];
} client;

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(crash, .fini = teardown, .timeout = 3600);

/* ---- a client ------------------------------------------------------------------------------ */

/* Sends one write and records it. Returns false when the client must stop. */
static bool client_write(client *cl, budget_client *c, const char *op, const char *id,
                         const e2e_buf *args, bool shared, request **out)
{
    if (cl->count == CLIENT_REQUESTS_MAX || args->sb.size > ARGS_BYTES_MAX)
        return false;
    request *q = &cl->reqs[cl->count++];
    rel_result res;
    memset(q, 0, sizeof(*q));
    q->other = c == cl->other;
    snprintf(q->id, sizeof(q->id), "%s", id);
    q->op = op;
    memcpy(q->args, args->sb.data, args->sb.size);
    q->args_size = args->sb.size;
    q->shared = shared;
    q->state = REQ_UNKNOWN;
    *out = q;
    rel_write(c, op, q->args, q->args_size, &res);
    if (res.transport != 0)
        return false; /* the daemon is gone: the answer is unknown */
    if (res.ok) {
        q->state = REQ_ACKED;
        q->seq = res.seq;
        return true;
    }
    q->state = REQ_REFUSED;
    snprintf(q->code, sizeof(q->code), "%s", res.code);
    if (shared && strcmp(res.code, "insufficient_funds") == 0)
        return true;
    snprintf(cl->failure, sizeof(cl->failure), "%s %s refused: %s: %s", op, id, res.code,
             res.message);
    return false;
}

/*
 * The client's script: a frame of its own unit, an allocation out of it, then avrop that are
 * approved, rejected or withdrawn, adjustments, proposals taken back, and avrop against the
 * allocation every client shares (where the last krona is fought over).
 */
static void *client_main(void *arg)
{
    client *cl = arg;
    budget_client *c = NULL;
    e2e_buf b;
    request *q;
    char p[24], unit[8], frame[32], alloc[32], shared[32], id[48], id2[64];

    if (budget_client_connect(cl->socket, &c) != 0)
        return NULL; /* killed before the load began */
    if (e2e_client_connect_as(cl->socket, &e2e_other, &cl->other) != 0) {
        budget_client_close(c);
        return NULL;
    }
    budget_client *d = cl->other;
    e2e_buf_init(&b);
    snprintf(p, sizeof(p), "k%dt%d", cl->cycle, cl->index);
    snprintf(unit, sizeof(unit), "U%d", cl->index);
    snprintf(frame, sizeof(frame), "%s-f", p);
    snprintf(alloc, sizeof(alloc), "%s-a", p);
    snprintf(shared, sizeof(shared), "k%d-shared-a", cl->cycle);

    rel_pack_grant(&b, frame, unit, FRAME_ORE);
    if (!client_write(cl, c, "frame.grant", frame, &b, false, &q))
        goto done;
    rel_pack_propose(&b, alloc, frame, unit, ALLOCATION_ORE);
    if (!client_write(cl, c, "allocation.propose", alloc, &b, false, &q))
        goto done;
    snprintf(id, sizeof(id), "%s-ok", alloc);
    rel_pack_decide(&b, id, alloc);
    if (!client_write(cl, d, "approve", id, &b, false, &q))
        goto done;

    for (int j = 0; !atomic_load(cl->stop); j++) {
        static const char *const decide[] = {"approve", "reject", "withdraw"};
        int kind = j % 6;
        bool ok = true;
        switch (kind) {
        case 0:
        case 1:
        case 2:
            snprintf(id, sizeof(id), "%s-v%d", p, j);
            rel_pack_avrop(&b, id, alloc, 1000 + j);
            ok = client_write(cl, c, "avrop.request", id, &b, false, &q);
            snprintf(id2, sizeof(id2), "%s-d", id);
            rel_pack_for(&b, decide[kind], id2, id);
            ok = ok && client_write(cl, kind == 2 ? c : d, decide[kind], id2, &b, false, &q);
            break;
        case 3:
            snprintf(id, sizeof(id), "%s-adj%d", p, j);
            rel_pack_adjust(&b, id, frame, j % 4 == 3 ? -5000 : 5000);
            ok = client_write(cl, c, "frame.adjust", id, &b, false, &q);
            break;
        case 4:
            snprintf(id, sizeof(id), "%s-b%d", p, j);
            rel_pack_propose(&b, id, frame, unit, 7000);
            ok = client_write(cl, c, "allocation.propose", id, &b, false, &q);
            snprintf(id2, sizeof(id2), "%s-d", id);
            rel_pack_for(&b, j % 12 == 4 ? "reject" : "withdraw", id2, id);
            if (j % 12 == 4)
                ok = ok && client_write(cl, d, "reject", id2, &b, false, &q);
            else
                ok = ok && client_write(cl, c, "withdraw", id2, &b, false, &q);
            break;
        default:
            snprintf(id, sizeof(id), "%s-s%d", p, j);
            rel_pack_avrop(&b, id, shared, SHARED_AVROP_ORE);
            ok = client_write(cl, c, "avrop.request", id, &b, true, &q);
            if (ok && q->state == REQ_ACKED && j % 12 == 5) {
                snprintf(id2, sizeof(id2), "%s-d", id);
                rel_pack_decide(&b, id2, id);
                ok = client_write(cl, d, "approve", id2, &b, false, &q);
            }
            break;
        }
        if (!ok)
            break;
    }
done:
    e2e_buf_destroy(&b);
    budget_client_close(d);
    budget_client_close(c);
    return NULL;
}

/* ---- the loop ------------------------------------------------------------------------------ */

typedef struct {
    request *all;
    size_t count, cap;
    uint64_t acked_checked, unknown, unknown_in_log, created_on_retry, refused_on_retry;
} history;

static void history_add(history *h, const request *q)
{
    if (h->count == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 4096;
        h->all = realloc(h->all, h->cap * sizeof(*h->all));
        cr_assert(h->all != NULL);
    }
    h->all[h->count++] = *q;
}

/* The shared frame and allocation of a cycle, made before the load (and the kill) begin. */
static void make_shared(budget_client *c, budget_client *d, int cycle, history *h)
{
    e2e_buf b;
    char frame[48], alloc[48], decision[48];
    struct {
        const char *op, *id;
    } steps[3];
    snprintf(frame, sizeof(frame), "k%d-shared-f", cycle);
    snprintf(alloc, sizeof(alloc), "k%d-shared-a", cycle);
    snprintf(decision, sizeof(decision), "k%d-shared-a-ok", cycle);
    steps[0].op = "frame.grant", steps[0].id = frame;
    steps[1].op = "allocation.propose", steps[1].id = alloc;
    steps[2].op = "approve", steps[2].id = decision;

    e2e_buf_init(&b);
    for (int i = 0; i < 3; i++) {
        request q;
        rel_result res;
        if (i == 0)
            rel_pack_grant(&b, frame, "KS", SHARED_ORE);
        else if (i == 1)
            rel_pack_propose(&b, alloc, frame, "SON", SHARED_ORE);
        else
            rel_pack_decide(&b, decision, alloc);
        rel_write(i == 2 ? d : c, steps[i].op, b.sb.data, b.sb.size, &res);
        rel_assert(&rd, res.transport == 0 && res.ok, "%s %s: %s", steps[i].op, steps[i].id,
                   res.code);
        memset(&q, 0, sizeof(q));
        snprintf(q.id, sizeof(q.id), "%s", steps[i].id);
        q.op = steps[i].op;
        q.state = REQ_ACKED;
        q.seq = res.seq;
        q.other = i == 2;
        history_add(h, &q);
    }
    e2e_buf_destroy(&b);
}

static int compare_event_ids(const void *a, const void *b)
{
    return strcmp(((const rel_event *)a)->id, ((const rel_event *)b)->id);
}

/* The seq of `id` in the log (sorted by id), or 0. */
static uint64_t find_seq(const rel_event *by_id, size_t n, const char *id)
{
    rel_event key;
    size_t len = strnlen(id, sizeof(key.id) - 1);
    memcpy(key.id, id, len); /* ids here are far shorter than an event's longest */
    key.id[len] = '\0';
    const rel_event *e = bsearch(&key, by_id, n, sizeof(*by_id), compare_event_ids);
    return e ? e->seq : 0;
}

/* Retries a write whose answer the crash swallowed, twice, and records what it became. */
static void retry_unknown(budget_client *root, budget_client *other, request *q, uint64_t in_log,
                          uint64_t head, history *h)
{
    budget_client *c = q->other ? other : root;
    rel_result first, second;
    rel_write(c, q->op, q->args, q->args_size, &first);
    rel_assert(&rd, first.transport == 0, "retry of %s: no response", q->id);
    if (!first.ok) {
        rel_assert(&rd, q->shared && in_log == 0 && strcmp(first.code, "insufficient_funds") == 0,
                   "retry of %s %s refused: %s: %s", q->op, q->id, first.code, first.message);
        q->state = REQ_REFUSED;
        h->refused_on_retry++;
        return;
    }
    if (in_log != 0) {
        rel_assert(&rd, first.seq == in_log,
                   "retry of %s answered seq %" PRIu64 " but the log has it at %" PRIu64, q->id,
                   first.seq, in_log);
    } else {
        rel_assert(&rd, first.seq > head, "retry of %s (not in the log) answered old seq %" PRIu64,
                   q->id, first.seq);
        h->created_on_retry++;
    }
    rel_write(c, q->op, q->args, q->args_size, &second);
    rel_assert(&rd, second.transport == 0 && second.ok && second.seq == first.seq,
               "a second retry of %s answered %s seq %" PRIu64 ", not seq %" PRIu64, q->id,
               second.code, second.seq, first.seq);
    q->state = REQ_ACKED;
    q->seq = first.seq;
}

static const char *const units[] = {"U0", "U1", "U2", "U3",  "U4", "U5",
                                    "U6", "U7", "KS", "SON", NULL};

/* After a restart: everything acknowledged is there, the chain and the rules hold, and the
 * writes the crash left unanswered are retried. */
static void check_after_restart(history *h, size_t cycle_first, int cycle)
{
    budget_client *c = NULL;
    rel_event *log;
    rel_rules rules;

    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect after restart");
    budget_client *other = e2e_client_as(&rd.d, &e2e_other);
    uint64_t head = rel_verify(&rd, c);
    size_t n = rel_read_log(&rd, c, &log);
    rel_assert(&rd, n == head, "log of %zu events, head %" PRIu64, n, head);

    uint64_t checked = 0;
    for (size_t i = 0; i < h->count; i++) {
        const request *q = &h->all[i];
        if (q->state != REQ_ACKED)
            continue;
        rel_assert(&rd, q->seq >= 1 && q->seq <= n,
                   "acknowledged %s (seq %" PRIu64 ") is lost: the log ends at %zu", q->id, q->seq,
                   n);
        rel_assert(&rd, strcmp(log[q->seq - 1].id, q->id) == 0,
                   "acknowledged %s at seq %" PRIu64 " is lost: that seq holds %s", q->id, q->seq,
                   log[q->seq - 1].id);
        checked++;
    }
    h->acked_checked += checked;
    rel_check_rules(&rd, c, units, &rules);

    qsort(log, n, sizeof(*log), compare_event_ids);
    uint64_t unknown = 0, in_log = 0;
    for (size_t i = cycle_first; i < h->count; i++) {
        request *q = &h->all[i];
        if (q->state != REQ_UNKNOWN)
            continue;
        uint64_t seq = find_seq(log, n, q->id);
        unknown++;
        in_log += seq != 0;
        retry_unknown(c, other, q, seq, head, h);
    }
    free(log);
    h->unknown += unknown;
    h->unknown_in_log += in_log;

    /* The retries made no second event and broke no rule. */
    n = rel_read_log(&rd, c, &log);
    free(log);
    rel_check_rules(&rd, c, units, &rules);
    fprintf(stderr,
            "crash cycle %d: head %zu, acknowledged %" PRIu64 " all present, unanswered %" PRIu64
            " (%" PRIu64 " had been written), frames %" PRIu64 ", allocations %" PRIu64 "\n",
            cycle, n, checked, unknown, in_log, rules.frames, rules.allocations);
    budget_client_close(other);
    budget_client_close(c);
}

/* Kills the daemon while it replays at start-up, then starts it for good. */
static void crash_during_replay(uint64_t *rng)
{
    rel_assert(&rd, rel_spawn(&rd) == 0, "spawn");
    rel_sleep_ms((int)(rel_rand(rng) % 8));
    e2e_daemon_kill(&rd.d);
}

static void crash_loop(const char *what, long cycles)
{
    static client clients[CLIENTS];
    pthread_t threads[CLIENTS];
    atomic_bool stop;
    history h = {0};
    uint64_t rng = rel_seed(what);
    int64_t t0 = e2e_now_us();

    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    for (int k = 0; k < cycles; k++) {
        budget_client *c = NULL;
        size_t cycle_first = h.count;

        budget_client *d = e2e_client_as(&rd.d, &e2e_other);
        rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
        make_shared(c, d, k, &h);
        budget_client_close(d);
        budget_client_close(c);

        atomic_store(&stop, false);
        for (int t = 0; t < CLIENTS; t++) {
            clients[t] = (client){.socket = rd.d.socket, .cycle = k, .index = t, .stop = &stop};
            clients[t].reqs = malloc(CLIENT_REQUESTS_MAX * sizeof(request));
            cr_assert(clients[t].reqs != NULL);
            cr_assert_eq(pthread_create(&threads[t], NULL, client_main, &clients[t]), 0);
        }
        int after =
            KILL_AFTER_MS_MIN + (int)(rel_rand(&rng) % (KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN + 1));
        rel_sleep_ms(after);
        e2e_daemon_kill(&rd.d);
        atomic_store(&stop, true);
        bool joined = rel_join(threads, CLIENTS, 20000, &rd);
        cr_assert(joined, "a client hung after the daemon was killed");

        for (int t = 0; t < CLIENTS; t++) {
            rel_assert(&rd, clients[t].failure[0] == '\0', "client %d: %s", t, clients[t].failure);
            for (size_t i = 0; i < clients[t].count; i++)
                history_add(&h, &clients[t].reqs[i]);
            free(clients[t].reqs);
        }
        if (rel_rand(&rng) % 8 == 0)
            crash_during_replay(&rng);
        rel_assert(&rd, rel_restart(&rd) == 0, "budgetd did not restart after the kill");
        check_after_restart(&h, cycle_first, k);
    }
    rel_stop_clean(&rd);

    uint64_t acked = 0;
    for (size_t i = 0; i < h.count; i++)
        acked += h.all[i].state == REQ_ACKED;
    fprintf(stderr,
            "%s: %ld cycles in %.1f s; %" PRIu64 " acknowledged writes (checked %" PRIu64
            " times in all), lost 0; %" PRIu64 " unanswered at a kill, %" PRIu64
            " of them already written, %" PRIu64 " made on retry, %" PRIu64
            " refused on retry (shared allocation full)\n",
            what, cycles, (double)(e2e_now_us() - t0) / 1e6, acked, h.acked_checked, h.unknown,
            h.unknown_in_log, h.created_on_retry, h.refused_on_retry);
    free(h.all);
}

Test(crash, sigkill_under_load_loses_no_acknowledged_write)
{
    crash_loop("crash", e2e_env_long("RELIABILITY_CRASH_CYCLES", CYCLES_DEFAULT));
}

/*
 * The same with a write-ahead file of 8 KiB (budgetd-faulty's BUDGETD_WAL_BYTES): LMDB is
 * synced behind it and a checkpoint written every few writes, and the file is written round
 * many times in a cycle, so kills land during checkpoints, waits for room and laps too.
 */
Test(crash, sigkill_with_a_small_write_ahead_file_loses_no_acknowledged_write)
{
    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_WAL_BYTES=8192");
    long cycles = e2e_env_long("RELIABILITY_CRASH_CYCLES", CYCLES_DEFAULT) / 2;
    crash_loop("crash-small-wal", cycles < 2 ? 2 : cycles);
}
