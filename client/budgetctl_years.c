/*
 * budgetctl adopt and years (docs/budgetctl.md): a budget year adopted with its plan years,
 * and the units × years view as a table, JSON or CSV.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/amount.h"
#include "budget/client_msgpack.h"
#include "client/budgetctl.h"
#include "proto/fields.h"
#include "proto/text.h"

/* A lines file: at most this many bytes, and this many bytes on one line. */
#define LINES_FILE_BYTES_MAX (64u * 1024u)
#define LINE_BYTES_MAX 1024u

/* ---- adopt ------------------------------------------------------------------------------ */

/* One line of an adoption as read from the file. */
typedef struct {
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    char continues[BUDGET_ID_BYTES_MAX + 1];
    int64_t amount;
    int64_t plan[BUDGET_PLAN_YEARS_MAX];
    unsigned plans;
} adopt_line;

/* "Y1-Y2" into two years; false when it is not two years of 1900..9999, the first first. */
static bool parse_years(const char *s, int32_t *from, int32_t *to)
{
    int a, b, n = 0;
    if (sscanf(s, "%4d-%4d%n", &a, &b, &n) != 2 || s[n] != '\0' || a < BUDGET_YEAR_MIN ||
        b > BUDGET_YEAR_MAX || a > b)
        return false;
    *from = a;
    *to = b;
    return true;
}

/* Trims spaces and tabs at both ends of `s` in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* One field of a line: the unit, an amount, or continues=FRAME. 0 or an exit status. */
static int parse_field(const char *file, unsigned at, unsigned k, char *field, adopt_line *x)
{
    char why[128];
    field = trim(field);
    if (k == 0) {
        if (!budget_unit_valid(field, strlen(field)))
            return complain(EXIT_USAGE, "%s:%u: the unit must be 1..32 of A-Za-z0-9._:-", file, at);
        snprintf(x->unit, sizeof x->unit, "%s", field);
        return 0;
    }
    if (strncmp(field, "continues=", 10) == 0) {
        if (!budget_id_valid(field + 10, strlen(field + 10)))
            return complain(EXIT_USAGE, "%s:%u: continues= needs a frame id", file, at);
        snprintf(x->continues, sizeof x->continues, "%s", field + 10);
        return 0;
    }
    if (x->continues[0] != '\0')
        return complain(EXIT_USAGE, "%s:%u: continues= must be the last field", file, at);
    int64_t ore;
    if (budget_amount_parse(field, &ore, why, sizeof why) != 0)
        return complain(EXIT_USAGE, "%s:%u: field %u: %s", file, at, k + 1, why);
    if (k == 1) {
        x->amount = ore;
        return 0;
    }
    if (x->plans == BUDGET_PLAN_YEARS_MAX)
        return complain(EXIT_USAGE, "%s:%u: more than %d plan amounts", file, at,
                        BUDGET_PLAN_YEARS_MAX);
    x->plan[x->plans++] = ore;
    return 0;
}

/* Reads line `at` of the file, "UNIT;AMOUNT;PLAN1;...;PLANk[;continues=FRAME]". */
static int parse_line(const char *file, unsigned at, char *text, unsigned plans, adopt_line *x)
{
    memset(x, 0, sizeof *x);
    unsigned k = 0;
    for (char *field = text, *next; field != NULL; field = next, k++) {
        next = strchr(field, ';');
        if (next != NULL)
            *next++ = '\0';
        int rc = parse_field(file, at, k, field, x);
        if (rc != 0)
            return rc;
    }
    if (k < 2)
        return complain(EXIT_USAGE, "%s:%u: a line is UNIT;AMOUNT;PLAN1;...[;continues=FRAME]",
                        file, at);
    if (x->plans != plans)
        return complain(EXIT_USAGE, "%s:%u: %u plan amounts; the plan years need %u", file, at,
                        x->plans, plans);
    return 0;
}

/* Reads the lines file into `lines` (count in *n). 0 or an exit status. */
static int read_lines(const char *file, unsigned plans, adopt_line *lines, unsigned *n)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return complain(EXIT_USAGE, "cannot open %s: %s", file, strerror(errno));
    char text[LINE_BYTES_MAX + 2];
    unsigned at = 0;
    size_t total = 0;
    int rc = 0;
    *n = 0;
    while (rc == 0 && fgets(text, sizeof text, f) != NULL) {
        at++;
        size_t len = strlen(text);
        total += len;
        if (total > LINES_FILE_BYTES_MAX || (len > LINE_BYTES_MAX && text[len - 1] != '\n'))
            rc = complain(EXIT_USAGE, "%s:%u: over %u bytes to a line or %u in all", file, at,
                          LINE_BYTES_MAX, LINES_FILE_BYTES_MAX);
        else if (len > 0 && text[len - 1] == '\n')
            text[len - 1] = '\0';
        char *t = trim(text);
        if (rc != 0 || t[0] == '\0' || t[0] == '#')
            continue;
        if (*n == BUDGET_ADOPT_LINES_MAX)
            rc = complain(EXIT_USAGE, "%s: more than %d lines", file, BUDGET_ADOPT_LINES_MAX);
        else
            rc = parse_line(file, at, t, plans, &lines[(*n)++]);
    }
    fclose(f);
    if (rc == 0 && *n == 0)
        rc = complain(EXIT_USAGE, "%s holds no lines", file);
    return rc;
}

static void pack_str_pair(msgpack_packer *pk, const char *key, const char *value)
{
    msgpack_pack_str_with_body(pk, key, strlen(key));
    msgpack_pack_str_with_body(pk, value, strlen(value));
}

static void pack_lines(msgpack_packer *pk, const adopt_line *lines, unsigned n)
{
    msgpack_pack_str_with_body(pk, "lines", 5);
    msgpack_pack_array(pk, n);
    for (unsigned i = 0; i < n; i++) {
        const adopt_line *x = &lines[i];
        msgpack_pack_map(pk, x->continues[0] ? 4 : 3);
        pack_str_pair(pk, "unit", x->unit);
        msgpack_pack_str_with_body(pk, "amount", 6);
        msgpack_pack_int64(pk, x->amount);
        msgpack_pack_str_with_body(pk, "plan", 4);
        msgpack_pack_array(pk, x->plans);
        for (unsigned k = 0; k < x->plans; k++)
            msgpack_pack_int64(pk, x->plan[k]);
        if (x->continues[0])
            pack_str_pair(pk, "continues", x->continues);
    }
}

/* The years and the lines, packed after the table's own args (the decision among them). */
static int pack_adoption(msgpack_packer *pk, const command *cmd, arg_value *values,
                         int32_t plan_until, const adopt_line *lines, unsigned n)
{
    int rc = pack_args(pk, cmd, values, 2);
    if (rc != 0)
        return rc;
    msgpack_pack_str_with_body(pk, "plan_until", 10);
    msgpack_pack_int64(pk, plan_until);
    pack_lines(pk, lines, n);
    return 0;
}

/* --plan against --year: the last plan year (the budget year when there is none). */
static int plan_until_of(const arg_value *plan, int32_t year, int32_t *until)
{
    int32_t from, to;
    *until = year;
    if (!plan->set)
        return 0;
    if (!parse_years(plan->text, &from, &to) || from != year + 1 ||
        to - year > BUDGET_PLAN_YEARS_MAX)
        return complain(EXIT_USAGE,
                        "--plan must be Y1-Y2 from the year after --year, at most %d years "
                        "(2023-2027 for 2022)",
                        BUDGET_PLAN_YEARS_MAX);
    *until = to;
    return 0;
}

int run_adopt(ctl *c, const command *cmd, arg_value *values)
{
    int32_t year = (int32_t)value_of(cmd, values, "year")->number, until;
    int rc = plan_until_of(value_of(cmd, values, "plan"), year, &until);
    if (rc != 0)
        return rc;
    static adopt_line lines[BUDGET_ADOPT_LINES_MAX];
    unsigned n;
    rc = read_lines(value_of(cmd, values, "lines")->text, (unsigned)(until - year), lines, &n);
    if (rc != 0)
        return rc;
    char id[BUDGET_ID_BYTES_MAX + 1];
    arg_value *id_value = value_of(cmd, values, "id");
    if (!id_value->set) {
        snprintf(id, sizeof id, "budget-%d", (int)year);
        id_value->set = true;
        id_value->text = id;
    }
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    budget_response r;
    rc = pack_adoption(&pk, cmd, values, until, lines, n);
    rc = rc != 0 ? complain(EXIT_USAGE, "out of memory") : call_write(c, cmd->op, &args, &r, NULL);
    msgpack_sbuffer_destroy(&args);
    if (rc != 0)
        return rc;
    print_write_result(c, &r, id_value->text);
    budget_response_free(&r);
    return EXIT_DONE;
}

/* ---- years ------------------------------------------------------------------------------ */

/* Asks for one page of years from..to for `unit` (NULL: every unit) at `as_of` (0: now), from
 * the offsets given. */
static int ask_page(ctl *c, const char *unit, const int32_t span[2], uint64_t as_of,
                    const uint64_t at[2], budget_response *out)
{
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5 + (unit != NULL ? 1 : 0) + (as_of > 0 ? 1 : 0));
    pack_str_pair(&pk, "view", "years");
    msgpack_pack_str_with_body(&pk, "from", 4);
    msgpack_pack_int64(&pk, span[0]);
    msgpack_pack_str_with_body(&pk, "to", 2);
    msgpack_pack_int64(&pk, span[1]);
    pack_uint_pair(&pk, "offset", at[0]);
    pack_uint_pair(&pk, "subtotals_offset", at[1]);
    if (unit != NULL)
        pack_str_pair(&pk, "unit", unit);
    if (as_of > 0)
        pack_uint_pair(&pk, "as_of", as_of);
    int rc = call(c, "balances", &args, out);
    msgpack_sbuffer_destroy(&args);
    return rc;
}

/* True when `page` says more follows; then `at` holds the offsets of the next page. */
static bool next_page(const msgpack_object *page, uint64_t at[2])
{
    const msgpack_object *more = budget_map_get(page, "more");
    const msgpack_object *n = budget_map_get(page, "next");
    if (more == NULL || more->type != MSGPACK_OBJECT_BOOLEAN || !more->via.boolean || n == NULL)
        return false;
    uint64_t rows = (uint64_t)budget_map_int(n, "offset", 0);
    uint64_t subtotals = (uint64_t)budget_map_int(n, "subtotals_offset", 0);
    if (rows <= at[0] && subtotals <= at[1])
        return false; /* no progress: stop rather than ask forever */
    at[0] = rows;
    at[1] = subtotals;
    return true;
}

int fetch_years_view(ctl *c, const char *unit, const int32_t span[2], uint64_t as_of,
                     budget_response *first, years_page_fn see, void *state)
{
    uint64_t at[2] = {0, 0};
    int rc = ask_page(c, unit, span, as_of, at, first);
    if (rc != 0)
        return rc;
    as_of = (uint64_t)budget_map_int(&first->result, "as_of", 0);
    const msgpack_object *page = &first->result;
    budget_response next;
    for (unsigned n = 0;; n++) {
        rc = see(page, state) != 0 ? complain(EXIT_USAGE, "out of memory") : 0;
        bool more = rc == 0 && next_page(page, at);
        if (n > 0)
            budget_response_free(&next);
        if (!more)
            break;
        if (n + 1 == BALANCES_PAGES_MAX) {
            rc = complain(EXIT_REFUSED, "years: more than %u pages; narrow the query",
                          BALANCES_PAGES_MAX);
            break;
        }
        rc = ask_page(c, unit, span, as_of, at, &next);
        if (rc != 0)
            break;
        page = &next.result;
    }
    if (rc != 0)
        budget_response_free(first);
    return rc;
}

/* Every page of the view the command asks for (YEARS, --unit, --as-of). */
static int fetch_years(ctl *c, const command *cmd, arg_value *values, const int32_t span[2],
                       budget_response *first, years_page_fn see, void *state)
{
    arg_value *unit = value_of(cmd, values, "unit");
    arg_value *as_of = value_of(cmd, values, "as-of");
    return fetch_years_view(c, unit->set ? unit->text : NULL, span,
                            as_of->set ? (uint64_t)as_of->number : 0, first, see, state);
}

/* The amount columns of a row, a subtotal and a total, in the order shown. */
static const char *const amount_keys[] = {"budget",     "plan",      "allocated",
                                          "called_off", "available", "unspent"};
#define AMOUNTS (sizeof amount_keys / sizeof amount_keys[0])
static const char *const english_headers[] = {"kind",      "unit",       "name",      "parent",
                                              "year",      "plan_by",    "budget",    "plan",
                                              "allocated", "called_off", "available", "unspent"};
static const char *const swedish_headers[] = {
    "typ",    "enhet", "namn",     "överordnad", "år",          "plan_beslutad_år",
    "budget", "plan",  "fördelat", "avropat",    "disponibelt", "ej_förbrukat"};
#define COLUMNS (sizeof english_headers / sizeof english_headers[0])
/* The columns of a unit's name and its year; the amounts follow the year's plan_by. */
#define NAME_COLUMN 2
#define YEAR_COLUMN 4
#define AMOUNT_COLUMN 6
/* A cell: a unit code, a year or an amount "-1 000 000 000 000 000,00 kr" fits. A name is
 * longer (up to BUDGET_TEXT_BYTES_MAX bytes) and is kept apart. */
#define CELL_BYTES 64

/* The kinds of item, in the order they are shown within a group. */
enum { ITEM_ROW, ITEM_SUBTOTAL, ITEM_TOTAL };

/* One item shown: a row, a subtotal or a total, and where it goes (see order_items). */
typedef struct {
    char cells[COLUMNS][CELL_BYTES];
    char *name; /* the name column, escaped; NULL when empty */
    int kind;
    int64_t year;
    size_t rank, order;
} years_item;

/* An amount in kronor for CSV: "1500000.00" or, Swedish, "1500000,00"; "" for nil. */
static void csv_amount(char *out, size_t size, const msgpack_object *v, bool swedish)
{
    out[0] = '\0';
    if (v == NULL ||
        (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER && v->type != MSGPACK_OBJECT_NEGATIVE_INTEGER))
        return;
    int64_t ore = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64 : v->via.i64;
    uint64_t mag = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    snprintf(out, size, "%s%" PRIu64 "%c%02" PRIu64, ore < 0 ? "-" : "", mag / 100,
             swedish ? ',' : '.', mag % 100);
}

/* An amount for the table: "1 500 000,00 kr"; "" for nil. */
static void table_amount(char *out, size_t size, const msgpack_object *v)
{
    out[0] = '\0';
    if (v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        budget_amount_format((int64_t)v->via.u64, out, size);
    else if (v != NULL && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        budget_amount_format(v->via.i64, out, size);
}

/* Display columns of clean UTF-8 text: one per character (no cell holds a wide one). */
static size_t columns_of(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* A str of the daemon's, made safe for a terminal or a CSV cell. */
static void safe_str(const msgpack_object *item, const char *key, char *out)
{
    char raw[CELL_BYTES];
    budget_map_str(item, key, raw, sizeof raw);
    budget_escape(out, CELL_BYTES, raw, strlen(raw));
}

/* The name of `item` made safe, whole, in a new string; NULL when it has none or when out of
 * memory (`failed` is then set). */
static char *safe_name(const msgpack_object *item, bool *failed)
{
    char raw[BUDGET_TEXT_BYTES_MAX + 1], safe[BUDGET_ESCAPED_BYTES(BUDGET_TEXT_BYTES_MAX)];
    budget_map_str(item, "name", raw, sizeof raw);
    if (raw[0] == '\0')
        return NULL;
    budget_escape(safe, sizeof safe, raw, strlen(raw));
    char *copy = strdup(safe);
    *failed = *failed || copy == NULL;
    return copy;
}

typedef struct {
    bool csv, swedish;
    years_item *items;
    size_t count, cap;
    bool failed;
} years_out;

/* The cells of one item: kind, unit, name, parent, year, plan_by, then the amounts. A subtotal
 * shows its parent as its unit. */
static void item_cells(const years_out *o, const msgpack_object *item, years_item *x)
{
    static const char *const kinds[][2] = {
        {"unit", "enhet"}, {"subtotal", "delsumma"}, {"total", "totalt"}};
    snprintf(x->cells[0], CELL_BYTES, "%s", kinds[x->kind][o->swedish ? 1 : 0]);
    safe_str(item, x->kind == ITEM_SUBTOTAL ? "parent" : "unit", x->cells[1]);
    x->cells[NAME_COLUMN][0] = '\0';
    x->cells[3][0] = '\0';
    if (x->kind == ITEM_ROW)
        safe_str(item, "parent", x->cells[3]);
    x->year = budget_map_int(item, "year", 0);
    snprintf(x->cells[YEAR_COLUMN], CELL_BYTES, "%" PRId64, x->year);
    int64_t plan_by = budget_map_int(item, "plan_by", 0);
    x->cells[YEAR_COLUMN + 1][0] = '\0';
    if (plan_by > 0)
        snprintf(x->cells[YEAR_COLUMN + 1], CELL_BYTES, "%" PRId64, plan_by);
    for (size_t k = 0; k < AMOUNTS; k++) {
        const msgpack_object *v = budget_map_get(item, amount_keys[k]);
        if (o->csv)
            csv_amount(x->cells[AMOUNT_COLUMN + k], CELL_BYTES, v, o->swedish);
        else
            table_amount(x->cells[AMOUNT_COLUMN + k], CELL_BYTES, v);
    }
}

/* Keeps the items of `list`, of kind `kind`. */
static void keep_items(years_out *o, const msgpack_object *list, int kind)
{
    if (list == NULL || list->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < list->via.array.size && !o->failed; i++) {
        if (o->count == o->cap) {
            size_t cap = o->cap ? o->cap * 2 : 64;
            years_item *grown = realloc(o->items, cap * sizeof *grown);
            if (grown == NULL) {
                o->failed = true;
                return;
            }
            o->items = grown;
            o->cap = cap;
        }
        years_item *x = &o->items[o->count];
        x->kind = kind;
        x->order = o->count++;
        x->name = kind == ITEM_TOTAL ? NULL : safe_name(&list->via.array.ptr[i], &o->failed);
        item_cells(o, &list->via.array.ptr[i], x);
    }
}

static int keep_page(const msgpack_object *page, void *state)
{
    years_out *o = state;
    keep_items(o, budget_map_get(page, "rows"), ITEM_ROW);
    keep_items(o, budget_map_get(page, "subtotals"), ITEM_SUBTOTAL);
    return o->failed ? -1 : 0;
}

static int item_cmp(const void *pa, const void *pb)
{
    const years_item *a = pa, *b = pb;
    if (a->year != b->year)
        return a->year < b->year ? -1 : 1;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/*
 * Puts the items in the order shown: by year; in a year, first the rows of units under no
 * parent (or under one without a subtotal), then for each subtotal, in the daemon's order, the
 * rows of the units under that parent followed by the subtotal, and last the year's total.
 * O(rows × subtotals).
 */
static void order_items(years_out *o)
{
    for (size_t i = 0; i < o->count; i++) {
        years_item *x = &o->items[i];
        x->rank = x->kind == ITEM_TOTAL ? SIZE_MAX : x->kind == ITEM_SUBTOTAL ? 1 + x->order : 0;
        for (size_t k = 0; x->kind == ITEM_ROW && x->cells[3][0] != '\0' && k < o->count; k++) {
            const years_item *t = &o->items[k];
            if (t->kind == ITEM_SUBTOTAL && t->year == x->year &&
                strcmp(t->cells[1], x->cells[3]) == 0) {
                x->rank = 1 + t->order;
                break;
            }
        }
    }
    qsort(o->items, o->count, sizeof *o->items, item_cmp);
}

/* A CSV field: quoted when it holds the separator, a quote or a line break. */
static void csv_field(const char *s, char sep)
{
    if (strchr(s, sep) == NULL && strchr(s, '"') == NULL && strchr(s, '\n') == NULL) {
        fputs(s, stdout);
        return;
    }
    fputc('"', stdout);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', stdout);
        fputc(*s, stdout);
    }
    fputc('"', stdout);
}

static void csv_line(const char *const *cells, char sep)
{
    for (size_t k = 0; k < COLUMNS; k++) {
        if (k > 0)
            fputc(sep, stdout);
        csv_field(cells[k], sep);
    }
    fputc('\n', stdout);
}

/* Calls `line` with the headers, then every kept item in its order. */
static void each_line(const years_out *o, const char *const *headers,
                      void (*line)(const char *const *cells, const void *state), const void *state)
{
    line(headers, state);
    for (size_t r = 0; r < o->count; r++) {
        const years_item *x = &o->items[r];
        const char *cells[COLUMNS];
        for (size_t k = 0; k < COLUMNS; k++)
            cells[k] = x->cells[k];
        if (x->name != NULL)
            cells[NAME_COLUMN] = x->name;
        line(cells, state);
    }
}

static void csv_out(const char *const *cells, const void *state)
{
    csv_line(cells, *(const char *)state);
}

static void widen(const char *const *cells, const void *state)
{
    size_t *width = (size_t *)(uintptr_t)state;
    for (size_t k = 0; k < COLUMNS; k++) {
        size_t w = columns_of(cells[k]);
        width[k] = w > width[k] ? w : width[k];
    }
}

static void table_out(const char *const *cells, const void *state)
{
    const size_t *width = state;
    for (size_t k = 0; k < COLUMNS; k++) {
        int pad = (int)(width[k] - columns_of(cells[k]));
        if (k >= YEAR_COLUMN) /* numbers to the right */
            printf("%s%*s%s", k > 0 ? "  " : "", pad, "", cells[k]);
        else
            printf("%s%s%*s", k > 0 ? "  " : "", cells[k], k + 1 == COLUMNS ? 0 : pad, "");
    }
    fputc('\n', stdout);
}

/* The table or the CSV of the kept items and the totals of `first`. Headers in Swedish for
 * --swedish (or a Swedish locale); CSV with ';' and a decimal comma for years' --swedish. */
static int print_years(years_out *o, const msgpack_object *first)
{
    keep_items(o, budget_map_get(first, "totals"), ITEM_TOTAL);
    if (o->failed)
        return complain(EXIT_USAGE, "out of memory");
    order_items(o);
    const char *const *headers = o->swedish || cli_swedish ? swedish_headers : english_headers;
    if (o->csv) {
        char sep = o->swedish ? ';' : ',';
        each_line(o, headers, csv_out, &sep);
        return EXIT_DONE;
    }
    /* Every column as wide as its widest cell: no text is cut. */
    size_t width[COLUMNS] = {0};
    each_line(o, headers, widen, width);
    printf("as of seq %" PRId64 "; plan_by: the budget year of the adoption that planned the "
           "amount; a subtotal sums the units under its parent; unspent only for closed years\n",
           budget_map_int(first, "as_of", 0));
    each_line(o, headers, table_out, width);
    return EXIT_DONE;
}

/* --json: the first page's answer with every page's rows and subtotals joined. */
typedef struct {
    FILE *f[2];
    char *text[2];
    size_t size[2];
    uint64_t n[2];
} years_json;

static int json_page(const msgpack_object *page, void *state)
{
    years_json *j = state;
    static const char *const keys[2] = {"rows", "subtotals"};
    for (int k = 0; k < 2; k++) {
        const msgpack_object *list = budget_map_get(page, keys[k]);
        if (list == NULL || list->type != MSGPACK_OBJECT_ARRAY)
            continue;
        for (uint32_t i = 0; i < list->via.array.size; i++) {
            if (j->n[k]++ > 0)
                fputc(',', j->f[k]);
            json_value(j->f[k], &list->via.array.ptr[i], 1);
        }
    }
    return 0;
}

static int run_years_json(ctl *c, const command *cmd, arg_value *values, const int32_t span[2])
{
    years_json j = {{NULL, NULL}, {NULL, NULL}, {0, 0}, {0, 0}};
    j.f[0] = open_memstream(&j.text[0], &j.size[0]);
    j.f[1] = open_memstream(&j.text[1], &j.size[1]);
    budget_response first;
    int rc = j.f[0] && j.f[1] ? fetch_years(c, cmd, values, span, &first, json_page, &j)
                              : complain(EXIT_USAGE, "out of memory");
    for (int k = 0; k < 2; k++)
        if (j.f[k])
            fclose(j.f[k]);
    if (rc == 0) {
        const msgpack_object *r = &first.result;
        printf("{\"as_of\":%" PRId64 ",\"view\":\"years\",\"from\":%" PRId64 ",\"to\":%" PRId64
               ",\"rows\":[%s],\"subtotals\":[%s],\"totals\":",
               budget_map_int(r, "as_of", 0), budget_map_int(r, "from", 0),
               budget_map_int(r, "to", 0), j.text[0] ? j.text[0] : "", j.text[1] ? j.text[1] : "");
        const msgpack_object *totals = budget_map_get(r, "totals");
        if (totals != NULL)
            json_value(stdout, totals, 1);
        else
            fputs("[]", stdout);
        fputs("}\n", stdout);
        budget_response_free(&first);
    }
    free(j.text[0]);
    free(j.text[1]);
    return rc;
}

int run_years(ctl *c, const command *cmd, arg_value *values)
{
    int32_t span[2];
    if (!parse_years(value_of(cmd, values, "YEARS")->text, &span[0], &span[1]) ||
        span[1] - span[0] >= BUDGET_YEARS_SPAN_MAX)
        return complain(EXIT_USAGE, "YEARS must be Y1-Y2, at most %d years (2021-2027)",
                        BUDGET_YEARS_SPAN_MAX);
    years_out o;
    memset(&o, 0, sizeof o);
    o.csv = value_of(cmd, values, "csv")->set;
    o.swedish = value_of(cmd, values, "swedish")->set;
    if (c->json && o.csv)
        return complain(EXIT_USAGE, "--json and --csv do not go together");
    if (c->json)
        return run_years_json(c, cmd, values, span);
    budget_response first;
    int rc = fetch_years(c, cmd, values, span, &first, keep_page, &o);
    if (rc == 0) {
        rc = print_years(&o, &first.result);
        budget_response_free(&first);
    }
    for (size_t i = 0; i < o.count; i++)
        free(o.items[i].name);
    free(o.items);
    return rc;
}
