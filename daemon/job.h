/*
 * Worker jobs: requests answered on libuv's pool (long reads, checkpoints, retries of durable
 * writes). At most JOB_ON_POOL_MAX run at once; the others wait, and the next to run is the
 * oldest of a uid with the fewest running, so a uid that queued many slow reads has one after
 * the other, and another uid's read runs as soon as a thread is free. A uid may have at most
 * BUDGET_READ_JOBS_PER_UID_MAX jobs running or waiting, and all uids BUDGET_READ_JOBS_MAX.
 *
 * The pool also counts the other work that runs off the loop thread and must end before the
 * daemon does (subscription pages, backups): job_count_begin / job_count_end.
 *
 * Loop thread, except `run` and the hook.
 */
#ifndef BUDGET_JOB_H
#define BUDGET_JOB_H

#include <stdint.h>

#include <uv.h>

#include "conn.h"
#include "resp.h"

/* Worker jobs handed to libuv's pool (4 threads) at once. */
#define JOB_ON_POOL_MAX 4

typedef struct job job_t;
/* A job's own struct embeds this first. The connection is kept alive until the answer is in. */
struct job {
    uv_work_t work;
    struct job_pool *pool;
    conn_t *c;
    uint32_t uid; /* the connection's, for the per-uid bound and the fair turn */
    job_t *next;  /* in job_pool.waiting or job_pool.on_pool */
    uint32_t slot;
    uint64_t req_id;
    /* On a worker thread: makes the whole answer in `answer` (resp_begin or resp_error_into;
     * resp_finish is done by the caller). Touches no loop-thread state. */
    void (*run)(job_t *j, resp_t *answer);
    /* On the loop thread, after the answer is handed to the connection; may be NULL. */
    void (*finished)(job_t *j);
    resp_t answer;
};

typedef struct job_pool {
    uv_loop_t *loop;
    job_t *waiting, *waiting_tail, *on_pool;
    uint32_t on_pool_count;
    uint32_t running; /* worker jobs running or waiting, pages and backups */
    /* Called on a worker thread before each job runs; NULL in budgetd (job_hook). */
    void (*hook)(void);
    /* Called when a job or counted work ended: the owner may be done (stopping). */
    void (*quiet)(void *owner);
    void *owner;
} job_pool_t;

/* Queues `j` (calloc'd by the caller, `run` set) to answer slot `idx` of `c`; frees it when
 * done. Returns 0; or -1 past BUDGET_READ_JOBS_MAX jobs running or waiting, or
 * BUDGET_READ_JOBS_PER_UID_MAX of the connection's uid: then the request is answered
 * `unavailable` at once and `j` is freed. */
int job_queue(job_pool_t *p, conn_t *c, uint32_t idx, uint64_t req_id, job_t *j);

/* Work of another kind that runs off the loop thread begins and ends. */
void job_count_begin(job_pool_t *p);
void job_count_end(job_pool_t *p);

#endif
