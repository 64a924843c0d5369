/*
 * The ledger core: the rules of the budget and the balances they leave. Pure: no I/O, no
 * libuv, no LMDB. Given state and a command, ledger_check says which event it makes or why
 * not; given an event, ledger_apply updates the state. Start-up replay, the daemon's write
 * path, `balances as_of` and offline audit all go through these two functions.
 */
#ifndef BUDGET_LEDGER_H
#define BUDGET_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "budget/limits.h"

/* ledger_type and ledger_kind, and the fields of each type, come from one list: */
#include "event_types.h"
#include "outcome.h"
#include "registry.h"
#include "snapio.h"

typedef enum {
    LEDGER_PENDING = 0,
    LEDGER_APPROVED,
    LEDGER_REJECTED,
    LEDGER_WITHDRAWN,
} ledger_status;

/* Who did it: from the socket's peer credentials, never from the client's word. */
typedef struct {
    uint32_t uid;
    char name[BUDGET_NAME_BYTES_MAX + 1]; /* "" when the uid has no passwd entry */
} ledger_actor;

/*
 * One line of a budget adoption (budget.adopted): the unit, its binding frame for the budget
 * year (`amount`, öre), the frame that frame continues ("" when none), and its planned amount
 * for each plan year in order (`plan[0]` for the year after the budget year), `plans` of them.
 */
typedef struct {
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    char continues[BUDGET_ID_BYTES_MAX + 1];
    uint8_t plans;
    int64_t amount;
    int64_t plan[BUDGET_PLAN_YEARS_MAX];
} ledger_line;

/* The lines of a budget adoption, `count` of them (the field value FIELD_LINES). */
typedef struct {
    uint16_t count;
    ledger_line line[BUDGET_ADOPT_LINES_MAX];
} ledger_lines;

/*
 * An event, decoded. Which fields are meaningful depends on `type`: its field table
 * (event_types.c, and docs/events.md) names them, in the order of the data map, and says which
 * the client gives and which ledger_check derives from the state and stores in the event, so
 * that a reader can filter events by unit or frame without the state. A field keeps the name
 * of its member or another (frame.adjusted's "delta" is `amount`, its "reason" `title`).
 * Strings are NUL-terminated; an absent optional string is "".
 */
typedef struct {
    ledger_type type;
    uint64_t seq;
    uint64_t ts_ms;
    ledger_actor actor;
    char id[BUDGET_ID_BYTES_MAX + 1];
    char frame[BUDGET_ID_BYTES_MAX + 1];
    char allocation[BUDGET_ID_BYTES_MAX + 1];
    char target[BUDGET_ID_BYTES_MAX + 1];
    ledger_kind target_kind; /* LEDGER_KIND_ALLOCATION, _AVROP, _REDUCTION or _REVERSAL */
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    int32_t year;
    int64_t amount;
    char title[BUDGET_TEXT_BYTES_MAX + 1];
    char reference[BUDGET_TEXT_BYTES_MAX + 1];
    char note[BUDGET_TEXT_BYTES_MAX + 1];
    char unit_kind[REGISTRY_KIND_BYTES_MAX + 1]; /* unit.registered's "kind" */
    char parent[BUDGET_UNIT_BYTES_MAX + 1];      /* unit.registered's "parent", "" for none */
    /* The decision the event rests on (DECISION_FIELDS of event_types.c): body, date as
     * YYYYMMDD, paragraph and diary number. An event of a type that rests on a decision but
     * was written before decisions were data has none: "", 0, "", "". */
    char decision_body[BUDGET_DECISION_BODY_BYTES_MAX + 1];
    int32_t decision_date;
    char decision_paragraph[BUDGET_DECISION_PARAGRAPH_BYTES_MAX + 1];
    char decision_dnr[BUDGET_DECISION_DNR_BYTES_MAX + 1];
    /* The last day (YYYYMMDD) an avrop may be requested on, of a frame or an allocation; 0
     * when none (the window is then the frame's, or has no end). */
    int32_t avrop_last_day;
    int32_t month; /* outcome.recorded's month, 1..12 */
    /* Of a command only, never stored: frame.grant's "intended", a grant meant to be like an
     * existing one (ledger_check refuses a likely duplicate without it). */
    bool intended;
    /* The frame a new frame continues ("" when none): frame.granted's optional "continues". */
    char continues[BUDGET_ID_BYTES_MAX + 1];
    /* budget.adopted: the last plan year (the budget year is `year`), and the lines. The
     * lines come last, so that an event of another type is read and written in its first
     * bytes only. */
    int32_t plan_until;
    ledger_lines lines;
} ledger_event;

/*
 * A command: what a client asks for. The same struct as an event, with only the fields the
 * client gives filled in (`type` names the event it would make; seq, actor and the derived
 * fields are left zero, and ts is the time of entry the caller will stamp the event with). Keeping
 * one struct lets a retry be compared with the event it made (ledger_same_request).
 */
typedef ledger_event ledger_cmd;

/*
 * An event is about 13 KiB, nearly all of it the lines of a budget adoption, and the write
 * path clears and copies one several times per write. The items of `lines` past
 * `lines.count` are never read, so these clear and copy only the bytes before them and the
 * lines in use: a few KiB for any event, the whole struct only for an adoption of every line.
 */
static inline void ledger_event_clear(ledger_event *ev)
{
    memset(ev, 0, offsetof(ledger_event, lines.line));
}

static inline void ledger_event_copy(ledger_event *dst, const ledger_event *src)
{
    memcpy(dst, src, offsetof(ledger_event, lines.line));
    size_t n =
        src->lines.count < BUDGET_ADOPT_LINES_MAX ? src->lines.count : BUDGET_ADOPT_LINES_MAX;
    memcpy(dst->lines.line, src->lines.line, n * sizeof(src->lines.line[0]));
}

/* The str member of `ev` that field `f` names (NUL-terminated within f->size bytes). */
static inline const char *ledger_field_str(const ledger_event *ev, const event_field *f)
{
    return (const char *)ev + f->offset;
}

/* The value of an int field (year, amount, delta, target_kind) of `ev`. */
static inline int64_t ledger_field_int(const ledger_event *ev, const event_field *f)
{
    const char *at = (const char *)ev + f->offset;
    if (f->size == sizeof(int64_t)) {
        int64_t v;
        memcpy(&v, at, sizeof v);
        return v;
    }
    int32_t v; /* year, a date, or a ledger_kind */
    memcpy(&v, at, sizeof v);
    return v;
}

static inline void ledger_field_set_int(ledger_event *ev, const event_field *f, int64_t v)
{
    char *at = (char *)ev + f->offset;
    if (f->size == sizeof(int64_t)) {
        memcpy(at, &v, sizeof v);
    } else {
        int32_t n = (int32_t)v;
        memcpy(at, &n, sizeof n);
    }
}

_Static_assert(sizeof(ledger_kind) == sizeof(int32_t) && sizeof(((ledger_event *)0)->year) == 4 &&
                   sizeof(((ledger_event *)0)->decision_date) == 4 &&
                   sizeof(((ledger_event *)0)->avrop_last_day) == 4 &&
                   sizeof(((ledger_event *)0)->month) == 4 &&
                   sizeof(((ledger_event *)0)->amount) == 8,
               "int fields are of 4 or 8 bytes");

/* An error from ledger_check: a budget_err value and one line for the client. */
typedef struct {
    int code;
    char message[200];
} ledger_error;

typedef struct ledger ledger;

/* Balances, as views into the state: valid until the next ledger_apply or ledger_free. */
typedef struct {
    const char *id, *unit, *title, *reference;
    const char *continues; /* the id of the frame this one continues, "" when none */
    int32_t year;
    int64_t granted, allocated, pending, unallocated, called_off;
    /* The year's end: whether the frame's year is closed; what it kept (unallocated, and
     * allocated but not called off: granted - pending - called_off); how much of that
     * frame.carried_over took to the next year; the frame it was itself carried over from
     * (NULL when granted); its last day for avrop (YYYYMMDD, 0 when none). */
    bool closed;
    int64_t unspent, carried_over;
    const char *carried_from;
    int32_t avrop_last_day;
    bool granted_later; /* ledger_apply_decided: its grant was decided after the day */
} ledger_frame_view;

typedef struct {
    const char *id, *frame, *unit, *purpose;
    int32_t year;
    ledger_status status;
    /* amount: after approved reductions; reduced: their sum; reducing: pending reductions */
    int64_t amount, called_off, pending, available, reduced, reducing;
    int32_t avrop_last_day; /* its own, YYYYMMDD; 0 when it has none (its frame's holds) */
} ledger_allocation_view;

typedef struct {
    const char *id, *allocation, *unit;
    ledger_status status;
    /* amount: as requested; reversed: approved reversals of it; reversing: pending ones */
    int64_t amount, reversed, reversing;
} ledger_avrop_view;

/* A reduction of an allocation or a reversal of an avrop (avrop NULL for a reduction). */
typedef struct {
    const char *id, *allocation, *avrop;
    ledger_kind kind; /* LEDGER_KIND_REDUCTION or LEDGER_KIND_REVERSAL */
    ledger_status status;
    int64_t amount;
} ledger_correction_view;

typedef struct {
    const char *unit;
    int32_t year;
    int64_t frames, allocated, called_off, pending, available;
    int64_t reducing; /* pending reductions of allocations to the unit */
} ledger_unit_view;

/*
 * One row of the units × years view: a unit in a year, with its frames (the binding budget),
 * the plan amount the latest adoption of an earlier budget year set for it (`has_plan`;
 * `plan_by` is that adoption's budget year), and what the unit received and called off.
 */
typedef struct {
    const char *unit;
    int32_t year;
    bool has_plan;
    int32_t plan_by;
    int64_t budget, plan, allocated, called_off, pending, available;
} ledger_year_view;

/* A new empty ledger, or NULL when out of memory. */
ledger *ledger_new(void);
void ledger_free(ledger *l);
/* A deep copy, or NULL when out of memory. O(size of the state). */
ledger *ledger_clone(const ledger *l);

/*
 * The state as bytes into `sink` (snapio.h): every array as it is in memory, with the layout
 * of the records, so that only the same build's ledger_load takes it back. O(size of the
 * state); the ledger is only read. 0, or -1 when the sink fails.
 */
int ledger_save(const ledger *l, snap_sink *sink);

/*
 * A ledger read back from what ledger_save wrote, all of the source's bytes. Every count and
 * length is checked against what the source has left and against the ledger's bounds before
 * anything is allocated, so bytes of any kind cost at most their size and never crash it; NULL
 * when they are not such a state (another layout, a count out of bounds, trailing bytes) or out
 * of memory. The links between records are as they were written and are not checked: the
 * caller must know the bytes are authentic (snapshot.c checks a keyed hash over them) before
 * ledger_load_finish, and free the ledger otherwise. Nothing but ledger_free and
 * ledger_load_finish may be called on the ledger before that.
 */
ledger *ledger_load(snap_source *source);
/*
 * True when what had been decided by `decided_by` at this state's point is this state itself, so
 * that such a view may start from it (a snapshot), with the events after it applied by
 * ledger_apply_decided: every event applied that the view counts by its day (one resting on a
 * decision, or a withdrawal) is dated on or before that day, and no year was closed and no
 * reduction or reversal asked for (the view leaves those out whatever the day). `l` holds events
 * applied by ledger_apply. O(1).
 */
bool ledger_decided_base(const ledger *l, int32_t decided_by);

/* How many bytes at the start of what ledger_save wrote ledger_peek_decided_base reads. */
size_t ledger_peek_bytes(void);
/* ledger_decided_base of the state whose saved bytes begin with the `n` at `bytes`; false when
 * they are too few or not the start of a state this build saves. A hint only: bytes not yet
 * known to be authentic are read, so the state loaded from them is to be asked again. */
bool ledger_peek_decided_base(const uint8_t *bytes, size_t n, int32_t decided_by);

/* Makes the index of balances' lists again for a ledger from ledger_load; after it the ledger
 * is as the one saved. O(entities). 0, or -1 when out of memory (the ledger is then to be
 * freed). */
int ledger_load_finish(ledger *l);

/*
 * Checks `cmd` by `actor` against the state and, when every rule of docs/events.md holds,
 * fills `out` with the event it makes (cmd's fields, the actor, and the derived fields;
 * seq is left for the caller). cmd->ts_ms is the time the event will be stamped with, which
 * the rules read (an avrop's last day: docs/events.md); it is copied to out. Returns:
 *   0                         the event may be appended;
 *   1                         cmd->id already exists: *existing_seq is the seq of the event
 *                             that created it (the caller compares content: idempotent retry
 *                             or conflict);
 *   a negative budget_err     with `err` filled (bad_request, not_found, insufficient_funds,
 *                             invalid_state, forbidden, conflict).
 * Does not change the state. Field syntax (id characters, lengths, amount range) is checked
 * here too, so an event that passes can always be applied.
 */
int ledger_check(const ledger *l, const ledger_cmd *cmd, const ledger_actor *actor,
                 ledger_event *out, uint64_t *existing_seq, ledger_error *err);

/*
 * Applies an event (from ledger_check, or read back from the log) to the state. Returns 0,
 * BUDGET_EINTERNAL when the event breaks a rule against this state (a log that was not
 * written by ledger_check, or a bug: the state is unchanged), or BUDGET_EUNAVAILABLE when
 * out of memory (the state is unchanged).
 */
int ledger_apply(ledger *l, const ledger_event *ev);

/*
 * The two halves of ledger_apply, for a replay that checks on one thread and applies on
 * another: ledger_syntax_ok looks only at the event (ids, units, amounts, texts) and needs no
 * state; ledger_apply_syntax_ok applies an event that passed it, with every other check of
 * ledger_apply. Together they accept and refuse exactly what ledger_apply does.
 */
bool ledger_syntax_ok(const ledger_event *ev);
int ledger_apply_syntax_ok(ledger *l, const ledger_event *ev);

/*
 * True when `ev` (an event in the log, or on its way there) is what `cmd` sent by `actor`
 * would have made: the same uid, type and client-given fields. Used to answer a retry with
 * the same id. A retry counts only from the uid that first sent it: the same request from
 * another uid is a conflict, or it could take over an event (and the four-eyes rule that
 * follows from who proposed it). The actor's name is not compared: it may change between
 * connections of one uid.
 */
bool ledger_same_request(const ledger_cmd *cmd, const ledger_actor *actor, const ledger_event *ev);

/*
 * What had been decided by a day, whenever it was entered. `l` holds events applied only by
 * this function, in log order; `decided_by` is a day YYYYMMDD. An event that rests on a
 * decision counts when its decision is dated on or before that day; one that carries none
 * (written before decisions were data) by the day it was entered (UTC), as does a withdrawal.
 * A grant decided later leaves its frame with nothing granted (the view's granted_later), an
 * adjustment or decision decided later is left out: its target stays pending. Requests
 * (proposals, avrop) always count. The rules of the budget are not checked, for a raise
 * decided later may have been entered first: the balances may show more allocated than
 * granted, or more called off than allocated, and are to be shown as they are. Returns 0,
 * BUDGET_EINTERNAL (not an event of the log: seq out of order, bad syntax) or
 * BUDGET_EUNAVAILABLE (out of memory).
 */
int ledger_apply_decided(ledger *l, const ledger_event *ev, int32_t decided_by);
/* The same for an event that passed ledger_syntax_ok (a replay checks it on its walker). */
int ledger_apply_decided_syntax_ok(ledger *l, const ledger_event *ev, int32_t decided_by);
/* The day an event's decision is dated, or, when it carries none, the day it was entered. */
int32_t ledger_decision_day(const ledger_event *ev);

/* Number of events applied, and the seq and ts (ms) of the last one; 0 when there is none. */
uint64_t ledger_events(const ledger *l);
uint64_t ledger_last_seq(const ledger *l);
uint64_t ledger_last_ts(const ledger *l);

/* Counts of entities: of the ids of each kind (LEDGER_KINDS names the members), and units. */
typedef struct {
#define LEDGER_COUNT_MEMBER(name, wire, count) uint64_t count;
    LEDGER_KINDS(LEDGER_COUNT_MEMBER)
#undef LEDGER_COUNT_MEMBER
    uint64_t units;
} ledger_counts;
void ledger_get_counts(const ledger *l, ledger_counts *out);

/* The register of units (registry.h), as the ledger stands: valid until the next ledger_apply
 * or ledger_free. */
const registry *ledger_registry(const ledger *l);

/* Lookups; return false when the id does not exist or names another kind. */
bool ledger_frame(const ledger *l, const char *id, ledger_frame_view *out);
bool ledger_allocation(const ledger *l, const char *id, ledger_allocation_view *out);
bool ledger_avrop(const ledger *l, const char *id, ledger_avrop_view *out);
/* A reduction or a reversal; false when `id` names neither. */
bool ledger_correction(const ledger *l, const char *id, ledger_correction_view *out);
/* The note of an avrop (valid as the views are), or NULL when `id` does not name an avrop. */
const char *ledger_avrop_note(const ledger *l, const char *id);
/* The kind an id names, or 0 when unused. */
ledger_kind ledger_id_kind(const ledger *l, const char *id);
/* The seq of the event that created `id`; false when the ledger holds no such id. */
bool ledger_id_seq(const ledger *l, const char *id, uint64_t *seq);

/*
 * Iteration in order of creation. `i` starts at 0; each call returns true and fills `out`
 * with the next entity that matches the filter (NULL / 0 = any), advancing `*i`; false at
 * the end. O(1) per entity visited.
 */
bool ledger_next_frame(const ledger *l, size_t *i, const char *unit, int32_t year,
                       ledger_frame_view *out);
bool ledger_next_allocation(const ledger *l, size_t *i, const char *frame, const char *unit,
                            int32_t year, ledger_allocation_view *out);
bool ledger_next_avrop(const ledger *l, size_t *i, const char *allocation, ledger_avrop_view *out);
bool ledger_next_unit(const ledger *l, size_t *i, const char *unit, int32_t year,
                      ledger_unit_view *out);

/* The id of the year.closed event that closed fiscal year `year`, or NULL while it is open. */
const char *ledger_year_closed(const ledger *l, int32_t year);

/*
 * The rows of the units × years view, in order of first appearance: every (unit, year) with
 * `from` <= year <= `to` that holds frames, received allocations or has a plan amount (and is
 * `unit`, when not NULL). As the other iterations.
 */
bool ledger_next_year_row(const ledger *l, size_t *i, const char *unit, int32_t from, int32_t to,
                          ledger_year_view *out);

/*
 * Paging by position: ledger_seek_* sets a cursor at the match number `offset` (0-based) of
 * the same filters, in the same order, and each ledger_cursor_* call then fills `out` with
 * the next match; false at the end. Unfiltered, a filter of unit, year or both, a frame's
 * allocations and an allocation's avrop are answered from lists the ledger keeps as events
 * apply: seeking is O(1) and each match O(1), whatever the offset. ledger_seek_* returns false
 * when it has no list for the filter (a frame with a unit or year, or lists left behind by a
 * failed allocation): the caller walks with ledger_next_* instead. Valid until the next
 * ledger_apply or ledger_free.
 */
typedef struct {
    const uint32_t *items; /* the matches, from a list of the ledger; NULL: see `next` */
    uint32_t at, end;      /* the position of the next match, and the number of matches */
    uint32_t next;         /* without items: the next match, by link or (not linked) counting up */
    bool linked;
} ledger_cursor;

bool ledger_seek_frames(const ledger *l, const char *unit, int32_t year, uint64_t offset,
                        ledger_cursor *c);
bool ledger_seek_allocations(const ledger *l, const char *frame, const char *unit, int32_t year,
                             uint64_t offset, ledger_cursor *c);
bool ledger_seek_avrop(const ledger *l, const char *allocation, uint64_t offset, ledger_cursor *c);
bool ledger_seek_units(const ledger *l, const char *unit, int32_t year, uint64_t offset,
                       ledger_cursor *c);
bool ledger_cursor_frame(const ledger *l, ledger_cursor *c, ledger_frame_view *out);
bool ledger_cursor_allocation(const ledger *l, ledger_cursor *c, ledger_allocation_view *out);
bool ledger_cursor_avrop(const ledger *l, ledger_cursor *c, ledger_avrop_view *out);
bool ledger_cursor_unit(const ledger *l, ledger_cursor *c, ledger_unit_view *out);

/*
 * A unit's outcome (utfall) in a fiscal year set against its budget (docs/protocol.md,
 * "outcome"). `budget`: the unit's frames, less what is allocated out of them, plus the
 * allocations it received (approved, after reductions); `outcome`: the sum of its months;
 * `deviation = budget - outcome`; `forecast = outcome * 12 / last_month` (0 without outcome),
 * rounded toward zero; `used_permille = outcome * 1000 / budget`, rounded toward zero, when
 * `has_used` (a budget above 0).
 */
typedef struct {
    int64_t budget, outcome, deviation, forecast, used_permille;
    bool has_used;
    int64_t months[OUTCOME_MONTHS]; /* the sum of each month, January first */
    int last_month;                 /* the latest month with a figure; 0 when none */
    uint32_t figures;               /* keys with a figure */
} ledger_outcome_view;

/* The outcome of `unit` in `year`: zeros when nothing was recorded. O(1). */
void ledger_outcome(const ledger *l, const char *unit, int32_t year, ledger_outcome_view *out);
/* The figures themselves (outcome.h), as the ledger stands: valid as the views are. */
const outcome_book *ledger_outcomes(const ledger *l);

const char *ledger_type_name(ledger_type t); /* "frame.granted", ... */
/* (ledger_type_known(t), in event_types.h: t names a type of the list.) */
ledger_type ledger_type_from_name(const char *s, size_t len); /* 0 when unknown */
const char *ledger_status_name(ledger_status s);              /* "pending", ... */
const char *ledger_kind_name(ledger_kind k); /* "frame", "allocation", "avrop", ... */

/* Field syntax shared with the codec: 1..64 of A-Za-z0-9._:- ; units 1..32 of the same. */
bool ledger_valid_id(const char *s, size_t len);
bool ledger_valid_unit(const char *s, size_t len);
/* Valid UTF-8 with no control characters, len bytes within [min, BUDGET_TEXT_BYTES_MAX]. */
bool ledger_valid_text(const char *s, size_t len, size_t min);

/* True when `ev` lacks every field added to its type (FIELD_ADDED) since its first events:
 * an event written before them, which encodes without them. False when its type has none. */
bool ledger_added_absent(const ledger_event *ev);

/* The round of fields added to its type that `ev` was written with (field_round): the last
 * round of which it has a field that is not empty; 0 when it has none. It is encoded with the
 * fields of rounds 0..that one. */
unsigned ledger_added_round(const ledger_event *ev);

/* True when `ev` carries a decision (its decision_date is set). */
static inline bool ledger_has_decision(const ledger_event *ev)
{
    return ev->decision_date != 0;
}

#endif
