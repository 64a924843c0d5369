/*
 * The refusal log: refusals (access denied, connection and subscription limits) are logged,
 * but at most REFUSAL_LOGGED_PER_S a second, so a client that asks for what it may not have
 * thousands of times cannot flood the log; the rest are counted, and the count is logged once
 * its second is over. Loop thread only.
 */
#ifndef BUDGET_REFUSAL_H
#define BUDGET_REFUSAL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#define REFUSAL_LOGGED_PER_S 10

typedef struct {
    uv_loop_t *loop;
    uint64_t window_ms; /* loop time the current second began */
    uint32_t logged;    /* refusals logged in full in it */
    uint64_t unlogged;  /* and those only counted */
} refusal_log_t;

void refusal_init(refusal_log_t *r, uv_loop_t *loop);

/* True when a refusal may be logged in full now; else it is counted. */
bool refusal_to_log(refusal_log_t *r);

/* Logs how many refusals were not logged, once their second is over (or at once: `force`). */
void refusal_flush(refusal_log_t *r, bool force);

#endif
