/*
 * budgetctl import budget FILE.csv: frames and allocations from a spreadsheet export
 * (docs/budgetctl.md, "import budget"), written with one `batch` request: every row or none.
 *
 * The file is CSV as Swedish Excel saves it: `;` between fields, a decimal comma, an optional
 * UTF-8 byte order mark, CRLF or LF, fields in double quotes where they need it. Columns are
 * found by their header. One table says everything about the mapping: `row_types`, for each
 * word of the type column the write op it becomes and, for each of the op's args, the column
 * it comes from (by its header words, Swedish and English) and what the cell holds. A new row
 * type is one entry there, a new column one arg.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "budget/amount.h"
#include "budget/errors.h"
#include "budget/limits.h"
#include "client/budgetctl.h"
#include "client/import.h"
#include "proto/fields.h"

/* ---- the mapping: row types and their columns --------------------------------------------- */

/* The header words of a column, Swedish first; compared without case ("År" is "år"). A
 * column with no words is none. */
typedef struct {
    const char *words[3];
} column_words;

#define COLUMN(...)                                                                                \
    {                                                                                              \
        {                                                                                          \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }
#define NO_COLUMN                                                                                  \
    {                                                                                              \
        {                                                                                          \
            NULL                                                                                   \
        }                                                                                          \
    }

/* The column that holds each row's type. */
static const column_words type_column = COLUMN("typ", "type");

/* CELL_DECISION is a decision as clerks write it, "KS 2021-08-24 § 241" (budget_decision_parse),
 * and becomes the args decision_body, decision_date, decision_paragraph and decision_dnr. */
typedef enum { CELL_ID, CELL_UNIT, CELL_YEAR, CELL_AMOUNT, CELL_TEXT, CELL_DECISION } cell_kind;

enum {
    CELL_REQUIRED = 1,
    /* An empty cell makes the id from the row's frame and unit: "KS-2021-SON". */
    CELL_ID_FROM_FRAME_UNIT = 2,
};

/* One arg of a row's write: its name, the column it comes from (`alt` when that cell is
 * empty), what the cell holds. */
typedef struct {
    const char *arg;
    column_words col, alt;
    cell_kind kind;
    unsigned flags;
} row_arg;

#define ROW_ARGS_MAX 8

/* A row type: the words of the type column, the write op, and its args. Rows are written in
 * the order of this table (every frame before any allocation), each type in file order. A
 * new row type is one entry; a new column is one arg of the types that read it. */
typedef struct {
    const char *names[3];
    const char *op;
    row_arg args[ROW_ARGS_MAX];
} row_type;

static const row_type row_types[] = {
    {{"ram", "frame"},
     "frame.grant",
     {{"id", COLUMN("ram", "frame"), COLUMN("id"), CELL_ID, CELL_REQUIRED},
      {"unit", COLUMN("enhet", "unit"), NO_COLUMN, CELL_UNIT, CELL_REQUIRED},
      {"year", COLUMN("\xc3\xa5r", "year"), NO_COLUMN, CELL_YEAR, CELL_REQUIRED},
      {"amount", COLUMN("belopp", "amount"), NO_COLUMN, CELL_AMOUNT, CELL_REQUIRED},
      {"title", COLUMN("rubrik", "title"), NO_COLUMN, CELL_TEXT, CELL_REQUIRED},
      {"decision", COLUMN("beslut", "decision"), NO_COLUMN, CELL_DECISION, CELL_REQUIRED},
      {"reference", COLUMN("referens", "reference"), NO_COLUMN, CELL_TEXT, 0}}},
    {{"f\xc3\xb6rdelning", "allocation"},
     "allocation.propose",
     {{"frame", COLUMN("ram", "frame"), NO_COLUMN, CELL_ID, CELL_REQUIRED},
      {"unit", COLUMN("enhet", "unit"), NO_COLUMN, CELL_UNIT, CELL_REQUIRED},
      {"id", COLUMN("id"), NO_COLUMN, CELL_ID, CELL_ID_FROM_FRAME_UNIT},
      {"amount", COLUMN("belopp", "amount"), NO_COLUMN, CELL_AMOUNT, CELL_REQUIRED},
      {"purpose", COLUMN("syfte", "purpose"), COLUMN("rubrik", "title"), CELL_TEXT,
       CELL_REQUIRED}}},
};

#define ROW_TYPES COUNT(row_types)

/* ---- the file ----------------------------------------------------------------------------- */

typedef struct {
    const char *path;
    char header[IMPORT_COLUMNS_MAX][48]; /* the header's words, folded ("" when too long) */
    size_t header_count;
    import_row *rows;
    size_t count;
    unsigned bad;     /* lines refused here */
    unsigned refused; /* rows the daemon refused */
} import_file;

static bool words_have(const column_words *c, const char *word)
{
    for (size_t w = 0; w < 3 && c->words[w]; w++)
        if (strcmp(c->words[w], word) == 0)
            return true;
    return false;
}

/* True when a column of the mapping has `word` in its header words. */
static bool known_word(const char *word)
{
    if (words_have(&type_column, word))
        return true;
    for (size_t t = 0; t < ROW_TYPES; t++)
        for (size_t i = 0; i < ROW_ARGS_MAX && row_types[t].args[i].arg; i++)
            if (words_have(&row_types[t].args[i].col, word) ||
                words_have(&row_types[t].args[i].alt, word))
                return true;
    return false;
}

/* The file's column `c`, or -1. */
static int column_index(const import_file *f, const column_words *c)
{
    for (size_t i = 0; i < f->header_count; i++)
        if (f->header[i][0] && words_have(c, f->header[i]))
            return (int)i;
    return -1;
}

/* Keeps the header's words. 0, or -1 after saying why. */
static int read_header(import_file *f, csv_record *rec)
{
    f->header_count = rec->count;
    for (size_t i = 0; i < rec->count; i++) {
        import_fold_case(rec->cells[i]);
        snprintf(f->header[i], sizeof(f->header[i]), "%s",
                 strlen(rec->cells[i]) < sizeof(f->header[i]) ? rec->cells[i] : "");
        for (size_t j = 0; j < i; j++)
            if (f->header[i][0] && strcmp(f->header[i], f->header[j]) == 0 &&
                known_word(f->header[i]))
                return complain(-1, "%s:%u: the column \"%s\" is given twice", f->path, rec->line,
                                f->header[i]);
    }
    if (column_index(f, &type_column) < 0)
        return complain(-1,
                        "%s:%u: no column typ (or type) in the header; the columns are typ, id, "
                        "ram, enhet, år, belopp, rubrik, syfte, beslut, referens",
                        f->path, rec->line);
    return 0;
}

/* ---- checking a row ----------------------------------------------------------------------- */

/* The cell of column `c` in `rec`, or "" when the file has no such column. */
static const char *cell_of(const import_file *f, const csv_record *rec, const column_words *c)
{
    int i = c->words[0] ? column_index(f, c) : -1;
    if (i < 0 || (size_t)i >= rec->count)
        return "";
    return rec->cells[i];
}

/* Checks `text` as a decision and packs it as its args. 0, or -1 with `why`. */
static int pack_decision_cell(msgpack_packer *pk, const char *text, char *why, size_t why_size)
{
    budget_decision d;
    const char *wrong = "";
    if (!budget_decision_parse(text, strlen(text), &d, &wrong)) {
        snprintf(why, why_size,
                 "\"%.80s\" is not a decision: %s; write " BUDGET_DECISION_FORM
                 ", as in \"KS 2021-08-24 § 241\"",
                 text, wrong);
        return -1;
    }
    return pack_decision(pk, text) == 0 ? 0 : -1;
}

/* The pairs of args a given cell of `a` adds: a decision's 3 or 4, else 1. */
static uint32_t cell_pairs(const row_arg *a, const char *text)
{
    budget_decision d;
    if (a->kind != CELL_DECISION)
        return 1;
    if (!budget_decision_parse(text, strlen(text), &d, NULL))
        return 0; /* refused when packed */
    return d.dnr[0] != '\0' ? 4 : 3;
}

/* Checks `text` as a cell of `kind` and packs it as the arg's value. 0, or -1 with `why`. */
static int pack_cell(msgpack_packer *pk, const row_arg *a, const char *text, char *why,
                     size_t why_size)
{
    size_t len = strlen(text);
    int64_t n = 0;
    char *end = NULL;

    switch (a->kind) {
    case CELL_ID:
    case CELL_UNIT:
        if (!(a->kind == CELL_ID ? budget_id_valid(text, len) : budget_unit_valid(text, len))) {
            snprintf(why, why_size, "\"%.80s\" is not %s: 1-%d of A-Z a-z 0-9 . _ : -", text,
                     a->kind == CELL_ID ? "an id" : "a unit code",
                     a->kind == CELL_ID ? BUDGET_ID_BYTES_MAX : BUDGET_UNIT_BYTES_MAX);
            return -1;
        }
        return msgpack_pack_str_with_body(pk, text, len);
    case CELL_YEAR:
        errno = 0;
        n = strtoll(text, &end, 10);
        if (errno || end == text || *end || n < BUDGET_YEAR_MIN || n > BUDGET_YEAR_MAX) {
            snprintf(why, why_size, "\"%.40s\" is not a year %d..%d", text, BUDGET_YEAR_MIN,
                     BUDGET_YEAR_MAX);
            return -1;
        }
        return msgpack_pack_int64(pk, n);
    case CELL_AMOUNT:
        if (budget_amount_parse(text, &n, why, why_size) != 0)
            return -1;
        if (n <= 0) {
            snprintf(why, why_size, "\"%.40s\" is not more than 0 kr", text);
            return -1;
        }
        return msgpack_pack_int64(pk, n);
    case CELL_TEXT:
        if (!budget_text_valid(text, len, 1)) {
            snprintf(why, why_size, "not text of 1..%d bytes of UTF-8 without control characters",
                     BUDGET_TEXT_BYTES_MAX);
            return -1;
        }
        return msgpack_pack_str_with_body(pk, text, len);
    case CELL_DECISION:
        return pack_decision_cell(pk, text, why, why_size);
    }
    return -1;
}

/* The row type the type cell names, or ROW_TYPES. */
static size_t row_type_of(char *word)
{
    import_fold_case(word);
    for (size_t t = 0; t < ROW_TYPES; t++)
        for (size_t w = 0; w < 3 && row_types[t].names[w]; w++)
            if (strcmp(word, row_types[t].names[w]) == 0)
                return t;
    return ROW_TYPES;
}

/* The cell an arg takes: its column's, else its alternative's, else derived. */
static const char *arg_text(const import_file *f, const csv_record *rec, const row_type *t,
                            const row_arg *a, char *derived, size_t derived_size)
{
    const char *text = cell_of(f, rec, &a->col);
    if (!text[0])
        text = cell_of(f, rec, &a->alt);
    if (!text[0] && (a->flags & CELL_ID_FROM_FRAME_UNIT)) {
        const char *frame = "", *unit = "";
        for (size_t i = 0; i < ROW_ARGS_MAX && t->args[i].arg; i++) {
            if (strcmp(t->args[i].arg, "frame") == 0)
                frame = cell_of(f, rec, &t->args[i].col);
            if (strcmp(t->args[i].arg, "unit") == 0)
                unit = cell_of(f, rec, &t->args[i].col);
        }
        if (frame[0] && unit[0])
            snprintf(derived, derived_size, "%.64s-%.32s", frame, unit);
        text = derived;
    }
    return text;
}

/* Packs the write of `rec` into row->write. 0, or -1 after saying why with the line. */
static int pack_row(import_file *f, csv_record *rec, import_row *row)
{
    const row_type *t = &row_types[row->type];
    char why[300], derived[BUDGET_ID_BYTES_MAX + BUDGET_UNIT_BYTES_MAX + 2] = "";
    msgpack_packer pk;
    uint32_t n = 0;

    while (n < ROW_ARGS_MAX && t->args[n].arg)
        n++;
    uint32_t given = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *text = arg_text(f, rec, t, &t->args[i], derived, sizeof(derived));
        given += text[0] != '\0' ? cell_pairs(&t->args[i], text) : 0;
    }
    msgpack_packer_init(&pk, &row->write, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, t->op, strlen(t->op));
    msgpack_pack_str_with_body(&pk, "args", 4);
    msgpack_pack_map(&pk, given);
    for (uint32_t i = 0; i < n; i++) {
        const row_arg *a = &t->args[i];
        const char *text = arg_text(f, rec, t, a, derived, sizeof(derived));
        if (!text[0] && !(a->flags & (CELL_REQUIRED | CELL_ID_FROM_FRAME_UNIT)))
            continue;
        if (!text[0])
            return complain(-1, "%s:%u: %s needs %s", f->path, rec->line, t->names[0],
                            a->col.words[0]);
        if (a->kind != CELL_DECISION)
            msgpack_pack_str_with_body(&pk, a->arg, strlen(a->arg));
        if (pack_cell(&pk, a, text, why, sizeof(why)) != 0)
            return complain(-1, "%s:%u: %s: %s", f->path, rec->line, a->col.words[0], why);
        if (strcmp(a->arg, "id") == 0)
            snprintf(row->id, sizeof(row->id), "%s", text);
    }
    return 0;
}

/* Reads and checks one data record; a good row is added. Bad ones are said and counted. */
static void read_row(import_file *f, csv_record *rec)
{
    import_row *row = &f->rows[f->count];
    char *word = (char *)cell_of(f, rec, &type_column);
    memset(row, 0, sizeof(*row));
    row->line = rec->line;
    row->type = row_type_of(word);
    if (row->type == ROW_TYPES) {
        complain(0,
                 "%s:%u: typ \"%.40s\" is not a row type: ram (frame) or fördelning "
                 "(allocation)",
                 f->path, rec->line, word);
        f->bad++;
        return;
    }
    msgpack_sbuffer_init(&row->write);
    if (pack_row(f, rec, row) != 0) {
        msgpack_sbuffer_destroy(&row->write);
        f->bad++;
        return;
    }
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->rows[i].id, row->id) == 0) {
            complain(0, "%s:%u: id %s is also made by line %u", f->path, rec->line, row->id,
                     f->rows[i].line);
            msgpack_sbuffer_destroy(&row->write);
            f->bad++;
            return;
        }
    f->count++;
}

/* Every record of the text after the header, up to IMPORT_ROWS_MAX rows. 0, or -1 when the
 * file cannot be read on (said). */
static int read_rows(import_file *f, csv_reader *r, csv_record *rec)
{
    char why[120];
    int rc;
    bool header = false;

    while ((rc = csv_next(r, rec, why, sizeof(why))) == 1) {
        if (csv_record_empty(rec))
            continue;
        if (!header) {
            if (read_header(f, rec) != 0)
                return -1;
            header = true;
            continue;
        }
        if (f->count + f->bad == IMPORT_ROWS_MAX)
            return complain(-1, "%s:%u: more than %u rows; split the file", f->path, rec->line,
                            IMPORT_ROWS_MAX);
        read_row(f, rec);
    }
    if (rc < 0)
        return complain(-1, "%s:%u: %s", f->path, rec->line, why);
    if (!header)
        return complain(-1, "%s: no header and no rows", f->path);
    return 0;
}

/* ---- the batch ---------------------------------------------------------------------------- */

/* The rows in the order they are written: by row type, then by line. */
static int row_order(const void *a, const void *b)
{
    const import_row *x = a, *y = b;
    if (x->type != y->type)
        return x->type < y->type ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

/* What was written (or would be): a line for each row, then a summary. */
static void print_written(const ctl *c, const import_file *f, const budget_response *r,
                          bool dry_run, uint64_t head_before)
{
    const msgpack_object *w = budget_map_get(&r->result, "writes");
    size_t n = w && w->type == MSGPACK_OBJECT_ARRAY ? w->via.array.size : 0;
    uint64_t first = n ? (uint64_t)budget_map_int(&w->via.array.ptr[0], "seq", 0) : 0;
    uint64_t last = n ? (uint64_t)budget_map_int(&w->via.array.ptr[n - 1], "seq", 0) : 0;

    if (c->json) {
        json_line(&r->result);
        return;
    }
    for (size_t i = 0; i < n && i < f->count; i++) {
        char type[40];
        budget_map_str(&w->via.array.ptr[i], "type", type, sizeof(type));
        printf("line %u: %s %s seq %" PRId64 "\n", f->rows[i].line, type, f->rows[i].id,
               budget_map_int(&w->via.array.ptr[i], "seq", 0));
    }
    if (dry_run)
        printf("dry run: %zu rows of %s would be written at seq %" PRIu64 "..%" PRIu64
               "; nothing was written\n",
               n, f->path, first, last);
    else if (last <= head_before)
        printf("already imported: every row of %s is in the ledger as before (seq %" PRIu64
               "..%" PRIu64 "); nothing new was written\n",
               f->path, first, last);
    else
        printf("imported %zu rows of %s at seq %" PRIu64 "..%" PRIu64 "\n", n, f->path, first,
               last);
}

/* Sends the good rows (as a dry run when there are bad ones, to report every refusal at
 * once) and reports the outcome. */
static int import_rows(ctl *c, import_file *f, bool dry_run)
{
    msgpack_sbuffer args;
    budget_response r;
    uint64_t head = 0;
    bool check_only = dry_run || f->bad > 0;

    qsort(f->rows, f->count, sizeof(*f->rows), row_order);
    int rc = import_head_now(c, &head);
    if (rc != 0)
        return rc;
    msgpack_sbuffer_init(&args);
    rc = import_pack_batch(&args, f->rows, f->count, check_only) != 0
             ? complain(EXIT_USAGE, "out of memory")
         : args.size > BUDGET_FRAME_BYTES_MAX - 1024
             ? complain(EXIT_USAGE, "%s: the rows take more than 1 MiB; split the file", f->path)
             : import_send_batch(c, &args, &r);
    msgpack_sbuffer_destroy(&args);
    if (rc != 0)
        return rc;
    if (!r.ok)
        rc = import_say_refusals(f->path, f->rows, f->count, &r, &f->refused);
    else if (f->bad == 0)
        print_written(c, f, &r, dry_run, head);
    budget_response_free(&r);
    if (rc == 0 && f->bad > 0)
        rc = EXIT_REFUSED;
    return rc;
}

int run_import(ctl *c, const command *cmd, arg_value *values)
{
    const char *what = value_of(cmd, values, "WHAT")->text;
    import_file f = {.path = value_of(cmd, values, "FILE")->text};
    bool dry_run = value_of(cmd, values, "dry-run")->set;
    size_t size = 0;
    int rc;

    if (strcmp(what, "outcome") == 0)
        return run_import_outcome(c, cmd, values);
    if (strcmp(what, "budget") != 0)
        return complain(EXIT_USAGE, "import: \"budget\" or \"outcome\" can be imported");
    char *text = import_read_file(f.path, &size);
    csv_record *rec = malloc(sizeof(*rec));
    f.rows = calloc(IMPORT_ROWS_MAX, sizeof(*f.rows));
    if (!text || !rec || !f.rows) {
        rc = text ? complain(EXIT_USAGE, "out of memory") : EXIT_USAGE;
        goto done;
    }
    csv_reader r;
    csv_reader_init(&r, text, size);
    rc = read_rows(&f, &r, rec) != 0 ? EXIT_REFUSED : 0;
    if (rc == 0 && f.count == 0 && f.bad == 0)
        rc = complain(EXIT_REFUSED, "%s: no rows to import", f.path);
    if (rc == 0 && f.count > 0)
        rc = import_rows(c, &f, dry_run);
    if (rc == 0 && f.bad > 0)
        rc = EXIT_REFUSED;
    if (f.bad + f.refused > 0)
        complain(0, "%s: %u of %zu rows refused; nothing was %s", f.path, f.bad + f.refused,
                 f.count + f.bad, dry_run ? "written (dry run)" : "imported");
done:
    for (size_t i = 0; f.rows && i < f.count; i++)
        msgpack_sbuffer_destroy(&f.rows[i].write);
    free(f.rows);
    free(rec);
    free(text);
    return rc;
}
