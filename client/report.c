/*
 * budgetctl report: balances as one self-contained HTML page for a committee (report.h).
 *
 * Everything the page shows is copied out of the daemon's answers into plain arrays first;
 * the page is written in one pass at the end. Every text from the ledger goes through
 * html_text, so a title, purpose or reference holding <, & or quotes is shown as it is and
 * never read as markup. The page has no script and names nothing outside itself.
 */
#include "client/report.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget/client_msgpack.h"
#include "budget/limits.h"
#include "proto/fields.h"

/* Text fields are copied whole: ids and units are short, other texts at most 256 bytes. */
#define ID_SIZE (BUDGET_ID_BYTES_MAX + 1)
#define UNIT_SIZE (BUDGET_UNIT_BYTES_MAX + 1)
#define TEXT_SIZE (BUDGET_TEXT_BYTES_MAX + 1)
/* Units drawn in one bar chart; the tables list every unit. */
#define CHART_UNITS_MAX 40
/* Fiscal years drawn in the line over the years. */
#define CHART_YEARS_MAX 60
/* Oddities kept of one item of a decided-by view (the daemon names four kinds), and the bytes
 * of a name. */
#define ODDITIES_MAX 4
#define ODDITY_BYTES 40

/* What the rules forbid that an item of a decided-by view shows (balances' "oddities"). */
typedef struct {
    unsigned count;
    char names[ODDITIES_MAX][ODDITY_BYTES];
} oddity_set;

typedef struct {
    char id[ID_SIZE], unit[UNIT_SIZE];
    int year;
    char title[TEXT_SIZE], reference[TEXT_SIZE];
    int64_t granted, allocated, pending, unallocated, called_off;
    oddity_set oddities;
} frame_row;

typedef struct {
    char id[ID_SIZE], frame[ID_SIZE], unit[UNIT_SIZE];
    int year;
    char purpose[TEXT_SIZE], status[16];
    int64_t amount, called_off, pending, available;
    oddity_set oddities;
} allocation_row;

typedef struct {
    char unit[UNIT_SIZE];
    int year;
    int64_t frames, allocated, called_off, pending, available;
    /* Outcome (utfall) set against the budget, as balances gives it: used_permille only when
     * has_used (the daemon sends nil when the budget is not above 0); last_month 0 when the
     * unit has no outcome recorded for the year. */
    int64_t budget, outcome, deviation, forecast, used_permille;
    bool has_used;
    int last_month;
    /* The plan amount of the unit and year from the units × years view, when has_plan, and
     * the budget year whose adoption planned it. A row only the view gives (a plan year with
     * nothing else) is not in_balances: its other figures are 0 and it has no outcome row. */
    int64_t plan;
    int plan_by;
    bool has_plan, in_balances;
    oddity_set oddities;
} unit_row;

/* A plan amount of the units × years view, merged into the unit rows when the page is
 * written (merge_plans). */
typedef struct {
    char unit[UNIT_SIZE];
    int year, plan_by;
    int64_t plan;
} plan_row;

/* An event the report cites: a grant, an adjustment, an avrop, a decision or a withdrawal. */
typedef enum { EV_GRANT, EV_ADJUST, EV_AVROP, EV_APPROVED, EV_REJECTED, EV_WITHDRAWN } event_kind;

typedef struct {
    event_kind kind;
    uint64_t seq;
    char day[11];           /* YYYY-MM-DD, the Swedish day of its ts */
    char decision_date[11]; /* YYYY-MM-DD, the day of its decision; "" when none */
    char id[ID_SIZE], target[ID_SIZE], frame[ID_SIZE], allocation[ID_SIZE], unit[UNIT_SIZE];
    int year;
    int64_t amount;
    char reference[TEXT_SIZE], note[TEXT_SIZE];
} event_row;

/* A growing array of `size`-byte items. */
typedef struct {
    void *items;
    size_t count, capacity, size;
} list;

struct report {
    char unit[UNIT_SIZE];
    bool one_unit;
    int year_from, year_to;
    uint64_t as_of;
    /* A decided-by view: the day (YYYY-MM-DD) the balances answered for; "" when not. */
    char decided_by[11];
    /* The fiscal years of every unit row balances gave, before the filter (report_plan_years). */
    int seen_year_min, seen_year_max;
    bool seen_any;
    list frames, allocations, units, events, plans;
    /* Built when the page is written: the decisions, grants and adjustments, sorted by the
     * id they are about (index_key), so each row finds its own in O(log n). */
    const event_row **index;
    size_t indexed;
};

/* Sums of the five figures of a unit row, and of its plan amount (has_plan when some row
 * summed has one). */
typedef struct {
    int64_t frames, allocated, called_off, pending, available, plan;
    bool has_plan;
} sums;

/* ---- lists and copies ------------------------------------------------------------------- */

static void *list_add(list *l)
{
    if (l->count == l->capacity) {
        size_t capacity = l->capacity ? l->capacity * 2 : 16;
        if (capacity > SIZE_MAX / l->size)
            return NULL;
        void *items = realloc(l->items, capacity * l->size);
        if (items == NULL)
            return NULL;
        l->items = items;
        l->capacity = capacity;
    }
    void *item = (char *)l->items + l->count * l->size;
    l->count++;
    memset(item, 0, l->size);
    return item;
}

static void copy_str(const msgpack_object *map, const char *key, char *out, size_t size)
{
    budget_map_str(map, key, out, size);
}

/* The item's "oddities" (a decided-by view), at most ODDITIES_MAX of them. */
static void copy_oddities(const msgpack_object *map, oddity_set *out)
{
    const msgpack_object *o = budget_map_get(map, "oddities");
    out->count = 0;
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < o->via.array.size && out->count < ODDITIES_MAX; i++) {
        const msgpack_object *name = &o->via.array.ptr[i];
        if (name->type != MSGPACK_OBJECT_STR || name->via.str.size == 0)
            continue;
        snprintf(out->names[out->count++], ODDITY_BYTES, "%.*s",
                 (int)(name->via.str.size < ODDITY_BYTES ? name->via.str.size : ODDITY_BYTES - 1),
                 name->via.str.ptr);
    }
}

static bool year_wanted(const report *r, int year)
{
    return year >= r->year_from && year <= r->year_to;
}

static bool unit_wanted(const report *r, const char *unit)
{
    return !r->one_unit || strcmp(r->unit, unit) == 0;
}

static int add_frame(report *r, const msgpack_object *o)
{
    char unit[UNIT_SIZE];
    int year = (int)budget_map_int(o, "year", 0);
    copy_str(o, "unit", unit, sizeof(unit));
    if (!unit_wanted(r, unit) || !year_wanted(r, year))
        return 0;
    frame_row *f = list_add(&r->frames);
    if (f == NULL)
        return -1;
    memcpy(f->unit, unit, sizeof(unit));
    f->year = year;
    copy_str(o, "id", f->id, sizeof(f->id));
    copy_str(o, "title", f->title, sizeof(f->title));
    copy_str(o, "reference", f->reference, sizeof(f->reference));
    f->granted = budget_map_int(o, "granted", 0);
    f->allocated = budget_map_int(o, "allocated", 0);
    f->pending = budget_map_int(o, "pending", 0);
    f->unallocated = budget_map_int(o, "unallocated", 0);
    f->called_off = budget_map_int(o, "called_off", 0);
    copy_oddities(o, &f->oddities);
    return 0;
}

static int add_allocation(report *r, const msgpack_object *o)
{
    char unit[UNIT_SIZE];
    int year = (int)budget_map_int(o, "year", 0);
    copy_str(o, "unit", unit, sizeof(unit));
    if (!unit_wanted(r, unit) || !year_wanted(r, year))
        return 0;
    allocation_row *a = list_add(&r->allocations);
    if (a == NULL)
        return -1;
    memcpy(a->unit, unit, sizeof(unit));
    a->year = year;
    copy_str(o, "id", a->id, sizeof(a->id));
    copy_str(o, "frame", a->frame, sizeof(a->frame));
    copy_str(o, "purpose", a->purpose, sizeof(a->purpose));
    copy_str(o, "status", a->status, sizeof(a->status));
    a->amount = budget_map_int(o, "amount", 0);
    a->called_off = budget_map_int(o, "called_off", 0);
    a->pending = budget_map_int(o, "pending", 0);
    a->available = budget_map_int(o, "available", 0);
    copy_oddities(o, &a->oddities);
    return 0;
}

static int add_unit(report *r, const msgpack_object *o)
{
    char unit[UNIT_SIZE];
    int year = (int)budget_map_int(o, "year", 0);
    copy_str(o, "unit", unit, sizeof(unit));
    if (!r->seen_any || year < r->seen_year_min)
        r->seen_year_min = year;
    if (!r->seen_any || year > r->seen_year_max)
        r->seen_year_max = year;
    r->seen_any = true;
    if (!unit_wanted(r, unit) || !year_wanted(r, year))
        return 0;
    unit_row *u = list_add(&r->units);
    if (u == NULL)
        return -1;
    memcpy(u->unit, unit, sizeof(unit));
    u->year = year;
    u->in_balances = true;
    copy_oddities(o, &u->oddities);
    u->frames = budget_map_int(o, "frames", 0);
    u->allocated = budget_map_int(o, "allocated", 0);
    u->called_off = budget_map_int(o, "called_off", 0);
    u->pending = budget_map_int(o, "pending", 0);
    u->available = budget_map_int(o, "available", 0);
    u->budget = budget_map_int(o, "budget", 0);
    u->outcome = budget_map_int(o, "outcome", 0);
    u->deviation = budget_map_int(o, "deviation", 0);
    u->forecast = budget_map_int(o, "forecast", 0);
    const msgpack_object *used = budget_map_get(o, "used_permille");
    u->has_used = used != NULL && used->type != MSGPACK_OBJECT_NIL;
    u->used_permille = u->has_used ? budget_map_int(o, "used_permille", 0) : 0;
    int64_t last_month = budget_map_int(o, "last_month", 0);
    u->last_month = last_month >= 1 && last_month <= 12 ? (int)last_month : 0;
    return 0;
}

static int add_each(report *r, const msgpack_object *result, const char *key,
                    int (*add)(report *, const msgpack_object *))
{
    const msgpack_object *items = budget_map_get(result, key);
    if (items == NULL || items->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *item = &items->via.array.ptr[i];
        if (item->type == MSGPACK_OBJECT_MAP && add(r, item) != 0)
            return -1;
    }
    return 0;
}

/* ---- public: building ------------------------------------------------------------------- */

report *report_new(const report_filter *filter)
{
    report *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    if (filter->unit != NULL) {
        snprintf(r->unit, sizeof(r->unit), "%s", filter->unit);
        r->one_unit = true;
    }
    r->year_from = filter->year_from;
    r->year_to = filter->year_to;
    r->frames.size = sizeof(frame_row);
    r->allocations.size = sizeof(allocation_row);
    r->units.size = sizeof(unit_row);
    r->events.size = sizeof(event_row);
    r->plans.size = sizeof(plan_row);
    return r;
}

void report_free(report *r)
{
    if (r == NULL)
        return;
    free(r->frames.items);
    free(r->allocations.items);
    free(r->units.items);
    free(r->events.items);
    free(r->plans.items);
    free(r);
}

int report_balances(void *state, const msgpack_object *result)
{
    report *r = state;
    const msgpack_object *day = budget_map_get(result, "decided_by");
    if (day != NULL && day->type == MSGPACK_OBJECT_STR)
        copy_str(result, "decided_by", r->decided_by, sizeof(r->decided_by));
    if (add_each(r, result, "frames", add_frame) != 0 ||
        add_each(r, result, "allocations", add_allocation) != 0 ||
        add_each(r, result, "units", add_unit) != 0)
        return -1;
    return 0;
}

void report_set_as_of(report *r, uint64_t as_of)
{
    r->as_of = as_of;
}

bool report_plan_years(const report *r, int32_t *from, int32_t *to)
{
    if (r->decided_by[0] != '\0' || r->as_of == 0 || !r->seen_any)
        return false;
    /* A plan year follows the budget year of its adoption, whose frames balances gave. */
    int last = r->seen_year_max + BUDGET_PLAN_YEARS_MAX;
    *from = r->year_from > r->seen_year_min ? r->year_from : r->seen_year_min;
    *to = r->year_to < last ? r->year_to : last;
    return *from <= *to;
}

static int add_plan(report *r, const msgpack_object *o)
{
    char unit[UNIT_SIZE];
    int year = (int)budget_map_int(o, "year", 0);
    const msgpack_object *plan = budget_map_get(o, "plan");
    copy_str(o, "unit", unit, sizeof(unit));
    if (plan == NULL || plan->type == MSGPACK_OBJECT_NIL || !unit_wanted(r, unit) ||
        !year_wanted(r, year))
        return 0;
    plan_row *p = list_add(&r->plans);
    if (p == NULL)
        return -1;
    memcpy(p->unit, unit, sizeof(unit));
    p->year = year;
    p->plan = budget_map_int(o, "plan", 0);
    p->plan_by = (int)budget_map_int(o, "plan_by", 0);
    return 0;
}

int report_years_page(const msgpack_object *page, void *state)
{
    return add_each(state, page, "rows", add_plan);
}

static const struct {
    const char *type;
    event_kind kind;
} cited_types[] = {
    {"frame.granted", EV_GRANT},        {"frame.adjusted", EV_ADJUST},
    {"avrop.requested", EV_AVROP},      {"decision.approved", EV_APPROVED},
    {"decision.rejected", EV_REJECTED}, {"request.withdrawn", EV_WITHDRAWN},
};

int report_event(void *state, const msgpack_object *event)
{
    report *r = state;
    uint64_t seq = (uint64_t)budget_map_int(event, "seq", 0);
    if (seq > r->as_of)
        return REPORT_PAST_AS_OF;
    char type[32];
    budget_map_str(event, "type", type, sizeof(type));
    size_t k = 0;
    while (k < sizeof(cited_types) / sizeof(cited_types[0]) && strcmp(cited_types[k].type, type))
        k++;
    const msgpack_object *data = budget_map_get(event, "data");
    if (k == sizeof(cited_types) / sizeof(cited_types[0]) || data == NULL ||
        data->type != MSGPACK_OBJECT_MAP)
        return 0;
    event_row *e = list_add(&r->events);
    if (e == NULL)
        return -1;
    e->kind = cited_types[k].kind;
    e->seq = seq;
    if (!budget_date_format(budget_day_of_ms(budget_map_int(event, "ts", 0)), e->day))
        snprintf(e->day, sizeof(e->day), "?");
    copy_str(data, "id", e->id, sizeof(e->id));
    copy_str(data, "target", e->target, sizeof(e->target));
    copy_str(data, "frame", e->frame, sizeof(e->frame));
    copy_str(data, "allocation", e->allocation, sizeof(e->allocation));
    copy_str(data, "unit", e->unit, sizeof(e->unit));
    e->year = (int)budget_map_int(data, "year", 0);
    if ((e->unit[0] != '\0' && !unit_wanted(r, e->unit)) ||
        (e->year != 0 && !year_wanted(r, e->year))) {
        r->events.count--; /* not this report's: the slot is taken back */
        return 0;
    }
    e->amount = budget_map_int(data, e->kind == EV_ADJUST ? "delta" : "amount", 0);
    copy_str(data, "decision_date", e->decision_date, sizeof(e->decision_date));
    copy_str(data, "reference", e->reference, sizeof(e->reference));
    copy_str(data, e->kind == EV_ADJUST ? "reason" : "note", e->note, sizeof(e->note));
    return 0;
}

/* ---- Swedish numbers -------------------------------------------------------------------- */

#define NARROW_NBSP "\xe2\x80\xaf" /* U+202F, between groups of three digits */
#define NBSP "\xc2\xa0"            /* U+00A0, before "kr" */
#define MINUS "\xe2\x88\x92"       /* U+2212 */

/* Kronor with groups of three digits: "1 500 000" (narrow no-break spaces). */
static int kronor_sv(uint64_t kronor, char *out, size_t out_size)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)kronor);
    char buf[64];
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) {
            memcpy(buf + at, NARROW_NBSP, 3);
            at += 3;
        }
        buf[at++] = digits[i];
    }
    buf[at] = '\0';
    return snprintf(out, out_size, "%s", buf);
}

int report_amount_sv(int64_t ore, char *out, size_t out_size)
{
    uint64_t magnitude = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    char kronor[64];
    kronor_sv(magnitude / 100, kronor, sizeof(kronor));
    unsigned cents = (unsigned)(magnitude % 100);
    if (cents == 0)
        return snprintf(out, out_size, "%s%s" NBSP "kr", ore < 0 ? MINUS : "", kronor);
    return snprintf(out, out_size, "%s%s,%02u" NBSP "kr", ore < 0 ? MINUS : "", kronor, cents);
}

/* ---- HTML ------------------------------------------------------------------------------- */

/* Text as HTML content or a quoted attribute value: markup characters escaped, control
 * characters (never stored by budgetd) shown as spaces. */
static void html_text(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        switch (ch) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(ch < 0x20 || ch == 0x7f ? ' ' : ch, f);
        }
    }
}

static void html_amount(FILE *f, int64_t ore)
{
    char text[64];
    report_amount_sv(ore, text, sizeof(text));
    fputs(text, f);
}

/* A right-aligned figure cell. */
static void td_amount(FILE *f, int64_t ore)
{
    fputs("<td class=\"n\">", f);
    html_amount(f, ore);
    fputs("</td>", f);
}

static const char *status_sv(const char *status)
{
    static const char *const names[][2] = {{"pending", "väntar på beslut"},
                                           {"approved", "beviljad"},
                                           {"rejected", "avslagen"},
                                           {"withdrawn", "återtagen"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(status, names[i][0]) == 0)
            return names[i][1];
    return status;
}

static const char style[] =
    "@page { size: A4; margin: 16mm 14mm 18mm 14mm; }\n"
    "* { box-sizing: border-box; }\n"
    "body { font-family: 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif; font-size: 9.5pt;"
    " color: #111; margin: 0 auto; max-width: 186mm; line-height: 1.35; }\n"
    "@media screen { body { padding: 8mm 6mm; } }\n"
    "h1 { font-size: 17pt; margin: 0 0 1mm 0; }\n"
    "h2 { font-size: 13pt; margin: 6mm 0 2mm 0; border-bottom: 2px solid #24466e; }\n"
    "h3 { font-size: 10.5pt; margin: 4mm 0 1mm 0; }\n"
    "p.meta { color: #444; margin: 0 0 3mm 0; }\n"
    "table { border-collapse: collapse; width: 100%; margin: 1mm 0 3mm 0; }\n"
    "th, td { padding: 1mm 1.5mm; border-bottom: 0.5pt solid #bbb; text-align: left;"
    " vertical-align: top; }\n"
    "th { background: #e8eef5; font-weight: bold; }\n"
    ".n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }\n"
    "tr.subtotal td { font-weight: bold; border-top: 1pt solid #333; background: #f4f4f4; }\n"
    "tr.total td { font-weight: bold; border-top: 2pt solid #000; border-bottom: 2pt solid #000;"
    " }\n"
    ".ref { color: #24466e; min-width: 36mm; }\n"
    "table.frames, table.allocations, table.avrop { font-size: 8pt; }\n"
    "table.frames td, table.allocations td, table.avrop td, table.frames th,"
    " table.allocations th, table.avrop th { padding: 0.8mm 1mm; }\n"
    "td.id { white-space: nowrap; }\n"
    "table.summary { font-size: 8.5pt; }\n"
    "table.summary th, table.summary td { padding: 1mm 1mm; }\n"
    "table.summary td:first-child { white-space: nowrap; }\n"
    "table.outcome { font-size: 8.5pt; }\n"
    "table.outcome th, table.outcome td { padding: 1mm 1mm; }\n"
    "table.outcome th { white-space: normal; }\n"
    "table.outcome td:first-child { white-space: nowrap; }\n"
    ".small { font-size: 8pt; color: #555; }\n"
    "figure { margin: 2mm 0 4mm 0; break-inside: avoid; }\n"
    "figcaption { font-weight: bold; margin-bottom: 1mm; }\n"
    "svg { width: 100%; height: auto; }\n"
    "svg text { font-family: inherit; font-size: 10px; fill: #222; }\n"
    ".legend span { display: inline-block; margin-right: 4mm; }\n"
    ".legend i { display: inline-block; width: 3mm; height: 3mm; margin-right: 1mm;"
    " vertical-align: -0.3mm; }\n"
    "section.unit { break-before: page; page-break-before: always; }\n"
    ".oddity { display: inline-block; color: #a00000; font-weight: bold; font-size: 8pt;"
    " border: 1pt solid #a00000; padding: 0 1mm; margin: 0.5mm 0 0 1mm; white-space: nowrap; }\n"
    "div.decided { border: 2pt solid #a00000; background: #fff4f2; padding: 2mm 3mm;"
    " margin: 2mm 0 3mm 0; }\n"
    "div.decided p { margin: 0 0 1mm 0; }\n"
    "td.plan .small { white-space: nowrap; }\n"
    "table, tr { break-inside: avoid; }\n";

/* ---- a decided-by view: its oddities, and decisions dated after its day ------------------ */

static bool plan_shown(const report *r)
{
    return r->decided_by[0] == '\0';
}

/* The oddities the daemon names (protocol.md, "decided_by"), in Swedish. */
static const char *oddity_sv(const char *name)
{
    static const char *const names[][2] = {
        {"allocated_over_granted", "tilldelat mer än beviljat"},
        {"called_off_over_allocated", "avropat mer än tilldelat"},
        {"granted_later", "ramen beviljad efter dagen"},
        {"called_off_before_approved", "avropat innan tilldelningen beviljades"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i][0]) == 0)
            return names[i][1];
    return name;
}

/* Each oddity as a visible mark: "! tilldelat mer än beviljat". */
static void oddity_marks(FILE *f, const oddity_set *o)
{
    for (unsigned i = 0; i < o->count; i++) {
        fputs(" <span class=\"oddity\" data-oddity=\"", f);
        html_text(f, o->names[i]);
        fputs("\">! ", f);
        html_text(f, oddity_sv(o->names[i]));
        fputs("</span>", f);
    }
}

/* The day an event was decided: its decision's date, else (a withdrawal, or an event written
 * before decisions were data) the Swedish day it was entered, as decided_by counts it. */
static const char *decided_day(const event_row *e)
{
    return e->decision_date[0] != '\0' ? e->decision_date : e->day;
}

/* In a decided-by report, a cited event decided after the day does not count in its figures:
 * it is shown, and marked so. */
static void later_mark(FILE *f, const report *r, const event_row *e)
{
    if (r->decided_by[0] == '\0' || strcmp(decided_day(e), r->decided_by) <= 0)
        return;
    fputs("<br><span class=\"oddity later\" data-decided-later=\"\">beslutat ", f);
    html_text(f, decided_day(e));
    fputs(", efter ", f);
    html_text(f, r->decided_by);
    fputs(": räknas inte här</span>", f);
}

/* The five figures, their Swedish labels and their colours in the charts. */
enum { FIG_FRAMES, FIG_ALLOCATED, FIG_CALLED_OFF, FIG_PENDING, FIG_AVAILABLE, FIGURES };
static const char *const figure_label[FIGURES] = {"Budget (ramar)", "Tilldelat", "Avropat",
                                                  "Väntande avrop", "Kvar att avropa"};
static const char *const figure_colour[FIGURES] = {"#24466e", "#4f8f4f", "#d1812b", "#a0a0a0",
                                                   "#8a63b0"};

static int64_t figure_of(const sums *s, int k)
{
    const int64_t v[FIGURES] = {s->frames, s->allocated, s->called_off, s->pending, s->available};
    return v[k];
}

static void sums_add(sums *s, const unit_row *u)
{
    s->frames += u->frames;
    s->allocated += u->allocated;
    s->called_off += u->called_off;
    s->pending += u->pending;
    s->available += u->available;
    if (u->has_plan) {
        s->plan += u->plan;
        s->has_plan = true;
    }
}

/* The plan amount of a row ("—" when none), with the budget year that planned it (plan_by,
 * 0 for a sum). */
static void td_plan(FILE *f, const sums *s, int plan_by)
{
    fputs("<td class=\"n plan\"", f);
    if (plan_by > 0)
        fprintf(f, " data-plan-by=\"%d\"", plan_by);
    fputs(">", f);
    if (s->has_plan)
        html_amount(f, s->plan);
    else
        fputs("—", f);
    if (s->has_plan && plan_by > 0)
        fprintf(f, "<br><span class=\"small\">budget %d</span>", plan_by);
    fputs("</td>", f);
}

/* The figures of a row or a sum: the budget, its plan (unless a decided-by report), then the
 * other four. */
static void figure_cells(FILE *f, const report *r, const sums *s, int plan_by)
{
    for (int k = 0; k < FIGURES; k++) {
        td_amount(f, figure_of(s, k));
        if (k == FIG_FRAMES && plan_shown(r))
            td_plan(f, s, plan_by);
    }
}

/* The units in the order the daemon first lists them: indexes into r->units of each unit's
 * first row. Returns the count; `first` has room for r->units.count. */
static size_t distinct_units(const report *r, size_t *first)
{
    const unit_row *rows = r->units.items;
    size_t n = 0;
    for (size_t i = 0; i < r->units.count; i++) {
        size_t j = 0;
        while (j < n && strcmp(rows[first[j]].unit, rows[i].unit) != 0)
            j++;
        if (j == n)
            first[n++] = i;
    }
    return n;
}

static sums unit_sums(const report *r, const char *unit)
{
    const unit_row *rows = r->units.items;
    sums s = {0};
    for (size_t i = 0; i < r->units.count; i++)
        if (strcmp(rows[i].unit, unit) == 0)
            sums_add(&s, &rows[i]);
    return s;
}

static int compare_year(const void *a, const void *b)
{
    const unit_row *x = *(const unit_row *const *)a, *y = *(const unit_row *const *)b;
    return (x->year > y->year) - (x->year < y->year);
}

static void figure_headers(FILE *f, const report *r)
{
    for (int k = 0; k < FIGURES; k++) {
        fprintf(f, "<th class=\"n\">%s</th>", figure_label[k]);
        if (k == FIG_FRAMES && plan_shown(r))
            fputs("<th class=\"n\">Plan</th>", f);
    }
}

/* The rows of one unit, year by year: a new array (free it) of *n rows, NULL when out of
 * memory. */
static const unit_row **rows_of_unit(const report *r, const char *unit, size_t *n)
{
    const unit_row *rows = r->units.items;
    const unit_row **mine = malloc((r->units.count + 1) * sizeof(*mine));
    if (mine == NULL)
        return NULL;
    *n = 0;
    for (size_t i = 0; i < r->units.count; i++)
        if (strcmp(rows[i].unit, unit) == 0)
            mine[(*n)++] = &rows[i];
    qsort(mine, *n, sizeof(*mine), compare_year);
    return mine;
}

/* The rows of one unit, year by year, then its subtotal. Returns -1 when out of memory. */
static int summary_unit(FILE *f, const report *r, const char *unit)
{
    size_t n;
    const unit_row **mine = rows_of_unit(r, unit, &n);
    if (mine == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        sums s = {0};
        sums_add(&s, mine[i]);
        fputs("<tr class=\"year\" data-unit=\"", f);
        html_text(f, unit);
        fprintf(f, "\" data-year=\"%d\"><td>", mine[i]->year);
        html_text(f, unit);
        oddity_marks(f, &mine[i]->oddities);
        fprintf(f, "</td><td>%d</td>", mine[i]->year);
        figure_cells(f, r, &s, mine[i]->plan_by);
        fputs("</tr>\n", f);
    }
    free(mine);
    sums s = unit_sums(r, unit);
    fputs("<tr class=\"subtotal\" data-unit=\"", f);
    html_text(f, unit);
    fputs("\" data-subtotal=\"\"><td colspan=\"2\">Summa ", f);
    html_text(f, unit);
    fputs("</td>", f);
    figure_cells(f, r, &s, 0);
    fputs("</tr>\n", f);
    return 0;
}

static int write_summary(FILE *f, const report *r, const size_t *first, size_t units)
{
    const unit_row *rows = r->units.items;
    sums total = {0};
    fputs("<h2>Sammanställning per enhet och år</h2>\n<table class=\"summary\">\n"
          "<thead><tr><th>Enhet</th><th>År</th>",
          f);
    figure_headers(f, r);
    fputs("</tr></thead>\n<tbody>\n", f);
    for (size_t i = 0; i < units; i++)
        if (summary_unit(f, r, rows[first[i]].unit) != 0)
            return -1;
    for (size_t i = 0; i < r->units.count; i++)
        sums_add(&total, &rows[i]);
    fputs("<tr class=\"total\" data-total=\"\"><td colspan=\"2\">Totalt</td>", f);
    figure_cells(f, r, &total, 0);
    fputs("</tr>\n</tbody></table>\n", f);
    fputs("<p class=\"small\">Budget (ramar): ramar beviljade enheten, med justeringar. ", f);
    if (plan_shown(r))
        fputs("Plan: planbeloppet för enheten och året, satt när budgeten för ett tidigare år "
              "antogs (det budgetåret står under beloppet, en senare antagen budget ersätter "
              "en tidigare plan); visas bredvid budgeten och fördelas aldrig ur. ",
              f);
    fputs("Tilldelat: beviljade tilldelningar till enheten. Avropat: beviljade avrop. Väntande "
          "avrop: avrop som väntar på beslut. Kvar att avropa: tilldelat − avropat − "
          "väntande.</p>\n",
          f);
    return 0;
}

/* ---- outcome (utfall) set against the budget --------------------------------------------- */

/* True when balances gave the unit a row: a unit with plan years only has no outcome. */
static bool unit_in_balances(const report *r, const char *unit)
{
    const unit_row *rows = r->units.items;
    for (size_t i = 0; i < r->units.count; i++)
        if (rows[i].in_balances && strcmp(rows[i].unit, unit) == 0)
            return true;
    return false;
}

/* Budget, outcome, deviation and forecast summed over unit rows; the share used of a sum is
 * worked out from its budget and outcome (permille_of). */
typedef struct {
    int64_t budget, outcome, deviation, forecast;
} outcome_sums;

static void outcome_add(outcome_sums *s, const unit_row *u)
{
    s->budget += u->budget;
    s->outcome += u->outcome;
    s->deviation += u->deviation;
    s->forecast += u->forecast;
}

/* The share of `budget` that `outcome` uses, in per mille, by the rule the daemon gives
 * used_permille (protocol.md, balances): outcome * 1000 / budget rounded toward zero; false
 * when the budget is not above 0. For subtotals and totals, which the daemon does not give. */
static bool permille_of(int64_t outcome, int64_t budget, int64_t *permille)
{
    if (budget <= 0)
        return false;
    *permille = (int64_t)((__int128)outcome * 1000 / budget);
    return true;
}

/* A share in per mille as "10,5 %" (a no-break space before %), "—" when there is none. */
static void td_permille(FILE *f, bool has, int64_t permille)
{
    fputs("<td class=\"n used\">", f);
    if (has) {
        uint64_t m = permille < 0 ? (uint64_t)0 - (uint64_t)permille : (uint64_t)permille;
        char whole[64];
        kronor_sv(m / 10, whole, sizeof(whole));
        fprintf(f, "%s%s,%u" NBSP "%%", permille < 0 ? MINUS : "", whole, (unsigned)(m % 10));
    } else {
        fputs("—", f);
    }
    fputs("</td>", f);
}

/* Budget, Utfall, Förbrukat, Avvikelse, Helårsprognos of a row or a sum. */
static void outcome_cells(FILE *f, const outcome_sums *s, bool has_used, int64_t used_permille)
{
    td_amount(f, s->budget);
    td_amount(f, s->outcome);
    td_permille(f, has_used, used_permille);
    td_amount(f, s->deviation);
    td_amount(f, s->forecast);
}

static void outcome_headers(FILE *f)
{
    fputs("<thead><tr><th>Enhet</th><th>År</th><th class=\"n\">Budget (netto)</th>"
          "<th class=\"n\">Utfall</th><th class=\"n\">Förbrukat</th>"
          "<th class=\"n\">Avvikelse</th><th class=\"n\">Helårsprognos</th>"
          "<th class=\"n\">Utfall t.o.m.</th></tr></thead>\n",
          f);
}

/* The outcome of one unit, year by year, then its subtotal; the unit's sums are added to
 * `total`. Returns -1 when out of memory. */
static int outcome_unit(FILE *f, const report *r, const char *unit, outcome_sums *total)
{
    size_t n;
    const unit_row **mine = rows_of_unit(r, unit, &n);
    if (mine == NULL)
        return -1;
    outcome_sums sum = {0};
    for (size_t i = 0; i < n; i++) {
        const unit_row *u = mine[i];
        if (!u->in_balances)
            continue; /* a plan year only: no outcome is set against a plan */
        outcome_sums s = {0};
        outcome_add(&s, u);
        outcome_add(&sum, u);
        fputs("<tr class=\"outcome-year\" data-unit=\"", f);
        html_text(f, unit);
        fprintf(f, "\" data-year=\"%d\"><td>", u->year);
        html_text(f, unit);
        fprintf(f, "</td><td>%d</td>", u->year);
        outcome_cells(f, &s, u->has_used, u->used_permille);
        if (u->last_month > 0)
            fprintf(f, "<td class=\"n month\">%d-%02d</td></tr>\n", u->year, u->last_month);
        else
            fputs("<td class=\"n month\">—</td></tr>\n", f);
    }
    free(mine);
    int64_t permille = 0;
    bool has = permille_of(sum.outcome, sum.budget, &permille);
    fputs("<tr class=\"subtotal outcome-subtotal\" data-unit=\"", f);
    html_text(f, unit);
    fputs("\"><td colspan=\"2\">Summa ", f);
    html_text(f, unit);
    fputs("</td>", f);
    outcome_cells(f, &sum, has, permille);
    fputs("<td></td></tr>\n", f);
    if (total != NULL) {
        total->budget += sum.budget;
        total->outcome += sum.outcome;
        total->deviation += sum.deviation;
        total->forecast += sum.forecast;
    }
    return 0;
}

static const char outcome_note[] =
    "<p class=\"small\">Budget (netto): enhetens ramar minus det som tilldelats ur dem, plus det "
    "som tilldelats enheten; utfallet ställs mot den. Utfall: registrerade faktiska kostnader "
    "hittills under året. Förbrukat: utfall / budget, avrundat mot noll till hela promille (— "
    "när budgeten inte är större än 0). Avvikelse: budget − utfall. Helårsprognos: utfallet "
    "delat med numret på den senaste månaden med utfall (Utfall t.o.m.), gånger 12. Summor "
    "och totaler lägger ihop enheternas belopp; deras förbrukat räknas på samma sätt ur "
    "summorna. En enhet utan registrerat utfall för året visar 0 kr i utfall och prognos, budgeten "
    "som avvikelse och — som Utfall t.o.m.</p>\n";

static int write_outcome_summary(FILE *f, const report *r, const size_t *first, size_t units)
{
    const unit_row *rows = r->units.items;
    outcome_sums total = {0};
    fputs("<h2>Utfall mot budget per enhet och år</h2>\n<table class=\"summary outcome\">\n", f);
    outcome_headers(f);
    fputs("<tbody>\n", f);
    for (size_t i = 0; i < units; i++)
        if (unit_in_balances(r, rows[first[i]].unit) &&
            outcome_unit(f, r, rows[first[i]].unit, &total) != 0)
            return -1;
    int64_t permille = 0;
    bool has = permille_of(total.outcome, total.budget, &permille);
    fputs("<tr class=\"total outcome-total\" data-outcome-total=\"\"><td colspan=\"2\">Totalt"
          "</td>",
          f);
    outcome_cells(f, &total, has, permille);
    fputs("<td></td></tr>\n</tbody></table>\n", f);
    fputs(outcome_note, f);
    return 0;
}

/* ---- charts (inline SVG) ---------------------------------------------------------------- */

static void legend(FILE *f, int figures)
{
    fputs("<div class=\"legend small\">", f);
    for (int k = 0; k < figures; k++)
        fprintf(f, "<span><i style=\"background:%s\"></i>%s</span>", figure_colour[k],
                figure_label[k]);
    fputs("</div>\n", f);
}

/* The largest figure, at least 1 öre: the top of a chart's scale. */
static int64_t scale_top(int64_t largest)
{
    return largest > 0 ? largest : 1;
}

/* Horizontal grid lines at quarters of `top`, labelled with the amount. */
static void grid(FILE *f, int64_t top, int left, int right, int plot_top, int plot_bottom)
{
    for (int q = 0; q <= 4; q++) {
        double y = plot_bottom - (plot_bottom - plot_top) * q / 4.0;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ccc\"/>", left, y,
                right, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", left - 4, y + 3.5);
        html_amount(f, top / 4 * q);
        fputs("</text>", f);
    }
}

/* One group of bars per unit: its five figures over the years shown. */
static void bar_chart(FILE *f, const report *r, const size_t *first, size_t units)
{
    const unit_row *rows = r->units.items;
    size_t shown = units < CHART_UNITS_MAX ? units : CHART_UNITS_MAX;
    int64_t largest = 0;
    for (size_t i = 0; i < shown; i++) {
        sums s = unit_sums(r, rows[first[i]].unit);
        for (int k = 0; k < FIGURES; k++)
            if (figure_of(&s, k) > largest)
                largest = figure_of(&s, k);
    }
    int64_t top = scale_top(largest);
    const int left = 110, bar = 14, gap = 26, plot_top = 10, plot_bottom = 200;
    int group = FIGURES * bar + gap;
    int width = left + (int)shown * group + 10;
    if (width < 640)
        width = 640;
    fprintf(f,
            "<figure><figcaption>Per enhet</figcaption>\n<svg "
            "viewBox=\"0 0 %d 230\" role=\"img\" aria-label=\"Stapeldiagram per enhet\">",
            width);
    grid(f, top, left, width - 10, plot_top, plot_bottom);
    for (size_t i = 0; i < shown; i++) {
        sums s = unit_sums(r, rows[first[i]].unit);
        int x0 = left + 8 + (int)i * group;
        for (int k = 0; k < FIGURES; k++) {
            int64_t v = figure_of(&s, k);
            double h = v > 0 ? (double)(plot_bottom - plot_top) * (double)v / (double)top : 0;
            fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>",
                    x0 + k * bar, plot_bottom - h, bar - 2, h, figure_colour[k]);
            html_text(f, rows[first[i]].unit);
            fprintf(f, ", %s: ", figure_label[k]);
            html_amount(f, v);
            fputs("</title></rect>", f);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", x0 + FIGURES * bar / 2,
                plot_bottom + 16);
        html_text(f, rows[first[i]].unit);
        fputs("</text>", f);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>", left, plot_bottom,
            width - 10, plot_bottom);
    fputs("</svg>\n", f);
    legend(f, FIGURES);
    if (shown < units)
        fprintf(f,
                "<p class=\"small\">Diagrammet visar de första %d enheterna; tabellerna visar "
                "alla.</p>\n",
                CHART_UNITS_MAX);
    fputs("</figure>\n", f);
}

/* The series of the line over the years: budget, plan (a dashed line over the years that
 * have a plan amount, not in a decided-by report), allocated and called off. */
typedef struct {
    const char *name, *label, *colour, *dash;
    int figure; /* the figure it draws, or -1 for the plan */
} line_series;

static const line_series lines[] = {
    {"budget", "Budget (ramar)", "#24466e", NULL, FIG_FRAMES},
    {"plan", "Plan", "#5b9bd5", "6 4", -1},
    {"allocated", "Tilldelat", "#4f8f4f", NULL, FIG_ALLOCATED},
    {"called_off", "Avropat", "#d1812b", NULL, FIG_CALLED_OFF},
};
#define LINES (int)(sizeof(lines) / sizeof(lines[0]))

/* The value of series `k` in a year's sums; false when it has none (a year without plan). */
static bool line_value(const sums *s, int k, int64_t *v)
{
    if (lines[k].figure >= 0) {
        *v = figure_of(s, lines[k].figure);
        return true;
    }
    *v = s->plan;
    return s->has_plan;
}

/* The years drawn: those of the rows, or the range asked for (--years) whole. */
static int line_years(const report *r, int *low)
{
    const unit_row *rows = r->units.items;
    int high = 0;
    *low = 0;
    for (size_t i = 0; i < r->units.count; i++) {
        if (i == 0 || rows[i].year < *low)
            *low = rows[i].year;
        if (i == 0 || rows[i].year > high)
            high = rows[i].year;
    }
    /* A range asked for (--years) is drawn whole, its years without figures at 0. */
    if (r->year_from > BUDGET_YEAR_MIN && r->year_to < BUDGET_YEAR_MAX) {
        *low = r->year_from;
        high = r->year_to;
    }
    if (high - *low + 1 > CHART_YEARS_MAX)
        *low = high - CHART_YEARS_MAX + 1;
    return high - *low + 1;
}

/* Budget, plan, allocated and called off, summed over the units shown, year by year. */
static void line_chart(FILE *f, const report *r)
{
    const unit_row *rows = r->units.items;
    int low;
    int years = line_years(r, &low);
    sums per_year[CHART_YEARS_MAX] = {{0}};
    int64_t largest = 0, v;
    for (size_t i = 0; i < r->units.count; i++)
        if (rows[i].year >= low && rows[i].year < low + years)
            sums_add(&per_year[rows[i].year - low], &rows[i]);
    for (int y = 0; y < years; y++)
        for (int k = 0; k < LINES; k++)
            if (line_value(&per_year[y], k, &v) && v > largest)
                largest = v;
    int64_t top = scale_top(largest);
    const int left = 110, right = 630, plot_top = 10, plot_bottom = 200;
    fputs("<figure><figcaption>Över åren</figcaption>\n<svg "
          "viewBox=\"0 0 640 230\" role=\"img\" aria-label=\"Linjediagram över åren\">",
          f);
    grid(f, top, left, right, plot_top, plot_bottom);
    double step = years > 1 ? (double)(right - left - 40) / (years - 1) : 0;
    double x0 = left + 20 + (years == 1 ? (right - left - 40) / 2.0 : 0);
    for (int y = 0; y < years; y++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>", x0 + step * y,
                plot_bottom + 16, low + y);
    bool drawn[LINES] = {false};
    for (int k = 0; k < LINES; k++) {
        if (lines[k].figure < 0 && !plan_shown(r))
            continue;
        for (int y = 0; y < years && !drawn[k]; y++)
            drawn[k] = line_value(&per_year[y], k, &v);
        if (!drawn[k])
            continue;
        fprintf(f, "<polyline data-series=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"",
                lines[k].name, lines[k].colour);
        if (lines[k].dash != NULL)
            fprintf(f, " stroke-dasharray=\"%s\"", lines[k].dash);
        fputs(" points=\"", f);
        bool any = false;
        for (int y = 0; y < years; y++) {
            if (!line_value(&per_year[y], k, &v))
                continue;
            double h = (double)(plot_bottom - plot_top) * (double)v / (double)top;
            fprintf(f, "%s%.1f,%.1f", any ? " " : "", x0 + step * y, plot_bottom - h);
            any = true;
        }
        fputs("\"/>", f);
        for (int y = 0; y < years; y++) {
            if (!line_value(&per_year[y], k, &v))
                continue;
            double h = (double)(plot_bottom - plot_top) * (double)v / (double)top;
            fprintf(f,
                    "<circle data-series=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" "
                    "fill=\"%s\"><title>%d, %s: ",
                    lines[k].name, x0 + step * y, plot_bottom - h, 6.0 - 1.2 * k, lines[k].colour,
                    low + y, lines[k].label);
            html_amount(f, v);
            fputs("</title></circle>", f);
        }
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>", left, plot_bottom,
            right, plot_bottom);
    fputs("</svg>\n<div class=\"legend small\">", f);
    for (int k = 0; k < LINES; k++)
        if (drawn[k])
            fprintf(f, "<span><i style=\"background:%s\"></i>%s%s</span>", lines[k].colour,
                    lines[k].label, lines[k].dash != NULL ? " (streckad)" : "");
    fputs("</div>\n</figure>\n", f);
}

/* ---- a unit's section: its frames, allocations and avrop with their decisions ----------- */

/* What an event is about, for the index: a decision or withdrawal its target, a grant its
 * frame's id, an adjustment the frame; NULL for an avrop (not indexed). */
typedef enum { KEY_DECISION, KEY_GRANT, KEY_ADJUST, KEY_NONE } key_group;

static key_group index_group(const event_row *e)
{
    switch (e->kind) {
    case EV_APPROVED:
    case EV_REJECTED:
    case EV_WITHDRAWN:
        return KEY_DECISION;
    case EV_GRANT:
        return KEY_GRANT;
    case EV_ADJUST:
        return KEY_ADJUST;
    default:
        return KEY_NONE;
    }
}

static const char *index_key(const event_row *e)
{
    key_group g = index_group(e);
    return g == KEY_DECISION ? e->target : g == KEY_GRANT ? e->id : e->frame;
}

/* Orders by group, key, then seq: the first of a key is its earliest event. */
static int compare_indexed(const void *a, const void *b)
{
    const event_row *x = *(const event_row *const *)a, *y = *(const event_row *const *)b;
    key_group gx = index_group(x), gy = index_group(y);
    if (gx != gy)
        return gx < gy ? -1 : 1;
    int c = strcmp(index_key(x), index_key(y));
    if (c != 0)
        return c;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static int build_index(report *r)
{
    const event_row *e = r->events.items;
    r->index = malloc((r->events.count + 1) * sizeof(*r->index));
    if (r->index == NULL)
        return -1;
    r->indexed = 0;
    for (size_t i = 0; i < r->events.count; i++)
        if (index_group(&e[i]) != KEY_NONE)
            r->index[r->indexed++] = &e[i];
    qsort(r->index, r->indexed, sizeof(*r->index), compare_indexed);
    return 0;
}

/* The position of the first indexed event of `group` about `key` (r->indexed when none). */
static size_t index_find(const report *r, key_group group, const char *key)
{
    size_t low = 0, high = r->indexed;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        const event_row *e = r->index[mid];
        key_group g = index_group(e);
        if (g < group || (g == group && strcmp(index_key(e), key) < 0))
            low = mid + 1;
        else
            high = mid;
    }
    if (low < r->indexed && index_group(r->index[low]) == group &&
        strcmp(index_key(r->index[low]), key) == 0)
        return low;
    return r->indexed;
}

/* The decision on `target` (approval, rejection or withdrawal), or NULL. */
static const event_row *decision_on(const report *r, const char *target)
{
    size_t at = index_find(r, KEY_DECISION, target);
    return at < r->indexed ? r->index[at] : NULL;
}

/* "Beviljad KS 2021-09-28 § 270 (2021-09-28, händelse 5)" in a cell. */
static void decision_cell(FILE *f, const report *r, const event_row *d)
{
    static const char *const verb[] = {
        [EV_APPROVED] = "Beviljad", [EV_REJECTED] = "Avslagen", [EV_WITHDRAWN] = "Återtagen"};
    fputs("<td class=\"ref\">", f);
    if (d != NULL) {
        fputs(verb[d->kind], f);
        if (d->reference[0] != '\0') {
            fputs(": ", f);
            html_text(f, d->reference);
        }
        fprintf(f, "<br><span class=\"small\">%s, händelse %llu</span>", d->day,
                (unsigned long long)d->seq);
        later_mark(f, r, d);
    } else {
        fputs("—", f);
    }
    fputs("</td>", f);
}

static void frames_table(FILE *f, const report *r, const char *unit)
{
    const frame_row *rows = r->frames.items;
    bool any = false;
    for (size_t i = 0; i < r->frames.count && !any; i++)
        any = strcmp(rows[i].unit, unit) == 0;
    if (!any)
        return;
    fputs("<h3>Ramar</h3>\n<table class=\"frames\"><thead><tr><th>Ram</th><th>År</th>"
          "<th>Rubrik</th><th class=\"n\">Beviljat</th><th class=\"n\">Tilldelat</th>"
          "<th class=\"n\">Väntande</th><th class=\"n\">Ej fördelat</th>"
          "<th class=\"n\">Avropat</th><th>Beslut</th></tr></thead><tbody>\n",
          f);
    for (size_t i = 0; i < r->frames.count; i++) {
        const frame_row *fr = &rows[i];
        if (strcmp(fr->unit, unit) != 0)
            continue;
        fputs("<tr data-frame=\"", f);
        html_text(f, fr->id);
        fputs("\"><td class=\"id\">", f);
        html_text(f, fr->id);
        oddity_marks(f, &fr->oddities);
        fprintf(f, "</td><td>%d</td><td>", fr->year);
        html_text(f, fr->title);
        fputs("</td>", f);
        td_amount(f, fr->granted);
        td_amount(f, fr->allocated);
        td_amount(f, fr->pending);
        td_amount(f, fr->unallocated);
        td_amount(f, fr->called_off);
        fputs("<td class=\"ref\">", f);
        html_text(f, fr->reference[0] != '\0' ? fr->reference : "—");
        size_t at = index_find(r, KEY_GRANT, fr->id);
        const event_row *grant = at < r->indexed ? r->index[at] : NULL;
        if (grant != NULL) {
            fprintf(f, "<br><span class=\"small\">%s, händelse %llu</span>", grant->day,
                    (unsigned long long)grant->seq);
            later_mark(f, r, grant);
        }
        fputs("</td></tr>\n", f);
        for (size_t j = index_find(r, KEY_ADJUST, fr->id);
             j < r->indexed && index_group(r->index[j]) == KEY_ADJUST &&
             strcmp(r->index[j]->frame, fr->id) == 0;
             j++) {
            const event_row *adjust = r->index[j];
            fputs("<tr class=\"small\"><td></td><td></td><td>Justering: ", f);
            html_text(f, adjust->note);
            fputs("</td>", f);
            td_amount(f, adjust->amount);
            fputs("<td colspan=\"4\"></td><td class=\"ref\">", f);
            html_text(f, adjust->reference[0] != '\0' ? adjust->reference : "—");
            fprintf(f, "<br><span class=\"small\">%s, händelse %llu</span>", adjust->day,
                    (unsigned long long)adjust->seq);
            later_mark(f, r, adjust);
            fputs("</td></tr>\n", f);
        }
    }
    fputs("</tbody></table>\n", f);
}

static void allocations_table(FILE *f, const report *r, const char *unit)
{
    const allocation_row *rows = r->allocations.items;
    bool any = false;
    for (size_t i = 0; i < r->allocations.count && !any; i++)
        any = strcmp(rows[i].unit, unit) == 0;
    if (!any)
        return;
    fputs("<h3>Tilldelningar till enheten</h3>\n<table class=\"allocations\"><thead><tr>"
          "<th>Tilldelning</th><th>Ändamål</th><th>Status</th>"
          "<th class=\"n\">Belopp</th><th class=\"n\">Avropat</th><th class=\"n\">Väntande</th>"
          "<th class=\"n\">Kvar</th><th>Beslut</th></tr></thead><tbody>\n",
          f);
    for (size_t i = 0; i < r->allocations.count; i++) {
        const allocation_row *a = &rows[i];
        if (strcmp(a->unit, unit) != 0)
            continue;
        fputs("<tr data-allocation=\"", f);
        html_text(f, a->id);
        fputs("\"><td class=\"id\">", f);
        html_text(f, a->id);
        oddity_marks(f, &a->oddities);
        fputs("<br><span class=\"small\">ur ", f);
        html_text(f, a->frame);
        fprintf(f, ", %d</span></td><td>", a->year);
        html_text(f, a->purpose);
        fputs("</td><td>", f);
        html_text(f, status_sv(a->status));
        fputs("</td>", f);
        td_amount(f, a->amount);
        td_amount(f, a->called_off);
        td_amount(f, a->pending);
        td_amount(f, a->available);
        decision_cell(f, r, decision_on(r, a->id));
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void avrop_table(FILE *f, const report *r, const char *unit)
{
    const event_row *ev = r->events.items;
    bool any = false;
    for (size_t i = 0; i < r->events.count && !any; i++)
        any = ev[i].kind == EV_AVROP && strcmp(ev[i].unit, unit) == 0 && year_wanted(r, ev[i].year);
    if (!any)
        return;
    fputs("<h3>Avrop</h3>\n<table class=\"avrop\"><thead><tr><th>Avrop</th>"
          "<th>Dag</th><th>Anteckning</th><th class=\"n\">Belopp</th><th>Beslut</th></tr>"
          "</thead><tbody>\n",
          f);
    for (size_t i = 0; i < r->events.count; i++) {
        const event_row *v = &ev[i];
        if (v->kind != EV_AVROP || strcmp(v->unit, unit) != 0 || !year_wanted(r, v->year))
            continue;
        fputs("<tr data-avrop=\"", f);
        html_text(f, v->id);
        fputs("\"><td class=\"id\">", f);
        html_text(f, v->id);
        fputs("<br><span class=\"small\">ur ", f);
        html_text(f, v->allocation);
        fprintf(f, "</td><td class=\"id\">%s</td><td>", v->day);
        html_text(f, v->note);
        fputs("</td>", f);
        td_amount(f, v->amount);
        const event_row *d = decision_on(r, v->id);
        if (d != NULL)
            decision_cell(f, r, d);
        else
            fputs("<td>väntar på beslut</td>", f);
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static int unit_section(FILE *f, const report *r, const char *unit)
{
    fputs("<section class=\"unit\" data-unit=\"", f);
    html_text(f, unit);
    fputs("\">\n<h2>Enhet ", f);
    html_text(f, unit);
    fputs("</h2>\n<table class=\"summary\">\n<thead><tr><th>Enhet</th><th>År</th>", f);
    figure_headers(f, r);
    fputs("</tr></thead>\n<tbody>\n", f);
    int rc = summary_unit(f, r, unit);
    fputs("</tbody></table>\n", f);
    if (rc == 0 && unit_in_balances(r, unit)) {
        fputs("<h3>Utfall mot budget</h3>\n<table class=\"summary outcome\">\n", f);
        outcome_headers(f);
        fputs("<tbody>\n", f);
        rc = outcome_unit(f, r, unit, NULL);
        fputs("</tbody></table>\n", f);
    }
    frames_table(f, r, unit);
    allocations_table(f, r, unit);
    avrop_table(f, r, unit);
    fputs("</section>\n", f);
    return rc;
}

/* ---- plan amounts into the unit rows ------------------------------------------------------ */

static int compare_unit_year(const char *unit_a, int year_a, const char *unit_b, int year_b)
{
    int c = strcmp(unit_a, unit_b);
    return c != 0 ? c : (year_a > year_b) - (year_a < year_b);
}

static int compare_row_index(const void *a, const void *b)
{
    const unit_row *x = *(const unit_row *const *)a, *y = *(const unit_row *const *)b;
    return compare_unit_year(x->unit, x->year, y->unit, y->year);
}

static int compare_plan_to_row(const void *key, const void *item)
{
    const plan_row *p = key;
    const unit_row *u = *(const unit_row *const *)item;
    return compare_unit_year(p->unit, p->year, u->unit, u->year);
}

/*
 * Sets the plan amount of each unit row from the plans the units × years view gave, and adds
 * a row for each plan of a unit and year balances has no row of (a plan year). O((units +
 * plans) log units). -1 when out of memory.
 */
static int merge_plans(report *r)
{
    const plan_row *plans = r->plans.items;
    size_t rows = r->units.count;
    unit_row **sorted = malloc((rows + 1) * sizeof(*sorted));
    bool *matched = calloc(r->plans.count + 1, sizeof(*matched));
    if (sorted == NULL || matched == NULL) {
        free(sorted);
        free(matched);
        return -1;
    }
    for (size_t i = 0; i < rows; i++)
        sorted[i] = &((unit_row *)r->units.items)[i];
    qsort(sorted, rows, sizeof(*sorted), compare_row_index);
    for (size_t i = 0; i < r->plans.count; i++) {
        unit_row **at = bsearch(&plans[i], sorted, rows, sizeof(*sorted), compare_plan_to_row);
        if (at == NULL)
            continue;
        (*at)->plan = plans[i].plan;
        (*at)->plan_by = plans[i].plan_by;
        (*at)->has_plan = true;
        matched[i] = true;
    }
    free(sorted); /* the rows may move below */
    int rc = 0;
    for (size_t i = 0; i < r->plans.count && rc == 0; i++) {
        if (matched[i])
            continue;
        unit_row *u = list_add(&r->units);
        if (u == NULL) {
            rc = -1;
            break;
        }
        memcpy(u->unit, plans[i].unit, sizeof(u->unit));
        u->year = plans[i].year;
        u->plan = plans[i].plan;
        u->plan_by = plans[i].plan_by;
        u->has_plan = true;
    }
    free(matched);
    r->plans.count = 0; /* merged once */
    return rc;
}

/* ---- public: the page ------------------------------------------------------------------- */

/* One flagged item in the list of a decided-by report's oddities. */
static void oddity_item(FILE *f, const char *what, const char *id, const char *unit, int year,
                        const oddity_set *o)
{
    fprintf(f, "<li>%s ", what);
    html_text(f, id);
    fputs(" (", f);
    html_text(f, unit);
    fprintf(f, ", %d):", year);
    oddity_marks(f, o);
    fputs("</li>\n", f);
}

/* A decided-by report says so at its top, and lists every item the daemon flags. */
static void decided_by_box(FILE *f, const report *r)
{
    const frame_row *frames = r->frames.items;
    const allocation_row *allocations = r->allocations.items;
    const unit_row *units = r->units.items;
    size_t flagged = 0;
    for (size_t i = 0; i < r->frames.count; i++)
        flagged += frames[i].oddities.count > 0;
    for (size_t i = 0; i < r->allocations.count; i++)
        flagged += allocations[i].oddities.count > 0;
    for (size_t i = 0; i < r->units.count; i++)
        flagged += units[i].oddities.count > 0;
    fputs("<div class=\"decided\">\n<p><strong>Beslutat senast ", f);
    html_text(f, r->decided_by);
    fputs(", oavsett när det fördes in.</strong> Beviljanden, justeringar och beslut räknas efter "
          "sitt beslutsdatum; ett beslut daterat senare räknas inte (det som det beslutar "
          "visas som väntande). En sådan vy kan visa det som reglerna förbjuder, till exempel "
          "mer tilldelat än beviljat när en höjning beslutad senare fördes in först: det visas "
          "som det är och markeras med !. Planbelopp visas inte i en vy per beslutsdag.</p>\n",
          f);
    fprintf(f, "<p class=\"oddity-count\" data-oddities=\"%zu\">", flagged);
    if (flagged == 0) {
        fputs("Ingen post i rapporten visar något som reglerna förbjuder.</p>\n</div>\n", f);
        return;
    }
    fprintf(f, "%zu poster i rapporten visar något som reglerna förbjuder:</p>\n<ul>\n", flagged);
    for (size_t i = 0; i < r->frames.count; i++)
        if (frames[i].oddities.count > 0)
            oddity_item(f, "Ram", frames[i].id, frames[i].unit, frames[i].year,
                        &frames[i].oddities);
    for (size_t i = 0; i < r->allocations.count; i++)
        if (allocations[i].oddities.count > 0)
            oddity_item(f, "Tilldelning", allocations[i].id, allocations[i].unit,
                        allocations[i].year, &allocations[i].oddities);
    for (size_t i = 0; i < r->units.count; i++)
        if (units[i].oddities.count > 0)
            oddity_item(f, "Enhet", units[i].unit, units[i].unit, units[i].year,
                        &units[i].oddities);
    fputs("</ul>\n</div>\n", f);
}

static void header(FILE *f, const report *r)
{
    char today[11] = "?";
    if (!budget_date_format(budget_day_of_ms((int64_t)time(NULL) * 1000), today))
        snprintf(today, sizeof(today), "?");
    fputs("<!DOCTYPE html>\n<html lang=\"sv\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<title>Budgetrapport</title>\n<style>\n",
          f);
    fputs(style, f);
    fputs("</style>\n</head>\n<body>\n<h1>Budgetrapport</h1>\n<p class=\"meta\">", f);
    if (r->one_unit) {
        fputs("Enhet ", f);
        html_text(f, r->unit);
        fputs(", ", f);
    } else {
        fputs("Alla enheter, ", f);
    }
    if (r->year_from == r->year_to)
        fprintf(f, "år %d. ", r->year_from);
    else if (r->year_from <= BUDGET_YEAR_MIN && r->year_to >= BUDGET_YEAR_MAX)
        fputs("alla år. ", f);
    else
        fprintf(f, "år %d–%d. ", r->year_from, r->year_to);
    fprintf(f, "Huvudboken som den stod efter händelse <span data-as-of=\"%llu\">%llu</span>",
            (unsigned long long)r->as_of, (unsigned long long)r->as_of);
    if (!plan_shown(r)) {
        fputs(", beslutat senast <span data-decided-by=\"", f);
        html_text(f, r->decided_by);
        fputs("\">", f);
        html_text(f, r->decided_by);
        fputs("</span>, oavsett när det fördes in", f);
    }
    fprintf(f, ". Utskriven %s.</p>\n", today);
    if (!plan_shown(r))
        decided_by_box(f, r);
}

int report_write_html(report *r, FILE *f)
{
    if (merge_plans(r) != 0)
        return -1;
    size_t *first = malloc((r->units.count + 1) * sizeof(*first));
    if (first == NULL || build_index(r) != 0) {
        free(first);
        return -1;
    }
    size_t units = distinct_units(r, first);
    const unit_row *rows = r->units.items;
    header(f, r);
    int rc = 0;
    if (units == 0) {
        fputs("<p>Inga belopp för detta urval.</p>\n", f);
    } else {
        rc = write_summary(f, r, first, units);
        if (rc == 0)
            rc = write_outcome_summary(f, r, first, units);
        if (rc == 0) {
            bar_chart(f, r, first, units);
            line_chart(f, r);
            for (size_t i = 0; i < units && rc == 0; i++)
                rc = unit_section(f, r, rows[first[i]].unit);
        }
    }
    fputs("</body>\n</html>\n", f);
    free(first);
    free(r->index);
    r->index = NULL;
    if (rc != 0)
        return rc;
    return ferror(f) ? -1 : 0;
}
