/*
 * End to end: budget years with plan years (budget.adopt) and the units × years view, through
 * budgetctl against a real budgetd. The decision of the source document works the efforts into
 * "budget 2022 med plan 2023–2027": KS's 2021 frame is continued by the 2022 adoption, and the
 * 2023 adoption changes a plan amount.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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

TestSuite(e2e_years, .init = setup, .fini = teardown, .timeout = 90);

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(const char *)))

static int ctl_run_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    e2e_assert(e2e_ctl_argv(&bd, r, argc, argv) == 0, "budgetctl %s could not be run", argv[0]);
    return r->exit_code;
}
#define ctl_run(r, ...) ctl_run_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void ctl_ok_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    int code = ctl_run_argv(r, argc, argv);
    e2e_assert(code == 0, "budgetctl %s exited %d; stdout: %s; stderr: %s", argv[0], code, r->out,
               r->err);
}
#define ctl_ok(r, ...) ctl_ok_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void ctl_ok_other_argv(e2e_ctl_result *r, int argc, const char *const *argv)
{
    e2e_assert(e2e_ctl_argv_as(&bd, &e2e_other, r, argc, argv) == 0,
               "budgetctl %s could not be run", argv[0]);
    e2e_assert(r->exit_code == 0, "budgetctl %s as uid %u exited %d; stdout: %s; stderr: %s",
               argv[0], e2e_other.uid, r->exit_code, r->out, r->err);
}
#define ctl_ok_other(r, ...) ctl_ok_other_argv((r), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* The one place the tests' frames are made outside adoptions: a unit's frame for a year (its
 * unit registered by setup). */
static void unit_frame(const char *id, const char *unit, const char *year, const char *amount)
{
    e2e_ctl_result r;
    ctl_ok(&r, "grant", "--id", id, "--unit", unit, "--year", year, "--amount", amount, "--title",
           "Utökat trygghetsarbete", "--decision", "KS 2021-08-24 § 241");
    e2e_ctl_free(&r);
}

/* A lines file in the daemon's folder, named `name`, holding `text`; its path in `path`. */
static void lines_file(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", bd.dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Budget 2022 with plan 2023-2027, continuing KS's 2021 frame. */
static void adopt_2022(void)
{
    char path[256];
    unit_frame("ks-2021", "KS", "2021", "3 mkr");
    lines_file("2022.txt",
               "# enhet;budget 2022;plan 2023;2024;2025;2026;2027\n"
               "KS;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;continues=ks-2021\n"
               "SON;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr\n"
               "KFN;0,5 mkr;0,5 mkr;0,5 mkr;0;0;0\n",
               path, sizeof path);
    e2e_ctl_result r;
    ctl_ok(&r, "adopt", "--id", "b2022", "--year", "2022", "--plan", "2023-2027", "--decision",
           "KF 2021-11-22 § 150", "--title", "Utökat trygghetsarbete", "--lines", path);
    cr_assert(strstr(r.out, "budget.adopted b2022") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
}

/* Budget 2023 with plan 2024-2028: SON's 2024 plan goes from 1 mkr to 1,2 mkr. */
static void adopt_2023(void)
{
    char path[256];
    lines_file("2023.txt",
               "KS;1,6 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;continues=b2022:KS\n"
               "SON;1 mkr;1,2 mkr;1 mkr;1 mkr;1 mkr;1 mkr;continues=b2022:SON\n",
               path, sizeof path);
    e2e_ctl_result r;
    ctl_ok(&r, "adopt", "--id", "b2023", "--year", "2023", "--plan", "2024-2028", "--decision",
           "KF 2022-11-21 § 98 dnr KS 2022/77", "--title", "Utökat trygghetsarbete", "--lines",
           path);
    e2e_ctl_free(&r);
}

/* The row of (unit, year) of a `years --json` answer, which must be there. */
static const e2e_json *row_of(const e2e_json *view, const char *list, const char *unit,
                              int64_t year)
{
    const e2e_json *rows = e2e_json_get(view, list);
    e2e_assert(rows != NULL && rows->type == E2E_JSON_ARRAY, "no %s", list);
    for (size_t i = 0; i < rows->count; i++)
        if ((unit == NULL || strcmp(e2e_json_str(rows->items[i], "unit"), unit) == 0) &&
            e2e_json_int(rows->items[i], "year", 0) == year)
            return rows->items[i];
    e2e_assert(false, "no %s row %s %lld", list, unit ? unit : "", (long long)year);
    return NULL;
}

static e2e_json *years_json(const char *span, const char *as_of)
{
    e2e_ctl_result r;
    if (as_of != NULL)
        ctl_ok(&r, "--json", "years", span, "--as-of", as_of);
    else
        ctl_ok(&r, "--json", "years", span);
    e2e_json *j = e2e_json_parse(r.out, strlen(r.out));
    e2e_assert(j != NULL, "not JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

Test(e2e_years, a_later_adoption_shows_plan_against_adopted)
{
    adopt_2022();
    adopt_2023();
    e2e_json *j = years_json("2021-2024", NULL);
    /* 2023: the frame adopted for 2023 beside the plan of 2022's adoption. */
    const e2e_json *ks = row_of(j, "rows", "KS", 2023);
    e2e_assert_int(e2e_json_int(ks, "budget", -1), 160000000, "KS 2023 budget");
    e2e_assert_int(e2e_json_int(ks, "plan", -1), 150000000, "KS 2023 plan");
    e2e_assert_int(e2e_json_int(ks, "plan_by", -1), 2022, "KS 2023 planned by");
    /* 2024: 2023's adoption changed SON's plan; KFN's plan of 2022 stands. */
    const e2e_json *son = row_of(j, "rows", "SON", 2024);
    e2e_assert_int(e2e_json_int(son, "plan", -1), 120000000, "SON 2024 plan");
    e2e_assert_int(e2e_json_int(son, "plan_by", -1), 2023, "SON 2024 planned by");
    e2e_assert_int(e2e_json_int(row_of(j, "rows", "KFN", 2024), "plan", -1), 50000000, "KFN");
    /* Unspent is empty for open years; totals by year. */
    e2e_assert(e2e_json_get(son, "unspent")->type == E2E_JSON_NULL, "unspent of an open year");
    const e2e_json *t2022 = row_of(j, "totals", NULL, 2022);
    e2e_assert_int(e2e_json_int(t2022, "budget", -1), 300000000, "total budget 2022");
    e2e_assert_int(e2e_json_int(row_of(j, "totals", NULL, 2024), "plan", -1),
                   150000000 + 120000000 + 50000000, "total plan 2024");
    e2e_json_free(j);

    /* The thread: KS's 2021 frame, its 2022 continuation, its 2023 continuation. */
    e2e_ctl_result r;
    ctl_ok(&r, "history", "ks-2021");
    cr_assert(strstr(r.out, "budget.adopted") != NULL && strstr(r.out, "b2022") != NULL, "%s",
              r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "--json", "balances", "--frame", "b2023:KS");
    cr_assert(strstr(r.out, "\"continues\":\"b2022:KS\"") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "balances", "--frame", "b2023:KS");
    cr_assert(strstr(r.out, "CONTINUES") != NULL && strstr(r.out, "  b2022:KS  ") != NULL, "%s",
              r.out);
    e2e_ctl_free(&r);
}

Test(e2e_years, the_view_as_csv_and_as_a_table_cuts_no_text)
{
    adopt_2022();
    e2e_ctl_result r;
    ctl_ok(&r, "years", "2022-2023", "--csv", "--swedish");
    cr_assert(strncmp(r.out, "typ;enhet;namn;överordnad;år;",
                      strlen("typ;enhet;namn;överordnad;år;")) == 0,
              "%s", r.out);
    cr_assert(strstr(r.out, "\nenhet;SON;Social- och omsorgsnämnden;;2022;;1000000,00;;0,00;0,00;"
                            "0,00;\n") != NULL,
              "%s", r.out);
    cr_assert(strstr(r.out, "\nenhet;SON;Social- och omsorgsnämnden;;2023;2022;0,00;1000000,00;"
                            "0,00;0,00;0,00;\n") != NULL,
              "%s", r.out);
    cr_assert(strstr(r.out, "\ntotalt;;;;2023;;0,00;3000000,00;") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "years", "2022-2023", "--csv");
    cr_assert(strstr(r.out, "\nunit,SON,Social- och omsorgsnämnden,,2023,2022,0.00,1000000.00,0.00,"
                            "0.00,0.00,\n") != NULL,
              "%s", r.out);
    e2e_ctl_free(&r);

    /* A unit code of 32 characters shows whole in the table. */
    const char *long_unit = "SOCIAL-OCH-OMSORGSNAMNDEN-2022AB";
    e2e_register_units(&bd, NULL, long_unit, NULL);
    unit_frame("long", long_unit, "2022", "1 kr");
    ctl_ok(&r, "years", "2022-2022");
    cr_assert(strstr(r.out, long_unit) != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "1 000 000,00 kr") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "years", "2000-2020"), 2, "21 years");
    e2e_ctl_free(&r);
}

Test(e2e_years, plan_amounts_are_not_frames_and_the_frames_take_four_eyes)
{
    adopt_2022();
    e2e_ctl_result r;
    cr_assert_eq(ctl_run(&r, "allocate", "b2022", "--unit", "SON", "--amount", "1 kr", "--purpose",
                         "Trygghet"),
                 1);
    cr_assert(strstr(r.err, "not_found") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    /* The budget year's frame: an allocation proposed here is decided by another identity. */
    ctl_ok(&r, "allocate", "b2022:KS", "--id", "a-son", "--unit", "SON", "--amount", "1 mkr",
           "--purpose", "Områdesarbete");
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "approve", "a-son", "--decision", "KS 2022-02-01 § 12"), 1,
                 "four-eyes");
    cr_assert(strstr(r.err, "forbidden") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    ctl_ok_other(&r, "approve", "a-son", "--id", "a-son-ok", "--decision", "KS 2022-02-01 § 12");
    e2e_ctl_free(&r);
    ctl_ok(&r, "avrop", "a-son", "--id", "v-son", "--amount", "400 tkr");
    e2e_ctl_free(&r);
    ctl_ok_other(&r, "approve", "v-son", "--id", "v-son-ok", "--decision", "KS 2022-03-01 § 30");
    e2e_ctl_free(&r);
    e2e_json *j = years_json("2022-2023", NULL);
    const e2e_json *son = row_of(j, "rows", "SON", 2022);
    e2e_assert_int(e2e_json_int(son, "allocated", -1), 100000000, "SON 2022 allocated");
    e2e_assert_int(e2e_json_int(son, "called_off", -1), 40000000, "SON 2022 called off");
    e2e_assert_int(e2e_json_int(son, "available", -1), 60000000, "SON 2022 available");
    son = row_of(j, "rows", "SON", 2023);
    e2e_assert_int(e2e_json_int(son, "allocated", -1), 0, "a plan year holds nothing");
    e2e_json_free(j);
}

Test(e2e_years, a_bad_line_refuses_the_adoption_and_the_view_replays_as_of)
{
    adopt_2022();
    char path[256];
    lines_file("bad.txt", "KS;1 mkr;1 mkr\nSON;1 mkr;1 mkr;continues=nowhere\n", path, sizeof path);
    e2e_ctl_result r;
    cr_assert_eq(ctl_run(&r, "adopt", "--id", "b2023", "--year", "2023", "--plan", "2024-2024",
                         "--decision", "KF 2022-11-21 § 98", "--title", "T", "--lines", path),
                 1);
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "balances", "--frame", "b2023:KS"), 1, "a frame of a refused line");
    e2e_ctl_free(&r);
    /* A plan that does not follow the year, and a line of too few plan amounts: usage. */
    cr_assert_eq(ctl_run(&r, "adopt", "--year", "2023", "--plan", "2025-2026", "--decision",
                         "KF 2022-11-21 § 98", "--title", "T", "--lines", path),
                 2);
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "adopt", "--year", "2023", "--plan", "2024-2025", "--decision",
                         "KF 2022-11-21 § 98", "--title", "T", "--lines", path),
                 2);
    e2e_ctl_free(&r);

    adopt_2023(); /* seq 6: after the three units, the grant of 2021 and the adoption of 2022 */
    e2e_json *now = years_json("2023-2024", NULL);
    e2e_json *then = years_json("2023-2024", "5");
    e2e_assert_int(e2e_json_int(then, "as_of", -1), 5, "as_of");
    e2e_assert_int(e2e_json_int(row_of(then, "rows", "SON", 2024), "plan", -1), 100000000,
                   "SON 2024 as planned in 2022");
    e2e_assert_int(e2e_json_int(row_of(then, "rows", "KS", 2023), "budget", -1), 0,
                   "2023 not yet adopted");
    e2e_assert_int(e2e_json_int(row_of(now, "rows", "SON", 2024), "plan", -1), 120000000,
                   "SON 2024 now");
    e2e_json_free(then);

    /* After a restart the log replays to the same view. */
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0, "stop");
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);
    e2e_assert(e2e_daemon_restart(&bd) == 0, "restart");
    e2e_ctl_result a, b;
    ctl_ok(&a, "--json", "years", "2021-2028");
    e2e_json *again = years_json("2023-2024", NULL);
    e2e_assert_int(e2e_json_int(row_of(again, "rows", "SON", 2024), "plan", -1), 120000000,
                   "after restart");
    e2e_assert_int(e2e_json_int(row_of(again, "rows", "KS", 2023), "budget", -1),
                   e2e_json_int(row_of(now, "rows", "KS", 2023), "budget", -2), "KS 2023");
    ctl_ok(&b, "--json", "years", "2021-2028");
    cr_assert_str_eq(a.out, b.out);
    e2e_ctl_free(&a);
    e2e_ctl_free(&b);
    e2e_json_free(again);
    e2e_json_free(now);
}

/* ---- subtotals by the register's parents --------------------------------------------------- */

/* Verksamheter under SON and KFN (SON and KFN themselves are under none), and budget 2022 with
 * plan 2023 for them and for KS. */
static void adopt_verksamheter(void)
{
    static const char *const units[][3] = {
        {"SON-IFO", "Individ- och familjeomsorg", "SON"},
        {"SON-AO", "Äldreomsorg", "SON"},
        {"KFN-BIB", "Bibliotek", "KFN"},
    };
    e2e_ctl_result r;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        ctl_ok(&r, "unit", "register", units[i][0], "--name", units[i][1], "--kind", "verksamhet",
               "--parent", units[i][2]);
        e2e_ctl_free(&r);
    }
    char path[256];
    lines_file("v2022.txt",
               "KS;2 mkr;2 mkr\n"
               "SON-IFO;1,25 mkr;1,3 mkr\n"
               "SON-AO;3 mkr;3,1 mkr\n"
               "KFN-BIB;0,75 mkr;0\n",
               path, sizeof path);
    ctl_ok(&r, "adopt", "--id", "v2022", "--year", "2022", "--plan", "2023-2023", "--decision",
           "KF 2021-11-22 § 150", "--title", "Verksamheternas budget", "--lines", path);
    e2e_ctl_free(&r);
}

Test(e2e_years, subtotals_sum_the_rows_of_the_units_under_each_parent)
{
    adopt_verksamheter();
    e2e_json *j = years_json("2022-2023", NULL);
    const e2e_json *rows = e2e_json_get(j, "rows"), *subtotals = e2e_json_get(j, "subtotals");
    e2e_assert(rows != NULL && subtotals != NULL, "rows and subtotals");
    /* Each row has its registered name and parent. */
    e2e_assert_str(e2e_json_str(row_of(j, "rows", "SON-AO", 2022), "name"), "Äldreomsorg",
                   "SON-AO's name");
    e2e_assert_str(e2e_json_str(row_of(j, "rows", "SON-AO", 2022), "parent"), "SON",
                   "SON-AO's parent");
    e2e_assert_str(e2e_json_str(row_of(j, "rows", "KS", 2022), "parent"), "", "KS has none");
    /* SON and KFN in 2022 and 2023; each the sums of its rows, with the parent's name. */
    e2e_assert_int((int64_t)subtotals->count, 4, "subtotals");
    static const char *const keys[] = {"budget", "plan", "allocated", "called_off", "available"};
    for (size_t k = 0; k < subtotals->count; k++) {
        const e2e_json *t = subtotals->items[k];
        const char *parent = e2e_json_str(t, "parent");
        int64_t year = e2e_json_int(t, "year", 0);
        e2e_assert_str(e2e_json_str(t, "name"),
                       strcmp(parent, "SON") == 0 ? "Social- och omsorgsnämnden"
                                                  : "Kultur- och fritidsnämnden",
                       "the parent's registered name");
        for (size_t c = 0; c < sizeof keys / sizeof keys[0]; c++) {
            int64_t sum = 0;
            size_t summed = 0, valued = 0;
            for (size_t i = 0; i < rows->count; i++)
                if (strcmp(e2e_json_str(rows->items[i], "parent"), parent) == 0 &&
                    e2e_json_int(rows->items[i], "year", 0) == year) {
                    const e2e_json *v = e2e_json_get(rows->items[i], keys[c]);
                    valued += v != NULL && v->type == E2E_JSON_NUMBER;
                    sum += e2e_json_int(rows->items[i], keys[c], 0);
                    summed++;
                }
            e2e_assert(summed > 0, "subtotal %s %lld sums no row", parent, (long long)year);
            const e2e_json *v = e2e_json_get(t, keys[c]);
            e2e_assert(valued > 0 ? e2e_json_int(t, keys[c], -1) == sum
                                  : v != NULL && v->type == E2E_JSON_NULL,
                       "subtotal %s %lld %s is not %lld", parent, (long long)year, keys[c],
                       (long long)sum);
        }
    }
    e2e_json_free(j);
}

/* Öre of a CSV amount "1250000.00" (or with a decimal comma); 0 for "". */
static int64_t csv_ore(const char *s)
{
    char digits[32];
    size_t n = 0;
    for (; *s && n + 1 < sizeof digits; s++)
        if (*s != '.' && *s != ',')
            digits[n++] = *s;
    digits[n] = '\0';
    return n ? strtoll(digits, NULL, 10) : 0;
}

/* Splits the CSV line `line` (no quoted fields) on `sep` into at most 12 fields. */
static size_t csv_fields(char *line, char sep, char *fields[12])
{
    size_t n = 0;
    fields[n++] = line;
    for (char *p = line; *p && n < 12; p++)
        if (*p == sep) {
            *p = '\0';
            fields[n++] = p + 1;
        }
    return n;
}

/* The CSV of `years` checked line by line: the rows of the units under a parent come right
 * before its subtotal, which sums them, and each year ends with its total, which sums every
 * row of the year. Returns the number of subtotals seen. */
static size_t check_csv_groups(char *csv, char sep, const char *subtotal, const char *total)
{
    int64_t group[6] = {0}, year_sum[6] = {0};
    char group_parent[64] = "", *save = NULL;
    size_t rows_in_group = 0, subtotals = 0;
    strtok_r(csv, "\n", &save); /* the headers */
    for (char *line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[12];
        e2e_assert(csv_fields(line, sep, f) == 12, "12 fields: %s", line);
        if (strcmp(f[0], subtotal) == 0) {
            e2e_assert(rows_in_group > 0 && strcmp(group_parent, f[1]) == 0,
                       "subtotal %s right after the rows under it", f[1]);
            for (int k = 0; k < 5; k++)
                e2e_assert(csv_ore(f[6 + k]) == group[k], "subtotal %s %s column %d", f[1], f[4],
                           6 + k);
            subtotals++;
        } else if (strcmp(f[0], total) == 0) {
            for (int k = 0; k < 5; k++)
                e2e_assert(csv_ore(f[6 + k]) == year_sum[k], "total %s column %d", f[4], 6 + k);
            memset(year_sum, 0, sizeof year_sum);
        } else {
            if (f[3][0] == '\0' || strcmp(f[3], group_parent) != 0) {
                memset(group, 0, sizeof group);
                rows_in_group = 0;
            }
            snprintf(group_parent, sizeof group_parent, "%s", f[3]);
            for (int k = 0; k < 5; k++) {
                group[k] += csv_ore(f[6 + k]);
                year_sum[k] += csv_ore(f[6 + k]);
            }
            rows_in_group++;
            continue;
        }
        group_parent[0] = '\0';
        rows_in_group = 0;
        memset(group, 0, sizeof group);
    }
    return subtotals;
}

Test(e2e_years, the_table_and_csv_show_each_parents_units_then_its_subtotal)
{
    adopt_verksamheter();
    e2e_ctl_result r;
    ctl_ok(&r, "years", "2022-2023", "--csv");
    e2e_assert_int(check_csv_groups(r.out, ',', "subtotal", "total"), 4, "subtotals in CSV");
    e2e_ctl_free(&r);
    ctl_ok(&r, "years", "2022-2023", "--csv", "--swedish");
    cr_assert(strncmp(r.out, "typ;enhet;namn;överordnad;år;", 30) == 0, "%s", r.out);
    cr_assert(strstr(r.out, "\ndelsumma;SON;Social- och omsorgsnämnden;;2022;;") != NULL, "%s",
              r.out);
    e2e_assert_int(check_csv_groups(r.out, ';', "delsumma", "totalt"), 4, "subtotals, Swedish");
    e2e_ctl_free(&r);
    /* The table: in the same order, with the names whole. */
    ctl_ok(&r, "years", "2022-2023");
    const char *ifo = strstr(r.out, "Individ- och familjeomsorg");
    const char *ao = strstr(r.out, "Äldreomsorg");
    const char *son = strstr(r.out, "subtotal  SON");
    const char *total = strstr(r.out, "\ntotal ");
    e2e_assert(ifo && ao && son && total && ifo < son && ao < son && son < total,
               "SON's units, then its subtotal, then the total: %s", r.out);
    e2e_ctl_free(&r);
    ctl_ok(&r, "years", "2022-2023", "--swedish");
    cr_assert(strncmp(r.out, "as of", 5) == 0 && strstr(r.out, "\ntyp ") != NULL &&
                  strstr(r.out, "\ndelsumma  SON") != NULL,
              "%s", r.out);
    e2e_ctl_free(&r);
}

Test(e2e_years, an_adoption_rests_on_a_decision_and_names_registered_units)
{
    char path[256];
    lines_file("2024.txt", "KS;1 mkr\nSONN;1 mkr\n", path, sizeof path);
    e2e_ctl_result r;
    cr_assert_eq(ctl_run(&r, "adopt", "--year", "2024", "--decision", "KF 2023-11-20 § 140",
                         "--title", "Budget 2024", "--lines", path),
                 1);
    cr_assert(strstr(r.err, "not_found: line 2: unit SONN is not a registered unit; did you "
                            "mean SON?") != NULL,
              "%s", r.err);
    e2e_ctl_free(&r);
    lines_file("2024.txt", "KS;1 mkr\nSON;1 mkr\n", path, sizeof path);
    cr_assert_eq(ctl_run(&r, "adopt", "--year", "2024", "--title", "Budget 2024", "--lines", path),
                 2, "no decision");
    cr_assert(strstr(r.err, "--decision") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "adopt", "--year", "2024", "--decision", "KF 2023-02-30 § 140",
                         "--title", "Budget 2024", "--lines", path),
                 2, "a decision dated on no day");
    e2e_ctl_free(&r);
    cr_assert_eq(ctl_run(&r, "balances", "--frame", "budget-2024:KS"), 1, "nothing adopted");
    e2e_ctl_free(&r);
    /* With its decision and its units registered, it is adopted. */
    ctl_ok(&r, "adopt", "--year", "2024", "--decision", "KF 2023-11-20 § 140", "--title",
           "Budget 2024", "--lines", path);
    e2e_ctl_free(&r);
    ctl_ok(&r, "balances", "--frame", "budget-2024:SON");
    cr_assert(strstr(r.out, "1 000 000,00 kr") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
}
