/*
 * budgetctl import budget FILE.csv against a real budgetd: a Swedish Excel file (BOM, CRLF,
 * `;`, quoted fields, decimal commas, spaces between thousands) is written whole in one batch;
 * a file with bad lines writes nothing and names each line; a dry run writes nothing; the same
 * file again changes nothing, and a changed one is refused line by line; a frame's decision
 * (beslut) is read as clerks write it and a bad one is an error of its line; limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e_util.h"

static e2e_daemon bd;

/* Starts budgetd and registers the units the tests name (three events, seqs 1..3). */
static void start(void)
{
    cr_assert_eq(e2e_daemon_start(&bd), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

TestSuite(import, .fini = teardown, .timeout = 120);

/* Writes `text` to DIR/name; the path goes into `path`. */
static void write_file(const char *name, const char *text, size_t len, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", bd.dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* budgetctl import budget PATH [--dry-run] */
static void import(const char *path, bool dry_run, e2e_ctl_result *r)
{
    const char *argv[] = {"import", "budget", path, "--dry-run"};
    cr_assert_eq(e2e_ctl_argv(&bd, r, dry_run ? 4 : 3, argv), 0, "budgetctl did not run");
}

static uint64_t head(void)
{
    budget_client *c = e2e_client(&bd);
    uint64_t h = e2e_head(c);
    budget_client_close(c);
    return h;
}

/* The amount of allocation `id`, or -1 when there is none. */
static int64_t allocation_amount(const char *id)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    e2e_kv_str(&b, "allocation", id);
    e2e_call(c, "balances", &b, &r);
    int64_t amount = -1;
    if (r.ok) {
        const msgpack_object *list = budget_map_get(&r.result, "allocations");
        amount = budget_map_int(&list->via.array.ptr[0], "amount", -1);
    }
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    budget_client_close(c);
    return amount;
}

/* The decision of the event that made `id`, as "body date § paragraph dnr" ("" when there is
 * no such event). */
static void decision_of(const char *id, char *out, size_t size)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    budget_response r;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_str(&b, "entity", id);
    e2e_kv_int(&b, "limit", 1);
    e2e_call(c, "events", &b, &r);
    e2e_assert(r.ok, "events of %s: %s", id, r.message);
    const msgpack_object *list = budget_map_get(&r.result, "events");
    out[0] = '\0';
    if (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 1) {
        const msgpack_object *data = budget_map_get(&list->via.array.ptr[0], "data");
        char body[32] = "", day[16] = "", paragraph[64] = "", dnr[80] = "";
        budget_map_str(data, "decision_body", body, sizeof(body));
        budget_map_str(data, "decision_date", day, sizeof(day));
        budget_map_str(data, "decision_paragraph", paragraph, sizeof(paragraph));
        budget_map_str(data, "decision_dnr", dnr, sizeof(dnr));
        snprintf(out, size, "%s %s \xc2\xa7 %s dnr %s", body, day, paragraph, dnr);
    }
    budget_response_free(&r);
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

/* The file of the source document, as Swedish Excel saves it: a BOM, CRLF, an extra column,
 * an allocation before its frame, quoted fields, a field with `;` and `""`, an empty row, the
 * frame's decision as the clerk wrote it. */
static const char excel[] =
    "\xef\xbb\xbfTyp;Ram;Enhet;\xc3\x85r;Belopp;Rubrik;Syfte;Beslut;Referens;Kommentar\r\n"
    "f\xc3\xb6rdelning;KS-2021;SON;2021;\"1 000 000\";;Trygghetsinsatser SON;;;\r\n"
    "ram;KS-2021;KS;2021;\"3 000 000\";Ut\xc3\xb6kat trygghetsarbete;;KS 2021-08-24 \xc2\xa7 "
    "241 dnr KS 2021/123;Protokoll 2021-08-24;beslutat\r\n"
    "F\xc3\xb6rdelning;KS-2021;KFN;;500000,50;;\"Fritid; \"\"kv\xc3\xa4ll\"\"\";;;\r\n"
    ";;;;;;;;;\r\n";

Test(import, a_swedish_excel_file_is_written_whole_in_one_batch)
{
    char path[256];
    e2e_ctl_result r;
    start();
    write_file("budget.csv", excel, sizeof(excel) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code == 0, "import failed (%d): %s", r.exit_code, r.err);
    e2e_assert(strstr(r.out, "imported 3 rows") != NULL, "output: %s", r.out);
    e2e_assert(strstr(r.out, "line 3: frame.granted KS-2021 seq 4") != NULL, "output: %s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 6, "head");
    e2e_assert_int(allocation_amount("KS-2021-SON"), 100000000, "SON's allocation in öre");
    e2e_assert_int(allocation_amount("KS-2021-KFN"), 50000050, "KFN's allocation in öre");
    char decision[200];
    decision_of("KS-2021", decision, sizeof(decision));
    e2e_assert_str(decision, "KS 2021-08-24 \xc2\xa7 241 dnr KS 2021/123", "the frame's decision");
}

Test(import, english_headers_and_plain_line_ends_read_the_same)
{
    char path[256];
    e2e_ctl_result r;
    static const char text[] = "type;id;frame;unit;year;amount;title;purpose;decision\n"
                               "frame;;F;KS;2022;1500000;Frame;;KS 2021-12-14 \xc2\xa7"
                               "312\n"
                               "allocation;a-1;F;SON;;1 500 000;;Everything;\n";
    start();
    write_file("en.csv", text, sizeof(text) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code == 0, "import failed (%d): %s", r.exit_code, r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(allocation_amount("a-1"), 150000000, "the allocation in öre");
    char decision[200];
    decision_of("F", decision, sizeof(decision));
    e2e_assert_str(decision, "KS 2021-12-14 \xc2\xa7 312 dnr ", "the frame's decision");
}

Test(import, a_file_with_bad_lines_writes_nothing_and_names_each_line)
{
    char path[256];
    e2e_ctl_result r;
    static const char text[] = "typ;ram;enhet;år;belopp;rubrik;syfte;beslut\n"
                               "ram;F;KS;2021;1000;Ram;;" E2E_DECISION "\n" /* 2: good */
                               "ram;G;KS;20x1;1000;Ram;;" E2E_DECISION "\n" /* 3: year */
                               "fördelning;F;SON;;-5;;P\n"                  /* 4: amount */
                               "utfall;F;SON;;5;;P\n"                       /* 5: type */
                               "fördelning;F;KFN;;400;;\n"                  /* 6: no purpose */
                               "fördelning;F;SON;;600;;P\n"                 /* 7: good alone */
                               "fördelning;F;KFN;;600;;Q\n"                 /* 8: over the frame */
                               "ram;F;KS;2021;1000;Ram igen;;" E2E_DECISION "\n"; /* 9: id again */
    start();
    write_file("bad.csv", text, sizeof(text) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert_int(r.exit_code, 1, "exit status");
    const char *lines[] = {":3: år",
                           ":4: belopp",
                           ":5: typ",
                           ":6: fördelning needs syfte",
                           ":8: insufficient_funds",
                           ":9: id F is also made by line 2"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        e2e_assert(strstr(r.err, lines[i]) != NULL, "no \"%s\" in: %s", lines[i], r.err);
    e2e_assert(strstr(r.err, ":2:") == NULL && strstr(r.err, ":7:") == NULL,
               "a good line is named: %s", r.err);
    e2e_assert(strstr(r.err, "6 of 8 rows refused; nothing was imported") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 3, "head after a file with bad lines");
}

Test(import, a_bad_or_missing_decision_is_an_error_of_its_line_and_nothing_is_written)
{
    char path[256];
    e2e_ctl_result r;
    static const char text[] =
        "typ;ram;enhet;år;belopp;rubrik;syfte;beslut\n"
        "ram;F;KS;2021;1000;Ram;;KS 2021-08-24 § 241\n"     /* 2: good */
        "ram;G;KS;2021;1000;Ram;;KS 2021-08-32 § 241\n"     /* 3: no such day */
        "ram;H;KS;2021;1000;Ram;;KS 2021-08-24 241\n"       /* 4: no § */
        "ram;I;KS;2021;1000;Ram;;\n"                        /* 5: no decision */
        "ram;J;KS;2021;1000;Ram;;ks 2021-08-24 § 241\n"     /* 6: body in lower case */
        "fördelning;F;SON;;500;;P;KS 2021-08-24 § 241 x\n"; /* 7: an allocation takes none */
    start();
    write_file("decisions.csv", text, sizeof(text) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert_int(r.exit_code, 1, "exit status");
    const char *lines[] = {"decisions.csv:3: beslut: \"KS 2021-08-32 § 241\" is not a decision",
                           "decisions.csv:4: beslut: \"KS 2021-08-24 241\" is not a decision",
                           "decisions.csv:5: ram needs beslut",
                           "decisions.csv:6: beslut: \"ks 2021-08-24 § 241\" is not a decision",
                           "write BODY YYYY-MM-DD § PARAGRAPH"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        e2e_assert(strstr(r.err, lines[i]) != NULL, "no \"%s\" in: %s", lines[i], r.err);
    e2e_assert(strstr(r.err, ":2:") == NULL && strstr(r.err, ":7:") == NULL,
               "a good line is named: %s", r.err);
    e2e_assert(strstr(r.err, "4 of 6 rows refused; nothing was imported") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 3, "head after a file with bad decisions");
}

Test(import, a_dry_run_prints_what_would_be_written_and_writes_nothing)
{
    char path[256];
    e2e_ctl_result r;
    start();
    write_file("budget.csv", excel, sizeof(excel) - 1, path, sizeof(path));
    import(path, true, &r);
    e2e_assert(r.exit_code == 0, "dry run failed (%d): %s", r.exit_code, r.err);
    e2e_assert(strstr(r.out, "line 2: allocation.proposed KS-2021-SON seq 5") != NULL, "%s", r.out);
    e2e_assert(strstr(r.out, "nothing was written") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 3, "head after a dry run");
}

Test(import, the_same_file_again_changes_nothing_and_a_changed_one_is_refused)
{
    char path[256];
    e2e_ctl_result r;
    start();
    write_file("budget.csv", excel, sizeof(excel) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code == 0, "import failed: %s", r.err);
    e2e_ctl_free(&r);
    import(path, false, &r);
    e2e_assert(r.exit_code == 0, "the same import again failed: %s", r.err);
    e2e_assert(strstr(r.out, "already imported") != NULL, "%s", r.out);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 6, "head after the same file twice");

    char changed[sizeof(excel)];
    memcpy(changed, excel, sizeof(excel));
    char *at = strstr(changed, "500000,50");
    cr_assert_not_null(at);
    at[0] = '4'; /* KFN's row, line 4 */
    write_file("changed.csv", changed, sizeof(changed) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert_int(r.exit_code, 1, "exit status of a changed file");
    e2e_assert(strstr(r.err, "changed.csv:4: conflict") != NULL, "%s", r.err);
    e2e_ctl_free(&r);
    e2e_assert_int(head(), 6, "head after a changed file");
}

Test(import, limits_of_a_file)
{
    char path[256];
    e2e_ctl_result r;
    start();

    size_t size = 1024 * 1024 + 1, n = 0;
    char *big = malloc(size);
    cr_assert_not_null(big);
    memset(big, ' ', size);
    write_file("big.csv", big, size, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code != 0 && strstr(r.err, "larger than 1 MiB") != NULL, "%s", r.err);
    e2e_ctl_free(&r);

    n = (size_t)snprintf(big, size, "typ;ram;enhet;år;belopp;rubrik\n");
    for (int i = 0; i < 1001; i++)
        n += (size_t)snprintf(big + n, size - n, "ram;F%d;KS;2021;1;R\n", i);
    write_file("rows.csv", big, n, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code == 1 && strstr(r.err, "more than 1000 rows") != NULL, "%s", r.err);
    e2e_ctl_free(&r);

    static const char quote[] = "typ;ram\nram;\"F\n";
    write_file("quote.csv", quote, sizeof(quote) - 1, path, sizeof(path));
    import(path, false, &r);
    e2e_assert(r.exit_code == 1 && strstr(r.err, "quote.csv:2: a quote that is never closed"), "%s",
               r.err);
    e2e_ctl_free(&r);
    free(big);
    e2e_assert_int(head(), 3, "head");
}
