/*
 * End to end: decisions as data. A real budgetd, driven through budgetctl and through the
 * client library: a write that rests on a decision is refused without one and with one that is
 * not as clerks write it; the decision is shown where the event is; events are found by the
 * date of their decision; balances are asked as of a day of entry, and as decided by a day,
 * whenever it was entered, with what the rules forbid flagged rather than hidden.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

TestSuite(decisions, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ------------------------------------------------------------------------------- */

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(const char *)))

static int ctl_argv(e2e_ctl_result *r, bool other, int argc, const char *const *argv)
{
    int rc =
        other ? e2e_ctl_argv_as(&bd, &e2e_other, r, argc, argv) : e2e_ctl_argv(&bd, r, argc, argv);
    e2e_assert(rc == 0, "budgetctl %s could not be run", argv[0]);
    return r->exit_code;
}

/* budgetctl; its exit status (the caller frees r). */
#define ctl(r, ...) ctl_argv((r), false, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void ok_argv(bool other, int argc, const char *const *argv)
{
    e2e_ctl_result r;
    int code = ctl_argv(&r, other, argc, argv);
    e2e_assert(code == 0, "budgetctl %s exited %d: %s %s", argv[0], code, r.out, r.err);
    e2e_ctl_free(&r);
}

/* budgetctl that must exit 0; as the second identity for decisions (four-eyes). */
#define ok(...) ok_argv(false, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))
#define ok_other(...) ok_argv(true, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* budgetctl that must exit `code` with `said` in what it wrote on stderr. */
static void refused_argv(int code, const char *said, int argc, const char *const *argv)
{
    e2e_ctl_result r;
    int got = ctl_argv(&r, false, argc, argv);
    e2e_assert(got == code, "budgetctl %s exited %d, not %d: %s %s", argv[0], got, code, r.out,
               r.err);
    e2e_assert(strstr(r.err, said) != NULL, "budgetctl %s said \"%s\", not \"%s\"", argv[0], r.err,
               said);
    e2e_ctl_free(&r);
}

#define refused(code, said, ...) refused_argv((code), (said), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static uint64_t head(void)
{
    budget_client *c = e2e_client(&bd);
    uint64_t h = e2e_head(c);
    budget_client_close(c);
    return h;
}

/* `budgetctl balances --json ARGS...`, parsed. */
static e2e_json *balances_json_argv(int argc, const char *const *argv)
{
    const char *all[16] = {"balances", "--json"};
    e2e_assert(argc + 2 <= 16, "too many args");
    for (int i = 0; i < argc; i++)
        all[2 + i] = argv[i];
    e2e_ctl_result r;
    int code = ctl_argv(&r, false, argc + 2, all);
    e2e_assert(code == 0, "balances exited %d: %s", code, r.err);
    e2e_json *j = e2e_json_parse(r.out, r.out_len);
    e2e_assert(j != NULL, "balances --json printed no JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

#define balances_json(...) balances_json_argv(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* The only item of list `key`. */
static const e2e_json *only(const e2e_json *j, const char *key)
{
    const e2e_json *list = e2e_json_get(j, key);
    e2e_assert(list != NULL && list->type == E2E_JSON_ARRAY && list->count == 1, "%s: not one item",
               key);
    return list->items[0];
}

/* True when the item's "oddities" holds `name`. */
static bool odd(const e2e_json *item, const char *name)
{
    const e2e_json *list = e2e_json_get(item, "oddities");
    e2e_assert(list != NULL && list->type == E2E_JSON_ARRAY, "no oddities list");
    for (size_t i = 0; i < list->count; i++)
        if (list->items[i]->type == E2E_JSON_STRING && strcmp(list->items[i]->string, name) == 0)
            return true;
    return false;
}

/* Today, UTC, as YYYY-MM-DD, moved by `days`. */
static void today(char out[11], int days)
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

/* ---- refusals ------------------------------------------------------------------------------ */

Test(decisions, budgetctl_refuses_a_write_without_a_decision_or_with_a_malformed_one)
{
    refused(2, "grant: missing --decision", "grant", "--unit", "KS", "--year", "2021", "--amount",
            "3 mkr", "--title", "Ram", "--reference", "KS 2021-08-24 § 241");
    refused(2, "adjust: missing --decision", "adjust", "F", "--delta", "+1 kr", "--reason", "R");
    refused(2, "approve: missing --decision", "approve", "A");
    refused(2, "reject: missing --decision", "reject", "A");
    /* Each malformed part names itself and shows the form. */
    const struct {
        const char *decision, *said;
    } bad[] = {
        {"KS 2021-02-29 § 241", "a real day as YYYY-MM-DD"},
        {"ks 2021-08-24 § 241", "the body must be 1..16 of A-Z"},
        {"KS 2021-08-24 241", "one space and §"},
        {"KS 24/8 2021 § 241", "a real day as YYYY-MM-DD"},
        {"KS 2021-08-24 § ", "the paragraph after §"},
        {"KS 2021-08-24 § 241 dnr", "the diary number after \"dnr\""},
        {"", "the body must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        refused(2, bad[i].said, "grant", "--unit", "KS", "--year", "2021", "--amount", "3 mkr",
                "--title", "Ram", "--decision", bad[i].decision);
        refused(2, "write BODY YYYY-MM-DD § PARAGRAPH [dnr DIARY-NUMBER]", "approve", "A",
                "--decision", bad[i].decision);
    }
    e2e_assert_int(head(), U, "nothing was written");
}

Test(decisions, the_daemon_refuses_a_write_without_its_decision_and_writes_nothing)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_write_result w;
    e2e_buf_init(&b);

    msgpack_pack_map(&b.pk, 5);
    e2e_kv_str(&b, "id", "f1");
    e2e_kv_str(&b, "unit", "KS");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "amount", 100);
    e2e_kv_str(&b, "title", "Utan beslut");
    e2e_write(c, "frame.grant", &b, &w);
    e2e_assert(!w.ok, "a grant without a decision was written");
    e2e_assert_str(w.code, "bad_request", "code");
    e2e_assert(strstr(w.message, "frame.grant rests on a decision and needs args.decision_body"),
               "%s", w.message);

    /* A decision of a day that does not exist; then of one that does. */
    const char *days[] = {"2021-02-29", "2024-02-29"};
    for (int k = 0; k < 2; k++) {
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 8);
        e2e_kv_str(&b, "id", "f1");
        e2e_kv_str(&b, "unit", "KS");
        e2e_kv_int(&b, "year", 2021);
        e2e_kv_int(&b, "amount", 100);
        e2e_kv_str(&b, "title", "Skottdag");
        e2e_kv_str(&b, "decision_body", "KS");
        e2e_kv_str(&b, "decision_date", days[k]);
        e2e_kv_str(&b, "decision_paragraph", "241");
        e2e_write(c, "frame.grant", &b, &w);
        if (k == 0) {
            e2e_assert(!w.ok, "a decision of 2021-02-29 was written");
            e2e_assert_str(w.code, "bad_request", "code");
            e2e_assert(strstr(w.message, "args.decision_date must be a real day"), "%s", w.message);
            e2e_assert_int(e2e_head(c), U, "nothing was written");
        } else {
            e2e_assert(w.ok, "a decision of 2024-02-29 was refused: %s", w.message);
        }
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

/* ---- shown and found --------------------------------------------------------------------------
 */

Test(decisions, the_decision_is_shown_with_its_event_and_events_are_found_by_its_date)
{
    ok("grant", "--id", "ks21", "--unit", "KS", "--year", "2021", "--amount", "3 mkr", "--title",
       "Trygghet", "--decision", "KS 2021-08-24 §241 dnr KS 2021/123");
    ok("grant", "--id", "ks22", "--unit", "KS", "--year", "2022", "--amount", "2 mkr", "--title",
       "Plan", "--decision", "KF 2022-01-10 § 3");

    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "history", "ks21"), 0, "history");
    e2e_assert(strstr(r.out, "decision=\"KS 2021-08-24 § 241 dnr KS 2021/123\""), "%s", r.out);
    e2e_assert(strstr(r.out, "decision_body") == NULL, "the parts are shown as one: %s", r.out);
    e2e_ctl_free(&r);

    /* Decided in 2022, entered today: found by the decision's date, not by the entry's. */
    e2e_assert_int(ctl(&r, "events", "--decided-from", "2022-01-01", "--decided-to", "2022-12-31"),
                   0, "events --decided-from");
    e2e_assert(strstr(r.out, "ks22") != NULL && strstr(r.out, "ks21") == NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "events", "--decided-to", "2021-08-24"), 0, "events --decided-to");
    e2e_assert(strstr(r.out, "ks21") != NULL && strstr(r.out, "ks22") == NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "events", "--decided-from", "2022-01-11"), 0, "nothing decided later");
    e2e_assert(strstr(r.out, "ks2") == NULL, "%s", r.out);
    e2e_ctl_free(&r);
    refused(2, "--decided-from: not a real day", "events", "--decided-from", "2022-02-30");
}

/* ---- as of a day, and decided by a day --------------------------------------------------- */

Test(decisions, balances_as_of_a_day_of_entry)
{
    ok("grant", "--id", "f1", "--unit", "KS", "--year", "2021", "--amount", "3 mkr", "--title",
       "Ram", "--decision", E2E_DECISION);
    ok("grant", "--id", "f2", "--unit", "SON", "--year", "2021", "--amount", "1 mkr", "--title",
       "Ram", "--decision", E2E_DECISION);
    char day[11];
    today(day, -1);
    e2e_json *j = balances_json("--as-of", day);
    e2e_assert_int(e2e_json_int(j, "as_of", -1), 0, "as of yesterday: before the first event");
    e2e_assert(e2e_json_get(j, "frames")->count == 0, "no frame yesterday");
    e2e_json_free(j);
    today(day, 0);
    j = balances_json("--as-of", day);
    e2e_assert_int(e2e_json_int(j, "as_of", -1), U + 2, "as of today: every event");
    e2e_assert(e2e_json_get(j, "frames")->count == 2, "both frames today");
    e2e_json_free(j);
    refused(2, "--as-of: a seq (1 or more) or a real day", "balances", "--as-of", "2021-02-29");

    /* export and report take the day too. */
    e2e_ctl_result r;
    today(day, -1);
    e2e_assert_int(ctl(&r, "export", "balances", "--format", "jsonl", "--as-of", day), 0, "export");
    e2e_assert(strstr(r.out, "\"f1\"") == NULL, "no frame yesterday: %s", r.out);
    e2e_ctl_free(&r);
    today(day, 0);
    e2e_assert_int(ctl(&r, "export", "balances", "--format", "jsonl", "--as-of", day), 0, "export");
    e2e_assert(strstr(r.out, "\"f1\"") != NULL, "f1 today: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "report", "--as-of", day), 0, "report as of today");
    e2e_assert(strstr(r.out, "data-as-of=\"5\"") != NULL, "the report stands at seq U + 2");
    e2e_ctl_free(&r);
}

/*
 * KS's frame of 1 mkr (2021-08-24) is raised by 1 mkr (decided 2021-10-01) and 1,5 mkr of it
 * allocated to SON (approved by a decision of 2021-09-15): entered in that order, so every rule
 * held. Decided by 2021-09-30, the approval counts and the raise does not: more allocated than
 * granted, which the answer shows and flags.
 */
Test(decisions, decided_by_counts_decisions_by_their_date_and_flags_what_the_rules_forbid)
{
    ok("grant", "--id", "f1", "--unit", "KS", "--year", "2021", "--amount", "1 mkr", "--title",
       "Ram", "--decision", "KS 2021-08-24 § 241");
    ok("adjust", "f1", "--id", "f1-up", "--delta", "+1 mkr", "--reason", "Tillägg", "--decision",
       "KS 2021-10-01 § 280");
    ok("allocate", "f1", "--id", "a1", "--unit", "SON", "--amount", "1,5 mkr", "--purpose", "Tr");
    ok_other("approve", "a1", "--id", "a1-ok", "--decision", "KS 2021-09-15 § 260");

    e2e_json *j = balances_json("--decided-by", "2021-09-30");
    e2e_assert_str(e2e_json_str(j, "decided_by"), "2021-09-30", "decided_by");
    const e2e_json *f = only(j, "frames");
    e2e_assert_int(e2e_json_int(f, "granted", -1), 100000000, "granted by then");
    e2e_assert_int(e2e_json_int(f, "allocated", -1), 150000000, "allocated by then");
    e2e_assert(odd(f, "allocated_over_granted"), "the frame is flagged");
    e2e_assert_int(e2e_json_int(j, "oddities", -1), 1, "one item flagged");
    e2e_assert_str(e2e_json_str(only(j, "allocations"), "status"), "approved", "approved by then");
    e2e_json_free(j);

    /* Once the raise is decided too, nothing is odd. */
    j = balances_json("--decided-by", "2021-10-01");
    f = only(j, "frames");
    e2e_assert_int(e2e_json_int(f, "granted", -1), 200000000, "granted with the raise");
    e2e_assert(!odd(f, "allocated_over_granted"), "not flagged");
    e2e_assert_int(e2e_json_int(j, "oddities", -1), 0, "nothing flagged");
    e2e_json_free(j);

    /* Before the approval's date the allocation is pending. */
    j = balances_json("--decided-by", "2021-09-14");
    f = only(j, "frames");
    e2e_assert_int(e2e_json_int(f, "allocated", -1), 0, "nothing allocated yet");
    e2e_assert_int(e2e_json_int(f, "pending", -1), 150000000, "pending");
    e2e_assert_str(e2e_json_str(only(j, "allocations"), "status"), "pending", "pending then");
    e2e_json_free(j);

    /* Before the grant: the frame only for the request that draws on it, flagged. */
    j = balances_json("--decided-by", "2021-08-01");
    f = only(j, "frames");
    e2e_assert_int(e2e_json_int(f, "granted", -1), 0, "nothing granted yet");
    e2e_assert(odd(f, "granted_later"), "flagged as granted later");
    e2e_json_free(j);

    /* The present knows no oddity and says nothing of them. */
    j = balances_json();
    e2e_assert(e2e_json_get(j, "oddities") == NULL, "no oddities without decided_by");
    e2e_assert(e2e_json_get(only(j, "frames"), "oddities") == NULL, "none on a frame");
    e2e_json_free(j);

    /* The table flags it too. */
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "balances", "--decided-by", "2021-09-30"), 0, "balances");
    e2e_assert(strstr(r.out, "Decided by 2021-09-30"), "%s", r.out);
    e2e_assert(strstr(r.out, "f1 !allocated_over_granted"), "%s", r.out);
    e2e_ctl_free(&r);
    refused(2, "--decided-by: not a real day", "balances", "--decided-by", "2021-9-30");
}
