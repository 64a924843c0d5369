/* The units × years view (years.h). */
#include "years.h"

#include <stdlib.h>
#include <string.h>

const char *years_parent(const ledger *l, const char *unit, void *ctx)
{
    (void)ctx;
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, unit);
    if (i == REGISTRY_NONE)
        return NULL;
    registry_view v;
    registry_view_of(reg, i, &v);
    return v.parent[0] != '\0' ? v.parent : NULL;
}

const char *years_name(const ledger *l, const char *unit)
{
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, unit);
    if (i == REGISTRY_NONE)
        return unit;
    registry_view v;
    registry_view_of(reg, i, &v);
    return v.name;
}

bool years_closed(const ledger *l, int32_t year)
{
    return ledger_year_closed(l, year) != NULL;
}

bool years_unspent(const ledger *l, const char *unit, int32_t year, int64_t *out)
{
    if (!years_closed(l, year))
        return false;
    int64_t left = 0;
    size_t i = 0;
    ledger_frame_view f;
    while (ledger_next_frame(l, &i, unit, year, &f))
        left += f.granted - f.called_off;
    *out = left;
    return true;
}

bool years_next_row(const ledger *l, size_t *i, const char *unit, int32_t from, int32_t to,
                    years_row *out)
{
    ledger_year_view v;
    if (!ledger_next_year_row(l, i, unit, from, to, &v))
        return false;
    memset(out, 0, sizeof *out);
    out->unit = v.unit;
    out->year = v.year;
    out->plan_by = v.plan_by;
    out->sums.budget = v.budget;
    out->sums.plan = v.plan;
    out->sums.has_plan = v.has_plan;
    out->sums.allocated = v.allocated;
    out->sums.called_off = v.called_off;
    out->sums.available = v.available;
    out->sums.has_unspent = years_unspent(l, v.unit, v.year, &out->sums.unspent);
    return true;
}

static int64_t add_saturating(int64_t a, int64_t b)
{
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return sum;
}

/* Adds `row` into `into`; `first`: `into` holds nothing yet. */
static void sums_add(years_sums *into, const years_sums *row, bool first)
{
    into->budget = add_saturating(into->budget, row->budget);
    into->plan = add_saturating(into->plan, row->plan);
    into->allocated = add_saturating(into->allocated, row->allocated);
    into->called_off = add_saturating(into->called_off, row->called_off);
    into->available = add_saturating(into->available, row->available);
    into->unspent = add_saturating(into->unspent, row->has_unspent ? row->unspent : 0);
    into->has_plan = into->has_plan || row->has_plan;
    into->has_unspent = (first || into->has_unspent) && row->has_unspent;
}

/* The subtotal of (parent, year), made when missing; NULL when out of memory. */
static years_subtotal *subtotal_of(years_summary *s, const char *parent, int32_t year)
{
    for (size_t k = 0; k < s->subtotals_count; k++)
        if (s->subtotals[k].year == year && strcmp(s->subtotals[k].parent, parent) == 0)
            return &s->subtotals[k];
    if (s->subtotals_count == s->subtotals_cap) {
        size_t cap = s->subtotals_cap ? s->subtotals_cap * 2 : 16;
        years_subtotal *grown = realloc(s->subtotals, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        s->subtotals = grown;
        s->subtotals_cap = cap;
    }
    years_subtotal *t = &s->subtotals[s->subtotals_count++];
    memset(t, 0, sizeof *t);
    strncpy(t->parent, parent, BUDGET_UNIT_BYTES_MAX);
    t->year = year;
    t->sums.has_unspent = true; /* of no row yet: sums_add sets it from the first */
    return t;
}

int years_summarize(const ledger *l, const char *unit, int32_t from, int32_t to,
                    years_parent_fn parent, void *ctx, years_summary *out)
{
    memset(out, 0, sizeof *out);
    out->from = from;
    out->to = to;
    if (to < from || to - from >= BUDGET_YEARS_SPAN_MAX)
        return -1;
    bool seen[BUDGET_YEARS_SPAN_MAX] = {false};
    size_t i = 0;
    years_row row;
    while (years_next_row(l, &i, unit, from, to, &row)) {
        size_t y = (size_t)(row.year - from);
        sums_add(&out->totals[y], &row.sums, !seen[y]);
        seen[y] = true;
        const char *p = parent(l, row.unit, ctx);
        if (p == NULL)
            continue;
        years_subtotal *t = subtotal_of(out, p, row.year);
        if (t == NULL)
            return -1;
        sums_add(&t->sums, &row.sums, false);
    }
    return 0;
}

void years_summary_free(years_summary *s)
{
    free(s->subtotals);
    s->subtotals = NULL;
    s->subtotals_count = s->subtotals_cap = 0;
}
