/*
 * The outcome book: the actual costs (utfall) recorded per unit, fiscal year, month and
 * allocation, as the latest outcome.recorded of each key left them (docs/events.md,
 * "Outcome"), with the sums of each unit's months. Part of the ledger core (ledger.c keeps one
 * in its state and changes it only through ledger_apply): pure, no I/O.
 *
 * A key is (unit, year, month, allocation), the allocation "" for the unit's outcome outside
 * any allocation. A later figure for a key replaces the earlier one in the sums.
 */
#ifndef BUDGET_OUTCOME_H
#define BUDGET_OUTCOME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/limits.h"
#include "snapio.h"

/* Months of a fiscal year. */
#define OUTCOME_MONTHS 12
/* The most a unit's month or year may sum to, either way: a record that would pass it is
 * refused (too_large), so that a forecast (the year's sum times 12) never overflows. */
#define OUTCOME_TOTAL_MAX 100000000000000000LL

typedef struct outcome_book outcome_book;

/* A unit's outcome in one fiscal year: views valid until the book next changes. */
typedef struct {
    int64_t months[OUTCOME_MONTHS]; /* the sum of the figures of each month, January first */
    int64_t total;                  /* the sum of the months */
    int last_month;                 /* the latest month with a figure recorded; 0 when none */
    uint32_t figures;               /* keys with a figure */
} outcome_year_view;

/* One key's current figure. */
typedef struct {
    const char *unit, *allocation; /* allocation "" when none */
    int32_t year;
    int month;
    int64_t amount;
    uint64_t seq; /* of the event that recorded it */
} outcome_figure_view;

/* A new empty book, or NULL when out of memory. */
outcome_book *outcome_new(void);
void outcome_free(outcome_book *b);
/* A deep copy, or NULL when out of memory. */
outcome_book *outcome_clone(const outcome_book *b);

/* The book as bytes into `sink` (snapio.h), for ledger_save: 0, or -1 when the sink fails. */
int outcome_save(const outcome_book *b, snap_sink *sink);
/* A book read back from what outcome_save wrote, every count bounded by the source; NULL when
 * the bytes are not such a book (or out of memory). As registry_load, the links between its
 * records are not checked: only an authentic source may be used. */
outcome_book *outcome_load(snap_source *source);
/* Makes room for one more key and one more unit year: 0, or -1 when out of memory. */
int outcome_reserve(outcome_book *b);

/* The current figure of a key: true and *out, or false when none was recorded. O(1). */
bool outcome_figure(const outcome_book *b, const char *unit, int32_t year, int month,
                    const char *allocation, outcome_figure_view *out);
/* The unit's year: true and *out, or false when nothing was recorded for it. O(1). */
bool outcome_year(const outcome_book *b, const char *unit, int32_t year, outcome_year_view *out);

/* Records `amount` as the figure of the key (replacing any before) by event `seq`. Room was
 * reserved (outcome_reserve); nothing fails. */
void outcome_record(outcome_book *b, const char *unit, int32_t year, int month,
                    const char *allocation, int64_t amount, uint64_t seq);

/*
 * The figures of a unit's year in the order their keys were first recorded. `*cursor` starts
 * at 0; each call returns true and fills `out` with the next figure, advancing `*cursor`;
 * false at the end. O(1) per figure.
 */
bool outcome_next_figure(const outcome_book *b, const char *unit, int32_t year, uint32_t *cursor,
                         outcome_figure_view *out);

#endif
