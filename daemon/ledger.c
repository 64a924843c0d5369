/*
 * The ledger core: the rules of the budget and the balances they leave (see ledger.h).
 *
 * All state lives in flat arrays linked by uint32 indices, never by pointers, so that
 * ledger_clone is one memcpy per array:
 *   ids          every id ever created (one namespace for all kinds), with the seq of the
 *                event that created it; the id's bytes are in the arena
 *   id_table     open addressing, id -> index into ids
 *   frames, allocations, avrop, corrections
 *                the entities that carry balances, in order of creation (corrections: the
 *                reductions of allocations and reversals of avrop, one array for both)
 *   units        one row per (unit, fiscal year), in order of first appearance
 *   unit_table   open addressing, (unit, year) -> index into units
 *   arena        the NUL-terminated strings (ids, titles, references, purposes, notes),
 *                addressed by uint32 offsets; offset 0 is the empty string
 *   closings     the closed fiscal years, in order of closing, each with the id of the
 *                year.closed event (few: one a year)
 *   reg          the register of units (registry.c): codes, names, kinds, parents, closed
 *   ix           the index of balances' lists (ledger_index): per unit row, unit code and
 *                year the indices of its frames and allocations, and per frame and allocation
 *                (once long) its allocations and avrop; made from the entities after each
 *                event applies, so that a page of a list starts at its offset
 * Decisions, adjustments and withdrawals change balances but carry none, so they are only
 * entries of `ids`.
 *
 * Applying an event allocates nothing but amortized array growth, and looks each id up once.
 */
#include "ledger.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bigmem.h"
#include "budget/errors.h"
#include "outcome.h"
#include "proto/fields.h"

#define NONE UINT32_MAX
/* Seqs are kept in 48 bits (2.8e14 events). */
#define SEQ_MAX ((UINT64_C(1) << 48) - 1)
/* The most one event adds to the arena: an id, a title and a reference, each with its NUL. */
#define ARENA_EVENT_BYTES_MAX (BUDGET_ID_BYTES_MAX + 1 + 2 * (BUDGET_TEXT_BYTES_MAX + 1))
/* Smallest hash table; tables double when more than 7/10 full. */
#define TABLE_SLOTS_MIN 16u
#define TABLE_SLOTS_MAX (UINT32_C(1) << 31)

/* ---- types ---------------------------------------------------------------------------- */

/*
 * An open-addressing hash table of uint32 entry indices, probed linearly. Each slot has a
 * control byte, kept in its own array so that a probe mostly reads only that (one byte per
 * slot, small enough to stay in cache): 0 for an empty slot, else 0x80 | the low 7 bits of
 * the key's 32-bit hash. The top bits of the hash are the home slot. Entries keep their full
 * hash, so growing rehashes from the entry array without reading a key.
 */
typedef struct {
    uint8_t *ctrl;  /* one byte per slot; the block also holds refs */
    uint32_t *refs; /* the entry index in each slot */
    uint32_t mask;  /* slots - 1; the slot count is a power of two */
    uint32_t shift; /* 32 - log2(slots): hash >> shift is the home slot */
} table;

typedef struct {
    uint32_t hash;     /* of the id, for the table */
    uint32_t text;     /* arena offset of the id */
    uint32_t index;    /* into frames, allocations or avrop; NONE for the other kinds */
    uint32_t seq_low;  /* the seq of the event that created the id, 48 bits */
    uint16_t seq_high; /* ... */
    uint8_t kind;      /* ledger_kind */
    uint8_t len;       /* bytes of the id */
} id_rec;

typedef struct {
    uint32_t id;               /* into ids */
    uint32_t unit;             /* into units: the unit that holds the frame, and its year */
    uint32_t title, reference; /* arena offsets */
    uint32_t continues;        /* the frame it continues (into frames), or NONE */
    /* Its allocations in order of creation, linked by next_in_frame; NONE when none. */
    uint32_t allocation_first, allocation_last;
    uint32_t prev_in_unit;  /* the frame granted before it to the same unit and year, or NONE */
    uint32_t carried_from;  /* the frame whose unspent money made this one, or NONE */
    int32_t avrop_last_day; /* YYYYMMDD, or 0: no last day for avrop */
    int64_t granted, allocated, pending, called_off;
    /* In a ledger of what was decided by a day (ledger_apply_decided): the grant was decided
     * later, so the frame is here only for what refers to it, with nothing granted. */
    bool granted_later;
    /* As granted, before adjustments, and the decision it was granted by: what a duplicate
     * grant is compared by. */
    int64_t grant_amount;
    int32_t decision_date;
    char decision_body[BUDGET_DECISION_BODY_BYTES_MAX + 1];
    char decision_paragraph[BUDGET_DECISION_PARAGRAPH_BYTES_MAX + 1];
    int64_t carried_over; /* of its unspent money, what frame.carried_over took to year + 1 */
} frame_rec;

typedef struct {
    uint32_t id, frame;
    uint32_t unit; /* into units: the receiving unit, in the frame's year */
    uint32_t purpose;
    uint32_t proposer_uid;
    uint32_t next_in_frame; /* the frame's next allocation, or NONE */
    /* Its avrop in order of creation, linked by next_in_allocation; NONE when none. */
    uint32_t avrop_first, avrop_last;
    uint8_t status;         /* ledger_status */
    int32_t avrop_last_day; /* YYYYMMDD, or 0: its frame's */
    int64_t amount, called_off, pending;
    int64_t reduced, reducing; /* approved reductions (already out of amount), pending ones */
} allocation_rec;

typedef struct {
    uint32_t id, allocation;
    uint32_t note;
    uint32_t requester_uid;
    uint32_t next_in_allocation; /* the allocation's next avrop, or NONE */
    uint8_t status;
    int64_t amount;
    int64_t reversed, reversing; /* approved reversals (out of called_off), pending ones */
} avrop_rec;

/* A reduction of an allocation or a reversal of an avrop: a request another identity decides. */
typedef struct {
    uint32_t id;
    uint32_t of; /* the allocation (a reduction) or the avrop (a reversal) */
    uint32_t requester_uid;
    uint8_t status; /* ledger_status */
    int64_t amount;
} correction_rec;

typedef struct {
    uint32_t hash; /* of (unit, year), for the table */
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    uint8_t len;
    int32_t year;
    /* 0 for a row made only for a plan amount (not listed among the units), else 1. */
    uint8_t held;
    /* The plan amount for this unit and year, and the budget year of the adoption that set
     * it (0: none). The adoption of the latest budget year wins. */
    int32_t plan_by;
    int64_t plan;
    int64_t frames, allocated, called_off, pending;
    int64_t reducing;      /* pending reductions of the allocations to it */
    uint32_t frame_last;   /* the last frame granted to it, linked by prev_in_unit; or NONE */
    int64_t allocated_out; /* approved out of its frames (to any unit, itself too) */
} unit_rec;

/* A closed fiscal year. */
typedef struct {
    int32_t year;
    uint32_t id; /* into ids: the year.closed event's id */
} closing_rec;

/*
 * The index of balances' lists: for each unit row, unit code (every year) and year, the
 * indices of its frames and allocations in order of creation, and of each frame and allocation
 * its allocations and avrop by position, so that a page of a filtered list is found without
 * walking what comes before it. It is made from the entities alone (ix_catch_up, after each
 * event applied), so replay and a clone hold the same index as the live state.
 */
typedef struct {
    uint32_t *items;
    uint32_t len, cap;
} ix_list;

typedef struct {
    ix_list frames, allocations;
    uint32_t code, year; /* into ledger_index.codes and .years */
} ix_row;

/* Of one unit code, or of one year: its unit rows, frames and allocations. */
typedef struct {
    ix_list rows, frames, allocations;
    int32_t year; /* of a year's group; 0 for a code's */
} ix_group;

/* A frame's allocations or an allocation's avrop: while fewer than IX_LINKED_MAX they are only
 * linked (next_in_frame, next_in_allocation) and `kids` counts them; from then on they are also
 * listed, and `kids` is IX_LISTED | the list's number in ledger_index.long_lists. */
#define IX_LINKED_MAX 32u
#define IX_LISTED 0x80000000u

typedef struct {
    ix_row *rows;
    uint32_t rows_len, rows_cap;
    ix_group *codes, *years;
    uint32_t codes_len, codes_cap, years_len, years_cap;
    uint32_t *reg_code; /* the code group of each unit of the register, or NONE */
    uint32_t reg_len, reg_cap;
    uint32_t *frame_kids, *allocation_kids;
    uint32_t frames_len, frames_cap, allocations_len, allocations_cap;
    ix_list *long_lists;
    uint32_t long_len, long_cap;
    uint32_t avrop_len; /* avrop indexed */
} ledger_index;

struct ledger {
    id_rec *ids;
    uint32_t ids_len, ids_cap;
    table id_table;

    frame_rec *frames;
    uint32_t frames_len, frames_cap;
    allocation_rec *allocations;
    uint32_t allocations_len, allocations_cap;
    avrop_rec *avrop;
    uint32_t avrop_len, avrop_cap;
    correction_rec *corrections;
    uint32_t corrections_len, corrections_cap;

    unit_rec *units;
    uint32_t units_len, units_cap;
    uint32_t plan_rows; /* rows of `units` with held 0 */
    table unit_table;

    closing_rec *closings;
    uint32_t closings_len, closings_cap;

    char *arena;
    uint32_t arena_len, arena_cap;

    registry *reg;
    outcome_book *outcomes; /* the actual costs recorded (outcome.recorded) */

    uint64_t events, last_seq;
    uint64_t last_ts_ms; /* of the event with last_seq */
    /* The latest day (ledger_decision_day) of an event applied by ledger_apply that a view of
     * what was decided by a day counts by its day (one resting on a decision, or a
     * withdrawal); 0 when none. ledger_decided_base reads it. */
    int32_t decided_last;
    uint64_t ids_of_kind[LEDGER_KIND_END];
    ledger_index ix;
};

/* What an event refers to, as found in the state by check_rules. */
typedef struct {
    uint32_t frame;      /* frame index, or NONE */
    uint32_t allocation; /* allocation index, or NONE */
    uint32_t avrop;      /* avrop index, or NONE */
    uint32_t correction; /* correction index (a decided reduction or reversal), or NONE */
    uint32_t unit;       /* the unit row the event changes, or NONE when it is to be made */
    ledger_kind target_kind;
    uint32_t proposer_uid; /* of the target, for decisions and withdrawals */
    int64_t amount;        /* of the target, for decisions and withdrawals */
} refs;

/* ---- small helpers -------------------------------------------------------------------- */

/* Fills `err` (when not NULL) and returns `code`. */
__attribute__((format(printf, 3, 4))) static int fail(ledger_error *err, int code, const char *fmt,
                                                      ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* An amount as budgetctl's tables show it: "1 500 000,00 kr". */
typedef struct {
    char text[40];
} kronor;

static kronor kr(int64_t ore)
{
    kronor k;
    char digits[32];
    uint64_t magnitude = ore < 0 ? (uint64_t)0 - (uint64_t)ore : (uint64_t)ore;
    int n = snprintf(digits, sizeof digits, "%" PRIu64, magnitude / 100);
    size_t o = 0;
    if (ore < 0)
        k.text[o++] = '-';
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            k.text[o++] = ' ';
        k.text[o++] = digits[i];
    }
    snprintf(k.text + o, sizeof k.text - o, ",%02u kr", (unsigned)(magnitude % 100));
    return k;
}

static uint64_t rec_seq(const id_rec *r)
{
    return (uint64_t)r->seq_high << 32 | r->seq_low;
}

static const char *text(const ledger *l, uint32_t offset)
{
    return l->arena + offset;
}

static const char *id_text(const ledger *l, uint32_t id)
{
    return l->arena + l->ids[id].text;
}

/* A 32-bit hash of a short key (ids, units), 8 bytes at a time: a multiply and a shift per
 * word, and a final multiply whose high half is the result. */
static uint32_t hash_key(const char *s, size_t len, uint64_t seed)
{
    uint64_t h = seed ^ ((uint64_t)len * UINT64_C(0x9e3779b97f4a7c15));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++)
        w |= (uint64_t)(uint8_t)s[i] << (8 * i);
    h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 32;
    h *= UINT64_C(0x94d049bb133111eb);
    return (uint32_t)(h >> 32);
}

/* ---- storage ---------------------------------------------------------------------------- */

/* Makes room for `more` items after `len` in a growable array; 0 or -1 (out of memory). */
static int reserve(void **items, uint32_t *cap, uint32_t len, uint32_t more, size_t size)
{
    if (*cap - len >= more)
        return 0;
    uint64_t want = *cap < 16 ? 16 : (uint64_t)*cap + *cap / 2;
    if (want < (uint64_t)len + more)
        want = (uint64_t)len + more;
    if (want > UINT32_MAX - 1)
        want = UINT32_MAX - 1;
    if (want < (uint64_t)len + more || want > SIZE_MAX / size)
        return -1;
    void *grown = bigmem_realloc(*items, (size_t)want * size);
    if (grown == NULL)
        return -1;
    *items = grown;
    *cap = (uint32_t)want;
    return 0;
}

static uint8_t ctrl_of(uint32_t hash)
{
    return (uint8_t)(0x80u | (hash & 0x7fu));
}

static size_t table_block_bytes(const table *t)
{
    return ((size_t)t->mask + 1) * (1 + sizeof(uint32_t));
}

static int table_init(table *t, uint32_t slots)
{
    assert(slots >= TABLE_SLOTS_MIN && (slots & (slots - 1)) == 0);
    uint8_t *block = bigmem_calloc(slots, 1 + sizeof(uint32_t));
    if (block == NULL)
        return -1;
    t->ctrl = block;
    t->refs = (uint32_t *)(void *)(block + slots); /* slots is a multiple of 4 */
    t->mask = slots - 1;
    t->shift = 32 - (uint32_t)__builtin_ctz(slots);
    return 0;
}

static void table_put(table *t, uint32_t slot, uint32_t hash, uint32_t ref)
{
    assert(t->ctrl[slot] == 0);
    t->ctrl[slot] = ctrl_of(hash);
    t->refs[slot] = ref;
}

/*
 * Makes room for `more` entries after the first `count`, keeping the table at most 7/10 full.
 * The entries are `count` records of `stride` bytes at `entries`, each beginning with its
 * uint32 hash. 0, or -1 when out of memory (the table is unchanged).
 */
static int table_reserve(table *t, uint32_t count, uint32_t more, const void *entries,
                         size_t stride)
{
    uint64_t slots = (uint64_t)t->mask + 1;
    if (((uint64_t)count + more) * 10 <= slots * 7)
        return 0;
    while (((uint64_t)count + more) * 10 > slots * 7)
        slots *= 2;
    if (slots > TABLE_SLOTS_MAX)
        return -1;
    table grown;
    if (table_init(&grown, (uint32_t)slots) != 0)
        return -1;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t hash;
        memcpy(&hash, (const char *)entries + (size_t)k * stride, sizeof hash);
        uint32_t j = hash >> grown.shift;
        while (grown.ctrl[j] != 0)
            j = (j + 1) & grown.mask;
        table_put(&grown, j, hash, k);
    }
    free(t->ctrl);
    *t = grown;
    return 0;
}

/* Copies `len` bytes and a NUL into the arena (room reserved before); returns the offset. */
static uint32_t arena_put(ledger *l, const char *s, size_t len)
{
    if (len == 0)
        return 0;
    uint32_t at = l->arena_len;
    assert((uint64_t)l->arena_cap - at >= len + 1);
    memcpy(l->arena + at, s, len);
    l->arena[at + len] = '\0';
    l->arena_len += (uint32_t)len + 1;
    return at;
}

/* The slot of the id `key`: the slot holding it, or the empty slot where it would go. */
static uint32_t id_find(const ledger *l, const char *key, size_t len, uint32_t hash)
{
    const table *t = &l->id_table;
    uint8_t want = ctrl_of(hash);
    for (uint32_t i = hash >> t->shift;; i = (i + 1) & t->mask) {
        uint8_t c = t->ctrl[i];
        if (c == 0)
            return i;
        if (c == want) {
            const id_rec *r = &l->ids[t->refs[i]];
            if (r->hash == hash && r->len == len && memcmp(l->arena + r->text, key, len) == 0)
                return i;
        }
    }
}

/* The id record of `key` (a NUL-terminated string), or NULL. */
static const id_rec *id_get(const ledger *l, const char *key)
{
    size_t len = strnlen(key, BUDGET_ID_BYTES_MAX + 1);
    if (len == 0 || len > BUDGET_ID_BYTES_MAX)
        return NULL;
    uint32_t i = id_find(l, key, len, hash_key(key, len, 0));
    return l->id_table.ctrl[i] == 0 ? NULL : &l->ids[l->id_table.refs[i]];
}

static uint32_t unit_find(const ledger *l, const char *unit, size_t len, int32_t year,
                          uint32_t hash)
{
    const table *t = &l->unit_table;
    uint8_t want = ctrl_of(hash);
    for (uint32_t i = hash >> t->shift;; i = (i + 1) & t->mask) {
        uint8_t c = t->ctrl[i];
        if (c == 0)
            return i;
        if (c == want) {
            const unit_rec *u = &l->units[t->refs[i]];
            if (u->year == year && u->len == len && memcmp(u->unit, unit, len) == 0)
                return i;
        }
    }
}

static uint32_t unit_hash(const char *unit, size_t len, int32_t year)
{
    return hash_key(unit, len, (uint64_t)(uint32_t)year * UINT64_C(0x9e3779b97f4a7c15));
}

/* The row of (unit, year), or NONE. */
static uint32_t unit_get(const ledger *l, const char *unit, int32_t year)
{
    size_t len = strnlen(unit, BUDGET_UNIT_BYTES_MAX + 1);
    if (len == 0 || len > BUDGET_UNIT_BYTES_MAX)
        return NONE;
    uint32_t i = unit_find(l, unit, len, year, unit_hash(unit, len, year));
    return l->unit_table.ctrl[i] == 0 ? NONE : l->unit_table.refs[i];
}

/* The row of (unit, year), made when missing (room reserved before). */
static uint32_t unit_get_or_add(ledger *l, const char *unit, int32_t year)
{
    size_t len = strlen(unit);
    uint32_t hash = unit_hash(unit, len, year);
    uint32_t i = unit_find(l, unit, len, year, hash);
    if (l->unit_table.ctrl[i] != 0) {
        unit_rec *u = &l->units[l->unit_table.refs[i]];
        if (!u->held) {
            u->held = 1;
            l->plan_rows--;
        }
        return l->unit_table.refs[i];
    }
    assert(l->units_len < l->units_cap);
    uint32_t row = l->units_len++;
    unit_rec *u = &l->units[row];
    memset(u, 0, sizeof *u);
    u->hash = hash;
    memcpy(u->unit, unit, len);
    u->len = (uint8_t)len;
    u->year = year;
    u->held = 1;
    u->frame_last = NONE;
    table_put(&l->unit_table, i, hash, row);
    return row;
}

/* The row of (unit, year) for a plan amount, made when missing and then not held (room
 * reserved before). */
static uint32_t unit_plan_row(ledger *l, const char *unit, int32_t year)
{
    uint32_t row = unit_get(l, unit, year);
    if (row != NONE)
        return row;
    row = unit_get_or_add(l, unit, year);
    l->units[row].held = 0;
    l->plan_rows++;
    return row;
}

/* ---- field syntax ----------------------------------------------------------------------- */

bool ledger_valid_id(const char *s, size_t len)
{
    return budget_id_valid(s, len);
}

bool ledger_valid_unit(const char *s, size_t len)
{
    return budget_unit_valid(s, len);
}

bool ledger_valid_text(const char *s, size_t len, size_t min)
{
    return budget_text_valid(s, len, min);
}

/*
 * Fields of fixed-size arrays: NUL-terminated inside the array and of a length within bounds;
 * when `full`, also of valid characters (a command from a client). An event read back was
 * checked in full before it was written, and its decoder checks ids and units again, so
 * replay checks only what keeps the state sound: lengths and ranges, and of the texts only
 * those the state keeps.
 */
static bool text_field(const char *s, size_t min, size_t max, bool full)
{
    size_t len = strnlen(s, max + 1);
    if (len > max)
        return false;
    if (full)
        return ledger_valid_text(s, len, min);
    return len >= min;
}

static bool id_field(const char *s, bool full)
{
    size_t len = strnlen(s, BUDGET_ID_BYTES_MAX + 1);
    if (full)
        return ledger_valid_id(s, len);
    return len >= 1 && len <= BUDGET_ID_BYTES_MAX;
}

static bool unit_field(const char *s, bool full)
{
    size_t len = strnlen(s, BUDGET_UNIT_BYTES_MAX + 1);
    if (full)
        return ledger_valid_unit(s, len);
    return len >= 1 && len <= BUDGET_UNIT_BYTES_MAX;
}

/* The syntax of a field of a decision (a date, a body, a paragraph): checked in full, on
 * replay too, for they are short. */
static int check_decision_field(const ledger_event *c, const event_field *f, ledger_error *err)
{
    const char *s = ledger_field_str(c, f);
    switch ((field_value)f->value) {
    case FIELD_DATE:
        if (budget_date_valid((int32_t)ledger_field_int(c, f)) ||
            (ledger_field_int(c, f) == 0 && f->source == FIELD_OPTIONAL))
            return 0;
        if (ledger_field_int(c, f) == 0 && f->source == FIELD_REQUIRED)
            return fail(err, BUDGET_EBAD_REQUEST, "%s is required: the day of the decision",
                        f->key);
        return fail(err, BUDGET_EBAD_REQUEST, "%s must be a real day YYYY-MM-DD in %d..%d", f->key,
                    BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
    case FIELD_BODY:
        if (budget_decision_body_valid(s, strnlen(s, f->size)))
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST,
                    "%s must be 1..%zu bytes of A-Z, Å, Ä, Ö and 0-9, beginning "
                    "with a letter (the body that decided, such as KS)",
                    f->key, field_bytes_max(f));
    case FIELD_PARAGRAPH:
        if (budget_decision_paragraph_valid(s, strnlen(s, f->size)))
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST,
                    "%s must be 1..%zu bytes of A-Z a-z 0-9 . / : - and single spaces, "
                    "beginning with a digit (the text after §, such as 241)",
                    f->key, field_bytes_max(f));
    default:
        break;
    }
    return fail(err, BUDGET_EINTERNAL, "field %s is not of a decision", f->key);
}

/* The syntax of one line of an adoption, number `at` (from 1). */
static int check_line(const ledger_line *x, uint32_t at, bool full, ledger_error *err)
{
    if (!unit_field(x->unit, full))
        return fail(err, BUDGET_EBAD_REQUEST,
                    "lines[%" PRIu32 "].unit must be 1..32 characters of A-Za-z0-9._:-", at);
    if (x->continues[0] != '\0' && !id_field(x->continues, full))
        return fail(err, BUDGET_EBAD_REQUEST,
                    "lines[%" PRIu32 "].continues must be 1..64 characters of A-Za-z0-9._:-", at);
    if (x->amount <= 0 || x->amount > BUDGET_AMOUNT_MAX)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "lines[%" PRIu32 "].amount %" PRId64 " öre is not within 1..%lld öre", at,
                    x->amount, BUDGET_AMOUNT_MAX);
    if (x->plans > BUDGET_PLAN_YEARS_MAX)
        return fail(err, BUDGET_EBAD_REQUEST, "lines[%" PRIu32 "] has over %d plan amounts", at,
                    BUDGET_PLAN_YEARS_MAX);
    for (uint8_t k = 0; k < x->plans; k++)
        if (x->plan[k] < 0 || x->plan[k] > BUDGET_AMOUNT_MAX)
            return fail(err, BUDGET_EBAD_REQUEST,
                        "lines[%" PRIu32 "].plan[%u] %" PRId64 " öre is not within 0..%lld öre", at,
                        (unsigned)k, x->plan[k], BUDGET_AMOUNT_MAX);
    return 0;
}

/* The syntax of the lines of an adoption: 1..BUDGET_ADOPT_LINES_MAX lines, each sound. */
static int check_lines(const ledger_lines *ls, bool full, ledger_error *err)
{
    if (ls->count < 1 || ls->count > BUDGET_ADOPT_LINES_MAX)
        return fail(err, BUDGET_EBAD_REQUEST, "lines must hold 1..%d lines, not %u",
                    BUDGET_ADOPT_LINES_MAX, (unsigned)ls->count);
    for (uint16_t i = 0; i < ls->count; i++) {
        int rc = check_line(&ls->line[i], (uint32_t)i + 1, full, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The syntax of field `f` of `c`, one the client gives (`full`: see above). */
static int check_field(const ledger_event *c, const event_field *f, bool full, ledger_error *err)
{
    const char *s = ledger_field_str(c, f);
    int64_t v = field_is_str(f) ? 0 : ledger_field_int(c, f);
    switch ((field_value)f->value) {
    case FIELD_ID:
        if (id_field(s, full) ||
            (s[0] == '\0' && (f->source == FIELD_OPTIONAL || field_bytes_min(f) == 0)))
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s must be 1..64 characters of A-Za-z0-9._:-",
                    f->key);
    case FIELD_UNIT:
        if ((s[0] == '\0' && field_bytes_min(f) == 0) || unit_field(s, full))
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s must be 1..32 characters of A-Za-z0-9._:-",
                    f->key);
    case FIELD_YEAR:
        if (v >= BUDGET_YEAR_MIN && v <= BUDGET_YEAR_MAX)
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s %" PRId64 " is not within %d..%d", f->key, v,
                    BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
    case FIELD_AMOUNT:
        if (v > 0 && v <= BUDGET_AMOUNT_MAX)
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s %" PRId64 " öre is not within 1..%lld öre",
                    f->key, v, BUDGET_AMOUNT_MAX);
    case FIELD_DELTA:
        if (v != 0 && v >= -BUDGET_AMOUNT_MAX && v <= BUDGET_AMOUNT_MAX)
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST,
                    "%s %" PRId64 " öre must be non-zero and within -%lld..%lld öre", f->key, v,
                    BUDGET_AMOUNT_MAX, BUDGET_AMOUNT_MAX);
    case FIELD_TEXT:
        if (text_field(s, field_bytes_min(f), field_bytes_max(f), full))
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST,
                    "%s must be %zu..%zu bytes of UTF-8 without control characters", f->key,
                    field_bytes_min(f), field_bytes_max(f));
    case FIELD_MONTH:
        if (v >= 1 && v <= OUTCOME_MONTHS)
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s %" PRId64 " is not a month 1..12", f->key, v);
    case FIELD_MONEY:
        if (v >= -BUDGET_AMOUNT_MAX && v <= BUDGET_AMOUNT_MAX)
            return 0;
        return fail(err, BUDGET_EBAD_REQUEST, "%s %" PRId64 " öre is not within -%lld..%lld öre",
                    f->key, v, BUDGET_AMOUNT_MAX, BUDGET_AMOUNT_MAX);
    case FIELD_TARGET_KIND:
    case FIELD_TOTAL:
        break; /* derived, never given */
    case FIELD_DATE:
    case FIELD_BODY:
    case FIELD_PARAGRAPH:
        return check_decision_field(c, f, err);
    case FIELD_LINES:
        return check_lines(&c->lines, full, err);
    }
    return fail(err, BUDGET_EINTERNAL, "field %s cannot be given", f->key);
}

/* The last round of added fields of which `c` has one that is not empty ("" or 0); 0 when
 * none. */
static unsigned added_round(const ledger_event *c, const event_type_info *t)
{
    unsigned round = 0;
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        unsigned r = field_round(f->flags);
        if (r <= round)
            continue;
        if (field_is_str(f) ? ledger_field_str(c, f)[0] != '\0' : ledger_field_int(c, f) != 0)
            round = r;
    }
    return round;
}

unsigned ledger_added_round(const ledger_event *ev)
{
    return ledger_type_known(ev->type) ? added_round(ev, &event_types[ev->type]) : 0;
}

bool ledger_added_absent(const ledger_event *ev)
{
    if (!ledger_type_known(ev->type))
        return false;
    const event_type_info *t = &event_types[ev->type];
    bool has = false;
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        if (field_round(f->flags) != 1)
            continue;
        has = true;
        if (field_is_str(f) ? ledger_field_str(ev, f)[0] != '\0' : ledger_field_int(ev, f) != 0)
            return false;
    }
    return has;
}

/*
 * The syntax of every field the client gives for the event's type, in the order of its data
 * map (`full`: see above; without it, of the texts only those the state keeps).
 */
static int check_syntax(const ledger_event *c, bool full, ledger_error *err)
{
    if (!ledger_type_known(c->type))
        return fail(err, BUDGET_EBAD_REQUEST, "unknown event type %d", (int)c->type);
    const event_type_info *t = &event_types[c->type];
    /* An event read back may lack the fields added to its type since it was written. */
    unsigned round = full ? FIELD_ROUNDS : added_round(c, t);
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        if (f->source == FIELD_DERIVED ||
            (!full && f->value == FIELD_TEXT && !(f->flags & FIELD_KEPT)) ||
            field_round(f->flags) > round)
            continue;
        int rc = check_field(c, f, full, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- the rules -------------------------------------------------------------------------- */

static const char *article(ledger_kind kind)
{
    return ledger_kind_name(kind)[0] == 'a' ? "an" : "a";
}

/* Finds `id` as an entity of `kind` (a frame, an allocation), or says why not. */
static int find_entity(const ledger *l, const char *id, ledger_kind kind, uint32_t *index,
                       ledger_error *err)
{
    const id_rec *r = id_get(l, id);
    if (r == NULL)
        return fail(err, BUDGET_ENOT_FOUND, "%s %s does not exist", ledger_kind_name(kind), id);
    if (r->kind != kind)
        return fail(err, BUDGET_ENOT_FOUND, "%s is %s %s, not %s %s", id,
                    article((ledger_kind)r->kind), ledger_kind_name((ledger_kind)r->kind),
                    article(kind), ledger_kind_name(kind));
    *index = r->index;
    return 0;
}

/* ---- the year's end ---------------------------------------------------------------------- */

/* The closing of fiscal year `year`, or NULL while it is open. O(closed years). */
static const closing_rec *closing_of(const ledger *l, int32_t year)
{
    for (uint32_t i = 0; i < l->closings_len; i++)
        if (l->closings[i].year == year)
            return &l->closings[i];
    return NULL;
}

/*
 * The one check of a closed year: every write that would move money on a frame of `year`
 * (grant, adjust, propose, avrop, a decision or withdrawal of its requests, and any request
 * type added later) asks it before its own rules. `fmt` and what follows say what is refused
 * ("frame ks-2021 cannot be adjusted"), formatted only then: replay and every accepted write
 * pass here, and most years are open. 0 while the year is open, else invalid_state naming the
 * year and the event that closed it.
 */
static int check_year_open(const ledger *l, int32_t year, ledger_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int check_year_open(const ledger *l, int32_t year, ledger_error *err, const char *fmt, ...)
{
    const closing_rec *c = closing_of(l, year);
    if (c == NULL)
        return 0;
    char what[BUDGET_ID_BYTES_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fail(err, BUDGET_EINVALID_STATE, "fiscal year %" PRId32 " is closed (%s): %s", year,
                id_text(l, c->id), what);
}

/* The fiscal year of frame `f`. */
static int32_t frame_year(const ledger *l, uint32_t f)
{
    return l->units[l->frames[f].unit].year;
}

/* What a frame kept of its money: unallocated, or allocated and not called off. */
static int64_t frame_unspent(const frame_rec *f)
{
    return f->granted - f->pending - f->called_off;
}

/* Appends `id` to the list in `buf` (of `size`) while it fits, leaving room for the tail. */
static void list_id(char *buf, size_t size, size_t *used, size_t *listed, const char *id)
{
    size_t len = strlen(id);
    if (*used + len + 2 + 24 > size)
        return;
    memcpy(buf + *used, *listed ? ", " : "", *listed ? 2 : 0);
    *used += *listed ? 2 : 0;
    memcpy(buf + *used, id, len + 1);
    *used += len;
    (*listed)++;
}

/* The pending allocations, avrop, reductions and reversals on the frames of `year`: their
 * count, and as many of their ids as fit in `buf`. O(allocations + avrop + corrections). */
static size_t pending_of_year(const ledger *l, int32_t year, char *buf, size_t size)
{
    size_t count = 0, used = 0, listed = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < l->allocations_len; i++) {
        const allocation_rec *a = &l->allocations[i];
        if (a->status == LEDGER_PENDING && frame_year(l, a->frame) == year) {
            count++;
            list_id(buf, size, &used, &listed, id_text(l, a->id));
        }
    }
    for (uint32_t i = 0; i < l->avrop_len; i++) {
        const avrop_rec *v = &l->avrop[i];
        if (v->status == LEDGER_PENDING &&
            frame_year(l, l->allocations[v->allocation].frame) == year) {
            count++;
            list_id(buf, size, &used, &listed, id_text(l, v->id));
        }
    }
    for (uint32_t i = 0; i < l->corrections_len; i++) {
        const correction_rec *c = &l->corrections[i];
        const id_rec *t = &l->ids[c->id];
        uint32_t a = t->kind == LEDGER_KIND_REDUCTION ? c->of : l->avrop[c->of].allocation;
        if (c->status == LEDGER_PENDING && frame_year(l, l->allocations[a].frame) == year) {
            count++;
            list_id(buf, size, &used, &listed, id_text(l, c->id));
        }
    }
    if (listed < count)
        snprintf(buf + used, size - used, " and %zu more", count - listed);
    return count;
}

/* year.closed: the year is open and nothing on its frames is pending; `r->amount` is what its
 * frames kept (the event's derived "unspent"). */
static int rule_close_year(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                           ledger_error *err)
{
    (void)actor_uid;
    const closing_rec *c = closing_of(l, ev->year);
    if (c != NULL)
        return fail(err, BUDGET_EINVALID_STATE, "fiscal year %" PRId32 " is already closed (%s)",
                    ev->year, id_text(l, c->id));
    char ids[88]; /* with the rest of the message, within ledger_error.message */
    size_t pending = pending_of_year(l, ev->year, ids, sizeof ids);
    if (pending > 0)
        return fail(err, BUDGET_ECONFLICT,
                    "fiscal year %" PRId32 " has %zu pending request%s on its frames; decide or "
                    "withdraw %s first: %s",
                    ev->year, pending, pending == 1 ? "" : "s", pending == 1 ? "it" : "them", ids);
    int64_t unspent = 0;
    for (uint32_t i = 0; i < l->frames_len; i++) {
        if (frame_year(l, i) != ev->year)
            continue;
        if (unspent > INT64_MAX - frame_unspent(&l->frames[i]))
            return fail(err, BUDGET_ETOO_LARGE,
                        "the unspent money of fiscal year %" PRId32 " exceeds %" PRId64 " öre",
                        ev->year, INT64_MAX);
        unspent += frame_unspent(&l->frames[i]);
    }
    r->amount = unspent;
    return 0;
}

/* frame.carried_over: from a frame of a closed year, at most what it kept and has not yet
 * carried over, into a new frame of the same unit for the next year, which is open. */
static int find_open_unit(const ledger *l, const char *code, uint32_t *i, ledger_error *err);

static int rule_carry_over(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                           ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->frame, LEDGER_KIND_FRAME, &r->frame, err);
    if (rc != 0)
        return rc;
    const frame_rec *f = &l->frames[r->frame];
    int32_t year = frame_year(l, r->frame);
    r->unit = f->unit;
    uint32_t registered;
    rc = find_open_unit(l, l->units[f->unit].unit, &registered, err);
    if (rc != 0)
        return rc; /* a closed unit gets no frame of the next year */
    if (closing_of(l, year) == NULL)
        return fail(err, BUDGET_EINVALID_STATE,
                    "frame %s is of fiscal year %" PRId32 ", which is not closed; only the unspent "
                    "money of a closed year can be carried over",
                    ev->frame, year);
    if (year >= BUDGET_YEAR_MAX)
        return fail(err, BUDGET_EBAD_REQUEST, "fiscal year %" PRId32 " has no next year", year);
    rc = check_year_open(l, year + 1, err, "frame %s cannot be made in it", ev->id);
    if (rc != 0)
        return rc;
    int64_t left = frame_unspent(f) - f->carried_over;
    if (ev->amount > left)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "carrying %s over from frame %s exceeds what it has left: %s (unspent %s, "
                    "carried over %s)",
                    kr(ev->amount).text, ev->frame, kr(left).text, kr(frame_unspent(f)).text,
                    kr(f->carried_over).text);
    uint32_t next = unit_get(l, l->units[f->unit].unit, year + 1);
    if (next != NONE && l->units[next].frames > INT64_MAX - ev->amount)
        return fail(err, BUDGET_ETOO_LARGE,
                    "the frames of unit %s in %" PRId32 " would exceed %" PRId64 " öre in all",
                    l->units[f->unit].unit, year + 1, INT64_MAX);
    return 0;
}

/* The Swedish day (YYYYMMDD) of `ts_ms`, the time an event is entered; 0 when unknown. */
static int32_t entry_day(uint64_t ts_ms)
{
    return ts_ms == 0 || ts_ms > INT64_MAX ? 0 : budget_day_of_ms((int64_t)ts_ms);
}

/* An avrop entered after the last day of its allocation (or else of its frame) is refused. */
static int check_avrop_window(const ledger *l, const ledger_event *ev, const allocation_rec *a,
                              ledger_error *err)
{
    int32_t last = a->avrop_last_day ? a->avrop_last_day : l->frames[a->frame].avrop_last_day;
    int32_t day = entry_day(ev->ts_ms);
    if (last == 0 || day <= last)
        return 0;
    char last_text[BUDGET_DATE_BYTES + 1], day_text[BUDGET_DATE_BYTES + 1];
    if (!budget_date_format(last, last_text) || !budget_date_format(day, day_text))
        return fail(err, BUDGET_EINTERNAL, "a last day for avrop is not a date");
    return fail(err, BUDGET_EINVALID_STATE,
                "the last day for avrop on allocation %s was %s (of its %s); avrop %s entered "
                "on %s is too late",
                ev->allocation, last_text, a->avrop_last_day ? "allocation" : "frame", ev->id,
                day_text);
}

/* A frame of `year` may continue `id` ("" is none): a frame of an earlier year. */
static int check_continues(const ledger *l, const char *id, int32_t year, ledger_error *err)
{
    if (id[0] == '\0')
        return 0;
    uint32_t f;
    int rc = find_entity(l, id, LEDGER_KIND_FRAME, &f, err);
    if (rc != 0)
        return rc;
    int32_t earlier = l->units[l->frames[f].unit].year;
    if (earlier >= year)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "a frame of %" PRId32 " cannot continue frame %s of %" PRId32
                    "; it continues a frame of an earlier year",
                    year, id, earlier);
    return 0;
}

/* No more frames for (unit, year) than int64 can sum. */
static int check_frames_fit(const ledger *l, const char *unit, int32_t year, int64_t amount,
                            ledger_error *err)
{
    uint32_t row = unit_get(l, unit, year);
    if (row != NONE && l->units[row].frames > INT64_MAX - amount)
        return fail(err, BUDGET_ETOO_LARGE,
                    "the frames of unit %s in %" PRId32 " would exceed %" PRId64 " öre in all",
                    unit, year, INT64_MAX);
    return 0;
}

static int rule_grant(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                      ledger_error *err)
{
    (void)actor_uid;
    int rc = check_year_open(l, ev->year, err, "frame %s cannot be granted in it", ev->id);
    if (rc != 0)
        return rc;
    r->unit = unit_get(l, ev->unit, ev->year);
    rc = check_frames_fit(l, ev->unit, ev->year, ev->amount, err);
    return rc != 0 ? rc : check_continues(l, ev->continues, ev->year, err);
}

/*
 * The id of the frame a budget adoption makes for a line's unit: "<adoption id>:<unit>", into
 * `out`. Its length, or 0 when it would be over BUDGET_ID_BYTES_MAX.
 */
static size_t line_frame_id(const char *adoption, const char *unit,
                            char out[BUDGET_ID_BYTES_MAX + 1])
{
    int n = snprintf(out, BUDGET_ID_BYTES_MAX + 1, "%s:%s", adoption, unit);
    return n > 0 && n <= BUDGET_ID_BYTES_MAX ? (size_t)n : 0;
}

static int check_line_unit(const ledger *l, uint16_t at, const char *code, ledger_error *err);

/* Line number `at` (from 1) of an adoption of `k` plan years, against the state and the lines
 * before it. */
static int rule_line(const ledger *l, const ledger_event *ev, uint16_t at, int32_t k,
                     ledger_error *err)
{
    const ledger_line *x = &ev->lines.line[at - 1];
    int rc = check_line_unit(l, at, x->unit, err);
    if (rc != 0)
        return rc;
    if (x->plans != k)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "line %u (%s) gives %u plan amounts; the plan years %" PRId32 "..%" PRId32
                    " need %" PRId32,
                    (unsigned)at, x->unit, (unsigned)x->plans, ev->year + 1, ev->plan_until, k);
    for (uint16_t j = 0; j + 1 < at; j++)
        if (strcmp(ev->lines.line[j].unit, x->unit) == 0)
            return fail(err, BUDGET_EBAD_REQUEST, "lines %u and %u are both for unit %s",
                        (unsigned)j + 1, (unsigned)at, x->unit);
    char id[BUDGET_ID_BYTES_MAX + 1];
    if (line_frame_id(ev->id, x->unit, id) == 0)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "the frame of line %u, %s:%s, would be over %d characters; use a shorter id",
                    (unsigned)at, ev->id, x->unit, BUDGET_ID_BYTES_MAX);
    if (id_get(l, id) != NULL)
        return fail(err, BUDGET_ECONFLICT, "the frame of line %u, %s, exists already", (unsigned)at,
                    id);
    rc = check_frames_fit(l, x->unit, ev->year, x->amount, err);
    return rc != 0 ? rc : check_continues(l, x->continues, ev->year, err);
}

/* A budget year with its plan years: every line must hold, or nothing is adopted. */
static int rule_adopt(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                      ledger_error *err)
{
    (void)actor_uid;
    (void)r;
    int32_t k = ev->plan_until - ev->year;
    if (k < 0 || k > BUDGET_PLAN_YEARS_MAX)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "the budget year %" PRId32 " has at most %d plan years: plan_until %" PRId32
                    " must be within %" PRId32 "..%" PRId32,
                    ev->year, BUDGET_PLAN_YEARS_MAX, ev->plan_until, ev->year,
                    ev->year + BUDGET_PLAN_YEARS_MAX);
    int rc = check_year_open(l, ev->year, err, "budget %s cannot be adopted for it", ev->id);
    if (rc != 0)
        return rc;
    for (uint16_t i = 1; i <= ev->lines.count; i++) {
        rc = rule_line(l, ev, i, k, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int rule_adjust(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                       ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->frame, LEDGER_KIND_FRAME, &r->frame, err);
    if (rc != 0)
        return rc;
    rc = check_year_open(l, frame_year(l, r->frame), err, "frame %s cannot be adjusted", ev->frame);
    if (rc != 0)
        return rc;
    const frame_rec *f = &l->frames[r->frame];
    r->unit = f->unit;
    int64_t granted = f->granted + ev->amount;
    if (granted > BUDGET_AMOUNT_MAX)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "frame %s would grow to %" PRId64 " öre, over the limit of %lld öre", ev->frame,
                    granted, BUDGET_AMOUNT_MAX);
    if (granted < f->allocated + f->pending)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "frame %s cannot fall to %" PRId64 " öre: %" PRId64
                    " öre of it is approved or pending",
                    ev->frame, granted, f->allocated + f->pending);
    if (ev->amount > 0 && l->units[f->unit].frames > INT64_MAX - ev->amount)
        return fail(err, BUDGET_ETOO_LARGE,
                    "the frames of unit %s in %" PRId32 " would exceed %" PRId64 " öre in all",
                    l->units[f->unit].unit, l->units[f->unit].year, INT64_MAX);
    return 0;
}

static int rule_propose(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                        ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->frame, LEDGER_KIND_FRAME, &r->frame, err);
    if (rc != 0)
        return rc;
    rc = check_year_open(l, frame_year(l, r->frame), err, "nothing can be allocated from frame %s",
                         ev->frame);
    if (rc != 0)
        return rc;
    const frame_rec *f = &l->frames[r->frame];
    r->unit = unit_get(l, ev->unit, l->units[f->unit].year);
    int64_t taken = f->allocated + f->pending;
    if (ev->amount > f->granted - taken)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "allocation %s of %" PRId64 " öre does not fit frame %s: %" PRId64
                    " of %" PRId64 " öre approved or pending",
                    ev->id, ev->amount, ev->frame, taken, f->granted);
    return 0;
}

static int rule_avrop(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                      ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->allocation, LEDGER_KIND_ALLOCATION, &r->allocation, err);
    if (rc != 0)
        return rc;
    const allocation_rec *a = &l->allocations[r->allocation];
    r->frame = a->frame;
    r->unit = a->unit;
    rc = check_year_open(l, frame_year(l, a->frame), err, "allocation %s cannot be called off",
                         ev->allocation);
    if (rc != 0)
        return rc;
    if (a->status != LEDGER_APPROVED)
        return fail(err, BUDGET_EINVALID_STATE,
                    "allocation %s is %s; an avrop needs an approved allocation", ev->allocation,
                    ledger_status_name((ledger_status)a->status));
    rc = check_avrop_window(l, ev, a, err);
    if (rc != 0)
        return rc;
    /* Pending reductions are reserved as pending avrop are. */
    int64_t taken = a->called_off + a->pending + a->reducing;
    if (ev->amount > a->amount - taken)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "avrop %s of %" PRId64 " öre does not fit allocation %s: %" PRId64
                    " of %" PRId64 " öre called off%s",
                    ev->id, ev->amount, ev->allocation, taken, a->amount,
                    a->reducing > 0 ? ", pending or being reduced" : " or pending");
    return 0;
}

static int rule_reduce(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                       ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->allocation, LEDGER_KIND_ALLOCATION, &r->allocation, err);
    if (rc != 0)
        return rc;
    const allocation_rec *a = &l->allocations[r->allocation];
    r->frame = a->frame;
    r->unit = a->unit;
    rc = check_year_open(l, frame_year(l, a->frame), err, "allocation %s cannot be reduced",
                         ev->allocation);
    if (rc != 0)
        return rc;
    if (a->status != LEDGER_APPROVED)
        return fail(err, BUDGET_EINVALID_STATE,
                    "allocation %s is %s; only an approved allocation can be reduced",
                    ev->allocation, ledger_status_name((ledger_status)a->status));
    int64_t room = a->amount - a->called_off - a->pending - a->reducing;
    if (ev->amount > room)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "allocation %s can be reduced by at most %s, not %s: of its %s, %s is called "
                    "off, %s is pending avrop and %s pending reductions",
                    ev->allocation, kr(room).text, kr(ev->amount).text, kr(a->amount).text,
                    kr(a->called_off).text, kr(a->pending).text, kr(a->reducing).text);
    return 0;
}

static int rule_reverse(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                        ledger_error *err)
{
    (void)actor_uid;
    int rc = find_entity(l, ev->target, LEDGER_KIND_AVROP, &r->avrop, err);
    if (rc != 0)
        return rc;
    const avrop_rec *v = &l->avrop[r->avrop];
    r->allocation = v->allocation;
    r->frame = l->allocations[v->allocation].frame;
    r->unit = l->allocations[v->allocation].unit;
    rc =
        check_year_open(l, frame_year(l, r->frame), err, "avrop %s cannot be reversed", ev->target);
    if (rc != 0)
        return rc;
    if (v->status != LEDGER_APPROVED)
        return fail(err, BUDGET_EINVALID_STATE,
                    "avrop %s is %s; only an approved avrop can be reversed", ev->target,
                    ledger_status_name((ledger_status)v->status));
    int64_t left = v->amount - v->reversed - v->reversing;
    if (ev->amount > left)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "avrop %s can be reversed by at most %s, not %s: of its %s, %s is reversed "
                    "and %s pending reversal",
                    ev->target, kr(left).text, kr(ev->amount).text, kr(v->amount).text,
                    kr(v->reversed).text, kr(v->reversing).text);
    return 0;
}

/* Fills `r` from the target `t` of a decision or a withdrawal, and its status; false when it
 * names a kind that is not decided. */
static bool find_target(const ledger *l, const id_rec *t, refs *r, ledger_status *status)
{
    const correction_rec *c = NULL;
    uint32_t avrop = NONE, allocation = NONE;
    if (t->kind == LEDGER_KIND_ALLOCATION) {
        allocation = t->index;
        r->proposer_uid = l->allocations[allocation].proposer_uid;
        r->amount = l->allocations[allocation].amount;
        *status = (ledger_status)l->allocations[allocation].status;
    } else if (t->kind == LEDGER_KIND_AVROP) {
        avrop = t->index;
    } else if (t->kind == LEDGER_KIND_REDUCTION || t->kind == LEDGER_KIND_REVERSAL) {
        c = &l->corrections[t->index];
        r->correction = t->index;
        if (t->kind == LEDGER_KIND_REDUCTION)
            allocation = c->of;
        else
            avrop = c->of;
    } else {
        return false;
    }
    if (avrop != NONE) {
        allocation = l->avrop[avrop].allocation;
        r->avrop = avrop;
        if (c == NULL) {
            r->proposer_uid = l->avrop[avrop].requester_uid;
            r->amount = l->avrop[avrop].amount;
            *status = (ledger_status)l->avrop[avrop].status;
        }
    }
    if (c != NULL) {
        r->proposer_uid = c->requester_uid;
        r->amount = c->amount;
        *status = (ledger_status)c->status;
    }
    r->allocation = allocation;
    r->frame = l->allocations[allocation].frame;
    r->unit = l->allocations[allocation].unit;
    r->target_kind = (ledger_kind)t->kind;
    return true;
}

/*
 * The limits of a correction, checked again when it is approved: the state may have moved
 * since it was requested. Its own amount is still reserved in `reducing` or `reversing`.
 */
static int recheck_correction(const ledger *l, const ledger_event *ev, const refs *r,
                              ledger_error *err)
{
    const allocation_rec *a = &l->allocations[r->allocation];
    if (r->target_kind == LEDGER_KIND_REDUCTION) {
        int64_t room = a->amount - a->called_off - a->pending - (a->reducing - r->amount);
        if (r->amount > room)
            return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                        "reduction %s of %s no longer fits allocation %s: at most %s can be "
                        "taken back now",
                        ev->target, kr(r->amount).text, id_text(l, a->id), kr(room).text);
        return 0;
    }
    const avrop_rec *v = &l->avrop[r->avrop];
    int64_t left = v->amount - v->reversed - (v->reversing - r->amount);
    if (r->amount > left || r->amount > a->called_off)
        return fail(err, BUDGET_EINSUFFICIENT_FUNDS,
                    "reversal %s of %s no longer fits avrop %s: at most %s is left to reverse",
                    ev->target, kr(r->amount).text, id_text(l, v->id), kr(left).text);
    return 0;
}

/* What proposing the target is called: an allocation is proposed, the rest requested. */
static const char *proposed(const refs *r)
{
    return r->target_kind == LEDGER_KIND_ALLOCATION ? "proposed" : "requested";
}

/* The target of a decision or a withdrawal: a pending allocation, avrop, reduction or
 * reversal. */
static int rule_target(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                       ledger_error *err)
{
    const char *verb = ev->type == LEDGER_DECISION_APPROVED   ? "approved"
                       : ev->type == LEDGER_DECISION_REJECTED ? "rejected"
                                                              : "withdrawn";
    const id_rec *t = id_get(l, ev->target);
    if (t == NULL)
        return fail(err, BUDGET_ENOT_FOUND, "target %s does not exist", ev->target);
    ledger_status status = LEDGER_PENDING;
    if (!find_target(l, t, r, &status))
        return fail(err, BUDGET_EINVALID_STATE,
                    "target %s is %s %s; only an allocation, an avrop, a reduction or a reversal "
                    "can be %s",
                    ev->target, article((ledger_kind)t->kind),
                    ledger_kind_name((ledger_kind)t->kind), verb);
    int rc = check_year_open(l, frame_year(l, r->frame), err, "%s %s cannot be %s",
                             ledger_kind_name(r->target_kind), ev->target, verb);
    if (rc != 0)
        return rc;
    if (status != LEDGER_PENDING)
        return fail(err, BUDGET_EINVALID_STATE, "%s %s is %s, not pending; it cannot be %s",
                    ledger_kind_name(r->target_kind), ev->target, ledger_status_name(status), verb);
    /* Four-eyes ("två i förening"): the identity that proposed or requested the target never
     * decides it, whatever roles it holds. ledger_apply checks it again on replay. */
    if (ev->type != LEDGER_REQUEST_WITHDRAWN && actor_uid == r->proposer_uid)
        return fail(err, BUDGET_EFORBIDDEN,
                    "%s %s was %s by uid %" PRIu32 "; it must be %s by another identity "
                    "(four-eyes)",
                    ledger_kind_name(r->target_kind), ev->target, proposed(r), r->proposer_uid,
                    verb);
    if (ev->type == LEDGER_DECISION_APPROVED && r->target_kind == LEDGER_KIND_ALLOCATION) {
        const unit_rec *u = &l->units[r->unit];
        if (u->allocated > INT64_MAX - r->amount)
            return fail(err, BUDGET_ETOO_LARGE,
                        "the allocations to unit %s in %" PRId32 " would exceed %" PRId64
                        " öre in all",
                        u->unit, u->year, INT64_MAX);
    }
    if (ev->type == LEDGER_DECISION_APPROVED && r->correction != NONE)
        return recheck_correction(l, ev, r, err);
    if (ev->type == LEDGER_REQUEST_WITHDRAWN && actor_uid != r->proposer_uid)
        return fail(err, BUDGET_EFORBIDDEN,
                    "%s %s was %s by uid %" PRIu32 "; uid %" PRIu32 " may not withdraw it",
                    ledger_kind_name(r->target_kind), ev->target, proposed(r), r->proposer_uid,
                    actor_uid);
    return 0;
}

/*
 * The register of units (registry.h; docs/events.md, "Units"). A write names only units that
 * are registered and open: check_named_units refuses any other with not_found and the nearest
 * codes. Replay does not: a stored event may come from a log written before units were
 * registered, and a unit it names that is not in the register is defined under its code
 * (define_named_units). A closed unit is never defined again, by a write or on replay.
 */

/* True when field `f` of a type is a unit the event names (given, not the one it registers). */
static bool names_unit(const event_field *f)
{
    return f->value == FIELD_UNIT && f->source != FIELD_DERIVED && !(f->flags & FIELD_NEW_UNIT);
}

/* not_found for unit `code` (field `key`), which is not in the register or is closed (`i`),
 * naming the open units nearest to it. */
static int unit_not_found(const ledger *l, const char *key, const char *code, uint32_t i,
                          ledger_error *err)
{
    uint32_t near[REGISTRY_NEAREST_MAX];
    uint32_t n = registry_nearest(l->reg, code, near);
    char hint[3 * (BUDGET_UNIT_BYTES_MAX + 4) + 32] = "";
    size_t at = 0;
    for (uint32_t k = 0; k < n; k++) {
        registry_view v;
        registry_view_of(l->reg, near[k], &v);
        const char *sep = k == 0 ? "; did you mean " : k + 1 == n ? " or " : ", ";
        at += (size_t)snprintf(hint + at, sizeof hint - at, "%s%s", sep, v.code);
    }
    if (n > 0)
        snprintf(hint + at, sizeof hint - at, "?");
    const char *what = strcmp(key, "unit") == 0 ? "unit" : key;
    return fail(err, BUDGET_ENOT_FOUND, "%s %s %s%s", what, code,
                i == REGISTRY_NONE ? "is not a registered unit" : "is closed", hint);
}

/*
 * The unit of line `at` of an adoption is registered and open, or not_found naming the nearest
 * codes. Checked on replay too: budget.adopted came after the register, so no stored adoption
 * names a unit that was not registered and open when it was written.
 */
static int check_line_unit(const ledger *l, uint16_t at, const char *code, ledger_error *err)
{
    uint32_t i = registry_find(l->reg, code);
    if (i != REGISTRY_NONE && !registry_closed(l->reg, i))
        return 0;
    char key[32];
    snprintf(key, sizeof key, "line %u: unit", (unsigned)at);
    return unit_not_found(l, key, code, i, err);
}

/* Every unit `c` names is registered and open (a write). */
static int check_named_units(const ledger *l, const ledger_cmd *c, ledger_error *err)
{
    const event_type_info *t = &event_types[c->type];
    for (uint8_t k = 0; k < t->field_count; k++) {
        const event_field *f = &t->fields[k];
        const char *code = ledger_field_str(c, f);
        if (!names_unit(f) || code[0] == '\0')
            continue;
        uint32_t i = registry_find(l->reg, code);
        if (i == REGISTRY_NONE || registry_closed(l->reg, i))
            return unit_not_found(l, f->key, code, i, err);
    }
    return 0;
}

/* A unit row's unit, when it is closed. */
static bool row_closed(const ledger *l, uint32_t row)
{
    uint32_t i = registry_find(l->reg, l->units[row].unit);
    return i != REGISTRY_NONE && registry_closed(l->reg, i);
}

/* A write that draws on a frame of a closed unit (an adjustment, a proposal out of it), or
 * calls off money of one, is refused (invalid_state): nothing moves in or out of a closed
 * unit. `r` is from check_rules. */
static int check_open_holders(const ledger *l, const ledger_cmd *c, const refs *r,
                              ledger_error *err)
{
    if ((c->type == LEDGER_FRAME_ADJUSTED || c->type == LEDGER_ALLOCATION_PROPOSED) &&
        r->frame != NONE && row_closed(l, l->frames[r->frame].unit))
        return fail(err, BUDGET_EINVALID_STATE, "frame %s is held by unit %s, which is closed",
                    c->frame, l->units[l->frames[r->frame].unit].unit);
    if (c->type == LEDGER_AVROP_REQUESTED && r->unit != NONE && row_closed(l, r->unit))
        return fail(err, BUDGET_EINVALID_STATE, "allocation %s is to unit %s, which is closed",
                    c->allocation, l->units[r->unit].unit);
    return 0;
}

/* On replay: no unit a stored event names is closed. */
static bool named_units_replay(const ledger *l, const ledger_event *ev)
{
    if (!ledger_type_known(ev->type))
        return false;
    const event_type_info *t = &event_types[ev->type];
    for (uint8_t k = 0; k < t->field_count; k++) {
        const event_field *f = &t->fields[k];
        const char *code = ledger_field_str(ev, f);
        if (!names_unit(f) || code[0] == '\0')
            continue;
        uint32_t i = registry_find(l->reg, code);
        if (i != REGISTRY_NONE && registry_closed(l->reg, i))
            return false;
    }
    return true;
}

/* Defines under its code each unit `ev` names that is not in the register: only a stored
 * event of an old log can name one (a write is checked), and a type names at most one such
 * unit (a parent or the unit renamed or closed must be registered), for which room was
 * reserved. */
static void define_named_units(ledger *l, const ledger_event *ev)
{
    const event_type_info *t = &event_types[ev->type];
    for (uint8_t k = 0; k < t->field_count; k++) {
        const event_field *f = &t->fields[k];
        const char *code = ledger_field_str(ev, f);
        if (names_unit(f) && code[0] != '\0' && registry_find(l->reg, code) == REGISTRY_NONE)
            registry_define(l->reg, code);
    }
}

/* The register and open unit `code`, or not_found. */
static int find_open_unit(const ledger *l, const char *code, uint32_t *i, ledger_error *err)
{
    *i = registry_find(l->reg, code);
    if (*i == REGISTRY_NONE || registry_closed(l->reg, *i))
        return unit_not_found(l, "unit", code, *i, err);
    return 0;
}

static int rule_register_unit(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                              ledger_error *err)
{
    (void)actor_uid;
    (void)r;
    if (registry_kind_from_name(ev->unit_kind) == 0)
        return fail(err, BUDGET_EBAD_REQUEST, "\"%s\" is not a kind of unit: the kinds are %s",
                    ev->unit_kind, registry_kinds_text());
    uint32_t i = registry_find(l->reg, ev->unit);
    if (i != REGISTRY_NONE && registry_closed(l->reg, i))
        return fail(err, BUDGET_ECONFLICT,
                    "unit %s was closed; the code of a closed unit is "
                    "not used again",
                    ev->unit);
    if (i != REGISTRY_NONE && registry_registered(l->reg, i)) {
        registry_view v;
        registry_view_of(l->reg, i, &v);
        return fail(err, BUDGET_ECONFLICT, "unit %s is registered already, as %.120s", ev->unit,
                    v.name);
    }
    if (ev->parent[0] == '\0')
        return 0;
    uint32_t p;
    int rc = find_open_unit(l, ev->parent, &p, err);
    if (rc != 0)
        return rc;
    /* A unit that is in the register without a name (an old log's) may be given a parent:
     * never one under it. The chain of parents is bounded by the number of units. */
    for (uint32_t k = p, steps = 0; k != REGISTRY_NONE && steps <= registry_count(l->reg);
         k = registry_parent(l->reg, k), steps++)
        if (k == i)
            return fail(err, BUDGET_EINVALID_STATE, "unit %s cannot be under %s, which is %s",
                        ev->unit, ev->parent, p == i ? "itself" : "under it");
    return 0;
}

static int rule_rename_unit(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                            ledger_error *err)
{
    (void)actor_uid;
    (void)r;
    uint32_t i;
    int rc = find_open_unit(l, ev->unit, &i, err);
    if (rc != 0)
        return rc;
    registry_view v;
    registry_view_of(l->reg, i, &v);
    if (strcmp(v.name, ev->title) == 0)
        return fail(err, BUDGET_EINVALID_STATE, "unit %s is named %.120s already", ev->unit,
                    v.name);
    if (registry_names(l->reg, i) >= REGISTRY_NAMES_MAX)
        return fail(err, BUDGET_EINVALID_STATE, "unit %s has had %u names, the most a unit has",
                    ev->unit, REGISTRY_NAMES_MAX);
    return 0;
}

/* What keeps a unit open, one item after another into a message. */
typedef struct {
    /* Room is left for "unit CODE cannot be closed: " before it. */
    char text[sizeof(((ledger_error *)0)->message) - 60];
    size_t len;
    uint32_t items, shown;
} open_list;

__attribute__((format(printf, 2, 3))) static void open_item(open_list *o, const char *fmt, ...)
{
    char item[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(item, sizeof item, fmt, ap);
    va_end(ap);
    o->items++;
    /* Room is kept for "; and N more". */
    if (o->len + strlen(item) + 2 + 16 >= sizeof o->text)
        return;
    o->len += (size_t)snprintf(o->text + o->len, sizeof o->text - o->len, "%s%s",
                               o->shown == 0 ? "" : "; ", item);
    o->shown++;
}

/* The money of unit `code` that is left or pending: its frames, the allocations to it, its
 * totals per year. O(frames + allocations + unit rows). */
static void open_money(const ledger *l, const char *code, open_list *o)
{
    for (uint32_t k = 0; k < l->frames_len; k++) {
        const frame_rec *f = &l->frames[k];
        int64_t left = f->granted - f->allocated - f->pending;
        if (closing_of(l, l->units[f->unit].year) != NULL)
            continue; /* what a closed year kept is its unspent money, which nothing moves */
        if (strcmp(l->units[f->unit].unit, code) == 0 && (left != 0 || f->pending != 0))
            open_item(o, "frame %s has %" PRId64 " öre unallocated, %" PRId64 " öre pending",
                      id_text(l, f->id), left, f->pending);
    }
    for (uint32_t k = 0; k < l->allocations_len; k++) {
        const allocation_rec *a = &l->allocations[k];
        if (a->status == LEDGER_PENDING && strcmp(l->units[a->unit].unit, code) == 0)
            open_item(o, "allocation %s is pending", id_text(l, a->id));
    }
    for (uint32_t k = 0; k < l->units_len; k++) {
        const unit_rec *u = &l->units[k];
        int64_t available = u->allocated - u->called_off - u->pending;
        if (closing_of(l, u->year) != NULL)
            continue;
        if (strcmp(u->unit, code) == 0 && (available != 0 || u->pending != 0))
            open_item(o, "%" PRId32 ": %" PRId64 " öre to call off, %" PRId64 " öre pending",
                      u->year, available, u->pending);
    }
}

static int rule_close_unit(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                           ledger_error *err)
{
    (void)actor_uid;
    (void)r;
    uint32_t i;
    int rc = find_open_unit(l, ev->unit, &i, err);
    if (rc != 0)
        return rc;
    open_list o = {.len = 0};
    o.text[0] = '\0';
    open_money(l, ev->unit, &o);
    for (uint32_t k = 0; k < registry_count(l->reg); k++)
        if (registry_parent(l->reg, k) == i && !registry_closed(l->reg, k)) {
            registry_view v;
            registry_view_of(l->reg, k, &v);
            open_item(&o, "unit %s under it is open", v.code);
        }
    if (o.items == 0)
        return 0;
    if (o.shown < o.items)
        snprintf(o.text + o.len, sizeof o.text - o.len, "; and %" PRIu32 " more",
                 o.items - o.shown);
    return fail(err, BUDGET_EINVALID_STATE, "unit %s cannot be closed: %s", ev->unit, o.text);
}

/*
 * Outcome (utfall, docs/events.md "Outcome"): the figure of a key (unit, year, month,
 * allocation) replaces the one before. A figure equal to the current one is refused
 * (conflict, "unchanged"): recording it again would change nothing, so a file imported twice,
 * by one clerk or by two at once, writes its figures once. The allocation, when given, is one
 * to the unit in that year. The unit's month and year stay within OUTCOME_TOTAL_MAX.
 */
static int rule_record_outcome(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                               ledger_error *err)
{
    (void)actor_uid;
    (void)r;
    if (ev->allocation[0] != '\0') {
        uint32_t i;
        int rc = find_entity(l, ev->allocation, LEDGER_KIND_ALLOCATION, &i, err);
        if (rc != 0)
            return rc;
        const unit_rec *u = &l->units[l->allocations[i].unit];
        if (strcmp(u->unit, ev->unit) != 0 || u->year != ev->year)
            return fail(err, BUDGET_EINVALID_STATE,
                        "allocation %s is to %s for %" PRId32 ", not to %s for %" PRId32,
                        ev->allocation, u->unit, u->year, ev->unit, ev->year);
    }
    outcome_figure_view now = {.amount = 0};
    bool had = outcome_figure(l->outcomes, ev->unit, ev->year, ev->month, ev->allocation, &now);
    if (now.amount == ev->amount)
        return fail(err, BUDGET_ECONFLICT,
                    "unchanged: the outcome of %s %04" PRId32 "-%02" PRId32 "%s%s is %s %s",
                    ev->unit, ev->year, ev->month, ev->allocation[0] ? " allocation " : "",
                    ev->allocation, had ? "already" : "without a figure, that is",
                    kr(ev->amount).text);
    outcome_year_view y = {.total = 0};
    outcome_year(l->outcomes, ev->unit, ev->year, &y);
    int64_t change = ev->amount - now.amount;
    int64_t month = y.months[ev->month - 1] + change, year = y.total + change;
    if (month > OUTCOME_TOTAL_MAX || month < -OUTCOME_TOTAL_MAX || year > OUTCOME_TOTAL_MAX ||
        year < -OUTCOME_TOTAL_MAX)
        return fail(err, BUDGET_ETOO_LARGE,
                    "the outcome of %s in %" PRId32 " would pass %lld öre for a month or the year",
                    ev->unit, ev->year, OUTCOME_TOTAL_MAX);
    return 0;
}

/* The rules of each type: rule_<rules> of its row. */
typedef int (*rule_fn)(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                       ledger_error *err);
static const rule_fn type_rules[LEDGER_TYPE_END] = {
#define TYPE_RULE(name, wire, op, role, kind, fields, rules, scope) [LEDGER_##name] = rule_##rules,
    LEDGER_EVENT_TYPES(TYPE_RULE)
#undef TYPE_RULE
};

/*
 * Checks the rules of the budget for `ev` (its client-given fields, already of valid syntax)
 * by `actor_uid`, and finds what it refers to. Whether its id is new is checked apart. Does
 * not change the state. 0 or a negative budget_err, with `err` filled when not NULL.
 */
static int check_rules(const ledger *l, const ledger_event *ev, uint32_t actor_uid, refs *r,
                       ledger_error *err)
{
    *r = (refs){.frame = NONE,
                .allocation = NONE,
                .avrop = NONE,
                .correction = NONE,
                .unit = NONE,
                .target_kind = 0,
                .proposer_uid = 0,
                .amount = 0};
    if (!ledger_type_known(ev->type))
        return fail(err, BUDGET_EBAD_REQUEST, "unknown event type %d", (int)ev->type);
    return type_rules[ev->type](l, ev, actor_uid, r, err);
}

/*
 * The value of a field that ledger_check derives from the state, for an event that refers to
 * `r` (check_rules found it): a str into *s, an int into *v. A derived id is the frame the
 * event draws on, or the allocation; a unit, the unit row the event changes; a year, the frame's;
 * an amount, the target's; a target_kind, the target's kind.
 */
static void derive_field(const ledger *l, const refs *r, const event_field *f, const char **s,
                         int64_t *v)
{
    switch ((field_value)f->value) {
    case FIELD_ID:
        if (f->offset == offsetof(ledger_event, allocation)) {
            assert(r->allocation != NONE);
            *s = id_text(l, l->allocations[r->allocation].id);
            return;
        }
        assert(f->offset == offsetof(ledger_event, frame) && r->frame != NONE);
        *s = id_text(l, l->frames[r->frame].id);
        return;
    case FIELD_UNIT:
        assert(r->unit != NONE);
        *s = l->units[r->unit].unit;
        return;
    case FIELD_YEAR:
        assert(r->frame != NONE);
        *v = l->units[l->frames[r->frame].unit].year;
        return;
    case FIELD_AMOUNT:
        *v = r->amount;
        return;
    case FIELD_TARGET_KIND:
        *v = r->target_kind;
        return;
    case FIELD_TOTAL:
        *v = r->amount;
        return;
    case FIELD_DELTA:
    case FIELD_TEXT:
    case FIELD_DATE:
    case FIELD_BODY:
    case FIELD_PARAGRAPH:
    case FIELD_LINES:
    case FIELD_MONTH:
    case FIELD_MONEY:
        break;
    }
    assert(!"a field of this value is never derived");
    *s = "";
}

/* Fills the derived fields of `out` (of a type with a row) from the state. */
static void put_derived(const ledger *l, const refs *r, ledger_event *out)
{
    const event_type_info *t = &event_types[out->type];
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        if (f->source != FIELD_DERIVED)
            continue;
        const char *s = NULL;
        int64_t v = 0;
        derive_field(l, r, f, &s, &v);
        if (field_is_str(f))
            memcpy((char *)out + f->offset, s, strlen(s) + 1);
        else
            ledger_field_set_int(out, f, v);
    }
}

/* True when the derived fields stored in `ev` are those the state gives. */
static bool derived_match(const ledger *l, const refs *r, const ledger_event *ev)
{
    const event_type_info *t = &event_types[ev->type];
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        if (f->source != FIELD_DERIVED)
            continue;
        const char *s = NULL;
        int64_t v = 0;
        derive_field(l, r, f, &s, &v);
        if (field_is_str(f) ? strncmp(ledger_field_str(ev, f), s, f->size) != 0
                            : ledger_field_int(ev, f) != v)
            return false;
    }
    return true;
}

/* Copies the client-given fields of `c`'s type from `c` to `out`. */
static void copy_given(ledger_event *out, const ledger_cmd *c)
{
    const event_type_info *t = &event_types[c->type];
    for (uint8_t i = 0; i < t->field_count; i++) {
        const event_field *f = &t->fields[i];
        if (f->source != FIELD_DERIVED)
            memcpy((char *)out + f->offset, (const char *)c + f->offset, f->size);
    }
}

/* ---- the index of balances' lists ----------------------------------------------------------- */

static int ix_room(ix_list *x)
{
    return reserve((void **)&x->items, &x->cap, x->len, 1, sizeof *x->items);
}

static void ix_push(ix_list *x, uint32_t v)
{
    assert(x->len < x->cap);
    x->items[x->len++] = v;
}

/* The group of `year`, made when missing; NONE when out of memory. Years are few (at most
 * BUDGET_YEAR_MAX - BUDGET_YEAR_MIN + 1), so they are looked up in order. */
static uint32_t ix_year_group(ledger_index *ix, int32_t year)
{
    for (uint32_t g = 0; g < ix->years_len; g++)
        if (ix->years[g].year == year)
            return g;
    if (reserve((void **)&ix->years, &ix->years_cap, ix->years_len, 1, sizeof *ix->years) != 0)
        return NONE;
    ix->years[ix->years_len] = (ix_group){.year = year};
    return ix->years_len++;
}

/* The group of the code of unit `reg_unit` of the register, made when missing; NONE when out
 * of memory. */
static uint32_t ix_code_group(ledger_index *ix, uint32_t reg_unit)
{
    if (reg_unit >= ix->reg_len) {
        if (reserve((void **)&ix->reg_code, &ix->reg_cap, ix->reg_len, reg_unit + 1 - ix->reg_len,
                    sizeof *ix->reg_code) != 0)
            return NONE;
        while (ix->reg_len <= reg_unit)
            ix->reg_code[ix->reg_len++] = NONE;
    }
    if (ix->reg_code[reg_unit] != NONE)
        return ix->reg_code[reg_unit];
    if (reserve((void **)&ix->codes, &ix->codes_cap, ix->codes_len, 1, sizeof *ix->codes) != 0)
        return NONE;
    ix->codes[ix->codes_len] = (ix_group){.year = 0};
    ix->reg_code[reg_unit] = ix->codes_len;
    return ix->codes_len++;
}

/* Indexes unit row `k`. 0, or -1 (out of memory, or a code not in the register, which every
 * row's is: ledger_apply defines it first). Each ix_add_* changes the index only once nothing
 * can fail, so a failed one is tried again whole by the next ix_catch_up. */
static int ix_add_row(ledger *l, uint32_t k)
{
    ledger_index *ix = &l->ix;
    const unit_rec *u = &l->units[k];
    uint32_t reg_unit = registry_find(l->reg, u->unit);
    if (reg_unit == REGISTRY_NONE)
        return -1;
    uint32_t code = ix_code_group(ix, reg_unit);
    uint32_t year = ix_year_group(ix, u->year);
    if (code == NONE || year == NONE ||
        reserve((void **)&ix->rows, &ix->rows_cap, ix->rows_len, 1, sizeof *ix->rows) != 0 ||
        ix_room(&ix->codes[code].rows) != 0 || ix_room(&ix->years[year].rows) != 0)
        return -1;
    ix->rows[ix->rows_len++] = (ix_row){.code = code, .year = year};
    ix_push(&ix->codes[code].rows, k);
    ix_push(&ix->years[year].rows, k);
    return 0;
}

static uint32_t next_in_frame(const ledger *l, uint32_t allocation)
{
    return l->allocations[allocation].next_in_frame;
}

static uint32_t next_in_allocation(const ledger *l, uint32_t avrop)
{
    return l->avrop[avrop].next_in_allocation;
}

/* Makes room for child `child` of a parent whose `kids` (IX_LINKED_MAX) are linked from
 * `first` by `next`: when it is the IX_LINKED_MAX-th, the children before it are listed. */
static int ix_kid_room(ledger *l, uint32_t *kids, uint32_t first, uint32_t child,
                       uint32_t (*next)(const ledger *, uint32_t))
{
    ledger_index *ix = &l->ix;
    if (*kids & IX_LISTED)
        return ix_room(&ix->long_lists[*kids & ~IX_LISTED]);
    if (*kids + 1 < IX_LINKED_MAX)
        return 0;
    ix_list x = {0};
    if (reserve((void **)&ix->long_lists, &ix->long_cap, ix->long_len, 1, sizeof *ix->long_lists) !=
            0 ||
        reserve((void **)&x.items, &x.cap, 0, IX_LINKED_MAX, sizeof *x.items) != 0)
        return -1;
    for (uint32_t k = first; k != NONE && k < child; k = next(l, k))
        x.items[x.len++] = k;
    assert(x.len == *kids);
    ix->long_lists[ix->long_len] = x;
    *kids = IX_LISTED | ix->long_len++;
    return 0;
}

static void ix_kid_push(ledger_index *ix, uint32_t *kids, uint32_t child)
{
    if (*kids & IX_LISTED)
        ix_push(&ix->long_lists[*kids & ~IX_LISTED], child);
    else
        (*kids)++;
}

/* Indexes an entity `k` of unit row `row` in the row's, its code's and its year's lists of
 * frames (`allocations` false) or allocations; its own `kids` start at 0. */
static int ix_add_to_row(ledger_index *ix, uint32_t row, bool allocations, uint32_t **kids,
                         uint32_t *kids_len, uint32_t *kids_cap, uint32_t k)
{
    ix_row *r = &ix->rows[row];
    ix_group *code = &ix->codes[r->code], *year = &ix->years[r->year];
    ix_list *lists[3] = {allocations ? &r->allocations : &r->frames,
                         allocations ? &code->allocations : &code->frames,
                         allocations ? &year->allocations : &year->frames};
    if (reserve((void **)kids, kids_cap, *kids_len, 1, sizeof **kids) != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (ix_room(lists[i]) != 0)
            return -1;
    (*kids)[(*kids_len)++] = 0;
    for (int i = 0; i < 3; i++)
        ix_push(lists[i], k);
    return 0;
}

static int ix_add_allocation(ledger *l, uint32_t k)
{
    ledger_index *ix = &l->ix;
    const allocation_rec *a = &l->allocations[k];
    /* Room in the new allocation's own count first: it may move the frame counts' array. */
    if (reserve((void **)&ix->allocation_kids, &ix->allocations_cap, ix->allocations_len, 1,
                sizeof *ix->allocation_kids) != 0 ||
        ix_kid_room(l, &ix->frame_kids[a->frame], l->frames[a->frame].allocation_first, k,
                    next_in_frame) != 0 ||
        ix_add_to_row(ix, a->unit, true, &ix->allocation_kids, &ix->allocations_len,
                      &ix->allocations_cap, k) != 0)
        return -1;
    ix_kid_push(ix, &ix->frame_kids[a->frame], k);
    return 0;
}

static int ix_add_avrop(ledger *l, uint32_t k)
{
    ledger_index *ix = &l->ix;
    uint32_t a = l->avrop[k].allocation;
    if (ix_kid_room(l, &ix->allocation_kids[a], l->allocations[a].avrop_first, k,
                    next_in_allocation) != 0)
        return -1;
    ix_kid_push(ix, &ix->allocation_kids[a], k);
    ix->avrop_len++;
    return 0;
}

/* Indexes what was made since the last call, in order: rows, frames, allocations, avrop. Out
 * of memory it stops where it is; the index is then behind (ix_current is false) until a later
 * call catches up, and the lists are walked as before. */
static bool ix_catch_up_to_avrop(ledger *l)
{
    ledger_index *ix = &l->ix;
    while (ix->rows_len < l->units_len)
        if (ix_add_row(l, ix->rows_len) != 0)
            return false;
    while (ix->frames_len < l->frames_len)
        if (ix_add_to_row(ix, l->frames[ix->frames_len].unit, false, &ix->frame_kids,
                          &ix->frames_len, &ix->frames_cap, ix->frames_len) != 0)
            return false;
    while (ix->allocations_len < l->allocations_len)
        if (ix_add_allocation(l, ix->allocations_len) != 0)
            return false;
    return true;
}

static void ix_catch_up(ledger *l)
{
    ledger_index *ix = &l->ix;
    if (!ix_catch_up_to_avrop(l))
        return;
    while (ix->avrop_len < l->avrop_len)
        if (ix_add_avrop(l, ix->avrop_len) != 0)
            return;
}

/*
 * Indexes every avrop at once, when none is yet and every allocation is (a ledger just loaded):
 * the same lists ix_add_avrop makes one avrop at a time, but each allocation's avrop counted
 * first, so that each long list is allocated once at its length, not grown as it fills and
 * made by walking the first IX_LINKED_MAX - 1 links. Only the long lists' numbers differ from
 * theirs, and nothing depends on those. 0, or -1 out of memory (the index is then as before).
 */
static int ix_add_all_avrop(ledger *l)
{
    ledger_index *ix = &l->ix;
    uint32_t *kids = ix->allocation_kids, long_before = ix->long_len, listed = 0;
    if (ix->avrop_len != 0 || ix->allocations_len != l->allocations_len)
        return -1;
    for (uint32_t k = 0; k < l->avrop_len; k++)
        kids[l->avrop[k].allocation]++;
    for (uint32_t a = 0; a < l->allocations_len; a++)
        listed += kids[a] >= IX_LINKED_MAX;
    bool failed = reserve((void **)&ix->long_lists, &ix->long_cap, ix->long_len, listed,
                          sizeof *ix->long_lists) != 0;
    for (uint32_t a = 0; a < l->allocations_len && !failed; a++) {
        if (kids[a] < IX_LINKED_MAX)
            continue;
        ix_list x = {.items = malloc((size_t)kids[a] * sizeof *x.items), .cap = kids[a]};
        failed = x.items == NULL;
        if (!failed) {
            ix->long_lists[ix->long_len] = x;
            kids[a] = IX_LISTED | ix->long_len++;
        }
    }
    if (failed) {
        while (ix->long_len > long_before)
            free(ix->long_lists[--ix->long_len].items);
        memset(kids, 0, (size_t)l->allocations_len * sizeof *kids);
        return -1;
    }
    for (uint32_t k = 0; k < l->avrop_len; k++) {
        uint32_t a = l->avrop[k].allocation;
        if (kids[a] & IX_LISTED)
            ix_push(&ix->long_lists[kids[a] & ~IX_LISTED], k);
    }
    ix->avrop_len = l->avrop_len;
    return 0;
}

static bool ix_current(const ledger *l)
{
    const ledger_index *ix = &l->ix;
    return ix->rows_len == l->units_len && ix->frames_len == l->frames_len &&
           ix->allocations_len == l->allocations_len && ix->avrop_len == l->avrop_len;
}

static void ix_groups_free(ix_group *g, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        bigmem_free(g[i].rows.items);
        bigmem_free(g[i].frames.items);
        bigmem_free(g[i].allocations.items);
    }
    free(g);
}

static void ix_free(ledger_index *ix)
{
    for (uint32_t i = 0; i < ix->rows_len; i++) {
        bigmem_free(ix->rows[i].frames.items);
        bigmem_free(ix->rows[i].allocations.items);
    }
    bigmem_free(ix->rows);
    ix_groups_free(ix->codes, ix->codes_len);
    ix_groups_free(ix->years, ix->years_len);
    for (uint32_t i = 0; i < ix->long_len; i++)
        bigmem_free(ix->long_lists[i].items);
    bigmem_free(ix->long_lists);
    bigmem_free(ix->reg_code);
    bigmem_free(ix->frame_kids);
    bigmem_free(ix->allocation_kids);
}

/* A copy of `n` items of `size` bytes, with room for `cap`; false when out of memory. */
static bool ix_copy(void **to, const void *from, size_t n, size_t cap, size_t size)
{
    *to = NULL;
    if (cap == 0)
        return true;
    *to = bigmem_malloc(cap * size);
    if (*to != NULL && n > 0)
        memcpy(*to, from, n * size);
    return *to != NULL;
}

static bool ix_list_copy(ix_list *to, const ix_list *from)
{
    *to = *from;
    return ix_copy((void **)&to->items, from->items, from->len, from->cap, sizeof *from->items);
}

/* Copies `len` groups into `*to` (of room `cap`), their lists too. On failure `*to` holds
 * `*done` whole groups, to be freed. */
static bool ix_groups_copy(ix_group **to, uint32_t *done, const ix_group *from, uint32_t len,
                           uint32_t cap)
{
    *done = 0;
    if (!ix_copy((void **)to, NULL, 0, cap, sizeof **to))
        return false;
    for (; *done < len; (*done)++) {
        ix_group *g = &(*to)[*done];
        const ix_group *f = &from[*done];
        g->year = f->year;
        g->frames.items = g->allocations.items = NULL;
        if (!ix_list_copy(&g->rows, &f->rows) || !ix_list_copy(&g->frames, &f->frames) ||
            !ix_list_copy(&g->allocations, &f->allocations)) {
            free(g->rows.items);
            free(g->frames.items);
            return false;
        }
    }
    return true;
}

/* A deep copy of `ix` into `c`; false when out of memory, with `c` left to ix_free. */
static bool ix_clone(ledger_index *c, const ledger_index *ix)
{
    *c = *ix;
    c->rows = NULL;
    c->codes = c->years = NULL;
    c->long_lists = NULL;
    c->reg_code = c->frame_kids = c->allocation_kids = NULL;
    c->rows_len = c->codes_len = c->years_len = c->long_len = 0;
    const size_t u32 = sizeof(uint32_t);
    if (!ix_copy((void **)&c->reg_code, ix->reg_code, ix->reg_len, ix->reg_cap, u32) ||
        !ix_copy((void **)&c->frame_kids, ix->frame_kids, ix->frames_len, ix->frames_cap, u32) ||
        !ix_copy((void **)&c->allocation_kids, ix->allocation_kids, ix->allocations_len,
                 ix->allocations_cap, u32) ||
        !ix_groups_copy(&c->codes, &c->codes_len, ix->codes, ix->codes_len, ix->codes_cap) ||
        !ix_groups_copy(&c->years, &c->years_len, ix->years, ix->years_len, ix->years_cap) ||
        !ix_copy((void **)&c->rows, NULL, 0, ix->rows_cap, sizeof *c->rows) ||
        !ix_copy((void **)&c->long_lists, NULL, 0, ix->long_cap, sizeof *c->long_lists))
        return false;
    for (; c->rows_len < ix->rows_len; c->rows_len++) {
        ix_row *r = &c->rows[c->rows_len];
        *r = ix->rows[c->rows_len];
        r->allocations.items = NULL;
        if (!ix_list_copy(&r->frames, &ix->rows[c->rows_len].frames) ||
            !ix_list_copy(&r->allocations, &ix->rows[c->rows_len].allocations)) {
            free(r->frames.items);
            return false;
        }
    }
    for (; c->long_len < ix->long_len; c->long_len++)
        if (!ix_list_copy(&c->long_lists[c->long_len], &ix->long_lists[c->long_len]))
            return false;
    return true;
}

/* ---- public: life cycle ---------------------------------------------------------------- */

ledger *ledger_new(void)
{
    ledger *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    if (table_init(&l->id_table, TABLE_SLOTS_MIN) != 0)
        goto failed_id_table;
    if (table_init(&l->unit_table, TABLE_SLOTS_MIN) != 0)
        goto failed_unit_table;
    l->arena_cap = 4096;
    l->arena = malloc(l->arena_cap);
    if (l->arena == NULL)
        goto failed_arena;
    l->arena[0] = '\0'; /* offset 0: the empty string */
    l->arena_len = 1;
    l->reg = registry_new();
    if (l->reg == NULL)
        goto failed_registry;
    l->outcomes = outcome_new();
    if (l->outcomes == NULL)
        goto failed_outcomes;
    return l;

failed_outcomes:
    registry_free(l->reg);
failed_registry:
    free(l->arena);
failed_arena:
    free(l->unit_table.ctrl);
failed_unit_table:
    free(l->id_table.ctrl);
failed_id_table:
    free(l);
    return NULL;
}

void ledger_free(ledger *l)
{
    if (l == NULL)
        return;
    bigmem_free(l->closings);
    ix_free(&l->ix);
    outcome_free(l->outcomes);
    registry_free(l->reg);
    bigmem_free(l->arena);
    bigmem_free(l->unit_table.ctrl);
    bigmem_free(l->units);
    bigmem_free(l->corrections);
    bigmem_free(l->avrop);
    bigmem_free(l->allocations);
    bigmem_free(l->frames);
    bigmem_free(l->id_table.ctrl);
    bigmem_free(l->ids);
    free(l);
}

/* A copy of `count` items of `size` bytes with room for `cap`; NULL also when cap is 0. */
static void *copy_array(const void *items, size_t count, size_t cap, size_t size, bool *failed)
{
    if (cap == 0)
        return NULL;
    void *p = bigmem_malloc(cap * size);
    if (p == NULL) {
        *failed = true;
        return NULL;
    }
    if (count > 0)
        memcpy(p, items, count * size);
    return p;
}

ledger *ledger_clone(const ledger *l)
{
    ledger *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    *c = *l;
    bool failed = false;
    c->ids = copy_array(l->ids, l->ids_len, l->ids_cap, sizeof *l->ids, &failed);
    c->id_table.ctrl = copy_array(l->id_table.ctrl, table_block_bytes(&l->id_table),
                                  table_block_bytes(&l->id_table), 1, &failed);
    c->frames = copy_array(l->frames, l->frames_len, l->frames_cap, sizeof *l->frames, &failed);
    c->allocations = copy_array(l->allocations, l->allocations_len, l->allocations_cap,
                                sizeof *l->allocations, &failed);
    c->avrop = copy_array(l->avrop, l->avrop_len, l->avrop_cap, sizeof *l->avrop, &failed);
    c->corrections = copy_array(l->corrections, l->corrections_len, l->corrections_cap,
                                sizeof *l->corrections, &failed);
    c->units = copy_array(l->units, l->units_len, l->units_cap, sizeof *l->units, &failed);
    c->unit_table.ctrl = copy_array(l->unit_table.ctrl, table_block_bytes(&l->unit_table),
                                    table_block_bytes(&l->unit_table), 1, &failed);
    c->arena = copy_array(l->arena, l->arena_len, l->arena_cap, 1, &failed);
    c->closings =
        copy_array(l->closings, l->closings_len, l->closings_cap, sizeof *l->closings, &failed);
    c->reg = registry_clone(l->reg);
    if (c->reg == NULL)
        failed = true;
    if (!ix_clone(&c->ix, &l->ix))
        failed = true;
    c->outcomes = outcome_clone(l->outcomes);
    if (c->outcomes == NULL)
        failed = true;
    if (failed) {
        ledger_free(c);
        return NULL;
    }
    c->id_table.refs = (uint32_t *)(void *)(c->id_table.ctrl + c->id_table.mask + 1);
    c->unit_table.refs = (uint32_t *)(void *)(c->unit_table.ctrl + c->unit_table.mask + 1);
    return c;
}

/* An event that ledger_apply_decided leaves out: only the head moves. */
static int skip_event(ledger *l, const ledger_event *ev)
{
    l->last_seq = ev->seq;
    l->last_ts_ms = ev->ts_ms;
    return 0;
}

/* ---- public: check and apply ------------------------------------------------------------ */

/*
 * True when frame `f` is what grant `cmd` would make again: the same unit, year, amount as
 * granted, and decision. The one place that says what makes two grants the same.
 */
static bool same_grant(const ledger *l, const frame_rec *f, const ledger_cmd *cmd)
{
    const unit_rec *u = &l->units[f->unit];
    return u->year == cmd->year && strcmp(u->unit, cmd->unit) == 0 &&
           f->grant_amount == cmd->amount && strcmp(text(l, f->reference), cmd->reference) == 0 &&
           f->decision_date == cmd->decision_date &&
           strcmp(f->decision_body, cmd->decision_body) == 0 &&
           strcmp(f->decision_paragraph, cmd->decision_paragraph) == 0;
}

/*
 * A rule of writes only, never of replay (a log may hold grants made before it): a grant like
 * an existing frame is refused as a likely duplicate unless the client says it is intended.
 * O(frames granted to the unit in that year).
 */
static int check_duplicate_grant(const ledger *l, const ledger_cmd *cmd, ledger_error *err)
{
    if (cmd->type != LEDGER_FRAME_GRANTED || cmd->intended)
        return 0;
    uint32_t row = unit_get(l, cmd->unit, cmd->year);
    for (uint32_t i = row == NONE ? NONE : l->units[row].frame_last; i != NONE;
         i = l->frames[i].prev_in_unit) {
        if (same_grant(l, &l->frames[i], cmd))
            return fail(err, BUDGET_ECONFLICT,
                        "frame %s already grants %s to %s for %" PRId32
                        " by the same decision; pass intended: true if a second frame is meant",
                        id_text(l, l->frames[i].id), kr(cmd->amount).text, cmd->unit, cmd->year);
    }
    return 0;
}

int ledger_check(const ledger *l, const ledger_cmd *cmd, const ledger_actor *actor,
                 ledger_event *out, uint64_t *existing_seq, ledger_error *err)
{
    assert(l != NULL && cmd != NULL && actor != NULL);
    ledger_error scratch;
    if (err == NULL)
        err = &scratch;
    err->code = 0;
    err->message[0] = '\0';

    int rc = check_syntax(cmd, true, err);
    if (rc != 0)
        return rc;
    const id_rec *existing = id_get(l, cmd->id);
    if (existing != NULL) {
        if (existing_seq != NULL)
            *existing_seq = rec_seq(existing);
        return 1;
    }
    rc = check_named_units(l, cmd, err);
    if (rc != 0)
        return rc;
    refs r;
    rc = check_rules(l, cmd, actor->uid, &r, err);
    if (rc == 0)
        rc = check_open_holders(l, cmd, &r, err);
    if (rc == 0)
        rc = check_duplicate_grant(l, cmd, err);
    if (rc != 0)
        return rc;
    if (out == NULL)
        return 0;

    ledger_event_clear(out);
    out->type = cmd->type;
    out->ts_ms = cmd->ts_ms;
    out->actor = *actor;
    out->actor.name[BUDGET_NAME_BYTES_MAX] = '\0';
    copy_given(out, cmd);
    put_derived(l, &r, out);
    return 0;
}

/* Makes the id `text` (of `len` bytes, `hash`, to go in slot `at`) of `kind`, made by the
 * event `seq`: its record and the count of its kind. Returns its index in ids. Room was
 * reserved. */
static uint32_t add_id_of(ledger *l, const char *text, size_t len, uint32_t hash, uint32_t at,
                          ledger_kind kind, uint64_t seq)
{
    uint32_t id = l->ids_len++;
    id_rec *rec = &l->ids[id];
    rec->hash = hash;
    rec->text = arena_put(l, text, len);
    rec->len = (uint8_t)len;
    rec->kind = (uint8_t)kind;
    rec->seq_low = (uint32_t)seq;
    rec->seq_high = (uint16_t)(seq >> 32);
    rec->index = NONE;
    table_put(&l->id_table, at, hash, id);
    l->ids_of_kind[kind]++;
    return id;
}

/* Makes the id of `ev`, of its type's kind (see add_id_of). */
static uint32_t add_id(ledger *l, const ledger_event *ev, size_t len, uint32_t hash, uint32_t at)
{
    return add_id_of(l, ev->id, len, hash, at, event_types[ev->type].creates, ev->seq);
}

/*
 * Makes room for whatever applying `ev` may add: an id, its texts, an entity of each kind that
 * carries balances and a unit row; and for a budget adoption a frame id, a frame and unit rows
 * for each line and its plan years. 0 or -1. When there is room, as almost always, this is a
 * few comparisons.
 */
static int reserve_room(ledger *l, const ledger_event *ev)
{
    uint32_t lines = 0, plan_rows = 0;
    if (ev->type == LEDGER_BUDGET_ADOPTED && ev->lines.count <= BUDGET_ADOPT_LINES_MAX) {
        int32_t k = ev->plan_until - ev->year;
        lines = ev->lines.count;
        plan_rows = k > 0 && k <= BUDGET_PLAN_YEARS_MAX ? lines * (uint32_t)k : 0;
    }
    uint32_t arena_need = ARENA_EVENT_BYTES_MAX + lines * (BUDGET_ID_BYTES_MAX + 1);
    if (reserve((void **)&l->ids, &l->ids_cap, l->ids_len, 1 + lines, sizeof *l->ids) != 0 ||
        table_reserve(&l->id_table, l->ids_len, 1 + lines, l->ids, sizeof *l->ids) != 0)
        return -1;
    if (l->arena_cap - l->arena_len < arena_need) {
        uint64_t want = (uint64_t)l->arena_cap * 2;
        if (want > UINT32_MAX)
            want = UINT32_MAX;
        if (want - l->arena_len < arena_need)
            return -1;
        char *grown = bigmem_realloc(l->arena, (size_t)want);
        if (grown == NULL)
            return -1;
        l->arena = grown;
        l->arena_cap = (uint32_t)want;
    }
    if (reserve((void **)&l->frames, &l->frames_cap, l->frames_len, 1 + lines, sizeof *l->frames) !=
            0 ||
        reserve((void **)&l->allocations, &l->allocations_cap, l->allocations_len, 1,
                sizeof *l->allocations) != 0 ||
        reserve((void **)&l->avrop, &l->avrop_cap, l->avrop_len, 1, sizeof *l->avrop) != 0 ||
        reserve((void **)&l->corrections, &l->corrections_cap, l->corrections_len, 1,
                sizeof *l->corrections) != 0)
        return -1;
    uint32_t rows = 1 + lines + plan_rows;
    if (reserve((void **)&l->units, &l->units_cap, l->units_len, rows, sizeof *l->units) != 0 ||
        table_reserve(&l->unit_table, l->units_len, rows, l->units, sizeof *l->units) != 0)
        return -1;
    if (reserve((void **)&l->closings, &l->closings_cap, l->closings_len, 1, sizeof *l->closings) !=
        0)
        return -1;
    if (outcome_reserve(l->outcomes) != 0)
        return -1;
    return registry_reserve(l->reg);
}

/*
 * The effect of each type: apply_<rules> of its row changes the state for `ev`, whose id is
 * ids[id] (made, of the row's kind, with no entity yet), with `r` from check_rules, and sets
 * in `r` what it made, for assert_balanced. Room was reserved; nothing fails.
 */

/* The frame index of `id`, a frame that exists, or NONE for "". */
static uint32_t frame_index(const ledger *l, const char *id)
{
    const id_rec *r = id[0] == '\0' ? NULL : id_get(l, id);
    return r != NULL && r->kind == LEDGER_KIND_FRAME ? r->index : NONE;
}

/* Copies the text `src` into the zeroed field `dst` of `size` bytes: only its bytes and its NUL,
 * so that the bytes after it stay zero (an event's field holds whatever it held before). */
static void copy_text(char *dst, const char *src, size_t size)
{
    memcpy(dst, src, strnlen(src, size - 1));
}

/* Makes the frame of id record `id` for (unit, year), with its texts (arena offsets) and the
 * frame it continues (a frame index, or NONE). Returns its index. */
static uint32_t add_frame(ledger *l, uint32_t id, const ledger_event *ev, const char *unit,
                          int64_t amount, uint32_t title, uint32_t reference, uint32_t continues)
{
    uint32_t row = unit_get_or_add(l, unit, ev->year);
    uint32_t index = l->frames_len++;
    l->ids[id].index = index;
    frame_rec *f = &l->frames[index];
    memset(f, 0, sizeof *f); /* the padding and the texts' tails too: a snapshot saves them */
    f->id = id;
    f->unit = row;
    f->title = title;
    f->reference = reference;
    f->continues = continues;
    f->granted = f->grant_amount = amount;
    f->granted_later = false;
    f->decision_date = ev->decision_date;
    copy_text(f->decision_body, ev->decision_body, sizeof(f->decision_body));
    copy_text(f->decision_paragraph, ev->decision_paragraph, sizeof(f->decision_paragraph));
    f->allocated = f->pending = f->called_off = 0;
    f->allocation_first = f->allocation_last = NONE;
    f->carried_from = NONE;
    f->carried_over = 0;
    f->avrop_last_day = ev->avrop_last_day;
    f->prev_in_unit = l->units[row].frame_last;
    l->units[row].frame_last = index;
    l->units[row].frames += amount;
    return index;
}

static void apply_grant(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    uint32_t title = arena_put(l, ev->title, strlen(ev->title));
    uint32_t reference = arena_put(l, ev->reference, strlen(ev->reference));
    r->frame =
        add_frame(l, id, ev, ev->unit, ev->amount, title, reference, frame_index(l, ev->continues));
    r->unit = l->frames[r->frame].unit;
}

/* The frames' reference for an adoption: its decision as clerks write it ("KF 2021-11-22 §
 * 120", and " dnr ..." when it has one). */
static uint32_t decision_reference(ledger *l, const ledger_event *ev)
{
    char day[BUDGET_DATE_BYTES + 1] = "";
    char out[BUDGET_TEXT_BYTES_MAX + 1];
    budget_date_format(ev->decision_date, day);
    int n = snprintf(out, sizeof out, "%s %s § %s%s%s", ev->decision_body, day,
                     ev->decision_paragraph, ev->decision_dnr[0] ? " dnr " : "", ev->decision_dnr);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof out ? (size_t)n : sizeof out - 1;
    return arena_put(l, out, len);
}

/* One line of an adoption: its frame "<adoption id>:<unit>" and its plan amounts. */
static void adopt_line(ledger *l, const ledger_event *ev, const ledger_line *x, uint32_t title,
                       uint32_t reference)
{
    char id[BUDGET_ID_BYTES_MAX + 1];
    size_t len = line_frame_id(ev->id, x->unit, id);
    uint32_t hash = hash_key(id, len, 0);
    uint32_t rec =
        add_id_of(l, id, len, hash, id_find(l, id, len, hash), LEDGER_KIND_FRAME, ev->seq);
    add_frame(l, rec, ev, x->unit, x->amount, title, reference, frame_index(l, x->continues));
    for (uint8_t k = 0; k < x->plans; k++) {
        unit_rec *u = &l->units[unit_plan_row(l, x->unit, ev->year + 1 + k)];
        if (u->plan_by <= ev->year) {
            u->plan = x->plan[k];
            u->plan_by = ev->year;
        }
    }
}

static void apply_adopt(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    (void)id;
    uint32_t title = arena_put(l, ev->title, strlen(ev->title));
    uint32_t reference = decision_reference(l, ev);
    for (uint16_t i = 0; i < ev->lines.count; i++)
        adopt_line(l, ev, &ev->lines.line[i], title, reference);
}

static void apply_adjust(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)id;
    l->frames[r->frame].granted += ev->amount;
    l->units[r->unit].frames += ev->amount;
}

static void apply_propose(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    frame_rec *f = &l->frames[r->frame];
    uint32_t index = l->allocations_len++;
    l->ids[id].index = index;
    allocation_rec *a = &l->allocations[index];
    memset(a, 0, sizeof *a);
    a->id = id;
    a->frame = r->frame;
    a->unit = unit_get_or_add(l, ev->unit, l->units[f->unit].year);
    a->purpose = arena_put(l, ev->title, strlen(ev->title));
    a->proposer_uid = ev->actor.uid;
    a->status = LEDGER_PENDING;
    a->avrop_last_day = ev->avrop_last_day;
    a->amount = ev->amount;
    a->called_off = a->pending = 0;
    a->reduced = a->reducing = 0;
    a->next_in_frame = NONE;
    a->avrop_first = a->avrop_last = NONE;
    if (f->allocation_last == NONE)
        f->allocation_first = index;
    else
        l->allocations[f->allocation_last].next_in_frame = index;
    f->allocation_last = index;
    f->pending += ev->amount;
    r->allocation = index;
    r->unit = a->unit;
}

static void apply_avrop(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    uint32_t index = l->avrop_len++;
    l->ids[id].index = index;
    avrop_rec *v = &l->avrop[index];
    allocation_rec *a = &l->allocations[r->allocation];
    memset(v, 0, sizeof *v);
    v->id = id;
    v->allocation = r->allocation;
    v->note = arena_put(l, ev->note, strlen(ev->note));
    v->requester_uid = ev->actor.uid;
    v->amount = ev->amount;
    v->reversed = v->reversing = 0;
    v->status = LEDGER_PENDING;
    v->next_in_allocation = NONE;
    if (a->avrop_last == NONE)
        a->avrop_first = index;
    else
        l->avrop[a->avrop_last].next_in_allocation = index;
    a->avrop_last = index;
    a->pending += ev->amount;
    l->units[r->unit].pending += ev->amount;
}

/* A correction requested: its record, of the allocation or avrop `of`. */
static void add_correction(ledger *l, const ledger_event *ev, uint32_t id, uint32_t of)
{
    uint32_t index = l->corrections_len++;
    l->ids[id].index = index;
    correction_rec *c = &l->corrections[index];
    memset(c, 0, sizeof *c);
    c->id = id;
    c->of = of;
    c->requester_uid = ev->actor.uid;
    c->status = LEDGER_PENDING;
    c->amount = ev->amount;
}

/* A reduction requested: its amount is reserved until it is decided or withdrawn. */
static void apply_reduce(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    add_correction(l, ev, id, r->allocation);
    l->allocations[r->allocation].reducing += ev->amount;
    l->units[r->unit].reducing += ev->amount;
}

/* A reversal requested: reserved in the avrop, so that no more than it can be reversed. */
static void apply_reverse(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    add_correction(l, ev, id, r->avrop);
    l->avrop[r->avrop].reversing += ev->amount;
}

/* A decided or withdrawn correction: its reservation ends, and an approved one returns the
 * money where it came from (the frame's unallocated room, the allocation's available). */
static void apply_correction(ledger *l, ledger_status status, refs *r)
{
    frame_rec *f = &l->frames[r->frame];
    allocation_rec *a = &l->allocations[r->allocation];
    unit_rec *u = &l->units[r->unit];
    int64_t amount = r->amount;
    l->corrections[r->correction].status = (uint8_t)status;
    if (r->target_kind == LEDGER_KIND_REDUCTION) {
        a->reducing -= amount;
        u->reducing -= amount;
        if (status == LEDGER_APPROVED) {
            a->amount -= amount;
            a->reduced += amount;
            f->allocated -= amount;
            u->allocated -= amount;
            l->units[f->unit].allocated_out -= amount;
        }
        return;
    }
    avrop_rec *v = &l->avrop[r->avrop];
    v->reversing -= amount;
    if (status == LEDGER_APPROVED) {
        v->reversed += amount;
        a->called_off -= amount;
        f->called_off -= amount;
        u->called_off -= amount;
    }
}

/* A decision or a withdrawal: moves the target out of pending, and its reservation. */
static void apply_target(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)id;
    frame_rec *f = &l->frames[r->frame];
    allocation_rec *a = &l->allocations[r->allocation];
    unit_rec *u = &l->units[r->unit];
    int64_t amount = r->amount;
    ledger_status status = ev->type == LEDGER_DECISION_APPROVED   ? LEDGER_APPROVED
                           : ev->type == LEDGER_DECISION_REJECTED ? LEDGER_REJECTED
                                                                  : LEDGER_WITHDRAWN;
    if (r->correction != NONE) {
        apply_correction(l, status, r);
    } else if (r->target_kind == LEDGER_KIND_ALLOCATION) {
        a->status = (uint8_t)status;
        f->pending -= amount;
        if (status == LEDGER_APPROVED) {
            f->allocated += amount;
            u->allocated += amount;
            l->units[f->unit].allocated_out += amount;
        }
    } else {
        l->avrop[r->avrop].status = (uint8_t)status;
        a->pending -= amount;
        u->pending -= amount;
        if (status == LEDGER_APPROVED) {
            a->called_off += amount;
            f->called_off += amount;
            u->called_off += amount;
        }
    }
}

static void apply_register_unit(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    (void)id;
    uint32_t parent = ev->parent[0] == '\0' ? REGISTRY_NONE : registry_find(l->reg, ev->parent);
    registry_register(l->reg, ev->unit, ev->title, registry_kind_from_name(ev->unit_kind), parent);
}

static void apply_rename_unit(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    (void)id;
    registry_rename(l->reg, registry_find(l->reg, ev->unit), ev->title);
}

static void apply_close_unit(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    (void)id;
    registry_close(l->reg, registry_find(l->reg, ev->unit));
}

static void apply_close_year(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    l->closings[l->closings_len++] = (closing_rec){ev->year, id};
}

/* A new frame of the next year, as frame.granted makes one, that remembers where it came from;
 * the frame it came from counts what it carried over. */
static void apply_carry_over(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    frame_rec *from = &l->frames[r->frame];
    uint32_t from_index = r->frame;
    ledger_event made = *ev;
    snprintf(made.unit, sizeof made.unit, "%s", l->units[from->unit].unit);
    made.year = l->units[from->unit].year + 1;
    made.reference[0] = '\0';
    from->carried_over += ev->amount;
    apply_grant(l, &made, r, id);
    l->frames[r->frame].carried_from = from_index;
}

/* The figure replaces the key's one before; the unit's year gets a row of balances. */
static void apply_record_outcome(ledger *l, const ledger_event *ev, refs *r, uint32_t id)
{
    (void)r;
    (void)id;
    unit_get_or_add(l, ev->unit, ev->year);
    outcome_record(l->outcomes, ev->unit, ev->year, ev->month, ev->allocation, ev->amount, ev->seq);
}

typedef void (*apply_fn)(ledger *l, const ledger_event *ev, refs *r, uint32_t id);
static const apply_fn type_apply[LEDGER_TYPE_END] = {
#define TYPE_APPLY(name, wire, op, role, kind, fields, rules, scope)                               \
    [LEDGER_##name] = apply_##rules,
    LEDGER_EVENT_TYPES(TYPE_APPLY)
#undef TYPE_APPLY
};

/* The invariants of what an event of this kind touched. */
static void assert_balanced(const ledger *l, const refs *r)
{
#ifdef NDEBUG
    (void)l;
    (void)r;
#else
    if (r->frame != NONE) {
        const frame_rec *f = &l->frames[r->frame];
        assert(f->allocated >= 0 && f->pending >= 0 && f->called_off >= 0);
        assert(f->allocated + f->pending <= f->granted && f->called_off <= f->allocated);
    }
    if (r->allocation != NONE) {
        const allocation_rec *a = &l->allocations[r->allocation];
        assert(a->called_off >= 0 && a->pending >= 0);
        assert(a->reduced >= 0 && a->reducing >= 0);
        assert(a->called_off + a->pending + a->reducing <= a->amount);
        assert(a->status == LEDGER_APPROVED ||
               (a->called_off == 0 && a->pending == 0 && a->reducing == 0));
    }
    if (r->avrop != NONE) {
        const avrop_rec *v = &l->avrop[r->avrop];
        assert(v->reversed >= 0 && v->reversing >= 0);
        assert(v->reversed + v->reversing <= v->amount);
    }
    if (r->unit != NONE) {
        const unit_rec *u = &l->units[r->unit];
        assert(u->frames >= 0 && u->called_off >= 0 && u->pending >= 0 && u->reducing >= 0);
        assert(u->called_off + u->pending + u->reducing <= u->allocated);
    }
#endif
}

bool ledger_syntax_ok(const ledger_event *ev)
{
    return check_syntax(ev, false, NULL) == 0;
}

int ledger_apply(ledger *l, const ledger_event *ev)
{
    if (!ledger_syntax_ok(ev))
        return BUDGET_EINTERNAL;
    return ledger_apply_syntax_ok(l, ev);
}

static bool counted_by_day(const ledger_event *ev);

int ledger_apply_syntax_ok(ledger *l, const ledger_event *ev)
{
    assert(l != NULL && ev != NULL);
    if (!ledger_type_known(ev->type) || ev->seq <= l->last_seq || ev->seq > SEQ_MAX)
        return BUDGET_EINTERNAL;
    if (reserve_room(l, ev) != 0)
        return BUDGET_EUNAVAILABLE;
    /* The new id's slot is almost never in cache: ask for it now, look at it last. */
    size_t len = strnlen(ev->id, BUDGET_ID_BYTES_MAX + 1);
    uint32_t hash = hash_key(ev->id, len, 0);
    uint32_t home = hash >> l->id_table.shift;
    __builtin_prefetch(&l->id_table.ctrl[home], 1);
    __builtin_prefetch(&l->id_table.refs[home], 1);

    refs r;
    if (!named_units_replay(l, ev) || check_rules(l, ev, ev->actor.uid, &r, NULL) != 0 ||
        !derived_match(l, &r, ev))
        return BUDGET_EINTERNAL;
    uint32_t at = id_find(l, ev->id, len, hash);
    if (l->id_table.ctrl[at] != 0)
        return BUDGET_EINTERNAL; /* the id exists */

    /* Nothing fails from here on. */
    uint32_t id = add_id(l, ev, len, hash, at);
    define_named_units(l, ev);
    type_apply[ev->type](l, ev, &r, id);
    assert_balanced(l, &r);
    if (counted_by_day(ev)) {
        int32_t day = ledger_decision_day(ev);
        if (day > l->decided_last)
            l->decided_last = day;
    }
    l->events++;
    l->last_seq = ev->seq;
    l->last_ts_ms = ev->ts_ms;
    ix_catch_up(l);
    return 0;
}

/* True when two adoptions have the same lines, in the same order. */
static bool lines_equal(const ledger_lines *a, const ledger_lines *b)
{
    if (a->count != b->count)
        return false;
    for (uint16_t i = 0; i < a->count; i++) {
        const ledger_line *x = &a->line[i], *y = &b->line[i];
        if (strcmp(x->unit, y->unit) != 0 || strcmp(x->continues, y->continues) != 0 ||
            x->amount != y->amount || x->plans != y->plans || x->plans > BUDGET_PLAN_YEARS_MAX ||
            memcmp(x->plan, y->plan, x->plans * sizeof x->plan[0]) != 0)
            return false;
    }
    return true;
}

/* True when field `f` holds the same value in `a` and `b`. */
static bool field_equal(const ledger_event *a, const ledger_event *b, const event_field *f)
{
    if (f->value == FIELD_LINES)
        return lines_equal(&a->lines, &b->lines);
    if (field_is_str(f))
        return strncmp(ledger_field_str(a, f), ledger_field_str(b, f), f->size) == 0;
    return ledger_field_int(a, f) == ledger_field_int(b, f);
}

bool ledger_same_request(const ledger_cmd *cmd, const ledger_actor *actor, const ledger_event *ev)
{
    if (actor->uid != ev->actor.uid)
        return false;
    if (cmd->type != ev->type || !ledger_type_known(cmd->type))
        return false;
    const event_type_info *t = &event_types[cmd->type];
    for (uint8_t i = 0; i < t->field_count; i++)
        if (t->fields[i].source != FIELD_DERIVED && !field_equal(cmd, ev, &t->fields[i]))
            return false;
    return true;
}

/* ---- public: balances ------------------------------------------------------------------- */

uint64_t ledger_events(const ledger *l)
{
    return l->events;
}

uint64_t ledger_last_ts(const ledger *l)
{
    return l->last_ts_ms;
}

uint64_t ledger_last_seq(const ledger *l)
{
    return l->last_seq;
}

void ledger_get_counts(const ledger *l, ledger_counts *out)
{
#define KIND_COUNT(name, wire, count) out->count = l->ids_of_kind[LEDGER_KIND_##name];
    LEDGER_KINDS(KIND_COUNT)
#undef KIND_COUNT
    out->units = l->units_len - l->plan_rows;
}

static void frame_view(const ledger *l, uint32_t i, ledger_frame_view *out)
{
    const frame_rec *f = &l->frames[i];
    const unit_rec *u = &l->units[f->unit];
    out->id = id_text(l, f->id);
    out->unit = u->unit;
    out->title = text(l, f->title);
    out->reference = text(l, f->reference);
    out->continues = f->continues == NONE ? "" : id_text(l, l->frames[f->continues].id);
    out->year = u->year;
    out->granted = f->granted;
    out->allocated = f->allocated;
    out->pending = f->pending;
    out->unallocated = f->granted - f->allocated - f->pending;
    out->called_off = f->called_off;
    out->closed = closing_of(l, u->year) != NULL;
    out->unspent = frame_unspent(f);
    out->carried_over = f->carried_over;
    out->carried_from = f->carried_from == NONE ? NULL : id_text(l, l->frames[f->carried_from].id);
    out->avrop_last_day = f->avrop_last_day;
    out->granted_later = f->granted_later;
}

static void allocation_view(const ledger *l, uint32_t i, ledger_allocation_view *out)
{
    const allocation_rec *a = &l->allocations[i];
    const unit_rec *u = &l->units[a->unit];
    out->id = id_text(l, a->id);
    out->frame = id_text(l, l->frames[a->frame].id);
    out->unit = u->unit;
    out->purpose = text(l, a->purpose);
    out->year = u->year;
    out->status = (ledger_status)a->status;
    out->amount = a->amount;
    out->called_off = a->called_off;
    out->pending = a->pending;
    out->available =
        a->status == LEDGER_APPROVED ? a->amount - a->called_off - a->pending - a->reducing : 0;
    out->reduced = a->reduced;
    out->reducing = a->reducing;
    out->avrop_last_day = a->avrop_last_day;
}

static void avrop_view(const ledger *l, uint32_t i, ledger_avrop_view *out)
{
    const avrop_rec *v = &l->avrop[i];
    const allocation_rec *a = &l->allocations[v->allocation];
    out->id = id_text(l, v->id);
    out->allocation = id_text(l, a->id);
    out->unit = l->units[a->unit].unit;
    out->status = (ledger_status)v->status;
    out->amount = v->amount;
    out->reversed = v->reversed;
    out->reversing = v->reversing;
}

static void unit_view(const ledger *l, uint32_t i, ledger_unit_view *out)
{
    const unit_rec *u = &l->units[i];
    out->unit = u->unit;
    out->year = u->year;
    out->frames = u->frames;
    out->allocated = u->allocated;
    out->called_off = u->called_off;
    out->pending = u->pending;
    out->available = u->allocated - u->called_off - u->pending - u->reducing;
    out->reducing = u->reducing;
}

/* The entity index of `id` when it names an entity of `kind`, else NONE. */
static uint32_t lookup(const ledger *l, const char *id, ledger_kind kind)
{
    const id_rec *r = id_get(l, id);
    return r != NULL && r->kind == kind ? r->index : NONE;
}

bool ledger_frame(const ledger *l, const char *id, ledger_frame_view *out)
{
    uint32_t i = lookup(l, id, LEDGER_KIND_FRAME);
    if (i == NONE)
        return false;
    frame_view(l, i, out);
    return true;
}

bool ledger_allocation(const ledger *l, const char *id, ledger_allocation_view *out)
{
    uint32_t i = lookup(l, id, LEDGER_KIND_ALLOCATION);
    if (i == NONE)
        return false;
    allocation_view(l, i, out);
    return true;
}

bool ledger_avrop(const ledger *l, const char *id, ledger_avrop_view *out)
{
    uint32_t i = lookup(l, id, LEDGER_KIND_AVROP);
    if (i == NONE)
        return false;
    avrop_view(l, i, out);
    return true;
}

bool ledger_correction(const ledger *l, const char *id, ledger_correction_view *out)
{
    const id_rec *r = id_get(l, id);
    if (r == NULL || (r->kind != LEDGER_KIND_REDUCTION && r->kind != LEDGER_KIND_REVERSAL))
        return false;
    const correction_rec *c = &l->corrections[r->index];
    uint32_t allocation = c->of;
    out->avrop = NULL;
    if (r->kind == LEDGER_KIND_REVERSAL) {
        out->avrop = id_text(l, l->avrop[c->of].id);
        allocation = l->avrop[c->of].allocation;
    }
    out->id = id_text(l, c->id);
    out->allocation = id_text(l, l->allocations[allocation].id);
    out->kind = (ledger_kind)r->kind;
    out->status = (ledger_status)c->status;
    out->amount = c->amount;
    return true;
}

const char *ledger_avrop_note(const ledger *l, const char *id)
{
    uint32_t i = lookup(l, id, LEDGER_KIND_AVROP);
    return i == NONE ? NULL : text(l, l->avrop[i].note);
}

const registry *ledger_registry(const ledger *l)
{
    return l->reg;
}

ledger_kind ledger_id_kind(const ledger *l, const char *id)
{
    const id_rec *r = id_get(l, id);
    return r == NULL ? 0 : (ledger_kind)r->kind;
}

bool ledger_id_seq(const ledger *l, const char *id, uint64_t *seq)
{
    const id_rec *r = id_get(l, id);
    if (r == NULL)
        return false;
    *seq = rec_seq(r);
    return true;
}

static bool unit_matches(const unit_rec *u, const char *unit, int32_t year)
{
    return (unit == NULL || strcmp(u->unit, unit) == 0) && (year == 0 || u->year == year);
}

bool ledger_next_frame(const ledger *l, size_t *i, const char *unit, int32_t year,
                       ledger_frame_view *out)
{
    for (; *i < l->frames_len; (*i)++) {
        if (!unit_matches(&l->units[l->frames[*i].unit], unit, year))
            continue;
        frame_view(l, (uint32_t)(*i)++, out);
        return true;
    }
    return false;
}

bool ledger_next_allocation(const ledger *l, size_t *i, const char *frame, const char *unit,
                            int32_t year, ledger_allocation_view *out)
{
    uint32_t f = NONE;
    if (frame != NULL && (f = lookup(l, frame, LEDGER_KIND_FRAME)) == NONE)
        return false;
    if (f != NONE) {
        /* The frame's own list. After a match *i is the frame's next allocation, so this
         * visits only the frame's allocations; an *i from elsewhere is walked up to one. */
        size_t k = *i <= l->frames[f].allocation_first ? l->frames[f].allocation_first : *i;
        while (k < l->allocations_len) {
            const allocation_rec *a = &l->allocations[k];
            if (a->frame != f) {
                k++;
                continue;
            }
            size_t next = a->next_in_frame == NONE ? l->allocations_len : a->next_in_frame;
            if (unit_matches(&l->units[a->unit], unit, year)) {
                *i = next;
                allocation_view(l, (uint32_t)k, out);
                return true;
            }
            k = next;
        }
        *i = l->allocations_len;
        return false;
    }
    for (; *i < l->allocations_len; (*i)++) {
        const allocation_rec *a = &l->allocations[*i];
        if ((f != NONE && a->frame != f) || !unit_matches(&l->units[a->unit], unit, year))
            continue;
        allocation_view(l, (uint32_t)(*i)++, out);
        return true;
    }
    return false;
}

bool ledger_next_avrop(const ledger *l, size_t *i, const char *allocation, ledger_avrop_view *out)
{
    uint32_t a = NONE;
    if (allocation != NULL && (a = lookup(l, allocation, LEDGER_KIND_ALLOCATION)) == NONE)
        return false;
    if (a != NONE) {
        /* The allocation's own list, as ledger_next_allocation walks a frame's. */
        size_t k = *i <= l->allocations[a].avrop_first ? l->allocations[a].avrop_first : *i;
        while (k < l->avrop_len) {
            if (l->avrop[k].allocation != a) {
                k++;
                continue;
            }
            uint32_t next = l->avrop[k].next_in_allocation;
            *i = next == NONE ? l->avrop_len : next;
            avrop_view(l, (uint32_t)k, out);
            return true;
        }
        *i = l->avrop_len;
        return false;
    }
    for (; *i < l->avrop_len; (*i)++) {
        if (a != NONE && l->avrop[*i].allocation != a)
            continue;
        avrop_view(l, (uint32_t)(*i)++, out);
        return true;
    }
    return false;
}

bool ledger_next_unit(const ledger *l, size_t *i, const char *unit, int32_t year,
                      ledger_unit_view *out)
{
    for (; *i < l->units_len; (*i)++) {
        if (!l->units[*i].held || !unit_matches(&l->units[*i], unit, year))
            continue;
        unit_view(l, (uint32_t)(*i)++, out);
        return true;
    }
    return false;
}

bool ledger_next_year_row(const ledger *l, size_t *i, const char *unit, int32_t from, int32_t to,
                          ledger_year_view *out)
{
    for (; *i < l->units_len; (*i)++) {
        const unit_rec *u = &l->units[*i];
        if (u->year < from || u->year > to || !unit_matches(u, unit, 0))
            continue;
        out->unit = u->unit;
        out->year = u->year;
        out->has_plan = u->plan_by != 0;
        out->plan_by = u->plan_by;
        out->plan = u->plan;
        out->budget = u->frames;
        out->allocated = u->allocated;
        out->called_off = u->called_off;
        out->pending = u->pending;
        out->available = u->allocated - u->called_off - u->pending;
        (*i)++;
        return true;
    }
    return false;
}

/* ---- public: paging by position ------------------------------------------------------- */

/* The cursor over `count` entities from index `first`, at `offset`. */
static void seek_range(ledger_cursor *c, uint32_t first, uint32_t count, uint64_t offset)
{
    c->items = NULL;
    c->linked = false;
    c->end = count;
    c->at = offset < count ? (uint32_t)offset : count;
    c->next = first + c->at;
}

/* The cursor over list `x` (NULL: nothing matches), at `offset`. */
static void seek_list(ledger_cursor *c, const ix_list *x, uint64_t offset)
{
    static const uint32_t none[1] = {0};
    c->items = x != NULL ? x->items : none;
    c->linked = false;
    c->end = x != NULL ? x->len : 0;
    c->at = offset < c->end ? (uint32_t)offset : c->end;
    c->next = NONE;
}

/* The cursor over the children of a parent (`kids`, linked from `first` by `next`). Fewer
 * than IX_LINKED_MAX are walked by their links. */
static void seek_kids(const ledger *l, ledger_cursor *c, uint32_t kids, uint32_t first,
                      uint64_t offset, uint32_t (*next)(const ledger *, uint32_t))
{
    if (kids & IX_LISTED) {
        seek_list(c, &l->ix.long_lists[kids & ~IX_LISTED], offset);
        return;
    }
    c->items = NULL;
    c->linked = true;
    c->end = kids;
    c->at = 0;
    c->next = first;
    for (; c->at < c->end && c->at < offset; c->at++)
        c->next = next(l, c->next);
}

typedef enum { IX_ROWS, IX_FRAMES, IX_ALLOCATIONS } ix_what;

static const ix_list *group_list(const ix_group *g, ix_what what)
{
    return what == IX_ROWS ? &g->rows : what == IX_FRAMES ? &g->frames : &g->allocations;
}

/* The list of `what` for a filter of unit, year or both (not neither); NULL when nothing
 * matches. Rows of a unit and a year are at most one, and not listed. */
static const ix_list *ix_find(const ledger *l, const char *unit, int32_t year, ix_what what)
{
    const ledger_index *ix = &l->ix;
    if (unit != NULL && year != 0) {
        uint32_t row = unit_get(l, unit, year);
        if (row == NONE || what == IX_ROWS)
            return NULL;
        return what == IX_FRAMES ? &ix->rows[row].frames : &ix->rows[row].allocations;
    }
    if (unit != NULL) {
        uint32_t reg_unit = registry_find(l->reg, unit);
        if (reg_unit == REGISTRY_NONE || reg_unit >= ix->reg_len || ix->reg_code[reg_unit] == NONE)
            return NULL;
        return group_list(&ix->codes[ix->reg_code[reg_unit]], what);
    }
    for (uint32_t g = 0; g < ix->years_len; g++)
        if (ix->years[g].year == year)
            return group_list(&ix->years[g], what);
    return NULL;
}

bool ledger_seek_frames(const ledger *l, const char *unit, int32_t year, uint64_t offset,
                        ledger_cursor *c)
{
    if (!ix_current(l))
        return false;
    if (unit == NULL && year == 0)
        seek_range(c, 0, l->frames_len, offset);
    else
        seek_list(c, ix_find(l, unit, year, IX_FRAMES), offset);
    return true;
}

bool ledger_seek_allocations(const ledger *l, const char *frame, const char *unit, int32_t year,
                             uint64_t offset, ledger_cursor *c)
{
    if (!ix_current(l) || (frame != NULL && (unit != NULL || year != 0)))
        return false;
    if (frame != NULL) {
        uint32_t f = lookup(l, frame, LEDGER_KIND_FRAME);
        if (f == NONE)
            seek_list(c, NULL, offset);
        else
            seek_kids(l, c, l->ix.frame_kids[f], l->frames[f].allocation_first, offset,
                      next_in_frame);
    } else if (unit == NULL && year == 0) {
        seek_range(c, 0, l->allocations_len, offset);
    } else {
        seek_list(c, ix_find(l, unit, year, IX_ALLOCATIONS), offset);
    }
    return true;
}

bool ledger_seek_avrop(const ledger *l, const char *allocation, uint64_t offset, ledger_cursor *c)
{
    if (!ix_current(l))
        return false;
    if (allocation == NULL) {
        seek_range(c, 0, l->avrop_len, offset);
        return true;
    }
    uint32_t a = lookup(l, allocation, LEDGER_KIND_ALLOCATION);
    if (a == NONE)
        seek_list(c, NULL, offset);
    else
        seek_kids(l, c, l->ix.allocation_kids[a], l->allocations[a].avrop_first, offset,
                  next_in_allocation);
    return true;
}

bool ledger_seek_units(const ledger *l, const char *unit, int32_t year, uint64_t offset,
                       ledger_cursor *c)
{
    if (!ix_current(l))
        return false;
    if (unit == NULL && year == 0) {
        seek_range(c, 0, l->units_len, offset);
    } else if (unit != NULL && year != 0) {
        uint32_t row = unit_get(l, unit, year);
        if (row == NONE)
            seek_list(c, NULL, offset);
        else
            seek_range(c, row, 1, offset);
    } else {
        seek_list(c, ix_find(l, unit, year, IX_ROWS), offset);
    }
    return true;
}

/* The index of the cursor's next match (`link` follows a linked one); false at the end. */
static bool cursor_next(const ledger *l, ledger_cursor *c,
                        uint32_t (*link)(const ledger *, uint32_t), uint32_t *index)
{
    if (c->at >= c->end)
        return false;
    if (c->items != NULL) {
        *index = c->items[c->at];
    } else {
        *index = c->next;
        c->next = c->linked ? link(l, c->next) : c->next + 1;
    }
    c->at++;
    return true;
}

bool ledger_cursor_frame(const ledger *l, ledger_cursor *c, ledger_frame_view *out)
{
    uint32_t i;
    if (!cursor_next(l, c, NULL, &i))
        return false;
    frame_view(l, i, out);
    return true;
}

bool ledger_cursor_allocation(const ledger *l, ledger_cursor *c, ledger_allocation_view *out)
{
    uint32_t i;
    if (!cursor_next(l, c, next_in_frame, &i))
        return false;
    allocation_view(l, i, out);
    return true;
}

bool ledger_cursor_avrop(const ledger *l, ledger_cursor *c, ledger_avrop_view *out)
{
    uint32_t i;
    if (!cursor_next(l, c, next_in_allocation, &i))
        return false;
    avrop_view(l, i, out);
    return true;
}

bool ledger_cursor_unit(const ledger *l, ledger_cursor *c, ledger_unit_view *out)
{
    uint32_t i;
    if (!cursor_next(l, c, NULL, &i))
        return false;
    unit_view(l, i, out);
    return true;
}

/* ---- public: outcome -------------------------------------------------------------------- */

const outcome_book *ledger_outcomes(const ledger *l)
{
    return l->outcomes;
}

/* The unit's budget in a year: its frames (granted, after adjustments) less what is allocated
 * out of them, plus the allocations it received. O(1). */
static int64_t unit_budget(const ledger *l, uint32_t row)
{
    const unit_rec *u = &l->units[row];
    return u->frames - u->allocated_out + u->allocated;
}

void ledger_outcome(const ledger *l, const char *unit, int32_t year, ledger_outcome_view *out)
{
    outcome_year_view y;
    memset(out, 0, sizeof *out);
    if (outcome_year(l->outcomes, unit, year, &y)) {
        memcpy(out->months, y.months, sizeof out->months);
        out->outcome = y.total;
        out->last_month = y.last_month;
        out->figures = y.figures;
    }
    uint32_t row = unit_get(l, unit, year);
    out->budget = row == NONE ? 0 : unit_budget(l, row);
    out->deviation = out->budget - out->outcome;
    /* |outcome| <= OUTCOME_TOTAL_MAX: times 12 fits, as does times 1000 in 128 bits */
    out->forecast = out->last_month == 0 ? 0 : out->outcome * 12 / out->last_month;
    out->has_used = out->budget > 0;
    out->used_permille = out->has_used ? (int64_t)((__int128)out->outcome * 1000 / out->budget) : 0;
}

/* ---- public: names ---------------------------------------------------------------------- */

const char *ledger_year_closed(const ledger *l, int32_t year)
{
    const closing_rec *c = closing_of(l, year);
    return c == NULL ? NULL : id_text(l, c->id);
}

const char *ledger_type_name(ledger_type t)
{
    return ledger_type_known(t) ? event_types[t].name : "unknown";
}

ledger_type ledger_type_from_name(const char *s, size_t len)
{
    for (int t = 1; t < (int)LEDGER_TYPE_END; t++)
        if (event_types[t].name_len == len && memcmp(event_types[t].name, s, len) == 0)
            return (ledger_type)t;
    return 0;
}

const char *ledger_status_name(ledger_status s)
{
    switch (s) {
    case LEDGER_PENDING:
        return "pending";
    case LEDGER_APPROVED:
        return "approved";
    case LEDGER_REJECTED:
        return "rejected";
    case LEDGER_WITHDRAWN:
        return "withdrawn";
    }
    return "unknown";
}

const char *ledger_kind_name(ledger_kind k)
{
    return (int)k > 0 && (int)k < (int)LEDGER_KIND_END ? event_kind_names[k] : "unknown";
}

/* ---- public: what was decided by a day -------------------------------------------------- */

int32_t ledger_decision_day(const ledger_event *ev)
{
    if (ledger_has_decision(ev))
        return ev->decision_date;
    return entry_day(ev->ts_ms);
}

/* True when events of `t` (a known type) rest on a decision (their table has the decision's
 * date). Asked for every event a ledger applies, so each type's answer is found once. */
static bool rests_on_decision(ledger_type t)
{
    static _Atomic uint8_t known[LEDGER_TYPE_END]; /* 0: not found yet; 1: no; 2: yes */
    uint8_t k = atomic_load_explicit(&known[t], memory_order_relaxed);
    if (k != 0)
        return k == 2;
    const event_type_info *info = &event_types[t];
    bool rests = false;
    for (uint8_t i = 0; i < info->field_count; i++)
        if (info->fields[i].value == FIELD_DATE &&
            info->fields[i].offset == offsetof(ledger_event, decision_date))
            rests = true;
    atomic_store_explicit(&known[t], rests ? 2 : 1, memory_order_relaxed);
    return rests;
}

/* True when a view of what was decided by a day counts `ev` by its day (ledger_decision_day):
 * an event that rests on a decision, or a withdrawal. */
static bool counted_by_day(const ledger_event *ev)
{
    return ev->type == LEDGER_REQUEST_WITHDRAWN || rests_on_decision(ev->type);
}

/* ledger_decided_base of a state with these counts. */
static bool decided_base(int32_t decided_last, uint32_t closings, uint32_t corrections,
                         int32_t decided_by)
{
    return decided_last <= decided_by && closings == 0 && corrections == 0;
}

bool ledger_decided_base(const ledger *l, int32_t decided_by)
{
    return decided_base(l->decided_last, l->closings_len, l->corrections_len, decided_by);
}

/*
 * What `ev` refers to, for an event whose budget rules need not hold in a ledger of what was
 * decided by a day: the entities it names must exist (they were made before it in the log),
 * and a decision's or a withdrawal's target must still be pending here. 0, or -1 when it
 * refers to nothing that can take it.
 */
static int decided_refs(const ledger *l, const ledger_event *ev, refs *r)
{
    *r = (refs){.frame = NONE, .allocation = NONE, .avrop = NONE, .correction = NONE, .unit = NONE};
    uint32_t i;
    switch (ev->type) {
    case LEDGER_FRAME_GRANTED:
        r->unit = unit_get(l, ev->unit, ev->year);
        return 0;
    case LEDGER_FRAME_ADJUSTED:
    case LEDGER_ALLOCATION_PROPOSED:
        if (find_entity(l, ev->frame, LEDGER_KIND_FRAME, &r->frame, NULL) != 0)
            return -1;
        r->unit = ev->type == LEDGER_FRAME_ADJUSTED
                      ? l->frames[r->frame].unit
                      : unit_get(l, ev->unit, l->units[l->frames[r->frame].unit].year);
        return 0;
    case LEDGER_AVROP_REQUESTED:
        if (find_entity(l, ev->allocation, LEDGER_KIND_ALLOCATION, &i, NULL) != 0)
            return -1;
        r->allocation = i;
        r->frame = l->allocations[i].frame;
        r->unit = l->allocations[i].unit;
        return 0;
    case LEDGER_FRAME_CARRIED_OVER:
        /* Like a grant, by its decision's date: the frame it came from is here (a grant
         * decided later stays, with nothing granted). */
        if (find_entity(l, ev->frame, LEDGER_KIND_FRAME, &r->frame, NULL) != 0)
            return -1;
        r->unit = l->frames[r->frame].unit;
        return 0;
    case LEDGER_YEAR_CLOSED:
        return -1; /* a view of what was decided by a day has no closed years */
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
    case LEDGER_REQUEST_WITHDRAWN:
        break;
    case LEDGER_BUDGET_ADOPTED:
        /* Its frames' ids are its own, and a frame it continues is found when it is there. */
        return 0;
    case LEDGER_UNIT_REGISTERED:
    case LEDGER_UNIT_RENAMED:
    case LEDGER_UNIT_CLOSED:
        /* The register is not a decision: every view has all of it, so its rules held here
         * as they did when the event was written. */
        return 0;
    case LEDGER_OUTCOME_RECORDED:
        /* Outcome is no decision either: it counts as entered. */
        return 0;
    default:
        return -1; /* a type this view does not know how to lean on: left out */
    }
    /* A decision or a withdrawal: rule_target finds its target; its other refusals (four-eyes
     * and the like) held when the event was written. */
    ledger_error err;
    int rc = rule_target(l, ev, ev->actor.uid, r, &err);
    return rc == 0 || (rc != BUDGET_ENOT_FOUND && rc != BUDGET_EINVALID_STATE) ? 0 : -1;
}

/* A grant or an adoption decided after the day: its frames stay, for what refers to them, with
 * nothing granted, and an adoption sets no plan amounts. */
static void keep_frames_only(ledger_event *ev)
{
    ev->amount = 0;
    for (uint16_t i = 0; i < ev->lines.count && i < BUDGET_ADOPT_LINES_MAX; i++) {
        ev->lines.line[i].amount = 0;
        ev->lines.line[i].plans = 0;
    }
}

/* Marks the frames that `ev` (kept by keep_frames_only and applied) made. */
static void mark_granted_later(ledger *l, const ledger_event *ev, const refs *r)
{
    if (ev->type == LEDGER_FRAME_GRANTED || ev->type == LEDGER_FRAME_CARRIED_OVER) {
        l->frames[r->frame].granted_later = true;
        return;
    }
    for (uint16_t i = 0; i < ev->lines.count; i++) {
        char id[BUDGET_ID_BYTES_MAX + 1];
        uint32_t f = line_frame_id(ev->id, ev->lines.line[i].unit, id) ? frame_index(l, id) : NONE;
        if (f != NONE)
            l->frames[f].granted_later = true;
    }
}

int ledger_apply_decided(ledger *l, const ledger_event *ev, int32_t decided_by)
{
    assert(l != NULL && ev != NULL);
    if (!ledger_syntax_ok(ev))
        return BUDGET_EINTERNAL;
    return ledger_apply_decided_syntax_ok(l, ev, decided_by);
}

int ledger_apply_decided_syntax_ok(ledger *l, const ledger_event *ev, int32_t decided_by)
{
    assert(l != NULL && ev != NULL);
    if (!ledger_type_known(ev->type) || ev->seq <= l->last_seq || ev->seq > SEQ_MAX)
        return BUDGET_EINTERNAL;
    if (reserve_room(l, ev) != 0)
        return BUDGET_EUNAVAILABLE;
    /* The units of an old log are defined as on replay, by every event, left out or not: the
     * register is the same in every view. */
    define_named_units(l, ev);
    bool later = counted_by_day(ev) && ledger_decision_day(ev) > decided_by;
    /* The event as this view applies it: itself, or a copy with nothing granted (an event is
     * several KiB, so it is copied only then). */
    const ledger_event *use = ev;
    ledger_event kept;
    if (later && (ev->type == LEDGER_FRAME_GRANTED || ev->type == LEDGER_BUDGET_ADOPTED ||
                  ev->type == LEDGER_FRAME_CARRIED_OVER)) {
        /* The frames stay, for what refers to them, with nothing granted. */
        ledger_event_copy(&kept, ev);
        keep_frames_only(&kept);
        use = &kept;
    } else if (later) {
        return skip_event(l, ev);
    }
    refs r;
    size_t len = strnlen(ev->id, BUDGET_ID_BYTES_MAX + 1);
    uint32_t hash = hash_key(ev->id, len, 0);
    uint32_t at = id_find(l, ev->id, len, hash);
    if (l->id_table.ctrl[at] != 0 || decided_refs(l, use, &r) != 0)
        return skip_event(l, ev);
    uint32_t id = add_id(l, use, len, hash, at);
    type_apply[ev->type](l, use, &r, id);
    if (later)
        mark_granted_later(l, use, &r);
    l->events++;
    l->last_seq = ev->seq;
    l->last_ts_ms = ev->ts_ms;
    ix_catch_up(l);
    return 0;
}

/* ---- public: saving and loading ---------------------------------------------------------- */

/*
 * What ledger_save writes, in order: the layout (LEDGER_SAVE_LAYOUT and the size of each
 * record, so that bytes saved by a build with other records are refused), the counters, then
 * every array as its count and its records as they are in memory, the two tables as their slot
 * count and slots, the register and the outcome book. The index (ix) is not saved: it is made
 * again from the entities (ledger_load_finish). Every record is zeroed before it is filled, its
 * padding and the bytes after its texts too, so that a snapshot holds nothing the process held
 * before, and one state saves the same bytes however it was built.
 */
#define LEDGER_SAVE_LAYOUT 2u
#define LEDGER_ROWS_MAX (UINT32_C(1) << 31)

typedef struct {
    uint32_t layout;
    uint32_t sizes[8];
} save_layout;

static save_layout layout_now(void)
{
    return (save_layout){LEDGER_SAVE_LAYOUT,
                         {sizeof(id_rec), sizeof(frame_rec), sizeof(allocation_rec),
                          sizeof(avrop_rec), sizeof(correction_rec), sizeof(unit_rec),
                          sizeof(closing_rec), LEDGER_KIND_END}};
}

typedef struct {
    uint64_t events, last_seq, last_ts_ms;
    uint64_t ids_of_kind[LEDGER_KIND_END];
    uint32_t plan_rows;
    int32_t decided_last;
    /* The lengths of the arrays of closings and corrections, which follow: what
     * ledger_peek_decided_base needs besides decided_last, here at the start. */
    uint32_t closings, corrections;
} save_counters;

/* Layout 1 saved these counters, the same up to decided_last: such a state still loads, as one
 * that no view by decision day starts from (its decided_last is unknown). */
#define LEDGER_SAVE_LAYOUT_1 1u
typedef struct {
    uint64_t events, last_seq, last_ts_ms;
    uint64_t ids_of_kind[LEDGER_KIND_END];
    uint32_t plan_rows;
} save_counters_1;
_Static_assert(offsetof(save_counters_1, plan_rows) == offsetof(save_counters, plan_rows) &&
                   sizeof(save_counters_1) <= sizeof(save_counters),
               "layout 1's counters are the start of layout 2's");

static int table_save(const table *t, snap_sink *s)
{
    uint32_t slots = t->mask + 1;
    return snap_put_u32(s, slots) != 0 || snap_put(s, t->ctrl, table_block_bytes(t)) != 0 ? -1 : 0;
}

/* A table of `count` entries read back: 0 or -1. */
static int table_load(table *t, snap_source *s, uint32_t count)
{
    uint32_t slots;
    if (snap_get_u32(s, &slots) != 0 || !snap_pow2_in(slots, TABLE_SLOTS_MIN, TABLE_SLOTS_MAX) ||
        count >= slots || (uint64_t)slots * (1 + sizeof(uint32_t)) > s->left)
        return -1;
    uint8_t *block = bigmem_malloc((size_t)slots * (1 + sizeof(uint32_t)));
    if (block == NULL)
        return -1;
    t->ctrl = block;
    t->refs = (uint32_t *)(void *)(block + slots);
    t->mask = slots - 1;
    t->shift = 32 - (uint32_t)__builtin_ctz(slots);
    return snap_get(s, block, table_block_bytes(t));
}

int ledger_save(const ledger *l, snap_sink *s)
{
    save_layout layout = layout_now();
    save_counters counters;
    memset(&counters, 0, sizeof counters);
    counters.events = l->events;
    counters.last_seq = l->last_seq;
    counters.last_ts_ms = l->last_ts_ms;
    memcpy(counters.ids_of_kind, l->ids_of_kind, sizeof counters.ids_of_kind);
    counters.plan_rows = l->plan_rows;
    counters.decided_last = l->decided_last;
    counters.closings = l->closings_len;
    counters.corrections = l->corrections_len;
    if (snap_put(s, &layout, sizeof layout) != 0 || snap_put(s, &counters, sizeof counters) != 0 ||
        snap_put_array(s, l->ids, l->ids_len, sizeof *l->ids) != 0 ||
        table_save(&l->id_table, s) != 0 ||
        snap_put_array(s, l->frames, l->frames_len, sizeof *l->frames) != 0 ||
        snap_put_array(s, l->allocations, l->allocations_len, sizeof *l->allocations) != 0 ||
        snap_put_array(s, l->avrop, l->avrop_len, sizeof *l->avrop) != 0 ||
        snap_put_array(s, l->corrections, l->corrections_len, sizeof *l->corrections) != 0 ||
        snap_put_array(s, l->units, l->units_len, sizeof *l->units) != 0 ||
        table_save(&l->unit_table, s) != 0 ||
        snap_put_array(s, l->closings, l->closings_len, sizeof *l->closings) != 0 ||
        snap_put_array(s, l->arena, l->arena_len, 1) != 0 || registry_save(l->reg, s) != 0 ||
        outcome_save(l->outcomes, s) != 0)
        return -1;
    return 0;
}

/* The arena read back, with room for the next event as a live ledger keeps it. */
static int arena_load(ledger *l, snap_source *s)
{
    uint32_t len;
    if (snap_get_u32(s, &len) != 0 || len == 0 || len > UINT32_MAX / 2 || len > s->left)
        return -1;
    uint64_t cap = 4096;
    while (cap < (uint64_t)len + ARENA_EVENT_BYTES_MAX)
        cap *= 2;
    l->arena = bigmem_malloc((size_t)cap);
    if (l->arena == NULL)
        return -1;
    l->arena_cap = (uint32_t)cap;
    l->arena_len = len;
    if (snap_get(s, l->arena, len) != 0 || l->arena[0] != '\0' || l->arena[len - 1] != '\0')
        return -1;
    return 0;
}

ledger *ledger_load(snap_source *s)
{
    save_layout want = layout_now(), layout;
    save_counters counters;
    memset(&counters, 0, sizeof counters); /* layout 1 fills only its start */
    if (snap_get(s, &layout, sizeof layout) != 0)
        return NULL;
    bool first = layout.layout == LEDGER_SAVE_LAYOUT_1;
    if (first)
        want.layout = LEDGER_SAVE_LAYOUT_1;
    if (memcmp(&layout, &want, sizeof want) != 0 ||
        snap_get(s, &counters, first ? sizeof(save_counters_1) : sizeof counters) != 0 ||
        counters.last_seq > SEQ_MAX || counters.events > counters.last_seq)
        return NULL;
    ledger *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->events = counters.events;
    l->last_seq = counters.last_seq;
    l->last_ts_ms = counters.last_ts_ms;
    memcpy(l->ids_of_kind, counters.ids_of_kind, sizeof l->ids_of_kind);
    l->plan_rows = counters.plan_rows;
    l->decided_last = first ? INT32_MAX : counters.decided_last;
    if (snap_get_array(s, (void **)&l->ids, &l->ids_len, &l->ids_cap, sizeof *l->ids,
                       LEDGER_ROWS_MAX) != 0 ||
        table_load(&l->id_table, s, l->ids_len) != 0 ||
        snap_get_array(s, (void **)&l->frames, &l->frames_len, &l->frames_cap, sizeof *l->frames,
                       LEDGER_ROWS_MAX) != 0 ||
        snap_get_array(s, (void **)&l->allocations, &l->allocations_len, &l->allocations_cap,
                       sizeof *l->allocations, LEDGER_ROWS_MAX) != 0 ||
        snap_get_array(s, (void **)&l->avrop, &l->avrop_len, &l->avrop_cap, sizeof *l->avrop,
                       LEDGER_ROWS_MAX) != 0 ||
        snap_get_array(s, (void **)&l->corrections, &l->corrections_len, &l->corrections_cap,
                       sizeof *l->corrections, LEDGER_ROWS_MAX) != 0 ||
        snap_get_array(s, (void **)&l->units, &l->units_len, &l->units_cap, sizeof *l->units,
                       LEDGER_ROWS_MAX) != 0 ||
        table_load(&l->unit_table, s, l->units_len) != 0 ||
        snap_get_array(s, (void **)&l->closings, &l->closings_len, &l->closings_cap,
                       sizeof *l->closings, LEDGER_ROWS_MAX) != 0 ||
        arena_load(l, s) != 0 || (l->reg = registry_load(s)) == NULL ||
        (l->outcomes = outcome_load(s)) == NULL || s->left != 0 || l->plan_rows > l->units_len ||
        (!first &&
         (counters.closings != l->closings_len || counters.corrections != l->corrections_len))) {
        ledger_free(l);
        return NULL;
    }
    for (uint32_t i = 0; i < l->units_len; i++)
        l->units[i].unit[BUDGET_UNIT_BYTES_MAX] = '\0';
    return l;
}

size_t ledger_peek_bytes(void)
{
    return sizeof(save_layout) + sizeof(save_counters);
}

bool ledger_peek_decided_base(const uint8_t *bytes, size_t n, int32_t decided_by)
{
    save_layout want = layout_now();
    save_counters counters;
    if (n < ledger_peek_bytes() || memcmp(bytes, &want, sizeof want) != 0)
        return false;
    memcpy(&counters, bytes + sizeof want, sizeof counters);
    return decided_base(counters.decided_last, counters.closings, counters.corrections, decided_by);
}

int ledger_load_finish(ledger *l)
{
    if (ix_catch_up_to_avrop(l))
        (void)ix_add_all_avrop(l); /* else one at a time, below */
    ix_catch_up(l);
    return ix_current(l) ? 0 : -1;
}
