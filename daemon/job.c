/* Worker jobs on libuv's pool, taken fairly between uids (job.h). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "budget/errors.h"
#include "job.h"

static void job_run(uv_work_t *w)
{
    job_t *j = w->data;
    if (j->pool->hook)
        j->pool->hook();
    j->run(j, &j->answer);
    resp_finish(&j->answer, j->req_id);
}

static void job_done(uv_work_t *w, int status);

static uint32_t on_pool_of(const job_pool_t *p, uint32_t uid)
{
    uint32_t n = 0;
    for (const job_t *o = p->on_pool; o; o = o->next)
        n += o->uid == uid;
    return n;
}

/* Hands waiting jobs to the pool while it has room, fairly between uids. */
static void start_waiting(job_pool_t *p)
{
    while (p->waiting && p->on_pool_count < JOB_ON_POOL_MAX) {
        job_t **best = NULL, *prev = NULL, *best_prev = NULL;
        uint32_t best_running = UINT32_MAX;
        for (job_t **at = &p->waiting; *at; prev = *at, at = &(*at)->next) {
            uint32_t running = on_pool_of(p, (*at)->uid);
            if (running < best_running) {
                best = at;
                best_prev = prev;
                best_running = running;
            }
            if (running == 0)
                break; /* none is fewer */
        }
        job_t *j = *best;
        *best = j->next;
        if (p->waiting_tail == j)
            p->waiting_tail = best_prev;
        j->next = p->on_pool;
        p->on_pool = j;
        p->on_pool_count++;
        uv_queue_work(p->loop, &j->work, job_run, job_done);
    }
}

static void job_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    job_pool_t *p = j->pool;
    conn_t *c = j->c;

    (void)status;
    assert(p->on_pool_count > 0 && p->running > 0);
    for (job_t **at = &p->on_pool; *at; at = &(*at)->next)
        if (*at == j) {
            *at = j->next;
            break;
        }
    p->on_pool_count--;
    start_waiting(p);
    size_t size = j->answer.sb.size;
    conn_job_answer(c, j->slot, msgpack_sbuffer_release(&j->answer.sb), size);
    if (j->finished)
        j->finished(j);
    free(j);
    conn_unref(c);
    job_count_end(p);
}

int job_queue(job_pool_t *p, conn_t *c, uint32_t idx, uint64_t req_id, job_t *j)
{
    uint32_t uid = conn_actor(c)->uid, mine = 0;
    char msg[200];

    assert(j->run != NULL);
    for (const job_t *o = p->on_pool; o; o = o->next)
        mine += o->uid == uid;
    for (const job_t *o = p->waiting; o; o = o->next)
        mine += o->uid == uid;
    if (p->running >= BUDGET_READ_JOBS_MAX || mine >= BUDGET_READ_JOBS_PER_UID_MAX) {
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
    j->pool = p;
    j->c = c;
    j->uid = uid;
    j->slot = idx;
    j->req_id = req_id;
    conn_job_begin(c);
    job_count_begin(p);
    j->next = NULL;
    if (p->waiting_tail)
        p->waiting_tail->next = j;
    else
        p->waiting = j;
    p->waiting_tail = j;
    start_waiting(p);
    return 0;
}

void job_count_begin(job_pool_t *p)
{
    p->running++;
}

void job_count_end(job_pool_t *p)
{
    assert(p->running > 0);
    p->running--;
    if (p->quiet)
        p->quiet(p->owner);
}
