/*
 * Who a connecting uid is: its user name and groups, from the user and group databases. Those
 * may be a directory service (LDAP, SSSD) and slow, so lookups run on LOOKUP_THREADS threads
 * of their own, never on libuv's pool (there they would wait behind long reads, and a
 * directory that hangs would take the pool from the reads). Nor may one slow user hold up the
 * others: a waiter whose uid is being looked up shares that lookup's answer, and at most
 * LOOKUP_THREADS lookups run at once; the other waiters wait their turn in order.
 *
 * Loop thread, except where a comment says otherwise.
 */
#ifndef BUDGET_LOOKUP_H
#define BUDGET_LOOKUP_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "access.h"
#include "budget/limits.h"

/* Lookups running at once. */
#define LOOKUP_THREADS 2

/* What the databases said of a uid. */
typedef struct {
    uint32_t uid;
    bool found; /* the uid has a password entry */
    char name[BUDGET_NAME_BYTES_MAX + 1];
    access_identity user; /* the user's group in the password database, then its others */
} lookup_result_t;

typedef struct lookup_waiter lookup_waiter_t;
/* One who waits for a uid's answer; embedded in what waits (a connection). */
struct lookup_waiter {
    lookup_waiter_t *next; /* in a lookup's list or the queue: the pool's */
    uint32_t uid;
    /* Its turn came after it waited in the queue: false when it no longer wants the lookup
     * (it closed meanwhile); then `done` follows with NULL. */
    bool (*turn)(lookup_waiter_t *w);
    /* The answer; NULL when there is none (no thread, out of memory, or `turn` said no).
     * Called once for each lookup_want. */
    void (*done)(lookup_waiter_t *w, const lookup_result_t *r);
};

typedef struct lookup_job lookup_job_t;

typedef struct {
    uv_loop_t *loop;
    lookup_job_t *running; /* loop thread: the lookups handed to the threads */
    lookup_waiter_t *waiting, *waiting_tail;
    /* Called on a lookup thread before each lookup; NULL in budgetd (lookup_hook). */
    void (*hook)(uint32_t uid);
    /* Called once a lookup's waiters have their answers: the owner may be done. */
    void (*quiet)(void *owner);
    void *owner;
    /* Shared with the threads, under `mutex`. */
    uv_thread_t threads[LOOKUP_THREADS];
    uint32_t threads_count;
    uv_mutex_t mutex;
    uv_cond_t cond;
    lookup_job_t *todo, *done;
    bool stop;
    uv_async_t async;
} lookup_pool_t;

/* Starts the threads: 0, or -1 when none could be started (every lookup then fails). */
int lookup_start(lookup_pool_t *p, uv_loop_t *loop);

/* Looks `w->uid` up: with a running lookup of it at once, else once a thread is free. */
void lookup_want(lookup_pool_t *p, lookup_waiter_t *w);

/* True while a lookup runs (its waiters still get their answers). */
bool lookup_busy(const lookup_pool_t *p);

/* Lets the loop end: closes the wakeup handle. No lookup may be running. */
void lookup_close(lookup_pool_t *p);

/* After the loop: stops and joins the threads. */
void lookup_join(lookup_pool_t *p);

#endif
