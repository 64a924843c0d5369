/*
 * The crash loop's writing clients, their history, and the checks after a restart, shared by
 * the crash loop (test_crash.c) and the power-loss loop (test_powerloss.c).
 *
 * In a cycle, clients with ids of their own write concurrently, each recording what it was
 * told, until budgetd is killed with SIGKILL at a random moment. Once the daemon is up again
 * (restarted, or started on a power-loss image), every acknowledged write must be in the log
 * at the seq it was acknowledged with, the chain and the rules of the budget must hold, and
 * every write left unanswered is retried with the same id and content: it answers the seq it
 * already has, or is made now, once (a second retry answers the same seq).
 */
#ifndef BUDGET_CRASH_LOAD_H
#define BUDGET_CRASH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rel_util.h"

#define CRASH_ARGS_BYTES_MAX 256

typedef enum { REQ_ACKED, REQ_UNKNOWN, REQ_REFUSED } crash_req_state;

/* One write a client sent, and what it was told. */
typedef struct {
    char id[80];
    const char *op;
    uint8_t args[CRASH_ARGS_BYTES_MAX];
    size_t args_size;
    crash_req_state state;
    bool shared; /* against the shared allocation: insufficient_funds is a fair answer */
    bool other;  /* sent as the second identity (a decision: four-eyes) */
    uint64_t seq;
    char code[32];
} crash_request;

/* Every write of a loop, cycle after cycle, and what the checks found. */
typedef struct {
    crash_request *all; /* malloc'd: free it */
    size_t count, cap;
    uint64_t acked_checked, unknown, unknown_in_log, created_on_retry, refused_on_retry;
} crash_history;

/*
 * One cycle's load on the daemon `rd` runs: the shared frame and allocation of the cycle,
 * then the clients, whose ids begin with `tag` and the cycle; budgetd is killed a random
 * 5..300 ms (drawn from `rng`) after they start. Every write is added to `h`. Returns the
 * moment of the kill in ms.
 */
int crash_load_cycle(rel_daemon *rd, char tag, int cycle, uint64_t *rng, crash_history *h);

/* What crash_load_check found. */
typedef struct {
    uint64_t head;                    /* the log's head before the retries */
    size_t events;                    /* the log's length after them */
    uint64_t checked;                 /* acknowledged writes found, over every cycle */
    uint64_t acked;                   /* this cycle's writes acknowledged before the kill */
    uint64_t unknown, unknown_in_log; /* this cycle's unanswered writes; those in the log */
    rel_rules rules;                  /* after the retries */
} crash_check;

/*
 * After the daemon is up again: everything acknowledged is in the log, the chain and the
 * rules hold, and the writes of this cycle (from `cycle_first` in `h`) left unanswered are
 * retried. `where` ends the message of a failed connect ("after restart"); when an
 * acknowledged write is lost and `lost_label` is not NULL, how many are lost is printed under
 * it before the failure.
 */
void crash_load_check(rel_daemon *rd, crash_history *h, size_t cycle_first, const char *where,
                      const char *lost_label, crash_check *out);

#endif
