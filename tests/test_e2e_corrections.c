/*
 * End to end through budgetctl: reductions of allocations, reversals of avrop (återföring) and
 * duplicate grants, against a real budgetd in a folder of its own for each test.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "e2e_util.h"

static e2e_daemon bd;

/* The events setup writes before a test's own: the registrations of KS, SON and KFN. */
#define U 3

static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

TestSuite(corrections, .init = setup, .fini = teardown, .timeout = 90);

static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not exit within %d ms of SIGTERM", E2E_STOP_TIMEOUT_MS);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
}

/* ---- budgetctl ------------------------------------------------------------------------------- */

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(const char *)))

/* The writes that rest on a decision: each is given E2E_DECISION, these tests being about
 * what corrections do, not about decisions. */
static bool rests_on_decision(const char *cmd)
{
    static const char *const decided[] = {"grant", "adjust", "approve", "reject"};
    for (size_t i = 0; i < sizeof(decided) / sizeof(decided[0]); i++)
        if (strcmp(cmd, decided[i]) == 0)
            return true;
    return false;
}

/* Runs budgetctl as this process's uid (`other` false) or as the second identity. */
static int ctl_argv(bool other, e2e_ctl_result *r, int argc, const char *const *given)
{
    const char *argv[48];
    e2e_assert(argc > 0 && argc + 2 <= 48, "too many arguments");
    for (int i = 0; i < argc; i++)
        argv[i] = given[i];
    if (rests_on_decision(argv[0])) {
        argv[argc++] = "--decision";
        argv[argc++] = E2E_DECISION;
    }
    int rc =
        other ? e2e_ctl_argv_as(&bd, &e2e_other, r, argc, argv) : e2e_ctl_argv(&bd, r, argc, argv);
    e2e_assert(rc == 0, "budgetctl %s could not be run", argv[0]);
    return r->exit_code;
}

static void ctl_ok_argv(bool other, int argc, const char *const *argv)
{
    e2e_ctl_result r;
    int code = ctl_argv(other, &r, argc, argv);
    e2e_assert(code == 0, "budgetctl %s exited %d; stdout: %s; stderr: %s", argv[0], code, r.out,
               r.err);
    e2e_ctl_free(&r);
}

/* Runs budgetctl, which must exit 0: as the clerk, or as the other identity (decisions). */
#define ctl_ok(...) ctl_ok_argv(false, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))
#define ctl_ok_other(...) ctl_ok_argv(true, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* Runs budgetctl, which must be refused (exit 1) with `message` in what it says. */
static void ctl_refused_argv(bool other, const char *message, int argc, const char *const *argv)
{
    e2e_ctl_result r;
    int code = ctl_argv(other, &r, argc, argv);
    e2e_assert(code == 1 && strstr(r.err, message) != NULL,
               "budgetctl %s: exit %d, expected 1 with \"%s\"; stderr: %s", argv[0], code, message,
               r.err);
    e2e_ctl_free(&r);
}

#define ctl_refused(message, ...)                                                                  \
    ctl_refused_argv(false, (message), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))
#define ctl_refused_other(message, ...)                                                            \
    ctl_refused_argv(true, (message), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/*
 * Grants frame `id` through budgetctl: the one place the tests make their frames, so a step
 * every grant needs (a unit registered first) is one edit here.
 */
static void grant_frame(const char *id, const char *unit, const char *amount, const char *reference)
{
    ctl_ok("grant", "--unit", unit, "--year", "2021", "--amount", amount, "--title",
           "Utökat trygghetsarbete", "--reference", reference, "--id", id);
}

/* `budgetctl --json balances OPTION ID [--as-of SEQ]` (OPTION --allocation or --frame), parsed. */
static e2e_json *balances(const char *option, const char *id, uint64_t as_of)
{
    char seq[32];
    e2e_ctl_result r;
    snprintf(seq, sizeof(seq), "%" PRIu64, as_of);
    const char *const argv[] = {"--json", "balances", option, id, "--as-of", seq};
    int code = ctl_argv(false, &r, as_of == 0 ? 4 : 6, argv);
    e2e_assert(code == 0, "balances exited %d: %s", code, r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "balances --json printed no JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

static e2e_json *balances_of(const char *allocation, uint64_t as_of)
{
    return balances("--allocation", allocation, as_of);
}

/* The integer `key` of frame `id`'s balances, as of `as_of` (0: now). */
static int64_t frame_figure(const char *id, const char *key, uint64_t as_of)
{
    e2e_json *j = balances("--frame", id, as_of);
    const e2e_json *list = e2e_json_get(j, "frames");
    e2e_assert(list != NULL && list->type == E2E_JSON_ARRAY && list->count == 1, "frame %s", id);
    int64_t v = e2e_json_int(list->items[0], key, -1);
    e2e_json_free(j);
    return v;
}

/* Item `i` of list `key` of a balances answer. */
static const e2e_json *item(const e2e_json *j, const char *key, size_t i)
{
    const e2e_json *list = e2e_json_get(j, key);
    e2e_assert(list != NULL && list->type == E2E_JSON_ARRAY && list->count > i,
               "balances has no %s item %zu", key, i);
    return list->items[i];
}

static uint64_t head_now(void)
{
    budget_client *c = e2e_client(&bd);
    uint64_t h = e2e_head(c);
    budget_client_close(c);
    return h;
}

/* Frame F of 3 mkr (KS); allocation A of 1 mkr from it to SON, approved; avrop V of 400 tkr
 * on A, approved. The clerk asks, the other identity decides. */
static void scenario(void)
{
    grant_frame("F", "KS", "3 mkr", "KS 2021-08-24 § 241");
    ctl_ok("allocate", "F", "--unit", "SON", "--amount", "1 mkr", "--purpose", "Fält", "--id", "A");
    ctl_ok_other("approve", "A", "--reference", "KS 2021-09-28 § 270", "--id", "A-ok");
    ctl_ok("avrop", "A", "--amount", "400 tkr", "--id", "V");
    ctl_ok_other("approve", "V", "--id", "V-ok");
}

/* ---- reductions -------------------------------------------------------------------------- */

Test(corrections, a_reduction_is_refused_over_its_limit_and_returns_the_money_once_approved)
{
    scenario();
    ctl_refused("insufficient_funds: allocation A can be reduced by at most 600 000,00 kr, not "
                "600 000,01 kr: of its 1 000 000,00 kr, 400 000,00 kr is called off",
                "reduce", "A", "600000,01 kr", "--reason", "Mindre behov");
    e2e_ctl_result usage;
    e2e_assert_int(ctl_argv(false, &usage, 3, ARGV("reduce", "A", "1 kr")), 2, "without --reason");
    e2e_assert(strstr(usage.err, "reduce: missing --reason") != NULL, "%s", usage.err);
    e2e_ctl_free(&usage);
    ctl_ok("reduce", "A", "600 tkr", "--reason", "Mindre behov", "--id", "R1");
    uint64_t requested = head_now();
    /* Reserved: no avrop, no second reduction can take the same krona. */
    ctl_refused("insufficient_funds", "avrop", "A", "--amount", "1 kr");
    ctl_refused("at most 0,00 kr", "reduce", "A", "1 kr", "--reason", "En till");
    ctl_refused("four-eyes", "approve", "R1");
    ctl_ok_other("approve", "R1", "--reference", "KS 2021-10-12 § 301", "--id", "R1-ok");

    e2e_json *j = balances_of("A", 0);
    const e2e_json *a = item(j, "allocations", 0);
    e2e_assert_int(e2e_json_int(a, "amount", -1), 40000000, "allocation amount after");
    e2e_assert_int(e2e_json_int(a, "reduced", -1), 60000000, "allocation reduced");
    e2e_assert_int(e2e_json_int(a, "reducing", -1), 0, "allocation reducing");
    e2e_assert_int(e2e_json_int(a, "available", -1), 0, "allocation available");
    e2e_json_free(j);
    e2e_assert_int(frame_figure("F", "allocated", 0), 40000000, "frame allocated");
    e2e_assert_int(frame_figure("F", "unallocated", 0), 260000000, "frame unallocated");

    /* As of the request, the allocation was whole and the reduction pending. */
    j = balances_of("A", requested);
    a = item(j, "allocations", 0);
    e2e_assert_int(e2e_json_int(a, "amount", -1), 100000000, "amount as of the request");
    e2e_assert_int(e2e_json_int(a, "reducing", -1), 60000000, "reducing as of the request");
    e2e_json_free(j);
    e2e_assert_int(frame_figure("F", "unallocated", requested), 200000000,
                   "unallocated as of the request");

    /* The frame's room is back: a new allocation takes it. */
    ctl_ok("allocate", "F", "--unit", "KFN", "--amount", "2,6 mkr", "--purpose", "Bibliotek");
    stop_cleanly();
}

Test(corrections, a_withdrawn_or_rejected_reduction_gives_its_reservation_back)
{
    scenario();
    ctl_ok("reduce", "A", "600 tkr", "--reason", "Mindre behov", "--id", "R1");
    ctl_refused_other("may not withdraw it", "withdraw", "R1");
    ctl_ok("withdraw", "R1", "--id", "R1-wd");
    ctl_ok("reduce", "A", "600 tkr", "--reason", "Mindre behov", "--id", "R2");
    ctl_ok_other("reject", "R2", "--id", "R2-no");
    ctl_refused_other("invalid_state: reduction R2 is rejected", "approve", "R2");
    e2e_json *j = balances_of("A", 0);
    const e2e_json *a = item(j, "allocations", 0);
    e2e_assert_int(e2e_json_int(a, "amount", -1), 100000000, "amount");
    e2e_assert_int(e2e_json_int(a, "reducing", -1), 0, "reducing");
    e2e_assert_int(e2e_json_int(a, "available", -1), 60000000, "available");
    e2e_json_free(j);
    stop_cleanly();
}

/* ---- reversals --------------------------------------------------------------------------- */

Test(corrections, a_reversal_of_the_whole_avrop_gives_the_allocation_its_available_back)
{
    scenario();
    ctl_ok("avrop", "A", "--amount", "1 kr", "--id", "V2");
    ctl_refused("invalid_state: avrop V2 is pending; only an approved avrop can be reversed",
                "reverse", "V2", "1 kr", "--reason", "Fel");
    ctl_refused("not_found: A-ok is a decision, not an avrop", "reverse", "A-ok", "1 kr",
                "--reason", "Fel");
    ctl_refused("not_found: no avrop A-ok", "reverse", "A-ok", "--reason", "Fel");
    ctl_ok("reverse", "V", "100 tkr", "--reason", "Fel konto", "--id", "X1");
    ctl_refused("insufficient_funds: avrop V can be reversed by at most 300 000,00 kr, not "
                "300 000,01 kr",
                "reverse", "V", "300000,01", "--reason", "Resten");
    /* Without an amount: all that is left, 300 tkr. */
    ctl_ok("reverse", "V", "--reason", "Resten", "--id", "X2");
    ctl_refused("nothing left to reverse", "reverse", "V", "--reason", "Igen");
    ctl_ok_other("approve", "X1", "--id", "X1-ok");
    ctl_ok_other("approve", "X2", "--id", "X2-ok");

    e2e_json *j = balances_of("A", 0);
    const e2e_json *a = item(j, "allocations", 0);
    e2e_assert_int(e2e_json_int(a, "called_off", -1), 0, "called off after the reversals");
    e2e_assert_int(e2e_json_int(a, "available", -1), 99999900, "available after (V2 pending)");
    const e2e_json *v = item(j, "avrop", 0);
    e2e_assert_int(e2e_json_int(v, "amount", -1), 40000000, "avrop amount as requested");
    e2e_assert_int(e2e_json_int(v, "reversed", -1), 40000000, "avrop reversed");
    e2e_json_free(j);
    e2e_assert_int(frame_figure("F", "called_off", 0), 0, "frame called off");

    /* The allocation's history holds the reversals and their decisions. */
    e2e_ctl_result r;
    e2e_assert_int(ctl_argv(false, &r, 2, ARGV("history", "A")), 0, "history");
    e2e_assert(strstr(r.out, "avrop.reversal_requested") != NULL, "history: %s", r.out);
    e2e_assert(strstr(r.out, "X2-ok") != NULL, "history has the decision: %s", r.out);
    e2e_ctl_free(&r);
    stop_cleanly();
}

/* ---- duplicate grants -------------------------------------------------------------------- */

Test(corrections, the_same_grant_twice_is_refused_unless_intended)
{
    grant_frame("F1", "KS", "3 mkr", "KS 2021-08-24 § 241");
    uint64_t head = head_now();
    ctl_refused("conflict: frame F1 already grants 3 000 000,00 kr to KS for 2021 by the same "
                "decision",
                "grant", "--unit", "KS", "--year", "2021", "--amount", "3 mkr", "--title",
                "Samma igen", "--reference", "KS 2021-08-24 § 241", "--id", "F2");
    e2e_assert_int(head_now(), head, "head after a refused duplicate");
    /* A retry of the first grant with its id is its first answer, not a duplicate. */
    grant_frame("F1", "KS", "3 mkr", "KS 2021-08-24 § 241");
    e2e_assert_int(head_now(), head, "head after a retry");
    ctl_ok("grant", "--unit", "KS", "--year", "2021", "--amount", "3 mkr", "--title", "Samma igen",
           "--reference", "KS 2021-08-24 § 241", "--id", "F2", "--intended");
    e2e_assert_int(head_now(), head + 1, "head after an intended grant");
    stop_cleanly();
}

/* `intended` is a bool of frame.grant alone: anything else is refused and writes nothing. */
Test(corrections, intended_is_a_bool_that_only_a_grant_takes)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_write_result w;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 6);
    e2e_kv_str(&b, "id", "F1");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Ram");
    e2e_kv_str(&b, "intended", "yes");
    e2e_write(c, "frame.grant", &b, &w);
    e2e_assert(!w.ok && strcmp(w.code, "bad_request") == 0 &&
                   strcmp(w.message, "args.intended must be true or false") == 0,
               "a str intended: %s %s", w.code, w.message);
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "id", "R1");
    e2e_pack_str(&b, "intended");
    msgpack_pack_true(&b.pk);
    e2e_write(c, "allocation.reduce", &b, &w);
    e2e_assert(!w.ok && strcmp(w.code, "bad_request") == 0 &&
                   strstr(w.message, "takes no arg \"intended\"") != NULL,
               "intended on a reduction: %s %s", w.code, w.message);
    e2e_assert_int(e2e_head(c), U, "head after the refusals");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    stop_cleanly();
}
