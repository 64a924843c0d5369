/*
 * budgetctl report: the balances of budgetd as one self-contained HTML page for a committee
 * meeting (docs/budgetctl.md, "report"). Per unit and fiscal year: the frames granted, what is
 * allocated, called off, pending and left, the plan amount its budget years planned, and the
 * outcome (utfall) set against the budget (used, deviation, full-year forecast), with
 * subtotals and totals, bar charts per unit, a line over the years, and the decisions each
 * figure rests on. A decided-by report (balances' decided_by) says so and shows the oddities
 * the daemon flags. Swedish labels and numbers,
 * inline CSS and SVG, no script and no link outside the file; an A4 print style.
 *
 * The report is built from what the daemon answers: every page of `balances` (report_balances),
 * every page of the units × years view at the same `as_of` for the plan amounts
 * (report_plan_years, report_years_page), and the events up to the balances' `as_of`
 * (report_event), then written once
 * (report_write_html). It owns copies of everything it keeps; the msgpack objects given to it
 * may be freed as soon as a call returns.
 */
#ifndef BUDGET_REPORT_H
#define BUDGET_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

/* What the report covers: one unit or all (unit NULL), and the fiscal years from..to. */
typedef struct {
    const char *unit;
    int year_from, year_to;
} report_filter;

typedef struct report report;

/* A report for `filter` (copied), or NULL when out of memory. Free it with report_free. */
report *report_new(const report_filter *filter);
void report_free(report *r);

/* Adds the frames, allocations and unit rows of one `balances` answer (a page); items outside
 * the filter are skipped. The answer's `decided_by` (a decided-by view) is kept, and each
 * item's `oddities`. `state` is the report. 0, or -1 when out of memory. */
int report_balances(void *state, const msgpack_object *result);

/* The fiscal years to ask the units × years view for the plan amounts, once every page of
 * balances is added: the years asked for, narrowed to the years of the unit rows seen (even
 * those outside the filter) through the last plan year an adoption of the latest of them can
 * plan (BUDGET_PLAN_YEARS_MAX after it). False when there is nothing to ask: a decided-by
 * report (the view does not take decided_by, so plan is left out), an empty ledger, or no
 * year in common. */
bool report_plan_years(const report *r, int32_t *from, int32_t *to);

/* Keeps the plan amount (`plan`, `plan_by`) of each row of one page of the units × years view
 * (`balances` with view "years"); rows outside the filter are skipped. `state` is the report.
 * 0, or -1 when out of memory. */
int report_years_page(const msgpack_object *page, void *state);

/* The ledger's seq the balances stand at (their `as_of`): events after it are not cited. */
void report_set_as_of(report *r, uint64_t as_of);

/* Keeps what an event tells the report: the day and reference of a grant, adjustments and
 * decisions, and the avrop requested. `state` is the report. 0; REPORT_PAST_AS_OF when the
 * event comes after the balances' as_of (the events after it need not be read); -1 when out
 * of memory. */
#define REPORT_PAST_AS_OF 1
int report_event(void *state, const msgpack_object *event);

/* Writes the whole HTML page. 0, or -1 when writing failed (see ferror). */
int report_write_html(report *r, FILE *out);

/* Formats öre the Swedish way: "1 500 000 kr", "1 500 000,50 kr", "−200 000 kr", with a
 * narrow no-break space (U+202F) between groups of digits and a no-break space (U+00A0)
 * before "kr". Returns the length written, or the length needed (like snprintf). */
int report_amount_sv(int64_t ore, char *out, size_t out_size);

#endif
