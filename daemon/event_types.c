/*
 * The fields of each event type (event_types.h): one table per data map, in the order of the
 * map (docs/events.md). The type rows themselves are LEDGER_EVENT_TYPES.
 */
#include <stddef.h>

#include "ledger.h"

#define MEMBER_SIZE(member) sizeof(((ledger_event *)0)->member)
#define FIELD(key, value, source, flags, member)                                                   \
    {                                                                                              \
        (key), (uint8_t)(sizeof(key) - 1), (value), (source), (flags),                             \
            offsetof(ledger_event, member), MEMBER_SIZE(member)                                    \
    }

/* The fields most types share. */
#define ID FIELD("id", FIELD_ID, FIELD_REQUIRED, 0, id)
#define DERIVED_FRAME FIELD("frame", FIELD_ID, FIELD_DERIVED, 0, frame)
#define DERIVED_UNIT FIELD("unit", FIELD_UNIT, FIELD_DERIVED, 0, unit)
#define DERIVED_YEAR FIELD("year", FIELD_YEAR, FIELD_DERIVED, 0, year)
#define TARGET FIELD("target", FIELD_ID, FIELD_REQUIRED, 0, target)
#define TARGET_KIND FIELD("target_kind", FIELD_TARGET_KIND, FIELD_DERIVED, 0, target_kind)
#define REFERENCE FIELD("reference", FIELD_TEXT, FIELD_OPTIONAL, 0, reference)
#define NOTE FIELD("note", FIELD_TEXT, FIELD_OPTIONAL, 0, note)

/*
 * The decision (beslut) a write rests on, as data: the body that decided ("KS"), the date of
 * the decision (beside the event's ts, the time of entry), its paragraph ("241") and, when
 * given, its diary number ("KS 2021/123"). Four fields, in this order, with these names; a
 * new type that rests on a decision lists DECISION_FIELDS in its table. DECISION_FIELDS_AS
 * gives them other flags: the types that carried only a free-text reference before decisions
 * were data list them with FIELD_ADDED, so that their old events still decode.
 */
#define DECISION_FIELDS_AS(flags)                                                                  \
    FIELD("decision_body", FIELD_BODY, FIELD_REQUIRED, (flags), decision_body),                    \
        FIELD("decision_date", FIELD_DATE, FIELD_REQUIRED, (flags), decision_date),                \
        FIELD("decision_paragraph", FIELD_PARAGRAPH, FIELD_REQUIRED, (flags), decision_paragraph), \
        FIELD("decision_dnr", FIELD_TEXT, FIELD_OPTIONAL, (flags), decision_dnr)
#define DECISION_FIELDS DECISION_FIELDS_AS(0)

/* The last day an avrop may be requested on (optional): of a frame, or of an allocation,
 * which then overrides its frame's. Added to frame.granted and allocation.proposed after
 * events of them were written, and after frame.granted's decision: round 2 (FIELD_ADDED |
 * FIELD_ADDED_LATER; field_round). */
#define AVROP_LAST_DAY_AS(flags)                                                                   \
    FIELD("avrop_last_day", FIELD_DATE, FIELD_OPTIONAL, (flags), avrop_last_day)

static const event_field event_fields_frame_granted[] = {
    ID,
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, 0, unit),
    FIELD("year", FIELD_YEAR, FIELD_REQUIRED, 0, year),
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("title", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    DECISION_FIELDS_AS(FIELD_ADDED),
    FIELD("reference", FIELD_TEXT, FIELD_OPTIONAL, FIELD_KEPT, reference),
    AVROP_LAST_DAY_AS(FIELD_ADDED | FIELD_ADDED_LATER),
    /* The earlier frame this one continues; added after frame.granted events with a decision
     * were written, and after its avrop_last_day: a round of its own. */
    FIELD("continues", FIELD_ID, FIELD_OPTIONAL, FIELD_ADDED | FIELD_ADDED_LAST, continues),
};

static const event_field event_fields_frame_adjusted[] = {
    ID,
    FIELD("frame", FIELD_ID, FIELD_REQUIRED, 0, frame),
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("delta", FIELD_DELTA, FIELD_REQUIRED, 0, amount),
    FIELD("reason", FIELD_TEXT, FIELD_REQUIRED, 0, title),
    DECISION_FIELDS_AS(FIELD_ADDED),
    REFERENCE,
};

static const event_field event_fields_allocation_proposed[] = {
    ID,
    FIELD("frame", FIELD_ID, FIELD_REQUIRED, 0, frame),
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, 0, unit),
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("purpose", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    AVROP_LAST_DAY_AS(FIELD_ADDED | FIELD_ADDED_LATER),
};

static const event_field event_fields_avrop_requested[] = {
    ID,
    FIELD("allocation", FIELD_ID, FIELD_REQUIRED, 0, allocation),
    DERIVED_FRAME,
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("note", FIELD_TEXT, FIELD_OPTIONAL, FIELD_KEPT, note),
};

/* decision.approved and decision.rejected */
static const event_field event_fields_decision[] = {
    ID,
    TARGET,
    TARGET_KIND,
    DERIVED_FRAME,
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_DERIVED, 0, amount),
    DECISION_FIELDS_AS(FIELD_ADDED),
    REFERENCE,
    NOTE,
};

static const event_field event_fields_request_withdrawn[] = {
    ID,
    TARGET,
    TARGET_KIND,
    DERIVED_FRAME,
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_DERIVED, 0, amount),
    NOTE,
};

/* allocation.reduction_requested: the allocation and the amount to take back from it */
static const event_field event_fields_reduction_requested[] = {
    ID,
    FIELD("allocation", FIELD_ID, FIELD_REQUIRED, 0, allocation),
    DERIVED_FRAME,
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("reason", FIELD_TEXT, FIELD_REQUIRED, 0, title),
};

/* avrop.reversal_requested: the avrop (kept in `target`) and the part of it to reverse */
static const event_field event_fields_reversal_requested[] = {
    ID,
    FIELD("avrop", FIELD_ID, FIELD_REQUIRED, 0, target),
    FIELD("allocation", FIELD_ID, FIELD_DERIVED, 0, allocation),
    DERIVED_FRAME,
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("reason", FIELD_TEXT, FIELD_REQUIRED, 0, title),
};

/* The register of units (docs/events.md, "Units"): the unit's code is `unit`, its name is kept
 * in `title`. */
static const event_field event_fields_unit_registered[] = {
    ID,
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, FIELD_NEW_UNIT, unit),
    FIELD("name", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    FIELD("kind", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, unit_kind),
    FIELD("parent", FIELD_UNIT, FIELD_OPTIONAL, 0, parent),
    REFERENCE,
};

static const event_field event_fields_unit_renamed[] = {
    ID,
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, 0, unit),
    FIELD("name", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    REFERENCE,
};

static const event_field event_fields_unit_closed[] = {
    ID,
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, 0, unit),
    REFERENCE,
};

/* The close of a fiscal year; "unspent" is what its frames kept: neither allocated nor called
 * off (granted - called off, for nothing is pending), summed when the year was closed. */
static const event_field event_fields_year_closed[] = {
    ID,
    FIELD("year", FIELD_YEAR, FIELD_REQUIRED, 0, year),
    FIELD("unspent", FIELD_TOTAL, FIELD_DERIVED, 0, amount),
    DECISION_FIELDS,
    NOTE,
};

/* Ombudgetering: `amount` of the unspent money of `frame` (of a closed year, held by `unit`)
 * goes to a new frame, `id`, of the same unit for year + 1, with its own title and window. */
static const event_field event_fields_frame_carried_over[] = {
    ID,
    FIELD("frame", FIELD_ID, FIELD_REQUIRED, 0, frame),
    DERIVED_UNIT,
    DERIVED_YEAR,
    FIELD("amount", FIELD_AMOUNT, FIELD_REQUIRED, 0, amount),
    FIELD("title", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    AVROP_LAST_DAY_AS(0),
    DECISION_FIELDS,
};

/* One decision adopts a budget year with its plan years: a binding frame per line, plan
 * amounts for the years year+1..plan_until. */
static const event_field event_fields_budget_adopted[] = {
    ID,
    FIELD("year", FIELD_YEAR, FIELD_REQUIRED, 0, year),
    FIELD("plan_until", FIELD_YEAR, FIELD_REQUIRED, 0, plan_until),
    FIELD("title", FIELD_TEXT, FIELD_REQUIRED, FIELD_KEPT, title),
    FIELD("lines", FIELD_LINES, FIELD_REQUIRED, 0, lines),
    DECISION_FIELDS,
};

/* outcome.recorded: the figure of a unit's month (and allocation, when given) in öre, costs
 * positive, and the file it came from in `note`. */
static const event_field event_fields_outcome_recorded[] = {
    ID,
    FIELD("unit", FIELD_UNIT, FIELD_REQUIRED, 0, unit),
    FIELD("year", FIELD_YEAR, FIELD_REQUIRED, 0, year),
    FIELD("month", FIELD_MONTH, FIELD_REQUIRED, 0, month),
    FIELD("allocation", FIELD_ID, FIELD_OPTIONAL, 0, allocation),
    FIELD("amount", FIELD_MONEY, FIELD_REQUIRED, 0, amount),
    FIELD("source", FIELD_TEXT, FIELD_REQUIRED, 0, note),
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const event_type_info event_types[LEDGER_TYPE_END] = {
#define TYPE_ROW(name, wire, op_name, role, kind, fields, rules, scope)                            \
    [LEDGER_##name] = {(wire),                                                                     \
                       (uint8_t)(sizeof(wire) - 1),                                                \
                       (op_name),                                                                  \
                       LEDGER_KIND_##kind,                                                         \
                       (uint8_t)COUNT(event_fields_##fields),                                      \
                       event_fields_##fields},
    LEDGER_EVENT_TYPES(TYPE_ROW)
#undef TYPE_ROW
};

#define FIELDS_FIT(name, wire, op_name, role, kind, fields, rules, scope)                          \
    _Static_assert(COUNT(event_fields_##fields) <= EVENT_FIELDS_MAX, wire " has too many fields");
LEDGER_EVENT_TYPES(FIELDS_FIT)
#undef FIELDS_FIT

const char *const event_kind_names[LEDGER_KIND_END] = {
#define KIND_NAME(name, wire, count) [LEDGER_KIND_##name] = (wire),
    LEDGER_KINDS(KIND_NAME)
#undef KIND_NAME
};
