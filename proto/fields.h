/*
 * The syntax of a request's fields, shared by the daemon (which checks every command before it
 * is written) and its clients (which check arguments before anything is sent): ids and units
 * of A-Z a-z 0-9 . _ : - and text of UTF-8, within the limits of budget/limits.h. No
 * allocation, no I/O.
 */
#ifndef BUDGET_FIELDS_H
#define BUDGET_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/limits.h"

/* 1..max bytes, each one of A-Z a-z 0-9 . _ : - (ids, units and other words). */
bool budget_word_valid(const char *s, size_t len, size_t max);

/* An id: a word of 1..BUDGET_ID_BYTES_MAX bytes. */
bool budget_id_valid(const char *s, size_t len);

/* A unit code: a word of 1..BUDGET_UNIT_BYTES_MAX bytes. */
bool budget_unit_valid(const char *s, size_t len);

/* The `n` bytes at `s` are UTF-8 as RFC 3629 has it; control characters count as valid. */
bool budget_utf8_valid(const void *s, size_t n);

/* Ledger text: len bytes within [min, BUDGET_TEXT_BYTES_MAX], valid UTF-8 with no control
 * character (budget_text_clean). */
bool budget_text_valid(const char *s, size_t len, size_t min);

/*
 * Calendar dates. On the wire a date is a str "YYYY-MM-DD" (exactly 10 bytes, digits and two
 * hyphens); in memory it is an int32 YYYYMMDD (2021-08-24 is 20210824), so that dates compare
 * as integers, and 0 is no date. A date is valid when it names a real day of the Gregorian
 * calendar (2024-02-29 is, 2021-02-29 is not) in a year within BUDGET_YEAR_MIN..BUDGET_YEAR_MAX.
 */
bool budget_date_valid(int32_t date);
/* Reads "YYYY-MM-DD" into *date; false (and *date untouched) unless it is a valid date. */
bool budget_date_parse(const char *s, size_t len, int32_t *date);
/* Writes a valid date as "YYYY-MM-DD" and a NUL into out; false when `date` is not valid. */
bool budget_date_format(int32_t date, char out[BUDGET_DATE_BYTES + 1]);
/* Days since 1970-01-01 of a valid date (negative before it). */
int64_t budget_date_days(int32_t date);
/* The valid date that is `days` days since 1970-01-01, or 0 when outside the years allowed. */
int32_t budget_date_from_days(int64_t days);

/*
 * The ledger's days. A day that a client names (as_of, a last day for avrop, a filter of
 * events) and the day an event was entered on are days of Swedish time, Europe/Stockholm:
 * CET (UTC+1), and CEST (UTC+2) from 01:00 UTC on the last Sunday of March to 01:00 UTC on the
 * last Sunday of October (the rule since 1996; from 1980 to 1995 summer time ended on the
 * last Sunday of September, and 1980's began on 6 April; before 1980 there was none). Computed
 * here, with no time zone database, so that every replay of a log, on any machine, finds the same
 * days.
 */
/* Milliseconds that Swedish time is ahead of UTC at `utc_ms` (3 600 000 or 7 200 000). */
int64_t budget_swedish_offset_ms(int64_t utc_ms);
/* The Swedish day (YYYYMMDD) that holds the instant `utc_ms`; 0 outside the years allowed. */
int32_t budget_day_of_ms(int64_t utc_ms);
/* The UTC ms at which the Swedish day `date` (a valid date) begins: its 00:00 in Stockholm. */
int64_t budget_day_start_ms(int32_t date);
/* The UTC ms at which the Swedish day `date` ends: the next day's start. */
int64_t budget_day_end_ms(int32_t date);

/* A decision's body: 1..BUDGET_DECISION_BODY_BYTES_MAX bytes of A-Z, Å, Ä, Ö (UTF-8) and
 * 0-9, beginning with a letter; kept as written ("KS", "SON", "KFN"). */
bool budget_decision_body_valid(const char *s, size_t len);

/* A decision's paragraph, the text after "§": 1..BUDGET_DECISION_PARAGRAPH_BYTES_MAX bytes of
 * A-Z a-z 0-9 and . / : - and single spaces, beginning with a digit and not ending with a
 * space ("241", "241 p. 2", "12:3"). */
bool budget_decision_paragraph_valid(const char *s, size_t len);

/* A decision, as a clerk writes it (budget_decision_parse). */
typedef struct {
    char body[BUDGET_DECISION_BODY_BYTES_MAX + 1];
    int32_t date; /* YYYYMMDD */
    char paragraph[BUDGET_DECISION_PARAGRAPH_BYTES_MAX + 1];
    char dnr[BUDGET_DECISION_DNR_BYTES_MAX + 1]; /* "" when not given */
} budget_decision;

/* The form budget_decision_parse reads, for messages. */
#define BUDGET_DECISION_FORM "BODY YYYY-MM-DD § PARAGRAPH [dnr DIARY-NUMBER]"

/*
 * Reads a decision written as
 *
 *     BODY SP DATE SP "§" [SP] PARAGRAPH [SP "dnr" SP DNR]
 *
 * with exactly one space (SP) where one is shown: "KS 2021-08-24 § 241",
 * "KS 2021-08-24 §241", "KS 2021-08-24 § 241 p. 2 dnr KS 2021/123". BODY, DATE and PARAGRAPH
 * follow the rules above; the paragraph runs up to the word "dnr" (in any case: "Dnr", "DNR")
 * or the end, and so never holds that word; DNR is the rest, 1..BUDGET_DECISION_DNR_BYTES_MAX
 * bytes of UTF-8 without control characters, not beginning or ending with a space. Returns true
 * with *out filled, or false with *why saying which part is wrong (a static string).
 */
bool budget_decision_parse(const char *s, size_t len, budget_decision *out, const char **why);

#endif
