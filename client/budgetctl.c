/*
 * budgetctl: the clerk's command-line client for budgetd (docs/budgetctl.md).
 *
 * Each command is a row in one table: its wire op, its arguments (with their kinds, limits and
 * request keys) and the function that runs it. Arguments are checked here before anything is
 * sent, so a typo is a usage error with the option's name rather than a round trip.
 *
 * Exit status: 0 done; 1 the daemon refused; 2 usage; 3 no connection; 4 broken chain.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/un.h>
#include <time.h>

#include "budget/amount.h"
#include "budget/client_msgpack.h"
#include "client/budgetctl.h"
#include "proto/fields.h"
#include "proto/frame.h"
#include "proto/text.h"

/* Retries of a write after a lost connection or `unavailable`, with their waits. */
static const unsigned retry_wait_ms[] = {100, 300, 900};
#define RETRIES_MAX (sizeof(retry_wait_ms) / sizeof(retry_wait_ms[0]))
/* Display columns of a title, purpose or note in a table. */
#define TABLE_TEXT_COLUMNS_MAX 40
/* Nesting printed as JSON; deeper values (never sent by budgetd) print as null. */
#define JSON_DEPTH_MAX 16
/* A unit's kind as given to `unit register --kind` ("förvaltning" is 12 bytes). */
#define UNIT_KIND_BYTES_MAX 15
/* An event type name as given to `events --type`. */
#define EVENT_TYPE_BYTES_MAX 64

/* Argument rows shared by several commands. */
// clang-format off
#define TEXT_ARG(name, wire, flags, meta, help) \
    {name, KIND_TEXT, wire, flags, meta, help, (flags) & ARG_REQUIRED ? 1 : 0, \
     BUDGET_TEXT_BYTES_MAX}
#define ID_ARG(name, wire, flags, meta, help) \
    {name, KIND_ID, wire, flags, meta, help, 1, BUDGET_ID_BYTES_MAX}
#define UNIT_ARG(wire, flags, help) \
    {"unit", KIND_UNIT, wire, flags, "U", help, 1, BUDGET_UNIT_BYTES_MAX}
#define YEAR_ARG(flags, help) \
    {"year", KIND_UINT, "year", flags, "Y", help, BUDGET_YEAR_MIN, BUDGET_YEAR_MAX}
#define AMOUNT_ARG(name, help) \
    {name, KIND_AMOUNT, name, ARG_REQUIRED, "AMOUNT", help, 0, 0}
#define LAST_DAY_ARG(help) \
    {"last-avrop-day", KIND_DAY, "avrop_last_day", 0, "DAY", help, 0, 0}
#define DECISION_ARG(help) \
    {"decision", KIND_DECISION, "decision", ARG_REQUIRED, "DECISION", help, 0, 0}
#define WRITE_ARGS \
    {"id", KIND_ID, "id", 0, "ID", "id of what this creates (default: generated)", 1, \
     BUDGET_ID_BYTES_MAX}, \
    {"expect-head", KIND_UINT, "expect_head", 0, "SEQ", \
     "refuse (conflict) unless the ledger's last seq is SEQ", 0, UINT64_MAX}
// clang-format on

static int run_write(ctl *c, const command *cmd, arg_value *values);
static int run_reverse(ctl *c, const command *cmd, arg_value *values);
static int run_hello(ctl *c, const command *cmd, arg_value *values);
static int run_events(ctl *c, const command *cmd, arg_value *values);
static int run_stats(ctl *c, const command *cmd, arg_value *values);
static int run_close_year(ctl *c, const command *cmd, arg_value *values);
static int run_unspent(ctl *c, const command *cmd, arg_value *values);
static int run_units(ctl *c, const command *cmd, arg_value *values);

// clang-format off
#define AS_OF_ARG(what) \
    {"as-of", KIND_SEQ_OR_DAY, NULL, 0, "SEQ|DAY", \
     what " as it stood right after event SEQ, or at the end of DAY (YYYY-MM-DD, Swedish time)", 1, \
     UINT64_MAX}
#define FILTER_ARGS(what) \
    UNIT_ARG("unit", 0, what " of this unit (data.unit)"), \
    {"type", KIND_WORD, "type", 0, "TYPE", what " of this type (avrop.requested)", 1, \
     EVENT_TYPE_BYTES_MAX}, \
    {"from", KIND_DATE, "ts_from", 0, "DAY", what " on or after this day (YYYY-MM-DD, Swedish time)", 0, 0}, \
    {"to", KIND_DATE, "ts_to", 0, "DAY", what " on or before this day (YYYY-MM-DD, Swedish time)", 1, 0}
#define DAY_ARGS \
    {"from", KIND_DATE, "ts_from", 0, "DAY", "events on or after this day (YYYY-MM-DD, Swedish time)", 0, 0}, \
    {"to", KIND_DATE, "ts_to", 0, "DAY", "events on or before this day (YYYY-MM-DD, Swedish time)", 1, 0}, \
    {"actor", KIND_UINT, "actor", 0, "UID", "events by this uid", 0, UINT32_MAX}
// clang-format on

static const command commands[] = {
    {"hello", "hello", NULL, run_hello, "who the daemon is, and who you are to it", {{0}}},
    {"grant",
     "frame.grant",
     "frame",
     run_write,
     "record a frame granted to a unit for a fiscal year",
     {UNIT_ARG("unit", ARG_REQUIRED, "unit the frame is granted to (KS)"),
      YEAR_ARG(ARG_REQUIRED, "fiscal year"),
      AMOUNT_ARG("amount", "amount granted (3 mkr)"),
      TEXT_ARG("title", "title", ARG_REQUIRED, "TEXT", "what the frame is for"),
      DECISION_ARG("the decision that grants it (KS 2021-08-24 § 241)"),
      TEXT_ARG("reference", "reference", 0, "TEXT", "more about the decision, free text"),
      LAST_DAY_ARG("the last day an avrop on the frame may be requested (2021-12-31)"),
      {"intended", KIND_FLAG, "intended", 0, NULL,
       "a second frame like an existing one (same unit, year, amount, decision) is meant", 0, 0},
      ID_ARG("continues", "continues", 0, "FRAME", "the frame of an earlier year this continues"),
      WRITE_ARGS}},
    {"adopt",
     "budget.adopt",
     "budget",
     run_adopt,
     "adopt a budget year with its plan years: a frame per unit, plan amounts per plan year",
     {YEAR_ARG(ARG_REQUIRED, "the budget year (2022)"),
      {"plan", KIND_TEXT, NULL, 0, "Y1-Y2", "the plan years (2023-2027); none when absent", 4, 9},
      TEXT_ARG("title", "title", ARG_REQUIRED, "TEXT", "what the frames are for"),
      DECISION_ARG("the decision that adopts it (KF 2021-11-22 § 150)"),
      {"lines", KIND_TEXT, NULL, ARG_REQUIRED, "FILE",
       "the lines, one a line: UNIT;AMOUNT;PLAN1;...;PLANk[;continues=FRAME]", 1, 4096},
      WRITE_ARGS}},
    {"adjust",
     "frame.adjust",
     "adj",
     run_write,
     "change a frame by a signed amount (tilläggsanslag, reduction)",
     {ID_ARG("FRAME", "frame", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the frame"),
      AMOUNT_ARG("delta", "signed change (+1 mkr, -200 tkr)"),
      TEXT_ARG("reason", "reason", ARG_REQUIRED, "TEXT", "why"),
      DECISION_ARG("the decision that changes it (KS 2021-10-12 § 301)"),
      TEXT_ARG("reference", "reference", 0, "TEXT", "more about the decision, free text"),
      WRITE_ARGS}},
    {"allocate",
     "allocation.propose",
     "alloc",
     run_write,
     "propose an allocation of part of a frame to a unit",
     {ID_ARG("FRAME", "frame", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the frame to allocate from"),
      UNIT_ARG("unit", ARG_REQUIRED, "unit receiving the allocation (SON)"),
      AMOUNT_ARG("amount", "amount (1 mkr)"),
      TEXT_ARG("purpose", "purpose", ARG_REQUIRED, "TEXT", "what it is for"),
      LAST_DAY_ARG("the last day an avrop on it may be requested (default: its frame's)"),
      WRITE_ARGS}},
    {"avrop",
     "avrop.request",
     "avrop",
     run_write,
     "request a call-off (avrop) from an approved allocation",
     {ID_ARG("ALLOCATION", "allocation", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the allocation"),
      AMOUNT_ARG("amount", "amount called off (250 tkr)"),
      TEXT_ARG("note", "note", 0, "TEXT", "a note"), WRITE_ARGS}},
    {"reduce",
     "allocation.reduce",
     "red",
     run_write,
     "request a reduction of an approved allocation, its money back to the frame",
     {ID_ARG("ALLOCATION", "allocation", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the allocation"),
      {"AMOUNT", KIND_AMOUNT, "amount", ARG_REQUIRED | ARG_POSITIONAL, NULL,
       "amount to take back (100 tkr)", 0, 0},
      TEXT_ARG("reason", "reason", ARG_REQUIRED, "TEXT", "why"),
      WRITE_ARGS}},
    {"reverse",
     "avrop.reverse",
     "rev",
     run_reverse,
     "request a reversal (återföring) of an approved avrop, its money back to the allocation",
     {ID_ARG("AVROP", "avrop", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the avrop"),
      {"AMOUNT", KIND_AMOUNT, "amount", ARG_POSITIONAL, NULL,
       "amount to reverse (default: all of the avrop not yet reversed or being reversed)", 0, 0},
      TEXT_ARG("reason", "reason", ARG_REQUIRED, "TEXT", "why"),
      WRITE_ARGS}},
    {"approve",
     "approve",
     "dec",
     run_write,
     "approve a pending allocation, avrop, reduction or reversal (not your own)",
     {ID_ARG("TARGET", "target", ARG_REQUIRED | ARG_POSITIONAL, NULL,
             "the allocation, avrop, reduction or reversal"),
      DECISION_ARG("the decision that approves it (KS 2021-09-28 § 270)"),
      TEXT_ARG("reference", "reference", 0, "TEXT", "more about the decision, free text"),
      TEXT_ARG("note", "note", 0, "TEXT", "a note"), WRITE_ARGS}},
    {"reject",
     "reject",
     "dec",
     run_write,
     "reject a pending allocation, avrop, reduction or reversal (not your own)",
     {ID_ARG("TARGET", "target", ARG_REQUIRED | ARG_POSITIONAL, NULL,
             "the allocation, avrop, reduction or reversal"),
      DECISION_ARG("the decision that rejects it"),
      TEXT_ARG("reference", "reference", 0, "TEXT", "more about the decision, free text"),
      TEXT_ARG("note", "note", 0, "TEXT", "a note"), WRITE_ARGS}},
    {"withdraw",
     "withdraw",
     "wd",
     run_write,
     "withdraw your own pending allocation, avrop, reduction or reversal",
     {ID_ARG("TARGET", "target", ARG_REQUIRED | ARG_POSITIONAL, NULL,
             "the allocation, avrop, reduction or reversal"),
      TEXT_ARG("note", "note", 0, "TEXT", "a note"), WRITE_ARGS}},
    {"unit register",
     "unit.register",
     "unit",
     run_write,
     "register a unit: its code, full name, kind and the unit it belongs under",
     {{"CODE", KIND_UNIT, "unit", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the unit's code (SON)", 1,
       BUDGET_UNIT_BYTES_MAX},
      TEXT_ARG("name", "name", ARG_REQUIRED, "NAME", "full name (Social- och omsorgsnämnden)"),
      {"kind", KIND_TEXT, "kind", ARG_REQUIRED, "KIND",
       "styrelse, nämnd, förvaltning or verksamhet", 1, UNIT_KIND_BYTES_MAX},
      {"parent", KIND_UNIT, "parent", 0, "P", "the registered unit it belongs under (KS)", 1,
       BUDGET_UNIT_BYTES_MAX},
      TEXT_ARG("reference", "reference", 0, "REF", "the decision"),
      WRITE_ARGS}},
    {"unit rename",
     "unit.rename",
     "unit",
     run_write,
     "give a unit a new name (the old one is kept in its history)",
     {{"CODE", KIND_UNIT, "unit", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the unit's code", 1,
       BUDGET_UNIT_BYTES_MAX},
      TEXT_ARG("name", "name", ARG_REQUIRED, "NAME", "the new full name"),
      TEXT_ARG("reference", "reference", 0, "REF", "the decision"),
      WRITE_ARGS}},
    {"unit close",
     "unit.close",
     "unit",
     run_write,
     "close a unit: no write may name it again (refused while money is left or pending)",
     {{"CODE", KIND_UNIT, "unit", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the unit's code", 1,
       BUDGET_UNIT_BYTES_MAX},
      TEXT_ARG("reference", "reference", 0, "REF", "the decision"),
      WRITE_ARGS}},
    {"units",
     "units",
     NULL,
     run_units,
     "the register of units: code, name, kind, parent, state and former names",
     {{0}}},
    {"balances",
     "balances",
     NULL,
     run_balances,
     "balances of frames, allocations, avrop and units",
     {ID_ARG("frame", "frame", 0, "F", "one frame and its allocations"),
      ID_ARG("allocation", "allocation", 0, "A", "one allocation and its avrop"),
      UNIT_ARG("unit", 0, "one unit: its frames, allocations to it, its totals"),
      YEAR_ARG(0, "only this fiscal year"),
      AS_OF_ARG("the ledger"),
      {"decided-by", KIND_DAY, "decided_by", 0, "DAY",
       "what had been decided by DAY, entered before or after; oddities are flagged", 0, 0}}},
    {"events",
     "events",
     NULL,
     run_events,
     "the event log, oldest first",
     {{"after", KIND_UINT, NULL, 0, "SEQ", "start after this seq (default 0)", 0, UINT64_MAX},
      {"limit", KIND_UINT, "limit", 0, "N", "at most N events per request (default 100)", 1,
       BUDGET_EVENTS_PAGE_MAX},
      ID_ARG("entity", "entity", 0, "ID", "events naming this frame, allocation or target"),
      UNIT_ARG("unit", 0, "events of this unit"),
      {"type", KIND_WORD, "type", 0, "TYPE", "events of this type (avrop.requested)", 1,
       EVENT_TYPE_BYTES_MAX},
      {"all", KIND_FLAG, NULL, 0, NULL, "keep reading until the head of the log", 0, 0},
      DAY_ARGS,
      {"decided-from", KIND_DAY, "decided_from", 0, "DAY",
       "events whose decision is dated on or after DAY", 0, 0},
      {"decided-to", KIND_DAY, "decided_to", 0, "DAY",
       "events whose decision is dated on or before DAY", 0, 0}}},
    {"pending",
     "balances",
     NULL,
     run_pending,
     "what waits for you to decide, and what you sent that waits for others",
     {{0}}},
    {"close-year",
     "year.close",
     "close",
     run_close_year,
     "close a fiscal year by a decision: nothing on its frames moves after; shows its unspent",
     {{"YEAR", KIND_UINT, "year", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the fiscal year",
       BUDGET_YEAR_MIN, BUDGET_YEAR_MAX},
      DECISION_ARG("the decision (KS 2022-01-25 § 12 [dnr KS 2022/7])"),
      TEXT_ARG("note", "note", 0, "TEXT", "a note"),
      WRITE_ARGS}},
    {"carry-over",
     "frame.carry_over",
     "frame",
     run_write,
     "carry unspent money of a closed year's frame into a new frame for the next year "
     "(ombudgetering)",
     {ID_ARG("FRAME", "frame", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the closed year's frame"),
      AMOUNT_ARG("amount", "amount carried over (500 tkr)"),
      TEXT_ARG("title", "title", ARG_REQUIRED, "TEXT", "the new frame's title"),
      DECISION_ARG("the decision (KS 2022-01-25 § 13)"),
      LAST_DAY_ARG("the last day an avrop on the new frame may be requested"),
      {"id", KIND_ID, "id", 0, "ID", "id of the new frame (default: generated)", 1,
       BUDGET_ID_BYTES_MAX},
      {"expect-head", KIND_UINT, "expect_head", 0, "SEQ",
       "refuse (conflict) unless the ledger's last seq is SEQ", 0, UINT64_MAX}}},
    {"unspent",
     "balances",
     NULL,
     run_unspent,
     "the unspent money of a fiscal year's frames, and what of it was carried over",
     {{"YEAR", KIND_UINT, "year", ARG_REQUIRED | ARG_POSITIONAL, NULL, "the fiscal year",
       BUDGET_YEAR_MIN, BUDGET_YEAR_MAX},
      UNIT_ARG("unit", 0, "frames held by this unit"),
      {"as-of", KIND_UINT, NULL, 0, "SEQ", "the ledger as it stood right after event SEQ", 1,
       UINT64_MAX}}},
    {"years",
     "balances",
     NULL,
     run_years,
     "units × years: budget, plan, allocated, called off, available, unspent, with subtotals "
     "and totals",
     {{"YEARS", KIND_TEXT, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL,
       "fiscal years Y1-Y2 (2021-2027)", 4, 9},
      UNIT_ARG("unit", 0, "one unit"),
      {"as-of", KIND_UINT, NULL, 0, "SEQ", "the ledger as it stood right after event SEQ", 1,
       UINT64_MAX},
      {"csv", KIND_FLAG, NULL, 0, NULL, "CSV instead of a table", 0, 0},
      {"swedish", KIND_FLAG, NULL, 0, NULL, "Swedish headers; csv: ; between fields, decimal comma",
       0, 0}}},
    {"verify", "verify", NULL, run_verify, "re-walk the whole hash chain", {{0}}},
    {"stats", "stats", NULL, run_stats, "the daemon's counters", {{0}}},
    /* Audit and integration (budgetctl_audit.c, docs/audit.md). */
    {"watch",
     "subscribe",
     NULL,
     run_watch,
     "print events as they are committed, after a catch-up from --after",
     {{"after", KIND_UINT, NULL, 0, "SEQ", "start after this seq (default 0: the first event)", 0,
       UINT64_MAX},
      {"count", KIND_UINT, NULL, 0, "N", "stop after N events (default: run until stopped)", 1,
       UINT64_MAX},
      FILTER_ARGS("events")}},
    {"history",
     "events",
     NULL,
     run_history,
     "the whole life of a frame, allocation or avrop: it and all that refers to it",
     {ID_ARG("ENTITY", "entity", ARG_REQUIRED | ARG_POSITIONAL, NULL,
             "the frame, allocation, avrop or decision"),
      DAY_ARGS}},
    {"audit",
     NULL,
     NULL,
     run_audit,
     "signed checkpoints, checks against them, replay as of a seq or day, verify",
     {{"ACTION", KIND_WORD, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL,
       "checkpoint, check, replay or verify", 1, 16},
      {"FILE", KIND_TEXT, NULL, ARG_POSITIONAL, NULL, "check: the checkpoint file", 1, 4096},
      {"as-of", KIND_TEXT, NULL, 0, "SEQ|DAY",
       "replay: right after event SEQ, or at the end of DAY (Swedish time)", 1, 32},
      {"data", KIND_TEXT, NULL, 0, "DIR", "check, replay, verify: a copy of a data folder, offline",
       1, 4096},
      {"key", KIND_WORD, NULL, 0, "HEX", "check: the public key that must have signed it", 64,
       64}}},
    {"backup",
     "backup",
     NULL,
     run_backup,
     "a consistent, compacted copy of the ledger, sent by the daemon, written here into a new "
     "folder and verified",
     {{"DIR", KIND_TEXT, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL,
       "the new folder (its parent must exist)", 1, 1024}}},
    {"export",
     NULL,
     NULL,
     run_export,
     "events or balances as CSV (Excel) or JSON lines",
     {{"WHAT", KIND_WORD, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL, "events or balances", 1, 16},
      {"format", KIND_WORD, NULL, 0, "csv|jsonl", "default csv", 1, 8},
      {"bom", KIND_FLAG, NULL, 0, NULL, "csv: start with a UTF-8 byte order mark", 0, 0},
      {"swedish", KIND_FLAG, NULL, 0, NULL,
       "csv: ; between fields, a decimal comma, Swedish headers", 0, 0},
      AS_OF_ARG("balances:"),
      {"output", KIND_TEXT, NULL, 0, "FILE",
       "write FILE, whole or not at all (it replaces FILE only once complete)", 1, 4096},
      FILTER_ARGS("events:")}},
    {"report",
     "balances",
     NULL,
     run_report,
     "balances per unit and year as one HTML page for a committee (A4, Swedish)",
     {UNIT_ARG("unit", 0, "one unit"),
      YEAR_ARG(0, "one fiscal year"),
      {"years", KIND_TEXT, NULL, 0, "Y1-Y2", "fiscal years Y1 to Y2 (2021-2027)", 3, 9},
      AS_OF_ARG("the ledger"),
      {"decided-by", KIND_DAY, "decided_by", 0, "DAY",
       "what had been decided by DAY, entered before or after; oddities are flagged, no plan", 0,
       0},
      {"output", KIND_TEXT, NULL, 0, "FILE",
       "write FILE, whole or not at all (it replaces FILE only once complete)", 1, 4096}}},
    {"import",
     "batch",
     NULL,
     run_import,
     "frames and allocations, or outcome, from a CSV file (Swedish Excel), all rows or none",
     {{"WHAT", KIND_WORD, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL, "budget or outcome", 1, 16},
      {"FILE", KIND_TEXT, NULL, ARG_REQUIRED | ARG_POSITIONAL, NULL, "the CSV file", 1, 4096},
      {"map", KIND_TEXT, NULL, 0, "MAP", "outcome: the file naming the CSV's columns", 1, 4096},
      {"dry-run", KIND_FLAG, NULL, 0, NULL,
       "print what would be written and every refusal; write nothing", 0, 0}}},
    {"outcome",
     "outcome",
     NULL,
     run_outcome,
     "a unit's outcome per month of a year, set against its budget, with a forecast",
     {UNIT_ARG("unit", ARG_REQUIRED, "the unit"),
      YEAR_ARG(ARG_REQUIRED, "the fiscal year"),
      {"csv", KIND_FLAG, NULL, 0, NULL, "CSV for Excel: ; between fields, a decimal comma", 0, 0}}},
};

#define COMMANDS_COUNT (sizeof(commands) / sizeof(commands[0]))

/* ---- messages ------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s, size_t n);

/* Prints "budgetctl: LINE" on stderr as one line of clean text: a line that quotes the daemon's
 * words or the user's with control characters or bytes that are not UTF-8 is escaped
 * (budget_escape), so no message can move the cursor, recolour or retitle a terminal. */
static void say(const char *line)
{
    char safe[2048];
    progress_end();
    if (cli_json) {
        fflush(stdout);
        fputs("{\"notice\":", stderr);
        json_string(stderr, line, strlen(line));
        fputs("}\n", stderr);
        return;
    }
    size_t len = strlen(line);
    if (!budget_text_clean(line, len)) {
        budget_escape(safe, sizeof(safe), line, len);
        line = safe;
    }
    fflush(stdout);
    fprintf(stderr, "budgetctl: %s\n", line);
}

/* The error codes of the protocol, which a refusal's line starts with. */
static const char *const error_codes[] = {
    "bad_request",   "unknown_op", "not_found", "conflict",    "insufficient_funds",
    "invalid_state", "forbidden",  "too_large", "unavailable", "internal"};

/* --json: an error as one line of JSON on stderr, {"error": {"code", "message"}, "exit"}. The
 * code is the daemon's when the line starts with one, else what kind of failure it was. */
static void say_json_error(int status, const char *line)
{
    static const char *const kinds[] = {"done", "failed", "usage", "connection", "broken_chain"};
    const char *code = status >= 0 && (size_t)status < COUNT(kinds) ? kinds[status] : "failed";
    size_t code_len = strlen(code);
    const char *colon = strstr(line, ": ");
    for (size_t i = 0; colon != NULL && status == EXIT_REFUSED && i < COUNT(error_codes); i++)
        if ((size_t)(colon - line) == strlen(error_codes[i]) &&
            memcmp(line, error_codes[i], strlen(error_codes[i])) == 0) {
            code = line;
            code_len = (size_t)(colon - line);
            line = colon + 2;
        }
    json_error(status, code, code_len, line);
}

void json_error(int status, const char *code, size_t code_len, const char *message)
{
    progress_end();
    fflush(stdout);
    fputs("{\"error\":{\"code\":", stderr);
    json_string(stderr, code, code_len);
    fputs(",\"message\":", stderr);
    json_string(stderr, message, strlen(message));
    fprintf(stderr, "},\"exit\":%d}\n", status);
}

/* Prints one line "budgetctl: ..." on stderr (say), or JSON with --json, and returns
 * `status`. Nothing while cli_quiet is set. */
int complain(int status, const char *format, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(line, sizeof(line), format, ap);
    va_end(ap);
    if (cli_quiet)
        return status;
    if (cli_json)
        say_json_error(status, line);
    else
        say(line);
    return status;
}

void notice(const char *format, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(line, sizeof(line), format, ap);
    va_end(ap);
    if (!cli_quiet)
        say(line);
}

/* ---- text ----------------------------------------------------------------------------- */

/* Display columns of one valid sequence: combining marks (U+0300..U+036F) take none. */
static size_t sequence_columns(const unsigned char *s, size_t len)
{
    if (len == 2 && (s[0] == 0xcc || (s[0] == 0xcd && s[1] <= 0xaf)))
        return 0;
    return 1;
}

/*
 * Copies `n` bytes of ledger text into `out` for a terminal: control characters (C0, DEL, C1)
 * and invalid UTF-8 become '?', and at most `columns` display columns are kept (the last one an
 * ellipsis when cut). Returns the columns used.
 */
static size_t terminal_text(const char *s, size_t n, size_t columns, char *out, size_t out_size)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t used = 0, o = 0, total = 0;
    for (size_t i = 0; i < n;) { /* first: does it fit? */
        size_t len = budget_utf8_sequence(u + i, n - i);
        total += len == 0 ? 1 : sequence_columns(u + i, len);
        i += len == 0 ? 1 : len;
    }
    size_t keep = total > columns ? columns - 1 : columns;
    for (size_t i = 0; i < n;) {
        size_t len = budget_utf8_sequence(u + i, n - i);
        size_t width = len == 0 ? 1 : sequence_columns(u + i, len);
        if (used + width > keep || o + 4 + 3 >= out_size)
            break;
        /* C0, DEL and C1 (U+0080..U+009F: c2 80..c2 9f; 9b is CSI to many terminals). */
        bool control = (len == 1 && (u[i] < 0x20 || u[i] == 0x7f)) ||
                       (len == 2 && u[i] == 0xc2 && u[i + 1] <= 0x9f);
        if (len == 0 || control) {
            out[o++] = '?';
            i += len == 0 ? 1 : len;
        } else {
            memcpy(out + o, u + i, len);
            o += len;
            i += len;
        }
        used += width;
    }
    if (total > columns) {
        memcpy(out + o, "\xe2\x80\xa6", 3); /* U+2026 HORIZONTAL ELLIPSIS */
        o += 3;
        used++;
    }
    out[o] = '\0';
    return used;
}

static size_t display_columns(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), columns = 0;
    for (size_t i = 0; i < n;) {
        size_t len = budget_utf8_sequence(u + i, n - i);
        columns += len == 0 ? 1 : sequence_columns(u + i, len);
        i += len == 0 ? 1 : len;
    }
    return columns;
}

static void hex(FILE *f, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", (unsigned char)data[i]);
}

/* ---- JSON ----------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        size_t len = budget_utf8_sequence(u + i, n - i);
        if (len == 0) {
            fputs("\\ufffd", f); /* not UTF-8: replaced, so the output stays JSON */
            i++;
            continue;
        }
        unsigned char ch = u[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch == '\r')
            fputs("\\r", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else if (len == 2 && ch == 0xc2 && u[i + 1] <= 0x9f)
            fprintf(f, "\\u%04x", u[i + 1]); /* C1 controls: escaped, so a terminal sees none */
        else
            fwrite(u + i, 1, len, f);
        i += len;
    }
    fputc('"', f);
}

static void json_map(FILE *f, const msgpack_object *o, int depth)
{
    fputc('{', f);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (i > 0)
            fputc(',', f);
        if (kv->key.type == MSGPACK_OBJECT_STR) {
            json_string(f, kv->key.via.str.ptr, kv->key.via.str.size);
        } else { /* JSON keys are strings: a non-string key is written as its JSON, quoted */
            char *text = NULL;
            size_t size = 0;
            FILE *m = open_memstream(&text, &size);
            if (m != NULL) {
                json_value(m, &kv->key, depth + 1);
                fclose(m);
                json_string(f, text, size);
            }
            free(text);
        }
        fputc(':', f);
        json_value(f, &kv->val, depth + 1);
    }
    fputc('}', f);
}

void json_value(FILE *f, const msgpack_object *o, int depth)
{
    if (depth > JSON_DEPTH_MAX) {
        fputs("null", f);
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        fputs(o->via.boolean ? "true" : "false", f);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(f, "%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        fprintf(f, "%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64))
            fprintf(f, "%.17g", o->via.f64);
        else
            fputs("null", f);
        break;
    case MSGPACK_OBJECT_STR:
        json_string(f, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
    case MSGPACK_OBJECT_EXT:
        fputc('"', f);
        if (o->type == MSGPACK_OBJECT_BIN)
            hex(f, o->via.bin.ptr, o->via.bin.size);
        else
            hex(f, o->via.ext.ptr, o->via.ext.size);
        fputc('"', f);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0)
                fputc(',', f);
            json_value(f, &o->via.array.ptr[i], depth + 1);
        }
        fputc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        json_map(f, o, depth);
        break;
    default:
        fputs("null", f);
        break;
    }
}

void json_line(const msgpack_object *o)
{
    json_value(stdout, o, 0);
    fputc('\n', stdout);
}

/* ---- tables --------------------------------------------------------------------------- */

/* A '>' before a header aligns its column right. */
void table_init(table *t, const char *const *headers, size_t columns)
{
    memset(t, 0, sizeof(*t));
    t->columns = columns;
    for (size_t i = 0; i < columns; i++) {
        t->right[i] = headers[i][0] == '>';
        t->headers[i] = header_text(headers[i] + (t->right[i] ? 1 : 0));
        t->widths[i] = display_columns(t->headers[i]);
    }
}

int table_add(table *t, char *const *values)
{
    if (t->rows == t->capacity) {
        size_t capacity = t->capacity == 0 ? 16 : t->capacity * 2;
        char **cells = realloc(t->cells, capacity * t->columns * sizeof(*cells));
        if (cells == NULL)
            return -ENOMEM;
        t->cells = cells;
        t->capacity = capacity;
    }
    char **row = t->cells + t->rows * t->columns;
    for (size_t i = 0; i < t->columns; i++) {
        row[i] = strdup(values[i]);
        if (row[i] == NULL) {
            while (i > 0)
                free(row[--i]);
            return -ENOMEM;
        }
        size_t width = display_columns(row[i]);
        if (width > t->widths[i])
            t->widths[i] = width;
    }
    t->rows++;
    return 0;
}

static void table_cell(FILE *f, const table *t, size_t column, const char *text)
{
    size_t pad = t->widths[column] - display_columns(text);
    bool last = column + 1 == t->columns;
    if (last && text[0] == '\0')
        return; /* no trailing blanks */
    if (column > 0)
        fputs("  ", f);
    if (t->right[column])
        fprintf(f, "%*s%s", (int)pad, "", text);
    else
        fprintf(f, "%s%*s", text, last ? 0 : (int)pad, "");
}

void table_print(FILE *f, const table *t, const char *title)
{
    if (t->rows == 0)
        return;
    fprintf(f, "\n%s\n", header_text(title));
    for (size_t c = 0; c < t->columns; c++)
        table_cell(f, t, c, t->headers[c]);
    fputc('\n', f);
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->columns; c++)
            table_cell(f, t, c, t->cells[r * t->columns + c]);
        fputc('\n', f);
    }
}

void table_free(table *t)
{
    for (size_t i = 0; i < t->rows * t->columns; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->capacity = 0;
}

/* ---- cells from response values --------------------------------------------------------- */

typedef struct {
    char text[BUDGET_TEXT_BYTES_MAX + 16]; /* --wide: the whole text */
} cell;

static void cell_str(cell *out, const msgpack_object *map, const char *key, size_t columns)
{
    const msgpack_object *o = budget_map_get(map, key);
    if (o == NULL || o->type != MSGPACK_OBJECT_STR) {
        strcpy(out->text, "");
        return;
    }
    if (cli_wide && columns < BUDGET_TEXT_BYTES_MAX)
        columns = BUDGET_TEXT_BYTES_MAX; /* no text has more columns than bytes */
    terminal_text(o->via.str.ptr, o->via.str.size, columns, out->text, sizeof(out->text));
}

void text_cell(char *out, size_t size, const msgpack_object *map, const char *key, size_t columns)
{
    cell c;
    cell_str(&c, map, key, columns);
    snprintf(out, size, "%s", c.text);
}

/* In a decided_by view, an item's oddities follow its first cell: "ks21 !allocated_over_granted".
 */
static void cell_mark_oddities(cell *out, const msgpack_object *map)
{
    const msgpack_object *o = budget_map_get(map, "oddities");
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < o->via.array.size && i < 4; i++) {
        const msgpack_object *name = &o->via.array.ptr[i];
        char safe[64];
        if (name->type != MSGPACK_OBJECT_STR)
            continue;
        terminal_text(name->via.str.ptr, name->via.str.size, 40, safe, sizeof(safe));
        size_t used = strlen(out->text);
        snprintf(out->text + used, sizeof(out->text) - used, "%s%s", i == 0 ? " !" : ",", safe);
    }
}

static void cell_amount(cell *out, const msgpack_object *map, const char *key)
{
    budget_amount_format(budget_map_int(map, key, 0), out->text, sizeof(out->text));
}

/* A share in per mille as "12,3 %", or "-" when there is none (nil). */
static void cell_permille(cell *out, const msgpack_object *map, const char *key)
{
    const msgpack_object *o = budget_map_get(map, key);
    int64_t p = budget_map_int(map, key, 0);
    uint64_t m = p < 0 ? (uint64_t)0 - (uint64_t)p : (uint64_t)p;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        snprintf(out->text, sizeof(out->text), "-");
    else
        snprintf(out->text, sizeof(out->text), "%s%" PRIu64 ",%u %%", p < 0 ? "-" : "", m / 10,
                 (unsigned)(m % 10));
}

static void cell_int(cell *out, const msgpack_object *map, const char *key)
{
    snprintf(out->text, sizeof(out->text), "%" PRId64, budget_map_int(map, key, 0));
}

/* Adds a row made of `n` cells to a table. */
static int add_cells(table *t, cell *cells, size_t n)
{
    char *values[TABLE_COLUMNS_MAX];
    for (size_t i = 0; i < n; i++)
        values[i] = cells[i].text;
    return table_add(t, values);
}

/* ---- arguments ------------------------------------------------------------------------ */

/* The spelling of an argument in messages: "--unit" or "FRAME". */
static void arg_label(const arg_spec *spec, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s%s", spec->flags & ARG_POSITIONAL ? "" : "--", spec->name);
}

static int check_number(const arg_spec *spec, const char *label, const char *text, int64_t *out)
{
    if (text[0] < '0' || text[0] > '9')
        return complain(EXIT_USAGE, "%s: not a number: %.40s", label, text);
    errno = 0;
    char *end = NULL;
    unsigned long long n = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return complain(EXIT_USAGE, "%s: not a number: %.40s", label, text);
    if (n < spec->min || n > spec->max || n > (unsigned long long)INT64_MAX)
        return complain(EXIT_USAGE, "%s: must be %" PRIu64 "..%" PRIu64, label, spec->min,
                        spec->max > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : spec->max);
    *out = (int64_t)n;
    return 0;
}

/* KIND_DECISION: a decision as budget_decision_parse reads it. */
static int check_decision(const char *label, const char *text)
{
    budget_decision d;
    const char *why = "";
    size_t len = strnlen(text, 4 * BUDGET_TEXT_BYTES_MAX);
    if (budget_decision_parse(text, len, &d, &why))
        return 0;
    return complain(EXIT_USAGE,
                    "%s: not a decision \"%.120s\": %s; write " BUDGET_DECISION_FORM
                    ", as in \"KS 2021-08-24 § 241\" or \"KS 2021-08-24 § 241 dnr KS 2021/123\"",
                    label, text, why);
}

/* KIND_DAY: a real day YYYY-MM-DD. */
static int check_day(const char *label, const char *text)
{
    int32_t day;
    if (budget_date_parse(text, strnlen(text, BUDGET_DATE_BYTES + 1), &day))
        return 0;
    return complain(EXIT_USAGE, "%s: not a real day YYYY-MM-DD: %.40s", label, text);
}

/* Packs the decision `text` (checked) as its fields: 3 pairs, or 4 with a diary number. */
int pack_decision(msgpack_packer *pk, const char *text)
{
    budget_decision d;
    if (!budget_decision_parse(text, strlen(text), &d, NULL))
        return -EINVAL;
    char day[BUDGET_DATE_BYTES + 1];
    budget_date_format(d.date, day);
    const char *keys[] = {"decision_body", "decision_date", "decision_paragraph", "decision_dnr"};
    const char *vals[] = {d.body, day, d.paragraph, d.dnr};
    int rc = 0;
    for (size_t i = 0; i < (d.dnr[0] != '\0' ? 4u : 3u); i++) {
        rc |= msgpack_pack_str_with_body(pk, keys[i], strlen(keys[i]));
        rc |= msgpack_pack_str_with_body(pk, vals[i], strlen(vals[i]));
    }
    return rc;
}

/* The pairs an argument adds to a request's args. */
static uint32_t arg_pairs(const arg_spec *spec, const arg_value *v)
{
    if (spec->kind != KIND_DECISION)
        return 1;
    budget_decision d;
    if (!budget_decision_parse(v->text, strlen(v->text), &d, NULL))
        return 0;
    return d.dnr[0] != '\0' ? 4 : 3;
}

/* Checks one argument's value against its kind and limits. Returns 0 or EXIT_USAGE. */
static int check_arg(const arg_spec *spec, arg_value *v)
{
    char label[48];
    arg_label(spec, label, sizeof(label));
    size_t bytes =
        spec->kind == KIND_AMOUNT || spec->kind == KIND_UINT || spec->kind == KIND_SEQ_OR_DAY
            ? 0
            : strnlen(v->text, spec->max + 1);
    char why[160];
    switch (spec->kind) {
    case KIND_FLAG:
        return 0;
    case KIND_ID:
    case KIND_UNIT:
    case KIND_WORD:
        if (bytes < spec->min || bytes > spec->max)
            return complain(EXIT_USAGE, "%s: must be %" PRIu64 "..%" PRIu64 " characters", label,
                            spec->min, spec->max);
        if (!budget_word_valid(v->text, bytes, spec->max))
            return complain(EXIT_USAGE, "%s: only A-Z a-z 0-9 . _ : - are allowed", label);
        return 0;
    case KIND_TEXT:
        if (bytes < spec->min || bytes > spec->max)
            return complain(EXIT_USAGE, "%s: must be %" PRIu64 "..%" PRIu64 " bytes", label,
                            spec->min, spec->max);
        if (!budget_utf8_valid(v->text, bytes))
            return complain(EXIT_USAGE, "%s: not valid UTF-8", label);
        return 0;
    case KIND_AMOUNT:
        if (budget_amount_parse(v->text, &v->number, why, sizeof(why)) != 0)
            return complain(EXIT_USAGE, "%s: bad amount \"%.40s\": %s", label, v->text, why);
        return 0;
    case KIND_UINT:
        return check_number(spec, label, v->text, &v->number);
    case KIND_DATE:
        return check_date(spec, label, v->text, &v->number);
    case KIND_DECISION:
        return check_decision(label, v->text);
    case KIND_DAY:
        return check_day(label, v->text);
    case KIND_SEQ_OR_DAY: {
        int32_t day;
        if (budget_date_parse(v->text, strnlen(v->text, BUDGET_DATE_BYTES + 1), &day)) {
            v->number = 0;
            return 0;
        }
        if (v->text[0] < '0' || v->text[0] > '9' || strchr(v->text, '-') != NULL)
            return complain(EXIT_USAGE, "%s: a seq (1 or more) or a real day YYYY-MM-DD: %.40s",
                            label, v->text);
        return check_number(spec, label, v->text, &v->number);
    }
    }
    return 0;
}

static int usage(const command *cmd, FILE *f);
static int main_usage(FILE *f);

static const arg_spec *find_option(const command *cmd, const char *name, size_t name_bytes,
                                   size_t *index)
{
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        const arg_spec *spec = &cmd->args[i];
        if (!(spec->flags & ARG_POSITIONAL) && strlen(spec->name) == name_bytes &&
            memcmp(spec->name, name, name_bytes) == 0) {
            *index = i;
            return spec;
        }
    }
    return NULL;
}

typedef struct {
    int argc;
    char **argv;
    int next;
} arg_cursor;

/* --json, --socket and --help, which every command takes. Returns 1 when `name` was one of
 * them (0 or an exit status in *rc; -1 after --help), else 0. */
static int common_option(ctl *c, const command *cmd, const char *name, const char *value,
                         arg_cursor *cur, const char **socket_flag, int *rc)
{
    *rc = 0;
    if (strcmp(name, "help") == 0 || strcmp(name, "json") == 0) {
        if (value != NULL)
            *rc = complain(EXIT_USAGE, "--%s takes no value", name);
        else if (name[0] == 'h')
            *rc = -1 - usage(cmd, stdout);
        else
            c->json = cli_json = true;
        return 1;
    }
    if (strcmp(name, "socket") == 0) {
        if (value == NULL && cur->next >= cur->argc)
            *rc = complain(EXIT_USAGE, "--socket needs a value");
        else
            *socket_flag = value != NULL ? value : cur->argv[cur->next++];
        return 1;
    }
    return 0;
}

/* --swedish and --wide, which every command takes (export has a --swedish of its own, which
 * also sets the mode). Returns 1 when `name` was one of them (0 or EXIT_USAGE in *rc). */
static int global_flag(const command *cmd, const char *name, const char *value, int *rc)
{
    size_t index;
    bool *flag = strcmp(name, "wide") == 0      ? &cli_wide
                 : strcmp(name, "swedish") == 0 ? &cli_swedish
                                                : NULL;
    *rc = 0;
    if (flag == NULL)
        return 0;
    if (find_option(cmd, name, strlen(name), &index) != NULL) {
        *flag = true;
        return 0; /* the command's own option is read as well */
    }
    if (value != NULL)
        *rc = complain(EXIT_USAGE, "--%s takes no value", name);
    *flag = true;
    return 1;
}

/* An unknown option of `cmd`, with the nearest it takes. */
static int unknown_option(const command *cmd, const char *name)
{
    const char *names[OPTS_MAX + 5] = {"json", "socket", "help", "swedish", "wide"};
    size_t n = 5;
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++)
        if (!(cmd->args[i].flags & ARG_POSITIONAL))
            names[n++] = cmd->args[i].name;
    const char *near = nearest_word(name, names, n);
    if (near != NULL)
        return complain(EXIT_USAGE,
                        "%s: unknown option --%s; did you mean --%s? (see budgetctl "
                        "%s --help)",
                        cmd->name, name, near, cmd->name);
    return complain(EXIT_USAGE, "%s: unknown option --%s (see budgetctl %s --help)", cmd->name,
                    name, cmd->name);
}

/* Reads one "--name[=value]" at the cursor into `values`. Returns 0, EXIT_USAGE, or -1 (help). */
static int parse_option(ctl *c, const command *cmd, arg_cursor *cur, arg_value *values,
                        const char **socket_flag)
{
    const char *arg = cur->argv[cur->next++] + 2;
    const char *eq = strchr(arg, '=');
    size_t name_bytes = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    const char *value = eq != NULL ? eq + 1 : NULL;
    char name[32];
    if (name_bytes >= sizeof(name))
        return complain(EXIT_USAGE, "%s: unknown option --%.40s (see budgetctl %s --help)",
                        cmd->name, arg, cmd->name);
    memcpy(name, arg, name_bytes);
    name[name_bytes] = '\0';
    int rc = 0;
    if (common_option(c, cmd, name, value, cur, socket_flag, &rc))
        return rc;
    if (global_flag(cmd, name, value, &rc))
        return rc;
    size_t index = 0;
    const arg_spec *spec = find_option(cmd, name, name_bytes, &index);
    if (spec == NULL)
        return unknown_option(cmd, name);
    bool is_flag = spec->kind == KIND_FLAG;
    if (is_flag && value != NULL)
        return complain(EXIT_USAGE, "--%s takes no value", name);
    if (!is_flag && value == NULL) {
        if (cur->next >= cur->argc)
            return complain(EXIT_USAGE, "--%s needs a value", name);
        value = cur->argv[cur->next++];
    }
    if (values[index].set)
        return complain(EXIT_USAGE, "--%s given twice", name);
    values[index].set = true;
    values[index].text = is_flag ? "" : value;
    return 0;
}

static int parse_positional(const command *cmd, const char *arg, arg_value *values)
{
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        if ((cmd->args[i].flags & ARG_POSITIONAL) && !values[i].set) {
            values[i].set = true;
            values[i].text = arg;
            return 0;
        }
    }
    return complain(EXIT_USAGE, "%s: unexpected argument \"%.40s\" (see budgetctl %s --help)",
                    cmd->name, arg, cmd->name);
}

/* Every argument given is checked; every required one must be there. */
static int check_args(const command *cmd, arg_value *values)
{
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        const arg_spec *spec = &cmd->args[i];
        char label[48];
        arg_label(spec, label, sizeof(label));
        if (!values[i].set) {
            if (spec->flags & ARG_REQUIRED)
                return complain(EXIT_USAGE, "%s: missing %s (see budgetctl %s --help)", cmd->name,
                                label, cmd->name);
            continue;
        }
        int rc = check_arg(spec, &values[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Parses a command's arguments. Returns 0, EXIT_USAGE, or -1 when --help was printed. */
static int parse_args(ctl *c, const command *cmd, int argc, char **argv, arg_value *values,
                      const char **socket_flag)
{
    arg_cursor cur = {argc, argv, 0};
    bool options_done = false;
    while (cur.next < argc) {
        const char *arg = argv[cur.next];
        int rc = 0;
        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
            cur.next++;
        } else if (!options_done && strcmp(arg, "-h") == 0) {
            usage(cmd, stdout);
            return -1;
        } else if (!options_done && strncmp(arg, "--", 2) == 0) {
            rc = parse_option(c, cmd, &cur, values, socket_flag);
        } else if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            rc = complain(EXIT_USAGE, "%s: unknown option %.40s (see budgetctl %s --help)",
                          cmd->name, arg, cmd->name);
        } else {
            rc = parse_positional(cmd, arg, values);
            cur.next++;
        }
        if (rc != 0)
            return rc;
    }
    return check_args(cmd, values);
}

arg_value *value_of(const command *cmd, arg_value *values, const char *name)
{
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++)
        if (strcmp(cmd->args[i].name, name) == 0)
            return &values[i];
    return NULL;
}

/* ---- requests ------------------------------------------------------------------------- */

/* Packs every given argument that has a wire name, as a map with `extra` more pairs that the
 * caller packs after. Returns 0 or -ENOMEM. */
int pack_args(msgpack_packer *pk, const command *cmd, const arg_value *values, uint32_t extra)
{
    uint32_t count = extra;
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++)
        if (values[i].set && cmd->args[i].wire != NULL)
            count += arg_pairs(&cmd->args[i], &values[i]);
    int rc = msgpack_pack_map(pk, count);
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        const arg_spec *spec = &cmd->args[i];
        if (!values[i].set || spec->wire == NULL)
            continue;
        if (spec->kind == KIND_DECISION) {
            rc |= pack_decision(pk, values[i].text);
            continue;
        }
        rc |= msgpack_pack_str_with_body(pk, spec->wire, strlen(spec->wire));
        if (spec->kind == KIND_AMOUNT || spec->kind == KIND_UINT || spec->kind == KIND_DATE ||
            spec->kind == KIND_SEQ_OR_DAY)
            rc |= msgpack_pack_int64(pk, values[i].number);
        else if (spec->kind == KIND_FLAG)
            rc |= msgpack_pack_true(pk);
        else
            rc |= msgpack_pack_str_with_body(pk, values[i].text, strlen(values[i].text));
    }
    return rc == 0 ? 0 : -ENOMEM;
}

int pack_uint_pair(msgpack_packer *pk, const char *key, uint64_t value)
{
    int rc = msgpack_pack_str_with_body(pk, key, strlen(key));
    rc |= msgpack_pack_uint64(pk, value);
    return rc == 0 ? 0 : -ENOMEM;
}

const char *client_error(int rc)
{
    if (rc == BUDGET_ETOO_LARGE)
        return "frame over the 1 MiB limit";
    if (rc == BUDGET_EBAD_REQUEST)
        return "malformed response";
    return strerror(-rc);
}

int connect_daemon(ctl *c)
{
    if (c->client != NULL)
        return 0;
    int rc = budget_client_connect(c->socket_path, &c->client);
    char why[256] = "";
    if (rc == -EACCES || rc == -EPERM)
        permission_hint(c->socket_path, why, sizeof(why));
    else if (rc == -ENOENT || rc == -ECONNREFUSED)
        snprintf(why, sizeof(why), " (is budgetd running?)");
    if (rc != 0)
        return complain(EXIT_CONNECTION, "cannot connect to %s: %s%s", c->socket_path,
                        strerror(-rc), why);
    return 0;
}

void disconnect_daemon(ctl *c)
{
    budget_client_close(c->client);
    c->client = NULL;
}

/* Sends one request and receives its answer. Returns 0 (out filled; free it), or < 0 when
 * the connection failed (nothing to free). */
static int exchange(ctl *c, const char *op, const msgpack_sbuffer *args, budget_response *out)
{
    int rc = budget_client_call(c->client, op, args != NULL ? args->data : NULL,
                                args != NULL ? args->size : 0, out);
    if (rc != 0)
        disconnect_daemon(c);
    return rc;
}

/* A read: one request, no retry. Returns 0 with `out` holding an ok response, else the exit
 * status after saying why. */
int call(ctl *c, const char *op, const msgpack_sbuffer *args, budget_response *out)
{
    int rc = connect_daemon(c);
    if (rc != 0)
        return rc;
    rc = exchange(c, op, args, out);
    if (rc != 0)
        return complain(EXIT_CONNECTION, "connection to budgetd lost: %s", client_error(rc));
    if (!out->ok) {
        rc = refusal(EXIT_REFUSED, out->code, out->message, NULL);
        budget_response_free(out);
        return rc;
    }
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/*
 * A write, with retries: after a lost connection or an `unavailable` answer it reconnects and
 * sends the very same request (same id) again, up to RETRIES_MAX times; budgetd answers a
 * repeated id with the first result, so a write that did land is not made twice.
 */
int call_write(ctl *c, const char *op, const msgpack_sbuffer *args, budget_response *out,
               const char *generated_id)
{
    int rc = connect_daemon(c);
    if (rc != 0)
        return rc;
    int reconnect = 0;
    for (size_t attempt = 0;; attempt++) {
        char failure[BUDGET_TEXT_BYTES_MAX + 64] = "";
        rc = reconnect == 0 ? exchange(c, op, args, out) : reconnect;
        if (reconnect != 0)
            snprintf(failure, sizeof(failure), "cannot reconnect: %s", strerror(-reconnect));
        else if (rc != 0)
            snprintf(failure, sizeof(failure), "connection lost: %s", client_error(rc));
        else if (!out->ok && out->err == BUDGET_EUNAVAILABLE)
            snprintf(failure, sizeof(failure), "unavailable: %s", out->message);
        else if (!out->ok)
            break;
        else
            return 0;
        if (attempt == RETRIES_MAX) {
            if (rc == 0)
                break; /* still unavailable: report the daemon's answer */
            return complain(EXIT_CONNECTION, "%s (gave up after %zu retries)", failure,
                            RETRIES_MAX);
        }
        if (rc == 0)
            budget_response_free(out);
        disconnect_daemon(c);
        char line[sizeof(failure) + 80];
        snprintf(line, sizeof(line), "%s; retrying with the same id in %u ms (%zu of %zu)", failure,
                 retry_wait_ms[attempt], attempt + 1, RETRIES_MAX);
        say(line);
        sleep_ms(retry_wait_ms[attempt]);
        reconnect = budget_client_connect(c->socket_path, &c->client);
    }
    rc = refusal(EXIT_REFUSED, out->code, out->message, generated_id);
    budget_response_free(out);
    return rc;
}

/* ---- writes --------------------------------------------------------------------------- */

/* "<kind>-<12 lowercase hex>" from the kernel's random source. */
int generate_id(const char *kind, char *out, size_t out_size)
{
    unsigned char random[6];
    size_t got = 0;
    while (got < sizeof(random)) {
        ssize_t n = getrandom(random + got, sizeof(random) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        got += (size_t)n;
    }
    snprintf(out, out_size, "%s-%02x%02x%02x%02x%02x%02x", kind, random[0], random[1], random[2],
             random[3], random[4], random[5]);
    return 0;
}

void print_write_result(const ctl *c, const budget_response *r, const char *id)
{
    if (c->json) {
        json_line(&r->result);
        return;
    }
    char type[64], result_id[BUDGET_ID_BYTES_MAX + 1];
    char safe_type[sizeof(type) * 2], safe_id[sizeof(result_id) * 2];
    budget_map_str(&r->result, "type", type, sizeof(type));
    budget_map_str(&r->result, "id", result_id, sizeof(result_id));
    terminal_text(type, strlen(type), sizeof(type) - 1, safe_type, sizeof(safe_type));
    terminal_text(result_id, strlen(result_id), BUDGET_ID_BYTES_MAX, safe_id, sizeof(safe_id));
    printf("%s %s seq %" PRId64 " hash ", safe_type[0] ? safe_type : "?", safe_id[0] ? safe_id : id,
           budget_map_int(&r->result, "seq", 0));
    const msgpack_object *hash = budget_map_get(&r->result, "hash");
    if (hash != NULL && hash->type == MSGPACK_OBJECT_BIN)
        hex(stdout, hash->via.bin.ptr, hash->via.bin.size < 8 ? hash->via.bin.size : 8);
    if (budget_map_get(&r->result, "unspent") != NULL) {
        char unspent[48];
        budget_amount_format(budget_map_int(&r->result, "unspent", 0), unspent, sizeof(unspent));
        printf(" unspent %s", unspent);
    }
    fputc('\n', stdout);
}

static int run_write(ctl *c, const command *cmd, arg_value *values)
{
    char id[BUDGET_ID_BYTES_MAX + 1];
    arg_value *id_value = value_of(cmd, values, "id");
    const char *generated = id_value->set ? NULL : id;
    if (!id_value->set) {
        int rc = generate_id(cmd->id_kind, id, sizeof(id));
        if (rc != 0)
            return complain(EXIT_USAGE, "cannot generate an id: %s; give --id", strerror(-rc));
        id_value->set = true;
        id_value->text = id;
    }
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    budget_response r;
    int rc = pack_args(&pk, cmd, values, 0);
    if (rc != 0)
        rc = complain(EXIT_USAGE, "out of memory");
    else
        rc = call_write(c, cmd->op, &args, &r, generated);
    msgpack_sbuffer_destroy(&args);
    const arg_value *unit = value_of(cmd, values, "unit");
    if (rc == EXIT_REFUSED && unit != NULL && unit->set)
        unit_hint(c, unit->text);
    if (rc != 0)
        return rc;
    print_write_result(c, &r, id_value->text);
    budget_response_free(&r);
    return EXIT_DONE;
}

/* Reads `op` with one str arg `key` (and a uint arg `uint_key` when not NULL). */
static int call_one(ctl *c, const char *op, const char *key, const char *value,
                    const char *uint_key, uint64_t number, budget_response *r)
{
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, uint_key != NULL ? 2 : 1);
    rc |= msgpack_pack_str_with_body(&pk, key, strlen(key));
    rc |= msgpack_pack_str_with_body(&pk, value, strlen(value));
    if (uint_key != NULL)
        rc |= pack_uint_pair(&pk, uint_key, number);
    rc = rc != 0 ? complain(EXIT_USAGE, "out of memory") : call(c, op, &args, r);
    msgpack_sbuffer_destroy(&args);
    return rc;
}

/* The allocation avrop `id` was requested from, into `allocation`: the first event of its
 * history, read from the start of the log (a call scans part of a long log). Returns 0 or an
 * exit status. */
static int avrop_allocation(ctl *c, const char *id, char *allocation, size_t size)
{
    char type[32] = "";
    for (uint64_t after = 0;;) {
        budget_response r;
        int rc = call_one(c, "events", "entity", id, "after", after, &r);
        if (rc != 0)
            return rc;
        const msgpack_object *events = budget_map_get(&r.result, "events");
        uint64_t next = (uint64_t)budget_map_int(&r.result, "next", 0);
        bool more = next > after && next < (uint64_t)budget_map_int(&r.result, "head", 0);
        if (events != NULL && events->type == MSGPACK_OBJECT_ARRAY && events->via.array.size > 0) {
            const msgpack_object *first = &events->via.array.ptr[0];
            budget_map_str(first, "type", type, sizeof(type));
            budget_map_str(budget_map_get(first, "data"), "allocation", allocation, size);
            more = false;
        }
        budget_response_free(&r);
        if (!more)
            break;
        after = next;
    }
    if (strcmp(type, "avrop.requested") != 0 || allocation[0] == '\0')
        return complain(EXIT_REFUSED, "not_found: no avrop %s", id);
    return 0;
}

/* What is left to reverse of avrop `id`: its amount less what is reversed or being reversed,
 * from the balances of its allocation, page by page. Returns 0 or an exit status. */
static int avrop_left(ctl *c, const char *id, int64_t *left)
{
    char allocation[BUDGET_ID_BYTES_MAX + 1] = "";
    int rc = avrop_allocation(c, id, allocation, sizeof(allocation));
    for (uint64_t offset = 0, pages = 0; rc == 0 && pages < BALANCES_PAGES_MAX; pages++) {
        budget_response r;
        rc = call_one(c, "balances", "allocation", allocation, "avrop_offset", offset, &r);
        if (rc != 0)
            return rc;
        const msgpack_object *list = budget_map_get(&r.result, "avrop");
        uint32_t n = list != NULL && list->type == MSGPACK_OBJECT_ARRAY ? list->via.array.size : 0;
        for (uint32_t i = 0; i < n; i++) {
            char got[BUDGET_ID_BYTES_MAX + 1];
            const msgpack_object *v = &list->via.array.ptr[i];
            budget_map_str(v, "id", got, sizeof(got));
            if (strcmp(got, id) == 0) {
                *left = budget_map_int(v, "amount", 0) - budget_map_int(v, "reversed", 0) -
                        budget_map_int(v, "reversing", 0);
                budget_response_free(&r);
                return 0;
            }
        }
        offset += n;
        bool more = n > 0 && more_pages(&r.result);
        budget_response_free(&r);
        if (!more)
            break;
    }
    return rc != 0 ? rc : complain(EXIT_REFUSED, "not_found: no avrop %s", id);
}

/* `reverse AVROP [AMOUNT]`: without AMOUNT, all of the avrop that is left to reverse. */
static int run_reverse(ctl *c, const command *cmd, arg_value *values)
{
    arg_value *amount = value_of(cmd, values, "AMOUNT");
    if (!amount->set) {
        const char *avrop = value_of(cmd, values, "AVROP")->text;
        int rc = avrop_left(c, avrop, &amount->number);
        if (rc != 0)
            return rc;
        if (amount->number <= 0)
            return complain(EXIT_REFUSED,
                            "insufficient_funds: avrop %s has nothing left to "
                            "reverse",
                            avrop);
        amount->set = true;
        amount->text = "";
    }
    return run_write(c, cmd, values);
}

/* ---- hello, verify, stats -------------------------------------------------------------- */

/* "roles: clerk (SON, KFN), approver (every unit)", or that the caller holds none. */
static void print_hello_roles(const msgpack_object *roles)
{
    char text[BUDGET_UNIT_BYTES_MAX * 2];

    if (!roles || roles->type != MSGPACK_OBJECT_ARRAY || roles->via.array.size == 0) {
        printf("roles: none (every op but hello is forbidden to you)\n");
        return;
    }
    printf("roles:");
    for (uint32_t i = 0; i < roles->via.array.size; i++) {
        const msgpack_object *role = &roles->via.array.ptr[i];
        const msgpack_object *units = budget_map_get(role, "units");
        char name[32];
        budget_map_str(role, "role", name, sizeof(name));
        terminal_text(name, strlen(name), sizeof(name) - 1, text, sizeof(text));
        printf("%s %s (", i ? "," : "", text);
        for (uint32_t u = 0;
             units && units->type == MSGPACK_OBJECT_ARRAY && u < units->via.array.size; u++) {
            const msgpack_object *unit = &units->via.array.ptr[u];
            if (unit->type != MSGPACK_OBJECT_STR)
                continue;
            if (unit->via.str.size == 1 && unit->via.str.ptr[0] == '*')
                snprintf(text, sizeof(text), "every unit");
            else
                terminal_text(unit->via.str.ptr, unit->via.str.size, BUDGET_UNIT_BYTES_MAX, text,
                              sizeof(text));
            printf("%s%s", u ? ", " : "", text);
        }
        printf(")");
    }
    printf("\n");
}

static int run_hello(ctl *c, const command *cmd, arg_value *values)
{
    (void)values;
    budget_response r;
    int rc = call(c, cmd->op, NULL, &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        json_line(&r.result);
    } else {
        char server[64], version[64], name[BUDGET_NAME_BYTES_MAX + 1];
        budget_map_str(&r.result, "server", server, sizeof(server));
        budget_map_str(&r.result, "version", version, sizeof(version));
        const msgpack_object *actor = budget_map_get(&r.result, "actor");
        budget_map_str(actor, "name", name, sizeof(name));
        char safe_name[BUDGET_NAME_BYTES_MAX * 2], safe_server[sizeof(server) * 2],
            safe_version[sizeof(version) * 2];
        terminal_text(name, strlen(name), BUDGET_NAME_BYTES_MAX, safe_name, sizeof(safe_name));
        terminal_text(server, strlen(server), sizeof(server) - 1, safe_server, sizeof(safe_server));
        terminal_text(version, strlen(version), sizeof(version) - 1, safe_version,
                      sizeof(safe_version));
        printf("server: %s\nversion: %s\nprotocol: %" PRId64 "\nhead: %" PRId64 "\n", safe_server,
               safe_version, budget_map_int(&r.result, "protocol", 0),
               budget_map_int(&r.result, "head", 0));
        printf("you are %s (uid %" PRId64 ")\n", safe_name[0] ? safe_name : "?",
               budget_map_int(actor, "uid", -1));
        print_hello_roles(budget_map_get(&r.result, "roles"));
    }
    budget_response_free(&r);
    return EXIT_DONE;
}

int run_verify(ctl *c, const command *cmd, arg_value *values)
{
    (void)values;
    budget_response r;
    int rc = call(c, cmd->op, NULL, &r);
    if (rc != 0)
        return rc;
    const msgpack_object *ok = budget_map_get(&r.result, "ok");
    bool intact = ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
    if (c->json) {
        json_line(&r.result);
    } else if (intact) {
        printf("chain intact: %" PRId64 " events, head %" PRId64 "\n",
               budget_map_int(&r.result, "checked", 0), budget_map_int(&r.result, "head", 0));
    } else {
        char reason[BUDGET_TEXT_BYTES_MAX + 1], safe[BUDGET_TEXT_BYTES_MAX * 2];
        budget_map_str(&r.result, "reason", reason, sizeof(reason));
        terminal_text(reason, strlen(reason), BUDGET_TEXT_BYTES_MAX, safe, sizeof(safe));
        int64_t first_bad = budget_map_int(&r.result, "first_bad", -1);
        if (first_bad >= 0)
            printf("chain broken at seq %" PRId64 ": %s\n", first_bad, safe);
        else
            printf("chain broken: %s\n", safe);
    }
    budget_response_free(&r);
    return intact ? EXIT_DONE : EXIT_BROKEN_CHAIN;
}

static int run_stats(ctl *c, const command *cmd, arg_value *values)
{
    (void)values;
    budget_response r;
    int rc = call(c, cmd->op, NULL, &r);
    if (rc != 0)
        return rc;
    if (c->json || r.result.type != MSGPACK_OBJECT_MAP) {
        json_line(&r.result);
    } else {
        for (uint32_t i = 0; i < r.result.via.map.size; i++) {
            const msgpack_object_kv *kv = &r.result.via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR) {
                char key[128];
                terminal_text(kv->key.via.str.ptr, kv->key.via.str.size, 60, key, sizeof(key));
                printf("%s: ", key);
            } else {
                json_value(stdout, &kv->key, 1);
                fputs(": ", stdout);
            }
            if (kv->val.type == MSGPACK_OBJECT_STR) {
                char text[BUDGET_TEXT_BYTES_MAX * 2];
                terminal_text(kv->val.via.str.ptr, kv->val.via.str.size, BUDGET_TEXT_BYTES_MAX,
                              text, sizeof(text));
                fputs(text, stdout);
            } else
                json_value(stdout, &kv->val, 1);
            fputc('\n', stdout);
        }
    }
    budget_response_free(&r);
    return EXIT_DONE;
}

/* ---- balances ------------------------------------------------------------------------- */

static const char *const frame_headers[] = {"ID",         "UNIT",     ">YEAR",        ">GRANTED",
                                            ">ALLOCATED", ">PENDING", ">UNALLOCATED", ">CALLED OFF",
                                            "CONTINUES",  "TITLE"};
static const char *const allocation_headers[] = {
    "ID",          "FRAME",    "UNIT",       ">YEAR",    "STATUS",    ">AMOUNT",
    ">CALLED OFF", ">PENDING", ">AVAILABLE", ">REDUCED", ">REDUCING", "PURPOSE"};
static const char *const avrop_headers[] = {"ID",      "ALLOCATION", "UNIT",       "STATUS",
                                            ">AMOUNT", ">REVERSED",  ">REVERSING", "NOTE"};
static const char *const unit_headers[] = {"UNIT",        ">YEAR",    ">FRAMES",    ">ALLOCATED",
                                           ">CALLED OFF", ">PENDING", ">AVAILABLE", ">REDUCING",
                                           ">OUTCOME",    ">USED",    ">DEVIATION", ">FORECAST"};

void balance_tables_init(balance_tables *t)
{
    table_init(&t->frames, frame_headers, COUNT(frame_headers));
    table_init(&t->allocations, allocation_headers, COUNT(allocation_headers));
    table_init(&t->avrop, avrop_headers, COUNT(avrop_headers));
    table_init(&t->units, unit_headers, COUNT(unit_headers));
}

void balance_tables_free(balance_tables *t)
{
    table_free(&t->frames);
    table_free(&t->allocations);
    table_free(&t->avrop);
    table_free(&t->units);
}

static int add_frame(table *t, const msgpack_object *f)
{
    cell cells[COUNT(frame_headers)];
    cell_str(&cells[0], f, "id", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[1], f, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_int(&cells[2], f, "year");
    cell_amount(&cells[3], f, "granted");
    cell_amount(&cells[4], f, "allocated");
    cell_amount(&cells[5], f, "pending");
    cell_amount(&cells[6], f, "unallocated");
    cell_amount(&cells[7], f, "called_off");
    cell_str(&cells[8], f, "continues", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[9], f, "title", TABLE_TEXT_COLUMNS_MAX);
    cell_mark_oddities(&cells[0], f);
    return add_cells(t, cells, COUNT(cells));
}

static int add_allocation(table *t, const msgpack_object *a)
{
    cell cells[COUNT(allocation_headers)];
    cell_str(&cells[0], a, "id", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[1], a, "frame", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[2], a, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_int(&cells[3], a, "year");
    cell_str(&cells[4], a, "status", 16);
    cell_amount(&cells[5], a, "amount");
    cell_amount(&cells[6], a, "called_off");
    cell_amount(&cells[7], a, "pending");
    cell_amount(&cells[8], a, "available");
    cell_amount(&cells[9], a, "reduced");
    cell_amount(&cells[10], a, "reducing");
    cell_str(&cells[11], a, "purpose", TABLE_TEXT_COLUMNS_MAX);
    cell_mark_oddities(&cells[0], a);
    return add_cells(t, cells, COUNT(cells));
}

static int add_avrop(table *t, const msgpack_object *v)
{
    cell cells[COUNT(avrop_headers)];
    cell_str(&cells[0], v, "id", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[1], v, "allocation", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[2], v, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_str(&cells[3], v, "status", 16);
    cell_amount(&cells[4], v, "amount");
    cell_amount(&cells[5], v, "reversed");
    cell_amount(&cells[6], v, "reversing");
    cell_str(&cells[7], v, "note", TABLE_TEXT_COLUMNS_MAX);
    return add_cells(t, cells, COUNT(cells));
}

static int add_unit(table *t, const msgpack_object *u)
{
    cell cells[COUNT(unit_headers)];
    cell_str(&cells[0], u, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_int(&cells[1], u, "year");
    cell_amount(&cells[2], u, "frames");
    cell_amount(&cells[3], u, "allocated");
    cell_amount(&cells[4], u, "called_off");
    cell_amount(&cells[5], u, "pending");
    cell_amount(&cells[6], u, "available");
    cell_amount(&cells[7], u, "reducing");
    cell_amount(&cells[8], u, "outcome");
    cell_permille(&cells[9], u, "used_permille");
    cell_amount(&cells[10], u, "deviation");
    cell_amount(&cells[11], u, "forecast");
    cell_mark_oddities(&cells[0], u);
    return add_cells(t, cells, COUNT(cells));
}

/* Adds every map in result[key] to a table. */
static int add_rows(table *t, const msgpack_object *result, const char *key,
                    int (*add)(table *, const msgpack_object *))
{
    const msgpack_object *list = budget_map_get(result, key);
    if (list == NULL || list->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        int rc = add(t, &list->via.array.ptr[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

bool more_pages(const msgpack_object *result)
{
    const msgpack_object *more = budget_map_get(result, "more");
    return more != NULL && more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean;
}

/*
 * The lists of a balances answer, each paged on its own by the daemon: its key, and the arg
 * that asks for its next page (also the key of that offset in the answer's "next").
 */
static const struct {
    const char *key, *offset_arg;
} balances_lists[BAL_LISTS] = {
    {"frames", "frames_offset"},
    {"allocations", "offset"},
    {"avrop", "avrop_offset"},
    {"units", "units_offset"},
};
/* An offset past the end of any list: a list not wanted comes empty on every page. */
#define BALANCES_LIST_SKIPPED UINT64_MAX

void balances_cursor_init(balances_cursor *cur, unsigned wanted)
{
    for (int k = 0; k < BAL_LISTS; k++)
        cur->at[k] = wanted & (1u << k) ? 0 : BALANCES_LIST_SKIPPED;
}

/* Moves `cur` to the answer's "next". True when some list moved on (false when the answer
 * has no "next": a daemon that pages only allocations). */
bool balances_advance(const msgpack_object *result, balances_cursor *cur)
{
    const msgpack_object *next = budget_map_get(result, "next");
    bool moved = false;
    if (next == NULL || next->type != MSGPACK_OBJECT_MAP)
        return false;
    for (int k = 0; k < BAL_LISTS; k++) {
        const msgpack_object *o = budget_map_get(next, balances_lists[k].offset_arg);
        if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 > cur->at[k]) {
            cur->at[k] = o->via.u64;
            moved = true;
        }
    }
    return moved;
}

/* The balances request for one page: the user's filters, as_of pinned after the first page,
 * and each list's offset. */
static int pack_balances(msgpack_sbuffer *sbuf, const command *cmd, arg_value *values,
                         uint64_t as_of, const char *as_of_day, const balances_cursor *cur)
{
    msgpack_packer pk;
    uint32_t extra = as_of > 0 || as_of_day != NULL;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    for (int k = 0; k < BAL_LISTS; k++)
        extra += cur->at[k] > 0;
    int rc = pack_args(&pk, cmd, values, extra);
    if (rc == 0 && as_of > 0)
        rc = pack_uint_pair(&pk, "as_of", as_of);
    else if (rc == 0 && as_of_day != NULL)
        rc = msgpack_pack_str_with_body(&pk, "as_of", 5) |
             msgpack_pack_str_with_body(&pk, as_of_day, strlen(as_of_day));
    for (int k = 0; k < BAL_LISTS && rc == 0; k++)
        if (cur->at[k] > 0)
            rc = pack_uint_pair(&pk, balances_lists[k].offset_arg, cur->at[k]);
    return rc;
}

/*
 * Fetches every page of `balances` for the lists in `wanted`: each further page asked `as_of`
 * the seq of the first, with the offsets the answer before gave in "next", until "more" is
 * false. `page` sees every page. Returns 0 with the first page in `first` (the caller frees
 * it), or an exit status after saying why (nothing to free).
 */
int fetch_balances(ctl *c, const command *cmd, arg_value *values, unsigned wanted,
                   budget_response *first, page_fn page, void *state)
{
    arg_value *as_of_value = value_of(cmd, values, "as-of");
    bool as_of_set = as_of_value != NULL && as_of_value->set;
    uint64_t as_of = as_of_set ? (uint64_t)as_of_value->number : 0;
    /* A day is asked on the first page; the others ask the seq it stood at. */
    const char *as_of_day = as_of_set && as_of == 0 ? as_of_value->text : NULL;
    balances_cursor cur;

    balances_cursor_init(&cur, wanted);
    for (unsigned n = 0; n < BALANCES_PAGES_MAX; n++) {
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init(&sbuf);
        budget_response r;
        int rc = pack_balances(&sbuf, cmd, values, as_of, n == 0 ? as_of_day : NULL, &cur);
        rc = rc != 0 ? complain(EXIT_USAGE, "out of memory") : call(c, cmd->op, &sbuf, &r);
        msgpack_sbuffer_destroy(&sbuf);
        if (rc != 0) {
            if (n > 0)
                budget_response_free(first);
            return rc;
        }
        rc = page(state, &r.result);
        bool more = more_pages(&r.result);
        bool moved = balances_advance(&r.result, &cur);
        if (n == 0) {
            *first = r;
            as_of = (uint64_t)budget_map_int(&r.result, "as_of", 0);
        } else {
            budget_response_free(&r);
        }
        if (rc != 0)
            rc = complain(EXIT_REFUSED, "out of memory");
        else if (!more)
            return 0;
        else if (!moved || as_of == 0)
            rc = complain(EXIT_CONNECTION, "balances: the daemon says more but names no next "
                                           "page (is budgetd older than budgetctl?)");
        if (rc != 0) {
            budget_response_free(first);
            return rc;
        }
    }
    budget_response_free(first);
    return complain(EXIT_REFUSED, "balances: more than %u pages; narrow the query",
                    BALANCES_PAGES_MAX);
}

int balances_page_rows(void *state, const msgpack_object *result)
{
    balance_tables *t = state;
    int rc = add_rows(&t->frames, result, "frames", add_frame);
    if (rc == 0)
        rc = add_rows(&t->allocations, result, "allocations", add_allocation);
    if (rc == 0)
        rc = add_rows(&t->avrop, result, "avrop", add_avrop);
    if (rc == 0)
        rc = add_rows(&t->units, result, "units", add_unit);
    return rc;
}

int print_balances(const budget_response *first, balance_tables *t)
{
    printf("%s %" PRId64 "\n", header_text("As of seq"),
           budget_map_int(&first->result, "as_of", 0));
    char day[BUDGET_DATE_BYTES + 1];
    budget_map_str(&first->result, "decided_by", day, sizeof(day));
    if (day[0] != '\0')
        printf("Decided by %s, whenever entered (! marks an oddity: what the rules forbid, shown "
               "as it is)\n",
               day);
    table_print(stdout, &t->frames, "Frames");
    table_print(stdout, &t->allocations, "Allocations");
    table_print(stdout, &t->avrop, "Avrop");
    table_print(stdout, &t->units, "Units, per fiscal year");
    if (t->frames.rows + t->allocations.rows + t->avrop.rows + t->units.rows == 0)
        printf("\n%s\n", header_text("nothing to show"));
    return EXIT_DONE;
}

int balances_json_open(balances_json *j)
{
    memset(j, 0, sizeof(*j));
    for (int k = 0; k < BAL_LISTS; k++)
        if ((j->out[k] = open_memstream(&j->joined[k], &j->size[k])) == NULL)
            return -1;
    return 0;
}

/* Closes the streams; the joined text stays until balances_json_free. */
void balances_json_close(balances_json *j)
{
    for (int k = 0; k < BAL_LISTS; k++)
        if (j->out[k] != NULL) {
            fclose(j->out[k]);
            j->out[k] = NULL;
        }
}

void balances_json_free(balances_json *j)
{
    balances_json_close(j);
    for (int k = 0; k < BAL_LISTS; k++)
        free(j->joined[k]);
}

int balances_page_json(void *state, const msgpack_object *result)
{
    balances_json *j = state;
    for (int k = 0; k < BAL_LISTS; k++) {
        const msgpack_object *list = budget_map_get(result, balances_lists[k].key);
        for (uint32_t i = 0;
             list != NULL && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++) {
            if (j->listed[k]++ > 0)
                fputc(',', j->out[k]);
            json_value(j->out[k], &list->via.array.ptr[i], 2);
        }
    }
    return 0;
}

/* True when `key` is the str `name`. */
static bool key_is(const msgpack_object *key, const char *name)
{
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(name) &&
           memcmp(key->via.str.ptr, name, key->via.str.size) == 0;
}

/* Writes the first page's result with each list joined over every page, "more" false, and
 * no "next". */
void print_balances_json(const msgpack_object *result, const balances_json *j)
{
    bool comma = false;

    if (result->type != MSGPACK_OBJECT_MAP) {
        json_line(result);
        return;
    }
    fputc('{', stdout);
    for (uint32_t i = 0; i < result->via.map.size; i++) {
        const msgpack_object_kv *kv = &result->via.map.ptr[i];
        int list = -1;
        for (int k = 0; k < BAL_LISTS; k++)
            if (key_is(&kv->key, balances_lists[k].key))
                list = k;
        if (key_is(&kv->key, "next"))
            continue;
        if (comma)
            fputc(',', stdout);
        comma = true;
        json_value(stdout, &kv->key, 1);
        fputc(':', stdout);
        if (list >= 0) {
            fputc('[', stdout);
            fwrite(j->joined[list], 1, j->size[list], stdout);
            fputc(']', stdout);
        } else if (key_is(&kv->key, "more")) {
            fputs("false", stdout);
        } else {
            json_value(stdout, &kv->val, 1);
        }
    }
    fputs("}\n", stdout);
}

static int run_balances_json(ctl *c, const command *cmd, arg_value *values)
{
    balances_json j;
    if (balances_json_open(&j) != 0) {
        balances_json_free(&j);
        return complain(EXIT_REFUSED, "out of memory");
    }
    budget_response first;
    int rc = fetch_balances(c, cmd, values, BALANCES_ALL_LISTS, &first, balances_page_json, &j);
    balances_json_close(&j);
    if (rc == 0) {
        print_balances_json(&first.result, &j);
        budget_response_free(&first);
    }
    balances_json_free(&j);
    return rc;
}

int run_balances(ctl *c, const command *cmd, arg_value *values)
{
    int selectors = value_of(cmd, values, "frame")->set + value_of(cmd, values, "allocation")->set +
                    value_of(cmd, values, "unit")->set;
    if (selectors > 1)
        return complain(EXIT_USAGE, "balances: give at most one of --frame, --allocation, --unit");
    if (c->json)
        return run_balances_json(c, cmd, values);
    balance_tables t;
    balance_tables_init(&t);
    budget_response first;
    int rc = fetch_balances(c, cmd, values, BALANCES_ALL_LISTS, &first, balances_page_rows, &t);
    if (rc == 0) {
        rc = print_balances(&first, &t);
        budget_response_free(&first);
    }
    const arg_value *unit = value_of(cmd, values, "unit");
    if (rc == 0 && unit->set && t.frames.rows + t.allocations.rows + t.units.rows == 0)
        unit_hint(c, unit->text);
    balance_tables_free(&t);
    return rc;
}

/* ---- the year's end -------------------------------------------------------------------- */

static const char *const unspent_headers[] = {"FRAME",       "UNIT",     ">GRANTED",
                                              ">CALLED OFF", ">UNSPENT", ">CARRIED OVER",
                                              ">LEFT",       "CLOSED",   "FROM"};

typedef struct {
    table frames;
    int64_t unspent, carried_over;
} unspent_rows;

static int add_unspent_row(table *t, const msgpack_object *f)
{
    cell cells[COUNT(unspent_headers)];
    cell_str(&cells[0], f, "id", BUDGET_ID_BYTES_MAX);
    cell_str(&cells[1], f, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_amount(&cells[2], f, "granted");
    cell_amount(&cells[3], f, "called_off");
    cell_amount(&cells[4], f, "unspent");
    cell_amount(&cells[5], f, "carried_over");
    budget_amount_format(budget_map_int(f, "unspent", 0) - budget_map_int(f, "carried_over", 0),
                         cells[6].text, sizeof(cells[6].text));
    const msgpack_object *closed = budget_map_get(f, "closed");
    snprintf(cells[7].text, sizeof(cells[7].text), "%s",
             closed != NULL && closed->type == MSGPACK_OBJECT_BOOLEAN && closed->via.boolean
                 ? "yes"
                 : "no");
    cell_str(&cells[8], f, "carried_from", BUDGET_ID_BYTES_MAX);
    return add_cells(t, cells, COUNT(cells));
}

/* page_fn: the frames of a page, and their sums. */
static int unspent_page(void *state, const msgpack_object *result)
{
    unspent_rows *u = state;
    const msgpack_object *list = budget_map_get(result, "frames");
    if (list == NULL || list->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *f = &list->via.array.ptr[i];
        u->unspent += budget_map_int(f, "unspent", 0);
        u->carried_over += budget_map_int(f, "carried_over", 0);
        if (add_unspent_row(&u->frames, f) != 0)
            return -1;
    }
    return 0;
}

/* Prints the frames of the year that `cmd` (the unspent command) names, with their sums. */
static int print_unspent(ctl *c, const command *cmd, arg_value *values)
{
    if (c->json) {
        budget_response first;
        balances_json j;
        if (balances_json_open(&j) != 0) {
            balances_json_free(&j);
            return complain(EXIT_REFUSED, "out of memory");
        }
        int rc = fetch_balances(c, cmd, values, 1u << BAL_FRAMES, &first, balances_page_json, &j);
        balances_json_close(&j);
        if (rc == 0) {
            print_balances_json(&first.result, &j);
            budget_response_free(&first);
        }
        balances_json_free(&j);
        return rc;
    }
    unspent_rows u = {.unspent = 0, .carried_over = 0};
    table_init(&u.frames, unspent_headers, COUNT(unspent_headers));
    budget_response first;
    int rc = fetch_balances(c, cmd, values, 1u << BAL_FRAMES, &first, unspent_page, &u);
    if (rc == 0) {
        char unspent[48], carried[48], left[48];
        budget_amount_format(u.unspent, unspent, sizeof(unspent));
        budget_amount_format(u.carried_over, carried, sizeof(carried));
        budget_amount_format(u.unspent - u.carried_over, left, sizeof(left));
        printf("Fiscal year %" PRId64 " as of seq %" PRId64 "\n",
               value_of(cmd, values, "YEAR")->number, budget_map_int(&first.result, "as_of", 0));
        table_print(stdout, &u.frames,
                    "Frames: unspent (unallocated, or allocated and not called off)");
        printf("\nunspent %s, carried over %s, left %s\n", unspent, carried, left);
        budget_response_free(&first);
    }
    table_free(&u.frames);
    return rc;
}

static int run_unspent(ctl *c, const command *cmd, arg_value *values)
{
    return print_unspent(c, cmd, values);
}

/* close-year: the write, then the year's frames as `unspent` shows them. */
static int run_close_year(ctl *c, const command *cmd, arg_value *values)
{
    int rc = run_write(c, cmd, values);
    if (rc != EXIT_DONE || c->json)
        return rc;
    const command *read = find_command("unspent");
    arg_value read_values[OPTS_MAX];
    memset(read_values, 0, sizeof(read_values));
    *value_of(read, read_values, "YEAR") = *value_of(cmd, values, "YEAR");
    return print_unspent(c, read, read_values);
}

/* ---- units ---------------------------------------------------------------------------- */

/* The most pages of `units` read; each holds up to 2000 units. */
#define UNITS_PAGES_MAX 10000u

/* A row of the units table from one item of the answer. */
static int add_unit_row(table *t, const msgpack_object *u)
{
    cell cells[6];
    cell_str(&cells[0], u, "unit", BUDGET_UNIT_BYTES_MAX);
    cell_str(&cells[1], u, "name", TABLE_TEXT_COLUMNS_MAX);
    cell_str(&cells[2], u, "kind", TABLE_TEXT_COLUMNS_MAX);
    cell_str(&cells[3], u, "parent", BUDGET_UNIT_BYTES_MAX);
    cell_str(&cells[4], u, "state", TABLE_TEXT_COLUMNS_MAX);
    const msgpack_object *former = budget_map_get(u, "former_names");
    cells[5].text[0] = '\0';
    for (uint32_t k = 0;
         former && former->type == MSGPACK_OBJECT_ARRAY && k < former->via.array.size; k++) {
        const msgpack_object *name = &former->via.array.ptr[k];
        size_t at = strlen(cells[5].text);
        if (name->type != MSGPACK_OBJECT_STR || at + 8 >= sizeof(cells[5].text))
            break;
        if (k > 0)
            at += (size_t)snprintf(cells[5].text + at, sizeof(cells[5].text) - at, "; ");
        terminal_text(name->via.str.ptr, name->via.str.size, TABLE_TEXT_COLUMNS_MAX,
                      cells[5].text + at, sizeof(cells[5].text) - at);
    }
    return add_cells(t, cells, COUNT(cells));
}

/* Every page of `units`: as a table, or with --json as one object {"as_of", "units"}. */
static int run_units(ctl *c, const command *cmd, arg_value *values)
{
    (void)values;
    static const char *const headers[] = {"Code",   "Name",  "Kind",
                                          "Parent", "State", "Former names"};
    table t;
    table_init(&t, headers, COUNT(headers));
    uint64_t offset = 0;
    int rc = 0;
    for (unsigned page = 0; page < UNITS_PAGES_MAX && rc == 0; page++) {
        msgpack_sbuffer args;
        msgpack_sbuffer_init(&args);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str_with_body(&pk, "offset", 6);
        msgpack_pack_uint64(&pk, offset);
        budget_response r;
        rc = call(c, cmd->op, &args, &r);
        msgpack_sbuffer_destroy(&args);
        if (rc != 0)
            break;
        const msgpack_object *list = budget_map_get(&r.result, "units");
        uint32_t n = list && list->type == MSGPACK_OBJECT_ARRAY ? list->via.array.size : 0;
        if (c->json && page == 0)
            printf("{\"as_of\":%" PRId64 ",\"units\":[", budget_map_int(&r.result, "as_of", 0));
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            if (c->json) {
                if (offset + i > 0)
                    fputc(',', stdout);
                json_value(stdout, &list->via.array.ptr[i], 1);
            } else if (add_unit_row(&t, &list->via.array.ptr[i]) != 0) {
                rc = complain(EXIT_REFUSED, "out of memory");
            }
        }
        const msgpack_object *more = budget_map_get(&r.result, "more");
        bool again = n > 0 && more && more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean;
        offset += n;
        budget_response_free(&r);
        if (!again)
            break;
    }
    if (rc == 0 && c->json)
        printf("]}\n");
    else if (rc == 0 && t.rows == 0)
        printf("no units are registered\n");
    else if (rc == 0)
        table_print(stdout, &t, "Units");
    table_free(&t);
    return rc;
}

/* ---- events --------------------------------------------------------------------------- */

static bool is_amount_key(const msgpack_object *key)
{
    return key->type == MSGPACK_OBJECT_STR &&
           ((key->via.str.size == 6 && memcmp(key->via.str.ptr, "amount", 6) == 0) ||
            (key->via.str.size == 5 && memcmp(key->via.str.ptr, "delta", 5) == 0) ||
            (key->via.str.size == 7 && memcmp(key->via.str.ptr, "unspent", 7) == 0));
}

/* A str that can be printed bare: printable ASCII or UTF-8 without spaces, quotes or '='. */
static bool bare_text(const char *s, size_t n)
{
    if (n == 0 || !budget_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '"' || ch == '=' || ch == '\\')
            return false;
        if (ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] < 0xa1)
            return false; /* C1 controls and no-break space */
    }
    return true;
}

/* The decision of an event's data as clerks write it, "KS 2021-08-24 § 241 dnr KS 2021/1",
 * into `out`; "" when the data has none. */
void decision_text(const msgpack_object *data, char *out, size_t out_size)
{
    char body[BUDGET_DECISION_BODY_BYTES_MAX + 1], day[BUDGET_DATE_BYTES + 1];
    char paragraph[BUDGET_DECISION_PARAGRAPH_BYTES_MAX + 1], dnr[BUDGET_DECISION_DNR_BYTES_MAX + 1];
    budget_map_str(data, "decision_body", body, sizeof(body));
    budget_map_str(data, "decision_date", day, sizeof(day));
    budget_map_str(data, "decision_paragraph", paragraph, sizeof(paragraph));
    budget_map_str(data, "decision_dnr", dnr, sizeof(dnr));
    out[0] = '\0';
    if (body[0] != '\0')
        snprintf(out, out_size, "%s %s § %s%s%s", body, day, paragraph, dnr[0] ? " dnr " : "", dnr);
}

/* True for the keys of a decision that print_event_data shows as one "decision". */
static bool decision_part(const msgpack_object *key)
{
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size > 9 &&
           memcmp(key->via.str.ptr, "decision_", 9) == 0;
}

/* `key=value` pairs of an event's data; amounts formatted, text quoted when needed; the
 * decision's fields as one decision="KS 2021-08-24 § 241". */
static void print_event_data(const msgpack_object *data)
{
    if (data == NULL || data->type != MSGPACK_OBJECT_MAP)
        return;
    bool decision_shown = false;
    for (uint32_t i = 0; i < data->via.map.size; i++) {
        const msgpack_object *key = &data->via.map.ptr[i].key;
        const msgpack_object *val = &data->via.map.ptr[i].val;
        if (decision_part(key)) {
            char text[160];
            decision_text(data, text, sizeof(text));
            if (!decision_shown && text[0] != '\0') {
                fputs("  decision=", stdout);
                msgpack_object o = {.type = MSGPACK_OBJECT_STR,
                                    .via.str = {(uint32_t)strlen(text), text}};
                json_value(stdout, &o, 1);
            }
            decision_shown = true;
            continue;
        }
        fputs("  ", stdout);
        if (key->type == MSGPACK_OBJECT_STR && bare_text(key->via.str.ptr, key->via.str.size))
            fwrite(key->via.str.ptr, 1, key->via.str.size, stdout);
        else
            json_value(stdout, key, 1);
        fputc('=', stdout);
        bool integer = val->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                       val->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        if (integer && is_amount_key(key) &&
            (val->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || val->via.u64 <= INT64_MAX)) {
            char amount[48];
            int64_t ore =
                val->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)val->via.u64 : val->via.i64;
            budget_amount_format(ore, amount, sizeof(amount));
            bool plus = key->via.str.size == 5 && ore > 0; /* a delta shows its sign */
            printf("%s%s", plus ? "+" : "", amount);
        } else if (val->type == MSGPACK_OBJECT_STR &&
                   bare_text(val->via.str.ptr, val->via.str.size)) {
            fwrite(val->via.str.ptr, 1, val->via.str.size, stdout);
        } else {
            json_value(stdout, val, 1);
        }
    }
}

/* `seq  YYYY-MM-DD HH:MM:SS UTC  name(uid)  type  key=value ...` */
void print_event(const msgpack_object *ev, int seq_width)
{
    int64_t ts_ms = budget_map_int(ev, "ts", 0);
    time_t seconds = (time_t)(ts_ms / 1000);
    struct tm tm;
    char when[32] = "-";
    if (gmtime_r(&seconds, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    const msgpack_object *actor = budget_map_get(ev, "actor");
    char name[BUDGET_NAME_BYTES_MAX + 1], safe_name[BUDGET_NAME_BYTES_MAX * 2];
    budget_map_str(actor, "name", name, sizeof(name));
    terminal_text(name, strlen(name), BUDGET_NAME_BYTES_MAX, safe_name, sizeof(safe_name));
    cell type;
    cell_str(&type, ev, "type", 32);
    printf("%*" PRId64 "  %s UTC  %s(%" PRId64 ")  %-19s", seq_width, budget_map_int(ev, "seq", 0),
           when, safe_name[0] ? safe_name : "-", budget_map_int(actor, "uid", -1), type.text);
    print_event_data(budget_map_get(ev, "data"));
    fputc('\n', stdout);
}

static void print_events(const ctl *c, const msgpack_object *events, int seq_width)
{
    for (uint32_t i = 0;
         events != NULL && events->type == MSGPACK_OBJECT_ARRAY && i < events->via.array.size;
         i++) {
        if (c->json)
            json_line(&events->via.array.ptr[i]);
        else
            print_event(&events->via.array.ptr[i], seq_width);
    }
}

static int pack_events(msgpack_sbuffer *sbuf, const command *cmd, const arg_value *values,
                       uint64_t after)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    int rc = pack_args(&pk, cmd, values, after > 0);
    if (rc == 0 && after > 0)
        rc = pack_uint_pair(&pk, "after", after);
    return rc;
}

/* One events request. Returns 0 with `r` holding the ok response, or an exit status. */
static int fetch_events(ctl *c, const command *cmd, const arg_value *values, uint64_t after,
                        budget_response *r)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    int rc = pack_events(&sbuf, cmd, values, after);
    rc = rc != 0 ? complain(EXIT_USAGE, "out of memory") : call(c, cmd->op, &sbuf, r);
    msgpack_sbuffer_destroy(&sbuf);
    return rc;
}

int digits_of(uint64_t n)
{
    int digits = 1;
    while (n >= 10) {
        n /= 10;
        digits++;
    }
    return digits;
}

/*
 * Without --all: one page (as one JSON object with --json). With --all: pages until `next`
 * reaches the head seen on the first page, printing events as they come (JSON lines).
 */
static int run_events(ctl *c, const command *cmd, arg_value *values)
{
    const arg_value *after_value = value_of(cmd, values, "after");
    bool all = value_of(cmd, values, "all")->set;
    const arg_value *unit = value_of(cmd, values, "unit");
    uint64_t after = after_value->set ? (uint64_t)after_value->number : 0;
    uint64_t target = 0, shown = 0;
    for (unsigned page = 0;; page++) {
        budget_response r;
        int rc = fetch_events(c, cmd, values, after, &r);
        if (rc != 0)
            return rc;
        uint64_t next = (uint64_t)budget_map_int(&r.result, "next", 0);
        uint64_t head = (uint64_t)budget_map_int(&r.result, "head", 0);
        if (page == 0)
            target = head;
        const msgpack_object *events = budget_map_get(&r.result, "events");
        if (events != NULL && events->type == MSGPACK_OBJECT_ARRAY)
            shown += events->via.array.size;
        if (c->json && !all)
            json_line(&r.result);
        else
            print_events(c, events, digits_of(target));
        budget_response_free(&r);
        if (shown == 0 && next >= (page == 0 ? head : target) && unit->set)
            unit_hint(c, unit->text);
        if (!all) {
            if (next < head && !c->json)
                fprintf(stderr,
                        "budgetctl: more events after seq %" PRIu64 " (use --after %" PRIu64
                        " or --all)\n",
                        next, next);
            return EXIT_DONE;
        }
        if (next >= target)
            return EXIT_DONE;
        if (next <= after)
            return complain(EXIT_CONNECTION, "events: the daemon did not advance past seq %" PRIu64,
                            after);
        after = next;
    }
}

/* ---- usage ---------------------------------------------------------------------------- */

static int usage(const command *cmd, FILE *f)
{
    fprintf(f, "usage: budgetctl [--socket PATH] [--json] %s", cmd->name);
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        const arg_spec *s = &cmd->args[i];
        bool required = s->flags & ARG_REQUIRED;
        if (s->flags & ARG_POSITIONAL)
            fprintf(f, required ? " %s" : " [%s]", s->name);
        else if (s->kind == KIND_FLAG)
            fprintf(f, " [--%s]", s->name);
        else
            fprintf(f, " %s--%s %s%s", required ? "" : "[", s->name, s->meta, required ? "" : "]");
    }
    fprintf(f, "\n\n%c%s", toupper((unsigned char)cmd->summary[0]), cmd->summary + 1);
    if (cmd->id_kind != NULL)
        fprintf(f, " (op %s)", cmd->op);
    fputs(".\n", f);
    if (cmd->args[0].name != NULL)
        fputc('\n', f);
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++) {
        const arg_spec *s = &cmd->args[i];
        char left[48];
        if (s->flags & ARG_POSITIONAL)
            snprintf(left, sizeof(left), "%s", s->name);
        else if (s->kind == KIND_FLAG)
            snprintf(left, sizeof(left), "--%s", s->name);
        else
            snprintf(left, sizeof(left), "--%s %s", s->name, s->meta);
        fprintf(f, "  %-20s %s\n", left, s->help);
    }
    bool amount = false;
    for (size_t i = 0; i < OPTS_MAX && cmd->args[i].name != NULL; i++)
        amount |= cmd->args[i].kind == KIND_AMOUNT;
    if (amount)
        fprintf(f, "\nAMOUNT: \"3 mkr\", \"1,5 mkr\", \"500 tkr\", \"1 500 000 kr\", \"0,50 kr\"; "
                   "no unit means kronor.\n");
    if (cmd->id_kind != NULL)
        fprintf(f, "\nPrints: <type> <id> seq <seq> hash <first 16 hex>.\n"
                   "A write is retried with the same id (100, 300, 900 ms) when the connection\n"
                   "is lost or the daemon answers unavailable.\n");
    return EXIT_DONE;
}

static int main_usage(FILE *f)
{
    fprintf(f, "usage: budgetctl [--socket PATH] [--json] COMMAND [ARGS]\n\n"
               "The command-line client of budgetd, the municipal budget ledger.\n\n"
               "commands:\n");
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n"
               "  --socket PATH  the daemon's socket (default: $BUDGETD_SOCKET, else\n"
               "                 $XDG_RUNTIME_DIR/budgetd.sock, else /run/budgetd/budgetd.sock)\n"
               "  --json         print results as JSON, amounts as integers in öre; errors\n"
               "                 as one line of JSON on stderr\n"
               "  --swedish      headers in Swedish (also when the locale is sv_*)\n"
               "  --wide         tables show every text whole\n"
               "  --help         this text; budgetctl COMMAND --help for one command\n"
               "  --version      budgetctl's version\n\n"
               "exit status: 0 done, 1 refused by the daemon, 2 usage error,\n"
               "             3 no connection to the daemon (or no readable --data copy),\n"
               "             4 verify or an audit found a broken chain or checkpoint\n");
    return EXIT_DONE;
}

/* ---- main ----------------------------------------------------------------------------- */

const command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

const command *command_at(size_t i)
{
    return i < COMMANDS_COUNT ? &commands[i] : NULL;
}

int option_kind(const command *cmd, const char *name)
{
    size_t index;
    const arg_spec *spec = find_option(cmd, name, strlen(name), &index);
    return spec != NULL ? (int)spec->kind : -1;
}

static const char *const global_options[] = {"--socket", "--json", "--swedish",
                                             "--wide",   "--help", "--version"};

static int unknown_global(const char *arg)
{
    const char *near = nearest_word(arg, global_options, COUNT(global_options));
    if (near != NULL)
        return complain(EXIT_USAGE, "unknown option %.40s; did you mean %s? (see budgetctl --help)",
                        arg, near);
    return complain(EXIT_USAGE, "unknown option %.40s (see budgetctl --help)", arg);
}

static int unknown_command(const char *name)
{
    const char *names[COMMANDS_COUNT];
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        names[i] = commands[i].name;
    const char *near = nearest_word(name, names, COMMANDS_COUNT);
    if (near != NULL)
        return complain(EXIT_USAGE,
                        "unknown command \"%.40s\"; did you mean %s? (see budgetctl --help)", name,
                        near);
    return complain(EXIT_USAGE, "unknown command \"%.40s\" (see budgetctl --help)", name);
}

/* Options before the command. Returns the index of the command word, or -1 - exit status. */
static int parse_global(ctl *c, int argc, char **argv, const char **socket_flag)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return -1 - main_usage(stdout);
        if (strcmp(arg, "--version") == 0) {
            printf("budgetctl %s (protocol %d)\n", BUDGET_VERSION, BUDGET_PROTOCOL_VERSION);
            return -1 - EXIT_DONE;
        }
        if (strcmp(arg, "--json") == 0) {
            c->json = cli_json = true;
        } else if (strcmp(arg, "--swedish") == 0) {
            cli_swedish = true;
        } else if (strcmp(arg, "--wide") == 0) {
            cli_wide = true;
        } else if (strcmp(arg, "--socket") == 0) {
            if (++i >= argc)
                return -1 - complain(EXIT_USAGE, "--socket needs a value");
            *socket_flag = argv[i];
        } else if (strncmp(arg, "--socket=", 9) == 0) {
            *socket_flag = arg + 9;
        } else {
            return -1 - unknown_global(arg);
        }
    }
    if (i >= argc)
        return -1 - complain(EXIT_USAGE, "no command given (see budgetctl --help)");
    return i;
}

int main(int argc, char **argv)
{
    ctl c = {.json = false, .client = NULL};
    const char *socket_flag = NULL;
    cli_swedish = locale_is_swedish();
    int at = parse_global(&c, argc, argv, &socket_flag);
    if (at < 0)
        return -1 - at;
    if (strcmp(argv[at], "complete") == 0) /* hidden: for the shells' completion scripts */
        return run_complete(socket_flag, argc - at - 1, argv + at + 1);
    const command *cmd = find_command(argv[at]);
    if (strcmp(argv[at], "unit") == 0) {
        /* unit register, unit rename, unit close: the command is two words. */
        char name[48];
        snprintf(name, sizeof(name), "unit %.40s", at + 1 < argc ? argv[at + 1] : "");
        cmd = find_command(name);
        if (cmd == NULL)
            return complain(EXIT_USAGE, "unit needs register, rename or close (see budgetctl "
                                        "--help)");
        at++;
    }
    if (cmd == NULL)
        return unknown_command(argv[at]);

    arg_value values[OPTS_MAX];
    memset(values, 0, sizeof(values));
    int rc = parse_args(&c, cmd, argc - at - 1, argv + at + 1, values, &socket_flag);
    cli_json = c.json;
    if (rc != 0)
        return rc < 0 ? EXIT_DONE : rc;
    if (budget_socket_path(socket_flag, c.socket_path, sizeof(c.socket_path)) != 0)
        return complain(EXIT_USAGE, "socket path too long (at most %zu bytes)",
                        sizeof(((struct sockaddr_un *)0)->sun_path) - 1);

    rc = cmd->run(&c, cmd, values);
    disconnect_daemon(&c);
    if (fflush(stdout) != 0 || ferror(stdout))
        return complain(EXIT_REFUSED, "cannot write the output: %s", strerror(errno));
    return rc;
}
