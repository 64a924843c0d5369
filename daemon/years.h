/*
 * The units × years view (docs/protocol.md, `balances` with view "years"): per unit and year
 * its budget (frames), its plan amount, what it received and called off, what is available and,
 * for a closed year, what was left unspent; with subtotals by parent unit and totals by year.
 * The parent of a unit and its name are the register's (registry.h).
 * Pure, over a ledger: no I/O, no allocation but the summary's list of subtotals.
 */
#ifndef BUDGET_YEARS_H
#define BUDGET_YEARS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget/limits.h"
#include "ledger.h"

/* The sums of a row, a subtotal or a total. Sums saturate at INT64_MAX. `has_plan`: some row
 * summed has a plan amount. `has_unspent`: every row summed is of a closed year. */
typedef struct {
    int64_t budget, plan, allocated, called_off, available, unspent;
    bool has_plan, has_unspent;
} years_sums;

/* One row: a unit in a year. `plan_by` is the budget year of the adoption whose plan amount
 * `sums.plan` is (0: none). */
typedef struct {
    const char *unit; /* valid as ledger views are */
    int32_t year;
    int32_t plan_by;
    years_sums sums;
} years_row;

/* The parent of `unit`, or NULL when it has none. `ctx` is the caller's. */
typedef const char *(*years_parent_fn)(const ledger *l, const char *unit, void *ctx);

/* The parent of a unit in the ledger's register of units (its code), or NULL when it has none
 * or is not in the register. `ctx` is not used. Valid until the register next changes. */
const char *years_parent(const ledger *l, const char *unit, void *ctx);

/* The current name of `unit` in the register (its code when it is not registered). Valid
 * until the register next changes. */
const char *years_name(const ledger *l, const char *unit);

/* True when `year` is closed (its frames frozen): none is yet, so false. */
bool years_closed(const ledger *l, int32_t year);

/* What unit `unit` left unspent in `year`: its frames less what was called off from them;
 * false (and nothing in *out) when the year is open. O(frames of the unit). */
bool years_unspent(const ledger *l, const char *unit, int32_t year, int64_t *out);

/* The rows of `from`..`to` (and of `unit` when not NULL), as ledger_next_year_row. */
bool years_next_row(const ledger *l, size_t *i, const char *unit, int32_t from, int32_t to,
                    years_row *out);

typedef struct {
    char parent[BUDGET_UNIT_BYTES_MAX + 1];
    int32_t year;
    years_sums sums;
} years_subtotal;

/* The subtotals by (parent, year), in order of first appearance, and the total of each year
 * from..to (totals[year - from]). */
typedef struct {
    int32_t from, to;
    years_sums totals[BUDGET_YEARS_SPAN_MAX];
    years_subtotal *subtotals;
    size_t subtotals_count, subtotals_cap;
} years_summary;

/*
 * Sums every row of `from`..`to` (of `unit` when not NULL; to - from < BUDGET_YEARS_SPAN_MAX)
 * into `out`: a row with a parent (by `parent`, with `ctx`) into its parent's subtotal of its
 * year, and every row into its year's total. 0, or -1 when out of memory (`out` is then to be
 * freed all the same). O(rows × subtotals).
 */
int years_summarize(const ledger *l, const char *unit, int32_t from, int32_t to,
                    years_parent_fn parent, void *ctx, years_summary *out);
void years_summary_free(years_summary *s);

#endif
