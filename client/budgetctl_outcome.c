/*
 * Outcome (utfall): `budgetctl import outcome FILE.csv --map MAP`, the actual costs of a month
 * from the financial system's export, written with one `batch` request (every row or none);
 * and `budgetctl outcome --unit U --year Y`, the months set against the budget
 * (docs/budgetctl.md, "import outcome" and "outcome").
 *
 * The CSV is read as `import budget` reads it (import.h); the map file names its columns. A
 * figure equal to the one recorded for its key is not sent: it is reported unchanged. The
 * daemon refuses one that is equal when it arrives (another clerk recorded it meanwhile), so
 * nothing is ever recorded twice; the ids of the writes are made from what they record and
 * the figure they replace, so a batch sent again after a lost answer is answered as a retry.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/amount.h"
#include "budget/errors.h"
#include "budget/limits.h"
#include "client/budgetctl.h"
#include "client/import.h"
#include "proto/fields.h"

/* The map file: small, a key=value a line. */
#define MAP_FILE_BYTES_MAX (64u * 1024u)
#define MAP_LINE_BYTES_MAX 512u
#define MAP_ALIASES_MAX 256u
#define MAP_HEADER_BYTES_MAX 47u
/* Pages of one unit's figures read before giving up (2000 figures a page). */
#define OUTCOME_PAGES_MAX 64u

/* ---- the map file -------------------------------------------------------------------------- */

enum { PERIOD_ANY = 0, PERIOD_DASH = 1, PERIOD_PLAIN = 2 };

typedef struct {
    char from[BUDGET_ID_BYTES_MAX + 1]; /* the code in the file */
    char to[BUDGET_UNIT_BYTES_MAX + 1]; /* the unit */
} unit_alias;

typedef struct {
    /* the columns' headers, folded; allocation "" when the file has none */
    char period[MAP_HEADER_BYTES_MAX + 1], unit[MAP_HEADER_BYTES_MAX + 1];
    char amount[MAP_HEADER_BYTES_MAX + 1], allocation[MAP_HEADER_BYTES_MAX + 1];
    char source[BUDGET_TEXT_BYTES_MAX + 1];
    int period_format;
    unit_alias aliases[MAP_ALIASES_MAX];
    size_t alias_count;
} outcome_map;

static char *trim_text(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* A header word of the map into `out`, folded. 0 or -1 (too long). */
static int map_header(char *out, const char *value)
{
    if (strlen(value) > MAP_HEADER_BYTES_MAX || value[0] == '\0')
        return -1;
    strcpy(out, value);
    import_fold_case(out);
    return 0;
}

static int map_alias(outcome_map *m, const char *from, const char *to)
{
    if (m->alias_count == MAP_ALIASES_MAX || !budget_id_valid(from, strlen(from)) ||
        !budget_unit_valid(to, strlen(to)))
        return -1;
    for (size_t i = 0; i < m->alias_count; i++)
        if (strcmp(m->aliases[i].from, from) == 0)
            return -1;
    snprintf(m->aliases[m->alias_count].from, sizeof(m->aliases[0].from), "%s", from);
    snprintf(m->aliases[m->alias_count].to, sizeof(m->aliases[0].to), "%s", to);
    m->alias_count++;
    return 0;
}

/* One key=value of the map. 0, or -1 after saying why. */
static int map_line(outcome_map *m, const char *path, unsigned line, char *key, char *value)
{
    char *slot = strcmp(key, "period") == 0       ? m->period
                 : strcmp(key, "unit") == 0       ? m->unit
                 : strcmp(key, "amount") == 0     ? m->amount
                 : strcmp(key, "allocation") == 0 ? m->allocation
                                                  : NULL;
    if (slot != NULL) {
        if (slot[0] != '\0' || map_header(slot, value) != 0)
            return complain(-1, "%s:%u: %s is given twice, or is not a header of 1..%u bytes", path,
                            line, key, MAP_HEADER_BYTES_MAX);
        return 0;
    }
    if (strcmp(key, "period_format") == 0) {
        m->period_format = strcmp(value, "YYYY-MM") == 0  ? PERIOD_DASH
                           : strcmp(value, "YYYYMM") == 0 ? PERIOD_PLAIN
                                                          : -1;
        if (m->period_format < 0)
            return complain(-1, "%s:%u: period_format is YYYY-MM or YYYYMM", path, line);
        return 0;
    }
    if (strcmp(key, "source") == 0) {
        if (!budget_text_valid(value, strlen(value), 1))
            return complain(-1, "%s:%u: source is 1..%d bytes of text", path, line,
                            BUDGET_TEXT_BYTES_MAX);
        snprintf(m->source, sizeof(m->source), "%s", value);
        return 0;
    }
    if (strncmp(key, "unit.", 5) == 0) {
        if (map_alias(m, key + 5, value) != 0)
            return complain(-1,
                            "%s:%u: unit.CODE=UNIT: CODE 1..64 of A-Za-z0-9._:-, once; UNIT a "
                            "unit code; at most %u",
                            path, line, MAP_ALIASES_MAX);
        return 0;
    }
    return complain(-1,
                    "%s:%u: \"%.40s\" is not a key of the map: period, unit, amount, allocation, "
                    "period_format, source, unit.CODE",
                    path, line, key);
}

/* Reads the map file. 0, or -1 after saying why. */
static int read_map(outcome_map *m, const char *path)
{
    size_t size = 0;
    char *text = import_read_file(path, &size);
    if (text == NULL)
        return -1;
    int rc = size > MAP_FILE_BYTES_MAX
                 ? complain(-1, "%s: a map is at most %u bytes", path, MAP_FILE_BYTES_MAX)
                 : 0;
    unsigned line = 0;
    for (char *p = text, *next; rc == 0 && p < text + size; p = next) {
        char *end = memchr(p, '\n', (size_t)(text + size - p));
        next = end ? end + 1 : text + size;
        *(end ? end : text + size) = '\0';
        line++;
        if ((size_t)(next - p) > MAP_LINE_BYTES_MAX)
            rc = complain(-1, "%s:%u: a line over %u bytes", path, line, MAP_LINE_BYTES_MAX);
        char *s = trim_text(p + (line == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0 ? 3 : 0));
        char *eq = strchr(s, '=');
        if (rc != 0 || s[0] == '\0' || s[0] == '#')
            continue;
        if (eq == NULL) {
            rc = complain(-1, "%s:%u: not key=value", path, line);
            continue;
        }
        *eq = '\0';
        rc = map_line(m, path, line, trim_text(s), trim_text(eq + 1));
    }
    free(text);
    if (rc == 0 && (!m->period[0] || !m->unit[0] || !m->amount[0]))
        rc = complain(-1, "%s: the map needs period=, unit= and amount= (the columns' headers)",
                      path);
    return rc;
}

/* ---- the rows ------------------------------------------------------------------------------ */

/* A key of the file and its figure: the sum of its rows. */
typedef struct {
    unsigned line; /* its first row */
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    int32_t year;
    int month;
    char allocation[BUDGET_ID_BYTES_MAX + 1];
    int64_t amount;
    bool recorded;   /* a figure is recorded for the key */
    int64_t current; /* ... this one (0 when none) */
    uint64_t current_seq;
} outcome_key;

typedef struct {
    const char *path;
    outcome_map map;
    int column_period, column_unit, column_amount, column_allocation;
    outcome_key *keys;
    size_t count;
    unsigned bad, refused, rows;
} outcome_file;

static int find_column(const csv_record *rec, const char *header)
{
    for (size_t i = 0; header[0] && i < rec->count; i++) {
        char folded[IMPORT_CELL_BYTES_MAX + 1];
        snprintf(folded, sizeof(folded), "%s", rec->cells[i]);
        import_fold_case(folded);
        if (strcmp(folded, header) == 0)
            return (int)i;
    }
    return -1;
}

static int read_columns(outcome_file *f, const csv_record *rec)
{
    f->column_period = find_column(rec, f->map.period);
    f->column_unit = find_column(rec, f->map.unit);
    f->column_amount = find_column(rec, f->map.amount);
    f->column_allocation = find_column(rec, f->map.allocation);
    const char *missing =
        f->column_period < 0 ? f->map.period
        : f->column_unit < 0 ? f->map.unit
        : f->column_amount < 0
            ? f->map.amount
            : (f->map.allocation[0] && f->column_allocation < 0 ? f->map.allocation : NULL);
    if (missing)
        return complain(-1, "%s:%u: no column \"%s\" in the header (the map names it)", f->path,
                        rec->line, missing);
    return 0;
}

/* A period "2021-09" or "202109" (as the map allows). */
static bool parse_period(const char *s, int format, int32_t *year, int *month)
{
    size_t n = strlen(s);
    bool dash = n == 7 && s[4] == '-', plain = n == 6;
    if (!(dash && format != PERIOD_PLAIN) && !(plain && format != PERIOD_DASH))
        return false;
    char digits[7];
    memcpy(digits, s, 4);
    memcpy(digits + 4, s + (dash ? 5 : 4), 2);
    for (int i = 0; i < 6; i++)
        if (digits[i] < '0' || digits[i] > '9')
            return false;
    *year = (digits[0] - '0') * 1000 + (digits[1] - '0') * 100 + (digits[2] - '0') * 10 +
            (digits[3] - '0');
    *month = (digits[4] - '0') * 10 + (digits[5] - '0');
    return *year >= BUDGET_YEAR_MIN && *year <= BUDGET_YEAR_MAX && *month >= 1 && *month <= 12;
}

static const char *cell_at(const csv_record *rec, int column)
{
    return column >= 0 && (size_t)column < rec->count ? rec->cells[column] : "";
}

static const char *unit_of(const outcome_map *m, const char *code)
{
    for (size_t i = 0; i < m->alias_count; i++)
        if (strcmp(m->aliases[i].from, code) == 0)
            return m->aliases[i].to;
    return code;
}

/* Reads a data row into `k`. 0, or -1 after saying why with the line. */
static int read_key(outcome_file *f, const csv_record *rec, outcome_key *k)
{
    char why[160];
    const char *period = cell_at(rec, f->column_period);
    const char *unit = unit_of(&f->map, cell_at(rec, f->column_unit));
    const char *allocation = cell_at(rec, f->column_allocation);
    const char *amount = cell_at(rec, f->column_amount);
    memset(k, 0, sizeof(*k));
    k->line = rec->line;
    if (!parse_period(period, f->map.period_format, &k->year, &k->month))
        return complain(-1, "%s:%u: %s \"%.20s\" is not a period %s", f->path, rec->line,
                        f->map.period, period,
                        f->map.period_format == PERIOD_DASH    ? "YYYY-MM"
                        : f->map.period_format == PERIOD_PLAIN ? "YYYYMM"
                                                               : "YYYY-MM or YYYYMM");
    if (!budget_unit_valid(unit, strlen(unit)))
        return complain(-1, "%s:%u: %s \"%.40s\" is not a unit code (1-32 of A-Z a-z 0-9 . _ : -)",
                        f->path, rec->line, f->map.unit, unit);
    if (allocation[0] && !budget_id_valid(allocation, strlen(allocation)))
        return complain(-1, "%s:%u: %s \"%.70s\" is not an allocation id", f->path, rec->line,
                        f->map.allocation, allocation);
    if (!amount[0] || budget_amount_parse(amount, &k->amount, why, sizeof(why)) != 0)
        return complain(-1, "%s:%u: %s \"%.40s\" is not an amount: %s", f->path, rec->line,
                        f->map.amount, amount, amount[0] ? why : "empty");
    snprintf(k->unit, sizeof(k->unit), "%s", unit);
    snprintf(k->allocation, sizeof(k->allocation), "%s", allocation);
    return 0;
}

/* Adds a row's figure to its key: rows of one key (the accounts of a month) are summed. */
static int add_key(outcome_file *f, const outcome_key *k)
{
    for (size_t i = 0; i < f->count; i++) {
        outcome_key *o = &f->keys[i];
        if (o->year != k->year || o->month != k->month || strcmp(o->unit, k->unit) != 0 ||
            strcmp(o->allocation, k->allocation) != 0)
            continue;
        int64_t sum = o->amount + k->amount;
        if (sum > BUDGET_AMOUNT_MAX || sum < -BUDGET_AMOUNT_MAX)
            return complain(-1, "%s:%u: with line %u the sum passes 10^15 öre", f->path, k->line,
                            o->line);
        o->amount = sum;
        return 0;
    }
    f->keys[f->count++] = *k;
    return 0;
}

/* Every record after the header. 0, or -1 when the file cannot be read on (said). */
static int read_outcome_rows(outcome_file *f, csv_reader *r, csv_record *rec)
{
    char why[120];
    int rc;
    bool header = false;
    while ((rc = csv_next(r, rec, why, sizeof(why))) == 1) {
        if (csv_record_empty(rec))
            continue;
        if (!header) {
            if (read_columns(f, rec) != 0)
                return -1;
            header = true;
            continue;
        }
        if (f->rows == IMPORT_ROWS_MAX)
            return complain(-1, "%s:%u: more than %u rows; split the file", f->path, rec->line,
                            IMPORT_ROWS_MAX);
        f->rows++;
        outcome_key k;
        if (read_key(f, rec, &k) != 0 || add_key(f, &k) != 0)
            f->bad++;
    }
    if (rc < 0)
        return complain(-1, "%s:%u: %s", f->path, rec->line, why);
    if (!header)
        return complain(-1, "%s: no header and no rows", f->path);
    return 0;
}

/* ---- what is recorded now ------------------------------------------------------------------ */

/* Sets the current figure of each key of `unit` in `year` from one page of `outcome`. */
static void take_figures(outcome_file *f, const char *unit, int32_t year, const msgpack_object *r)
{
    const msgpack_object *list = budget_map_get(r, "figures");
    for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size;
         i++) {
        const msgpack_object *x = &list->via.array.ptr[i];
        char allocation[BUDGET_ID_BYTES_MAX + 1];
        budget_map_str(x, "allocation", allocation, sizeof(allocation));
        int64_t month = budget_map_int(x, "month", 0);
        for (size_t k = 0; k < f->count; k++) {
            outcome_key *o = &f->keys[k];
            if (o->year == year && o->month == month && strcmp(o->unit, unit) == 0 &&
                strcmp(o->allocation, allocation) == 0) {
                o->recorded = true;
                o->current = budget_map_int(x, "amount", 0);
                o->current_seq = (uint64_t)budget_map_int(x, "seq", 0);
            }
        }
    }
}

/* Reads every page of the figures of `unit` in `year`. 0 or an exit status (said). */
static int read_recorded(ctl *c, outcome_file *f, const char *unit, int32_t year)
{
    uint64_t offset = 0;
    for (unsigned page = 0; page < OUTCOME_PAGES_MAX; page++) {
        msgpack_sbuffer args;
        msgpack_packer pk;
        budget_response r;
        msgpack_sbuffer_init(&args);
        msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "unit", 4);
        msgpack_pack_str_with_body(&pk, unit, strlen(unit));
        msgpack_pack_str_with_body(&pk, "year", 4);
        msgpack_pack_int64(&pk, year);
        pack_uint_pair(&pk, "offset", offset);
        int rc = call(c, "outcome", &args, &r);
        msgpack_sbuffer_destroy(&args);
        if (rc != 0)
            return rc;
        take_figures(f, unit, year, &r.result);
        const msgpack_object *more = budget_map_get(&r.result, "more");
        const msgpack_object *next = budget_map_get(&r.result, "next");
        bool again = more && more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean;
        offset = next ? (uint64_t)budget_map_int(next, "offset", 0) : 0;
        budget_response_free(&r);
        if (!again)
            return 0;
    }
    return complain(EXIT_CONNECTION, "the outcome of %s in %d has more pages than budgetctl reads",
                    unit, (int)year);
}

/* Reads the recorded figures of every unit and year the file names. 0 or an exit status. */
static int read_all_recorded(ctl *c, outcome_file *f)
{
    for (size_t i = 0; i < f->count; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen =
                f->keys[j].year == f->keys[i].year && strcmp(f->keys[j].unit, f->keys[i].unit) == 0;
        if (seen)
            continue;
        int rc = read_recorded(c, f, f->keys[i].unit, f->keys[i].year);
        if (rc != 0)
            return complain(rc, "%s:%u: the outcome recorded for %s in %d cannot be read", f->path,
                            f->keys[i].line, f->keys[i].unit, (int)f->keys[i].year);
    }
    return 0;
}

/* ---- the writes ---------------------------------------------------------------------------- */

/* FNV-1a, 64 bits, over `n` bytes. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* The id of a key's write: from what it records and the figure (the seq) it replaces, so the
 * same import of the same state makes the same ids, and another state other ids. */
static void write_id(const outcome_key *k, const char *source, char *out, size_t size)
{
    char text[512];
    int n = snprintf(text, sizeof(text), "%s|%d|%d|%s|%" PRId64 "|%" PRIu64 "|%s", k->unit,
                     (int)k->year, k->month, k->allocation, k->amount, k->current_seq, source);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
    uint64_t h = fnv(UINT64_C(0xcbf29ce484222325), text, len);
    snprintf(out, size, "utfall-%016" PRIx64, h);
}

static int pack_key_write(import_row *row, const outcome_key *k, const char *source)
{
    msgpack_packer pk;
    write_id(k, source, row->id, sizeof(row->id));
    row->line = k->line;
    msgpack_sbuffer_init(&row->write);
    msgpack_packer_init(&pk, &row->write, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, 2);
    rc |= msgpack_pack_str_with_body(&pk, "op", 2);
    rc |= msgpack_pack_str_with_body(&pk, "outcome.record", 14);
    rc |= msgpack_pack_str_with_body(&pk, "args", 4);
    rc |= msgpack_pack_map(&pk, k->allocation[0] ? 7 : 6);
    rc |= msgpack_pack_str_with_body(&pk, "id", 2);
    rc |= msgpack_pack_str_with_body(&pk, row->id, strlen(row->id));
    rc |= msgpack_pack_str_with_body(&pk, "unit", 4);
    rc |= msgpack_pack_str_with_body(&pk, k->unit, strlen(k->unit));
    rc |= msgpack_pack_str_with_body(&pk, "year", 4);
    rc |= msgpack_pack_int64(&pk, k->year);
    rc |= msgpack_pack_str_with_body(&pk, "month", 5);
    rc |= msgpack_pack_int64(&pk, k->month);
    if (k->allocation[0]) {
        rc |= msgpack_pack_str_with_body(&pk, "allocation", 10);
        rc |= msgpack_pack_str_with_body(&pk, k->allocation, strlen(k->allocation));
    }
    rc |= msgpack_pack_str_with_body(&pk, "amount", 6);
    rc |= msgpack_pack_int64(&pk, k->amount);
    rc |= msgpack_pack_str_with_body(&pk, "source", 6);
    rc |= msgpack_pack_str_with_body(&pk, source, strlen(source));
    return rc == 0 ? 0 : -1;
}

/* "SON 2021-09 [a-son]" */
static void key_text(const outcome_key *k, char *out, size_t size)
{
    snprintf(out, size, "%s %04d-%02d%s%s", k->unit, (int)k->year, k->month,
             k->allocation[0] ? " " : "", k->allocation);
}

/* Says each unchanged key; packs a write for each changed one into rows. */
static size_t plan_writes(const outcome_file *f, import_row *rows, const char *source, bool quiet)
{
    size_t n = 0;
    for (size_t i = 0; i < f->count; i++) {
        const outcome_key *k = &f->keys[i];
        char what[160], amount[48];
        key_text(k, what, sizeof(what));
        budget_amount_format(k->amount, amount, sizeof(amount));
        if (k->amount == k->current) {
            if (!quiet)
                printf("line %u: %s %s unchanged\n", k->line, what, amount);
            continue;
        }
        if (pack_key_write(&rows[n], k, source) != 0)
            break;
        n++;
    }
    return n;
}

static void print_outcome_written(const outcome_file *f, const import_row *rows, size_t n,
                                  const budget_response *r, bool dry_run)
{
    const msgpack_object *w = budget_map_get(&r->result, "writes");
    size_t got = w && w->type == MSGPACK_OBJECT_ARRAY ? w->via.array.size : 0;
    for (size_t i = 0; i < n && i < got; i++) {
        const outcome_key *k = NULL;
        for (size_t j = 0; j < f->count && !k; j++)
            k = f->keys[j].line == rows[i].line ? &f->keys[j] : NULL;
        char what[160], amount[48], was[48];
        key_text(k, what, sizeof(what));
        budget_amount_format(k->amount, amount, sizeof(amount));
        budget_amount_format(k->current, was, sizeof(was));
        printf("line %u: %s %s (was %s) seq %" PRId64 "\n", k->line, what, amount,
               k->recorded ? was : "none", budget_map_int(&w->via.array.ptr[i], "seq", 0));
    }
    if (dry_run)
        printf("dry run: %zu figures of %s would be recorded, %zu unchanged; nothing was written\n",
               got, f->path, f->count - n);
    else
        printf("recorded %zu figures of %s, %zu unchanged\n", got, f->path, f->count - n);
}

/* Sends the changed figures (as a dry run when asked or when lines were bad) and reports. */
static int send_outcome(ctl *c, outcome_file *f, import_row *rows, size_t n, bool dry_run)
{
    msgpack_sbuffer args;
    budget_response r;
    bool check_only = dry_run || f->bad > 0;
    msgpack_sbuffer_init(&args);
    int rc =
        import_pack_batch(&args, rows, n, check_only) != 0 ? complain(EXIT_USAGE, "out of memory")
        : args.size > BUDGET_FRAME_BYTES_MAX - 1024
            ? complain(EXIT_USAGE, "%s: the rows take more than 1 MiB; split the file", f->path)
            : import_send_batch(c, &args, &r);
    msgpack_sbuffer_destroy(&args);
    if (rc != 0)
        return rc;
    if (!r.ok)
        rc = import_say_refusals(f->path, rows, n, &r, &f->refused);
    else if (c->json && f->bad == 0)
        json_line(&r.result);
    else if (f->bad == 0)
        print_outcome_written(f, rows, n, &r, dry_run);
    budget_response_free(&r);
    return rc;
}

/* The source label of the figures: the map's, else the file's name without its folders. */
static const char *source_of(const outcome_file *f)
{
    if (f->map.source[0])
        return f->map.source;
    const char *slash = strrchr(f->path, '/');
    return slash ? slash + 1 : f->path;
}

static int import_outcome_rows(ctl *c, outcome_file *f, bool dry_run)
{
    const char *source = source_of(f);
    if (!budget_text_valid(source, strlen(source), 1))
        return complain(EXIT_USAGE,
                        "the file's name is not a source label of 1..%d bytes; give "
                        "source= in the map",
                        BUDGET_TEXT_BYTES_MAX);
    int rc = read_all_recorded(c, f);
    if (rc != 0)
        return rc;
    import_row *rows = calloc(f->count + 1, sizeof(*rows));
    if (!rows)
        return complain(EXIT_USAGE, "out of memory");
    size_t n = plan_writes(f, rows, source, c->json);
    if (n == 0 && f->bad == 0 && c->json)
        printf("{\"writes\": [], \"unchanged\": %zu}\n", f->count);
    else if (n == 0 && f->bad == 0)
        printf("nothing to record: the %zu figures of %s are recorded as they are\n", f->count,
               f->path);
    else if (n > 0)
        rc = send_outcome(c, f, rows, n, dry_run);
    for (size_t i = 0; i < n; i++)
        msgpack_sbuffer_destroy(&rows[i].write);
    free(rows);
    return rc;
}

int run_import_outcome(ctl *c, const command *cmd, arg_value *values)
{
    outcome_file f = {.path = value_of(cmd, values, "FILE")->text};
    const arg_value *map = value_of(cmd, values, "map");
    bool dry_run = value_of(cmd, values, "dry-run")->set;
    size_t size = 0;
    int rc = EXIT_REFUSED;
    if (!map->set)
        return complain(EXIT_USAGE, "import outcome needs --map MAP (docs/budgetctl.md)");
    if (read_map(&f.map, map->text) != 0)
        return EXIT_USAGE;
    char *text = import_read_file(f.path, &size);
    csv_record *rec = malloc(sizeof(*rec));
    f.keys = calloc(IMPORT_ROWS_MAX, sizeof(*f.keys));
    if (!text || !rec || !f.keys) {
        rc = text ? complain(EXIT_USAGE, "out of memory") : EXIT_USAGE;
        goto done;
    }
    csv_reader r;
    csv_reader_init(&r, text, size);
    if (read_outcome_rows(&f, &r, rec) != 0)
        goto done;
    rc = f.rows == 0 ? complain(EXIT_REFUSED, "%s: no rows to import", f.path)
                     : import_outcome_rows(c, &f, dry_run);
    if (rc == 0 && f.bad > 0)
        rc = EXIT_REFUSED;
    if (f.bad + f.refused > 0)
        complain(0, "%s: %u of %u rows refused; nothing was %s", f.path, f.bad + f.refused, f.rows,
                 dry_run ? "written (dry run)" : "imported");
done:
    free(f.keys);
    free(rec);
    free(text);
    return rc;
}

/* ---- budgetctl outcome --------------------------------------------------------------------- */

/* "1234,50" or "-0,05": öre with a decimal comma, for CSV. */
static void csv_kronor(int64_t ore, char *out, size_t size)
{
    uint64_t m = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    snprintf(out, size, "%s%" PRIu64 ",%02u", ore < 0 ? "-" : "", m / 100, (unsigned)(m % 100));
}

static void print_outcome_csv(const msgpack_object *r, int32_t year)
{
    const msgpack_object *months = budget_map_get(r, "months");
    int64_t to_date = 0;
    printf("%s;%s;%s\r\n", header_text("month"), header_text("outcome_kr"),
           header_text("to_date_kr"));
    for (uint32_t m = 0;
         months && months->type == MSGPACK_OBJECT_ARRAY && m < months->via.array.size && m < 12;
         m++) {
        const msgpack_object *v = &months->via.array.ptr[m];
        int64_t amount = v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER   ? v->via.i64
                         : v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64
                                                                      : 0;
        char a[40], t[40];
        to_date += amount;
        csv_kronor(amount, a, sizeof(a));
        csv_kronor(to_date, t, sizeof(t));
        printf("%04d-%02u;%s;%s\r\n", (int)year, m + 1, a, t);
    }
}

/* Prints `s` padded with spaces to `width` columns (a UTF-8 character is one column), on the
 * left when `right`. */
static void print_padded(const char *s, size_t width, bool right)
{
    size_t columns = 0;
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        columns += (*u & 0xc0) != 0x80;
    for (size_t i = columns; right && i < width; i++)
        putchar(' ');
    fputs(s, stdout);
    for (size_t i = columns; !right && i < width; i++)
        putchar(' ');
}

static void print_summary_line(const char *label, const char *value)
{
    print_padded(header_text(label), 24, false);
    printf(" %s\n", value);
}

static void print_outcome_summary(const msgpack_object *r)
{
    char text[64];
    budget_amount_format(budget_map_int(r, "budget", 0), text, sizeof(text));
    print_summary_line("Budget:", text);
    budget_amount_format(budget_map_int(r, "outcome", 0), text, sizeof(text));
    print_summary_line("Outcome to date:", text);
    const msgpack_object *used = budget_map_get(r, "used_permille");
    if (used && used->type != MSGPACK_OBJECT_NIL) {
        int64_t p = budget_map_int(r, "used_permille", 0);
        snprintf(text, sizeof(text), "%s%" PRId64 ",%" PRId64 " %%", p < 0 ? "-" : "",
                 (p < 0 ? -p : p) / 10, (p < 0 ? -p : p) % 10);
    } else {
        snprintf(text, sizeof(text), "-");
    }
    print_summary_line("Used of budget:", text);
    budget_amount_format(budget_map_int(r, "deviation", 0), text, sizeof(text));
    print_summary_line("Deviation:", text);
    budget_amount_format(budget_map_int(r, "forecast", 0), text, sizeof(text));
    print_summary_line("Full-year forecast:", text);
}

static void print_outcome_table(const msgpack_object *r, int32_t year)
{
    const msgpack_object *months = budget_map_get(r, "months");
    char name[BUDGET_TEXT_BYTES_MAX + 1], unit[BUDGET_UNIT_BYTES_MAX + 1];
    int64_t to_date = 0;
    budget_map_str(r, "unit", unit, sizeof(unit));
    text_cell(name, sizeof(name), r, "name", 60);
    printf("%s %s (%s), %d\n", header_text("Outcome of"), unit, name, (int)year);
    print_padded(header_text("MONTH"), 7, false);
    putchar(' ');
    print_padded(header_text("OUTCOME"), 22, true);
    putchar(' ');
    print_padded(header_text("TO DATE"), 22, true);
    putchar('\n');
    for (uint32_t m = 0;
         months && months->type == MSGPACK_OBJECT_ARRAY && m < months->via.array.size && m < 12;
         m++) {
        const msgpack_object *v = &months->via.array.ptr[m];
        int64_t amount = v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER   ? v->via.i64
                         : v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64
                                                                      : 0;
        char a[48], t[48];
        to_date += amount;
        budget_amount_format(amount, a, sizeof(a));
        budget_amount_format(to_date, t, sizeof(t));
        printf("%04d-%02u ", (int)year, m + 1);
        print_padded(a, 22, true);
        putchar(' ');
        print_padded(t, 22, true);
        putchar('\n');
    }
    print_outcome_summary(r);
}

int run_outcome(ctl *c, const command *cmd, arg_value *values)
{
    msgpack_sbuffer args;
    msgpack_packer pk;
    budget_response r;
    msgpack_sbuffer_init(&args);
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    if (pack_args(&pk, cmd, values, 0) != 0) {
        msgpack_sbuffer_destroy(&args);
        return complain(EXIT_USAGE, "out of memory");
    }
    int rc = call(c, cmd->op, &args, &r);
    msgpack_sbuffer_destroy(&args);
    if (rc != 0) {
        unit_hint(c, value_of(cmd, values, "unit")->text);
        return rc;
    }
    int32_t year = (int32_t)value_of(cmd, values, "year")->number;
    if (c->json)
        json_line(&r.result);
    else if (value_of(cmd, values, "csv")->set)
        print_outcome_csv(&r.result, year);
    else
        print_outcome_table(&r.result, year);
    budget_response_free(&r);
    return EXIT_DONE;
}
