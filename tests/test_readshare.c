/*
 * The reads' account of the loop's time while writes wait (daemon/readshare.c): the rest it
 * asks for, the cap on the credit, the bound on the debt, what is forgiven, and a rest's
 * overrun credited back. Times in ns; a share of 50 % and a slice of 1 ms unless said.
 */
#include <criterion/criterion.h>

#include "daemon/readshare.h"

#define MS 1000000ull
#define T0 (1000ull * MS) /* any start; the first settling only sets the clock */

static read_account fresh(uint32_t share)
{
    read_account a = {.share_pct = share, .credit_ns = 0, .at_ns = T0};
    return a;
}

Test(readshare, reads_over_their_share_rest_until_the_time_passing_pays)
{
    read_account a = fresh(50);
    /* 2 ms passed, all of it reads: 1 ms over their half, paid by 2 ms of rest. */
    cr_assert_eq(read_account_settle(&a, T0 + 2 * MS, 2 * MS, MS, true, true), 2 * MS);
    /* The rest taken, with no reads: paid, no further rest. */
    cr_assert_eq(read_account_settle(&a, T0 + 4 * MS, 0, MS, true, true), 0);
    cr_assert_eq(a.credit_ns, 0);
    /* Half the time in reads is their share exactly: no rest. */
    cr_assert_eq(read_account_settle(&a, T0 + 6 * MS, 1 * MS, MS, true, true), 0);
}

Test(readshare, a_rest_the_timer_made_longer_is_credited_to_the_next_turn)
{
    read_account on_time = fresh(50), late = fresh(50);
    cr_assert_eq(read_account_settle(&on_time, T0 + 2 * MS, 2 * MS, MS, true, true), 2 * MS);
    cr_assert_eq(read_account_settle(&late, T0 + 2 * MS, 2 * MS, MS, true, true), 2 * MS);
    /* The rest ends on time for one, 1 ms late for the other; each then reads 1.5 ms of 1.5. */
    cr_assert_eq(read_account_settle(&on_time, T0 + 4 * MS, 0, MS, true, true), 0);
    cr_assert_eq(read_account_settle(&late, T0 + 5 * MS, 0, MS, true, true), 0);
    cr_assert_eq(late.credit_ns, (int64_t)(MS / 2));
    uint64_t r1 = read_account_settle(&on_time, T0 + 5500000ull, 1500000ull, MS, true, true);
    uint64_t r2 = read_account_settle(&late, T0 + 6500000ull, 1500000ull, MS, true, true);
    cr_assert_eq(r1, 1500000ull); /* 0.75 ms owed, at 50 % */
    cr_assert_eq(r2, 500000ull);  /* 0.25 ms owed after the 0.5 ms credited */
}

Test(readshare, the_credit_is_capped_at_a_slice)
{
    read_account a = fresh(50);
    /* A quiet second credits one slice, not half a second: 3 ms of reads in 3 ms then owe
     * 0.5 ms, a rest of 1 ms. */
    cr_assert_eq(read_account_settle(&a, T0 + 1000 * MS, 0, MS, true, false), 0);
    cr_assert_eq(a.credit_ns, (int64_t)MS);
    cr_assert_eq(read_account_settle(&a, T0 + 1003 * MS, 3 * MS, MS, true, true), MS);
}

Test(readshare, debts_of_turns_that_left_nothing_waiting_do_not_pile_up)
{
    read_account a = fresh(50);
    uint64_t now = T0;
    /* Ten turns of 2 ms, all reads, none left waiting: no rest asked. */
    for (int i = 0; i < 10; i++) {
        now += 2 * MS;
        cr_assert_eq(read_account_settle(&a, now, 2 * MS, MS, true, false), 0);
    }
    /* The debt is that of one such turn, not of ten: 2 ms, a rest of 4 ms. */
    cr_assert_eq(a.credit_ns, -(int64_t)(2 * MS));
    now += 2 * MS;
    cr_assert_eq(read_account_settle(&a, now, 2 * MS, MS, true, true), 4 * MS);
}

Test(readshare, with_no_write_waiting_a_debt_is_forgiven)
{
    read_account a = fresh(50);
    cr_assert_eq(read_account_settle(&a, T0 + 2 * MS, 2 * MS, MS, false, true), 0);
    cr_assert_eq(a.credit_ns, 0);
    /* The writes that come next find the reads owing nothing. */
    cr_assert_eq(read_account_settle(&a, T0 + 2 * MS, 0, MS, true, true), 0);
}

Test(readshare, a_debt_within_the_slack_is_kept_for_later)
{
    read_account a = fresh(50);
    /* 0.1 ms owed: a rest of 0.2 ms is not taken, and the debt stays. */
    cr_assert_eq(read_account_settle(&a, T0 + 2 * MS, 1100000ull, MS, true, true), 0);
    cr_assert_eq(a.credit_ns, -100000);
}

Test(readshare, a_share_of_100_never_rests_and_the_rest_scales_with_the_share)
{
    read_account all = fresh(100), tenth = fresh(10);
    cr_assert_eq(read_account_settle(&all, T0 + 2 * MS, 2 * MS, MS, true, true), 0);
    /* 10 %: 1 ms of reads in 1 ms owes 0.9 ms, paid by 9 ms of time passing. */
    cr_assert_eq(read_account_settle(&tenth, T0 + MS, MS, MS, true, true), 9 * MS);
}
