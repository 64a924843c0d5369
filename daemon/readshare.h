/*
 * The reads' account of the loop thread's time while writes wait (--read-share; conn.c keeps
 * one per hub). Time passing credits the reads their share of it, their time on the loop is
 * debited, and a debt left when reads wait for a turn is a rest they owe. Arithmetic only: the
 * caller gives the clock and says what waits.
 */
#ifndef BUDGET_READSHARE_H
#define BUDGET_READSHARE_H

#include <stdbool.h>
#include <stdint.h>

/* A rest this short or shorter is not taken (the timer's resolution is a millisecond); the
 * debt stays and is paid by a later one. */
#define READ_REST_SLACK_NS 250000u
/* The debt is bounded by the last turn's reads or a slice, and never below this. */
#define READ_DEBT_MIN_NS 1000000

typedef struct {
    uint32_t share_pct; /* 1..99 bound the reads; 0 or 100 and more: no bound */
    int64_t credit_ns;
    uint64_t at_ns; /* when the account was last settled */
} read_account;

/*
 * Settles the account at `now`: credits the time passed since the last settling (at most a
 * second counts) at the share, debits `read_ns`, the reads' loop time since then, caps the
 * credit at `slice_ns` and the debt at the larger of `read_ns`, `slice_ns` and
 * READ_DEBT_MIN_NS, and forgives a debt when no write waits. Returns the rest the reads owe,
 * in ns: nonzero only when writes and reads both wait and the debt needs more than
 * READ_REST_SLACK_NS of time passing to be paid. Time that passes during a rest, also past its
 * end, is credited at the next settling.
 */
uint64_t read_account_settle(read_account *a, uint64_t now, uint64_t read_ns, uint64_t slice_ns,
                             bool writes_waiting, bool reads_waiting);

#endif
