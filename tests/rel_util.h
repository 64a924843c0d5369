/*
 * Helpers for the reliability suites (crash, faults, hostile clients, races), on top of
 * e2e_util.h: a budgetd started from a chosen binary with a chosen environment (the
 * fault-injection build, a wrapper such as valgrind), whole-ledger checks through the
 * protocol (log, chain, rules), honest clients that measure their latency while a test
 * attacks the daemon, and bounded thread joins. Every wait has a deadline.
 *
 * Environment read here:
 *   BUDGETD_WRAPPER   a command run in front of budgetd ("valgrind --error-exitcode=97 ..."),
 *                     split on spaces; waits are stretched by RELIABILITY_SLOW (default 10
 *                     with a wrapper, else 1).
 *   RELIABILITY_WRAPPED=1  the daemon's binary is itself a wrapper script (the valgrind pass).
 *   RELIABILITY_SEED  the seed of the random choices (default: from the clock); printed.
 */
#ifndef BUDGET_REL_UTIL_H
#define BUDGET_REL_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "e2e_util.h"

/* ---- a daemon of a chosen build ----------------------------------------------------------- */

#define REL_EXTRA_ARGS_MAX 4
/* The events rel_start writes on a fresh folder before the daemon the test asked for starts:
 * the registrations of KS, SON, KFN and U0..U7 (seqs 1..REL_UNIT_EVENTS). */
#define REL_UNIT_EVENTS 11u
#define REL_ENV_MAX 2

typedef struct {
    e2e_daemon d;
    const char *binary; /* BUDGETD_PATH unless set */
    /* budgetd-faulty's seams at the next start, "NAME=VALUE" ("BUDGETD_FAULT=commit:1:EIO",
     * "BUDGETD_LOOKUP_DELAY=...", "BUDGETD_CLOCK_OFFSET_MS=...", "BUDGETD_SOCKET_SWAP=...");
     * "" ends the list. Any
     * seam not listed is unset. */
    char env[REL_ENV_MAX][176];
    const char *extra[REL_EXTRA_ARGS_MAX + 1]; /* more arguments, NULL-terminated */
} rel_daemon;

/* A fresh folder and a daemon in it. 0, or -1 with the reason and the log printed. */
int rel_start(rel_daemon *r);
/* Starts again on the same folder (the daemon must have exited). 0 or -1. */
int rel_restart(rel_daemon *r);
/* Like rel_restart, but returns at once without waiting for the socket: for a start that is
 * expected to fail. */
int rel_spawn(rel_daemon *r);
/* Waits up to `timeout_ms` (stretched) for the daemon to exit by itself. 0 with its status,
 * or -1 (it is then killed). */
int rel_wait_exit(rel_daemon *r, int timeout_ms, int *status);
/* SIGTERM and wait; asserts a clean exit (status 0). */
void rel_stop_clean(rel_daemon *r);
void rel_cleanup(rel_daemon *r);
/* Prints the last lines of the daemon's log on stderr. */
void rel_report(const rel_daemon *r);
/* True when the daemon's log holds `text`. */
bool rel_log_contains(const rel_daemon *r, const char *text);
/* How many times the daemon's log holds `text`. */
int rel_log_count(const rel_daemon *r, const char *text);

#define rel_assert(r, cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rel_report(r);                                                                         \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

/* ---- small things ------------------------------------------------------------------------- */

void rel_sleep_ms(int ms);
/* The seed (RELIABILITY_SEED or the clock), printed once with `what`. */
uint64_t rel_seed(const char *what);
/* xorshift64*: deterministic for a seed. */
uint64_t rel_rand(uint64_t *state);
/* Raises this process's RLIMIT_NOFILE soft limit to at least `want` (up to the hard limit).
 * Returns the soft limit in force afterwards. */
long rel_raise_nofile(long want);
/* Joins `n` threads within `timeout_ms` (stretched); on a timeout the daemon is killed so that
 * every blocked client returns, the threads are joined, and false is returned. */
bool rel_join(pthread_t *threads, int n, int timeout_ms, rel_daemon *r);

/* ---- requests ----------------------------------------------------------------------------- */

void rel_pack_grant(e2e_buf *b, const char *id, const char *unit, int64_t amount);
void rel_pack_adjust(e2e_buf *b, const char *id, const char *frame, int64_t delta);
void rel_pack_propose(e2e_buf *b, const char *id, const char *frame, const char *unit,
                      int64_t amount);
void rel_pack_avrop(e2e_buf *b, const char *id, const char *allocation, int64_t amount);
/* approve, reject, withdraw */
void rel_pack_target(e2e_buf *b, const char *id, const char *target);
/* The args of approve or reject: id, target and the decision (e2e_kv_decision). */
void rel_pack_decide(e2e_buf *b, const char *id, const char *target);
/* The args of `op` on a target: rel_pack_target for withdraw, else rel_pack_decide. */
void rel_pack_for(e2e_buf *b, const char *op, const char *id, const char *target);

/* What one write answered, without asserting (usable on any thread). */
typedef struct {
    int transport; /* 0, or the negative errno / budget_err of a send or receive that failed */
    bool ok;
    uint64_t seq;
    char code[32];
    char message[BUDGET_TEXT_BYTES_MAX + 1];
} rel_result;

void rel_write(budget_client *c, const char *op, const void *args, size_t args_size,
               rel_result *out);

/* ---- whole-ledger checks (main thread; they assert) ---------------------------------------- */

typedef struct {
    uint64_t seq;
    char id[BUDGET_ID_BYTES_MAX + 1];
    char type[24];
    uint64_t ts_ms;
} rel_event;

/* Reads the whole log through `events`, checking that seqs run 1..head without a gap and that
 * no id appears twice. Returns the count; *out is malloc'd (free it). */
size_t rel_read_log(const rel_daemon *r, budget_client *c, rel_event **out);

/* `verify` answers ok with every event checked; returns the head. */
uint64_t rel_verify(const rel_daemon *r, budget_client *c);

typedef struct {
    uint64_t frames, allocations, avrop_pending_total_checks;
    int64_t called_off_total; /* approved avrop, over every allocation seen */
} rel_rules;

/*
 * The rules of the budget, read back through `balances` for each unit in `units`
 * (NULL-terminated; together they must hold every frame and receive every allocation):
 * for each frame allocated + pending <= granted and unallocated = granted - allocated -
 * pending; for each allocation called_off + pending <= amount, and nothing called off or
 * pending unless it is approved; for each unit row available >= 0. Asserts; fills *out.
 */
void rel_check_rules(const rel_daemon *r, budget_client *c, const char *const *units,
                     rel_rules *out);

/* One allocation's balance: amount, called_off, pending, status ("approved"...). */
typedef struct {
    int64_t amount, called_off, pending, available;
    char status[16];
} rel_allocation;
void rel_get_allocation(const rel_daemon *r, budget_client *c, const char *id, rel_allocation *out);

/* ---- honest clients with their latency ---------------------------------------------------- */

#define REL_SAMPLES_MAX 200000

typedef struct {
    const char *socket;
    const char *prefix; /* ids of its writes: PREFIX-INDEX-N */
    int index;
    atomic_bool *stop;
    pthread_t thread;
    uint32_t *latency_us; /* one per request */
    size_t count;
    uint64_t failures;
    char failure[400];
} rel_honest;

typedef struct {
    uint64_t requests, failures;
    double p50_ms, p99_ms, max_ms;
} rel_latency;

/* Starts `n` clients that alternate hello and a durable frame.grant, one request at a time. */
void rel_honest_start(rel_honest *h, int n, const char *socket, const char *prefix,
                      atomic_bool *stop);
/* Stops and joins them (within a deadline, else the daemon is killed) and merges the figures. */
bool rel_honest_stop(rel_honest *h, int n, rel_daemon *r, rel_latency *out);

#endif
