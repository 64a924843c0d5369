/*
 * The outcome book (outcome.h): two arrays, the keys' figures and the unit years, each found
 * by an open-addressing hash table of indices (linear probing, at most 7/10 full). A unit
 * year links its figures in the order their keys were first recorded.
 */
#include "outcome.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX
#define SLOTS_MIN 16u
#define SLOTS_MAX (UINT32_C(1) << 30)

typedef struct {
    uint32_t *slots; /* index + 1 of an entry; 0 for an empty slot */
    uint32_t mask;   /* slots - 1, a power of two less one */
} index_table;

typedef struct {
    uint32_t hash;
    uint32_t year_row; /* into years */
    uint32_t next;     /* the unit year's next figure, or NONE */
    uint8_t month;
    int64_t amount;
    uint64_t seq;
    char allocation[BUDGET_ID_BYTES_MAX + 1];
} figure_rec;

typedef struct {
    uint32_t hash;
    int32_t year;
    uint32_t first, last; /* its figures, or NONE */
    uint32_t figures;
    uint32_t month_figures[OUTCOME_MONTHS];
    int64_t months[OUTCOME_MONTHS];
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
} year_rec;

struct outcome_book {
    figure_rec *figures;
    uint32_t figures_len, figures_cap;
    index_table figure_index;
    year_rec *years;
    uint32_t years_len, years_cap;
    index_table year_index;
};

/* FNV-1a over the bytes of a key. */
static uint32_t mix(uint32_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t year_hash(const char *unit, int32_t year)
{
    uint32_t h = mix(2166136261u, unit, strlen(unit) + 1);
    return mix(h, &year, sizeof year);
}

static uint32_t figure_hash(uint32_t year_hash_value, int month, const char *allocation)
{
    unsigned char m = (unsigned char)month;
    uint32_t h = mix(year_hash_value, &m, 1);
    return mix(h, allocation, strlen(allocation) + 1);
}

static int index_init(index_table *t, uint32_t slots)
{
    t->slots = calloc(slots, sizeof *t->slots);
    if (t->slots == NULL)
        return -1;
    t->mask = slots - 1;
    return 0;
}

/* Makes room for entry number `count` (entries hold their uint32 hash first, `stride` apart).
 * 0, or -1 when out of memory (the table is unchanged). */
static int index_reserve(index_table *t, uint32_t count, const void *entries, size_t stride)
{
    uint64_t slots = (uint64_t)t->mask + 1;
    if (((uint64_t)count + 1) * 10 <= slots * 7)
        return 0;
    if (slots >= SLOTS_MAX)
        return -1;
    index_table grown;
    if (index_init(&grown, (uint32_t)(slots * 2)) != 0)
        return -1;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t hash;
        memcpy(&hash, (const char *)entries + (size_t)k * stride, sizeof hash);
        uint32_t j = hash & grown.mask;
        while (grown.slots[j] != 0)
            j = (j + 1) & grown.mask;
        grown.slots[j] = k + 1;
    }
    free(t->slots);
    *t = grown;
    return 0;
}

static int grow(void **items, uint32_t *cap, uint32_t len, size_t size)
{
    if (*cap > len)
        return 0;
    uint64_t want = *cap < 16 ? 16 : (uint64_t)*cap * 2;
    if (want > SLOTS_MAX || want > SIZE_MAX / size)
        return -1;
    void *p = realloc(*items, (size_t)want * size);
    if (p == NULL)
        return -1;
    *items = p;
    *cap = (uint32_t)want;
    return 0;
}

/* The slot of unit year (unit, year): the one holding it, or the empty one where it goes. */
static uint32_t year_slot(const outcome_book *b, const char *unit, int32_t year, uint32_t hash)
{
    for (uint32_t i = hash & b->year_index.mask;; i = (i + 1) & b->year_index.mask) {
        uint32_t e = b->year_index.slots[i];
        if (e == 0)
            return i;
        const year_rec *y = &b->years[e - 1];
        if (y->hash == hash && y->year == year && strcmp(y->unit, unit) == 0)
            return i;
    }
}

static uint32_t figure_slot(const outcome_book *b, uint32_t year_row, int month,
                            const char *allocation, uint32_t hash)
{
    for (uint32_t i = hash & b->figure_index.mask;; i = (i + 1) & b->figure_index.mask) {
        uint32_t e = b->figure_index.slots[i];
        if (e == 0)
            return i;
        const figure_rec *f = &b->figures[e - 1];
        if (f->hash == hash && f->year_row == year_row && f->month == month &&
            strcmp(f->allocation, allocation) == 0)
            return i;
    }
}

/* The row of a unit year, or NONE. */
static uint32_t year_find(const outcome_book *b, const char *unit, int32_t year)
{
    uint32_t i = year_slot(b, unit, year, year_hash(unit, year));
    return b->year_index.slots[i] == 0 ? NONE : b->year_index.slots[i] - 1;
}

static uint32_t figure_find(const outcome_book *b, uint32_t row, int month, const char *allocation)
{
    uint32_t hash = figure_hash(b->years[row].hash, month, allocation);
    uint32_t i = figure_slot(b, row, month, allocation, hash);
    return b->figure_index.slots[i] == 0 ? NONE : b->figure_index.slots[i] - 1;
}

static void figure_view(const outcome_book *b, uint32_t k, outcome_figure_view *out)
{
    const figure_rec *f = &b->figures[k];
    const year_rec *y = &b->years[f->year_row];
    out->unit = y->unit;
    out->allocation = f->allocation;
    out->year = y->year;
    out->month = f->month;
    out->amount = f->amount;
    out->seq = f->seq;
}

/* ---- public ----------------------------------------------------------------------------- */

outcome_book *outcome_new(void)
{
    outcome_book *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    if (index_init(&b->figure_index, SLOTS_MIN) != 0)
        goto failed_figures;
    if (index_init(&b->year_index, SLOTS_MIN) != 0)
        goto failed_years;
    return b;

failed_years:
    free(b->figure_index.slots);
failed_figures:
    free(b);
    return NULL;
}

void outcome_free(outcome_book *b)
{
    if (b == NULL)
        return;
    free(b->year_index.slots);
    free(b->years);
    free(b->figure_index.slots);
    free(b->figures);
    free(b);
}

static void *copy_of(const void *p, size_t n, bool *failed)
{
    if (n == 0)
        return NULL;
    void *c = malloc(n);
    if (c == NULL)
        *failed = true;
    else
        memcpy(c, p, n);
    return c;
}

outcome_book *outcome_clone(const outcome_book *b)
{
    outcome_book *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    *c = *b;
    bool failed = false;
    c->figures = copy_of(b->figures, (size_t)b->figures_cap * sizeof *b->figures, &failed);
    c->years = copy_of(b->years, (size_t)b->years_cap * sizeof *b->years, &failed);
    c->figure_index.slots =
        copy_of(b->figure_index.slots,
                ((size_t)b->figure_index.mask + 1) * sizeof *b->figure_index.slots, &failed);
    c->year_index.slots =
        copy_of(b->year_index.slots, ((size_t)b->year_index.mask + 1) * sizeof *b->year_index.slots,
                &failed);
    if (failed) {
        outcome_free(c);
        return NULL;
    }
    return c;
}

int outcome_reserve(outcome_book *b)
{
    if (grow((void **)&b->figures, &b->figures_cap, b->figures_len, sizeof *b->figures) != 0 ||
        index_reserve(&b->figure_index, b->figures_len, b->figures, sizeof *b->figures) != 0 ||
        grow((void **)&b->years, &b->years_cap, b->years_len, sizeof *b->years) != 0 ||
        index_reserve(&b->year_index, b->years_len, b->years, sizeof *b->years) != 0)
        return -1;
    return 0;
}

bool outcome_figure(const outcome_book *b, const char *unit, int32_t year, int month,
                    const char *allocation, outcome_figure_view *out)
{
    uint32_t row = year_find(b, unit, year);
    uint32_t k = row == NONE ? NONE : figure_find(b, row, month, allocation);
    if (k == NONE)
        return false;
    figure_view(b, k, out);
    return true;
}

bool outcome_year(const outcome_book *b, const char *unit, int32_t year, outcome_year_view *out)
{
    uint32_t row = year_find(b, unit, year);
    if (row == NONE)
        return false;
    const year_rec *y = &b->years[row];
    memset(out, 0, sizeof *out);
    for (int m = 0; m < OUTCOME_MONTHS; m++) {
        out->months[m] = y->months[m];
        out->total += y->months[m];
        if (y->month_figures[m] > 0)
            out->last_month = m + 1;
    }
    out->figures = y->figures;
    return true;
}

/* The row of a unit year, made when missing (room reserved). */
static uint32_t year_get_or_add(outcome_book *b, const char *unit, int32_t year)
{
    uint32_t hash = year_hash(unit, year);
    uint32_t i = year_slot(b, unit, year, hash);
    if (b->year_index.slots[i] != 0)
        return b->year_index.slots[i] - 1;
    assert(b->years_len < b->years_cap);
    uint32_t row = b->years_len++;
    year_rec *y = &b->years[row];
    memset(y, 0, sizeof *y);
    y->hash = hash;
    y->year = year;
    y->first = y->last = NONE;
    snprintf(y->unit, sizeof y->unit, "%s", unit);
    b->year_index.slots[i] = row + 1;
    return row;
}

void outcome_record(outcome_book *b, const char *unit, int32_t year, int month,
                    const char *allocation, int64_t amount, uint64_t seq)
{
    assert(month >= 1 && month <= OUTCOME_MONTHS);
    uint32_t row = year_get_or_add(b, unit, year);
    year_rec *y = &b->years[row];
    uint32_t hash = figure_hash(y->hash, month, allocation);
    uint32_t i = figure_slot(b, row, month, allocation, hash);
    figure_rec *f;
    if (b->figure_index.slots[i] != 0) {
        f = &b->figures[b->figure_index.slots[i] - 1];
        y->months[month - 1] -= f->amount;
    } else {
        assert(b->figures_len < b->figures_cap);
        uint32_t k = b->figures_len++;
        f = &b->figures[k];
        memset(f, 0, sizeof *f);
        f->hash = hash;
        f->year_row = row;
        f->month = (uint8_t)month;
        f->next = NONE;
        snprintf(f->allocation, sizeof f->allocation, "%s", allocation);
        b->figure_index.slots[i] = k + 1;
        if (y->last == NONE)
            y->first = k;
        else
            b->figures[y->last].next = k;
        y->last = k;
        y->figures++;
        y->month_figures[month - 1]++;
    }
    f->amount = amount;
    f->seq = seq;
    y->months[month - 1] += amount;
}

bool outcome_next_figure(const outcome_book *b, const char *unit, int32_t year, uint32_t *cursor,
                         outcome_figure_view *out)
{
    uint32_t k;
    if (*cursor == 0) {
        uint32_t row = year_find(b, unit, year);
        k = row == NONE ? NONE : b->years[row].first;
    } else {
        k = b->figures[*cursor - 1].next;
    }
    if (k == NONE)
        return false;
    figure_view(b, k, out);
    *cursor = k + 1;
    return true;
}

/* ---- saving and loading (snapio.h) ---------------------------------------------------------- */

static int index_save(const index_table *t, snap_sink *sink)
{
    return snap_put_array(sink, t->slots, t->mask + 1, sizeof *t->slots);
}

/* A table of at least `count` + 1 slots (one stays empty, so that a probe ends). */
static int index_load(index_table *t, snap_source *source, uint32_t count)
{
    uint32_t slots, cap;
    if (snap_get_array(source, (void **)&t->slots, &slots, &cap, sizeof *t->slots, SLOTS_MAX) !=
            0 ||
        !snap_pow2_in(slots, SLOTS_MIN, SLOTS_MAX) || count >= slots)
        return -1;
    t->mask = slots - 1;
    return 0;
}

/* The sizes of the records, first: bytes saved by a build with other records are refused. */
static const uint32_t outcome_layout[2] = {sizeof(figure_rec), sizeof(year_rec)};

int outcome_save(const outcome_book *b, snap_sink *sink)
{
    if (snap_put(sink, outcome_layout, sizeof outcome_layout) != 0 ||
        snap_put_array(sink, b->figures, b->figures_len, sizeof *b->figures) != 0 ||
        index_save(&b->figure_index, sink) != 0 ||
        snap_put_array(sink, b->years, b->years_len, sizeof *b->years) != 0 ||
        index_save(&b->year_index, sink) != 0)
        return -1;
    return 0;
}

outcome_book *outcome_load(snap_source *source)
{
    uint32_t layout[2];
    if (snap_get(source, layout, sizeof layout) != 0 ||
        memcmp(layout, outcome_layout, sizeof layout) != 0)
        return NULL;
    outcome_book *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    if (snap_get_array(source, (void **)&b->figures, &b->figures_len, &b->figures_cap,
                       sizeof *b->figures, SLOTS_MAX) != 0 ||
        index_load(&b->figure_index, source, b->figures_len) != 0 ||
        snap_get_array(source, (void **)&b->years, &b->years_len, &b->years_cap, sizeof *b->years,
                       SLOTS_MAX) != 0 ||
        index_load(&b->year_index, source, b->years_len) != 0) {
        outcome_free(b);
        return NULL;
    }
    for (uint32_t i = 0; i < b->figures_len; i++)
        b->figures[i].allocation[BUDGET_ID_BYTES_MAX] = '\0';
    for (uint32_t i = 0; i < b->years_len; i++)
        b->years[i].unit[BUDGET_UNIT_BYTES_MAX] = '\0';
    return b;
}
