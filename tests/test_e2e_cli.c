/*
 * End to end: budgetctl for the clerk at a terminal, against a real budgetd. Completion
 * candidates (and the bash script that asks for them), `pending` for two identities, "did you
 * mean", amounts in kronor in refusals, JSON errors, Swedish headers, --as-of a day, the
 * filters of watch and export, --wide, progress only on a terminal, and the socket's group
 * when a connection is refused for permissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e_util.h"

static e2e_daemon bd;

static void setup(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

#define TEST_TIMEOUT_S 90
TestSuite(cli, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(const char *)))

static int ctl_as_argv(const e2e_identity *who, e2e_ctl_result *r, int argc,
                       const char *const *argv)
{
    e2e_assert(e2e_ctl_argv_as(&bd, who, r, argc, argv) == 0, "budgetctl %s could not be run",
               argv[0]);
    return r->exit_code;
}

/* Runs budgetctl (as root, or as the other identity); returns its exit status. */
#define ctl(r, ...) ctl_as_argv(NULL, (r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))
#define ctl_other(r, ...) ctl_as_argv(&e2e_other, (r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* Runs budgetctl, which must exit 0, and frees its result. */
#define ctl_ok(...)                                                                                \
    do {                                                                                           \
        e2e_ctl_result ok_;                                                                        \
        int code_ = ctl(&ok_, __VA_ARGS__);                                                        \
        e2e_assert(code_ == 0, "budgetctl exited %d: %s%s", code_, ok_.out, ok_.err);              \
        e2e_ctl_free(&ok_);                                                                        \
    } while (0)
#define ctl_other_ok(...)                                                                          \
    do {                                                                                           \
        e2e_ctl_result ok_;                                                                        \
        int code_ = ctl_other(&ok_, __VA_ARGS__);                                                  \
        e2e_assert(code_ == 0, "budgetctl as other exited %d: %s%s", code_, ok_.out, ok_.err);     \
        e2e_ctl_free(&ok_);                                                                        \
    } while (0)

static bool has(const char *text, const char *part)
{
    return text != NULL && strstr(text, part) != NULL;
}

/* One line of `text` equal to `line`. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p != NULL && *p != '\0';) {
        const char *end = strchr(p, '\n');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return true;
        p = end != NULL ? end + 1 : NULL;
    }
    return false;
}

/* Every frame of these tests is made here, so that a step the daemon comes to require before
 * a grant (a unit registered first) is one edit. */
static void grant_frame(const char *id, const char *unit, const char *amount)
{
    ctl_ok("grant", "--unit", unit, "--year", "2021", "--amount", amount, "--title",
           "Utökat trygghetsarbete", "--decision", E2E_DECISION, "--id", id);
}

#define LONG_PURPOSE                                                                                    \
    "Förstärka det nyupprättade områdesarbetet för trygghetsskapande åtgärder, bland annat att " \
    "identifiera och omhänderta barn och ungdomar"

/* KS 3 mkr; SON 2,25 mkr proposed (pending) by root, KFN 0,5 mkr proposed and approved. */
static void small_ledger(void)
{
    grant_frame("ks-2021", "KS", "3 mkr");
    ctl_ok("allocate", "ks-2021", "--unit", "SON", "--amount", "2,25 mkr", "--purpose",
           LONG_PURPOSE, "--id", "alloc-son");
    ctl_ok("allocate", "ks-2021", "--unit", "KFN", "--amount", "0,5 mkr", "--purpose",
           "Fritidsverksamhet", "--id", "alloc-kfn");
    ctl_other_ok("approve", "alloc-kfn", "--id", "dec-kfn", "--decision", E2E_DECISION);
}

/* ---- completion ------------------------------------------------------------------------- */

Test(cli, completion_candidates_come_from_the_table_and_the_daemon)
{
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "complete", "--", "pe"), 0, "complete pe");
    e2e_assert_str(r.out, "pending\n", "commands starting with pe");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "complete", "--", "balances", "--a"), 0, "complete options");
    e2e_assert(has_line(r.out, "--allocation") && has_line(r.out, "--as-of") &&
                   !has_line(r.out, "--amount"),
               "balances' options: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "complete", "--", "report", "--d"), 0, "complete report's options");
    e2e_assert_str(r.out, "--decided-by\n", "report's options starting with --d");
    e2e_ctl_free(&r);

    e2e_assert_int(ctl(&r, "complete", "--", "allocate", "ks-2021", "--unit", ""), 0, "units");
    e2e_assert(!has_line(r.out, "SON"), "no unit before any was used: %s", r.out);
    e2e_ctl_free(&r);
    small_ledger();
    e2e_assert_int(ctl(&r, "complete", "--", "allocate", "ks-2021", "--unit", ""), 0, "units");
    e2e_assert(has_line(r.out, "KS") && has_line(r.out, "SON") && has_line(r.out, "KFN"),
               "unit codes from the daemon: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "complete", "--", "approve", ""), 0, "targets");
    e2e_assert(has_line(r.out, "alloc-son") && !has_line(r.out, "alloc-kfn"),
               "approve offers what is pending, not what is decided: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "complete", "--", "adjust", "k"), 0, "frames");
    e2e_assert_str(r.out, "ks-2021\n", "adjust offers frames");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "complete", "--", "export", ""), 0, "export WHAT");
    e2e_assert_str(r.out, "events\nbalances\n", "export's first word");
    e2e_ctl_free(&r);
}

/* Runs `script` in bash (no startup files) with `budgetctl` meaning the one under test and its
 * socket in $BUDGETD_SOCKET; returns what it printed. */
static char *bash_output(const char *script)
{
    char command[4096];
    snprintf(command, sizeof(command),
             "BUDGETD_SOCKET='%s' bash --norc --noprofile -c '"
             "source %s/dist/budgetctl.bash; %s' 2>&1",
             bd.socket, BUDGET_SOURCE_DIR, script);
    FILE *p = popen(command, "r");
    e2e_assert(p != NULL, "bash could not be run");
    static char out[8192];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    e2e_assert(pclose(p) == 0, "bash failed: %s", out);
    return out;
}

Test(cli, bash_completion_fills_compreply)
{
    small_ledger();
    char script[1024];
    snprintf(script, sizeof(script),
             "COMP_WORDS=(%s allocate ks-2021 --unit S); COMP_CWORD=4; _budgetctl; "
             "printf \"<%%s>\\n\" \"${COMPREPLY[@]}\"",
             BUDGETCTL_PATH);
    char *out = bash_output(script);
    e2e_assert_str(out, "<SON>\n", "COMPREPLY for --unit S");
    snprintf(script, sizeof(script),
             "COMP_WORDS=(%s wat); COMP_CWORD=1; _budgetctl; printf \"<%%s>\\n\" "
             "\"${COMPREPLY[@]}\"",
             BUDGETCTL_PATH);
    out = bash_output(script);
    e2e_assert_str(out, "<watch>\n", "COMPREPLY for a command");
    out = bash_output("complete -p budgetctl");
    e2e_assert(has(out, "-F _budgetctl budgetctl"), "the script registers itself: %s", out);
}

/* ---- pending ---------------------------------------------------------------------------- */

/* The ids in the JSON array `key` of pending's --json answer, joined by spaces. */
static void pending_ids(const e2e_ctl_result *r, const char *key, char *out, size_t size)
{
    e2e_json *j = e2e_json_parse(r->out, r->out_len);
    e2e_assert(j != NULL, "pending --json printed no JSON: %s", r->out);
    const e2e_json *list = e2e_json_get(j, key);
    e2e_assert(list != NULL && list->type == E2E_JSON_ARRAY, "no %s in %s", key, r->out);
    out[0] = '\0';
    for (size_t i = 0; i < list->count; i++) {
        size_t at = strlen(out);
        snprintf(out + at, size - at, "%s%s", at ? " " : "", e2e_json_str(list->items[i], "id"));
    }
    e2e_json_free(j);
}

static void expect_pending(const e2e_identity *who, const char *to_decide, const char *waiting)
{
    e2e_ctl_result r;
    char ids[512];
    e2e_assert_int(ctl_as_argv(who, &r, 2, ARGV("--json", "pending")), 0, "pending --json");
    pending_ids(&r, "to_decide", ids, sizeof(ids));
    e2e_assert_str(ids, to_decide, "waiting for this identity's decision");
    pending_ids(&r, "waiting_for_others", ids, sizeof(ids));
    e2e_assert_str(ids, waiting, "sent by this identity, waiting for others");
    e2e_ctl_free(&r);
}

Test(cli, pending_shows_each_identity_its_side)
{
    grant_frame("ks-2021", "KS", "3 mkr");
    ctl_ok("allocate", "ks-2021", "--unit", "SON", "--amount", "1 mkr", "--purpose", "SON", "--id",
           "a-root");
    ctl_other_ok("allocate", "ks-2021", "--unit", "KFN", "--amount", "0,5 mkr", "--purpose", "KFN",
                 "--id", "a-other");
    expect_pending(NULL, "a-other", "a-root");
    expect_pending(&e2e_other, "a-root", "a-other");

    ctl_other_ok("approve", "a-root", "--id", "d-1", "--decision", E2E_DECISION);
    ctl_ok("avrop", "a-root", "--amount", "400 tkr", "--id", "v-root");
    expect_pending(NULL, "a-other", "v-root");
    expect_pending(&e2e_other, "v-root", "a-other");

    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "pending"), 0, "pending");
    e2e_assert(has(r.out, "Waiting for you to decide") && has(r.out, "a-other") &&
                   has(r.out, "Waiting for others to decide") && has(r.out, "v-root") &&
                   has(r.out, "400 000,00 kr") && !has(r.out, "d-1"),
               "pending as tables: %s", r.out);
    e2e_ctl_free(&r);
    ctl_ok("withdraw", "v-root");
    ctl_ok("reject", "a-other", "--id", "d-2", "--decision", E2E_DECISION);
    expect_pending(NULL, "", "");
    expect_pending(&e2e_other, "", "");
}

/* ---- did you mean, help --------------------------------------------------------------------- */

Test(cli, did_you_mean_commands_options_and_units)
{
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "balnces"), 2, "a misspelt command");
    e2e_assert(has(r.err, "did you mean balances?"), "command: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "balances", "--unti", "KS"), 2, "a misspelt option");
    e2e_assert(has(r.err, "did you mean --unit?"), "option: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "approve", "x", "--amount", "1"), 2, "an option approve lacks");
    e2e_assert(!has(r.err, "did you mean"), "nothing near --amount for approve: %s", r.err);
    e2e_ctl_free(&r);

    small_ledger();
    e2e_assert_int(ctl(&r, "balances", "--unit", "SNO"), 0, "balances of an unknown unit");
    e2e_assert(has(r.err, "no unit SNO in the ledger; did you mean SON?"), "unit: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "events", "--unit", "kfn"), 0, "events of an unknown unit");
    e2e_assert(has(r.err, "did you mean KFN?"), "unit in another case: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--unit", "SNO"), 0, "export of an unknown unit");
    e2e_assert(has(r.err, "did you mean SON?"), "export: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "balances", "--unit", "SON"), 0, "balances of a known unit");
    e2e_assert(!has(r.err, "did you mean"), "a known unit: %s", r.err);
    e2e_ctl_free(&r);
}

Test(cli, approve_help_shows_only_what_approve_takes)
{
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "approve", "--help"), 0, "approve --help");
    e2e_assert(has(r.out, "--reference") && has(r.out, "TARGET") && has(r.out, "--note"),
               "approve's own options: %s", r.out);
    e2e_assert(!has(r.out, "AMOUNT") && !has(r.out, "--amount") && !has(r.out, "--unit") &&
                   !has(r.out, "mkr"),
               "nothing approve does not take: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "avrop", "--help"), 0, "avrop --help");
    e2e_assert(has(r.out, "AMOUNT: "), "avrop explains amounts: %s", r.out);
    e2e_ctl_free(&r);
}

/* ---- refusals ------------------------------------------------------------------------------- */

Test(cli, refusals_say_what_is_left_in_kronor)
{
    small_ledger();
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "allocate", "ks-2021", "--unit", "KS", "--amount", "1 mkr", "--purpose",
                       "För mycket"),
                   1, "an allocation over the frame");
    e2e_assert(has(r.err, "insufficient_funds: allocation of 1 000 000,00 kr does not fit frame "
                          "ks-2021: 2 750 000,00 kr of 3 000 000,00 kr approved or pending; "
                          "250 000,00 kr left"),
               "kronor, and what is left: %s", r.err);
    e2e_assert(!has(r.err, "öre") && !has(r.err, "alloc-"),
               "no öre, and no generated id that was never created: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "allocate", "ks-2021", "--unit", "KS", "--amount", "1 mkr", "--purpose",
                       "För mycket", "--id", "alloc-named"),
                   1, "the same with an id given");
    e2e_assert(has(r.err, "allocation alloc-named of 1 000 000,00 kr"),
               "an id the clerk gave is named: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "avrop", "alloc-kfn", "--amount", "600 tkr"), 1, "an avrop over");
    e2e_assert(has(r.err, "0,00 kr of 500 000,00 kr called off or pending; 500 000,00 kr left") &&
                   !has(r.err, "avrop-"),
               "the avrop's refusal: %s", r.err);
    e2e_ctl_free(&r);
}

/* The one line of JSON on stderr: {"error": {"code", "message"}, "exit"}; its code. */
static void expect_json_error(const e2e_ctl_result *r, const char *code, int status)
{
    e2e_json *j = e2e_json_parse(r->err, r->err_len);
    e2e_assert(j != NULL && r->err_len > 0 && r->err[r->err_len - 1] == '\n' &&
                   memchr(r->err, '\n', r->err_len) == r->err + r->err_len - 1,
               "stderr is not one line of JSON: %s", r->err);
    const e2e_json *error = e2e_json_get(j, "error");
    e2e_assert(error != NULL, "no error in %s", r->err);
    e2e_assert_str(e2e_json_str(error, "code"), code, "the error's code");
    e2e_assert(e2e_json_str(error, "message")[0] != '\0', "a message: %s", r->err);
    e2e_assert_int(e2e_json_int(j, "exit", -1), status, "the exit status in the JSON");
    e2e_assert_int(r->exit_code, status, "the exit status");
    e2e_json_free(j);
}

Test(cli, json_errors_are_json_on_stderr)
{
    small_ledger();
    e2e_ctl_result r;
    ctl(&r, "--json", "balances", "--year", "12");
    expect_json_error(&r, "usage", 2);
    e2e_ctl_free(&r);
    ctl(&r, "balances", "--json", "--frame", "x", "--unit", "KS");
    expect_json_error(&r, "usage", 2);
    e2e_ctl_free(&r);
    ctl(&r, "--json", "allocate", "ks-2021", "--unit", "KS", "--amount", "1 mkr", "--purpose", "x");
    expect_json_error(&r, "insufficient_funds", 1);
    e2e_assert(!has(r.err, "alloc-"), "no generated id: %s", r.err);
    e2e_ctl_free(&r);
    ctl(&r, "--json", "approve", "no-such", "--decision", E2E_DECISION);
    expect_json_error(&r, "not_found", 1);
    e2e_ctl_free(&r);
    e2e_daemon_kill(&bd);
    ctl(&r, "--json", "hello");
    expect_json_error(&r, "connection", 3);
    e2e_ctl_free(&r);
}

/* ---- language and width ----------------------------------------------------------------- */

Test(cli, swedish_headers_by_option_and_by_locale)
{
    small_ledger();
    e2e_ctl_result r;
    unsetenv("LC_ALL");
    unsetenv("LC_MESSAGES");
    setenv("LANG", "C.UTF-8", 1);
    ctl_ok("balances"); /* runs */
    e2e_assert_int(ctl(&r, "balances"), 0, "balances");
    e2e_assert(has(r.out, "GRANTED") && has(r.out, "Frames") && !has(r.out, "BEVILJAT"),
               "English by default: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "--swedish", "balances"), 0, "balances --swedish");
    e2e_assert(has(r.out, "Per seq 7") && has(r.out, "Ramar") && has(r.out, "BEVILJAT") &&
                   has(r.out, "Fördelningar") && has(r.out, "ÄNDAMÅL") && has(r.out, "MINSKAS") &&
                   !has(r.out, "GRANTED") && !has(r.out, "REDUC"),
               "Swedish headers: %s", r.out);
    e2e_ctl_free(&r);
    setenv("LANG", "sv_SE.UTF-8", 1);
    e2e_assert_int(ctl(&r, "balances"), 0, "balances in a Swedish locale");
    e2e_assert(has(r.out, "BEVILJAT") && has(r.out, "Enheter, per budgetår"), "the locale: %s",
               r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "balances"), 0, "export in a Swedish locale");
    e2e_assert(strncmp(r.out, "slag;id;enhet;år;ram", 20) == 0, "CSV headers: %.80s", r.out);
    e2e_ctl_free(&r);
    setenv("LANG", "C.UTF-8", 1);
}

Test(cli, wide_cuts_no_text)
{
    small_ledger();
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "balances"), 0, "balances");
    e2e_assert(!has(r.out, LONG_PURPOSE) && has(r.out, "…"), "cut by default: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "--wide", "balances"), 0, "balances --wide");
    e2e_assert(has(r.out, LONG_PURPOSE) && !has(r.out, "…"), "whole with --wide: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "pending", "--wide"), 0, "pending --wide");
    e2e_assert(has(r.out, LONG_PURPOSE), "pending with --wide: %s", r.out);
    e2e_ctl_free(&r);
}

/* ---- --as-of a day, filters ----------------------------------------------------------------- */

static void day_text(int days_from_today, char *out, size_t size)
{
    e2e_assert(size >= 11, "room for a day");
    e2e_day_text(0, days_from_today, out);
}

Test(cli, as_of_takes_a_day_everywhere)
{
    small_ledger();
    char today[16], yesterday[16];
    day_text(0, today, sizeof(today));
    day_text(-1, yesterday, sizeof(yesterday));
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "balances", "--as-of", today), 0, "balances as of today");
    /* Setup's three registrations and the small ledger's four events. */
    e2e_assert(strncmp(r.out, "As of seq 7\n", 12) == 0, "today is the head: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "balances", "--as-of", yesterday), 0, "balances as of yesterday");
    e2e_assert(strncmp(r.out, "As of seq 0\n", 12) == 0 && !has(r.out, "ks-2021"),
               "yesterday, before the first event: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "--json", "export", "balances", "--format", "jsonl", "--as-of", today),
                   0, "export as of today");
    e2e_assert(has(r.out, "\"ks-2021\""), "export: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "report", "--as-of", today), 0, "report as of today");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "balances", "--as-of", "2021-02-30"), 2, "not a day");
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "balances", "--as-of", "2"), 0, "a seq still");
    e2e_assert(strncmp(r.out, "As of seq 2\n", 12) == 0, "seq 2: %s", r.out);
    e2e_ctl_free(&r);
}

Test(cli, watch_and_export_filter_by_unit_type_and_day)
{
    small_ledger();
    char today[16], tomorrow[16];
    day_text(0, today, sizeof(today));
    day_text(1, tomorrow, sizeof(tomorrow));
    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "export", "events", "--unit", "KFN"), 0, "export --unit");
    e2e_assert(has(r.out, "alloc-kfn") && !has(r.out, "alloc-son") && !has(r.out, "frame.granted"),
               "only KFN's events: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--type", "decision.approved", "--format", "jsonl"),
                   0, "export --type");
    e2e_assert(has(r.out, "dec-kfn") && !has(r.out, "frame.granted"), "only decisions: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--from", tomorrow), 0, "export --from tomorrow");
    e2e_assert(!has(r.out, "ks-2021"), "nothing from tomorrow: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "events", "--from", today, "--to", today), 0, "today");
    e2e_assert(has(r.out, "dec-kfn"), "today's events: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "export", "balances", "--type", "x"), 2, "balances take no --type");
    e2e_ctl_free(&r);

    /* KFN's first two events: its registration, then the allocation proposed to it. */
    e2e_assert_int(ctl(&r, "watch", "--unit", "KFN", "--count", "2"), 0, "watch --unit");
    e2e_assert(has(r.out, "unit.registered") && has(r.out, "allocation.proposed") &&
                   has(r.out, "alloc-kfn") && !has(r.out, "frame.granted") &&
                   !has(r.out, "alloc-son") && !has(r.out, "unit-SON"),
               "watch shows KFN's first two events: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl(&r, "--json", "watch", "--type", "decision.approved", "--count", "1"), 0,
                   "watch --type");
    e2e_assert(has(r.out, "\"dec-kfn\"") && !has(r.out, "frame.granted"), "decisions: %s", r.out);
    e2e_ctl_free(&r);
}

/* ---- progress --------------------------------------------------------------------------- */

/* Runs budgetctl with stderr on a pseudo-terminal and stdout on /dev/null; returns what the
 * terminal showed. */
static char *on_terminal(int argc, const char *const *argv)
{
    static char shown[16384];
    const char *full[24] = {BUDGETCTL_PATH, "--socket", bd.socket};
    int master = -1, slave = -1;
    e2e_assert(argc < 20 && openpty(&master, &slave, NULL, NULL, NULL) == 0, "no pty");
    for (int i = 0; i < argc; i++)
        full[3 + i] = argv[i];
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    fcntl(master, F_SETFD, FD_CLOEXEC);
    fcntl(slave, F_SETFD, FD_CLOEXEC);
    e2e_child child = {full, null, slave, NULL, NULL, NULL};
    pid_t pid = e2e_spawn(&child);
    close(null);
    e2e_assert(pid > 0, "cannot start budgetctl");
    close(slave);
    size_t n = 0;
    int64_t deadline = e2e_now_ms() + E2E_CTL_TIMEOUT_MS;
    for (;;) {
        struct pollfd p = {master, POLLIN, 0};
        if (poll(&p, 1, 100) > 0) {
            ssize_t got = read(master, shown + n, sizeof(shown) - 1 - n);
            if (got <= 0)
                break; /* EIO: the last writer closed the terminal */
            n += (size_t)got;
        } else if (e2e_now_ms() > deadline) {
            kill(pid, SIGKILL);
            break;
        }
    }
    shown[n] = '\0';
    int status = 0;
    waitpid(pid, &status, 0);
    close(master);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "budgetctl failed: %s", shown);
    return shown;
}

Test(cli, progress_only_on_a_terminal)
{
    small_ledger();
    char out[sizeof(bd.dir) + 32];
    snprintf(out, sizeof(out), "%s/export.csv", bd.dir);
    char *shown = on_terminal(4, ARGV("export", "events", "--output", out));
    e2e_assert(has(shown, "export: 7 of 7 events (100%)"), "progress on a terminal: %s", shown);
    e2e_assert(has(shown, "\r\033[K"), "the progress line is cleared: %s", shown);

    e2e_ctl_result r;
    e2e_assert_int(ctl(&r, "export", "events", "--output", out), 0, "export to a pipe");
    e2e_assert_str(r.err, "", "no progress when stderr is no terminal");
    e2e_ctl_free(&r);

    char copy[sizeof(bd.dir) + 32];
    snprintf(copy, sizeof(copy), "%s/copy", bd.dir);
    shown = on_terminal(2, ARGV("backup", copy));
    e2e_assert(has(shown, "backup: ") && has(shown, "bytes received"), "backup: %s", shown);
    shown = on_terminal(4, ARGV("audit", "verify", "--data", copy));
    e2e_assert(has(shown, "checking the chain: 7 events"), "offline verify: %s", shown);
    e2e_assert_int(ctl(&r, "audit", "verify", "--data", copy), 0, "offline verify to a pipe");
    e2e_assert_str(r.err, "", "no progress when stderr is no terminal");
    e2e_ctl_free(&r);
}

/* ---- permissions ------------------------------------------------------------------------ */

Test(cli, a_refused_connection_names_the_group_to_join)
{
    static const e2e_identity outsider = {4242, 4242, {0}, 0};
    e2e_ctl_result r;
    e2e_assert_int(ctl_as_argv(&outsider, &r, 1, ARGV("hello")), 3, "hello as an outsider");
    e2e_assert(has(r.err, "Permission denied") &&
                   has(r.err, "join the group nogroup, which the socket belongs to"),
               "the group: %s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(ctl_other(&r, "hello"), 0, "hello as a member of the group");
    e2e_ctl_free(&r);
}
