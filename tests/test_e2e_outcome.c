/*
 * Outcome (utfall) against a real budgetd: budgetctl import outcome reads an export as Swedish
 * Excel saves it (BOM, CRLF, `;`, quoted fields, decimal commas, spaces and no-break spaces
 * between thousands) through a map file and records its figures in one batch; the same file
 * again records nothing; a corrected file records only its changed figures; a bad line refuses
 * the whole file with its line number; and the views (outcome, balances) show the figures the
 * rows sum to, set against the budget. The daemon, not the client, refuses a figure equal to
 * the one recorded, and a retried write is answered as a retry.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e_util.h"

static e2e_daemon bd;

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

TestSuite(outcome, .fini = teardown, .timeout = 120);

/* ---- the export ------------------------------------------------------------------------------ */

/* A row of the financial system's export: the period as written, its responsibility code
 * (Ansvar), an allocation or "", and the amount in öre. */
typedef struct {
    const char *period, *ansvar, *allocation;
    int64_t ore;
} export_row;

/* SON's budget for 2021: its own frame (1 000 000 kr); SON-A is an allocation out of it to SON
 * (proposed only, so the budget stays the frame). KS has a frame of its own. */
#define SON_FRAME_ORE 100000000
#define KS_FRAME_ORE 300000000

static const export_row september[] = {
    {"2021-09", "1100", "", 1234550},          /* 12 345,50 kr */
    {"2021-09", "1100", "", 100000000 / 1000}, /* 1 000,00 kr, the same key: summed */
    {"2021-09", "1100", "SON-A", 25000000},    /* 250 000 kr */
    {"202110", "1100", "", -250025},           /* a credit, the period without a dash */
    {"2021-10", "KS", "", 9999},               /* 99,99 kr */
};

/* Writes `text` to DIR/name; the path goes into `path`. */
static void write_file(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", bd.dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

/* An amount as Excel shows it: "-1 234 567,89", thousands split by a space or (odd rows) a
 * no-break space. */
static void excel_amount(int64_t ore, bool nbsp, char *out, size_t size)
{
    char digits[32];
    uint64_t m = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    int n = snprintf(digits, sizeof digits, "%" PRIu64, m / 100);
    size_t o = 0;
    if (ore < 0)
        out[o++] = '-';
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            o += (size_t)snprintf(out + o, size - o, "%s", nbsp ? "\xc2\xa0" : " ");
        out[o++] = digits[i];
    }
    snprintf(out + o, size - o, ",%02u", (unsigned)(m % 100));
}

/* The export as Excel saves it: BOM, CRLF, a column the map does not name, quoted amounts. */
static void write_export(const char *name, const export_row *rows, size_t n, char *path,
                         size_t size)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    fputs("\xef\xbb\xbfPeriod;Ansvar;Konto;F\xc3\xb6rdelning;Belopp\r\n", f);
    for (size_t i = 0; i < n; i++) {
        char amount[64];
        excel_amount(rows[i].ore, i % 2 == 1, amount, sizeof amount);
        fprintf(f, "%s;%s;\"40%02zu\";%s;\"%s\"\r\n", rows[i].period, rows[i].ansvar, i,
                rows[i].allocation, amount);
    }
    fputs(";;;;\r\n", f);
    fclose(f);
    write_file(name, text, path, size);
    free(text);
}

static const char map_text[] = "# utfall ur ekonomisystemet\n"
                               "period=Period\n"
                               "unit=Ansvar\n"
                               "amount = Belopp\n"
                               "allocation=F\xc3\xb6rdelning\n"
                               "unit.1100=SON\n";

/* ---- the expected figures, from the rows ----------------------------------------------------- */

static int month_of(const char *period)
{
    return atoi(period + strlen(period) - 2);
}

static const char *unit_of(const char *ansvar)
{
    return strcmp(ansvar, "1100") == 0 ? "SON" : ansvar;
}

/* The sum of the rows of `unit` in `month` (0: every month). */
static int64_t sum_of(const export_row *rows, size_t n, const char *unit, int month)
{
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(unit_of(rows[i].ansvar), unit) == 0 &&
            (month == 0 || month_of(rows[i].period) == month))
            sum += rows[i].ore;
    return sum;
}

/* The keys (unit, month, allocation) of the rows: what is recorded. */
static size_t keys_of(const export_row *rows, size_t n)
{
    size_t keys = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(unit_of(rows[i].ansvar), unit_of(rows[j].ansvar)) == 0 &&
                   month_of(rows[i].period) == month_of(rows[j].period) &&
                   strcmp(rows[i].allocation, rows[j].allocation) == 0;
        keys += !seen;
    }
    return keys;
}

/* ---- the daemon ------------------------------------------------------------------------------ */

static uint64_t head(void)
{
    budget_client *c = e2e_client(&bd);
    uint64_t h = e2e_head(c);
    budget_client_close(c);
    return h;
}

/* Starts budgetd with KS and SON, a frame for each in 2021 and allocation SON-A. */
static void start(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", NULL);
    budget_client *c = e2e_client(&bd);
    const struct {
        const char *id, *unit;
        int64_t ore;
    } frames[] = {{"SON-2021", "SON", SON_FRAME_ORE}, {"KS-2021", "KS", KS_FRAME_ORE}};
    for (size_t i = 0; i < 2; i++) {
        e2e_buf b;
        e2e_buf_init(&b);
        msgpack_pack_map(&b.pk, 5 + E2E_DECISION_PAIRS);
        e2e_kv_str(&b, "id", frames[i].id);
        e2e_kv_str(&b, "unit", frames[i].unit);
        e2e_kv_int(&b, "year", 2021);
        e2e_kv_int(&b, "amount", frames[i].ore);
        e2e_kv_str(&b, "title", "Ram 2021");
        e2e_kv_decision(&b);
        e2e_write_ok(c, "frame.grant", &b);
        e2e_buf_destroy(&b);
    }
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    e2e_kv_str(&b, "id", "SON-A");
    e2e_kv_str(&b, "frame", "SON-2021");
    e2e_kv_str(&b, "unit", "SON");
    e2e_kv_int(&b, "amount", 30000000);
    e2e_kv_str(&b, "purpose", "Trygghetsinsatser");
    e2e_write_ok(c, "allocation.propose", &b);
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

static void ctl(e2e_ctl_result *r, int argc, const char *const *argv)
{
    cr_assert_eq(e2e_ctl_argv(&bd, r, argc, argv), 0, "budgetctl did not run");
}

/* budgetctl import outcome PATH --map MAP [--dry-run] */
static void import(const char *path, const char *map, bool dry_run, e2e_ctl_result *r)
{
    const char *argv[] = {"import", "outcome", path, "--map", map, "--dry-run"};
    ctl(r, dry_run ? 6 : 5, argv);
}

/* budgetctl --json outcome --unit UNIT --year 2021, parsed. */
static e2e_json *outcome_json(const char *unit)
{
    e2e_ctl_result r;
    const char *argv[] = {"--json", "outcome", "--unit", unit, "--year", "2021"};
    ctl(&r, 6, argv);
    e2e_assert(r.exit_code == 0, "outcome failed (%d): %s", r.exit_code, r.err);
    e2e_json *j = e2e_json_parse(r.out, strlen(r.out));
    e2e_assert(j != NULL, "not JSON: %s", r.out);
    e2e_ctl_free(&r);
    return j;
}

/* Checks the outcome view of `unit` against the rows. */
static void expect_outcome(const export_row *rows, size_t n, const char *unit, int64_t budget)
{
    e2e_json *j = outcome_json(unit);
    int64_t total = sum_of(rows, n, unit, 0);
    int last = 0;
    char what[64];
    const e2e_json *months = e2e_json_get(j, "months");
    e2e_assert(months && months->count == 12, "months");
    for (int m = 1; m <= 12; m++) {
        snprintf(what, sizeof what, "%s month %d", unit, m);
        e2e_assert_int(months->items[m - 1]->integer, sum_of(rows, n, unit, m), what);
        for (size_t i = 0; i < n; i++)
            if (strcmp(unit_of(rows[i].ansvar), unit) == 0 && month_of(rows[i].period) == m)
                last = m;
    }
    e2e_assert(last > 0, "no rows of %s", unit);
    e2e_assert_int(e2e_json_int(j, "outcome", -1), total, unit);
    e2e_assert_int(e2e_json_int(j, "budget", -1), budget, unit);
    e2e_assert_int(e2e_json_int(j, "deviation", -1), budget - total, unit);
    e2e_assert_int(e2e_json_int(j, "last_month", -1), last, unit);
    e2e_assert_int(e2e_json_int(j, "forecast", -1), total * 12 / last, unit);
    e2e_assert_int(e2e_json_int(j, "used_permille", -1), total * 1000 / budget, unit);
    e2e_json_free(j);
}

/* ---- the tests ------------------------------------------------------------------------------- */

Test(outcome, an_excel_export_is_recorded_whole_and_the_views_show_what_its_rows_sum_to)
{
    char path[256], map[256];
    e2e_ctl_result r;
    size_t n = sizeof september / sizeof september[0];
    start();
    uint64_t before = head();
    write_export("utfall-2021-09.csv", september, n, path, sizeof path);
    write_file("utfall.map", map_text, map, sizeof map);
    import(path, map, false, &r);
    e2e_assert(r.exit_code == 0, "import failed (%d): %s %s", r.exit_code, r.out, r.err);
    char want[128];
    snprintf(want, sizeof want, "recorded %zu figures", keys_of(september, n));
    e2e_assert(strstr(r.out, want) != NULL, "no \"%s\" in: %s", want, r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), before + keys_of(september, n), "one event per key");
    expect_outcome(september, n, "SON", SON_FRAME_ORE);
    expect_outcome(september, n, "KS", KS_FRAME_ORE);

    /* balances: the unit's row carries the same figures */
    const char *argv[] = {"--json", "balances", "--unit", "SON", "--year", "2021"};
    ctl(&r, 6, argv);
    e2e_json *j = e2e_json_parse(r.out, strlen(r.out));
    e2e_assert(j != NULL, "not JSON: %s", r.out);
    const e2e_json *units = e2e_json_get(j, "units");
    e2e_assert(units && units->count == 1, "one unit row: %s", r.out);
    e2e_assert_int(e2e_json_int(units->items[0], "outcome", -1), sum_of(september, n, "SON", 0),
                   "balances outcome");
    e2e_assert_int(e2e_json_int(units->items[0], "deviation", -1),
                   SON_FRAME_ORE - sum_of(september, n, "SON", 0), "balances deviation");
    e2e_json_free(j);
    e2e_ctl_free(&r);

    /* the CSV of the view: a decimal comma, the months to date */
    const char *csv[] = {"--swedish", "outcome", "--unit", "SON", "--year", "2021", "--csv"};
    ctl(&r, 7, csv);
    e2e_assert(r.exit_code == 0, "outcome --csv: %s", r.err);
    int64_t sep = sum_of(september, n, "SON", 9), oct = sum_of(september, n, "SON", 10);
    snprintf(want, sizeof want, "2021-10;%s%" PRId64 ",%02d;%" PRId64 ",%02d\r\n",
             oct < 0 ? "-" : "", (oct < 0 ? -oct : oct) / 100, (int)((oct < 0 ? -oct : oct) % 100),
             (sep + oct) / 100, (int)((sep + oct) % 100));
    e2e_assert(strstr(r.out, "m\xc3\xa5nad;utfall_kr;ackumulerat_kr\r\n") != NULL, "%s", r.out);
    e2e_assert(strstr(r.out, want) != NULL, "no \"%s\" in: %s", want, r.out);
    e2e_ctl_free(&r);
}

Test(outcome, the_same_file_again_records_nothing_and_a_corrected_one_only_its_changes)
{
    char path[256], map[256];
    e2e_ctl_result r;
    size_t n = sizeof september / sizeof september[0];
    start();
    write_export("sep.csv", september, n, path, sizeof path);
    write_file("utfall.map", map_text, map, sizeof map);
    import(path, map, false, &r);
    e2e_assert(r.exit_code == 0, "import failed: %s", r.err);
    e2e_ctl_free(&r);
    uint64_t after_first = head();

    import(path, map, false, &r);
    e2e_assert(r.exit_code == 0, "again: %s", r.err);
    e2e_assert(strstr(r.out, "nothing to record") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), after_first, "the same file again wrote something");

    /* the corrected export: one figure changed (line 5 of the file: row 4) */
    export_row corrected[sizeof september / sizeof september[0]];
    memcpy(corrected, september, sizeof corrected);
    corrected[3].ore = -199;
    write_export("sep-rättad.csv", corrected, n, path, sizeof path);
    import(path, map, false, &r);
    e2e_assert(r.exit_code == 0, "corrected: %s", r.err);
    e2e_assert(strstr(r.out, "recorded 1 figures") != NULL, "%s", r.out);
    e2e_assert(strstr(r.out, "line 5: SON 2021-10") != NULL, "%s", r.out);
    e2e_assert(strstr(r.out, "line 2: SON 2021-09") != NULL && strstr(r.out, "unchanged"),
               "the unchanged keys are reported: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), after_first + 1, "only the changed figure is written");
    expect_outcome(corrected, n, "SON", SON_FRAME_ORE);
}

Test(outcome, a_bad_line_refuses_the_whole_file_with_its_line_number)
{
    char path[256], map[256];
    e2e_ctl_result r;
    start();
    uint64_t before = head();
    write_file("utfall.map", map_text, map, sizeof map);
    static const char bad_period[] = "Period;Ansvar;F\xc3\xb6rdelning;Belopp\n"
                                     "2021-09;SON;;100\n"  /* 2: good */
                                     "2021-13;SON;;100\n"  /* 3: no such month */
                                     "2021-11;SON;;1x0\n"  /* 4: no amount */
                                     "2021-12;S O N;;5\n"; /* 5: no unit code */
    write_file("bad.csv", bad_period, path, sizeof path);
    import(path, map, false, &r);
    e2e_assert_int(r.exit_code, 1, "exit status");
    e2e_assert(strstr(r.err, "bad.csv:3: period") != NULL, "%s", r.err);
    e2e_assert(strstr(r.err, "bad.csv:4: belopp") != NULL, "%s", r.err);
    e2e_assert(strstr(r.err, "bad.csv:5: ansvar") != NULL, "%s", r.err);
    e2e_assert(strstr(r.err, ":2:") == NULL, "a good line is named: %s", r.err);
    e2e_assert(strstr(r.err, "3 of 4 rows refused; nothing was imported") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), before, "a file with bad lines wrote something");

    /* the daemon's refusal (an allocation of another unit) names its line too */
    static const char other[] = "Period;Ansvar;F\xc3\xb6rdelning;Belopp\n"
                                "2021-09;SON;;100\n"
                                "2021-09;KS;SON-A;100\n";
    write_file("other.csv", other, path, sizeof path);
    import(path, map, false, &r);
    e2e_assert_int(r.exit_code, 1, "exit status");
    e2e_assert(strstr(r.err, "other.csv:3: invalid_state") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), before, "a refused batch wrote something");

    /* a dry run writes nothing and says what it would */
    write_export("sep.csv", september, 2, path, sizeof path);
    import(path, map, true, &r);
    e2e_assert(r.exit_code == 0, "dry run: %s", r.err);
    e2e_assert(strstr(r.out, "dry run: 1 figures") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), before, "a dry run wrote something");
}

Test(outcome, the_map_is_checked_and_needs_the_three_columns)
{
    char path[256], map[256];
    e2e_ctl_result r;
    start();
    write_export("sep.csv", september, 1, path, sizeof path);
    write_file("short.map", "period=Period\nunit=Ansvar\n", map, sizeof map);
    import(path, map, false, &r);
    e2e_assert_int(r.exit_code, 2, "exit status");
    e2e_assert(strstr(r.err, "needs period=, unit= and amount=") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    write_file("typo.map", "period=Period\nunit=Ansvar\namount=Belopp\nkonto=Konto\n", map,
               sizeof map);
    import(path, map, false, &r);
    e2e_assert_int(r.exit_code, 2, "exit status");
    e2e_assert(strstr(r.err, "typo.map:4: \"konto\" is not a key") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
}

/* Records SON's September outcome `ore` under `id`. */
static void record(budget_client *c, const char *id, int64_t ore, e2e_write_result *w)
{
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 6);
    e2e_kv_str(&b, "id", id);
    e2e_kv_str(&b, "unit", "SON");
    e2e_kv_int(&b, "year", 2021);
    e2e_kv_int(&b, "month", 9);
    e2e_kv_int(&b, "amount", ore);
    e2e_kv_str(&b, "source", "sep.csv");
    e2e_write(c, "outcome.record", &b, w);
    e2e_buf_destroy(&b);
}

Test(outcome, the_daemon_refuses_an_unchanged_figure_and_answers_a_retry_as_a_retry)
{
    e2e_write_result first, retry, twice;
    start();
    budget_client *c = e2e_client(&bd);
    record(c, "o-1", 150000, &first);
    e2e_assert(first.ok, "first: %s", first.message);
    record(c, "o-1", 150000, &retry);
    e2e_assert(retry.ok, "retry: %s", retry.message);
    e2e_assert_int(retry.seq, first.seq, "a retry answers the first seq");
    /* another clerk, another id, the same figure: nothing is written */
    uint64_t h = e2e_head(c);
    record(c, "o-2", 150000, &twice);
    e2e_assert(!twice.ok && strcmp(twice.code, "conflict") == 0, "unchanged: %s", twice.code);
    e2e_assert(strstr(twice.message, "unchanged") != NULL, "%s", twice.message);
    e2e_assert_int(e2e_head(c), h, "an unchanged figure was written");
    budget_client_close(c);
}
