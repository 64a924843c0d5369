/*
 * The event types of the ledger, one row each, and the fields of each type: the one list that
 * the type enum, the type and kind names, the counts, the event layouts, the write ops, the
 * field checks, the copying and comparing of fields and the write scope are generated from.
 * docs/architecture.md, "Adding an event type", lists what else a new type needs.
 *
 * Included by ledger.h: it needs nothing but the C library.
 */
#ifndef BUDGET_EVENT_TYPES_H
#define BUDGET_EVENT_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What an id names: X(NAME, wire name, count).
 *   NAME   LEDGER_KIND_<NAME> in ledger_kind
 *   wire   its name in answers and messages ("target_kind" of an event holds one)
 *   count  the member of ledger_counts that counts the ids of this kind
 */
#define LEDGER_KINDS(X)                                                                            \
    X(FRAME, "frame", frames)                                                                      \
    X(ADJUSTMENT, "adjustment", adjustments)                                                       \
    X(ALLOCATION, "allocation", allocations)                                                       \
    X(AVROP, "avrop", avrop)                                                                       \
    X(DECISION, "decision", decisions)                                                             \
    X(WITHDRAWAL, "withdrawal", withdrawals)                                                       \
    X(REDUCTION, "reduction", reductions)                                                          \
    X(REVERSAL, "reversal", reversals)                                                             \
    X(REGISTRATION, "registration", registrations)                                                 \
    X(RENAMING, "renaming", renamings)                                                             \
    X(CLOSING, "closing", closings)                                                                \
    X(ADOPTION, "adoption", adoptions)                                                             \
    X(OUTCOME, "outcome", outcomes)

/*
 * The event types: X(NAME, wire name, op, role, kind, fields, rules, scope).
 *   NAME    LEDGER_<NAME> in ledger_type (numbered in row order from 1; the number is never
 *           stored: the log holds the wire name)
 *   wire    the event's "type", as stored and read back (docs/events.md)
 *   op      the write op that makes it (docs/protocol.md)
 *   role    the op needs ACCESS_<role> (access.h)
 *   kind    its id names a LEDGER_KIND_<kind>
 *   fields  its data map is event_fields_<fields> (event_types.c)
 *   rules   ledger.c checks it with rule_<rules> and applies it with apply_<rules>
 *   scope   access.c finds the units it is written for with scope_<scope>
 * Rows are never reordered or removed: an event in a log stays readable.
 */
#define LEDGER_EVENT_TYPES(X)                                                                      \
    X(FRAME_GRANTED, "frame.granted", "frame.grant", ADMIN, FRAME, frame_granted, grant,           \
      given_unit)                                                                                  \
    X(FRAME_ADJUSTED, "frame.adjusted", "frame.adjust", ADMIN, ADJUSTMENT, frame_adjusted, adjust, \
      frame_holder)                                                                                \
    X(ALLOCATION_PROPOSED, "allocation.proposed", "allocation.propose", CLERK, ALLOCATION,         \
      allocation_proposed, propose, frame_holder)                                                  \
    X(AVROP_REQUESTED, "avrop.requested", "avrop.request", CLERK, AVROP, avrop_requested, avrop,   \
      allocation_unit)                                                                             \
    X(DECISION_APPROVED, "decision.approved", "approve", APPROVER, DECISION, decision, target,     \
      target_holder)                                                                               \
    X(DECISION_REJECTED, "decision.rejected", "reject", APPROVER, DECISION, decision, target,      \
      target_holder)                                                                               \
    X(REQUEST_WITHDRAWN, "request.withdrawn", "withdraw", CLERK, WITHDRAWAL, request_withdrawn,    \
      target, none)                                                                                \
    X(ALLOCATION_REDUCTION_REQUESTED, "allocation.reduction_requested", "allocation.reduce",       \
      CLERK, REDUCTION, reduction_requested, reduce, allocation_and_frame)                         \
    X(AVROP_REVERSAL_REQUESTED, "avrop.reversal_requested", "avrop.reverse", CLERK, REVERSAL,      \
      reversal_requested, reverse, avrop_and_frame)                                                \
    X(UNIT_REGISTERED, "unit.registered", "unit.register", ADMIN, REGISTRATION, unit_registered,   \
      register_unit, registered_unit)                                                              \
    X(UNIT_RENAMED, "unit.renamed", "unit.rename", ADMIN, RENAMING, unit_renamed, rename_unit,     \
      registered_unit)                                                                             \
    X(UNIT_CLOSED, "unit.closed", "unit.close", ADMIN, CLOSING, unit_closed, close_unit,           \
      registered_unit)                                                                             \
    X(YEAR_CLOSED, "year.closed", "year.close", ADMIN, CLOSING, year_closed, close_year,           \
      every_unit)                                                                                  \
    X(FRAME_CARRIED_OVER, "frame.carried_over", "frame.carry_over", ADMIN, FRAME,                  \
      frame_carried_over, carry_over, frame_holder)                                                \
    X(BUDGET_ADOPTED, "budget.adopted", "budget.adopt", ADMIN, ADOPTION, budget_adopted, adopt,    \
      line_units)                                                                                  \
    X(OUTCOME_RECORDED, "outcome.recorded", "outcome.record", CLERK, OUTCOME, outcome_recorded,    \
      record_outcome, outcome_unit)

/* The numbers: row order from 1 (0 is no type), and one past the last. The enum of the values
 * below holds only the types, so that a switch over a ledger_type is checked to name them all. */
enum {
#define LEDGER_TYPE_NUMBER(name, wire, op, role, kind, fields, rules, scope)                       \
    LEDGER_TYPE_NUMBER_##name,
    LEDGER_TYPE_NUMBER_NONE_ = 0,
    LEDGER_EVENT_TYPES(LEDGER_TYPE_NUMBER) LEDGER_TYPE_END
#undef LEDGER_TYPE_NUMBER
};

typedef enum {
#define LEDGER_TYPE_ENUM(name, wire, op, role, kind, fields, rules, scope)                         \
    LEDGER_##name = LEDGER_TYPE_NUMBER_##name,
    LEDGER_EVENT_TYPES(LEDGER_TYPE_ENUM)
#undef LEDGER_TYPE_ENUM
} ledger_type;

#define LEDGER_TYPE_FIRST ((ledger_type)1)
#define LEDGER_TYPE_COUNT (LEDGER_TYPE_END - 1)

enum {
#define LEDGER_KIND_NUMBER(name, wire, count) LEDGER_KIND_NUMBER_##name,
    LEDGER_KIND_NUMBER_NONE_ = 0,
    LEDGER_KINDS(LEDGER_KIND_NUMBER) LEDGER_KIND_END
#undef LEDGER_KIND_NUMBER
};

typedef enum {
#define LEDGER_KIND_ENUM(name, wire, count) LEDGER_KIND_##name = LEDGER_KIND_NUMBER_##name,
    LEDGER_KINDS(LEDGER_KIND_ENUM)
#undef LEDGER_KIND_ENUM
} ledger_kind;

static inline bool ledger_type_known(ledger_type t)
{
    return (int)t >= 1 && (int)t < (int)LEDGER_TYPE_END;
}

/* ---- the fields of each type ------------------------------------------------------------ */

/* What a field's value is, and the rule it obeys. */
typedef enum {
    FIELD_ID,          /* str: 1..64 of A-Za-z0-9._:- */
    FIELD_UNIT,        /* str: 1..32 of A-Za-z0-9._:- */
    FIELD_YEAR,        /* int: BUDGET_YEAR_MIN..BUDGET_YEAR_MAX */
    FIELD_AMOUNT,      /* int: 1..BUDGET_AMOUNT_MAX (öre) */
    FIELD_DELTA,       /* int: non-zero, -BUDGET_AMOUNT_MAX..BUDGET_AMOUNT_MAX (öre) */
    FIELD_TEXT,        /* str: UTF-8 without control characters, up to the limit (256 bytes) */
    FIELD_TARGET_KIND, /* str: "allocation", "avrop", "reduction" or "reversal" (a ledger_kind) */
    FIELD_DATE,        /* str "YYYY-MM-DD", a real day in BUDGET_YEAR_MIN..MAX; in the struct an
                          int32 YYYYMMDD (proto/fields.h), 0 when absent */
    FIELD_BODY,        /* str: a decision's body, 1..16 of A-Z Å Ä Ö 0-9 ("KS") */
    FIELD_PARAGRAPH,   /* str: a decision's paragraph, 1..16 ("241", "241 p. 2") */
    FIELD_TOTAL,       /* int: 0..INT64_MAX (öre), a sum the ledger derives (never given) */
    FIELD_LINES,       /* array of 1..BUDGET_ADOPT_LINES_MAX maps, the lines of a budget
                          adoption (a ledger_lines in the struct; docs/events.md) */
    FIELD_MONTH,       /* int: a month of the fiscal year, 1..12 */
    FIELD_MONEY,       /* int: signed, zero too, -BUDGET_AMOUNT_MAX..BUDGET_AMOUNT_MAX (öre) */
} field_value;

/* Where a field's value comes from. */
typedef enum {
    FIELD_REQUIRED, /* the client gives it; a text is then 1..limit bytes */
    FIELD_OPTIONAL, /* the client may give it: "" when not; a text is 0..limit bytes */
    FIELD_DERIVED,  /* ledger_check fills it from the state (ledger.c, derive) */
} field_source;

/* Flags of a field. */
enum {
    FIELD_KEPT = 1u << 0, /* a text the state keeps: replay checks it too */
    /* Added to a type after events of it were written: an event read back may lack every
     * added field of its type at once (its data map is shorter by their number), and then
     * decodes with them empty ("" and 0). A new write must still give the required ones. */
    FIELD_ADDED = 1u << 1,
    /* a unit the event brings into the register (unit.registered's own): not required to be
     * registered already, as every other unit a write names is */
    FIELD_NEW_UNIT = 1u << 3,
    /* With FIELD_ADDED: added in a later round than the type's other added fields (after events
     * with those were written). Such an event may lack the later round only, and its data map
     * is then shorter by the later fields: a type has a layout per round (field_round). */
    FIELD_ADDED_LATER = 1u << 2,
    /* With FIELD_ADDED: added in a round after the FIELD_ADDED_LATER fields of its type. */
    FIELD_ADDED_LAST = 1u << 4,
};

/* The round in which a field came to its type: 0 with the type, 1 FIELD_ADDED, 2 also
 * FIELD_ADDED_LATER, 3 also FIELD_ADDED_LAST. An event of round r has exactly the fields of
 * rounds 0..r. */
#define FIELD_ROUNDS 4
static inline unsigned field_round(uint8_t flags)
{
    return !(flags & FIELD_ADDED)        ? 0
           : (flags & FIELD_ADDED_LAST)  ? 3
           : (flags & FIELD_ADDED_LATER) ? 2
                                         : 1;
}

/*
 * One field of an event: its key in the data map (and the name of the write op's arg), what
 * it holds, where it comes from, and its member of ledger_event. The limit of a str is its
 * member's size less the NUL.
 */
typedef struct {
    const char *key;
    uint8_t key_len;
    uint8_t value;  /* field_value */
    uint8_t source; /* field_source */
    uint8_t flags;
    uint16_t offset; /* of the member in ledger_event */
    uint16_t size;   /* of the member, bytes */
} event_field;

/* A data map has at most this many fields (its header is one byte, a fixmap). */
#define EVENT_FIELDS_MAX 15

typedef struct {
    const char *name; /* the wire name */
    uint8_t name_len;
    const char *op;      /* the write op */
    ledger_kind creates; /* what its id names */
    uint8_t field_count;
    const event_field *fields; /* in the order of the data map */
} event_type_info;

/* The row of each known type, indexed by ledger_type (row 0 is empty). */
extern const event_type_info event_types[LEDGER_TYPE_END];

/* The wire name of each kind, indexed by ledger_kind (NULL at 0). */
extern const char *const event_kind_names[LEDGER_KIND_END];

/* A field's limit in bytes, for a str field. */
static inline size_t field_bytes_max(const event_field *f)
{
    return (size_t)f->size - 1;
}

static inline bool field_is_str(const event_field *f)
{
    return f->value == FIELD_ID || f->value == FIELD_UNIT || f->value == FIELD_TEXT ||
           f->value == FIELD_BODY || f->value == FIELD_PARAGRAPH;
}

/* The least bytes a str field may hold: 1, but 0 for an optional text, unit or id ("" when it
 * is not given). */
static inline size_t field_bytes_min(const event_field *f)
{
    return (f->value == FIELD_TEXT || f->value == FIELD_UNIT || f->value == FIELD_ID) &&
                   f->source == FIELD_OPTIONAL
               ? 0
               : 1;
}

#endif
