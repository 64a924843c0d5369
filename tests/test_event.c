/* The event codec: round trips, the hash chain, strictness, and a cross-check with msgpack-c. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "daemon/event.h"

#define MAX BUDGET_AMOUNT_MAX
#define TYPES 15

/* The types whose data maps hold only strings and integers. budget.adopted, whose lines are an
 * array of maps, has its own tests at the end of this file ("budget.adopted"). */
static const ledger_type all_types[TYPES] = {
    LEDGER_FRAME_GRANTED,
    LEDGER_FRAME_ADJUSTED,
    LEDGER_ALLOCATION_PROPOSED,
    LEDGER_AVROP_REQUESTED,
    LEDGER_DECISION_APPROVED,
    LEDGER_DECISION_REJECTED,
    LEDGER_REQUEST_WITHDRAWN,
    LEDGER_ALLOCATION_REDUCTION_REQUESTED,
    LEDGER_AVROP_REVERSAL_REQUESTED,
    LEDGER_UNIT_REGISTERED,
    LEDGER_UNIT_RENAMED,
    LEDGER_UNIT_CLOSED,
    LEDGER_YEAR_CLOSED,
    LEDGER_FRAME_CARRIED_OVER,
    LEDGER_OUTCOME_RECORDED,
};

/* The documented data keys of each type, in order (written out again here on purpose). */
#define KEYS_MAX 16
#define DECISION_KEYS "decision_body", "decision_date", "decision_paragraph", "decision_dnr"
static const char *const data_keys[][KEYS_MAX] = {
    [LEDGER_FRAME_GRANTED] = {"id", "unit", "year", "amount", "title", DECISION_KEYS, "reference",
                              "avrop_last_day", "continues"},
    [LEDGER_FRAME_ADJUSTED] = {"id", "frame", "unit", "year", "delta", "reason", DECISION_KEYS,
                               "reference"},
    [LEDGER_ALLOCATION_PROPOSED] = {"id", "frame", "unit", "year", "amount", "purpose",
                                    "avrop_last_day"},
    [LEDGER_AVROP_REQUESTED] = {"id", "allocation", "frame", "unit", "year", "amount", "note"},
    [LEDGER_DECISION_APPROVED] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  DECISION_KEYS, "reference", "note"},
    [LEDGER_DECISION_REJECTED] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  DECISION_KEYS, "reference", "note"},
    [LEDGER_REQUEST_WITHDRAWN] = {"id", "target", "target_kind", "frame", "unit", "year", "amount",
                                  "note"},
    [LEDGER_ALLOCATION_REDUCTION_REQUESTED] = {"id", "allocation", "frame", "unit", "year",
                                               "amount", "reason"},
    [LEDGER_AVROP_REVERSAL_REQUESTED] = {"id", "avrop", "allocation", "frame", "unit", "year",
                                         "amount", "reason"},
    [LEDGER_UNIT_REGISTERED] = {"id", "unit", "name", "kind", "parent", "reference"},
    [LEDGER_UNIT_RENAMED] = {"id", "unit", "name", "reference"},
    [LEDGER_UNIT_CLOSED] = {"id", "unit", "reference"},
    [LEDGER_YEAR_CLOSED] = {"id", "year", "unspent", "decision_body", "decision_date",
                            "decision_paragraph", "decision_dnr", "note"},
    [LEDGER_FRAME_CARRIED_OVER] = {"id", "frame", "unit", "year", "amount", "title",
                                   "avrop_last_day", "decision_body", "decision_date",
                                   "decision_paragraph", "decision_dnr"},
    [LEDGER_BUDGET_ADOPTED] = {"id", "year", "plan_until", "title", "lines", DECISION_KEYS},
    [LEDGER_OUTCOME_RECORDED] = {"id", "unit", "year", "month", "allocation", "amount", "source"},
};

/* The types of the register of units have no year and no amount. */
static bool is_unit_type(ledger_type t)
{
    return t == LEDGER_UNIT_REGISTERED || t == LEDGER_UNIT_RENAMED || t == LEDGER_UNIT_CLOSED;
}

/* True when events of `t` carry a decision. */
static bool has_decision(ledger_type t)
{
    return t == LEDGER_FRAME_GRANTED || t == LEDGER_FRAME_ADJUSTED ||
           t == LEDGER_DECISION_APPROVED || t == LEDGER_DECISION_REJECTED;
}

/* The documented words of target_kind. */
static const char *kind_word(ledger_kind k)
{
    switch (k) {
    case LEDGER_KIND_ALLOCATION:
        return "allocation";
    case LEDGER_KIND_AVROP:
        return "avrop";
    case LEDGER_KIND_REDUCTION:
        return "reduction";
    case LEDGER_KIND_REVERSAL:
        return "reversal";
    default:
        return NULL;
    }
}

static size_t key_count(ledger_type t)
{
    size_t n = 0;
    while (n < KEYS_MAX && data_keys[t][n] != NULL)
        n++;
    return n;
}

/* The keys an encoded `ev` holds: a frame.granted that continues no frame is written without
 * "continues", its last key, as frame.granted was before it had one. */
static size_t data_count(const ledger_event *ev)
{
    size_t n = key_count(ev->type);
    if (ev->type == LEDGER_FRAME_GRANTED && ev->continues[0] == '\0')
        n -= ev->avrop_last_day == 0 ? 2 : 1; /* the rounds after its last field set */
    else if (ev->type == LEDGER_ALLOCATION_PROPOSED && ev->avrop_last_day == 0)
        n--;
    return n;
}

static const char *type_name(ledger_type t)
{
    static const char *names[] = {
        [LEDGER_FRAME_GRANTED] = "frame.granted",
        [LEDGER_FRAME_ADJUSTED] = "frame.adjusted",
        [LEDGER_ALLOCATION_PROPOSED] = "allocation.proposed",
        [LEDGER_AVROP_REQUESTED] = "avrop.requested",
        [LEDGER_DECISION_APPROVED] = "decision.approved",
        [LEDGER_DECISION_REJECTED] = "decision.rejected",
        [LEDGER_REQUEST_WITHDRAWN] = "request.withdrawn",
        [LEDGER_BUDGET_ADOPTED] = "budget.adopted",
        [LEDGER_ALLOCATION_REDUCTION_REQUESTED] = "allocation.reduction_requested",
        [LEDGER_AVROP_REVERSAL_REQUESTED] = "avrop.reversal_requested",
        [LEDGER_UNIT_REGISTERED] = "unit.registered",
        [LEDGER_UNIT_RENAMED] = "unit.renamed",
        [LEDGER_UNIT_CLOSED] = "unit.closed",
        [LEDGER_YEAR_CLOSED] = "year.closed",
        [LEDGER_FRAME_CARRIED_OVER] = "frame.carried_over",
        [LEDGER_OUTCOME_RECORDED] = "outcome.recorded",
    };
    return names[t];
}

/* ---- events to encode ---------------------------------------------------------------------------
 */

static void fill(char *dst, size_t n, char c)
{
    memset(dst, c, n);
    dst[n] = '\0';
}

/* 256 bytes of UTF-8: "ä" (2 bytes) 100 times, then ASCII. */
static void fill_text(char *dst, char tail)
{
    for (int i = 0; i < 100; i++)
        memcpy(dst + 2 * i, "\xc3\xa4", 2);
    fill(dst + 200, 56, tail);
}

/* The decision fields at their longest: "ÅÅÅÅÅÅÅÅ" (16 bytes), 16 digits, 64 bytes of dnr. */
static void max_decision(ledger_event *ev)
{
    for (int i = 0; i < 8; i++)
        memcpy(ev->decision_body + 2 * i, "\xc3\x85", 2);
    ev->decision_body[16] = '\0';
    fill(ev->decision_paragraph, BUDGET_DECISION_PARAGRAPH_BYTES_MAX, '9');
    ev->decision_date = 99991231;
    fill(ev->decision_dnr, BUDGET_DECISION_DNR_BYTES_MAX, 'd');
}

/* The decision fields of `ev` at their longest (`max`) or as clerks write them. */
static void put_decision(ledger_event *ev, bool max)
{
    if (max) {
        fill(ev->decision_body, BUDGET_DECISION_BODY_BYTES_MAX, 'K');
        ev->decision_date = 99991231;
        fill(ev->decision_paragraph, BUDGET_DECISION_PARAGRAPH_BYTES_MAX, '1');
        fill(ev->decision_dnr, BUDGET_DECISION_DNR_BYTES_MAX, 'd');
        return;
    }
    strcpy(ev->decision_body, "KF");
    ev->decision_date = 20211122;
    strcpy(ev->decision_paragraph, "120");
}

/* Lines of an adoption: `count` of them, with `plans` plan amounts each, every string at its
 * longest and every amount at its largest (`max`), or everyday ones. */
static void put_lines(ledger_event *ev, uint16_t count, uint8_t plans, bool max)
{
    ev->lines.count = count;
    for (uint16_t i = 0; i < count; i++) {
        ledger_line *x = &ev->lines.line[i];
        if (max) {
            fill(x->unit, BUDGET_UNIT_BYTES_MAX, 'U');
            x->unit[BUDGET_UNIT_BYTES_MAX - 2] = (char)('0' + i / 10 % 10);
            x->unit[BUDGET_UNIT_BYTES_MAX - 1] = (char)('0' + i % 10);
            fill(x->continues, BUDGET_ID_BYTES_MAX, 'C');
        } else {
            snprintf(x->unit, sizeof x->unit, "N%u", (unsigned)i);
            x->continues[0] = '\0';
        }
        x->amount = max ? MAX : 300000000 + i;
        x->plans = plans;
        for (uint8_t k = 0; k < plans; k++)
            x->plan[k] = max ? MAX : 300000000 + k;
    }
}

/* An event of `type` with every field the type has at its longest or largest. */
static ledger_event max_event(ledger_type type)
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.seq = UINT64_MAX;
    ev.ts_ms = UINT64_MAX;
    ev.actor.uid = UINT32_MAX;
    fill(ev.actor.name, BUDGET_NAME_BYTES_MAX, 'n');
    fill(ev.id, BUDGET_ID_BYTES_MAX, 'I');
    fill(ev.unit, BUDGET_UNIT_BYTES_MAX, 'U');
    ev.year = BUDGET_YEAR_MAX;
    ev.amount = MAX;
    if (has_decision(type)) {
        fill(ev.decision_body, BUDGET_DECISION_BODY_BYTES_MAX - 6, 'B');
        memcpy(ev.decision_body + BUDGET_DECISION_BODY_BYTES_MAX - 6, "ÅÄÖ", 7);
        ev.decision_date = 99991231;
        fill(ev.decision_paragraph, BUDGET_DECISION_PARAGRAPH_BYTES_MAX, '9');
        fill(ev.decision_dnr, BUDGET_DECISION_DNR_BYTES_MAX, 'd');
    }
    switch (type) {
    case LEDGER_FRAME_GRANTED:
        fill_text(ev.title, 't');
        fill_text(ev.reference, 'r');
        ev.avrop_last_day = 99991231;
        fill(ev.continues, BUDGET_ID_BYTES_MAX, 'C');
        break;
    case LEDGER_BUDGET_ADOPTED:
        ev.unit[0] = '\0';
        ev.amount = 0;
        ev.plan_until = BUDGET_YEAR_MAX;
        fill_text(ev.title, 't');
        put_lines(&ev, BUDGET_ADOPT_LINES_MAX, BUDGET_PLAN_YEARS_MAX, true);
        put_decision(&ev, true);
        break;
    case LEDGER_FRAME_ADJUSTED:
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        ev.amount = -MAX;
        fill_text(ev.title, 'w');
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_ALLOCATION_PROPOSED:
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.title, 'p');
        ev.avrop_last_day = 99991231;
        break;
    case LEDGER_AVROP_REQUESTED:
        fill(ev.allocation, BUDGET_ID_BYTES_MAX, 'A');
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.note, 'o');
        break;
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
        fill(ev.target, BUDGET_ID_BYTES_MAX, 'T');
        ev.target_kind = LEDGER_KIND_ALLOCATION;
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.reference, 'r');
        fill_text(ev.note, 'o');
        break;
    case LEDGER_REQUEST_WITHDRAWN:
        fill(ev.target, BUDGET_ID_BYTES_MAX, 'T');
        ev.target_kind = LEDGER_KIND_AVROP;
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.note, 'o');
        break;
    case LEDGER_ALLOCATION_REDUCTION_REQUESTED:
        fill(ev.allocation, BUDGET_ID_BYTES_MAX, 'A');
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.title, 'w');
        break;
    case LEDGER_AVROP_REVERSAL_REQUESTED:
        fill(ev.target, BUDGET_ID_BYTES_MAX, 'V');
        fill(ev.allocation, BUDGET_ID_BYTES_MAX, 'A');
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.title, 'w');
        break;
    case LEDGER_YEAR_CLOSED:
        ev.unit[0] = '\0';
        ev.amount = INT64_MAX;
        max_decision(&ev);
        fill_text(ev.note, 'o');
        break;
    case LEDGER_FRAME_CARRIED_OVER:
        fill(ev.frame, BUDGET_ID_BYTES_MAX, 'F');
        fill_text(ev.title, 't');
        ev.avrop_last_day = 99991231;
        max_decision(&ev);
        break;
    case LEDGER_UNIT_REGISTERED:
        ev.year = 0;
        ev.amount = 0;
        fill_text(ev.title, 'n');
        fill(ev.unit_kind, REGISTRY_KIND_BYTES_MAX, 'k');
        fill(ev.parent, BUDGET_UNIT_BYTES_MAX, 'P');
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_UNIT_RENAMED:
        ev.year = 0;
        ev.amount = 0;
        fill_text(ev.title, 'n');
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_UNIT_CLOSED:
        ev.year = 0;
        ev.amount = 0;
        fill_text(ev.reference, 'r');
        break;
    case LEDGER_OUTCOME_RECORDED:
        ev.month = 12;
        ev.amount = -MAX;
        fill(ev.allocation, BUDGET_ID_BYTES_MAX, 'A');
        fill_text(ev.note, 's');
        break;
    }
    return ev;
}

static void put(char *dst, size_t size, const char *src)
{
    cr_assert_lt(strlen(src), size);
    strcpy(dst, src);
}

#define PUT(field, value) put((field), sizeof(field), (value))

/* The decision of an everyday event: KS 2022-01-25 § 12 dnr KS 2022/7. */
static void typical_decision(ledger_event *ev)
{
    PUT(ev->decision_body, "KS");
    ev->decision_date = 20220125;
    PUT(ev->decision_paragraph, "12");
    PUT(ev->decision_dnr, "KS 2022/7");
}

/* An everyday event of `type`, with seq `seq`. */
static ledger_event typical_event(ledger_type type, uint64_t seq)
{
    ledger_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.seq = seq;
    ev.ts_ms = 1632816000000u + seq * 37;
    ev.actor.uid = 1000 + (uint32_t)(seq % 3);
    PUT(ev.actor.name, "kslinbe");
    snprintf(ev.id, sizeof ev.id, "ev-%llu", (unsigned long long)seq);
    PUT(ev.unit, "SON");
    ev.year = 2021;
    ev.amount = 100000000 + (int64_t)seq;
    if (has_decision(type)) {
        PUT(ev.decision_body, "KS");
        ev.decision_date = 20210824;
        PUT(ev.decision_paragraph, "241");
        PUT(ev.decision_dnr, seq % 2 ? "KS 2021/123" : "");
    }
    switch (type) {
    case LEDGER_FRAME_GRANTED:
        PUT(ev.unit, "KS");
        PUT(ev.title, "Utökat trygghetsarbete");
        PUT(ev.reference, "KS 2021-08-24 § 241");
        ev.avrop_last_day = 20211231;
        break;
    case LEDGER_BUDGET_ADOPTED:
        ev.unit[0] = '\0';
        ev.amount = 0;
        ev.year = 2022;
        ev.plan_until = 2027;
        PUT(ev.title, "Utökat trygghetsarbete");
        put_lines(&ev, 3, 5, false);
        put_decision(&ev, false);
        break;
    case LEDGER_FRAME_ADJUSTED:
        PUT(ev.frame, "KS-2021");
        PUT(ev.unit, "KS");
        ev.amount = -(int64_t)(seq * 1000 + 1);
        PUT(ev.title, "Tilläggsanslag");
        break;
    case LEDGER_ALLOCATION_PROPOSED:
        PUT(ev.frame, "KS-2021");
        PUT(ev.title, "Områdesarbete för trygghetsskapande åtgärder");
        ev.avrop_last_day = 20211130;
        break;
    case LEDGER_AVROP_REQUESTED:
        PUT(ev.allocation, "a-son");
        PUT(ev.frame, "KS-2021");
        PUT(ev.note, "Hösten 2021");
        break;
    case LEDGER_DECISION_APPROVED:
    case LEDGER_DECISION_REJECTED:
        PUT(ev.target, "a-son");
        ev.target_kind = LEDGER_KIND_ALLOCATION;
        PUT(ev.frame, "KS-2021");
        PUT(ev.reference, "KS 2021-09-28 § 270");
        break;
    case LEDGER_REQUEST_WITHDRAWN:
        PUT(ev.target, "v-son");
        ev.target_kind = LEDGER_KIND_AVROP;
        PUT(ev.frame, "KS-2021");
        PUT(ev.note, "Fel belopp");
        break;
    case LEDGER_ALLOCATION_REDUCTION_REQUESTED:
        PUT(ev.allocation, "a-son");
        PUT(ev.frame, "KS-2021");
        PUT(ev.title, "Verksamheten startar först 2022");
        break;
    case LEDGER_AVROP_REVERSAL_REQUESTED:
        PUT(ev.target, "v-son");
        PUT(ev.allocation, "a-son");
        PUT(ev.frame, "KS-2021");
        PUT(ev.title, "Återföring: felaktigt avrop");
        break;
    case LEDGER_YEAR_CLOSED:
        ev.unit[0] = '\0';
        ev.amount = 50000000 + (int64_t)seq;
        typical_decision(&ev);
        break;
    case LEDGER_FRAME_CARRIED_OVER:
        PUT(ev.frame, "KS-2021");
        PUT(ev.unit, "KS");
        PUT(ev.title, "Ombudgetering från 2021");
        ev.avrop_last_day = 20220630;
        typical_decision(&ev);
        break;
    case LEDGER_UNIT_REGISTERED:
        ev.year = 0;
        ev.amount = 0;
        PUT(ev.title, "Social- och omsorgsnämnden");
        PUT(ev.unit_kind, "nämnd");
        PUT(ev.parent, "KS");
        PUT(ev.reference, "KF 2018-12-18 § 510");
        break;
    case LEDGER_UNIT_RENAMED:
        ev.year = 0;
        ev.amount = 0;
        PUT(ev.title, "Socialnämnden");
        break;
    case LEDGER_UNIT_CLOSED:
        ev.year = 0;
        ev.amount = 0;
        PUT(ev.reference, "KF 2022-12-12 § 5");
        break;
    case LEDGER_OUTCOME_RECORDED:
        ev.month = 1 + (int32_t)(seq % 12);
        PUT(ev.allocation, seq % 2 ? "a-son" : "");
        ev.amount = seq % 3 ? (int64_t)seq * 100 : -(int64_t)seq;
        PUT(ev.note, "Utfall SON 2021-09.csv");
        break;
    }
    return ev;
}

static const uint8_t zero_prev[BUDGET_HASH_BYTES];

static size_t encode(const ledger_event *ev, const uint8_t *prev, uint8_t *out,
                     uint8_t hash[BUDGET_HASH_BYTES])
{
    int n = event_encode(ev, prev, out, EVENT_BYTES_MAX, hash);
    cr_assert_gt(n, 0, "event_encode of %s: %d", type_name(ev->type), n);
    cr_assert_leq(n, EVENT_BYTES_MAX);
    return (size_t)n;
}

/* The fields of `type` in two events are equal, and the others are empty in `got`. */
static void expect_same_event(const ledger_event *want, const ledger_event *got)
{
    cr_assert_eq(got->type, want->type);
    cr_assert_eq(got->seq, want->seq);
    cr_assert_eq(got->ts_ms, want->ts_ms);
    cr_assert_eq(got->actor.uid, want->actor.uid);
    cr_assert_str_eq(got->actor.name, want->actor.name);
    cr_assert_str_eq(got->id, want->id);
    cr_assert_str_eq(got->frame, want->frame);
    cr_assert_str_eq(got->allocation, want->allocation);
    cr_assert_str_eq(got->target, want->target);
    cr_assert_eq(got->target_kind, want->target_kind);
    cr_assert_str_eq(got->unit, want->unit);
    cr_assert_eq(got->year, want->year);
    cr_assert_eq(got->amount, want->amount);
    cr_assert_str_eq(got->title, want->title);
    cr_assert_str_eq(got->reference, want->reference);
    cr_assert_str_eq(got->note, want->note);
    cr_assert_eq(got->avrop_last_day, want->avrop_last_day);
    cr_assert_str_eq(got->decision_body, want->decision_body);
    cr_assert_eq(got->decision_date, want->decision_date);
    cr_assert_str_eq(got->decision_paragraph, want->decision_paragraph);
    cr_assert_str_eq(got->decision_dnr, want->decision_dnr);
    cr_assert_str_eq(got->unit_kind, want->unit_kind);
    cr_assert_str_eq(got->parent, want->parent);
}

/* ---- round trips
 * ----------------------------------------------------------------------------------- */

Test(event, round_trip_of_every_type_at_maximum_lengths)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = max_event(all_types[k]);
        uint8_t buf[EVENT_BYTES_MAX], again[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
        uint8_t prev[BUDGET_HASH_BYTES];
        memset(prev, 0xa5, sizeof prev);
        size_t n = encode(&ev, prev, buf, hash);
        ledger_event got;
        memset(&got, 0x5a, sizeof got); /* decode must set or empty every field */
        cr_assert_eq(event_decode(buf, n, &got), 0, "decode of %s", type_name(ev.type));
        expect_same_event(&ev, &got);
        /* A decoded event encodes to the same bytes. */
        size_t m = encode(&got, prev, again, NULL);
        cr_assert_eq(m, n);
        cr_assert_eq(memcmp(buf, again, n), 0);
        cr_assert_eq(event_check_link(buf, n, prev, NULL), 0);
    }
}

Test(event, round_trip_of_every_type_at_minimum_values)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 1);
        ev.seq = 0;
        ev.ts_ms = 0;
        ev.actor.uid = 0;
        ev.actor.name[0] = '\0';
        PUT(ev.id, "x");
        if (ev.unit[0] != '\0')
            PUT(ev.unit, "K");
        ev.avrop_last_day = 0; /* none: "" (frame.carried_over), or the older data map */
        ev.decision_dnr[0] = '\0';
        if (!is_unit_type(all_types[k])) {
            ev.year = BUDGET_YEAR_MIN;
            ev.amount = all_types[k] == LEDGER_FRAME_ADJUSTED ? -1 : 1;
        }
        ev.reference[0] = '\0';
        ev.parent[0] = '\0';
        ev.note[0] = '\0';
        if (all_types[k] == LEDGER_OUTCOME_RECORDED) {
            ev.amount = 0; /* a figure of 0 kr is a figure */
            ev.month = 1;
            ev.allocation[0] = '\0';
            PUT(ev.note, "s"); /* the source is required */
        }
        if (ev.title[0] != '\0')
            PUT(ev.title, "t");
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        ledger_event got;
        memset(&got, 0x5a, sizeof got);
        cr_assert_eq(event_decode(buf, n, &got), 0, "decode of %s", type_name(ev.type));
        expect_same_event(&ev, &got);
    }
}

Test(event, decisions_and_withdrawals_of_reductions_and_reversals_round_trip_their_target_kind)
{
    const ledger_type types[] = {LEDGER_DECISION_APPROVED, LEDGER_DECISION_REJECTED,
                                 LEDGER_REQUEST_WITHDRAWN};
    const ledger_kind kinds[] = {LEDGER_KIND_REDUCTION, LEDGER_KIND_REVERSAL};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            ledger_event ev = typical_event(types[t], 3);
            ev.target_kind = kinds[k];
            uint8_t buf[EVENT_BYTES_MAX];
            size_t n = encode(&ev, zero_prev, buf, NULL);
            ledger_event got;
            cr_assert_eq(event_decode(buf, n, &got), 0, "decode of %s", type_name(ev.type));
            expect_same_event(&ev, &got);
        }
    }
}

Test(event, integers_of_every_width_round_trip)
{
    const uint64_t seqs[] = {
        1, 127, 128, 255, 256, 65535, 65536, UINT32_MAX, UINT64_C(1) << 32, UINT64_MAX};
    const int64_t deltas[] = {-1,        -32,         -33,   -128,       -129,       -32768, -32769,
                              INT32_MIN, -2147483649, -MAX,  1,          127,        128,    255,
                              256,       65535,       65536, 4294967295, 4294967296, MAX};
    uint8_t buf[EVENT_BYTES_MAX];
    ledger_event got;
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        ledger_event ev = typical_event(LEDGER_FRAME_GRANTED, 1);
        ev.seq = seqs[i];
        ev.ts_ms = seqs[i];
        ev.actor.uid = (uint32_t)seqs[i];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        cr_assert_eq(event_decode(buf, n, &got), 0);
        expect_same_event(&ev, &got);
        uint64_t seq = 0;
        cr_assert_eq(event_seq(buf, n, &seq), 0);
        cr_assert_eq(seq, seqs[i]);
    }
    for (size_t i = 0; i < sizeof deltas / sizeof deltas[0]; i++) {
        ledger_event ev = typical_event(LEDGER_FRAME_ADJUSTED, 1);
        ev.amount = deltas[i];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        cr_assert_eq(event_decode(buf, n, &got), 0, "delta %lld", (long long)deltas[i]);
        expect_same_event(&ev, &got);
    }
}

/* ---- hashing and the link
 * ------------------------------------------------------------------------------ */

Test(event, hash_is_sha256_of_prev_and_the_map_without_hash)
{
    for (int k = 0; k < TYPES; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ledger_event ev = variant ? max_event(all_types[k]) : typical_event(all_types[k], 42);
            uint8_t prev[BUDGET_HASH_BYTES], buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
            for (int i = 0; i < BUDGET_HASH_BYTES; i++)
                prev[i] = (uint8_t)(i * 7 + k);
            size_t n = encode(&ev, prev, buf, hash);

            /* The documented layout of the tail. */
            cr_assert_eq(buf[0], 0x87);
            cr_assert_eq(memcmp(buf + n - 39, "\xa4hash\xc4\x20", 7), 0);
            cr_assert_eq(memcmp(buf + n - 78, "\xa4prev\xc4\x20", 7), 0);
            cr_assert_eq(memcmp(buf + n - 71, prev, 32), 0);
            cr_assert_eq(memcmp(buf + n - 32, hash, 32), 0);

            /* hash = SHA-256(prev || 0x86 || bytes[1 .. n-39)) */
            uint8_t input[BUDGET_HASH_BYTES + EVENT_BYTES_MAX], want[BUDGET_HASH_BYTES];
            memcpy(input, prev, 32);
            input[32] = 0x86;
            memcpy(input + 33, buf + 1, n - 39 - 1);
            crypto_hash_sha256(want, input, 32 + (n - 39));
            cr_assert_eq(memcmp(want, hash, 32), 0, "hash of %s", type_name(ev.type));

            const uint8_t *p = NULL, *h = NULL;
            cr_assert_eq(event_link(buf, n, &p, &h), 0);
            cr_assert_eq(p, buf + n - 71);
            cr_assert_eq(h, buf + n - 32);
            const char *why = "unset";
            cr_assert_eq(event_check_link(buf, n, prev, &why), 0);
            cr_assert_str_eq(why, "");
            uint8_t other[BUDGET_HASH_BYTES];
            memcpy(other, prev, 32);
            other[31] ^= 1;
            cr_assert_eq(event_check_link(buf, n, other, &why), BUDGET_EINTERNAL);
            cr_assert_str_eq(why, "prev");
        }
    }
}

Test(event, every_single_byte_change_is_caught)
{
    static const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 300);
        uint8_t prev[BUDGET_HASH_BYTES], buf[EVENT_BYTES_MAX], bad[EVENT_BYTES_MAX];
        memset(prev, 0x3c, sizeof prev);
        size_t n = encode(&ev, prev, buf, NULL);
        size_t decode_failures = 0, total = 0;
        for (size_t at = 0; at < n; at++) {
            for (size_t m = 0; m < sizeof masks; m++) {
                memcpy(bad, buf, n);
                bad[at] ^= masks[m];
                ledger_event got;
                bool decoded = event_decode(bad, n, &got) == 0;
                const char *why = NULL;
                bool linked = event_check_link(bad, n, prev, &why) == 0;
                cr_assert(!decoded || !linked, "%s: byte %zu ^ %02x went unnoticed",
                          type_name(ev.type), at, masks[m]);
                /* Every byte is under the hash, the prev comparison or the fixed layout. */
                cr_assert(!linked, "%s: byte %zu ^ %02x passed the link check", type_name(ev.type),
                          at, masks[m]);
                decode_failures += !decoded;
                total++;
            }
        }
        /* Structure bytes are refused by decode on its own. */
        cr_assert_gt(decode_failures, total / 4);
    }
}

Test(event, a_chain_of_1000_events_checks_link_by_link)
{
    enum { N = 1000 };
    static uint8_t bytes[N][EVENT_BYTES_MAX];
    static size_t sizes[N];
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    for (int i = 0; i < N; i++) {
        ledger_event ev = typical_event(all_types[i % TYPES], (uint64_t)i + 1);
        uint8_t hash[BUDGET_HASH_BYTES];
        sizes[i] = encode(&ev, prev, bytes[i], hash);
        memcpy(prev, hash, sizeof prev);
    }

    /* Walks the chain as an auditor does: the index of the first bad link, or N. */
#define FIRST_BAD(result)                                                                          \
    do {                                                                                           \
        uint8_t p_[BUDGET_HASH_BYTES] = {0};                                                       \
        (result) = N;                                                                              \
        for (int i_ = 0; i_ < N; i_++) {                                                           \
            uint64_t seq_;                                                                         \
            ledger_event ev_;                                                                      \
            if (event_check_link(bytes[i_], sizes[i_], p_, NULL) != 0 ||                           \
                event_seq(bytes[i_], sizes[i_], &seq_) != 0 || seq_ != (uint64_t)i_ + 1 ||         \
                event_decode(bytes[i_], sizes[i_], &ev_) != 0) {                                   \
                (result) = i_;                                                                     \
                break;                                                                             \
            }                                                                                      \
            const uint8_t *h_;                                                                     \
            cr_assert_eq(event_link(bytes[i_], sizes[i_], NULL, &h_), 0);                          \
            memcpy(p_, h_, BUDGET_HASH_BYTES);                                                     \
        }                                                                                          \
    } while (0)

    int bad;
    FIRST_BAD(bad);
    cr_assert_eq(bad, N, "an untouched chain fails at %d", bad);

    const int victims[] = {0, 1, 2, 499, 998, 999};
    for (size_t v = 0; v < sizeof victims / sizeof victims[0]; v++) {
        int k = victims[v];
        /* A value byte (inside the data map), the seq, a prev byte and a hash byte. */
        size_t positions[] = {sizes[k] / 2, 5, sizes[k] - 40, sizes[k] - 1};
        for (size_t q = 0; q < 4; q++) {
            size_t at = positions[q];
            bytes[k][at] ^= 0x01;
            FIRST_BAD(bad);
            cr_assert_eq(bad, k, "byte %zu of event %d changed, first bad: %d", at, k, bad);
            bytes[k][at] ^= 0x01;
        }
    }
    FIRST_BAD(bad);
    cr_assert_eq(bad, N);
#undef FIRST_BAD
}

/* ---- msgpack-c reads what we write
 * ---------------------------------------------------------------------- */

static bool str_is(msgpack_object o, const char *s)
{
    return o.type == MSGPACK_OBJECT_STR && o.via.str.size == strlen(s) &&
           memcmp(o.via.str.ptr, s, o.via.str.size) == 0;
}

static int64_t int_of(msgpack_object o)
{
    cr_assert(o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
              o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o.via.u64 : o.via.i64;
}

/* "YYYY-MM-DD" of a day, or "" for none. */
static const char *day_text(int32_t day)
{
    static char text[32];
    if (day == 0)
        return "";
    snprintf(text, sizeof text, "%04d-%02d-%02d", (int)(day / 10000), (int)(day / 100 % 100),
             (int)(day % 100));
    return text;
}

/* The str a decision key of `ev` holds on the wire (the date into `day`), or NULL. */
static const char *decision_value(const ledger_event *ev, const char *key,
                                  char day[BUDGET_DATE_BYTES + 1])
{
    if (strcmp(key, "decision_body") == 0)
        return ev->decision_body;
    if (strcmp(key, "decision_paragraph") == 0)
        return ev->decision_paragraph;
    if (strcmp(key, "decision_dnr") == 0)
        return ev->decision_dnr;
    if (strcmp(key, "decision_date") == 0) {
        unsigned d = (unsigned)ev->decision_date % 100000000u;
        char wide[32];
        snprintf(wide, sizeof wide, "%04u-%02u-%02u", d / 10000, d / 100 % 100, d % 100);
        cr_assert_eq(strlen(wide), BUDGET_DATE_BYTES);
        memcpy(day, wide, BUDGET_DATE_BYTES + 1);
        return day;
    }
    return NULL;
}

/* The value a data key of `ev` must hold, as msgpack-c sees it. */
static void expect_data_value(const ledger_event *ev, const char *key, msgpack_object v)
{
    const char *s = NULL;
    if (strcmp(key, "id") == 0)
        s = ev->id;
    else if (strcmp(key, "frame") == 0)
        s = ev->frame;
    else if (strcmp(key, "allocation") == 0)
        s = ev->allocation;
    else if (strcmp(key, "target") == 0 || strcmp(key, "avrop") == 0)
        s = ev->target;
    else if (strcmp(key, "unit") == 0)
        s = ev->unit;
    else if (strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 ||
             strcmp(key, "purpose") == 0 || strcmp(key, "name") == 0)
        s = ev->title;
    else if (strcmp(key, "kind") == 0)
        s = ev->unit_kind;
    else if (strcmp(key, "parent") == 0)
        s = ev->parent;
    else if (strcmp(key, "reference") == 0)
        s = ev->reference;
    else if (strcmp(key, "note") == 0 || strcmp(key, "source") == 0)
        s = ev->note;
    else if (strcmp(key, "continues") == 0)
        s = ev->continues;
    else if (strcmp(key, "target_kind") == 0)
        s = kind_word(ev->target_kind);
    char day[BUDGET_DATE_BYTES + 1];
    if (s == NULL)
        s = decision_value(ev, key, day);
    if (s == NULL && strcmp(key, "avrop_last_day") == 0)
        s = day_text(ev->avrop_last_day);
    if (s != NULL) {
        cr_assert(str_is(v, s), "data.%s", key);
        return;
    }
    if (strcmp(key, "year") == 0)
        cr_assert_eq(int_of(v), ev->year);
    else if (strcmp(key, "month") == 0)
        cr_assert_eq(int_of(v), ev->month);
    else if (strcmp(key, "amount") == 0 || strcmp(key, "delta") == 0 || strcmp(key, "unspent") == 0)
        cr_assert_eq(int_of(v), ev->amount, "data.%s", key);
    else
        cr_assert_fail("unexpected key %s", key);
}

static void cross_check(const ledger_event *ev, const uint8_t *prev)
{
    uint8_t buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
    size_t n = encode(ev, prev, buf, hash);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(off, n, "bytes after the map");
    msgpack_object root = u.data;
    cr_assert_eq(root.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(root.via.map.size, 7);
    const char *keys[] = {"seq", "ts", "actor", "type", "data", "prev", "hash"};
    msgpack_object_kv *kv = root.via.map.ptr;
    for (int i = 0; i < 7; i++)
        cr_assert(str_is(kv[i].key, keys[i]), "key %d is not %s", i, keys[i]);
    cr_assert_eq(kv[0].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    cr_assert_eq(kv[0].val.via.u64, ev->seq);
    cr_assert_eq(kv[1].val.via.u64, ev->ts_ms);
    msgpack_object actor = kv[2].val;
    cr_assert_eq(actor.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(actor.via.map.size, 2);
    cr_assert(str_is(actor.via.map.ptr[0].key, "uid"));
    cr_assert_eq(actor.via.map.ptr[0].val.via.u64, ev->actor.uid);
    cr_assert(str_is(actor.via.map.ptr[1].key, "name"));
    cr_assert(str_is(actor.via.map.ptr[1].val, ev->actor.name));
    cr_assert(str_is(kv[3].val, type_name(ev->type)));
    msgpack_object data = kv[4].val;
    cr_assert_eq(data.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(data.via.map.size, data_count(ev));
    for (size_t i = 0; i < data_count(ev); i++) {
        const char *key = data_keys[ev->type][i];
        cr_assert(str_is(data.via.map.ptr[i].key, key), "%s: data key %zu is not %s",
                  type_name(ev->type), i, key);
        expect_data_value(ev, key, data.via.map.ptr[i].val);
    }
    cr_assert_eq(kv[5].val.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(kv[5].val.via.bin.size, 32);
    cr_assert_eq(memcmp(kv[5].val.via.bin.ptr, prev, 32), 0);
    cr_assert_eq(kv[6].val.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(kv[6].val.via.bin.size, 32);
    cr_assert_eq(memcmp(kv[6].val.via.bin.ptr, hash, 32), 0);
    msgpack_unpacked_destroy(&u);
}

Test(event, msgpack_c_reads_the_documented_keys_in_order)
{
    uint8_t prev[BUDGET_HASH_BYTES];
    memset(prev, 0x11, sizeof prev);
    for (int k = 0; k < TYPES; k++) {
        ledger_event a = typical_event(all_types[k], 7);
        ledger_event b = max_event(all_types[k]);
        cross_check(&a, prev);
        cross_check(&b, zero_prev);
    }
}

/*
 * Packs an event with msgpack-c, entry by entry, with its hash: the independent way to the
 * same bytes. `mutate` names one departure from the canonical event, or NULL.
 */
typedef struct {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
} packer;

static void pack_str(packer *p, const char *s)
{
    msgpack_pack_str_with_body(&p->pk, s, strlen(s));
}

static bool is(const char *mutate, const char *name)
{
    return mutate != NULL && strcmp(mutate, name) == 0;
}

static void pack_data_value(packer *p, const ledger_event *ev, const char *key, const char *mutate)
{
    if (strcmp(key, "year") == 0) {
        if (is(mutate, "year-nil"))
            msgpack_pack_nil(&p->pk);
        else if (is(mutate, "year-int16"))
            msgpack_pack_fix_int16(&p->pk, (int16_t)ev->year);
        else
            msgpack_pack_int64(&p->pk, ev->year);
        return;
    }
    if (strcmp(key, "month") == 0) {
        msgpack_pack_int64(&p->pk, ev->month);
        return;
    }
    if (strcmp(key, "amount") == 0 || strcmp(key, "delta") == 0 || strcmp(key, "unspent") == 0) {
        if (is(mutate, "amount-int64"))
            msgpack_pack_fix_int64(&p->pk, ev->amount);
        else if (is(mutate, "amount-int16"))
            msgpack_pack_fix_int16(&p->pk, (int16_t)ev->amount);
        else if (is(mutate, "amount-str"))
            pack_str(p, "100");
        else
            msgpack_pack_int64(&p->pk, ev->amount);
        return;
    }
    const char *s = NULL;
    if (strcmp(key, "id") == 0)
        s = ev->id;
    else if (strcmp(key, "frame") == 0)
        s = ev->frame;
    else if (strcmp(key, "allocation") == 0)
        s = ev->allocation;
    else if (strcmp(key, "target") == 0 || strcmp(key, "avrop") == 0)
        s = ev->target;
    else if (strcmp(key, "unit") == 0)
        s = ev->unit;
    else if (strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 ||
             strcmp(key, "purpose") == 0 || strcmp(key, "name") == 0)
        s = ev->title;
    else if (strcmp(key, "kind") == 0)
        s = ev->unit_kind;
    else if (strcmp(key, "parent") == 0)
        s = ev->parent;
    else if (strcmp(key, "reference") == 0)
        s = ev->reference;
    else if (strcmp(key, "note") == 0 || strcmp(key, "source") == 0)
        s = ev->note;
    else if (strcmp(key, "continues") == 0)
        s = ev->continues;
    else if (strcmp(key, "target_kind") == 0)
        s = kind_word(ev->target_kind);
    char day[BUDGET_DATE_BYTES + 1];
    if (s == NULL)
        s = decision_value(ev, key, day);
    if (s == NULL && strcmp(key, "avrop_last_day") == 0)
        s = day_text(ev->avrop_last_day);
    cr_assert_not_null(s);
    if (strcmp(key, "id") == 0 && is(mutate, "id-str8")) {
        uint8_t head[2] = {0xd9, (uint8_t)strlen(s)};
        msgpack_sbuffer_write(&p->sbuf, (const char *)head, 2);
        msgpack_sbuffer_write(&p->sbuf, s, strlen(s));
        return;
    }
    if (strcmp(key, "id") == 0 && is(mutate, "id-as-bin")) {
        msgpack_pack_bin_with_body(&p->pk, s, strlen(s));
        return;
    }
    if (strcmp(key, "id") == 0 && is(mutate, "id-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    bool is_title =
        strcmp(key, "title") == 0 || strcmp(key, "reason") == 0 || strcmp(key, "purpose") == 0;
    if (is_title && is(mutate, "title-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    if (strcmp(key, "note") == 0 && is(mutate, "note-nul")) {
        msgpack_pack_str_with_body(&p->pk, "a\0b", 3);
        return;
    }
    pack_str(p, s);
}

/* The key "data-missing" leaves out: the last, or the one before it when the last was added
 * to the type later (without it the map is that of an older event, which decodes). */
static size_t missing_index(const ledger_event *ev)
{
    size_t count = data_count(ev);
    return event_types[ev->type].fields[count - 1].flags & FIELD_ADDED ? count - 2 : count - 1;
}

static size_t pack_event(const ledger_event *ev, const uint8_t *prev, const char *mutate,
                         uint8_t *out, size_t cap)
{
    packer p;
    msgpack_sbuffer_init(&p.sbuf);
    msgpack_packer_init(&p.pk, &p.sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&p.pk, 7);
    pack_str(&p, is(mutate, "key-seq") ? "Seq" : "seq");
    if (is(mutate, "seq-uint64"))
        msgpack_pack_fix_uint64(&p.pk, ev->seq);
    else
        msgpack_pack_uint64(&p.pk, ev->seq);
    pack_str(&p, "ts");
    if (is(mutate, "ts-str"))
        pack_str(&p, "1632816000000");
    else
        msgpack_pack_uint64(&p.pk, ev->ts_ms);
    pack_str(&p, "actor");
    msgpack_pack_map(&p.pk, is(mutate, "actor-3") ? 3 : 2);
    pack_str(&p, "uid");
    if (is(mutate, "uid-33bit"))
        msgpack_pack_uint64(&p.pk, UINT64_C(1) << 32);
    else if (is(mutate, "uid-nil"))
        msgpack_pack_nil(&p.pk);
    else
        msgpack_pack_uint32(&p.pk, ev->actor.uid);
    pack_str(&p, "name");
    pack_str(&p, ev->actor.name);
    if (is(mutate, "actor-3")) {
        pack_str(&p, "gid");
        msgpack_pack_uint32(&p.pk, 0);
    }
    pack_str(&p, "type");
    pack_str(&p, is(mutate, "type-unknown") ? "frame.grant" : type_name(ev->type));
    pack_str(&p, "data");
    size_t count = data_count(ev);
    size_t packed =
        count + (is(mutate, "data-extra") ? 1 : 0) - (is(mutate, "data-missing") ? 1 : 0);
    msgpack_pack_map(&p.pk, packed);
    for (size_t i = 0; i < count; i++) {
        size_t j = i;
        if (is(mutate, "data-swap") && i < 2)
            j = 1 - i;
        if (is(mutate, "data-missing") && i == missing_index(ev))
            continue;
        if (is(mutate, "key-renamed") && i == count - 1)
            pack_str(&p, "referens");
        else
            pack_str(&p, data_keys[ev->type][j]);
        pack_data_value(&p, ev, data_keys[ev->type][j], mutate);
    }
    if (is(mutate, "data-extra")) {
        pack_str(&p, "extra");
        pack_str(&p, "x");
    }
    pack_str(&p, "prev");
    msgpack_pack_bin_with_body(&p.pk, prev, is(mutate, "prev-31") ? 31 : 32);
    /* hash = SHA-256(prev || the map as 6 entries without hash) */
    uint8_t hash[BUDGET_HASH_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, prev, 32);
    uint8_t map6 = 0x86;
    crypto_hash_sha256_update(&st, &map6, 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)p.sbuf.data + 1, p.sbuf.size - 1);
    crypto_hash_sha256_final(&st, hash);
    pack_str(&p, "hash");
    msgpack_pack_bin_with_body(&p.pk, hash, 32);
    if (is(mutate, "trailing"))
        msgpack_pack_nil(&p.pk);
    cr_assert_leq(p.sbuf.size, cap);
    size_t n = p.sbuf.size;
    memcpy(out, p.sbuf.data, n);
    msgpack_sbuffer_destroy(&p.sbuf);
    return n;
}

Test(event, msgpack_c_packs_the_same_bytes)
{
    uint8_t prev[BUDGET_HASH_BYTES];
    memset(prev, 0x77, sizeof prev);
    for (int k = 0; k < TYPES; k++) {
        for (int variant = 0; variant < 2; variant++) {
            ledger_event ev =
                variant ? max_event(all_types[k]) : typical_event(all_types[k], 1234567);
            uint8_t ours[EVENT_BYTES_MAX], theirs[4096], hash[BUDGET_HASH_BYTES];
            size_t n = encode(&ev, prev, ours, hash);
            size_t m = pack_event(&ev, prev, NULL, theirs, sizeof theirs);
            cr_assert_eq(n, m, "%s: %zu bytes, msgpack-c %zu", type_name(ev.type), n, m);
            cr_assert_eq(memcmp(ours, theirs, n), 0, "%s differs from msgpack-c",
                         type_name(ev.type));
        }
    }
}

/* ---- strictness
 * ------------------------------------------------------------------------------------------- */

/* An event packed by msgpack-c with one mutation: its link is sound, decode must refuse it. */
static void expect_refused(ledger_event ev, const char *mutate)
{
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, mutate, buf, sizeof buf);
    ledger_event got;
    cr_assert_eq(event_decode(buf, n, &got), BUDGET_EINTERNAL, "decoded: %s (%s)",
                 mutate ? mutate : "as is", type_name(ev.type));
}

static void expect_accepted(ledger_event ev)
{
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, NULL, buf, sizeof buf);
    ledger_event got;
    cr_assert_eq(event_decode(buf, n, &got), 0, "refused %s", type_name(ev.type));
    expect_same_event(&ev, &got);
}

/* A frame granted before frames had a last day for avrop is the old data map, byte for byte:
 * the six keys it was written with, which decode with no last day and encode back the same. */
Test(event, an_event_without_its_added_field_keeps_the_data_map_it_was_written_with)
{
    ledger_type types[] = {LEDGER_FRAME_GRANTED, LEDGER_ALLOCATION_PROPOSED};
    for (size_t k = 0; k < 2; k++) {
        ledger_event ev = typical_event(types[k], 3);
        ev.avrop_last_day = 0;
        ev.continues[0] = '\0'; /* added after the last day: no event has it without one */
        uint8_t buf[EVENT_BYTES_MAX], again[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        const char *type = type_name(types[k]);
        const uint8_t *data = memmem(buf, n,
                                     "\xa4"
                                     "data",
                                     5);
        cr_assert_not_null(data);
        cr_assert_eq(data[5], 0x80 | data_count(&ev), "%s: a map of the old size", type);
        cr_assert_null(memmem(buf, n, "avrop_last_day", 14), "%s names no last day", type);
        ledger_event got;
        cr_assert_eq(event_decode(buf, n, &got), 0);
        cr_assert_eq(got.avrop_last_day, 0);
        cr_assert_eq(encode(&got, zero_prev, again, NULL), n);
        cr_assert_eq(memcmp(buf, again, n), 0);
        /* With a last day, the whole map. */
        ev.avrop_last_day = 20211231;
        n = encode(&ev, zero_prev, buf, NULL);
        data = memmem(buf, n,
                      "\xa4"
                      "data",
                      5);
        cr_assert_eq(data[5], 0x80 | data_count(&ev), "%s: the map with the last day", type);
    }
}

Test(event, decode_refuses_other_shapes)
{
    const char *mutations[] = {"key-seq",      "seq-uint64", "actor-3",      "uid-33bit",
                               "type-unknown", "data-extra", "data-missing", "data-swap",
                               "prev-31",      "trailing",   "year-int16",   "amount-int64",
                               "id-str8",      "id-as-bin",  "id-nul",       "year-nil",
                               "amount-str",   "ts-str",     "uid-nil",      "key-renamed"};
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 9);
        expect_accepted(ev);
        for (size_t i = 0; i < sizeof mutations / sizeof mutations[0]; i++)
            if (!is_unit_type(all_types[k]) || (strncmp(mutations[i], "year-", 5) != 0 &&
                                                strncmp(mutations[i], "amount-", 7) != 0))
                expect_refused(ev, mutations[i]);
    }
    expect_refused(typical_event(LEDGER_AVROP_REQUESTED, 9), "note-nul");
    expect_refused(typical_event(LEDGER_FRAME_GRANTED, 9), "title-nul");
    expect_refused(typical_event(LEDGER_FRAME_ADJUSTED, 9), "title-nul");
    expect_refused(typical_event(LEDGER_ALLOCATION_PROPOSED, 9), "title-nul");
    /* A negative delta in a longer form than it needs. */
    ledger_event small = typical_event(LEDGER_FRAME_ADJUSTED, 9);
    small.amount = -5;
    expect_accepted(small);
    expect_refused(small, "amount-int16");
    small.amount = -100;
    expect_refused(small, "amount-int16");
    small.amount = -1000;
    expect_accepted(small);
    small.amount = 200; /* a positive int16 is the uint16's longer twin */
    expect_refused(small, "amount-int16");
    expect_refused(typical_event(LEDGER_REQUEST_WITHDRAWN, 9), "note-nul");
}

Test(event, decode_refuses_values_out_of_their_limits)
{
    ledger_event ev;
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    ev.year = 1899;
    expect_refused(ev, NULL);
    ev.year = 10000;
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    ev.amount = 0;
    expect_refused(ev, NULL);
    ev.amount = -5;
    expect_refused(ev, NULL);
    ev.amount = MAX + 1;
    expect_refused(ev, NULL);
    ev.amount = MAX;
    expect_accepted(ev);
    ev = typical_event(LEDGER_FRAME_ADJUSTED, 3);
    ev.amount = 0;
    expect_refused(ev, NULL);
    ev.amount = -MAX - 1;
    expect_refused(ev, NULL);
    ev.amount = -MAX;
    expect_accepted(ev);
    ev = typical_event(LEDGER_DECISION_APPROVED, 3);
    ev.amount = -1;
    expect_refused(ev, NULL);

    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    PUT(ev.id, "a b");
    expect_refused(ev, NULL);
    PUT(ev.id, "");
    expect_refused(ev, NULL);
    fill(ev.id, 64, 'i');
    expect_accepted(ev);
    ev = typical_event(LEDGER_FRAME_GRANTED, 3);
    PUT(ev.unit, "SÖN");
    expect_refused(ev, NULL);
    fill(ev.unit, 32, 'u');
    expect_accepted(ev);
    ev.title[0] = '\0';
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_DECISION_REJECTED, 3);
    PUT(ev.frame, "f/1");
    expect_refused(ev, NULL);
    ev = typical_event(LEDGER_AVROP_REQUESTED, 3);
    PUT(ev.allocation, "a:1");
    expect_accepted(ev);
    PUT(ev.allocation, "a;1");
    expect_refused(ev, NULL);
}

/* Packs an event whose string field is longer than ledger_event can hold. */
static void expect_refused_long(ledger_type type, const char *key, size_t len)
{
    ledger_event ev = typical_event(type, 5);
    uint8_t buf[4096];
    size_t n = pack_event(&ev, zero_prev, NULL, buf, sizeof buf);
    /* Re-pack by hand with the long value in place of `key`'s. */
    packer p;
    msgpack_sbuffer_init(&p.sbuf);
    msgpack_packer_init(&p.pk, &p.sbuf, msgpack_sbuffer_write);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    char *long_value = malloc(len);
    memset(long_value, 'x', len);
    msgpack_object root = u.data;
    msgpack_pack_map(&p.pk, 7);
    for (uint32_t i = 0; i < 7; i++) {
        msgpack_object_kv *kv = &root.via.map.ptr[i];
        msgpack_pack_object(&p.pk, kv->key);
        if (str_is(kv->key, "data")) {
            msgpack_pack_map(&p.pk, kv->val.via.map.size);
            for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
                msgpack_object_kv *d = &kv->val.via.map.ptr[j];
                msgpack_pack_object(&p.pk, d->key);
                if (str_is(d->key, key))
                    msgpack_pack_str_with_body(&p.pk, long_value, len);
                else
                    msgpack_pack_object(&p.pk, d->val);
            }
        } else if (str_is(kv->key, "actor") && strcmp(key, "name") == 0) {
            msgpack_pack_map(&p.pk, 2);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[0].key);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[0].val);
            msgpack_pack_object(&p.pk, kv->val.via.map.ptr[1].key);
            msgpack_pack_str_with_body(&p.pk, long_value, len);
        } else {
            msgpack_pack_object(&p.pk, kv->val);
        }
    }
    ledger_event got;
    int rc = event_decode((const uint8_t *)p.sbuf.data, p.sbuf.size, &got);
    cr_assert_eq(rc, BUDGET_EINTERNAL, "%s of %zu bytes decoded", key, len);
    free(long_value);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&p.sbuf);
}

Test(event, decode_refuses_strings_over_their_limits)
{
    expect_refused_long(LEDGER_FRAME_GRANTED, "id", 65);
    expect_refused_long(LEDGER_FRAME_GRANTED, "unit", 33);
    expect_refused_long(LEDGER_FRAME_GRANTED, "title", 257);
    expect_refused_long(LEDGER_FRAME_GRANTED, "reference", 257);
    expect_refused_long(LEDGER_FRAME_GRANTED, "reference", 70000);
    expect_refused_long(LEDGER_FRAME_ADJUSTED, "reason", 257);
    expect_refused_long(LEDGER_ALLOCATION_PROPOSED, "purpose", 257);
    expect_refused_long(LEDGER_AVROP_REQUESTED, "allocation", 65);
    expect_refused_long(LEDGER_AVROP_REQUESTED, "note", 257);
    expect_refused_long(LEDGER_DECISION_APPROVED, "target", 65);
    expect_refused_long(LEDGER_DECISION_APPROVED, "frame", 65);
    expect_refused_long(LEDGER_REQUEST_WITHDRAWN, "name", 65);
}

Test(event, decode_refuses_every_truncation_and_extension)
{
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = typical_event(all_types[k], 77);
        uint8_t buf[EVENT_BYTES_MAX + 1];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        ledger_event got;
        for (size_t len = 0; len < n; len++)
            cr_assert_eq(event_decode(buf, len, &got), BUDGET_EINTERNAL, "%zu of %zu bytes", len,
                         n);
        buf[n] = 0xc0;
        cr_assert_eq(event_decode(buf, n + 1, &got), BUDGET_EINTERNAL);
        cr_assert_eq(event_decode(buf, n, &got), 0);
        cr_assert_eq(event_link(buf, n - 1, NULL, NULL), BUDGET_EINTERNAL);
        const char *why = NULL;
        cr_assert_eq(event_check_link(buf, 10, zero_prev, &why), BUDGET_EINTERNAL);
        cr_assert_str_eq(why, "malformed");
    }
    uint64_t seq;
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq", 5, &seq), BUDGET_EINTERNAL);
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq\x05", 6, &seq), 0);
    cr_assert_eq(seq, 5);
    cr_assert_eq(event_seq((const uint8_t *)"\x86\xa3seq\x05", 6, &seq), BUDGET_EINTERNAL);
    cr_assert_eq(event_seq((const uint8_t *)"\x87\xa3seq\xcc\x05", 7, &seq), BUDGET_EINTERNAL);
}

/* ---- encoding limits
 * ------------------------------------------------------------------------------------------ */

Test(event, encode_needs_room_and_a_well_formed_event)
{
    ledger_event ev = typical_event(LEDGER_DECISION_APPROVED, 12);
    uint8_t buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
    size_t n = encode(&ev, zero_prev, buf, hash);
    uint8_t exact[EVENT_BYTES_MAX];
    cr_assert_eq(event_encode(&ev, zero_prev, exact, n, NULL), (int)n);
    cr_assert_eq(memcmp(exact, buf, n), 0);
    cr_assert_eq(event_encode(&ev, zero_prev, exact, n - 1, NULL), BUDGET_EINTERNAL);
    cr_assert_eq(event_encode(&ev, zero_prev, exact, 0, NULL), BUDGET_EINTERNAL);

    ledger_event bad = ev;
    bad.type = 0;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad.type = 8;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    bad.target_kind = LEDGER_KIND_FRAME;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    PUT(bad.id, "a b");
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    memset(bad.note, 'x', sizeof bad.note); /* no NUL */
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    bad.amount = 0;
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    bad = ev;
    memset(bad.actor.name, 'x', sizeof bad.actor.name);
    cr_assert_eq(event_encode(&bad, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);

    /* Fields a type does not have are not encoded. */
    ledger_event extra = ev;
    PUT(extra.allocation, "ignored");
    PUT(extra.title, "ignored");
    uint8_t other[EVENT_BYTES_MAX];
    cr_assert_eq(event_encode(&extra, zero_prev, other, sizeof other, NULL), (int)n);
    cr_assert_eq(memcmp(other, exact, n), 0);
}

Test(event, the_largest_event_fits)
{
    size_t largest = 0;
    for (int k = 0; k < TYPES; k++) {
        ledger_event ev = max_event(all_types[k]);
        /* All text at its limit in one-byte characters too. */
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        if (n > largest)
            largest = n;
    }
    cr_assert_leq(largest, EVENT_BYTES_MAX);
    cr_assert_gt(largest, 900); /* the maximum event really is at its limits */
}

/* ---- the hash against the reference
 * --------------------------------------------------------------------- */

/* budgetd's SHA-256 (event_sha256) equals libsodium's on every length from 0 to 4200 bytes, at
 * several alignments, whole and in pieces: every padding case (a length of 55, 56 or 63 mod 64
 * among them) and every way a message can straddle a block. */
Test(event, sha256_equals_libsodium_for_every_length_and_alignment)
{
    enum { LONGEST = 4200 };
    static const size_t aligns[] = {0, 1, 3, 4, 7, 8, 15, 33};
    static uint8_t data[LONGEST + 64];
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < sizeof data; i++) {
        x = x * 1664525u + 1013904223u;
        data[i] = (uint8_t)(x >> 24);
    }
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        const uint8_t *msg = data + aligns[a];
        for (size_t len = 0; len <= LONGEST; len++) {
            uint8_t want[BUDGET_HASH_BYTES], got[BUDGET_HASH_BYTES];
            crypto_hash_sha256(want, msg, len);
            event_span whole = {msg, len};
            event_sha256(&whole, 1, got);
            cr_assert_eq(memcmp(want, got, sizeof want), 0, "length %zu at offset %zu", len,
                         aligns[a]);
            /* In three pieces, as an event is hashed (prev, the map byte, the rest). */
            size_t cut1 = len < 32 ? len : 32, cut2 = len < 33 ? len : 33;
            if (a % 2 == 1) {
                cut1 = len / 3;
                cut2 = 2 * len / 3;
            }
            event_span parts[3] = {
                {msg, cut1}, {msg + cut1, cut2 - cut1}, {msg + cut2, len - cut2}};
            memset(got, 0, sizeof got);
            event_sha256(parts, 3, got);
            cr_assert_eq(memcmp(want, got, sizeof want), 0, "length %zu in pieces %zu/%zu/%zu", len,
                         cut1, cut2 - cut1, len - cut2);
            /* The fallback, the same way. */
            memset(got, 0, sizeof got);
            event_sha256_portable(parts, 3, got);
            cr_assert_eq(memcmp(want, got, sizeof want), 0,
                         "length %zu in pieces %zu/%zu/%zu (libsodium)", len, cut1, cut2 - cut1,
                         len - cut2);
        }
    }
}

/* The hash of events of every length from the smallest of a type to past 600 bytes (every
 * remainder mod 64 of the hashed length), stored and checked, equals libsodium's over
 * prev || 0x86 || the event up to prev. */
Test(event, event_hashes_of_every_size_equal_libsodium)
{
    uint8_t prev[BUDGET_HASH_BYTES];
    for (int i = 0; i < BUDGET_HASH_BYTES; i++)
        prev[i] = (uint8_t)(255 - i);
    bool seen[64] = {false};
    for (int k = 0; k < TYPES; k++) {
        for (size_t len = 0; len <= BUDGET_TEXT_BYTES_MAX; len++) {
            ledger_event ev = typical_event(all_types[k], 1000 + len);
            /* Every type has reference or note, 0..256 bytes. */
            if (all_types[k] == LEDGER_ALLOCATION_PROPOSED)
                fill(ev.title, len == 0 ? 1 : len, 'p');
            else if (all_types[k] == LEDGER_OUTCOME_RECORDED)
                fill(ev.note, len == 0 ? 1 : len, 's'); /* the source, 1..256 bytes */
            else if (all_types[k] == LEDGER_FRAME_GRANTED || all_types[k] == LEDGER_FRAME_ADJUSTED)
                fill(ev.reference, len, 'r');
            else
                fill(ev.note, len, 'o');
            uint8_t buf[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
            size_t n = encode(&ev, prev, buf, hash);
            size_t hashed = BUDGET_HASH_BYTES + n - EVENT_HASH_TAIL_BYTES;
            uint8_t input[BUDGET_HASH_BYTES + EVENT_BYTES_MAX], want[BUDGET_HASH_BYTES];
            memcpy(input, prev, BUDGET_HASH_BYTES);
            input[BUDGET_HASH_BYTES] = 0x86;
            memcpy(input + BUDGET_HASH_BYTES + 1, buf + 1, n - EVENT_HASH_TAIL_BYTES - 1);
            crypto_hash_sha256(want, input, hashed);
            cr_assert_eq(memcmp(want, hash, sizeof want), 0, "%s of %zu bytes (%zu hashed)",
                         type_name(ev.type), n, hashed);
            cr_assert_eq(event_check_link(buf, n, prev, NULL), 0);
            seen[hashed % 64] = true;
        }
    }
    for (int r = 0; r < 64; r++)
        cr_assert(seen[r], "no event hashed a length of %d mod 64", r);
}

/* ---- every canonical-encoding boundary
 * ------------------------------------------------------------------ */

typedef __int128 wide;

#define WIDE_U64_MAX ((wide)UINT64_MAX)
#define WIDE_2_32 ((wide)1 << 32)

/* One msgpack encoding of a value: its bytes and the name of its form. */
typedef struct {
    uint8_t b[16];
    size_t n;
    const char *form;
} mp_form;

static void put_be(uint8_t *p, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static size_t add_form(mp_form *f, size_t count, const char *form, uint8_t head, uint64_t v,
                       size_t bytes)
{
    f[count].form = form;
    f[count].b[0] = head;
    put_be(f[count].b + 1, v, bytes);
    f[count].n = 1 + bytes;
    return count + 1;
}

/* Every msgpack encoding of the integer `v`, in the order the canonical rule prefers them: for
 * v >= 0 the first is its shortest uint, for v < 0 its shortest int. */
static size_t int_forms(wide v, mp_form *f)
{
    size_t c = 0;
    if (v >= 0) {
        if (v <= 127)
            c = add_form(f, c, "positive fixint", (uint8_t)v, 0, 0);
        if (v <= 0xff)
            c = add_form(f, c, "uint 8", 0xcc, (uint64_t)v, 1);
        if (v <= 0xffff)
            c = add_form(f, c, "uint 16", 0xcd, (uint64_t)v, 2);
        if (v <= 0xffffffff)
            c = add_form(f, c, "uint 32", 0xce, (uint64_t)v, 4);
        if (v <= WIDE_U64_MAX)
            c = add_form(f, c, "uint 64", 0xcf, (uint64_t)v, 8);
    } else if (v >= -32) {
        c = add_form(f, c, "negative fixint", (uint8_t)(int8_t)v, 0, 0);
    }
    if (v >= INT8_MIN && v <= INT8_MAX)
        c = add_form(f, c, "int 8", 0xd0, (uint64_t)(int64_t)v, 1);
    if (v >= INT16_MIN && v <= INT16_MAX)
        c = add_form(f, c, "int 16", 0xd1, (uint64_t)(int64_t)v, 2);
    if (v >= INT32_MIN && v <= INT32_MAX)
        c = add_form(f, c, "int 32", 0xd2, (uint64_t)(int64_t)v, 4);
    if (v >= INT64_MIN && v <= INT64_MAX)
        c = add_form(f, c, "int 64", 0xd3, (uint64_t)(int64_t)v, 8);
    return c;
}

static size_t load_be16_test(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

/* Every header of a str of `len` bytes; the first is the shortest. */
static size_t str_forms(uint64_t len, mp_form *f)
{
    size_t c = 0;
    if (len <= 31)
        c = add_form(f, c, "fixstr", (uint8_t)(0xa0 | len), 0, 0);
    if (len <= 0xff)
        c = add_form(f, c, "str 8", 0xd9, len, 1);
    if (len <= 0xffff)
        c = add_form(f, c, "str 16", 0xda, len, 2);
    return add_form(f, c, "str 32", 0xdb, len, 4);
}

/* Every header of a map of `count` entries; the first is the shortest. */
static size_t map_forms(uint64_t count, mp_form *f)
{
    size_t c = 0;
    if (count <= 15)
        c = add_form(f, c, "fixmap", (uint8_t)(0x80 | count), 0, 0);
    if (count <= 0xffff)
        c = add_form(f, c, "map 16", 0xde, count, 2);
    return add_form(f, c, "map 32", 0xdf, count, 4);
}

/* Where the value after the key `key` (its encoded bytes, fixstr header included) starts in
 * an encoded event; the key must occur exactly once. */
static size_t value_at(const uint8_t *buf, size_t n, const char *key)
{
    size_t klen = strlen(key);
    const uint8_t *at = memmem(buf, n, key, klen);
    cr_assert_not_null(at, "no key %s", key + 1);
    cr_assert_null(memmem(at + 1, n - (size_t)(at + 1 - buf), key, klen), "key %s twice", key + 1);
    return (size_t)(at - buf) + klen;
}

/* The size of the msgpack int or str header at `p` (the forms above). */
static size_t head_size(const uint8_t *p)
{
    switch (p[0]) {
    case 0xcc:
    case 0xd0:
    case 0xd9:
        return 2;
    case 0xcd:
    case 0xd1:
    case 0xda:
    case 0xde:
        return 3;
    case 0xce:
    case 0xd2:
    case 0xdb:
    case 0xdf:
        return 5;
    case 0xcf:
    case 0xd3:
        return 9;
    default:
        return 1;
    }
}

/* `buf` with the `old` bytes at `at` replaced by `repl` (`rn` bytes) into `out`. */
static size_t splice(const uint8_t *buf, size_t n, size_t at, size_t old, const void *repl,
                     size_t rn, uint8_t *out, size_t cap)
{
    cr_assert_leq(n - old + rn, cap);
    memcpy(out, buf, at);
    memcpy(out + at, repl, rn);
    memcpy(out + at + rn, buf + at + old, n - at - old);
    return n - old + rn;
}

/* An integer field: its key as encoded, the types that have it, its range. */
typedef struct {
    const char *key;
    bool all_types; /* else only `only` */
    ledger_type only;
    bool not_frame_adjusted;
    wide min, max;
    bool nonzero;
} int_field;

static void set_int(ledger_event *ev, const char *key, wide v)
{
    if (strcmp(key, "\xa3seq") == 0)
        ev->seq = (uint64_t)v;
    else if (strcmp(key, "\xa2ts") == 0)
        ev->ts_ms = (uint64_t)v;
    else if (strcmp(key, "\xa3uid") == 0)
        ev->actor.uid = (uint32_t)v;
    else if (strcmp(key, "\xa4year") == 0)
        ev->year = (int32_t)v;
    else if (strcmp(key, "\xa5month") == 0)
        ev->month = (int32_t)v;
    else
        ev->amount = (int64_t)v;
}

static wide get_int(const ledger_event *ev, const char *key)
{
    if (strcmp(key, "\xa3seq") == 0)
        return ev->seq;
    if (strcmp(key, "\xa2ts") == 0)
        return ev->ts_ms;
    if (strcmp(key, "\xa3uid") == 0)
        return ev->actor.uid;
    if (strcmp(key, "\xa4year") == 0)
        return ev->year;
    if (strcmp(key, "\xa5month") == 0)
        return ev->month;
    return ev->amount;
}

static bool field_in(const int_field *f, ledger_type t)
{
    bool envelope = strcmp(f->key, "\xa3seq") == 0 || strcmp(f->key, "\xa2ts") == 0 ||
                    strcmp(f->key, "\xa3uid") == 0;
    if (is_unit_type(t) && !envelope)
        return false;
    if (f->all_types)
        return true;
    if (f->not_frame_adjusted) /* amount, 1..10^15 but for outcome.recorded's */
        return t != LEDGER_FRAME_ADJUSTED && t != LEDGER_YEAR_CLOSED &&
               t != LEDGER_OUTCOME_RECORDED;
    return t == f->only;
}

Test(event, every_integer_field_decodes_only_its_shortest_form_at_every_width_boundary)
{
    const wide P15 = 1000000000000000;
    const int_field fields[] = {
        {"\xa3seq", true, 0, false, 0, WIDE_U64_MAX, false},
        {"\xa2ts", true, 0, false, 0, WIDE_U64_MAX, false},
        {"\xa3uid", true, 0, false, 0, UINT32_MAX, false},
        {"\xa4year", true, 0, false, BUDGET_YEAR_MIN, BUDGET_YEAR_MAX, false},
        {"\xa6"
         "amount",
         false, 0, true, 1, P15, false},
        {"\xa5"
         "delta",
         false, LEDGER_FRAME_ADJUSTED, false, -P15, P15, true},
        {"\xa7unspent", false, LEDGER_YEAR_CLOSED, false, 0, INT64_MAX, false},
        {"\xa6"
         "amount",
         false, LEDGER_OUTCOME_RECORDED, false, -P15, P15, false},
        {"\xa5month", false, LEDGER_OUTCOME_RECORDED, false, 1, 12, false},
    };
    /* Each side of every width boundary, the fields' own limits, and the extremes. */
    const wide values[] = {
        0,
        1,
        31,
        32,
        127,
        128,
        255,
        256,
        65535,
        65536,
        UINT32_MAX,
        WIDE_2_32,
        P15,
        P15 + 1,
        INT64_MAX,
        (wide)INT64_MAX + 1,
        WIDE_U64_MAX,
        -1,
        -31,
        -32,
        -33,
        -127,
        -128,
        -129,
        -32767,
        -32768,
        -32769,
        INT32_MIN,
        (wide)INT32_MIN - 1,
        -P15,
        -P15 - 1,
        INT64_MIN,
        1899,
        1900,
        9999,
        10000,
        UINT32_MAX - 1,
    };
    size_t accepted = 0, refused = 0;
    for (size_t fi = 0; fi < sizeof fields / sizeof fields[0]; fi++) {
        const int_field *f = &fields[fi];
        for (int k = 0; k < TYPES; k++) {
            if (!field_in(f, all_types[k]))
                continue;
            ledger_event base = typical_event(all_types[k], 5);
            uint8_t buf[EVENT_BYTES_MAX];
            size_t n = encode(&base, zero_prev, buf, NULL);
            size_t at = value_at(buf, n, f->key);
            size_t old = head_size(buf + at);
            for (size_t vi = 0; vi < sizeof values / sizeof values[0]; vi++) {
                wide v = values[vi];
                bool in_range = v >= f->min && v <= f->max && !(f->nonzero && v == 0);
                mp_form forms[10];
                size_t nf = int_forms(v, forms);
                cr_assert_gt(nf, 0);
                if (in_range) {
                    /* The encoder writes the shortest form. */
                    ledger_event ev = base;
                    set_int(&ev, f->key, v);
                    uint8_t mine[EVENT_BYTES_MAX];
                    size_t m = encode(&ev, zero_prev, mine, NULL);
                    cr_assert_eq(memcmp(mine + at, forms[0].b, forms[0].n), 0,
                                 "%s %s: a value is not written as %s", type_name(ev.type),
                                 f->key + 1, forms[0].form);
                    cr_assert_eq(m, n - old + forms[0].n);
                }
                for (size_t q = 0; q < nf; q++) {
                    uint8_t bad[EVENT_BYTES_MAX + 16];
                    size_t bn = splice(buf, n, at, old, forms[q].b, forms[q].n, bad, sizeof bad);
                    ledger_event got;
                    int rc = event_decode(bad, bn, &got);
                    uint64_t seq = 0;
                    int seq_rc = event_seq(bad, bn, &seq);
                    long long lo = (long long)(v >> 64 ? -1 : 0), vv = (long long)(uint64_t)v;
                    if (q == 0 && in_range) {
                        cr_assert_eq(rc, 0, "%s %s = %lld:%llu in its %s refused",
                                     type_name(all_types[k]), f->key + 1, lo,
                                     (unsigned long long)vv, forms[q].form);
                        cr_assert(get_int(&got, f->key) == v, "%s %s read back otherwise",
                                  type_name(all_types[k]), f->key + 1);
                        /* ... and encodes again to the same bytes (the hash aside). */
                        uint8_t again[EVENT_BYTES_MAX];
                        size_t an = encode(&got, zero_prev, again, NULL);
                        cr_assert_eq(an, bn);
                        cr_assert_eq(memcmp(again, bad, bn - BUDGET_HASH_BYTES), 0);
                        accepted++;
                    } else {
                        cr_assert_eq(rc, BUDGET_EINTERNAL,
                                     "%s %s = %lld:%llu as %s (%zu bytes) decoded; %s",
                                     type_name(all_types[k]), f->key + 1, lo,
                                     (unsigned long long)vv, forms[q].form, forms[q].n,
                                     in_range ? "a longer form than it needs" : "out of range");
                        refused++;
                    }
                    if (strcmp(f->key, "\xa3seq") == 0)
                        cr_assert_eq(seq_rc == 0, q == 0 && v <= WIDE_U64_MAX && v >= 0,
                                     "event_seq of seq %lld:%llu as %s", lo, (unsigned long long)vv,
                                     forms[q].form);
                }
            }
        }
    }
    cr_assert_gt(accepted, 100);
    cr_assert_gt(refused, 1000);
}

/* A str field: its key as encoded, the types that have it, its lengths, a valid character. */
typedef struct {
    const char *key;
    ledger_type type;
    size_t min, max;
    char c;
} str_field;

Test(event, every_string_and_map_decodes_only_its_shortest_header)
{
    const str_field fields[] = {
        {"\xa4name", LEDGER_FRAME_GRANTED, 0, BUDGET_NAME_BYTES_MAX, 'n'},
        {"\xa2id", LEDGER_FRAME_GRANTED, 1, BUDGET_ID_BYTES_MAX, 'i'},
        {"\xa4unit", LEDGER_FRAME_GRANTED, 1, BUDGET_UNIT_BYTES_MAX, 'U'},
        {"\xa5title", LEDGER_FRAME_GRANTED, 1, BUDGET_TEXT_BYTES_MAX, 't'},
        {"\xa9reference", LEDGER_FRAME_GRANTED, 0, BUDGET_TEXT_BYTES_MAX, 'r'},
        {"\xa5"
         "frame",
         LEDGER_FRAME_ADJUSTED, 1, BUDGET_ID_BYTES_MAX, 'F'},
        {"\xa6reason", LEDGER_FRAME_ADJUSTED, 1, BUDGET_TEXT_BYTES_MAX, 'w'},
        {"\xa7purpose", LEDGER_ALLOCATION_PROPOSED, 1, BUDGET_TEXT_BYTES_MAX, 'p'},
        {"\xaa"
         "allocation",
         LEDGER_AVROP_REQUESTED, 1, BUDGET_ID_BYTES_MAX, 'A'},
        {"\xa4note", LEDGER_AVROP_REQUESTED, 0, BUDGET_TEXT_BYTES_MAX, 'o'},
        {"\xa6target", LEDGER_DECISION_APPROVED, 1, BUDGET_ID_BYTES_MAX, 'T'},
        {"\xa9reference", LEDGER_DECISION_REJECTED, 0, BUDGET_TEXT_BYTES_MAX, 'r'},
        {"\xa4note", LEDGER_REQUEST_WITHDRAWN, 0, BUDGET_TEXT_BYTES_MAX, 'o'},
    };
    /* Each side of the fixstr, str 8 boundaries, and of every field's limits. (str 16 65535 /
     * 65536 are past every field's limit and the largest event: refused as too long.) */
    const size_t lens[] = {0, 1, 30, 31, 32, 33, 63, 64, 65, 254, 255, 256, 257};
    static char text[300];
    size_t accepted = 0, refused = 0;
    for (size_t fi = 0; fi < sizeof fields / sizeof fields[0]; fi++) {
        const str_field *f = &fields[fi];
        ledger_event base = typical_event(f->type, 5);
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&base, zero_prev, buf, NULL);
        size_t at = value_at(buf, n, f->key);
        size_t h = head_size(buf + at);
        size_t old_len = buf[at] == 0xd9   ? buf[at + 1]
                         : buf[at] == 0xda ? load_be16_test(buf + at + 1)
                                           : (size_t)(buf[at] & 0x1f);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            size_t len = lens[li];
            bool in_range = len >= f->min && len <= f->max;
            memset(text, f->c, len);
            mp_form forms[4];
            size_t nf = str_forms(len, forms);
            for (size_t q = 0; q < nf; q++) {
                uint8_t repl[300 + 8], bad[EVENT_BYTES_MAX + 300];
                memcpy(repl, forms[q].b, forms[q].n);
                memcpy(repl + forms[q].n, text, len);
                size_t bn =
                    splice(buf, n, at, h + old_len, repl, forms[q].n + len, bad, sizeof bad);
                ledger_event got;
                int rc = event_decode(bad, bn, &got);
                if (q == 0 && in_range) {
                    cr_assert_eq(rc, 0, "%s %s of %zu bytes as %s refused", type_name(f->type),
                                 f->key + 1, len, forms[q].form);
                    uint8_t again[EVENT_BYTES_MAX];
                    size_t an = encode(&got, zero_prev, again, NULL);
                    cr_assert_eq(an, bn);
                    cr_assert_eq(memcmp(again, bad, bn - BUDGET_HASH_BYTES), 0);
                    accepted++;
                } else {
                    cr_assert_eq(rc, BUDGET_EINTERNAL, "%s %s of %zu bytes as %s decoded; %s",
                                 type_name(f->type), f->key + 1, len, forms[q].form,
                                 in_range ? "a longer header than it needs" : "out of range");
                    refused++;
                }
            }
        }
    }

    /* The fixed strings (keys, type, target_kind) and the maps: only their shortest headers. */
    for (int k = 0; k < TYPES; k++) {
        ledger_event base = typical_event(all_types[k], 5);
        uint8_t buf[EVENT_BYTES_MAX];
        size_t n = encode(&base, zero_prev, buf, NULL);
        size_t maps[3] = {0,
                          value_at(buf, n,
                                   "\xa5"
                                   "actor"),
                          value_at(buf, n,
                                   "\xa4"
                                   "data")};
        for (size_t mi = 0; mi < 3; mi++) {
            uint8_t count = buf[maps[mi]] & 0x0f;
            cr_assert_eq(buf[maps[mi]] & 0xf0, 0x80);
            mp_form forms[3];
            size_t nf = map_forms(count, forms);
            /* One entry more or fewer in the shortest form, and the longer forms. */
            for (size_t q = 0; q < nf + 2; q++) {
                uint8_t other[1] = {(uint8_t)(0x80 | (q == nf ? count + 1 : count - 1))};
                const uint8_t *repl = q < nf ? forms[q].b : other;
                size_t rn = q < nf ? forms[q].n : 1;
                uint8_t bad[EVENT_BYTES_MAX + 8];
                size_t bn = splice(buf, n, maps[mi], 1, repl, rn, bad, sizeof bad);
                ledger_event got;
                cr_assert_eq(event_decode(bad, bn, &got), q == 0 ? 0 : BUDGET_EINTERNAL,
                             "%s: map %zu as %s", type_name(all_types[k]), mi,
                             q < nf ? forms[q].form : "another count");
                q == 0 ? accepted++ : refused++;
            }
        }
        /* 15 and 16 entries where the map has its own count: refused whatever the form. */
        for (uint64_t count = 15; count <= 16; count++) {
            mp_form forms[3];
            size_t nf = map_forms(count, forms);
            for (size_t q = 0; q < nf; q++) {
                uint8_t bad[EVENT_BYTES_MAX + 8];
                size_t bn = splice(buf, n, maps[2], 1, forms[q].b, forms[q].n, bad, sizeof bad);
                ledger_event got;
                cr_assert_eq(event_decode(bad, bn, &got), BUDGET_EINTERNAL);
                refused++;
            }
        }
        /* Every key and the fixed strings in a str 8 header, in place of their fixstr. */
        for (size_t at = 0; at < n - BUDGET_HASH_BYTES; at++) {
            size_t len = buf[at] & 0x1f;
            if ((buf[at] & 0xe0) != 0xa0 || len == 0 || at + 1 + len > n)
                continue;
            /* Only the keys and fixed values: the bytes that follow are lowercase letters,
             * dots or underscores. */
            bool keylike = true;
            for (size_t i = 0; i < len && keylike; i++) {
                uint8_t c = buf[at + 1 + i];
                keylike = (c >= 'a' && c <= 'z') || c == '.' || c == '_';
            }
            if (!keylike)
                continue;
            uint8_t repl[40], bad[EVENT_BYTES_MAX + 8];
            repl[0] = 0xd9;
            repl[1] = (uint8_t)len;
            memcpy(repl + 2, buf + at + 1, len);
            size_t bn = splice(buf, n, at, 1 + len, repl, 2 + len, bad, sizeof bad);
            ledger_event got;
            /* A str 8 of fewer than 32 bytes is a longer form than it needs. */
            cr_assert_eq(event_decode(bad, bn, &got), BUDGET_EINTERNAL,
                         "%s: the fixstr at byte %zu (\"%.*s\") as a str 8 decoded",
                         type_name(all_types[k]), at, (int)len, buf + at + 1);
            refused++;
        }
        /* prev and hash in a bin 16 header. */
        for (size_t tail = 1; tail <= 2; tail++) {
            size_t at = n - tail * EVENT_HASH_TAIL_BYTES + 5;
            cr_assert_eq(buf[at], 0xc4);
            const uint8_t bin16[3] = {0xc5, 0, BUDGET_HASH_BYTES};
            uint8_t bad[EVENT_BYTES_MAX + 8];
            size_t bn = splice(buf, n, at, 2, bin16, 3, bad, sizeof bad);
            ledger_event got;
            cr_assert_eq(event_decode(bad, bn, &got), BUDGET_EINTERNAL);
            refused++;
        }
    }
    cr_assert_gt(accepted, 50);
    cr_assert_gt(refused, 400);
}

/* ---- the type table
 * -------------------------------------------------------------------------------- */

Test(event, the_type_table_holds_every_documented_type_and_its_data_map)
{
    /* A type added to LEDGER_EVENT_TYPES needs its documented keys written out above. */
    cr_assert_eq(LEDGER_TYPE_COUNT, TYPES + 1, "the table has %d types, this suite knows %d",
                 (int)LEDGER_TYPE_COUNT, TYPES + 1);
    for (int k = 1; k <= LEDGER_TYPE_COUNT; k++) {
        ledger_type t = (ledger_type)k;
        const event_type_info *info = &event_types[t];
        cr_assert_str_eq(info->name, type_name(t));
        cr_assert_eq(info->name_len, strlen(type_name(t)));
        cr_assert_eq(info->field_count, key_count(t), "%s has %d fields", type_name(t),
                     info->field_count);
        for (size_t i = 0; i < key_count(t); i++) {
            cr_assert_str_eq(info->fields[i].key, data_keys[t][i], "%s field %zu", type_name(t), i);
            cr_assert_eq(info->fields[i].key_len, strlen(data_keys[t][i]));
        }
        /* What the id of an event names. */
        cr_assert_gt(info->creates, 0);
        cr_assert_lt((int)info->creates, (int)LEDGER_KIND_END);
    }
}

/* The contents of a file of the source tree into `buf`; its size. */
static size_t read_source_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, cap, f);
    cr_assert(feof(f), "%s is over %zu bytes", path, cap);
    fclose(f);
    return n;
}

/*
 * The events of the committed fuzz corpus were written by an earlier build's encoder from a
 * ledger's checked commands: each decodes, encodes to exactly the bytes on file, links to the
 * one before it, and (all but those naming a request the corpus does not hold) applies. The
 * first seven were written before units were registered: they apply to an empty ledger, which
 * takes KS and SON as defined under their codes. Two chains go on from the seventh: the
 * corrections (8, 9) and the register of units (8, 9, 10), then an outcome (11).
 */
static void corpus_chain(const char *const *files, const bool *applies, size_t count,
                         bool seen[LEDGER_TYPE_END])
{
    uint8_t prev[BUDGET_HASH_BYTES] = {0};
    ledger *l = ledger_new();
    cr_assert_not_null(l);
    for (size_t i = 0; i < count; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/fuzz_event/%s", BUDGET_SOURCE_DIR,
                 files[i]);
        uint8_t bytes[EVENT_BYTES_MAX + 1], again[EVENT_BYTES_MAX], hash[BUDGET_HASH_BYTES];
        size_t n = read_source_file(path, bytes, sizeof bytes);
        ledger_event ev;
        cr_assert_eq(event_decode(bytes, n, &ev), 0, "%s", files[i]);
        cr_assert_eq(event_check_link(bytes, n, prev, NULL), 0, "%s", files[i]);
        size_t m = encode(&ev, prev, again, hash);
        cr_assert_eq(m, n, "%s: %zu bytes, not %zu", files[i], m, n);
        cr_assert_eq(memcmp(again, bytes, n), 0, "%s encodes to other bytes", files[i]);
        if (applies[i])
            cr_assert_eq(ledger_apply(l, &ev), 0, "%s does not apply", files[i]);
        seen[ev.type] = true;
        memcpy(prev, hash, sizeof prev);
    }
    ledger_free(l);
}

/* ---- budget.adopted
 * -------------------------------------------------------------------------------- */

/* The lines of `a` and `b` are the same. */
static void expect_same_lines(const ledger_lines *a, const ledger_lines *b)
{
    cr_assert_eq(a->count, b->count);
    for (uint16_t i = 0; i < a->count; i++) {
        const ledger_line *x = &a->line[i], *y = &b->line[i];
        cr_assert_str_eq(x->unit, y->unit);
        cr_assert_str_eq(x->continues, y->continues);
        cr_assert_eq(x->amount, y->amount);
        cr_assert_eq(x->plans, y->plans);
        for (uint8_t k = 0; k < x->plans; k++)
            cr_assert_eq(x->plan[k], y->plan[k], "line %u plan %u", (unsigned)i, (unsigned)k);
    }
}

Test(event, an_adoption_round_trips_at_its_limits_and_fits_an_event)
{
    for (int variant = 0; variant < 2; variant++) {
        ledger_event ev =
            variant ? max_event(LEDGER_BUDGET_ADOPTED) : typical_event(LEDGER_BUDGET_ADOPTED, 12);
        static uint8_t buf[EVENT_BYTES_MAX], again[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        ledger_event got;
        memset(&got, 0x5a, sizeof got);
        cr_assert_eq(event_decode(buf, n, &got), 0);
        expect_same_event(&ev, &got);
        cr_assert_eq(got.plan_until, ev.plan_until);
        cr_assert_str_eq(got.decision_body, ev.decision_body);
        cr_assert_eq(got.decision_date, ev.decision_date);
        cr_assert_str_eq(got.decision_paragraph, ev.decision_paragraph);
        cr_assert_str_eq(got.decision_dnr, ev.decision_dnr);
        expect_same_lines(&ev.lines, &got.lines);
        cr_assert_eq(encode(&got, zero_prev, again, NULL), n);
        cr_assert_eq(memcmp(buf, again, n), 0);
    }
}

/* An adoption packed by msgpack-c: the independent way to the same bytes. `mutate` names one
 * departure from it in the lines, or NULL. */
static size_t pack_adoption(const ledger_event *ev, const char *mutate, uint8_t *out, size_t cap)
{
    packer p;
    msgpack_sbuffer_init(&p.sbuf);
    msgpack_packer_init(&p.pk, &p.sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&p.pk, 7);
    pack_str(&p, "seq");
    msgpack_pack_uint64(&p.pk, ev->seq);
    pack_str(&p, "ts");
    msgpack_pack_uint64(&p.pk, ev->ts_ms);
    pack_str(&p, "actor");
    msgpack_pack_map(&p.pk, 2);
    pack_str(&p, "uid");
    msgpack_pack_uint32(&p.pk, ev->actor.uid);
    pack_str(&p, "name");
    pack_str(&p, ev->actor.name);
    pack_str(&p, "type");
    pack_str(&p, "budget.adopted");
    pack_str(&p, "data");
    msgpack_pack_map(&p.pk, 9);
    pack_str(&p, "id");
    pack_str(&p, ev->id);
    pack_str(&p, "year");
    msgpack_pack_int64(&p.pk, ev->year);
    pack_str(&p, "plan_until");
    msgpack_pack_int64(&p.pk, ev->plan_until);
    pack_str(&p, "title");
    pack_str(&p, ev->title);
    pack_str(&p, "lines");
    uint16_t count = ev->lines.count;
    if (is(mutate, "no-lines"))
        count = 0;
    if (is(mutate, "lines-array16")) {
        uint8_t head[3] = {0xdc, 0, (uint8_t)count};
        msgpack_sbuffer_write(&p.sbuf, (const char *)head, 3);
    } else {
        msgpack_pack_array(&p.pk, count);
    }
    for (uint16_t i = 0; i < count; i++) {
        const ledger_line *x = &ev->lines.line[i];
        bool last = i + 1 == count;
        msgpack_pack_map(&p.pk, last && is(mutate, "line-3-keys") ? 3 : 4);
        pack_str(&p, "unit");
        if (last && is(mutate, "line-unit-nul")) {
            msgpack_pack_str(&p.pk, 3);
            msgpack_pack_str_body(&p.pk, "K\0S", 3);
        } else {
            pack_str(&p, last && is(mutate, "line-bad-unit") ? "K S" : x->unit);
        }
        pack_str(&p, "amount");
        msgpack_pack_int64(&p.pk, last && is(mutate, "line-amount-0") ? 0 : x->amount);
        pack_str(&p, "plan");
        uint8_t plans = last && is(mutate, "line-11-plans") ? 11 : x->plans;
        msgpack_pack_array(&p.pk, plans);
        for (uint8_t k = 0; k < plans; k++)
            msgpack_pack_int64(&p.pk, last && is(mutate, "line-plan-negative") ? -1
                                      : k < x->plans                           ? x->plan[k]
                                                                               : 1);
        if (last && is(mutate, "line-3-keys"))
            continue;
        pack_str(&p, "continues");
        if (last && is(mutate, "line-continues-nul")) {
            /* A NUL inside: a reader of C strings would keep "ks-2" and encode other bytes. */
            msgpack_pack_str(&p.pk, 7);
            msgpack_pack_str_body(&p.pk,
                                  "ks-2\0"
                                  "21",
                                  7);
        } else {
            pack_str(&p, last && is(mutate, "line-continues-bad") ? "a b" : x->continues);
        }
    }
    pack_str(&p, "decision_body");
    pack_str(&p, ev->decision_body);
    pack_str(&p, "decision_date");
    char day[16];
    snprintf(day, sizeof day, "%04d-%02d-%02d", (int)(ev->decision_date / 10000),
             (int)(ev->decision_date / 100 % 100), (int)(ev->decision_date % 100));
    pack_str(&p, day);
    pack_str(&p, "decision_paragraph");
    pack_str(&p, ev->decision_paragraph);
    pack_str(&p, "decision_dnr");
    pack_str(&p, ev->decision_dnr);
    pack_str(&p, "prev");
    msgpack_pack_bin_with_body(&p.pk, zero_prev, 32);
    uint8_t hash[BUDGET_HASH_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, zero_prev, 32);
    uint8_t map6 = 0x86;
    crypto_hash_sha256_update(&st, &map6, 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)p.sbuf.data + 1, p.sbuf.size - 1);
    crypto_hash_sha256_final(&st, hash);
    pack_str(&p, "hash");
    msgpack_pack_bin_with_body(&p.pk, hash, 32);
    cr_assert_leq(p.sbuf.size, cap);
    size_t n = p.sbuf.size;
    memcpy(out, p.sbuf.data, n);
    msgpack_sbuffer_destroy(&p.sbuf);
    return n;
}

Test(event, msgpack_c_packs_an_adoption_to_the_same_bytes_and_its_bad_lines_are_refused)
{
    for (int variant = 0; variant < 2; variant++) {
        ledger_event ev =
            variant ? max_event(LEDGER_BUDGET_ADOPTED) : typical_event(LEDGER_BUDGET_ADOPTED, 12);
        ev.seq = 12;
        ev.ts_ms = 1640000000000u;
        static uint8_t ours[EVENT_BYTES_MAX], theirs[EVENT_BYTES_MAX + 4096];
        size_t n = encode(&ev, zero_prev, ours, NULL);
        size_t m = pack_adoption(&ev, NULL, theirs, sizeof theirs);
        cr_assert_eq(m, n, "variant %d: %zu bytes, msgpack-c %zu", variant, n, m);
        cr_assert_eq(memcmp(ours, theirs, n), 0, "variant %d", variant);
        ledger_event got;
        cr_assert_eq(event_decode(theirs, m, &got), 0);
        static const char *const bad[] = {
            "no-lines",           "lines-array16", "line-3-keys",        "line-bad-unit",
            "line-amount-0",      "line-11-plans", "line-plan-negative", "line-continues-bad",
            "line-continues-nul", "line-unit-nul"};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            /* array16 of fewer than 16 is not the shortest form; of 64 it is. */
            if (variant == 1 && strcmp(bad[k], "lines-array16") == 0)
                continue;
            m = pack_adoption(&ev, bad[k], theirs, sizeof theirs);
            cr_assert_neq(event_decode(theirs, m, &got), 0, "variant %d: %s decodes", variant,
                          bad[k]);
        }
    }
}

Test(event, an_adoption_of_more_lines_than_the_limit_does_not_decode)
{
    ledger_event ev = max_event(LEDGER_BUDGET_ADOPTED);
    ev.lines.count = BUDGET_ADOPT_LINES_MAX + 1;
    ev.lines.line[BUDGET_ADOPT_LINES_MAX - 1].unit[0] = 'V';
    static uint8_t out[EVENT_BYTES_MAX + 4096];
    cr_assert_lt(event_encode(&ev, zero_prev, out, sizeof out, NULL), 0,
                 "an encoder that writes 65 lines");
    /* 64 lines decode; an array header of 65 over the same bytes does not. */
    ledger_event small = typical_event(LEDGER_BUDGET_ADOPTED, 3);
    small.lines.count = BUDGET_ADOPT_LINES_MAX;
    for (uint16_t i = 0; i < BUDGET_ADOPT_LINES_MAX; i++) {
        ledger_line *x = &small.lines.line[i];
        snprintf(x->unit, sizeof x->unit, "N%u", (unsigned)i);
        x->amount = 1;
        x->plans = 5;
    }
    size_t n = pack_adoption(&small, NULL, out, sizeof out);
    ledger_event got;
    cr_assert_eq(event_decode(out, n, &got), 0, "64 lines decode");
    uint8_t *head = memmem(out, n, "\xa5lines\xdc\x00\x40", 9);
    cr_assert_not_null(head);
    head[8] = 0x41;
    cr_assert_neq(event_decode(out, n, &got), 0, "a header of 65 lines decodes");
}

Test(event, the_committed_corpus_events_encode_to_the_same_bytes)
{
    static const char *const corrections[] = {
        "1-frame.granted",           "2-frame.adjusted",
        "3-allocation.proposed",     "4-decision.approved",
        "5-avrop.requested",         "6-decision.rejected",
        "7-request.withdrawn",       "8-allocation.reduction_requested",
        "9-avrop.reversal_requested"};
    /* Files 7 and 9 name requests the corpus does not hold; the others apply in order. */
    static const bool corrections_apply[] = {true, true,  true, true, true,
                                             true, false, true, false};
    static const char *const units[] = {
        "1-frame.granted",   "2-frame.adjusted",    "3-allocation.proposed", "4-decision.approved",
        "5-avrop.requested", "6-decision.rejected", "7-request.withdrawn",   "8-unit.registered",
        "9-unit.renamed",    "10-unit.closed",      "11-outcome.recorded"};
    static const bool units_apply[] = {true,  true, true, true, true, true,
                                       false, true, true, true, true};
    bool seen[LEDGER_TYPE_END] = {false};
    corpus_chain(corrections, corrections_apply, 9, seen);
    corpus_chain(units, units_apply, 11, seen);
    /* The corpora hold every type but the year's end. */
    for (int k = 0; k < TYPES; k++)
        if (all_types[k] != LEDGER_YEAR_CLOSED && all_types[k] != LEDGER_FRAME_CARRIED_OVER)
            cr_assert(seen[all_types[k]], "the corpus has no %s", type_name(all_types[k]));
}

/* ---- decisions as data ----------------------------------------------------------------- */

/* The offset of `what` (n bytes) in buf, which must hold it once. */
static size_t find_bytes(const uint8_t *buf, size_t size, const char *what, size_t n)
{
    size_t found = SIZE_MAX;
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(buf + i, what, n) == 0) {
            cr_assert_eq(found, SIZE_MAX, "\"%s\" twice", what);
            found = i;
        }
    cr_assert_neq(found, SIZE_MAX, "no \"%s\"", what);
    return found;
}

Test(event, an_event_from_before_decisions_decodes_without_one_and_keeps_its_bytes)
{
    for (int k = 0; k < TYPES; k++) {
        if (!has_decision(all_types[k]))
            continue;
        ledger_event ev = typical_event(all_types[k], 3);
        ev.decision_body[0] = ev.decision_paragraph[0] = ev.decision_dnr[0] = '\0';
        ev.decision_date = 0;
        ev.avrop_last_day = 0;  /* added after decisions: absent from an event of before them */
        ev.continues[0] = '\0'; /* the same */
        uint8_t buf[EVENT_BYTES_MAX], again[EVENT_BYTES_MAX];
        size_t n = encode(&ev, zero_prev, buf, NULL);
        /* Its data map is the one of before: four keys fewer (and no last day for avrop), none
         * of them a decision's. */
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        cr_assert_eq(msgpack_unpack_next(&u, (const char *)buf, n, NULL), MSGPACK_UNPACK_SUCCESS);
        msgpack_object data = u.data.via.map.ptr[4].val;
        cr_assert_eq(data.via.map.size, data_count(&ev) - 4, "%s", type_name(ev.type));
        for (uint32_t i = 0; i < data.via.map.size; i++)
            cr_assert(strncmp(data.via.map.ptr[i].key.via.str.ptr, "decision_", 9) != 0);
        msgpack_unpacked_destroy(&u);

        ledger_event back;
        memset(&back, 0x55, sizeof back);
        cr_assert_eq(event_decode(buf, n, &back), 0, "%s", type_name(ev.type));
        expect_same_event(&ev, &back);
        cr_assert_not(ledger_has_decision(&back));
        cr_assert(ledger_added_absent(&back));
        cr_assert_eq(encode(&back, zero_prev, again, NULL), n);
        cr_assert_eq(memcmp(buf, again, n), 0, "%s encodes to other bytes", type_name(ev.type));
    }
    /* A type that never had a decision has no shorter form. */
    ledger_event ev = typical_event(LEDGER_ALLOCATION_PROPOSED, 3);
    ev.avrop_last_day = 0;
    uint8_t buf[EVENT_BYTES_MAX];
    size_t n = encode(&ev, zero_prev, buf, NULL);
    size_t at = find_bytes(buf, n,
                           "\xa4"
                           "data",
                           5) +
                5;
    cr_assert_eq(buf[at], 0x86);
    buf[at] = 0x82;
    cr_assert_eq(event_decode(buf, n, &ev), BUDGET_EINTERNAL);
}

Test(event, a_decision_must_be_whole_in_the_log)
{
    ledger_event ev = typical_event(LEDGER_DECISION_APPROVED, 4);
    uint8_t buf[EVENT_BYTES_MAX];
    size_t n = encode(&ev, zero_prev, buf, NULL);
    size_t at = find_bytes(buf, n,
                           "\xa4"
                           "data",
                           5) +
                5;
    cr_assert_eq(buf[at], 0x80 | key_count(ev.type));
    /* A map that lacks only some of the decision's keys is no map of before. */
    for (int fewer = 1; fewer <= 5; fewer++) {
        if (fewer == 4)
            continue;
        buf[at] = (uint8_t)(0x80 | (key_count(ev.type) - (size_t)fewer));
        ledger_event back;
        cr_assert_eq(event_decode(buf, n, &back), BUDGET_EINTERNAL, "%d fewer", fewer);
    }
    /* Nor does a part of one encode. */
    ledger_event part = ev;
    part.decision_date = 0;
    cr_assert_eq(event_encode(&part, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
    part = ev;
    part.decision_paragraph[0] = '\0';
    cr_assert_eq(event_encode(&part, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
}

Test(event, a_decision_date_in_the_log_is_a_real_day)
{
    ledger_event ev = typical_event(LEDGER_FRAME_GRANTED, 5);
    ev.decision_date = 20240229;
    uint8_t buf[EVENT_BYTES_MAX];
    size_t n = encode(&ev, zero_prev, buf, NULL);
    ledger_event back;
    cr_assert_eq(event_decode(buf, n, &back), 0);
    cr_assert_eq(back.decision_date, 20240229);
    size_t at = find_bytes(buf, n, "2024-02-29", 10);
    const char *bad[] = {"2021-02-29", "2024-02-30", "1899-12-31", "2024-13-01",
                         "2024-2-290", "2024/02/29", "20240229  "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(buf + at, bad[i], 10);
        cr_assert_eq(event_decode(buf, n, &back), BUDGET_EINTERNAL, "%s", bad[i]);
    }
    memcpy(buf + at, "2000-02-29", 10);
    cr_assert_eq(event_decode(buf, n, &back), 0);
    cr_assert_eq(back.decision_date, 20000229);
    ev.decision_date = 20210229;
    cr_assert_eq(event_encode(&ev, zero_prev, buf, sizeof buf, NULL), BUDGET_EINTERNAL);
}

/* A frame.granted with a decision and no continues: the ten keys of the logs main writes (the
 * decision added, continues not), packed by msgpack-c; it decodes and encodes to its bytes. */
Test(event, a_frame_granted_with_a_decision_and_no_continues_keeps_ten_keys)
{
    ledger_event ev = typical_event(LEDGER_FRAME_GRANTED, 77);
    ev.continues[0] = '\0';
    ev.avrop_last_day = 0; /* the round before continues: no last day for avrop either */
    cr_assert(ledger_has_decision(&ev));
    cr_assert_eq(data_count(&ev), 10);
    uint8_t theirs[4096], ours[EVENT_BYTES_MAX];
    size_t m = pack_event(&ev, zero_prev, NULL, theirs, sizeof theirs);
    ledger_event got;
    cr_assert_eq(event_decode(theirs, m, &got), 0);
    expect_same_event(&ev, &got);
    cr_assert_eq(ledger_added_round(&got), 1);
    cr_assert_eq(encode(&got, zero_prev, ours, NULL), m);
    cr_assert_eq(memcmp(ours, theirs, m), 0);
    /* With a last day for avrop it has eleven; with continues twelve, the last continues, and
     * the last day "" when it has none. */
    ev.avrop_last_day = 20211231;
    cr_assert_eq(data_count(&ev), 11);
    m = pack_event(&ev, zero_prev, NULL, theirs, sizeof theirs);
    cr_assert_eq(event_decode(theirs, m, &got), 0);
    cr_assert_eq(got.avrop_last_day, 20211231);
    cr_assert_eq(ledger_added_round(&got), 2);
    ev.avrop_last_day = 0;
    PUT(ev.continues, "f-2020");
    cr_assert_eq(data_count(&ev), 12);
    m = pack_event(&ev, zero_prev, NULL, theirs, sizeof theirs);
    cr_assert_eq(event_decode(theirs, m, &got), 0);
    cr_assert_str_eq(got.continues, "f-2020");
    cr_assert_eq(got.avrop_last_day, 0);
    cr_assert_eq(ledger_added_round(&got), 3);
    cr_assert_eq(encode(&got, zero_prev, ours, NULL), m);
    cr_assert_eq(memcmp(ours, theirs, m), 0);
}
