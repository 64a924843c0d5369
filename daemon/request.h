/*
 * Requests and results: turns a request's args (decoded by msgpack-c) into ledger commands
 * and queries, and packs results. Table-driven: a write op's args are its event type's field
 * table, so an unknown or ill-typed arg always gets the same clear error.
 */
#ifndef BUDGET_REQUEST_H
#define BUDGET_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "access.h"
#include "ledger.h"
#include "proto/mp.h"

/* The write ops of docs/protocol.md, one per event type (LEDGER_EVENT_TYPES): `need` is the
 * role the caller must hold (checked by ops.c's dispatch before the op runs), `type` the
 * event the op makes; its args are the fields of the type the client gives. */
typedef struct {
    const char *op;
    access_role need;
    ledger_type type;
} request_write_op;

/* The write op named `op` (not NUL-terminated), or NULL. */
const request_write_op *request_find_write(const char *op, size_t len);

/*
 * Decodes the args of a write into `cmd` (zeroed first). `args` may be NULL (no args).
 * Returns 0, or BUDGET_EBAD_REQUEST with `err` saying which arg and why.
 */
int request_decode_write(const request_write_op *w, const msgpack_object *args, ledger_cmd *cmd,
                         bool *has_expect_head, uint64_t *expect_head, ledger_error *err);

typedef struct {
    char frame[BUDGET_ID_BYTES_MAX + 1];
    char allocation[BUDGET_ID_BYTES_MAX + 1];
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    int32_t year; /* 0: any */
    bool has_as_of;
    uint64_t as_of;
    /* as_of given as a day (YYYYMMDD): the ledger as it stood at the end of that day (UTC);
     * as_of is then found from it (request_as_of_day_end). */
    int32_t as_of_day;
    /* decided_by, a day YYYYMMDD (0: not given): what had been decided by then
     * (ledger_apply_decided), with the oddities of each item packed. */
    int32_t decided_by;
    /* Items of each list skipped before its page: `offset` (allocations, its wire name since
     * protocol 1), `frames_offset`, `avrop_offset`, `units_offset`. */
    uint64_t offset, frames_offset, avrop_offset, units_offset;
    /* view "years": the units × years view of years from..to (`unit` filters it; `offset`
     * pages its rows, `subtotals_offset` its subtotals). */
    bool years;
    int32_t from, to;
    uint64_t subtotals_offset;
} balances_query;

int request_decode_balances(const msgpack_object *args, balances_query *q, ledger_error *err);

/* The first ms (since the epoch, UTC) after the Swedish day YYYYMMDD `day` (budget_day_end_ms). */
uint64_t request_day_end_ms(int32_t day);

/*
 * Packs the `balances` result for `q` from `l`, which stands as of `as_of`: one page of each
 * list (at most BUDGET_BALANCES_PAGE_MAX items and about BUDGET_BALANCES_PAGE_BYTES_MAX bytes
 * of them, from its offset), "more" when any list goes on, and "next", the offsets of the
 * next page. The whole result stays under the frame limit whatever the ledger holds.
 * Returns 0; or BUDGET_ENOT_FOUND (the frame/allocation asked for does not exist; nothing is
 * packed) or BUDGET_EUNAVAILABLE (out of memory; the packed bytes are to be dropped) with
 * `err` filled.
 */
int request_pack_balances(msgpack_packer *pk, const ledger *l, const balances_query *q,
                          uint64_t as_of, ledger_error *err);

typedef struct {
    uint64_t after;
    uint32_t limit;
    char entity[BUDGET_ID_BYTES_MAX + 1];
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    ledger_type type; /* 0: any */
    bool has_actor;
    uint32_t actor; /* the actor's uid */
    bool has_ts_from, has_ts_to;
    uint64_t ts_from, ts_to; /* ms since the epoch: from <= ts < to */
    /* Days YYYYMMDD (0: not given): events whose decision is dated within them, inclusive. */
    int32_t decided_from, decided_to;
} events_query;

int request_decode_events(const msgpack_object *args, events_query *q, ledger_error *err);

/* What request_event_matches says of one event. */
typedef enum {
    EVENT_NO = 0,
    EVENT_YES = 1,
    /* Every filter holds but the entity, and the event decides or withdraws an avrop: it
     * matches when that avrop's allocation is the entity, which the caller looks up. */
    EVENT_IF_AVROP_OF_ENTITY = 2,
} event_match;

/*
 * Whether `ev` passes the filters of `q`. The entity filter takes the entity and everything
 * that refers to it: an event matches when it names the entity as its id, frame, allocation
 * or target (a frame's adjustments, allocations, their avrop and every decision and
 * withdrawal on them all carry the frame), or when it decides or withdraws an avrop of an
 * allocation that is the entity (EVENT_IF_AVROP_OF_ENTITY).
 */
event_match request_event_matches(const events_query *q, const ledger_event *ev);

/* The args of `units`: `offset` (units skipped before the page). 0 or BUDGET_EBAD_REQUEST. */
int request_decode_units(const msgpack_object *args, uint64_t *offset, ledger_error *err);

/*
 * Packs the `units` result from the register of `l` (as of `as_of`): one page of units in the
 * order they entered the register, from `offset`, as balances pages its lists (at most
 * BUDGET_BALANCES_PAGE_MAX units and about BUDGET_BALANCES_PAGE_BYTES_MAX bytes), "more" and
 * "next": {"offset"}. 0, or BUDGET_EUNAVAILABLE (out of memory; drop the packed bytes).
 */
int request_pack_units(msgpack_packer *pk, const ledger *l, uint64_t offset, uint64_t as_of,
                       ledger_error *err);

/* The args of `outcome`: a unit and a fiscal year, both required, and `offset` (figures
 * skipped before the page). */
typedef struct {
    char unit[BUDGET_UNIT_BYTES_MAX + 1];
    int32_t year;
    uint64_t offset;
} outcome_query;

/* 0, or BUDGET_EBAD_REQUEST with `err` saying which arg and why. */
int request_decode_outcome(const msgpack_object *args, outcome_query *q, ledger_error *err);

/*
 * Packs the `outcome` result (docs/protocol.md): the unit's outcome in the year set against its
 * budget, its twelve month sums, and one page of its figures (as balances pages a list), "more"
 * and "next": {"offset"}. O(the page and the offset). 0;
 * BUDGET_ENOT_FOUND (the unit is not in the register; nothing packed) or BUDGET_EUNAVAILABLE
 * (out of memory; drop the packed bytes) with `err` filled.
 */
int request_pack_outcome(msgpack_packer *pk, const ledger *l, const outcome_query *q,
                         uint64_t as_of, ledger_error *err);

/* The result of a write: {"seq","hash","ts","type","id"}. */
void request_pack_write_result(msgpack_packer *pk, const ledger_event *ev, const uint8_t hash[32]);

/*
 * A record's pairs gathered in a buffer on the stack and handed to the packer a buffer at a
 * time: a page of balances is hundreds of records of a dozen or more short pairs each, and the
 * packer's cost per call (a function pointer, a room check, a copy) was the larger part of
 * packing one. Keys come with their length (PACK_KEY for a literal), so a key costs no strlen.
 * The bytes are those msgpack-c's own calls write (tests/test_pack.c). Between
 * pack_rec_begin and pack_rec_end nothing else may be written to `pk`.
 */
#define PACK_REC_BYTES 1024u
typedef struct {
    msgpack_packer *pk;
    mp_writer w;
    uint8_t buf[PACK_REC_BYTES];
} pack_rec;

/* A key that is a string literal, and its length: the two key arguments of pack_rec_*. */
#define PACK_KEY(lit) ("" lit ""), (sizeof(lit) - 1)

void pack_rec_begin(pack_rec *r, msgpack_packer *pk);
/* A map's header: `pairs` pairs follow. */
void pack_rec_map(pack_rec *r, uint32_t pairs);
void pack_rec_uint(pack_rec *r, const char *key, size_t key_len, uint64_t v);
void pack_rec_int(pack_rec *r, const char *key, size_t key_len, int64_t v);
/* A str value, or nil when `v` is NULL. */
void pack_rec_str(pack_rec *r, const char *key, size_t key_len, const char *v);
void pack_rec_bool(pack_rec *r, const char *key, size_t key_len, bool v);
/* The key alone: its value is packed next (pack_rec_value_*). */
void pack_rec_key(pack_rec *r, const char *key, size_t key_len);
void pack_rec_value_str(pack_rec *r, const char *v);
void pack_rec_value_int(pack_rec *r, int64_t v);
void pack_rec_value_nil(pack_rec *r);
void pack_rec_value_array(pack_rec *r, uint32_t n);
/* Hands what is gathered to the packer. */
void pack_rec_end(pack_rec *r);

/* Small packing helpers shared by the server: one pair or str, packed as a record. */
void pack_cstr(msgpack_packer *pk, const char *s);
void pack_key_uint(msgpack_packer *pk, const char *key, uint64_t v);
void pack_key_int(msgpack_packer *pk, const char *key, int64_t v);
void pack_key_str(msgpack_packer *pk, const char *key, const char *v);

#endif
