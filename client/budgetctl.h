/*
 * What budgetctl.c (the command table, arguments, connection, printing) and budgetctl_audit.c
 * (watch, history, audit, backup, export) share: the types of the command table, the exit
 * statuses and the helpers both call.
 */
#ifndef BUDGETCTL_H
#define BUDGETCTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

#include "budget/client_msgpack.h"

enum {
    EXIT_DONE = 0,
    EXIT_REFUSED = 1,
    EXIT_USAGE = 2,
    EXIT_CONNECTION = 3,
    EXIT_BROKEN_CHAIN = 4,
};

/* Arguments a command may take, besides --socket, --json and --help. */
#define OPTS_MAX 12
/* balances pages followed (each list up to 2000 items or 192 KiB a page) before giving up. */
#define BALANCES_PAGES_MAX 1000u
/* Columns of a table. */
#define TABLE_COLUMNS_MAX 12

/* ---- argument tables ------------------------------------------------------------------- */

typedef enum {
    KIND_FLAG,       /* no value */
    KIND_ID,         /* 1..64 of A-Za-z0-9._:- */
    KIND_UNIT,       /* 1..32 of the same */
    KIND_TEXT,       /* UTF-8, min..max bytes */
    KIND_WORD,       /* an event type: 1..64 of the id characters */
    KIND_AMOUNT,     /* an amount as budget_amount_parse reads it */
    KIND_UINT,       /* decimal, min..max */
    KIND_DATE,       /* a day YYYY-MM-DD (UTC) as ms: its first ms, or with min 1 the next day's */
    KIND_DECISION,   /* a decision "KS 2021-08-24 § 241 [dnr KS 2021/123]" (budget_decision_parse),
                        sent as decision_body, decision_date, decision_paragraph [, decision_dnr] */
    KIND_DAY,        /* a day YYYY-MM-DD, sent as that str */
    KIND_SEQ_OR_DAY, /* a seq (number, min..max) or a day YYYY-MM-DD (number 0, text the day) */
} arg_kind;

enum { ARG_REQUIRED = 1, ARG_POSITIONAL = 2 };

typedef struct {
    const char *name; /* option name without "--"; a positional's placeholder ("FRAME") */
    arg_kind kind;
    const char *wire; /* key in the request's args; NULL when the command packs it itself */
    unsigned flags;
    const char *meta; /* the value's placeholder in usage lines */
    const char *help;
    uint64_t min, max; /* bytes for text, the range for numbers */
} arg_spec;

typedef struct {
    bool set;
    const char *text;
    int64_t number; /* amounts and numbers (numbers are checked to fit) */
} arg_value;

typedef struct ctl ctl;
typedef struct command command;
typedef int (*command_fn)(ctl *c, const command *cmd, arg_value *values);

struct command {
    const char *name;
    const char *op;
    const char *id_kind; /* writes: the prefix of generated ids; NULL for reads */
    command_fn run;
    const char *summary;
    arg_spec args[OPTS_MAX];
};

/* The connection and what every command shares. */
struct ctl {
    char socket_path[128];
    bool json;
    budget_client *client;
};

/* ---- budgetctl_audit.c: the audit and integration commands ---------------------------- */

/* The commands of budgetctl_audit.c, rows of the command table. */
int run_watch(ctl *c, const command *cmd, arg_value *values);
int run_history(ctl *c, const command *cmd, arg_value *values);
int run_audit(ctl *c, const command *cmd, arg_value *values);
int run_backup(ctl *c, const command *cmd, arg_value *values);
int run_export(ctl *c, const command *cmd, arg_value *values);
/* budgetctl report: one HTML page of balances for a committee (client/report.h). */
int run_report(ctl *c, const command *cmd, arg_value *values);
/* Called with each event of a walk over `events` pages; nonzero stops the walk with it. */
typedef int (*event_fn)(void *state, const msgpack_object *event);
/* Reads `events` pages from `after` on until the head the first page reported, calling `fn`
 * for each event. `cmd` and `values` give filters (NULL: none). 0 or an exit status. */
int walk_events(ctl *c, const command *cmd, const arg_value *values, uint64_t after, event_fn fn,
                void *state, uint64_t *head_out);
/* budgetctl_import.c: import budget FILE.csv, one `batch` of frames and allocations. */
int run_import(ctl *c, const command *cmd, arg_value *values);
/* budgetctl_years.c: budget adoptions and the units × years view. */
int run_adopt(ctl *c, const command *cmd, arg_value *values);
int run_years(ctl *c, const command *cmd, arg_value *values);
/* Sees one page of the units × years view (its rows and subtotals): 0, or -1 when out of
 * memory (the fetch stops). */
typedef int (*years_page_fn)(const msgpack_object *page, void *state);
/* Fetches every page of the units × years view (`balances` with view "years") of years
 * span[0]..span[1] (at most BUDGET_YEARS_SPAN_MAX) for `unit` (NULL: every unit), as of seq
 * `as_of` (0: now), each further page as of the seq of the first; `see` sees every page.
 * Returns 0 with the first answer in `first` (its totals cover every page; the caller frees
 * it), or an exit status after saying why (nothing to free). */
int fetch_years_view(ctl *c, const char *unit, const int32_t span[2], uint64_t as_of,
                     budget_response *first, years_page_fn see, void *state);
/* A write with retries (the same id); 0 with `out` an ok answer, else an exit status. */
int call_write(ctl *c, const char *op, const msgpack_sbuffer *args, budget_response *out,
               const char *generated_id);
/* "<kind>-<12 lowercase hex>"; 0 or a negative errno. */
int generate_id(const char *kind, char *out, size_t out_size);
/* One line for a write's answer (or its JSON). */
void print_write_result(const ctl *c, const budget_response *r, const char *id);
/* budgetctl_outcome.c: import outcome FILE.csv --map MAP, and the outcome of a unit's year. */
int run_import_outcome(ctl *c, const command *cmd, arg_value *values);
int run_outcome(ctl *c, const command *cmd, arg_value *values);
/* KIND_DATE: a day; the value is its first ms, or (min 1) the first ms of the next day. */
int check_date(const arg_spec *spec, const char *label, const char *text, int64_t *out);

/* --as-of SEQ|DAY: sets v->number to the seq (a day: the last seq entered by its end, UTC,
 * read from the events' ts). Returns 0 or an exit status after saying why. */
int resolve_as_of(ctl *c, arg_value *v);
/* Whether an event passes --unit (data.unit), --type and --from/--to of `cmd`'s values. */
bool event_passes(const command *cmd, arg_value *values, const msgpack_object *event);

/* ---- budgetctl_cli.c: output modes, did you mean, refusals, progress -------------------- */

/* For the whole run: --json (errors as JSON on stderr too), --swedish or a Swedish locale
 * (headers in Swedish), --wide (no text cut in tables), quiet (complain says nothing). */
extern bool cli_json, cli_swedish, cli_wide, cli_quiet;
bool locale_is_swedish(void);
/* A header or title in the language of the run. */
const char *header_text(const char *english);
/* The nearest of `n` words to `word` (a typo's worth of edits away), or NULL. */
const char *nearest_word(const char *word, const char *const *words, size_t n);
/* A daemon's message with its amounts in öre written in kronor, and what is left. */
void kronor_text(const char *message, char *out, size_t size);
/* Says `code: message` (amounts in kronor, `generated_id` left out) and returns `status`. */
int refusal(int status, const char *code, const char *message, const char *generated_id);
/* " (join the group G, ...)" for a socket refused for permissions, or "". */
void permission_hint(const char *path, char *out, size_t size);
/* Progress lines on stderr when it is a terminal (and not --json). */
void progress_begin(const char *what);
void progress_update(uint64_t done, uint64_t total, const char *unit);
void progress_end(void);

/* ---- budgetctl_complete.c: completion, pending, unit codes ------------------------------- */

/* budgetctl complete WORDS...: the candidates for the last word, one a line. */
int run_complete(const char *socket_flag, int argc, char **argv);
int run_pending(ctl *c, const command *cmd, arg_value *values);
/* After a read or write that named an unknown unit: "did you mean" on stderr. */
void unit_hint(ctl *c, const char *unit);
/* The command table, for completion. */
const command *command_at(size_t i);
/* The kind of a command's option `name`, or -1 when it takes none by that name. */
int option_kind(const command *cmd, const char *name);

/* ---- budgetctl.c: helpers shared with budgetctl_audit.c --------------------------------- */

/* Rows of cells, each a copy; widths grow as rows are added. Printed once complete. */
typedef struct {
    size_t columns;
    const char *headers[TABLE_COLUMNS_MAX];
    bool right[TABLE_COLUMNS_MAX];
    size_t widths[TABLE_COLUMNS_MAX];
    char **cells;
    size_t rows;
    size_t capacity;
} table;

/* The tables `balances` prints. */
typedef struct {
    table frames, allocations, avrop, units;
} balance_tables;

/* Empty tables of frames, allocations, avrop and units, with their headers; and their end. */
void balance_tables_init(balance_tables *t);
void balance_tables_free(balance_tables *t);

/* Items of an array. */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The lists of a balances answer, each paged on its own by the daemon. */
enum { BAL_FRAMES, BAL_ALLOCATIONS, BAL_AVROP, BAL_UNITS, BAL_LISTS };

/* The lists a fetch asks for, bits (1 << BAL_...); the others come empty. */
#define BALANCES_ALL_LISTS ((1u << BAL_LISTS) - 1)

/* Where each list goes on: the offset of its next page. */
typedef struct {
    uint64_t at[BAL_LISTS];
} balances_cursor;

/* Sees one page of balances; 0, or -1 when out of memory. */
typedef int (*page_fn)(void *state, const msgpack_object *result);

/* JSON of balances: one object, every page's items of each list joined into one list. */
typedef struct {
    FILE *out[BAL_LISTS];
    char *joined[BAL_LISTS];
    size_t size[BAL_LISTS];
    uint64_t listed[BAL_LISTS];
} balances_json;

/* Prints one line "budgetctl: ..." on stderr, escaped where it must be, and returns `status`. */
int complain(int status, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* --json: an error as one line {"error": {"code", "message"}, "exit": status} on stderr. */
void json_error(int status, const char *code, size_t code_len, const char *message);
/* A note on stderr that is no error: "budgetctl: ...", or {"notice": ...} with --json. */
void notice(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* A msgpack value as JSON, `depth` levels in; and a whole value as one line on stdout. */
void json_value(FILE *f, const msgpack_object *o, int depth);
void json_line(const msgpack_object *o);
/* The value of the command's argument `name` (a row of its table). */
arg_value *value_of(const command *cmd, arg_value *values, const char *name);
/* Packs every given argument that has a wire name, as a map with `extra` more pairs that the
 * caller packs after. Returns 0 or -ENOMEM. */
int pack_args(msgpack_packer *pk, const command *cmd, const arg_value *values, uint32_t extra);
int pack_uint_pair(msgpack_packer *pk, const char *key, uint64_t value);
/* Words for a budget_client error. */
const char *client_error(int rc);
/* Connects to the daemon at c->socket_path (an exit status after saying why); and closes. */
int connect_daemon(ctl *c);
void disconnect_daemon(ctl *c);
/* A read: one request, no retry. Returns 0 with `out` holding an ok response, else the exit
 * status after saying why. */
int call(ctl *c, const char *op, const msgpack_sbuffer *args, budget_response *out);
/* The `verify` and `balances` commands, which `audit` runs against the daemon. */
int run_verify(ctl *c, const command *cmd, arg_value *values);
int run_balances(ctl *c, const command *cmd, arg_value *values);
/* True when a balances answer says more pages follow. */
bool more_pages(const msgpack_object *result);
/* A cursor at the start of the lists in `wanted` (bits 1 << BAL_...); the others skipped. */
void balances_cursor_init(balances_cursor *cur, unsigned wanted);
/* Moves `cur` to the answer's "next". True when some list moved on (false when the answer
 * has no "next": a daemon that pages only allocations). */
bool balances_advance(const msgpack_object *result, balances_cursor *cur);
/*
 * Fetches every page of `balances` for the lists in `wanted`: each further page asked `as_of`
 * the seq of the first, with the offsets the answer before gave in "next", until "more" is
 * false. `page` sees every page. Returns 0 with the first page in `first` (the caller frees
 * it), or an exit status after saying why (nothing to free).
 */
int fetch_balances(ctl *c, const command *cmd, arg_value *values, unsigned wanted,
                   budget_response *first, page_fn page, void *state);
/* page_fn: adds a page's items to the balance_tables at `state`; and prints the tables. */
int balances_page_rows(void *state, const msgpack_object *result);
int print_balances(const budget_response *first, balance_tables *t);
/* Opens a stream for each list (0, or -1 when out of memory). */
int balances_json_open(balances_json *j);
/* Closes the streams; the joined text stays until balances_json_free. */
void balances_json_close(balances_json *j);
void balances_json_free(balances_json *j);
/* page_fn: appends a page's items to the balances_json at `state`. */
int balances_page_json(void *state, const msgpack_object *result);
/* Writes the first page's result with each list joined over every page, "more" false, and
 * no "next". */
void print_balances_json(const msgpack_object *result, const balances_json *j);
/* `seq  YYYY-MM-DD HH:MM:SS UTC  name(uid)  type  key=value ...` */
void print_event(const msgpack_object *ev, int seq_width);
/* The decision in an event's data, "KS 2021-08-24 § 241 [dnr X]", into `out`; "" if none. */
void decision_text(const msgpack_object *data, char *out, size_t out_size);
/* Packs the decision `text`, as budget_decision_parse reads it, as the args decision_body,
 * decision_date, decision_paragraph and (when it has one) decision_dnr: 3 or 4 pairs. 0, or
 * -EINVAL when `text` is not a decision. */
int pack_decision(msgpack_packer *pk, const char *text);
/* Decimal digits of `n`: the width of a seq column. */
int digits_of(uint64_t n);
/* Tables: headers (a '>' first aligns right), rows of copied cells, printed under a title. */
void table_init(table *t, const char *const *headers, size_t columns);
int table_add(table *t, char *const *values);
void table_print(FILE *f, const table *t, const char *title);
void table_free(table *t);
/* The str under `key` of `map` as a table cell: cleaned for a terminal, cut at `columns`
 * (not with --wide). */
void text_cell(char *out, size_t size, const msgpack_object *map, const char *key, size_t columns);
/* The row of the command table named `name`, or NULL. */
const command *find_command(const char *name);

#endif
