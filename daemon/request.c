/* Requests and results: args of each op into ledger commands and queries; results packed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/text.h"
#include "request.h"

/* How an arg is read and where it goes. */
typedef enum {
    ARG_STR,    /* a str copied into a char[] field of the command, at most `max` bytes */
    ARG_YEAR,   /* an integer into cmd->year */
    ARG_AMOUNT, /* an integer into cmd->amount (its sign is checked by the ledger) */
} arg_kind;

typedef struct {
    const char *name;
    arg_kind kind;
    size_t offset; /* of the field in ledger_cmd, for ARG_STR */
    size_t max;    /* bytes, for ARG_STR */
    bool required;
} arg_spec;

#define ARGS_MAX 6

typedef struct {
    request_write_op w;
    arg_spec args[ARGS_MAX];
} write_table_row;

#define STR(name, field, max, req)                                                                 \
    {                                                                                              \
        name, ARG_STR, offsetof(ledger_cmd, field), max, req                                       \
    }
#define ID(name, field) STR(name, field, BUDGET_ID_BYTES_MAX, true)
#define TEXT(name, field, req) STR(name, field, BUDGET_TEXT_BYTES_MAX, req)

static const write_table_row write_table[] = {
    {{"frame.grant", ACCESS_ADMIN, LEDGER_FRAME_GRANTED},
     {ID("id", id),
      STR("unit", unit, BUDGET_UNIT_BYTES_MAX, true),
      {"year", ARG_YEAR, 0, 0, true},
      {"amount", ARG_AMOUNT, 0, 0, true},
      TEXT("title", title, true),
      TEXT("reference", reference, false)}},
    {{"frame.adjust", ACCESS_ADMIN, LEDGER_FRAME_ADJUSTED},
     {ID("id", id),
      ID("frame", frame),
      {"delta", ARG_AMOUNT, 0, 0, true},
      TEXT("reason", title, true),
      TEXT("reference", reference, false)}},
    {{"allocation.propose", ACCESS_CLERK, LEDGER_ALLOCATION_PROPOSED},
     {ID("id", id),
      ID("frame", frame),
      STR("unit", unit, BUDGET_UNIT_BYTES_MAX, true),
      {"amount", ARG_AMOUNT, 0, 0, true},
      TEXT("purpose", title, true)}},
    {{"avrop.request", ACCESS_CLERK, LEDGER_AVROP_REQUESTED},
     {ID("id", id),
      ID("allocation", allocation),
      {"amount", ARG_AMOUNT, 0, 0, true},
      TEXT("note", note, false)}},
    {{"approve", ACCESS_APPROVER, LEDGER_DECISION_APPROVED},
     {ID("id", id), ID("target", target), TEXT("reference", reference, false),
      TEXT("note", note, false)}},
    {{"reject", ACCESS_APPROVER, LEDGER_DECISION_REJECTED},
     {ID("id", id), ID("target", target), TEXT("reference", reference, false),
      TEXT("note", note, false)}},
    {{"withdraw", ACCESS_CLERK, LEDGER_REQUEST_WITHDRAWN},
     {ID("id", id), ID("target", target), TEXT("note", note, false)}},
};

#define WRITE_OPS (sizeof(write_table) / sizeof(write_table[0]))

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
        const char *name = write_table[i].w.op;
        if (strlen(name) == len && memcmp(name, op, len) == 0)
            return &write_table[i].w;
    }
    return NULL;
}

static int decode_arg(const arg_spec *spec, const msgpack_object *v, ledger_cmd *cmd,
                      ledger_error *err)
{
    int64_t n;

    switch (spec->kind) {
    case ARG_STR:
        return copy_str(v, spec->name, (char *)cmd + spec->offset, spec->max, err);
    case ARG_YEAR:
        if (!object_int(v, &n) || n < BUDGET_YEAR_MIN || n > BUDGET_YEAR_MAX)
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be an integer year %d..%d",
                        spec->name, BUDGET_YEAR_MIN, BUDGET_YEAR_MAX);
        cmd->year = (int32_t)n;
        return 0;
    case ARG_AMOUNT:
        if (!object_int(v, &n))
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be an integer amount in öre",
                        spec->name);
        cmd->amount = n;
        return 0;
    }
    return fail(err, BUDGET_EINTERNAL, "arg %s has no kind", spec->name);
}

int request_decode_write(const request_write_op *w, const msgpack_object *args, ledger_cmd *cmd,
                         bool *has_expect_head, uint64_t *expect_head, ledger_error *err)
{
    const write_table_row *row = (const write_table_row *)w;
    bool seen[ARGS_MAX] = {false};
    uint32_t n = 0;

    memset(cmd, 0, sizeof(*cmd));
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
        size_t j;

        if (key_is(k, "expect_head")) {
            if (!object_uint(v, expect_head))
                return fail(err, BUDGET_EBAD_REQUEST, "args.expect_head must be a uint");
            *has_expect_head = true;
            continue;
        }
        for (j = 0; j < ARGS_MAX && row->args[j].name; j++)
            if (key_is(k, row->args[j].name))
                break;
        if (j == ARGS_MAX || !row->args[j].name) {
            /* The key is the client's bytes: escaped, and cut with an ellipsis. */
            char name[48] = "?";
            if (k->type == MSGPACK_OBJECT_STR)
                budget_escape(name, sizeof(name), k->via.str.ptr, k->via.str.size);
            err->code = BUDGET_EBAD_REQUEST;
            snprintf(err->message, sizeof(err->message), "%s takes no arg \"%s\"", w->op, name);
            return err->code;
        }
        if (seen[j])
            return fail(err, BUDGET_EBAD_REQUEST, "args.%s given twice", row->args[j].name);
        seen[j] = true;
        int rc = decode_arg(&row->args[j], v, cmd, err);
        if (rc)
            return rc;
    }
    for (size_t j = 0; j < ARGS_MAX && row->args[j].name; j++)
        if (row->args[j].required && !seen[j]) {
            err->code = BUDGET_EBAD_REQUEST;
            snprintf(err->message, sizeof(err->message), "%s needs args.%s", w->op,
                     row->args[j].name);
            return err->code;
        }
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
            if (!object_uint(v, &q->as_of))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uint seq", "as_of");
            q->has_as_of = true;
        } else if (key_is(k, "offset")) {
            if (!object_uint(v, &q->offset))
                return fail(err, BUDGET_EBAD_REQUEST, "args.%s must be a uint", "offset");
        } else {
            return fail(err, BUDGET_EBAD_REQUEST,
                        "balances takes frame, allocation, unit, year, as_of, offset");
        }
        if (rc)
            return rc;
    }
    if (picked > 1)
        return fail(err, BUDGET_EBAD_REQUEST,
                    "balances takes at most one of frame, allocation, unit");
    return 0;
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
        } else {
            return fail(err, BUDGET_EBAD_REQUEST,
                        "events takes after, limit, entity, unit, type, actor, ts_from, ts_to");
        }
        if (rc)
            return rc;
    }
    if (q->has_ts_from && q->has_ts_to && q->ts_from > q->ts_to)
        return fail(err, BUDGET_EBAD_REQUEST, "args.ts_from is after args.ts_to");
    return 0;
}

event_match request_event_matches(const events_query *q, const ledger_event *ev)
{
    if (q->type && ev->type != q->type)
        return EVENT_NO;
    if (q->unit[0] && strcmp(ev->unit, q->unit) != 0)
        return EVENT_NO;
    if (q->has_actor && ev->actor.uid != q->actor)
        return EVENT_NO;
    if ((q->has_ts_from && ev->ts_ms < q->ts_from) || (q->has_ts_to && ev->ts_ms >= q->ts_to))
        return EVENT_NO;
    if (!q->entity[0] || strcmp(ev->id, q->entity) == 0 || strcmp(ev->frame, q->entity) == 0 ||
        strcmp(ev->allocation, q->entity) == 0 || strcmp(ev->target, q->entity) == 0)
        return EVENT_YES;
    /* A decision or withdrawal names its avrop and frame, not the allocation between them. */
    if (ev->target_kind == LEDGER_KIND_AVROP)
        return EVENT_IF_AVROP_OF_ENTITY;
    return EVENT_NO;
}

void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void pack_key_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
    pack_cstr(pk, key);
    msgpack_pack_uint64(pk, v);
}

void pack_key_int(msgpack_packer *pk, const char *key, int64_t v)
{
    pack_cstr(pk, key);
    msgpack_pack_int64(pk, v);
}

void pack_key_str(msgpack_packer *pk, const char *key, const char *v)
{
    pack_cstr(pk, key);
    pack_cstr(pk, v);
}

void request_pack_write_result(msgpack_packer *pk, const ledger_event *ev, const uint8_t hash[32])
{
    msgpack_pack_map(pk, 5);
    pack_key_uint(pk, "seq", ev->seq);
    pack_cstr(pk, "hash");
    msgpack_pack_bin(pk, 32);
    msgpack_pack_bin_body(pk, hash, 32);
    pack_key_uint(pk, "ts", ev->ts_ms);
    pack_key_str(pk, "type", ledger_type_name(ev->type));
    pack_key_str(pk, "id", ev->id);
}

static void pack_frame(msgpack_packer *pk, const ledger_frame_view *f)
{
    msgpack_pack_map(pk, 10);
    pack_key_str(pk, "id", f->id);
    pack_key_str(pk, "unit", f->unit);
    pack_key_int(pk, "year", f->year);
    pack_key_str(pk, "title", f->title);
    pack_key_str(pk, "reference", f->reference);
    pack_key_int(pk, "granted", f->granted);
    pack_key_int(pk, "allocated", f->allocated);
    pack_key_int(pk, "pending", f->pending);
    pack_key_int(pk, "unallocated", f->unallocated);
    pack_key_int(pk, "called_off", f->called_off);
}

static void pack_allocation(msgpack_packer *pk, const ledger_allocation_view *a)
{
    msgpack_pack_map(pk, 10);
    pack_key_str(pk, "id", a->id);
    pack_key_str(pk, "frame", a->frame);
    pack_key_str(pk, "unit", a->unit);
    pack_key_int(pk, "year", a->year);
    pack_key_str(pk, "purpose", a->purpose);
    pack_key_int(pk, "amount", a->amount);
    pack_key_str(pk, "status", ledger_status_name(a->status));
    pack_key_int(pk, "called_off", a->called_off);
    pack_key_int(pk, "pending", a->pending);
    pack_key_int(pk, "available", a->available);
}

static void pack_avrop(msgpack_packer *pk, const ledger *l, const ledger_avrop_view *v)
{
    const char *note = ledger_avrop_note(l, v->id);
    msgpack_pack_map(pk, 6);
    pack_key_str(pk, "id", v->id);
    pack_key_str(pk, "allocation", v->allocation);
    pack_key_str(pk, "unit", v->unit);
    pack_key_int(pk, "amount", v->amount);
    pack_key_str(pk, "status", ledger_status_name(v->status));
    pack_key_str(pk, "note", note ? note : "");
}

static void pack_unit(msgpack_packer *pk, const ledger_unit_view *u)
{
    msgpack_pack_map(pk, 7);
    pack_key_str(pk, "unit", u->unit);
    pack_key_int(pk, "year", u->year);
    pack_key_int(pk, "frames", u->frames);
    pack_key_int(pk, "allocated", u->allocated);
    pack_key_int(pk, "called_off", u->called_off);
    pack_key_int(pk, "pending", u->pending);
    pack_key_int(pk, "available", u->available);
}

/* Counts the matches of an iterator first: msgpack needs an array's length before it. */
#define COUNT_MATCHES(count, next_call)                                                            \
    do {                                                                                           \
        size_t i_ = 0;                                                                             \
        (count) = 0;                                                                               \
        while (next_call)                                                                          \
            (count)++;                                                                             \
    } while (0)

static void pack_frames(msgpack_packer *pk, const ledger *l, const balances_query *q)
{
    ledger_frame_view f;
    size_t count, i = 0;

    if (q->allocation[0]) {
        msgpack_pack_array(pk, 0);
        return;
    }
    if (q->frame[0]) {
        ledger_frame(l, q->frame, &f);
        msgpack_pack_array(pk, 1);
        pack_frame(pk, &f);
        return;
    }
    COUNT_MATCHES(count, ledger_next_frame(l, &i_, q->unit[0] ? q->unit : NULL, q->year, &f));
    msgpack_pack_array(pk, count);
    while (ledger_next_frame(l, &i, q->unit[0] ? q->unit : NULL, q->year, &f))
        pack_frame(pk, &f);
}

/* Packs allocations from `q->offset`, at most BUDGET_BALANCES_PAGE_MAX; returns "more". */
static bool pack_allocations(msgpack_packer *pk, const ledger *l, const balances_query *q)
{
    ledger_allocation_view a;
    const char *frame = q->frame[0] ? q->frame : NULL;
    const char *unit = q->unit[0] ? q->unit : NULL;
    size_t count, i = 0, skipped = 0, packed = 0;

    if (q->allocation[0]) {
        ledger_allocation(l, q->allocation, &a);
        msgpack_pack_array(pk, 1);
        pack_allocation(pk, &a);
        return false;
    }
    COUNT_MATCHES(count, ledger_next_allocation(l, &i_, frame, unit, q->year, &a));
    count = count > q->offset ? count - q->offset : 0;
    bool more = count > BUDGET_BALANCES_PAGE_MAX;
    if (more)
        count = BUDGET_BALANCES_PAGE_MAX;
    msgpack_pack_array(pk, count);
    while (packed < count && ledger_next_allocation(l, &i, frame, unit, q->year, &a)) {
        if (skipped < q->offset) {
            skipped++;
            continue;
        }
        pack_allocation(pk, &a);
        packed++;
    }
    return more;
}

int request_pack_balances(msgpack_packer *pk, const ledger *l, const balances_query *q,
                          uint64_t as_of, ledger_error *err)
{
    ledger_frame_view f;
    ledger_allocation_view a;
    ledger_unit_view u;
    ledger_avrop_view v;
    size_t count, i = 0;

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

    msgpack_pack_map(pk, q->allocation[0] ? 6 : 5);
    pack_key_uint(pk, "as_of", as_of);
    pack_cstr(pk, "frames");
    pack_frames(pk, l, q);
    pack_cstr(pk, "allocations");
    bool more = pack_allocations(pk, l, q);
    if (q->allocation[0]) {
        pack_cstr(pk, "avrop");
        COUNT_MATCHES(count, ledger_next_avrop(l, &i_, q->allocation, &v));
        msgpack_pack_array(pk, count);
        while (ledger_next_avrop(l, &i, q->allocation, &v))
            pack_avrop(pk, l, &v);
    }
    pack_cstr(pk, "units");
    if (q->frame[0] || q->allocation[0]) {
        msgpack_pack_array(pk, 0);
    } else {
        const char *unit = q->unit[0] ? q->unit : NULL;
        i = 0;
        COUNT_MATCHES(count, ledger_next_unit(l, &i_, unit, q->year, &u));
        msgpack_pack_array(pk, count);
        while (ledger_next_unit(l, &i, unit, q->year, &u))
            pack_unit(pk, &u);
    }
    pack_cstr(pk, "more");
    if (more)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    return 0;
}
