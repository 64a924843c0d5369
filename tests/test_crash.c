/*
 * Crash loop: clients with ids of their own write concurrently, each recording what it was
 * told; budgetd is killed with SIGKILL at a random moment, restarted, and then:
 *   - every acknowledged write is in the log, at the seq it was acknowledged with;
 *   - the log runs 1..head without a gap, no id is in it twice, and `verify` holds;
 *   - every rule of the budget holds on the replayed state (read through `balances`);
 *   - every write left unanswered by the crash is retried with the same id and content:
 *     it answers the seq it already has, or is made now, once (a second retry answers the
 *     same seq), and never makes a second event.
 * Now and then the daemon is also killed while it replays at start-up. The clients, what
 * they were told and the checks after the restart are in crash_load.c.
 *
 * CI runs RELIABILITY_CRASH_CYCLES cycles (default 10); scripts/reliability.sh crash N runs N.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash_load.h"
#include "rel_util.h"

#define CYCLES_DEFAULT 10

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(crash, .fini = teardown, .timeout = 3600);

/* After a restart: the checks of crash_load_check, and the cycle's figures. */
static void check_after_restart(crash_history *h, size_t cycle_first, int cycle)
{
    crash_check r;
    crash_load_check(&rd, h, cycle_first, "after restart", NULL, &r);
    fprintf(stderr,
            "crash cycle %d: head %zu, acknowledged %" PRIu64 " all present, unanswered %" PRIu64
            " (%" PRIu64 " had been written), frames %" PRIu64 ", allocations %" PRIu64 "\n",
            cycle, r.events, r.checked, r.unknown, r.unknown_in_log, r.rules.frames,
            r.rules.allocations);
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
    crash_history h = {0};
    uint64_t rng = rel_seed(what);
    int64_t t0 = e2e_now_us();

    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    for (int k = 0; k < cycles; k++) {
        size_t cycle_first = h.count;
        crash_load_cycle(&rd, 'k', k, &rng, &h);
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
