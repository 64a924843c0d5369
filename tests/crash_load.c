/* The crash loop's clients, their history and the checks after a restart (tests/crash_load.h). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash_load.h"

#define CLIENTS 8
/* The moment of the kill, after the load starts. */
#define KILL_AFTER_MS_MIN 5
#define KILL_AFTER_MS_MAX 300
/* Requests of one client in one cycle, at most (a backstop; the kill comes first). */
#define CLIENT_REQUESTS_MAX 4000

#define FRAME_ORE 1000000000LL
#define ALLOCATION_ORE 500000000LL
#define SHARED_ORE 1000000LL
#define SHARED_AVROP_ORE 50000LL

typedef struct {
    const char *socket;
    char tag;
    int cycle, index;
    atomic_bool *stop;
    crash_request *reqs;
    size_t count;
    budget_client *other; /* the connection of the second identity, for decisions */
    char failure[512];
} client;

/* ---- a client ------------------------------------------------------------------------------ */

/* Sends one write and records it. Returns false when the client must stop. */
static bool client_write(client *cl, budget_client *c, const char *op, const char *id,
                         const e2e_buf *args, bool shared, crash_request **out)
{
    if (cl->count == CLIENT_REQUESTS_MAX || args->sb.size > CRASH_ARGS_BYTES_MAX)
        return false;
    crash_request *q = &cl->reqs[cl->count++];
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
    crash_request *q;
    char p[24], unit[8], frame[32], alloc[32], shared[32], id[48], id2[64];

    if (budget_client_connect(cl->socket, &c) != 0)
        return NULL; /* killed before the load began */
    if (e2e_client_connect_as(cl->socket, &e2e_other, &cl->other) != 0) {
        budget_client_close(c);
        return NULL;
    }
    budget_client *d = cl->other;
    e2e_buf_init(&b);
    snprintf(p, sizeof(p), "%c%dt%d", cl->tag, cl->cycle, cl->index);
    snprintf(unit, sizeof(unit), "U%d", cl->index);
    snprintf(frame, sizeof(frame), "%s-f", p);
    snprintf(alloc, sizeof(alloc), "%s-a", p);
    snprintf(shared, sizeof(shared), "%c%d-shared-a", cl->tag, cl->cycle);

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

/* ---- a cycle's load ------------------------------------------------------------------------ */

static void history_add(crash_history *h, const crash_request *q)
{
    if (h->count == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 4096;
        h->all = realloc(h->all, h->cap * sizeof(*h->all));
        cr_assert(h->all != NULL);
    }
    h->all[h->count++] = *q;
}

/* The shared frame and allocation of a cycle, made before the load (and the kill) begin. */
static void make_shared(rel_daemon *rd, budget_client *c, budget_client *d, char tag, int cycle,
                        crash_history *h)
{
    e2e_buf b;
    char ids[3][48];
    static const char *const ops[] = {"frame.grant", "allocation.propose", "approve"};
    snprintf(ids[0], sizeof(ids[0]), "%c%d-shared-f", tag, cycle);
    snprintf(ids[1], sizeof(ids[1]), "%c%d-shared-a", tag, cycle);
    snprintf(ids[2], sizeof(ids[2]), "%c%d-shared-a-ok", tag, cycle);

    e2e_buf_init(&b);
    for (int i = 0; i < 3; i++) {
        crash_request q;
        rel_result res;
        if (i == 0)
            rel_pack_grant(&b, ids[0], "KS", SHARED_ORE);
        else if (i == 1)
            rel_pack_propose(&b, ids[1], ids[0], "SON", SHARED_ORE);
        else
            rel_pack_decide(&b, ids[2], ids[1]);
        rel_write(i == 2 ? d : c, ops[i], b.sb.data, b.sb.size, &res);
        rel_assert(rd, res.transport == 0 && res.ok, "%s %s: %s", ops[i], ids[i], res.code);
        memset(&q, 0, sizeof(q));
        snprintf(q.id, sizeof(q.id), "%.47s", ids[i]);
        q.op = ops[i];
        q.state = REQ_ACKED;
        q.seq = res.seq;
        q.other = i == 2;
        history_add(h, &q);
    }
    e2e_buf_destroy(&b);
}

int crash_load_cycle(rel_daemon *rd, char tag, int cycle, uint64_t *rng, crash_history *h)
{
    static client clients[CLIENTS];
    pthread_t threads[CLIENTS];
    atomic_bool stop;
    budget_client *c = NULL;

    budget_client *d = e2e_client_as(&rd->d, &e2e_other);
    rel_assert(rd, budget_client_connect(rd->d.socket, &c) == 0, "connect");
    make_shared(rd, c, d, tag, cycle, h);
    budget_client_close(d);
    budget_client_close(c);

    atomic_store(&stop, false);
    for (int t = 0; t < CLIENTS; t++) {
        clients[t] =
            (client){.socket = rd->d.socket, .tag = tag, .cycle = cycle, .index = t, .stop = &stop};
        clients[t].reqs = malloc(CLIENT_REQUESTS_MAX * sizeof(crash_request));
        cr_assert(clients[t].reqs != NULL);
        cr_assert_eq(pthread_create(&threads[t], NULL, client_main, &clients[t]), 0);
    }
    int after =
        KILL_AFTER_MS_MIN + (int)(rel_rand(rng) % (KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN + 1));
    rel_sleep_ms(after);
    e2e_daemon_kill(&rd->d);
    atomic_store(&stop, true);
    bool joined = rel_join(threads, CLIENTS, 20000, rd);
    cr_assert(joined, "a client hung after the daemon was killed");

    for (int t = 0; t < CLIENTS; t++) {
        rel_assert(rd, clients[t].failure[0] == '\0', "client %d: %s", t, clients[t].failure);
        for (size_t i = 0; i < clients[t].count; i++)
            history_add(h, &clients[t].reqs[i]);
        free(clients[t].reqs);
    }
    return after;
}

/* ---- the checks after a restart ------------------------------------------------------------ */

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

/* Retries a write whose answer the kill swallowed, twice, and records what it became. */
static void retry_unknown(rel_daemon *rd, budget_client *root, budget_client *other,
                          crash_request *q, uint64_t in_log, uint64_t head, crash_history *h)
{
    budget_client *c = q->other ? other : root;
    rel_result first, second;
    rel_write(c, q->op, q->args, q->args_size, &first);
    rel_assert(rd, first.transport == 0, "retry of %s: no response", q->id);
    if (!first.ok) {
        rel_assert(rd, q->shared && in_log == 0 && strcmp(first.code, "insufficient_funds") == 0,
                   "retry of %s %s refused: %s: %s", q->op, q->id, first.code, first.message);
        q->state = REQ_REFUSED;
        h->refused_on_retry++;
        return;
    }
    if (in_log != 0) {
        rel_assert(rd, first.seq == in_log,
                   "retry of %s answered seq %" PRIu64 " but the log has it at %" PRIu64, q->id,
                   first.seq, in_log);
    } else {
        rel_assert(rd, first.seq > head, "retry of %s (not in the log) answered old seq %" PRIu64,
                   q->id, first.seq);
        h->created_on_retry++;
    }
    rel_write(c, q->op, q->args, q->args_size, &second);
    rel_assert(rd, second.transport == 0 && second.ok && second.seq == first.seq,
               "a second retry of %s answered %s seq %" PRIu64 ", not seq %" PRIu64, q->id,
               second.code, second.seq, first.seq);
    q->state = REQ_ACKED;
    q->seq = first.seq;
}

static const char *const units[] = {"U0", "U1", "U2", "U3",  "U4", "U5",
                                    "U6", "U7", "KS", "SON", NULL};

/* Every acknowledged write of `h` is in `log` (n events) at its seq; returns how many. */
static uint64_t check_acknowledged(rel_daemon *rd, const crash_history *h, const rel_event *log,
                                   size_t n, const char *lost_label)
{
    uint64_t checked = 0, lost = 0;
    const crash_request *first_lost = NULL;
    for (size_t i = 0; i < h->count; i++) {
        const crash_request *q = &h->all[i];
        if (q->state != REQ_ACKED)
            continue;
        checked++;
        if (q->seq >= 1 && q->seq <= n && strcmp(log[q->seq - 1].id, q->id) == 0)
            continue;
        lost++;
        if (first_lost == NULL)
            first_lost = q;
    }
    if (first_lost != NULL) {
        const crash_request *q = first_lost;
        if (lost_label != NULL)
            fprintf(stderr, "%s: %" PRIu64 " of %" PRIu64 " acknowledged writes lost\n", lost_label,
                    lost, checked);
        rel_assert(rd, q->seq >= 1 && q->seq <= n,
                   "acknowledged %s (seq %" PRIu64 ") is lost: the log ends at %zu", q->id, q->seq,
                   n);
        rel_assert(rd, false, "acknowledged %s at seq %" PRIu64 " is lost: that seq holds %s",
                   q->id, q->seq, log[q->seq - 1].id);
    }
    return checked;
}

void crash_load_check(rel_daemon *rd, crash_history *h, size_t cycle_first, const char *where,
                      const char *lost_label, crash_check *out)
{
    budget_client *c = NULL;
    rel_event *log;

    memset(out, 0, sizeof(*out));
    rel_assert(rd, budget_client_connect(rd->d.socket, &c) == 0, "connect %s", where);
    budget_client *other = e2e_client_as(&rd->d, &e2e_other);
    uint64_t head = rel_verify(rd, c);
    size_t n = rel_read_log(rd, c, &log);
    rel_assert(rd, n == head, "log of %zu events, head %" PRIu64, n, head);

    out->head = head;
    out->checked = check_acknowledged(rd, h, log, n, lost_label);
    h->acked_checked += out->checked;
    rel_check_rules(rd, c, units, &out->rules);

    qsort(log, n, sizeof(*log), compare_event_ids);
    for (size_t i = cycle_first; i < h->count; i++) {
        crash_request *q = &h->all[i];
        out->acked += q->state == REQ_ACKED;
        if (q->state != REQ_UNKNOWN)
            continue;
        uint64_t seq = find_seq(log, n, q->id);
        out->unknown++;
        out->unknown_in_log += seq != 0;
        retry_unknown(rd, c, other, q, seq, head, h);
    }
    free(log);
    h->unknown += out->unknown;
    h->unknown_in_log += out->unknown_in_log;

    /* The retries made no second event and broke no rule. */
    out->events = rel_read_log(rd, c, &log);
    free(log);
    rel_check_rules(rd, c, units, &out->rules);
    budget_client_close(other);
    budget_client_close(c);
}
