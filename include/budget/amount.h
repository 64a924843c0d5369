/* Amounts as clerks write them ("1,5 mkr", "1 500 000 kr") and as budgetctl shows them. */
#ifndef BUDGET_AMOUNT_H
#define BUDGET_AMOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "budget/export.h"

/*
 * Parses an amount into öre. Accepted: an optional sign, digits with optional thousands
 * separators (space, no-break space U+00A0, narrow no-break space U+202F), an optional
 * decimal comma or point, and an optional unit: "kr" (default), "tkr", "mkr", "öre"
 * (case-insensitive, "kronor" too). Examples: "3 mkr", "1,5 mkr", "500 tkr",
 * "1 500 000 kr", "1500000", "0,50 kr", "-200 tkr". The value must be a whole number of öre
 * and at most 10^15 öre in magnitude. Returns 0, or BUDGET_EBAD_REQUEST with `why` set.
 */
BUDGET_API int budget_amount_parse(const char *text, int64_t *ore, char *why, size_t why_size);

/* Formats öre as "1 500 000,00 kr" (a minus sign first when negative). Returns the length
 * written, or the length needed when `out_size` is too small (like snprintf). */
BUDGET_API int budget_amount_format(int64_t ore, char *out, size_t out_size);

#endif
