/* Requests and results: args of each op into ledger commands and queries; results packed. */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/fields.h"
#include "proto/mp.h"
#include "proto/text.h"
#include "request.h"
#include "years.h"

/* The write ops, one per event type (LEDGER_EVENT_TYPES): an op's args are the fields of its
 * type that the client gives (event_types.c), by the same names. */
static const request_write_op write_ops[] = {
#define WRITE_OP(name, wire, op, role, kind, fields, rules, scope)                                 \
    {op, ACCESS_##role, LEDGER_##name},
    LEDGER_EVENT_TYPES(WRITE_OP)
#undef WRITE_OP
};

#define WRITE_OPS (sizeof(write_ops) / sizeof(write_ops[0]))

static bool key_is(const msgpack_object *key, const char *name)
{
    size_t n = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == n &&
           memcmp(key->via.str.ptr, name, n) == 0;
}

static int fail(ledger_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(ledger_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

static bool object_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

/* A str "YYYY-MM-DD" that names a real day, into *day (YYYYMMDD). */
static bool object_day(const msgpack_object *o, int32_t *day)
{
    return o->type == MSGPACK_OBJECT_STR && budget_date_parse(o->via.str.ptr, o->via.str.size, day);
}

uint64_t request_day_end_ms(int32_t day)
{
    int64_t end = budget_day_end_ms(day);
    return end <= 0 ? 0 : (uint64_t)end;
}

static bool object_uint(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/* Copies a str arg into a char[max + 1]; a str longer than `max` or holding NUL is refused. */
static int copy_str(const msgpack_object *v, const char *name, char *dst, size_t max,
                    ledger_error *err)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a string", name);
    if (v->via.str.size > max)
        return fail(err, BUDGET_EBAD_REQUEST, "args.%s is too long: at most %lld bytes", name,
                    (long long)max);
    if (memchr(v->via.str.ptr, '\0', v->via.str.size))
        return fail(err, BUDGET_EBAD_REQUEST, "args.%s holds a NUL byte", name);
    memcpy(dst, v->via.str.ptr, v->via.str.size);
    dst[v->via.str.size] = '\0';
    return 0;
}

const request_write_op *request_find_write(const char *op, size_t len)
{
    for (size_t i = 0; i < WRITE_OPS; i++) {
        const char *name = write_ops[i].op;
        if (strlen(name) == len && memcmp(name, op, len) == 0)
            return &write_ops[i];
    }
    return NULL;
}

/* One entry of a line of budget.adopt: unit, amount, plan, continues. */
static int decode_line_entry(const msgpack_object *k, const msgpack_object *v, ledger_line *x,
                             uint32_t at, ledger_error *err)
{
    int64_t n;
    if (key_is(k, "unit"))
        return copy_str(v, "lines[].unit", x->unit, BUDGET_UNIT_BYTES_MAX, err);
    if (key_is(k, "continues"))
        return copy_str(v, "lines[].continues", x->continues, BUDGET_ID_BYTES_MAX, err);
    if (key_is(k, "amount")) {
        if (!object_int(v, &n))
            return fail(err, BUDGET_EBAD_REQUEST,
                        "args.lines[%" PRIu32 "].amount must be an integer amount in öre", at);
        x->amount = n;
        return 0;
    }
    if (!key_is(k, "plan"))
        return fail(err, BUDGET_EBAD_REQUEST,
                    "args.lines[%" PRIu32 "] takes unit, amount, plan and continues", at);
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > BUDGET_PLAN_YEARS_MAX)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "args.lines[%" PRIu32 "].plan must be an array of at most %d amounts in öre",
                    at, BUDGET_PLAN_YEARS_MAX);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        if (!object_int(&v->via.array.ptr[i], &n))
            return fail(err, BUDGET_EBAD_REQUEST,
                        "args.lines[%" PRIu32 "].plan[%" PRIu32
                        "] must be an integer amount in öre",
                        at, i);
        x->plan[i] = n;
    }
    x->plans = (uint8_t)v->via.array.size;
    return 0;
}

/* The lines of budget.adopt: an array of 1..BUDGET_ADOPT_LINES_MAX maps. */
static int decode_lines(const msgpack_object *v, ledger_lines *out, ledger_error *err)
{
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size < 1 ||
        v->via.array.size > BUDGET_ADOPT_LINES_MAX)
        return fail(err, BUDGET_EBAD_REQUEST, "args.lines must be an array of 1..%d lines",
                    BUDGET_ADOPT_LINES_MAX);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *m = &v->via.array.ptr[i];
        ledger_line *x = &out->line[i];
        memset(x, 0, sizeof(*x));
        if (m->type != MSGPACK_OBJECT_MAP)
            return fail(err, BUDGET_EBAD_REQUEST, "args.lines[%" PRIu32 "] must be a map", i);
        bool has_unit = false, has_amount = false;
        for (uint32_t j = 0; j < m->via.map.size; j++) {
            const msgpack_object *k = &m->via.map.ptr[j].key;
            int rc = decode_line_entry(k, &m->via.map.ptr[j].val, x, i, err);
            if (rc)
                return rc;
            has_unit |= key_is(k, "unit");
            has_amount |= key_is(k, "amount");
        }
        if (!has_unit || !has_amount)
            return fail(err, BUDGET_EBAD_REQUEST, "args.lines[%" PRIu32 "] needs unit and amount",
                        i);
    }
    out->count = (uint16_t)v->via.array.size;
    return 0;
}

/* Reads the arg of field `f` from `v` into its member of `cmd`. The ledger checks the rest of
 * the field's rule (ledger_check); the range of a year is checked here already. */
static int decode_arg(const event_field *f, const msgpack_object *v, ledger_cmd *cmd,
                      ledger_error *err)
{
    int64_t n;

    switch ((field_value)f->value) {
    case FIELD_ID:
    case FIELD_UNIT:
    case FIELD_TEXT:
    case FIELD_BODY:
    case FIELD_PARAGRAPH:
        return copy_str(v, f->key, (char *)cmd + f->offset, field_bytes_max(f), err);
    case FIELD_DATE: {
        int32_t day;
        if (v->type != MSGPACK_OBJECT_STR ||
            !budget_date_parse(v->via.str.ptr, v->via.str.size, &day))
            return fail(err, BUDGET_EBAD_REQUEST,
                        "args.%s must be a real day as a string YYYY-MM-DD, years %d..%d", f->key,
                        BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
        ledger_field_set_int(cmd, f, day);
        return 0;
    }
    case FIELD_YEAR:
        if (!object_int(v, &n) || n < BUDGET_YEAR_MIN || n > BUDGET_YEAR_MAX)
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be an integer year %d..%d", f->key,
                        BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
        ledger_field_set_int(cmd, f, n);
        return 0;
    case FIELD_MONTH:
        if (!object_int(v, &n) || n < 1 || n > 12)
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be an integer month 1..12", f->key);
        ledger_field_set_int(cmd, f, n);
        return 0;
    case FIELD_AMOUNT:
    case FIELD_DELTA:
    case FIELD_MONEY:
        if (!object_int(v, &n))
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be an integer amount in öre",
                        f->key);
        ledger_field_set_int(cmd, f, n);
        return 0;
    case FIELD_LINES:
        return decode_lines(v, &cmd->lines, err);
    case FIELD_TARGET_KIND:
    case FIELD_TOTAL:
        break;
    }
    return fail(err, BUDGET_EINTERNAL, "arg %s has no kind", f->key);
}

/* The field of `t` the client gives as arg `k`, or -1. */
static int arg_index(const event_type_info *t, const msgpack_object *k)
{
    for (uint8_t j = 0; j < t->field_count; j++)
        if (t->fields[j].source != FIELD_DERIVED && key_is(k, t->fields[j].key))
            return j;
    return -1;
}

/* An arg the op does not take: its name is the client's bytes, escaped and cut. */
static int unknown_arg(const request_write_op *w, const msgpack_object *k, ledger_error *err)
{
    char name[48] = "?";
    if (k->type == MSGPACK_OBJECT_STR)
        budget_escape(name, sizeof(name), k->via.str.ptr, k->via.str.size);
    err->code = BUDGET_EBAD_REQUEST;
    snprintf(err->message, sizeof(err->message), "%s takes no arg \"%s\"", w->op, name);
    return err->code;
}

static bool is_decision_field(const event_field *f)
{
    return f->value == FIELD_BODY || f->value == FIELD_DATE || f->value == FIELD_PARAGRAPH;
}

int request_decode_write(const request_write_op *w, const msgpack_object *args, ledger_cmd *cmd,
                         bool *has_expect_head, uint64_t *expect_head, ledger_error *err)
{
    const event_type_info *t = &event_types[w->type];
    bool seen[EVENT_FIELDS_MAX] = {false};
    uint32_t n = 0;

    ledger_event_clear(cmd); /* and decode_lines clears each line it fills */
    cmd->type = w->type;
    *has_expect_head = false;
    *expect_head = 0;
    if (args) {
        if (args->type != MSGPACK_OBJECT_MAP)
            return fail(err, BUDGET_EBAD_REQUEST, "args must be a map");
        n = args->via.map.size;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        const msgpack_object *v = &args->via.map.ptr[i].val;

        if (key_is(k, "expect_head")) {
            if (!object_uint(v, expect_head))
                return fail(err, BUDGET_EBAD_REQUEST, "args.expect_head must be a uint");
            *has_expect_head = true;
            continue;
        }
        if (w->type == LEDGER_FRAME_GRANTED && key_is(k, "intended")) {
            if (v->type != MSGPACK_OBJECT_BOOLEAN)
                return fail(err, BUDGET_EBAD_REQUEST, "args.intended must be true or false");
            cmd->intended = v->via.boolean;
            continue;
        }
        int j = arg_index(t, k);
        if (j < 0)
            return unknown_arg(w, k, err);
        if (seen[j])
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s given twice", t->fields[j].key);
        seen[j] = true;
        int rc = decode_arg(&t->fields[j], v, cmd, err);
        if (rc)
            return rc;
    }
    for (uint8_t j = 0; j < t->field_count; j++) {
        if (t->fields[j].source != FIELD_REQUIRED || seen[j])
            continue;
        if (is_decision_field(&t->fields[j]))
            return fail(err, BUDGET_EBAD_REQUEST,
                        "%s rests on a decision and needs args.%s: give decision_body, "
                        "decision_date and decision_paragraph (and decision_dnr if there is one), "
                        "as in KS 2021-08-24 § 241",
                        w->op, t->fields[j].key);
        return fail(err, BUDGET_EBAD_REQUEST, "%s needs args.%s", w->op, t->fields[j].key);
    }
    return 0;
}

/* One arg of the years view: view, from, to, subtotals_offset. */
static int decode_years_arg(const msgpack_object *k, const msgpack_object *v, balances_query *q,
                            ledger_error *err)
{
    int64_t year;
    if (key_is(k, "view")) {
        if (v->type != MSGPACK_OBJECT_STR || v->via.str.size != 5 ||
            memcmp(v->via.str.ptr, "years", 5) != 0)
            return fail(err, BUDGET_EBAD_REQUEST, "args.view must be \"years\" (or absent)");
        q->years = true;
        return 0;
    }
    if (key_is(k, "subtotals_offset")) {
        if (!object_uint(v, &q->subtotals_offset))
            return fail(err, BUDGET_EBAD_REQUEST, "args.subtotals_offset must be a uint");
        return 0;
    }
    const char *name = key_is(k, "from") ? "from" : "to";
    if (!object_int(v, &year) || year < BUDGET_YEAR_MIN || year > BUDGET_YEAR_MAX)
        return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a year %d..%d", name,
                    BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
    *(key_is(k, "from") ? &q->from : &q->to) = (int32_t)year;
    return 0;
}

/* The args of the years view hold together, and only with it. */
static int check_years_query(const balances_query *q, ledger_error *err)
{
    if (!q->years) {
        if (q->from || q->to || q->subtotals_offset)
            return fail(err, BUDGET_EBAD_REQUEST,
                        "balances takes from, to and subtotals_offset only with view \"years\"");
        return 0;
    }
    if (q->frame[0] || q->allocation[0] || q->year || q->frames_offset || q->avrop_offset ||
        q->units_offset)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "balances with view \"years\" takes from, to, unit, as_of, offset and "
                    "subtotals_offset");
    if (!q->from || !q->to)
        return fail(err, BUDGET_EBAD_REQUEST, "balances with view \"years\" needs from and to");
    if (q->to < q->from || q->to - q->from >= BUDGET_YEARS_SPAN_MAX)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "args.from %d and args.to %d must span 1..%d years, from first", (int)q->from,
                    (int)q->to, BUDGET_YEARS_SPAN_MAX);
    return 0;
}

int request_decode_balances(const msgpack_object *args, balances_query *q, ledger_error *err)
{
    uint32_t n = 0;
    int picked = 0;

    memset(q, 0, sizeof(*q));
    if (args) {
        if (args->type != MSGPACK_OBJECT_MAP)
            return fail(err, BUDGET_EBAD_REQUEST, "args must be a map");
        n = args->via.map.size;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        const msgpack_object *v = &args->via.map.ptr[i].val;
        int64_t year;
        int rc = 0;

        if (key_is(k, "frame")) {
            rc = copy_str(v, "frame", q->frame, BUDGET_ID_BYTES_MAX, err);
            picked++;
        } else if (key_is(k, "allocation")) {
            rc = copy_str(v, "allocation", q->allocation, BUDGET_ID_BYTES_MAX, err);
            picked++;
        } else if (key_is(k, "unit")) {
            rc = copy_str(v, "unit", q->unit, BUDGET_UNIT_BYTES_MAX, err);
            picked++;
        } else if (key_is(k, "year")) {
            if (!object_int(v, &year) || year < BUDGET_YEAR_MIN || year > BUDGET_YEAR_MAX)
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a year %d..%d", "year",
                            BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
            q->year = (int32_t)year;
        } else if (key_is(k, "as_of")) {
            if (!object_uint(v, &q->as_of) && !object_day(v, &q->as_of_day))
                return fail(err, BUDGET_EBAD_REQUEST,
                            "args.%s must be a uint seq or a day YYYY-MM-DD", "as_of");
            q->has_as_of = q->as_of_day == 0;
        } else if (key_is(k, "decided_by")) {
            if (!object_day(v, &q->decided_by))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a real day YYYY-MM-DD",
                            "decided_by");
        } else if (key_is(k, "view") || key_is(k, "from") || key_is(k, "to") ||
                   key_is(k, "subtotals_offset")) {
            rc = decode_years_arg(k, v, q, err);
        } else if (key_is(k, "offset") || key_is(k, "frames_offset") || key_is(k, "avrop_offset") ||
                   key_is(k, "units_offset")) {
            uint64_t *at = key_is(k, "offset")          ? &q->offset
                           : key_is(k, "frames_offset") ? &q->frames_offset
                           : key_is(k, "avrop_offset")  ? &q->avrop_offset
                                                        : &q->units_offset;
            if (!object_uint(v, at))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%.*s must be a uint",
                            (int)k->via.str.size, k->via.str.ptr);
        } else {
            return fail(err, BUDGET_EBAD_REQUEST,
                        "balances takes frame, allocation, unit, year, as_of, decided_by, "
                        "offset, frames_offset, avrop_offset, units_offset, view, from, to, "
                        "subtotals_offset");
        }
        if (rc)
            return rc;
    }
    if (picked > 1)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "balances takes at most one of frame, allocation, unit");
    return check_years_query(q, err);
}

int request_decode_events(const msgpack_object *args, events_query *q, ledger_error *err)
{
    uint32_t n = 0;

    memset(q, 0, sizeof(*q));
    q->limit = BUDGET_EVENTS_PAGE_DEFAULT;
    if (args) {
        if (args->type != MSGPACK_OBJECT_MAP)
            return fail(err, BUDGET_EBAD_REQUEST, "args must be a map");
        n = args->via.map.size;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        const msgpack_object *v = &args->via.map.ptr[i].val;
        uint64_t u;
        int rc = 0;

        if (key_is(k, "after")) {
            if (!object_uint(v, &q->after))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uint seq", "after");
        } else if (key_is(k, "limit")) {
            if (!object_uint(v, &u) || u < 1 || u > BUDGET_EVENTS_PAGE_MAX)
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be 1..%u", "limit",
                            BUDGET_EVENTS_PAGE_MAX);
            q->limit = (uint32_t)u;
        } else if (key_is(k, "entity")) {
            rc = copy_str(v, "entity", q->entity, BUDGET_ID_BYTES_MAX, err);
        } else if (key_is(k, "unit")) {
            rc = copy_str(v, "unit", q->unit, BUDGET_UNIT_BYTES_MAX, err);
        } else if (key_is(k, "type")) {
            if (v->type != MSGPACK_OBJECT_STR ||
                !(q->type = ledger_type_from_name(v->via.str.ptr, v->via.str.size)))
                return fail(err, BUDGET_EBAD_REQUEST,
                            "args.%s must be an event type such as avrop.requested", "type");
        } else if (key_is(k, "actor")) {
            if (!object_uint(v, &u) || u > UINT32_MAX)
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uid", "actor");
            q->has_actor = true;
            q->actor = (uint32_t)u;
        } else if (key_is(k, "ts_from")) {
            if (!object_uint(v, &q->ts_from))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uint (ms)", "ts_from");
            q->has_ts_from = true;
        } else if (key_is(k, "ts_to")) {
            if (!object_uint(v, &q->ts_to))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uint (ms)", "ts_to");
            q->has_ts_to = true;
        } else if (key_is(k, "decided_from") || key_is(k, "decided_to")) {
            int32_t *day = key_is(k, "decided_from") ? &q->decided_from : &q->decided_to;
            if (!object_day(v, day))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%.*s must be a real day YYYY-MM-DD",
                            (int)k->via.str.size, k->via.str.ptr);
        } else {
            return fail(err, BUDGET_EBAD_REQUEST,
                        "events takes after, limit, entity, unit, type, actor, ts_from, ts_to, "
                        "decided_from, decided_to");
        }
        if (rc)
            return rc;
    }
    if (q->has_ts_from && q->has_ts_to && q->ts_from > q->ts_to)
        return fail(err, BUDGET_EBAD_REQUEST, "args.ts_from is after args.ts_to");
    if (q->decided_from && q->decided_to && q->decided_from > q->decided_to)
        return fail(err, BUDGET_EBAD_REQUEST, "args.decided_from is after args.decided_to");
    return 0;
}

/* True when a line of adoption `ev` makes the frame `entity` ("<id>:<unit>") or continues it. */
static bool lines_name_entity(const ledger_event *ev, const char *entity)
{
    size_t id_len = strlen(ev->id);
    bool made_here = strncmp(entity, ev->id, id_len) == 0 && entity[id_len] == ':';
    for (uint16_t i = 0; i < ev->lines.count; i++)
        if ((made_here && strcmp(entity + id_len + 1, ev->lines.line[i].unit) == 0) ||
            strcmp(entity, ev->lines.line[i].continues) == 0)
            return true;
    return false;
}

/* True when adoption `ev` has a line for `unit`. */
static bool lines_name_unit(const ledger_event *ev, const char *unit)
{
    for (uint16_t i = 0; i < ev->lines.count; i++)
        if (strcmp(unit, ev->lines.line[i].unit) == 0)
            return true;
    return false;
}

/* True when an id field of `ev` (its id, frame, allocation, target, ...) is `entity`. */
static bool names_entity(const ledger_event *ev, const char *entity)
{
    if (!ledger_type_known(ev->type))
        return false;
    if (ev->type == LEDGER_BUDGET_ADOPTED && lines_name_entity(ev, entity))
        return true;
    const event_type_info *t = &event_types[ev->type];
    for (uint8_t i = 0; i < t->field_count; i++)
        if (t->fields[i].value == FIELD_ID &&
            strncmp(ledger_field_str(ev, &t->fields[i]), entity, t->fields[i].size) == 0)
            return true;
    return false;
}

event_match request_event_matches(const events_query *q, const ledger_event *ev)
{
    if (q->type && ev->type != q->type)
        return EVENT_NO;
    if (q->unit[0] && strcmp(ev->unit, q->unit) != 0 &&
        !(ev->type == LEDGER_BUDGET_ADOPTED && lines_name_unit(ev, q->unit)))
        return EVENT_NO;
    if (q->has_actor && ev->actor.uid != q->actor)
        return EVENT_NO;
    if ((q->has_ts_from && ev->ts_ms < q->ts_from) || (q->has_ts_to && ev->ts_ms >= q->ts_to))
        return EVENT_NO;
    /* By the decision's date: only events that carry a decision. */
    if ((q->decided_from || q->decided_to) &&
        (!ledger_has_decision(ev) || (q->decided_from && ev->decision_date < q->decided_from) ||
         (q->decided_to && ev->decision_date > q->decided_to)))
        return EVENT_NO;
    if (!q->entity[0] || names_entity(ev, q->entity))
        return EVENT_YES;
    /* A decision or withdrawal names its avrop (or reduction, or reversal) and frame, not the
     * allocation between them. */
    if (ev->target_kind == LEDGER_KIND_AVROP || ev->target_kind == LEDGER_KIND_REDUCTION ||
        ev->target_kind == LEDGER_KIND_REVERSAL)
        return EVENT_IF_AVROP_OF_ENTITY;
    return EVENT_NO;
}

/* The most a str's header, an int or a map's header takes: a type byte and four or eight. */
#define STR_HEAD_MAX 5u
#define INT_MAX_BYTES 9u

void pack_rec_begin(pack_rec *r, msgpack_packer *pk)
{
    r->pk = pk;
    mp_writer_init(&r->w, r->buf, sizeof(r->buf));
}

void pack_rec_end(pack_rec *r)
{
    if (r->w.len > 0)
        r->pk->callback(r->pk->data, (const char *)r->buf, r->w.len);
    r->w.len = 0;
}

/* Makes room for `n` more bytes: true, or false when they could never fit (the buffer is then
 * handed over, and the caller packs the item the packer's way). */
static bool rec_room(pack_rec *r, size_t n)
{
    if (r->w.len + n <= r->w.cap)
        return true;
    pack_rec_end(r);
    return n <= r->w.cap;
}

static void rec_str(pack_rec *r, const char *s, size_t n)
{
    if (rec_room(r, STR_HEAD_MAX + n)) {
        mp_write_str(&r->w, s, n);
        return;
    }
    msgpack_pack_str(r->pk, n);
    msgpack_pack_str_body(r->pk, s, n);
}

void pack_rec_key(pack_rec *r, const char *key, size_t key_len)
{
    rec_str(r, key, key_len);
}

void pack_rec_value_str(pack_rec *r, const char *v)
{
    if (v == NULL)
        pack_rec_value_nil(r);
    else
        rec_str(r, v, strlen(v));
}

void pack_rec_value_nil(pack_rec *r)
{
    rec_room(r, 1);
    mp_write_nil(&r->w);
}

void pack_rec_value_array(pack_rec *r, uint32_t n)
{
    rec_room(r, STR_HEAD_MAX);
    mp_write_array(&r->w, n);
}

void pack_rec_map(pack_rec *r, uint32_t pairs)
{
    rec_room(r, STR_HEAD_MAX);
    mp_write_map(&r->w, pairs);
}

void pack_rec_value_int(pack_rec *r, int64_t v)
{
    rec_room(r, INT_MAX_BYTES);
    mp_write_int(&r->w, v);
}

/* A pair is put in one buffer when it fits in one: the room for both is made first. */
void pack_rec_uint(pack_rec *r, const char *key, size_t key_len, uint64_t v)
{
    rec_room(r, STR_HEAD_MAX + key_len + INT_MAX_BYTES);
    rec_str(r, key, key_len);
    rec_room(r, INT_MAX_BYTES);
    mp_write_uint(&r->w, v);
}

void pack_rec_int(pack_rec *r, const char *key, size_t key_len, int64_t v)
{
    rec_room(r, STR_HEAD_MAX + key_len + INT_MAX_BYTES);
    rec_str(r, key, key_len);
    pack_rec_value_int(r, v);
}

void pack_rec_bool(pack_rec *r, const char *key, size_t key_len, bool v)
{
    rec_room(r, STR_HEAD_MAX + key_len + 1);
    rec_str(r, key, key_len);
    rec_room(r, 1);
    mp_write_bool(&r->w, v);
}

void pack_rec_str(pack_rec *r, const char *key, size_t key_len, const char *v)
{
    size_t n = v != NULL ? strlen(v) : 0;
    rec_room(r, 2 * STR_HEAD_MAX + key_len + n);
    rec_str(r, key, key_len);
    if (v == NULL)
        pack_rec_value_nil(r);
    else
        rec_str(r, v, n);
}

void pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_rec r;
    pack_rec_begin(&r, pk);
    rec_str(&r, s, strlen(s));
    pack_rec_end(&r);
}

void pack_key_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
    pack_rec r;
    pack_rec_begin(&r, pk);
    pack_rec_uint(&r, key, strlen(key), v);
    pack_rec_end(&r);
}

void pack_key_int(msgpack_packer *pk, const char *key, int64_t v)
{
    pack_rec r;
    pack_rec_begin(&r, pk);
    pack_rec_int(&r, key, strlen(key), v);
    pack_rec_end(&r);
}

void pack_key_str(msgpack_packer *pk, const char *key, const char *v)
{
    pack_rec r;
    pack_rec_begin(&r, pk);
    pack_rec_str(&r, key, strlen(key), v);
    pack_rec_end(&r);
}

void request_pack_write_result(msgpack_packer *pk, const ledger_event *ev, const uint8_t hash[32])
{
    /* The totals the ledger derived for the event (year.closed: "unspent") are part of it. */
    const event_type_info *t = ledger_type_known(ev->type) ? &event_types[ev->type] : NULL;
    uint32_t totals = 0;
    for (uint8_t i = 0; t != NULL && i < t->field_count; i++)
        totals += t->fields[i].value == FIELD_TOTAL;
    msgpack_pack_map(pk, 5 + totals);
    pack_key_uint(pk, "seq", ev->seq);
    pack_cstr(pk, "hash");
    msgpack_pack_bin(pk, 32);
    msgpack_pack_bin_body(pk, hash, 32);
    pack_key_uint(pk, "ts", ev->ts_ms);
    pack_key_str(pk, "type", ledger_type_name(ev->type));
    pack_key_str(pk, "id", ev->id);
    for (uint8_t i = 0; t != NULL && i < t->field_count; i++)
        if (t->fields[i].value == FIELD_TOTAL)
            pack_key_int(pk, t->fields[i].key, ledger_field_int(ev, &t->fields[i]));
}

/* A day YYYYMMDD as "YYYY-MM-DD", or nil when there is none. */
static void pack_rec_day(pack_rec *r, const char *key, size_t key_len, int32_t day)
{
    char text[BUDGET_DATE_BYTES + 1];
    pack_rec_str(r, key, key_len, day != 0 && budget_date_format(day, text) ? text : NULL);
}

/*
 * The oddities of a decided_by view (docs/protocol.md): what the rules forbid in the ledger
 * but a view of decisions by a day may show, for a raise decided later may have been entered
 * first. At most ODDITIES_MAX per item.
 */
#define ODDITIES_MAX 3

static uint32_t frame_oddities(const ledger_frame_view *f, const char **out)
{
    uint32_t n = 0;
    if (f->granted_later)
        out[n++] = "granted_later";
    if (f->allocated > f->granted)
        out[n++] = "allocated_over_granted";
    if (f->called_off > f->allocated)
        out[n++] = "called_off_over_allocated";
    return n;
}

static uint32_t allocation_oddities(const ledger_allocation_view *a, const char **out)
{
    uint32_t n = 0;
    if (a->called_off > 0 && a->status != LEDGER_APPROVED)
        out[n++] = "called_off_before_approved";
    return n;
}

static uint32_t unit_oddities(const ledger_unit_view *u, const char **out)
{
    uint32_t n = 0;
    if (u->called_off > u->allocated)
        out[n++] = "called_off_over_allocated";
    return n;
}

static void pack_frame(pack_rec *r, const ledger_frame_view *f, bool decided)
{
    pack_rec_map(r, decided ? 17 : 16);
    pack_rec_str(r, PACK_KEY("id"), f->id);
    pack_rec_str(r, PACK_KEY("unit"), f->unit);
    pack_rec_int(r, PACK_KEY("year"), f->year);
    pack_rec_str(r, PACK_KEY("title"), f->title);
    pack_rec_str(r, PACK_KEY("reference"), f->reference);
    pack_rec_int(r, PACK_KEY("granted"), f->granted);
    pack_rec_int(r, PACK_KEY("allocated"), f->allocated);
    pack_rec_int(r, PACK_KEY("pending"), f->pending);
    pack_rec_int(r, PACK_KEY("unallocated"), f->unallocated);
    pack_rec_int(r, PACK_KEY("called_off"), f->called_off);
    pack_rec_bool(r, PACK_KEY("closed"), f->closed);
    pack_rec_int(r, PACK_KEY("unspent"), f->unspent);
    pack_rec_int(r, PACK_KEY("carried_over"), f->carried_over);
    pack_rec_str(r, PACK_KEY("carried_from"), f->carried_from);
    pack_rec_day(r, PACK_KEY("avrop_last_day"), f->avrop_last_day);
    pack_rec_str(r, PACK_KEY("continues"), f->continues);
}

static void pack_allocation(pack_rec *r, const ledger_allocation_view *a, bool decided)
{
    pack_rec_map(r, decided ? 14 : 13);
    pack_rec_str(r, PACK_KEY("id"), a->id);
    pack_rec_str(r, PACK_KEY("frame"), a->frame);
    pack_rec_str(r, PACK_KEY("unit"), a->unit);
    pack_rec_int(r, PACK_KEY("year"), a->year);
    pack_rec_str(r, PACK_KEY("purpose"), a->purpose);
    pack_rec_int(r, PACK_KEY("amount"), a->amount);
    pack_rec_str(r, PACK_KEY("status"), ledger_status_name(a->status));
    pack_rec_int(r, PACK_KEY("called_off"), a->called_off);
    pack_rec_int(r, PACK_KEY("pending"), a->pending);
    pack_rec_int(r, PACK_KEY("available"), a->available);
    pack_rec_int(r, PACK_KEY("reduced"), a->reduced);
    pack_rec_int(r, PACK_KEY("reducing"), a->reducing);
    pack_rec_day(r, PACK_KEY("avrop_last_day"), a->avrop_last_day);
}

static void pack_avrop(msgpack_packer *pk, const ledger *l, const ledger_avrop_view *v)
{
    const char *note = ledger_avrop_note(l, v->id);
    pack_rec r;
    pack_rec_begin(&r, pk);
    pack_rec_map(&r, 8);
    pack_rec_str(&r, PACK_KEY("id"), v->id);
    pack_rec_str(&r, PACK_KEY("allocation"), v->allocation);
    pack_rec_str(&r, PACK_KEY("unit"), v->unit);
    pack_rec_int(&r, PACK_KEY("amount"), v->amount);
    pack_rec_str(&r, PACK_KEY("status"), ledger_status_name(v->status));
    pack_rec_str(&r, PACK_KEY("note"), note ? note : "");
    pack_rec_int(&r, PACK_KEY("reversed"), v->reversed);
    pack_rec_int(&r, PACK_KEY("reversing"), v->reversing);
    pack_rec_end(&r);
}

/* The six keys of a unit's outcome set against its budget (ledger_outcome), as in a unit's
 * row of balances and in `outcome`. */
static void pack_outcome_keys(pack_rec *r, const ledger_outcome_view *o)
{
    pack_rec_int(r, PACK_KEY("budget"), o->budget);
    pack_rec_int(r, PACK_KEY("outcome"), o->outcome);
    pack_rec_key(r, PACK_KEY("used_permille"));
    if (o->has_used)
        pack_rec_value_int(r, o->used_permille);
    else
        pack_rec_value_nil(r);
    pack_rec_int(r, PACK_KEY("deviation"), o->deviation);
    pack_rec_int(r, PACK_KEY("forecast"), o->forecast);
    pack_rec_int(r, PACK_KEY("last_month"), o->last_month);
}

#define OUTCOME_KEYS 6

/* A unit's row of balances, with the unit's current name (its code when it has none). */
static void pack_unit(pack_rec *r, const ledger *l, const ledger_unit_view *u, bool decided)
{
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, u->unit);
    registry_view v = {.name = u->unit};
    if (i != REGISTRY_NONE)
        registry_view_of(reg, i, &v);
    ledger_outcome_view o;
    ledger_outcome(l, u->unit, u->year, &o);
    pack_rec_map(r, (decided ? 10 : 9) + OUTCOME_KEYS);
    pack_rec_str(r, PACK_KEY("unit"), u->unit);
    pack_rec_str(r, PACK_KEY("name"), v.name);
    pack_rec_int(r, PACK_KEY("year"), u->year);
    pack_rec_int(r, PACK_KEY("frames"), u->frames);
    pack_rec_int(r, PACK_KEY("allocated"), u->allocated);
    pack_rec_int(r, PACK_KEY("called_off"), u->called_off);
    pack_rec_int(r, PACK_KEY("pending"), u->pending);
    pack_rec_int(r, PACK_KEY("available"), u->available);
    pack_rec_int(r, PACK_KEY("reducing"), u->reducing);
    pack_outcome_keys(r, &o);
}

/*
 * One page of one list of `balances`: the items after the first `offset` matches, packed into
 * a buffer of their own until BUDGET_BALANCES_PAGE_MAX items or BUDGET_BALANCES_PAGE_BYTES_MAX
 * bytes (the item that crosses it is the last), so the array's length is known when it is
 * written. `more`: a match was left for the next page.
 */
typedef struct {
    msgpack_sbuffer items;
    msgpack_packer pk;
    uint64_t offset, skipped;
    uint32_t count;
    bool more;
    bool decided;      /* a decided_by view: each item says its oddities */
    uint32_t oddities; /* items packed with one or more */
} list_page;

static void page_init(list_page *p, uint64_t offset)
{
    msgpack_sbuffer_init(&p->items);
    msgpack_packer_init(&p->pk, &p->items, msgpack_sbuffer_write);
    p->offset = offset;
    p->skipped = 0;
    p->count = 0;
    p->more = false;
    p->decided = false;
    p->oddities = 0;
}

/* Before a page's first item: room for a whole page, so that a page of the largest size is
 * packed without the copies of a buffer grown by doubling (five of them from msgpack's 8 KiB,
 * as much again as the page). The room's pages are not touched until written; when it cannot
 * be had, the buffer grows as before. */
static void page_reserve(list_page *p)
{
    const size_t room = BUDGET_BALANCES_PAGE_BYTES_MAX + PACK_REC_BYTES;
    if (p->items.alloc >= room)
        return;
    char *grown = realloc(p->items.data, room);
    if (grown != NULL) {
        p->items.data = grown;
        p->items.alloc = room;
    }
}

/* A match was found: true when it is to be packed now; false when it is skipped (before the
 * offset) or left for the next page (the page is full: `more` is set and the walk may stop). */
static bool page_takes(list_page *p)
{
    if (p->skipped < p->offset) {
        p->skipped++;
        return false;
    }
    if (p->count >= BUDGET_BALANCES_PAGE_MAX || p->items.size >= BUDGET_BALANCES_PAGE_BYTES_MAX) {
        p->more = true;
        return false;
    }
    if (p->count++ == 0)
        page_reserve(p);
    return true;
}

/* Writes "key": [items...] into `pk` and frees the page's buffer. 0, or -1 when a buffer
 * could not grow (out of memory: the answer is then not to be sent). */
static int page_emit(msgpack_packer *pk, const char *key, list_page *p)
{
    int rc = 0;
    pack_cstr(pk, key);
    rc |= msgpack_pack_array(pk, p->count);
    if (p->items.size > 0)
        rc |= pk->callback(pk->data, p->items.data, p->items.size);
    msgpack_sbuffer_destroy(&p->items);
    return rc == 0 ? 0 : -1;
}

/* "oddities": [names...] of an item of a decided_by view, counted in the page. */
static void pack_oddities(list_page *p, pack_rec *r, const char *const *names, uint32_t n)
{
    pack_rec_key(r, PACK_KEY("oddities"));
    pack_rec_value_array(r, n);
    for (uint32_t i = 0; i < n; i++)
        pack_rec_value_str(r, names[i]);
    p->oddities += n > 0;
}

static void page_frame(list_page *p, const ledger_frame_view *f)
{
    pack_rec r;
    pack_rec_begin(&r, &p->pk);
    pack_frame(&r, f, p->decided);
    if (p->decided) {
        const char *names[ODDITIES_MAX];
        pack_oddities(p, &r, names, frame_oddities(f, names));
    }
    pack_rec_end(&r);
}

/* In a decided_by view, a frame whose grant was decided later is left out unless something
 * decided or pending by then draws on it. */
static bool frame_shown(const list_page *p, const ledger_frame_view *f)
{
    return !p->decided || !f->granted_later || f->allocated != 0 || f->pending != 0 ||
           f->called_off != 0;
}

/*
 * A page of a list found by position (ledger_seek_*): the walk starts at the page's offset, so
 * the items before it cost nothing, and a filtered list visits only its matches. Each returns
 * false when the ledger has no such list for the query; the page is then walked from the
 * start. A decided_by view's frames are not: which it shows depends on each frame's balances.
 */
static bool page_frames_at(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_cursor c;
    ledger_frame_view f;

    if (p->decided || !ledger_seek_frames(l, q->unit[0] ? q->unit : NULL, q->year, p->offset, &c))
        return false;
    p->skipped = p->offset;
    while (!p->more && ledger_cursor_frame(l, &c, &f))
        if (page_takes(p))
            page_frame(p, &f);
    return true;
}

static bool page_avrop_at(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_cursor c;
    ledger_avrop_view v;

    if (!ledger_seek_avrop(l, q->allocation, p->offset, &c))
        return false;
    p->skipped = p->offset;
    while (!p->more && ledger_cursor_avrop(l, &c, &v))
        if (page_takes(p))
            pack_avrop(&p->pk, l, &v);
    return true;
}

static void page_unit(list_page *p, const ledger *l, const ledger_unit_view *u)
{
    pack_rec r;
    pack_rec_begin(&r, &p->pk);
    pack_unit(&r, l, u, p->decided);
    if (p->decided) {
        const char *names[ODDITIES_MAX];
        pack_oddities(p, &r, names, unit_oddities(u, names));
    }
    pack_rec_end(&r);
}

static bool page_units_at(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_cursor c;
    ledger_unit_view u;

    if (!ledger_seek_units(l, q->unit[0] ? q->unit : NULL, q->year, p->offset, &c))
        return false;
    p->skipped = p->offset;
    while (!p->more && ledger_cursor_unit(l, &c, &u))
        if (page_takes(p))
            page_unit(p, l, &u);
    return true;
}

static void page_frames(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_frame_view f;
    size_t i = 0;

    if (q->allocation[0])
        return;
    if (q->frame[0]) {
        if (ledger_frame(l, q->frame, &f) && page_takes(p))
            page_frame(p, &f);
        return;
    }
    if (page_frames_at(p, l, q))
        return;
    while (!p->more && ledger_next_frame(l, &i, q->unit[0] ? q->unit : NULL, q->year, &f))
        if (frame_shown(p, &f) && page_takes(p))
            page_frame(p, &f);
}

static void page_allocation(list_page *p, const ledger_allocation_view *a)
{
    pack_rec r;
    pack_rec_begin(&r, &p->pk);
    pack_allocation(&r, a, p->decided);
    if (p->decided) {
        const char *names[ODDITIES_MAX];
        pack_oddities(p, &r, names, allocation_oddities(a, names));
    }
    pack_rec_end(&r);
}

static bool page_allocations_at(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_cursor c;
    ledger_allocation_view a;

    if (!ledger_seek_allocations(l, q->frame[0] ? q->frame : NULL, q->unit[0] ? q->unit : NULL,
                                 q->year, p->offset, &c))
        return false;
    p->skipped = p->offset;
    while (!p->more && ledger_cursor_allocation(l, &c, &a))
        if (page_takes(p))
            page_allocation(p, &a);
    return true;
}

static void page_allocations(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_allocation_view a;
    const char *frame = q->frame[0] ? q->frame : NULL;
    const char *unit = q->unit[0] ? q->unit : NULL;
    size_t i = 0;

    if (q->allocation[0]) {
        if (ledger_allocation(l, q->allocation, &a) && page_takes(p))
            page_allocation(p, &a);
        return;
    }
    if (page_allocations_at(p, l, q))
        return;
    while (!p->more && ledger_next_allocation(l, &i, frame, unit, q->year, &a))
        if (page_takes(p))
            page_allocation(p, &a);
}

static void page_avrop(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_avrop_view v;
    size_t i = 0;

    if (page_avrop_at(p, l, q))
        return;
    while (!p->more && ledger_next_avrop(l, &i, q->allocation, &v))
        if (page_takes(p))
            pack_avrop(&p->pk, l, &v);
}

static void page_units(list_page *p, const ledger *l, const balances_query *q)
{
    ledger_unit_view u;
    size_t i = 0;

    if (q->frame[0] || q->allocation[0])
        return;
    if (page_units_at(p, l, q))
        return;
    while (!p->more && ledger_next_unit(l, &i, q->unit[0] ? q->unit : NULL, q->year, &u))
        if (page_takes(p))
            page_unit(p, l, &u);
}

/* The sums of a row, a subtotal or a total; "plan" and "unspent" are nil when there is none. */
static void pack_sums(msgpack_packer *pk, const years_sums *v)
{
    pack_key_int(pk, "budget", v->budget);
    pack_cstr(pk, "plan");
    if (v->has_plan)
        msgpack_pack_int64(pk, v->plan);
    else
        msgpack_pack_nil(pk);
    pack_key_int(pk, "allocated", v->allocated);
    pack_key_int(pk, "called_off", v->called_off);
    pack_key_int(pk, "available", v->available);
    pack_cstr(pk, "unspent");
    if (v->has_unspent)
        msgpack_pack_int64(pk, v->unspent);
    else
        msgpack_pack_nil(pk);
}

static void pack_years_row(msgpack_packer *pk, const ledger *l, const years_row *r)
{
    const char *parent = years_parent(l, r->unit, NULL);
    msgpack_pack_map(pk, 11);
    pack_key_str(pk, "unit", r->unit);
    pack_key_str(pk, "name", years_name(l, r->unit));
    pack_key_str(pk, "parent", parent != NULL ? parent : "");
    pack_key_int(pk, "year", r->year);
    pack_key_int(pk, "plan_by", r->plan_by);
    pack_sums(pk, &r->sums);
}

/* A subtotal of the rows under `parent` (with its name), or a total (`parent` NULL). */
static void pack_years_sum(msgpack_packer *pk, const ledger *l, const char *parent, int32_t year,
                           const years_sums *v)
{
    msgpack_pack_map(pk, parent != NULL ? 9 : 7);
    if (parent != NULL) {
        pack_key_str(pk, "parent", parent);
        pack_key_str(pk, "name", years_name(l, parent));
    }
    pack_key_int(pk, "year", year);
    pack_sums(pk, v);
}

/* The years view: a page of rows, a page of subtotals, every total; years.h. */
static int pack_years(msgpack_packer *pk, const ledger *l, const balances_query *q, uint64_t as_of,
                      ledger_error *err)
{
    const char *unit = q->unit[0] ? q->unit : NULL;
    years_summary sum;
    list_page rows, subtotals;
    if (years_summarize(l, unit, q->from, q->to, years_parent, NULL, &sum) != 0) {
        years_summary_free(&sum);
        return fail(err, BUDGET_EUNAVAILABLE, "out of memory");
    }
    page_init(&rows, q->offset);
    page_init(&subtotals, q->subtotals_offset);
    size_t i = 0;
    years_row r;
    while (!rows.more && years_next_row(l, &i, unit, q->from, q->to, &r))
        if (page_takes(&rows))
            pack_years_row(&rows.pk, l, &r);
    for (size_t k = 0; k < sum.subtotals_count && !subtotals.more; k++)
        if (page_takes(&subtotals))
            pack_years_sum(&subtotals.pk, l, sum.subtotals[k].parent, sum.subtotals[k].year,
                           &sum.subtotals[k].sums);
    int rc = msgpack_pack_map(pk, 9);
    pack_key_uint(pk, "as_of", as_of);
    pack_key_str(pk, "view", "years");
    pack_key_int(pk, "from", q->from);
    pack_key_int(pk, "to", q->to);
    rc |= page_emit(pk, "rows", &rows);
    rc |= page_emit(pk, "subtotals", &subtotals);
    pack_cstr(pk, "totals");
    rc |= msgpack_pack_array(pk, (uint32_t)(q->to - q->from + 1));
    for (int32_t y = q->from; y <= q->to; y++)
        pack_years_sum(pk, l, NULL, y, &sum.totals[y - q->from]);
    pack_cstr(pk, "more");
    rc |= rows.more || subtotals.more ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    pack_cstr(pk, "next");
    rc |= msgpack_pack_map(pk, 2);
    pack_key_uint(pk, "offset", q->offset + rows.count);
    pack_key_uint(pk, "subtotals_offset", q->subtotals_offset + subtotals.count);
    years_summary_free(&sum);
    if (rc != 0)
        return fail(err, BUDGET_EUNAVAILABLE, "out of memory");
    return 0;
}

/* The lists of a balances result, in the order they are packed; avrop only for one
 * allocation. `offset_arg` is the arg (and the key of "next") that pages each. */
enum { LIST_FRAMES, LIST_ALLOCATIONS, LIST_AVROP, LIST_UNITS, LISTS_COUNT };
static const struct {
    const char *key, *offset_arg;
} lists[LISTS_COUNT] = {
    {"frames", "frames_offset"},
    {"allocations", "offset"},
    {"avrop", "avrop_offset"},
    {"units", "units_offset"},
};

/* Every list's page at its most, with the envelope and the other keys, fits in one frame. */
/* A frame: five strs of at most 64+32+256+256+64 bytes, a date, 11 ints and its keys. */
#define BALANCES_ITEM_BYTES_MAX 1024u
_Static_assert(LISTS_COUNT *(BUDGET_BALANCES_PAGE_BYTES_MAX + BALANCES_ITEM_BYTES_MAX) + 1024u <=
                   BUDGET_FRAME_BYTES_MAX,
               "a balances page fits in a frame");

/* "decided_by": the day, and "oddities": the items of these pages that have one. */
static void pack_decided_by(msgpack_packer *pk, int32_t day, const list_page *pages)
{
    char text[BUDGET_DATE_BYTES + 1];
    budget_date_format(day, text);
    pack_key_str(pk, "decided_by", text);
    uint32_t n = 0;
    for (int k = 0; k < LISTS_COUNT; k++)
        n += pages[k].oddities;
    pack_key_uint(pk, "oddities", n);
}

int request_pack_balances(msgpack_packer *pk, const ledger *l, const balances_query *q,
                          uint64_t as_of, ledger_error *err)
{
    ledger_frame_view f;
    ledger_allocation_view a;
    list_page pages[LISTS_COUNT];
    const uint64_t offsets[LISTS_COUNT] = {q->frames_offset, q->offset, q->avrop_offset,
                                           q->units_offset};
    bool avrop = q->allocation[0] != '\0', more = false;
    int rc = 0;

    if (q->years)
        return pack_years(pk, l, q, as_of, err);
    /* The id asked for is the client's bytes, not checked against the id rules: escaped. */
    char id[100];
    if (q->frame[0] && !ledger_frame(l, q->frame, &f)) {
        budget_escape(id, sizeof(id), q->frame, strlen(q->frame));
        return fail(err, BUDGET_ENOT_FOUND, "no frame %s as of seq %lld", id, (long long)as_of);
    }
    if (q->allocation[0] && !ledger_allocation(l, q->allocation, &a)) {
        budget_escape(id, sizeof(id), q->allocation, strlen(q->allocation));
        return fail(err, BUDGET_ENOT_FOUND, "no allocation %s as of seq %lld", id,
                    (long long)as_of);
    }

    for (int k = 0; k < LISTS_COUNT; k++) {
        page_init(&pages[k], offsets[k]);
        pages[k].decided = q->decided_by != 0;
    }
    page_frames(&pages[LIST_FRAMES], l, q);
    page_allocations(&pages[LIST_ALLOCATIONS], l, q);
    if (avrop)
        page_avrop(&pages[LIST_AVROP], l, q);
    page_units(&pages[LIST_UNITS], l, q);

    rc |= msgpack_pack_map(pk, (avrop ? 7 : 6) + (q->decided_by != 0 ? 2 : 0));
    pack_key_uint(pk, "as_of", as_of);
    if (q->decided_by != 0)
        pack_decided_by(pk, q->decided_by, pages);
    for (int k = 0; k < LISTS_COUNT; k++) {
        more = more || pages[k].more;
        if (k == LIST_AVROP && !avrop)
            msgpack_sbuffer_destroy(&pages[k].items);
        else
            rc |= page_emit(pk, lists[k].key, &pages[k]);
    }
    pack_cstr(pk, "more");
    rc |= more ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    pack_cstr(pk, "next");
    rc |= msgpack_pack_map(pk, avrop ? 4 : 3);
    for (int k = 0; k < LISTS_COUNT; k++)
        if (k != LIST_AVROP || avrop)
            pack_key_uint(pk, lists[k].offset_arg, offsets[k] + pages[k].count);
    if (rc != 0)
        return fail(err, BUDGET_EUNAVAILABLE, "out of memory");
    return 0;
}

/* ---- units ------------------------------------------------------------------------------ */

int request_decode_units(const msgpack_object *args, uint64_t *offset, ledger_error *err)
{
    uint32_t n = 0;

    *offset = 0;
    if (args) {
        if (args->type != MSGPACK_OBJECT_MAP)
            return fail(err, BUDGET_EBAD_REQUEST, "args must be a map");
        n = args->via.map.size;
    }
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        if (!key_is(k, "offset"))
            return fail(err, BUDGET_EBAD_REQUEST, "units takes offset");
        if (!object_uint(&args->via.map.ptr[i].val, offset))
            return fail(err, BUDGET_EBAD_REQUEST, "args.offset must be a uint");
    }
    return 0;
}

/* One unit of `units`: {"unit", "name", "kind", "parent", "state", "registered",
 * "former_names"}, former names newest first. At most about 17 KiB (REGISTRY_NAMES_MAX). */
static void pack_registered(msgpack_packer *pk, const registry *reg, uint32_t i)
{
    registry_view v;
    registry_view_of(reg, i, &v);
    msgpack_pack_map(pk, 7);
    pack_key_str(pk, "unit", v.code);
    pack_key_str(pk, "name", v.name);
    pack_key_str(pk, "kind", v.kind);
    pack_key_str(pk, "parent", v.parent);
    pack_key_str(pk, "state", v.closed ? "closed" : "open");
    pack_cstr(pk, "registered");
    if (v.registered)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    pack_cstr(pk, "former_names");
    msgpack_pack_array(pk, v.former_count);
    for (uint32_t k = 0; k < v.former_count; k++)
        pack_cstr(pk, registry_former_name(reg, i, k));
}

int request_pack_units(msgpack_packer *pk, const ledger *l, uint64_t offset, uint64_t as_of,
                       ledger_error *err)
{
    const registry *reg = ledger_registry(l);
    list_page page;
    int rc = 0;

    page_init(&page, offset);
    for (uint32_t i = 0; i < registry_count(reg) && !page.more; i++)
        if (page_takes(&page))
            pack_registered(&page.pk, reg, i);
    rc |= msgpack_pack_map(pk, 4);
    pack_key_uint(pk, "as_of", as_of);
    rc |= page_emit(pk, "units", &page);
    pack_cstr(pk, "more");
    rc |= page.more ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    pack_cstr(pk, "next");
    rc |= msgpack_pack_map(pk, 1);
    pack_key_uint(pk, "offset", offset + page.count);
    if (rc != 0)
        return fail(err, BUDGET_EUNAVAILABLE, "out of memory");
    return 0;
}

/* ---- outcome ---------------------------------------------------------------------------- */

/* One arg of `outcome` into `q`. */
static int decode_outcome_arg(const msgpack_object *k, const msgpack_object *v, outcome_query *q,
                              ledger_error *err)
{
    int64_t n;
    if (key_is(k, "unit"))
        return copy_str(v, "unit", q->unit, BUDGET_UNIT_BYTES_MAX, err);
    if (key_is(k, "year")) {
        if (!object_int(v, &n) || n < BUDGET_YEAR_MIN || n > BUDGET_YEAR_MAX)
            return fail(err, BUDGET_EBAD_REQUEST, "args.year must be an integer year %d..%d",
                        BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
        q->year = (int32_t)n;
        return 0;
    }
    if (key_is(k, "offset")) {
        if (!object_uint(v, &q->offset))
            return fail(err, BUDGET_EBAD_REQUEST, "args.offset must be a uint");
        return 0;
    }
    return fail(err, BUDGET_EBAD_REQUEST, "outcome takes unit, year, offset");
}

int request_decode_outcome(const msgpack_object *args, outcome_query *q, ledger_error *err)
{
    memset(q, 0, sizeof *q);
    if (args != NULL && args->type != MSGPACK_OBJECT_MAP)
        return fail(err, BUDGET_EBAD_REQUEST, "args must be a map");
    for (uint32_t i = 0; args != NULL && i < args->via.map.size; i++) {
        int rc = decode_outcome_arg(&args->via.map.ptr[i].key, &args->via.map.ptr[i].val, q, err);
        if (rc != 0)
            return rc;
    }
    if (q->unit[0] == '\0' || !budget_unit_valid(q->unit, strlen(q->unit)))
        return fail(err, BUDGET_EBAD_REQUEST,
                    "outcome needs args.unit, 1..32 characters of A-Za-z0-9._:-");
    if (q->year == 0)
        return fail(err, BUDGET_EBAD_REQUEST, "outcome needs args.year");
    return 0;
}

/* One figure of `outcome`: {"month", "allocation", "amount", "seq"}. */
static void pack_figure(msgpack_packer *pk, const outcome_figure_view *f)
{
    msgpack_pack_map(pk, 4);
    pack_key_int(pk, "month", f->month);
    pack_key_str(pk, "allocation", f->allocation);
    pack_key_int(pk, "amount", f->amount);
    pack_key_uint(pk, "seq", f->seq);
}

int request_pack_outcome(msgpack_packer *pk, const ledger *l, const outcome_query *q,
                         uint64_t as_of, ledger_error *err)
{
    const registry *reg = ledger_registry(l);
    uint32_t i = registry_find(reg, q->unit);
    if (i == REGISTRY_NONE)
        return fail(err, BUDGET_ENOT_FOUND, "unit %s is not a registered unit", q->unit);
    registry_view v;
    registry_view_of(reg, i, &v);
    ledger_outcome_view o;
    ledger_outcome(l, q->unit, q->year, &o);
    list_page page;
    page_init(&page, q->offset);
    outcome_figure_view f;
    uint32_t cursor = 0;
    while (!page.more && outcome_next_figure(ledger_outcomes(l), q->unit, q->year, &cursor, &f))
        if (page_takes(&page))
            pack_figure(&page.pk, &f);
    int rc = msgpack_pack_map(pk, 8 + OUTCOME_KEYS);
    pack_key_uint(pk, "as_of", as_of);
    pack_key_str(pk, "unit", q->unit);
    pack_key_str(pk, "name", v.name);
    pack_key_int(pk, "year", q->year);
    pack_rec r;
    pack_rec_begin(&r, pk);
    pack_outcome_keys(&r, &o);
    pack_rec_end(&r);
    pack_cstr(pk, "months");
    rc |= msgpack_pack_array(pk, OUTCOME_MONTHS);
    for (int m = 0; m < OUTCOME_MONTHS; m++)
        rc |= msgpack_pack_int64(pk, o.months[m]);
    rc |= page_emit(pk, "figures", &page);
    pack_cstr(pk, "more");
    rc |= page.more ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    pack_cstr(pk, "next");
    msgpack_pack_map(pk, 1);
    pack_key_uint(pk, "offset", q->offset + page.count);
    if (rc != 0)
        return fail(err, BUDGET_EUNAVAILABLE, "out of memory");
    return 0;
}
