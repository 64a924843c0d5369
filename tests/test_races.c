/*
 * Races on the last krona. For each seed, 32 clients request avrop against one allocation,
 * three times its size in all, with random amounts; every avrop a client gets is either
 * withdrawn by that client's own connection or handed to the others, who approve or reject
 * it (or leave it pending). Afterwards:
 *   - the approved total (what clients were told) never exceeds the allocation, and equals
 *     `called_off` in the balances; approved + pending never exceeds it either;
 *   - every decision on a pending avrop succeeded; every refused avrop was refused only for
 *     insufficient_funds;
 *   - after a restart the replayed balances are exactly those served before it.
 *
 * CI runs RELIABILITY_RACE_SEEDS seeds (default 40); scripts/reliability.sh races N runs N.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rel_util.h"

#define CLIENTS 32
#define SEEDS_DEFAULT 40
#define ALLOCATION_ORE 3200000LL
/* Each client asks for 3 * ALLOCATION_ORE / CLIENTS in all, in a few random pieces. */
#define CLIENT_DEMAND_ORE (3 * ALLOCATION_ORE / CLIENTS)
#define AVROP_ORE_MIN 5000LL
#define QUEUE_MAX (CLIENTS * 64)

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(races, .fini = teardown, .timeout = 1800);

/* Avrop waiting for another client's decision. */
typedef struct {
    pthread_mutex_t lock;
    char ids[QUEUE_MAX][48];
    int64_t amounts[QUEUE_MAX];
    int head, count;
} avrop_queue;

typedef struct {
    const char *socket;
    const char *allocation;
    int seed_index, index;
    uint64_t rng;
    avrop_queue *queue;
    pthread_barrier_t *start;
    /* What this client was told. */
    int64_t requested, approved, rejected, withdrawn;
    int refused;
    char failure[400];
} racer;

static bool queue_push(avrop_queue *q, const char *id, int64_t amount)
{
    bool ok = false;
    pthread_mutex_lock(&q->lock);
    if (q->count < QUEUE_MAX) {
        int i = (q->head + q->count) % QUEUE_MAX;
        snprintf(q->ids[i], sizeof(q->ids[i]), "%s", id);
        q->amounts[i] = amount;
        q->count++;
        ok = true;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

static bool queue_pop(avrop_queue *q, char *id, size_t id_size, int64_t *amount)
{
    bool ok = false;
    pthread_mutex_lock(&q->lock);
    if (q->count > 0) {
        snprintf(id, id_size, "%s", q->ids[q->head]);
        *amount = q->amounts[q->head];
        q->head = (q->head + 1) % QUEUE_MAX;
        q->count--;
        ok = true;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* A decision that must succeed: its target is pending and nobody else decides it. */
static bool decide(racer *r, budget_client *c, e2e_buf *b, const char *op, const char *target)
{
    char id[64];
    rel_result res;
    snprintf(id, sizeof(id), "%s-%s", target, op);
    rel_pack_for(b, op, id, target);
    rel_write(c, op, b->sb.data, b->sb.size, &res);
    if (res.transport != 0 || !res.ok) {
        snprintf(r->failure, sizeof(r->failure), "%s %s: %s: %s", op, target, res.code,
                 res.message);
        return false;
    }
    return true;
}

/* Decides one avrop of another client, if one waits. */
static bool decide_one(racer *r, budget_client *c, e2e_buf *b)
{
    char target[48];
    int64_t amount;
    if (!queue_pop(r->queue, target, sizeof(target), &amount))
        return true;
    uint64_t dice = rel_rand(&r->rng) % 10;
    if (dice < 6) {
        if (!decide(r, c, b, "approve", target))
            return false;
        r->approved += amount;
    } else if (dice < 9) {
        if (!decide(r, c, b, "reject", target))
            return false;
        r->rejected += amount;
    } /* else it stays pending */
    return true;
}

static void *racer_main(void *arg)
{
    racer *r = arg;
    budget_client *c = NULL, *d = NULL;
    e2e_buf b;
    int64_t left = CLIENT_DEMAND_ORE;

    /* Its own connection for requests and withdrawals, the second identity's for decisions
     * (four-eyes: nobody decides an avrop of its own). */
    if (budget_client_connect(r->socket, &c) != 0 ||
        e2e_client_connect_as(r->socket, &e2e_other, &d) != 0) {
        snprintf(r->failure, sizeof(r->failure), "cannot connect");
        budget_client_close(c);
        pthread_barrier_wait(r->start);
        return NULL;
    }
    pthread_barrier_wait(r->start);
    e2e_buf_init(&b);
    for (int n = 0; left > 0; n++) {
        char id[48];
        rel_result res;
        int64_t amount = AVROP_ORE_MIN + (int64_t)(rel_rand(&r->rng) % (CLIENT_DEMAND_ORE / 2));
        if (amount > left)
            amount = left;
        left -= amount;
        snprintf(id, sizeof(id), "s%d-t%d-v%d", r->seed_index, r->index, n);
        rel_pack_avrop(&b, id, r->allocation, amount);
        rel_write(c, "avrop.request", b.sb.data, b.sb.size, &res);
        if (res.transport != 0) {
            snprintf(r->failure, sizeof(r->failure), "%s: no response", id);
            break;
        }
        if (!res.ok) {
            if (strcmp(res.code, "insufficient_funds") != 0) {
                snprintf(r->failure, sizeof(r->failure), "avrop %s refused: %s: %s", id, res.code,
                         res.message);
                break;
            }
            r->refused++;
        } else {
            r->requested += amount;
            if (rel_rand(&r->rng) % 4 == 0) {
                if (!decide(r, c, &b, "withdraw", id))
                    break;
                r->withdrawn += amount;
            } else if (!queue_push(r->queue, id, amount)) {
                snprintf(r->failure, sizeof(r->failure), "the decision queue is full");
                break;
            }
        }
        if (!decide_one(r, d, &b))
            break;
    }
    /* Help empty the queue: the decisions race with the others' last requests. */
    for (int i = 0; i < 4 && r->failure[0] == '\0'; i++)
        if (!decide_one(r, d, &b))
            break;
    e2e_buf_destroy(&b);
    budget_client_close(d);
    budget_client_close(c);
    return NULL;
}

static void one_seed(int s, uint64_t seed, avrop_queue *queue, int64_t *approved_sum,
                     int *refused_sum)
{
    static racer racers[CLIENTS];
    pthread_t threads[CLIENTS];
    pthread_barrier_t start;
    budget_client *c = NULL;
    e2e_buf b;
    char frame[32], alloc[32], decision[40];
    rel_result res;

    snprintf(frame, sizeof(frame), "s%d-f", s);
    snprintf(alloc, sizeof(alloc), "s%d-a", s);
    snprintf(decision, sizeof(decision), "s%d-a-ok", s);
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    e2e_buf_init(&b);
    rel_pack_grant(&b, frame, "KS", 2 * ALLOCATION_ORE);
    rel_write(c, "frame.grant", b.sb.data, b.sb.size, &res);
    rel_assert(&rd, res.ok, "grant: %s", res.code);
    rel_pack_propose(&b, alloc, frame, "SON", ALLOCATION_ORE);
    rel_write(c, "allocation.propose", b.sb.data, b.sb.size, &res);
    rel_assert(&rd, res.ok, "propose: %s", res.code);
    rel_pack_decide(&b, decision, alloc);
    budget_client *other = e2e_client_as(&rd.d, &e2e_other);
    rel_write(other, "approve", b.sb.data, b.sb.size, &res);
    budget_client_close(other);
    rel_assert(&rd, res.ok, "approve: %s", res.code);
    e2e_buf_destroy(&b);

    queue->head = queue->count = 0;
    pthread_barrier_init(&start, NULL, CLIENTS);
    for (int t = 0; t < CLIENTS; t++) {
        racers[t] = (racer){.socket = rd.d.socket,
                            .allocation = alloc,
                            .seed_index = s,
                            .index = t,
                            .queue = queue,
                            .start = &start};
        racers[t].rng =
            seed ^ ((uint64_t)(s + 1) << 20) ^ (uint64_t)(t + 1) * 0x9e3779b97f4a7c15ull;
        cr_assert_eq(pthread_create(&threads[t], NULL, racer_main, &racers[t]), 0);
    }
    bool joined = rel_join(threads, CLIENTS, 30000, &rd);
    pthread_barrier_destroy(&start);
    cr_assert(joined, "racers hung");

    int64_t requested = 0, approved = 0, rejected = 0, withdrawn = 0;
    int refused = 0;
    for (int t = 0; t < CLIENTS; t++) {
        rel_assert(&rd, racers[t].failure[0] == '\0', "seed %d client %d: %s", s, t,
                   racers[t].failure);
        requested += racers[t].requested;
        approved += racers[t].approved;
        rejected += racers[t].rejected;
        withdrawn += racers[t].withdrawn;
        refused += racers[t].refused;
    }
    int64_t pending = requested - approved - rejected - withdrawn;

    rel_allocation a;
    rel_get_allocation(&rd, c, alloc, &a);
    rel_assert(&rd, approved <= ALLOCATION_ORE,
               "seed %d: %" PRId64 " öre approved out of an allocation of %lld", s, approved,
               ALLOCATION_ORE);
    rel_assert(&rd, a.called_off == approved,
               "seed %d: balances say %" PRId64 " called off, clients were told %" PRId64, s,
               a.called_off, approved);
    rel_assert(&rd, a.pending == pending,
               "seed %d: balances say %" PRId64 " pending, clients' tally %" PRId64, s, a.pending,
               pending);
    rel_assert(&rd, a.called_off + a.pending <= a.amount, "seed %d: over-reserved", s);
    rel_assert(&rd, refused > 0, "seed %d: three times the allocation asked, none refused", s);
    *approved_sum += approved;
    *refused_sum += refused;
    budget_client_close(c);
}

Test(races, avrop_for_three_times_the_allocation_never_overdraw)
{
    static avrop_queue queue;
    uint64_t seed = rel_seed("races");
    long seeds = e2e_env_long("RELIABILITY_RACE_SEEDS", SEEDS_DEFAULT);
    int64_t approved = 0;
    int refused = 0;
    rel_allocation before[64], after;
    budget_client *c = NULL;

    pthread_mutex_init(&queue.lock, NULL);
    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    for (int s = 0; s < seeds; s++) {
        one_seed(s, seed, &queue, &approved, &refused);
        /* Every few seeds, and at the end, replay must give exactly what was served. */
        if (s % 4 == 3 || s == seeds - 1) {
            int first = s - s % 4;
            char alloc[32];
            rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
            for (int k = first; k <= s; k++) {
                snprintf(alloc, sizeof(alloc), "s%d-a", k);
                rel_get_allocation(&rd, c, alloc, &before[k - first]);
            }
            budget_client_close(c);
            rel_stop_clean(&rd);
            rel_assert(&rd, rel_restart(&rd) == 0, "restart");
            rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
            rel_verify(&rd, c);
            for (int k = first; k <= s; k++) {
                snprintf(alloc, sizeof(alloc), "s%d-a", k);
                rel_get_allocation(&rd, c, alloc, &after);
                rel_allocation *was = &before[k - first];
                rel_assert(&rd,
                           after.amount == was->amount && after.called_off == was->called_off &&
                               after.pending == was->pending && after.available == was->available &&
                               strcmp(after.status, was->status) == 0,
                           "seed %d: replay gives called_off %" PRId64 " pending %" PRId64
                           ", served before: %" PRId64 " %" PRId64,
                           k, after.called_off, after.pending, was->called_off, was->pending);
            }
            budget_client_close(c);
        }
    }
    static const char *const units[] = {"KS", "SON", NULL};
    rel_rules rules;
    rel_assert(&rd, budget_client_connect(rd.d.socket, &c) == 0, "connect");
    rel_check_rules(&rd, c, units, &rules);
    budget_client_close(c);
    rel_stop_clean(&rd);
    fprintf(stderr,
            "races: %ld seeds x %d clients: %" PRId64 " öre approved in all (never over an "
            "allocation), %d avrop refused for insufficient funds; replay equal\n",
            seeds, CLIENTS, approved, refused);
    pthread_mutex_destroy(&queue.lock);
}
